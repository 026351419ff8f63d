//! Every path a model folder names stays inside it.
//!
//! A manifest's `files` entries, its graph and tokenizer file names and the external-data
//! `location`s inside its graphs are all paths read from files, so none is trusted: each is
//! joined to its folder only through [`confined`] (or [`confined_reference`] for a graph's
//! external data), which refuses an empty or absolute path, a `..` component, and a path whose
//! existing part leads out of the folder through a symlink (checked on the canonical paths).
//!
//! Copies are checked too: [`take_source_file`](crate::take_source_file) never writes onto an
//! existing file (in particular not onto its own source, compared by device and inode), and
//! [`refuse_overlap`] refuses a destination folder that is, is inside, or contains the source
//! folder.

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::{ModelError, MANIFEST_FILE};

/// The rule every refusal repeats.
const RULE: &str = "paths in a model folder must be relative, without `..`, and stay inside it";

/// Why `entry` is not a relative path inside its folder, judged by its text alone.
pub(crate) fn lexical_problem(entry: &str) -> Option<String> {
    if entry.is_empty() {
        return Some("is empty".into());
    }
    if entry.contains('\0') {
        return Some("contains a NUL byte".into());
    }
    let path = Path::new(entry);
    if path.has_root() || path.is_absolute() {
        return Some("is an absolute path".into());
    }
    let mut names = 0;
    for component in path.components() {
        match component {
            Component::Normal(_) => names += 1,
            Component::CurDir => {}
            Component::ParentDir => return Some("has a `..` component".into()),
            Component::RootDir | Component::Prefix(_) => return Some("is an absolute path".into()),
        }
    }
    if names == 0 {
        return Some("names no file".into());
    }
    None
}

