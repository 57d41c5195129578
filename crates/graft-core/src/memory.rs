//! Giving the memory a finished piece of work freed back to the system.
//!
//! glibc's allocator keeps what a program frees for its next allocations: after a large index
//! run (hundreds of MB of files, chunks and writer buffers, freed in pieces between others
//! still in use) a server's resident memory stays near the run's peak for as long as it
//! serves. [`give_back`] asks the allocator to return its free pages; it is cheap enough to
//! call after each run (milliseconds), never per request. Elsewhere than glibc it does
//! nothing.

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
    }
}
