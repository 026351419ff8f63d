//! Surrogates of the layer-pruning game: small models, fitted on (mask, value) pairs measured on
//! the real LLM, that predict the value of any other mask in microseconds.
//!
//! Every surrogate reads a mask through [`Mask::to_features`] (one 0/1 entry per block) and sits
//! behind one trait, [`Surrogate`], so that the Shapley estimators can query it as a
//! [`layerprune_core::Game`] through [`SurrogateGame`]. Three kinds are offered:
//!
//! * [`MlpSurrogate`]: the published network, Linear(L, 2L) → CELU → Linear(2L, 1) → Sigmoid,
//!   trained with the published SGD schedule;
//! * [`QuadraticSurrogate`]: intercept, linear and pairwise terms fitted by ridge regression;
//!   its Shapley values have a closed form, which regression-adjusted estimators need;
//! * [`ForestSurrogate`]: a seeded random forest (smartcore), for non-smooth games.
//!
//! [`fit`] fits any kind, [`cross_validate`] measures how well a kind predicts held-out masks
//! (R², Spearman, MAE over seeded folds), and [`SavedSurrogate`] writes and reads a fitted
//! surrogate as a self-describing JSON file. [`training`] is the `fit-surrogate` stage: an
//! evaluation table's rows as training data, the kinds cross-validated, one fitted and saved.

mod forest;
mod metrics;
mod mlp;
mod quadratic;
mod saved;
pub mod training;

use std::fmt;
use std::str::FromStr;

use layerprune_core::{Game, GameError, Mask};
use serde::{Deserialize, Serialize};

pub use forest::ForestSurrogate;
pub use metrics::{
    cross_validate, fold_assignment, mae, mean_over_folds, r2_score, spearman, FoldMetrics,
};
pub use mlp::{MlpSurrogate, TargetScaling};
pub use quadratic::{ridge_solve, QuadraticSurrogate};
pub use saved::{SavedSurrogate, FORMAT_NAME, FORMAT_VERSION};

/// Why a surrogate could not be fitted, evaluated, saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SurrogateError {
    #[error(
        "a surrogate needs at least two (mask, value) pairs, and {rows} were given (from one \
         it could only predict that value for every mask)"
    )]
    TooFewRows { rows: usize },
    #[error("{masks} masks but {targets} values; they must pair up one to one")]
    LengthMismatch { masks: usize, targets: usize },
    #[error(
        "mask {row} has {got} blocks but mask 0 has {expected}; all masks must be the same length"
    )]
    MixedMaskLengths {
        row: usize,
        got: usize,
        expected: usize,
    },
    #[error("the value {value} of row {row} is not finite; drop NaN/inf rows before fitting")]
    NonFiniteTarget { row: usize, value: f64 },
    #[error(
        "the value {value:e} of row {row} is beyond ±{max:e}, too large for a surrogate's \
         arithmetic (sums of squares overflow to NaN); no game value of a model comes near it",
        max = MAX_TARGET_MAGNITUDE
    )]
    TargetTooLarge { row: usize, value: f64 },
    #[error("the masks have no blocks; a surrogate needs at least one player")]
    NoPlayers,
    #[error("{rows} rows are too few for {folds}-fold cross-validation (need at least 2 folds and 2 rows per fold: fewer folds, or --folds 0 to skip it)")]
    TooFewRowsForFolds { rows: usize, folds: usize },
    #[error("invalid fit option: {0}")]
    BadOption(String),
    #[error("{}", singular_system(*ridge_alpha))]
    SingularSystem { ridge_alpha: f64 },
    #[error("random forest failed: {0}")]
    Forest(String),
    #[error(
        "a quadratic surrogate of {players} players solves for {features} weights, about \
         {gib:.1} GiB of memory; at most {most} players are fitted this way (fit --kind mlp or \
         forest, or fix blocks)",
        most = quadratic::MAX_PLAYERS
    )]
    TooManyPlayers {
        players: usize,
        features: usize,
        gib: f64,
    },
    #[error("the fitted {kind} surrogate cannot be used: {problem}")]
    UnusableFit {
        kind: SurrogateKind,
        problem: String,
    },
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
}

