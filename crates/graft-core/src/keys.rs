//! API keys: who may call graft, and on which projects.
//!
//! Keys come from the file `server.api_keys_file` and from the environment variable named by
//! `server.api_keys_env`; both are optional, and with neither, the API is open (graft then only
//! listens on loopback unless `server.allow_unauthenticated` is set).
//!
//! The file:
//!
//! ```toml
//! [[keys]]
//! name = "ci"                 # shown in logs, never the key itself
//! key = "sk-graft-..."        # sent by clients as `Authorization: Bearer sk-graft-...`
//! projects = ["graft"]        # projects and adapters it may use; ["*"] for all
//! admin = false               # admin endpoints: adapter load/unload, re-index, metrics
//! ```
//!
//! The variable: `KEY:project1,project2` entries separated by `;`, with `:admin` appended for
//! an admin key, e.g. `sk-a:graft;sk-b:*:admin`. The base model is open to every valid key.
//!
//! This module reads and checks keys, and says what a reload of them would change (refusing
//! one that leaves none); the server enforces them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::Config;

/// One API key and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// A label for logs.
    #[serde(default)]
    pub name: String,
    pub key: String,
    /// Project and adapter names, or `*`.
    #[serde(default)]
    pub projects: Vec<String>,
    #[serde(default)]
    pub admin: bool,
}

impl ApiKey {
    /// Whether this key may use the project or adapter `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.projects.iter().any(|p| p == "*" || p == model)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<ApiKey>,
}

/// Every configured key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiKeys {
    keys: Vec<ApiKey>,
}

/// The keys a reload adds and removes, by name (a key whose rights changed is both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl KeysChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// A key file or variable that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read API keys file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("API keys file {}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("no API key would be left, which would open the API to anyone (restart graft to serve without keys)")]
    NoneLeft,
}

/// Keys shorter than this are refused: they could be guessed.
const MIN_KEY_LEN: usize = 16;

impl ApiKeys {
    /// The keys configured for `config`: its keys file and its environment variable.
    pub fn load(config: &Config) -> Result<ApiKeys, KeysError> {
        let mut keys = Vec::new();
        if let Some(path) = &config.server.api_keys_file {
            keys.extend(read_file(path)?);
        }
        let var = &config.server.api_keys_env;
        if let Ok(value) = std::env::var(var) {
            keys.extend(parse_env(var, &value)?);
        }
        let keys = ApiKeys { keys };
        keys.check_unique()?;
        Ok(keys)
    }

    pub fn new(keys: Vec<ApiKey>) -> ApiKeys {
        ApiKeys { keys }
    }

    /// No keys: the API is open.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key a bearer token names.
    pub fn find(&self, token: &str) -> Option<&ApiKey> {
        self.keys.iter().find(|k| constant_time_eq(k.key.as_bytes(), token.as_bytes()))
    }

    /// What replacing these keys with `new` changes (a reload of the keys file: `graft serve`
    /// on SIGHUP or when the file changes), or why it must not happen: keys never all go
    /// while serving, since that would open the API to anyone who can reach it (an open API is
    /// chosen at start, with no keys configured).
    pub fn change_to(&self, new: &ApiKeys) -> Result<KeysChange, KeysError> {
        if new.is_empty() && !self.is_empty() {
            return Err(KeysError::NoneLeft);
        }
        let named = |keys: &ApiKeys, other: &ApiKeys| -> Vec<String> {
            keys.keys
                .iter()
                .filter(|k| !other.keys.contains(k))
                .map(|k| k.name.clone())
                .collect()
        };
        Ok(KeysChange {
            added: named(new, self),
            removed: named(self, new),
        })
    }

