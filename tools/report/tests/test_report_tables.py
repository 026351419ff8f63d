"""The report tools on small made-up inputs: summarize.py's random row says how many seeds each
mean is over and plans of another model are refused; calibration_windows.py keeps the adaptive
runs of a frontier.csv without the budget column; frontier.py compares a row of fewer sets with
the best plans of those sets; exact_frontier.py refuses a frontier of several calibration sets
rather than keep one set's plan a method, and a game with a NaN loss; frontier_pairs.py names a
manifest it cannot read. Needs pyarrow only (no figures)."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPORT = Path(__file__).resolve().parents[1]
NUM_BLOCKS = 6
EVAL = "eval-tokens"


def write(path: Path, columns: dict, metadata: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(columns).replace_schema_metadata({f"layerprune.{k}": str(v) for k, v in metadata.items()})
    pq.write_table(table, path)


def plan_table(path: Path, plans):
    """(method, removed blocks, measured perplexity) rows, as apply-prune writes them."""
    write(path, {
        "method": [p[0] for p in plans],
        "k": pa.array([len(p[1]) for p in plans], pa.uint32()),
        "removed_blocks": pa.array([p[1] for p in plans], pa.list_(pa.uint32())),
        "measured_ppl": [p[2] for p in plans],
        "llm_evaluations": pa.array([1] * len(plans), pa.uint64()),
    }, {"table": "plans", "format_version": 1, "num_blocks": NUM_BLOCKS, "inputs": json.dumps({"dataset": EVAL})})


def summarize(run: Path, methods):
    return subprocess.run([sys.executable, str(REPORT / "summarize.py"), "--run", str(run), "--methods", *methods],
                          check=True, capture_output=True, text=True).stdout


def random_row(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("| random ("))


def test_the_random_row_says_how_many_seeds_each_mean_is_over(tmp_path):
    run = tmp_path / "run"
    write(run / "full-eval.parquet", {"mask_id": ["1" * NUM_BLOCKS], "nll": [3.0], "ppl": [20.0],
                                      "tokens_scored": pa.array([124], pa.uint64())},
          {"table": "evaluations", "format_version": 1, "complete": "true", "dataset_id": EVAL})
    write(run / "tokens-eval.parquet", {"x": [0]}, {"dataset_id": EVAL})
    plan_table(run / "plans" / "random-1.parquet", [("random", [4], 100.0), ("random", [3, 4], 300.0)])
    plan_table(run / "plans" / "random-2.parquet", [("random", [2], 200.0), ("random", [2, 5], 500.0)])
    plan_table(run / "plans" / "random-3.parquet", [("random", [1], 300.0)])  # no plan at k = 2
    # Every k over both seeds asked for: the label says 2.
    assert random_row(summarize(run, ["random-1", "random-2"])) == "| random (mean of 2) | 150.00 (1) | 400.00 (1) |"
    # k = 1 over three seeds, k = 2 over two: the label gives the range, each cell its own count.
    assert random_row(summarize(run, ["random-1", "random-2", "random-3"])) == \
        "| random (mean of 2–3) | 200.00 (1; mean of 3) | 400.00 (1; mean of 2) |"


def write_frontier(path: Path, rows, fields=("method", "k", "calibration_set", "llm_evaluations",
                                              "removed_blocks", "calibration_ppl", "lambada_ppl")):
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        writer.writerows(rows)


def test_calibration_windows_keeps_adaptive_runs_labelled_by_rank(tmp_path):
    """A frontier.csv without the budget column labels a budgeted method's runs "adaptive #1",
    "adaptive #2" (frontier.py): still adaptive's, shown under --methods adaptive."""
    write_frontier(tmp_path / "w10.csv", [
        ("sleb", 2, "c0", 10, "4 5", 25.0, 30.0),
        ("adaptive", 2, "c0", 6, "4 5", 25.0, 27.0),
        ("adaptive", 2, "c0", 9, "3 5", 24.0, 26.0)])
    out = subprocess.run([sys.executable, str(REPORT / "calibration_windows.py"), f"10={tmp_path / 'w10.csv'}",
                          "--methods", "sleb,adaptive"], check=True, capture_output=True, text=True, cwd=REPORT).stdout
    names = [line.split(" | ")[1] for line in out.splitlines() if line.startswith("| 10 ")]
    assert names == ["adaptive #1", "adaptive #2", "sleb"], out


