//! What every stage binary shares, so each binary stays a thin `clap` front over library
//! crates: how a stage reports failure (one message naming the file and the problem, exit
//! status 1), the `--device`/`--threads` flags (and, with the `runtime` feature, the flags of
//! every stage that runs the model: [`RuntimeArgs`]; with `model-folders`, the
//! `--hard-link-source-files` of the stages that write a model folder), the argument list
//! recorded as provenance in every file a stage writes, the check of a stage's outputs against
//! its inputs before any work ([`Io`]), and the bounds of counts and memory ([`count`],
//! [`check_memory`]).
//!
//! A stage's summary goes to stdout through [`print_summary`], which takes a reader that
//! stopped reading (`stage | head`) calmly instead of panicking as `println!` does.
//!
//! Exit status, as in most Unix tools: 0 on success; 2 for a usage error (an unknown flag, a
//! value clap cannot parse or that is out of its bounds; reported by clap); 1 for an error
//! found while running (a refused output, an unreadable input, a failed write), so a workflow
//! engine can tell a typo in its rule from a bad file.

use layerprune_core::parallel::set_thread_budget;
pub use layerprune_core::Device;
use std::process::ExitCode;

/// Ignores SIGXFSZ, which the kernel sends a process writing past its file-size limit
/// (`ulimit -f`) and whose default kills it: then the write fails with EFBIG ("File too
/// large") instead, which the stage reports naming the file, and its temporary files are
/// cleaned up. Until 2026-12-07 every stage died of it silently (exit 153), leaving
/// `.NAME.tmp-PID-N` and `.NAME.lock` beside its outputs (fs audit).
fn ignore_file_size_signal() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler, and is sound at
    // any point; a child the stage starts inherits it, as `nohup` passes on SIGHUP's.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Runs a stage's body and turns an error into a message on stderr and exit status 1.
/// Every stage's `main` is `layerprune_cli_common::run(|| body(Args::parse()))`, or
/// [`run_stopping_between_batches`] for a stage whose long loop can stop part-way. Here a
/// termination signal (SIGINT, SIGTERM, SIGHUP) ends the stage at once, as by default: it has
/// no loop that would ask for it.
pub fn run(body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    run_stage(None, body)
}

/// [`run`] for the stages that run the model (evaluate, apply-prune, frontier, quantize): the
/// first termination signal is only recorded, their loops ask for it at each batch of work
/// ([`layerprune_core::interrupt::check`]) and end through their error path, saving what was
/// measured; the stage then says `resume_advice` (how to go on) and exits with the status a
/// shell gives such an end (128 + the signal). Chosen by the stage, not by a cargo feature:
/// features are unified across a workspace build, so a feature would have made every binary
/// swallow SIGTERM (until 2026-12-08 sample-masks did: it said it would stop, ran on to the
/// end and exited 0).
pub fn run_stopping_between_batches(
    resume_advice: &str,
    body: impl FnOnce() -> anyhow::Result<()>,
) -> ExitCode {
    run_stage(Some(resume_advice), body)
}

fn run_stage(resume_advice: Option<&str>, body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    // First, while the stage has one thread (`run` is the first call of every stage's `main`,
    // before its arguments are parsed): the one place a stage sets an environment variable,
    // where that is sound. A stage that runs the model then writes nothing under $HOME.
    #[cfg(feature = "runtime")]
    layerprune_runtime::turn_off_telemetry();
    ignore_file_size_signal();
    if resume_advice.is_some() {
        layerprune_core::interrupt::catch_termination_signals();
    }
    init_logging();
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
            let mut message = format!("{program}: error: {error}\n");
            // Many library errors already end with their cause (`"{path}: {source}"`); a
            // cause is printed only when the message above does not already say it.
            let mut said = error.to_string();
            for cause in error.chain().skip(1) {
                let text = cause.to_string();
                if !said.contains(&text) {
                    message.push_str(&format!("  caused by: {text}\n"));
                    said = text;
                }
            }
            // Ended by a signal: said how to go on, and the status a shell gives such an end
            // (128 + the signal), which a workflow engine reads as interrupted, not failed.
            let interrupted = resume_advice.and(layerprune_core::interrupt::received());
            if let (Some(advice), Some(_)) = (resume_advice, interrupted) {
                message.push_str(&format!("  {advice}\n"));
            }
            // Not `eprintln!`, which panics (exit 101) where stderr's reader is gone.
            use std::io::Write;
            let _ = UnlessClosed(std::io::stderr()).write_all(message.as_bytes());
            ExitCode::from(interrupted.map_or(1, |signal| signal.exit_status()))
        }
    }
}

/// Writes a stage's summary (the tables and lines it prints after its files are written) to
/// standard output in one go. A reader that has stopped reading (`stage | head`) is not an
/// error: the stage's files are written by then. (`println!` panics there, and a panicking
/// stage exits 101, which `set -o pipefail` takes for a failed stage.)
pub fn print_summary(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = UnlessClosed(std::io::stdout().lock());
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|error| {
            anyhow::Error::new(error).context("writing the summary to standard output")
        })
}

