//! Budget-aware adaptive removal: the blocks to delete chosen by spending LLM evaluations only
//! where the decision is made, with a surrogate of the removal game deciding which masks are
//! worth measuring.
//!
//! Why: estimating every block's average contribution (the Shapley value) spends evaluations on
//! coalitions far from any plan with k removed, and the interactions among the removed blocks
//! decide the result; SLEB's greedy spends them on the decision but re-measures every remaining
//! block at every step, although most blocks' marginal losses barely move when one far-away
//! block goes. Here the game is played near the decision:
//!
//! 1. **Singles**: every removable block removed alone (the leave-one-out game, L evaluations),
//!    and the leave-one-out plan they imply (one more), so the result is never worse than it.
//! 2. **Screened greedy** (when the budget affords it, see below): k steps of SLEB's rule —
//!    remove the block whose removal, on top of those already removed, hurts least — but each
//!    step measures only the candidates near a block removed since they were last measured,
//!    the few best predicted, and then candidates in the surrogate's order until it rules every
//!    unmeasured one out (its prediction plus an allowance for the surrogate's own errors is
//!    below the best value measured at this step).
//!    The allowance is learned from the errors the surrogate made on the candidates it screened,
//!    so it widens by itself where the game is hard to predict.
//! 3. **Swap refinement**: with the budget left, best-first swaps (one removed block put back,
//!    another removed) around the best plan measured, in the surrogate's order, moving as soon
//!    as a measured swap is better, until the budget is spent or the `local_optima` best plans
//!    measured are one-swap local optima (every neighbour measured, none better) and, raced, no
//!    plan a race dropped is estimated above the worst of them (see **Raced** below). After the
//!    greedy, budget left at that point buys a second descent from the leave-one-out plan (its
//!    best one-swap neighbour measured whole becomes the next centre, until it is a local optimum
//!    too or among the best plans): the three cheapest single removals can clash with each other
//!    and still hold the better basin (on Gemma 3's set c1 at k = 6 the greedy ends in SLEB's
//!    plan, and plans two swaps from it, one from the leave-one-out plan's descent, are better).
//!
//! The greedy is a path to a plan: its sets with fewer than k removed are not plans, and a step
//! that cannot measure the candidates its screen needs (the `min_checked` best predicted and the
//! neighbours of the block just removed) follows the surrogate's guess rather than SLEB's rule.
//! So below [`adaptive_greedy_budget`] (every step affording those candidates) the spare
//! evaluations go straight to the swap refinement around the leave-one-out plan, where every mask
//! measured is a plan with k removed. On synthetic games and on SmolLM2's calibration tokens the
//! swaps choose better plans than the starved greedy below that budget, and above it the greedy's
//! start is better; on Gemma 3 270M the swaps were better at k = 6 and worse at k = 4
//! (docs/results.md, "Where the refinement starts"). Raced, a candidate clearly behind after a
//! few windows costs only those, so the rule costs each of the screen's candidates at what a
//! single cost in the singles' race, and the greedy also runs at smaller budgets.
//!
//! The surrogate is the pairwise (quadratic) game in the *removed* blocks, refitted by ridge
//! regression after every batch on every mask measured (from sufficient statistics): a value per
//! block, one interaction shared by every pair of removed blocks (removing several blocks costs
//! more than the sum of their single removals), one shared interaction per block distance 1..=3
//! (neighbouring blocks interact most in every model measured here), and an interaction per pair
//! of blocks seen removed together, penalised harder than the shared terms: a pair's own term
//! needs evidence of its own. Without the term every pair shares and that penalty, the excess
//! loss of the leave-one-out plan (one set, fifteen pairs at k = 6) was blamed on its particular
//! pairs, and a greedy step with a tight budget steered away from every block of it.
//! Predictions are anchored: the surrogate predicts the *difference* between a mask and a
//! measured mask next to it, so its global misfit cancels.
//!
//! **Raced** ([`AdaptiveOptions::race`], on a game valued window by window such as the LLM's
//! calibration windows): every batch measured together is a race ([`crate::race`]) — the
//! singles for the k best, a greedy step's candidates against the best measured so far, a swap
//! batch against its centre — so a mask clearly worse than those after a few windows costs only
//! the windows it ran, and the budget saved buys more swaps. A dropped mask is never a plan and
//! never asked again; its paired estimate (the best survivor's value plus their mean difference
//! over the windows measured) goes into the surrogate's fit, weighted by its share of the
//! windows. On the synthetic games (`raced_it_chooses_better_plans_for_the_same_budget`) it
//! chooses better plans than unraced at the same budget. A swap is dropped when it is clearly
//! behind the best of its batch, not necessarily behind its centre, so a plan better than its
//! centre may never be a centre: when the best plans measured whole are local optima with budget
//! left, the dropped plans estimated above the worst of them (unraced, such a plan would have
//! been a centre) are measured on their remaining windows and the refinement goes on from them
//! (`raced_past_its_local_optima_it_explores_the_plans_it_dropped`); what was measured before is
//! unchanged, so the plan is never worse than stopping there.
//!
//! The plan returned is always the best *measured* mask with k removed, never a prediction, and
//! the cost is every distinct mask asked of the game (one measured on w of W windows: w / W).
//! Everything runs against [`Game`], so it is tested on synthetic games whose optimum is known
//! by brute force and replayed on recorded tables.

use std::collections::HashMap;

use layerprune_core::linalg::Cholesky;
use layerprune_core::{CountingGame, Game, Mask};

use crate::race::{race_masks, Race, Raced};
use crate::{removable_blocks, SelectionError};

