"""tools/bench/gpu_race.py on the CPU (`make test-bench`): the race timing the GPU recipe's last call
runs, on the committed tiny model, so that its one GPU run does not fail on a bug a CPU could
have found.

Needs the stage binaries (LAYERPRUNE_BIN, ORT_DYLIB_PATH), as test_gpu_bench.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "tools" / "bench" / "gpu_race.py"
BIN = Path(os.environ.get("LAYERPRUNE_BIN", ROOT / "target" / "debug"))
ORT = os.environ.get("ORT_DYLIB_PATH", str(ROOT / "build" / "ort-cpu" / "onnxruntime" / "capi"
                                           / "libonnxruntime.so.1.31.1"))
MODEL = ROOT / "data" / "fixtures" / "tiny-llama"


def tokens(tmp_path: Path) -> Path:
    text, out = tmp_path / "text.txt", tmp_path / "tokens.parquet"
    text.write_text("The quick brown fox jumps over the lazy dog, and the dog sleeps on in the sun. " * 40)
    subprocess.run([str(BIN / "prepare-tokens"), "--model", str(MODEL), "--text", str(text), "--windows", "10",
                    "--seq-len", "16", "--bos", "off", "--out", str(out)], check=True, capture_output=True,
                   env={**os.environ, "ORT_DYLIB_PATH": ORT})
    return out


def run_race(tmp_path: Path, device: str):
    return subprocess.run([sys.executable, str(SCRIPT), "--bin", str(BIN), "--model", str(MODEL), "--tokens",
                           str(tokens(tmp_path)), "--device", device, "--k", "2", "--work", str(tmp_path / "work"),
                           "--json", str(tmp_path / "race.json"), "--markdown", str(tmp_path / "race.md")],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "ORT_DYLIB_PATH": ORT})


def test_raced_and_unraced_adaptive_removal_are_timed_per_counted_evaluation(tmp_path):
    """Both runs choose k = 2 blocks with the evaluations their plan tables count; each one's
    seconds less the model's opening, per evaluation, and their ratio, in the JSON and the table."""
    done = run_race(tmp_path, "cpu")
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((tmp_path / "race.json").read_text())
    raced, unraced = record["rows"]
    for row in (raced, unraced):
        assert row["error"] is None, row
        assert row["llm_evaluations"] > 0 and len(row["removed_blocks"]) == 2, row
        assert 0 < row["open_seconds"] < row["wall_seconds"] and row["seconds_per_evaluation"] > 0, row
    assert record["raced_over_unraced_seconds_per_evaluation"] == (raced["seconds_per_evaluation"]
                                                                   / unraced["seconds_per_evaluation"])
    table = (tmp_path / "race.md").read_text()
    assert "| adaptive, raced (--race-se 3) |" in table and "Raced / unraced seconds per evaluation:" in table


def test_a_device_that_cannot_run_is_a_row_with_its_error_and_exit_1(tmp_path):
    """`--device cuda` on a machine without a GPU: both rows keep apply-prune's error, no ratio."""
    done = run_race(tmp_path, "cuda")
    assert done.returncode == 1, done.stdout + done.stderr
    record = json.loads((tmp_path / "race.json").read_text())
    assert all(row["error"].startswith("apply-prune exited") for row in record["rows"]), record
    assert record["raced_over_unraced_seconds_per_evaluation"] is None
