//! The number formats: int8 symmetric per output channel, and int4 block-wise with a scale and
//! a zero point per block in the layout of ONNX Runtime's `MatMulNBits`. Pure functions on
//! row-major `f32` slices, with the dequantization each operator performs, so tests can state
//! the error bound of a rounding and check it against the operator's arithmetic.
//!
//! Weights are handled as `[N, K]`: one row per output channel, the K inputs it sums over in a
//! row. That is `MatMulNBits`' layout and, transposed, the layout of a MatMul's `[K, N]` weight.

/// int8 quantization of an `[N, K]` weight, one scale per row (output channel).
#[derive(Clone, Debug, PartialEq)]
pub struct Int8PerChannel {
    pub n: usize,
    pub k: usize,
    /// `[N, K]` codes in −127..=127 (−128 unused so the grid is symmetric).
    pub codes: Vec<i8>,
    /// `[N]`; value = code × scale.
    pub scales: Vec<f32>,
}

/// Rounds each row of `w` (`[N, K]`, row-major) to `scale × code` with
/// `scale = max|row| / 127`. A row of zeros gets scale 1 (any scale reproduces it exactly; 1
/// keeps the dequantization free of a division by zero). `w` must be finite: `max` skips a
/// NaN, so one would be rounded silently ([`crate::quantize_model`] refuses such weights).
pub fn quantize_int8_per_channel(w: &[f32], n: usize, k: usize) -> Int8PerChannel {
    assert_eq!(
        w.len(),
        n * k,
        "weight of {} values is not {n}×{k}",
        w.len()
    );
    let mut codes = Vec::with_capacity(n * k);
    let mut scales = Vec::with_capacity(n);
    for row in w.chunks_exact(k.max(1)).take(n) {
        let max_abs = row.iter().fold(0f32, |m, &v| m.max(v.abs()));
        let scale = if max_abs > 0.0 { max_abs / 127.0 } else { 1.0 };
        scales.push(scale);
        codes.extend(
            row.iter()
                .map(|&v| (v / scale).round().clamp(-127.0, 127.0) as i8),
        );
    }
    Int8PerChannel {
        n,
        k,
        codes,
        scales,
    }
}

impl Int8PerChannel {
    /// The `[N, K]` weight `DequantizeLinear` reproduces.
    pub fn dequantize(&self) -> Vec<f32> {
        self.codes
            .chunks_exact(self.k.max(1))
            .zip(&self.scales)
            .flat_map(|(row, &s)| row.iter().map(move |&c| f32::from(c) * s))
            .collect()
    }

    /// Largest rounding error of any weight of row `r`: half a step.
    pub fn max_error(&self, r: usize) -> f32 {
        self.scales[r] / 2.0
    }
}

/// int4 quantization of an `[N, K]` weight in blocks of `block_size` consecutive inputs, as
/// `MatMulNBits` (bits = 4) stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct Int4Blockwise {
    pub n: usize,
    pub k: usize,
    pub block_size: usize,
    /// `[N, blocks, block_size / 2]`: two codes per byte, the lower K index in the low nibble.
    /// The tail of a last, partial block is filled with the block's zero point.
    pub packed: Vec<u8>,
    /// `[N × blocks]`; value = (code − zero point) × scale.
    pub scales: Vec<f32>,
    /// `[N × ceil(blocks / 2)]`: the blocks' zero points, packed like the codes, row by row.
    pub zero_points: Vec<u8>,
}

impl Int4Blockwise {
    pub fn blocks_per_row(&self) -> usize {
        self.k.div_ceil(self.block_size)
    }

    pub fn code(&self, row: usize, col: usize) -> u8 {
        let bytes_per_row = self.blocks_per_row() * self.block_size / 2;
        let byte = self.packed[row * bytes_per_row + col / 2];
        if col.is_multiple_of(2) {
            byte & 0x0f
        } else {
            byte >> 4
        }
    }

    pub fn zero_point(&self, row: usize, block: usize) -> u8 {
        let bytes_per_row = self.blocks_per_row().div_ceil(2);
        let byte = self.zero_points[row * bytes_per_row + block / 2];
        if block.is_multiple_of(2) {
            byte & 0x0f
        } else {
            byte >> 4
        }
    }

    pub fn scale(&self, row: usize, block: usize) -> f32 {
        self.scales[row * self.blocks_per_row() + block]
    }

    /// The `[N, K]` weight `MatMulNBits` multiplies by.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.n * self.k);
        for row in 0..self.n {
            for col in 0..self.k {
                let block = col / self.block_size;
                let code = f32::from(self.code(row, col));
                let zero = f32::from(self.zero_point(row, block));
                out.push((code - zero) * self.scale(row, block));
            }
        }
        out
    }

    /// Largest rounding error of any weight in block `block` of row `row`: half a step (the
    /// zero point is rounded too, but the grid always spans the block's range, see
    /// [`block_grid`]).
    pub fn max_error(&self, row: usize, block: usize) -> f32 {
        self.scale(row, block) / 2.0
    }
}

