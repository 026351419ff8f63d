//! Layered model folders (docs/model-format.md): the folder `tools/export` writes, one ONNX
//! graph per residual block plus the embedding and head, content-addressed weight files, and a
//! `manifest.json` that lists them all with their sha256.
//!
//! Every crate that reads or writes such a folder goes through this one: the runtime loads its
//! [`Manifest`] (and re-exports it), `sample-masks` reads the number of blocks, `apply-prune`
//! writes a pruned folder ([`pruned_layout`], [`write_pruned_model`]) and `quantize` a quantized
//! one. What lives here:
//!
//! - [`Manifest`] and its parts, [`model_id`] (the sha256 of the manifest), [`sha256_file`],
//!   and [`is_layered_folder`] (a folder with a `manifest.json` in any form);
//! - [`external_data_locations`]: which weight files a graph uses, read from its protobuf;
//! - [`write_folder`]: the one folder writer, which builds the new folder beside the
//!   destination and renames it into place, so a destination is absent, the old folder, or
//!   complete; files in it are written with `layerprune_core::atomic_write` (mode 0644).
//!   [`write_folder_from`] is the same for a folder made from a source folder: it refuses a
//!   destination that is, is inside, or contains the source ([`refuse_overlap`]), and takes
//!   the source's unchanged files as copies unless hard links are asked for ([`SourceFiles`]:
//!   `onnx.load` refuses a weight file with several links);
//! - [`confined`]: the one way a path read from a model folder (a `files` entry, a graph or
//!   tokenizer name, a graph's external-data location via [`confined_reference`]) is joined to
//!   the folder: relative, no `..`, no symlink leading out, or refused naming the entry.
//!
//! The crate sits low in the dependency graph (core, serde, sha2, onnx-protobuf): no ONNX
//! Runtime, no Parquet.

mod confine;
mod error;
mod external;
mod folder;
mod manifest;
mod prune;

pub use confine::{confined, confined_reference, refuse_overlap, same_file};
pub use error::ModelError;
pub use external::{external_data_locations, external_location, graph_external_data, read_graph};
pub use folder::{
    refuse_foreign_folder, set_folder_aside, take_source_file, write_file, write_folder,
    write_folder_from, write_folder_from_in_place_of, FolderAside, SourceFiles,
};
pub use manifest::{
    is_layered_folder, model_id, read_num_blocks, sha256_file, BlockRef, GraphBytes, GraphRef,
    Manifest, DTYPES, FORMAT, FORMAT_VERSION, MANIFEST_FILE, MAX_BLOCKS, MAX_MANIFEST_BYTES,
    MAX_TENSOR_ELEMENTS,
};
pub use prune::{
    prune_folder, pruned_layout, write_pruned_model, PrunedLayout, INT4_OPERATOR, INT8_OPERATOR,
};
