//! What a running graft reads again without a restart, on SIGHUP and when the file changes:
//! the API keys (`server.api_keys_file` and `server.api_keys_env`), and from the config file
//! the projects: added, removed, and their serving settings (`ProjectConfig::with_live_settings_of`: the
//! adapter, retrieval, `top_k`, `context_tokens`, remote URLs), so the arm `graft eval run`
//! chose is served by saving the config, and a team's next repository served without stopping
//! the others'; and the requests' limits and defaults (`[generation]`). Every other edit of the
//! config file is named as waiting for the next start.
//!
//! A file that cannot be read or checked changes nothing and is reported; so does a project
//! whose new adapter cannot be loaded (it keeps its settings, or is not added). The project
//! that requests naming no model go to stays until the next start. This module decides when to
//! read and what to say; the server swaps keys and projects (`AppState::replace_keys`,
//! `Projects`), `graft up`'s reindexer indexes a project added.

use std::path::{Path, PathBuf};
use std::time::Duration;

use graft_core::keys::ApiKeys;
use graft_core::reload::Snapshot;
use graft_core::ProjectConfig;
use graft_server::projects::Project;
use graft_server::AppState;

use crate::reindexer::Reindexer;

/// How often the files are looked at (their size and time) for a change.
const LOOK: Duration = Duration::from_secs(2);

/// A file's length and modification time (none without a readable file): a change to the
/// file changes one of them.
pub type Stamp = Option<(u64, Option<std::time::SystemTime>)>;

pub fn file_stamp(path: Option<&Path>) -> Stamp {
    let meta = std::fs::metadata(path?).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

/// The files' stamps when what is in use was read from them: compared with these, not with
/// the files as the task first finds them, an edit made while graft loads its model is not
/// missed.
pub struct Stamps {
    pub config: Stamp,
    pub keys: Stamp,
}

/// Starts the task that reloads the keys and the projects when their file changes or on
/// SIGHUP (which then says "unchanged" too). `started` is the config file at `path` as the
/// server was built from it; `reindexer`, `graft up`'s, indexes the projects added.
pub fn on_change(state: &AppState, started: Snapshot, path: PathBuf, mut seen: Stamps, reindexer: Option<Reindexer>) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut reload = Reload {
            state,
            applied: started.clone(),
            started,
            path,
            reindexer,
        };
        let mut hangups = Hangups::new();
        let mut looks = tokio::time::interval(LOOK);
        looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What was last said to wait for the next start, said again only when it changes.
        let mut waiting = Vec::new();
        // Whether each file's last reload applied all it read (`/metrics`).
        let (mut keys_ok, mut config_ok) = (true, true);
        loop {
            let asked = tokio::select! {
                _ = looks.tick() => false,
                () = hangups.next() => true,
            };
            let keys = file_stamp(reload.started.config.server.api_keys_file.as_deref());
            let config = file_stamp(Some(&reload.path));
            let (keys_now, config_now) = (asked || keys != seen.keys, asked || config != seen.config);
            if keys_now {
                seen.keys = keys;
                keys_ok = reload.keys(asked);
            }
            if config_now {
                seen.config = config;
                config_ok = reload.config(asked, &mut waiting).await;
            }
            if keys_now || config_now {
                reload.state.metrics().reload(keys_ok && config_ok);
            }
        }
    });
}

/// What a reload reads and changes.
struct Reload {
    state: AppState,
    /// The config file as the server was built from it.
    started: Snapshot,
    /// The config file as last read (`[generation]` is compared with it).
    applied: Snapshot,
    path: PathBuf,
    reindexer: Option<Reindexer>,
}

