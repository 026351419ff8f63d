//! Which strata (numbers of removed players) to sample.

use crate::SamplingError;

/// The published strata for LLaMA-2-7B (32 blocks): 2, 5, 8, 11 or 14 blocks removed.
pub const PUBLISHED_STRATA_OF_32: [usize; 5] = [2, 5, 8, 11, 14];

/// How the strata are chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum StrataSpec {
    /// Explicit numbers of removed players, each in `0..=players` (signed so that a negative
    /// number from a user is reported, not wrapped).
    Removed(Vec<i64>),
    /// Target pruning ratios: fractions of the players removed, each strictly between zero
    /// and one. A ratio `r` gives the strata `c - s ..= c + s` with `c = round(r * players)` and the
    /// spread `s` = [`ratio_spread`], clamped to `1..=players - 1`, so the sampled masks
    /// surround the pruning level that will be used.
    Ratios(Vec<f64>),
    /// The published 2, 5, 8, 11, 14 of 32, scaled by `players / 32`, rounded (half away from
    /// zero), clamped to `1..=players - 1` and deduplicated.
    PublishedDefault,
}

/// A stratum as a user writes it (`sample-masks --strata`, `shapley --strata`): a number of
/// removed players, 0 or more (0: the full model). Whether the game has that many players is
/// checked against the game ([`resolve_strata`]). The error reads as a flag's (a clap
/// `value_parser`): one wording for the stages that take strata.
pub fn parse_stratum(text: &str) -> Result<usize, String> {
    text.trim()
        .parse::<usize>()
        .map_err(|_| format!("{text:?} is not a stratum: a number of removed blocks, 0 or more"))
}

/// The strata a user gave (`sample-masks --strata`, each read by [`parse_stratum`]) as a spec
/// for a game of `players` players. A number past `i64::MAX`, which the spec cannot hold, is
/// out of range of any game: refused here with the number as given (until 2026-12-07 it was
/// taken as `i64::MAX` and reported as "stratum 9223372036854775807"). The others are checked
/// against the game by [`resolve_strata`].
pub fn given_strata(given: &[usize], players: usize) -> Result<StrataSpec, SamplingError> {
    given
        .iter()
        .map(|&stratum| {
            i64::try_from(stratum).map_err(|_| SamplingError::StratumOutOfRange {
                stratum: stratum as i128,
                players,
            })
        })
        .collect::<Result<Vec<i64>, _>>()
        .map(StrataSpec::Removed)
}

/// Half-width of the strata around a target ratio: one stratum per 32 players on each side,
/// at least one (so 32 players and a ratio of 0.35 give strata 10, 11, 12).
pub fn ratio_spread(players: usize) -> usize {
    ((players as f64 / 32.0).round() as usize).max(1)
}

