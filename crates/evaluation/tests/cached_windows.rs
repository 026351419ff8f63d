//! The LLM's evaluation cache valued window by window (`CachedLlm::values_on_windows`, what
//! racing asks for), on the committed tiny model: each window's value is the one the whole
//! measurement gives, a window is never run twice, a mask whose every window was measured
//! becomes an ordinary row (in the file too), a later whole value of a mask started on some
//! windows runs only the others, and windows measured in part are kept with the cache file, so
//! a later run (a replayed race, a run killed part-way) does not run them again.

use layerprune_core::{Game, Mask};
use layerprune_evaluation::CachedLlm;
use layerprune_runtime::{EvalOptions, LayeredModel, RuntimeOptions};
use layerprune_tables::{read_evaluations, Provenance, TokenTable};
use layerprune_tests::{every_mask, fixture_windows, tiny_model_dir};

fn open(tokens: &TokenTable, cache: Option<&std::path::Path>) -> CachedLlm {
    let model = LayeredModel::open(&tiny_model_dir(), &RuntimeOptions::default()).unwrap();
    // One window a batch, so that blocks run count the windows run.
    let options = EvalOptions {
        batch_windows: 1,
        reuse_prefixes: false,
        ..EvalOptions::default()
    };
    let provenance = Provenance::new("test", "0.1.0", vec!["test".into()]);
    CachedLlm::open(model, tokens, options, cache, provenance).unwrap()
}

#[test]
fn windows_measured_in_parts_are_the_whole_measurement() {
    let tokens = TokenTable::new(16, fixture_windows(5, 4, 16), "test", "synthetic ids");
    let masks: Vec<Mask> = every_mask(6).into_iter().skip(40).take(5).collect();
    // The reference: every window at once, in another game.
    let mut whole = open(&tokens, None);
    let values = whole.values(&masks).unwrap();
    let windows: Vec<Vec<f64>> = masks
        .iter()
        .map(|m| whole.window_values(m).unwrap())
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.parquet");
    let mut game = open(&tokens, Some(&cache));
    assert_eq!(game.num_windows(), Some(4));
    let blocks_before = game.evaluator().blocks_run();
    let first = game.values_on_windows(&masks, 0..2).unwrap();
    // 5 masks × 2 windows × (their kept blocks) blocks: each window run once.
    let kept: u64 = masks.iter().map(|m| m.num_kept() as u64).sum();
    assert_eq!(game.evaluator().blocks_run() - blocks_before, 2 * kept);
    for (got, expected) in first.iter().zip(&windows) {
        for (a, b) in got.iter().zip(&expected[0..2]) {
            assert!((a - b).abs() < 1e-5, "{got:?} vs {expected:?}");
        }
    }
    // Asked again with one more window: only window 2 runs; no row yet.
    let blocks_before = game.evaluator().blocks_run();
    let second = game.values_on_windows(&masks[..2], 0..3).unwrap();
    assert_eq!(second[0].len(), 3);
    assert_eq!(second[0][..2], first[0][..]);
    let kept2: u64 = masks[..2].iter().map(|m| m.num_kept() as u64).sum();
    assert_eq!(game.evaluator().blocks_run() - blocks_before, kept2);
    assert_eq!(game.cached_masks(), 1, "only the full model has a row");
    assert_eq!(game.partly_measured(), 5);
    assert_eq!(game.window_values(&masks[0]), None);
    // The last window makes the first mask a row, from its windows alone.
    let blocks_before = game.evaluator().blocks_run();
    game.values_on_windows(&masks[..1], 3..4).unwrap();
    assert_eq!(
        game.evaluator().blocks_run() - blocks_before,
        masks[0].num_kept() as u64
    );
    assert_eq!(game.cached_masks(), 2);
    let row_windows = game.window_values(&masks[0]).unwrap();
    for (a, b) in row_windows.iter().zip(&windows[0]) {
        assert!((a - b).abs() < 1e-5);
    }
    // Whole values: the first mask from its row, the next two run windows 2–3 or 3 only,
    // the others all four; every value the whole measurement's.
    let blocks_before = game.evaluator().blocks_run();
    let got = game.values(&masks).unwrap();
    let expected_blocks: u64 = masks[1].num_kept() as u64
        + 2 * masks[2..].iter().map(|m| m.num_kept() as u64).sum::<u64>();
    assert_eq!(
        game.evaluator().blocks_run() - blocks_before,
        expected_blocks
    );
    for (a, b) in got.iter().zip(&values) {
        assert!((a - b).abs() < 1e-6, "{got:?} vs {values:?}");
    }
    assert_eq!(game.cached_masks(), 6);
    assert_eq!(game.partly_measured(), 0);
    drop(game);
    // The file has every row, with its windows.
    let table = read_evaluations(&cache).unwrap();
    assert_eq!(table.rows.len(), 6);
    for mask in &masks {
        let row = table.rows.iter().find(|r| &r.mask == mask).unwrap();
        assert_eq!(row.window_nlls.as_ref().unwrap().len(), 4);
    }
    // Out of range: refused, saying why.
    let mut game = open(&tokens, Some(&cache));
    let err = game.values_on_windows(&masks, 2..5).unwrap_err();
    assert!(err.to_string().contains("of 4 windows"), "{err}");
    // From the file: nothing runs.
    let blocks_before = game.evaluator().blocks_run();
    game.values_on_windows(&masks, 1..3).unwrap();
    assert_eq!(game.evaluator().blocks_run(), blocks_before);
}

