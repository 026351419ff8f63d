//! The one CUDA stream that every session of a process queues its kernels on when the host does
//! not wait for each graph ([`crate::RuntimeOptions::overlap`]).
//!
//! ONNX Runtime's CUDA provider gives each session its own streams and, by default, waits at
//! the end of every run until the GPU has finished it. A layered model makes one run per block,
//! so the GPU idles while the host prepares and launches the next block's few dozen kernels
//! (on an H200, not waiting made a TinyLlama-1.1B shape 1.18× faster and a Llama-2-7B shape
//! 1.07×; docs/benchmarks.md §5). With every session on this
//! one stream, work is done in the order it was queued whatever session queued it, so a block
//! may read the previous block's output without the host waiting in between; the host waits
//! only where it reads a result (the head's NLL, a state copied to the host). The copies into
//! and out of the buffers of blocks replayed as CUDA graphs (`crate::captured`) are queued on
//! it too, so they are ordered with the runs.
//!
//! The stream comes from the CUDA runtime library that the CUDA provider itself loads
//! (`libcudart.so.13` for onnxruntime-gpu 1.31.1), found the same way (the loader's path).

use std::ffi::c_void;
use std::sync::OnceLock;

use crate::RuntimeError;

/// The CUDA runtime's names, newest first.
const LIBRARIES: [&str; 3] = ["libcudart.so.13", "libcudart.so.12", "libcudart.so"];

/// `cudaStreamNonBlocking`: the stream does not wait for the legacy default stream.
const NON_BLOCKING: u32 = 1;

type SetDevice = unsafe extern "C" fn(i32) -> i32;
type StreamCreate = unsafe extern "C" fn(*mut *mut c_void, u32) -> i32;
type StreamSynchronize = unsafe extern "C" fn(*mut c_void) -> i32;
type MemcpyAsync = unsafe extern "C" fn(*mut c_void, *const c_void, usize, u32, *mut c_void) -> i32;
type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
type GetErrorText = unsafe extern "C" fn(i32) -> *const std::ffi::c_char;

/// `cudaMemcpyDefault`: the direction from the pointers (unified addressing), so a state the
/// host made is copied as well as one on the device.
const INFERRED_DIRECTION: u32 = 4;

/// The CUDA runtime library and the calls this module makes, loaded once and kept for the
/// process (the shared stream lives as long).
struct CudaRuntime {
    name: &'static str,
    set_device: SetDevice,
    stream_create: StreamCreate,
    synchronize: StreamSynchronize,
    memcpy_async: MemcpyAsync,
    mem_get_info: MemGetInfo,
    error_name: GetErrorText,
    error_string: GetErrorText,
}

impl CudaRuntime {
    /// A failed call's status as the CUDA runtime names it: "CUDA error 35
    /// (cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime
    /// version)", where the number alone left the user to look it up; the two statuses of a
    /// host without a usable driver or GPU say so.
    fn describe(&self, status: i32) -> String {
        // SAFETY: both return a pointer to a static NUL-terminated string for any status
        // (an unknown one's "unrecognized error code").
        let text = |f: GetErrorText| unsafe {
            let pointer = f(status);
            (!pointer.is_null()).then(|| {
                std::ffi::CStr::from_ptr(pointer)
                    .to_string_lossy()
                    .into_owned()
            })
        };
        let named = match (text(self.error_name), text(self.error_string)) {
            (Some(name), Some(meaning)) => format!(" ({name}: {meaning})"),
            (Some(name), None) | (None, Some(name)) => format!(" ({name})"),
            (None, None) => String::new(),
        };
        let hint = match status {
            // cudaErrorInsufficientDriver, cudaErrorNoDevice
            35 => "; the NVIDIA driver is missing or older than this CUDA runtime needs",
            100 => "; no CUDA-capable GPU is visible (CUDA_VISIBLE_DEVICES?)",
            _ => "",
        };
        format!("CUDA error {status}{named}{hint}")
    }
}

static RUNTIME: OnceLock<Result<CudaRuntime, String>> = OnceLock::new();

