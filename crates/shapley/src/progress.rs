//! Progress of the estimators' long loops, as `tracing` events that the stage binaries turn
//! into log lines (docs/pipeline.md, "Logs and progress"); the library draws nothing itself.
//!
//! A loop reports after each batch it finishes (a batch is one call of the game, up to 8192
//! masks). As `evaluate` does for its masks, an `info` line is written each time another
//! tenth of the work is done (at most ten per loop) and every other batch is a `debug` line.
//! A loop of fewer than [`LONG_LOOP_BATCHES`] batches — under about 800,000 masks, a second
//! or so through an MLP surrogate, e.g. the 512 permutation pairs that iterative removal
//! values at each of its rounds, or `surrogate-shapley`'s default 80,000 queries — writes
//! `debug` lines only, so a caller that runs it many times is not flooded; the stratified
//! semivalue's published 80,000 base masks (2.6 million queries over 32 players) are a long
//! loop. The events' target is `layerprune_shapley::progress` and the message names the
//! estimator: `stratified-semivalue: 8184 of 80000 base masks valued`;
//! `RUST_LOG=info,layerprune_shapley=debug` shows every batch.

use layerprune_core::Tenths;

/// Batches from which a loop's tenths are `info` lines.
pub const LONG_LOOP_BATCHES: usize = 100;

/// One loop's progress: `total` units of work done in batches of about `batch` units.
pub(crate) struct Progress {
    /// What is being done, e.g. `stratified-semivalue: base masks valued`: the message is
    /// `{name}: {done} of {total} {unit}`.
    name: String,
    unit: &'static str,
    total: usize,
    done: usize,
    tenths: Tenths,
    long: bool,
}

impl Progress {
    pub(crate) fn new(
        name: impl Into<String>,
        unit: &'static str,
        total: usize,
        batch: usize,
    ) -> Self {
        Progress {
            name: name.into(),
            unit,
            total,
            done: 0,
            tenths: Tenths::new(total),
            long: total.div_ceil(batch.max(1)) >= LONG_LOOP_BATCHES,
        }
    }

    /// Another `units` of the work are done.
    pub(crate) fn advance(&mut self, units: usize) {
        self.done = (self.done + units).min(self.total);
        if self.total == 0 {
            return;
        }
        let (name, done, total, unit) = (&self.name, self.done, self.total, self.unit);
        if self.long && self.tenths.reached(done) {
            tracing::info!("{name}: {done} of {total} {unit}");
        } else {
            tracing::debug!("{name}: {done} of {total} {unit}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_loop_is_long_and_a_short_one_is_not() {
        assert!(Progress::new("x", "masks", 100 * 8192, 8192).long);
        assert!(Progress::new("x", "masks", 99 * 8192 + 1, 8192).long);
        assert!(!Progress::new("x", "masks", 99 * 8192, 8192).long);
        assert!(!Progress::new("x", "masks", 0, 0).long);
        let mut empty = Progress::new("x", "masks", 0, 1);
        empty.advance(3);
        assert_eq!(empty.done, 0);
    }
}
