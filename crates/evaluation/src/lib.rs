//! The evaluation run of the `evaluate` stage, as library calls a binary (or a test) makes
//! with a validated config: which masks a run evaluates ([`MaskSource`], a [`Shard`] of
//! them), the resumable evaluation table (checkpointed every few masks, less often once the
//! table is large enough that rewriting it would cost more than a tenth of the run: `pace`;
//! a run started again on its partial output continues it without losing or repeating a row,
//! and writes the rows in the order an uninterrupted run does), the merge of shard tables into
//! one (refusing missing, duplicated or foreign shards), the full model's block statistics,
//! and the same for zero-shot multiple-choice tasks, whose per-choice log-likelihoods are the
//! checkpoint ([`run_tasks`]). Models run through `layerprune-runtime`'s `Evaluator` and
//! `ChoiceScorer`, tables are read and written with `layerprune-tables`, task scores come
//! from `layerprune-tasks`. Nothing here prints to stdout: progress is reported through a
//! callback ([`Progress`]) and each call returns what it did; warnings (a cache in use, rows kept
//! from another design) go to the `tracing` log. Error messages name the `evaluate`
//! flags a setting comes from.
//!
//! [`CachedLlm`] is the LLM as a game whose answers are kept in an evaluation table (a file
//! when asked: `apply-prune --cache`), and [`frontier`] the `frontier` stage's run: every
//! selection method on the LLM through such a cache per token table, its plans measured on
//! held-out text; [`prune`] the `apply-prune` stage's run: the plans chosen (and measured
//! through such a cache), the plan table and the pruned model folder written as one.

mod cached;
pub mod frontier;
mod masks;
mod pace;
mod perplexity;
pub mod prune;
mod shard;
mod tasks;

pub use cached::{CachedLlm, EvaluationCache, MeasuredOtherwise};
pub use layerprune_data::Bos;
pub use masks::{load_masks, ordered_rows, MaskList, MaskSource, ReadMasks};
pub use perplexity::{
    block_stats_table, merge_evaluations, run_evaluation, BlockStatsOutput, EvaluationConfig,
    EvaluationOutcome, MemoryTaken, MergeConfig, SUMMARY_KEYS,
};
pub use shard::Shard;
pub use tasks::{run_tasks, TaskConfig, TaskOutcome};

/// How evaluate, apply-prune and frontier name a token table they run on a model where what is
/// wrong is the two together (a window longer than the model takes, an id outside its
/// vocabulary, another tokenizer): "TOKENS with MODEL", one line above the cause. `tokens` is
/// the table as given (`--tokens t.parquet`, `--calibration c0=t.parquet`, or evaluate's path).
/// One function, so that the three stages say it alike: apply-prune and frontier said the
/// table's source description as a cause of its own until 2026-12-07.
pub fn tokens_with_model(tokens: impl std::fmt::Display, model: &std::path::Path) -> String {
    format!("{tokens} with {}", model.display())
}

/// Gives each measured plan its runner-up and margin, and the full model beside it
/// ([`layerprune_selection::margin`]), among the masks asked of `game` since it was opened
/// (whether measured now or read from its cache; the full model is asked first): no evaluation
/// is added.
pub fn attach_comparisons(game: &CachedLlm, plans: &mut [layerprune_selection::Plan]) {
    let measured: Vec<layerprune_selection::WindowNlls> = game
        .asked_window_nlls()
        .into_iter()
        .map(|(mask, windows)| (mask.removed_blocks(), windows))
        .collect();
    layerprune_selection::attach_comparisons(plans, &measured);
}

/// What a run reports while it works, for a progress bar or log lines.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    /// A run found `resumed` of its `total` masks already in its output, and `others` rows of
    /// masks it was not given (an earlier run's design), which it keeps.
    Resumed {
        resumed: usize,
        total: usize,
        others: usize,
    },
    /// A task run found `finished` masks already scored in its choice log, and `partly` more
    /// with some of their tasks.
    TasksResumed { finished: usize, partly: usize },
    /// What a task run scores per mask, before it scores `masks` masks.
    TaskWork {
        questions: usize,
        choices: usize,
        batches: usize,
        padded_tokens: u64,
        scoring: &'static str,
        masks: usize,
    },
    /// Evaluating `masks` new masks begins.
    Started { masks: usize },
    /// `done` of them are evaluated.
    Evaluated { done: usize },
    /// Evaluating the new masks has ended.
    Finished,
}
