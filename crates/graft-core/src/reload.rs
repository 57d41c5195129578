//! What reading the config file again changes in a running server. Projects are added,
//! removed and changed ([`ProjectConfig::changes`]: every key, their adapter and retrieval
//! settings as their repository and the index they search), and the keys of [`LIVE`] (the
//! requests' limits and defaults, `[generation]`; the model requests naming none go to) take
//! effect at once, so the arm an evaluation chose is served without a restart; every other key
//! ([`Snapshot::at_next_start`]) waits for the next start and is named, so that no edit is
//! ignored without a word.
//!
//! This module reads the file and says what differs; it applies nothing (the server swaps
//! projects, the binary loads a new adapter first).

use std::collections::BTreeSet;
use std::path::Path;

use crate::config::{Config, ConfigError, ProjectConfig};

/// What a running server takes up at once besides the projects, whole sections or dotted
/// keys: the requests' limits and defaults, and the model that requests naming none go to.
pub const LIVE: [&str; 2] = ["generation", "server.default_model"];

/// Whether the dotted `key` is [`LIVE`] or lies inside a live section.
fn is_live(key: &str) -> bool {
    LIVE.iter()
        .any(|live| key.strip_prefix(live).is_some_and(|rest| rest.is_empty() || rest.starts_with('.')))
}

/// The config file as read once: the validated [`Config`] and the file's own keys, which say
/// what an edit touched (a default written out is a key of the file too).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub config: Config,
    table: toml::Table,
}

impl Snapshot {
    /// Reads, resolves and validates the config file at `path`, as [`Config::load`] does
    /// (`GRAFT_KIT_DIR` applied), keeping its keys from the same read.
    pub fn read(path: &Path) -> Result<Snapshot, ConfigError> {
        let (config, text) = Config::load_with_text(path)?;
        // The config parsed from the same text, so it is a table.
        let table = text.parse::<toml::Table>().unwrap_or_default();
        Ok(Snapshot { config, table })
    }

    /// The keys outside `[[projects]]` and [`LIVE`] whose value in `now` differs from this
    /// snapshot's, which a running server does not take up: dotted (`server.max_queue`),
    /// sorted.
    pub fn at_next_start(&self, now: &Snapshot) -> Vec<String> {
        let mut keys = Vec::new();
        for key in union(&self.table, &now.table).into_iter().filter(|k| *k != "projects") {
            differing(key, self.table.get(key), now.table.get(key), &mut keys);
        }
        keys.retain(|key| !is_live(key));
        keys
    }

    /// How the keys of `section` differ in `now` from this snapshot, in words
    /// (`generation.default_temperature: 0.2 → 0.5`; a key not written: `default`); empty when
    /// they do not.
    pub fn section_changes(&self, now: &Snapshot, section: &str) -> Vec<String> {
        let mut keys = Vec::new();
        differing(section, self.table.get(section), now.table.get(section), &mut keys);
        let words = |table: &toml::Table, path: &str| {
            let mut parts = path.split('.');
            let first = parts.next().and_then(|k| table.get(k));
            parts
                .try_fold(first, |value, key| Some(value?.as_table()?.get(key)))
                .flatten()
                .map_or("default".to_owned(), ToString::to_string)
        };
        keys.iter()
            .map(|path| format!("{path}: {} → {}", words(&self.table, path), words(&now.table, path)))
            .collect()
    }
}

/// The keys of two tables, sorted.
fn union<'a>(a: &'a toml::Table, b: &'a toml::Table) -> BTreeSet<&'a str> {
    a.keys().chain(b.keys()).map(String::as_str).collect()
}

/// Pushes `path` if its values differ; for a table (a section added or removed counts as an
/// empty one on the other side), the dotted keys inside it that differ.
fn differing(path: &str, old: Option<&toml::Value>, new: Option<&toml::Value>, keys: &mut Vec<String>) {
    let empty = toml::Table::new();
    let (old_table, new_table) = match (old, new) {
        (Some(toml::Value::Table(old)), Some(toml::Value::Table(new))) => (old, new),
        (Some(toml::Value::Table(old)), None) => (old, &empty),
        (None, Some(toml::Value::Table(new))) => (&empty, new),
        (old, new) => {
            if old != new {
                keys.push(path.to_owned());
            }
            return;
        }
    };
    for key in union(old_table, new_table) {
        differing(&format!("{path}.{key}"), old_table.get(key), new_table.get(key), keys);
    }
}

