//! The check every stage runs on its outputs before doing any work: an output never replaces
//! an input (by file identity, through symbolic and hard links), never replaces something that
//! is not a regular file (a device, FIFO, socket or symbolic link), and its folder exists and
//! can be written; an output never replaces a layerprune table of another kind than it writes
//! (a tokens table written over the evaluations of hours of GPU time by a slip of the path), nor
//! an output declared with what it writes a surrogate it does not write (a fitted surrogate),
//! nor a file that is neither (a user's text, a file of another tool) unless the stage's
//! `--overwrite` says so (an output declared without a kind, [`Io::output`], replaces anything
//! but a table; quantize's ONNX model, [`Io::output_onnx_model`], anything but a table or
//! surrogate); and an output the stage
//! only replaces with `--overwrite` is refused before the work, not after it. Each refusal
//! names the flag, the path and the problem. The check then locks every output
//! ([`OutputLocks`]) for as long as the stage runs, so a second run writing one of them
//! (`evaluate --merge` beside a running `evaluate`, two `apply-prune` runs on one plan table
//! and pruned folder) is refused at once instead of replacing the first's work or pairing its
//! table with the other's folder.

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use layerprune_tables::TableKind;

/// Distinguishes probe files of one process.
static NEXT_PROBE: AtomicU64 = AtomicU64::new(0);

/// One stage run's input and output paths, checked together by [`Io::check`] before the stage
/// reads or computes anything:
///
/// ```no_run
/// # use std::path::Path;
/// // The outputs stay locked while `_outputs` lives: bind it for the whole run.
/// let _outputs = layerprune_cli_common::Io::new()
///     .input(Path::new("evaluations.parquet"))
///     .output("--out", Path::new("scores.parquet"))
///     .check()?;
/// # Ok::<(), anyhow::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Io {
    inputs: Vec<PathBuf>,
    /// File outputs, with what each writes: an existing file there is replaced only if it
    /// holds the same (a rerun), or nothing, or (under `--overwrite`) neither a layerprune table
    /// nor a surrogate ([`Io::check`]).
    files: Vec<(String, PathBuf, Writes)>,
    folders: Vec<(String, PathBuf)>,
    /// Outputs an existing file or folder at which is refused (the stage has `--overwrite`
    /// and it was not given), before the work rather than after it.
    kept: Vec<(String, PathBuf)>,
    /// Outputs declared with [`Io::existing_refused_unless`] whose `--overwrite` was given:
    /// whatever is there may be replaced, but a layerprune table or surrogate of another kind.
    overwritten: Vec<PathBuf>,
    /// The stage's `--overwrite` ([`Io::overwrite`]), when it has one for every output.
    overwrite: Option<bool>,
    /// Outputs whose lock the stage's library takes itself (a table it resumes), which
    /// [`Io::check`] leaves to it: one process cannot take one lock twice.
    locked_by_stage: Vec<PathBuf>,
}

