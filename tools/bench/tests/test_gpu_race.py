"""tools/bench/gpu_race.py on the CPU (`make test-bench`): the race timing the GPU recipe's last call
runs, on the committed tiny model, so that its one GPU run does not fail on a bug a CPU could
have found.

Needs the stage binaries (LAYERPRUNE_BIN, ORT_DYLIB_PATH), as test_gpu_bench.py.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "tools" / "bench" / "gpu_race.py"
BIN = Path(os.environ.get("LAYERPRUNE_BIN", ROOT / "target" / "debug"))
ORT = os.environ.get("ORT_DYLIB_PATH", str(ROOT / "build" / "ort-cpu" / "onnxruntime" / "capi"
                                           / "libonnxruntime.so.1.31.1"))
MODEL = ROOT / "data" / "fixtures" / "tiny-llama"
RACED, UNRACED = "adaptive, raced (--race-se 3)", "adaptive, unraced"


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
    """Each method at two budgets (2 and 4 evaluations a block), raced, unraced, unraced, raced;
    each run's evaluations as its plan table counts them and its seconds less the opening; each
    method's seconds per evaluation as the slope between its two runs, and their ratio, in the JSON
    and the table."""
    done = run_race(tmp_path, "cpu")
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((tmp_path / "race.json").read_text())
    assert record["budgets"] == [12, 24] and record["warm_up_exit"] == 0
    runs = record["runs"]
    assert [(r["method"], r["budget"]) for r in runs] == [(RACED, 12), (UNRACED, 12), (UNRACED, 24), (RACED, 24)]
    for run in runs:
        assert run["error"] is None, run
        assert 0 < run["llm_evaluations"] <= run["budget"] and len(run["removed_blocks"]) == 2, run
        assert 0 < run["open_seconds"] < run["wall_seconds"], run
    for method in (RACED, UNRACED):
        low, high = sorted((r for r in runs if r["method"] == method), key=lambda r: r["budget"])
        assert high["llm_evaluations"] > low["llm_evaluations"], (low, high)
        slope = ((high["measuring_seconds"] - low["measuring_seconds"])
                 / (high["llm_evaluations"] - low["llm_evaluations"]))
        assert record["seconds_per_evaluation"][method] == slope
    assert record["raced_over_unraced_seconds_per_evaluation"] == (record["seconds_per_evaluation"][RACED]
                                                                   / record["seconds_per_evaluation"][UNRACED])
    table = (tmp_path / "race.md").read_text()
    assert f"| {RACED} | 24 |" in table and "- raced / unraced seconds per evaluation:" in table


def test_a_device_that_cannot_run_is_a_row_with_its_error_and_exit_1(tmp_path):
    """`--device cuda` on a machine without a GPU: every run keeps apply-prune's error, no ratio."""
    done = run_race(tmp_path, "cuda")
    assert done.returncode == 1, done.stdout + done.stderr
    record = json.loads((tmp_path / "race.json").read_text())
    assert len(record["runs"]) == 4 and record["warm_up_exit"] != 0
    assert all(run["error"].startswith("apply-prune exited") for run in record["runs"]), record
    assert record["raced_over_unraced_seconds_per_evaluation"] is None


def test_a_model_of_one_block_repeated_is_refused(tmp_path):
    """gpu_bench.py's replicated shapes (every block one block's weights): removing any block gives
    the same model, so a race would drop nothing; refused, naming the field, before any run."""
    model = tmp_path / "replicated"
    shutil.copytree(MODEL, model)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["source"] = {"kind": "random", "replicated_block": True}
    (model / "manifest.json").write_text(json.dumps(manifest))
    done = subprocess.run([sys.executable, str(SCRIPT), "--bin", str(BIN), "--model", str(model), "--tokens",
                           str(tmp_path / "none.parquet"), "--device", "cpu", "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "replicated_block" in done.stderr, done.stderr
    assert not (tmp_path / "work").exists()


def test_a_warm_up_past_the_timeout_is_recorded_and_the_runs_are_still_made(tmp_path):
    """The warm-up `evaluate` (the device's first start) is bounded by --timeout as each run is;
    one that takes longer is said in the record, not a crash that loses the four runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apply-prune").symlink_to(BIN / "apply-prune")
    (bin_dir / "evaluate").write_text("#!/bin/sh\nexec sleep 60\n")
    (bin_dir / "evaluate").chmod(0o755)
    done = subprocess.run([sys.executable, str(SCRIPT), "--bin", str(bin_dir), "--model", str(MODEL), "--tokens",
                           str(tokens(tmp_path)), "--device", "cpu", "--k", "2", "--work", str(tmp_path / "work"),
                           "--json", str(tmp_path / "race.json"), "--timeout", "8"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "ORT_DYLIB_PATH": ORT})
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((tmp_path / "race.json").read_text())
    assert record["warm_up_exit"] == "took over 8 s", record
    assert len(record["runs"]) == 4 and all(run["error"] is None for run in record["runs"]), record
    assert record["raced_over_unraced_seconds_per_evaluation"] is not None
