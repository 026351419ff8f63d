//! Round trips of every table, refusal of bad files, and atomic writing.

use layerprune_core::Design;
use std::fs;
use std::path::Path;

use layerprune_core::{Game, GameValue, Mask};
use layerprune_tables::*;

fn mask(id: &str) -> Mask {
    id.parse().unwrap()
}

fn provenance() -> Provenance {
    Provenance::new(
        "test",
        "9.9.9",
        vec!["test".into(), "--flag".into(), "a \"quoted\" arg".into()],
    )
    .with_seed(12345678901234)
    .with_game("m-id", "d-id")
}

fn evaluation(id: &str, nll: f64) -> EvaluationRow {
    EvaluationRow {
        mask: mask(id),
        nll,
        ppl: nll.exp(),
        utility: 1.5_f64.exp() / nll.exp(),
        tokens_scored: 1000,
        seconds: 0.5,
        window_nlls: None,
    }
}

fn evaluation_table() -> EvaluationTable {
    let mut table = EvaluationTable::new(3, "model-sha", "dataset-sha");
    table.full_model_nll = Some(1.5);
    table
        .append([
            evaluation("111", 1.5),
            evaluation("101", 2.75),
            evaluation("000", f64::INFINITY),
        ])
        .unwrap();
    table
}

fn names_file(error: &TableError, path: &Path) {
    assert_eq!(error.path, path);
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "message does not name the file: {error}"
    );
}

#[test]
fn every_table_round_trips_with_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);

    let tokens = TokenTable::new(
        4,
        vec![vec![1, 2, 3, 4], vec![70000, 0, 5, 5]],
        "ab12",
        "wiki",
    );
    write_tokens(&path("t.parquet"), &tokens, &provenance()).unwrap();
    assert_eq!(read_tokens(&path("t.parquet")).unwrap(), tokens);

    let masks = MaskTable {
        num_blocks: 5,
        fixed_blocks: vec![0, 4],
        rows: vec![
            MaskRow {
                mask: mask("11111"),
                design: Design::Anchor,
                group_id: None,
                position: None,
            },
            MaskRow {
                mask: mask("10001"),
                design: Design::Permutation,
                group_id: Some(-3),
                position: Some(2),
            },
            // Permutation chains share masks, so a mask table may repeat one.
            MaskRow {
                mask: mask("10001"),
                design: Design::Permutation,
                group_id: Some(4),
                position: Some(0),
            },
        ],
    };
    write_masks(&path("m.parquet"), &masks, &provenance()).unwrap();
    assert_eq!(read_masks(&path("m.parquet")).unwrap(), masks);

    let evaluations = evaluation_table();
    write_evaluations(&path("e.parquet"), &evaluations, &provenance()).unwrap();
    assert_eq!(read_evaluations(&path("e.parquet")).unwrap(), evaluations);

    let block_stats = BlockStatsTable {
        num_blocks: 3,
        model_id: "model-sha".into(),
        dataset_id: "dataset-sha".into(),
        rows: vec![
            BlockStatRow {
                start_block: 0,
                run_length: 1,
                mean_cosine: 0.5,
                angular_distance: 1.0 / 3.0,
            },
            BlockStatRow {
                start_block: 1,
                run_length: 2,
                mean_cosine: -0.25,
                angular_distance: 0.58,
            },
        ],
    };
    write_block_stats(&path("b.parquet"), &block_stats, &provenance()).unwrap();
    assert_eq!(read_block_stats(&path("b.parquet")).unwrap(), block_stats);

    let metrics = SurrogateMetricsTable {
        rows: vec![SurrogateMetricRow {
            kind: "mlp".into(),
            value: "neg-nll".into(),
            fold: -1,
            r2: 0.93,
            spearman: 0.97,
            mae: 0.012,
            n_train: 400,
            n_test: 100,
        }],
    };
    write_surrogate_metrics(&path("s.parquet"), &metrics, &provenance()).unwrap();
    assert_eq!(read_surrogate_metrics(&path("s.parquet")).unwrap(), metrics);

    // Each estimator scores every block but the fixed one, in any order.
    let scores = ScoreTable {
        num_blocks: 3,
        fixed_blocks: vec![1],
        model_id: String::new(),
        dataset_id: String::new(),
        rows: vec![
            ScoreRow {
                block: 2,
                estimate: -0.125,
                std_error: Some(0.01),
                ci_low: Some(-0.2),
                ci_high: Some(-0.05),
                estimator: "permutation".into(),
                llm_evaluations: 17,
            },
            ScoreRow {
                block: 0,
                estimate: 0.75,
                std_error: None,
                ci_low: None,
                ci_high: None,
                estimator: "exact".into(),
                llm_evaluations: 8,
            },
            ScoreRow::point(0, 0.5, "permutation", 17),
            ScoreRow::point(2, f64::INFINITY, "exact", 8),
        ],
    };
    write_scores(&path("c.parquet"), &scores, &provenance()).unwrap();
    assert_eq!(read_scores(&path("c.parquet")).unwrap(), scores);

    let plans = PlanTable {
        num_blocks: 3,
        value: Some(GameValue::NllIncrease),
        rows: vec![
            PlanRow {
                method: "search".into(),
                k: 2,
                removed_blocks: vec![0, 2],
                predicted_value: Some(0.5),
                measured_nll: None,
                measured_ppl: Some(12.0),
                llm_evaluations: 40,
                runner_up: Some(RunnerUp {
                    removed_blocks: vec![1, 2],
                    nll: 2.6,
                    margin_se: None,
                }),
                full_model: Some(FullModel {
                    nll: 2.0,
                    nll_increase_se: None,
                }),
            },
            PlanRow {
                method: "none".into(),
                k: 0,
                removed_blocks: vec![],
                predicted_value: None,
                measured_nll: Some(1.5),
                measured_ppl: None,
                llm_evaluations: 0,
                runner_up: None,
                full_model: None,
            },
        ],
    };
    write_plans(&path("p.parquet"), &plans, &provenance()).unwrap();
    assert_eq!(read_plans(&path("p.parquet")).unwrap(), plans);

    for (name, kind) in [
        ("t", TableKind::Tokens),
        ("m", TableKind::Masks),
        ("e", TableKind::Evaluations),
        ("b", TableKind::BlockStats),
        ("s", TableKind::SurrogateMetrics),
        ("c", TableKind::Scores),
        ("p", TableKind::Plans),
    ] {
        let file = path(&format!("{name}.parquet"));
        assert_eq!(read_table_kind(&file).unwrap(), kind);
        assert_eq!(read_provenance(&file).unwrap(), provenance());
        let metadata = read_metadata(&file).unwrap();
        assert_eq!(metadata["layerprune.format_version"], FORMAT_VERSION);
    }
    // Only the outputs are left: no temporary files.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 7);
}

