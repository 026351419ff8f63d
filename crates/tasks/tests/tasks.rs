//! Task files → questions in lm-eval's format, encoding, subsampling and scoring, on small
//! synthetic Arrow files written here; and the refusals of bad task files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, BooleanArray, Int64Array, StringArray, StructArray};
use arrow_schema::{Field, Fields};
use layerprune_tasks::{
    argmax_first, capitalize, encode_pair, encode_question, hellaswag_preprocess, load_encoded,
    mean_of_tasks, parse_task_list, requests_id, score_task, subsample, wilson, write_arrow_stream,
    Encode, EncodedChoice, EncodedQuestion, Task, TaskError,
};

fn write_stream(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    write_arrow_stream(path, columns).unwrap();
}

fn strings(values: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

fn string_lists(rows: &[Option<Vec<&str>>]) -> ArrayRef {
    let mut builder = ListBuilder::new(StringBuilder::new());
    for row in rows {
        match row {
            Some(items) => {
                for item in items {
                    builder.values().append_value(item);
                }
                builder.append(true);
            }
            None => builder.append(false),
        }
    }
    Arc::new(builder.finish())
}

/// HF's `Sequence({"text": ..., "label": ...})`: a struct of two string lists.
fn choices(rows: &[(Vec<&str>, Vec<&str>)]) -> ArrayRef {
    let texts = string_lists(&rows.iter().map(|r| Some(r.0.clone())).collect::<Vec<_>>());
    let labels = string_lists(&rows.iter().map(|r| Some(r.1.clone())).collect::<Vec<_>>());
    let fields = Fields::from(vec![
        Field::new("text", texts.data_type().clone(), true),
        Field::new("label", labels.data_type().clone(), true),
    ]);
    Arc::new(StructArray::new(fields, vec![texts, labels], None))
}

fn path_of(dir: &Path, task: Task) -> PathBuf {
    task.path_in(dir)
}

/// One small file per task in the wheel's layout.
fn write_all_tasks(dir: &Path) {
    write_stream(
        &path_of(dir, Task::Piqa),
        vec![
            ("goal", strings(&["Open a jar", "Dry a shirt"])),
            ("sol1", strings(&["Twist the lid.", "Put it in water."])),
            ("sol2", strings(&["Hit it.", "Hang it in the sun."])),
            ("label", Arc::new(Int64Array::from(vec![0, 1]))),
        ],
    );
    write_stream(
        &path_of(dir, Task::Hellaswag),
        vec![
            ("activity_label", strings(&["Roof shingle removal"])),
            ("ctx_a", strings(&["A man is sitting on a roof."])),
            ("ctx_b", strings(&["HE"])),
            (
                "endings",
                string_lists(&[Some(vec![
                    "is using wrap [header] to wrap skis.",
                    "is ripping  tiles off.",
                    " starts [title] pulling up roofing.",
                    "sits.",
                ])]),
            ),
            ("label", strings(&["3"])),
        ],
    );
    write_stream(
        &path_of(dir, Task::Winogrande),
        vec![
            (
                "sentence",
                strings(&["Sarah was better than Maria so _ got the easy cases."]),
            ),
            ("option1", strings(&["Sarah"])),
            ("option2", strings(&["Maria"])),
            ("answer", strings(&["2"])),
        ],
    );
    for task in [Task::ArcEasy, Task::ArcChallenge] {
        write_stream(
            &path_of(dir, task),
            vec![
                ("question", strings(&["Which is a gas?", "Pick two"])),
                (
                    "choices",
                    choices(&[
                        (vec!["ice", "steam", "rock"], vec!["A", "B", "C"]),
                        (vec!["one", "two"], vec!["1", "2"]),
                    ]),
                ),
                ("answerKey", strings(&["B", "2"])),
            ],
        );
    }
    write_stream(
        &path_of(dir, Task::Boolq),
        vec![
            ("question", strings(&["is water wet"])),
            ("answer", Arc::new(BooleanArray::from(vec![true]))),
            ("passage", strings(&["Water is a liquid."])),
        ],
    );
    write_stream(
        &path_of(dir, Task::Openbookqa),
        vec![
            ("question_stem", strings(&["The sun is"])),
            (
                "choices",
                choices(&[(vec!["a star", "a planet"], vec!["A", "B"])]),
            ),
            ("answerKey", strings(&[" A"])),
        ],
    );
}

#[test]
fn every_task_is_read_in_lm_eval_format() {
    let dir = tempfile::tempdir().unwrap();
    write_all_tasks(dir.path());
    let load = |task: Task| task.load(&path_of(dir.path(), task)).unwrap();

    let piqa = load(Task::Piqa);
    assert_eq!(piqa.len(), 2);
    assert_eq!(piqa[1].choices[0].context, "Question: Dry a shirt\nAnswer:");
    assert_eq!(piqa[1].choices[1].continuation, " Hang it in the sun.");
    assert_eq!(piqa[1].choices[1].norm_chars, "Hang it in the sun.".len());
    assert_eq!((piqa[0].gold, piqa[1].gold), (0, 1));

    let hellaswag = load(Task::Hellaswag);
    let q = &hellaswag[0];
    assert_eq!(
        q.choices[0].context,
        "Roof shingle removal: A man is sitting on a roof. He"
    );
    assert_eq!(q.choices[0].continuation, " is using wrap to wrap skis.");
    assert_eq!(q.choices[1].continuation, " is ripping tiles off.");
    assert_eq!(q.choices[2].continuation, " starts. pulling up roofing.");
    assert_eq!(q.gold, 3);

    let winogrande = load(Task::Winogrande);
    let q = &winogrande[0];
    assert_eq!(q.choices[0].context, "Sarah was better than Maria so Sarah");
    assert_eq!(q.choices[1].context, "Sarah was better than Maria so Maria");
    assert_eq!(q.choices[0].continuation, " got the easy cases.");
    assert_eq!(q.choices[1].continuation, q.choices[0].continuation);
    // acc_norm divides by lm-eval's choice string, here the option-substituted context.
    assert_eq!(q.choices[1].norm_chars, q.choices[1].context.len());
    assert_eq!(q.gold, 1);

    for task in [Task::ArcEasy, Task::ArcChallenge] {
        let arc = load(task);
        assert_eq!(arc[0].choices.len(), 3);
        assert_eq!(
            arc[0].choices[2].context,
            "Question: Which is a gas?\nAnswer:"
        );
        assert_eq!(arc[0].choices[1].continuation, " steam");
        assert_eq!((arc[0].gold, arc[1].gold), (1, 1));
    }

    let boolq = load(Task::Boolq);
    assert_eq!(
        boolq[0].choices[0].context,
        "Water is a liquid.\nQuestion: is water wet?\nAnswer:"
    );
    assert_eq!(boolq[0].choices[0].continuation, " no");
    assert_eq!(boolq[0].choices[1].continuation, " yes");
    assert_eq!(boolq[0].gold, 1);

    let obqa = load(Task::Openbookqa);
    assert_eq!(obqa[0].choices[0].context, "The sun is");
    assert_eq!(obqa[0].gold, 0);
}

fn error_text(result: Result<Vec<layerprune_tasks::Question>, TaskError>) -> String {
    result.expect_err("refused").to_string()
}

#[test]
fn bad_task_files_are_refused_naming_task_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    // A missing file.
    let missing = path_of(dir.path(), Task::Piqa);
    let message = error_text(Task::Piqa.load(&missing));
    assert!(
        message.contains("piqa") && message.contains("no such file"),
        "{message}"
    );
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );

    // A dangling symbolic link is not there either.
    #[cfg(unix)]
    {
        let dangling = dir.path().join("dangling.arrow");
        std::os::unix::fs::symlink(dir.path().join("gone.arrow"), &dangling).unwrap();
        let message = error_text(Task::Piqa.load(&dangling));
        assert!(message.contains("no such file"), "{message}");
    }

    // A file that is there but is not a regular file is said to be what it is, without the
    // advice to unpack the wheel (which would not help).
    let kinds = dir.path().join("kinds");
    let folder = path_of(&kinds.join("folder"), Task::Piqa);
    std::fs::create_dir_all(&folder).unwrap();
    let mut not_regular = vec![(folder, "is a folder, not a regular file")];
    #[cfg(unix)]
    {
        let fifo = path_of(&kinds.join("fifo"), Task::Piqa);
        std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
        layerprune_tests::make_fifo(&fifo);
        not_regular.push((fifo, "is a named pipe (FIFO), not a regular file"));
        let device = path_of(&kinds.join("device"), Task::Piqa);
        std::fs::create_dir_all(device.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/dev/null", &device).unwrap();
        not_regular.push((device, "is a device, not a regular file"));
    }
    for (path, kind) in not_regular {
        let shown = path.display().to_string();
        let message =
            layerprune_tests::within(std::time::Duration::from_secs(20), &shown, move || {
                error_text(Task::Piqa.load(&path))
            });
        assert!(
            message.contains("piqa") && message.contains(&shown) && message.contains(kind),
            "{message}"
        );
        assert!(
            !message.contains("no such file") && !message.contains("unpack"),
            "{message}"
        );
    }

    // A label out of range in row 1.
    let path = path_of(dir.path(), Task::Piqa);
    write_stream(
        &path,
        vec![
            ("goal", strings(&["a", "b"])),
            ("sol1", strings(&["c", "d"])),
            ("sol2", strings(&["e", "f"])),
            ("label", Arc::new(Int64Array::from(vec![1, 2]))),
        ],
    );
    let message = error_text(Task::Piqa.load(&path));
    assert!(message.starts_with("piqa: "), "{message}");
    assert!(
        message.contains(&format!(
            "{}: row 1: label 2 is out of range for 2 choices",
            path.display()
        )),
        "{message}"
    );

    // A row without a label (null), and a file without the label column.
    write_stream(
        &path,
        vec![
            ("goal", strings(&["a"])),
            ("sol1", strings(&["c"])),
            ("sol2", strings(&["e"])),
            ("label", Arc::new(Int64Array::from(vec![None]))),
        ],
    );
    let message = error_text(Task::Piqa.load(&path));
    assert!(
        message.contains("row 0: field \"label\" is null"),
        "{message}"
    );
    write_stream(
        &path,
        vec![
            ("goal", strings(&["a"])),
            ("sol1", strings(&["c"])),
            ("sol2", strings(&["e"])),
        ],
    );
    let message = error_text(Task::Piqa.load(&path));
    assert!(message.contains("row 0: no field \"label\""), "{message}");

    // HellaSwag rows without endings (null, or an empty list).
    let path = path_of(dir.path(), Task::Hellaswag);
    write_stream(
        &path,
        vec![
            ("activity_label", strings(&["x", "y"])),
            ("ctx_a", strings(&["a", "b"])),
            ("ctx_b", strings(&["c", "d"])),
            (
                "endings",
                string_lists(&[Some(vec!["e", "f"]), Some(vec![])]),
            ),
            ("label", strings(&["0", "0"])),
        ],
    );
    let message = error_text(Task::Hellaswag.load(&path));
    assert!(
        message.contains("hellaswag") && message.contains("row 1: 0 choice(s)"),
        "{message}"
    );
    write_stream(
        &path,
        vec![
            ("activity_label", strings(&["x"])),
            ("ctx_a", strings(&["a"])),
            ("ctx_b", strings(&["c"])),
            ("endings", string_lists(&[None])),
            ("label", strings(&["0"])),
        ],
    );
    let message = error_text(Task::Hellaswag.load(&path));
    assert!(
        message.contains("row 0: field \"endings\" is null"),
        "{message}"
    );

    // An ARC answer key that names no choice.
    let path = path_of(dir.path(), Task::ArcEasy);
    write_stream(
        &path,
        vec![
            ("question", strings(&["q"])),
            ("choices", choices(&[(vec!["x", "y"], vec!["A", "B"])])),
            ("answerKey", strings(&["E"])),
        ],
    );
    let message = error_text(Task::ArcEasy.load(&path));
    assert!(
        message.contains("arc_easy") && message.contains("row 0: answerKey \"E\""),
        "{message}"
    );

    // WinoGrande's answer out of range, and a file that is not Arrow.
    let path = path_of(dir.path(), Task::Winogrande);
    write_stream(
        &path,
        vec![
            ("sentence", strings(&["a _ b"])),
            ("option1", strings(&["x"])),
            ("option2", strings(&["y"])),
            ("answer", strings(&["3"])),
        ],
    );
    // Named as the file spells it (before: "label 2 is out of range for 2 choices", the
    // choice index it would have been; "label -1" for an answer of 0).
    let message = error_text(Task::Winogrande.load(&path));
    assert!(
        message.contains("row 0: answer 3 is not 1 or 2"),
        "{message}"
    );
    write_stream(
        &path,
        vec![
            ("sentence", strings(&["a _ b"])),
            ("option1", strings(&["x"])),
            ("option2", strings(&["y"])),
            ("answer", strings(&["0"])),
        ],
    );
    let message = error_text(Task::Winogrande.load(&path));
    assert!(
        message.contains("row 0: answer 0 is not 1 or 2"),
        "{message}"
    );
    std::fs::write(&path, b"not arrow").unwrap();
    let message = error_text(Task::Winogrande.load(&path));
    assert!(
        message.contains("not a readable Arrow IPC stream"),
        "{message}"
    );
}

