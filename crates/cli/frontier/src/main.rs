//! `frontier`: the quality-vs-budget frontier of the selection methods that measure on the LLM
//! (and the one-pass baselines, and Shapley values through a quadratic surrogate).
//!
//! For each calibration set, every method (`layerprune_selection::frontier`) plays the model on
//! those tokens through one cache of evaluations (`cache-calibration-NAME.parquet` in
//! `--out-dir`), each charged for the distinct masks it asked for; then every distinct plan is
//! measured on each held-out token table (its own cache), which no method saw. Writes
//! `frontier.csv`, one row per (method, k, calibration set, budget). Killed and restarted with
//! the same arguments, it runs only the masks its caches do not have. The run is
//! `layerprune_evaluation::frontier`; this binary checks its outputs and prints its report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use layerprune_cli_common::{
    check_folder_outside_inputs, command_line, count, run_stopping_between_batches, Io,
    RuntimeFlags,
};
use layerprune_evaluation::frontier::{
    self, check_set_name, FrontierAsked, FrontierRun, CSV_HEADER_START,
};
use layerprune_evaluation::MeasuredOtherwise;
use layerprune_selection::frontier::{Budget, FrontierMethod};
use layerprune_tables::Provenance;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "The selection methods' plans against the LLM evaluations they used, measured on held-out text (--methods lists them)",
    after_help = "Examples:\n  frontier --model model/ --calibration c0=calib-0.parquet --calibration c1=calib-1.parquet \\\n    --heldout wikitext2=wt2.parquet --k 3,6,9 --budgets least,0.25sleb,0.5sleb,sleb,2000 --out-dir runs/frontier"
)]
struct Args {
    /// Layered model folder (manifest.json + graphs), the model every method plays.
    #[arg(long)]
    model: PathBuf,
    // The token tables keep their roles' names (not --tokens): a run takes two kinds of them,
    // each a list of named sets, where evaluate and apply-prune take one table.
    /// A calibration token table, on which the methods choose their plans (prepare-tokens; the
    /// --tokens of evaluate and apply-prune when choosing), as NAME=PATH: NAME labels its rows
    /// (frontier.csv's `calibration_set`, their `calibration_ppl`) and its cache
    /// (cache-calibration-NAME.parquet). Repeat for several sets.
    #[arg(long, required = true, value_name = "NAME=PATH", value_parser = |text: &str| named(text, "--calibration"))]
    calibration: Vec<(String, PathBuf)>,
    /// A held-out token table, which no method sees and on which every plan is measured
    /// (prepare-tokens; the --tokens of `apply-prune --method from-plan`), as NAME=PATH: NAME
    /// labels its column of frontier.csv, `NAME_ppl`, and its cache
    /// (cache-heldout-NAME.parquet). Repeat for several.
    #[arg(long, value_name = "NAME=PATH", value_parser = |text: &str| named(text, "--heldout"))]
    heldout: Vec<(String, PathBuf)>,
    /// Numbers of blocks to remove (1 or more).
    #[arg(long, value_delimiter = ',', default_value = "3,6,9", value_parser = count(1, layerprune_core::MAX_BLOCKS as u64))]
    k: Vec<usize>,
    /// Blocks never removed (e.g. 0), comma separated: no method removes them, and they are
    /// not players of the Shapley method's game (as `sample-masks --fixed`).
    #[arg(long, value_delimiter = ',')]
    fixed: Vec<usize>,
    /// The methods to play: block-influence, angular, reverse, leave-one-out, sleb, sleb-raced
    /// (SLEB raced over the calibration windows, `apply-prune --race-se 3`), surrogate-shapley
    /// (the quadratic surrogate's exact Shapley values), adaptive, adaptive-raced
    /// (`apply-prune --method adaptive --race-se 3`, at every budget) (default: all; with
    /// `--shapley-masks 0`, all but surrogate-shapley).
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<FrontierMethod>>,
    /// Budgets of adaptive removal (raced or not): `least`, `sleb` (SLEB's cost at the same k),
    /// `0.5sleb`, or a number of LLM evaluations.
    /// [default: least,0.25sleb,0.5sleb,sleb,2000]
    #[arg(long, value_delimiter = ',')]
    budgets: Option<Vec<Budget>>,
    /// The quadratic-surrogate Shapley method on this many stratified masks (what
    /// `sample-masks --stratified-masks` counts; plus the full model and the single removals;
    /// 0 = not run). 200 is `make demo`'s budget. [default: 200]
    #[arg(long, value_parser = count(0, 1_000_000))]
    shapley_masks: Option<usize>,
    /// Seeds the Shapley method's masks [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Folder for the caches and frontier.csv.
    #[arg(long)]
    out_dir: PathBuf,
    /// A cache in --out-dir whose rows were measured on another device or arithmetic
    /// (`evaluated_on`: another kind of device, --tf32, --graph-optimization, on CUDA the batch
    /// shapes) is started again, with a warning, its file replaced once something was measured
    /// (refused by default). For pipelines, which then keep the old measurements through a
    /// device request that fails.
    #[arg(long)]
    replace_cache_measured_otherwise: bool,
    #[command(flatten)]
    runtime: RuntimeFlags,
    /// Skip checking the model files' sha256 against the manifest.
    #[arg(long)]
    no_verify: bool,
}

