//! Writing a pruned layered model folder: the source folder's files minus the removed blocks'
//! graphs and the weight files only they use, with a rewritten manifest.
//!
//! Which weight files a graph uses is stored inside the graph (ONNX external-data entries name
//! the file by a path relative to the model folder, `weights/<hash>.bin`). Rather than parse
//! the protobuf, the graph's bytes are scanned for that string: a path that appears in a graph
//! is (conservatively) treated as used by it, so a weight file is dropped only when no kept
//! graph mentions it. Only files listed in the manifest's `files` are copied (that list covers
//! every part of the model); other files of the source folder, such as the exporter's
//! `reference.json` outputs of the unpruned model, describe another model and are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use layerprune_runtime::{model_id, BlockRef, Manifest, MANIFEST_FILE};

/// Every `weights/<name>.bin` path mentioned in `bytes`.
pub fn referenced_weight_files(bytes: &[u8]) -> BTreeSet<String> {
    const PREFIX: &[u8] = b"weights/";
    let mut found = BTreeSet::new();
    let mut start = 0;
    while let Some(offset) = bytes[start..]
        .windows(PREFIX.len())
        .position(|window| window == PREFIX)
    {
        let name_start = start + offset + PREFIX.len();
        let name_len = bytes[name_start..]
            .iter()
            .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            .count();
        let run = &bytes[name_start..name_start + name_len];
        // The path is a protobuf string, so the next field's tag byte may follow it directly
        // (often a letter): the name ends at the first ".bin".
        if let Some(end) = run.windows(4).position(|w| w == b".bin").filter(|&e| e > 0) {
            found.insert(format!(
                "weights/{}",
                String::from_utf8_lossy(&run[..end + 4])
            ));
        }
        start = name_start + name_len;
    }
    found
}

/// What a pruned folder will hold: the new manifest and the files to copy.
pub struct PrunedLayout {
    pub manifest: Manifest,
    /// Relative paths copied from the source folder.
    pub files: Vec<String>,
    /// Relative paths of the source folder left out.
    pub dropped: Vec<String>,
}

/// Plans the pruned folder of the model in `source` with `removed` blocks (indices in the
/// source model) deleted.
pub fn pruned_layout(source: &Path, removed: &[usize], method: &str) -> Result<PrunedLayout> {
    let manifest = Manifest::load(source)?;
    let num_blocks = manifest.num_blocks;
    if let Some(&block) = removed.iter().find(|&&b| b >= num_blocks) {
        bail!(
            "block {block} is out of range for {} ({num_blocks} blocks)",
            source.display()
        );
    }
    if removed.len() >= num_blocks {
        bail!(
            "removing {} of the {num_blocks} blocks of {} leaves no block",
            removed.len(),
            source.display()
        );
    }
    let removed_graphs: BTreeSet<&str> = removed
        .iter()
        .map(|&b| manifest.blocks[b].file.as_str())
        .collect();
    let mut kept_references = BTreeSet::new();
    let mut removed_references = BTreeSet::new();
    for graph in manifest.graph_files() {
        let path = source.join(graph);
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let references = referenced_weight_files(&bytes);
        if removed_graphs.contains(graph) {
            removed_references.extend(references);
        } else {
            kept_references.extend(references);
        }
    }
    let mut dropped: BTreeSet<String> = removed_graphs.iter().map(|g| g.to_string()).collect();
    dropped.extend(removed_references.difference(&kept_references).cloned());
    for weight in &kept_references {
        if !manifest.files.contains_key(weight) {
            bail!(
                "{}: a kept graph uses {weight}, which the manifest's `files` does not list",
                source.join(MANIFEST_FILE).display()
            );
        }
    }

    let mut new_manifest = manifest.clone();
    new_manifest.blocks = manifest
        .blocks
        .iter()
        .enumerate()
        .filter(|(position, _)| !removed.contains(position))
        .enumerate()
        .map(|(index, (_, block))| BlockRef {
            index,
            original_index: block.original_index,
            file: block.file.clone(),
        })
        .collect();
    new_manifest.num_blocks = new_manifest.blocks.len();
    new_manifest.files = manifest
        .files
        .iter()
        .filter(|(path, _)| !dropped.contains(*path))
        .map(|(path, hash)| (path.clone(), hash.clone()))
        .collect::<BTreeMap<_, _>>();
    let mut removed_sorted = removed.to_vec();
    removed_sorted.sort_unstable();
    let removed_original: Vec<usize> = removed_sorted
        .iter()
        .map(|&b| manifest.blocks[b].original_index)
        .collect();
    new_manifest.extra.insert(
        "pruned_from".to_string(),
        serde_json::json!({
            "model_id": model_id(source)?,
            "num_blocks": num_blocks,
            "removed_blocks": removed_sorted,
            "removed_original_indices": removed_original,
            "method": method,
        }),
    );
    Ok(PrunedLayout {
        files: new_manifest.files.keys().cloned().collect(),
        dropped: dropped.into_iter().collect(),
        manifest: new_manifest,
    })
}

/// A hard link when source and destination share a file system, else a copy.
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

fn fill_folder(source: &Path, folder: &Path, layout: &PrunedLayout) -> Result<()> {
    for relative in &layout.files {
        let from = source.join(relative);
        let to = folder.join(relative);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        link_or_copy(&from, &to)?;
    }
    let text = serde_json::to_vec_pretty(&layout.manifest).context("encoding the manifest")?;
    let manifest_path = folder.join(MANIFEST_FILE);
    fs::write(&manifest_path, text)
        .with_context(|| format!("writing {}", manifest_path.display()))?;
    Ok(())
}

/// A sibling of `dest` named after it, hidden and unique to this process.
fn sibling(dest: &Path, tag: &str) -> Result<PathBuf> {
    let name = dest
        .file_name()
        .with_context(|| format!("{} has no folder name", dest.display()))?;
    Ok(dest.with_file_name(format!(
        ".{}.{tag}-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Writes the pruned folder to a temporary folder beside `dest`, then renames it into place,
/// so `dest` is either absent, the old folder, or complete. An existing `dest` is refused
/// unless `overwrite`.
pub fn write_pruned_model(
    source: &Path,
    dest: &Path,
    layout: &PrunedLayout,
    overwrite: bool,
) -> Result<()> {
    if dest.exists() && !overwrite {
        bail!(
            "{} already exists; pass --overwrite to replace it",
            dest.display()
        );
    }
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let temp = sibling(dest, "tmp")?;
    if temp.exists() {
        fs::remove_dir_all(&temp).with_context(|| format!("removing {}", temp.display()))?;
    }
    fs::create_dir(&temp).with_context(|| format!("creating {}", temp.display()))?;
    let result = fill_folder(source, &temp, layout).and_then(|()| {
        if dest.exists() {
            let old = sibling(dest, "old")?;
            fs::rename(dest, &old)
                .with_context(|| format!("moving the old {} aside", dest.display()))?;
            fs::rename(&temp, dest)
                .with_context(|| format!("renaming {} to {}", temp.display(), dest.display()))?;
            // The new folder is in place; failing to delete the old one loses nothing.
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&temp, dest)
                .with_context(|| format!("renaming {} to {}", temp.display(), dest.display()))?;
        }
        Ok(())
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_references_are_found_in_graph_bytes() {
        let bytes = b"\x08\x01location\x12\x12weights/ab12cd.binj\x0b\noffset junk weights/ \
                      weights/ef_34.bin\"weights/x.onnx weights/.bin";
        let found = referenced_weight_files(bytes);
        let expected: BTreeSet<String> = ["weights/ab12cd.bin", "weights/ef_34.bin"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(found, expected);
    }
}
