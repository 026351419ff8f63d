"""Whether a race's savings in LLM evaluations are savings in seconds on a device, timed inside
`apply-prune` itself.

The recommended method, adaptive removal raced over the calibration windows (`apply-prune
--method adaptive --race-se 3`; crates/selection/src/race.rs), measures its candidates a few
windows at a time and counts a mask measured on w of W windows as w / W of an LLM evaluation.
On the CPU a call's time follows its tokens, so that count is its cost. On a GPU a call on 3 of
10 windows may cost about what a call on all 10 does (GPU run 3: one mask at a time a race's
round ran 0.21x-0.69x the whole masks' rate per whole mask), so since run 3 the evaluator fills
such a call with as many masks as fit one mask's full window batch (`EvalOptions::
fill_small_batches`, CUDA only). gpu_bench.py measured rounds with `evaluate`; this runs the
method itself:

1. one `evaluate` of the full model first, discarded: the first process on a device pays for
   loading its libraries;
2. `apply-prune --method adaptive --k K` raced (`--race-se 3`) and unraced (every candidate on
   every window), each with two budgets, in the order raced, unraced, unraced, raced (so that a
   drift in the device's pace falls on both alike);
3. each method's seconds per LLM evaluation as the slope between its two runs: the difference in
   wall time (less the opening its log reports) over the difference in the evaluations its plan
   table counts. A slope leaves out what a run costs whatever its budget (the process, the
   tokens, the full model's and the chosen plan's measurements, the table), which at a GPU's
   pace can be as long as the evaluations themselves;
4. writes a JSON and a Markdown table after every run: the runs, each method's slope, and the
   ratio raced / unraced (about 1: a race's evaluations cost what whole ones do, so its savings
   in evaluations are savings in time; above 1: each costs more, by that factor).

A model whose blocks are one block's weights repeated (gpu_bench.py's `--replicate-blocks`, for
shapes above 2 GiB) is refused: removing any block gives the same model there, so a race has
nothing to drop and would not time what it is for.

The GPU recipe's last call (tools/bench/gpu_device_run.sh) runs it on a shape the benchmark
exported with distinct blocks; tools/bench/tests run it on the CPU.

Usage: python tools/bench/gpu_race.py --bin build/gpu/bin --model M --tokens T --device cuda \\
         --k 6 --work /tmp/race --json race.json --markdown race.md
       python tools/bench/gpu_race.py --bench-shape /tmp/bench-gpu/smollm2-135m-fp32 ...  (a benchmarked shape)
"""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What `apply-prune` logs once the model is open (crates/runtime/src/model.rs).
OPENED = re.compile(r"opened the \d+ graphs of .* in ([0-9.]+) s")
RACED, UNRACED = "adaptive, raced (--race-se 3)", "adaptive, unraced"
FLAGS = {RACED: ["--race-se", "3"], UNRACED: []}


sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402


class RunFailed(RuntimeError):
    pass


def budgets(args, num_blocks: int) -> list:
    """The two budgets (LLM evaluations): --budgets, or 2 and 4 evaluations a block."""
    if args.budgets:
        values = [int(v) for v in args.budgets.split(",")]
        if len(values) != 2 or values[0] >= values[1]:
            raise SystemExit("gpu_race: --budgets takes two budgets, the smaller first (e.g. 60,120)")
        return values
    return [2 * num_blocks, 4 * num_blocks]


def run_method(args, method: str, budget: int, out: Path) -> dict:
    """One `apply-prune` run: its seconds (wall, opening, measuring) and the evaluations counted."""
    import pyarrow.parquet as pq

    command = [str(args.bin / "apply-prune"), "--method", "adaptive", *FLAGS[method], "--k", str(args.k),
               "--budget", str(budget), "--model", str(args.model), "--tokens", str(args.tokens), "--device",
               args.device, "--out", str(out)]
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"apply-prune took over {args.timeout:g} s") from None
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RunFailed(f"apply-prune exited {done.returncode}: {' '.join(done.stderr.split())[-1500:]}")
    opened = [float(m.group(1)) for m in OPENED.finditer(done.stderr + done.stdout)]
    if not opened:
        raise RunFailed("apply-prune's log did not say how long the model took to open ('opened the N graphs of "
                        "... in S s'): the seconds measuring could not be told apart")
    plans = [row for row in pq.read_table(out).to_pylist() if row["k"] == args.k]
    if len(plans) != 1 or not plans[0]["llm_evaluations"]:
        raise RunFailed(f"{out}: expected one plan of k = {args.k} with its LLM evaluations, found {plans}")
    return {"method": method, "budget": budget, "error": None, "wall_seconds": round(wall, 3),
            "open_seconds": round(sum(opened), 3), "measuring_seconds": wall - sum(opened),
            "llm_evaluations": plans[0]["llm_evaluations"], "removed_blocks": plans[0]["removed_blocks"]}


def slopes(runs: list) -> dict:
    """Each method's seconds per evaluation between its two runs, where both ran and differ."""
    found = {}
    for method in (RACED, UNRACED):
        done = sorted((r for r in runs if r["method"] == method and not r["error"]), key=lambda r: r["budget"])
        if len(done) == 2 and done[1]["llm_evaluations"] > done[0]["llm_evaluations"]:
            found[method] = ((done[1]["measuring_seconds"] - done[0]["measuring_seconds"])
                             / (done[1]["llm_evaluations"] - done[0]["llm_evaluations"]))
    return found