/// The locks of a stage's outputs ([`layerprune_core::FileLock`], `.NAME.lock` beside each),
/// held until dropped: bind it for the whole run (`let _outputs = io.check()?;`).
#[must_use = "the outputs are locked only while this is held: bind it for the whole run"]
#[derive(Debug)]
pub struct OutputLocks(#[allow(dead_code)] Vec<layerprune_core::FileLock>);

impl Io {
    pub fn new() -> Self {
        Io::default()
    }

    /// A file or folder the stage reads (a missing one is left for the stage to report).
    pub fn input(mut self, path: impl AsRef<Path>) -> Self {
        self.inputs.push(path.as_ref().to_path_buf());
        self
    }

    /// [`Io::input`] of an optional flag.
    pub fn input_opt(self, path: Option<impl AsRef<Path>>) -> Self {
        match path {
            Some(path) => self.input(path),
            None => self,
        }
    }

    /// Inputs of a repeatable flag.
    pub fn inputs<P: AsRef<Path>>(self, paths: impl IntoIterator<Item = P>) -> Self {
        paths.into_iter().fold(self, |io, path| io.input(path))
    }

    /// A file the stage writes, given by `flag`, of a sort this check is not told: an existing
    /// file there is replaced unless it is a layerprune table. A stage writing a surrogate, a JSON file of its own or an ONNX model says so
    /// ([`Io::output_surrogate`], [`Io::output_json`], [`Io::output_onnx_model`]), so that a
    /// surrogate is not replaced by another file, nor a file of the user by either.
    pub fn output(mut self, flag: &str, path: impl AsRef<Path>) -> Self {
        self.files.push((
            flag.to_string(),
            path.as_ref().to_path_buf(),
            Writes::Unsaid,
        ));
        self
    }

    /// An [`Io::output`] that is a CSV file of the stage's own (frontier.csv), whose first line
    /// starts with `header_start`: replaces such a file (a rerun, whatever columns an older
    /// version added after those) or an empty one, never a layerprune table or surrogate, nor
    /// another file (a user's own frontier.csv in the folder was replaced without a word until
    /// 2026-12-08: bad-input audit).
    pub fn output_csv(
        mut self,
        flag: &str,
        path: impl AsRef<Path>,
        header_start: &'static str,
    ) -> Self {
        self.files.push((
            flag.to_string(),
            path.as_ref().to_path_buf(),
            Writes::Csv(header_start),
        ));
        self
    }

    /// An [`Io::output`] that is a fitted surrogate (`fit-surrogate --out`): replaces a
    /// layerprune surrogate file (a rerun), never a table, nor a file that is neither without
    /// the stage's `--overwrite`.
    pub fn output_surrogate(mut self, flag: &str, path: impl AsRef<Path>) -> Self {
        self.files.push((
            flag.to_string(),
            path.as_ref().to_path_buf(),
            Writes::Surrogate,
        ));
        self
    }

    /// [`Io::output_surrogate`] of an optional flag.
    pub fn output_surrogate_opt(self, flag: &str, path: Option<impl AsRef<Path>>) -> Self {
        match path {
            Some(path) => self.output_surrogate(flag, path),
            None => self,
        }
    }

    /// An [`Io::output`] that is a JSON object of the stage's own (`evaluate --summary`),
    /// which always holds every one of `keys`: replaces such an object (a rerun), never a
    /// layerprune table or surrogate, nor another file without the stage's `--overwrite`.
    pub fn output_json(
        mut self,
        flag: &str,
        path: impl AsRef<Path>,
        keys: &'static [&'static str],
    ) -> Self {
        self.files.push((
            flag.to_string(),
            path.as_ref().to_path_buf(),
            Writes::Json(keys),
        ));
        self
    }

    /// [`Io::output_json`] of an optional flag.
    pub fn output_json_opt(
        self,
        flag: &str,
        path: Option<impl AsRef<Path>>,
        keys: &'static [&'static str],
    ) -> Self {
        match path {
            Some(path) => self.output_json(flag, path, keys),
            None => self,
        }
    }

    /// An [`Io::output`] that is one ONNX model file (`quantize --out` of one .onnx graph):
    /// never replaces a layerprune table or surrogate, even under `--overwrite` (`quantize
    /// --out x.json --overwrite` replaced a fitted surrogate). Any other file, the model of an
    /// earlier run too (which holds no mark of the stage to tell it by), is left to the rule
    /// the stage declares for every existing output it has ([`Io::existing_refused_unless`]:
    /// replaced only under its `--overwrite`), one refusal for a file and a folder alike.
    pub fn output_onnx_model(mut self, flag: &str, path: impl AsRef<Path>) -> Self {
        self.files.push((
            flag.to_string(),
            path.as_ref().to_path_buf(),
            Writes::OnnxModel,
        ));
        self
    }

    /// The stage's `--overwrite` (`given`: whether it was given), for outputs that replace
    /// what they wrote before without it: a file at one of them that holds neither a
    /// layerprune table or surrogate nor what the output writes (a user's text) is replaced
    /// only with it, and refused without it, naming the flag. Without this call such a file
    /// is refused, naming no flag. (A table or surrogate of another kind is refused either way.)
    pub fn overwrite(mut self, given: bool) -> Self {
        self.overwrite = Some(given);
        self
    }

    /// An [`Io::output`] that is a table of `kind`: replaces a table of that kind (a rerun),
    /// never a layerprune table of another kind or a surrogate, nor a file that is neither
    /// without the stage's `--overwrite` (one the stage resumes, [`Io::locked_by_stage`], is
    /// left to the stage's reader, which refuses it or replaces it under its `--overwrite`).
    pub fn output_table(mut self, flag: &str, path: impl AsRef<Path>, kind: TableKind) -> Self {
        self.files.push((
            flag.to_string(),
            path.as_ref().to_path_buf(),
            Writes::Table(kind),
        ));
        self
    }

    /// [`Io::output_table`] of an optional flag.
    pub fn output_table_opt(
        self,
        flag: &str,
        path: Option<impl AsRef<Path>>,
        kind: TableKind,
    ) -> Self {
        match path {
            Some(path) => self.output_table(flag, path, kind),
            None => self,
        }
    }

    /// A folder the stage writes as a whole (built beside it, then renamed onto it): besides
    /// the checks of a file, no input may lie inside it and it may not lie inside an input.
    pub fn output_folder(mut self, flag: &str, path: impl AsRef<Path>) -> Self {
        self.folders
            .push((flag.to_string(), path.as_ref().to_path_buf()));
        self
    }

    /// [`Io::output_folder`] of an optional flag.
    pub fn output_folder_opt(self, flag: &str, path: Option<impl AsRef<Path>>) -> Self {
        match path {
            Some(path) => self.output_folder(flag, path),
            None => self,
        }
    }

    /// An output (declared as a file or folder too) whose lock the stage takes itself while it
    /// resumes it ([`layerprune_core::FileLock`]): [`Io::check`] does not lock it.
    pub fn locked_by_stage(mut self, path: impl AsRef<Path>) -> Self {
        self.locked_by_stage.push(path.as_ref().to_path_buf());
        self
    }

    /// [`Io::locked_by_stage`] of an optional flag.
    pub fn locked_by_stage_opt(self, path: Option<impl AsRef<Path>>) -> Self {
        match path {
            Some(path) => self.locked_by_stage(path),
            None => self,
        }
    }

    /// The output `flag` (declared as a file or folder too) is refused when something exists
    /// at `path`, unless `overwrite` (the stage's `--overwrite`), with which it replaces any
    /// file there but a layerprune table or surrogate of another kind.
    pub fn existing_refused_unless(
        mut self,
        overwrite: bool,
        flag: &str,
        path: impl AsRef<Path>,
    ) -> Self {
        if overwrite {
            self.overwritten.push(path.as_ref().to_path_buf());
        } else {
            self.kept
                .push((flag.to_string(), path.as_ref().to_path_buf()));
        }
        self
    }

    /// [`Io::existing_refused_unless`] of an optional flag.
    pub fn existing_refused_unless_opt(
        self,
        overwrite: bool,
        flag: &str,
        path: Option<impl AsRef<Path>>,
    ) -> Self {
        match path {
            Some(path) => self.existing_refused_unless(overwrite, flag, path),
            None => self,
        }
    }

    /// Refuses, with a message naming the flag, the path and the problem:
    /// - an output that is the same file as an input (same device and inode, so also through a
    ///   symbolic or hard link), or lies inside an input folder;
    /// - a folder output that holds an input;
    /// - an existing output that is a symbolic link, a device, a FIFO, a socket, or (for a
    ///   file output) a folder;
    /// - two outputs at the same place, or a file output inside a folder output;
    /// - a file output over a layerprune table or surrogate other than it writes (a table of
    ///   another kind; a surrogate, by any output but a surrogate or [`Io::output`]'s);
    /// - a file output (but [`Io::output`]'s and [`Io::output_onnx_model`]'s) over a file that
    ///   is not empty and holds neither
    ///   a layerprune table or surrogate nor what the output writes (its rerun's table, its
    ///   JSON), unless the stage's `--overwrite` was given ([`Io::overwrite`],
    ///   [`Io::existing_refused_unless`]) or the stage resumes that output itself
    ///   ([`Io::locked_by_stage`]: its reader refuses such a file);
    /// - an existing output declared with [`Io::existing_refused_unless`] without overwrite;
    /// - an existing output its owner may not write (made read-only), file or folder, but one
    ///   the stage resumes ([`Io::locked_by_stage`]: written only if the run adds to it, when
    ///   the write refuses it);
    /// - an output whose folder is missing or cannot be written (a probe file is created in it
    ///   and removed), or whose name is too long for the temporary file written beside it (the
    ///   probe has that file's name);
    /// - an output another run is writing (its lock is held).
    ///
    /// Returns the outputs' locks, held until dropped.
    pub fn check(&self) -> Result<OutputLocks> {
        let inputs: Vec<Input> = self.inputs.iter().filter_map(|p| Input::new(p)).collect();
        let mut places: Vec<(&str, &Path, PathBuf, bool)> = Vec::new();
        for (flag, path, is_folder) in self
            .files
            .iter()
            .map(|(f, p, _)| (f, p, false))
            .chain(self.folders.iter().map(|(f, p)| (f, p, true)))
        {
            let place = check_one(flag, path, is_folder, &inputs)?;
            places.push((flag, path, place, is_folder));
        }
        for (i, (flag, path, place, _)) in places.iter().enumerate() {
            for (other_flag, other_path, other_place, other_is_folder) in &places[i + 1..] {
                if place == other_place {
                    bail!(
                        "{flag} {} and {other_flag} {} are the same output; give each its own path",
                        path.display(),
                        other_path.display()
                    );
                }
                for (inner, inner_flag, outer, outer_flag, outer_is_folder) in [
                    (place, flag, other_place, other_flag, *other_is_folder),
                    (other_place, other_flag, place, flag, places[i].3),
                ] {
                    if outer_is_folder && inner.starts_with(outer) {
                        bail!(
                            "{inner_flag} {} lies inside the output folder {outer_flag} {}, which \
                             is replaced as a whole; write it elsewhere",
                            inner.display(),
                            outer.display()
                        );
                    }
                }
            }
        }
        // Matched by place, not spelling (`out.parquet` and `./out.parquet` are one file): a
        // path locked here and by the stage would block the stage on its own lock.
        let places_of = |paths: &[PathBuf]| -> Vec<PathBuf> {
            paths
                .iter()
                .filter_map(|path| {
                    Some(folder_of(path).canonicalize().ok()?.join(path.file_name()?))
                })
                .collect()
        };
        let locked_by_stage = places_of(&self.locked_by_stage);
        let overwritten = places_of(&self.overwritten);
        // `places` begins with the files, in their order.
        for ((flag, path, writes), (_, _, place, _)) in self.files.iter().zip(&places) {
            if !path.is_file() {
                continue;
            }
            let held = Held::at(path, writes);
            let replaceable = Replaceable {
                resumed_by_stage: locked_by_stage.contains(place),
                overwrite: if overwritten.contains(place) {
                    Some(true)
                } else {
                    self.overwrite
                },
            };
            if let Some(problem) = refusal(flag, writes, &held, replaceable) {
                bail!("{flag} {}: {problem}", path.display());
            }
        }
        // Before the read-only check: a run without --overwrite never replaces what is there,
        // so its mode is no answer to give (one round trip, not two).
        for (flag, path) in &self.kept {
            if path.symlink_metadata().is_ok() {
                // What a killed writer of it left (a model-sized temporary folder, hidden) is
                // removed only by a run that writes it: named, so that it is not forgotten.
                let left: Vec<String> = layerprune_core::dead_writers_siblings(path, "tmp")
                    .iter()
                    .map(|sibling| sibling.display().to_string())
                    .collect();
                let left = match left.len() {
                    0 => String::new(),
                    _ => format!(
                        " (a killed run left {} beside it: a run that writes it removes {})",
                        left.join(", "),
                        if left.len() == 1 { "it" } else { "them" }
                    ),
                };
                bail!(
                    "{flag} {}: already exists; pass --overwrite to replace it{left}",
                    path.display()
                );
            }
        }
        for (flag, path, place, is_folder) in &places {
            // An output the stage resumes (a cache) is read, and written only where the run
            // adds to it: a read-only cache that holds every mask asked for is an input, as it
            // was before 2026-12-07; `atomic_write` refuses it, naming it, if the run must save.
            if locked_by_stage.contains(place) {
                continue;
            }
            refuse_read_only(flag, path, *is_folder)?;
        }
        for (flag, path, _, _) in &places {
            probe_folder(flag, path)?;
        }
        let mut locks = Vec::new();
        for (flag, path, place, _) in &places {
            if locked_by_stage.contains(place) {
                continue;
            }
            locks.push(
                layerprune_core::FileLock::try_acquire(path)
                    .with_context(|| format!("{flag} {}", path.display()))?,
            );
        }
        Ok(OutputLocks(locks))
    }
}