impl Reload {
    /// The keys, as the config graft started with says where they are; whether they were
    /// used. A file that leaves no key at all is refused (`ApiKeys::change_to`).
    fn keys(&self, asked: bool) -> bool {
        match ApiKeys::load(&self.started.config).and_then(|keys| self.state.replace_keys(keys)) {
            Ok(change) if change.is_empty() => {
                if asked {
                    eprintln!("API keys reloaded: unchanged");
                }
                true
            }
            Ok(change) => {
                eprintln!(
                    "API keys reloaded: added [{}], removed [{}]",
                    change.added.join(", "),
                    change.removed.join(", ")
                );
                true
            }
            Err(e) => {
                eprintln!("API keys not reloaded, the keys in use stay: {e}");
                false
            }
        }
    }

    /// The file's `[generation]`, and its projects, one at a time: those it no longer has
    /// removed, those it adds added (their own indexes first, for those that share one), the
    /// others' serving settings replaced. What waits for the next start is said when it
    /// differs from what was said last (`waiting`). Whether every change was applied (a file
    /// that cannot be used, or an adapter that cannot load, is not).
    async fn config(&mut self, asked: bool, waiting: &mut Vec<String>) -> bool {
        let now = match Snapshot::read(&self.path) {
            Ok(now) => now,
            Err(e) => {
                eprintln!("config not reloaded, the settings in use stay: {e}");
                return false;
            }
        };
        let mut wait = self.started.at_next_start(&now);
        // Requests that name no model go to `server.default_model`, else the first project: a
        // file that changes which one says so, even when that key is not written.
        let default_then = graft_wiring::server_config(&now.config).default_model;
        let default_then = default_then.as_deref().unwrap_or(self.state.pool().base_name());
        let default_now = self.state.default_model();
        if default_then != default_now && !wait.iter().any(|k| k == "server.default_model") {
            wait.push(format!("requests that name no model (`{default_now}` now, `{default_then}` then)"));
        }
        let projects = graft_wiring::project_configs(&now.config);
        let mut outcomes = Vec::new();
        let generation = self.applied.section_changes(&now, "generation");
        if !generation.is_empty() {
            self.state.replace_generation(now.config.generation.clone());
            eprintln!("config reloaded: {}", generation.join(", "));
            outcomes.push(Outcome::Applied);
        }
        for serving in self.state.projects().all() {
            if !projects.iter().any(|p| p.name == serving.name()) {
                outcomes.push(self.remove(&serving, &mut wait));
            }
        }
        let (owners, sharers): (Vec<ProjectConfig>, Vec<ProjectConfig>) = projects.into_iter().partition(|p| p.index.is_none());
        for new in owners.into_iter().chain(sharers) {
            let outcome = match self.state.projects().get(&new.name) {
                Some(serving) => {
                    let name = &new.name;
                    wait.extend(
                        serving
                            .config
                            .restart_changes(&new)
                            .into_iter()
                            .map(|key| format!("projects.{name}.{key}")),
                    );
                    self.change(&serving, new).await
                }
                None => self.add(new).await,
            };
            outcomes.push(outcome);
        }
        let changed = outcomes.iter().any(|o| *o != Outcome::Unchanged);
        if wait != *waiting {
            if !wait.is_empty() {
                eprintln!("config: changed in the file, used from the next start only: {}", wait.join(", "));
            }
            *waiting = wait;
        } else if asked && !changed {
            eprintln!("config reloaded: unchanged");
        }
        self.applied = now;
        !outcomes.contains(&Outcome::Refused)
    }

    /// Loads `adapter` into the pool (merged, on a CPU), so that the first request does not
    /// wait for it and one that cannot load changes nothing; the error, said, otherwise.
    async fn load(&self, adapter: Option<&str>, project: &str, instead: &str) -> bool {
        let Some(adapter) = adapter else {
            return true;
        };
        match self.state.pool().load(adapter, None).await {
            Ok(_) => true,
            Err(e) => {
                eprintln!(
                    "config: project `{project}` {instead}: its adapter `{adapter}` cannot be loaded ({e}); tried again when the config is saved again or on SIGHUP"
                );
                false
            }
        }
    }

