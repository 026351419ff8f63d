//! The one registry of estimators a user can name: each estimator's name is the one written in
//! score tables (`--estimator` takes exactly that name; the old command-line spellings are
//! accepted as aliases), what it needs, and one function that runs it on what the pipeline
//! has: a recorded evaluation table (a [`RecordedGame`] over the blocks, answered from the
//! table), the design that drew its masks (permutation chains, complement pairs), and/or a
//! fitted surrogate (a [`Game`] that is free to query).
//!
//! The same estimators also run on a live game, spending a budget of evaluations as they
//! sample ([`Estimator::BUDGETED`], [`crate::run_estimator`]): the replay benchmark and the
//! tests use that entry point.

use std::fmt;
use std::str::FromStr;

use layerprune_core::{Game, Mask, PlayerGame, Players, RecordedGame};
use layerprune_sampling::Design;
use layerprune_surrogate::{Surrogate, SurrogateGame};

use crate::banzhaf::{
    banzhaf_msr_estimate, uniformity_problem, NonuniformMasks, UniformDesign, BANZHAF_MSR,
};
use crate::exact::{exact_values, EXACT_SHAPLEY};
use crate::kernelshap::{
    complement_pairs_command, kernelshap_estimate, kernelshap_standard_errors, PairedDesign,
    PairedStandardErrors, KERNELSHAP, MINIMUM_PAIRS_PER_PLAYER, WELL_MEASURED_PAIRS_PER_PLAYER,
};
use crate::permutation::{permutation_estimate, PermutationDesign, PERMUTATION};
use crate::regression::{
    regression_adjusted_chains_estimate, regression_adjusted_kernel_estimate, SurrogateTarget,
    REGRESSION_ADJUSTED, REGRESSION_ADJUSTED_LOG, REGRESSION_ADJUSTED_LOG_CHAINS,
};
use crate::semivalue::{
    published_strata, semivalue_through, MaskDistribution, BANZHAF_MARGINAL, STRATIFIED_SEMIVALUE,
};
use crate::stratified::{
    regression_adjusted_stratified_estimate, stratified_estimate, REGRESSION_ADJUSTED_STRATIFIED,
    STRATIFIED_SHAPLEY,
};
use crate::surrogate::{surrogate_shapley, SURROGATE_SHAPLEY};
use crate::{Estimates, ShapleyError};

/// Every estimator the `shapley` stage runs, named as its rows are in a score table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Estimator {
    /// The published stratified semivalue through the surrogate (not the Shapley value).
    StratifiedSemivalue,
    /// The marginal-based Banzhaf value through the surrogate.
    BanzhafMarginal,
    /// The surrogate's own Shapley value (closed form for a quadratic, else sampled).
    SurrogateShapley,
    /// Antithetic permutation sampling over the recorded chains.
    Permutation,
    /// Paired KernelSHAP over the recorded complement pairs.
    KernelShap,
    /// Regression adjustment with a quadratic surrogate over complement pairs.
    RegressionAdjusted,
    /// Regression adjustment with an exp-polynomial surrogate over complement pairs.
    RegressionAdjustedExp,
    /// Regression adjustment with an exp-polynomial surrogate over permutation chains.
    RegressionAdjustedExpChains,
    /// Stratum means by coalition size (needs masks of every size).
    Stratified,
    /// Stratum means completed by a cross-fitted exp-polynomial surrogate.
    RegressionAdjustedStratified,
    /// Exact Shapley (and Banzhaf) values from a table holding every mask over the players.
    Exact,
    /// The Banzhaf value by maximum sample reuse over every recorded coalition: unbiased when
    /// the masks are uniform over the coalitions (every stratum, proportional allocation); a
    /// table of another design is refused ([`uniformity_problem`]) unless
    /// [`EstimatorOptions::nonuniform_masks`] allows it.
    BanzhafMsr,
}

/// What an estimator reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    Surrogate,
    /// The evaluation table and the mask table's permutation chains.
    Chains,
    /// The evaluation table and the mask table's complement pairs.
    Pairs,
    /// The evaluation table only.
    Evaluations,
}

impl Estimator {
    pub const ALL: [Estimator; 12] = [
        Estimator::StratifiedSemivalue,
        Estimator::BanzhafMarginal,
        Estimator::SurrogateShapley,
        Estimator::Permutation,
        Estimator::KernelShap,
        Estimator::RegressionAdjusted,
        Estimator::RegressionAdjustedExp,
        Estimator::RegressionAdjustedExpChains,
        Estimator::Stratified,
        Estimator::RegressionAdjustedStratified,
        Estimator::Exact,
        Estimator::BanzhafMsr,
    ];

