//! The one small dense solver of the workspace: a Cholesky factorization, used by the
//! quadratic surrogate and the regression estimators (systems of at most a few thousand
//! unknowns) and by GPTQ (the inverse of the calibration inputs' second-moment matrix: 4,096
//! to 11,008 unknowns on a 7B model), so the factorization is written once. Below
//! [`BLOCKED_FROM`] unknowns it runs row by row over contiguous rows; from there in panels whose
//! bulk is `matrixmultiply`'s GEMM (the crate ndarray multiplies with), on the process's
//! [thread budget](crate::parallel::thread_budget) (or the threads a caller gives). The normal
//! equations those systems come from are built here too: [`add_binary_gram`] counts a Gram matrix of 0/1 features from bit columns (the quadratic
//! surrogate), [`add_weighted_gram`] multiplies out a weighted one (the regression estimators'
//! Gauss–Newton fits). A system to solve ([`Cholesky::new`]) is refused when it is not
//! numerically positive definite or when its condition estimate is above [`MAX_CONDITION`],
//! where its solution would be mostly rounding.

/// Cholesky factor of a symmetric positive definite matrix (row-major, `n × n`).
pub struct Cholesky {
    n: usize,
    lower: Vec<f64>,
    /// `‖A‖₁` of the matrix factored (its largest column sum of magnitudes): with an estimate
    /// of `‖A⁻¹‖₁` from the factor, the condition number ([`Cholesky::condition_estimate`]).
    norm: f64,
}

impl Cholesky {
    /// The factor of a system to solve, or `None` where its solution would not be worth having
    /// ([`Self::for_solving`] says which way).
    pub fn new(matrix: &[f64], n: usize) -> Option<Self> {
        Self::new_owned(matrix.to_vec(), n)
    }

    /// [`Self::new`], factoring `matrix` in its own storage (no copy).
    pub fn new_owned(matrix: Vec<f64>, n: usize) -> Option<Self> {
        Self::for_solving(matrix, n).ok()
    }

    /// The factor of a system to solve, factoring `matrix` in its own storage; refused when the
    /// matrix is not numerically positive definite (a pivot not clearly positive: at most
    /// `1e-12` times the largest diagonal entry, or not finite), or when its
    /// [condition estimate](Self::condition_estimate) is above [`MAX_CONDITION`]: then a solve
    /// would give an answer mostly made of rounding, with nothing to tell it from a good one
    /// (its residual is as small as any). The pivot test alone let such systems through: `n`
    /// equal features under a ridge `δ` (`11ᵀ + δI`) have pivots of about `δ` times the
    /// diagonal but a condition number of about `2n/δ`, and a Hilbert matrix of order 10
    /// (condition 3.5e13) has no pivot under 2e-11 of its diagonal.
    pub fn for_solving(matrix: Vec<f64>, n: usize) -> Result<Self, Unsolvable> {
        let scale = (0..n)
            .map(|i| matrix[i * n + i].abs())
            .fold(0.0_f64, f64::max);
        let factor = Self::with_tolerance(matrix, n, scale.max(f64::MIN_POSITIVE) * 1e-12, 0)
            .map_err(Unsolvable::NotPositiveDefinite)?;
        let condition = factor.condition_estimate();
        // A NaN estimate is refused too.
        if condition.is_nan() || condition > MAX_CONDITION {
            return Err(Unsolvable::IllConditioned { condition });
        }
        Ok(factor)
    }

    /// The factor, or the first pivot that is not finite or is at most `tolerance`, factoring
    /// `matrix` in its own storage (no copy: what a matrix of 11,008 unknowns, 970 MB, needs),
    /// on `threads` threads (0: the process's thread budget, one per core unless set). The
    /// condition is not checked here: a caller that needs it asks
    /// [`condition_estimate`](Self::condition_estimate).
    pub fn with_tolerance(
        matrix: Vec<f64>,
        n: usize,
        tolerance: f64,
        threads: usize,
    ) -> Result<Self, NotPositiveDefinite> {
        let threads = crate::parallel::threads_or_budget(threads);
        Self::factor(matrix, n, tolerance, panel_for(n), threads)
    }

