//! The evaluation run as a library on the committed tiny model: shard selection, the merge of
//! shard tables (and its refusals), and resuming a partial table.

use layerprune_core::Design;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use layerprune_core::Mask;
use layerprune_evaluation::{
    merge_evaluations, run_evaluation, BlockStatsOutput, EvaluationConfig, EvaluationOutcome,
    MaskSource, MergeConfig, Progress, Shard,
};
use layerprune_runtime::{EvalOptions, RuntimeOptions};
use layerprune_tables::{
    read_block_stats, read_evaluations, read_masks, read_provenance, write_evaluations,
    write_masks, write_tokens, EvaluationRow, EvaluationTable, MaskRow, MaskTable, Provenance,
    TokenTable,
};
use layerprune_tests::{blocks_needed, every_mask, fixture_windows, tiny_model_dir};

fn provenance() -> Provenance {
    Provenance::new(
        "evaluate",
        "0.1.0",
        vec!["evaluate".into(), "--test".into()],
    )
}

/// A token table of 3 windows of 12 tokens (`seed` picks them) and a table of all 64 masks
/// of the fixture's 6 blocks, in `dir`.
fn write_inputs(dir: &Path, seed: u64) -> (PathBuf, PathBuf) {
    let tokens = dir.join(format!("tokens{seed}.parquet"));
    let table = TokenTable::new(
        12,
        fixture_windows(seed, 3, 12),
        &layerprune_tests::tiny_tokenizer_sha256(),
        "synthetic ids",
    );
    write_tokens(&tokens, &table, &provenance()).unwrap();
    let masks = dir.join("masks.parquet");
    write_mask_table(&masks, every_mask(6), vec![]);
    (tokens, masks)
}

/// A mask table of `masks` (over the fixture's 6 blocks, or as many as they have), fixing
/// `fixed_blocks`.
fn write_mask_table(path: &Path, masks: Vec<Mask>, fixed_blocks: Vec<usize>) {
    let num_blocks = masks.first().map_or(6, Mask::num_blocks);
    let rows = masks
        .into_iter()
        .map(|mask| MaskRow {
            mask,
            design: Design::Enumeration,
            group_id: None,
            position: None,
        })
        .collect();
    let table = MaskTable {
        num_blocks,
        fixed_blocks,
        rows,
    };
    write_masks(path, &table, &provenance()).unwrap();
}

fn config(tokens: &Path, masks: &Path, out: &Path) -> EvaluationConfig {
    EvaluationConfig {
        model: tiny_model_dir(),
        tokens: tokens.to_path_buf(),
        masks: MaskSource {
            table: Some(masks.to_path_buf()),
            inline: vec![],
        },
        shard: None,
        out: out.to_path_buf(),
        runtime: RuntimeOptions::default(),
        options: EvalOptions::default(),
        checkpoint_every: NonZeroUsize::new(8).unwrap(),
        max_new_masks: None,
        overwrite: false,
        block_stats: None,
        summary: None,
        provenance: provenance(),
    }
}

/// Runs `config`, collecting what it reports.
fn run(config: &EvaluationConfig) -> (EvaluationOutcome, Vec<Progress>) {
    let mut reported = Vec::new();
    let outcome = run_evaluation(config, &mut |p| reported.push(p)).unwrap();
    (outcome, reported)
}

/// A row's values, bit for bit, but its timing.
fn values(rows: &[EvaluationRow]) -> Vec<(String, u64, u64, u64, u64)> {
    rows.iter()
        .map(|r| {
            (
                r.mask.id(),
                r.nll.to_bits(),
                r.ppl.to_bits(),
                r.utility.to_bits(),
                r.tokens_scored,
            )
        })
        .collect()
}

fn ids(rows: &[EvaluationRow]) -> Vec<String> {
    rows.iter().map(|r| r.mask.id()).collect()
}

