//! SLEB and adaptive removal report their progress as `tracing` events (one per step), which
//! the stage binaries turn into log lines; the library draws nothing itself.

use std::io::Write;
use std::sync::{Arc, Mutex};

use layerprune_selection::{adaptive_removal, sleb, sleb_cost, AdaptiveOptions};
use layerprune_shapley::synthetic::TripleGame;

/// Log lines written by a subscriber, kept in memory.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What `run` logs at info level and above.
fn logged(run: impl FnOnce()) -> String {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, run);
    let bytes = lines.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn sleb_logs_each_removal_with_its_evaluations() {
    let (n, k) = (8, 3);
    let mut game = TripleGame::layer_pruning_like(n, 1);
    let text = logged(|| {
        sleb(&mut game, k, &[]).unwrap();
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
