//! Hostile model folders: manifests and graphs whose paths point outside their
//! folder, weight files the manifest does not list, versions and sizes out of range, and
//! destinations that are the source. Each is refused with an error naming the problem, and no
//! file changes: every test copies the tiny fixture into a temporary folder beside a sentinel
//! file, and compares every byte under that folder before and after.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use layerprune_model::{
    confined, prune_folder, read_num_blocks, sha256_file, take_source_file, Manifest, SourceFiles,
    MANIFEST_FILE,
};

const SENTINEL: &[u8] = b"a file outside the model folder that must never change";

fn fixture() -> PathBuf {
    layerprune_tests::tiny_model_dir()
}

/// A temporary folder holding `model/` (a copy of the fixture) and `sentinel.bin`.
struct Scene {
    root: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let root = tempfile::tempdir().unwrap();
        layerprune_tests::copy_dir(&fixture(), &root.path().join("model"));
        fs::write(root.path().join("sentinel.bin"), SENTINEL).unwrap();
        Scene { root }
    }

    fn model(&self) -> PathBuf {
        self.root.path().join("model")
    }

    fn sentinel(&self) -> PathBuf {
        self.root.path().join("sentinel.bin")
    }

    fn out(&self) -> PathBuf {
        self.root.path().join("out")
    }

    /// Rewrites the model's manifest.json as JSON, bypassing every check.
    fn edit(&self, change: impl FnOnce(&mut serde_json::Value)) {
        let path = self.model().join(MANIFEST_FILE);
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        change(&mut manifest);
        fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    }

    /// Every file under the temporary folder (symlinks as their targets' names), with its bytes.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        layerprune_tests::snapshot(self.root.path())
    }

    /// Runs every reader and writer on the model and asserts each is refused with an error
    /// containing each of `expected`, and that nothing under the temporary folder changed.
    fn assert_refused(&self, expected: &[&str]) {
        let before = self.snapshot();
        let check = |what: &str, error: String| {
            eprintln!("{what}: {error}");
            for part in expected {
                assert!(error.contains(part), "{what}: {error:?} lacks {part:?}");
            }
        };
        match Manifest::load(&self.model()) {
            Err(error) => check("load", error.to_string()),
            Ok(manifest) => {
                let error = manifest.verify_files(&self.model()).unwrap_err();
                check("verify_files", error.to_string());
            }
        }
        let error = prune_folder(&self.model(), &self.out(), &[1], "test", true).unwrap_err();
        check("prune_folder", error.to_string());
        assert!(!self.out().exists());
        assert_eq!(before, self.snapshot(), "a refused model changed a file");
        assert_eq!(fs::read(self.sentinel()).unwrap(), SENTINEL);
    }
}

#[test]
fn an_absolute_entry_is_refused_even_with_its_true_hash() {
    let scene = Scene::new();
    let sentinel = scene.sentinel().to_string_lossy().into_owned();
    let hash = sha256_file(&scene.sentinel()).unwrap();
    scene.edit(|m| m["files"][&sentinel] = hash.clone().into());
    scene.assert_refused(&[
        MANIFEST_FILE,
        &format!("entry {sentinel:?} is an absolute path"),
    ]);

    // As a graph, or as the tokenizer.
    let scene = Scene::new();
    scene.edit(|m| {
        m["blocks"][1]["file"] = sentinel.clone().into();
        m["files"][&sentinel] = hash.clone().into();
    });
    scene.assert_refused(&["is an absolute path"]);
    let scene = Scene::new();
    scene.edit(|m| m["tokenizer"] = "/etc/passwd".into());
    scene.assert_refused(&["entry \"/etc/passwd\" is an absolute path"]);
}

#[test]
fn a_parent_entry_is_refused() {
    let scene = Scene::new();
    let hash = sha256_file(&scene.sentinel()).unwrap();
    scene.edit(|m| m["files"]["../sentinel.bin"] = hash.into());
    scene.assert_refused(&["entry \"../sentinel.bin\" has a `..` component"]);

    let scene = Scene::new();
    scene.edit(|m| m["embedding"]["file"] = "weights/../../model/embed.onnx".into());
    scene.assert_refused(&["has a `..` component"]);
}

