//! A quantized MatMul, run by ONNX Runtime, reproduces its float result within the scheme's
//! error bound: |y_q − y| ≤ Σ_k |x_k| · (half a quantization step of w_kn), plus float rounding.
//! Both weight layouts are covered (a [K, N] initializer, and the transpose of an [N, K] one as
//! the tied head has), for int8 and for int4 with a full and a partial last block, through the
//! single-file path (external data in, inline out).

use std::path::Path;

use layerprune_quantize::quant::{quantize_int4_blockwise, quantize_int8_per_channel};
use layerprune_quantize::{quantize_single_file, write_single_file, QuantizeError, Scheme};
use ndarray::Array2;
use onnx_protobuf::tensor_proto::{DataLocation, DataType};
use onnx_protobuf::type_proto::{Tensor, Value};
use onnx_protobuf::{
    tensor_shape_proto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::TensorRef;

const M: usize = 7;
const K: usize = 96;
const N: usize = 40;

fn pseudo_random(count: usize, seed: u64, outlier_every: usize) -> Vec<f32> {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    (0..count)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            if i % outlier_every == 0 {
                4.0 * u
            } else {
                u
            }
        })
        .collect()
}

fn float_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let shape = TensorShapeProto {
        dim: dims
            .iter()
            .map(|&d| tensor_shape_proto::Dimension {
                value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.into(),
        type_: protobuf::MessageField::some(TypeProto {
            value: Some(Value::TensorType(Tensor {
                elem_type: DataType::FLOAT as i32,
                shape: protobuf::MessageField::some(shape),
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// External float tensor in `dir/file`.
fn external(dir: &Path, name: &str, file: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join(file), &bytes).unwrap();
    let entry = |k: &str, v: String| StringStringEntryProto {
        key: k.into(),
        value: v,
        ..Default::default()
    };
    TensorProto {
        name: name.into(),
        data_type: DataType::FLOAT as i32,
        dims: dims.to_vec(),
        data_location: protobuf::EnumOrUnknown::new(DataLocation::EXTERNAL),
        external_data: vec![
            entry("location", file.into()),
            entry("offset", "0".into()),
            entry("length", bytes.len().to_string()),
        ],
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        name: format!("{op}_{output}"),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

/// y1 = x · W1 (W1 [K, N]); y2 = x · W2ᵀ (W2 [N, K]).
fn write_model(dir: &Path, w1: &[f32], w2: &[f32]) -> std::path::PathBuf {
    let graph = GraphProto {
        name: "two_matmuls".into(),
        node: vec![
            node("MatMul", &["x", "w1"], "y1"),
            node("Transpose", &["w2"], "w2t"),
            node("MatMul", &["x", "w2t"], "y2"),
        ],
        initializer: vec![
            external(dir, "w1", "w1.bin", &[K as i64, N as i64], w1),
            external(dir, "w2", "w2.bin", &[N as i64, K as i64], w2),
        ],
        input: vec![float_info("x", &[M as i64, K as i64])],
        output: vec![
            float_info("y1", &[M as i64, N as i64]),
            float_info("y2", &[M as i64, N as i64]),
        ],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        graph: protobuf::MessageField::some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
            ..Default::default()
        }],
        ..Default::default()
    };
    let path = dir.join("model.onnx");
    std::fs::write(&path, model.write_to_bytes().unwrap()).unwrap();
    path
}

fn environment() -> Environment {
    let library = layerprune_runtime::runtime_library_path()
        .expect("ONNX Runtime library (ORT_DYLIB_PATH or `make ort`)");
    // As the stages' environment: no telemetry store written under $HOME by a test either.
    // Set once per process (the tests share it), before any test loads the library.
    layerprune_runtime::turn_off_telemetry();
    ort::init_from(&library)
        .expect("library loads")
        .with_name("quantize-test")
        .with_telemetry(false)
        .build()
        .expect("environment starts")
}

fn run(env: &Environment, path: &Path, x: &Array2<f32>) -> (Vec<f32>, Vec<f32>) {
    let mut session = Session::builder(env)
        .unwrap()
        .commit_from_file(path)
        .unwrap_or_else(|e| panic!("{} loads: {e}", path.display()));
    let outputs = session
        .run(ort::inputs!["x" => TensorRef::from_array_view(x).unwrap()])
        .unwrap();
    let get = |name: &str| -> Vec<f32> {
        outputs[name]
            .try_extract_array::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    };
    (get("y1"), get("y2"))
}

/// Per (row of x, output channel): Σ_k |x_k| · max error of w_kn, and Σ_k |x_k w_kn| (the
/// scale of float rounding).
fn bounds(
    x: &Array2<f32>,
    w_nk: &[f32],
    max_error: impl Fn(usize, usize) -> f32,
) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(M * N);
    for i in 0..M {
        for n in 0..N {
            let mut bound = 0f64;
            let mut magnitude = 0f64;
            for k in 0..K {
                let a = f64::from(x[(i, k)].abs());
                bound += a * f64::from(max_error(n, k));
                magnitude += a * f64::from(w_nk[n * K + k].abs());
            }
            out.push((bound, magnitude));
        }
    }
    out
}

fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| values[r * cols + c]))
        .collect()
}

#[test]
fn quantized_matmuls_stay_within_the_error_bound_in_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let w1 = pseudo_random(K * N, 1, 53); // [K, N]
    let w2 = pseudo_random(N * K, 2, 41); // [N, K]
    let source = write_model(dir.path(), &w1, &w2);
    let x = Array2::from_shape_vec((M, K), pseudo_random(M * K, 3, 1000)).unwrap();
    let env = environment();
    let (f1, f2) = run(&env, &source, &x);
    let w1_nk = transpose(&w1, K, N);

    let schemes = [
        Scheme::Int8,
        Scheme::Int4 {
            block_size: 32,
            accuracy_level: 0,
        },
        // K = 96 < 128: one partial block per row.
        Scheme::Int4 {
            block_size: 128,
            accuracy_level: 0,
        },
    ];
    let mut mean_errors = Vec::new();
    for scheme in &schemes {
        let quantized = quantize_single_file(&source, scheme).unwrap();
        assert_eq!(quantized.report.quantized.len(), 2);
        let out = dir.path().join(format!("q-{scheme:?}.onnx"));
        write_single_file(&source, &out, &quantized.bytes, false).unwrap();
        // Written again without overwrite: refused as the stage's --out check refuses it.
        let again = write_single_file(&source, &out, &quantized.bytes, false).unwrap_err();
        assert_eq!(
            again.to_string(),
            format!(
                "{}: already exists; pass --overwrite to replace it",
                out.display()
            )
        );
        let (q1, q2) = run(&env, &out, &x);
        let mut total = 0f64;
        for (w_nk, float, quant) in [(&w1_nk, &f1, &q1), (&w2, &f2, &q2)] {
            let bound = match scheme {
                Scheme::Int8 => {
                    let q = quantize_int8_per_channel(w_nk, N, K);
                    bounds(&x, w_nk, |n, _| q.max_error(n))
                }
                Scheme::Int4 { block_size, .. } => {
                    let q = quantize_int4_blockwise(w_nk, N, K, *block_size);
                    bounds(&x, w_nk, |n, k| q.max_error(n, k / block_size))
                }
            };
            for (j, (&(b, magnitude), (&y, &yq))) in
                bound.iter().zip(float.iter().zip(quant)).enumerate()
            {
                let error = f64::from((y - yq).abs());
                // float32 accumulation in two different kernels: a few ulps of the magnitude.
                let slack = 1e-5 * magnitude + 1e-6;
                assert!(
                    error <= b + slack,
                    "{scheme:?} output {j}: |error| {error} above the bound {b} (+{slack})"
                );
                total += error;
            }
        }
        assert!(total > 0.0, "{scheme:?} changed nothing");
        mean_errors.push(total / (2 * M * N) as f64);
    }
    // Coarser formats lose more: int8 < int4/32 < int4/128.
    assert!(mean_errors[0] < mean_errors[1], "{mean_errors:?}");
    assert!(mean_errors[1] < mean_errors[2], "{mean_errors:?}");
}

#[test]
fn a_graph_without_a_constant_matmul_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let w = pseudo_random(K * N, 1, 53);
    let source = write_model(dir.path(), &w, &w);
    let mut model = ModelProto::parse_from_bytes(&std::fs::read(&source).unwrap()).unwrap();
    // x · x-derived values only: Transpose of an input, no initializer behind a MatMul.
    let graph = model.graph.as_mut().unwrap();
    graph.node = vec![
        node("Transpose", &["x"], "xt"),
        node("MatMul", &["x", "xt"], "y1"),
    ];
    graph.initializer.clear();
    graph.output.truncate(1);
    std::fs::write(&source, model.write_to_bytes().unwrap()).unwrap();
    let error = quantize_single_file(&source, &Scheme::Int8).unwrap_err();
    assert!(matches!(error, QuantizeError::NothingToQuantize { .. }));
    let message = error.to_string();
    assert!(message.contains("model.onnx") && message.contains("nothing to quantize"));
}
