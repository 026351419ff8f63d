//! From what a user has (scores, a surrogate, block statistics, earlier plans, the LLM as a
//! [`Game`]) to one plan per k, and the plans measured on the LLM: the composition the
//! `apply-prune` stage runs, as one library call so it is tested without spawning a binary.
//!
//! A measuring game values a mask as −NLL (`GameValue::NegNll`); every plan measured through
//! it records its NLL and the distinct masks it cost.

use std::fmt;
use std::str::FromStr;

use layerprune_core::{values_checked, CachedGame, Game, Mask};
use layerprune_surrogate::{FittedSurrogate, Surrogate};
use layerprune_tables::{BlockStatsTable, FullModel, PlanRow, PlanTable, RunnerUp};

use crate::frontier::Budget;
use crate::method_names::{self, ITERATIVE, SEARCH};
use crate::target::{adaptive_chooser, sleb_chooser};
use crate::{
    adaptive_removal, best_angular_run, iterative_removal, largest_within, one_shot,
    removable_blocks, sleb, surrogate_search, AdaptiveOptions, BlockScores, Candidate, Race,
    RatioTarget, SearchOptions, SelectionError, SurrogateShapley,
};

/// How the blocks to delete are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanMethod {
    /// The k lowest scores of one estimator of a score table.
    OneShot,
    /// Remove the lowest surrogate-Shapley block, recompute over the rest, repeat.
    Iterative,
    /// Search masks with k removed for the best surrogate prediction.
    Search,
    /// SLEB: greedy removal measured on the model.
    Sleb,
    /// Budget-aware adaptive removal on the model (raced with `--race-se`: the recommended method).
    Adaptive,
    /// The run of k consecutive blocks with the smallest angular distance.
    AngularRun,
    /// Plans chosen earlier, to measure them or write the pruned model.
    FromPlan,
}

impl PlanMethod {
    pub const ALL: [PlanMethod; 7] = [
        PlanMethod::OneShot,
        PlanMethod::Iterative,
        PlanMethod::Search,
        PlanMethod::Sleb,
        PlanMethod::Adaptive,
        PlanMethod::AngularRun,
        PlanMethod::FromPlan,
    ];

    /// Whether the method chooses by measuring masks on the LLM (SLEB, adaptive), so it can
    /// search for the most blocks within a perplexity ratio.
    pub fn measures_while_choosing(self) -> bool {
        matches!(self, PlanMethod::Sleb | PlanMethod::Adaptive)
    }

    /// The command-line name (`--method`).
    pub fn name(self) -> &'static str {
        match self {
            PlanMethod::OneShot => "one-shot",
            PlanMethod::Iterative => ITERATIVE,
            PlanMethod::Search => SEARCH,
            PlanMethod::Sleb => method_names::SLEB,
            PlanMethod::Adaptive => method_names::ADAPTIVE,
            PlanMethod::AngularRun => method_names::ANGULAR_RUN,
            PlanMethod::FromPlan => "from-plan",
        }
    }
}

impl fmt::Display for PlanMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PlanMethod {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        PlanMethod::ALL
            .into_iter()
            .find(|m| m.name() == text)
            .ok_or_else(|| {
                let names: Vec<_> = PlanMethod::ALL.iter().map(|m| m.name()).collect();
                // The names plan tables, frontier.csv and Make's METHODS record: how each is run.
                let how = match text {
                    method_names::ADAPTIVE_RACED => {
                        " (adaptive-raced is `--method adaptive --race-se 3`, as make runs it)"
                            .into()
                    }
                    method_names::SLEB_RACED => {
                        " (sleb-raced is `--method sleb --race-se 3`, as make runs it)".into()
                    }
                    method_names::BLOCK_INFLUENCE
                    | method_names::ANGULAR
                    | method_names::LEAVE_ONE_OUT
                    | method_names::REVERSE
                    | method_names::RANDOM => format!(
                        " ({text} is a score: `score-blocks --estimator {text}`, then \
                         `apply-prune --scores TABLE --estimator {text}`)"
                    ),
                    method_names::STRATIFIED_SEMIVALUE | method_names::SURROGATE_SHAPLEY => {
                        format!(
                            " ({text} is an estimate: `shapley --estimator {text}`, then \
                         `apply-prune --scores TABLE --estimator {text}`)"
                        )
                    }
                    _ => String::new(),
                };
                format!("unknown method {text:?}; one of {}{how}", names.join(", "))
            })
    }
}

