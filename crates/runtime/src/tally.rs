//! How many runs each kind of graph made and how long the host spent inside them: where an
//! evaluation's time goes, without a profiler.
//!
//! The host's time inside a run is not the device's time for it. On the CPU provider it is
//! (the run computes before it returns). With the CUDA provider and `--overlap` a block's run
//! returns once its kernels are queued, so the blocks' host time is what launching them costs,
//! and the device's backlog is waited for in the first run that returns a result to the host:
//! the head's. So on a GPU, blocks' host time close to the whole says the host sets the pace
//! (launches); the head's host time far above its own arithmetic says the device does.

use std::time::Instant;

/// Runs of one kind of graph and the host's seconds inside them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GraphRuns {
    pub runs: u64,
    pub host_seconds: f64,
}

impl GraphRuns {
    /// Counts one run that began at `started`.
    pub(crate) fn record(&mut self, started: Instant) {
        self.runs += 1;
        self.host_seconds += started.elapsed().as_secs_f64();
    }

    /// Milliseconds of host time per run (0 without runs).
    pub fn ms_per_run(&self) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            1e3 * self.host_seconds / self.runs as f64
        }
    }

    fn since(&self, earlier: &GraphRuns) -> GraphRuns {
        GraphRuns {
            runs: self.runs - earlier.runs,
            host_seconds: self.host_seconds - earlier.host_seconds,
        }
    }
}

/// [`GraphRuns`] of every kind of graph a layered model runs, since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunTally {
    /// The embedding: token ids to the first hidden state.
    pub embedding: GraphRuns,
    /// The blocks (with `--cuda-graphs`, the copies into and out of the captured buffers too).
    pub blocks: GraphRuns,
    /// The joins and splits of masks' states batched through shared blocks (`--mask-batch`),
    /// by graphs on the device or copies on the host.
    pub stitching: GraphRuns,
    /// The head: the per-token NLL, or the logits, back in host memory.
    pub head: GraphRuns,
}

impl RunTally {
    /// What ran after `earlier` (a tally of the same model taken before).
    pub fn since(&self, earlier: &RunTally) -> RunTally {
        RunTally {
            embedding: self.embedding.since(&earlier.embedding),
            blocks: self.blocks.since(&earlier.blocks),
            stitching: self.stitching.since(&earlier.stitching),
            head: self.head.since(&earlier.head),
        }
    }

    /// The kinds by name, as summaries and logs spell them.
    pub fn by_kind(&self) -> [(&'static str, GraphRuns); 4] {
        [
            ("embedding", self.embedding),
            ("blocks", self.blocks),
            ("stitching", self.stitching),
            ("head", self.head),
        ]
    }

    /// Host seconds inside any run.
    pub fn host_seconds(&self) -> f64 {
        self.by_kind().iter().map(|(_, r)| r.host_seconds).sum()
    }

    /// Whether, on CUDA with the host overlapped (block runs return once queued), this tally
    /// of `seconds` says the host's launches set the pace: the blocks' runs hold at least
    /// [`LAUNCHES_SET_THE_PACE_SHARE`] of the time. What `--cuda-graphs on` is for.
    pub fn launches_set_the_pace(&self, seconds: f64) -> bool {
        seconds > 0.0 && self.blocks.host_seconds >= LAUNCHES_SET_THE_PACE_SHARE * seconds
    }
}

/// The blocks' share of an overlapped CUDA run's time at which the host's launches set its
/// pace. GPU run 3 (H100, docs/benchmarks.md §5): the runs where the blocks held 69–87 % of the
/// time gained from `--cuda-graphs on` (1.12–1.87×), those where they held 26–38 % lost 0.7–4 %.
pub const LAUNCHES_SET_THE_PACE_SHARE: f64 = 0.6;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_tally_less_an_earlier_one_is_what_ran_between() {
        let mut tally = RunTally::default();
        tally.blocks.record(Instant::now());
        let earlier = tally;
        tally.blocks.record(Instant::now());
        tally.blocks.record(Instant::now());
        tally.head.record(Instant::now());
        let between = tally.since(&earlier);
        assert_eq!(between.blocks.runs, 2);
        assert_eq!(between.head.runs, 1);
        assert_eq!(between.embedding.runs, 0);
        assert!(between.blocks.host_seconds >= 0.0);
        assert!(between.host_seconds() <= tally.host_seconds());
        assert_eq!(GraphRuns::default().ms_per_run(), 0.0);
    }

    #[test]
    fn the_launches_set_the_pace_when_the_blocks_hold_most_of_the_time() {
        let tally = |blocks: f64, head: f64| RunTally {
            blocks: GraphRuns {
                runs: 1000,
                host_seconds: blocks,
            },
            head: GraphRuns {
                runs: 100,
                host_seconds: head,
            },
            ..RunTally::default()
        };
        // Run 3's 135M fp16 run (blocks 87 %) and its 7B bf16 one (36 %).
        assert!(tally(0.607, 0.086).launches_set_the_pace(0.70));
        assert!(!tally(0.882, 1.53).launches_set_the_pace(2.43));
        assert!(!RunTally::default().launches_set_the_pace(0.0));
    }
}
