//! The committed tiny model (`data/fixtures/tiny-llama`), quantized and run end to end through
//! `layerprune-runtime` as `evaluate` runs it: the folder loads with its hashes verified, and
//! its logits and NLL stay near transformers' reference, int8 nearer than int4.

use std::path::{Path, PathBuf};

use layerprune_quantize::{
    quantize_folder, write_folder, FolderOptions, QuantizeError, QuantizedFolder, Record, Scheme,
    SourceFiles,
};
use layerprune_runtime::{model_id, LayeredModel, Manifest, RuntimeOptions};
use ndarray::Array2;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    input_ids: Vec<Vec<u32>>,
    logits: Vec<Vec<Vec<f32>>>,
    nll: Vec<Vec<f64>>,
}

fn fixture() -> PathBuf {
    layerprune_tests::tiny_model_dir()
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(fixture().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn options(scheme: Scheme) -> FolderOptions {
    FolderOptions {
        scheme,
        exclude_head: false,
        verify: true,
        calibration: None,
        threads: 0,
    }
}

fn int4(block_size: usize) -> Scheme {
    Scheme::Int4 {
        block_size,
        accuracy_level: 0,
    }
}

fn folder_bytes(dir: &Path) -> u64 {
    let manifest = Manifest::load(dir).unwrap();
    manifest
        .files
        .keys()
        .map(|f| std::fs::metadata(dir.join(f)).unwrap().len())
        .sum()
}

/// Max |logit − reference| and mean |NLL − reference| of the model in `dir`.
fn distance_to_reference(dir: &Path) -> (f32, f64) {
    let reference = reference();
    let mut model = LayeredModel::open(dir, &RuntimeOptions::default()).unwrap();
    let (batch, len) = (reference.input_ids.len(), reference.input_ids[0].len());
    let ids = Array2::from_shape_fn((batch, len), |(b, t)| i64::from(reference.input_ids[b][t]));
    let mut state = model.embed(&ids).unwrap();
    for block in 0..model.num_blocks() {
        state = model.run_block(block, &state).unwrap();
    }
    let logits = model.logits(&state).unwrap();
    let mut max_logit = 0f32;
    for ((b, t, v), value) in logits.indexed_iter() {
        assert!(value.is_finite());
        max_logit = max_logit.max((value - reference.logits[b][t][v]).abs());
    }
    let targets = Array2::from_shape_fn((batch, len), |(b, t)| {
        i64::from(reference.input_ids[b][(t + 1).min(len - 1)])
    });
    let nll = model.token_nll(&state, &targets).unwrap();
    let mut total = 0f64;
    let mut count = 0;
    for b in 0..batch {
        for t in 0..len - 1 {
            total += (f64::from(nll[(b, t)]) - reference.nll[b][t]).abs();
            count += 1;
        }
    }
    (max_logit, total / count as f64)
}

fn quantize_to(dest: &Path, scheme: Scheme) -> QuantizedFolder {
    let quantized = quantize_folder(&fixture(), &options(scheme)).unwrap();
    write_folder(&fixture(), dest, &quantized, SourceFiles::Copy, false).unwrap();
    quantized
}

#[test]
fn quantized_fixture_runs_end_to_end_near_the_float_model() {
    let temp = tempfile::tempdir().unwrap();
    let (float_logit, float_nll) = distance_to_reference(&fixture());
    let source_bytes = folder_bytes(&fixture());
    let mut distances = Vec::new();
    for (name, scheme) in [
        ("int8", Scheme::Int8),
        ("int4-32", int4(32)),
        ("int4-128", int4(128)),
    ] {
        let dest = temp.path().join(name);
        let quantized = quantize_to(&dest, scheme.clone());
        // Every block's 7 projections and the two heads' one MatMul each.
        let record: Record = quantized.record().unwrap();
        assert_eq!(record.quantized_matmuls, 6 * 7 + 2);
        assert_eq!(record.scheme, scheme.name());
        assert_eq!(record.source_model_id, model_id(&fixture()).unwrap());
        // What was written is what the manifest lists, with the right hashes (open verifies).
        let manifest = Manifest::load(&dest).unwrap();
        manifest.verify_files(&dest).unwrap();
        assert!(!quantized.dropped.is_empty());
        assert!(quantized.dropped.iter().all(|f| !dest.join(f).exists()));
        // The tied embedding's float file stays: embed.onnx still gathers from it.
        let embed = std::fs::read(dest.join("embed.onnx")).unwrap();
        assert_eq!(embed, std::fs::read(fixture().join("embed.onnx")).unwrap());
        let bytes = folder_bytes(&dest);
        assert!(bytes < source_bytes, "{name}: {bytes} ≥ {source_bytes}");
        let (logit, nll) = distance_to_reference(&dest);
        eprintln!("{name}: {bytes} bytes (float {source_bytes}); max |logit diff| {logit:.3e}, mean |nll diff| {nll:.3e}");
        distances.push((logit, nll));
    }
    eprintln!("float: max |logit diff| {float_logit:.3e}, mean |nll diff| {float_nll:.3e}");
    // Quantization moves the outputs, by more than the float export's own error...
    assert!(distances.iter().all(|&(l, _)| l > 10.0 * float_logit));
    // ... but boundedly. The fixture's random weights give logits up to 2.6 and an NLL near
    // log(320) ≈ 5.8; a wrong layout or packing gives unrelated logits (differences of the
    // logits' own size) and NLL differences above 1.
    let largest = reference()
        .logits
        .iter()
        .flatten()
        .flatten()
        .fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        distances[0].0 < 0.05 * largest && distances[0].1 < 0.03,
        "int8 {:?}",
        distances[0]
    );
    for (name, d) in [("int4-32", distances[1]), ("int4-128", distances[2])] {
        assert!(d.0 < 0.5 * largest && d.1 < 0.3, "{name} {d:?}");
    }
    // int8 is closer than int4.
    assert!(distances[0].1 < distances[1].1 && distances[0].1 < distances[2].1);
}

#[test]
fn excluding_the_head_keeps_its_graphs_and_weight() {
    let temp = tempfile::tempdir().unwrap();
    let dest = temp.path().join("q");
    let mut opts = options(int4(32));
    opts.exclude_head = true;
    let quantized = quantize_folder(&fixture(), &opts).unwrap();
    write_folder(&fixture(), &dest, &quantized, SourceFiles::Copy, false).unwrap();
    let record = quantized.record().unwrap();
    assert_eq!(record.quantized_matmuls, 6 * 7);
    assert_eq!(record.excluded_graphs, ["head.onnx", "head_logits.onnx"]);
    for graph in ["head.onnx", "head_logits.onnx", "embed.onnx"] {
        assert_eq!(
            std::fs::read(dest.join(graph)).unwrap(),
            std::fs::read(fixture().join(graph)).unwrap()
        );
    }
    LayeredModel::open(&dest, &RuntimeOptions::default()).unwrap();
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let temp = tempfile::tempdir().unwrap();
    let error = quantize_folder(&fixture(), &options(int4(48))).unwrap_err();
    assert!(matches!(error, QuantizeError::Unsupported(_)));
    assert!(error.to_string().contains("group size 48"), "{error}");

    let dest = temp.path().join("q");
    quantize_to(&dest, Scheme::Int8);
    // Quantizing twice: the manifest says so.
    let error = quantize_folder(&dest, &options(int4(32))).unwrap_err();
    assert!(
        error.to_string().contains("already quantized (int8)"),
        "{error}"
    );
    // An existing destination, or the source itself, is not overwritten by accident.
    let quantized = quantize_folder(&fixture(), &options(Scheme::Int8)).unwrap();
    let error = write_folder(&fixture(), &dest, &quantized, SourceFiles::Copy, false).unwrap_err();
    assert!(error.to_string().contains("already exists"), "{error}");
    let error =
        write_folder(&fixture(), &fixture(), &quantized, SourceFiles::Copy, true).unwrap_err();
    assert!(
        error.to_string().contains("is the model being quantized"),
        "{error}"
    );
    // Overwriting replaces the folder whole, leaving no temporary folder behind.
    write_folder(&fixture(), &dest, &quantized, SourceFiles::Copy, true).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(temp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["q"]);

    // A corrupt graph names the file.
    let broken = temp.path().join("broken");
    layerprune_tests::copy_tiny_model(&broken);
    std::fs::write(broken.join("block_003.onnx"), b"\xff\xff not protobuf").unwrap();
    let mut opts = options(Scheme::Int8);
    opts.verify = false;
    let error = quantize_folder(&broken, &opts).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("block_003.onnx") && message.contains("not an ONNX model"),
        "{message}"
    );
    // With verification on, the changed file is caught by its hash first.
    opts.verify = true;
    let error = quantize_folder(&broken, &opts).unwrap_err();
    assert!(error.to_string().contains("block_003.onnx"), "{error}");
}