#[test]
fn a_plan_with_a_repeated_or_unsorted_block_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for removed in [vec![1, 1], vec![2, 1]] {
        let file = dir.path().join("p.parquet");
        let plans = PlanTable {
            num_blocks: 3,
            value: None,
            rows: vec![PlanRow {
                method: "m".into(),
                k: 2,
                removed_blocks: removed.clone(),
                predicted_value: None,
                measured_nll: None,
                measured_ppl: None,
                llm_evaluations: 0,
                runner_up: None,
                full_model: None,
            }],
        };
        let err = write_plans(&file, &plans, &Provenance::new("t", "1", vec![])).unwrap_err();
        assert!(
            err.to_string().contains("ascending without repeats"),
            "{err}"
        );
        assert!(!file.exists(), "{removed:?} was written");
    }
}

#[test]
fn empty_tables_and_missing_seed_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("e.parquet");
    let table = EvaluationTable::new(7, "m", "d");
    let provenance = Provenance::new("evaluate", "1", vec![]);
    write_evaluations(&file, &table, &provenance).unwrap();
    assert_eq!(read_evaluations(&file).unwrap(), table);
    assert_eq!(read_provenance(&file).unwrap(), provenance);
}

/// A `num_blocks` beyond what a model may have is refused on reading, naming it: the count
/// sizes every set of players and masks a stage makes from the table (2^62 made `shapley`
/// allocate until the machine ran out of memory).
#[test]
fn a_table_of_more_blocks_than_a_model_may_have_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evaluations.parquet");
    for (num_blocks, accepted) in [(layerprune_core::MAX_BLOCKS, true), (1usize << 62, false)] {
        let table = EvaluationTable::new(num_blocks, "m", "d");
        write_evaluations(&path, &table, &provenance()).unwrap();
        match read_evaluations(&path) {
            Ok(read) => assert!(accepted && read.num_blocks == num_blocks),
            Err(error) => {
                assert!(!accepted, "{error}");
                names_file(&error, &path);
                assert!(
                    error
                        .to_string()
                        .contains("more blocks than a model may have"),
                    "{error}"
                );
            }
        }
    }
}

/// A row that removes a block the table says is fixed makes the table contradict itself: a
/// masks or evaluation table holding one is refused, naming the row and the block, when it is
/// written (a cache saved so could never be read again) as when it is read (another tool's
/// file: `foreign.rs`, `fixed_blocks_listed_in_any_order_read_as_the_set`).
#[test]
fn a_row_removing_a_fixed_block_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let masks_path = dir.path().join("masks.parquet");
    let row = |id: &str| MaskRow {
        mask: mask(id),
        design: Design::Anchor,
        group_id: None,
        position: None,
    };
    let masks = MaskTable {
        num_blocks: 3,
        fixed_blocks: vec![0],
        rows: vec![row("111"), row("101"), row("011")],
    };
    let error = write_masks(&masks_path, &masks, &provenance()).unwrap_err();
    names_file(&error, &masks_path);
    assert!(
        error
            .to_string()
            .contains("row 2: mask 011 removes block 0"),
        "{error}"
    );
    assert!(!masks_path.exists());
    let evaluations_path = dir.path().join("evaluations.parquet");
    let mut table = evaluation_table();
    table.fixed_blocks = vec![1];
    let error = write_evaluations(&evaluations_path, &table, &provenance()).unwrap_err();
    assert!(error.to_string().contains("removes block 1"), "{error}");
    assert!(!evaluations_path.exists());
    table.rows.retain(|r| r.mask.is_kept(1));
    write_evaluations(&evaluations_path, &table, &provenance()).unwrap();
    assert_eq!(read_evaluations(&evaluations_path).unwrap(), table);
}

#[test]
fn dataset_id_depends_on_every_token_and_the_window_length() {
    let windows = vec![vec![1, 2], vec![3, 4]];
    let id = dataset_id(2, &windows);
    assert_eq!(id.len(), 64);
    assert_eq!(id, dataset_id(2, &windows.clone()));
    assert_ne!(id, dataset_id(2, &[vec![1, 2], vec![3, 5]]));
    assert_ne!(id, dataset_id(2, &[vec![3, 4], vec![1, 2]]));
    assert_ne!(id, dataset_id(4, &[vec![1, 2, 3, 4]]));
    // The documented encoding: seq_len then the tokens, little-endian u32 each.
    let mut bytes = Vec::new();
    for value in [2u32, 1, 2, 3, 4] {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    assert_eq!(id, layerprune_core::sha256_hex(&bytes));
}

#[test]
fn token_tables_must_be_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.parquet");
    let mut table = TokenTable::new(2, vec![vec![1, 2], vec![3]], "x", "y");
    let error = write_tokens(&file, &table, &provenance()).unwrap_err();
    assert_eq!(error.kind, TableErrorKind::BadValue);
    assert!(error.message.contains("window 1"), "{error}");
    table.windows[1].push(4);
    let error = write_tokens(&file, &table, &provenance()).unwrap_err();
    assert!(error.message.contains("dataset_id"), "{error}");
    assert!(!file.exists());
}