    /// With `panel >= n`, row by row (the loops the workspace's small systems have always run,
    /// so their results do not change); otherwise in panels of `panel` columns: each
    /// panel factored as a small matrix, the rows below it solved against it on `threads`
    /// threads, and the rest of the matrix updated by one matrix product per panel of rows,
    /// also on `threads` threads — `O(n³/3)` as before, but mostly in `matrixmultiply`'s GEMM.
    fn factor(
        mut a: Vec<f64>,
        n: usize,
        tolerance: f64,
        panel: usize,
        threads: usize,
    ) -> Result<Self, NotPositiveDefinite> {
        assert_eq!(a.len(), n * n, "a {n} x {n} matrix");
        let norm = lower_norm_1(&a, n);
        let panel = panel.max(1);
        for j0 in (0..n).step_by(panel) {
            let j1 = (j0 + panel).min(n);
            factor_diagonal(&mut a, n, j0..j1, tolerance)?;
            if j1 == n {
                break;
            }
            let (done, below) = a.split_at_mut(j1 * n);
            let diagonal = &done[j0 * n..];
            on_threads(row_blocks(below, n, j1, panel), threads, |_, rows| {
                solve_against_diagonal(rows, diagonal, n, j0..j1);
            });
            // The panel's rows below the diagonal, contiguous: the GEMM's two operands.
            let width = j1 - j0;
            let solved: Vec<f64> = below
                .chunks_exact(n)
                .flat_map(|row| &row[j0..j1])
                .copied()
                .collect();
            on_threads(row_blocks(below, n, j1, panel), threads, |r0, rows| {
                let m = rows.len() / n;
                // a[r0.., j1..r0 + m] -= solved[r0 - j1..][..m] · solved[..r0 + m - j1]ᵀ:
                // the lower part of these rows (and the upper part of their diagonal square,
                // cleared at the end).
                gemm(
                    m,
                    width,
                    r0 + m - j1,
                    -1.0,
                    (&solved[(r0 - j1) * width..], width, 1),
                    (&solved, 1, width),
                    1.0,
                    (&mut rows[j1..], n),
                );
            });
        }
        for i in 0..n {
            a[i * n + i + 1..(i + 1) * n].fill(0.0);
        }
        Ok(Cholesky { n, lower: a, norm })
    }

    /// The order of the matrix.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The lower-triangular factor `L` (`A = L Lᵀ`), row-major.
    pub fn lower(&self) -> &[f64] {
        &self.lower
    }

    /// `L⁻¹`, lower triangular, row-major, on `threads` threads (0: the thread budget).
    pub fn lower_inverse(&self, threads: usize) -> Vec<f64> {
        let threads = crate::parallel::threads_or_budget(threads);
        self.inverse(panel_for(self.n), threads)
    }

    /// With `panel >= n`, row by row, since row i of `X = L⁻¹` is
    /// (eᵢ − Σ_{p<i} L[i,p] X[p,·]) / L[i,i], each term a contiguous row update (the column by
    /// column substitution it replaced read the rows with stride n: 5.8 s at n = 2,048). From
    /// there by panels of `panel` columns of `X`, which are independent (`L X[:, c] = e_c`),
    /// on `threads` threads, largest first (for about half the matrix more memory while they
    /// run): a panel's rows are found a block of rows at a time,
    /// the block's product with the rows found before it one GEMM, then a substitution against
    /// the block's diagonal square.
    fn inverse(&self, panel: usize, threads: usize) -> Vec<f64> {
        let n = self.n;
        let l = &self.lower;
        let panel = panel.max(1);
        if panel >= n {
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
            return inv;
        }
        let starts: Vec<usize> = (0..n).step_by(panel).collect();
        // Each panel's rows from its first column down (above, they are zero).
        let panels = crate::parallel::map_in_order(&starts, threads, |_, &c0| {
            let width = panel.min(n - c0);
            let mut x = vec![0.0; (n - c0) * width];
            for c in 0..width {
                x[c * width + c] = 1.0;
            }
            for r0 in (c0..n).step_by(panel) {
                let r1 = (r0 + panel).min(n);
                let (found, rows) = x.split_at_mut((r0 - c0) * width);
                let rows = &mut rows[..(r1 - r0) * width];
                if r0 > c0 {
                    // rows = −L[r0..r1, c0..r0] · X[c0..r0, panel]
                    gemm(
                        r1 - r0,
                        r0 - c0,
                        width,
                        -1.0,
                        (&l[r0 * n + c0..], n, 1),
                        (found, width, 1),
                        0.0,
                        (rows, width),
                    );
                }
                forward_substitute(rows, width, l, n, r0..r1);
            }
            x
        });
        let mut inv = vec![0.0; n * n];
        for (&c0, x) in starts.iter().zip(panels) {
            let width = panel.min(n - c0);
            for (r, row) in x.chunks_exact(width).enumerate() {
                let at = (c0 + r) * n + c0;
                inv[at..at + width].copy_from_slice(row);
            }
        }
        inv
    }

    /// An estimate of the condition number `κ₁(A) = ‖A‖₁ ‖A⁻¹‖₁` of the matrix factored, from
    /// the factor: Hager's estimator of `‖A⁻¹‖₁` with Higham's refinements (LAPACK's
    /// `dlacn2`, as `dpocon` uses it), a handful of solves of `O(n²)` each. Never above the
    /// true value, and in practice within a small factor of it; 0 for an empty matrix.
    ///
    /// What a solve's accuracy depends on: Cholesky is backward stable, so `‖Ax − b‖` comes
    /// out near `2⁻⁵³ ‖A‖ ‖x‖` whatever the matrix, while the solution's relative error can
    /// be up to about `κ · 2⁻⁵³` (times a modest factor of `n`). A residual check would pass
    /// every solve; this is the check that tells a solve that means something from rounding.
    pub fn condition_estimate(&self) -> f64 {
        self.norm * self.inverse_norm_1_estimate()
    }

