"""`make tasks` and `make tasks-crosscheck` (pipelines/tasks.mk) as `make -n` lists them, and
the settings stamp of `make tasks`' tables: its evaluate run may replace the check's own tables
when they cannot be resumed; TASK_BATCH_TOKENS reaches the task runs alone. Needs make (and
evaluate's --help, for its default batch tokens)."""

import os
import re
import subprocess
from pathlib import Path

import pytest

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
    assert f"{task_run}/previous" not in output and "evaluate --tasks" in output, output
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
    # What the task run's tables record still sets them aside: --tf32, TASK_BATCH_TOKENS on CUDA.
    for batch_tokens, stamped in (("", "--tf32 off"), ("4096", "--tf32 off --batch-tokens 4096")):
        for name in tables:
            (task_run / name).write_text("scored\n")
        make("--device cuda --threads 1 --tf32 off", str(stamp), f"TASK_BATCH_TOKENS={batch_tokens}")
        assert kept() == [] and sorted(p.name for p in (task_run / "previous").iterdir()) == sorted(tables), stamped
        assert stamp.read_text().splitlines()[0].endswith(" auto cuda " + stamped)
    # A stamp of before whose other settings changed too sets the tables aside.
    for name in tables:
        (task_run / name).write_text("scored\n")
    lines = stamp.read_text().splitlines()
    stamp.write_text("\n".join([lines[0] + " --mask-batch 8", *lines[1:]]) + "\n")
    make("--device cuda --threads 1 --mask-batch 8", str(stamp))
    assert kept() == []


def make_tasks(tmp_path, *args):
    """`make --no-print-directory ARGS` on the tiny fixture with its own build folder and task data
    (a `.complete` alone: nothing is fetched); returns (exit status, output)."""
    env = make_env()
    for name in ("MODEL_NAME", "RUN", "MODEL_DIR", "PRUNE_NAME", "PRUNE_OUT"):
        env.pop(name, None)
    task_data = tmp_path / "task-data"
    task_data.mkdir(exist_ok=True)
    (task_data / ".complete").write_text("fetched\n")
    result = subprocess.run(["make", "--no-print-directory", f"BIN={BIN}", "CARGO=true", f"BUILD={tmp_path / 'build'}",
                             f"MODEL_DIR={TINY}", "MODEL_NAME=tiny", f"TASK_DATA={task_data}", *args],
                            cwd=ROOT, capture_output=True, text=True, env=env)
    return result.returncode, result.stdout + result.stderr


def test_task_batch_tokens_reaches_the_task_runs_alone(tmp_path):
    """The padded tokens of a task run's forward pass could be set only through EVALUATE_FLAGS,
    which every stage reads and all but a task run refuse (apply-prune, which `make tasks` runs
    when its plans are missing, has no --batch-tokens): TASK_BATCH_TOKENS gives it to the
    evaluate runs of make tasks and make tasks-crosscheck and nothing else, empty gives nothing
    (evaluate's default), and EVALUATE_FLAGS' --batch-tokens is refused, naming the setting."""
    for device in ("cpu", "cuda"):
        # The plans are missing: the recursive make lists their apply-prune runs too.
        status, output = make_tasks(tmp_path, "-n", "tasks", "KS=2,3", f"DEVICE={device}", "TASK_BATCH_TOKENS=4096")
        assert status == 0, output
        # The stages' calls, each a whole command line (continued lines joined).
        stages = [line for line in output.replace("\\\n", " ").splitlines() if line.startswith(f"{BIN}/")]
        task_run = [line for line in stages if "evaluate --tasks" in line]
        assert len(task_run) == 1 and " --batch-tokens 4096 " in task_run[0], output
        assert any("/apply-prune " in line for line in stages), output
        assert [line for line in stages if "--batch-tokens" in line] == task_run, output
    status, output = make_tasks(tmp_path, "-n", "tasks-crosscheck", "MODEL_NAME=smollm2-135m", "TASK_BATCH_TOKENS=512")
    assert status == 0, output
    crosscheck = [line for line in output.splitlines() if line.startswith(f"{BIN}/") and "--batch-tokens" in line]
    assert len(crosscheck) == 1 and "cross-evaluations.parquet" in crosscheck[0], output
    assert " --batch-tokens 512 " in crosscheck[0], output
    # Empty, the default: evaluate's own.
    status, output = make_tasks(tmp_path, "-n", "tasks", "KS=2,3", "TASK_BATCH_TOKENS=")
    assert status == 0 and "evaluate --tasks" in output and "--batch-tokens" not in output, output
    # The one route: EVALUATE_FLAGS' --batch-tokens reached every stage.
    for flags in ("--device cuda --batch-tokens 4096", "--device cuda --batch-tokens=4096"):
        status, output = make_tasks(tmp_path, "-n", "tasks", "KS=2,3", f"EVALUATE_FLAGS={flags}")
        assert status != 0 and "give TASK_BATCH_TOKENS=4096 instead" in output, output
        assert "evaluate --tasks" not in output, output


