"""tools/prune/tiny_hf.py's output: a file where the folder goes is refused before the model is
built, even with --force (rmtree failed on it, a traceback after the build). Needs torch and
transformers, so it lives with the exporter's tests (`make test-export`, build/venv-export): in
tools/prune/tests, which `make test` runs in build/venv-test (no torch), it was always skipped."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[2] / "prune" / "tiny_hf.py"


def test_a_file_in_the_way_is_refused_and_kept(tmp_path):
    out = tmp_path / "tiny"
    out.write_text("notes")
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--force"], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"tiny_hf: error: --out {out} exists and is a file, not a folder" in result.stderr
    assert out.read_text() == "notes" and sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_force_replaces_the_folder(tmp_path):
    out = tmp_path / "tiny"
    out.mkdir()
    (out / "old.txt").write_text("old")
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--force"], check=True, capture_output=True)
    assert (out / "config.json").is_file() and not (out / "old.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