/// A plan: the removed blocks, what was predicted and measured of it, and what it cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub method: String,
    pub removed: Vec<usize>,
    pub predicted: Option<f64>,
    pub measured_nll: Option<f64>,
    pub llm_evaluations: u64,
    /// Search: the best candidates by prediction, to be measured; the best measured wins, with
    /// its own prediction.
    pub candidates: Vec<Candidate>,
    /// The best other set of k removed blocks measured while choosing
    /// ([`crate::margin::attach_comparisons`]).
    pub runner_up: Option<RunnerUp>,
    /// The full model on the same tokens, when measured ([`crate::margin::attach_comparisons`]).
    pub full_model: Option<FullModel>,
    /// `llm_evaluations` is an earlier plan table's record of what choosing the plan cost
    /// (`from-plan`): measuring it again, on held-out text or any other, is not part of that
    /// cost, so the count is kept as recorded rather than charged one more evaluation.
    pub cost_is_recorded: bool,
}

impl Plan {
    /// A plan of `method` removing `removed`, chosen for `llm_evaluations`, not yet measured.
    pub fn new(method: &str, removed: Vec<usize>, llm_evaluations: u64) -> Self {
        Plan {
            method: method.to_string(),
            removed,
            predicted: None,
            measured_nll: None,
            llm_evaluations,
            candidates: Vec::new(),
            runner_up: None,
            full_model: None,
            cost_is_recorded: false,
        }
    }

    /// The pruned model's mask among `num_blocks` blocks. Its id ([`Mask::id`]) is the plan
    /// table's `mask_id` column, which `write_plans` derives from the row's removed blocks, so
    /// a plan joins its row of an evaluation table.
    pub fn mask(&self, num_blocks: usize) -> Result<Mask, SelectionError> {
        Mask::from_removed(num_blocks, &self.removed)
            .map_err(|e| SelectionError::BadOption(format!("plan {:?}: {e}", self.removed)))
    }

    /// The plan as a row of a plan table (its `mask_id` is [`PlanRow::mask_id`], the same id
    /// as [`Plan::mask`]'s).
    pub fn to_row(&self) -> Result<PlanRow, SelectionError> {
        let to_u32 = |value: usize| {
            u32::try_from(value)
                .map_err(|_| SelectionError::BadOption(format!("{value} does not fit in u32")))
        };
        Ok(PlanRow {
            method: self.method.clone(),
            k: to_u32(self.removed.len())?,
            removed_blocks: self
                .removed
                .iter()
                .map(|&b| to_u32(b))
                .collect::<Result<_, _>>()?,
            predicted_value: self.predicted,
            measured_nll: self.measured_nll,
            measured_ppl: self.measured_nll.map(f64::exp),
            llm_evaluations: self.llm_evaluations,
            runner_up: self.runner_up.clone(),
            full_model: self.full_model.clone(),
        })
    }
}

/// A fitted surrogate and the LLM evaluations it was fitted on.
#[derive(Clone, Copy)]
pub struct FittedOn<'a> {
    pub surrogate: &'a FittedSurrogate,
    pub llm_evaluations: u64,
    /// The blocks kept in every mask it was fitted on: it knows nothing of a plan that removes
    /// one, and predicts no value for it.
    pub fixed_blocks: &'a [usize],
}

/// What the methods may read; each method checks that what it needs is there.
#[derive(Default)]
pub struct PlanInputs<'a> {
    pub scores: Option<&'a BlockScores>,
    pub surrogate: Option<FittedOn<'a>>,
    pub block_stats: Option<&'a BlockStatsTable>,
    /// Earlier plans (from-plan), and the method to take when a k has several.
    pub earlier_plans: Option<&'a PlanTable>,
    pub plan_method: Option<&'a str>,
    /// The LLM valuing masks as −NLL, for SLEB and adaptive, and for measuring.
    pub game: Option<&'a mut dyn Game>,
}

