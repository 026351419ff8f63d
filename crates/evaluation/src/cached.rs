//! The LLM on one token table as a game whose every answer is kept in an evaluation table: what
//! `apply-prune` (with `--cache`) and `frontier` play selection methods against.
//!
//! Why: a selection method asks for masks one small batch at a time, and on a large model each
//! is expensive. Kept in memory, the table lets a method (or several, or one k after another)
//! ask for a mask twice and pay once; written to a file after every batch that ran something
//! (and every few seconds within a long one; a large table less often, so that rewriting it
//! stays under a tenth of the run: [`crate::pace`]; whatever is left is written when the game
//! is dropped or its model taken back),
//! it lets a run killed part-way, or a later run with another k or budget on the same model and
//! tokens, re-run nothing already measured. The file is an ordinary evaluation table
//! (docs/formats.md), checked on opening to be for the same model and token table, rewritten
//! atomically, with each mask's NLL per window, so a plan's margin over its runner-up
//! ([`crate::attach_comparisons`]) is the same whether a mask was measured now or read back.
//! One run at a time uses a file: a second one (`make -j` choosing two plans through one cache)
//! waits for the first to finish and then reads what it measured
//! ([`layerprune_core::FileLock`]), instead of rewriting the file without its rows.
//!
//! A mask can also be measured on some windows only ([`Game::values_on_windows`], what racing
//! asks for): only the windows not yet measured are run when more are asked for, and a mask
//! whose every window has been measured becomes a row of the table like any other. Until then
//! its windows are kept with the table (`EvaluationTable::partial_windows`, written with it),
//! so a mask a race dropped after a few windows costs nothing when a later run through the
//! same cache asks for those windows again — a replayed raced method runs nothing — and a run
//! killed part-way loses none of them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use layerprune_core::{FileLock, Game, GameError, Mask};
use layerprune_runtime::{
    sort_for_prefix_reuse, EvalOptions, Evaluator, LayeredModel, MaskEvaluation,
};
use layerprune_tables::{
    read_evaluations, resume_evaluations, write_evaluations, EvaluationRow, EvaluationTable,
    PartialWindows, Provenance, TableErrorKind, TokenTable,
};

use crate::pace::SavePace;
use crate::perplexity::evaluation_row;

/// The model on one token table, with its evaluation table as the cache. Values are −NLL.
pub struct CachedLlm {
    /// `None` only once [`CachedLlm::into_model`] took it back (the game is gone then).
    evaluator: Option<Evaluator>,
    table: EvaluationTable,
    index: HashMap<Mask, usize>,
    /// Where the table is kept; `None`: in memory only.
    path: Option<PathBuf>,
    provenance: Provenance,
    /// The distinct masks asked for since opening, in the order first asked.
    asked: Vec<Mask>,
    asked_set: HashSet<Mask>,
    /// Masks measured on some windows only (no row yet): each window's NLL sum where measured.
    /// Written with the table (its `partial_windows`) whenever it is saved.
    partial: HashMap<Mask, PartialWindows>,
    /// Masks actually run on the model by this process (whole, or their last windows).
    pub ran: usize,
    /// Windows run by this process for masks measured a few windows at a time (a race's).
    pub windows_ran: usize,
    /// Seconds spent running them.
    pub seconds: f64,
    /// Masks per evaluator call when many are asked at once (search's candidates, the Shapley
    /// masks, plans measured held out), so the table can be saved between calls.
    chunk_masks: usize,
    /// Least time between two saves while a long batch runs.
    save_interval: Duration,
    /// When the table was last saved and how long that took: a save is skipped while it would
    /// make saving more than a tenth of the work.
    pace: SavePace,
    /// Rows or windows measured since the last save (written when the game is dropped).
    unsaved: bool,
    /// Held while the table is in use (only with a file).
    _lock: Option<FileLock>,
    /// The file held a finished table (an `evaluate` run's, complete): the first save makes it
    /// a cache, which is never complete (see [`CachedLlm::open`]).
    was_finished: bool,
}

