"""One make at a time in a folder of settings stamps (pipelines/lock_folder.sh, folder_lock in
pipelines/layerprune.mk): a second make on a run folder is refused while the first works in it,
naming the folder and the first make, so that a table measured with one make's settings is never
left under the other's stamp, up to date to make (the reviewers' F4 of 2026-12-07). The lock goes
with the make that held it, killed (kill -9) too; the jobs of one make (make -j) and a make that
make runs share it. On the committed tiny fixture with the real stage binaries (LAYERPRUNE_BIN)
and ONNX Runtime's CPU build.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from test_make_settings import text
from test_prune import make_env

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("LAYERPRUNE_BIN", ROOT / "target" / "debug"))
TINY = ROOT / "data" / "fixtures" / "tiny-llama"
SLOW_FLAGS = "EVALUATE_FLAGS=--device cpu --threads 1 --graph-optimization basic"


@pytest.fixture
def make(tmp_path):
    """(run, command): the make command line on the tiny fixture in tmp_path with small settings,
    and an extra makefile (tmp_path/extra.mk) of goals that hold the run folder for a while."""
    run = tmp_path / "run"
    (tmp_path / "extra.mk").write_text(
        "hold: $(RUN)/.settings/device\n\tsleep 60\n"
        "slow-first:\n\tsleep 4\n"
        "late: slow-first $(RUN)/full-eval.parquet\n"
        # A make that a make runs, wanting other settings of a stamp its caller reached (as
        # `make frontier-windows` runs `make frontier CALIB_WINDOWS=20`): the caller waits for it.
        "outer: $(RUN)/.settings/device\n\t$(MAKE) --no-print-directory -f Makefile $(RUN)/full-eval.parquet "
        "'EVALUATE_FLAGS=--device cpu --threads 1 --graph-optimization basic'\n"
        ".PHONY: hold slow-first late outer\n")
    command = ["make", "--no-print-directory", "-f", "Makefile", "-f", str(tmp_path / "extra.mk"),
               f"BIN={BIN}", "CARGO=true", f"MODEL_DIR={TINY}", f"RUN={run}",
               f"CALIB_TEXT={text(tmp_path / 'calib.txt', 1)}", f"EVAL_TEXT={text(tmp_path / 'eval.txt', 2)}",
               "MASKS=20", "KS=2,3", "SEQ_LEN=32", "CALIB_WINDOWS=4", "EVAL_WINDOWS=4", "THREADS=1"]
    return run, command


def run_make(command, *args):
    result = subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True, env=make_env())
    return result.returncode, result.stdout + result.stderr


def start_make(command, *args):
    """A make started in a session of its own (so that its processes can be killed together)."""
    return subprocess.Popen([*command, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=make_env(), start_new_session=True)


def wait_for_lock(run, make, seconds=60):
    """Waits until MAKE has its record in RUN (.lock/make.WHERE.PID.START)."""
    lock = run / ".lock" / f"make.*.{make.pid}.*"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if records_of(run, make.pid):
            return
        assert make.poll() is None, make.stdout.read()
        time.sleep(0.1)
    raise AssertionError(f"{lock} was not taken by make {make.pid}")


def records_of(run, pid):
    """The records of make PID in RUN's lock folder."""
    return list((run / ".lock").glob(f"make.*.{pid}.*"))


def slow_bin(directory):
    """The stages, with an evaluate that writes directory/started and waits 4 s before it runs (a
    long measurement)."""
    directory.mkdir()
    for stage in BIN.iterdir():
        if stage.is_file() and os.access(stage, os.X_OK):
            (directory / stage.name).symlink_to(stage)
    (directory / "evaluate").unlink()
    (directory / "evaluate").write_text(
        f"#!/bin/sh\ntouch {directory}/started\nsleep 4\nexec {BIN}/evaluate \"$@\"\n")
    (directory / "evaluate").chmod(0o755)
    return directory


def evaluated_on(table):
    result = subprocess.run([str(BIN / "inspect"), "--json", "--rows", "0", str(table)], capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout)["metadata"]["evaluated_on"]


def test_a_second_make_on_a_folder_in_use_is_refused_and_no_table_is_left_under_other_settings(make, tmp_path):
    run, command = make
    table = str(run / "full-eval.parquet")
    status, output = run_make(command, table)
    assert status == 0, output
    # The first make measures the table again with other runtime flags, slowly; a second make with
    # the defaults meanwhile took the `cpu` stamp back before the lock, and the first's table,
    # measured with --graph-optimization basic, was then up to date for the CPU's defaults.
    slow = slow_bin(tmp_path / "slow")
    first = start_make(command, table, SLOW_FLAGS, f"BIN={slow}")
    try:
        deadline = time.monotonic() + 60
        while not (slow / "started").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()
            time.sleep(0.1)
        status, output = run_make(command, table)
        assert status != 0, output
        assert f"make: {run} is in use by another make (pid {first.pid}: make " in output, output
        assert first.wait(timeout=120) == 0, first.stdout.read()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert "graph optimization basic" in evaluated_on(table)
    # The stamp is the table's settings: up to date with them, not with the defaults.
    assert run_make(command, "-q", table, SLOW_FLAGS)[0] == 0
    assert run_make(command, "-q", table)[0] == 1
    # The refused make run again once the first has ended: measured with its own settings.
    status, output = run_make(command, table)
    assert status == 0, output
    assert "graph optimization" not in evaluated_on(table)
    assert run_make(command, "-q", table)[0] == 0


