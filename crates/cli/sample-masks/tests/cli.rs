//! The `sample-masks` binary end to end: tables written, reproducible bytes, appending, and a
//! clear failure (with nothing written) for every bad argument.

use layerprune_core::Design;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Command, Output};

use layerprune_core::Mask;
use layerprune_tables::{
    read_masks, read_provenance, write_evaluations, write_masks, EvaluationRow, EvaluationTable,
    MaskRow, MaskTable, Provenance,
};

fn sample_masks(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sample-masks"))
        .args(args)
        .output()
        .expect("the sample-masks binary runs")
}

fn succeed(args: &[&str]) -> String {
    let output = sample_masks(args);
    assert!(
        output.status.success(),
        "sample-masks {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs with bad arguments: must fail, name the problem, and leave `folder` empty.
fn fail_naming(args: &[&str], problem: &str, folder: &Path) {
    let before: Vec<_> = std::fs::read_dir(folder)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let output = sample_masks(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "sample-masks {args:?} succeeded");
    assert!(
        stderr.contains(problem),
        "sample-masks {args:?}: expected {problem:?} in {stderr:?}"
    );
    let after: Vec<_> = std::fs::read_dir(folder)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(before, after, "sample-masks {args:?} wrote something");
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn writes_the_published_design_scaled_to_the_model() {
    let folder = tempfile::tempdir().unwrap();
    let model = folder.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(
        model.join("manifest.json"),
        r#"{"num_blocks": 16, "other": 1}"#,
    )
    .unwrap();
    let out = folder.path().join("masks.parquet");
    let stdout = succeed(&[
        "--model",
        path_str(&model),
        "--stratified-masks",
        "100",
        "--fixed",
        "0",
        "--anchors",
        "--seed",
        "7",
        "--out",
        path_str(&out),
    ]);
    // 15 players: 2, 5, 8, 11, 14 of 32 scale to 1, 2, 4, 5, 7 (round half away from zero)
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("stratum")).count(),
        5
    );
    let table = read_masks(&out).unwrap();
    assert_eq!(table.num_blocks, 16);
    assert_eq!(table.fixed_blocks, vec![0]);
    // The model is recorded by the id its evaluation tables carry (its manifest's sha256).
    let manifest_id =
        layerprune_core::sha256_hex(&std::fs::read(model.join("manifest.json")).unwrap());
    assert_eq!(
        read_provenance(&out).unwrap().inputs.get("model"),
        Some(&manifest_id)
    );
    let mut strata: BTreeMap<usize, usize> = BTreeMap::new();
    for row in table
        .rows
        .iter()
        .filter(|row| row.design == Design::Stratum)
    {
        *strata.entry(row.mask.num_removed()).or_default() += 1;
    }
    assert_eq!(
        strata,
        BTreeMap::from([(1, 15), (2, 22), (4, 21), (5, 21), (7, 21)])
    );
    // the single removals were all drawn in stratum 1; the full model is the only anchor
    let anchors: Vec<&MaskRow> = table
        .rows
        .iter()
        .filter(|r| r.design == Design::Anchor)
        .collect();
    assert_eq!(anchors.len(), 1);
    assert_eq!(anchors[0].mask, Mask::full(16));
    assert!(table.rows.iter().all(|row| row.mask.is_kept(0)));
    let distinct: HashSet<&Mask> = table.rows.iter().map(|row| &row.mask).collect();
    assert_eq!(distinct.len(), table.rows.len());
    let provenance = read_provenance(&out).unwrap();
    assert_eq!(provenance.tool, "sample-masks");
    assert_eq!(provenance.seed, Some(7));
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("masks.parquet");
    let args = |seed: &'static str| {
        vec![
            "--num-blocks",
            "24",
            "--strata",
            "3,6,9",
            "--stratified-masks",
            "300",
            "--complement-pairs",
            "--permutation-chains",
            "2",
            "--seed",
            seed,
            "--out",
            path_str(&out),
        ]
    };
    succeed(&args("5"));
    let first = std::fs::read(&out).unwrap();
    succeed(&args("5"));
    assert_eq!(first, std::fs::read(&out).unwrap());
    succeed(&args("6"));
    assert_ne!(first, std::fs::read(&out).unwrap());
    // nothing but the table is left in the folder
    assert_eq!(std::fs::read_dir(folder.path()).unwrap().count(), 1);
}

