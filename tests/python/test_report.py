"""The report tools (tools/report, tools/tasks/summarize.py) on a small made-up run folder: the
results table, every figure (matplotlib, tools/report/plots.py) written into the run folder
and nowhere else, the frontier table and plot, and the masks of plan tables with and without
their mask_id column. Needs pyarrow and matplotlib, not torch."""

import csv
import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "tools" / "report"
NUM_BLOCKS = 6
# The evaluation text's dataset id, which the run's plans and evaluations record.
EVAL = "eval-tokens"
FINISHED = {"table": "evaluations", "format_version": 1, "complete": "true", "dataset_id": EVAL}


def write(path: Path, columns: dict, metadata: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(columns).replace_schema_metadata(
        {f"layerprune.{k}": str(v) for k, v in metadata.items()})
    pq.write_table(table, path)


def mask_id(removed):
    return "".join("0" if b in removed else "1" for b in range(NUM_BLOCKS))


def plan_table(path: Path, plans, with_mask_id=True, dataset=EVAL):
    columns = {
        "method": [p[0] for p in plans],
        "k": pa.array([len(p[1]) for p in plans], pa.uint32()),
        "removed_blocks": pa.array([p[1] for p in plans], pa.list_(pa.uint32())),
        "predicted_value": pa.array([None] * len(plans), pa.float64()),
        "measured_nll": [p[2] for p in plans],
        "measured_ppl": [2.718281828 ** p[2] for p in plans],
        "llm_evaluations": pa.array([5] * len(plans), pa.uint64()),
    }
    if with_mask_id:
        columns["mask_id"] = [mask_id(p[1]) for p in plans]
    write(path, columns, {"table": "plans", "format_version": 1, "num_blocks": NUM_BLOCKS,
                          "inputs": json.dumps({"dataset": dataset})})


def make_run(run: Path):
    plan_table(run / "plans" / "sleb.parquet", [("sleb", [4], 3.1), ("sleb", [3, 4], 3.4)])
    # As apply-prune recorded a one-shot plan before the names were made one (one-shot:<estimator>).
    plan_table(run / "plans" / "surrogate-shapley.parquet",
               [("one-shot:surrogate-shapley", [5], 3.2), ("one-shot:surrogate-shapley", [4, 5], 3.6)],
               with_mask_id=False)
    write(run / "full-eval.parquet",
          {"mask_id": ["1" * NUM_BLOCKS], "nll": [3.0], "ppl": [2.718281828 ** 3],
           "tokens_scored": pa.array([124], pa.uint64())},
          FINISHED)
    write(run / "tokens-eval.parquet", {"window_index": pa.array([0], pa.uint32())},
          {"table": "tokens", "format_version": 1, "source": "held-out passages", "dataset_id": EVAL})
    blocks = list(range(NUM_BLOCKS))
    write(run / "scores-published.parquet",
          {"block": pa.array(blocks, pa.uint32()), "estimate": [0.1 * b for b in blocks],
           "std_error": [0.01] * NUM_BLOCKS, "ci_low": [0.1 * b - 0.02 for b in blocks],
           "ci_high": [0.1 * b + 0.02 for b in blocks],
           "estimator": ["stratified-semivalue"] * NUM_BLOCKS},
          {"table": "scores", "format_version": 1})
    write(run / "scores-baselines.parquet",
          {"block": pa.array(blocks * 2, pa.uint32()), "estimate": [1.0 - 0.1 * b for b in blocks * 2],
           "std_error": pa.array([None] * 2 * NUM_BLOCKS, pa.float64()),
           "ci_low": pa.array([None] * 2 * NUM_BLOCKS, pa.float64()),
           "ci_high": pa.array([None] * 2 * NUM_BLOCKS, pa.float64()),
           "estimator": ["block-influence"] * NUM_BLOCKS + ["angular"] * NUM_BLOCKS},
          {"table": "scores", "format_version": 1})
    write(run / "surrogate-metrics.parquet",
          {"kind": ["mlp"] * 3, "value": ["utility"] * 3,
           "fold": pa.array([0, 1, -1], pa.int32()), "r2": [0.5, 0.7, 0.6],
           "spearman": [0.8, 0.9, 0.85]},
          {"table": "surrogate_metrics", "format_version": 1})
    # As fit-surrogate wrote it before 2026-12-04, the value's column named `target` (and
    # before 2026-12-05 the kind's `surrogate`).
    write(run / "surrogate-quadratic-metrics.parquet",
          {"surrogate": ["quadratic"] * 2, "target": ["nll-increase"] * 2,
           "fold": pa.array([0, -1], pa.int32()), "r2": [0.9, 0.9],
           "spearman": [0.95, 0.95]},
          {"table": "surrogate_metrics", "format_version": 1})


def is_svg(path: Path):
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg"), root.tag


def test_summarize_writes_the_table_and_every_figure_into_the_run(tmp_path):
    run = tmp_path / "run"
    make_run(run)
    subprocess.run([sys.executable, str(REPORT / "summarize.py"), "--run", str(run),
                    "--methods", "sleb", "surrogate-shapley", "--out", str(run / "results-table.md"),
                    "--plot-dir", str(run / "plots")], check=True, capture_output=True)
    table = (run / "results-table.md").read_text()
    assert "held-out passages" in table
    assert "| sleb | 22.20 (5) | 29.96 (5) |" in table
    assert "- surrogate-shapley: k=1: [5]; k=2: [4, 5]" in table
    figures = sorted(p.name for p in (run / "plots").iterdir())
    assert figures == ["contributions.svg", "ppl-vs-k.svg", "surrogate-fit.svg"]
    for name in figures:
        is_svg(run / "plots" / name)
    # Reproducible: the same tables give the same bytes.
    first = (run / "plots" / "ppl-vs-k.svg").read_bytes()
    subprocess.run([sys.executable, str(REPORT / "summarize.py"), "--run", str(run),
                    "--methods", "sleb", "surrogate-shapley", "--out", str(run / "results-table.md"),
                    "--plot-dir", str(run / "plots")], check=True, capture_output=True)
    assert (run / "plots" / "ppl-vs-k.svg").read_bytes() == first
    # Nothing was written outside the run folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_summarize_draws_only_the_tables_it_is_given(tmp_path):
    """make results names the score and metrics tables its methods' plans were made from: the run
    folder may hold others, left by a run with other settings, which the figures were drawn from.
    A figure with no table left is removed, not kept from the earlier run."""
    run, alone = tmp_path / "run", tmp_path / "alone"
    make_run(run)
    make_run(alone)
    for name in ("scores-published.parquet", "surrogate-metrics.parquet", "surrogate-quadratic-metrics.parquet"):
        (alone / name).unlink()

    def summarize(folder, *extra):
        subprocess.run([sys.executable, str(REPORT / "summarize.py"), "--run", str(folder),
                        "--methods", "sleb", "surrogate-shapley", "--out", str(folder / "results-table.md"),
                        "--plot-dir", str(folder / "plots"), *extra], check=True, capture_output=True)
        return sorted(p.name for p in (folder / "plots").iterdir())

    assert summarize(run) == ["contributions.svg", "ppl-vs-k.svg", "surrogate-fit.svg"]
    every = (run / "plots" / "contributions.svg").read_bytes()
    assert summarize(alone) == ["contributions.svg", "ppl-vs-k.svg"]
    assert summarize(run, "--scores", str(run / "scores-baselines.parquet"), "--metrics") == [
        "contributions.svg", "ppl-vs-k.svg"]
    named = (run / "plots" / "contributions.svg").read_bytes()
    assert named != every and named == (alone / "plots" / "contributions.svg").read_bytes()
    assert summarize(run, "--scores", "--metrics") == ["ppl-vs-k.svg"]


def test_summarize_refuses_tables_that_are_not_what_their_heading_says(tmp_path):
    def summarize():
        return subprocess.run([sys.executable, str(REPORT / "summarize.py"), "--run", str(run),
                               "--methods", "sleb", "--out", str(run / "results.md")],
                              capture_output=True, text=True)

    run = tmp_path / "run"
    make_run(run)
    assert summarize().returncode == 0
    # The calibration plans in place of the evaluation text's.
    plan_table(run / "plans" / "sleb.parquet", [("sleb", [4], 3.1)], dataset="calibration-tokens")
    result = summarize()
    assert result.returncode == 1 and "measured on other tokens than the evaluation text" in result.stderr
    make_run(run)
    # A checkpoint (or a cache) in place of the full model's finished evaluation.
    write(run / "full-eval.parquet", {"mask_id": ["1" * NUM_BLOCKS], "nll": [3.0], "ppl": [20.1],
                                      "tokens_scored": pa.array([124], pa.uint64())},
          {**FINISHED, "complete": "false"})
    result = summarize()
    assert result.returncode == 1 and "an incomplete evaluation table" in result.stderr
    # Another kind of table, and a missing one: the reason, not a traceback.
    make_run(run)
    (run / "plans" / "sleb.parquet").write_bytes((run / "full-eval.parquet").read_bytes())
    result = summarize()
    assert result.returncode == 1 and "a table of kind 'evaluations', where a plans table was expected" in result.stderr
    (run / "plans" / "sleb.parquet").unlink()
    result = summarize()
    assert result.returncode == 1 and "sleb.parquet: missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_written_model_comes_with_its_runner_up_on_the_calibration_text(tmp_path):
    run = tmp_path / "run"
    make_run(run)
    plan_table(run / "pruned-k2-plan.parquet", [("adaptive", [3, 4], 3.5)])
    write(run / "pruned-k2-eval.parquet",
          {"mask_id": [mask_id([3, 4])], "nll": [3.5], "ppl": [2.718281828 ** 3.5]},
          FINISHED)
    calibration = run / "plans" / "adaptive-calibration.parquet"
    plan_table(calibration, [("adaptive", [4], 3.1), ("adaptive", [3, 4], 3.4)])
    table = pq.read_table(calibration)
    table = (table.append_column("runner_up_removed_blocks", pa.array([None, [2, 4]], pa.list_(pa.uint32())))
             .append_column("runner_up_nll", pa.array([None, 3.405], pa.float64()))
             .append_column("runner_up_margin_se", pa.array([None, 0.01], pa.float64())))
    pq.write_table(table, calibration)
    out = subprocess.run([sys.executable, str(REPORT / "summarize.py"), "--run", str(run),
                          "--methods", "sleb", "--k-pruned", "2", "--out", str(run / "results.md")],
                         check=True, capture_output=True, text=True).stdout
    assert "blocks [3, 4] removed (adaptive)" in out
    # A plan table written before the full-model columns: no ratio range.
    assert "standard errors over its windows" not in out
    assert "closest rival on the calibration text: blocks [2, 4], margin 0.0050 ± 0.0100 nats (0.5 standard" in out
    assert "does not tell them apart" in out
    # A plan table written before the runner-up columns: no such line.
    plan_table(calibration, [("adaptive", [3, 4], 3.4)])
    out = subprocess.run([sys.executable, str(REPORT / "summarize.py"), "--run", str(run),
                          "--methods", "sleb", "--k-pruned", "2", "--out", str(run / "results.md")],
                         check=True, capture_output=True, text=True).stdout
    assert "blocks [3, 4] removed" in out and "closest rival" not in out


def test_the_written_model_of_a_plan_recorded_by_an_old_name_is_named_and_found_by_the_name_now(tmp_path):
    """A pruned model's plan recorded before the method names were made one (one-shot:<estimator>):
    its method is printed by its name now, and its calibration plans are the plan file of that
    name (plans/surrogate-shapley-calibration.parquet), whose runner-up is reported."""
    run = tmp_path / "run"
    make_run(run)
    plan_table(run / "pruned-k2-plan.parquet", [("one-shot:surrogate-shapley", [4, 5], 3.6)])
    write(run / "pruned-k2-eval.parquet",
          {"mask_id": [mask_id([4, 5])], "nll": [3.6], "ppl": [2.718281828 ** 3.6]},
          FINISHED)
    calibration = run / "plans" / "surrogate-shapley-calibration.parquet"
    plan_table(calibration, [("one-shot:surrogate-shapley", [4, 5], 3.4)])
    table = pq.read_table(calibration)
    table = (table.append_column("runner_up_removed_blocks", pa.array([[3, 5]], pa.list_(pa.uint32())))
             .append_column("runner_up_nll", pa.array([3.405], pa.float64()))
             .append_column("runner_up_margin_se", pa.array([0.01], pa.float64())))
    pq.write_table(table, calibration)
    out = subprocess.run([sys.executable, str(REPORT / "summarize.py"), "--run", str(run),
                          "--methods", "sleb", "--k-pruned", "2", "--out", str(run / "results.md")],
                         check=True, capture_output=True, text=True).stdout
    assert "blocks [4, 5] removed (surrogate-shapley)" in out, out
    assert "closest rival on the calibration text: blocks [3, 5]" in out, out


def write_frontier(path: Path, rows, budget_spec=False):
    fields = ["method", "k", "calibration_set", "llm_evaluations", "removed_blocks",
              "calibration_ppl", "lambada_ppl", "recommended", "budget"]
    fields += ["budget_spec"] if budget_spec else []
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        writer.writerows(rows)


def test_frontier_table_and_plot(tmp_path):
    path = tmp_path / "frontier.csv"
    rows = [("full", 0, "c0", 1, "", 20.0, 21.0, "false", "", "")]
    for k in (1, 2):
        rows += [("sleb", k, "c0", 10 * k, "4", 25.0 * k, 26.0 * k, "false", "", ""),
                 ("adaptive", k, "c0", 5 * k, "4", 25.0 * k, 26.5 * k, "true", 8 * k,
                  "least 0.25sleb"),
                 ("adaptive", k, "c0", 9 * k, "4", 24.0 * k, 25.5 * k, "true", 16 * k, "sleb"),
                 ("reverse", k, "c0", 1, "5", 500.0, 900.0, "false", "", ""),
                 ("best-known", k, "c0", 30, "4", 24.0 * k, 25.5 * k, "false", "", "")]
    write_frontier(path, rows, budget_spec=True)
    subprocess.run([sys.executable, str(REPORT / "frontier.py"), str(path),
                    "--out", str(tmp_path / "frontier.md"), "--plot", str(tmp_path / "frontier.svg")],
                   check=True, capture_output=True)
    table = (tmp_path / "frontier.md").read_text()
    assert "### k = 2" in table
    # A budgeted run is named by its budget and the budgets asked for that came to it.
    assert "adaptive, budget 16 (least, 0.25sleb)" in table, table
    assert "adaptive, budget 32 (sleb)" in table, table
    # A plan 35 times the best one's perplexity reads as such, not as +3,429.4 %.
    assert "| reverse | 1 | 500.00 | 900.0 | ×35 |" in table, table
    is_svg(tmp_path / "frontier.svg")


def test_frontier_says_what_its_means_are_over_and_refuses_what_it_cannot_read(tmp_path):
    def frontier(rows):
        write_frontier(tmp_path / "frontier.csv", rows, budget_spec=True)
        return subprocess.run([sys.executable, str(REPORT / "frontier.py"), str(tmp_path / "frontier.csv")],
                              capture_output=True, text=True)

    rows = [(m, 1, s, 10, "4", 25.0 + i, 26.0 + i, "false", "", "")
            for m in ("sleb", "best-known") for i, s in enumerate(("c0", "c1"))]
    # SLEB's row of set c1 missing: its mean is over c0 alone, and the table says so.
    out = frontier(rows[1:]).stdout
    assert "| sleb (sets c1 only) |" in out and "| best-known |" in out, out
    for broken, expected in [([], "no rows"),
                             ([rows[0][:5] + (0.0,) + rows[0][6:]], "a perplexity is above 0"),
                             ([rows[0][:5] + ("",) + rows[0][6:]], "line 2 (sleb)")]:
        result = frontier(broken)
        assert result.returncode != 0 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_frontier_reports_read_a_method_recorded_by_its_old_name_by_the_name_now(tmp_path):
    """frontier.csv files written before the method names were made one (docs/results/*.csv)
    say `shapley` for surrogate-shapley: the reports name it, and select it, by the name now."""
    rows = [("full", 0, "c0", 1, "", 20.0, 21.0, "false", "", ""),
            ("shapley", 1, "c0", 200, "4", 25.0, 26.0, "false", "", ""),
            ("sleb", 1, "c0", 10, "4", 25.0, 26.0, "false", "", ""),
            ("best-known", 1, "c0", 30, "4", 25.0, 26.0, "false", "", "")]
    write_frontier(tmp_path / "frontier.csv", rows, budget_spec=True)
    table = subprocess.run([sys.executable, str(REPORT / "frontier.py"), str(tmp_path / "frontier.csv")],
                           check=True, capture_output=True, text=True).stdout
    assert "| surrogate-shapley | 200 |" in table and "| shapley |" not in table, table
    out = tmp_path / "windows.md"
    subprocess.run([sys.executable, str(REPORT / "calibration_windows.py"), f"10={tmp_path / 'frontier.csv'}",
                    "--methods", "surrogate-shapley", "--out", str(out)], check=True, capture_output=True)
    lines = [line for line in out.read_text().splitlines() if line.startswith("| 10 ")]
    assert lines == ["| 10 | surrogate-shapley | 200 | 2,000 | 1 of 1 | 26.0 |"], lines
    # A method asked for by its old name is refused naming the new one where the file holds it
    # (the tools take the names every stage writes), before anything is written; an old name of
    # a method the frontier does not play, or any other name it did not play, is refused as such
    # (calibration_windows left its rows out without a word).
    out.unlink()
    frontier_csv = str(tmp_path / "frontier.csv")
    for tool, args, status, expected in (
            ("calibration_windows.py", [f"10={frontier_csv}", "--methods", "sleb,shapley"], 1,
             "--methods: shapley is now named surrogate-shapley"),
            ("calibration_windows.py", [f"10={frontier_csv}", "--methods", "sleb,published"], 1,
             "--methods: no run played published (their methods: sleb, surrogate-shapley)"),
            ("frontier_pairs.py", ["table", frontier_csv, "--heldout", "x=y", "--against", "shapley"], 1,
             "--against shapley is now named surrogate-shapley"),
            ("frontier_pairs.py", ["table", frontier_csv, "--heldout", "x=y", "--against", "published"], 1,
             "--against published: no plans of that method in the frontier.csv"),
            ("summarize.py", ["--run", str(tmp_path), "--methods", "sleb", "published"], 2,
             "--methods: published is now named stratified-semivalue")):
        refused = subprocess.run([sys.executable, str(REPORT / tool), *args, "--out", str(out)],
                                 capture_output=True, text=True)
        assert refused.returncode == status and expected in refused.stderr, (tool, args, refused.stderr)
        assert "now named" not in refused.stderr or "published" not in args or tool == "summarize.py", refused.stderr
        assert not out.exists(), tool


def test_calibration_windows_puts_runs_side_by_side_at_their_compute(tmp_path):
    # Ten windows: SLEB at 10 evaluations; twenty windows: adaptive at 6 (two sets that disagree).
    write_frontier(tmp_path / "w10.csv", [
        ("full", 0, "c0", 1, "", 20.0, 21.0, "false", ""),
        ("sleb", 2, "c0", 10, "4 5", 25.0, 30.0, "false", ""),
        ("sleb", 2, "c1", 10, "4 5", 26.0, 30.0, "false", "")])
    write_frontier(tmp_path / "w20.csv", [
        ("adaptive", 2, "c0", 6, "4 5", 25.0, 27.0, "true", 6),
        ("adaptive", 2, "c1", 6, "3 5", 25.0, 27.0, "true", 6),
        ("adaptive-raced", 2, "c0", 8, "4 6", 24.0, 26.0, "true", 8),
        ("reverse", 2, "c0", 1, "6 7", 500.0, 900.0, "false", "")])
    out = tmp_path / "windows.md"
    subprocess.run([sys.executable, str(REPORT / "calibration_windows.py"),
                    f"10={tmp_path / 'w10.csv'}", f"20={tmp_path / 'w20.csv'}", "--out", str(out)],
                   check=True, capture_output=True)
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 10 ") or line.startswith("| 20 ")]
    # Sorted by evaluations × windows (100 before 120); the recommended method shown by default;
    # methods not asked for (reverse) left out.
    assert rows == ["| 10 | sleb | 10 | 100 | 1 of 2 | 30.0 (30.0–30.0) |",
                    "| 20 | adaptive, budget 6 | 6 | 120 | 2 of 2 | 27.0 (27.0–27.0) |",
                    "| 20 | adaptive-raced, budget 8 | 8 | 160 | 1 of 1 | 26.0 |"]
    bad = subprocess.run([sys.executable, str(REPORT / "calibration_windows.py"), "ten=x.csv"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "WINDOWS=CSV" in bad.stderr


def test_estimator_rmse_plot(tmp_path):
    results = tmp_path / "results.csv"
    results.write_text("estimator,budget,seed,evaluations,rmse,spearman,rmse_own,surrogate_r2\n"
                       + "".join(f"{e},{b},{s},{b},{r / b:.6e},0.9,0,\n"
                                 for e, r in (("permutation", 1.0), ("kernel-shap", 0.5))
                                 for b in (64, 256) for s in (0, 1)))
    subprocess.run([sys.executable, str(REPORT / "plots.py"), "estimator-rmse", str(results),
                    str(tmp_path / "rmse.svg")], check=True, capture_output=True)
    is_svg(tmp_path / "rmse.svg")
    assert "kernel-shap" in (tmp_path / "rmse.svg").read_text()
    bad = subprocess.run([sys.executable, str(REPORT / "plots.py"), "nonsense"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "usage" in bad.stderr


def test_task_labels_use_the_plans_mask_id(tmp_path):
    run = tmp_path / "run"
    make_run(run)
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "tasks" / "summarize.py"), "masks",
                          str(run / "plans" / "sleb.parquet"), str(run / "plans" / "surrogate-shapley.parquet")],
                         check=True, capture_output=True, text=True).stdout
    assert out.split("\n") == ["111101 sleb 1", "111001 sleb 2",
                               "111110 surrogate-shapley 1", "111100 surrogate-shapley 2", ""]


def test_the_written_model_comes_with_its_ratio_to_the_full_model(tmp_path):
    run = tmp_path / "run"
    make_run(run)
    plan_path = run / "pruned-k2-plan.parquet"
    plan_table(plan_path, [("adaptive", [3, 4], 3.5)])
    table = pq.read_table(plan_path)
    table = (table.append_column("full_model_nll", pa.array([3.1], pa.float64()))
             .append_column("nll_increase_se", pa.array([0.05], pa.float64())))
    pq.write_table(table, plan_path)
    write(run / "pruned-k2-eval.parquet",
          {"mask_id": [mask_id([3, 4])], "nll": [3.5], "ppl": [2.718281828 ** 3.5]},
          FINISHED)
    plan_table(run / "plans" / "adaptive-calibration.parquet", [("adaptive", [3, 4], 3.4)])
    out = subprocess.run([sys.executable, str(REPORT / "summarize.py"), "--run", str(run),
                          "--methods", "sleb", "--k-pruned", "2", "--out", str(run / "results.md")],
                         check=True, capture_output=True, text=True).stdout
    # exp(0.4) = 1.492, exp(0.3) = 1.350, exp(0.5) = 1.649.
    assert "evaluated on its own; 1.492x; 1.350-1.649x at two standard errors over its windows)" in out


def write_windows(path: Path, plans):
    """An evaluation table of (removed blocks, NLL of each window) rows, as evaluate writes it."""
    columns = {
        "kept": pa.array([[b not in removed for b in range(NUM_BLOCKS)] for removed, _ in plans],
                         pa.list_(pa.bool_())),
        "nll": [sum(w) / len(w) for _, w in plans],
        "window_nll": pa.array([w for _, w in plans], pa.list_(pa.float64())),
    }
    write(path, columns, {"table": "evaluations", "format_version": 1})


def test_frontier_pairs_tells_a_difference_from_the_windows_noise(tmp_path):
    import math

    base = [2.0, 3.0, 2.5, 3.5]
    windows = {
        (4, 5): base,                                   # SLEB's plan on both sets
        (3, 5): [w - 0.1 for w in base],                # better on every window: beyond 2 se
        (2, 5): [w + d for w, d in zip(base, [0.3, -0.3, 0.3, -0.29])],  # a tie
        (0, 1): [w + 1.0 for w in base],                # e times the perplexity
    }
    ppl = {removed: math.exp(sum(w) / len(w)) for removed, w in windows.items()}
    rows = [("full", 0, "c0", 1, "", 20.0, 21.0, "false", "")]
    for s, adaptive, loo in [("c0", (3, 5), (2, 5)), ("c1", (4, 5), (2, 5))]:
        rows += [("sleb", 2, s, 10, "4 5", 25.0, ppl[(4, 5)], "false", ""),
                 ("adaptive", 2, s, 6, " ".join(map(str, adaptive)), 25.0, ppl[adaptive], "true", 6),
                 ("leave-one-out", 2, s, 7, " ".join(map(str, loo)), 26.0, ppl[loo], "false", ""),
                 ("reverse", 2, s, 1, "0 1", 90.0, ppl[(0, 1)], "false", "")]
    write_frontier(tmp_path / "frontier.csv", rows)
    (tmp_path / "manifest.json").write_text('{"num_blocks": 6}')
    masks = subprocess.run([sys.executable, str(REPORT / "frontier_pairs.py"), "masks", str(tmp_path / "frontier.csv"),
                            "--manifest", str(tmp_path / "manifest.json")],
                           check=True, capture_output=True, text=True).stdout.split("\n")
    assert masks[:4] == ["--mask 111100", "--mask 111010", "--mask 110110", "--mask 001111"]
    write_windows(tmp_path / "pairs.parquet", list(windows.items()))

    def table(*extra, check=True):
        return subprocess.run([sys.executable, str(REPORT / "frontier_pairs.py"), "table", str(tmp_path / "frontier.csv"),
                               "--out", str(tmp_path / "pairs.md"), *extra], check=check, capture_output=True, text=True)

    out = table("--heldout", f"lambada={tmp_path / 'pairs.parquet'}").stdout
    lines = {line.split(" | ")[0].lstrip("| "): line for line in out.splitlines() if line.startswith("| ")}
    # Adaptive: better on c0 by 0.1 nats on every window, SLEB's plan on c1: −4.9 % over the sets.
    assert "-4.9 % (-4.9 % to -4.9 %)" in lines["adaptive, budget 6"], out
    assert "1 same plan, 1 better" in lines["adaptive, budget 6"]
    # Leave-one-out: ±0.3 on alternate windows, within two standard errors on both sets.
    assert "2 within 2 se" in lines["leave-one-out"], out
    # From doubling on, a factor.
    assert "×2.72 (×2.72 to ×2.72) | 2 worse" in lines["reverse"], out
    assert (tmp_path / "pairs.md").read_text().strip() == out.strip()

    # Refused: evaluations of another text (a perplexity that does not match), or without windows.
    write_windows(tmp_path / "other.parquet", [(r, [w + 0.5 for w in ws]) for r, ws in windows.items()])
    result = table("--heldout", f"lambada={tmp_path / 'other.parquet'}", check=False)
    assert result.returncode == 1 and "not the same held-out text" in result.stderr
    write(tmp_path / "old.parquet", {"kept": pa.array([[True] * NUM_BLOCKS], pa.list_(pa.bool_())), "nll": [1.0]},
          {"table": "evaluations", "format_version": 1})
    result = table("--heldout", f"lambada={tmp_path / 'old.parquet'}", check=False)
    assert result.returncode == 1 and "no window_nll column" in result.stderr
    # A table of another kind is named as such; so is a reference method the frontier lacks.
    plan_table(tmp_path / "plans.parquet", [("sleb", [4], 3.1)])
    result = table("--heldout", f"lambada={tmp_path / 'plans.parquet'}", check=False)
    assert result.returncode == 1 and "a table of kind 'plans'" in result.stderr
    result = table("--heldout", f"lambada={tmp_path / 'pairs.parquet'}", "--against", "nosuch", check=False)
    assert result.returncode == 1 and "--against nosuch: no plans of that method" in result.stderr
    result = table("--heldout", f"nosuchtext={tmp_path / 'pairs.parquet'}", check=False)
    assert result.returncode == 1 and "NAME must be one of lambada" in result.stderr

    # A frontier run without held-out texts (`make exact-frontier`): its plans are paired on
    # held-out evaluations made afterwards, under the name given.
    with (tmp_path / "frontier.csv").open() as f:
        bare = [{k: v for k, v in r.items() if k != "lambada_ppl"} for r in csv.DictReader(f)]
    with (tmp_path / "bare.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(bare[0].keys()))
        writer.writeheader()
        writer.writerows(bare)
    out = subprocess.run([sys.executable, str(REPORT / "frontier_pairs.py"), "table", str(tmp_path / "bare.csv"),
                          "--heldout", f"wikitext2={tmp_path / 'other.parquet'}"],
                         check=True, capture_output=True, text=True).stdout
    assert "wikitext2: vs sleb" in out and "-4.9 % (-4.9 % to -4.9 %)" in out, out


def test_exact_frontier_finds_the_optimum_and_every_plan_s_gap(tmp_path):
    # Blocks 0 and 5 fixed, players 1-4: every one of the 16 masks, NLL = 3 + the removed
    # blocks' costs, with one pair (2, 3) cheaper together, so the optimum at k = 2 is {2, 3}.
    cost = {1: 0.5, 2: 0.2, 3: 0.3, 4: 0.1}
    kept, nll = [], []
    for bits in range(16):
        removed = [p for i, p in enumerate([1, 2, 3, 4]) if bits >> i & 1]
        kept.append([b not in removed for b in range(NUM_BLOCKS)])
        nll.append(3.0 + sum(cost[b] for b in removed) - (0.25 if {2, 3} <= set(removed) else 0))
    write(tmp_path / "game.parquet", {"kept": kept, "nll": nll},
          {"table": "evaluations", "format_version": 1, "num_blocks": NUM_BLOCKS,
           "fixed_blocks": "[0,5]"})
    def ppl(removed):
        """The game's calibration perplexity of a plan, as frontier.csv records it."""
        return round(math.exp(nll[sum(1 << [1, 2, 3, 4].index(b) for b in removed)]), 4)

    rows = [("full", 0, "c0", 1, "", 20.0, 21.0, "false", "", "")]
    # SLEB's cost at k = 1, 2 of 4 players: 4, 7; least budget P + k: 5, 6.
    rows += [("sleb", 1, "c0", 4, "4", ppl([4]), 0, "false", "", ""),
             ("sleb", 2, "c0", 7, "2 4", ppl([2, 4]), 0, "false", "", ""),
             ("adaptive-raced", 1, "c0", 3, "4", ppl([4]), 0, "true", 5, "least sleb"),
             ("adaptive-raced", 2, "c0", 6, "2 3", ppl([2, 3]), 0, "true", 6, "least"),
             ("adaptive-raced", 2, "c0", 7, "2 3", ppl([2, 3]), 0, "true", 7, "sleb")]
    write_frontier(tmp_path / "frontier.csv", rows, budget_spec=True)
    plan_table(tmp_path / "plans.parquet", [("one-shot", [1], 3.5), ("one-shot", [1, 3], 3.8)])
    subprocess.run([sys.executable, str(REPORT / "exact_frontier.py"),
                    "--game", str(tmp_path / "game.parquet"),
                    "--frontier", str(tmp_path / "frontier.csv"),
                    "--plans", f"worst={tmp_path / 'plans.parquet'}",
                    "--out", str(tmp_path / "exact.md"), "--csv", str(tmp_path / "exact.csv")],
                   check=True, capture_output=True, cwd=REPORT)
    table = (tmp_path / "exact.md").read_text()
    assert "| 2 | 6 | 2 3 |" in table, table
    assert "| sleb | opt | +5.1 % | 1 of 2 |" in table, table
    # At k = 1 least and SLEB's cost coincide (5 > 4): one run, on both budgets' rows.
    assert "| adaptive-raced, budget least | opt | opt | 2 of 2 |" in table, table
    assert "| adaptive-raced, budget sleb | opt | opt | 2 of 2 |" in table, table
    with (tmp_path / "exact.csv").open() as f:
        worst = [r for r in csv.DictReader(f) if r["method"] == "worst"]
    assert [int(r["rank"]) for r in worst] == [4, 6]
    # A table that is not a whole game is refused, by name.
    write(tmp_path / "part.parquet", {"kept": kept[:5], "nll": nll[:5]},
          {"table": "evaluations", "format_version": 1, "num_blocks": NUM_BLOCKS,
           "fixed_blocks": "[0,5]"})
    failed = subprocess.run([sys.executable, str(REPORT / "exact_frontier.py"),
                             "--game", str(tmp_path / "part.parquet"),
                             "--frontier", str(tmp_path / "frontier.csv")],
                            capture_output=True, text=True, cwd=REPORT)
    assert failed.returncode != 0 and "part.parquet" in failed.stderr
    # A frontier of other calibration tokens (SLEB's k = 1 plan at another perplexity), and a
    # plan removing a fixed block, are refused: the gaps would be against another game.
    def refused(frontier_rows, plans=()):
        write_frontier(tmp_path / "other.csv", frontier_rows, budget_spec=True)
        plan_table(tmp_path / "other.parquet", list(plans) or [("one-shot", [1], 3.5)])
        result = subprocess.run([sys.executable, str(REPORT / "exact_frontier.py"),
                                 "--game", str(tmp_path / "game.parquet"),
                                 "--frontier", str(tmp_path / "other.csv"),
                                 "--plans", f"other={tmp_path / 'other.parquet'}"],
                                capture_output=True, text=True, cwd=REPORT)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        return result.stderr

    assert "measured on other calibration tokens" in refused(
        [("sleb", 1, "c0", 4, "4", 1.5 * ppl([4]), 0, "false", "", "")])
    assert "no mask of the game" in refused(rows, [("one-shot", [0], 3.5)])
    assert "no plans" in refused(rows[:1])
