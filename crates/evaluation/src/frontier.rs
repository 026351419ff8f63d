//! The frontier run (the `frontier` stage): for each calibration set, every selection method
//! (`layerprune_selection::frontier`) plays the model on those tokens through one cache of
//! evaluations (`cache-calibration-NAME.parquet` in the output folder), each charged for the
//! distinct masks it asked for; then every distinct plan is measured on each held-out token
//! table (its own cache), which no method saw. Writes `frontier.csv`, one row per (method, k,
//! calibration set, budget). Run again with the same settings, it runs only the masks its
//! caches do not have.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use layerprune_core::{Game, Mask};
use layerprune_runtime::{EvalOptions, LayeredModel, Manifest, RuntimeOptions};
use layerprune_selection::frontier::{
    frontier, Budget, FrontierConfig, FrontierMethod, FrontierPoint,
};
use layerprune_selection::method_names::{self, RECOMMENDED};
use layerprune_selection::{angular_distance_scores, block_influence_scores, BlockScores, Race};
use layerprune_tables::{
    read_tokens, resume_evaluations, resume_refusal, Provenance, TableError, TableErrorKind,
    TableKind, TokenTable,
};

use crate::{block_stats_table, CachedLlm, EvaluationCache, MeasuredOtherwise};

/// What a frontier run reads, plays and writes.
#[derive(Clone, Debug)]
pub struct FrontierRun {
    /// Layered model folder.
    pub model: PathBuf,
    /// Calibration token tables by name (methods play the model on them).
    pub calibration: Vec<(String, PathBuf)>,
    /// Held-out token tables by name (each plan is measured on them).
    pub heldout: Vec<(String, PathBuf)>,
    /// Numbers of blocks to remove.
    pub ks: Vec<usize>,
    /// Blocks never removed.
    pub fixed: Vec<usize>,
    /// The methods played (each at every k; adaptive at every budget).
    pub methods: Vec<FrontierMethod>,
    /// Budgets of the adaptive method.
    pub budgets: Vec<Budget>,
    /// The quadratic-surrogate Shapley method on this many stratified masks (at least 1 where
    /// `methods` has it; [`FrontierRun::prepare`] refuses 0 there).
    pub shapley_masks: usize,
    pub seed: u64,
    /// Folder of the caches and frontier.csv.
    pub out_dir: PathBuf,
    /// What a cache in `out_dir` measured on another device or arithmetic gets.
    pub cache_measured_otherwise: MeasuredOtherwise,
    pub runtime: RuntimeOptions,
    /// How the model is evaluated (windows a pass, the prefix cache, masks a block call).
    pub evaluation: EvalOptions,
    /// Provenance of the caches (the model and token table are added).
    pub provenance: Provenance,
}

/// The stage's name, as its caches record it (their provenance's `tool`).
pub const STAGE: &str = "frontier";

/// The columns frontier.csv (and its partial copy) starts with, in every version: what tells
/// a file a rerun may replace from a user's own ([`PreparedFrontier::outputs`]).
pub const CSV_HEADER_START: &str = "method,k,calibration_set,";

/// The budgets of adaptive removal when none are given: the least it accepts, a quarter, half
/// and all of SLEB's cost at each k, and 2,000 distinct masks (near exhaustive at the demo's k).
pub const DEFAULT_BUDGETS: [Budget; 5] = [
    Budget::Least,
    Budget::OfSleb(0.25),
    Budget::OfSleb(0.5),
    Budget::OfSleb(1.0),
    Budget::Evaluations(2000),
];

/// The stratified masks the surrogate-shapley method is fitted on when not given.
pub const DEFAULT_SHAPLEY_MASKS: usize = 200;

/// The method settings as asked for (`None`: not given), before [`FrontierAsked::resolve`]
/// fills in the defaults and refuses what would be ignored.
#[derive(Clone, Debug, Default)]
pub struct FrontierAsked {
    pub methods: Option<Vec<FrontierMethod>>,
    pub budgets: Option<Vec<Budget>>,
    pub shapley_masks: Option<usize>,
    pub seed: Option<u64>,
}

