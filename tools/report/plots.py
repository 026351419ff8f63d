"""Every figure of a run, drawn with matplotlib (the one plotting library of the report tools).

Each function writes one SVG (or PNG, by the file's suffix) and returns its path:

  ppl_vs_k        perplexity (log scale) against blocks removed, one line per method
  contributions   per-block contribution scores of each score table, with their intervals
                  (ci_low/ci_high, else ±1.96 standard errors) where the table has them
  surrogate_fit   cross-validated R² and Spearman per surrogate and value (fit-surrogate's
                  metrics tables): one dot per fold, a bar for the mean over folds
  frontier        held-out perplexity against the LLM evaluations each method used, per k
  estimator_rmse  mean RMSE against exact Shapley values by budget, one line per estimator
                  (the `results.csv` of the estimator_accuracy example; `make exact-game`)

Command line (for Make): python plots.py estimator-rmse RESULTS_CSV OUT.svg

The SVGs are reproducible: no date in their metadata and a fixed id salt, so rerunning a report
on the same tables writes the same bytes.
"""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

matplotlib.rcParams["svg.hashsalt"] = "layerprune"
matplotlib.rcParams["font.size"] = 9

METADATA = {".svg": {"Date": None}, ".png": {}, ".pdf": {"CreationDate": None}}


def _plain_log_y(ax):
    """Log-scale y ticks as plain numbers (20, 50, 100) rather than powers of ten; the
    in-between ticks (2, 3, 5 ×) are labelled only when the axis spans under two decades.
    Call after plotting, when the axis has its range."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_locator(LogLocator(subs=(2, 3, 5)))
    low, high = ax.get_ylim()
    narrow = low > 0 and math.log10(high / low) < 2
    ax.yaxis.set_minor_formatter(plain if narrow else NullFormatter())


def _line_style(index):
    """Ten colours, then the same colours dashed: every line stays distinguishable."""
    return ["-", "--", ":", "-."][index // 10 % 4]


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", metadata=METADATA.get(path.suffix, {}))
    plt.close(fig)
    return path


def ppl_vs_k(path, methods, ks, plans, full_ppl):
    """plans: {(method, k): row with measured_ppl}; every line starts at the full model (k = 0)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for index, method in enumerate(methods):
        points = [(0, full_ppl)] + [(k, plans[(method, k)]["measured_ppl"]) for k in ks
                                    if (method, k) in plans and plans[(method, k)]["measured_ppl"]]
        ax.plot([k for k, _ in points], [v for _, v in points], marker="o", markersize=3,
                linestyle=_line_style(index), label=method)
    ax.set_yscale("log")
    _plain_log_y(ax)
    ax.set_xticks([0] + list(ks))
    ax.set_xlabel("blocks removed (k)")
    ax.set_ylabel("perplexity on the evaluation text (log scale)")
    ax.set_title("Perplexity against blocks removed")
    ax.grid(True, which="both", color="#ddd", linewidth=0.5)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(fig, path)


def _interval(row):
    """(low, high) of a score row, or None when it has no uncertainty."""
    if row.get("ci_low") is not None and row.get("ci_high") is not None:
        return row["ci_low"], row["ci_high"]
    if row.get("std_error") is not None and math.isfinite(row["std_error"]):
        half = 1.959963984540054 * row["std_error"]
        return row["estimate"] - half, row["estimate"] + half
    return None


def contributions(path, tables):
    """tables: {title: [score rows]}; one panel per (title, estimator), blocks on the x axis."""
    panels = []
    for title, rows in tables.items():
        for estimator in dict.fromkeys(r["estimator"] for r in rows):
            chosen = sorted((r for r in rows if r["estimator"] == estimator), key=lambda r: r["block"])
            panels.append((f"{title}: {estimator}" if title != estimator else estimator, chosen))
    if not panels:
        raise ValueError("no score rows to plot")
    columns = min(3, len(panels))
    lines = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 2.8 * lines), squeeze=False)
    for ax, (title, rows) in zip(axes.flat, panels):
        blocks = [r["block"] for r in rows]
        estimates = [r["estimate"] for r in rows]
        ax.bar(blocks, estimates, color="#4c72b0", width=0.7)
        intervals = [_interval(r) for r in rows]
        if any(i is not None for i in intervals):
            shown = [(b, e, i) for b, e, i in zip(blocks, estimates, intervals) if i is not None]
            ax.errorbar([b for b, _, _ in shown], [e for _, e, _ in shown],
                        yerr=[[e - i[0] for _, e, i in shown], [i[1] - e for _, e, i in shown]],
                        fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
            title += " (95 % intervals)"
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("block")
        ax.set_ylabel("estimate")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Per-block contributions (higher = more important)")
    fig.tight_layout()
    return _save(fig, path)


def _fitted_to(row):
    """(the surrogate's kind, the game value it predicts) of a metrics row; tables written
    before 2026-12-04 name the value's column `target`, before 2026-12-05 the kind's
    `surrogate`."""
    return (row["kind"] if "kind" in row else row["surrogate"],
            row["value"] if "value" in row else row["target"])


def surrogate_fit(path, metrics):
    """metrics: fit-surrogate metrics rows (kind, value, fold, r2, spearman); fold -1 is
    the mean over folds."""
    keys = list(dict.fromkeys(_fitted_to(r) for r in metrics))
    if not keys:
        raise ValueError("no surrogate metrics to plot")
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.6 * len(keys) + 3), 3.4))
    for ax, column, label in [(axes[0], "r2", "cross-validated R²"),
                              (axes[1], "spearman", "cross-validated Spearman")]:
        for index, key in enumerate(keys):
            folds = [r[column] for r in metrics
                     if _fitted_to(r) == key and r["fold"] >= 0
                     and r[column] is not None and math.isfinite(r[column])]
            means = [r[column] for r in metrics
                     if _fitted_to(r) == key and r["fold"] < 0]
            mean = means[0] if means else (sum(folds) / len(folds) if folds else float("nan"))
            ax.bar(index, mean, color="#9ecae1", width=0.6)
            ax.scatter([index] * len(folds), folds, color="#08519c", s=10, zorder=3)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([f"{s}\n{t}" for s, t in keys])
        ax.set_ylabel(label)
        ax.set_ylim(top=1.05)
    fig.suptitle("Surrogate fit: mean over folds (bar), each held-out fold (dots)")
    fig.tight_layout()
    return _save(fig, path)


