//! The `evaluate` stage end to end on the committed tiny model: resuming, refusing bad input.

use layerprune_core::Design;
use std::path::{Path, PathBuf};
use std::process::Command;

use layerprune_tables::{
    read_block_stats, read_evaluations, write_masks, write_tokens, MaskRow, MaskTable, Provenance,
    TokenTable,
};

fn fixture() -> PathBuf {
    layerprune_tests::tiny_model_dir()
}

fn provenance() -> Provenance {
    Provenance::new("test", "0", vec![])
}

/// Token windows (ids below 300, the fixture's vocabulary, plus `extra_id` at the end of
/// the last window when given) and a table of all 64 masks of the 6 blocks.
fn write_inputs(dir: &Path, extra_id: Option<u32>) -> (PathBuf, PathBuf) {
    let mut windows: Vec<Vec<u32>> = (0..3)
        .map(|w| (0..12).map(|t| (w * 31 + t * 7) % 300).collect())
        .collect();
    if let Some(id) = extra_id {
        windows[2][11] = id;
    }
    let tokens = dir.join("tokens.parquet");
    write_tokens(
        &tokens,
        &TokenTable::new(
            12,
            windows,
            &layerprune_tests::tiny_tokenizer_sha256(),
            "synthetic ids",
        ),
        &provenance(),
    )
    .unwrap();
    // Every mask of the 6 blocks: 64 masks, many shared prefixes.
    let rows = layerprune_tests::every_mask(6)
        .into_iter()
        .map(|mask| MaskRow {
            mask,
            design: Design::Enumeration,
            group_id: None,
            position: None,
        })
        .collect();
    let masks = dir.join("masks.parquet");
    let table = MaskTable {
        num_blocks: 6,
        fixed_blocks: vec![],
        rows,
    };
    write_masks(&masks, &table, &provenance()).unwrap();
    (tokens, masks)
}

fn evaluate(args: &[&str]) -> std::process::Output {
    evaluate_model(&fixture(), args)
}

fn evaluate_model(model: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_evaluate"))
        .args(args)
        .args(["--quiet", "--model"])
        .arg(model)
        .output()
        .expect("evaluate runs")
}