#[test]
fn task_lists_parse() {
    assert_eq!(parse_task_list("all").unwrap(), Task::ALL.to_vec());
    assert_eq!(
        parse_task_list("boolq,ARC-Easy,boolq").unwrap(),
        vec![Task::ArcEasy, Task::Boolq]
    );
    // The same tasks in another order are the same list, so the same questions' id.
    assert_eq!(
        parse_task_list("openbookqa,piqa").unwrap(),
        parse_task_list("piqa, openbookqa").unwrap()
    );
    let message = parse_task_list("piqa,mmlu").err().unwrap().to_string();
    assert!(message.contains("unknown task \"mmlu\""), "{message}");
}

#[test]
fn hellaswag_cleaning_and_capitalize_follow_python() {
    assert_eq!(capitalize("hELLO World"), "Hello world");
    assert_eq!(capitalize(""), "");
    assert_eq!(
        hellaswag_preprocess("  a [title] b [step] c  d  "),
        "a. b c d"
    );
    // An unclosed bracket, and one whose match would cross a line break, stay.
    assert_eq!(hellaswag_preprocess("a [b"), "a [b");
    assert_eq!(hellaswag_preprocess("a [b\n] c [d]"), "a [b\n] c ");
    // Python's `strip` removes the information separators U+001C–U+001F too (`str::trim`
    // does not), and U+00A0 and U+3000 as `str::trim` does.
    assert_eq!(hellaswag_preprocess("\u{1c}\u{a0}a b\u{1f}\u{3000}"), "a b");
}

