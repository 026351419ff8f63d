//! Properties of whole sampling requests: counts, uniformity, determinism, designs, errors.

use std::collections::{BTreeMap, HashMap, HashSet};

use layerprune_core::Mask;
use layerprune_sampling::{
    binomial, sample, Allocation, Design, Existing, PilotStratum, Players, SampleOutcome,
    SampledMask, SamplingError, SamplingPlan, StrataSpec, StratifiedDesign,
};

fn stratified(strata: StrataSpec, total_masks: usize) -> SamplingPlan {
    SamplingPlan {
        stratified: Some(StratifiedDesign {
            strata,
            total_masks,
            allocation: Allocation::Equal,
        }),
        ..SamplingPlan::default()
    }
}

fn run(players: &Players, plan: &SamplingPlan, seed: u64) -> SampleOutcome {
    sample(players, plan, Existing::default(), seed).unwrap()
}

fn count_by_stratum(players: &Players, rows: &[SampledMask]) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for row in rows {
        *counts
            .entry(players.num_removed_players(&row.mask))
            .or_default() += 1;
    }
    counts
}

/// Pearson statistic of how often each player is removed, against the uniform expectation.
fn inclusion_chi_square(players: &Players, masks: &[&Mask]) -> f64 {
    let mut removed_count = vec![0usize; players.len()];
    for mask in masks {
        for (player, &block) in players.blocks().iter().enumerate() {
            if !mask.is_kept(block) {
                removed_count[player] += 1;
            }
        }
    }
    let total: usize = removed_count.iter().sum();
    let expected = total as f64 / players.len() as f64;
    removed_count
        .iter()
        .map(|&observed| (observed as f64 - expected).powi(2) / expected)
        .sum()
}

#[test]
fn strata_get_exactly_their_allocation() {
    let players = Players::new(32, &[]).unwrap();
    let outcome = run(&players, &stratified(StrataSpec::PublishedDefault, 1000), 3);
    assert_eq!(outcome.rows.len(), 1000);
    let counts = count_by_stratum(&players, &outcome.rows);
    assert_eq!(
        counts,
        BTreeMap::from([(2, 200), (5, 200), (8, 200), (11, 200), (14, 200)])
    );
    for summary in &outcome.strata {
        assert_eq!(summary.drawn, 200);
        assert_eq!(summary.allocated, 200);
    }
    assert!(outcome.rows.iter().all(|row| row.design == Design::Stratum
        && row.group_id.is_none()
        && row.position.is_none()
        && row.mask.num_blocks() == 32));
    // A stratum with fewer masks than its share gives all of them and the rest moves on.
    let players = Players::new(8, &[]).unwrap();
    let outcome = run(
        &players,
        &stratified(StrataSpec::Removed(vec![1, 4]), 60),
        3,
    );
    let counts = count_by_stratum(&players, &outcome.rows);
    assert_eq!(counts, BTreeMap::from([(1, 8), (4, 52)]));
}

#[test]
fn every_player_is_removed_equally_often_inside_a_stratum() {
    // 99.9 % quantiles of the chi-square distribution.
    const CRITICAL_31_DOF: f64 = 61.098;
    const CRITICAL_9_DOF: f64 = 27.877;
    // Rejection path: C(32, 5) = 201,376 is far more than requested.
    let players = Players::new(32, &[]).unwrap();
    let outcome = run(
        &players,
        &stratified(StrataSpec::Removed(vec![5]), 3000),
        11,
    );
    let masks: Vec<&Mask> = outcome.rows.iter().map(|row| &row.mask).collect();
    let statistic = inclusion_chi_square(&players, &masks);
    assert!(statistic < CRITICAL_31_DOF, "chi-square {statistic}");
    // Enumeration path: C(10, 3) = 120 <= 4 * 40, with two fixed blocks around the players.
    let players = Players::new(12, &[0, 11]).unwrap();
    let outcome = run(&players, &stratified(StrataSpec::Removed(vec![3]), 40), 11);
    assert_eq!(outcome.rows.len(), 40);
    assert!(outcome
        .rows
        .iter()
        .all(|row| players.num_removed_players(&row.mask) == 3 && row.mask.num_removed() == 3));
    let masks: Vec<&Mask> = outcome.rows.iter().map(|row| &row.mask).collect();
    let statistic = inclusion_chi_square(&players, &masks);
    assert!(statistic < CRITICAL_9_DOF, "chi-square {statistic}");
}