/// What a file output writes, which decides what an existing file at its path it replaces.
#[derive(Clone, Copy, Debug)]
enum Writes {
    Table(TableKind),
    Surrogate,
    /// A JSON object holding every one of these keys ([`Io::output_json`]).
    Json(&'static [&'static str]),
    /// One ONNX model file ([`Io::output_onnx_model`]).
    OnnxModel,
    /// A CSV file whose first line starts with these column names ([`Io::output_csv`]).
    Csv(&'static str),
    /// A file of a sort not said ([`Io::output`]).
    Unsaid,
}

impl Writes {
    /// What the output `flag` writes, in a refusal.
    fn what(&self, flag: &str) -> String {
        match self {
            Writes::Table(kind) => format!("a table of kind {kind}"),
            Writes::Surrogate => "a surrogate".to_string(),
            Writes::Json(_) => format!("{flag}'s JSON"),
            Writes::OnnxModel => "an ONNX model".to_string(),
            Writes::Csv(header_start) => format!("a CSV file whose columns start {header_start}"),
            Writes::Unsaid => "a file that is not a table".to_string(),
        }
    }
}

/// The `format` of every surrogate file (`layerprune_surrogate::FORMAT_NAME`, which this crate
/// does not depend on; a test checks that they agree).
const SURROGATE_FORMAT: &str = "layerprune-surrogate";

/// At most this many top-level keys of a JSON file are kept to tell what it is.
const MAX_JSON_KEYS: usize = 256;

/// What an existing regular file at an output holds, as far as telling whether the output may
/// replace it goes.
#[derive(Debug, PartialEq)]
enum Held {
    /// Nothing (an empty file: `mktemp`'s, or one a script made for the stage to fill).
    Nothing,
    Table(TableKind),
    /// A layerprune surrogate file, with its `kind` when it names one.
    Surrogate(Option<String>),
    /// A JSON object that is no surrogate, with its top-level keys.
    Json(Vec<String>),
    /// Text, with its first line (for an output that writes a CSV file).
    FirstLine(String),
    /// Anything else, described.
    Other(String),
}

impl Held {
    /// What the file at `path` holds, as far as it matters to an output writing `writes`.
    fn at(path: &Path, writes: &Writes) -> Held {
        match fs::metadata(path) {
            Ok(meta) if meta.len() == 0 => return Held::Nothing,
            _ => {}
        }
        if let Ok(kind) = layerprune_tables::read_table_kind(path) {
            return Held::Table(kind);
        }
        if let Writes::Unsaid = writes {
            // Replaces anything but a table: a large surrogate is not read through for nothing.
            return Held::Other("no layerprune table".to_string());
        }
        let mut reader = match layerprune_core::open_input(path) {
            Ok(file) => BufReader::new(file),
            Err(error) => return Held::Other(format!("a file that cannot be read ({error})")),
        };
        let start = match reader.fill_buf() {
            Ok(start) => start,
            Err(error) => return Held::Other(format!("a file that cannot be read ({error})")),
        };
        if start.starts_with(b"PAR1") {
            return Held::Other("a Parquet file that is no layerprune table".to_string());
        }
        // Only what starts as a JSON object is read on (to its end: a surrogate's "format" may
        // come after its parameters in a file rewritten by another tool); a text corpus is not.
        let neither = || {
            Held::Other(
                "a file that is neither a layerprune table nor a surrogate (not Parquet or \
                 valid JSON)"
                    .to_string(),
            )
        };
        if start.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            let Writes::Csv(_) = writes else {
                return neither();
            };
            // The first line only, and not past the buffer: a header is short.
            let line = start.split(|b| *b == b'\n').next().unwrap_or_default();
            return match std::str::from_utf8(line) {
                Ok(line) => Held::FirstLine(line.trim_end_matches('\r').to_string()),
                Err(_) => Held::Other("a file that is not text".to_string()),
            };
        }
        match json_head(reader) {
            Ok(head) if head.format.as_deref() == Some(SURROGATE_FORMAT) => {
                Held::Surrogate(head.kind)
            }
            Ok(head) => Held::Json(head.keys),
            Err(_) => neither(),
        }
    }

    /// What it is, in a refusal.
    fn describe(&self) -> String {
        match self {
            Held::Nothing => "nothing".to_string(),
            Held::Table(kind) => format!("a table of kind {kind}"),
            Held::Surrogate(Some(kind)) => format!("a layerprune surrogate of kind {kind}"),
            Held::Surrogate(None) => "a layerprune surrogate".to_string(),
            Held::Json(_) => "JSON that is no layerprune surrogate".to_string(),
            Held::FirstLine(line) => {
                let shown: String = line.chars().take(60).collect();
                let more = if shown.len() < line.len() { "…" } else { "" };
                format!("a file whose first line is {shown:?}{more}")
            }
            Held::Other(what) => what.clone(),
        }
    }
}

/// What of a JSON object tells what it is: its `format` and `kind` (when strings) and its
/// top-level keys (at most [`MAX_JSON_KEYS`]).
#[derive(Default)]
struct JsonHead {
    format: Option<String>,
    kind: Option<String>,
    keys: Vec<String>,
}

/// Reads one JSON object (and nothing after it) from `reader`, skipping its values but
/// `format` and `kind`: a forest surrogate of hundreds of megabytes is read through, not held.
fn json_head(reader: impl Read) -> serde_json::Result<JsonHead> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};

    struct HeadVisitor;
    impl<'de> Visitor<'de> for HeadVisitor {
        type Value = JsonHead;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonHead, A::Error> {
            let mut head = JsonHead::default();
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "format" | "kind" => {
                        let value = map.next_value::<serde_json::Value>()?;
                        let text = value.as_str().map(str::to_string);
                        if key == "format" {
                            head.format = text;
                        } else {
                            head.kind = text;
                        }
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                if head.keys.len() < MAX_JSON_KEYS {
                    head.keys.push(key);
                }
            }
            Ok(head)
        }
    }

    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let head = (&mut deserializer).deserialize_map(HeadVisitor)?;
    deserializer.end()?;
    Ok(head)
}

/// What lets an output replace a file that holds none of layerprune's (nor its own).
#[derive(Clone, Copy, Debug)]
struct Replaceable {
    /// The stage reads the output to resume it, and refuses such a file itself.
    resumed_by_stage: bool,
    /// The stage's `--overwrite` for it: `None` where it has none (or this check was not told).
    overwrite: Option<bool>,
}

