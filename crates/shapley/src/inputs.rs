//! The files the `shapley` stage scores from, read and checked to describe one game: the same
//! number of blocks, the same model and token table where both the evaluation table and the
//! surrogate record them, and one player set (the fixed blocks each file records, and
//! `--fixed` if given, must agree). [`ScoreFiles::load`] reads them;
//! [`ScoreInputs::estimate`] runs estimators of the registry on them and
//! [`ScoreInputs::table`] makes the score table.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use layerprune_core::game::NotRecorded;
use layerprune_core::{GameValue, Mask, Players};
use layerprune_surrogate::{SavedSurrogate, Surrogate};
use layerprune_tables::{
    read_complete_evaluations_hashed, read_masks_hashed, Hashed, Incomplete, Provenance, ScoreRow,
    ScoreTable,
};

use crate::{
    estimate, DesignRow, Estimates, Estimator, EstimatorInputs, EstimatorOptions, Needs,
    RecordedDesign,
};

/// The input files of a scoring run and what to read from them.
#[derive(Clone, Debug)]
pub struct ScoreFiles {
    /// Evaluation table (masks valued on the LLM).
    pub evaluations: Option<PathBuf>,
    /// Fitted surrogate (fit-surrogate's JSON).
    pub surrogate: Option<PathBuf>,
    /// Mask table: the design (permutation chains, complement pairs) and the fixed blocks.
    pub masks: Option<PathBuf>,
    /// The game value of the evaluation table's masks (`--value`); `None`: the one the
    /// surrogate predicts, else utility. One that differs from the surrogate's is refused: the
    /// estimates of one run are of one game.
    pub value: Option<GameValue>,
    /// The player set's fixed blocks, when given: must repeat what the files record.
    pub fixed_blocks: Option<Vec<usize>>,
    /// Use a surrogate fitted on another model's or token table's evaluations with these
    /// evaluations, with a warning, instead of refusing.
    pub allow_mixed_inputs: bool,
    /// Whether an evaluation table that is not complete may be used.
    pub incomplete: Incomplete,
}

/// The inputs, read and checked to describe one model and one player set.
pub struct ScoreInputs {
    pub players: Players,
    /// `(block mask, value)` rows of the evaluation table, in table order.
    pub evaluations: Option<Vec<(Mask, f64)>>,
    pub surrogate: Option<SavedSurrogate>,
    pub design: Option<RecordedDesign>,
    /// The model and token table the values were measured with, where a file records them.
    pub game_ids: (String, String),
    /// The evaluation table's path, for the errors about its values.
    pub evaluations_file: Option<PathBuf>,
    /// The mask table's path, for the errors about the masks its design reads.
    pub masks_file: Option<PathBuf>,
    /// Rows of the evaluation table whose mask is not in the mask table (0 without one): what
    /// an estimator reading every row takes beyond the masks given.
    pub rows_beyond_masks: usize,
    /// The SHA-256 of each file read, by its role in the provenance (`evaluations`,
    /// `surrogate`, `masks`): of the bytes that were parsed.
    pub input_hashes: Vec<(&'static str, String)>,
}

/// Files computed for different games: refused, or with `--allow-mixed-inputs` a warning; and
/// the check that a run's inputs describe one model, which applies it (the rule of every stage,
/// `sample-masks`' included, kept in `layerprune-sampling`).
pub use layerprune_sampling::table::{mixed_inputs, InputsAgree};

/// A setting of the estimators as a stage's command line gave it: its flag, whether it was
/// given, and which estimators read it (e.g. [`Estimator::reads_samples`]).
pub type GivenSetting<'a> = (&'a str, bool, fn(Estimator) -> bool);

fn shown(path: &Option<PathBuf>) -> std::path::Display<'_> {
    path.as_deref().unwrap_or(Path::new("")).display()
}

impl ScoreFiles {
    /// Every file given, for the check that the output replaces none.
    pub fn paths(&self) -> Vec<&Path> {
        [&self.evaluations, &self.surrogate, &self.masks]
            .into_iter()
            .filter_map(|path| path.as_deref())
            .collect()
    }

