//! The contract between value sources and everything that consumes values.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;

use crate::Mask;

/// Why a game could not value some masks. Boxed so that the ONNX evaluator, a table lookup and
/// a surrogate can each report their own failures through one trait.
pub type GameError = Box<dyn std::error::Error + Send + Sync>;

/// "The value of these masks."
///
/// A game has a fixed number of players (`num_players`, the blocks of the model) and values
/// any batch of masks of that length. Implementations are free to reorder work internally
/// (the ONNX evaluator sorts masks to share hidden states) but must return values in the order
/// of `masks`. A value is larger for a better coalition (e.g. the published utility
/// PPL(full) / PPL(mask), or minus the mean NLL).
///
/// `values` takes `&mut self` because real games keep caches and counters.
pub trait Game {
    /// Number of players; every mask passed to [`Game::values`] has this many entries.
    fn num_players(&self) -> usize;

    /// The value of each mask, in the order given.
    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError>;

    /// The value of a mask this game has already valued, on each of the equal parts its value
    /// is the mean of — for the LLM, minus the mean NLL of each calibration window — or `None`
    /// where the game has no such parts or has not valued the mask. What the precision of a
    /// value (a standard error over the windows) is computed from, at no evaluation.
    fn window_values(&self, _mask: &Mask) -> Option<Vec<f64>> {
        None
    }

    /// How many equal parts the value is the mean of, where the game can value masks on some
    /// of them at a time ([`Game::values_on_windows`]): the LLM's calibration windows. `None`
    /// (the default): the game gives whole values only.
    fn num_windows(&self) -> Option<usize> {
        None
    }

    /// Each mask's value on the windows `windows` only: per mask, one value per window, in
    /// window order; the mean over every window is the mask's [`Game::values`] (to float
    /// rounding). What racing ([`num_windows`](Game::num_windows) windows at a time) measures
    /// first, to drop clearly worse masks before paying for all the windows.
    fn values_on_windows(
        &mut self,
        _masks: &[Mask],
        _windows: Range<usize>,
    ) -> Result<Vec<Vec<f64>>, GameError> {
        Err("this game gives whole values only, not values window by window".into())
    }

    /// The value of one mask.
    fn value(&mut self, mask: &Mask) -> Result<f64, GameError> {
        let values = self.values(std::slice::from_ref(mask))?;
        values
            .into_iter()
            .next()
            .ok_or_else(|| "game returned no value".into())
    }
}

/// `game.values(masks)`, checked to return one value per mask: callers index the values by
/// mask, so a game returning another count is an error here rather than a panic later.
pub fn values_checked<G: Game + ?Sized>(
    game: &mut G,
    masks: &[Mask],
) -> Result<Vec<f64>, GameError> {
    let values = game.values(masks)?;
    if values.len() != masks.len() {
        return Err(format!(
            "the game returned {} values for {} masks",
            values.len(),
            masks.len()
        )
        .into());
    }
    Ok(values)
}

/// A game behind a pointer (`&mut G`, `Box<G>`) is the game itself: every method passed on,
/// so a default of the trait never hides the pointee's own answer.
macro_rules! game_through_pointer {
    ($pointer:ty) => {
        impl<G: Game + ?Sized> Game for $pointer {
            fn num_players(&self) -> usize {
                (**self).num_players()
            }
            fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError> {
                (**self).values(masks)
            }
            fn window_values(&self, mask: &Mask) -> Option<Vec<f64>> {
                (**self).window_values(mask)
            }
            fn num_windows(&self) -> Option<usize> {
                (**self).num_windows()
            }
            fn values_on_windows(
                &mut self,
                masks: &[Mask],
                windows: Range<usize>,
            ) -> Result<Vec<Vec<f64>>, GameError> {
                (**self).values_on_windows(masks, windows)
            }
        }
    };
}

game_through_pointer!(&mut G);
game_through_pointer!(Box<G>);

/// A mask asked of a [`RecordedGame`] that its table does not hold: the one error of a
/// recorded game that says the table lacks a mask the caller's design reads (a stage that
/// names the files matches on it; the other errors of a recorded game, a mask of the wrong
/// length or values on windows that disagree, say something else of the table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotRecorded {
    pub mask: Mask,
}

