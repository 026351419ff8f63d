//! The most blocks that can go within a quality target: `apply-prune --max-ppl-ratio R` asks
//! for the largest k whose plan keeps the calibration perplexity within R times the full
//! model's, instead of a k the user has to guess.
//!
//! A user rarely knows k; they know how much quality they can give away. The search probes k
//! with a plan-choosing method (adaptive removal or SLEB, any `FnMut(game, k)` here) and stops at
//! the boundary: a k whose plan is within the target and a k + 1 whose plan is not (or no k + 1
//! to remove). It assumes what held on every model measured here, that the best plan's loss
//! grows with k, so the first boundary found is the answer.
//!
//! Where the probing starts costs nothing extra: every method here measures the full model's
//! neighbours first (each block removed alone), and the sum of the k smallest single losses is
//! a guess at the k-block plan's loss. Interactions between removed blocks make several removals
//! cost more than their sum (on SmolLM2 and Gemma 3 270M), so the guess errs high and the search
//! then walks down (on those models it was the answer in 7 of 8 searches, one block high in the
//! other); it walks up from a guess that is within. Every probe runs through one cache, so the
//! singles, the full model and a greedy path's shared prefix are paid for once; the cost
//! reported is every distinct mask the search asked for.
//!
//! Perplexity is exp(NLL), so "within R" is NLL(plan) − NLL(full) ≤ ln R: the game's values are
//! −NLL, as everywhere in this crate.

use layerprune_core::{CachedGame, Game, Mask};

use crate::frontier::Budget;
use crate::{adaptive_removal, removable_blocks, sleb, AdaptiveOptions, SelectionError};

/// One k tried: the plan the method chose there, and whether it met the target.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetProbe {
    pub k: usize,
    /// The plan's removed blocks, ascending.
    pub removed_blocks: Vec<usize>,
    /// Its measured value (−NLL).
    pub value: f64,
    /// Its calibration perplexity over the full model's: exp(full value − value).
    pub ppl_ratio: f64,
    /// `ppl_ratio` ≤ the target.
    pub within: bool,
    /// Distinct masks the whole search had asked for after this probe.
    pub llm_evaluations: usize,
}

/// The result of [`largest_within`].
#[derive(Clone, Debug, PartialEq)]
pub struct TargetSearch {
    /// The full model's value (−NLL).
    pub full_value: f64,
    /// Every k probed, in the order probed.
    pub probes: Vec<TargetProbe>,
    /// The probe with the most blocks removed within the target: index into `probes`. `None`
    /// when no single block can go (then `probes` holds the least harmful single removal).
    pub chosen: Option<usize>,
    /// Distinct masks asked for, the full model and every probe's included.
    pub llm_evaluations: usize,
}

impl TargetSearch {
    /// The chosen plan.
    pub fn chosen(&self) -> Option<&TargetProbe> {
        self.chosen.map(|i| &self.probes[i])
    }
}

/// A plan chooser's answer: the removed blocks, ascending, and the plan's measured value.
pub type PlanOf = Result<(Vec<usize>, f64), SelectionError>;

/// A plan-choosing method for [`largest_within`] (e.g. [`sleb_chooser`], [`adaptive_chooser`]):
/// `(game, k)` to its plan with k removed.
pub type PlanFor<'a> = dyn FnMut(&mut dyn Game, usize) -> PlanOf + 'a;

/// SLEB as [`largest_within`]'s plan chooser: its plan for k, and the value it measured there.
pub fn sleb_chooser(fixed: &[usize]) -> impl FnMut(&mut dyn Game, usize) -> PlanOf + '_ {
    move |game, k| {
        let result = sleb(game, k, fixed)?;
        Ok((result.removed_blocks(k), result.values_after[k - 1]))
    }
}

/// Adaptive removal as [`largest_within`]'s plan chooser, with `budget` for each k tried.
pub fn adaptive_chooser(
    fixed: &[usize],
    budget: Budget,
) -> impl FnMut(&mut dyn Game, usize) -> PlanOf + '_ {
    move |game, k| {
        let players = removable_blocks(game.num_players(), fixed, k)?.len();
        let options = AdaptiveOptions::with_budget(budget.resolve(players, k));
        let result = adaptive_removal(game, k, fixed, &options)?;
        Ok((result.removed_blocks, result.value))
    }
}