#[test]
fn shards_split_any_mask_list_into_disjoint_parts_in_order() {
    let masks = every_mask(6);
    let shards: Vec<Shard> = (0..3).map(|i| Shard::new(i, 3).unwrap()).collect();
    let parts: Vec<Vec<Mask>> = shards.iter().map(|s| s.select(masks.clone())).collect();
    assert!(parts.iter().all(|p| !p.is_empty()), "{parts:?}");
    assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), masks.len());
    for mask in &masks {
        let owners = shards.iter().filter(|s| s.owns(mask)).count();
        assert_eq!(owners, 1, "mask {mask}");
    }
    // A shard keeps the list's order, and depends on the mask alone (not its position).
    for part in &parts {
        let positions: Vec<usize> = part
            .iter()
            .map(|m| masks.iter().position(|n| n == m).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
    }
    let mut reversed = masks.clone();
    reversed.reverse();
    let mut again = shards[1].select(reversed);
    again.reverse();
    assert_eq!(again, parts[1]);
    // One shard of one is everything.
    assert_eq!(Shard::new(0, 1).unwrap().select(masks.clone()), masks);

    assert_eq!("2/3".parse::<Shard>(), Ok(shards[2]));
    assert_eq!(shards[2].to_string(), "2/3");
    for bad in ["3/3", "0/0", "1", "a/2", "-1/2"] {
        let error = bad.parse::<Shard>().unwrap_err();
        assert!(error.contains("is not I/N with 0 <= I < N"), "{error}");
    }
    assert_eq!(Shard::new(4, 4), None);
}

#[test]
fn a_resumed_run_writes_the_rows_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, masks) = write_inputs(dir.path(), 1);
    let whole_path = dir.path().join("whole.parquet");
    let stats = dir.path().join("stats.parquet");
    let mut whole_config = config(&tokens, &masks, &whole_path);
    whole_config.block_stats = Some(BlockStatsOutput {
        path: stats.clone(),
        max_run: 2,
    });
    let (outcome, reported) = run(&whole_config);
    assert_eq!((outcome.masks, outcome.evaluated), (64, 64));
    assert_eq!(outcome.block_stats_rows, Some(6 + 5));
    assert_eq!(read_block_stats(&stats).unwrap().rows.len(), 11);
    assert_eq!(reported.first(), Some(&Progress::Started { masks: 64 }));
    assert_eq!(reported.last(), Some(&Progress::Finished));
    let whole = read_evaluations(&whole_path).unwrap();
    assert!(whole.complete);
    assert_eq!(whole, outcome.table);
    let listed: Vec<String> = every_mask(6).iter().map(Mask::id).collect();
    assert_eq!(ids(&whole.rows), listed, "rows in the mask table's order");
    let full = whole
        .rows
        .iter()
        .find(|r| r.mask.num_removed() == 0)
        .unwrap();
    assert_eq!(whole.full_model_nll, Some(full.nll));
    assert_eq!(full.utility, 1.0);

    // Stopped twice (as a kill after a checkpoint would), then finished.
    let parts_path = dir.path().join("parts.parquet");
    let mut parts = config(&tokens, &masks, &parts_path);
    for (limit, rows) in [(20, 20), (25, 45)] {
        parts.max_new_masks = Some(limit);
        let (outcome, _) = run(&parts);
        assert_eq!(outcome.evaluated, limit);
        let partial = read_evaluations(&parts_path).unwrap();
        assert!(!partial.complete);
        assert_eq!(partial.rows.len(), rows);
        let expected: Vec<String> = listed[..rows].to_vec();
        assert_eq!(ids(&partial.rows), expected);
    }
    parts.max_new_masks = None;
    let (outcome, reported) = run(&parts);
    assert_eq!(outcome.evaluated, 19);
    assert!(reported.contains(&Progress::Resumed {
        resumed: 45,
        total: 64,
        others: 0,
    }));
    let resumed = read_evaluations(&parts_path).unwrap();
    assert!(resumed.complete);
    assert_eq!(resumed.full_model_nll, whole.full_model_nll);
    assert_eq!(values(&resumed.rows), values(&whole.rows));

    // Run again with a mask table of 10 of those masks: nothing to evaluate, and the 54 rows of
    // masks it was not given are kept, and said to be (fit and estimate stages read them all).
    let few = dir.path().join("few-masks.parquet");
    write_mask_table(&few, every_mask(6).into_iter().take(10).collect(), vec![]);
    let (outcome, reported) = run(&config(&tokens, &few, &parts_path));
    assert_eq!(outcome.evaluated, 0);
    assert!(
        reported.contains(&Progress::Resumed {
            resumed: 10,
            total: 10,
            others: 54,
        }),
        "{reported:?}"
    );
    assert_eq!(read_evaluations(&parts_path).unwrap().rows.len(), 64);

    // A checkpoint holding any subset of the rows, in any order, is continued into the same
    // table: no row lost, none repeated, the mask table's order.
    let subset: Vec<EvaluationRow> = whole
        .rows
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 1)
        .map(|(_, r)| r.clone())
        .rev()
        .collect();
    let checkpoint = EvaluationTable {
        complete: false,
        evaluated_on: None,
        rows: subset,
        ..whole.clone()
    };
    let killed_path = dir.path().join("killed.parquet");
    write_evaluations(&killed_path, &checkpoint, &provenance()).unwrap();
    let (outcome, _) = run(&config(&tokens, &masks, &killed_path));
    assert_eq!(outcome.evaluated, 21);
    let continued = read_evaluations(&killed_path).unwrap();
    assert!(continued.complete);
    assert_eq!(values(&continued.rows), values(&whole.rows));

    // A finished table run again evaluates nothing and stays the same.
    let before = read_evaluations(&whole_path).unwrap();
    whole_config.block_stats = None;
    let (outcome, _) = run(&whole_config);
    assert_eq!(outcome.evaluated, 0);
    assert_eq!(read_evaluations(&whole_path).unwrap(), before);
    assert_eq!(read_provenance(&whole_path).unwrap().inputs.len(), 2);
}

