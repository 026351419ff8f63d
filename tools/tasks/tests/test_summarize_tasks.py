"""tools/tasks/summarize.py table on task_choices tables written here: two tables that disagree on
a choice's length name it in characters, what `norm_chars` counts since 2026-12-06 (the
message said bytes, the unit of the column it replaced). Needs pyarrow."""

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCRIPT = Path(__file__).resolve().parents[1] / "summarize.py"


def choices(path: Path, norm_chars, mask="111", evaluated_on=None):
    rows = [{"mask_id": mask, "task": "piqa", "question": 0, "choice": c, "gold": 0, "loglik": -1.0 - c,
             "norm_chars": n, "continuation_tokens": 2} for c, n in enumerate(norm_chars)]
    metadata = {"layerprune.table": "task_choices", "layerprune.complete": "true", "layerprune.model_id": "m"}
    if evaluated_on is not None:
        metadata["layerprune.evaluated_on"] = evaluated_on
    pq.write_table(pa.Table.from_pylist(rows).replace_schema_metadata(metadata), path)


def test_tables_of_other_task_data_are_refused_naming_the_length_in_characters(tmp_path):
    choices(tmp_path / "a.parquet", [10, 12])
    choices(tmp_path / "b.parquet", [10, 13])
    (tmp_path / "labels.txt").write_text("111 full 0\n")
    result = subprocess.run([sys.executable, str(SCRIPT), "table", str(tmp_path / "a.parquet"),
                             str(tmp_path / "b.parquet"), "--labels", str(tmp_path / "labels.txt")],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert (f"summarize: {tmp_path / 'b.parquet'} and {tmp_path / 'a.parquet'} disagree on piqa question 0 choice 1 "
            "(gold 0 vs 0, 12 vs 13 characters): scored on different task data") in result.stderr, result.stderr


def test_a_run_of_some_tasks_has_their_columns_and_their_mean(tmp_path):
    # `make tasks TASKS=piqa` scores one task: the table showed six empty columns and no mean
    # (a mean over every task, six of them never scored); its mean is now over PIQA alone.
    choices(tmp_path / "a.parquet", [10, 12])
    (tmp_path / "labels.txt").write_text("111 full 0\n")
    result = subprocess.run([sys.executable, str(SCRIPT), "table", str(tmp_path / "a.parquet"),
                             "--labels", str(tmp_path / "labels.txt")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "| model | k | PIQA | mean | gold NLL/token |", result.stdout
    # Choice 0 (log-likelihood -1) is right and the more likely: 1 of 1.
    assert lines[2] == "| full | – | 100.0 (21–100) | **100.0** ± 0.0 | 0.50 |", result.stdout
    assert "questions per task: PIQA 1" in result.stdout


def test_masks_refuses_a_plan_file_that_is_missing_or_of_another_kind_naming_it(tmp_path):
    # It ended in a Python traceback (FileNotFoundError, KeyError on the metadata).
    choices(tmp_path / "choices.parquet", [10, 12])
    plans = tmp_path / "sleb.parquet"
    pq.write_table(pa.Table.from_pylist([{"k": 1, "mask_id": "101", "removed_blocks": [1]}])
                   .replace_schema_metadata({"layerprune.table": "plans", "layerprune.num_blocks": "3"}),
                   plans)
    for path, message in [(tmp_path / "absent.parquet",
                           "absent.parquet: missing, where a plans table was expected (written by apply-prune --out)"),
                          (tmp_path / "choices.parquet",
                           "choices.parquet: a table of kind 'task_choices', where a plans table was expected")]:
        result = subprocess.run([sys.executable, str(SCRIPT), "masks", str(plans), str(path)],
                                capture_output=True, text=True)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert message in result.stderr, result.stderr
    result = subprocess.run([sys.executable, str(SCRIPT), "masks", str(plans)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "101 sleb 1\n", result


def test_logs_computed_on_different_devices_are_refused_naming_both(tmp_path):
    # Choice logs record `evaluated_on` since 2026-12-06; a CPU's and a GPU's log-likelihoods
    # differ in the last digits, and `table` put masks scored on either side by side.
    cpu, gpu, old = tmp_path / "cpu.parquet", tmp_path / "gpu.parquet", tmp_path / "old.parquet"
    choices(cpu, [10, 12], mask="111", evaluated_on="cpu")
    choices(gpu, [10, 12], mask="101", evaluated_on="cuda, tf32 on, batch tokens 2048")
    choices(old, [10, 12], mask="011")  # written before the entry: taken as any device
    (tmp_path / "labels.txt").write_text("111 full 0\n101 sleb 1\n011 sleb 1\n")

    def run(*paths):
        return subprocess.run([sys.executable, str(SCRIPT), "table", *map(str, paths),
                               "--labels", str(tmp_path / "labels.txt")], capture_output=True, text=True)

    result = run(old, cpu, gpu)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert (f"summarize: {gpu} has layerprune.evaluated_on 'cuda, tf32 on, batch tokens 2048', "
            f"{cpu} has 'cpu': log-likelihoods computed on different devices, "
            "not comparable") in result.stderr, result.stderr
    for paths in [(old, cpu), (cpu, old), (old, gpu)]:
        result = run(*paths)
        assert result.returncode == 0, result.stderr


def test_labels_of_methods_by_their_old_names_are_rows_of_the_names_now(tmp_path):
    # labels.txt written before the method names were made one names the plan files of then:
    # published and shapley, now stratified-semivalue and surrogate-shapley (in the table's order
    # of methods, the published estimate first).
    for name, mask in (("a", "111"), ("b", "101"), ("c", "011")):
        choices(tmp_path / f"{name}.parquet", [10, 12], mask=mask)
    (tmp_path / "labels.txt").write_text("111 full 0\n101 shapley 1\n011 published 1\n")
    result = subprocess.run([sys.executable, str(SCRIPT), "table",
                             *(str(tmp_path / f"{name}.parquet") for name in "abc"),
                             "--labels", str(tmp_path / "labels.txt")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = [line.split(" | ")[0] for line in result.stdout.splitlines()[2:5]]
    assert rows == ["| full", "| stratified-semivalue", "| surrogate-shapley"], result.stdout
