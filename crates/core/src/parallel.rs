//! Independent pieces of work spread over threads, their results in the work's order: what
//! opening a model's graphs, hashing its files and predicting a forest's values do. The order
//! of the results (and so which failure a caller reports first) never depends on which thread
//! finished first.
//!
//! How many threads the workspace's own work takes (the Gram matrices, factorizations, forests
//! and hashing, as opposed to ONNX Runtime's pools) is one setting of the process, its thread
//! budget: a stage's `--threads`, set once by its front before any work (a workflow engine that
//! gives a job one core gets one thread's work, not every core's); unset, one per core.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The process's thread budget; 0 = not set (one per core).
static THREAD_BUDGET: AtomicUsize = AtomicUsize::new(0);

/// The cores of this machine (1 where that cannot be told).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Sets the threads the workspace's own work may take in this process from a stage's
/// `--threads` (0 = one per core); results never depend on it.
pub fn set_thread_budget(threads: usize) {
    THREAD_BUDGET.store(threads, Ordering::Relaxed);
}

/// The threads the workspace's own work may take: the budget set by the stage's `--threads`,
/// or one per core.
pub fn thread_budget() -> usize {
    match THREAD_BUDGET.load(Ordering::Relaxed) {
        0 => cores(),
        threads => threads,
    }
}

/// A `--threads` setting as a number of threads: 0 is the process's [`thread_budget`] (one per
/// core unless the stage set it); any other number is taken as given (the stages' parser allows
/// up to four per core).
pub fn threads_or_budget(threads: usize) -> usize {
    if threads == 0 {
        thread_budget()
    } else {
        threads
    }
}

/// `work(index, item)` on every item, on at most `threads` threads (and no more than the cores,
/// the [`thread_budget`] or the items), each thread taking the next item no thread has taken;
/// the results in the items' order. A panic in `work` is raised again on the calling thread.
pub fn map_in_order<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(usize, &T) -> R + Sync,
) -> Vec<R> {
    let threads = threads
        .min(cores())
        .min(thread_budget())
        .min(items.len())
        .max(1);
    if threads == 1 {
        return items
            .iter()
            .enumerate()
            .map(|(i, item)| work(i, item))
            .collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let running: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return mine;
                        };
                        mine.push((i, work(i, item)));
                    }
                })
            })
            .collect();
        running
            .into_iter()
            .flat_map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, result)| result).collect()
}

/// [`map_in_order`] of work that can fail: the results in the items' order, or the error of
/// the first item in that order that failed, as one thread going through them would report it.
/// Once an item has failed, no item after it starts (those before it still run: one of them
/// could be the failure to report).
pub fn try_map_in_order<T: Sync, R: Send, E: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(usize, &T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E> {
    let first_failed = AtomicUsize::new(usize::MAX);
    let outcomes = map_in_order(items, threads, |at, item| {
        if at > first_failed.load(Ordering::Relaxed) {
            return None;
        }
        let outcome = work(at, item);
        if outcome.is_err() {
            first_failed.fetch_min(at, Ordering::Relaxed);
        }
        Some(outcome)
    });
    // An item is skipped only after an earlier one failed, whose error comes first.
    outcomes
        .into_iter()
        .map(|outcome| outcome.expect("an item is skipped only after an earlier failure"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_in_the_items_order_is_reported_and_later_items_do_not_start() {
        let items: Vec<u64> = (0..64).collect();
        let started = AtomicUsize::new(0);
        for threads in [1, 2, 4] {
            started.store(0, Ordering::Relaxed);
            let outcome = try_map_in_order(&items, threads, |_, &x| {
                started.fetch_add(1, Ordering::Relaxed);
                // Item 40 fails fast, item 10 slowly: 10 is the one to report.
                if x == 10 {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    return Err(x);
                }
                if x == 40 {
                    return Err(x);
                }
                Ok(x)
            });
            assert_eq!(outcome, Err(10), "{threads} threads");
            // Items past the first failure started only while it was running: none on one
            // thread. (On a machine of one core every count runs on one thread.)
            let started = started.load(Ordering::Relaxed);
            if threads == 1 {
                assert_eq!(started, 11);
            } else {
                assert!(started < items.len(), "{threads} threads");
            }
        }
        assert_eq!(
            try_map_in_order(&items, 3, |_, &x| Ok::<_, ()>(x * 2)),
            Ok((0..64).map(|x| x * 2).collect())
        );
    }

    #[test]
    fn results_come_in_the_items_order() {
        let items: Vec<u64> = (0..100).collect();
        // Uneven work, so threads finish out of order.
        let squares = map_in_order(&items, 4, |i, &x| {
            if x % 7 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            (i, x * x)
        });
        assert_eq!(
            squares,
            (0..100).map(|x| (x as usize, x * x)).collect::<Vec<_>>()
        );
        assert!(map_in_order(&[] as &[u8], 4, |_, _| 0).is_empty());
    }

    #[test]
    fn a_panic_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| {
            map_in_order(&[1, 2, 3, 4], 2, |_, &x| {
                assert!(x != 3, "item three");
                x
            })
        });
        assert!(caught.is_err());
    }
}
