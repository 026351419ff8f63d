//! SLEB and adaptive removal report their progress as `tracing` events (one per step), which
//! the stage binaries turn into log lines; the library draws nothing itself.

use layerprune_selection::{adaptive_removal, sleb, sleb_cost, AdaptiveOptions};
use layerprune_shapley::synthetic::TripleGame;

/// What `run` logs at info level and above.
fn logged(run: impl FnOnce()) -> String {
    layerprune_tests::logged_at(tracing::Level::INFO, run)
}

#[test]
fn sleb_logs_each_removal_with_its_evaluations() {
    let (n, k) = (8, 3);
    let mut game = TripleGame::layer_pruning_like(n, 1);
    let text = logged(|| {
        sleb(&mut game, k, &[], None).unwrap();
    });
    let steps: Vec<&str> = text.lines().filter(|l| l.contains("sleb: k=3")).collect();
    assert_eq!(steps.len(), k, "{text}");
    assert!(steps[0].contains("1/3 blocks removed") && steps[0].contains(" 8 evaluations"));
    assert!(steps[2].contains("3/3 blocks removed") && steps[2].contains(" 21 evaluations"));
}

#[test]
fn adaptive_logs_its_greedy_steps_and_a_summary() {
    let (n, k) = (10, 3);
    let mut game = TripleGame::layer_pruning_like(n, 2);
    let options = AdaptiveOptions::with_budget(sleb_cost(n, k));
    let text = logged(|| {
        adaptive_removal(&mut game, k, &[], &options).unwrap();
    });
    for step in 1..=k {
        let needle = format!("adaptive: k=3, greedy {step}/3 blocks removed");
        assert!(text.contains(&needle), "{needle} not in {text}");
    }
    assert!(text.contains("adaptive: k=3, done"), "{text}");
}
