//! The `score-blocks` stage as one library call: the baseline estimators' scores of one
//! model's blocks (ShortGPT block influence, angular distance, leave-one-out, reverse order,
//! random), from the files that hold what they need, as one score table with each estimator's
//! cost. [`BaselineFiles::score`] reads the files, checks that they describe one model and one
//! token table, and scores every estimator asked for; writing the table is the stage's.

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use layerprune_core::PlayersError;
use layerprune_tables::{
    read_block_stats, read_complete_evaluations, BlockStatsTable, EvaluationTable, Incomplete,
    ScoreRow, ScoreTable,
};

use crate::baselines::{
    angular_distance_scores, block_influence_scores, leave_one_out_scores, random_scores,
    reverse_order_scores, BlockScores,
};
use crate::method_names;

/// A baseline estimator: its name is the score table's `estimator` column and the plan's
/// method (`NAME`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BaselineEstimator {
    /// ShortGPT: 1 − mean cosine(input, output) of each block (block statistics; 1 pass).
    BlockInfluence,
    /// Gromov et al.: arccos(cosine)/π of each block (block statistics; 1 pass).
    Angular,
    /// Shortened-LLaMA: NLL with only that block removed (an evaluation table; a pass a block).
    LeaveOneOut,
    /// The last blocks first: score −i (no pass).
    Reverse,
    /// Seeded uniform random scores (no pass).
    Random,
}

impl BaselineEstimator {
    pub fn name(self) -> &'static str {
        match self {
            BaselineEstimator::BlockInfluence => method_names::BLOCK_INFLUENCE,
            BaselineEstimator::Angular => method_names::ANGULAR,
            BaselineEstimator::LeaveOneOut => method_names::LEAVE_ONE_OUT,
            BaselineEstimator::Reverse => method_names::REVERSE,
            BaselineEstimator::Random => method_names::RANDOM,
        }
    }
}

impl fmt::Display for BaselineEstimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the baseline scores are computed from.
#[derive(Clone, Debug, Default)]
pub struct BaselineFiles {
    /// Block statistics of the full model (`evaluate --block-stats`): block influence, angular.
    pub block_stats: Option<PathBuf>,
    /// An evaluation table holding every single-block removal: leave-one-out.
    pub evaluations: Option<PathBuf>,
    /// Whether an incomplete evaluation table is used (with a warning) or refused.
    pub incomplete: Incomplete,
    /// The number of blocks, where no table says it (reverse and random only).
    pub num_blocks: Option<usize>,
    /// Blocks never removed besides the fixed blocks of the evaluations' game: they get no
    /// score, and the table records them as fixed, so a plan keeps them.
    pub fixed: Vec<usize>,
    /// Seeds the random scores.
    pub seed: u64,
}

