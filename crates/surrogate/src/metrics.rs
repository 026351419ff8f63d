//! How well a surrogate predicts masks it was not fitted on: R², Spearman rank correlation and
//! mean absolute error over seeded k-fold cross-validation.

use layerprune_core::Mask;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{check_training_data, fit, FitOptions, Surrogate, SurrogateError, SurrogateKind};

/// Scores of one fold (or, with `fold` = −1, their mean; see [`mean_over_folds`]).
#[derive(Clone, Debug, PartialEq)]
pub struct FoldMetrics {
    pub fold: i32,
    pub r2: f64,
    pub spearman: f64,
    pub mae: f64,
    pub n_train: usize,
    pub n_test: usize,
}

/// Coefficient of determination 1 − SS_res / SS_tot; NaN when the truth is constant (there is
/// no variance to explain) or empty.
pub fn r2_score(truth: &[f64], predicted: &[f64]) -> f64 {
    assert_eq!(truth.len(), predicted.len(), "r2_score: lengths differ");
    if truth.is_empty() {
        return f64::NAN;
    }
    let mean = truth.iter().sum::<f64>() / truth.len() as f64;
    let total: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
    let residual: f64 = truth
        .iter()
        .zip(predicted)
        .map(|(t, p)| (t - p).powi(2))
        .sum();
    if total == 0.0 {
        f64::NAN
    } else {
        1.0 - residual / total
    }
}

/// Mean absolute error; NaN for no rows.
pub fn mae(truth: &[f64], predicted: &[f64]) -> f64 {
    assert_eq!(truth.len(), predicted.len(), "mae: lengths differ");
    if truth.is_empty() {
        return f64::NAN;
    }
    truth
        .iter()
        .zip(predicted)
        .map(|(t, p)| (t - p).abs())
        .sum::<f64>()
        / truth.len() as f64
}

/// Ranks 1..n, tied values sharing the average of the ranks they span.
fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end hold ranks start+1..=end; their mean is (start+1+end)/2.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &index in &order[start..end] {
            ranks[index] = rank;
        }
        start = end;
    }
    ranks
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let mean_a = a.iter().sum::<f64>() / n;
    let mean_b = b.iter().sum::<f64>() / n;
    let (mut cov, mut var_a, mut var_b) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        cov += (x - mean_a) * (y - mean_b);
        var_a += (x - mean_a).powi(2);
        var_b += (y - mean_b).powi(2);
    }
    if var_a == 0.0 || var_b == 0.0 {
        f64::NAN
    } else {
        cov / (var_a * var_b).sqrt()
    }
}

/// Spearman rank correlation (Pearson correlation of average ranks); NaN when either side is
/// constant or there are fewer than two rows.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "spearman: lengths differ");
    if a.len() < 2 {
        return f64::NAN;
    }
    pearson(&average_ranks(a), &average_ranks(b))
}

/// The fold (0..folds) of each of `rows` rows: a seeded shuffle cut into `folds` parts whose
/// sizes differ by at most one. The same (rows, folds, seed) always gives the same split.
pub fn fold_assignment(rows: usize, folds: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut fold_of = vec![0; rows];
    for (position, &row) in order.iter().enumerate() {
        fold_of[row] = position * folds / rows.max(1);
    }
    fold_of
}

