//! Racing: which of several masks is best, measured a few calibration windows at a time.
//!
//! Why: SLEB measures every candidate removal of a step on every calibration window, yet most
//! candidates are clearly worse than the best after two or three windows (removing an early
//! or a last block multiplies the perplexity). A race (Maron and Moore's Hoeffding races, with
//! the paired test of the calibration windows instead of Hoeffding's bound) measures every
//! candidate on the first windows, drops each one whose mean over the windows measured so far
//! is behind the leader's by more than [`Race::standard_errors`] standard errors of their
//! paired difference, measures the survivors on twice as many windows, and so on; the
//! survivors of the last round are measured on every window, and the step's choice is made
//! among them by their whole values, exactly as without racing. So the choice differs from
//! the unraced one only when the best candidate on all windows was dropped on fewer; on three
//! calibration sets of SmolLM2-135M and of Gemma 3 270M that happened at none of SLEB's 45
//! steps, for 53–69 % of its evaluations (docs/results.md, "Racing SLEB"). A candidate
//! measured on w of the W windows costs w / W of an LLM evaluation
//! ([`layerprune_core::CountingGame`]).

use layerprune_core::{Game, Mask};

use crate::SelectionError;

/// How a race drops candidates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Race {
    /// Windows every candidate is measured on before any is dropped (at least 2: a standard
    /// error needs two); each round after that doubles them.
    pub first_windows: usize,
    /// A candidate is dropped when its mean value over the windows measured is behind the
    /// leader's by more than this many standard errors of their paired difference.
    pub standard_errors: f64,
}

impl Default for Race {
    fn default() -> Self {
        // On 1,200 random games of 12 candidates with three spreads per window (the tests'
        // `WindowedGame`), 2 first windows dropped the best candidate in 1–12 of 400 games
        // per spread, 3 in none, at 0.42–0.59 of the unraced evaluations; fewer standard
        // errors (2.5) dropped it in 3 of 400 at the largest spread.
        Race {
            first_windows: 3,
            standard_errors: 3.0,
        }
    }
}

impl Race {
    /// Refuses settings that drop candidates without evidence.
    pub fn check(&self) -> Result<(), SelectionError> {
        if self.first_windows < 2 {
            return Err(SelectionError::BadOption(format!(
                "a race measures at least 2 windows before dropping a candidate (a standard \
                 error needs two), not {}",
                self.first_windows
            )));
        }
        if !(self.standard_errors.is_finite() && self.standard_errors > 0.0) {
            return Err(SelectionError::BadOption(format!(
                "a race drops a candidate a positive number of standard errors behind, not {}",
                self.standard_errors
            )));
        }
        Ok(())
    }
}

/// What a race learned about one mask.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Raced {
    /// Measured on every window: its value.
    Whole(f64),
    /// Dropped after the first `windows` windows. `estimate` is its paired estimate of the
    /// whole value: the best survivor's whole value plus the mask's mean difference from that
    /// survivor over those windows (the windows' shared difficulty cancels in the difference).
    Dropped { estimate: f64, windows: usize },
}

impl Raced {
    /// The whole value, or the estimate of a dropped mask.
    pub fn value_or_estimate(self) -> f64 {
        match self {
            Raced::Whole(value) => value,
            Raced::Dropped { estimate, .. } => estimate,
        }
    }

    /// The whole value, `None` when dropped.
    pub fn whole(self) -> Option<f64> {
        match self {
            Raced::Whole(value) => Some(value),
            Raced::Dropped { .. } => None,
        }
    }
}

/// The whole value of each of `masks` that survived the race (`None`: dropped); the race of
/// [`race_masks`] for the single best.
pub fn race_values(
    game: &mut dyn Game,
    masks: &[Mask],
    race: Option<&Race>,
) -> Result<Vec<Option<f64>>, SelectionError> {
    Ok(race_masks(game, masks, race, 1)?
        .into_iter()
        .map(Raced::whole)
        .collect())
}

