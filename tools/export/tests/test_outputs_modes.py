"""The exporters' outputs and permissions, as the Rust stages treat theirs: an existing output its
owner may not write (made read-only, `chmod a-w`) is refused up front, naming it, and never
replaced by a rename going round its mode; a replaced folder or file keeps its permission bits,
so a private model stays private when it is written again. The bits decide, not who runs, so
these hold as root too."""

import os
import re
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import one_file  # noqa: E402
import outputs  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[3] / "data" / "fixtures" / "tiny-llama"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_read_only_output_is_refused_up_front(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    folder.chmod(0o555)
    file = tmp_path / "merged.onnx"
    file.write_bytes(b"old")
    file.chmod(0o444)
    try:
        for out, is_folder, what in [(folder, True, "a read-only folder (mode 0555)"),
                                     (file, False, "read-only (mode 0444)")]:
            with pytest.raises(SystemExit) as refused:
                outputs.refuse_unwritable("export", out, folder=is_folder)
            message = str(refused.value)
            assert message.startswith(f"export: error: --out {out} is {what}"), message
            assert "make it writable (chmod u+w) or choose another path" in message
        # Writable ones pass, whatever else their bits say.
        folder.chmod(0o700)
        file.chmod(0o600)
        outputs.refuse_unwritable("export", folder, folder=True)
        outputs.refuse_unwritable("export", file, folder=False)
    finally:
        folder.chmod(0o755)
        file.chmod(0o644)


def test_a_replaced_folder_keeps_its_mode_and_a_read_only_one_is_refused(tmp_path):
    out = tmp_path / "model"
    for old_mode in (0o700, 0o750, 0o2775):
        out.mkdir()
        (out / "old.txt").write_text("old")
        out.chmod(old_mode)
        staging = tmp_path / "staging"
        staging.mkdir()
        (staging / "new.txt").write_text("new")
        staging.chmod(0o755)
        outputs.replace_folder(staging, out)
        assert (out / "new.txt").read_text() == "new" and not (out / "old.txt").exists()
        assert mode(out) == old_mode, f"{mode(out):04o} after replacing a {old_mode:04o} folder"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
        out.chmod(0o755)
        (out / "new.txt").unlink()
        out.rmdir()

    # A new folder keeps the bits it was staged with.
    staging = tmp_path / "staging"
    staging.mkdir()
    staging.chmod(0o751)
    outputs.replace_folder(staging, out)
    assert mode(out) == 0o751

    # Made read-only after the up-front check: still not replaced, and the staging folder stays
    # for its caller to remove.
    out.chmod(0o555)
    staging = tmp_path / "staging"
    staging.mkdir()
    try:
        with pytest.raises(outputs.ReadOnlyOutput, match=re.escape("chmod u+w")):
            outputs.replace_folder(staging, out)
        assert out.is_dir() and mode(out) == 0o555 and staging.is_dir()
    finally:
        out.chmod(0o755)


def test_a_replaced_file_and_its_data_keep_the_graphs_mode(tmp_path):
    out = tmp_path / "merged.onnx"
    out.write_bytes(b"old graph")
    old_data = tmp_path / "merged.onnx.data"
    old_data.write_bytes(b"old weights")
    out.chmod(0o600)
    staging = tmp_path / "staging"
    staging.mkdir()
    graph, data = staging / "merged.onnx", staging / one_file.data_name(out)
    graph.write_bytes(b"new graph")
    data.write_bytes(b"new weights")
    graph.chmod(0o644)
    data.chmod(0o644)
    one_file.put_in_place(graph, data, out)
    assert out.read_bytes() == b"new graph" and mode(out) == 0o600
    new_data = tmp_path / data.name
    assert new_data.read_bytes() == b"new weights" and mode(new_data) == 0o600
    assert not old_data.exists()

    # A read-only graph is not replaced, nor its data file touched.
    out.chmod(0o400)
    graph.write_bytes(b"newer graph")
    try:
        with pytest.raises(outputs.ReadOnlyOutput, match=re.escape(f"{out} is read-only")):
            one_file.put_in_place(graph, None, out)
        assert out.read_bytes() == b"new graph" and new_data.exists()
    finally:
        out.chmod(0o600)


@pytest.mark.skipif(not (FIXTURE / "manifest.json").is_file(), reason="needs data/fixtures/tiny-llama")
def test_merge_layered_keeps_a_private_file_private_and_refuses_a_read_only_one(tmp_path):
    pytest.importorskip("onnx")
    import merge_layered

    out = tmp_path / "merged.onnx"
    out.write_bytes(b"old")
    out.chmod(0o600)
    merge_layered.main([str(FIXTURE), str(out), "--force"])
    assert out.stat().st_size > 3 and mode(out) == 0o600

    out.chmod(0o444)
    before = out.read_bytes()
    try:
        with pytest.raises(SystemExit) as refused:
            merge_layered.main([str(FIXTURE), str(out), "--force"])
        assert "is read-only (mode 0444)" in str(refused.value), refused.value
        assert "chmod u+w" in str(refused.value)
        assert out.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.onnx"]
    finally:
        out.chmod(0o644)
