//! Which masks to send to the (expensive) LLM evaluator.
//!
//! The published method draws masks stratum by stratum, a stratum being the number of removed
//! blocks, with the removed set uniform at random inside a stratum; the estimators beyond the
//! paper need designed masks instead: complement pairs (paired KernelSHAP), antithetic
//! permutation chains (permutation sampling), anchors (the full model and every single-block
//! removal) and, for small games, every mask. This crate produces all of them as pure,
//! seeded functions over [`layerprune_core::Mask`]; it does no I/O (the `sample-masks` stage
//! writes the rows to a mask table).
//!
//! Some blocks may be fixed as always kept; the game is then played over the remaining blocks,
//! the [`Players`], and strata count removed players. Every mask produced has one entry per
//! block of the model, with the fixed blocks kept.
//!
//! The same arguments and seed give the same masks in the same order: every design draws from
//! its own ChaCha8 stream of the seed (one stream per stratum, one for the chains), so adding
//! anchors or another stratum does not change the masks drawn for an unchanged stratum. Chains
//! appended to a table take a stream keyed by the table's largest group id, so appending with
//! the seed of the first run draws new orders rather than copies of its chains.
//!
//! [`table`] is the `sample-masks` run over files: the Neyman pilot, the mask table appended
//! to, the draw and the mask table to write.

mod allocation;
mod designs;
mod error;
mod plan;
mod strata;
pub mod table;

pub use allocation::{allocate, binomial, pilot_from_values, Allocation, PilotStratum};
pub use designs::{
    anchors, complement_pairs, enumerate_all, permutation_chains, Design, SampledMask,
    MAX_ENUMERATED_PLAYERS,
};
pub use error::SamplingError;
pub use layerprune_core::Players;
pub use plan::{sample, Existing, SampleOutcome, SamplingPlan, StratifiedDesign, StratumSummary};
pub use strata::{
    given_strata, parse_stratum, ratio_spread, resolve_strata, StrataSpec, PUBLISHED_STRATA_OF_32,
};
