//! Opening a graph as an ONNX Runtime session with the provider and settings of
//! [`RuntimeOptions`] (several at once on the CPU provider), and ONNX Runtime's errors as
//! this crate's, with what to do about them where that is known.

use std::path::{Path, PathBuf};

use layerprune_core::Device;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;

use crate::arena::Arena;
use crate::options::{environment, runtime_library_path, GraphOptimization, RuntimeOptions};
use crate::RuntimeError;

pub(crate) fn onnx_error(path: &Path) -> impl Fn(ort::Error) -> RuntimeError + '_ {
    move |error| RuntimeError::Onnx {
        path: path.to_path_buf(),
        message: explained(error.message()),
    }
}

/// ONNX Runtime's `message`, with what to do about it where that is known: running out of
/// memory (as 32 masks a call did on an H200 with a Llama-2-7B shape) is mostly the arenas.
pub(crate) fn explained(message: &str) -> String {
    if message.contains("Failed to allocate memory") {
        format!(
            "{message} (out of memory: every graph's arena keeps the buffers of its largest \
             call unless shrunk after every run, `evaluate --arena shrink`; fewer masks a call \
             (--mask-batch), fewer windows a pass (--batch-windows) or a smaller --cache-mb \
             also take less)"
        )
    } else {
        message.to_string()
    }
}

/// Opens the graph at `path`; `capture`: with [`RuntimeOptions::cuda_graphs`], let its runs be
/// captured as CUDA graphs (block graphs only: the embedding and the head read inputs from the
/// host, which a replay would not read again).
pub(crate) fn open_session(
    path: &Path,
    options: &RuntimeOptions,
    capture: bool,
) -> Result<Session, RuntimeError> {
    builder(path, options, capture && options.cuda_graphs)?
        .commit_from_file(path)
        .map_err(onnx_error(path))
}

/// Opens a session for each of `paths`, in their order, several at a time on the CPU
/// provider: building a session (reading the weights, optimising the graph) is mostly
/// single-threaded, and a model has one graph per block, so a 32-block model opens in a
/// fraction of the time on a machine with cores to spare. On CUDA they are opened one after
/// another: sessions created on one GPU from several threads at once have crashed ONNX Runtime
/// (microsoft/onnxruntime#26610) and, under CUDA 13.2, failed their initialisation
/// (docling-project/docling.rs#452). The first failing
/// path (in `paths` order) is the error. `capture(i)`: whether graph i may be captured
/// ([`open_session`]).
pub(crate) fn open_sessions(
    paths: &[PathBuf],
    options: &RuntimeOptions,
    capture: impl Fn(usize) -> bool + Sync,
) -> Result<Vec<Session>, RuntimeError> {
    // map_in_order also stops at the cores and the paths.
    let workers = match options.device {
        Device::Cpu => MAX_PARALLEL_OPENS,
        Device::Cuda(_) => 1,
    };
    // Started here, so the workers never race to start it.
    environment(options.threads)?;
    layerprune_core::parallel::map_in_order(paths, workers, |i, path| {
        open_session(path, options, capture(i))
    })
    .into_iter()
    .collect()
}

/// Sessions opened at once by [`open_sessions`]: enough to use a host's cores, few enough that
/// the weights being read at once stay a small part of memory.
pub(crate) const MAX_PARALLEL_OPENS: usize = 8;

/// ONNX Runtime's session setting for the accuracy level of the MatMulNBits it fuses from
/// DequantizeLinear → MatMul.
const QDQ_MATMULNBITS_ACCURACY_LEVEL: &str = "session.qdq_matmulnbits_accuracy_level";

/// A session builder for the graph at `path` (named in errors) with `options`' device,
/// threads, TF32 and CPU arena, in the process's one environment: every session of the
/// project (the evaluator's, GPTQ calibration's) is configured here. A CUDA device that cannot
/// be had is [`RuntimeError::DeviceUnavailable`].
pub fn session_builder(
    path: &Path,
    options: &RuntimeOptions,
) -> Result<SessionBuilder, RuntimeError> {
    builder(path, options, false)
}

