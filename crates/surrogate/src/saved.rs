//! A fitted surrogate on disk: one JSON object naming its format, kind, number of players and
//! the game value it predicts (with the value's sign and units spelled out), followed by the
//! model's parameters.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use layerprune_core::GameValue;
use serde::{Deserialize, Serialize};

use crate::{FittedSurrogate, Surrogate, SurrogateError, SurrogateKind};

/// The `format` field of every surrogate file.
pub const FORMAT_NAME: &str = "layerprune-surrogate";
/// The layout version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// A fitted surrogate with what it predicts: written as it is (`FileOut`), read field by
/// field (`FileIn`).
#[derive(Clone, Debug, Serialize)]
pub struct SavedSurrogate {
    /// Short name of the predicted game value (`fit-surrogate --value`), e.g. "utility" or
    /// "nll-increase". Read from `target` in files written before 2026-12-04.
    pub value: String,
    /// What the predicted value means, with its sign (higher must be better, as for every
    /// game) and units, e.g. "−(NLL(mask) − NLL(full model)), nats per token; 0 = no loss".
    pub value_description: String,
    /// Evaluated masks (LLM evaluations) the surrogate was fitted on: the cost of every
    /// estimate or plan read off it. 0 when unknown (files written before it was recorded).
    pub fitted_on_evaluations: u64,
    /// Blocks that were not players of the game the evaluations came from (always kept);
    /// empty in files written before it was recorded.
    pub fixed_blocks: Vec<usize>,
    /// The model and token table the evaluations were measured with (the evaluation table's
    /// ids); empty when unknown, so a surrogate is not used with another model's files.
    pub model_id: String,
    pub dataset_id: String,
    /// The files the surrogate was fitted from, role -> id, as a table's `layerprune.inputs`
    /// (`fit-surrogate` writes the same object into its metrics table): `evaluations`, the
    /// sha256 of the evaluation table's bytes, so that two fits on different mask tables of
    /// one model and token table are told apart; and the `model` and `dataset` ids. Empty in
    /// files written before it was recorded (2026-12-07), which are read.
    pub inputs: BTreeMap<String, String>,
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

/// What is read of a file that does not read as a [`FileIn`], so that one that is not a
/// surrogate file (or of another version) is named as such rather than as a damaged one. The
/// other fields are skipped unparsed.
#[derive(Deserialize)]
struct Header {
    format: Option<serde_json::Value>,
    format_version: Option<serde_json::Value>,
}

impl Header {
    /// Refuses another format or version, naming the file.
    fn check(&self, path: &Path) -> Result<(), SurrogateError> {
        match self.format.as_ref().and_then(serde_json::Value::as_str) {
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
        match self.format_version.as_ref().and_then(serde_json::Value::as_u64) {
            Some(version) if version == u64::from(FORMAT_VERSION) => Ok(()),
            Some(version) => Err(file_error(
                path,
                format!("surrogate format version {version} is not supported (this build reads version {FORMAT_VERSION})"),
            )),
            None => Err(file_error(path, "surrogate file has no format_version")),
        }
    }
}

/// The file's fields, read into their own types: a forest's parameters are hundreds of
/// megabytes, and a JSON tree of them took ten times the file's size in memory (a 118 MB
/// file, 1.26 GB; 2026-12-05). `parameters` stays text until `kind` says what it is (a
/// `match` on [`SurrogateKind`], so a new kind cannot be forgotten here).
#[derive(Deserialize)]
struct FileIn<'a> {
    #[serde(flatten)]
    header: Header,
    num_players: usize,
    value: Option<String>,
    value_description: Option<String>,
    /// `value` and `value_description` in files written before 2026-12-04; a file with both
    /// names (no build wrote one) is read by the current name.
    target: Option<String>,
    target_description: Option<String>,
    #[serde(default)]
    fitted_on_evaluations: u64,
    #[serde(default)]
    fixed_blocks: Vec<usize>,
    #[serde(default)]
    model_id: String,
    #[serde(default)]
    dataset_id: String,
    #[serde(default)]
    inputs: BTreeMap<String, String>,
    kind: String,
    #[serde(borrow)]
    parameters: &'a serde_json::value::RawValue,
}

impl FileIn<'_> {
    /// The surrogate of `kind`, its parameters decoded straight into their type.
    fn surrogate(&self) -> Result<FittedSurrogate, String> {
        let kind: SurrogateKind = self.kind.parse()?;
        let parameters = self.parameters.get();
        let problem = |e: serde_json::Error| format!("the {kind} surrogate's parameters: {e}");
        Ok(match kind {
            SurrogateKind::PublishedMlp => {
                FittedSurrogate::Mlp(serde_json::from_str(parameters).map_err(problem)?)
            }
            SurrogateKind::Quadratic => {
                FittedSurrogate::Quadratic(serde_json::from_str(parameters).map_err(problem)?)
            }
            SurrogateKind::Forest => {
                crate::forest::check_tree_links(parameters)?;
                FittedSurrogate::Forest(serde_json::from_str(parameters).map_err(problem)?)
            }
        })
    }
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
            inputs: BTreeMap::new(),
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