/// Masks per evaluator call of a long batch, per mask `--mask-batch` joins: masks are batched
/// by the prefix they share, so a call needs many more masks than one batch for its batches to
/// be full.
const CHUNK_MASKS: usize = 8;
/// A long batch's table is saved at most this often: at ~1 s a mask on a small model's CPU run
/// a kill loses a few seconds of work, and on a GPU saving a large table after every few
/// masks would cost more than measuring them.
const SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// What [`EvaluationCache::open`] does with a cache of this model and token table whose rows
/// were measured on another device or arithmetic (`evaluated_on`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MeasuredOtherwise {
    /// Refused, naming both: a cache a user keeps, given to a run on another device by mistake.
    #[default]
    Refuse,
    /// Started again empty, with a warning; the file is replaced at the first save, i.e. once
    /// something was measured on the new device: a pipeline's cache across a change of device,
    /// where a CUDA request that then fails keeps the CPU's measurements (a pipeline that
    /// removed the cache on the change lost them). A finished `evaluate` table (a cache is
    /// saved as not complete) is refused as with [`MeasuredOtherwise::Refuse`].
    Replace,
}

impl MeasuredOtherwise {
    /// The stages' `--replace-cache-measured-otherwise`.
    pub fn replace_if(flag: bool) -> Self {
        if flag {
            MeasuredOtherwise::Replace
        } else {
            MeasuredOtherwise::Refuse
        }
    }
}

/// An evaluation cache file taken for one run: locked, read, and checked to hold evaluations of
/// this run's model, token table and device and settings ([`EvaluationCache::open`]); what
/// [`CachedLlm::open_with`] plays the game through.
///
/// Why a step of its own: a stage names the flag or set that gave the file over what fails
/// here (`--cache FILE`), and the model's token table over what fails running the model, so a
/// cache measured with other settings does not read as a fault of the token table.
pub struct EvaluationCache {
    path: PathBuf,
    /// Held while the table is in use.
    lock: FileLock,
    table: EvaluationTable,
    /// What the table was checked against: the game it is given to must be the same.
    model_id: String,
    dataset_id: String,
    evaluated_on: String,
}

impl EvaluationCache {
    /// Takes the lock of `path` (waiting while another run uses it), then reads the evaluation
    /// table there (an empty one when missing) and refuses it, naming the file and what
    /// differs, if it was measured on another model, token table or number of windows than
    /// `model` on `tokens`; one measured on another device or settings than `options` is
    /// refused too, or with [`MeasuredOtherwise::Replace`] started again (the file replaced at
    /// the first save, once something was measured).
    pub fn open(
        path: &Path,
        model: &LayeredModel,
        tokens: &TokenTable,
        options: &EvalOptions,
        measured_otherwise: MeasuredOtherwise,
    ) -> Result<Self> {
        Self::open_before_model(
            path,
            model.num_blocks(),
            model.model_id(),
            tokens,
            &evaluated_on(model, tokens, options),
            measured_otherwise,
        )
    }

    /// [`Self::open`] from what the model's manifest gives (its block count and
    /// [`layerprune_runtime::model_id`]) and what the run will be recorded as measured on
    /// ([`layerprune_runtime::RuntimeOptions::evaluated_on`]), so that a stage refuses a cache
    /// it cannot use before it hashes the model's files and opens its sessions. The game it is
    /// given to checks it against the model opened ([`CachedLlm::open_with`]).
    pub fn open_before_model(
        path: &Path,
        num_blocks: usize,
        model_id: &str,
        tokens: &TokenTable,
        evaluated_on: &str,
        measured_otherwise: MeasuredOtherwise,
    ) -> Result<Self> {
        // Taken before reading, so what another run is still measuring is read too.
        let lock = FileLock::acquire_waiting(path, &mut || {
            tracing::warn!(
                "{}: another run is using this cache; waiting for it to finish",
                path.display()
            )
        })?;
        // Its own error names the file and what differs (model, token table, device and
        // settings): no context here, which would have to guess which.
        let table = match resume_evaluations(
            path,
            num_blocks,
            model_id,
            &tokens.dataset_id,
            evaluated_on,
        ) {
            // A finished `evaluate` table given as a cache is the user's result, not a cache a
            // pipeline keeps (a cache is saved as not complete): never started again.
            Err(error)
                if error.kind == TableErrorKind::MeasuredOtherwise
                    && measured_otherwise == MeasuredOtherwise::Replace
                    && !read_evaluations(path).is_ok_and(|table| table.complete) =>
            {
                tracing::warn!(
                    "{error}; starting the cache again (the file is replaced once this run has \
                     measured something)"
                );
                EvaluationTable {
                    evaluated_on: Some(evaluated_on.to_string()),
                    ..EvaluationTable::new(num_blocks, model_id, &tokens.dataset_id)
                }
            }
            resumed => resumed?,
        };
        if let Some(entry) = table
            .partial_windows
            .iter()
            .find(|p| p.window_nll_sums.len() != tokens.windows.len())
        {
            // Its dataset id names the token table, so this is a file edited by hand.
            anyhow::bail!(
                "{}: mask {} was measured on {} windows, but {} has {}",
                path.display(),
                entry.mask,
                entry.window_nll_sums.len(),
                tokens.source,
                tokens.windows.len()
            );
        }
        Ok(EvaluationCache {
            path: path.to_path_buf(),
            lock,
            table,
            model_id: model_id.to_string(),
            dataset_id: tokens.dataset_id.clone(),
            evaluated_on: evaluated_on.to_string(),
        })
    }
}