impl ProjectConfig {
    /// How `new` differs from this project, in words (`adapter: none → `tokio-lora``,
    /// `index: own → `api`'s`); empty when it does not. A running server takes every one up.
    pub fn changes(&self, new: &ProjectConfig) -> Vec<String> {
        let adapter = |a: &Option<String>| a.as_deref().map_or("none".to_owned(), |a| format!("`{a}`"));
        let index = |i: &Option<String>| i.as_deref().map_or("own".to_owned(), |i| format!("`{i}`'s"));
        let mut changes = Vec::new();
        if self.adapter != new.adapter {
            changes.push(format!("adapter: {} → {}", adapter(&self.adapter), adapter(&new.adapter)));
        }
        let numbers = [
            ("retrieval", self.retrieval.to_string(), new.retrieval.to_string()),
            ("top_k", self.top_k.to_string(), new.top_k.to_string()),
            ("context_tokens", self.context_tokens.to_string(), new.context_tokens.to_string()),
        ];
        for (key, old, new) in numbers {
            if old != new {
                changes.push(format!("{key}: {old} → {new}"));
            }
        }
        if self.remote_urls != new.remote_urls {
            changes.push(format!("remote_urls: {:?} → {:?}", self.remote_urls, new.remote_urls));
        }
        if self.path != new.path {
            changes.push(format!("path: {} → {}", self.path.display(), new.path.display()));
        }
        if self.also_search != new.also_search {
            changes.push(format!("also_search: {:?} → {:?}", self.also_search, new.also_search));
        }
        if self.index != new.index {
            changes.push(format!("index: {} → {}", index(&self.index), index(&new.index)));
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config `text` as read from a file in `dir` (saved over the last one, as an edit).
    fn snapshot(dir: &tempfile::TempDir, text: &str) -> Snapshot {
        let path = dir.path().join("graft.toml");
        std::fs::write(&path, text).unwrap();
        Snapshot::read(&path).unwrap()
    }

    const PROJECTS: &str =
        "[[projects]]\nname = \"api\"\npath = \"api\"\n\n[[projects]]\nname = \"web\"\npath = \"web\"\nadapter = \"web-lora\"\n";

    #[test]
    fn a_projects_changes_are_live_and_the_rest_named_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let started = snapshot(&dir, &format!("[generation]\ndefault_temperature = 0.2\n\n{PROJECTS}"));
        assert!(started.at_next_start(&started).is_empty());

        // Only a project's settings and the default model: nothing waits.
        let live = PROJECTS.replace(
            "adapter = \"web-lora\"",
            "retrieval = false\ntop_k = 3\ncontext_tokens = 900\nalso_search = [\"api\"]",
        );
        let now = snapshot(
            &dir,
            &format!("[server]\ndefault_model = \"web\"\n\n[generation]\ndefault_temperature = 0.2\n\n{live}"),
        );
        assert_eq!(started.at_next_start(&now), Vec::<String>::new());
        let (web, web_now) = (&started.config.projects[1], &now.config.projects[1]);
        assert_eq!(
            web.changes(web_now),
            [
                "adapter: `web-lora` → none",
                "retrieval: true → false",
                "top_k: 5 → 3",
                "context_tokens: 512 → 900",
                "also_search: [] → [\"api\"]"
            ]
        );
        assert!(web.changes(web).is_empty());

        // Keys outside the projects are named, nested ones by their dotted path, the keys of
        // a section added; a project's repository and index, in words too.
        let other = PROJECTS
            .replace("path = \"web\"", "path = \"api\"\nindex = \"api\"")
            .replace("name = \"api\"", "name = \"core\"");
        let now = snapshot(
            &dir,
            &format!(
            "[generation]\ndefault_temperature = 0.7\n\n[server]\nmax_queue = 3\n\n[[projects]]\nname = \"api\"\npath = \"api\"\n\n{other}"
        ),
        );
        assert_eq!(started.at_next_start(&now), ["server.max_queue"]);
        let default_and_more = snapshot(&dir, "[server]\ndefault_model = \"api\"\nmax_queue = 3\n");
        assert_eq!(started.at_next_start(&default_and_more), ["server.max_queue"]);
        assert!(is_live("generation.default_top_p") && is_live("server.default_model"));
        assert!(!is_live("server.default_models") && !is_live("generations"));
        // `[generation]` is live, its changes in words.
        assert_eq!(
            started.section_changes(&now, "generation"),
            ["generation.default_temperature: 0.2 → 0.7"]
        );
        let unwritten = snapshot(&dir, "[generation]\ndefault_max_tokens = 64\n");
        assert_eq!(
            started.section_changes(&unwritten, "generation"),
            [
                "generation.default_max_tokens: default → 64",
                "generation.default_temperature: 0.2 → default"
            ]
        );
        assert!(now.section_changes(&now, "generation").is_empty());
        let moved = &now.config.projects[2];
        let (from, to) = (web.path.display(), moved.path.display());
        assert_eq!(
            web.changes(moved),
            [format!("path: {from} → {to}"), "index: own → `api`'s".to_owned()]
        );
        assert_eq!(moved.changes(web)[1], "index: `api`'s → own");
    }

    #[test]
    fn remote_urls_are_live_and_the_words_name_both_lists() {
        let api = ProjectConfig::new("api", "api");
        let mut now = api.clone();
        now.remote_urls = vec!["github.com/acme/api".into()];
        assert_eq!(api.changes(&now), [r#"remote_urls: [] → ["github.com/acme/api"]"#]);
    }

    #[test]
    fn a_file_that_does_not_validate_is_an_error_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graft.toml");
        std::fs::write(&path, "[[projects]]\nname = \"a b\"\npath = \".\"\n").unwrap();
        let err = Snapshot::read(&path).unwrap_err().to_string();
        assert!(err.contains("projects") && err.contains("graft.toml"), "{err}");
        assert!(Snapshot::read(&dir.path().join("missing.toml")).is_err());
    }
}
