//! Free disk space under an index folder. Qdrant Edge writes vectors, payloads and its
//! write-ahead log through memory maps of files it sizes ahead of their data: when the disk
//! fills, a write into such a map is no error to handle but a SIGBUS that ends the process
//! (`graft index`, or the `graft up` serving everyone). So graft stops writing an index folder
//! while the disk holding it has less than a margin free ([`MIN_FREE_MB`], `index.min_free_mb`,
//! or `GRAFT_INDEX_MIN_FREE_MB`), with an error that says so, before the write that would crash.
//!
//! This module only measures and refuses; it deletes nothing. A Qdrant server's disk is the
//! server's own business.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::IndexError;

/// The free space (MB) graft keeps under an index folder it writes: a write-ahead log segment
/// (32 MB) and a step's vectors and records, with room to spare.
pub const MIN_FREE_MB: u64 = 64;

/// The margin this process was configured with ([`set_min_free_mb`]).
static CONFIGURED_MB: AtomicU64 = AtomicU64::new(MIN_FREE_MB);

/// Sets the margin for this process (`index.min_free_mb`, once the config is read): a
/// process-wide policy, as every index it writes lies on some disk of the same machine.
pub fn set_min_free_mb(mb: u64) {
    CONFIGURED_MB.store(mb, Ordering::Relaxed);
}

/// The margin in force: `GRAFT_INDEX_MIN_FREE_MB` where set (0 turns the check off), else the
/// configured one ([`set_min_free_mb`]; [`MIN_FREE_MB`] unless set).
pub fn min_free_mb() -> u64 {
    std::env::var("GRAFT_INDEX_MIN_FREE_MB")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| CONFIGURED_MB.load(Ordering::Relaxed))
}

/// Refuses when the disk holding `dir` (or its nearest existing parent) has less than the
/// margin in force free.
pub fn ensure_free(dir: &Path) -> Result<(), IndexError> {
    ensure_free_at_least(dir, min_free_mb())
}

/// Refuses when the disk holding `dir` has less than `min_mb` free. A disk whose free space
/// cannot be read is let be (the write reports its own error).
pub fn ensure_free_at_least(dir: &Path, min_mb: u64) -> Result<(), IndexError> {
    if min_mb == 0 {
        return Ok(());
    }
    let Some(existing) = dir.ancestors().find(|d| d.exists()) else {
        return Ok(());
    };
    let Ok(free) = fs4::available_space(existing) else {
        return Ok(());
    };
    let free_mb = free / (1024 * 1024);
    if free_mb < min_mb {
        return Err(IndexError::DiskFull {
            dir: dir.to_owned(),
            free_mb,
            min_mb,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_with_less_free_than_the_margin_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("not/made/yet");
        ensure_free_at_least(&index, 1).expect("a test machine has a megabyte free");
        ensure_free_at_least(&index, 0).expect("0 checks nothing");
        let said = ensure_free_at_least(&index, u64::MAX / (1 << 21)).unwrap_err().to_string();
        assert!(said.contains(&index.display().to_string()) && said.contains("MB free"), "{said}");
    }
}