def game(path: Path):
    """Blocks 0 and 5 fixed, players 1-4: all 16 masks, NLL = 3 + 0.1 × the removed blocks."""
    kept, nll = [], []
    for bits in range(16):
        removed = [p for i, p in enumerate([1, 2, 3, 4]) if bits >> i & 1]
        kept.append([b not in removed for b in range(NUM_BLOCKS)])
        nll.append(3.0 + 0.1 * sum(removed))
    write(path, {"kept": kept, "nll": nll}, {"table": "evaluations", "format_version": 1,
                                             "num_blocks": NUM_BLOCKS, "fixed_blocks": "[0,5]"})
    return lambda removed: round(math.exp(3.0 + 0.1 * sum(removed)), 4)


def test_exact_frontier_refuses_a_frontier_of_several_calibration_sets(tmp_path):
    """The game is one set's: a frontier of two sets (here both read through the game's table, so
    every calibration perplexity matches it) was reported with one set's plan a method, the
    other's dropped without a word."""
    ppl = game(tmp_path / "game.parquet")
    rows = [("sleb", 1, s, 4, "1", ppl([1]), 0) for s in ("c0", "c1")]
    write_frontier(tmp_path / "frontier.csv", rows)
    result = subprocess.run([sys.executable, str(REPORT / "exact_frontier.py"), "--game", str(tmp_path / "game.parquet"),
                             "--frontier", str(tmp_path / "frontier.csv")], capture_output=True, text=True, cwd=REPORT)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert "plans of 2 calibration sets (c0, c1), but the game is measured on one set's tokens" in result.stderr
    # Two runs of a budgeted method at one k, without the budget column: a row each, by rank.
    write_frontier(tmp_path / "frontier.csv", [("sleb", 1, "c0", 4, "1", ppl([1]), 0),
                                               ("adaptive", 1, "c0", 2, "4", ppl([4]), 0),
                                               ("adaptive", 1, "c0", 3, "1", ppl([1]), 0)])
    out = subprocess.run([sys.executable, str(REPORT / "exact_frontier.py"), "--game", str(tmp_path / "game.parquet"),
                          "--frontier", str(tmp_path / "frontier.csv")], check=True, capture_output=True, text=True,
                         cwd=REPORT).stdout
    assert "| adaptive #1 | +35.0 % |" in out and "| adaptive #2 | opt |" in out, out


def test_a_row_of_fewer_sets_is_compared_with_the_best_plans_of_those_sets(tmp_path):
    """SLEB on set c1 alone found c1's best plan (gap 0), but was compared with best-known's mean
    over c0 and c1 and read +1.9 %."""
    fields = ("method", "k", "calibration_set", "llm_evaluations", "removed_blocks", "calibration_ppl",
              "wikitext2_ppl")
    write_frontier(tmp_path / "frontier.csv", [
        ("sleb", 1, "c1", 10, "4", 26.0, 27.0),
        ("best-known", 1, "c0", 10, "3", 25.0, 26.0),
        ("best-known", 1, "c1", 10, "4", 26.0, 27.0)], fields)
    out = subprocess.run([sys.executable, str(REPORT / "frontier.py"), str(tmp_path / "frontier.csv")],
                         check=True, capture_output=True, text=True).stdout
    assert "| sleb (sets c1 only) | 10 | 26.00 | 27.0 | +0.0 % |" in out, out
    assert "| best-known | 10 | 25.50 (25.00–26.00) | 26.5 (26.0–27.0) | +0.0 % |" in out, out


