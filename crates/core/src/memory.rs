//! How much memory this process may use: what a stage checks a count or a run against before
//! allocating, so that the kernel does not kill it part-way with nothing said.

/// The memory this process may use, in bytes, where the system says: the machine's physical
/// memory, or less where a control group limits it (a container, a Slurm job): the limit the
/// kernel kills at.
pub fn machine_memory() -> Option<u64> {
    let mut limit: Option<u64> = None;
    #[cfg(unix)]
    {
        // SAFETY: sysconf reads a system constant; no memory is touched.
        let (pages, page_size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && page_size > 0 {
            limit = (pages as u64).checked_mul(page_size as u64);
        }
    }
    // cgroup v2, then v1 ("max", or v1's huge number, when there is no limit). Read directly:
    // these are the kernel's files, which `layerprune_core::open_input` refuses as inputs.
    for file in [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ] {
        let cgroup = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .filter(|&bytes| bytes > 0 && bytes < 1 << 60);
        if let Some(bytes) = cgroup {
            limit = Some(limit.map_or(bytes, |l| l.min(bytes)));
        }
    }
    limit
}
