//! The `sample-masks` run as files: the Neyman pilot read from an evaluation table, the mask
//! table appended to read and checked (same model size, same fixed blocks, the same model where
//! both it and the request name one; its masks are not drawn again), the masks drawn
//! ([`sample`]) and the mask table made. The caller writes it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use layerprune_core::{Mask, Players};
use layerprune_tables::input_role;
use layerprune_tables::{
    read_complete_evaluations_hashed, read_masks_hashed, Hashed, Incomplete, MaskRow, MaskTable,
    Provenance, TableErrorKind,
};

use crate::{
    pilot_from_values, sample, Allocation, Existing, SampleOutcome, SamplingError, SamplingPlan,
    StrataSpec, StratifiedDesign,
};

/// How the stratified masks are shared by the strata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocationSource {
    /// The same number in every stratum (published).
    Equal,
    /// Proportional to the number of masks in each stratum.
    Proportional,
    /// Proportional to stratum size times the standard deviation of the utilities of this
    /// pilot evaluation table in the stratum (refused while it is not complete, unless
    /// `incomplete` allows it).
    Neyman {
        pilot: PathBuf,
        incomplete: Incomplete,
    },
}

/// Which masks to draw, over which players, and the table to add them to.
#[derive(Clone, Debug)]
pub struct MaskRequest {
    /// Stratified masks: the strata and their total number (`None`: none).
    pub strata: StrataSpec,
    pub stratified_masks: Option<usize>,
    pub allocation: AllocationSource,
    pub complement_pairs: bool,
    pub enumerate: bool,
    pub anchors: bool,
    pub permutation_chains: Option<usize>,
    /// A mask table to add to (its rows first, its masks not drawn again).
    pub append_to: Option<PathBuf>,
    pub seed: u64,
    /// The id of the model the masks are drawn for (`--model`: its manifest's sha256, the id
    /// its evaluation tables record), recorded in the table's provenance; `None` where only a
    /// block count was given. A pilot measured on another model, or a table appended to that
    /// was drawn for another, is refused unless `allow_mixed_inputs`. A table appended to
    /// keeps the model it records; another `model_id` is recorded beside it
    /// ([`APPENDED_MODELS_ROLE`]).
    pub model_id: Option<String>,
    /// Use a pilot or a table appended to of another model than `model_id`, with a warning.
    /// Refused where the run compares no two models, which it would not read.
    pub allow_mixed_inputs: bool,
}

/// The mask table to write, what was drawn, and its provenance (with the pilot's and the
/// appended table's sha256).
pub struct SampledMasks {
    pub table: MaskTable,
    pub outcome: SampleOutcome,
    /// Rows drawn now (the table also holds the appended rows).
    pub new_rows: usize,
    pub provenance: Provenance,
}

/// Files computed for different games (models), described by `message`: an error, or with
/// `--allow-mixed-inputs` (`allowed`) a warning. The one rule for every stage that reads several
/// such files (this crate is the lowest of them), which [`InputsAgree`] applies.
pub fn mixed_inputs(message: String, allowed: bool) -> Result<()> {
    if !allowed {
        bail!("{message}; give --allow-mixed-inputs to use them together");
    }
    tracing::warn!("{message}; used anyway (--allow-mixed-inputs)");
    Ok(())
}

/// The rule that the inputs of one run describe one model, for every stage that reads several
/// files (`sample-masks` here, `shapley`, `score-blocks` and `apply-prune`): the first block
/// count, model id and token-table id that an input gives, with where it was found, and each
/// later input checked against them.
///
/// - A block count that differs is refused: no estimate or plan is of two sizes of game.
/// - An id that differs goes through [`mixed_inputs`]: refused, or with `--allow-mixed-inputs`
///   a warning. Either way the message names both inputs.
/// - An empty id (files written before ids were recorded, a table drawn for a block count,
///   synthetic tests) agrees with any id.
#[derive(Debug, Default)]
pub struct InputsAgree {
    blocks: Option<(usize, String)>,
    model: Option<(String, String)>,
    dataset: Option<(String, String)>,
    allow_mixed_inputs: bool,
}

