//! A random-forest surrogate (smartcore's `RandomForestRegressor`), for games whose value is
//! not smooth in the mask. Seeded: the same data and seed give the same forest.

use std::sync::Arc;

use layerprune_core::{contain_panic, Mask};
use serde::{Deserialize, Serialize};
use smartcore::ensemble::random_forest_regressor::{
    RandomForestRegressor, RandomForestRegressorParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;

use crate::{FitOptions, Surrogate, SurrogateError};

type Forest = RandomForestRegressor<f64, f64, DenseMatrix<f64>, Vec<f64>>;

/// Masks valued per call into smartcore, so a batch of 80,000 masks never builds one huge
/// feature matrix.
const PREDICT_CHUNK: usize = 8192;

/// Least masks worth a thread of their own when predicting (a thread costs tens of
/// microseconds; a mask through 100 trees, a few).
const MASKS_PER_THREAD: usize = 256;

/// A fitted forest. Shared behind an `Arc` because smartcore's forest is not `Clone`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForestSurrogate {
    pub num_players: usize,
    forest: Arc<Forest>,
}

fn feature_matrix(masks: &[Mask], num_players: usize) -> Result<DenseMatrix<f64>, SurrogateError> {
    let values: Vec<f64> = masks.iter().flat_map(Mask::to_features).collect();
    DenseMatrix::new(masks.len(), num_players, values, false)
        .map_err(|failure| SurrogateError::Forest(failure.to_string()))
}

impl ForestSurrogate {
    pub(crate) fn fit(
        num_players: usize,
        masks: &[Mask],
        targets: &[f64],
        options: &FitOptions,
    ) -> Result<Self, SurrogateError> {
        let features_per_split = options
            .tree_features_per_split
            .unwrap_or(num_players.div_ceil(3))
            .clamp(1, num_players);
        let mut parameters = RandomForestRegressorParameters::default()
            .with_n_trees(options.trees)
            .with_min_samples_leaf(options.tree_min_samples_leaf)
            .with_m(features_per_split)
            .with_seed(options.seed);
        if let Some(depth) = options.tree_max_depth {
            parameters = parameters.with_max_depth(depth);
        }
        let x = feature_matrix(masks, num_players)?;
        let y = targets.to_vec();
        let forest = Forest::fit(&x, &y, parameters)
            .map_err(|failure| SurrogateError::Forest(failure.to_string()))?;
        Ok(ForestSurrogate {
            num_players,
            forest: Arc::new(forest),
        })
    }

    /// The masks are split over the process's thread budget (every core unless the stage's
    /// `--threads` set it; each thread a run of consecutive masks, joined in order, so the
    /// values do not depend on the number of threads): a forest walks a tree per mask and tree,
    /// and the published 80,000 base masks through a 100-tree forest took a minute on one
    /// core. Fewer than [`MASKS_PER_THREAD`] masks a thread stay on one.
    fn try_predict(&self, masks: &[Mask]) -> Result<Vec<f64>, SurrogateError> {
        let predict_run = |run: &[Mask]| -> Result<Vec<f64>, SurrogateError> {
            let mut values = Vec::with_capacity(run.len());
            for chunk in run.chunks(PREDICT_CHUNK) {
                let x = feature_matrix(chunk, self.num_players)?;
                let predicted = self
                    .forest
                    .predict(&x)
                    .map_err(|failure| SurrogateError::Forest(failure.to_string()))?;
                values.extend(predicted);
            }
            Ok(values)
        };
        let threads =
            layerprune_core::parallel::thread_budget().min(masks.len() / MASKS_PER_THREAD);
        if threads <= 1 {
            return predict_run(masks);
        }
        // A panic in a thread (a damaged file's forest, which `validate` catches) is raised
        // again on the calling thread, as before the predictions were split.
        let runs: Vec<&[Mask]> = masks.chunks(masks.len().div_ceil(threads)).collect();
        let parts =
            layerprune_core::parallel::map_in_order(&runs, threads, |_, run| predict_run(run));
        let mut values = Vec::with_capacity(masks.len());
        for part in parts {
            values.extend(part?);
        }
        Ok(values)
    }

    /// A loaded forest is only trusted once it has valued the full and the empty mask: a
    /// forest from a damaged file may index a block that does not exist, which smartcore
    /// answers with a panic, caught here.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.num_players == 0 {
            return Err("forest has no players".into());
        }
        let probes = [Mask::full(self.num_players), Mask::empty(self.num_players)];
        match contain_panic(|| self.try_predict(&probes)) {
            Ok(Ok(values)) if values.iter().all(|v| v.is_finite()) => Ok(()),
            Ok(Ok(_)) => Err("forest predicts non-finite values".into()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!(
                "forest does not fit masks of {} blocks (it splits on a block that does not exist)",
                self.num_players
            )),
        }
    }
}

