//! The LLM on one token table as a game whose every measurement is kept in an evaluation
//! table on disk: a mask asked twice (by two methods, or after a restart) is run once, and a
//! killed run resumes from the last batch written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use layerprune_core::{Game, GameError, Mask};
use layerprune_runtime::{EvalOptions, Evaluator, LayeredModel};
use layerprune_tables::{
    resume_evaluations, write_evaluations, EvaluationRow, EvaluationTable, Provenance, TokenTable,
};

/// The model on one token table, with its evaluation table as the cache. Values are −NLL.
pub struct CachedLlm {
    evaluator: Evaluator,
    table: EvaluationTable,
    index: HashMap<Mask, usize>,
    path: PathBuf,
    provenance: Provenance,
    /// Masks actually run on the model by this process.
    pub ran: usize,
    /// Seconds spent running them.
    pub seconds: f64,
}

impl CachedLlm {
    /// Opens (or resumes) the cache at `path` for `model` on `tokens`; measures the full model
    /// if the cache does not have it.
    pub fn open(
        model: LayeredModel,
        tokens: &TokenTable,
        path: &Path,
        provenance: Provenance,
    ) -> Result<Self> {
        let num_blocks = model.num_blocks();
        let model_id = model.model_id().to_string();
        let table = resume_evaluations(path, num_blocks, &model_id, &tokens.dataset_id)?;
        let evaluator = Evaluator::new(model, &tokens.windows, EvalOptions::default())
            .with_context(|| format!("{} with the model", tokens.source))?;
        let index = table
            .rows
            .iter()
            .enumerate()
            .map(|(i, row)| (row.mask.clone(), i))
            .collect();
        let mut cache = CachedLlm {
            evaluator,
            table,
            index,
            path: path.to_path_buf(),
            provenance: provenance
                .with_input("model", &model_id)
                .with_input("dataset", &tokens.dataset_id),
            ran: 0,
            seconds: 0.0,
        };
        let full = Mask::full(num_blocks);
        let nll = -cache
            .values(std::slice::from_ref(&full))
            .map_err(anyhow::Error::msg)?[0];
        cache.table.full_model_nll = Some(nll);
        Ok(cache)
    }

    pub fn evaluator(&mut self) -> &mut Evaluator {
        &mut self.evaluator
    }

    pub fn into_model(self) -> LayeredModel {
        self.evaluator.into_model()
    }

    /// The NLL of a mask measured earlier.
    pub fn nll(&self, mask: &Mask) -> Option<f64> {
        self.index.get(mask).map(|&i| self.table.rows[i].nll)
    }

    fn save(&mut self) -> Result<()> {
        write_evaluations(&self.path, &self.table, &self.provenance)?;
        Ok(())
    }
}

impl Game for CachedLlm {
    fn num_players(&self) -> usize {
        self.evaluator.num_blocks()
    }

    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError> {
        let pending = self.table.pending(masks);
        if !pending.is_empty() {
            let started = Instant::now();
            let results = self.evaluator.evaluate(&pending, &mut |_, _| {})?;
            let full_nll = self.table.full_model_nll;
            let rows: Vec<EvaluationRow> = pending
                .iter()
                .zip(&results)
                .map(|(mask, result)| {
                    let nll = result.nll();
                    EvaluationRow {
                        mask: mask.clone(),
                        nll,
                        ppl: nll.exp(),
                        // Before the full model is known (its own row) the utility is 1.
                        utility: full_nll.map_or(1.0, |full| (full - nll).exp()),
                        tokens_scored: result.tokens_scored,
                        seconds: result.seconds,
                    }
                })
                .collect();
            let first = self.table.rows.len();
            self.table.append(rows)?;
            for (i, mask) in pending.iter().enumerate() {
                self.index.insert(mask.clone(), first + i);
            }
            self.ran += pending.len();
            self.seconds += started.elapsed().as_secs_f64();
            self.save()?;
        }
        Ok(masks
            .iter()
            .map(|mask| -self.table.rows[self.index[mask]].nll)
            .collect())
    }
}
