//! The quality-vs-budget frontier: every selection method played against one game (the LLM on
//! one calibration set, or a recorded table, or a synthetic game), each charged for the
//! distinct masks it asked for, with the plan it chose at each k.
//!
//! Every method sees the same game and nothing else; the caller puts one cache in front of
//! the LLM so that a mask two methods ask for is run once, while each method is still charged
//! for it (a [`CountingGame`] per method run). The held-out measurement of the plans is the
//! caller's: this module never sees an evaluation text.

use std::collections::BTreeMap;

use layerprune_core::{CachedGame, CountingGame, Game, Mask};

use crate::adaptive::{adaptive_min_budget, adaptive_removal, sleb_cost, AdaptiveOptions};
use crate::baselines::{leave_one_out_on_game, reverse_order_scores, BlockScores};
use crate::method_names;
use crate::race::Race;
use crate::select::one_shot;
use crate::sleb::sleb;
use crate::{removable_blocks, SelectionError};

/// A budget of the adaptive method, absolute or relative to SLEB's cost at the same k.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// This many distinct masks.
    Evaluations(usize),
    /// This fraction of SLEB's cost at the same k (1.0 = SLEB's budget).
    OfSleb(f64),
    /// The least budget the method accepts.
    Least,
}

impl Budget {
    /// The budget per k when none is given: SLEB's cost at that k, so adaptive removal never
    /// costs more than SLEB; in a search for the most blocks within a perplexity ratio
    /// ([`crate::target`]), which tries two k or more through one cache, half of it for each k
    /// tried, so the search costs less than SLEB's own (docs/results.md, "Choosing k by a
    /// perplexity ratio").
    pub fn default_per_k(ratio_search: bool) -> Budget {
        Budget::OfSleb(if ratio_search { 0.5 } else { 1.0 })
    }

    /// The number of evaluations for `k` of `players` removable blocks. A fraction of SLEB's
    /// cost is raised to the least budget the method accepts; a number is taken as it is (the
    /// method refuses one that is too small).
    pub fn resolve(self, players: usize, k: usize) -> usize {
        let least = adaptive_min_budget(players, k);
        match self {
            Budget::Evaluations(n) => n,
            Budget::OfSleb(fraction) => {
                let asked = (fraction * sleb_cost(players, k) as f64).round() as usize;
                if asked < least {
                    // Said: the budget table and --help promise "at most --budget".
                    tracing::info!(
                        "budget {self} is {asked} evaluations at k = {k} of {players} blocks, \
                         below the least the method needs: {least}"
                    );
                }
                asked.max(least)
            }
            Budget::Least => least,
        }
    }
}

impl std::str::FromStr for Budget {
    type Err = String;
    /// `least`, `sleb`, `0.5sleb` (a fraction of SLEB's cost) or a number of evaluations.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "least" {
            return Ok(Budget::Least);
        }
        if let Some(fraction) = text.strip_suffix("sleb") {
            let fraction = if fraction.is_empty() {
                1.0
            } else {
                fraction
                    .parse::<f64>()
                    .map_err(|_| format!("budget {text:?}: {fraction:?} is not a number"))?
            };
            if !(fraction > 0.0 && fraction.is_finite()) {
                return Err(format!("budget {text:?}: the fraction must be positive"));
            }
            return Ok(Budget::OfSleb(fraction));
        }
        match text.parse::<usize>() {
            // Refused with the flag (a usage error), not after the model is opened.
            Ok(0) => Err(format!(
                "budget {text:?}: a budget of no evaluations measures nothing; give a number \
                 above 0, a fraction such as 0.5sleb, or least"
            )),
            Ok(evaluations) => Ok(Budget::Evaluations(evaluations)),
            Err(_) => Err(format!(
                "budget {text:?} is not a number of evaluations, `least`, `sleb` or `0.5sleb`"
            )),
        }
    }
}

impl std::fmt::Display for Budget {
    /// As it is written on the command line (`least`, `sleb`, `0.5sleb`, `2000`), so
    /// `text.parse::<Budget>()` gives it back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Evaluations(n) => write!(f, "{n}"),
            Budget::OfSleb(fraction) if *fraction == 1.0 => f.write_str("sleb"),
            Budget::OfSleb(fraction) => write!(f, "{fraction}sleb"),
            Budget::Least => f.write_str("least"),
        }
    }
}