#[test]
fn windows_measured_in_part_are_kept_with_the_cache() {
    let tokens = TokenTable::new(16, fixture_windows(5, 4, 16), "test", "synthetic ids");
    let masks: Vec<Mask> = every_mask(6).into_iter().skip(40).take(3).collect();
    let dir = tempfile::tempdir().unwrap();
    // The reference: the same questions asked of one game, in one process.
    let ask = |game: &mut CachedLlm| {
        game.values_on_windows(&masks, 0..2).unwrap();
        game.values_on_windows(&masks[..1], 0..3).unwrap();
    };
    let mut once = open(&tokens, Some(&dir.path().join("once.parquet")));
    ask(&mut once);
    let whole_once = once.values(&masks).unwrap();

    let cache = dir.path().join("cache.parquet");
    let mut game = open(&tokens, Some(&cache));
    ask(&mut game);
    drop(game);
    let table = read_evaluations(&cache).unwrap();
    assert_eq!(table.rows.len(), 1, "only the full model has a row");
    // Each mask with the windows it was measured on: masks[0] on 3, the others on 2.
    assert_eq!(table.partial_windows.len(), 3);
    for (mask, windows) in masks.iter().zip([3, 2, 2]) {
        let entry = table
            .partial_windows
            .iter()
            .find(|p| &p.mask == mask)
            .unwrap();
        let measured: Vec<bool> = entry.window_nll_sums.iter().map(Option::is_some).collect();
        assert_eq!(measured, (0..4).map(|w| w < windows).collect::<Vec<_>>());
    }

    // Reopened: the same questions run nothing, and the file is not rewritten.
    let before = std::fs::read(&cache).unwrap();
    let mut game = open(&tokens, Some(&cache));
    assert_eq!(game.partly_measured(), 3);
    let blocks_before = game.evaluator().blocks_run();
    ask(&mut game);
    assert_eq!(game.evaluator().blocks_run(), blocks_before);
    assert_eq!(std::fs::read(&cache).unwrap(), before);
    // Whole values run only the windows each mask lacks, and are bit for bit those of the
    // game that asked everything in one process.
    let whole = game.values(&masks).unwrap();
    let expected_blocks: u64 = masks[0].num_kept() as u64
        + 2 * masks[1..].iter().map(|m| m.num_kept() as u64).sum::<u64>();
    assert_eq!(
        game.evaluator().blocks_run() - blocks_before,
        expected_blocks
    );
    assert_eq!(
        whole.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        whole_once.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    drop(game);
    let table = read_evaluations(&cache).unwrap();
    assert_eq!(table.rows.len(), 4);
    assert!(table.partial_windows.is_empty());
}

/// A long batch is measured a chunk at a time and saved between chunks: a batch that stops
/// part-way (a kill; here a mask the model cannot run, last in prefix order) leaves the masks
/// of the chunks before it in the file, which a rerun reads instead of running them again.
#[test]
fn a_long_batch_stopped_part_way_keeps_its_finished_chunks() {
    let tokens = TokenTable::new(16, fixture_windows(5, 2, 16), "test", "synthetic ids");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.parquet");
    let masks: Vec<Mask> = every_mask(6).into_iter().skip(10).take(9).collect();
    let mut asked = masks.clone();
    // Seven blocks on a six-block model: refused by the evaluator, after the other chunks.
    asked.push(Mask::from_kept(vec![true; 7]));
    let mut game = open(&tokens, Some(&cache)).with_checkpoints(4, std::time::Duration::ZERO, 0);
    assert!(game.values(&asked).is_err());
    drop(game);
    let saved = read_evaluations(&cache).unwrap();
    // In prefix order the bad mask is last: chunks of 4, 4 and 2 (the ninth mask and it); the
    // full model and the first two chunks' masks were saved.
    assert_eq!(saved.rows.len(), 1 + 8, "{:?}", saved.rows.len());
    let mut game = open(&tokens, Some(&cache));
    let ran_before = game.ran;
    game.values(&masks).unwrap();
    assert_eq!(
        game.ran - ran_before,
        1,
        "only the mask of the failed chunk runs again"
    );
}

/// A save skipped because the table is slow to write (here: every save after the first) is
/// made when the game's model is taken back, or when the game is dropped, so no measured mask
/// is lost at the end of a stage.
#[test]
fn masks_a_skipped_save_left_are_written_at_the_end() {
    let tokens = TokenTable::new(16, fixture_windows(5, 2, 16), "test", "synthetic ids");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.parquet");
    let masks = every_mask(6);
    let never_again = std::time::Duration::ZERO;
    let mut game = open(&tokens, Some(&cache)).with_checkpoints(4, never_again, u32::MAX);
    game.values(&masks[10..12]).unwrap();
    assert_eq!(
        read_evaluations(&cache).unwrap().rows.len(),
        1 + 2,
        "the first save"
    );
    game.values(&masks[12..15]).unwrap();
    game.values(&masks[15..16]).unwrap();
    assert_eq!(
        read_evaluations(&cache).unwrap().rows.len(),
        3,
        "saves skipped"
    );
    drop(game);
    assert_eq!(
        read_evaluations(&cache).unwrap().rows.len(),
        3 + 4,
        "saved when dropped"
    );

    let mut game = open(&tokens, Some(&cache)).with_checkpoints(4, never_again, u32::MAX);
    game.values(&masks[20..21]).unwrap();
    game.values(&masks[21..23]).unwrap();
    assert_eq!(read_evaluations(&cache).unwrap().rows.len(), 8);
    let _model = game.into_model().unwrap();
    assert_eq!(
        read_evaluations(&cache).unwrap().rows.len(),
        10,
        "saved with the model back"
    );
}

/// A race's rounds through the cache with small window batches filled (the default on CUDA;
/// asked for here on the CPU): the same window values as one mask at a time, round after round,
/// with masks joined in the rounds' block calls.
#[test]
fn a_races_rounds_filled_with_masks_give_the_same_window_values() {
    let tokens = TokenTable::new(16, fixture_windows(7, 10, 16), "test", "synthetic ids");
    let masks: Vec<Mask> = every_mask(6).into_iter().skip(20).take(12).collect();
    let game = |fill: bool| {
        let model = LayeredModel::open(&tiny_model_dir(), &RuntimeOptions::default()).unwrap();
        let options = EvalOptions {
            fill_small_batches: Some(fill),
            ..EvalOptions::default()
        };
        let provenance = Provenance::new("test", "0.1.0", vec!["test".into()]);
        CachedLlm::open(model, &tokens, options, None, provenance).unwrap()
    };
    let (mut alone, mut filled) = (game(false), game(true));
    let stitched_before = filled.evaluator().model().run_tally().stitching.runs;
    // The rounds of `Race::default()` over 10 windows: 3, then 6, then all 10.
    for seen in [3, 6, 10] {
        let a = alone.values_on_windows(&masks, 0..seen).unwrap();
        let f = filled.values_on_windows(&masks, 0..seen).unwrap();
        for (mask, (a, f)) in masks.iter().zip(a.iter().zip(&f)) {
            for (x, y) in a.iter().zip(f) {
                assert!(
                    (x - y).abs() < 1e-6,
                    "{mask} on 0..{seen}: {x} alone, {y} filled"
                );
            }
        }
    }
    assert!(filled.evaluator().model().run_tally().stitching.runs > stitched_before);
    assert_eq!(alone.evaluator().model().run_tally().stitching.runs, 0);
}

/// An `evaluate` table of masks that fix a block, given as the cache of a method that removes
/// that block: the table records only the blocks every row keeps as fixed, so it can still be
/// read (it was written contradicting itself, and its next resume refused the whole cache).
#[test]
fn a_cache_that_fixed_a_block_a_method_removes_stays_readable() {
    let tokens = TokenTable::new(16, fixture_windows(5, 2, 16), "test", "synthetic ids");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.parquet");
    let keeps_5: Vec<Mask> = every_mask(6)
        .into_iter()
        .filter(|mask| mask.is_kept(5) && mask.is_kept(4))
        .take(4)
        .collect();
    let mut game = open(&tokens, Some(&cache));
    game.values(&keeps_5).unwrap();
    drop(game);
    // As `evaluate` leaves a finished table of a mask table that fixes blocks 4 and 5.
    let mut finished = read_evaluations(&cache).unwrap();
    finished.fixed_blocks = vec![4, 5];
    finished.complete = true;
    layerprune_tables::write_evaluations(
        &cache,
        &finished,
        &Provenance::new("evaluate", "0.1.0", vec![]),
    )
    .unwrap();

    let removes_5 = Mask::from_removed(6, &[0, 5]).unwrap();
    let mut game = open(&tokens, Some(&cache));
    game.values(std::slice::from_ref(&removes_5)).unwrap();
    drop(game);
    let table = read_evaluations(&cache).expect("the cache stays readable");
    assert_eq!(
        table.fixed_blocks,
        vec![4],
        "block 5 is removed by a row now"
    );
    assert_eq!(table.rows.len(), 1 + keeps_5.len() + 1);
    let mut game = open(&tokens, Some(&cache));
    game.values(&[removes_5]).unwrap();
    assert_eq!(game.ran, 0, "resumed, nothing run again");
}

/// A race's call that fails part-way (here: a mask the model cannot run; on a GPU, memory
/// running out) keeps the windows measured before it: those of the call's earlier groups, and
/// those a skipped save left, which the game saves when it is dropped. (The mask that never
/// ran, entered with no window measured, made that save fail, and everything unsaved was lost.)
#[test]
fn windows_measured_before_a_failed_call_are_kept() {
    let tokens = TokenTable::new(16, fixture_windows(5, 2, 16), "test", "synthetic ids");
    let bad = Mask::from_kept(vec![true; 7]);
    let masks = every_mask(6);
    let (first, second) = (&masks[40], &masks[41]);
    let dir = tempfile::tempdir().unwrap();

    // Saves skipped: what the failed call leaves is written when the game is dropped.
    let cache = dir.path().join("skipped.parquet");
    let never_again = std::time::Duration::ZERO;
    let mut game = open(&tokens, Some(&cache)).with_checkpoints(4, never_again, u32::MAX);
    // The first save is made, the next skipped.
    game.values_on_windows(std::slice::from_ref(second), 0..1)
        .unwrap();
    game.values_on_windows(std::slice::from_ref(first), 0..1)
        .unwrap();
    assert_eq!(read_evaluations(&cache).unwrap().partial_windows.len(), 1);
    assert!(game
        .values_on_windows(std::slice::from_ref(&bad), 0..1)
        .is_err());
    drop(game);
    let table = read_evaluations(&cache).expect("saved when dropped");
    let partly: Vec<&Mask> = table.partial_windows.iter().map(|p| &p.mask).collect();
    assert_eq!(partly.len(), 2, "{partly:?}");
    assert!(partly.contains(&first), "{partly:?}");

    // Every save due: the group measured before the failing one in the same call is saved, and
    // the mask it completed is a row.
    let cache = dir.path().join("due.parquet");
    let mut game = open(&tokens, Some(&cache)).with_checkpoints(4, never_again, 0);
    game.values_on_windows(std::slice::from_ref(second), 1..2)
        .unwrap();
    // Groups by the windows each lacks: `second` lacks 0..1, run before `bad`'s 0..2.
    assert!(game
        .values_on_windows(&[second.clone(), bad], 0..2)
        .is_err());
    drop(game);
    let table = read_evaluations(&cache).unwrap();
    assert!(
        table.rows.iter().any(|row| &row.mask == second),
        "{:?}",
        table
            .rows
            .iter()
            .map(|row| row.mask.to_string())
            .collect::<Vec<_>>()
    );
    assert!(table.partial_windows.is_empty());
    let mut game = open(&tokens, Some(&cache));
    game.values(std::slice::from_ref(second)).unwrap();
    assert_eq!(game.ran, 0, "nothing run again");
}

/// A cache measured with other settings, opened to be started again
/// (`MeasuredOtherwise::Replace`), is replaced only once something was measured: a run that
/// stops before (a device that fails on its first block) leaves the file as it was. A finished
/// `evaluate` table given as the cache is never started again.
#[test]
fn a_cache_measured_otherwise_is_replaced_only_by_a_measurement() {
    use layerprune_evaluation::{EvaluationCache, MeasuredOtherwise};
    use layerprune_runtime::GraphOptimization;
    let tokens = TokenTable::new(16, fixture_windows(2, 4, 16), "test", "synthetic ids");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.parquet");
    let mut game = open(&tokens, Some(&cache));
    game.values(&[Mask::full(6)]).unwrap();
    game.flush().unwrap();
    drop(game);
    let measured = std::fs::read(&cache).unwrap();

    let model = LayeredModel::open(
        &tiny_model_dir(),
        &RuntimeOptions {
            graph_optimization: GraphOptimization::Basic,
            ..RuntimeOptions::default()
        },
    )
    .unwrap();
    let options = EvalOptions::default();
    let opened = EvaluationCache::open(
        &cache,
        &model,
        &tokens,
        &options,
        MeasuredOtherwise::Replace,
    )
    .unwrap();
    drop(opened);
    assert_eq!(
        std::fs::read(&cache).unwrap(),
        measured,
        "replaced before a measurement"
    );
    assert!(
        EvaluationCache::open(&cache, &model, &tokens, &options, MeasuredOtherwise::Refuse)
            .is_err()
    );

    // Marked complete, as `evaluate` writes a finished table: refused even with Replace.
    let mut table = read_evaluations(&cache).unwrap();
    table.complete = true;
    let provenance = Provenance::new("test", "0.1.0", vec!["test".into()]);
    layerprune_tables::write_evaluations(&cache, &table, &provenance).unwrap();
    let error = EvaluationCache::open(
        &cache,
        &model,
        &tokens,
        &options,
        MeasuredOtherwise::Replace,
    )
    .err()
    .expect("a finished table started again");
    assert!(error.to_string().contains("measured on cpu"), "{error}");
}