/// The settings of the methods: what `apply-prune`'s flags say, the same for every model.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanSettings {
    /// Numbers of blocks to remove, one plan each.
    pub ks: Vec<usize>,
    /// Search: candidates measured on the LLM (the best measured is kept).
    pub candidates: usize,
    /// Search: random starting sets besides the one-shot and iterative solutions.
    pub random_starts: usize,
    /// Antithetic permutation pairs per Shapley computation of a surrogate without a closed
    /// form.
    pub permutation_pairs: usize,
    /// Adaptive: LLM evaluations per k, at most (with `ratio_target`: per k probed).
    pub budget: Budget,
    /// Instead of `ks`: the most blocks removed whose calibration perplexity stays within a
    /// multiple of the full model's (SLEB and adaptive only).
    pub ratio_target: Option<RatioTarget>,
    /// SLEB and adaptive: race the masks measured together over the calibration windows
    /// ([`crate::race`]).
    pub race: Option<Race>,
    pub seed: u64,
}

impl Default for PlanSettings {
    /// `apply-prune`'s defaults, and no k.
    fn default() -> Self {
        PlanSettings {
            ks: Vec::new(),
            candidates: 8,
            random_starts: 16,
            permutation_pairs: 512,
            budget: Budget::default_per_k(false),
            ratio_target: None,
            race: None,
            seed: 0,
        }
    }
}

/// The settings a user gave, each `None` (or false) where left out: [`AskedSettings::resolve`]
/// refuses one that the method would ignore or that needs another, and fills in the defaults
/// ([`PlanSettings::default`]). The flags named in its messages are `apply-prune`'s.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AskedSettings {
    /// A k listed twice is one plan (a plan table has one plan per method and k).
    pub ks: Vec<usize>,
    pub candidates: Option<usize>,
    pub random_starts: Option<usize>,
    pub permutation_pairs: Option<usize>,
    pub budget: Option<Budget>,
    pub max_ppl_ratio: Option<f64>,
    pub max_ppl_ratio_se: Option<f64>,
    pub race_se: Option<f64>,
    pub race_windows: Option<usize>,
    pub seed: Option<u64>,
    /// Whether the method of the plans to take from an earlier table was named.
    pub plan_method: bool,
}

impl AskedSettings {
    /// The settings `method` runs with, or why they cannot be: a setting only other methods
    /// use would be ignored, so it is refused, as a file they use is.
    pub fn resolve(&self, method: PlanMethod) -> Result<PlanSettings, SelectionError> {
        let refuse = |text: String| Err(SelectionError::BadOption(text));
        if self.max_ppl_ratio_se.is_some() && self.max_ppl_ratio.is_none() {
            return refuse(
                "--max-ppl-ratio-se is a margin on --max-ppl-ratio; it needs --max-ppl-ratio"
                    .into(),
            );
        }
        if self.max_ppl_ratio.is_some() && !method.measures_while_choosing() {
            return Err(ratio_needs_measuring(method));
        }
        if self.race_windows.is_some() && self.race_se.is_none() {
            return refuse("--race-windows sets up a race; it needs --race-se".into());
        }
        if self.race_se.is_some() && !method.measures_while_choosing() {
            return refuse(format!(
                "--race-se races the masks a method measures while choosing; it needs --method \
                 sleb or adaptive, not {method}"
            ));
        }
        let surrogate_methods = [PlanMethod::Iterative, PlanMethod::Search];
        let only_for: [(bool, &str, &[PlanMethod]); 6] = [
            (self.budget.is_some(), "--budget", &[PlanMethod::Adaptive]),
            (
                self.candidates.is_some(),
                "--candidates",
                &[PlanMethod::Search],
            ),
            (
                self.random_starts.is_some(),
                "--random-starts",
                &[PlanMethod::Search],
            ),
            (
                self.permutation_pairs.is_some(),
                "--permutation-pairs",
                &surrogate_methods,
            ),
            (self.seed.is_some(), "--seed", &surrogate_methods),
            (self.plan_method, "--plan-method", &[PlanMethod::FromPlan]),
        ];
        for (given, flag, users) in only_for {
            if given && !users.contains(&method) {
                let names: Vec<String> = users.iter().map(|m| format!("--method {m}")).collect();
                return refuse(format!(
                    "{flag} is for {}; --method {method} would ignore it (leave it out)",
                    names.join(" or ")
                ));
            }
        }
        let defaults = PlanSettings::default();
        Ok(PlanSettings {
            ks: layerprune_core::distinct(&self.ks),
            candidates: self.candidates.unwrap_or(defaults.candidates),
            random_starts: self.random_starts.unwrap_or(defaults.random_starts),
            permutation_pairs: self.permutation_pairs.unwrap_or(defaults.permutation_pairs),
            budget: self
                .budget
                .unwrap_or_else(|| Budget::default_per_k(self.max_ppl_ratio.is_some())),
            ratio_target: self.max_ppl_ratio.map(|max_ppl_ratio| RatioTarget {
                max_ppl_ratio,
                standard_errors: self.max_ppl_ratio_se.unwrap_or(0.0),
            }),
            race: self.race_se.map(|standard_errors| Race {
                first_windows: self.race_windows.unwrap_or(Race::default().first_windows),
                standard_errors,
            }),
            seed: self.seed.unwrap_or(defaults.seed),
        })
    }
}