#[test]
fn an_output_of_another_dataset_is_refused_unless_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, masks) = write_inputs(dir.path(), 1);
    let (other_tokens, _) = write_inputs(dir.path(), 2);
    let out = dir.path().join("out.parquet");
    let mut first = config(&tokens, &masks, &out);
    first.masks = MaskSource {
        table: None,
        inline: vec!["110111".parse().unwrap(), "110111".parse().unwrap()],
    };
    let (outcome, _) = run(&first);
    assert_eq!(outcome.masks, 1, "a mask listed twice is evaluated once");
    let before = std::fs::read(&out).unwrap();
    let mut second = config(&other_tokens, &masks, &out);
    second.masks = first.masks.clone();
    let error = run_evaluation(&second, &mut |_| {}).unwrap_err();
    assert!(format!("{error:#}").contains("--overwrite"), "{error:#}");
    assert_eq!(std::fs::read(&out).unwrap(), before);
    second.overwrite = true;
    let (outcome, _) = run(&second);
    assert_eq!(outcome.evaluated, 1);
    let other_id =
        TokenTable::new(12, fixture_windows(2, 3, 12), "test", "synthetic ids").dataset_id;
    assert_eq!(read_evaluations(&out).unwrap().dataset_id, other_id);

    // A selection's cache of the same game (apply-prune --cache; marked incomplete so that no
    // estimator takes its masks for a sample) is not resumed and marked complete.
    let table = read_evaluations(&out).unwrap();
    let selection = Provenance::new("apply-prune", "0.1.0", vec![]);
    write_evaluations(&out, &table, &selection).unwrap();
    let cached = std::fs::read(&out).unwrap();
    second.overwrite = false;
    second.masks.inline = vec!["111111".parse().unwrap()];
    let error = run_evaluation(&second, &mut |_| {}).unwrap_err();
    assert!(
        format!("{error:#}").contains("it is apply-prune's cache of LLM evaluations"),
        "{error:#}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), cached);
    second.overwrite = true;

    // A mask of the wrong length names the model.
    second.masks.inline = vec!["11111".parse().unwrap()];
    let error = run_evaluation(&second, &mut |_| {}).unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("--mask 11111") && message.contains("5 entries"),
        "{message}"
    );
}

