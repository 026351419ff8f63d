"""lm_eval_compare.py compare on lm-eval sample logs written here: WinoGrande's gold is its doc's
answer (its target is the sentence's continuation), and a target that is no choice index is
refused naming the file and line. Needs pyarrow."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCRIPT = Path(__file__).resolve().parents[1] / "lm_eval_compare.py"


def choices_table(path: Path, task: str, golds):
    """The task_choices rows of the full mask: two choices a question, choice 0 the likelier."""
    rows = [{"num_removed": 0, "task": task, "question": q, "choice": c, "gold": gold,
             "loglik": -5.0 - c, "norm_chars": 20} for q, gold in enumerate(golds) for c in (0, 1)]
    pq.write_table(pa.Table.from_pylist(rows), path)


def samples_log(folder: Path, task: str, samples):
    path = folder / "model" / f"samples_{task}_local_2025-01-01T00-00-00.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(sample) + "\n" for sample in samples))
    return path


def compare(tmp_path):
    return subprocess.run([sys.executable, str(SCRIPT), "compare", "--choices", str(tmp_path / "choices.parquet"),
                           "--samples-dir", str(tmp_path / "lm-eval")], capture_output=True, text=True)


def test_winogrande_s_gold_is_the_doc_s_answer(tmp_path):
    choices_table(tmp_path / "choices.parquet", "winogrande", [0, 1])
    samples_log(tmp_path / "lm-eval", "winogrande", [
        {"doc_id": q, "doc": {"sentence": "The trophy did not fit in the suitcase because _ was too big.",
                              "option1": "the trophy", "option2": "the suitcase", "answer": answer},
         "target": "was too big.", "filtered_resps": [[-5.0, False], [-6.0, False]], "acc": acc}
        for q, answer, acc in [(0, "1", 1.0), (1, "2", 0.0)]])
    result = compare(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    # 2 questions; choice 0 chosen on both, right on the first: 50 % on either side, the same
    # answers (lm-eval logs no acc_norm for WinoGrande: nan).
    line = next(line for line in result.stdout.splitlines() if line.startswith("winogrande"))
    assert line.split() == ["winogrande", "2", "50.0", "50.0", "50.0", "nan", "0", "0.00e+00"], line


def test_a_target_that_is_no_choice_index_is_refused_naming_the_file_and_line(tmp_path):
    choices_table(tmp_path / "choices.parquet", "piqa", [0, 1])
    log = samples_log(tmp_path / "lm-eval", "piqa", [
        {"doc_id": 0, "target": 0, "filtered_resps": [[-5.0, False], [-6.0, False]], "acc": 1.0},
        {"doc_id": 1, "target": "a sentence", "filtered_resps": [[-5.0, False], [-6.0, False]], "acc": 0.0}])
    result = compare(tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"lm_eval_compare: error: {log}, line 2: target 'a sentence' is not a choice index" in result.stderr


def test_a_winogrande_sample_without_its_doc_is_refused(tmp_path):
    choices_table(tmp_path / "choices.parquet", "winogrande", [1])
    log = samples_log(tmp_path / "lm-eval", "winogrande", [
        {"doc_id": 0, "target": "went to the store.", "filtered_resps": [[-5.0, False], [-6.0, False]],
         "acc": 0.0}])
    result = compare(tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{log}, line 1: WinoGrande sample without doc.answer" in result.stderr


def piqa_samples(golds, answers=None):
    """lm-eval samples of PIQA: choice 0 the likelier, `acc` whether that is the gold."""
    return [{"doc_id": q, "target": gold, "filtered_resps": [[-5.0, False], [-6.0, False]], "acc": float(gold == 0),
             "acc_norm": float(gold == 0)} for q, gold in enumerate(golds)]


def test_a_choices_table_without_the_full_mask_is_refused(tmp_path):
    """Rows of pruned masks only: `compare` compared no question and exited 0, `ids` printed {}."""
    rows = [{"num_removed": 2, "task": "piqa", "question": 0, "choice": c, "gold": 0, "loglik": -5.0 - c,
             "norm_chars": 20} for c in (0, 1)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "choices.parquet")
    samples_log(tmp_path / "lm-eval", "piqa", piqa_samples([0]))
    for command in (["compare", "--samples-dir", str(tmp_path / "lm-eval")], ["ids"]):
        result = subprocess.run([sys.executable, str(SCRIPT), command[0], "--choices", str(tmp_path / "choices.parquet"),
                                 *command[1:]], capture_output=True, text=True)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"lm_eval_compare: error: {tmp_path / 'choices.parquet'}: no rows of the full mask (of 2 rows)" \
            in result.stderr, result.stderr


def test_samples_of_two_models_under_one_folder_are_refused(tmp_path):
    """lm-eval logs each model under its own folder: of two, the later in the alphabet was
    compared, whichever model the choices table scored."""
    choices_table(tmp_path / "choices.parquet", "piqa", [0, 1])
    samples_log(tmp_path / "lm-eval", "piqa", piqa_samples([0, 1]))
    other = tmp_path / "lm-eval" / "pruned" / "samples_piqa_local_2025-01-02T00-00-00.jsonl"
    other.parent.mkdir()
    other.write_text("".join(json.dumps(s) + "\n" for s in piqa_samples([1, 0])))
    result = compare(tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "lm-eval samples of piqa_local in 2 folders" in result.stderr, result.stderr
    # One folder, two runs: the latest is read.
    other.unlink()
    later = tmp_path / "lm-eval" / "model" / "samples_piqa_local_2025-01-03T00-00-00.jsonl"
    later.write_text("".join(json.dumps(s) + "\n" for s in piqa_samples([1, 0])))
    result = compare(tmp_path)
    assert result.returncode == 1 and "question 0: gold or choice count differs" in result.stdout, result.stdout


def test_a_question_not_compared_counts_on_neither_side(tmp_path):
    """A question whose gold differs was left out of both sides' acc but not of the count they
    were divided by: 2 questions, 1 compared and right on both sides, read 50.0 and 50.0."""
    choices_table(tmp_path / "choices.parquet", "piqa", [0, 0])
    samples_log(tmp_path / "lm-eval", "piqa", piqa_samples([0, 1]))
    result = compare(tmp_path)
    assert result.returncode == 1, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("piqa "))
    assert line.split() == ["piqa", "1", "100.0", "100.0", "100.0", "100.0", "0", "0.00e+00"], result.stdout