/// Races `masks` for the `keep` best: a mask is dropped only when it is clearly behind the
/// `keep`-th best mean of the round (for `keep` = 1, the leader). Without a race, or on a game
/// that gives whole values only, or with no more windows than the first round, or with no more
/// masks than `keep`, every mask is valued whole. The `keep` best of every round survive it, so
/// at least `min(keep, masks)` do. A mask the game has already valued whole costs nothing to
/// race (its windows are kept), so a measured mask can stand in a race as the one to beat.
pub fn race_masks(
    game: &mut dyn Game,
    masks: &[Mask],
    race: Option<&Race>,
    keep: usize,
) -> Result<Vec<Raced>, SelectionError> {
    let keep = keep.max(1);
    let windows = game.num_windows().unwrap_or(0);
    let Some(race) = race.filter(|race| windows > race.first_windows && masks.len() > keep) else {
        let values = layerprune_core::values_checked(game, masks)?;
        return Ok(values.into_iter().map(Raced::Whole).collect());
    };
    race.check()?;
    let mut alive: Vec<usize> = (0..masks.len()).collect();
    // Each mask's values on the windows of the last round it was in.
    let mut measured: Vec<Vec<f64>> = vec![Vec::new(); masks.len()];
    let mut seen = race.first_windows;
    while seen < windows && alive.len() > keep {
        let asked: Vec<Mask> = alive.iter().map(|&i| masks[i].clone()).collect();
        let round = game.values_on_windows(&asked, 0..seen)?;
        if round.len() != asked.len() || round.iter().any(|v| v.len() != seen) {
            return Err(SelectionError::Game(
                format!("the game returned the wrong number of values on windows 0..{seen}").into(),
            ));
        }
        let survivors = survivors(&round, race.standard_errors, keep);
        for (&i, values) in alive.iter().zip(round) {
            measured[i] = values;
        }
        alive = survivors.into_iter().map(|j| alive[j]).collect();
        seen = (2 * seen).min(windows);
    }
    let asked: Vec<Mask> = alive.iter().map(|&i| masks[i].clone()).collect();
    let values = layerprune_core::values_checked(game, &asked)?;
    let mut whole: Vec<Option<f64>> = vec![None; masks.len()];
    for (&i, value) in alive.iter().zip(values) {
        whole[i] = Some(value);
    }
    // The dropped are estimated against the best survivor, which was in every round, so its
    // windows cover every dropped mask's (windows are always a prefix 0..seen).
    let best = alive
        .iter()
        .copied()
        .filter(|&i| whole[i].is_some_and(|v| !v.is_nan()))
        .max_by(|&a, &b| whole[a].unwrap().total_cmp(&whole[b].unwrap()));
    Ok((0..masks.len())
        .map(|i| match whole[i] {
            Some(value) => Raced::Whole(value),
            None => {
                let windows = measured[i].len();
                let estimate = best.map_or(f64::NAN, |b| {
                    let difference: f64 = measured[i]
                        .iter()
                        .zip(&measured[b])
                        .map(|(x, y)| x - y)
                        .sum::<f64>()
                        / windows as f64;
                    whole[b].unwrap() + difference
                });
                Raced::Dropped { estimate, windows }
            }
        })
        .collect())
}