/// One token per character: makes lm-eval's whitespace move visible.
struct Chars;
impl Encode for Chars {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(text.chars().map(u32::from).collect())
    }
}

/// One token per whitespace-separated word with its leading space (a BPE-like merge).
struct Words;
impl Encode for Words {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let mut ids = Vec::new();
        let mut word = String::new();
        for c in text.chars() {
            if c == ' ' && !word.is_empty() && !word.ends_with(' ') {
                ids.push(word.len() as u32 * 1000 + word.bytes().map(u32::from).sum::<u32>());
                word.clear();
            }
            word.push(c);
        }
        if !word.is_empty() {
            ids.push(word.len() as u32 * 1000 + word.bytes().map(u32::from).sum::<u32>());
        }
        Ok(ids)
    }
}

#[test]
fn pairs_are_encoded_as_lm_eval_does() {
    let (context, continuation) = encode_pair(&Chars, "Answer: ", "yes").unwrap();
    // The context's trailing space moves to the continuation.
    assert_eq!(context, Chars.encode("Answer:").unwrap());
    assert_eq!(continuation, Chars.encode(" yes").unwrap());
    let (context, continuation) = encode_pair(&Words, "the cat", " sat down").unwrap();
    assert_eq!(context.len(), 2);
    assert_eq!(
        continuation,
        Words.encode(" sat down").unwrap()[..].to_vec()
    );
    // Trailing whitespace is Python's `rstrip`'s: U+001F moves too, "\u{200b}" (no space to
    // Python either) stays.
    let (context, continuation) = encode_pair(&Chars, "Answer:\u{1f}\n", "yes").unwrap();
    assert_eq!(context, Chars.encode("Answer:").unwrap());
    assert_eq!(continuation, Chars.encode("\u{1f}\nyes").unwrap());
    let (context, _) = encode_pair(&Chars, "Answer:\u{200b}", "yes").unwrap();
    assert_eq!(context, Chars.encode("Answer:\u{200b}").unwrap());
    assert!(encode_pair(&Chars, "", " x").is_err());
    assert!(encode_pair(&Chars, "ctx", "").is_err());

    // With the fixture's real tokenizer.json the continuation is what follows the context.
    let tokenizer = layerprune_data::TokenizerFile::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/fixtures/tiny-llama/tokenizer.json"),
    )
    .unwrap();
    let (context, continuation) =
        encode_pair(&tokenizer, "Question: is it?\nAnswer:", " yes").unwrap();
    let whole = Encode::encode(&tokenizer, "Question: is it?\nAnswer: yes").unwrap();
    assert_eq!([context.clone(), continuation.clone()].concat(), whole);
    assert!(!continuation.is_empty());
}

