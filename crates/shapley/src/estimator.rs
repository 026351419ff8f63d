//! The estimators of the one registry ([`Estimator`]) that run on a live game, spending a
//! budget of evaluations as they sample: the replay benchmark and the tests run them this way;
//! the `shapley` stage runs the same estimators on recorded tables ([`crate::registry`]).

use layerprune_core::Game;

use crate::registry::Estimator;
use crate::regression::SurrogateTarget;
use crate::semivalue::{base_masks_for_budget, published_strata, run_semivalue, MaskDistribution};
use crate::{
    banzhaf, kernelshap, permutation, regression, stratified, Estimates, Players, ShapleyError,
};

impl Estimator {
    /// The estimators that run on a live game with a budget of evaluations ([`run_estimator`]):
    /// every one but those that read only a surrogate's own values or need every mask.
    pub const BUDGETED: [Estimator; 9] = [
        Estimator::StratifiedSemivalue,
        Estimator::Permutation,
        Estimator::KernelShap,
        Estimator::RegressionAdjusted,
        Estimator::RegressionAdjustedExp,
        Estimator::RegressionAdjustedExpChains,
        Estimator::Stratified,
        Estimator::RegressionAdjustedStratified,
        Estimator::BanzhafMsr,
    ];

    /// Whether the estimand is the Shapley value (the semivalue and Banzhaf are not).
    pub fn estimates_shapley(self) -> bool {
        matches!(
            self,
            Estimator::SurrogateShapley
                | Estimator::Permutation
                | Estimator::KernelShap
                | Estimator::RegressionAdjusted
                | Estimator::RegressionAdjustedExp
                | Estimator::RegressionAdjustedExpChains
                | Estimator::Stratified
                | Estimator::RegressionAdjustedStratified
                | Estimator::Exact
        )
    }

    /// Whether Σ φ̂ = v(N) − v(∅) holds exactly for every sample (the stratified estimators
    /// estimate each size's means separately, so theirs holds only in expectation).
    pub fn is_efficient(self) -> bool {
        self.estimates_shapley()
            && !matches!(
                self,
                Estimator::Stratified | Estimator::RegressionAdjustedStratified
            )
    }
}

/// Runs `kind` (one of [`Estimator::BUDGETED`]) on `game` (a block game; fixed blocks kept)
/// using at most `budget` distinct evaluations.
pub fn run_estimator(
    kind: Estimator,
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
    kind: Estimator,
    game: &mut dyn Game,
    players: &Players,
    budget: usize,
    seed: u64,
) -> Result<(Estimates, Option<f64>), ShapleyError> {
    let adjusted =
        |result: regression::RegressionAdjusted| (result.estimates, Some(result.held_out_r2));
    Ok(match kind {
        Estimator::StratifiedSemivalue => {
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
        Estimator::Permutation => (
            permutation::run_permutation(game, players, budget, seed)?,
            None,
        ),
        Estimator::KernelShap => (
            kernelshap::run_kernelshap(game, players, budget, seed)?,
            None,
        ),
        Estimator::RegressionAdjusted => adjusted(regression::run_regression_adjusted_kernel(
            game,
            players,
            budget,
            seed,
            SurrogateTarget::Value,
        )?),
        Estimator::RegressionAdjustedExp => adjusted(regression::run_regression_adjusted_kernel(
            game,
            players,
            budget,
            seed,
            SurrogateTarget::LogValue,
        )?),
        Estimator::RegressionAdjustedExpChains => adjusted(
            regression::run_regression_adjusted_chains(game, players, budget, seed)?,
        ),
        Estimator::Stratified => stratified::run_stratified(game, players, budget, seed, false)?,
        Estimator::RegressionAdjustedStratified => {
            stratified::run_stratified(game, players, budget, seed, true)?
        }
        Estimator::BanzhafMsr => (banzhaf::run_banzhaf_msr(game, players, budget, seed)?, None),
        Estimator::BanzhafMarginal | Estimator::SurrogateShapley | Estimator::Exact => {
            return Err(ShapleyError::Design(format!(
                "{kind} does not spend a budget on a live game: it reads a surrogate or every \
                 mask (one of {})",
                Estimator::BUDGETED.map(Estimator::name).join(", ")
            )))
        }
    })
}
