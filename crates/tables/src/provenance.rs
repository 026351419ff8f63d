//! Who wrote a table, how, and from what.

use std::collections::BTreeMap;

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

    /// The `i`th shard a merged table was joined from (`evaluate --merge`).
    pub fn merged_shard(i: usize) -> String {
        format!("shard{i}")
    }
}
