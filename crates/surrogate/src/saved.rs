//! A fitted surrogate on disk: one JSON object naming its format, kind, number of players and
//! the game value it predicts (with the value's sign and units spelled out), followed by the
//! model's parameters.

use std::io::Write;
use std::path::Path;

use layerprune_core::GameValue;
use serde::{Deserialize, Serialize};

use crate::{FittedSurrogate, Surrogate, SurrogateError, SurrogateKind};

/// The `format` field of every surrogate file.
pub const FORMAT_NAME: &str = "layerprune-surrogate";
/// The layout version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Fields renamed within this format version, as (current name, former name): a file written
/// before the rename is read with the former field under the current name.
const RENAMED_FIELDS: [(&str, &str); 2] = [
    // 2026-12-04: one name, "value", for which function of the NLL values a mask.
    ("value", "target"),
    ("value_description", "target_description"),
];

/// A fitted surrogate with what it predicts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedSurrogate {
    /// Short name of the predicted game value (`fit-surrogate --value`), e.g. "utility" or
    /// "nll-increase". Read from `target` in files written before 2026-12-04
    /// ([`RENAMED_FIELDS`]).
    pub value: String,
    /// What the predicted value means, with its sign (higher must be better, as for every
    /// game) and units, e.g. "−(NLL(mask) − NLL(full model)), nats per token; 0 = no loss".
    pub value_description: String,
    /// Evaluated masks (LLM evaluations) the surrogate was fitted on: the cost of every
    /// estimate or plan read off it. 0 when unknown (files written before it was recorded).
    #[serde(default)]
    pub fitted_on_evaluations: u64,
    /// Blocks that were not players of the game the evaluations came from (always kept);
    /// empty in files written before it was recorded.
    #[serde(default)]
    pub fixed_blocks: Vec<usize>,
    /// The model and token table the evaluations were measured with (the evaluation table's
    /// ids); empty when unknown, so a surrogate is not used with another model's files.
    #[serde(default)]
    pub model_id: String,
    #[serde(default)]
    pub dataset_id: String,
    /// `kind` and `parameters`.
    #[serde(flatten)]
    pub surrogate: FittedSurrogate,
}

#[derive(Serialize)]
struct FileOut<'a> {
    format: &'static str,
    format_version: u32,
    num_players: usize,
    #[serde(flatten)]
    saved: &'a SavedSurrogate,
}

#[derive(Deserialize)]
struct FileIn {
    num_players: usize,
    #[serde(flatten)]
    saved: SavedSurrogate,
}

fn file_error(path: &Path, problem: impl Into<String>) -> SurrogateError {
    SurrogateError::File {
        path: path.display().to_string(),
        problem: problem.into(),
    }
}

impl SavedSurrogate {
    pub fn new(
        surrogate: FittedSurrogate,
        value: impl Into<String>,
        value_description: impl Into<String>,
    ) -> Self {
        SavedSurrogate {
            value: value.into(),
            value_description: value_description.into(),
            fitted_on_evaluations: 0,
            fixed_blocks: Vec::new(),
            model_id: String::new(),
            dataset_id: String::new(),
            surrogate,
        }
    }

    /// Records how many evaluated masks the surrogate was fitted on.
    pub fn with_fitted_on_evaluations(mut self, evaluations: u64) -> Self {
        self.fitted_on_evaluations = evaluations;
        self
    }

    /// Records the game the surrogate was fitted on: its fixed blocks, model and token table.
    pub fn with_game(mut self, fixed_blocks: &[usize], model_id: &str, dataset_id: &str) -> Self {
        self.fixed_blocks = fixed_blocks.to_vec();
        self.model_id = model_id.to_string();
        self.dataset_id = dataset_id.to_string();
        self
    }

    pub fn kind(&self) -> SurrogateKind {
        self.surrogate.kind()
    }

    /// The game value the surrogate predicts, by the name recorded in `value` (checked when the
    /// file is read).
    pub fn game_value(&self) -> Result<GameValue, String> {
        self.value
            .parse()
            .map_err(|e| format!("the value it predicts: {e}"))
    }

    /// Writes the file atomically (`layerprune_core::atomic_write`: a temporary file in the same
    /// folder, renamed into place; mode 0644).
    pub fn save(&self, path: &Path) -> Result<(), SurrogateError> {
        let file = FileOut {
            format: FORMAT_NAME,
            format_version: FORMAT_VERSION,
            num_players: self.surrogate.num_players(),
            saved: self,
        };
        let text = serde_json::to_vec(&file)
            .map_err(|e| file_error(path, format!("cannot encode the surrogate: {e}")))?;
        layerprune_core::atomic_write(path, |file| {
            file.write_all(&text)?;
            Ok(())
        })
        .map_err(|e| file_error(path, e.message()))?;
        Ok(())
    }

    /// Reads a file written by [`SavedSurrogate::save`], checking its format, version and the
    /// consistency of the parameters; every error names the file.
    pub fn load(path: &Path) -> Result<Self, SurrogateError> {
        let bytes = layerprune_core::read_input(path)
            .map_err(|e| file_error(path, format!("cannot read: {e}")))?;
        let mut value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| file_error(path, format!("not a surrogate file (not valid JSON: {e})")))?;
        match value.get("format").and_then(serde_json::Value::as_str) {
            Some(FORMAT_NAME) => {}
            Some(other) => {
                return Err(file_error(
                    path,
                    format!("not a surrogate file (format is {other:?}, expected {FORMAT_NAME:?})"),
                ))
            }
            None => {
                return Err(file_error(
                    path,
                    format!("not a surrogate file (no \"format\": {FORMAT_NAME:?} field)"),
                ))
            }
        }
        match value.get("format_version").and_then(serde_json::Value::as_u64) {
            Some(version) if version == u64::from(FORMAT_VERSION) => {}
            Some(version) => {
                return Err(file_error(
                    path,
                    format!("surrogate format version {version} is not supported (this build reads version {FORMAT_VERSION})"),
                ))
            }
            None => return Err(file_error(path, "surrogate file has no format_version")),
        }
        if value.get("kind").and_then(serde_json::Value::as_str) == Some("forest") {
            if let Some(parameters) = value.get("parameters") {
                crate::forest::check_tree_links(parameters).map_err(|problem| {
                    file_error(path, format!("damaged surrogate file: {problem}"))
                })?;
            }
        }
        if let Some(fields) = value.as_object_mut() {
            for (current, former) in RENAMED_FIELDS {
                // A file that has both (no build wrote one) is read by its current name.
                if let Some(old) = fields.remove(former) {
                    fields.entry(current).or_insert(old);
                }
            }
        }
        let file: FileIn = serde_json::from_value(value)
            .map_err(|e| file_error(path, format!("damaged surrogate file: {e}")))?;
        let saved = file.saved;
        if saved.surrogate.num_players() != file.num_players {
            return Err(file_error(
                path,
                format!(
                    "damaged surrogate file: num_players is {} but the {} model has {}",
                    file.num_players,
                    saved.kind(),
                    saved.surrogate.num_players()
                ),
            ));
        }
        saved
            .surrogate
            .validate()
            .map_err(|problem| file_error(path, format!("damaged surrogate file: {problem}")))?;
        saved
            .game_value()
            .map_err(|problem| file_error(path, format!("damaged surrogate file: {problem}")))?;
        Ok(saved)
    }
}