/// What the methods choose for: the model's blocks, those never removed, and the settings.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub num_blocks: usize,
    /// Blocks never removed.
    pub fixed: Vec<usize>,
    pub settings: PlanSettings,
}

/// `--max-ppl-ratio` with a method that does not measure while choosing.
fn ratio_needs_measuring(method: PlanMethod) -> SelectionError {
    SelectionError::BadOption(format!(
        "--max-ppl-ratio needs a method that measures its plans on the model while choosing \
         (adaptive or sleb), not {method}"
    ))
}

fn needs(method: PlanMethod, what: &str) -> SelectionError {
    SelectionError::BadOption(format!("--method {method} needs {what}"))
}

/// One plan per k of the settings' `ks` by `method`, or with their `ratio_target` the one plan
/// with the most blocks removed within that ratio ([`largest_within`]); plans that ran on the
/// model come back measured. With a surrogate, every plan also gets its predicted value (but
/// one removing a block the surrogate was fitted with fixed).
pub fn choose_plans(
    method: PlanMethod,
    inputs: &mut PlanInputs<'_>,
    options: &PlanOptions,
) -> Result<Vec<Plan>, SelectionError> {
    let bad = |text: &str| Err(SelectionError::BadOption(text.into()));
    let settings = &options.settings;
    let mut plans = match (&settings.ratio_target, settings.ks.is_empty()) {
        (Some(target), true) => vec![plan_within(method, inputs, options, target)?],
        (Some(_), false) => return bad("give --k or --max-ppl-ratio, not both"),
        (None, true) if method == PlanMethod::FromPlan => every_earlier_plan(inputs, options)?,
        (None, true) => return bad("--k needs at least one number of blocks to remove"),
        (None, false) => plans_for_ks(method, inputs, options)?,
    };
    if let Some(on) = inputs.surrogate {
        for plan in &mut plans {
            // A method that does not choose by the surrogate may remove a block the surrogate
            // was fitted with fixed (its fixed blocks bind iterative and search only; until
            // 2026-12-07 they bound every method, and a --surrogate given for its predictions
            // changed a SLEB or adaptive plan without a word): such a plan is outside what it
            // was fitted on.
            let outside: Vec<usize> = plan
                .removed
                .iter()
                .copied()
                .filter(|block| on.fixed_blocks.contains(block))
                .collect();
            if !outside.is_empty() {
                tracing::warn!(
                    "the {} plan for k = {} removes blocks {outside:?}, which the surrogate was \
                     fitted with fixed: no predicted value",
                    plan.method,
                    plan.removed.len()
                );
                continue;
            }
            let mask = Mask::from_removed(options.num_blocks, &plan.removed)
                .map_err(|e| SelectionError::BadOption(e.to_string()))?;
            plan.predicted = on.surrogate.predict(&[mask]).first().copied();
        }
    }
    Ok(plans)
}