def frontier(path, panels, column, methods, budgeted):
    """panels: {k: [(llm_evaluations, ppl, method label, base method)]}, the full model as base
    method "full"; column: the held-out text's name; budgeted: the methods run at several
    budgets, whose runs are joined by a line. Plans over 4x the best plan's perplexity sit on
    the top edge as ▲."""
    ks = sorted(panels)
    fig, axes = plt.subplots(1, len(ks), figsize=(3.6 * len(ks) + 1.8, 3.6), squeeze=False)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {m: cycle[i % len(cycle)] for i, m in enumerate(methods)}
    for ax, k in zip(axes[0], ks):
        points = [p for p in panels[k] if p[3] != "full" and p[0] > 0]
        best = min(p[1] for p in points)
        top = best * 4
        for evaluations, ppl, _, base in sorted(points):
            if ppl > top:
                ax.scatter([evaluations], [top], marker="^", color=color[base], clip_on=False,
                           zorder=3)
            elif base in budgeted:
                ax.scatter([evaluations], [ppl], s=14, color=color[base], zorder=3)
            else:
                ax.scatter([evaluations], [ppl], s=40, facecolors="none",
                           edgecolors=color[base], linewidths=1.5, zorder=3)
        for method in budgeted:
            runs = sorted((p for p in points if p[3] == method and p[1] <= top))
            if runs:
                ax.plot([p[0] for p in runs], [p[1] for p in runs], color=color[method])
        for evaluations, ppl, _, base in panels[k]:
            if base == "full":
                ax.axhline(ppl, color="black", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_y(ax)
        ax.set_title(f"k = {k}")
        ax.set_xlabel("LLM evaluations (log)")
        ax.grid(True, which="both", color="#eee", linewidth=0.5)
    axes[0][0].set_ylabel(f"{column} perplexity (log)")
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=color[m], label=m)
               for m in methods]
    handles.append(plt.Line2D([], [], color="black", linestyle="--", label="full model (k = 0)"))
    handles.append(plt.Line2D([], [], marker="^", linestyle="", color="grey",
                              label="above 4x the best plan"))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(f"{column} perplexity of each plan against the LLM evaluations its method used "
                 f"(mean over calibration sets)")
    fig.tight_layout()
    return _save(fig, path)


def estimator_rmse(path, results_csv):
    """Mean RMSE over seeds against the budget (LLM evaluations), log-log, one line per
    estimator, from the estimator_accuracy example's results.csv."""
    import csv

    sums = {}
    with open(results_csv, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["estimator"], int(row["budget"]))
            total, count = sums.get(key, (0.0, 0))
            sums[key] = (total + float(row["rmse"]), count + 1)
    estimators = list(dict.fromkeys(name for name, _ in sums))
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for index, name in enumerate(estimators):
        points = sorted((budget, total / count) for (e, budget), (total, count) in sums.items()
                        if e == name and total > 0)
        ax.plot([b for b, _ in points], [r for _, r in points], marker="o", markersize=3,
                linestyle=_line_style(index), label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("LLM evaluations (budget)")
    ax.set_ylabel("RMSE against exact Shapley values")
    ax.set_title("Mean RMSE of each estimator against the exact game's Shapley values")
    ax.grid(True, which="both", color="#eee", linewidth=0.5)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return _save(fig, path)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 4 or sys.argv[1] != "estimator-rmse":
        sys.exit("usage: plots.py estimator-rmse RESULTS_CSV OUT.svg")
    print(f"wrote {estimator_rmse(Path(sys.argv[3]), Path(sys.argv[2]))}")