/// How `model` measures `tokens` with `options` (device and arithmetic): what a cache's rows
/// must have been measured on to be reused.
fn evaluated_on(model: &LayeredModel, tokens: &TokenTable, options: &EvalOptions) -> String {
    model.evaluated_on(&options.for_windows(&tokens.windows, model.manifest()))
}

impl CachedLlm {
    /// Opens the game of `model` on `tokens`, resuming the evaluation table at `cache` when
    /// given (refused if it was made for another model or token table, or on another device or
    /// settings; created when missing; waited for while another run uses it), and measures the
    /// full model unless the table has it: [`EvaluationCache::open`], then
    /// [`CachedLlm::open_with`].
    pub fn open(
        model: LayeredModel,
        tokens: &TokenTable,
        options: EvalOptions,
        cache: Option<&Path>,
        provenance: Provenance,
    ) -> Result<Self> {
        let cache = cache
            .map(|path| {
                EvaluationCache::open(path, &model, tokens, &options, MeasuredOtherwise::Refuse)
            })
            .transpose()?;
        Self::open_with(model, tokens, options, cache, provenance)
    }

    /// Opens the game of `model` on `tokens` through `cache` (opened for the same model, tokens
    /// and options; in memory only when `None`), and measures the full model unless the table
    /// has it.
    pub fn open_with(
        model: LayeredModel,
        tokens: &TokenTable,
        options: EvalOptions,
        cache: Option<EvaluationCache>,
        provenance: Provenance,
    ) -> Result<Self> {
        let num_blocks = model.num_blocks();
        let model_id = model.model_id().to_string();
        let evaluated_on = evaluated_on(&model, tokens, &options);
        let (path, lock, mut table) = match cache {
            Some(cache) => {
                // A caller's mistake, not the file's: the table was checked against another game.
                assert!(
                    (&cache.model_id, &cache.dataset_id, &cache.evaluated_on)
                        == (&model_id, &tokens.dataset_id, &evaluated_on),
                    "{}: opened for another model, token table or settings than its game",
                    cache.path.display()
                );
                (Some(cache.path), Some(cache.lock), cache.table)
            }
            None => (
                None,
                None,
                EvaluationTable {
                    evaluated_on: Some(evaluated_on),
                    ..EvaluationTable::new(num_blocks, &model_id, &tokens.dataset_id)
                },
            ),
        };
        let cache = path.as_deref();
        let model_dir = model.dir().to_path_buf();
        let chunk_masks = CHUNK_MASKS * options.mask_batch.max(1);
        let evaluator = Evaluator::new(model, &tokens.windows, options)
            .with_context(|| format!("{} with {}", tokens.source, model_dir.display()))?;
        let index = table
            .rows
            .iter()
            .enumerate()
            .map(|(i, row)| (row.mask.clone(), i))
            .collect();
        // A cache holds whatever masks were asked, never a finished sample: given an `evaluate`
        // run's complete table, it adds this run's masks to it, and the table, saved, says it is
        // not complete, so a surrogate or estimator does not take the added masks for part of
        // its sample (it refuses the table without --allow-incomplete).
        let was_finished = std::mem::replace(&mut table.complete, false) && cache.is_some();
        let partial = std::mem::take(&mut table.partial_windows)
            .into_iter()
            .map(|p| (p.mask.clone(), p))
            .collect();
        let mut game = CachedLlm {
            evaluator: Some(evaluator),
            table,
            index,
            path: cache.map(Path::to_path_buf),
            provenance: provenance.with_game(&model_id, &tokens.dataset_id),
            asked: Vec::new(),
            asked_set: HashSet::new(),
            partial,
            ran: 0,
            windows_ran: 0,
            seconds: 0.0,
            chunk_masks,
            save_interval: SAVE_INTERVAL,
            pace: SavePace::default(),
            unsaved: false,
            _lock: lock,
            was_finished,
        };
        if let (Some(path), false) = (cache, game.table.rows.is_empty()) {
            // Said before anything runs, so a rerun after a kill shows it is resuming.
            tracing::info!(
                "{}: resuming: {} masks already measured (by earlier runs, or earlier in this one){}",
                path.display(),
                game.table.rows.len(),
                match game.partly_measured() {
                    0 => String::new(),
                    n => format!(", {n} more on some windows"),
                }
            );
        }
        let full = Mask::full(num_blocks);
        let nll = -game
            .values(std::slice::from_ref(&full))
            .map_err(anyhow::Error::msg)?[0];
        game.table.full_model_nll = Some(nll);
        Ok(game)
    }