def test_summarize_refuses_plans_of_another_model_on_the_same_tokens(tmp_path):
    """A model of the same tokenizer (new weights, another export) gives the same evaluation
    tokens: an older run's plan table passed the dataset check, and its perplexities were printed
    beside this model's full-model perplexity."""
    run = tmp_path / "run"
    write(run / "full-eval.parquet", {"mask_id": ["1" * NUM_BLOCKS], "nll": [3.0], "ppl": [20.0],
                                      "tokens_scored": pa.array([124], pa.uint64())},
          {"table": "evaluations", "format_version": 1, "complete": "true", "dataset_id": EVAL,
           "model_id": "new-model-0123456789"})
    write(run / "tokens-eval.parquet", {"x": [0]}, {"dataset_id": EVAL})
    plan_table(run / "plans" / "sleb.parquet", [("sleb", [4], 30.0)])
    assert "| sleb | 30.00 (1) |" in summarize(run, ["sleb"])  # a table that records no model: as before
    write(run / "plans" / "sleb.parquet", {
        "method": ["sleb"], "k": pa.array([1], pa.uint32()), "removed_blocks": pa.array([[4]], pa.list_(pa.uint32())),
        "measured_ppl": [30.0], "llm_evaluations": pa.array([1], pa.uint64())},
        {"table": "plans", "format_version": 1, "num_blocks": NUM_BLOCKS,
         "inputs": json.dumps({"dataset": EVAL, "model": "old-model-9876543210"})})
    result = subprocess.run([sys.executable, str(REPORT / "summarize.py"), "--run", str(run), "--methods", "sleb"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"summarize: {run / 'plans' / 'sleb.parquet'}: measured with another model (old-model-98…) than the " \
           "full model's evaluation (full-eval.parquet, new-model-01…)" in result.stderr, result.stderr


def test_summarize_refuses_plans_chosen_on_the_evaluation_text(tmp_path):
    """A plan table records what its plans were chosen on (`chosen_on`) beside where they were
    measured (`dataset`): a plan chosen on the evaluation text's tokens is not a held-out result."""
    run = tmp_path / "run"
    write(run / "full-eval.parquet", {"mask_id": ["1" * NUM_BLOCKS], "nll": [3.0], "ppl": [20.0],
                                      "tokens_scored": pa.array([124], pa.uint64())},
          {"table": "evaluations", "format_version": 1, "complete": "true", "dataset_id": EVAL})
    write(run / "tokens-eval.parquet", {"x": [0]}, {"dataset_id": EVAL})

    def sleb_plans(chosen_on):
        write(run / "plans" / "sleb.parquet", {
            "method": ["sleb"], "k": pa.array([1], pa.uint32()),
            "removed_blocks": pa.array([[4]], pa.list_(pa.uint32())),
            "measured_ppl": [30.0], "llm_evaluations": pa.array([1], pa.uint64())},
            {"table": "plans", "format_version": 1, "num_blocks": NUM_BLOCKS,
             "inputs": json.dumps({"dataset": EVAL, "chosen_on": chosen_on})})
        return subprocess.run([sys.executable, str(REPORT / "summarize.py"), "--run", str(run), "--methods",
                               "sleb"], capture_output=True, text=True)

    assert "| sleb | 30.00 (1) |" in sleb_plans("calib-tokens").stdout
    for chosen_on in [EVAL, f"calib-tokens,{EVAL}"]:
        result = sleb_plans(chosen_on)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"summarize: {run / 'plans' / 'sleb.parquet'}: its plans were chosen on the evaluation text's " \
               "tokens" in result.stderr, result.stderr


def test_exact_frontier_refuses_a_game_with_a_loss_that_is_not_a_number(tmp_path):
    """The plans sorted by NLL stay out of order around a NaN: the optimum reported at k = 1 was
    whichever plan came first, not the best."""
    ppl = game(tmp_path / "game.parquet")
    table = pq.read_table(tmp_path / "game.parquet")
    nll = table.column("nll").to_pylist()
    kept = table.column("kept").to_pylist()
    nll[kept.index([b != 2 for b in range(NUM_BLOCKS)])] = float("nan")  # removing block 2 alone
    pq.write_table(table.set_column(table.schema.get_field_index("nll"), "nll", pa.array(nll)),
                   tmp_path / "game.parquet")
    write_frontier(tmp_path / "frontier.csv", [("sleb", 1, "c0", 4, "1", ppl([1]), 0)])
    result = subprocess.run([sys.executable, str(REPORT / "exact_frontier.py"), "--game", str(tmp_path / "game.parquet"),
                             "--frontier", str(tmp_path / "frontier.csv")], capture_output=True, text=True, cwd=REPORT)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert f"{tmp_path / 'game.parquet'}: the mask removing [2] has NLL nan: not a finite loss" in result.stderr


def test_frontier_pairs_masks_names_a_manifest_it_cannot_read(tmp_path):
    """A missing or foreign manifest was a FileNotFoundError or KeyError traceback."""
    write_frontier(tmp_path / "frontier.csv", [("sleb", 1, "c0", 4, "1", 25.0, 30.0)])
    (tmp_path / "manifest.json").write_text('{"blocks": []}')
    for manifest in (tmp_path / "absent.json", tmp_path / "manifest.json"):
        result = subprocess.run([sys.executable, str(REPORT / "frontier_pairs.py"), "masks", str(tmp_path / "frontier.csv"),
                                 "--manifest", str(manifest)], capture_output=True, text=True)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"frontier_pairs.py: error: --manifest {manifest}: not a layered model's manifest.json" in result.stderr