#[cfg(unix)]
#[test]
fn a_symlink_out_of_the_folder_is_refused() {
    // A listed weight file that is a symlink to the sentinel.
    let scene = Scene::new();
    let hash = sha256_file(&scene.sentinel()).unwrap();
    std::os::unix::fs::symlink("../../sentinel.bin", scene.model().join("weights/evil.bin"))
        .unwrap();
    scene.edit(|m| m["files"]["weights/evil.bin"] = hash.clone().into());
    scene.assert_refused(&["entry \"weights/evil.bin\" leads out of the folder"]);

    // A listed file under a directory symlink out of the folder.
    let scene = Scene::new();
    std::os::unix::fs::symlink("..", scene.model().join("up")).unwrap();
    scene.edit(|m| m["files"]["up/sentinel.bin"] = hash.clone().into());
    scene.assert_refused(&["entry \"up/sentinel.bin\" leads out of the folder"]);
}

/// Rewrites the graph `graph` of the scene's model so its first external tensor reads from
/// `location`, and records the graph's new hash in the manifest.
fn relocate_first_tensor(scene: &Scene, graph: &str, location: &str) {
    let path = scene.model().join(graph);
    layerprune_tests::relocate_first_external_tensor(&path, location);
    let hash = sha256_file(&path).unwrap();
    scene.edit(|m| m["files"][graph] = hash.into());
}

#[test]
fn an_unlisted_weight_file_is_refused_when_verifying_and_confined_when_not() {
    let scene = Scene::new();
    let manifest = Manifest::load(&scene.model()).unwrap();
    let graph = manifest.blocks[2].file.clone();
    let used = manifest.references(&scene.model()).unwrap()[&graph]
        .iter()
        .next()
        .unwrap()
        .clone();
    scene.edit(|m| {
        m["files"].as_object_mut().unwrap().remove(&used);
    });
    let before = scene.snapshot();
    let manifest = Manifest::load(&scene.model()).unwrap();
    let error = manifest
        .verify_files(&scene.model())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!(
            "graph {graph} uses {used}, which `files` does not list"
        )),
        "{error}"
    );
    assert!(manifest.check_folder(&scene.model(), true).is_err());
    // Without verification (`--no-verify`) the unlisted file is allowed, but still confined.
    manifest.check_folder(&scene.model(), false).unwrap();
    // A pruned copy would carry the file without a hash: refused.
    let error = prune_folder(&scene.model(), &scene.out(), &[0], "test", false).unwrap_err();
    assert!(error.to_string().contains(&used), "{error}");
    assert!(!scene.out().exists());
    assert_eq!(before, scene.snapshot());
}

#[test]
fn a_graph_reading_outside_the_folder_is_refused_even_without_verification() {
    for location in ["../sentinel.bin", "/etc/passwd"] {
        let scene = Scene::new();
        relocate_first_tensor(&scene, "block_003.onnx", location);
        let problem = if location.starts_with('/') {
            "is an absolute path"
        } else {
            "has a `..` component"
        };
        let expected = format!("external data location {location:?} {problem}");
        scene.assert_refused(&["block_003.onnx", &expected]);
        let manifest = Manifest::load(&scene.model()).unwrap();
        let error = manifest.check_folder(&scene.model(), false).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("block_003.onnx") && message.contains(&expected),
            "{message}"
        );
    }
    #[cfg(unix)]
    {
        let scene = Scene::new();
        std::os::unix::fs::symlink("../../sentinel.bin", scene.model().join("weights/out.bin"))
            .unwrap();
        relocate_first_tensor(&scene, "block_003.onnx", "weights/out.bin");
        scene.assert_refused(&[
            "block_003.onnx",
            "\"weights/out.bin\" leads out of the folder",
        ]);
        let manifest = Manifest::load(&scene.model()).unwrap();
        assert!(manifest.check_folder(&scene.model(), false).is_err());
    }
}

