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
//!
//! A ratio measured on a few thousand calibration tokens is itself uncertain: on SmolLM2 at
//! R = 1.5 the plan chosen measured 1.491, and its interval over the ten windows ran from 1.42
//! to 1.57 (docs/results.md). A user who needs the target met on text like the calibration
//! text, not only on this draw of it, asks for a margin: [`RatioTarget::standard_errors`] z
//! makes "within" NLL increase + z · its standard error ≤ ln R, the standard error paired over
//! the calibration windows ([`crate::margin::paired_standard_error`]), read from the game's
//! per-window values at no evaluation ([`Game::window_values`]). It is not a guarantee on other
//! kinds of text: a domain the calibration windows do not sample can move the ratio either way.

use layerprune_core::{CachedGame, CountingGame, Game, Mask};

use crate::frontier::Budget;
use crate::margin::paired_standard_error;
use crate::{
    adaptive_min_budget, adaptive_removal, removable_blocks, sleb, AdaptiveOptions, Race,
    SelectionError,
};

/// What `--max-ppl-ratio` asks of a plan: a calibration perplexity within `max_ppl_ratio` times
/// the full model's, by `standard_errors` standard errors of its NLL increase over the
/// calibration windows (0: the measured ratio itself; see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RatioTarget {
    pub max_ppl_ratio: f64,
    pub standard_errors: f64,
}

impl std::fmt::Display for RatioTarget {
    /// "a perplexity ratio of 1.5", with " by 2 standard errors" when there is a margin.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a perplexity ratio of {}", self.max_ppl_ratio)?;
        if self.standard_errors > 0.0 {
            write!(f, " by {} standard errors", self.standard_errors)?;
        }
        Ok(())
    }
}

impl RatioTarget {
    /// The measured ratio within `max_ppl_ratio`, no margin.
    pub fn new(max_ppl_ratio: f64) -> Self {
        RatioTarget {
            max_ppl_ratio,
            standard_errors: 0.0,
        }
    }

    fn check(&self) -> Result<(), SelectionError> {
        if !(self.max_ppl_ratio.is_finite() && self.max_ppl_ratio > 1.0) {
            return Err(SelectionError::BadOption(format!(
                "the perplexity ratio must be a number above 1 (the full model's is 1); got {}",
                self.max_ppl_ratio
            )));
        }
        if !(self.standard_errors.is_finite() && self.standard_errors >= 0.0) {
            return Err(SelectionError::BadOption(format!(
                "the perplexity ratio's margin must be a number of standard errors, 0 or more; \
                 got {}",
                self.standard_errors
            )));
        }
        Ok(())
    }

    /// Whether an NLL increase `loss` with standard error `se` meets the target (a NaN loss, a
    /// diverged model, never does; without a margin the standard error plays no part).
    fn met(&self, loss: f64, se: Option<f64>) -> bool {
        let margin = match se {
            Some(se) if self.standard_errors > 0.0 => self.standard_errors * se,
            _ => 0.0,
        };
        loss + margin <= self.max_ppl_ratio.ln()
    }
}

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
    /// The standard error of its NLL increase over the full model, paired over the calibration
    /// windows; `None` where the game has no per-window values.
    pub nll_increase_se: Option<f64>,
    /// The target is met: `ppl_ratio` ≤ the ratio, by the margin asked for.
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

/// SLEB as [`largest_within`]'s plan chooser (raced with `race`): its plan for k, and the
/// value it measured there.
pub fn sleb_chooser<'a>(
    fixed: &'a [usize],
    race: Option<&'a Race>,
) -> impl FnMut(&mut dyn Game, usize) -> PlanOf + 'a {
    move |game, k| {
        let result = sleb(game, k, fixed, race)?;
        Ok((result.removed_blocks(k), result.values_after[k - 1]))
    }
}

