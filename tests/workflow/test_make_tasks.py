"""`make tasks-crosscheck` (pipelines/tasks.mk) as `make -n` lists it: its evaluate run may
replace the check's own tables when they cannot be resumed. Needs make only."""

import os
import subprocess
from pathlib import Path

from test_make_settings import TINY
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


def test_the_window_batching_of_other_stages_does_not_set_the_task_tables_aside(tmp_path):
    """On CUDA the task run's settings stamp held EVALUATE_FLAGS' --mask-batch and --batch-windows
    (the device stamp's MODEL_RUNTIME), which a task run is not given and its tables do not record:
    changing them set hours of GPU task scoring aside. The stamp holds what the tables record
    (`evaluated_on`: the device's kind, --tf32, --graph-optimization, on CUDA --batch-tokens); a
    stamp written before, with those flags, is taken over without setting anything aside. The
    stamp's own rule runs here (it runs no stage), and `make -n tasks` lists what tasks would do."""
    env = make_env()
    for name in ("MODEL_NAME", "RUN", "MODEL_DIR", "PRUNE_NAME", "PRUNE_OUT"):
        env.pop(name, None)
    task_data = tmp_path / "task-data"
    task_data.mkdir()
    (task_data / ".complete").write_text("fetched\n")
    task_run = tmp_path / "build" / "runs" / "tasks"
    stamp = task_run / ".settings" / "questions"
    settings = [f"BIN={BIN}", "CARGO=true", f"BUILD={tmp_path / 'build'}", f"MODEL_DIR={TINY}",
                "MODEL_NAME=tiny", f"TASK_DATA={task_data}"]

    def make(flags, *args):
        result = subprocess.run(["make", "--no-print-directory", *settings, f"EVALUATE_FLAGS={flags}", *args],
                                cwd=ROOT, capture_output=True, text=True, env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        return output

    tables = ["evaluations.parquet", "choices.parquet", "accuracies.parquet"]

    def kept():
        return sorted(p.name for p in task_run.iterdir() if p.is_file())

    make("--device cuda --threads 1 --mask-batch 4", str(stamp))
    for name in tables:
        (task_run / name).write_text("scored\n")
    # Other window batching: nothing to set aside, the stamp not even listed.
    output = make("--device cuda --threads 1 --mask-batch 8 --batch-windows=2", "-n", "tasks", "KS=2,3")
    assert "previous" not in output and "evaluate --tasks" in output, output
    assert "--mask-batch" not in next(line for line in output.splitlines() if "evaluate --tasks" in line)
    make("--device cuda --threads 1 --mask-batch 8 --batch-windows=2", str(stamp))
    assert kept() == sorted(tables)
    assert stamp.read_text().splitlines()[0].endswith(" auto cuda"), stamp.read_text()
    # A stamp of before, with the window batching it was written with: rewritten, nothing set aside.
    lines = stamp.read_text().splitlines()
    stamp.write_text("\n".join([lines[0] + " --mask-batch 8 --batch-windows=2", *lines[1:]]) + "\n")
    make("--device cuda --threads 1 --mask-batch 4", str(stamp))
    assert kept() == sorted(tables) and not (task_run / "previous").exists()
    assert stamp.read_text().splitlines()[0].endswith(" auto cuda"), stamp.read_text()
    # What the task run's tables record still sets them aside: --tf32, --batch-tokens on CUDA.
    for flags in ("--device cuda --threads 1 --tf32 off", "--device cuda --threads 1 --tf32 off --batch-tokens 4096"):
        for name in tables:
            (task_run / name).write_text("scored\n")
        make(flags, str(stamp))
        assert kept() == [] and sorted(p.name for p in (task_run / "previous").iterdir()) == sorted(tables), flags
        assert stamp.read_text().splitlines()[0].endswith(" auto cuda " + flags.split(" cuda --threads 1 ")[1])
    # A stamp of before whose other settings changed too sets the tables aside.
    for name in tables:
        (task_run / name).write_text("scored\n")
    lines = stamp.read_text().splitlines()
    stamp.write_text("\n".join([lines[0] + " --mask-batch 8", *lines[1:]]) + "\n")
    make("--device cuda --threads 1 --mask-batch 8", str(stamp))
    assert kept() == []
