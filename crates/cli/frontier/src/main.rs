//! `frontier`: the quality-vs-budget frontier of every selection method.
//!
//! For each calibration set, every method (`layerprune_selection::frontier`) plays the model on
//! those tokens through one cache of evaluations (`--out-dir`/calibration-NAME.parquet), each
//! charged for the distinct masks it asked for; then every distinct plan is measured on each
//! held-out token table (its own cache), which no method saw. Writes `frontier.csv`, one row
//! per (method, k, calibration set, budget). Killed and restarted with the same arguments, it
//! runs only the masks its caches do not have.

mod cache;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use layerprune_cli_common::{
    check_folder_outside_inputs, command_line, count, run, DeviceArgs, Io,
};
use layerprune_core::{Game, Mask};
use layerprune_evaluation::block_stats_table;
use layerprune_runtime::{LayeredModel, RuntimeOptions};
use layerprune_selection::frontier::{
    frontier, Budget, FrontierConfig, FrontierPoint, RECOMMENDED,
};
use layerprune_selection::{angular_distance_scores, block_influence_scores, BlockScores};
use layerprune_tables::{read_tokens, Provenance, TokenTable};

use cache::CachedLlm;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Every selection method's plan against the LLM evaluations it used, measured on held-out text",
    after_help = "EXAMPLES:\n  frontier --model M --calibration c0=calib-0.parquet --calibration c1=calib-1.parquet \\\n    --heldout wikitext2=wt2.parquet --k 3,6,9 --budgets least,0.5sleb,sleb,2000 --out-dir runs/frontier"
)]
struct Args {
    /// Layered model folder.
    #[arg(long)]
    model: PathBuf,
    /// A calibration token table, NAME=PATH (repeat for several sets).
    #[arg(long, required = true)]
    calibration: Vec<String>,
    /// A held-out token table, NAME=PATH (repeat); the CSV gets a NAME_ppl column for each.
    #[arg(long)]
    heldout: Vec<String>,
    /// Numbers of blocks to remove.
    #[arg(long, value_delimiter = ',', default_value = "3,6,9", value_parser = count(0, 4096))]
    k: Vec<usize>,
    /// Blocks never removed.
    #[arg(long, value_delimiter = ',')]
    fixed: Vec<usize>,
    /// Budgets of the adaptive method: `least`, `sleb` (SLEB's cost at the same k), `0.5sleb`,
    /// or a number of LLM evaluations.
    #[arg(long, value_delimiter = ',', default_value = "least,0.5sleb,sleb,2000")]
    budgets: Vec<Budget>,
    /// The quadratic-surrogate Shapley method on this many stratified masks (plus the full
    /// model and the single removals; 0 = not run). 200 is `make demo`'s budget.
    #[arg(long, default_value_t = 200, value_parser = count(0, 1_000_000))]
    shapley_masks: usize,
    /// Seeds the Shapley method's masks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder for the caches and frontier.csv.
    #[arg(long)]
    out_dir: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
    /// Skip checking the model files' sha256 against the manifest.
    #[arg(long)]
    no_verify: bool,
}

fn main() -> ExitCode {
    run(|| main_body(Args::parse()))
}

