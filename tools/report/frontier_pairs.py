"""Whether the frontier's held-out differences between methods are more than the held-out text's
own noise: each method's plan against a reference method's (SLEB by default) on the same held-out
windows, paired window by window.

Why: the frontier (frontier.py) gives each method's held-out perplexity as a mean over calibration
sets; two plans a few per cent apart may differ by no more than the 40 held-out windows' scatter
allows. Both plans are scored on the same windows, so the paired difference is precise: for each
window, the plan's mean NLL minus the reference plan's, averaged over the calibration sets (each
set chose its own plans); its mean over the windows is the difference in held-out log-perplexity,
its standard error the windows' standard deviation over the square root of their count. What
this does not measure is the calibration side: another draw of calibration text chooses other
plans (the spread between sets, which frontier.py gives).

Usage:
  frontier_pairs.py masks FRONTIER_CSV --manifest MODEL/manifest.json
      one `--mask 1101...` per distinct plan of the CSV, for `evaluate --tokens HELDOUT ...`
  frontier_pairs.py table FRONTIER_CSV --heldout NAME=EVALUATIONS ... [--against sleb] [--out MD]
      NAME is a held-out column of the CSV (wikitext2 for wikitext2_ppl; any name where the
      CSV has none, as `make exact-frontier`'s); EVALUATIONS an evaluation table (evaluate
      --out) of every plan on that text, with each window's NLL

Only the standard library and pyarrow (the report environment, `make venv-report`).
"""

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: layerprune_tables.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
from frontier import emit, labels, read  # noqa: E402  (this folder's frontier.py)
from layerprune_tables import current_method_name, renamed_method  # noqa: E402

# Rows that are not a method's choice: the full model, and the best plan any method measured.
NOT_METHODS = {"full", "best-known"}


def fail(message):
    print(f"frontier_pairs.py: error: {message}", file=sys.stderr)
    sys.exit(1)


def removed_of(row):
    return tuple(int(b) for b in row["removed_blocks"].split())


def mask_of(removed, num_blocks):
    return "".join("0" if b in removed else "1" for b in range(num_blocks))


def plans(rows):
    """Every distinct set of removed blocks a method chose, in the CSV's order."""
    seen = []
    for row in rows:
        removed = removed_of(row)
        if removed and removed not in seen:
            seen.append(removed)
    return seen


def labelled(rows):
    """{(k, label): {calibration set: removed blocks}}, the labels as frontier.py writes them."""
    out = defaultdict(dict)
    for row, name in zip(rows, labels(rows)):
        if row["k"] > 0:
            out[(row["k"], name)][row["calibration_set"]] = removed_of(row)
    return out


def read_windows(path: Path):
    """{removed blocks: (mean NLL, [NLL of each window])} of an evaluation table."""
    from layerprune_tables import TableError, read_table  # pyarrow: not needed by `masks`

    try:
        _, parquet = read_table(path, "evaluations", "evaluate, of every plan on the held-out text")
    except TableError as error:
        fail(str(error))
    table = parquet.to_pydict()
    if "window_nll" not in table:
        fail(f"{path}: no window_nll column (an evaluation table written before tables kept each "
             "window's NLL): evaluate the plans again")
    out = {}
    for kept, nll, windows in zip(table["kept"], table["nll"], table["window_nll"]):
        if windows is None or len(windows) < 2:
            fail(f"{path}: a mask without two or more windows' NLLs")
        out[tuple(b for b, k in enumerate(kept) if not k)] = (nll, list(windows))
    return out


def paired(differences_by_window):
    """Mean and standard error over windows of per-window differences."""
    n = len(differences_by_window)
    mean = sum(differences_by_window) / n
    variance = sum((d - mean) ** 2 for d in differences_by_window) / (n - 1)
    return mean, math.sqrt(variance / n)


def change(log_ratio):
    """A change in perplexity: '+2.0 %', or '×149' from doubling on."""
    if log_ratio >= math.log(2):
        return f"×{math.exp(log_ratio):,.3g}"
    return f"{100 * math.expm1(log_ratio):+.1f} %"


def compare(choices, reference, windows):
    """One method's plans against the reference's on one held-out text: (mean log-ratio over
    sets, its standard error, per-set verdicts), None where a set lacks either."""
    sets = sorted(set(choices) & set(reference))
    if not sets:
        return None
    per_set, verdicts = [], []
    for s in sets:
        mine, theirs = windows[choices[s]][1], windows[reference[s]][1]
        if len(mine) != len(theirs):
            fail("two plans were measured on different numbers of windows")
        differences = [a - b for a, b in zip(mine, theirs)]
        per_set.append(differences)
        if choices[s] == reference[s]:
            verdicts.append("same")
            continue
        mean, se = paired(differences)
        verdicts.append("better" if mean + 2 * se < 0 else "worse" if mean - 2 * se > 0 else "tie")
    averaged = [sum(column) / len(column) for column in zip(*per_set)]
    if all(v == "same" for v in verdicts):
        return 0.0, 0.0, verdicts
    mean, se = paired(averaged)
    return mean, se, verdicts


