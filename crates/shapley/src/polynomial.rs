//! Multilinear polynomials of a mask, Σ_T w_T Π_{i∈T} x_i over the player subsets T of at
//! most three players, fitted by weighted ridge least squares: the log-space part of the
//! regression-adjusted estimators' exp-polynomial surrogate.
//!
//! Why up to third order: on the real 12-block game the log of the utility is far from
//! pairwise (a quadratic explains 98 % of its variance, a cubic 99.7 %), and the cubic's 299
//! coefficients are affordable once a few hundred masks are evaluated. The order is chosen
//! from the number of rows (at least two per coefficient), so small budgets fall back to the
//! quadratic or the additive model instead of overfitting, and from the number of terms: a
//! fit costs about rows × terms² / 2 for its normal equations (one GEMM per band of rows),
//! terms³ / 6 for their solution and 8 × terms² bytes (the system, factored in its place), so
//! the cubic stops at [`MAX_CUBIC_TERMS`] (23 blocks: seconds a fit; at 32 blocks its 5,489
//! terms took 160 s a fit, 8 fits a half) and every order at
//! [`MAX_TERMS`] (the quadratic up to 90 blocks; at 64 blocks the cubic's 43,745 terms would
//! have needed 15.3 GB). Models with more blocks fall back to the additive model.
//!
//! Terms are laid out by size, then in colexicographic order inside a size, so the index of
//! a subset {c₁ < … < c_k} is offset(k) + Σ_j C(c_j, j): no lookup table is needed.

use layerprune_core::linalg::Cholesky;
use layerprune_core::Mask;

use crate::ShapleyError;

/// Highest order of interaction the surrogate may use.
pub const MAX_ORDER: usize = 3;

/// Rows per coefficient below which an order is not used.
const ROWS_PER_COEFFICIENT: usize = 2;

/// Most terms of a third-order fit: C(23, ≤ 3) = 2,048, a 32 MiB system.
pub const MAX_CUBIC_TERMS: usize = 2_048;

/// Most terms of a fit of any order: a 128 MiB system, factored in its place.
pub const MAX_TERMS: usize = 4_096;

/// Entries of the dense features a fit builds at a time (8 MiB): rows enough for the Gram
/// matrix's products to run near the GEMM's peak.
const CHUNK_ENTRIES: usize = 1 << 20;

/// A multilinear polynomial of order ≤ [`MAX_ORDER`] over `num_players` indicators.
#[derive(Clone, Debug, PartialEq)]
pub struct Multilinear {
    pub num_players: usize,
    pub order: usize,
    /// By term index: the constant, then singles, pairs, triples.
    pub coefficients: Vec<f64>,
}

/// C(n, k) for the small arguments of term indexing.
fn choose(n: usize, k: usize) -> usize {
    usize::try_from(layerprune_core::binomial(n, k)).unwrap_or(usize::MAX)
}

/// Number of terms of order ≤ `order` over `n` players.
pub fn term_count(n: usize, order: usize) -> usize {
    (0..=order).map(|k| choose(n, k)).sum()
}

/// The highest order ≤ [`MAX_ORDER`] that `rows` rows can determine (at least two rows per
/// coefficient) within [`MAX_CUBIC_TERMS`] and [`MAX_TERMS`]; 1 (additive) at the least.
pub fn order_for_rows(n: usize, rows: usize) -> usize {
    (1..=MAX_ORDER)
        .rev()
        .find(|&order| {
            let terms = term_count(n, order);
            let most = if order >= 3 {
                MAX_CUBIC_TERMS
            } else {
                MAX_TERMS
            };
            terms <= most && rows >= ROWS_PER_COEFFICIENT.saturating_mul(terms)
        })
        .unwrap_or(1)
}