/// Why a ridge system was singular, and what to do: without a ridge, give one; with one too
/// small to lift the collinear directions' pivots above the factorization's tolerance (about
/// 1e-12 of the largest, so below about 1e-13), a larger one (advising "a ridge_alpha > 0" to
/// a fit given one was no advice).
fn singular_system(ridge_alpha: f64) -> String {
    let advice = if ridge_alpha > 0.0 {
        format!("ridge_alpha {ridge_alpha:e} is too small to make it solvable; use a larger one")
    } else {
        "use a ridge_alpha > 0".to_string()
    };
    format!(
        "the ridge system is singular or too ill-conditioned to solve (features are collinear, \
         or nearly, in these masks); {advice} \
         (fit-surrogate --ridge-alpha)"
    )
}

/// A fitted model of the game's value.
///
/// `predict` is the hot path (the published estimator asks for 80,000+ masks): implementations
/// value a whole batch at once. Every mask must have `num_players` entries; [`SurrogateGame`]
/// checks that before calling `predict`, which may panic on a wrong length.
pub trait Surrogate: Send + Sync {
    fn num_players(&self) -> usize;

    /// Predicted values for many masks at once, in the order given.
    fn predict(&self, masks: &[Mask]) -> Vec<f64>;

    /// Exact Shapley values of the surrogate itself when it has a closed form (quadratic:
    /// φ_i = w_i + ½ Σ_j w_ij), else None.
    fn exact_shapley(&self) -> Option<Vec<f64>> {
        let n = self.num_players();
        self.exact_shapley_on(&Mask::full(n), &(0..n).collect::<Vec<_>>())
    }

    /// Exact Shapley values of `players` (ascending block indices) in the surrogate's game
    /// whose other blocks stay as in `base`, kept or removed, when it has a closed form; else
    /// None. The one place a closed form lives, for the `shapley` stage (fixed blocks kept)
    /// and selection's restricted games (blocks already removed) alike.
    fn exact_shapley_on(&self, _base: &Mask, _players: &[usize]) -> Option<Vec<f64>> {
        None
    }
}

impl<S: Surrogate + ?Sized> Surrogate for &S {
    fn num_players(&self) -> usize {
        (**self).num_players()
    }
    fn predict(&self, masks: &[Mask]) -> Vec<f64> {
        (**self).predict(masks)
    }
    fn exact_shapley_on(&self, base: &Mask, players: &[usize]) -> Option<Vec<f64>> {
        (**self).exact_shapley_on(base, players)
    }
}

impl<S: Surrogate + ?Sized> Surrogate for Box<S> {
    fn num_players(&self) -> usize {
        (**self).num_players()
    }
    fn predict(&self, masks: &[Mask]) -> Vec<f64> {
        (**self).predict(masks)
    }
    fn exact_shapley_on(&self, base: &Mask, players: &[usize]) -> Option<Vec<f64>> {
        (**self).exact_shapley_on(base, players)
    }
}

/// A surrogate played as a game: its predictions are the coalition values.
#[derive(Clone, Debug)]
pub struct SurrogateGame<S>(pub S);

impl<S: Surrogate> Game for SurrogateGame<S> {
    fn num_players(&self) -> usize {
        self.0.num_players()
    }

    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError> {
        let num_players = self.0.num_players();
        for mask in masks {
            mask.check_len(num_players)?;
        }
        Ok(self.0.predict(masks))
    }
}

/// Which model to fit. Parses from and prints as "mlp", "quadratic", "forest".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SurrogateKind {
    /// The published network (see [`MlpSurrogate`]).
    #[serde(rename = "mlp")]
    PublishedMlp,
    #[serde(rename = "quadratic")]
    Quadratic,
    #[serde(rename = "forest")]
    Forest,
}

impl SurrogateKind {
    pub const ALL: [SurrogateKind; 3] = [
        SurrogateKind::PublishedMlp,
        SurrogateKind::Quadratic,
        SurrogateKind::Forest,
    ];

    /// The name used on the command line, in saved files and in metric tables.
    pub fn name(self) -> &'static str {
        match self {
            SurrogateKind::PublishedMlp => "mlp",
            SurrogateKind::Quadratic => "quadratic",
            SurrogateKind::Forest => "forest",
        }
    }
}

impl fmt::Display for SurrogateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SurrogateKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SurrogateKind::ALL
            .into_iter()
            .find(|kind| kind.name() == text)
            .ok_or_else(|| format!("surrogate {text:?} is not one of mlp, quadratic, forest"))
    }
}