@pytest.mark.parametrize("args", [["task-plans", "KS=2,3"], ["results", "KS=2,3"], ["lint"]])
def test_task_batch_tokens_is_refused_by_goals_that_do_not_read_it(tmp_path, args):
    status, output = make_tasks(tmp_path, "-n", *args, "TASK_BATCH_TOKENS=4096")
    assert status != 0 and f"make {args[0]}: TASK_BATCH_TOKENS=4096 is not read here" in output, output
    # Beside a goal that reads it, left alone.
    status, output = make_tasks(tmp_path, "-n", *args, "tasks", "KS=2,3", "TASK_BATCH_TOKENS=4096")
    assert status == 0 and " --batch-tokens 4096 " in output, output


@pytest.mark.parametrize("value, expected", [
    ("0", "TASK_BATCH_TOKENS='0' must be a number of padded tokens per forward pass"),
    ("04096", "TASK_BATCH_TOKENS='04096' must be a number of padded tokens per forward pass"),
    ("4k", "TASK_BATCH_TOKENS='4k' must be a number of padded tokens per forward pass"),
    ("-1", "TASK_BATCH_TOKENS='-1' must be a number of padded tokens per forward pass"),
    # evaluate's bound, 2^32 (its parser's message, checked below).
    ("4294967297", "TASK_BATCH_TOKENS='4294967297' must be at most 4294967296"),
])
def test_a_bad_task_batch_tokens_is_refused_before_anything_runs(tmp_path, value, expected):
    """evaluate's parser refused it only after the settings stamp had taken it in, setting the
    tables aside (and again once it was put right)."""
    status, output = make_tasks(tmp_path, "-n", "tasks", "KS=2,3", "DEVICE=cuda", f"TASK_BATCH_TOKENS={value}")
    assert status != 0 and expected in output, output
    assert "evaluate --tasks" not in output and not (tmp_path / "build" / "runs").exists(), output
    if value == "4294967297":
        refused = subprocess.run([BIN / "evaluate", "--tasks", "piqa", "--batch-tokens", value],
                                 capture_output=True, text=True)
        assert refused.returncode != 0 and "is not in 1..=4294967296" in refused.stderr, refused.stderr
        status, output = make_tasks(tmp_path, "-n", "tasks", "KS=2,3", "TASK_BATCH_TOKENS=4294967296")
        assert status == 0 and " --batch-tokens 4294967296 " in output, output


def test_task_batch_tokens_sets_the_tables_aside_on_cuda_only_and_as_evaluate_records_it(tmp_path):
    """On CUDA a task run records its batch tokens (`evaluated_on`: `batch tokens N`, the default
    2048 too) and refuses to resume tables of another: a change of TASK_BATCH_TOKENS sets them
    aside; evaluate's default given by name does not (the same record as none given), and a
    stamp written when EVALUATE_FLAGS carried --batch-tokens is that of TASK_BATCH_TOKENS. On
    the CPU batching is bit for bit the same and evaluate records none: nothing is set aside."""
    task_run = tmp_path / "build" / "runs" / "tasks"
    stamp = task_run / ".settings" / "questions"
    tables = ["evaluations.parquet", "choices.parquet", "accuracies.parquet"]
    default = re.search(r"--batch-tokens <BATCH_TOKENS>\n.*\[default: (\d+)\]",
                        subprocess.run([BIN / "evaluate", "--help"], capture_output=True, text=True).stdout).group(1)

    def stamped(device, batch_tokens):
        """The stamp made with these settings, the run's tables scored before; the tables kept."""
        task_run.mkdir(parents=True, exist_ok=True)
        for name in tables:
            (task_run / name).write_text("scored\n")
        status, output = make_tasks(tmp_path, str(stamp), f"DEVICE={device}", "THREADS=1",
                                    f"TASK_BATCH_TOKENS={batch_tokens}")
        assert status == 0, output
        return sorted(p.name for p in task_run.iterdir() if p.is_file())

    assert stamped("cuda", "") == sorted(tables)
    assert stamped("cuda", default) == sorted(tables), "evaluate's default set the tables aside"
    assert stamp.read_text().splitlines()[0].endswith(" auto cuda"), stamp.read_text()
    assert stamped("cuda", "4096") == [] and sorted(p.name for p in (task_run / "previous").iterdir()) == sorted(tables)
    assert stamp.read_text().splitlines()[0].endswith(" auto cuda --batch-tokens 4096"), stamp.read_text()
    assert stamped("cuda", "4096") == sorted(tables)
    assert stamped("cuda", "") == []
    # As EVALUATE_FLAGS="--device cuda --threads 1 --batch-tokens 4096" stamped it before.
    lines = stamp.read_text().splitlines()
    stamp.write_text("\n".join([lines[0] + " --batch-tokens 4096", *lines[1:]]) + "\n")
    assert stamped("cuda", "4096") == sorted(tables)
    # The CPU: any batch tokens, the same tables.
    assert stamped("cpu", "4096") == []
    for batch_tokens in ("", "512", "4096"):
        assert stamped("cpu", batch_tokens) == sorted(tables), batch_tokens
        assert stamp.read_text().splitlines()[0].endswith(" auto cpu"), stamp.read_text()