/// Settings of [`adaptive_removal`].
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveOptions {
    /// Distinct masks the method may ask the game for, at most (LLM evaluations).
    pub budget: usize,
    /// Candidates measured at every greedy step before the surrogate may rule the rest out.
    pub min_checked: usize,
    /// Swaps measured per refinement round.
    pub swap_batch: usize,
    /// Ridge penalty of the surrogate's fit: the blocks' own values and the shared interactions.
    pub ridge_alpha: f64,
    /// Ridge penalty of the interactions of particular pairs (see the module documentation).
    pub pair_ridge_alpha: f64,
    /// Shared interaction features for block distances 1..=this.
    pub distance_features: usize,
    /// A greedy step re-measures every candidate within this distance of a block removed
    /// since the candidate was last measured.
    pub explore_distance: usize,
    /// The allowance is this multiple of the largest under-prediction seen so far.
    pub allowance_factor: f64,
    /// Refinement stops early once this many of the best measured plans are local optima
    /// (every one-swap neighbour measured, none better).
    pub local_optima: usize,
    /// Where the refinement starts: the greedy's plan, or the leave-one-out plan directly.
    pub start: AdaptiveStart,
    /// After the greedy, once its best plans are local optima with budget left, descend from
    /// the leave-one-out plan too (see the module documentation).
    pub leave_one_out_descent: bool,
    /// Race the masks measured together over the calibration windows (see the module
    /// documentation): `None` measures every mask whole.
    pub race: Option<Race>,
}

/// Where [`adaptive_removal`]'s swap refinement starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdaptiveStart {
    /// The screened greedy when the budget affords its screen (unraced: it reaches
    /// [`adaptive_greedy_budget`]; raced, at the singles' cost per mask), else the leave-one-out
    /// plan (the default).
    Auto,
    /// Always the screened greedy first.
    Greedy,
    /// Always straight from the leave-one-out plan (no greedy).
    LeaveOneOut,
}

impl AdaptiveOptions {
    /// The default settings with the given budget.
    pub fn with_budget(budget: usize) -> Self {
        AdaptiveOptions {
            budget,
            min_checked: 3,
            swap_batch: 4,
            ridge_alpha: 1e-4,
            pair_ridge_alpha: 1e-2,
            distance_features: 3,
            explore_distance: 2,
            allowance_factor: 1.5,
            local_optima: 3,
            start: AdaptiveStart::Auto,
            leave_one_out_descent: true,
            race: None,
        }
    }
}

/// SLEB's cost for `k` removals among `players` removable blocks: Σ_{t<k} (players − t), the
/// default budget of [`adaptive_removal`] (so it never costs more than SLEB).
pub fn sleb_cost(players: usize, k: usize) -> usize {
    (0..k).map(|t| players.saturating_sub(t)).sum()
}

/// The least budget [`adaptive_removal`] accepts: every single removal, the leave-one-out plan,
/// then one candidate per further greedy step.
pub fn adaptive_min_budget(players: usize, k: usize) -> usize {
    players + k
}

/// The most of `budget` that adaptive removal of `k` among `players` removable blocks can
/// spend, what its log shows as its budget. It asks only for the singles, the sets of 2 to
/// k − 1 blocks along its greedy path (players − t + 1 at step t) and sets of k blocks, so at
/// k = 1 for the singles alone (SLEB's cost), though [`adaptive_min_budget`] is one more.
fn spendable(budget: usize, players: usize, k: usize) -> usize {
    let path: usize = (2..k).map(|t| players + 1 - t).sum();
    // C(players, k), counted only up to the budget (so each product fits: the binomial below
    // the budget times a factor of at most MAX_BLOCKS).
    let mut sets_of_k = 1u128;
    for i in 1..=k.min(players) {
        sets_of_k = sets_of_k * (players - i + 1) as u128 / i as u128;
        if sets_of_k >= budget as u128 {
            return budget;
        }
    }
    let singles = if k > 1 { players } else { 0 };
    budget.min(singles + path + sets_of_k as usize)
}

/// The least budget at which [`AdaptiveStart::Auto`] runs the screened greedy unraced: the
/// singles, the leave-one-out plan, then for each of the k − 1 steps after the first (which the
/// singles decide) the candidates its screen measures before the surrogate may rule any out — the
/// `min_checked` best predicted and the neighbours within `explore_distance` on both sides of
/// the block just removed. Raced, each of those candidates is costed at what a single cost in
/// the singles' race, so the greedy also runs below this budget.
pub fn adaptive_greedy_budget(players: usize, k: usize, options: &AdaptiveOptions) -> usize {
    let per_step = options.min_checked + 2 * options.explore_distance;
    players + 1 + k.saturating_sub(1) * per_step
}

/// Whether [`AdaptiveStart::Auto`] runs the screened greedy, `spent` evaluations after the
/// singles and the leave-one-out plan: when the budget left affords, for each of the k − 1 steps
/// after the first, the candidates its screen measures (as in [`adaptive_greedy_budget`]), each
/// costed at `share_per_mask`, what a single cost. Unraced that is 1 and this is
/// `budget >= adaptive_greedy_budget(..)`; raced, a candidate clearly behind after a few windows
/// costs only those, so the greedy also runs at smaller budgets where the race affords its
/// screen (docs/selection.md, "Where the refinement starts").
fn greedy_affordable(
    spent: usize,
    share_per_mask: f64,
    k: usize,
    options: &AdaptiveOptions,
) -> bool {
    let per_step = (options.min_checked + 2 * options.explore_distance) as f64;
    spent as f64 + k.saturating_sub(1) as f64 * per_step * share_per_mask <= options.budget as f64
}

/// Why the refinement stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdaptiveStop {
    /// The budget was spent.
    Budget,
    /// The best `local_optima` measured plans are local optima: every one-swap neighbour of
    /// each was measured and none is better (raced: and no plan a race dropped is estimated
    /// above the worst of them).
    LocalOptima,
}

impl std::fmt::Display for AdaptiveStop {
    /// As the log says why the refinement ended.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AdaptiveStop::Budget => "budget spent",
            AdaptiveStop::LocalOptima => "the best plans are local optima",
        })
    }
}

/// How often the swaps say how far they are (at info): a swap round of a large model takes
/// seconds to minutes, and SmolLM2's K=6 refinement spent two thirds of its budget, ten minutes
/// on a busy 2-core machine, with nothing in the log (new-user audit, 2026-12-08).
const SWAP_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The result of [`adaptive_removal`].
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveResult {
    /// The best measured set of k removed blocks, ascending.
    pub removed_blocks: Vec<usize>,
    /// Its measured value.
    pub value: f64,
    /// Distinct masks asked of the game.
    pub llm_evaluations: usize,
    /// The set the refinement started from, ascending: the screened greedy's, or the
    /// leave-one-out plan when the greedy did not run.
    pub start_removed: Vec<usize>,
    /// Whether the screened greedy ran (see [`AdaptiveStart`]).
    pub greedy: bool,
    /// Distinct masks used before the refinement (singles, leave-one-out plan, greedy).
    pub start_evaluations: usize,
    /// Whether the swaps also descended from the leave-one-out plan: after the greedy, when its
    /// best plans were local optima with budget left.
    pub leave_one_out_descent: bool,
    /// Swaps that improved the plan.
    pub swaps_accepted: usize,
    pub stop: AdaptiveStop,
}

