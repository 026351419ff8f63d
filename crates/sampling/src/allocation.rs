//! How a budget of masks is split across strata.

use std::collections::BTreeMap;

use layerprune_core::Mask;

use crate::{Players, SamplingError};

/// The spread of the value inside one stratum, measured on a pilot table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PilotStratum {
    /// Number of finite values in the stratum.
    pub count: usize,
    /// Sample standard deviation (divisor `count - 1`; 0 when `count < 2`).
    pub std_dev: f64,
}

/// How the total budget is shared by the strata.
#[derive(Clone, Debug, PartialEq)]
pub enum Allocation {
    /// The same number of masks in every stratum (published).
    Equal,
    /// Proportional to the number of masks in the stratum, `C(players, k)`.
    Proportional,
    /// Neyman: proportional to `C(players, k) * sigma_k`, which minimises the variance of the
    /// stratified mean; `sigma_k` comes from a pilot table (stratum -> count and std. dev.).
    Neyman(BTreeMap<usize, PilotStratum>),
}

pub use layerprune_core::binomial;

fn binomial_f64(n: usize, k: usize) -> f64 {
    let k = k.min(n - k);
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// Splits `total` masks across `strata` (numbers of removed players of a game of `players`
/// players). Each stratum gets at most `C(players, k)` masks; the budget a full stratum cannot
/// take is redistributed over the others by the same rule, so the result sums to `total`
/// unless every stratum is full (then each gets all of its masks).
///
/// Rounding: shares are computed in real numbers, each stratum gets the integer part of its
/// share, and the units left over go one each to the strata with the largest fractional
/// parts (largest-remainder method), ties going to the stratum listed first. Under Neyman,
/// when every stratum that still has room has a pilot standard deviation of zero, the budget
/// left is shared equally among them.
pub fn allocate(
    strata: &[usize],
    players: usize,
    total: usize,
    allocation: &Allocation,
) -> Result<Vec<usize>, SamplingError> {
    let capacities: Vec<u128> = strata.iter().map(|&k| binomial(players, k)).collect();
    allocate_within(strata, players, total, allocation, &capacities)
}

/// [`allocate`] with explicit per-stratum capacities (masks still available, e.g. after the
/// ones already in a table are taken out).
pub(crate) fn allocate_within(
    strata: &[usize],
    players: usize,
    total: usize,
    allocation: &Allocation,
    capacities: &[u128],
) -> Result<Vec<usize>, SamplingError> {
    let weights = stratum_weights(strata, players, total, allocation)?;
    Ok(allocate_weighted(&weights, total, capacities))
}

/// The weight of each stratum under `allocation` (the share of the budget is proportional to
/// it), after checking the request.
pub(crate) fn stratum_weights(
    strata: &[usize],
    players: usize,
    total: usize,
    allocation: &Allocation,
) -> Result<Vec<f64>, SamplingError> {
    if total == 0 {
        return Err(SamplingError::ZeroRequested { what: "masks" });
    }
    if strata.is_empty() {
        return Err(SamplingError::NoStrata);
    }
    if let Some(&k) = strata.iter().find(|&&k| k > players) {
        return Err(SamplingError::StratumOutOfRange {
            stratum: k as i128,
            players,
        });
    }
    Ok(match allocation {
        Allocation::Equal => vec![1.0; strata.len()],
        Allocation::Proportional => strata.iter().map(|&k| binomial_f64(players, k)).collect(),
        Allocation::Neyman(pilot) => {
            let mut weights = Vec::with_capacity(strata.len());
            for &k in strata {
                let stats = pilot
                    .get(&k)
                    .ok_or_else(|| SamplingError::PilotMissingStratum {
                        stratum: k,
                        available: pilot.keys().copied().collect(),
                    })?;
                if stats.count < 2 {
                    return Err(SamplingError::PilotTooFew {
                        stratum: k,
                        count: stats.count,
                    });
                }
                if !(stats.std_dev.is_finite() && stats.std_dev >= 0.0) {
                    return Err(SamplingError::PilotBadStdDev {
                        stratum: k,
                        std_dev: stats.std_dev,
                    });
                }
                weights.push(binomial_f64(players, k) * stats.std_dev);
            }
            weights
        }
    })
}

/// Splits `total` over units (strata, or classes of strata) in proportion to `weights`, each
/// unit at most its capacity, the excess redistributed (see [`allocate`] for the rounding).
pub(crate) fn allocate_weighted(weights: &[f64], total: usize, capacities: &[u128]) -> Vec<usize> {
    let mut counts = vec![0usize; weights.len()];
    let mut open: Vec<usize> = (0..weights.len()).filter(|&i| capacities[i] > 0).collect();
    let mut remaining = total;
    while remaining > 0 && !open.is_empty() {
        let weight_sum: f64 = open.iter().map(|&i| weights[i]).sum();
        let weight_of = |i: usize| {
            if weight_sum > 0.0 && weight_sum.is_finite() {
                weights[i] / weight_sum
            } else {
                1.0 / open.len() as f64
            }
        };
        let shares: Vec<f64> = open
            .iter()
            .map(|&i| remaining as f64 * weight_of(i))
            .collect();
        let full: Vec<usize> = open
            .iter()
            .zip(&shares)
            .filter(|(&i, &share)| share >= capacities[i] as f64)
            .map(|(&i, _)| i)
            .collect();
        if !full.is_empty() {
            for &i in &full {
                // capacity < share <= remaining, so it fits in usize
                counts[i] = capacities[i] as usize;
                remaining -= counts[i];
            }
            open.retain(|i| !full.contains(i));
            continue;
        }
        let floors: Vec<usize> = shares.iter().map(|share| share.floor() as usize).collect();
        let mut left_over = remaining - floors.iter().sum::<usize>().min(remaining);
        let mut by_remainder: Vec<usize> = (0..open.len()).collect();
        by_remainder.sort_by(|&a, &b| {
            let fraction_a = shares[a] - floors[a] as f64;
            let fraction_b = shares[b] - floors[b] as f64;
            fraction_b.total_cmp(&fraction_a).then(a.cmp(&b))
        });
        for (position, &i) in open.iter().enumerate() {
            counts[i] = floors[position];
        }
        for &position in &by_remainder {
            if left_over == 0 {
                break;
            }
            counts[open[position]] += 1;
            left_over -= 1;
        }
        remaining = 0;
    }
    counts
}

/// Per-stratum count and standard deviation of recorded values, for the Neyman allocation.
/// Masks that remove a fixed block are not coalitions of this game and are skipped, and so are
/// non-finite values (the published pipeline drops NaN/inf utilities).
pub fn pilot_from_values<'a>(
    players: &Players,
    values: impl IntoIterator<Item = (&'a Mask, f64)>,
) -> Result<BTreeMap<usize, PilotStratum>, SamplingError> {
    let mut by_stratum: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for (index, (mask, value)) in values.into_iter().enumerate() {
        if mask.num_blocks() != players.num_blocks() {
            return Err(SamplingError::PilotWrongBlockCount {
                index,
                got: mask.num_blocks(),
                expected: players.num_blocks(),
            });
        }
        if !value.is_finite() || !players.keeps_fixed(mask) {
            continue;
        }
        by_stratum
            .entry(players.num_removed_players(mask))
            .or_default()
            .push(value);
    }
    Ok(by_stratum
        .into_iter()
        .map(|(stratum, values)| {
            let count = values.len();
            let std_dev = if count < 2 {
                0.0
            } else {
                let mean = values.iter().sum::<f64>() / count as f64;
                let squares: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
                (squares / (count - 1) as f64).sqrt()
            };
            (stratum, PilotStratum { count, std_dev })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomials_are_exact() {
        assert_eq!(binomial(32, 2), 496);
        assert_eq!(binomial(32, 14), 471_435_600);
        assert_eq!(binomial(64, 32), 1_832_624_140_942_590_534);
        assert_eq!(binomial(5, 0), 1);
        assert_eq!(binomial(5, 6), 0);
        assert!((binomial_f64(32, 14) - 471_435_600.0).abs() < 1e-3);
    }

    #[test]
    fn equal_allocation_spreads_the_remainder_to_the_first_strata() {
        let counts = allocate(&[5, 8, 11, 14], 32, 8000, &Allocation::Equal).unwrap();
        assert_eq!(counts, vec![2000; 4]);
        // The published setting: C(32, 2) = 496 masks cannot take 1600, the other strata
        // share the remaining 7504.
        let counts = allocate(&[2, 5, 8, 11, 14], 32, 8000, &Allocation::Equal).unwrap();
        assert_eq!(counts, vec![496, 1876, 1876, 1876, 1876]);
        let counts = allocate(&[2, 5, 8], 32, 11, &Allocation::Equal).unwrap();
        assert_eq!(counts, vec![4, 4, 3]);
    }

    #[test]
    fn small_strata_are_capped_and_the_rest_redistributed() {
        // C(10, 1) = 10 and C(10, 9) = 10 cannot take a third of 300 each.
        let counts = allocate(&[1, 5, 9], 10, 300, &Allocation::Equal).unwrap();
        assert_eq!(counts, vec![10, 252, 10]);
        // everything is available: all masks of every stratum, total not reached
        let counts = allocate(&[1, 2], 4, 100, &Allocation::Equal).unwrap();
        assert_eq!(counts, vec![4, 6]);
    }

    #[test]
    fn proportional_follows_the_stratum_sizes() {
        // C(10, 2) = 45, C(10, 5) = 252: shares 45/297 and 252/297 of 99 = 15 and 84.
        let counts = allocate(&[2, 5], 10, 99, &Allocation::Proportional).unwrap();
        assert_eq!(counts, vec![15, 84]);
    }

    #[test]
    fn neyman_weighs_by_size_and_spread() {
        let pilot = BTreeMap::from([
            (
                2,
                PilotStratum {
                    count: 10,
                    std_dev: 0.5,
                },
            ),
            (
                3,
                PilotStratum {
                    count: 10,
                    std_dev: 0.1,
                },
            ),
        ]);
        // C(10,2) * 0.5 = 22.5, C(10,3) * 0.1 = 12: shares 22.5/34.5 and 12/34.5 of 69
        let counts = allocate(&[2, 3], 10, 69, &Allocation::Neyman(pilot.clone())).unwrap();
        assert_eq!(counts, vec![45, 24]);
        assert_eq!(
            allocate(&[2, 4], 10, 69, &Allocation::Neyman(pilot.clone())),
            Err(SamplingError::PilotMissingStratum {
                stratum: 4,
                available: vec![2, 3]
            })
        );
        let mut thin = pilot.clone();
        thin.insert(
            4,
            PilotStratum {
                count: 1,
                std_dev: 0.0,
            },
        );
        assert_eq!(
            allocate(&[4], 10, 5, &Allocation::Neyman(thin)),
            Err(SamplingError::PilotTooFew {
                stratum: 4,
                count: 1
            })
        );
        // a constant stratum gets nothing while another has spread...
        let mut flat = pilot.clone();
        flat.insert(
            3,
            PilotStratum {
                count: 5,
                std_dev: 0.0,
            },
        );
        let counts = allocate(&[2, 3], 10, 30, &Allocation::Neyman(flat.clone())).unwrap();
        assert_eq!(counts, vec![30, 0]);
        // ...and the budget the other cannot take when that one is full (C(10, 2) = 45)
        let counts = allocate(&[2, 3], 10, 50, &Allocation::Neyman(flat)).unwrap();
        assert_eq!(counts, vec![45, 5]);
    }

    #[test]
    fn zero_masks_is_an_error() {
        assert_eq!(
            allocate(&[2], 10, 0, &Allocation::Equal),
            Err(SamplingError::ZeroRequested { what: "masks" })
        );
    }

    #[test]
    fn pilot_statistics_per_stratum() {
        let players = Players::new(4, &[0]).unwrap();
        let masks = [
            players.mask_removing([0]),
            players.mask_removing([1]),
            players.mask_removing([2]),
            players.mask_removing([0, 1]),
            Mask::empty(4), // removes the fixed block: not in this game
        ];
        let values = [1.0, 2.0, 3.0, f64::NAN, 7.0];
        let pilot = pilot_from_values(&players, masks.iter().zip(values)).unwrap();
        assert_eq!(pilot.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(pilot[&1].count, 3);
        assert!((pilot[&1].std_dev - 1.0).abs() < 1e-12);
        let wrong = [Mask::full(5)];
        assert!(matches!(
            pilot_from_values(&players, wrong.iter().zip([1.0])),
            Err(SamplingError::PilotWrongBlockCount { expected: 4, .. })
        ));
    }
}
