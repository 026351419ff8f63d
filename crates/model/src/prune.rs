//! Writing a pruned layered model folder: the source folder's files minus the removed blocks'
//! graphs and the weight files only they use, with a rewritten manifest.
//!
//! Which weight files a graph uses is stored inside the graph: ONNX external-data entries name
//! the file by a path relative to the model folder (`weights/<hash>.bin`), read here with
//! onnx-protobuf ([`graph_external_data`]). A weight file is dropped only when no kept graph
//! refers to it. Only files listed in the manifest's `files` are copied (that list covers every
//! part of the model), and the tokenizer the manifest names, listed or not; other files of the
//! source folder, such as the exporter's `reference.json` outputs of the unpruned model,
//! describe another model and are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::external::read_graph;
use crate::{
    confined, model_id, take_source_file, write_folder_from_in_place_of, BlockRef, Manifest,
    ModelError, SourceFiles, MANIFEST_FILE,
};

/// What a pruned folder will hold: the new manifest and the files to copy.
#[derive(Clone, Debug)]
pub struct PrunedLayout {
    pub manifest: Manifest,
    /// Relative paths copied from the source folder: the new manifest's `files`, and its
    /// tokenizer where `files` does not list it.
    pub files: Vec<String>,
    /// Relative paths of the source folder left out.
    pub dropped: Vec<String>,
}

/// Plans the pruned folder of the model in `source` with `removed` blocks (indices in the
/// source model) deleted; `method` is recorded in the manifest's `pruned_from`. Nothing is
/// written; the plan is checked (blocks in range, at least one left, every weight file a kept
/// graph uses listed in the manifest). A quantized model keeps its `quantization` record, with
/// `quantized_matmuls` counted again over the graphs kept.
pub fn pruned_layout(
    source: &Path,
    removed: &[usize],
    method: &str,
) -> Result<PrunedLayout, ModelError> {
    let manifest = Manifest::load(source)?;
    let num_blocks = manifest.num_blocks;
    if let Some(&block) = removed.iter().find(|&&b| b >= num_blocks) {
        return Err(ModelError::BadRequest(format!(
            "block {block} is out of range for {} ({num_blocks} blocks)",
            source.display()
        )));
    }
    if removed.len() >= num_blocks {
        return Err(ModelError::BadRequest(format!(
            "removing {} of the {num_blocks} blocks of {} leaves no block",
            removed.len(),
            source.display()
        )));
    }
    let removed_graphs: BTreeSet<&str> = removed
        .iter()
        .map(|&b| manifest.blocks[b].file.as_str())
        .collect();
    let mut kept_references = BTreeSet::new();
    let mut removed_references = BTreeSet::new();
    // Every graph's external data, each checked to stay inside the folder.
    for (graph, references) in manifest.references(source)? {
        if removed_graphs.contains(graph.as_str()) {
            removed_references.extend(references);
        } else {
            kept_references.extend(references);
        }
    }
    let mut dropped: BTreeSet<String> = removed_graphs.iter().map(|g| g.to_string()).collect();
    dropped.extend(removed_references.difference(&kept_references).cloned());
    for weight in &kept_references {
        if !manifest.files.contains_key(weight) {
            return Err(ModelError::BadManifest {
                path: source.join(MANIFEST_FILE),
                problem: format!(
                    "a kept graph uses {weight}, which the manifest's `files` does not list"
                ),
            });
        }
    }

    let mut new_manifest = manifest.clone();
    new_manifest.blocks = manifest
        .blocks
        .iter()
        .enumerate()
        .filter(|(position, _)| !removed.contains(position))
        .enumerate()
        .map(|(index, (_, block))| BlockRef {
            index,
            original_index: block.original_index,
            file: block.file.clone(),
        })
        .collect();
    new_manifest.num_blocks = new_manifest.blocks.len();
    if let Some(mut record) = new_manifest.quantization.take() {
        recount_quantized(source, &new_manifest, &mut record)?;
        new_manifest.quantization = Some(record);
    }
    new_manifest.files = manifest
        .files
        .iter()
        .filter(|(path, _)| !dropped.contains(*path))
        .map(|(path, hash)| (path.clone(), hash.clone()))
        .collect::<BTreeMap<_, _>>();
    let mut removed_sorted = removed.to_vec();
    removed_sorted.sort_unstable();
    let removed_original: Vec<usize> = removed_sorted
        .iter()
        .map(|&b| manifest.blocks[b].original_index)
        .collect();
    new_manifest.extra.insert(
        "pruned_from".to_string(),
        serde_json::json!({
            "model_id": model_id(source)?,
            "num_blocks": num_blocks,
            "removed_blocks": removed_sorted,
            "removed_original_indices": removed_original,
            "method": method,
        }),
    );
    let mut files: Vec<String> = new_manifest.files.keys().cloned().collect();
    files.extend(manifest.unlisted_tokenizer(source)?.map(String::from));
    Ok(PrunedLayout {
        files,
        dropped: dropped.into_iter().collect(),
        manifest: new_manifest,
    })
}