def markdown(runs: list, per_evaluation: dict, ratio, args) -> str:
    lines = [f"`apply-prune --method adaptive --k {args.k}` raced over the calibration windows and not, two "
             f"budgets each, on `{args.device}` ({args.model.name}, {args.tokens.name}); LLM evaluations as the "
             "plan table counts them (a mask measured on w of W windows counts w / W); seconds less the model's "
             "opening (tools/bench/gpu_race.py).", "",
             "| method | budget | LLM evaluations | seconds (less opening) | removed blocks | error |",
             "|---|---:|---:|---:|---|---|"]
    for run in runs:
        if run["error"]:
            lines.append(f"| {run['method']} | {run['budget']} | | | | {' '.join(run['error'].split())} |")
        else:
            lines.append(f"| {run['method']} | {run['budget']} | {run['llm_evaluations']} | "
                         f"{run['measuring_seconds']:.2f} | {','.join(map(str, run['removed_blocks']))} | |")
    lines.append("")
    for method, seconds in per_evaluation.items():
        lines.append(f"- {method}: {seconds:.4f} s per evaluation (the slope between its two budgets)")
    if ratio is not None:
        lines.append(f"- raced / unraced seconds per evaluation: {ratio:.2f}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", type=Path, default=ROOT / "target" / "debug",
                        help="the folder with apply-prune and evaluate")
    parser.add_argument("--model", type=Path, help="layered model folder")
    parser.add_argument("--tokens", type=Path, help="calibration token table (prepare-tokens)")
    parser.add_argument("--bench-shape", type=Path,
                        help="instead of --model and --tokens: a shape's folder of gpu_bench.py's --work, whose "
                             "fused export (model-attention-fused) or else standard one (model) is timed on its "
                             "tokens.parquet; where it has neither, says so and exits 0 (a run that did not reach "
                             "the shape)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--k", type=int, default=6, help="blocks to remove")
    parser.add_argument("--budgets", default="",
                        help="the two budgets in LLM evaluations, e.g. 60,120 (default: 2 and 4 a block)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "gpu-race")
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    parser.add_argument("--timeout", type=float, default=300, help="seconds one apply-prune may take")
    args = parser.parse_args(argv)
    if args.bench_shape:
        if args.model or args.tokens:
            parser.error("--bench-shape names the model and tokens: not with --model or --tokens")
        args.model = next((args.bench_shape / name for name in ("model-attention-fused", "model")
                           if (args.bench_shape / name / "manifest.json").is_file()), None)
        if args.model is None:
            print(f"gpu_race: no {args.bench_shape}/model: the benchmark did not export {args.bench_shape.name}; "
                  "race not timed", flush=True)
            return 0
        args.tokens = args.bench_shape / "tokens.parquet"
    elif not (args.model and args.tokens):
        parser.error("give --model and --tokens, or --bench-shape")
    manifest = json.loads((args.model / "manifest.json").read_text())
    if (manifest.get("source") or {}).get("replicated_block"):
        parser.error(f"{args.model}: its blocks are one block's weights repeated (source.replicated_block): "
                     "removing any gives the same model, so a race has nothing to drop; give a model with "
                     "distinct blocks")
    low, high = budgets(args, manifest["num_blocks"])
    args.work.mkdir(parents=True, exist_ok=True)
    full = "1" * manifest["num_blocks"]
    # Its exit status, or what stopped it: a warm-up past --timeout is no reason to lose the runs.
    try:
        warm_up_exit = subprocess.run([str(args.bin / "evaluate"), "--model", str(args.model), "--tokens",
                                       str(args.tokens), "--mask", full, "--device", args.device, "--out",
                                       str(args.work / "warm-up.parquet"), "--quiet"],
                                      capture_output=True, text=True, timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:
        warm_up_exit = f"took over {args.timeout:g} s"
    except OSError as error:
        warm_up_exit = f"could not start: {error}"
    (args.work / "warm-up.parquet").unlink(missing_ok=True)
    said = warm_up_exit if isinstance(warm_up_exit, str) else f"exited {warm_up_exit}"
    print(f"gpu_race: warm-up evaluate {said}", flush=True)
    runs, per_evaluation, ratio = [], {}, None
    for index, (method, budget) in enumerate([(RACED, low), (UNRACED, low), (UNRACED, high), (RACED, high)]):
        try:
            run = run_method(args, method, budget, args.work / f"plans-{index}.parquet")
            said = (f"{run['llm_evaluations']} evaluations in {run['measuring_seconds']:.2f} s "
                    f"(opening {run['open_seconds']:.2f} s left out)")
        except (RunFailed, OSError, KeyError, ValueError) as error:
            run = {"method": method, "budget": budget, "error": str(error)}
            said = str(error)
        runs.append(run)
        print(f"gpu_race: {method}, budget {budget}: {said}", flush=True)
        per_evaluation = slopes(runs)
        if len(per_evaluation) == 2:
            ratio = per_evaluation[RACED] / per_evaluation[UNRACED]
            print(f"gpu_race: raced / unraced seconds per evaluation: {ratio:.2f}", flush=True)
        # After every run: a call cut short keeps the runs it made.
        record = {"device": args.device, "model": str(args.model), "k": args.k, "budgets": [low, high],
                  "warm_up_exit": warm_up_exit, "runs": runs, "seconds_per_evaluation": per_evaluation,
                  "raced_over_unraced_seconds_per_evaluation": ratio}
        for path, text in ((args.json, json.dumps(record, indent=1)),
                           (args.markdown, markdown(runs, per_evaluation, ratio, args))):
            if path:
                report.write_atomically(path, text)
    return 0 if ratio is not None else 1


if __name__ == "__main__":
    sys.exit(main())
