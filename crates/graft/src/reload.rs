//! What a running graft reads again without a restart, on SIGHUP and when the file changes:
//! the API keys (`server.api_keys_file` and `server.api_keys_env`), and from the config file
//! the projects: added, removed, and changed (`ProjectConfig::changes`: the adapter,
//! retrieval, `top_k`, `context_tokens`, remote URLs, and the repository and the index they
//! search), so the arm `graft eval run` chose is served by saving the config, and a team's next
//! repository served without stopping the others'; the requests' limits and defaults
//! (`[generation]`) and the model requests naming none go to (`server.default_model`, else the
//! first project). Every other edit of the config file is named as waiting for the next start.
//!
//! A file that cannot be read or checked changes nothing and is reported; so does a project
//! whose new adapter cannot be loaded (it keeps its settings, or is not added). This module
//! decides when to read and what to say; the server swaps keys and projects
//! (`AppState::replace_keys`, `Projects`), `graft up`'s reindexer indexes a project added, or
//! one whose repository or index changed.

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

    /// The file's `[generation]`, its projects one at a time (those with an index of their
    /// own first, so that those sharing one find it as the file has it; changed or added, then
    /// those it no longer has removed), and the model requests naming none go to. What waits
    /// for the next start is said when it differs from what was said last (`waiting`).
    /// Whether every change was applied (a file that cannot be used, or an adapter that cannot
    /// load, is not).
    async fn config(&mut self, asked: bool, waiting: &mut Vec<String>) -> bool {
        let now = match Snapshot::read(&self.path) {
            Ok(now) => now,
            Err(e) => {
                eprintln!("config not reloaded, the settings in use stay: {e}");
                return false;
            }
        };
        let wait = self.started.at_next_start(&now);
        let projects = graft_wiring::project_configs(&now.config);
        let mut outcomes = Vec::new();
        let generation = self.applied.section_changes(&now, "generation");
        if !generation.is_empty() {
            self.state.replace_generation(now.config.generation.clone());
            eprintln!("config reloaded: {}", generation.join(", "));
            outcomes.push(Outcome::Applied);
        }
        let (owners, sharers): (Vec<ProjectConfig>, Vec<ProjectConfig>) = projects.iter().cloned().partition(|p| p.index.is_none());
        for new in owners.into_iter().chain(sharers) {
            let outcome = match self.state.projects().get(&new.name) {
                Some(serving) => self.change(&serving, new).await,
                None => self.add(new).await,
            };
            outcomes.push(outcome);
        }
        outcomes.push(self.default_model(&now.config, &projects));
        for serving in self.state.projects().all() {
            if !projects.iter().any(|p| p.name == serving.name()) {
                outcomes.push(self.remove(&serving));
            }
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

    /// Requests that name no model go to `server.default_model`, else the first project (the
    /// base model without one), as the file now says; named when that names nothing the
    /// server will serve (they then get a 404, as at start).
    fn default_model(&self, now: &graft_core::Config, projects: &[ProjectConfig]) -> Outcome {
        let then = graft_wiring::server_config(now).default_model;
        let then = then.as_deref().unwrap_or(self.state.pool().base_name());
        let before = self.state.default_model();
        if *before == *then {
            return Outcome::Unchanged;
        }
        self.state.replace_default_model(then);
        let served = projects.iter().any(|p| p.name == then)
            || self.state.names_base(then)
            || self.state.pool().adapters().iter().any(|a| a.name == then);
        let unserved = if served {
            ""
        } else {
            " (not a model graft serves: such requests get 404)"
        };
        eprintln!("config reloaded: requests that name no model: `{before}` → `{then}`{unserved}");
        Outcome::Applied
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

    /// A project's config replaced: its index kept, or, when it is to search another one,
    /// laid out anew. A project whose own index is to follow another repository, or is new
    /// to it, is indexed by `graft up` (else said how).
    async fn change(&self, serving: &Project, new: ProjectConfig) -> Outcome {
        let changes = serving.config.changes(&new);
        if changes.is_empty() {
            return Outcome::Unchanged;
        }
        let adapter = new.adapter.as_deref().filter(|a| serving.config.adapter.as_deref() != Some(*a));
        if !self.load(adapter, &new.name, "keeps its settings").await {
            return Outcome::Refused;
        }
        let name = new.name.clone();
        let (moved, relaid) = (serving.config.path != new.path, serving.config.index != new.index);
        let project = if relaid {
            match self.laid_out(new) {
                Ok(project) => Some(self.state.projects().add(project)),
                Err(why) => {
                    eprintln!("config: project `{name}` keeps its settings: {why}");
                    return Outcome::Refused;
                }
            }
        } else {
            self.state.projects().replace_settings(new)
        };
        let Some(project) = project else {
            return Outcome::Unchanged;
        };
        eprintln!("config reloaded: project `{name}`: {}", changes.join(", "));
        let own = project.index_owner() == project.name();
        if own && (moved || relaid) {
            match &self.reindexer {
                Some(reindexer) => reindexer.queue(&self.state, project),
                None if !project.has_index() => eprintln!("config: project `{name}` has no index yet: {}", reindex_hint(&name)),
                None => eprintln!(
                    "config: project `{name}`'s index is of its old repository until {}",
                    reindex_hint(&name)
                ),
            }
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
        let project = match self.laid_out(new) {
            Ok(project) => self.state.projects().add(project),
            Err(why) => {
                eprintln!("config: project `{name}` is not added: {why}");
                return Outcome::Refused;
            }
        };
        if graft_engine::pool::store_names(&self.started.config.adapters.dir).contains(&name) {
            tracing::warn!(project = %name, "{}", crate::serve::ADAPTER_NAMED_AS_PROJECT);
        }
        let index = if project.has_index() {
            "its index serves".to_owned()
        } else if self.reindexer.is_some() {
            "no index yet".to_owned()
        } else {
            format!("no index yet: {}", reindex_hint(&name))
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

    /// The project `new` describes, with an index of its own (laid out as the config graft
    /// started with says) or the served project's it names; why not, when that one is not
    /// served.
    fn laid_out(&self, new: ProjectConfig) -> Result<Project, String> {
        match new.index.clone() {
            None => Ok(graft_wiring::project(&self.started.config, new)),
            Some(owner) => match self.state.projects().get(&owner) {
                // (One whose own change this reload refused may still search another's.)
                Some(owner) if owner.index_owner() == owner.name() => Ok(Project::sharing(new, &owner)),
                Some(_) => Err(format!("`{owner}`, whose index it is to search, does not keep one of its own now")),
                None => Err(format!("the project whose index it searches, `{owner}`, is not served")),
            },
        }
    }

    /// A project the file no longer has, no longer served (its index stays).
    fn remove(&self, serving: &Project) -> Outcome {
        let name = serving.name();
        self.state.projects().remove(name);
        eprintln!("config reloaded: project `{name}` removed (its index stays on disk)");
        Outcome::Applied
    }
}

/// How a project served by `graft serve` gets its index brought up to date.
fn reindex_hint(name: &str) -> String {
    format!("`graft index` brings it up to date, or `POST /v1/projects/{name}/reindex`")
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