/// Chooses `k` blocks to remove (never a fixed one) within `options.budget` distinct masks;
/// see the module documentation. `game` is the LLM in practice (value = −NLL; any value where
/// larger is better works). Fails when the budget is below [`adaptive_min_budget`].
///
/// The method, in three phases: every block removed alone, and the leave-one-out plan they
/// imply; when the budget affords it, k greedy steps of SLEB's rule in which a surrogate of the
/// game screens out the candidates not worth measuring; then, with the budget left, swaps of one
/// removed block for another around the best plans measured, until the budget is spent or they
/// are local optima. The plan is the best mask with k removed that was measured.
pub fn adaptive_removal(
    game: &mut dyn Game,
    k: usize,
    fixed: &[usize],
    options: &AdaptiveOptions,
) -> Result<AdaptiveResult, SelectionError> {
    let num_blocks = game.num_players();
    let players = removable_players(num_blocks, k, fixed, options)?;
    let mut play = Play::new(game, num_blocks, options);
    // What the logs show as the budget: the most of it this run can spend.
    let budget = spendable(options.budget, players.len(), k);

    let singles = measure_singles(&mut play, &players, k)?;
    let greedy_removed = screened_greedy(&mut play, &players, k, &singles, budget)?;
    let greedy = greedy_removed.is_some();
    let start_evaluations = play.evaluations();
    let refinement = swap_refinement(
        &mut play,
        &players,
        k,
        &singles.leave_one_out,
        greedy,
        budget,
    )?;

    let (removed_blocks, value) = play.ranked_of_size(k).swap_remove(0);
    Ok(AdaptiveResult {
        removed_blocks,
        value,
        llm_evaluations: play.evaluations(),
        start_removed: greedy_removed.unwrap_or(singles.leave_one_out),
        greedy,
        start_evaluations,
        leave_one_out_descent: refinement.leave_one_out_descent,
        swaps_accepted: refinement.swaps_accepted,
        stop: refinement.stop,
    })
}

/// The removable blocks (the game's players) for `k` removals, or why [`adaptive_removal`]
/// refuses the run: `k` of 0, fewer than `k` removable blocks, or a budget below
/// [`adaptive_min_budget`].
fn removable_players(
    num_blocks: usize,
    k: usize,
    fixed: &[usize],
    options: &AdaptiveOptions,
) -> Result<Vec<usize>, SelectionError> {
    if k == 0 {
        return Err(SelectionError::BadOption(
            "adaptive removal of 0 blocks: the plan would be the full model; give k of 1 or more"
                .into(),
        ));
    }
    let players = removable_blocks(num_blocks, fixed, k)?;
    let least = adaptive_min_budget(players.len(), k);
    if options.budget < least {
        return Err(SelectionError::BadOption(format!(
            "adaptive removal of {k} of {} removable blocks needs a budget of at least {least} \
             LLM evaluations (every single removal, the leave-one-out plan, then one per step); got {} \
             (--budget least gives the least)",
            players.len(),
            options.budget
        )));
    }
    Ok(players)
}

/// What the singles leave the later phases.
struct Singles {
    /// The leave-one-out plan: the k cheapest single removals, ascending.
    leave_one_out: Vec<usize>,
    /// What a mask of the singles' batch cost with the race (1 unraced): what the greedy's
    /// candidates will cost.
    share_per_mask: f64,
}

/// Phase 1: every removable block removed alone, and the leave-one-out plan they imply (the k
/// cheapest single removals): one evaluation that guarantees a plan at least as good as
/// leave-one-out's at any budget.
fn measure_singles(
    play: &mut Play<'_, '_>,
    players: &[usize],
    k: usize,
) -> Result<Singles, SelectionError> {
    let singles: Vec<Vec<usize>> = players.iter().map(|&b| vec![b]).collect();
    // Raced for the k best (the leave-one-out plan): a single clearly behind the k-th best is
    // dropped with its paired estimate, which is all the surrogate needs of a bad removal.
    let single_values: Vec<f64> = play
        .measure(&singles, None, k)?
        .into_iter()
        .map(Raced::value_or_estimate)
        .collect();
    let share_per_mask = play.evaluations() as f64 / players.len() as f64;
    let mut by_single: Vec<usize> = (0..players.len()).collect();
    by_single.sort_by(|&a, &b| {
        single_values[b]
            .total_cmp(&single_values[a])
            .then(players[a].cmp(&players[b]))
    });
    let mut leave_one_out: Vec<usize> = by_single[..k].iter().map(|&i| players[i]).collect();
    leave_one_out.sort_unstable();
    play.measure(std::slice::from_ref(&leave_one_out), None, 1)?;
    Ok(Singles {
        leave_one_out,
        share_per_mask,
    })
}