impl BaselineFiles {
    /// The score table of `estimators` (each once, in the order given; one asked for twice is
    /// scored once). Each estimator's input is checked first, then that the inputs describe one
    /// model and one token table; the table records that model and token table.
    pub fn score(&self, estimators: &[BaselineEstimator]) -> Result<ScoreTable> {
        let estimators = layerprune_core::distinct(estimators);
        // Each estimator's own input first: a missing one is what the user has to add (the
        // block count below would otherwise ask for a count these estimators cannot use).
        for &estimator in &estimators {
            match estimator {
                BaselineEstimator::BlockInfluence | BaselineEstimator::Angular
                    if self.block_stats.is_none() =>
                {
                    bail!("--estimator {estimator} needs --block-stats (evaluate --block-stats)")
                }
                BaselineEstimator::LeaveOneOut if self.evaluations.is_none() => bail!(
                    "--estimator {estimator} needs --evaluations with every single-block \
                     removal (sample-masks --anchors)"
                ),
                _ => {}
            }
        }
        let stats: Option<BlockStatsTable> = self
            .block_stats
            .as_deref()
            .map(read_block_stats)
            .transpose()?;
        let evaluations: Option<EvaluationTable> = self
            .evaluations
            .as_deref()
            .map(|path| read_complete_evaluations(path, self.incomplete))
            .transpose()?;
        let num_blocks = self.num_blocks(stats.as_ref(), evaluations.as_ref())?;
        if let (Some(s), Some(e)) = (&stats, &evaluations) {
            if s.model_id != e.model_id {
                bail!(
                    "--block-stats is of model {} but --evaluations of model {}",
                    s.model_id,
                    e.model_id
                );
            }
            // The score table records one token table for all its scores.
            if s.dataset_id != e.dataset_id {
                bail!(
                    "--block-stats was measured on token table {} but --evaluations on {}: \
                     score them into separate tables",
                    s.dataset_id,
                    e.dataset_id
                );
            }
        }
        // The blocks that are not players: the game's (a leave-one-out score needs its single
        // removals, which never remove them) and those given; none of them gets a score.
        let mut fixed = self.fixed.clone();
        if let Some(table) = &evaluations {
            fixed.extend(&table.fixed_blocks);
        }
        fixed.sort_unstable();
        fixed.dedup();
        if let Some(&block) = fixed.iter().find(|&&b| b >= num_blocks) {
            // The words every stage gives a fixed block out of range ("a model of 6 blocks has
            // blocks 0 to 5"), with the flag that gave it.
            bail!(
                "--fixed: {}",
                PlayersError::OutOfRange { block, num_blocks }
            );
        }
        if fixed.len() == num_blocks {
            bail!(
                "every block is fixed (--fixed and the fixed blocks of --evaluations): none is \
                 left to score"
            );
        }

        let mut rows = Vec::new();
        for estimator in estimators {
            let scores: BlockScores = match estimator {
                BaselineEstimator::BlockInfluence | BaselineEstimator::Angular => {
                    let (Some(table), Some(path)) = (&stats, &self.block_stats) else {
                        unreachable!("each estimator's input is checked first")
                    };
                    let scores = if estimator == BaselineEstimator::Angular {
                        angular_distance_scores(table)
                    } else {
                        block_influence_scores(table)
                    };
                    scores.with_context(|| path.display().to_string())?
                }
                BaselineEstimator::LeaveOneOut => {
                    let (Some(table), Some(path)) = (&evaluations, &self.evaluations) else {
                        unreachable!("each estimator's input is checked first")
                    };
                    leave_one_out_scores(table, &fixed).with_context(|| {
                        format!(
                            "--evaluations {}: leave-one-out needs the evaluation of every \
                             single-block removal (sample-masks --anchors, then evaluate)",
                            path.display()
                        )
                    })?
                }
                BaselineEstimator::Reverse => reverse_order_scores(num_blocks),
                BaselineEstimator::Random => random_scores(num_blocks, self.seed),
            };
            scores.check(num_blocks, &fixed)?;
            rows.extend(
                scores
                    .scores
                    .iter()
                    .enumerate()
                    .filter(|(block, _)| !fixed.contains(block))
                    .map(|(block, &estimate)| {
                        ScoreRow::point(block, estimate, &scores.method, scores.llm_evaluations)
                    }),
            );
        }
        let (model_id, dataset_id) = stats
            .as_ref()
            .map(|t| (t.model_id.clone(), t.dataset_id.clone()))
            .or_else(|| {
                evaluations
                    .as_ref()
                    .map(|t| (t.model_id.clone(), t.dataset_id.clone()))
            })
            .unwrap_or_default();
        Ok(ScoreTable {
            num_blocks,
            fixed_blocks: fixed,
            model_id,
            dataset_id,
            rows,
        })
    }

    /// The block count every input agrees on.
    fn num_blocks(
        &self,
        stats: Option<&BlockStatsTable>,
        evaluations: Option<&EvaluationTable>,
    ) -> Result<usize> {
        // The count so far and the input that gave it, named in a disagreement.
        let mut num_blocks: Option<(usize, String)> = self
            .num_blocks
            .map(|count| (count, "--num-blocks".to_string()));
        let counts = [
            (
                stats.map(|t| t.num_blocks),
                "--block-stats",
                &self.block_stats,
            ),
            (
                evaluations.map(|t| t.num_blocks),
                "--evaluations",
                &self.evaluations,
            ),
        ];
        for (count, flag, path) in counts {
            let (Some(count), Some(path)) = (count, path) else {
                continue;
            };
            match &num_blocks {
                Some((expected, source)) if *expected != count => bail!(
                    "{flag} {} is for a model of {count} blocks, but {source} says {expected}",
                    path.display()
                ),
                Some(_) => {}
                None => num_blocks = Some((count, format!("{flag} {}", path.display()))),
            }
        }
        let num_blocks = num_blocks.map(|(count, _)| count);
        num_blocks.with_context(|| {
            "no input says how many blocks the model has; give --block-stats, --evaluations or \
             --num-blocks"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed block out of range is said as sample-masks says it: the blocks the model has,
    /// by their first and last number.
    #[test]
    fn a_fixed_block_out_of_range_names_the_last_block() {
        let files = BaselineFiles {
            num_blocks: Some(6),
            fixed: vec![0, 9],
            ..BaselineFiles::default()
        };
        let message = files
            .score(&[BaselineEstimator::Random])
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "--fixed: fixed block 9 is out of range: a model of 6 blocks has blocks 0 to 5"
        );
        let within = BaselineFiles {
            fixed: vec![0, 5],
            ..files
        };
        let table = within.score(&[BaselineEstimator::Random]).unwrap();
        assert_eq!(table.fixed_blocks, vec![0, 5]);
        assert_eq!(table.rows.len(), 4);
    }
}
