//! What `evaluate` prints: progress on stderr (log lines, and a bar when stderr is a
//! terminal) and the tables it wrote (on stdout).

use std::fmt::Write;
use std::io::IsTerminal;
use std::path::Path;

use anyhow::Result;
use layerprune_cli_common::print_summary;

use layerprune_core::{Mask, Tenths};
use layerprune_evaluation::{EvaluationOutcome, Progress};
use layerprune_tables::{EvaluationTable, TaskAccuracyTable};
use layerprune_tasks::Task;

/// Prints a run's progress: log lines on stderr and a progress bar when stderr is a terminal;
/// otherwise (a log file, a workflow engine) an `info` line at every tenth of the masks.
/// `--quiet` shows neither.
pub struct Reporter<'a> {
    quiet: bool,
    /// The file a run resumes from, and the task list as given.
    resumed: &'a Path,
    task_list: &'a str,
    bar: indicatif::ProgressBar,
    /// Masks to evaluate in this run, and the tenths of them logged (no bar).
    total: usize,
    tenths: Tenths,
}

impl<'a> Reporter<'a> {
    pub fn new(quiet: bool, resumed: &'a Path, task_list: &'a str) -> Self {
        let bar = indicatif::ProgressBar::hidden();
        Reporter {
            quiet,
            resumed,
            task_list,
            bar,
            total: 0,
            tenths: Tenths::default(),
        }
    }

    pub fn report(&mut self, progress: Progress) {
        let resumed = self.resumed.display();
        match progress {
            Progress::Resumed {
                resumed: n,
                total,
                others,
            } => {
                tracing::info!("resuming {resumed}: {n} of {total} masks already evaluated");
                if others > 0 {
                    // Fit and estimate stages read the whole table: say it holds more.
                    tracing::info!(
                        "{resumed}: keeps {others} rows of masks not asked for now (an \
                         earlier run's); the table is the union"
                    );
                }
            }
            Progress::TasksResumed { finished, partly } => tracing::info!(
                "resuming {resumed}: {finished} masks already scored, {partly} with some of \
                 their tasks"
            ),
            Progress::TaskWork {
                questions,
                choices,
                batches,
                padded_tokens,
                scoring,
                masks,
            } => tracing::info!(
                "{questions} questions, {choices} choices, {batches} batches, {padded_tokens} \
                 padded tokens per mask, scoring {scoring}; {masks} masks to score ({})",
                self.task_list
            ),
            Progress::Started { masks } => {
                self.total = masks;
                self.tenths = Tenths::new(masks);
                self.bar = progress_bar(masks, self.quiet);
            }
            Progress::Evaluated { done } => {
                self.bar.set_position(done as u64);
                self.log_progress(done);
            }
            Progress::Finished => self.bar.finish_and_clear(),
        }
    }

    /// Without a bar, a line each time another tenth of the masks is done.
    fn log_progress(&mut self, done: usize) {
        if self.quiet || self.total == 0 || !self.bar.is_hidden() {
            return;
        }
        if self.tenths.reached(done) {
            tracing::info!("evaluated {done} of {} masks", self.total);
        } else {
            tracing::debug!("evaluated {done} of {} masks", self.total);
        }
    }
}

