"""Make and `evaluate`'s checkpoints (pipelines/layerprune.mk, `checkpoint`): the demo's
evaluation table is checkpointed into evaluations.partial.parquet and renamed when whole, so a
crashed, killed or interrupted (Ctrl-C) run is resumed by the next `make`, never taken for the
whole table, and a checkpoint of other masks is replaced.

The stage binaries are stand-ins (seconds in all): `evaluate` appends one line per run to its
--out file (a resumed run keeps what was there), and can fail or hang after its checkpoint.
"""

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from test_prune import make_env

ROOT = Path(__file__).resolve().parents[2]

STAND_IN = r'''#!PYTHON
import json, os, sys, time
from pathlib import Path

name = Path(sys.argv[0]).name
args = sys.argv[1:]
if name == "inspect":  # complete when the last run finished its table
    text = Path(args[-1]).read_text()
    print(json.dumps({"metadata": {"complete": text.endswith("complete\n")}}, indent=2))
    sys.exit(0)
out = Path(args[args.index("--out") + 1])
with open(os.environ["CHECKPOINT_TEST_LOG"], "a") as log:
    log.write(f"{name} {out.name}\n")
if name != "evaluate":
    out.write_text(f"{name} {os.environ.get('CHECKPOINT_TEST_RUN', '')}\n")
    sys.exit(1 if os.environ.get("CHECKPOINT_TEST_FAIL_AFTER") == name else 0)
before = out.read_text() if out.exists() else ""
out.write_text(before + "chunk of run " + os.environ.get("CHECKPOINT_TEST_RUN", "") + "\n")
if os.environ.get("CHECKPOINT_TEST_FAIL"):
    sys.exit(1)  # a crash after a checkpoint
if os.environ.get("CHECKPOINT_TEST_HANG"):
    time.sleep(60)  # interrupted here
if os.environ.get("CHECKPOINT_TEST_STOP"):
    sys.exit(0)  # stopped by --max-new-masks: a part of the table, and exit status 0
out.write_text(out.read_text() + "complete\n")
'''


