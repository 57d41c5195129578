//! The pool's bookkeeping, apart from any model: which adapter version serves each name, the
//! least-recently-used order, leases, and which idle adapters to unload to make room.
//!
//! A [`Version`] leaves the engine (through its [`Unload`]) when the last holder lets go: the
//! table, or a [`Lease`] of a request still running on it. Nothing here loads, merges or
//! generates; the unit tests below run without a model.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::PoolLimits;

/// Takes a model version out of the engine once nothing holds it.
pub(crate) trait Unload: Send + Sync {
    fn unload(&self, name: &str, id: &str);
}

/// One loaded version of an adapter.
pub(crate) struct Version {
    pub(crate) name: String,
    /// The engine's id for it: `name@<first 12 hex digits of the merge key>`.
    pub(crate) id: String,
    pub(crate) bytes: u64,
    pub(crate) unloader: Arc<dyn Unload>,
}

impl Drop for Version {
    fn drop(&mut self) {
        self.unloader.unload(&self.name, &self.id);
    }
}

/// A model chosen for a request, held while the request runs: while any lease on an adapter
/// version exists, that version stays loaded.
#[derive(Clone)]
pub struct Lease {
    pub(crate) name: String,
    pub(crate) version: Option<Arc<Version>>,
}

impl Lease {
    /// The name the request used.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The engine's model id; `None` for the base model.
    pub fn engine_id(&self) -> Option<&str> {
        self.version.as_ref().map(|v| v.id.as_str())
    }
}

/// The state of the adapter files when a version was loaded: sizes and modification times.
/// A change means new files; the merge key then says whether their content really differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint([(u64, u128); 2]);

impl Fingerprint {
    pub(crate) fn of(dir: &Path) -> Option<Fingerprint> {
        let stat = |file: &str| -> Option<(u64, u128)> {
            let meta = std::fs::metadata(dir.join(file)).ok()?;
            let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?.as_nanos();
            Some((meta.len(), mtime))
        };
        Some(Fingerprint([stat("adapter_config.json")?, stat("adapter_model.safetensors")?]))
    }
}

/// A loaded adapter.
pub(crate) struct Slot {
    pub(crate) current: Arc<Version>,
    /// The files `current` was loaded from.
    pub(crate) files: Option<Fingerprint>,
    /// Files that failed to load, so they are not retried on every request.
    pub(crate) failed: Option<(Option<Fingerprint>, String)>,
    pub(crate) last_used: u64,
    pub(crate) loaded_at: SystemTime,
}

impl Slot {
    /// Requests running on the current version.
    pub(crate) fn in_flight(&self) -> usize {
        Arc::strong_count(&self.current) - 1
    }
}

#[derive(Default)]
pub(crate) struct Table {
    pub(crate) slots: HashMap<String, Slot>,
    /// Adapters loaded from folders outside the store (`Pool::load` with a path).
    pub(crate) registered: HashMap<String, PathBuf>,
    /// Store adapters unloaded on request: unknown until loaded again with `Pool::load`.
    pub(crate) unloaded: HashSet<String>,
    /// A logical clock for LRU order.
    clock: u64,
}

impl Table {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// A lease on `name`'s loaded version when it is still the one to serve: its files
    /// (`files`, as they are now) have not changed since, or their change already failed to
    /// load, or they are gone.
    pub(crate) fn lease_if_current(&mut self, name: &str, files: Option<Fingerprint>) -> Option<Lease> {
        let clock = self.tick();
        let slot = self.slots.get_mut(name)?;
        let failed_files = slot.failed.as_ref().map(|f| f.0);
        if files.is_some() && files != slot.files && failed_files != Some(files) {
            return None;
        }
        slot.last_used = clock;
        Some(Lease {
            name: name.to_owned(),
            version: Some(Arc::clone(&slot.current)),
        })
    }

    /// A lease on whatever version of `name` is loaded.
    pub(crate) fn lease_if_loaded(&mut self, name: &str) -> Option<Lease> {
        let clock = self.tick();
        let slot = self.slots.get_mut(name)?;
        slot.last_used = clock;
        Some(Lease {
            name: name.to_owned(),
            version: Some(Arc::clone(&slot.current)),
        })
    }

    /// Makes `version` (loaded from `files`) the one new requests on `name` get. The version
    /// it replaces leaves the engine when its last request ends.
    pub(crate) fn install(&mut self, name: &str, version: Arc<Version>, files: Option<Fingerprint>) {
        let last_used = self.tick();
        let slot = Slot {
            current: version,
            files,
            failed: None,
            last_used,
            loaded_at: SystemTime::now(),
        };
        self.slots.insert(name.to_owned(), slot);
    }

    /// Remembers that `files` of `name` failed to load; true when an older version serves on.
    pub(crate) fn record_failure(&mut self, name: &str, files: Option<Fingerprint>, message: String) -> bool {
        match self.slots.get_mut(name) {
            Some(slot) => {
                slot.failed = Some((files, message));
                true
            }
            None => false,
        }
    }