#[test]
fn a_huge_file_that_is_not_parquet_is_refused_by_its_ends_not_read_whole() {
    // 64 GiB sparse files (no disk used) with the magic at both ends: read whole they would
    // exhaust memory; each is refused by its ends at once. The tails: no footer; a footer of one
    // zero byte (an empty Thrift struct, so well-formed, but no file metadata); a footer length
    // of almost 4 GiB.
    let dir = tempfile::tempdir().unwrap();
    for (tail, expected) in [
        (&b"\x00\x00\x00\x00PAR1"[..], "footer"),
        (&b"\x00\x01\x00\x00\x00PAR1"[..], "not Parquet metadata"),
        (&b"\x00\xff\xff\xffPAR1"[..], "a table's footer may have"),
    ] {
        let file = dir.path().join("huge.parquet");
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = fs::File::create(&file).unwrap();
            f.write_all(b"PAR1").unwrap();
            f.set_len(64 << 30).unwrap();
            f.seek(SeekFrom::End(-(tail.len() as i64))).unwrap();
            f.write_all(tail).unwrap();
        }
        let path = file.clone();
        let error = layerprune_tests::within(
            std::time::Duration::from_secs(60),
            "reading a 64 GiB file that is no Parquet",
            move || read_masks(&path).unwrap_err(),
        );
        assert_eq!(error.kind, TableErrorKind::NotParquet);
        assert!(error.message.contains(expected), "{expected}: {error}");
        fs::remove_file(&file).unwrap();
    }
}

#[test]
fn a_file_that_is_not_parquet_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("masks.parquet");
    fs::write(&file, "mask_id,kept\n111,true\n").unwrap();
    let error = read_masks(&file).unwrap_err();
    assert_eq!(error.kind, TableErrorKind::NotParquet);
    names_file(&error, &file);

    let missing = dir.path().join("absent.parquet");
    let error = read_evaluations(&missing).unwrap_err();
    assert_eq!(error.kind, TableErrorKind::Io);
    names_file(&error, &missing);
}

#[cfg(unix)]
#[test]
fn a_fifo_or_a_device_given_as_a_table_is_refused_at_once() {
    // Before, a FIFO that no process writes blocked the open for ever (every stage hung), and
    // /dev/zero was read until the memory ran out.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("tokens.parquet");
    layerprune_tests::make_fifo(&fifo);
    for path in [fifo, Path::new("/dev/zero").to_path_buf()] {
        let shown = path.clone();
        let error = layerprune_tests::within(
            std::time::Duration::from_secs(20),
            &format!("reading {}", shown.display()),
            move || read_tokens(&path).unwrap_err(),
        );
        assert_eq!(error.kind, TableErrorKind::Io);
        names_file(&error, &shown);
        assert!(error.to_string().contains("not a regular file"), "{error}");
    }
}

#[test]
fn reading_one_table_as_another_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("evaluations.parquet");
    write_evaluations(&file, &evaluation_table(), &provenance()).unwrap();
    let error = read_masks(&file).unwrap_err();
    assert_eq!(error.kind, TableErrorKind::WrongTable);
    assert!(
        error.message.contains("evaluations") && error.message.contains("masks"),
        "{error}"
    );
    names_file(&error, &file);
}

/// Writes a Parquet file by hand, bypassing the checks of this crate's writers.
fn write_raw(path: &Path, metadata: &[(&str, &str)], batch: arrow_array::RecordBatch) {
    write_raw_compressed(path, metadata, batch, parquet::basic::Compression::SNAPPY);
}

/// [`write_raw`] with the pages compressed by `compression`.
fn write_raw_compressed(
    path: &Path,
    metadata: &[(&str, &str)],
    batch: arrow_array::RecordBatch,
    compression: parquet::basic::Compression,
) {
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    let properties = WriterProperties::builder()
        .set_compression(compression)
        .set_key_value_metadata(Some(
            metadata
                .iter()
                .map(|(k, v)| KeyValue::new(k.to_string(), v.to_string()))
                .collect(),
        ))
        .build();
    let file = fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Rewrites a table's one record batch through `change`, keeping its layerprune metadata: a
/// file as another build (or tool) wrote it.
fn rewrite_batch(
    path: &Path,
    change: impl Fn(&arrow_array::RecordBatch) -> (Vec<arrow_schema::Field>, Vec<arrow_array::ArrayRef>),
) {
    rewrite_batch_compressed(path, parquet::basic::Compression::SNAPPY, change)
}

/// [`rewrite_batch`] with the pages compressed by `compression`.
fn rewrite_batch_compressed(
    path: &Path,
    compression: parquet::basic::Compression,
    change: impl Fn(&arrow_array::RecordBatch) -> (Vec<arrow_schema::Field>, Vec<arrow_array::ArrayRef>),
) {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let metadata = read_metadata(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    assert_eq!(batches.len(), 1);
    let (fields, columns) = change(&batches[0]);
    let batch = arrow_array::RecordBatch::try_new(
        std::sync::Arc::new(arrow_schema::Schema::new(fields)),
        columns,
    )
    .unwrap();
    let entries: Vec<(&str, &str)> = metadata
        .iter()
        .filter(|(k, _)| k.starts_with(KEY_PREFIX))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    write_raw_compressed(path, &entries, batch, compression);
}

/// Rewrites a table with one column renamed: a file as a build from before the column's rename
/// wrote it.
fn rename_column(path: &Path, from: &str, to: &str) {
    rewrite_batch(path, |batch| {
        let fields = batch
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let f = f.as_ref().clone();
                if f.name() == from {
                    f.with_name(to)
                } else {
                    f
                }
            })
            .collect();
        (fields, batch.columns().to_vec())
    });
}