/// The environment variable that picks the log format: `json` for one JSON object per line,
/// anything else (or unset) for human-readable lines.
pub const LOG_FORMAT_VAR: &str = "LAYERPRUNE_LOG";

/// Installs the one `tracing` subscriber of a stage (called by [`run`]): log lines go to
/// stderr, never stdout (stdout is the stage's output: tables, `--json`), filtered by
/// `RUST_LOG` (default `info`; `RUST_LOG=warn` keeps only notes and warnings,
/// `RUST_LOG=info,layerprune_selection=debug` adds one crate's details), human-readable by
/// default and one JSON object per line with `LAYERPRUNE_LOG=json`. Calling it again is a
/// no-op. Errors at exit are not log events: [`run`] prints them itself, unfiltered.
pub fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{EnvFilter, LevelFilter};
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let json = std::env::var(LOG_FORMAT_VAR).is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| UnlessClosed(std::io::stderr()))
        // The subscriber reports a failed write with `eprintln!`, which panics where the
        // write failed because stderr's reader is gone.
        .log_internal_errors(false);
    // A second call (a test running two stage bodies in one process) keeps the first one.
    let _ = if json {
        builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .try_init()
    } else {
        builder
            .without_time()
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

/// Standard output or error (the summary, log lines, the error at exit), where a reader that has
/// stopped reading (`stage | head`, `stage 2>&1 | grep -m1`) is not the stage's failure: what it
/// could not say is dropped and the stage goes on to write its files. (`println!`/`eprintln!`,
/// and tracing-subscriber's writer with it, panic there: exit 101, and a stage's output never
/// written.)
struct UnlessClosed<W>(W);

impl<W: std::io::Write> std::io::Write for UnlessClosed<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self.0.write(bytes) {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(bytes.len()),
            written => written,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.flush() {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            flushed => flushed,
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
    /// CPU threads for ONNX Runtime and for the stage's own work (hashing the model's files;
    /// apply-prune's and frontier's fits and factorizations of a method that chooses blocks;
    /// quantize's GPTQ factorizations and rounding); 0 = one per core; at most 4 per core.
    /// Results do not depend on it.
    #[arg(long, default_value_t = 0, value_parser = parse_threads)]
    pub threads: usize,
}

impl DeviceArgs {
    /// Bounds the stage's own threads by `--threads` ([`set_thread_budget`]): called by each
    /// stage's front before any work.
    pub fn set_thread_budget(&self) {
        set_thread_budget(self.threads);
    }
}

/// `--threads` of a stage that does not run the model (`fit-surrogate`, `shapley`): the
/// threads of its own work, so that a workflow engine's job of one core takes one.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct ThreadsArgs {
    /// Threads of this stage's work: the Gram matrices and factorizations of the quadratic
    /// surrogate and the regression estimators, the forest's predictions (0 = one per core; at
    /// most 4 per core). Results do not depend on it.
    #[arg(long, default_value_t = 0, value_parser = parse_threads)]
    pub threads: usize,
}

impl ThreadsArgs {
    /// Bounds the stage's threads by `--threads` ([`set_thread_budget`]): called by the
    /// stage's front before any work.
    pub fn set_thread_budget(self) {
        set_thread_budget(self.threads);
    }
}

/// `--allow-incomplete`, flattened into every stage that draws conclusions from an evaluation
/// table (a surrogate, block scores, a pilot).
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct IncompleteArgs {
    /// Use an evaluation table that is not complete (a checkpoint of an `evaluate` run that
    /// stopped, or a cache), with a warning; refused by default.
    #[arg(long)]
    pub allow_incomplete: bool,
}

impl IncompleteArgs {
    pub fn incomplete(self) -> layerprune_tables::Incomplete {
        if self.allow_incomplete {
            layerprune_tables::Incomplete::Allow
        } else {
            layerprune_tables::Incomplete::Refuse
        }
    }
}

/// An explicit on or off.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    On,
    Off,
}

mod bounds;
mod outputs;
#[cfg(feature = "runtime")]
mod runtime;
#[cfg(feature = "model-folders")]
mod source_files;

pub use bounds::{
    cache_bytes, check_memory, count, machine_memory, parse_threads, MAX_CACHE_MB,
    MEMORY_LIMIT_BYTES, MEMORY_LIMIT_TEXT,
};
pub use outputs::{check_folder_outside_inputs, Io, OutputLocks};
#[cfg(feature = "runtime")]
pub use runtime::{ArenaArg, AutoSwitch, RuntimeArgs, RuntimeFlags};
#[cfg(feature = "model-folders")]
pub use source_files::SourceFilesArgs;