    /// The name on the command line and in the score table's `estimator` column.
    pub fn name(self) -> &'static str {
        match self {
            Estimator::StratifiedSemivalue => STRATIFIED_SEMIVALUE,
            Estimator::BanzhafMarginal => BANZHAF_MARGINAL,
            Estimator::SurrogateShapley => SURROGATE_SHAPLEY,
            Estimator::Permutation => PERMUTATION,
            Estimator::KernelShap => KERNELSHAP,
            Estimator::RegressionAdjusted => REGRESSION_ADJUSTED,
            Estimator::RegressionAdjustedExp => REGRESSION_ADJUSTED_LOG,
            Estimator::RegressionAdjustedExpChains => REGRESSION_ADJUSTED_LOG_CHAINS,
            Estimator::Stratified => STRATIFIED_SHAPLEY,
            Estimator::RegressionAdjustedStratified => REGRESSION_ADJUSTED_STRATIFIED,
            Estimator::Exact => EXACT_SHAPLEY,
            Estimator::BanzhafMsr => BANZHAF_MSR,
        }
    }

    /// Spellings of earlier versions, still accepted.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Estimator::StratifiedSemivalue => &["semivalue"],
            Estimator::BanzhafMarginal => &["banzhaf"],
            Estimator::SurrogateShapley => &["shapley-surrogate"],
            Estimator::Permutation => &["permutation"],
            Estimator::KernelShap => &["kernelshap"],
            Estimator::Stratified => &["stratified"],
            Estimator::Exact => &["exact"],
            _ => &[],
        }
    }

    pub fn needs(self) -> Needs {
        match self {
            Estimator::StratifiedSemivalue
            | Estimator::BanzhafMarginal
            | Estimator::SurrogateShapley => Needs::Surrogate,
            Estimator::Permutation | Estimator::RegressionAdjustedExpChains => Needs::Chains,
            Estimator::KernelShap
            | Estimator::RegressionAdjusted
            | Estimator::RegressionAdjustedExp => Needs::Pairs,
            Estimator::Stratified
            | Estimator::RegressionAdjustedStratified
            | Estimator::Exact
            | Estimator::BanzhafMsr => Needs::Evaluations,
        }
    }

    /// Whether the estimator reads [`EstimatorOptions::samples`]: those through a surrogate.
    pub fn reads_samples(self) -> bool {
        self.needs() == Needs::Surrogate
    }

    /// Whether the estimator reads [`EstimatorOptions::strata`]: the published semivalue only.
    pub fn reads_strata(self) -> bool {
        self == Estimator::StratifiedSemivalue
    }

    /// Whether the estimator reads [`EstimatorOptions::nonuniform_masks`]: `banzhaf-msr` only.
    pub fn reads_nonuniform_masks(self) -> bool {
        self == Estimator::BanzhafMsr
    }

    /// Whether the estimator draws at random ([`EstimatorOptions::seed`]): the masks through a
    /// surrogate, the folds of the regression-adjusted estimators that cross-fit.
    pub fn draws(self) -> bool {
        matches!(
            self,
            Estimator::StratifiedSemivalue
                | Estimator::BanzhafMarginal
                | Estimator::SurrogateShapley
                | Estimator::RegressionAdjustedExp
                | Estimator::RegressionAdjustedExpChains
                | Estimator::RegressionAdjustedStratified
        )
    }

    /// Parses a name or an alias; with an alias, also the note to show the user.
    pub fn parse(text: &str) -> Result<(Estimator, Option<String>), String> {
        if let Some(&e) = Estimator::ALL.iter().find(|e| e.name() == text) {
            return Ok((e, None));
        }
        if let Some(&e) = Estimator::ALL.iter().find(|e| e.aliases().contains(&text)) {
            let note = format!(
                "note: estimator {text:?} is now called {:?} (the name written in score tables)",
                e.name()
            );
            return Ok((e, Some(note)));
        }
        let names: Vec<&str> = Estimator::ALL.iter().map(|e| e.name()).collect();
        Err(format!(
            "unknown estimator {text:?}; one of {}",
            names.join(", ")
        ))
    }
}

impl fmt::Display for Estimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Estimator {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Estimator::parse(text).map(|(e, _)| e)
    }
}

/// The structure of a recorded design in player space: permutation chains (each a list of
/// prefixes in order) and complement pairs.
#[derive(Clone, Debug, Default)]
pub struct RecordedDesign {
    pub chains: Vec<Vec<Mask>>,
    pub pairs: Vec<(Mask, Mask)>,
}

/// One row of a mask table as the design reads it.
pub struct DesignRow<'a> {
    pub design: Design,
    pub group_id: Option<i64>,
    pub position: u32,
    pub mask: &'a Mask,
}

impl RecordedDesign {
    /// Groups the rows by `group_id` (in order of first appearance, members by `position`):
    /// permutation rows into chains, stratum/complement rows into pairs (groups of two).
    /// Masks are lowered to the players; a row removing a fixed block is an error.
    pub fn from_rows<'a>(
        rows: impl IntoIterator<Item = DesignRow<'a>>,
        players: &Players,
    ) -> Result<Self, ShapleyError> {
        let mut chains: Vec<(i64, Vec<(u32, &Mask)>)> = Vec::new();
        let mut pairs: Vec<(i64, Vec<(u32, &Mask)>)> = Vec::new();
        for row in rows {
            let (Some(group), target) = (
                row.group_id,
                match row.design {
                    Design::Permutation => &mut chains,
                    Design::Stratum | Design::Complement => &mut pairs,
                    Design::Anchor | Design::Enumeration => continue,
                },
            ) else {
                continue;
            };
            match target.iter_mut().find(|(g, _)| *g == group) {
                Some((_, members)) => members.push((row.position, row.mask)),
                None => target.push((group, vec![(row.position, row.mask)])),
            }
        }
        let lower_group = |mut members: Vec<(u32, &Mask)>| -> Result<Vec<Mask>, ShapleyError> {
            members.sort_by_key(|(position, _)| *position);
            Ok(members
                .into_iter()
                .map(|(_, mask)| players.lower(mask))
                .collect::<Result<_, _>>()?)
        };
        let chains = chains
            .into_iter()
            .map(|(_, members)| lower_group(members))
            .collect::<Result<_, _>>()?;
        let mut lowered_pairs = Vec::new();
        for (_, members) in pairs {
            if members.len() == 2 {
                let mut pair = lower_group(members)?;
                let second = pair.pop().expect("two members");
                let first = pair.pop().expect("two members");
                lowered_pairs.push((first, second));
            }
        }
        Ok(RecordedDesign {
            chains,
            pairs: lowered_pairs,
        })
    }
}

