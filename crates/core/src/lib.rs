//! The vocabulary every stage shares: a [`Mask`] (which blocks of the model are kept) and the
//! [`Game`] trait ("the value of these masks").
//!
//! Layer pruning is played as a cooperative game: each block of the network is a player and a
//! mask is a coalition. Everything that can give a coalition a value implements [`Game`]: the
//! ONNX evaluator running the real LLM (crate `layerprune-runtime`), a table of evaluations
//! recorded earlier ([`RecordedGame`]), a fitted surrogate, and the synthetic games used in
//! tests ([`synthetic`]). Estimators, samplers and selection rules are written once against the
//! trait and tested without a model.

pub mod atomic;
pub mod contained;
pub mod design;
pub mod device;
pub mod exact;
pub mod game;
pub mod linalg;
pub mod lock;
pub mod mask;
pub mod objective;
pub mod players;
pub mod progress;
pub mod synthetic;

pub use atomic::{atomic_write, atomic_write_bytes, AtomicWriteError};
pub use contained::contain_panic;
pub use design::Design;
pub use device::Device;
pub use game::{values_checked, CachedGame, CountingGame, Game, GameError, RecordedGame};
pub use lock::{FileLock, LockError};
pub use mask::{Mask, MaskError};
pub use objective::Objective;
pub use players::{PlayerGame, Players, PlayersError};
pub use progress::Tenths;

/// Hex sha256 of some bytes: the one hash used for model, dataset and part ids.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `C(n, k)`, saturating at `u128::MAX` (only reached far beyond any model's block count): the
/// one binomial coefficient of the project.
pub fn binomial(n: usize, k: usize) -> u128 {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    let mut result: u128 = 1;
    for i in 0..k {
        // result * (n - i) / (i + 1) is exact at each step: it is C(n, i + 1).
        match result.checked_mul((n - i) as u128) {
            Some(product) => result = product / (i as u128 + 1),
            None => return u128::MAX,
        }
    }
    result
}