#[test]
fn subsamples_are_seeded_sorted_and_nested() {
    let a = subsample(Task::Piqa, 1000, 100, 0);
    assert_eq!(a.len(), 100);
    assert!(a.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(a, subsample(Task::Piqa, 1000, 100, 0));
    assert_ne!(a, subsample(Task::Piqa, 1000, 100, 1));
    assert_ne!(a, subsample(Task::Boolq, 1000, 100, 0));
    // A larger subsample of the same seed contains the smaller one.
    let b = subsample(Task::Piqa, 1000, 200, 0);
    assert!(a.iter().all(|row| b.contains(row)));
    assert_eq!(subsample(Task::Piqa, 50, 0, 0), (0..50).collect::<Vec<_>>());
    assert_eq!(
        subsample(Task::Piqa, 50, 80, 0),
        (0..50).collect::<Vec<_>>()
    );
    // Rows are drawn evenly: each half holds roughly half of a large draw.
    let c = subsample(Task::Hellaswag, 10_000, 2_000, 3);
    let low = c.iter().filter(|&&r| r < 5_000).count();
    assert!((900..1100).contains(&low), "{low}");
}

fn question(gold: usize, norm: &[usize]) -> EncodedQuestion {
    EncodedQuestion {
        row: 0,
        gold,
        choices: norm
            .iter()
            .map(|&n| EncodedChoice {
                context: vec![1],
                continuation: vec![2; n],
                norm_chars: n,
            })
            .collect(),
    }
}

#[test]
fn accuracy_and_length_normalised_accuracy() {
    assert_eq!(argmax_first(&[1.0, 3.0, 3.0]), 1);
    assert_eq!(argmax_first(&[f64::NAN, -1.0]), 1);
    // Question 0: choice 1 has the higher log-likelihood, choice 0 (10 bytes) the higher per
    // byte (−0.4 against −1.5).
    // Question 1: both metrics pick the right choice 0.
    let questions = vec![question(0, &[10, 2]), question(0, &[3, 3])];
    let logliks = vec![vec![-4.0, -3.0], vec![-1.0, -2.0]];
    let score = score_task(&questions, &logliks);
    assert_eq!((score.acc_correct, score.acc_norm_correct), (1, 2));
    assert_eq!(score.gold_tokens, 13);
    assert!((score.gold_nll_sum - 5.0).abs() < 1e-12);
    assert_eq!(score.acc().estimate, 0.5);
    assert_eq!(score.acc_norm().estimate, 1.0);
}

#[test]
fn intervals() {
    // Wilson's interval for 50 of 100: 0.5 ± 0.0962 (to 4 digits).
    let w = wilson(50, 100);
    assert!(
        (w.low - 0.4038).abs() < 1e-4 && (w.high - 0.5962).abs() < 1e-4,
        "{w:?}"
    );
    let all = wilson(20, 20);
    assert_eq!(all.high, 1.0);
    assert!(all.low > 0.8 && all.low < 0.85, "{all:?}");
    assert!(wilson(0, 0).estimate.is_nan());
    let mean = mean_of_tasks(&[(50, 100), (80, 100)]);
    assert!((mean.estimate - 0.65).abs() < 1e-12);
    let half = 1.959963984540054 * ((0.25 / 100.0 + 0.16 / 100.0) / 4.0f64).sqrt();
    assert!((mean.high - mean.estimate - half).abs() < 1e-12);
}

#[test]
fn encoded_tasks_have_an_id_that_follows_the_tokens() {
    let dir = tempfile::tempdir().unwrap();
    write_all_tasks(dir.path());
    let encoded: Vec<(Task, Vec<EncodedQuestion>)> = Task::ALL
        .iter()
        .map(|&task| {
            (
                task,
                load_encoded(task, dir.path(), 0, 0, &Chars, &[]).unwrap(),
            )
        })
        .collect();
    let id = requests_id(&encoded);
    assert_eq!(id, requests_id(&encoded));
    let mut changed = encoded.clone();
    changed[0].1[0].choices[0].continuation.push(7);
    assert_ne!(id, requests_id(&changed));
    let one = encode_question(
        Task::Boolq,
        &Task::Boolq.load(&path_of(dir.path(), Task::Boolq)).unwrap()[0],
        &Chars,
        &[],
    )
    .unwrap();
    assert_eq!(one.choices[1].continuation, Chars.encode(" yes").unwrap());
    // A BOS goes before every context and changes nothing else, and the id follows it.
    let with_bos = encode_question(
        Task::Boolq,
        &Task::Boolq.load(&path_of(dir.path(), Task::Boolq)).unwrap()[0],
        &Chars,
        &[2],
    )
    .unwrap();
    for (plain, bos) in one.choices.iter().zip(&with_bos.choices) {
        assert_eq!(bos.context[0], 2);
        assert_eq!(bos.context[1..], plain.context[..]);
        assert_eq!(bos.continuation, plain.continuation);
    }
    assert_ne!(
        requests_id(&[(Task::Boolq, vec![one])]),
        requests_id(&[(Task::Boolq, vec![with_bos])])
    );
}

/// An Arrow IPC stream of no columns whose batches claim `rows` rows each.
fn column_less_stream(rows: &[usize]) -> Vec<u8> {
    let schema = Arc::new(arrow_schema::Schema::empty());
    let mut bytes = Vec::new();
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut bytes, &schema).unwrap();
    for &rows in rows {
        let batch = arrow_array::RecordBatch::try_new_with_options(
            schema.clone(),
            vec![],
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .unwrap();
        writer.write(&batch).unwrap();
    }
    writer.finish().unwrap();
    drop(writer);
    bytes
}

#[test]
fn a_batch_claiming_more_rows_than_its_file_holds_is_refused_before_they_are_built() {
    // No columns and 2^50 rows: a few hundred bytes that, row by row, filled the memory (found
    // by crates/tasks/tests/fuzz.rs).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("piqa.arrow");
    std::fs::write(&path, column_less_stream(&[1 << 50])).unwrap();
    let error = layerprune_tasks::read_rows("piqa", &path)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("piqa.arrow") && error.contains("claim 1125899906842624 rows"),
        "{error}"
    );
}