#[test]
fn appending_adds_only_masks_not_yet_in_the_table() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("masks.parquet");
    let round = |masks: &str, seed: &str| {
        succeed(&[
            "--num-blocks",
            "10",
            "--strata",
            "2,3",
            "--stratified-masks",
            masks,
            "--complement-pairs",
            "--append",
            "--seed",
            seed,
            "--out",
            path_str(&out),
        ])
    };
    round("20", "1");
    let first = read_masks(&out).unwrap();
    // 20 pairs and the empty and full coalitions (the second round has them already).
    assert_eq!(first.rows.len(), 42);
    round("30", "1");
    let second = read_masks(&out).unwrap();
    assert_eq!(second.rows.len(), 102);
    assert_eq!(second.rows[..42], first.rows[..]);
    let distinct: HashSet<&Mask> = second.rows.iter().map(|row| &row.mask).collect();
    assert_eq!(distinct.len(), 102);
    let new_groups: HashSet<i64> = second.rows[42..]
        .iter()
        .filter_map(|r| r.group_id)
        .collect();
    assert_eq!(new_groups, (20..50).collect());
    assert!(read_provenance(&out)
        .unwrap()
        .inputs
        .contains_key("appended"));

    // While another run holds the table, an append is refused (it would rewrite the table
    // without the other run's new rows), and the table is left as it was.
    let running = layerprune_core::FileLock::try_acquire(&out).unwrap();
    let output = sample_masks(&[
        "--num-blocks",
        "10",
        "--stratified-masks",
        "5",
        "--append",
        "--seed",
        "2",
        "--out",
        path_str(&out),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another run"), "{stderr}");
    assert_eq!(read_masks(&out).unwrap().rows.len(), 102);
    drop(running);
}

#[test]
fn bad_arguments_fail_with_a_clear_message_and_write_nothing() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("masks.parquet");
    let out = path_str(&out);
    let run = |extra: &[&str], problem: &str| {
        let mut args = vec!["--out", out];
        args.extend_from_slice(extra);
        fail_naming(&args, problem, folder.path());
    };
    // 10^8 masks of 80 blocks need about 137 GB: refused before any is drawn (the estimate of
    // 176 B a row, 17.6 GB, let it start on a 23 GB machine and abort part-way).
    run(
        &["--num-blocks", "80", "--stratified-masks", "100000000"],
        "would need about 143.1 GiB of memory",
    );
    run(
        &[
            "--num-blocks",
            "8",
            "--strata",
            "2,9",
            "--stratified-masks",
            "10",
        ],
        "stratum 9",
    );
    // A stratum past i64 is reported as given (it was "stratum 9223372036854775807").
    run(
        &[
            "--num-blocks",
            "8",
            "--strata",
            "2,18446744073709551615",
            "--stratified-masks",
            "10",
        ],
        "stratum 18446744073709551615 (number of removed blocks) is out of range",
    );
    run(
        &[
            "--num-blocks",
            "8",
            "--strata",
            "-1",
            "--stratified-masks",
            "10",
        ],
        "\"-1\" is not a stratum",
    );
    run(
        &["--num-blocks", "8", "--stratified-masks", "0"],
        "0 is not in 1..=100000000",
    );
    // What only a draw or a pilot reads would be ignored.
    run(
        &["--num-blocks", "8", "--anchors", "--seed", "3"],
        "--seed seeds the stratified masks and the permutation chains",
    );
    run(
        &["--num-blocks", "8", "--anchors", "--allow-incomplete"],
        "--allow-incomplete is for the --pilot table",
    );
    run(
        &[
            "--num-blocks",
            "8",
            "--stratified-masks",
            "5",
            "--fixed",
            "1,8",
        ],
        "fixed block 8",
    );
    run(&["--num-blocks", "24", "--enumerate"], "enumeration");
    run(
        &[
            "--num-blocks",
            "8",
            "--ratios",
            "0.2,1.5",
            "--stratified-masks",
            "5",
        ],
        "\"1.5\" is not a pruning ratio",
    );
    run(&["--num-blocks", "8"], "nothing to sample");
    // Neither block count: the message offers both ways to give one (it named only
    // --num-blocks, not the --model of the first example).
    run(
        &["--stratified-masks", "10"],
        "<--num-blocks <NUM_BLOCKS>|--model <MODEL>>",
    );
    run(
        &[
            "--num-blocks",
            "6",
            "--model",
            "model/",
            "--stratified-masks",
            "10",
        ],
        "cannot be used with",
    );
    run(
        &[
            "--num-blocks",
            "8",
            "--stratified-masks",
            "5",
            "--allocation",
            "neyman",
        ],
        "--pilot",
    );
    run(
        &["--num-blocks", "8", "--permutation-chains", "0"],
        "0 is not in 1..=10000000",
    );
    let missing_model = folder.path().join("no-model");
    run(
        &["--model", path_str(&missing_model), "--anchors"],
        "no-model: no such model folder",
    );

    // A pilot table that lacks a stratum the allocation needs.
    let inputs = tempfile::tempdir().unwrap();
    let pilot = inputs.path().join("pilot.parquet");
    let rows = (0..8)
        .map(|block| EvaluationRow {
            mask: Mask::from_removed(8, &[block]).unwrap(),
            nll: 2.0 + block as f64 / 10.0,
            ppl: (2.0 + block as f64 / 10.0).exp(),
            utility: 1.0 / (1.0 + block as f64),
            tokens_scored: 128,
            seconds: 0.1,
            window_nlls: None,
        })
        .collect();
    let evaluations = EvaluationTable {
        num_blocks: 8,
        model_id: "model".into(),
        dataset_id: "data".into(),
        fixed_blocks: Vec::new(),
        full_model_nll: Some(2.0),
        complete: true,
        evaluated_on: None,
        rows,
        partial_windows: Vec::new(),
    };
    let provenance = Provenance::new("test", "0", vec![]);
    write_evaluations(&pilot, &evaluations, &provenance).unwrap();
    let pilot_arg = path_str(&pilot);
    run(
        &[
            "--num-blocks",
            "8",
            "--strata",
            "1,2",
            "--stratified-masks",
            "10",
            "--allocation",
            "neyman",
            "--pilot",
            pilot_arg,
        ],
        "stratum 2",
    );
    // With the stratum present the same pilot works.
    let ok = inputs.path().join("ok.parquet");
    succeed(&[
        "--num-blocks",
        "8",
        "--strata",
        "1",
        "--stratified-masks",
        "3",
        "--allocation",
        "neyman",
        "--pilot",
        pilot_arg,
        "--out",
        path_str(&ok),
    ]);
    assert_eq!(read_masks(&ok).unwrap().rows.len(), 3);
    assert!(read_provenance(&ok).unwrap().inputs.contains_key("pilot"));

    // Appending to a table of another model is refused, and the table is left as it was.
    let other = inputs.path().join("other.parquet");
    let table = MaskTable {
        num_blocks: 6,
        fixed_blocks: vec![],
        rows: vec![MaskRow {
            mask: Mask::full(6),
            design: Design::Anchor,
            group_id: None,
            position: None,
        }],
    };
    write_masks(&other, &table, &provenance).unwrap();
    let before = std::fs::read(&other).unwrap();
    let output = sample_masks(&[
        "--num-blocks",
        "8",
        "--anchors",
        "--append",
        "--out",
        path_str(&other),
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("6 blocks"));
    assert_eq!(before, std::fs::read(&other).unwrap());
}

/// A model folder of 8 blocks whose manifest differs by `tag` (another model id); its id.
fn write_model(dir: &Path, tag: usize) -> String {
    std::fs::create_dir(dir).unwrap();
    let manifest = format!(r#"{{"num_blocks": 8, "tag": {tag}}}"#);
    std::fs::write(dir.join("manifest.json"), &manifest).unwrap();
    layerprune_core::sha256_hex(manifest.as_bytes())
}

/// A complete pilot of model `model_id` over 8 blocks: every removal of one or two blocks, of
/// utility `utility(a, b)` with blocks `a` and `b` removed (`a == b` for one).
fn write_pilot(path: &Path, model_id: &str, utility: impl Fn(usize, usize) -> f64) {
    let rows = (0..8)
        .flat_map(|a| (a..8).map(move |b| (a, b)))
        .map(|(a, b)| EvaluationRow {
            mask: Mask::from_removed(8, &[a, b]).unwrap(),
            nll: 2.0,
            ppl: 2f64.exp(),
            utility: utility(a, b),
            tokens_scored: 128,
            seconds: 0.1,
            window_nlls: None,
        })
        .collect();
    let evaluations = EvaluationTable {
        num_blocks: 8,
        model_id: model_id.into(),
        dataset_id: "data".into(),
        fixed_blocks: Vec::new(),
        full_model_nll: Some(2.0),
        complete: true,
        evaluated_on: None,
        rows,
        partial_windows: Vec::new(),
    };
    write_evaluations(path, &evaluations, &Provenance::new("test", "0", vec![])).unwrap();
}

/// A pilot measured on another model of the same block count, and a table appended to that was
/// drawn for another model, are refused naming both models (the rule of shapley and
/// apply-prune), unless --allow-mixed-inputs; an append keeps the table's model.
#[test]
fn inputs_of_another_model_are_refused_unless_allowed() {
    let folder = tempfile::tempdir().unwrap();
    let (model_a, model_b) = (folder.path().join("a"), folder.path().join("b"));
    let (id_a, id_b) = (write_model(&model_a, 1), write_model(&model_b, 2));
    assert_ne!(id_a, id_b);
    let inputs = tempfile::tempdir().unwrap();
    let pilot = inputs.path().join("pilot.parquet");
    write_pilot(&pilot, &id_a, |a, b| 1.0 / (1 + a * b) as f64);
    let out = folder.path().join("masks.parquet");
    let neyman = |model: &Path, extra: &[&str]| {
        let mut args = vec![
            "--model".to_string(),
            path_str(model).to_string(),
            "--strata".into(),
            "1,2".into(),
            "--stratified-masks".into(),
            "6".into(),
            "--allocation".into(),
            "neyman".into(),
            "--pilot".into(),
            path_str(&pilot).to_string(),
            "--out".into(),
            path_str(&out).to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    fn as_strs(args: &[String]) -> Vec<&str> {
        args.iter().map(String::as_str).collect()
    }
    let run = |args: Vec<String>| sample_masks(&as_strs(&args));

    // The pilot of model a for model b.
    let refused = neyman(&model_b, &[]);
    fail_naming(
        &as_strs(&refused),
        &format!(
            "pilot table {} was measured on another model ({id_a}) than --model ({id_b}); give \
             --allow-mixed-inputs to use them together",
            pilot.display()
        ),
        folder.path(),
    );
    let output = run(neyman(&model_b, &["--allow-mixed-inputs"]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("used anyway (--allow-mixed-inputs)") && stderr.contains(&id_a),
        "{stderr}"
    );
    // The pilot's own model takes it without a word.
    let output = run(neyman(&model_a, &[]));
    assert!(output.status.success());
    assert!(!String::from_utf8_lossy(&output.stderr).contains("WARN"));
    assert_eq!(read_provenance(&out).unwrap().inputs["model"], id_a);

    // An append given only a block count keeps the table's model.
    let append = |extra: &[&str]| {
        let mut args = vec!["--anchors", "--append", "--out", path_str(&out)];
        args.extend_from_slice(extra);
        sample_masks(&args)
    };
    let output = append(&["--num-blocks", "8"]);
    assert!(output.status.success());
    let provenance = read_provenance(&out).unwrap();
    assert_eq!(provenance.inputs["model"], id_a);
    assert!(provenance.inputs.contains_key("appended"));
    // Another model is refused, and the table is left as it was.
    let before = std::fs::read(&out).unwrap();
    let output = append(&["--model", path_str(&model_b)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "the --append table {} holds masks drawn for another model ({id_a}) than --model \
             ({id_b}); give --allow-mixed-inputs",
            out.display()
        )),
        "{stderr}"
    );
    assert_eq!(before, std::fs::read(&out).unwrap());
    // Allowed, the table keeps its model and records the other beside it (until 2026-12-07 it
    // recorded model b alone, as if every mask had been drawn for it).
    let output = append(&["--model", path_str(&model_b), "--allow-mixed-inputs"]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("used anyway"));
    let provenance = read_provenance(&out).unwrap();
    assert_eq!(provenance.inputs["model"], id_a);
    assert_eq!(provenance.inputs["appended_models"], id_b);

    // With neither a pilot nor an append, the flag has nothing to allow.
    let alone = folder.path().join("alone.parquet");
    fail_naming(
        &[
            "--num-blocks",
            "8",
            "--anchors",
            "--allow-mixed-inputs",
            "--out",
            path_str(&alone),
        ],
        "--allow-mixed-inputs is for a --pilot or an --append table",
        folder.path(),
    );
    // Nor where no two models are compared: a pilot with a block count only, or an --append
    // whose table does not exist yet.
    fail_naming(
        &[
            "--num-blocks",
            "8",
            "--strata",
            "1,2",
            "--stratified-masks",
            "6",
            "--allocation",
            "neyman",
            "--pilot",
            path_str(&pilot),
            "--allow-mixed-inputs",
            "--out",
            path_str(&alone),
        ],
        "this run compares no two models (no --model and no existing table appended to, to \
         compare its --pilot with)",
        folder.path(),
    );
    fail_naming(
        &[
            "--model",
            path_str(&model_b),
            "--anchors",
            "--append",
            "--allow-mixed-inputs",
            "--out",
            path_str(&alone),
        ],
        "this run compares no two models (no --pilot, and no existing table appended to)",
        folder.path(),
    );
}

/// An error about the pilot's values names the pilot: one utility of 1e200 overflows the
/// variance of its stratum.
#[test]
fn a_pilot_whose_spread_overflows_is_named() {
    let folder = tempfile::tempdir().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    let pilot = inputs.path().join("bigs.parquet");
    write_pilot(
        &pilot,
        "model",
        |a, b| if (a, b) == (0, 1) { 1e200 } else { 1.0 },
    );
    let out = folder.path().join("masks.parquet");
    let output = sample_masks(&[
        "--num-blocks",
        "8",
        "--strata",
        "1,2",
        "--stratified-masks",
        "10",
        "--allocation",
        "neyman",
        "--pilot",
        path_str(&pilot),
        "--out",
        path_str(&out),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("pilot table {}", pilot.display()))
            && stderr.contains("the pilot standard deviation inf of stratum 2"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// Counts of masks past u128 (a stratum of 200 blocks) are said to be that large, not printed
/// as the saturated number (340282366920938463463374607431768211455).
#[test]
fn counts_past_u128_are_said_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("masks.parquet");
    let summary = succeed(&[
        "--num-blocks",
        "200",
        "--strata",
        "100",
        "--stratified-masks",
        "3",
        "--out",
        path_str(&out),
    ]);
    assert!(summary.contains("more than 3.4e38 available"), "{summary}");
    assert!(!summary.contains(&u128::MAX.to_string()), "{summary}");
}

/// The enumeration's 2^players rows count in the memory estimate: 20 players of a 4,096-block
/// model are a million masks of 4,096 blocks, which were allocated uncounted (the run aborted
/// when the machine ran out).
#[test]
fn an_enumeration_too_large_for_memory_is_refused_before_it_is_drawn() {
    let folder = tempfile::tempdir().unwrap();
    let out = folder.path().join("masks.parquet");
    let fixed: Vec<String> = (0..4_076).map(|block| block.to_string()).collect();
    let fixed = fixed.join(",");
    fail_naming(
        &[
            "--num-blocks",
            "4096",
            "--fixed",
            &fixed,
            "--enumerate",
            "--out",
            path_str(&out),
        ],
        "the rows of --stratified-masks, --permutation-chains and --enumerate would need about \
         64.2 GiB",
        folder.path(),
    );
}

/// Each design flag names the `design` value its rows get in the mask table (and the
/// `group_id` / `position` columns it fills), so a reader of the table finds the flag.
#[test]
fn the_help_names_the_design_each_flag_writes() {
    let output = sample_masks(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "design `stratum`",
        "design `enumeration`",
        "design `complement`",
        "design `permutation`",
        "design `anchor`",
        "`group_id`",
        "`position`",
    ] {
        assert!(help.contains(expected), "{expected:?} not in:\n{help}");
    }
}