/// The stage failed with exit status 1 and a message holding every one of `needles`.
fn assert_refused(out: &std::process::Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn interrupted_then_resumed_run_equals_uninterrupted() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, masks) = write_inputs(dir.path(), None);
    let whole = dir.path().join("whole.parquet");
    let resumed = dir.path().join("resumed.parquet");
    let base = [
        "--tokens",
        path(&tokens),
        "--masks",
        path(&masks),
        "--chunk",
        "8",
    ];

    let out = evaluate(&[&base[..], &["--out", path(&whole)]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Stop after 20 masks (as a kill after a checkpoint would), then twice more.
    for limit in ["20", "25"] {
        let out = evaluate(
            &[
                &base[..],
                &["--out", path(&resumed), "--max-new-masks", limit],
            ]
            .concat(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let partial = read_evaluations(&resumed).unwrap();
        assert!(!partial.complete);
    }
    assert_eq!(read_evaluations(&resumed).unwrap().rows.len(), 45);
    let out = evaluate(&[&base[..], &["--out", path(&resumed)]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("45 of 64 masks already evaluated"));

    let whole = read_evaluations(&whole).unwrap();
    let resumed = read_evaluations(&resumed).unwrap();
    assert!(whole.complete && resumed.complete);
    assert_eq!(whole.rows.len(), 64);
    // Every row once: the pairs below stop at the shorter table, so a resumed table that lost
    // its last rows, or gained duplicates after them, would pass them.
    assert_eq!(resumed.rows.len(), whole.rows.len());
    assert_eq!(whole.full_model_nll, resumed.full_model_nll);
    for (a, b) in whole.rows.iter().zip(&resumed.rows) {
        assert_eq!(a.mask, b.mask);
        assert_eq!(a.nll, b.nll, "mask {}", a.mask);
        assert_eq!(a.utility, b.utility);
        assert_eq!(a.tokens_scored, 3 * 11);
    }
}

#[test]
fn block_statistics_cover_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), None);
    let stats = dir.path().join("stats.parquet");
    let out = evaluate(&[
        "--tokens",
        path(&tokens),
        "--out",
        path(&dir.path().join("e.parquet")),
        "--block-stats",
        path(&stats),
        "--max-run",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = read_block_stats(&stats).unwrap();
    // Runs of 1, 2, 3 blocks over 6 blocks: 6 + 5 + 4.
    assert_eq!(table.rows.len(), 15);
    for row in &table.rows {
        assert!((-1.0..=1.0).contains(&row.mean_cosine));
        assert!((0.0..=1.0).contains(&row.angular_distance));
        assert!(row.start_block + row.run_length <= 6);
    }
}

#[test]
fn bad_input_is_refused_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), None);
    let out_file = dir.path().join("out.parquet");

    // A mask of the wrong length.
    let out = evaluate(&[
        "--tokens",
        path(&tokens),
        "--mask",
        "11111",
        "--out",
        path(&out_file),
    ]);
    assert_refused(&out, &["5 entries"]);
    assert!(!out_file.exists());

    // A flag of a zero-shot task run on a run over token windows, and the reverse: refused, not
    // ignored (the choices table asked for would never be written).
    let choices = dir.path().join("choices.parquet");
    for (flags, refused) in [
        (
            vec!["--choices-out", path(&choices)],
            "--choices-out is for a run over zero-shot tasks",
        ),
        (
            vec!["--max-length", "64"],
            "--max-length is for a run over zero-shot tasks",
        ),
        (
            vec!["--task-subsample", "3"],
            "--task-subsample is for a run over zero-shot tasks",
        ),
        (
            vec!["--bos", "off"],
            "--bos is for a run over zero-shot tasks",
        ),
        (
            vec!["--task-metric", "acc-norm"],
            "--task-metric is for a run over zero-shot tasks",
        ),
        (
            vec!["--max-run", "3"],
            "--max-run is the longest run of blocks in --block-stats",
        ),
        // Shards of inline masks could never be merged (the merge checks the --masks table).
        (
            vec!["--mask", "1111", "--shard", "0/2"],
            "an inline --mask is in no table",
        ),
    ] {
        let mut args = vec!["--tokens", path(&tokens), "--out", path(&out_file)];
        args.extend(flags);
        assert_refused(&evaluate(&args), &[refused]);
    }
    let out = evaluate(&[
        "--tasks",
        "piqa",
        "--task-data",
        path(dir.path()),
        "--block-stats",
        path(&choices),
        "--out",
        path(&out_file),
    ]);
    assert_refused(&out, &["--block-stats is for a run over token windows"]);
    assert!(!out_file.exists() && !choices.exists());
    // The task run batches by --batch-tokens: the token windows' batching flags are refused.
    for flag in ["--mask-batch", "--batch-windows"] {
        let out = evaluate(&[
            "--tasks",
            "piqa",
            "--task-data",
            path(dir.path()),
            flag,
            "2",
            "--out",
            path(&out_file),
        ]);
        assert_refused(&out, &[flag, "--batch-tokens"]);
    }
    // At least one new mask, or the run does nothing (a usage error, exit 2).
    let out = evaluate(&[
        "--tokens",
        path(&tokens),
        "--max-new-masks",
        "0",
        "--out",
        path(&out_file),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!out_file.exists());

    // Token ids outside the vocabulary.
    let big = dir.path().join("big");
    std::fs::create_dir(&big).unwrap();
    let (big_tokens, _) = write_inputs(&big, Some(100_000));
    let out = evaluate(&["--tokens", path(&big_tokens), "--out", path(&out_file)]);
    assert_refused(&out, &["outside the model's vocabulary"]);
    assert!(!out_file.exists());

    // Ids inside the vocabulary, cut by another tokenizer (as its recorded hash says).
    let mut table = layerprune_tables::read_tokens(&tokens).unwrap();
    table.tokenizer_sha256 = "0".repeat(64);
    let foreign = dir.path().join("foreign-tokens.parquet");
    write_tokens(&foreign, &table, &provenance()).unwrap();
    let out = evaluate(&["--tokens", path(&foreign), "--out", path(&out_file)]);
    assert_refused(
        &out,
        &["foreign-tokens.parquet", "made with another tokenizer"],
    );
    assert!(!out_file.exists());
    // The same tokenizer saved in another layout (compact, as tokenizers' save(pretty=False)
    // writes it) is the same tokenizer: its canonical JSON has the model's id.
    let model_tokenizer = std::fs::read(fixture().join("tokenizer.json")).unwrap();
    let compact: serde_json::Value = serde_json::from_slice(&model_tokenizer).unwrap();
    table.tokenizer_sha256 = layerprune_core::tokenizer_sha256(compact.to_string().as_bytes());
    assert_ne!(
        table.tokenizer_sha256,
        layerprune_core::sha256_hex(&model_tokenizer)
    );
    let same = dir.path().join("same-tokenizer.parquet");
    write_tokens(&same, &table, &provenance()).unwrap();
    let out = evaluate(&["--tokens", path(&same), "--out", path(&out_file)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&out_file).unwrap();

    // A model whose part does not match its hash.
    let broken = dir.path().join("broken");
    layerprune_tests::copy_dir(&fixture(), &broken);
    let mut block = std::fs::read(broken.join("block_002.onnx")).unwrap();
    let last = block.len() - 1;
    block[last] ^= 0xff;
    std::fs::write(broken.join("block_002.onnx"), block).unwrap();
    let out = evaluate_model(
        &broken,
        &["--tokens", path(&tokens), "--out", path(&out_file)],
    );
    assert_refused(&out, &["block_002.onnx", "sha256"]);
    // The inputs are read before the model is opened (every weight file hashed: seconds to
    // minutes on a large model): a token or mask table that is not there is what the run says.
    let nonexistent = dir.path().join("nonexistent.parquet");
    for flag in ["--tokens", "--masks"] {
        let mut args = vec!["--tokens", path(&tokens), "--out", path(&out_file)];
        args.extend([flag, path(&nonexistent)]);
        if flag == "--tokens" {
            args.drain(..2);
        }
        let out = evaluate_model(&broken, &args);
        assert_refused(&out, &["nonexistent.parquet"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("block_002.onnx"), "{stderr}");
        assert!(!out_file.exists());
    }

    // Windows longer than a fused-attention export's rotary tables (its manifest says how
    // long: 12-token windows, tables for 8 positions).
    let fused = dir.path().join("fused");
    layerprune_tests::copy_tiny_model_with_manifest(&fused, |manifest| {
        manifest["attention_kernel"] = "fused".into();
        manifest["rotary_positions"] = 8.into();
    });
    let out = evaluate_model(
        &fused,
        &["--tokens", path(&tokens), "--out", path(&out_file)],
    );
    assert_refused(
        &out,
        &["at most 8 tokens", "rotary_positions", "windows have 12"],
    );
    assert!(!out_file.exists());

    // A missing manifest.
    std::fs::remove_file(broken.join("manifest.json")).unwrap();
    let out = evaluate_model(
        &broken,
        &["--tokens", path(&tokens), "--out", path(&out_file)],
    );
    assert_refused(&out, &["manifest.json"]);
    assert!(!out_file.exists());
}

#[test]
fn cuda_requested_without_it_is_an_error_not_a_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), None);
    let out_file = dir.path().join("out.parquet");
    // The CPU build of ONNX Runtime has no CUDA execution provider.
    let out = evaluate(&[
        "--tokens",
        path(&tokens),
        "--device",
        "cuda:0",
        "--out",
        path(&out_file),
    ]);
    assert_refused(&out, &["--device cuda (cuda:0) requested but unavailable"]);
    assert!(!out_file.exists());
}

