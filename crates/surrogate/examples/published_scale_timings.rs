//! Published scale (L = 32, 8,000 masks): prints how long fitting and predicting take, and how
//! well each surrogate predicts 80,000 other masks. A benchmark, not a test (timings on shared
//! machines vary): `cargo run --release -p layerprune-surrogate --example
//! published_scale_timings`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{stratified_masks, SmoothUtility};
use layerprune_surrogate::{fit, r2_score, FitOptions, Surrogate, SurrogateKind};

/// CPU seconds used by this process so far (Linux; 0 elsewhere): on a shared machine wall
/// time overstates the cost.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

fn main() {
    let num_blocks = 32;
    let utility = SmoothUtility::new(num_blocks, 1);
    let masks = stratified_masks(num_blocks, &[2, 5, 8, 11, 14], 8000, 2);
    let targets = utility.values(&masks);
    let queries = stratified_masks(num_blocks, &[2, 5, 8, 11, 14], 80_000, 3);
    let truth = utility.values(&queries);
    for kind in [SurrogateKind::PublishedMlp, SurrogateKind::Quadratic] {
        let (start, cpu_start) = (Instant::now(), cpu_seconds());
        let model = fit(kind, &masks, &targets, &FitOptions::default()).unwrap();
        let fitted = start.elapsed();
        let fit_cpu = cpu_seconds() - cpu_start;
        let start = Instant::now();
        let predicted = model.predict(&queries);
        let predicting = start.elapsed();
        assert_eq!(predicted.len(), queries.len());
        println!(
            "{kind}: fit on 8,000 masks (L = 32) {fitted:.2?} ({fit_cpu:.2} s CPU), predict 80,000 masks \
             {predicting:.2?}, R² on them {:.4}",
            r2_score(&truth, &predicted)
        );
    }
}