#[test]
fn tables_other_tools_compressed_with_any_common_codec_are_read() {
    // polars writes zstd by default, older Spark gzip; pyarrow and this crate Snappy.
    use parquet::basic::{Compression, GzipLevel, ZstdLevel};
    let dir = tempfile::tempdir().unwrap();
    for compression in [
        Compression::UNCOMPRESSED,
        Compression::ZSTD(ZstdLevel::default()),
        Compression::GZIP(GzipLevel::default()),
        Compression::LZ4_RAW,
        Compression::LZ4,
    ] {
        let path = dir.path().join(format!("{compression}.parquet"));
        write_evaluations(&path, &evaluation_table(), &provenance()).unwrap();
        rewrite_batch_compressed(&path, compression, |batch| {
            let fields = batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            (fields, batch.columns().to_vec())
        });
        let read = read_evaluations(&path).unwrap_or_else(|error| panic!("{compression}: {error}"));
        assert_eq!(read, evaluation_table(), "{compression}");
    }
    // Brotli is not built in: refused by name before a page is decoded (pyarrow wrote the file).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/codecs/brotli-pages.parquet");
    let error = read_evaluations(&path).unwrap_err();
    names_file(&error, &path);
    assert!(error.to_string().contains("Brotli"), "{error}");
}

/// Columns a writer declares with Arrow's 64-bit-offset types (polars: `large_string`,
/// `large_list`) hold what the 32-bit ones do: the table reads the same. The file is one of
/// this crate's evaluation tables (beside it) rewritten by pyarrow with those types.
#[test]
fn tables_with_large_string_and_list_columns_are_read() {
    let codecs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/codecs");
    let large = read_evaluations(&codecs.join("evaluations-large-types.parquet"))
        .unwrap_or_else(|error| panic!("{error}"));
    let ours = read_evaluations(&codecs.join("evaluations.parquet")).unwrap();
    assert_eq!(large, ours);
    assert_eq!(large.rows.len(), 64);
    assert!(large.rows.iter().all(|row| row.window_nlls.is_some()));
}

#[test]
fn columns_written_under_their_former_names_are_read_under_the_current_ones() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_path = dir.path().join("metrics.parquet");
    let metrics = SurrogateMetricsTable {
        rows: vec![SurrogateMetricRow {
            kind: "quadratic".into(),
            value: "nll-increase".into(),
            fold: 0,
            r2: 0.9,
            spearman: 0.95,
            mae: 0.01,
            n_train: 160,
            n_test: 40,
        }],
    };
    write_surrogate_metrics(&metrics_path, &metrics, &provenance()).unwrap();
    rename_column(&metrics_path, "value", "target");
    rename_column(&metrics_path, "kind", "surrogate");
    assert_eq!(read_surrogate_metrics(&metrics_path).unwrap(), metrics);

    let plans_path = dir.path().join("plans.parquet");
    let plans = PlanTable {
        num_blocks: 4,
        value: None,
        rows: vec![PlanRow {
            method: "iterative".into(),
            k: 1,
            removed_blocks: vec![2],
            predicted_value: Some(-0.25),
            measured_nll: Some(2.5),
            measured_ppl: None,
            llm_evaluations: 12,
            runner_up: None,
            full_model: None,
        }],
    };
    write_plans(&plans_path, &plans, &provenance()).unwrap();
    rename_column(&plans_path, "predicted_value", "predicted_utility");
    assert_eq!(read_plans(&plans_path).unwrap(), plans);

    // With both names (another tool added the former), the current one is read.
    write_surrogate_metrics(&metrics_path, &metrics, &provenance()).unwrap();
    rewrite_batch(&metrics_path, |batch| {
        let mut fields: Vec<arrow_schema::Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns = batch.columns().to_vec();
        fields.push(arrow_schema::Field::new(
            "target",
            arrow_schema::DataType::Utf8,
            false,
        ));
        columns.push(std::sync::Arc::new(arrow_array::StringArray::from(vec![
            "utility",
        ])));
        (fields, columns)
    });
    assert_eq!(read_surrogate_metrics(&metrics_path).unwrap(), metrics);
    rename_column(&metrics_path, "value", "unrelated");

    // Without either name the column is missing, under its current name.
    rename_column(&metrics_path, "target", "objective");
    let error = read_surrogate_metrics(&metrics_path).unwrap_err();
    assert_eq!(error.kind, TableErrorKind::Missing);
    assert!(error.message.contains("\"value\""), "{error}");
}

fn mask_batch(ids: &[&str], with_num_removed: bool) -> arrow_array::RecordBatch {
    mask_batch_of_design(ids, with_num_removed, "anchor")
}

