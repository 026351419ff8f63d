"""tools/tasks/summarize.py table on task_choices tables made here with pyarrow: the table of
complete, consistent inputs (pinned), and what it refuses (another kind of file, tables of
different models or scorings, a malformed label line) or flags (a checkpoint, a mask missing
questions or choices, a label whose mask is in no table). Needs pyarrow only."""

import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
SUMMARIZE = ROOT / "tools" / "tasks" / "summarize.py"
# Choices per question of each task (ARC's vary in the real splits; one number is enough here).
CHOICES = {"piqa": 2, "hellaswag": 4, "winogrande": 2, "arc_easy": 4, "arc_challenge": 5,
           "boolq": 2, "openbookqa": 4}
FULL, SLEB, SEED1, SEED2 = "1111", "1101", "1011", "0111"
LABELS = f"{FULL} full 0\n{SLEB} sleb 1\n{SEED1} random-1 1\n{SEED2} random-2 1\n"


def scored(masks, questions, seed=0):
    """Rows of every choice of `questions` of every task under each mask, with made-up
    log-likelihoods (seeded, so the table below is fixed)."""
    rng = random.Random(seed)

    def row(mask, task, q, c, n):
        loglik, tokens = round(-rng.uniform(1, 10), 3), rng.randint(1, 5)
        rng.randint(3, 30)  # the draw the byte length once took: the pinned table stays as it was
        # A choice's length in bytes is the question's, the same under every mask and run.
        return {"mask_id": mask, "task": task, "question": q, "choice": c, "gold": q % n,
                "loglik": loglik, "continuation_tokens": tokens, "norm_chars": 3 + (7 * q + c) % 28}

    return [row(mask, task, q, c, n)
            for mask in masks for task, n in CHOICES.items() for q in questions for c in range(n)]


def write_choices(path: Path, rows, **metadata):
    """A task_choices table as evaluate --tasks writes it; a metadata entry given as None is
    left out."""
    entries = {"table": "task_choices", "format_version": 1, "num_blocks": 4, "model_id": "model-a",
               "dataset_id": "questions", "scoring": "logits-f64-log-softmax", "complete": "true",
               **metadata}
    u32 = pa.uint32()
    columns = {
        "mask_id": [r["mask_id"] for r in rows],
        "kept": pa.array([[b == "1" for b in r["mask_id"]] for r in rows], pa.list_(pa.bool_())),
        "num_removed": pa.array([r["mask_id"].count("0") for r in rows], u32),
        "task": [r["task"] for r in rows],
        **{name: pa.array([r[name] for r in rows], u32)
           for name in ("question", "choice", "gold")},
        "loglik": pa.array([r["loglik"] for r in rows], pa.float64()),
        **{name: pa.array([r[name] for r in rows], u32)
           for name in ("continuation_tokens", "norm_chars")},
    }
    table = pa.table(columns).replace_schema_metadata(
        {f"layerprune.{k}": str(v) for k, v in entries.items() if v is not None})
    pq.write_table(table, path)
    return path


def summarize(tmp_path, *tables, labels=LABELS, extra=()):
    (tmp_path / "labels.txt").write_text(labels)
    return subprocess.run([sys.executable, str(SUMMARIZE), "table", *map(str, tables),
                           "--labels", str(tmp_path / "labels.txt"), *extra],
                          capture_output=True, text=True)


def refused(result, *expected):
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


# What the script printed for these tables before it checked its inputs: complete and
# consistent inputs must still give exactly this.
COMPLETE_TABLE = """\
| model | k | PIQA | HellaSwag | WinoGrande | ARC-e | ARC-c | BoolQ | OBQA | mean | gold NLL/token |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| full | – | 33.3 (6–79) | 33.3 (6–79) | 66.7 (21–94) | 33.3 (6–79) | 0.0 (0–56) | 66.7 (21–94) | 66.7 (21–94) | **42.9** ± 18.7 | 1.47 |
| random (mean of 2 seeds) | 1 | 50.0 (33–67) | 16.7 (0–33) | 50.0 (0–100) | 33.3 (33–33) | 0.0 (0–0) | 50.0 (33–67) | 16.7 (0–33) | **31.0** (23.8–38.1) | 1.90 |
| sleb | 1 | 66.7 (21–94) | 0.0 (0–56) | 66.7 (21–94) | 66.7 (21–94) | 0.0 (0–56) | 100.0 (44–100) | 33.3 (6–79) | **47.6** ± 15.2 | 1.65 |

questions per task: PIQA 3, HellaSwag 3, WinoGrande 3, ARC-e 3, ARC-c 3, BoolQ 3, OBQA 3
"""