#[test]
fn the_same_seed_gives_the_same_masks_in_the_same_order() {
    let players = Players::new(24, &[0]).unwrap();
    let plan = SamplingPlan {
        complement_pairs: true,
        anchors: true,
        permutation_chains: Some(3),
        ..stratified(StrataSpec::Ratios(vec![0.25, 0.5]), 300)
    };
    let first = run(&players, &plan, 42);
    let second = run(&players, &plan, 42);
    assert_eq!(first, second);
    let other = run(&players, &plan, 43);
    assert_ne!(first.rows, other.rows);
    // Adding a design leaves the stratified draws alone.
    let plain = run(
        &players,
        &stratified(StrataSpec::Ratios(vec![0.25, 0.5]), 300),
        42,
    );
    let with_anchors = run(
        &players,
        &SamplingPlan {
            anchors: true,
            ..stratified(StrataSpec::Ratios(vec![0.25, 0.5]), 300)
        },
        42,
    );
    assert_eq!(plain.rows[..], with_anchors.rows[..plain.rows.len()]);
}

#[test]
fn no_mask_is_drawn_twice_and_fixed_blocks_are_never_removed() {
    let players = Players::new(10, &[0, 9]).unwrap();
    let plan = SamplingPlan {
        complement_pairs: true,
        anchors: true,
        ..stratified(StrataSpec::Removed(vec![1, 2, 3, 4, 5]), 200)
    };
    let outcome = run(&players, &plan, 9);
    let distinct: HashSet<&Mask> = outcome.rows.iter().map(|row| &row.mask).collect();
    assert_eq!(distinct.len(), outcome.rows.len());
    assert!(outcome
        .rows
        .iter()
        .all(|row| row.mask.is_kept(0) && row.mask.is_kept(9) && row.mask.num_blocks() == 10));
}

#[test]
fn appending_adds_only_new_masks_and_continues_group_ids() {
    let players = Players::new(8, &[]).unwrap();
    let first_plan = SamplingPlan {
        complement_pairs: true,
        ..stratified(StrataSpec::Removed(vec![2]), 10)
    };
    let first = run(&players, &first_plan, 1);
    let existing_masks: Vec<Mask> = first.rows.iter().map(|row| row.mask.clone()).collect();
    let max_group_id = first.rows.iter().filter_map(|row| row.group_id).max();
    assert_eq!(max_group_id, Some(9));
    // Same seed on purpose: the draws that repeat the first round must be skipped.
    let plan = SamplingPlan {
        permutation_chains: Some(1),
        ..stratified(StrataSpec::Removed(vec![2, 6]), 30)
    };
    let existing = Existing {
        masks: &existing_masks,
        max_group_id,
    };
    let second = sample(&players, &plan, existing, 1).unwrap();
    let stratum_rows: Vec<&SampledMask> = second
        .rows
        .iter()
        .filter(|row| row.design == Design::Stratum)
        .collect();
    // strata 2 and 6 each had 28 masks, 10 of each taken by the first round's pairs
    assert_eq!(second.strata[0].available, 18);
    assert_eq!(second.strata[1].available, 18);
    assert_eq!(stratum_rows.len(), 30);
    for row in &stratum_rows {
        assert!(!existing_masks.contains(&row.mask));
    }
    let chain_ids: HashSet<i64> = second.rows.iter().filter_map(|row| row.group_id).collect();
    assert_eq!(chain_ids, HashSet::from([10, 11]));
    // Everything taken: the strata are exhausted, nothing new is drawn.
    let all: Vec<Mask> = existing_masks
        .iter()
        .cloned()
        .chain(stratum_rows.iter().map(|row| row.mask.clone()))
        .collect();
    let third = sample(
        &players,
        &stratified(StrataSpec::Removed(vec![2, 6]), 30),
        Existing {
            masks: &all,
            max_group_id,
        },
        2,
    )
    .unwrap();
    assert_eq!(third.rows.len(), 6);
}

