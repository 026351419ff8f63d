"""Reads the sample tables written by `cargo run -p layerprune-tables --example write_samples`
with pyarrow, pandas and DuckDB, checking that the Parquet contract of docs/formats.md holds for
readers other than our own: column names and types, row counts, a few values, and the
`layerprune.*` metadata (provenance JSON parses).

Runs nothing itself: set LAYERPRUNE_SAMPLES to the folder the example wrote.
"""

import json
import math
import os
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

SAMPLES = os.environ.get("LAYERPRUNE_SAMPLES")
pytestmark = pytest.mark.skipif(
    not SAMPLES, reason="set LAYERPRUNE_SAMPLES to the folder written by write_samples"
)

MASK_COLUMNS = {
    "mask_id": pa.string(),
    "kept": pa.list_(pa.bool_()),
    "num_removed": pa.uint32(),
}

# Table kind -> (expected columns and Arrow types, expected row count, table-level metadata).
TABLES = {
    "tokens": (
        {"window_index": pa.uint32(), "tokens": pa.list_(pa.uint32())},
        2,
        ["dataset_id", "seq_len", "num_windows", "tokenizer_sha256", "source"],
    ),
    "masks": (
        {
            **MASK_COLUMNS,
            "design": pa.string(),
            "group_id": pa.int64(),
            "position": pa.uint32(),
        },
        3,
        ["num_blocks", "fixed_blocks"],
    ),
    "evaluations": (
        {
            **MASK_COLUMNS,
            "nll": pa.float64(),
            "ppl": pa.float64(),
            "utility": pa.float64(),
            "tokens_scored": pa.uint64(),
            "seconds": pa.float64(),
            "window_nll": pa.list_(pa.float64()),
        },
        3,
        ["num_blocks", "model_id", "dataset_id", "full_model_nll", "complete"],
    ),
    "block_stats": (
        {
            "start_block": pa.uint32(),
            "run_length": pa.uint32(),
            "mean_cosine": pa.float64(),
            "angular_distance": pa.float64(),
        },
        4,
        ["num_blocks", "model_id", "dataset_id"],
    ),
    "surrogate_metrics": (
        {
            "kind": pa.string(),
            "value": pa.string(),
            "fold": pa.int32(),
            "r2": pa.float64(),
            "spearman": pa.float64(),
            "mae": pa.float64(),
            "n_train": pa.uint32(),
            "n_test": pa.uint32(),
        },
        2,
        [],
    ),
    "scores": (
        {
            "block": pa.uint32(),
            "estimate": pa.float64(),
            "std_error": pa.float64(),
            "ci_low": pa.float64(),
            "ci_high": pa.float64(),
            "estimator": pa.string(),
            "llm_evaluations": pa.uint64(),
        },
        4,
        ["num_blocks"],
    ),
    "plans": (
        {
            "method": pa.string(),
            "k": pa.uint32(),
            "removed_blocks": pa.list_(pa.uint32()),
            "mask_id": pa.string(),
            "predicted_value": pa.float64(),
            "measured_nll": pa.float64(),
            "measured_ppl": pa.float64(),
            "llm_evaluations": pa.uint64(),
            "runner_up_removed_blocks": pa.list_(pa.uint32()),
            "runner_up_nll": pa.float64(),
            "runner_up_margin_se": pa.float64(),
            "full_model_nll": pa.float64(),
            "nll_increase_se": pa.float64(),
        },
        2,
        ["num_blocks", "value"],
    ),
    "task_choices": (
        {
            **MASK_COLUMNS,
            "task": pa.string(),
            "question": pa.uint32(),
            "choice": pa.uint32(),
            "gold": pa.uint32(),
            "loglik": pa.float64(),
            "continuation_tokens": pa.uint32(),
            "norm_chars": pa.uint32(),
        },
        4,
        ["num_blocks", "model_id", "dataset_id", "scoring", "complete"],
    ),
    "task_accuracies": (
        {
            **MASK_COLUMNS,
            "task": pa.string(),
            "questions": pa.uint32(),
            **{name: pa.float64() for name in ("acc", "acc_low", "acc_high", "acc_norm", "acc_norm_low",
                                               "acc_norm_high", "gold_nll")},
            "gold_tokens": pa.uint64(),
        },
        2,
        ["num_blocks", "model_id", "dataset_id"],
    ),
}


def sample(kind: str) -> Path:
    return Path(SAMPLES) / f"{kind}.parquet"


def same_type(expected: pa.DataType, actual: pa.DataType) -> bool:
    # Item field names and nullability of lists differ between writers; the item type is
    # what the contract fixes.
    if pa.types.is_list(expected):
        return pa.types.is_list(actual) and actual.value_type == expected.value_type
    return actual == expected