/// Checks every node of a saved forest, in the file's JSON (`parameters` of a forest surrogate
/// file), before smartcore is given it: loading tries the forest on the full and the empty mask
/// only, and smartcore trusts its nodes on every other path.
///
/// - The links: smartcore predicts by walking from the root through the nodes' children until
///   a leaf, so a node that points at itself or at an ancestor would make every prediction loop
///   forever (the mutation fuzzer found one). smartcore appends a node's children after it, so
///   each child must be a later node of the same tree.
/// - A node with children has both (smartcore unwraps the second) and splits on a block of the
///   forest's (it indexes the mask's features by it): either damage, on a path the two probes
///   do not take, made the first mask that took it panic inside `shapley`.
/// - A leaf's value is finite and within twice ±[`MAX_TARGET_MAGNITUDE`](crate::MAX_TARGET_MAGNITUDE)
///   (a fit's leaves are means of its values, within that bound but for rounding): beyond, the
///   forest's average over its trees may overflow to inf for the masks that reach it.
///
/// Only these fields are read ([`Nodes`]), a few bytes a node.
pub(crate) fn check_tree_links(parameters: &str) -> Result<(), String> {
    let Ok(nodes) = serde_json::from_str::<Nodes>(parameters) else {
        // Missing or malformed: the typed decoding that follows reports it.
        return Ok(());
    };
    for (t, tree) in nodes.forest.forest_regressor.trees.iter().enumerate() {
        for (i, node) in tree.nodes.iter().enumerate() {
            let bad = |problem: String| Err(format!("tree {t}: node {i} {problem}"));
            for (link, child) in [
                ("true_child", node.true_child),
                ("false_child", node.false_child),
            ] {
                match child {
                    None => {}
                    Some(c) if c > i as u64 && c < tree.nodes.len() as u64 => {}
                    Some(c) => {
                        return Err(format!(
                            "tree {t}: node {i}'s {link} is {c}, not a later node of its tree \
                             (it has {} nodes)",
                            tree.nodes.len()
                        ))
                    }
                }
            }
            match (node.true_child, node.false_child) {
                (Some(_), Some(_)) => match (node.split_feature, nodes.num_players) {
                    (Some(block), Some(players)) if block >= players => {
                        return bad(format!(
                            "splits on block {block}, and the forest has {players} blocks"
                        ))
                    }
                    _ => {}
                },
                (None, None) => match node.output {
                    Some(value) if !(value.is_finite() && value.abs() <= LARGEST_LEAF) => {
                        return bad(format!(
                            "is a leaf valued {value:e}, beyond ±{LARGEST_LEAF:e}, which no fit \
                             gives"
                        ))
                    }
                    _ => {}
                },
                _ => return bad("has one child: a split needs both".into()),
            }
        }
    }
    Ok(())
}

/// Largest magnitude of a saved forest's leaf: a fit's leaves are means of values within
/// ±[`MAX_TARGET_MAGNITUDE`](crate::MAX_TARGET_MAGNITUDE), with room for their rounding.
const LARGEST_LEAF: f64 = 2.0 * crate::MAX_TARGET_MAGNITUDE;

/// What [`check_tree_links`] reads of a saved forest (smartcore's layout), every other field
/// skipped; a field missing here is left to the typed decoding to report.
#[derive(Deserialize)]
struct Nodes {
    #[serde(default)]
    num_players: Option<u64>,
    forest: NodesForest,
}

#[derive(Deserialize)]
struct NodesForest {
    forest_regressor: NodesRegressor,
}

#[derive(Deserialize)]
struct NodesRegressor {
    trees: Vec<NodesTree>,
}

#[derive(Deserialize)]
struct NodesTree {
    nodes: Vec<Node>,
}

#[derive(Deserialize)]
struct Node {
    #[serde(default)]
    output: Option<f64>,
    #[serde(default)]
    split_feature: Option<u64>,
    #[serde(default)]
    true_child: Option<u64>,
    #[serde(default)]
    false_child: Option<u64>,
}

impl Surrogate for ForestSurrogate {
    fn num_players(&self) -> usize {
        self.num_players
    }

    /// Panics only if the forest is inconsistent with `num_players`, which [`fit`](crate::fit)
    /// and loading (see `validate`) rule out.
    fn predict(&self, masks: &[Mask]) -> Vec<f64> {
        for mask in masks {
            assert_eq!(mask.num_blocks(), self.num_players, "mask length");
        }
        match self.try_predict(masks) {
            Ok(values) => values,
            Err(error) => panic!("a fitted, validated forest failed to predict: {error}"),
        }
    }
}