/// Largest magnitude of a value a surrogate is fitted to. Finite values near ±1e308 overflowed
/// the fits' sums (squares, ranges, leaf means) and gave NaN coefficients and predictions
/// without an error (until 2026-12-06); the game values (utility in (0, 1], NLLs in nats per
/// token) are nowhere near this.
pub const MAX_TARGET_MAGNITUDE: f64 = 1e100;

/// The quadratic surrogate's default ridge strength: the pipeline's (`make demo`'s and the
/// workflow's `SURROGATE_RIDGE` for the quadratic surrogate of the log-likelihood game, the
/// frontier's Shapley method), so `fit-surrogate` alone fits what the pipeline fits. Before
/// 2026-12-05 it was 1e-4, which the quadratic fitted beside the MLP for comparison (the MLP
/// rule's metrics rows) also used.
pub const DEFAULT_RIDGE_ALPHA: f64 = 0.01;

/// Settings of every kind of surrogate; each kind reads only its own. The defaults are the
/// published MLP schedule, a light ridge ([`DEFAULT_RIDGE_ALPHA`]) and a 100-tree forest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitOptions {
    /// Seeds the MLP's initialisation and shuffling, the forest's bootstrap and the CV folds.
    pub seed: u64,
    /// Ridge strength α of the quadratic model, which minimises
    /// (1/n)·Σ (y − b − wᵀx)² + α·‖w‖² (intercept b not penalised). Same scale as linfa's
    /// elastic-net `penalty` with `l1_ratio` 0.
    pub ridge_alpha: f64,
    /// MLP: passes over the training rows (published: 300).
    pub epochs: usize,
    /// MLP: rows per SGD step (published: 300; the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// MLP: SGD learning rate (published: 0.008).
    pub learning_rate: f64,
    /// MLP: SGD momentum, PyTorch semantics v = μ·v + g, w −= lr·v (published: 0.9).
    pub momentum: f64,
    /// MLP: the learning rate is multiplied by `lr_decay_factor` every this many epochs
    /// (published: 100 and 0.1).
    pub lr_decay_every: usize,
    pub lr_decay_factor: f64,
    /// Forest: number of trees.
    pub trees: usize,
    /// Forest: maximum tree depth (None = grow until leaves are pure or at the minimum size).
    pub tree_max_depth: Option<u16>,
    /// Forest: minimum rows in a leaf.
    pub tree_min_samples_leaf: usize,
    /// Forest: blocks tried per split (None = ⌈L/3⌉, Breiman's regression default).
    pub tree_features_per_split: Option<usize>,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            seed: 0,
            ridge_alpha: DEFAULT_RIDGE_ALPHA,
            epochs: 300,
            batch_size: 300,
            learning_rate: 0.008,
            momentum: 0.9,
            lr_decay_every: 100,
            lr_decay_factor: 0.1,
            trees: 100,
            tree_max_depth: None,
            tree_min_samples_leaf: 1,
            tree_features_per_split: None,
        }
    }
}

impl FitOptions {
    fn check(&self) -> Result<(), SurrogateError> {
        let bad = |what: String| Err(SurrogateError::BadOption(what));
        if !(self.ridge_alpha >= 0.0 && self.ridge_alpha.is_finite()) {
            return bad(format!(
                "ridge_alpha {} must be finite and ≥ 0",
                self.ridge_alpha
            ));
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad(format!(
                "learning_rate {} must be finite and > 0",
                self.learning_rate
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!("momentum {} must be in [0, 1)", self.momentum));
        }
        if self.lr_decay_every == 0 {
            return bad("lr_decay_every must be at least 1".into());
        }
        if !(self.lr_decay_factor > 0.0 && self.lr_decay_factor <= 1.0) {
            return bad(format!(
                "lr_decay_factor {} must be in (0, 1]",
                self.lr_decay_factor
            ));
        }
        if self.trees == 0 {
            return bad("trees must be at least 1".into());
        }
        if self.tree_min_samples_leaf == 0 {
            return bad("tree_min_samples_leaf must be at least 1".into());
        }
        if self.tree_features_per_split == Some(0) {
            return bad("tree_features_per_split must be at least 1".into());
        }
        Ok(())
    }
}

/// A fitted surrogate of any kind; what [`fit`] returns and what [`SavedSurrogate`] stores.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", content = "parameters")]
pub enum FittedSurrogate {
    #[serde(rename = "mlp")]
    Mlp(MlpSurrogate),
    #[serde(rename = "quadratic")]
    Quadratic(QuadraticSurrogate),
    #[serde(rename = "forest")]
    Forest(ForestSurrogate),
}

impl FittedSurrogate {
    pub fn kind(&self) -> SurrogateKind {
        match self {
            FittedSurrogate::Mlp(_) => SurrogateKind::PublishedMlp,
            FittedSurrogate::Quadratic(_) => SurrogateKind::Quadratic,
            FittedSurrogate::Forest(_) => SurrogateKind::Forest,
        }
    }

