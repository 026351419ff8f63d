//! How a model is loaded and run (the execution provider, threads, I/O binding, CUDA graphs,
//! TF32, arenas), and the one ONNX Runtime environment every session of the process shares.

use std::path::PathBuf;
use std::sync::{Once, OnceLock};

use layerprune_core::Device;
use ort::environment::{Environment, GlobalThreadPoolOptions};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};

use crate::arena::Arena;
use crate::tally::RunTally;
use crate::RuntimeError;

/// How to load a model.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    pub device: Device,
    /// Intra-op threads of the one global pool (0 = ONNX Runtime's default, one per core).
    pub threads: usize,
    /// Check every file's sha256 against the manifest before loading (reads every byte once).
    pub verify_hashes: bool,
    /// What each session's memory arena does with the buffers a run has freed ([`Arena`]).
    pub arena: Arena,
    /// Bind the outputs of the embedding and of every block to the device's own memory
    /// (ONNX Runtime's IoBinding), so hidden states go from block to block without leaving
    /// the device; only the head's per-token NLL comes back to the host. `None`: on for
    /// CUDA, off for the CPU (where every buffer is host memory already, and the plain path
    /// is the measured default). The results are the same bit for bit (tested on the CPU).
    pub io_binding: Option<bool>,
    /// TensorFloat-32 matrix products on the CUDA provider (its `use_tf32` option). `None`:
    /// the provider's default (on). `Some(true)` on the CPU is refused: the CPU provider
    /// has no such setting.
    pub tf32: Option<bool>,
    /// Every session queues its kernels on one CUDA stream and the host does not wait for
    /// each block to finish before queuing the next (`crate::cuda`): the host waits only
    /// where it reads a result. `None`: on for CUDA with bound outputs (measured on an H200:
    /// 1.18x on a TinyLlama-1.1B shape, 1.07x on a Llama-2-7B shape; docs/benchmarks.md §5),
    /// off otherwise. Needs CUDA and bound outputs ([`Self::io_binding`]); `Some(true)`
    /// otherwise is refused.
    pub overlap: Option<bool>,
    /// Capture each block's kernels as a CUDA graph and replay it, instead of launching them
    /// one by one from the host (`crate::captured`): what a model whose blocks are small for
    /// the GPU needs, as launches then set the pace. Needs CUDA with overlap
    /// ([`Self::overlaps`]), whose stream orders the copies into and out of the captured
    /// buffers. Off by default: on an H100 (GPU run 3, docs/benchmarks.md §5) 1.56–1.87x on a
    /// 135M model, 0.96–1.12x at 1.1B and 7B.
    pub cuda_graphs: bool,
    /// Which of ONNX Runtime's rewrites of a graph run when its session opens. Why a setting:
    /// the fusions into ONNX Runtime's own kernels (normalisation with the residual add,
    /// attention, GELU) are where its arithmetic can part from the exported operators' (the
    /// suspects for the bf16 distance at 7B and for fused bf16 blocks of some architectures
    /// refused on CUDA, docs/benchmarks.md §5), so turning them off tells whether they are the
    /// cause, and works around one. [`GraphOptimization::Layout`] by default.
    pub graph_optimization: GraphOptimization,
}

