"""Summarise a frontier.csv (written by the `frontier` stage): for each k, every method's
held-out perplexity against the LLM evaluations it used, as the mean over calibration sets with
the lowest and highest set, its gap to the best plan known, and a plot per k.

Usage: python3 frontier.py FRONTIER_CSV [--out table.md] [--plot frontier.svg]
Only the standard library: it runs with any python3.
"""

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf", "#000000"]


def read(path: Path):
    with path.open() as f:
        rows = list(csv.DictReader(f))
    heldout = [c for c in rows[0].keys() if c.endswith("_ppl") and c != "calibration_ppl"]
    for row in rows:
        row["k"] = int(row["k"])
        row["llm_evaluations"] = int(row["llm_evaluations"])
        for column in ["calibration_ppl"] + heldout:
            row[column] = float(row[column])
    return rows, heldout


def label(row, budget_index):
    """Adaptive runs are told apart by their budget (or, in a CSV without the budget column,
    by its rank within (k, calibration set))."""
    if row["method"] == "adaptive":
        if row.get("budget"):
            return f"adaptive, budget {int(row['budget']):,}"
        return f"adaptive #{budget_index}"
    return row["method"]


def summarise(rows, heldout):
    """{(k, label): {column: [values over calibration sets]}} plus the labels in order."""
    groups = defaultdict(lambda: defaultdict(list))
    order = []
    per_set = defaultdict(list)
    for row in rows:
        if row["method"] == "adaptive":
            per_set[(row["k"], row["calibration_set"])].append(row)
    rank = {}
    for runs in per_set.values():
        for index, row in enumerate(sorted(runs, key=lambda r: r["llm_evaluations"])):
            rank[id(row)] = index + 1
    for row in rows:
        name = label(row, rank.get(id(row)))
        key = (row["k"], name)
        if key not in groups:
            order.append(key)
        for column in ["llm_evaluations", "calibration_ppl"] + heldout:
            groups[key][column].append(row[column])
        groups[key]["removed"].append(row["removed_blocks"])
    return groups, order


def base_method(name):
    return name.split(" #")[0].split(",")[0]


def gmean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def fmt(values, digits=1):
    mean = gmean(values)
    if len(values) == 1:
        return f"{mean:,.{digits}f}"
    return f"{mean:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


def table(groups, order, heldout):
    lines = []
    ks = sorted({k for k, _ in order if k > 0})
    for k in ks:
        lines.append(f"\n### k = {k}\n")
        header = "| method | LLM evaluations | calibration PPL | " + " | ".join(
            f"{h[:-4]} PPL" for h in heldout) + " | gap to best known (" + heldout[0][:-4] + ") |"
        lines.append(header)
        lines.append("|---|---:|---:|" + "---:|" * len(heldout) + "---:|")
        best = groups.get((k, "best-known"))
        for key in [key for key in order if key[0] == k]:
            g = groups[key]
            evals = g["llm_evaluations"]
            evals_text = f"{sum(evals) / len(evals):,.0f}" + (
                f" ({min(evals)}–{max(evals)})" if min(evals) != max(evals) else "")
            gap = ""
            if best:
                gap = f"{100 * (gmean(g[heldout[0]]) / gmean(best[heldout[0]]) - 1):+.1f} %"
            lines.append(f"| {key[1]} | {evals_text} | {fmt(g['calibration_ppl'], 2)} | "
                         + " | ".join(fmt(g[h]) for h in heldout) + f" | {gap} |")
    return "\n".join(lines) + "\n"