    /// Saves a long batch's table every `interval` (at most), measuring `masks` a call, and
    /// skips a save until `work_per_save` times the last one's time has passed: for tests,
    /// which need saves between calls without waiting seconds, and no save skipped (0) or
    /// every one after the next (`u32::MAX`) whatever the machine's speed.
    pub fn with_checkpoints(
        mut self,
        masks: usize,
        interval: Duration,
        work_per_save: u32,
    ) -> Self {
        self.chunk_masks = masks.max(1);
        self.save_interval = interval;
        self.pace = SavePace::with_work_per_save(work_per_save);
        self
    }

    pub fn evaluator(&mut self) -> &mut Evaluator {
        self.evaluator
            .as_mut()
            .expect("the evaluator until into_model")
    }

    fn evaluator_ref(&self) -> &Evaluator {
        self.evaluator
            .as_ref()
            .expect("the evaluator until into_model")
    }

    /// Saves what was measured since the last save, if anything: at the end of a stage's use
    /// of the game, where a failed write should stop it (dropping the game saves too, but can
    /// only warn).
    pub fn flush(&mut self) -> Result<()> {
        if self.unsaved {
            self.save()?;
        }
        Ok(())
    }

    /// The model back, the table saved ([`CachedLlm::flush`]).
    pub fn into_model(mut self) -> Result<LayeredModel> {
        self.flush()?;
        Ok(self.evaluator.take().expect("taken once").into_model())
    }

    /// The NLL of a mask measured earlier (now or in the cache).
    pub fn nll(&self, mask: &Mask) -> Option<f64> {
        self.row(mask).map(|row| row.nll)
    }

    /// The distinct masks asked for since opening (the full model first) that have their
    /// windows' NLLs, in the order first asked: what a plan's runner-up is chosen among.
    /// Rows of a cache written before tables kept windows have none and are left out.
    pub fn asked_window_nlls(&self) -> Vec<(Mask, Vec<f64>)> {
        self.asked
            .iter()
            .filter_map(|mask| {
                let windows = self.row(mask)?.window_nlls.clone()?;
                Some((mask.clone(), windows))
            })
            .collect()
    }

    /// ", plus W windows of masks measured in part" when this process ran any such windows,
    /// else nothing: what the stages add to their count of masks run, so a run that measured
    /// only windows of raced masks does not read as one that ran nothing.
    pub fn windows_ran_note(&self) -> String {
        match self.windows_ran {
            0 => String::new(),
            windows => format!(", plus {windows} windows of masks measured in part"),
        }
    }