#[test]
fn an_output_of_another_dataset_is_refused_unless_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), None);
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (other_tokens, _) = write_inputs(&other, Some(7));
    let out_file = dir.path().join("out.parquet");
    let first = evaluate(&["--tokens", path(&tokens), "--out", path(&out_file)]);
    assert!(first.status.success());
    let before = std::fs::read(&out_file).unwrap();

    let refused = evaluate(&["--tokens", path(&other_tokens), "--out", path(&out_file)]);
    assert_refused(&refused, &["--overwrite"]);
    assert_eq!(
        std::fs::read(&out_file).unwrap(),
        before,
        "refused run left the file as it was"
    );

    let replaced = evaluate(&[
        "--tokens",
        path(&other_tokens),
        "--out",
        path(&out_file),
        "--overwrite",
    ]);
    assert!(replaced.status.success());
    let table = read_evaluations(&out_file).unwrap();
    assert_ne!(std::fs::read(&out_file).unwrap(), before);
    assert!(table.complete);
}

#[test]
fn three_shards_merged_equal_one_run_and_bad_merges_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, masks) = write_inputs(dir.path(), None);
    // `evaluate` of every mask, or of one shard's, into `out`.
    let run = |shard: Option<&str>, out: &Path| {
        let mut args = vec![
            "--tokens",
            path(&tokens),
            "--masks",
            path(&masks),
            "--out",
            path(out),
        ];
        args.extend(shard.iter().flat_map(|shard| ["--shard", shard]));
        evaluate(&args)
    };
    let succeeded = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let whole = dir.path().join("whole.parquet");
    succeeded(run(None, &whole));

    let shards: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("shard{i}.parquet")))
        .collect();
    let mut sizes = Vec::new();
    for (i, shard) in shards.iter().enumerate() {
        succeeded(run(Some(&format!("{i}/3")), shard));
        sizes.push(read_evaluations(shard).unwrap().rows.len());
    }
    assert_eq!(
        sizes.iter().sum::<usize>(),
        64,
        "each mask in exactly one shard: {sizes:?}"
    );
    assert!(sizes.iter().all(|&n| n > 0), "{sizes:?}");

    let merged = dir.path().join("merged.parquet");
    let merge = |inputs: &[&PathBuf], out_file: &Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_evaluate"));
        command.args(["--masks", path(&masks), "--out", path(out_file), "--merge"]);
        command.args(inputs.iter().map(|p| path(p)));
        command.output().unwrap()
    };
    // A merge into the output of a run in progress (which holds its lock) is refused, not
    // replaced by that run's next checkpoint.
    let running = layerprune_core::FileLock::try_acquire(&merged).unwrap();
    let busy = merge(&[&shards[0], &shards[1], &shards[2]], &merged);
    assert_refused(&busy, &["merged.parquet", "in use by another run"]);
    assert!(!merged.exists());
    drop(running);
    // A merge runs no model: a flag of a run of the model would be ignored, so it is refused,
    // every such flag named.
    let mut ignoring = Command::new(env!("CARGO_BIN_EXE_evaluate"));
    ignoring.args(["--masks", path(&masks), "--out", path(&merged)]);
    ignoring.args(["--model", path(&fixture()), "--tokens", path(&tokens)]);
    ignoring.args([
        "--device",
        "cuda",
        "--mask",
        "111111",
        "--max-new-masks",
        "1",
    ]);
    ignoring.args([
        "--merge",
        path(&shards[0]),
        path(&shards[1]),
        path(&shards[2]),
    ]);
    assert_refused(
        &ignoring.output().unwrap(),
        &["would ignore --device, --model, --tokens, --mask, --max-new-masks"],
    );
    assert!(!merged.exists());
    let merging = merge(&[&shards[0], &shards[1], &shards[2]], &merged);
    // Its report on stdout, as every run of the stage.
    assert!(
        String::from_utf8_lossy(&merging.stdout).starts_with("merged 3 shards: 64 rows into "),
        "{}",
        String::from_utf8_lossy(&merging.stdout)
    );
    succeeded(merging);
    let whole = read_evaluations(&whole).unwrap();
    let merged_table = read_evaluations(&merged).unwrap();
    assert!(merged_table.complete);
    assert_eq!(whole.rows.len(), merged_table.rows.len());
    for (a, b) in whole.rows.iter().zip(&merged_table.rows) {
        assert_eq!(a.mask, b.mask);
        assert_eq!(a.nll, b.nll, "mask {}", a.mask);
        assert_eq!(a.utility, b.utility, "mask {}", a.mask);
    }
    // Merged again over its own output: the same game, replaced. Over the evaluations of
    // another dataset: refused as a run over the windows refuses them, unless --overwrite.
    succeeded(merge(&[&shards[0], &shards[1], &shards[2]], &merged));
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (other_tokens, _) = write_inputs(&other, Some(7));
    let precious = dir.path().join("precious.parquet");
    succeeded(evaluate(&[
        "--tokens",
        path(&other_tokens),
        "--out",
        path(&precious),
    ]));
    let before = std::fs::read(&precious).unwrap();
    let all = [&shards[0], &shards[1], &shards[2]];
    let over = merge(&all, &precious);
    assert_refused(
        &over,
        &["holds the evaluations of another game", "--overwrite"],
    );
    assert_eq!(std::fs::read(&precious).unwrap(), before);
    let mut replacing = Command::new(env!("CARGO_BIN_EXE_evaluate"));
    replacing.args([
        "--masks",
        path(&masks),
        "--out",
        path(&precious),
        "--overwrite",
    ]);
    replacing.arg("--merge").args(all.iter().map(|p| path(p)));
    succeeded(replacing.output().unwrap());
    assert_eq!(read_evaluations(&precious).unwrap().rows.len(), 64);

    let refused = dir.path().join("refused.parquet");
    let missing = merge(&[&shards[0], &shards[2]], &refused);
    assert_refused(&missing, &["is in no shard"]);
    let duplicated = merge(&[&shards[0], &shards[1], &shards[2], &shards[1]], &refused);
    assert_refused(&duplicated, &["more than one shard", "shard1.parquet and"]);
    // Shards measured on other devices do not merge, whichever shard comes first (the first
    // here records none, as a table from before the entry).
    for (shard, evaluated_on) in [
        (0, None),
        (2, Some("cuda, tf32 on, mask batch 1, windows a pass 0")),
    ] {
        let mut table = read_evaluations(&shards[shard]).unwrap();
        table.evaluated_on = evaluated_on.map(String::from);
        let provenance = layerprune_tables::read_provenance(&shards[shard]).unwrap();
        layerprune_tables::write_evaluations(&shards[shard], &table, &provenance).unwrap();
    }
    let elsewhere = merge(&[&shards[0], &shards[1], &shards[2]], &refused);
    assert_refused(
        &elsewhere,
        &["shard2.parquet: measured on cuda", "shard1.parquet on cpu"],
    );
    assert!(!refused.exists());

    // A shard resumes only rows of masks it owns: another shard count's table, or an
    // unsharded run's, would be written as this shard's; an unsharded run may resume a shard.
    let before = std::fs::read(&shards[0]).unwrap();
    assert_refused(
        &run(Some("0/2"), &shards[0]),
        &[
            "cannot resume: mask",
            "not shard 0/2's (the table is shard 0/3's)",
        ],
    );
    assert_eq!(std::fs::read(&shards[0]).unwrap(), before);
    let grown = dir.path().join("grown.parquet");
    std::fs::copy(&shards[0], &grown).unwrap();
    succeeded(run(None, &grown));
    assert_eq!(read_evaluations(&grown).unwrap().rows.len(), 64);
    assert_refused(
        &run(Some("1/3"), &grown),
        &["not shard 1/3's (the table is not a shard's)"],
    );
    succeeded(run(Some("0/3"), &shards[0]));
}