/// A setting [`RuntimeOptions::check`] refuses. Worded in the stages' flags (`--tf32 on`,
/// `--device is cpu`), as [`RuntimeError::DeviceUnavailable`] is, because every setting here is
/// one of their flags (`layerprune_cli_common::RuntimeFlags`), and a stage says what it refuses
/// in the words its user typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefusedSetting {
    /// TF32 on the CPU provider, which has no such setting: it computes float32 products in
    /// float32.
    #[error(
        "--tf32 on: TF32 is a setting of the CUDA execution provider, and --device is cpu (use \
         --device cuda, or leave --tf32 out)"
    )]
    Tf32OnTheCpu,
    /// Overlap on the CPU provider, where the host does the work itself.
    #[error(
        "--overlap on: overlapping the host with the GPU is a setting of the CUDA execution \
         provider, and --device is cpu (use --device cuda, or leave --overlap out)"
    )]
    OverlapOnTheCpu,
    /// Overlap with the states returned to the host, which makes it wait after every block.
    #[error(
        "--overlap on needs the hidden states bound to the device: --io-binding off returns \
         them to the host after every block"
    )]
    OverlapWithoutBoundStates,
    /// CUDA graphs on the CPU provider, which runs each graph's kernels itself.
    #[error(
        "--cuda-graphs on: CUDA graphs are a setting of the CUDA execution provider, and \
         --device is cpu (use --device cuda, or leave --cuda-graphs out)"
    )]
    CudaGraphsOnTheCpu,
    /// CUDA graphs without overlap ([`RuntimeOptions::overlaps`]), whose one stream orders the
    /// copies into and out of the captured buffers.
    #[error(
        "--cuda-graphs on needs the host overlapped with the GPU: --overlap off or --io-binding \
         off leaves no shared stream to order the captured buffers' copies"
    )]
    CudaGraphsWithoutOverlap,
    /// [`Arena::KeepExact`] on the CPU, whose provider's arena takes no such setting from a
    /// session.
    #[error(
        "--arena keep-exact: growing the arena by exactly what is asked is a setting of the CUDA \
         execution provider, and --device is cpu (use --device cuda, or keep, shrink or off)"
    )]
    ExactArenaOnTheCpu,
    /// [`Arena::Off`] on CUDA, whose provider always allocates through its arena.
    #[error(
        "--arena off: the CUDA provider always allocates device memory through its arena (use \
         --arena shrink to give it back after every run)"
    )]
    NoArenaOnCuda,
    /// [`Arena::Shrink`] with CUDA graphs, which replay the addresses their buffers had when
    /// captured.
    #[error(
        "--arena shrink with --cuda-graphs on: CUDA graphs replay the addresses their buffers \
         had when captured, which a shrinking arena gives back after every run"
    )]
    ShrinkingArenaWithCudaGraphs,
}

impl RefusedSetting {
    /// The flag at fault and its value, as a stage's command line gives them
    /// (`("--tf32", "on")`): the words its message starts with.
    pub fn flag(self) -> (&'static str, &'static str) {
        match self {
            RefusedSetting::Tf32OnTheCpu => ("--tf32", "on"),
            RefusedSetting::OverlapOnTheCpu | RefusedSetting::OverlapWithoutBoundStates => {
                ("--overlap", "on")
            }
            RefusedSetting::CudaGraphsOnTheCpu | RefusedSetting::CudaGraphsWithoutOverlap => {
                ("--cuda-graphs", "on")
            }
            RefusedSetting::ExactArenaOnTheCpu => ("--arena", "keep-exact"),
            RefusedSetting::NoArenaOnCuda => ("--arena", "off"),
            RefusedSetting::ShrinkingArenaWithCudaGraphs => ("--arena", "shrink"),
        }
    }
}

impl From<RefusedSetting> for RuntimeError {
    fn from(refused: RefusedSetting) -> Self {
        RuntimeError::BadInput(refused.to_string())
    }
}

/// ONNX Runtime's graph optimization levels, by what each adds to the one below.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GraphOptimization {
    /// None: every node runs as exported.
    Off,
    /// Rewrites that leave standard ONNX operators: constants folded, redundant nodes removed,
    /// nodes merged into others of the standard set.
    Basic,
    /// And the fusions into ONNX Runtime's own kernels for the CPU and CUDA providers
    /// (`SimplifiedLayerNormalization`, `SkipSimplifiedLayerNormalization`, attention, GELU).
    Extended,
    /// And the memory layouts for the provider's kernels (`ORT_ENABLE_LAYOUT`): the level every
    /// figure in docs/ was measured at, the default.
    #[default]
    Layout,
    /// Every level ONNX Runtime has (`ORT_ENABLE_ALL`), any above the layouts included.
    All,
}

impl GraphOptimization {
    /// Every level, from none to all.
    pub const LEVELS: [GraphOptimization; 5] = [
        GraphOptimization::Off,
        GraphOptimization::Basic,
        GraphOptimization::Extended,
        GraphOptimization::Layout,
        GraphOptimization::All,
    ];

    /// The level of that [`Self::name`].
    pub fn from_name(name: &str) -> Option<GraphOptimization> {
        Self::LEVELS.into_iter().find(|level| level.name() == name)
    }