#[test]
fn shard_tables_merge_into_the_unsharded_table_and_bad_merges_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, masks) = write_inputs(dir.path(), 1);
    let whole_path = dir.path().join("whole.parquet");
    run(&config(&tokens, &masks, &whole_path));
    let whole = read_evaluations(&whole_path).unwrap();

    let shards: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("shard{i}.parquet")))
        .collect();
    let mut sizes = Vec::new();
    for (i, path) in shards.iter().enumerate() {
        let mut shard = config(&tokens, &masks, path);
        shard.shard = Some(Shard::new(i as u64, 3).unwrap());
        let (outcome, _) = run(&shard);
        assert!(outcome.table.complete);
        sizes.push(outcome.masks);
    }
    assert_eq!(sizes.iter().sum::<usize>(), 64, "{sizes:?}");

    let merge = |inputs: &[&PathBuf], out: &Path| {
        merge_evaluations(&MergeConfig {
            masks: masks.clone(),
            shards: inputs.iter().map(|p| p.to_path_buf()).collect(),
            out: out.to_path_buf(),
            overwrite: false,
            provenance: provenance(),
        })
    };
    let merged_path = dir.path().join("merged.parquet");
    let merged = merge(&[&shards[2], &shards[0], &shards[1]], &merged_path).unwrap();
    assert_eq!(read_evaluations(&merged_path).unwrap(), merged);
    assert!(merged.complete);
    assert_eq!(merged.full_model_nll, whole.full_model_nll);
    assert_eq!(values(&merged.rows), values(&whole.rows));
    let inputs = read_provenance(&merged_path).unwrap().inputs;
    assert_eq!(inputs["shard0"], shards[2].display().to_string());
    assert_eq!(inputs["model"], whole.model_id);

    let refused_path = dir.path().join("refused.parquet");
    let refused = |inputs: &[&PathBuf], needle: &str| {
        let error = merge(inputs, &refused_path).unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.contains(needle),
            "expected {needle:?} in: {message}"
        );
        assert!(!refused_path.exists());
    };
    // A missing shard, overlapping shards (one given twice; the unsharded table with one).
    refused(&[&shards[0], &shards[2]], "is in no shard");
    refused(
        &[&shards[0], &shards[1], &shards[2], &shards[1]],
        "more than one shard",
    );
    refused(&[&whole_path, &shards[1]], "more than one shard");
    // Shards of more masks than the table given: not merged into it.
    let subset = dir.path().join("subset.parquet");
    let mut table = read_masks(&masks).unwrap();
    table.rows.truncate(7);
    write_masks(&subset, &table, &provenance()).unwrap();
    let error = merge_evaluations(&MergeConfig {
        masks: subset,
        shards: shards.clone(),
        out: refused_path.clone(),
        overwrite: false,
        provenance: provenance(),
    })
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("(shards of another mask table?)"),
        "{error:#}"
    );
    assert!(!refused_path.exists());

    // A shard of another dataset, another evaluate version, or an unfinished one.
    let (other_tokens, _) = write_inputs(dir.path(), 2);
    let other = dir.path().join("other.parquet");
    let mut other_config = config(&other_tokens, &masks, &other);
    other_config.shard = Some(Shard::new(0, 3).unwrap());
    run(&other_config);
    refused(&[&shards[1], &other, &shards[2]], "computed with model");
    let newer = dir.path().join("newer.parquet");
    let mut newer_provenance = provenance();
    newer_provenance.version = "9.9.9".into();
    let table = read_evaluations(&shards[0]).unwrap();
    write_evaluations(&newer, &table, &newer_provenance).unwrap();
    refused(
        &[&shards[1], &newer, &shards[2]],
        "written by evaluate 9.9.9",
    );
    // A shard of a game with other fixed blocks (its rows all keep block 0).
    let fixing = dir.path().join("fixing.parquet");
    let mut fixed = read_evaluations(&shards[0]).unwrap();
    fixed.rows.retain(|row| row.mask.is_kept(0));
    fixed.fixed_blocks = vec![0];
    write_evaluations(&fixing, &fixed, &provenance()).unwrap();
    refused(
        &[&shards[1], &fixing, &shards[2]],
        "its game fixes blocks [0], but",
    );
    let unfinished = dir.path().join("unfinished.parquet");
    let table = EvaluationTable {
        complete: false,
        evaluated_on: None,
        ..table
    };
    write_evaluations(&unfinished, &table, &provenance()).unwrap();
    refused(
        &[&unfinished, &shards[1], &shards[2]],
        "shard is incomplete",
    );

    // A selection's cache of the same game at --out is not replaced, but with --overwrite.
    let cache = dir.path().join("cache.parquet");
    let mut selection = provenance();
    selection.tool = "apply-prune".into();
    let before = EvaluationTable {
        complete: false,
        ..read_evaluations(&shards[0]).unwrap()
    };
    write_evaluations(&cache, &before, &selection).unwrap();
    // Given as a shard, it is named as what it is ("incomplete; run it again" said before).
    refused(
        &[&cache, &shards[1], &shards[2]],
        "is apply-prune's cache of LLM evaluations (the masks a selection measured), not a \
         shard of evaluate --shard",
    );
    let error = merge(&[&shards[0], &shards[1], &shards[2]], &cache).unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("cache.parquet") && message.contains("apply-prune's cache"),
        "{message}"
    );
    assert_eq!(read_evaluations(&cache).unwrap(), before);
    merge_evaluations(&MergeConfig {
        masks: masks.clone(),
        shards: shards.clone(),
        out: cache.clone(),
        overwrite: true,
        provenance: provenance(),
    })
    .unwrap();
}

