//! `shapley`: per-block contribution scores from LLM evaluations and/or a fitted surrogate,
//! written as a score table (one row per block per estimator) and printed ranked.
//!
//! Which inputs each estimator needs:
//! - `semivalue` (the published estimate), `banzhaf`, `shapley-surrogate`: `--surrogate`
//!   (queried `--samples` times; costs no LLM evaluation);
//! - `permutation`: `--evaluations` and `--masks` with permutation chains;
//! - `kernelshap`, `regression-adjusted`, `regression-adjusted-exp`: `--evaluations` and `--masks` with complement pairs;
//! - `stratified`, `regression-adjusted-stratified`: `--evaluations` only (masks uniform
//!   inside each number of kept players, as every design of `sample-masks` draws them;
//!   `sample-masks --removed 0,1,…,n` gives their design);
//! - `exact`: `--evaluations` holding every mask over the players.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use layerprune_core::{Mask, RecordedGame};
use layerprune_shapley::exact::exact_values;
use layerprune_shapley::kernelshap::{kernelshap_estimate, PairedDesign};
use layerprune_shapley::permutation::{permutation_estimate, PermutationDesign};
use layerprune_shapley::regression::{
    regression_adjusted_estimate, regression_adjusted_kernel_estimate, SurrogateTarget,
};
use layerprune_shapley::semivalue::{published_strata, semivalue_through, MaskDistribution};
use layerprune_shapley::stratified::{
    regression_adjusted_stratified_estimate, stratified_estimate,
};
use layerprune_shapley::surrogate::surrogate_shapley;
use layerprune_shapley::{Estimates, PlayerGame, Players};
use layerprune_surrogate::{SavedSurrogate, Surrogate, SurrogateGame};
use layerprune_tables::{
    read_evaluations, read_masks, write_scores, EvaluationTable, MaskTable, Provenance, ScoreRow,
    ScoreTable, ValueColumn,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EstimatorArg {
    Semivalue,
    ShapleySurrogate,
    Permutation,
    Kernelshap,
    RegressionAdjusted,
    /// Regression adjustment with an exp-polynomial surrogate over complement pairs.
    RegressionAdjustedExp,
    /// Stratum means by coalition size (needs masks of every size).
    Stratified,
    /// Stratum means by size completed by a cross-fitted exp-polynomial surrogate (the most
    /// accurate on the exact game; sizes without masks come from the surrogate alone).
    RegressionAdjustedStratified,
    Banzhaf,
    Exact,
}

/// Per-block contribution scores.
#[derive(Parser, Debug)]
#[command(version)]
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
    /// Estimators to run (repeatable).
    #[arg(long = "estimator", value_enum, required = true)]
    estimators: Vec<EstimatorArg>,
    /// Base masks of the semivalue / Banzhaf estimate through the surrogate (published:
    /// 80,000); surrogate queries of shapley-surrogate when it has no closed form.
    #[arg(long, default_value_t = 80_000)]
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
    /// Blocks that are not players (always kept), comma separated. Default: the mask
    /// table's fixed blocks, else the blocks no evaluated mask removes, else none.
    #[arg(long, value_delimiter = ',')]
    fixed_blocks: Option<Vec<usize>>,
    /// Score table to write.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    layerprune_cli_common::run(|| body(Args::parse()))
}

struct Inputs {
    num_blocks: usize,
    evaluations: Option<EvaluationTable>,
    surrogate: Option<SavedSurrogate>,
    masks: Option<MaskTable>,
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
    Ok(Inputs {
        num_blocks,
        evaluations,
        surrogate,
        masks,
    })
}

