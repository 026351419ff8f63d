//! Whether a model's weights can fit in a GPU's free memory, checked before any graph opens.
//!
//! Why: ONNX Runtime's CUDA provider copies every session's initializers to the device, so a
//! model larger than the GPU's free memory (a 70B model in bf16, 140 GB, on one 80 GB GPU) failed
//! part-way through opening its graphs, after loading many of them, with the provider's bare
//! "CUDA failure 2: out of memory". Now it is refused at once, with the two sizes and the ways
//! out. Refused only when the weights cannot fit whatever ONNX Runtime shares: each file counted
//! once. Sessions do not share initializers, so a file two graphs read (tied embedding and head
//! weights) is on the device twice; when only the once-counted bytes fit, a warning says so.

use std::collections::BTreeSet;
use std::path::Path;

use crate::cuda::DeviceMemory;
use crate::manifest::Manifest;
use crate::RuntimeError;

/// The bytes a set of graphs puts on the device: the graph files and the external-data files
/// they read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WeightBytes {
    /// Each file once: what the device holds at the least.
    pub distinct: u64,
    /// Summed over the graphs, a file each graph reads counted for each: what sessions that
    /// each hold their own copy take.
    pub per_session: u64,
}

/// The bytes of `graphs` (folder-relative graph files of `manifest`) and of the external-data
/// files each reads.
pub(crate) fn weight_bytes(
    manifest: &Manifest,
    dir: &Path,
    graphs: &[&str],
) -> Result<WeightBytes, RuntimeError> {
    let references = manifest.references(dir)?;
    let size = |file: &str| -> Result<u64, RuntimeError> {
        let path = dir.join(file);
        std::fs::metadata(&path).map(|m| m.len()).map_err(|e| {
            RuntimeError::BadInput(format!("{}: cannot read its size: {e}", path.display()))
        })
    };
    let mut seen = BTreeSet::new();
    let (mut distinct, mut per_session) = (0u64, 0u64);
    for &graph in graphs {
        let reads = references.get(graph).into_iter().flatten();
        for file in std::iter::once(graph).chain(reads.map(String::as_str)) {
            let bytes = size(file)?;
            per_session += bytes;
            if seen.insert(file) {
                distinct += bytes;
            }
        }
    }
    Ok(WeightBytes {
        distinct,
        per_session,
    })
}

/// Refuses `weights` that cannot fit in what `memory` leaves free on GPU `device` (the model
/// folder `dir`); `Some(warning)` when only each file counted once fits.
pub(crate) fn check_fits(
    weights: WeightBytes,
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
    Ok((weights.per_session > free).then(|| {
        format!(
            "{}: its graphs and weights take {:.1} GiB, {:.1} GiB as ONNX Runtime's sessions hold \
             them (a file two graphs read, such as tied embedding and head weights, is held \
             twice), more than {on_device}: opening it may run out of GPU memory",
            dir.display(),
            gib(weights.distinct),
            gib(weights.per_session)
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
        let weights = |distinct: usize, per_session: usize| WeightBytes {
            distinct: distinct as u64,
            per_session: per_session as u64,
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

    #[test]
    fn a_file_two_graphs_read_counts_once_and_for_each() {
        // The fixture ties its embedding and head weights: embed.onnx and head.onnx read one
        // file.
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/fixtures/tiny-llama");
        let manifest = Manifest::load(&dir).unwrap();
        let references = manifest.references(&dir).unwrap();
        let shared: Vec<&String> = references["embed.onnx"]
            .intersection(&references["head.onnx"])
            .collect();
        assert_eq!(shared.len(), 1, "{references:?}");
        let shared_bytes = std::fs::metadata(dir.join(shared[0])).unwrap().len();

        let both = weight_bytes(&manifest, &dir, &["embed.onnx", "head.onnx"]).unwrap();
        assert_eq!(both.per_session, both.distinct + shared_bytes);
        let embed = weight_bytes(&manifest, &dir, &["embed.onnx"]).unwrap();
        let head = weight_bytes(&manifest, &dir, &["head.onnx"]).unwrap();
        assert_eq!(both.per_session, embed.per_session + head.per_session);
        assert_eq!(embed.distinct, embed.per_session);
        // Every graph the model opens: every weight file once, and the graph files.
        let graphs: Vec<&str> = std::iter::once(manifest.embedding.file.as_str())
            .chain(manifest.blocks.iter().map(|b| b.file.as_str()))
            .chain([manifest.head.file.as_str()])
            .collect();
        let all = weight_bytes(&manifest, &dir, &graphs).unwrap();
        let weight_files: u64 = manifest
            .files
            .keys()
            .filter(|f| f.starts_with("weights/"))
            .map(|f| std::fs::metadata(dir.join(f)).unwrap().len())
            .sum();
        assert!(all.distinct > weight_files, "{all:?} against {weight_files}");
    }
}
