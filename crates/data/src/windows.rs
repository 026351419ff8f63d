//! Cutting a token stream into fixed-length windows.

use std::fmt;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::DataError;

/// Where the windows start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowMode {
    /// Back to back from token `offset`: the first `count × length` tokens after it.
    Consecutive { offset: usize },
    /// Non-overlapping windows at random positions, every placement equally likely, drawn with
    /// ChaCha8 seeded by `seed`; the windows come in stream order.
    Random { seed: u64 },
}

/// `count` windows of `length` tokens each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    pub count: usize,
    pub length: usize,
    pub mode: WindowMode,
}

impl fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mode {
            WindowMode::Consecutive { offset } => write!(
                f,
                "consecutive windows {}x{} from token {offset}",
                self.count, self.length
            ),
            WindowMode::Random { seed } => write!(
                f,
                "random non-overlapping windows {}x{} seed {seed}",
                self.count, self.length
            ),
        }
    }
}

/// The windows `spec` asks for, or an error when the stream is too short for them.
pub fn cut_windows(tokens: &[u32], spec: &WindowSpec) -> Result<Vec<Vec<u32>>, DataError> {
    if spec.count == 0 || spec.length == 0 {
        return Err(DataError::BadWindows(format!(
            "{} windows of {} tokens: both must be at least 1",
            spec.count, spec.length
        )));
    }
    let needed = spec.count.checked_mul(spec.length).ok_or_else(|| {
        DataError::BadWindows(format!(
            "{} windows of {} tokens overflow",
            spec.count, spec.length
        ))
    })?;
    let too_few = |context: String| DataError::TooFewTokens {
        available: tokens.len(),
        count: spec.count,
        length: spec.length,
        context,
    };
    let starts: Vec<usize> = match spec.mode {
        WindowMode::Consecutive { offset } => {
            if offset
                .checked_add(needed)
                .is_none_or(|end| end > tokens.len())
            {
                return Err(too_few(format!(" after offset {offset}")));
            }
            (0..spec.count)
                .map(|index| offset + index * spec.length)
                .collect()
        }
        WindowMode::Random { seed } => {
            if needed > tokens.len() {
                return Err(too_few(String::new()));
            }
            random_starts(tokens.len() - needed, spec.count, spec.length, seed)
        }
    };
    Ok(starts
        .into_iter()
        .map(|start| tokens[start..start + spec.length].to_vec())
        .collect())
}

/// Start positions of `count` non-overlapping windows of `length` tokens in a stream with
/// `slack` tokens to spare, uniformly over all placements.
///
/// A placement is the `count + 1` gaps around the windows, which add up to `slack`; those are in
/// one-to-one correspondence ("stars and bars") with the `count`-subsets of
/// `0..slack + count`: with the subset sorted as x₀ < x₁ < …, window i starts at
/// (xᵢ − i) + i·length. Drawing the subset uniformly therefore draws the placement uniformly.
fn random_starts(slack: usize, count: usize, length: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut chosen = rand::seq::index::sample(&mut rng, slack + count, count).into_vec();
    chosen.sort_unstable();
    chosen
        .into_iter()
        .enumerate()
        .map(|(index, bar)| bar - index + index * length)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(len: u32) -> Vec<u32> {
        (0..len).collect()
    }

    #[test]
    fn consecutive_windows_are_the_tokens_after_the_offset() {
        let tokens = stream(50);
        let spec = WindowSpec {
            count: 3,
            length: 4,
            mode: WindowMode::Consecutive { offset: 5 },
        };
        let windows = cut_windows(&tokens, &spec).unwrap();
        assert_eq!(
            windows,
            vec![vec![5, 6, 7, 8], vec![9, 10, 11, 12], vec![13, 14, 15, 16]]
        );
        // Exactly enough tokens is fine; one short is an error naming the offset.
        let exact = WindowSpec {
            mode: WindowMode::Consecutive { offset: 38 },
            ..spec
        };
        assert_eq!(
            cut_windows(&tokens, &exact).unwrap()[2],
            vec![46, 47, 48, 49]
        );
        let short = WindowSpec {
            mode: WindowMode::Consecutive { offset: 39 },
            ..spec
        };
        let error = cut_windows(&tokens, &short).unwrap_err().to_string();
        assert!(
            error.contains("50 tokens") && error.contains("offset 39"),
            "{error}"
        );
    }

    fn assert_disjoint_and_in_order(windows: &[Vec<u32>], length: usize) {
        for window in windows {
            assert_eq!(window.len(), length);
            // The stream is 0, 1, 2, …: a window is a contiguous run.
            assert!(window.windows(2).all(|pair| pair[1] == pair[0] + 1));
        }
        for pair in windows.windows(2) {
            assert!(pair[0][length - 1] < pair[1][0], "overlap: {pair:?}");
        }
    }

    #[test]
    fn random_windows_do_not_overlap_and_follow_the_seed() {
        let tokens = stream(1000);
        let spec = |seed| WindowSpec {
            count: 10,
            length: 64,
            mode: WindowMode::Random { seed },
        };
        let first = cut_windows(&tokens, &spec(0)).unwrap();
        assert_eq!(first.len(), 10);
        assert_disjoint_and_in_order(&first, 64);
        assert_eq!(first, cut_windows(&tokens, &spec(0)).unwrap());
        let other = cut_windows(&tokens, &spec(1)).unwrap();
        assert_disjoint_and_in_order(&other, 64);
        assert_ne!(first, other);
    }

    #[test]
    fn random_windows_fill_a_stream_with_no_slack_and_refuse_a_short_one() {
        let tokens = stream(40);
        let spec = WindowSpec {
            count: 5,
            length: 8,
            mode: WindowMode::Random { seed: 7 },
        };
        let windows = cut_windows(&tokens, &spec).unwrap();
        assert_eq!(windows.concat(), tokens);
        let error = cut_windows(&tokens[..39], &spec).unwrap_err();
        assert!(matches!(
            error,
            DataError::TooFewTokens { available: 39, .. }
        ));
    }

    #[test]
    fn random_placements_are_spread_over_the_stream() {
        // With one window of length 1 in 10 tokens, each start should come up about equally.
        let tokens = stream(10);
        let mut counts = [0usize; 10];
        for seed in 0..2000 {
            let spec = WindowSpec {
                count: 1,
                length: 1,
                mode: WindowMode::Random { seed },
            };
            counts[cut_windows(&tokens, &spec).unwrap()[0][0] as usize] += 1;
        }
        // Expected 200 each; a count outside 130..270 is > 5 standard deviations away.
        assert!(
            counts.iter().all(|&count| (130..270).contains(&count)),
            "{counts:?}"
        );
        // Two windows of 4 in 10 tokens: 2 spare tokens, so 6 placements, each about 1/6.
        let mut placements = std::collections::BTreeMap::new();
        for seed in 0..1200 {
            let spec = WindowSpec {
                count: 2,
                length: 4,
                mode: WindowMode::Random { seed },
            };
            let windows = cut_windows(&tokens, &spec).unwrap();
            *placements
                .entry((windows[0][0], windows[1][0]))
                .or_insert(0) += 1;
        }
        assert_eq!(placements.len(), 6, "{placements:?}");
        assert!(
            placements
                .values()
                .all(|&count| (120..280).contains(&count)),
            "{placements:?}"
        );
    }

    #[test]
    fn empty_windows_are_refused() {
        let spec = WindowSpec {
            count: 0,
            length: 4,
            mode: WindowMode::Consecutive { offset: 0 },
        };
        assert!(matches!(
            cut_windows(&stream(10), &spec),
            Err(DataError::BadWindows(_))
        ));
    }
}