/// What a run stopped by a signal says: the caches in --out-dir keep what was measured.
const RESUME_ADVICE: &str = "run the same command again to go on: the caches in --out-dir \
                             keep what was measured";

fn main() -> ExitCode {
    run_stopping_between_batches(RESUME_ADVICE, || main_body(Args::parse()))
}

/// NAME=PATH, checked as the flag is parsed (a usage error, exit 2, as any malformed value).
fn named(text: &str, flag: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = text.split_once('=').ok_or_else(|| {
        // The example of the flag's own kind of table (the help's): a held-out text is not a
        // calibration set.
        let example = if flag == "--heldout" {
            "wikitext2=wt2.parquet"
        } else {
            "c0=tokens-calib.parquet"
        };
        format!(
            "{flag} {text:?}: expected NAME=PATH, a name for the set and its token table \
                 (e.g. {flag} {example}; the name labels its rows or column in frontier.csv)"
        )
    })?;
    check_set_name(name).map_err(|problem| format!("{flag} {text:?}: {problem}"))?;
    Ok((name.to_string(), PathBuf::from(path)))
}

fn main_body(args: Args) -> Result<()> {
    args.runtime.device.set_thread_budget();
    args.runtime.check()?;
    let settings = FrontierAsked {
        methods: args.methods.clone(),
        budgets: args.budgets.clone(),
        shapley_masks: args.shapley_masks,
        seed: args.seed,
    }
    .resolve()?;
    let run = FrontierRun {
        model: args.model.clone(),
        calibration: args.calibration.clone(),
        heldout: args.heldout.clone(),
        ks: args.k.clone(),
        fixed: args.fixed.clone(),
        methods: settings.methods,
        budgets: settings.budgets,
        shapley_masks: settings.shapley_masks,
        seed: settings.seed,
        out_dir: args.out_dir.clone(),
        cache_measured_otherwise: MeasuredOtherwise::replace_if(
            args.replace_cache_measured_otherwise,
        ),
        runtime: args.runtime.runtime_options(!args.no_verify),
        evaluation: args.runtime.eval_options()?,
        provenance: Provenance::new(frontier::STAGE, env!("CARGO_PKG_VERSION"), command_line())
            .with_seed(settings.seed),
    };
    let prepared = run.prepare()?;
    // Before any work (only the token tables are read): the folder exists (made here) and
    // can be written, and neither frontier.csv nor a cache replaces an input or a special file.
    let input_paths: Vec<&Path> = prepared.inputs.iter().map(PathBuf::as_path).collect();
    check_folder_outside_inputs("--out-dir", &args.out_dir, &input_paths)?;
    let created = !args.out_dir.exists();
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("--out-dir {}: cannot create it", args.out_dir.display()))?;
    // The caches (evaluation tables) are locked by the library, which waits where another
    // run holds one; frontier.csv and its partial copy are locked here.
    let result = prepared
        .outputs()?
        .into_iter()
        .fold(
            Io::new().inputs(&prepared.inputs),
            |io, (path, kind)| match kind {
                Some(kind) => io
                    .output_table("--out-dir", &path, kind)
                    .locked_by_stage(path),
                None => io.output_csv("--out-dir", path, CSV_HEADER_START),
            },
        )
        .check()
        .and_then(|_outputs| prepared.run(&mut |line| tracing::info!("{line}")));
    if result.is_err() && created {
        // A run refused before it wrote anything (what `run` checks against the model first,
        // a model that fails its hash check, CUDA asked for and missing) leaves no empty folder
        // behind; remove_dir keeps a non-empty one.
        let _ = std::fs::remove_dir(&args.out_dir);
    }
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::named;

    #[test]
    fn a_missing_name_is_shown_an_example_of_the_flags_own_table() {
        let calibration = named("calib-0.parquet", "--calibration").unwrap_err();
        assert!(
            calibration
                .to_string()
                .contains("e.g. --calibration c0=tokens-calib.parquet;"),
            "{calibration}"
        );
        let heldout = named("wt2.parquet", "--heldout").unwrap_err();
        assert!(
            heldout
                .to_string()
                .contains("e.g. --heldout wikitext2=wt2.parquet;"),
            "{heldout}"
        );
        assert_eq!(
            named("c0=a=b.parquet", "--calibration").unwrap(),
            ("c0".to_string(), std::path::PathBuf::from("a=b.parquet"))
        );
    }
}