/// A method the frontier can play; [`FrontierMethod::name`] is its `method` in the points
/// (and in frontier.csv).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontierMethod {
    /// ShortGPT's block influence, from one pass of the full model.
    BlockInfluence,
    /// The angular distance, from the same pass.
    Angular,
    Reverse,
    LeaveOneOut,
    Sleb,
    /// SLEB with each step's candidates raced over the calibration windows.
    SlebRaced,
    /// The quadratic-surrogate Shapley method ([`FrontierConfig::shapley_masks`]).
    SurrogateShapley,
    /// Adaptive removal, once per budget.
    Adaptive,
    /// Adaptive removal raced over the calibration windows, once per budget.
    AdaptiveRaced,
}

impl FrontierMethod {
    /// Every method, in the order the frontier plays them.
    pub const ALL: [FrontierMethod; 9] = [
        FrontierMethod::BlockInfluence,
        FrontierMethod::Angular,
        FrontierMethod::Reverse,
        FrontierMethod::LeaveOneOut,
        FrontierMethod::Sleb,
        FrontierMethod::SlebRaced,
        FrontierMethod::SurrogateShapley,
        FrontierMethod::Adaptive,
        FrontierMethod::AdaptiveRaced,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FrontierMethod::BlockInfluence => method_names::BLOCK_INFLUENCE,
            FrontierMethod::Angular => method_names::ANGULAR,
            FrontierMethod::Reverse => method_names::REVERSE,
            FrontierMethod::LeaveOneOut => method_names::LEAVE_ONE_OUT,
            FrontierMethod::Sleb => method_names::SLEB,
            FrontierMethod::SlebRaced => method_names::SLEB_RACED,
            FrontierMethod::SurrogateShapley => method_names::SURROGATE_SHAPLEY,
            FrontierMethod::Adaptive => method_names::ADAPTIVE,
            FrontierMethod::AdaptiveRaced => method_names::ADAPTIVE_RACED,
        }
    }
}

impl std::fmt::Display for FrontierMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FrontierMethod {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        FrontierMethod::ALL
            .into_iter()
            .find(|m| m.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = FrontierMethod::ALL.iter().map(|m| m.name()).collect();
                // An old name says what the method is called now, where the frontier plays it
                // (`shapley`); `published`'s new name is no frontier method either.
                match method_names::renamed(text) {
                    Some(refusal) if names.contains(&method_names::current_name(text)) => refusal,
                    _ => format!("unknown method {text:?} (one of {})", names.join(", ")),
                }
            })
    }
}

/// What the frontier runs.
#[derive(Clone, Debug)]
pub struct FrontierConfig {
    pub ks: Vec<usize>,
    pub fixed: Vec<usize>,
    /// One adaptive run per (k, budget), unraced and raced as below.
    pub adaptive_budgets: Vec<Budget>,
    /// Run adaptive removal unraced at every budget.
    pub adaptive: bool,
    /// Run adaptive removal raced this way at every budget (`None`: not run).
    pub adaptive_race: Option<Race>,
    /// One-shot baselines from scores (e.g. ShortGPT's block influence, angular distance),
    /// charged their `llm_evaluations` plus one to measure each plan.
    pub one_pass: Vec<BlockScores>,
    /// Run reverse order.
    pub reverse: bool,
    /// Run leave-one-out (every single removal, then the plan they imply).
    pub leave_one_out: bool,
    /// Run SLEB.
    pub sleb: bool,
    /// Run SLEB raced over the calibration windows this way (`None`: not run).
    pub sleb_race: Option<Race>,
    /// The Shapley method of this project before adaptive removal: this many masks from the
    /// published strata (scaled to the players) plus the full model and every single removal,
    /// a quadratic surrogate of −NLL fitted on them (ridge 0.01, as `make demo`), its exact
    /// Shapley values, the k lowest removed. `None`: not run.
    pub shapley_masks: Option<usize>,
    /// Seeds the Shapley method's masks.
    pub seed: u64,
}

/// One method's plan at one k and budget.
#[derive(Clone, Debug, PartialEq)]
pub struct FrontierPoint {
    pub method: String,
    pub k: usize,
    /// Distinct masks the method asked the game for, including measuring its plan.
    pub llm_evaluations: usize,
    /// The budget it was given (adaptive only; it may stop below it).
    pub budget: Option<usize>,
    /// The budgets asked for that came to `budget` at this k, in the order given (several
    /// where they coincide: they are run once); empty where `budget` is `None`.
    pub budget_specs: Vec<Budget>,
    /// Ascending.
    pub removed_blocks: Vec<usize>,
    /// The game's value of the plan (−NLL on the calibration tokens for the LLM).
    pub value: f64,
}