/// Why the output `flag`, writing `writes`, may not replace the file that holds `held` (the
/// text after "FLAG PATH: "), or `None` when it may.
fn refusal(flag: &str, writes: &Writes, held: &Held, replaceable: Replaceable) -> Option<String> {
    let another_path = "choose another path (or remove the file)";
    let written = match writes {
        Writes::Table(kind) => format!("one of kind {kind}"),
        Writes::Surrogate => "a surrogate".to_string(),
        Writes::OnnxModel => writes.what(flag),
        Writes::Json(_) | Writes::Csv(_) | Writes::Unsaid => {
            "a file that is not a table".to_string()
        }
    };
    match (held, writes) {
        (Held::Nothing, _) => None,
        (Held::Table(found), Writes::Table(kind)) if found == kind => None,
        (Held::Table(found), _) => Some(format!(
            "holds a table of kind {found}, and this writes {written} over it; {another_path}"
        )),
        (Held::Surrogate(_), Writes::Surrogate | Writes::Unsaid) => None,
        (Held::Surrogate(_), _) => {
            let written = match writes {
                Writes::Table(_) | Writes::OnnxModel => writes.what(flag),
                _ => "a file that is not a surrogate".to_string(),
            };
            Some(format!(
                "holds {}, and this writes {written} over it; {another_path}",
                held.describe()
            ))
        }
        (Held::FirstLine(line), Writes::Csv(header_start)) if line.starts_with(header_start) => {
            None
        }
        (Held::Json(keys), Writes::Json(wanted))
            if wanted.iter().all(|w| keys.iter().any(|k| k == w)) =>
        {
            None
        }
        // An earlier run's model is not told from another file: whether either is replaced is
        // the stage's rule for every existing output (Io::existing_refused_unless), and
        // neither is called a file the stage did not write.
        (_, Writes::Unsaid | Writes::OnnxModel) => None,
        _ if replaceable.resumed_by_stage || replaceable.overwrite == Some(true) => None,
        _ => {
            let own = writes.what(flag);
            let held = match (held, writes) {
                (Held::Json(_), Writes::Json(_)) => {
                    format!("JSON that is neither a layerprune surrogate nor what {flag} writes")
                }
                _ => format!("{}, where this writes {own}", held.describe()),
            };
            Some(format!(
                "holds {held}; refusing to replace a file it did not write: {}",
                match replaceable.overwrite {
                    Some(_) => "pass --overwrite to replace it, or choose another path",
                    None => another_path,
                }
            ))
        }
    }
}

/// Refuses a folder the stage will create (if missing) and write files into when it is, or
/// would be made, inside an input folder (the model folder it reads), or is or lies inside
/// any layered model folder (one whose manifest.json has this tool's format: a pruned folder
/// apply-prune wrote, another export), whose files the stage's would then lie among (until
/// 2026-12-07 `frontier --out-dir pruned` wrote its caches and frontier.csv into a pruned
/// model). Checked before the folder is made, so a refused run creates nothing. The files
/// written in it are then checked with [`Io`].
pub fn check_folder_outside_inputs(flag: &str, folder: &Path, inputs: &[&Path]) -> Result<()> {
    let mut existing = folder;
    while !existing.as_os_str().is_empty() && fs::symlink_metadata(existing).is_err() {
        existing = existing.parent().unwrap_or(Path::new(""));
    }
    let existing = if existing.as_os_str().is_empty() {
        Path::new(".")
    } else {
        existing
    };
    let place = existing.canonicalize().with_context(|| {
        format!(
            "{flag} {}: cannot resolve {}",
            folder.display(),
            existing.display()
        )
    })?;
    for input in inputs.iter().filter_map(|p| Input::new(p)) {
        if input.is_dir && place.starts_with(&input.canonical) {
            bail!(
                "{flag} {}: lies inside the input folder {}; refusing to write into an input",
                folder.display(),
                input.path.display()
            );
        }
    }
    if let Some(model) = place.ancestors().find(|dir| is_model_folder(dir)) {
        let model_folder =
            format!("a layered model folder (its {MODEL_MANIFEST} says {MODEL_FORMAT})");
        if model == place && existing == folder {
            bail!(
                "{flag} {}: is {model_folder}; refusing to write into a model folder, \
                 whose files are the model's: choose another folder",
                folder.display()
            );
        }
        bail!(
            "{flag} {}: lies inside {}, {model_folder}; refusing to write into a model \
             folder, whose files are the model's: choose another folder",
            folder.display(),
            model.display()
        );
    }
    Ok(())
}

/// The `format` of a layered model folder's manifest (`layerprune_model::FORMAT`, which this
/// crate does not depend on; a test checks that they agree), and the manifest's name.
const MODEL_FORMAT: &str = "layerprune-layered-onnx";
const MODEL_MANIFEST: &str = "manifest.json";

/// Whether `dir` is a layered model folder: its manifest.json, a regular file, is a JSON object
/// whose `format` is [`MODEL_FORMAT`]. Only that object's keys are kept ([`json_head`]); a
/// manifest.json of another tool (a folder of another format) is no model folder of this one.
fn is_model_folder(dir: &Path) -> bool {
    let Ok(file) = layerprune_core::open_input(&dir.join(MODEL_MANIFEST)) else {
        return false;
    };
    json_head(BufReader::new(file)).is_ok_and(|head| head.format.as_deref() == Some(MODEL_FORMAT))
}

/// An existing input: its identity and its canonical path.
struct Input {
    path: PathBuf,
    id: (u64, u64),
    canonical: PathBuf,
    is_dir: bool,
}

impl Input {
    fn new(path: &Path) -> Option<Input> {
        let meta = fs::metadata(path).ok()?;
        Some(Input {
            path: path.to_path_buf(),
            id: identity(&meta),
            canonical: path.canonicalize().ok()?,
            is_dir: meta.is_dir(),
        })
    }
}

#[cfg(unix)]
fn identity(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn identity(_meta: &fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// The folder an output is written in.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    }
}

/// Checks one output against the inputs; returns its place (canonical folder + name).
fn check_one(flag: &str, path: &Path, is_folder: bool, inputs: &[Input]) -> Result<PathBuf> {
    let shown = path.display();
    let Some(name) = path.file_name() else {
        bail!("{flag} {shown}: not a file name");
    };
    if !is_folder && path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        bail!("{flag} {shown}: ends with '/', which names a folder, and this writes a file");
    }
    // `.NAME.lock` is where a run locks NAME (layerprune_core::FileLock): an output there would
    // be taken for a lock, and removed with it.
    let name_bytes = name.as_encoded_bytes();
    if name_bytes.len() >= ".x.lock".len()
        && name_bytes.starts_with(b".")
        && name_bytes.ends_with(b".lock")
    {
        bail!(
            "{flag} {shown}: a name of the form .NAME.lock is a run's lock file (of NAME beside \
             it); choose another name"
        );
    }
    let existing = match fs::symlink_metadata(path) {
        Ok(meta) => Some(meta),
        Err(error) if error.kind() == ErrorKind::NotFound => None,
        Err(error) => {
            return Err(error).with_context(|| format!("{flag} {shown}: cannot look at it"))
        }
    };
    if let Some(meta) = &existing {
        let fits = if is_folder {
            meta.is_dir()
        } else {
            meta.is_file()
        };
        if !fits {
            let wanted = if is_folder { "folder" } else { "regular file" };
            bail!(
                "{flag} {shown}: exists and is {}, not a {wanted}; refusing to replace it",
                layerprune_core::file_kind(meta)
            );
        }
    }
    let folder = folder_of(path);
    match fs::metadata(folder) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => bail!("{flag} {shown}: {} is not a folder", folder.display()),
        Err(error) if error.kind() == ErrorKind::NotFound => bail!(
            "{flag} {shown}: the folder {} does not exist",
            folder.display()
        ),
        Err(error) => {
            return Err(error).with_context(|| {
                format!(
                    "{flag} {shown}: cannot open the folder {}",
                    folder.display()
                )
            })
        }
    }
    let place = folder
        .canonicalize()
        .with_context(|| {
            format!(
                "{flag} {shown}: cannot resolve the folder {}",
                folder.display()
            )
        })?
        .join(name);
    if let Some(meta) = &existing {
        let id = identity(meta);
        if cfg!(unix) {
            if let Some(input) = inputs.iter().find(|input| input.id == id) {
                bail!(
                    "{flag} {shown}: is the same {} as the input {}; refusing to replace an input",
                    if is_folder { "folder" } else { "file" },
                    input.path.display()
                );
            }
        }
    }
    for input in inputs {
        if input.canonical == place {
            bail!(
                "{flag} {shown}: is the input {}; refusing to replace an input",
                input.path.display()
            );
        }
        if input.is_dir && place.starts_with(&input.canonical) {
            bail!(
                "{flag} {shown}: lies inside the input folder {}; refusing to write into an input",
                input.path.display()
            );
        }
        if is_folder && input.canonical.starts_with(&place) {
            bail!(
                "{flag} {shown}: holds the input {}; refusing to replace a folder holding an input",
                input.path.display()
            );
        }
    }
    Ok(place)
}

