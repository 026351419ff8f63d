"""Every selection method against the exact optimum of a real model's game.

Reads an evaluation table holding every mask of a game small enough to enumerate (`make
exact-frontier`: 12 of SmolLM2's blocks, the others kept, on the demo's calibration tokens), the
frontier.csv of every method played on that game through it (nothing measured again), and plan
tables of other methods (the exact Shapley values' plans). For each k it finds the best plan of
all C(P, k), and for each method its plan's gap to that optimum (calibration perplexity over
the optimum's, minus one), its rank among the C(P, k) plans, and the LLM evaluations it used
against SLEB's. Writes a Markdown table (--out) and the rows (--csv).

The game is one calibration set's: frontier.csv must hold that set's plans alone (a frontier of
several sets is refused), one a method and k.

A budgeted method's rows are named by the budgets asked for (frontier.csv's `budget_spec`: a run
whose budgets coincide at a k, e.g. `least` and `0.25sleb`, gets a row under each), so each
budget gets a row over every k.

Usage: python3 exact_frontier.py --game evaluations.parquet --frontier frontier.csv
         [--plans NAME=plans.parquet ...] [--out exact-frontier.md] [--csv exact-frontier.csv]
Needs pyarrow (the report environment, `make venv-report`).
"""

import argparse
import csv
import json
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from frontier import BUDGETED, emit, gap_text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: layerprune_tables.py
from layerprune_tables import TableError, current_method_name, read_table  # noqa: E402


def read_game(path: Path):
    """{frozenset of removed blocks: NLL} over every mask, the fixed blocks and the players."""
    try:
        fields, table = read_table(path, "evaluations", "evaluate, of every mask of the game")
    except TableError as error:
        raise SystemExit(str(error)) from None
    fixed = set(json.loads(fields.get("layerprune.fixed_blocks", "[]")))
    if "layerprune.num_blocks" not in fields:
        raise SystemExit(f"{path}: no layerprune.num_blocks entry: not an evaluation table a stage wrote")
    num_blocks = int(fields["layerprune.num_blocks"])
    players = [b for b in range(num_blocks) if b not in fixed]
    nll = {}
    for kept, value in zip(table.column("kept").to_pylist(), table.column("nll").to_pylist()):
        removed = frozenset(b for b, keep in enumerate(kept) if not keep)
        if removed & fixed:
            raise SystemExit(f"{path}: a mask removes a fixed block: {sorted(removed & fixed)}")
        # NaN orders with nothing: the plans sorted by NLL around one are out of order, and the
        # optimum read off them is not the best plan.
        if value is None or not math.isfinite(value):
            raise SystemExit(f"{path}: the mask removing {sorted(removed)} has NLL {value}: not a finite "
                             "loss, no game to find the optimum of")
        nll[removed] = value
    expected = 2 ** len(players)
    if len(nll) != expected:
        raise SystemExit(f"{path}: {len(nll)} masks, but the game of {len(players)} players has "
                         f"{expected}: not an enumerated game")
    return nll, players


def read_runs(frontier: Path, plan_tables, nll):
    """[(label, k, removed frozenset, llm evaluations)] from frontier.csv and plan tables, each
    plan checked against the game: a mask of it (the same fixed blocks) and, for frontier.csv's
    rows, the calibration perplexity the game gives it (the same tokens), so that gaps are never
    computed against another game."""
    with frontier.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("k") and int(r["k"]) > 0]
    # Each method by its name now (an older frontier.csv says `shapley` for surrogate-shapley).
    for r in rows:
        r["method"] = current_method_name(r.get("method"))
    if not rows:
        raise SystemExit(f"{frontier}: no plans (an empty frontier.csv, or not one)")
    # The game is measured on one calibration set's tokens, and a plan's gap to its optimum says
    # something only of plans chosen on those tokens: a frontier of several sets is refused, not
    # reported one row a method with the others dropped (nor averaged over sets the game is not).
    sets = sorted({r.get("calibration_set") or "?" for r in rows})
    if len(sets) > 1:
        raise SystemExit(f"{frontier}: plans of {len(sets)} calibration sets ({', '.join(sets)}), but the game "
                         "is measured on one set's tokens: run the frontier on the game's set alone "
                         "(make exact-frontier does)")
    # Runs of a budgeted method in a CSV without the budget column, told apart by their rank in
    # evaluations at their k (frontier.py's labels).
    rank = {}
    for key in {(r["k"], r["method"]) for r in rows if r["method"] in BUDGETED and not r.get("budget")}:
        runs_at_k = sorted((r for r in rows if (r["k"], r["method"]) == key), key=lambda r: int(r["llm_evaluations"]))
        rank.update({id(r): index + 1 for index, r in enumerate(runs_at_k)})

    def check(source, removed, ppl=None):
        if removed not in nll:
            raise SystemExit(f"{source}: the plan removing {sorted(removed)} is no mask of the game "
                             "(it removes a fixed block, or its blocks are not the game's players): "
                             "a frontier or plans of another game")
        if ppl is not None and not abs(math.exp(nll[removed]) / ppl - 1) <= 1e-3:
            raise SystemExit(f"{source}: the plan removing {sorted(removed)} has calibration "
                             f"perplexity {ppl:.4f} there but {math.exp(nll[removed]):.4f} in the game: "
                             "measured on other calibration tokens than the game's")

    sleb = {int(r["k"]): int(r["llm_evaluations"]) for r in rows if r["method"] == "sleb"}
    runs, sources = [], []
    for r in rows:
        k = int(r["k"])
        labels = [f"{r['method']} #{rank[id(r)]}" if id(r) in rank else r["method"]]
        if r["method"] in BUDGETED and r.get("budget"):
            # A frontier.csv written before the budget_spec column: the budget's number.
            names = (r.get("budget_spec") or r["budget"]).split()
            labels = [f"{r['method']}, budget {name}" for name in names]
        removed = frozenset(int(b) for b in r["removed_blocks"].split())
        check(f"{frontier} ({r['method']}, k = {k}, set {r.get('calibration_set', '?')})", removed,
              float(r["calibration_ppl"]) if r.get("calibration_ppl") else None)
        runs.extend((label, k, removed, int(r["llm_evaluations"])) for label in labels)
        sources.extend(str(frontier) for _ in labels)
    for name, path in plan_tables:
        table = pq.read_table(path)
        for k, removed, evaluations in zip(table.column("k").to_pylist(),
                                           table.column("removed_blocks").to_pylist(),
                                           table.column("llm_evaluations").to_pylist()):
            check(f"{path} ({name}, k = {k})", frozenset(removed))
            runs.append((name, k, frozenset(removed), evaluations))
            sources.append(f"{path} (--plans {name})")
    # One plan a method and k: the table has one cell for it (a second would replace the first).
    counts = Counter((label, k) for label, k, _, _ in runs)
    for (label, k), count in sorted(counts.items()):
        if count > 1:
            named = sorted({source for run, source in zip(runs, sources) if run[:2] == (label, k)})
            raise SystemExit(f"{' and '.join(named)}: {count} plans of {label} at k = {k}, where the table "
                             "has one cell for a method and k")
    return runs, sleb