#[test]
fn older_manifests_load_without_a_record_and_records_round_trip() {
    let manifest = Manifest::load(&fixture()).unwrap();
    assert!(manifest.quantization.is_none());
    let temp = tempfile::tempdir().unwrap();
    let dest = temp.path().join("q");
    let quantized = quantize_to(&dest, int4(128));
    let reloaded = Manifest::load(&dest).unwrap();
    let record: Record = serde_json::from_value(reloaded.quantization.clone().unwrap()).unwrap();
    assert_eq!(Some(record), quantized.record());
    // Fields the quantizer does not know about survive (the exporter's `check`, `source`).
    assert_eq!(reloaded.extra.get("check"), manifest.extra.get("check"));
    assert_eq!(reloaded.extra.get("source"), manifest.extra.get("source"));
}

#[test]
fn gptq_refuses_ragged_calibration_windows() {
    let mut opts = options(int4(32));
    opts.calibration = Some(layerprune_quantize::Calibration {
        windows: vec![vec![1, 2, 3], vec![4, 5]],
        dataset_id: "ragged".into(),
        damp: 0.01,
        device: layerprune_core::Device::Cpu,
    });
    let error = quantize_folder(&fixture(), &opts).unwrap_err();
    assert!(matches!(error, QuantizeError::Unsupported(_)));
    assert!(
        error.to_string().contains("same non-zero length"),
        "{error}"
    );
}

