//! Getting a wheel onto disk with its sha256 verified: from PyPI's file host (crates.io's for a
//! crate), a mirror with the same layout, or a local folder of wheel files.
//!
//! This is the only code in graft that reaches the network. It never installs anything: it
//! hands a verified wheel file to the installer.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::manifest::{Host, Wheel, CRATE_FILES, PYPI_FILES};
use crate::{KitError, Progress};

/// Environment variable: base URL of a PyPI file-host mirror, replacing [`PYPI_FILES`].
pub const MIRROR_ENV: &str = "GRAFT_KIT_MIRROR";
/// Environment variable: base URL of a crates.io file-host mirror, replacing [`CRATE_FILES`].
pub const CRATES_MIRROR_ENV: &str = "GRAFT_KIT_CRATES_MIRROR";
/// Environment variable: a local folder holding the wheel files (for machines with no network).
pub const WHEELS_ENV: &str = "GRAFT_KIT_WHEELS";

const ATTEMPTS: u32 = 3;

/// Where wheels (and crates) come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// HTTP(S) file hosts laid out like `files.pythonhosted.org` (`base`) and
    /// `static.crates.io` (`crates`).
    Http { base: String, crates: String },
    /// A folder holding the wheel (and crate) files under their own names.
    Folder(PathBuf),
}

impl Default for Source {
    fn default() -> Self {
        Source::Http {
            base: PYPI_FILES.to_owned(),
            crates: CRATE_FILES.to_owned(),
        }
    }
}

impl Source {
    /// `GRAFT_KIT_WHEELS` if set, else PyPI and crates.io, or the mirrors `GRAFT_KIT_MIRROR`
    /// and `GRAFT_KIT_CRATES_MIRROR` name.
    pub fn from_env() -> Source {
        let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let Some(folder) = var(WHEELS_ENV) {
            return Source::Folder(PathBuf::from(folder));
        }
        let base = |name, default: &str| var(name).map_or(default.to_owned(), |b| b.trim_end_matches('/').to_owned());
        Source::Http {
            base: base(MIRROR_ENV, PYPI_FILES),
            crates: base(CRATES_MIRROR_ENV, CRATE_FILES),
        }
    }

    /// Makes a verified copy of `wheel` at `dest` (written through `dest` + `.part`, so `dest`
    /// only ever holds a complete, verified file).
    pub(crate) fn fetch(&self, wheel: &Wheel, dest: &Path, progress: &dyn Progress) -> Result<(), KitError> {
        let part = dest.with_extension("whl.part");
        let result = match self {
            Source::Folder(folder) => {
                let from = folder.join(wheel.filename);
                let file = File::open(&from).map_err(|e| KitError::io(&from, e))?;
                let total = file.metadata().ok().map(|m| m.len());
                progress.start(wheel.filename, total);
                copy_hashed(file, &part, progress)
                    .map_err(|e| KitError::io(&part, e))
                    .and_then(|sha| verify(wheel, &from.display().to_string(), sha))
            }
            Source::Http { base, crates } => {
                let host = match wheel.host {
                    Host::PyPi => base,
                    Host::Crates => crates,
                };
                let url = format!("{}{}", host.trim_end_matches('/'), wheel.path);
                download(&url, &part, progress).and_then(|sha| verify(wheel, &url, sha))
            }
        };
        match result {
            Ok(()) => std::fs::rename(&part, dest).map_err(|e| KitError::io(dest, e)),
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                Err(e)
            }
        }
    }
}

fn verify(wheel: &Wheel, origin: &str, actual: String) -> Result<(), KitError> {
    if actual == wheel.sha256 {
        Ok(())
    } else {
        Err(KitError::ChecksumMismatch {
            file: wheel.filename.to_owned(),
            origin: origin.to_owned(),
            expected: wheel.sha256.to_owned(),
            actual,
        })
    }
}

/// Downloads `url` to `part`, retrying transient failures, and returns the sha256 of the body.
fn download(url: &str, part: &Path, progress: &dyn Progress) -> Result<String, KitError> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .try_proxy_from_env(true)
        .build();
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            tracing::warn!(%url, attempt, error = %last_error, "download failed, retrying");
            std::thread::sleep(Duration::from_secs(2u64.pow(attempt - 1)));
        }
        let response = match agent.get(url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                let message = format!("HTTP {code} {}", r.status_text());
                // 4xx will not get better by asking again (except 408 and 429).
                if (400..500).contains(&code) && code != 408 && code != 429 {
                    return Err(KitError::Download {
                        url: url.to_owned(),
                        message,
                    });
                }
                last_error = message;
                continue;
            }
            Err(e) => {
                last_error = e.to_string();
                continue;
            }
        };
        let total = response.header("content-length").and_then(|v| v.parse::<u64>().ok());
        progress.start(url.rsplit('/').next().unwrap_or(url), total);
        match copy_hashed(response.into_reader(), part, progress) {
            Ok(sha) => {
                let written = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
                match total {
                    Some(total) if total != written => {
                        last_error = format!("connection closed after {written} of {total} bytes");
                    }
                    _ => return Ok(sha),
                }
            }
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(KitError::Download {
        url: url.to_owned(),
        message: format!("{last_error} (after {ATTEMPTS} attempts)"),
    })
}

/// Copies `from` into a new file at `to`, returning the hex sha256 of what was copied.
fn copy_hashed(mut from: impl Read, to: &Path, progress: &dyn Progress) -> io::Result<String> {
    let mut out = io::BufWriter::new(File::create(to)?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        progress.advance(n as u64);
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(hex::encode(hasher.finalize()))
}
