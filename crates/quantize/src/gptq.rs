//! Calibration-aware rounding (GPTQ, Frantar et al. 2022): the weight's columns (inputs) are
//! quantized one at a time, and each column's rounding error is pushed onto the columns not yet
//! quantized, weighted by the inverse of the inputs' second-moment matrix `H = Σ x xᵀ` over the
//! calibration tokens, so that the layer's outputs on those inputs — not its weights — stay
//! close. With `H` proportional to the identity (uncorrelated inputs) nothing is pushed and the
//! result is round-to-nearest.
//!
//! The grids are the ones of [`crate::quant`]: int8 per output channel with the scale fixed
//! from the float row; int4 per block, with each block's scale and zero point chosen when the
//! sweep reaches it, from the columns as already updated (as GPTQ's reference code does).
//! The sweep runs in batches of columns; the update of the columns after a batch is one
//! matrix product.

use layerprune_core::linalg::Cholesky;
use ndarray::{s, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis};

use crate::quant::{block_grid, Int4Blockwise, Int8PerChannel};
use crate::QuantizeError;

/// Columns per lazy batch.
const BATCH: usize = 128;

/// `Σ x xᵀ` over calibration rows of one MatMul input (`K × K`).
#[derive(Clone, Debug)]
pub struct Hessian {
    pub k: usize,
    pub h: Array2<f64>,
    pub rows: usize,
}

impl Hessian {
    pub fn new(k: usize) -> Self {
        Hessian {
            k,
            h: Array2::zeros((k, k)),
            rows: 0,
        }
    }

    /// Adds the rows of `x` (`[rows, K]`).
    pub fn add(&mut self, x: ArrayView2<f32>) {
        let x = x.mapv(f64::from);
        self.h += &x.t().dot(&x);
        self.rows += x.nrows();
    }

    /// Adds `xᵀ x` of `rows` rows computed elsewhere (`[K, K]`; the calibration graph's own
    /// product, in float32).
    pub fn add_gram(&mut self, gram: ArrayView2<f32>, rows: usize) {
        self.h.zip_mut_with(&gram, |h, &g| *h += f64::from(g));
        self.rows += rows;
    }
}

/// The upper-triangular `U` with `H⁻¹ = Uᵀ U`, for `H` symmetric positive definite: one
/// Cholesky factorization of `H` with rows and columns reversed (`J H J = L Lᵀ`) and the
/// inverse of that triangle, since `H⁻¹ = (J L⁻¹ J)ᵀ (J L⁻¹ J)` and `J L⁻¹ J` is upper
/// triangular. Reversing rows and columns of a row-major matrix reverses its storage, so both
/// reversals happen in place; at the peak, `L`, `L⁻¹` and the inverse's panels in flight are
/// held (about 2.5 `K × K` matrices: 2.4 GB at K = 11,008). On `threads` threads (0: the
/// process's thread budget).
pub fn inverse_cholesky_upper(
    h: Array2<f64>,
    threads: usize,
) -> Result<Array2<f64>, QuantizeError> {
    let k = h.nrows();
    if h.ncols() != k {
        return Err(QuantizeError::Unsupported(format!(
            "GPTQ: a second-moment matrix of shape {:?}, not square",
            h.shape()
        )));
    }
    let mut reversed = row_major(h);
    reversed.reverse();
    let factor = Cholesky::with_tolerance(reversed, k, 0.0, threads).map_err(|refused| {
        QuantizeError::Unsupported(format!(
            "GPTQ: the calibration inputs' second-moment matrix is not positive definite \
             (pivot {} is {}); more calibration tokens or a larger damping are needed",
            refused.pivot, refused.value
        ))
    })?;
    let mut inv = factor.lower_inverse(threads);
    drop(factor);
    inv.reverse();
    Ok(Array2::from_shape_vec((k, k), inv).expect("k × k values"))
}

/// The elements of `a` in row-major order: its own storage when it is laid out so (no copy),
/// else a copy.
fn row_major(a: Array2<f64>) -> Vec<f64> {
    if !a.is_standard_layout() {
        return a.iter().copied().collect();
    }
    let len = a.len();
    let (mut storage, first) = a.into_raw_vec_and_offset();
    let first = first.unwrap_or(0);
    if first != 0 || storage.len() != len {
        // A view's owner: the elements are a contiguous run inside a larger allocation.
        storage = storage[first..first + len].to_vec();
    }
    storage
}