def footer_metadata(kind: str) -> dict:
    raw = pq.read_metadata(sample(kind)).metadata
    return {k.decode(): v.decode() for k, v in raw.items()}


def test_every_table_has_a_sample():
    found = sorted(p.stem for p in Path(SAMPLES).glob("*.parquet"))
    assert found == sorted(TABLES)


@pytest.mark.parametrize("kind", sorted(TABLES))
def test_pyarrow_reads_columns_types_and_metadata(kind):
    columns, rows, table_fields = TABLES[kind]
    table = pq.read_table(sample(kind))
    assert table.num_rows == rows
    assert table.schema.names == list(columns)
    for name, expected in columns.items():
        actual = table.schema.field(name).type
        assert same_type(expected, actual), f"{kind}.{name}: {actual} != {expected}"

    footer = footer_metadata(kind)
    assert footer["layerprune.table"] == kind
    assert footer["layerprune.format_version"] == "1"
    assert footer["layerprune.tool"]
    assert footer["layerprune.version"]
    args = json.loads(footer["layerprune.args"])
    assert isinstance(args, list) and all(isinstance(a, str) for a in args)
    seed = json.loads(footer["layerprune.seed"])
    assert seed is None or isinstance(seed, int)
    inputs = json.loads(footer["layerprune.inputs"])
    assert isinstance(inputs, dict)
    for field in table_fields:
        assert f"layerprune.{field}" in footer, f"{kind} lacks layerprune.{field}"

    # The same entries are visible on the schema pyarrow (and so pandas) hands out.
    schema_metadata = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    for key, value in footer.items():
        if key.startswith("layerprune."):
            assert schema_metadata[key] == value


@pytest.mark.parametrize("kind", sorted(TABLES))
def test_duckdb_reads_rows_and_metadata(kind):
    columns, rows, _ = TABLES[kind]
    path = str(sample(kind))
    connection = duckdb.connect()
    described = connection.execute("DESCRIBE SELECT * FROM read_parquet(?)", [path]).fetchall()
    assert [row[0] for row in described] == list(columns)
    count = connection.execute("SELECT count(*) FROM read_parquet(?)", [path]).fetchone()[0]
    assert count == rows
    kv = dict(
        (k.decode(), v.decode())
        for k, v in connection.execute(
            "SELECT key, value FROM parquet_kv_metadata(?)", [path]
        ).fetchall()
    )
    assert kv["layerprune.table"] == kind


def test_tokens_values():
    frame = pd.read_parquet(sample("tokens"))
    assert list(frame["window_index"]) == [0, 1]
    assert [list(t) for t in frame["tokens"]] == [[1, 2, 3], [4, 5, 6]]
    meta = footer_metadata("tokens")
    assert meta["layerprune.seq_len"] == "3"
    assert len(meta["layerprune.dataset_id"]) == 64


def test_masks_values_and_mask_id_matches_kept():
    frame = pd.read_parquet(sample("masks"))
    for mask_id, kept, removed in zip(frame["mask_id"], frame["kept"], frame["num_removed"]):
        assert mask_id == "".join("1" if k else "0" for k in kept)
        assert removed == list(kept).count(False)
    assert list(frame["design"]) == ["anchor", "complement", "permutation"]
    assert pd.isna(frame["group_id"][0]) and frame["group_id"][2] == 2
    assert json.loads(footer_metadata("masks")["layerprune.fixed_blocks"]) == [0]


def test_evaluations_values():
    frame = pd.read_parquet(sample("evaluations"))
    assert frame["mask_id"].is_unique
    full = frame[frame["mask_id"] == "1111"].iloc[0]
    assert full["nll"] == 2.0 and math.isclose(full["utility"], 1.0)
    assert frame["ppl"].apply(math.log).round(12).tolist() == frame["nll"].round(12).tolist()
    # Each window's mean NLL, in the token table's order; the windows score as many tokens
    # each, so their mean is the mask's NLL.
    for windows, nll in zip(frame["window_nll"], frame["nll"]):
        assert len(windows) == 2 and math.isclose(sum(windows) / 2, nll)
    meta = footer_metadata("evaluations")
    assert meta["layerprune.complete"] == "true"
    assert float(meta["layerprune.full_model_nll"]) == 2.0
    inputs = json.loads(meta["layerprune.inputs"])
    assert inputs["model"] == meta["layerprune.model_id"]
    assert inputs["dataset"] == meta["layerprune.dataset_id"]
    assert json.loads(meta["layerprune.seed"]) == 7
    # DuckDB can work with the list column directly.
    kept_blocks = (
        duckdb.connect()
        .execute(
            "SELECT mask_id, len(list_filter(kept, lambda x: x)) AS n "
            "FROM read_parquet(?) ORDER BY mask_id",
            [str(sample("evaluations"))],
        )
        .fetchall()
    )
    assert kept_blocks == [("1010", 2), ("1101", 3), ("1111", 4)]