/// NAME=PATH.
fn named(text: &str, flag: &str) -> Result<(String, PathBuf)> {
    let (name, path) = text
        .split_once('=')
        .with_context(|| format!("{flag} {text:?}: expected NAME=PATH"))?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("{flag} {text:?}: the name must be letters, digits, '-' or '_'");
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

fn main_body(args: Args) -> Result<()> {
    let calibration: Vec<(String, PathBuf)> = args
        .calibration
        .iter()
        .map(|c| named(c, "--calibration"))
        .collect::<Result<_>>()?;
    let heldout: Vec<(String, PathBuf)> = args
        .heldout
        .iter()
        .map(|c| named(c, "--heldout"))
        .collect::<Result<_>>()?;
    let inputs: Vec<PathBuf> = calibration
        .iter()
        .chain(&heldout)
        .map(|(_, path)| path.clone())
        .chain([args.model.clone()])
        .collect();
    let read = |(name, path): &(String, PathBuf)| -> Result<(String, TokenTable)> {
        Ok((name.clone(), read_tokens(path)?))
    };
    let calibration: Vec<(String, TokenTable)> =
        calibration.iter().map(read).collect::<Result<_>>()?;
    let heldout: Vec<(String, TokenTable)> = heldout.iter().map(read).collect::<Result<_>>()?;
    for (name, held) in &heldout {
        if let Some((calib, _)) = calibration
            .iter()
            .find(|(_, c)| c.windows.iter().any(|w| held.windows.contains(w)))
        {
            bail!("held-out table {name} shares a window with calibration set {calib}: the evaluation text must be disjoint from calibration");
        }
    }
    // Before any work (only the token tables are read): the folder exists (made here) and
    // can be written, and neither frontier.csv nor a cache replaces an input or a special file.
    let input_paths: Vec<&std::path::Path> = inputs.iter().map(PathBuf::as_path).collect();
    check_folder_outside_inputs("--out-dir", &args.out_dir, &input_paths)?;
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("--out-dir {}: cannot create it", args.out_dir.display()))?;
    let mut io = Io::new()
        .inputs(&inputs)
        .output("--out-dir", args.out_dir.join("frontier.csv"));
    for (kind, sets) in [("calibration", &calibration), ("heldout", &heldout)] {
        for (name, _) in sets {
            io = io.output("--out-dir", cache_path(&args.out_dir, kind, name, &inputs)?);
        }
    }
    io.check()?;
    let options = RuntimeOptions {
        device: args.device.device,
        threads: args.device.threads,
        verify_hashes: !args.no_verify,
    };
    let mut model = LayeredModel::open(&args.model, &options)?;
    let num_blocks = model.num_blocks();
    let provenance = Provenance::new("frontier", env!("CARGO_PKG_VERSION"), command_line());

    let out = args.out_dir.join("frontier.csv");
    let mut rows: Vec<(String, FrontierPoint)> = Vec::new();
    let mut full_rows: Vec<(String, f64)> = Vec::new();
    // Held-out NLL of every mask measured so far, per held-out table.
    let mut heldout_nll: Vec<HashMap<Mask, f64>> = vec![HashMap::new(); heldout.len()];
    for (name, tokens) in &calibration {
        let path = cache_path(&args.out_dir, "calibration", name, &inputs)?;
        let mut game = CachedLlm::open(model, tokens, &path, provenance.clone())?;
        let config = FrontierConfig {
            ks: args.k.clone(),
            fixed: args.fixed.clone(),
            adaptive_budgets: args.budgets.clone(),
            one_pass: one_pass_scores(&mut game, tokens)?,
            baselines: true,
            shapley_masks: (args.shapley_masks > 0).then_some(args.shapley_masks),
            seed: args.seed,
        };
        let points = frontier(&mut game, &config)?;
        let full_nll = game
            .nll(&Mask::full(num_blocks))
            .context("full model not measured")?;
        eprintln!(
            "frontier: calibration set {name}: {} points; {} masks run now ({:.0} s), cache {}",
            points.len(),
            game.ran,
            game.seconds,
            path.display()
        );
        model = game.into_model();

        // This set's plans (and the full model) on every held-out table, which no method saw.
        let mut masks: Vec<Mask> = vec![Mask::full(num_blocks)];
        for point in &points {
            masks.push(Mask::from_removed(num_blocks, &point.removed_blocks)?);
        }
        masks.sort();
        masks.dedup();
        for ((held_name, held_tokens), nll_of) in heldout.iter().zip(&mut heldout_nll) {
            let path = cache_path(&args.out_dir, "heldout", held_name, &inputs)?;
            let mut game = CachedLlm::open(model, held_tokens, &path, provenance.clone())?;
            Game::values(&mut game, &masks).map_err(anyhow::Error::msg)?;
            eprintln!(
                "frontier: {name}'s {} plans on held-out {held_name}: {} masks run now ({:.0} s)",
                masks.len(),
                game.ran,
                game.seconds
            );
            for mask in &masks {
                nll_of.insert(mask.clone(), game.nll(mask).unwrap_or(f64::NAN));
            }
            model = game.into_model();
        }
        full_rows.push((name.clone(), full_nll));
        rows.extend(points.into_iter().map(|p| (name.clone(), p)));
        // Written after every calibration set, so a long run's finished sets are readable.
        let csv = frontier_csv(&rows, &full_rows, &heldout, &heldout_nll, num_blocks)?;
        layerprune_tables::atomic_write(&out, |file| {
            use std::io::Write;
            file.write_all(csv.as_bytes())?;
            Ok(())
        })
        .with_context(|| format!("writing {}", out.display()))?;
        eprintln!(
            "wrote {} ({} rows)",
            out.display(),
            rows.len() + full_rows.len()
        );
    }
    Ok(())
}