fn mask_batch_of_design(
    ids: &[&str],
    with_num_removed: bool,
    design: &str,
) -> arrow_array::RecordBatch {
    use arrow_array::builder::{BooleanBuilder, ListBuilder};
    use arrow_array::{ArrayRef, StringArray, UInt32Array};
    use std::sync::Arc;
    let mut kept = ListBuilder::new(BooleanBuilder::new());
    for id in ids {
        for c in id.chars() {
            kept.values().append_value(c == '1');
        }
        kept.append(true);
    }
    let mut columns: Vec<(&str, ArrayRef)> = vec![
        ("mask_id", Arc::new(StringArray::from(ids.to_vec()))),
        ("kept", Arc::new(kept.finish())),
    ];
    if with_num_removed {
        let removed = ids
            .iter()
            .map(|id| id.matches('0').count() as u32)
            .collect::<Vec<_>>();
        columns.push(("num_removed", Arc::new(UInt32Array::from(removed))));
    }
    columns.push((
        "design",
        Arc::new(StringArray::from(vec![design; ids.len()])),
    ));
    columns.push((
        "group_id",
        Arc::new(arrow_array::Int64Array::from(vec![None; ids.len()])),
    ));
    columns.push((
        "position",
        Arc::new(UInt32Array::from(vec![None; ids.len()])),
    ));
    arrow_array::RecordBatch::try_from_iter(columns).unwrap()
}

const MASK_METADATA: [(&str, &str); 3] = [
    ("layerprune.table", "masks"),
    ("layerprune.format_version", "1"),
    ("layerprune.num_blocks", "3"),
];

#[test]
fn a_mask_of_the_wrong_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("masks.parquet");
    let mut metadata = MASK_METADATA.to_vec();
    metadata.push(("layerprune.fixed_blocks", "[]"));
    write_raw(&file, &metadata, mask_batch(&["111", "1101"], true));
    let error = read_masks(&file).unwrap_err();
    assert_eq!(error.kind, TableErrorKind::BadValue);
    assert!(
        error.message.contains("row 1") && error.message.contains("4 entries"),
        "{error}"
    );
    names_file(&error, &file);

    // The writer refuses it too, and leaves nothing behind.
    let out = dir.path().join("out.parquet");
    let table = MaskTable {
        num_blocks: 3,
        fixed_blocks: vec![],
        rows: vec![MaskRow {
            mask: mask("11"),
            design: Design::Anchor,
            group_id: None,
            position: None,
        }],
    };
    let error = write_masks(&out, &table, &provenance()).unwrap_err();
    names_file(&error, &out);
    assert!(!out.exists());
}

#[test]
fn a_design_outside_the_contract_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("masks.parquet");
    let mut metadata = MASK_METADATA.to_vec();
    metadata.push(("layerprune.fixed_blocks", "[]"));
    write_raw(
        &file,
        &metadata,
        mask_batch_of_design(&["111"], true, "search"),
    );
    let error = read_masks(&file).unwrap_err();
    assert!(
        error
            .message
            .contains(r#"row 0: design "search" is not one of"#),
        "{error}"
    );
    names_file(&error, &file);
}

#[test]
fn a_missing_column_or_metadata_entry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("masks.parquet");
    let mut metadata = MASK_METADATA.to_vec();
    metadata.push(("layerprune.fixed_blocks", "[]"));
    write_raw(&file, &metadata, mask_batch(&["111"], false));
    let error = read_masks(&file).unwrap_err();
    assert_eq!(error.kind, TableErrorKind::Missing);
    assert!(error.message.contains("num_removed"), "{error}");
    names_file(&error, &file);

    write_raw(&file, &MASK_METADATA, mask_batch(&["111"], true));
    let error = read_masks(&file).unwrap_err();
    assert_eq!(error.kind, TableErrorKind::Missing);
    assert!(error.message.contains("layerprune.fixed_blocks"), "{error}");
}

#[test]
fn duplicate_mask_ids_in_an_evaluation_table_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("evaluations.parquet");
    let mut table = evaluation_table();
    table.rows.push(evaluation("101", 9.0));
    let error = write_evaluations(&file, &table, &provenance()).unwrap_err();
    assert!(error.message.contains("101"), "{error}");
    assert!(!file.exists());

    // A file with a duplicate (written by some other tool) is refused on reading.
    let masks_file = dir.path().join("masks.parquet");
    write_masks(
        &masks_file,
        &MaskTable {
            num_blocks: 3,
            fixed_blocks: vec![],
            rows: vec![
                MaskRow {
                    mask: mask("101"),
                    design: Design::Anchor,
                    group_id: None,
                    position: None,
                },
                MaskRow {
                    mask: mask("101"),
                    design: Design::Anchor,
                    group_id: None,
                    position: None,
                },
            ],
        },
        &provenance(),
    )
    .unwrap();
    // Reuse the mask columns of the masks file and add evaluation columns.
    let batch = {
        use arrow_array::{ArrayRef, Float64Array, UInt64Array};
        use std::sync::Arc;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            fs::File::open(&masks_file).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        let masks = reader.into_iter().next().unwrap().unwrap();
        let float = |v: f64| -> ArrayRef { Arc::new(Float64Array::from(vec![v, v])) };
        let mut columns: Vec<(&str, ArrayRef)> = ["mask_id", "kept", "num_removed"]
            .into_iter()
            .map(|name| (name, masks.column_by_name(name).unwrap().clone()))
            .collect();
        columns.extend([
            ("nll", float(2.0)),
            ("ppl", float(2f64.exp())),
            ("utility", float(0.5)),
            (
                "tokens_scored",
                Arc::new(UInt64Array::from(vec![5u64, 5])) as ArrayRef,
            ),
            ("seconds", float(0.1)),
        ]);
        arrow_array::RecordBatch::try_from_iter(columns).unwrap()
    };
    write_raw(
        &file,
        &[
            ("layerprune.table", "evaluations"),
            ("layerprune.format_version", "1"),
            ("layerprune.num_blocks", "3"),
            ("layerprune.model_id", "m"),
            ("layerprune.dataset_id", "d"),
            ("layerprune.full_model_nll", "null"),
            ("layerprune.complete", "true"),
        ],
        batch,
    );
    let error = read_evaluations(&file).unwrap_err();
    assert_eq!(error.kind, TableErrorKind::BadValue);
    assert!(
        error.message.contains("101") && error.message.contains("more than once"),
        "{error}"
    );
    names_file(&error, &file);
}

