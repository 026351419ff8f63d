//! `quantize`: post-training weight quantization of a layered model folder (full or pruned) or
//! of a single ONNX file, into the same format. int8 per output channel
//! (`DequantizeLinear` → `MatMul`) or int4 block-wise (`MatMulNBits`), rounded to nearest or
//! by GPTQ on a calibration token table, whose passes run on `--device` (the CPU, or a CUDA
//! GPU: an error, never a CPU fall-back, when CUDA cannot be had); the algorithms live in
//! `layerprune-quantize`, this binary reads the arguments and the tokens and reports what was
//! done.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};
use layerprune_cli_common::{
    run_stopping_between_batches, Device, DeviceArgs, Io, SourceFilesArgs,
};
use layerprune_quantize::{
    check_calibration, quantize_folder_to, quantize_single_file, write_single_file, Calibration,
    FolderOptions, GraphReport, Scheme, INT4_BLOCK_SIZES,
};
use layerprune_tables::read_tokens;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SchemeArg {
    /// int8, symmetric, one scale per output channel (DequantizeLinear → MatMul).
    Int8,
    /// int4, a scale and zero point per --group-size inputs (com.microsoft MatMulNBits).
    Int4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum MethodArg {
    /// Round to nearest.
    Rtn,
    /// GPTQ on the blocks, calibrated on the --tokens table (layered folders only); the
    /// other graphs' MatMuls (the head's) are rounded to nearest, or left float with
    /// --exclude-head; the embedding's Gather stays float32.
    Gptq,
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Quantize the MatMul weights of a layered model folder or an ONNX file",
    after_help = "Examples:\n  \
        quantize --model model/ --scheme int8 --out model-int8/\n  \
        quantize --model model/ --scheme int4 --group-size 32 --out model-int4/\n  \
        quantize --model model/ --scheme int4 --method gptq --tokens tokens-calib.parquet --out model-gptq/\n  \
        quantize --model model/ --scheme int4 --method gptq --tokens tokens-calib.parquet \\\n    \
        --device cuda:0 --out model-gptq/   # GPTQ's calibration passes on GPU 0\n  \
        quantize --model pruned.onnx --scheme int8 --out pruned-int8.onnx\n\n\
        --device applies to --method gptq, whose calibration passes run the float blocks\n\
        through ONNX Runtime: on the CPU, or on a CUDA GPU with the onnxruntime-gpu library in\n\
        ORT_DYLIB_PATH (a CUDA request that cannot be met is an error, never a CPU fall-back);\n\
        rounding to nearest runs no model and refuses a GPU (--device cpu, the default, is\n\
        taken: as in every stage, a flag at its default is not a setting given).\n\
        --threads (0: one per core) is, for GPTQ, ONNX Runtime's CPU pool and the threads of\n\
        GPTQ's own work, factoring each input's second moments and sweeping each weight;\n\
        rounding to nearest rounds that many of a folder's graph files at a time (the same\n\
        folder on any count), each holding its graph's float weights and their codes: fewer\n\
        threads, less memory."
)]
struct Args {
    /// Layered model folder (with manifest.json) or one .onnx file.
    #[arg(long)]
    model: PathBuf,
    /// Where to write the quantized model: a folder for a folder (not named .onnx), a file for a
    /// file.
    #[arg(long)]
    out: PathBuf,
    /// The weights' number format.
    #[arg(long, value_enum)]
    scheme: SchemeArg,
    /// int4: inputs per scale and zero point, the quantization group (MatMulNBits'
    /// block_size: 16, 32, 64, 128 or 256) [default: 32]. (Called --block-size until
    /// 2026-12-04, where a block is a transformer block everywhere else; still accepted.)
    #[arg(long, alias = "block-size", value_parser = parse_group_size)]
    group_size: Option<usize>,
    /// int4: MatMulNBits' accuracy_level (0 = compute in float; 4 = int8 activations on CPU)
    /// [default: 0].
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..=4))]
    accuracy_level: Option<i64>,
    /// How the codes are chosen.
    #[arg(long, value_enum, default_value = "rtn")]
    method: MethodArg,
    /// GPTQ: the calibration token table (prepare-tokens; the --tokens of evaluate and
    /// apply-prune), e.g. the pipeline's tokens-calib.parquet. `--calibration`, its name
    /// before 2026-12-04, is still accepted.
    #[arg(long, alias = "calibration")]
    tokens: Option<PathBuf>,
    /// GPTQ: fraction of the mean diagonal added to the inputs' second-moment matrix, above 0
    /// and at most 1 [default: 0.01].
    #[arg(long, value_parser = parse_damp)]
    damp: Option<f64>,
    // GPTQ: where the calibration passes run; the CPU threads (the flags of every stage that
    // runs the model; the help after the options says what --threads covers here).
    #[command(flatten)]
    device: DeviceArgs,
    /// Leave the head graphs (head, head_logits) of a layered model folder in float.
    #[arg(long)]
    exclude_head: bool,
    /// Skip checking the model files' sha256 against the manifest (a layered model folder's;
    /// one .onnx file has no manifest, and is refused with it).
    #[arg(long)]
    no_verify: bool,
    /// Replace an existing --out (a rerun's too): a layered model folder, or an empty folder,
    /// for a folder; for one .onnx file any file but a layerprune table or fitted surrogate,
    /// which are never replaced.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    source_files: SourceFilesArgs,
    /// Print every quantized MatMul.
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    // It keeps nothing part-way: the folder being written was removed.
    run_stopping_between_batches(
        "run the same command again to quantize the model (no partial folder is left)",
        || quantize(Args::parse()),
    )
}