    fn as_dyn(&self) -> &dyn Surrogate {
        match self {
            FittedSurrogate::Mlp(model) => model,
            FittedSurrogate::Quadratic(model) => model,
            FittedSurrogate::Forest(model) => model,
        }
    }

    /// Checks that the parameters are consistent (shapes, finite numbers); used after loading.
    fn validate(&self) -> Result<(), String> {
        match self {
            FittedSurrogate::Mlp(model) => model.validate(),
            FittedSurrogate::Quadratic(model) => model.validate(),
            FittedSurrogate::Forest(model) => model.validate(),
        }
    }
}

impl Surrogate for FittedSurrogate {
    fn num_players(&self) -> usize {
        self.as_dyn().num_players()
    }
    fn predict(&self, masks: &[Mask]) -> Vec<f64> {
        self.as_dyn().predict(masks)
    }
    fn exact_shapley_on(&self, base: &Mask, players: &[usize]) -> Option<Vec<f64>> {
        self.as_dyn().exact_shapley_on(base, players)
    }
}

/// Checks the training data shared by every kind and returns the number of players.
fn check_training_data(masks: &[Mask], targets: &[f64]) -> Result<usize, SurrogateError> {
    if masks.len() != targets.len() {
        return Err(SurrogateError::LengthMismatch {
            masks: masks.len(),
            targets: targets.len(),
        });
    }
    if masks.len() < 2 {
        return Err(SurrogateError::TooFewRows { rows: masks.len() });
    }
    let num_players = masks[0].num_blocks();
    if num_players == 0 {
        return Err(SurrogateError::NoPlayers);
    }
    for (row, mask) in masks.iter().enumerate() {
        if mask.num_blocks() != num_players {
            return Err(SurrogateError::MixedMaskLengths {
                row,
                got: mask.num_blocks(),
                expected: num_players,
            });
        }
    }
    if let Some((row, &value)) = targets.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(SurrogateError::NonFiniteTarget { row, value });
    }
    if let Some((row, &value)) = targets
        .iter()
        .enumerate()
        .find(|(_, v)| v.abs() > MAX_TARGET_MAGNITUDE)
    {
        return Err(SurrogateError::TargetTooLarge { row, value });
    }
    Ok(num_players)
}