impl std::fmt::Display for NotRecorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mask {} was not evaluated (it is not in the recorded table)",
            self.mask
        )
    }
}

impl std::error::Error for NotRecorded {}

/// Values recorded earlier (an evaluation table), replayed as a game. Asking for a mask that
/// was never evaluated is an error ([`NotRecorded`]), never a guess. Recorded with each mask's value on every
/// window ([`RecordedGame::with_windows`]), it replays a race too: a real model's game, kept in
/// a file, on which every method runs without the model.
#[derive(Clone, Debug)]
pub struct RecordedGame {
    num_players: usize,
    values: HashMap<Mask, f64>,
    /// Every mask's value on each window, when recorded (then for every mask, all the same
    /// length).
    windows: Option<HashMap<Mask, Vec<f64>>>,
}

impl RecordedGame {
    /// Builds the game from (mask, value) rows; every mask must have `num_players` entries.
    pub fn new(
        num_players: usize,
        rows: impl IntoIterator<Item = (Mask, f64)>,
    ) -> Result<Self, GameError> {
        let mut values = HashMap::new();
        for (mask, value) in rows {
            mask.check_len(num_players)?;
            values.insert(mask, value);
        }
        Ok(RecordedGame {
            num_players,
            values,
            windows: None,
        })
    }

    /// Builds the game from (mask, value, value on each window) rows: every mask with
    /// `num_players` entries and values on the same number of windows (at least one), whose
    /// mean is its value to float rounding (the value is kept as recorded).
    pub fn with_windows(
        num_players: usize,
        rows: impl IntoIterator<Item = (Mask, f64, Vec<f64>)>,
    ) -> Result<Self, GameError> {
        let mut values = HashMap::new();
        let mut windows = HashMap::new();
        let mut num_windows = None;
        for (mask, value, on_windows) in rows {
            mask.check_len(num_players)?;
            let count = *num_windows.get_or_insert(on_windows.len());
            if on_windows.is_empty() || on_windows.len() != count {
                return Err(format!(
                    "mask {mask} has values on {} windows, the others on {count}",
                    on_windows.len()
                )
                .into());
            }
            let mean = on_windows.iter().sum::<f64>() / count as f64;
            if (mean - value).abs() > 1e-9 * value.abs().max(1.0) {
                return Err(format!(
                    "mask {mask}: value {value} is not the mean of its windows' ({mean})"
                )
                .into());
            }
            values.insert(mask.clone(), value);
            windows.insert(mask, on_windows);
        }
        Ok(RecordedGame {
            num_players,
            values,
            windows: Some(windows),
        })
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn contains(&self, mask: &Mask) -> bool {
        self.values.contains_key(mask)
    }

    /// The recorded rows, in no particular order.
    pub fn rows(&self) -> impl Iterator<Item = (&Mask, f64)> {
        self.values.iter().map(|(m, &v)| (m, v))
    }
}

impl Game for RecordedGame {
    fn num_players(&self) -> usize {
        self.num_players
    }

    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError> {
        masks
            .iter()
            .map(|mask| {
                self.values
                    .get(mask)
                    .copied()
                    .ok_or_else(|| Box::new(NotRecorded { mask: mask.clone() }) as GameError)
            })
            .collect()
    }

    fn window_values(&self, mask: &Mask) -> Option<Vec<f64>> {
        self.windows.as_ref()?.get(mask).cloned()
    }

    fn num_windows(&self) -> Option<usize> {
        Some(self.windows.as_ref()?.values().next()?.len())
    }