    /// The embedding model, for a graft that started with no project and so without one:
    /// loaded as the config it started with says (`graft up` fetches it into the kit first,
    /// as it does at start).
    async fn load_embedder(&self) -> anyhow::Result<()> {
        if self.state.projects().embedder().is_some() {
            return Ok(());
        }
        let (config, fetch) = (self.started.config.clone(), self.reindexer.is_some());
        let embedder = tokio::task::spawn_blocking(move || {
            if fetch {
                let kit = graft_kit::Kit::new(&config.kit.dir);
                crate::models::ensure(&kit, &graft_wiring::index_artifacts(&config)?, true)?;
            }
            crate::index::load_embedder(&config)
        })
        .await??;
        let name = graft_wiring::embedding_name(&self.started.config);
        eprintln!("config: the embedding model `{name}` loaded, for the first project");
        self.state.projects().set_embedder(name, std::sync::Arc::new(embedder));
        Ok(())
    }

    /// A project's serving settings replaced.
    async fn change(&self, serving: &Project, new: ProjectConfig) -> Outcome {
        let changes = serving.config.live_changes(&new);
        if changes.is_empty() {
            return Outcome::Unchanged;
        }
        let adapter = new.adapter.as_deref().filter(|a| serving.config.adapter.as_deref() != Some(*a));
        if !self.load(adapter, &new.name, "keeps its settings").await {
            return Outcome::Refused;
        }
        let name = new.name.clone();
        if self.state.projects().replace_settings(new).is_some() {
            eprintln!("config reloaded: project `{name}`: {}", changes.join(", "));
        }
        Outcome::Applied
    }

    /// A project the file adds, served from now on with an index of its own (laid out and
    /// built as the config graft started with says) or another's; `graft up` indexes it.
    async fn add(&self, new: ProjectConfig) -> Outcome {
        let name = new.name.clone();
        if let Err(e) = self.load_embedder().await {
            eprintln!("config: project `{name}` is not added: {e:#}");
            return Outcome::Refused;
        }
        if !self.load(new.adapter.as_deref(), &name, "is not added").await {
            return Outcome::Refused;
        }
        let project = match new.index.clone() {
            None => graft_wiring::project(&self.started.config, new),
            Some(owner) => match self.state.projects().get(&owner) {
                Some(owner) => Project::sharing(new, &owner),
                None => {
                    eprintln!("config: project `{name}` is not added: the project whose index it searches, `{owner}`, is not served");
                    return Outcome::Refused;
                }
            },
        };
        let project = self.state.projects().add(project);
        if graft_engine::pool::store_names(&self.started.config.adapters.dir).contains(&name) {
            tracing::warn!(project = %name, "{}", crate::serve::ADAPTER_NAMED_AS_PROJECT);
        }
        let index = if project.has_index() {
            "its index serves"
        } else if self.reindexer.is_some() {
            "no index yet"
        } else {
            "no index yet: `graft index` builds it, or `POST /v1/projects/NAME/reindex`"
        };
        eprintln!(
            "config reloaded: project `{name}` added ({}; {index})",
            project.config.path.display()
        );
        if let Some(reindexer) = &self.reindexer {
            reindexer.queue(&self.state, project);
        }
        Outcome::Applied
    }

    /// A project the file no longer has, no longer served (its index stays). The default
    /// model's project stays until the next start: requests naming no model go to it.
    fn remove(&self, serving: &Project, wait: &mut Vec<String>) -> Outcome {
        let name = serving.name();
        if self.state.default_model() == name {
            wait.push(format!("projects: `{name}` removed (requests that name no model go to it)"));
            return Outcome::Unchanged;
        }
        self.state.projects().remove(name);
        eprintln!("config reloaded: project `{name}` removed (its index stays on disk)");
        Outcome::Applied
    }
}

/// What a reload did with one project. What waits for the next start is left unchanged: it is
/// named, not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Unchanged,
    Applied,
    /// A change that could not be made (an adapter that does not load, an index not served).
    Refused,
}

/// SIGHUP, as a stream of wake-ups (never, where there is no such signal).
struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn new() -> Hangups {
        Hangups {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}
