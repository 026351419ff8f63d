//! What every stage binary shares, so each binary stays a thin `clap` front over library
//! crates: how a stage reports failure (one message naming the file and the problem, exit
//! status 2), the `--device`/`--threads` flags, the argument list recorded as provenance
//! in every file a stage writes, and the block statistics of the full model as a table (what
//! `evaluate --block-stats` writes and what `frontier` scores ShortGPT and angular distance
//! from).

pub use layerprune_core::Device;
use std::process::ExitCode;

/// Runs a stage's body and turns an error into a message on stderr and exit status 2.
/// Every stage's `main` is `layerprune_cli_common::run(|| body(Args::parse()))`.
pub fn run(body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let program = std::env::args_os()
                .next()
                .and_then(|p| {
                    std::path::Path::new(&p)
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| "layerprune".into());
            eprintln!("{program}: error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

/// The command line as given, for the `args` provenance entry of output files. An argument
/// that is not UTF-8 (a path on Linux may be any bytes) is recorded lossily, never a panic.
pub fn command_line() -> Vec<String> {
    std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// `--device` and `--threads`, flattened into every stage that runs the model.
#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Where to run the model: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// CPU threads for ONNX Runtime (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// The block statistics (ShortGPT's cosine, angular distance) of every run of 1..=`max_run`
/// consecutive blocks of the full model on the evaluator's windows, as a table: one forward
/// pass of the full model.
pub fn block_stats_table(
    evaluator: &mut layerprune_runtime::Evaluator,
    max_run: usize,
    model_id: &str,
    dataset_id: &str,
) -> anyhow::Result<layerprune_tables::BlockStatsTable> {
    let stats = layerprune_runtime::block_statistics(evaluator, max_run)?;
    Ok(layerprune_tables::BlockStatsTable {
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
