//! From per-choice log-likelihoods to accuracies with 95 % intervals.

use crate::encode::EncodedQuestion;

/// z of a two-sided 95 % normal interval.
pub const Z95: f64 = 1.959963984540054;

/// The index of the largest value, the first on ties (numpy's `argmax`, as lm-eval picks).
/// NaN never wins.
pub fn argmax_first(values: &[f64]) -> usize {
    let mut best = 0;
    for (index, &value) in values.iter().enumerate() {
        if value > values[best] || (values[best].is_nan() && !value.is_nan()) {
            best = index;
        }
    }
    best
}

/// A proportion with its 95 % interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

/// Wilson's score interval for `correct` out of `total` (sensible at 0 and 1, unlike the
/// normal interval lm-eval's standard error implies).
pub fn wilson(correct: usize, total: usize) -> Interval {
    if total == 0 {
        return Interval {
            estimate: f64::NAN,
            low: f64::NAN,
            high: f64::NAN,
        };
    }
    let n = total as f64;
    let p = correct as f64 / n;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Interval {
        estimate: p,
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    }
}

/// One task's result for one model or mask.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskScore {
    pub questions: usize,
    pub acc_correct: usize,
    pub acc_norm_correct: usize,
    /// −Σ log p of the right choices' continuations, and how many tokens they have.
    pub gold_nll_sum: f64,
    pub gold_tokens: u64,
}

impl TaskScore {
    pub fn acc(&self) -> Interval {
        wilson(self.acc_correct, self.questions)
    }

    pub fn acc_norm(&self) -> Interval {
        wilson(self.acc_norm_correct, self.questions)
    }
}

/// Scores questions from `logliks[q][c]`, the log-likelihood of choice c of question q (one
/// for each of its choices). acc picks the largest log-likelihood, acc_norm the largest per
/// character of the choice ([`crate::Choice::norm_chars`], as lm-eval divides).
pub fn score_task(questions: &[EncodedQuestion], logliks: &[Vec<f64>]) -> TaskScore {
    let mut score = TaskScore {
        questions: questions.len(),
        acc_correct: 0,
        acc_norm_correct: 0,
        gold_nll_sum: 0.0,
        gold_tokens: 0,
    };
    for (question, lls) in questions.iter().zip(logliks) {
        if argmax_first(lls) == question.gold {
            score.acc_correct += 1;
        }
        let normed: Vec<f64> = lls
            .iter()
            .zip(&question.choices)
            .map(|(ll, choice)| ll / choice.norm_chars.max(1) as f64)
            .collect();
        if argmax_first(&normed) == question.gold {
            score.acc_norm_correct += 1;
        }
        score.gold_nll_sum -= lls[question.gold];
        score.gold_tokens += question.choices[question.gold].continuation.len() as u64;
    }
    score
}

/// The unweighted mean of per-task proportions (as the published tables average tasks), with
/// a 95 % normal interval from the tasks' independent binomial variances.
pub fn mean_of_tasks(proportions: &[(usize, usize)]) -> Interval {
    let tasks = proportions.len() as f64;
    if proportions.is_empty() || proportions.iter().any(|&(_, n)| n == 0) {
        return wilson(0, 0);
    }
    let mean = proportions
        .iter()
        .map(|&(correct, n)| correct as f64 / n as f64)
        .sum::<f64>()
        / tasks;
    let variance = proportions
        .iter()
        .map(|&(correct, n)| {
            let p = correct as f64 / n as f64;
            p * (1.0 - p) / n as f64
        })
        .sum::<f64>()
        / (tasks * tasks);
    let half = Z95 * variance.sqrt();
    Interval {
        estimate: mean,
        low: (mean - half).max(0.0),
        high: (mean + half).min(1.0),
    }
}
