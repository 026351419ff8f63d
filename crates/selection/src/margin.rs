//! How far the calibration text separates a plan from its closest rival: the **runner-up**, the
//! best other set of k removed blocks the plan's method measured on the same tokens, and the
//! margin between them (runner-up's mean NLL minus the plan's) with its standard error over the
//! calibration windows.
//!
//! Why: a method chooses the best of the sets it measured, on a few thousand calibration tokens.
//! Where the runner-up is within a standard error or two, the calibration text does not really
//! tell the two apart, and on other text either may win (docs/results.md: plans 0.2 % apart on
//! calibration swapped places by 5 % on WikiText-2). The margin says how defensible the choice
//! is and whether more calibration windows would be the next thing to buy. The two sets are
//! scored on the same windows, so the standard error is the paired one: the windows'
//! differences' standard deviation over √windows (each window scores the same number of
//! tokens). It costs no evaluation: both sets were measured while choosing. The plan is the
//! best of many, so the margin is optimistic; a small one is the signal that matters.
//!
//! The same paired comparison with the full model, measured first on the same windows, says
//! what the plan gives away and how precisely: its NLL increase with a standard error, so a
//! perplexity ratio (`--max-ppl-ratio`) comes with the interval the calibration windows allow.

use layerprune_tables::{FullModel, PlanRow, RunnerUp};

use crate::Plan;

/// A measured set of removed blocks (ascending) and its mean NLL on each calibration window.
pub type WindowNlls = (Vec<usize>, Vec<f64>);

/// The runner-up of the plan that removes `plan` among `measured` (every set the method
/// measured, with its NLL per window): the other set of as many blocks with the lowest mean
/// NLL, ties to the smaller set. `None` when the plan itself or any rival was not measured.
pub fn runner_up(plan: &[usize], measured: &[WindowNlls]) -> Option<RunnerUp> {
    let plan_windows = windows_of(measured, plan)?;
    // Each rival's mean NLL once.
    let (set, windows, nll) = measured
        .iter()
        .filter(|(set, windows)| set.len() == plan.len() && set != plan && !windows.is_empty())
        .map(|(set, windows)| (set, windows, mean(windows)))
        .filter(|(_, _, nll)| nll.is_finite())
        .min_by(|a, b| a.2.total_cmp(&b.2).then_with(|| a.0.cmp(b.0)))?;
    Some(RunnerUp {
        removed_blocks: set.iter().map(|&b| b as u32).collect(),
        nll,
        margin_se: finite_standard_error(windows, plan_windows),
    })
}

/// The full model (the empty set of removed blocks) among `measured`, beside the plan that
/// removes `plan`: its mean NLL and the standard error of the plan's increase over it, paired
/// over the windows. `None` when either was not measured, or when the full model collapsed
/// (an NLL of +∞: there is nothing to compare with).
pub fn full_model(plan: &[usize], measured: &[WindowNlls]) -> Option<FullModel> {
    let measured_windows =
        |set: &[usize]| windows_of(measured, set).filter(|windows| !windows.is_empty());
    let (plan_windows, full_windows) = (measured_windows(plan)?, measured_windows(&[])?);
    let nll = mean(full_windows);
    nll.is_finite().then(|| FullModel {
        nll,
        nll_increase_se: finite_standard_error(plan_windows, full_windows),
    })
}

/// [`paired_standard_error`] where it is a number: a plan that collapsed on a window (an NLL of
/// +∞ there, as evaluation tables record it) has no spread to measure, and its standard error
/// would be NaN, which a plan table refuses (the run would fail writing its plans, after every
/// evaluation). Its NLL, +∞, says what there is to say.
fn finite_standard_error(a: &[f64], b: &[f64]) -> Option<f64> {
    paired_standard_error(a, b).filter(|se| se.is_finite())
}

/// Past this perplexity ratio to the full model on the calibration tokens, which plan is best
/// there says little about other text. Measured on the committed exact games (docs/results.md,
/// "On held-out text"): the calibration optimum carried over to held-out text up to 12.4 × the
/// full model's perplexity (Gemma 3, 7 of blocks 6–16: 43 % better than SLEB's plan on
/// WikiText-2), and at 240 × it did not (SmolLM2, 11 of blocks 16–27: 7.2 × SLEB's plan's
/// perplexity on WikiText-2).
pub const UNRELIABLE_PPL_RATIO: f64 = 20.0;