/// The indices of the candidates (their values on the same windows) not dropped: the `keep`
/// best by mean (ties to the first) and each one whose mean is behind the `keep`-th best, the
/// reference, by at most `z` standard errors of their paired difference. A candidate's
/// standard error is its own or, where larger, the median of every candidate's: on two or
/// three windows a candidate's own estimate has one or two degrees of freedom and is often far
/// too small by chance, while the median rests on every candidate's windows (on SmolLM2-135M's
/// calibration sets the own estimate alone dropped SLEB's choice at one step of 27, the median
/// never; docs/selection.md, "Racing"). A candidate with a NaN value is dropped unless every
/// one has one.
fn survivors(measured: &[Vec<f64>], z: f64, keep: usize) -> Vec<usize> {
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let means: Vec<f64> = measured.iter().map(|v| mean(v)).collect();
    let mut ranked: Vec<usize> = (0..means.len()).filter(|&i| !means[i].is_nan()).collect();
    ranked.sort_by(|&a, &b| means[b].total_cmp(&means[a]).then(a.cmp(&b)));
    let Some(&reference) = ranked.get(keep.max(1) - 1).or(ranked.last()) else {
        return (0..measured.len()).collect();
    };
    let top = &ranked[..keep.max(1).min(ranked.len())];
    // Each candidate's standard error of its paired difference from the reference.
    let standard_errors: Vec<f64> = measured
        .iter()
        .map(|values| {
            let differences: Vec<f64> = measured[reference]
                .iter()
                .zip(values)
                .map(|(l, x)| l - x)
                .collect();
            let n = differences.len() as f64;
            let d = mean(&differences);
            let variance =
                differences.iter().map(|x| (x - d).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
            (variance / n).sqrt()
        })
        .collect();
    let mut others: Vec<f64> = (0..measured.len())
        .filter(|&i| i != reference && !standard_errors[i].is_nan())
        .map(|i| standard_errors[i])
        .collect();
    others.sort_by(f64::total_cmp);
    let median = match others.len() {
        0 => 0.0,
        n if n % 2 == 1 => others[n / 2],
        n => 0.5 * (others[n / 2 - 1] + others[n / 2]),
    };
    (0..measured.len())
        .filter(|&i| {
            top.contains(&i)
                || (!means[i].is_nan()
                    && means[reference] - means[i] <= z * standard_errors[i].max(median))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use layerprune_core::synthetic::{AdditiveGame, WindowedGame};
    use layerprune_core::CountingGame;

    fn windowed(weights: Vec<f64>, mask_spread: f64, seed: u64) -> WindowedGame<AdditiveGame> {
        WindowedGame {
            inner: AdditiveGame::new(weights, 0.0),
            windows: 10,
            window_spread: 5.0,
            mask_spread,
            seed,
        }
    }

    fn singles(n: usize) -> Vec<Mask> {
        (0..n).map(|b| Mask::full(n).with(b, false)).collect()
    }

    #[test]
    fn clear_losers_are_dropped_early_and_the_best_is_kept() {
        // Removing block b costs weight b: removing block 0 (weight 0.01) is best; the others
        // are far behind relative to the windows' own spread (the shared difficulty, spread
        // 5, cancels in the paired differences).
        let weights = vec![0.01, 0.02, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let masks = singles(weights.len());
        let mut game = CountingGame::new(windowed(weights, 0.01, 3));
        let values = race_values(&mut game, &masks, Some(&Race::default())).unwrap();
        assert!(values[0].is_some() && values[1].is_some(), "{values:?}");
        assert!(values[2..].iter().all(Option::is_none), "{values:?}");
        // 8 candidates on 3 windows, the 2 survivors then on every window: the 6 dropped cost
        // 6 · 3 / 10 → 2 evaluations, the survivors one each.
        assert_eq!(game.evaluations(), 2 + 2);
        // The survivors' values are their whole values.
        let whole = game.values(&masks[..2]).unwrap();
        assert_eq!(values[0], Some(whole[0]));
        assert_eq!(values[1], Some(whole[1]));
    }

    #[test]
    fn a_race_for_the_best_few_keeps_them_and_estimates_the_dropped() {
        // Without a spread of its own per mask, a mask's windows differ from another's by a
        // constant: the paired estimate of a dropped mask is its whole value exactly.
        let weights = vec![0.01, 0.02, 0.03, 1.0, 2.0, 3.0, 4.0, 5.0];
        let masks = singles(weights.len());
        let mut game = CountingGame::new(windowed(weights.clone(), 0.0, 5));
        let raced = race_masks(&mut game, &masks, Some(&Race::default()), 3).unwrap();
        let whole = game.values(&masks).unwrap();
        for (i, outcome) in raced.iter().enumerate() {
            match *outcome {
                Raced::Whole(value) => {
                    assert!(i < 3, "mask {i} survived: {raced:?}");
                    assert_eq!(value, whole[i]);
                }
                Raced::Dropped { estimate, windows } => {
                    assert!(i >= 3, "mask {i} dropped: {raced:?}");
                    assert_eq!(windows, 3);
                    assert!(
                        (estimate - whole[i]).abs() < 1e-9,
                        "{estimate} vs {}",
                        whole[i]
                    );
                }
            }
        }
        // For the single best, the third is dropped too.
        let mut game = CountingGame::new(windowed(weights, 0.0, 5));
        let best = race_masks(&mut game, &masks, Some(&Race::default()), 1).unwrap();
        assert_eq!(best[0], Raced::Whole(whole[0]));
        assert!(best[3..].iter().all(|r| r.whole().is_none()), "{best:?}");
        // No more masks than the few wanted: every one whole.
        let mut game = windowed(vec![1.0, 2.0], 0.0, 5);
        let all = race_masks(&mut game, &singles(2), Some(&Race::default()), 2).unwrap();
        assert!(all.iter().all(|r| r.whole().is_some()));
    }

    #[test]
    fn without_a_race_or_windows_every_mask_is_valued_whole() {
        let weights = vec![0.5, 1.0, 2.0];
        let masks = singles(3);
        let mut game = CountingGame::new(windowed(weights.clone(), 0.01, 1));
        let values = race_values(&mut game, &masks, None).unwrap();
        assert!(values.iter().all(Option::is_some));
        assert_eq!(game.evaluations(), 3);
        // A game of whole values only: the race has nothing to measure on.
        let mut whole = CountingGame::new(AdditiveGame::new(weights, 0.0));
        let values = race_values(&mut whole, &masks, Some(&Race::default())).unwrap();
        assert!(values.iter().all(Option::is_some));
        // No more windows than the first round: every window at once.
        let mut few = windowed(vec![0.5, 1.0, 2.0], 0.01, 1);
        few.windows = 2;
        let values = race_values(&mut few, &masks, Some(&Race::default())).unwrap();
        assert!(values.iter().all(Option::is_some));
    }

    #[test]
    fn candidates_within_the_noise_survive() {
        // Behind on average, but not consistently: the paired difference's spread covers it.
        let measured = vec![
            vec![1.0, 0.0, 1.0],
            vec![0.0, 1.0, 0.8],
            vec![0.9, 0.1, 0.9],
        ];
        assert_eq!(survivors(&measured, 3.0, 1), vec![0, 1, 2]);
        // Behind by more than three standard errors: dropped; by less: kept.
        let measured = vec![
            vec![1.0, 1.1, 0.9],
            vec![0.0, 0.3, -0.2],
            vec![0.8, 1.0, 0.9],
        ];
        assert_eq!(survivors(&measured, 3.0, 1), vec![0, 2]);
        // Behind by the same amount on every window: no spread at all, dropped.
        let measured = vec![vec![1.0, 2.0, 3.0], vec![0.9, 1.9, 2.9]];
        assert_eq!(survivors(&measured, 3.0, 1), vec![0]);
        // ... unless the other candidates say the windows spread more than that: candidate 1's
        // own standard error is 0, the median of the three is candidate 2's.
        let measured = vec![
            vec![1.0, 0.0, 0.5],
            vec![0.95, -0.05, 0.45],
            vec![0.0, 1.0, 0.4],
            vec![0.1, 0.9, 0.3],
        ];
        assert_eq!(survivors(&measured, 3.0, 1), vec![0, 1, 2, 3]);
    }

    #[test]
    fn the_race_picks_the_unraced_best_on_random_games() {
        // 200 random games of 12 candidates (gaps of 0–2) with a spread per window of ±0.2 on
        // top of a shared difficulty of ±5: the race's best (among its survivors' whole
        // values) is the best of all candidates' whole values in nearly every game, at about
        // half the windows.
        let mut same = 0;
        let mut cost = 0;
        let games = 200;
        for seed in 0..games {
            let mut rng = crate::rng_from_seed(seed);
            let weights: Vec<f64> = (0..12)
                .map(|_| rand::Rng::random_range(&mut rng, 0.0..2.0))
                .collect();
            let masks = singles(12);
            let mut game = CountingGame::new(windowed(weights, 0.2, seed));
            let raced = race_values(&mut game, &masks, Some(&Race::default())).unwrap();
            cost += game.evaluations();
            let whole = game.values(&masks).unwrap();
            let best = |values: &[Option<f64>]| {
                (0..values.len())
                    .filter(|&i| values[i].is_some())
                    .max_by(|&a, &b| values[a].unwrap().total_cmp(&values[b].unwrap()))
                    .unwrap()
            };
            let all: Vec<Option<f64>> = whole.into_iter().map(Some).collect();
            same += usize::from(best(&raced) == best(&all));
        }
        assert!(
            same >= 196,
            "the race kept the best in {same} of {games} games"
        );
        let share = cost as f64 / (12 * games) as f64;
        assert!(
            share < 0.6,
            "the race cost {share} of the unraced evaluations"
        );
    }

    #[test]
    fn bad_races_are_refused() {
        for race in [
            Race {
                first_windows: 1,
                standard_errors: 3.0,
            },
            Race {
                first_windows: 3,
                standard_errors: 0.0,
            },
            Race {
                first_windows: 3,
                standard_errors: f64::NAN,
            },
        ] {
            let mut game = windowed(vec![1.0, 2.0, 3.0], 0.1, 0);
            let err = race_values(&mut game, &singles(3), Some(&race)).unwrap_err();
            assert!(err.to_string().contains("invalid option"), "{err}");
        }
    }

    #[test]
    fn nan_candidates_never_lead() {
        let measured = vec![vec![f64::NAN, 1.0], vec![0.5, 0.4], vec![0.6, 0.1]];
        assert_eq!(survivors(&measured, 3.0, 1), vec![1, 2]);
        // Every candidate NaN: none is dropped (the whole values decide).
        assert_eq!(
            survivors(&[vec![f64::NAN, 1.0], vec![0.0, f64::NAN]], 3.0, 1),
            vec![0, 1]
        );
    }
}
