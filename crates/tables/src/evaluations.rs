//! The evaluation table: the measured value of each evaluated mask, and how a long evaluation
//! run checkpoints and resumes through it.
//!
//! Resume rule: an evaluation run writes its whole output file atomically every so often with
//! `complete = false` (a checkpoint) and once more at the end with `complete = true`. A run
//! started on an existing output reads it with [`resume_evaluations`], which checks the file
//! was made for the same model, dataset and number of blocks, keeps its rows, and evaluates
//! only the masks [`EvaluationTable::pending`] returns. Because every write replaces the whole
//! file atomically, a crash loses at most the rows since the last checkpoint and never leaves a
//! torn file. A mask id appears at most once in a table; a file with duplicates is refused.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use arrow_array::types::Float64Type;
use arrow_array::{Array, ArrayRef, Float64Array, ListArray, UInt64Array};
use arrow_schema::{DataType, Field};
use layerprune_core::{Mask, MaskError, RecordedGame};

use crate::io::{
    list_column_opt, list_of, read_table, read_table_hashed, write_table, Hashed, RawTable,
    TableKind,
};
use crate::masks::{
    check_fixed_blocks, encode_fixed_blocks, mask_columns, mask_fields, read_fixed_blocks,
    read_mask_column,
};
use crate::{Provenance, TableError, TableErrorKind};

/// The measured quality of the model with only `mask`'s blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct EvaluationRow {
    pub mask: Mask,
    /// Mean negative log-likelihood per scored token, in nats.
    pub nll: f64,
    /// Perplexity, `exp(nll)`.
    pub ppl: f64,
    /// PPL(full model) / PPL(mask): in (0, 1] when the mask is worse than the full model.
    pub utility: f64,
    /// Number of tokens whose NLL was averaged.
    pub tokens_scored: u64,
    /// Wall-clock seconds spent evaluating this mask.
    pub seconds: f64,
    /// Mean NLL per scored token of each window, in the token table's order (what a paired
    /// comparison of two masks over the windows needs); `None` where the writer did not keep
    /// them (task runs, files written before the column was added).
    pub window_nlls: Option<Vec<f64>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EvaluationTable {
    pub num_blocks: usize,
    /// Id of the model evaluated (sha256 of its manifest.json).
    pub model_id: String,
    /// Id of the token table it was evaluated on.
    pub dataset_id: String,
    /// Blocks that were not players of the game (always kept), copied from the mask table:
    /// later stages read the player set here instead of guessing it or asking again.
    pub fixed_blocks: Vec<usize>,
    /// Mean NLL of the full model, the reference for `utility`.
    pub full_model_nll: Option<f64>,
    /// False while the run that writes this table is still going (a checkpoint).
    pub complete: bool,
    /// The device the rows were measured on, with the settings that change its arithmetic
    /// (`cpu`; `cuda, tf32 on`): a CPU's and a GPU's NLLs differ in the last digits, enough to
    /// change a close choice, so a run resumes (and a merge joins) only rows measured as it
    /// measures. None: not recorded (tables written before 2026-12-05), taken as any.
    pub evaluated_on: Option<String>,
    pub rows: Vec<EvaluationRow>,
    /// Masks measured on some windows only (a race dropped them), which have no row: kept so a
    /// later run through the same cache runs only the windows they lack. Empty but for caches
    /// (`evaluation::CachedLlm`).
    pub partial_windows: Vec<PartialWindows>,
}

/// A mask measured on some of the token table's windows only.
#[derive(Clone, Debug, PartialEq)]
pub struct PartialWindows {
    pub mask: Mask,
    /// Each window's NLL summed over its scored tokens (its mean NLL × the tokens it scores),
    /// `None` where not measured: sums, so a mask completed later gets exactly the row it
    /// would have had measured in one go.
    pub window_nll_sums: Vec<Option<f64>>,
    /// Seconds spent on the windows measured.
    pub seconds: f64,
}

/// Which value of an evaluation table's rows is the game's value: the project's one
/// [`GameValue`] (utility = the stored `utility` column, which a task run fills with the
/// accuracy ratio; neg-nll = −`nll`; nll-increase = −(`nll` − the full model's)).
pub use layerprune_core::GameValue;

