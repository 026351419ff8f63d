"""Summarise a frontier.csv (written by the `frontier` stage): for each k, every method's
held-out perplexity against the LLM evaluations it used, as the mean over calibration sets with
the lowest and highest set, its gap to the best plan known, and a plot per k.

Usage: python3 frontier.py FRONTIER_CSV [--out table.md] [--plot frontier.svg]
The table needs only the standard library; --plot needs matplotlib (tools/report/plots.py; the
report environment, `make venv-report`).
"""

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: layerprune_tables.py
from layerprune_tables import current_method_name  # noqa: E402  (standard library only)


def read(path: Path):
    """frontier.csv's rows, numbers parsed, and its held-out columns; refused, naming the row,
    when it is empty or a cell is not what the frontier stage writes. Each row's method by its
    name now (a frontier.csv written before the names were made one says `shapley` for
    surrogate-shapley: current_method_name), so every report reads old and new files alike."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{path}: no rows (an empty frontier.csv, or not one)")
    for line, row in enumerate(rows, start=2):
        if None in row:
            raise SystemExit(f"{path}, line {line}: more cells than the header has columns")
        # Cells missing at the end of a row are empty (older frontier.csv files end a row
        # without a budget so).
        row.update({column: "" for column, value in row.items() if value is None})
        row["method"] = current_method_name(row.get("method"))
    heldout = [c for c in rows[0].keys() if c.endswith("_ppl") and c != "calibration_ppl"]
    if "calibration_ppl" not in rows[0]:
        raise SystemExit(f"{path}: no calibration_ppl column: not a frontier.csv")
    for line, row in enumerate(rows, start=2):
        try:
            row["k"] = int(row["k"])
            row["llm_evaluations"] = int(row["llm_evaluations"])
            for column in ["calibration_ppl"] + heldout:
                row[column] = float(row[column])
                if not row[column] > 0:
                    raise ValueError(f"{column} = {row[column]}: a perplexity is above 0")
        except (TypeError, ValueError) as error:
            raise SystemExit(f"{path}, line {line} ({row.get('method')}): {error}")
    return rows, heldout


# The methods run once per budget (adaptive removal, raced or not).
BUDGETED = ("adaptive", "adaptive-raced")


def label(row, budget_index):
    """Runs of a budgeted method are told apart by their budget, with the budgets asked for that
    came to it (`budget_spec`, where the CSV has it), or, in a CSV without the budget column, by
    its rank within (k, calibration set)."""
    method = row["method"]
    if method in BUDGETED:
        if row.get("budget"):
            spec = f" ({', '.join(row['budget_spec'].split())})" if row.get("budget_spec") else ""
            return f"{method}, budget {int(row['budget']):,}{spec}"
        return f"{method} #{budget_index}"
    return method


def labels(rows):
    """Each row's label (`label`), in the rows' order: a budgeted method's runs ranked by their
    evaluations within (k, method, calibration set) where the CSV has no budget column."""
    per_set = defaultdict(list)
    for row in rows:
        if row["method"] in BUDGETED:
            per_set[(row["k"], row["method"], row["calibration_set"])].append(row)
    rank = {}
    for runs in per_set.values():
        for index, row in enumerate(sorted(runs, key=lambda r: r["llm_evaluations"])):
            rank[id(row)] = index + 1
    return [label(row, rank.get(id(row))) for row in rows]


def summarise(rows, heldout):
    """{(k, label): {column: [values over calibration sets]}} plus the labels in order."""
    groups = defaultdict(lambda: defaultdict(list))
    order = []
    for row, name in zip(rows, labels(rows)):
        key = (row["k"], name)
        if key not in groups:
            order.append(key)
        for column in ["llm_evaluations", "calibration_ppl"] + heldout:
            groups[key][column].append(row[column])
        groups[key]["removed"].append(row["removed_blocks"])
        groups[key]["sets"].append(row["calibration_set"])
    return groups, order


def base_method(name):
    return name.split(" #")[0].split(",")[0]


def gmean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def gap_text(gap, digits=1):
    """+x.x % below doubling, ×N from there (a plan 5,000 times the best one's perplexity reads
    as such, not as +499,900 %)."""
    if gap < 1:
        return f"{100 * gap:+.{digits}f} %"
    return f"×{1 + gap:,.{1 if gap < 9 else 0}f}"


def gap_to_best(group, best, column):
    """The group's perplexity on `column` over the best-known plans' on the same calibration
    sets, as gap_text writes it: a row of fewer sets than best-known's (labelled "sets ... only")
    is compared with best-known on those sets, not with its mean over every set; "" where they
    share none."""
    best_of_set = dict(zip(best["sets"], best[column]))
    pairs = [(value, best_of_set[s]) for value, s in zip(group[column], group["sets"]) if s in best_of_set]
    if not pairs:
        return ""
    return gap_text(gmean([v for v, _ in pairs]) / gmean([b for _, b in pairs]) - 1)


def fmt(values, digits=1):
    mean = gmean(values)
    if len(values) == 1:
        return f"{mean:,.{digits}f}"
    return f"{mean:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


def table(groups, order, heldout, sets):
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
                f" ({min(evals):,}–{max(evals):,})" if min(evals) != max(evals) else "")
            gap = ""
            if best:
                gap = gap_to_best(g, best, heldout[0])
            # A row of fewer sets than the others is a mean over those alone: said, not hidden.
            name = key[1] if sorted(g["sets"]) == sets else f"{key[1]} (sets {', '.join(sorted(g['sets']))} only)"
            lines.append(f"| {name} | {evals_text} | {fmt(g['calibration_ppl'], 2)} | "
                         + " | ".join(fmt(g[h]) for h in heldout) + f" | {gap} |")
    return "\n".join(lines) + "\n"


def plot(path: Path, groups, order, heldout):
    """Held-out perplexity (first held-out text, geometric mean over calibration sets) against
    LLM evaluations (log scale), one panel per k (tools/report/plots.py, matplotlib)."""
    import plots

    ks = sorted({k for k, _ in order if k > 0})
    methods = []
    for _, name in order:
        base = base_method(name)
        if base not in methods and base != "full":
            methods.append(base)
    column = heldout[0]
    panels = {}
    for k in ks:
        panels[k] = [(gmean(groups[key]["llm_evaluations"]), gmean(groups[key][column]), key[1],
                      base_method(key[1])) for key in order if key[0] == k]
        if (0, "full") in groups:
            full = groups[(0, "full")]
            panels[k].append((gmean(full["llm_evaluations"]), gmean(full[column]), "full", "full"))
    return plots.frontier(path, panels, column[:-4], methods, BUDGETED)


def emit(text: str, out):
    """Prints a report's text and, given a path, writes it there too (its folder made)."""
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("csv", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    rows, heldout = read(args.csv)
    if not heldout:
        raise SystemExit(f"{args.csv}: no held-out *_ppl column (a frontier run without held-out "
                         "text: its plans are measured on one by make frontier-pairs)")
    groups, order = summarise(rows, heldout)
    sets = sorted({r["calibration_set"] for r in rows})
    text = (f"Calibration sets: {', '.join(sets)}. Perplexities are geometric means over the "
            f"sets (lowest–highest set in brackets); evaluations are the distinct masks each "
            f"method asked for on the calibration tokens, its plan's measurement included.\n")
    text += table(groups, order, heldout, sets)
    emit(text, args.out)
    if args.plot:
        plot(args.plot, groups, order, heldout)


if __name__ == "__main__":
    main()