/// The 64 masks in the table's order (block 0 alternating: neighbours share no prefix) are
/// checkpointed 8 at a time; each checkpoint's masks are the next 8 in prefix order, so they
/// share prefixes, and each checkpoint starts from the prefix the last one left: the blocks run
/// and the rows, in the table's order, are those of one call for all 64.
#[test]
fn a_checkpointed_run_takes_its_masks_in_prefix_order() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, masks) = write_inputs(dir.path(), 2);
    let table_order = every_mask(6);
    let mut prefix_order = table_order.clone();
    prefix_order.sort();
    let chunked = config(&tokens, &masks, &dir.path().join("chunked.parquet"));
    let (outcome, _) = run(&chunked);
    assert_eq!(outcome.blocks_run, blocks_needed(&prefix_order, 64));
    // Each checkpoint from the embedding would run more; in the table's order more than half
    // as many again.
    assert!(blocks_needed(&prefix_order, 8) > outcome.blocks_run);
    assert!(blocks_needed(&table_order, 8) * 2 > outcome.blocks_run * 3);
    let mut whole = config(&tokens, &masks, &dir.path().join("whole.parquet"));
    whole.checkpoint_every = NonZeroUsize::new(64).unwrap();
    let (one_call, _) = run(&whole);
    assert_eq!(one_call.blocks_run, blocks_needed(&prefix_order, 64));
    assert_eq!(values(&outcome.table.rows), values(&one_call.table.rows));
    let listed: Vec<String> = table_order.iter().map(Mask::id).collect();
    assert_eq!(
        ids(&outcome.table.rows),
        listed,
        "rows in the mask table's order"
    );
}

/// The summary says how many runs each kind of graph made while the masks were timed, and the
/// host's time inside them: one block run per block run counted and one head run per mask one
/// at a time; masks batched through shared blocks make fewer, larger block runs and join and
/// split their states.
#[test]
fn the_summary_counts_each_kind_of_graph_run() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, masks) = write_inputs(dir.path(), 3);
    let read = |path: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let mut one_at_a_time = config(&tokens, &masks, &dir.path().join("one.parquet"));
    one_at_a_time.summary = Some(dir.path().join("one.json"));
    let (outcome, _) = run(&one_at_a_time);
    let runs = outcome.graph_runs;
    assert_eq!(runs.blocks.runs, outcome.blocks_run);
    assert_eq!(runs.head.runs, 64, "one window batch: a head run per mask");
    assert_eq!(runs.stitching.runs, 0);
    assert!(runs.host_seconds() <= outcome.seconds);
    let summary = read(&dir.path().join("one.json"))["graph_runs"].clone();
    assert_eq!(summary["blocks"]["runs"], outcome.blocks_run);
    assert_eq!(summary["head"]["runs"], 64);
    assert!(summary["outside_runs_seconds"].as_f64().unwrap() >= 0.0);
    // A CPU run's blocks hold most of its time, but nothing is launched: no advice.
    assert!(!outcome.cuda_graphs_would_pay);
    assert_eq!(
        read(&dir.path().join("one.json"))["cuda_graphs_would_pay"],
        false
    );

    let mut batched = config(&tokens, &masks, &dir.path().join("batched.parquet"));
    batched.options.mask_batch = 4;
    let (outcome, _) = run(&batched);
    let runs = outcome.graph_runs;
    assert!(
        runs.blocks.runs < outcome.blocks_run,
        "{} block runs for {} blocks' work",
        runs.blocks.runs,
        outcome.blocks_run
    );
    assert!(runs.stitching.runs > 0);
}

