//! One sampling request, from arguments to rows.

use layerprune_core::Mask;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::allocation::{allocate_weighted, allocate_within, binomial, stratum_weights};
use crate::designs::{draw_stratum, Seen};
use crate::{
    anchors, complement_pairs, enumerate_all, permutation_chains, resolve_strata, Allocation,
    Design, Players, SampledMask, SamplingError, StrataSpec,
};

/// The published design: a budget of masks spread over strata.
#[derive(Clone, Debug, PartialEq)]
pub struct StratifiedDesign {
    pub strata: StrataSpec,
    pub total_masks: usize,
    pub allocation: Allocation,
}

/// Which designs to produce. Rows come out in this order: enumeration, stratified masks
/// (each followed by its complement when pairs are asked for), anchors, permutation chains.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SamplingPlan {
    pub stratified: Option<StratifiedDesign>,
    /// Pair every stratified mask with its complement (paired KernelSHAP).
    pub complement_pairs: bool,
    /// Every coalition (games of at most 20 players).
    pub enumerate: bool,
    /// The full model and every single-player removal.
    pub anchors: bool,
    /// Number of random orders, each giving a chain and its reversed chain.
    pub permutation_chains: Option<usize>,
}

/// The table being appended to: its masks are not drawn again, and new pair and chain ids
/// continue after its largest one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Existing<'a> {
    pub masks: &'a [Mask],
    pub max_group_id: Option<i64>,
}

/// What happened in one stratum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StratumSummary {
    /// Number of removed players.
    pub removed: usize,
    /// Masks in the stratum, `C(players, removed)`.
    pub possible: u128,
    /// Masks not already taken when the stratum was allocated. With complement pairs: the
    /// pairs of the class {k, n − k} with neither member taken, a room the two strata of the
    /// class share when both are listed.
    pub available: u128,
    /// Masks (pairs, with complement pairs) the allocation gave the stratum.
    pub allocated: usize,
    /// Masks actually drawn; with complement pairs it includes what the other stratum of the
    /// class could not draw of its share (not expected: the room is counted exactly).
    pub drawn: usize,
}

/// The new rows, and a summary per stratum of the stratified design.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleOutcome {
    pub rows: Vec<SampledMask>,
    pub strata: Vec<StratumSummary>,
}

/// Carries out a plan for a game, leaving out the masks of `existing`. Deterministic in
/// (`players`, `plan`, `existing`, `seed`). Stratum, pair, anchor and enumerated masks never
/// repeat a mask of `existing` or of one another; chains are the exception (see
/// [`permutation_chains`]), but chains appended to a table are drawn from a stream of their
/// own, so the same seed does not repeat the table's orders.
pub fn sample(
    players: &Players,
    plan: &SamplingPlan,
    existing: Existing<'_>,
    seed: u64,
) -> Result<SampleOutcome, SamplingError> {
    if plan.stratified.is_none()
        && !plan.enumerate
        && !plan.anchors
        && plan.permutation_chains.is_none()
    {
        return Err(SamplingError::NothingRequested);
    }
    if plan.complement_pairs && plan.stratified.is_none() {
        return Err(SamplingError::ComplementsNeedStrata);
    }
    if plan.permutation_chains == Some(0) {
        return Err(SamplingError::ZeroRequested {
            what: "permutation chains",
        });
    }
    let mut seen = Seen::new(players);
    for (index, mask) in existing.masks.iter().enumerate() {
        if mask.num_blocks() != players.num_blocks() {
            return Err(SamplingError::ExistingWrongBlockCount {
                index,
                got: mask.num_blocks(),
                expected: players.num_blocks(),
            });
        }
        seen.insert(mask.clone());
    }
    // The next free group id, one past the existing largest. Held as i128 so that a table whose
    // largest id is i64::MAX is still fine as long as no new id is needed; `group_ids` refuses
    // ids past i64::MAX.
    let mut next_group_id: i128 = existing.max_group_id.map_or(0, |id| i128::from(id) + 1);
    let first_id = |next: i128, needed: usize| {
        i64::try_from(next).map_err(|_| SamplingError::GroupIdOverflow {
            first: next,
            needed: needed as u128,
        })
    };
    let mut rows = Vec::new();

    if plan.enumerate {
        for mask in enumerate_all(players)? {
            if seen.insert(mask.clone()) {
                rows.push(SampledMask::plain(mask, Design::Enumeration));
            }
        }
    }

    let mut summaries = Vec::new();
    if let Some(design) = &plan.stratified {
        let player_count = players.len();
        let strata = resolve_strata(&design.strata, player_count)?;
        let possible: Vec<u128> = strata.iter().map(|&k| binomial(player_count, k)).collect();
        let (available, allocated) = if plan.complement_pairs {
            allocate_pairs(&strata, player_count, design, &seen)?
        } else {
            let available: Vec<u128> = strata
                .iter()
                .zip(&possible)
                .map(|(&k, &size)| size.saturating_sub(seen.in_stratum(k) as u128))
                .collect();
            let allocated = allocate_within(
                &strata,
                player_count,
                design.total_masks,
                &design.allocation,
                &available,
            )?;
            (available, allocated)
        };
        // With complement pairs, what a stratum could not draw of its share goes to the other
        // stratum of its class (listed later), which draws from the same pairs.
        let mut carried = vec![0usize; strata.len()];
        for (i, &stratum) in strata.iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(1 + stratum as u64);
            let requested = allocated[i] + carried[i];
            let drawn = draw_stratum(
                players,
                stratum,
                requested,
                plan.complement_pairs,
                &mut seen,
                &mut rng,
            );
            if plan.complement_pairs {
                if let Some(j) = strata.iter().position(|&k| k + stratum == player_count) {
                    if j > i {
                        carried[j] += requested - drawn.len();
                    }
                }
                if !drawn.is_empty() {
                    let first = first_id(next_group_id, drawn.len())?;
                    rows.extend(complement_pairs(players, &drawn, first)?);
                    next_group_id += drawn.len() as i128;
                }
            } else {
                rows.extend(
                    drawn
                        .iter()
                        .map(|mask| SampledMask::plain(mask.clone(), Design::Stratum)),
                );
            }
            summaries.push(StratumSummary {
                removed: stratum,
                possible: possible[i],
                available: available[i],
                allocated: allocated[i],
                drawn: drawn.len(),
            });
        }
    }

    if plan.complement_pairs {
        // The paired estimators (KernelSHAP, regression-adjusted) fit under the constraint
        // v(N) − v(∅): the extremes go with every complement-pair design, as anchors.
        let extremes = [
            players.mask_keeping(std::iter::empty()),
            Mask::full(players.num_blocks()),
        ];
        for mask in extremes {
            if seen.insert(mask.clone()) {
                rows.push(SampledMask::plain(mask, Design::Anchor));
            }
        }
    }

    if plan.anchors {
        for mask in anchors(players) {
            if seen.insert(mask.clone()) {
                rows.push(SampledMask::plain(mask, Design::Anchor));
            }
        }
    }

    if let Some(orders) = plan.permutation_chains {
        let first = first_id(next_group_id, 2 * orders)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(chain_stream(existing.max_group_id));
        rows.extend(permutation_chains(players, orders, first, &mut rng)?);
    }

    Ok(SampleOutcome {
        rows,
        strata: summaries,
    })
}

