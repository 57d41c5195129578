//! `graft up`'s background indexing: each project's index brought up to date in turn once
//! graft serves, a project added while it serves (a reload of the config) when it arrives, and
//! then, every `index.refresh_secs`, each project whose repository changed since its last run
//! (its [`stamp`](graft_server::Projects::stamp)). A project with an index keeps serving from
//! it until its turn; one without is marked as re-indexing when it is queued, so that its
//! requests get no retrieved code rather than an error. A run that fails is tried again at the
//! next look.
//!
//! The server's `Projects` says which projects there are: each look asks it, so a project
//! removed from the config is no longer followed. This module runs and reports index runs; it
//! does not decide what a project is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use graft_index::IndexError;
use graft_server::projects::{Project, ReindexError, ReindexGuard};
use graft_server::AppState;
use tokio::sync::mpsc;

/// A project waiting for its first run here, marked as re-indexing when it has no index.
struct Queued {
    project: Arc<Project>,
    guard: Option<ReindexGuard>,
}

/// Where projects are queued for the background task.
pub struct Reindexer {
    send: mpsc::UnboundedSender<Queued>,
}

impl Reindexer {
    /// Queues `project` for a run (a project sharing another's index is brought up to date
    /// with it, and is not queued): marked at once when it has no index, and said.
    pub fn queue(&self, state: &AppState, project: Arc<Project>) {
        if project.index_owner() != project.name() {
            return;
        }
        let guard = if project.has_index() {
            None
        } else {
            state.projects().start_reindex(&project)
        };
        eprintln!(
            "indexing project `{}` ({}) in the background; {}",
            project.name(),
            project.config.path.display(),
            if guard.is_some() {
                "until it is done its requests get no retrieved code"
            } else {
                "its current index serves meanwhile"
            }
        );
        // The task ends only with the runtime.
        let _ = self.send.send(Queued { project, guard });
    }
}

/// Every project queued (before the task is spawned on the server's runtime, so that each
/// reports itself as re-indexing from the first request), and the task that runs them, then
/// looks every `refresh` (never when zero).
pub fn start(state: &AppState, refresh: Duration) -> (Reindexer, impl std::future::Future<Output = ()> + Send + 'static) {
    let (send, mut receive) = mpsc::unbounded_channel();
    let reindexer = Reindexer { send };
    for project in state.projects().all() {
        reindexer.queue(state, project);
    }
    let state = state.clone();
    let task = async move {
        let mut runs = Runs {
            state,
            refresh,
            indexed: HashMap::new(),
            failed: HashMap::new(),
        };
        let mut looks = (!refresh.is_zero()).then(|| tokio::time::interval_at(tokio::time::Instant::now() + refresh, refresh));
        if let Some(looks) = &mut looks {
            looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                // Projects queued come first: those queued at the start before the first look.
                biased;
                Some(queued) = receive.recv() => runs.first(queued).await,
                () = next_look(&mut looks) => runs.look().await,
                else => return,
            }
        }
    };
    (reindexer, task)
}

async fn next_look(looks: &mut Option<tokio::time::Interval>) {
    match looks {
        Some(looks) => {
            looks.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The runs' bookkeeping.
struct Runs {
    state: AppState,
    refresh: Duration,
    /// Each project's repository as it was when its index was last brought up to date.
    indexed: HashMap<String, u64>,
    /// The last failure said of each project, said again only when it changes.
    failed: HashMap<String, String>,
}

impl Runs {
    /// A queued project's first run here (none if it was removed meanwhile).
    async fn first(&mut self, Queued { project, guard }: Queued) {
        let projects = self.state.projects();
        if projects.get(project.name()).is_none() {
            return;
        }
        let stamp = projects.stamp(&project).await;
        let result = match guard {
            Some(guard) => projects.reindex_with(&project, guard).await,
            None => projects.reindex(&project).await,
        };
        let name = project.name().to_owned();
        match result {
            Ok(report) => {
                // What was left out, so that a repository mostly left out (a submodule, a
                // vendored tree) is seen at once.
                let skipped = if report.skipped.is_empty() {
                    String::new()
                } else {
                    format!("; {} (`graft index --skipped` lists them)", crate::index::skipped_counts(&report))
                };
                eprintln!(
                    "project `{name}` indexed: {} files, {} chunks ({} embedded now) in {:.1}s{skipped}",
                    report.files_indexed,
                    report.chunks,
                    report.embeddings,
                    report.elapsed.as_secs_f64()
                );
                if let Ok(stamp) = stamp {
                    self.indexed.insert(name, stamp);
                }
            }
            Err(ReindexError::Index(IndexError::Stopped)) => {
                eprintln!("indexing project `{name}` stopped with graft; its next run (at the next start) finishes it");
            }
            Err(e) => {
                eprintln!("indexing project `{name}` failed: {e}");
                self.failed.insert(name, e.to_string());
            }
        }
    }

    /// Each project served now whose repository changed since its last run, re-indexed.
    async fn look(&mut self) {
        let projects = self.state.projects();
        for project in projects.all().into_iter().filter(|p| p.index_owner() == p.name()) {
            let name = project.name().to_owned();
            let outcome = match projects.stamp(&project).await {
                Ok(stamp) if self.indexed.get(&name) == Some(&stamp) => continue,
                Ok(stamp) => projects.reindex(&project).await.map(|report| (report, stamp)),
                Err(e) => Err(e.into()),
            };
            match outcome {
                Ok((report, stamp)) => {
                    self.indexed.insert(name.clone(), stamp);
                    self.failed.remove(&name);
                    let changed = report.files_added + report.files_changed + report.files_removed;
                    if changed > 0 || report.rebuilt {
                        eprintln!(
                            "project `{name}` re-indexed: {} files added, {} changed, {} removed ({} chunks embedded) in {:.1}s",
                            report.files_added,
                            report.files_changed,
                            report.files_removed,
                            report.embeddings,
                            report.elapsed.as_secs_f64()
                        );
                    }
                }
                // A re-index asked for through the API is running: look again next time. One
                // stopped by the server's shutdown says nothing.
                Err(ReindexError::Running | ReindexError::Index(IndexError::Stopped)) => {}
                Err(e) => {
                    let message = e.to_string();
                    if self.failed.get(&name) != Some(&message) {
                        eprintln!(
                            "re-indexing project `{name}` failed (tried again every {}s): {message}",
                            self.refresh.as_secs()
                        );
                        self.failed.insert(name, message);
                    }
                }
            }
        }
    }
}