/// The plan with the most blocks removed whose calibration perplexity stays within the target's
/// ratio times the full model's (by its margin), by SLEB or adaptive removal (each k it probes
/// with the settings' `budget`); it costs every distinct mask the search asked for. No block
/// that can go within the ratio is an error that says what the least harmful single removal
/// gives.
fn plan_within(
    method: PlanMethod,
    inputs: &mut PlanInputs<'_>,
    options: &PlanOptions,
    target: &RatioTarget,
) -> Result<Plan, SelectionError> {
    if !method.measures_while_choosing() {
        return Err(ratio_needs_measuring(method));
    }
    let game = inputs
        .game
        .as_deref_mut()
        .ok_or_else(|| needs(method, "--model and --tokens"))?;
    let (fixed, race) = (&options.fixed, options.settings.race.as_ref());
    let search = if method == PlanMethod::Sleb {
        largest_within(game, fixed, target, &mut sleb_chooser(fixed, race))?
    } else {
        let mut chooser = adaptive_chooser(fixed, options.settings.budget, race);
        largest_within(game, fixed, target, &mut chooser)?
    };
    let Some(chosen) = search.chosen() else {
        let least = &search.probes[0];
        return Err(SelectionError::NothingWithin(format!(
            "no block can be removed within {target}: removing the least harmful block alone \
             (block {}) multiplies the calibration perplexity by {:.4}{}",
            least.removed_blocks[0],
            least.ppl_ratio,
            least
                .nll_increase_se
                .filter(|_| target.standard_errors > 0.0)
                .map(|se| format!(" (standard error of the NLL increase {se:.4})"))
                .unwrap_or_default()
        )));
    };
    let name = if method == PlanMethod::Sleb {
        method_names::sleb(race)
    } else {
        method_names::adaptive(race)
    };
    let mut plan = Plan::new(
        name,
        chosen.removed_blocks.clone(),
        search.llm_evaluations as u64,
    );
    // The plan is a measured mask: its value is −NLL.
    plan.measured_nll = Some(-chosen.value);
    Ok(plan)
}

/// One plan per k of the settings' `ks` by `method` (see [`choose_plans`]).
fn plans_for_ks(
    method: PlanMethod,
    inputs: &mut PlanInputs<'_>,
    options: &PlanOptions,
) -> Result<Vec<Plan>, SelectionError> {
    let (num_blocks, fixed) = (options.num_blocks, &options.fixed);
    let settings = &options.settings;
    for &k in &settings.ks {
        removable_blocks(num_blocks, fixed, k)?;
    }
    let k_max = settings.ks.iter().copied().max().unwrap_or(0);
    let surrogate_cost = |on: FittedOn| on.llm_evaluations;
    let mut plans = Vec::new();
    match method {
        PlanMethod::OneShot => {
            let scores = inputs.scores.ok_or_else(|| needs(method, "--scores"))?;
            // Named by its estimator alone (method_names).
            for &k in &settings.ks {
                let removed = one_shot(&scores.scores, k, fixed)?;
                plans.push(Plan::new(&scores.method, removed, scores.llm_evaluations));
            }
        }
        PlanMethod::Iterative | PlanMethod::Search => {
            let on = inputs
                .surrogate
                .ok_or_else(|| needs(method, "--surrogate"))?;
            let shapley = SurrogateShapley::for_fitted(
                on.surrogate,
                settings.permutation_pairs,
                settings.seed,
            );
            let removal = iterative_removal(&shapley, k_max, fixed)?;
            if method == PlanMethod::Iterative {
                for &k in &settings.ks {
                    plans.push(Plan::new(
                        ITERATIVE,
                        removal.removed_blocks(k),
                        surrogate_cost(on),
                    ));
                }
            } else {
                if settings.candidates == 0 {
                    return Err(SelectionError::BadOption(
                        "--candidates must be at least 1".into(),
                    ));
                }
                // The one-shot start: the Shapley values of the players' game.
                let player_shapley = shapley.player_scores(fixed)?;
                let search = SearchOptions {
                    random_starts: settings.random_starts,
                    top_n: settings.candidates,
                    seed: settings.seed,
                    ..SearchOptions::default()
                };
                for &k in &settings.ks {
                    let starts = vec![
                        one_shot(&player_shapley, k, fixed)?,
                        removal.removed_blocks(k),
                    ];
                    let found = surrogate_search(on.surrogate, k, fixed, &starts, &search)?;
                    let mut plan =
                        Plan::new(SEARCH, found[0].removed_blocks.clone(), surrogate_cost(on));
                    plan.candidates = found;
                    plans.push(plan);
                }
            }
        }
        PlanMethod::Sleb => {
            let game = inputs
                .game
                .as_deref_mut()
                .ok_or_else(|| needs(method, "--model and --tokens"))?;
            let result = sleb(game, k_max, fixed, settings.race.as_ref())?;
            for &k in &settings.ks {
                let mut plan = Plan::new(
                    method_names::sleb(settings.race.as_ref()),
                    result.removed_blocks(k),
                    0,
                );
                // SLEB ran the plan's mask in its last step, and its value there is −NLL.
                if k > 0 {
                    plan.llm_evaluations = result.evaluations_after[k - 1] as u64;
                    plan.measured_nll = Some(-result.values_after[k - 1]);
                }
                plans.push(plan);
            }
        }
        PlanMethod::Adaptive => {
            let game = inputs
                .game
                .as_deref_mut()
                .ok_or_else(|| needs(method, "--model and --tokens"))?;
            // One cache for every k: the singles and the greedy's first steps are shared.
            let mut cached = CachedGame::new(game);
            let players = removable_blocks(num_blocks, fixed, k_max)?.len();
            for &k in &settings.ks {
                let adaptive = AdaptiveOptions {
                    race: settings.race,
                    ..AdaptiveOptions::with_budget(settings.budget.resolve(players, k))
                };
                let result = adaptive_removal(&mut cached, k, fixed, &adaptive)?;
                let mut plan = Plan::new(
                    method_names::adaptive(settings.race.as_ref()),
                    result.removed_blocks,
                    result.llm_evaluations as u64,
                );
                // The plan is a measured mask: its value is −NLL.
                plan.measured_nll = Some(-result.value);
                plans.push(plan);
            }
        }
        PlanMethod::AngularRun => {
            let stats = inputs
                .block_stats
                .ok_or_else(|| needs(method, "--block-stats"))?;
            for &k in &settings.ks {
                let run = best_angular_run(stats, k, fixed)?;
                plans.push(Plan::new(method_names::ANGULAR_RUN, run.removed_blocks, 1));
            }
        }
        PlanMethod::FromPlan => {
            let table = inputs
                .earlier_plans
                .ok_or_else(|| needs(method, "--plans"))?;
            for &k in &settings.ks {
                plans.push(earlier_plan(table, k, inputs.plan_method, fixed)?);
            }
        }
    }
    Ok(plans)
}

