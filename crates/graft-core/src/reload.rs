//! What reading the config file again changes in a running server. A project's serving
//! settings ([`LIVE`]: its adapter, retrieval, `top_k`, `context_tokens` and remote URLs) take
//! effect at once, so the arm an evaluation chose is served without a restart; every other
//! key the file changes waits for the next start and is named ([`Snapshot::at_next_start`]),
//! so that no edit is ignored without a word.
//!
//! This module reads the file and says what differs; it applies nothing (the server swaps a
//! project's settings, the binary loads its adapter first).

use std::collections::BTreeSet;
use std::path::Path;

use crate::config::{Config, ConfigError, ProjectConfig};

/// The keys of a `[[projects]]` entry that a running server takes up at once.
pub const LIVE: [&str; 5] = ["adapter", "retrieval", "top_k", "context_tokens", "remote_urls"];

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

    /// The keys whose value in `now` differs from this snapshot's and that a running server
    /// does not take up: dotted (`generation.default_temperature`; a project's by its name,
    /// `projects.api.path`), and projects added or removed, in the file's order of sections.
    pub fn at_next_start(&self, now: &Snapshot) -> Vec<String> {
        let mut keys = Vec::new();
        for key in union(&self.table, &now.table) {
            let (old, new) = (self.table.get(key), now.table.get(key));
            if key == "projects" {
                projects_at_next_start(old, new, &mut keys);
            } else {
                differing(key, old, new, &mut keys);
            }
        }
        keys
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

/// The `[[projects]]` entries by name (an entry without one, which validation refuses, is
/// left out).
fn by_name(projects: Option<&toml::Value>) -> Vec<(&str, &toml::Table)> {
    let entries = projects.and_then(toml::Value::as_array).map(Vec::as_slice).unwrap_or_default();
    entries
        .iter()
        .filter_map(toml::Value::as_table)
        .filter_map(|t| Some((t.get("name")?.as_str()?, t)))
        .collect()
}

fn find<'a>(list: &[(&str, &'a toml::Table)], name: &str) -> Option<&'a toml::Table> {
    list.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

fn projects_at_next_start(old: Option<&toml::Value>, new: Option<&toml::Value>, keys: &mut Vec<String>) {
    let (old, new) = (by_name(old), by_name(new));
    for (name, table) in &old {
        let Some(now) = find(&new, name) else {
            keys.push(format!("projects: `{name}` removed"));
            continue;
        };
        for key in union(table, now).into_iter().filter(|k| !LIVE.contains(k)) {
            differing(&format!("projects.{name}.{key}"), table.get(key), now.get(key), keys);
        }
    }
    for (name, _) in new.iter().filter(|(name, _)| find(&old, name).is_none()) {
        keys.push(format!("projects: `{name}` added"));
    }
}

impl ProjectConfig {
    /// This project served with `new`'s [`LIVE`] settings (its name, repository and index
    /// stay).
    pub fn with_live_settings_of(&self, new: &ProjectConfig) -> ProjectConfig {
        ProjectConfig {
            adapter: new.adapter.clone(),
            retrieval: new.retrieval,
            top_k: new.top_k,
            context_tokens: new.context_tokens,
            remote_urls: new.remote_urls.clone(),
            ..self.clone()
        }
    }

    /// How `new`'s [`LIVE`] settings differ from this project's, in words (`adapter: none →
    /// `tokio-lora``); empty when they do not.
    pub fn live_changes(&self, new: &ProjectConfig) -> Vec<String> {
        let adapter = |a: &Option<String>| a.as_deref().map_or("none".to_owned(), |a| format!("`{a}`"));
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
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(text: &str) -> Snapshot {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graft.toml");
        std::fs::write(&path, text).unwrap();
        Snapshot::read(&path).unwrap()
    }

    const PROJECTS: &str =
        "[[projects]]\nname = \"api\"\npath = \"api\"\n\n[[projects]]\nname = \"web\"\npath = \"web\"\nadapter = \"web-lora\"\n";

    #[test]
    fn a_projects_serving_settings_are_live_and_the_rest_named_for_the_next_start() {
        let started = snapshot(&format!("[generation]\ndefault_temperature = 0.2\n\n{PROJECTS}"));
        assert!(started.at_next_start(&started).is_empty());

        // Only live settings: nothing waits.
        let live = PROJECTS.replace("adapter = \"web-lora\"", "retrieval = false\ntop_k = 3\ncontext_tokens = 900");
        let now = snapshot(&format!("[generation]\ndefault_temperature = 0.2\n\n{live}"));
        assert_eq!(started.at_next_start(&now), Vec::<String>::new());
        let (web, web_now) = (&started.config.projects[1], &now.config.projects[1]);
        assert_eq!(
            web.live_changes(web_now),
            [
                "adapter: `web-lora` → none",
                "retrieval: true → false",
                "top_k: 5 → 3",
                "context_tokens: 512 → 900"
            ]
        );
        let served = web.with_live_settings_of(web_now);
        assert_eq!((served.adapter, served.retrieval, served.top_k), (None, false, 3));
        assert!(web.live_changes(web).is_empty());

        // Everything else is named: nested keys by their dotted path, a project's by its
        // name, projects added and removed, the keys of a section added.
        let other = PROJECTS
            .replace("path = \"web\"", "path = \"site\"")
            .replace("name = \"api\"", "name = \"core\"");
        let now = snapshot(&format!(
            "[generation]\ndefault_temperature = 0.7\n\n[server]\nmax_queue = 3\n\n{other}"
        ));
        assert_eq!(
            started.at_next_start(&now),
            [
                "generation.default_temperature",
                "projects: `api` removed",
                "projects.web.path",
                "projects: `core` added",
                "server.max_queue"
            ]
        );
    }

    #[test]
    fn remote_urls_are_live_and_the_words_name_both_lists() {
        let mut api = ProjectConfig::new("api", "api");
        let mut now = api.clone();
        now.remote_urls = vec!["github.com/acme/api".into()];
        assert_eq!(api.live_changes(&now), [r#"remote_urls: [] → ["github.com/acme/api"]"#]);
        api.index = Some("other".into());
        assert_eq!(api.with_live_settings_of(&now).index.as_deref(), Some("other"), "the index stays");
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
