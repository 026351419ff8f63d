//! When a long loop's progress is worth an `info` line: the stages log the first update that
//! reaches each further tenth of the work (at most ten lines a loop, so a log file stays
//! readable) and leave the others to `debug`.

/// The tenths of `total` units of work reached so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tenths {
    total: usize,
    reached: usize,
}

impl Tenths {
    pub fn new(total: usize) -> Self {
        Tenths { total, reached: 0 }
    }

    /// Whether `done` units reach a tenth of the total that no earlier call reached (never for
    /// an empty total).
    pub fn reached(&mut self, done: usize) -> bool {
        if self.total == 0 {
            return false;
        }
        let tenth = done.min(self.total) * 10 / self.total;
        let new = tenth > self.reached;
        self.reached = self.reached.max(tenth);
        new
    }
}

#[cfg(test)]
mod tests {
    use super::Tenths;

    #[test]
    fn each_tenth_is_reached_once() {
        let mut tenths = Tenths::new(95);
        let reached: Vec<usize> = (1..=95).filter(|&done| tenths.reached(done)).collect();
        assert_eq!(reached, vec![10, 19, 29, 38, 48, 57, 67, 76, 86, 95]);
        assert!(!tenths.reached(95));
        assert!(!Tenths::new(0).reached(5));
        // A jump over several tenths is one line.
        let mut jump = Tenths::new(10);
        assert!(jump.reached(7));
        assert!(!jump.reached(7));
        assert!(jump.reached(12));
    }
}