    fn values_on_windows(
        &mut self,
        masks: &[Mask],
        windows: Range<usize>,
    ) -> Result<Vec<Vec<f64>>, GameError> {
        let recorded = self
            .windows
            .as_ref()
            .ok_or("this recorded game has whole values only, not values window by window")?;
        masks
            .iter()
            .map(|mask| {
                let all = recorded
                    .get(mask)
                    .ok_or_else(|| Box::new(NotRecorded { mask: mask.clone() }) as GameError)?;
                all.get(windows.clone())
                    .map(<[f64]>::to_vec)
                    .ok_or_else(|| format!("windows {windows:?} of {}", all.len()).into())
            })
            .collect()
    }
}

/// Wraps a game and counts the distinct masks it was asked for: the "number of LLM
/// evaluations" an estimator used, since a mask asked for twice costs one evaluation. A mask
/// valued on some windows only ([`Game::values_on_windows`]) costs its share of the windows.
pub struct CountingGame<G> {
    inner: G,
    seen: HashSet<Mask>,
    /// The windows each mask not (yet) valued whole was valued on.
    windows_seen: HashMap<Mask, BTreeSet<usize>>,
}

impl<G: Game> CountingGame<G> {
    pub fn new(inner: G) -> Self {
        CountingGame {
            inner,
            seen: HashSet::new(),
            windows_seen: HashMap::new(),
        }
    }

    /// LLM evaluations used so far: distinct masks valued whole, plus the windows masks were
    /// valued on without being valued whole, as a share of all windows, rounded up.
    pub fn evaluations(&self) -> usize {
        let windows = self.inner.num_windows().unwrap_or(1).max(1);
        let partial: usize = self
            .windows_seen
            .iter()
            .filter(|(mask, _)| !self.seen.contains(*mask))
            .map(|(_, seen)| seen.len())
            .sum();
        self.seen.len() + partial.div_ceil(windows)
    }

    pub fn into_inner(self) -> G {
        self.inner
    }
}

impl<G: Game> Game for CountingGame<G> {
    fn num_players(&self) -> usize {
        self.inner.num_players()
    }

    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError> {
        let values = self.inner.values(masks)?;
        self.seen.extend(masks.iter().cloned());
        Ok(values)
    }

    fn window_values(&self, mask: &Mask) -> Option<Vec<f64>> {
        self.inner.window_values(mask)
    }

    fn num_windows(&self) -> Option<usize> {
        self.inner.num_windows()
    }

    fn values_on_windows(
        &mut self,
        masks: &[Mask],
        windows: Range<usize>,
    ) -> Result<Vec<Vec<f64>>, GameError> {
        let values = self.inner.values_on_windows(masks, windows.clone())?;
        for mask in masks {
            self.windows_seen
                .entry(mask.clone())
                .or_default()
                .extend(windows.clone());
        }
        Ok(values)
    }
}

/// Wraps a game and remembers every value it returned, so a mask asked for again (by another
/// method, or another k) is not valued twice. Cost accounting stays with [`CountingGame`]:
/// put one in front of this per method to charge each for the masks it asked for.
pub struct CachedGame<G> {
    inner: G,
    values: HashMap<Mask, f64>,
}

impl<G: Game> CachedGame<G> {
    pub fn new(inner: G) -> Self {
        CachedGame {
            inner,
            values: HashMap::new(),
        }
    }

    /// Distinct masks valued by the inner game.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn into_inner(self) -> G {
        self.inner
    }

    pub fn inner_mut(&mut self) -> &mut G {
        &mut self.inner
    }

    /// Every mask valued so far with its value, in no particular order.
    pub fn rows(&self) -> impl Iterator<Item = (&Mask, f64)> {
        self.values.iter().map(|(m, &v)| (m, v))
    }
}

impl<G: Game> Game for CachedGame<G> {
    fn num_players(&self) -> usize {
        self.inner.num_players()
    }

    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError> {
        let mut pending: Vec<Mask> = masks
            .iter()
            .filter(|m| !self.values.contains_key(*m))
            .cloned()
            .collect();
        pending.sort();
        pending.dedup();
        if !pending.is_empty() {
            let values = values_checked(&mut self.inner, &pending)?;
            self.values.extend(pending.into_iter().zip(values));
        }
        Ok(masks.iter().map(|m| self.values[m]).collect())
    }

    fn window_values(&self, mask: &Mask) -> Option<Vec<f64>> {
        self.inner.window_values(mask)
    }

    fn num_windows(&self) -> Option<usize> {
        self.inner.num_windows()
    }

