//! The value invariants of the evaluation, block-statistics, score and plan tables
//! (docs/formats.md):
//! refused on writing, and in a file some other tool wrote, refused on reading, naming the file,
//! the row and the column.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array};
use layerprune_tables::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

const FULL_NLL: f64 = 2.0;

fn row(id: &str, nll: f64) -> EvaluationRow {
    EvaluationRow {
        mask: id.parse().unwrap(),
        nll,
        ppl: nll.exp(),
        utility: (FULL_NLL - nll).exp(),
        tokens_scored: 100,
        seconds: 0.5,
        window_nlls: None,
    }
}

fn table(rows: Vec<EvaluationRow>) -> EvaluationTable {
    let mut table = EvaluationTable::new(3, "model", "data");
    table.full_model_nll = Some(FULL_NLL);
    table.complete = true;
    table.append(rows).unwrap();
    table
}

fn valid() -> EvaluationTable {
    table(vec![
        row("111", FULL_NLL),
        row("101", 2.5),
        row("001", 3.25),
    ])
}

fn provenance() -> Provenance {
    Provenance::new("test", "0", vec![])
}

/// Copies the table in `from` to `to` with column `name` of its one batch replaced by `values`,
/// keeping the footer metadata: a file as another tool could write it.
fn with_column(from: &Path, to: &Path, name: &str, values: Vec<f64>) {
    with_array(from, to, name, Arc::new(Float64Array::from(values)));
}

/// [`with_column`] with a column of any type.
fn with_array(from: &Path, to: &Path, name: &str, values: ArrayRef) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(from).unwrap()).unwrap();
    let metadata = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned();
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(Result::unwrap).collect();
    assert_eq!(batches.len(), 1);
    let batch = &batches[0];
    let index = batch.schema().index_of(name).unwrap();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns[index] = values;
    let batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
    let properties = WriterProperties::builder()
        .set_key_value_metadata(metadata)
        .build();
    let mut writer = ArrowWriter::try_new(
        fs::File::create(to).unwrap(),
        batch.schema(),
        Some(properties),
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn assert_names(error: &TableError, path: &Path, row: usize, column: &str) {
    assert_eq!(error.path, path);
    assert_eq!(error.kind, TableErrorKind::BadValue, "{error}");
    let text = error.to_string();
    for part in [
        path.display().to_string(),
        format!("row {row}"),
        format!("column {column:?}"),
    ] {
        assert!(text.contains(&part), "{text:?} does not contain {part:?}");
    }
}

/// Each case: the column, the bad value put in row 1, and what the message says.
fn bad_cases() -> Vec<(&'static str, f64, &'static str)> {
    vec![
        ("nll", f64::NAN, "NaN"),
        ("nll", f64::NEG_INFINITY, "-inf"),
        // ppl must be exp(nll) within 1e-9 relative.
        ("ppl", 2.5_f64.exp() * (1.0 + 1e-6), "exp(nll)"),
        ("ppl", f64::NAN, "exp(nll)"),
        ("ppl", -1.0, "exp(nll)"),
        ("utility", -0.25, "negative"),
        ("utility", f64::NEG_INFINITY, "negative"),
        ("seconds", -1.0, "non-negative"),
        ("seconds", f64::NAN, "non-negative"),
        ("seconds", f64::INFINITY, "non-negative"),
    ]
}

fn set(row: &mut EvaluationRow, column: &str, value: f64) {
    match column {
        "nll" => {
            // Keep ppl consistent so that the nll check is the one that fires.
            row.nll = value;
            row.ppl = value.exp();
        }
        "ppl" => row.ppl = value,
        "utility" => row.utility = value,
        "seconds" => row.seconds = value,
        _ => unreachable!(),
    }
}

#[test]
fn each_broken_value_is_refused_on_writing_naming_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    for (column, value, says) in bad_cases() {
        let path = dir.path().join(format!("{column}-{value}.parquet"));
        let mut bad = valid();
        set(&mut bad.rows[1], column, value);
        let error = write_evaluations(&path, &bad, &provenance()).unwrap_err();
        assert_names(&error, &path, 1, column);
        assert!(error.message.contains(says), "{error}");
        assert!(!path.exists(), "a refused table must not be written");
    }
}

