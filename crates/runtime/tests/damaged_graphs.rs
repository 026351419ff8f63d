//! Graphs that do not compute what the evaluator reads from them (a damaged or mis-exported
//! folder whose graphs have dynamic axes, so opening it checks nothing) are refused when they
//! first run, naming the graph or the folder: an output of another shape rather than its rows
//! taken for other windows (the head's NLL of another shape), a panic (fewer rows than windows)
//! or ONNX Runtime's message from a later graph that names that one (a block's output of another
//! length); a loss that is not finite, naming the folder, the mask and the windows.

use std::path::Path;

use layerprune_core::Mask;
use layerprune_runtime::{
    ChoiceOptions, ChoiceScorer, EvalOptions, Evaluator, LayeredModel, LoglikRequest, RuntimeError,
    RuntimeOptions,
};
use layerprune_tests::{copy_dir, every_mask, fixture_windows, tiny_model_dir};
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::type_proto::{Tensor as TensorType, Value as TypeValue};
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto,
    ValueInfoProto,
};
use protobuf::{Message, MessageField};

/// A tensor of `ty` whose dimensions are all dynamic.
fn dynamic(name: &str, ty: DataType) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        type_: MessageField::some(TypeProto {
            value: Some(TypeValue::TensorType(TensorType {
                elem_type: ty as i32,
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op_type: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op_type.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: value,
        type_: onnx_protobuf::attribute_proto::AttributeType::INT.into(),
        ..Default::default()
    }
}

fn ints_attribute(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: values.to_vec(),
        type_: onnx_protobuf::attribute_proto::AttributeType::INTS.into(),
        ..Default::default()
    }
}

fn int64_constant(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: DataType::INT64 as i32,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

/// Writes a one-graph model of `nodes` to `path`.
fn write_graph(
    path: &Path,
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    output: ValueInfoProto,
    initializer: Vec<TensorProto>,
) {
    let model = ModelProto {
        ir_version: 8,
        graph: MessageField::some(GraphProto {
            name: "damaged".into(),
            node: nodes,
            input: inputs,
            output: vec![output],
            initializer,
            ..Default::default()
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
            ..Default::default()
        }],
        ..Default::default()
    };
    std::fs::write(path, model.write_to_bytes().unwrap()).unwrap();
}

/// The fixture with `file` replaced by what `write` writes there (hashes not checked).
fn damaged_model(file: &str, write: impl FnOnce(&Path)) -> (tempfile::TempDir, LayeredModel) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&tiny_model_dir(), dir.path());
    write(&dir.path().join(file));
    let options = RuntimeOptions {
        verify_hashes: false,
        ..RuntimeOptions::default()
    };
    let model = LayeredModel::open(dir.path(), &options).unwrap();
    (dir, model)
}

/// A head whose NLL is [seq, batch] (its targets transposed), not [batch, seq].
fn transposed_head(path: &Path) {
    write_graph(
        path,
        vec![
            node(
                "Cast",
                &["target_ids"],
                "as_float",
                vec![int_attribute("to", DataType::FLOAT as i64)],
            ),
            node(
                "Transpose",
                &["as_float"],
                "nll",
                vec![ints_attribute("perm", &[1, 0])],
            ),
        ],
        vec![
            dynamic("hidden_states", DataType::FLOAT),
            dynamic("target_ids", DataType::INT64),
        ],
        dynamic("nll", DataType::FLOAT),
        Vec::new(),
    );
}

/// A block that drops its input's last position ([b, s, h] → [b, s − 1, h]).
fn shortening_block(path: &Path) {
    write_graph(
        path,
        vec![node(
            "Slice",
            &["hidden_states", "starts", "ends", "axes"],
            "out",
            Vec::new(),
        )],
        vec![dynamic("hidden_states", DataType::FLOAT)],
        dynamic("out", DataType::FLOAT),
        vec![
            int64_constant("starts", &[0]),
            int64_constant("ends", &[-1]),
            int64_constant("axes", &[1]),
        ],
    );
}

#[test]
fn a_head_whose_nll_has_another_shape_is_refused_naming_it() {
    // 2 windows of 5 tokens: the transposed NLL has 5 rows, read before as 5 windows' sums.
    let windows = fixture_windows(3, 2, 5);
    let masks = every_mask(6);
    // One mask's rows a head call, or four masks' (8 rows).
    for (options, rows) in [
        (EvalOptions::default(), 2),
        (
            EvalOptions {
                mask_batch: 4,
                head_batch: 4,
                ..EvalOptions::default()
            },
            8,
        ),
    ] {
        let (dir, model) = damaged_model("head.onnx", transposed_head);
        let mut evaluator = Evaluator::new(model, &windows, options.clone()).unwrap();
        let error = evaluator
            .evaluate(&masks, &mut |_, _| {})
            .expect_err("a head of another shape");
        let message = error.to_string();
        assert!(
            message.contains(&dir.path().join("head.onnx").display().to_string())
                && message.contains(&format!("token NLLs have shape [5, {rows}]"))
                && message.contains(&format!("[{rows}, 5] was expected")),
            "{options:?}: {message}"
        );
    }
}

/// An embedding that gives each token one number (its id) rather than `hidden_size`.
fn narrow_embedding(path: &Path) {
    write_graph(
        path,
        vec![
            node("Unsqueeze", &["input_ids", "axes"], "ids", Vec::new()),
            node(
                "Cast",
                &["ids"],
                "hidden_states",
                vec![int_attribute("to", DataType::FLOAT as i64)],
            ),
        ],
        vec![dynamic("input_ids", DataType::INT64)],
        dynamic("hidden_states", DataType::FLOAT),
        vec![int64_constant("axes", &[2])],
    );
}

#[test]
fn an_embedding_whose_states_have_another_width_is_refused_naming_it() {
    let windows = fixture_windows(3, 2, 6);
    let (dir, model) = damaged_model("embed.onnx", narrow_embedding);
    let mut evaluator = Evaluator::new(model, &windows, EvalOptions::default()).unwrap();
    let error = evaluator
        .evaluate(&[Mask::full(6)], &mut |_, _| {})
        .expect_err("an embedding of another width");
    let message = error.to_string();
    assert!(
        message.contains(&dir.path().join("embed.onnx").display().to_string())
            && message.contains("[2, 6, 1] where [2, 6, 64] was expected"),
        "{message}"
    );
}

#[test]
fn a_block_whose_output_has_another_shape_is_refused_naming_it() {
    let windows = fixture_windows(3, 2, 6);
    let (dir, model) = damaged_model("block_002.onnx", shortening_block);
    let mut evaluator = Evaluator::new(model, &windows, EvalOptions::default()).unwrap();
    // A mask without block 2 runs as before.
    let without = Mask::from_removed(6, &[2]).unwrap();
    evaluator.evaluate(&[without], &mut |_, _| {}).unwrap();
    let error = evaluator
        .evaluate(&[Mask::full(6)], &mut |_, _| {})
        .expect_err("a block of another shape");
    let message = error.to_string();
    assert!(
        message.contains(&dir.path().join("block_002.onnx").display().to_string())
            && message.contains("[2, 5, 64]")
            && message.contains("[2, 6, 64]"),
        "{message}"
    );
}

/// A logits head whose logits are [seq, batch, hidden] (its input transposed), not
/// [batch, seq, vocab].
fn transposed_logits_head(path: &Path) {
    write_graph(
        path,
        vec![node(
            "Transpose",
            &["hidden_states"],
            "logits",
            vec![ints_attribute("perm", &[1, 0, 2])],
        )],
        vec![dynamic("hidden_states", DataType::FLOAT)],
        dynamic("logits", DataType::FLOAT),
        Vec::new(),
    );
}

#[test]
fn a_logits_head_of_another_shape_is_refused_when_scoring_choices() {
    let (dir, model) = damaged_model("head_logits.onnx", transposed_logits_head);
    // One row whose two scored positions became two rows of one position.
    let requests = vec![LoglikRequest {
        context: vec![5, 6, 7],
        continuation: vec![8, 9],
        group: 0,
    }];
    let mut scorer = ChoiceScorer::new(model, &requests, ChoiceOptions::default()).unwrap();
    let error = scorer
        .score(&[Mask::full(6)], &mut |_, _| {})
        .expect_err("a logits head of another shape");
    let message = error.to_string();
    assert!(
        message.contains(&dir.path().join("head_logits.onnx").display().to_string())
            && message.contains("[2, 1, 64]"),
        "{message}"
    );
}

/// A head whose NLL is each target divided by zero: infinite, or NaN for target 0.
fn infinite_head(path: &Path) {
    write_graph(
        path,
        vec![
            node(
                "Cast",
                &["target_ids"],
                "as_float",
                vec![int_attribute("to", DataType::FLOAT as i64)],
            ),
            node("Div", &["as_float", "zero"], "nll", Vec::new()),
        ],
        vec![
            dynamic("hidden_states", DataType::FLOAT),
            dynamic("target_ids", DataType::INT64),
        ],
        dynamic("nll", DataType::FLOAT),
        vec![TensorProto {
            name: "zero".into(),
            dims: vec![1],
            data_type: DataType::FLOAT as i32,
            float_data: vec![0.0],
            ..Default::default()
        }],
    );
}

#[test]
fn a_loss_that_is_not_finite_names_the_folder_the_mask_and_the_windows() {
    let windows = fixture_windows(3, 4, 6);
    let (dir, model) = damaged_model("head.onnx", infinite_head);
    let options = EvalOptions {
        batch_windows: 2,
        ..EvalOptions::default()
    };
    let mut evaluator = Evaluator::new(model, &windows, options).unwrap();
    let mask = Mask::from_removed(6, &[1]).unwrap();
    let error = evaluator
        .evaluate_windows(&[mask], 2..4, &mut |_, _| {})
        .expect_err("an infinite loss");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "{}: mask 101111: the loss is ",
            dir.path().display()
        )) && message.contains("on windows 2..4"),
        "{message}"
    );
}