/// What the estimators may read. The evaluations are `(block mask, value)` rows in table order,
/// played as a [`RecordedGame`] (rows removing a fixed block are outside the game and never
/// asked for).
pub struct EstimatorInputs<'a> {
    pub evaluations: Option<&'a [(Mask, f64)]>,
    pub design: Option<&'a RecordedDesign>,
    pub surrogate: Option<&'a dyn Surrogate>,
    /// LLM evaluations the surrogate was fitted on (its estimates' cost).
    pub surrogate_evaluations: usize,
}

/// The published number of base masks of the semivalue through the surrogate (the default of
/// [`EstimatorOptions::samples`] and of `shapley --samples`).
pub const PUBLISHED_BASE_MASKS: usize = 80_000;

/// Settings of the estimators that sample. The default is the published estimate's:
/// [`PUBLISHED_BASE_MASKS`], the published strata scaled to the players, seed 0, and
/// `banzhaf-msr` refusing masks that are not a uniform sample.
#[derive(Clone, Debug)]
pub struct EstimatorOptions {
    /// Base masks of the semivalue / Banzhaf through the surrogate; surrogate queries of
    /// `surrogate-shapley` without a closed form.
    pub samples: usize,
    /// Strata of the semivalue (numbers of removed players); default: the published ones
    /// scaled to the players.
    pub strata: Option<Vec<usize>>,
    pub seed: u64,
    /// Whether `banzhaf-msr` estimates from masks that are not a uniform sample of the
    /// coalitions (with a warning) or refuses them.
    pub nonuniform_masks: NonuniformMasks,
}

impl Default for EstimatorOptions {
    fn default() -> Self {
        Self {
            samples: PUBLISHED_BASE_MASKS,
            strata: None,
            seed: 0,
            nonuniform_masks: NonuniformMasks::Refused,
        }
    }
}

/// Refuses the sampling settings that a Shapley computation through `surrogate` would ignore:
/// with a closed form (quadratic) its Shapley values are exact and no permutation is sampled.
/// `moot` holds the flags given that only that computation reads (the first is named); `who`
/// names the computation (`surrogate-shapley`, `--method iterative`). The one rule of the
/// stages that compute a surrogate's Shapley values: `shapley` ([`crate::inputs::ScoreInputs`])
/// and `apply-prune`'s iterative and search (`layerprune-selection`).
pub fn refuse_sampling_a_closed_form_ignores(
    surrogate: &dyn Surrogate,
    who: &str,
    moot: &[&str],
) -> anyhow::Result<()> {
    match moot.first() {
        Some(flag) if surrogate.exact_shapley().is_some() => anyhow::bail!(
            "{flag}: the surrogate has a closed form (quadratic), so {who} computes its Shapley \
             values exactly and samples no permutation; leave {flag} out"
        ),
        _ => Ok(()),
    }
}

/// The strata of the semivalue over `n` players: those given, ascending and each once (as
/// `sample-masks` takes its own, so a stratum given twice is not weighted twice), or the
/// published ones scaled.
fn semivalue_strata(given: Option<&[usize]>, n: usize) -> Vec<usize> {
    match given {
        Some(given) => {
            let mut strata = given.to_vec();
            strata.sort_unstable();
            strata.dedup();
            strata
        }
        None => published_strata(n),
    }
}

/// The estimates of one estimator (two for `exact`: Shapley and Banzhaf), block-labelled, and
/// notes for the user (missing sizes, held-out fits, timings; a note that is a warning begins
/// `warning: `, the others are information).
pub struct Estimated {
    pub estimates: Vec<Estimates>,
    pub notes: Vec<String>,
}

fn missing(which: Estimator, what: &str) -> ShapleyError {
    ShapleyError::Design(format!("--estimator {which} needs {what}"))
}