/// Why rows could not be appended to an evaluation table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppendError {
    #[error("mask {mask}: {source}")]
    WrongLength { mask: Mask, source: MaskError },
    #[error("mask {0} is already in the table")]
    Duplicate(Mask),
}

/// Shown as the path of errors about a table that is not (yet) a file.
const IN_MEMORY: &str = "<evaluation table in memory>";

impl EvaluationTable {
    /// An empty, incomplete table.
    pub fn new(num_blocks: usize, model_id: &str, dataset_id: &str) -> Self {
        EvaluationTable {
            num_blocks,
            model_id: model_id.to_string(),
            dataset_id: dataset_id.to_string(),
            fixed_blocks: Vec::new(),
            full_model_nll: None,
            complete: false,
            evaluated_on: None,
            rows: Vec::new(),
            partial_windows: Vec::new(),
        }
    }

    /// Ids of the masks already evaluated.
    pub fn done_mask_ids(&self) -> HashSet<String> {
        self.rows.iter().map(|row| row.mask.id()).collect()
    }

    /// The masks of `wanted` not yet in the table, each once, in the order given: what a
    /// resumed run still has to evaluate.
    pub fn pending(&self, wanted: &[Mask]) -> Vec<Mask> {
        let mut seen: HashSet<&Mask> = self.rows.iter().map(|row| &row.mask).collect();
        wanted
            .iter()
            .filter(|mask| seen.insert(mask))
            .cloned()
            .collect()
    }

    /// Appends rows; none is added unless all have `num_blocks` entries and none repeats a
    /// mask already present (or another of the new rows).
    pub fn append(
        &mut self,
        rows: impl IntoIterator<Item = EvaluationRow>,
    ) -> Result<(), AppendError> {
        let rows: Vec<EvaluationRow> = rows.into_iter().collect();
        let mut seen: HashSet<&Mask> = self.rows.iter().map(|row| &row.mask).collect();
        for row in &rows {
            row.mask
                .check_len(self.num_blocks)
                .map_err(|source| AppendError::WrongLength {
                    mask: row.mask.clone(),
                    source,
                })?;
            if !seen.insert(&row.mask) {
                return Err(AppendError::Duplicate(row.mask.clone()));
            }
        }
        self.rows.extend(rows);
        Ok(())
    }

    /// The full model's NLL: `full_model_nll`, else the full mask's row.
    pub fn reference_nll(&self) -> Option<f64> {
        self.full_model_nll
            .or_else(|| self.full_model_row().map(|row| row.nll))
    }

    /// Each row's value under `value`, in row order. Fails when that value needs the
    /// full model's NLL and the table has neither `full_model_nll` nor a row for the full mask.
    pub fn values(&self, value: GameValue) -> Result<Vec<f64>, TableError> {
        let reference = match value {
            // Utility is the stored column; −nll needs no reference.
            GameValue::Utility | GameValue::NegNll => 0.0,
            GameValue::NllIncrease => self.reference_nll().ok_or_else(|| {
                TableError::bad(
                    Path::new(IN_MEMORY),
                    format!(
                        "the value {} needs the full model's NLL, but the table has neither \
                         full_model_nll nor a row for the full mask",
                        value.name()
                    ),
                )
            })?,
        };
        Ok(self
            .rows
            .iter()
            .map(|row| match value {
                // The stored column: a task run stores its accuracy ratio there.
                GameValue::Utility => row.utility,
                other => other.value(row.nll, reference),
            })
            .collect())
    }

    /// The rows as a game valued by `value`. Rows whose value is NaN or infinite (a collapsed
    /// model) are left out, as in the method, so asking for them is an error, not a guess.
    pub fn to_game(&self, value: GameValue) -> Result<RecordedGame, TableError> {
        let path = Path::new(IN_MEMORY);
        check_no_duplicates(path, &self.rows)?;
        let values = self.values(value)?;
        let rows = self
            .rows
            .iter()
            .zip(values)
            .map(|(row, v)| (row.mask.clone(), v))
            .filter(|(_, v)| v.is_finite());
        RecordedGame::new(self.num_blocks, rows).map_err(|e| TableError::bad(path, e.to_string()))
    }