    /// Its name as the flags and the tables write it.
    pub fn name(self) -> &'static str {
        match self {
            GraphOptimization::Off => "off",
            GraphOptimization::Basic => "basic",
            GraphOptimization::Extended => "extended",
            GraphOptimization::Layout => "layout",
            GraphOptimization::All => "all",
        }
    }
}

impl RuntimeOptions {
    /// The device with the settings that change its arithmetic, as evaluation tables record it
    /// (`EvaluationTable::evaluated_on`): `cpu` (where the settings below give the same NLLs
    /// bit for bit), or on CUDA its TF32 setting and the shapes of its matrix products, which may
    /// pick other kernels there (`cuda, tf32 on, mask batch 8, windows a pass 10`: the windows
    /// a pass as run, [`crate::EvalOptions::for_windows`]; on the CPU batching is
    /// bit-identical; on a GPU run 3 found the same NLLs to the digits it reports);
    /// on either, graph optimizations other than the default [`GraphOptimization::Layout`],
    /// which may run other kernels (`cpu, graph optimization basic`).
    /// Not how masks were grouped into calls (the prefix cache's bound, a small batch filled
    /// with more masks: [`Self::fills_small_batches`]), which may move an NLL's last digits on
    /// CUDA as the order of a run's masks may. Not the device's index (two
    /// GPUs of one kind compute alike) nor settings that keep results bit for bit (threads,
    /// arena, IoBinding, overlap, CUDA graphs, the prefix cache).
    pub fn evaluated_on(&self, evaluation: &crate::EvalOptions) -> String {
        self.computed_on(&format!(
            "mask batch {}, windows a pass {}",
            evaluation.mask_batch.max(1),
            evaluation.batch_windows
        ))
    }

    /// [`Self::evaluated_on`] for any run of the model: `cuda_batching` names the settings
    /// that shape its matrix products on CUDA (`batch tokens 2048` for a task run's padded
    /// forward passes), recorded only there, since on the CPU batching is bit-identical.
    pub fn computed_on(&self, cuda_batching: &str) -> String {
        let device = match self.device {
            Device::Cpu => "cpu".to_string(),
            Device::Cuda(_) => format!(
                "cuda, tf32 {}, {cuda_batching}",
                // The provider's default when not set.
                if self.tf32.unwrap_or(true) {
                    "on"
                } else {
                    "off"
                }
            ),
        };
        match self.graph_optimization {
            GraphOptimization::Layout => device,
            other => format!("{device}, graph optimization {}", other.name()),
        }
    }

    /// Whether the evaluator batches more masks a block call on a window batch smaller than
    /// the largest ([`crate::EvalOptions::fill_small_batches`]; `None`: on CUDA without CUDA
    /// graphs). Never without prefix reuse, which batching needs.
    pub fn fills_small_batches(&self, evaluation: &crate::EvalOptions) -> bool {
        evaluation.reuse_prefixes
            && evaluation
                .fill_small_batches
                .unwrap_or(matches!(self.device, Device::Cuda(_)) && !self.cuda_graphs)
    }
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            device: Device::Cpu,
            threads: 0,
            verify_hashes: true,
            arena: Arena::Keep,
            io_binding: None,
            tf32: None,
            overlap: None,
            cuda_graphs: false,
            graph_optimization: GraphOptimization::Layout,
        }
    }
}

impl RuntimeOptions {
    /// Whether block outputs are bound to the device's memory ([`Self::io_binding`] resolved
    /// for [`Self::device`]).
    pub fn binds_outputs(&self) -> bool {
        self.io_binding
            .unwrap_or(matches!(self.device, Device::Cuda(_)))
    }

    /// Whether `--cuda-graphs on` would pay for a run with these settings whose graphs ran as
    /// `tally` says over `seconds`: on CUDA with the host overlapped, the blocks not captured
    /// already, the arenas not shrunk (a shrink waits for the device after every run, and CUDA
    /// graphs refuse it), and the host's launches setting the pace
    /// ([`RunTally::launches_set_the_pace`]).
    pub fn cuda_graphs_would_pay(&self, tally: &RunTally, seconds: f64) -> bool {
        self.overlaps()
            && !self.cuda_graphs
            && self.arena != Arena::Shrink
            && tally.launches_set_the_pace(seconds)
    }

    /// Whether the host queues block after block without waiting ([`Self::overlap`] resolved:
    /// only on CUDA with bound outputs).
    pub fn overlaps(&self) -> bool {
        self.overlap.unwrap_or(true)
            && matches!(self.device, Device::Cuda(_))
            && self.binds_outputs()
    }