/// Plays every method of `config` against `game`; the points come in a fixed order (method,
/// then k, then budget). A [`method_names::BEST_KNOWN`] point per k closes the list: the best measured plan
/// among every mask with k removed that any method asked for (its cost: every distinct mask
/// asked by all methods together).
pub fn frontier(
    game: &mut dyn Game,
    config: &FrontierConfig,
) -> Result<Vec<FrontierPoint>, SelectionError> {
    let num_blocks = game.num_players();
    let k_max = config.ks.iter().copied().max().unwrap_or(0);
    if config.ks.is_empty() {
        return Err(SelectionError::BadOption("no k to plan for".into()));
    }
    if config.ks.contains(&0) {
        return Err(SelectionError::BadOption(
            "k = 0 removes nothing: every k must be at least 1".into(),
        ));
    }
    let players = removable_blocks(num_blocks, &config.fixed, k_max)?;
    // Every mask any method asks for, with its value: the best-known plans come from here.
    let mut all = CountingGame::new(CachedGame::new(game));
    let mut points = Vec::new();

    // A one-shot method's plan at each k, charged for its scores and for measuring the plan
    // unless it is one of the masks the scores were measured on.
    let mut one_shot_points = |all: &mut CountingGame<CachedGame<&mut dyn Game>>,
                               scores: &BlockScores,
                               measured: &[Mask]|
     -> Result<(), SelectionError> {
        scores.check(num_blocks, &config.fixed)?;
        for &k in &config.ks {
            let removed = one_shot(&scores.scores, k, &config.fixed)?;
            let plan = Mask::from_removed(num_blocks, &removed)
                .map_err(|e| SelectionError::Game(e.into()))?;
            let value = all.value(&plan)?;
            points.push(FrontierPoint {
                method: scores.method.clone(),
                k,
                llm_evaluations: scores.llm_evaluations as usize
                    + usize::from(!measured.contains(&plan)),
                budget: None,
                budget_specs: Vec::new(),
                removed_blocks: removed,
                value,
            });
        }
        Ok(())
    };
    for scores in &config.one_pass {
        one_shot_points(&mut all, scores, &[])?;
    }
    if config.reverse {
        one_shot_points(&mut all, &reverse_order_scores(num_blocks), &[])?;
    }
    if config.leave_one_out {
        // Every single removal (the first step of SLEB and adaptive alike); k = 1's plan is one
        // of them, so it costs no extra evaluation.
        let (scores, singles) = leave_one_out_on_game(&mut all, &config.fixed)?;
        one_shot_points(&mut all, &scores, &singles)?;
    }
    let races = [
        (config.sleb, None),
        (config.sleb_race.is_some(), config.sleb_race),
    ];
    for (runs, race) in races {
        if !runs {
            continue;
        }
        let result = sleb(&mut all, k_max, &config.fixed, race.as_ref())?;
        for &k in &config.ks {
            points.push(FrontierPoint {
                method: method_names::sleb(race.as_ref()).into(),
                k,
                llm_evaluations: result.evaluations_after[k - 1],
                budget: None,
                budget_specs: Vec::new(),
                removed_blocks: result.removed_blocks(k),
                value: result.values_after[k - 1],
            });
        }
    }
    if let Some(masks) = config.shapley_masks {
        points.extend(quadratic_shapley_points(&mut all, config, masks)?);
    }
    let adaptive_runs = config.adaptive || config.adaptive_race.is_some();
    for &k in config.ks.iter().filter(|_| adaptive_runs) {
        // Each budget once, with the specs that came to it (resolved, and a budget raised to
        // the least said, only where an adaptive method runs).
        let mut budgets: BTreeMap<usize, Vec<Budget>> = BTreeMap::new();
        for spec in &config.adaptive_budgets {
            budgets
                .entry(spec.resolve(players.len(), k))
                .or_default()
                .push(*spec);
        }
        let races = [
            (config.adaptive, None),
            (config.adaptive_race.is_some(), config.adaptive_race),
        ];
        for (race, budget, specs) in
            races
                .into_iter()
                .filter(|(runs, _)| *runs)
                .flat_map(|(_, race)| {
                    budgets
                        .iter()
                        .map(move |(&budget, specs)| (race, budget, specs))
                })
        {
            let mut counted = CountingGame::new(&mut all);
            let options = AdaptiveOptions {
                race,
                ..AdaptiveOptions::with_budget(budget)
            };
            let result = adaptive_removal(&mut counted, k, &config.fixed, &options)?;
            points.push(FrontierPoint {
                method: method_names::adaptive(race.as_ref()).into(),
                k,
                llm_evaluations: result.llm_evaluations,
                budget: Some(budget),
                budget_specs: specs.clone(),
                removed_blocks: result.removed_blocks,
                value: result.value,
            });
        }
    }
    let asked = all.evaluations();
    let asked_for = all.into_inner();
    for &k in &config.ks {
        if let Some((removed, value)) = best_with_removed(&asked_for, k) {
            points.push(FrontierPoint {
                method: method_names::BEST_KNOWN.into(),
                k,
                llm_evaluations: asked,
                budget: None,
                budget_specs: Vec::new(),
                removed_blocks: removed,
                value,
            });
        }
    }
    Ok(points)
}

