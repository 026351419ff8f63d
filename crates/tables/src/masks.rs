//! The mask table: which coalitions to evaluate, and the design that chose each one.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, ListArray, StringArray, UInt32Array};
use arrow_schema::{DataType, Field};
use layerprune_core::{Design, Mask};

use crate::io::{
    bool_list_column, list_of, read_table, read_table_hashed, to_u32, write_table, Chunk, Hashed,
    RawTable, TableKind,
};
use crate::{Provenance, TableError};

/// One mask to evaluate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskRow {
    pub mask: Mask,
    /// How the sampler chose it (written as `stratum`, `anchor`, `complement`, `permutation` or
    /// `enumeration`; any other name is refused on reading).
    pub design: Design,
    /// Rows sharing a group form a unit: an antithetic pair or a permutation chain.
    pub group_id: Option<i64>,
    /// Index within a chain (0 = first mask of the chain).
    pub position: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskTable {
    pub num_blocks: usize,
    /// Blocks the sampler never removes (kept in every mask it draws).
    pub fixed_blocks: Vec<usize>,
    pub rows: Vec<MaskRow>,
}

/// The three columns every table of masks starts with.
pub(crate) fn mask_fields() -> Vec<Field> {
    vec![
        Field::new("mask_id", DataType::Utf8, false),
        Field::new("kept", list_of(DataType::Boolean), false),
        Field::new("num_removed", DataType::UInt32, false),
    ]
}

/// Columns for [`mask_fields`], after checking each mask has `num_blocks` entries.
pub(crate) fn mask_columns<'m>(
    path: &Path,
    num_blocks: usize,
    masks: impl Iterator<Item = &'m Mask> + Clone,
) -> Result<Vec<ArrayRef>, TableError> {
    let mut ids = Vec::new();
    let mut num_removed = Vec::new();
    for (row, mask) in masks.clone().enumerate() {
        mask.check_len(num_blocks)
            .map_err(|e| TableError::bad(path, format!("row {row}: mask {mask}: {e}")))?;
        ids.push(mask.id());
        num_removed.push(to_u32(path, "num_removed", mask.num_removed())?);
    }
    Ok(vec![
        Arc::new(StringArray::from(ids)),
        bool_list_column(masks.map(Mask::kept)),
        Arc::new(UInt32Array::from(num_removed)),
    ])
}

/// Reads the mask columns of one chunk: each mask checked for length and against its
/// `mask_id` and `num_removed`, so a file edited by hand cannot disagree with itself.
pub(crate) fn read_mask_column(
    chunk: &Chunk<'_>,
    num_blocks: usize,
) -> Result<Vec<Mask>, TableError> {
    let ids = chunk.required::<StringArray>("mask_id")?;
    let kept: &ListArray = chunk.required_list("kept")?;
    let num_removed = chunk.required::<UInt32Array>("num_removed")?;
    let mut masks = Vec::with_capacity(chunk.num_rows());
    for row in 0..chunk.num_rows() {
        let mask = Mask::from_kept(chunk.bools(kept, "kept", row)?);
        if mask.num_blocks() != num_blocks {
            return Err(chunk.row_error(
                row,
                format!(
                    "mask has {} entries but the table has num_blocks = {num_blocks}",
                    mask.num_blocks()
                ),
            ));
        }
        if mask.id() != ids.value(row) {
            return Err(chunk.row_error(
                row,
                format!(
                    "mask_id {:?} does not match kept ({})",
                    ids.value(row),
                    mask
                ),
            ));
        }
        if mask.num_removed() != num_removed.value(row) as usize {
            return Err(chunk.row_error(
                row,
                format!(
                    "num_removed {} does not match kept ({})",
                    num_removed.value(row),
                    mask
                ),
            ));
        }
        masks.push(mask);
    }
    Ok(masks)
}

fn fields() -> Vec<Field> {
    let mut fields = mask_fields();
    fields.extend([
        Field::new("design", DataType::Utf8, false),
        Field::new("group_id", DataType::Int64, true),
        Field::new("position", DataType::UInt32, true),
    ]);
    fields
}

pub(crate) fn check_fixed_blocks(
    path: &Path,
    num_blocks: usize,
    fixed: &[usize],
) -> Result<(), TableError> {
    match fixed.iter().find(|&&block| block >= num_blocks) {
        Some(block) => Err(TableError::bad(
            path,
            format!("fixed block {block} is out of range for {num_blocks} blocks"),
        )),
        None => Ok(()),
    }
}

/// Refuses a row whose mask removes a block the table says is fixed (never removed): such a
/// table contradicts itself, and the stages reading it would disagree on what it means (one
/// drops those rows, another fits on them).
pub(crate) fn check_rows_keep_fixed<'a>(
    path: &Path,
    fixed: &[usize],
    masks: impl IntoIterator<Item = &'a layerprune_core::Mask>,
) -> Result<(), TableError> {
    for (row, mask) in masks.into_iter().enumerate() {
        if let Some(block) = fixed.iter().find(|&&block| !mask.is_kept(block)) {
            return Err(TableError::bad(
                path,
                format!(
                    "row {row}: mask {mask} removes block {block}, which the table's \
                     fixed_blocks say is never removed"
                ),
            ));
        }
    }
    Ok(())
}