    /// Refuses, before any session opens, a setting the device does not have or one without
    /// what it needs: the one statement of these rules, which the stages' flags are checked
    /// against too (`layerprune_cli_common::RuntimeFlags::check`, so `evaluate
    /// check-runtime-flags` refuses exactly what a run would). The settings are tested as
    /// resolved for the device ([`Self::binds_outputs`], [`Self::overlaps`]), so a default
    /// (`None`) is refused only where what it resolves to is. The first rule broken is named.
    pub fn check(&self) -> Result<(), RefusedSetting> {
        let cuda = matches!(self.device, Device::Cuda(_));
        if self.tf32 == Some(true) && !cuda {
            return Err(RefusedSetting::Tf32OnTheCpu);
        }
        if self.overlap == Some(true) {
            if !cuda {
                return Err(RefusedSetting::OverlapOnTheCpu);
            }
            if !self.binds_outputs() {
                return Err(RefusedSetting::OverlapWithoutBoundStates);
            }
        }
        if self.cuda_graphs {
            if !cuda {
                return Err(RefusedSetting::CudaGraphsOnTheCpu);
            }
            if !self.overlaps() {
                return Err(RefusedSetting::CudaGraphsWithoutOverlap);
            }
        }
        match self.arena {
            Arena::KeepExact if !cuda => return Err(RefusedSetting::ExactArenaOnTheCpu),
            Arena::Off if cuda => return Err(RefusedSetting::NoArenaOnCuda),
            Arena::Shrink if self.cuda_graphs => {
                return Err(RefusedSetting::ShrinkingArenaWithCudaGraphs)
            }
            _ => {}
        }
        Ok(())
    }

    /// Where bound outputs go: the device's default memory.
    pub(crate) fn output_memory(&self) -> Result<MemoryInfo<'static>, RuntimeError> {
        let (device, index) = match self.device {
            Device::Cpu => (AllocationDevice::CPU, 0),
            Device::Cuda(index) => (AllocationDevice::CUDA, index as i32),
        };
        MemoryInfo::new(device, index, AllocatorType::Device, MemoryType::Default).map_err(
            |error| RuntimeError::DeviceUnavailable {
                device: self.device,
                problem: format!("no memory description for it: {}", error.message()),
            },
        )
    }
}

/// Where `make ort` unpacks the library of the PyPI `onnxruntime==1.31.1` wheel.
pub const DEFAULT_LIBRARY: &str = "build/ort-cpu/onnxruntime/capi/libonnxruntime.so.1.31.1";

/// Where the ONNX Runtime shared library is: `ORT_DYLIB_PATH`, else [`DEFAULT_LIBRARY`]
/// under the current folder.
pub fn runtime_library_path() -> Result<PathBuf, RuntimeError> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(RuntimeError::Library(format!(
                "ORT_DYLIB_PATH is {} but no such file exists",
                path.display()
            )))
        };
    }
    let fallback = PathBuf::from(DEFAULT_LIBRARY);
    if fallback.is_file() {
        return Ok(fallback);
    }
    Err(RuntimeError::Library(
        "set ORT_DYLIB_PATH to libonnxruntime.so.1.31.1 (`make ort` fetches it from the PyPI \
         onnxruntime wheel into build/ort-cpu/)"
            .into(),
    ))
}

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// ONNX Runtime's switch for its telemetry, and the value that turns it off. ONNX Runtime
/// 1.31.1 (the PyPI wheel's library) starts a telemetry store when its environment is created:
/// `$HOME/.cache/Microsoft/DeveloperTools/.onnxruntime/` (`onnxruntime.db`, an SQLite event
/// store with its WAL, and `deviceid`), written on every run of a stage that loads a model,
/// outside the stage's outputs (a stage under `ulimit -f 12` was killed by SIGXFSZ writing it,
/// before doing anything). The C API's `DisableTelemetryEvents` (ort's `with_telemetry(false)`,
/// called too) is for the events, and does not stop the store, which is created before it can
/// be called; this variable, read when the environment is created, stops both (checked with a
/// fresh `HOME`: `1`, `true` and `yes` leave it empty, `0` or an empty value do not).
pub const TELEMETRY_SWITCH: (&str, &str) = ("ORT_DISABLE_TELEMETRY", "1");

