//! What the sessions of a model do with their working memory: ONNX Runtime's memory arenas,
//! one per session, and a reading of what they hold.
//!
//! An arena keeps the buffers a run has freed and hands them out again, so that a graph's
//! second run of a shape asks the system (or the CUDA driver) for nothing. A layered model has
//! a session per graph, so by default its memory grows with graphs × the largest call of each:
//! the reason batched masks once needed 15 GB on the CPU and ran a Llama-2-7B shape out of an
//! H200's memory. [`Arena`] chooses, [`ArenaUse`] measures (the same reading on every device,
//! without the weights or the driver's own memory that a process-wide reading includes).
//! One arena shared by all sessions would be the natural fix; it crashed ONNX Runtime's CUDA
//! provider at start (docs/benchmarks.md §5), so each session keeps its own.

use std::ffi::{c_char, CStr, CString};
use std::ptr;

use layerprune_core::Device;
use ort::memory::{Allocator, MemoryInfo};
use ort::session::Session;
use ort::AsPointer;

/// What a session's memory arena does with the buffers a run has freed. ONNX Runtime gives
/// every session an arena of its own, and a layered model has a session per graph (the
/// embedding, each block, the head), which run one after another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arena {
    /// Keeps them for the session's next run (ONNX Runtime's default): after a shape's first
    /// run nothing is allocated, but every graph holds the buffers of its largest call, so
    /// memory grows with graphs × the largest call. Fine for one mask's windows (and ~10 %
    /// faster than [`Arena::Off`] on SmolLM2 on the CPU); with masks batched through the blocks
    /// (80 windows a call) SmolLM2's 30 arenas grew past 15 GB on the CPU, and 32 masks a call
    /// ran a Llama-2-7B shape out of an H200's memory.
    Keep,
    /// Keeps them as [`Arena::Keep`] does, but on CUDA each region an arena adds is the size
    /// the run asked for (ONNX Runtime's `kSameAsRequested`, as [`Arena::Shrink`] grows),
    /// where by default each new region doubles the last. Why: in GPU run 3 (an H100,
    /// docs/benchmarks.md §5) the kept arenas held far more than a call needs: 24 GiB for one
    /// mask at a time on a Llama-2-7B shape (a block's call needs about 0.2 GiB of its 0.75),
    /// 23.7 GiB more with 8 masks a call on a TinyLlama-1.1B shape; 32 masks a call ran the 7B
    /// shape out of memory. Not yet measured: how much less it holds, and what the device's
    /// allocations it may make during a run cost. The CUDA provider only (the CPU provider's
    /// arena takes no such setting from a session).
    KeepExact,
    /// Gives the regions a run left free back after every run of a block or the head (ONNX
    /// Runtime's `memory.enable_memory_arena_shrinkage` run option; on CUDA the arenas also
    /// grow by what is asked, not in powers of two), so memory is the running graph's call
    /// plus the states kept (the prefix cache, the masks in flight), at the cost of allocating
    /// each call's buffers again; on CUDA freeing device memory waits for the device, so the
    /// host no longer runs ahead of it ([`crate::RuntimeOptions::overlap`]). The blocks write
    /// their outputs into the embedding session's arena, which is never shrunk: a kept state
    /// in a block's arena would hold the whole region around it (the graphs that join and
    /// split batched states on the device keep their outputs in their own arenas, which hold
    /// nothing else). ONNX Runtime never gives back an arena's first region (1 MiB on the
    /// CPU). Not with CUDA graphs, whose replays write to the addresses they were captured
    /// with.
    Shrink,
    /// No arena (the CPU provider only; the CUDA provider always has one): freed buffers go
    /// back to the system allocator at once.
    Off,
}

impl Arena {
    /// Its name as the flag and `evaluate --summary` write it.
    pub fn name(self) -> &'static str {
        match self {
            Arena::Keep => "keep",
            Arena::KeepExact => "keep-exact",
            Arena::Shrink => "shrink",
            Arena::Off => "off",
        }
    }

    /// The default for `device` with `mask_batch` masks a block call: [`Arena::Keep`] for one
    /// mask at a time; batched, [`Arena::Off`] on the CPU (1.6 GB instead of more than 15 GB
    /// on SmolLM2, docs/benchmarks.md) and [`Arena::Keep`] on CUDA until [`Arena::Shrink`]'s
    /// cost is measured there.
    pub fn default_for(device: Device, mask_batch: usize) -> Arena {
        match device {
            Device::Cpu if mask_batch > 1 => Arena::Off,
            _ => Arena::Keep,
        }
    }

    /// The `memory.enable_memory_arena_shrinkage` value naming `device`'s arena.
    pub(crate) fn shrinkage_target(device: Device) -> String {
        match device {
            Device::Cpu => "cpu:0".into(),
            Device::Cuda(index) => format!("gpu:{index}"),
        }
    }
}

/// What the arenas of a model's sessions hold, over the sessions that have one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArenaUse {
    /// Bytes the arenas hold now, taken from the device and not given back (with
    /// [`Arena::Keep`] close to the sum of every graph's largest call).
    pub reserved_bytes: u64,
    /// The most bytes one arena ever had handed out at once: one graph's largest call, plus
    /// the states it kept.
    pub largest_peak_bytes: u64,
    /// How many times the arenas gave free regions back ([`Arena::Shrink`]).
    pub shrinks: u64,
}

impl ArenaUse {
    /// The reading of `session`'s arena for `memory` (a device's); `None` when it has none
    /// ([`Arena::Off`]) or ONNX Runtime gives no statistics for it.
    pub(crate) fn of(session: &Session, memory: &MemoryInfo<'static>) -> Option<ArenaUse> {
        let allocator = Allocator::new(session, memory.clone()).ok()?;
        let api = ort::api();
        let mut pairs = ptr::null_mut();
        // SAFETY: the allocator is alive for the call; the pairs it returns are ours to
        // release, and their strings live until then.
        unsafe {
            let status = (api.AllocatorGetStats)(allocator.ptr(), &mut pairs);
            if ort::Error::result_from_status(status).is_err() || pairs.is_null() {
                return None;
            }
            let read = |key: &str| -> Option<u64> {
                let key = CString::new(key).ok()?;
                let value: *const c_char = (api.GetKeyValue)(pairs, key.as_ptr());
                if value.is_null() {
                    return None;
                }
                CStr::from_ptr(value).to_str().ok()?.parse().ok()
            };
            let reading = read("TotalAllocated").map(|reserved_bytes| ArenaUse {
                reserved_bytes,
                largest_peak_bytes: read("MaxInUse").unwrap_or(0),
                shrinks: read("NumArenaShrinkages").unwrap_or(0),
            });
            (api.ReleaseKeyValuePairs)(pairs);
            reading
        }
    }

    /// Two sets of arenas together.
    fn and(self, other: ArenaUse) -> ArenaUse {
        ArenaUse {
            reserved_bytes: self.reserved_bytes + other.reserved_bytes,
            largest_peak_bytes: self.largest_peak_bytes.max(other.largest_peak_bytes),
            shrinks: self.shrinks + other.shrinks,
        }
    }
}

impl std::iter::Sum for ArenaUse {
    fn sum<I: Iterator<Item = ArenaUse>>(readings: I) -> ArenaUse {
        readings.fold(ArenaUse::default(), ArenaUse::and)
    }
}