#[cfg(unix)]
#[test]
fn a_fifo_in_the_folder_is_refused_not_waited_on() {
    // A graph, a weight file or the manifest replaced by a FIFO that no process writes: before,
    // hashing or reading it waited for a writer for ever, and with --no-verify ONNX Runtime
    // was handed the path.
    let weight = {
        let scene = Scene::new();
        let name = fs::read_dir(scene.model().join("weights"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name();
        format!("weights/{}", name.to_string_lossy())
    };
    for entry in ["block_000.onnx", weight.as_str(), MANIFEST_FILE] {
        let scene = Scene::new();
        let path = scene.model().join(entry);
        fs::remove_file(&path).unwrap();
        layerprune_tests::make_fifo(&path);
        let entry = entry.to_string();
        layerprune_tests::within(
            std::time::Duration::from_secs(60),
            &format!("a model folder whose {entry} is a FIFO"),
            move || {
                scene.assert_refused(&["is a named pipe (FIFO), not a regular file"]);
                if entry != MANIFEST_FILE {
                    let manifest = Manifest::load(&scene.model());
                    let error = manifest
                        .and_then(|m| m.check_folder(&scene.model(), false))
                        .unwrap_err()
                        .to_string();
                    assert!(
                        error.contains(&format!("{entry:?} is a named pipe")),
                        "{error}"
                    );
                }
                let error = read_num_blocks(&scene.model());
                if entry == MANIFEST_FILE {
                    assert!(error.unwrap_err().to_string().contains("named pipe"));
                }
            },
        );
    }
}

#[test]
fn a_newer_format_version_is_refused() {
    let scene = Scene::new();
    scene.edit(|m| m["format_version"] = 99.into());
    scene.assert_refused(&[MANIFEST_FILE, "format_version 99 is not supported"]);
}

/// A dtype the runtime does not know (it sizes and reads the hidden states by it) is refused
/// naming manifest.json, the field and the dtypes accepted; each known one loads.
#[test]
fn an_unknown_dtype_is_refused_naming_the_ones_accepted() {
    for dtype in ["float8", "fp32", "Float32", ""] {
        let scene = Scene::new();
        scene.edit(|m| m["dtype"] = dtype.into());
        scene.assert_refused(&[
            MANIFEST_FILE,
            &format!("dtype is {dtype:?}"),
            "float32, float16, bfloat16",
        ]);
    }
    for dtype in layerprune_model::DTYPES {
        let scene = Scene::new();
        scene.edit(|m| m["dtype"] = dtype.into());
        let manifest = Manifest::load(&scene.model()).unwrap();
        assert_eq!(manifest.dtype, dtype);
    }
}

/// A `vocab_size` that is not the embedding table's row count (320 in the fixture) is refused
/// when the folder is checked, hashed or not, naming manifest.json and both numbers: a
/// smaller one blamed good token tables, a larger one let ids past the table reach the
/// graph's Gather.
#[test]
fn a_vocab_size_the_embedding_does_not_have_is_refused() {
    for vocab_size in [10u64, 319, 321, 1000] {
        let scene = Scene::new();
        scene.edit(|m| m["vocab_size"] = vocab_size.into());
        let manifest = Manifest::load(&scene.model()).unwrap();
        for verify in [true, false] {
            let message = manifest
                .check_folder(&scene.model(), verify)
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with(&scene.model().join(MANIFEST_FILE).display().to_string())
                    && message.contains(&format!("vocab_size is {vocab_size}, but embed.onnx"))
                    && message.contains("a table of 320 rows (embed_tokens.weight)"),
                "{vocab_size} verify {verify}: {message}"
            );
        }
    }
    let manifest = Manifest::load(&fixture()).unwrap();
    assert_eq!(manifest.vocab_size, 320);
    manifest.check_folder(&fixture(), true).unwrap();
    manifest.check_folder(&fixture(), false).unwrap();
}

#[test]
fn absurd_sizes_are_refused_without_overflow() {
    let scene = Scene::new();
    scene.edit(|m| m["hidden_size"] = (1u64 << 63).into());
    scene.assert_refused(&[
        MANIFEST_FILE,
        "hidden_size 9223372036854775808 × vocab_size 320 is more than",
    ]);

    let scene = Scene::new();
    scene.edit(|m| m["vocab_size"] = u64::MAX.into());
    scene.assert_refused(&["× vocab_size 18446744073709551615 is more than"]);

    let scene = Scene::new();
    scene.edit(|m| m["intermediate_size"] = (1u64 << 40).into());
    scene.assert_refused(&["× intermediate_size 1099511627776 is more than"]);
}

#[test]
fn a_huge_block_count_is_refused() {
    for huge in [10_001u64, 1 << 40, u64::MAX] {
        let scene = Scene::new();
        scene.edit(|m| m["num_blocks"] = huge.into());
        let expected = format!("num_blocks {huge} is more than the 10000 blocks");
        scene.assert_refused(&[&expected]);
        let error = read_num_blocks(&scene.model()).unwrap_err().to_string();
        assert!(error.contains(&expected), "{error}");
    }
    let scene = Scene::new();
    scene.edit(|m| m["blocks"][3]["original_index"] = u64::MAX.into());
    scene.assert_refused(&["block 3 has original_index 18446744073709551615"]);
}

#[test]
fn no_block_or_a_block_running_another_parts_graph_is_refused() {
    let scene = Scene::new();
    scene.edit(|m| {
        m["num_blocks"] = 0.into();
        m["blocks"] = serde_json::json!([]);
    });
    scene.assert_refused(&["num_blocks is 0"]);
    for other in ["embed", "block_001", "./block_001"] {
        let scene = Scene::new();
        scene.edit(|m| {
            let file = match other {
                "embed" => m["embedding"]["file"].clone(),
                "block_001" => m["blocks"][1]["file"].clone(),
                // The same file by another spelling.
                _ => format!("./{}", m["blocks"][1]["file"].as_str().unwrap()).into(),
            };
            m["blocks"][2]["file"] = file;
        });
        scene.assert_refused(&["block 2's graph", "also another part's"]);
    }
}

#[test]
fn a_destination_that_is_the_source_is_refused() {
    let scene = Scene::new();
    let model = scene.model();
    let before = scene.snapshot();
    for (dest, problem) in [
        (model.clone(), "is the source folder"),
        (model.join("."), "is the source folder"),
        (model.join("pruned"), "is inside the source folder"),
        (
            scene.root.path().to_path_buf(),
            "contains the source folder",
        ),
    ] {
        let error = prune_folder(&model, &dest, &[1], "test", true).unwrap_err();
        assert!(error.to_string().contains(problem), "{error}");
    }
    #[cfg(unix)]
    {
        // The same folder through a symlink.
        let link = scene.root.path().join("alias");
        std::os::unix::fs::symlink(&model, &link).unwrap();
        let error = prune_folder(&model, &link, &[1], "test", true).unwrap_err();
        assert!(
            error.to_string().contains("is the source folder"),
            "{error}"
        );
        fs::remove_file(&link).unwrap();
    }
    // The file-level guard: a weight file copied onto itself.
    let weight = model.join(&Manifest::load(&model).unwrap().blocks[0].file);
    for how in [SourceFiles::Copy, SourceFiles::HardLink] {
        let error = take_source_file(&weight, &weight, how).unwrap_err();
        assert!(
            error.to_string().contains("is the same file as its source"),
            "{error}"
        );
    }
    assert_eq!(before, scene.snapshot());
}

#[test]
fn the_fixture_still_loads_verifies_and_prunes() {
    let scene = Scene::new();
    let manifest = Manifest::load(&scene.model()).unwrap();
    manifest.verify_files(&scene.model()).unwrap();
    manifest.check_folder(&scene.model(), false).unwrap();
    assert_eq!(
        confined(&scene.model(), "weights/x.bin").unwrap(),
        scene.model().join("weights/x.bin")
    );
    prune_folder(&scene.model(), &scene.out(), &[1], "test", false).unwrap();
    Manifest::load(&scene.out())
        .unwrap()
        .verify_files(&scene.out())
        .unwrap();
    assert_eq!(fs::read(scene.sentinel()).unwrap(), SENTINEL);
}

#[test]
fn a_folder_without_a_manifest_is_named_as_not_a_model_folder() {
    let root = tempfile::tempdir().unwrap();
    let empty = root.path().join("empty");
    fs::create_dir(&empty).unwrap();
    for (dir, says) in [
        (
            &empty,
            "a folder without a manifest.json, so not a layered model folder",
        ),
        (&root.path().join("absent"), "no such model folder"),
    ] {
        for message in [
            Manifest::load(dir).unwrap_err().to_string(),
            layerprune_model::read_num_blocks(dir)
                .unwrap_err()
                .to_string(),
        ] {
            assert!(message.starts_with(&dir.display().to_string()), "{message}");
            assert!(message.contains(says), "{message}");
        }
    }
}

/// A manifest.json that is there but is not a regular file makes the folder a layered one
/// ([`layerprune_model::is_layered_folder`]: a tool that also takes other folders must not pass
/// it over), and loading it says what it is: a dangling link is not "a folder without" one.
#[test]
fn a_manifest_that_is_not_a_regular_file_is_named_as_what_it_is() {
    let root = tempfile::tempdir().unwrap();
    let empty = root.path().join("empty");
    fs::create_dir(&empty).unwrap();
    assert!(!layerprune_model::is_layered_folder(&empty));
    assert!(!layerprune_model::is_layered_folder(
        &root.path().join("absent")
    ));
    assert!(layerprune_model::is_layered_folder(&fixture()));
    let mut cases: Vec<(&str, &str)> = vec![("folder", "is a folder, not a regular file")];
    #[cfg(unix)]
    cases.extend([
        ("device", "is a device, not a regular file"),
        (
            "dangling",
            "a symbolic link to gone.json, which is not there",
        ),
    ]);
    for (name, says) in cases {
        let dir = root.path().join(name);
        fs::create_dir(&dir).unwrap();
        let manifest = dir.join(MANIFEST_FILE);
        match name {
            "folder" => fs::create_dir(&manifest).unwrap(),
            #[cfg(unix)]
            "device" => std::os::unix::fs::symlink("/dev/zero", &manifest).unwrap(),
            #[cfg(unix)]
            _ => std::os::unix::fs::symlink("gone.json", &manifest).unwrap(),
            #[cfg(not(unix))]
            _ => unreachable!(),
        }
        assert!(layerprune_model::is_layered_folder(&dir), "{name}");
        let message = Manifest::load(&dir).unwrap_err().to_string();
        assert!(
            message.starts_with(&manifest.display().to_string()) && message.contains(says),
            "{name}: {message}"
        );
    }
}

/// A listed file missing from the folder is named as listed and missing (it was the OS's bare
/// "No such file or directory" on the file's path), whether the files are hashed or not.
#[test]
fn a_listed_file_missing_from_the_folder_is_named_so() {
    let scene = Scene::new();
    let manifest = Manifest::load(&scene.model()).unwrap();
    let gone = manifest.files.keys().nth(1).unwrap().clone();
    fs::remove_file(scene.model().join(&gone)).unwrap();
    // With and without hashing: a `--no-verify` run (and `inspect --no-verify`) took the
    // folder, and ONNX Runtime refused it when a graph opened.
    for verify in [true, false] {
        let message = manifest
            .check_folder(&scene.model(), verify)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(&format!(
                "{}: listed in {MANIFEST_FILE}, but not in the folder",
                scene.model().join(&gone).display()
            )),
            "verify {verify}: {message}"
        );
    }
}

