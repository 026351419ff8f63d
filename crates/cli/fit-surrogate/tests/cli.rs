//! The `fit-surrogate` binary end to end on a small synthetic evaluation table.

use std::path::Path;
use std::process::Command;

mod common;

use layerprune_core::Mask;

use layerprune_surrogate::{SavedSurrogate, Surrogate, SurrogateKind};
use layerprune_tables::{
    read_surrogate_metrics, write_evaluations, EvaluationRow, EvaluationTable, Provenance,
};

const NUM_BLOCKS: usize = 6;
const FULL_NLL: f64 = 2.0;

/// Every mask of 6 blocks, NLL growing with each removed block and with pairs of neighbours
/// removed together; the empty mask's utility is NaN (as a diverged evaluation would be).
fn write_table(path: &Path) {
    common::write_every_mask_table(path, NUM_BLOCKS, FULL_NLL, 1280, |mask| {
        let removed = mask.removed_blocks();
        let mut nll = FULL_NLL;
        for &i in &removed {
            nll += 0.1 + 0.05 * i as f64;
            if removed.contains(&(i + 1)) {
                nll += 0.2;
            }
        }
        nll
    });
}

fn fit_surrogate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fit-surrogate"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn compares_models_writes_metrics_and_saves_the_kept_one() {
    let folder = tempfile::tempdir().unwrap();
    let evaluations = folder.path().join("evals.parquet");
    write_table(&evaluations);
    let metrics = folder.path().join("metrics.parquet");
    let out = folder.path().join("surrogate.json");
    let output = fit_surrogate(&[
        "--evaluations",
        evaluations.to_str().unwrap(),
        "--kind",
        "quadratic",
        "--kind",
        "forest",
        "--trees",
        "10",
        "--ridge-alpha",
        "1e-9",
        "--folds",
        "4",
        "--seed",
        "3",
        "--value",
        "nll-increase",
        "--metrics",
        metrics.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("quadratic") && stdout.contains("forest") && stdout.contains("mean"));
    // nll-increase is finite everywhere, so nothing is dropped.
    assert!(!stderr.contains("dropped"), "{stderr}");

    let table = read_surrogate_metrics(&metrics).unwrap();
    assert_eq!(table.rows.len(), 2 * (4 + 1));
    assert!(table.rows.iter().all(|r| r.value == "nll-increase"));
    let quadratic_mean = table
        .rows
        .iter()
        .find(|r| r.kind == "quadratic" && r.fold == -1)
        .unwrap();
    // The NLL here is exactly quadratic in the mask.
    assert!(quadratic_mean.r2 > 0.999, "{quadratic_mean:?}");
    assert_eq!(quadratic_mean.n_test, 16);

    let saved = SavedSurrogate::load(&out).unwrap();
    assert_eq!(saved.kind(), SurrogateKind::Quadratic);
    assert_eq!(saved.value, "nll-increase");
    assert!(saved.value_description.contains("higher is better"));
    let values = saved.surrogate.predict(&[
        Mask::full(NUM_BLOCKS),
        Mask::from_removed(NUM_BLOCKS, &[0]).unwrap(),
    ]);
    assert!(
        values[0].abs() < 1e-6,
        "full model loses nothing: {values:?}"
    );
    assert!(
        (values[1] + 0.1).abs() < 1e-6,
        "removing block 0 costs 0.1 nats: {values:?}"
    );
}

