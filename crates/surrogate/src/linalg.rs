//! The small dense solver the quadratic surrogate and the regression estimators share
//! (systems of at most a few thousand unknowns), so neither crate carries a linear-algebra
//! dependency.

/// Cholesky factor of a symmetric positive definite matrix (row-major, `n × n`).
pub struct Cholesky {
    n: usize,
    lower: Vec<f64>,
}

impl Cholesky {
    /// `None` when the matrix is not numerically positive definite (a pivot not clearly
    /// positive, or NaN).
    pub fn new(matrix: &[f64], n: usize) -> Option<Self> {
        let scale = (0..n)
            .map(|i| matrix[i * n + i].abs())
            .fold(0.0_f64, f64::max);
        let tolerance = scale.max(f64::MIN_POSITIVE) * 1e-12;
        let mut lower = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let dot: f64 = (0..j).map(|k| lower[i * n + k] * lower[j * n + k]).sum();
                let entry = matrix[i * n + j] - dot;
                if i == j {
                    if entry.is_nan() || entry <= tolerance {
                        return None;
                    }
                    lower[i * n + i] = entry.sqrt();
                } else {
                    lower[i * n + j] = entry / lower[j * n + j];
                }
            }
        }
        Some(Cholesky { n, lower })
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
    }
}