/// Runs `which` on the inputs over `players`; every estimate comes back labelled by block.
pub fn estimate(
    which: Estimator,
    inputs: &mut EstimatorInputs<'_>,
    players: &Players,
    options: &EstimatorOptions,
) -> Result<Estimated, ShapleyError> {
    let n = players.len();
    let mut notes = Vec::new();
    let estimates = match which.needs() {
        Needs::Surrogate => {
            let surrogate = inputs
                .surrogate
                .ok_or_else(|| missing(which, "--surrogate"))?;
            let mut game = PlayerGame::new(SurrogateGame(surrogate), players.clone())?;
            let estimates = if which == Estimator::SurrogateShapley {
                // The closed form of the players' game, the fixed blocks kept (as the
                // selection methods take it: one formula, `Surrogate::exact_shapley_on`).
                let closed_form =
                    surrogate.exact_shapley_on(&Mask::full(players.num_blocks()), players.blocks());
                let pairs = (options.samples / (2 * (n + 1))).max(1);
                surrogate_shapley(&mut game, closed_form, pairs, options.seed)?
            } else {
                let distribution = if which == Estimator::BanzhafMarginal {
                    MaskDistribution::Uniform
                } else {
                    MaskDistribution::Strata(semivalue_strata(options.strata.as_deref(), n))
                };
                let start = std::time::Instant::now();
                let estimates =
                    semivalue_through(&mut game, n, &distribution, options.samples, options.seed)
                        .map_err(|error| match error {
                        // The design's refusals ("stratum 50 removes more players than
                        // the 11 there are") name the settings they come from.
                        ShapleyError::Design(problem) => {
                            let strata = match &distribution {
                                MaskDistribution::Strata(strata) => {
                                    format!(" over the strata {strata:?} (--strata)")
                                }
                                MaskDistribution::Uniform => String::new(),
                            };
                            ShapleyError::Design(format!(
                                "--estimator {which} with --samples {}{strata} among {n} \
                                     players: {problem}",
                                options.samples
                            ))
                        }
                        other => other,
                    })?;
                notes.push(format!(
                    "{}: {} base masks through the surrogate in {:.2} s",
                    estimates.estimator,
                    options.samples,
                    start.elapsed().as_secs_f64()
                ));
                estimates
            };
            vec![estimates
                .for_players(players)
                .with_evaluations(inputs.surrogate_evaluations)]
        }
        Needs::Chains | Needs::Pairs => {
            let design = inputs
                .design
                .ok_or_else(|| missing(which, "--masks (the design's chains or pairs)"))?;
            let rows = inputs
                .evaluations
                .ok_or_else(|| missing(which, "--evaluations"))?;
            let recorded = RecordedGame::new(players.num_blocks(), rows.iter().cloned())?;
            let mut game = PlayerGame::new(recorded, players.clone())?;
            let coalitions = Coalitions {
                design: Some(design),
                recorded: &[],
            };
            return estimate_recorded(which, &mut game, &coalitions, players, options);
        }
        Needs::Evaluations => {
            let rows = inputs
                .evaluations
                .ok_or_else(|| missing(which, "--evaluations"))?;
            if which == Estimator::Exact {
                // Every mask of the players' game is read: one valued −inf or NaN (a collapsed
                // model) is named. The rows outside the game (removing a fixed block) are never
                // asked for, whatever their values.
                let in_game = rows.iter().filter(|(mask, _)| players.keeps_fixed(mask));
                check_finite(which, in_game, Mask::clone)?;
                let finite = rows.iter().filter(|(_, v)| v.is_finite()).cloned();
                let mut recorded = RecordedGame::new(players.num_blocks(), finite)?;
                let (shapley, banzhaf) = exact_values(&mut recorded, players).map_err(|e| {
                    ShapleyError::Design(format!(
                        "--estimator exact-shapley needs every mask over the {n} players: {e}"
                    ))
                })?;
                vec![shapley, banzhaf]
            } else {
                // Every recorded coalition of this game, in player space and table order; the
                // recorded game answers their values.
                let recorded: Vec<Mask> = rows
                    .iter()
                    .filter_map(|(mask, _)| players.lower(mask).ok())
                    .collect();
                let table = RecordedGame::new(players.num_blocks(), rows.iter().cloned())?;
                let mut game = PlayerGame::new(table, players.clone())?;
                let coalitions = Coalitions {
                    design: None,
                    recorded: &recorded,
                };
                return estimate_recorded(which, &mut game, &coalitions, players, options);
            }
        }
    };
    Ok(Estimated { estimates, notes })
}

/// The masks an estimator over recorded values reads, in player space: the design that drew
/// them (permutation chains, complement pairs), and every recorded coalition in table order
/// (the stratified and Banzhaf MSR estimators read all of them).
#[derive(Clone, Copy, Default)]
pub struct Coalitions<'a> {
    pub design: Option<&'a RecordedDesign>,
    pub recorded: &'a [Mask],
}

