//! Giving the memory a finished piece of work freed back to the system.
//!
//! glibc's allocator keeps what a program frees for its next allocations: after a large index
//! run (hundreds of MB of files, chunks and writer buffers, freed in pieces between others
//! still in use) a server's resident memory stays near the run's peak for as long as it
//! serves. [`give_back`] asks the allocator to return its free pages; it is cheap enough to
//! call after each run (milliseconds), never per request. Elsewhere than glibc it does
//! nothing. [`resident_bytes`] and [`peak_bytes`] say how much a process holds, for the
//! benchmarks that report it.

/// Returns the allocator's free memory to the system (glibc's `malloc_trim`); says whether any
/// was returned.
pub fn give_back() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists under its locks; any
        // thread may call it at any time.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// This process's resident memory in bytes, where the system says (Linux: `/proc/self/statm`).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// The most resident memory this process has held since it started, or since
/// [`reset_peak`] (Linux: `VmHWM` in `/proc/self/status`).
pub fn peak_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Starts [`peak_bytes`] again from the resident memory now (Linux: `/proc/self/clear_refs`);
/// says whether it could.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_memory_goes_back_to_the_system() {
        // Many small blocks (below the size glibc maps on its own), every other one freed
        // again, so the heap cannot simply shrink from its top.
        let mut blocks: Vec<Vec<u8>> = (0..200_000).map(|i| vec![(i % 251) as u8; 1000]).collect();
        let kept: Vec<Vec<u8>> = blocks.iter().step_by(64).cloned().collect();
        let full = resident_bytes().expect("resident memory");
        blocks.clear();
        blocks.shrink_to_fit();
        give_back();
        let after = resident_bytes().expect("resident memory");
        assert!(
            after + 100 * 1024 * 1024 < full,
            "about 200 MB freed, {} MB given back",
            (full.saturating_sub(after)) / (1024 * 1024)
        );
        assert_eq!(kept.len(), 3125);
        assert!(kept.iter().all(|b| b.len() == 1000));
        // The peak remembers the 200 MB until it is reset (the kernel's counts lag by a few
        // pages).
        let peak = peak_bytes().expect("peak memory");
        assert!(peak + 4 * 1024 * 1024 >= full, "{peak} < {full}");
        assert!(reset_peak());
        let reset = peak_bytes().expect("peak memory");
        assert!(reset + 100 * 1024 * 1024 < peak, "{reset} after {peak}");
    }
}
