"""tools/tasks/summarize.py table on task_choices tables written here: two tables that disagree on
a choice's length name it in characters, what `norm_chars` counts since 2026-12-06 (the
message said bytes, the unit of the column it replaced). Needs pyarrow."""

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCRIPT = Path(__file__).resolve().parents[1] / "summarize.py"


def choices(path: Path, norm_chars):
    rows = [{"mask_id": "111", "task": "piqa", "question": 0, "choice": c, "gold": 0, "loglik": -1.0 - c,
             "norm_chars": n, "continuation_tokens": 2} for c, n in enumerate(norm_chars)]
    table = pa.Table.from_pylist(rows).replace_schema_metadata(
        {"layerprune.table": "task_choices", "layerprune.complete": "true", "layerprune.model_id": "m"})
    pq.write_table(table, path)


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