#[test]
fn each_broken_value_in_a_file_is_refused_on_reading_naming_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.parquet");
    let original = valid();
    write_evaluations(&good, &original, &provenance()).unwrap();
    assert_eq!(read_evaluations(&good).unwrap(), original);
    for (column, value, says) in bad_cases() {
        let path = dir.path().join(format!("{column}-{value}.parquet"));
        let mut values: Vec<f64> = original
            .rows
            .iter()
            .map(|r| match column {
                "nll" => r.nll,
                "ppl" => r.ppl,
                "utility" => r.utility,
                _ => r.seconds,
            })
            .collect();
        values[1] = value;
        with_column(&good, &path, column, values);
        let error = read_evaluations(&path).unwrap_err();
        assert_names(&error, &path, 1, column);
        assert!(error.message.contains(says), "{error}");
    }
    // An all-NaN nll column (the tester's file) is refused at its first row.
    let path = dir.path().join("all-nan.parquet");
    with_column(&good, &path, "nll", vec![f64::NAN; 3]);
    assert_names(&read_evaluations(&path).unwrap_err(), &path, 0, "nll");
}

#[test]
fn a_row_that_scored_no_tokens_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-tokens.parquet");
    let mut bad = valid();
    bad.rows[1].tokens_scored = 0;
    let error = write_evaluations(&path, &bad, &provenance()).unwrap_err();
    assert_names(&error, &path, 1, "tokens_scored");
    assert!(error.message.contains("no tokens"), "{error}");
    assert!(!path.exists());
}

#[test]
fn a_collapsed_model_and_rounding_are_still_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collapsed.parquet");
    let mut rows = vec![
        row("111", FULL_NLL),
        row("011", 1e3),
        row("001", f64::INFINITY),
    ];
    // exp(1000) overflows: ppl = +inf, utility 0.
    assert_eq!(rows[1].ppl, f64::INFINITY);
    // A diverged evaluation records a NaN utility; rounding of ppl within 1e-9 is fine.
    rows[2].utility = f64::NAN;
    rows[0].ppl *= 1.0 + 1e-12;
    rows[0].seconds = 0.0;
    let written = table(rows);
    write_evaluations(&path, &written, &provenance()).unwrap();
    let read = read_evaluations(&path).unwrap();
    assert_eq!(read.rows.len(), 3);
    assert!(read.rows[2].utility.is_nan());
    assert_eq!(read.rows[2].nll, f64::INFINITY);
}

#[test]
fn a_non_finite_full_model_nll_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for nll in [f64::NAN, f64::INFINITY] {
        let path = dir.path().join("full.parquet");
        let mut bad = valid();
        bad.full_model_nll = Some(nll);
        let error = write_evaluations(&path, &bad, &provenance()).unwrap_err();
        assert_eq!(error.path, path);
        assert!(error.message.contains("full_model_nll"), "{error}");
    }
}

#[test]
fn windows_nlls_round_trip_and_broken_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Rows with and without windows (a cache resumed from an older table) round-trip as such.
    let mut with = valid();
    with.rows[0].window_nlls = Some(vec![1.5, 2.5]);
    with.rows[2].window_nlls = Some(vec![3.0, f64::INFINITY]);
    let path = dir.path().join("windows.parquet");
    write_evaluations(&path, &with, &provenance()).unwrap();
    assert_eq!(read_evaluations(&path).unwrap(), with);
    // A table without any has no column at all, and reads back the same.
    let plain = dir.path().join("plain.parquet");
    write_evaluations(&plain, &valid(), &provenance()).unwrap();
    assert!(!read_metadata(&plain).unwrap().is_empty());
    let schema = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(&plain).unwrap())
        .unwrap()
        .schema()
        .clone();
    assert!(schema.field_with_name("window_nll").is_err());
    assert_eq!(read_evaluations(&plain).unwrap(), valid());

    for (windows, says) in [
        (vec![1.0, f64::NAN], "not a window's mean NLL"),
        (vec![-0.5, 1.0], "not a window's mean NLL"),
        (vec![1.0, 2.0, 3.0], "3 windows"),
        (vec![], "0 windows"),
    ] {
        let mut bad = with.clone();
        bad.rows[1].window_nlls = Some(windows.clone());
        let path = dir.path().join(format!("bad-{}.parquet", windows.len()));
        let error = write_evaluations(&path, &bad, &provenance()).unwrap_err();
        assert_names(&error, &path, 1, "window_nll");
        assert!(error.message.contains(says), "{error}");
        assert!(!path.exists(), "a refused table must not be written");
    }
}