/// An evaluation table records one set of fixed blocks (never removed; not players later) for
/// all its rows: a run whose masks fix other blocks does not extend it, and a mask given with
/// `--mask` may not remove a block its mask table fixes.
#[test]
fn rows_of_masks_that_fix_other_blocks_do_not_mix() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, all_masks) = write_inputs(dir.path(), 4);
    let fixed_masks = dir.path().join("fixed0.parquet");
    let keeping_0: Vec<Mask> = every_mask(6)
        .into_iter()
        .filter(|mask| mask.is_kept(0))
        .take(5)
        .collect();
    write_mask_table(&fixed_masks, keeping_0, vec![0]);
    let out = dir.path().join("out.parquet");
    let mut first = config(&tokens, &all_masks, &out);
    first.max_new_masks = Some(3);
    run(&first);
    let before = std::fs::read(&out).unwrap();

    let second = config(&tokens, &fixed_masks, &out);
    let error = format!(
        "{:#}",
        run_evaluation(&second, &mut |_| {})
            .map(|_| ())
            .unwrap_err()
    );
    assert!(
        error.contains("blocks [] fixed") && error.contains("fix [0]"),
        "{error}"
    );
    assert!(error.contains(&out.display().to_string()), "{error}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "the table is untouched"
    );
    let mut replaced = config(&tokens, &fixed_masks, &out);
    replaced.overwrite = true;
    let (outcome, _) = run(&replaced);
    assert_eq!(outcome.table.fixed_blocks, vec![0]);
    assert!(outcome.table.rows.iter().all(|r| r.mask.is_kept(0)));

    let mut removing = config(&tokens, &fixed_masks, &dir.path().join("other.parquet"));
    removing.masks.inline = vec!["011111".parse().unwrap()];
    let error = format!(
        "{:#}",
        run_evaluation(&removing, &mut |_| {})
            .map(|_| ())
            .unwrap_err()
    );
    assert!(
        error.contains("--mask 011111 removes block 0") && error.contains("fixed0.parquet"),
        "{error}"
    );
}

/// A resumed run values its new rows against the full model's NLL the table records, the one
/// its earlier rows' utilities were computed with: on CUDA the reference pass (the full model
/// alone) and the full mask's row (measured among other masks) may differ in the last digits,
/// so taking the row's NLL instead gave a table unlike the uninterrupted run's, its utilities
/// mixing two references.
#[test]
fn a_resumed_run_keeps_the_full_model_nll_its_table_records() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, masks) = write_inputs(dir.path(), 5);
    let whole_path = dir.path().join("whole.parquet");
    let (outcome, _) = run(&config(&tokens, &masks, &whole_path));
    let whole = outcome.table;
    let full = whole
        .rows
        .iter()
        .find(|r| r.mask.num_removed() == 0)
        .unwrap();
    // As a CUDA run's checkpoint could be: the reference a little off the full mask's row.
    let reference = full.nll + 1e-9;
    let kept: Vec<EvaluationRow> = whole
        .rows
        .iter()
        .enumerate()
        .filter(|(i, r)| i % 2 == 0 || r.mask.num_removed() == 0)
        .map(|(_, r)| EvaluationRow {
            utility: layerprune_core::GameValue::Utility.value(r.nll, reference),
            ..r.clone()
        })
        .collect();
    let killed_path = dir.path().join("killed.parquet");
    let checkpoint = EvaluationTable {
        complete: false,
        full_model_nll: Some(reference),
        rows: kept,
        ..whole.clone()
    };
    write_evaluations(&killed_path, &checkpoint, &provenance()).unwrap();
    let (outcome, _) = run(&config(&tokens, &masks, &killed_path));
    assert!(outcome.evaluated > 0);
    let resumed = read_evaluations(&killed_path).unwrap();
    assert!(resumed.complete);
    assert_eq!(resumed.full_model_nll, Some(reference));
    for row in &resumed.rows {
        assert_eq!(
            row.utility.to_bits(),
            layerprune_core::GameValue::Utility
                .value(row.nll, reference)
                .to_bits(),
            "mask {}",
            row.mask
        );
    }
}

