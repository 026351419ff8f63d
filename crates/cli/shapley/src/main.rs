//! `shapley`: per-block contribution scores from LLM evaluations and/or a fitted surrogate,
//! written as a score table (one row per player block per estimator; the fixed blocks listed
//! in its metadata) and printed ranked.
//!
//! The estimators, their names (the names written in the table) and what each reads are the
//! registry of `layerprune-shapley` ([`Estimator`]); this binary reads the files, takes the
//! player set from them, runs each estimator and writes the table.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use layerprune_core::{Mask, Players};
use layerprune_shapley::{
    estimate, DesignRow, Estimates, Estimator, EstimatorInputs, EstimatorOptions, RecordedDesign,
};
use layerprune_surrogate::{SavedSurrogate, Surrogate};
use layerprune_tables::{
    read_evaluations, read_masks, write_scores, Provenance, ScoreRow, ScoreTable, ValueColumn,
};

/// Per-block contribution scores.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Estimators and what they read:\n  \
        stratified-semivalue (the published estimate), banzhaf-marginal, surrogate-shapley: --surrogate\n  \
        permutation-shapley, regression-adjusted-exp-chains: --evaluations and --masks with permutation chains\n  \
        kernelshap-paired, regression-adjusted, regression-adjusted-exp: --evaluations and --masks with complement pairs\n  \
        stratified-shapley, regression-adjusted-stratified: --evaluations (masks of every size)\n  \
        banzhaf-msr: --evaluations (uniform masks: every stratum, proportional allocation)\n  \
        exact-shapley (also writes exact-banzhaf): --evaluations holding every mask over the players\n\
        Older spellings (semivalue, shapley-surrogate, permutation, kernelshap, stratified, exact,\n\
        banzhaf) are accepted with a note.\n\n\
        Example:\n  shapley --surrogate surrogate.json --estimator stratified-semivalue --out scores.parquet"
)]
struct Args {
    /// Evaluation table (masks valued on the LLM).
    #[arg(long)]
    evaluations: Option<PathBuf>,
    /// Fitted surrogate (JSON written by fit-surrogate).
    #[arg(long)]
    surrogate: Option<PathBuf>,
    /// Mask table with the design structure (permutation chains, complement pairs) and the
    /// fixed blocks.
    #[arg(long)]
    masks: Option<PathBuf>,
    /// Estimators to run (repeatable), by the name written in score tables.
    #[arg(long = "estimator", required = true, value_parser = parse_estimator)]
    estimators: Vec<Estimator>,
    /// Base masks of the semivalue / Banzhaf estimate through the surrogate (published:
    /// 80,000); surrogate queries of surrogate-shapley when it has no closed form.
    #[arg(long, default_value_t = 80_000, value_parser = layerprune_cli_common::count(1, 1_000_000_000))]
    samples: usize,
    /// Strata of the semivalue: numbers of removed players, comma separated (default: the
    /// published 2,5,8,11,14 of 32 scaled to the number of players).
    #[arg(long, value_delimiter = ',')]
    strata: Option<Vec<usize>>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Value column of the evaluation table: utility or neg-nll.
    #[arg(long, default_value = "utility")]
    value: ValueColumn,
    /// Blocks that are not players (always kept), comma separated. Default: the fixed blocks
    /// recorded in the input files (which must agree with this list when given).
    #[arg(long, value_delimiter = ',')]
    fixed_blocks: Option<Vec<usize>>,
    /// Score table to write.
    #[arg(long)]
    out: PathBuf,
}

fn parse_estimator(text: &str) -> Result<Estimator, String> {
    let (estimator, note) = Estimator::parse(text)?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    Ok(estimator)
}

fn main() -> ExitCode {
    layerprune_cli_common::run(|| body(Args::parse()))
}

/// The input files, read and checked to describe one model and one player set.
struct Inputs {
    players: Players,
    /// `(block mask, value)` rows of the evaluation table, in table order.
    evaluations: Option<Vec<(Mask, f64)>>,
    surrogate: Option<SavedSurrogate>,
    design: Option<RecordedDesign>,
    /// The model and token table the values were measured with, where a file records them.
    game_ids: (String, String),
}

