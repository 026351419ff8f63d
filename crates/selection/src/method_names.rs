//! Every name a plan's `method` can hold, in one place: what plans.parquet (`apply-prune`),
//! frontier.csv (`frontier`) and the reports built on them record, and what `--plan-method`,
//! the Make variables (METHODS, FRONTIER_METHODS) and Snakemake's `methods` name. One name per
//! method everywhere: a stage that writes a name and one that reads it back use the same
//! constant, so they cannot drift apart. A one-shot plan is named by its estimator alone (the
//! name its score table records), since the estimator, not the one-shot rule, is what differs
//! between such plans; `apply-prune --method iterative` and `--method search` record those
//! names.
//!
//! Tables written before the names were made one (`one-shot:block-influence`,
//! `iterative-surrogate`, `surrogate-search`; frontier.csv's `shapley`) are still read: every
//! reader matches names through [`current_name`].

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
/// A quadratic surrogate fitted on sampled masks, its exact Shapley values of the players'
/// game, the k lowest removed: the one-shot plan of the `shapley` stage's estimator of that
/// name, and the frontier's Shapley method.
pub const SURROGATE_SHAPLEY: &str = layerprune_shapley::surrogate::SURROGATE_SHAPLEY;
/// The published estimate: the stratified semivalue through the MLP surrogate over the sampled
/// strata (the `shapley` stage's estimator of that name), the k lowest removed.
pub const STRATIFIED_SEMIVALUE: &str = layerprune_shapley::semivalue::STRATIFIED_SEMIVALUE;
/// The best measured plan with k removed among every mask any method asked for.
pub const BEST_KNOWN: &str = "best-known";
/// `apply-prune --method iterative`: the lowest surrogate-Shapley block removed, the rest
/// re-estimated, repeated.
pub const ITERATIVE: &str = "iterative";
/// `apply-prune --method search`: the best mask with k removed by the surrogate's prediction.
pub const SEARCH: &str = "search";

/// The names of methods renamed when the names were made one, with what they are named now:
/// recorded ones (plan tables, frontier.csv) and the Make and Snakemake names that were not
/// the recorded ones.
const RENAMED: [(&str, &str); 4] = [
    ("iterative-surrogate", ITERATIVE),
    ("surrogate-search", SEARCH),
    ("shapley", SURROGATE_SHAPLEY),
    ("published", STRATIFIED_SEMIVALUE),
];
/// A one-shot plan's old name: this prefix, then the estimator.
const ONE_SHOT_PREFIX: &str = "one-shot:";

/// What a method recorded under `name` is named now: `name` itself, or the current name of an
/// old one (`one-shot:block-influence` → `block-influence`, `surrogate-search` → `search`,
/// frontier.csv's `shapley` → `surrogate-shapley`). Readers of recorded tables compare names
/// through this, so a table written before still reads as the same method.
pub fn current_name(name: &str) -> &str {
    if let Some(estimator) = name.strip_prefix(ONE_SHOT_PREFIX) {
        return estimator;
    }
    RENAMED
        .iter()
        .find(|(old, _)| *old == name)
        .map_or(name, |(_, new)| new)
}

/// A refusal for a method asked for by an old name (a flag, not a table: one name is asked
/// for, as every stage writes it), naming what it is called now; `None` for any other name.
pub fn renamed(name: &str) -> Option<String> {
    let now = current_name(name);
    (now != name).then(|| format!("{name} is now named {now}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_name_reads_as_the_name_it_has_now_and_is_refused_where_asked_for() {
        for (old, now) in [
            ("one-shot:block-influence", BLOCK_INFLUENCE),
            ("one-shot:stratified-semivalue", STRATIFIED_SEMIVALUE),
            ("iterative-surrogate", ITERATIVE),
            ("surrogate-search", SEARCH),
            ("shapley", SURROGATE_SHAPLEY),
            ("published", STRATIFIED_SEMIVALUE),
        ] {
            assert_eq!(current_name(old), now);
            assert_eq!(renamed(old), Some(format!("{old} is now named {now}")));
        }
        for name in [
            SLEB,
            ADAPTIVE_RACED,
            SEARCH,
            SURROGATE_SHAPLEY,
            "kernel-shap",
        ] {
            assert_eq!(current_name(name), name);
            assert_eq!(renamed(name), None);
        }
    }
}
