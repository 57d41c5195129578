//! What a running graft reads again without a restart, on SIGHUP and when the file changes:
//! the API keys (`server.api_keys_file` and `server.api_keys_env`), and the config file's
//! projects' serving settings (`graft_core::reload::LIVE`: the adapter, retrieval, `top_k`,
//! `context_tokens`, remote URLs), so the arm `graft eval run` chose is served by saving the
//! config. Every other edit of the config file is named as waiting for the next start.
//!
//! A file that cannot be read or checked changes nothing and is reported; so does a project
//! whose new adapter cannot be loaded (it keeps its settings). This module decides when to read
//! and what to say; the server swaps keys and projects (`AppState::replace_keys`,
//! `Projects::replace_settings`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use graft_core::keys::ApiKeys;
use graft_core::reload::Snapshot;
use graft_server::AppState;

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

/// Starts the task that reloads the keys and the projects' settings when their file changes
/// or on SIGHUP (which then says "unchanged" too). `started` is the config file at `path` as
/// the server was built from it.
pub fn on_change(state: &AppState, started: Snapshot, path: PathBuf, mut seen: Stamps) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut hangups = Hangups::new();
        let mut looks = tokio::time::interval(LOOK);
        looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What was last said to wait for the next start, said again only when it changes.
        let mut waiting = Vec::new();
        loop {
            let asked = tokio::select! {
                _ = looks.tick() => false,
                () = hangups.next() => true,
            };
            let keys = file_stamp(started.config.server.api_keys_file.as_deref());
            if asked || keys != seen.keys {
                seen.keys = keys;
                reload_keys(&state, &started, asked);
            }
            let config = file_stamp(Some(&path));
            if asked || config != seen.config {
                seen.config = config;
                reload_projects(&state, &started, &path, asked, &mut waiting).await;
            }
        }
    });
}

/// The keys, as the config graft started with says where they are. A file that leaves no key
/// at all is refused (`ApiKeys::change_to`).
fn reload_keys(state: &AppState, started: &Snapshot, asked: bool) {
    match ApiKeys::load(&started.config).and_then(|keys| state.replace_keys(keys)) {
        Ok(change) if change.is_empty() => {
            if asked {
                eprintln!("API keys reloaded: unchanged");
            }
        }
        Ok(change) => eprintln!(
            "API keys reloaded: added [{}], removed [{}]",
            change.added.join(", "),
            change.removed.join(", ")
        ),
        Err(e) => eprintln!("API keys not reloaded, the keys in use stay: {e}"),
    }
}

/// Each project's serving settings from the file at `path`, a project at a time: its new
/// adapter is loaded first (merged, on a CPU), so that its first request does not wait for it
/// and one that cannot load leaves the project as it was. Keys that wait for the next start
/// are named when they differ from those last named (`waiting`).
async fn reload_projects(state: &AppState, started: &Snapshot, path: &Path, asked: bool, waiting: &mut Vec<String>) {
    let now = match Snapshot::read(path) {
        Ok(now) => now,
        Err(e) => {
            eprintln!("config not reloaded, the settings in use stay: {e}");
            return;
        }
    };
    let mut changed = false;
    for new in graft_wiring::project_configs(&now.config) {
        let Some(serving) = state.projects().get(&new.name) else {
            continue;
        };
        let changes = serving.config.live_changes(&new);
        if changes.is_empty() {
            continue;
        }
        changed = true;
        if let Some(adapter) = new.adapter.as_deref().filter(|a| serving.config.adapter.as_deref() != Some(*a)) {
            if let Err(e) = state.pool().load(adapter, None).await {
                eprintln!(
                    "config: project `{}` keeps its settings: its adapter `{adapter}` cannot be loaded ({e}); tried again when the config is saved again or on SIGHUP",
                    new.name
                );
                continue;
            }
        }
        let name = new.name.clone();
        if state.projects().replace_settings(new).is_some() {
            eprintln!("config reloaded: project `{name}`: {}", changes.join(", "));
        }
    }
    let at_next_start = started.at_next_start(&now);
    if at_next_start != *waiting {
        if !at_next_start.is_empty() {
            eprintln!(
                "config: changed in the file, used from the next start only: {}",
                at_next_start.join(", ")
            );
        }
        *waiting = at_next_start;
    } else if asked && !changed {
        eprintln!("config reloaded: unchanged");
    }
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
