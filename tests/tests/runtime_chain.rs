//! The ONNX chain against transformers' reference outputs saved at export.

use layerprune_core::Mask;
use layerprune_runtime::{EvalOptions, Evaluator, LayeredModel, RuntimeOptions};
use layerprune_tests::tiny_model_dir;
use ndarray::Array2;
use serde::Deserialize;

#[derive(Deserialize)]
struct Deleted {
    blocks: Vec<usize>,
    nll: Vec<Vec<f64>>,
}

#[derive(Deserialize)]
struct Reference {
    input_ids: Vec<Vec<u32>>,
    logits: Vec<Vec<Vec<f32>>>,
    nll: Vec<Vec<f64>>,
    deleted: Vec<Deleted>,
}

fn reference() -> Reference {
    let path = tiny_model_dir().join("reference.json");
    let text = std::fs::read_to_string(&path).expect("fixture reference.json is committed");
    serde_json::from_str(&text).expect("reference.json parses")
}

fn open_model() -> LayeredModel {
    LayeredModel::open(&tiny_model_dir(), &RuntimeOptions::default()).expect("fixture loads")
}

fn mean(rows: &[Vec<f64>]) -> f64 {
    let count: usize = rows.iter().map(Vec::len).sum();
    rows.iter().flatten().sum::<f64>() / count as f64
}

#[test]
fn chain_reproduces_reference_logits() {
    let reference = reference();
    let mut model = open_model();
    let ids = Array2::from_shape_fn((2, 16), |(b, t)| i64::from(reference.input_ids[b][t]));
    let mut state = model.embed(&ids).unwrap();
    for block in 0..model.num_blocks() {
        state = model.run_block(block, &state).unwrap();
    }
    let logits = model.logits(&state).unwrap();
    // Every reference logit is compared: the loop below covers only what the chain gave.
    let vocab = reference.logits[0][0].len();
    assert_eq!(logits.dim(), (2, 16, vocab));
    let mut max_diff = 0.0f32;
    for ((b, t, v), value) in logits.indexed_iter() {
        max_diff = max_diff.max((value - reference.logits[b][t][v]).abs());
    }
    assert!(max_diff < 1e-4, "max |logit diff| {max_diff}");
}

#[test]
fn skipping_blocks_equals_deleting_them() {
    let reference = reference();
    let model = open_model();
    let mut evaluator =
        Evaluator::new(model, &reference.input_ids, EvalOptions::default()).unwrap();
    let num_blocks = evaluator.num_blocks();
    let mut masks = vec![Mask::full(num_blocks)];
    let mut expected = vec![mean(&reference.nll)];
    for deleted in &reference.deleted {
        masks.push(Mask::from_removed(num_blocks, &deleted.blocks).unwrap());
        expected.push(mean(&deleted.nll));
    }
    let results = evaluator.evaluate(&masks, &mut |_, _| {}).unwrap();
    // A result for the full model and each deletion of the reference (the pairs below stop at
    // the shorter list).
    assert!(reference.deleted.len() >= 2);
    assert_eq!(results.len(), masks.len());
    for ((mask, result), want) in masks.iter().zip(&results).zip(&expected) {
        assert_eq!(result.tokens_scored, 2 * 15);
        assert!(
            (result.nll() - want).abs() < 1e-5,
            "mask {mask}: nll {} vs reference {want}",
            result.nll()
        );
    }
}

#[test]
fn prefix_reuse_and_batching_do_not_change_results() {
    let reference = reference();
    let num_blocks = 6;
    // Every mask of 6 blocks: lots of shared prefixes.
    let masks: Vec<Mask> = (0..1u32 << num_blocks)
        .map(|bits| Mask::from_kept((0..num_blocks).map(|i| bits >> i & 1 == 1).collect()))
        .collect();
    let windows: Vec<Vec<u32>> = reference.input_ids.clone();
    let run = |options: EvalOptions| {
        let mut evaluator = Evaluator::new(open_model(), &windows, options).unwrap();
        let results = evaluator.evaluate(&masks, &mut |_, _| {}).unwrap();
        (results, evaluator.blocks_run())
    };
    let (shared, shared_blocks) = run(EvalOptions::default());
    let (fresh, fresh_blocks) = run(EvalOptions {
        reuse_prefixes: false,
        batch_windows: 1,
        ..EvalOptions::default()
    });
    let (tight_cache, _) = run(EvalOptions {
        cache_bytes: 3 * 2 * 16 * 64 * 4,
        ..EvalOptions::default()
    });
    // Masks advancing together, 1..=64 states per block call (64: every group in one call),
    // and their final states through the head one mask at a time (automatic on the CPU) or
    // several at once.
    let batched: Vec<_> = [(2, 0), (5, 0), (64, 0), (5, 5), (64, 64), (8, 3)]
        .into_iter()
        .map(|(mask_batch, head_batch)| {
            run(EvalOptions {
                mask_batch,
                head_batch,
                ..EvalOptions::default()
            })
        })
        .collect();
    let (tight_batched, _) = run(EvalOptions {
        mask_batch: 4,
        cache_bytes: 3 * 2 * 16 * 64 * 4,
        ..EvalOptions::default()
    });
    for (results, blocks) in &batched {
        // Each distinct prefix's block runs once, as with the prefix stack.
        assert_eq!(*blocks, shared_blocks);
        for i in 0..masks.len() {
            // Bit for bit: each window's rows are computed alike whatever else is in the call.
            assert_eq!(
                results[i].nll(),
                shared[i].nll(),
                "mask {}: {} batched vs {} one at a time",
                masks[i],
                results[i].nll(),
                shared[i].nll()
            );
        }
    }
    for i in 0..masks.len() {
        assert_eq!(tight_batched[i].nll(), shared[i].nll(), "mask {}", masks[i]);
        assert!(
            (shared[i].nll() - fresh[i].nll()).abs() < 1e-6,
            "mask {}",
            masks[i]
        );
        assert_eq!(shared[i].nll(), tight_cache[i].nll(), "mask {}", masks[i]);
    }
    // Without reuse every mask runs each kept block: 6 × 64 / 2 = 192 per window batch.
    // A trie over all 64 masks runs each of its 62 non-root nodes' blocks once at most.
    assert_eq!(fresh_blocks, 192 * 2);
    assert!(
        shared_blocks <= 63,
        "prefix reuse ran {shared_blocks} blocks"
    );
}