/// `H` with dead inputs (never non-zero) made harmless and `damp × mean(diag H)` added to the
/// diagonal, as GPTQ conditions it. Returns the matrix and which inputs were dead.
fn conditioned(h: Hessian, damp: f64) -> (Array2<f64>, Vec<bool>) {
    let mut m = h.h;
    let dead: Vec<bool> = (0..h.k).map(|i| m[(i, i)] == 0.0).collect();
    for (i, &d) in dead.iter().enumerate() {
        if d {
            m[(i, i)] = 1.0;
        }
    }
    let mean = m.diag().sum() / h.k as f64;
    for i in 0..h.k {
        m[(i, i)] += damp * mean;
    }
    (m, dead)
}

/// The sweep over the rows of `w` (`[rows, K]`, updated in place). `start_block(row, col,
/// values)` is called when column `col` opens a block of `block` columns, with the row's
/// current weights in that block; `round(row, col, value)` returns the dequantized value the
/// grid gives. Rows are numbered within `w`.
fn sweep(
    mut w: ArrayViewMut2<f64>,
    u: &Array2<f64>,
    block: usize,
    mut start_block: impl FnMut(usize, usize, ArrayView1<f64>),
    mut round: impl FnMut(usize, usize, f64) -> f64,
) {
    let (n, k) = w.dim();
    let mut start = 0;
    while start < k {
        let end = (start + BATCH).min(k);
        let mut errors = Array2::<f64>::zeros((n, end - start));
        for col in start..end {
            if col % block == 0 {
                let stop = (col + block).min(k);
                for row in 0..n {
                    start_block(row, col, w.slice(s![row, col..stop]));
                }
            }
            let d = u[(col, col)];
            for row in 0..n {
                let value = w[(row, col)];
                let error = (value - round(row, col, value)) / d;
                errors[(row, col - start)] = error;
                let mut rest = w.slice_mut(s![row, col + 1..end]);
                rest.scaled_add(-error, &u.slice(s![col, col + 1..end]));
            }
        }
        if end < k {
            let update = errors.dot(&u.slice(s![start..end, end..]));
            let mut tail = w.slice_mut(s![.., end..]);
            tail -= &update;
        }
        start = end;
    }
}

/// Rows a thread sweeps at least: below this, starting a thread costs more than it saves.
const MIN_ROWS_PER_THREAD: usize = 16;

/// Sweeps `w` (`[N, K]`) on `threads` threads, each given a contiguous run of rows with its
/// part of the codes (`per_row_codes` a row) and of the grid (`per_row_grid` a row). GPTQ's
/// rows are independent — a row's rounding errors move only that row's later columns — so
/// the result is the one-thread result bit for bit (a test).
fn sweep_rows<C: Send, G: Send>(
    w: &mut Array2<f64>,
    factor: &InverseFactor,
    threads: usize,
    (codes, per_row_codes): (&mut [C], usize),
    (grid, per_row_grid): (&mut [G], usize),
    sweep_part: impl Fn(ArrayViewMut2<f64>, &Array2<f64>, &mut [C], &mut [G]) + Sync,
) {
    let threads = layerprune_core::parallel::threads_or_budget(threads);
    let rows = w.nrows().div_ceil(threads).max(MIN_ROWS_PER_THREAD);
    let sweep_part = &sweep_part;
    std::thread::scope(|scope| {
        let parts = w
            .axis_chunks_iter_mut(Axis(0), rows)
            .zip(codes.chunks_mut(rows * per_row_codes.max(1)))
            .zip(grid.chunks_mut(rows * per_row_grid.max(1)));
        for ((part, codes), grid) in parts {
            scope.spawn(move || sweep_part(part, &factor.u, codes, grid));
        }
    });
}

/// What GPTQ needs of one MatMul input's second moments, for every weight that reads that
/// input (q, k and v read the same one; so do an MLP's gate and up): the upper Cholesky factor
/// of the conditioned matrix's inverse, and which inputs were dead. Factoring is the `O(K³)`
/// part, so it is done once per input.
#[derive(Debug)]
pub struct InverseFactor {
    u: Array2<f64>,
    dead: Vec<bool>,
}

