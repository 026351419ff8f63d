//! Runs layered ONNX models (one graph per block, written by `tools/export`) through ONNX
//! Runtime, and values masks on real text (the `Evaluator`; `layerprune-evaluation`'s
//! `CachedLlm` makes it the real LLM as a `layerprune_core::Game`, its answers kept in an
//! evaluation table).
//!
//! Removing a block of a pre-norm residual network is the identity map on the hidden states,
//! so the evaluator simply does not run removed blocks: a mask with r blocks removed costs r
//! blocks less. Masks are evaluated in sorted order so that consecutive masks share a prefix
//! of blocks, and the hidden states after that prefix are reused instead of recomputed.
//! [`ChoiceScorer`] does the same for multiple-choice questions: the log-likelihood of each
//! choice's continuation given its context, for the zero-shot tasks of `layerprune-tasks`.

mod arena;
mod batching;
mod captured;
mod choices;
mod cuda;
mod device_fit;
mod evaluator;
mod hidden;
mod manifest;
mod model;
mod options;
mod session;
mod stitch;
mod tally;

pub use arena::{Arena, ArenaUse};
pub use choices::{
    context_tokens_cut, log_sum_exp_f64, ChoiceOptions, ChoiceScorer, InputLimit, LoglikRequest,
    Scoring,
};
pub use cuda::{device_memory, DeviceMemory};
pub use evaluator::{
    block_statistics, check_token_windows, check_tokenizer, check_tokens, sort_for_prefix_reuse,
    BlockStatistic, EvalOptions, Evaluator, MaskEvaluation,
};
pub use hidden::{on_host, HiddenState, OnHost};
pub use manifest::{
    model_id, sha256_file, BlockRef, GraphRef, Manifest, ModelError, FORMAT, MANIFEST_FILE,
};
pub use model::LayeredModel;
pub use options::{
    environment, runtime_library_path, turn_off_telemetry, GraphOptimization, RefusedSetting,
    RuntimeOptions, DEFAULT_LIBRARY, TELEMETRY_SWITCH,
};
pub use session::session_builder;
pub use tally::{GraphRuns, RunTally, LAUNCHES_SET_THE_PACE_SHARE};

use std::path::PathBuf;

use layerprune_core::Device;

/// Everything that can go wrong running a model; each names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The model folder: its manifest, files and hashes (`layerprune-model`).
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("ONNX Runtime library: {0}")]
    Library(String),
    /// The device named as the `--device` flag takes it (`--device cuda (cuda:0)` for GPU 0):
    /// `cuda:0` alone was not what a user who typed `--device cuda` could find on their
    /// command line. The flag is named here, in the library, because every device this crate
    /// is given is a stage's `--device` (`layerprune_cli_common::DeviceArgs`), and the error
    /// reaches the stages by several paths (opening a model, `evaluate --tasks`, GPTQ's
    /// calibration through `layerprune-quantize`): one spelling here, not one per path.
    #[error("{} requested but unavailable: {problem}", requested(.device))]
    DeviceUnavailable { device: Device, problem: String },
    #[error("{path}: ONNX Runtime: {message}")]
    Onnx { path: PathBuf, message: String },
    #[error("{0}")]
    BadInput(String),
    /// A scoring request that cannot be scored (too long, a token outside the vocabulary), or
    /// whose log-likelihood came out NaN or infinite, by its position in the list given: the
    /// caller knows what it stands for (a task's question and choice).
    #[error("request {index}: {problem}")]
    BadRequest { index: usize, problem: String },
    /// A termination signal arrived ([`layerprune_core::interrupt`]): the run stops before its
    /// next batch of masks, its callers saving what was measured.
    #[error(transparent)]
    Interrupted(#[from] layerprune_core::Interrupted),
}

/// A device request as the `--device` flag of every stage that runs the model spells it: GPU 0
/// by both spellings `cuda` and `cuda:0` (one request, and either may be the one typed).
fn requested(device: &Device) -> String {
    match device {
        Device::Cuda(0) => "--device cuda (cuda:0)".to_string(),
        other => format!("--device {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPU 0 is named by both spellings of `--device`, another device as the flag takes it.
    #[test]
    fn an_unavailable_device_is_named_as_the_device_flag_takes_it() {
        let message = |device| {
            RuntimeError::DeviceUnavailable {
                device,
                problem: "no GPU".to_string(),
            }
            .to_string()
        };
        assert_eq!(
            message(Device::Cuda(0)),
            "--device cuda (cuda:0) requested but unavailable: no GPU"
        );
        assert_eq!(
            message(Device::Cuda(2)),
            "--device cuda:2 requested but unavailable: no GPU"
        );
    }
}
