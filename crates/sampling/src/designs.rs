//! The mask designs: uniform draws inside a stratum, complement pairs, permutation chains,
//! anchors and full enumeration.

use std::collections::{HashMap, HashSet};

use layerprune_core::Mask;
use rand::seq::{index, SliceRandom};
use rand::Rng;

use crate::allocation::binomial;
use crate::{Players, SamplingError};

/// Largest game that [`enumerate_all`] enumerates: 2^20 (about a million) masks.
pub const MAX_ENUMERATED_PLAYERS: usize = 20;

pub use layerprune_core::Design;

/// One row of a mask table as produced here (the `sample-masks` stage converts it to the
/// table crate's row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampledMask {
    pub mask: Mask,
    pub design: Design,
    /// Pair or chain id.
    pub group_id: Option<i64>,
    /// Index within a pair or chain.
    pub position: Option<u32>,
}

impl SampledMask {
    pub(crate) fn plain(mask: Mask, design: Design) -> Self {
        SampledMask {
            mask,
            design,
            group_id: None,
            position: None,
        }
    }
}

/// The masks already taken (in the table being appended to, or drawn earlier in this run),
/// with how many of them lie in each stratum of the game.
pub(crate) struct Seen<'p> {
    players: &'p Players,
    masks: HashSet<Mask>,
    per_stratum: HashMap<usize, usize>,
}

impl<'p> Seen<'p> {
    pub(crate) fn new(players: &'p Players) -> Self {
        Seen {
            players,
            masks: HashSet::new(),
            per_stratum: HashMap::new(),
        }
    }

    pub(crate) fn contains(&self, mask: &Mask) -> bool {
        self.masks.contains(mask)
    }

    /// Adds a mask; false if it was there already.
    pub(crate) fn insert(&mut self, mask: Mask) -> bool {
        // A mask that removes a fixed block is outside the game and never collides with a
        // mask drawn here, so it does not use up room in any stratum.
        let stratum = self
            .players
            .keeps_fixed(&mask)
            .then(|| self.players.num_removed_players(&mask));
        let added = self.masks.insert(mask);
        if let (true, Some(stratum)) = (added, stratum) {
            *self.per_stratum.entry(stratum).or_default() += 1;
        }
        added
    }

    pub(crate) fn in_stratum(&self, stratum: usize) -> usize {
        self.per_stratum.get(&stratum).copied().unwrap_or(0)
    }

    /// Complement pairs {S, S^c} with S removing `stratum` players that can still be drawn
    /// whole (neither member taken): the room of the class {`stratum`, n − `stratum`}. There
    /// are C(n, k) such pairs, C(n, k) / 2 for the middle stratum (k = n − k), where each pair
    /// lies inside the stratum.
    pub(crate) fn free_pairs(&self, stratum: usize) -> u128 {
        let player_count = self.players.len();
        let other = player_count - stratum;
        // Taken pairs, counted twice: a taken member whose complement is free counts 2, a pair
        // with both members taken counts 1 per member.
        let mut twice_taken: u128 = 0;
        if self.in_stratum(stratum) + self.in_stratum(other) > 0 {
            for mask in &self.masks {
                if !self.players.keeps_fixed(mask) {
                    continue;
                }
                let removed = self.players.num_removed_players(mask);
                if removed == stratum || removed == other {
                    let both = self.masks.contains(&self.players.complement(mask));
                    twice_taken += if both { 1 } else { 2 };
                }
            }
        }
        let masks = binomial(player_count, stratum);
        // A count past u128 (saturated) stays "more than u128 holds", not half of that.
        let pairs = if stratum == other && masks != u128::MAX {
            masks / 2
        } else {
            masks
        };
        pairs.saturating_sub(twice_taken / 2)
    }
}

