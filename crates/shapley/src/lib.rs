//! Estimators of each block's contribution to model quality, written once against
//! [`layerprune_core::Game`] so the same code runs on the real LLM, on a recorded evaluation
//! table, on a fitted surrogate and on the synthetic games the tests use.
//!
//! Every model-free estimator comes in two pure halves, so the pipeline can sample masks
//! first, evaluate them on the LLM in a separate stage, and estimate later from the table:
//! a `*_design` function that draws the masks (plus the structure the estimate needs:
//! permutation chains, complementary pairs, strata) and an `*_estimate` function that turns
//! `(mask, value)` rows into [`Estimates`]. The `run_*` functions join the halves for a live
//! [`Game`](layerprune_core::Game), counting the distinct masks valued (the "LLM
//! evaluations").
//!
//! All designs and estimates work in *player space*: a mask has one entry per player. The
//! players may be a subset of the model's blocks ([`Players`]); the other blocks are fixed
//! and always kept, and [`Players`] maps player masks to block masks and back.
//!
//! Estimators (see docs/estimators.md for formulas, costs and guarantees):
//! - [`semivalue`]: the published stratified semivalue (not the Shapley value) and the
//!   marginal-based Banzhaf value;
//! - [`permutation`]: antithetic permutation sampling of the Shapley value;
//! - [`kernelshap`]: paired KernelSHAP with the efficiency constraint;
//! - [`regression`]: regression-adjusted Monte Carlo with a cross-fitted surrogate (a
//!   quadratic of the value, or exp of a polynomial of its log);
//! - [`stratified`]: masks stratified by coalition size, small sizes enumerated; plain, or
//!   regression-adjusted with a cross-fitted exp-polynomial surrogate (the most accurate);
//! - [`banzhaf`]: the Banzhaf value by maximum sample reuse;
//! - [`exact`]: exact Shapley and Banzhaf values from a fully enumerated table;
//! - [`surrogate`]: the Shapley value of a surrogate model (closed form or sampled);
//! - [`progress`]: how the long loops report their progress (`tracing` events);
//! - [`inputs`]: the `shapley` stage's files (evaluation table, mask table, surrogate), read
//!   and checked to describe one game, scored by the registry into a score table.

pub mod banzhaf;
pub mod estimator;
pub mod exact;
pub mod inputs;
pub mod kernelshap;
pub mod permutation;
pub mod polynomial;
pub mod progress;
pub mod registry;
pub mod regression;
pub mod semivalue;
pub mod stratified;
pub mod surrogate;
pub mod synthetic;
mod values;

pub use banzhaf::NonuniformMasks;
pub use estimator::{run_estimator, run_estimator_with_fit};
pub use layerprune_core::{PlayerGame, Players, PlayersError};
pub use registry::{
    estimate, estimate_recorded, refuse_sampling_a_closed_form_ignores, Coalitions, DesignRow,
    Estimated, Estimator, EstimatorInputs, EstimatorOptions, Needs, RecordedDesign,
    PUBLISHED_BASE_MASKS,
};
pub(crate) use values::evaluate_masks_for;
pub use values::{evaluate_masks, interval_factor_95, Estimates, ValueTable};

use layerprune_core::GameError;

/// Why an estimate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ShapleyError {
    #[error("the game could not value the masks: {0}")]
    Game(GameError),
    #[error("mask {mask} is needed by the estimator but is not in the evaluation table")]
    MissingMask { mask: String },
    #[error("{estimator} needs at least {needed} evaluations for {players} players; the budget is {budget}")]
    BudgetTooSmall {
        estimator: &'static str,
        players: usize,
        budget: usize,
        needed: usize,
    },
    #[error("surrogate: {0}")]
    Surrogate(#[from] layerprune_surrogate::SurrogateError),
    #[error("player set: {0}")]
    Players(String),
    #[error(transparent)]
    PlayerSet(#[from] PlayersError),
    #[error("{0}")]
    Design(String),
    /// A player (its index among the players; the registry, which knows the blocks, names the
    /// block) the design keeps in every mask or in none: no difference of means.
    #[error("player {player} is kept in every mask or in none; draw more masks")]
    NeverVaries { player: usize },
    #[error(
        "{estimator} reads mask {mask}, whose value is {value}, which no estimate can average (a \
         collapsed model's NLL is +inf: its neg-nll and nll-increase are -inf, its utility 0)"
    )]
    NotFinite {
        estimator: &'static str,
        mask: String,
        value: f64,
    },
    #[error(
        "{0}: the linear system is singular or too ill-conditioned to solve (too few distinct \
         masks for the number of players?)"
    )]
    Singular(&'static str),
}

impl From<GameError> for ShapleyError {
    fn from(error: GameError) -> Self {
        ShapleyError::Game(error)
    }
}

/// The random generator every design uses: seeded, portable, the same on every platform.
pub fn rng_from_seed(seed: u64) -> rand_chacha::ChaCha8Rng {
    use rand::SeedableRng;
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}
