//! Saving and loading fitted surrogates.

mod common;

use std::path::Path;

use common::{stratified_masks, SmoothUtility};
use layerprune_core::Mask;
use layerprune_surrogate::{
    fit, FitOptions, FittedSurrogate, QuadraticSurrogate, SavedSurrogate, Surrogate,
    SurrogateError, SurrogateKind, FORMAT_NAME,
};

fn fitted(kind: SurrogateKind) -> SavedSurrogate {
    let utility = SmoothUtility::new(6, 1);
    let masks = stratified_masks(6, &[1, 2, 3], 300, 2);
    let options = FitOptions {
        epochs: 20,
        trees: 5,
        ..FitOptions::default()
    };
    let model = fit(kind, &masks, &utility.values(&masks), &options).unwrap();
    SavedSurrogate::new(model, "utility", "PPL_full / PPL_mask; higher is better")
}

fn load_error(path: &Path) -> String {
    match SavedSurrogate::load(path) {
        Err(error @ SurrogateError::File { .. }) => error.to_string(),
        other => panic!("expected a file error, got {other:?}"),
    }
}

#[test]
fn round_trip_gives_identical_predictions() {
    let folder = tempfile::tempdir().unwrap();
    let probes = stratified_masks(6, &[0, 1, 2, 3, 4, 5, 6], 200, 3);
    for kind in SurrogateKind::ALL {
        let saved = fitted(kind);
        let path = folder.path().join(format!("{kind}.json"));
        saved.save(&path).unwrap();
        let loaded = SavedSurrogate::load(&path).unwrap();
        assert_eq!(loaded.kind(), kind);
        assert_eq!(loaded.value, "utility");
        assert_eq!(loaded.value_description, saved.value_description);
        assert_eq!(loaded.surrogate.num_players(), 6);
        assert_eq!(
            loaded.surrogate.predict(&probes),
            saved.surrogate.predict(&probes),
            "{kind}"
        );
        assert_eq!(
            loaded.surrogate.exact_shapley(),
            saved.surrogate.exact_shapley()
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["format"], FORMAT_NAME);
        assert_eq!(json["kind"], kind.name());
        assert_eq!(json["num_players"], 6);
    }
}

#[test]
fn a_file_naming_its_value_target_as_before_2026_12_04_is_read() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("old.json");
    let saved = fitted(SurrogateKind::Quadratic);
    saved.save(&path).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["value"], "utility");
    let object = json.as_object_mut().unwrap();
    let value = object.remove("value").unwrap();
    let description = object.remove("value_description").unwrap();
    object.insert("target".into(), value);
    object.insert("target_description".into(), description);
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let loaded = SavedSurrogate::load(&path).unwrap();
    assert_eq!(loaded.value, "utility");
    assert_eq!(loaded.value_description, saved.value_description);

    // Both names (no build wrote such a file): the current one is read.
    json["value"] = "nll-increase".into();
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    assert_eq!(SavedSurrogate::load(&path).unwrap().value, "nll-increase");
}

/// The fields are read by name, so a file whose keys were reordered (by a tool that sorts
/// them, or by hand: `parameters` before `kind`) loads as written.
#[test]
fn a_file_with_its_keys_in_another_order_loads() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("reordered.json");
    for kind in SurrogateKind::ALL {
        let saved = fitted(kind);
        saved.save(&path).unwrap();
        let json: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let reversed: Vec<String> = json
            .iter()
            .rev()
            .map(|(key, value)| format!("{}:{value}", serde_json::Value::from(key.as_str())))
            .collect();
        let text = format!("{{{}}}", reversed.join(","));
        assert!(
            text.find("\"parameters\"") < text.find("\"kind\""),
            "{kind}"
        );
        std::fs::write(&path, text).unwrap();
        let loaded = SavedSurrogate::load(&path).unwrap();
        let masks = stratified_masks(6, &[1, 2, 3], 40, 3);
        assert_eq!(
            loaded.surrogate.predict(&masks),
            saved.surrogate.predict(&masks),
            "{kind}"
        );
    }
}