/// A bar on stderr only when stderr is a terminal: a redirected stderr gets log lines instead.
fn progress_bar(total: usize, quiet: bool) -> indicatif::ProgressBar {
    if quiet || total == 0 || !std::io::stderr().is_terminal() {
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

/// What a perplexity run did (on stderr) and its table (on stdout).
pub fn print_evaluation(
    outcome: &EvaluationOutcome,
    out: &Path,
    block_stats: Option<&Path>,
) -> Result<()> {
    let (n, seconds) = (outcome.evaluated, outcome.seconds);
    if n > 0 {
        let memory = outcome.device_memory.map_or(String::new(), |memory| {
            format!(
                "; {:.1} GiB of the GPU's memory taken",
                memory.taken_bytes() as f64 / (1u64 << 30) as f64
            )
        });
        tracing::info!(
            "evaluated {n} masks in {seconds:.2} s ({:.3} masks/s, {} blocks run after the full \
             model's reference pass, {} tokens each){memory}",
            n as f64 / seconds,
            outcome.blocks_run,
            outcome.tokens_per_mask
        );
        // Where the seconds went: on a GPU with --overlap, block runs return once queued, so
        // their host time is launching, and the device's backlog shows in the head's.
        let runs: Vec<String> = outcome
            .graph_runs
            .by_kind()
            .iter()
            .filter(|(_, runs)| runs.runs > 0)
            .map(|(kind, runs)| {
                format!(
                    "{kind} {} runs, {:.2} s ({:.3} ms each)",
                    runs.runs,
                    runs.host_seconds,
                    runs.ms_per_run()
                )
            })
            .collect();
        tracing::info!(
            "host time inside graph runs: {}; outside them {:.2} s",
            runs.join(", "),
            (seconds - outcome.graph_runs.host_seconds()).max(0.0)
        );
        if outcome.cuda_graphs_would_pay {
            tracing::info!(
                "the host's kernel launches set the pace (the blocks' runs, which return once \
                 queued, held {:.0} % of the time): --cuda-graphs on replays each block as one \
                 CUDA graph (1.56-1.87x on a 135M model on an H100, docs/benchmarks.md §5)",
                100.0 * outcome.graph_runs.blocks.host_seconds / seconds
            );
        }
    }
    if !outcome.table.complete {
        tracing::warn!(
            "{}: {} of {} masks evaluated; run again to resume",
            out.display(),
            outcome.masks_in_table,
            outcome.masks
        );
    }
    if let (Some(path), Some(rows)) = (block_stats, outcome.block_stats_rows) {
        tracing::info!("wrote {} ({rows} rows)", path.display());
    }
    print_summary(&evaluation_table(&outcome.table)?)
}

/// The evaluation table as printed: a mask per line (the first 40).
fn evaluation_table(table: &EvaluationTable) -> Result<String, std::fmt::Error> {
    const SHOWN: usize = 40;
    let mut text = String::new();
    writeln!(
        text,
        "{:<4} {:>7} {:>9} {:>10} {:>8}  removed blocks",
        "#", "removed", "nll", "ppl", "utility"
    )?;
    for (i, row) in table.rows.iter().take(SHOWN).enumerate() {
        writeln!(
            text,
            "{:<4} {:>7} {:>9.5} {:>10.3} {:>8.4}  {}",
            i,
            row.mask.num_removed(),
            row.nll,
            row.ppl,
            row.utility,
            removed_text(&row.mask)
        )?;
    }
    if table.rows.len() > SHOWN {
        writeln!(text, "... {} more rows", table.rows.len() - SHOWN)?;
    }
    Ok(text)
}

/// Prints the accuracy table, a mask per line (the first 40): acc / acc_norm of each task,
/// in %.
pub fn print_accuracies(tasks: &[Task], table: &TaskAccuracyTable) -> Result<()> {
    print_summary(&accuracy_table(tasks, table)?)
}

fn accuracy_table(tasks: &[Task], table: &TaskAccuracyTable) -> Result<String, std::fmt::Error> {
    const SHOWN: usize = 40;
    let mut names: Vec<&str> = tasks.iter().map(|t| t.name()).collect();
    names.push("mean");
    let mut text = String::new();
    write!(text, "{:<4} {:>7}", "#", "removed")?;
    for name in &names {
        write!(text, " {:>13}", name)?;
    }
    writeln!(text, "  removed blocks  (acc / acc_norm, %)")?;
    let mut masks: Vec<&Mask> = Vec::new();
    for row in &table.rows {
        if !masks.contains(&&row.mask) {
            masks.push(&row.mask);
        }
    }
    for (i, mask) in masks.iter().take(SHOWN).enumerate() {
        write!(text, "{:<4} {:>7}", i, mask.num_removed())?;
        for name in &names {
            match table
                .rows
                .iter()
                .find(|r| &r.mask == *mask && r.task == *name)
            {
                Some(r) => write!(text, " {:>6.1}/{:>6.1}", 100.0 * r.acc, 100.0 * r.acc_norm)?,
                None => write!(text, " {:>13}", "-")?,
            }
        }
        writeln!(text, "  {}", removed_text(mask))?;
    }
    if masks.len() > SHOWN {
        writeln!(text, "... {} more masks", masks.len() - SHOWN)?;
    }
    Ok(text)
}

/// A mask's removed blocks as the printed tables name it: `5,14,15`, `-` for the full model.
fn removed_text(mask: &Mask) -> String {
    let removed = mask.removed_blocks();
    if removed.is_empty() {
        return "-".to_string();
    }
    removed
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