def plot(path: Path, groups, order, heldout):
    """Held-out perplexity (first held-out text, geometric mean over calibration sets) against
    LLM evaluations (log scale), one panel per k."""
    ks = sorted({k for k, _ in order if k > 0})
    panel_w, panel_h, left, top, bottom, legend_w = 300, 280, 60, 40, 50, 170
    width, height = left + len(ks) * (panel_w + 40) + legend_w, top + panel_h + bottom
    methods = []
    for _, name in order:
        base = base_method(name)
        if base not in methods and base != "full":
            methods.append(base)
    color = {m: COLORS[i % len(COLORS)] for i, m in enumerate(methods)}
    column = heldout[0]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{left}" y="16" font-size="13">{column[:-4]} perplexity of each plan '
             f'against the LLM evaluations its method used (mean over calibration sets)</text>']
    for index, k in enumerate(ks):
        x0 = left + index * (panel_w + 40)
        points = [(gmean(groups[key]["llm_evaluations"]), gmean(groups[key][column]), key[1])
                  for key in order if key[0] == k]
        points = [p for p in points if p[0] > 0]
        if (0, "full") in groups:
            full = groups[(0, "full")]
            points.append((gmean(full["llm_evaluations"]), gmean(full[column]), "full"))
        xs = [math.log10(p[0]) for p in points]
        ys = [math.log10(p[1]) for p in points]
        # The range shows the sensible plans: up to 4x the best; worse ones sit on the top
        # edge as triangles.
        x_lo, x_hi = 0.0, max(xs) + 0.1
        y_lo = min(ys) - 0.05
        best = min(math.log10(p[1]) for p in points if p[2] != "full")
        y_hi = min(max(ys), best + math.log10(4)) + 0.05
        fx = lambda v: x0 + panel_w * (math.log10(v) - x_lo) / (x_hi - x_lo)
        fy = lambda v: top + panel_h * (1 - (min(math.log10(v), y_hi) - y_lo) / (y_hi - y_lo))
        parts.append(f'<rect x="{x0}" y="{top}" width="{panel_w}" height="{panel_h}" fill="none" stroke="#999"/>')
        parts.append(f'<text x="{x0 + panel_w / 2}" y="{top - 6}" text-anchor="middle">k = {k}</text>')
        for e in range(0, math.ceil(x_hi) + 1):
            for m in (1, 3):
                v = m * 10 ** e
                if x_lo <= math.log10(v) <= x_hi:
                    parts.append(f'<line x1="{fx(v):.1f}" x2="{fx(v):.1f}" y1="{top}" y2="{top + panel_h}" stroke="#eee"/>')
                    parts.append(f'<text x="{fx(v):.1f}" y="{top + panel_h + 14}" text-anchor="middle">{v:g}</text>')
        for e in range(math.floor(y_lo), math.ceil(y_hi) + 1):
            for m in (1, 1.5, 2, 3, 5, 7):
                v = m * 10 ** e
                if y_lo <= math.log10(v) <= y_hi:
                    parts.append(f'<line x1="{x0}" x2="{x0 + panel_w}" y1="{fy(v):.1f}" y2="{fy(v):.1f}" stroke="#eee"/>')
                    parts.append(f'<text x="{x0 - 4}" y="{fy(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        parts.append(f'<text x="{x0 + panel_w / 2}" y="{height - 12}" text-anchor="middle">LLM evaluations (log)</text>')
        adaptive = sorted((p for p in points if p[2].startswith("adaptive")), key=lambda p: p[0])
        if adaptive:
            line = " ".join(f"{fx(e):.1f},{fy(v):.1f}" for e, v, _ in adaptive)
            parts.append(f'<polyline points="{line}" fill="none" stroke="{color["adaptive"]}" stroke-width="2"/>')
        for e, v, name in points:
            base = base_method(name)
            if base == "full":
                parts.append(f'<line x1="{x0}" x2="{x0 + panel_w}" y1="{fy(v):.1f}" y2="{fy(v):.1f}" stroke="#000" stroke-dasharray="4 3"/>')
                continue
            if math.log10(v) > y_hi:
                cx, cy = fx(e), top + 6
                parts.append(f'<path d="M{cx - 5:.1f},{cy + 4:.1f} L{cx + 5:.1f},{cy + 4:.1f} L{cx:.1f},{cy - 5:.1f} Z" fill="{color[base]}"/>')
            elif base == "adaptive":
                parts.append(f'<circle cx="{fx(e):.1f}" cy="{fy(v):.1f}" r="3.5" fill="{color[base]}"/>')
            else:
                # Hollow, so a plan equal to another method's still shows.
                parts.append(f'<circle cx="{fx(e):.1f}" cy="{fy(v):.1f}" r="6" fill="none" stroke="{color[base]}" stroke-width="2"/>')
    lx = left + len(ks) * (panel_w + 40)
    for i, m in enumerate(methods):
        parts.append(f'<circle cx="{lx + 6}" cy="{top + 10 + 16 * i}" r="4" fill="{color[m]}"/>')
        parts.append(f'<text x="{lx + 16}" y="{top + 14 + 16 * i}">{m}</text>')
    parts.append(f'<line x1="{lx}" x2="{lx + 12}" y1="{top + 10 + 16 * len(methods)}" y2="{top + 10 + 16 * len(methods)}" stroke="#000" stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{lx + 16}" y="{top + 14 + 16 * len(methods)}">full model (k = 0)</text>')
    parts.append(f'<text x="{lx}" y="{top + 30 + 16 * len(methods)}">▲ above the range (over 4x</text>')
    parts.append(f'<text x="{lx}" y="{top + 44 + 16 * len(methods)}">the best plan\'s perplexity)</text>')
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("csv", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    rows, heldout = read(args.csv)
    groups, order = summarise(rows, heldout)
    sets = sorted({r["calibration_set"] for r in rows})
    text = (f"Calibration sets: {', '.join(sets)}. Perplexities are geometric means over the "
            f"sets (lowest–highest set in brackets); evaluations are the distinct masks each "
            f"method asked for on the calibration tokens, its plan's measurement included.\n")
    text += table(groups, order, heldout)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.plot:
        plot(args.plot, groups, order, heldout)


if __name__ == "__main__":
    main()