/// The methods a run plays and their settings, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct FrontierSettings {
    pub methods: Vec<FrontierMethod>,
    pub budgets: Vec<Budget>,
    pub shapley_masks: usize,
    pub seed: u64,
}

impl FrontierAsked {
    /// Every method unless some are named; `shapley_masks = 0` plays no Shapley method (taken
    /// out of the default, refused where `methods` names it: it would be left out of
    /// frontier.csv without a word). A setting of a method that is not played would be
    /// ignored: refused, naming the method (in the words of `frontier`'s flags).
    pub fn resolve(self) -> Result<FrontierSettings> {
        let shapley_off = self.shapley_masks == Some(0);
        let methods: Vec<FrontierMethod> = match self.methods {
            Some(methods) => methods,
            None => FrontierMethod::ALL
                .into_iter()
                .filter(|method| !(shapley_off && *method == FrontierMethod::SurrogateShapley))
                .collect(),
        };
        refuse_shapley_without_masks(&methods, self.shapley_masks.unwrap_or(1))?;
        if shapley_off && self.seed.is_some() {
            bail!(
                "--seed seeds the masks of surrogate-shapley, which --shapley-masks 0 does not \
                 play; leave --seed out"
            );
        }
        let plays = |method: FrontierMethod| methods.contains(&method);
        let adaptive = plays(FrontierMethod::Adaptive) || plays(FrontierMethod::AdaptiveRaced);
        for (flag, given, played, method) in [
            (
                "--budgets",
                self.budgets.is_some(),
                adaptive,
                "adaptive or adaptive-raced",
            ),
            (
                "--shapley-masks",
                self.shapley_masks.is_some() && !shapley_off,
                plays(FrontierMethod::SurrogateShapley),
                "surrogate-shapley",
            ),
            (
                "--seed",
                self.seed.is_some(),
                plays(FrontierMethod::SurrogateShapley),
                "surrogate-shapley",
            ),
        ] {
            if given && !played {
                bail!(
                    "{flag} is a setting of the {method} method, which --methods does not play \
                     (add it, or leave {flag} out)"
                );
            }
        }
        Ok(FrontierSettings {
            methods,
            budgets: self.budgets.unwrap_or_else(|| DEFAULT_BUDGETS.to_vec()),
            shapley_masks: self.shapley_masks.unwrap_or(DEFAULT_SHAPLEY_MASKS),
            seed: self.seed.unwrap_or(0),
        })
    }
}

/// Refuses surrogate-shapley among `methods` with no masks to fit its surrogate on.
fn refuse_shapley_without_masks(methods: &[FrontierMethod], shapley_masks: usize) -> Result<()> {
    if methods.contains(&FrontierMethod::SurrogateShapley) && shapley_masks == 0 {
        bail!(
            "--methods names surrogate-shapley, which --shapley-masks 0 does not play: give it 1 \
             or more masks, or leave it out of --methods"
        );
    }
    Ok(())
}

/// Refuses a set's name that is not letters, digits, '-' or '_': it becomes part of a file
/// name (`cache-calibration-NAME.parquet`) and a column of frontier.csv (`NAME_ppl`), so a
/// `/`, `..` or `,` would write outside the output folder or break the table.
pub fn check_set_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err("the name must be letters, digits, '-' or '_'".into());
    }
    Ok(())
}

/// A run with its token tables read and checked (held-out text disjoint from calibration).
pub struct PreparedFrontier {
    run: FrontierRun,
    calibration: Vec<(String, TokenTable)>,
    heldout: Vec<(String, TokenTable)>,
    /// The model folder and every token table.
    pub inputs: Vec<PathBuf>,
}

/// The run's report lines (what each set ran, what was written), as it goes.
pub type Report<'a> = &'a mut dyn FnMut(&str);