    /// Records the files the surrogate was fitted from, role -> id ([`SavedSurrogate::inputs`]).
    pub fn with_inputs(mut self, inputs: BTreeMap<String, String>) -> Self {
        self.inputs = inputs;
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
        self.stage(path)?
            .commit()
            .map_err(|e| file_error(path, e.message()))
    }

    /// [`SavedSurrogate::save`] up to the rename: the file written and flushed under the
    /// temporary name its save gives it ([`layerprune_core::atomic_write_staged`]), for
    /// `fit-surrogate` to rename together with its metrics.
    pub fn stage(&self, path: &Path) -> Result<layerprune_core::StagedFile, SurrogateError> {
        // A model that `load` would refuse (non-finite weights are even written as `null`) is
        // not written; `fit` returns none, but a surrogate may be built by hand.
        self.surrogate
            .validate()
            .map_err(|problem| file_error(path, format!("cannot save the surrogate: {problem}")))?;
        let file = FileOut {
            format: FORMAT_NAME,
            format_version: FORMAT_VERSION,
            num_players: self.surrogate.num_players(),
            saved: self,
        };
        let text = serde_json::to_vec(&file)
            .map_err(|e| file_error(path, format!("cannot encode the surrogate: {e}")))?;
        let ((), staged) = layerprune_core::atomic_write_staged(path, |file| {
            file.write_all(&text)?;
            Ok(())
        })
        .map_err(|e| file_error(path, e.message()))?;
        Ok(staged)
    }

    /// Reads a file written by [`SavedSurrogate::save`], checking its format, version and the
    /// consistency of the parameters; every error names the file.
    pub fn load(path: &Path) -> Result<Self, SurrogateError> {
        Self::load_hashed(path).map(|(saved, _)| saved)
    }

    /// [`SavedSurrogate::load`], with the SHA-256 (hex) of the bytes parsed: what a stage
    /// records of the file in its provenance, with no second read that could see another file
    /// renamed onto the path in between.
    pub fn load_hashed(path: &Path) -> Result<(Self, String), SurrogateError> {
        let bytes = layerprune_core::read_input(path)
            .map_err(|e| file_error(path, format!("cannot read: {e}")))?;
        let saved = Self::parse(path, &bytes)?;
        Ok((saved, layerprune_core::sha256_hex(&bytes)))
    }

    /// The surrogate of `bytes`, read from `path` (which errors name).
    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, SurrogateError> {
        let damaged =
            |problem: String| file_error(path, format!("damaged surrogate file: {problem}"));
        // One pass over the file; the header alone is read only to say why it did not read.
        let file: FileIn = match serde_json::from_slice(bytes) {
            Ok(file) => file,
            Err(error) => {
                let header: Header = serde_json::from_slice(bytes).map_err(|e| {
                    let problem = match e.classify() {
                        serde_json::error::Category::Data => {
                            format!("no \"format\": {FORMAT_NAME:?} field")
                        }
                        _ => format!("not valid JSON: {e}"),
                    };
                    file_error(path, format!("not a surrogate file ({problem})"))
                })?;
                header.check(path)?;
                return Err(damaged(error.to_string()));
            }
        };
        file.header.check(path)?;
        let surrogate = file.surrogate().map_err(damaged)?;
        let FileIn {
            num_players,
            value,
            value_description,
            target,
            target_description,
            fitted_on_evaluations,
            fixed_blocks,
            model_id,
            dataset_id,
            inputs,
            ..
        } = file;
        let saved = SavedSurrogate {
            value: value
                .or(target)
                .ok_or_else(|| damaged("missing field `value`".into()))?,
            value_description: value_description
                .or(target_description)
                .ok_or_else(|| damaged("missing field `value_description`".into()))?,
            fitted_on_evaluations,
            fixed_blocks,
            model_id,
            dataset_id,
            inputs,
            surrogate,
        };
        if saved.surrogate.num_players() != num_players {
            return Err(file_error(
                path,
                format!(
                    "damaged surrogate file: num_players is {} but the {} model has {}",
                    num_players,
                    saved.kind(),
                    saved.surrogate.num_players()
                ),
            ));
        }
        saved
            .surrogate
            .validate()
            .map_err(|problem| file_error(path, format!("damaged surrogate file: {problem}")))?;
        if let Some(block) = saved.fixed_blocks.iter().find(|&&b| b >= num_players) {
            return Err(file_error(
                path,
                format!(
                    "damaged surrogate file: fixed block {block} is out of range for \
                     {num_players} blocks"
                ),
            ));
        }
        saved
            .game_value()
            .map_err(|problem| file_error(path, format!("damaged surrogate file: {problem}")))?;
        Ok(saved)
    }
}