/// A second run on an output another run is writing is refused at once (it would rewrite the
/// file without the other run's rows), the file untouched; once that run ends, it proceeds.
#[test]
fn an_output_another_run_is_writing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, masks) = write_inputs(dir.path(), None);
    let out_file = dir.path().join("out.parquet");
    let args = [
        "--tokens",
        path(&tokens),
        "--masks",
        path(&masks),
        "--out",
        path(&out_file),
        "--max-new-masks",
        "5",
    ];
    let first = evaluate(&args);
    assert!(first.status.success());
    let before = std::fs::read(&out_file).unwrap();

    // What a run in progress holds (as another process would).
    let running = layerprune_core::FileLock::try_acquire(&out_file).unwrap();
    let refused = evaluate(&args);
    assert_refused(&refused, &["out.parquet", "in use by another run"]);
    assert_eq!(std::fs::read(&out_file).unwrap(), before);
    // Refused at once, before the model is opened (hashing a 7B model's weights takes about
    // 20 s; until 2026-12-07 the lock was taken after): no graph opened, and a model folder
    // that is not there is not what the refusal is about.
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!stderr.contains("opened the"), "{stderr}");
    let refused = evaluate_model(&dir.path().join("no-model"), &args);
    assert_refused(&refused, &["out.parquet", "in use by another run"]);
    assert_eq!(std::fs::read(&out_file).unwrap(), before);

    drop(running);

    // Rows another device measured (a GPU's differ in the last digits) are not resumed here.
    let mut on_a_gpu = read_evaluations(&out_file).unwrap();
    assert_eq!(on_a_gpu.evaluated_on.as_deref(), Some("cpu"));
    on_a_gpu.evaluated_on = Some("cuda, tf32 on".into());
    let provenance = layerprune_tables::read_provenance(&out_file).unwrap();
    layerprune_tables::write_evaluations(&out_file, &on_a_gpu, &provenance).unwrap();
    let measured_elsewhere = std::fs::read(&out_file).unwrap();
    let refused = evaluate(&args);
    assert_refused(
        &refused,
        &["out.parquet", "measured on cuda, tf32 on", "on cpu"],
    );
    assert_eq!(std::fs::read(&out_file).unwrap(), measured_elsewhere);
    on_a_gpu.evaluated_on = Some("cpu".into());
    layerprune_tables::write_evaluations(&out_file, &on_a_gpu, &provenance).unwrap();

    let resumed = evaluate(&args);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(read_evaluations(&out_file).unwrap().rows.len(), 10);
    // No lock file is left beside the output.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".lock")), "{names:?}");
}

