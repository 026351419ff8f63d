//! The published contribution estimate: for each player i, the mean over masks m of
//! v(m with i kept) − v(m with i removed), the masks drawn stratum by stratum (a stratum is a
//! number of removed players, equal counts per stratum). It is a semivalue restricted to the
//! sampled coalition sizes, *not* the Shapley value, hence its name "stratified-semivalue".
//! With masks uniform on {0,1}^n the same machinery estimates the Banzhaf value.
//!
//! Every base mask costs n + 1 queries (the mask and each single flip of it) and the same
//! base masks serve every player (common random numbers), as in the published code path.

use layerprune_core::{values_checked, CountingGame, Game, Mask};
use rand::Rng;

use crate::progress::Progress;
use crate::values::{distinct_sorted, guarded_se, Spread, StandardErrors, ValueRange, CHUNK};
use crate::{rng_from_seed, Estimates, PlayerGame, Players, ShapleyError, ValueTable};

pub const STRATIFIED_SEMIVALUE: &str = "stratified-semivalue";
pub const BANZHAF_MARGINAL: &str = "banzhaf-marginal";

/// Where the base masks come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MaskDistribution {
    /// Numbers of removed players; inside a stratum the removed set is uniform; strata get
    /// equal numbers of masks (the remainder goes to the first strata).
    Strata(Vec<usize>),
    /// Every player kept with probability ½ independently: the Banzhaf value.
    Uniform,
}

/// The published strata (2, 5, 8, 11, 14 of 32 blocks removed) scaled to `num_players`: the
/// sampler's rule (`StrataSpec::PublishedDefault`), so the semivalue averages over the strata
/// `sample-masks` draws; a game of fewer than 2 players has the one stratum 1.
pub fn published_strata(num_players: usize) -> Vec<usize> {
    layerprune_sampling::resolve_strata(
        &layerprune_sampling::StrataSpec::PublishedDefault,
        num_players,
    )
    .unwrap_or_else(|_| vec![1])
}

/// The base masks and the stratum each came from.
#[derive(Clone, Debug, PartialEq)]
pub struct SemivalueDesign {
    pub num_players: usize,
    pub distribution: MaskDistribution,
    pub base_masks: Vec<Mask>,
    /// Index into the strata (always 0 for the uniform distribution).
    pub stratum_of: Vec<usize>,
}

impl SemivalueDesign {
    fn num_strata(&self) -> usize {
        match &self.distribution {
            MaskDistribution::Strata(strata) => strata.len(),
            MaskDistribution::Uniform => 1,
        }
    }

    /// Every mask whose value the estimate needs, each once, sorted.
    pub fn queries(&self) -> Vec<Mask> {
        distinct_sorted(self.base_masks.iter().flat_map(flips))
    }
}

/// The base mask followed by the mask with each player flipped.
fn flips(base: &Mask) -> impl Iterator<Item = Mask> + '_ {
    std::iter::once(base.clone())
        .chain((0..base.num_blocks()).map(|i| base.with(i, !base.is_kept(i))))
}

/// Largest number of base masks whose queries fit in `budget` distinct evaluations.
pub fn base_masks_for_budget(num_players: usize, budget: usize) -> usize {
    budget / (num_players + 1)
}

/// Draws `num_base_masks` base masks.
pub fn semivalue_design(
    num_players: usize,
    distribution: &MaskDistribution,
    num_base_masks: usize,
    rng: &mut impl Rng,
) -> Result<SemivalueDesign, ShapleyError> {
    if num_base_masks == 0 {
        return Err(ShapleyError::Design(
            "at least one base mask is needed".into(),
        ));
    }
    let mut base_masks = Vec::with_capacity(num_base_masks);
    let mut stratum_of = Vec::with_capacity(num_base_masks);
    match distribution {
        MaskDistribution::Strata(strata) => {
            if strata.is_empty() {
                return Err(ShapleyError::Design("no strata given".into()));
            }
            if let Some(&k) = strata.iter().find(|&&k| k > num_players) {
                return Err(ShapleyError::Design(format!(
                    "stratum {k} removes more players than the {num_players} there are"
                )));
            }
            // A stratum without a base mask would be left out of the average: the estimate
            // would be of another semivalue.
            if num_base_masks < strata.len() {
                return Err(ShapleyError::Design(format!(
                    "{num_base_masks} base masks for {} strata: each stratum needs one at least",
                    strata.len()
                )));
            }
            let mut players: Vec<usize> = (0..num_players).collect();
            for (s, &removed) in strata.iter().enumerate() {
                let count =
                    num_base_masks / strata.len() + usize::from(s < num_base_masks % strata.len());
                for _ in 0..count {
                    // A partial Fisher–Yates shuffle: the first `removed` entries are a
                    // uniform subset.
                    for a in 0..removed {
                        let b = rng.random_range(a..num_players);
                        players.swap(a, b);
                    }
                    base_masks.push(
                        Mask::from_removed(num_players, &players[..removed])
                            .map_err(|e| ShapleyError::Design(e.to_string()))?,
                    );
                    stratum_of.push(s);
                }
            }
        }
        MaskDistribution::Uniform => {
            for _ in 0..num_base_masks {
                base_masks.push(Mask::from_kept(
                    (0..num_players).map(|_| rng.random_bool(0.5)).collect(),
                ));
                stratum_of.push(0);
            }
        }
    }
    Ok(SemivalueDesign {
        num_players,
        distribution: distribution.clone(),
        base_masks,
        stratum_of,
    })
}

