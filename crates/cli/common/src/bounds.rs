//! Bounds of counts given on the command line, checked before anything is allocated: each
//! count flag has a range (a clap value parser, so `--samples 0` or `--samples
//! 1000000000000000000` is a usage error naming the flag), `--threads` is at most four per
//! core, `--cache-mb` must convert to bytes, and where counts multiply into one allocation
//! [`check_memory`] refuses an estimate above [`MEMORY_LIMIT_BYTES`] or this machine's memory.

use anyhow::{bail, Result};
use clap::builder::RangedU64ValueParser;
use layerprune_core::parallel::cores;

/// The most memory a stage may plan to allocate for one table of counts: 64 GiB.
pub const MEMORY_LIMIT_BYTES: u64 = 64 << 30;
/// [`MEMORY_LIMIT_BYTES`] as said in messages.
pub const MEMORY_LIMIT_TEXT: &str = "64 GiB";

/// A count flag's value parser: an integer in `min..=max`, else a usage error naming the flag
/// and the range.
pub fn count(min: u64, max: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::<usize>::new().range(min..=max)
}

/// Refuses when `counts` multiplied together, times `bytes_each`, is more memory than
/// [`MEMORY_LIMIT_BYTES`], or than this machine has (where it says): `what` names the flags the
/// counts come from.
pub fn check_memory(what: &str, counts: &[usize], bytes_each: usize) -> Result<()> {
    let bytes = counts
        .iter()
        .try_fold(bytes_each as u128, |total, &n| total.checked_mul(n as u128));
    let gib = |bytes: u128| bytes as f64 / (1u64 << 30) as f64;
    match (bytes, machine_memory()) {
        (None, _) => {
            bail!("{what} would need more memory than can be counted; give a smaller count")
        }
        (Some(bytes), _) if bytes > MEMORY_LIMIT_BYTES as u128 => bail!(
            "{what} would need about {:.1} GiB of memory, more than the limit of {MEMORY_LIMIT_TEXT}; \
             give a smaller count",
            gib(bytes)
        ),
        // Allocated, it would be killed by the kernel (or abort) part-way through the work.
        (Some(bytes), Some(physical)) if bytes > physical as u128 => bail!(
            "{what} would need about {:.1} GiB of memory, more than this machine's {:.1} GiB \
             (its memory, or its control group's limit); give a smaller count",
            gib(bytes),
            gib(physical as u128)
        ),
        _ => Ok(()),
    }
}

pub use layerprune_core::memory::machine_memory;

/// The largest `--cache-mb`: as many MiB as a memory size (`isize::MAX` bytes) holds.
pub const MAX_CACHE_MB: u64 = (isize::MAX as u64) >> 20;

/// `--cache-mb` in bytes, refused when it does not fit in a memory size.
pub fn cache_bytes(megabytes: usize) -> Result<usize> {
    match megabytes.checked_mul(1 << 20) {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(bytes),
        _ => bail!(
            "--cache-mb {megabytes}: that many MiB is more bytes than a memory size can hold \
             (at most {} MiB)",
            (isize::MAX as usize) >> 20
        ),
    }
}

/// `--threads`: 0 (one per core) up to four per core of this machine.
pub fn parse_threads(text: &str) -> Result<usize, String> {
    let threads: usize = text
        .parse()
        .map_err(|e| format!("{text:?} is not a number of threads: {e}"))?;
    let cores = cores();
    let max = cores * 4;
    if threads > max {
        return Err(format!(
            "{threads} threads is more than 4 per core (at most {max} on this machine of {cores} \
             cores; 0 = one per core)"
        ));
    }
    Ok(threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_estimates_above_the_limit_or_overflowing_are_refused() {
        assert!(check_memory("--samples", &[1000, 32], 8).is_ok());
        let error = check_memory("--samples x players", &[1 << 40, 32], 8).unwrap_err();
        assert!(error.to_string().contains("64 GiB"), "{error}");
        assert!(check_memory("--samples", &[usize::MAX, usize::MAX, 8], 8).is_err());
        let error = check_memory("text", &[100usize << 30], 1)
            .unwrap_err()
            .to_string();
        assert!(error.contains("limit of 64 GiB"), "{error}");
        // Under the limit but over this machine's memory (where it has less than 64 GiB):
        // refused by what the machine has, before anything is allocated.
        if let Some(physical) = machine_memory().filter(|&p| p < MEMORY_LIMIT_BYTES) {
            let count = (physical / 1024 + 1) as usize;
            let error = check_memory("--permutation-chains", &[count], 1024).unwrap_err();
            assert!(error.to_string().contains("this machine's"), "{error}");
        }
    }

    #[test]
    fn cache_and_threads_are_bounded() {
        assert_eq!(cache_bytes(1024).unwrap(), 1 << 30);
        let error = cache_bytes(1 << 44).unwrap_err().to_string();
        assert!(error.contains("--cache-mb"), "{error}");
        assert_eq!(parse_threads("0"), Ok(0));
        assert!(parse_threads("100000").unwrap_err().contains("4 per core"));
        assert!(parse_threads("-1").is_err());
    }
}
