"""Reliability of the stage binaries against bad input (docs/reliability.md, "Stages: outputs and
arguments").

A matrix of bad invocations over every stage: corrupt, truncated, wrong-kind and mismatched
files; an output that is an input (by name, through a symbolic link, through a hard link); an
output at a FIFO, a symbolic link or a folder; huge and zero counts; non-UTF-8 paths; read-only
and missing folders. Each case must fail with a non-zero exit status, without a Rust panic, with
a message naming the file or the flag, and leave every input byte-identical. Then `evaluate` is
killed (SIGKILL) at a few points and run again: its table must equal an uninterrupted run's and
no temporary file may survive.

Runs the binaries of target/debug (or $LAYERPRUNE_BIN; `make build` first) on the committed tiny
model, with ONNX Runtime from $ORT_DYLIB_PATH (default: the one `make ort` fetches).
"""

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(
    os.environ.get("LAYERPRUNE_BIN")
    or Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "debug"
)
MODEL = ROOT / "data" / "fixtures" / "tiny-llama"
ORT = os.environ.get("ORT_DYLIB_PATH") or str(
    ROOT / "build/ort-cpu/onnxruntime/capi/libonnxruntime.so.1.31.1"
)
STAGES = [
    "prepare-tokens",
    "sample-masks",
    "evaluate",
    "fit-surrogate",
    "shapley",
    "score-blocks",
    "apply-prune",
    "quantize",
    "frontier",
    "inspect",
]

pytestmark = pytest.mark.skipif(
    not all((BIN / stage).is_file() for stage in STAGES) or not Path(ORT).is_file(),
    reason=f"needs the stage binaries in {BIN} (make build) and ONNX Runtime at {ORT}",
)


def env():
    return {**os.environ, "ORT_DYLIB_PATH": ORT, "RUST_BACKTRACE": "0"}


def run(stage, *args, check=True):
    """Runs a stage binary with `args` (str, bytes or Path); returns the CompletedProcess."""
    argv = [str(BIN / stage)] + [a if isinstance(a, bytes) else str(a) for a in args]
    done = subprocess.run(argv, capture_output=True, env=env(), timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"{stage} {args} failed:\n{done.stderr.decode(errors='replace')}")
    return done