fn players(args: &Args, inputs: &Inputs) -> Result<Players> {
    let fixed: Vec<usize> = if let Some(fixed) = &args.fixed_blocks {
        fixed.clone()
    } else if let Some(masks) = &inputs.masks {
        masks.fixed_blocks.clone()
    } else if let Some(table) = &inputs.evaluations {
        (0..table.num_blocks)
            .filter(|&b| table.rows.iter().all(|r| r.mask.is_kept(b)))
            .collect()
    } else {
        Vec::new()
    };
    let blocks = (0..inputs.num_blocks)
        .filter(|b| !fixed.contains(b))
        .collect();
    Ok(Players::new(inputs.num_blocks, blocks)?)
}

/// The evaluated rows in player space (rows removing a fixed block are outside the game and
/// skipped).
fn player_rows(table: &EvaluationTable, value: ValueColumn, players: &Players) -> Vec<(Mask, f64)> {
    table
        .rows
        .iter()
        .filter_map(|row| {
            let mask = players.to_player_mask(&row.mask).ok()?;
            Some((mask, row.value(value)))
        })
        .collect()
}

/// Rows of the mask table by `group_id` (in order of first appearance), with `design`.
fn groups<'a>(masks: &'a MaskTable, designs: &[&str]) -> Vec<Vec<&'a layerprune_tables::MaskRow>> {
    let mut order = Vec::new();
    let mut by_group: BTreeMap<i64, Vec<&layerprune_tables::MaskRow>> = BTreeMap::new();
    for row in &masks.rows {
        if let (true, Some(group)) = (designs.contains(&row.design.as_str()), row.group_id) {
            by_group.entry(group).or_insert_with(|| {
                order.push(group);
                Vec::new()
            });
            if let Some(rows) = by_group.get_mut(&group) {
                rows.push(row);
            }
        }
    }
    order
        .into_iter()
        .filter_map(|g| by_group.remove(&g))
        .map(|mut rows| {
            rows.sort_by_key(|r| r.position);
            rows
        })
        .collect()
}

fn need<'a, T>(input: &'a Option<T>, flag: &str, estimator: &str) -> Result<&'a T> {
    input
        .as_ref()
        .with_context(|| format!("--estimator {estimator} needs {flag}"))
}