/// `entry` without its `.` components: `./block_000.onnx` and `block_000.onnx` are one file.
pub(crate) fn without_dots(entry: &str) -> PathBuf {
    Path::new(entry)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Why `folder/entry` (lexically fine) is not inside `folder` on disk: every existing prefix of
/// it, the file itself included, must resolve (symlinks followed) to a path inside the
/// canonical folder. Parts that do not exist yet cannot lead anywhere.
fn disk_problem(folder: &Path, entry: &str) -> Option<String> {
    let Ok(root) = fs::canonicalize(folder) else {
        // No folder: nothing in it exists, and reading it fails on its own.
        return None;
    };
    let mut current = folder.to_path_buf();
    for component in Path::new(entry).components() {
        let Component::Normal(name) = component else {
            continue;
        };
        current.push(name);
        if fs::symlink_metadata(&current).is_err() {
            return None;
        }
        match fs::canonicalize(&current) {
            Ok(resolved) if resolved.starts_with(&root) => {}
            Ok(resolved) => {
                return Some(format!(
                    "leads out of the folder through a symlink (to {})",
                    resolved.display()
                ))
            }
            Err(error) => {
                return Some(format!(
                    "cannot be resolved ({}: {error}), e.g. a symlink that leads nowhere",
                    current.display()
                ))
            }
        }
    }
    None
}

fn problem(folder: &Path, entry: &str) -> Option<String> {
    lexical_problem(entry).or_else(|| disk_problem(folder, entry))
}

/// Why `folder/entry`, inside the folder, cannot be read as a file: it is a named pipe, a
/// device or a socket (symlinks followed), which would block or never end when read (ONNX
/// Runtime opens graphs and their external data by path). Folders and missing paths pass:
/// reading them fails on its own.
fn special_problem(path: &Path) -> Option<String> {
    layerprune_core::refuse_special(path)
        .err()
        .map(|error| error.to_string())
}

/// `folder/entry`, for a path `entry` read from `folder`'s manifest, once it is known to stay
/// inside `folder`: relative, no `..` component, not empty, and no symlink on the way leading
/// out of the folder; and, if it exists, a regular file or folder, not a FIFO, device or socket.
/// Otherwise [`ModelError::BadManifest`] naming the manifest and the entry.
pub fn confined(folder: &Path, entry: &str) -> Result<PathBuf, ModelError> {
    let bad = |problem: String| ModelError::BadManifest {
        path: folder.join(MANIFEST_FILE),
        problem: format!("entry {entry:?} {problem}"),
    };
    if let Some(problem) = problem(folder, entry) {
        return Err(bad(format!("{problem}; {RULE}")));
    }
    let path = folder.join(entry);
    match special_problem(&path) {
        None => Ok(path),
        Some(problem) => Err(bad(problem)),
    }
}

/// The folder-relative path of the external-data `location` of the graph whose folder-relative
/// path is `graph` (ONNX resolves it against the graph's own folder), checked like
/// [`confined`]; errors are [`ModelError::BadGraph`] naming the graph file and the location.
/// Returns the folder-relative path (`/`-separated) and the joined path.
pub fn confined_reference(
    folder: &Path,
    graph: &str,
    location: &str,
) -> Result<(String, PathBuf), ModelError> {
    let bad = |problem: String| ModelError::BadGraph {
        path: folder.join(graph),
        problem: format!("external data location {location:?} {problem}"),
    };
    if let Some(problem) = lexical_problem(location) {
        return Err(bad(format!("{problem}; {RULE}")));
    }
    // Spelled as `files` keys are (`weights/a.bin`): `.` components dropped, so a graph named
    // `./block_000.onnx` or a location `./a.bin` names the listed file, not an unlisted one.
    let relative = Path::new(graph)
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .chain(Path::new(location).components())
        .filter(|component| !matches!(component, Component::CurDir))
        .map(|component| component.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    if let Some(problem) = problem(folder, &relative) {
        return Err(bad(format!("{problem}; {RULE}")));
    }
    let path = folder.join(&relative);
    match special_problem(&path) {
        None => Ok((relative, path)),
        Some(problem) => Err(bad(problem)),
    }
}

/// Whether `a` and `b` are the same file (symlinks followed): same device and inode on Unix.
/// False when either does not exist.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        #[cfg(unix)]
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            a.dev() == b.dev() && a.ino() == b.ino()
        }
        #[cfg(not(unix))]
        (Ok(_), Ok(_)) => matches!(
            (fs::canonicalize(a), fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        ),
        _ => false,
    }
}

/// `path` made absolute with its existing part canonical (symlinks resolved) and the rest,
/// which does not exist and so holds no symlink, normalized lexically.
fn resolve(path: &Path) -> Option<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = fs::canonicalize(existing) {
            let mut resolved = canonical;
            for component in rest.iter().rev() {
                match component {
                    Component::ParentDir => {
                        resolved.pop();
                    }
                    Component::Normal(name) => resolved.push(name),
                    _ => {}
                }
            }
            return Some(resolved);
        }
        rest.push(existing.components().next_back()?);
        existing = existing.parent()?;
    }
}

