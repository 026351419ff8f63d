"""Print (and write as markdown) a pipeline run's results: for each method and number of
removed blocks, the perplexity of the pruned model on the evaluation text and the number of
LLM evaluations the method used; then the pruned model the demo wrote.

Usage: python summarize.py --run build/runs/smollm2-135m --methods published shapley ... [--k-pruned 6]
"""

import argparse
from pathlib import Path

import pyarrow.parquet as pq


def write_plot(path: Path, methods, ks, plans, full_ppl):
    """Perplexity (log scale) against k, one line per method, as a dependency-free SVG."""
    import math

    width, height, left, right, top, bottom = 760, 460, 70, 230, 30, 50
    values = [plans[(m, k)]["measured_ppl"] for m in methods for k in ks
              if (m, k) in plans and plans[(m, k)]["measured_ppl"]] + [full_ppl]
    low, high = math.log10(min(values)), math.log10(max(values))
    high = max(high, low + 1e-9)
    xs = [0] + ks
    x = lambda k: left + (width - left - right) * (k - xs[0]) / (xs[-1] - xs[0])
    y = lambda v: top + (height - top - bottom) * (1 - (math.log10(v) - low) / (high - low))
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
              "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#aa3377"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{left}" y="18">Perplexity (log scale) against blocks removed</text>']
    for k in xs:
        parts.append(f'<text x="{x(k):.1f}" y="{height - bottom + 18}" text-anchor="middle">{k}</text>')
    for exponent in range(math.floor(low), math.ceil(high) + 1):
        for mantissa in (1, 2, 5):
            v = mantissa * 10 ** exponent
            if low <= math.log10(v) <= high:
                parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
                parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 12}" text-anchor="middle">blocks removed (k)</text>')
    for index, method in enumerate(methods):
        color = colors[index % len(colors)]
        points = [(0, full_ppl)] + [(k, plans[(method, k)]["measured_ppl"]) for k in ks
                                    if (method, k) in plans and plans[(method, k)]["measured_ppl"]]
        path_points = " ".join(f"{x(k):.1f},{y(v):.1f}" for k, v in points)
        parts.append(f'<polyline points="{path_points}" fill="none" stroke="{color}" stroke-width="2"/>')
        legend_y = top + 16 * index
        parts.append(f'<line x1="{width - right + 12}" x2="{width - right + 32}" y1="{legend_y}" y2="{legend_y}" stroke="{color}" stroke-width="2"/>')
        parts.append(f'<text x="{width - right + 38}" y="{legend_y + 4}">{method}</text>')
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--methods", nargs="+", required=True)
    parser.add_argument("--k-pruned", type=int)
    parser.add_argument("--out", type=Path, help="markdown file to write (default RUN/results.md)")
    parser.add_argument("--plot", type=Path, help="SVG plot of perplexity against k per method")
    args = parser.parse_args()

    full = pq.read_table(args.run / "full-eval.parquet").to_pylist()[0]
    plans = {}
    for method in args.methods:
        for row in pq.read_table(args.run / "plans" / f"{method}.parquet").to_pylist():
            plans[(method, row["k"])] = row
    ks = sorted({k for _, k in plans})
    # Methods named random-1, random-2, ... are seeds of one method: report their mean.
    seeds = [m for m in args.methods if m.startswith("random-")]
    if seeds:
        for k in ks:
            rows = [plans[(m, k)] for m in seeds if (m, k) in plans and plans[(m, k)]["measured_ppl"]]
            if rows:
                plans[(f"random (mean of {len(seeds)})", k)] = {
                    "measured_ppl": sum(r["measured_ppl"] for r in rows) / len(rows),
                    "llm_evaluations": rows[0]["llm_evaluations"], "removed_blocks": []}
        first = args.methods.index(seeds[0])
        args.methods = [m for m in args.methods if m not in seeds]
        args.methods.insert(first, f"random (mean of {len(seeds)})")
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
        if method.startswith("random ("):
            continue
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
    if args.plot:
        write_plot(args.plot, args.methods, ks, plans, full["ppl"])
    out = args.out or args.run / "results.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
