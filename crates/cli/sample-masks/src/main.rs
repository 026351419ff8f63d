//! `sample-masks`: choose the masks the LLM will evaluate and write them to a mask table. The
//! run (the pilot, the table appended to, the draw) is `layerprune_sampling::table`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{ArgGroup, Parser, ValueEnum};
use layerprune_sampling::table::{sample_mask_table, AllocationSource, MaskRequest};
use layerprune_sampling::{
    given_strata, parse_stratum, Players, SampleOutcome, StrataSpec, MAX_ENUMERATED_PLAYERS,
};
use layerprune_tables::{write_masks, Provenance, TableKind};

/// Choose the masks (coalitions of kept blocks) to evaluate on the real model: stratified
/// random masks (the published design: 2, 5, 8, 11, 14 of 32 blocks removed, equal numbers),
/// full enumeration of small games, and the designs of the other estimators (complement pairs,
/// permutation chains, anchors).
#[derive(Parser, Debug)]
#[command(
    name = "sample-masks",
    version,
    after_help = "Examples:\n  \
        sample-masks --model model/ --stratified-masks 200 --anchors --seed 0 --out masks.parquet\n  \
        sample-masks --num-blocks 30 --strata 2,5,8 --stratified-masks 300 --complement-pairs --out masks.parquet\n  \
        sample-masks --num-blocks 30 --permutation-chains 20 --fixed 0,29 --out chains.parquet\n  \
        sample-masks --num-blocks 12 --enumerate --out all-masks.parquet"
)]
// One of the two gives the block count; a run without either is told both.
#[command(group(ArgGroup::new("block_count").required(true).args(["num_blocks", "model"])))]
struct Args {
    /// Number of blocks of the model.
    #[arg(long, value_parser = layerprune_cli_common::count(1, layerprune_core::MAX_BLOCKS as u64))]
    num_blocks: Option<usize>,
    /// Layered model folder; its manifest.json gives the number of blocks (and the table
    /// records the model's id).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Strata: numbers of removed blocks (among the blocks not fixed), e.g. 2,5,8; the same as
    /// `shapley --strata`. (Called --removed until 2026-12-04; still accepted.)
    #[arg(
        long,
        alias = "removed",
        value_delimiter = ',',
        allow_negative_numbers = true,
        requires = "stratified_masks",
        conflicts_with = "ratios",
        value_parser = parse_stratum
    )]
    strata: Option<Vec<usize>>,
    /// Strata around target pruning ratios, e.g. 0.25,0.35: round(r * players) +- a spread
    /// of max(1, round(players / 32)).
    #[arg(
        long,
        value_delimiter = ',',
        allow_negative_numbers = true,
        requires = "stratified_masks",
        value_parser = parse_ratio
    )]
    ratios: Option<Vec<f64>>,
    /// Total number of stratified masks, rows of design `stratum` (strata from --strata,
    /// --ratios, or by default the published 2, 5, 8, 11, 14 of 32 scaled to the number of
    /// players). (Called --masks until
    /// 2026-12-04, which every other stage uses for a mask table's path; still accepted.)
    #[arg(
        long,
        alias = "masks",
        value_name = "N",
        value_parser = layerprune_cli_common::count(1, 100_000_000)
    )]
    stratified_masks: Option<usize>,
    /// How the stratified masks are shared by the strata.
    #[arg(long, value_enum, default_value_t = AllocationKind::Equal, requires = "stratified_masks")]
    allocation: AllocationKind,
    /// Evaluation table whose utilities give each stratum's standard deviation (Neyman). One
    /// measured on another model than --model is refused (see --allow-mixed-inputs).
    #[arg(long)]
    pilot: Option<PathBuf>,
    /// Use a --pilot measured on another model than --model (or than the --append table's),
    /// or append to a mask table drawn for another model, with a warning (refused by default;
    /// and where the run compares no two models, since it would allow nothing).
    #[arg(long)]
    allow_mixed_inputs: bool,
    #[command(flatten)]
    incomplete: layerprune_cli_common::IncompleteArgs,
    /// Blocks always kept (not players of the game), e.g. 0,1.
    #[arg(long, value_delimiter = ',')]
    fixed: Vec<usize>,
    /// Every mask of the game, rows of design `enumeration` (at most 20 players).
    #[arg(long, conflicts_with_all = ["stratified_masks", "strata", "ratios"])]
    enumerate: bool,
    /// Follow every stratified mask by its complement (design `complement`), sharing a
    /// `group_id`; the empty and the full coalition are added too (as anchors), which the
    /// paired estimators' fit needs.
    #[arg(long, requires = "stratified_masks")]
    complement_pairs: bool,
    /// Number of random player orders, each giving a permutation chain and its reverse (rows
    /// of design `permutation`, a `group_id` each chain and their `position` in it).
    #[arg(long, value_parser = layerprune_cli_common::count(1, 10_000_000))]
    permutation_chains: Option<usize>,
    /// The full model and every single-block removal (design `anchor`).
    #[arg(long)]
    anchors: bool,
    /// Add to the table at --out if it exists, skipping the masks it already holds (permutation
    /// chains, which repeat masks, are drawn as new orders: the same --seed does not repeat the
    /// table's chains). The table keeps the model it was drawn for; a --model other than that
    /// one is refused (see --allow-mixed-inputs; allowed, it is recorded as an appended model).
    #[arg(long)]
    append: bool,
    /// Seed of the random draws (stratified masks, permutation chains); the same arguments and
    /// seed give the same file. [default: 0]
    #[arg(long)]
    seed: Option<u64>,
    /// Mask table to write (Parquet).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AllocationKind {
    /// The same number in every stratum (published).
    Equal,
    /// Proportional to the number of masks in each stratum.
    Proportional,
    /// Proportional to stratum size times the pilot's standard deviation (needs --pilot).
    Neyman,
}