/// Adaptive removal as [`largest_within`]'s plan chooser, with `budget` for each k tried
/// (raced with `race`).
pub fn adaptive_chooser<'a>(
    fixed: &'a [usize],
    budget: Budget,
    race: Option<&'a Race>,
) -> impl FnMut(&mut dyn Game, usize) -> PlanOf + 'a {
    move |game, k| {
        let players = removable_blocks(game.num_players(), fixed, k)?.len();
        // A number of evaluations fixed by the user may be below what a larger k the search
        // probes needs at least: that probe gets the least, rather than ending the search.
        let asked = budget.resolve(players, k);
        let least = adaptive_min_budget(players, k);
        if asked < least {
            tracing::info!(
                "target: k={k}: the budget of {asked} evaluations is below the least adaptive \
                 removal takes at this k; {least} used"
            );
        }
        let options = AdaptiveOptions {
            race: race.copied(),
            ..AdaptiveOptions::with_budget(asked.max(least))
        };
        let result = adaptive_removal(game, k, fixed, &options)?;
        Ok((result.removed_blocks, result.value))
    }
}

/// The largest k among the removable blocks (not the `fixed` ones) whose plan by `plan_for`
/// meets `target` (the game's value within ln(`max_ppl_ratio`) of the full model's, by the
/// margin asked for); see the module documentation. `plan_for(game, k)` returns a plan's removed
/// blocks and its measured value, and is given the search's cached game, so what one probe
/// measured is free for the next. A margin needs the game's per-window values
/// ([`Game::window_values`]) of every plan probed; a game without them is refused.
pub fn largest_within(
    game: &mut dyn Game,
    fixed: &[usize],
    target: &RatioTarget,
    plan_for: &mut PlanFor<'_>,
) -> Result<TargetSearch, SelectionError> {
    target.check()?;
    let num_blocks = game.num_players();
    let players = removable_blocks(num_blocks, fixed, 1)?;
    // Every k below the number of removable blocks may be asked for (removable_blocks' rule).
    let k_max = players.len() - 1;
    let allowed_loss = target.max_ppl_ratio.ln();
    // Counted in front of the cache, as every method is: a mask measured on some windows only
    // (a race dropped it) costs its share of the windows.
    let mut cached = CountingGame::new(CachedGame::new(game));

    let mut masks = vec![Mask::full(num_blocks)];
    for &block in &players {
        masks.push(
            Mask::from_removed(num_blocks, &[block]).map_err(|e| SelectionError::Game(e.into()))?,
        );
    }
    let values = layerprune_core::values_checked(&mut cached, &masks)?;
    let full_value = values[0];
    // Every ratio is to the full model's perplexity: with it infinite (an NLL of +∞, value −∞)
    // every loss is −∞ and every plan would be "within", the most blocks removed chosen.
    if !full_value.is_finite() {
        return Err(SelectionError::NothingWithin(format!(
            "the full model's calibration NLL is {} (it collapses with no block removed), so \
             no perplexity ratio to it can be measured: check the model and the tokens",
            -full_value
        )));
    }
    let mut single_losses: Vec<(f64, usize)> = players
        .iter()
        .zip(&values[1..])
        // A diverged single removal (NaN, of either sign) costs the most: it goes last, where
        // `total_cmp` would put a negative NaN first.
        .map(|(&block, &value)| {
            let loss = full_value - value;
            (if loss.is_nan() { f64::INFINITY } else { loss }, block)
        })
        .collect();
    single_losses.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    // The standard error of a measured plan's NLL increase, paired over the windows (the full
    // model's read once); required when the target has a margin.
    let full_windows = cached.window_values(&masks[0]);
    let increase_se = |game: &dyn Game, removed: &[usize]| -> Result<Option<f64>, SelectionError> {
        let mask =
            Mask::from_removed(num_blocks, removed).map_err(|e| SelectionError::Game(e.into()))?;
        let se = full_windows
            .as_deref()
            .zip(game.window_values(&mask))
            .and_then(|(full, plan)| paired_standard_error(full, &plan));
        if se.is_none() && target.standard_errors > 0.0 {
            return Err(SelectionError::BadOption(format!(
                "a perplexity ratio with a margin of standard errors needs each calibration \
                 window's value of every plan probed, at least two windows, and the game has \
                 none (or one) for the plan removing blocks {removed:?} (an evaluation cache \
                 written before tables kept windows has none: remove it)"
            )));
        }
        Ok(se)
    };
    let probe_of = |k: usize,
                    removed_blocks: Vec<usize>,
                    value: f64,
                    nll_increase_se: Option<f64>,
                    evaluations: usize| {
        let loss = full_value - value;
        TargetProbe {
            k,
            removed_blocks,
            value,
            ppl_ratio: loss.exp(),
            nll_increase_se,
            within: target.met(loss, nll_increase_se),
            llm_evaluations: evaluations,
        }
    };

    // Not even the least harmful block can go alone: no plan, and the probe that says why.
    let (least_loss, least_block) = single_losses[0];
    let least_se = increase_se(&cached, &[least_block])?;
    if !target.met(least_loss, least_se) {
        let probe = probe_of(
            1,
            vec![least_block],
            full_value - least_loss,
            least_se,
            cached.evaluations(),
        );
        tracing::info!(
            "target: no block can go within {target}: the least harmful single removal (block \
             {least_block}) gives {:.4}",
            probe.ppl_ratio
        );
        return Ok(TargetSearch {
            full_value,
            probes: vec![probe],
            chosen: None,
            llm_evaluations: cached.evaluations(),
        });
    }

    // The first guess: as many blocks as the sum of the smallest single losses allows (less
    // the least harmful single's margin, a lower bound on a larger plan's).
    let guess_allowance = allowed_loss - target.standard_errors * least_se.unwrap_or(0.0);
    let mut sum = 0.0;
    let guess = single_losses
        .iter()
        .take_while(|(loss, _)| {
            sum += loss;
            sum <= guess_allowance
        })
        .count()
        .clamp(1, k_max.max(1));

    let mut probes: Vec<TargetProbe> = Vec::new();
    let mut probe = |k: usize| -> Result<bool, SelectionError> {
        let (removed, value) = plan_for(&mut cached, k)?;
        let se = increase_se(&cached, &removed)?;
        let probe = probe_of(k, removed, value, se, cached.evaluations());
        tracing::info!(
            "target: k={k}: blocks {:?}, perplexity ratio {:.4}{} ({}), {} evaluations so far",
            probe.removed_blocks,
            probe.ppl_ratio,
            probe
                .nll_increase_se
                .map(|se| format!(", standard error of the NLL increase {se:.4}"))
                .unwrap_or_default(),
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
    let chosen_k = match chosen_k {
        Some(k) => k,
        None => {
            // The method's one-block plan is over the target, but the least harmful single,
            // measured above, is within it (a race can drop it on its first windows): that is
            // the plan.
            probes.push(probe_of(
                1,
                vec![least_block],
                full_value - least_loss,
                least_se,
                cached.evaluations(),
            ));
            1
        }
    };
    let chosen = probes.iter().rposition(|p| p.k == chosen_k && p.within);
    Ok(TargetSearch {
        full_value,
        probes,
        chosen,
        llm_evaluations: cached.evaluations(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use layerprune_core::CountingGame;

    /// −(sum of the removed blocks' losses) − `pair` for every pair of removed blocks: the
    /// interactions make the sum of single losses an underestimate, as in the LLMs measured.
    #[derive(Clone)]
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

    /// A [`PairGame`] measured on four windows, the NLL increase on window w being the mean
    /// one times `FACTORS[w]`: the standard error of a plan's increase is `SE_PER_LOSS` × its
    /// loss.
    struct WindowedPairGame(PairGame);

    const FACTORS: [f64; 4] = [0.5, 1.0, 1.5, 1.0];
    /// sd(FACTORS) / √4 = √(1/6) / 2.
    const SE_PER_LOSS: f64 = 0.204_124_145_231_931_5;

    impl Game for WindowedPairGame {
        fn num_players(&self) -> usize {
            self.0.num_players()
        }
        fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, layerprune_core::GameError> {
            self.0.values(masks)
        }
        fn window_values(&self, mask: &Mask) -> Option<Vec<f64>> {
            let value = self.0.clone().value(mask).ok()?;
            Some(FACTORS.iter().map(|f| value * f).collect())
        }
    }

    /// [`largest_within`] with SLEB choosing the plans, no fixed block.
    fn by_sleb(game: &mut dyn Game, target: &RatioTarget) -> Result<TargetSearch, SelectionError> {
        largest_within(game, &[], target, &mut sleb_chooser(&[], None))
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

    /// A method whose plans are all over the target (as a race can make one miss the best single
    /// on its first windows) still gets the least harmful single, which the search measured and
    /// found within, as the one-block plan; and its cost counts every mask asked for.
    #[test]
    fn a_method_that_misses_the_best_single_falls_back_to_it() {
        let mut truth = game();
        let mut counting = CountingGame::new(&mut truth as &mut dyn Game);
        // The worst blocks first: block 7 alone loses 1.2 nats.
        let mut worst_first = |game: &mut dyn Game, k: usize| -> PlanOf {
            let removed: Vec<usize> = [7, 0, 5, 4, 2, 1, 6][..k].to_vec();
            let mut sorted = removed.clone();
            sorted.sort_unstable();
            let mask = Mask::from_removed(8, &sorted).unwrap();
            Ok((sorted, game.values(&[mask])?[0]))
        };
        let search = largest_within(
            &mut counting,
            &[],
            &RatioTarget::new(1.05),
            &mut worst_first,
        )
        .unwrap();
        let chosen = search.chosen().expect("the least harmful single is within");
        assert_eq!((chosen.k, chosen.removed_blocks.clone()), (1, vec![3]));
        assert!(chosen.within && chosen.ppl_ratio <= 1.05);
        assert_eq!(search.llm_evaluations, counting.evaluations());
    }

    /// A number of evaluations too small for the larger k the search probes: those probes get
    /// the least adaptive removal takes there, and the search goes on (it ended with an error).
    #[test]
    fn a_fixed_budget_below_a_probe_s_least_is_raised_for_that_probe() {
        use crate::frontier::Budget;
        let mut truth = game();
        let mut chooser = adaptive_chooser(&[], Budget::Evaluations(9), None);
        let search = largest_within(&mut truth, &[], &RatioTarget::new(3.0), &mut chooser).unwrap();
        let chosen = search.chosen().expect("within at some k");
        assert!(chosen.k > 1, "{search:?}");
        assert!(chosen.within);
    }

    #[test]
    fn the_chosen_k_is_the_largest_within_and_the_next_is_over() {
        for ratio in [1.05, 1.2, 1.5, 2.0, 3.0, 10.0] {
            let mut truth = game();
            let expected = largest_k(&truth, ratio);
            let mut counting = CountingGame::new(&mut truth as &mut dyn Game);
            let search = by_sleb(&mut counting, &RatioTarget::new(ratio)).unwrap();
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

    /// The largest k whose best plan's loss, widened by `z` standard errors, is within.
    fn largest_k_by(game: &PairGame, ratio: f64, z: f64) -> usize {
        let mut losses = game.losses.clone();
        losses.sort_by(f64::total_cmp);
        (1..losses.len())
            .filter(|&k| {
                let n = k as f64;
                let loss = losses[..k].iter().sum::<f64>() + game.pair * n * (n - 1.0) / 2.0;
                loss * (1.0 + z * SE_PER_LOSS) <= ratio.ln()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_margin_of_standard_errors_removes_fewer_blocks_where_the_windows_disagree() {
        let mut found_fewer = false;
        for ratio in [1.2, 1.5, 2.0, 3.0] {
            let plain = largest_k(&game(), ratio);
            for z in [0.0, 1.0, 2.0, 3.0] {
                let mut windowed = WindowedPairGame(game());
                let mut counting = CountingGame::new(&mut windowed as &mut dyn Game);
                let target = RatioTarget {
                    max_ppl_ratio: ratio,
                    standard_errors: z,
                };
                let search = by_sleb(&mut counting, &target).unwrap();
                let expected = largest_k_by(&game(), ratio, z);
                assert!(expected <= plain);
                found_fewer |= expected < plain;
                let chosen = search.chosen().expect("the best single is within");
                assert_eq!(chosen.k, expected, "ratio {ratio}, z {z}: {search:?}");
                // Every probe has its paired standard error, and "within" is judged with it.
                for probe in &search.probes {
                    let loss = probe.ppl_ratio.ln();
                    let se = probe.nll_increase_se.unwrap();
                    assert!((se - SE_PER_LOSS * loss).abs() < 1e-12, "{probe:?}");
                    assert_eq!(probe.within, loss + z * se <= ratio.ln(), "{probe:?}");
                }
            }
        }
        assert!(found_fewer, "no ratio where the margin mattered");
        // A margin no single removal meets: no plan, and the least harmful single says why.
        let target = RatioTarget {
            max_ppl_ratio: 1.05,
            standard_errors: 1e3,
        };
        let mut windowed = WindowedPairGame(game());
        let search = by_sleb(&mut windowed, &target).unwrap();
        assert_eq!(search.chosen, None);
        assert_eq!(search.probes[0].removed_blocks, vec![3]);
        assert!(search.probes[0].nll_increase_se.unwrap() > 0.0);
        assert_eq!(
            target.to_string(),
            "a perplexity ratio of 1.05 by 1000 standard errors"
        );
    }

    #[test]
    fn a_margin_needs_the_windows_and_a_number_of_standard_errors() {
        // A game without windows: the measured ratio alone is fine, a margin is refused.
        let mut truth = game();
        let search = by_sleb(&mut truth, &RatioTarget::new(1.5)).unwrap();
        assert!(search.probes.iter().all(|p| p.nll_increase_se.is_none()));
        let target = RatioTarget {
            max_ppl_ratio: 1.5,
            standard_errors: 2.0,
        };
        let err = by_sleb(&mut truth, &target).unwrap_err();
        assert!(err.to_string().contains("each calibration window"), "{err}");
        for z in [-1.0, f64::NAN, f64::INFINITY] {
            let target = RatioTarget {
                max_ppl_ratio: 1.5,
                standard_errors: z,
            };
            let err = by_sleb(&mut truth, &target).unwrap_err();
            assert!(
                err.to_string().contains("standard errors, 0 or more"),
                "{err}"
            );
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
        let search = by_sleb(&mut truth, &RatioTarget::new(ratio)).unwrap();
        let ks: Vec<usize> = search.probes.iter().map(|p| p.k).collect();
        assert_eq!(ks, vec![5, 4, 3, 2]);
        assert_eq!(search.chosen().unwrap().removed_blocks, vec![0, 1]);
        // SLEB's path to k = 5 holds every shorter plan: the full model and its 6 + 5 + 4 + 3 + 2
        // candidates, nothing more for the probes below it.
        assert_eq!(search.llm_evaluations, 1 + 6 + 5 + 4 + 3 + 2);
    }

    /// A full model that collapses (an NLL of +∞, or NaN) has no perplexity to take a ratio
    /// to: refused (every loss was −∞, every plan "within", and the most blocks removed chosen).
    #[test]
    fn a_collapsed_full_model_is_refused() {
        struct Collapsed(PairGame, f64);
        impl Game for Collapsed {
            fn num_players(&self) -> usize {
                self.0.num_players()
            }
            fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, layerprune_core::GameError> {
                let values = self.0.values(masks)?;
                Ok(masks
                    .iter()
                    .zip(values)
                    .map(|(m, v)| if m.num_removed() == 0 { self.1 } else { v })
                    .collect())
            }
        }
        for full in [f64::NEG_INFINITY, f64::NAN] {
            let err = by_sleb(&mut Collapsed(game(), full), &RatioTarget::new(1.5)).unwrap_err();
            assert!(
                err.to_string().contains("collapses with no block removed"),
                "{err}"
            );
        }
    }

    #[test]
    fn no_block_within_the_target_is_a_result_not_an_error() {
        let mut truth = game();
        let search = by_sleb(&mut truth, &RatioTarget::new(1.01)).unwrap();
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
        let mut adaptive = adaptive_chooser(&[3], Budget::Evaluations(200), None);
        let search =
            largest_within(&mut truth, &[3], &RatioTarget::new(1.5), &mut adaptive).unwrap();
        assert!(search.probes.iter().all(|p| !p.removed_blocks.contains(&3)));
        let chosen = search.chosen().unwrap();
        // Without block 3 the smallest losses are 0.04, 0.05, 0.1: k = 3 costs 0.19 + 3 × 0.03.
        assert_eq!(chosen.removed_blocks, vec![1, 2, 6]);
        for ratio in [1.0, 0.5, f64::NAN, f64::INFINITY] {
            let err = by_sleb(&mut truth, &RatioTarget::new(ratio)).unwrap_err();
            assert!(err.to_string().contains("above 1"), "{err}");
        }
    }
}