/// Fits `kind` `folds` times, each time on all rows but one fold, and scores the predictions
/// on the held-out fold. Folds come from [`fold_assignment`] with `options.seed`.
pub fn cross_validate(
    kind: SurrogateKind,
    masks: &[Mask],
    targets: &[f64],
    folds: usize,
    options: &FitOptions,
) -> Result<Vec<FoldMetrics>, SurrogateError> {
    check_training_data(masks, targets)?;
    if folds < 2 || masks.len() < 2 * folds {
        return Err(SurrogateError::TooFewRowsForFolds {
            rows: masks.len(),
            folds,
        });
    }
    let fold_of = fold_assignment(masks.len(), folds, options.seed);
    (0..folds)
        .map(|fold| {
            let (mut train_masks, mut train_targets) = (Vec::new(), Vec::new());
            let (mut test_masks, mut test_targets) = (Vec::new(), Vec::new());
            for (row, mask) in masks.iter().enumerate() {
                if fold_of[row] == fold {
                    test_masks.push(mask.clone());
                    test_targets.push(targets[row]);
                } else {
                    train_masks.push(mask.clone());
                    train_targets.push(targets[row]);
                }
            }
            let model = fit(kind, &train_masks, &train_targets, options)?;
            let predicted = model.predict(&test_masks);
            Ok(FoldMetrics {
                fold: fold as i32,
                r2: r2_score(&test_targets, &predicted),
                spearman: spearman(&test_targets, &predicted),
                mae: mae(&test_targets, &predicted),
                n_train: train_masks.len(),
                n_test: test_masks.len(),
            })
        })
        .collect()
}

/// The mean of each score over the folds, as a row with `fold` = −1 (row counts are rounded
/// means). None for no folds.
pub fn mean_over_folds(folds: &[FoldMetrics]) -> Option<FoldMetrics> {
    if folds.is_empty() {
        return None;
    }
    let count = folds.len() as f64;
    let mean = |score: fn(&FoldMetrics) -> f64| folds.iter().map(score).sum::<f64>() / count;
    Some(FoldMetrics {
        fold: -1,
        r2: mean(|f| f.r2),
        spearman: mean(|f| f.spearman),
        mae: mean(|f| f.mae),
        n_train: mean(|f| f.n_train as f64).round() as usize,
        n_test: mean(|f| f.n_test as f64).round() as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_on_known_cases() {
        let truth = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(r2_score(&truth, &truth), 1.0);
        // Predicting the mean everywhere explains nothing.
        assert_eq!(r2_score(&truth, &[2.5; 4]), 0.0);
        assert!(r2_score(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
        assert_eq!(mae(&truth, &[1.0, 3.0, 3.0, 2.0]), 0.75);
        // Any monotone transform has Spearman 1; reversal has −1.
        assert!((spearman(&truth, &[1.0, 8.0, 27.0, 64.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&truth, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
    }

    #[test]
    fn ties_get_average_ranks() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 10.0, 30.0]),
            vec![1.5, 3.0, 1.5, 4.0]
        );
        // scipy.stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4]) = 0.9486832980505138
        let rho = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]);
        assert!((rho - 0.9486832980505138).abs() < 1e-12, "{rho}");
    }

    #[test]
    fn folds_are_balanced_and_seeded() {
        let folds = fold_assignment(23, 5, 7);
        let mut sizes = [0; 5];
        for &f in &folds {
            sizes[f] += 1;
        }
        assert!(sizes.iter().all(|&s| s == 4 || s == 5), "{sizes:?}");
        assert_eq!(folds, fold_assignment(23, 5, 7));
        assert_ne!(folds, fold_assignment(23, 5, 8));
    }

    #[test]
    fn too_few_rows_for_the_folds_is_an_error() {
        let masks = vec![Mask::full(2); 5];
        let err = cross_validate(
            SurrogateKind::Quadratic,
            &masks,
            &[1.0; 5],
            3,
            &FitOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            SurrogateError::TooFewRowsForFolds { rows: 5, folds: 3 }
        ));
    }

    #[test]
    fn mean_row_averages_scores() {
        let row = |fold, r2| FoldMetrics {
            fold,
            r2,
            spearman: 0.5,
            mae: 1.0,
            n_train: 8,
            n_test: 2,
        };
        let mean = mean_over_folds(&[row(0, 0.2), row(1, 0.4)]).unwrap();
        assert_eq!(mean.fold, -1);
        assert!((mean.r2 - 0.3).abs() < 1e-12);
        assert_eq!((mean.n_train, mean.n_test), (8, 2));
        assert!(mean_over_folds(&[]).is_none());
    }
}
