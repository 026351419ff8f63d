//! The sessions' memory arenas (`RuntimeOptions::arena`) on the CPU provider with the committed
//! tiny fixture: keeping, shrinking or having no arena changes where buffers come from, never
//! what is computed, so the NLLs are the same bit for bit through every way the evaluator
//! moves states; shrinking gives memory back. (The settings a device cannot have are refused:
//! io_binding.rs, beside the other device settings.)

use layerprune_core::{Device, Mask};
use layerprune_runtime::{
    Arena, ArenaUse, EvalOptions, Evaluator, LayeredModel, RuntimeError, RuntimeOptions,
};
use layerprune_tests::{every_mask, fixture_windows, tiny_model_dir};

fn open(arena: Arena, io_binding: bool) -> LayeredModel {
    let options = RuntimeOptions {
        arena,
        io_binding: Some(io_binding),
        ..RuntimeOptions::default()
    };
    LayeredModel::open(&tiny_model_dir(), &options).expect("fixture loads")
}

/// (NLL sums, what the arenas held after) of `masks`.
fn evaluate(
    arena: Arena,
    io_binding: bool,
    masks: &[Mask],
    options: EvalOptions,
) -> (Vec<f64>, Option<ArenaUse>) {
    let mut evaluator =
        // Long enough that a block's attention scores (4 windows x 4 heads x 128² floats, 1
        // MiB) pass an arena's first region, which ONNX Runtime never gives back.
        Evaluator::new(open(arena, io_binding), &fixture_windows(7, 4, 128), options).unwrap();
    let results = evaluator.evaluate(masks, &mut |_, _| {}).unwrap();
    (
        results.iter().map(|r| r.nll_sum).collect(),
        evaluator.model().arena_use(),
    )
}

#[test]
fn every_arena_gives_the_same_nll_bit_for_bit_and_shrinking_holds_less() {
    let masks = every_mask(6);
    for options in [
        EvalOptions::default(),
        // Room for two states: the stack pops and recomputes.
        EvalOptions {
            cache_bytes: 2 * 4 * 128 * 64 * 4,
            ..EvalOptions::default()
        },
        EvalOptions {
            mask_batch: 5,
            ..EvalOptions::default()
        },
    ] {
        for io_binding in [false, true] {
            let (kept, kept_use) = evaluate(Arena::Keep, io_binding, &masks, options.clone());
            let kept_use = kept_use.expect("the CPU provider's arena has statistics");
            assert!(kept_use.reserved_bytes > 0);
            assert!(kept_use.largest_peak_bytes > 0);
            assert_eq!(kept_use.shrinks, 0);
            for arena in [Arena::Shrink, Arena::Off] {
                let (nll, arena_use) = evaluate(arena, io_binding, &masks, options.clone());
                for ((mask, k), n) in masks.iter().zip(&kept).zip(&nll) {
                    assert!(k.is_finite());
                    assert_eq!(
                        k.to_bits(),
                        n.to_bits(),
                        "mask {mask}, {arena:?}, io_binding {io_binding}, {options:?}"
                    );
                }
                match arena {
                    Arena::Off => assert_eq!(arena_use, None),
                    _ => {
                        let arena_use = arena_use.unwrap();
                        // A shrink after every run (at least one a mask), and less held at
                        // the end than the arenas that keep everything.
                        assert!(arena_use.shrinks >= masks.len() as u64, "{arena_use:?}");
                        assert!(
                            arena_use.reserved_bytes < kept_use.reserved_bytes,
                            "{arena_use:?} against {kept_use:?}, {options:?}"
                        );
                    }
                }
            }
        }
    }
}

/// An arena grown by exactly what is asked is the CUDA provider's setting: refused on the CPU
/// by the runtime itself (not only by the flags), before any session opens.
#[test]
fn an_exact_arena_is_refused_on_the_cpu() {
    let options = RuntimeOptions {
        arena: Arena::KeepExact,
        ..RuntimeOptions::default()
    };
    let Err(error) = LayeredModel::open(&tiny_model_dir(), &options) else {
        panic!("an exact arena was opened on the CPU provider")
    };
    assert!(matches!(error, RuntimeError::BadInput(_)), "{error:?}");
    assert!(
        error.to_string().contains("CUDA execution provider"),
        "{error}"
    );
    assert_eq!(Arena::KeepExact.name(), "keep-exact");
}

#[test]
fn the_default_keeps_the_arena_unless_masks_are_batched_on_the_cpu() {
    assert_eq!(RuntimeOptions::default().arena, Arena::Keep);
    assert_eq!(Arena::default_for(Device::Cpu, 1), Arena::Keep);
    assert_eq!(Arena::default_for(Device::Cpu, 8), Arena::Off);
    assert_eq!(Arena::default_for(Device::Cuda(0), 1), Arena::Keep);
    assert_eq!(Arena::default_for(Device::Cuda(0), 8), Arena::Keep);
}

/// The first region of ONNX Runtime's CPU arena (its default initial chunk), allocated on a
/// session's first run and never given back.
const FIRST_CPU_REGION: u64 = 1 << 20;

#[test]
fn shrinking_arenas_keep_the_states_in_the_embeddings_arena() {
    // Masks batched 5 at a time keep the states of the masks in flight and of the prefix
    // stack. With shrinking arenas the blocks write them into the embedding's arena, which is
    // never shrunk, so that no kept state holds the region around it in a block's arena
    // (there, on SmolLM2 with 8 masks a call, 2.85 GB of memory instead of 1.6-1.7 GB).
    let windows = fixture_windows(7, 16, 256);
    let mut evaluator = Evaluator::new(
        open(Arena::Shrink, false),
        &windows,
        EvalOptions {
            mask_batch: 5,
            ..EvalOptions::default()
        },
    )
    .unwrap();
    evaluator.evaluate(&every_mask(6), &mut |_, _| {}).unwrap();
    let model = evaluator.model();
    let by_graph = model.arena_use_by_graph();
    assert_eq!(by_graph.len(), 8);
    let embedding = by_graph[0].unwrap();
    assert_eq!(embedding.shrinks, 0);
    let batched_state = model.state_bytes(5 * windows.len(), 256) as u64;
    assert!(
        embedding.reserved_bytes >= FIRST_CPU_REGION + batched_state,
        "{embedding:?}: no room for a state of {batched_state} bytes"
    );
    for (block, graph) in by_graph[1..7].iter().enumerate() {
        assert!(graph.unwrap().shrinks > 0, "block {block}: {graph:?}");
    }
}
