"""Make's pipelines (pipelines/*.mk) after a run: nothing to redo, and `make -n` / `make -q` say
so (the settings and pin stamps are judged when Make reads its files, not by rules that always
ran); an input made again in the run itself is still seen; a new evaluation text does not write
the pruned model again (nor what is exported from it); settings a goal would ignore are refused,
naming what it reads. On the tiny fixture with the real stage binaries (LAYERPRUNE_BIN, default
target/debug): seconds a run.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_make_settings import BIN, ROOT, TINY, make_bare, swapped_model, text
from test_prune import cpu_library, make_env


def stage_lines(output):
    """The stage binaries a make ran, or a dry run would run: (name, command line)."""
    return [(Path(line.split()[0]).name, line) for line in output.splitlines()
            if line.startswith(str(BIN) + "/")]


@pytest.fixture
def run_make(tmp_path):
    """`make [FLAGS] SETTINGS... ARGS...` on the tiny fixture in tmp_path; returns (exit status,
    output, the stage binaries it ran or listed)."""
    settings = [f"BIN={BIN}", "CARGO=true", f"MODEL_DIR={TINY}", f"RUN={tmp_path / 'run'}",
                f"CALIB_TEXT={text(tmp_path / 'calib.txt', 1)}", f"EVAL_TEXT={text(tmp_path / 'eval.txt', 2)}",
                "MASKS=20", "KS=2,3", "K_PRUNED=2", "SEQ_LEN=32", "CALIB_WINDOWS=4", "EVAL_WINDOWS=4",
                "THREADS=1"]

    def run(*args, flags=()):
        result = subprocess.run(["make", "--no-print-directory", *flags, *settings, *args], cwd=ROOT,
                                capture_output=True, text=True, env=make_env())
        output = result.stdout + result.stderr
        return result.returncode, output, stage_lines(output)

    return run


def test_after_a_run_a_dry_run_lists_nothing_and_make_q_says_up_to_date(run_make, tmp_path):
    """Every settings stamp depended on FORCE: after a run, `make -n` listed every stage again
    and `make -q` never answered 0, so neither could tell what a setting would redo."""
    run = tmp_path / "run"
    targets = [str(run / "plans" / "sleb.parquet"), str(run / "plans" / "surrogate-shapley.parquet"),
               str(run / "full-eval.parquet")]
    status, output, ran = run_make(*targets)
    assert status == 0 and ran, output
    status, output, listed = run_make(*targets, flags=["-n"])
    assert (status, listed) == (0, []), output
    status, output, _ = run_make(*targets, flags=["-q"])
    assert status == 0, output
    # A setting changed is previewed: what it remakes, and nothing is written.
    stamps = {p: p.read_bytes() for p in (run / ".settings").iterdir()}
    status, output, listed = run_make(*targets, "SURROGATE_RIDGE=0.5", flags=["-n"])
    assert status == 0, output
    assert [name for name, _ in listed] == ["fit-surrogate", "shapley", "apply-prune", "apply-prune"], listed
    assert {p: p.read_bytes() for p in (run / ".settings").iterdir()} == stamps
    status, output, _ = run_make(*targets, "SURROGATE_RIDGE=0.5", flags=["-q"])
    assert status == 1, output
    # A text touched (the same words) remakes nothing; after one make, a dry run lists nothing.
    os.utime(tmp_path / "calib.txt")
    status, output, listed = run_make(*targets, flags=["-n"])
    assert (status, listed) == (0, []), output
    status, output, ran = run_make(*targets)
    assert (status, ran) == (0, []), output
    status, output, listed = run_make(*targets, flags=["-n"])
    assert (status, listed) == (0, []), output
    status, output, _ = run_make(*targets, flags=["-q"])
    assert status == 0, output
    # A text replaced by an older copy of other words is seen by the dry run too.
    other = text(tmp_path / "other.txt", 9)
    os.utime(other, (1577836800, 1577836800))
    subprocess.run(["cp", "-p", str(other), str(tmp_path / "calib.txt")], check=True)
    status, output, listed = run_make(*targets, flags=["-n"])
    assert status == 0 and "prepare-tokens" in [name for name, _ in listed], output


def test_a_model_made_again_in_the_run_is_identified_once_made(tmp_path):
    """The stamps are judged when Make reads its files, but a model folder exported again in the
    same run (here by a rule of an extra makefile, copying SOURCE's folder) must still remake what
    it feeds, in that run; exported again unchanged, it remakes nothing."""
    source, model, run = tmp_path / "source", tmp_path / "model", tmp_path / "run"
    swapped = swapped_model(tmp_path / "swapped")
    source.write_text(f"{TINY}\n")
    extra = tmp_path / "export.mk"
    extra.write_text(f"{model}/manifest.json: {source}\n\trm -rf {model}; cp -r $$(cat {source}) {model}\n")
    masks = run / "masks.parquet"

    def make(*flags):
        result = subprocess.run(["make", "--no-print-directory", *flags, "-f", "Makefile", "-f", str(extra),
                                 f"BIN={BIN}", "CARGO=true", f"MODEL_DIR={model}", "MODEL_NAME=model", f"RUN={run}",
                                 "MASKS=20", str(masks)], cwd=ROOT, capture_output=True, text=True, env=make_env())
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        return [name for name, _ in stage_lines(output)]

    assert make() == ["sample-masks"]
    assert make() == []
    # Another model exported: its masks are drawn again in the same run.
    source.write_text(f"{swapped}\n")
    assert make() == ["sample-masks"]
    assert make() == [] and make("-n") == []
    # Exported again unchanged (a newer copy of the same folder): nothing; a dry run lists nothing.
    os.utime(source)
    assert make() == []
    assert make("-n") == []
    # Then another export while the folder is newer than the stamp: still seen in that run.
    source.write_text(f"{TINY}\n")
    assert make() == ["sample-masks"]
    assert make("-n") == []


def test_a_fetched_pin_is_up_to_date_for_make_q(tmp_path):
    """The pins' stamps depended on FORCE too: `make -q` on a fetched library said not up to date."""
    build = tmp_path / "build"
    build.mkdir()
    (build / "ort-cpu").symlink_to(ROOT / "build" / "ort-cpu")
    library = cpu_library().relative_to(ROOT / "build")
    settings = [f"BUILD={build}", f"BIN={BIN}", "CARGO=true"]
    result = subprocess.run(["make", "--no-print-directory", *settings, str(build / library)],
                            cwd=ROOT, capture_output=True, text=True, env=make_env())
    assert result.returncode == 0 and "fetch_wheel" not in result.stdout, result.stdout + result.stderr
    assert (build / ".pins" / "ort-cpu").exists()
    result = subprocess.run(["make", "-q", *settings, str(build / library)], cwd=ROOT, capture_output=True,
                            text=True, env=make_env())
    assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run(["make", "-n", *settings, "ort", "ORT_VERSION=1.0.0"], cwd=ROOT,
                            capture_output=True, text=True, env=make_env())
    assert "fetch_wheel.py onnxruntime==1.0.0" in result.stdout, result.stdout + result.stderr


def test_a_new_evaluation_text_measures_the_pruned_model_again_but_writes_it_once(run_make, tmp_path):
    """The pruned folder was written again with the plan's measurement on the evaluation text: a
    new EVAL_TEXT made the ONNX file, the Hugging Face checkpoint, its generator and the quantized
    pruned models again from an identical folder. The folder is written from the plan as chosen,
    by an apply-prune that runs no model; the plan's measurement is a step of its own. A stand-in
    for the exporter's Python logs what it is asked to make."""
    venv, log = tmp_path / "venv", tmp_path / "export.log"
    (venv / "bin").mkdir(parents=True)
    (venv / ".complete").write_text("")
    python = venv / "bin" / "python"
    python.write_text(f"#!/bin/sh\necho \"$1\" >> {log}\nfor last; do :; done\ntouch \"$last\"\n")
    python.chmod(0o755)
    run = tmp_path / "run"
    pruned = run / "pruned-k2"
    targets = [str(run / "pruned-k2-plan.parquet"), str(run / "pruned-k2-eval.parquet"), str(run / "pruned-k2.onnx"),
               f"VENV_EXPORT={venv}"]
    status, output, ran = run_make(*targets)
    assert status == 0 and log.read_text() == "tools/export/merge_layered.py\n", output
    (write,) = [line for name, line in ran if name == "apply-prune" and "--pruned-out" in line]
    assert "--tokens" not in write and "--out" not in write.split() and "--device" not in write, write
    written = (pruned / "manifest.json").stat().st_mtime_ns
    status, output, ran = run_make(*targets, f"EVAL_TEXT={text(tmp_path / 'other.txt', 5)}")
    assert status == 0, output
    assert sorted(name for name, _ in ran) == ["apply-prune", "evaluate", "prepare-tokens"], ran
    (measure,) = [line for name, line in ran if name == "apply-prune"]
    assert "--pruned-out" not in measure and f"--out {run}/pruned-k2-plan.parquet" in measure, measure
    assert log.read_text() == "tools/export/merge_layered.py\n", "the pruned model was exported again"
    assert (pruned / "manifest.json").stat().st_mtime_ns == written
    status, output, listed = run_make(*targets, f"EVAL_TEXT={tmp_path / 'other.txt'}", flags=["-n"])
    assert (status, listed) == (0, []), output
    # A pruned folder gone is written again, and what is made from it made again; the plan's
    # measurement is not redone.
    shutil.rmtree(pruned)
    status, output, ran = run_make(*targets, f"EVAL_TEXT={tmp_path / 'other.txt'}")
    assert status == 0 and [name for name, _ in ran] == ["apply-prune", "evaluate"], ran
    assert "--pruned-out" in ran[0][1]
    assert log.read_text().count("merge_layered") == 2 and (pruned / "manifest.json").exists()


@pytest.mark.parametrize("args, expected", [
    # make exact-frontier plays every method on one set at its own k: the frontier's settings of
    # these were ignored, and METHODS was answered with FRONTIER_METHODS, which it ignores too.
    (["exact-frontier", "FRONTIER_KS=1,2"], "make exact-frontier: FRONTIER_KS=1,2 is not read here; this goal "
                                            "takes EXACT_FRONTIER_KS="),
    (["exact-frontier", "KS=1,2"], "make exact-frontier: KS=1,2 is not read here; this goal takes EXACT_FRONTIER_KS="),
    (["exact-frontier", "FRONTIER_SEEDS=1"], "this goal takes EXACT_FRONTIER_SET=0"),
    (["exact-frontier", "METHODS=sleb"], "make exact-frontier: METHODS=sleb is not read here; make exact-frontier "
                                         "plays every method"),
    (["exact-frontier-pairs", "FRONTIER_METHODS=sleb"], "make exact-frontier plays every method"),
    (["exact-frontier", "FRONTIER_HELDOUT_WINDOWS=4"], "make exact-frontier measures no held-out text"),
    (["frontier-windows", "FRONTIER_BUDGETS=least"], "make frontier-windows plays the methods and budgets of its two runs"),
    # Run folders of their own.
    (["frontier", "RUN=/tmp/r"], "make frontier: RUN=/tmp/r is not read here; this goal writes FRONTIER_RUN="),
    (["exact-frontier", "RUN=/tmp/r"], "this goal writes EXACT_FRONTIER_RUN="),
    (["exact-game", "RUN=/tmp/r"], "this goal writes EXACT="),
    (["bench-model", "RUN=/tmp/r", "MODEL_NAME=smollm2-135m"], "this goal writes MODEL_BENCH="),
    # No pruned model, or another method's.
    (["results", "K_PRUNED=3"], "make results: K_PRUNED=3 is not read here; this goal writes no pruned model"),
    (["tasks", "K_PRUNED=3"], "make tasks: K_PRUNED=3 is not read here"),
    (["quantize", "METHODS=sleb", "KS=2,3", "K_PRUNED=2"], "make quantize: METHODS=sleb is not read here; this goal "
                                                           "prunes with adaptive-raced"),
    (["quantize-then-prune", "KS=2,3"], "make quantize-then-prune: KS=2,3 is not read here"),
    (["quantize-then-prune", "ADAPTIVE_BUDGET=least"], "make quantize-then-prune: ADAPTIVE_BUDGET=least is not read"),
])
def test_a_setting_the_goal_ignores_is_refused_naming_what_it_reads(tmp_path, args, expected):
    status, output = make_bare(tmp_path, f"MODEL_DIR={TINY}", "MODEL_NAME=tiny", *args)
    assert status != 0 and expected in output, output


def test_what_these_goals_read_is_not_refused(tmp_path):
    for args in (["exact-frontier", "EXACT_FRONTIER_KS=1,2", "FRONTIER_BUDGETS=least", "FRONTIER_SHAPLEY_MASKS=3"],
                 ["exact-frontier-pairs", "FRONTIER_HELDOUT_WINDOWS=4", "EVAL_DOCUMENTS=3000:"],
                 ["frontier", "FRONTIER_KS=1,2", "FRONTIER_SEEDS=1", "FRONTIER_BUDGETS=least"],
                 ["quantize-then-prune", "K_PRUNED=2", "SEED=1", "MASKS=30"],
                 ["quantize", "KS=2,3", "K_PRUNED=2", "ADAPTIVE_BUDGET=least"],
                 ["results", "RUN=/tmp/r", "KS=2,3"],
                 # A goal that reads the setting beside one that does not.
                 ["demo", "exact-frontier", "KS=2,3", "K_PRUNED=2"]):
        status, output = make_bare(tmp_path, f"MODEL_DIR={TINY}", "MODEL_NAME=tiny", *args)
        # The dry run goes through: a refusal of another kind would hide one of these.
        assert status == 0 and "is not read" not in output, (args, output)


def test_a_report_script_is_a_prerequisite_of_what_it_writes(tmp_path):
    """The exact frontier's table and the exact game's RMSE plot were not remade by a changed
    script (tools/report/exact_frontier.py, plots.py); the pruned model's exports already were."""
    env = make_env()
    for name in ("MODEL_NAME", "RUN", "MODEL_DIR"):
        env.pop(name, None)
    exact, frontier = tmp_path / "exact", tmp_path / "exact-frontier"
    wanted = {f"{frontier}/exact-frontier.md": "tools/report/exact_frontier.py",
              f"{exact}/accuracy/rmse.svg": "tools/report/plots.py"}
    result = subprocess.run(["make", "-pnq", "--no-print-directory", f"BIN={BIN}", "CARGO=true",
                             f"BUILD={tmp_path / 'build'}", f"MODEL_DIR={TINY}", "MODEL_NAME=tiny", f"EXACT={exact}",
                             f"EXACT_FRONTIER_RUN={frontier}", *wanted], cwd=ROOT, capture_output=True, text=True, env=env)
    rules = {line.split(":", 1)[0]: line.split(":", 1)[1].split("|")[0].split()
             for line in result.stdout.splitlines() if re.match(r"^/\S+:", line)}
    for target, script in wanted.items():
        assert script in rules[target], (target, rules.get(target))


def test_the_pruned_model_is_written_when_too_few_windows_leave_nothing_to_race(run_make, tmp_path):
    """With no more calibration windows than a race's first (3), apply-prune races nothing and
    records the recommended method's plans as the unraced method's (adaptive): the pruned folder
    asked for adaptive-raced by name and failed after the choice ("no plan removes 2 blocks with
    method adaptive-raced"). The calibration table holds that method's plans alone: taken as such."""
    run = tmp_path / "run"
    targets = [str(run / "pruned-k2" / "manifest.json"), str(run / "pruned-k2-plan.parquet")]
    status, output, ran = run_make(*targets, "CALIB_WINDOWS=3")
    assert status == 0, output
    assert [name for name, _ in ran].count("apply-prune") == 3, ran
    manifest = json.loads((run / "pruned-k2" / "manifest.json").read_text())
    assert manifest["pruned_from"]["method"] == "adaptive", manifest["pruned_from"]


def test_after_a_finished_demo_make_q_demo_says_up_to_date(run_make, tmp_path):
    """`make demo` ends in its summary, a recipe of the phony goal itself, which to -q is always
    something to do: `make -q demo` answered 1 on a finished run. Under -q the recipe is empty
    (QUESTION_ONLY), so it answers whether any step is to be made. A stand-in for the exporter's
    Python (the summary, the merged ONNX file) logs what it is asked to run."""
    venv, log = tmp_path / "venv", tmp_path / "export.log"
    (venv / "bin").mkdir(parents=True)
    (venv / ".complete").write_text("")
    python = venv / "bin" / "python"
    python.write_text(f"#!/bin/sh\necho \"$1\" >> {log}\n"
                      "case \"$1\" in *merge_layered.py) for last; do :; done; touch \"$last\";; esac\n")
    python.chmod(0o755)
    demo = ["demo", f"VENV_EXPORT={venv}", "DEMO_METHODS=adaptive-raced"]
    status, output, ran = run_make(*demo)
    assert status == 0 and ran, output
    assert log.read_text().splitlines() == ["tools/export/merge_layered.py", "tools/report/summarize.py"], output
    status, output, listed = run_make(*demo, flags=["-n"])
    assert (status, listed) == (0, []), output
    status, output, _ = run_make(*demo, flags=["-q"])
    assert status == 0, output
    assert len(log.read_text().splitlines()) == 2, "-q ran something"
    # Something to redo is still answered 1.
    status, output, _ = run_make(*demo, "EVAL_WINDOWS=3", flags=["-q"])
    assert status == 1, output