#[test]
fn a_task_file_cut_between_two_batches_is_refused_not_read_as_a_smaller_split() {
    // The reader takes a clean end of file for the end of the stream: a file cut after a batch
    // (a download that stopped there) read as the split's first rows, wrong accuracies and exit 0.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("piqa.arrow");
    let whole = column_less_stream(&[3, 4]);
    std::fs::write(&path, &whole).unwrap();
    assert_eq!(layerprune_tasks::read_rows("piqa", &path).unwrap().len(), 7);
    std::fs::write(&path, &whole[..whole.len() - 8]).unwrap();
    let error = layerprune_tasks::read_rows("piqa", &path)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("piqa.arrow") && error.contains("end-of-stream marker"),
        "{error}"
    );
}

#[test]
fn a_task_file_the_arrow_reader_panics_on_is_refused_naming_it() {
    // crates/data's regression file: arrow 60.1 panics reading it.
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/tests/data/arrow-reader-panic.arrow");
    let error = layerprune_tasks::read_rows("boolq", &path)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("arrow-reader-panic.arrow") && error.contains("the Arrow reader failed"),
        "{error}"
    );
}

#[test]
fn a_batch_of_minus_one_rows_after_a_row_is_refused_not_added_past_the_counts_end() {
    // Arrow's reader takes a batch length of -1 for usize::MAX rows: added to the rows before
    // it, the count must saturate (it overflowed: a panic in dev builds, in release a small
    // number that let the rows be built until the memory ran out).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("piqa.arrow");
    const MARK: usize = 0x0123_4567_89ab_cdef;
    let mut bytes = column_less_stream(&[1, MARK]);
    let mark = (MARK as u64).to_le_bytes();
    let at = bytes.windows(8).position(|w| w == mark).unwrap();
    bytes[at..at + 8].copy_from_slice(&(-1i64).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let error = layerprune_tasks::read_rows("piqa", &path)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("piqa.arrow") && error.contains(&format!("claim {} rows", u64::MAX)),
        "{error}"
    );
}