/// Refuses an existing output its owner may not write (no `u+w`: made read-only): a file is
/// replaced by a rename, a folder moved aside and deleted, either of which goes round the mode
/// the user set (a rerun made a `chmod 444` table writable again until 2026-12-07). Judged by
/// the mode bits, so root is refused too ([`layerprune_core::read_only_refusal`], the writers'
/// own check and text).
fn refuse_read_only(flag: &str, path: &Path, is_folder: bool) -> Result<()> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    let replaced = if is_folder {
        meta.is_dir()
    } else {
        meta.is_file()
    };
    match layerprune_core::read_only_refusal(&meta).filter(|_| replaced) {
        Some(problem) => bail!("{flag} {}: {problem}", path.display()),
        None => Ok(()),
    }
}

/// Creates and removes a probe file in the output's folder, so a folder that cannot be written
/// is reported before the work rather than after it. The probe has the longest name the stage
/// puts beside the output (`.NAME.tmp-PID-N`, [`layerprune_core::longest_sibling_name`]), so an
/// output name the file system takes but whose temporary file's name is too long is refused
/// here too, as a name too long, not after the work (until 2026-12-07 a name of 243 to 249
/// bytes failed only when the result was written).
fn probe_folder(flag: &str, path: &Path) -> Result<()> {
    let folder = folder_of(path);
    let name = path.file_name().unwrap_or_default();
    let probe_name =
        layerprune_core::longest_sibling_name(name, NEXT_PROBE.fetch_add(1, Ordering::Relaxed));
    let probe = folder.join(&probe_name);
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {}
        Err(error) if name_too_long(&error) => {
            bail!(
                "{flag} {}: {}",
                path.display(),
                too_long(folder, name, &probe, probe_name.len() - name.len())
            );
        }
        Err(error) => {
            return Err(error).with_context(|| {
                format!(
                    "{flag} {}: cannot write in the folder {}",
                    path.display(),
                    folder.display()
                )
            })
        }
    }
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Why the probe `probe` of the output `name` in `folder` (its name `added` bytes longer) was
/// refused as too long (ENAMETOOLONG), which is either of two limits: the name's (NAME_MAX),
/// whose figure is given only where the output's name is over it, and the whole path's
/// (PATH_MAX). Where neither is over what the system says, the file system's own limit is
/// below it (eCryptfs takes names of about 143 bytes), and no figure is given.
fn too_long(folder: &Path, name: &std::ffi::OsStr, probe: &Path, added: usize) -> String {
    let temporary = format!(
        "the stage writes its temporary file beside it as .NAME.tmp-PID-N, {added} bytes longer"
    );
    let most = name_max(folder).saturating_sub(added);
    if name.len() > most {
        return format!(
            "the name is too long: at most {most} bytes here (it has {}), since {temporary}; \
             choose a shorter name",
            name.len()
        );
    }
    let path_max = path_max(folder);
    if probe.as_os_str().len() >= path_max {
        return format!(
            "the path is too long: {temporary}, and that path ({} bytes) is over the system's \
             limit on a path (PATH_MAX, {path_max} bytes with its end); choose a shorter name or \
             a folder nearer the root",
            probe.as_os_str().len()
        );
    }
    format!(
        "the file system refuses the name of its temporary file as too long ({temporary}: {} \
         bytes); choose a shorter name",
        name.len() + added
    )
}

/// Whether `error` is the file system's "File name too long" (ENAMETOOLONG).
fn name_too_long(error: &std::io::Error) -> bool {
    #[cfg(unix)]
    if error.raw_os_error() == Some(libc::ENAMETOOLONG) {
        return true;
    }
    error.kind() == ErrorKind::InvalidFilename
}

/// The longest file name, in bytes, the file system of `folder` takes (255 where it does not
/// say: every common file system's).
fn name_max(folder: &Path) -> usize {
    #[cfg(unix)]
    return path_limit(folder, libc::_PC_NAME_MAX).unwrap_or(255);
    #[cfg(not(unix))]
    255
}

/// The longest path, in bytes with its ending NUL, the system takes in `folder` (4096 where
/// it does not say: Linux's PATH_MAX).
fn path_max(folder: &Path) -> usize {
    #[cfg(unix)]
    return path_limit(folder, libc::_PC_PATH_MAX).unwrap_or(4096);
    #[cfg(not(unix))]
    4096
}