    /// The game value the evaluation table's masks are read as: `--value`, which must be the
    /// one the surrogate predicts when both are given; else the surrogate's; else utility.
    fn game_value(&self, surrogate: Option<&SavedSurrogate>) -> Result<GameValue> {
        let predicted = surrogate
            .map(|saved| {
                saved
                    .game_value()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", shown(&self.surrogate)))
            })
            .transpose()?;
        match (self.value, predicted) {
            (Some(asked), Some(predicted)) if asked != predicted => bail!(
                "--value {} but {} predicts {}: the estimates of one run are of one game; give \
                 --value {} or leave it out",
                asked.name(),
                shown(&self.surrogate),
                predicted.name(),
                predicted.name()
            ),
            (asked, predicted) => Ok(asked.or(predicted).unwrap_or(GameValue::Utility)),
        }
    }

    /// Reads the files and checks they describe one game.
    pub fn load(&self) -> Result<ScoreInputs> {
        let mut input_hashes = Vec::new();
        let evaluations = self
            .evaluations
            .as_deref()
            .map(|path| read_complete_evaluations_hashed(path, self.incomplete))
            .transpose()?
            .map(|Hashed { table, sha256, .. }| {
                input_hashes.push(("evaluations", sha256));
                table
            });
        let surrogate = self
            .surrogate
            .as_deref()
            .map(|path| {
                SavedSurrogate::load_hashed(path)
                    .with_context(|| format!("loading {}", path.display()))
            })
            .transpose()?
            .map(|(saved, sha256)| {
                input_hashes.push(("surrogate", sha256));
                saved
            });
        let value = self.game_value(surrogate.as_ref())?;
        let masks = self
            .masks
            .as_deref()
            .map(read_masks_hashed)
            .transpose()?
            .map(|Hashed { table, sha256, .. }| {
                input_hashes.push(("masks", sha256));
                table
            });
        // One model: the same blocks everywhere, and the surrogate fitted on evaluations of
        // the model and token table of the evaluation table (where both record them).
        let mut one_model = InputsAgree::new(self.allow_mixed_inputs);
        if let (Some(path), Some(table)) = (&self.evaluations, &evaluations) {
            let path = &path.display();
            one_model.blocks(table.num_blocks, path, "evaluation table")?;
            one_model.model(
                &table.model_id,
                path,
                ": the evaluations were measured on another model",
            )?;
            one_model.dataset(
                &table.dataset_id,
                path,
                ": the evaluations were measured on another token table",
            )?;
        }
        if let (Some(path), Some(saved)) = (&self.surrogate, &surrogate) {
            let path = &path.display();
            one_model.blocks(saved.surrogate.num_players(), path, "surrogate")?;
            one_model.model(
                &saved.model_id,
                path,
                " was fitted on evaluations of another model",
            )?;
            one_model.dataset(
                &saved.dataset_id,
                path,
                " was fitted on evaluations of another token table",
            )?;
        }
        if let (Some(path), Some(table)) = (&self.masks, &masks) {
            one_model.blocks(table.num_blocks, path.display(), "mask table")?;
        }
        let Some(num_blocks) = one_model.num_blocks() else {
            bail!("give --evaluations and/or --surrogate");
        };

        // The player set is recorded in the files; a flag may only repeat it.
        let mut recorded: Vec<(String, Vec<usize>)> = Vec::new();
        if let (Some(path), Some(table)) = (&self.masks, &masks) {
            recorded.push((path.display().to_string(), table.fixed_blocks.clone()));
        }
        if let (Some(path), Some(table)) = (&self.evaluations, &evaluations) {
            recorded.push((path.display().to_string(), table.fixed_blocks.clone()));
        }
        if let (Some(path), Some(saved)) = (&self.surrogate, &surrogate) {
            recorded.push((path.display().to_string(), saved.fixed_blocks.clone()));
        }
        if let Some(fixed) = &self.fixed_blocks {
            let mut fixed = fixed.clone();
            fixed.sort_unstable();
            fixed.dedup();
            recorded.push(("--fixed".into(), fixed));
        }
        let fixed = match recorded.split_first() {
            None => Vec::new(),
            Some(((source, fixed), rest)) => {
                if let Some((other, theirs)) = rest.iter().find(|(_, f)| f != fixed) {
                    if other == "--fixed" {
                        // Other stages add --fixed to what the files record; here the
                        // players are those the tables measured, so say where to add one.
                        bail!(
                            "--fixed {theirs:?} is not the game's fixed blocks {fixed:?} (recorded \
                             in {source}): shapley estimates the game that was sampled and \
                             measured, whose players sample-masks --fixed sets; to keep a block \
                             in the pruned model, give it to apply-prune --fixed instead"
                        );
                    }
                    bail!(
                        "{source} fixes blocks {fixed:?} but {other} fixes {theirs:?}: the inputs \
                         come from different games"
                    );
                }
                fixed.clone()
            }
        };
        let players = Players::new(num_blocks, &fixed)?;
        let design = masks
            .as_ref()
            .map(|table| {
                let rows = table.rows.iter().map(|row| DesignRow {
                    design: row.design,
                    group_id: row.group_id,
                    position: row.position.unwrap_or(0),
                    mask: &row.mask,
                });
                RecordedDesign::from_rows(rows, &players)
            })
            .transpose()
            .with_context(|| format!("{}", shown(&self.masks)))?;
        // The evaluation table's ids, else the surrogate's (each where it records one).
        let game_ids = (
            one_model.model_id().unwrap_or_default().to_string(),
            one_model.dataset_id().unwrap_or_default().to_string(),
        );
        let rows_beyond_masks = match (&evaluations, &masks) {
            (Some(evaluations), Some(masks)) => {
                let given: std::collections::HashSet<&Mask> =
                    masks.rows.iter().map(|row| &row.mask).collect();
                evaluations
                    .rows
                    .iter()
                    .filter(|row| !given.contains(&row.mask))
                    .count()
            }
            _ => 0,
        };
        let evaluations = evaluations
            .map(|table| -> Result<Vec<(Mask, f64)>> {
                let values = table
                    .values(value)
                    .with_context(|| format!("{}", shown(&self.evaluations)))?;
                Ok(table
                    .rows
                    .iter()
                    .map(|row| row.mask.clone())
                    .zip(values)
                    .collect())
            })
            .transpose()?;
        Ok(ScoreInputs {
            players,
            evaluations,
            surrogate,
            design,
            game_ids,
            evaluations_file: self.evaluations.clone(),
            masks_file: self.masks.clone(),
            rows_beyond_masks,
            input_hashes,
        })
    }
}

