//! The process's thread budget (a stage's `--threads`) bounds the workspace's own threads. In a
//! test binary of its own: the budget is one setting of the process, which the unit tests
//! running beside each other must not see change.

use std::collections::HashSet;
use std::sync::Mutex;

use layerprune_core::linalg::Cholesky;
use layerprune_core::parallel::{
    cores, map_in_order, set_thread_budget, thread_budget, threads_or_budget,
};

/// The threads `map_in_order` ran 64 items on, asked for `asked` threads.
fn threads_used(asked: usize) -> HashSet<std::thread::ThreadId> {
    let seen = Mutex::new(HashSet::new());
    map_in_order(&[0; 64], asked, |_, _| {
        seen.lock().unwrap().insert(std::thread::current().id());
        // Long enough that one thread cannot take every item before the others start.
        std::thread::sleep(std::time::Duration::from_millis(5));
    });
    seen.into_inner().unwrap()
}

#[test]
fn the_budget_bounds_the_workspaces_threads() {
    // Unset: one per core.
    assert_eq!(thread_budget(), cores());
    assert_eq!(threads_or_budget(0), cores());

    set_thread_budget(1);
    assert_eq!(thread_budget(), 1);
    assert_eq!(threads_or_budget(0), 1);
    // A count given explicitly is the caller's (GPTQ's own --threads).
    assert_eq!(threads_or_budget(3), 3);
    assert_eq!(
        threads_used(8),
        HashSet::from([std::thread::current().id()])
    );

    // A factorization in panels (from 1,024 unknowns) gives the same factor on the budget's
    // one thread as on every core.
    let n = 1_100;
    let matrix: Vec<f64> = (0..n * n)
        .map(|at| {
            let (i, j): (usize, usize) = (at / n, at % n);
            if i == j {
                n as f64
            } else {
                1.0 / (1.0 + i.abs_diff(j) as f64)
            }
        })
        .collect();
    let one = Cholesky::new(&matrix, n).unwrap();
    set_thread_budget(0);
    assert_eq!(thread_budget(), cores());
    let every = Cholesky::new(&matrix, n).unwrap();
    assert_eq!(one.lower(), every.lower());

    // 0 again: every core (up to the items and the threads asked).
    if cores() > 1 {
        assert_eq!(threads_used(2).len(), 2);
    }
}