/// `pathconf(folder, limit)`, where the system says one.
#[cfg(unix)]
fn path_limit(folder: &Path, limit: libc::c_int) -> Option<usize> {
    use std::os::unix::ffi::OsStrExt;
    let folder = std::ffi::CString::new(folder.as_os_str().as_bytes()).ok()?;
    // SAFETY: `folder` is a NUL-terminated path that lives across the call.
    let most = unsafe { libc::pathconf(folder.as_ptr(), limit) };
    usize::try_from(most).ok().filter(|&most| most > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(io: Io) -> String {
        format!("{:#}", io.check().unwrap_err())
    }

    /// A table output replaces a table of its own kind (a rerun), never a table of another
    /// kind; a file that is not a table is written over a file of another tool, never over a
    /// table.
    #[test]
    fn a_table_output_never_replaces_a_table_of_another_kind() {
        use layerprune_tables::{write_tokens, Provenance, TokenTable};
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("evaluations.parquet");
        let table = TokenTable::new(2, vec![vec![1, 2]], "test", "ids");
        write_tokens(&tokens, &table, &Provenance::new("test", "0", vec![])).unwrap();
        let message = refused(Io::new().output_table("--out", &tokens, TableKind::Scores));
        assert!(
            message.contains("--out")
                && message.contains("evaluations.parquet")
                && message
                    .contains("holds a table of kind tokens, and this writes one of kind scores"),
            "{message}"
        );
        // Not with --overwrite either: that replaces what the stage wrote, or a user's file.
        let message = refused(Io::new().overwrite(true).output_table(
            "--out",
            &tokens,
            TableKind::Scores,
        ));
        assert!(
            message.contains("holds a table of kind tokens"),
            "{message}"
        );
        let _ = Io::new()
            .output_table("--out", &tokens, TableKind::Tokens)
            .check()
            .unwrap();
        let _ = Io::new()
            .output_table("--out", dir.path().join("new.parquet"), TableKind::Plans)
            .check()
            .unwrap();
        // A file that is not a table (a quantized ONNX model, frontier.csv) is not written over
        // any table; over another tool's file it is.
        for io in [
            Io::new().output("--out", &tokens),
            Io::new().output_surrogate("--out", &tokens),
            Io::new().output_json("--summary", &tokens, &["seconds"]),
        ] {
            let message = refused(io);
            assert!(
                message.contains("holds a table of kind tokens, and this writes a"),
                "{message}"
            );
        }
        let other_tool = dir.path().join("notes.parquet");
        fs::write(&other_tool, b"not a table").unwrap();
        let _ = Io::new().output("--out", &other_tool).check().unwrap();
    }

    /// A file that holds no layerprune table or surrogate (a user's text corpus, a Parquet file
    /// or JSON of another tool) is replaced by a table, surrogate or JSON output only under the
    /// stage's --overwrite, or where the stage resumes the output and judges it itself; an
    /// empty file holds nothing to lose.
    #[test]
    fn a_file_no_stage_wrote_is_replaced_only_with_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("corpus.txt");
        fs::write(&text, "The user's own text.\n\nA second paragraph.\n").unwrap();
        let parquet = dir.path().join("theirs.parquet");
        fs::write(&parquet, b"PAR1 and then some bytes of another tool").unwrap();
        let json = dir.path().join("config.json");
        fs::write(&json, br#"{"learning_rate": 0.1, "layers": [1, 2]}"#).unwrap();
        let jsonl = dir.path().join("docs.jsonl");
        fs::write(&jsonl, b"{\"text\": \"one\"}\n{\"text\": \"two\"}\n").unwrap();
        for (path, held) in [
            (
                &text,
                "neither a layerprune table nor a surrogate (not Parquet or valid JSON)",
            ),
            (&parquet, "a Parquet file that is no layerprune table"),
            // (…"neither a layerprune surrogate nor what --summary writes" to a JSON output)
            (&json, "JSON that is n"),
            (&jsonl, "neither a layerprune table nor a surrogate"),
        ] {
            let outputs = |io: Io| {
                [
                    io.clone().output_table("--out", path, TableKind::Masks),
                    io.clone().output_surrogate("--out", path),
                    io.output_json("--summary", path, &["masks_per_second"]),
                ]
            };
            for io in outputs(Io::new()) {
                let message = refused(io);
                assert!(
                    message.contains(&path.display().to_string())
                        && message.contains(held)
                        && message.contains("refusing to replace a file it did not write")
                        && message.contains("choose another path (or remove the file)"),
                    "{message}"
                );
            }
            // A stage with --overwrite names it.
            for io in outputs(Io::new().overwrite(false)) {
                let message = refused(io);
                assert!(
                    message.contains("pass --overwrite to replace it"),
                    "{message}"
                );
            }
            for io in outputs(Io::new().overwrite(true)) {
                drop(io.check().unwrap());
            }
            // Given for this output (quantize's, apply-prune's --pruned-out).
            drop(
                Io::new()
                    .output_table("--out", path, TableKind::Masks)
                    .existing_refused_unless(true, "--out", path)
                    .check()
                    .unwrap(),
            );
            // A table the stage resumes (evaluate --out, a cache): its reader refuses the file
            // or replaces it under --overwrite.
            drop(
                Io::new()
                    .output_table("--out", path, TableKind::Evaluations)
                    .locked_by_stage(path)
                    .check()
                    .unwrap(),
            );
            // A file of a sort not said (frontier.csv in frontier's folder) replaces it.
            drop(Io::new().output("--out", path).check().unwrap());
            assert!(path.exists());
        }
        let empty = dir.path().join("made-by-mktemp");
        fs::write(&empty, b"").unwrap();
        drop(
            Io::new()
                .output_table("--out", &empty, TableKind::Masks)
                .output_surrogate("--surrogate", dir.path().join("s.json"))
                .check()
                .unwrap(),
        );
        drop(Io::new().output_surrogate("--out", &empty).check().unwrap());
    }

    /// A fitted surrogate (an MLP's takes long to fit) is protected as a table of another
    /// kind: replaced only by a surrogate (fit-surrogate's rerun), or by an output of a sort
    /// not said; never by a table or another JSON output, not even under --overwrite.
    #[test]
    fn a_surrogate_is_replaced_only_by_a_surrogate() {
        use layerprune_surrogate::{fit, FitOptions, SavedSurrogate, SurrogateKind};
        assert_eq!(SURROGATE_FORMAT, layerprune_surrogate::FORMAT_NAME);
        let dir = tempfile::tempdir().unwrap();
        let masks: Vec<layerprune_core::Mask> = (0..16u32)
            .map(|bits| {
                let kept: Vec<bool> = (0..4).map(|b| bits & (1 << b) != 0).collect();
                layerprune_core::Mask::from_kept(kept)
            })
            .collect();
        let values: Vec<f64> = masks.iter().map(|m| m.num_kept() as f64 / 4.0).collect();
        let model = fit(
            SurrogateKind::Quadratic,
            &masks,
            &values,
            &FitOptions::default(),
        )
        .unwrap();
        let surrogate = dir.path().join("surrogate.json");
        SavedSurrogate::new(model, "utility", "test")
            .save(&surrogate)
            .unwrap();
        assert_eq!(
            Held::at(&surrogate, &Writes::Surrogate),
            Held::Surrogate(Some("quadratic".to_string()))
        );
        // Rewritten by another tool, with "format" after the parameters and spaces around.
        let value: serde_json::Value =
            serde_json::from_slice(&fs::read(&surrogate).unwrap()).unwrap();
        let rewritten = dir.path().join("rewritten.json");
        let mut text = String::from("\n  {\"parameters\": ");
        text.push_str(&value["parameters"].to_string());
        for (key, field) in value.as_object().unwrap() {
            if key != "parameters" {
                text.push_str(&format!(", {key:?}: {field}"));
            }
        }
        text.push_str("}\n");
        fs::write(&rewritten, text).unwrap();
        assert!(SavedSurrogate::load(&rewritten).is_ok());
        assert_eq!(
            Held::at(&rewritten, &Writes::Surrogate),
            Held::at(&surrogate, &Writes::Surrogate)
        );

        for io in [Io::new(), Io::new().overwrite(true)] {
            let message = refused(
                io.clone()
                    .output_table("--out", &surrogate, TableKind::Scores),
            );
            assert!(
                message.contains("--out")
                    && message.contains("surrogate.json")
                    && message.contains(
                        "holds a layerprune surrogate of kind quadratic, and this writes a \
                         table of kind scores over it"
                    ),
                "{message}"
            );
            let message = refused(io.output_json("--summary", &surrogate, &["seconds"]));
            assert!(
                message.contains("--summary")
                    && message.contains(
                        "holds a layerprune surrogate of kind quadratic, and this writes a file \
                         that is not a surrogate over it"
                    ),
                "{message}"
            );
        }
        drop(
            Io::new()
                .output_surrogate("--out", &surrogate)
                .check()
                .unwrap(),
        );
        drop(Io::new().output("--out", &rewritten).check().unwrap());
    }

    /// A JSON output of the stage's own (evaluate --summary) replaces the JSON it wrote before,
    /// told by keys it always holds, without --overwrite (Make's reruns give none).
    #[test]
    fn a_json_output_replaces_its_own_json() {
        let dir = tempfile::tempdir().unwrap();
        let summary = dir.path().join("summary.json");
        fs::write(
            &summary,
            br#"{"masks": 4, "seconds": 0.5, "masks_per_second": 8.0, "extra": {"kind": 1}}"#,
        )
        .unwrap();
        const KEYS: &[&str] = &["masks", "seconds", "masks_per_second"];
        drop(
            Io::new()
                .output_json("--summary", &summary, KEYS)
                .check()
                .unwrap(),
        );
        let message = refused(Io::new().overwrite(false).output_json(
            "--summary",
            &summary,
            &["masks", "windows"],
        ));
        assert!(
            message.contains(
                "holds JSON that is neither a layerprune surrogate nor what --summary writes"
            ) && message.contains("pass --overwrite"),
            "{message}"
        );
        // Another output writing a table over it: refused as any file no stage wrote.
        let message = refused(Io::new().output_table("--out", &summary, TableKind::Scores));
        assert!(
            message.contains("JSON that is no layerprune surrogate"),
            "{message}"
        );
    }

    /// A CSV output of the stage's own (frontier.csv) replaces a CSV file whose header starts
    /// as its own (a rerun, or an older version's columns) and an empty file, and nothing
    /// else: a user's file of that name is refused, as is a surrogate or a table.
    #[test]
    fn a_csv_output_replaces_only_its_own_csv() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("frontier.csv");
        const HEADER_START: &str = "method,k,calibration_set,";
        let io = || Io::new().output_csv("--out-dir", &csv, HEADER_START);
        for own in [
            "method,k,calibration_set,llm_evaluations\r\nsleb,3,c0,87\n",
            "method,k,calibration_set,older\n",
            "",
        ] {
            fs::write(&csv, own).unwrap();
            drop(io().check().unwrap());
        }
        for (theirs, says) in [
            ("user,csv\n", "a file whose first line is \"user,csv\""),
            ("\u{ff}\u{fe}", "a file whose first line is"),
        ] {
            fs::write(&csv, theirs).unwrap();
            let message = refused(io());
            assert!(
                message.contains(says)
                    && message.contains("refusing to replace a file it did not write")
                    && message.contains("choose another path"),
                "{message}"
            );
        }
        fs::write(&csv, [0xffu8, 0xfe, 0x00]).unwrap();
        assert!(refused(io()).contains("a file that is not text"));
        let surrogate = br#"{"format": "layerprune-surrogate", "kind": "quadratic"}"#;
        fs::write(&csv, surrogate).unwrap();
        assert!(refused(io()).contains("holds a layerprune surrogate"));
    }

    /// With `existing_refused_unless(false, ...)` an existing output is refused before any
    /// work (a stage's --overwrite not given); with true, or nothing there, it passes. A
    /// folder and an ONNX model file (quantize's two --out) are refused by that one rule, in
    /// one spelling; the model file never replaces a surrogate, even with true.
    #[test]
    fn an_existing_output_is_refused_up_front_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("quantized");
        let model = dir.path().join("model-int8.onnx");
        type Declare = fn(Io, &Path) -> Io;
        let declared: [(&Path, Declare); 2] = [
            (&folder, |io, path| io.output_folder("--out", path)),
            (&model, |io, path| io.output_onnx_model("--out", path)),
        ];
        for (path, declare) in declared {
            let io = |overwrite: bool| {
                declare(Io::new(), path).existing_refused_unless(overwrite, "--out", path)
            };
            let _ = io(false).check().unwrap();
            if path == folder {
                fs::create_dir(path).unwrap();
            } else {
                // An earlier run's model, or the user's file: neither told from the other.
                fs::write(path, b"not a table").unwrap();
            }
            assert_eq!(
                refused(io(false)),
                format!(
                    "--out {}: already exists; pass --overwrite to replace it",
                    path.display()
                )
            );
            let _ = io(true).check().unwrap();
        }
        // A killed writer's temporary folder beside it (a process that has ended: PID 999999
        // is above Linux's pid_max) is named, not left unseen.
        let left = dir.path().join(".quantized.tmp-999999-0");
        fs::create_dir(&left).unwrap();
        assert_eq!(
            refused(
                Io::new()
                    .output_folder("--out", &folder)
                    .existing_refused_unless(false, "--out", &folder)
            ),
            format!(
                "--out {}: already exists; pass --overwrite to replace it (a killed run left {} \
                 beside it: a run that writes it removes it)",
                folder.display(),
                left.display()
            )
        );
        let surrogate = dir.path().join("surrogate.json");
        fs::write(&surrogate, br#"{"format": "layerprune-surrogate"}"#).unwrap();
        let message = refused(
            Io::new()
                .output_onnx_model("--out", &surrogate)
                .existing_refused_unless(true, "--out", &surrogate),
        );
        assert!(
            message.contains("holds a layerprune surrogate, and this writes an ONNX model"),
            "{message}"
        );
        let message = refused(Io::new().output("--out", dir.path().join("model.onnx/")));
        assert!(message.contains("names a folder"), "{message}");
    }

    #[test]
    fn every_output_is_locked_while_the_run_holds_its_locks() {
        // A second run writing any output of a running one (`evaluate --merge` beside a running
        // `evaluate`, two `apply-prune` runs on one pruned folder) is refused at once.
        let dir = tempfile::tempdir().unwrap();
        let (table, folder) = (dir.path().join("plans.parquet"), dir.path().join("pruned"));
        let io = || {
            Io::new()
                .output_table("--out", &table, TableKind::Plans)
                .output_folder("--pruned-out", &folder)
        };
        let held = io().check().unwrap();
        let message = refused(io());
        assert!(
            message.contains("--out") && message.contains("in use by another run"),
            "{message}"
        );
        let message = refused(Io::new().output_folder("--pruned-out", &folder));
        assert!(message.contains("--pruned-out"), "{message}");
        // Released with the locks (and no lock file is left).
        drop(held);
        let again = io().check().unwrap();
        drop(again);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        // An output the stage locks itself (a table it resumes) is left to it, however spelled.
        let stage = layerprune_core::FileLock::try_acquire(&table).unwrap();
        drop(io().locked_by_stage(&table).check().unwrap());
        let respelled = dir.path().join(".").join("plans.parquet");
        drop(io().locked_by_stage(&respelled).check().unwrap());
        drop(stage);
    }

    /// An output name the file system takes, but whose temporary file `.NAME.tmp-PID-N` (the
    /// longest name a stage puts beside it) is too long for it, is refused before the work as a
    /// name too long, with the most it may have; until 2026-12-07 a name of 243 to 249 bytes
    /// passed and failed only once the result was written, and one of 250 to 255 was refused
    /// as a lock file that cannot be made.
    #[test]
    fn an_output_name_too_long_for_its_temporary_file_is_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let most = name_max(dir.path());
        let added = layerprune_core::longest_sibling_name("x".as_ref(), 0).len() - 1;
        for length in [most - added + 1, most - 10, most - 6, most] {
            let name = "e".repeat(length);
            for io in [
                Io::new().output_table("--out", dir.path().join(&name), TableKind::Masks),
                Io::new().output_folder("--pruned-out", dir.path().join(&name)),
            ] {
                let message = refused(io);
                assert!(
                    message.contains(&format!(
                        "the name is too long: at most {} bytes here (it has {length})",
                        most - added
                    )) && !message.contains(".lock"),
                    "{length}: {message}"
                );
            }
        }
        // The longest name that fits passes, and leaves nothing but its lock while held.
        let name = "e".repeat(most - added);
        let outputs = Io::new()
            .output("--out", dir.path().join(&name))
            .check()
            .unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(outputs);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// The bound of the names of an output is the same on every run: the probe's process id is
    /// as wide as any (until 2026-12-07 it was this run's, so a name that passed could be
    /// refused on a later run with a longer id, and "at most N bytes" moved with it).
    #[test]
    fn the_bound_of_an_output_name_does_not_depend_on_the_process_id() {
        let added = layerprune_core::longest_sibling_name("x".as_ref(), 0).len() - 1;
        assert_eq!(added, ".".len() + ".tmp-".len() + 10 + "-".len() + 6);
    }

    /// An output whose name fits but whose temporary file's path is over the system's limit on
    /// a path (PATH_MAX) is refused as a path too long, never with an "at most N bytes" its
    /// name already meets (until 2026-12-07: "at most 237 bytes here (it has 48)").
    #[cfg(target_os = "linux")]
    #[test]
    fn an_output_path_too_long_for_its_temporary_file_is_refused_as_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let added = layerprune_core::longest_sibling_name("x".as_ref(), 0).len() - 1;
        let name = "m".repeat(48);
        // A folder deep enough that the output's path fits in 4095 bytes and its probe's not.
        let mut folder = dir.path().to_path_buf();
        let target = 4095 - 1 - name.len() - added / 2;
        while folder.as_os_str().len() + 1 + 200 + 2 <= target {
            folder.push("d".repeat(200));
        }
        let rest = target - folder.as_os_str().len() - 1;
        folder.push("d".repeat(rest));
        fs::create_dir_all(&folder).unwrap();
        let output = folder.join(&name);
        assert!(output.as_os_str().len() < 4096);
        assert!(output.as_os_str().len() + added >= 4096);
        for io in [
            Io::new().output_table("--out", &output, TableKind::Masks),
            Io::new().output_folder("--pruned-out", &output),
        ] {
            let message = refused(io);
            assert!(
                message.contains("the path is too long")
                    && message.contains("PATH_MAX")
                    && !message.contains("at most"),
                "{message}"
            );
        }
        assert_eq!(fs::read_dir(&folder).unwrap().count(), 0);
    }

    /// An existing output its owner may not write (made read-only) is refused before the work,
    /// named, with the way out, and left as it is: a file and a folder alike, as root too
    /// (judged by the mode bits), but one the stage resumes (a read-only cache, read only).
    /// Without --overwrite, a folder is refused as existing first. One the owner may write
    /// passes.
    #[cfg(unix)]
    #[test]
    fn a_read_only_output_is_refused_up_front() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("masks.parquet");
        fs::write(&table, b"").unwrap();
        let folder = dir.path().join("pruned");
        fs::create_dir(&folder).unwrap();
        for (path, mode, what) in [
            (&table, 0o444, "is read-only"),
            (&folder, 0o555, "is a read-only folder"),
        ] {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
            for overwrite in [false, true] {
                let io = Io::new().overwrite(overwrite);
                let io = if path == &folder {
                    io.output_folder("--pruned-out", path)
                        .existing_refused_unless(overwrite, "--pruned-out", path)
                } else {
                    io.output_table("--out", path, TableKind::Masks)
                };
                let message = refused(io);
                if path == &folder && !overwrite {
                    // Not to be replaced at all: that is the answer, not its mode.
                    assert_eq!(
                        message,
                        format!(
                            "--pruned-out {}: already exists; pass --overwrite to replace it",
                            path.display()
                        )
                    );
                    continue;
                }
                assert!(
                    message.contains(&path.display().to_string())
                        && message.contains(&format!("{what} (mode {mode:04o})"))
                        && message.contains("chmod u+w"),
                    "{message}"
                );
            }
            if path == &table {
                // A table the stage resumes (a cache) is read, and refused only by the write
                // of a run that adds to it.
                let _outputs = Io::new()
                    .output_table("--cache", path, TableKind::Masks)
                    .locked_by_stage(path)
                    .check()
                    .unwrap();
            }
            assert_eq!(
                fs::metadata(path).unwrap().permissions().mode() & 0o7777,
                mode
            );
            fs::set_permissions(path, fs::Permissions::from_mode(0o700)).unwrap();
        }
        drop(
            Io::new()
                .output_table("--out", &table, TableKind::Masks)
                .output_folder("--pruned-out", &folder)
                .existing_refused_unless(true, "--pruned-out", &folder)
                .check()
                .unwrap(),
        );
    }

    #[test]
    fn an_output_at_a_lock_files_name_is_refused() {
        // `.cache.parquet.lock` is where a run locks cache.parquet: a table written there would
        // be taken for the lock and removed with it.
        let dir = tempfile::tempdir().unwrap();
        let message = refused(Io::new().output("--out", dir.path().join(".cache.parquet.lock")));
        assert!(message.contains("lock file"), "{message}");
        // Names merely like it are outputs like any other.
        for name in ["cache.lock", ".lock", "lock.parquet", ".hidden.parquet"] {
            let _ = Io::new()
                .output("--out", dir.path().join(name))
                .check()
                .unwrap();
        }
    }

    #[test]
    fn an_output_equal_to_an_input_is_refused_by_name_and_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.parquet");
        fs::write(&input, b"data").unwrap();
        let message = refused(Io::new().input(&input).output("--out", &input));
        assert!(
            message.contains("--out") && message.contains("same file"),
            "{message}"
        );

        let hard = dir.path().join("hard.parquet");
        fs::hard_link(&input, &hard).unwrap();
        let message = refused(Io::new().input(&input).output("--out", &hard));
        assert!(message.contains("same file as the input"), "{message}");

        // An input given through a symbolic link to the output.
        let link = dir.path().join("link.parquet");
        std::os::unix::fs::symlink(&hard, &link).unwrap();
        let message = refused(Io::new().input(&link).output("--out", &input));
        assert!(message.contains("same file as the input"), "{message}");
        // The output itself a symbolic link.
        let message = refused(Io::new().output("--out", &link));
        assert!(message.contains("symbolic link"), "{message}");
        assert_eq!(fs::read(&input).unwrap(), b"data");
    }

    #[test]
    fn special_files_missing_and_unwritable_folders_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let message = refused(Io::new().output("--out", dir.path()));
        assert!(
            message.contains("a folder, not a regular file"),
            "{message}"
        );
        let missing = dir.path().join("missing").join("out.parquet");
        let message = refused(Io::new().output("--out", &missing));
        assert!(message.contains("does not exist"), "{message}");
        let message = refused(Io::new().output("--out", "/dev/null"));
        assert!(message.contains("a device"), "{message}");
        let outputs = Io::new()
            .output("--out", dir.path().join("new.parquet"))
            .check()
            .unwrap();
        drop(outputs);
        // No probe file (nor lock file) is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A folder the stage writes files into (`frontier --out-dir`) is never a layered model
    /// folder nor inside one, input or not (a pruned folder apply-prune wrote); a folder
    /// holding another tool's manifest.json is no model folder.
    #[test]
    fn a_folder_output_is_never_a_model_folder_nor_inside_one() {
        assert_eq!(MODEL_FORMAT, layerprune_model::FORMAT);
        assert_eq!(MODEL_MANIFEST, layerprune_model::MANIFEST_FILE);
        let dir = tempfile::tempdir().unwrap();
        let pruned = dir.path().join("pruned");
        fs::create_dir(&pruned).unwrap();
        fs::write(
            pruned.join("manifest.json"),
            br#"{"format": "layerprune-layered-onnx", "num_blocks": 4}"#,
        )
        .unwrap();
        let refused = |folder: &Path| {
            let error = check_folder_outside_inputs("--out-dir", folder, &[]).unwrap_err();
            format!("{error:#}")
        };
        let message = refused(&pruned);
        assert!(
            message.starts_with(&format!(
                "--out-dir {}: is a layered model folder",
                pruned.display()
            )) && message.contains("refusing to write into a model folder"),
            "{message}"
        );
        // Inside it: an existing folder, and one the stage would make (not made by the check).
        fs::create_dir(pruned.join("runs")).unwrap();
        for inner in [pruned.join("runs"), pruned.join("new").join("deeper")] {
            let message = refused(&inner);
            assert!(
                message.starts_with(&format!("--out-dir {}: lies inside ", inner.display()))
                    && message.contains(", a layered model folder"),
                "{message}"
            );
        }
        assert!(!pruned.join("new").exists());
        // Another tool's manifest.json, one that is not JSON, and a folder beside the model.
        let other = dir.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(
            other.join("manifest.json"),
            br#"{"format": "some-other-tool"}"#,
        )
        .unwrap();
        check_folder_outside_inputs("--out-dir", &other, &[]).unwrap();
        fs::write(other.join("manifest.json"), b"not json").unwrap();
        check_folder_outside_inputs("--out-dir", &other, &[]).unwrap();
        check_folder_outside_inputs("--out-dir", &dir.path().join("runs"), &[]).unwrap();
        // The model folder the stage reads is refused as its input, as before.
        let message = format!(
            "{:#}",
            check_folder_outside_inputs("--out-dir", &pruned.join("runs"), &[&pruned]).unwrap_err()
        );
        assert!(
            message.contains("lies inside the input folder"),
            "{message}"
        );
    }

    #[test]
    fn folder_outputs_may_not_hold_or_lie_in_an_input() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        fs::create_dir(&model).unwrap();
        fs::write(model.join("manifest.json"), b"{}").unwrap();
        let message = refused(
            Io::new()
                .input(&model)
                .output_folder("--pruned-out", &model),
        );
        assert!(message.contains("--pruned-out"), "{message}");
        let message = refused(
            Io::new()
                .input(&model)
                .output_folder("--pruned-out", dir.path()),
        );
        assert!(message.contains("holds the input"), "{message}");
        let inner = model.join("pruned");
        let message = refused(
            Io::new()
                .input(&model)
                .output_folder("--pruned-out", &inner),
        );
        assert!(message.contains("inside the input folder"), "{message}");
        fs::create_dir(dir.path().join("p")).unwrap();
        let message = refused(
            Io::new()
                .output_folder("--pruned-out", dir.path().join("p"))
                .output("--out", dir.path().join("p").join("plans.parquet")),
        );
        assert!(message.contains("inside the output folder"), "{message}");
        let message = refused(
            Io::new()
                .output("--out", dir.path().join("a"))
                .output("--summary", dir.path().join("a")),
        );
        assert!(message.contains("same output"), "{message}");
        let _ = Io::new()
            .input(&model)
            .output_folder("--pruned-out", dir.path().join("pruned"))
            .check()
            .unwrap();
    }
}