#[test]
fn a_failed_atomic_write_leaves_neither_temp_file_nor_partial_output() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.json");
    let error = atomic_write(&file, |out| -> Result<(), _> {
        out.write_all(b"{\"half\": ")?;
        Err("the writer gave up".into())
    })
    .unwrap_err();
    assert!(error.message.contains("gave up"), "{error}");
    names_file(&error, &file);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

    // A previous version survives a failed rewrite untouched.
    atomic_write(&file, |out| Ok(out.write_all(b"old")?)).unwrap();
    let _ = atomic_write(&file, |out| -> Result<(), _> {
        out.write_all(b"new but broken")?;
        Err("no".into())
    });
    assert_eq!(fs::read(&file).unwrap(), b"old");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

    let value = atomic_write(&file, |out| {
        out.write_all(b"new")?;
        Ok(42)
    })
    .unwrap();
    assert_eq!(value, 42);
    assert_eq!(fs::read(&file).unwrap(), b"new");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn writing_into_a_missing_folder_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("no-such-folder").join("scores.parquet");
    let table = ScoreTable {
        num_blocks: 1,
        fixed_blocks: Vec::new(),
        model_id: String::new(),
        dataset_id: String::new(),
        rows: vec![],
    };
    let error = write_scores(&file, &table, &provenance()).unwrap_err();
    assert_eq!(error.kind, TableErrorKind::Io);
    names_file(&error, &file);
}

#[test]
fn evaluations_become_a_game_without_non_finite_values() {
    let table = evaluation_table();
    let mut utility = table.to_game(GameValue::Utility).unwrap();
    assert_eq!(utility.num_players(), 3);
    assert_eq!(utility.len(), 3);
    assert!((utility.value(&mask("111")).unwrap() - 1.0).abs() < 1e-12);
    assert!((utility.value(&mask("101")).unwrap() - (-1.25f64).exp()).abs() < 1e-12);
    let mut neg_nll = table.to_game("neg-nll".parse().unwrap()).unwrap();
    assert_eq!(neg_nll.len(), 2, "the infinite NLL row is left out");
    assert_eq!(neg_nll.value(&mask("101")).unwrap(), -2.75);
    assert!(neg_nll.value(&mask("000")).is_err());
    assert!("ppl".parse::<GameValue>().is_err());
}

#[test]
fn evaluations_with_window_nlls_become_the_llm_s_game_window_by_window() {
    let mut table = EvaluationTable::new(3, "model-sha", "dataset-sha");
    let windowed = |id: &str, windows: Vec<f64>| EvaluationRow {
        window_nlls: Some(windows.clone()),
        ..evaluation(id, windows.iter().sum::<f64>() / windows.len() as f64)
    };
    table
        .append([
            windowed("111", vec![1.0, 2.0]),
            windowed("101", vec![2.5, 3.0]),
        ])
        .unwrap();
    let mut game = table.to_game_with_windows().unwrap();
    assert_eq!(game.num_windows(), Some(2));
    assert_eq!(game.value(&mask("101")).unwrap(), -2.75);
    assert_eq!(
        game.values_on_windows(&[mask("111")], 1..2).unwrap(),
        vec![vec![-2.0]]
    );
    // A row without its windows (or with a non-finite one) cannot be raced: refused.
    table.append([evaluation("011", 2.0)]).unwrap();
    let error = table.to_game_with_windows().unwrap_err();
    assert!(error.to_string().contains("011"), "{error}");
    assert!(evaluation_table().to_game_with_windows().is_err());
}