/// Phase 2: the screened greedy, when `options.start` says it runs (for
/// [`AdaptiveStart::Auto`], when the budget left after the singles affords its screen): k steps
/// of SLEB's rule, each measuring only the candidates its screen needs (see the module
/// documentation). Returns the set of k blocks it removed, or `None` when it did not run (the
/// refinement then starts from the leave-one-out plan). `budget` is what the logs show as the
/// budget.
fn screened_greedy(
    play: &mut Play<'_, '_>,
    players: &[usize],
    k: usize,
    singles: &Singles,
    budget: usize,
) -> Result<Option<Vec<usize>>, SelectionError> {
    let options = play.options;
    let greedy = match options.start {
        AdaptiveStart::Auto => {
            greedy_affordable(play.evaluations(), singles.share_per_mask, k, options)
        }
        AdaptiveStart::Greedy => true,
        AdaptiveStart::LeaveOneOut => false,
    };
    tracing::info!(
        "adaptive: k={k}, singles and leave-one-out measured, {} of {} evaluations; {}",
        play.evaluations(),
        budget,
        if greedy {
            "screened greedy next"
        } else {
            "swaps around the leave-one-out plan next (the budget is below the greedy's)"
        }
    );
    if !greedy {
        return Ok(None);
    }

    // `removal_order[s]` is the block removed at step s; `measured_at[b]` the last step at which
    // block b's candidate (the set then, plus b) was measured.
    let mut current: Vec<usize> = Vec::new();
    let mut removal_order: Vec<usize> = Vec::new();
    let mut measured_at: HashMap<usize, usize> = players.iter().map(|&b| (b, 0)).collect();
    let mut current_value = f64::NAN;
    for step in 0..k {
        let candidates: Vec<Vec<usize>> = players
            .iter()
            .filter(|b| !current.contains(b))
            .map(|&b| sorted_with(&current, b))
            .collect();
        // What is left is shared evenly among this step and the later ones (what a step does not
        // use goes to the next), so no step starves.
        let cap = (play.remaining() / (k - step)).max(1);
        let (best, value) = if step == 0 {
            play.best_of(&candidates)
        } else {
            // A candidate whose last measurement predates the removal of a block near it is
            // measured again: interactions are strongest between neighbouring blocks, so its
            // marginal loss may have moved, and these measurements teach the surrogate what the
            // step changed. Candidates far from every block removed since are screened.
            let explore: Vec<Vec<usize>> = players
                .iter()
                .filter(|b| !current.contains(b))
                .filter(|&&b| {
                    removal_order[measured_at[&b]..]
                        .iter()
                        .any(|&r| r.abs_diff(b) <= options.explore_distance)
                })
                .map(|&b| sorted_with(&current, b))
                .collect();
            play.screened_best(&candidates, &explore, &current, current_value, cap)?
        };
        for &b in players.iter().filter(|b| !current.contains(b)) {
            if play.is_known(&sorted_with(&current, b)) {
                measured_at.insert(b, step);
            }
        }
        let added = *best
            .iter()
            .find(|b| !current.contains(b))
            .expect("each step removes one block");
        removal_order.push(added);
        current = best;
        current_value = value;
        tracing::info!(
            "adaptive: k={k}, greedy {}/{k} blocks removed (block {added}, value {value:.6}), \
             {} of {} evaluations",
            step + 1,
            play.evaluations(),
            budget
        );
    }
    Ok(Some(current))
}

/// What the swap refinement did.
struct Refinement {
    swaps_accepted: usize,
    /// Whether the swaps also descended from the leave-one-out plan.
    leave_one_out_descent: bool,
    stop: AdaptiveStop,
}

/// Phase 3: best-first expansion of the best measured plans' one-swap neighbourhoods, in the
/// surrogate's order, until the budget is spent or those plans are local optima; after the
/// greedy (`greedy`), budget left at that point buys a descent from the leave-one-out plan too
/// (see the module documentation). `budget` is what the logs show as the budget.
fn swap_refinement(
    play: &mut Play<'_, '_>,
    players: &[usize],
    k: usize,
    leave_one_out: &[usize],
    greedy: bool,
    budget: usize,
) -> Result<Refinement, SelectionError> {
    let options = play.options;
    let mut swaps_accepted = 0;
    // The centre of the leave-one-out plan's own descent, once the greedy's neighbourhood is
    // exhausted.
    let mut descent: Option<Vec<usize>> = None;
    let started = (std::time::Instant::now(), play.evaluations());
    let mut last_said = started.0;
    let stop = loop {
        if play.remaining() == 0 {
            break AdaptiveStop::Budget;
        }
        let ranked = play.ranked_of_size(k);
        let best_value = ranked[0].1;
        let descent_center = descent.as_ref().map(|c| (c.clone(), play.measured[c]));
        let next = ranked
            .iter()
            .take(options.local_optima)
            .chain(descent_center.as_ref())
            .find_map(|(center, center_value)| {
                let swaps = swap_neighbours(center, players);
                let batch = play.next_swaps(&swaps, center, *center_value, options.swap_batch);
                (!batch.is_empty()).then(|| (center.clone(), *center_value, batch))
            });
        let Some((center, center_value, batch)) = next else {
            // Unraced, the centres are the `local_optima` best plans measured; a dropped plan
            // estimated above the worst of them might have been one.
            let worst_center = ranked
                .get(options.local_optima.max(1) - 1)
                .map_or(f64::NEG_INFINITY, |(_, value)| *value);
            if play.complete_best_dropped(k, worst_center, options.swap_batch)? {
                continue;
            }
            // The greedy's plans are local optima and budget is left: the leave-one-out plan's
            // basin is the other place a good plan was seen to lie (Gemma 3's set c1 at k = 6,
            // docs/results.md), so the swaps descend from it too. At k = 1 the plan is a single,
            // which a race may have dropped (when every single diverged, a dropped one ties the
            // survivor at −∞): a plan never measured whole is no basin, and has no value to
            // centre on.
            if greedy
                && options.leave_one_out_descent
                && descent.is_none()
                && play.measured.contains_key(leave_one_out)
            {
                tracing::info!(
                    "adaptive: k={k}, the best plans are local optima with {} of {} evaluations \
                     spent; swaps around the leave-one-out plan next",
                    play.evaluations(),
                    budget
                );
                descent = Some(leave_one_out.to_vec());
                continue;
            }
            break AdaptiveStop::LocalOptima;
        };
        // Raced against the centre (measured, so free in the race): a swap clearly worse than
        // it after a few windows is dropped.
        let raced = play.measure(&batch, Some(&center), 1)?;
        if raced
            .iter()
            .any(|r| r.whole().is_some_and(|v| v > best_value))
        {
            swaps_accepted += 1;
        }
        // The descent moves to the best swap measured whole that beats its centre.
        if let Some(descent) = descent.as_mut().filter(|c| **c == center) {
            if let Some((set, _)) = batch
                .iter()
                .zip(&raced)
                .filter_map(|(set, r)| r.whole().map(|value| (set, value)))
                .filter(|(_, value)| *value > center_value)
                .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(a.0)))
            {
                *descent = set.clone();
            }
        }
        let now = std::time::Instant::now();
        if now.duration_since(last_said) >= SWAP_PROGRESS_EVERY {
            last_said = now;
            // The pace of the swaps so far; the budget left bounds what is to come (the swaps
            // may end sooner, at local optima).
            let spent = play.evaluations() - started.1;
            let seconds_each = now.duration_since(started.0).as_secs_f64() / spent.max(1) as f64;
            tracing::info!(
                "adaptive: k={k}, swaps: {swaps_accepted} accepted so far, {} of {} evaluations \
                 ({seconds_each:.1} s each; at most about {:.0} min left)",
                play.evaluations(),
                budget,
                seconds_each * budget.saturating_sub(play.evaluations()) as f64 / 60.0
            );
        } else {
            tracing::debug!(
                "adaptive: k={k}, swaps: {} measured, {swaps_accepted} accepted, {} of {} \
                 evaluations",
                batch.len(),
                play.evaluations(),
                budget
            );
        }
    };
    tracing::info!(
        "adaptive: k={k}, done ({stop}): {swaps_accepted} swaps accepted, {} of {} evaluations",
        play.evaluations(),
        budget
    );
    Ok(Refinement {
        swaps_accepted,
        leave_one_out_descent: descent.is_some(),
        stop,
    })
}