    fn check_unique(&self) -> Result<(), KeysError> {
        for (i, key) in self.keys.iter().enumerate() {
            if self.keys[..i].iter().any(|k| k.key == key.key) {
                return Err(KeysError::Env {
                    var: "API keys".into(),
                    message: format!("the key of `{}` is given twice", key.name),
                });
            }
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<Vec<ApiKey>, KeysError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file: KeysFile = toml::from_str(&text).map_err(|e| KeysError::File {
        path: path.to_owned(),
        message: e.message().to_owned(),
    })?;
    for (i, key) in file.keys.iter().enumerate() {
        if key.key.len() < MIN_KEY_LEN || key.key.chars().any(char::is_whitespace) {
            return Err(KeysError::File {
                path: path.to_owned(),
                message: format!("keys[{i}].key must be at least {MIN_KEY_LEN} characters without spaces"),
            });
        }
    }
    Ok(file
        .keys
        .into_iter()
        .enumerate()
        .map(|(i, mut k)| {
            if k.name.is_empty() {
                k.name = format!("keys[{i}]");
            }
            k
        })
        .collect())
}

fn parse_env(var: &str, value: &str) -> Result<Vec<ApiKey>, KeysError> {
    let mut keys = Vec::new();
    for (i, entry) in value.split(';').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
        let mut parts = entry.split(':');
        let key = parts.next().unwrap_or_default().to_owned();
        let projects = parts.next().unwrap_or_default();
        let admin = match parts.next() {
            None => false,
            Some("admin") => true,
            Some(other) => {
                return Err(KeysError::Env {
                    var: var.to_owned(),
                    message: format!("entry {}: expected `:admin` after the projects, found `:{other}`", i + 1),
                })
            }
        };
        if key.len() < MIN_KEY_LEN || key.chars().any(char::is_whitespace) {
            return Err(KeysError::Env {
                var: var.to_owned(),
                message: format!("entry {}: the key must be at least {MIN_KEY_LEN} characters without spaces", i + 1),
            });
        }
        keys.push(ApiKey {
            name: format!("{var}[{}]", i + 1),
            key,
            projects: projects
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            admin,
        });
    }
    Ok(keys)
}

/// Compares without stopping at the first difference, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_form_lists_keys_projects_and_admin() {
        let keys = parse_env("V", "sk-aaaaaaaaaaaaaaaa:graft,app; sk-bbbbbbbbbbbbbbbb:*:admin").unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys[0].allows("graft") && keys[0].allows("app") && !keys[0].allows("other"));
        assert!(!keys[0].admin);
        assert!(keys[1].allows("anything") && keys[1].admin);
        let err = parse_env("V", "short:graft").unwrap_err().to_string();
        assert!(err.contains("at least 16"), "{err}");
        let err = parse_env("V", "sk-aaaaaaaaaaaaaaaa:graft:root").unwrap_err().to_string();
        assert!(err.contains(":admin"), "{err}");
    }

    #[test]
    fn the_file_form_is_checked_and_keys_are_found_by_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        std::fs::write(
            &path,
            "[[keys]]\nname = \"ci\"\nkey = \"sk-cccccccccccccccc\"\nprojects = [\"graft\"]\n",
        )
        .unwrap();
        let keys = ApiKeys::new(read_file(&path).unwrap());
        let found = keys.find("sk-cccccccccccccccc").unwrap();
        assert_eq!(found.name, "ci");
        assert!(keys.find("sk-cccccccccccccccd").is_none());
        std::fs::write(&path, "[[keys]]\nkey = \"sk-cccccccccccccccc\"\nproject = [\"graft\"]\n").unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains("project"), "{err}");
    }

    #[test]
    fn a_reload_names_the_keys_it_changes_and_never_leaves_none() {
        let key = |name: &str, key: &str, admin: bool| ApiKey {
            name: name.into(),
            key: key.into(),
            projects: vec!["graft".into()],
            admin,
        };
        let old = ApiKeys::new(vec![
            key("ci", "sk-aaaaaaaaaaaaaaaa", false),
            key("ops", "sk-bbbbbbbbbbbbbbbb", false),
        ]);
        let new = ApiKeys::new(vec![
            key("ops", "sk-bbbbbbbbbbbbbbbb", true),
            key("dev", "sk-cccccccccccccccc", false),
        ]);
        let change = old.change_to(&new).unwrap();
        // `ops` became an admin: its old rights go, its new ones come.
        assert_eq!(change.added, ["ops", "dev"]);
        assert_eq!(change.removed, ["ci", "ops"]);
        assert!(old.change_to(&old.clone()).unwrap().is_empty());
        assert!(matches!(old.change_to(&ApiKeys::default()), Err(KeysError::NoneLeft)));
        // An open server may start asking for keys.
        assert_eq!(ApiKeys::default().change_to(&new).unwrap().added, ["ops", "dev"]);
    }
}