#[test]
fn damaged_files_are_refused_with_the_file_named() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("surrogate.json");
    let shown = path.display().to_string();

    let missing = load_error(&folder.path().join("absent.json"));
    assert!(
        missing.contains("absent.json") && missing.contains("cannot read"),
        "{missing}"
    );

    std::fs::write(&path, "{ this is not json").unwrap();
    let error = load_error(&path);
    assert!(
        error.contains(&shown) && error.contains("not valid JSON"),
        "{error}"
    );

    std::fs::write(
        &path,
        r#"{"format": "something-else", "format_version": 1}"#,
    )
    .unwrap();
    let error = load_error(&path);
    assert!(error.contains("something-else"), "{error}");

    fitted(SurrogateKind::Quadratic).save(&path).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // The saved quadratic with one field set to `value`: what loading it says.
    let refused_with = |pointer: &str, value: serde_json::Value| {
        let mut damaged = json.clone();
        *damaged.pointer_mut(pointer).unwrap() = value;
        std::fs::write(&path, damaged.to_string()).unwrap();
        load_error(&path)
    };
    for (pointer, value, expected) in [
        ("/format_version", 99.into(), "version 99"),
        (
            "/value",
            "accuracy".into(),
            "\"accuracy\" is not one of utility",
        ),
        (
            "/kind",
            "svm".into(),
            "\"svm\" is not one of mlp, quadratic, forest",
        ),
        (
            "/kind",
            "forest".into(),
            "damaged surrogate file: the forest surrogate's parameters",
        ),
        ("/num_players", 7.into(), "num_players is 7"),
        (
            "/parameters/linear",
            serde_json::json!([1.0, 2.0]),
            "linear weights",
        ),
    ] {
        let error = refused_with(pointer, value);
        assert!(
            error.contains(&shown) && error.contains(expected),
            "{error}"
        );
    }

    fitted(SurrogateKind::PublishedMlp).save(&path).unwrap();
    let mut mlp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    mlp["parameters"]["hidden_bias"] = serde_json::json!([0.0]);
    std::fs::write(&path, mlp.to_string()).unwrap();
    let error = load_error(&path);
    assert!(error.contains("shapes"), "{error}");
}

#[test]
fn saving_into_a_missing_folder_names_the_file() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("no-such-folder").join("s.json");
    let error = fitted(SurrogateKind::Quadratic).save(&path).unwrap_err();
    assert!(error.to_string().contains("s.json"), "{error}");
    assert!(!path.exists());
}

#[test]
fn the_evaluations_a_surrogate_was_fitted_on_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    fitted(SurrogateKind::Quadratic)
        .with_fitted_on_evaluations(231)
        .save(&path)
        .unwrap();
    assert_eq!(
        SavedSurrogate::load(&path).unwrap().fitted_on_evaluations,
        231
    );
    // A file written without the field reads as unknown (0), not as an error.
    let text = std::fs::read_to_string(&path).unwrap();
    let old = text.replace("\"fitted_on_evaluations\": 231,", "");
    let old = old.replace("\"fitted_on_evaluations\":231,", "");
    assert!(!old.contains("fitted_on_evaluations"), "{old}");
    std::fs::write(&path, old).unwrap();
    assert_eq!(
        SavedSurrogate::load(&path).unwrap().fitted_on_evaluations,
        0
    );
}

/// The inputs a surrogate was fitted from are recorded; a file written before they were (no
/// `inputs` field) loads with none, as every reader of a surrogate file (shapley, apply-prune,
/// inspect) loads it through `SavedSurrogate::load`.
#[test]
fn the_inputs_a_surrogate_was_fitted_from_are_recorded_and_old_files_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let inputs: std::collections::BTreeMap<String, String> =
        [("evaluations".to_string(), "ab12".to_string())].into();
    fitted(SurrogateKind::Quadratic)
        .with_inputs(inputs.clone())
        .save(&path)
        .unwrap();
    assert_eq!(SavedSurrogate::load(&path).unwrap().inputs, inputs);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["inputs"]["evaluations"], "ab12");
    json.as_object_mut().unwrap().remove("inputs");
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    assert!(SavedSurrogate::load(&path).unwrap().inputs.is_empty());
}