static TELEMETRY_SWITCH_SET: Once = Once::new();

/// Turns ONNX Runtime's telemetry off for the rest of the process: sets [`TELEMETRY_SWITCH`]
/// to `1`, overriding any other value the caller's environment gave (the stages promise no byte
/// changed outside their outputs), and leaving it alone where it is `1` already. Only the first
/// call does anything.
///
/// Call it first thing in `main`, while the process has one thread: every stage does, in
/// `layerprune_cli_common::run`, before it parses its arguments. Setting a variable is sound
/// only while no other thread reads the environment through C (`getenv` in a C library does not
/// take Rust's lock on the environment; Rust's own readers do). A test binary runs its tests on
/// several threads: there, call it before the test first loads ONNX Runtime, as every test of
/// this workspace that loads it does (through [`environment`] or itself); the `Once` makes a
/// second thread wait until the variable is set, and no ONNX Runtime code runs before that (the
/// other tests' threads run Rust code, which reads the environment under Rust's lock).
pub fn turn_off_telemetry() {
    TELEMETRY_SWITCH_SET.call_once(|| {
        let (switch, off) = TELEMETRY_SWITCH;
        if std::env::var_os(switch).is_none_or(|value| value != off) {
            // SAFETY (an `unsafe fn` from edition 2024): in the stages this runs at the start
            // of `main`, where no other thread exists. Anywhere else it is sound only where no
            // other thread is in C code reading the environment at that moment: ONNX Runtime
            // is not loaded before this has run (every load goes through `environment`, which
            // calls this first), but the caller vouches for the rest (its own threads, a CUDA
            // context it made); so the late call from `environment` warns.
            std::env::set_var(switch, off);
        }
    });
}

/// Whether [`turn_off_telemetry`] has run in this process.
fn telemetry_turned_off() -> bool {
    TELEMETRY_SWITCH_SET.is_completed()
}

/// The process's one ONNX Runtime environment (ONNX Runtime allows one per process; the first
/// call's `threads` sets its pool: 0 = one thread per core). Every session shares its global
/// thread pool with spinning off: separate pools spinning against each other cost 20 % on 2
/// cores. ONNX Runtime's telemetry is off ([`TELEMETRY_SWITCH`]): a stage writes nothing
/// outside its outputs. A program calls [`turn_off_telemetry`] first thing in `main` (every
/// stage does, through `layerprune_cli_common::run`); one that did not gets the switch set here,
/// late, with a warning (see [`turn_off_telemetry`] for when that is sound).
pub fn environment(threads: usize) -> Result<&'static Environment, RuntimeError> {
    ENVIRONMENT
        .get_or_init(|| {
            let library = runtime_library_path().map_err(|error| match error {
                RuntimeError::Library(message) => message,
                other => other.to_string(),
            })?;
            // The switch must be set before the library is loaded and the environment created,
            // where ONNX Runtime reads it. The stages set it at their start; a library caller
            // that did not (a test, a program of its own) gets it set here, late: sound only
            // where no other thread of the caller is in C code reading the environment now (see
            // `turn_off_telemetry`; ONNX Runtime itself is not loaded yet, `init_from` below).
            if !telemetry_turned_off() {
                tracing::warn!(
                    "ONNX Runtime's telemetry was not turned off at the program's start \
                     (`layerprune_runtime::turn_off_telemetry`, called first in `main`); \
                     {} set now, before the library loads",
                    TELEMETRY_SWITCH.0
                );
                turn_off_telemetry();
            }
            let builder = ort::init_from(&library)
                .map_err(|e| format!("cannot load {}: {e}", library.display()))?;
            let mut pool = GlobalThreadPoolOptions::default()
                .with_spin_control(false)
                .map_err(|e| e.to_string())?;
            if threads > 0 {
                pool = pool
                    .with_intra_threads(threads)
                    .map_err(|e| e.to_string())?;
            }
            let environment = builder
                .with_name("layerprune")
                .with_telemetry(false)
                .with_global_thread_pool(pool)
                .with_logger(std::sync::Arc::new(log_onnx_runtime))
                .build()
                .map_err(|e| {
                    format!("cannot start ONNX Runtime from {}: {e}", library.display())
                })?;
            // A logger of its own is registered at every level; only warnings and errors reach it.
            environment.set_log_level(ort::logging::LogLevel::Warning);
            Ok(environment)
        })
        .as_ref()
        .map_err(|message| RuntimeError::Library(message.clone()))
}