/// The ChaCha8 stream of the permutation chains: stream 0 for a table of its own, and for
/// chains appended to a table whose group ids go up to `appended_after`, a stream of their own
/// keyed by that id (the top bit set, above every stratum's stream `1 + k`). Chains are never
/// deduplicated, so appending with the seed of the first run must not replay its orders: the
/// permutation estimator would read each chain twice, as two independent ones (until
/// 2026-12-07 it did: `--permutation-chains 2 --append` twice with the same seed gave four
/// chains, two copies of two). Keyed by the table appended to, not by the first id of this
/// run's chains, so complement pairs drawn in the same run leave the chains as they were.
fn chain_stream(appended_after: Option<i64>) -> u64 {
    match appended_after {
        None => 0,
        Some(id) => (1 << 63) | (id as u64 & (u64::MAX >> 1)),
    }
}

/// The stratified budget of a complement-pair design, counted in pairs. A pair drawn in
/// stratum k has its complement in stratum n − k, so the strata k and n − k draw from the same
/// room, the pairs of the class {k, n − k} neither of whose members is taken yet (the middle
/// stratum, k = n − k, is a class of its own, with half as many pairs as masks). The budget is
/// allocated over the classes, each weighing the sum of its listed strata's weights and holding
/// at most its room, the excess going to the other classes; a class's pairs are then split
/// between its listed strata, the first (the smaller k) taking the odd one. Returns, per
/// stratum, the room of its class and its share.
fn allocate_pairs(
    strata: &[usize],
    player_count: usize,
    design: &StratifiedDesign,
    seen: &Seen<'_>,
) -> Result<(Vec<u128>, Vec<usize>), SamplingError> {
    let weights = stratum_weights(strata, player_count, design.total_masks, &design.allocation)?;
    // class of each stratum, keyed by its smaller member
    let key = |k: usize| k.min(player_count - k);
    let mut classes: Vec<usize> = strata.iter().map(|&k| key(k)).collect();
    classes.sort_unstable();
    classes.dedup();
    let class_of = |k: usize| classes.binary_search(&key(k)).expect("listed class");
    let mut class_weights = vec![0.0; classes.len()];
    for (&k, &weight) in strata.iter().zip(&weights) {
        class_weights[class_of(k)] += weight;
    }
    let rooms: Vec<u128> = classes.iter().map(|&k| seen.free_pairs(k)).collect();
    let class_counts = allocate_weighted(&class_weights, design.total_masks, &rooms);
    let mut available = Vec::with_capacity(strata.len());
    let mut allocated = Vec::with_capacity(strata.len());
    for (i, &k) in strata.iter().enumerate() {
        let class = class_of(k);
        let members: Vec<usize> = (0..strata.len())
            .filter(|&j| class_of(strata[j]) == class)
            .collect();
        let count = class_counts[class];
        let share = if members.len() == 1 {
            count
        } else if members[0] == i {
            count.div_ceil(2)
        } else {
            count / 2
        };
        available.push(rooms[class]);
        allocated.push(share);
    }
    Ok((available, allocated))
}
