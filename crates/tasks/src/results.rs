//! From a log of per-choice log-likelihoods (what a run of the model writes, one entry per
//! mask, task, question and choice) to per-task scores and accuracy lines: the pure half of
//! `evaluate --tasks`, which writes these as tables.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use layerprune_core::Mask;

use crate::encode::EncodedQuestion;
use crate::metrics::{mean_of_tasks, score_task, Interval, TaskScore};
use crate::task::Task;

/// Which accuracy is a mask's value (its `utility`, relative to the full model's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskMetric {
    /// The share of questions whose right choice has the largest log-likelihood.
    Acc,
    /// The same with each log-likelihood divided by its choice's length in characters, as
    /// lm-eval counts it ([`crate::Choice::norm_chars`]).
    AccNorm,
}

impl TaskMetric {
    /// The name on the command line: `acc` or `acc_norm`.
    pub fn name(self) -> &'static str {
        match self {
            TaskMetric::Acc => "acc",
            TaskMetric::AccNorm => "acc_norm",
        }
    }

    /// (right, questions) of one task's score under this metric.
    pub fn of(self, score: &TaskScore) -> (usize, usize) {
        match self {
            TaskMetric::Acc => (score.acc_correct, score.questions),
            TaskMetric::AccNorm => (score.acc_norm_correct, score.questions),
        }
    }

    /// The unweighted mean over the tasks of this metric, with its interval (its estimate is
    /// a mask's value under this metric).
    pub fn mean(self, scores: &[TaskScore]) -> Interval {
        mean_of_tasks(&scores.iter().map(|s| self.of(s)).collect::<Vec<_>>())
    }
}

impl fmt::Display for TaskMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TaskMetric {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "acc" => Ok(TaskMetric::Acc),
            "acc_norm" | "acc-norm" => Ok(TaskMetric::AccNorm),
            _ => Err(format!("unknown task metric {text:?} (acc or acc_norm)")),
        }
    }
}

/// The right choices' −Σ log-likelihood and token count, pooled over the tasks.
pub fn pooled_nll(scores: &[TaskScore]) -> (f64, u64) {
    (
        scores.iter().map(|s| s.gold_nll_sum).sum(),
        scores.iter().map(|s| s.gold_tokens).sum(),
    )
}

/// The pooled NLL per token of the right choices (0 tokens count as 1).
pub fn mean_gold_nll(scores: &[TaskScore]) -> f64 {
    let (sum, tokens) = pooled_nll(scores);
    sum / tokens.max(1) as f64
}

/// Log-likelihoods of each question's choices, by (task, question row); `None` for a choice
/// the log has no entry of.
type Logliks = HashMap<(Task, usize), Vec<Option<f64>>>;

/// One entry of a choice log: the log-likelihood of choice `choice` of the question in row
/// `question` of task `task` (a task's name) under `mask`.
#[derive(Clone, Copy, Debug)]
pub struct ChoiceLoglik<'a> {
    pub mask: &'a Mask,
    pub task: &'a str,
    pub question: usize,
    pub choice: usize,
    pub loglik: f64,
}

/// Per-task scores of every mask of `log` that has an entry for every choice of every task
/// of `encoded` (a checkpoint also holds masks part of whose tasks are done), in the order
/// of the masks' first entries; each mask's scores are in the order of `encoded`. Entries of
/// tasks not in `encoded` are ignored (but count towards a mask's entries). A mask with as
/// many entries as choices but not one for each (a choice twice and another missing, a
/// question or choice the questions lack: a log edited or joined by hand) is not scored,
/// as a mask with entries missing is not.
pub fn scores_by_mask<'a>(
    encoded: &[(Task, Vec<EncodedQuestion>)],
    log: impl IntoIterator<Item = ChoiceLoglik<'a>>,
) -> Vec<(Mask, Vec<TaskScore>)> {
    let log: Vec<ChoiceLoglik<'a>> = log.into_iter().collect();
    let choices_per_mask: usize = encoded
        .iter()
        .flat_map(|(_, qs)| qs.iter().map(|q| q.choices.len()))
        .sum();
    let mut entries_per_mask: HashMap<&Mask, usize> = HashMap::new();
    for entry in &log {
        *entries_per_mask.entry(entry.mask).or_default() += 1;
    }
    // Entries per mask → log-likelihoods per (task, question row), choices in order.
    let mut by_mask: Vec<(Mask, Logliks)> = Vec::new();
    let mut index: HashMap<&Mask, usize> = HashMap::new();
    let task_of: HashMap<&str, Task> = encoded.iter().map(|(t, _)| (t.name(), *t)).collect();
    for entry in log
        .iter()
        .filter(|e| entries_per_mask.get(e.mask) == Some(&choices_per_mask))
    {
        let Some(&task) = task_of.get(entry.task) else {
            continue;
        };
        let slot = *index.entry(entry.mask).or_insert_with(|| {
            by_mask.push((entry.mask.clone(), HashMap::new()));
            by_mask.len() - 1
        });
        let lls = by_mask[slot].1.entry((task, entry.question)).or_default();
        if lls.len() <= entry.choice {
            lls.resize(entry.choice + 1, None);
        }
        lls[entry.choice] = Some(entry.loglik);
    }
    by_mask
        .into_iter()
        .filter_map(|(mask, logliks)| {
            let scores = encoded
                .iter()
                .map(|(task, questions)| {
                    let lls: Option<Vec<Vec<f64>>> = questions
                        .iter()
                        .map(|q| every_choice(logliks.get(&(*task, q.row))?, q.choices.len()))
                        .collect();
                    Some(score_task(questions, &lls?))
                })
                .collect::<Option<Vec<TaskScore>>>()?;
            Some((mask, scores))
        })
        .collect()
}

