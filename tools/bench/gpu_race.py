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

1. `apply-prune --method adaptive --race-se 3 --k K` and `apply-prune --method adaptive --k K`
   (unraced: every candidate on every window) on the same model and tokens, on `--device`;
2. for each, the wall time less the time its log says the model's graphs took to open, and the
   LLM evaluations its plan table counts;
3. writes a JSON and a Markdown table: seconds per counted LLM evaluation of each, and the ratio
   raced / unraced (about 1: a race's evaluations cost what whole ones do, so its savings in
   evaluations are savings in time; above 1: each costs more, by that factor).

The GPU recipe's last call (tools/bench/gpu_device_run.sh) runs it on a shape the benchmark
exported (the fused folder where there is one); tools/bench/tests run it on the CPU.

Usage: python tools/bench/gpu_race.py --bin build/gpu/bin --model M --tokens T --device cuda \\
         --k 6 --work /tmp/race --json race.json --markdown race.md
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
METHODS = (("adaptive, raced (--race-se 3)", ["--race-se", "3"]), ("adaptive, unraced", []))


def run_method(args, name: str, flags: list, out: Path) -> dict:
    """One `apply-prune` run: its seconds (wall, opening, the rest), evaluations and plan."""
    import pyarrow.parquet as pq

    command = [str(args.bin / "apply-prune"), "--method", "adaptive", *flags, "--k", str(args.k), "--model",
               str(args.model), "--tokens", str(args.tokens), "--device", args.device, "--out", str(out)]
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        return {"method": name, "error": f"apply-prune exited {done.returncode}: {done.stderr.strip()[-1500:]}"}
    opened = [float(m.group(1)) for m in OPENED.finditer(done.stderr + done.stdout)]
    (plan,) = [row for row in pq.read_table(out).to_pylist() if row["k"] == args.k]
    evaluations = plan["llm_evaluations"]
    measuring = wall - sum(opened)
    return {"method": name, "error": None, "wall_seconds": round(wall, 3), "open_seconds": round(sum(opened), 3),
            "llm_evaluations": evaluations, "seconds_per_evaluation": measuring / evaluations,
            "removed_blocks": plan["removed_blocks"], "measured_nll": plan["measured_nll"]}


def markdown(rows: list, args, ratio) -> str:
    lines = [f"`apply-prune --method adaptive --k {args.k}` raced over the calibration windows and not, on "
             f"`{args.device}` ({args.model.name}, {args.tokens.name}); seconds per LLM evaluation as the plan "
             "table counts them (a mask measured on w of W windows counts w / W), the model's opening left out "
             "(tools/bench/gpu_race.py).", "",
             "| method | LLM evaluations | seconds (less opening) | seconds per evaluation | removed blocks | error |",
             "|---|---:|---:|---:|---|---|"]
    for row in rows:
        if row["error"]:
            lines.append(f"| {row['method']} | | | | | {' '.join(row['error'].split())} |")
            continue
        lines.append(f"| {row['method']} | {row['llm_evaluations']} | "
                     f"{row['wall_seconds'] - row['open_seconds']:.2f} | {row['seconds_per_evaluation']:.4f} | "
                     f"{','.join(map(str, row['removed_blocks']))} | |")
    if ratio is not None:
        lines += ["", f"Raced / unraced seconds per evaluation: {ratio:.2f}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", type=Path, default=ROOT / "target" / "debug", help="the folder with apply-prune")
    parser.add_argument("--model", type=Path, required=True, help="layered model folder")
    parser.add_argument("--tokens", type=Path, required=True, help="calibration token table (prepare-tokens)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--k", type=int, default=6, help="blocks to remove")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "gpu-race")
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    parser.add_argument("--timeout", type=float, default=300, help="seconds one apply-prune may take")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    rows, ratio = [], None
    for index, (name, flags) in enumerate(METHODS):
        try:
            row = run_method(args, name, flags, args.work / f"plans-{index}.parquet")
        except subprocess.TimeoutExpired:
            row = {"method": name, "error": f"apply-prune took over {args.timeout:g} s"}
        rows.append(row)
        said = row["error"] or (f"{row['llm_evaluations']} evaluations, {row['seconds_per_evaluation']:.4f} s each "
                                f"(opening {row['open_seconds']:.2f} s left out)")
        print(f"gpu_race: {name}: {said}", flush=True)
        if len(rows) == len(METHODS) and not any(row["error"] for row in rows):
            ratio = rows[0]["seconds_per_evaluation"] / rows[1]["seconds_per_evaluation"]
            print(f"gpu_race: raced / unraced seconds per evaluation: {ratio:.2f}", flush=True)
        # After every run: a call cut short keeps the first.
        record = {"device": args.device, "model": str(args.model), "k": args.k, "rows": rows,
                  "raced_over_unraced_seconds_per_evaluation": ratio}
        for path, text in ((args.json, json.dumps(record, indent=1)), (args.markdown, markdown(rows, args, ratio))):
            if path:
                Path(path).write_text(text)
    return 0 if ratio is not None else 1


if __name__ == "__main__":
    sys.exit(main())