#[test]
fn a_resumed_run_keeps_its_rows_and_evaluates_only_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("evaluations.parquet");
    let wanted = vec![
        mask("111"),
        mask("011"),
        mask("101"),
        mask("011"),
        mask("110"),
    ];

    let mut table = resume_evaluations(&file, 3, "model", "data", "cpu").unwrap();
    assert!(table.rows.is_empty() && !table.complete);
    assert_eq!(
        table.pending(&wanted),
        vec![mask("111"), mask("011"), mask("101"), mask("110")]
    );
    table
        .append([evaluation("111", 1.5), evaluation("011", 4.0)])
        .unwrap();
    write_evaluations(&file, &table, &provenance()).unwrap();

    let mut resumed = resume_evaluations(&file, 3, "model", "data", "cpu").unwrap();
    assert!(!resumed.complete);
    assert_eq!(
        resumed.done_mask_ids(),
        ["111", "011"].map(String::from).into()
    );
    assert_eq!(resumed.pending(&wanted), vec![mask("101"), mask("110")]);
    assert_eq!(
        resumed.append([evaluation("011", 3.0)]),
        Err(AppendError::Duplicate(mask("011")))
    );
    assert!(matches!(
        resumed.append([evaluation("1111", 3.0)]),
        Err(AppendError::WrongLength { .. })
    ));
    assert_eq!(resumed.rows.len(), 2, "a refused append adds nothing");
    resumed
        .append([evaluation("101", 2.0), evaluation("110", 2.5)])
        .unwrap();
    resumed.complete = true;
    write_evaluations(&file, &resumed, &provenance()).unwrap();
    let done = read_evaluations(&file).unwrap();
    assert!(done.complete && done.pending(&wanted).is_empty());
    assert_eq!(done.rows.len(), 4);

    // Each refusal says in words which of them differs, with both values.
    for (blocks, model, data, what) in [
        (
            4,
            "model",
            "data",
            "masks of 3 blocks, this run's model has 4",
        ),
        (
            3,
            "other",
            "data",
            "another model (model id model, this run's is other)",
        ),
        (
            3,
            "model",
            "other",
            "another token table (dataset id data, this run's is other)",
        ),
    ] {
        let error = resume_evaluations(&file, blocks, model, data, "cpu").unwrap_err();
        assert!(error.message.contains(what), "{error}");
        names_file(&error, &file);
        // Another run's whole table, not a damaged one: no stage advises removing it as such.
        assert_eq!(error.kind, TableErrorKind::NotResumable, "{error}");
        assert!(!error.is_damaged(), "{error}");
    }
    // A copy cut short is damaged: the stages name it and advise removing it, in one wording.
    let whole = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.parquet");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let error = resume_evaluations(&cut, 3, "model", "data", "cpu").unwrap_err();
    assert!(error.is_damaged(), "{error}");
    names_file(&error, &cut);
    assert_eq!(
        layerprune_tables::damaged_resumed_table("--out cut.parquet", "choose another --out"),
        "--out cut.parquet: cannot be read, so it cannot be resumed; remove it (the rows it held \
         are measured again), or choose another --out"
    );

    // A user's file that is no Parquet file at all, and a table cut within its first bytes.
    let notes = dir.path().join("notes.parquet");
    fs::write(&notes, b"my notes").unwrap();
    let error = resume_evaluations(&notes, 3, "model", "data", "cpu").unwrap_err();
    assert_eq!(error.kind, TableErrorKind::NotParquet, "{error}");
    assert!(!error.is_damaged(), "a user's file is kept: {error}");
    for length in [0, 2, 4, 12, whole.len() / 2] {
        fs::write(&cut, &whole[..length]).unwrap();
        let error = resume_evaluations(&cut, 3, "model", "data", "cpu").unwrap_err();
        assert!(error.is_damaged(), "cut to {length} bytes: {error}");
    }
    let damaged = resume_evaluations(&cut, 3, "model", "data", "cpu").unwrap_err();
    // The one decision of the stages: removing a damaged table, keeping any other.
    let keep = || "--out FILE: pass --overwrite to replace it, or choose another --out".to_string();
    let refusal = |error: Option<&TableError>| {
        resume_refusal(error, "--out FILE", "choose another --out", keep)
    };
    assert_eq!(
        refusal(Some(&damaged)),
        damaged_resumed_table("--out FILE", "choose another --out")
    );
    let user_file = resume_evaluations(&notes, 3, "model", "data", "cpu").unwrap_err();
    let another_run = resume_evaluations(&file, 3, "other", "data", "cpu").unwrap_err();
    for not_damaged in [Some(&user_file), Some(&another_run), None] {
        assert_eq!(refusal(not_damaged), keep());
    }
    assert_eq!(
        replace_with_overwrite("--out FILE", "choose another --out"),
        keep()
    );

    // Rows measured on a CPU are not resumed on a GPU (or with other arithmetic there): their
    // NLLs differ in the last digits.
    assert_eq!(done.evaluated_on.as_deref(), Some("cpu"));
    let error = resume_evaluations(&file, 3, "model", "data", "cuda, tf32 on").unwrap_err();
    assert_eq!(error.kind, TableErrorKind::MeasuredOtherwise);
    assert!(
        error.message.contains(
            "measured on cpu, this run measures on cuda, tf32 on (the same model and token table"
        ),
        "{error}"
    );
    names_file(&error, &file);
    // A table from before the entry (none recorded) is resumed, and records this run's.
    let mut unrecorded = done.clone();
    unrecorded.evaluated_on = None;
    write_evaluations(&file, &unrecorded, &provenance()).unwrap();
    assert_eq!(read_evaluations(&file).unwrap().evaluated_on, None);
    let resumed = resume_evaluations(&file, 3, "model", "data", "cuda, tf32 off").unwrap();
    assert_eq!(resumed.evaluated_on.as_deref(), Some("cuda, tf32 off"));

    // A cache holding only windows a race measured (no row yet) is measured alike too.
    let mut partial = EvaluationTable::new(3, "model", "data");
    partial.evaluated_on = Some("cpu".into());
    partial.partial_windows = vec![PartialWindows {
        mask: mask("101"),
        window_nll_sums: vec![Some(40.0), None],
        seconds: 0.5,
    }];
    write_evaluations(&file, &partial, &provenance()).unwrap();
    let error = resume_evaluations(&file, 3, "model", "data", "cuda, tf32 on").unwrap_err();
    assert!(error.message.contains("measured on cpu"), "{error}");
}

#[test]
fn every_game_value_is_read_from_one_definition() {
    let mut table = evaluation_table();
    let increase = table.values(GameValue::NllIncrease).unwrap();
    assert_eq!(&increase[..2], &[0.0, -(2.75 - 1.5)]);
    assert_eq!(table.values(GameValue::NegNll).unwrap()[1], -2.75);
    // The stored utility column (a task run stores its accuracy ratio there).
    assert_eq!(
        table.values(GameValue::Utility).unwrap()[1],
        table.rows[1].utility
    );
    // Without full_model_nll the full mask's row is the reference; without either, an error.
    table.full_model_nll = None;
    assert_eq!(table.values(GameValue::NllIncrease).unwrap(), increase);
    table.rows.retain(|row| row.mask.num_removed() > 0);
    let error = table.values(GameValue::NllIncrease).unwrap_err();
    assert!(error.message.contains("full model's NLL"), "{error}");
    assert!(table.values(GameValue::NegNll).is_ok());
}