fn load() -> Result<CudaRuntime, String> {
    let (library, name) = LIBRARIES
        .iter()
        // SAFETY: loading the CUDA runtime runs only its own initialisers.
        .find_map(|name| {
            unsafe { libloading::Library::new(*name) }
                .ok()
                .map(|l| (l, *name))
        })
        .ok_or_else(|| {
            format!(
                "none of {} could be loaded (the CUDA runtime the CUDA provider needs; put its \
                 folder in LD_LIBRARY_PATH)",
                LIBRARIES.join(", ")
            )
        })?;
    // SAFETY: the signatures are the CUDA runtime API's (cudaError_t is a C enum, an i32).
    let runtime = unsafe {
        CudaRuntime {
            name,
            set_device: symbol(&library, name, "cudaSetDevice")?,
            stream_create: symbol(&library, name, "cudaStreamCreateWithFlags")?,
            synchronize: symbol(&library, name, "cudaStreamSynchronize")?,
            memcpy_async: symbol(&library, name, "cudaMemcpyAsync")?,
            mem_get_info: symbol(&library, name, "cudaMemGetInfo")?,
            error_name: symbol(&library, name, "cudaGetErrorName")?,
            error_string: symbol(&library, name, "cudaGetErrorString")?,
        }
    };
    // The functions are used until the process ends, so the library stays loaded.
    std::mem::forget(library);
    Ok(runtime)
}

/// The function `function` of `library` (named `name` in errors).
///
/// # Safety
/// `T` must be the function's type.
unsafe fn symbol<T: Copy>(
    library: &libloading::Library,
    name: &str,
    function: &str,
) -> Result<T, String> {
    let with_nul = format!("{function}\0");
    // SAFETY: the caller's contract.
    unsafe { library.get::<T>(with_nul.as_bytes()) }
        .map(|symbol| *symbol)
        .map_err(|error| format!("{name}: {function}: {error}"))
}

/// The CUDA runtime, made current on `device`.
fn runtime_on(device: u32) -> Result<&'static CudaRuntime, String> {
    let runtime = RUNTIME.get_or_init(load).as_ref().map_err(Clone::clone)?;
    let index = i32::try_from(device).map_err(|_| format!("device index {device} too large"))?;
    // SAFETY: a plain CUDA runtime call with a valid argument.
    let status = unsafe { (runtime.set_device)(index) };
    if status != 0 {
        return Err(format!(
            "{}: cudaSetDevice({device}) failed with {}",
            runtime.name,
            runtime.describe(status)
        ));
    }
    Ok(runtime)
}

/// The process's shared stream, made once, on one device.
struct SharedStream {
    device: u32,
    /// `cudaStream_t`, kept as an address: it lives as long as the process.
    stream: usize,
    runtime: &'static CudaRuntime,
}

static SHARED: OnceLock<Result<SharedStream, String>> = OnceLock::new();

fn unavailable(device: u32, problem: String) -> RuntimeError {
    RuntimeError::DeviceUnavailable {
        device: layerprune_core::Device::Cuda(device),
        problem,
    }
}

fn make(device: u32) -> Result<SharedStream, String> {
    let runtime = runtime_on(device)?;
    let mut stream: *mut c_void = std::ptr::null_mut();
    // SAFETY: `stream` is a valid place for the new stream's handle.
    let status = unsafe { (runtime.stream_create)(&mut stream, NON_BLOCKING) };
    if status != 0 || stream.is_null() {
        return Err(format!(
            "{}: cudaStreamCreateWithFlags failed with {}",
            runtime.name,
            runtime.describe(status)
        ));
    }
    Ok(SharedStream {
        device,
        stream: stream as usize,
        runtime,
    })
}

/// Memory on one GPU as the CUDA runtime reports it: all of it, and the part in use by any
/// process (this one's CUDA context included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceMemory {
    pub used_bytes: usize,
    pub total_bytes: usize,
}

