//! The per-block scores of the methods the Shapley approach is compared with, each with its
//! cost in LLM evaluations. Higher score = more important block (kept).

use std::collections::BTreeSet;

use layerprune_core::{Game, Mask, Players};
use layerprune_tables::{BlockStatsTable, EvaluationTable, ScoreTable};
use rand::Rng;

use crate::method_names::{ANGULAR, BLOCK_INFLUENCE, LEAVE_ONE_OUT, RANDOM, REVERSE};
use crate::{rng_from_seed, SelectionError};

/// One score per block (higher = more important) and what it cost.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockScores {
    /// The method (or estimator) the scores come from.
    pub method: String,
    /// `scores[i]` is block i's score.
    pub scores: Vec<f64>,
    /// Distinct masks (forward passes over the calibration tokens) the scores cost.
    pub llm_evaluations: u64,
}

impl BlockScores {
    /// Checks there is one score per block of a `num_blocks` model, a number or +∞ (ranked
    /// last) for every block but the `fixed` ones (which are never removed and score +∞ where a
    /// scorer knows them): NaN or −∞ is refused.
    pub fn check(&self, num_blocks: usize, fixed: &[usize]) -> Result<(), SelectionError> {
        if self.scores.len() != num_blocks {
            return Err(SelectionError::WrongScoreCount {
                method: self.method.clone(),
                count: self.scores.len(),
                num_blocks,
            });
        }
        if let Some((block, &value)) = self
            .scores
            .iter()
            .enumerate()
            .find(|(block, v)| !ranks(**v) && !fixed.contains(block))
        {
            return Err(SelectionError::NonFiniteScore {
                method: self.method.clone(),
                block,
                value,
            });
        }
        Ok(())
    }
}

/// Whether `score` ranks a block: a number, or +∞ for a block removed only after every block
/// with a finite score (a leave-one-out single removal that collapsed the model: NLL +∞, which
/// an evaluation table records as such). NaN orders nothing and −∞ would say that removing
/// the block gains without bound: both are refused.
pub(crate) fn ranks(score: f64) -> bool {
    !score.is_nan() && score != f64::NEG_INFINITY
}

/// One score per block from `(block, score)` pairs of the players: every player exactly once,
/// and +∞ for each `fixed` block (never removed), which has no pair.
fn one_per_player(
    method: &str,
    num_blocks: usize,
    pairs: impl IntoIterator<Item = (usize, f64)>,
    fixed: &[usize],
) -> Result<Vec<f64>, SelectionError> {
    // Fixed blocks enter the check as placeholders (a finite score) and then score +∞.
    let placeholders = fixed.iter().map(|&block| (block, 0.0));
    let mut scores = one_per_block(method, num_blocks, pairs.into_iter().chain(placeholders))?;
    for &block in fixed {
        scores[block] = f64::INFINITY;
    }
    Ok(scores)
}

