"""`make tasks-crosscheck` (pipelines/tasks.mk) as `make -n` lists it: its evaluate run may
replace the check's own tables when they cannot be resumed. Needs make only."""

import os
import subprocess
from pathlib import Path

from test_prune import make_env

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("LAYERPRUNE_BIN", ROOT / "target" / "debug"))


def test_the_crosscheck_starts_its_tables_afresh_when_they_cannot_be_resumed_and_passes_bos(tmp_path):
    """Its tables were resumed or refused: after a change of TASKS, SEED, BOS or device (which a
    choice log records since 2026-12-06) evaluate refused them and the goal failed on every run,
    where `make tasks` moves its own aside. The cross-check is told the BOS evaluate was given
    (it encoded without one whatever BOS was)."""
    env = make_env()
    for name in ("MODEL_NAME", "RUN", "MODEL_DIR", "PRUNE_NAME", "PRUNE_OUT"):
        env.pop(name, None)
    result = subprocess.run(["make", "-n", "--no-print-directory", f"BIN={BIN}", "CARGO=true",
                             f"BUILD={tmp_path / 'build'}", "tasks-crosscheck", "BOS=off"],
                            cwd=ROOT, capture_output=True, text=True, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    evaluate = next(line for line in output.splitlines() if "cross-evaluations.parquet" in line)
    assert " --overwrite " in evaluate and " --bos off " in evaluate, evaluate
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "tools/tasks/crosscheck.py" in line)
    crosscheck = " ".join(lines[start:start + 3])
    assert " --bos off " in crosscheck, crosscheck