impl FrontierRun {
    /// Reads the token tables and refuses held-out text that shares a window with calibration.
    pub fn prepare(mut self) -> Result<PreparedFrontier> {
        // A k, method or budget listed twice is played once: frontier.csv has one row per
        // (method, k, set, budget).
        self.ks = layerprune_core::distinct(&self.ks);
        self.methods = layerprune_core::distinct(&self.methods);
        self.budgets = layerprune_core::distinct(&self.budgets);
        if self.ks.contains(&0) {
            bail!("--k 0 removes no block: give numbers of blocks to remove, 1 or more");
        }
        // Left out of frontier.csv without a word otherwise ([`FrontierAsked::resolve`] takes
        // it out of the default methods).
        refuse_shapley_without_masks(&self.methods, self.shapley_masks)?;
        if let Some((name, _)) = self.heldout.iter().find(|(name, _)| name == "calibration") {
            bail!(
                "--heldout: the name {name} would make its column, {name}_ppl, the calibration \
                 perplexity's in frontier.csv; choose another"
            );
        }
        for (flag, sets) in [
            ("--calibration", &self.calibration),
            ("--heldout", &self.heldout),
        ] {
            for (i, (name, _)) in sets.iter().enumerate() {
                check_set_name(name)
                    .map_err(|problem| anyhow::anyhow!("{flag} {name:?}: {problem}"))?;
                if sets[..i].iter().any(|(earlier, _)| earlier == name) {
                    bail!(
                        "{flag}: the name {name} is given to two token tables; each needs its \
                         own (it names the set's cache and its rows)"
                    );
                }
            }
        }
        let inputs: Vec<PathBuf> = self
            .calibration
            .iter()
            .chain(&self.heldout)
            .map(|(_, path)| path.clone())
            .chain([self.model.clone()])
            .collect();
        let read = |(name, path): &(String, PathBuf)| -> Result<(String, TokenTable)> {
            Ok((name.clone(), read_tokens(path)?))
        };
        let calibration: Vec<(String, TokenTable)> =
            self.calibration.iter().map(read).collect::<Result<_>>()?;
        let heldout: Vec<(String, TokenTable)> =
            self.heldout.iter().map(read).collect::<Result<_>>()?;
        for (name, held) in &heldout {
            if let Some((calib, _)) = calibration
                .iter()
                .find(|(_, c)| c.windows.iter().any(|w| held.windows.contains(w)))
            {
                bail!("held-out table {name} shares a window with calibration set {calib}: the evaluation text must be disjoint from calibration");
            }
        }
        Ok(PreparedFrontier {
            run: self,
            calibration,
            heldout,
            inputs,
        })
    }
}