#[test]
fn the_input_ids_read_alone_from_a_table_with_partial_provenance() {
    // A table whose provenance has `inputs` but not the rest (written by another tool): its ids
    // are read; one with no `inputs` has none.
    let dir = tempfile::tempdir().unwrap();
    let with = dir.path().join("with.parquet");
    write_raw(
        &with,
        &[("layerprune.inputs", r#"{"model":"m1"}"#)],
        mask_batch(&["111"], true),
    );
    let ids = read_input_ids(&with).unwrap();
    assert_eq!(ids.get("model").map(String::as_str), Some("m1"));
    assert!(read_provenance(&with).is_err(), "the rest is missing");
    let without = dir.path().join("without.parquet");
    write_raw(&without, &[], mask_batch(&["111"], true));
    assert!(read_input_ids(&without).unwrap().is_empty());
    let bad = dir.path().join("bad.parquet");
    write_raw(
        &bad,
        &[("layerprune.inputs", "[1")],
        mask_batch(&["111"], true),
    );
    assert!(read_input_ids(&bad).is_err());
}

/// A task choice table from before acc_norm counted characters (its `norm_bytes`, UTF-8 bytes)
/// is refused saying why, not read as if its lengths were characters.
#[test]
fn a_task_choice_table_of_byte_lengths_is_refused_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("choices.parquet");
    let table = TaskChoiceTable {
        num_blocks: 2,
        model_id: "m".into(),
        dataset_id: "d".into(),
        scoring: "logits-f64-log-softmax".into(),
        evaluated_on: None,
        complete: true,
        rows: vec![TaskChoiceRow {
            mask: Mask::full(2),
            task: "piqa".into(),
            question: 0,
            choice: 0,
            gold: 0,
            loglik: -2.0,
            continuation_tokens: 4,
            norm_chars: 12,
        }],
    };
    write_task_choices(&path, &table, &provenance()).unwrap();
    assert_eq!(read_task_choices(&path).unwrap(), table);
    rename_column(&path, "norm_chars", "norm_bytes");
    let message = read_task_choices(&path).unwrap_err().to_string();
    assert!(
        message.contains("\"norm_chars\" is missing: it has \"norm_bytes\"")
            && message.contains("score the tasks again"),
        "{message}"
    );
}

/// The hashed readers (what a stage records of an input in its provenance) give the SHA-256 of
/// the file's bytes and the very table the plain reader gives; the complete-table one refuses
/// what the plain one refuses.
#[test]
fn hashed_readers_give_the_files_sha256_and_the_plain_readers_table() {
    let dir = tempfile::tempdir().unwrap();
    let sha256_of = |path: &Path| layerprune_core::sha256_hex(&fs::read(path).unwrap());

    let masks_path = dir.path().join("m.parquet");
    let masks = MaskTable {
        num_blocks: 4,
        fixed_blocks: vec![0],
        rows: vec![
            MaskRow {
                mask: mask("1111"),
                design: Design::Anchor,
                group_id: None,
                position: None,
            },
            MaskRow {
                mask: mask("1010"),
                design: Design::Permutation,
                group_id: Some(1),
                position: Some(2),
            },
        ],
    };
    write_masks(&masks_path, &masks, &provenance()).unwrap();
    let hashed = read_masks_hashed(&masks_path).unwrap();
    assert_eq!(hashed.sha256, sha256_of(&masks_path));
    assert_eq!(hashed.table, read_masks(&masks_path).unwrap());
    assert_eq!(hashed.table, masks);

    // Two evaluation tables that differ in one value: each hash is its own file's.
    let incomplete_path = dir.path().join("incomplete.parquet");
    let incomplete = evaluation_table();
    assert!(!incomplete.complete);
    write_evaluations(&incomplete_path, &incomplete, &provenance()).unwrap();
    let complete_path = dir.path().join("complete.parquet");
    let complete = EvaluationTable {
        complete: true,
        ..evaluation_table()
    };
    write_evaluations(&complete_path, &complete, &provenance()).unwrap();
    for (path, table) in [(&incomplete_path, &incomplete), (&complete_path, &complete)] {
        let hashed = read_evaluations_hashed(path).unwrap();
        assert_eq!(hashed.sha256, sha256_of(path));
        assert_eq!(&hashed.table, &read_evaluations(path).unwrap());
        assert_eq!(&hashed.table, table);
    }
    assert_ne!(sha256_of(&incomplete_path), sha256_of(&complete_path));

    let hashed = read_complete_evaluations_hashed(&complete_path, Incomplete::Refuse).unwrap();
    assert_eq!(hashed.sha256, sha256_of(&complete_path));
    assert_eq!(
        hashed.table,
        read_complete_evaluations(&complete_path, Incomplete::Refuse).unwrap()
    );
    let hashed = read_complete_evaluations_hashed(&incomplete_path, Incomplete::Allow).unwrap();
    assert_eq!(hashed.sha256, sha256_of(&incomplete_path));
    assert_eq!(
        hashed.table,
        read_complete_evaluations(&incomplete_path, Incomplete::Allow).unwrap()
    );
    // A checkpoint is refused by both, with the same message.
    let refused = read_complete_evaluations_hashed(&incomplete_path, Incomplete::Refuse)
        .map(|_| ())
        .unwrap_err();
    let plain = read_complete_evaluations(&incomplete_path, Incomplete::Refuse).unwrap_err();
    assert_eq!(refused.to_string(), plain.to_string());
    names_file(&refused, &incomplete_path);
}
