//! The committed tiny model (`data/fixtures/tiny-llama`): its graphs' weight files as read
//! through onnx-protobuf, and a pruned copy of it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use layerprune_model::{graph_external_data, prune_folder, Manifest, MANIFEST_FILE};

fn fixture() -> PathBuf {
    layerprune_tests::tiny_model_dir()
}

/// How weight files were found before the graphs were parsed: every `weights/<name>.bin`
/// string in the graph's bytes. Kept as the oracle the parsed references must match.
fn scanned_weight_files(bytes: &[u8]) -> BTreeSet<String> {
    const PREFIX: &[u8] = b"weights/";
    let mut found = BTreeSet::new();
    let mut start = 0;
    while let Some(offset) = bytes[start..]
        .windows(PREFIX.len())
        .position(|window| window == PREFIX)
    {
        let name_start = start + offset + PREFIX.len();
        let name_len = bytes[name_start..]
            .iter()
            .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            .count();
        let run = &bytes[name_start..name_start + name_len];
        if let Some(end) = run.windows(4).position(|w| w == b".bin").filter(|&e| e > 0) {
            found.insert(format!(
                "weights/{}",
                String::from_utf8_lossy(&run[..end + 4])
            ));
        }
        start = name_start + name_len;
    }
    found
}

#[test]
fn parsed_weight_references_match_the_byte_scan_on_every_fixture_graph() {
    let dir = fixture();
    let manifest = Manifest::load(&dir).unwrap();
    let mut graphs = 0;
    for graph in manifest.graph_files() {
        let path = dir.join(graph);
        let parsed = graph_external_data(&path).unwrap();
        let scanned = scanned_weight_files(&std::fs::read(&path).unwrap());
        assert_eq!(parsed, scanned, "{graph}");
        assert!(!parsed.is_empty(), "{graph} uses no weight file");
        graphs += 1;
    }
    assert_eq!(
        graphs,
        manifest.num_blocks + 2 + usize::from(manifest.head_logits.is_some())
    );
}

#[test]
fn a_pruned_fixture_verifies_and_keeps_the_other_blocks_weights() {
    let source = fixture();
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("pruned");
    let layout = prune_folder(&source, &dest, &[2, 4], "test", false).unwrap();
    let manifest = Manifest::load(&dest).unwrap();
    manifest.verify_files(&dest).unwrap();
    assert_eq!(manifest, layout.manifest);
    assert_eq!(
        std::fs::read(dest.join(MANIFEST_FILE)).unwrap(),
        manifest.to_json()
    );
    let original = Manifest::load(&source).unwrap();
    assert_eq!(manifest.num_blocks, original.num_blocks - 2);
    for block in [2, 4] {
        let graph = &original.blocks[block].file;
        assert!(layout.dropped.contains(graph));
        assert!(!dest.join(graph).exists());
    }
    // Every file left out is a removed block's graph or a weight file only they used.
    let kept: BTreeSet<String> = manifest
        .graph_files()
        .flat_map(|g| graph_external_data(&dest.join(g)).unwrap())
        .collect();
    for dropped in layout.dropped.iter().filter(|f| f.starts_with("weights/")) {
        assert!(!kept.contains(dropped), "{dropped} is still used");
    }
    assert!(!dest.join("reference.json").exists());
}

/// A file given where a model folder is expected (a merged .onnx, the manifest itself) is
/// refused saying so, not with "Not a directory" from the file system.
#[test]
fn a_file_given_as_the_model_folder_is_refused_saying_what_it_is() {
    let manifest = fixture().join("manifest.json");
    let message = Manifest::load(&manifest).unwrap_err().to_string();
    assert!(
        message.contains("a file, not a layered model folder")
            && message.contains("give the folder that holds it"),
        "{message}"
    );
    let graph = fixture().join("embed.onnx");
    let message = Manifest::load(&graph).unwrap_err().to_string();
    assert!(
        message.contains("embed.onnx: a file, not a layered model folder"),
        "{message}"
    );
}

/// The fixture ties its embedding and head weights: embed.onnx and head.onnx read one file,
/// which `graph_bytes` counts once in `distinct` and for each graph in `per_graph` (ONNX
/// Runtime's sessions each hold their own copy).
#[test]
fn a_file_two_graphs_read_counts_once_and_for_each() {
    let dir = fixture();
    let manifest = Manifest::load(&dir).unwrap();
    let references = manifest.references(&dir).unwrap();
    let shared: Vec<&String> = references["embed.onnx"]
        .intersection(&references["head.onnx"])
        .collect();
    assert_eq!(shared.len(), 1, "{references:?}");
    let size = |file: &str| std::fs::metadata(dir.join(file)).unwrap().len();

    let both = manifest
        .graph_bytes(&dir, &["embed.onnx", "head.onnx"])
        .unwrap();
    assert_eq!(both.per_graph, both.distinct + size(shared[0]));
    let embed = manifest.graph_bytes(&dir, &["embed.onnx"]).unwrap();
    let head = manifest.graph_bytes(&dir, &["head.onnx"]).unwrap();
    assert_eq!(both.per_graph, embed.per_graph + head.per_graph);
    assert_eq!(embed.distinct, embed.per_graph);

    // The graphs evaluation opens: every weight file once, and the graph files.
    let graphs = manifest.evaluated_graphs();
    assert_eq!(graphs.len(), manifest.num_blocks + 2);
    let all = manifest.graph_bytes(&dir, &graphs).unwrap();
    let weights: u64 = manifest
        .files
        .keys()
        .filter(|f| f.starts_with("weights/"))
        .map(|f| size(f))
        .sum();
    let graph_files: u64 = graphs.iter().map(|g| size(g)).sum();
    assert_eq!(all.distinct, weights + graph_files, "{all:?}");
}

/// The manifest and the model id come from one read of manifest.json: the id is the sha256 of
/// the bytes the manifest was parsed from, the same id `model_id` gives the folder.
#[test]
fn the_manifest_and_its_model_id_are_read_together() {
    let (manifest, id) = Manifest::load_with_id(&fixture()).unwrap();
    assert_eq!(manifest, Manifest::load(&fixture()).unwrap());
    assert_eq!(id, layerprune_model::model_id(&fixture()).unwrap());
}