/// An int4 group size MatMulNBits takes (its block_size).
fn parse_group_size(text: &str) -> Result<usize, String> {
    let size: usize = text.parse().map_err(|e| format!("{e}"))?;
    if INT4_BLOCK_SIZES.contains(&size) {
        Ok(size)
    } else {
        Err(format!("MatMulNBits takes one of {INT4_BLOCK_SIZES:?}"))
    }
}

/// GPTQ's damping, as the library accepts it ([`layerprune_quantize::check_damp`]).
fn parse_damp(text: &str) -> Result<f64, String> {
    let damp: f64 = text.parse().map_err(|e| format!("{e}"))?;
    layerprune_quantize::check_damp(damp)
        .map(|()| damp)
        .map_err(|e| e.to_string())
}

fn scheme(args: &Args) -> Result<Scheme> {
    let scheme = match args.scheme {
        SchemeArg::Int8 => {
            for (flag, given) in [
                ("--accuracy-level", args.accuracy_level.is_some()),
                ("--group-size", args.group_size.is_some()),
            ] {
                if given {
                    bail!("{flag} applies to --scheme int4 only (int8 has one scale per output channel)");
                }
            }
            Scheme::Int8
        }
        SchemeArg::Int4 => Scheme::Int4 {
            block_size: args.group_size.unwrap_or(32),
            accuracy_level: args.accuracy_level.unwrap_or(0),
        },
    };
    scheme.validate()?;
    Ok(scheme)
}

fn print_report(file: &str, report: &GraphReport, verbose: bool) {
    for m in &report.quantized {
        if verbose {
            tracing::info!("{file}: {} ({}, K={} N={})", m.node, m.weight, m.k, m.n);
        } else {
            tracing::debug!("{file}: {} ({}, K={} N={})", m.node, m.weight, m.k, m.n);
        }
    }
    for (node, why) in &report.skipped {
        tracing::warn!("{file}: left {node} in float: {why}");
    }
}

