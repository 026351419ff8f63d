//! `evaluate --tasks` end to end on the tiny fixture with small task files written here:
//! the three outputs agree with each other, a resumed run equals an uninterrupted one, and
//! bad task files are refused naming the task, file and row.

use layerprune_core::Design;
use std::path::{Path, PathBuf};
use std::process::Command;

use layerprune_tables::{read_evaluations, read_task_accuracies, read_task_choices};
use layerprune_tests::{write_task_files, PIQA_FILE as PIQA};

fn fixture() -> PathBuf {
    layerprune_tests::tiny_model_dir()
}

fn evaluate(args: &[&str]) -> std::process::Output {
    evaluate_model(&fixture(), args)
}

/// `evaluate` on the model folder `model`.
fn evaluate_model(model: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_evaluate"))
        .args(args)
        .args(["--quiet", "--model"])
        .arg(model)
        .output()
        .expect("evaluate runs")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

const MASKS: [&str; 6] = ["--mask", "110111", "--mask", "101101", "--mask", "111110"];

fn run_tasks(dir: &Path, data: &Path, name: &str, extra: &[&str]) -> std::process::Output {
    run_named(dir, data, name, &MASKS, extra)
}

/// `evaluate --tasks` on the masks `selection`, writing `<name>-{evaluations,choices,accuracy}`.
fn run_named(
    dir: &Path,
    data: &Path,
    name: &str,
    selection: &[&str],
    extra: &[&str],
) -> std::process::Output {
    run_on_tasks(dir, data, name, "piqa,boolq,winogrande", selection, extra)
}

/// `run_named` on the tasks `tasks`.
fn run_on_tasks(
    dir: &Path,
    data: &Path,
    name: &str,
    tasks: &str,
    selection: &[&str],
    extra: &[&str],
) -> std::process::Output {
    let file = |kind: &str| dir.join(format!("{name}-{kind}.parquet"));
    let (out, choices, accuracy) = (file("evaluations"), file("choices"), file("accuracy"));
    let mut args = vec![
        "--tasks",
        tasks,
        "--task-data",
        p(data),
        "--out",
        p(&out),
        "--choices-out",
        p(&choices),
        "--accuracy-out",
        p(&accuracy),
    ];
    // A checkpoint a mask; a merge writes no checkpoints (and refuses --chunk).
    if !selection.contains(&"--merge") && !extra.contains(&"--merge") {
        args.extend(["--chunk", "1"]);
    }
    args.extend_from_slice(selection);
    args.extend_from_slice(extra);
    evaluate(&args)
}

/// Panics with evaluate's stderr unless it succeeded.
fn succeeded(out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Task files in `dir/wheel` and an uninterrupted run of them named "whole".
fn whole_run(dir: &Path) -> PathBuf {
    let data = dir.join("wheel");
    write_task_files(&data, &[0, 1, 1, 0]);
    succeeded(run_tasks(dir, &data, "whole", &[]));
    data
}

/// A choice row as a sortable key, its log-likelihood bit for bit.
fn row_key(r: &layerprune_tables::TaskChoiceRow) -> (String, String, u32, u32, u64) {
    (
        r.mask.id(),
        r.task.clone(),
        r.question,
        r.choice,
        r.loglik.to_bits(),
    )
}

#[test]
fn task_outputs_agree_and_a_resumed_run_equals_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = whole_run(dir.path());

    let choices = read_task_choices(&dir.path().join("whole-choices.parquet")).unwrap();
    let accuracy = read_task_accuracies(&dir.path().join("whole-accuracy.parquet")).unwrap();
    let evaluations = read_evaluations(&dir.path().join("whole-evaluations.parquet")).unwrap();
    assert!(choices.complete && evaluations.complete);
    // Full model (the reference, scored first) + 3 masks; 4·2 + 3·2 + 2·2 choices each.
    assert_eq!(choices.rows.len(), 4 * 18);
    assert_eq!(evaluations.rows.len(), 3);
    assert_eq!(accuracy.rows.len(), 4 * 4);
    // Each accuracy is the share of questions whose gold choice has the top log-likelihood.
    for row in accuracy.rows.iter().filter(|r| r.task != "mean") {
        let mut correct = 0;
        let mut questions = std::collections::BTreeMap::<u32, Vec<(f64, u32)>>::new();
        for c in choices
            .rows
            .iter()
            .filter(|c| c.mask == row.mask && c.task == row.task)
        {
            questions
                .entry(c.question)
                .or_default()
                .push((c.loglik, c.gold));
        }
        for lls in questions.values() {
            let best = (0..lls.len()).fold(0, |b, i| if lls[i].0 > lls[b].0 { i } else { b });
            correct += usize::from(best as u32 == lls[0].1);
        }
        assert_eq!(row.questions as usize, questions.len());
        assert!((row.acc - correct as f64 / questions.len() as f64).abs() < 1e-12);
        assert!(row.acc_low <= row.acc && row.acc <= row.acc_high);
        assert!(row.acc_norm_low <= row.acc_norm && row.acc_norm <= row.acc_norm_high);
    }
    // The mean row is the unweighted mean over the three tasks.
    for mask in evaluations.rows.iter().map(|r| &r.mask) {
        let rows: Vec<_> = accuracy.rows.iter().filter(|r| &r.mask == mask).collect();
        let mean = rows.iter().find(|r| r.task == "mean").unwrap();
        let tasks: Vec<_> = rows.iter().filter(|r| r.task != "mean").collect();
        let expected = tasks.iter().map(|r| r.acc).sum::<f64>() / 3.0;
        assert!((mean.acc - expected).abs() < 1e-12);
        // utility = mean accuracy / the full model's mean accuracy.
        let full = accuracy
            .rows
            .iter()
            .find(|r| r.mask.num_removed() == 0 && r.task == "mean")
            .unwrap();
        let eval = evaluations.rows.iter().find(|r| &r.mask == mask).unwrap();
        assert!((eval.utility - mean.acc / full.acc).abs() < 1e-12);
        assert!((eval.nll - mean.gold_nll).abs() < 1e-12);
    }

    // Interrupted after the full model and one mask, then resumed.
    let out = run_tasks(dir.path(), &data, "parts", &["--max-new-masks", "2"]);
    succeeded(out);
    let partial = read_task_choices(&dir.path().join("parts-choices.parquet")).unwrap();
    assert!(!partial.complete);
    assert_eq!(partial.rows.len(), 2 * 18);
    // The accuracy table of an unfinished run says so, as the choice log does.
    let parts_accuracy = dir.path().join("parts-accuracy.parquet");
    assert!(!read_task_accuracies(&parts_accuracy).unwrap().complete);
    let out = succeeded(run_tasks(dir.path(), &data, "parts", &[]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 masks already scored"));
    let resumed = read_task_choices(&dir.path().join("parts-choices.parquet")).unwrap();
    assert!(resumed.complete);
    let mut a: Vec<_> = choices.rows.iter().map(row_key).collect();
    let mut b: Vec<_> = resumed.rows.iter().map(row_key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    let resumed_accuracy = read_task_accuracies(&parts_accuracy).unwrap();
    assert!(resumed_accuracy.complete);
    assert_eq!(resumed_accuracy.rows.len(), accuracy.rows.len());

    // A subsample of 2 questions per task, and another subsample is another dataset.
    let out = run_tasks(
        dir.path(),
        &data,
        "sub",
        &["--task-subsample", "2", "--seed", "5"],
    );
    succeeded(out);
    let sub = read_task_accuracies(&dir.path().join("sub-accuracy.parquet")).unwrap();
    assert!(sub
        .rows
        .iter()
        .filter(|r| r.task != "mean")
        .all(|r| r.questions == 2));
    assert_ne!(sub.dataset_id, accuracy.dataset_id);
    let out = run_tasks(
        dir.path(),
        &data,
        "sub",
        &["--task-subsample", "3", "--seed", "5"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot resume"));

    // Contexts cut to a shorter longest input are other questions to the model: a run with
    // --max-length 16 is not resumed by one without (the rows would mix two truncations), while
    // a longest input that cuts nothing names the same questions.
    succeeded(run_tasks(dir.path(), &data, "cut", &["--max-length", "16"]));
    let cut = read_task_accuracies(&dir.path().join("cut-accuracy.parquet")).unwrap();
    assert_ne!(cut.dataset_id, accuracy.dataset_id);
    let out = run_tasks(dir.path(), &data, "cut", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot resume"));
    succeeded(run_tasks(
        dir.path(),
        &data,
        "uncut",
        &["--max-length", "100000"],
    ));
    let uncut = read_task_accuracies(&dir.path().join("uncut-accuracy.parquet")).unwrap();
    assert_eq!(uncut.dataset_id, accuracy.dataset_id);
    // A continuation longer than the longest input is refused before anything is written,
    // every such choice named by its task, file, row and choice, with the --max-length that
    // scores them (tests below: the export's own bounds).
    let out = run_tasks(dir.path(), &data, "short", &["--max-length", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("longer than the longest input the model is given, --max-length 2;")
            && stderr.contains(&format!(
                "piqa: {}: row 0, choice 0: ",
                data.join(PIQA).display()
            ))
            && stderr.contains(&format!(
                "piqa: {}: row 3, choice 1: ",
                data.join(PIQA).display()
            ))
            && stderr.contains("pass --max-length ")
            && !stderr.contains("rotary"),
        "{stderr}"
    );
    assert!(!dir.path().join("short-accuracy.parquet").exists());
    assert!(!dir.path().join("short-choices.parquet").exists());

    // Log-likelihoods computed another way (a checkpoint from before the float64
    // log-softmax) are not mixed with new ones.
    assert_eq!(resumed.scoring, "logits-f64-log-softmax");
    let legacy = layerprune_tables::TaskChoiceTable {
        scoring: layerprune_tables::LEGACY_SCORING.into(),
        complete: false,
        ..partial
    };
    let legacy_path = dir.path().join("legacy-choices.parquet");
    let provenance = layerprune_tables::Provenance::new("test", "0", vec![]);
    layerprune_tables::write_task_choices(&legacy_path, &legacy, &provenance).unwrap();
    let out = run_tasks(dir.path(), &data, "legacy", &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot resume") && stderr.contains("with scoring head-graph-nll"),
        "{stderr}"
    );
}

#[test]
fn the_printed_accuracy_table_names_each_masks_removed_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("wheel");
    write_task_files(&data, &[0, 1, 1, 0]);
    let out = succeeded(run_tasks(dir.path(), &data, "printed", &[]));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.contains("(acc / acc_norm, %)"))
        .unwrap_or_else(|| panic!("no accuracy table in:\n{stdout}"));
    assert!(
        lines[header].contains("removed blocks"),
        "{}",
        lines[header]
    );
    // The full model (the reference) first, then the masks in their order: 110111, 101101,
    // 111110 remove blocks 2; 1 and 4; 5.
    let removed: Vec<&str> = lines[header + 1..header + 5]
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(removed, ["-", "2", "1,4", "5"], "{stdout}");
}

/// The utility is a ratio to the full model's accuracy: a run where the full model gets every
/// question wrong says that its utilities are undefined.
#[test]
fn a_full_model_with_no_right_answer_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("wheel");
    let piqa_run = |labels: &[i64], name: &str| {
        write_task_files(&data, labels);
        let out = succeeded(run_on_tasks(dir.path(), &data, name, "piqa", &MASKS, &[]));
        let choices = dir.path().join(format!("{name}-choices.parquet"));
        (
            read_task_choices(&choices).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (choices, _) = piqa_run(&[0, 0, 0, 0], "first");
    // The full model's pick for each question (ties to the first choice, as acc breaks them).
    let full: Vec<_> = choices
        .rows
        .iter()
        .filter(|r| r.mask.num_removed() == 0)
        .collect();
    let picks: Vec<i64> = (0..4)
        .map(|q| {
            let ll = |c: u32| {
                full.iter()
                    .find(|r| r.question == q && r.choice == c)
                    .unwrap()
                    .loglik
            };
            i64::from(ll(1) > ll(0))
        })
        .collect();
    let wrong: Vec<i64> = picks.iter().map(|pick| 1 - pick).collect();
    let (_, right_stderr) = piqa_run(&picks, "right");
    let (_, wrong_stderr) = piqa_run(&wrong, "wrong");
    let warning = "answers none of these questions right";
    assert!(!right_stderr.contains(warning), "{right_stderr}");
    assert!(wrong_stderr.contains(warning), "{wrong_stderr}");
    let utilities = read_evaluations(&dir.path().join("wrong-evaluations.parquet")).unwrap();
    assert!(utilities.rows.iter().all(|r| !r.utility.is_finite()));
}

/// The evaluation and accuracy tables are rewritten from the choice log: a table another run
/// wrote there (other questions) is refused, left as it was, unless --overwrite.
#[test]
fn another_runs_tables_are_not_replaced_without_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("wheel");
    write_task_files(&data, &[0, 1, 1, 0]);
    succeeded(run_on_tasks(dir.path(), &data, "piqa", "piqa", &MASKS, &[]));
    let evaluations = dir.path().join("piqa-evaluations.parquet");
    let accuracy = dir.path().join("piqa-accuracy.parquet");
    let before = (
        std::fs::read(&evaluations).unwrap(),
        std::fs::read(&accuracy).unwrap(),
    );
    // Another run (other questions) told to write its tables over these.
    let boolq = |out: &Path, accuracy_out: &Path, extra: &[&str]| {
        let choices = dir.path().join("boolq-choices.parquet");
        let mut args = vec![
            "--tasks",
            "boolq",
            "--task-data",
            p(&data),
            "--out",
            p(out),
            "--choices-out",
            p(&choices),
            "--accuracy-out",
            p(accuracy_out),
        ];
        args.extend_from_slice(extra);
        evaluate(&args)
    };
    let elsewhere = dir.path().join("boolq-accuracy.parquet");
    let refused = boolq(&evaluations, &elsewhere, &[]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("piqa-evaluations.parquet (--out)") && message.contains("--overwrite"),
        "{message}"
    );
    let refused = boolq(
        &dir.path().join("boolq-evaluations.parquet"),
        &accuracy,
        &[],
    );
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("(--accuracy-out)"), "{message}");
    assert_eq!(
        (
            std::fs::read(&evaluations).unwrap(),
            std::fs::read(&accuracy).unwrap()
        ),
        before
    );
    // The same run again resumes into its own tables; --overwrite replaces another's.
    succeeded(run_on_tasks(dir.path(), &data, "piqa", "piqa", &MASKS, &[]));
    succeeded(boolq(&evaluations, &accuracy, &["--overwrite"]));
    let replaced = read_task_accuracies(&accuracy).unwrap();
    assert!(replaced.complete);
    assert!(replaced.rows.iter().any(|r| r.task == "boolq"));
}

#[test]
fn bad_task_files_are_refused_naming_task_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("wheel");
    write_task_files(&data, &[0, 1, 2]);
    let out = run_tasks(dir.path(), &data, "bad", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("piqa"), "{stderr}");
    assert!(stderr.contains(PIQA), "{stderr}");
    assert!(
        stderr.contains("row 2: label 2 is out of range for 2 choices"),
        "{stderr}"
    );
    assert!(!dir.path().join("bad-choices.parquet").exists());

    // A task whose file is missing.
    let out = evaluate(&[
        "--tasks",
        "openbookqa",
        "--task-data",
        p(&data),
        "--out",
        p(&dir.path().join("o.parquet")),
        "--choices-out",
        p(&dir.path().join("c.parquet")),
        "--accuracy-out",
        p(&dir.path().join("a.parquet")),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("openbookqa") && stderr.contains("no such file"),
        "{stderr}"
    );
    assert!(stderr.contains("openbookqa/main/validation"), "{stderr}");

    // Unknown task names, and --tasks without its outputs.
    let out = evaluate(&[
        "--tasks",
        "mmlu",
        "--task-data",
        p(&data),
        "--out",
        "x.parquet",
        "--choices-out",
        "c.parquet",
        "--accuracy-out",
        "a.parquet",
    ]);
    // An unknown task name is a value that does not parse: a usage error.
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown task \"mmlu\""));
    let out = evaluate(&[
        "--tasks",
        "piqa",
        "--task-data",
        p(&data),
        "--out",
        "x.parquet",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--choices-out"));
}

/// A continuation longer than the export's own bound (the checkpoint's `context_length`, or a
/// fused export's rotary tables where those are shorter) is refused before the model runs,
/// naming that bound, not --max-length, and every such choice by task, file, row and choice.
/// Until 2026-12-07 the scorer refused the first one once the model was opened (its weights
/// hashed), calling any bound of the export "the export's rotary tables", and naming neither
/// the task file nor the other choices.
#[test]
fn continuations_longer_than_the_export_takes_are_refused_naming_every_choice_and_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("wheel");
    write_task_files(&data, &[0, 1, 1, 0]);
    let piqa = data.join(PIQA).display().to_string();
    // (model folder, its manifest's change, texts the message holds, texts it does not).
    type Case = (
        &'static str,
        fn(&mut serde_json::Value),
        &'static [&'static str],
        &'static [&'static str],
    );
    let cases: [Case; 3] = [
        (
            "context",
            |m| m["context_length"] = 5.into(),
            &["the export's context of 5 tokens (context_length in its manifest)"],
            &["rotary", "--max-length 2048", "pass --max-length"],
        ),
        (
            "rotary",
            |m| {
                m["attention_kernel"] = "fused".into();
                m["rotary_positions"] = 5.into();
                m["context_length"] = 64.into();
            },
            &[
                "the 5 positions of the export's fused-attention rotary tables",
                "--attention-kernel standard",
            ],
            &["context_length", "pass --max-length"],
        ),
        (
            // The bound of the export holds even where --max-length is as short.
            "tie",
            |m| m["context_length"] = 5.into(),
            &["the export's context of 5 tokens"],
            &["pass --max-length", "--max-length 5"],
        ),
    ];
    for (name, change, wanted, unwanted) in cases {
        let model = dir.path().join(name);
        layerprune_tests::copy_tiny_model_with_manifest(&model, change);
        let file = |kind: &str| dir.path().join(format!("{name}-{kind}.parquet"));
        let (out, choices, accuracy) = (file("evaluations"), file("choices"), file("accuracy"));
        let mut args = vec![
            "--tasks",
            "piqa,boolq",
            "--task-data",
            p(&data),
            "--out",
            p(&out),
            "--choices-out",
            p(&choices),
            "--accuracy-out",
            p(&accuracy),
        ];
        if name == "tie" {
            args.extend(["--max-length", "5"]);
        }
        let out = evaluate_model(&model, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        // Every PIQA choice (7 to 13 tokens of the fixture's tokenizer) is named; BoolQ's " no"
        // and " yes" (3 tokens) fit.
        for row in 0..4 {
            for choice in 0..2 {
                let named = format!("piqa: {piqa}: row {row}, choice {choice}: ");
                assert!(stderr.contains(&named), "{named} not in {stderr}");
            }
        }
        assert!(stderr.contains("8 choice(s)"), "{stderr}");
        assert!(!stderr.contains("boolq"), "{stderr}");
        assert!(
            stderr.contains("leave these tasks out of --tasks"),
            "{stderr}"
        );
        for text in wanted {
            assert!(stderr.contains(text), "{text} not in {stderr}");
        }
        for text in unwanted {
            assert!(!stderr.contains(text), "{text} in {stderr}");
        }
        assert!(!file("choices").exists() && !file("accuracy").exists());
    }
}

/// A log-likelihood that comes out NaN (here: an embedding of NaN) is named by its task, file,
/// question row and choice, the mask and the folder. Until 2026-12-07 it was "the
/// log-likelihood of request 0 is NaN", a number the scorer gave it.
#[test]
fn a_nan_log_likelihood_names_its_task_question_and_choice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("wheel");
    write_task_files(&data, &[0, 1]);
    let model = dir.path().join("nan");
    layerprune_tests::copy_dir(&fixture(), &model);
    // The embedding's weight file, named in embed.onnx as `weights/<32 hex digits>.bin`.
    let graph = std::fs::read(model.join("embed.onnx")).unwrap();
    let at = graph
        .windows(8)
        .position(|w| w == b"weights/")
        .expect("embed.onnx keeps its weights in weights/");
    let weights = model.join(std::str::from_utf8(&graph[at..at + 44]).unwrap());
    let values = std::fs::read(&weights).unwrap().len() / 4;
    let nan: Vec<u8> = (0..values).flat_map(|_| f32::NAN.to_le_bytes()).collect();
    std::fs::write(&weights, nan).unwrap();
    let file = |kind: &str| dir.path().join(format!("nan-{kind}.parquet"));
    let out = evaluate_model(
        &model,
        &[
            "--tasks",
            "piqa",
            "--task-data",
            p(&data),
            "--out",
            p(&file("evaluations")),
            "--choices-out",
            p(&file("choices")),
            "--accuracy-out",
            p(&file("accuracy")),
            "--no-verify",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let named = format!("piqa: {}: row ", data.join(PIQA).display());
    assert!(
        stderr.contains(&named)
            && stderr.contains(", choice ")
            && stderr.contains(&format!(
                "{}: mask 111111: the log-likelihood is NaN",
                model.display()
            ))
            && !stderr.contains("request "),
        "{stderr}"
    );
}

/// `evaluate --tasks` over the mask table `masks.parquet` of `dir`.
fn run_table(dir: &Path, data: &Path, name: &str, extra: &[&str]) -> std::process::Output {
    let masks = dir.join("masks.parquet");
    run_named(dir, data, name, &["--masks", p(&masks)], extra)
}

/// `make tasks` gives its masks inline: shards of such a run merge with the same --mask flags
/// (until 2026-12-07 clap required --masks for --merge, after hours of shard runs).
#[test]
fn task_shards_of_inline_masks_merge_with_the_same_flags() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("wheel");
    write_task_files(&data, &[0, 1, 1, 0]);
    let inline = [
        "--mask", "110111", "--mask", "101101", "--mask", "011111", "--mask", "111110",
    ];
    succeeded(run_named(dir.path(), &data, "whole", &inline, &[]));
    let mut merge = vec!["--merge"];
    let shards: Vec<String> = (0..2)
        .map(|shard| {
            let name = format!("s{shard}");
            let which = format!("{shard}/2");
            succeeded(run_named(
                dir.path(),
                &data,
                &name,
                &inline,
                &["--shard", &which],
            ));
            p(&dir.path().join(format!("{name}-choices.parquet"))).to_string()
        })
        .collect();
    merge.extend(shards.iter().map(String::as_str));
    succeeded(run_named(dir.path(), &data, "merged", &inline, &merge));
    let accuracies = |name: &str| {
        read_task_accuracies(&dir.path().join(format!("{name}-accuracy.parquet")))
            .unwrap()
            .rows
    };
    assert_eq!(accuracies("merged"), accuracies("whole"));
    assert!(!accuracies("whole").is_empty());
    // Without the masks the merge cannot tell a missing shard: refused, naming what it needs.
    let out = run_named(dir.path(), &data, "bare", &merge, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--merge needs the masks the shards scored"),
        "{stderr}"
    );
}

#[test]
fn sharded_task_runs_merge_into_the_unsharded_tables() {
    use layerprune_core::Mask;
    use layerprune_tables::{write_masks, MaskRow, MaskTable, Provenance};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("wheel");
    write_task_files(&data, &[0, 1, 1, 0]);
    let rows = [
        "110111", "101101", "111110", "011111", "111011", "100001", "111111",
    ]
    .iter()
    .map(|text| MaskRow {
        mask: text.parse::<Mask>().unwrap(),
        design: Design::Anchor,
        group_id: None,
        position: None,
    })
    .collect();
    let table = MaskTable {
        num_blocks: 6,
        fixed_blocks: vec![],
        rows,
    };
    let provenance = Provenance::new("test", "0", vec![]);
    write_masks(&dir.path().join("masks.parquet"), &table, &provenance).unwrap();
    succeeded(run_table(dir.path(), &data, "whole", &[]));
    for shard in 0..3 {
        let name = format!("s{shard}");
        succeeded(run_table(
            dir.path(),
            &data,
            &name,
            &["--shard", &format!("{shard}/3")],
        ));
    }
    let shard_file = |i: usize| dir.path().join(format!("s{i}-choices.parquet"));
    let shard_paths: Vec<String> = (0..3).map(|i| p(&shard_file(i)).to_string()).collect();
    fn merge_args<'a>(shards: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["--merge"];
        args.extend_from_slice(shards);
        args
    }
    let all: Vec<&str> = shard_paths.iter().map(String::as_str).collect();
    succeeded(run_table(dir.path(), &data, "merged", &merge_args(&all)));

    // The merged tables equal the unsharded run's (but for timings).
    let sorted = |name: &str| {
        let table = read_task_choices(&dir.path().join(format!("{name}-choices.parquet"))).unwrap();
        let mut rows: Vec<_> = table.rows.iter().map(row_key).collect();
        rows.sort();
        (table.complete, rows)
    };
    assert_eq!(sorted("merged"), sorted("whole"));
    let evaluations = |name: &str| {
        read_evaluations(&dir.path().join(format!("{name}-evaluations.parquet")))
            .unwrap()
            .rows
            .into_iter()
            .map(|r| (r.mask.id(), r.utility.to_bits(), r.nll.to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(evaluations("merged"), evaluations("whole"));
    assert_eq!(evaluations("merged").len(), 7);
    let accuracies = |name: &str| {
        read_task_accuracies(&dir.path().join(format!("{name}-accuracy.parquet")))
            .unwrap()
            .rows
    };
    assert_eq!(accuracies("merged"), accuracies("whole"));

    // A missing shard, a shard given twice and a shard of other questions are refused.
    let refused = |shards: &[&str], needle: &str| {
        let out = run_table(dir.path(), &data, "bad", &merge_args(shards));
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{stderr}");
        assert!(!dir.path().join("bad-choices.parquet").exists());
    };
    refused(&all[..2], "in none of the shards");
    let owning = (0..3)
        .find(|&i| {
            read_task_choices(&shard_file(i))
                .unwrap()
                .rows
                .iter()
                .any(|r| r.mask.num_removed() > 0)
        })
        .unwrap();
    let twice = [all[0], all[1], all[2], all[owning]];
    refused(&twice, "in more than one shard");
    succeeded(run_table(
        dir.path(),
        &data,
        "other",
        &["--shard", "0/3", "--task-subsample", "2"],
    ));
    let other = dir.path().join("other-choices.parquet");
    refused(&[p(&other), all[1], all[2]], "computed for model");
    // Named by what differs, not only by two ids: the questions, not the model or scoring.
    refused(
        &[p(&other), all[1], all[2]],
        "they differ in the questions (one of --tasks, --task-subsample, --seed",
    );
    // Shards of another mask table (here a longer one than the merge is given) are refused,
    // not copied into the choice log beside a shorter evaluation table.
    let fewer = dir.path().join("fewer-masks.parquet");
    let first_two = MaskTable {
        rows: table.rows[..2].to_vec(),
        ..table.clone()
    };
    write_masks(&fewer, &first_two, &provenance).unwrap();
    let mut selection = vec!["--masks", p(&fewer)];
    selection.extend(merge_args(&all));
    let out = run_named(dir.path(), &data, "bad", &selection, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not among the masks given"), "{stderr}");
    assert!(!dir.path().join("bad-choices.parquet").exists());
    // A shard does not resume another run's rows (an unsharded run's choice log): it would
    // write them as its own, complete.
    let foreign = dir.path().join("foreign-choices.parquet");
    std::fs::copy(dir.path().join("whole-choices.parquet"), &foreign).unwrap();
    let before = std::fs::read(&foreign).unwrap();
    let out = run_table(dir.path(), &data, "foreign", &["--shard", "0/3"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "resumed another run's rows");
    assert!(stderr.contains("is not shard 0/3's"), "{stderr}");
    assert_eq!(std::fs::read(&foreign).unwrap(), before);
}

#[test]
fn a_killed_run_keeps_the_tasks_it_finished() {
    use layerprune_tables::{write_task_choices, Provenance, TaskChoiceTable};
    let dir = tempfile::tempdir().unwrap();
    let data = whole_run(dir.path());
    let whole = read_task_choices(&dir.path().join("whole-choices.parquet")).unwrap();
    // A checkpoint as a run killed in its first chunk leaves it: the full model done; mask
    // 110111 with piqa finished (marked +1 nat, so a rescore would show); mask 101101 in the
    // middle of piqa (one choice short: to be redone); mask 111110 not started.
    let finished: layerprune_core::Mask = "110111".parse().unwrap();
    let interrupted: layerprune_core::Mask = "101101".parse().unwrap();
    let mut rows = Vec::new();
    let mut dropped_one = false;
    for row in &whole.rows {
        if row.mask.num_removed() == 0 {
            rows.push(row.clone());
        } else if row.mask == finished && row.task == "piqa" {
            let mut marked = row.clone();
            marked.loglik += 1.0;
            rows.push(marked);
        } else if row.mask == interrupted && row.task == "piqa" {
            if dropped_one {
                rows.push(row.clone());
            }
            dropped_one = true;
        }
    }
    let checkpoint = TaskChoiceTable {
        complete: false,
        rows,
        ..whole.clone()
    };
    let path = dir.path().join("killed-choices.parquet");
    write_task_choices(&path, &checkpoint, &Provenance::new("test", "0", vec![])).unwrap();

    let out = run_tasks(dir.path(), &data, "killed", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 masks already scored, 1 with some of their tasks"),
        "{stderr}"
    );
    let resumed = read_task_choices(&path).unwrap();
    assert!(resumed.complete);
    let mut expected: Vec<_> = whole
        .rows
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if r.mask == finished && r.task == "piqa" {
                r.loglik += 1.0;
            }
            row_key(&r)
        })
        .collect();
    let mut got: Vec<_> = resumed.rows.iter().map(row_key).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
}

/// A choice log damaged outside the stage (a copy cut short) is named in the first line of the
/// error with the way out any caller can take, removing it (until 2026-12-07 that line said only
/// "pass --overwrite to replace it", the file named only under it); removed, its rows are
/// computed again.
#[test]
fn a_damaged_choice_log_is_named_in_the_first_line_with_a_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = whole_run(dir.path());
    let choices = dir.path().join("whole-choices.parquet");
    let whole = std::fs::read(&choices).unwrap();
    let cut = &whole[..whole.len() / 2];
    std::fs::write(&choices, cut).unwrap();
    let out = run_tasks(dir.path(), &data, "whole", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let first_line = format!(
        "evaluate: error: --choices-out {}: cannot be read, so it cannot be resumed; remove it \
         (the rows it held are measured again), or choose another --choices-out\n",
        choices.display()
    );
    assert!(
        stderr.starts_with(&first_line),
        "expected {first_line:?} in {stderr}"
    );
    assert_eq!(std::fs::read(&choices).unwrap(), cut);
    std::fs::remove_file(&choices).unwrap();
    succeeded(run_tasks(dir.path(), &data, "whole", &[]));
    assert_eq!(std::fs::read(&choices).unwrap(), whole);
}

/// A task run whose choice log another run is writing is refused at once, writing nothing.
#[test]
fn a_choice_log_another_run_is_writing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("wheel");
    write_task_files(&data, &[0, 1, 1, 0]);
    let choices = dir.path().join("busy-choices.parquet");
    let running = layerprune_core::FileLock::try_acquire(&choices).unwrap();
    let out = run_tasks(dir.path(), &data, "busy", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("busy-choices.parquet") && stderr.contains("in use by another run"));
    // At once, before the model is read (its id hashes every weight file: about 20 s for a 7B
    // model; until 2026-12-07 the lock was taken after): a model folder that is not there is
    // not what the refusal is about.
    let out = Command::new(env!("CARGO_BIN_EXE_evaluate"))
        .args([
            "--tasks",
            "piqa",
            "--task-data",
            p(&data),
            "--mask",
            "110111",
        ])
        .args(["--out", p(&dir.path().join("busy-evaluations.parquet"))])
        .args(["--choices-out", p(&choices)])
        .args([
            "--accuracy-out",
            p(&dir.path().join("busy-accuracy.parquet")),
        ])
        .args(["--quiet", "--model"])
        .arg(dir.path().join("no-model"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("busy-choices.parquet") && stderr.contains("in use by another run"),
        "{stderr}"
    );
    for kind in ["evaluations", "choices", "accuracy"] {
        assert!(!dir.path().join(format!("busy-{kind}.parquet")).exists());
    }
    drop(running);
    succeeded(run_tasks(dir.path(), &data, "busy", &[]));
}