/// `set` with `block` added, ascending.
fn sorted_with(set: &[usize], block: usize) -> Vec<usize> {
    let mut out = set.to_vec();
    out.push(block);
    out.sort_unstable();
    out
}

/// Every set one swap from `set`: one of its blocks put back, one removable block not in it
/// removed; ascending sets.
fn swap_neighbours(set: &[usize], players: &[usize]) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for &out_block in set {
        for &in_block in players.iter().filter(|b| !set.contains(b)) {
            let mut swapped: Vec<usize> = set.iter().copied().filter(|&b| b != out_block).collect();
            swapped.push(in_block);
            swapped.sort_unstable();
            out.push(swapped);
        }
    }
    out
}

/// The method's state: the game (counted), every value measured, the surrogate's errors.
struct Play<'g, 'o> {
    game: CountingGame<&'g mut dyn Game>,
    num_blocks: usize,
    options: &'o AdaptiveOptions,
    /// Measured values by removed set (ascending).
    measured: HashMap<Vec<usize>, f64>,
    /// Measured sets in the order measured (for a deterministic fit).
    order: Vec<Vec<usize>>,
    /// Sets a race dropped, as it dropped them (`Raced::Dropped`: the paired estimate and the
    /// windows measured): looked at (never asked again), never a plan, in the surrogate's fit
    /// with the weight of those windows.
    estimated: HashMap<Vec<usize>, Raced>,
    /// Predictions the screen relied on: made for greedy candidates far from every block removed
    /// since they were last measured, before they were measured.
    predicted: HashMap<Vec<usize>, f64>,
    /// measured − predicted for each of those: what the allowance is learned from. Candidates
    /// near a recent removal are measured anyway, so their (larger) errors do not widen it.
    errors: Vec<f64>,
    surrogate: RemovalSurrogate,
}

impl<'g, 'o> Play<'g, 'o> {
    fn new(game: &'g mut dyn Game, num_blocks: usize, options: &'o AdaptiveOptions) -> Self {
        Play {
            game: CountingGame::new(game),
            num_blocks,
            options,
            measured: HashMap::new(),
            order: Vec::new(),
            estimated: HashMap::new(),
            predicted: HashMap::new(),
            errors: Vec::new(),
            surrogate: RemovalSurrogate::new(num_blocks, options.distance_features),
        }
    }

    /// Measured whole, or dropped by a race: either way not asked for again.
    fn is_known(&self, set: &[usize]) -> bool {
        self.measured.contains_key(set) || self.estimated.contains_key(set)
    }

    fn evaluations(&self) -> usize {
        self.game.evaluations()
    }

    fn remaining(&self) -> usize {
        self.options.budget.saturating_sub(self.evaluations())
    }

    /// Measures the sets not known yet, in one batch: a race for the `keep` best (whole, without
    /// `options.race` or with no more sets than `keep`), with `reference` (a measured set, free
    /// to race) as one more to beat; records the surrogate's errors and refits it. Returns what
    /// was learned of each set: measured, whole; dropped, its estimate.
    fn measure(
        &mut self,
        sets: &[Vec<usize>],
        reference: Option<&[usize]>,
        keep: usize,
    ) -> Result<Vec<Raced>, SelectionError> {
        let new = self.unknown(sets)?;
        if !new.is_empty() {
            let mut raced_sets = new.clone();
            if let Some(reference) = reference.filter(|r| self.measured.contains_key(*r)) {
                raced_sets.push(reference.to_vec());
            }
            let masks = self.masks(&raced_sets)?;
            let outcomes = race_masks(&mut self.game, &masks, self.options.race.as_ref(), keep)?;
            for (set, outcome) in new.into_iter().zip(outcomes) {
                self.record(set, outcome);
            }
            self.refit();
        }
        Ok(sets
            .iter()
            .map(|s| match self.measured.get(s) {
                Some(&value) => Raced::Whole(value),
                None => self.estimated[s],
            })
            .collect())
    }

    /// The sets of `sets` not known yet, sorted and deduplicated; an error when they are more
    /// than the budget left (callers size their batches to it).
    fn unknown(&self, sets: &[Vec<usize>]) -> Result<Vec<Vec<usize>>, SelectionError> {
        let mut new: Vec<Vec<usize>> = sets.iter().filter(|s| !self.is_known(s)).cloned().collect();
        new.sort();
        new.dedup();
        if new.len() > self.remaining() {
            return Err(SelectionError::BadOption(format!(
                "internal: {} masks asked with {} evaluations left",
                new.len(),
                self.remaining()
            )));
        }
        Ok(new)
    }

