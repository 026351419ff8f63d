//! Continuation log-likelihoods (`ChoiceScorer`): against transformers' logits saved at export,
//! and batched / padded / shared-row / prefix-reusing scoring against one sequence at a time.

use layerprune_core::Mask;
use layerprune_runtime::{
    ChoiceOptions, ChoiceScorer, LayeredModel, LoglikRequest, RuntimeOptions,
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
    let full = Mask::full(scorer.num_blocks());
    let got = scorer.score(&[full], &mut |_, _| {}).unwrap();
    for (r, (got, want)) in got[0].iter().zip(&expected).enumerate() {
        assert!((got - want).abs() < 1e-4, "request {r}: {got} vs {want}");
    }
}

/// Σ log p(continuation) for one request alone, run block by block with no batching.
fn one_at_a_time(model: &mut LayeredModel, mask: &Mask, request: &LoglikRequest) -> f64 {
    let whole: Vec<u32> = request
        .context
        .iter()
        .chain(&request.continuation)
        .copied()
        .collect();
    let n = whole.len() - 1;
    let inputs = Array2::from_shape_fn((1, n), |(_, t)| i64::from(whole[t]));
    let targets = Array2::from_shape_fn((1, n), |(_, t)| i64::from(whole[t + 1]));
    let mut state = model.embed(&inputs).unwrap();
    for block in 0..model.num_blocks() {
        if mask.is_kept(block) {
            state = model.run_block(block, &state).unwrap();
        }
    }
    let nll = model.token_nll(&state, &targets).unwrap();
    -(request.context.len() - 1..n)
        .map(|t| f64::from(nll[[0, t]]))
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
                    (g - w).abs() < 1e-4,
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