/// Whether a plan recorded with method `recorded` is one `--plan-method asked` names: by its
/// name, a table written before the names were made one by the name it has now
/// (`search` for `surrogate-search`, `block-influence` for `one-shot:block-influence`).
fn is_plan_method(recorded: &str, asked: &str) -> bool {
    method_names::current_name(recorded) == asked
}

/// The distinct methods of `rows` by their current names (what `--plan-method` takes), in
/// table order, for an error that says what to give.
fn methods_of<'a>(rows: impl Iterator<Item = &'a PlanRow>) -> String {
    let methods: Vec<&str> = rows
        .map(|row| method_names::current_name(&row.method))
        .collect();
    layerprune_core::distinct(&methods).join(", ")
}

/// From-plan without `ks`: every plan of the earlier table (of `inputs.plan_method` where
/// given), in ascending k.
fn every_earlier_plan(
    inputs: &PlanInputs<'_>,
    options: &PlanOptions,
) -> Result<Vec<Plan>, SelectionError> {
    let table = inputs
        .earlier_plans
        .ok_or_else(|| needs(PlanMethod::FromPlan, "--plans"))?;
    let ks = earlier_ks(table, inputs.plan_method);
    if ks.is_empty() {
        return Err(SelectionError::NoSuchPlan(match inputs.plan_method {
            Some(m) if !table.rows.is_empty() => format!(
                "the plan table holds no plan with method {m} (its methods: {})",
                methods_of(table.rows.iter())
            ),
            _ => "the plan table holds no plan".into(),
        }));
    }
    ks.into_iter()
        .map(|k| earlier_plan(table, k, inputs.plan_method, &options.fixed))
        .collect()
}

/// The ks of an earlier plan table's plans (of `plan_method` where given), ascending, each
/// once: what from-plan without `ks` takes.
pub(crate) fn earlier_ks(table: &PlanTable, plan_method: Option<&str>) -> Vec<usize> {
    let mut ks: Vec<usize> = table
        .rows
        .iter()
        .filter(|row| plan_method.is_none_or(|m| is_plan_method(&row.method, m)))
        .map(|row| row.k as usize)
        .collect();
    ks.sort_unstable();
    ks.dedup();
    ks
}

