"""tools/layerprune_tables.py, the Python tools' one reader of the pipeline's tables: the
metadata decoded as text, and a file refused naming it, in one wording, when it is missing, not
Parquet, or a table of another kind (or of none); a recorded method name read by the name it has
now. Needs pyarrow."""

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from layerprune_tables import TableError, current_method_name, read_metadata, read_table  # noqa: E402


def write(path: Path, metadata: dict | None):
    table = pa.table({"k": pa.array([1, 2], pa.uint32()), "method": ["sleb", "sleb"]})
    if metadata is not None:
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, path)
    return path


def refused(message, *args):
    with pytest.raises(TableError) as caught:
        read_table(*args)
    assert str(caught.value) == message
    assert caught.value.path == args[0]
    # The metadata alone is refused in the same words.
    with pytest.raises(TableError) as caught:
        read_metadata(*args)
    assert str(caught.value) == message


def test_a_table_of_the_kind_asked_for_is_read_with_its_metadata_as_text(tmp_path):
    path = write(tmp_path / "sleb.parquet", {"layerprune.table": "plans", "layerprune.num_blocks": "6",
                                            "layerprune.model_id": "ab12"})
    metadata, table = read_table(path, "plans", "apply-prune --out")
    assert metadata["layerprune.table"] == "plans"
    assert metadata["layerprune.num_blocks"] == "6" and metadata["layerprune.model_id"] == "ab12"
    assert table.to_pylist() == [{"k": 1, "method": "sleb"}, {"k": 2, "method": "sleb"}]
    assert read_metadata(path, "plans") == metadata
    # A string path as well as a Path; no kind asked for: any table, with or without metadata.
    assert read_table(str(path))[0] == metadata
    bare = write(tmp_path / "bare.parquet", None)
    assert read_table(bare)[1].num_rows == 2
    assert not any(key.startswith("layerprune.") for key in read_metadata(bare))


def test_a_missing_file_is_refused_naming_it_what_was_expected_and_its_writer(tmp_path):
    path = tmp_path / "absent.parquet"
    refused(f"{path}: missing, where a plans table was expected (written by apply-prune --out)",
            path, "plans", "apply-prune --out")
    refused(f"{path}: missing, where an evaluations table was expected", path, "evaluations")
    refused(f"{path}: missing", path)


def test_a_file_that_is_not_parquet_is_refused_naming_it(tmp_path):
    path = tmp_path / "labels.parquet"
    path.write_text("1111 full 0\n")
    with pytest.raises(TableError) as caught:
        read_table(path, "task_choices", "evaluate --tasks --choices-out")
    message = str(caught.value)
    assert message.startswith(f"{path}: not a readable Parquet table (")
    assert message.endswith("), where a task_choices table was expected (written by evaluate --tasks --choices-out)")
    with pytest.raises(TableError, match="not a readable Parquet table"):
        read_metadata(path)
    # Metadata that is not UTF-8 text is not a table a stage wrote either.
    odd = tmp_path / "odd.parquet"
    pq.write_table(pa.table({"k": [1]}).replace_schema_metadata({b"layerprune.table": b"\xff"}), odd)
    with pytest.raises(TableError, match=f"^{odd}: not a readable Parquet table"):
        read_table(odd, "plans")


def test_a_table_of_another_kind_or_of_none_is_refused_naming_both_kinds(tmp_path):
    other = write(tmp_path / "full-eval.parquet", {"layerprune.table": "evaluations"})
    refused(f"{other}: a table of kind 'evaluations', where a plans table was expected "
            "(written by apply-prune --out)", other, "plans", "apply-prune --out")
    bare = write(tmp_path / "bare.parquet", None)
    refused(f"{bare}: not a layerprune table, where an evaluations table was expected", bare, "evaluations")
    empty_kind = write(tmp_path / "empty.parquet", {"layerprune.table": ""})
    refused(f"{empty_kind}: not a layerprune table, where a plans table was expected", empty_kind, "plans")


@pytest.mark.parametrize("recorded, now", [
    # Plan tables written before the method names were made one.
    ("one-shot:block-influence", "block-influence"),
    ("one-shot:stratified-semivalue", "stratified-semivalue"),
    ("one-shot:surrogate-shapley", "surrogate-shapley"),
    ("iterative-surrogate", "iterative"),
    ("surrogate-search", "search"),
    # frontier.csv's quadratic-surrogate Shapley method; Make's plan files and task labels.
    ("shapley", "surrogate-shapley"),
    ("published", "stratified-semivalue"),
    # Names that are current are kept.
    ("surrogate-shapley", "surrogate-shapley"),
    ("search", "search"),
    ("adaptive-raced", "adaptive-raced"),
    ("random-3", "random-3"),
    ("best-known", "best-known"),
    (None, None),
])
def test_a_recorded_method_name_reads_as_the_name_it_has_now(recorded, now):
    assert current_method_name(recorded) == now


def test_the_method_names_need_no_pyarrow():
    """frontier.py and calibration_windows.py (standard library only) read names through it."""
    import subprocess

    code = ("import sys; sys.modules['pyarrow'] = None; sys.path.insert(0, sys.argv[1]); "
            "from layerprune_tables import current_method_name; print(current_method_name('shapley'))")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parents[2] / "tools")],
                         check=True, capture_output=True, text=True).stdout
    assert out == "surrogate-shapley\n"
