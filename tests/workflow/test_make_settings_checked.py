"""Settings of the Make layer checked before anything runs (the top-level Makefile,
pipelines/tasks.mk, pipelines/quantize.mk), and `make help` naming them. Needs make."""

import os
from pathlib import Path

import pytest

from test_make_tasks import make_tasks

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("LAYERPRUNE_BIN", ROOT / "target" / "debug"))


@pytest.mark.parametrize("args, expected", [
    # The stamps record the seed as given: SEED=07 remade everything SEED=7 had made, the stages
    # reading both as 7.
    (["demo", "SEED=07"], "SEED='07' must be a seed (a whole number: 0 or more, without leading zeros)"),
    (["tasks", "SEED=00"], "SEED='00' must be a seed"),
    # evaluate refused a bad one only after the stamp of the task run's tables had moved them aside.
    (["tasks", "TASK_SUBSAMPLE=all"], "TASK_SUBSAMPLE='all' must be a number of questions per task"),
    (["tasks", "TASK_SUBSAMPLE=-1"], "TASK_SUBSAMPLE='-1' must be a number of questions per task"),
    (["tasks", "TASK_SUBSAMPLE=0100"], "TASK_SUBSAMPLE='0100' must be a number of questions per task (0: the whole "
                                       "validation splits; without leading zeros)"),
    # A scheme without its row reached quantize without --scheme (clap's refusal) after the models
    # before it were made.
    (["quantize", "KS=2,3", "K_PRUNED=2", "QUANT_SCHEMES=int8 int3"],
     'QUANT_SCHEMES=int8 int3: no scheme "int3" (QUANT_ARGS_<scheme> in pipelines/quantize.mk): '),
    (["quantize-bench", "KS=2,3", "K_PRUNED=2", "QUANT_SCHEMES=int4"], 'QUANT_SCHEMES=int4: no scheme "int4"'),
    (["quantize-then-prune", "K_PRUNED=2", "QUANT_FIRST=int2"], 'QUANT_FIRST=int2: no scheme "int2"'),
])
def test_a_bad_setting_is_refused_before_anything_runs(tmp_path, args, expected):
    status, output = make_tasks(tmp_path, "-n", *args)
    assert status != 0 and expected in output, output
    assert f"{BIN}/" not in output and not (tmp_path / "build" / "runs").exists(), output


@pytest.mark.parametrize("args", [
    ["tasks", "KS=2,3", "SEED=0", "TASK_SUBSAMPLE=0"],
    ["tasks", "KS=2,3", "SEED=10", "TASK_SUBSAMPLE=250"],
    ["quantize", "KS=2,3", "K_PRUNED=2", "QUANT_SCHEMES=int4-128 int8", "QUANT_FIRST=unread"],
    ["quantize-then-prune", "K_PRUNED=2", "QUANT_FIRST=int4-128"],
])
def test_good_settings_pass(tmp_path, args):
    status, output = make_tasks(tmp_path, "-n", *args)
    assert status == 0, output


def test_make_help_names_the_settings_of_tasks_quantize_and_workflow(tmp_path):
    status, output = make_tasks(tmp_path, "help", "TASK_SUBSAMPLE=7", "QUANT_FIRST=int8")
    assert status == 0, output
    for words in ("make tasks: TASKS=all TASK_SUBSAMPLE=7 ", "TASK_BATCH_TOKENS=", "TASK_METHODS=",
                  "make quantize: QUANT_SCHEMES=int8 int4-32 int4-128 QUANT_FIRST=int8 ",
                  "BUILD, BIN\n                        and ORT_DYLIB_PATH reach it as its config's build, bin and ort_dylib"):
        assert words in output, (words, output)