/// Copies the table in `from` to `to` with the footer's metadata entry `key` set to `value`.
fn with_metadata(from: &Path, to: &Path, key: &str, value: &str) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(from).unwrap()).unwrap();
    let mut metadata = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap();
    for entry in &mut metadata {
        if entry.key == key {
            entry.value = Some(value.to_string());
        }
    }
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(Result::unwrap).collect();
    let properties = WriterProperties::builder()
        .set_key_value_metadata(Some(metadata))
        .build();
    let mut writer = ArrowWriter::try_new(
        fs::File::create(to).unwrap(),
        batches[0].schema(),
        Some(properties),
    )
    .unwrap();
    for batch in &batches {
        writer.write(batch).unwrap();
    }
    writer.close().unwrap();
}

/// Masks a race measured on some windows only (a selection cache's `partial_windows`): their
/// window NLL sums round-trip bit for bit (so a mask completed later gets exactly its row),
/// a table without any reads as before, and a broken entry is refused naming the file, the
/// entry and the mask — on writing, and in a file edited by hand, on reading.
#[test]
fn partial_windows_round_trip_exactly_and_broken_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut with = valid();
    with.rows[0].window_nlls = Some(vec![1.5, 2.5, 2.0]);
    let awkward = 0.1 + 0.2;
    with.partial_windows = vec![
        PartialWindows {
            mask: "011".parse().unwrap(),
            window_nll_sums: vec![Some(awkward), None, Some(1e-300)],
            seconds: 0.25,
        },
        PartialWindows {
            mask: "110".parse().unwrap(),
            window_nll_sums: vec![None, Some(f64::INFINITY), None],
            seconds: 0.0,
        },
    ];
    let path = dir.path().join("partial.parquet");
    write_evaluations(&path, &with, &provenance()).unwrap();
    let read = read_evaluations(&path).unwrap();
    assert_eq!(read, with);
    assert_eq!(
        read.partial_windows[0].window_nll_sums[0]
            .unwrap()
            .to_bits(),
        awkward.to_bits()
    );
    let entry = "layerprune.partial_window_nll_sums";
    assert!(read_metadata(&path).unwrap().contains_key(entry));
    // None: no entry, as before.
    let plain = dir.path().join("plain.parquet");
    write_evaluations(&plain, &valid(), &provenance()).unwrap();
    assert!(!read_metadata(&plain).unwrap().contains_key(entry));

    type Break = fn(&mut PartialWindows);
    let cases: [(Break, &str); 7] = [
        (
            |p| p.window_nll_sums[0] = Some(f64::NAN),
            "not a window's NLL sum",
        ),
        (
            |p| p.window_nll_sums[0] = Some(-1.0),
            "not a window's NLL sum",
        ),
        (
            |p| p.window_nll_sums[1] = Some(2.0),
            "3 of 3 windows measured",
        ),
        (
            |p| p.window_nll_sums = vec![None; 3],
            "0 of 3 windows measured",
        ),
        (|p| p.window_nll_sums.push(None), "4 windows"),
        (|p| p.mask = "111".parse().unwrap(), "also has a row"),
        (|p| p.seconds = f64::NAN, "seconds"),
    ];
    for (i, (damage, says)) in cases.into_iter().enumerate() {
        let mut bad = with.clone();
        damage(&mut bad.partial_windows[0]);
        let path = dir.path().join(format!("bad-{i}.parquet"));
        let error = write_evaluations(&path, &bad, &provenance()).unwrap_err();
        assert_eq!(error.path, path);
        assert!(error.message.contains(entry), "{error}");
        assert!(error.message.contains(says), "{says}: {error}");
        assert!(!path.exists(), "a refused table must not be written");
    }
    let mut twice = with.clone();
    twice.partial_windows[1].mask = twice.partial_windows[0].mask.clone();
    let error =
        write_evaluations(&dir.path().join("twice.parquet"), &twice, &provenance()).unwrap_err();
    assert!(error.message.contains("more than once"), "{error}");

    // Edited by hand: refused on reading, naming the file, the entry and the line.
    for (value, says) in [
        ("011 0.25 1.0 - x", "line 1: window NLL sum \"x\""),
        ("011 0.25 1.0 - 2.0\n01 0 1.0 - -", "line 2: mask_id"),
        ("011", "line 1: no seconds"),
        ("011 0.25 1.0 - NaN", "not a window's NLL sum"),
    ] {
        let edited = dir.path().join("edited.parquet");
        with_metadata(&path, &edited, entry, value);
        let error = read_evaluations(&edited).unwrap_err();
        assert_eq!(error.path, edited);
        assert!(error.message.contains(entry), "{error}");
        assert!(error.message.contains(says), "{says}: {error}");
    }
}