impl InputsAgree {
    /// No input seen yet; `allow_mixed_inputs`: ids that differ are warned of, not refused.
    pub fn new(allow_mixed_inputs: bool) -> Self {
        Self {
            allow_mixed_inputs,
            ..Self::default()
        }
    }

    /// Checks the block count of `source` (a path, or a flag with its path), `what` is a
    /// "score table", "surrogate"... On a mismatch the error reads "{source}: the {what} is for
    /// a model of {num_blocks} blocks, but {first source} says {first count}".
    pub fn blocks(
        &mut self,
        num_blocks: usize,
        source: impl std::fmt::Display,
        what: &str,
    ) -> Result<()> {
        match &self.blocks {
            Some((expected, first)) if *expected != num_blocks => bail!(
                "{source}: the {what} is for a model of {num_blocks} blocks, but {first} says \
                 {expected}"
            ),
            Some(_) => Ok(()),
            None => {
                self.blocks = Some((num_blocks, source.to_string()));
                Ok(())
            }
        }
    }

    /// Checks the model id `recorded` in `source`. `what` says how it would differ, e.g.
    /// " was fitted on evaluations of another model"; a mismatch reads "{source}{what}
    /// ({recorded}) than {first source} ({first id})".
    pub fn model(
        &mut self,
        recorded: &str,
        source: impl std::fmt::Display,
        what: &str,
    ) -> Result<()> {
        Self::agree(
            &mut self.model,
            self.allow_mixed_inputs,
            recorded,
            source,
            what,
        )
    }

    /// Checks the token-table (dataset) id `recorded` in `source`, as [`InputsAgree::model`]
    /// checks model ids (`what`, e.g. " was fitted on evaluations of another token table").
    pub fn dataset(
        &mut self,
        recorded: &str,
        source: impl std::fmt::Display,
        what: &str,
    ) -> Result<()> {
        Self::agree(
            &mut self.dataset,
            self.allow_mixed_inputs,
            recorded,
            source,
            what,
        )
    }

    fn agree(
        first: &mut Option<(String, String)>,
        allow_mixed_inputs: bool,
        recorded: &str,
        source: impl std::fmt::Display,
        what: &str,
    ) -> Result<()> {
        if recorded.is_empty() {
            return Ok(());
        }
        match first {
            None => {
                *first = Some((recorded.to_string(), source.to_string()));
                Ok(())
            }
            Some((id, _)) if id == recorded => Ok(()),
            Some((id, first_source)) => mixed_inputs(
                format!("{source}{what} ({recorded}) than {first_source} ({id})"),
                allow_mixed_inputs,
            ),
        }
    }

    /// The block count the inputs agree on; `None` where none gave one.
    pub fn num_blocks(&self) -> Option<usize> {
        self.blocks.as_ref().map(|(count, _)| *count)
    }

    /// The first model id an input recorded (with `--allow-mixed-inputs`, the one the others
    /// were compared with); `None` where none recorded one.
    pub fn model_id(&self) -> Option<&str> {
        self.model.as_ref().map(|(id, _)| id.as_str())
    }

    /// The first token-table id an input recorded, as [`InputsAgree::model_id`].
    pub fn dataset_id(&self) -> Option<&str> {
        self.dataset.as_ref().map(|(id, _)| id.as_str())
    }
}

/// The provenance role of the models a mask table's masks were also drawn for, beside the one
/// it records as its `model` (`sample-masks --append --model` of another model, with
/// `--allow-mixed-inputs`): their ids, ascending and joined by `,` (ids are hex digests).
pub const APPENDED_MODELS_ROLE: &str = "appended_models";

/// The models a mask table appended to records: the one it was drawn for (its provenance's
/// `model`; none for a table drawn for a block count, or written without provenance), and
/// those masks were appended for since ([`APPENDED_MODELS_ROLE`]).
#[derive(Default)]
struct RecordedModels {
    model: Option<String>,
    appended: BTreeSet<String>,
}

