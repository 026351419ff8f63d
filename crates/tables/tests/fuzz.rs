//! A seeded mutation fuzzer for the table readers.
//!
//! It writes a small valid table of each kind, then flips, overwrites, inserts and truncates
//! bytes and reads every mutant back on a worker thread under a watchdog, so the test itself
//! can neither hang nor be brought down by a panic. Every read must end, without panicking, in
//! either a table or a [`TableError`] that names the file.
//!
//! `make test` runs a few hundred mutations per kind (`cargo test` default). Longer runs:
//! `LAYERPRUNE_FUZZ_ITERATIONS=100000` (per kind) or `LAYERPRUNE_FUZZ_SECONDS=600` (shared by
//! the kinds) with `cargo test -p layerprune-tables --test fuzz` (see pipelines/fuzz.mk);
//! `LAYERPRUNE_FUZZ_SEED` changes the seed, and mutants that hang or panic, or that reach a
//! decoder panic the reader caught, are kept in `LAYERPRUNE_FUZZ_KEEP` (a folder) when set.

use layerprune_core::Design;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use layerprune_core::{GameValue, Mask};
use layerprune_tables::input_role;
use layerprune_tables::*;
use layerprune_tests::{fuzz_seed, mutate, FuzzBudget, FuzzRng};

/// Mutations per table kind when no budget is set in the environment.
const DEFAULT_ITERATIONS: usize = 300;
/// How long one read may take before the fuzzer calls it a hang. Reads of these tables take
/// about a millisecond; the margin covers a loaded machine and unoptimised builds.
const WATCHDOG: Duration = Duration::from_secs(10);
/// A hung read keeps its thread spinning; after this many the fuzzer stops a kind.
const MAX_HANGS_PER_KIND: usize = 3;

/// Thrift compact-protocol fragments, as in an AFL dictionary: random bytes seldom form a
/// well-formed header, and these are the ones that make a careless skipper loop.
const TOKENS: [&[u8]; 6] = [
    // Field 15 (unknown, so skipped), a list of i32::MAX doubles.
    &[0xf9, 0xf7, 0xff, 0xff, 0xff, 0xff, 0x07],
    // The same as a set, and as a list of UUIDs.
    &[0xfa, 0xf7, 0xff, 0xff, 0xff, 0xff, 0x07],
    &[0xf9, 0xfd, 0xff, 0xff, 0xff, 0xff, 0x07],
    // Field 15, a map of i32::MAX double -> double entries.
    &[0xfb, 0xff, 0xff, 0xff, 0xff, 0x07, 0x77],
    // Field 15, a list of i32::MAX booleans (no bytes per element for some skippers).
    &[0xf9, 0xf1, 0xff, 0xff, 0xff, 0xff, 0x07],
    // A huge binary length.
    &[0xf8, 0xff, 0xff, 0xff, 0xff, 0x0f],
];

fn mask(id: &str) -> Mask {
    id.parse().unwrap()
}

fn provenance() -> Provenance {
    Provenance::new("fuzz", "0.1.0", vec!["fuzz".into()])
        .with_seed(7)
        .with_input(input_role::DATASET, "d")
}

/// The kinds fuzzed, each with a writer of one small valid table and its reader.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Masks,
    Evaluations,
    Scores,
    Plans,
    Tokens,
    BlockStats,
    SurrogateMetrics,
}

const KINDS: [Kind; 7] = [
    Kind::Masks,
    Kind::Evaluations,
    Kind::Scores,
    Kind::Plans,
    Kind::Tokens,
    Kind::BlockStats,
    Kind::SurrogateMetrics,
];