    /// A lower bound on `‖A⁻¹‖₁`, close to it in practice (Higham, "FORTRAN codes for
    /// estimating the one-norm of a real or complex matrix", 1988, Algorithm 2.1 and the
    /// alternative vector of its §4): `A⁻¹` is symmetric, so its transpose is itself.
    fn inverse_norm_1_estimate(&self) -> f64 {
        let n = self.n;
        if n == 0 {
            return 0.0;
        }
        let norm_1 = |v: &[f64]| v.iter().map(|x| x.abs()).sum::<f64>();
        let mut x = vec![1.0 / n as f64; n];
        let mut estimate = 0.0;
        let mut last_index = None;
        for step in 0..5 {
            let y = self.solve_by_rows(&x);
            let norm = norm_1(&y);
            if step > 0 && norm <= estimate {
                break;
            }
            estimate = norm;
            let signs: Vec<f64> = y
                .iter()
                .map(|&v| if v >= 0.0 { 1.0 } else { -1.0 })
                .collect();
            let z = self.solve_by_rows(&signs);
            let (index, largest) = z.iter().map(|v| v.abs()).enumerate().fold(
                (0, f64::NEG_INFINITY),
                |best, (i, v)| {
                    if v > best.1 {
                        (i, v)
                    } else {
                        best
                    }
                },
            );
            let along: f64 = z.iter().zip(&x).map(|(a, b)| a * b).sum();
            if step > 0 && (largest <= along || last_index == Some(index)) {
                break;
            }
            last_index = Some(index);
            x.fill(0.0);
            x[index] = 1.0;
        }
        // Higham's extra vector, (−1)^i (1 + i/(n − 1)), catches the matrices on which the
        // iteration above stops early; the larger of the two is the estimate.
        let alternative: Vec<f64> = (0..n)
            .map(|i| {
                let size = 1.0 + i as f64 / (n.max(2) - 1) as f64;
                if i % 2 == 0 {
                    size
                } else {
                    -size
                }
            })
            .collect();
        let extra = 2.0 * norm_1(&self.solve_by_rows(&alternative)) / (3.0 * n as f64);
        if estimate.is_nan() || extra.is_nan() {
            return f64::INFINITY;
        }
        estimate.max(extra)
    }