    /// Distinct masks asked for since opening (the full model included).
    pub fn asked_masks(&self) -> usize {
        self.asked.len()
    }

    /// Of those, the ones the cache already had.
    pub fn answered_from_cache(&self) -> usize {
        self.asked.len().saturating_sub(self.ran)
    }

    /// Masks measured on some windows only (dropped by a race), which have no row.
    pub fn partly_measured(&self) -> usize {
        self.partial
            .keys()
            .filter(|mask| !self.index.contains_key(*mask))
            .count()
    }

    /// Rows in the evaluation table (the cache's and this process's).
    pub fn cached_masks(&self) -> usize {
        self.table.rows.len()
    }

    fn row(&self, mask: &Mask) -> Option<&EvaluationRow> {
        self.index.get(mask).map(|&i| &self.table.rows[i])
    }

    /// Saves the table if a save now keeps saving under a tenth of the time
    /// ([`SavePace::due`]); otherwise it is left for a later save.
    fn save_if_due(&mut self) -> Result<()> {
        if self.pace.due() {
            self.save()
        } else {
            self.unsaved = self.path.is_some();
            Ok(())
        }
    }

    /// Writes the table with the masks measured in part (in mask order, so the file does not
    /// depend on a hash map's), atomically.
    fn save(&mut self) -> Result<()> {
        if let Some(path) = &self.path {
            if std::mem::take(&mut self.was_finished) {
                tracing::warn!(
                    "{}: the finished evaluation table of an `evaluate` run, given as a cache: \
                     the masks this run measures are added to it, and it is a cache from now on \
                     (not complete, so the stages that draw conclusions from a sample refuse it \
                     without --allow-incomplete); give --cache a copy to keep a table as it is",
                    path.display()
                );
            }
            let mut partial: Vec<PartialWindows> = self
                .partial
                .values()
                // A mask whose windows are all measured became a row; one with a row from a
                // cache written before tables kept windows has what it needs there.
                .filter(|p| !self.index.contains_key(&p.mask))
                .cloned()
                .collect();
            partial.sort_by(|a, b| a.mask.cmp(&b.mask));
            self.table.partial_windows = partial;
            drop_fixed_blocks_removed(&mut self.table, path);
            let (table, provenance) = (&self.table, &self.provenance);
            let written = self
                .pace
                .save(|| write_evaluations(path, table, provenance));
            self.table.partial_windows = Vec::new();
            written?;
            self.unsaved = false;
        }
        Ok(())
    }
}

/// Keeps as fixed only the blocks that every row of `table` (the cache at `path`) and every
/// mask measured in part keeps. An `evaluate` table given as the cache records its mask table's
/// fixed blocks, but a method may ask for masks that remove one (SLEB without `--fixed`):
/// written with them, the table would contradict itself, and every later read, this cache's
/// next resume included, would refuse it.
fn drop_fixed_blocks_removed(table: &mut EvaluationTable, path: &Path) {
    let before = table.fixed_blocks.len();
    let (rows, partial) = (&table.rows, &table.partial_windows);
    table.fixed_blocks.retain(|&block| {
        rows.iter().all(|row| row.mask.is_kept(block))
            && partial.iter().all(|p| p.mask.is_kept(block))
    });
    if table.fixed_blocks.len() < before {
        tracing::warn!(
            "{}: masks asked for now remove blocks the table had fixed; it records only {:?} as \
             fixed from now on",
            path.display(),
            table.fixed_blocks
        );
    }
}

impl CachedLlm {
    fn note_asked(&mut self, masks: &[Mask]) {
        for mask in masks {
            if self.asked_set.insert(mask.clone()) {
                self.asked.push(mask.clone());
            }
        }
    }

    /// Appends rows for masks run by this process and saves the table when due.
    fn add_rows(&mut self, rows: Vec<EvaluationRow>, seconds: f64) -> Result<(), GameError> {
        self.append_rows(rows, seconds)?;
        self.save_if_due()?;
        Ok(())
    }