    fn masks(&self, sets: &[Vec<usize>]) -> Result<Vec<Mask>, SelectionError> {
        sets.iter()
            .map(|s| Mask::from_removed(self.num_blocks, s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SelectionError::Game(e.into()))
    }

    /// Keeps what was learned of `set`: a whole value (the surrogate's error on it where it
    /// was predicted) or a race's estimate, weighted in the fit by its share of the windows.
    fn record(&mut self, set: Vec<usize>, outcome: Raced) {
        match outcome {
            Raced::Whole(value) => {
                // A diverged model is the worst plan, never a winner.
                let value = if value.is_nan() {
                    f64::NEG_INFINITY
                } else {
                    value
                };
                if let Some(prediction) = self.predicted.get(&set) {
                    if value.is_finite() {
                        self.errors.push(value - prediction);
                    }
                }
                if value.is_finite() {
                    self.surrogate.add(&set, value, 1.0);
                }
                self.measured.insert(set.clone(), value);
                self.order.push(set);
            }
            Raced::Dropped { estimate, windows } => {
                if estimate.is_finite() {
                    self.surrogate
                        .add(&set, estimate, self.window_share(windows));
                }
                let estimate = if estimate.is_nan() {
                    f64::NEG_INFINITY
                } else {
                    estimate
                };
                self.estimated
                    .insert(set, Raced::Dropped { estimate, windows });
            }
        }
    }

    /// The weight in the surrogate's fit of a mask measured on `windows` of the game's windows.
    fn window_share(&self, windows: usize) -> f64 {
        windows as f64 / self.game.num_windows().unwrap_or(1).max(1) as f64
    }

    fn refit(&mut self) {
        self.surrogate
            .solve(self.options.ridge_alpha, self.options.pair_ridge_alpha);
    }

    /// How much better than predicted a mask may turn out: the largest under-prediction seen
    /// times the allowance factor (0 before any error is known).
    fn allowance(&self) -> f64 {
        let worst = self.errors.iter().copied().fold(0.0_f64, f64::max);
        worst * self.options.allowance_factor
    }

    /// The prediction for `set`, anchored on the measured `anchor`: the measured value plus the
    /// surrogate's difference between the two.
    fn predict_from(&self, set: &[usize], anchor_offset: f64) -> f64 {
        self.surrogate.predict(set) + anchor_offset
    }

    /// What anchors predictions on the measured `anchor`: its measured value minus the
    /// surrogate's (computed once per batch of predictions, not per candidate).
    fn anchor_offset(&self, anchor: &[usize], anchor_value: f64) -> f64 {
        anchor_value - self.surrogate.predict(anchor)
    }

    /// The best set of `sets` measured whole (a race's dropped sets are behind one that was):
    /// ties to the smaller set.
    fn best_of(&self, sets: &[Vec<usize>]) -> (Vec<usize>, f64) {
        sets.iter()
            .filter_map(|s| self.measured.get(s).map(|&v| (s, v)))
            .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(s, v)| (s.clone(), v))
            .expect("at least one candidate")
    }