/// What the rows [`fit`] accepts (`masks` over the blocks and their `values`, of a game whose
/// players are the blocks not in `fixed_blocks`) may still not tell, said before fitting: no
/// more rows than players (too few for even an additive model, players + 1 coefficients, to
/// tell every block's contribution apart: the fit is shaped by its regularisation as much as by
/// the game), a single value in every row (a constant game: every contribution 0), or a player
/// that no row varies (kept in every row, or removed in every row): nothing measures it, and a
/// surrogate gives it whatever its fit does without data (the quadratic and the forest 0, the
/// MLP its initialisation), so its Shapley value read off the surrogate, and the plans made from
/// it, were a silent 0 or noise. The caller names the input.
pub fn training_data_warnings(
    masks: &[Mask],
    fixed_blocks: &[usize],
    values: &[f64],
) -> Vec<String> {
    let mut warnings = Vec::new();
    let num_blocks = masks.first().map_or(0, Mask::num_blocks);
    // No player (every block fixed, or no rows): nothing to warn of per block.
    let players = layerprune_core::Players::new(num_blocks, fixed_blocks)
        .map(|players| players.blocks().to_vec())
        .unwrap_or_default();
    let num_players = players.len();
    if values.len() <= num_players {
        warnings.push(format!(
            "{} rows for {num_players} players: fewer than the {} an additive model needs to \
             tell every block's contribution apart, so the surrogate is shaped by its \
             regularisation as much as by the measurements; evaluate more masks",
            values.len(),
            num_players + 1
        ));
    }
    if values.len() > 1 && values.iter().all(|v| v == &values[0]) {
        warnings.push(format!(
            "every row has the same value ({}): the surrogate is a constant, every block's \
             contribution 0",
            values[0]
        ));
    }
    for (kept, how) in [(true, "kept in"), (false, "removed from")] {
        let unvaried: Vec<usize> = players
            .iter()
            .copied()
            .filter(|&block| masks.iter().all(|mask| mask.is_kept(block) == kept))
            .collect();
        if masks.len() > 1 && !unvaried.is_empty() {
            warnings.push(format!(
                "block(s) {unvaried:?} are {how} every row but are players (not fixed blocks): \
                 no row measures what they contribute, so a surrogate gives them what its fit \
                 does without data (0 for the quadratic and the forest, the initial weights' \
                 effect for the mlp); evaluate masks that vary them, or sample the game with \
                 them fixed (sample-masks --fixed)"
            ));
        }
    }
    warnings
}

