//! GPTQ at Llama-2-7B's widths: how long one block's parts take on this machine, and what that
//! means for a whole 7B model. A benchmark, not a test (timings on shared machines vary):
//! `cargo run -p layerprune-quantize --example gptq_scale` (the dev profile `make` builds;
//! `-- --quick` skips the 11,008-wide factorization).
//!
//! One Llama-2-7B block has seven MatMuls on four distinct inputs: q, k and v read the
//! attention's normalised input (K = 4,096), o the attention's output (4,096), gate and up the
//! MLP's normalised input (4,096), down the MLP's product (11,008). Each distinct input's
//! second-moment matrix is factored once and each weight swept: the CPU's part of GPTQ. (The
//! matrices themselves are products the block graphs compute where the model runs: not timed
//! here.)

use std::time::Instant;

use layerprune_quantize::gptq::{gptq_int4, Hessian, InverseFactor};
use ndarray::Array2;

/// Calibration rows of the second moments here (fewer than the widths: the damping makes up).
const ROWS: usize = 2048;

#[path = "../tests/common/mod.rs"]
mod common;
use common::noise;

/// A second-moment matrix of `ROWS` correlated rows of width `k` (a few latent factors mixed
/// in, as real activations are).
fn hessian(k: usize) -> Hessian {
    let factors = 64;
    let z = Array2::from_shape_vec((ROWS, factors), noise(ROWS * factors, 1)).unwrap();
    let mix = Array2::from_shape_vec((factors, k), noise(factors * k, 2)).unwrap();
    let eps = Array2::from_shape_vec((ROWS, k), noise(ROWS * k, 3)).unwrap();
    let x = z.dot(&mix) + eps * 0.1;
    let mut h = Hessian::new(k);
    h.add(x.view());
    h
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let cores = layerprune_core::parallel::cores();
    println!("GPTQ at Llama-2-7B widths, int4 blocks of 32; {cores} cores");
    let mut block_seconds = 0.0;
    // (input width K, weights reading that input as (name, N))
    let inputs: &[(usize, &[(&str, usize)])] = &[
        (4096, &[("q", 4096), ("k", 4096), ("v", 4096)]),
        (4096, &[("o", 4096)]),
        (4096, &[("gate", 11008), ("up", 11008)]),
        (11008, &[("down", 4096)]),
    ];
    for &(k, weights) in inputs {
        if quick && k > 4096 {
            println!("K = {k}: skipped (--quick)");
            continue;
        }
        let h = hessian(k);
        let start = Instant::now();
        let factor = InverseFactor::new(h, 0.01, 0).expect("positive definite");
        let factoring = start.elapsed().as_secs_f64();
        println!("K = {k}: factor {factoring:.2} s");
        block_seconds += factoring;
        for &(name, n) in weights {
            let w = noise(n * k, 4);
            let start = Instant::now();
            gptq_int4(&w, n, k, 32, &factor, 0).expect("gptq");
            let seconds = start.elapsed().as_secs_f64();
            println!("  {name}: {n} x {k}, sweep {seconds:.2} s");
            block_seconds += seconds;
        }
    }
    if !quick {
        println!(
            "one block: {block_seconds:.0} s; 32 blocks: {:.1} h",
            block_seconds * 32.0 / 3600.0
        );
    }
}
