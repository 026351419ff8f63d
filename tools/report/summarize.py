"""Print (and write as markdown) a pipeline run's results: for each method and number of
removed blocks, the perplexity of the pruned model on the evaluation text and the number of
LLM evaluations the method used; then the pruned model the demo wrote.

Usage: python summarize.py --run build/runs/smollm2-135m --methods sleb surrogate-shapley ... [--k-pruned 6]
                           [--out table.md] [--plot-dir DIR [--scores TABLE ...] [--metrics TABLE ...]]

--plot-dir writes the run's figures with matplotlib (tools/report/plots.py; `make venv-report`):
ppl-vs-k.svg, contributions.svg (score tables, with intervals where they have them) and
surrogate-fit.svg (fit-surrogate's cross-validation metrics). The score and metrics tables are
those named by --scores and --metrics (`make results` names those its methods' plans were made
from, as a run folder may hold tables other settings left); without either, every one in the run
folder. A figure with no table to draw is removed from DIR, not left from an earlier run. Without
--plot-dir only pyarrow is needed.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: layerprune_tables.py
from layerprune_tables import (TableError, chosen_on, current_method_name, provenance_inputs,  # noqa: E402
                               read_metadata, read_table, renamed_method)

# The runner-up's margin and how clearly it separates, as `make prune`'s summary reads them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "prune"))
import report as prune_report  # noqa: E402


def fail(message):
    sys.exit(f"summarize: {message}")


def model_in(metadata: dict) -> str | None:
    """The model a table was measured with (its decoded metadata): `model_id`, or the model of
    its `inputs`; None where it records neither."""
    return metadata.get("layerprune.model_id") or provenance_inputs(metadata).get("model")


def metadata_of(path: Path) -> dict:
    """The decoded metadata of the Parquet file at `path`; one that is not Parquet is refused."""
    try:
        return read_metadata(path)
    except TableError as error:
        fail(str(error))


def read_rows(path: Path, kind: str, dataset: str | None = None, model: str | None = None):
    """The rows of one of the run's tables, refused with the reason when it is missing, of another
    kind, an evaluation table not complete, measured on other tokens than `dataset` (the
    evaluation text's), plans chosen on those tokens, or with another model than `model` (the
    full model's evaluation's; a model of the same tokenizer gives the same tokens): the numbers
    printed are then not what their heading says."""
    try:
        metadata, table = read_table(path, kind, "make demo, or make results")
    except TableError as error:
        fail(str(error))
    rows = table.to_pylist()
    if kind == "evaluations" and metadata.get("layerprune.complete") != "true":
        fail(f"{path}: an incomplete evaluation table (a checkpoint or a cache), not a finished run")
    measured_on = metadata.get("layerprune.dataset_id") or provenance_inputs(metadata).get("dataset")
    if dataset and measured_on != dataset:
        fail(f"{path}: measured on other tokens than the evaluation text's (tokens-eval.parquet): "
             "a plan table of the calibration tokens, or of an older run")
    # The project's rule: plans are chosen on calibration text only. A plan table records what its
    # plans were chosen on (none before 2026-12-06): a choice that read the evaluation text is not
    # a held-out result.
    if dataset and dataset in chosen_on(metadata):
        fail(f"{path}: its plans were chosen on the evaluation text's tokens (tokens-eval.parquet is "
             "in its chosen_on): their perplexity there is not a held-out measurement")
    measured_with = model_in(metadata)
    if model and measured_with and measured_with != model:
        fail(f"{path}: measured with another model ({measured_with[:12]}…) than the full model's evaluation "
             f"(full-eval.parquet, {model[:12]}…): a table of an older run or another model")
    if not rows:
        fail(f"{path}: no rows")
    return rows


def ppl_text(ppl) -> str:
    """A perplexity as the tables print it: two decimals, or three significant digits past a
    million (a random plan's can reach 1e15), 'nan' where the loss was not finite."""
    if ppl is None or not math.isfinite(ppl):
        return "nan" if ppl is not None else "-"
    return f"{ppl:.2f}" if ppl < 1e6 else f"{ppl:.3g}"


def source_of(run: Path) -> str:
    """The evaluation text the plans were measured on (the token table's `source` entry)."""
    path = run / "tokens-eval.parquet"
    if not path.exists():
        return "unrecorded text"
    return metadata_of(path).get("layerprune.source", "unrecorded text")


def write_plots(plot_dir: Path, run: Path, methods, ks, plans, full_ppl, score_tables=None,
                metric_tables=None):
    """The run's figures (tools/report/plots.py): perplexity against k, the contribution scores
    of the score tables, and the surrogates' cross-validated fit. The tables are those given;
    None: every one in the run folder. A figure with nothing to draw is removed, so one an earlier
    run drew from other tables is not left beside the new ones."""
    import plots

    if score_tables is None:
        score_tables = [path for path in sorted(run.glob("scores-*.parquet"))
                        if not path.stem.startswith("scores-random-")]
    if metric_tables is None:
        metric_tables = sorted(run.glob("surrogate*-metrics.parquet"))
    written = [plots.ppl_vs_k(plot_dir / "ppl-vs-k.svg", methods, ks, plans, full_ppl)]
    scores = {Path(path).stem.removeprefix("scores-"): pq.read_table(path).to_pylist()
              for path in score_tables}
    metrics = [row for path in metric_tables for row in pq.read_table(path).to_pylist()]
    for name, rows, draw in [("contributions.svg", scores, plots.contributions),
                             ("surrogate-fit.svg", metrics, plots.surrogate_fit)]:
        if rows:
            written.append(draw(plot_dir / name, rows))
        else:
            (plot_dir / name).unlink(missing_ok=True)
    return written


def check_pruned_folder(folder: Path, plan: dict):
    """Refuses a pruned folder that removes other blocks than the plan said to be written to it:
    the pipelines write the folder (from the plan as chosen) and the plan's measurement on the
    evaluation text in steps of their own, and a folder left from another plan would be reported
    under this one's blocks. A folder not there (or written before its manifest recorded
    `pruned_from`) is not checked."""
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return
    try:
        pruned_from = json.loads(manifest.read_text()).get("pruned_from") or {}
    except (OSError, ValueError, AttributeError) as error:
        fail(f"{manifest}: not a readable model manifest ({error})")
    removed = pruned_from.get("removed_blocks")
    if removed is not None and sorted(removed) != sorted(plan["removed_blocks"]):
        fail(f"{manifest}: the pruned folder removes blocks {sorted(removed)}, but its plan "
             f"({folder.parent / (folder.name + '-plan.parquet')}) blocks {sorted(plan['removed_blocks'])}: "
             "one was made from another plan; make them again")


def ratio_clause(plan: dict):
    """The plan's perplexity ratio to the full model on the evaluation text, with its range at
    two standard errors over the windows, when the plan table has the full model beside it."""
    return f"; {prune_report.ratio_text(plan)}" if prune_report.ratio_interval(plan) else ""


def rival_lines(calibration_plans: Path, plan: dict):
    """The written plan's runner-up on the calibration text (the best other set of as many blocks
    its method measured) and the margin, when the plan table records one."""
    if not calibration_plans.exists():
        return []
    rows = [r for r in pq.read_table(calibration_plans).to_pylist()
            if r["k"] == plan["k"] and sorted(r["removed_blocks"]) == sorted(plan["removed_blocks"])]
    found = prune_report.rival_margin(rows[0]) if rows else None
    if found is None:
        return []
    rival, _, margin, se = found
    within = f" ± {se:.4f} nats ({margin / se:.1f} standard errors)" if se else " nats"
    verdict = (" — the calibration text does not tell them apart; either is as defensible"
               if prune_report.separation(margin, se) == "none" else "")
    return [f"Its closest rival on the calibration text: blocks {sorted(rival)}, "
            f"margin {margin:.4f}{within}{verdict} (docs/results.md, \"How far the runner-up is\")."]


def random_means(plans: dict, seeds, ks):
    """The random seeds' row: its label and {k: the mean of the seeds' perplexities at k}. The
    label says how many seeds each mean is over: "random (mean of N)" where every k's is over N,
    and where some k have fewer (a seed without a plan or a perplexity there) the range in the
    label and each cell's own count, so a mean is never said to be over seeds it left out."""
    averaged, counts = {}, {}
    for k in ks:
        rows = [plans[(m, k)] for m in seeds if (m, k) in plans and plans[(m, k)]["measured_ppl"]]
        if rows:
            counts[k] = len(rows)
            averaged[k] = {"measured_ppl": sum(r["measured_ppl"] for r in rows) / len(rows),
                           "llm_evaluations": rows[0]["llm_evaluations"], "removed_blocks": []}
    if len(set(counts.values())) <= 1:
        return f"random (mean of {next(iter(counts.values()), 0)})", averaged
    for k, row in averaged.items():
        row["note"] = f"mean of {counts[k]}"
    return f"random (mean of {min(counts.values())}–{max(counts.values())})", averaged


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--methods", nargs="+", required=True)
    parser.add_argument("--k-pruned", type=int)
    parser.add_argument("--out", type=Path, help="markdown file to write (default RUN/results.md)")
    parser.add_argument("--plot-dir", type=Path,
                        help="folder for the figures (ppl-vs-k.svg, contributions.svg, surrogate-fit.svg)")
    parser.add_argument("--scores", type=Path, nargs="*",
                        help="the score tables of contributions.svg (default: every one in the run)")
    parser.add_argument("--metrics", type=Path, nargs="*",
                        help="the surrogate metrics tables of surrogate-fit.svg (default: every one in the run)")
    args = parser.parse_args()
    # Methods by the names the stages and Make give them now: an old name would read a plan file
    # a run made before the names changed left behind (plans/published.parquet).
    for refusal in filter(None, map(renamed_method, args.methods)):
        parser.error(f"--methods: {refusal}")

    tokens = args.run / "tokens-eval.parquet"
    dataset = metadata_of(tokens).get("layerprune.dataset_id", "") if tokens.exists() else None
    full_eval = args.run / "full-eval.parquet"
    full = read_rows(full_eval, "evaluations", dataset)[0]
    model = model_in(metadata_of(full_eval))
    plans = {}
    for method in args.methods:
        for row in read_rows(args.run / "plans" / f"{method}.parquet", "plans", dataset, model):
            plans[(method, row["k"])] = row
    ks = sorted({k for _, k in plans})
    # Methods named random-1, random-2, ... are seeds of one method: report their arithmetic
    # mean (docs/results.md says so: one bad draw dominates it).
    seeds = [m for m in args.methods if m.startswith("random-")]
    if seeds:
        label, averaged = random_means(plans, seeds, ks)
        for k, row in averaged.items():
            plans[(label, k)] = row
        first = args.methods.index(seeds[0])
        args.methods = [m for m in args.methods if m not in seeds]
        args.methods.insert(first, label)
    lines = [f"Perplexity on the evaluation text ({full['tokens_scored']} tokens of "
             f"{source_of(args.run)}); full model: "
             f"{ppl_text(full['ppl'])}. Cell: PPL (LLM evaluations used).", "",
             "| method | " + " | ".join(f"k = {k}" for k in ks) + " |",
             "|---|" + "---:|" * len(ks)]
    for method in args.methods:
        cells = []
        for k in ks:
            row = plans.get((method, k))
            note = f"; {row['note']}" if row is not None and row.get("note") else ""
            cells.append("-" if row is None or row["measured_ppl"] is None
                         else f"{ppl_text(row['measured_ppl'])} ({row['llm_evaluations']}{note})")
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
        plan = read_rows(args.run / f"pruned-k{args.k_pruned}-plan.parquet", "plans", dataset, model)[0]
        # By its name now, the name of its plan files (the pruned plan is the recommended
        # method's, adaptive-raced, whose name did not change; a plan recorded by an old name,
        # one-shot:surrogate-shapley, is looked for under the name now, and a run made before the
        # names changed has its rival's lines left out where that file is not there).
        method = current_method_name(plan["method"])
        check_pruned_folder(args.run / f"pruned-k{args.k_pruned}", plan)
        # The pruned folder is a model of its own (its model_id is not the full model's).
        after = read_rows(pruned_eval, "evaluations", dataset)[0]
        lines += ["", f"Pruned model written to {args.run / f'pruned-k{args.k_pruned}'}: "
                  f"blocks {sorted(plan['removed_blocks'])} removed ({method}); "
                  f"perplexity {ppl_text(full['ppl'])} before, {ppl_text(after['ppl'])} after "
                  f"(the pruned folder evaluated on its own{ratio_clause(plan)})."]
        lines += rival_lines(args.run / "plans" / f"{method}-calibration.parquet", plan)
    text = "\n".join(lines) + "\n"
    out = args.out or args.run / "results.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    if args.plot_dir:
        for path in write_plots(args.plot_dir, args.run, args.methods, ks, plans, full["ppl"],
                                args.scores, args.metrics):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