/// An estimator's error, with the files it concerns named. A value that is not finite is the
/// evaluation table's. A mask the recorded game lacks ([`NotRecorded`]) is the evaluation
/// table's too, and where the estimator reads the design of a mask table (chains, pairs), named
/// with both (evaluations of another mask table?); every other error of the game (the table's
/// masks or windows) is named with the evaluation table alone, as it is (until 2026-12-07 every
/// one was said to be a mask the design reads, also for estimators that read no design).
fn with_files(
    error: crate::ShapleyError,
    which: Estimator,
    evaluations: Option<&Path>,
    masks: Option<&Path>,
) -> anyhow::Error {
    use crate::ShapleyError;
    let reads_design = matches!(which.needs(), Needs::Chains | Needs::Pairs);
    match (&error, evaluations) {
        (ShapleyError::NotFinite { .. }, Some(path)) => {
            anyhow::anyhow!("{}: {error}", path.display())
        }
        (ShapleyError::Game(game_error), Some(evaluations))
            if which.needs() != Needs::Surrogate =>
        {
            match masks {
                Some(masks) if reads_design && game_error.is::<NotRecorded>() => anyhow::anyhow!(
                    "{} does not hold every mask that the design of {} reads (evaluations of \
                     another mask table?): {error}",
                    evaluations.display(),
                    masks.display()
                ),
                _ => anyhow::anyhow!("{}: {error}", evaluations.display()),
            }
        }
        _ => error.into(),
    }
}

impl ScoreInputs {
    /// `provenance` with the sha256 of each input file, of the bytes that were parsed (hashed
    /// as they were read).
    pub fn provenance(&self, provenance: Provenance) -> Provenance {
        self.input_hashes
            .iter()
            .fold(provenance, |provenance, (role, sha256)| {
                provenance.with_input(role, sha256)
            })
    }