def test_complete_inputs_give_the_table_they_always_gave(tmp_path):
    # Two runs, one of which scored a fourth question: only the three in both count.
    first = write_choices(tmp_path / "a.parquet", scored([FULL, SLEB], range(4), seed=1))
    second = write_choices(tmp_path / "b.parquet", scored([SEED1, SEED2], range(3), seed=2))
    result = summarize(tmp_path, first, second, extra=["--out", str(tmp_path / "t.md")])
    assert result.returncode == 0, result.stderr
    assert result.stdout == COMPLETE_TABLE
    assert (tmp_path / "t.md").read_text() == COMPLETE_TABLE
    assert result.stderr == ""
    # A table written before the `scoring` entry (legacy head-graph-nll) beside one that says
    # head-graph-nll is the same scoring.
    write_choices(first, scored([FULL, SLEB], range(4), seed=1), scoring=None)
    write_choices(second, scored([SEED1, SEED2], range(3), seed=2), scoring="head-graph-nll")
    result = summarize(tmp_path, first, second)
    assert result.returncode == 0 and result.stdout == COMPLETE_TABLE, result.stderr


def test_the_pinned_tables_numbers_are_the_definitions_on_the_rows():
    """COMPLETE_TABLE was pinned from the script's own output: here its numbers are recomputed
    from the rows the test writes, by their definitions (a question is right when its gold
    choice has the highest log-likelihood; the gold NLL is pooled over every task's tokens), on
    the three questions both tables have."""
    rows = scored([FULL, SLEB], range(4), seed=1) + scored([SEED1, SEED2], range(3), seed=2)
    common = {0, 1, 2}

    def accuracy(mask, task):
        questions = {}
        for r in rows:
            if r["mask_id"] == mask and r["task"] == task and r["question"] in common:
                questions.setdefault(r["question"], []).append(r)
        assert len(questions) == 3
        right = sum(max(choices, key=lambda r: r["loglik"])["choice"] == choices[0]["gold"]
                    for choices in questions.values())
        return 100 * right / len(questions)

    def gold_nll(mask):
        golds = [r for r in rows if r["mask_id"] == mask and r["question"] in common
                 and r["choice"] == r["gold"]]
        return -sum(r["loglik"] for r in golds) / sum(r["continuation_tokens"] for r in golds)

    lines = COMPLETE_TABLE.splitlines()
    assert lines[0].split(" | ")[2:9] == ["PIQA", "HellaSwag", "WinoGrande", "ARC-e", "ARC-c",
                                          "BoolQ", "OBQA"]  # the order of CHOICES
    cells = {line.split(" | ")[0].removeprefix("| "): line.strip(" |").split(" | ")[2:]
             for line in lines[2:5]}
    for label, mask in (("full", FULL), ("sleb", SLEB)):
        accuracies = [accuracy(mask, task) for task in CHOICES]
        assert [cell.split()[0] for cell in cells[label][:7]] == [f"{a:.1f}" for a in accuracies]
        assert cells[label][7].split()[0] == f"**{sum(accuracies) / 7:.1f}**"
        assert cells[label][8] == f"{gold_nll(mask):.2f}"
    # The random row: per task the mean of the seeds, the lowest and highest in brackets.
    seeds = [[accuracy(mask, task) for task in CHOICES] for mask in (SEED1, SEED2)]
    assert cells["random (mean of 2 seeds)"][:7] == [
        f"{(a + b) / 2:.1f} ({min(a, b):.0f}–{max(a, b):.0f})" for a, b in zip(*seeds)]
    means = [sum(seed) / 7 for seed in seeds]
    assert cells["random (mean of 2 seeds)"][7] == \
        f"**{sum(means) / 2:.1f}** ({min(means):.1f}–{max(means):.1f})"
    assert cells["random (mean of 2 seeds)"][8] == f"{(gold_nll(SEED1) + gold_nll(SEED2)) / 2:.2f}"