/// The one plan of an earlier plan table that removes `k` blocks (by `method` where several do).
fn earlier_plan(
    table: &PlanTable,
    k: usize,
    method: Option<&str>,
    fixed: &[usize],
) -> Result<Plan, SelectionError> {
    let rows: Vec<&PlanRow> = table
        .rows
        .iter()
        .filter(|row| row.k as usize == k)
        .filter(|row| method.is_none_or(|m| is_plan_method(&row.method, m)))
        .collect();
    let row = match rows.as_slice() {
        [row] => *row,
        [] => {
            let with_k = || table.rows.iter().filter(|row| row.k as usize == k);
            return Err(SelectionError::NoSuchPlan(match method {
                Some(m) if with_k().next().is_some() => format!(
                    "no plan removes {k} blocks with method {m} (the methods of those that do: \
                     {})",
                    methods_of(with_k())
                ),
                Some(m) => format!("no plan removes {k} blocks with method {m}"),
                None => format!("no plan removes {k} blocks"),
            }));
        }
        _ => {
            return Err(SelectionError::NoSuchPlan(format!(
                "{} plans remove {k} blocks (methods {}); choose one with --plan-method",
                rows.len(),
                methods_of(rows.iter().copied())
            )))
        }
    };
    let removed: Vec<usize> = row.removed_blocks.iter().map(|&b| b as usize).collect();
    if let Some(block) = removed.iter().find(|b| fixed.contains(b)) {
        return Err(SelectionError::NoSuchPlan(format!(
            "the {} plan for k = {k} removes fixed block {block}",
            method_names::current_name(&row.method)
        )));
    }
    // Recorded again by its current name: a table written before the names were made one is
    // not carried on into the new table.
    let name = method_names::current_name(&row.method);
    let mut plan = Plan::new(name, removed, row.llm_evaluations);
    plan.predicted = row.predicted_value;
    plan.cost_is_recorded = true;
    Ok(plan)
}

