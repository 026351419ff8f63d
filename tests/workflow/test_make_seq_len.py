"""SEQ_LEN is checked before anything runs (the top-level Makefile's setting checks): a window
must hold 2 tokens or more (each token is scored on the ones before it, so a window's first is
context only), as `prepare-tokens --seq-len` requires. SEQ_LEN=1 passed the check ("1 or more"),
the settings stamps took it in, and prepare-tokens refused it only then."""

import subprocess

import pytest

from test_prune import ROOT, make_env


def dry_run(*args):
    return subprocess.run(["make", "--no-print-directory", "-n", *args], cwd=ROOT, capture_output=True, text=True,
                          env=make_env())


@pytest.mark.parametrize("value", ["1", "0", "01", "1.5"])
def test_a_window_of_fewer_than_two_tokens_is_refused_before_anything_runs(value):
    result = dry_run("demo", f"SEQ_LEN={value}")
    assert result.returncode != 0, result.stdout
    assert f"SEQ_LEN='{value}' must be a number of tokens per window: 2 or more" in result.stderr, result.stderr
    assert "prepare-tokens" not in result.stdout


@pytest.mark.parametrize("value", ["2", "9", "10", "128"])
def test_two_tokens_or_more_pass(value):
    result = dry_run("demo", f"SEQ_LEN={value}")
    assert "must be a number of tokens per window" not in result.stderr, result.stderr