    /// The rows as the LLM's own game, window by window: value −NLL, and on each window −that
    /// window's NLL (what a raced method measures first), so every selection method replays
    /// on it as on the model. Every row must have finite window NLLs.
    pub fn to_game_with_windows(&self) -> Result<RecordedGame, TableError> {
        let path = Path::new(IN_MEMORY);
        check_no_duplicates(path, &self.rows)?;
        let rows = self
            .rows
            .iter()
            .map(|row| {
                let windows = row
                    .window_nlls
                    .as_ref()
                    .filter(|w| row.nll.is_finite() && w.iter().all(|x| x.is_finite()))
                    .ok_or_else(|| {
                        TableError::bad(
                            path,
                            format!("mask {} has no finite NLL on every window", row.mask),
                        )
                    })?;
                Ok((
                    row.mask.clone(),
                    -row.nll,
                    windows.iter().map(|x| -x).collect(),
                ))
            })
            .collect::<Result<Vec<_>, TableError>>()?;
        RecordedGame::with_windows(self.num_blocks, rows)
            .map_err(|e| TableError::bad(path, e.to_string()))
    }

    /// The value of the full mask, if it was evaluated.
    pub fn full_model_row(&self) -> Option<&EvaluationRow> {
        let full = Mask::full(self.num_blocks);
        self.rows.iter().find(|row| row.mask == full)
    }
}

fn check_no_duplicates(path: &Path, rows: &[EvaluationRow]) -> Result<(), TableError> {
    let mut seen = HashSet::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        if !seen.insert(&row.mask) {
            return Err(TableError::bad(
                path,
                format!("row {index}: mask_id {} appears more than once", row.mask),
            ));
        }
    }
    Ok(())
}

/// Relative tolerance of `ppl` against `exp(nll)`.
const PPL_TOLERANCE: f64 = 1e-9;

/// What every evaluation row promises beyond its types (docs/formats.md, "evaluations"):
/// `nll` is a number or +inf (a collapsed model), never NaN or -inf; `ppl` is `exp(nll)`
/// within 1e-9 relative; `tokens_scored` is at least 1; `utility` is not negative (NaN or +inf record a collapsed model);
/// `seconds` is finite and not negative; a present `window_nll` list is not empty, as long as
/// every other row's, and holds numbers ≥ 0 or +inf. A present `full_model_nll` is finite. Checked on
/// writing and on reading, so a bad table is refused at its source, naming row and column.
fn check_values(
    path: &Path,
    full_model_nll: Option<f64>,
    rows: &[EvaluationRow],
) -> Result<(), TableError> {
    if let Some(nll) = full_model_nll.filter(|nll| !nll.is_finite()) {
        return Err(TableError::bad(
            path,
            format!("metadata entry layerprune.full_model_nll = {nll}: must be a finite number"),
        ));
    }
    // Every row's windows are the same token table's.
    let mut window_count: Option<usize> = None;
    for (index, row) in rows.iter().enumerate() {
        let bad = |column: &str, message: String| {
            Err(TableError::bad(
                path,
                format!(
                    "row {index}, column {column:?}: {message} (mask {})",
                    row.mask
                ),
            ))
        };
        if row.nll.is_nan() || row.nll == f64::NEG_INFINITY {
            return bad(
                "nll",
                format!(
                    "{} is not a mean NLL (a number, or +inf for a collapsed model)",
                    row.nll
                ),
            );
        }
        let expected = row.nll.exp();
        let agrees = if expected.is_finite() {
            (row.ppl - expected).abs() <= PPL_TOLERANCE * expected
        } else {
            row.ppl == expected
        };
        if !agrees {
            return bad(
                "ppl",
                format!(
                    "{:.6e} is not exp(nll) = exp({}) = {expected:.6e} (relative tolerance \
                     {PPL_TOLERANCE:e})",
                    row.ppl, row.nll
                ),
            );
        }
        if row.tokens_scored == 0 {
            return bad(
                "tokens_scored",
                "0: a mean NLL over no tokens (every window scores at least one)".into(),
            );
        }
        if row.utility < 0.0 {
            return bad(
                "utility",
                format!(
                    "{} is negative (a ratio of perplexities or accuracies)",
                    row.utility
                ),
            );
        }
        if !(row.seconds.is_finite() && row.seconds >= 0.0) {
            return bad(
                "seconds",
                format!("{} is not a finite, non-negative duration", row.seconds),
            );
        }
        if let Some(windows) = &row.window_nlls {
            if windows.is_empty() {
                return bad(
                    WINDOW_NLL,
                    "0 windows: an empty list (null when unknown)".into(),
                );
            }
            let length = *window_count.get_or_insert(windows.len());
            if windows.len() != length {
                return bad(
                    WINDOW_NLL,
                    format!(
                        "{} windows, where an earlier row has {length} (every mask of a table is \
                         judged on the same windows)",
                        windows.len()
                    ),
                );
            }
            if let Some(value) = windows.iter().find(|v| v.is_nan() || **v < 0.0) {
                return bad(
                    WINDOW_NLL,
                    format!("{value} is not a window's mean NLL (a number ≥ 0, or +inf)"),
                );
            }
        }
    }
    Ok(())
}