def verdict_text(verdicts):
    counts = {v: verdicts.count(v) for v in ("better", "worse", "tie", "same")}
    parts = [f"{counts['same']} same plan" if counts["same"] else "",
             f"{counts['better']} better" if counts["better"] else "",
             f"{counts['worse']} worse" if counts["worse"] else "",
             f"{counts['tie']} within 2 se" if counts["tie"] else ""]
    return ", ".join(p for p in parts if p)


def check_against(groups, against):
    """Refuses a reference method the frontier.csv has no plans of; by an old name, where the
    file holds it by the one it has now, naming that."""
    if not any(name == against for _, name in groups):
        methods = {name for _, name in groups}
        if renamed_method(against) and current_method_name(against) in methods:
            fail(f"--against {renamed_method(against)}")
        fail(f"--against {against}: no plans of that method in the frontier.csv "
             f"(its methods: {', '.join(sorted(methods))})")


def table(groups, windows_by_text, against):
    """groups: `labelled` rows, their reference `against` checked (`check_against`)."""
    texts = list(windows_by_text)
    lines = [f"Each method's plans against {against}'s on the same held-out windows: the change in "
             "held-out perplexity averaged over the calibration sets, with its range at two standard "
             "errors of the paired windows, and per set whether the plan is better or worse beyond "
             "two standard errors, within them, or the same plan.\n"]
    for k in sorted({k for k, _ in groups}):
        reference = groups.get((k, against))
        if not reference:
            continue
        lines.append(f"\n### k = {k}\n")
        lines.append("| method | " + " | ".join(f"{t}: vs {against} (2 se) | {t}: per set" for t in texts) + " |")
        lines.append("|---|" + "---:|---|" * len(texts))
        for (kk, name), choices in groups.items():
            if kk != k or name == against or name in NOT_METHODS:
                continue
            cells = []
            for text in texts:
                found = compare(choices, reference, windows_by_text[text])
                if found is None:
                    cells += ["–", "–"]
                    continue
                mean, se, verdicts = found
                cells.append(f"{change(mean)} ({change(mean - 2 * se)} to {change(mean + 2 * se)})")
                cells.append(verdict_text(verdicts))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def check(rows, text, windows):
    """Every plan of the CSV measured, on the held-out text the frontier measured it on (where
    the frontier measured it: a run without that held-out text, as `make exact-frontier`'s, has
    no perplexity to check the evaluations against)."""
    column = f"{text}_ppl"
    for row in rows:
        removed = removed_of(row)
        if not removed:
            continue
        if removed not in windows:
            fail(f"the {text} evaluations lack the plan removing blocks {list(removed)}: evaluate "
                 "every plan (frontier_pairs.py masks)")
        ppl = math.exp(windows[removed][0])
        # Written so that a NaN (a table of no finite loss) fails it too.
        if column in row and not abs(ppl / row[column] - 1) <= 1e-3:
            fail(f"the plan removing blocks {list(removed)} has {text} perplexity {ppl:.4f} in the "
                 f"evaluations but {row[column]:.4f} in the frontier: not the same held-out text or model")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    masks = commands.add_parser("masks")
    masks.add_argument("csv", type=Path)
    masks.add_argument("--manifest", type=Path, required=True)
    tab = commands.add_parser("table")
    tab.add_argument("csv", type=Path)
    tab.add_argument("--heldout", action="append", required=True, metavar="NAME=EVALUATIONS")
    tab.add_argument("--against", default="sleb")
    tab.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    rows, heldout = read(args.csv)
    if args.command == "masks":
        try:
            num_blocks = int(json.loads(args.manifest.read_text())["num_blocks"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            fail(f"--manifest {args.manifest}: not a layered model's manifest.json ({error!r})")
        for removed in plans(rows):
            if max(removed) >= num_blocks:
                fail(f"{args.csv}: a plan removes block {max(removed)} of a {num_blocks}-block model")
            print(f"--mask {mask_of(removed, num_blocks)}")
        return
    # Before the held-out windows are read: the reference is the file's to have.
    groups = labelled(rows)
    check_against(groups, args.against)
    windows_by_text = {}
    for item in args.heldout:
        name, _, path = item.partition("=")
        # A frontier run with held-out texts names them; one without (`make exact-frontier`)
        # leaves the name to the caller.
        if (heldout and f"{name}_ppl" not in heldout) or not name or not path:
            fail(f"--heldout {item}: NAME must be one of {', '.join(h[:-4] for h in heldout)}, then =FILE"
                 if heldout else f"--heldout {item}: expected NAME=FILE")
        windows_by_text[name] = read_windows(Path(path))
        check(rows, name, windows_by_text[name])
    emit(table(groups, windows_by_text, args.against), args.out)


if __name__ == "__main__":
    main()