def test_a_table_of_another_kind_or_no_table_is_refused_by_name(tmp_path):
    good = write_choices(tmp_path / "good.parquet", scored([FULL], range(2)))
    other = write_choices(tmp_path / "accuracies.parquet", scored([FULL], range(2)),
                          table="task_accuracies")
    refused(summarize(tmp_path, good, other),
            "accuracies.parquet: a table of kind 'task_accuracies', where a task_choices table was expected")
    bare = tmp_path / "bare.parquet"
    pq.write_table(pa.table({"x": [1]}), bare)
    refused(summarize(tmp_path, good, bare), "bare.parquet: not a layerprune table")
    text = tmp_path / "labels.parquet"
    text.write_text("1111 full 0\n")
    refused(summarize(tmp_path, text), "labels.parquet: not a readable Parquet table")
    refused(summarize(tmp_path, good, tmp_path / "nosuch.parquet"), "nosuch.parquet: missing")
    refused(summarize(tmp_path, good, extra=["--questions-from", str(other)]),
            "accuracies.parquet: a table of kind 'task_accuracies'")


def test_tables_of_different_models_or_scorings_are_refused(tmp_path):
    first = write_choices(tmp_path / "a.parquet", scored([FULL, SLEB], range(3)))
    second = write_choices(tmp_path / "b.parquet", scored([SEED1, SEED2], range(3)),
                           model_id="model-b")
    refused(summarize(tmp_path, first, second),
            "b.parquet has layerprune.model_id model-b", "a.parquet has model-a",
            "tables of different models")
    refused(summarize(tmp_path, first, extra=["--questions-from", str(second)]),
            "b.parquet has layerprune.model_id model-b", "a.parquet has model-a")
    # An older table (no scoring entry: head-graph-nll) beside a float64 log-softmax one.
    write_choices(second, scored([SEED1, SEED2], range(3)), scoring=None)
    refused(summarize(tmp_path, first, second),
            "b.parquet has layerprune.scoring head-graph-nll",
            "a.parquet has logits-f64-log-softmax", "scored differently")


def test_tables_whose_question_numbers_mean_other_questions_are_refused(tmp_path):
    first = write_choices(tmp_path / "a.parquet", scored([FULL, SLEB], range(3)))
    other_gold = [dict(r, gold=(r["gold"] + 1) % CHOICES[r["task"]]) if r["question"] == 2 else r
                  for r in scored([SEED1, SEED2], range(3))]
    second = write_choices(tmp_path / "b.parquet", other_gold, dataset_id="other-questions")
    refused(summarize(tmp_path, first, second),
            "b.parquet and", "a.parquet disagree on piqa question 2 choice 0 (gold 0 vs 1",
            "different task data")
    refused(summarize(tmp_path, first, extra=["--questions-from", str(second)]),
            "disagree on piqa question 2")
    longer = [dict(r, norm_chars=r["norm_chars"] + 1) if r["mask_id"] == SLEB else r
              for r in scored([FULL, SLEB], range(3))]
    one = write_choices(tmp_path / "one.parquet", longer)
    refused(summarize(tmp_path, one), "one.parquet: two rows disagree on piqa question 0 choice 0")
    # Another subsample of the same questions (another dataset_id) is comparable.
    write_choices(second, scored([SEED1, SEED2], range(1, 3)), dataset_id="other-questions")
    result = summarize(tmp_path, first, second)
    assert result.returncode == 0, result.stderr