/// A target pruning ratio, strictly between 0 and 1.
fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(ratio) if ratio > 0.0 && ratio < 1.0 => Ok(ratio),
        _ => Err(format!(
            "{text:?} is not a pruning ratio: a number between 0 and 1 (0.25: a quarter of the \
             blocks removed)"
        )),
    }
}

fn main() -> ExitCode {
    layerprune_cli_common::run(|| sample_masks(Args::parse()))
}

fn sample_masks(args: Args) -> anyhow::Result<()> {
    let _outputs = layerprune_cli_common::Io::new()
        .input_opt(args.model.as_deref())
        .input_opt(args.pilot.as_deref())
        .output_table("--out", &args.out, TableKind::Masks)
        .check()?;
    let num_blocks = match (&args.model, args.num_blocks) {
        (Some(model), _) => layerprune_model::read_num_blocks(model)
            .with_context(|| format!("reading the model manifest of {}", model.display()))?,
        (None, Some(num_blocks)) => num_blocks,
        (None, None) => bail!("give the number of blocks with --num-blocks or --model"),
    };
    // What only a draw or a pilot reads would be ignored: refused.
    if args.seed.is_some() && args.stratified_masks.is_none() && args.permutation_chains.is_none() {
        bail!("--seed seeds the stratified masks and the permutation chains, and neither is asked for (--enumerate and --anchors draw nothing); leave it out");
    }
    if args.incomplete.allow_incomplete && args.pilot.is_none() {
        bail!("--allow-incomplete is for the --pilot table; leave it out");
    }
    // --allow-mixed-inputs where no two models are compared: `sample_mask_table` refuses it.
    let seed = args.seed.unwrap_or(0);
    let players = Players::new(num_blocks, &args.fixed)?;
    check_memory(&args, players.len(), num_blocks)?;
    let allocation = match (args.allocation, &args.pilot) {
        (AllocationKind::Neyman, Some(pilot)) => AllocationSource::Neyman {
            pilot: pilot.clone(),
            incomplete: args.incomplete.incomplete(),
        },
        (AllocationKind::Neyman, None) => {
            bail!("--allocation neyman needs a pilot evaluation table: give --pilot")
        }
        (_, Some(_)) => bail!("--pilot is only used with --allocation neyman"),
        (AllocationKind::Equal, None) => AllocationSource::Equal,
        (AllocationKind::Proportional, None) => AllocationSource::Proportional,
    };
    let model_id = args
        .model
        .as_deref()
        .map(|model| {
            layerprune_model::model_id(model)
                .with_context(|| format!("reading the model manifest of {}", model.display()))
        })
        .transpose()?;
    let request = MaskRequest {
        strata: match (&args.strata, &args.ratios) {
            (Some(removed), _) => given_strata(removed, players.len())?,
            (None, Some(ratios)) => StrataSpec::Ratios(ratios.clone()),
            (None, None) => StrataSpec::PublishedDefault,
        },
        stratified_masks: args.stratified_masks,
        allocation,
        complement_pairs: args.complement_pairs,
        enumerate: args.enumerate,
        anchors: args.anchors,
        permutation_chains: args.permutation_chains,
        append_to: (args.append && args.out.exists()).then(|| args.out.clone()),
        seed,
        model_id,
        allow_mixed_inputs: args.allow_mixed_inputs,
    };
    // The model's id is recorded by the run (`model_id`, or the table appended to's).
    let provenance = Provenance::new(
        "sample-masks",
        env!("CARGO_PKG_VERSION"),
        layerprune_cli_common::command_line(),
    )
    .with_seed(seed);

    let sampled = sample_mask_table(&players, &request, provenance)?;
    // Fewer than asked is no error (a small game's strata run out), but it is said, not left
    // to the per-stratum lines.
    let drawn: usize = sampled.outcome.strata.iter().map(|s| s.drawn).sum();
    if let Some(asked) = args.stratified_masks.filter(|&asked| drawn < asked) {
        tracing::warn!(
            "--stratified-masks {asked}: {drawn} drawn; the strata hold no more masks that are \
             new (not in the table, not another stratified mask's complement), see the strata \
             below"
        );
    }
    // write_masks writes atomically: a failed write leaves the table appended to as it was.
    write_masks(&args.out, &sampled.table, &sampled.provenance)
        .with_context(|| format!("writing the mask table {}", args.out.display()))?;
    let mut summary = sampling_summary(&players, &sampled.outcome)?;
    use std::fmt::Write;
    writeln!(
        summary,
        "wrote {} masks ({} new) to {}",
        sampled.table.rows.len(),
        sampled.new_rows,
        args.out.display()
    )?;
    layerprune_cli_common::print_summary(&summary)
}