/// The largest k among the removable blocks (not the `fixed` ones) whose plan by `plan_for`
/// keeps the game's value within ln(`max_ppl_ratio`) of the full model's; see the module
/// documentation. `plan_for(game, k)` returns a plan's removed blocks and its measured value, and
/// is given the search's cached game, so what one probe measured is free for the next.
pub fn largest_within(
    game: &mut dyn Game,
    fixed: &[usize],
    max_ppl_ratio: f64,
    plan_for: &mut PlanFor<'_>,
) -> Result<TargetSearch, SelectionError> {
    if !(max_ppl_ratio.is_finite() && max_ppl_ratio > 1.0) {
        return Err(SelectionError::BadOption(format!(
            "the perplexity ratio must be a number above 1 (the full model's is 1); got {max_ppl_ratio}"
        )));
    }
    let num_blocks = game.num_players();
    let players = removable_blocks(num_blocks, fixed, 1)?;
    // Every k below the number of removable blocks may be asked for (removable_blocks' rule).
    let k_max = players.len() - 1;
    let allowed_loss = max_ppl_ratio.ln();
    let mut cached = CachedGame::new(game);

    let mut masks = vec![Mask::full(num_blocks)];
    for &block in &players {
        masks.push(
            Mask::from_removed(num_blocks, &[block]).map_err(|e| SelectionError::Game(e.into()))?,
        );
    }
    let values = layerprune_core::values_checked(&mut cached, &masks)?;
    let full_value = values[0];
    let mut single_losses: Vec<(f64, usize)> = players
        .iter()
        .zip(&values[1..])
        .map(|(&block, &value)| (full_value - value, block))
        .collect();
    single_losses.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let probe_of = |k: usize, removed_blocks: Vec<usize>, value: f64, evaluations: usize| {
        let loss = full_value - value;
        TargetProbe {
            k,
            removed_blocks,
            value,
            ppl_ratio: loss.exp(),
            within: loss <= allowed_loss,
            llm_evaluations: evaluations,
        }
    };

    // Not even the least harmful block can go alone: no plan, and the probe that says why.
    let (least_loss, least_block) = single_losses[0];
    // A NaN loss (a diverged model) is never within.
    if least_loss.is_nan() || least_loss > allowed_loss {
        let probe = probe_of(1, vec![least_block], full_value - least_loss, cached.len());
        tracing::info!(
            "target: no block can go within a perplexity ratio of {max_ppl_ratio}: the least \
             harmful single removal (block {least_block}) gives {:.4}",
            probe.ppl_ratio
        );
        return Ok(TargetSearch {
            full_value,
            probes: vec![probe],
            chosen: None,
            llm_evaluations: cached.len(),
        });
    }

    // The first guess: as many blocks as the sum of the smallest single losses allows.
    let mut sum = 0.0;
    let guess = single_losses
        .iter()
        .take_while(|(loss, _)| {
            sum += loss;
            sum <= allowed_loss
        })
        .count()
        .clamp(1, k_max.max(1));

    let mut probes: Vec<TargetProbe> = Vec::new();
    let mut probe = |k: usize| -> Result<bool, SelectionError> {
        let (removed, value) = plan_for(&mut cached, k)?;
        let probe = probe_of(k, removed, value, cached.len());
        tracing::info!(
            "target: k={k}: blocks {:?}, perplexity ratio {:.4} ({}), {} evaluations so far",
            probe.removed_blocks,
            probe.ppl_ratio,
            if probe.within { "within" } else { "over" },
            probe.llm_evaluations
        );
        let within = probe.within;
        probes.push(probe);
        Ok(within)
    };
    let chosen_k = if probe(guess)? {
        // Up while the next k is within.
        let mut k = guess;
        while k < k_max && probe(k + 1)? {
            k += 1;
        }
        Some(k)
    } else {
        // Down until a k is within (k = 1 is, unless the method misses the best single).
        let mut k = guess;
        loop {
            if k == 1 {
                break None;
            }
            k -= 1;
            if probe(k)? {
                break Some(k);
            }
        }
    };
    let chosen = chosen_k.and_then(|k| probes.iter().position(|p| p.k == k && p.within));
    Ok(TargetSearch {
        full_value,
        probes,
        chosen,
        llm_evaluations: cached.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use layerprune_core::CountingGame;

    /// −(sum of the removed blocks' losses) − `pair` for every pair of removed blocks: the
    /// interactions make the sum of single losses an underestimate, as in the LLMs measured.
    struct PairGame {
        losses: Vec<f64>,
        pair: f64,
    }

    impl Game for PairGame {
        fn num_players(&self) -> usize {
            self.losses.len()
        }
        fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, layerprune_core::GameError> {
            Ok(masks
                .iter()
                .map(|mask| {
                    let removed = mask.removed_blocks();
                    let n = removed.len() as f64;
                    -removed.iter().map(|&b| self.losses[b]).sum::<f64>()
                        - self.pair * n * (n - 1.0) / 2.0
                })
                .collect())
        }
    }

    fn game() -> PairGame {
        PairGame {
            losses: vec![0.9, 0.05, 0.1, 0.02, 0.3, 0.5, 0.04, 1.2],
            pair: 0.03,
        }
    }

    /// The true answer: the largest k whose best plan (the k smallest losses, since the pair
    /// term depends on k only) is within.
    fn largest_k(game: &PairGame, ratio: f64) -> usize {
        let mut losses = game.losses.clone();
        losses.sort_by(f64::total_cmp);
        (1..losses.len())
            .filter(|&k| {
                let n = k as f64;
                losses[..k].iter().sum::<f64>() + game.pair * n * (n - 1.0) / 2.0 <= ratio.ln()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn the_chosen_k_is_the_largest_within_and_the_next_is_over() {
        for ratio in [1.05, 1.2, 1.5, 2.0, 3.0, 10.0] {
            let mut truth = game();
            let expected = largest_k(&truth, ratio);
            let mut counting = CountingGame::new(&mut truth as &mut dyn Game);
            let search = largest_within(&mut counting, &[], ratio, &mut sleb_chooser(&[])).unwrap();
            let chosen = search.chosen().expect("the best single is within");
            assert_eq!(chosen.k, expected, "ratio {ratio}: {search:?}");
            assert!(chosen.within && chosen.ppl_ratio <= ratio);
            // The boundary was seen: k + 1 probed and over, unless k + 1 cannot be asked for.
            if expected + 1 < 8 {
                let next = search.probes.iter().find(|p| p.k == expected + 1).unwrap();
                assert!(!next.within, "ratio {ratio}: {search:?}");
            }
            // The cost is every distinct mask asked of the game, once.
            assert_eq!(search.llm_evaluations, counting.evaluations());
        }
    }

    #[test]
    fn an_overshooting_guess_walks_down_and_the_probes_share_their_masks() {
        // Strong interactions: the sum of single losses allows 5 blocks, the plan only 2.
        let mut truth = PairGame {
            losses: vec![0.01, 0.02, 0.03, 0.04, 0.05, 2.0],
            pair: 0.1,
        };
        let ratio = 0.2f64.exp();
        assert_eq!(largest_k(&truth, ratio), 2);
        let search = largest_within(&mut truth, &[], ratio, &mut sleb_chooser(&[])).unwrap();
        let ks: Vec<usize> = search.probes.iter().map(|p| p.k).collect();
        assert_eq!(ks, vec![5, 4, 3, 2]);
        assert_eq!(search.chosen().unwrap().removed_blocks, vec![0, 1]);
        // SLEB's path to k = 5 holds every shorter plan: the full model and its 6 + 5 + 4 + 3 + 2
        // candidates, nothing more for the probes below it.
        assert_eq!(search.llm_evaluations, 1 + 6 + 5 + 4 + 3 + 2);
    }

    #[test]
    fn no_block_within_the_target_is_a_result_not_an_error() {
        let mut truth = game();
        let search = largest_within(&mut truth, &[], 1.01, &mut sleb_chooser(&[])).unwrap();
        assert_eq!(search.chosen, None);
        assert_eq!(search.probes.len(), 1);
        // The least harmful single removal, block 3, and its ratio.
        assert_eq!(search.probes[0].removed_blocks, vec![3]);
        assert!((search.probes[0].ppl_ratio - 0.02f64.exp()).abs() < 1e-12);
        assert_eq!(search.llm_evaluations, 1 + 8);
    }

    #[test]
    fn fixed_blocks_are_never_removed_and_bad_ratios_are_refused() {
        let mut truth = game();
        let mut adaptive = adaptive_chooser(&[3], Budget::Evaluations(200));
        let search = largest_within(&mut truth, &[3], 1.5, &mut adaptive).unwrap();
        assert!(search.probes.iter().all(|p| !p.removed_blocks.contains(&3)));
        let chosen = search.chosen().unwrap();
        // Without block 3 the smallest losses are 0.04, 0.05, 0.1: k = 3 costs 0.19 + 3 × 0.03.
        assert_eq!(chosen.removed_blocks, vec![1, 2, 6]);
        for ratio in [1.0, 0.5, f64::NAN, f64::INFINITY] {
            let err = largest_within(&mut truth, &[], ratio, &mut sleb_chooser(&[])).unwrap_err();
            assert!(err.to_string().contains("above 1"), "{err}");
        }
    }
}