fn write_valid(kind: Kind, path: &Path) {
    let p = provenance();
    match kind {
        Kind::Masks => {
            let rows = ["1111", "1010", "0101", "1101", "0000"]
                .iter()
                .enumerate()
                .map(|(i, id)| MaskRow {
                    mask: mask(id),
                    design: if i == 0 {
                        Design::Anchor
                    } else {
                        Design::Complement
                    },
                    group_id: (i > 0).then_some(i as i64 / 2),
                    position: (i > 0).then_some(i as u32 % 2),
                })
                .collect();
            let table = MaskTable {
                num_blocks: 4,
                fixed_blocks: vec![],
                rows,
            };
            write_masks(path, &table, &p).unwrap();
        }
        Kind::Evaluations => {
            let full = 2.0_f64;
            let mut table = EvaluationTable::new(4, "model", "data");
            table.full_model_nll = Some(full);
            table.complete = true;
            table
                .append(
                    [("1111", full), ("1010", 3.5), ("0101", 2.75), ("0000", 9.0)].map(
                        |(id, nll)| EvaluationRow {
                            mask: mask(id),
                            nll,
                            ppl: nll.exp(),
                            utility: (full - nll).exp(),
                            tokens_scored: 64,
                            seconds: 0.25,
                            window_nlls: None,
                        },
                    ),
                )
                .unwrap();
            write_evaluations(path, &table, &p).unwrap();
        }
        Kind::Scores => {
            let table = ScoreTable {
                num_blocks: 4,
                fixed_blocks: vec![0],
                model_id: String::new(),
                dataset_id: String::new(),
                rows: (1..4)
                    .map(|b| ScoreRow {
                        block: b,
                        estimate: 0.1 * f64::from(b),
                        std_error: (b != 2).then_some(0.01),
                        ci_low: Some(0.0),
                        ci_high: Some(0.5),
                        estimator: "stratified-semivalue".into(),
                        llm_evaluations: 40,
                    })
                    .collect(),
            };
            write_scores(path, &table, &p).unwrap();
        }
        Kind::Plans => {
            let table = PlanTable {
                num_blocks: 6,
                value: Some(GameValue::Utility),
                rows: vec![
                    PlanRow {
                        method: "adaptive".into(),
                        k: 2,
                        removed_blocks: vec![1, 4],
                        predicted_value: Some(0.9),
                        measured_nll: Some(2.5),
                        measured_ppl: Some(2.5_f64.exp()),
                        llm_evaluations: 12,
                        runner_up: Some(RunnerUp {
                            removed_blocks: vec![1, 5],
                            nll: 2.6,
                            margin_se: Some(0.01),
                        }),
                        full_model: Some(FullModel {
                            nll: 2.2,
                            nll_increase_se: Some(0.03),
                        }),
                    },
                    PlanRow {
                        method: "sleb".into(),
                        k: 3,
                        removed_blocks: vec![0, 2, 5],
                        predicted_value: None,
                        measured_nll: None,
                        measured_ppl: None,
                        llm_evaluations: 3,
                        runner_up: None,
                        full_model: None,
                    },
                ],
            };
            write_plans(path, &table, &p).unwrap();
        }
        Kind::Tokens => {
            let table = TokenTable::new(
                5,
                vec![vec![1, 2, 3, 4, 5], vec![70000, 0, 5, 5, 9], vec![7; 5]],
                "ab12",
                "fuzz",
            );
            write_tokens(path, &table, &p).unwrap();
        }
        Kind::BlockStats => {
            let table = BlockStatsTable {
                num_blocks: 4,
                model_id: "model".into(),
                dataset_id: "data".into(),
                rows: (0..4)
                    .map(|b| {
                        let mean_cosine = 0.9 - 0.1 * f64::from(b);
                        BlockStatRow {
                            start_block: b,
                            run_length: 1,
                            mean_cosine,
                            angular_distance: mean_cosine.acos() / std::f64::consts::PI,
                        }
                    })
                    .collect(),
            };
            write_block_stats(path, &table, &p).unwrap();
        }
        Kind::SurrogateMetrics => {
            let table = SurrogateMetricsTable {
                rows: vec![SurrogateMetricRow {
                    kind: "mlp".into(),
                    value: "utility".into(),
                    fold: -1,
                    r2: 0.9,
                    spearman: 0.95,
                    mae: 0.01,
                    n_train: 40,
                    n_test: 10,
                }],
            };
            write_surrogate_metrics(path, &table, &p).unwrap();
        }
    }
}

