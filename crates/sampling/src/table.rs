//! The `sample-masks` run as files: the Neyman pilot read from an evaluation table, the mask
//! table appended to read and checked (same model size, same fixed blocks; its masks are not
//! drawn again), the masks drawn ([`sample`]) and the mask table made. The caller writes it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use layerprune_core::{sha256_hex, Mask, Players};
use layerprune_tables::input_role;
use layerprune_tables::{
    read_complete_evaluations, read_masks, Incomplete, MaskRow, MaskTable, Provenance,
};

use crate::{
    pilot_from_values, sample, Allocation, Existing, SampleOutcome, SamplingPlan, StrataSpec,
    StratifiedDesign,
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

/// Id of an input file for provenance: the sha256 of its bytes.
fn file_id(path: &Path) -> Result<String> {
    let bytes =
        layerprune_core::read_input(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(sha256_hex(&bytes))
}

/// Draws the masks of `request` over `players` and makes the mask table.
pub fn sample_mask_table(
    players: &Players,
    request: &MaskRequest,
    mut provenance: Provenance,
) -> Result<SampledMasks> {
    let num_blocks = players.num_blocks();
    let allocation = match &request.allocation {
        AllocationSource::Neyman { pilot, incomplete } => {
            let table = read_complete_evaluations(pilot, *incomplete)
                .with_context(|| format!("reading the pilot table {}", pilot.display()))?;
            if table.num_blocks != num_blocks {
                bail!(
                    "pilot table {} is for a model of {} blocks, not {num_blocks}",
                    pilot.display(),
                    table.num_blocks
                );
            }
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
            provenance = provenance.with_input(input_role::PILOT, &file_id(pilot)?);
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

    let existing = match &request.append_to {
        Some(path) => {
            let table = read_masks(path).with_context(|| {
                format!("reading the mask table {} to append to", path.display())
            })?;
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
            provenance = provenance.with_input(input_role::APPENDED, &file_id(path)?);
            table.rows
        }
        None => Vec::new(),
    };
    let existing_masks: Vec<Mask> = existing.iter().map(|row| row.mask.clone()).collect();
    let outcome = sample(
        players,
        &plan,
        Existing {
            masks: &existing_masks,
            max_group_id: existing.iter().filter_map(|row| row.group_id).max(),
        },
        request.seed,
    )?;

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
        }
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
    fn a_pilot_of_another_model_is_refused() {
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

    /// A pilot whose game fixed a block that is a player here never removed it: its strata are
    /// another game's (their spreads were used as this game's). One fixing fewer blocks is
    /// fine: its masks removing a block fixed here are left out.
    #[test]
    fn a_pilot_of_a_game_that_fixed_one_of_the_players_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pilot = dir.path().join("pilot.parquet");
        let mut table = EvaluationTable::new(8, "m", "d");
        table.complete = true;
        table.fixed_blocks = vec![0];
        table.rows = (1..8)
            .flat_map(|a| (a + 1..8).map(move |b| (a, b)))
            .chain((1..8).map(|a| (a, a)))
            .map(|(a, b)| {
                let mask = Mask::from_removed(8, &[a, b]).unwrap();
                let nll = 2.0 + (a * b) as f64 / 10.0;
                layerprune_tables::EvaluationRow {
                    mask,
                    nll,
                    ppl: nll.exp(),
                    utility: 2f64.exp() / nll.exp(),
                    tokens_scored: 10,
                    seconds: 0.1,
                    window_nlls: None,
                }
            })
            .collect();
        write_evaluations(&pilot, &table, &provenance()).unwrap();
        let mut neyman = request(6, None);
        neyman.complement_pairs = false;
        neyman.allocation = AllocationSource::Neyman {
            pilot: pilot.clone(),
            incomplete: Incomplete::Refuse,
        };
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
            let drawn: usize = sampled.outcome.strata.iter().map(|s| s.drawn).sum();
            assert_eq!(drawn, 6, "{fixed:?}");
        }
    }
}
