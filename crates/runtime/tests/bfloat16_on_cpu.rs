//! A bfloat16 folder on the CPU provider, which has no bfloat16 kernels: refused when the
//! folder opens, naming the folder and the ways out, not ONNX Runtime's bare "could not find an
//! implementation" from the first node it meets. On a copy of the committed tiny fixture whose
//! manifest says bfloat16 (its graphs are float32: what is checked is that none is opened).

use layerprune_runtime::{LayeredModel, RuntimeError, RuntimeOptions};
use layerprune_tests::{copy_tiny_model_with_manifest, tiny_model_dir};

#[test]
fn a_bfloat16_folder_is_refused_on_the_cpu_before_any_session_opens() {
    let dir = tempfile::tempdir().unwrap();
    copy_tiny_model_with_manifest(dir.path(), |manifest| {
        manifest["dtype"] = "bfloat16".into();
    });

    let Err(error) = LayeredModel::open(dir.path(), &RuntimeOptions::default()) else {
        panic!("a bfloat16 folder was opened on the CPU provider")
    };
    assert!(matches!(error, RuntimeError::BadInput(_)), "{error:?}");
    let message = error.to_string();
    for expected in [
        dir.path().display().to_string().as_str(),
        "bfloat16",
        "--device cuda",
        "--dtype fp16",
    ] {
        assert!(message.contains(expected), "{message}");
    }
    // The float32 fixture itself still opens.
    LayeredModel::open(&tiny_model_dir(), &RuntimeOptions::default()).unwrap();
}
