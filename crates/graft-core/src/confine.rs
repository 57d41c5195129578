//! Reading a file that must lie inside given folders, whatever links lead to it.
//!
//! Repositories and adapter folders come from people graft does not control: a symbolic link
//! committed to a repository (`etc_link -> /etc`), an adapter file linked to elsewhere, a folder
//! swapped for a link after it was checked, or a FIFO where a file should be. [`read_confined`]
//! opens the file first and then asks the kernel where the opened file really is
//! (`/proc/self/fd`), so what is checked is exactly what is read: no window between a check and
//! the read. Only regular files are read (a FIFO or device is refused without blocking), up to a
//! size limit.
//!
//! This module reads files; it decides nothing about what they are for.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file (after every link) lies outside the folders it must be in.
    #[error("{} resolves to {}, outside {}", path.display(), real.display(), roots)]
    Outside { path: PathBuf, real: PathBuf, roots: String },
    /// A FIFO, socket, device or folder where a regular file was expected.
    #[error("{} is not a regular file ({kind})", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{} is {size} bytes, more than the {max} allowed", path.display())]
    TooLarge { path: PathBuf, size: u64, max: u64 },
}

/// A file read by [`read_confined`].
#[derive(Debug, Clone)]
pub struct ConfinedFile {
    /// Where the file really is: no links, absolute.
    pub real: PathBuf,
    pub bytes: Vec<u8>,
}

/// Reads `path` if it is a regular file of at most `max_bytes` whose real location lies inside
/// one of `roots` (folders; each is resolved to its own real path first).
pub fn read_confined(path: &Path, roots: &[&Path], max_bytes: u64) -> Result<ConfinedFile, ConfineError> {
    let io = |source| ConfineError::Io {
        path: path.to_owned(),
        source,
    };
    let file = open_nonblocking(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(ConfineError::NotAFile {
            path: path.to_owned(),
            kind: file_kind(&meta),
        });
    }
    let real = real_path(&file, path).map_err(io)?;
    let inside = roots
        .iter()
        .filter_map(|root| root.canonicalize().ok())
        .any(|root| real.starts_with(&root));
    if !inside {
        return Err(ConfineError::Outside {
            path: path.to_owned(),
            real,
            roots: roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", "),
        });
    }
    if meta.len() > max_bytes {
        return Err(ConfineError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
            max: max_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow after the check: never read past the limit.
    file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ConfineError::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
            max: max_bytes,
        });
    }
    Ok(ConfinedFile { real, bytes })
}

/// Opens for reading without blocking on a FIFO that has no writer.
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// Where an open file really is.
fn real_path(file: &File, path: &Path) -> std::io::Result<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            return Ok(real);
        }
    }
    let _ = file;
    path.canonicalize()
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if meta.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_inside_is_read_and_its_real_path_given() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "hello").unwrap();
        let file = read_confined(&dir.path().join("a.txt"), &[dir.path()], 100).unwrap();
        assert_eq!(file.bytes, b"hello");
        assert_eq!(file.real, dir.path().canonicalize().unwrap().join("a.txt"));
    }

    #[cfg(unix)]
    #[test]
    fn links_are_judged_by_where_they_lead() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real.txt"), "inside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("real.txt"), dir.path().join("alias.txt")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("leak")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("leak_dir")).unwrap();

        let alias = read_confined(&dir.path().join("alias.txt"), &[dir.path()], 100).unwrap();
        assert_eq!(alias.bytes, b"inside");
        assert!(alias.real.ends_with("real.txt"));
        for escape in ["leak", "leak_dir/secret"] {
            let err = read_confined(&dir.path().join(escape), &[dir.path()], 100).unwrap_err();
            assert!(matches!(err, ConfineError::Outside { .. }), "{escape}: {err}");
        }
        assert!(read_confined(&dir.path().join("leak"), &[dir.path(), outside.path()], 100).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("adapter_config.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = read_confined(&fifo, &[dir.path()], 100).unwrap_err();
        assert!(matches!(err, ConfineError::NotAFile { kind: "a FIFO", .. }), "{err}");
    }

    #[test]
    fn a_file_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), vec![b'x'; 101]).unwrap();
        let err = read_confined(&dir.path().join("big"), &[dir.path()], 100).unwrap_err();
        assert!(matches!(err, ConfineError::TooLarge { size: 101, max: 100, .. }), "{err}");
        assert!(read_confined(&dir.path().join("missing"), &[dir.path()], 100).is_err());
    }
}