    /// `A⁻¹ b` through the factor, every step reading rows of `L` (the back substitution as
    /// updates by row `k` of `L`, not as dot products down its columns, which read with a
    /// stride of `n`): for the condition estimate, whose solves are many and whose rounding
    /// does not matter. [`Cholesky::solve`] keeps its order, so its results do not change.
    fn solve_by_rows(&self, rhs: &[f64]) -> Vec<f64> {
        let n = self.n;
        let l = &self.lower;
        let mut y = rhs.to_vec();
        for i in 0..n {
            let dot = dot::<f64, 4>(&l[i * n..i * n + i], &y[..i]);
            y[i] = (y[i] - dot) / l[i * n + i];
        }
        for k in (0..n).rev() {
            y[k] /= l[k * n + k];
            let x_k = y[k];
            for (y_i, &l_ki) in y[..k].iter_mut().zip(&l[k * n..k * n + k]) {
                *y_i -= l_ki * x_k;
            }
        }
        y
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

/// `‖A‖₁` of the symmetric matrix whose lower triangle `a` holds (row-major, `n` columns): the
/// largest sum of magnitudes down a column, an entry below the diagonal counted in its column
/// and, as its mirror above the diagonal, in its row's. It reads what the factorization reads.
fn lower_norm_1(a: &[f64], n: usize) -> f64 {
    let mut sums = vec![0.0; n];
    for i in 0..n {
        let row = &a[i * n..i * n + i];
        let mut mirrored = a[i * n + i].abs();
        for (sum, &x) in sums.iter_mut().zip(row) {
            *sum += x.abs();
            mirrored += x.abs();
        }
        sums[i] += mirrored;
    }
    sums.into_iter().fold(0.0, f64::max)
}

/// Order from which the factorization and the inverse run in panels on the thread budget (or
/// the threads a caller gives): below it they take under a second row by row (the quadratic
/// surrogate's systems up to 44 players), and their results stay what they were.
pub const BLOCKED_FROM: usize = 1024;

/// Columns a panel: wide enough for the GEMM to run near its peak, narrow enough that the
/// row-by-row work inside a panel stays small.
const PANEL: usize = 128;

/// The panel width for order `n`: the whole matrix below [`BLOCKED_FROM`].
fn panel_for(n: usize) -> usize {
    if n < BLOCKED_FROM {
        n
    } else {
        PANEL
    }
}

/// Threads for `operations` independent multiply-adds or word operations: the process's
/// [`thread_budget`](crate::parallel::thread_budget) (every core unless the stage's `--threads`
/// set it), or the calling thread alone below a few milliseconds of work (the small fits of a
/// sampling round or of a cross-fitted estimator's halves, which a workflow engine may run
/// side by side, one core each). The result is the same either way.
fn threads_for_work(operations: usize) -> usize {
    const SERIAL_BELOW: usize = 1 << 22;
    if operations < SERIAL_BELOW {
        1
    } else {
        crate::parallel::thread_budget()
    }
}

/// The rows `first..` of a row-major matrix of `n` columns (`rows`), cut into blocks of
/// `block` rows, each with the index of its first row.
fn row_blocks(rows: &mut [f64], n: usize, first: usize, block: usize) -> Vec<(usize, &mut [f64])> {
    rows.chunks_mut(block * n)
        .enumerate()
        .map(|(i, chunk)| (first + i * block, chunk))
        .collect()
}

/// Runs `work` on every block of rows, on `threads` threads, dealt round-robin (a block's
/// work grows with its row index, so neighbours go to different threads).
fn on_threads(
    blocks: Vec<(usize, &mut [f64])>,
    threads: usize,
    work: impl Fn(usize, &mut [f64]) + Sync,
) {
    let threads = threads.clamp(1, blocks.len().max(1));
    if threads == 1 {
        blocks
            .into_iter()
            .for_each(|(first, rows)| work(first, rows));
        return;
    }
    let mut dealt: Vec<Vec<(usize, &mut [f64])>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, block) in blocks.into_iter().enumerate() {
        dealt[i % threads].push(block);
    }
    let work = &work;
    std::thread::scope(|scope| {
        for blocks in dealt {
            scope.spawn(move || {
                blocks
                    .into_iter()
                    .for_each(|(first, rows)| work(first, rows));
            });
        }
    });
}

/// Factors the diagonal square `range × range` of `a` (row-major, `n` columns) in place,
/// row by row, its entries already reduced by every earlier panel.
fn factor_diagonal(
    a: &mut [f64],
    n: usize,
    range: std::ops::Range<usize>,
    tolerance: f64,
) -> Result<(), NotPositiveDefinite> {
    let j0 = range.start;
    for i in range.clone() {
        for j in j0..=i {
            let (above, row) = a.split_at_mut(i * n);
            let dot = if j == i {
                dot::<f64, 4>(&row[j0..j], &row[j0..j])
            } else {
                dot::<f64, 4>(&row[j0..j], &above[j * n + j0..j * n + j])
            };
            let entry = row[j] - dot;
            if i == j {
                if !entry.is_finite() || entry <= tolerance {
                    return Err(NotPositiveDefinite {
                        pivot: i,
                        value: entry,
                    });
                }
                row[i] = entry.sqrt();
            } else {
                row[j] = entry / above[j * n + j];
            }
        }
    }
    Ok(())
}

/// Solves each row of `rows` (row-major, `n` columns) in the columns `range` against the
/// factored diagonal square there (`diagonal`: the matrix from row `range.start` on):
/// `x L[range, range]ᵀ = b`, by substitution.
fn solve_against_diagonal(
    rows: &mut [f64],
    diagonal: &[f64],
    n: usize,
    range: std::ops::Range<usize>,
) {
    let j0 = range.start;
    for row in rows.chunks_exact_mut(n) {
        for j in range.clone() {
            let l = &diagonal[(j - j0) * n..];
            let dot = dot::<f64, 4>(&row[j0..j], &l[j0..j]);
            row[j] = (row[j] - dot) / l[j];
        }
    }
}

/// Solves `L[range, range] Y = B` in place (`rows`: B's rows `range`, `width` columns each,
/// row-major), by forward substitution with `L` (row-major, `n` columns).
fn forward_substitute(
    rows: &mut [f64],
    width: usize,
    l: &[f64],
    n: usize,
    range: std::ops::Range<usize>,
) {
    let r0 = range.start;
    for i in range {
        let (done, rest) = rows.split_at_mut((i - r0) * width);
        let row = &mut rest[..width];
        for p in r0..i {
            let factor = l[i * n + p];
            if factor != 0.0 {
                for (x, y) in row
                    .iter_mut()
                    .zip(&done[(p - r0) * width..(p - r0 + 1) * width])
                {
                    *x -= factor * y;
                }
            }
        }
        let pivot = l[i * n + i];
        row.iter_mut().for_each(|x| *x /= pivot);
    }
}

/// `C = alpha · A B + beta · C` for row-major views: `a` is `m × k` with strides
/// `(row, column)`, `b` `k × n` likewise, `c` `m × n` with row stride `c.1` (column stride 1).
/// The slices must hold every element the strides reach (checked).
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f64,
    a: (&[f64], usize, usize),
    b: (&[f64], usize, usize),
    beta: f64,
    c: (&mut [f64], usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    if k > 0 {
        assert!(a.0.len() > last(m, k, a.1, a.2) && b.0.len() > last(k, n, b.1, b.2));
    }
    assert!(c.0.len() > last(m, n, c.1, 1));
    // SAFETY: the assertions above keep every element the strides reach inside the slices;
    // `c` is borrowed mutably, so it overlaps neither `a` nor `b`.
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            alpha,
            a.0.as_ptr(),
            a.1 as isize,
            a.2 as isize,
            b.0.as_ptr(),
            b.1 as isize,
            b.2 as isize,
            beta,
            c.0.as_mut_ptr(),
            c.1 as isize,
            1,
        );
    }
}

