//! How often a growing table is rewritten. A checkpoint rewrites the whole table, so saving
//! after every few masks costs time that grows with the square of the rows: at 100,000 masks
//! a checkpoint took 0.18 s here, about 280 s of rewriting over one `evaluate` run, and an
//! `apply-prune --cache` of 100,000 rows made adaptive removal take 50.6 s instead of 18.6 s
//! (2026-12-05). A save is therefore skipped while the work since the last one is shorter than
//! [`WORK_PER_SAVE`] times that save's own time: writing stays under about a tenth of a run,
//! whatever its size, and a kill loses at most that much more work than before (a small
//! table, written in milliseconds, is still saved after every chunk).

use std::time::{Duration, Instant};

/// Least work between two saves, in multiples of the last save's time.
pub const WORK_PER_SAVE: u32 = 10;

/// When the last save ended and how long it took.
#[derive(Clone, Copy, Debug)]
pub struct SavePace {
    last: Option<(Instant, Duration)>,
    work_per_save: u32,
}

impl Default for SavePace {
    fn default() -> Self {
        SavePace::with_work_per_save(WORK_PER_SAVE)
    }
}

impl SavePace {
    /// Another ratio than [`WORK_PER_SAVE`]: for tests, 0 (every save due) or `u32::MAX` (none
    /// after the first).
    pub fn with_work_per_save(work_per_save: u32) -> Self {
        SavePace {
            last: None,
            work_per_save,
        }
    }

    /// Whether a save now keeps saving under a tenth of the time: always before the first.
    pub fn due(&self) -> bool {
        self.last
            .is_none_or(|(ended, took)| ended.elapsed() >= took.saturating_mul(self.work_per_save))
    }

    /// Time since the last save ended (since never: the longest time there is).
    pub fn since_last(&self) -> Duration {
        self.last
            .map_or(Duration::MAX, |(ended, _)| ended.elapsed())
    }

    /// Runs `save`, timing it for [`SavePace::due`].
    pub fn save<T, E>(&mut self, save: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let started = Instant::now();
        let saved = save()?;
        self.last = Some((Instant::now(), started.elapsed()));
        Ok(saved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_save_is_due_after_ten_times_its_own_time() {
        let mut pace = SavePace::default();
        assert!(pace.due(), "the first save is always due");
        pace.save(|| {
            std::thread::sleep(Duration::from_millis(30));
            Ok::<_, ()>(())
        })
        .unwrap();
        assert!(!pace.due(), "right after a 30 ms save");
        assert!(pace.since_last() < Duration::from_millis(300));
        std::thread::sleep(Duration::from_millis(320));
        assert!(pace.due(), "300 ms of work after a 30 ms save");
        // A failed save leaves the pace as it was.
        assert!(pace.save(|| Err::<(), _>("disk full")).is_err());
        assert!(pace.due());
    }
}