/// The cache of one token table in the output folder: `cache-KIND-NAME.parquet`, never one of
/// the inputs (a cache is rewritten as the run goes).
fn cache_path(
    out_dir: &std::path::Path,
    kind: &str,
    name: &str,
    inputs: &[PathBuf],
) -> Result<PathBuf> {
    let path = out_dir.join(format!("cache-{kind}-{name}.parquet"));
    if let Ok(cache) = path.canonicalize() {
        if let Some(input) = inputs.iter().find(|input| {
            input
                .canonicalize()
                .is_ok_and(|i| cache.starts_with(&i) || i == cache)
        }) {
            bail!(
                "{}: the cache of {kind} set {name} would overwrite the input {}; choose another --out-dir",
                path.display(),
                input.display()
            );
        }
    }
    Ok(path)
}

/// ShortGPT's block influence and the angular distance from one pass of the full model over
/// the calibration tokens (one LLM evaluation: the full model's mask).
fn one_pass_scores(game: &mut CachedLlm, tokens: &TokenTable) -> Result<Vec<BlockScores>> {
    let model_id = game.evaluator().model().model_id().to_string();
    let table = block_stats_table(game.evaluator(), 1, &model_id, &tokens.dataset_id)?;
    Ok(vec![
        block_influence_scores(&table)?,
        angular_distance_scores(&table)?,
    ])
}

/// `method,k,calibration_set,llm_evaluations,removed_blocks,calibration_ppl,<heldout>_ppl…,recommended,budget`.
fn frontier_csv(
    rows: &[(String, FrontierPoint)],
    full_rows: &[(String, f64)],
    heldout: &[(String, TokenTable)],
    heldout_nll: &[HashMap<Mask, f64>],
    num_blocks: usize,
) -> Result<String> {
    let mut out =
        String::from("method,k,calibration_set,llm_evaluations,removed_blocks,calibration_ppl");
    for (name, _) in heldout {
        write!(out, ",{name}_ppl")?;
    }
    out.push_str(",recommended,budget\n");
    let heldout_ppl = |mask: &Mask| -> String {
        heldout_nll
            .iter()
            .map(|m| format!(",{:.4}", m.get(mask).copied().unwrap_or(f64::NAN).exp()))
            .collect()
    };
    for (name, full_nll) in full_rows {
        let mask = Mask::full(num_blocks);
        writeln!(
            out,
            "full,0,{name},1,,{:.4}{},false",
            full_nll.exp(),
            heldout_ppl(&mask)
        )?;
    }
    for (name, point) in rows {
        let mask = Mask::from_removed(num_blocks, &point.removed_blocks)?;
        let removed: Vec<String> = point.removed_blocks.iter().map(usize::to_string).collect();
        writeln!(
            out,
            "{},{},{},{},{},{:.4}{},{},{}",
            point.method,
            point.k,
            name,
            point.llm_evaluations,
            removed.join(" "),
            (-point.value).exp(),
            heldout_ppl(&mask),
            point.method == RECOMMENDED,
            point.budget.map(|b| b.to_string()).unwrap_or_default()
        )?;
    }
    Ok(out)
}
