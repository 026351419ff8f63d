//! Who wrote a table, how, and from what.

use std::collections::{BTreeMap, BTreeSet};

/// Where a table came from: the tool and its version, the command line, the random seed (if
/// the tool is random) and the ids of the inputs it read, by role (e.g. `"model"` -> model id,
/// `"dataset"` -> dataset id; the roles are [`input_role`]). Stored in every table's file
/// metadata.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Provenance {
    pub tool: String,
    pub version: String,
    pub args: Vec<String>,
    pub seed: Option<u64>,
    pub inputs: BTreeMap<String, String>,
}

impl Provenance {
    pub fn new(tool: &str, version: &str, args: Vec<String>) -> Self {
        Provenance {
            tool: tool.to_string(),
            version: version.to_string(),
            args,
            seed: None,
            inputs: BTreeMap::new(),
        }
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Records that the input playing `role` has id `id`.
    pub fn with_input(mut self, role: &str, id: &str) -> Self {
        self.inputs.insert(role.to_string(), id.to_string());
        self
    }

    /// Records the game a table was measured on: the model and the token table.
    pub fn with_game(self, model_id: &str, dataset_id: &str) -> Self {
        self.with_input(input_role::MODEL, model_id)
            .with_input(input_role::DATASET, dataset_id)
    }
}

/// The roles of a provenance's inputs, one name each: every stage that records one and every
/// check that reads one back (a plan's model, a shard's place) spells it from here.
pub mod input_role {
    /// The model's id (its manifest's hash).
    pub const MODEL: &str = "model";
    /// The token table's id.
    pub const DATASET: &str = "dataset";
    /// The tokenizer's sha256 (`prepare-tokens`).
    pub const TOKENIZER: &str = "tokenizer";
    /// An evaluation table written by `evaluate --shard I/N`: `I/N`, so that only that shard
    /// resumes it, and a stage reading it knows it holds part of the masks.
    pub const SHARD: &str = "shard";
    /// The pilot evaluation table a Neyman allocation was computed from (`sample-masks`).
    pub const PILOT: &str = "pilot";
    /// The mask table `sample-masks --append` added to.
    pub const APPENDED: &str = "appended";
    /// A plan table's: the dataset id(s) of the token tables the choice of its plans read,
    /// what their selection depended on (the tokens a method measured masks on while choosing,
    /// the score table's, surrogate's or block statistics' dataset; `from-plan` keeps the
    /// earlier table's). Not [`DATASET`], which is where the plans were *measured*: a plan
    /// chosen on calibration text and measured on held-out text records both, and a reader
    /// checks from the file that the choice never saw the measurement's text. Several
    /// distinct ids are written by [`super::join_dataset_ids`] and read back as a set by
    /// [`super::parse_dataset_ids`]; absent where no dataset is known.
    pub const CHOSEN_ON: &str = "chosen_on";

    /// The `i`th shard a merged table was joined from (`evaluate --merge`).
    pub fn merged_shard(i: usize) -> String {
        format!("shard{i}")
    }
}

/// The provenance value of a set of dataset ids (an input role naming several token tables,
/// e.g. [`input_role::CHOSEN_ON`]): the distinct ids, empty ones (a file that records no dataset)
/// left out, ascending and joined by `,`; `None` when none is left. Dataset ids are hex digests
/// (`dataset_id`), so no id holds the separator. Read back with [`parse_dataset_ids`].
pub fn join_dataset_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let ids: BTreeSet<&str> = ids.into_iter().filter(|id| !id.is_empty()).collect();
    (!ids.is_empty()).then(|| ids.into_iter().collect::<Vec<_>>().join(","))
}

/// The dataset ids a value written by [`join_dataset_ids`] names, as a set (one id reads as a
/// set of one; an empty value as none).
pub fn parse_dataset_ids(value: &str) -> BTreeSet<String> {
    value
        .split(',')
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    #[test]
    fn dataset_ids_are_joined_ascending_once_each_and_read_back_as_a_set() {
        assert_eq!(join_dataset_ids(["ab12"]).as_deref(), Some("ab12"));
        // Distinct, ascending, whatever the order and repeats they came in; empty ids (a
        // file that records no dataset) left out.
        assert_eq!(
            join_dataset_ids(["ff", "", "0a", "ff", "3c"]).as_deref(),
            Some("0a,3c,ff")
        );
        assert_eq!(join_dataset_ids([]), None);
        assert_eq!(join_dataset_ids(["", ""]), None);

        assert_eq!(parse_dataset_ids("ab12"), set(&["ab12"]));
        assert_eq!(parse_dataset_ids("ff,0a,3c"), set(&["0a", "3c", "ff"]));
        assert!(parse_dataset_ids("").is_empty());
        for ids in [&["e3"][..], &["e3", "0b"], &["9", "10", "9"]] {
            let joined = join_dataset_ids(ids.iter().copied()).unwrap();
            assert_eq!(parse_dataset_ids(&joined), set(ids));
            // Written once: the same set always gives the same value.
            let again: Vec<&str> = ids.iter().rev().copied().collect();
            assert_eq!(join_dataset_ids(again), Some(joined));
        }
    }
}