    /// The LLM evaluations behind a surrogate estimate: the surrogate's own record of what it
    /// was fitted on, else the evaluation table's size.
    pub fn surrogate_evaluations(&self) -> usize {
        self.surrogate
            .as_ref()
            .map(|s| s.fitted_on_evaluations as usize)
            .filter(|&n| n > 0)
            .or_else(|| self.evaluations.as_ref().map(Vec::len))
            .unwrap_or(0)
    }

    /// Refuses the settings that only `surrogate-shapley` reads among `estimators` where the
    /// surrogate has a closed form, which then samples nothing
    /// ([`crate::refuse_sampling_a_closed_form_ignores`]). `settings`: each flag, whether it was
    /// given, and which estimators read it.
    pub fn refuse_sampling_a_closed_form_ignores(
        &self,
        estimators: &[Estimator],
        settings: &[GivenSetting<'_>],
    ) -> Result<()> {
        let Some(saved) = &self.surrogate else {
            return Ok(());
        };
        let moot: Vec<&str> = settings
            .iter()
            .filter(|(_, given, reads)| {
                let mut readers = estimators.iter().filter(|&&e| reads(e)).peekable();
                *given
                    && readers.peek().is_some()
                    && readers.all(|&e| e == Estimator::SurrogateShapley)
            })
            .map(|(flag, ..)| *flag)
            .collect();
        crate::refuse_sampling_a_closed_form_ignores(&saved.surrogate, "surrogate-shapley", &moot)
    }

    /// Runs each estimator in turn, once however often it is listed (a score table holds one
    /// score per block per estimator); `note` gets each one's notes as it finishes.
    pub fn estimate(
        &self,
        estimators: &[Estimator],
        options: &EstimatorOptions,
        note: &mut dyn FnMut(&str),
    ) -> Result<Vec<Estimates>> {
        let unique = layerprune_core::distinct(estimators);
        for which in &unique {
            if estimators.iter().filter(|e| *e == which).count() > 1 {
                note(&format!(
                    "warning: {which} is listed more than once (perhaps under an old name); it \
                     runs once"
                ));
            }
        }
        let estimators = &unique[..];
        let mut inputs = EstimatorInputs {
            evaluations: self.evaluations.as_deref(),
            design: self.design.as_ref(),
            surrogate: self
                .surrogate
                .as_ref()
                .map(|s| &s.surrogate as &dyn Surrogate),
            surrogate_evaluations: self.surrogate_evaluations(),
        };
        // A mask table beside the evaluation table reads as "estimate from these masks"; the
        // estimators that take every evaluated row (the mask table's design is for the chains
        // and pairs) say so once, where the table holds more.
        let reading_every_row: Vec<&str> = estimators
            .iter()
            .filter(|which| which.needs() == crate::Needs::Evaluations)
            .map(|which| which.name())
            .collect();
        if let (false, Some(masks), Some(evaluations), 1..) = (
            reading_every_row.is_empty(),
            &self.masks_file,
            &self.evaluations_file,
            self.rows_beyond_masks,
        ) {
            note(&format!(
                "warning: {} {} from every row of {}, {} of them of masks not in {} (its design \
                 is read by the permutation and complement-pair estimators)",
                reading_every_row.join(", "),
                if reading_every_row.len() == 1 {
                    "estimates"
                } else {
                    "estimate"
                },
                evaluations.display(),
                self.rows_beyond_masks,
                masks.display()
            ));
        }
        let mut all = Vec::new();
        for (done, &which) in estimators.iter().enumerate() {
            let start = std::time::Instant::now();
            let reads_table = which.needs() != crate::Needs::Surrogate;
            if let (true, Some([]), Some(path)) =
                (reads_table, inputs.evaluations, &self.evaluations_file)
            {
                // Else said as a stratum, a chain or a pair it lacks ("none keeps 0 of the 6
                // players"), as if the table held other rows.
                bail!(
                    "{}: the evaluation table has no rows; {which} estimates from the evaluated \
                     masks",
                    path.display()
                );
            }
            let estimated =
                estimate(which, &mut inputs, &self.players, options).map_err(|error| {
                    with_files(
                        error,
                        which,
                        self.evaluations_file.as_deref(),
                        self.masks_file.as_deref(),
                    )
                })?;
            for text in &estimated.notes {
                note(text);
            }
            // A score table of NaN would only be refused later, by apply-prune.
            for estimates in &estimated.estimates {
                let not_finite = estimates.values.iter().position(|v| !v.is_finite());
                if let Some(player) = not_finite {
                    bail!(
                        "{}: the estimate of block {} is {} (a surrogate's predictions or the \
                         values it was given overflow?); nothing is written",
                        estimates.estimator,
                        estimates.blocks.get(player).copied().unwrap_or(player),
                        estimates.values[player]
                    );
                }
            }
            tracing::info!(
                "{which}: done in {:.2} s ({} of {} estimators)",
                start.elapsed().as_secs_f64(),
                done + 1,
                estimators.len()
            );
            all.extend(estimated.estimates);
        }
        Ok(all)
    }

    /// The score table of `all`: one row per player block per estimate, the fixed blocks and
    /// the game's ids in its metadata.
    pub fn table(&self, all: &[Estimates]) -> ScoreTable {
        let mut rows = Vec::new();
        for estimates in all {
            for (index, &block) in estimates.blocks.iter().enumerate() {
                let interval = estimates.ci95(index);
                rows.push(ScoreRow {
                    block: block as u32,
                    estimate: estimates.values[index],
                    std_error: estimates.std_errors.as_ref().map(|se| se[index]),
                    ci_low: interval.map(|i| i.0),
                    ci_high: interval.map(|i| i.1),
                    estimator: estimates.estimator.clone(),
                    llm_evaluations: estimates.llm_evaluations as u64,
                });
            }
        }
        ScoreTable {
            num_blocks: self.players.num_blocks(),
            fixed_blocks: self.players.fixed_blocks().to_vec(),
            model_id: self.game_ids.0.clone(),
            dataset_id: self.game_ids.1.clone(),
            rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NonuniformMasks;
    use layerprune_core::synthetic::AdditiveGame;
    use layerprune_core::Design;
    use layerprune_tables::{read_complete_evaluations, write_masks};
    use layerprune_tables::{MaskRow, MaskTable};

    const BLOCKS: usize = 5;

    /// Only a mask the recorded game lacks is blamed on the design of the mask table, and only
    /// for an estimator that reads one; any other error of the game passes through with the
    /// evaluation table named (review of 2026-12-07: every game error was said to be a mask
    /// the design reads).
    #[test]
    fn only_a_missing_mask_is_blamed_on_the_mask_table() {
        use crate::ShapleyError;
        let evaluations = Path::new("evals.parquet");
        let masks = Path::new("masks.parquet");
        let lacking: Mask = "01101".parse().unwrap();
        let missing = || {
            ShapleyError::Game(Box::new(NotRecorded {
                mask: lacking.clone(),
            }))
        };
        let other =
            || ShapleyError::Game("mask 011 has values on 3 windows, the others on 10".into());
        let design_blame =
            "evals.parquet does not hold every mask that the design of masks.parquet reads";
        let text =
            |error, which| with_files(error, which, Some(evaluations), Some(masks)).to_string();
        let chains = text(missing(), Estimator::Permutation);
        assert!(
            chains.starts_with(design_blame) && chains.contains("mask 01101 was not evaluated"),
            "{chains}"
        );
        let pairs = text(missing(), Estimator::KernelShap);
        assert!(pairs.starts_with(design_blame), "{pairs}");
        for which in [Estimator::Permutation, Estimator::Stratified] {
            let passed = text(other(), which);
            assert!(
                passed.starts_with("evals.parquet: the game could not value the masks: mask 011 has values on 3 windows"),
                "{which}: {passed}"
            );
        }
        // An estimator that reads no design is not told of the mask table's design.
        let recorded = text(missing(), Estimator::Stratified);
        assert!(
            recorded.starts_with("evals.parquet: ") && !recorded.contains("masks.parquet"),
            "{recorded}"
        );
    }

    /// Every mask over the players of 5 blocks with `fixed` fixed, valued by an additive game
    /// (block b worth b + 1), as an evaluation table; and a mask table of the same masks.
    fn write_inputs(dir: &Path, fixed: &[usize], masks_fixed: &[usize]) -> ScoreFiles {
        let players = Players::new(BLOCKS, fixed).unwrap();
        let mut game = AdditiveGame::new((1..=BLOCKS).map(|b| b as f64).collect(), 0.0);
        let evaluations = dir.join("evals.parquet");
        let masks = layerprune_tests::write_every_player_mask(&evaluations, &mut game, &players, 1);
        let provenance = Provenance::new("test", "0", vec![]);
        let mask_table = MaskTable {
            num_blocks: BLOCKS,
            fixed_blocks: masks_fixed.to_vec(),
            // Only the masks that keep its fixed blocks (a table with others is refused).
            rows: masks
                .iter()
                .filter(|mask| masks_fixed.iter().all(|&block| mask.is_kept(block)))
                .map(|mask| MaskRow {
                    mask: mask.clone(),
                    design: Design::Enumeration,
                    group_id: None,
                    position: None,
                })
                .collect(),
        };
        let masks = dir.join("masks.parquet");
        write_masks(&masks, &mask_table, &provenance).unwrap();
        ScoreFiles {
            evaluations: Some(evaluations),
            surrogate: None,
            masks: Some(masks),
            value: Some(GameValue::Utility),
            fixed_blocks: None,
            allow_mixed_inputs: false,
            incomplete: Incomplete::Refuse,
        }
    }

    #[test]
    fn the_files_player_set_is_scored_into_a_table() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_inputs(dir.path(), &[0], &[0]);
        assert_eq!(files.paths().len(), 2);
        let inputs = files.load().unwrap();
        assert_eq!(inputs.players.blocks(), &[1, 2, 3, 4]);
        assert_eq!(inputs.game_ids, ("model".into(), "data".into()));
        assert_eq!(inputs.surrogate_evaluations(), 16);
        let options = EstimatorOptions {
            samples: 100,
            strata: None,
            seed: 0,
            nonuniform_masks: NonuniformMasks::Refused,
        };
        let mut notes = Vec::new();
        let all = inputs
            .estimate(&[Estimator::Exact], &options, &mut |n| {
                notes.push(n.to_string())
            })
            .unwrap();
        // The mask table holds every evaluated mask: nothing to say of rows beyond it.
        assert_eq!(inputs.rows_beyond_masks, 0);
        assert!(notes.iter().all(|n| !n.starts_with("warning")), "{notes:?}");
        // Rows beyond it are said once, with their count, by the estimators that read them.
        let beyond = ScoreInputs {
            rows_beyond_masks: 3,
            ..files.load().unwrap()
        };
        let mut notes = Vec::new();
        beyond
            .estimate(
                &[Estimator::Exact, Estimator::BanzhafMsr],
                &options,
                &mut |n| notes.push(n.to_string()),
            )
            .unwrap();
        let warned: Vec<&String> = notes.iter().filter(|n| n.starts_with("warning")).collect();
        assert_eq!(warned.len(), 1, "{notes:?}");
        assert!(
            warned[0].starts_with("warning: exact-shapley, banzhaf-msr estimate from every row of")
                && warned[0].contains("3 of them of masks not in"),
            "{warned:?}"
        );
        // Exact Shapley and Banzhaf of an additive game: each block's own worth.
        assert_eq!(all.len(), 2);
        let table = inputs.table(&all);
        assert_eq!(
            (table.num_blocks, table.fixed_blocks.clone()),
            (BLOCKS, vec![0])
        );
        assert_eq!(table.rows.len(), 2 * 4);
        for row in &table.rows {
            assert!(
                (row.estimate - f64::from(row.block + 1)).abs() < 1e-9,
                "{row:?}"
            );
            assert_eq!(row.llm_evaluations, 16);
        }
        let provenance = inputs.provenance(Provenance::new("shapley", "0", vec![]));
        assert_eq!(provenance.inputs.len(), 2);
        // The hashes of the bytes read, the same as the files' now.
        for (role, path) in [
            ("evaluations", files.evaluations.as_ref().unwrap()),
            ("masks", files.masks.as_ref().unwrap()),
        ] {
            let bytes = std::fs::read(path).unwrap();
            assert_eq!(
                provenance.inputs[role],
                layerprune_core::sha256_hex(&bytes),
                "{role}"
            );
        }
    }

    #[test]
    fn the_value_is_the_surrogates_and_another_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_inputs(dir.path(), &[0], &[0]);
        let inputs = files.load().unwrap();
        let masks: Vec<Mask> = inputs
            .evaluations
            .as_ref()
            .unwrap()
            .iter()
            .map(|(mask, _)| mask.clone())
            .collect();
        let values: Vec<f64> = masks.iter().map(|m| m.num_kept() as f64).collect();
        let fitted = layerprune_surrogate::fit(
            layerprune_surrogate::SurrogateKind::Quadratic,
            &masks,
            &values,
            &layerprune_surrogate::FitOptions::default(),
        )
        .unwrap();
        let surrogate = dir.path().join("surrogate.json");
        SavedSurrogate::new(fitted, "nll-increase", "-(NLL - NLL full)")
            .with_game(&[0], "model", "data")
            .save(&surrogate)
            .unwrap();
        let with = |value: Option<GameValue>| ScoreFiles {
            surrogate: Some(surrogate.clone()),
            value,
            ..write_inputs(dir.path(), &[0], &[0])
        };
        let message = with(Some(GameValue::Utility))
            .load()
            .err()
            .unwrap()
            .to_string();
        assert!(
            message.contains("--value utility but")
                && message.contains("surrogate.json predicts nll-increase"),
            "{message}"
        );
        // Left out, the table is read as the surrogate's game: −(NLL increase), not the utility.
        let table =
            read_complete_evaluations(&files.evaluations.clone().unwrap(), Incomplete::Refuse)
                .unwrap();
        let read = with(None).load().unwrap().evaluations.unwrap();
        let expected = table.values(GameValue::NllIncrease).unwrap();
        assert_eq!(read.iter().map(|(_, v)| *v).collect::<Vec<_>>(), expected);
        assert_ne!(expected, table.values(GameValue::Utility).unwrap());
        let inputs = with(Some(GameValue::NllIncrease)).load().unwrap();
        // The surrogate's hash is of the bytes parsed: its file replaced after the read does
        // not change what the provenance says was read.
        let bytes = std::fs::read(&surrogate).unwrap();
        std::fs::write(&surrogate, b"replaced").unwrap();
        let provenance = inputs.provenance(Provenance::new("shapley", "0", vec![]));
        assert_eq!(
            provenance.inputs["surrogate"],
            layerprune_core::sha256_hex(&bytes)
        );
        assert_eq!(provenance.inputs.len(), 3);
    }

    /// A collapsed model's row (NLL +inf) is valued −inf by neg-nll: the estimators that read
    /// it averaged it into inf or NaN, refused only as "the estimate of block b is NaN (a
    /// surrogate's predictions ... overflow?)", and exact-shapley called it "not evaluated (it
    /// is not in the recorded table)". Each names the file, the mask and its value; the same
    /// row read as utility (0) is estimated.
    #[test]
    fn a_collapsed_models_value_is_named_with_its_mask_and_file() {
        use layerprune_tables::write_evaluations;
        let dir = tempfile::tempdir().unwrap();
        let files = ScoreFiles {
            value: Some(GameValue::NegNll),
            masks: None,
            ..write_inputs(dir.path(), &[0], &[0])
        };
        let path = files.evaluations.clone().unwrap();
        let mut table = read_complete_evaluations(&path, Incomplete::Refuse).unwrap();
        let row = table
            .rows
            .iter_mut()
            .find(|row| row.mask.num_kept() == 3)
            .unwrap();
        (row.nll, row.ppl, row.utility) = (f64::INFINITY, f64::INFINITY, 0.0);
        let collapsed = row.mask.clone();
        write_evaluations(&path, &table, &Provenance::new("test", "0", vec![])).unwrap();
        let options = EstimatorOptions {
            samples: 100,
            strata: None,
            seed: 0,
            nonuniform_masks: NonuniformMasks::Refused,
        };
        let inputs = files.load().unwrap();
        for which in [
            Estimator::Exact,
            Estimator::Stratified,
            Estimator::RegressionAdjustedStratified,
            Estimator::BanzhafMsr,
        ] {
            let error = inputs
                .estimate(&[which], &options, &mut |_| {})
                .err()
                .unwrap()
                .to_string();
            assert!(
                error.contains("evals.parquet: ")
                    && error.contains(&format!("reads mask {collapsed}, whose value is -inf")),
                "{which}: {error}"
            );
        }
        let utility = ScoreFiles {
            value: Some(GameValue::Utility),
            ..files
        };
        let all = [Estimator::Exact, Estimator::Stratified];
        assert!(utility
            .load()
            .unwrap()
            .estimate(&all, &options, &mut |_| {})
            .is_ok());
    }

    #[test]
    fn files_of_different_games_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_inputs(dir.path(), &[0], &[0, 1]);
        let message = files.load().err().unwrap().to_string();
        assert!(
            message.contains("fixes blocks [0, 1] but") && message.contains("fixes [0]"),
            "{message}"
        );
        let files = ScoreFiles {
            fixed_blocks: Some(vec![2]),
            masks: None,
            ..write_inputs(dir.path(), &[0], &[0])
        };
        let message = files.load().err().unwrap().to_string();
        assert!(
            message.contains("--fixed [2] is not the game's fixed blocks [0]")
                && message.contains("apply-prune --fixed"),
            "{message}"
        );
        let none = ScoreFiles {
            evaluations: None,
            masks: None,
            ..files
        };
        assert!(none
            .load()
            .err()
            .unwrap()
            .to_string()
            .contains("give --evaluations and/or --surrogate"));
    }