/// Adds the Gram matrix `Σ_r x_ra x_rb` of 0/1 columns stored as bits to the upper triangle
/// (`a ≤ b`) of `gram`, a row-major `num_columns × num_columns` matrix whose lower triangle
/// it leaves as it is: what the quadratic surrogate's normal equations need. Column `a` is
/// the `words_per_column` words from `a * words_per_column`; row `r` is bit `r % 64` of its
/// word `r / 64`. An entry is the number of bits set in both columns, one word operation per
/// 64 rows against 64 multiply-adds for dense columns, and exact (an integer: sums of counts
/// below 2⁵³ are exact too), so it equals any other order of summation. Rows of `gram` are
/// dealt round-robin in blocks to the thread budget's threads (`threads_for_work`: small
/// work stays on the calling thread); a block reads each column once for all its rows.
pub fn add_binary_gram(
    gram: &mut [f64],
    columns: &[u64],
    words_per_column: usize,
    num_columns: usize,
) {
    let threads = threads_for_work(num_columns * num_columns / 2 * words_per_column);
    add_binary_gram_on(gram, columns, words_per_column, num_columns, threads);
}

fn add_binary_gram_on(
    gram: &mut [f64],
    columns: &[u64],
    words: usize,
    num_columns: usize,
    threads: usize,
) {
    let n = num_columns;
    assert_eq!(columns.len(), words * n, "{n} columns of {words} words");
    assert_eq!(gram.len(), n * n, "a {n} x {n} Gram matrix");
    if words == 0 || n == 0 {
        return;
    }
    // Rows of `gram` a block: their 8 columns stay in the cache while every later column is
    // read once against all of them.
    const BLOCK: usize = 8;
    #[cfg(target_arch = "x86_64")]
    let popcnt = std::arch::is_x86_feature_detected!("popcnt");
    on_threads(row_blocks(gram, n, 0, BLOCK), threads, |a0, rows| {
        #[cfg(target_arch = "x86_64")]
        if popcnt {
            // SAFETY: the CPU has the instruction the function was compiled to use.
            return unsafe { count_block_with_popcnt(rows, a0, columns, words, n) };
        }
        count_block(rows, a0, columns, words, n);
    });
}

/// Adds to `rows` (rows `a0..` of an `n`-column Gram matrix) the counts of their columns
/// against every column from their own on: column `b` is read once for the whole block.
#[inline(always)]
fn count_block(rows: &mut [f64], a0: usize, columns: &[u64], words: usize, n: usize) {
    let block = rows.len() / n;
    let column = |c: usize| &columns[c * words..(c + 1) * words];
    for b in a0..n {
        let column_b = column(b);
        for i in 0..block.min(b + 1 - a0) {
            let both: u64 = column(a0 + i)
                .iter()
                .zip(column_b)
                .map(|(x, y)| u64::from((x & y).count_ones()))
                .sum();
            rows[i * n + b] += both as f64;
        }
    }
}

/// [`count_block`] compiled with the population-count instruction: x86-64's baseline lacks
/// it, and counting bits without it takes about a dozen instructions a word.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn count_block_with_popcnt(rows: &mut [f64], a0: usize, columns: &[u64], words: usize, n: usize) {
    count_block(rows, a0, columns, words, n);
}

/// Adds `Xᵀ diag(w) X` to `gram` (row-major `p × p`, `p` the columns of `x`) on and above its
/// diagonal, and below it within each band's diagonal square (there the true symmetric
/// entries): `x` holds `weights.len()` rows of `p` features, row-major. The weighted Gram
/// matrix of a least-squares fit, computed as one product `Xᵀ (W X)` per band of 64 of
/// `gram`'s rows (the band's columns from its first row on), the bands dealt to the thread
/// budget's threads (`threads_for_work`: small work stays on the calling thread):
/// `matrixmultiply`'s GEMM, where adding each row's products entry by entry missed the cache
/// once the matrix outgrew it.
pub fn add_weighted_gram(gram: &mut [f64], x: &[f64], weights: &[f64]) {
    let (rows, entries) = (weights.len().max(1), x.len());
    let threads = threads_for_work(entries / rows * entries / 2);
    add_weighted_gram_on(gram, x, weights, threads);
}

