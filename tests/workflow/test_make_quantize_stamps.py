"""make quantize and make quantize-then-prune (pipelines/quantize.mk) read the demo's run folder,
RUN: its pruned model, its masks and its tokens. What they write is named after the model alone
(build/quant/<model>), and was compared with RUN's files by time alone: a RUN whose files were
older (another run, or a file of another plan put in place with its time kept) left the previous
run's quantized pruned model and measurements in place, and `make quantize-bench` measured them
under the new run's name. Settings stamps now record those files by path and identity: another
run or another file remakes what is made from it, and a file touched or made again unchanged does
not. make quantize-bench's summaries are stamped the same way by the bench tables they read
(build/bench: tokens.parquet, masks.parquet). On the tiny fixture with the real stage binaries
(LAYERPRUNE_BIN, default target/debug) and ONNX Runtime's CPU build: seconds a run.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from test_make_settings import BIN, ROOT, TINY, text
from test_prune import make_env


@pytest.fixture
def quant_make(tmp_path):
    """`make [FLAGS] SETTINGS... RUN=run ARGS...` on the tiny fixture with small settings, its
    build folder in tmp_path; returns (exit status, output, the stage binaries it ran or a dry run
    lists, as (name, command line) pairs)."""
    build = tmp_path / "build"
    build.mkdir()
    # The ONNX Runtime of this checkout (the `ort` target), not a fetch into the temporary build.
    (build / "ort-cpu").symlink_to(ROOT / "build" / "ort-cpu")
    settings = [f"BIN={BIN}", "CARGO=true", f"MODEL_DIR={TINY}", f"BUILD={build}",
                f"CALIB_TEXT={text(tmp_path / 'calib.txt', 1)}", f"EVAL_TEXT={text(tmp_path / 'eval.txt', 2)}",
                "MASKS=20", "K_PRUNED=2", "SEQ_LEN=32", "CALIB_WINDOWS=4", "EVAL_WINDOWS=4", "THREADS=1",
                "QUANT_SCHEMES=int8"]

    def run(run_folder, *args, flags=(), env=None):
        # The demo's plans (KS) are read by every goal but quantize-then-prune, which refuses them.
        ks = [] if "quantize-then-prune" in args else ["KS=2,3"]
        result = subprocess.run(["make", "--no-print-directory", *flags, *settings, *ks, f"RUN={run_folder}", *args],
                                cwd=ROOT, capture_output=True, text=True, env={**make_env(), **(env or {})})
        output = result.stdout + result.stderr
        stages = [(line.split()[0].rsplit("/", 1)[-1], line) for line in output.splitlines()
                  if line.startswith(str(BIN) + "/")]
        return result.returncode, output, stages

    return run


def model_id(folder):
    """A model folder's id, as quantize records its source's (`quantization.source_model_id`)."""
    return hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()


def quantized_from(folder):
    return json.loads((folder / "manifest.json").read_text())["quantization"]["source_model_id"]


def put_in_place(source, target):
    """`target` replaced by a copy of `source`, dated as `target` was (cp -p of another run's
    file, rsync -a, a restored backup): to Make, by time, nothing changed."""
    if source.is_dir():  # a model folder, dated by its manifest
        stat = (target / "manifest.json").stat()
        shutil.rmtree(target)
        shutil.copytree(source, target)
        target = target / "manifest.json"
    else:
        stat = target.stat()
        shutil.copyfile(source, target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_the_pruned_models_are_quantized_again_from_another_run_or_plan_only(quant_make, tmp_path):
    a, b = tmp_path / "run-a", tmp_path / "run-b"
    quantized = tmp_path / "build" / "quant" / "tiny-llama" / "pruned-k2-int8"
    # Another run's pruned model (another seed, another plan), made first: older than every
    # quantized folder below.
    status, output, _ = quant_make(b, "SEED=2", str(b / "pruned-k2" / "manifest.json"))
    assert status == 0, output
    status, output, ran = quant_make(a, "quantize")
    assert status == 0, output
    assert sorted(name for name, _ in ran if name == "quantize") == ["quantize", "quantize"], ran
    assert quantized_from(quantized) == model_id(a / "pruned-k2")
    assert model_id(a / "pruned-k2") != model_id(b / "pruned-k2"), "the two runs chose one plan"
    status, output, _ = quant_make(a, "quantize", flags=["-q"])
    assert status == 0, output

    # RUN names the other run: its pruned model is quantized (the full model's are kept), though
    # older than the quantized folder.
    status, output, listed = quant_make(b, "SEED=2", "quantize", flags=["-n"])
    assert status == 0, output
    assert [name for name, _ in listed] == ["quantize"] and f"--model {b}/pruned-k2 " in listed[0][1], listed
    status, output, _ = quant_make(b, "SEED=2", "quantize", flags=["-q"])
    assert status == 1, output
    status, output, ran = quant_make(b, "SEED=2", "quantize")
    assert status == 0 and [name for name, _ in ran] == ["quantize"], output
    assert quantized_from(quantized) == model_id(b / "pruned-k2")
    status, output, _ = quant_make(b, "SEED=2", "quantize", flags=["-q"])
    assert status == 0, output
    # And back.
    status, output, ran = quant_make(a, "quantize")
    assert status == 0 and [name for name, _ in ran] == ["quantize"], output
    assert quantized_from(quantized) == model_id(a / "pruned-k2")

    # Another plan's folder in the same run, dated as the old one: quantized again.
    put_in_place(b / "pruned-k2", a / "pruned-k2")
    status, output, _ = quant_make(a, "quantize", flags=["-q"])
    assert status == 1, output
    status, output, ran = quant_make(a, "quantize")
    assert status == 0 and [name for name, _ in ran] == ["quantize"], output
    assert quantized_from(quantized) == model_id(b / "pruned-k2")

    # The folder touched, unchanged: nothing is quantized again.
    os.utime(a / "pruned-k2" / "manifest.json")
    status, output, listed = quant_make(a, "quantize", flags=["-n"])
    assert (status, listed) == (0, []), output
    status, output, ran = quant_make(a, "quantize")
    assert (status, ran) == (0, []), output
    status, output, _ = quant_make(a, "quantize", flags=["-q"])
    assert status == 0, output


def test_the_quantized_run_measures_another_run_s_masks_and_tokens_again(quant_make, tmp_path):
    a, b, c = tmp_path / "run-a", tmp_path / "run-b", tmp_path / "run-c"
    # Other runs' tables, made first: older than the quantized run's. Run b's masks and calibration
    # tokens (another seed), run c's evaluation tokens (another number of windows).
    status, output, _ = quant_make(b, "SEED=2", *(str(b / f) for f in ("masks.parquet", "tokens-calib.parquet",
                                                                       "tokens-eval.parquet")))
    assert status == 0, output
    status, output, _ = quant_make(c, "EVAL_WINDOWS=3", str(c / "tokens-eval.parquet"))
    assert status == 0, output
    status, output, ran = quant_make(a, "quantize-then-prune")
    assert status == 0 and "evaluate" in [name for name, _ in ran], output
    status, output, _ = quant_make(a, "quantize-then-prune", flags=["-q"])
    assert status == 0, output

    def measured(ran):
        """The quantized run's stages that ran, and what evaluate and the plan's measure read."""
        names = sorted(name for name, _ in ran)
        evaluate = [line.split() for name, line in ran if name == "evaluate"]
        plan = [line.split() for name, line in ran if name == "apply-prune" and "--tokens" in line]
        return (names, [(w[w.index("--masks") + 1], w[w.index("--tokens") + 1]) for w in evaluate],
                [w[w.index("--tokens") + 1] for w in plan])

    # RUN names the other run (the seed it was made with too): its masks are measured on the
    # quantized model, though older than the quantized run's table, and what follows is made again.
    status, output, ran = quant_make(b, "SEED=2", "quantize-then-prune")
    assert status == 0, output
    assert measured(ran) == (["apply-prune", "apply-prune", "evaluate", "fit-surrogate", "shapley"],
                             [(f"{b}/masks.parquet", f"{b}/tokens-calib.parquet")], [f"{b}/tokens-eval.parquet"]), ran
    status, output, _ = quant_make(b, "SEED=2", "quantize-then-prune", flags=["-q"])
    assert status == 0, output

    # Another run's masks in the same run, dated as its own: measured again.
    put_in_place(a / "masks.parquet", b / "masks.parquet")
    status, output, ran = quant_make(b, "SEED=2", "quantize-then-prune")
    assert status == 0, output
    assert measured(ran)[:2] == (["apply-prune", "apply-prune", "evaluate", "fit-surrogate", "shapley"],
                                 [(f"{b}/masks.parquet", f"{b}/tokens-calib.parquet")]), ran
    # Other evaluation tokens, dated as the old: the plan alone is measured again.
    put_in_place(c / "tokens-eval.parquet", b / "tokens-eval.parquet")
    status, output, ran = quant_make(b, "SEED=2", "quantize-then-prune")
    assert status == 0, output
    assert measured(ran) == (["apply-prune"], [], [f"{b}/tokens-eval.parquet"]), ran

    # The tables touched, unchanged: nothing is measured again.
    for table in ("masks.parquet", "tokens-calib.parquet", "tokens-eval.parquet"):
        os.utime(b / table)
    status, output, listed = quant_make(b, "SEED=2", "quantize-then-prune", flags=["-n"])
    assert (status, listed) == (0, []), output
    status, output, ran = quant_make(b, "SEED=2", "quantize-then-prune")
    assert (status, ran) == (0, []), output
    status, output, _ = quant_make(b, "SEED=2", "quantize-then-prune", flags=["-q"])
    assert status == 0, output


def test_new_quantize_arguments_quantize_that_scheme_again(quant_make, tmp_path):
    """A scheme's arguments (QUANT_ARGS_<scheme>, which the refusal of an unknown scheme points
    to) were in no stamp: `make quantize QUANT_ARGS_int8="--scheme int8 --exclude-head"` after a
    run remade nothing, and `make -q` said it was up to date. Each scheme has a stamp of them."""
    a = tmp_path / "run-a"
    status, output, _ = quant_make(a, "quantize")
    assert status == 0, output
    quant = tmp_path / "build" / "quant" / "tiny-llama"
    other = "QUANT_ARGS_int8=--scheme int8 --exclude-head"
    status, output, listed = quant_make(a, "quantize", other, flags=["-n"])
    assert status == 0 and sorted(name for name, _ in listed) == ["quantize", "quantize"], output
    assert all("--scheme int8 --exclude-head" in line for _, line in listed), listed
    status, output, _ = quant_make(a, "quantize", other, flags=["-q"])
    assert status == 1, output
    status, output, ran = quant_make(a, "quantize", other)
    assert status == 0 and sorted(name for name, _ in ran) == ["quantize", "quantize"], output
    assert (quant / ".settings" / "scheme-int8").read_text().splitlines()[0] == "--scheme int8 --exclude-head"
    status, output, _ = quant_make(a, "quantize", other, flags=["-q"])
    assert status == 0, output
    # Back to the arguments of pipelines/quantize.mk: quantized again; spelled with `=`, the same.
    status, output, ran = quant_make(a, "quantize")
    assert status == 0 and sorted(name for name, _ in ran) == ["quantize", "quantize"], output
    status, output, ran = quant_make(a, "quantize", "QUANT_ARGS_int8=--scheme=int8")
    assert (status, ran) == (0, []), output
    status, output, _ = quant_make(a, "quantize", flags=["-q"])
    assert status == 0, output


# The stamps added on 2026-12-07, which folders made before then lack.
NEW_STAMPS = {"quant": ["pruned-k2", "scheme-int8", "scheme-int4-32"], "run-int4-32": ["calibration", "tokens-eval"]}


def remove_new_stamps(quant):
    """The quantized folders as a makefile of before 2026-12-07 left them: without those stamps
    (and the records of their inputs' identity beside them); returns what the stamps held."""
    held = {}
    for folder, names in NEW_STAMPS.items():
        base = quant if folder == "quant" else quant / folder
        for name in names:
            held[(folder, name)] = (base / ".settings" / name).read_text()
            (base / ".settings" / name).unlink()
            (base / ".checked" / name).unlink(missing_ok=True)
    return held


def test_quantized_folders_made_before_their_stamps_are_taken_as_they_are(quant_make, tmp_path):
    """The stamps of 2026-12-07 were missing in folders made before, so a first run after the
    upgrade took every output for out of date: `make quantize-then-prune` measured every mask of
    the quantized run again (hours on a large model), and `make quantize` quantized the pruned
    models again. A new stamp takes the time of what it guards when that records being made from
    what the stamp records (pipelines/made_from.py); otherwise the output is made again."""
    a, b, c = tmp_path / "run-a", tmp_path / "run-b", tmp_path / "run-c"
    status, output, _ = quant_make(b, "SEED=2", str(b / "masks.parquet"))
    assert status == 0, output
    status, output, _ = quant_make(c, "EVAL_WINDOWS=3", str(c / "tokens-eval.parquet"))
    assert status == 0, output
    for goal in ("quantize", "quantize-then-prune"):
        status, output, _ = quant_make(a, goal)
        assert status == 0, output
    quant = tmp_path / "build" / "quant" / "tiny-llama"
    outputs = [quant / "full-int8" / "manifest.json", quant / "pruned-k2-int8" / "manifest.json",
               quant / "full-int4-32" / "manifest.json", quant / "run-int4-32" / "evaluations.parquet",
               quant / "run-int4-32" / "pruned-k2-plan.parquet", quant / "run-int4-32" / "pruned-k2" / "manifest.json"]
    times = {path: path.stat().st_mtime_ns for path in outputs}
    held = remove_new_stamps(quant)

    for goal in ("quantize-then-prune", "quantize"):
        status, output, ran = quant_make(a, goal)
        assert (status, ran) == (0, []), output
        assert "made before its stamp existed" in output, output
    assert {path: path.stat().st_mtime_ns for path in outputs} == times
    for (folder, name), text in held.items():
        base = quant if folder == "quant" else quant / folder
        assert (base / ".settings" / name).read_text() == text, name
    for goal in ("quantize-then-prune", "quantize"):
        status, output, listed = quant_make(a, goal, flags=["-n"])
        assert (status, listed) == (0, []), output
        status, output, _ = quant_make(a, goal, flags=["-q"])
        assert status == 0, output

    # A quantized run of other masks (another run's table in place, dated as the old): measured
    # again, as with a stamp; the folders quantized from this run's pruned model are still taken.
    remove_new_stamps(quant)
    put_in_place(b / "masks.parquet", a / "masks.parquet")
    status, output, ran = quant_make(a, "quantize-then-prune")
    assert status == 0, output
    evaluate = [line for name, line in ran if name == "evaluate"]
    assert len(evaluate) == 1 and f"--masks {a}/masks.parquet" in evaluate[0], ran
    status, output, ran = quant_make(a, "quantize")
    assert (status, ran) == (0, []), output
    # A plan measured on other evaluation tokens: the plan alone is measured again.
    remove_new_stamps(quant)
    put_in_place(c / "tokens-eval.parquet", a / "tokens-eval.parquet")
    status, output, ran = quant_make(a, "quantize-then-prune")
    assert status == 0, output
    assert [(name, f"--tokens {a}/tokens-eval.parquet" in line) for name, line in ran] == [("apply-prune", True)], ran



def recipe_lines(output):
    """What `make -n` lists, but the stage binaries' `cargo build` (CARGO=true here), which Make
    asks for every time (phony): a stamp's `:` included."""
    return [line for line in output.splitlines() if line.strip() and not line.startswith("true build")]


def copied_with_times_kept(folder):
    """`folder` replaced by a `cp -a` copy of itself: every file's mtime kept, its ctime new (a
    run folder restored from a backup, or moved to another disk)."""
    copy = folder.with_name(folder.name + ".copy")
    subprocess.run(["cp", "-a", str(folder), str(copy)], check=True)
    shutil.rmtree(folder)
    copy.rename(folder)


def test_stamps_taken_after_a_copy_with_times_kept_leave_make_n_nothing_to_list(quant_make, tmp_path):
    """A stamp taken for an output made before it (pipelines/made_from.py) is dated as the output.
    Where the inputs it identifies had been copied with their times kept (cp -a: new ctimes), the
    record of their identity (.checked/) was dated when they were identified, newer than the stamp,
    for good: the stamp's rule (a `:` that has Make read its time again) ran on every make, and
    `make -n quantize-then-prune` listed `:` twice, `make -n quantize` once, with nothing to do."""
    a, b = tmp_path / "run-a", tmp_path / "run-b"
    status, output, _ = quant_make(b, "SEED=2", str(b / "masks.parquet"))
    assert status == 0, output
    for goal in ("quantize", "quantize-then-prune"):
        status, output, _ = quant_make(a, goal)
        assert status == 0, output
    quant = tmp_path / "build" / "quant" / "tiny-llama"
    copied_with_times_kept(a)
    copied_with_times_kept(tmp_path / "build")
    remove_new_stamps(quant)
    for goal in ("quantize-then-prune", "quantize"):
        status, output, ran = quant_make(a, goal)
        assert (status, ran) == (0, []), output
        assert "made before its stamp existed" in output, output
    for goal in ("quantize-then-prune", "quantize"):
        status, output, _ = quant_make(a, goal, flags=["-n"])
        assert (status, recipe_lines(output)) == (0, []), output
        status, output, _ = quant_make(a, goal, flags=["-q"])
        assert status == 0, output
        status, output, ran = quant_make(a, goal)
        assert (status, ran) == (0, []), output

    # A real input changed (another run's masks, dated as the old): the quantized run measures
    # them again, and nothing else is made again.
    put_in_place(b / "masks.parquet", a / "masks.parquet")
    status, output, listed = quant_make(a, "quantize-then-prune", flags=["-n"])
    assert status == 0 and "evaluate" in [name for name, _ in listed], output
    status, output, ran = quant_make(a, "quantize-then-prune")
    assert status == 0, output
    evaluate = [line for name, line in ran if name == "evaluate"]
    assert len(evaluate) == 1 and f"--masks {a}/masks.parquet" in evaluate[0], ran
    status, output, ran = quant_make(a, "quantize")
    assert (status, ran) == (0, []), output
    for goal in ("quantize-then-prune", "quantize"):
        status, output, _ = quant_make(a, goal, flags=["-n"])
        assert (status, recipe_lines(output)) == (0, []), output


def sha256_of(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_quantize_bench_measures_again_for_other_bench_tables_only(quant_make, tmp_path):
    """The bench summaries depended on the bench tables (build/bench/tokens.parquet, masks.parquet)
    by time alone: tables made again unchanged measured every model again, and other tables put
    there with an older time measured nothing. They are stamped by identity now; summaries made
    before the stamps are taken as they are when the tables beside them were measured on the bench
    tables now."""
    a = tmp_path / "run-a"
    bench = tmp_path / "build" / "bench"
    quant = tmp_path / "build" / "quant" / "tiny-llama"
    # The bench text is WikiText-2 where it sits beside the checkout: a text of the test's own here.
    wikitext = f"WIKITEXT={text(tmp_path / 'bench.txt', 3)}"
    status, output, _ = quant_make(a, wikitext, str(bench / "tokens.parquet"), str(bench / ".settings" / "masks"))
    assert status == 0, output

    def sample_masks(out, seed):
        """The bench masks as benchmarks.mk samples them but for the strata, which past the
        fixture's 6 blocks it refuses; written after their stamp, so up to date to make."""
        subprocess.run([f"{BIN}/sample-masks", "--model", str(TINY), "--strata", "2,3", "--stratified-masks", "6",
                        "--seed", str(seed), "--out", str(out)], check=True, capture_output=True, env=make_env())

    sample_masks(bench / "masks.parquet", 1)

    def measured(ran):
        """The bench summaries evaluate wrote, by the model (`--model`) and whether masks were read
        (the first line of the recipe, which is all `ran` holds of it)."""
        words = [line.split() for name, line in ran if name == "evaluate"]
        models = [(w[w.index("--model") + 1].rstrip("/").rsplit("/", 1)[-1], "--masks" in w) for w in words]
        return sorted(f"{model}-{'masks' if masks else 'full'}.json" for model, masks in models)

    everything = ["full-int8-full.json", "full-int8-masks.json", "pruned-k2-int8-full.json"]
    status, output, ran = quant_make(a, wikitext, "quantize-bench")
    assert status == 0 and measured(ran) == everything, output

    # Both tables made again, unchanged (a newer time): nothing is measured again.
    tokens_before, masks_before = sha256_of(bench / "tokens.parquet"), sha256_of(bench / "masks.parquet")
    old_time = (bench / "tokens.parquet").stat().st_mtime_ns
    (bench / "tokens.parquet").unlink()
    status, output, ran = quant_make(a, wikitext, str(bench / "tokens.parquet"))
    assert status == 0 and [name for name, _ in ran] == ["prepare-tokens"], output
    sample_masks(bench / "masks.parquet", 1)
    assert (sha256_of(bench / "tokens.parquet"), sha256_of(bench / "masks.parquet")) == (tokens_before, masks_before)
    assert (bench / "tokens.parquet").stat().st_mtime_ns > old_time
    status, output, ran = quant_make(a, wikitext, "quantize-bench")
    assert (status, measured(ran)) == (0, []), output
    status, output, _ = quant_make(a, wikitext, "quantize-bench", flags=["-q"])
    assert status == 0, output

    # Other masks, dated as the old: the masks/s summary alone is measured again.
    sample_masks(tmp_path / "other-masks.parquet", 2)
    put_in_place(tmp_path / "other-masks.parquet", bench / "masks.parquet")
    status, output, _ = quant_make(a, wikitext, "quantize-bench", flags=["-q"])
    assert status == 1, output
    status, output, ran = quant_make(a, wikitext, "quantize-bench")
    assert status == 0 and measured(ran) == ["full-int8-masks.json"], output
    # A timing of every bench mask, not of those the old table lacked (evaluate resumes a table of
    # the same model and tokens: the rule removes it first).
    timed = json.loads((quant / "bench" / "full-int8-masks.json").read_text())
    assert timed["masks"] == 6, timed
    # Other tokens (of another text), dated as the old: every summary is measured again.
    other = tmp_path / "other-bench"
    status, output, _ = quant_make(a, f"BENCH={other}", f"WIKITEXT={text(tmp_path / 'other.txt', 4)}",
                                   str(other / "tokens.parquet"))
    assert status == 0, output
    put_in_place(other / "tokens.parquet", bench / "tokens.parquet")
    status, output, ran = quant_make(a, wikitext, "quantize-bench")
    assert status == 0 and measured(ran) == everything, output
    status, output, _ = quant_make(a, wikitext, "quantize-bench", flags=["-n"])
    assert (status, recipe_lines(output)) == (0, []), output

    # Summaries made before these stamps: taken as they are, the stamps dated as they are.
    summaries = {path: path.stat().st_mtime_ns for path in (quant / "bench").glob("*.json")}
    held = {name: (quant / ".settings" / name).read_text() for name in ("bench-tokens", "bench-masks")}

    def remove_bench_stamps():
        for name in held:
            (quant / ".settings" / name).unlink()
            (quant / ".checked" / name).unlink(missing_ok=True)

    remove_bench_stamps()
    status, output, ran = quant_make(a, wikitext, "quantize-bench")
    assert (status, measured(ran)) == (0, []), output
    assert output.count("made before its stamp existed") == 2, output
    assert {path: path.stat().st_mtime_ns for path in summaries} == summaries
    assert {name: (quant / ".settings" / name).read_text() for name in held} == held
    status, output, _ = quant_make(a, wikitext, "quantize-bench", flags=["-n"])
    assert (status, recipe_lines(output)) == (0, []), output
    # Made before the stamps, of other masks than the bench's now (the first ones back, dated as
    # the last): the masks/s summary is measured again, the perplexities are taken.
    remove_bench_stamps()
    sample_masks(tmp_path / "first-masks.parquet", 1)
    put_in_place(tmp_path / "first-masks.parquet", bench / "masks.parquet")
    status, output, ran = quant_make(a, wikitext, "quantize-bench")
    assert status == 0 and measured(ran) == ["full-int8-masks.json"], output
    assert output.count("made before its stamp existed") == 1, output
    # A summary of a model quantize-bench no longer makes (another K_PRUNED), measured on other
    # tokens, left in bench/: not checked (every summary was refused for it, and measured again).
    older = tmp_path / "older-tokens.parquet"
    subprocess.run([f"{BIN}/prepare-tokens", "--model", str(TINY), "--text", str(text(tmp_path / "older.txt", 6)),
                    "--windows", "4", "--seq-len", "32", "--mode", "consecutive", "--out", str(older)],
                   check=True, capture_output=True, env=make_env())
    subprocess.run([f"{BIN}/evaluate", "--model", str(quant / "full-int8"), "--tokens", str(older),
                    "--out", str(quant / "bench" / "pruned-k5-int8-full.parquet"),
                    "--summary", str(quant / "bench" / "pruned-k5-int8-full.json"), "--quiet"],
                   check=True, capture_output=True, env=make_env())
    (quant / ".settings" / "bench-tokens").unlink()
    (quant / ".checked" / "bench-tokens").unlink(missing_ok=True)
    status, output, ran = quant_make(a, wikitext, "quantize-bench")
    assert (status, measured(ran)) == (0, []), output
    assert output.count("made before its stamp existed") == 1, output


def test_a_bench_summary_is_taken_only_as_written_with_its_table_of_its_model(tmp_path):
    """made_from.py bench checked the table beside a summary, not the summary: evaluate writes the
    table, then the summary, so a run stopped in between (or failing to write the summary) left a
    table of the new tokens beside a summary of the old, which was taken. A summary is taken now
    when it is not older than its table and records its full-model NLL and blocks and the tokens'
    windows and length, and the table was measured on the model folder the summary is named after
    (quantize.mk's layout: QUANT/bench/MODEL-full.json, QUANT/MODEL/manifest.json)."""
    quant = tmp_path / "quant"
    bench = quant / "bench"
    bench.mkdir(parents=True)
    shutil.copytree(TINY, quant / "full-int8")
    summary, table = bench / "full-int8-full.json", bench / "full-int8-full.parquet"

    def tokens(name, seed, windows=4):
        out = tmp_path / f"{name}.parquet"
        subprocess.run([f"{BIN}/prepare-tokens", "--model", str(TINY), "--text", str(text(tmp_path / f"{name}.txt", seed)),
                        "--windows", str(windows), "--seq-len", "32", "--mode", "consecutive", "--out", str(out)],
                       check=True, capture_output=True, env=make_env())
        return out

    def evaluate(tokens, with_summary=True):
        subprocess.run([f"{BIN}/evaluate", "--model", str(quant / "full-int8"), "--tokens", str(tokens),
                        "--out", str(table), *(["--summary", str(summary)] if with_summary else []),
                        "--overwrite", "--quiet"], check=True, capture_output=True, env=make_env())

    def adopted(tokens):
        result = subprocess.run([sys.executable, str(ROOT / "pipelines" / "made_from.py"), "bench", str(BIN),
                                 str(tokens), "-", str(summary)], capture_output=True, text=True, env=make_env())
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        return result.stdout.strip()

    def dated_after_table():
        later = table.stat().st_mtime_ns + 10**9
        os.utime(summary, ns=(later, later))

    a, b = tokens("a", 1), tokens("b", 2)
    evaluate(a)
    assert adopted(a) == str(summary)
    # The summary of A beside a table of B (a run on B stopped before its summary).
    evaluate(b, with_summary=False)
    assert adopted(b) == ""
    dated_after_table()  # (its time alone does not decide)
    assert adopted(b) == ""
    # The same tokens, the summary older than its table (the table written again, its summary not).
    evaluate(b)
    assert adopted(b) == str(summary)
    evaluate(b, with_summary=False)
    assert adopted(b) == ""
    # Tokens of other windows, of which the first ones alike (the same full-model NLL is not enough).
    evaluate(b)
    written = json.loads(summary.read_text())
    written["windows"] += 1
    summary.write_text(json.dumps(written))
    dated_after_table()
    assert adopted(b) == ""
    # The table measured on another model than the folder it is named after.
    evaluate(b)
    assert adopted(b) == str(summary)
    manifest = quant / "full-int8" / "manifest.json"
    manifest.write_text(manifest.read_text() + "\n")
    assert adopted(b) == ""
    # No such model folder (made_from.py run elsewhere than quantize.mk's bench/): no model compared.
    shutil.rmtree(quant / "full-int8")
    assert adopted(b) == str(summary)


# PYTHON for make: runs what it is given, but for pipelines/identity.py run by a stamp's recipe
# (its output a file: the stamp being written; when Make reads the makefiles, a pipe), the first
# time: it prints the identity of the inputs, then replaces RACE_INPUT by RACE_OTHER's bytes, its
# time kept (cp -p), as another process would while the stamp is written.
RACING_PYTHON = r"""#!PYTHON
import os, shutil, stat, subprocess, sys
from pathlib import Path

args = sys.argv[1:]
done = Path(os.environ.get("RACE_DONE", "/nonexistent"))
if (args and args[0].endswith("identity.py") and "RACE_INPUT" in os.environ and not done.exists()
        and stat.S_ISREG(os.fstat(1).st_mode)):
    identity = subprocess.run([sys.executable, *args], stdout=subprocess.PIPE)
    sys.stdout.buffer.write(identity.stdout)
    sys.stdout.flush()
    target = os.environ["RACE_INPUT"]
    kept = os.stat(target)
    shutil.copyfile(os.environ["RACE_OTHER"], target)
    os.utime(target, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    done.write_text("")
    sys.exit(identity.returncode)
os.execv(sys.executable, [sys.executable, *args])
"""

# For bash (BASH_ENV): `[` and `test` whose -nt cannot tell apart times less than 5 s apart, as a
# shell whose -nt compares whole seconds cannot within one second (a margin for a loaded machine).
COARSE_NT = r"""
coarse_nt() { [ -e "$1" ] && [ -e "$2" ] && builtin [ $(( $(stat -c %Y -- "$1") - $(stat -c %Y -- "$2") )) -ge 5 ]; }
[() { if builtin [ $# -eq 4 ] && builtin [ "$2" = -nt ] && builtin [ "$4" = "]" ]; then coarse_nt "$1" "$3"; else builtin [ "$@"; fi; }
test() { if builtin [ $# -eq 3 ] && builtin [ "$2" = -nt ]; then coarse_nt "$1" "$3"; else builtin test "$@"; fi; }
"""


@pytest.mark.parametrize("shell", ["sh", "coarse -nt"])
def test_an_input_replaced_while_its_stamp_is_written_is_identified_again(quant_make, tmp_path, shell):
    """A stamp records its inputs' identity, and .checked/ when they were identified: an input
    changed after that (its ctime newer) is identified again when Make next reads the makefiles.
    The record was dated as the stamp, written after the inputs were identified: an input
    replaced in between (cp -p: its old mtime) was never identified again, the stamp recording
    the replaced text for good. It is dated when identification began, compared by find, to the
    nanosecond: with a shell's `-nt` (whole seconds in some shells) a stamp written within the
    second was taken as not newer, and the record dated as it again."""
    run = tmp_path / "run-a"
    stamp, record = run / ".settings" / "tokens-eval", run / ".checked" / "tokens-eval"
    status, output, _ = quant_make(run, str(stamp))
    assert status == 0 and stamp.is_file() and record.is_file(), output
    eval_text = tmp_path / "eval.txt"
    other = text(tmp_path / "other-eval.txt", 5)
    python = tmp_path / "racing-python"
    python.write_text(RACING_PYTHON.replace("#!PYTHON", f"#!{sys.executable}"))
    python.chmod(0o755)
    env = {"RACE_INPUT": str(eval_text), "RACE_OTHER": str(other), "RACE_DONE": str(tmp_path / "raced")}
    flags = []
    if shell != "sh":
        (tmp_path / "coarse-nt.sh").write_text(COARSE_NT)
        env["BASH_ENV"] = str(tmp_path / "coarse-nt.sh")
        flags = ["SHELL=/bin/bash"]

    def identity():
        return subprocess.run([sys.executable, str(ROOT / "pipelines" / "identity.py"), str(TINY / "manifest.json"),
                               str(eval_text)], capture_output=True, text=True, check=True).stdout.strip()

    before = identity()
    assert stamp.read_text().splitlines()[1] == before
    # Another window count: the stamp is written again, the text replaced while it is.
    status, output, _ = quant_make(run, "EVAL_WINDOWS=3", f"PYTHON={python}", str(stamp), flags=flags, env=env)
    assert status == 0 and (tmp_path / "raced").exists(), output
    assert eval_text.read_bytes() == other.read_bytes() and identity() != before
    assert stamp.read_text().splitlines()[1] == before  # what was identified, before the text was replaced
    # The next make identifies the text again: the stamp records it, and what reads it is made again.
    status, output, _ = quant_make(run, "EVAL_WINDOWS=3", str(stamp), flags=flags, env=env)
    assert status == 0, output
    # (The record: the identity line, then the inputs' signature when they were identified.)
    assert stamp.read_text().splitlines()[1] == identity() == record.read_text().splitlines()[0], output


def test_the_adopt_check_without_its_stages_or_on_odd_metadata_adopts_nothing_without_a_traceback(tmp_path):
    """made_from.py raised a traceback (and the stamp's table was made again) when a stage it
    runs was missing (a fresh BIN; cargo linking it again under -j), or when a table's metadata
    was valid JSON but not an object. Now: one line or none, and nothing adopted."""
    made_from = [sys.executable, str(ROOT / "pipelines" / "made_from.py")]
    table, tokens = tmp_path / "evaluations.parquet", tmp_path / "tokens.parquet"
    table.write_bytes(b"")
    tokens.write_bytes(b"")
    missing = subprocess.run([*made_from, "plan", str(tmp_path / "no-bin"), str(table), str(tokens)],
                             capture_output=True, text=True)
    assert (missing.returncode, missing.stdout) == (0, ""), missing.stderr
    assert "Traceback" not in missing.stderr and "cannot check" in missing.stderr, missing.stderr
    # An inspect that prints metadata that is not an object, or inputs that are not one.
    for printed in ('{"metadata": [1, 2]}', '{"metadata": {"dataset_id": "d", "table": "plans", "inputs": [1, 2]}}'):
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        (bin_dir / "inspect").write_text(f"#!/bin/sh\necho '{printed}'\n")
        (bin_dir / "inspect").chmod(0o755)
        odd = subprocess.run([*made_from, "plan", str(bin_dir), str(table), str(tokens)], capture_output=True, text=True)
        assert (odd.returncode, odd.stdout, odd.stderr) == (0, "", ""), (printed, odd.stderr)
