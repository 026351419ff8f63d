"""`make workflow` (the top-level Makefile, pipelines/ignored.mk): Make's settings of where things
are (BUILD, BIN, ORT_DYLIB_PATH) reach Snakemake as its config keys (build, bin, ort_dylib), and
the settings it would still ignore are refused. Needs make and Snakemake (build/venv-workflow)."""

import os
import subprocess
from pathlib import Path

import pytest

from test_prune import make_env

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = ROOT / "build" / "venv-workflow" / "bin" / "snakemake"


def make(*args):
    """`make --no-print-directory ARGS` in the checkout: (exit status, stdout + stderr)."""
    result = subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                            env=make_env())
    return result.returncode, result.stdout + result.stderr


def snakemake_call(output):
    """The snakemake command line `make -n workflow` lists."""
    return next(line for line in output.splitlines() if "/bin/snakemake -s pipelines/Snakefile" in line)


def fake_build(tmp_path):
    """A BUILD folder whose venv-workflow is this checkout's Snakemake (linked: nothing installed)."""
    build = tmp_path / "b"
    (build / "venv-workflow" / "bin").mkdir(parents=True)
    (build / "venv-workflow" / "bin" / "snakemake").symlink_to(SNAKEMAKE)
    (build / "venv-workflow" / ".complete").touch()
    return build


@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="needs build/venv-workflow (make venv-workflow)")
def test_build_and_bin_reach_snakemake(tmp_path):
    """`make workflow BUILD=... BIN=...` ran Snakemake on build/ and cargo's folder without a word
    (only Make's own venv-workflow was BUILD's): a real dry run now plans its run folder, model and
    data under BUILD, and refuses a BIN without the stages as `--config bin=` does."""
    build = fake_build(tmp_path)
    status, output = make("workflow", f"BUILD={build}", f"SNAKEMAKE_ARGS=-n --directory {tmp_path / 'wd'} --config shards=2")
    assert status == 0, output[-3000:]
    assert f"--config build={build} shards=2" in output, output[:2000]
    assert f"{build}/runs/smollm2-135m-workflow/evaluations.parquet" in output, output[-3000:]
    assert f"{build}/models/smollm2-135m/manifest.json" in output, output[-3000:]
    assert f"{ROOT}/build/runs/" not in output, output[-3000:]
    empty = tmp_path / "bin"
    empty.mkdir()
    status, output = make("workflow", f"BUILD={build}", f"BIN={empty}", f"SNAKEMAKE_ARGS=-n --directory {tmp_path / 'wd'}")
    assert status != 0 and f"bin='{empty}': {empty}/prepare-tokens is missing" in output, output[-3000:]


@pytest.mark.parametrize("args, expected", [
    # Without a --config of SNAKEMAKE_ARGS: one of their own, last (a target named before stays one).
    (["BIN=target/debug", "SNAKEMAKE_ARGS=-n all"], f" -n all --config bin={ROOT}/target/debug"),
    (["ORT_DYLIB_PATH=build/x.so"], f"--profile pipelines/profiles/local --config ort_dylib={ROOT}/build/x.so"),
    # Joined to SNAKEMAKE_ARGS' --config (or -C), whose text is kept as given (quoted spaces too):
    # Snakemake reads the last --config alone.
    (["BIN=/b", "SNAKEMAKE_ARGS=-n --config shards=4 all"], " -n --config bin=/b shards=4 all"),
    (["BIN=/b", "SNAKEMAKE_ARGS=-C shards=4 runtime_flags='--mask-batch  4'"],
     " -C bin=/b shards=4 runtime_flags='--mask-batch  4'"),
    # None given: SNAKEMAKE_ARGS as it was.
    (["SNAKEMAKE_ARGS=--config runtime_flags='--mask-batch  4'"], "local --config runtime_flags='--mask-batch  4'"),
])
def test_the_config_keys_join_snakemake_args(args, expected):
    status, output = make("-n", "workflow", *args)
    assert status == 0, output
    assert snakemake_call(output).rstrip().endswith(expected), output


def test_the_default_passes_nothing():
    status, output = make("-n", "workflow")
    assert status == 0, output
    assert snakemake_call(output).rstrip().endswith("--profile pipelines/profiles/local"), output


@pytest.mark.parametrize("args, expected", [
    # Given both ways: SNAKEMAKE_ARGS' (the later key of one --config) would win without a word.
    (["BUILD=/tmp/b1", "SNAKEMAKE_ARGS=--config build=/tmp/b2"],
     "make workflow: BUILD=/tmp/b1 and SNAKEMAKE_ARGS' build=/tmp/b2 are one setting (the config key build): give one"),
    # A --config of one value, which the keys cannot join.
    (["BIN=/b", "SNAKEMAKE_ARGS=--config=shards=2"], "SNAKEMAKE_ARGS' --config=shards=2 holds one value alone"),
    (["BIN=/b", "SNAKEMAKE_ARGS=-Cshards=2"], "SNAKEMAKE_ARGS' -Cshards=2 holds one value alone"),
    # The workflow builds the stages with a cargo build of its own, only when missing.
    (["CARGO_FLAGS=--offline -j1"], "make workflow: CARGO_FLAGS=--offline -j1 is not read here; the workflow builds "
                                    "only missing stages, with cargo build of its own: build them first "
                                    "(make build CARGO_FLAGS=--offline -j1)"),
    (["CARGO=/opt/cargo"], "make workflow: CARGO=/opt/cargo is not read here"),
])
def test_what_cannot_reach_snakemake_is_refused(args, expected):
    status, output = make("-n", "workflow", *args)
    assert status != 0 and expected in output, output
    assert "bin/snakemake" not in output, output


def test_a_cargo_setting_beside_a_goal_that_reads_it_is_left_alone():
    status, output = make("-n", "build", "workflow", "CARGO_FLAGS=--offline")
    assert status == 0 and "cargo build --offline --workspace --bins" in output, output


def test_the_stages_are_built_first_unless_bin_is_given():
    """The Snakefile builds only stages that are missing: after a `git pull`, `make workflow` ran
    the old binaries. Now cargo is asked first (a no-op when they are current), as for make demo;
    a BIN given, or a `bin=` of SNAKEMAKE_ARGS' --config, is the user's binaries, taken as they are."""
    status, output = make("-n", "workflow")
    assert status == 0, output[-3000:]
    lines = output.splitlines()
    build = next(i for i, line in enumerate(lines) if line.startswith("cargo build") and "--bins" in line)
    assert build < lines.index(snakemake_call(output)), output[-3000:]
    for given in ([f"BIN={ROOT}/target/debug"], [f"SNAKEMAKE_ARGS=--config shards=2 bin={ROOT}/target/debug"]):
        status, output = make("-n", "workflow", *given)
        assert status == 0, output[-3000:]
        assert not any(line.startswith("cargo build") for line in output.splitlines()), (given, output[-3000:])
