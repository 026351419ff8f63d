//! A fused-attention export (tools/export's `--attention-kernel fused`) runs sequences of at
//! most `rotary_positions` tokens, its manifest says: windows longer than that are refused
//! before anything runs, and zero-shot inputs lose their oldest context tokens down to it, as
//! inputs past `ChoiceOptions::max_length` do. On a copy of the committed tiny fixture with the
//! field added (its graphs run any length, so what is checked is the runtime's reading of it).
//! And a float32 one is refused on CUDA, whose GroupQueryAttention is float16 / bfloat16 only.
//! The checkpoint's own context (`context_length`, any export) bounds them alike.

use layerprune_core::{Device, Mask};
use layerprune_runtime::{
    ChoiceOptions, ChoiceScorer, EvalOptions, Evaluator, LayeredModel, LoglikRequest, RuntimeError,
    RuntimeOptions,
};
use layerprune_tests::{copy_tiny_model_with_manifest, fixture_windows, tiny_model_dir};

/// The fixture with `rotary_positions` in its manifest, in a temporary folder.
fn fixture_with_rotary_positions(positions: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tiny_model_with_manifest(dir.path(), |manifest| {
        manifest["attention_kernel"] = "fused".into();
        manifest["rotary_positions"] = positions.into();
    });
    dir
}

fn open(dir: &std::path::Path) -> LayeredModel {
    LayeredModel::open(dir, &RuntimeOptions::default()).expect("fixture loads")
}

/// The fixture with `context_length` in its manifest (tools/export records the checkpoint's
/// max_position_embeddings there), in a temporary folder.
fn fixture_with_context_length(positions: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tiny_model_with_manifest(dir.path(), |manifest| {
        manifest["context_length"] = positions.into();
    });
    dir
}

#[test]
fn longer_windows_are_refused_and_choice_inputs_cut_to_the_tables() {
    let fused = fixture_with_rotary_positions(8);
    assert_eq!(open(fused.path()).manifest().rotary_positions(), Some(8));
    assert_eq!(open(&tiny_model_dir()).manifest().rotary_positions(), None);
    longer_windows_are_refused_and_choice_inputs_cut_to(fused.path(), "rotary_positions");
}

#[test]
fn windows_past_the_checkpoint_s_context_are_refused_and_choice_inputs_cut_to_it() {
    let short = fixture_with_context_length(8);
    assert_eq!(open(short.path()).manifest().context_length(), Some(8));
    assert_eq!(open(&tiny_model_dir()).manifest().context_length(), None);
    longer_windows_are_refused_and_choice_inputs_cut_to(short.path(), "context_length");
    // The shorter of the two bounds holds.
    let both = tempfile::tempdir().unwrap();
    copy_tiny_model_with_manifest(both.path(), |manifest| {
        manifest["attention_kernel"] = "fused".into();
        manifest["rotary_positions"] = 12.into();
        manifest["context_length"] = 8.into();
    });
    longer_windows_are_refused_and_choice_inputs_cut_to(both.path(), "context_length");
}

/// A model at `dir` whose manifest bounds its sequences to 8 tokens by `field`: 9-token
/// windows refused naming the field, 8 run, and zero-shot inputs cut to 8 as `max_length` 8
/// cuts them.
fn longer_windows_are_refused_and_choice_inputs_cut_to(dir: &std::path::Path, field: &str) {
    let refused = Evaluator::new(open(dir), &fixture_windows(5, 2, 9), EvalOptions::default());
    let Err(error) = refused else {
        panic!("9-token windows were accepted by a model for 8")
    };
    assert!(matches!(error, RuntimeError::BadInput(_)), "{error:?}");
    assert!(error.to_string().contains(field), "{error}");
    assert!(Evaluator::new(open(dir), &fixture_windows(5, 2, 8), EvalOptions::default()).is_ok());

    // A 9-token continuation cannot be scored whole: refused naming the field that bounds it,
    // not --max-length (until 2026-12-07 any bound of the export was "the export's rotary
    // tables").
    let long = [LoglikRequest {
        context: vec![5],
        continuation: (10..19).collect(),
        group: 0,
    }];
    let Err(error) = ChoiceScorer::new(open(dir), &long, ChoiceOptions::default()) else {
        panic!("a 9-token continuation was accepted by a model for 8")
    };
    let message = error.to_string();
    assert!(
        matches!(error, RuntimeError::BadRequest { index: 0, .. })
            && message.contains("the continuation has 9 tokens")
            && message.contains(field)
            && !message.contains("--max-length"),
        "{message}"
    );

    // 14-token questions: 13 input tokens, more than the 8 the model runs.
    let requests: Vec<LoglikRequest> = fixture_windows(11, 2, 14)
        .iter()
        .enumerate()
        .flat_map(|(group, ids)| {
            [7, 11].map(|split| LoglikRequest {
                context: ids[..split].to_vec(),
                continuation: ids[split..].to_vec(),
                group,
            })
        })
        .collect();
    let masks = [Mask::full(6), Mask::from_removed(6, &[3]).unwrap()];
    let score = |model, max_length| {
        let options = ChoiceOptions {
            max_length,
            ..ChoiceOptions::default()
        };
        let mut scorer = ChoiceScorer::new(model, &requests, options).unwrap();
        scorer.score(&masks, &mut |_, _| {}).unwrap()
    };
    let cut = score(open(dir), ChoiceOptions::default().max_length);
    assert_eq!(cut, score(open(&tiny_model_dir()), 8));
    assert_ne!(
        cut,
        score(open(&tiny_model_dir()), ChoiceOptions::default().max_length)
    );
}

#[test]
fn float32_fused_attention_is_refused_on_cuda_before_any_session_opens() {
    let fused = fixture_with_rotary_positions(8);
    let on_cuda = RuntimeOptions {
        device: Device::Cuda(0),
        ..RuntimeOptions::default()
    };
    let Err(error) = LayeredModel::open(fused.path(), &on_cuda) else {
        panic!("a float32 fused-attention folder was opened on CUDA")
    };
    assert!(matches!(error, RuntimeError::BadInput(_)), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("GroupQueryAttention"), "{message}");
    assert!(message.contains("--dtype"), "{message}");
    assert!(
        message.contains(&fused.path().display().to_string()),
        "{message}"
    );

    // The standard folder gets as far as the provider: opened on a GPU host, refused as
    // unavailable here, never for its attention.
    if let Err(error) = LayeredModel::open(&tiny_model_dir(), &on_cuda) {
        assert!(!matches!(error, RuntimeError::BadInput(_)), "{error:?}");
    }
    // On the CPU the fused folder opens.
    open(fused.path());
}