fn read(kind: Kind, path: &Path) -> Result<(), TableError> {
    match kind {
        Kind::Masks => read_masks(path).map(drop),
        Kind::Evaluations => read_evaluations(path).map(drop),
        Kind::Scores => read_scores(path).map(drop),
        Kind::Plans => read_plans(path).map(drop),
        Kind::Tokens => read_tokens(path).map(drop),
        Kind::BlockStats => read_block_stats(path).map(drop),
        Kind::SurrogateMetrics => read_surrogate_metrics(path).map(drop),
    }
}

/// How one read ended.
enum Outcome {
    Accepted,
    Rejected(TableError),
    Panicked(String),
    Hung,
}

/// Reads `path` on a worker thread; a read still running after [`WATCHDOG`] is left behind
/// (it cannot be stopped) and reported as a hang.
fn read_watched(kind: Kind, path: &Path) -> Outcome {
    let (send, receive) = mpsc::channel();
    let owned = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = send.send(layerprune_core::contain_panic(|| read(kind, &owned)));
    });
    match receive.recv_timeout(WATCHDOG) {
        Ok(Ok(Ok(()))) => Outcome::Accepted,
        Ok(Ok(Err(error))) => Outcome::Rejected(error),
        Ok(Err(message)) => Outcome::Panicked(message),
        Err(_) => Outcome::Hung,
    }
}

#[derive(Default)]
struct Tally {
    mutations: usize,
    accepted: usize,
    rejected: usize,
    /// Rejected after a decoder panic that the reader caught (a structural check missed it).
    caught: usize,
    failures: Vec<String>,
}