/// Refuses writing the folder `dest` from the folder `source` when `dest` is `source`, lies
/// inside it, or contains it (replacing `dest` would then delete the source), judged on
/// resolved paths and, for an existing `dest`, by file identity.
pub fn refuse_overlap(source: &Path, dest: &Path) -> Result<(), ModelError> {
    let refuse = |problem: String| ModelError::Destination {
        path: dest.to_path_buf(),
        problem,
    };
    if same_file(source, dest) {
        return Err(refuse(format!(
            "is the source folder {}; write to another folder",
            source.display()
        )));
    }
    let (Some(source_resolved), Some(dest_resolved)) = (resolve(source), resolve(dest)) else {
        return Ok(());
    };
    if dest_resolved == source_resolved {
        return Err(refuse(format!(
            "is the source folder {}; write to another folder",
            source.display()
        )));
    }
    if dest_resolved.starts_with(&source_resolved) {
        return Err(refuse(format!(
            "is inside the source folder {}; write outside it",
            source.display()
        )));
    }
    if source_resolved.starts_with(&dest_resolved) {
        return Err(refuse(format!(
            "contains the source folder {}; replacing it would delete the source",
            source.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_judged_by_their_text() {
        for fine in ["a.bin", "weights/a.bin", "./weights/a.bin", "a..b", "..a"] {
            assert_eq!(lexical_problem(fine), None, "{fine}");
        }
        for (bad, problem) in [
            ("", "is empty"),
            (".", "names no file"),
            ("/etc/passwd", "is an absolute path"),
            ("../x.bin", "has a `..` component"),
            ("weights/../../x.bin", "has a `..` component"),
            ("a\0b", "contains a NUL byte"),
        ] {
            assert_eq!(lexical_problem(bad).as_deref(), Some(problem), "{bad:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_inside_are_fine_and_symlinks_out_are_not() {
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("model");
        fs::create_dir_all(folder.join("weights")).unwrap();
        fs::write(folder.join("weights/a.bin"), b"a").unwrap();
        fs::write(root.path().join("outside.bin"), b"o").unwrap();
        std::os::unix::fs::symlink("weights/a.bin", folder.join("inside.bin")).unwrap();
        std::os::unix::fs::symlink("../outside.bin", folder.join("out.bin")).unwrap();
        std::os::unix::fs::symlink(root.path(), folder.join("up")).unwrap();
        std::os::unix::fs::symlink("nowhere", folder.join("dangling.bin")).unwrap();
        assert_eq!(
            confined(&folder, "inside.bin").unwrap(),
            folder.join("inside.bin")
        );
        assert!(confined(&folder, "weights/new.bin").is_ok());
        let error = confined(&folder, "out.bin").unwrap_err().to_string();
        assert!(
            error.contains("\"out.bin\" leads out of the folder"),
            "{error}"
        );
        assert!(error.contains("manifest.json"), "{error}");
        // A directory symlink out is caught even when the file behind it does not exist.
        let error = confined(&folder, "up/new.bin").unwrap_err().to_string();
        assert!(error.contains("leads out of the folder"), "{error}");
        let error = confined(&folder, "dangling.bin").unwrap_err().to_string();
        assert!(error.contains("cannot be resolved"), "{error}");

        let error = confined_reference(&folder, "block.onnx", "/etc/passwd")
            .unwrap_err()
            .to_string();
        assert!(error.contains("block.onnx"), "{error}");
        assert!(
            error.contains("\"/etc/passwd\" is an absolute path"),
            "{error}"
        );
        assert_eq!(
            confined_reference(&folder, "sub/g.onnx", "w.bin").unwrap(),
            ("sub/w.bin".to_string(), folder.join("sub/w.bin"))
        );
        // Spelled as the manifest's `files` keys are, whatever `.` the names hold.
        for (graph, location) in [
            ("./g.onnx", "weights/a.bin"),
            ("g.onnx", "./weights/a.bin"),
            ("./g.onnx", "weights/./a.bin"),
        ] {
            assert_eq!(
                confined_reference(&folder, graph, location).unwrap(),
                ("weights/a.bin".to_string(), folder.join("weights/a.bin")),
                "{graph} reading {location}"
            );
        }
    }

    #[test]
    fn overlapping_folders_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let source = root.path().join("model");
        fs::create_dir_all(&source).unwrap();
        let sibling = root.path().join("out");
        refuse_overlap(&source, &sibling).unwrap();
        for (dest, problem) in [
            (source.clone(), "is the source folder"),
            (source.join("."), "is the source folder"),
            (source.join("sub/out"), "is inside the source folder"),
            (
                root.path().join("x/../model/sub"),
                "is inside the source folder",
            ),
            (root.path().to_path_buf(), "contains the source folder"),
        ] {
            let error = refuse_overlap(&source, &dest).unwrap_err().to_string();
            assert!(error.contains(problem), "{}: {error}", dest.display());
        }
    }
}
