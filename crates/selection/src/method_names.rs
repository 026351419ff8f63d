//! Every name a plan's `method` can hold, in one place: what plans.parquet (`apply-prune`),
//! frontier.csv (`frontier`) and the reports built on them record, and what `--plan-method`
//! and the Make variables name. A stage that writes a name and one that reads it back use the
//! same constant, so they cannot drift apart. (The `--method` choices of `apply-prune` are
//! [`crate::PlanMethod`]; some of its names coincide with these, some do not: `search`
//! records [`SURROGATE_SEARCH`].)

use crate::race::Race;

/// No block removed: the full model's row of frontier.csv, the reference of every plan.
pub const FULL_MODEL: &str = "full";
/// ShortGPT's block influence, from one pass of the full model.
pub const BLOCK_INFLUENCE: &str = "block-influence";
/// The angular distance between a block's input and output, from the same pass.
pub const ANGULAR: &str = "angular";
/// The run of k consecutive blocks with the smallest angular distance (Gromov et al.).
pub const ANGULAR_RUN: &str = "angular-run";
/// Shortened-LLaMA's perplexity criterion: each block's removal alone, the k worst kept.
pub const LEAVE_ONE_OUT: &str = "leave-one-out";
/// The last k blocks.
pub const REVERSE: &str = "reverse";
/// A seeded random removal.
pub const RANDOM: &str = "random";
/// SLEB: greedy removal measured on the model.
pub const SLEB: &str = "sleb";
/// SLEB raced over the calibration windows ([`crate::race`]).
pub const SLEB_RACED: &str = "sleb-raced";
/// Adaptive removal ([`crate::adaptive_removal`]).
pub const ADAPTIVE: &str = "adaptive";
/// Adaptive removal with the masks it measures together raced over the calibration windows.
pub const ADAPTIVE_RACED: &str = "adaptive-raced";
/// The method this project recommends (what `make demo` writes as the pruned model and
/// `make prune K=` uses; pipelines/settings.mk's RECOMMENDED_METHOD): raced adaptive removal,
/// at least as good as unraced on the calibration tokens at every budget measured
/// (docs/results.md, "Racing adaptive removal").
pub const RECOMMENDED: &str = ADAPTIVE_RACED;
/// The frontier's Shapley method: a quadratic surrogate fitted on sampled masks, its exact
/// Shapley values of the players' game, the k lowest removed.
pub const SHAPLEY: &str = "shapley";
/// The best measured plan with k removed among every mask any method asked for.
pub const BEST_KNOWN: &str = "best-known";
/// `apply-prune --method iterative`: the lowest surrogate-Shapley block removed, the rest
/// re-estimated, repeated.
pub const ITERATIVE_SURROGATE: &str = "iterative-surrogate";
/// `apply-prune --method search`: the best mask with k removed by the surrogate's prediction.
pub const SURROGATE_SEARCH: &str = "surrogate-search";

/// A one-shot plan from a score table's estimator (`one-shot:permutation-shapley`): the
/// estimator is named, since it, not the one-shot rule, is what differs between such plans.
pub fn one_shot(estimator: &str) -> String {
    format!("one-shot:{estimator}")
}

/// SLEB's name, raced or not.
pub fn sleb(race: Option<&Race>) -> &'static str {
    if race.is_some() {
        SLEB_RACED
    } else {
        SLEB
    }
}

/// Adaptive removal's name, raced or not.
pub fn adaptive(race: Option<&Race>) -> &'static str {
    if race.is_some() {
        ADAPTIVE_RACED
    } else {
        ADAPTIVE
    }
}