/// Runs an estimator of recorded values (every estimator that needs chains, pairs or the
/// evaluations, but `exact-shapley`) on `game`, a game over the players: `coalitions` says
/// which masks it reads, and the game answers their values (a [`RecordedGame`] of the
/// evaluation table, played by [`PlayerGame`], or any other game, e.g. the synthetic game a
/// table was recorded from). The estimates come back labelled by block.
pub fn estimate_recorded(
    which: Estimator,
    game: &mut dyn Game,
    coalitions: &Coalitions<'_>,
    players: &Players,
    options: &EstimatorOptions,
) -> Result<Estimated, ShapleyError> {
    let n = players.len();
    let mut notes = Vec::new();
    let estimates = match which.needs() {
        Needs::Surrogate => {
            return Err(ShapleyError::Design(format!(
                "--estimator {which} reads a surrogate, not recorded values"
            )))
        }
        Needs::Chains if coalitions.design.is_some() => {
            let design = coalitions.design.expect("a design");
            if design.chains.is_empty() {
                return Err(ShapleyError::Design(format!(
                    "--estimator {which}: the mask table has no permutation chains"
                )));
            }
            let chains = PermutationDesign::from_chains(n, &design.chains)?;
            let queries = chains.queries();
            let rows = valued(which, game, players, queries)?;
            let estimates = if which == Estimator::Permutation {
                permutation_estimate(&chains, &rows)?
            } else {
                let adjusted = regression_adjusted_chains_estimate(&chains, &rows, options.seed)?;
                notes.push(format!(
                    "{which}: held-out R² of the fold surrogates {:.4}",
                    adjusted.held_out_r2
                ));
                adjusted.estimates
            };
            estimates.with_evaluations(rows.len())
        }
        Needs::Pairs if coalitions.design.is_some() => {
            let design = coalitions.design.expect("a design");
            if design.pairs.is_empty() {
                return Err(ShapleyError::Design(format!(
                    "--estimator {which}: the mask table has no complement pairs"
                )));
            }
            let paired = PairedDesign::from_pairs(n, &design.pairs)?;
            let missing_sizes = paired.missing_sizes();
            if !missing_sizes.is_empty() {
                notes.push(format!(
                    "warning: no pair has a coalition of {missing_sizes:?} players; {which} leaves those sizes out of the Shapley weighting"
                ));
            }
            let rows = valued(which, game, players, paired.queries())?;
            let estimates = match which {
                Estimator::KernelShap => {
                    let estimates = kernelshap_estimate(&paired, &rows)?;
                    // (The pairs that inform the fit, as its limits count them.)
                    let pairs = paired.informative_pairs();
                    // Nothing to warn of where the estimate is exact (SE 0: a table of every
                    // pair), nor of widening where there is no SE to widen (a game without
                    // interactions beyond pairs, on which the fit is exact).
                    let warned = match &estimates.std_errors {
                        Some(se) => se.iter().any(|s| *s != 0.0),
                        None => pairs < MINIMUM_PAIRS_PER_PLAYER * n,
                    };
                    if let Some(warning) = thin_design_warning(which, n, pairs).filter(|_| warned) {
                        notes.push(warning);
                    }
                    estimates
                }
                _ => {
                    // The published `regression-adjusted` fits the quadratic with seed 0 (it
                    // draws nothing); the exp variant's seed drives φ(f)'s permutations.
                    let (target, seed) = if which == Estimator::RegressionAdjustedExp {
                        (SurrogateTarget::LogValue, options.seed)
                    } else {
                        (SurrogateTarget::Value, 0)
                    };
                    let adjusted =
                        regression_adjusted_kernel_estimate(&paired, &rows, target, seed)?;
                    notes.push(format!(
                        "{which}: held-out R² of the fold surrogates {:.4}",
                        adjusted.held_out_r2
                    ));
                    if let Some(warning) = thin_design_warning(which, n, paired.informative_pairs())
                    {
                        notes.push(warning);
                    }
                    adjusted.estimates
                }
            };
            estimates.with_evaluations(rows.len())
        }
        Needs::Chains | Needs::Pairs => {
            return Err(missing(which, "--masks (the design's chains or pairs)"))
        }
        Needs::Evaluations if which == Estimator::Exact => {
            return Err(ShapleyError::Design(format!(
                "--estimator {which} reads the evaluation table over the blocks (estimate)"
            )))
        }
        Needs::Evaluations => {
            let rows = valued(which, game, players, coalitions.recorded.to_vec())?;
            let masks = coalitions.recorded;
            let estimates = if which == Estimator::Stratified {
                stratified_estimate(n, &rows)?
            } else if which == Estimator::BanzhafMsr {
                // Every mask weighs alike: a table of another design (the published strata,
                // equal allocation) gave a biased estimate with plausible standard errors.
                if let Some(problem) = uniformity_problem(n, masks) {
                    match options.nonuniform_masks {
                        NonuniformMasks::Refused => {
                            return Err(ShapleyError::Design(format!(
                                "--estimator {which} reads the evaluated masks as a uniform \
                                 sample of the coalitions (each number of removed players in \
                                 proportion to its number of coalitions): {problem}; \
                                 sample-masks --strata 0,1,...,{n} --allocation proportional \
                                 samples one (without --anchors, which add more single removals \
                                 than a small sample holds; --enumerate gives every mask of a \
                                 small game), or --allow-nonuniform-masks estimates from these \
                                 masks anyway (biased unless they are of a design that suits \
                                 the estimate)"
                            )));
                        }
                        NonuniformMasks::Allowed => notes.push(format!(
                            "warning: --estimator {which} reads masks that are not a uniform \
                             sample of the coalitions, as --allow-nonuniform-masks asks: \
                             {problem}; every mask weighs alike in its means, so the estimate \
                             may be biased towards the values of the numbers of removed players \
                             the table holds more of than a uniform sample would (and its \
                             standard errors do not show that bias)"
                        )),
                    }
                }
                let design = UniformDesign {
                    num_players: n,
                    masks: masks.to_vec(),
                    // A table's masks, each once (a table that repeats one is read as a draw
                    // with replacement).
                    without_replacement: crate::values::distinct_sorted(masks.iter().cloned())
                        .len()
                        == masks.len(),
                };
                banzhaf_msr_estimate(&design, &rows).map_err(|error| match error {
                    ShapleyError::NeverVaries { player } => ShapleyError::Design(format!(
                        "--estimator {which}: block {} is kept in every mask or in none; draw \
                         more masks",
                        players.blocks()[player]
                    )),
                    other => other,
                })?
            } else {
                let (estimates, r2) =
                    regression_adjusted_stratified_estimate(n, &rows, options.seed)?;
                notes.push(format!(
                    "{which}: held-out R² of the fold surrogates {r2:.4}"
                ));
                estimates
            };
            estimates.with_evaluations(rows.len())
        }
    };
    Ok(Estimated {
        estimates: vec![estimates.for_players(players)],
        notes,
    })
}

/// A warning for a table of fewer than 4n complement pairs
/// ([`WELL_MEASURED_PAIRS_PER_PLAYER`]) over `n` players read by a paired estimator (none for
/// two players or fewer, where the estimate is exact). For `regression-adjusted` and
/// `regression-adjusted-exp` (at least 2n pairs, [`crate::regression::minimum_kernel_pairs`]):
/// measured on the recorded games (sampler tables, 200 seeds each of 22–44 and 50–100 pairs
/// over 11–12 players), from 2 to 4 pairs per player the 95 % intervals held the truth 91–95 %
/// of the time and about 1 run in 500 erred by more than 10 SE (a block whose removal alone
/// costs most, in the class of single removals sampled in part, held by neither half); at 50
/// and 100 pairs 93–95 %, none in 2,400 runs. For `kernelshap-paired`, what its standard errors
/// became ([`kernelshap_standard_errors`]: widened from 2n pairs, none below).
fn thin_design_warning(which: Estimator, n: usize, pairs: usize) -> Option<String> {
    let well_measured = WELL_MEASURED_PAIRS_PER_PLAYER * n;
    if n <= 2 || pairs >= well_measured {
        return None;
    }
    let reads = format!(
        "warning: --estimator {which} reads {pairs} complement pairs over {n} players, fewer \
         than {well_measured} ({WELL_MEASURED_PAIRS_PER_PLAYER} per player)"
    );
    Some(match (which, kernelshap_standard_errors(n, pairs)) {
        (Estimator::KernelShap, PairedStandardErrors::Withheld) => format!(
            "{reads}, and fewer than {} ({MINIMUM_PAIRS_PER_PLAYER} per player): it reports no \
             standard errors; with so few pairs its 95 % intervals were measured to hold the \
             truth 60–97 % of the time, and no widening the data support repairs them (its \
             estimates are as noisy as their few pairs make them); {} draws enough for \
             intervals measured to hold it 90–95 % of the time",
            MINIMUM_PAIRS_PER_PLAYER * n,
            complement_pairs_command(n, well_measured)
        ),
        (
            Estimator::KernelShap,
            PairedStandardErrors::Widened {
                degrees_of_freedom,
                factor,
            },
        ) => format!(
            "{reads}: its standard errors are widened {factor:.2} times, to Student's t \
             interval of the fit's {degrees_of_freedom} residual degrees of freedom; from 2 to \
             3 pairs per player its 95 % intervals were measured to hold the truth 86–94 % of \
             the time as they were, 88–96 % so widened, against 90–95 % from 4 on ({} draws \
             that many)",
            complement_pairs_command(n, well_measured)
        ),
        _ => format!(
            "{reads}: its standard errors rest on a few pairs of each class of sizes, and a pair \
             that decides a block's value (its removal alone costing most) may be in neither \
             half; from 2 to 4 pairs per player they were measured to miss more often (95 % \
             intervals holding the truth 91–95 % of the time, about 1 run in 500 erring by more \
             than 10 SE) than from 4 on"
        ),
    })
}