/// Measures every plan not measured yet through `game` (values are −NLL), in one batch so
/// masks share prefixes. A search plan measures its candidates and keeps the best measured.
pub fn measure_plans(
    game: &mut dyn Game,
    plans: &mut [Plan],
    num_blocks: usize,
) -> Result<(), SelectionError> {
    let mask_of = |removed: &[usize]| {
        Mask::from_removed(num_blocks, removed)
            .map_err(|e| SelectionError::BadOption(e.to_string()))
    };
    let mut masks: Vec<Mask> = Vec::new();
    for plan in plans.iter().filter(|p| p.measured_nll.is_none()) {
        if plan.candidates.is_empty() {
            masks.push(mask_of(&plan.removed)?);
        } else {
            for candidate in &plan.candidates {
                masks.push(mask_of(&candidate.removed_blocks)?);
            }
        }
    }
    masks.sort();
    masks.dedup();
    if masks.is_empty() {
        return Ok(());
    }
    let values = values_checked(game, &masks)?;
    let nll_of = |removed: &[usize]| -> Result<f64, SelectionError> {
        let mask = mask_of(removed)?;
        let position = masks
            .binary_search(&mask)
            .map_err(|_| SelectionError::BadOption(format!("mask {mask} was not measured")))?;
        Ok(-values[position])
    };
    for plan in plans.iter_mut().filter(|p| p.measured_nll.is_none()) {
        if plan.candidates.is_empty() {
            plan.measured_nll = Some(nll_of(&plan.removed)?);
            if !plan.cost_is_recorded {
                plan.llm_evaluations = plan.llm_evaluations.saturating_add(1);
            }
        } else {
            // The lowest NLL measured; a diverged candidate (NaN) is never the best, nor does
            // it stop a later one from being (`x < NaN` is false).
            let mut best: Option<(f64, usize)> = None;
            for (index, candidate) in plan.candidates.iter().enumerate() {
                let nll = nll_of(&candidate.removed_blocks)?;
                let better = match best {
                    None => true,
                    Some((b, _)) => nll < b || (b.is_nan() && !nll.is_nan()),
                };
                if better {
                    best = Some((nll, index));
                }
            }
            if let Some((nll, index)) = best {
                // The plan's prediction was the best predicted candidate's: the winner has its own.
                let winner = &plan.candidates[index];
                plan.removed = winner.removed_blocks.clone();
                plan.predicted = Some(winner.predicted);
                plan.measured_nll = Some(nll);
            }
            plan.llm_evaluations = plan
                .llm_evaluations
                .saturating_add(plan.candidates.len() as u64);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names plans are recorded under are not all --method names: each says how it runs
    /// (it was a bare "unknown method" for the recommended method's own name).
    #[test]
    fn a_recorded_method_name_given_to_method_says_how_it_runs() {
        let said = |name: &str| name.parse::<PlanMethod>().unwrap_err();
        assert!(said("adaptive-raced").contains("`--method adaptive --race-se 3`"));
        assert!(said("sleb-raced").contains("`--method sleb --race-se 3`"));
        assert!(said("angular").contains("`score-blocks --estimator angular`"));
        assert!(said("surrogate-shapley").contains("`shapley --estimator surrogate-shapley`"));
        assert!(said("adaptiv").ends_with("from-plan"));
    }

    #[test]
    fn a_plan_method_is_named_as_recorded_and_an_old_table_by_the_name_it_has_now() {
        assert!(is_plan_method("sleb-raced", "sleb-raced"));
        assert!(!is_plan_method("sleb-raced", "sleb"));
        assert!(is_plan_method(SEARCH, "search"));
        assert!(is_plan_method("surrogate-search", "search"));
        assert!(is_plan_method("iterative-surrogate", ITERATIVE));
        assert!(is_plan_method("block-influence", "block-influence"));
        assert!(is_plan_method(
            "one-shot:block-influence",
            "block-influence"
        ));
        assert!(!is_plan_method("one-shot:block-influence", "angular"));
        assert!(!is_plan_method("one-shot:angular", "one-shot"));
        assert!(is_plan_method("shapley", "surrogate-shapley"));
    }

    #[test]
    fn asked_settings_get_the_defaults_and_a_setting_the_method_ignores_is_refused() {
        let asked = AskedSettings {
            ks: vec![3, 6, 3],
            ..AskedSettings::default()
        };
        let settings = asked.resolve(PlanMethod::Adaptive).unwrap();
        assert_eq!(
            settings,
            PlanSettings {
                ks: vec![3, 6],
                ..PlanSettings::default()
            }
        );
        // A ratio search gives each k tried half of SLEB's cost, and races take their windows.
        let ratio = AskedSettings {
            max_ppl_ratio: Some(1.5),
            race_se: Some(3.0),
            ..AskedSettings::default()
        }
        .resolve(PlanMethod::Sleb)
        .unwrap();
        assert_eq!(ratio.budget, Budget::OfSleb(0.5));
        assert_eq!(
            ratio.race.unwrap().first_windows,
            Race::default().first_windows
        );
        assert_eq!(ratio.ratio_target.unwrap().standard_errors, 0.0);

        let refused = |asked: AskedSettings, method: PlanMethod, says: &str| {
            let err = asked.resolve(method).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        };
        let with = |f: fn(&mut AskedSettings)| {
            let mut asked = AskedSettings::default();
            f(&mut asked);
            asked
        };
        refused(
            with(|a| a.budget = Some(Budget::Least)),
            PlanMethod::Sleb,
            "--budget is for --method adaptive; --method sleb would ignore it",
        );
        refused(
            with(|a| a.seed = Some(1)),
            PlanMethod::OneShot,
            "--seed is for --method iterative or --method search",
        );
        refused(
            with(|a| a.plan_method = true),
            PlanMethod::Adaptive,
            "--plan-method is for --method from-plan",
        );
        refused(
            with(|a| a.max_ppl_ratio = Some(1.5)),
            PlanMethod::OneShot,
            "measures its plans on the model",
        );
        refused(
            with(|a| a.max_ppl_ratio_se = Some(2.0)),
            PlanMethod::Adaptive,
            "it needs --max-ppl-ratio",
        );
        refused(
            with(|a| a.race_windows = Some(4)),
            PlanMethod::Adaptive,
            "it needs --race-se",
        );
        refused(
            with(|a| a.race_se = Some(3.0)),
            PlanMethod::Search,
            "not search",
        );
    }
}