/// A checkpoint damaged outside the stage (a copy cut short: Make's `TABLE.partial.parquet`) is
/// refused with the file named and the way out any caller can take, removing it, with what that
/// costs: a Make rule can neither add --overwrite nor change --out, which the message gave as
/// its only ways out until 2026-12-07. The file is left as it is; removed, the run measures its
/// rows again.
#[test]
fn a_damaged_checkpoint_is_named_with_a_way_out_a_pipeline_can_take() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, masks) = write_inputs(dir.path(), None);
    let checkpoint = dir.path().join("evaluations.partial.parquet");
    let args = [
        "--tokens",
        path(&tokens),
        "--masks",
        path(&masks),
        "--out",
        path(&checkpoint),
    ];
    let first = evaluate(&[&args[..], &["--max-new-masks", "5"]].concat());
    assert!(first.status.success());
    let whole = std::fs::read(&checkpoint).unwrap();
    let cut = &whole[..whole.len() * 2 / 3];
    std::fs::write(&checkpoint, cut).unwrap();
    let refused = evaluate(&args);
    let first_line = format!(
        "evaluate: error: --out {}: cannot be read, so it cannot be resumed; remove it (the rows \
         it held are measured again), or choose another --out\n",
        checkpoint.display()
    );
    assert_refused(&refused, &[&first_line, "not a readable Parquet file"]);
    assert_eq!(std::fs::read(&checkpoint).unwrap(), cut);
    std::fs::remove_file(&checkpoint).unwrap();
    let measured_again = evaluate(&args);
    assert!(
        measured_again.status.success(),
        "{}",
        String::from_utf8_lossy(&measured_again.stderr)
    );
    assert_eq!(read_evaluations(&checkpoint).unwrap().rows.len(), 64);
}