/// The memory of GPU `device` now (`cudaMemGetInfo`): read before a model is opened and after
/// it ran, the difference is what the run took (weights, the per-graph arenas, kept states).
pub fn device_memory(device: u32) -> Result<DeviceMemory, RuntimeError> {
    let runtime = runtime_on(device).map_err(|problem| unavailable(device, problem))?;
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: both are valid places for the call's results.
    let status = unsafe { (runtime.mem_get_info)(&mut free, &mut total) };
    if status != 0 {
        return Err(unavailable(
            device,
            format!(
                "{}: cudaMemGetInfo failed with {}",
                runtime.name,
                runtime.describe(status)
            ),
        ));
    }
    Ok(DeviceMemory {
        used_bytes: total.saturating_sub(free),
        total_bytes: total,
    })
}

/// The shared stream on `device` (made on first use), as the CUDA provider's
/// `user_compute_stream` takes it. One process uses one device this way.
pub(crate) fn shared_stream(device: u32) -> Result<*mut (), RuntimeError> {
    match SHARED.get_or_init(|| make(device)) {
        Ok(shared) if shared.device == device => Ok(shared.stream as *mut ()),
        Ok(shared) => Err(unavailable(
            device,
            format!(
                "this process already queues its work on cuda:{}; one process overlaps on one \
                 device",
                shared.device
            ),
        )),
        Err(problem) => Err(unavailable(device, problem.clone())),
    }
}

/// Waits until everything queued on the shared stream is done (nothing to wait for when no
/// session uses it): before the host reads device memory by any other path than a run of a
/// session on that stream.
pub(crate) fn wait_for_shared_stream() -> Result<(), RuntimeError> {
    let Some(Ok(shared)) = SHARED.get() else {
        return Ok(());
    };
    // SAFETY: the stream was made by `make` and is never destroyed.
    let status = unsafe { (shared.runtime.synchronize)(shared.stream as *mut c_void) };
    if status != 0 {
        return Err(unavailable(
            shared.device,
            format!(
                "cudaStreamSynchronize failed with {}",
                shared.runtime.describe(status)
            ),
        ));
    }
    Ok(())
}

/// Queues a copy of `bytes` bytes from `source` to `target` (device memory, or host memory the
/// CUDA runtime can address) on the shared stream: after whatever was queued there before (the run that wrote `source`),
/// before whatever is queued after (the run that reads `target`).
///
/// # Safety
/// `source` and `target` must be allocations of at least `bytes` bytes that stay
/// allocated until the stream has done the copy, and must not overlap.
pub(crate) unsafe fn copy_on_shared_stream(
    target: *mut c_void,
    source: *const c_void,
    bytes: usize,
) -> Result<(), RuntimeError> {
    let Some(Ok(shared)) = SHARED.get() else {
        return Err(RuntimeError::BadInput(
            "a copy on the shared CUDA stream was asked for before the stream was made".into(),
        ));
    };
    // SAFETY: the caller's contract; the stream was made by `make` and is never destroyed.
    let status = unsafe {
        (shared.runtime.memcpy_async)(
            target,
            source,
            bytes,
            INFERRED_DIRECTION,
            shared.stream as *mut c_void,
        )
    };
    if status != 0 {
        return Err(unavailable(
            shared.device,
            format!(
                "cudaMemcpyAsync of {bytes} bytes failed with {}",
                shared.runtime.describe(status)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where there is no GPU (CI, this project's development machines) the stream cannot be
    /// had, and saying why names the device; waiting then has nothing to wait for.
    #[test]
    fn without_a_gpu_the_stream_is_refused_and_waiting_is_free() {
        if std::path::Path::new("/dev/nvidia0").exists() {
            return; // a GPU host: the stream may well be made
        }
        let Err(error) = shared_stream(0) else {
            panic!("a CUDA stream was made without a GPU")
        };
        assert!(
            matches!(error, RuntimeError::DeviceUnavailable { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("cuda:0"), "{error}");
        wait_for_shared_stream().unwrap();
        let Err(error) = device_memory(0) else {
            panic!("GPU memory was read without a GPU")
        };
        assert!(error.to_string().contains("cuda:0"), "{error}");
    }
}