/// Draws up to `requested` masks removing exactly `stratum` players, uniformly among the masks
/// not yet in `seen` (nor, with `avoid_complements`, whose complement is in `seen`), and adds
/// them (and their complements) to `seen`. Returns all the available masks when there are
/// fewer than `requested`.
///
/// Small strata (at most 4 times the masks requested or taken) are enumerated and shuffled;
/// otherwise removed sets are drawn at random and duplicates rejected, which then accepts
/// most draws (more than 3 in 4 without complements avoided, at least half with).
pub(crate) fn draw_stratum(
    players: &Players,
    stratum: usize,
    requested: usize,
    avoid_complements: bool,
    seen: &mut Seen<'_>,
    rng: &mut impl Rng,
) -> Vec<Mask> {
    let player_count = players.len();
    let blocked = |seen: &Seen<'_>, mask: &Mask| {
        seen.contains(mask) || (avoid_complements && seen.contains(&players.complement(mask)))
    };
    let mut taken = seen.in_stratum(stratum);
    if avoid_complements {
        taken += seen.in_stratum(player_count - stratum);
    }
    let size = binomial(player_count, stratum);
    let mut drawn = Vec::with_capacity(requested.min(size.min(usize::MAX as u128) as usize));
    let accept = |mask: Mask, seen: &mut Seen<'_>, drawn: &mut Vec<Mask>| {
        if avoid_complements {
            seen.insert(players.complement(&mask));
        }
        seen.insert(mask.clone());
        drawn.push(mask);
    };
    if size <= 4 * (requested as u128 + taken as u128) {
        let mut candidates = Vec::with_capacity(size as usize);
        for_each_combination(player_count, stratum, |removed| {
            let mask = players.mask_removing(removed.iter().copied());
            if !blocked(seen, &mask) {
                candidates.push(mask);
            }
        });
        candidates.shuffle(rng);
        for mask in candidates {
            if drawn.len() == requested {
                break;
            }
            // Re-checked because, with complements avoided, a mask of the middle stratum
            // can be the complement of one accepted a moment ago.
            if !blocked(seen, &mask) {
                accept(mask, seen, &mut drawn);
            }
        }
    } else {
        while drawn.len() < requested {
            let removed = index::sample(rng, player_count, stratum);
            let mask = players.mask_removing(removed.iter());
            if !blocked(seen, &mask) {
                accept(mask, seen, &mut drawn);
            }
        }
    }
    drawn
}

/// Calls `visit` with every `k`-subset of `0..n`, ascending, in lexicographic order.
fn for_each_combination(n: usize, k: usize, mut visit: impl FnMut(&[usize])) {
    if k > n {
        return;
    }
    let mut subset: Vec<usize> = (0..k).collect();
    loop {
        visit(&subset);
        // the rightmost entry that can still move right
        let Some(i) = (0..k).rev().find(|&i| subset[i] < n - k + i) else {
            return;
        };
        subset[i] += 1;
        for j in i + 1..k {
            subset[j] = subset[j - 1] + 1;
        }
    }
}

/// `count` consecutive group ids starting at `first`, or an error when the last of them would
/// pass `i64::MAX` (checked arithmetic: appending to a table whose ids are near the top is an
/// error, not an overflow).
pub(crate) fn group_ids(
    first: i64,
    count: usize,
) -> Result<impl Iterator<Item = i64>, SamplingError> {
    let overflow = || SamplingError::GroupIdOverflow {
        first: i128::from(first),
        needed: count as u128,
    };
    let count = i64::try_from(count).map_err(|_| overflow())?;
    if count > 0 {
        first.checked_add(count - 1).ok_or_else(overflow)?;
    }
    // `first + i` cannot overflow: `first + count - 1` was checked.
    Ok((0..count).map(move |i| first + i))
}

/// Each mask followed by its complement (players flipped, fixed blocks kept), a pair sharing
/// a `group_id` (counting up from `first_group_id`): the mask at `position` 0 as a
/// [`Design::Stratum`] row, its complement at `position` 1 as a [`Design::Complement`] row.
/// An error if the ids would pass `i64::MAX`.
pub fn complement_pairs(
    players: &Players,
    masks: &[Mask],
    first_group_id: i64,
) -> Result<Vec<SampledMask>, SamplingError> {
    let mut rows = Vec::with_capacity(2 * masks.len());
    for (group_id, mask) in group_ids(first_group_id, masks.len())?.zip(masks) {
        rows.push(SampledMask {
            mask: mask.clone(),
            design: Design::Stratum,
            group_id: Some(group_id),
            position: Some(0),
        });
        rows.push(SampledMask {
            mask: players.complement(mask),
            design: Design::Complement,
            group_id: Some(group_id),
            position: Some(1),
        });
    }
    Ok(rows)
}

/// `orders` antithetic pairs of permutation chains. For each random order of the players, the
/// chain of its `players + 1` prefixes (`position` j = the first j players of the order kept,
/// j = 0 ..= players) is followed by the chain of the reversed order; every chain has its own
/// `group_id`, counting up from `first_group_id` (so a forward chain `g` is reversed by
/// chain `g + 1`). Chains are never deduplicated: a chain needs all its prefixes, and the
/// empty and full coalitions are in every chain. An error if the ids would pass `i64::MAX`.
pub fn permutation_chains(
    players: &Players,
    orders: usize,
    first_group_id: i64,
    rng: &mut impl Rng,
) -> Result<Vec<SampledMask>, SamplingError> {
    let player_count = players.len();
    let mut ids = group_ids(first_group_id, orders.saturating_mul(2))?;
    let mut rows = Vec::with_capacity(2 * orders * (player_count + 1));
    for _ in 0..orders {
        let mut order: Vec<usize> = (0..player_count).collect();
        order.shuffle(rng);
        let reversed: Vec<usize> = order.iter().rev().copied().collect();
        for chain_order in [order, reversed] {
            let group_id = ids.next();
            for kept in 0..=player_count {
                rows.push(SampledMask {
                    mask: players.mask_keeping(chain_order[..kept].iter().copied()),
                    design: Design::Permutation,
                    group_id,
                    position: Some(kept as u32),
                });
            }
        }
    }
    Ok(rows)
}