/// [`session_builder`], with the CUDA provider's graph capture on when `capture`.
pub(crate) fn builder(
    path: &Path,
    options: &RuntimeOptions,
    capture: bool,
) -> Result<SessionBuilder, RuntimeError> {
    let environment = environment(options.threads)?;
    let builder_error =
        |error: ort::Error<ort::session::builder::SessionBuilder>| RuntimeError::Onnx {
            path: path.to_path_buf(),
            message: error.message().to_string(),
        };
    let mut builder = Session::builder(environment)
        .map_err(onnx_error(path))?
        .with_optimization_level(match options.graph_optimization {
            GraphOptimization::Off => GraphOptimizationLevel::Disable,
            GraphOptimization::Basic => GraphOptimizationLevel::Level1,
            GraphOptimization::Extended => GraphOptimizationLevel::Level2,
            GraphOptimization::Layout => GraphOptimizationLevel::Level3,
            GraphOptimization::All => GraphOptimizationLevel::All,
        })
        .map_err(builder_error)?
        // An int8 folder's DequantizeLinear → MatMul pairs are fused by ONNX Runtime into its
        // 8-bit MatMulNBits with this accuracy level, 4 unless set: int8 activations on the
        // CPU, a 1.1e-2 error on one block of the tiny fixture where the weights' own rounding
        // bounds it at 4.8e-7 (docs/quantization.md). 0 computes in float, as the int4 nodes
        // `quantize` writes do by default: an int8 folder is weight-only, as documented.
        .with_config_entry(QDQ_MATMULNBITS_ACCURACY_LEVEL, "0")
        .map_err(builder_error)?;
    if matches!(options.device, Device::Cpu) && options.arena == Arena::Off {
        let cpu = ort::ep::CPU::default().with_arena_allocator(false).build();
        builder = builder
            .with_execution_providers([cpu])
            .map_err(builder_error)?;
    }
    if let Device::Cuda(index) = options.device {
        // error_on_failure: a CUDA request that cannot be met must fail, never fall back to
        // the CPU and report CPU timings as GPU ones.
        let mut cuda = ort::ep::CUDA::default().with_device_id(index as i32);
        if let Some(tf32) = options.tf32 {
            cuda = cuda.with_tf32(tf32);
        }
        if matches!(options.arena, Arena::Shrink | Arena::KeepExact) {
            // Regions the size of what was asked: a region is given back only when all of
            // it is free, and a power-of-two region would mostly hold freed buffers around a
            // kept state; kept, doubling regions hold more than the calls need.
            cuda = cuda.with_arena_extend_strategy(ort::ep::ArenaExtendStrategy::SameAsRequested);
        }
        let unavailable = |problem: String| RuntimeError::DeviceUnavailable {
            device: options.device,
            problem: format!(
                "{problem} (the CUDA execution provider needs the onnxruntime-gpu build of the \
                 library in ORT_DYLIB_PATH, and a visible GPU)"
            ),
        };
        if options.overlaps() {
            // The provider first: a library without it is the likelier mistake, and its
            // message says what to do.
            use ort::ep::ExecutionProvider as _;
            if !ort::ep::CUDA::is_available().unwrap_or(false) {
                return Err(unavailable(format!(
                    "{} has no CUDA execution provider",
                    runtime_library_path()?.display()
                )));
            }
            let stream = crate::cuda::shared_stream(index)?;
            // SAFETY: the shared stream is never destroyed, so it outlives every session.
            cuda = unsafe { cuda.with_compute_stream(stream) };
        }
        if capture {
            cuda = cuda.with_cuda_graph(true);
        }
        let cuda = cuda.build().error_on_failure();
        builder = builder
            .with_execution_providers([cuda])
            .map_err(|error| unavailable(error.message().to_string()))?;
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_memory_says_what_takes_less() {
        // The message of run 1's failure on an H200 (docs/benchmarks.md §5).
        let failure = "Failed to allocate memory for requested buffer of size 845414400";
        let told = explained(failure);
        assert!(told.starts_with(failure), "{told}");
        for flag in [
            "--arena shrink",
            "--mask-batch",
            "--batch-windows",
            "--cache-mb",
        ] {
            assert!(told.contains(flag), "{told}");
        }
        assert_eq!(explained("Invalid input name: x"), "Invalid input name: x");
    }
}
