//! Which masks a run evaluates, and the order of its rows.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use layerprune_core::Mask;
use layerprune_tables::{read_masks, EvaluationRow, MaskTable};

/// The masks of a run: a mask table's (`--masks`), then masks given one by one (`--mask`).
/// Neither: the full model alone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MaskSource {
    pub table: Option<PathBuf>,
    pub inline: Vec<Mask>,
}

/// A run's masks, and the blocks its mask table fixed (never removed; none without a table),
/// which the evaluation table records.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MaskList {
    pub masks: Vec<Mask>,
    pub fixed_blocks: Vec<usize>,
}

/// The masks of `source` for a model of `num_blocks` blocks (in `model_dir`, named in errors):
/// the table's, then the inline ones; a mask listed twice is evaluated once, and the first
/// listing fixes its row position.
pub fn load_masks(source: &MaskSource, model_dir: &Path, num_blocks: usize) -> Result<MaskList> {
    source.read()?.for_model(model_dir, num_blocks)
}

/// A run's masks as read, not yet checked against a model: [`MaskSource::read`].
#[derive(Clone, Debug, PartialEq)]
pub struct ReadMasks {
    /// The mask table's file and contents.
    table: Option<(PathBuf, MaskTable)>,
    inline: Vec<Mask>,
}

impl MaskSource {
    /// Reads the mask table, refusing a file that is not one: what a run reads before it opens
    /// the model ([`ReadMasks::for_model`] then checks the masks against the model's manifest).
    pub fn read(&self) -> Result<ReadMasks> {
        let table = match &self.table {
            Some(path) => Some((path.clone(), read_masks(path)?)),
            None => None,
        };
        Ok(ReadMasks {
            table,
            inline: self.inline.clone(),
        })
    }
}

impl ReadMasks {
    /// The masks for a model of `num_blocks` blocks (in `model_dir`, named in errors): the
    /// table's, then the inline ones; a mask listed twice is evaluated once, and the first
    /// listing fixes its row position.
    pub fn for_model(self, model_dir: &Path, num_blocks: usize) -> Result<MaskList> {
        let mut masks = Vec::new();
        let mut fixed_blocks = Vec::new();
        let table_path = self.table.as_ref().map(|(path, _)| path.clone());
        if let Some((path, table)) = self.table {
            if table.num_blocks != num_blocks {
                bail!(
                    "{}: masks are for a model of {} blocks, but {} has {num_blocks}",
                    path.display(),
                    table.num_blocks,
                    model_dir.display()
                );
            }
            if table.rows.is_empty() && self.inline.is_empty() {
                // More likely a sampling run that wrote nothing than a request for the full
                // model.
                tracing::warn!(
                    "{}: the mask table holds no masks; only the full model is evaluated",
                    path.display()
                );
            }
            fixed_blocks = table.fixed_blocks;
            masks.extend(table.rows.into_iter().map(|row| row.mask));
        }
        for mask in &self.inline {
            mask.check_len(num_blocks)
                .with_context(|| format!("--mask {mask} for {}", model_dir.display()))?;
            // The table records its fixed blocks as never removed: a row removing one would
            // make it contradict itself (and the players of every later stage).
            if let Some(&block) = fixed_blocks.iter().find(|&&b| !mask.is_kept(b)) {
                bail!(
                    "--mask {mask} removes block {block}, which the mask table {} fixes (its \
                     fixed_blocks {fixed_blocks:?}); evaluate such masks into another --out",
                    table_path.as_deref().unwrap_or(Path::new("")).display()
                );
            }
            masks.push(mask.clone());
        }
        if masks.is_empty() {
            masks.push(Mask::full(num_blocks));
        }
        let mut seen = HashSet::new();
        masks.retain(|mask| seen.insert(mask.clone()));
        Ok(MaskList {
            masks,
            fixed_blocks,
        })
    }
}

/// Rows in the order of `masks` (rows of masks not listed go last, in their order), so that
/// a resumed run writes the same table as an uninterrupted one. A mask listed twice (the full
/// and empty masks of permutation chains) takes its first place, as a run evaluates it there.
pub fn ordered_rows(rows: &[EvaluationRow], masks: &[Mask]) -> Vec<EvaluationRow> {
    let mut position: HashMap<&Mask, usize> = HashMap::with_capacity(masks.len());
    for (i, mask) in masks.iter().enumerate() {
        position.entry(mask).or_insert(i);
    }
    let mut sorted: Vec<(usize, usize, &EvaluationRow)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (position.get(&r.mask).copied().unwrap_or(usize::MAX), i, r))
        .collect();
    sorted.sort_by_key(|&(p, i, _)| (p, i));
    sorted.into_iter().map(|(_, _, r)| r.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mask listed twice (permutation chains repeat the full and empty masks) takes its
    /// first place: `evaluate --merge` wrote such rows at their last place, unlike a run.
    #[test]
    fn rows_follow_the_first_place_of_each_mask() {
        let rows = layerprune_tests::evaluation_table(
            3,
            &[("000", 9.0), ("111", 1.0), ("101", 2.0), ("011", 3.0)],
        )
        .rows;
        let masks: Vec<Mask> = ["111", "101", "000", "011", "111", "000"]
            .iter()
            .map(|id| id.parse().unwrap())
            .collect();
        let order: Vec<String> = ordered_rows(&rows, &masks)
            .iter()
            .map(|row| row.mask.to_string())
            .collect();
        assert_eq!(order, ["111", "101", "000", "011"]);
    }
}