/// A stage that draws conclusions from an evaluation table refuses a checkpoint (complete =
/// false), naming the file and its rows, unless told it may use one; a complete table reads as
/// `read_evaluations` reads it either way.
#[test]
fn an_incomplete_table_is_refused_where_conclusions_are_drawn_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.parquet");
    write_evaluations(&whole, &valid(), &provenance()).unwrap();
    for incomplete in [Incomplete::Refuse, Incomplete::Allow] {
        assert_eq!(
            read_complete_evaluations(&whole, incomplete).unwrap(),
            valid()
        );
    }

    let mut checkpoint = valid();
    checkpoint.complete = false;
    let path = dir.path().join("checkpoint.parquet");
    write_evaluations(&path, &checkpoint, &provenance()).unwrap();
    let error = read_complete_evaluations(&path, Incomplete::Refuse).unwrap_err();
    assert_eq!(error.kind, TableErrorKind::Incomplete);
    assert_eq!(error.path, path);
    assert!(error.message.contains("3 rows"), "{error}");
    assert_eq!(
        read_complete_evaluations(&path, Incomplete::Allow).unwrap(),
        checkpoint
    );
}

fn stat(start_block: u32, run_length: u32, mean_cosine: f64) -> BlockStatRow {
    BlockStatRow {
        start_block,
        run_length,
        mean_cosine,
        angular_distance: mean_cosine.acos() / std::f64::consts::PI,
    }
}

fn block_stats(rows: Vec<BlockStatRow>) -> BlockStatsTable {
    BlockStatsTable {
        num_blocks: 3,
        model_id: "model".into(),
        dataset_id: "data".into(),
        rows,
    }
}

