//! Contexts and continuations to token ids the way lm-eval-harness 0.4 does it
//! (`HFLM._encode_pair`), and the seeded question subsample.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::task::{is_python_space, Question, Task};
use crate::TaskError;

/// Text → token ids, with no special tokens (a BOS, where wanted, is put before the context
/// by [`encode_question`]).
pub trait Encode {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String>;
}

impl Encode for layerprune_data::TokenizerFile {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        layerprune_data::TokenizerFile::encode(self, text).map_err(|e| e.to_string())
    }
}

/// One choice as token ids: the model reads `context ++ continuation` and the continuation's
/// tokens are scored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedChoice {
    pub context: Vec<u32>,
    pub continuation: Vec<u32>,
    pub norm_chars: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedQuestion {
    pub row: usize,
    pub gold: usize,
    pub choices: Vec<EncodedChoice>,
}

/// lm-eval's pair encoding: trailing whitespace (Python's `str.isspace`, U+001C–U+001F
/// included) of the context moves to the continuation, the whole text is encoded once, and the
/// continuation is whatever follows the context's own encoding. So a word boundary merged by the tokenizer is scored as the continuation's.
pub fn encode_pair(
    tokenizer: &dyn Encode,
    context: &str,
    continuation: &str,
) -> Result<(Vec<u32>, Vec<u32>), String> {
    // Python's `rstrip`, as lm-eval's: a few characters it strips `str::trim_end` keeps.
    let trimmed = context.trim_end_matches(is_python_space);
    let moved = &context[trimmed.len()..];
    let continuation = format!("{moved}{continuation}");
    let whole = tokenizer.encode(&format!("{trimmed}{continuation}"))?;
    let context_ids = tokenizer.encode(trimmed)?;
    if context_ids.is_empty() {
        return Err("the context is empty".into());
    }
    if whole.len() <= context_ids.len() {
        return Err(format!(
            "the continuation {continuation:?} encodes to no tokens"
        ));
    }
    let continuation_ids = whole[context_ids.len()..].to_vec();
    Ok((context_ids, continuation_ids))
}

/// Every choice of `question` encoded, each context after `prefix` (the BOS the model wants
/// first, as lm-eval encodes with the tokenizer's own special tokens: `layerprune_data::Bos`;
/// empty for none).
pub fn encode_question(
    task: Task,
    question: &Question,
    tokenizer: &dyn Encode,
    prefix: &[u32],
) -> Result<EncodedQuestion, TaskError> {
    let choices = question
        .choices
        .iter()
        .map(|choice| {
            let (context, continuation) =
                encode_pair(tokenizer, &choice.context, &choice.continuation).map_err(
                    |message| TaskError::Tokenizer {
                        task: task.name().to_string(),
                        row: question.row,
                        message,
                    },
                )?;
            Ok(EncodedChoice {
                context: prefix.iter().copied().chain(context).collect(),
                continuation,
                norm_chars: choice.norm_chars,
            })
        })
        .collect::<Result<Vec<_>, TaskError>>()?;
    Ok(EncodedQuestion {
        row: question.row,
        gold: question.gold,
        choices,
    })
}

/// The rows of a seeded subsample of `size` questions out of `total` (all of them when `size`
/// is 0 or at least `total`), ascending. The draw depends on the seed and the task only, so
/// every model and mask is judged on the same questions.
pub fn subsample(task: Task, total: usize, size: usize, seed: u64) -> Vec<usize> {
    if size == 0 || size >= total {
        return (0..total).collect();
    }
    let digest = layerprune_core::sha256_hex(format!("{}:{seed}", task.name()).as_bytes());
    let task_seed = u64::from_str_radix(&digest[..16], 16).unwrap_or(seed);
    let mut rng = ChaCha8Rng::seed_from_u64(task_seed);
    let mut rows: Vec<usize> = (0..total).collect();
    // Partial Fisher–Yates: the first `size` places hold a uniform draw without replacement.
    for i in 0..size {
        let j = rng.random_range(i..total);
        rows.swap(i, j);
    }
    rows.truncate(size);
    rows.sort_unstable();
    rows
}

/// hex sha256 over every task's name and every encoded choice (row, gold, context and
/// continuation ids, normalisation length): the `dataset_id` of a task evaluation, so a run
/// resumes only on the same questions with the same tokens.
pub fn requests_id(tasks: &[(Task, Vec<EncodedQuestion>)]) -> String {
    let mut bytes = Vec::new();
    let mut put = |value: u64| bytes.extend_from_slice(&value.to_le_bytes());
    // Since 2026-12-06 the normalisation length counts characters, as lm-eval does (UTF-8
    // bytes before): a run scored before is not resumed as if it were the same requests.
    b"norm_chars".iter().for_each(|&byte| put(u64::from(byte)));
    for (task, questions) in tasks {
        for byte in task.name().bytes() {
            put(u64::from(byte));
        }
        put(questions.len() as u64);
        for question in questions {
            put(question.row as u64);
            put(question.gold as u64);
            put(question.choices.len() as u64);
            for choice in &question.choices {
                put(choice.norm_chars as u64);
                put(choice.context.len() as u64);
                choice.context.iter().for_each(|&id| put(u64::from(id)));
                put(choice.continuation.len() as u64);
                choice
                    .continuation
                    .iter()
                    .for_each(|&id| put(u64::from(id)));
            }
        }
    }
    layerprune_core::sha256_hex(&bytes)
}
