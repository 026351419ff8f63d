//! Stopping a stage at the next boundary of its work when it is asked to end: SIGINT (Ctrl-C),
//! SIGTERM (Slurm's preemption and `scancel`, which give a grace period before SIGKILL) and
//! SIGHUP. Their default kills the process where it stands, as SIGKILL does: what was measured
//! since the last save was lost (saves are paced), a model-sized temporary folder stayed beside
//! the output, and nothing said that the run resumes (crash-and-resume audit, 2026-12-07).
//!
//! [`catch_termination_signals`] makes the first such signal only record itself; the long loops
//! ask [`check`] at each boundary (a chunk of masks, a graph) and end through their error path,
//! which saves what was measured and removes temporary files; the stage then exits with the
//! signal's status (128 + its number). The handler is reset by the first signal
//! (`SA_RESETHAND`), so a second one ends the process at once, as without this module.

use std::sync::atomic::{AtomicI32, Ordering};

/// The first termination signal received, or 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// A loop ended because the stage was asked to end ([`check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by {} before the work was done", signal_name(.signal))]
pub struct Interrupted {
    pub signal: i32,
}

impl Interrupted {
    /// The exit status a shell gives a process this signal ended: 128 + its number.
    pub fn exit_status(self) -> u8 {
        (128 + self.signal).clamp(0, 255) as u8
    }
}

/// The signal's name as `kill -l` spells it, for the messages.
pub fn signal_name(signal: &i32) -> String {
    #[cfg(unix)]
    {
        match *signal {
            libc::SIGINT => return "SIGINT".into(),
            libc::SIGTERM => return "SIGTERM".into(),
            libc::SIGHUP => return "SIGHUP".into(),
            _ => {}
        }
    }
    format!("signal {signal}")
}

/// What the first signal prints, at once (the stop comes at the next batch).
const STOPPING: &str = "\nstopping before the next batch of work and saving what was done \
                        (a second signal stops at once)\n";

#[cfg(unix)]
extern "C" fn record(signal: libc::c_int) {
    // Async-signal-safe: an atomic store and write(2). The first signal is kept.
    let _ = RECEIVED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    // SAFETY: write(2) on stderr from a signal handler is async-signal-safe; the bytes are a
    // static string.
    unsafe {
        libc::write(2, STOPPING.as_ptr().cast(), STOPPING.len());
    }
}

/// Makes the first SIGINT, SIGTERM or SIGHUP only recorded, for [`check`]; a second ends the
/// process as before. A signal the process inherited as ignored (`nohup`, a background job of
/// a non-interactive shell) stays ignored. Called once by every stage before its work.
pub fn catch_termination_signals() {
    #[cfg(unix)]
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler does one atomic store, which is async-signal-safe; the structs
        // are zeroed plain data that sigaction fills or reads.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0
                || old.sa_sigaction == libc::SIG_IGN
            {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = record as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// The termination signal received, if any ([`catch_termination_signals`]).
pub fn received() -> Option<Interrupted> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(Interrupted { signal }),
    }
}

/// `Err` once a termination signal was received: what a long loop asks at each boundary of
/// its work, ending through its error path (which saves what was done).
pub fn check() -> Result<(), Interrupted> {
    received().map_or(Ok(()), Err)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn the_first_signal_is_recorded_and_the_second_kills() {
        // In a child process: the signal would end the test harness otherwise.
        if std::env::var_os("LAYERPRUNE_INTERRUPT_CHILD").is_some() {
            catch_termination_signals();
            assert_eq!(check(), Ok(()));
            // SAFETY: raising a signal at this process, whose handler only stores it.
            unsafe { libc::raise(libc::SIGTERM) };
            let interrupted = check().unwrap_err();
            assert_eq!(interrupted.signal, libc::SIGTERM);
            assert_eq!(interrupted.exit_status(), 143);
            assert_eq!(
                interrupted.to_string(),
                "interrupted by SIGTERM before the work was done"
            );
            // The handler was reset: this one ends the process with the signal.
            unsafe { libc::raise(libc::SIGTERM) };
            unreachable!("the second SIGTERM ends the process");
        }
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "interrupt::tests::the_first_signal_is_recorded_and_the_second_kills",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("LAYERPRUNE_INTERRUPT_CHILD", "1")
            .status()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    }
}
