"""Print (and write as markdown) a pipeline run's results: for each method and number of
removed blocks, the perplexity of the pruned model on the evaluation text and the number of
LLM evaluations the method used; then the pruned model the demo wrote.

Usage: python summarize.py --run build/runs/smollm2-135m --methods published shapley ... [--k-pruned 6]
"""

import argparse
from pathlib import Path

import pyarrow.parquet as pq


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--methods", nargs="+", required=True)
    parser.add_argument("--k-pruned", type=int)
    parser.add_argument("--out", type=Path, help="markdown file to write (default RUN/results.md)")
    args = parser.parse_args()

    full = pq.read_table(args.run / "full-eval.parquet").to_pylist()[0]
    plans = {}
    for method in args.methods:
        for row in pq.read_table(args.run / "plans" / f"{method}.parquet").to_pylist():
            plans[(method, row["k"])] = row
    ks = sorted({k for _, k in plans})
    lines = [f"Perplexity on the evaluation text ({full['tokens_scored']} tokens); full model: "
             f"{full['ppl']:.2f}. Cell: PPL (LLM evaluations used).", "",
             "| method | " + " | ".join(f"k = {k}" for k in ks) + " |",
             "|---|" + "---:|" * len(ks)]
    for method in args.methods:
        cells = []
        for k in ks:
            row = plans.get((method, k))
            cells.append("-" if row is None or row["measured_ppl"] is None
                         else f"{row['measured_ppl']:.2f} ({row['llm_evaluations']})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Blocks removed:")
    for method in args.methods:
        removed = "; ".join(f"k={k}: {sorted(plans[(method, k)]['removed_blocks'])}"
                            for k in ks if (method, k) in plans)
        lines.append(f"- {method}: {removed}")
    if args.k_pruned is not None:
        pruned_eval = args.run / f"pruned-k{args.k_pruned}-eval.parquet"
        plan = pq.read_table(args.run / f"pruned-k{args.k_pruned}-plan.parquet").to_pylist()[0]
        after = pq.read_table(pruned_eval).to_pylist()[0]
        lines += ["", f"Pruned model written to {args.run / f'pruned-k{args.k_pruned}'}: "
                  f"blocks {sorted(plan['removed_blocks'])} removed ({plan['method']}); "
                  f"perplexity {full['ppl']:.2f} before, {after['ppl']:.2f} after "
                  f"(the pruned folder evaluated on its own)."]
    text = "\n".join(lines) + "\n"
    out = args.out or args.run / "results.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