    /// Unloads least recently used idle adapters until one more of `bytes` fits `limits`;
    /// returns the names unloaded, or which limit cannot be met because every other adapter
    /// serves requests. The adapter being replaced (`name`) does not count: its entry is about
    /// to be replaced.
    pub(crate) fn make_room(&mut self, name: &str, bytes: u64, limits: PoolLimits) -> Result<Vec<String>, String> {
        let mut evicted = Vec::new();
        loop {
            let others = self.slots.iter().filter(|(n, _)| n.as_str() != name);
            let (count, used) = others.fold((0usize, 0u64), |(c, b), (_, s)| (c + 1, b + s.current.bytes));
            let over_count = count + 1 > limits.max_adapters;
            let over_bytes = limits.max_bytes.is_some_and(|max| used + bytes > max);
            if !over_count && !over_bytes {
                return Ok(evicted);
            }
            let idle_lru = self
                .slots
                .iter()
                .filter(|(n, s)| n.as_str() != name && s.in_flight() == 0)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(n, _)| n.clone());
            let Some(victim) = idle_lru else {
                return Err(if over_count {
                    format!("the limit of {} loaded adapters (adapters.max_loaded)", limits.max_adapters)
                } else {
                    format!(
                        "the limit of {} MB of loaded adapters (adapters.max_loaded_mb)",
                        limits.max_bytes.unwrap_or(0) >> 20
                    )
                });
            };
            self.slots.remove(&victim);
            evicted.push(victim);
        }
    }

    /// Loaded adapters, least recently used first.
    pub(crate) fn lru(&self) -> Vec<String> {
        let mut slots: Vec<(&String, u64)> = self.slots.iter().map(|(n, s)| (n, s.last_used)).collect();
        slots.sort_by_key(|s| s.1);
        slots.into_iter().map(|s| s.0.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records what was unloaded, in order.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Unload for Recorder {
        fn unload(&self, _name: &str, id: &str) {
            self.0.lock().unwrap().push(id.to_owned());
        }
    }

    impl Recorder {
        fn unloaded(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    fn version(recorder: &Arc<Recorder>, name: &str, id: &str, bytes: u64) -> Arc<Version> {
        Arc::new(Version {
            name: name.into(),
            id: id.into(),
            bytes,
            unloader: Arc::clone(recorder) as Arc<dyn Unload>,
        })
    }

    const TWO: PoolLimits = PoolLimits {
        max_adapters: 2,
        max_bytes: None,
    };

    #[test]
    fn the_least_recently_used_idle_adapter_makes_room() {
        let recorder = Arc::new(Recorder::default());
        let mut table = Table::default();
        table.install("a", version(&recorder, "a", "a@1", 10), None);
        table.install("b", version(&recorder, "b", "b@1", 10), None);
        // `a` is used after `b`: `b` is now the least recently used.
        drop(table.lease_if_loaded("a"));
        assert_eq!(table.lru(), ["b", "a"]);
        assert_eq!(table.make_room("c", 10, TWO), Ok(vec!["b".to_owned()]));
        assert_eq!(recorder.unloaded(), ["b@1"], "an idle version leaves the engine at once");
        assert_eq!(table.make_room("a", 10, TWO), Ok(vec![]), "replacing `a` needs no room");
    }

    #[test]
    fn a_version_with_requests_is_never_evicted_and_leaves_after_its_last_request() {
        let recorder = Arc::new(Recorder::default());
        let mut table = Table::default();
        table.install("a", version(&recorder, "a", "a@1", 10), None);
        table.install("b", version(&recorder, "b", "b@1", 10), None);
        let lease_a = table.lease_if_loaded("a").unwrap();
        let lease_b = table.lease_if_loaded("b").unwrap();
        let err = table.make_room("c", 10, TWO).unwrap_err();
        assert!(err.contains("adapters.max_loaded"), "{err}");
        assert!(recorder.unloaded().is_empty());

        // Replaced while a request runs on it: the old version stays until that request ends.
        table.install("a", version(&recorder, "a", "a@2", 10), None);
        assert_eq!(table.lease_if_loaded("a").unwrap().engine_id(), Some("a@2"));
        assert!(recorder.unloaded().is_empty());
        drop(lease_a);
        assert_eq!(recorder.unloaded(), ["a@1"]);
        drop(lease_b);
        assert_eq!(table.make_room("c", 10, TWO), Ok(vec!["b".to_owned()]), "b is idle again");
    }

    #[test]
    fn the_byte_limit_counts_loaded_versions() {
        let recorder = Arc::new(Recorder::default());
        let mut table = Table::default();
        let limits = PoolLimits {
            max_adapters: 10,
            max_bytes: Some(25 << 20),
        };
        table.install("a", version(&recorder, "a", "a@1", 10 << 20), None);
        table.install("b", version(&recorder, "b", "b@1", 10 << 20), None);
        assert_eq!(table.make_room("c", 5 << 20, limits), Ok(vec![]));
        assert_eq!(table.make_room("c", 6 << 20, limits), Ok(vec!["a".to_owned()]));
        let _busy = table.lease_if_loaded("b");
        let err = table.make_room("d", 20 << 20, limits).unwrap_err();
        assert!(err.contains("25 MB") && err.contains("adapters.max_loaded_mb"), "{err}");
    }

    #[test]
    fn changed_files_are_not_current_until_they_fail_to_load() {
        let recorder = Arc::new(Recorder::default());
        let mut table = Table::default();
        let old = Some(Fingerprint([(1, 1), (2, 2)]));
        let new = Some(Fingerprint([(1, 1), (2, 3)]));
        table.install("a", version(&recorder, "a", "a@1", 1), old);
        assert!(table.lease_if_current("a", old).is_some());
        assert!(table.lease_if_current("a", new).is_none(), "new files: load them");
        assert!(table.record_failure("a", new, "broken".into()));
        assert!(
            table.lease_if_current("a", new).is_some(),
            "broken new files: the old version serves"
        );
        assert!(table.lease_if_current("a", None).is_some(), "files gone: the loaded version serves");
        assert!(!table.record_failure("nothing", new, "x".into()));
    }
}