fn add_weighted_gram_on(gram: &mut [f64], x: &[f64], weights: &[f64], threads: usize) {
    let rows = weights.len();
    if rows == 0 {
        assert!(x.is_empty(), "features without weights");
        return;
    }
    assert_eq!(x.len() % rows, 0, "x holds {rows} rows");
    let p = x.len() / rows;
    assert_eq!(gram.len(), p * p, "a {p} x {p} Gram matrix");
    if p == 0 {
        return;
    }
    let weighted: Vec<f64> = x
        .chunks_exact(p)
        .zip(weights)
        .flat_map(|(row, &w)| row.iter().map(move |&v| w * v))
        .collect();
    const BAND: usize = 64;
    on_threads(row_blocks(gram, p, 0, BAND), threads, |a0, band| {
        let m = band.len() / p;
        // band[.., a0..] += X[.., a0..a0 + m]ᵀ · (W X)[.., a0..]
        gemm(
            m,
            rows,
            p - a0,
            1.0,
            (&x[a0..], 1, p),
            (&weighted[a0..], p, 1),
            1.0,
            (&mut band[a0..], p),
        );
    });
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

/// The largest condition number ([`Cholesky::condition_estimate`]) of a system
/// [`Cholesky::for_solving`] (and so [`Cholesky::new`]) accepts. A solve's relative error is up
/// to about `κ · 2⁻⁵³ ≈ κ · 1.1e-16` (times a modest factor of the order), so at this bound
/// about four significant digits are still right, and beyond it they go one a decade: a
/// Hilbert matrix of order 10 (κ 3.5e13) solved with a relative error of 3e-4, of order 11
/// (1.2e15) of 5e-3. The workspace's own systems stay well below it (measured on synthetic
/// games of their shapes, 1-norm): the quadratic surrogate's ridge system 7e3 to 9e4 at its
/// default ridge (30 and 64 players, 400 to 2,000 masks) and 2e8 to 1.4e9 at the
/// regression-adjusted estimator's ridge of 1e-6; the exp-polynomial surrogate's weighted
/// system 1e9 to 3e10 (values spanning three to six decades); KernelSHAP's 2e2 to 8e3. The
/// ridge system grows as the ridge's inverse when there are fewer masks than features, so
/// only a ridge set below about 1e-10 there (`fit-surrogate --ridge-alpha`), or none over
/// masks that barely tell the features apart, comes near it.
pub const MAX_CONDITION: f64 = 1e12;

/// Why [`Cholesky::for_solving`] refused a system.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unsolvable {
    /// The matrix is not numerically positive definite.
    NotPositiveDefinite(NotPositiveDefinite),
    /// The matrix is positive definite, but so badly conditioned that a solution would be
    /// mostly rounding: its condition estimate is above [`MAX_CONDITION`] (or not a number).
    IllConditioned { condition: f64 },
}

impl std::fmt::Display for Unsolvable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsolvable::NotPositiveDefinite(refused) => refused.fmt(f),
            Unsolvable::IllConditioned { condition } => write!(
                f,
                "the matrix is too ill-conditioned to solve (condition number about \
                 {condition:.1e}, above {MAX_CONDITION:.0e}): its solution would be mostly \
                 rounding error"
            ),
        }
    }
}

