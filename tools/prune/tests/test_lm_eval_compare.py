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