/// A warning for a plan measured past [`UNRELIABLE_PPL_RATIO`], naming its method, k and
/// ratio; `None` within it or when the plan or the full model was not measured.
pub fn depth_warning(plan: &PlanRow) -> Option<String> {
    // A diverged model (NaN) is past any ratio.
    let ratio = plan
        .ppl_ratio()
        .filter(|r| r.is_nan() || *r > UNRELIABLE_PPL_RATIO)?;
    Some(format!(
        "{} at k = {}: the pruned model's perplexity is {ratio:.0} x the full model's on these \
         tokens. Past {UNRELIABLE_PPL_RATIO:.0} x, which plan is best on the calibration text says \
         little about other text (the calibration optimum of 11 of SmolLM2's blocks 16-27, 240 x, \
         was 7.2 x SLEB's plan's perplexity on WikiText-2; docs/results.md, \"On held-out \
         text\"): remove fewer blocks, or judge the plan on held-out text",
        plan.method, plan.k
    ))
}

/// The windows' NLLs of the set `set` among `measured`.
fn windows_of<'a>(measured: &'a [WindowNlls], set: &[usize]) -> Option<&'a [f64]> {
    measured
        .iter()
        .find(|(measured_set, _)| measured_set == set)
        .map(|(_, windows)| windows.as_slice())
}

/// A set's mean NLL from its windows' (every window scores as many tokens, so the mean of their
/// means is the set's).
fn mean(windows: &[f64]) -> f64 {
    windows.iter().sum::<f64>() / windows.len() as f64
}

/// Gives every measured plan its runner-up ([`runner_up`]) and the full model beside it
/// ([`full_model`]), both among `measured`.
pub fn attach_comparisons(plans: &mut [Plan], measured: &[WindowNlls]) {
    for plan in plans.iter_mut().filter(|p| p.measured_nll.is_some()) {
        plan.runner_up = runner_up(&plan.removed, measured);
        plan.full_model = full_model(&plan.removed, measured);
    }
}