#[test]
fn rounding_to_nearest_gives_the_same_folder_on_any_number_of_threads() {
    // What a quantized folder is, in the manifest's order of graphs.
    let summary = |q: &QuantizedFolder| {
        let reports: Vec<(String, usize)> = q
            .reports
            .iter()
            .map(|(file, r)| (file.clone(), r.quantized.len()))
            .collect();
        (
            q.graphs.clone(),
            q.new_weights.clone(),
            q.unchanged.clone(),
            q.dropped.clone(),
            reports,
            q.manifest.files.clone(),
            q.record(),
        )
    };
    for scheme in [Scheme::Int8, int4(32)] {
        for exclude_head in [false, true] {
            let quantized = |threads| {
                let mut opts = options(scheme.clone());
                opts.threads = threads;
                opts.exclude_head = exclude_head;
                summary(&quantize_folder(&fixture(), &opts).unwrap())
            };
            let one = quantized(1);
            // The fixture's graphs: the embedding, 6 blocks and 2 heads.
            assert_eq!(one.4.len(), if exclude_head { 7 } else { 9 });
            // 0 is the thread budget (one per core). map_in_order takes no more threads than
            // the machine has cores: on a 2-core machine 3 and 8 run as 2.
            for threads in [0, 2, 3, 8] {
                assert!(
                    one == quantized(threads),
                    "{} (exclude_head {exclude_head}) on {threads} threads",
                    scheme.name()
                );
            }
        }
    }
}