/// The log-likelihoods of a question's `choices` choices, when the log has one for each and
/// none for a choice past them.
fn every_choice(lls: &[Option<f64>], choices: usize) -> Option<Vec<f64>> {
    if lls.len() != choices {
        return None;
    }
    lls.iter().copied().collect()
}

/// One mask's accuracies on one task (or their mean over the tasks).
#[derive(Clone, Debug, PartialEq)]
pub struct AccuracyLine {
    /// The task's name, or `mean`.
    pub task: String,
    pub questions: u32,
    pub acc: Interval,
    pub acc_norm: Interval,
    /// Mean NLL per token of the right choices' continuations, nats.
    pub gold_nll: f64,
    pub gold_tokens: u64,
}

/// A mask's accuracy lines: one per task (`scores` in the order of `tasks`), then `mean`,
/// the unweighted mean over the tasks (and the right choices' NLL pooled over them).
pub fn accuracy_lines(tasks: &[Task], scores: &[TaskScore]) -> Vec<AccuracyLine> {
    let line =
        |task: &str, questions: u32, acc, acc_norm, (nll_sum, tokens): (f64, u64)| AccuracyLine {
            task: task.to_string(),
            questions,
            acc,
            acc_norm,
            gold_nll: nll_sum / tokens.max(1) as f64,
            gold_tokens: tokens,
        };
    let mut lines: Vec<AccuracyLine> = tasks
        .iter()
        .zip(scores)
        .map(|(task, score)| {
            line(
                task.name(),
                score.questions as u32,
                score.acc(),
                score.acc_norm(),
                (score.gold_nll_sum, score.gold_tokens),
            )
        })
        .collect();
    lines.push(line(
        "mean",
        scores.iter().map(|s| s.questions as u32).sum(),
        TaskMetric::Acc.mean(scores),
        TaskMetric::AccNorm.mean(scores),
        pooled_nll(scores),
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::EncodedChoice;

    fn question(row: usize, gold: usize, choices: usize) -> EncodedQuestion {
        EncodedQuestion {
            row,
            gold,
            choices: (0..choices)
                .map(|c| EncodedChoice {
                    context: vec![1],
                    continuation: vec![2; c + 1],
                    norm_chars: 4 * (c + 1),
                })
                .collect(),
        }
    }

    #[test]
    fn only_masks_with_every_choice_are_scored_in_first_seen_order() {
        let encoded = vec![
            (Task::Piqa, vec![question(3, 0, 2), question(7, 1, 2)]),
            (Task::Boolq, vec![question(0, 1, 2)]),
        ];
        let a: Mask = "11".parse().unwrap();
        let b: Mask = "10".parse().unwrap();
        let mut log = Vec::new();
        for (mask, skip_last) in [(&b, false), (&a, true)] {
            for (task, q, c, ll) in [
                ("piqa", 3, 0, -1.0),
                ("piqa", 3, 1, -2.0),
                ("piqa", 7, 0, -1.0),
                ("piqa", 7, 1, -3.0),
                ("boolq", 0, 0, -5.0),
                ("boolq", 0, 1, -4.0),
            ] {
                if !(skip_last && task == "boolq" && c == 1) {
                    log.push(ChoiceLoglik {
                        mask,
                        task,
                        question: q,
                        choice: c,
                        loglik: ll,
                    });
                }
            }
        }
        let scores = scores_by_mask(&encoded, log);
        assert_eq!(scores.len(), 1, "mask 11 is one choice short");
        let (mask, scores) = &scores[0];
        assert_eq!(mask, &b);
        assert_eq!((scores[0].questions, scores[0].acc_correct), (2, 1));
        assert_eq!((scores[1].questions, scores[1].acc_correct), (1, 1));
        assert_eq!(scores[0].gold_nll_sum, 1.0 + 3.0);
        let lines = accuracy_lines(&[Task::Piqa, Task::Boolq], scores);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2].task, "mean");
        assert_eq!(lines[2].questions, 3);
        assert!((lines[2].acc.estimate - 0.75).abs() < 1e-12);
        assert_eq!(lines[2].gold_tokens, 1 + 2 + 2);
        assert!((lines[2].gold_nll - 8.0 / 5.0).abs() < 1e-12);
        assert!((mean_gold_nll(scores) - 8.0 / 5.0).abs() < 1e-12);
        assert_eq!(TaskMetric::Acc.mean(scores).estimate, 0.75);
        assert_eq!("acc_norm".parse::<TaskMetric>(), Ok(TaskMetric::AccNorm));
    }

    #[test]
    fn a_mask_with_as_many_entries_as_choices_but_not_one_each_is_not_scored() {
        // Before, such a log was scored with a missing choice as NaN or a choice past the
        // question's as a candidate, or panicked (index out of bounds) on a question with no
        // entry at all.
        let encoded = vec![(Task::Piqa, vec![question(3, 1, 2), question(7, 0, 2)])];
        let mask: Mask = "10".parse().unwrap();
        let entry = |question, choice| ChoiceLoglik {
            mask: &mask,
            task: "piqa",
            question,
            choice,
            loglik: -1.0 - choice as f64,
        };
        let complete = [entry(3, 0), entry(3, 1), entry(7, 0), entry(7, 1)];
        assert_eq!(scores_by_mask(&encoded, complete).len(), 1);
        for log in [
            // A choice twice, another question's missing.
            [entry(3, 0), entry(3, 1), entry(3, 1), entry(7, 1)],
            // A question the questions lack, in place of one they have.
            [entry(3, 0), entry(3, 1), entry(9, 0), entry(9, 1)],
            // A choice past the question's two.
            [entry(3, 0), entry(3, 2), entry(7, 0), entry(7, 1)],
        ] {
            assert!(scores_by_mask(&encoded, log).is_empty(), "{log:?}");
        }
    }
}