/// The scale and zero point of one int4 block: the grid `(0..=15 − zp) × scale` should span
/// `[min(v), max(v)]`. The range is widened to include 0 so that zero is on the grid and the
/// zero point lands in 0..=15. Rounding the zero point to an integer shifts the grid by at
/// most half a step, so a value beyond its end is clamped by at most half a step too: the
/// rounding error stays within `scale / 2` everywhere.
pub fn block_grid(values: &[f32]) -> (f32, u8) {
    let lo = values.iter().fold(0f32, |m, &v| m.min(v));
    let hi = values.iter().fold(0f32, |m, &v| m.max(v));
    if hi - lo <= 0.0 {
        return (1.0, 8);
    }
    let scale = (hi - lo) / 15.0;
    let zero = (-lo / scale).round().clamp(0.0, 15.0) as u8;
    (scale, zero)
}

/// Rounds `w` (`[N, K]`, row-major) block-wise to int4 with `block_size` inputs per block
/// (a power of two ≥ 16, checked by the caller). `w` must be finite, as for
/// [`quantize_int8_per_channel`].
pub fn quantize_int4_blockwise(w: &[f32], n: usize, k: usize, block_size: usize) -> Int4Blockwise {
    assert_eq!(
        w.len(),
        n * k,
        "weight of {} values is not {n}×{k}",
        w.len()
    );
    let blocks = k.div_ceil(block_size);
    let mut grid = Vec::with_capacity(n * blocks);
    let mut codes = Vec::with_capacity(n * k);
    for row in w.chunks_exact(k.max(1)).take(n) {
        for chunk in row.chunks(block_size) {
            let (scale, zero) = block_grid(chunk);
            grid.push((scale, zero));
            codes.extend(
                chunk
                    .iter()
                    .map(|&v| ((v / scale).round() + f32::from(zero)).clamp(0.0, 15.0) as u8),
            );
        }
    }
    Int4Blockwise::from_codes(n, k, block_size, &codes, &grid)
}

impl Int4Blockwise {
    /// Packs `[N, K]` codes (0..=15) and `[N × blocks]` (scale, zero point) pairs.
    pub fn from_codes(
        n: usize,
        k: usize,
        block_size: usize,
        codes: &[u8],
        grid: &[(f32, u8)],
    ) -> Int4Blockwise {
        assert!(block_size >= 2 && block_size.is_power_of_two());
        let blocks = k.div_ceil(block_size);
        assert_eq!(codes.len(), n * k);
        assert_eq!(grid.len(), n * blocks);
        let bytes_per_block = block_size / 2;
        let zp_bytes_per_row = blocks.div_ceil(2);
        let mut packed = vec![0u8; n * blocks * bytes_per_block];
        let mut zero_points = vec![0u8; n * zp_bytes_per_row];
        for row in 0..n {
            for block in 0..blocks {
                let zero = grid[row * blocks + block].1;
                let zp_byte = &mut zero_points[row * zp_bytes_per_row + block / 2];
                *zp_byte |= if block.is_multiple_of(2) {
                    zero
                } else {
                    zero << 4
                };
                let start = block * block_size;
                let out =
                    &mut packed[(row * blocks + block) * bytes_per_block..][..bytes_per_block];
                for i in 0..block_size {
                    // The tail of a partial last block holds the zero point: it dequantizes
                    // to 0.
                    let code = if start + i < k {
                        codes[row * k + start + i]
                    } else {
                        zero
                    };
                    out[i / 2] |= if i.is_multiple_of(2) { code } else { code << 4 };
                }
            }
        }
        Int4Blockwise {
            n,
            k,
            block_size,
            packed,
            scales: grid.iter().map(|g| g.0).collect(),
            zero_points,
        }
    }
}