    /// Appends rows for masks run by this process (the table not saved).
    fn append_rows(&mut self, rows: Vec<EvaluationRow>, seconds: f64) -> Result<(), GameError> {
        let first = self.table.rows.len();
        let masks: Vec<Mask> = rows.iter().map(|row| row.mask.clone()).collect();
        self.table.append(rows)?;
        for (i, mask) in masks.into_iter().enumerate() {
            self.index.insert(mask, first + i);
        }
        self.ran += self.table.rows.len() - first;
        self.seconds += seconds;
        Ok(())
    }

    /// Runs the windows of `windows` that `masks` (none with a row that has windows) have not
    /// been measured on yet, keeping them in `partial`; then every mask whose windows are all
    /// measured becomes a row.
    fn measure_windows(&mut self, masks: &[Mask], windows: Range<usize>) -> Result<(), GameError> {
        let num_windows = self.evaluator_ref().num_windows();
        // Masks grouped by the run of windows each still lacks, so each group is one call.
        let mut lacking: BTreeMap<(usize, usize), Vec<Mask>> = BTreeMap::new();
        for mask in masks {
            let measured = self
                .partial
                .entry(mask.clone())
                .or_insert_with(|| PartialWindows {
                    mask: mask.clone(),
                    window_nll_sums: vec![None; num_windows],
                    seconds: 0.0,
                });
            let mut w = windows.start;
            while w < windows.end {
                if measured.window_nll_sums[w].is_some() {
                    w += 1;
                    continue;
                }
                let start = w;
                while w < windows.end && measured.window_nll_sums[w].is_none() {
                    w += 1;
                }
                lacking.entry((start, w)).or_default().push(mask.clone());
            }
        }
        let ran_windows = !lacking.is_empty();
        let started = Instant::now();
        let mut failed = None;
        for ((start, end), group) in lacking {
            let results =
                match self
                    .evaluator()
                    .evaluate_windows(&group, start..end, &mut |_, _| {})
                {
                    Ok(results) => results,
                    Err(error) => {
                        // The groups measured before it are kept (below), as `values` keeps
                        // the chunks before a failed one.
                        failed = Some(error);
                        break;
                    }
                };
            self.windows_ran += group.len() * (end - start);
            for (mask, result) in group.iter().zip(results) {
                let measured = self.partial.get_mut(mask).expect("entered above");
                for (w, sum) in (start..end).zip(result.window_nll_sums) {
                    measured.window_nll_sums[w] = Some(sum);
                }
                measured.seconds += result.seconds;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let full_nll = self.table.full_model_nll;
        let tokens_scored = self.evaluator_ref().tokens_scored();
        let mut rows = Vec::new();
        for mask in masks {
            let complete = self.partial[mask]
                .window_nll_sums
                .iter()
                .all(Option::is_some);
            // A row from a cache written before tables kept windows stays as it is.
            if complete && !self.index.contains_key(mask) {
                let measured = self.partial.remove(mask).expect("entered above");
                let window_nll_sums: Vec<f64> =
                    measured.window_nll_sums.into_iter().flatten().collect();
                let result = MaskEvaluation {
                    nll_sum: window_nll_sums.iter().sum(),
                    tokens_scored,
                    window_nll_sums,
                    seconds: measured.seconds,
                };
                rows.push(evaluation_row(
                    self.evaluator_ref(),
                    mask.clone(),
                    &result,
                    full_nll,
                ));
            }
        }
        if let Some(error) = failed {
            // A mask of the failed group may have no window measured: an entry the table
            // cannot hold (nor a later save of this game, when it is dropped).
            self.partial
                .retain(|_, p| p.window_nll_sums.iter().any(Option::is_some));
            let promoted: Vec<Mask> = rows.iter().map(|row| row.mask.clone()).collect();
            self.note_asked(&promoted);
            self.append_rows(rows, seconds)?;
            let _ = self.save();
            return Err(error.into());
        }
        if !rows.is_empty() {
            let promoted: Vec<Mask> = rows.iter().map(|row| row.mask.clone()).collect();
            self.note_asked(&promoted);
            self.add_rows(rows, seconds)?;
        } else if ran_windows {
            self.seconds += seconds;
            self.save_if_due()?;
        }
        Ok(())
    }
}

impl Drop for CachedLlm {
    /// Saves what a skipped save left ([`CachedLlm::flush`] where the error should stop a
    /// stage); an unwinding panic keeps the measured masks too.
    fn drop(&mut self) {
        if let Err(error) = self.flush() {
            tracing::warn!("the evaluation cache was not saved: {error:#}");
        }
    }
}

impl Game for CachedLlm {
    fn num_players(&self) -> usize {
        self.evaluator_ref().num_blocks()
    }

    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError> {
        self.note_asked(masks);
        // Masks measured on some windows already need only the others.
        let (started_on, pending): (Vec<Mask>, Vec<Mask>) = self
            .table
            .pending(masks)
            .into_iter()
            .partition(|mask| self.partial.contains_key(mask));
        if !started_on.is_empty() {
            let all = 0..self.evaluator_ref().num_windows();
            self.measure_windows(&started_on, all)?;
        }
        if !pending.is_empty() {
            // A chunk at a time, in prefix order: the evaluator carries the last mask's prefix
            // into the next call (within --cache-mb), so the chunks run about the blocks one
            // call would, and the table is saved between them (every `save_interval`, at the
            // end when due, and before an error is returned): a run killed or failing in a
            // long batch keeps what it measured.
            let mut pending = pending;
            sort_for_prefix_reuse(&mut pending);
            let full_nll = self.table.full_model_nll;
            let chunks = pending.len().div_ceil(self.chunk_masks);
            for (i, chunk) in pending.chunks(self.chunk_masks).enumerate() {
                let started = Instant::now();
                let results = match self.evaluator().evaluate(chunk, &mut |_, _| {}) {
                    Ok(results) => results,
                    Err(error) => {
                        let _ = self.save();
                        return Err(error.into());
                    }
                };
                let rows: Vec<EvaluationRow> = chunk
                    .iter()
                    .zip(&results)
                    .map(|(mask, result)| {
                        evaluation_row(self.evaluator_ref(), mask.clone(), result, full_nll)
                    })
                    .collect();
                self.append_rows(rows, started.elapsed().as_secs_f64())?;
                if i + 1 == chunks || self.pace.since_last() >= self.save_interval {
                    self.save_if_due()?;
                }
            }
        }
        Ok(masks
            .iter()
            .map(|mask| -self.table.rows[self.index[mask]].nll)
            .collect())
    }

    fn num_windows(&self) -> Option<usize> {
        Some(self.evaluator_ref().num_windows())
    }

    /// Minus each window's mean NLL, from the table where the mask has a row with windows,
    /// else measured (only the windows not measured before).
    fn values_on_windows(
        &mut self,
        masks: &[Mask],
        windows: Range<usize>,
    ) -> Result<Vec<Vec<f64>>, GameError> {
        let num_windows = self.evaluator_ref().num_windows();
        if windows.is_empty() || windows.end > num_windows {
            return Err(format!(
                "windows {}..{} of a token table of {num_windows} windows",
                windows.start, windows.end
            )
            .into());
        }
        let mut lacking: Vec<Mask> = masks
            .iter()
            .filter(|mask| self.window_values(mask).is_none())
            .cloned()
            .collect();
        lacking.sort();
        lacking.dedup();
        if !lacking.is_empty() {
            self.measure_windows(&lacking, windows.clone())?;
        }
        let per_window = self.evaluator_ref().tokens_scored() as f64 / num_windows as f64;
        Ok(masks
            .iter()
            .map(|mask| match self.window_values(mask) {
                Some(values) => values[windows.clone()].to_vec(),
                None => self.partial[mask].window_nll_sums[windows.clone()]
                    .iter()
                    .map(|sum| -sum.expect("measured above") / per_window)
                    .collect(),
            })
            .collect())
    }

    /// Minus each calibration window's mean NLL, as the value is minus their mean; `None` for a
    /// mask not measured, or read from a cache written before tables kept windows.
    fn window_values(&self, mask: &Mask) -> Option<Vec<f64>> {
        let windows = self.row(mask)?.window_nlls.as_ref()?;
        Some(windows.iter().map(|nll| -nll).collect())
    }
}
