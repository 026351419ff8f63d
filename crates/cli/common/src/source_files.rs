//! `--hard-link-source-files`, the one flag of the stages that write a model folder from
//! another (`apply-prune --pruned-out`, `quantize --out`): how the new folder gets the files it
//! takes unchanged ([`SourceFiles`]).

use layerprune_model::SourceFiles;

/// `--hard-link-source-files`, flattened into `apply-prune` and `quantize`. Each stage says
/// when the flag applies (`apply-prune`: with `--pruned-out`, which clap requires; `quantize`:
/// for a layered model folder, refused for one .onnx file).
#[derive(clap::Args, Clone, Debug)]
pub struct SourceFilesArgs {
    /// Hard-link the files the new model folder takes unchanged from --model instead of
    /// copying them: apply-prune's --pruned-out, its weight files (nearly all the disk);
    /// quantize's --out of a layered folder, the float weights of what stays float (the
    /// embedding's, the head's with --exclude-head). Saves that disk where both folders share a
    /// file system, but the onnx Python package then refuses to `onnx.load` the graphs that
    /// read them, in both folders (a weight file with several links; ONNX Runtime and the
    /// stages read them as before), and a file rewritten in place changes in both. Copies (the
    /// default) share their blocks copy-on-write on btrfs, or XFS with reflinks; elsewhere
    /// they take that disk again.
    #[arg(long)]
    pub hard_link_source_files: bool,
}

impl SourceFilesArgs {
    /// The flag's id in clap (what a stage's `requires` names).
    pub const ID: &'static str = "hard_link_source_files";

    /// Hard links if the flag was given, else copies.
    pub fn source_files(&self) -> SourceFiles {
        SourceFiles::hard_links_if(self.hard_link_source_files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Stage {
        #[command(flatten)]
        source_files: SourceFilesArgs,
    }

    #[test]
    fn the_flag_asks_for_hard_links_and_copies_are_the_default() {
        let parse = |args: &[&str]| Stage::parse_from(args).source_files.source_files();
        assert_eq!(parse(&["stage"]), SourceFiles::Copy);
        assert_eq!(
            parse(&["stage", "--hard-link-source-files"]),
            SourceFiles::HardLink
        );
        let id = Stage::command()
            .get_arguments()
            .find(|arg| arg.get_long() == Some("hard-link-source-files"))
            .map(|arg| arg.get_id().to_string());
        assert_eq!(id.as_deref(), Some(SourceFilesArgs::ID));
    }
}