/// Collects one value per block from `(block, value)` pairs: every block exactly once.
fn one_per_block(
    method: &str,
    num_blocks: usize,
    pairs: impl IntoIterator<Item = (usize, f64)>,
) -> Result<Vec<f64>, SelectionError> {
    let mut values: Vec<Option<f64>> = vec![None; num_blocks];
    for (block, value) in pairs {
        let slot = values
            .get_mut(block)
            .ok_or_else(|| SelectionError::BlockOutOfRange {
                method: method.to_string(),
                block,
                num_blocks,
            })?;
        if slot.replace(value).is_some() {
            return Err(SelectionError::DuplicateBlock {
                method: method.to_string(),
                block,
            });
        }
    }
    let values = values
        .into_iter()
        .enumerate()
        .map(|(block, value)| {
            value.ok_or_else(|| SelectionError::MissingBlock {
                method: method.to_string(),
                block,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let scores = BlockScores {
        method: method.to_string(),
        scores: values,
        llm_evaluations: 0,
    };
    scores.check(num_blocks, &[])?;
    Ok(scores.scores)
}

/// Single-block statistics (run length 1) of the full model, one per block.
fn single_block_stats<'t>(
    stats: &'t BlockStatsTable,
    method: &str,
    value: impl Fn(&'t layerprune_tables::BlockStatRow) -> f64,
) -> Result<Vec<f64>, SelectionError> {
    one_per_block(
        method,
        stats.num_blocks,
        stats
            .rows
            .iter()
            .filter(|row| row.run_length == 1)
            .map(|row| (row.start_block as usize, value(row))),
    )
}

/// ShortGPT's block influence: 1 − the mean cosine similarity between a block's input and
/// output hidden states. A block that barely turns the hidden state scores low and goes first.
/// Cost: one forward pass of the full model.
pub fn block_influence_scores(stats: &BlockStatsTable) -> Result<BlockScores, SelectionError> {
    Ok(BlockScores {
        method: BLOCK_INFLUENCE.to_string(),
        scores: single_block_stats(stats, BLOCK_INFLUENCE, |row| 1.0 - row.mean_cosine)?,
        llm_evaluations: 1,
    })
}

/// Gromov et al.'s angular distance arccos(cos)/π of each single block. Cost: one forward pass.
pub fn angular_distance_scores(stats: &BlockStatsTable) -> Result<BlockScores, SelectionError> {
    Ok(BlockScores {
        method: ANGULAR.to_string(),
        scores: single_block_stats(stats, ANGULAR, |row| row.angular_distance)?,
        llm_evaluations: 1,
    })
}

/// The contiguous run Gromov et al. remove: the one of the requested length whose input and
/// output are closest in angle.
#[derive(Clone, Debug, PartialEq)]
pub struct AngularRun {
    pub start_block: usize,
    pub run_length: usize,
    pub angular_distance: f64,
    /// `start_block .. start_block + run_length`.
    pub removed_blocks: Vec<usize>,
}

/// The run of `run_length` consecutive blocks with the smallest angular distance that contains
/// no fixed block; ties go to the earliest run. Fails when the statistics hold no such run
/// (`evaluate --block-stats --max-run` bounds the lengths measured). Cost: one forward pass.
pub fn best_angular_run(
    stats: &BlockStatsTable,
    run_length: usize,
    fixed: &[usize],
) -> Result<AngularRun, SelectionError> {
    crate::removable_blocks(stats.num_blocks, fixed, run_length)?;
    let mut best: Option<AngularRun> = None;
    for row in &stats.rows {
        let start = row.start_block as usize;
        let length = row.run_length as usize;
        if length != run_length || (start..start + length).any(|b| fixed.contains(&b)) {
            continue;
        }
        if !row.angular_distance.is_finite() {
            return Err(SelectionError::NonFiniteScore {
                method: format!("{ANGULAR} run of {length}"),
                block: start,
                value: row.angular_distance,
            });
        }
        let better = match &best {
            None => true,
            Some(current) => {
                row.angular_distance < current.angular_distance
                    || (row.angular_distance == current.angular_distance
                        && start < current.start_block)
            }
        };
        if better {
            best = Some(AngularRun {
                start_block: start,
                run_length: length,
                angular_distance: row.angular_distance,
                removed_blocks: (start..start + length).collect(),
            });
        }
    }
    best.ok_or_else(|| {
        let lengths: BTreeSet<u32> = stats.rows.iter().map(|r| r.run_length).collect();
        SelectionError::NoRun {
            run_length,
            available: lengths
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        }
    })
}

/// Shortened-LLaMA's perplexity criterion: a block's score is the mean NLL of the model with
/// only that block removed (a block whose removal raises the loss most is the most important).
/// `evaluations` must hold the removal of every player alone (e.g. `sample-masks --anchors`);
/// other rows are ignored. The game's fixed blocks (`evaluations.fixed_blocks`) are never
/// removed, so they have no such row, and those of `fixed` are not players either (their rows
/// are not needed): both score +∞ (never chosen). Cost: one forward pass per player.
pub fn leave_one_out_scores(
    evaluations: &EvaluationTable,
    fixed: &[usize],
) -> Result<BlockScores, SelectionError> {
    let mut fixed: Vec<usize> = evaluations
        .fixed_blocks
        .iter()
        .chain(fixed)
        .copied()
        .collect();
    fixed.sort_unstable();
    fixed.dedup();
    let nll_without = evaluations.rows.iter().filter_map(|row| {
        let removed = row.mask.removed_blocks();
        (removed.len() == 1 && !fixed.contains(&removed[0])).then(|| (removed[0], row.nll))
    });
    leave_one_out_of(evaluations.num_blocks, &fixed, nll_without)
}

/// Leave-one-out played on a game whose value is −NLL (the LLM, a recorded table): every
/// player's single removal valued, then scored as [`leave_one_out_scores`] scores a table's
/// rows. Also returns the masks it valued, so that measuring a plan that is one of them is
/// not charged again.
pub fn leave_one_out_on_game<G: Game + ?Sized>(
    game: &mut G,
    fixed: &[usize],
) -> Result<(BlockScores, Vec<Mask>), SelectionError> {
    let num_blocks = game.num_players();
    // The players, each fixed block once however often it is listed.
    let players =
        Players::new(num_blocks, fixed).map_err(|e| SelectionError::BadOption(e.to_string()))?;
    let singles: Vec<Mask> = players
        .blocks()
        .iter()
        .map(|&block| Mask::full(num_blocks).with(block, false))
        .collect();
    let values = game.values(&singles)?;
    let nll_without = players
        .blocks()
        .iter()
        .copied()
        .zip(values.into_iter().map(|v| -v));
    let scores = leave_one_out_of(num_blocks, players.fixed_blocks(), nll_without)?;
    Ok((scores, singles))
}

/// A block's leave-one-out score is the NLL without it: the more its removal hurts, the more
/// important it is. A removal that collapsed the model (NLL +∞ in a table, NaN from a game that
/// diverged) hurts the most: +∞, removed last, as SLEB and adaptive removal rank a diverged
/// mask last (not an error that would stop a frontier at its first collapsed block). One pass
/// per player.
fn leave_one_out_of(
    num_blocks: usize,
    fixed: &[usize],
    nll_without: impl IntoIterator<Item = (usize, f64)>,
) -> Result<BlockScores, SelectionError> {
    let collapsed_is_worst = nll_without
        .into_iter()
        .map(|(block, nll)| (block, if nll.is_nan() { f64::INFINITY } else { nll }));
    let scores = one_per_player(LEAVE_ONE_OUT, num_blocks, collapsed_is_worst, fixed)?;
    Ok(BlockScores {
        method: LEAVE_ONE_OUT.to_string(),
        scores,
        llm_evaluations: (num_blocks - fixed.len()) as u64,
    })
}

/// Reverse order: block i scores −i, so the last blocks go first. Cost: none.
pub fn reverse_order_scores(num_blocks: usize) -> BlockScores {
    BlockScores {
        method: REVERSE.to_string(),
        // 0 − i, not −i: block 0 scores 0, not −0 (printed "-0").
        scores: (0..num_blocks).map(|i| 0.0 - i as f64).collect(),
        llm_evaluations: 0,
    }
}

/// Seeded uniform random scores in [0, 1): a random removal set. Cost: none.
pub fn random_scores(num_blocks: usize, seed: u64) -> BlockScores {
    let mut rng = rng_from_seed(seed);
    BlockScores {
        method: RANDOM.to_string(),
        scores: (0..num_blocks).map(|_| rng.random::<f64>()).collect(),
        llm_evaluations: 0,
    }
}

/// The estimators a score table has rows of, sorted and comma separated ("no rows at all"
/// for an empty table): what `--estimator` may name.
pub fn estimator_names(table: &ScoreTable) -> String {
    let names: BTreeSet<&str> = table.rows.iter().map(|r| r.estimator.as_str()).collect();
    if names.is_empty() {
        "no rows at all".to_string()
    } else {
        names.into_iter().collect::<Vec<_>>().join(", ")
    }
}

/// The scores of one estimator in a score table (the `shapley` or `score-blocks` stage's
/// output), checked to cover every player of a `num_blocks` model exactly once. The table's
/// fixed blocks have no rows and score +∞ here (never removed; selection also keeps them by
/// taking `table.fixed_blocks` as fixed). The cost is the largest `llm_evaluations` recorded
/// for the estimator.
pub fn scores_from_table(
    table: &ScoreTable,
    estimator: &str,
    num_blocks: usize,
) -> Result<BlockScores, SelectionError> {
    if table.num_blocks != num_blocks {
        return Err(SelectionError::WrongScoreCount {
            method: format!("score table (estimator {estimator})"),
            count: table.num_blocks,
            num_blocks,
        });
    }
    let rows: Vec<_> = table
        .rows
        .iter()
        .filter(|row| row.estimator == estimator)
        .collect();
    if rows.is_empty() {
        return Err(SelectionError::UnknownEstimator {
            estimator: estimator.to_string(),
            available: estimator_names(table),
        });
    }
    let scores = one_per_player(
        estimator,
        num_blocks,
        rows.iter().map(|row| (row.block as usize, row.estimate)),
        &table.fixed_blocks,
    )?;
    Ok(BlockScores {
        method: estimator.to_string(),
        scores,
        llm_evaluations: rows.iter().map(|r| r.llm_evaluations).max().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use layerprune_tables::{BlockStatRow, ScoreRow};

    fn stats(rows: &[(u32, u32, f64)]) -> BlockStatsTable {
        BlockStatsTable {
            num_blocks: 4,
            model_id: "m".into(),
            dataset_id: "d".into(),
            rows: rows
                .iter()
                .map(|&(start_block, run_length, cosine)| BlockStatRow {
                    start_block,
                    run_length,
                    mean_cosine: cosine,
                    angular_distance: cosine.acos() / std::f64::consts::PI,
                })
                .collect(),
        }
    }

    #[test]
    fn statistics_scores_rank_blocks_that_turn_the_state_least_lowest() {
        let table = stats(&[
            (0, 1, 0.5),
            (1, 1, 0.99),
            (2, 1, 0.9),
            (3, 1, 0.7),
            (1, 2, 0.95),
            (2, 2, 0.6),
            (0, 2, 0.4),
        ]);
        let influence = block_influence_scores(&table).unwrap();
        assert_eq!(influence.llm_evaluations, 1);
        assert!((influence.scores[1] - 0.01).abs() < 1e-12);
        let angular = angular_distance_scores(&table).unwrap();
        let order = crate::one_shot(&angular.scores, 2, &[]).unwrap();
        assert_eq!(order, vec![1, 2]);
        let run = best_angular_run(&table, 2, &[]).unwrap();
        assert_eq!(run.removed_blocks, vec![1, 2]);
        // With block 1 fixed the run 1..3 is out; 2..4 is the best left.
        assert_eq!(best_angular_run(&table, 2, &[1]).unwrap().start_block, 2);
        let err = best_angular_run(&table, 3, &[]).unwrap_err();
        assert!(err.to_string().contains("1, 2"), "{err}");
    }

    #[test]
    fn statistics_without_every_block_are_refused() {
        let missing = stats(&[(0, 1, 0.5), (1, 1, 0.9), (3, 1, 0.7)]);
        let err = block_influence_scores(&missing).unwrap_err();
        assert!(
            matches!(err, SelectionError::MissingBlock { block: 2, .. }),
            "{err}"
        );
        let twice = stats(&[
            (0, 1, 0.5),
            (1, 1, 0.9),
            (1, 1, 0.8),
            (2, 1, 0.1),
            (3, 1, 0.7),
        ]);
        assert!(matches!(
            angular_distance_scores(&twice),
            Err(SelectionError::DuplicateBlock { block: 1, .. })
        ));
    }

    #[test]
    fn leave_one_out_uses_single_removals_and_needs_all_of_them() {
        let mut table = layerprune_tests::evaluation_table(
            3,
            &[("111", 2.0), ("011", 5.0), ("101", 2.5), ("001", 9.0)],
        );
        let err = leave_one_out_scores(&table, &[]).unwrap_err();
        assert!(
            matches!(err, SelectionError::MissingBlock { block: 2, .. }),
            "{err}"
        );
        table
            .rows
            .extend(layerprune_tests::evaluation_table(3, &[("110", 3.0)]).rows);
        let scores = leave_one_out_scores(&table, &[]).unwrap();
        assert_eq!(scores.scores, vec![5.0, 2.5, 3.0]);
        assert_eq!(scores.llm_evaluations, 3);
        assert_eq!(crate::one_shot(&scores.scores, 1, &[]).unwrap(), vec![1]);

        // The same scores played on the game of the table's rows (value −NLL), with the masks
        // it valued; a fixed block is never valued and scores +∞, as a table's.
        let mut game = layerprune_core::RecordedGame::new(
            3,
            table.rows.iter().map(|r| (r.mask.clone(), -r.nll)),
        )
        .unwrap();
        let (on_game, valued) = leave_one_out_on_game(&mut game, &[]).unwrap();
        assert_eq!(on_game, scores);
        assert_eq!(valued.len(), 3);
        table.fixed_blocks = vec![0];
        table.rows.retain(|r| r.mask.to_string() != "011");
        let (on_game, valued) = leave_one_out_on_game(&mut game, &[0]).unwrap();
        assert_eq!(on_game, leave_one_out_scores(&table, &[]).unwrap());
        assert_eq!(on_game.scores, vec![f64::INFINITY, 2.5, 3.0]);
        assert_eq!((on_game.llm_evaluations, valued.len()), (2, 2));
        // Blocks fixed by the caller need no single removal, and one that has a row is not
        // scored from it.
        let single_of_2: Vec<_> = table
            .rows
            .iter()
            .filter(|r| r.mask.to_string() != "110")
            .cloned()
            .collect();
        let without_2 = EvaluationTable {
            rows: single_of_2,
            ..table.clone()
        };
        let scores = leave_one_out_scores(&without_2, &[2]).unwrap();
        assert_eq!(scores.scores, vec![f64::INFINITY, 2.5, f64::INFINITY]);
        assert_eq!(scores.llm_evaluations, 1);
        let scores = leave_one_out_scores(&table, &[1, 0]).unwrap();
        assert_eq!(scores.scores, vec![f64::INFINITY, f64::INFINITY, 3.0]);
        // A fixed block listed twice is one fixed block.
        assert_eq!(
            leave_one_out_on_game(&mut game, &[0, 0]).unwrap().0,
            on_game
        );
    }

    /// A single removal that collapsed the model (NLL +∞ in a table, NaN from a diverged game)
    /// is the most important block: +∞, removed last (it was refused as "not a finite number").
    #[test]
    fn a_collapsed_single_removal_scores_infinity() {
        let table = layerprune_tests::evaluation_table(
            3,
            &[("011", f64::INFINITY), ("101", 2.5), ("110", 3.0)],
        );
        let scores = leave_one_out_scores(&table, &[]).unwrap();
        assert_eq!(scores.scores, vec![f64::INFINITY, 2.5, 3.0]);
        assert_eq!(crate::one_shot(&scores.scores, 2, &[]).unwrap(), vec![1, 2]);
        let mut game = layerprune_core::RecordedGame::new(
            3,
            [("011", f64::NAN), ("101", -2.5), ("110", -3.0)]
                .map(|(mask, value)| (mask.parse().unwrap(), value)),
        )
        .unwrap();
        let (on_game, _) = leave_one_out_on_game(&mut game, &[]).unwrap();
        assert_eq!(on_game.scores, scores.scores);
        // What ranks nothing is still refused.
        for value in [f64::NAN, f64::NEG_INFINITY] {
            let bad = BlockScores {
                method: "e".into(),
                scores: vec![1.0, value],
                llm_evaluations: 0,
            };
            assert!(matches!(
                bad.check(2, &[]),
                Err(SelectionError::NonFiniteScore { block: 1, .. })
            ));
        }
    }

    #[test]
    fn reverse_and_random_scores() {
        let reverse = reverse_order_scores(5);
        assert_eq!(
            crate::one_shot(&reverse.scores, 2, &[]).unwrap(),
            vec![3, 4]
        );
        let a = random_scores(8, 1);
        assert_eq!(a, random_scores(8, 1));
        assert_ne!(a.scores, random_scores(8, 2).scores);
        assert!(a.scores.iter().all(|s| (0.0..1.0).contains(s)));
    }

    #[test]
    fn score_tables_are_checked_against_the_model() {
        let row = |block: u32, estimate: f64, estimator: &str| ScoreRow {
            block,
            estimate,
            std_error: None,
            ci_low: None,
            ci_high: None,
            estimator: estimator.into(),
            llm_evaluations: 40,
        };
        let table = ScoreTable {
            num_blocks: 3,
            fixed_blocks: Vec::new(),
            model_id: String::new(),
            dataset_id: String::new(),
            rows: vec![
                row(0, 0.3, "permutation"),
                row(1, 0.1, "permutation"),
                row(2, 0.2, "permutation"),
                row(0, 0.3, "kernelshap"),
            ],
        };
        let scores = scores_from_table(&table, "permutation", 3).unwrap();
        assert_eq!(scores.scores, vec![0.3, 0.1, 0.2]);
        assert_eq!(scores.llm_evaluations, 40);
        let err = scores_from_table(&table, "kernelshap", 3).unwrap_err();
        assert!(
            matches!(err, SelectionError::MissingBlock { block: 1, .. }),
            "{err}"
        );
        let err = scores_from_table(&table, "exact", 3).unwrap_err();
        assert!(err.to_string().contains("kernelshap, permutation"), "{err}");
        let err = scores_from_table(&table, "permutation", 4).unwrap_err();
        assert!(err.to_string().contains("4 blocks"), "{err}");

        // A table of a game with block 0 fixed scores only the players; block 0 is kept.
        let fixed = ScoreTable {
            num_blocks: 3,
            fixed_blocks: vec![0],
            model_id: String::new(),
            dataset_id: String::new(),
            rows: vec![row(1, 0.2, "permutation"), row(2, 0.1, "permutation")],
        };
        let scores = scores_from_table(&fixed, "permutation", 3).unwrap();
        assert_eq!(scores.scores, vec![f64::INFINITY, 0.2, 0.1]);
        assert_eq!(
            crate::one_shot(&scores.scores, 1, &fixed.fixed_blocks).unwrap(),
            vec![2]
        );
    }
}