/// Every input is read and checked before the model is opened (its files hashed, and on CUDA
/// its sessions given GPU memory: seconds to minutes on a large model): with a model whose
/// block graph fails its hash, which opening refuses, a wrong token table, mask table or
/// output to resume is what the run says, and it says it without opening the model.
#[test]
fn inputs_are_refused_before_the_model_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, masks) = write_inputs(dir.path(), 1);
    let broken = dir.path().join("broken");
    layerprune_tests::copy_dir(&tiny_model_dir(), &broken);
    let block = broken.join("block_002.onnx");
    let mut bytes = std::fs::read(&block).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&block, bytes).unwrap();
    let out = dir.path().join("out.parquet");
    let refusal = |config: &EvaluationConfig| -> String {
        let error = run_evaluation(config, &mut |_| {}).unwrap_err();
        format!("{error:#}")
    };
    let on_broken = |tokens: &Path, masks: &Path| {
        let mut config = config(tokens, masks, &out);
        config.model = broken.clone();
        config
    };

    // Sound inputs: the model is opened, and refused.
    let message = refusal(&on_broken(&tokens, &masks));
    assert!(
        message.contains("block_002.onnx") && message.contains("sha256"),
        "{message}"
    );
    assert!(!out.exists());

    // A missing token table, with no model folder at all: the table is named.
    let missing = dir.path().join("missing.parquet");
    let mut no_model = config(&missing, &masks, &out);
    no_model.model = dir.path().join("no-model");
    let message = refusal(&no_model);
    assert!(message.contains("missing.parquet"), "{message}");
    assert!(!message.contains("no-model"), "{message}");

    let empty = dir.path().join("empty.parquet");
    std::fs::write(&empty, b"").unwrap();
    let folder = dir.path().join("a-folder");
    std::fs::create_dir(&folder).unwrap();
    // A mask table for 5 blocks; the model has 6.
    let five = dir.path().join("five.parquet");
    write_mask_table(&five, every_mask(5), vec![]);
    // Windows cut by another tokenizer (as their recorded hash says).
    let mut foreign = layerprune_tables::read_tokens(&tokens).unwrap();
    foreign.tokenizer_sha256 = "0".repeat(64);
    let foreign_tokens = dir.path().join("foreign-tokens.parquet");
    write_tokens(&foreign_tokens, &foreign, &provenance()).unwrap();
    for (tokens, masks, expected) in [
        (&empty, &masks, "empty.parquet"),
        (&masks, &masks, "masks.parquet"),
        (&folder, &masks, "a-folder"),
        (&foreign_tokens, &masks, "made with another tokenizer"),
        (&tokens, &empty, "empty.parquet"),
        (&tokens, &tokens, "tokens1.parquet"),
        (&tokens, &folder, "a-folder"),
        (&tokens, &five, "masks are for a model of 5 blocks"),
    ] {
        let message = refusal(&on_broken(tokens, masks));
        assert!(message.contains(expected), "{expected}: {message}");
        assert!(!message.contains("block_002.onnx"), "{message}");
        assert!(!out.exists());
    }

    // An output of another model, which the run would not resume, is refused before the model
    // is opened too, and kept.
    let other = layerprune_tests::evaluation_table(6, &[("111111", 3.0)]);
    write_evaluations(&out, &other, &provenance()).unwrap();
    let before = std::fs::read(&out).unwrap();
    let message = refusal(&on_broken(&tokens, &masks));
    assert!(
        message.contains("out.parquet") && message.contains("--overwrite"),
        "{message}"
    );
    assert!(!message.contains("block_002.onnx"), "{message}");
    assert_eq!(std::fs::read(&out).unwrap(), before);
}
