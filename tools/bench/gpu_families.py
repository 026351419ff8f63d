"""Fused attention on the device for every architecture that has it, in one short run.

The exporter writes fused attention (`--attention-kernel fused`: one ONNX Runtime
GroupQueryAttention node a block) for fifteen architectures, with the node's soft-capping
(Gemma 2), interleaved rotary (Cohere) and partial rotary (Phi-2, StableLM, GPT-NeoX); its tests
run the node on ONNX Runtime's CPU provider only, and the CUDA provider, the one the fused kernel
is for, has its own code for each of those attributes. So for each architecture's tiny
random-weight fixture (tools/export/make_fixture.py, `fused_fixtures`), with the heads the
exporter's fused tests use (2 query heads and 1 key-value head of FUSED_HEAD_SIZE, 64: a size
flash attention takes, which the fixtures' 16 is not; the partial-rotary ones rotate 16 or 32):

1. export it standard in float32 and fused in `--dtype` (bf16 for a GPU; fp16 on the CPU, whose
   provider has no bf16 node), each with the exporter's own check; the fused export also where
   export_layered.FUSED_KNOWN_FAILURES lists it (bf16 Gemma, Gemma 2, Gemma 3, OLMo 2), which the
   exporter otherwise refuses: this run is what would find them fixed (`allow_known_failures`);
2. make 4 x 16 tokens (`prepare-tokens`) and run `evaluate` on the full model and with block 1
   skipped: the standard float32 folder on the CPU, the fused folder on `--device`;
3. record the largest |mean NLL difference| of the two masks, and whether it is within the
   export check's tolerance for the dtype (export_layered.DEFAULT_TOLERANCE), or the error;
4. where `evaluate` failed on the fused folder, export the fixture standard in `--dtype` too and
   evaluate it on `--device`, the same tokens and masks (`standard_on_device`: "agrees 1.2e-03",
   "disagrees ...", or the error; null where not tried): whether the failure is the fused
   kernel's or the dtype's on that device; and the fused folder again with
   `--graph-optimization basic` (`fused_graph_optimization_basic`, the same verdicts): whether
   one of ONNX Runtime's fusions into its own kernels, which that level leaves out, is what the
   device refused (the suspect: export_layered.FUSED_KNOWN_FAILURES);
5. where `evaluate` ran the fused folder, export it fused again with its query, key and value
   projections packed (`--qkv-projection packed`: the node's packed query, which ONNX Runtime's
   CUDA provider computes with its own code; without the export check, which this comparison
   replaces) and evaluate that on the device too (`packed_on_device`: the same verdicts, "not
   packed: ..." where the exporter refuses the architecture, null where not tried).

An error keeps ONNX Runtime's lines that name the node and operator (their start) and the
message's end, at most ERROR_CHARS characters; a stage running past --stage-timeout (60 s) is an
error of its own row. Writes a JSON (one row a fixture) and a Markdown
table after every fixture, so a run cut short keeps what it measured; exits 1 when a fixture
failed or disagreed (a known failure included: `known_failure` says it was listed), or its packed
export did. The GPU recipe's last call
(tools/bench/gpu_device_run.sh) runs it after the benchmark; `make test-bench` runs it on the CPU.

Usage: python tools/bench/gpu_families.py --bin target/debug --device cuda --dtype bf16 \\
         --work /tmp/families --json families.json --markdown families.md
"""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tools" / "export"))
sys.path.insert(0, str(HERE))

import export_layered  # noqa: E402
import report  # noqa: E402
import make_fixture  # noqa: E402

LENGTH = 16
TEXT = "The quick brown fox jumps over the lazy dog, and the dog sleeps on in the sun. " * 20
# How much of an error a row keeps. ONNX Runtime names the failing node and operator at the start
# of its message, and the reason at its end, with paths and type lists between: the 600 last
# characters of run 3 (docs/results/gpu-run-3.md) lost the node.
ERROR_CHARS = 1500
# ONNX Runtime's ways of naming a node ("... node with name '...'", "Node (...) Op (...)",
# "... node. Name:'...' Status Message: ..."), and failing those any line that says "node".
NAMING = re.compile(r"node with name|Name:|Node \(")
MENTIONING = re.compile(r"\bnode\b", re.IGNORECASE)


# How the exporter begins its refusal of a block whose projections it cannot pack.
PACK_REFUSAL = "--qkv-projection packed: block "


class StageFailed(RuntimeError):
    pass


