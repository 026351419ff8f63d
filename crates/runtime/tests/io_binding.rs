//! Hidden states bound to the device's memory (`RuntimeOptions::io_binding`, ONNX Runtime's
//! IoBinding; on by default for CUDA) against the plain path, on the CPU provider with the
//! committed tiny fixture: the same computation, so the same results bit for bit, through every
//! way the evaluator moves states (the prefix stack, no reuse, a tight cache, masks batched
//! through shared blocks, block statistics, continuation scoring).

use layerprune_core::{Device, Mask};
use layerprune_runtime::{
    block_statistics, on_host, Arena, ChoiceOptions, ChoiceScorer, EvalOptions, Evaluator,
    LayeredModel, LoglikRequest, OnHost, RuntimeError, RuntimeOptions,
};
use layerprune_tests::{every_mask, fixture_windows, tiny_model_dir};
use ndarray::Array2;

fn open(io_binding: bool) -> LayeredModel {
    let options = RuntimeOptions {
        io_binding: Some(io_binding),
        ..RuntimeOptions::default()
    };
    let model = LayeredModel::open(&tiny_model_dir(), &options).expect("fixture loads");
    assert_eq!(model.io_binding(), io_binding);
    model
}

/// (NLL sums, blocks run) of `masks` with output binding on or off.
fn evaluate(io_binding: bool, masks: &[Mask], options: EvalOptions) -> (Vec<f64>, u64) {
    let mut evaluator =
        Evaluator::new(open(io_binding), &fixture_windows(7, 3, 24), options).unwrap();
    let results = evaluator.evaluate(masks, &mut |_, _| {}).unwrap();
    (
        results.iter().map(|r| r.nll_sum).collect(),
        evaluator.blocks_run(),
    )
}

#[test]
fn bound_states_give_the_same_nll_bit_for_bit() {
    let masks = every_mask(6);
    for options in [
        EvalOptions::default(),
        EvalOptions {
            reuse_prefixes: false,
            ..EvalOptions::default()
        },
        // Room for two states: the stack pops and recomputes.
        EvalOptions {
            cache_bytes: 2 * 3 * 24 * 64 * 4,
            ..EvalOptions::default()
        },
        EvalOptions {
            batch_windows: 2,
            ..EvalOptions::default()
        },
        // Masks batched through shared blocks: concatenated and split by the batch-axis
        // graphs when bound, on the host when not; the head one mask at a time or batched.
        EvalOptions {
            mask_batch: 5,
            ..EvalOptions::default()
        },
        EvalOptions {
            mask_batch: 64,
            ..EvalOptions::default()
        },
        EvalOptions {
            mask_batch: 8,
            head_batch: 8,
            ..EvalOptions::default()
        },
    ] {
        let (plain, plain_blocks) = evaluate(false, &masks, options.clone());
        let (bound, bound_blocks) = evaluate(true, &masks, options.clone());
        assert_eq!(plain_blocks, bound_blocks, "{options:?}");
        for ((mask, p), b) in masks.iter().zip(&plain).zip(&bound) {
            assert!(p.is_finite());
            assert_eq!(
                p.to_bits(),
                b.to_bits(),
                "mask {mask}, {options:?}: plain {p} vs bound {b}"
            );
        }
    }
}

#[test]
fn bound_chain_equals_plain_chain_state_by_state() {
    let ids = Array2::from_shape_fn((2, 16), |(b, t)| i64::from(fixture_windows(3, 2, 16)[b][t]));
    let targets = Array2::from_shape_fn((2, 16), |(b, t)| ids[[b, (t + 1) % 16]]);
    let mut plain = open(false);
    let mut bound = open(true);
    for removed in [vec![], vec![2], vec![0, 5], vec![1, 2, 3, 4]] {
        let mask = Mask::from_removed(6, &removed).unwrap();
        let mut p = plain.embed(&ids).unwrap();
        let mut b = bound.embed(&ids).unwrap();
        for block in (0..6).filter(|&i| mask.is_kept(i)) {
            p = plain.run_block(block, &p).unwrap();
            b = bound.run_block(block, &b).unwrap();
            // A bound state is where the device keeps it: host memory on the CPU provider,
            // read in place.
            assert!(matches!(on_host(&b).unwrap(), OnHost::Borrowed(_)));
            assert_eq!(
                plain.hidden_to_array(&p).unwrap(),
                bound.hidden_to_array(&b).unwrap(),
                "mask {mask}, after block {block}"
            );
        }
        let (np, nb) = (
            plain.token_nll(&p, &targets).unwrap(),
            bound.token_nll(&b, &targets).unwrap(),
        );
        assert_eq!(np, nb, "mask {mask}");
        assert_eq!(
            plain.logits(&p).unwrap(),
            bound.logits(&b).unwrap(),
            "mask {mask}"
        );
    }
}