#[test]
fn block_statistics_out_of_range_or_measured_twice_are_refused_on_writing_and_reading() {
    // Before, a cosine of 5 or an angular distance of -1 became block scores and plans, and a
    // run measured twice with two values was taken by `apply-prune --method angular-run`.
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("stats.parquet");
    let valid = block_stats(vec![stat(0, 1, 0.9), stat(1, 1, 0.5), stat(0, 2, -0.2)]);
    write_block_stats(&good, &valid, &provenance()).unwrap();
    assert_eq!(read_block_stats(&good).unwrap(), valid);

    let cases: [(&str, f64); 6] = [
        ("mean_cosine", 5.0),
        ("mean_cosine", -1.5),
        ("mean_cosine", f64::INFINITY),
        ("angular_distance", -1.0),
        ("angular_distance", 1.25),
        ("angular_distance", f64::NEG_INFINITY),
    ];
    for (column, value) in cases {
        let mut broken = valid.clone();
        match column {
            "mean_cosine" => broken.rows[1].mean_cosine = value,
            _ => broken.rows[1].angular_distance = value,
        }
        let path = dir.path().join("written.parquet");
        let error = write_block_stats(&path, &broken, &provenance()).unwrap_err();
        assert_names(&error, &path, 1, column);
        assert!(!path.exists(), "a refused table was written");

        let path = dir.path().join(format!("read-{column}-{value}.parquet"));
        let mut values: Vec<f64> = valid
            .rows
            .iter()
            .map(|r| match column {
                "mean_cosine" => r.mean_cosine,
                _ => r.angular_distance,
            })
            .collect();
        values[1] = value;
        with_column(&good, &path, column, values);
        assert_names(&read_block_stats(&path).unwrap_err(), &path, 1, column);
    }

    // A run measured twice, with two values.
    let mut twice = valid.clone();
    twice.rows[2] = stat(0, 1, 0.1);
    let path = dir.path().join("twice.parquet");
    let error = write_block_stats(&path, &twice, &provenance()).unwrap_err();
    assert!(error
        .to_string()
        .contains("row 2: the run of 1 blocks from block 0 is also row 0"));
    with_array(
        &good,
        &path,
        "run_length",
        Arc::new(UInt32Array::from(vec![1, 1, 1])),
    );
    let error = read_block_stats(&path).unwrap_err();
    assert_eq!(error.kind, TableErrorKind::BadValue);
    assert!(
        error
            .to_string()
            .contains("row 2: the run of 1 blocks from block 0 is also row 0"),
        "{error}"
    );

    // NaN is kept (a model whose hidden states are not numbers; the baselines refuse it when
    // they score), and rounding just past the ends of the ranges is accepted.
    let mut edge = valid.clone();
    edge.rows[0].mean_cosine = f64::NAN;
    edge.rows[0].angular_distance = f64::NAN;
    edge.rows[1].mean_cosine = 1.0 + 1e-12;
    edge.rows[1].angular_distance = -1e-12;
    write_block_stats(&good, &edge, &provenance()).unwrap();
    assert!(read_block_stats(&good).unwrap().rows[0]
        .mean_cosine
        .is_nan());
}

#[test]
fn score_estimates_that_rank_nothing_are_refused_on_writing_and_reading() {
    // A NaN estimate was read (and `inspect` said the table was fine) and refused by
    // `apply-prune` only for the estimator it was asked for. +inf ranks: a block removed last.
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("scores.parquet");
    let valid = ScoreTable {
        num_blocks: 3,
        fixed_blocks: vec![],
        model_id: String::new(),
        dataset_id: String::new(),
        rows: vec![
            ScoreRow::point(0, 1.0, "leave-one-out", 4),
            ScoreRow::point(1, f64::INFINITY, "leave-one-out", 4),
            ScoreRow::point(2, -3.0, "leave-one-out", 4),
        ],
    };
    write_scores(&good, &valid, &provenance()).unwrap();
    assert_eq!(read_scores(&good).unwrap(), valid);
    for value in [f64::NAN, f64::NEG_INFINITY] {
        let mut broken = valid.clone();
        broken.rows[2].estimate = value;
        let path = dir.path().join("written.parquet");
        let error = write_scores(&path, &broken, &provenance()).unwrap_err();
        assert_names(&error, &path, 2, "estimate");
        assert!(!path.exists(), "a refused table was written");

        let path = dir.path().join(format!("read-{value}.parquet"));
        with_column(&good, &path, "estimate", vec![1.0, f64::INFINITY, value]);
        assert_names(&read_scores(&path).unwrap_err(), &path, 2, "estimate");
    }
}