    /// Passed through: values on some windows are the inner game's to keep (the LLM's
    /// evaluation cache keeps them), and a whole value asked later comes through `values`.
    fn values_on_windows(
        &mut self,
        masks: &[Mask],
        windows: Range<usize>,
    ) -> Result<Vec<Vec<f64>>, GameError> {
        self.inner.values_on_windows(masks, windows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::AdditiveGame;

    /// An additive game measured on two windows, one a unit below the value, one above.
    struct Windowed(AdditiveGame);

    impl Game for Windowed {
        fn num_players(&self) -> usize {
            self.0.num_players()
        }
        fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError> {
            self.0.values(masks)
        }
        fn window_values(&self, mask: &Mask) -> Option<Vec<f64>> {
            let value = AdditiveGame::new(vec![1.0, 2.0, 4.0], 0.0)
                .value(mask)
                .ok()?;
            Some(vec![value - 1.0, value + 1.0])
        }
    }

    #[test]
    fn every_wrapper_passes_the_windows_through() {
        let mask: Mask = "101".parse().unwrap();
        let expected = Some(vec![4.0, 6.0]);
        let windowed = || Windowed(AdditiveGame::new(vec![1.0, 2.0, 4.0], 0.0));
        fn through<G: Game>(game: G, mask: &Mask) -> Option<Vec<f64>> {
            game.window_values(mask)
        }
        let mut plain = windowed();
        assert_eq!(through(&mut plain, &mask), expected);
        assert_eq!(through(Box::new(windowed()), &mask), expected);
        assert_eq!(CountingGame::new(windowed()).window_values(&mask), expected);
        let mut cached = CachedGame::new(CountingGame::new(windowed()));
        cached.value(&mask).unwrap();
        assert_eq!(cached.window_values(&mask), expected);
        // The players' game lifts its mask onto the blocks first: player 1 is block 2.
        let players = crate::Players::new(3, &[1]).unwrap();
        let on_players = crate::PlayerGame::new(windowed(), players).unwrap();
        assert_eq!(
            on_players.window_values(&"11".parse().unwrap()),
            Some(vec![6.0, 8.0])
        );
        assert_eq!(on_players.window_values(&"111".parse().unwrap()), None);
        // A game without windows has none.
        assert_eq!(
            AdditiveGame::new(vec![1.0], 0.0).window_values(&"1".parse().unwrap()),
            None
        );
    }

    #[test]
    fn recorded_game_replays_and_refuses_unknown_masks() {
        let mut truth = AdditiveGame::new(vec![1.0, 2.0, 3.0], 0.5);
        let masks: Vec<Mask> = ["111", "011", "000"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let values = truth.values(&masks).unwrap();
        let mut recorded =
            RecordedGame::new(3, masks.iter().cloned().zip(values.iter().copied())).unwrap();
        assert_eq!(recorded.values(&masks).unwrap(), values);
        let err = recorded.value(&"101".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("101"), "{err}");
        // Typed, so that a stage can tell a missing mask from the table's other errors.
        let missing = err.downcast_ref::<NotRecorded>().expect("a NotRecorded");
        assert_eq!(missing.mask, "101".parse::<Mask>().unwrap());
        let wrong_length = RecordedGame::new(4, [(masks[0].clone(), 1.0)]).unwrap_err();
        assert!(wrong_length.downcast_ref::<NotRecorded>().is_none());
        assert_eq!(recorded.num_windows(), None);
        assert!(recorded.values_on_windows(&masks, 0..1).is_err());
    }

    #[test]
    fn recorded_game_with_windows_replays_a_race() {
        let a: Mask = "10".parse().unwrap();
        let b: Mask = "01".parse().unwrap();
        let mut recorded = RecordedGame::with_windows(
            2,
            [
                (a.clone(), 2.0, vec![1.0, 2.0, 3.0]),
                (b.clone(), -1.0, vec![0.0, -1.0, -2.0]),
            ],
        )
        .unwrap();
        assert_eq!(recorded.num_windows(), Some(3));
        assert_eq!(recorded.window_values(&b), Some(vec![0.0, -1.0, -2.0]));
        assert_eq!(
            recorded
                .values_on_windows(&[b.clone(), a.clone()], 1..3)
                .unwrap(),
            vec![vec![-1.0, -2.0], vec![2.0, 3.0]]
        );
        assert_eq!(
            recorded.values(std::slice::from_ref(&a)).unwrap(),
            vec![2.0]
        );
        let unknown = recorded.values_on_windows(&["11".parse().unwrap()], 0..1);
        assert!(unknown.unwrap_err().to_string().contains("11"));
        assert!(recorded
            .values_on_windows(std::slice::from_ref(&a), 2..4)
            .is_err());
        // Rows that disagree are refused: other window counts, a value not their mean.
        let uneven = [
            (a.clone(), 1.0, vec![1.0]),
            (b.clone(), 1.0, vec![1.0, 1.0]),
        ];
        assert!(RecordedGame::with_windows(2, uneven).is_err());
        assert!(RecordedGame::with_windows(2, [(a, 1.5, vec![1.0, 1.0])]).is_err());
    }

    #[test]
    fn cached_game_values_each_mask_once() {
        let mut cached = CachedGame::new(CountingGame::new(AdditiveGame::new(vec![1.0, 2.0], 0.0)));
        let a: Mask = "10".parse().unwrap();
        let b: Mask = "01".parse().unwrap();
        assert_eq!(
            cached.values(&[a.clone(), b.clone(), a.clone()]).unwrap(),
            vec![1.0, 2.0, 1.0]
        );
        assert_eq!(cached.values(&[b, a]).unwrap(), vec![2.0, 1.0]);
        assert_eq!(cached.len(), 2);
        assert_eq!(cached.into_inner().evaluations(), 2);
    }

    #[test]
    fn a_mask_valued_on_some_windows_costs_its_share() {
        use crate::synthetic::WindowedGame;
        let windowed = WindowedGame {
            inner: AdditiveGame::new(vec![1.0, 2.0, 4.0], 0.0),
            windows: 4,
            window_spread: 1.0,
            mask_spread: 0.1,
            seed: 1,
        };
        let mut game = CountingGame::new(CachedGame::new(windowed));
        let masks: Vec<Mask> = ["011", "101", "110"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        // 3 masks × 1 window of 4: ¾ of an evaluation, rounded up.
        game.values_on_windows(&masks, 0..1).unwrap();
        assert_eq!(game.evaluations(), 1);
        // A window already seen costs nothing again; 3 × 2 windows: 1½ → 2.
        game.values_on_windows(&masks, 0..2).unwrap();
        assert_eq!(game.evaluations(), 2);
        // Valued whole, a mask costs one evaluation, whatever its windows cost before.
        game.values(&masks[..1]).unwrap();
        assert_eq!(game.evaluations(), 1 + 1);
        game.values(&masks).unwrap();
        assert_eq!(game.evaluations(), 3);
        // Every wrapper passes the windows through.
        assert_eq!(game.num_windows(), Some(4));
        let mut boxed: Box<dyn Game> = Box::new(game);
        assert_eq!(boxed.values_on_windows(&masks, 3..4).unwrap().len(), 3);
        let players = crate::Players::new(3, &[1]).unwrap();
        let mut on_players = crate::PlayerGame::new(&mut boxed, players).unwrap();
        assert_eq!(on_players.num_windows(), Some(4));
        // Player mask "10" is blocks "110".
        assert_eq!(
            on_players
                .values_on_windows(&["10".parse().unwrap()], 0..4)
                .unwrap(),
            boxed.values_on_windows(&masks[2..], 0..4).unwrap()
        );
        // A game without windows refuses, saying so.
        let err = AdditiveGame::new(vec![1.0], 0.0)
            .values_on_windows(&["1".parse().unwrap()], 0..1)
            .unwrap_err();
        assert!(err.to_string().contains("window by window"), "{err}");
    }

    #[test]
    fn counting_game_counts_distinct_masks() {
        let mut game = CountingGame::new(AdditiveGame::new(vec![1.0, 1.0], 0.0));
        let a: Mask = "10".parse().unwrap();
        let b: Mask = "01".parse().unwrap();
        game.values(&[a.clone(), b, a]).unwrap();
        assert_eq!(game.evaluations(), 2);
    }
}