/// The quantization record's `operator` of an int8 folder: a `DequantizeLinear` in front of
/// each quantized MatMul (written by `layerprune_quantize`, read here).
pub const INT8_OPERATOR: &str = "DequantizeLinear+MatMul";
/// The quantization record's `operator` of an int4 folder: ONNX Runtime's `MatMulNBits` in
/// place of each quantized MatMul.
pub const INT4_OPERATOR: &str = "com.microsoft.MatMulNBits";

/// The node `quantize` puts in a graph for each MatMul it quantized, by the record's
/// `operator`: one `DequantizeLinear` in front of the MatMul (int8), or the `MatMulNBits` that
/// replaced it (int4).
fn quantized_node(operator: &str) -> Option<(&'static str, &'static [&'static str])> {
    match operator {
        INT8_OPERATOR => Some(("DequantizeLinear", &["", "ai.onnx"])),
        INT4_OPERATOR => Some(("MatMulNBits", &["com.microsoft"])),
        _ => None,
    }
}

/// Sets the quantization `record`'s `quantized_matmuls` of a pruned folder to the MatMuls of
/// the graphs of its `manifest` (the source's embedding and heads, and the kept blocks),
/// counted in the graph files of `source` as [`quantized_node`] says; the record holds no count
/// per graph. A record whose operator this build does not know loses the count rather than keep
/// a wrong one.
fn recount_quantized(
    source: &Path,
    manifest: &Manifest,
    record: &mut serde_json::Value,
) -> Result<(), ModelError> {
    let Some(fields) = record.as_object_mut() else {
        return Ok(());
    };
    let operator = fields
        .get("operator")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let Some((op_type, domains)) = quantized_node(operator) else {
        fields.remove("quantized_matmuls");
        return Ok(());
    };
    // Each file once (a graph the embedding and a head shared would count twice otherwise).
    let graphs: BTreeSet<&str> = manifest.graph_files().collect();
    let mut count = 0usize;
    for graph in graphs {
        let model = read_graph(&confined(source, graph)?)?;
        count += model
            .graph
            .iter()
            .flat_map(|g| &g.node)
            .filter(|n| n.op_type == op_type && domains.contains(&n.domain.as_str()))
            .count();
    }
    fields.insert("quantized_matmuls".into(), count.into());
    Ok(())
}

/// Writes the folder `layout` plans ([`pruned_layout`] of `source`) at `dest` with
/// [`write_folder_from`](crate::write_folder_from): the kept files copied from `source` (or
/// hard-linked, as `source_files` says), and the new manifest. `dest` is either absent, the old
/// folder, or complete; an existing `dest` is refused unless `overwrite`, and so is a `dest`
/// that is, is inside, or contains `source`. Every path is [`confined`] to its folder, and no file is
/// copied onto its source. `in_place_of`: the earlier folder at `dest`, set aside
/// ([`crate::set_folder_aside`]), whose permission bits the new folder gets
/// ([`write_folder_from_in_place_of`]).
pub fn write_pruned_model(
    source: &Path,
    dest: &Path,
    layout: &PrunedLayout,
    source_files: SourceFiles,
    overwrite: bool,
    in_place_of: Option<&crate::FolderAside>,
) -> Result<(), ModelError> {
    write_folder_from_in_place_of(source, dest, overwrite, in_place_of, |folder| {
        for relative in &layout.files {
            take_source_file(
                &confined(source, relative)?,
                &confined(folder, relative)?,
                source_files,
            )?;
        }
        layout.manifest.write(folder)
    })
}

/// [`pruned_layout`] then [`write_pruned_model`]: writes the model in `source` with the
/// `removed` blocks deleted to `dest`, its files copied ([`SourceFiles::Copy`]), and returns
/// what was written.
pub fn prune_folder(
    source: &Path,
    dest: &Path,
    removed: &[usize],
    method: &str,
    overwrite: bool,
) -> Result<PrunedLayout, ModelError> {
    let layout = pruned_layout(source, removed, method)?;
    write_pruned_model(source, dest, &layout, SourceFiles::Copy, overwrite, None)?;
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{sha256_file, GraphRef, FORMAT};
    use onnx_protobuf::tensor_proto::DataLocation;
    use onnx_protobuf::{GraphProto, Message, ModelProto, StringStringEntryProto, TensorProto};
    use protobuf::{EnumOrUnknown, MessageField};
    use std::fs;

    /// An ONNX file whose initializers are stored in `weights`.
    fn graph_bytes(weights: &[&str]) -> Vec<u8> {
        let initializer = weights
            .iter()
            .enumerate()
            .map(|(i, location)| TensorProto {
                name: format!("w{i}"),
                data_location: EnumOrUnknown::new(DataLocation::EXTERNAL),
                external_data: vec![StringStringEntryProto {
                    key: "location".into(),
                    value: location.to_string(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        ModelProto {
            graph: MessageField::some(GraphProto {
                initializer,
                ..Default::default()
            }),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap()
    }

    /// A 3-block folder: the embedding and head share `weights/tied.bin`, each block has its own
    /// weight file, and blocks 1 and 2 share `weights/shared12.bin`.
    fn fixture(dir: &Path) {
        let graphs: [(&str, Vec<&str>); 5] = [
            ("embed.onnx", vec!["weights/tied.bin"]),
            ("block_000.onnx", vec!["weights/b0.bin"]),
            (
                "block_001.onnx",
                vec!["weights/b1.bin", "weights/shared12.bin"],
            ),
            (
                "block_002.onnx",
                vec!["weights/b2.bin", "weights/shared12.bin"],
            ),
            ("head.onnx", vec!["weights/tied.bin"]),
        ];
        fs::create_dir_all(dir.join("weights")).unwrap();
        let mut files = BTreeMap::new();
        for (graph, weights) in &graphs {
            fs::write(dir.join(graph), graph_bytes(weights)).unwrap();
            for weight in weights {
                fs::write(dir.join(weight), weight.as_bytes()).unwrap();
            }
        }
        fs::write(dir.join("tokenizer.json"), b"{}").unwrap();
        fs::write(dir.join("reference.json"), b"{}").unwrap();
        for entry in walk(dir) {
            if entry != MANIFEST_FILE && entry != "reference.json" {
                files.insert(entry.clone(), sha256_file(&dir.join(&entry)).unwrap());
            }
        }
        let graph = |file: &str| GraphRef {
            file: file.into(),
            input: Some("x".into()),
            inputs: None,
            output: "y".into(),
        };
        let mut extra = BTreeMap::new();
        extra.insert("exporter".to_string(), serde_json::json!({"name": "test"}));
        let manifest = Manifest {
            format: FORMAT.into(),
            format_version: 1,
            architecture: "llama".into(),
            num_blocks: 3,
            hidden_size: 4,
            vocab_size: 8,
            dtype: "float32".into(),
            opset: 17,
            embedding: graph("embed.onnx"),
            blocks: (0..3)
                .map(|i| BlockRef {
                    index: i,
                    original_index: i,
                    file: format!("block_{i:03}.onnx"),
                })
                .collect(),
            head: graph("head.onnx"),
            head_logits: None,
            tokenizer: "tokenizer.json".into(),
            files,
            quantization: None,
            extra,
        };
        manifest.write(dir).unwrap();
    }

    /// Relative paths of every file under `dir`, sorted.
    fn walk(dir: &Path) -> Vec<String> {
        fn visit(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    visit(root, &path, out);
                } else {
                    let relative = path.strip_prefix(root).unwrap();
                    out.push(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let mut out = Vec::new();
        visit(dir, dir, &mut out);
        out.sort();
        out
    }

    #[test]
    fn a_pruned_folder_keeps_exactly_what_the_kept_graphs_use() {
        let root = tempfile::tempdir().unwrap();
        let source = root.path().join("model");
        fixture(&source);
        let dest = root.path().join("out").join("pruned");
        let layout = prune_folder(&source, &dest, &[1, 0], "test", false).unwrap();
        assert_eq!(
            layout.dropped,
            vec![
                "block_000.onnx",
                "block_001.onnx",
                "weights/b0.bin",
                "weights/b1.bin"
            ]
        );
        assert_eq!(
            walk(&dest),
            vec![
                "block_002.onnx",
                "embed.onnx",
                "head.onnx",
                MANIFEST_FILE,
                "tokenizer.json",
                "weights/b2.bin",
                "weights/shared12.bin",
                "weights/tied.bin",
            ]
        );
        let manifest = Manifest::load(&dest).unwrap();
        manifest.verify_files(&dest).unwrap();
        assert_eq!(manifest.num_blocks, 1);
        assert_eq!(manifest.original_indices(), vec![2]);
        assert_eq!(manifest.blocks[0].index, 0);
        assert_eq!(manifest.extra["exporter"]["name"], "test");
        assert_eq!(
            manifest.extra["pruned_from"],
            serde_json::json!({
                "model_id": model_id(&source).unwrap(),
                "num_blocks": 3,
                "removed_blocks": [0, 1],
                "removed_original_indices": [0, 1],
                "method": "test",
            })
        );
        assert_eq!(
            fs::read(dest.join(MANIFEST_FILE)).unwrap(),
            manifest.to_json()
        );

        // Pruning the pruned model again maps positions back to original indices.
        let again = pruned_layout(&dest, &[], "none").unwrap();
        assert_eq!(again.manifest.original_indices(), vec![2]);
        assert!(again.dropped.is_empty());
        assert_eq!(
            again.manifest.extra["pruned_from"]["removed_original_indices"],
            serde_json::json!([])
        );

        // The destination exists now: refused without overwrite, replaced with it.
        let error = prune_folder(&source, &dest, &[2], "test", false).unwrap_err();
        assert!(error.to_string().contains("already exists"), "{error}");
        assert_eq!(Manifest::load(&dest).unwrap().num_blocks, 1);
        prune_folder(&source, &dest, &[2], "test", true).unwrap();
        let manifest = Manifest::load(&dest).unwrap();
        assert_eq!(manifest.original_indices(), vec![0, 1]);
        assert!(dest.join("weights/shared12.bin").exists());
        assert!(!dest.join("weights/b2.bin").exists());
        assert_eq!(walk(dest.parent().unwrap()).len(), walk(&dest).len());
    }

    /// Gives the graph `file` of the folder `dir` the nodes `(op_type, domain)` (keeping its
    /// weight files) and lists its new sha256.
    fn set_nodes(dir: &Path, file: &str, weights: &[&str], nodes: &[(&str, &str)]) {
        let mut model = ModelProto::parse_from_bytes(&graph_bytes(weights)).unwrap();
        let graph = model.graph.as_mut().unwrap();
        graph.node = nodes
            .iter()
            .enumerate()
            .map(|(i, (op_type, domain))| onnx_protobuf::NodeProto {
                name: format!("n{i}"),
                op_type: op_type.to_string(),
                domain: domain.to_string(),
                ..Default::default()
            })
            .collect();
        fs::write(dir.join(file), model.write_to_bytes().unwrap()).unwrap();
        let mut manifest = Manifest::load(dir).unwrap();
        manifest
            .files
            .insert(file.into(), sha256_file(&dir.join(file)).unwrap());
        manifest.write(dir).unwrap();
    }

    #[test]
    fn pruning_a_quantized_folder_counts_the_kept_graphs_quantized_matmuls() {
        for (operator, node, domain) in [
            ("com.microsoft.MatMulNBits", "MatMulNBits", "com.microsoft"),
            ("DequantizeLinear+MatMul", "DequantizeLinear", ""),
        ] {
            let root = tempfile::tempdir().unwrap();
            let source = root.path().join("model");
            fixture(&source);
            // Blocks 0, 1 and 2 hold 1, 2 and 3 quantized MatMuls, the head 1, the embedding
            // none; a float MatMul and another domain's node of the same name do not count.
            set_nodes(
                &source,
                "embed.onnx",
                &["weights/tied.bin"],
                &[("Gather", "")],
            );
            set_nodes(
                &source,
                "block_000.onnx",
                &["weights/b0.bin"],
                &[(node, domain), ("MatMul", ""), (node, "org.other")],
            );
            set_nodes(
                &source,
                "block_001.onnx",
                &["weights/b1.bin", "weights/shared12.bin"],
                &[(node, domain), (node, domain)],
            );
            set_nodes(
                &source,
                "block_002.onnx",
                &["weights/b2.bin", "weights/shared12.bin"],
                &[(node, domain), (node, domain), (node, domain)],
            );
            set_nodes(
                &source,
                "head.onnx",
                &["weights/tied.bin"],
                &[(node, domain)],
            );
            let mut manifest = Manifest::load(&source).unwrap();
            manifest.quantization = Some(serde_json::json!({
                "scheme": "int4",
                "operator": operator,
                "quantized_matmuls": 7,
                "source_model_id": "float",
            }));
            manifest.write(&source).unwrap();

            let dest = root.path().join("pruned");
            let layout = prune_folder(&source, &dest, &[1], "test", false).unwrap();
            let record = layout.manifest.quantization.as_ref().unwrap();
            assert_eq!(record["quantized_matmuls"], 1 + 3 + 1, "{operator}");
            assert_eq!(record["operator"], operator);
            assert_eq!(record["source_model_id"], "float");
            let written = Manifest::load(&dest).unwrap();
            assert_eq!(written.quantization.as_ref(), Some(record));
            // Nothing removed: the count stands.
            let same = pruned_layout(&source, &[], "none").unwrap();
            assert_eq!(same.manifest.quantization.unwrap()["quantized_matmuls"], 7);

            // An operator this build does not know: no count rather than a wrong one.
            let mut manifest = Manifest::load(&source).unwrap();
            manifest.quantization.as_mut().unwrap()["operator"] = "future.Op".into();
            manifest.write(&source).unwrap();
            let layout = pruned_layout(&source, &[1], "test").unwrap();
            let record = layout.manifest.quantization.unwrap();
            assert!(record.get("quantized_matmuls").is_none(), "{record}");
            assert_eq!(record["operator"], "future.Op");
        }
    }

    /// A tokenizer the manifest names but does not list in `files` (read unchecked by the
    /// runtime) is the pruned model's too: copied, still unlisted. Before, the pruned folder
    /// named a tokenizer it lacked.
    #[test]
    fn an_unlisted_tokenizer_is_copied_too() {
        let root = tempfile::tempdir().unwrap();
        let source = root.path().join("model");
        fixture(&source);
        let dest = root.path().join("pruned");
        // Listed by another spelling: copied once, as listed.
        let mut manifest = Manifest::load(&source).unwrap();
        manifest.tokenizer = "./tokenizer.json".into();
        manifest.write(&source).unwrap();
        let layout = prune_folder(&source, &dest, &[1], "test", false).unwrap();
        assert!(!layout.files.contains(&"./tokenizer.json".to_string()));
        Manifest::load(&dest).unwrap().verify_files(&dest).unwrap();

        manifest.tokenizer = "tokenizer.json".into();
        manifest.files.remove("tokenizer.json");
        manifest.write(&source).unwrap();
        fs::remove_dir_all(&dest).unwrap();
        let layout = prune_folder(&source, &dest, &[1], "test", false).unwrap();
        assert!(layout.files.contains(&"tokenizer.json".to_string()));
        assert_eq!(fs::read(dest.join("tokenizer.json")).unwrap(), b"{}");
        let pruned = Manifest::load(&dest).unwrap();
        assert!(!pruned.files.contains_key("tokenizer.json"));
        pruned.verify_files(&dest).unwrap();

        // A source without the file: nothing to copy, as before.
        fs::remove_file(source.join("tokenizer.json")).unwrap();
        let layout = prune_folder(&source, &dest, &[1], "test", true).unwrap();
        assert!(!layout.files.contains(&"tokenizer.json".to_string()));
        assert!(!dest.join("tokenizer.json").exists());
    }

    #[test]
    fn bad_plans_are_refused_before_anything_is_written() {
        let root = tempfile::tempdir().unwrap();
        let source = root.path().join("model");
        fixture(&source);
        let dest = root.path().join("pruned");
        let error = prune_folder(&source, &dest, &[3], "test", false).unwrap_err();
        assert!(
            error.to_string().contains("block 3 is out of range"),
            "{error}"
        );
        let error = prune_folder(&source, &dest, &[0, 1, 2], "test", false).unwrap_err();
        assert!(error.to_string().contains("leaves no block"), "{error}");

        // A kept graph using a weight file the manifest does not list.
        let mut manifest = Manifest::load(&source).unwrap();
        manifest.files.remove("weights/b2.bin");
        manifest.write(&source).unwrap();
        let error = prune_folder(&source, &dest, &[0], "test", false).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("a kept graph uses weights/b2.bin"),
            "{error}"
        );
        // Removing the only graph that uses it is fine.
        pruned_layout(&source, &[2], "test").unwrap();
        assert!(!dest.exists());
        assert_eq!(
            walk(root.path())
                .iter()
                .filter(|f| f.starts_with("pruned"))
                .count(),
            0
        );
    }
}