fn load(args: &Args) -> Result<Inputs> {
    let evaluations = args
        .evaluations
        .as_deref()
        .map(read_evaluations)
        .transpose()?;
    let surrogate = args
        .surrogate
        .as_deref()
        .map(|path| {
            SavedSurrogate::load(path).with_context(|| format!("loading {}", path.display()))
        })
        .transpose()?;
    let masks = args.masks.as_deref().map(read_masks).transpose()?;
    let sizes: Vec<(&str, usize)> = [
        evaluations.as_ref().map(|t| ("evaluations", t.num_blocks)),
        surrogate
            .as_ref()
            .map(|s| ("surrogate", s.surrogate.num_players())),
        masks.as_ref().map(|t| ("masks", t.num_blocks)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let Some(&(_, num_blocks)) = sizes.first() else {
        bail!("give --evaluations and/or --surrogate");
    };
    if let Some((name, n)) = sizes.iter().find(|(_, n)| *n != num_blocks) {
        bail!(
            "the inputs disagree on the number of blocks: {name} has {n}, {} has {num_blocks}",
            sizes[0].0
        );
    }

    if let (Some(table), Some(saved)) = (&evaluations, &surrogate) {
        for (what, theirs, ours) in [
            ("model", &saved.model_id, &table.model_id),
            ("token table", &saved.dataset_id, &table.dataset_id),
        ] {
            if !theirs.is_empty() && theirs != ours {
                bail!(
                    "{} was fitted on evaluations of another {what} ({theirs}) than {} ({ours})",
                    args.surrogate.as_deref().unwrap_or(Path::new("")).display(),
                    args.evaluations
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display()
                );
            }
        }
    }
    // The player set is recorded in the files; a flag may only repeat it.
    let mut recorded: Vec<(String, Vec<usize>)> = Vec::new();
    if let (Some(path), Some(table)) = (&args.masks, &masks) {
        recorded.push((path.display().to_string(), table.fixed_blocks.clone()));
    }
    if let (Some(path), Some(table)) = (&args.evaluations, &evaluations) {
        recorded.push((path.display().to_string(), table.fixed_blocks.clone()));
    }
    if let (Some(path), Some(saved)) = (&args.surrogate, &surrogate) {
        recorded.push((path.display().to_string(), saved.fixed_blocks.clone()));
    }
    if let Some(fixed) = &args.fixed_blocks {
        let mut fixed = fixed.clone();
        fixed.sort_unstable();
        fixed.dedup();
        recorded.push(("--fixed-blocks".into(), fixed));
    }
    let fixed = match recorded.split_first() {
        None => Vec::new(),
        Some(((source, fixed), rest)) => {
            if let Some((other, theirs)) = rest.iter().find(|(_, f)| f != fixed) {
                bail!(
                    "{source} fixes blocks {fixed:?} but {other} fixes {theirs:?}: the inputs \
                     come from different games"
                );
            }
            fixed.clone()
        }
    };
    let players = Players::new(num_blocks, &fixed)?;
    let design = masks
        .as_ref()
        .map(|table| {
            let rows = table.rows.iter().map(|row| DesignRow {
                design: row.design,
                group_id: row.group_id,
                position: row.position.unwrap_or(0),
                mask: &row.mask,
            });
            RecordedDesign::from_rows(rows, &players)
        })
        .transpose()
        .with_context(|| {
            format!(
                "{}",
                args.masks.as_deref().unwrap_or(Path::new("")).display()
            )
        })?;
    let game_ids = evaluations
        .as_ref()
        .map(|t| (t.model_id.clone(), t.dataset_id.clone()))
        .or_else(|| {
            surrogate
                .as_ref()
                .map(|s| (s.model_id.clone(), s.dataset_id.clone()))
        })
        .unwrap_or_default();
    let evaluations = evaluations
        .map(|table| -> Result<Vec<(Mask, f64)>> {
            let values = table.values(args.value).with_context(|| {
                format!(
                    "{}",
                    args.evaluations
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display()
                )
            })?;
            Ok(table
                .rows
                .iter()
                .map(|row| row.mask.clone())
                .zip(values)
                .collect())
        })
        .transpose()?;
    Ok(Inputs {
        players,
        evaluations,
        surrogate,
        design,
        game_ids,
    })
}

fn file_id(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(layerprune_core::sha256_hex(&bytes))
}

fn body(args: Args) -> Result<()> {
    layerprune_cli_common::Io::new()
        .input_opt(args.evaluations.as_deref())
        .input_opt(args.surrogate.as_deref())
        .input_opt(args.masks.as_deref())
        .output("--out", &args.out)
        .check()?;
    let inputs = load(&args)?;
    let players = &inputs.players;
    // The sampled coalitions (a flag per player and some bookkeeping each) and their values.
    layerprune_cli_common::check_memory(
        "--samples x the number of players",
        &[args.samples, players.len() + 64],
        2,
    )?;
    // The surrogate's own record of what it was fitted on, else the evaluation table's size.
    let surrogate_evaluations = inputs
        .surrogate
        .as_ref()
        .map(|s| s.fitted_on_evaluations as usize)
        .filter(|&n| n > 0)
        .or_else(|| inputs.evaluations.as_ref().map(Vec::len))
        .unwrap_or(0);
    let mut estimator_inputs = EstimatorInputs {
        evaluations: inputs.evaluations.as_deref(),
        design: inputs.design.as_ref(),
        surrogate: inputs
            .surrogate
            .as_ref()
            .map(|s| &s.surrogate as &dyn Surrogate),
        surrogate_evaluations,
    };
    let options = EstimatorOptions {
        samples: args.samples,
        strata: args.strata.clone(),
        seed: args.seed,
    };
    let mut all = Vec::new();
    for &which in &args.estimators {
        let estimated = estimate(which, &mut estimator_inputs, players, &options)?;
        for note in &estimated.notes {
            eprintln!("{note}");
        }
        all.extend(estimated.estimates);
    }
    let mut rows = Vec::new();
    for estimates in &all {
        for (index, &block) in estimates.blocks.iter().enumerate() {
            let interval = estimates.ci95(index);
            rows.push(ScoreRow {
                block: block as u32,
                estimate: estimates.values[index],
                std_error: estimates.std_errors.as_ref().map(|se| se[index]),
                ci_low: interval.map(|i| i.0),
                ci_high: interval.map(|i| i.1),
                estimator: estimates.estimator.clone(),
                llm_evaluations: estimates.llm_evaluations as u64,
            });
        }
    }
    let mut provenance = Provenance::new(
        "shapley",
        env!("CARGO_PKG_VERSION"),
        layerprune_cli_common::command_line(),
    )
    .with_seed(args.seed);
    for (role, path) in [
        ("evaluations", &args.evaluations),
        ("surrogate", &args.surrogate),
        ("masks", &args.masks),
    ] {
        if let Some(path) = path {
            provenance = provenance.with_input(role, &file_id(path)?);
        }
    }
    let table = ScoreTable {
        num_blocks: players.num_blocks(),
        fixed_blocks: players.fixed_blocks().to_vec(),
        model_id: inputs.game_ids.0.clone(),
        dataset_id: inputs.game_ids.1.clone(),
        rows,
    };
    write_scores(&args.out, &table, &provenance)?;
    for estimates in &all {
        print!("{}", ranked(estimates));
    }
    println!("wrote {} rows to {}", table.rows.len(), args.out.display());
    Ok(())
}

/// The estimates ranked from most to least important (pruning removes from the bottom).
fn ranked(estimates: &Estimates) -> String {
    let mut order: Vec<usize> = (0..estimates.values.len()).collect();
    order.sort_by(|&a, &b| estimates.values[b].total_cmp(&estimates.values[a]));
    let mut text = format!(
        "\n{} ({} LLM evaluations)\n rank  block     estimate   std.error\n",
        estimates.estimator, estimates.llm_evaluations
    );
    for (rank, &index) in order.iter().enumerate() {
        let se = estimates
            .std_errors
            .as_ref()
            .map_or("-".to_string(), |se| format!("{:.3e}", se[index]));
        text += &format!(
            "{:>5}  {:>5}  {:>11.4e}  {:>10}\n",
            rank + 1,
            estimates.blocks[index],
            estimates.values[index],
            se
        );
    }
    text
}