def test_a_mask_missing_questions_or_choices_is_flagged_not_averaged_silently(tmp_path):
    rows = scored([FULL, SLEB, SEED1, SEED2], range(3))
    # SLEB's mask lacks PIQA question 2 altogether and the last choice of HellaSwag question 0
    # (not the right one: the question would otherwise be scored on three of its four choices).
    rows = [r for r in rows if not (r["mask_id"] == SLEB and (
        (r["task"], r["question"]) == ("piqa", 2)
        or (r["task"], r["question"], r["choice"]) == ("hellaswag", 0, 3)))]
    path = write_choices(tmp_path / "c.parquet", rows)
    result = summarize(tmp_path, path)
    assert result.returncode == 0, result.stderr
    lines = {line.split(" | ")[0].lstrip("| "): line.split(" | ")
             for line in result.stdout.splitlines() if line.startswith("| ")}
    sleb = lines["sleb"]
    # PIQA and HellaSwag over two questions, marked; the mean and the gold NLL marked too.
    assert sleb[2].endswith(" †") and sleb[3].endswith(" †"), sleb
    assert not sleb[4].endswith("†"), sleb
    assert sleb[9].endswith(" †") and sleb[10].endswith(" † |"), sleb
    assert "- sleb, k = 1 (mask 1101): PIQA over 2 of 3, HellaSwag over 2 of 3" in result.stdout
    assert "†" not in "".join(lines["full"]) and "†" not in "".join(lines["random (mean of 2 seeds)"])
    assert f"mask {SLEB} (sleb, k = 1) in {path}: PIQA 2 of 3 questions, HellaSwag 2 of 3" \
        in result.stderr, result.stderr
    # The marked cells are those of the two whole questions: the same as a table of only them.
    whole = [r for r in scored([SLEB], range(3)) if r["mask_id"] == SLEB and r["task"] == "piqa"
             and r["question"] < 2]
    alone = summarize(tmp_path, write_choices(tmp_path / "alone.parquet", whole),
                      labels=f"{SLEB} sleb 1\n")
    assert alone.stdout.split("\n")[2].split(" | ")[2] == sleb[2].removesuffix(" †")

    # A random seed missing a question marks the seeds' row.
    rows = [r for r in scored([FULL, SLEB, SEED1, SEED2], range(3))
            if not (r["mask_id"] == SEED2 and (r["task"], r["question"]) == ("boolq", 1))]
    result = summarize(tmp_path, write_choices(path, rows))
    seeds = next(line for line in result.stdout.splitlines() if line.startswith("| random"))
    assert seeds.split(" | ")[7].endswith(" †"), seeds
    assert "- random (mean of 2 seeds), k = 1 (mask 0111): BoolQ over 2 of 3" in result.stdout


def test_a_checkpoint_is_named_and_its_unfinished_masks_flagged(tmp_path):
    # A killed run: SLEB's mask done for PIQA only.
    rows = [r for r in scored([FULL, SLEB], range(3))
            if r["mask_id"] == FULL or r["task"] == "piqa"]
    path = write_choices(tmp_path / "checkpoint.parquet", rows, complete="false")
    result = summarize(tmp_path, path, labels=f"{FULL} full 0\n{SLEB} sleb 1\n")
    assert result.returncode == 0, result.stderr
    assert f"{path}: a checkpoint" in result.stderr, result.stderr
    sleb = next(line for line in result.stdout.splitlines() if line.startswith("| sleb"))
    # Its one task is whole; the gold NLL, over PIQA alone, is marked.
    assert sleb.split(" | ")[3:10] == ["–"] * 7 and sleb.endswith(" † |"), sleb
    assert "- sleb, k = 1 (mask 1101): HellaSwag over none of 3" in result.stdout


def test_labels_a_malformed_line_is_refused_and_a_mask_in_no_table_warned_of(tmp_path):
    path = write_choices(tmp_path / "c.parquet", scored([FULL, SLEB], range(3)))
    refused(summarize(tmp_path, path, labels=f"{FULL} full 0\n{SLEB} sleb\n"),
            "labels.txt line 2: 2 fields where 'mask method k' was expected")
    refused(summarize(tmp_path, path, labels=f"{FULL} full zero\n"),
            "labels.txt line 1: k is 'zero', not an integer")
    result = summarize(tmp_path, path, labels=f"{FULL} full 0\n{SEED1} random-1 1\n")
    assert result.returncode == 0
    assert f"mask {SEED1} (random-1, k = 1) is in no table given" in result.stderr, result.stderr
    assert "| random | 1 | – | – | – | – | – | – | – | – | – |" in result.stdout


def test_questions_in_no_common_set_are_refused(tmp_path):
    first = write_choices(tmp_path / "a.parquet", scored([FULL], range(0, 2)))
    second = write_choices(tmp_path / "b.parquet", scored([SLEB], range(2, 4)))
    refused(summarize(tmp_path, first, second), "no question is in every table given")


@pytest.mark.skipif(not os.environ.get("LAYERPRUNE_SAMPLES"),
                    reason="set LAYERPRUNE_SAMPLES to the folder written by write_samples")
def test_the_table_evaluate_writes_is_read_without_a_warning(tmp_path):
    sample = Path(os.environ["LAYERPRUNE_SAMPLES"]) / "task_choices.parquet"
    result = summarize(tmp_path, sample, labels="1111 full 0\n1010 sleb 2\n")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    # One column for the one task the sample scored (BoolQ), and its mean.
    assert "| model | k | BoolQ | mean | gold NLL/token |" in result.stdout
    assert "| full | – | 100.0 (21–100) | **100.0** ± 0.0 | 0.75 |" in result.stdout
    assert "| sleb | 2 | 0.0 (0–79) | **0.0** ± 0.0 | 1.50 |" in result.stdout