/// Appends to `out` the indices of the terms whose players are all kept.
fn active_terms(n: usize, order: usize, kept: &[usize], out: &mut Vec<usize>) {
    out.clear();
    out.push(0);
    if order >= 1 {
        out.extend(kept.iter().map(|&i| 1 + i));
    }
    if order >= 2 {
        let offset = 1 + n;
        for (b, &j) in kept.iter().enumerate() {
            for &i in &kept[..b] {
                out.push(offset + i + choose(j, 2));
            }
        }
    }
    if order >= 3 {
        let offset = 1 + n + choose(n, 2);
        for (c, &k) in kept.iter().enumerate() {
            for (b, &j) in kept[..c].iter().enumerate() {
                for &i in &kept[..b] {
                    out.push(offset + i + choose(j, 2) + choose(k, 3));
                }
            }
        }
    }
}

/// The terms of each of a list of masks (`active_terms` at one order), computed once for the
/// fits that reuse the masks: the exp-polynomial surrogate fits the same masks some 50 times
/// (Gauss–Newton steps over a grid of shifts), and listing the terms was done for every row of
/// every fit and prediction.
pub(crate) struct MaskTerms {
    num_players: usize,
    order: usize,
    /// Row r's terms are `terms[starts[r]..starts[r + 1]]`.
    starts: Vec<usize>,
    terms: Vec<u32>,
}

impl MaskTerms {
    /// The terms of `masks` up to `order` (held to [`MAX_ORDER`] and the number of players).
    pub(crate) fn new(masks: &[Mask], order: usize) -> Self {
        let n = masks.first().map_or(0, Mask::num_blocks);
        let order = order.min(MAX_ORDER).min(n);
        let mut starts = Vec::with_capacity(masks.len() + 1);
        let mut terms = Vec::new();
        let mut active = Vec::new();
        starts.push(0);
        for mask in masks {
            active_terms(n, order, &mask.kept_blocks(), &mut active);
            terms.extend(
                active
                    .iter()
                    .map(|&t| u32::try_from(t).expect("term indices stay below MAX_TERMS")),
            );
            starts.push(terms.len());
        }
        MaskTerms {
            num_players: n,
            order,
            starts,
            terms,
        }
    }

    fn rows(&self) -> usize {
        self.starts.len() - 1
    }

    fn of(&self, row: usize) -> &[u32] {
        &self.terms[self.starts[row]..self.starts[row + 1]]
    }
}

impl Multilinear {
    /// Minimises Σ w (y − p)² / Σ w + α Σ_{T≠∅} w_T² (the constant is not penalised).
    pub fn fit_weighted(
        masks: &[Mask],
        targets: &[f64],
        weights: &[f64],
        order: usize,
        ridge_alpha: f64,
    ) -> Result<Multilinear, ShapleyError> {
        let terms = MaskTerms::new(masks, order);
        Ok(Self::fit_in_chunks(&terms, targets, weights, None, ridge_alpha, CHUNK_ENTRIES)?.0)
    }

    /// [`Self::fit_weighted`] with one more, unpenalised, regressor: minimises
    /// Σ w (y − p − c z)² / Σ w + α Σ_{T≠∅} w_T² over the polynomial p and the coefficient c of
    /// `offsets` z (one per mask). Solved as the polynomial's system bordered by z: with G the
    /// polynomial's (ridged) Gram matrix, g = Σ w x z, s = Σ w z² and t = Σ w y z,
    /// c = (t − gᵀG⁻¹r) / (s − gᵀG⁻¹g) and p's coefficients G⁻¹(r − g c). c `None` where z is
    /// (to 1e-9 of its own square) a polynomial of the masks, so c is not determined apart from
    /// p: p is then [`Self::fit_weighted`]'s, which the bordered solve has at hand (G⁻¹r). The
    /// exp-polynomial surrogate's Gauss–Newton steps fit its shift this way
    /// (`regression::fit_exp_polynomial`).
    pub fn fit_weighted_with_offset(
        masks: &[Mask],
        targets: &[f64],
        weights: &[f64],
        offsets: &[f64],
        order: usize,
        ridge_alpha: f64,
    ) -> Result<(Multilinear, Option<f64>), ShapleyError> {
        let terms = MaskTerms::new(masks, order);
        Self::fit_terms(&terms, targets, weights, Some(offsets), ridge_alpha)
    }