/// The full model, then every single player removed, in player order.
pub fn anchors(players: &Players) -> Vec<Mask> {
    std::iter::once(Mask::full(players.num_blocks()))
        .chain((0..players.len()).map(|player| players.mask_removing([player])))
        .collect()
}

/// Every coalition of a game of at most [`MAX_ENUMERATED_PLAYERS`] players, sorted (the
/// order in which the evaluator can share the most hidden states).
pub fn enumerate_all(players: &Players) -> Result<Vec<Mask>, SamplingError> {
    let player_count = players.len();
    if player_count > MAX_ENUMERATED_PLAYERS {
        return Err(SamplingError::EnumerationTooLarge {
            players: player_count,
            max: MAX_ENUMERATED_PLAYERS,
        });
    }
    let mut masks: Vec<Mask> = (0u32..1 << player_count)
        .map(|kept_bits| {
            players.mask_keeping((0..player_count).filter(|player| kept_bits >> player & 1 == 1))
        })
        .collect();
    masks.sort_unstable();
    Ok(masks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn combinations_are_all_visited_once_in_order() {
        let mut all = Vec::new();
        for_each_combination(5, 2, |subset| all.push(subset.to_vec()));
        assert_eq!(all.len(), 10);
        assert_eq!(all[0], vec![0, 1]);
        assert_eq!(all[9], vec![3, 4]);
        assert!(all.windows(2).all(|pair| pair[0] < pair[1]));
        let mut count = 0;
        for_each_combination(4, 0, |subset| {
            assert!(subset.is_empty());
            count += 1;
        });
        assert_eq!(count, 1);
    }

    #[test]
    fn both_draw_paths_give_distinct_masks_of_the_stratum() {
        let players = Players::new(12, &[3]).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // 11 players, C(11, 4) = 330: 20 by rejection, then 300 by enumeration.
        for requested in [20, 300] {
            let mut seen = Seen::new(&players);
            let drawn = draw_stratum(&players, 4, requested, false, &mut seen, &mut rng);
            assert_eq!(drawn.len(), requested);
            let distinct: HashSet<_> = drawn.iter().collect();
            assert_eq!(distinct.len(), requested);
            assert!(drawn.iter().all(|m| players.num_removed_players(m) == 4));
            assert!(drawn.iter().all(|m| m.is_kept(3) && m.num_removed() == 4));
        }
        // Asking for more than there are gives all of them.
        let mut seen = Seen::new(&players);
        let drawn = draw_stratum(&players, 10, 50, false, &mut seen, &mut rng);
        assert_eq!(drawn.len(), 11);
    }

    #[test]
    fn the_room_of_a_stratum_too_large_to_count_stays_uncounted() {
        // C(200, 100) is about 9e58: past u128, which the summary says as such; half of the
        // saturated count was printed as if it were the number of pairs.
        let players = Players::new(200, &[]).unwrap();
        let seen = Seen::new(&players);
        assert_eq!(seen.free_pairs(100), u128::MAX);
        let players = Players::new(6, &[]).unwrap();
        assert_eq!(Seen::new(&players).free_pairs(3), 10);
    }

    #[test]
    fn avoided_complements_are_never_drawn() {
        let players = Players::new(6, &[]).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut seen = Seen::new(&players);
        // the middle stratum holds 10 complementary pairs; at most one of each can be drawn
        let drawn = draw_stratum(&players, 3, 20, true, &mut seen, &mut rng);
        assert_eq!(drawn.len(), 10);
        for mask in &drawn {
            assert!(!drawn.contains(&players.complement(mask)));
        }
    }

    #[test]
    fn pairs_chains_anchors_and_enumeration_have_their_structure() {
        let players = Players::new(5, &[1]).unwrap();
        let mask = players.mask_removing([0, 1]);
        let rows = complement_pairs(&players, std::slice::from_ref(&mask), 7).unwrap();
        assert_eq!(rows[0].mask.id(), "01011");
        assert_eq!(rows[1].mask.id(), "11100");
        assert_eq!((rows[1].group_id, rows[1].position), (Some(7), Some(1)));

        let anchor_masks = anchors(&players);
        let ids: Vec<_> = anchor_masks.iter().map(Mask::id).collect();
        assert_eq!(ids, ["11111", "01111", "11011", "11101", "11110"]);

        let all = enumerate_all(&players).unwrap();
        assert_eq!(all.len(), 16);
        assert!(all.iter().all(|m| m.is_kept(1)));
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), 16);

        let big = Players::new(23, &[0, 1]).unwrap();
        assert_eq!(
            enumerate_all(&big),
            Err(SamplingError::EnumerationTooLarge {
                players: 21,
                max: 20
            })
        );
    }
}