def analyse(nll, players, runs, sleb):
    by_k = defaultdict(list)
    for removed, value in nll.items():
        by_k[len(removed)].append((value, sorted(removed)))
    for plans in by_k.values():
        plans.sort()
    played = {k for _, k, _, _ in runs}
    ks = sorted(k for k in by_k if 0 < k < len(players) and k in played)
    optimum = {k: by_k[k][0] for k in ks}
    results = []
    for label, k, removed, evaluations in runs:
        if k not in optimum:
            continue
        value = nll[removed]
        rank = 1 + sum(1 for other, _ in by_k[k] if other < value)
        results.append({
            "method": label, "k": k, "llm_evaluations": evaluations,
            "sleb_evaluations": sleb.get(k, ""),
            "removed_blocks": " ".join(map(str, sorted(removed))),
            "calibration_ppl": math.exp(value), "optimum_ppl": math.exp(optimum[k][0]),
            "gap": math.exp(value - optimum[k][0]) - 1, "rank": rank, "plans": len(by_k[k]),
        })
    return ks, optimum, by_k, results


def markdown(nll, players, ks, optimum, by_k, results):
    full = math.exp(nll[frozenset()])
    lines = [
        f"The game: {len(players)} players (blocks {players[0]}–{players[-1]}), every other block "
        f"kept; all {len(nll):,} masks measured. Full model: calibration perplexity {full:.2f}.",
        "",
        "| k | plans | the optimum (removed blocks) | its calibration PPL | SLEB's rank |",
        "|---:|---:|---|---:|---:|",
    ]
    ranks = {(r["method"], r["k"]): r["rank"] for r in results}
    for k in ks:
        value, removed = optimum[k]
        lines.append(f"| {k} | {len(by_k[k]):,} | {' '.join(map(str, removed))} | "
                     f"{math.exp(value):.2f} | {ranks.get(('sleb', k), '')} |")
    lines += [
        "",
        "Gap to the optimum: the plan's calibration perplexity over the optimum's, minus one "
        "(×N: N times the optimum's; `opt`: the optimum); then at how many k it found the "
        "optimum, the geometric mean gap over k, and its LLM evaluations over SLEB's (mean "
        "over k):",
        "",
        "| method | " + " | ".join(f"k = {k}" for k in ks) + " | optimal | mean gap | evaluations / SLEB's |",
        "|---|" + "---:|" * (len(ks) + 3),
    ]
    methods = []
    for r in results:
        if r["method"] not in methods:
            methods.append(r["method"])
    for method in methods:
        mine = {r["k"]: r for r in results if r["method"] == method}
        cells = []
        for k in ks:
            r = mine.get(k)
            cells.append("" if r is None else "opt" if r["rank"] == 1 else gap_text(r["gap"]))
        done = [mine[k] for k in ks if k in mine]
        optimal = sum(1 for r in done if r["rank"] == 1)
        mean_gap = math.exp(sum(math.log1p(r["gap"]) for r in done) / len(done)) - 1
        ratios = [r["llm_evaluations"] / r["sleb_evaluations"] for r in done if r["sleb_evaluations"]]
        ratio = f"{sum(ratios) / len(ratios):.2f}" if ratios else ""
        lines.append(f"| {method} | " + " | ".join(cells)
                     + f" | {optimal} of {len(done)} | {gap_text(mean_gap, 2)} | {ratio} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", type=Path, required=True)
    parser.add_argument("--frontier", type=Path, required=True)
    parser.add_argument("--plans", action="append", default=[],
                        help="NAME=plans.parquet: another method's plans (repeatable)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    plan_tables = []
    for item in args.plans:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--plans {item!r}: expected NAME=PATH")
        plan_tables.append((name, Path(path)))
    nll, players = read_game(args.game)
    runs, sleb = read_runs(args.frontier, plan_tables, nll)
    ks, optimum, by_k, results = analyse(nll, players, runs, sleb)
    emit(markdown(nll, players, ks, optimum, by_k, results), args.out)
    if args.csv and results:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(results[0].keys()))
            writer.writeheader()
            for r in results:
                writer.writerow({**r, "calibration_ppl": f"{r['calibration_ppl']:.4f}",
                                 "optimum_ppl": f"{r['optimum_ppl']:.4f}", "gap": f"{r['gap']:.6f}"})


if __name__ == "__main__":
    main()
