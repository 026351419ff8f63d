"""tools/export/one_file.py: a graph and its data file put in place so that a kill at any moment
leaves the old pair or the new pair whole, never a graph beside another export's weights."""

import os
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "export"))
import one_file  # noqa: E402


def staged_pair(staging: Path, out: Path, content: str):
    """A staged graph naming its staged data file (the graph's text stands in for ONNX)."""
    data = staging / one_file.data_name(out)
    data.write_text(f"weights {content}")
    graph = staging / out.name
    graph.write_text(f"graph {content} -> {data.name}")
    return graph, data


def named_data(out: Path) -> Path:
    return out.parent / out.read_text().split(" -> ")[1]


def test_a_kill_between_the_renames_leaves_the_old_pair_whole(tmp_path):
    out = tmp_path / "model.onnx"
    staging = one_file.staging_folder(out)
    one_file.put_in_place(*staged_pair(staging, out, "old"), out)
    assert named_data(out).read_text() == "weights old"

    # The new data file is moved in, and the run is killed before the graph's rename: the old
    # graph still names the old weights, which are still there.
    staging = one_file.staging_folder(out)
    graph, data = staged_pair(staging, out, "new")
    os.replace(data, out.parent / data.name)
    assert named_data(out).read_text() == "weights old"

    # The next write puts its pair in place and removes every data file its graph does not
    # name: the old one and the killed run's.
    staging = one_file.staging_folder(out)
    one_file.put_in_place(*staged_pair(staging, out, "newer"), out)
    assert named_data(out).read_text() == "weights newer"
    data_files = [p.name for p in tmp_path.iterdir() if p.name.endswith(".data")]
    assert data_files == [named_data(out).name]


def test_a_graph_without_data_removes_earlier_data_files_and_keeps_others(tmp_path):
    out = tmp_path / "model.onnx"
    (tmp_path / "model.onnx.data").write_text("from an export before data files had names")
    (tmp_path / "model.onnx.0123456789ab.data").write_text("an earlier large export")
    (tmp_path / "other.onnx.0123456789ab.data").write_text("another model's")
    (tmp_path / "model.onnx.notes.data").write_text("not a data file name this writes")
    graph = tmp_path / "staged.onnx"
    graph.write_text("graph with weights inside")
    one_file.put_in_place(graph, None, out)
    assert [p.name for p in one_file.data_files_of(out)] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.onnx",
        "model.onnx.notes.data",
        "other.onnx.0123456789ab.data",
    ]


def test_staging_folders_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    out = tmp_path / "model.onnx"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    killed = tmp_path / f".model.onnx.tmp-{host}-{dead.stdout.strip()}-abc"
    killed.mkdir()
    (killed / "model.onnx").write_text("a killed run's half-written merge")
    live = tmp_path / f".model.onnx.tmp-{host}-{os.getppid()}-def"
    # Another machine's, whose process ids this one cannot judge.
    elsewhere = tmp_path / f".model.onnx.tmp-another-host-{dead.stdout.strip()}-ghi"
    elsewhere.mkdir()
    live.mkdir()
    staging = one_file.staging_folder(out)
    assert staging.is_dir() and staging.name.startswith(f".model.onnx.tmp-{host}-{os.getpid()}-")
    assert not killed.exists()
    assert live.exists() and elsewhere.exists()