/// The masks an estimator reads (a design's queries, each once and sorted as every design's
/// `queries` returns them, or the recorded coalitions) valued through the game, as
/// `(player mask, value)` rows; a value no estimate can average is refused ([`check_finite`]).
fn valued(
    which: Estimator,
    game: &mut dyn Game,
    players: &Players,
    masks: Vec<Mask>,
) -> Result<Vec<(Mask, f64)>, ShapleyError> {
    let values = layerprune_core::values_checked(game, &masks)?;
    let rows: Vec<(Mask, f64)> = masks.into_iter().zip(values).collect();
    check_finite(which, rows.iter(), |mask| players.lift(mask))?;
    Ok(rows)
}

/// Refuses a row whose value is NaN or infinite, naming its mask over the blocks (`block_mask`
/// of the row's mask): a collapsed model's NLL is +inf, so its `neg-nll` and `nll-increase`
/// are −inf (its utility 0), and an estimate averaging it was inf or NaN, refused only
/// afterwards as "the estimate of block b is NaN", with no word of which mask or why.
fn check_finite<'a>(
    which: Estimator,
    mut rows: impl Iterator<Item = &'a (Mask, f64)>,
    block_mask: impl Fn(&Mask) -> Mask,
) -> Result<(), ShapleyError> {
    match rows.find(|(_, value)| !value.is_finite()) {
        Some((mask, value)) => Err(ShapleyError::NotFinite {
            estimator: which.name(),
            mask: block_mask(mask).to_string(),
            value: *value,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::banzhaf::uniform_design;
    use crate::kernelshap::paired_kernel_design_pairs;
    use crate::permutation::permutation_design_pairs;
    use crate::rng_from_seed;
    use layerprune_core::synthetic::PairwiseGame;

    /// A game of 6 blocks with interactions; block 0 is fixed.
    fn synthetic() -> PairwiseGame {
        layerprune_tests::six_block_pairwise_game()
    }

    /// The estimators that read a design's masks name a mask valued −inf (a collapsed model's
    /// neg-nll) with its blocks, where they averaged it into an estimate of NaN.
    #[test]
    fn a_design_through_a_mask_valued_minus_infinity_is_refused_naming_it() {
        let players = Players::new(6, &[0]).unwrap();
        let n = players.len();
        let permutations = permutation_design_pairs(n, 2, &mut rng_from_seed(1));
        let pairs = paired_kernel_design_pairs(n, 12, &mut rng_from_seed(2));
        let collapsed = [
            permutations.chain_masks(0)[2].clone(),
            pairs.coalitions[0].clone(),
        ];
        let blocks: Vec<Mask> = layerprune_tests::every_mask(n)
            .iter()
            .map(|m| players.lift(m))
            .collect();
        let values = synthetic().values(&blocks).unwrap();
        let rows = blocks.iter().cloned().zip(values).map(|(mask, value)| {
            let lowered = players.lower(&mask).unwrap();
            (
                mask,
                if collapsed.contains(&lowered) {
                    f64::NEG_INFINITY
                } else {
                    value
                },
            )
        });
        let table = RecordedGame::new(6, rows).unwrap();
        let design = RecordedDesign {
            chains: (0..permutations.orders.len())
                .map(|chain| permutations.chain_masks(chain))
                .collect(),
            pairs: pairs
                .coalitions
                .iter()
                .map(|s| (s.clone(), s.complement()))
                .collect(),
        };
        let coalitions = Coalitions {
            design: Some(&design),
            recorded: &[],
        };
        let options = EstimatorOptions {
            samples: 100,
            strata: None,
            seed: 5,
            nonuniform_masks: NonuniformMasks::Refused,
        };
        for (which, mask) in [
            (Estimator::Permutation, &collapsed[0]),
            (Estimator::KernelShap, &collapsed[1]),
        ] {
            let mut game = PlayerGame::new(table.clone(), players.clone()).unwrap();
            let error = estimate_recorded(which, &mut game, &coalitions, &players, &options)
                .err()
                .unwrap()
                .to_string();
            let named = format!(
                "{which} reads mask {}, whose value is -inf",
                players.lift(mask)
            );
            assert!(error.contains(&named), "{error}");
        }
    }

    /// Banzhaf's difference of means needs each player kept in some masks and removed in
    /// others; the refusal named the player's index among the players ("player 2"), not the
    /// block (3, with block 0 fixed).
    #[test]
    fn a_block_the_masks_never_vary_is_named_by_banzhaf() {
        let players = Players::new(6, &[0]).unwrap();
        // As many masks of each number removed as a uniform sample of 5 holds (rounded).
        let recorded: Vec<Mask> = ["00111", "11100", "01110", "10101", "00110"]
            .iter()
            .map(|m| m.parse().unwrap())
            .collect();
        let blocks: Vec<Mask> = recorded.iter().map(|m| players.lift(m)).collect();
        let values = synthetic().values(&blocks).unwrap();
        let table = RecordedGame::new(6, blocks.into_iter().zip(values)).unwrap();
        let coalitions = Coalitions {
            design: None,
            recorded: &recorded,
        };
        let options = EstimatorOptions {
            samples: 0,
            strata: None,
            seed: 0,
            nonuniform_masks: NonuniformMasks::Refused,
        };
        let mut game = PlayerGame::new(table, players.clone()).unwrap();
        let error = estimate_recorded(
            Estimator::BanzhafMsr,
            &mut game,
            &coalitions,
            &players,
            &options,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            error.ends_with("block 3 is kept in every mask or in none; draw more masks"),
            "{error}"
        );
    }

    /// The masks of `strata` (numbers of removed players) drawn as `sample-masks` draws them,
    /// `total` of them under `allocation`, with the anchors when asked, over the players.
    fn sampled(
        players: &Players,
        strata: Vec<i64>,
        total: usize,
        allocation: layerprune_sampling::Allocation,
        anchors: bool,
    ) -> Vec<Mask> {
        use layerprune_sampling::{sample, Existing, SamplingPlan, StrataSpec, StratifiedDesign};
        let plan = SamplingPlan {
            stratified: Some(StratifiedDesign {
                strata: StrataSpec::Removed(strata),
                total_masks: total,
                allocation,
            }),
            anchors,
            ..SamplingPlan::default()
        };
        sample(players, &plan, Existing::default(), 3)
            .unwrap()
            .rows
            .iter()
            .map(|row| players.lower(&row.mask).unwrap())
            .collect()
    }

    /// banzhaf-msr weighs every recorded mask alike, so it is unbiased only on a uniform sample
    /// of the coalitions; the pipeline's table (the published strata, equal allocation, the
    /// anchors) was estimated without a word, the ranking changed and the standard errors
    /// looked plausible. A table of another design is refused, saying what it lacks and how to
    /// sample one; a proportional allocation over every stratum, and every mask, are read.
    #[test]
    fn banzhaf_msr_refuses_masks_that_are_not_a_uniform_sample() {
        use layerprune_core::synthetic::AdditiveGame;
        use layerprune_sampling::Allocation::{Equal, Proportional};
        let players = Players::new(12, &[0]).unwrap();
        let n = players.len();
        let every_stratum: Vec<i64> = (0..=n as i64).collect();
        let uniform = sampled(&players, every_stratum.clone(), 200, Proportional, false);
        assert_eq!(uniformity_problem(n, &uniform), None);
        assert_eq!(
            uniformity_problem(n, &layerprune_tests::every_mask(n)),
            None
        );
        // A uniform draw with replacement passes too (its counts stray by chance).
        let drawn = uniform_design(n, 300, &mut rng_from_seed(4));
        assert_eq!(uniformity_problem(n, &drawn.masks), None);
        for (masks, says) in [
            // The published strata 2, 5, 8 of 11, equal allocation.
            (
                sampled(&players, vec![2, 5, 8], 200, Equal, false),
                "no mask removes 1, 3, 4, 6, 7, 9 or 10 of the 11 players, where a uniform \
                 sample of 200 masks holds about 133.2",
            ),
            // Every stratum, but the anchors: 11 single removals where a sample holds 1.1.
            (
                sampled(&players, every_stratum, 200, Proportional, true),
                "11 masks remove 1 of the 11 players, where a uniform sample of 211 masks \
                 holds 1.1 ± 5.3",
            ),
        ] {
            assert_eq!(uniformity_problem(n, &masks).as_deref(), Some(says));
        }

        // The audit's table: strata 1, 2, 3 of 6 players, equal allocation, the anchors.
        let players = Players::all(6);
        let recorded = sampled(&players, vec![1, 2, 3], 20, Equal, true);
        let mut game = PlayerGame::new(
            AdditiveGame::new(vec![0.3, 0.1, 0.2, 0.05, 0.15, 0.02], 0.1),
            players.clone(),
        )
        .unwrap();
        let coalitions = Coalitions {
            design: None,
            recorded: &recorded,
        };
        let mut options = EstimatorOptions {
            samples: 0,
            strata: None,
            seed: 0,
            nonuniform_masks: NonuniformMasks::Refused,
        };
        let error = estimate_recorded(
            Estimator::BanzhafMsr,
            &mut game,
            &coalitions,
            &players,
            &options,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            error.contains("banzhaf-msr reads the evaluated masks as a uniform sample")
                && error.contains("no mask removes 4 or 5 of the 6 players")
                && error.contains("sample-masks --strata 0,1,...,6 --allocation proportional")
                && error.contains("or --allow-nonuniform-masks estimates from these masks"),
            "{error}"
        );

        // Allowed (a table of a design the rule does not know, or a uniform one it misreads):
        // the estimate of the same masks, with a warning that says why it may be biased.
        options.nonuniform_masks = NonuniformMasks::Allowed;
        let estimated = estimate_recorded(
            Estimator::BanzhafMsr,
            &mut game,
            &coalitions,
            &players,
            &options,
        )
        .unwrap();
        let design = UniformDesign {
            num_players: players.len(),
            masks: recorded.clone(),
            without_replacement: true,
        };
        let rows = valued(Estimator::BanzhafMsr, &mut game, &players, recorded.clone()).unwrap();
        assert_eq!(
            estimated.estimates[0].values,
            banzhaf_msr_estimate(&design, &rows).unwrap().values
        );
        let warnings: Vec<&String> = estimated
            .notes
            .iter()
            .filter(|note| note.starts_with("warning: "))
            .collect();
        assert_eq!(warnings.len(), 1, "{:?}", estimated.notes);
        assert!(
            warnings[0].contains("not a uniform sample of the coalitions")
                && warnings[0].contains("no mask removes 4 or 5 of the 6 players")
                && warnings[0].contains("may be biased"),
            "{}",
            warnings[0]
        );
        // A uniform table gives no warning.
        let every = layerprune_tests::every_mask(players.len());
        let uniform = Coalitions {
            design: None,
            recorded: &every,
        };
        let estimated = estimate_recorded(
            Estimator::BanzhafMsr,
            &mut game,
            &uniform,
            &players,
            &options,
        )
        .unwrap();
        assert!(
            !estimated.notes.iter().any(|n| n.starts_with("warning: ")),
            "{:?}",
            estimated.notes
        );
    }

    /// The semivalue's design refuses a stratum beyond the players or fewer base masks than
    /// strata; the refusal said "stratum 50 removes more players than the 11 there are", naming
    /// neither flag. It names `--samples`, `--strata` and the players now.
    #[test]
    fn a_semivalue_design_refused_names_the_settings() {
        use layerprune_surrogate::QuadraticSurrogate;
        let surrogate = QuadraticSurrogate {
            num_players: 4,
            intercept: 0.5,
            linear: vec![0.1, 0.2, 0.3, 0.4],
            pairs: vec![vec![0.0; 4]; 4],
        };
        let players = Players::all(4);
        let refusal = |strata: Vec<usize>, samples: usize| {
            let mut inputs = EstimatorInputs {
                evaluations: None,
                design: None,
                surrogate: Some(&surrogate),
                surrogate_evaluations: 0,
            };
            let options = EstimatorOptions {
                samples,
                strata: Some(strata),
                seed: 0,
                nonuniform_masks: NonuniformMasks::Refused,
            };
            estimate(
                Estimator::StratifiedSemivalue,
                &mut inputs,
                &players,
                &options,
            )
            .err()
            .unwrap()
            .to_string()
        };
        let error = refusal(vec![9], 100);
        assert!(
            error.contains("--samples 100 over the strata [9] (--strata) among 4 players")
                && error.ends_with("stratum 9 removes more players than the 4 there are"),
            "{error}"
        );
        let error = refusal(vec![1, 2], 1);
        assert!(
            error.contains("--samples 1 over the strata [1, 2]")
                && error.contains("1 base masks for 2 strata"),
            "{error}"
        );
    }

    #[test]
    fn the_semivalue_strata_are_those_given_each_once_or_the_published_ones() {
        assert_eq!(semivalue_strata(Some(&[5, 2, 2]), 8), vec![2, 5]);
        assert_eq!(semivalue_strata(None, 32), published_strata(32));
        assert_eq!(published_strata(32), vec![2, 5, 8, 11, 14]);
    }

    #[test]
    fn an_estimator_over_a_recorded_game_equals_it_over_the_game_it_recorded() {
        let players = Players::new(6, &[0]).unwrap();
        let n = players.len();
        // Every coalition of the players, recorded (over the blocks) from the synthetic game.
        let coalitions: Vec<Mask> = (0..1usize << n)
            .map(|bits| Mask::from_kept((0..n).map(|i| bits >> i & 1 == 1).collect()))
            .collect();
        let blocks: Vec<Mask> = coalitions.iter().map(|m| players.lift(m)).collect();
        let values = synthetic().values(&blocks).unwrap();
        let table = RecordedGame::new(6, blocks.into_iter().zip(values)).unwrap();

        let permutations = permutation_design_pairs(n, 3, &mut rng_from_seed(1));
        let pairs = paired_kernel_design_pairs(n, 12, &mut rng_from_seed(2));
        let design = RecordedDesign {
            chains: (0..permutations.orders.len())
                .map(|chain| permutations.chain_masks(chain))
                .collect(),
            pairs: pairs
                .coalitions
                .iter()
                .map(|s| (s.clone(), s.complement()))
                .collect(),
        };
        let options = EstimatorOptions {
            samples: 100,
            strata: None,
            seed: 5,
            nonuniform_masks: NonuniformMasks::Refused,
        };
        let coalitions = Coalitions {
            design: Some(&design),
            recorded: &coalitions,
        };
        let mut checked = 0;
        for which in Estimator::ALL {
            if which.needs() == Needs::Surrogate || which == Estimator::Exact {
                continue;
            }
            let mut recorded = PlayerGame::new(table.clone(), players.clone()).unwrap();
            let mut live = PlayerGame::new(synthetic(), players.clone()).unwrap();
            let on_table =
                estimate_recorded(which, &mut recorded, &coalitions, &players, &options).unwrap();
            let on_game =
                estimate_recorded(which, &mut live, &coalitions, &players, &options).unwrap();
            let (a, b) = (&on_table.estimates[0], &on_game.estimates[0]);
            assert_eq!(a.estimator, b.estimator);
            assert_eq!(a.blocks, vec![1, 2, 3, 4, 5], "{which}: labelled by block");
            assert_eq!(a.blocks, b.blocks);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a.values), bits(&b.values), "{which}");
            assert_eq!(a.llm_evaluations, b.llm_evaluations, "{which}");
            checked += 1;
        }
        assert_eq!(checked, 8);
    }
}
