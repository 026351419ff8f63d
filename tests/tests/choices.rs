//! Continuation log-likelihoods (`ChoiceScorer`): against transformers' logits saved at export,
//! batched / padded / shared-row / prefix-reusing scoring against one sequence at a time, and
//! the float64 log-softmax against the head graph's own NLL (exports without a logits head).

use layerprune_core::Mask;
use layerprune_runtime::{
    log_sum_exp_f64, ChoiceOptions, ChoiceScorer, LayeredModel, LoglikRequest, RuntimeOptions,
    Scoring,
};
use layerprune_tests::tiny_model_dir;
use ndarray::Array2;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    input_ids: Vec<Vec<u32>>,
    logits: Vec<Vec<Vec<f32>>>,
}

fn open_model() -> LayeredModel {
    LayeredModel::open(&tiny_model_dir(), &RuntimeOptions::default()).expect("fixture loads")
}

fn log_softmax_at(logits: &[f32], id: u32) -> f64 {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let sum: f64 = logits.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    f64::from(logits[id as usize]) - max - sum.ln()
}

#[test]
fn continuation_logliks_match_transformers_logits() {
    let text = std::fs::read_to_string(tiny_model_dir().join("reference.json")).unwrap();
    let reference: Reference = serde_json::from_str(&text).unwrap();
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for (b, ids) in reference.input_ids.iter().enumerate() {
        for split in [3, 9, 15] {
            requests.push(LoglikRequest {
                context: ids[..split].to_vec(),
                continuation: ids[split..].to_vec(),
                group: b,
            });
            expected.push(
                (split..ids.len())
                    .map(|t| log_softmax_at(&reference.logits[b][t - 1], ids[t]))
                    .sum::<f64>(),
            );
        }
    }
    let mut scorer = ChoiceScorer::new(open_model(), &requests, ChoiceOptions::default()).unwrap();
    assert_eq!(scorer.scoring(), Scoring::LogitsF64);
    let full = Mask::full(scorer.num_blocks());
    let got = scorer.score(&[full], &mut |_, _| {}).unwrap();
    for (r, (got, want)) in got[0].iter().zip(&expected).enumerate() {
        assert!((got - want).abs() < 1e-4, "request {r}: {got} vs {want}");
    }
}

/// Σ log p(continuation) for one request alone, run block by block with no batching, the
/// log-softmax of the logits head taken in float64.
fn one_at_a_time(model: &mut LayeredModel, mask: &Mask, request: &LoglikRequest) -> f64 {
    let whole: Vec<u32> = request
        .context
        .iter()
        .chain(&request.continuation)
        .copied()
        .collect();
    let n = whole.len() - 1;
    let inputs = Array2::from_shape_fn((1, n), |(_, t)| i64::from(whole[t]));
    let mut state = model.embed(&inputs).unwrap();
    for block in 0..model.num_blocks() {
        if mask.is_kept(block) {
            state = model.run_block(block, &state).unwrap();
        }
    }
    let logits = model.logits(&state).unwrap();
    (request.context.len() - 1..n)
        .map(|t| {
            let row = logits.slice(ndarray::s![0, t, ..]);
            f64::from(row[whole[t + 1] as usize]) - log_sum_exp_f64(row)
        })
        .sum::<f64>()
}

fn ids(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|t| (seed * 37 + t * 11 + 5) % 300)
        .collect()
}

#[test]
fn batched_padded_and_shared_rows_equal_one_sequence_at_a_time() {
    // Questions of different lengths; question 1 has two single-token continuations (one
    // shared row, two head variants) and a third choice sharing that context; question 2 is
    // long enough to be cut into its own batch by a small token budget.
    let requests = vec![
        LoglikRequest {
            context: ids(1, 5),
            continuation: ids(2, 3),
            group: 0,
        },
        LoglikRequest {
            context: ids(1, 5),
            continuation: ids(3, 1),
            group: 0,
        },
        LoglikRequest {
            context: ids(4, 7),
            continuation: vec![17],
            group: 1,
        },
        LoglikRequest {
            context: ids(4, 7),
            continuation: vec![250],
            group: 1,
        },
        LoglikRequest {
            context: ids(4, 7),
            continuation: ids(5, 4),
            group: 1,
        },
        LoglikRequest {
            context: ids(6, 20),
            continuation: ids(7, 6),
            group: 2,
        },
        LoglikRequest {
            context: ids(8, 2),
            continuation: ids(9, 2),
            group: 3,
        },
    ];
    let masks = vec![
        Mask::full(6),
        Mask::from_kept(vec![true, true, false, true, true, true]),
        Mask::from_kept(vec![true, true, false, true, false, true]),
        Mask::from_kept(vec![false, true, true, true, true, false]),
    ];
    let mut reference_model = open_model();
    let expected: Vec<Vec<f64>> = masks
        .iter()
        .map(|m| {
            requests
                .iter()
                .map(|r| one_at_a_time(&mut reference_model, m, r))
                .collect()
        })
        .collect();
    for (batch_tokens, reuse) in [(2048, true), (30, true), (30, false), (1, true)] {
        let options = ChoiceOptions {
            batch_tokens,
            reuse_prefixes: reuse,
            ..ChoiceOptions::default()
        };
        let mut scorer = ChoiceScorer::new(open_model(), &requests, options).unwrap();
        let got = scorer.score(&masks, &mut |_, _| {}).unwrap();
        for (m, (got, want)) in got.iter().zip(&expected).enumerate() {
            for (r, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(
                    (g - w).abs() < 1e-5,
                    "batch_tokens {batch_tokens}, reuse {reuse}, mask {m}, request {r}: {g} vs {w}"
                );
            }
        }
        if batch_tokens == 2048 {
            assert_eq!(scorer.num_batches(), 1);
            // Requests 2 and 3 share one row: 6 rows, the longest 25 tokens.
            assert_eq!(scorer.padded_tokens(), 6 * 25);
        }
    }
}