impl PreparedFrontier {
    /// Refuses, from the model's manifest alone (before any folder, cache or session is
    /// made): a k the model cannot lose (with the fixed blocks kept), a `--budgets` number
    /// below what adaptive removal needs at one of the k, and a token table the model cannot
    /// run (an id outside its vocabulary: tokenized for another model; another tokenizer's;
    /// windows longer than the model takes).
    fn check_against_model(&self) -> Result<()> {
        let run = &self.run;
        let manifest = Manifest::load(&run.model)?;
        let adaptive = run
            .methods
            .iter()
            .any(|m| matches!(m, FrontierMethod::Adaptive | FrontierMethod::AdaptiveRaced));
        let adaptive_budgets = if adaptive { &run.budgets[..] } else { &[] };
        layerprune_selection::check_plan_request(
            manifest.num_blocks,
            &run.fixed,
            &run.ks,
            adaptive_budgets,
            "--budgets",
        )
        .with_context(|| format!("{}", run.model.display()))?;
        // A cache left by a run of another model or token table is refused now, not after the
        // sets before it have run (and rewritten the frontier's table without it).
        let model_id = layerprune_runtime::model_id(&run.model)?;
        // The sets' tokenizers, each checked once: a check may read and parse the model's
        // tokenizer, and the sets are usually all of one.
        let mut tokenizers_checked: Vec<&str> = Vec::new();
        for (((flag, sets), tables), kind) in [
            ("--calibration", &run.calibration),
            ("--heldout", &run.heldout),
        ]
        .into_iter()
        .zip([&self.calibration, &self.heldout])
        .zip(["calibration", "heldout"])
        {
            for ((name, path), (_, table)) in sets.iter().zip(tables) {
                let with_model = || {
                    crate::tokens_with_model(
                        format_args!("{flag} {name}={}", path.display()),
                        &run.model,
                    )
                };
                layerprune_runtime::check_token_windows(&table.windows, manifest.vocab_size)
                    .and_then(|()| {
                        let id = table.tokenizer_sha256.as_str();
                        if tokenizers_checked.contains(&id) {
                            return Ok(());
                        }
                        layerprune_runtime::check_tokenizer(&manifest, &run.model, id)?;
                        tokenizers_checked.push(id);
                        Ok(())
                    })
                    .with_context(with_model)?;
                // Non-empty windows of one length now (check_token_windows): longer than the
                // model takes is refused here, in the same words, not when the set's turn
                // comes and the model is open.
                manifest
                    .check_window_length(&run.model, table.windows[0].len())
                    .with_context(with_model)?;
                let cache = cache_path(&run.out_dir, kind, name, &self.inputs)?;
                match resume_evaluations(
                    &cache,
                    manifest.num_blocks,
                    &model_id,
                    &table.dataset_id,
                    &run.runtime
                        .evaluated_on(&run.evaluation.for_windows(&table.windows, &manifest)),
                ) {
                    // Started again when its set runs, which says so.
                    Err(error)
                        if error.kind == TableErrorKind::MeasuredOtherwise
                            && run.cache_measured_otherwise == MeasuredOtherwise::Replace => {}
                    resumed => {
                        resumed.map_err(|error| {
                            let error = anyhow::Error::from(error);
                            let context = cache_refused(flag, name, path, &cache, &error);
                            error.context(context)
                        })?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The files the run writes, each with its table kind if it is a table: frontier.csv and
    /// its partial copy (`None`: CSV files whose header starts [`CSV_HEADER_START`]) and an
    /// evaluation table (the cache) per token table (refused where a cache would replace an
    /// input).
    pub fn outputs(&self) -> Result<Vec<(PathBuf, Option<TableKind>)>> {
        let out_dir = &self.run.out_dir;
        let mut outputs = vec![
            (out_dir.join(FRONTIER_CSV), None),
            (out_dir.join(PARTIAL_CSV), None),
        ];
        for (kind, sets) in [
            ("calibration", &self.calibration),
            ("heldout", &self.heldout),
        ] {
            for (name, _) in sets {
                outputs.push((
                    cache_path(out_dir, kind, name, &self.inputs)?,
                    Some(TableKind::Evaluations),
                ));
            }
        }
        Ok(outputs)
    }

    /// Plays every method on each calibration set and measures the plans on every held-out
    /// table; writes frontier.csv when every set is done (until then the sets done so far are
    /// in frontier.partial.csv, so a run killed part-way leaves no frontier.csv that reads as
    /// finished). Returns its path.
    pub fn run(self, report: Report<'_>) -> Result<PathBuf> {
        self.check_against_model()?;
        let PreparedFrontier {
            run,
            calibration,
            heldout,
            inputs,
        } = self;
        let mut model = LayeredModel::open(&run.model, &run.runtime)?;
        let num_blocks = model.num_blocks();
        let out = run.out_dir.join(FRONTIER_CSV);
        let partial = run.out_dir.join(PARTIAL_CSV);
        // An earlier run's table is replaced at the end; removed now (the checks passed), so
        // a run killed part-way does not leave it looking like this run's.
        remove_if_there(&out)?;
        let mut rows: Vec<(String, FrontierPoint)> = Vec::new();
        let mut full_rows: Vec<(String, f64)> = Vec::new();
        // Held-out NLL of every mask measured so far, per held-out table.
        let mut heldout_nll: Vec<HashMap<Mask, f64>> = vec![HashMap::new(); heldout.len()];
        // The LLM on a token table through its cache in the output folder (`kind`: calibration
        // or heldout), and the cache's path.
        let open_cache = |model: LayeredModel,
                          tokens: &TokenTable,
                          kind: &str,
                          name: &str|
         -> Result<(CachedLlm, PathBuf)> {
            let path = cache_path(&run.out_dir, kind, name, &inputs)?;
            // Checked before any set ran (check_against_model), but read again here: what is
            // wrong with the cache is said of the cache, as there, not of the token table.
            let sets = if kind == "calibration" {
                &run.calibration
            } else {
                &run.heldout
            };
            let tokens_path = sets
                .iter()
                .find(|(set, _)| set == name)
                .map(|(_, path)| path.as_path())
                .expect("every set opened is one of the run's");
            let cache = EvaluationCache::open(
                &path,
                &model,
                tokens,
                &run.evaluation,
                run.cache_measured_otherwise,
            )
            .map_err(|error| {
                let context = cache_refused(&format!("--{kind}"), name, tokens_path, &path, &error);
                error.context(context)
            })?;
            let game = CachedLlm::open_with(
                model,
                tokens,
                run.evaluation.clone(),
                Some(cache),
                run.provenance.clone(),
            )
            .with_context(|| {
                crate::tokens_with_model(
                    format_args!("--{kind} {name}={}", tokens_path.display()),
                    &run.model,
                )
            })?;
            Ok((game, path))
        };
        for (set, (name, tokens)) in calibration.iter().enumerate() {
            let (mut game, path) = open_cache(model, tokens, "calibration", name)?;
            let runs = |method| run.methods.contains(&method);
            let config = FrontierConfig {
                ks: run.ks.clone(),
                fixed: run.fixed.clone(),
                adaptive_budgets: run.budgets.clone(),
                adaptive: runs(FrontierMethod::Adaptive),
                adaptive_race: runs(FrontierMethod::AdaptiveRaced).then(Race::default),
                one_pass: one_pass_scores(&mut game, tokens, &run.methods)?,
                reverse: runs(FrontierMethod::Reverse),
                leave_one_out: runs(FrontierMethod::LeaveOneOut),
                sleb: runs(FrontierMethod::Sleb),
                sleb_race: runs(FrontierMethod::SlebRaced).then(Race::default),
                // At least 1 (prepare refuses 0 with the method).
                shapley_masks: runs(FrontierMethod::SurrogateShapley).then_some(run.shapley_masks),
                seed: run.seed,
            };
            let points = frontier(&mut game, &config)?;
            let full_nll = game
                .nll(&Mask::full(num_blocks))
                .context("full model not measured")?;
            report(&format!(
                "frontier: calibration set {name}: {} points; {} masks run now{} ({:.0} s), cache {}",
                points.len(),
                game.ran,
                game.windows_ran_note(),
                game.seconds,
                path.display()
            ));
            model = game.into_model()?;

            // This set's plans (and the full model) on every held-out table, which no method
            // saw.
            let mut masks: Vec<Mask> = vec![Mask::full(num_blocks)];
            for point in &points {
                masks.push(Mask::from_removed(num_blocks, &point.removed_blocks)?);
            }
            masks.sort();
            masks.dedup();
            for ((held_name, held_tokens), nll_of) in heldout.iter().zip(&mut heldout_nll) {
                let (mut game, _) = open_cache(model, held_tokens, "heldout", held_name)?;
                Game::values(&mut game, &masks).map_err(anyhow::Error::msg)?;
                report(&format!(
                    "frontier: {name}'s {} plans on held-out {held_name}: {} masks run now ({:.0} s)",
                    masks.len(),
                    game.ran,
                    game.seconds
                ));
                for mask in &masks {
                    nll_of.insert(mask.clone(), game.nll(mask).unwrap_or(f64::NAN));
                }
                model = game.into_model()?;
            }
            full_rows.push((name.clone(), full_nll));
            rows.extend(points.into_iter().map(|p| (name.clone(), p)));
            // Written after every calibration set, so a long run's finished sets are readable:
            // under another name until the last, so that only a finished run has frontier.csv.
            let last = set + 1 == calibration.len();
            let csv = frontier_csv(&rows, &full_rows, &heldout, &heldout_nll, num_blocks)?;
            let written = if last { &out } else { &partial };
            layerprune_tables::atomic_write(written, |file| {
                use std::io::Write;
                file.write_all(csv.as_bytes())?;
                Ok(())
            })
            .with_context(|| format!("writing {}", written.display()))?;
            report(&format!(
                "wrote {} ({} rows{})",
                written.display(),
                rows.len() + full_rows.len(),
                if last { "" } else { "; the sets done so far" }
            ));
        }
        remove_if_there(&partial)?;
        Ok(out)
    }
}

fn remove_if_there(path: &Path) -> Result<()> {
    layerprune_core::remove_file_if_there(path)
        .with_context(|| format!("removing {}", path.display()))
}

/// The frontier's table, written when every calibration set is done.
const FRONTIER_CSV: &str = "frontier.csv";
/// The calibration sets done so far, while the run goes (removed when frontier.csv is written).
const PARTIAL_CSV: &str = "frontier.partial.csv";

/// The context of a refused cache: the set whose cache it is (`flag` `name`=`tokens`) and what
/// to do; the error under it names the cache file and what differs. A cache that cannot be read
/// at all (`cache`, cut short) gets the words every stage gives a damaged checkpoint or cache
/// ([`resume_refusal`]), which name it.
fn cache_refused(
    flag: &str,
    name: &str,
    tokens: &Path,
    cache: &Path,
    error: &anyhow::Error,
) -> String {
    resume_refusal(
        error.downcast_ref::<TableError>(),
        &format!(
            "the cache {} of {flag} {name}={}",
            cache.display(),
            tokens.display()
        ),
        "choose another --out-dir",
        || {
            format!(
                "the cache of {flag} {name}={} is not one this run can use (remove it, or \
                 choose another --out-dir)",
                tokens.display()
            )
        },
    )
}

/// The cache of one token table in the output folder: `cache-KIND-NAME.parquet`, never one of
/// the inputs (a cache is rewritten as the run goes).
fn cache_path(out_dir: &Path, kind: &str, name: &str, inputs: &[PathBuf]) -> Result<PathBuf> {
    let path = out_dir.join(format!("cache-{kind}-{name}.parquet"));
    if let Ok(cache) = path.canonicalize() {
        if let Some(input) = inputs.iter().find(|input| {
            input
                .canonicalize()
                .is_ok_and(|i| cache.starts_with(&i) || i == cache)
        }) {
            bail!(
                "{}: the cache of {kind} set {name} would overwrite the input {}; choose another --out-dir",
                path.display(),
                input.display()
            );
        }
    }
    Ok(path)
}

/// ShortGPT's block influence and the angular distance, those of them in `methods`, from one
/// pass of the full model over the calibration tokens (one LLM evaluation: the full model's
/// mask); no pass when neither is.
fn one_pass_scores(
    game: &mut CachedLlm,
    tokens: &TokenTable,
    methods: &[FrontierMethod],
) -> Result<Vec<BlockScores>> {
    let one_pass: Vec<FrontierMethod> = [FrontierMethod::BlockInfluence, FrontierMethod::Angular]
        .into_iter()
        .filter(|m| methods.contains(m))
        .collect();
    if one_pass.is_empty() {
        return Ok(Vec::new());
    }
    let model_id = game.evaluator().model().model_id().to_string();
    let table = block_stats_table(game.evaluator(), 1, &model_id, &tokens.dataset_id)?;
    one_pass
        .into_iter()
        .map(|method| {
            Ok(match method {
                FrontierMethod::BlockInfluence => block_influence_scores(&table)?,
                _ => angular_distance_scores(&table)?,
            })
        })
        .collect()
}

/// `method,k,calibration_set,llm_evaluations,removed_blocks,calibration_ppl,<heldout>_ppl…,recommended,budget,budget_spec`
/// (`budget_spec`: the `--budgets` entries that came to `budget` at that k, space separated).
fn frontier_csv(
    rows: &[(String, FrontierPoint)],
    full_rows: &[(String, f64)],
    heldout: &[(String, TokenTable)],
    heldout_nll: &[HashMap<Mask, f64>],
    num_blocks: usize,
) -> Result<String> {
    let mut out = format!("{CSV_HEADER_START}llm_evaluations,removed_blocks,calibration_ppl");
    for (name, _) in heldout {
        write!(out, ",{name}_ppl")?;
    }
    out.push_str(",recommended,budget,budget_spec\n");
    let heldout_ppl = |mask: &Mask| -> String {
        heldout_nll
            .iter()
            .map(|m| format!(",{:.4}", m.get(mask).copied().unwrap_or(f64::NAN).exp()))
            .collect()
    };
    for (name, full_nll) in full_rows {
        let mask = Mask::full(num_blocks);
        writeln!(
            out,
            "{},0,{name},1,,{:.4}{},false,,",
            method_names::FULL_MODEL,
            full_nll.exp(),
            heldout_ppl(&mask)
        )?;
    }
    for (name, point) in rows {
        let mask = Mask::from_removed(num_blocks, &point.removed_blocks)?;
        let removed: Vec<String> = point.removed_blocks.iter().map(usize::to_string).collect();
        let specs: Vec<String> = point.budget_specs.iter().map(Budget::to_string).collect();
        writeln!(
            out,
            "{},{},{},{},{},{:.4}{},{},{},{}",
            point.method,
            point.k,
            name,
            point.llm_evaluations,
            removed.join(" "),
            (-point.value).exp(),
            heldout_ppl(&mask),
            point.method == RECOMMENDED,
            point.budget.map(|b| b.to_string()).unwrap_or_default(),
            specs.join(" ")
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use layerprune_tables::write_tokens;

    fn tokens(dir: &Path, name: &str, windows: Vec<Vec<u32>>) -> PathBuf {
        let path = dir.join(name);
        let table = TokenTable::new(4, windows, "none", name);
        write_tokens(&path, &table, &Provenance::new("test", "0", vec![])).unwrap();
        path
    }

    fn run(dir: &Path, heldout: Vec<(String, PathBuf)>) -> FrontierRun {
        FrontierRun {
            model: dir.join("model"),
            calibration: vec![(
                "c0".into(),
                tokens(dir, "c0.parquet", vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]]),
            )],
            heldout,
            ks: vec![1],
            fixed: vec![],
            methods: FrontierMethod::ALL.to_vec(),
            budgets: vec![Budget::Least],
            shapley_masks: 8,
            seed: 0,
            out_dir: dir.join("out"),
            cache_measured_otherwise: MeasuredOtherwise::Refuse,
            runtime: RuntimeOptions::default(),
            evaluation: EvalOptions::default(),
            provenance: Provenance::new("frontier", "0", vec![]),
        }
    }

    #[test]
    fn held_out_text_must_be_disjoint_and_the_outputs_are_named_per_set() {
        let dir = tempfile::tempdir().unwrap();
        let shared = tokens(dir.path(), "h.parquet", vec![vec![5, 6, 7, 8]]);
        let message = run(dir.path(), vec![("wt".into(), shared)])
            .prepare()
            .err()
            .unwrap()
            .to_string();
        assert!(
            message.contains("held-out table wt shares a window with calibration set c0"),
            "{message}"
        );

        let own = tokens(dir.path(), "h2.parquet", vec![vec![9, 10, 11, 12]]);
        let prepared = run(dir.path(), vec![("wt".into(), own.clone())])
            .prepare()
            .unwrap();
        assert_eq!(
            prepared.inputs,
            vec![dir.path().join("c0.parquet"), own, dir.path().join("model")]
        );
        let out = dir.path().join("out");
        assert_eq!(
            prepared.outputs().unwrap(),
            vec![
                (out.join("frontier.csv"), None),
                (out.join("frontier.partial.csv"), None),
                (
                    out.join("cache-calibration-c0.parquet"),
                    Some(TableKind::Evaluations)
                ),
                (
                    out.join("cache-heldout-wt.parquet"),
                    Some(TableKind::Evaluations)
                ),
            ]
        );
    }

    #[test]
    fn a_cache_never_replaces_an_input() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("cache-calibration-c0.parquet");
        std::fs::write(&input, b"tokens").unwrap();
        let message = cache_path(dir.path(), "calibration", "c0", &[input])
            .err()
            .unwrap()
            .to_string();
        assert!(message.contains("would overwrite the input"), "{message}");
        assert!(cache_path(dir.path(), "heldout", "c0", &[]).is_ok());
    }

    #[test]
    fn the_csv_has_a_row_per_point_and_a_ppl_column_per_held_out_table() {
        let point = FrontierPoint {
            method: RECOMMENDED.into(),
            k: 1,
            llm_evaluations: 4,
            budget: Some(4),
            budget_specs: vec![Budget::Least, Budget::OfSleb(0.25)],
            removed_blocks: vec![2],
            value: -1.0,
        };
        let heldout = vec![(
            "wt".to_string(),
            TokenTable::new(4, vec![vec![1, 2, 3, 4]], "none", "wt"),
        )];
        let mut nll = HashMap::new();
        nll.insert(Mask::full(3), 0.0);
        nll.insert(Mask::from_removed(3, &[2]).unwrap(), 2.0_f64.ln());
        let csv = frontier_csv(
            &[("c0".into(), point)],
            &[("c0".into(), 0.0)],
            &heldout,
            &[nll],
            3,
        )
        .unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        let recommended = format!("{RECOMMENDED},1,c0,4,2,2.7183,2.0000,true,4,least 0.25sleb");
        assert_eq!(
            lines,
            vec![
                "method,k,calibration_set,llm_evaluations,removed_blocks,calibration_ppl,wt_ppl,recommended,budget,budget_spec",
                "full,0,c0,1,,1.0000,1.0000,false,,",
                recommended.as_str(),
            ]
        );
    }

    /// A library caller gets the command line's defaults and refusals; a set's name that would
    /// leave the output folder or break frontier.csv's columns is refused by `prepare` too.
    #[test]
    fn settings_resolve_as_the_command_line_does_and_set_names_are_checked() {
        let resolved = FrontierAsked::default().resolve().unwrap();
        assert_eq!(resolved.methods, FrontierMethod::ALL.to_vec());
        assert_eq!(resolved.budgets, DEFAULT_BUDGETS.to_vec());
        assert_eq!(
            (resolved.shapley_masks, resolved.seed),
            (DEFAULT_SHAPLEY_MASKS, 0)
        );
        let no_shapley = FrontierAsked {
            shapley_masks: Some(0),
            ..FrontierAsked::default()
        }
        .resolve()
        .unwrap();
        assert!(!no_shapley
            .methods
            .contains(&FrontierMethod::SurrogateShapley));
        let refused = |asked: FrontierAsked| asked.resolve().unwrap_err().to_string();
        assert!(refused(FrontierAsked {
            methods: Some(vec![FrontierMethod::SurrogateShapley]),
            shapley_masks: Some(0),
            ..FrontierAsked::default()
        })
        .contains("--shapley-masks 0 does not play"));
        assert!(refused(FrontierAsked {
            methods: Some(vec![FrontierMethod::Sleb]),
            budgets: Some(vec![Budget::Least]),
            ..FrontierAsked::default()
        })
        .starts_with("--budgets is a setting of the adaptive or adaptive-raced method"));
        assert!(refused(FrontierAsked {
            methods: Some(vec![FrontierMethod::Sleb]),
            seed: Some(3),
            ..FrontierAsked::default()
        })
        .starts_with("--seed is a setting of the surrogate-shapley method"));

        for name in ["c0", "wiki-text_2"] {
            assert_eq!(check_set_name(name), Ok(()));
        }
        let dir = tempfile::tempdir().unwrap();
        for name in ["", "../x", "a,b", "a b"] {
            assert!(check_set_name(name).is_err(), "{name:?}");
            let mut bad = run(dir.path(), vec![]);
            bad.calibration[0].0 = name.into();
            let message = bad.prepare().err().unwrap().to_string();
            assert!(
                message.contains("the name must be letters, digits, '-' or '_'"),
                "{message}"
            );
        }
    }
}