    /// [`Self::fit_weighted`] (`offsets` `None`: c `None`) or
    /// [`Self::fit_weighted_with_offset`] over masks whose terms are listed already.
    pub(crate) fn fit_terms(
        terms: &MaskTerms,
        targets: &[f64],
        weights: &[f64],
        offsets: Option<&[f64]>,
        ridge_alpha: f64,
    ) -> Result<(Multilinear, Option<f64>), ShapleyError> {
        Self::fit_in_chunks(terms, targets, weights, offsets, ridge_alpha, CHUNK_ENTRIES)
    }

    /// [`Self::fit_terms`] with the masks' dense features built `chunk_entries` entries
    /// (whole rows, one at the least) at a time.
    fn fit_in_chunks(
        terms: &MaskTerms,
        targets: &[f64],
        weights: &[f64],
        offsets: Option<&[f64]>,
        ridge_alpha: f64,
        chunk_entries: usize,
    ) -> Result<(Multilinear, Option<f64>), ShapleyError> {
        let rows = terms.rows();
        assert!(
            targets.len() == rows
                && weights.len() == rows
                && offsets.is_none_or(|z| z.len() == rows),
            "a target and a weight (and an offset) for each of the {rows} masks"
        );
        let (n, order) = (terms.num_players, terms.order);
        let size = term_count(n, order);
        let total_weight: f64 = weights.iter().sum();
        if !(total_weight > 0.0 && total_weight.is_finite()) {
            return Err(ShapleyError::Singular("the exp-polynomial surrogate"));
        }
        let mut gram = vec![0.0; size * size];
        let mut rhs = vec![0.0; size];
        // The border of the offsets: g = Σ w x z, s = Σ w z², t = Σ w y z.
        let (mut border, mut offset_squares, mut offset_rhs) = (vec![0.0; size], 0.0, 0.0);
        // The Gram matrix's upper triangle, a chunk of rows at a time as dense 0/1 features
        // (`layerprune_core::linalg::add_weighted_gram`), mirrored below.
        let rows_per_chunk = (chunk_entries / size).clamp(1, rows.max(1));
        let mut features = Vec::with_capacity(rows_per_chunk.min(rows) * size);
        let mut chunk_weights = Vec::with_capacity(rows_per_chunk);
        let mut first = 0;
        while first < rows {
            let chunk = rows_per_chunk.min(rows - first);
            features.clear();
            features.resize(chunk * size, 0.0);
            chunk_weights.clear();
            for row in 0..chunk {
                let (y, w) = (targets[first + row], weights[first + row] / total_weight);
                chunk_weights.push(w);
                let active = terms.of(first + row);
                for &p in active {
                    let p = p as usize;
                    rhs[p] += w * y;
                    features[row * size + p] = 1.0;
                }
                if let Some(offsets) = offsets {
                    let z = offsets[first + row];
                    active.iter().for_each(|&p| border[p as usize] += w * z);
                    offset_squares += w * z * z;
                    offset_rhs += w * y * z;
                }
            }
            layerprune_core::linalg::add_weighted_gram(&mut gram, &features, &chunk_weights);
            first += chunk;
        }
        for p in 0..size {
            for q in p + 1..size {
                gram[q * size + p] = gram[p * size + q];
            }
            if p > 0 {
                gram[p * size + p] += ridge_alpha;
            }
        }
        let cholesky = Cholesky::new_owned(gram, size)
            .ok_or(ShapleyError::Singular("the exp-polynomial surrogate"))?;
        let mut coefficients = cholesky.solve(&rhs);
        let mut offset = None;
        if offsets.is_some() {
            let solved_border = cholesky.solve(&border);
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
            let schur = offset_squares - dot(&border, &solved_border);
            // (NaN, from offsets that are not numbers, counts as undetermined too.) Undetermined,
            // the fit without the offset stands: G⁻¹r, solved above.
            if !(schur.is_nan() || schur <= 1e-9 * offset_squares) {
                let c = (offset_rhs - dot(&border, &coefficients)) / schur;
                coefficients
                    .iter_mut()
                    .zip(&solved_border)
                    .for_each(|(b, s)| *b -= c * s);
                offset = Some(c);
            }
        }
        Ok((
            Multilinear {
                num_players: n,
                order,
                coefficients,
            },
            offset,
        ))
    }