/// `x · wᵀ` for `x` `[M, K]` and `w` `[N, K]`, accumulated in f64: the reference the quantized
/// products are compared with.
pub fn matmul_nt(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = x[i * k..(i + 1) * k]
                .iter()
                .zip(&w[j * k..(j + 1) * k])
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic weights with a spread of magnitudes and signs, and a few outliers.
    fn weights(n: usize, k: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n * k)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((state >> 33) as f32) / ((1u64 << 31) as f32) - 0.5;
                if i % 97 == 0 {
                    u * 8.0
                } else {
                    u * (1.0 + (i % 7) as f32 * 0.1)
                }
            })
            .collect()
    }

    #[test]
    fn int8_rounding_error_is_at_most_half_a_step() {
        let (n, k) = (24, 70);
        let w = weights(n, k, 1);
        let q = quantize_int8_per_channel(&w, n, k);
        let d = q.dequantize();
        for r in 0..n {
            let max_abs = w[r * k..(r + 1) * k]
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()));
            assert!((q.scales[r] - max_abs / 127.0).abs() <= 1e-7 * max_abs);
            for c in 0..k {
                let err = (w[r * k + c] - d[r * k + c]).abs();
                assert!(err <= q.max_error(r) * 1.0001, "row {r} col {c}: {err}");
            }
            // The largest weight is on the grid's end exactly.
            assert!(q.codes[r * k..(r + 1) * k].iter().any(|c| c.abs() == 127));
        }
    }

    #[test]
    fn int8_zero_row_is_exact() {
        let q = quantize_int8_per_channel(&[0.0; 8], 2, 4);
        assert_eq!(q.dequantize(), vec![0.0; 8]);
        assert_eq!(q.scales, vec![1.0, 1.0]);
    }

    #[test]
    fn int4_rounding_error_is_at_most_half_a_step_with_partial_blocks() {
        // K = 80 with blocks of 32: the last block is half empty.
        let (n, k, b) = (5, 80, 32);
        let w = weights(n, k, 2);
        let q = quantize_int4_blockwise(&w, n, k, b);
        assert_eq!(q.blocks_per_row(), 3);
        assert_eq!(q.packed.len(), n * 3 * 16);
        assert_eq!(q.scales.len(), n * 3);
        assert_eq!(q.zero_points.len(), n * 2);
        let d = q.dequantize();
        for r in 0..n {
            for c in 0..k {
                let err = (w[r * k + c] - d[r * k + c]).abs();
                assert!(
                    err <= q.max_error(r, c / b) * 1.0001,
                    "row {r} col {c}: {err} > {}",
                    q.max_error(r, c / b)
                );
            }
            // Padding codes are the zero point, so they dequantize to 0.
            for c in k..96 {
                assert_eq!(q.code(r, c), q.zero_point(r, 2));
            }
        }
    }

    #[test]
    fn int4_packing_puts_the_lower_index_in_the_low_nibble() {
        // One row, one block of 16: values chosen so the codes are 0..=15 in order.
        let w: Vec<f32> = (0..16).map(|i| i as f32 - 8.0).collect();
        let q = quantize_int4_blockwise(&w, 1, 16, 16);
        assert_eq!(q.scales, vec![1.0]);
        assert_eq!(q.zero_points, vec![8]);
        assert_eq!(
            q.packed,
            vec![0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe]
        );
        assert_eq!(q.dequantize(), w);
    }

    #[test]
    fn int4_grid_of_a_one_signed_block_keeps_zero() {
        let (scale, zero) = block_grid(&[0.5, 1.5, 3.0]);
        assert_eq!(zero, 0);
        assert!((scale - 0.2).abs() < 1e-7);
        let (scale, zero) = block_grid(&[-3.0, -1.0]);
        assert_eq!(zero, 15);
        assert!((scale - 0.2).abs() < 1e-7);
    }

    #[test]
    fn quantized_products_stay_within_the_bound() {
        let (m, n, k) = (6, 40, 128);
        let w = weights(n, k, 3);
        let x = weights(m, k, 4);
        let exact = matmul_nt(&x, m, &w, n, k);
        let q8 = quantize_int8_per_channel(&w, n, k);
        let q4 = quantize_int4_blockwise(&w, n, k, 32);
        let y8 = matmul_nt(&x, m, &q8.dequantize(), n, k);
        let y4 = matmul_nt(&x, m, &q4.dequantize(), n, k);
        let mut worst8 = 0f64;
        let mut worst4 = 0f64;
        for i in 0..m {
            for j in 0..n {
                let xs = &x[i * k..(i + 1) * k];
                let bound8: f64 = xs.iter().map(|&a| f64::from(a.abs())).sum::<f64>()
                    * f64::from(q8.max_error(j));
                let bound4: f64 = xs
                    .iter()
                    .enumerate()
                    .map(|(c, &a)| f64::from(a.abs()) * f64::from(q4.max_error(j, c / 32)))
                    .sum();
                let e8 = (y8[i * n + j] - exact[i * n + j]).abs();
                let e4 = (y4[i * n + j] - exact[i * n + j]).abs();
                assert!(
                    e8 <= bound8 * 1.0001 + 1e-9,
                    "int8 ({i},{j}): {e8} > {bound8}"
                );
                assert!(
                    e4 <= bound4 * 1.0001 + 1e-9,
                    "int4 ({i},{j}): {e4} > {bound4}"
                );
                worst8 = worst8.max(e8 / bound8);
                worst4 = worst4.max(e4 / bound4);
            }
        }
        // Rounding errors partly cancel: the bound is not tight, but the error is not zero.
        assert!(worst8 > 0.0 && worst4 > 0.0);
        // int4 loses more than int8 on the same weight.
        let total = |y: &[f64]| -> f64 { y.iter().zip(&exact).map(|(a, b)| (a - b).abs()).sum() };
        assert!(total(&y4) > 4.0 * total(&y8));
    }
}
