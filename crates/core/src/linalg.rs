//! The one small dense solver of the workspace: a Cholesky factorization, used by the
//! quadratic surrogate and the regression estimators (systems of at most a few thousand
//! unknowns) and by GPTQ (the inverse of the calibration inputs' second-moment matrix), so no
//! crate carries a linear-algebra dependency and the factorization is written once.

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
                let dot: f64 = (0..j).map(|k| lower[i * n + k] * lower[j * n + k]).sum();
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

    /// `L⁻¹`, lower triangular, row-major: column by column by forward substitution.
    pub fn lower_inverse(&self) -> Vec<f64> {
        let n = self.n;
        let l = &self.lower;
        let mut inv = vec![0.0; n * n];
        for c in 0..n {
            inv[c * n + c] = 1.0 / l[c * n + c];
            for i in c + 1..n {
                let mut sum = 0.0;
                for p in c..i {
                    sum += l[i * n + p] * inv[p * n + c];
                }
                inv[i * n + c] = -sum / l[i * n + i];
            }
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
        let a = [4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let factor = Cholesky::new(&a, 3).unwrap();
        let (l, inv) = (factor.lower(), factor.lower_inverse());
        for i in 0..3 {
            for j in 0..3 {
                let llt: f64 = (0..3).map(|k| l[i * 3 + k] * l[j * 3 + k]).sum();
                assert!((llt - a[i * 3 + j]).abs() < 1e-12);
                let identity: f64 = (0..3).map(|k| l[i * 3 + k] * inv[k * 3 + j]).sum();
                assert!((identity - f64::from(u8::from(i == j))).abs() < 1e-12);
                if j > i {
                    assert_eq!((l[i * 3 + j], inv[i * 3 + j]), (0.0, 0.0));
                }
            }
        }
    }
}