/// ONNX Runtime's log lines, through the stage's log (its format, `LAYERPRUNE_LOG=json`
/// included) rather than ONNX Runtime's own lines in ANSI colour codes, which show as `[1;31m`
/// in Make's logs (bad-input audit, 2026-12-08): warnings and errors as warnings. An error is
/// kept although the stage reports its failure too: some say what the stage's message cannot
/// (the CUDA provider names the library it failed to load only here).
fn log_onnx_runtime(
    level: ort::logging::LogLevel,
    _category: &str,
    _id: &str,
    _code_location: &str,
    message: &str,
) {
    use ort::logging::LogLevel;
    match level {
        LogLevel::Warning => tracing::warn!("ONNX Runtime: {message}"),
        LogLevel::Error | LogLevel::Fatal => tracing::warn!("ONNX Runtime: {message}"),
        LogLevel::Info | LogLevel::Verbose => tracing::trace!("ONNX Runtime: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ONNX Runtime's warnings and errors reach the stage's log as warnings; its chatter does
    /// not.
    #[test]
    fn onnx_runtimes_log_goes_through_the_stages_log() {
        use ort::logging::LogLevel;
        let said = |level| {
            layerprune_tests::logged_at(tracing::Level::INFO, || {
                log_onnx_runtime(level, "c", "id", "file.cc:1", "the message")
            })
        };
        for told in [LogLevel::Warning, LogLevel::Error, LogLevel::Fatal] {
            assert!(said(told).contains("ONNX Runtime: the message"));
        }
        for quiet in [LogLevel::Info, LogLevel::Verbose] {
            assert!(!said(quiet).contains("the message"));
        }
    }
    use crate::tally::GraphRuns;

    /// Each rule of [`RuntimeOptions::check`] by a setting that breaks it, named by the flag its
    /// message starts with; and the defaults, resolved for the device, break none.
    #[test]
    fn each_refused_setting_is_named_by_the_flag_its_message_starts_with() {
        let cpu = RuntimeOptions::default();
        let cuda = RuntimeOptions {
            device: Device::Cuda(0),
            ..RuntimeOptions::default()
        };
        let graphs = RuntimeOptions {
            cuda_graphs: true,
            ..cuda.clone()
        };
        let cases = [
            (
                RuntimeOptions {
                    tf32: Some(true),
                    // Broken too, but TF32 is named first.
                    overlap: Some(true),
                    ..cpu.clone()
                },
                RefusedSetting::Tf32OnTheCpu,
            ),
            (
                RuntimeOptions {
                    overlap: Some(true),
                    ..cpu.clone()
                },
                RefusedSetting::OverlapOnTheCpu,
            ),
            (
                RuntimeOptions {
                    overlap: Some(true),
                    io_binding: Some(false),
                    ..cuda.clone()
                },
                RefusedSetting::OverlapWithoutBoundStates,
            ),
            (
                RuntimeOptions {
                    cuda_graphs: true,
                    io_binding: Some(true),
                    ..cpu.clone()
                },
                RefusedSetting::CudaGraphsOnTheCpu,
            ),
            (
                RuntimeOptions {
                    io_binding: Some(false),
                    ..graphs.clone()
                },
                RefusedSetting::CudaGraphsWithoutOverlap,
            ),
            (
                RuntimeOptions {
                    overlap: Some(false),
                    ..graphs.clone()
                },
                RefusedSetting::CudaGraphsWithoutOverlap,
            ),
            (
                RuntimeOptions {
                    arena: Arena::KeepExact,
                    ..cpu.clone()
                },
                RefusedSetting::ExactArenaOnTheCpu,
            ),
            (
                RuntimeOptions {
                    arena: Arena::Off,
                    ..cuda.clone()
                },
                RefusedSetting::NoArenaOnCuda,
            ),
            (
                RuntimeOptions {
                    arena: Arena::Shrink,
                    ..graphs.clone()
                },
                RefusedSetting::ShrinkingArenaWithCudaGraphs,
            ),
        ];
        for (options, refused) in cases {
            assert_eq!(options.check(), Err(refused), "{options:?}");
            let (flag, value) = refused.flag();
            let message = refused.to_string();
            assert!(
                message.starts_with(&format!("{flag} {value}")),
                "{refused:?}: {message}"
            );
            assert_eq!(RuntimeError::from(refused).to_string(), message);
        }
        // Defaults are refused only where they resolve to what is: CUDA graphs take the
        // overlap and bound states CUDA has by default.
        for options in [
            cpu.clone(),
            cuda.clone(),
            graphs,
            RuntimeOptions {
                arena: Arena::Off,
                tf32: Some(false),
                overlap: Some(false),
                io_binding: Some(true),
                ..cpu
            },
            RuntimeOptions {
                arena: Arena::KeepExact,
                tf32: Some(true),
                overlap: Some(true),
                io_binding: Some(true),
                ..cuda
            },
        ] {
            assert_eq!(options.check(), Ok(()), "{options:?}");
        }
    }

    #[test]
    fn cuda_graphs_would_pay_where_the_launches_of_an_overlapped_cuda_run_set_its_pace() {
        // GPU run 3's 135M fp16 run: the blocks' queued runs held 87 % of its 0.70 s.
        let tally = RunTally {
            blocks: GraphRuns {
                runs: 1659,
                host_seconds: 0.607,
            },
            ..RunTally::default()
        };
        let cuda = RuntimeOptions {
            device: Device::Cuda(0),
            ..RuntimeOptions::default()
        };
        assert!(cuda.cuda_graphs_would_pay(&tally, 0.70));
        assert!(!cuda.cuda_graphs_would_pay(&tally, 2.0), "blocks at 30 %");
        for (settings, why) in [
            (
                RuntimeOptions {
                    cuda_graphs: true,
                    ..cuda.clone()
                },
                "captured already",
            ),
            (
                RuntimeOptions {
                    arena: Arena::Shrink,
                    ..cuda.clone()
                },
                "shrinking arenas wait for the device",
            ),
            (
                RuntimeOptions {
                    overlap: Some(false),
                    ..cuda.clone()
                },
                "the host waits for every block",
            ),
            (RuntimeOptions::default(), "the CPU"),
        ] {
            assert!(!settings.cuda_graphs_would_pay(&tally, 0.70), "{why}");
        }
    }

    #[test]
    fn small_batches_are_filled_on_cuda_without_cuda_graphs_unless_told() {
        let cuda = RuntimeOptions {
            device: Device::Cuda(0),
            ..RuntimeOptions::default()
        };
        let default = crate::EvalOptions::default();
        assert!(cuda.fills_small_batches(&default));
        // A grouping, not recorded as a setting of the arithmetic.
        assert_eq!(
            cuda.evaluated_on(&default),
            "cuda, tf32 on, mask batch 1, windows a pass 0"
        );
        let captured = RuntimeOptions {
            cuda_graphs: true,
            ..cuda.clone()
        };
        assert!(!captured.fills_small_batches(&default));
        assert!(!RuntimeOptions::default().fills_small_batches(&default));
        let told = crate::EvalOptions {
            fill_small_batches: Some(true),
            ..default.clone()
        };
        assert!(RuntimeOptions::default().fills_small_batches(&told));
        let no_reuse = crate::EvalOptions {
            reuse_prefixes: false,
            ..told
        };
        assert!(!cuda.fills_small_batches(&no_reuse));
    }

    #[test]
    fn graph_optimizations_away_from_the_default_are_recorded_on_every_device() {
        let default = crate::EvalOptions::default();
        let cpu = RuntimeOptions::default();
        assert_eq!(cpu.graph_optimization, GraphOptimization::Layout);
        assert_eq!(cpu.evaluated_on(&default), "cpu");
        let basic = RuntimeOptions {
            graph_optimization: GraphOptimization::Basic,
            ..cpu
        };
        assert_eq!(
            basic.evaluated_on(&default),
            "cpu, graph optimization basic"
        );
        let cuda_off = RuntimeOptions {
            device: Device::Cuda(0),
            graph_optimization: GraphOptimization::Off,
            ..basic
        };
        assert_eq!(
            cuda_off.evaluated_on(&default),
            "cuda, tf32 on, mask batch 1, windows a pass 0, graph optimization off"
        );
    }
}