/// A question that reads but cannot be encoded (here an OpenBookQA stem of blanks: no context
/// to score after) is refused naming the task file and the row, as a bad row is (before
/// 2026-12-06 the message named the task and row only: "openbookqa: row 1: cannot tokenize").
#[test]
fn a_question_that_cannot_be_encoded_is_named_by_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = path_of(dir.path(), Task::Openbookqa);
    write_stream(
        &path,
        vec![
            ("question_stem", strings(&["The sun is", "  "])),
            (
                "choices",
                choices(&[
                    (vec!["a star", "a planet"], vec!["A", "B"]),
                    (vec!["yes", "no"], vec!["A", "B"]),
                ]),
            ),
            ("answerKey", strings(&["A", "B"])),
        ],
    );
    let error = load_encoded(Task::Openbookqa, dir.path(), 0, 0, &Chars, &[]).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, TaskError::BadRow { row: 1, .. })
            && message.contains(&path.display().to_string())
            && message.contains("row 1")
            && message.contains("empty"),
        "{message}"
    );
}

/// Python 3.11's `str.capitalize` (Unicode 14) of c + "AB" for every character c whose title
/// case is not its upper case: before 2026-12-06 `capitalize` upper-cased the first character
/// (ß → "SS", ǆ → "Ǆ", Georgian ა → Mtavruli "Ა"), and lower-cased a final capital sigma
/// without the first letter before it ("ΑΣ" → "Ασ", Python's "Ας"). (No HellaSwag `ctx_b` of
/// the wheel's validation split starts with such a character: a review, 2026-12-06.)
#[test]
fn capitalize_puts_the_first_character_in_title_case_as_python_does() {
    let python: &[(&str, &str)] = &[
        ("\u{df}", "Ssab"),
        ("\u{1c4}", "\u{1c5}ab"),
        ("\u{1c5}", "\u{1c5}ab"),
        ("\u{1c6}", "\u{1c5}ab"),
        ("\u{1c7}", "\u{1c8}ab"),
        ("\u{1c8}", "\u{1c8}ab"),
        ("\u{1c9}", "\u{1c8}ab"),
        ("\u{1ca}", "\u{1cb}ab"),
        ("\u{1cb}", "\u{1cb}ab"),
        ("\u{1cc}", "\u{1cb}ab"),
        ("\u{1f1}", "\u{1f2}ab"),
        ("\u{1f2}", "\u{1f2}ab"),
        ("\u{1f3}", "\u{1f2}ab"),
        ("\u{587}", "\u{535}\u{582}ab"),
        ("\u{10d0}", "\u{10d0}ab"),
        ("\u{10d1}", "\u{10d1}ab"),
        ("\u{10d2}", "\u{10d2}ab"),
        ("\u{10d3}", "\u{10d3}ab"),
        ("\u{10d4}", "\u{10d4}ab"),
        ("\u{10d5}", "\u{10d5}ab"),
        ("\u{10d6}", "\u{10d6}ab"),
        ("\u{10d7}", "\u{10d7}ab"),
        ("\u{10d8}", "\u{10d8}ab"),
        ("\u{10d9}", "\u{10d9}ab"),
        ("\u{10da}", "\u{10da}ab"),
        ("\u{10db}", "\u{10db}ab"),
        ("\u{10dc}", "\u{10dc}ab"),
        ("\u{10dd}", "\u{10dd}ab"),
        ("\u{10de}", "\u{10de}ab"),
        ("\u{10df}", "\u{10df}ab"),
        ("\u{10e0}", "\u{10e0}ab"),
        ("\u{10e1}", "\u{10e1}ab"),
        ("\u{10e2}", "\u{10e2}ab"),
        ("\u{10e3}", "\u{10e3}ab"),
        ("\u{10e4}", "\u{10e4}ab"),
        ("\u{10e5}", "\u{10e5}ab"),
        ("\u{10e6}", "\u{10e6}ab"),
        ("\u{10e7}", "\u{10e7}ab"),
        ("\u{10e8}", "\u{10e8}ab"),
        ("\u{10e9}", "\u{10e9}ab"),
        ("\u{10ea}", "\u{10ea}ab"),
        ("\u{10eb}", "\u{10eb}ab"),
        ("\u{10ec}", "\u{10ec}ab"),
        ("\u{10ed}", "\u{10ed}ab"),
        ("\u{10ee}", "\u{10ee}ab"),
        ("\u{10ef}", "\u{10ef}ab"),
        ("\u{10f0}", "\u{10f0}ab"),
        ("\u{10f1}", "\u{10f1}ab"),
        ("\u{10f2}", "\u{10f2}ab"),
        ("\u{10f3}", "\u{10f3}ab"),
        ("\u{10f4}", "\u{10f4}ab"),
        ("\u{10f5}", "\u{10f5}ab"),
        ("\u{10f6}", "\u{10f6}ab"),
        ("\u{10f7}", "\u{10f7}ab"),
        ("\u{10f8}", "\u{10f8}ab"),
        ("\u{10f9}", "\u{10f9}ab"),
        ("\u{10fa}", "\u{10fa}ab"),
        ("\u{10fd}", "\u{10fd}ab"),
        ("\u{10fe}", "\u{10fe}ab"),
        ("\u{10ff}", "\u{10ff}ab"),
        ("\u{1f80}", "\u{1f88}ab"),
        ("\u{1f81}", "\u{1f89}ab"),
        ("\u{1f82}", "\u{1f8a}ab"),
        ("\u{1f83}", "\u{1f8b}ab"),
        ("\u{1f84}", "\u{1f8c}ab"),
        ("\u{1f85}", "\u{1f8d}ab"),
        ("\u{1f86}", "\u{1f8e}ab"),
        ("\u{1f87}", "\u{1f8f}ab"),
        ("\u{1f88}", "\u{1f88}ab"),
        ("\u{1f89}", "\u{1f89}ab"),
        ("\u{1f8a}", "\u{1f8a}ab"),
        ("\u{1f8b}", "\u{1f8b}ab"),
        ("\u{1f8c}", "\u{1f8c}ab"),
        ("\u{1f8d}", "\u{1f8d}ab"),
        ("\u{1f8e}", "\u{1f8e}ab"),
        ("\u{1f8f}", "\u{1f8f}ab"),
        ("\u{1f90}", "\u{1f98}ab"),
        ("\u{1f91}", "\u{1f99}ab"),
        ("\u{1f92}", "\u{1f9a}ab"),
        ("\u{1f93}", "\u{1f9b}ab"),
        ("\u{1f94}", "\u{1f9c}ab"),
        ("\u{1f95}", "\u{1f9d}ab"),
        ("\u{1f96}", "\u{1f9e}ab"),
        ("\u{1f97}", "\u{1f9f}ab"),
        ("\u{1f98}", "\u{1f98}ab"),
        ("\u{1f99}", "\u{1f99}ab"),
        ("\u{1f9a}", "\u{1f9a}ab"),
        ("\u{1f9b}", "\u{1f9b}ab"),
        ("\u{1f9c}", "\u{1f9c}ab"),
        ("\u{1f9d}", "\u{1f9d}ab"),
        ("\u{1f9e}", "\u{1f9e}ab"),
        ("\u{1f9f}", "\u{1f9f}ab"),
        ("\u{1fa0}", "\u{1fa8}ab"),
        ("\u{1fa1}", "\u{1fa9}ab"),
        ("\u{1fa2}", "\u{1faa}ab"),
        ("\u{1fa3}", "\u{1fab}ab"),
        ("\u{1fa4}", "\u{1fac}ab"),
        ("\u{1fa5}", "\u{1fad}ab"),
        ("\u{1fa6}", "\u{1fae}ab"),
        ("\u{1fa7}", "\u{1faf}ab"),
        ("\u{1fa8}", "\u{1fa8}ab"),
        ("\u{1fa9}", "\u{1fa9}ab"),
        ("\u{1faa}", "\u{1faa}ab"),
        ("\u{1fab}", "\u{1fab}ab"),
        ("\u{1fac}", "\u{1fac}ab"),
        ("\u{1fad}", "\u{1fad}ab"),
        ("\u{1fae}", "\u{1fae}ab"),
        ("\u{1faf}", "\u{1faf}ab"),
        ("\u{1fb2}", "\u{1fba}\u{345}ab"),
        ("\u{1fb3}", "\u{1fbc}ab"),
        ("\u{1fb4}", "\u{386}\u{345}ab"),
        ("\u{1fb7}", "\u{391}\u{342}\u{345}ab"),
        ("\u{1fbc}", "\u{1fbc}ab"),
        ("\u{1fc2}", "\u{1fca}\u{345}ab"),
        ("\u{1fc3}", "\u{1fcc}ab"),
        ("\u{1fc4}", "\u{389}\u{345}ab"),
        ("\u{1fc7}", "\u{397}\u{342}\u{345}ab"),
        ("\u{1fcc}", "\u{1fcc}ab"),
        ("\u{1ff2}", "\u{1ffa}\u{345}ab"),
        ("\u{1ff3}", "\u{1ffc}ab"),
        ("\u{1ff4}", "\u{38f}\u{345}ab"),
        ("\u{1ff7}", "\u{3a9}\u{342}\u{345}ab"),
        ("\u{1ffc}", "\u{1ffc}ab"),
        ("\u{fb00}", "Ffab"),
        ("\u{fb01}", "Fiab"),
        ("\u{fb02}", "Flab"),
        ("\u{fb03}", "Ffiab"),
        ("\u{fb04}", "Fflab"),
        ("\u{fb05}", "Stab"),
        ("\u{fb06}", "Stab"),
        ("\u{fb13}", "\u{544}\u{576}ab"),
        ("\u{fb14}", "\u{544}\u{565}ab"),
        ("\u{fb15}", "\u{544}\u{56b}ab"),
        ("\u{fb16}", "\u{54e}\u{576}ab"),
        ("\u{fb17}", "\u{544}\u{56d}ab"),
    ];
    assert_eq!(python.len(), 135);
    for (first, capitalized) in python {
        assert_eq!(&capitalize(&format!("{first}AB")), capitalized, "{first:?}");
    }
    assert_eq!(capitalize("\u{391}\u{3a3}"), "\u{391}\u{3c2}");
    assert_eq!(
        capitalize("\u{391}\u{3a3} \u{392}"),
        "\u{391}\u{3c2} \u{3b2}"
    );
    assert_eq!(capitalize("\u{df}ig"), "Ssig");
    assert_eq!(capitalize("\u{130}X"), "\u{130}x");
}