/// A file at --out that can be read but is not a checkpoint this run can resume is kept, with
/// the advice for another run's table (--overwrite, another --out), not called damaged (whose
/// advice, removing it, would lose what it holds): an evaluation table that records no
/// provenance (another tool's, an older build's), and a user's file that is no Parquet file at
/// all. Until 2026-12-07 both were "cannot be read … remove it (the rows it held are measured
/// again)".
#[test]
fn a_readable_table_not_resumable_here_is_kept_with_the_overwrite_advice() {
    let succeeded = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let (tokens, masks) = write_inputs(dir.path(), None);
    let out_file = dir.path().join("out.parquet");
    let args = [
        "--tokens",
        path(&tokens),
        "--masks",
        path(&masks),
        "--out",
        path(&out_file),
        "--max-new-masks",
        "2",
    ];
    succeeded(evaluate(&args));
    // The provenance's `tool` entry renamed in the footer (same length: the file stays whole).
    let mut bytes = std::fs::read(&out_file).unwrap();
    let key = b"layerprune.tool";
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("the tool entry");
    bytes[at + key.len() - 1] = b'X';
    std::fs::write(&out_file, &bytes).unwrap();
    assert!(
        read_evaluations(&out_file).is_ok(),
        "still a readable table"
    );
    let advice = format!(
        "evaluate: error: --out {}: pass --overwrite to replace it, or choose another --out\n",
        out_file.display()
    );
    let refused = evaluate(&args);
    assert_refused(
        &refused,
        &[
            &advice,
            "cannot resume: it does not record which run wrote it",
        ],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!stderr.contains("remove it"), "{stderr}");
    assert_eq!(std::fs::read(&out_file).unwrap(), bytes);
    succeeded(evaluate(&[&args[..], &["--overwrite"]].concat()));

    let notes = dir.path().join("notes.parquet");
    std::fs::write(&notes, b"my notes, not a table").unwrap();
    let args = [
        "--tokens",
        path(&tokens),
        "--masks",
        path(&masks),
        "--out",
        path(&notes),
    ];
    let refused = evaluate(&args);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("remove it"), "{stderr}");
    assert!(stderr.contains("--overwrite"), "{stderr}");
    assert_eq!(std::fs::read(&notes).unwrap(), b"my notes, not a table");
}