fn run_one(
    args: &Args,
    inputs: &Inputs,
    players: &Players,
    which: EstimatorArg,
) -> Result<Vec<Estimates>> {
    let name = which
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    // The surrogate's own record of what it was fitted on, else the evaluation table's size.
    let llm_evaluations = inputs
        .surrogate
        .as_ref()
        .map(|s| s.fitted_on_evaluations as usize)
        .filter(|&n| n > 0)
        .or_else(|| inputs.evaluations.as_ref().map(|t| t.rows.len()))
        .unwrap_or(0);
    let n = players.len();
    match which {
        EstimatorArg::Semivalue | EstimatorArg::Banzhaf => {
            let saved = need(&inputs.surrogate, "--surrogate", &name)?;
            let distribution = if which == EstimatorArg::Banzhaf {
                MaskDistribution::Uniform
            } else {
                MaskDistribution::Strata(args.strata.clone().unwrap_or_else(|| published_strata(n)))
            };
            let mut game = PlayerGame::new(SurrogateGame(&saved.surrogate), players.clone())?;
            let start = std::time::Instant::now();
            let estimates =
                semivalue_through(&mut game, n, &distribution, args.samples, args.seed)?;
            eprintln!(
                "{}: {} base masks through the surrogate in {:.2} s",
                estimates.estimator,
                args.samples,
                start.elapsed().as_secs_f64()
            );
            Ok(vec![estimates
                .for_players(players)
                .with_evaluations(llm_evaluations)])
        }
        EstimatorArg::ShapleySurrogate => {
            let saved = need(&inputs.surrogate, "--surrogate", &name)?;
            // The closed form is over all blocks; with fixed blocks the subgame differs.
            let closed_form = (n == inputs.num_blocks)
                .then(|| saved.surrogate.exact_shapley())
                .flatten();
            let mut game = PlayerGame::new(SurrogateGame(&saved.surrogate), players.clone())?;
            let pairs = (args.samples / (2 * (n + 1))).max(1);
            let estimates = surrogate_shapley(&mut game, closed_form, pairs, args.seed)?;
            Ok(vec![estimates
                .for_players(players)
                .with_evaluations(llm_evaluations)])
        }
        EstimatorArg::Permutation
        | EstimatorArg::Kernelshap
        | EstimatorArg::RegressionAdjusted
        | EstimatorArg::RegressionAdjustedExp => {
            let table = need(&inputs.evaluations, "--evaluations", &name)?;
            let masks = need(
                &inputs.masks,
                "--masks (the design's chains or pairs)",
                &name,
            )?;
            let rows = player_rows(table, args.value, players);
            let to_players = |row: &layerprune_tables::MaskRow| players.to_player_mask(&row.mask);
            let estimates = if which == EstimatorArg::Permutation {
                let chains = groups(masks, &["permutation"])
                    .iter()
                    .map(|chain| {
                        chain
                            .iter()
                            .map(|r| to_players(r))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if chains.is_empty() {
                    bail!("--estimator permutation: the mask table has no permutation chains");
                }
                let design = PermutationDesign::from_chains(n, &chains)?;
                permutation_estimate(&design, &rows)?.with_evaluations(design.queries().len())
            } else {
                let pairs = groups(masks, &["stratum", "complement"])
                    .iter()
                    .filter(|group| group.len() == 2)
                    .map(|group| Ok((to_players(group[0])?, to_players(group[1])?)))
                    .collect::<Result<Vec<_>, layerprune_shapley::ShapleyError>>()?;
                if pairs.is_empty() {
                    bail!("--estimator {name}: the mask table has no complement pairs");
                }
                let design = PairedDesign::from_pairs(n, &pairs)?;
                let missing = design.missing_sizes();
                if !missing.is_empty() {
                    eprintln!(
                        "warning: no pair has a coalition of {missing:?} players; {name} leaves those sizes out of the Shapley weighting"
                    );
                }
                let estimates = match which {
                    EstimatorArg::Kernelshap => kernelshap_estimate(&design, &rows)?,
                    EstimatorArg::RegressionAdjustedExp => {
                        regression_adjusted_kernel_estimate(
                            &design,
                            &rows,
                            SurrogateTarget::LogValue,
                            args.seed,
                        )?
                        .estimates
                    }
                    _ => regression_adjusted_estimate(&design, &rows)?,
                };
                estimates.with_evaluations(design.queries().len())
            };
            Ok(vec![estimates.for_players(players)])
        }
        EstimatorArg::Stratified | EstimatorArg::RegressionAdjustedStratified => {
            let table = need(&inputs.evaluations, "--evaluations", &name)?;
            let rows = player_rows(table, args.value, players);
            let estimates = if which == EstimatorArg::Stratified {
                stratified_estimate(n, &rows)?
            } else {
                let (estimates, r2) = regression_adjusted_stratified_estimate(n, &rows, args.seed)?;
                eprintln!("{name}: held-out R² of the fold surrogates {r2:.4}");
                estimates
            };
            Ok(vec![estimates
                .for_players(players)
                .with_evaluations(rows.len())])
        }
        EstimatorArg::Exact => {
            let table = need(&inputs.evaluations, "--evaluations", &name)?;
            let mut game: RecordedGame = table.to_game(args.value)?;
            let (shapley, banzhaf) = exact_values(&mut game, players).with_context(|| {
                format!("--estimator exact needs every mask over the {n} players")
            })?;
            Ok(vec![shapley, banzhaf])
        }
    }
}

fn file_id(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(layerprune_core::sha256_hex(&bytes))
}

fn body(args: Args) -> Result<()> {
    let inputs = load(&args)?;
    let players = players(&args, &inputs)?;
    if players.is_empty() {
        bail!("every block is fixed; there are no players");
    }
    let mut all = Vec::new();
    for &which in &args.estimators {
        all.extend(run_one(&args, &inputs, &players, which)?);
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
        num_blocks: inputs.num_blocks,
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