def test_scores_and_plans_values():
    scores = pd.read_parquet(sample("scores"))
    assert list(scores["block"]) == [0, 1, 2, 3]
    assert pd.isna(scores["std_error"][0]) and scores["std_error"][1] == 0.01
    lowest = (
        duckdb.connect()
        .execute(
            "SELECT block FROM read_parquet(?) ORDER BY estimate LIMIT 1",
            [str(sample("scores"))],
        )
        .fetchone()[0]
    )
    assert lowest == 0
    plans = pd.read_parquet(sample("plans"))
    assert [list(r) for r in plans["removed_blocks"]] == [[2], [1, 3]]
    assert list(plans["k"]) == [1, 2]
    assert pd.isna(plans["measured_nll"][1])
    # The runner-up: a list where one was measured, null where none was.
    assert list(plans["runner_up_removed_blocks"][0]) == [1]
    assert plans["runner_up_nll"][0] - plans["measured_nll"][0] == pytest.approx(0.2)
    assert plans["runner_up_margin_se"][0] == 0.05
    assert plans["runner_up_removed_blocks"][1] is None and pd.isna(plans["runner_up_nll"][1])
    # What the plan gives away against the full model on the same tokens: its NLL increase.
    assert plans["measured_nll"][0] - plans["full_model_nll"][0] == pytest.approx(0.2)
    assert plans["nll_increase_se"][0] == 0.04
    assert pd.isna(plans["full_model_nll"][1]) and pd.isna(plans["nll_increase_se"][1])


def test_plans_join_their_evaluation_rows_on_mask_id():
    plans = pq.read_table(sample("plans")).to_pylist()
    num_blocks = int(footer_metadata("plans")["layerprune.num_blocks"])
    for plan in plans:
        removed = set(plan["removed_blocks"])
        assert plan["mask_id"] == "".join(
            "0" if b in removed else "1" for b in range(num_blocks)
        )
    # The join docs/formats.md shows: one evaluation row per plan (evaluations hold each mask
    # once); the mask table may repeat a mask, so it is reduced to one row per mask_id first.
    joined = (
        duckdb.connect()
        .execute(
            """
            WITH designs AS (
              SELECT mask_id, first(design) AS design FROM read_parquet(?) GROUP BY mask_id
            )
            SELECT p.k, p.mask_id, e.nll, d.design
            FROM read_parquet(?) p
            JOIN read_parquet(?) e USING (mask_id)
            LEFT JOIN designs d USING (mask_id)
            ORDER BY p.k
            """,
            [str(sample("masks")), str(sample("plans")), str(sample("evaluations"))],
        )
        .fetchall()
    )
    assert joined == [(1, "1101", 2.25, "permutation"), (2, "1010", 3.5, "complement")]
    # pandas: the same join.
    evaluations = pd.read_parquet(sample("evaluations"))
    merged = pd.read_parquet(sample("plans")).merge(evaluations, on="mask_id", how="left")
    assert len(merged) == len(plans) and list(merged["nll"]) == [2.25, 3.5]


def test_block_stats_and_surrogate_metrics_values():
    stats = pd.read_parquet(sample("block_stats"))
    for cosine, distance in zip(stats["mean_cosine"], stats["angular_distance"]):
        assert math.isclose(distance, math.acos(cosine) / math.pi)
    metrics = pd.read_parquet(sample("surrogate_metrics"))
    assert list(metrics["fold"]) == [0, -1]
    assert metrics["r2"][0] == 0.8


def test_task_accuracies_follow_from_the_task_choices():
    """A question is right under a mask when its gold choice has the largest log-likelihood:
    what `evaluate --tasks` derives, recomputed from the sample with DuckDB."""
    con = duckdb.connect()
    right = dict(con.execute(f"""
        SELECT mask_id, bool_and(gold_loglik >= loglik) FROM (
            SELECT mask_id, question, loglik,
                   max(CASE WHEN choice = gold THEN loglik END) OVER (PARTITION BY mask_id, question)
                       AS gold_loglik
            FROM read_parquet('{sample("task_choices")}'))
        GROUP BY mask_id, question""").fetchall())
    accuracies = pd.read_parquet(sample("task_accuracies"))
    assert {m: bool(a) for m, a in zip(accuracies["mask_id"], accuracies["acc"])} == right
    assert footer_metadata("task_choices")["layerprune.complete"] == "true"