/// The standard error of the mean of `a − b` over paired windows; `None` with fewer than two
/// windows or unequal counts.
pub fn paired_standard_error(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len();
    if n < 2 || b.len() != n {
        return None;
    }
    let differences: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let mean = differences.iter().sum::<f64>() / n as f64;
    let variance = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    Some((variance / n as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runner_up_is_the_best_other_set_of_the_same_size() {
        let measured: Vec<WindowNlls> = vec![
            (vec![], vec![1.0, 1.0]),
            (vec![3], vec![1.1, 1.3]),
            (vec![1, 3], vec![2.0, 2.2]),
            (vec![0, 3], vec![2.5, 2.1]),
            (vec![2, 3], vec![2.4, 2.6]),
            (vec![1, 2, 3], vec![1.0, 1.0]),
        ];
        let up = runner_up(&[1, 3], &measured).unwrap();
        // {0, 3} (mean 2.3) beats {2, 3} (2.5); the set of three and the single do not count.
        assert_eq!(up.removed_blocks, vec![0, 3]);
        assert!((up.nll - 2.3).abs() < 1e-12);
        // Paired differences 0.5 and −0.1: variance 0.18, standard error √(0.18 / 2) = 0.3.
        assert!((up.margin_se.unwrap() - 0.3).abs() < 1e-12);
        // No rival of the plan's size, or the plan not measured: no runner-up.
        assert_eq!(runner_up(&[3], &measured[..3]), None);
        assert_eq!(runner_up(&[0, 1], &measured), None);
    }

    #[test]
    fn the_full_model_beside_a_plan_is_its_paired_increase() {
        let measured: Vec<WindowNlls> = vec![
            (vec![], vec![1.0, 2.0, 3.0]),
            (vec![2], vec![1.5, 2.4, 3.8]),
            (vec![1, 2], vec![2.0, 3.0, 4.0]),
        ];
        let full = full_model(&[2], &measured).unwrap();
        assert!((full.nll - 2.0).abs() < 1e-12);
        // Increases 0.5, 0.4, 0.8: mean 17/30, variance 13/300, standard error √(13/900).
        let se = full.nll_increase_se.unwrap();
        assert!((se - (13.0f64 / 900.0).sqrt()).abs() < 1e-12, "{se}");
        // The same increase on every window: exact however different the windows are.
        let exact = full_model(&[1, 2], &measured).unwrap();
        assert!(exact.nll_increase_se.unwrap() < 1e-12);
        // The plan or the full model not measured: nothing.
        assert_eq!(full_model(&[0], &measured), None);
        assert_eq!(full_model(&[2], &measured[1..]), None);
    }

    #[test]
    fn a_plan_past_the_unreliable_ratio_is_warned_of() {
        let plan = |nll: Option<f64>, full: Option<f64>| PlanRow {
            method: "adaptive-raced".into(),
            k: 11,
            removed_blocks: (16..27).collect(),
            predicted_value: None,
            measured_nll: nll,
            measured_ppl: nll.map(f64::exp),
            llm_evaluations: 100,
            runner_up: None,
            full_model: full.map(|nll| FullModel {
                nll,
                nll_increase_se: None,
            }),
        };
        let full = 3.85_f64; // SmolLM2's calibration perplexity, about 47
        let at = |ratio: f64| plan(Some(full + ratio.ln()), Some(full));
        // 12.4 x carried over to held-out text; 240 x did not.
        assert_eq!(depth_warning(&at(12.4)), None);
        assert_eq!(depth_warning(&at(UNRELIABLE_PPL_RATIO * 0.999)), None);
        let warning = depth_warning(&at(240.0)).unwrap();
        assert!(
            warning.starts_with("adaptive-raced at k = 11:"),
            "{warning}"
        );
        assert!(warning.contains("240 x the full model's"), "{warning}");
        // A diverged model is past any ratio.
        assert!(depth_warning(&plan(Some(f64::NAN), Some(full))).is_some());
        assert!(depth_warning(&plan(Some(f64::INFINITY), Some(full))).is_some());
        // Without the plan's or the full model's measurement there is no ratio to judge.
        assert_eq!(depth_warning(&plan(None, Some(full))), None);
        assert_eq!(depth_warning(&plan(Some(9.0), None)), None);
    }

    /// A plan that collapsed on a window (NLL +∞ there) gets no standard error rather than NaN,
    /// and a full model that collapsed no comparison: the plan table refuses both, and
    /// `apply-prune` failed writing its plans after every evaluation.
    #[test]
    fn a_collapsed_window_gives_no_standard_error_and_the_plans_can_be_written() {
        let measured: Vec<WindowNlls> = vec![
            (vec![], vec![1.0, 2.0, 3.0]),
            (vec![0, 1], vec![f64::INFINITY, 9.0, 8.0]),
            (vec![0, 2], vec![5.0, 6.0, 7.5]),
        ];
        let mut plans = vec![Plan::new("sleb", vec![0, 1], 5)];
        plans[0].measured_nll = Some(f64::INFINITY);
        attach_comparisons(&mut plans, &measured);
        let full = plans[0].full_model.clone().unwrap();
        assert_eq!((full.nll, full.nll_increase_se), (2.0, None));
        let up = plans[0].runner_up.clone().unwrap();
        assert_eq!((up.removed_blocks, up.margin_se), (vec![0, 2], None));
        let dir = tempfile::tempdir().unwrap();
        let table = layerprune_tables::PlanTable {
            num_blocks: 3,
            value: None,
            rows: vec![plans[0].to_row().unwrap()],
        };
        let provenance = layerprune_tables::Provenance::new("test", "0", Vec::new());
        layerprune_tables::write_plans(&dir.path().join("p.parquet"), &table, &provenance).unwrap();
        // The full model collapsed: nothing to compare with.
        let collapsed = [
            (vec![], vec![f64::INFINITY, 2.0]),
            (vec![1], vec![3.0, 4.0]),
        ];
        assert_eq!(full_model(&[1], &collapsed), None);
    }

    #[test]
    fn the_standard_error_is_the_paired_one() {
        // The same offset on every window: no doubt at all, however noisy the windows.
        let plan = [2.0, 5.0, 3.0, 9.0];
        let rival = [2.1, 5.1, 3.1, 9.1];
        assert!(paired_standard_error(&rival, &plan).unwrap() < 1e-12);
        assert_eq!(paired_standard_error(&[1.0], &[0.5]), None);
        assert_eq!(paired_standard_error(&[1.0, 2.0], &[0.5]), None);
    }
}