/// Per-stratum sums of marginals, filled base mask by base mask.
struct Accumulator {
    num_players: usize,
    count: Vec<f64>,
    /// Each (stratum, player)'s first marginal: the sums are of the marginals' differences from
    /// it, so that marginals all alike have a variance of exactly 0. Sums of the marginals and
    /// their squares, (Σx² − n·mean²)/(n − 1), cancelled to 1e-17 instead (an SE of that size
    /// about an error: mean (error/SE)² 2.6e12 at two players, budget 16).
    first: Vec<Vec<f64>>,
    sum: Vec<Vec<f64>>,
    sum_sq: Vec<Vec<f64>>,
    /// The values met: what counts as rounding in the marginals' spread.
    value_range: ValueRange,
}

impl Accumulator {
    fn new(num_players: usize, num_strata: usize) -> Self {
        Accumulator {
            num_players,
            count: vec![0.0; num_strata],
            first: vec![vec![0.0; num_players]; num_strata],
            sum: vec![vec![0.0; num_players]; num_strata],
            sum_sq: vec![vec![0.0; num_players]; num_strata],
            value_range: ValueRange::default(),
        }
    }

    /// `values[0]` is v(base), `values[1 + i]` is v(base with i flipped).
    fn add(&mut self, stratum: usize, base: &Mask, values: &[f64]) {
        self.value_range.include(values);
        let first = self.count[stratum] == 0.0;
        self.count[stratum] += 1.0;
        for i in 0..self.num_players {
            let marginal = if base.is_kept(i) {
                values[0] - values[1 + i]
            } else {
                values[1 + i] - values[0]
            };
            if first {
                self.first[stratum][i] = marginal;
            }
            let shifted = marginal - self.first[stratum][i];
            self.sum[stratum][i] += shifted;
            self.sum_sq[stratum][i] += shifted * shifted;
        }
    }

    /// The equal-weight mean of stratum means (the plain mean when strata have equal
    /// counts) and its standard error sqrt(Σ_s var_s / n_s) / S, through the guard every SE
    /// passes (`values::guarded_se`: moderated across the players, none where no marginal
    /// spreads beyond the rounding of the game's values); none where a stratum has a single
    /// base mask.
    fn finish(&self, name: &str) -> Estimates {
        let strata: Vec<usize> = (0..self.count.len())
            .filter(|&s| self.count[s] > 0.0)
            .collect();
        let num_strata = strata.len() as f64;
        let mut values = vec![0.0; self.num_players];
        let mut groups = Vec::with_capacity(strata.len());
        let mut degrees_of_freedom = 0.0;
        let mut has_se = true;
        for &s in &strata {
            let n = self.count[s];
            let mut spreads = vec![0.0; self.num_players];
            for (i, spread) in spreads.iter_mut().enumerate() {
                let offset = self.sum[s][i] / n;
                values[i] += (self.first[s][i] + offset) / num_strata;
                if n > 1.0 {
                    *spread = ((self.sum_sq[s][i] - n * offset * offset) / (n - 1.0)).max(0.0);
                }
            }
            has_se &= n > 1.0;
            degrees_of_freedom += n - 1.0;
            groups.push(Spread::uniform(
                1.0 / (n * num_strata * num_strata),
                spreads,
                n - 1.0,
            ));
        }
        // The normal interval, ± 1.96 SE, not Student's t of the moderated variance's degrees
        // of freedom, as the other sampled estimators': with two to four base masks a stratum
        // (budgets 128–256 over 11–12 players) the t interval (2.1–2.6 SE) missed the exact
        // semivalue 2.3–3.9 % of the time on the recorded and synthetic games, the normal one
        // 3.8–5.7 % (200 seeds; docs/estimators.md, "Intervals").
        let std_errors = if has_se {
            guarded_se(
                &groups,
                None,
                degrees_of_freedom,
                self.value_range.rounding(),
            )
            .map(|se| StandardErrors::normal(se.values))
        } else {
            None
        };
        Estimates::new(name, values, std_errors)
    }
}

