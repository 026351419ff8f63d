//! One entry point over every budgeted estimator on a live game (its masks asked for as it
//! samples), for the replay benchmark and the tests; the `shapley` stage, which estimates from
//! recorded tables, goes through [`crate::registry`].

use std::fmt;
use std::str::FromStr;

use layerprune_core::Game;

use crate::regression::SurrogateTarget;
use crate::semivalue::{base_masks_for_budget, published_strata, run_semivalue, MaskDistribution};
use crate::{
    banzhaf, kernelshap, permutation, regression, stratified, Estimates, Players, ShapleyError,
};

/// The estimators that spend a budget of game evaluations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EstimatorKind {
    /// The published stratified semivalue with the published strata scaled to the players.
    StratifiedSemivalue,
    Permutation,
    KernelShap,
    RegressionAdjusted,
    /// Regression adjustment with the exp-polynomial surrogate, residual over kernel pairs.
    RegressionAdjustedLog,
    /// Regression adjustment with the exp-polynomial surrogate, residual over antithetic
    /// permutation chains.
    RegressionAdjustedLogChains,
    /// Masks stratified by size, small sizes enumerated; stratum means of the evaluations.
    Stratified,
    /// The same masks, stratum means completed by a cross-fitted exp-polynomial surrogate.
    RegressionAdjustedStratified,
    BanzhafMsr,
}

impl EstimatorKind {
    pub const ALL: [EstimatorKind; 9] = [
        EstimatorKind::StratifiedSemivalue,
        EstimatorKind::Permutation,
        EstimatorKind::KernelShap,
        EstimatorKind::RegressionAdjusted,
        EstimatorKind::RegressionAdjustedLog,
        EstimatorKind::RegressionAdjustedLogChains,
        EstimatorKind::Stratified,
        EstimatorKind::RegressionAdjustedStratified,
        EstimatorKind::BanzhafMsr,
    ];

    /// The estimator name written in score tables.
    pub fn name(self) -> &'static str {
        match self {
            EstimatorKind::StratifiedSemivalue => crate::semivalue::STRATIFIED_SEMIVALUE,
            EstimatorKind::Permutation => permutation::PERMUTATION,
            EstimatorKind::KernelShap => kernelshap::KERNELSHAP,
            EstimatorKind::RegressionAdjusted => regression::REGRESSION_ADJUSTED,
            EstimatorKind::RegressionAdjustedLog => regression::REGRESSION_ADJUSTED_LOG,
            EstimatorKind::RegressionAdjustedLogChains => {
                regression::REGRESSION_ADJUSTED_LOG_CHAINS
            }
            EstimatorKind::Stratified => stratified::STRATIFIED_SHAPLEY,
            EstimatorKind::RegressionAdjustedStratified => {
                stratified::REGRESSION_ADJUSTED_STRATIFIED
            }
            EstimatorKind::BanzhafMsr => banzhaf::BANZHAF_MSR,
        }
    }

    /// Whether the estimand is the Shapley value (the semivalue and Banzhaf are not).
    pub fn estimates_shapley(self) -> bool {
        matches!(
            self,
            EstimatorKind::Permutation
                | EstimatorKind::KernelShap
                | EstimatorKind::RegressionAdjusted
                | EstimatorKind::RegressionAdjustedLog
                | EstimatorKind::RegressionAdjustedLogChains
                | EstimatorKind::Stratified
                | EstimatorKind::RegressionAdjustedStratified
        )
    }
}

impl EstimatorKind {
    /// Whether Σ φ̂ = v(N) − v(∅) holds exactly for every sample (the stratified estimators
    /// estimate each size's means separately, so theirs holds only in expectation).
    pub fn is_efficient(self) -> bool {
        self.estimates_shapley()
            && !matches!(
                self,
                EstimatorKind::Stratified | EstimatorKind::RegressionAdjustedStratified
            )
    }
}

impl fmt::Display for EstimatorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EstimatorKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        EstimatorKind::ALL
            .into_iter()
            .find(|k| k.name() == text)
            .ok_or_else(|| {
                let names: Vec<_> = EstimatorKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown estimator {text:?}; one of {}", names.join(", "))
            })
    }
}

/// Runs `kind` on `game` (a block game; fixed blocks kept) using at most `budget` distinct
/// evaluations.
pub fn run_estimator(
    kind: EstimatorKind,
    game: &mut dyn Game,
    players: &Players,
    budget: usize,
    seed: u64,
) -> Result<Estimates, ShapleyError> {
    Ok(run_estimator_with_fit(kind, game, players, budget, seed)?.0)
}

/// [`run_estimator`], also returning the held-out R² of the surrogate for the
/// regression-adjusted estimators (`None` for the others).
pub fn run_estimator_with_fit(
    kind: EstimatorKind,
    game: &mut dyn Game,
    players: &Players,
    budget: usize,
    seed: u64,
) -> Result<(Estimates, Option<f64>), ShapleyError> {
    let adjusted =
        |result: regression::RegressionAdjusted| (result.estimates, Some(result.held_out_r2));
    Ok(match kind {
        EstimatorKind::StratifiedSemivalue => {
            let bases = base_masks_for_budget(players.len(), budget);
            let published = published_strata(players.len());
            // A base mask per stratum at least: a stratum without one would be left out of the
            // average, and the estimate would be of another semivalue.
            if bases < published.len().max(1) {
                return Err(ShapleyError::BudgetTooSmall {
                    estimator: kind.name(),
                    players: players.len(),
                    budget,
                    needed: (players.len() + 1) * published.len().max(1),
                });
            }
            let strata = MaskDistribution::Strata(published);
            (run_semivalue(game, players, &strata, bases, seed)?, None)
        }
        EstimatorKind::Permutation => (
            permutation::run_permutation(game, players, budget, seed)?,
            None,
        ),
        EstimatorKind::KernelShap => (
            kernelshap::run_kernelshap(game, players, budget, seed)?,
            None,
        ),
        EstimatorKind::RegressionAdjusted => adjusted(regression::run_regression_adjusted_kernel(
            game,
            players,
            budget,
            seed,
            SurrogateTarget::Value,
        )?),
        EstimatorKind::RegressionAdjustedLog => {
            adjusted(regression::run_regression_adjusted_kernel(
                game,
                players,
                budget,
                seed,
                SurrogateTarget::LogValue,
            )?)
        }
        EstimatorKind::RegressionAdjustedLogChains => adjusted(
            regression::run_regression_adjusted_chains(game, players, budget, seed)?,
        ),
        EstimatorKind::Stratified => {
            stratified::run_stratified(game, players, budget, seed, false)?
        }
        EstimatorKind::RegressionAdjustedStratified => {
            stratified::run_stratified(game, players, budget, seed, true)?
        }
        EstimatorKind::BanzhafMsr => (banzhaf::run_banzhaf_msr(game, players, budget, seed)?, None),
    })
}