/// Several altered files, hashed on several threads: the file reported is the first the
/// manifest lists, whichever thread finished first, and nothing is written.
#[test]
fn of_several_altered_files_the_first_listed_is_reported() {
    let scene = Scene::new();
    let manifest = Manifest::load(&scene.model()).unwrap();
    let listed: Vec<&String> = manifest.files.keys().collect();
    assert!(listed.len() > 3, "{listed:?}");
    // The last, the third and the second listed, altered in that order.
    for relative in [listed[listed.len() - 1], listed[2], listed[1]] {
        let path = scene.model().join(relative);
        let mut bytes = fs::read(&path).unwrap();
        bytes.push(0);
        fs::write(&path, bytes).unwrap();
    }
    let before = scene.snapshot();
    for _ in 0..5 {
        let error = manifest.verify_files(&scene.model()).unwrap_err();
        let message = error.to_string();
        assert!(message.contains(listed[1].as_str()), "{message}");
        assert!(message.contains("sha256"), "{message}");
    }
    assert_eq!(before, scene.snapshot());
}

/// A graph named with a `.` component (`./block_002.onnx`, listed so) reads the weight files
/// `files` lists as `weights/<hash>.bin`: they are the same files. Before, its references were
/// spelled `./weights/...`, which `files` does not list, so the folder failed verification and
/// could not be pruned ("uses ./weights/..., which `files` does not list").
#[test]
fn a_graph_named_with_a_dot_component_reads_the_listed_weight_files() {
    let scene = Scene::new();
    scene.edit(|m| {
        m["blocks"][2]["file"] = "./block_002.onnx".into();
        let files = m["files"].as_object_mut().unwrap();
        let hash = files.remove("block_002.onnx").unwrap();
        files.insert("./block_002.onnx".into(), hash);
    });
    let manifest = Manifest::load(&scene.model()).unwrap();
    manifest.verify_files(&scene.model()).unwrap();
    let references = manifest.references(&scene.model()).unwrap();
    let used = &references["./block_002.onnx"];
    assert!(
        !used.is_empty() && used.iter().all(|f| f.starts_with("weights/")),
        "{used:?}"
    );
    // Kept, and removed: its weight files go with it.
    prune_folder(&scene.model(), &scene.out(), &[1], "test", false).unwrap();
    Manifest::load(&scene.out())
        .unwrap()
        .verify_files(&scene.out())
        .unwrap();
    let layout = prune_folder(&scene.model(), &scene.out(), &[2], "test", true).unwrap();
    for file in used {
        assert!(layout.dropped.contains(file), "{file} kept");
        assert!(!scene.out().join(file).exists(), "{file} copied");
    }
    Manifest::load(&scene.out())
        .unwrap()
        .verify_files(&scene.out())
        .unwrap();
}

