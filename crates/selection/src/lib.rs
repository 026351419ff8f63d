//! Which blocks to delete: the baseline scorers the method is compared with, and the rules
//! that turn scores, a surrogate or the LLM itself into a set of k removed blocks.
//!
//! Convention everywhere: a [`BlockScores`] has one score per block and a higher score means a
//! more important block (kept); removal takes the lowest. Every scorer and every selection
//! rule records its cost in LLM evaluations (distinct masks run on the real model), the
//! currency in which methods are compared.
//!
//! - [`baselines`]: ShortGPT block influence, angular distance (per block and the best
//!   contiguous run), leave-one-out perplexity (Shortened-LLaMA), reverse order, random.
//! - [`select`]: one-shot removal of the k lowest scores; iterative removal through a
//!   surrogate (re-estimating the Shapley values of the remaining blocks after each removal);
//!   surrogate-guided search over masks with exactly k removed.
//! - [`sleb`](mod@sleb): SLEB's greedy removal against any [`layerprune_core::Game`] (the LLM);
//!   [`race`]: each of its steps' candidates raced over the calibration windows, the clearly
//!   worse dropped after a few.
//! - [`adaptive`]: budget-aware adaptive removal against any `Game`: SLEB's rule with the
//!   candidates screened by a surrogate refitted on every measurement, then swap refinement
//!   with the budget left (below the greedy's budget, swaps around the leave-one-out plan
//!   directly); the plan is the best measured.
//! - [`target`]: the largest k whose plan (by adaptive removal or SLEB) keeps the calibration
//!   perplexity within a ratio of the full model's, for users who know the quality they can
//!   give away rather than k.
//!
//! - [`plans`]: the composition `apply-prune` runs: one plan per k by any method, measured
//!   through the LLM as a `Game`.
//! - [`margin`]: each measured plan's runner-up (the best other set of k its method measured)
//!   and the margin's standard error over the calibration windows: how defensible the choice is.
//! - [`frontier`]: every method against one game, each charged for the masks it asked for:
//!   the quality-vs-budget frontier.
//!
//! - [`inputs`]: the files `apply-prune` plans from, read and checked to describe one model,
//!   and the run: choose the plans, measure them.
//! - [`score_blocks`]: the files `score-blocks` scores from, read and checked to describe one
//!   model, and every baseline estimator asked for as one score table.
//! - [`method_names`]: every name a plan's `method` can hold.
//!
//! Everything else here is a pure function over the core `Game` / surrogate `Surrogate` traits
//! and the table row types; only [`inputs`] and [`score_blocks`] read files, and nothing
//! writes them.

pub mod adaptive;
pub mod baselines;
pub mod frontier;
pub mod inputs;
pub mod margin;
pub mod method_names;
pub mod plans;
pub mod race;
pub mod score_blocks;
pub mod select;
pub mod sleb;
pub mod target;

pub use adaptive::{
    adaptive_greedy_budget, adaptive_min_budget, adaptive_removal, sleb_cost, AdaptiveOptions,
    AdaptiveResult, AdaptiveStart, AdaptiveStop,
};
pub use baselines::{
    angular_distance_scores, best_angular_run, block_influence_scores, estimator_names,
    leave_one_out_scores, random_scores, reverse_order_scores, scores_from_table, AngularRun,
    BlockScores,
};
pub use margin::{attach_comparisons, full_model, runner_up, WindowNlls};
pub use plans::{
    choose_plans, measure_plans, AskedSettings, FittedOn, Plan, PlanInputs, PlanMethod,
    PlanOptions, PlanSettings,
};
pub use race::{race_masks, race_values, Race, Raced};
pub use select::{
    iterative_removal, one_shot, surrogate_search, Candidate, IterativeRemoval, SearchOptions,
    SurrogateShapley,
};
pub use sleb::{sleb, SlebResult};
pub use target::{
    adaptive_chooser, largest_within, sleb_chooser, PlanFor, PlanOf, RatioTarget, TargetProbe,
    TargetSearch,
};

use layerprune_core::GameError;

/// Why blocks could not be scored or selected. Messages name the offending block, method or
/// count so a stage can print them as they are.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    #[error("cannot remove {k} blocks: {players} of the {num_blocks} blocks are removable ({fixed} fixed) and one must stay, so at most {most} may be removed{why}", most = .players.saturating_sub(1), why = if *.fixed > 0 { " (with every removable block gone there would be nothing left to choose)" } else { "" })]
    TooManyRemoved {
        k: usize,
        players: usize,
        num_blocks: usize,
        fixed: usize,
    },
    #[error("fixed block {block} is out of range for a model of {num_blocks} blocks")]
    FixedOutOfRange { block: usize, num_blocks: usize },
    #[error("{method}: {count} scores for a model of {num_blocks} blocks")]
    WrongScoreCount {
        method: String,
        count: usize,
        num_blocks: usize,
    },
    #[error("{method}: the score of block {block} is not a finite number ({value})")]
    NonFiniteScore {
        method: String,
        block: usize,
        value: f64,
    },
    #[error("{method}: block {block} has no score (every block needs exactly one)")]
    MissingBlock { method: String, block: usize },
    #[error("{method}: block {block} has more than one score")]
    DuplicateBlock { method: String, block: usize },
    #[error("{method}: block {block} is out of range for a model of {num_blocks} blocks")]
    BlockOutOfRange {
        method: String,
        block: usize,
        num_blocks: usize,
    },
    #[error("the score table has no rows for estimator {estimator:?} (it has: {available})")]
    UnknownEstimator {
        estimator: String,
        available: String,
    },
    #[error("the block statistics have no run of {run_length} blocks that avoids the fixed blocks (runs measured: {available})")]
    NoRun {
        run_length: usize,
        available: String,
    },
    #[error("the surrogate has {surrogate} players but the model has {num_blocks} blocks")]
    SurrogateSize { surrogate: usize, num_blocks: usize },
    #[error("the surrogate's Shapley values: {0}")]
    Shapley(#[from] layerprune_shapley::ShapleyError),
    #[error("the game could not value the masks: {0}")]
    Game(GameError),
    #[error("invalid option: {0}")]
    BadOption(String),
    /// A perplexity ratio no plan meets: the settings are valid, the model cannot meet them.
    #[error("{0}")]
    NothingWithin(String),
    /// What an earlier plan table cannot give from-plan (no plan of the k or method asked
    /// for, several where one is needed, one that removes a fixed block): the options are
    /// valid, the table holds no such plan. Not [`SelectionError::BadOption`], whose "invalid
    /// option:" read as if a flag were malformed.
    #[error("{0}")]
    NoSuchPlan(String),
}