/// Strata k and n − k draw complement pairs from the same room: the budget is allocated over
/// the classes {k, n − k}, so a class is never promised its room twice and the pairs the small
/// classes cannot take go to the others. (Until 2026-12-06 each stratum of a class was given
/// the class's room: 12 players, strata 1..=11, 1,000 pairs delivered 901.)
#[test]
fn complement_pairs_deliver_the_budget_and_respect_each_class_room() {
    let players = Players::new(30, &(0..16).chain([28, 29]).collect::<Vec<_>>()).unwrap();
    let n = players.len();
    assert_eq!(n, 12);
    for (strata, total) in [
        ((1..=11).collect::<Vec<i64>>(), 1000),
        (vec![1, 6, 11], 500),
    ] {
        let plan = SamplingPlan {
            complement_pairs: true,
            ..stratified(StrataSpec::Removed(strata.clone()), total)
        };
        let outcome = run(&players, &plan, 4);
        let pairs = outcome
            .rows
            .iter()
            .filter(|row| row.design == Design::Stratum)
            .count();
        // strata 1, 6, 11: room 12 + 462 pairs < 500
        let expected = if strata.len() == 3 { 12 + 462 } else { total };
        assert_eq!(pairs, expected, "strata {strata:?}");
        let distinct: HashSet<&Mask> = outcome.rows.iter().map(|row| &row.mask).collect();
        assert_eq!(distinct.len(), outcome.rows.len());
        // per class {k, n − k}: pairs drawn within its room, the shares as allocated
        let mut by_class: BTreeMap<usize, usize> = BTreeMap::new();
        for stratum in &outcome.strata {
            assert_eq!(stratum.drawn, stratum.allocated, "{stratum:?}");
            *by_class
                .entry(stratum.removed.min(n - stratum.removed))
                .or_default() += stratum.drawn;
        }
        for (&k, &drawn) in &by_class {
            let room = if 2 * k == n {
                binomial(n, k) / 2
            } else {
                binomial(n, k)
            };
            assert!(drawn as u128 <= room, "class {k}: {drawn} > {room}");
            if strata.len() == 3 {
                assert_eq!(drawn as u128, room, "class {k}");
            }
        }
        // equal allocation: the two strata of a class share it evenly
        if strata.len() == 11 {
            assert_eq!(by_class[&1], 12);
            assert_eq!(by_class[&2], 66);
            assert!(outcome.strata.iter().all(|s| s.drawn >= 6));
        }
    }
}

#[test]
fn complement_pairs_share_a_group_and_flip_every_player() {
    let players = Players::new(9, &[4]).unwrap();
    let plan = SamplingPlan {
        complement_pairs: true,
        ..stratified(StrataSpec::Removed(vec![2, 3]), 20)
    };
    let outcome = run(&players, &plan, 5);
    // 20 pairs, then the empty and the full coalition that the paired estimators' fit needs
    // (block 4, fixed, kept in both).
    assert_eq!(outcome.rows.len(), 42);
    let (pairs, extremes) = outcome.rows.split_at(40);
    let extremes: Vec<(&Mask, Design)> = extremes.iter().map(|r| (&r.mask, r.design)).collect();
    assert_eq!(
        extremes,
        [
            (&players.mask_keeping(std::iter::empty()), Design::Anchor),
            (&Mask::full(9), Design::Anchor)
        ]
    );
    for (pair, expected_group) in pairs.chunks(2).zip(0..) {
        let (mask, complement) = (&pair[0], &pair[1]);
        assert_eq!(mask.design, Design::Stratum);
        assert_eq!(complement.design, Design::Complement);
        assert_eq!(mask.group_id, Some(expected_group));
        assert_eq!(complement.group_id, Some(expected_group));
        assert_eq!((mask.position, complement.position), (Some(0), Some(1)));
        for &block in players.blocks() {
            assert_ne!(mask.mask.is_kept(block), complement.mask.is_kept(block));
        }
        assert!(complement.mask.is_kept(4));
        assert_eq!(
            players.num_removed_players(&mask.mask) + players.num_removed_players(&complement.mask),
            8
        );
    }
}

#[test]
fn permutation_chains_are_nested_and_come_in_reversed_pairs() {
    let players = Players::new(7, &[2]).unwrap();
    let plan = SamplingPlan {
        permutation_chains: Some(3),
        ..SamplingPlan::default()
    };
    let outcome = run(&players, &plan, 8);
    let player_count = players.len();
    assert_eq!(outcome.rows.len(), 6 * (player_count + 1));
    let mut chains: BTreeMap<i64, Vec<&SampledMask>> = BTreeMap::new();
    for row in &outcome.rows {
        assert_eq!(row.design, Design::Permutation);
        assert!(row.mask.is_kept(2));
        chains.entry(row.group_id.unwrap()).or_default().push(row);
    }
    assert_eq!(
        chains.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5]
    );
    // the order in which each chain adds its players
    let mut orders: HashMap<i64, Vec<usize>> = HashMap::new();
    for (&id, chain) in &chains {
        assert_eq!(chain.len(), player_count + 1);
        let mut order = Vec::new();
        for (j, row) in chain.iter().enumerate() {
            assert_eq!(row.position, Some(j as u32));
            assert_eq!(player_count - players.num_removed_players(&row.mask), j);
            if j > 0 {
                let previous = &chain[j - 1].mask;
                // nested: the previous prefix's kept blocks are all still kept
                assert!(previous.kept_blocks().iter().all(|&b| row.mask.is_kept(b)));
                let added: Vec<usize> = players
                    .blocks()
                    .iter()
                    .enumerate()
                    .filter(|(_, &b)| row.mask.is_kept(b) && !previous.is_kept(b))
                    .map(|(player, _)| player)
                    .collect();
                assert_eq!(added.len(), 1);
                order.push(added[0]);
            }
        }
        orders.insert(id, order);
    }
    for forward in [0, 2, 4] {
        let mut reversed = orders[&forward].clone();
        reversed.reverse();
        assert_eq!(orders[&(forward + 1)], reversed);
    }
    assert_ne!(orders[&0], orders[&2]);
}