/// A stage that runs the model writes nothing outside its outputs: ONNX Runtime 1.31.1 keeps a
/// telemetry store under `$HOME/.cache/Microsoft/DeveloperTools/.onnxruntime/` (an SQLite
/// database with its WAL, and a device id), written on every run until 2026-12-07 (and under
/// `ulimit -f 12` the stage was killed writing it). Run here with a fresh, empty HOME and
/// without the switch in the environment: the stage turns telemetry off itself, at its start
/// (`layerprune_cli_common::run`, while it has one thread; not late, in
/// `layerprune_runtime::environment`, which warns where it has to), and HOME stays empty.
#[test]
fn a_run_of_the_model_writes_nothing_under_home() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, masks) = write_inputs(dir.path(), None);
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_evaluate"))
        .args(["--tokens", path(&tokens), "--masks", path(&masks)])
        .args(["--out", path(&dir.path().join("out.parquet"))])
        .args(["--max-new-masks", "2", "--quiet", "--model"])
        .arg(fixture())
        .env("HOME", &home)
        .env_remove("XDG_CACHE_HOME")
        .env_remove(layerprune_runtime::TELEMETRY_SWITCH.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("telemetry was not turned off"), "{stderr}");
    let written = layerprune_tests::snapshot(&home);
    assert!(
        written.is_empty(),
        "written under HOME: {:?}",
        written.keys()
    );
    // Nor an empty folder.
    assert_eq!(std::fs::read_dir(&home).unwrap().count(), 0);
}

/// The help names values by what the tables call them (`--mask <MASK_ID>`, `--shard <I/N>`,
/// `--merge <SHARD_TABLE>...`), not by the fields that hold them, and says what the stage
/// evaluates on (calibration or held-out token tables, or tasks), not "calibration tokens"
/// alone; `--task-metric` takes the accuracy table's column name `acc_norm` as well as
/// `acc-norm` (tools/tasks' `--metric` spells it so).
#[test]
fn the_help_names_values_as_the_tables_do() {
    let output = Command::new(env!("CARGO_BIN_EXE_evaluate"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "--mask <MASK_ID>",
        "--shard <I/N>",
        "--merge <SHARD_TABLE>...",
        "`run_length`",
        "`acc_norm` column",
        "held-out",
    ] {
        assert!(help.contains(expected), "{expected:?} not in:\n{help}");
    }
    assert!(!help.contains("INLINE_MASKS"), "{help}");
    // The column's spelling parses (a usage error, status 2, if it did not): refused only as
    // a task setting without --tasks.
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), None);
    let out = dir.path().join("out.parquet");
    let args = ["--tokens", path(&tokens), "--out", path(&out)];
    for spelling in ["acc_norm", "acc-norm"] {
        let mut with_metric = args.to_vec();
        with_metric.extend(["--task-metric", spelling]);
        assert_refused(
            &evaluate(&with_metric),
            &["--task-metric is for a run over zero-shot tasks"],
        );
    }
}