def setup(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = STAND_IN.replace("#!PYTHON", f"#!{sys.executable}")
    for name in ("prepare-tokens", "sample-masks", "evaluate", "inspect"):
        path = bin_dir / name
        path.write_text(script)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    model = tmp_path / "model"
    model.mkdir()
    (model / "manifest.json").write_text("{}\n")
    (tmp_path / "calib.txt").write_text("text\n")
    run = tmp_path / "run"
    log = tmp_path / "log.txt"
    command = ["make", "--no-print-directory", str(run / "evaluations.parquet"), f"RUN={run}",
               f"BIN={bin_dir}", "CARGO=true", f"MODEL_DIR={model}",
               f"CALIB_TEXT={tmp_path / 'calib.txt'}"]

    def env(run_name, **extra):
        values = make_env()
        values["CHECKPOINT_TEST_LOG"] = str(log)
        values["CHECKPOINT_TEST_RUN"] = run_name
        values.update(extra)
        return values

    def make(run_name, *args, **extra):
        log.write_text("")
        result = subprocess.run(command + list(args), cwd=ROOT, capture_output=True, text=True,
                                env=env(run_name, **extra))
        return result, log.read_text().split()

    return run, make, command, env


def crash_then_resume(make, table, **failure):
    """A first make whose evaluate stops after its checkpoint (`failure`) leaves the checkpoint
    and no table; the next resumes the checkpoint into the table and removes it."""
    checkpoint = table.with_name(table.name.replace(".parquet", ".partial.parquet"))
    stopped, _ = make("1", **failure)
    assert stopped.returncode != 0
    assert not table.exists(), "a stopped run left a table make would take as done"
    assert checkpoint.read_text() == "chunk of run 1\n"
    resumed, ran = make("2")
    assert resumed.returncode == 0, resumed.stderr
    assert "evaluate" in ran
    assert table.read_text() == "chunk of run 1\nchunk of run 2\ncomplete\n"
    assert not checkpoint.exists()
    return stopped, checkpoint


def test_a_crashed_evaluation_is_resumed_never_taken_for_the_table(tmp_path):
    run, make, _, _ = setup(tmp_path)
    table = run / "evaluations.parquet"
    _, checkpoint = crash_then_resume(make, table, CHECKPOINT_TEST_FAIL="1")

    again, ran = make("3")
    assert again.returncode == 0 and "evaluate" not in ran, ran

    # Other masks (MASKS changed): the table is remade, and a checkpoint older than the new
    # masks is not resumed.
    checkpoint.write_text("chunk of old masks\n")
    os.utime(checkpoint, (time.time() - 60, time.time() - 60))
    remade, ran = make("4", "MASKS=7")
    assert remade.returncode == 0, remade.stderr
    assert "sample-masks" in ran and "evaluate" in ran, ran
    assert table.read_text() == "chunk of run 4\ncomplete\n"


def test_the_full_models_evaluation_is_checkpointed_too(tmp_path):
    """full-eval.parquet (and the pruned model's, the frontier's pairs, make prune's) were
    written by `evaluate --out` itself: a kill between its checkpoint and its final write left
    an incomplete table newer than its inputs, and every later make refused it in the report."""
    run, make, command, _ = setup(tmp_path)
    command[2] = str(run / "full-eval.parquet")
    command.append(f"EVAL_TEXT={tmp_path / 'calib.txt'}")
    crash_then_resume(make, run / "full-eval.parquet", CHECKPOINT_TEST_FAIL="1")


def test_two_makes_on_one_run_folder_read_the_same_stamps(tmp_path):
    """The settings stamps were written through one fixed file (NAME.new) in the run folder: two
    makes at once (two `make prune K=`) renamed each other's, and one failed (`mv: cannot stat`)."""
    run, _, command, env = setup(tmp_path)
    stamps = [str(run / ".settings" / name) for name in ("tokens-calib", "tokens-eval", "masks", "device")]
    both = command[:2] + stamps + command[3:] + [f"EVAL_TEXT={tmp_path / 'calib.txt'}"]
    for attempt in range(8):
        runs = [subprocess.Popen(both, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env(str(attempt))) for _ in range(2)]
        for process in runs:
            _, stderr = process.communicate()
            assert process.returncode == 0, stderr
    assert not list((run / ".settings").glob("*.new*")), "a stamp's new content was left behind"


def test_a_table_evaluate_left_incomplete_is_not_renamed(tmp_path):
    """evaluate --max-new-masks stops with a part of the table and exits 0: the part was renamed
    to the table, up to date to make, and every later make failed in fit-surrogate."""
    run, make, _, _ = setup(tmp_path)
    stopped, _ = crash_then_resume(make, run / "evaluations.parquet", CHECKPOINT_TEST_STOP="1")
    assert "is not complete" in stopped.stderr and "run make again to resume it" in stopped.stderr, stopped.stderr


def test_a_target_a_failed_recipe_wrote_is_deleted_but_not_the_checkpoint(tmp_path):
    """.DELETE_ON_ERROR: a stage that wrote its output and then failed left a file newer than its
    inputs, which the next make took for done. The evaluation's checkpoint is no target: kept."""
    run, make, _, _ = setup(tmp_path)
    tokens = run / "tokens-calib.parquet"
    failed, _ = make("1", CHECKPOINT_TEST_FAIL_AFTER="prepare-tokens")
    assert failed.returncode != 0
    assert not tokens.exists(), "a table its failed recipe wrote was kept"
    again, ran = make("2", CHECKPOINT_TEST_FAIL="1")
    assert again.returncode != 0 and "prepare-tokens" in ran
    assert tokens.read_text() == "prepare-tokens 2\n"
    assert (run / "evaluations.partial.parquet").read_text() == "chunk of run 2\n"
    resumed, _ = make("3")
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "evaluations.parquet").read_text() == "chunk of run 2\nchunk of run 3\ncomplete\n"


def test_an_interrupted_evaluation_keeps_its_checkpoint(tmp_path):
    run, _, command, env = setup(tmp_path)
    table, checkpoint = run / "evaluations.parquet", run / "evaluations.partial.parquet"
    # Ctrl-C: SIGINT to make and its children, once the checkpoint is written. Started with
    # SIGINT's default action: a test run in the background (`cmd &`) inherits it ignored, and
    # make and Python then keep ignoring it.
    make = subprocess.Popen(command, cwd=ROOT, env=env("1", CHECKPOINT_TEST_HANG="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 30
        while not checkpoint.exists() and time.time() < deadline:
            time.sleep(0.1)
        assert checkpoint.exists()
        os.killpg(make.pid, signal.SIGINT)
        make.wait(timeout=30)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
    assert make.returncode != 0
    assert checkpoint.read_text() == "chunk of run 1\n", "make deleted the checkpoint"
    assert not table.exists()
    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env("2"))
    assert resumed.returncode == 0, resumed.stderr
    assert table.read_text() == "chunk of run 1\nchunk of run 2\ncomplete\n"