/// The fields that bound the windows a model runs, mistyped or 0, are refused naming the field:
/// before, `"fixed_seq_len": "16"` or `16.5` read as no limit at all (the Mamba graphs' unrolled
/// scan then met other lengths in ONNX Runtime), and 0 as a limit no window meets.
#[test]
fn mistyped_window_limits_are_refused_not_ignored() {
    for key in ["fixed_seq_len", "context_length", "rotary_positions"] {
        for (value, shown) in [
            (serde_json::json!("16"), "\"16\""),
            (serde_json::json!(16.5), "16.5"),
            (serde_json::json!(-1), "-1"),
            (serde_json::json!(0), "0"),
            (serde_json::json!(null), "null"),
        ] {
            let scene = Scene::new();
            scene.edit(|m| m[key] = value);
            let expected = format!("{key} is {shown}, not a positive whole number of tokens");
            scene.assert_refused(&[MANIFEST_FILE, &expected]);
        }
        let scene = Scene::new();
        scene.edit(|m| m[key] = 16.into());
        assert_eq!(Manifest::load(&scene.model()).unwrap().extra[key], 16);
    }
    let scene = Scene::new();
    scene.edit(|m| m["attention_kernel"] = true.into());
    scene.assert_refused(&["attention_kernel is true, not a string"]);
}

/// A manifest.json far larger than any manifest (here sparse: 64 MiB + 1 byte of nothing) is
/// refused by its size, naming the file, before it is read: before, it was read whole into
/// memory (a file of many gigabytes ran the process out of memory) and then parsed.
#[test]
fn a_huge_manifest_is_refused_by_its_size_before_it_is_read() {
    let scene = Scene::new();
    let path = scene.model().join(MANIFEST_FILE);
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(layerprune_model::MAX_MANIFEST_BYTES + 1)
        .unwrap();
    drop(file);
    let expected = format!(
        "is {} bytes or more, over the {} a manifest may have",
        layerprune_model::MAX_MANIFEST_BYTES + 1,
        layerprune_model::MAX_MANIFEST_BYTES
    );
    for error in [
        Manifest::load(&scene.model()).unwrap_err().to_string(),
        read_num_blocks(&scene.model()).unwrap_err().to_string(),
    ] {
        assert!(
            error.contains(&path.display().to_string()) && error.contains(&expected),
            "{error}"
        );
    }
}
