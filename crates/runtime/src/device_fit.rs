//! Whether a model's weights can fit in a GPU's free memory, checked before any graph opens.
//!
//! Why: ONNX Runtime's CUDA provider copies every session's initializers to the device, so a
//! model larger than the GPU's free memory (a 70B model in bf16, 140 GB, on one 80 GB GPU) failed
//! part-way through opening its graphs, after loading many of them, with the provider's bare
//! "CUDA failure 2: out of memory". Now it is refused at once, with the two sizes and the ways
//! out. Refused only when the weights cannot fit whatever ONNX Runtime shares: each file counted
//! once. Sessions do not share initializers, so a file two graphs read (tied embedding and head
//! weights) is on the device twice; when only the once-counted bytes fit, a warning says so.

use std::path::Path;

use crate::cuda::DeviceMemory;
use crate::manifest::GraphBytes;
use crate::RuntimeError;

/// Refuses `weights` (the model folder `dir`'s graphs opened, [`Manifest::graph_bytes`]) that
/// cannot fit in what `memory` leaves free on GPU `device`; `Some(warning)` when only each file
/// counted once fits.
///
/// [`Manifest::graph_bytes`]: crate::manifest::Manifest::graph_bytes
pub(crate) fn check_fits(
    weights: GraphBytes,
    memory: DeviceMemory,
    device: u32,
    dir: &Path,
) -> Result<Option<String>, RuntimeError> {
    let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
    let free = memory.total_bytes.saturating_sub(memory.used_bytes) as u64;
    let on_device = format!(
        "the {:.1} GiB free on cuda:{device} ({:.1} GiB, {:.1} GiB of it in use)",
        gib(free),
        gib(memory.total_bytes as u64),
        gib(memory.used_bytes as u64)
    );
    if weights.distinct > free {
        return Err(RuntimeError::BadInput(format!(
            "{}: its graphs and weights take {:.1} GiB, more than {on_device}: run it on a GPU \
             with more free memory, with --device cpu, or quantize it first (`quantize --scheme \
             int4`, docs/quantization.md)",
            dir.display(),
            gib(weights.distinct)
        )));
    }
    Ok((weights.per_graph > free).then(|| {
        format!(
            "{}: its graphs and weights take {:.1} GiB, {:.1} GiB as ONNX Runtime's sessions hold \
             them (a file two graphs read, such as tied embedding and head weights, is held \
             twice), more than {on_device}: opening it may run out of GPU memory",
            dir.display(),
            gib(weights.distinct),
            gib(weights.per_graph)
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: usize = 1 << 30;

    #[test]
    fn weights_beyond_the_free_memory_are_refused_with_both_sizes() {
        let memory = DeviceMemory {
            used_bytes: 2 * GIB,
            total_bytes: 80 * GIB,
        };
        let dir = Path::new("models/llama-70b");
        let weights = |distinct: usize, per_graph: usize| GraphBytes {
            distinct: distinct as u64,
            per_graph: per_graph as u64,
        };
        let refused = check_fits(weights(140 * GIB, 141 * GIB), memory, 1, dir).unwrap_err();
        let text = refused.to_string();
        assert!(
            text.starts_with("models/llama-70b: its graphs and weights take 140.0 GiB")
                && text.contains("78.0 GiB free on cuda:1 (80.0 GiB, 2.0 GiB of it in use)")
                && text.contains("--device cpu")
                && text.contains("quantize"),
            "{text}"
        );
        // Counted once it fits, held twice it does not: a warning, not a refusal.
        let warning = check_fits(weights(77 * GIB, 79 * GIB), memory, 1, dir)
            .unwrap()
            .unwrap();
        assert!(
            warning.contains("77.0 GiB, 79.0 GiB as ONNX Runtime's sessions hold them"),
            "{warning}"
        );
        assert_eq!(
            check_fits(weights(13 * GIB, 14 * GIB), memory, 1, dir).unwrap(),
            None
        );
    }
}