/// A forest whose tree links go back (a node that is its own child, as the mutation fuzzer
/// found, or an ancestor) would make smartcore's prediction loop forever; it is refused when
/// the file loads, naming the tree and node.
#[test]
fn a_forest_whose_tree_loops_is_refused_not_run() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("forest.json");
    fitted(SurrogateKind::Forest).save(&path).unwrap();
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let nodes = "/parameters/forest/forest_regressor/trees/0/nodes";
    let root_children = original.pointer(&format!("{nodes}/0/true_child")).cloned();
    assert!(
        root_children
            .as_ref()
            .is_some_and(|c| c.as_u64() == Some(1)),
        "{root_children:?}"
    );
    for (node, link, to) in [
        (0, "false_child", 0),
        (1, "true_child", 0),
        (0, "true_child", 1_000_000),
    ] {
        let mut damaged = original.clone();
        *damaged
            .pointer_mut(&format!("{nodes}/{node}/{link}"))
            .unwrap() = to.into();
        std::fs::write(&path, serde_json::to_vec(&damaged).unwrap()).unwrap();
        let started = std::time::Instant::now();
        let message = load_error(&path);
        assert!(
            message.contains("forest.json")
                && message.contains(&format!("tree 0: node {node}'s {link} is {to}")),
            "{message}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}

/// Hand-edited files whose every number is finite and whose shapes agree with themselves, but
/// that no fit writes: loading them used to succeed, and then predicting panicked (an MLP of 0
/// hidden units: `chunks_exact(0)`), loading itself panicked (shapes whose product overflows),
/// or predictions were inf or NaN (finite weights whose sums overflow), or the game had no
/// players, or fixed a block that does not exist. Each is refused, naming the file.
#[test]
fn hand_edited_files_that_would_panic_or_predict_nan_are_refused() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("edited.json");
    let head = r#""format":"layerprune-surrogate","format_version":1,"value":"utility","value_description":"d""#;
    let scaling = r#""target_scaling":{"offset":0.0,"scale":1.0}"#;
    let mlp = |players: &str, hidden: &str, input: &str, bias: &str, output: &str| {
        format!(
            r#"{{{head},"num_players":{players},"kind":"mlp","parameters":{{"num_players":{players},"hidden":{hidden},"input_weights":{input},"hidden_bias":{bias},"output_weights":{output},"output_bias":0.0,{scaling}}}}}"#
        )
    };
    let quadratic = |players: usize, fixed: &str, intercept: &str, linear: &str, pairs: &str| {
        format!(
            r#"{{{head},"num_players":{players},"fixed_blocks":{fixed},"kind":"quadratic","parameters":{{"num_players":{players},"intercept":{intercept},"linear":{linear},"pairs":{pairs}}}}}"#
        )
    };
    for (text, expected) in [
        (mlp("2", "0", "[]", "[]", "[]"), "0 hidden units"),
        (mlp("0", "0", "[]", "[]", "[]"), "0 players"),
        (
            mlp("8589934592", "2147483648", "[]", "[]", "[]"),
            "shapes do not match",
        ),
        (
            // Both hidden units overflow to inf on the full mask: inf − inf = NaN.
            mlp("1", "2", "[3e38, 3e38]", "[3e38, 3e38]", "[1.0, -1.0]"),
            "too large",
        ),
        (
            // The hidden units are finite, their products with the output weights ±inf.
            mlp("1", "2", "[1e30, 1e30]", "[0.0, 0.0]", "[1e30, -1e30]"),
            "too large",
        ),
        (quadratic(0, "[]", "1.0", "[]", "[]"), "no players"),
        (
            quadratic(
                2,
                "[]",
                "1e308",
                "[1e308, 1e308]",
                "[[0.0, 0.0], [0.0, 0.0]]",
            ),
            "too large",
        ),
        (
            quadratic(2, "[5]", "0.5", "[0.1, 0.2]", "[[0.0, 0.3], [0.3, 0.0]]"),
            "fixed block 5 is out of range for 2 blocks",
        ),
    ] {
        std::fs::write(&path, &text).unwrap();
        let outcome = std::panic::catch_unwind(|| SavedSurrogate::load(&path));
        let error = match outcome {
            Ok(Err(error @ SurrogateError::File { .. })) => error.to_string(),
            Ok(other) => panic!("{text}: expected a file error, got {other:?}"),
            Err(_) => panic!("{text}: loading panicked"),
        };
        assert!(
            error.contains("edited.json") && error.contains(expected),
            "{text}: {error}"
        );
    }
    // The same files, undamaged, load and predict finite values.
    std::fs::write(
        &path,
        mlp("1", "2", "[0.5, -0.5]", "[0.1, 0.0]", "[1.0, 2.0]"),
    )
    .unwrap();
    let loaded = SavedSurrogate::load(&path).unwrap();
    let values = loaded.surrogate.predict(&[Mask::full(1), Mask::empty(1)]);
    assert!(values.iter().all(|v| v.is_finite()), "{values:?}");
    std::fs::write(
        &path,
        quadratic(2, "[1]", "0.5", "[0.1, 0.2]", "[[0.0, 0.3], [0.3, 0.0]]"),
    )
    .unwrap();
    assert_eq!(SavedSurrogate::load(&path).unwrap().fixed_blocks, vec![1]);
}

/// A surrogate built by hand with a NaN weight was saved with `null` in its place, a file that
/// `load` then refused; `save` refuses it and writes nothing.
#[test]
fn a_model_that_loading_would_refuse_is_not_saved() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("nan.json");
    let model = QuadraticSurrogate {
        num_players: 2,
        intercept: f64::NAN,
        linear: vec![0.1, 0.2],
        pairs: vec![vec![0.0, 0.3], vec![0.3, 0.0]],
    };
    let saved = SavedSurrogate::new(FittedSurrogate::Quadratic(model), "utility", "d");
    let error = saved.save(&path).unwrap_err().to_string();
    assert!(
        error.contains("nan.json") && error.contains("non-finite"),
        "{error}"
    );
    assert!(!path.exists());
}