/// Each estimator of a score table scores every block but the fixed ones once. A block scored
/// twice or not at all passed `inspect` and was refused by `apply-prune` only when asked for
/// that estimator ("block 1 has more than one score", "block 3 has no score"): refused on
/// writing and reading, naming the row and the column.
#[test]
fn a_block_scored_twice_or_not_at_all_by_an_estimator_is_refused_on_writing_and_reading() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("scores.parquet");
    // Block 0 is fixed: no estimator scores it.
    let rows = |estimators: &[&str]| -> Vec<ScoreRow> {
        estimators
            .iter()
            .flat_map(|&e| (1..4).map(move |block| ScoreRow::point(block, block as f64, e, 9)))
            .collect()
    };
    let valid = ScoreTable {
        num_blocks: 4,
        fixed_blocks: vec![0],
        model_id: String::new(),
        dataset_id: String::new(),
        rows: rows(&["a", "b"]),
    };
    write_scores(&good, &valid, &provenance()).unwrap();
    assert_eq!(read_scores(&good).unwrap(), valid);

    let twice = "block 1 is scored again by a (first in row 0)";
    let missing = "a (from this row) has no score for block 3; each estimator scores each of \
                   the 4 blocks but the fixed ones ([0]) exactly once";
    let written = dir.path().join("written.parquet");
    let mut broken = valid.clone();
    broken.rows[2].block = 1;
    let error = write_scores(&written, &broken, &provenance()).unwrap_err();
    assert_names(&error, &written, 2, "block");
    assert!(error.to_string().contains(twice), "{error}");
    let mut broken = valid.clone();
    broken.rows.remove(2);
    let error = write_scores(&written, &broken, &provenance()).unwrap_err();
    assert_names(&error, &written, 0, "block");
    assert!(error.to_string().contains(missing), "{error}");
    assert!(!written.exists(), "a refused table was written");

    let read = dir.path().join("read.parquet");
    with_array(
        &good,
        &read,
        "block",
        Arc::new(UInt32Array::from(vec![1, 2, 1, 1, 2, 3])),
    );
    let error = read_scores(&read).unwrap_err();
    assert_names(&error, &read, 2, "block");
    assert!(error.to_string().contains(twice), "{error}");
    // Row 2 given to another estimator: a scores no block 3 (nor c blocks 1 and 2).
    with_array(
        &good,
        &read,
        "estimator",
        Arc::new(StringArray::from(vec!["a", "a", "c", "b", "b", "b"])),
    );
    let error = read_scores(&read).unwrap_err();
    assert_names(&error, &read, 0, "block");
    assert!(error.to_string().contains(missing), "{error}");
}

/// `apply-prune --method from-plan` takes a plan by its k and method: with two plans of one
/// method for one k it asked for --plan-method, which named both again. A plan table holds
/// one plan per method and k: refused on writing and reading, naming the row and the column.
#[test]
fn two_plans_of_one_method_for_one_k_are_refused_on_writing_and_reading() {
    let dir = tempfile::tempdir().unwrap();
    let plan = |method: &str, removed: Vec<u32>| PlanRow {
        method: method.into(),
        k: removed.len() as u32,
        removed_blocks: removed,
        predicted_value: None,
        measured_nll: Some(2.5),
        measured_ppl: Some(2.5f64.exp()),
        llm_evaluations: 6,
        runner_up: None,
        full_model: None,
    };
    let valid = PlanTable {
        num_blocks: 4,
        value: None,
        rows: vec![
            plan("sleb", vec![2]),
            plan("sleb", vec![1, 2]),
            plan("adaptive", vec![1, 2]),
        ],
    };
    let good = dir.path().join("plans.parquet");
    write_plans(&good, &valid, &provenance()).unwrap();
    assert_eq!(read_plans(&good).unwrap(), valid);

    let says = "a second plan of method sleb for k = 2 (the first is row 1)";
    let written = dir.path().join("written.parquet");
    let mut broken = valid.clone();
    broken.rows[2].method = "sleb".into();
    let error = write_plans(&written, &broken, &provenance()).unwrap_err();
    assert_names(&error, &written, 2, "k");
    assert!(error.to_string().contains(says), "{error}");
    assert!(!written.exists(), "a refused table was written");

    let read = dir.path().join("read.parquet");
    with_array(
        &good,
        &read,
        "method",
        Arc::new(StringArray::from(vec!["sleb", "sleb", "sleb"])),
    );
    let error = read_plans(&read).unwrap_err();
    assert_names(&error, &read, 2, "k");
    assert!(error.to_string().contains(says), "{error}");
}