/// The optional per-window column (read when present: files written before it have none).
const WINDOW_NLL: &str = "window_nll";

/// The optional metadata entry of the masks measured on some windows only (`partial_windows`):
/// one line per mask, `mask_id seconds s_0 … s_(W−1)`, each window's NLL sum in Rust's shortest
/// round-trip decimal form (`inf` for a collapsed window) or `-` where not measured.
const PARTIAL_WINDOWS: &str = "partial_window_nll_sums";

fn encode_partial_windows(partial: &[PartialWindows]) -> String {
    let lines: Vec<String> = partial
        .iter()
        .map(|p| {
            let sums = p.window_nll_sums.iter().map(|sum| match sum {
                Some(sum) => sum.to_string(),
                None => "-".to_string(),
            });
            std::iter::once(p.mask.id())
                .chain(std::iter::once(p.seconds.to_string()))
                .chain(sums)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    lines.join("\n")
}

fn decode_partial_windows(
    path: &Path,
    text: &str,
    num_blocks: usize,
) -> Result<Vec<PartialWindows>, TableError> {
    text.lines()
        .enumerate()
        .map(|(index, line)| {
            let bad = |message: String| {
                TableError::bad(
                    path,
                    format!(
                        "metadata entry layerprune.{PARTIAL_WINDOWS}, line {}: {message}",
                        index + 1
                    ),
                )
            };
            let mut fields = line.split(' ');
            let mask: Mask = fields
                .next()
                .unwrap_or_default()
                .parse()
                .map_err(|e| bad(format!("mask_id: {e}")))?;
            mask.check_len(num_blocks)
                .map_err(|e| bad(format!("mask_id: {e}")))?;
            let seconds = fields
                .next()
                .ok_or_else(|| bad("no seconds and no windows after the mask".into()))?;
            let seconds: f64 = seconds
                .parse()
                .map_err(|e| bad(format!("seconds {seconds:?}: {e}")))?;
            let window_nll_sums = fields
                .map(|field| match field {
                    "-" => Ok(None),
                    sum => sum
                        .parse()
                        .map(Some)
                        .map_err(|e| bad(format!("window NLL sum {sum:?}: {e}"))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(PartialWindows {
                mask,
                window_nll_sums,
                seconds,
            })
        })
        .collect()
}

/// What a partly measured mask promises (docs/formats.md, "evaluations"): measured on some
/// windows but not all (else it would be a row), as many windows as every other entry and row,
/// sums ≥ 0 or +inf, seconds finite and not negative, no mask twice or also a row.
fn check_partial_windows(
    path: &Path,
    rows: &[EvaluationRow],
    partial: &[PartialWindows],
) -> Result<(), TableError> {
    let with_rows: HashSet<&Mask> = rows.iter().map(|row| &row.mask).collect();
    let mut seen = HashSet::with_capacity(partial.len());
    let mut window_count = rows
        .iter()
        .find_map(|row| row.window_nlls.as_ref().map(Vec::len));
    for entry in partial {
        let bad = |message: String| {
            Err(TableError::bad(
                path,
                format!(
                    "metadata entry layerprune.{PARTIAL_WINDOWS}, mask {}: {message}",
                    entry.mask
                ),
            ))
        };
        if with_rows.contains(&entry.mask) {
            return bad("also has a row (a mask measured on every window is a row only)".into());
        }
        if !seen.insert(&entry.mask) {
            return bad("appears more than once".into());
        }
        let measured = entry.window_nll_sums.iter().flatten().count();
        if measured == 0 || measured == entry.window_nll_sums.len() {
            return bad(format!(
                "{measured} of {} windows measured (an entry is for a mask measured on some \
                 windows, not none or all)",
                entry.window_nll_sums.len()
            ));
        }
        let length = *window_count.get_or_insert(entry.window_nll_sums.len());
        if entry.window_nll_sums.len() != length {
            return bad(format!(
                "{} windows, where the table's other masks have {length}",
                entry.window_nll_sums.len()
            ));
        }
        if let Some(sum) = entry
            .window_nll_sums
            .iter()
            .flatten()
            .find(|sum| sum.is_nan() || **sum < 0.0)
        {
            return bad(format!(
                "{sum} is not a window's NLL sum (a number ≥ 0, or +inf)"
            ));
        }
        if !(entry.seconds.is_finite() && entry.seconds >= 0.0) {
            return bad(format!(
                "seconds {} is not a finite, non-negative duration",
                entry.seconds
            ));
        }
    }
    Ok(())
}

fn fields() -> Vec<Field> {
    let mut fields = mask_fields();
    fields.extend([
        Field::new("nll", DataType::Float64, false),
        Field::new("ppl", DataType::Float64, false),
        Field::new("utility", DataType::Float64, false),
        Field::new("tokens_scored", DataType::UInt64, false),
        Field::new("seconds", DataType::Float64, false),
    ]);
    fields
}

/// Writes the table (a checkpoint when `complete` is false). Duplicate masks are refused.
pub fn write_evaluations(
    path: &Path,
    table: &EvaluationTable,
    provenance: &Provenance,
) -> Result<(), TableError> {
    check_no_duplicates(path, &table.rows)?;
    check_fixed_blocks(path, table.num_blocks, &table.fixed_blocks)?;
    check_values(path, table.full_model_nll, &table.rows)?;
    check_partial_windows(path, &table.rows, &table.partial_windows)?;
    // As the reader refuses it: a table saved so could never be read again.
    crate::masks::check_rows_keep_fixed(
        path,
        &table.fixed_blocks,
        table
            .rows
            .iter()
            .map(|row| &row.mask)
            .chain(table.partial_windows.iter().map(|p| &p.mask)),
    )?;
    let rows = &table.rows;
    let mut columns = mask_columns(path, table.num_blocks, rows.iter().map(|r| &r.mask))?;
    let floats = |get: fn(&EvaluationRow) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(get)))
    };
    columns.push(floats(|r| r.nll));
    columns.push(floats(|r| r.ppl));
    columns.push(floats(|r| r.utility));
    columns.push(Arc::new(UInt64Array::from_iter_values(
        rows.iter().map(|r| r.tokens_scored),
    )));
    columns.push(floats(|r| r.seconds));
    let window_nlls = rows.iter().map(|r| r.window_nlls.as_deref());
    let mut fields = fields();
    // Written only when some row has them, so a table without (a task run's) reads as before.
    if rows.iter().any(|r| r.window_nlls.is_some()) {
        columns.push(list_column_opt::<Float64Type>(window_nlls));
        fields.push(Field::new(WINDOW_NLL, list_of(DataType::Float64), true));
    }
    let full_model_nll = match table.full_model_nll {
        Some(nll) => nll.to_string(),
        None => "null".to_string(),
    };
    let mut table_fields = vec![
        ("num_blocks", table.num_blocks.to_string()),
        ("model_id", table.model_id.clone()),
        ("dataset_id", table.dataset_id.clone()),
        (
            "fixed_blocks",
            encode_fixed_blocks(path, &table.fixed_blocks)?,
        ),
        ("full_model_nll", full_model_nll),
        ("complete", table.complete.to_string()),
    ];
    if let Some(evaluated_on) = &table.evaluated_on {
        table_fields.push((EVALUATED_ON, evaluated_on.clone()));
    }
    // Written only when some mask was measured in part, so other tables read as before.
    if !table.partial_windows.is_empty() {
        table_fields.push((
            PARTIAL_WINDOWS,
            encode_partial_windows(&table.partial_windows),
        ));
    }
    write_table(
        path,
        TableKind::Evaluations,
        provenance,
        table_fields,
        fields,
        columns,
    )
}

pub fn read_evaluations(path: &Path) -> Result<EvaluationTable, TableError> {
    evaluations_of(read_table(path, TableKind::Evaluations, &fields())?)
}

/// [`read_evaluations`], with the SHA-256 of the bytes parsed ([`Hashed`]).
pub fn read_evaluations_hashed(path: &Path) -> Result<Hashed<EvaluationTable>, TableError> {
    let (raw, sha256) = read_table_hashed(path, TableKind::Evaluations, &fields())?;
    Hashed::make(raw, sha256, evaluations_of)
}

/// The evaluation table of a file read whole.
fn evaluations_of(raw: RawTable<'_>) -> Result<EvaluationTable, TableError> {
    let path = raw.path;
    let num_blocks: usize = raw.meta_num_blocks()?;
    let full_model_nll = match raw.meta("full_model_nll")? {
        "null" => None,
        _ => Some(raw.meta_parse::<f64>("full_model_nll")?),
    };
    let mut rows = Vec::with_capacity(raw.num_rows());
    for chunk in raw.chunks() {
        let masks = read_mask_column(&chunk, num_blocks)?;
        let nll = chunk.required::<Float64Array>("nll")?;
        let ppl = chunk.required::<Float64Array>("ppl")?;
        let utility = chunk.required::<Float64Array>("utility")?;
        let tokens_scored = chunk.required::<UInt64Array>("tokens_scored")?;
        let seconds = chunk.required::<Float64Array>("seconds")?;
        let window_nlls = match chunk.batch.column_by_name(WINDOW_NLL) {
            Some(_) => Some(chunk.nullable::<ListArray>(WINDOW_NLL)?),
            None => None,
        };
        for (row, mask) in masks.into_iter().enumerate() {
            let window_nlls = match window_nlls {
                Some(column) if !column.is_null(row) => {
                    Some(chunk.primitives::<Float64Type>(column, WINDOW_NLL, row)?)
                }
                _ => None,
            };
            rows.push(EvaluationRow {
                mask,
                nll: nll.value(row),
                ppl: ppl.value(row),
                utility: utility.value(row),
                tokens_scored: tokens_scored.value(row),
                seconds: seconds.value(row),
                window_nlls,
            });
        }
    }
    check_no_duplicates(path, &rows)?;
    check_values(path, full_model_nll, &rows)?;
    let partial_windows = match raw.meta_optional(PARTIAL_WINDOWS) {
        Some(text) => decode_partial_windows(path, text, num_blocks)?,
        None => Vec::new(),
    };
    check_partial_windows(path, &rows, &partial_windows)?;
    let fixed_blocks = read_fixed_blocks(&raw, path, num_blocks)?;
    crate::masks::check_rows_keep_fixed(
        path,
        &fixed_blocks,
        rows.iter()
            .map(|row| &row.mask)
            .chain(partial_windows.iter().map(|p| &p.mask)),
    )?;
    Ok(EvaluationTable {
        num_blocks,
        model_id: raw.meta("model_id")?.to_string(),
        dataset_id: raw.meta("dataset_id")?.to_string(),
        fixed_blocks,
        full_model_nll,
        complete: raw.meta_parse("complete")?,
        evaluated_on: raw.meta_optional(EVALUATED_ON).map(str::to_string),
        rows,
        partial_windows,
    })
}

/// The metadata entry of [`EvaluationTable::evaluated_on`].
const EVALUATED_ON: &str = "evaluated_on";

/// Whether a stage that draws conclusions from an evaluation table (a surrogate, scores, a
/// pilot) may use one whose writer has not finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Incomplete {
    /// Refuse it: its rows are whichever masks the run reached before it stopped, so a result
    /// drawn from them would look like one drawn from the whole design.
    #[default]
    Refuse,
    /// Use its rows, with a warning (`--allow-incomplete`).
    Allow,
}

/// Reads an evaluation table as the input of a later stage: [`read_evaluations`], then a
/// checkpoint (`complete = false`) is refused unless `incomplete` allows it.
pub fn read_complete_evaluations(
    path: &Path,
    incomplete: Incomplete,
) -> Result<EvaluationTable, TableError> {
    let table = read_evaluations(path)?;
    // Read again for its shard only where the table is complete (what is said of a shard).
    let provenance = table
        .complete
        .then(|| crate::read_provenance(path).ok())
        .flatten();
    complete_or_allowed(path, table, provenance, incomplete)
}

/// [`read_complete_evaluations`], with the SHA-256 of the bytes parsed ([`Hashed`]): for a
/// stage that records the table's hash among its inputs.
pub fn read_complete_evaluations_hashed(
    path: &Path,
    incomplete: Incomplete,
) -> Result<Hashed<EvaluationTable>, TableError> {
    let hashed = read_evaluations_hashed(path)?;
    // The provenance of the bytes parsed: no second read.
    let provenance = hashed.provenance().ok();
    hashed.try_map(|table| complete_or_allowed(path, table, provenance, incomplete))
}

/// `table`, read from `path`, if complete or `incomplete` allows it (with a warning).
/// `provenance` is the table's, as read (`None` where it records none).
fn complete_or_allowed(
    path: &Path,
    table: EvaluationTable,
    provenance: Option<crate::Provenance>,
    incomplete: Incomplete,
) -> Result<EvaluationTable, TableError> {
    if table.complete {
        // A finished shard is complete, but only its share of the masks (`evaluate --merge`
        // joins the shards): said, since conclusions drawn from it see part of the game.
        if let Some(shard) =
            provenance.and_then(|p| p.inputs.get(crate::input_role::SHARD).cloned())
        {
            tracing::warn!(
                "{}: the masks of shard {shard} only ({} rows); evaluate --merge joins the \
                 shards into the whole table",
                path.display(),
                table.rows.len()
            );
        }
        return Ok(table);
    }
    let rows = table.rows.len();
    match incomplete {
        Incomplete::Refuse => Err(TableError::new(
            path,
            TableErrorKind::Incomplete,
            format!(
                "the evaluation table is incomplete (complete = false, {rows} rows: a checkpoint \
                 of a run that stopped or is still going, or a cache of the masks some method \
                 measured); finish the run that writes it (the same command again resumes it), \
                 or pass --allow-incomplete to use the {rows} rows it has"
            ),
        )),
        Incomplete::Allow => {
            tracing::warn!(
                "{}: using an incomplete evaluation table ({rows} rows; --allow-incomplete)",
                path.display()
            );
            Ok(table)
        }
    }
}

/// The table an evaluation run writing `path` continues from: the rows already in `path` if it
/// exists (checked to be for the same model, dataset and number of blocks, and measured on the
/// same device and arithmetic, `evaluated_on`), else an empty one; either way recorded as
/// measured on `evaluated_on`.
pub fn resume_evaluations(
    path: &Path,
    num_blocks: usize,
    model_id: &str,
    dataset_id: &str,
    evaluated_on: &str,
) -> Result<EvaluationTable, TableError> {
    if !path.exists() {
        return Ok(EvaluationTable {
            evaluated_on: Some(evaluated_on.to_string()),
            ..EvaluationTable::new(num_blocks, model_id, dataset_id)
        });
    }
    let table = read_evaluations(path)?;
    // Each says what differs in words, with both values: the ids alone (two sha256s) do not
    // tell a reader whether the model or the token table is the other one. What to do about it
    // is the caller's to say (another --out, --overwrite, another cache, another --out-dir).
    let mismatch = |problem: String| TableError::new(path, TableErrorKind::NotResumable, problem);
    if table.num_blocks != num_blocks {
        return Err(mismatch(format!(
            "cannot resume: its rows are masks of {} blocks, this run's model has {num_blocks}",
            table.num_blocks
        )));
    }
    if table.model_id != model_id {
        return Err(mismatch(format!(
            "cannot resume: its rows were measured on another model (model id {}, this run's \
             is {model_id})",
            table.model_id
        )));
    }
    if table.dataset_id != dataset_id {
        return Err(mismatch(format!(
            "cannot resume: its rows were measured on another token table (dataset id {}, this \
             run's is {dataset_id})",
            table.dataset_id
        )));
    }
    let mut table = table;
    match &table.evaluated_on {
        Some(found)
            if found != evaluated_on
                && !(table.rows.is_empty() && table.partial_windows.is_empty()) =>
        {
            return Err(TableError::new(
                path,
                TableErrorKind::MeasuredOtherwise,
                format!(
                    "cannot resume: its rows were measured on {found}, this run measures on \
                     {evaluated_on} (the same model and token table, but their NLLs differ in \
                     the last digits, enough to change a close choice)"
                ),
            ));
        }
        _ => table.evaluated_on = Some(evaluated_on.to_string()),
    }
    Ok(table)
}