/// A logits head dividing the fixture's 64 hidden values, repeated to its 320-token
/// vocabulary, by zero: every logit ±∞ (or NaN), so every log-likelihood is NaN.
fn infinite_logits_head(path: &Path) {
    write_graph(
        path,
        vec![
            node("Tile", &["hidden_states", "repeats"], "wide", Vec::new()),
            node("Div", &["wide", "zero"], "logits", Vec::new()),
        ],
        vec![dynamic("hidden_states", DataType::FLOAT)],
        dynamic("logits", DataType::FLOAT),
        vec![
            int64_constant("repeats", &[1, 1, 5]),
            TensorProto {
                name: "zero".into(),
                dims: vec![1],
                data_type: DataType::FLOAT as i32,
                float_data: vec![0.0],
                ..Default::default()
            },
        ],
    );
}

/// A log-likelihood that is not finite is a `BadRequest` of its request, which the caller can
/// name (`evaluate --tasks`: the task, question and choice), the folder and mask in its problem.
/// Until 2026-12-07 it was a `BadInput` saying only "the log-likelihood of request 1 is NaN".
/// Every request is in a batch of its own, the longest (scored first, so the one refused)
/// last of the list: its index is the list's, never its place in its batch (0).
#[test]
fn a_log_likelihood_that_is_not_finite_is_an_error_of_its_request() {
    let (dir, model) = damaged_model("head_logits.onnx", infinite_logits_head);
    let requests = vec![
        LoglikRequest {
            context: vec![5, 6],
            continuation: vec![7],
            group: 0,
        },
        LoglikRequest {
            context: vec![5, 6, 7],
            continuation: vec![8],
            group: 1,
        },
        LoglikRequest {
            context: vec![5, 6, 7, 8, 9],
            continuation: vec![10, 11],
            group: 2,
        },
    ];
    let options = ChoiceOptions {
        batch_tokens: 1,
        ..ChoiceOptions::default()
    };
    let mut scorer = ChoiceScorer::new(model, &requests, options).unwrap();
    assert_eq!(scorer.num_batches(), requests.len());
    let mask = Mask::from_removed(6, &[2]).unwrap();
    let error = scorer
        .score(&[mask], &mut |_, _| {})
        .expect_err("a NaN log-likelihood");
    let RuntimeError::BadRequest { index, problem } = &error else {
        panic!("not an error of a request: {error:?}")
    };
    assert_eq!(*index, 2, "{problem}");
    assert!(
        problem.starts_with(&format!(
            "{}: mask 110111: the log-likelihood is ",
            dir.path().display()
        )) && problem.contains("(NaN or infinite)"),
        "{problem}"
    );
}

/// A model opened after its manifest was read to check a stage's inputs is refused if the
/// manifest is another by then (replaced between the reads), naming the folder; the same one
/// opens.
#[test]
fn a_model_whose_manifest_changed_since_it_was_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&tiny_model_dir(), dir.path());
    let (_, model_id) = layerprune_runtime::Manifest::load_with_id(dir.path()).unwrap();
    let options = RuntimeOptions::default();
    LayeredModel::open_as_read(dir.path(), &options, &model_id).unwrap();
    let manifest = dir.path().join("manifest.json");
    let mut bytes = std::fs::read(&manifest).unwrap();
    bytes.push(b'\n');
    std::fs::write(&manifest, bytes).unwrap();
    let Err(error) = LayeredModel::open_as_read(dir.path(), &options, &model_id) else {
        panic!("opened a model whose manifest changed");
    };
    assert_eq!(
        error.to_string(),
        format!(
            "{}: its manifest.json changed while this run read it; run again",
            dir.path().display()
        )
    );
}
