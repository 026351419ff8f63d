//! The check every stage runs on its outputs before doing any work: an output never replaces
//! an input (by file identity, through symbolic and hard links), never replaces something that
//! is not a regular file (a device, FIFO, socket or symbolic link), and its folder exists and
//! can be written; a table output never replaces a table of another kind (a tokens table
//! written over the evaluations of hours of GPU time by a slip of the path), nor any other
//! output a table; and an output the stage only replaces with `--overwrite` is refused before
//! the work, not after it. Each refusal names the flag, the path and the problem. The check
//! then locks every output ([`OutputLocks`]) for as long as the stage runs, so a second run
//! writing one of them (`evaluate --merge` beside a running `evaluate`, two `apply-prune` runs
//! on one plan table and pruned folder) is refused at once instead of replacing the first's
//! work or pairing its table with the other's folder.

use std::fs;
use std::io::ErrorKind;
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
    /// File outputs, with the kind of table for those that are tables: an existing file there
    /// is replaced only if it is such a table (a rerun) or not a layerprune table at all.
    files: Vec<(String, PathBuf, Option<TableKind>)>,
    folders: Vec<(String, PathBuf)>,
    /// Outputs an existing file or folder at which is refused (the stage has `--overwrite`
    /// and it was not given), before the work rather than after it.
    kept: Vec<(String, PathBuf)>,
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

    /// A file the stage writes, given by `flag`.
    pub fn output(mut self, flag: &str, path: impl AsRef<Path>) -> Self {
        self.files
            .push((flag.to_string(), path.as_ref().to_path_buf(), None));
        self
    }

    /// [`Io::output`] of an optional flag.
    pub fn output_opt(self, flag: &str, path: Option<impl AsRef<Path>>) -> Self {
        match path {
            Some(path) => self.output(flag, path),
            None => self,
        }
    }

    /// An [`Io::output`] that is a table of `kind`: besides the checks of a file, an existing
    /// layerprune table of another kind at `path` is refused.
    pub fn output_table(mut self, flag: &str, path: impl AsRef<Path>, kind: TableKind) -> Self {
        self.files
            .push((flag.to_string(), path.as_ref().to_path_buf(), Some(kind)));
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
    /// at `path`, unless `overwrite` (the stage's `--overwrite`).
    pub fn existing_refused_unless(
        mut self,
        overwrite: bool,
        flag: &str,
        path: impl AsRef<Path>,
    ) -> Self {
        if !overwrite {
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
    /// - a table output over a layerprune table of another kind, and a file output that is
    ///   not a table over any layerprune table;
    /// - an existing output declared with [`Io::existing_refused_unless`] without overwrite;
    /// - an output whose folder is missing or cannot be written (a probe file is created in it
    ///   and removed);
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
        for (flag, path, kind) in &self.files {
            // Only a file that reads as a layerprune table of another kind (or any table, for
            // an output that is not one) is refused; anything else at the path (nothing, a
            // rerun's table, a file of another tool) is replaced.
            if !path.is_file() {
                continue;
            }
            if let Ok(found) = layerprune_tables::read_table_kind(path) {
                let written = match kind {
                    Some(kind) if found == *kind => continue,
                    Some(kind) => format!("one of kind {kind}"),
                    None => "a file that is not a table".to_string(),
                };
                bail!(
                    "{flag} {}: holds a table of kind {found}, and this writes {written} over \
                     it; choose another path (or remove the file)",
                    path.display()
                );
            }
        }
        for (flag, path) in &self.kept {
            if path.symlink_metadata().is_ok() {
                bail!(
                    "{flag} {} already exists; pass --overwrite to replace it",
                    path.display()
                );
            }
        }
        for (flag, path, _, _) in &places {
            probe_folder(flag, path)?;
        }
        // Matched by place, not spelling (`out.parquet` and `./out.parquet` are one file): a
        // path locked here and by the stage would block the stage on its own lock.
        let locked_by_stage: Vec<PathBuf> = self
            .locked_by_stage
            .iter()
            .filter_map(|path| Some(folder_of(path).canonicalize().ok()?.join(path.file_name()?)))
            .collect();
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

/// Refuses a folder the stage will create (if missing) and write files into when it is, or
/// would be made, inside an input folder (a model folder); checked before the folder is made,
/// so a refused run creates nothing. The files written in it are then checked with [`Io`].
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
    Ok(())
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

/// Creates and removes a probe file in the output's folder, so a folder that cannot be written
/// is reported before the work rather than after it.
fn probe_folder(flag: &str, path: &Path) -> Result<()> {
    let folder = folder_of(path);
    let probe = folder.join(format!(
        ".layerprune-probe-{}-{}",
        std::process::id(),
        NEXT_PROBE.fetch_add(1, Ordering::Relaxed)
    ));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .with_context(|| {
            format!(
                "{flag} {}: cannot write in the folder {}",
                path.display(),
                folder.display()
            )
        })?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(io: Io) -> String {
        format!("{:#}", io.check().unwrap_err())
    }

    /// A table output replaces a table of its own kind (a rerun) or a file that is no
    /// layerprune table, never a table of another kind.
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
        let _ = Io::new()
            .output_table("--out", &tokens, TableKind::Tokens)
            .check()
            .unwrap();
        let other_tool = dir.path().join("notes.parquet");
        fs::write(&other_tool, b"not a table").unwrap();
        let _ = Io::new()
            .output_table_opt("--out", Some(&other_tool), TableKind::Scores)
            .output_table("--out", dir.path().join("new.parquet"), TableKind::Plans)
            .check()
            .unwrap();
        // A file that is not a table (a quantized ONNX model, a surrogate) is not written over
        // any table; over another tool's file it is.
        let message = refused(Io::new().output("--out", &tokens));
        assert!(
            message.contains(
                "holds a table of kind tokens, and this writes a file that is not a table"
            ),
            "{message}"
        );
        let _ = Io::new().output("--out", &other_tool).check().unwrap();
    }

    /// With `existing_refused_unless(false, ...)` an existing output is refused before any
    /// work (a stage's --overwrite not given); with true, or nothing there, it passes.
    #[test]
    fn an_existing_output_is_refused_up_front_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("quantized");
        let io = |overwrite: bool| {
            Io::new()
                .output_folder("--out", &folder)
                .existing_refused_unless(overwrite, "--out", &folder)
        };
        let _ = io(false).check().unwrap();
        fs::create_dir(&folder).unwrap();
        let message = refused(io(false));
        assert!(
            message.contains("--out") && message.contains("already exists; pass --overwrite"),
            "{message}"
        );
        let _ = io(true).check().unwrap();
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
