//! Masks valued by the perplexity of token windows: the resumable run, the merge of shard
//! tables and the full model's block statistics.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use layerprune_core::{Device, FileLock, Mask};
use layerprune_runtime::{
    sort_for_prefix_reuse, ArenaUse, DeviceMemory, EvalOptions, Evaluator, LayeredModel, Manifest,
    MaskEvaluation, RunTally, RuntimeOptions,
};
use layerprune_tables::input_role;
use layerprune_tables::{
    read_evaluations, read_masks, read_provenance, read_tokens, replace_with_overwrite,
    resume_evaluations, resume_refusal, write_block_stats, write_evaluations, BlockStatsTable,
    EvaluationRow, EvaluationTable, Provenance, TableError, TableErrorKind,
};

use crate::pace::SavePace;
use crate::{ordered_rows, MaskList, MaskSource, Progress, Shard};

/// Keys every `evaluate --summary` holds (since 2026-11-29): what its output check takes for a
/// summary of an earlier run, which a rerun replaces without `--overwrite` (`Io::output_json`).
pub const SUMMARY_KEYS: &[&str] = &["masks", "seconds", "masks_per_second"];

/// Everything an evaluation run needs.
#[derive(Clone, Debug)]
pub struct EvaluationConfig {
    /// Layered model folder (manifest.json + graphs).
    pub model: PathBuf,
    /// Token table (prepare-tokens).
    pub tokens: PathBuf,
    pub masks: MaskSource,
    /// Evaluate only this shard of the masks.
    pub shard: Option<Shard>,
    /// Evaluation table to write, resumed if it holds a partial run of the same model and
    /// dataset.
    pub out: PathBuf,
    pub runtime: RuntimeOptions,
    pub options: EvalOptions,
    /// Masks per checkpoint of `out` (each one evaluator call, the masks in prefix order).
    pub checkpoint_every: NonZeroUsize,
    /// Evaluate at most this many new masks, then stop with a partial table.
    pub max_new_masks: Option<usize>,
    /// Replace an `out` of another model or dataset instead of refusing.
    pub overwrite: bool,
    /// Also write the full model's block statistics.
    pub block_stats: Option<BlockStatsOutput>,
    /// Write this run's timing as JSON here, for benchmarks.
    pub summary: Option<PathBuf>,
    /// Tool, version and command line recorded in the outputs; the run adds its inputs.
    pub provenance: Provenance,
}

/// Where the block statistics go, and the longest run of consecutive blocks in them.
#[derive(Clone, Debug)]
pub struct BlockStatsOutput {
    pub path: PathBuf,
    pub max_run: usize,
}

/// What [`run_evaluation`] did.
#[derive(Clone, Debug)]
pub struct EvaluationOutcome {
    /// The table as last written (`complete` unless stopped by `max_new_masks`).
    pub table: EvaluationTable,
    /// The masks of this run (of its shard).
    pub masks: usize,
    /// How many of them the table holds (rows of masks of an earlier design it keeps are not
    /// counted).
    pub masks_in_table: usize,
    /// Masks evaluated by this call (not resumed).
    pub evaluated: usize,
    /// Seconds spent evaluating them.
    pub seconds: f64,
    /// Blocks run to evaluate them.
    pub blocks_run: u64,
    /// Tokens scored per mask.
    pub tokens_per_mask: u64,
    /// Rows of the block statistics table, when written.
    pub block_stats_rows: Option<usize>,
    /// On CUDA, the GPU memory the run took.
    pub device_memory: Option<MemoryTaken>,
    /// The graphs' runs while evaluating them, and the host's time inside them: where the
    /// seconds went.
    pub graph_runs: RunTally,
    /// Whether `--cuda-graphs on` would pay: the host's launches set the run's pace
    /// ([`layerprune_runtime::RuntimeOptions::cuda_graphs_would_pay`]).
    pub cuda_graphs_would_pay: bool,
}