/// The node where `mask` ends in a tree of a saved forest (smartcore's rule: a node with
/// children sends the mask to `true_child` when its split feature is ≤ the split value), and
/// every node it passes on the way.
fn path_of(nodes: &[serde_json::Value], mask: &Mask) -> Vec<usize> {
    let mut path = vec![0];
    while let Some(child) = nodes[*path.last().unwrap()]["true_child"].as_u64() {
        let node = &nodes[*path.last().unwrap()];
        let feature = node["split_feature"].as_u64().unwrap() as usize;
        let x = f64::from(u8::from(mask.is_kept(feature)));
        path.push(if x <= node["split_value"].as_f64().unwrap() {
            child as usize
        } else {
            node["false_child"].as_u64().unwrap() as usize
        });
    }
    path
}

/// Loading tries a forest on the full and the empty mask only, so a damaged node that neither
/// reaches — a split on a block that does not exist, a node with one child, a leaf whose value
/// no fit gives — was loaded, and the first mask that reached it made `shapley` panic
/// (smartcore indexes the block, or unwraps the missing child) or predict inf. Every node is
/// checked as the file loads, naming the tree and node.
#[test]
fn a_forest_damaged_where_the_probes_do_not_reach_is_refused() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("forest.json");
    fitted(SurrogateKind::Forest).save(&path).unwrap();
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let pointer = "/parameters/forest/forest_regressor/trees/0/nodes";
    let nodes = original.pointer(pointer).unwrap().as_array().unwrap();
    let probed: Vec<usize> = [Mask::full(6), Mask::empty(6)]
        .iter()
        .flat_map(|mask| path_of(nodes, mask))
        .collect();
    let unprobed = |leaf: bool| {
        (0..nodes.len())
            .find(|i| !probed.contains(i) && nodes[*i]["true_child"].is_null() == leaf)
            .expect("a node the probes do not reach")
    };
    let (split, leaf) = (unprobed(false), unprobed(true));
    let every_mask: Vec<Mask> = (0..64u32)
        .map(|bits| Mask::from_kept((0..6).map(|i| bits >> i & 1 == 1).collect()))
        .collect();
    for (node, field, value, expected) in [
        (
            split,
            "split_feature",
            serde_json::json!(1000),
            "splits on block 1000",
        ),
        (split, "false_child", serde_json::Value::Null, "one child"),
        (leaf, "output", serde_json::json!(1e300), "1e300"),
    ] {
        let mut damaged = original.clone();
        *damaged
            .pointer_mut(&format!("{pointer}/{node}/{field}"))
            .unwrap() = value;
        std::fs::write(&path, serde_json::to_vec(&damaged).unwrap()).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            SavedSurrogate::load(&path).map(|saved| saved.surrogate.predict(&every_mask))
        });
        let message = match outcome {
            Ok(Err(error @ SurrogateError::File { .. })) => error.to_string(),
            Ok(other) => panic!("{field}: expected a file error, got {other:?}"),
            Err(_) => panic!("{field}: loaded, and predicting panicked"),
        };
        assert!(
            message.contains("forest.json")
                && message.contains(&format!("tree 0: node {node}"))
                && message.contains(expected),
            "{message}"
        );
    }
}