/// The strata of a spec for a game of `players` players: ascending, without duplicates.
pub fn resolve_strata(spec: &StrataSpec, players: usize) -> Result<Vec<usize>, SamplingError> {
    let mut strata = match spec {
        StrataSpec::Removed(removed) => {
            if removed.is_empty() {
                return Err(SamplingError::NoStrata);
            }
            let mut strata = Vec::with_capacity(removed.len());
            for &stratum in removed {
                match usize::try_from(stratum) {
                    Ok(k) if k <= players => strata.push(k),
                    _ => {
                        return Err(SamplingError::StratumOutOfRange {
                            stratum: stratum.into(),
                            players,
                        })
                    }
                }
            }
            strata
        }
        StrataSpec::Ratios(ratios) => {
            if ratios.is_empty() {
                return Err(SamplingError::NoStrata);
            }
            if players < 2 {
                return Err(SamplingError::TooFewPlayers { players });
            }
            if let Some(&ratio) = ratios.iter().find(|r| !(**r > 0.0 && **r < 1.0)) {
                return Err(SamplingError::BadRatio { ratio });
            }
            let spread = ratio_spread(players) as i64;
            let mut strata = Vec::new();
            for ratio in ratios {
                let center = (ratio * players as f64).round() as i64;
                for k in center - spread..=center + spread {
                    strata.push(k.clamp(1, players as i64 - 1) as usize);
                }
            }
            strata
        }
        StrataSpec::PublishedDefault => {
            if players < 2 {
                return Err(SamplingError::TooFewPlayers { players });
            }
            PUBLISHED_STRATA_OF_32
                .iter()
                .map(|&k| {
                    let scaled = (k as f64 * players as f64 / 32.0).round() as usize;
                    scaled.clamp(1, players - 1)
                })
                .collect()
        }
    };
    strata.sort_unstable();
    strata.dedup();
    Ok(strata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_default_is_exact_at_32_and_scales() {
        let strata = resolve_strata(&StrataSpec::PublishedDefault, 32).unwrap();
        assert_eq!(strata, vec![2, 5, 8, 11, 14]);
        // 64 blocks (Mamba-2.8B): doubled.
        let strata = resolve_strata(&StrataSpec::PublishedDefault, 64).unwrap();
        assert_eq!(strata, vec![4, 10, 16, 22, 28]);
        // 4 players: 0.25, 0.625, 1, 1.375, 1.75 round to 0, 1, 1, 1, 2 and clamp to 1..=3.
        let strata = resolve_strata(&StrataSpec::PublishedDefault, 4).unwrap();
        assert_eq!(strata, vec![1, 2]);
        assert_eq!(
            resolve_strata(&StrataSpec::PublishedDefault, 1),
            Err(SamplingError::TooFewPlayers { players: 1 })
        );
    }

    #[test]
    fn ratios_surround_their_target() {
        let strata = resolve_strata(&StrataSpec::Ratios(vec![0.35]), 32).unwrap();
        assert_eq!(strata, vec![10, 11, 12]);
        let strata = resolve_strata(&StrataSpec::Ratios(vec![0.1, 0.2]), 64).unwrap();
        // centres 6 and 13 with a spread of 2
        assert_eq!(strata, vec![4, 5, 6, 7, 8, 11, 12, 13, 14, 15]);
        // clamped and deduplicated at the edge
        let strata = resolve_strata(&StrataSpec::Ratios(vec![0.01]), 10).unwrap();
        assert_eq!(strata, vec![1]);
        for ratio in [0.0, 1.0, -0.2, f64::NAN] {
            assert!(matches!(
                resolve_strata(&StrataSpec::Ratios(vec![0.2, ratio]), 10),
                Err(SamplingError::BadRatio { .. })
            ));
        }
    }

    #[test]
    fn a_stratum_is_a_count_of_removed_blocks() {
        assert_eq!(parse_stratum("0"), Ok(0));
        assert_eq!(parse_stratum(" 5 "), Ok(5));
        for text in ["-1", "2.5", "", "two"] {
            let message = parse_stratum(text).unwrap_err();
            assert_eq!(
                message,
                format!("{text:?} is not a stratum: a number of removed blocks, 0 or more")
            );
        }
    }

    #[test]
    fn explicit_strata_are_checked_sorted_and_deduplicated() {
        let strata = resolve_strata(&StrataSpec::Removed(vec![5, 2, 5, 0]), 8).unwrap();
        assert_eq!(strata, vec![0, 2, 5]);
        assert_eq!(
            resolve_strata(&StrataSpec::Removed(vec![2, 9]), 8),
            Err(SamplingError::StratumOutOfRange {
                stratum: 9,
                players: 8
            })
        );
        assert_eq!(
            resolve_strata(&StrataSpec::Removed(vec![-1]), 8),
            Err(SamplingError::StratumOutOfRange {
                stratum: -1,
                players: 8
            })
        );
        assert_eq!(
            resolve_strata(&StrataSpec::Removed(vec![]), 8),
            Err(SamplingError::NoStrata)
        );
    }

    /// A stratum given past what the spec holds (`i64`) is reported as given, not as
    /// `i64::MAX` (`--strata 2,18446744073709551615` said "stratum 9223372036854775807").
    #[test]
    fn a_given_stratum_past_any_game_is_reported_as_given() {
        assert_eq!(
            given_strata(&[2, 5], 8),
            Ok(StrataSpec::Removed(vec![2, 5]))
        );
        let error = given_strata(&[2, usize::MAX], 8).unwrap_err();
        assert_eq!(
            error,
            SamplingError::StratumOutOfRange {
                stratum: usize::MAX as i128,
                players: 8
            }
        );
        assert!(
            error.to_string().starts_with(&format!(
                "stratum {} (number of removed blocks)",
                usize::MAX
            )),
            "{error}"
        );
    }
}