fn name_of(distribution: &MaskDistribution) -> &'static str {
    match distribution {
        MaskDistribution::Strata(_) => STRATIFIED_SEMIVALUE,
        MaskDistribution::Uniform => BANZHAF_MARGINAL,
    }
}

/// The estimate from evaluated masks (every query of the design must be there).
pub fn semivalue_estimate(
    design: &SemivalueDesign,
    rows: &[(Mask, f64)],
) -> Result<Estimates, ShapleyError> {
    let table = ValueTable::from_rows(rows);
    let mut accumulator = Accumulator::new(design.num_players, design.num_strata());
    for (base, &stratum) in design.base_masks.iter().zip(&design.stratum_of) {
        let values = flips(base)
            .map(|m| table.get(&m))
            .collect::<Result<Vec<_>, _>>()?;
        accumulator.add(stratum, base, &values);
    }
    Ok(accumulator.finish(name_of(&design.distribution)))
}

/// Draws the design and values it through `game` (a block game; fixed blocks kept),
/// counting the distinct masks valued.
pub fn run_semivalue(
    game: &mut dyn Game,
    players: &Players,
    distribution: &MaskDistribution,
    num_base_masks: usize,
    seed: u64,
) -> Result<Estimates, ShapleyError> {
    let mut counting = CountingGame::new(PlayerGame::new(game, players.clone())?);
    let estimates = semivalue_through(
        &mut counting,
        players.len(),
        distribution,
        num_base_masks,
        seed,
    )?;
    let evaluations = counting.evaluations();
    Ok(estimates.for_players(players).with_evaluations(evaluations))
}

/// The same estimate through a game over the players that costs nothing to query (a
/// surrogate): no distinct-mask bookkeeping, so 80,000 base masks stay fast. The caller sets
/// `llm_evaluations` (the evaluations the surrogate was fitted on).
pub fn semivalue_through(
    player_game: &mut dyn Game,
    num_players: usize,
    distribution: &MaskDistribution,
    num_base_masks: usize,
    seed: u64,
) -> Result<Estimates, ShapleyError> {
    let n = num_players;
    if player_game.num_players() != n {
        return Err(ShapleyError::Players(format!(
            "the game has {} players, not {n}",
            player_game.num_players()
        )));
    }
    let design = semivalue_design(n, distribution, num_base_masks, &mut rng_from_seed(seed))?;
    let mut accumulator = Accumulator::new(n, design.num_strata());
    // One `values` call per chunk of base masks and no table kept: memory stays bounded
    // however many base masks there are.
    let bases_per_chunk = (CHUNK / (n + 1)).max(1);
    let indices: Vec<usize> = (0..design.base_masks.len()).collect();
    let mut progress = Progress::new(
        name_of(distribution),
        "base masks valued",
        indices.len(),
        bases_per_chunk,
    );
    for chunk in indices.chunks(bases_per_chunk) {
        let queries: Vec<Mask> = chunk
            .iter()
            .flat_map(|&b| flips(&design.base_masks[b]))
            .collect();
        let values = values_checked(player_game, &queries)?;
        for (k, &b) in chunk.iter().enumerate() {
            accumulator.add(
                design.stratum_of[b],
                &design.base_masks[b],
                &values[k * (n + 1)..(k + 1) * (n + 1)],
            );
        }
        progress.advance(chunk.len());
    }
    Ok(accumulator.finish(name_of(distribution)))
}

/// The exact stratified semivalue: every mask of every stratum once (at most 20 players), so
/// each stratum mean is exact.
pub fn exact_semivalue(
    game: &mut dyn Game,
    players: &Players,
    strata: &[usize],
) -> Result<Estimates, ShapleyError> {
    let n = players.len();
    if n > crate::exact::MAX_EXACT_PLAYERS {
        return Err(ShapleyError::Players(format!(
            "the exact semivalue enumerates 2^{n} masks; at most {} players",
            crate::exact::MAX_EXACT_PLAYERS
        )));
    }
    let mut base_masks = Vec::new();
    let mut stratum_of = Vec::new();
    for bits in 0..1usize << n {
        let mask = Mask::from_kept((0..n).map(|i| bits >> i & 1 == 1).collect());
        if let Some(s) = strata.iter().position(|&k| k == mask.num_removed()) {
            base_masks.push(mask);
            stratum_of.push(s);
        }
    }
    let design = SemivalueDesign {
        num_players: n,
        distribution: MaskDistribution::Strata(strata.to_vec()),
        base_masks,
        stratum_of,
    };
    let (rows, evaluations) = crate::evaluate_masks_for(
        "exact-stratified-semivalue",
        game,
        players,
        &design.queries(),
    )?;
    let mut estimates = semivalue_estimate(&design, &rows)?;
    estimates.estimator = format!("exact-{STRATIFIED_SEMIVALUE}");
    estimates.std_errors = None;
    Ok(estimates.for_players(players).with_evaluations(evaluations))
}