    /// The inputs agree as every stage's do ([`InputsAgree`]): an id only one file records
    /// agrees with any (until 2026-12-08 an evaluation table recording none was refused beside
    /// a surrogate recording one), another id is refused naming both files unless mixtures
    /// are allowed, and a block count that differs names both files.
    #[test]
    fn the_inputs_describe_one_model_as_in_every_stage() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_inputs(dir.path(), &[0], &[0]);
        let evaluations = files.evaluations.clone().unwrap();
        let mut table = read_complete_evaluations(&evaluations, Incomplete::Refuse).unwrap();
        table.model_id = String::new();
        let provenance = Provenance::new("test", "0", vec![]);
        layerprune_tables::write_evaluations(&evaluations, &table, &provenance).unwrap();
        let surrogate = |name: &str, num_blocks: usize, model_id: &str| {
            let masks: Vec<Mask> = (0..num_blocks)
                .map(|b| Mask::from_removed(num_blocks, &[b]).unwrap())
                .chain([Mask::full(num_blocks)])
                .collect();
            let values: Vec<f64> = masks.iter().map(|m| m.num_kept() as f64).collect();
            let fitted = layerprune_surrogate::fit(
                layerprune_surrogate::SurrogateKind::Quadratic,
                &masks,
                &values,
                &layerprune_surrogate::FitOptions::default(),
            )
            .unwrap();
            let path = dir.path().join(name);
            SavedSurrogate::new(fitted, "utility", "utility")
                .with_game(&[0], model_id, "data")
                .save(&path)
                .unwrap();
            path
        };
        let with = |path: PathBuf, allow_mixed_inputs: bool| ScoreFiles {
            surrogate: Some(path),
            masks: None,
            allow_mixed_inputs,
            ..files.clone()
        };
        // The table records no model: the surrogate's is the run's.
        let inputs = with(surrogate("m.json", BLOCKS, "model"), false)
            .load()
            .unwrap();
        assert_eq!(inputs.game_ids, ("model".into(), "data".into()));
        // Another token table than the evaluations': both files named, and the flag.
        let mut saved = SavedSurrogate::load(&dir.path().join("m.json")).unwrap();
        saved.dataset_id = "other text".into();
        let other_text = dir.path().join("other-text.json");
        saved.save(&other_text).unwrap();
        let message = with(other_text.clone(), false)
            .load()
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            message,
            format!(
                "{} was fitted on evaluations of another token table (other text) than {} \
                 (data); give --allow-mixed-inputs to use them together",
                other_text.display(),
                evaluations.display()
            )
        );
        let inputs = with(other_text, true).load().unwrap();
        assert_eq!(inputs.game_ids, ("model".into(), "data".into()));
        // A surrogate of 6 blocks beside evaluations of 5: refused, flag or none.
        let six = surrogate("six.json", 6, "model");
        let message = with(six.clone(), true).load().err().unwrap().to_string();
        assert_eq!(
            message,
            format!(
                "{}: the surrogate is for a model of 6 blocks, but {} says {BLOCKS}",
                six.display(),
                evaluations.display()
            )
        );
    }
}
