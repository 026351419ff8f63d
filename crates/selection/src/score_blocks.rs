//! The `score-blocks` stage as one library call: the baseline estimators' scores of one
//! model's blocks (ShortGPT block influence, angular distance, leave-one-out, reverse order,
//! random), from the files that hold what they need, as one score table with each estimator's
//! cost. [`BaselineFiles::score`] reads the files, checks that they describe one model and one
//! token table (as every stage checks its inputs, [`InputsAgree`]: `--allow-mixed-inputs`
//! uses files of two with a warning), and scores every estimator asked for; writing the table
//! is the stage's.

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use layerprune_core::PlayersError;
use layerprune_sampling::table::InputsAgree;
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
    /// Use block statistics and evaluations of another model or token table than each other,
    /// with a warning, instead of refusing (refused itself where not both are given).
    pub allow_mixed_inputs: bool,
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
        if self.allow_mixed_inputs && (self.block_stats.is_none() || self.evaluations.is_none()) {
            let given = match (&self.block_stats, &self.evaluations) {
                (Some(_), None) => "only --block-stats is given",
                (None, Some(_)) => "only --evaluations is given",
                _ => "neither is given",
            };
            bail!(
                "--allow-mixed-inputs is for --block-stats and --evaluations of another model or \
                 token table than each other, and this run compares no two tables ({given}); \
                 leave it out"
            );
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
        let one_model = self.one_model(stats.as_ref(), evaluations.as_ref())?;
        let num_blocks = one_model.num_blocks().context(
            "no input says how many blocks the model has; give --block-stats, --evaluations or \
             --num-blocks",
        )?;
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
        // The one model and token table (with --allow-mixed-inputs, the block statistics').
        Ok(ScoreTable {
            num_blocks,
            fixed_blocks: fixed,
            model_id: one_model.model_id().unwrap_or_default().to_string(),
            dataset_id: one_model.dataset_id().unwrap_or_default().to_string(),
            rows,
        })
    }

    /// The block count, model and token table the inputs agree on (each where one records
    /// it): `--num-blocks`, then the block statistics, then the evaluations. A score table
    /// records one model and one token table for all its scores.
    fn one_model(
        &self,
        stats: Option<&BlockStatsTable>,
        evaluations: Option<&EvaluationTable>,
    ) -> Result<InputsAgree> {
        let mut one_model = InputsAgree::new(self.allow_mixed_inputs);
        if let Some(count) = self.num_blocks {
            one_model.blocks(count, "--num-blocks", "number of blocks")?;
        }
        if let (Some(table), Some(path)) = (stats, &self.block_stats) {
            let source = format!("--block-stats {}", path.display());
            one_model.blocks(table.num_blocks, &source, "block statistics table")?;
            one_model.model(
                &table.model_id,
                &source,
                ": the block statistics were measured on another model",
            )?;
            one_model.dataset(
                &table.dataset_id,
                &source,
                ": the block statistics were measured on another token table",
            )?;
        }
        if let (Some(table), Some(path)) = (evaluations, &self.evaluations) {
            let source = format!("--evaluations {}", path.display());
            one_model.blocks(table.num_blocks, &source, "evaluation table")?;
            one_model.model(
                &table.model_id,
                &source,
                ": the evaluations were measured on another model",
            )?;
            one_model.dataset(
                &table.dataset_id,
                &source,
                ": the evaluations were measured on another token table",
            )?;
        }
        Ok(one_model)
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

    /// The inputs agree as every stage's do ([`InputsAgree`]): block statistics that record no
    /// model beside evaluations that record one are one model's (until 2026-12-08 refused,
    /// where apply-prune took the same two files), the table recording the one id given;
    /// another model is refused naming both files and the flag, and used with it.
    #[test]
    fn the_inputs_describe_one_model_as_in_every_stage() {
        use layerprune_core::Mask;
        use layerprune_tables::{
            write_block_stats, write_evaluations, BlockStatRow, EvaluationRow, Provenance,
        };

        let dir = tempfile::tempdir().unwrap();
        let provenance = Provenance::new("test", "0", Vec::new());
        let stats = dir.path().join("stats.parquet");
        let write_stats = |model_id: &str| {
            let table = BlockStatsTable {
                num_blocks: 4,
                model_id: model_id.into(),
                dataset_id: String::new(),
                rows: (0..4)
                    .map(|b| BlockStatRow {
                        start_block: b,
                        run_length: 1,
                        mean_cosine: 0.9,
                        angular_distance: 0.9f64.acos() / std::f64::consts::PI,
                    })
                    .collect(),
            };
            write_block_stats(&stats, &table, &provenance).unwrap();
        };
        let evaluations = dir.path().join("evals.parquet");
        let mut table = EvaluationTable::new(4, "m", "d");
        table.complete = true;
        table.rows = (0..4)
            .map(|b| EvaluationRow {
                mask: Mask::from_removed(4, &[b]).unwrap(),
                nll: 3.0 + b as f64,
                ppl: (3.0 + b as f64).exp(),
                utility: (-(b as f64)).exp(),
                tokens_scored: 10,
                seconds: 0.0,
                window_nlls: None,
            })
            .collect();
        write_evaluations(&evaluations, &table, &provenance).unwrap();
        let files = |allow_mixed_inputs: bool| BaselineFiles {
            block_stats: Some(stats.clone()),
            evaluations: Some(evaluations.clone()),
            allow_mixed_inputs,
            ..BaselineFiles::default()
        };
        let estimators = [BaselineEstimator::Angular, BaselineEstimator::LeaveOneOut];

        write_stats("");
        let scored = files(false).score(&estimators).unwrap();
        assert_eq!(
            (scored.model_id.as_str(), scored.dataset_id.as_str()),
            ("m", "d")
        );

        write_stats("other");
        let message = files(false).score(&estimators).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "--evaluations {}: the evaluations were measured on another model (m) than \
                 --block-stats {} (other); give --allow-mixed-inputs to use them together",
                evaluations.display(),
                stats.display()
            )
        );
        let scored = files(true).score(&estimators).unwrap();
        assert_eq!(scored.model_id, "other");
        assert_eq!(scored.rows.len(), 8);
    }
}