/// Refuses a design whose rows would not fit in memory. Measured peaks (2026-12-05, a million
/// rows): 652 B a row at 32 blocks, 1,369 B at 80 (the drawn masks, the table's rows and the
/// Arrow columns written from them), so about 16 B a block and 256 B besides; the estimate of
/// a block's flag and a hundred bytes was 8 times too low and let a 137 GB design start on a
/// 23 GB machine.
fn check_memory(args: &Args, players: usize, num_blocks: usize) -> anyhow::Result<()> {
    let pairs = if args.complement_pairs { 2 } else { 1 };
    // 2^players rows, where the game is small enough to enumerate (a larger one is refused as
    // it is drawn): 20 players of a 4,096-block model are a million rows of 4,096 blocks, 64
    // GiB, which were allocated uncounted until the machine ran out.
    let enumerated = if args.enumerate && players <= MAX_ENUMERATED_PLAYERS {
        1usize << players
    } else {
        0
    };
    let rows = [
        args.stratified_masks.unwrap_or(0).saturating_mul(pairs),
        args.permutation_chains
            .unwrap_or(0)
            .saturating_mul(2 * (players + 1)),
        if args.anchors { players + 1 } else { 0 },
        enumerated,
    ]
    .iter()
    .fold(0usize, |total, &n| total.saturating_add(n));
    layerprune_cli_common::check_memory(
        "the rows of --stratified-masks, --permutation-chains and --enumerate",
        &[rows, 16 * num_blocks + 256],
        1,
    )
}

/// A count of masks, which saturates at u128::MAX (C(200, 100) is about 9e58): said as such
/// rather than printed as that number.
fn count_text(count: u128) -> String {
    if count == u128::MAX {
        format!("more than {:.1e}", u128::MAX as f64)
    } else {
        count.to_string()
    }
}

/// What was drawn: each stratum's masks, and the new rows by design.
fn sampling_summary(players: &Players, outcome: &SampleOutcome) -> Result<String, std::fmt::Error> {
    use std::fmt::Write;
    let mut text = String::new();
    for stratum in &outcome.strata {
        writeln!(
            text,
            "stratum {:>3} of {} players removed: {} masks drawn ({} allocated, {} available of {})",
            stratum.removed,
            players.len(),
            stratum.drawn,
            stratum.allocated,
            count_text(stratum.available),
            count_text(stratum.possible)
        )?;
    }
    let mut by_design: Vec<(&str, usize)> = Vec::new();
    for row in &outcome.rows {
        let design = row.design.as_str();
        match by_design.iter_mut().find(|(name, _)| *name == design) {
            Some((_, count)) => *count += 1,
            None => by_design.push((design, 1)),
        }
    }
    let counts: Vec<String> = by_design
        .iter()
        .map(|(design, count)| format!("{design} {count}"))
        .collect();
    writeln!(text, "new rows by design: {}", counts.join(", "))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn strata_and_designs_are_parsed() {
        let args = Args::try_parse_from([
            "sample-masks",
            "--num-blocks",
            "32",
            "--strata",
            "2,5",
            "--stratified-masks",
            "10",
            "--fixed",
            "0,1",
            "--out",
            "m.parquet",
        ])
        .unwrap();
        assert_eq!(args.strata, Some(vec![2, 5]));
        // A negative stratum is refused as the flag is parsed (a usage error).
        let negative = ["sample-masks", "--num-blocks", "8", "--strata", "2,-5"];
        let error = Args::try_parse_from(negative.into_iter().chain([
            "--stratified-masks",
            "3",
            "--out",
            "m.parquet",
        ]))
        .unwrap_err();
        assert!(
            error.to_string().contains("\"-5\" is not a stratum"),
            "{error}"
        );
        assert_eq!(args.stratified_masks, Some(10));
        // The flags' names until 2026-12-04 are still accepted.
        let old = Args::try_parse_from(["sample-masks", "--num-blocks", "8"].into_iter().chain([
            "--removed",
            "3",
            "--masks",
            "7",
            "--out",
            "m.parquet",
        ]))
        .unwrap();
        assert_eq!(old.stratified_masks, Some(7));
        assert_eq!(old.strata, Some(vec![3]));
        assert_eq!(args.fixed, vec![0, 1]);
        assert!(Args::try_parse_from([
            "sample-masks",
            "--num-blocks",
            "8",
            "--enumerate",
            "--masks",
            "5",
            "--out",
            "m.parquet"
        ])
        .is_err());
        // strata without a budget are refused
        assert!(Args::try_parse_from([
            "sample-masks",
            "--num-blocks",
            "8",
            "--strata",
            "2",
            "--out",
            "m.parquet"
        ])
        .is_err());
    }
}
