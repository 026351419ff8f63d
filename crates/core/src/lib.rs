//! The vocabulary every stage shares: a [`Mask`] (which blocks of the model are kept) and the
//! [`Game`] trait ("the value of these masks").
//!
//! Layer pruning is played as a cooperative game: each block of the network is a player and a
//! mask is a coalition. Everything that can give a coalition a value implements [`Game`]: the
//! ONNX evaluator running the real LLM (crate `layerprune-runtime`), a table of evaluations
//! recorded earlier ([`RecordedGame`]), a fitted surrogate, and the synthetic games used in
//! tests ([`synthetic`]). Estimators, samplers and selection rules are written once against the
//! trait and tested without a model.

pub mod device;
pub mod game;
pub mod mask;
pub mod objective;
pub mod synthetic;

pub use device::Device;
pub use game::{values_checked, CachedGame, CountingGame, Game, GameError, RecordedGame};
pub use mask::{Mask, MaskError};
pub use objective::Objective;

/// Hex sha256 of some bytes: the one hash used for model, dataset and part ids.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