fn quantize(args: Args) -> Result<()> {
    args.device.set_thread_budget();
    let scheme = scheme(&args)?;
    if !args.model.exists() {
        bail!("{}: no such folder or file", args.model.display());
    }
    if args.model.is_file()
        && args.model.file_name() == Some(layerprune_model::MANIFEST_FILE.as_ref())
    {
        bail!(
            "{}: the manifest of a layered model folder; give the folder itself (or one .onnx file)",
            args.model.display()
        );
    }
    // A folder's output is a folder: named like one ONNX file it would be taken for one (by a
    // user, a deployment script) and hold a manifest, graphs and weight files instead.
    if args.model.is_dir()
        && args
            .out
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
    {
        bail!(
            "--out {}: quantize writes a layered model folder for a folder, and this name says \
             one .onnx file; name the folder without .onnx, or merge the folder into one file \
             first (tools/export/merge_layered.py) and quantize that",
            args.out.display()
        );
    }
    // Before any work: --out may not replace, hold or lie in the model or the calibration table.
    // One graph's inputs are also the weight files it reads, and the layered folder it belongs
    // to if any (its manifest and other graphs): --out may replace none of them.
    let graph_inputs: Vec<PathBuf> = if args.model.is_file() {
        let folder = args.model.parent().unwrap_or(Path::new("."));
        let weights = layerprune_model::graph_external_data(&args.model).unwrap_or_default();
        let layered = layerprune_model::is_layered_folder(folder);
        weights
            .iter()
            .map(|location| folder.join(location))
            .chain(layered.then(|| folder.to_path_buf()))
            .collect()
    } else {
        Vec::new()
    };
    // An existing --out, a folder or a file, is replaced only with --overwrite (a rerun's too),
    // and a layerprune table or a fitted surrogate at a file's --out (`--out x.json`) never.
    let io = Io::new()
        .input(&args.model)
        .inputs(&graph_inputs)
        .input_opt(args.tokens.as_deref())
        .existing_refused_unless(args.overwrite, "--out", &args.out);
    let _outputs = if args.model.is_dir() {
        io.output_folder("--out", &args.out)
    } else {
        io.output_onnx_model("--out", &args.out)
    }
    .check()?;
    if args.model.is_dir() && args.overwrite {
        layerprune_model::refuse_foreign_folder(&args.out)?;
    }
    if args.method == MethodArg::Rtn && args.device.device != Device::Cpu {
        // The flag, not its value: `cuda` parses to cuda:0, which the user did not type.
        bail!(
            "--device is for --method gptq (rounding to nearest runs no model): leave it out, \
             or give --method gptq"
        );
    }
    // 0 is the default; any other count was asked for, and would change nothing for one file.
    if args.device.threads != 0 && !args.model.is_dir() {
        bail!("--threads sets the graph files of a layered model folder rounded at a time, or GPTQ's threads; one .onnx file is one graph: leave it out");
    }
    if args.method == MethodArg::Rtn && args.damp.is_some() {
        bail!("--damp is for --method gptq");
    }
    if args.source_files.hard_link_source_files && !args.model.is_dir() {
        bail!("--hard-link-source-files applies to a layered model folder: the output of one .onnx file holds every tensor itself; leave it out");
    }
    if args.no_verify && !args.model.is_dir() {
        bail!("--no-verify skips a model folder's hash check, and a single .onnx file has no manifest to check against; leave it out");
    }
    let calibration = match (args.method, &args.tokens) {
        (MethodArg::Rtn, None) => None,
        (MethodArg::Rtn, Some(_)) => bail!("--tokens is for --method gptq"),
        (MethodArg::Gptq, None) => {
            bail!("--method gptq needs --tokens TOKENS.parquet (prepare-tokens)")
        }
        (MethodArg::Gptq, Some(path)) => {
            if !args.model.is_dir() {
                bail!("--method gptq needs a layered model folder");
            }
            let tokens = read_tokens(path)?;
            check_calibration(&args.model, &tokens.windows, &tokens.tokenizer_sha256, path)?;
            Some(Calibration {
                windows: tokens.windows,
                dataset_id: tokens.dataset_id,
                damp: args.damp.unwrap_or(0.01),
                device: args.device.device,
            })
        }
    };
    if args.model.is_dir() {
        let options = FolderOptions {
            scheme: scheme.clone(),
            exclude_head: args.exclude_head,
            verify: !args.no_verify,
            calibration,
            threads: args.device.threads,
        };
        // Each graph's files go into the folder being built as soon as the graph is done.
        let quantized = quantize_folder_to(
            &args.model,
            &args.out,
            &options,
            args.source_files.source_files(),
            args.overwrite,
        )?;
        for (file, report) in &quantized.reports {
            print_report(file, report, args.verbose);
        }
        let count: usize = quantized
            .reports
            .iter()
            .map(|(_, r)| r.quantized.len())
            .sum();
        tracing::info!(
            "quantized {count} MatMuls in {} graphs ({}); wrote {} ({} new weight files, {} float \
             weight files dropped)",
            quantized.graphs.len(),
            scheme.name(),
            args.out.display(),
            quantized.new_weights.len(),
            quantized.dropped.len()
        );
    } else {
        if args.exclude_head {
            bail!("--exclude-head applies to layered model folders only");
        }
        let quantized = quantize_single_file(&args.model, &scheme)?;
        print_report(
            &args.model.display().to_string(),
            &quantized.report,
            args.verbose,
        );
        write_single_file(&args.model, &args.out, &quantized.bytes, args.overwrite)?;
        tracing::info!(
            "quantized {} MatMuls ({}); wrote {} ({} bytes)",
            quantized.report.quantized.len(),
            scheme.name(),
            args.out.display(),
            quantized.bytes.len()
        );
    }
    Ok(())
}