impl InverseFactor {
    /// Conditions `h` with `damp` (GPTQ's relative damping) and factors it, in its place, on
    /// `threads` threads (0: the process's thread budget).
    pub fn new(h: Hessian, damp: f64, threads: usize) -> Result<Self, QuantizeError> {
        if !(damp.is_finite() && damp >= 0.0) {
            return Err(QuantizeError::Unsupported(format!(
                "GPTQ: damping {damp:?} is not a finite fraction ≥ 0 of the mean diagonal"
            )));
        }
        if !h.h.iter().all(|v| v.is_finite()) {
            return Err(QuantizeError::Unsupported(format!(
                "GPTQ: the second moments of a {0}-wide MatMul input over {1} calibration \
                 tokens are not finite (the float model's activations overflow or hold NaN)",
                h.k, h.rows
            )));
        }
        let (m, dead) = conditioned(h, damp);
        if !m.diag().iter().all(|v| v.is_finite()) {
            return Err(QuantizeError::Unsupported(format!(
                "GPTQ: damping {damp:?} is too large: {damp:?} × the mean diagonal of the inputs' \
                 second moments overflows (the damping is a fraction of that mean; GPTQ's \
                 default is 0.01, and 1 already weighs the diagonal as much as the data)"
            )));
        }
        let u = inverse_cholesky_upper(m, threads)?;
        Ok(InverseFactor { u, dead })
    }

    /// The input width `K`.
    pub fn k(&self) -> usize {
        self.dead.len()
    }

    /// The float64 copy of the weight the sweep updates, dead inputs' columns zeroed.
    fn weight(&self, w_nk: &[f32], n: usize, k: usize) -> Result<Array2<f64>, QuantizeError> {
        if self.k() != k || w_nk.len() != n * k {
            return Err(QuantizeError::Unsupported(format!(
                "GPTQ: a {n}×{k} weight with a {0}×{0} input matrix",
                self.k()
            )));
        }
        let mut w = Array2::from_shape_fn((n, k), |(r, c)| f64::from(w_nk[r * k + c]));
        for (c, &d) in self.dead.iter().enumerate() {
            if d {
                w.column_mut(c).fill(0.0);
            }
        }
        Ok(w)
    }
}

/// GPTQ on int8 per output channel (`w_nk` is `[N, K]`); scales as round-to-nearest's. The
/// rows are swept on `threads` threads (0: the process's thread budget).
pub fn gptq_int8(
    w_nk: &[f32],
    n: usize,
    k: usize,
    factor: &InverseFactor,
    threads: usize,
) -> Result<Int8PerChannel, QuantizeError> {
    let mut scales: Vec<f32> = (0..n)
        .map(|r| {
            let max = w_nk[r * k..(r + 1) * k]
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()));
            if max > 0.0 {
                max / 127.0
            } else {
                1.0
            }
        })
        .collect();
    let mut w = factor.weight(w_nk, n, k)?;
    let mut codes = vec![0i8; n * k];
    sweep_rows(
        &mut w,
        factor,
        threads,
        (&mut codes, k),
        (&mut scales, 1),
        |part, u, codes, scales| {
            sweep(
                part,
                u,
                k.max(1),
                |_, _, _| {},
                |row, col, value| {
                    let s = f64::from(scales[row]);
                    let code = (value / s).round().clamp(-127.0, 127.0);
                    codes[row * k + col] = code as i8;
                    code * s
                },
            );
        },
    );
    Ok(Int8PerChannel {
        n,
        k,
        codes,
        scales,
    })
}

