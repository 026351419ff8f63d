//! Who wrote a table, how, and from what.

use std::collections::BTreeMap;

/// Where a table came from: the tool and its version, the command line, the random seed (if
/// the tool is random) and the ids of the inputs it read, by role (e.g. `"model"` -> model id,
/// `"dataset"` -> dataset id, `"masks"` -> ...). Stored in every table's file metadata.
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
}