/// The quadratic-surrogate Shapley plans ([`FrontierConfig::shapley_masks`]).
fn quadratic_shapley_points(
    game: &mut dyn Game,
    config: &FrontierConfig,
    masks: usize,
) -> Result<Vec<FrontierPoint>, SelectionError> {
    use layerprune_sampling::{
        sample, Allocation, Existing, Players, SamplingPlan, StrataSpec, StratifiedDesign,
    };
    use layerprune_surrogate::{fit, FitOptions, SurrogateKind};

    let num_blocks = game.num_players();
    let bad =
        |e: &dyn std::fmt::Display| SelectionError::BadOption(format!("surrogate-shapley: {e}"));
    let players = Players::new(num_blocks, &config.fixed).map_err(|e| bad(&e))?;
    let plan = SamplingPlan {
        stratified: Some(StratifiedDesign {
            strata: StrataSpec::PublishedDefault,
            total_masks: masks,
            allocation: Allocation::Equal,
        }),
        anchors: true,
        ..SamplingPlan::default()
    };
    let sampled: Vec<Mask> = sample(&players, &plan, Existing::default(), config.seed)
        .map_err(|e| bad(&e))?
        .rows
        .into_iter()
        .map(|row| row.mask)
        .collect();
    let mut counted = CountingGame::new(game);
    let values = counted.values(&sampled)?;
    // A mask that collapsed the model (−∞, or NaN) has no value a quadratic can fit, so the fit
    // leaves it out; but then a block whose removal alone collapsed it is never seen removed,
    // its term is not identified, and its Shapley value would come out near the least. Its
    // single removal (an anchor) says it is the most important block: it scores +∞.
    let collapsed_alone: Vec<usize> = sampled
        .iter()
        .zip(&values)
        .filter(|(mask, value)| mask.num_removed() == 1 && !value.is_finite())
        .map(|(mask, _)| mask.removed_blocks()[0])
        .collect();
    let (kept_masks, targets): (Vec<Mask>, Vec<f64>) = sampled
        .iter()
        .cloned()
        .zip(values)
        .filter(|(_, v)| v.is_finite())
        .unzip();
    let options = FitOptions {
        seed: config.seed,
        ..FitOptions::default()
    };
    let surrogate =
        fit(SurrogateKind::Quadratic, &kept_masks, &targets, &options).map_err(|e| bad(&e))?;
    // The players' game (the fixed blocks kept): the closed form over all blocks would misread
    // a fit on masks that always keep them (`SurrogateShapley::player_scores`).
    let mut scores = crate::SurrogateShapley::for_fitted(&surrogate, 0, config.seed)
        .player_scores(&config.fixed)?;
    for block in collapsed_alone {
        scores[block] = f64::INFINITY;
    }
    let sampled_cost = counted.evaluations();
    let mut points = Vec::new();
    for &k in &config.ks {
        let removed = one_shot(&scores, k, &config.fixed)?;
        let mask =
            Mask::from_removed(num_blocks, &removed).map_err(|e| SelectionError::Game(e.into()))?;
        // Charged for its masks and the measurement of this plan (free if it was sampled, the
        // fit's or not).
        let measured = !sampled.contains(&mask);
        let value = counted.value(&mask)?;
        points.push(FrontierPoint {
            method: method_names::SURROGATE_SHAPLEY.into(),
            k,
            llm_evaluations: sampled_cost + usize::from(measured),
            budget: None,
            budget_specs: Vec::new(),
            removed_blocks: removed,
            value,
        });
    }
    Ok(points)
}

/// The best value among the masks with `k` removed that `game` was asked for (ties to the
/// smaller removed set).
fn best_with_removed(game: &CachedGame<&mut dyn Game>, k: usize) -> Option<(Vec<usize>, f64)> {
    game.rows()
        .filter(|(m, v)| m.num_removed() == k && !v.is_nan())
        .map(|(m, v)| (m.removed_blocks(), v))
        .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
}