/// A reader of stderr that has stopped reading (`evaluate 2>&1 | head -1`) does not stop the
/// stage: it writes its table and exits 0 (tracing-subscriber's writer panicked on the broken
/// pipe: exit 101 and no table), and an error at exit is still exit 1, not a panic's 101.
#[test]
fn a_closed_stderr_is_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, masks) = write_inputs(dir.path(), None);
    let run = |out: &Path| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Command::new(env!("CARGO_BIN_EXE_evaluate"))
            .args(["--tokens", path(&tokens), "--masks", path(&masks), "--out"])
            .arg(out)
            .arg("--model")
            .arg(fixture())
            .stdout(std::process::Stdio::null())
            .stderr(writer)
            .status()
            .expect("evaluate runs")
    };
    let out = dir.path().join("evaluations.parquet");
    let status = run(&out);
    assert!(status.success(), "evaluate with stderr closed: {status:?}");
    assert_eq!(read_evaluations(&out).unwrap().rows.len(), 64);
    // Refused (an output inside a missing folder): said to nobody, exit 1.
    let status = run(&dir.path().join("missing").join("evaluations.parquet"));
    assert_eq!(status.code(), Some(1), "{status:?}");
}

/// SIGTERM (Slurm's preemption, `scancel`) or Ctrl-C's SIGINT: the run stops before its next
/// batch, saves what it measured, says how to go on and exits 128 + the signal; the same command
/// then finishes the table. Until 2026-12-07 the signal killed it where it stood, as SIGKILL:
/// the rows since the last paced save were lost and nothing was said (crash-and-resume audit).
#[cfg(unix)]
#[test]
fn a_termination_signal_stops_the_run_with_its_rows_saved_and_the_same_command_finishes() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let (_, masks) = write_inputs(dir.path(), None);
    // Enough tokens that the 64 masks take seconds: the signal comes while they run.
    let tokens = dir.path().join("long.parquet");
    write_tokens(
        &tokens,
        &TokenTable::new(
            64,
            layerprune_tests::fixture_windows(7, 100, 64),
            &layerprune_tests::tiny_tokenizer_sha256(),
            "synthetic ids",
        ),
        &provenance(),
    )
    .unwrap();
    let out = dir.path().join("ev.parquet");
    let args = |command: &mut Command| {
        command
            .arg("--tokens")
            .arg(&tokens)
            .arg("--masks")
            .arg(&masks)
            .args(["--chunk", "1", "--quiet", "--model"])
            .arg(fixture())
            .arg("--out")
            .arg(&out);
    };
    // SIGINT's run resumes what SIGTERM's saved, and is stopped too.
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_evaluate"));
        args(&mut command);
        // SIGINT at its default in the child: a test run in the background of a
        // non-interactive shell (CI's) inherits it ignored, which the stage keeps (as `nohup`).
        // SAFETY: signal(2) is async-signal-safe, as pre_exec requires.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = command
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Sent once the model is open (the handler is in place long before).
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        while !said.contains("opened the") {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "{said}");
            said += &line;
        }
        // SAFETY: a signal to the child this test started.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
        let status = child.wait().unwrap();
        let name = if signal == libc::SIGTERM {
            "SIGTERM"
        } else {
            "SIGINT"
        };
        assert_eq!(status.code(), Some(128 + signal), "{said}{rest}");
        assert!(
            rest.contains(&format!("interrupted by {name} before the work was done"))
                && rest.contains("run the same command again to go on"),
            "{rest}"
        );
        // What was saved is a checkpoint (when a mask was done).
        if out.exists() {
            assert!(!read_evaluations(&out).unwrap().complete);
        }
    }
    // The same command ends the table.
    let mut command = Command::new(env!("CARGO_BIN_EXE_evaluate"));
    args(&mut command);
    let finished = command.output().unwrap();
    assert!(
        finished.status.success(),
        "{}",
        String::from_utf8_lossy(&finished.stderr)
    );
    let table = read_evaluations(&out).unwrap();
    assert!(table.complete);
    assert_eq!(table.rows.len(), 64);
}
