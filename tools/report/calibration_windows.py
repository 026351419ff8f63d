"""Calibration tokens or LLM evaluations: several frontier.csv files (the `frontier` stage), each
run with calibration sets of a different number of windows, side by side at their compute.

An LLM evaluation costs in proportion to the tokens it scores, so a method's compute is its
evaluations times the windows of its calibration set ("window-evaluations"). For each k, every
method of every run is one row: its evaluations, its window-evaluations, how many distinct plans
its calibration sets gave (1: every set chose the same blocks; a measure of how much the plan
depends on the calibration draw that needs no held-out text) and the held-out perplexities
(geometric mean over the sets, lowest–highest set in brackets), sorted by compute.

Usage: python3 calibration_windows.py 10=frontier-w10.csv 20=frontier-w20.csv ... [--out table.md]
       [--methods sleb,adaptive,adaptive-raced,leave-one-out,block-influence]
Standard library only.
"""

import argparse
from collections import defaultdict
from pathlib import Path

from frontier import base_method, emit, fmt, read, summarise
from layerprune_tables import current_method_name, renamed_method  # frontier.py put tools/ on the path


DEFAULT_METHODS = "sleb,adaptive,adaptive-raced,leave-one-out,block-influence"


def run_argument(text):
    windows, _, path = text.partition("=")
    if not windows.isdigit() or int(windows) == 0 or not path:
        raise argparse.ArgumentTypeError(f"expected WINDOWS=CSV (e.g. 10=frontier.csv), got {text!r}")
    return int(windows), Path(path)


def rows_by_k(runs, methods, asked=True):
    """{k: [(window-evaluations, windows, evaluations, label, group)]} over every run. With
    `asked` (methods the user named, not the default list), a method no run played is refused
    (its rows would be left out without a word), by an old name naming the one it has now."""
    out = defaultdict(list)
    played = set()
    heldout_columns = None
    for windows, path in runs:
        try:
            rows, heldout = read(path)
        except (OSError, KeyError, ValueError, IndexError) as error:
            raise SystemExit(f"{path}: not a readable frontier.csv ({error!r})")
        if heldout_columns is None:
            heldout_columns = heldout
        elif heldout != heldout_columns:
            raise SystemExit(f"{path}: held-out texts {heldout} differ from the first file's "
                             f"{heldout_columns}")
        groups, order = summarise(rows, heldout)
        played.update(base_method(name) for _, name in order)
        for k, name in order:
            # The label's method: "adaptive, budget 6 (...)" and, from a CSV without the budget
            # column, "adaptive #1" are adaptive's runs.
            if k == 0 or base_method(name) not in methods:
                continue
            group = groups[(k, name)]
            evaluations = sum(group["llm_evaluations"]) / len(group["llm_evaluations"])
            out[k].append((evaluations * windows, windows, evaluations, name, group))
    for method in sorted(set(methods) - played if asked else ()):
        renamed = renamed_method(method)
        if renamed and current_method_name(method) in played:
            raise SystemExit(f"--methods: {renamed}")
        raise SystemExit(f"--methods: no run played {method} (their methods: "
                         f"{', '.join(sorted(played - {'full', 'best-known'}))})")
    return out, heldout_columns


def table(by_k, heldout):
    lines = []
    for k in sorted(by_k):
        lines.append(f"\n### k = {k}\n")
        lines.append("| calibration windows | method | LLM evaluations | window-evaluations | "
                     "distinct plans over the sets | "
                     + " | ".join(f"{h[:-4]} PPL" for h in heldout) + " |")
        lines.append("|---:|---|---:|---:|---:|" + "---:|" * len(heldout))
        for compute, windows, evaluations, name, group in sorted(by_k[k], key=lambda r: r[:2]):
            plans = len(set(group["removed"]))
            lines.append(f"| {windows} | {name} | {evaluations:,.0f} | {compute:,.0f} | "
                         f"{plans} of {len(group['removed'])} | "
                         + " | ".join(fmt(group[h]) for h in heldout) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=run_argument, nargs="+", metavar="WINDOWS=CSV")
    parser.add_argument("--methods", help=f"comma-separated methods to show (default: {DEFAULT_METHODS}, "
                                           "those of them the runs played)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    methods = args.methods or DEFAULT_METHODS
    by_k, heldout = rows_by_k(args.runs, set(methods.split(",")), asked=args.methods is not None)
    # frontier.csv does not record the windows' length: the runs compared share one (SEQ_LEN).
    text = ("Compute: LLM evaluations × calibration windows (of one length in every run). Perplexities are "
            "geometric means over the calibration sets (lowest–highest set in brackets).\n")
    text += table(by_k, heldout)
    emit(text, args.out)


if __name__ == "__main__":
    main()
