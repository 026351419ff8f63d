//! The one small dense solver of the workspace: a Cholesky factorization, used by the
//! quadratic surrogate and the regression estimators (systems of at most a few thousand
//! unknowns) and by GPTQ (the inverse of the calibration inputs' second-moment matrix: 4,096
//! to 11,008 unknowns on a 7B model), so no crate carries a linear-algebra dependency and the
//! factorization is written once. Both loops run over contiguous rows (at n = 4,096: 5.2 s to
//! factor, 4.7 s to invert, in the dev profile, which builds this crate at opt-level 3).

/// Cholesky factor of a symmetric positive definite matrix (row-major, `n × n`).
pub struct Cholesky {
    n: usize,
    lower: Vec<f64>,
}

impl Cholesky {
    /// `None` when the matrix is not numerically positive definite (a pivot not clearly
    /// positive: at most `1e-12` times the largest diagonal entry, or not finite).
    pub fn new(matrix: &[f64], n: usize) -> Option<Self> {
        let scale = (0..n)
            .map(|i| matrix[i * n + i].abs())
            .fold(0.0_f64, f64::max);
        Self::with_tolerance(matrix, n, scale.max(f64::MIN_POSITIVE) * 1e-12).ok()
    }

    /// The factor, or the first pivot that is not finite or is at most `tolerance`.
    pub fn with_tolerance(
        matrix: &[f64],
        n: usize,
        tolerance: f64,
    ) -> Result<Self, NotPositiveDefinite> {
        assert_eq!(matrix.len(), n * n, "a {n} x {n} matrix");
        let mut lower = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let dot = dot::<f64, 4>(&lower[i * n..i * n + j], &lower[j * n..j * n + j]);
                let entry = matrix[i * n + j] - dot;
                if i == j {
                    if !entry.is_finite() || entry <= tolerance {
                        return Err(NotPositiveDefinite {
                            pivot: i,
                            value: entry,
                        });
                    }
                    lower[i * n + i] = entry.sqrt();
                } else {
                    lower[i * n + j] = entry / lower[j * n + j];
                }
            }
        }
        Ok(Cholesky { n, lower })
    }

    /// The order of the matrix.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The lower-triangular factor `L` (`A = L Lᵀ`), row-major.
    pub fn lower(&self) -> &[f64] {
        &self.lower
    }

    /// `L⁻¹`, lower triangular, row-major: row by row, since row i of `X = L⁻¹` is
    /// (eᵢ − Σ_{p<i} L[i,p] X[p,·]) / L[i,i], each term a contiguous row update (the column by
    /// column substitution it replaced read the rows with stride n: 5.8 s at n = 2,048).
    pub fn lower_inverse(&self) -> Vec<f64> {
        let n = self.n;
        let l = &self.lower;
        let mut inv = vec![0.0; n * n];
        for i in 0..n {
            let (done, rest) = inv.split_at_mut(i * n);
            let row = &mut rest[..=i];
            row[i] = 1.0;
            for p in 0..i {
                let factor = l[i * n + p];
                if factor != 0.0 {
                    for (x, y) in row[..=p].iter_mut().zip(&done[p * n..=p * n + p]) {
                        *x -= factor * y;
                    }
                }
            }
            let pivot = l[i * n + i];
            row.iter_mut().for_each(|x| *x /= pivot);
        }
        inv
    }

    pub fn solve(&self, rhs: &[f64]) -> Vec<f64> {
        let n = self.n;
        let mut y = rhs.to_vec();
        for i in 0..n {
            let dot: f64 = (0..i).map(|k| self.lower[i * n + k] * y[k]).sum();
            y[i] = (y[i] - dot) / self.lower[i * n + i];
        }
        for i in (0..n).rev() {
            let dot: f64 = (i + 1..n).map(|k| self.lower[k * n + i] * y[k]).sum();
            y[i] = (y[i] - dot) / self.lower[i * n + i];
        }
        y
    }
}

/// Σ aᵢ bᵢ over `LANES` running sums: one plain float sum is a chain of dependent additions
/// the compiler may not reorder, so it would neither vectorise nor pipeline. The factorization
/// uses four lanes of f64; the MLP surrogate eight of f32.
pub fn dot<T, const LANES: usize>(a: &[T], b: &[T]) -> T
where
    T: Copy + Default + std::ops::Add<Output = T> + std::ops::Mul<Output = T> + std::iter::Sum,
{
    let mut lanes = [T::default(); LANES];
    let (chunks_a, chunks_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: T = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(&x, &y)| x * y)
        .sum();
    for (x, y) in chunks_a.zip(chunks_b) {
        for k in 0..LANES {
            lanes[k] = lanes[k] + x[k] * y[k];
        }
    }
    lanes.into_iter().sum::<T>() + tail
}

/// A matrix the factorization refused: pivot `pivot` came out as `value` (not finite, or not
/// above the tolerance).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NotPositiveDefinite {
    pub pivot: usize,
    pub value: f64,
}

impl std::fmt::Display for NotPositiveDefinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the matrix is not positive definite (pivot {} is {})",
            self.pivot, self.value
        )
    }
}

impl std::error::Error for NotPositiveDefinite {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_and_refuses_singular() {
        let a = [4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let x = [1.0, -2.0, 0.5];
        let b: Vec<f64> = (0..3)
            .map(|i| (0..3).map(|j| a[i * 3 + j] * x[j]).sum())
            .collect();
        let solved = Cholesky::new(&a, 3).unwrap().solve(&b);
        for (s, t) in solved.iter().zip(x) {
            assert!((s - t).abs() < 1e-12);
        }
        assert!(Cholesky::new(&[1.0, 1.0, 1.0, 1.0], 2).is_none());
        assert_eq!(
            Cholesky::with_tolerance(&[1.0, 1.0, 1.0, 1.0], 2, 0.0)
                .err()
                .map(|e| e.pivot),
            Some(1)
        );
        assert!(Cholesky::with_tolerance(&[f64::INFINITY], 1, 0.0).is_err());
    }

    #[test]
    fn the_factor_and_its_inverse() {
        // 3 (the dot product's remainder only) and 37 (its four sums and a remainder).
        for n in [3, 37] {
            // A Gram matrix plus the identity: symmetric positive definite, full.
            let x: Vec<f64> = (0..n * n)
                .map(|i| ((i * 7 + 3) % 11) as f64 / 11.0 - 0.4)
                .collect();
            let a: Vec<f64> = (0..n * n)
                .map(|at| {
                    let (i, j) = (at / n, at % n);
                    let gram: f64 = (0..n).map(|k| x[i * n + k] * x[j * n + k]).sum();
                    gram + f64::from(u8::from(i == j))
                })
                .collect();
            let factor = Cholesky::new(&a, n).unwrap();
            let (l, inv) = (factor.lower(), factor.lower_inverse());
            for i in 0..n {
                for j in 0..n {
                    let llt: f64 = (0..n).map(|k| l[i * n + k] * l[j * n + k]).sum();
                    assert!((llt - a[i * n + j]).abs() < 1e-10, "n {n} ({i}, {j})");
                    let identity: f64 = (0..n).map(|k| l[i * n + k] * inv[k * n + j]).sum();
                    let expected = f64::from(u8::from(i == j));
                    assert!((identity - expected).abs() < 1e-10, "n {n} ({i}, {j})");
                    if j > i {
                        assert_eq!((l[i * n + j], inv[i * n + j]), (0.0, 0.0));
                    }
                }
            }
        }
    }
}