/// The chains of a run: each chain's masks in order, by group id.
fn chains_of(rows: &[SampledMask]) -> BTreeMap<i64, Vec<Mask>> {
    let mut chains: BTreeMap<i64, Vec<Mask>> = BTreeMap::new();
    for row in rows.iter().filter(|row| row.design == Design::Permutation) {
        chains
            .entry(row.group_id.unwrap())
            .or_default()
            .push(row.mask.clone());
    }
    chains
}

#[test]
fn chains_appended_with_the_same_seed_are_new_orders_not_copies() {
    let players = Players::new(12, &[]).unwrap();
    let plan = SamplingPlan {
        permutation_chains: Some(2),
        ..SamplingPlan::default()
    };
    let first = run(&players, &plan, 0);
    let first_masks: Vec<Mask> = first.rows.iter().map(|row| row.mask.clone()).collect();
    let appended = sample(
        &players,
        &plan,
        Existing {
            masks: &first_masks,
            max_group_id: first.rows.iter().filter_map(|row| row.group_id).max(),
        },
        0,
    )
    .unwrap();
    let old = chains_of(&first.rows);
    let new = chains_of(&appended.rows);
    assert_eq!(new.keys().copied().collect::<Vec<_>>(), vec![4, 5, 6, 7]);
    for chain in new.values() {
        assert!(
            !old.values().any(|seen| seen == chain),
            "an appended chain repeats one of the table: {chain:?}"
        );
    }
    // Deterministic still, and a table of its own keeps the chains it always had; complement
    // pairs drawn in the same run do not move them.
    assert_eq!(first, run(&players, &plan, 0));
    let with_pairs = run(
        &players,
        &SamplingPlan {
            complement_pairs: true,
            permutation_chains: Some(2),
            ..stratified(StrataSpec::Removed(vec![3]), 5)
        },
        0,
    );
    let paired_chains: Vec<Vec<Mask>> = chains_of(&with_pairs.rows).into_values().collect();
    assert_eq!(paired_chains, old.into_values().collect::<Vec<_>>());
}

#[test]
fn anchors_and_enumeration_cover_what_they_promise() {
    let players = Players::new(6, &[5]).unwrap();
    let plan = SamplingPlan {
        anchors: true,
        ..SamplingPlan::default()
    };
    let outcome = run(&players, &plan, 0);
    let ids: Vec<String> = outcome.rows.iter().map(|row| row.mask.id()).collect();
    assert_eq!(
        ids,
        ["111111", "011111", "101111", "110111", "111011", "111101"]
    );
    let plan = SamplingPlan {
        enumerate: true,
        anchors: true,
        ..SamplingPlan::default()
    };
    let outcome = run(&players, &plan, 0);
    assert_eq!(outcome.rows.len(), 32);
    assert!(outcome
        .rows
        .iter()
        .all(|row| row.design == Design::Enumeration));
}

#[test]
fn neyman_allocation_follows_the_pilot() {
    let players = Players::new(10, &[]).unwrap();
    let pilot = BTreeMap::from([
        (
            2,
            PilotStratum {
                count: 8,
                std_dev: 0.0,
            },
        ),
        (
            5,
            PilotStratum {
                count: 8,
                std_dev: 0.3,
            },
        ),
    ]);
    let plan = SamplingPlan {
        stratified: Some(StratifiedDesign {
            strata: StrataSpec::Removed(vec![2, 5]),
            total_masks: 50,
            allocation: Allocation::Neyman(pilot),
        }),
        ..SamplingPlan::default()
    };
    let outcome = run(&players, &plan, 4);
    assert_eq!(
        count_by_stratum(&players, &outcome.rows),
        BTreeMap::from([(5, 50)])
    );
}

