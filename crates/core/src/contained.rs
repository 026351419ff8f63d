//! Calls into third-party decoders that may panic on damaged input, turned into errors without
//! a word on stderr.
//!
//! The Parquet decoder and smartcore's trees panic on some corrupted inputs that no structural
//! check ahead of them can rule out. The readers catch those panics and report an error naming
//! the file, but Rust's default panic hook would still print `thread … panicked at …` first: to
//! a user (and to the bad-input matrix) that looks like a crash, although the stage exits
//! cleanly. [`contain_panic`] silences the hook for its own call on its own thread; panics
//! anywhere else are printed as before.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Set while this thread runs a [`contain_panic`] call.
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
}

static QUIET_HOOK: Once = Once::new();

/// Runs `call`; a panic in it becomes `Err` with the panic's message, and is not printed.
///
/// The first call wraps the process's panic hook (once) with one that stays silent while a
/// contained call runs on the panicking thread and otherwise hands over to the hook it
/// replaced, so a hook a program installs before still sees every other panic.
pub fn contain_panic<T>(call: impl FnOnce() -> T) -> Result<T, String> {
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINED.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let outer = CONTAINED.with(|c| c.replace(true));
    let outcome = catch_unwind(AssertUnwindSafe(call));
    CONTAINED.with(|c| c.set(outer));
    outcome.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "no message".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_a_value_passes_through() {
        assert_eq!(contain_panic(|| 7), Ok(7));
        assert_eq!(
            contain_panic(|| -> u8 { panic!("bad page {}", 3) }),
            Err("bad page 3".to_string())
        );
        assert_eq!(
            contain_panic(|| -> u8 { panic!("static") }),
            Err("static".to_string())
        );
        // Nested calls restore the outer state: after both, panics are loud again.
        let nested = contain_panic(|| contain_panic(|| -> u8 { panic!("inner") }));
        assert_eq!(nested, Ok(Err("inner".to_string())));
        assert!(!CONTAINED.with(Cell::get));
    }
}