def test_makes_that_agree_share_a_folder_and_a_make_killed_with_sigkill_leaves_no_record(make):
    run, command = make
    table = str(run / "full-eval.parquet")
    status, output = run_make(command, table)
    assert status == 0, output
    holder = start_make(command, "hold")
    try:
        wait_for_lock(run, holder)
        # A make of the same settings works beside it (it changes no stamp the other reads) ...
        os.unlink(table)
        status, output = run_make(command, table)
        assert status == 0, output
        # ... one that would change the device stamp, which `hold` reads, is refused.
        status, output = run_make(command, table, SLOW_FLAGS)
        assert status != 0, output
        assert f"make: {run} is in use by another make (pid {holder.pid}: make " in output, output
        assert f"with other settings of {run}/.settings/device than this one's" in output, output
        # The make alone killed (its `sleep 60` goes on): its record's lock is the kernel's, let go
        # by the process that held it for that make within half a second.
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        time.sleep(1)
        status, output = run_make(command, table, SLOW_FLAGS)
        assert status == 0, output
        assert "in use by another make" not in output
        assert not records_of(run, holder.pid)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)


def test_a_make_whose_folder_was_restamped_after_it_read_the_stamps_is_refused(make):
    run, command = make
    table = run / "full-eval.parquet"
    status, output = run_make(command, str(table))
    assert status == 0, output
    # `late` reaches the run folder after 4 s; a make with other runtime flags that ran meanwhile
    # rewrote the device stamp, which `late` had read as its own: what it decided from it is void.
    late = start_make(command, "late")
    try:
        time.sleep(2)
        assert late.poll() is None
        stamp = run / ".settings" / "device"
        lines = stamp.read_text().splitlines()
        assert lines[0] == "cpu", lines
        replacement = stamp.with_name("device.rewritten")
        replacement.write_text("\n".join(["cpu --graph-optimization basic", *lines[1:]]) + "\n")
        os.replace(replacement, stamp)
        output = late.communicate(timeout=120)[0]
    finally:
        if late.poll() is None:
            os.killpg(late.pid, signal.SIGKILL)
    assert late.returncode != 0, output
    assert f"make: the settings of {run} changed after this make read them ({stamp})" in output, output
    # Run again, it finds the stamp of other settings and measures the table with its own.
    status, output = run_make(command, str(table))
    assert status == 0, output
    assert "graph optimization" not in evaluated_on(table)
    assert run_make(command, "-q", str(table))[0] == 0


def test_the_jobs_of_one_make_and_a_make_it_runs_share_its_lock(make):
    run, command = make
    goals = [str(run / "plans" / f"{m}.parquet") for m in ("sleb", "leave-one-out", "angular")]
    status, output = run_make(command, "-j3", *goals, str(run / "full-eval.parquet"))
    assert status == 0, output
    assert "in use by another make" not in output
    # `outer` holds the run folder and runs make on it.
    (run / "full-eval.parquet").unlink()
    status, output = run_make(command, "outer")
    assert status == 0, output
    assert "in use by another make" not in output
    assert (run / "full-eval.parquet").is_file()
    assert (run / ".settings" / "device").read_text().startswith("cpu --graph-optimization basic")


def test_a_record_of_a_make_that_ended_is_not_taken_for_the_process_given_its_pid(make, tmp_path):
    """A make's record names it by PID and start time: a record whose PID now belongs to another
    process (a PID reused; a make of PID 1 in each of two containers) is of a make that has ended,
    even while a lock on it is held, and refuses nobody."""
    run, command = make
    table = run / "full-eval.parquet"
    status, output = run_make(command, str(table))
    assert status == 0, output
    where = subprocess.run(["sh", "-c", "{ cat /proc/sys/kernel/random/boot_id; readlink /proc/self/ns/pid; }"
                            " | cksum | cut -d ' ' -f 1"], capture_output=True, text=True, check=True).stdout.strip()
    other = subprocess.Popen(["sleep", "60"])
    try:
        start = int(Path(f"/proc/{other.pid}/stat").read_text().rsplit(") ", 1)[1].split()[19])
        record = run / ".lock" / f"make.{where}.{other.pid}.{start - 1}"
        record.write_text("make demo EVALUATE_FLAGS=--graph-optimization basic\ndevice 12345\n")
        holder = subprocess.Popen(["flock", str(record), "sleep", "60"])
        try:
            time.sleep(0.5)
            status, output = run_make(command, str(table))
            assert status == 0, output
            assert "in use by another make" not in output
            assert not record.exists()
        finally:
            holder.kill()
    finally:
        other.kill()
