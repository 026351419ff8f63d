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
pub mod game_value;
pub mod input;
pub mod linalg;
pub mod lock;
pub mod mask;
pub mod players;
pub mod progress;
pub mod synthetic;

pub use atomic::{
    atomic_write, atomic_write_bytes, dead_writers_siblings, remove_file_if_there, AtomicWriteError,
};
pub use contained::contain_panic;
pub use design::Design;
pub use device::Device;
pub use game::{values_checked, CachedGame, CountingGame, Game, GameError, RecordedGame};
pub use game_value::GameValue;
pub use input::{file_kind, open_input, open_stream_input, read_input, refuse_special};
pub use lock::{FileLock, LockError};
pub use mask::{Mask, MaskError};
pub use players::{PlayerGame, Players, PlayersError};
pub use progress::Tenths;

/// Hex sha256 of some bytes: the one hash used for model, dataset and part ids.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The id of a `tokenizer.json`, as token tables record it (`tokenizer_sha256`): hex sha256 of
/// its JSON in one canonical form (keys sorted, no whitespace), so one tokenizer saved pretty
/// or compact, by transformers or by tokenizers, has one id; the bytes' sha256 when they are not
/// JSON.
pub fn tokenizer_sha256(bytes: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        // serde_json's maps are sorted by key (no `preserve_order`), and it writes no spaces.
        Ok(value) => sha256_hex(value.to_string().as_bytes()),
        Err(_) => sha256_hex(bytes),
    }
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

/// `values` with each value once, where it was first listed: a k, budget, method or estimator
/// asked for twice on a command line is one plan, one run, one column (not two rows that later
/// stages cannot tell apart).
pub fn distinct<T: PartialEq + Clone>(values: &[T]) -> Vec<T> {
    let mut kept: Vec<T> = Vec::with_capacity(values.len());
    for value in values {
        if !kept.contains(value) {
            kept.push(value.clone());
        }
    }
    kept
}

#[cfg(test)]
mod distinct_tests {
    #[test]
    fn each_value_is_kept_once_where_it_was_first_listed() {
        assert_eq!(super::distinct(&[3, 6, 3, 9, 6]), vec![3, 6, 9]);
        assert!(super::distinct::<u8>(&[]).is_empty());
    }
}