/// GPU memory in use (by every process) before the model was opened and after the masks ran:
/// the difference is what the run took (weights, every graph's arena, kept states; arenas
/// give memory back only when shrunk, so with `Arena::Keep` the second reading is close to
/// the run's peak).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryTaken {
    pub before: DeviceMemory,
    pub after: DeviceMemory,
}

impl MemoryTaken {
    pub fn taken_bytes(&self) -> usize {
        self.after.used_bytes.saturating_sub(self.before.used_bytes)
    }

    /// The summary's `device_memory` (MiB).
    fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "used_before_mib": mib(self.before.used_bytes as u64),
            "used_after_mib": mib(self.after.used_bytes as u64),
            "taken_mib": mib(self.taken_bytes() as u64),
            "total_mib": mib(self.after.total_bytes as u64),
        })
    }
}

/// The summary's `arena_use` (MiB): what the graphs' arenas hold after the masks ran.
fn arena_json(arenas: ArenaUse) -> serde_json::Value {
    serde_json::json!({
        "reserved_mib": mib(arenas.reserved_bytes),
        "largest_peak_mib": mib(arenas.largest_peak_bytes),
        "shrinks": arenas.shrinks,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// GPU memory in use on `device` now; `None` on the CPU (and where the CUDA runtime cannot say,
/// which the run itself would have failed on).
fn device_memory(device: Device) -> Option<DeviceMemory> {
    match device {
        Device::Cpu => None,
        Device::Cuda(index) => layerprune_runtime::device_memory(index).ok(),
    }
}

/// Evaluates the masks of `config` into its output table, resuming a partial one: the
/// output is rewritten every `checkpoint_every` masks (once writing it takes long, only after
/// ten times the last write's time: `pace::SavePace`), so a killed run started again loses at
/// most that work, and its rows are always in the mask list's order.
pub fn run_evaluation(
    config: &EvaluationConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<EvaluationOutcome> {
    let model_dir = &config.model;
    // A merge of shards checks them against the --masks table, which holds no inline mask:
    // such shards could never be joined (the shard protocol's rule, so a library caller gets
    // it too).
    if config.shard.is_some() && !config.masks.inline.is_empty() {
        bail!(
            "--shard splits the masks of a --masks table, which --merge joins by that table; \
             an inline --mask is in no table: run the inline masks unsharded (they are few), or \
             shard a mask table holding them"
        );
    }
    // Held until the run ends: a second run on this output would rewrite it without our rows.
    // Taken first, so that run is refused at once, before it opens the model (hashing a 7B
    // model's weights takes about 20 s, and on CUDA its sessions take GPU memory).
    let _lock = FileLock::try_acquire(&config.out)?;
    // Every input is read and checked against the model's manifest (read alone, a small file)
    // before the model is opened, for the same reason: a token or mask table that is missing,
    // unreadable or wrong, and an output that cannot be resumed, are refused at once.
    let tokens = read_tokens(&config.tokens)?;
    let given_masks = config.masks.read()?;
    let (manifest, model_id) = Manifest::load_with_id(model_dir)?;
    let num_blocks = manifest.num_blocks;
    let with_model = || crate::tokens_with_model(config.tokens.display(), model_dir);
    layerprune_runtime::check_tokens(
        &manifest,
        model_dir,
        &tokens.windows,
        &tokens.tokenizer_sha256,
    )
    .with_context(with_model)?;
    let evaluated_on = config
        .runtime
        .evaluated_on(&config.options.for_windows(&tokens.windows, &manifest));
    let MaskList {
        mut masks,
        fixed_blocks,
    } = given_masks.for_model(model_dir, num_blocks)?;
    if let Some(shard) = config.shard {
        masks = shard.select(masks);
    }
    let (mut rows, recorded_full_nll) = resume_rows(
        config,
        &model_id,
        &tokens.dataset_id,
        &evaluated_on,
        num_blocks,
        &fixed_blocks,
    )?;
    let memory_before = device_memory(config.runtime.device);
    let model = LayeredModel::open_as_read(model_dir, &config.runtime, &model_id)?;
    let mut evaluator =
        Evaluator::new(model, &tokens.windows, config.options.clone()).with_context(with_model)?;

    // The reference of the utility: the one the resumed rows were valued against (the run that
    // began the table measured the full model alone, as below; on CUDA that may differ in the
    // last digits from the full mask's row, measured among other masks).
    let full = Mask::full(num_blocks);
    let full_model_nll = match (recorded_full_nll, rows.iter().find(|r| r.mask == full)) {
        (Some(nll), _) => nll,
        (None, Some(row)) => row.nll,
        (None, None) => evaluator.evaluate(std::slice::from_ref(&full), &mut |_, _| {})?[0].nll(),
    };
    let mut provenance = config
        .provenance
        .clone()
        .with_game(&model_id, &tokens.dataset_id);
    if let Some(shard) = config.shard {
        // Which shard the rows are (a checkpoint is resumed only by the same shard).
        provenance = provenance.with_input(input_role::SHARD, &shard.to_string());
    }
    let mut table = EvaluationTable {
        num_blocks,
        model_id: model_id.clone(),
        dataset_id: tokens.dataset_id.clone(),
        fixed_blocks,
        full_model_nll: Some(full_model_nll),
        complete: false,
        evaluated_on: Some(evaluated_on.clone()),
        rows: Vec::new(),
        // Windows a race measured (a selection cache) are not `evaluate`'s: its rows are whole.
        partial_windows: Vec::new(),
    };

    let done: HashSet<Mask> = rows.iter().map(|r| r.mask.clone()).collect();
    let mut todo: Vec<Mask> = masks
        .iter()
        .filter(|m| !done.contains(*m))
        .cloned()
        .collect();
    let resumed = masks.len() - todo.len();
    let given: HashSet<&Mask> = masks.iter().collect();
    let others = rows.iter().filter(|r| !given.contains(&r.mask)).count();
    if let Some(limit) = config.max_new_masks {
        todo.truncate(limit);
    }
    // Checkpointed every few masks, each chunk one evaluator call: in prefix order the masks
    // of a chunk share prefixes (the table keeps its own order).
    sort_for_prefix_reuse(&mut todo);
    if resumed > 0 || others > 0 {
        progress(Progress::Resumed {
            resumed,
            total: masks.len(),
            others,
        });
    }
    if !todo.is_empty() && !matches!(config.runtime.device, Device::Cpu) {
        // Batched shapes' memory allocated before the clock starts (a GPU's arenas).
        evaluator.warm_up()?;
    }
    progress(Progress::Started { masks: todo.len() });
    let started = Instant::now();
    let blocks_before = evaluator.blocks_run();
    let tally_before = evaluator.model().run_tally();
    let mut done_before = 0;
    let mut pace = SavePace::default();
    // The table with `rows` in the mask list's order, written (a checkpoint, or the last).
    let checkpoint = |table: &mut EvaluationTable, rows: &[EvaluationRow]| {
        table.rows = ordered_rows(rows, &masks);
        write_evaluations(&config.out, table, &provenance)
    };
    for chunk in todo.chunks(config.checkpoint_every.get()) {
        let evaluated = evaluator.evaluate(chunk, &mut |done, _| {
            progress(Progress::Evaluated {
                done: done_before + done,
            });
        });
        let results = match evaluated {
            Ok(results) => results,
            Err(error) => {
                // What a skipped checkpoint held is kept; the run's error is the news.
                let _ = checkpoint(&mut table, &rows);
                return Err(error.into());
            }
        };
        for (mask, result) in chunk.iter().zip(results) {
            rows.push(evaluation_row(
                &evaluator,
                mask.clone(),
                &result,
                Some(full_model_nll),
            ));
        }
        done_before += chunk.len();
        pace.save_when_due(|| checkpoint(&mut table, &rows))?;
    }
    progress(Progress::Finished);
    let seconds = started.elapsed().as_secs_f64();

    table.complete = masks.iter().all(|m| rows.iter().any(|r| &r.mask == m));
    checkpoint(&mut table, &rows)?;
    let blocks_run = evaluator.blocks_run() - blocks_before;
    let graph_runs = evaluator.model().run_tally().since(&tally_before);
    let cuda_graphs_would_pay = config.runtime.cuda_graphs_would_pay(&graph_runs, seconds);
    let memory_taken = memory_before
        .zip(device_memory(config.runtime.device))
        .map(|(before, after)| MemoryTaken { before, after });
    if let Some(path) = &config.summary {
        let manifest = evaluator.model().manifest();
        let summary = serde_json::json!({
            "masks": todo.len(),
            "seconds": seconds,
            "masks_per_second": todo.len() as f64 / seconds,
            "blocks_run": blocks_run,
            "blocks_in_masks": todo.iter().map(Mask::num_kept).sum::<usize>(),
            "tokens_per_mask": evaluator.tokens_scored(),
            "windows": tokens.windows.len(),
            "seq_len": tokens.seq_len,
            "full_model_nll": full_model_nll,
            "num_blocks": num_blocks,
            "hidden_size": manifest.hidden_size,
            "vocab_size": manifest.vocab_size,
            "extra": manifest.extra,
            "device": config.runtime.device.to_string(),
            "io_binding": evaluator.model().io_binding(),
            "overlap": config.runtime.overlaps(),
            "cuda_graphs": evaluator.model().captures_blocks(),
            "tf32": config.runtime.tf32,
            "graph_optimization": config.runtime.graph_optimization.name(),
            "prefix_reuse": config.options.reuse_prefixes,
            "mask_batch": config.options.mask_batch,
            "device_memory": memory_taken.map(MemoryTaken::to_json),
            "arena": config.runtime.arena.name(),
            "arena_use": evaluator.model().arena_use().map(arena_json),
            "graph_runs": graph_runs_json(&graph_runs, seconds),
            "cuda_graphs_would_pay": cuda_graphs_would_pay,
        });
        layerprune_tables::atomic_write(path, |file| {
            serde_json::to_writer_pretty(&mut *file, &summary).map_err(Into::into)
        })?;
    }
    let block_stats_rows = match &config.block_stats {
        Some(output) => {
            let stats = block_stats_table(
                &mut evaluator,
                output.max_run,
                &model_id,
                &tokens.dataset_id,
            )?;
            write_block_stats(&output.path, &stats, &provenance)?;
            Some(stats.rows.len())
        }
        None => None,
    };
    let in_table: HashSet<&Mask> = table.rows.iter().map(|row| &row.mask).collect();
    let masks_in_table = masks.iter().filter(|mask| in_table.contains(mask)).count();
    Ok(EvaluationOutcome {
        masks_in_table,
        table,
        masks: masks.len(),
        evaluated: todo.len(),
        seconds,
        blocks_run,
        tokens_per_mask: evaluator.tokens_scored(),
        block_stats_rows,
        device_memory: memory_taken,
        graph_runs,
        cuda_graphs_would_pay,
    })
}

/// Each kind of graph's runs, host seconds and milliseconds a run, and the host's seconds
/// outside any run (tables, checkpoints, the evaluator's own work) of the `seconds` timed.
fn graph_runs_json(tally: &RunTally, seconds: f64) -> serde_json::Value {
    let mut kinds = serde_json::Map::new();
    for (kind, runs) in tally.by_kind() {
        kinds.insert(
            kind.to_string(),
            serde_json::json!({
                "runs": runs.runs,
                "host_seconds": runs.host_seconds,
                "ms_per_run": runs.ms_per_run(),
            }),
        );
    }
    kinds.insert(
        "outside_runs_seconds".to_string(),
        serde_json::json!((seconds - tally.host_seconds()).max(0.0)),
    );
    serde_json::Value::Object(kinds)
}

/// The stages whose `--cache` is an evaluation table of a selection's masks
/// ([`crate::CachedLlm`]), recorded as the table's tool: the names their binaries write
/// (one constant each, so that renaming a stage cannot silently turn this check off).
const SELECTION_STAGES: [&str; 2] = [crate::prune::STAGE, crate::frontier::STAGE];

/// The rows already in the output from an earlier run of the same model and dataset, which
/// this run extends with the masks it lacks, and the full model's NLL their utilities were
/// computed with. A table of another model, dataset or device, of another shard, a selection's
/// cache, or one whose rows were evaluated with other blocks fixed than this run's masks fix,
/// is refused, or with `overwrite` replaced.
fn resume_rows(
    config: &EvaluationConfig,
    model_id: &str,
    dataset_id: &str,
    evaluated_on: &str,
    num_blocks: usize,
    fixed_blocks: &[usize],
) -> Result<(Vec<EvaluationRow>, Option<f64>)> {
    let resumed = resume_evaluations(&config.out, num_blocks, model_id, dataset_id, evaluated_on)
        .and_then(|table| {
            // The table records one set of fixed blocks for all its rows (the blocks that are
            // not players later): rows of two mask tables that fix different blocks do not mix.
            if !table.rows.is_empty() && table.fixed_blocks != fixed_blocks {
                return Err(TableError::new(
                    &config.out,
                    TableErrorKind::NotResumable,
                    format!(
                        "cannot resume: its rows were evaluated with blocks {:?} fixed, this \
                         run's masks fix {fixed_blocks:?}",
                        table.fixed_blocks
                    ),
                ));
            }
            Ok(table)
        });
    let resumed = resumed.and_then(|table| {
        // A selection's cache (apply-prune or frontier --cache) holds the masks a method asked
        // for, some measured on part of the windows, and is marked incomplete so that no
        // estimator takes it for a sample: evaluate would drop those windows and mark it
        // complete.
        if !table.rows.is_empty() || !table.partial_windows.is_empty() {
            let tool = writer_of_resumed(&config.out)?.tool;
            if !table.partial_windows.is_empty() || SELECTION_STAGES.contains(&tool.as_str()) {
                return Err(TableError::new(
                    &config.out,
                    TableErrorKind::NotResumable,
                    format!(
                        "cannot resume: it is {tool}'s cache of LLM evaluations (the masks a \
                         selection measured, some on part of the windows), not a table \
                         evaluate writes"
                    ),
                ));
            }
        }
        Ok(table)
    });
    let resumed = resumed.and_then(|table| {
        // A shard resumes only rows of masks it owns: those of another shard (a run with another
        // shard count, an unsharded run's table) would be written as this shard's, complete.
        let Some(shard) = config.shard else {
            return Ok(table);
        };
        match table.rows.iter().find(|row| !shard.owns(&row.mask)) {
            Some(row) => {
                let recorded = writer_of_resumed(&config.out)?
                    .inputs
                    .remove(input_role::SHARD);
                Err(TableError::new(
                    &config.out,
                    TableErrorKind::NotResumable,
                    format!(
                        "cannot resume: mask {} is not shard {shard}'s (the table is {})",
                        row.mask,
                        recorded.map_or("not a shard's".to_string(), |r| format!("shard {r}'s"))
                    ),
                ))
            }
            None => Ok(table),
        }
    });
    match resumed {
        Ok(table) => Ok((table.rows, table.full_model_nll)),
        Err(_) if config.overwrite => Ok((Vec::new(), None)),
        // A checkpoint damaged outside the stage (a copy cut short) is to be removed, the way
        // out a pipeline's rule can take, where it cannot add --overwrite or change --out;
        // another run's table is kept unless --overwrite.
        Err(error) => {
            let file = format!("--out {}", config.out.display());
            let otherwise = "choose another --out";
            let context = resume_refusal(Some(&error), &file, otherwise, || {
                replace_with_overwrite(&file, otherwise)
            });
            Err(error).context(context)
        }
    }
}

/// The tool that wrote the evaluation table `path` (its provenance), read to tell a table
/// `evaluate` writes from a selection's cache. The table has been read whole by then: where it
/// records no provenance (written by another tool or an older build), it is not one this run
/// can resume, and is kept (not called damaged, which would advise removing its rows).
fn writer_of_resumed(path: &Path) -> Result<Provenance, TableError> {
    read_provenance(path).map_err(|error| match error.kind {
        TableErrorKind::Missing | TableErrorKind::BadValue | TableErrorKind::WrongType => {
            TableError::new(
                path,
                TableErrorKind::NotResumable,
                format!(
                    "cannot resume: it does not record which run wrote it, as every table \
                     evaluate writes does ({})",
                    error.message
                ),
            )
        }
        _ => error,
    })
}

/// A mask's row of an evaluation table from its result on `evaluator`, its windows' NLLs
/// included. Before the full model is known (its own row) the utility is 1.
pub(crate) fn evaluation_row(
    evaluator: &Evaluator,
    mask: Mask,
    result: &MaskEvaluation,
    full_model_nll: Option<f64>,
) -> EvaluationRow {
    let nll = result.nll();
    EvaluationRow {
        mask,
        nll,
        ppl: nll.exp(),
        utility: full_model_nll.map_or(1.0, |full| {
            layerprune_core::GameValue::Utility.value(nll, full)
        }),
        tokens_scored: result.tokens_scored,
        seconds: result.seconds,
        window_nlls: Some(evaluator.window_nlls(result)),
    }
}

/// The block statistics (ShortGPT's cosine, angular distance) of every run of 1..=`max_run`
/// consecutive blocks of the full model on the evaluator's windows, as a table: one forward
/// pass of the full model.
pub fn block_stats_table(
    evaluator: &mut Evaluator,
    max_run: usize,
    model_id: &str,
    dataset_id: &str,
) -> Result<BlockStatsTable> {
    let stats = layerprune_runtime::block_statistics(evaluator, max_run)?;
    Ok(BlockStatsTable {
        num_blocks: evaluator.num_blocks(),
        model_id: model_id.to_string(),
        dataset_id: dataset_id.to_string(),
        rows: stats
            .iter()
            .map(|s| layerprune_tables::BlockStatRow {
                start_block: s.start_block as u32,
                run_length: s.run_length as u32,
                mean_cosine: s.mean_cosine,
                angular_distance: s.angular_distance,
            })
            .collect(),
    })
}

/// A merge of finished shard tables into one.
#[derive(Clone, Debug)]
pub struct MergeConfig {
    /// The mask table the shards were sharded from: fixes the rows and their order.
    pub masks: PathBuf,
    /// Finished shard tables.
    pub shards: Vec<PathBuf>,
    pub out: PathBuf,
    /// Replace an evaluation table at `out` of another model, dataset or device (as a run
    /// over the windows does); without it such a table is refused.
    pub overwrite: bool,
    /// Tool, version and command line recorded in the output; the merge adds its inputs.
    pub provenance: Provenance,
}

/// Joins shard tables into one table in the mask table's order, refusing an unfinished
/// shard, shards of another model, dataset, version or fixed blocks, a mask in two shards and
/// a mask in none. Writes nothing when refusing; returns the table written.
pub fn merge_evaluations(config: &MergeConfig) -> Result<EvaluationTable> {
    let masks_path = &config.masks;
    let first_path = |shards: &[PathBuf]| shards[0].display().to_string();
    let wanted = read_masks(masks_path)?;
    let mut merged: Option<EvaluationTable> = None;
    let mut version: Option<String> = None;
    // The device and arithmetic the shards were measured with, and the first shard recording it.
    let mut evaluated_on: Option<(String, PathBuf)> = None;
    let mut rows: Vec<EvaluationRow> = Vec::new();
    // Which shard each row came from, to name both files of a mask in two shards.
    let mut row_shard: Vec<usize> = Vec::new();
    for (index, path) in config.shards.iter().enumerate() {
        let shard = read_evaluations(path)?;
        let shard_provenance = read_provenance(path)?;
        // A selection's cache is incomplete by design: not "run it again" but not a shard.
        if SELECTION_STAGES.contains(&shard_provenance.tool.as_str())
            || !shard.partial_windows.is_empty()
        {
            bail!(
                "{}: is {}'s cache of LLM evaluations (the masks a selection measured), not a \
                 shard of evaluate --shard",
                path.display(),
                shard_provenance.tool
            );
        }
        let shard_version = shard_provenance.version;
        // The players of the game: a shard's rows are of the mask table's fixed blocks (a
        // resumed run refuses others alike).
        if shard.fixed_blocks != wanted.fixed_blocks {
            bail!(
                "{}: its game fixes blocks {:?}, but {} fixes {:?} (shards of another mask \
                 table?)",
                path.display(),
                shard.fixed_blocks,
                masks_path.display(),
                wanted.fixed_blocks
            );
        }
        if !shard.complete {
            bail!(
                "{}: shard is incomplete; finish it (run it again) before merging",
                path.display()
            );
        }
        // Every shard that records it measured alike (one from before the entry, none).
        if let Some(shard_on) = &shard.evaluated_on {
            match &evaluated_on {
                Some((first_on, first_shard)) if first_on != shard_on => bail!(
                    "{}: measured on {shard_on}, {} on {first_on}: their NLLs differ in the \
                     last digits; measure every shard on one kind of device, alike",
                    path.display(),
                    first_shard.display()
                ),
                Some(_) => {}
                None => evaluated_on = Some((shard_on.clone(), path.clone())),
            }
        }
        if let Some(first) = &merged {
            if (
                first.model_id.as_str(),
                first.dataset_id.as_str(),
                first.num_blocks,
            ) != (
                shard.model_id.as_str(),
                shard.dataset_id.as_str(),
                shard.num_blocks,
            ) {
                bail!(
                    "{}: computed with model {} and dataset {}, unlike {} (model {}, dataset {})",
                    path.display(),
                    shard.model_id,
                    shard.dataset_id,
                    first_path(&config.shards),
                    first.model_id,
                    first.dataset_id
                );
            }
            if version.as_deref() != Some(shard_version.as_str()) {
                bail!(
                    "{}: written by evaluate {shard_version}, {} by evaluate {}",
                    path.display(),
                    first_path(&config.shards),
                    version.unwrap_or_default()
                );
            }
        } else {
            version = Some(shard_version);
            merged = Some(EvaluationTable {
                rows: Vec::new(),
                ..shard.clone()
            });
        }
        row_shard.extend(std::iter::repeat_n(index, shard.rows.len()));
        rows.extend(shard.rows);
    }
    let Some(mut table) = merged else {
        bail!("--merge needs at least one shard");
    };
    table.evaluated_on = evaluated_on.map(|(on, _)| on);
    if wanted.num_blocks != table.num_blocks {
        bail!(
            "{}: masks of {} blocks, shards of {}",
            masks_path.display(),
            wanted.num_blocks,
            table.num_blocks
        );
    }
    let mut seen: HashMap<Mask, usize> = HashMap::new();
    for (row, &shard) in rows.iter().zip(&row_shard) {
        if let Some(first) = seen.insert(row.mask.clone(), shard) {
            bail!(
                "mask {} is in more than one shard: {} and {}",
                row.mask,
                config.shards[first].display(),
                config.shards[shard].display()
            );
        }
    }
    let masks: Vec<Mask> = wanted.rows.into_iter().map(|r| r.mask).collect();
    if let Some(missing) = masks.iter().find(|m| !seen.contains_key(*m)) {
        bail!(
            "mask {missing} of {} is in no shard (is a shard missing?)",
            masks_path.display()
        );
    }
    // A row of a mask the table lacks: the shards were made from another mask table, and the
    // merge would write rows the table does not ask for.
    let wanted_masks: HashSet<&Mask> = masks.iter().collect();
    if let Some((row, &shard)) = rows
        .iter()
        .zip(&row_shard)
        .find(|(row, _)| !wanted_masks.contains(&row.mask))
    {
        bail!(
            "mask {} of {} is not in {} (shards of another mask table?)",
            row.mask,
            config.shards[shard].display(),
            masks_path.display()
        );
    }
    table.rows = ordered_rows(&rows, &masks);
    table.fixed_blocks = wanted.fixed_blocks;
    table.complete = true;
    refuse_another_game(config, &table)?;
    let mut provenance = config
        .provenance
        .clone()
        .with_game(&table.model_id, &table.dataset_id);
    for (i, path) in config.shards.iter().enumerate() {
        provenance =
            provenance.with_input(&input_role::merged_shard(i), &path.display().to_string());
    }
    write_evaluations(&config.out, &table, &provenance)?;
    Ok(table)
}

/// An evaluation table already at the merge's `--out` is replaced when it is of the same
/// game (model, dataset, device: an earlier merge, or the shards' own run), and otherwise only
/// with `--overwrite`, as a run over the windows refuses it: the hours of another model's
/// evaluations, or a selection's cache, are not replaced by a slip of the path.
fn refuse_another_game(config: &MergeConfig, merged: &EvaluationTable) -> Result<()> {
    if config.overwrite || !config.out.exists() {
        return Ok(());
    }
    let problem =
        match read_evaluations(&config.out) {
            Ok(there)
                if there.model_id == merged.model_id
                    && there.dataset_id == merged.dataset_id
                    && there.evaluated_on == merged.evaluated_on =>
            {
                // A selection's cache of this game holds masks no shard has (and windows of
                // masks measured in part): as a run refuses to resume it, a merge does not
                // replace it.
                let tool = writer_of_resumed(&config.out)?.tool;
                if there.partial_windows.is_empty() && !SELECTION_STAGES.contains(&tool.as_str()) {
                    return Ok(());
                }
                format!(
                    "is {tool}'s cache of LLM evaluations (the masks a selection measured), not a \
                     table evaluate writes"
                )
            }
            Ok(there) => format!(
            "holds the evaluations of another game (model {}, dataset {}, {}) than the shards' \
             (model {}, dataset {}, {})",
            there.model_id,
            there.dataset_id,
            there.evaluated_on.as_deref().unwrap_or("device not recorded"),
            merged.model_id,
            merged.dataset_id,
            merged.evaluated_on.as_deref().unwrap_or("device not recorded"),
        ),
            Err(error) => format!("cannot be read as an evaluation table ({error})"),
        };
    bail!(
        "--out {}: {problem}; pass --overwrite to replace it, or choose another --out",
        config.out.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a run took is the rise in memory in use, never negative (another process may have
    /// let memory go meanwhile), and the summary gives it in MiB.
    #[test]
    fn memory_taken_is_the_rise_in_use_and_never_negative() {
        let reading = |used_bytes: usize| DeviceMemory {
            used_bytes,
            total_bytes: 8 << 30,
        };
        let taken = MemoryTaken {
            before: reading(1 << 30),
            after: reading(3 << 30),
        };
        assert_eq!(taken.taken_bytes(), 2 << 30);
        let json = taken.to_json();
        assert_eq!(json["taken_mib"], 2048.0);
        assert_eq!(json["used_before_mib"], 1024.0);
        assert_eq!(json["total_mib"], 8192.0);
        let fell = MemoryTaken {
            before: reading(3 << 30),
            after: reading(1 << 30),
        };
        assert_eq!(fell.taken_bytes(), 0);
    }
}