impl RecordedModels {
    /// What the table appended to, read from `path`, records.
    fn of(table: &Hashed<MaskTable>, path: &Path) -> Result<RecordedModels> {
        match table.provenance() {
            Ok(provenance) => Ok(RecordedModels {
                model: provenance.inputs.get(input_role::MODEL).cloned(),
                appended: provenance
                    .inputs
                    .get(APPENDED_MODELS_ROLE)
                    .map(|ids| {
                        ids.split(',')
                            .filter(|id| !id.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Err(error) if error.kind == TableErrorKind::Missing => Ok(RecordedModels::default()),
            Err(error) => {
                Err(error).with_context(|| format!("reading the provenance of {}", path.display()))
            }
        }
    }
}

/// Refuses `--allow-mixed-inputs` where the run compares no two models, so that it would allow
/// nothing (a setting the run does not read): a pilot is compared with the run's model (the
/// `--model`, else the one the table appended to was drawn for), and a table appended to with
/// the `--model`. `appended` is what the table appended to records, if there is one.
fn refuse_unread_allow_mixed_inputs(
    request: &MaskRequest,
    appended: Option<&RecordedModels>,
) -> Result<()> {
    if !request.allow_mixed_inputs {
        return Ok(());
    }
    let recorded = appended.and_then(|table| table.model.as_ref());
    let has_pilot = matches!(request.allocation, AllocationSource::Neyman { .. });
    let pilot_compared = has_pilot && (request.model_id.is_some() || recorded.is_some());
    let table_compared = recorded.is_some() && request.model_id.is_some();
    if pilot_compared || table_compared {
        return Ok(());
    }
    let why = match (has_pilot, appended, &request.model_id) {
        (true, None, _) => {
            "no --model and no existing table appended to, to compare its --pilot with"
        }
        (true, Some(_), _) => {
            "no --model, and the table appended to records none, to compare its --pilot with"
        }
        (false, None, _) => "no --pilot, and no existing table appended to",
        (false, Some(_), None) => {
            "no --pilot, and no --model to compare the table appended to with"
        }
        (false, Some(_), Some(_)) => "no --pilot, and the table appended to records no model",
    };
    bail!(
        "--allow-mixed-inputs is for a --pilot or an --append table of another model, and this \
         run compares no two models ({why}); leave it out"
    )
}

/// Whether a sampling error is about the pilot's values (and so is told with its file).
fn is_about_the_pilot(error: &SamplingError) -> bool {
    matches!(
        error,
        SamplingError::PilotWrongBlockCount { .. }
            | SamplingError::PilotMissingStratum { .. }
            | SamplingError::PilotTooFew { .. }
            | SamplingError::PilotBadStdDev { .. }
    )
}

/// Draws the masks of `request` over `players` and makes the mask table.
pub fn sample_mask_table(
    players: &Players,
    request: &MaskRequest,
    mut provenance: Provenance,
) -> Result<SampledMasks> {
    let num_blocks = players.num_blocks();
    // Read once: the rows, the models recorded and the hash are of the same bytes.
    let append_to = request
        .append_to
        .as_deref()
        .map(|path| {
            read_masks_hashed(path)
                .with_context(|| format!("reading the mask table {} to append to", path.display()))
                .map(|table| (path, table))
        })
        .transpose()?;
    let appended = append_to
        .as_ref()
        .map(|(path, table)| RecordedModels::of(table, path))
        .transpose()?;
    refuse_unread_allow_mixed_inputs(request, appended.as_ref())?;
    let recorded = appended.as_ref().and_then(|table| table.model.clone());
    // The model the masks were drawn for, by the id its evaluation tables record: a table
    // appended to keeps its own (the masks drawn now for another `--model` are recorded
    // among the appended models below).
    if let Some(id) = recorded.as_ref().or(request.model_id.as_ref()) {
        provenance = provenance.with_input(input_role::MODEL, id);
    }
    let mut appended_models = appended.map(|table| table.appended).unwrap_or_default();
    // The model of this run: --model's, else the one the table appended to was drawn for. A
    // table appended to keeps the model it was drawn for; masks drawn for another are another
    // game's: with --allow-mixed-inputs that model is recorded beside it.
    let mut one_model = InputsAgree::new(request.allow_mixed_inputs);
    if let Some(id) = &request.model_id {
        one_model.model(id, "--model", "")?;
    }
    if let (Some((path, _)), Some(table_model)) = (&append_to, &recorded) {
        one_model.model(
            table_model,
            format!("the --append table {}", path.display()),
            " holds masks drawn for another model",
        )?;
        if let Some(id) = request.model_id.as_ref().filter(|id| *id != table_model) {
            appended_models.insert(id.clone());
        }
    }
    let allocation = match &request.allocation {
        AllocationSource::Neyman { pilot, incomplete } => {
            let Hashed {
                table,
                sha256: pilot_sha256,
                ..
            } = read_complete_evaluations_hashed(pilot, *incomplete)
                .with_context(|| format!("reading the pilot table {}", pilot.display()))?;
            if table.num_blocks != num_blocks {
                bail!(
                    "pilot table {} is for a model of {} blocks, not {num_blocks}",
                    pilot.display(),
                    table.num_blocks
                );
            }
            // Its spreads are of another model's strata: with the same blocks, the allocation
            // is still unbiased but no longer Neyman's, and the table would say otherwise.
            one_model.model(
                &table.model_id,
                format!("pilot table {}", pilot.display()),
                " was measured on another model",
            )?;
            // A block the pilot's game fixed is a player here: its masks never removed it, so
            // its strata are another game's (its masks of k removed are not a sample of this
            // game's), and their spreads would weigh this game's strata wrongly. The pilot may
            // fix fewer blocks: its masks removing a block fixed here are left out.
            if let Some(block) = table
                .fixed_blocks
                .iter()
                .find(|block| !players.fixed_blocks().contains(block))
            {
                bail!(
                    "pilot table {} fixes block {block} (fixed_blocks {:?}), which is a player \
                     here (--fixed gives {:?}): its strata are another game's; give a pilot \
                     measured on this game's masks",
                    pilot.display(),
                    table.fixed_blocks,
                    players.fixed_blocks()
                );
            }
            let stats = pilot_from_values(
                players,
                table.rows.iter().map(|row| (&row.mask, row.utility)),
            )
            .with_context(|| format!("pilot table {}", pilot.display()))?;
            provenance = provenance.with_input(input_role::PILOT, &pilot_sha256);
            Allocation::Neyman(stats)
        }
        AllocationSource::Equal => Allocation::Equal,
        AllocationSource::Proportional => Allocation::Proportional,
    };
    let plan = SamplingPlan {
        stratified: request
            .stratified_masks
            .map(|total_masks| StratifiedDesign {
                strata: request.strata.clone(),
                total_masks,
                allocation,
            }),
        complement_pairs: request.complement_pairs,
        enumerate: request.enumerate,
        anchors: request.anchors,
        permutation_chains: request.permutation_chains,
    };

    let existing = match append_to {
        Some((path, Hashed { table, sha256, .. })) => {
            if table.num_blocks != num_blocks {
                bail!(
                    "cannot append to {}: it holds masks of {} blocks, the model has {num_blocks}",
                    path.display(),
                    table.num_blocks
                );
            }
            if table.fixed_blocks != players.fixed_blocks() {
                bail!(
                    "cannot append to {}: it fixes blocks {:?}, --fixed gives {:?}",
                    path.display(),
                    table.fixed_blocks,
                    players.fixed_blocks()
                );
            }
            provenance = provenance.with_input(input_role::APPENDED, &sha256);
            table.rows
        }
        None => Vec::new(),
    };
    if !appended_models.is_empty() {
        let ids: Vec<&str> = appended_models.iter().map(String::as_str).collect();
        provenance = provenance.with_input(APPENDED_MODELS_ROLE, &ids.join(","));
    }
    let existing_masks: Vec<Mask> = existing.iter().map(|row| row.mask.clone()).collect();
    let outcome = sample(
        players,
        &plan,
        Existing {
            masks: &existing_masks,
            max_group_id: existing.iter().filter_map(|row| row.group_id).max(),
        },
        request.seed,
    )
    .map_err(|error| match &request.allocation {
        AllocationSource::Neyman { pilot, .. } if is_about_the_pilot(&error) => {
            anyhow::Error::from(error).context(format!("pilot table {}", pilot.display()))
        }
        _ => anyhow::Error::from(error),
    })?;

    let new_rows = outcome.rows.len();
    let mut rows = existing;
    rows.extend(outcome.rows.iter().map(|row| MaskRow {
        mask: row.mask.clone(),
        design: row.design,
        group_id: row.group_id,
        position: row.position,
    }));
    Ok(SampledMasks {
        table: MaskTable {
            num_blocks,
            fixed_blocks: players.fixed_blocks().to_vec(),
            rows,
        },
        outcome,
        new_rows,
        provenance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use layerprune_tables::{write_evaluations, write_masks, EvaluationTable};

    fn request(masks: usize, append_to: Option<PathBuf>) -> MaskRequest {
        MaskRequest {
            strata: StrataSpec::Removed(vec![1, 2]),
            stratified_masks: Some(masks),
            allocation: AllocationSource::Equal,
            complement_pairs: true,
            enumerate: false,
            anchors: true,
            permutation_chains: None,
            append_to,
            seed: 3,
            model_id: None,
            allow_mixed_inputs: false,
        }
    }

    /// A complete pilot of model `model_id` over 8 blocks, whose game fixes `fixed` (the first
    /// blocks): every removal of one or two of the others, of utility `utility(a, b)` with
    /// blocks `a` and `b` removed (`a == b` for one).
    fn write_pilot(
        path: &Path,
        model_id: &str,
        fixed: &[usize],
        utility: impl Fn(usize, usize) -> f64,
    ) {
        let first = fixed.len();
        let mut table = EvaluationTable::new(8, model_id, "d");
        table.complete = true;
        table.fixed_blocks = fixed.to_vec();
        table.rows = (first..8)
            .flat_map(|a| (a + 1..8).map(move |b| (a, b)))
            .chain((first..8).map(|a| (a, a)))
            .map(|(a, b)| {
                let mask = Mask::from_removed(8, &[a, b]).unwrap();
                let nll = 2.0 + (a * b) as f64 / 10.0;
                layerprune_tables::EvaluationRow {
                    mask,
                    nll,
                    ppl: nll.exp(),
                    utility: utility(a, b),
                    tokens_scored: 10,
                    seconds: 0.1,
                    window_nlls: None,
                }
            })
            .collect();
        write_evaluations(path, &table, &provenance()).unwrap();
    }

    fn neyman(pilot: &Path) -> MaskRequest {
        let mut neyman = request(6, None);
        neyman.complement_pairs = false;
        neyman.allocation = AllocationSource::Neyman {
            pilot: pilot.to_path_buf(),
            incomplete: Incomplete::Refuse,
        };
        neyman
    }

    fn drawn(sampled: &SampledMasks) -> usize {
        sampled.outcome.strata.iter().map(|s| s.drawn).sum()
    }

    fn provenance() -> Provenance {
        Provenance::new("sample-masks", "0", vec![])
    }

    #[test]
    fn an_appended_table_keeps_its_rows_and_gets_only_new_masks() {
        let dir = tempfile::tempdir().unwrap();
        let players = Players::new(8, &[0]).unwrap();
        let first = sample_mask_table(&players, &request(6, None), provenance()).unwrap();
        assert_eq!(first.new_rows, first.table.rows.len());
        assert_eq!(first.table.fixed_blocks, vec![0]);
        assert!(first.provenance.inputs.is_empty());
        let path = dir.path().join("masks.parquet");
        write_masks(&path, &first.table, &first.provenance).unwrap();

        let mut more = request(6, Some(path.clone()));
        more.anchors = false;
        more.seed = 4;
        let second = sample_mask_table(&players, &more, provenance()).unwrap();
        assert_eq!(
            second.table.rows[..first.table.rows.len()],
            first.table.rows[..]
        );
        assert_eq!(
            second.table.rows.len(),
            first.table.rows.len() + second.new_rows
        );
        let mut masks: Vec<&Mask> = second.table.rows.iter().map(|row| &row.mask).collect();
        masks.sort();
        masks.dedup();
        assert_eq!(masks.len(), second.table.rows.len(), "no mask drawn twice");
        assert!(second.provenance.inputs.contains_key("appended"));

        // Another player set may not be appended to.
        let other = Players::new(8, &[0, 7]).unwrap();
        let message = sample_mask_table(&other, &more, provenance())
            .err()
            .unwrap()
            .to_string();
        assert!(
            message.contains("it fixes blocks [0], --fixed gives [0, 7]"),
            "{message}"
        );
    }

    #[test]
    fn a_pilot_of_another_block_count_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pilot = dir.path().join("pilot.parquet");
        let mut table = EvaluationTable::new(6, "m", "d");
        table.complete = true;
        write_evaluations(&pilot, &table, &provenance()).unwrap();
        let mut neyman = request(6, None);
        neyman.allocation = AllocationSource::Neyman {
            pilot: pilot.clone(),
            incomplete: Incomplete::Refuse,
        };
        let players = Players::new(8, &[]).unwrap();
        let message = sample_mask_table(&players, &neyman, provenance())
            .err()
            .unwrap()
            .to_string();
        assert!(
            message.contains("is for a model of 6 blocks, not 8"),
            "{message}"
        );
    }

    /// A pilot measured on another model of the same block count: its spreads are not this
    /// model's, and the table would record them as if they were.
    #[test]
    fn a_pilot_of_another_model_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pilot = dir.path().join("pilot.parquet");
        write_pilot(&pilot, "model-a", &[], |a, b| 1.0 / (1 + a * b) as f64);
        let players = Players::new(8, &[]).unwrap();
        let mut other = neyman(&pilot);
        other.model_id = Some("model-b".into());
        let message = sample_mask_table(&players, &other, provenance())
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            message,
            format!(
                "pilot table {} was measured on another model (model-a) than --model (model-b); \
                 give --allow-mixed-inputs to use them together",
                pilot.display()
            )
        );
        // Allowed, it is used (with a warning) and the table records the --model.
        other.allow_mixed_inputs = true;
        let sampled = sample_mask_table(&players, &other, provenance()).unwrap();
        assert_eq!(drawn(&sampled), 6);
        assert_eq!(sampled.provenance.inputs["model"], "model-b");
        // The pilot's own model, or no --model to compare with, takes it.
        for model_id in [Some("model-a".to_string()), None] {
            let mut same = neyman(&pilot);
            same.model_id = model_id.clone();
            let sampled = sample_mask_table(&players, &same, provenance()).unwrap();
            assert_eq!(drawn(&sampled), 6, "{model_id:?}");
            assert_eq!(sampled.provenance.inputs.get("model"), model_id.as_ref());
        }
    }

    /// An error about the pilot's values names the pilot: here a stratum's spread overflows.
    #[test]
    fn a_pilot_whose_spread_overflows_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let pilot = dir.path().join("pilot.parquet");
        write_pilot(
            &pilot,
            "m",
            &[],
            |a, b| {
                if (a, b) == (0, 1) {
                    1e200
                } else {
                    1.0
                }
            },
        );
        let error = sample_mask_table(
            &Players::new(8, &[]).unwrap(),
            &neyman(&pilot),
            provenance(),
        )
        .err()
        .unwrap();
        let message = format!("{error:#}");
        assert!(
            message.starts_with(&format!("pilot table {}: ", pilot.display()))
                && message.contains("the pilot standard deviation inf of stratum 2"),
            "{message}"
        );
    }

    /// A table appended to keeps the model it was drawn for, and takes no masks of another.
    /// With a block count only, the pilot is compared with the model the table appended to was
    /// drawn for (it was taken silently).
    #[test]
    fn a_pilot_of_another_model_than_the_appended_tables_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let players = Players::new(8, &[]).unwrap();
        let path = dir.path().join("masks.parquet");
        let mut drawn_for_a = request(4, None);
        drawn_for_a.model_id = Some("model-a".into());
        let first = sample_mask_table(&players, &drawn_for_a, provenance()).unwrap();
        write_masks(&path, &first.table, &first.provenance).unwrap();
        let pilot = dir.path().join("pilot.parquet");
        write_pilot(&pilot, "model-b", &[], |a, b| 1.0 / (1 + a * b) as f64);
        let mut more = neyman(&pilot);
        more.append_to = Some(path.clone());
        let message = format!(
            "{:#}",
            sample_mask_table(&players, &more, provenance())
                .err()
                .unwrap()
        );
        assert!(
            message.contains(&format!(
                "pilot table {} was measured on another model (model-b) than the --append \
                 table {} (model-a); give --allow-mixed-inputs",
                pilot.display(),
                path.display()
            )),
            "{message}"
        );
        more.allow_mixed_inputs = true;
        assert!(sample_mask_table(&players, &more, provenance()).is_ok());
    }

    #[test]
    fn an_appended_table_keeps_its_model() {
        let dir = tempfile::tempdir().unwrap();
        let players = Players::new(8, &[]).unwrap();
        let path = dir.path().join("masks.parquet");
        let mut drawn_for_a = request(4, None);
        drawn_for_a.model_id = Some("model-a".into());
        let first = sample_mask_table(&players, &drawn_for_a, provenance()).unwrap();
        assert_eq!(first.provenance.inputs["model"], "model-a");
        write_masks(&path, &first.table, &first.provenance).unwrap();

        // A block count only: the table's model is kept.
        let mut more = request(4, Some(path.clone()));
        more.seed = 4;
        let second = sample_mask_table(&players, &more, provenance()).unwrap();
        assert_eq!(second.provenance.inputs["model"], "model-a");
        assert!(second.provenance.inputs.contains_key("appended"));
        // The same model: kept.
        more.model_id = Some("model-a".into());
        let same = sample_mask_table(&players, &more, provenance()).unwrap();
        assert_eq!(same.provenance.inputs["model"], "model-a");
        // Another model: refused, naming both and the table.
        more.model_id = Some("model-b".into());
        let message = sample_mask_table(&players, &more, provenance())
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            message,
            format!(
                "the --append table {} holds masks drawn for another model (model-a) than \
                 --model (model-b); give --allow-mixed-inputs to use them together",
                path.display()
            )
        );
        // Allowed, the table keeps its model, and records the other beside it (it recorded
        // model-b alone, as if every mask had been drawn for it).
        more.allow_mixed_inputs = true;
        let mixed = sample_mask_table(&players, &more, provenance()).unwrap();
        assert_eq!(mixed.provenance.inputs["model"], "model-a");
        assert_eq!(mixed.provenance.inputs[APPENDED_MODELS_ROLE], "model-b");
        assert!(mixed.new_rows > 0);
        // Later appends keep both: another model joins the list, a block count carries it.
        write_masks(&path, &mixed.table, &mixed.provenance).unwrap();
        more.model_id = Some("model-c".into());
        more.seed = 5;
        let third = sample_mask_table(&players, &more, provenance()).unwrap();
        assert_eq!(third.provenance.inputs["model"], "model-a");
        assert_eq!(
            third.provenance.inputs[APPENDED_MODELS_ROLE],
            "model-b,model-c"
        );
        write_masks(&path, &third.table, &third.provenance).unwrap();
        let mut counted_only = request(4, Some(path.clone()));
        counted_only.seed = 6;
        let fourth = sample_mask_table(&players, &counted_only, provenance()).unwrap();
        assert_eq!(fourth.provenance.inputs["model"], "model-a");
        assert_eq!(
            fourth.provenance.inputs[APPENDED_MODELS_ROLE],
            "model-b,model-c"
        );

        // A table drawn for a block count records no model; the --model appending to it is
        // recorded.
        let plain = dir.path().join("plain.parquet");
        let counted = sample_mask_table(&players, &request(4, None), provenance()).unwrap();
        write_masks(&plain, &counted.table, &counted.provenance).unwrap();
        let mut onto_plain = request(4, Some(plain));
        onto_plain.model_id = Some("model-b".into());
        let appended = sample_mask_table(&players, &onto_plain, provenance()).unwrap();
        assert_eq!(appended.provenance.inputs["model"], "model-b");
        assert!(!appended
            .provenance
            .inputs
            .contains_key(APPENDED_MODELS_ROLE));
    }

    /// `allow_mixed_inputs` where the run compares no two models would allow nothing: refused
    /// as a setting the run does not read (it was taken silently), saying why.
    #[test]
    fn allowing_mixed_inputs_where_no_two_models_are_compared_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let players = Players::new(8, &[]).unwrap();
        let pilot = dir.path().join("pilot.parquet");
        write_pilot(&pilot, "model-a", &[], |a, b| 1.0 / (1 + a * b) as f64);
        let plain = dir.path().join("plain.parquet");
        let counted = sample_mask_table(&players, &request(4, None), provenance()).unwrap();
        write_masks(&plain, &counted.table, &counted.provenance).unwrap();
        let drawn_for_a = dir.path().join("a.parquet");
        let mut for_a = request(4, None);
        for_a.model_id = Some("model-a".into());
        let first = sample_mask_table(&players, &for_a, provenance()).unwrap();
        write_masks(&drawn_for_a, &first.table, &first.provenance).unwrap();

        let refused = |mut request: MaskRequest, says: &str| {
            request.allow_mixed_inputs = true;
            let message = format!(
                "{:#}",
                sample_mask_table(&players, &request, provenance())
                    .err()
                    .unwrap()
            );
            assert!(
                message.starts_with(
                    "--allow-mixed-inputs is for a --pilot or an --append table of another \
                     model, and this run compares no two models ("
                ) && message.contains(says)
                    && message.ends_with("; leave it out"),
                "{message}"
            );
        };
        // A pilot and a block count only, nothing appended to.
        refused(
            neyman(&pilot),
            "(no --model and no existing table appended to, to compare its --pilot with)",
        );
        // A table that records no model, appended to for a --model.
        let mut onto_plain = request(4, Some(plain.clone()));
        onto_plain.model_id = Some("model-b".into());
        refused(
            onto_plain,
            "(no --pilot, and the table appended to records no model)",
        );
        // A table that records one, appended to for a block count only.
        refused(
            request(4, Some(drawn_for_a.clone())),
            "(no --pilot, and no --model to compare the table appended to with)",
        );
        // No pilot, nothing appended to (an --append whose --out does not exist yet).
        let mut nothing = request(4, None);
        nothing.model_id = Some("model-b".into());
        refused(nothing, "(no --pilot, and no existing table appended to)");

        // Where two models are compared, it is read, whether they differ or not.
        let mut read = neyman(&pilot);
        read.allow_mixed_inputs = true;
        read.model_id = Some("model-a".into());
        assert!(sample_mask_table(&players, &read, provenance()).is_ok());
        read.model_id = None;
        read.append_to = Some(drawn_for_a.clone());
        assert!(sample_mask_table(&players, &read, provenance()).is_ok());
        let mut onto_a = request(4, Some(drawn_for_a));
        onto_a.allow_mixed_inputs = true;
        onto_a.model_id = Some("model-a".into());
        assert!(sample_mask_table(&players, &onto_a, provenance()).is_ok());
    }

    /// A pilot whose game fixed a block that is a player here never removed it: its strata are
    /// another game's (their spreads were used as this game's). One fixing fewer blocks is
    /// fine: its masks removing a block fixed here are left out.
    #[test]
    fn a_pilot_of_a_game_that_fixed_one_of_the_players_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pilot = dir.path().join("pilot.parquet");
        write_pilot(&pilot, "m", &[0], |a, b| {
            let nll = 2.0 + (a * b) as f64 / 10.0;
            2f64.exp() / nll.exp()
        });
        let neyman = neyman(&pilot);
        let message = sample_mask_table(&Players::new(8, &[]).unwrap(), &neyman, provenance())
            .err()
            .unwrap()
            .to_string();
        assert!(
            message.contains("fixes block 0 (fixed_blocks [0]), which is a player here"),
            "{message}"
        );
        // The same game, or one fixing more blocks, takes it.
        for fixed in [vec![0], vec![0, 7]] {
            let players = Players::new(8, &fixed).unwrap();
            let sampled = sample_mask_table(&players, &neyman, provenance()).unwrap();
            assert_eq!(drawn(&sampled), 6, "{fixed:?}");
        }
    }
}