def tree_hashes(*roots):
    """relative path -> sha256 of every file under the roots (links are not followed, a FIFO
    is recorded as such), so a changed, added or removed file shows."""
    hashes = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            key = str(path)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                hashes[key] = "link:" + os.readlink(path)
            elif stat.S_ISFIFO(mode):
                hashes[key] = "fifo"
            elif stat.S_ISREG(mode):
                hashes[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISDIR(mode):
                hashes[key] = "dir"
    return hashes


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good inputs made with the stages themselves, and bad ones made from them."""
    d = tmp_path_factory.mktemp("inputs")
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "ember", "quiet"]
    text = d / "text.txt"
    text.write_text(" ".join(words[(i * 7) % len(words)] for i in range(6000)))
    f = {"dir": d, "text": text}
    f["tokens"] = d / "tokens.parquet"
    run("prepare-tokens", "--model", MODEL, "--text", text, "--windows", "4",
        "--seq-len", "16", "--out", f["tokens"])
    f["masks"] = d / "masks.parquet"
    run("sample-masks", "--num-blocks", "6", "--enumerate", "--out", f["masks"])
    f["masks8"] = d / "masks8.parquet"
    run("sample-masks", "--num-blocks", "8", "--anchors", "--out", f["masks8"])
    f["evals"] = d / "evals.parquet"
    f["stats"] = d / "stats.parquet"
    run("evaluate", "--model", MODEL, "--tokens", f["tokens"], "--masks", f["masks"],
        "--out", f["evals"], "--block-stats", f["stats"], "--quiet")
    f["surrogate"] = d / "surrogate.json"
    run("fit-surrogate", "--evaluations", f["evals"], "--kind", "quadratic", "--folds", "0",
        "--out", f["surrogate"])
    f["scores"] = d / "scores.parquet"
    run("shapley", "--evaluations", f["evals"], "--estimator", "exact-shapley",
        "--out", f["scores"])
    # The same table marked as a checkpoint of a run that stopped (complete = false).
    f["incomplete_evals"] = d / "incomplete-evals.parquet"
    table = pq.read_table(f["evals"])
    metadata = {**table.schema.metadata, b"layerprune.complete": b"false"}
    pq.write_table(table.replace_schema_metadata(metadata), f["incomplete_evals"])
    f["plans"] = d / "plans.parquet"
    run("apply-prune", "--scores", f["scores"], "--estimator", "exact-shapley", "--k", "2",
        "--out", f["plans"])
    # A copy of the model to offer as an output, and one with a broken manifest.
    f["model"] = d / "model"
    shutil.copytree(MODEL, f["model"])
    f["broken_model"] = d / "broken-model"
    shutil.copytree(MODEL, f["broken_model"])
    manifest = f["broken_model"] / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:40])
    # A model folder from the future, and one whose manifest lists a file outside it.
    f["future_model"] = d / "future-model"
    shutil.copytree(MODEL, f["future_model"])
    manifest = json.loads((MODEL / "manifest.json").read_text())
    (f["future_model"] / "manifest.json").write_text(json.dumps({**manifest,
                                                                 "format_version": 99}))
    f["escaping_model"] = d / "escaping-model"
    shutil.copytree(MODEL, f["escaping_model"])
    files = dict(manifest["files"])
    files["../text.txt"] = hashlib.sha256(text.read_bytes()).hexdigest()
    (f["escaping_model"] / "manifest.json").write_text(json.dumps({**manifest,
                                                                   "files": files}))
    # A surrogate that records another model than the evaluations it is offered with.
    f["other_surrogate"] = d / "other-surrogate.json"
    f["other_surrogate"].write_text(json.dumps(
        {**json.loads(f["surrogate"].read_text()), "model_id": "another-model"}))
    # A masks table that hung parquet 60.1's page-header skipper before the structural checks.
    f["hanging"] = d / "hanging.parquet"
    shutil.copy(ROOT / "crates/tables/tests/data/hang-masks-page-header-map-of-doubles.parquet",
                f["hanging"])
    f["onnx"] = d / "block.onnx"
    shutil.copy(MODEL / "block_000.onnx", f["onnx"])
    # Corrupt, truncated and empty files.
    f["corrupt"] = d / "corrupt.parquet"
    f["corrupt"].write_bytes(bytes(range(256)) * 8)
    f["truncated"] = d / "truncated.parquet"
    f["truncated"].write_bytes(f["tokens"].read_bytes()[: f["tokens"].stat().st_size // 2])
    f["empty"] = d / "empty.parquet"
    f["empty"].write_bytes(b"")
    f["bad_json"] = d / "bad.json"
    f["bad_json"].write_text('{"kind": "quadratic", "weights": [1, 2')
    f["corrupt_onnx"] = d / "corrupt.onnx"
    f["corrupt_onnx"].write_bytes(b"\x08\x07garbage" * 100)
    # Links to inputs: a symbolic and a hard link.
    f["link_evals"] = d / "link-evals.parquet"
    os.symlink(f["evals"], f["link_evals"])
    f["link_masks"] = d / "link-masks.parquet"
    os.symlink(f["masks"], f["link_masks"])
    f["hard_masks"] = d / "hard-masks.parquet"
    os.link(f["masks"], f["hard_masks"])
    f["hard_text"] = d / "hard-text.txt"
    os.link(text, f["hard_text"])
    # A model folder whose first block graph is a FIFO that no process writes.
    f["fifo_model"] = d / "fifo-model"
    shutil.copytree(MODEL, f["fifo_model"])
    (f["fifo_model"] / "block_000.onnx").unlink()
    os.mkfifo(f["fifo_model"] / "block_000.onnx")
    # Where outputs go: a FIFO, a symbolic link to a new file, a read-only folder.
    out = tmp_path_factory.mktemp("out")
    f["out"] = out
    f["fifo"] = out / "fifo.parquet"
    os.mkfifo(f["fifo"])
    f["dangling"] = out / "link.parquet"
    os.symlink(out / "nowhere.parquet", f["dangling"])
    readonly = out / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    # As root a mode does not stop a write; /proc refuses new files to everyone.
    f["readonly"] = readonly if not os.access(readonly, os.W_OK) else Path("/proc")
    return f


def O(f, name="out.parquet"):
    return f["out"] / name


# (id, stage, args from the files, needles: one of them must be in stderr)
def cases(f):
    m = MODEL
    t, mk, ev = f["tokens"], f["masks"], f["evals"]
    ro = f["readonly"] / "out.parquet"
    missing = f["out"] / "no-such-folder" / "out.parquet"
    nonutf8 = os.fsencode(f["dir"]) + b"/text-\xff.txt"
    ev_args = ["--model", m, "--tokens", t, "--masks", mk, "--quiet"]
    pt_args = ["--model", m, "--text", f["text"]]
    return [
        # prepare-tokens
        ("pt-out-is-input", "prepare-tokens", pt_args + ["--out", f["text"]], ["text.txt"]),
        ("pt-out-hard-link", "prepare-tokens", pt_args + ["--out", f["hard_text"]],
         ["same file"]),
        ("pt-out-fifo", "prepare-tokens", pt_args + ["--out", f["fifo"]], ["FIFO"]),
        ("pt-out-symlink", "prepare-tokens", pt_args + ["--out", f["dangling"]],
         ["symbolic link"]),
        ("pt-out-folder", "prepare-tokens", pt_args + ["--out", f["out"]], ["a folder"]),
        ("pt-out-is-tokenizer", "prepare-tokens",
         ["--tokenizer", f["model"] / "tokenizer.json", "--text", f["text"],
          "--out", f["model"] / "tokenizer.json"], ["tokenizer.json"]),
        ("pt-windows-zero", "prepare-tokens", pt_args + ["--windows", "0", "--out", O(f)],
         ["--windows"]),
        ("pt-windows-huge", "prepare-tokens",
         pt_args + ["--windows", str(10**18), "--out", O(f)], ["--windows"]),
        ("pt-memory", "prepare-tokens",
         pt_args + ["--windows", "100000000", "--seq-len", "16000000", "--out", O(f)],
         ["--windows x --seq-len"]),
        ("pt-text-missing-nonutf8", "prepare-tokens",
         ["--model", m, "--text", nonutf8, "--out", O(f)], ["text-"]),
        ("pt-tokenizer-corrupt", "prepare-tokens",
         ["--tokenizer", f["corrupt"], "--text", f["text"], "--out", O(f)], ["corrupt.parquet"]),
        ("pt-out-missing-folder", "prepare-tokens", pt_args + ["--out", missing],
         ["no-such-folder"]),
        ("pt-out-readonly", "prepare-tokens", pt_args + ["--out", ro], [str(f["readonly"])]),
        # sample-masks
        ("sm-blocks-zero", "sample-masks", ["--num-blocks", "0", "--anchors", "--out", O(f)],
         ["--num-blocks"]),
        ("sm-blocks-huge", "sample-masks",
         ["--num-blocks", str(10**12), "--anchors", "--out", O(f)], ["--num-blocks"]),
        ("sm-chains-huge", "sample-masks",
         ["--num-blocks", "6", "--permutation-chains", str(10**18), "--out", O(f)],
         ["--permutation-chains"]),
        ("sm-masks-huge", "sample-masks", ["--num-blocks", "6", "--stratified-masks", str(10**18),
                                           "--out", O(f)], ["--stratified-masks"]),
        ("sm-memory", "sample-masks",
         ["--num-blocks", "4096", "--permutation-chains", "10000000", "--out", O(f)],
         ["--permutation-chains"]),
        ("sm-pilot-corrupt", "sample-masks",
         ["--num-blocks", "6", "--stratified-masks", "5", "--allocation", "neyman", "--pilot",
          f["corrupt"], "--out", O(f)], ["corrupt.parquet"]),
        ("sm-pilot-truncated", "sample-masks",
         ["--num-blocks", "6", "--stratified-masks", "5", "--allocation", "neyman", "--pilot",
          f["truncated"], "--out", O(f)], ["truncated.parquet"]),
        ("sm-pilot-incomplete", "sample-masks",
         ["--num-blocks", "6", "--stratified-masks", "5", "--allocation", "neyman", "--pilot",
          f["incomplete_evals"], "--out", O(f)],
         ["incomplete-evals.parquet: the evaluation table is incomplete"]),
        ("sm-out-is-pilot", "sample-masks",
         ["--num-blocks", "6", "--stratified-masks", "5", "--allocation", "neyman", "--pilot", ev,
          "--out", ev], ["evals.parquet"]),
        ("sm-model-broken", "sample-masks",
         ["--model", f["broken_model"], "--anchors", "--out", O(f)], ["broken-model"]),
        ("sm-out-missing-folder", "sample-masks",
         ["--num-blocks", "6", "--anchors", "--out", missing], ["no-such-folder"]),
        # evaluate
        ("ev-out-is-tokens", "evaluate", ev_args + ["--out", t, "--overwrite"],
         ["tokens.parquet"]),
        ("ev-out-hard-link-masks", "evaluate",
         ev_args + ["--out", f["hard_masks"], "--overwrite"], ["same file"]),
        ("ev-block-stats-is-masks", "evaluate",
         ev_args + ["--out", O(f), "--block-stats", mk], ["--block-stats"]),
        ("ev-summary-symlinked-input", "evaluate",
         ["--model", m, "--tokens", t, "--masks", f["link_masks"], "--out", O(f),
          "--summary", mk, "--quiet"], ["--summary"]),
        ("ev-out-same-as-block-stats", "evaluate",
         ev_args + ["--out", O(f), "--block-stats", O(f)], ["same output"]),
        ("ev-tokens-corrupt", "evaluate",
         ["--model", m, "--tokens", f["corrupt"], "--out", O(f), "--quiet"], ["corrupt.parquet"]),
        ("ev-tokens-truncated", "evaluate",
         ["--model", m, "--tokens", f["truncated"], "--out", O(f), "--quiet"],
         ["truncated.parquet"]),
        ("ev-tokens-empty", "evaluate",
         ["--model", m, "--tokens", f["empty"], "--out", O(f), "--quiet"], ["empty.parquet"]),
        ("ev-tokens-wrong-kind", "evaluate",
         ["--model", m, "--tokens", mk, "--out", O(f), "--quiet"], ["masks.parquet"]),
        ("ev-masks-wrong-kind", "evaluate",
         ["--model", m, "--tokens", t, "--masks", t, "--out", O(f), "--quiet"],
         ["tokens.parquet"]),
        ("ev-masks-mismatched", "evaluate",
         ["--model", m, "--tokens", t, "--masks", f["masks8"], "--out", O(f), "--quiet"],
         ["masks8.parquet"]),
        ("ev-cache-overflow", "evaluate", ev_args + ["--out", O(f), "--cache-mb", str(2**44)],
         ["--cache-mb"]),
        ("ev-threads-huge", "evaluate", ev_args + ["--out", O(f), "--threads", "100000"],
         ["--threads"]),
        ("ev-chunk-zero", "evaluate", ev_args + ["--out", O(f), "--chunk", "0"], ["--chunk"]),
        ("ev-out-readonly", "evaluate", ev_args + ["--out", ro], [str(f["readonly"])]),
        ("ev-out-fifo", "evaluate", ev_args + ["--out", f["fifo"]], ["FIFO"]),
        ("ev-model-broken", "evaluate",
         ["--model", f["broken_model"], "--tokens", t, "--out", O(f), "--quiet"],
         ["manifest.json"]),
        ("ev-out-in-model", "evaluate",
         ["--model", f["model"], "--tokens", t, "--out", f["model"] / "e.parquet", "--quiet"],
         ["inside the input folder"]),
        ("ev-out-missing-folder", "evaluate", ev_args + ["--out", missing], ["no-such-folder"]),
        ("ev-summary-missing-folder", "evaluate",
         ev_args + ["--out", O(f), "--summary", missing], ["no-such-folder"]),
        # fit-surrogate
        ("fs-metrics-is-input", "fit-surrogate",
         ["--evaluations", ev, "--metrics", ev], ["--metrics"]),
        ("fs-out-symlinked-input", "fit-surrogate",
         ["--evaluations", f["link_evals"], "--out", ev], ["same file"]),
        ("fs-epochs-zero", "fit-surrogate",
         ["--evaluations", ev, "--epochs", "0", "--out", O(f, "s.json")], ["--epochs"]),
        ("fs-wrong-kind", "fit-surrogate",
         ["--evaluations", t, "--out", O(f, "s.json")], ["tokens.parquet"]),
        ("fs-corrupt", "fit-surrogate",
         ["--evaluations", f["corrupt"], "--out", O(f, "s.json")], ["corrupt.parquet"]),
        ("fs-incomplete", "fit-surrogate",
         ["--evaluations", f["incomplete_evals"], "--out", O(f, "s.json")],
         ["incomplete-evals.parquet: the evaluation table is incomplete"]),
        # shapley
        ("sh-incomplete", "shapley",
         ["--evaluations", f["incomplete_evals"], "--estimator", "exact-shapley",
          "--out", O(f)], ["incomplete-evals.parquet: the evaluation table is incomplete"]),
        ("sh-out-is-input-via-symlink", "shapley",
         ["--evaluations", f["link_evals"], "--estimator", "exact-shapley", "--out", ev],
         ["same file"]),
        ("sh-samples-huge", "shapley",
         ["--surrogate", f["surrogate"], "--estimator", "stratified-semivalue", "--samples",
          str(10**18), "--out", O(f)], ["--samples"]),
        ("sh-samples-memory", "shapley",
         ["--surrogate", f["surrogate"], "--estimator", "stratified-semivalue", "--samples",
          "1000000000", "--out", O(f)], ["--samples"]),
        ("sh-surrogate-corrupt", "shapley",
         ["--surrogate", f["bad_json"], "--estimator", "stratified-semivalue", "--out", O(f)],
         ["bad.json"]),
        ("sh-surrogate-empty", "shapley",
         ["--surrogate", f["empty"], "--estimator", "stratified-semivalue", "--out", O(f)],
         ["empty.parquet"]),
        ("sh-mismatched-masks", "shapley",
         ["--evaluations", ev, "--masks", f["masks8"], "--estimator", "exact-shapley",
          "--out", O(f)], ["blocks"]),
        # score-blocks
        ("sb-incomplete", "score-blocks",
         ["--evaluations", f["incomplete_evals"], "--estimator", "leave-one-out", "--out", O(f)],
         ["incomplete-evals.parquet: the evaluation table is incomplete"]),
        ("sb-out-is-input", "score-blocks",
         ["--block-stats", f["stats"], "--estimator", "angular", "--out", f["stats"]],
         ["stats.parquet"]),
        ("sb-blocks-zero", "score-blocks",
         ["--num-blocks", "0", "--estimator", "reverse", "--out", O(f)], ["--num-blocks"]),
        ("sb-wrong-kind", "score-blocks",
         ["--block-stats", ev, "--estimator", "angular", "--out", O(f)], ["evals.parquet"]),
        # apply-prune
        ("ap-plan-is-scores", "apply-prune",
         ["--scores", f["scores"], "--estimator", "exact-shapley", "--k", "2",
          "--out", f["scores"]], ["--out"]),
        ("ap-pruned-out-is-model", "apply-prune",
         ["--method", "sleb", "--model", f["model"], "--tokens", t, "--k", "1",
          "--out", O(f), "--pruned-out", f["model"], "--overwrite"], ["--pruned-out"]),
        ("ap-pruned-out-in-model", "apply-prune",
         ["--method", "sleb", "--model", f["model"], "--tokens", t, "--k", "1",
          "--out", O(f), "--pruned-out", f["model"] / "pruned"], ["--pruned-out"]),
        ("ap-pairs-huge", "apply-prune",
         ["--method", "iterative", "--surrogate", f["surrogate"], "--k", "2",
          "--permutation-pairs", str(10**18), "--out", O(f)], ["--permutation-pairs"]),
        ("ap-scores-corrupt", "apply-prune",
         ["--scores", f["corrupt"], "--estimator", "exact-shapley", "--k", "2", "--out", O(f)],
         ["corrupt.parquet"]),
        ("ap-plans-wrong-kind", "apply-prune",
         ["--method", "from-plan", "--plans", t, "--k", "2", "--out", O(f)],
         ["tokens.parquet"]),
        ("ap-threads-huge", "apply-prune",
         ["--method", "sleb", "--model", m, "--tokens", t, "--k", "1", "--out", O(f),
          "--threads", "100000"], ["--threads"]),
        # quantize
        ("qu-out-is-model-file", "quantize",
         ["--model", f["onnx"], "--scheme", "int8", "--out", f["onnx"], "--overwrite"],
         ["block.onnx"]),
        ("qu-out-is-model-folder", "quantize",
         ["--model", f["model"], "--scheme", "int8", "--out", f["model"], "--overwrite"],
         ["--out"]),
        ("qu-model-corrupt", "quantize",
         ["--model", f["corrupt_onnx"], "--scheme", "int8", "--out", O(f, "q.onnx")],
         ["corrupt.onnx"]),
        ("qu-out-symlink", "quantize",
         ["--model", f["onnx"], "--scheme", "int8", "--out", f["dangling"]], ["symbolic link"]),
        # frontier
        ("fr-out-dir-in-model", "frontier",
         ["--model", f["model"], "--calibration", f"c0={t}", "--out-dir", f["model"] / "fr"],
         ["inside the input folder"]),
        ("fr-calibration-corrupt", "frontier",
         ["--model", m, "--calibration", f"c0={f['corrupt']}", "--out-dir", f["out"] / "fr"],
         ["corrupt.parquet"]),
        ("fr-k-huge", "frontier",
         ["--model", m, "--calibration", f"c0={t}", "--k", str(10**18),
          "--out-dir", f["out"] / "fr"], ["--k"]),
        # hostile model folders
        ("ev-model-future-format", "evaluate",
         ["--model", f["future_model"], "--tokens", t, "--out", O(f), "--quiet"],
         ["format_version"]),
        ("ap-model-entry-leads-out", "apply-prune",
         ["--method", "sleb", "--model", f["escaping_model"], "--tokens", t, "--k", "1",
          "--out", O(f)], ["../text.txt"]),
        ("qu-model-entry-leads-out", "quantize",
         ["--model", f["escaping_model"], "--scheme", "int8", "--out", f["out"] / "q"],
         ["../text.txt"]),
        # files of different games
        ("sh-surrogate-of-another-model", "shapley",
         ["--evaluations", ev, "--surrogate", f["other_surrogate"], "--estimator",
          "surrogate-shapley", "--out", O(f)], ["another model (another-model)"]),
        ("ap-surrogate-of-another-model", "apply-prune",
         ["--method", "iterative", "--surrogate", f["other_surrogate"], "--model", m,
          "--tokens", t, "--k", "1", "--out", O(f)], ["another model (another-model)"]),
        # a table that hung the Parquet reader, read by every kind of reader
        ("ev-masks-hanging", "evaluate",
         ["--model", m, "--tokens", t, "--masks", f["hanging"], "--out", O(f), "--quiet"],
         ["hanging.parquet"]),
        ("sm-pilot-hanging", "sample-masks",
         ["--num-blocks", "6", "--stratified-masks", "5", "--allocation", "neyman", "--pilot",
          f["hanging"], "--out", O(f)], ["hanging.parquet"]),
        ("in-hanging", "inspect", [f["hanging"]], ["hanging.parquet"]),
        ("in-corrupt", "inspect", [f["corrupt"]], ["corrupt.parquet"]),
        ("in-bad-json", "inspect", [f["bad_json"]], ["bad.json"]),
        ("in-missing-nonutf8", "inspect", [nonutf8], ["text-"]),
        # a FIFO that no process writes, or a device, given as an input: refused at once (every
        # stage waited for a writer for ever, and read /dev/zero until the memory ran out)
        # (text read front to back, --text, --jsonl, --lambada, --boolq-passages, may come through a
        # pipe, `--text <(zcat corpus.gz)`, or a named pipe, which is
        # waited on as any reader waits: test_a_named_pipe_given_as_text_is_read_once_its_writer_comes)
        # an output over a fitted surrogate, or over a file no stage wrote (a text corpus):
        # refused (both were replaced, exit 0, until 2026-12-06)
        ("sm-out-over-surrogate", "sample-masks", ["--num-blocks", "6", "--anchors", "--out", f["surrogate"]],
         ["holds a layerprune surrogate of kind quadratic"]),
        ("sm-out-over-text", "sample-masks", ["--num-blocks", "6", "--anchors", "--out", f["text"]],
         ["refusing to replace a file it did not write"]),
        # quantize's one-file model over a fitted surrogate, even with --overwrite (replaced,
        # exit 0, until 2026-12-07)
        ("qu-out-over-surrogate", "quantize",
         ["--model", f["onnx"], "--scheme", "int8", "--out", f["surrogate"], "--overwrite"],
         ["holds a layerprune surrogate of kind quadratic, and this writes an ONNX model"]),
        ("pt-text-device", "prepare-tokens",
         pt_args[:2] + ["--text", "/dev/zero", "--out", O(f)],
         ["/dev/zero: is a device, not a regular file"]),
        ("sm-pilot-fifo", "sample-masks",
         ["--num-blocks", "6", "--stratified-masks", "5", "--allocation", "neyman", "--pilot", f["fifo"],
          "--out", O(f, "m.parquet")], ["fifo.parquet: cannot open: is a named pipe"]),
        ("ev-tokens-fifo", "evaluate",
         ["--model", m, "--tokens", f["fifo"], "--out", O(f), "--quiet"],
         ["fifo.parquet: cannot open: is a named pipe"]),
        ("ev-model-graph-fifo", "evaluate",
         ["--model", f["fifo_model"], "--tokens", t, "--out", O(f), "--quiet", "--no-verify"],
         ["\"block_000.onnx\" is a named pipe"]),
        ("fs-evaluations-fifo", "fit-surrogate",
         ["--evaluations", f["fifo"], "--out", O(f, "s.json")], ["fifo.parquet"]),
        ("sh-surrogate-fifo", "shapley",
         ["--surrogate", f["fifo"], "--estimator", "stratified-semivalue", "--out", O(f)],
         ["fifo.parquet: cannot read: is a named pipe"]),
        ("sb-block-stats-fifo", "score-blocks",
         ["--block-stats", f["fifo"], "--estimator", "angular", "--out", O(f)], ["fifo.parquet"]),
        ("ap-scores-fifo", "apply-prune",
         ["--scores", f["fifo"], "--estimator", "exact-shapley", "--k", "1", "--out", O(f)],
         ["fifo.parquet"]),
        ("qu-model-fifo", "quantize",
         ["--model", f["fifo"], "--scheme", "int8", "--out", O(f, "q.onnx")], ["fifo.parquet"]),
        ("fr-calibration-fifo", "frontier",
         ["--model", m, "--calibration", f"c0={f['fifo']}", "--out-dir", f["out"] / "fr"],
         ["fifo.parquet"]),
        ("in-fifo", "inspect", [f["fifo"]], ["is a named pipe (FIFO), not a regular file"]),
        # a non-UTF-8 path in every other stage (recorded lossily, never a panic)
        ("sm-out-nonutf8-missing-folder", "sample-masks",
         ["--num-blocks", "6", "--anchors", "--out", os.fsencode(missing.parent) + b"/\xff.parquet"],
         ["no-such-folder"]),
        ("ev-tokens-nonutf8", "evaluate",
         ["--model", m, "--tokens", nonutf8, "--out", O(f), "--quiet"], ["text-"]),
        ("fs-evaluations-nonutf8", "fit-surrogate",
         ["--evaluations", nonutf8, "--out", O(f, "s.json")], ["text-"]),
        ("sh-evaluations-nonutf8", "shapley",
         ["--evaluations", nonutf8, "--estimator", "exact-shapley", "--out", O(f)], ["text-"]),
        ("sb-block-stats-nonutf8", "score-blocks",
         ["--block-stats", nonutf8, "--estimator", "angular", "--out", O(f)], ["text-"]),
        ("ap-scores-nonutf8", "apply-prune",
         ["--scores", nonutf8, "--estimator", "exact-shapley", "--k", "1", "--out", O(f)],
         ["text-"]),
        ("qu-model-nonutf8", "quantize",
         ["--model", nonutf8, "--scheme", "int8", "--out", O(f, "q.onnx")], ["text-"]),
        ("fr-calibration-nonutf8", "frontier",
         ["--model", m, "--calibration", b"c0=" + nonutf8, "--out-dir", f["out"] / "fr"],
         ["UTF-8"]),
    ]


CASE_IDS = [c[0] for c in cases({k: Path("/x") for k in
                                  ["tokens", "masks", "evals", "readonly", "out", "dir", "text",
                                   "hard_text", "fifo", "dangling", "corrupt", "truncated",
                                   "masks8", "broken_model", "hard_masks", "link_evals", "link_masks", "stats",
                                   "empty", "surrogate", "bad_json", "scores", "model", "onnx",
                                   "corrupt_onnx", "future_model", "escaping_model",
                                   "other_surrogate", "hanging", "incomplete_evals",
                                   "fifo_model"]})]


def test_the_matrix_has_at_least_40_cases_over_every_stage():
    assert len(CASE_IDS) >= 40 and len(set(CASE_IDS)) == len(CASE_IDS)


@pytest.mark.parametrize("case", CASE_IDS)
def test_bad_input_is_refused_cleanly(files, case):
    (_, stage, args, needles), = [c for c in cases(files) if c[0] == case]
    before = tree_hashes(files["dir"], MODEL)
    out_before = set(os.listdir(files["out"]))
    done = run(stage, *args, check=False)
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode != 0, f"{case}: succeeded\n{stderr}"
    assert "panicked at" not in stderr, f"{case}: panicked\n{stderr}"
    assert any(n in stderr for n in needles), f"{case}: none of {needles} in\n{stderr}"
    assert tree_hashes(files["dir"], MODEL) == before, f"{case}: an input changed"
    # Nothing new is left where outputs go (no partial file, temporary or probe file).
    assert set(os.listdir(files["out"])) <= out_before | {"fr"}, case


def test_a_named_pipe_given_as_text_is_read_once_its_writer_comes(files, tmp_path):
    """`prepare-tokens --text FIFO` waits for the FIFO's writer, as `cat` does (until 2026-12-06 a
    FIFO without a writer yet was read as empty at once, refused as holding no text, and the writer
    started next blocked for ever); a writer that closes it without writing gives no text."""
    fifo = tmp_path / "text.fifo"
    os.mkfifo(fifo)
    for text, status in ((files["text"].read_text(), 0), ("", 1)):
        out = tmp_path / f"tokens-{status}.parquet"
        stage = subprocess.Popen(
            [BIN / "prepare-tokens", "--model", MODEL, "--text", fifo, "--windows", "1",
             "--seq-len", "4", "--out", out],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
        time.sleep(1.5)
        assert stage.poll() is None, "read the FIFO without waiting for its writer"
        with open(fifo, "w") as writer:  # opens at once: the stage holds the FIFO open to read
            writer.write(text)
        _, stderr = stage.communicate(timeout=120)
        stderr = stderr.decode(errors="replace")
        assert stage.returncode == status, stderr
        assert "text.fifo: a pipe nothing has been written to yet; waiting for its writer" in stderr
        assert out.is_file() == (status == 0)
        assert status == 0 or "holds no text" in stderr, stderr


def test_non_utf8_paths_work_and_are_recorded_lossily(files, tmp_path):
    """A folder whose name is not UTF-8 is an ordinary place to read and write; the command
    line in the provenance records it with U+FFFD."""
    folder = os.fsencode(tmp_path) + b"/run-\xff"
    os.mkdir(folder)
    masks = folder + b"/masks.parquet"
    run("sample-masks", "--num-blocks", "6", "--anchors", "--out", masks)
    with open(masks, "rb") as handle:
        metadata = pq.read_metadata(handle).metadata
    args = json.loads(metadata[b"layerprune.args"])
    assert any("run-\ufffd/masks.parquet" in a for a in args), args
    shown = run("inspect", masks)
    assert b"masks table, 7 rows" in shown.stdout, shown.stdout


@pytest.mark.parametrize("dictionary", [True, False])
def test_a_table_of_no_rows_written_by_pyarrow_is_read(files, tmp_path, dictionary):
    """pyarrow writes a table of no rows with column chunks that have no data page (their data
    page offset 0): a valid file, which the structural check before decoding must accept."""
    masks = tmp_path / "masks.parquet"
    run("sample-masks", "--num-blocks", "6", "--anchors", "--out", masks)
    table = pq.read_table(masks)
    empty = tmp_path / "empty.parquet"
    pq.write_table(table.slice(0, 0).replace_schema_metadata(table.schema.metadata), empty,
                   use_dictionary=dictionary)
    shown = run("inspect", empty)
    assert b"masks table, 0 rows" in shown.stdout, shown.stdout


def rows(path):
    table = pq.read_table(path).to_pydict()
    return [(tuple(k), n) for k, n in zip(table["kept"], table["nll"])]


def test_evaluate_killed_at_any_point_resumes_to_the_uninterrupted_table(tmp_path):
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "ember", "quiet"]
    text = tmp_path / "text.txt"
    text.write_text(" ".join(words[(i * i + 3 * i) % len(words)] for i in range(20000)))
    tokens, masks = tmp_path / "tokens.parquet", tmp_path / "masks.parquet"
    run("prepare-tokens", "--model", MODEL, "--text", text, "--windows", "12", "--seq-len",
        "128", "--out", tokens)
    run("sample-masks", "--num-blocks", "6", "--enumerate", "--out", masks)
    common = ["--model", MODEL, "--tokens", tokens, "--masks", masks, "--chunk", "2",
              "--no-prefix-reuse", "--threads", "1", "--quiet"]
    whole = tmp_path / "whole.parquet"
    started = time.monotonic()
    run("evaluate", *common, "--out", whole)
    full_seconds = time.monotonic() - started

    out_dir = tmp_path / "killed"
    out_dir.mkdir()
    out = out_dir / "evaluations.parquet"
    argv = [str(BIN / "evaluate")] + [str(a) for a in common] + ["--out", str(out)]
    kills = 0
    checkpointed = []  # the rows of each checkpoint a kill left
    # Kill before the first checkpoint, then at points spread over the run.
    for fraction in [0.05, 0.3, 0.5, 0.7]:
        process = subprocess.Popen(argv, env=env(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(full_seconds * fraction)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        if out.exists():
            partial = rows(out)
            # A checkpoint holds whole rows of the uninterrupted run, in its order, each once.
            assert partial == rows(whole)[: len(partial)] or set(partial) <= set(rows(whole))
            assert len({kept for kept, _ in partial}) == len(partial), partial
            checkpointed.append(len(partial))
    assert kills >= 2, "the run finished before it could be killed"
    # Else the run below starts afresh, and equals the uninterrupted one whether or not
    # resuming works.
    assert any(0 < n < 64 for n in checkpointed), f"no kill left a checkpoint: {checkpointed}"
    stale = [p.name for p in out_dir.iterdir() if ".tmp-" in p.name]
    print(f"{kills} kills; checkpoints of {checkpointed} rows; temporary files left by them: {stale}")
    # What a kill in the middle of a checkpoint write leaves (a kill rarely lands there).
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out_dir / f".{out.name}.tmp-{dead.pid}-0").write_bytes(b"half a table")
    run("evaluate", *argv[1:])
    assert rows(out) == rows(whole)
    assert pq.read_metadata(out).num_rows == 64
    left = [p.name for p in out_dir.iterdir() if p.name != out.name]
    assert left == [], f"left behind: {left}"


def test_a_file_size_limit_is_a_clear_error_not_a_silent_kill(tmp_path):
    """Under `ulimit -f` a write past the limit sends SIGXFSZ, whose default kills: every stage
    died of it with exit 153, no message, and its temporary and lock files left (fs audit). The
    stages ignore it, so the write fails with EFBIG, reported naming the file, and nothing is
    left beside the output. (subprocess gives the child SIGXFSZ's default back, which Python
    itself ignores.)"""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    out = tmp_path / "masks.parquet"
    argv = [str(BIN / "sample-masks"), "--num-blocks", "10", "--enumerate", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, env=env(), timeout=120, preexec_fn=limit,
                          restore_signals=True)
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 1, (done.returncode, stderr)
    assert "masks.parquet" in stderr and "File too large" in stderr, stderr
    assert [p.name for p in tmp_path.iterdir()] == [], "left beside the output"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to leave a lock file of another "
                    "user and run the stage as user nobody (65534)")
def test_a_lock_file_of_another_user_is_taken_over():
    """A killed run of another user (a `sudo` run, a teammate's) leaves its empty lock file
    `.NAME.lock`, which this run cannot open for writing: it is opened for reading (`flock`
    needs no more) and taken over as any killed run's, where it blocked the output with
    "Permission denied" (fs audit). One this run cannot even read is refused, saying whose it
    is and to remove it."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="lock-of-another-user-", dir="/tmp"))
    try:
        os.chown(folder, 65534, 65534)
        lock = folder / ".out.parquet.lock"
        lock.write_bytes(b"")  # root's, 0644: what a killed `sudo` run leaves

        def as_nobody():
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)

        argv = [str(BIN / "sample-masks"), "--num-blocks", "6", "--anchors", "--out",
                str(folder / "out.parquet")]
        done = subprocess.run(argv, capture_output=True, env=env(), timeout=120,
                              preexec_fn=as_nobody)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert (folder / "out.parquet").stat().st_uid == 65534
        # Released: removed (the folder is nobody's), nothing else left.
        assert sorted(p.name for p in folder.iterdir()) == ["out.parquet"]

        lock.write_bytes(b"")
        lock.chmod(0o600)
        done = subprocess.run(argv, capture_output=True, env=env(), timeout=120,
                              preexec_fn=as_nobody)
        stderr = done.stderr.decode(errors="replace")
        assert done.returncode == 1, stderr
        assert "a lock file of user root (uid 0)" in stderr and f"rm {lock}" in stderr, stderr
        assert lock.exists()
    finally:
        shutil.rmtree(folder)