/// GPTQ on int4 blocks of `block_size` inputs (`w_nk` is `[N, K]`), in `MatMulNBits`' layout.
/// The rows are swept on `threads` threads (0: the process's thread budget).
pub fn gptq_int4(
    w_nk: &[f32],
    n: usize,
    k: usize,
    block_size: usize,
    factor: &InverseFactor,
    threads: usize,
) -> Result<Int4Blockwise, QuantizeError> {
    let mut w = factor.weight(w_nk, n, k)?;
    let blocks = k.div_ceil(block_size);
    let mut grid = vec![(1f32, 8u8); n * blocks];
    let mut codes = vec![0u8; n * k];
    sweep_rows(
        &mut w,
        factor,
        threads,
        (&mut codes, k),
        (&mut grid, blocks),
        |part, u, codes, grid| {
            let grid = std::cell::RefCell::new(grid);
            sweep(
                part,
                u,
                block_size,
                |row, col, values| {
                    let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
                    grid.borrow_mut()[row * blocks + col / block_size] = block_grid(&values);
                },
                |row, col, value| {
                    let (scale, zero) = grid.borrow()[row * blocks + col / block_size];
                    let s = f64::from(scale);
                    let code = ((value / s).round() + f64::from(zero)).clamp(0.0, 15.0);
                    codes[row * k + col] = code as u8;
                    (code - f64::from(zero)) * s
                },
            );
        },
    );
    Ok(Int4Blockwise::from_codes(n, k, block_size, &codes, &grid))
}