impl std::error::Error for Unsolvable {}

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
    fn binary_gram_counts_rows_where_both_columns_are_set() {
        // 20 columns (three blocks of rows of the result, so both threads work) over 130 rows
        // (three words, the last partly used).
        let (rows, n): (usize, usize) = (130, 20);
        let words = rows.div_ceil(64);
        let set = |r: usize, a: usize| (r * (a + 3) + a).is_multiple_of(a + 2);
        let mut columns = vec![0u64; n * words];
        for a in 0..n {
            for r in (0..rows).filter(|&r| set(r, a)) {
                columns[a * words + r / 64] |= 1 << (r % 64);
            }
        }
        // Added to a matrix of 0.5s, twice: the lower triangle is left as it was.
        let mut gram = vec![0.5; n * n];
        add_binary_gram(&mut gram, &columns, words, n);
        add_binary_gram_on(&mut gram, &columns, words, n, 2);
        for a in 0..n {
            for b in 0..n {
                let expected = if a <= b {
                    0.5 + 2.0 * (0..rows).filter(|&r| set(r, a) && set(r, b)).count() as f64
                } else {
                    0.5
                };
                assert_eq!(gram[a * n + b], expected, "entry ({a}, {b})");
            }
        }
    }

    #[test]
    fn weighted_gram_is_x_transposed_w_x_on_the_upper_triangle() {
        // 70 columns (two bands, the second partial) over 9 rows.
        let (rows, p) = (9usize, 70usize);
        let x: Vec<f64> = (0..rows * p)
            .map(|i| ((i * 13 + 5) % 7) as f64 / 7.0 - 0.3)
            .collect();
        let weights: Vec<f64> = (0..rows).map(|r| 0.5 + r as f64).collect();
        let mut gram = vec![1.0; p * p];
        add_weighted_gram_on(&mut gram, &x, &weights, 2);
        for a in 0..p {
            for b in a..p {
                let expected = 1.0
                    + (0..rows)
                        .map(|r| weights[r] * x[r * p + a] * x[r * p + b])
                        .sum::<f64>();
                let got = gram[a * p + b];
                assert!(
                    (got - expected).abs() < 1e-12,
                    "({a}, {b}): {got} vs {expected}"
                );
            }
        }
    }

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
            Cholesky::with_tolerance(vec![1.0, 1.0, 1.0, 1.0], 2, 0.0, 1)
                .err()
                .map(|e| e.pivot),
            Some(1)
        );
        assert!(Cholesky::with_tolerance(vec![f64::INFINITY], 1, 0.0, 1).is_err());
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
            let (l, inv) = (factor.lower(), factor.lower_inverse(0));
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

    /// The Hilbert matrix of order `n`, `1 / (i + j + 1)`: positive definite, and as badly
    /// conditioned as matrices this small come.
    fn hilbert(n: usize) -> Vec<f64> {
        (0..n * n)
            .map(|at| 1.0 / (at / n + at % n + 1) as f64)
            .collect()
    }

    /// `A x` for a row-major `n × n` matrix.
    fn times(a: &[f64], x: &[f64]) -> Vec<f64> {
        a.chunks_exact(x.len())
            .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect()
    }

    /// `‖x − y‖₂ / ‖y‖₂`.
    fn relative_error(x: &[f64], y: &[f64]) -> f64 {
        let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|d| d * d).sum::<f64>().sqrt();
        norm(&mut x.iter().zip(y).map(|(a, b)| a - b)) / norm(&mut y.iter().copied())
    }

    /// `κ₁(A)` from the explicit inverse `A⁻¹ = L⁻ᵀ L⁻¹`.
    fn exact_condition(a: &[f64], factor: &Cholesky) -> f64 {
        let n = factor.n();
        let inv = factor.lower_inverse(1);
        let column_sums = |m: &dyn Fn(usize, usize) -> f64| {
            (0..n)
                .map(|j| (0..n).map(|i| m(i, j).abs()).sum::<f64>())
                .fold(0.0, f64::max)
        };
        let inverse = |i: usize, j: usize| -> f64 {
            (i.max(j)..n).map(|k| inv[k * n + i] * inv[k * n + j]).sum()
        };
        column_sums(&|i, j| a[i * n + j]) * column_sums(&inverse)
    }

    /// Systems that pass the pivot test but whose solution is mostly rounding are refused,
    /// naming their condition; their well-conditioned neighbours are solved, accurately.
    #[test]
    fn ill_conditioned_systems_are_refused_and_the_rest_solved() {
        // Hilbert of order 10: condition 3.5e13, smallest pivot 2e-11 of the diagonal. Its
        // factor passes the pivot test and solves with a relative error near 1e-4.
        let a = hilbert(10);
        let ones = vec![1.0; 10];
        let rhs = times(&a, &ones);
        let tolerance = 1e-12;
        let factored = Cholesky::with_tolerance(a.clone(), 10, tolerance, 1).unwrap();
        assert!(relative_error(&factored.solve(&rhs), &ones) > 1e-6);
        assert!(Cholesky::new(&a, 10).is_none());
        match Cholesky::for_solving(a.clone(), 10) {
            Err(Unsolvable::IllConditioned { condition }) => {
                assert!((1e13..=3.6e13).contains(&condition), "{condition:e}");
                let message = Unsolvable::IllConditioned { condition }.to_string();
                assert!(message.contains("ill-conditioned"), "{message}");
            }
            other => panic!("expected IllConditioned, got {:?}", other.map(|f| f.n())),
        }
        // Of order 8 (3.4e10): solved, to better than 1e-6.
        let a = hilbert(8);
        let ones = vec![1.0; 8];
        let factor = Cholesky::new(&a, 8).unwrap();
        assert!(relative_error(&factor.solve(&times(&a, &ones)), &ones) < 1e-6);
        let (estimate, exact) = (factor.condition_estimate(), exact_condition(&a, &factor));
        assert!(estimate <= exact * (1.0 + 1e-9) && estimate >= exact / 3.0);

        // 50 equal features under a ridge δ (11ᵀ + δI): pivots about δ of the diagonal,
        // condition (n + δ)(1 + (n − 2)/(n + δ))/δ, about 2n/δ.
        let n = 50;
        let collinear = |ridge: f64| -> Vec<f64> {
            (0..n * n)
                .map(|at| 1.0 + if at / n == at % n { ridge } else { 0.0 })
                .collect()
        };
        let condition = |ridge: f64| {
            let size = n as f64 + ridge;
            size * (1.0 + (n as f64 - 2.0) / size) / ridge
        };
        let x: Vec<f64> = (0..n).map(|i| (i % 7) as f64 - 3.0).collect();
        // δ = 1e-11: condition 1e13, refused (the pivot test let it through).
        let a = collinear(1e-11);
        assert!(Cholesky::with_tolerance(a.clone(), n, 1e-12 * (1.0 + 1e-11), 1).is_ok());
        match Cholesky::for_solving(a, n) {
            Err(Unsolvable::IllConditioned { condition: c }) => {
                assert!((c / condition(1e-11) - 1.0).abs() < 0.01, "{c:e}")
            }
            other => panic!("expected IllConditioned, got {:?}", other.map(|f| f.n())),
        }
        // δ = 1e-6: condition 1e8, solved to 1e-7.
        let a = collinear(1e-6);
        let factor = Cholesky::new(&a, n).unwrap();
        assert!((factor.condition_estimate() / condition(1e-6) - 1.0).abs() < 0.01);
        assert!(relative_error(&factor.solve(&times(&a, &x)), &x) < 1e-7);

        // A matrix with no entries is solved (to nothing).
        let empty = Cholesky::new(&[], 0).unwrap();
        assert_eq!(empty.condition_estimate(), 0.0);
        assert!(empty.solve(&[]).is_empty());
    }

    /// The estimate never exceeds the condition number and comes within a small factor of it,
    /// row by row and in panels (whose factor it reads the same way).
    #[test]
    fn the_condition_estimate_bounds_the_condition_from_below_closely() {
        let n = 45;
        let a = spd(n);
        for panel in [n, 8] {
            let factor = Cholesky::factor(a.clone(), n, 0.0, panel, 2).unwrap();
            let (estimate, exact) = (factor.condition_estimate(), exact_condition(&a, &factor));
            assert!(
                estimate <= exact * (1.0 + 1e-9) && estimate >= exact / 3.0,
                "panel {panel}: {estimate} vs {exact}"
            );
        }
        // A diagonal matrix: exactly its largest entry over its smallest.
        let diagonal: Vec<f64> = (0..16)
            .map(|at| {
                if at / 4 == at % 4 {
                    [4.0, 1e-3, 2.0, 8.0][at / 4]
                } else {
                    0.0
                }
            })
            .collect();
        let factor = Cholesky::new(&diagonal, 4).unwrap();
        assert!((factor.condition_estimate() / 8e3 - 1.0).abs() < 1e-12);
    }

    /// A symmetric positive definite matrix of order `n`, full: a Gram matrix plus the identity.
    fn spd(n: usize) -> Vec<f64> {
        let x: Vec<f64> = (0..n * n)
            .map(|i| ((i * 7 + 3) % 11) as f64 / 11.0 - 0.4)
            .collect();
        (0..n * n)
            .map(|at| {
                let (i, j) = (at / n, at % n);
                dot::<f64, 4>(&x[i * n..(i + 1) * n], &x[j * n..(j + 1) * n])
                    + f64::from(u8::from(i == j))
            })
            .collect()
    }

    /// Panels narrower than the matrix (several, the last one short), on one and on several
    /// threads, give the row-by-row factor and inverse to rounding.
    #[test]
    fn panels_on_threads_equal_row_by_row() {
        let n = 45;
        let a = spd(n);
        let rows = Cholesky::factor(a.clone(), n, 0.0, n, 1).unwrap();
        let inverse = rows.inverse(n, 1);
        // Threads only share the work out: every count gives the same bits.
        let one_thread = Cholesky::factor(a.clone(), n, 0.0, 8, 1).unwrap();
        let three = Cholesky::factor(a.clone(), n, 0.0, 8, 3).unwrap();
        assert_eq!(one_thread.lower(), three.lower());
        assert_eq!(one_thread.inverse(8, 1), one_thread.inverse(8, 3));
        for (panel, threads) in [(8, 1), (8, 3), (16, 4), (44, 2)] {
            let blocked = Cholesky::factor(a.clone(), n, 0.0, panel, threads).unwrap();
            for (x, y) in blocked.lower().iter().zip(rows.lower()) {
                assert!((x - y).abs() < 1e-12, "factor, panel {panel}: {x} vs {y}");
            }
            for (x, y) in rows.inverse(panel, threads).iter().zip(&inverse) {
                assert!((x - y).abs() < 1e-12, "inverse, panel {panel}: {x} vs {y}");
            }
        }
        // A pivot refused in a later panel is the same pivot.
        let mut singular = a.clone();
        for j in 0..n {
            singular[30 * n + j] = singular[29 * n + j];
            singular[j * n + 30] = singular[j * n + 29];
        }
        let refused = |panel, threads| {
            Cholesky::factor(singular.clone(), n, 1e-9, panel, threads)
                .err()
                .map(|e| e.pivot)
        };
        assert_eq!(refused(n, 1), Some(30));
        assert_eq!(refused(8, 3), Some(30));
    }

    /// Past the order where the panels start, through the public calls: `L Lᵀ = A`,
    /// `L · L⁻¹ = I` and zeros above the diagonal, on sampled entries.
    #[test]
    fn blocked_from_its_threshold() {
        let n = BLOCKED_FROM + 37;
        let a = spd(n);
        let factor = Cholesky::new(&a, n).unwrap();
        let (l, inv) = (factor.lower(), factor.lower_inverse(0));
        for (i, j) in [
            (0, 0),
            (5, 3),
            (700, 129),
            (n - 1, 0),
            (n - 1, n - 1),
            (n - 2, 1000),
        ] {
            let llt = dot::<f64, 4>(&l[i * n..(i + 1) * n], &l[j * n..(j + 1) * n]);
            assert!((llt - a[i * n + j]).abs() < 1e-8, "({i}, {j}): {llt}");
            let identity: f64 = (0..n).map(|k| l[i * n + k] * inv[k * n + j]).sum();
            let expected = f64::from(u8::from(i == j));
            assert!((identity - expected).abs() < 1e-9, "({i}, {j}): {identity}");
            if j < i {
                assert_eq!((l[j * n + i], inv[j * n + i]), (0.0, 0.0), "({j}, {i})");
            }
        }
    }
}