/// A set of blocks as the tables hold it: ascending, each once.
fn ascending_set(blocks: &[usize]) -> Vec<usize> {
    let mut set = blocks.to_vec();
    set.sort_unstable();
    set.dedup();
    set
}

/// The `fixed_blocks` metadata value: a JSON list, ascending, each block once.
pub(crate) fn encode_fixed_blocks(path: &Path, fixed: &[usize]) -> Result<String, TableError> {
    serde_json::to_string(&ascending_set(fixed))
        .map_err(|e| TableError::bad(path, format!("cannot encode fixed_blocks: {e}")))
}

/// The fixed blocks recorded in a table's metadata, ascending and each once whatever order the
/// writer listed them in (a set: the stages compare it with the player set's, which is sorted,
/// and `[29, 0]` from another tool is the same game as `[0, 29]`); tables written before they
/// were recorded (format 1 files without the key) fixed none.
pub(crate) fn read_fixed_blocks(
    raw: &crate::io::RawTable<'_>,
    path: &Path,
    num_blocks: usize,
) -> Result<Vec<usize>, TableError> {
    let fixed: Vec<usize> = match raw.meta_optional("fixed_blocks") {
        Some(_) => raw.meta_json("fixed_blocks")?,
        None => Vec::new(),
    };
    check_fixed_blocks(path, num_blocks, &fixed)?;
    Ok(ascending_set(&fixed))
}

pub fn write_masks(
    path: &Path,
    table: &MaskTable,
    provenance: &Provenance,
) -> Result<(), TableError> {
    check_fixed_blocks(path, table.num_blocks, &table.fixed_blocks)?;
    // As the reader refuses it: a table saved so could never be read again.
    check_rows_keep_fixed(
        path,
        &table.fixed_blocks,
        table.rows.iter().map(|r| &r.mask),
    )?;
    let mut columns = mask_columns(path, table.num_blocks, table.rows.iter().map(|r| &r.mask))?;
    columns.push(Arc::new(StringArray::from_iter_values(
        table.rows.iter().map(|r| r.design.as_str()),
    )));
    columns.push(Arc::new(Int64Array::from_iter(
        table.rows.iter().map(|r| r.group_id),
    )));
    columns.push(Arc::new(UInt32Array::from_iter(
        table.rows.iter().map(|r| r.position),
    )));
    let fixed = encode_fixed_blocks(path, &table.fixed_blocks)?;
    let table_fields = vec![
        ("num_blocks", table.num_blocks.to_string()),
        ("fixed_blocks", fixed),
    ];
    write_table(
        path,
        TableKind::Masks,
        provenance,
        table_fields,
        fields(),
        columns,
    )
}

pub fn read_masks(path: &Path) -> Result<MaskTable, TableError> {
    masks_of(read_table(path, TableKind::Masks, &fields())?)
}

/// [`read_masks`], with the SHA-256 of the bytes parsed ([`Hashed`]).
pub fn read_masks_hashed(path: &Path) -> Result<Hashed<MaskTable>, TableError> {
    let (raw, sha256) = read_table_hashed(path, TableKind::Masks, &fields())?;
    Hashed::make(raw, sha256, masks_of)
}

/// The mask table of a file read whole.
fn masks_of(raw: RawTable<'_>) -> Result<MaskTable, TableError> {
    let path = raw.path;
    let num_blocks: usize = raw.meta_num_blocks()?;
    // Required in a mask table (the sampler always records its player set).
    raw.meta("fixed_blocks")?;
    let fixed_blocks = read_fixed_blocks(&raw, path, num_blocks)?;
    let mut rows = Vec::with_capacity(raw.num_rows());
    for chunk in raw.chunks() {
        let masks = read_mask_column(&chunk, num_blocks)?;
        let design = chunk.required::<StringArray>("design")?;
        let group_id = chunk.nullable::<Int64Array>("group_id")?;
        let position = chunk.nullable::<UInt32Array>("position")?;
        for (row, mask) in masks.into_iter().enumerate() {
            let name = design.value(row);
            let design = name.parse::<Design>().map_err(|_| {
                TableError::bad(
                    path,
                    format!(
                        "row {}: design {name:?} is not one of stratum, complement, permutation, \
                         anchor, enumeration",
                        rows.len()
                    ),
                )
            })?;
            rows.push(MaskRow {
                mask,
                design,
                group_id: Chunk::opt(group_id, row, Int64Array::value),
                position: Chunk::opt(position, row, UInt32Array::value),
            });
        }
    }
    check_rows_keep_fixed(path, &fixed_blocks, rows.iter().map(|row| &row.mask))?;
    Ok(MaskTable {
        num_blocks,
        fixed_blocks,
        rows,
    })
}