impl From<GameError> for SelectionError {
    fn from(error: GameError) -> Self {
        SelectionError::Game(error)
    }
}

/// The blocks that may be removed: every block but the fixed ones, ascending. Fails when a
/// fixed block is out of range or when `k` is not smaller than the number of removable blocks
/// (removing every player leaves nothing to choose and, without fixed blocks, no model).
pub fn removable_blocks(
    num_blocks: usize,
    fixed: &[usize],
    k: usize,
) -> Result<Vec<usize>, SelectionError> {
    use layerprune_core::{Players, PlayersError};
    let players = Players::new(num_blocks, fixed)
        .and_then(|players| players.check_removal(k).map(|()| players))
        .map_err(|e| match e {
            PlayersError::OutOfRange { block, num_blocks } => {
                SelectionError::FixedOutOfRange { block, num_blocks }
            }
            // Every block fixed (no player, so no k can be removed), or k too large.
            PlayersError::NoPlayers { .. } | PlayersError::TooManyRemoved { .. } => {
                let fixed_count = layerprune_core::distinct(fixed).len();
                SelectionError::TooManyRemoved {
                    k,
                    players: num_blocks - fixed_count,
                    num_blocks,
                    fixed: fixed_count,
                }
            }
            // Too many blocks, a block listed twice: said as the player set says it.
            other => SelectionError::BadOption(other.to_string()),
        })?;
    Ok(players.blocks().to_vec())
}

/// What a run choosing plans checks before any model runs, so a request it cannot meet costs
/// no LLM evaluation: every fixed block is one of the model's, every k of `ks` leaves a block
/// to keep (named as `--k`), and each budget of adaptive removal given as a number of
/// evaluations (`budget_flag`, with `adaptive_budgets` empty where adaptive removal is not
/// played) is at least the least it accepts at that k ([`adaptive_min_budget`]).
pub fn check_plan_request(
    num_blocks: usize,
    fixed: &[usize],
    ks: &[usize],
    adaptive_budgets: &[frontier::Budget],
    budget_flag: &str,
) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(&block) = fixed.iter().find(|&&block| block >= num_blocks) {
        anyhow::bail!(
            "fixed block {block} is not a block of this {num_blocks}-block model (its blocks are \
             numbered from 0)"
        );
    }
    for &k in ks {
        let players = removable_blocks(num_blocks, fixed, k)
            .with_context(|| format!("--k {k}"))?
            .len();
        let least = adaptive_min_budget(players, k);
        for budget in adaptive_budgets {
            if let frontier::Budget::Evaluations(n) = *budget {
                if n < least {
                    anyhow::bail!(
                        "{budget_flag} {n}: adaptive removal of {k} of {players} removable blocks \
                         needs at least {least} LLM evaluations (every single removal, the \
                         leave-one-out plan, then one per step): give {least} or more, a \
                         fraction of SLEB's cost such as 0.5sleb, or least"
                    );
                }
            }
        }
    }
    Ok(())
}

/// The seeded generator of every random choice here: portable and the same on every platform.
pub(crate) fn rng_from_seed(seed: u64) -> rand_chacha::ChaCha8Rng {
    use rand::SeedableRng;
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model beyond the blocks a player set may have was refused as "cannot remove k blocks"
    /// (every player-set error but one was read as k too large); it says what is wrong now.
    #[test]
    fn removable_blocks_name_a_model_too_large_as_such() {
        let err = removable_blocks(layerprune_core::MAX_BLOCKS + 1, &[], 1).unwrap_err();
        assert!(matches!(err, SelectionError::BadOption(_)), "{err}");
        assert!(
            err.to_string().contains("at most 10000 are supported"),
            "{err}"
        );
        let err = removable_blocks(3, &[0, 1, 2, 2], 1).unwrap_err();
        assert!(
            matches!(
                err,
                SelectionError::TooManyRemoved {
                    players: 0,
                    fixed: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn removable_blocks_refuse_k_at_or_above_the_players() {
        assert_eq!(removable_blocks(5, &[0, 4], 2).unwrap(), vec![1, 2, 3]);
        let err = removable_blocks(5, &[0, 4], 3).unwrap_err();
        assert!(matches!(
            err,
            SelectionError::TooManyRemoved {
                k: 3,
                players: 3,
                ..
            }
        ));
        assert!(err.to_string().contains("2 fixed"), "{err}");
        assert!(
            err.to_string().contains("at most 2 may be removed"),
            "{err}"
        );
        assert!(matches!(
            removable_blocks(5, &[5], 1),
            Err(SelectionError::FixedOutOfRange { block: 5, .. })
        ));
    }
}