#[test]
fn bound_outputs_are_fresh_buffers_each_call() {
    // Holding one call's output while the same block runs again must not see it overwritten
    // (the prefix stack keeps states of a block while that block runs for other masks).
    let mut model = open(true);
    let ids = Array2::from_shape_fn((1, 8), |(_, t)| t as i64 + 1);
    let other = Array2::from_shape_fn((1, 8), |(_, t)| 200 - t as i64);
    let first_in = model.embed(&ids).unwrap();
    let first = model.run_block(0, &first_in).unwrap();
    let before = model.hidden_to_array(&first).unwrap();
    let second_in = model.embed(&other).unwrap();
    let second = model.run_block(0, &second_in).unwrap();
    assert_eq!(model.hidden_to_array(&first).unwrap(), before);
    assert_ne!(model.hidden_to_array(&second).unwrap(), before);
    assert_eq!(
        model.hidden_to_array(&first_in).unwrap(),
        open(false)
            .hidden_to_array(&open(false).embed(&ids).unwrap())
            .unwrap()
    );
}

#[test]
fn block_statistics_and_choice_scores_agree() {
    let stats = |io_binding| {
        let mut evaluator = Evaluator::new(
            open(io_binding),
            &fixture_windows(5, 2, 16),
            EvalOptions::default(),
        )
        .unwrap();
        block_statistics(&mut evaluator, 3).unwrap()
    };
    assert_eq!(stats(false), stats(true));

    let ids = fixture_windows(11, 2, 14);
    let requests: Vec<LoglikRequest> = ids
        .iter()
        .enumerate()
        .flat_map(|(group, ids)| {
            [4, 9].map(|split| LoglikRequest {
                context: ids[..split].to_vec(),
                continuation: ids[split..].to_vec(),
                group,
            })
        })
        .collect();
    let masks = [Mask::full(6), Mask::from_removed(6, &[3]).unwrap()];
    let score = |io_binding| {
        let mut scorer =
            ChoiceScorer::new(open(io_binding), &requests, ChoiceOptions::default()).unwrap();
        scorer.score(&masks, &mut |_, _| {}).unwrap()
    };
    assert_eq!(score(false), score(true));
}

#[test]
fn binding_defaults_to_the_device_and_tf32_on_the_cpu_is_refused() {
    assert!(!RuntimeOptions::default().binds_outputs());
    assert!(RuntimeOptions {
        device: Device::Cuda(0),
        ..RuntimeOptions::default()
    }
    .binds_outputs());
    assert!(
        !LayeredModel::open(&tiny_model_dir(), &RuntimeOptions::default())
            .unwrap()
            .io_binding()
    );

    let refused = LayeredModel::open(
        &tiny_model_dir(),
        &RuntimeOptions {
            tf32: Some(true),
            ..RuntimeOptions::default()
        },
    );
    let Err(error) = refused else {
        panic!("TF32 on the CPU provider was accepted")
    };
    assert!(matches!(error, RuntimeError::BadInput(_)), "{error:?}");
    assert!(error.to_string().contains("TF32"), "{error}");
    // Off is what the CPU does anyway.
    LayeredModel::open(
        &tiny_model_dir(),
        &RuntimeOptions {
            tf32: Some(false),
            ..RuntimeOptions::default()
        },
    )
    .unwrap();
}

