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
        self.due_at(Instant::now())
    }

    fn due_at(&self, now: Instant) -> bool {
        self.last.is_none_or(|(ended, took)| {
            now.saturating_duration_since(ended) >= took.saturating_mul(self.work_per_save)
        })
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

    /// Runs `save` if one is [`SavePace::due`]: `Ok(None)` when it was skipped.
    pub fn save_when_due<T, E>(
        &mut self,
        save: impl FnOnce() -> Result<T, E>,
    ) -> Result<Option<T>, E> {
        if self.due() {
            self.save(save).map(Some)
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_save_is_due_after_ten_times_its_own_time() {
        let mut pace = SavePace::default();
        assert!(pace.due(), "the first save is always due");
        assert_eq!(pace.since_last(), Duration::MAX);
        // No clock is waited on: the last save is set, and the time asked about.
        let start = Instant::now();
        let later = |seconds: u64| start + Duration::from_secs(seconds);
        pace.last = Some((start, Duration::from_secs(10)));
        assert!(!pace.due_at(start), "right after a 10 s save");
        assert!(!pace.due_at(later(99)), "99 s of work after a 10 s save");
        assert!(pace.due_at(later(100)), "100 s of work after a 10 s save");
        // A failed save leaves the pace as it was; one that works restarts it.
        assert!(pace.save(|| Err::<(), _>("disk full")).is_err());
        assert_eq!(pace.last, Some((start, Duration::from_secs(10))));
        pace.save(|| Ok::<_, ()>(())).unwrap();
        assert!(pace.last.is_some_and(|(ended, _)| ended >= start));
        // The tests' settings: every save due, or none after the first.
        let mut every = SavePace::with_work_per_save(0);
        every.last = Some((start, Duration::from_secs(10)));
        assert!(every.due_at(start));
        let mut none = SavePace::with_work_per_save(u32::MAX);
        none.last = Some((start, Duration::from_secs(1)));
        assert!(!none.due_at(later(1_000_000)), "no overflow, and never due");
    }
}