#[test]
fn bad_windows_are_refused() {
    let error = Evaluator::new(open_model(), &[vec![1, 2, 100_000]], EvalOptions::default())
        .err()
        .expect("out-of-vocabulary id is refused");
    assert!(error.to_string().contains("100000"), "{error}");
    let error = Evaluator::new(open_model(), &[], EvalOptions::default())
        .err()
        .expect("no windows is refused");
    assert!(error.to_string().contains("has no windows"), "{error}");
    let mut evaluator =
        Evaluator::new(open_model(), &[vec![1, 2, 3]], EvalOptions::default()).unwrap();
    let error = evaluator
        .evaluate(&[Mask::full(5)], &mut |_, _| {})
        .unwrap_err();
    assert!(error.to_string().contains("6 blocks"), "{error}");
}

#[test]
fn block_statistics_match_a_direct_computation() {
    let reference = reference();
    let mut evaluator =
        Evaluator::new(open_model(), &reference.input_ids, EvalOptions::default()).unwrap();
    let stats = layerprune_runtime::block_statistics(&mut evaluator, 2).unwrap();
    let mut model = open_model();
    let ids = Array2::from_shape_fn((2, 16), |(b, t)| i64::from(reference.input_ids[b][t]));
    let mut states = vec![model.embed(&ids).unwrap()];
    for block in 0..6 {
        let next = model.run_block(block, &states[block]).unwrap();
        states.push(next);
    }
    let arrays: Vec<_> = states
        .iter()
        .map(|s| model.hidden_to_array(s).unwrap())
        .collect();
    assert_eq!(stats.len(), 6 + 5);
    for stat in &stats {
        let (before, after) = (
            &arrays[stat.start_block],
            &arrays[stat.start_block + stat.run_length],
        );
        let mut cos_sum = 0.0;
        let mut angle_sum = 0.0;
        for b in 0..2 {
            for t in 0..16 {
                let x = before.slice(ndarray::s![b, t, ..]);
                let y = after.slice(ndarray::s![b, t, ..]);
                let dot = |a: &ndarray::ArrayView1<f32>, b: &ndarray::ArrayView1<f32>| {
                    a.iter()
                        .zip(b)
                        .map(|(p, q)| f64::from(*p) * f64::from(*q))
                        .sum::<f64>()
                };
                let cos = dot(&x, &y) / (dot(&x, &x).sqrt() * dot(&y, &y).sqrt());
                cos_sum += cos;
                angle_sum += cos.clamp(-1.0, 1.0).acos() / std::f64::consts::PI;
            }
        }
        assert!((stat.mean_cosine - cos_sum / 32.0).abs() < 1e-5, "{stat:?}");
        assert!(
            (stat.angular_distance - angle_sum / 32.0).abs() < 1e-5,
            "{stat:?}"
        );
    }
}

#[test]
fn a_model_of_one_sequence_length_refuses_other_windows() {
    // A Mamba export unrolls its scan for one length and records it in the manifest.
    let dir = tempfile::tempdir().unwrap();
    layerprune_tests::copy_dir(&tiny_model_dir(), dir.path());
    let path = dir.path().join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest["fixed_seq_len"] = 4.into();
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let open = || LayeredModel::open(dir.path(), &RuntimeOptions::default()).unwrap();
    let error = Evaluator::new(open(), &[vec![1, 2, 3]], EvalOptions::default())
        .err()
        .expect("3-token windows are refused");
    assert!(error.to_string().contains("exactly 4 tokens"), "{error}");
    assert!(Evaluator::new(open(), &[vec![1, 2, 3, 4]], EvalOptions::default()).is_ok());
}