/// Opening the fixture with `options` is refused as bad input, saying `says`.
fn refused(options: RuntimeOptions, says: &str) {
    let Err(error) = LayeredModel::open(&tiny_model_dir(), &options) else {
        panic!("{options:?} was accepted")
    };
    assert!(matches!(error, RuntimeError::BadInput(_)), "{error:?}");
    assert!(error.to_string().contains(says), "{error}");
}

#[test]
fn overlap_needs_cuda_and_bound_states_and_is_on_there_by_default() {
    let cuda = RuntimeOptions {
        device: Device::Cuda(0),
        ..RuntimeOptions::default()
    };
    assert!(cuda.overlaps());
    assert!(!RuntimeOptions::default().overlaps());
    for (io_binding, overlap) in [(Some(false), None), (None, Some(false))] {
        let options = RuntimeOptions {
            io_binding,
            overlap,
            ..cuda.clone()
        };
        assert!(!options.overlaps(), "{options:?}");
    }
    // On the CPU, bound states change nothing: still no overlap.
    assert!(!RuntimeOptions {
        io_binding: Some(true),
        ..RuntimeOptions::default()
    }
    .overlaps());
    // Both refused before any session is made (so before CUDA is looked for).
    refused(
        RuntimeOptions {
            overlap: Some(true),
            ..RuntimeOptions::default()
        },
        "CUDA execution provider",
    );
    refused(
        RuntimeOptions {
            overlap: Some(true),
            io_binding: Some(false),
            ..cuda
        },
        "--io-binding off returns them to the host",
    );
}

#[test]
fn cuda_graphs_need_cuda_with_overlap_and_are_off_by_default() {
    assert!(!RuntimeOptions::default().cuda_graphs);
    // Refused before any session is made (so before CUDA is looked for).
    refused(
        RuntimeOptions {
            cuda_graphs: true,
            io_binding: Some(true),
            ..RuntimeOptions::default()
        },
        "CUDA graphs are a setting of the CUDA execution provider",
    );
    let cuda = RuntimeOptions {
        device: Device::Cuda(0),
        cuda_graphs: true,
        ..RuntimeOptions::default()
    };
    for (io_binding, overlap) in [(Some(false), None), (None, Some(false))] {
        refused(
            RuntimeOptions {
                io_binding,
                overlap,
                ..cuda.clone()
            },
            "--cuda-graphs on needs the host overlapped with the GPU",
        );
    }
    assert!(
        !LayeredModel::open(&tiny_model_dir(), &RuntimeOptions::default())
            .unwrap()
            .captures_blocks()
    );
}

#[test]
fn warming_up_the_batched_shapes_changes_no_nll() {
    let masks = every_mask(6);
    for (io_binding, head_batch) in [(true, 0), (true, 3), (false, 2)] {
        let options = EvalOptions {
            mask_batch: 4,
            head_batch,
            ..EvalOptions::default()
        };
        let run = |warm: bool| {
            let mut evaluator = Evaluator::new(
                open(io_binding),
                &fixture_windows(7, 3, 24),
                options.clone(),
            )
            .unwrap();
            if warm {
                evaluator.warm_up().unwrap();
                // The warm-up runs no mask: nothing counted.
                assert_eq!(evaluator.blocks_run(), 0);
            }
            let results = evaluator.evaluate(&masks, &mut |_, _| {}).unwrap();
            results
                .iter()
                .map(|r| r.nll_sum.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            run(false),
            run(true),
            "io_binding {io_binding}, head_batch {head_batch}"
        );
    }
}

#[test]
fn no_arena_on_cuda_and_shrinking_captured_graphs_are_refused_before_any_session() {
    let cuda = RuntimeOptions {
        device: Device::Cuda(0),
        ..RuntimeOptions::default()
    };
    // Refused before any session is made, so before CUDA is looked for (none here).
    refused(
        RuntimeOptions {
            arena: Arena::Off,
            ..cuda.clone()
        },
        "always allocates device memory through its arena",
    );
    refused(
        RuntimeOptions {
            arena: Arena::Shrink,
            cuda_graphs: true,
            ..cuda
        },
        "--arena shrink with --cuda-graphs on",
    );
}