#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod test_common;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize_int4_blockwise, quantize_int8_per_channel};
    use ndarray::ShapeBuilder;

    use super::test_common::noise;

    /// Inputs with strongly correlated features: a few latent factors mixed into K features.
    fn correlated_inputs(rows: usize, k: usize) -> Array2<f32> {
        let factors = 6;
        let z = Array2::from_shape_vec((rows, factors), noise(rows * factors, 7)).unwrap();
        let mix = Array2::from_shape_vec((factors, k), noise(factors * k, 8)).unwrap();
        let eps = Array2::from_shape_vec((rows, k), noise(rows * k, 9)).unwrap();
        z.dot(&mix) * 4.0 + eps * 0.05
    }

    fn output_error(x: &Array2<f32>, w: &[f32], q: &[f32], n: usize, k: usize) -> f64 {
        let diff = Array2::from_shape_fn((n, k), |(r, c)| f64::from(w[r * k + c] - q[r * k + c]));
        let y = x.mapv(f64::from).dot(&diff.t());
        y.iter().map(|v| v * v).sum()
    }

    #[test]
    fn inverse_cholesky_factor_reproduces_the_inverse() {
        let k = 9;
        let a = Array2::from_shape_vec(
            (k, k),
            noise(k * k, 1).iter().map(|&v| f64::from(v)).collect(),
        )
        .unwrap();
        let h = a.t().dot(&a) + Array2::<f64>::eye(k) * 0.5;
        let u = inverse_cholesky_upper(h.clone(), 0).unwrap();
        for i in 0..k {
            for j in 0..i {
                assert_eq!(u[(i, j)], 0.0);
            }
        }
        let product = h.dot(&u.t().dot(&u));
        for ((i, j), v) in product.indexed_iter() {
            let expected = if i == j { 1.0 } else { 0.0 };
            assert!((v - expected).abs() < 1e-9, "({i},{j}) = {v}");
        }
        let mut singular = h.clone();
        singular.row_mut(0).fill(0.0);
        singular.column_mut(0).fill(0.0);
        assert!(inverse_cholesky_upper(singular, 0).is_err());
    }

    #[test]
    fn row_major_storage_of_any_layout() {
        let a = Array2::from_shape_fn((4, 3), |(i, j)| (i * 3 + j) as f64);
        let expected: Vec<f64> = (0..12).map(f64::from).collect();
        assert_eq!(row_major(a.clone()), expected);
        let column_major = Array2::from_shape_fn((4, 3).f(), |(i, j)| (i * 3 + j) as f64);
        assert!(!column_major.is_standard_layout());
        assert_eq!(row_major(column_major), expected);
        let mut sliced = Array2::from_shape_fn((6, 3), |(i, j)| (i * 3 + j) as f64 - 3.0);
        sliced.slice_collapse(s![1..5, ..]);
        assert!(sliced.is_standard_layout());
        assert_eq!(row_major(sliced), expected);
    }

    #[test]
    fn uncorrelated_inputs_give_round_to_nearest() {
        let (n, k) = (12, 64);
        let w = noise(n * k, 3);
        let mut h = Hessian::new(k);
        h.h = Array2::eye(k) * 10.0;
        let factor = InverseFactor::new(h.clone(), 0.01, 0).unwrap();
        let q8 = gptq_int8(&w, n, k, &factor, 0).unwrap();
        assert_eq!(q8, quantize_int8_per_channel(&w, n, k));
        let q4 = gptq_int4(&w, n, k, 32, &factor, 0).unwrap();
        assert_eq!(q4, quantize_int4_blockwise(&w, n, k, 32));
    }

    #[test]
    fn correlated_inputs_lose_less_than_round_to_nearest() {
        let (n, k, rows) = (16, 96, 400);
        let w = noise(n * k, 4);
        let x = correlated_inputs(rows, k);
        let mut h = Hessian::new(k);
        h.add(x.view());
        assert_eq!(h.rows, rows);
        let factor = InverseFactor::new(h.clone(), 0.01, 0).unwrap();
        let rtn8 = output_error(
            &x,
            &w,
            &quantize_int8_per_channel(&w, n, k).dequantize(),
            n,
            k,
        );
        let gptq8 = output_error(
            &x,
            &w,
            &gptq_int8(&w, n, k, &factor, 0).unwrap().dequantize(),
            n,
            k,
        );
        assert!(gptq8 < 0.5 * rtn8, "int8: GPTQ {gptq8} vs RTN {rtn8}");
        for block in [32, 128] {
            let rtn = quantize_int4_blockwise(&w, n, k, block);
            let gptq = gptq_int4(&w, n, k, block, &factor, 0).unwrap();
            let rtn_error = output_error(&x, &w, &rtn.dequantize(), n, k);
            let gptq_error = output_error(&x, &w, &gptq.dequantize(), n, k);
            assert!(
                gptq_error < 0.5 * rtn_error,
                "int4/{block}: GPTQ {gptq_error} vs RTN {rtn_error}"
            );
        }
    }

    #[test]
    fn dead_inputs_are_zeroed_not_fatal() {
        let (n, k) = (4, 32);
        let w = noise(n * k, 5);
        let mut x = correlated_inputs(50, k);
        x.column_mut(3).fill(0.0);
        let mut h = Hessian::new(k);
        h.add(x.view());
        let factor = InverseFactor::new(h.clone(), 0.01, 0).unwrap();
        let q = gptq_int4(&w, n, k, 16, &factor, 0).unwrap().dequantize();
        for r in 0..n {
            assert_eq!(q[r * k + 3], 0.0);
        }
    }

    #[test]
    fn a_damping_that_overflows_the_diagonal_is_named_not_blamed_on_the_data() {
        let (k, rows) = (32, 100);
        let x = correlated_inputs(rows, k);
        let mut h = Hessian::new(k);
        h.add(x.view());
        let error = InverseFactor::new(h.clone(), 1e308, 0)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("damping 1e308 is too large") && !error.contains("positive definite"),
            "{error}"
        );
        for bad in [f64::NAN, -0.5, f64::INFINITY] {
            let error = InverseFactor::new(h.clone(), bad, 0)
                .unwrap_err()
                .to_string();
            assert!(error.contains(&format!("damping {bad:?}")), "{error}");
        }
        // Activations that overflowed: the data is named, not the damping.
        h.h[(3, 3)] = f64::INFINITY;
        let error = InverseFactor::new(h, 0.01, 0).unwrap_err().to_string();
        assert!(
            error.contains("not finite") && error.contains("32-wide"),
            "{error}"
        );
    }

    #[test]
    fn rows_swept_on_several_threads_equal_one_thread() {
        // 70 rows: 16 a thread at most 5 parts, the last one short; K spans two lazy batches.
        let (n, k, rows) = (70, 160, 300);
        let w = noise(n * k, 6);
        let x = correlated_inputs(rows, k);
        let mut h = Hessian::new(k);
        h.add(x.view());
        let factor = InverseFactor::new(h.clone(), 0.01, 0).unwrap();
        let one = gptq_int4(&w, n, k, 32, &factor, 1).unwrap();
        assert_eq!(gptq_int4(&w, n, k, 32, &factor, 5).unwrap(), one);
        assert_eq!(gptq_int4(&w, n, k, 32, &factor, 3).unwrap(), one);
        let one = gptq_int8(&w, n, k, &factor, 1).unwrap();
        assert_eq!(gptq_int8(&w, n, k, &factor, 4).unwrap(), one);
        // And GPTQ moved something: the codes are not round-to-nearest's.
        assert_ne!(one, quantize_int8_per_channel(&w, n, k));
    }
}