#[test]
fn float64_log_softmax_is_exact_where_a_float32_sum_drifts() {
    // SmolLM2's vocabulary: one logit 0, the other 49,151 at −0.7, so
    // log Σ exp = ln(1 + 49,151 e^−0.7) in closed form.
    let mut logits = ndarray::Array1::from_elem(49_152, -0.7f32);
    logits[0] = 0.0;
    let exact = (1.0 + 49_151.0 * f64::from(-0.7f32).exp()).ln();
    assert!((log_sum_exp_f64(logits.view()) - exact).abs() < 1e-10);
    // A float32 running sum over the same terms is off by far more (why the scorer sums
    // in float64): the error grows with the vocabulary.
    let sum32: f32 = logits.iter().map(|&x| x.exp()).sum();
    let drift = (f64::from(sum32).ln() - exact).abs();
    assert!(drift > 1e-7, "float32 drift {drift}");
    // Large logits do not overflow.
    let large = ndarray::Array1::from_vec(vec![1000.0f32, 1000.0]);
    assert!((log_sum_exp_f64(large.view()) - (1000.0 + 2f64.ln())).abs() < 1e-9);
}

#[test]
fn an_export_without_a_logits_head_scores_through_the_head_graph() {
    // The fixture with `head_logits` dropped from its manifest, as older exports were.
    let dir = tempfile::tempdir().unwrap();
    let source = tiny_model_dir();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let target = dir.path().join(path.file_name().unwrap());
            std::fs::create_dir_all(&target).unwrap();
            for file in std::fs::read_dir(&path).unwrap() {
                let file = file.unwrap().path();
                std::fs::copy(&file, target.join(file.file_name().unwrap())).unwrap();
            }
        } else {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let manifest_path = dir.path().join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let object = manifest.as_object_mut().unwrap();
    object.remove("head_logits");
    let removed_file = object["files"]
        .as_object_mut()
        .unwrap()
        .remove("head_logits.onnx");
    assert!(removed_file.is_some());
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let legacy_model = LayeredModel::open(dir.path(), &RuntimeOptions::default()).unwrap();

    let requests: Vec<LoglikRequest> = (0..4)
        .map(|g| LoglikRequest {
            context: ids(g, 6 + g as usize),
            continuation: ids(g + 10, 3 + g as usize),
            group: g as usize,
        })
        .collect();
    let masks = [
        Mask::full(6),
        Mask::from_kept(vec![true, false, true, true, false, true]),
    ];
    let mut legacy = ChoiceScorer::new(legacy_model, &requests, ChoiceOptions::default()).unwrap();
    assert_eq!(legacy.scoring(), Scoring::HeadGraph);
    let mut current = ChoiceScorer::new(open_model(), &requests, ChoiceOptions::default()).unwrap();
    assert_eq!(current.scoring(), Scoring::LogitsF64);
    let old = legacy.score(&masks, &mut |_, _| {}).unwrap();
    let new = current.score(&masks, &mut |_, _| {}).unwrap();
    for (m, (old, new)) in old.iter().zip(&new).enumerate() {
        for (r, (o, n)) in old.iter().zip(new).enumerate() {
            assert!((o - n).abs() < 1e-4, "mask {m}, request {r}: {o} vs {n}");
        }
    }
}

#[test]
fn bad_requests_are_refused() {
    let refuse = |request: LoglikRequest, needle: &str| {
        let error = ChoiceScorer::new(open_model(), &[request], ChoiceOptions::default())
            .err()
            .expect("refused")
            .to_string();
        assert!(error.contains(needle), "{error}");
    };
    refuse(
        LoglikRequest {
            context: vec![],
            continuation: vec![1],
            group: 0,
        },
        "empty context",
    );
    refuse(
        LoglikRequest {
            context: vec![1],
            continuation: vec![],
            group: 0,
        },
        "empty continuation",
    );
    refuse(
        LoglikRequest {
            context: vec![1, 400],
            continuation: vec![2],
            group: 0,
        },
        "token id 400",
    );
    assert!(ChoiceScorer::new(open_model(), &[], ChoiceOptions::default()).is_err());
}