#[test]
fn bad_requests_are_reported_clearly() {
    let players = Players::new(8, &[]).unwrap();
    let error = |plan: &SamplingPlan| sample(&players, plan, Existing::default(), 0).unwrap_err();
    assert_eq!(
        error(&stratified(StrataSpec::Removed(vec![9]), 10)),
        SamplingError::StratumOutOfRange {
            stratum: 9,
            players: 8
        }
    );
    assert_eq!(
        error(&stratified(StrataSpec::Removed(vec![-2]), 10)),
        SamplingError::StratumOutOfRange {
            stratum: -2,
            players: 8
        }
    );
    assert_eq!(
        error(&stratified(StrataSpec::PublishedDefault, 0)),
        SamplingError::ZeroRequested { what: "masks" }
    );
    assert_eq!(
        error(&SamplingPlan {
            permutation_chains: Some(0),
            ..SamplingPlan::default()
        }),
        SamplingError::ZeroRequested {
            what: "permutation chains"
        }
    );
    assert_eq!(
        error(&SamplingPlan::default()),
        SamplingError::NothingRequested
    );
    assert_eq!(
        error(&SamplingPlan {
            complement_pairs: true,
            anchors: true,
            ..SamplingPlan::default()
        }),
        SamplingError::ComplementsNeedStrata
    );
    let neyman = SamplingPlan {
        stratified: Some(StratifiedDesign {
            strata: StrataSpec::Removed(vec![2, 3]),
            total_masks: 10,
            allocation: Allocation::Neyman(BTreeMap::from([(
                2,
                PilotStratum {
                    count: 4,
                    std_dev: 0.1,
                },
            )])),
        }),
        ..SamplingPlan::default()
    };
    assert!(error(&neyman).to_string().contains("stratum 3"));
    let wrong = [Mask::full(8), Mask::full(9)];
    assert_eq!(
        sample(
            &players,
            &stratified(StrataSpec::PublishedDefault, 5),
            Existing {
                masks: &wrong,
                max_group_id: None
            },
            0
        ),
        Err(SamplingError::ExistingWrongBlockCount {
            index: 1,
            got: 9,
            expected: 8
        })
    );
    let big = Players::new(21, &[]).unwrap();
    let enumerate = SamplingPlan {
        enumerate: true,
        ..SamplingPlan::default()
    };
    assert_eq!(
        sample(&big, &enumerate, Existing::default(), 0),
        Err(SamplingError::EnumerationTooLarge {
            players: 21,
            max: 20
        })
    );
    assert!(matches!(
        Players::new(8, &[8]),
        Err(layerprune_core::PlayersError::OutOfRange { block: 8, .. })
    ));
}

/// Appending to a table whose largest `group_id` is at or near `i64::MAX`: new ids are counted
/// with checked arithmetic, so running out is an error, ids up to exactly
/// `i64::MAX` are fine, and a plan that needs no new ids appends as usual.
#[test]
fn appending_after_the_largest_group_id_is_an_error_not_an_overflow() {
    let players = Players::new(6, &[]).unwrap();
    let pairs = SamplingPlan {
        complement_pairs: true,
        ..stratified(StrataSpec::Removed(vec![2]), 4)
    };
    let chains = SamplingPlan {
        permutation_chains: Some(2),
        ..SamplingPlan::default()
    };
    let after = |max_group_id| Existing {
        masks: &[],
        max_group_id,
    };
    for plan in [&pairs, &chains] {
        let ids: HashSet<i64> = run(&players, plan, 1)
            .rows
            .iter()
            .filter_map(|row| row.group_id)
            .collect();
        let needed = ids.len() as i64;
        assert!(needed > 0);
        // Exactly enough room: the last new id is i64::MAX.
        let rows = sample(&players, plan, after(Some(i64::MAX - needed)), 1)
            .unwrap()
            .rows;
        let max = rows.iter().filter_map(|row| row.group_id).max();
        assert_eq!(max, Some(i64::MAX));
        // One id short, and none left at all.
        for max_group_id in [i64::MAX - needed + 1, i64::MAX] {
            let error = sample(&players, plan, after(Some(max_group_id)), 1).unwrap_err();
            assert!(
                matches!(error, SamplingError::GroupIdOverflow { .. }),
                "{error:?}"
            );
            assert!(error.to_string().contains("i64::MAX"), "{error}");
        }
    }
    // Anchors and plain strata need no group ids: appending at i64::MAX works.
    let plain = SamplingPlan {
        anchors: true,
        ..stratified(StrataSpec::Removed(vec![2]), 4)
    };
    let rows = sample(&players, &plain, after(Some(i64::MAX)), 1)
        .unwrap()
        .rows;
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|row| row.group_id.is_none()));
}