/// Fits a surrogate of `kind` on all the given (mask, target) pairs.
pub fn fit(
    kind: SurrogateKind,
    masks: &[Mask],
    targets: &[f64],
    options: &FitOptions,
) -> Result<FittedSurrogate, SurrogateError> {
    options.check()?;
    let num_players = check_training_data(masks, targets)?;
    let fitted = match kind {
        SurrogateKind::PublishedMlp => {
            FittedSurrogate::Mlp(MlpSurrogate::fit(num_players, masks, targets, options))
        }
        SurrogateKind::Quadratic => FittedSurrogate::Quadratic(QuadraticSurrogate::fit(
            num_players,
            masks,
            targets,
            options.ridge_alpha,
        )?),
        SurrogateKind::Forest => {
            FittedSurrogate::Forest(ForestSurrogate::fit(num_players, masks, targets, options)?)
        }
    };
    // What loading checks, checked before the model is used: finite values can still be too
    // large for a fit's arithmetic (values near ±1e308 gave NaN coefficients, predictions and
    // scores, and a file that `save` wrote and `load` refused).
    fitted
        .validate()
        .map_err(|problem| SurrogateError::UnusableFit { kind, problem })?;
    Ok(fitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_print() {
        for kind in SurrogateKind::ALL {
            assert_eq!(kind.name().parse::<SurrogateKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.name());
        }
        let err = "svm".parse::<SurrogateKind>().unwrap_err();
        assert!(err.contains("mlp, quadratic, forest"), "{err}");
    }

    #[test]
    fn a_quadratic_beyond_its_players_is_refused_before_it_is_allocated() {
        let masks = [Mask::full(129), Mask::empty(129)];
        let error = fit(
            SurrogateKind::Quadratic,
            &masks,
            &[1.0, 0.0],
            &FitOptions::default(),
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("129 players") && message.contains("8385 weights"),
            "{message}"
        );
    }

    /// The refusal above says "or fix blocks", and fixed blocks are left out of the system; but
    /// the limit counted the masks' length, so a model of more blocks than the limit was
    /// refused however many were fixed. It counts the blocks that vary.
    #[test]
    fn a_quadratic_of_many_blocks_but_few_players_is_fitted() {
        let blocks = 200;
        let mask = |kept_0: bool, kept_1: bool| {
            let mut mask = Mask::full(blocks);
            mask.set(0, kept_0);
            mask.set(1, kept_1);
            mask
        };
        let masks = [
            mask(true, true),
            mask(false, true),
            mask(true, false),
            mask(false, false),
        ];
        let model = fit(
            SurrogateKind::Quadratic,
            &masks,
            &[1.0, 0.6, 0.5, 0.0],
            &FitOptions {
                ridge_alpha: 0.0,
                ..FitOptions::default()
            },
        )
        .unwrap();
        assert_eq!(model.num_players(), blocks);
        for (got, want) in model.predict(&masks).iter().zip([1.0, 0.6, 0.5, 0.0]) {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
    }

    /// Masks of 5 blocks, block 0 fixed (kept in every mask), each player removed by one mask.
    fn one_removed(count: usize) -> Vec<Mask> {
        (0..count)
            .map(|k| Mask::from_removed(5, &[1 + k % 4]).unwrap())
            .collect()
    }

    #[test]
    fn rows_too_few_to_tell_the_blocks_apart_or_all_alike_are_warned_of() {
        let few = training_data_warnings(&one_removed(4), &[0], &[0.1, 0.2, 0.3, 0.4]);
        assert_eq!(few.len(), 1, "{few:?}");
        assert!(few[0].starts_with("4 rows for 4 players"), "{few:?}");
        let values = [0.1, 0.2, 0.3, 0.4, 0.5];
        assert!(training_data_warnings(&one_removed(5), &[0], &values).is_empty());
        let alike = training_data_warnings(&one_removed(5), &[0], &[0.7; 5]);
        assert_eq!(alike.len(), 1, "{alike:?}");
        assert!(alike[0].contains("same value (0.7)"), "{alike:?}");
    }

    /// A player that every row keeps (or every row removes) is measured by none: the quadratic
    /// and the forest give it 0, the MLP its initial weights' effect, and nothing said so. The
    /// fixed blocks, kept in every row by design, are not warned of.
    #[test]
    fn players_that_no_row_varies_are_warned_of() {
        let values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
        // Blocks 1 to 3 removed in turn: block 4 is kept in every row.
        let masks: Vec<Mask> = (0..6)
            .map(|k| Mask::from_removed(5, &[1 + k % 3]).unwrap())
            .collect();
        let warnings = training_data_warnings(&masks, &[0], &values);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("block(s) [4] are kept in every row but are players"),
            "{warnings:?}"
        );
        // Not fixed, block 0 is a player kept in every row too.
        let warnings = training_data_warnings(&masks, &[], &values);
        assert!(warnings[0].contains("[0, 4] are kept in"), "{warnings:?}");
        // Removed in every row.
        let removed: Vec<Mask> = masks.iter().map(|mask| mask.with(4, false)).collect();
        let warnings = training_data_warnings(&removed, &[0], &values);
        assert!(
            warnings[0].starts_with("block(s) [4] are removed from every row"),
            "{warnings:?}"
        );
    }

    #[test]
    fn bad_training_data_is_refused() {
        let masks = vec![Mask::full(3), Mask::empty(3)];
        let opts = FitOptions::default();
        let kind = SurrogateKind::Quadratic;
        assert!(matches!(
            fit(kind, &masks, &[1.0], &opts),
            Err(SurrogateError::LengthMismatch { .. })
        ));
        assert!(matches!(
            fit(kind, &[], &[], &opts),
            Err(SurrogateError::TooFewRows { rows: 0 })
        ));
        assert!(matches!(
            fit(kind, &masks[..1], &[1.0], &opts),
            Err(SurrogateError::TooFewRows { rows: 1 })
        ));
        assert!(matches!(
            fit(kind, &masks, &[1.0, f64::NAN], &opts),
            Err(SurrogateError::NonFiniteTarget { row: 1, .. })
        ));
        let mixed = vec![Mask::full(3), Mask::full(4)];
        assert!(matches!(
            fit(kind, &mixed, &[1.0, 0.0], &opts),
            Err(SurrogateError::MixedMaskLengths { row: 1, .. })
        ));
        let bad = FitOptions {
            ridge_alpha: -1.0,
            ..FitOptions::default()
        };
        let err = fit(kind, &masks, &[1.0, 0.0], &bad).unwrap_err();
        assert!(err.to_string().contains("ridge_alpha"), "{err}");
    }

    #[test]
    fn surrogate_game_checks_mask_lengths() {
        let model = fit(
            SurrogateKind::Quadratic,
            &[
                Mask::full(2),
                Mask::empty(2),
                Mask::from_kept(vec![true, false]),
            ],
            &[3.0, 0.0, 1.0],
            &FitOptions::default(),
        )
        .unwrap();
        let mut game = SurrogateGame(&model);
        assert_eq!(game.num_players(), 2);
        assert!(game.values(&[Mask::full(3)]).is_err());
        assert_eq!(game.values(&[Mask::full(2)]).unwrap().len(), 1);
    }
}
