//! What fit-surrogate's test files share.

use std::path::Path;

use layerprune_core::Mask;
use layerprune_tables::{write_evaluations, EvaluationRow, EvaluationTable, Provenance};

/// Every mask of `num_blocks` blocks with the NLL `nll(mask)`, as a complete evaluation table
/// at `path`; the empty mask's utility is NaN (as a diverged evaluation would be).
pub fn write_every_mask_table(
    path: &Path,
    num_blocks: usize,
    full_nll: f64,
    tokens_scored: u64,
    nll: impl Fn(&Mask) -> f64,
) {
    let rows = (0..1u32 << num_blocks)
        .map(|bits| {
            let mask = Mask::from_kept((0..num_blocks).map(|i| bits >> i & 1 == 1).collect());
            let nll = nll(&mask);
            let utility = if mask.num_removed() == num_blocks {
                f64::NAN
            } else {
                (full_nll - nll).exp()
            };
            EvaluationRow {
                mask,
                nll,
                ppl: nll.exp(),
                utility,
                tokens_scored,
                seconds: 0.1,
                window_nlls: None,
            }
        })
        .collect();
    let table = EvaluationTable {
        num_blocks,
        model_id: "model".into(),
        dataset_id: "dataset".into(),
        fixed_blocks: Vec::new(),
        full_model_nll: Some(full_nll),
        complete: true,
        evaluated_on: None,
        rows,
        partial_windows: Vec::new(),
    };
    write_evaluations(path, &table, &Provenance::new("test", "0", vec![])).unwrap();
}