#[test]
fn mutated_tables_are_refused_cleanly_and_never_hang() {
    let budget = FuzzBudget::from_env(DEFAULT_ITERATIONS).share(KINDS.len());
    let seed = fuzz_seed(15);
    let keep: Option<PathBuf> = std::env::var_os("LAYERPRUNE_FUZZ_KEEP").map(PathBuf::from);
    if let Some(folder) = &keep {
        std::fs::create_dir_all(folder).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut total = Tally::default();
    for (k, kind) in KINDS.into_iter().enumerate() {
        let valid = dir.path().join(format!("valid-{kind:?}.parquet"));
        write_valid(kind, &valid);
        assert!(matches!(read_watched(kind, &valid), Outcome::Accepted));
        let original = std::fs::read(&valid).unwrap();
        if let Some(folder) = &keep {
            std::fs::write(folder.join(format!("valid-{kind:?}.parquet")), &original).unwrap();
        }
        let mut rng = FuzzRng(seed.wrapping_mul(31).wrapping_add(k as u64));
        let mut tally = Tally::default();
        let mut hangs = 0;
        let kind_started = Instant::now();
        for i in 0.. {
            if !budget.goes_on(i, kind_started) || hangs >= MAX_HANGS_PER_KIND {
                break;
            }
            let bytes = mutate(&mut rng, &original, &TOKENS);
            let path = dir.path().join(format!("{kind:?}-{i}.parquet"));
            std::fs::write(&path, &bytes).unwrap();
            tally.mutations += 1;
            let mut caught = false;
            let failure = match read_watched(kind, &path) {
                Outcome::Accepted => {
                    tally.accepted += 1;
                    None
                }
                Outcome::Rejected(error) => {
                    tally.rejected += 1;
                    caught = error.to_string().contains("the decoder failed");
                    tally.caught += usize::from(caught);
                    (error.path != path || !error.to_string().contains(&*path.to_string_lossy()))
                        .then(|| format!("error does not name the file: {error}"))
                }
                Outcome::Panicked(message) => Some(format!("panicked: {message}")),
                Outcome::Hung => {
                    hangs += 1;
                    Some(format!("no answer after {WATCHDOG:?} (hang)"))
                }
            };
            if let Some(failure) = failure {
                let kept = keep.as_ref().map(|folder| {
                    let kept = folder.join(format!("{kind:?}-seed{seed}-{i}.parquet"));
                    std::fs::write(&kept, &bytes).unwrap();
                    kept
                });
                tally
                    .failures
                    .push(format!("{kind:?} mutation {i} ({kept:?}): {failure}"));
            } else {
                if let (true, Some(folder)) = (caught, &keep) {
                    let kept = folder.join(format!("caught-{kind:?}-seed{seed}-{i}.parquet"));
                    std::fs::write(kept, &bytes).unwrap();
                }
                std::fs::remove_file(&path).unwrap();
            }
        }
        eprintln!(
            "fuzz {kind:?}: {} mutations, {} rejected ({} after a caught decoder panic), {} \
             accepted, {} failures",
            tally.mutations,
            tally.rejected,
            tally.caught,
            tally.accepted,
            tally.failures.len()
        );
        total.mutations += tally.mutations;
        total.accepted += tally.accepted;
        total.rejected += tally.rejected;
        total.caught += tally.caught;
        total.failures.extend(tally.failures);
    }
    eprintln!(
        "fuzz total (seed {seed}): {} mutations, {} rejected ({} after a caught decoder panic), \
         {} accepted, {} failures, {:.1} s",
        total.mutations,
        total.rejected,
        total.caught,
        total.accepted,
        total.failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        total.failures.is_empty(),
        "{} of {} mutants failed:\n{}",
        total.failures.len(),
        total.mutations,
        total.failures.join("\n")
    );
}

/// The mutants the fuzzer found before the structural checks (tests/data): two masks tables
/// whose first page header announces an unknown field holding a map of 2^31 doubles (parquet
/// 60.1 then "skips" past the end of the file 2^31 times: hours at 100 % CPU) or a list of
/// 2^31 booleans, and one whose footer gives a column chunk a negative offset (a panic); and
/// two a reviewer made: a 100 KB footer of 100,000 nested lists (a stack overflow, an abort)
/// and a 5 KB token table whose dictionary-encoded pages announce 400 million tokens (3.3 GB
/// decoded into memory).
const STRUCTURAL: [&str; 5] = [
    "hang-masks-page-header-map-of-doubles.parquet",
    "hang-masks-page-header-list-of-bools.parquet",
    "panic-masks-negative-column-start.parquet",
    "overflow-footer-nested-lists.parquet",
    "bomb-tokens-dictionary-400m-values.parquet",
];

/// Mutants that pass the structural checks and panic parquet 60.1's decoder inside a page
/// (seed 15, 20,000 per kind): an index out of bounds in the byte-stream-split decoder, a
/// division by zero in a dictionary page, and definition levels running past their buffer.
const DECODER_PANICS: [&str; 4] = [
    "panic-masks-byte-stream-split-index.parquet",
    "panic-masks-dictionary-divide-by-zero.parquet",
    "panic-plans-definition-levels-out-of-bounds.parquet",
    "panic-scores-definition-levels-out-of-bounds.parquet",
];

#[test]
fn the_mutants_that_hung_or_panicked_are_refused_cleanly() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let kinds = [Kind::Masks, Kind::Masks, Kind::Plans, Kind::Scores];
    let cases = STRUCTURAL
        .iter()
        .map(|name| (*name, Kind::Masks, true))
        .chain(
            DECODER_PANICS
                .iter()
                .zip(kinds)
                .map(|(name, kind)| (*name, kind, false)),
        );
    for (name, kind, structural) in cases {
        let path = data.join(name);
        assert!(path.exists(), "{} is missing", path.display());
        let started = Instant::now();
        match read_watched(kind, &path) {
            Outcome::Rejected(error) => {
                assert_eq!(error.path, path);
                assert_eq!(error.kind, TableErrorKind::NotParquet, "{error}");
                assert!(error.to_string().contains(name), "{error}");
                // Caught before the decoder, or contained as an error when inside it.
                assert_eq!(
                    !error.to_string().contains("the decoder failed"),
                    structural,
                    "{error}"
                );
            }
            Outcome::Accepted => panic!("{name} was accepted"),
            Outcome::Panicked(message) => panic!("{name} panicked: {message}"),
            Outcome::Hung => panic!("{name} hung"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{name} took {:?}",
            started.elapsed()
        );
        if structural {
            // The metadata-only readers go through the same checks.
            assert!(read_metadata(&path).is_err());
        }
    }
}
