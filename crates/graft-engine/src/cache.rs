//! The content-addressed cache of merged models: `<cache>/<key>.gguf`, where the key hashes the
//! base model's bytes, the adapter's files and the merge settings (and of bases re-stored for
//! the CPU: `<cache>/base-<key>.gguf`). The same inputs always map
//! to the same file, so a merge is done once and reused on every later start.
//!
//! Hashing a multi-gigabyte base on every start would be slow, so its hash is remembered in
//! `<cache>/bases.json`, keyed by path, size and modification time.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::adapter::Adapter;
use crate::merge::{merge, BaseGguf, MergeError, MergeSettings};
use crate::requantize::Restore;

/// Bumped when the merge's output for the same inputs changes.
const MERGE_FORMAT: u32 = 1;

/// A folder of merged models.
#[derive(Debug, Clone)]
pub struct MergeCache {
    dir: PathBuf,
}

/// A merged model, from the cache or made now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub path: PathBuf,
    /// The cache key (the file's name without `.gguf`).
    pub key: String,
    /// False when the cache already held it.
    pub fresh: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct BaseHashes {
    /// `path|size|mtime_ns` → sha256 of the file.
    known: BTreeMap<String, String>,
}

impl MergeCache {
    pub fn new(dir: impl Into<PathBuf>) -> MergeCache {
        MergeCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The merged model for `adapter` on `base`, merging only if the cache lacks it.
    pub fn get_or_merge(&self, base: &BaseGguf, adapter: &Adapter, settings: &MergeSettings) -> Result<Merged, MergeError> {
        let key = self.key(&base.path, adapter, settings)?;
        self.get_or_make(key, |path| merge(base, adapter, settings, path).map(|_| ()))
    }

    /// `base` re-stored for the CPU as `restore` says (see [`crate::requantize`]), converting
    /// only if the cache lacks it. Named `base-<key>.gguf`.
    pub fn get_or_requantize(&self, base: &BaseGguf, restore: Restore) -> Result<Merged, MergeError> {
        let mut h = Sha256::new();
        h.update(format!("graft-requantize-v{MERGE_FORMAT}\n").as_bytes());
        h.update(self.base_hash(&base.path)?.as_bytes());
        // Q8_0 keys as they did when it was the only choice, so existing files are reused.
        h.update(format!("{:?}", restore.target()).as_bytes());
        let key = format!("base-{}", &hex::encode(h.finalize())[..32]);
        self.get_or_make(key, |path| crate::requantize::requantize(base, path, restore).map(|_| ()))
    }

    /// `<key>.gguf`, written by `make` unless the cache holds it. Whoever wants the same file
    /// at once (two graft processes starting on one cache, or two requests for one adapter)
    /// takes turns on `.<key>.lock`: the first writes it, the others wait and reuse it, so no
    /// one reads a file being written or has its temporary file renamed from under it.
    fn get_or_make(&self, key: String, make: impl FnOnce(&Path) -> Result<(), MergeError>) -> Result<Merged, MergeError> {
        let path = self.dir.join(format!("{key}.gguf"));
        if path.is_file() {
            return Ok(Merged { path, key, fresh: false });
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        let lock_path = self.dir.join(format!(".{key}.lock"));
        // Left in place afterwards: removing it could let a waiting process lock a deleted file.
        let lock = File::create(&lock_path).map_err(|e| io_err(&lock_path, e))?;
        match lock.lock() {
            // A file system without locks: writers still never share a temporary file
            // (`merge::temporary_beside`), and the last complete one renamed wins.
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                tracing::debug!(path = %lock_path.display(), "no file locks here; writing without one");
            }
            result => result.map_err(|e| io_err(&lock_path, e))?,
        }
        if path.is_file() {
            return Ok(Merged { path, key, fresh: false });
        }
        make(&path)?;
        Ok(Merged { path, key, fresh: true })
    }

    /// The cache key of a merge.
    pub fn key(&self, base: &Path, adapter: &Adapter, settings: &MergeSettings) -> Result<String, MergeError> {
        let mut h = Sha256::new();
        h.update(format!("graft-merge-v{MERGE_FORMAT}\n").as_bytes());
        h.update(self.base_hash(base)?.as_bytes());
        // The hashes of the bytes the adapter was read from (what is merged), not of whatever
        // the files hold now.
        for (file, sha256) in ["adapter_config.json", "adapter_model.safetensors"].iter().zip(&adapter.sha256) {
            h.update(file.as_bytes());
            h.update(sha256.as_bytes());
        }
        h.update(format!("{:?}", settings.quantized_dtype).as_bytes());
        Ok(hex::encode(h.finalize())[..32].to_owned())
    }

    /// The sha256 of a base model file, remembered by path, size and modification time.
    fn base_hash(&self, base: &Path) -> Result<String, MergeError> {
        let meta = std::fs::metadata(base).map_err(|e| io_err(base, e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let id = format!("{}|{}|{mtime}", base.display(), meta.len());
        let record = self.dir.join("bases.json");
        let mut hashes: BaseHashes = std::fs::read_to_string(&record)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        if let Some(hash) = hashes.known.get(&id) {
            return Ok(hash.clone());
        }
        let hash = hash_file(base).map_err(|e| io_err(base, e))?;
        hashes.known.insert(id, hash.clone());
        // Remembering is an optimisation: a failure to write it only costs a re-hash later.
        if std::fs::create_dir_all(&self.dir).is_ok() {
            let tmp = crate::merge::temporary_beside(&record);
            if let Ok(text) = serde_json::to_string_pretty(&hashes) {
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(&tmp, &record);
                }
            }
        }
        Ok(hash)
    }
}

fn hash_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut h = Sha256::new();
    io::copy(&mut file, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

fn io_err(path: &Path, source: io::Error) -> MergeError {
    MergeError::Io {
        path: path.to_owned(),
        source,
    }
}