    /// A greedy step: candidates measured in the surrogate's order until every unmeasured one
    /// is ruled out (after at least `min_checked`), or `cap` evaluations were spent here.
    fn screened_best(
        &mut self,
        candidates: &[Vec<usize>],
        explore: &[Vec<usize>],
        anchor: &[usize],
        anchor_value: f64,
        cap: usize,
    ) -> Result<(Vec<usize>, f64), SelectionError> {
        let mut spent = 0;
        let mut checked: Vec<Vec<usize>> = Vec::new();
        let mut first = true;
        loop {
            // The surrogate is refitted after every batch, so the offset is too.
            let offset = self.anchor_offset(anchor, anchor_value);
            let mut open: Vec<(Vec<usize>, f64)> = candidates
                .iter()
                .filter(|c| !checked.contains(c))
                .map(|c| (c.clone(), self.predict_from(c, offset)))
                .collect();
            open.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            // Candidates already known (e.g. by an earlier step's sets) cost nothing.
            let (free, costly): (Vec<_>, Vec<_>) =
                open.into_iter().partition(|(c, _)| self.is_known(c));
            checked.extend(free.into_iter().map(|(c, _)| c));
            let leader = checked
                .iter()
                .filter_map(|c| self.measured.get(c).map(|&v| (c.clone(), v)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let best_so_far = leader.as_ref().map_or(f64::NEG_INFINITY, |(_, v)| *v);
            let allowance = self.allowance();
            // First the candidates to explore and the best predicted few, best predicted first
            // (so a tight budget keeps the most promising); then one at a time while the
            // surrogate cannot rule the best predicted out.
            let chosen: Vec<(Vec<usize>, f64)> = if first {
                costly
                    .into_iter()
                    .enumerate()
                    .filter(|(rank, (c, _))| {
                        *rank < self.options.min_checked || explore.contains(c)
                    })
                    .map(|(_, candidate)| candidate)
                    .collect()
            } else {
                costly
                    .into_iter()
                    .take(1)
                    .filter(|(_, p)| p + allowance >= best_so_far)
                    .collect()
            };
            first = false;
            let batch: Vec<Vec<usize>> = chosen
                .into_iter()
                .take(cap.saturating_sub(spent))
                .map(|(c, p)| {
                    if !explore.contains(&c) {
                        self.predicted.insert(c.clone(), p);
                    }
                    c
                })
                .collect();
            if batch.is_empty() {
                if checked.is_empty() && spent < cap {
                    continue;
                }
                break;
            }
            // Raced against the best measured so far: a candidate clearly behind it after a few
            // windows is dropped (it cannot be this step's choice).
            let before = self.evaluations();
            self.measure(&batch, leader.as_ref().map(|(c, _)| c.as_slice()), 1)?;
            spent += (self.evaluations() - before).max(1);
            checked.extend(batch);
        }
        if checked.is_empty() {
            return Err(SelectionError::BadOption(
                "internal: a greedy step measured no candidate".into(),
            ));
        }
        Ok(self.best_of(&checked))
    }

    /// The next swaps to measure around `center`: unmeasured, best predicted first.
    fn next_swaps(
        &mut self,
        swaps: &[Vec<usize>],
        center: &[usize],
        center_value: f64,
        batch: usize,
    ) -> Vec<Vec<usize>> {
        let unmeasured: Vec<&Vec<usize>> = swaps.iter().filter(|s| !self.is_known(s)).collect();
        let offset = self.anchor_offset(center, center_value);
        let mut open: Vec<(Vec<usize>, f64)> = unmeasured
            .into_iter()
            .map(|s| (s.clone(), self.predict_from(s, offset)))
            .collect();
        open.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        open.into_iter()
            .take(batch.min(self.remaining()))
            .map(|(s, _)| s)
            .collect()
    }

    /// Raced, the best plans measured whole can be local optima while plans a race dropped
    /// (behind a better swap, not necessarily behind their centre) were never centres: measures
    /// the `count` best-estimated dropped sets of `size` estimated `above` (the worst centre's
    /// value) on their remaining windows, so they can be. False when there is none (or nothing
    /// left to spend).
    fn complete_best_dropped(
        &mut self,
        size: usize,
        above: f64,
        count: usize,
    ) -> Result<bool, SelectionError> {
        let mut dropped: Vec<(Vec<usize>, f64, usize)> = self
            .estimated
            .iter()
            .filter(|(set, _)| set.len() == size)
            .filter_map(|(set, raced)| match *raced {
                Raced::Dropped { estimate, windows }
                    if estimate.is_finite() && estimate > above =>
                {
                    Some((set.clone(), estimate, windows))
                }
                _ => None,
            })
            .collect();
        dropped.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        dropped.truncate(count.min(self.remaining()));
        if dropped.is_empty() {
            return Ok(false);
        }
        for (set, estimate, windows) in &dropped {
            // Its estimate leaves the fit with the weight it entered with (`record`); the whole
            // value replaces it.
            let share = self.window_share(*windows);
            self.surrogate.add(set, *estimate, -share);
            self.estimated.remove(set);
        }
        let sets: Vec<Vec<usize>> = dropped.into_iter().map(|(set, _, _)| set).collect();
        self.measure(&sets, None, sets.len())?;
        Ok(true)
    }

    /// The measured sets with `size` removed blocks, best first (ties to the smaller set).
    fn ranked_of_size(&self, size: usize) -> Vec<(Vec<usize>, f64)> {
        let mut ranked: Vec<(Vec<usize>, f64)> = self
            .order
            .iter()
            .filter(|s| s.len() == size)
            .map(|s| (s.clone(), self.measured[s]))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked
    }
}

/// The pairwise game in the removed blocks: v(R) = c + Σ_{i∈R} a_i + γ·#(pairs of R) +
/// Σ_{d≤D} β_d·#(pairs of R at distance d) + Σ_{i<j∈R} b_ij, with a pair term only for pairs
/// seen removed together. Fitted by ridge regression (unpenalised intercept, centred features;
/// the b_ij penalised more than the rest) from sufficient statistics accumulated one measured set
/// at a time, so a refit after every batch costs one small Cholesky solve, not a pass over every
/// row.
struct RemovalSurrogate {
    num_blocks: usize,
    distance_features: usize,
    /// Feature index of each pair seen removed together, after the linear and distance ones.
    pair_index: HashMap<(usize, usize), usize>,
    /// Σ of the rows' weights (a whole measurement weighs 1).
    rows: f64,
    /// Σ x xᵀ (full, symmetric), Σ x, Σ x y, Σ y.
    gram: Vec<Vec<f64>>,
    sums: Vec<f64>,
    cross: Vec<f64>,
    target_sum: f64,
    /// The solution: intercept and one weight per feature.
    intercept: f64,
    weights: Vec<f64>,
}

impl RemovalSurrogate {
    fn new(num_blocks: usize, distance_features: usize) -> Self {
        let p = num_blocks + distance_features + 1;
        RemovalSurrogate {
            num_blocks,
            distance_features,
            pair_index: HashMap::new(),
            rows: 0.0,
            gram: vec![vec![0.0; p]; p],
            sums: vec![0.0; p],
            cross: vec![0.0; p],
            target_sum: 0.0,
            intercept: 0.0,
            weights: vec![0.0; p],
        }
    }

    fn num_features(&self) -> usize {
        self.sums.len()
    }

    /// The feature of γ, the interaction every pair of removed blocks shares; the pairs' own
    /// features come after it.
    fn all_pairs_feature(&self) -> usize {
        self.num_blocks + self.distance_features
    }

    /// Gives every pair of `set` not seen yet a feature of its own.
    fn register_pairs(&mut self, set: &[usize]) {
        for (a, &i) in set.iter().enumerate() {
            for &j in &set[a + 1..] {
                if self.pair_index.contains_key(&(i, j)) {
                    continue;
                }
                let index = self.num_features();
                self.pair_index.insert((i, j), index);
                for row in &mut self.gram {
                    row.push(0.0);
                }
                self.gram.push(vec![0.0; index + 1]);
                self.sums.push(0.0);
                self.cross.push(0.0);
                self.weights.push(0.0);
            }
        }
    }

    /// The non-zero features of `set` as (index, value); a pair never seen has no feature (its
    /// interaction is predicted by the shared distance terms alone).
    fn features(&self, set: &[usize]) -> Vec<(usize, f64)> {
        let mut out: Vec<(usize, f64)> = set.iter().map(|&i| (i, 1.0)).collect();
        let mut distance = vec![0.0; self.distance_features];
        for (a, &i) in set.iter().enumerate() {
            for &j in &set[a + 1..] {
                let d = j - i;
                if d <= self.distance_features {
                    distance[d - 1] += 1.0;
                }
                if let Some(&index) = self.pair_index.get(&(i, j)) {
                    out.push((index, 1.0));
                }
            }
        }
        for (d, &count) in distance.iter().enumerate() {
            if count != 0.0 {
                out.push((self.num_blocks + d, count));
            }
        }
        let pair_count = set.len() * set.len().saturating_sub(1) / 2;
        if pair_count != 0 {
            out.push((self.all_pairs_feature(), pair_count as f64));
        }
        out
    }

    /// Adds a measured set with its weight in the fit (1 for a whole measurement).
    fn add(&mut self, set: &[usize], target: f64, weight: f64) {
        self.register_pairs(set);
        let features = self.features(set);
        self.rows += weight;
        self.target_sum += weight * target;
        for &(a, x_a) in &features {
            self.sums[a] += weight * x_a;
            self.cross[a] += weight * x_a * target;
            for &(b, x_b) in &features {
                self.gram[a][b] += weight * x_a * x_b;
            }
        }
    }

    /// Minimises (1/n)·Σ (y − c − wᵀx)² + α‖w‖² + α_pair‖b‖² (w: the values and shared
    /// interactions, b: the pairs' own); keeps the previous solution if the system is singular
    /// (it cannot be with both penalties > 0, but a NaN target could make it so).
    fn solve(&mut self, alpha: f64, pair_alpha: f64) {
        let p = self.num_features();
        let n = self.rows;
        if n <= 0.0 {
            return;
        }
        let mean = self.target_sum / n;
        let mut system = vec![0.0; p * p];
        for a in 0..p {
            for b in 0..p {
                system[a * p + b] = self.gram[a][b] - self.sums[a] * self.sums[b] / n;
            }
            let penalty = if a > self.all_pairs_feature() {
                pair_alpha
            } else {
                alpha
            };
            system[a * p + a] += n * penalty;
        }
        let rhs: Vec<f64> = (0..p)
            .map(|a| self.cross[a] - self.sums[a] * mean)
            .collect();
        if let Some(factor) = Cholesky::new_owned(system, p) {
            self.weights = factor.solve(&rhs);
            self.intercept = mean
                - self
                    .weights
                    .iter()
                    .zip(&self.sums)
                    .map(|(w, s)| w * s / n)
                    .sum::<f64>();
        } else {
            // Only a guide to which masks to measure next: the last fit still serves.
            tracing::debug!(
                "adaptive removal's surrogate: the ridge system of {p} features is singular or \
                 too ill-conditioned to solve; the previous fit is kept"
            );
        }
    }

    fn predict(&self, set: &[usize]) -> f64 {
        self.intercept
            + self
                .features(set)
                .into_iter()
                .map(|(index, x)| self.weights[index] * x)
                .sum::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_neighbours_are_every_one_swap_set() {
        let swaps = swap_neighbours(&[1, 3], &[0, 1, 2, 3]);
        assert_eq!(swaps, vec![vec![0, 3], vec![2, 3], vec![0, 1], vec![1, 2]]);
    }

    /// The situation after the singles and the leave-one-out plan: blocks 2 and 9 were
    /// removed together in the one larger set measured, which cost more than its singles' sum.
    /// That excess is what removing several blocks costs anywhere, so it must not make the
    /// pair (2, 9) look worse than (2, 12), which nothing says anything about (both pairs are
    /// farther apart than the distance terms reach, and 9 and 12 cost the same alone).
    #[test]
    fn the_excess_of_one_larger_set_is_not_blamed_on_its_own_pairs() {
        let options = AdaptiveOptions::with_budget(100);
        let mut surrogate = RemovalSurrogate::new(16, options.distance_features);
        let single = |b: usize| -0.01 * (1 + b % 3) as f64;
        for b in 0..16 {
            surrogate.add(&[b], single(b), 1.0);
        }
        let plan = [2, 9, 14];
        let excess = -0.2;
        let measured = plan.iter().map(|&b| single(b)).sum::<f64>() + excess;
        surrogate.add(&plan, measured, 1.0);
        surrogate.solve(options.ridge_alpha, options.pair_ridge_alpha);
        assert_eq!(single(9), single(12));
        let (seen, unseen) = (surrogate.predict(&[2, 9]), surrogate.predict(&[2, 12]));
        assert!(
            (seen - unseen).abs() < 0.01 * excess.abs(),
            "(2, 9) predicted {seen}, (2, 12) {unseen}"
        );
        // The excess is kept, as what larger sets cost: the plan is still predicted as measured.
        assert!((surrogate.predict(&plan) - measured).abs() < 0.05 * excess.abs());
    }

    #[test]
    fn costs_are_counted_like_sleb() {
        assert_eq!(sleb_cost(30, 3), 87);
        assert_eq!(sleb_cost(30, 9), 234);
        assert_eq!(adaptive_min_budget(30, 9), 39);
    }

    /// At k = 1 the least budget (players + 1) is above SLEB's cost, but only the singles can
    /// be asked for: the log shows the budget it can spend (it said "4 of 5 evaluations", as if
    /// one were left to spend), and the evaluations counted stay what was spent.
    #[test]
    fn the_log_shows_the_budget_it_can_spend() {
        let (n, k) = (4, 1);
        let mut game = layerprune_shapley::synthetic::TripleGame::layer_pruning_like(n, 1);
        let options = AdaptiveOptions::with_budget(adaptive_min_budget(n, k));
        assert_eq!(options.budget, sleb_cost(n, k) + 1);
        let mut result = None;
        let text = layerprune_tests::logged_at(tracing::Level::INFO, || {
            result = Some(adaptive_removal(&mut game, k, &[], &options).unwrap());
        });
        assert_eq!(result.unwrap().llm_evaluations, 4);
        assert!(
            text.contains(
                "adaptive: k=1, done (the best plans are local optima): 0 swaps accepted, 4 of 4 \
                 evaluations"
            ),
            "{text}"
        );
        assert!(!text.contains("of 5 evaluations"), "{text}");
        // Where sets of several blocks can be asked for, the budget up to the singles, the
        // greedy path's sets below k and every set of k.
        assert_eq!(spendable(5, 3, 2), 5);
        assert_eq!(spendable(1000, 4, 2), 4 + 6);
        assert_eq!(spendable(1000, 6, 3), 6 + 5 + 20);
        assert_eq!(spendable(usize::MAX, 10_000, 10_000), usize::MAX);
        // A bound that holds: a budget no run can reach spends at most that many.
        for (n, k) in [(6, 2), (6, 3), (7, 4)] {
            let mut game = layerprune_shapley::synthetic::TripleGame::layer_pruning_like(n, 3);
            let options = AdaptiveOptions::with_budget(100_000);
            let mut result = None;
            let text = layerprune_tests::logged_at(tracing::Level::INFO, || {
                result = Some(adaptive_removal(&mut game, k, &[], &options).unwrap());
            });
            let spent = result.unwrap().llm_evaluations;
            let bound = spendable(options.budget, n, k);
            assert!(spent <= bound, "n={n} k={k}: {spent} of {bound}");
            assert!(text.contains(&format!("of {bound} evaluations")), "{text}");
        }
    }
}