#[test]
fn drops_non_finite_rows_with_a_warning_and_keeps_the_chosen_model() {
    let folder = tempfile::tempdir().unwrap();
    let evaluations = folder.path().join("evals.parquet");
    write_table(&evaluations);
    let out = folder.path().join("s.json");
    let output = fit_surrogate(&[
        "--evaluations",
        evaluations.to_str().unwrap(),
        "--kind",
        "mlp",
        "--kind",
        "quadratic",
        "--keep",
        "quadratic",
        // The flag's spelling until 2026-12-04, still accepted.
        "--target",
        "utility",
        // No --epochs: the mlp is neither cross-validated nor kept, so it would be ignored
        // (refused since 2026-12-07).
        "--folds",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("dropped 1 of 64 rows"), "{stderr}");
    let saved = SavedSurrogate::load(&out).unwrap();
    assert_eq!(saved.kind(), SurrogateKind::Quadratic);
    assert_eq!(saved.value, "utility");
}

#[test]
fn errors_name_the_problem() {
    let folder = tempfile::tempdir().unwrap();
    let evaluations = folder.path().join("evals.parquet");
    write_table(&evaluations);
    let path = evaluations.to_str().unwrap();

    let too_many_folds = fit_surrogate(&[
        "--evaluations",
        path,
        "--kind",
        "quadratic",
        "--folds",
        "40",
    ]);
    assert_eq!(too_many_folds.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&too_many_folds.stderr);
    assert!(stderr.contains("too few for 40-fold"), "{stderr}");

    // A model folder given as --model (--kind's old name, the model folder elsewhere): said.
    let folder_as_kind = fit_surrogate(&["--evaluations", path, "--model", "models/smollm2"]);
    assert_eq!(folder_as_kind.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&folder_as_kind.stderr);
    assert!(
        stderr.contains("fit-surrogate reads no model folder, only --evaluations"),
        "{stderr}"
    );
    let unknown = fit_surrogate(&["--evaluations", path, "--kind", "linear"]);
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("not one of mlp, quadratic, forest") && !stderr.contains("model folder"),
        "{stderr}"
    );

    let missing = fit_surrogate(&["--evaluations", "/no/such/evals.parquet"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/no/such/evals.parquet"));

    let empty = folder.path().join("empty.parquet");
    let table = EvaluationTable {
        num_blocks: NUM_BLOCKS,
        model_id: "m".into(),
        dataset_id: "d".into(),
        fixed_blocks: Vec::new(),
        full_model_nll: None,
        complete: true,
        evaluated_on: None,
        rows: vec![],
        partial_windows: Vec::new(),
    };
    write_evaluations(&empty, &table, &Provenance::new("test", "0", vec![])).unwrap();
    let output = fit_surrogate(&["--evaluations", empty.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no rows"));

    let bad_model = fit_surrogate(&["--evaluations", path, "--kind", "svm"]);
    assert!(!bad_model.status.success());
    assert!(String::from_utf8_lossy(&bad_model.stderr).contains("mlp, quadratic, forest"));

    // A surrogate --keep names must be one of those fitted (and cross-validated); a run that
    // would neither save nor cross-validate anything is refused.
    let out = folder.path().join("kept.json");
    let out_s = out.to_str().unwrap();
    for (args, expected) in [
        (
            vec!["--kind", "quadratic", "--keep", "mlp", "--out", out_s],
            "--keep mlp is not among the surrogates fitted (--kind quadratic); add --kind mlp",
        ),
        (
            vec!["--kind", "quadratic", "--keep", "quadratic"],
            "--keep quadratic names the surrogate --out saves; give --out",
        ),
        (vec!["--kind", "quadratic", "--folds", "0"], "nothing to do"),
        // A setting of a kind that is not fitted would be ignored.
        (
            vec!["--kind", "mlp", "--ridge-alpha", "0.5", "--out", out_s],
            "--ridge-alpha is a setting of the quadratic surrogate, which is not fitted",
        ),
        (
            vec!["--kind", "quadratic", "--epochs", "5", "--out", out_s],
            "--epochs is a setting of the mlp surrogate",
        ),
        (
            vec!["--kind", "quadratic", "--trees", "3", "--out", out_s],
            "--trees is a setting of the forest surrogate",
        ),
        // A kind asked for but never fitted (no folds, another kind saved): its settings
        // were taken and ignored.
        (
            vec![
                "--kind",
                "quadratic",
                "--kind",
                "mlp",
                "--folds",
                "0",
                "--keep",
                "quadratic",
                "--epochs",
                "5",
                "--out",
                out_s,
            ],
            "--epochs is a setting of the mlp surrogate, and this run fits none (the quadratic \
             surrogate's fit, with no cross-validation: --folds 0); leave it out",
        ),
        (
            vec![
                "--kind",
                "quadratic",
                "--kind",
                "forest",
                "--folds",
                "0",
                "--trees",
                "3",
                "--out",
                out_s,
            ],
            "--trees is a setting of the forest surrogate, and this run fits none",
        ),
        (
            vec![
                "--kind",
                "mlp",
                "--kind",
                "quadratic",
                "--folds",
                "0",
                "--ridge-alpha",
                "0.5",
                "--out",
                out_s,
            ],
            "--ridge-alpha is a setting of the quadratic surrogate, and this run fits none (the \
             mlp surrogate's fit",
        ),
        // A quadratic fitted without cross-validation draws nothing: its --seed was ignored.
        (
            vec![
                "--kind",
                "quadratic",
                "--folds",
                "0",
                "--seed",
                "5",
                "--out",
                out_s,
            ],
            "--seed seeds the cross-validation folds and the mlp's and forest's fits, and this \
             run draws nothing",
        ),
    ] {
        let mut all = vec!["--evaluations", path];
        all.extend(args);
        let output = fit_surrogate(&all);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!out.exists());
    }
    // A value out of its bounds is a usage error (status 2), before any input is read.
    let negative = fit_surrogate(&["--evaluations", path, "--ridge-alpha=-1", "--out", out_s]);
    assert_eq!(negative.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&negative.stderr).contains("not a ridge strength"));
}

/// A table of one row cannot be fitted; one of fewer rows than blocks plus one, of one value
/// throughout, or in which no row varies a player, is fitted with a warning naming the file.
#[test]
fn too_few_or_alike_rows_are_refused_or_warned_of() {
    let folder = tempfile::tempdir().unwrap();
    let write = |name: &str, nlls: &[f64]| {
        let path = folder.path().join(name);
        let rows = nlls
            .iter()
            .enumerate()
            .map(|(b, &nll)| EvaluationRow {
                mask: Mask::from_removed(NUM_BLOCKS, &[b]).unwrap(),
                nll,
                ppl: nll.exp(),
                utility: (FULL_NLL - nll).exp(),
                tokens_scored: 100,
                seconds: 0.1,
                window_nlls: None,
            })
            .collect();
        let table = EvaluationTable {
            num_blocks: NUM_BLOCKS,
            model_id: "m".into(),
            dataset_id: "d".into(),
            fixed_blocks: Vec::new(),
            full_model_nll: Some(FULL_NLL),
            complete: true,
            evaluated_on: None,
            rows,
            partial_windows: Vec::new(),
        };
        write_evaluations(&path, &table, &Provenance::new("test", "0", vec![])).unwrap();
        path
    };
    let out = folder.path().join("s.json");
    let fit = |table: &Path| {
        fit_surrogate(&[
            "--evaluations",
            table.to_str().unwrap(),
            "--kind",
            "quadratic",
            "--folds",
            "0",
            "--out",
            out.to_str().unwrap(),
        ])
    };

    let one = write("one.parquet", &[2.5]);
    let output = fit(&one);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("at least two (mask, value) pairs, and 1 were given"),
        "{stderr}"
    );
    assert!(!out.exists());

    let few = write("few.parquet", &[2.5, 2.6, 2.7, 2.8]);
    let output = fit(&few);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{}: 4 rows for 6 players", few.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("same value"), "{stderr}");
    // Blocks 4 and 5 are removed by no row: nothing measures them.
    assert!(
        stderr.contains(&format!(
            "{}: block(s) [4, 5] are kept in every row but are players",
            few.display()
        )),
        "{stderr}"
    );
    assert!(out.exists());

    let alike = write("alike.parquet", &[2.5; 6]);
    let stderr = String::from_utf8_lossy(&fit(&alike).stderr).to_string();
    assert!(stderr.contains("6 rows for 6 players"), "{stderr}");
    assert!(stderr.contains("every row has the same value"), "{stderr}");
    assert!(!stderr.contains("in every row but"), "{stderr}");
}

/// A checkpoint of an `evaluate` run that stopped (complete = false) holds whichever masks the
/// run reached: fitting on it is refused, naming the file and the way out, with nothing
/// written; `--allow-incomplete` fits on its rows with a warning.
#[test]
fn an_incomplete_table_is_refused_unless_allowed() {
    let folder = tempfile::tempdir().unwrap();
    let whole = folder.path().join("evals.parquet");
    write_table(&whole);
    let mut table = layerprune_tables::read_evaluations(&whole).unwrap();
    table.rows.truncate(40);
    table.complete = false;
    let checkpoint = folder.path().join("checkpoint.parquet");
    write_evaluations(&checkpoint, &table, &Provenance::new("test", "0", vec![])).unwrap();
    let out = folder.path().join("s.json");
    let args = |extra: &[&'static str]| {
        let mut args = vec![
            "--evaluations",
            checkpoint.to_str().unwrap(),
            // The flag's old name, still accepted.
            "--model",
            "quadratic",
            "--folds",
            "0",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        fit_surrogate(&args)
    };

    let refused = args(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(checkpoint.to_str().unwrap())
            && stderr.contains("incomplete")
            && stderr.contains("40 rows")
            && stderr.contains("--allow-incomplete"),
        "{stderr}"
    );
    assert!(!out.exists());

    let allowed = args(&["--allow-incomplete"]);
    let stderr = String::from_utf8_lossy(&allowed.stderr);
    assert!(allowed.status.success(), "{stderr}");
    assert!(
        stderr.contains("incomplete evaluation table (40 rows"),
        "{stderr}"
    );
    assert!(SavedSurrogate::load(&out).is_ok());
}

/// `--threads` bounds the fit's own threads and nothing else: a quadratic fitted on every mask
/// of 16 blocks (a Gram matrix large enough to be counted on several threads) predicts the same
/// values, bit for bit, and prints the same scores on one thread as on two; more than four
/// threads per core is refused, naming the flag.
#[test]
fn the_same_fit_on_any_number_of_threads() {
    let folder = tempfile::tempdir().unwrap();
    let evaluations = folder.path().join("evals.parquet");
    common::write_every_mask_table(&evaluations, 16, FULL_NLL, 1280, |mask| {
        let removed = mask.removed_blocks();
        let pairs = removed.windows(2).filter(|w| w[1] == w[0] + 1).count();
        FULL_NLL
            + 0.07 * removed.len() as f64
            + 0.3 * pairs as f64
            + 0.01 * (removed.len() % 3) as f64
    });
    let fit_on = |threads: &str| {
        let out = folder.path().join(format!("surrogate-{threads}.json"));
        let output = fit_surrogate(&[
            "--evaluations",
            evaluations.to_str().unwrap(),
            "--kind",
            "quadratic",
            "--value",
            "nll-increase",
            "--folds",
            "2",
            "--threads",
            threads,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let saved = SavedSurrogate::load(&out).unwrap();
        let masks: Vec<Mask> = (0..1u32 << 16)
            .map(|bits| Mask::from_kept((0..16).map(|i| bits >> i & 1 == 1).collect()))
            .collect();
        (output.stdout, saved.surrogate.predict(&masks))
    };
    let (one_printed, one) = fit_on("1");
    let (two_printed, two) = fit_on("2");
    assert_eq!(one_printed, two_printed);
    assert!(one
        .iter()
        .zip(&two)
        .all(|(a, b)| a.to_bits() == b.to_bits()));

    let too_many = fit_surrogate(&[
        "--evaluations",
        evaluations.to_str().unwrap(),
        "--threads",
        "100000",
    ]);
    assert!(!too_many.status.success());
    let stderr = String::from_utf8_lossy(&too_many.stderr);
    assert!(
        stderr.contains("--threads") && stderr.contains("4 per core"),
        "{stderr}"
    );
}

/// `--ridge-alpha` takes any finite strength; one so large that n·α overflowed f64 was refused
/// after the fit as "singular ... use a ridge_alpha > 0". It fits the mean, with every weight 0.
#[test]
fn the_largest_ridge_strength_fits_the_mean() {
    let folder = tempfile::tempdir().unwrap();
    let evaluations = folder.path().join("evals.parquet");
    write_table(&evaluations);
    let out = folder.path().join("q.json");
    let output = fit_surrogate(&[
        "--evaluations",
        evaluations.to_str().unwrap(),
        "--kind",
        "quadratic",
        "--value",
        "nll-increase",
        "--ridge-alpha",
        "1e308",
        "--folds",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let saved = SavedSurrogate::load(&out).unwrap();
    let values = saved
        .surrogate
        .predict(&[Mask::full(NUM_BLOCKS), Mask::empty(NUM_BLOCKS)]);
    assert_eq!(values[0], values[1], "a constant: {values:?}");
}

/// The help names each value by its concept (a surrogate's `kind`, the column of
/// surrogate_metrics and of the surrogate file), not by the field that holds the list; and the
/// metrics file is a surrogate_metrics table, not a "score" table (scores are per-block).
#[test]
fn the_help_names_values_and_tables_as_the_tables_do() {
    let output = fit_surrogate(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in ["--kind <KIND>", "--keep <KIND>", "surrogate_metrics table"] {
        assert!(help.contains(expected), "{expected:?} not in:\n{help}");
    }
    assert!(!help.contains("<KINDS>"), "{help}");
    assert!(!help.contains("cross-validation scores"), "{help}");
}

/// Both outputs name the evaluation table they were fitted on by the sha256 of its bytes (the
/// role and id `shapley` records it by), so that fits on two mask tables of one model and token
/// table are told apart; the metrics table records the seed the folds used, 0 where none was
/// given. `--seed` is read wherever the run draws: folds, or a forest fitted on all rows.
#[test]
fn the_outputs_name_the_evaluation_table_they_were_fitted_on() {
    let folder = tempfile::tempdir().unwrap();
    let path = |name: &str| folder.path().join(name).to_str().unwrap().to_string();
    write_table(Path::new(&path("all.parquet")));
    let mut table = layerprune_tables::read_complete_evaluations(
        Path::new(&path("all.parquet")),
        layerprune_tables::Incomplete::Refuse,
    )
    .unwrap();
    table.rows.pop();
    write_evaluations(
        Path::new(&path("fewer.parquet")),
        &table,
        &Provenance::new("test", "0", vec![]),
    )
    .unwrap();
    let mut recorded = Vec::new();
    for name in ["all", "fewer"] {
        let evaluations = path(&format!("{name}.parquet"));
        let (metrics, out) = (
            path(&format!("{name}-m.parquet")),
            path(&format!("{name}.json")),
        );
        let output = fit_surrogate(&[
            "--evaluations",
            &evaluations,
            "--kind",
            "quadratic",
            "--value",
            "nll-increase",
            "--folds",
            "2",
            "--metrics",
            &metrics,
            "--out",
            &out,
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let sha = layerprune_core::sha256_hex(&std::fs::read(&evaluations).unwrap());
        let provenance = layerprune_tables::read_provenance(Path::new(&metrics)).unwrap();
        assert_eq!(provenance.inputs.get("evaluations"), Some(&sha));
        assert_eq!(
            provenance.inputs.get("model").map(String::as_str),
            Some("model")
        );
        assert_eq!(
            provenance.inputs.get("dataset").map(String::as_str),
            Some("dataset")
        );
        assert_eq!(provenance.seed, Some(0));
        let saved = SavedSurrogate::load(Path::new(&out)).unwrap();
        assert_eq!(saved.inputs, provenance.inputs);
        recorded.push(sha);
    }
    assert_ne!(recorded[0], recorded[1]);

    let forest = fit_surrogate(&[
        "--evaluations",
        &path("all.parquet"),
        "--kind",
        "forest",
        "--trees",
        "2",
        "--folds",
        "0",
        "--seed",
        "4",
        "--value",
        "nll-increase",
        "--out",
        &path("forest.json"),
    ]);
    assert!(
        forest.status.success(),
        "{}",
        String::from_utf8_lossy(&forest.stderr)
    );
}

/// A metrics table and a surrogate whose names are as long as the check of output names passes
/// (255 bytes less what its temporary name `.NAME.tmp-PID-N` adds) are written, with nothing
/// left beside them: until 2026-12-07 the pair's staged write nested a second temporary name
/// in the first, and such names failed once the fit was done ("File name too long").
#[cfg(target_os = "linux")]
#[test]
fn the_longest_output_names_the_check_passes_are_written() {
    let inputs = tempfile::tempdir().unwrap();
    let evaluations = inputs.path().join("evals.parquet");
    write_table(&evaluations);
    let folder = tempfile::tempdir().unwrap();
    let longest = 255 - (layerprune_core::longest_sibling_name("x".as_ref(), 0).len() - 1);
    let metrics = folder.path().join("m".repeat(longest));
    let out = folder.path().join("s".repeat(longest));
    let output = fit_surrogate(&[
        "--evaluations",
        evaluations.to_str().unwrap(),
        "--kind",
        "quadratic",
        "--folds",
        "2",
        "--metrics",
        metrics.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(read_surrogate_metrics(&metrics).unwrap().rows.len(), 3);
    assert!(SavedSurrogate::load(&out).is_ok());
    let mut names: Vec<_> = std::fs::read_dir(folder.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![metrics.file_name().unwrap(), out.file_name().unwrap()]
    );
    // One byte longer is refused before the fit.
    let longer = folder.path().join("m".repeat(longest + 1));
    let output = fit_surrogate(&[
        "--evaluations",
        evaluations.to_str().unwrap(),
        "--kind",
        "quadratic",
        "--folds",
        "2",
        "--metrics",
        longer.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "the name is too long: at most {longest} bytes here"
        )),
        "{stderr}"
    );
}