    /// [`Self::predict`] of masks whose terms are listed already (at this polynomial's order).
    pub(crate) fn predict_terms(&self, terms: &MaskTerms) -> Vec<f64> {
        assert!(
            terms.num_players == self.num_players && terms.order == self.order,
            "the terms of masks over {} players at order {}",
            self.num_players,
            self.order
        );
        (0..terms.rows())
            .map(|row| {
                terms
                    .of(row)
                    .iter()
                    .map(|&t| self.coefficients[t as usize])
                    .sum()
            })
            .collect()
    }

    pub fn predict(&self, masks: &[Mask]) -> Vec<f64> {
        let mut active = Vec::new();
        masks
            .iter()
            .map(|mask| {
                active_terms(
                    self.num_players,
                    self.order,
                    &mask.kept_blocks(),
                    &mut active,
                );
                active.iter().map(|&t| self.coefficients[t]).sum()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::synthetic::every_mask as all_masks;

    #[test]
    fn term_indices_are_a_bijection_onto_the_subsets() {
        let n = 7;
        let mut seen = vec![0usize; term_count(n, 3)];
        let mut active = Vec::new();
        for mask in all_masks(n) {
            active_terms(n, 3, &mask.kept_blocks(), &mut active);
            let k = mask.num_kept();
            assert_eq!(active.len(), term_count(k, 3), "mask {mask}");
            // The one term of the mask's own size (≤ 3) is counted once over all masks.
            if k <= 3 {
                seen[*active.iter().max().unwrap_or(&0)] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1), "{seen:?}");
    }

    #[test]
    fn a_cubic_is_recovered_exactly_and_orders_follow_the_rows() {
        let n = 6;
        let masks = all_masks(n);
        // y = 1 + 2 x0 − x1 x2 + 3 x1 x3 x5 − 0.5 x0 x2 x4
        let targets: Vec<f64> = masks
            .iter()
            .map(|m| {
                let x = |i: usize| f64::from(u8::from(m.is_kept(i)));
                1.0 + 2.0 * x(0) - x(1) * x(2) + 3.0 * x(1) * x(3) * x(5) - 0.5 * x(0) * x(2) * x(4)
            })
            .collect();
        let weights = vec![1.0; masks.len()];
        let cubic = Multilinear::fit_weighted(&masks, &targets, &weights, 3, 1e-12).unwrap();
        for (p, y) in cubic.predict(&masks).iter().zip(&targets) {
            assert!((p - y).abs() < 1e-6, "{p} vs {y}");
        }
        let quadratic = Multilinear::fit_weighted(&masks, &targets, &weights, 2, 1e-12).unwrap();
        let worst = quadratic
            .predict(&masks)
            .iter()
            .zip(&targets)
            .map(|(p, y)| (p - y).abs())
            .fold(0.0, f64::max);
        assert!(worst > 0.1, "a quadratic cannot fit third-order terms");
        assert_eq!(order_for_rows(12, 598), 3);
        assert_eq!(order_for_rows(12, 597), 2);
        assert_eq!(order_for_rows(12, 20), 1);
    }

    /// The bordered fit against the same least squares with the offsets as one more column of
    /// dense normal equations: y = p + c z recovered exactly, c unpenalised.
    #[test]
    fn a_fit_with_an_offset_recovers_the_polynomial_and_its_coefficient() {
        let n = 5;
        let masks = all_masks(n);
        let offsets: Vec<f64> = (0..masks.len())
            .map(|i| (i as f64 * 0.7).sin().exp())
            .collect();
        let targets: Vec<f64> = masks
            .iter()
            .zip(&offsets)
            .map(|(m, z)| {
                let x = |i: usize| f64::from(u8::from(m.is_kept(i)));
                0.5 + x(0) - 2.0 * x(1) * x(3) + 0.25 * x(4) - 1.5 * z
            })
            .collect();
        let weights: Vec<f64> = (0..masks.len()).map(|i| 1.0 + (i % 4) as f64).collect();
        let (fitted, offset) =
            Multilinear::fit_weighted_with_offset(&masks, &targets, &weights, &offsets, 2, 1e-12)
                .unwrap();
        let offset = offset.expect("the offsets are no polynomial of the masks");
        assert!((offset + 1.5).abs() < 1e-8, "{offset}");
        for ((p, z), y) in fitted.predict(&masks).iter().zip(&offsets).zip(&targets) {
            assert!(
                (p + offset * z - y).abs() < 1e-8,
                "{p} + {offset} {z} vs {y}"
            );
        }
        // Offsets that are a polynomial of the masks (here the constant) leave c undetermined,
        // and the fit is the one without them.
        let constant = vec![2.0; masks.len()];
        let (unbordered, offset) =
            Multilinear::fit_weighted_with_offset(&masks, &targets, &weights, &constant, 2, 1e-12)
                .unwrap();
        assert_eq!(offset, None);
        let plain = Multilinear::fit_weighted(&masks, &targets, &weights, 2, 1e-12).unwrap();
        assert_eq!(unbordered.coefficients, plain.coefficients);
    }

    #[test]
    fn orders_stop_at_the_term_caps_whatever_the_rows() {
        let plenty = usize::MAX / 4;
        assert_eq!(term_count(23, 3), MAX_CUBIC_TERMS);
        assert_eq!(order_for_rows(23, plenty), 3);
        assert_eq!(order_for_rows(24, plenty), 2, "the cubic past its cap");
        assert_eq!(term_count(90, 2), MAX_TERMS);
        assert_eq!(order_for_rows(64, plenty), 2, "15.3 GB at order 3");
        assert_eq!(order_for_rows(90, plenty), 2);
        assert_eq!(order_for_rows(91, plenty), 1, "the quadratic past its cap");
        assert_eq!(order_for_rows(32, 10_000), 2);
    }

    #[test]
    fn chunks_of_a_few_rows_fit_as_one_chunk_does() {
        // 64 masks in chunks of 3 rows (the last one short) against all in one chunk.
        let n = 6;
        let masks = all_masks(n);
        let targets: Vec<f64> = (0..masks.len()).map(|i| (i as f64 * 0.61).cos()).collect();
        let weights: Vec<f64> = (0..masks.len()).map(|i| 0.5 + (i % 5) as f64).collect();
        let size = term_count(n, 2);
        let terms = MaskTerms::new(&masks, 2);
        let fit = |entries| {
            Multilinear::fit_in_chunks(&terms, &targets, &weights, None, 1e-3, entries)
                .unwrap()
                .0
                .coefficients
        };
        let (whole, chunked) = (fit(usize::MAX), fit(3 * size));
        for (a, b) in whole.iter().zip(&chunked) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    #[test]
    fn the_mirrored_gram_fits_as_the_full_one_did() {
        // Against a fit through dense normal equations built entry by entry.
        let n = 5;
        let masks = all_masks(n);
        let targets: Vec<f64> = (0..masks.len()).map(|i| (i as f64 * 0.37).sin()).collect();
        let weights: Vec<f64> = (0..masks.len()).map(|i| 1.0 + (i % 3) as f64).collect();
        let fitted = Multilinear::fit_weighted(&masks, &targets, &weights, 2, 1e-3).unwrap();
        let size = term_count(n, 2);
        let total: f64 = weights.iter().sum();
        let features = |m: &Mask| {
            let mut active = Vec::new();
            active_terms(n, 2, &m.kept_blocks(), &mut active);
            let mut x = vec![0.0; size];
            active.iter().for_each(|&t| x[t] = 1.0);
            x
        };
        let mut gram = vec![0.0; size * size];
        let mut rhs = vec![0.0; size];
        for ((m, y), w) in masks.iter().zip(&targets).zip(&weights) {
            let x = features(m);
            for p in 0..size {
                rhs[p] += w / total * y * x[p];
                for q in 0..size {
                    gram[p * size + q] += w / total * x[p] * x[q];
                }
            }
        }
        (1..size).for_each(|p| gram[p * size + p] += 1e-3);
        let expected = Cholesky::new(&gram, size).unwrap().solve(&rhs);
        for (a, b) in fitted.coefficients.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }
}