def error_excerpt(text: str, limit: int = ERROR_CHARS) -> str:
    """`text` on one line, at most about `limit` characters: whole when it fits, else the first two
    lines before its end that name a node (NAMING, else MENTIONING), each from a little before the
    name, then the end."""
    text = text.strip()
    if len(text) <= limit:
        return " ".join(text.split())
    cut = len(text) - limit // 2
    for pattern in (NAMING, MENTIONING):
        named, offset = [], 0
        for line in text.splitlines(keepends=True):
            found = pattern.search(line)
            if found and offset + found.start() < cut and len(named) < 2:
                start = max(0, found.start() - 150)
                named.append(("..." if start else "") + " ".join(line[start:start + limit // 4].split()))
            offset += len(line)
        if named:
            break
    return " ... ".join(named + [" ".join(text[cut:].split())])


# Seconds one stage may take (--stage-timeout): a tiny fixture's `evaluate` takes a second or two,
# so one that hangs on the device (a kernel, a capture) fails its own row rather than holding the
# rest of the call's F seconds.
STAGE_TIMEOUT = 60.0


def stage(bin_dir: Path, name: str, *args) -> None:
    try:
        done = subprocess.run([str(bin_dir / name), *map(str, args)], capture_output=True, text=True,
                              timeout=STAGE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise StageFailed(f"{name} took over {STAGE_TIMEOUT:g} s (--stage-timeout)") from None
    if done.returncode != 0:
        raise StageFailed(f"{name} exited {done.returncode}: {error_excerpt(done.stderr or done.stdout)}")


def nll_by_mask(path: Path) -> dict:
    import pyarrow.parquet as pq

    return {row["mask_id"]: row["nll"] for row in pq.read_table(path).to_pylist()}


def check_fixture(args, arch: str) -> dict:
    """One fixture: both exports, both evaluations, the difference; where the fused folder fails
    on the device, the standard export in the same dtype there (`standard_on_device`)."""
    work = Path(args.work) / arch
    hf = make_fixture.build_arch_folder(work / "hf", arch, seed=args.seed, head_size=make_fixture.FUSED_HEAD_SIZE)
    check = ["--check-length", str(LENGTH), "--check-sequences", "2"]
    export_layered.main(["--model", str(hf), "--out", str(work / "standard"), "--attention-kernel", "standard",
                         *check])
    # Named, and allowed where it is known to fail on CUDA: this is the run that measures it.
    _, manifest = export_layered.main(["--model", str(hf), "--out", str(work / "fused"), "--dtype", args.dtype,
                                       "--attention-kernel", "fused", *check], allow_known_failures=True)
    (work / "text.txt").write_text(TEXT)
    tokens = work / "tokens.parquet"
    stage(args.bin, "prepare-tokens", "--model", work / "standard", "--text", work / "text.txt", "--windows", 4,
          "--seq-len", LENGTH, "--bos", "off", "--out", tokens)
    blocks = manifest["num_blocks"]
    masks = ["1" * blocks, "".join("0" if i == 1 else "1" for i in range(blocks))]
    mask_args = [a for mask in masks for a in ("--mask", mask)]
    stage(args.bin, "evaluate", "--model", work / "standard", "--tokens", tokens, *mask_args, "--device", "cpu",
          "--out", work / "standard.parquet")
    expected = nll_by_mask(work / "standard.parquet")
    tolerance = export_layered.DEFAULT_TOLERANCE[args.dtype]
    row = {"fixture": arch, "model_type": manifest["architecture"], "dtype": args.dtype, "device": args.device,
           "max_nll_diff": None, "tolerance": tolerance, "agrees": False, "evaluate_seconds": None, "error": None,
           "known_failure": export_layered.fused_known_to_fail(manifest["architecture"], args.dtype),
           "standard_on_device": None, "fused_graph_optimization_basic": None, "packed_on_device": None}
    started = time.monotonic()
    try:
        stage(args.bin, "evaluate", "--model", work / "fused", "--tokens", tokens, *mask_args, "--device",
              args.device, "--out", work / "fused.parquet")
    except StageFailed as error:
        row["error"] = str(error)
        row["standard_on_device"] = standard_on_device(args, hf, work, check, tokens, mask_args, expected)
        row["fused_graph_optimization_basic"] = on_device(
            args, work / "fused", tokens, mask_args, expected, "fused-basic", ["--graph-optimization", "basic"])
        return row
    seconds = time.monotonic() - started
    diff = max_nll_diff(expected, nll_by_mask(work / "fused.parquet"))
    row.update(max_nll_diff=diff, agrees=diff < tolerance, evaluate_seconds=round(seconds, 3))
    row["packed_on_device"] = packed_on_device(args, hf, work, tokens, mask_args, expected)
    return row


def packed_on_device(args, hf: Path, work: Path, tokens: Path, mask_args: list, expected: dict) -> str:
    """Whether the fixture's fused export with q/k/v packed agrees on the device (`on_device`'s
    verdicts), or "not packed: <the exporter's reason>" where it refuses the architecture."""
    folder = work / "fused-packed"
    try:
        export_layered.main(["--model", str(hf), "--out", str(folder), "--dtype", args.dtype,
                             "--attention-kernel", "fused", "--qkv-projection", "packed", "--no-check", "--force"],
                            allow_known_failures=True)
    except (Exception, SystemExit) as error:
        said = str(error).removeprefix("export: ").removeprefix("error: ")
        # The exporter's refusal of an architecture it cannot pack (docs/model-format.md; which
        # ones it packs, the exporter's tests pin); any other failure is an error.
        if isinstance(error, SystemExit) and said.startswith(PACK_REFUSAL):
            return "not packed: " + error_excerpt(said, 300)
        return "error: " + (error_excerpt(said) or type(error).__name__)
    return on_device(args, folder, tokens, mask_args, expected, "fused-packed", [])


def max_nll_diff(expected: dict, measured: dict) -> float:
    return max(abs(measured[mask] - nll) for mask, nll in expected.items())


def standard_on_device(args, hf: Path, work: Path, check: list, tokens: Path, mask_args: list,
                       expected: dict) -> str:
    """Whether the fixture's standard export in `--dtype` runs on the device (after its fused one
    failed there): "agrees <max NLL diff>", "disagrees <diff> (> tolerance)" against the standard
    float32 export on the CPU, or "error: ..." (the export's or evaluate's)."""
    folder = work / f"standard-{args.dtype}"
    try:
        export_layered.main(["--model", str(hf), "--out", str(folder), "--dtype", args.dtype,
                             "--attention-kernel", "standard", *check])
    except (Exception, SystemExit) as error:  # the exporter exits with its message on a refusal
        return "error: " + (error_excerpt(str(error)) or type(error).__name__)
    return on_device(args, folder, tokens, mask_args, expected, f"standard-{args.dtype}", [])


def on_device(args, folder: Path, tokens: Path, mask_args: list, expected: dict, name: str, flags: list) -> str:
    """`evaluate` of `folder` on the device with `flags`, into `name`.parquet beside it: "agrees <max
    NLL diff>", "disagrees <diff> (> tolerance)" against the standard float32 export on the CPU
    (`expected`), or "error: ..."."""
    out = folder.parent / f"{name}.parquet"
    try:
        stage(args.bin, "evaluate", "--model", folder, "--tokens", tokens, *mask_args, "--device", args.device,
              *flags, "--out", out)
    except StageFailed as error:
        return "error: " + (error_excerpt(str(error)) or type(error).__name__)
    diff = max_nll_diff(expected, nll_by_mask(out))
    tolerance = export_layered.DEFAULT_TOLERANCE[args.dtype]
    return f"agrees {diff:.1e}" if diff < tolerance else f"disagrees {diff:.1e} (> {tolerance:g})"


def markdown(rows: list, args) -> str:
    lines = [f"Fused attention (`--attention-kernel fused`, {args.dtype}) on `{args.device}` against the "
             "standard float32 export on the CPU: `evaluate`'s mean NLL, full model and block 1 skipped, "
             f"4 x {LENGTH} tokens of a tiny random-weight fixture with heads of {make_fixture.FUSED_HEAD_SIZE} "
             "(tools/bench/gpu_families.py).", "",
             "Where the fused folder failed on the device, the fixture's standard export in the same dtype "
             "was run there too (its max NLL diff against the same float32 export). Known failure: listed in "
             "export_layered.FUSED_KNOWN_FAILURES (the exporter refuses it unless asked, as here). And the fused "
             "folder again with `--graph-optimization basic` (none of ONNX Runtime's fusions into its own "
             "kernels). Where the fused folder ran: the fused export with q/k/v packed "
             "(`--qkv-projection packed`) on the device.", "",
             f"| fixture | model_type | max NLL diff | within the export check's tolerance | error "
             f"| standard {args.dtype} export on `{args.device}` | fused, `--graph-optimization basic` "
             f"| fused, q/k/v packed |",
             "|---|---|---:|---|---|---|---|---|"]
    for row in rows:
        diff = "" if row["max_nll_diff"] is None else f"{row['max_nll_diff']:.2e}"
        verdict = "" if row["error"] else ("yes" if row["agrees"] else f"no (> {row['tolerance']:g})")
        if row.get("known_failure"):
            verdict = f"{verdict} (known failure)".strip()
        lines.append(f"| {row['fixture']} | {row['model_type'] or ''} | {diff} | {verdict} | {cell(row['error'])} "
                     f"| {cell(row.get('standard_on_device'))} | {cell(row.get('fused_graph_optimization_basic'))} "
                     f"| {cell(row.get('packed_on_device'))} |")
    return "\n".join(lines) + "\n"


def cell(text) -> str:
    """A Markdown table cell: one line, its bars escaped."""
    return " ".join((text or "").split()).replace("|", "\\|")


def write(args, rows: list) -> None:
    for path, text in ((args.json, json.dumps(rows, indent=1)), (args.markdown, markdown(rows, args))):
        if path:
            report.write_atomically(path, text)


def main(argv=None) -> int:
    global STAGE_TIMEOUT  # stage()'s limit, --stage-timeout
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", type=Path, default=ROOT / "target" / "debug",
                        help="the folder with prepare-tokens and evaluate")
    parser.add_argument("--device", default="cuda", help="where evaluate runs the fused folders (cuda, cpu)")
    parser.add_argument("--dtype", choices=["fp16", "bf16"], default="bf16",
                        help="the fused exports' dtype (the CPU provider runs fp16 only)")
    parser.add_argument("--fixtures", default="",
                        help="comma-separated fixtures (default: every architecture with fused attention, and "
                             "Llama 3.1's rope)")
    parser.add_argument("--work", default=str(ROOT / "build" / "gpu-families"))
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--deadline-seconds", type=float, default=0.0,
                        help="start no fixture after this many seconds (0: no limit)")
    parser.add_argument("--stage-timeout", type=float, default=STAGE_TIMEOUT,
                        help="seconds one stage (prepare-tokens, evaluate) may take before it counts as failed")
    args = parser.parse_args(argv)
    STAGE_TIMEOUT = args.stage_timeout
    if args.device == "cpu" and args.dtype == "bf16":
        parser.error("the CPU provider has no bf16 GroupQueryAttention: --dtype fp16 on the CPU")
    fixtures = ([name for name in args.fixtures.split(",") if name] if args.fixtures
                else make_fixture.fused_fixtures())
    started, rows = time.monotonic(), []
    for arch in fixtures:
        if args.deadline_seconds and time.monotonic() - started > args.deadline_seconds:
            print(f"gpu_families: deadline reached, {arch} and later fixtures not run", flush=True)
            break
        try:
            row = check_fixture(args, arch)
        except (Exception, SystemExit) as error:  # the exporter exits with its message on a refusal
            row = {"fixture": arch, "model_type": None, "dtype": args.dtype, "device": args.device,
                   "max_nll_diff": None, "tolerance": None, "agrees": False, "evaluate_seconds": None,
                   "error": error_excerpt(str(error)) or type(error).__name__, "known_failure": None,
                   "standard_on_device": None, "fused_graph_optimization_basic": None, "packed_on_device": None}
        rows.append(row)
        said = f"error {row['error']}" if row["error"] else f"max NLL diff {row['max_nll_diff']:.2e}"
        if row["standard_on_device"]:
            said += f"; standard {args.dtype} export on {args.device}: {row['standard_on_device']}"
        if row["fused_graph_optimization_basic"]:
            said += f"; fused with --graph-optimization basic: {row['fused_graph_optimization_basic']}"
        if row["packed_on_device"]:
            said += f"; q/k/v packed: {row['packed_on_device']}"
        if row["known_failure"] and row["agrees"]:
            said += " (listed in export_layered.FUSED_KNOWN_FAILURES: it no longer fails here)"
        print(f"gpu_families: {arch}: {said}", flush=True)
        write(args, rows)
    packed_failed = any((row["packed_on_device"] or "").startswith(("error", "disagrees")) for row in rows)
    return 0 if rows and all(row["agrees"] for row in rows) and not packed_failed else 1


if __name__ == "__main__":
    sys.exit(main())
