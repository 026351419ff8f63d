//! The vocabulary every stage shares: a [`Mask`] (which blocks of the model are kept) and the
//! [`Game`] trait ("the value of these masks").
//!
//! Layer pruning is played as a cooperative game: each block of the network is a player and a
//! mask is a coalition. Everything that can give a coalition a value implements [`Game`]: the
//! ONNX evaluator running the real LLM (crate `layerprune-runtime`), a table of evaluations
//! recorded earlier ([`RecordedGame`]), a fitted surrogate, and the synthetic games used in
//! tests ([`synthetic`]). Estimators, samplers and selection rules are written once against the
//! trait and tested without a model.
//!
//! Beside them, what every crate above needs and none owns: the [`Device`] a game is played
//! on, exact enumeration of small games ([`exact`]), the small dense linear algebra of the
//! estimators ([`linalg`]), and the file protocols of every stage (atomic writes, the
//! one-run-at-a-time [`FileLock`], inputs that refuse FIFOs and /proc, decoder panics contained,
//! the tokenizer id a token table records).

pub mod aside;
pub mod atomic;
pub mod contained;
pub mod design;
pub mod device;
pub mod exact;
pub mod game;
pub mod game_value;
pub mod input;
pub mod interrupt;
pub mod linalg;
pub mod lock;
pub mod mask;
pub mod memory;
pub mod parallel;
pub mod players;
pub mod progress;
pub mod synthetic;

pub use aside::{KeptAside, PutBack};
pub use atomic::{
    atomic_write, atomic_write_bytes, atomic_write_staged, dead_writers_siblings,
    longest_sibling_name, read_only_refusal, refuse_read_only, remove_file_if_there, sibling_name,
    AtomicWriteError, SiblingInUse, StagedFile,
};
pub use contained::contain_panic;

/// The most blocks a model may have, everywhere one is read (a model folder's manifest, a
/// table's `num_blocks`): far above any real model (hundreds), yet far below what a count of
/// players or masks of that size would exhaust memory with.
pub const MAX_BLOCKS: usize = 10_000;
pub use design::Design;
pub use device::Device;
pub use game::{values_checked, CachedGame, CountingGame, Game, GameError, RecordedGame};
pub use game_value::GameValue;
pub use input::{file_kind, open_input, open_stream_input, read_input, refuse_special};
pub use interrupt::Interrupted;
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
/// its JSON in one canonical form (serde_json's: keys sorted, no whitespace, numbers in their
/// shortest round-trip form), so the same contents in any layout (pretty or compact, keys in any
/// order) have one id; the bytes' sha256 when they are not JSON. (A tokenizer that another
/// version of `tokenizers` saved with other contents, e.g. merges as pairs, has another id.)
/// Numbers are parsed exactly (serde_json's `float_roundtrip`, on here), so a Unigram score has
/// one id whichever binary computes it.
pub fn tokenizer_sha256(bytes: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        // serde_json's maps are sorted by key (no `preserve_order`), and it writes no spaces.
        Ok(value) => sha256_hex(value.to_string().as_bytes()),
        Err(_) => sha256_hex(bytes),
    }
}

/// `C(n, k)`, saturating at `u128::MAX` exactly when it does not fit (the middle ones from
/// `n = 132` on): the one binomial coefficient of the project.
pub fn binomial(n: usize, k: usize) -> u128 {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    let mut result: u128 = 1;
    for i in 0..k {
        // C(n, i + 1) = C(n, i) (n − i) / (i + 1), divided before it is multiplied: with
        // g = gcd(C(n, i), i + 1), (i + 1) / g divides n − i, so each step's one product is
        // C(n, i + 1) itself and overflows only when that does not fit. (Multiplying first
        // overflowed up to i + 1 times earlier: C(130, 65), which fits, came out saturated.)
        let divisor = (i + 1) as u128;
        let common = gcd(result, divisor);
        let factor = (n - i) as u128 / (divisor / common);
        match (result / common).checked_mul(factor) {
            Some(next) => result = next,
            None => return u128::MAX,
        }
    }
    result
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
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
mod binomial_tests {
    use super::binomial;

    #[test]
    fn binomials_are_exact_up_to_the_largest_that_fits() {
        assert_eq!(binomial(5, 2), 10);
        assert_eq!(binomial(5, 6), 0);
        assert_eq!(binomial(64, 32), 1_832_624_140_942_590_534);
        // Fits in u128 (about 9.5e37); it came out as u128::MAX while the multiplication
        // before the division overflowed.
        assert_eq!(
            binomial(130, 65),
            95_067_625_827_960_698_145_584_333_020_095_113_100
        );
        assert_eq!(binomial(130, 64), binomial(130, 66));
        // C(131, 65) (about 1.9e38) still fits, C(132, 66) (about 3.8e38) does not.
        assert_eq!(
            binomial(131, 65),
            188_694_833_082_770_476_622_296_176_145_946_360_850
        );
        assert_eq!(binomial(132, 66), u128::MAX);
        assert_eq!(binomial(200, 100), u128::MAX);
        // Pascal's rule wherever the three fit.
        for n in 1..=131 {
            for k in 1..n {
                let (a, b, c) = (binomial(n - 1, k - 1), binomial(n - 1, k), binomial(n, k));
                if c != u128::MAX {
                    assert_eq!(a + b, c, "C({n}, {k})");
                }
            }
        }
    }
}

#[cfg(test)]
mod distinct_tests {
    #[test]
    fn each_value_is_kept_once_where_it_was_first_listed() {
        assert_eq!(super::distinct(&[3, 6, 3, 9, 6]), vec![3, 6, 9]);
        assert!(super::distinct::<u8>(&[]).is_empty());
    }
}

#[cfg(test)]
mod tokenizer_id_tests {
    use super::{sha256_hex, tokenizer_sha256};

    #[test]
    fn a_tokenizer_has_one_id_in_any_layout_and_its_scores_are_kept_exactly() {
        let pretty =
            b"{\n  \"model\": {\"vocab\": [[\"a\", -15.275492379532281]]},\n  \"added\": []\n}";
        let compact = br#"{"added":[],"model":{"vocab":[["a",-15.275492379532281]]}}"#;
        assert_eq!(tokenizer_sha256(pretty), tokenizer_sha256(compact));
        // The canonical form is the compact one with the score as written: parsed exactly (a
        // parse that rounds would give -15.27549237953228, and another id).
        assert_eq!(tokenizer_sha256(pretty), sha256_hex(compact));
        let other = br#"{"added":[],"model":{"vocab":[["a",-15.27549237953228]]}}"#;
        assert_ne!(tokenizer_sha256(compact), tokenizer_sha256(other));
        // Not JSON: the bytes' hash.
        assert_eq!(
            tokenizer_sha256(b"\x00not json"),
            sha256_hex(b"\x00not json")
        );
    }
}