/// The fixture with block 0's graph in `blocks/` and its weight files beside it in
/// `blocks/weights/` (ONNX resolves external data against the graph's own folder), the
/// manifest's `files` listing every file with its sha256.
fn fixture_with_a_block_in_a_subfolder(dest: &Path) {
    layerprune_tests::copy_tiny_model(dest);
    let graph = dest.join("block_000.onnx");
    let locations = layerprune_model::graph_external_data(&graph).unwrap();
    std::fs::create_dir_all(dest.join("blocks/weights")).unwrap();
    for location in &locations {
        std::fs::rename(dest.join(location), dest.join("blocks").join(location)).unwrap();
    }
    std::fs::rename(&graph, dest.join("blocks/block_000.onnx")).unwrap();
    let path = dest.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest["blocks"][0]["file"] = "blocks/block_000.onnx".into();
    let files = manifest["files"].as_object_mut().unwrap();
    for moved in locations
        .iter()
        .map(String::as_str)
        .chain(["block_000.onnx"])
    {
        let hash = files.remove(moved).unwrap();
        let relative = if moved == "block_000.onnx" {
            "blocks/block_000.onnx".to_string()
        } else {
            format!("blocks/{moved}")
        };
        files.insert(relative, hash);
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    Manifest::load(dest).unwrap().verify_files(dest).unwrap();
}

#[test]
fn a_graph_in_a_subfolder_gets_its_new_weights_beside_it() {
    let temp = tempfile::tempdir().unwrap();
    let source = temp.path().join("model");
    fixture_with_a_block_in_a_subfolder(&source);
    // The float model runs as the fixture does.
    assert_eq!(
        distance_to_reference(&source),
        distance_to_reference(&fixture())
    );
    for (name, scheme) in [("int8", Scheme::Int8), ("int4", int4(32))] {
        let flat = temp.path().join(format!("flat-{name}"));
        quantize_to(&flat, scheme.clone());
        let dest = temp.path().join(name);
        let written = layerprune_quantize::quantize_folder_to(
            &source,
            &dest,
            &options(scheme),
            SourceFiles::Copy,
            false,
        )
        .unwrap();
        // Block 0's new weights lie in blocks/weights/, where its graph reads them; its float
        // weights are gone.
        let graph = dest.join("blocks/block_000.onnx");
        let locations = layerprune_model::graph_external_data(&graph).unwrap();
        assert!(!locations.is_empty());
        for location in &locations {
            let relative = format!("blocks/{location}");
            assert!(dest.join(&relative).is_file(), "{relative}");
            assert!(written.new_weights.contains(&relative), "{relative}");
        }
        let float: Vec<String> = std::fs::read_dir(source.join("blocks/weights"))
            .unwrap()
            .map(|e| {
                format!(
                    "blocks/weights/{}",
                    e.unwrap().file_name().to_string_lossy()
                )
            })
            .collect();
        for file in &float {
            assert!(written.dropped.contains(file), "{file}");
            assert!(!dest.join(file).exists(), "{file}");
        }
        // The folder loads with its hashes verified and computes what the flat layout does.
        Manifest::load(&dest).unwrap().verify_files(&dest).unwrap();
        assert_eq!(
            distance_to_reference(&dest),
            distance_to_reference(&flat),
            "{name}"
        );
    }
}

#[test]
fn writing_each_graph_as_it_is_done_gives_the_folder_written_from_memory() {
    let temp = tempfile::tempdir().unwrap();
    let files = |dir: &Path| {
        layerprune_tests::snapshot(dir)
            .into_iter()
            .map(|(path, bytes)| (path.strip_prefix(dir).unwrap().to_path_buf(), bytes))
            .collect::<Vec<_>>()
    };
    for (name, scheme, threads) in [("int8", Scheme::Int8, 2), ("int4", int4(32), 1)] {
        let memory = temp.path().join(format!("memory-{name}"));
        let held = quantize_to(&memory, scheme.clone());
        let streamed = temp.path().join(format!("streamed-{name}"));
        let mut opts = options(scheme);
        opts.threads = threads;
        let written = layerprune_quantize::quantize_folder_to(
            &fixture(),
            &streamed,
            &opts,
            SourceFiles::Copy,
            false,
        )
        .unwrap();
        assert_eq!(files(&memory), files(&streamed), "{name}");
        assert_eq!(written.record(), held.record());
        assert_eq!(
            written.graphs,
            held.graphs.keys().cloned().collect::<Vec<_>>()
        );
        assert_eq!(
            written.new_weights,
            held.new_weights.keys().cloned().collect::<Vec<_>>()
        );
        assert_eq!(
            (&written.unchanged, &written.dropped),
            (&held.unchanged, &held.dropped)
        );
    }
    // A failure half-way leaves no folder and nothing beside it.
    let broken = temp.path().join("broken");
    layerprune_tests::copy_tiny_model(&broken);
    std::fs::write(broken.join("block_003.onnx"), b"\xff\xff not protobuf").unwrap();
    let mut opts = options(Scheme::Int8);
    opts.verify = false;
    opts.threads = 1;
    let dest = temp.path().join("out").join("q");
    let error =
        layerprune_quantize::quantize_folder_to(&broken, &dest, &opts, SourceFiles::Copy, false)
            .unwrap_err();
    assert!(error.to_string().contains("block_003.onnx"), "{error}");
    assert!(!dest.exists());
    assert_eq!(
        std::fs::read_dir(temp.path().join("out")).unwrap().count(),
        0
    );
}

#[test]
fn a_pruned_quantized_folder_counts_only_the_kept_blocks_matmuls() {
    let temp = tempfile::tempdir().unwrap();
    for (name, scheme, exclude_head) in [
        ("int8", Scheme::Int8, false),
        ("int4", int4(32), false),
        ("int4-head-float", int4(32), true),
    ] {
        let dest = temp.path().join(name);
        let mut opts = options(scheme);
        opts.exclude_head = exclude_head;
        let quantized = quantize_folder(&fixture(), &opts).unwrap();
        write_folder(&fixture(), &dest, &quantized, SourceFiles::Copy, false).unwrap();
        let pruned = temp.path().join(format!("{name}-pruned"));
        layerprune_model::prune_folder(&dest, &pruned, &[0, 3], "test", false).unwrap();
        let record: Record =
            serde_json::from_value(Manifest::load(&pruned).unwrap().quantization.unwrap()).unwrap();
        let heads = if exclude_head { 0 } else { 2 };
        assert_eq!(record.quantized_matmuls, 4 * 7 + heads, "{name}");
        assert_eq!(
            Some(Record {
                quantized_matmuls: 6 * 7 + heads,
                ..record
            }),
            quantized.record()
        );
    }
}

/// A tokenizer the manifest names but `files` does not list (the runtime reads it unchecked)
/// is the quantized model's too, as it is a pruned one's: only listed files were carried over,
/// so the quantized folder named a tokenizer it lacked. Both ways of writing a folder.
#[test]
fn an_unlisted_tokenizer_is_copied_into_the_quantized_folder() {
    let temp = tempfile::tempdir().unwrap();
    let source = temp.path().join("model");
    layerprune_tests::copy_tiny_model(&source);
    let path = source.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let tokenizer = manifest["tokenizer"].as_str().unwrap().to_string();
    manifest["files"]
        .as_object_mut()
        .unwrap()
        .remove(&tokenizer);
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    let expected = std::fs::read(source.join(&tokenizer)).unwrap();
    let streamed = temp.path().join("streamed");
    layerprune_quantize::quantize_folder_to(
        &source,
        &streamed,
        &options(Scheme::Int8),
        SourceFiles::Copy,
        false,
    )
    .unwrap();
    let held = temp.path().join("held");
    let quantized = quantize_folder(&source, &options(Scheme::Int8)).unwrap();
    write_folder(&source, &held, &quantized, SourceFiles::Copy, false).unwrap();
    for dest in [&streamed, &held] {
        assert_eq!(std::fs::read(dest.join(&tokenizer)).unwrap(), expected);
        let written = Manifest::load(dest).unwrap();
        assert!(!written.files.contains_key(&tokenizer));
        written.verify_files(dest).unwrap();
    }
}
