//! A running graft asked over HTTP ([`Graft`]): what it serves, for `graft status`; and a
//! project it serves ([`Served`]), asked by the commands that would otherwise open the
//! project's index, which that graft holds open: `graft dataset`'s retrieval, and `graft
//! search` and `graft index` when the index is in use. The admin key comes from
//! `GRAFT_API_KEY`. Blocking (ureq): the dataset asks from rayon's threads.
//!
//! This module speaks the endpoints (`GET /health`, `/v1/projects`, `/metrics`; a project's
//! `GET /v1/projects/{name}`, `POST .../search`, `POST .../reindex`), and reads an
//! OpenAI-style error's message (`bench api` too); what a command makes of the answers is the
//! command's.

use std::fmt::Display;
use std::path::Path;
use std::time::{Duration, Instant};

use graft_index::{SearchHit, StartOver};
use serde_json::Value;

/// How long a search waits, in all, on a graft that answers "busy" (re-indexing).
const BUSY_WAIT: Duration = Duration::from_secs(120);

/// A graft at a URL, asked with the admin key from `GRAFT_API_KEY` when it is set.
pub struct Graft {
    agent: ureq::Agent,
    /// The graft's base URL (no `/v1`).
    pub base: String,
    key: Option<String>,
}

/// How long a question about what a graft serves may take: whatever listens there answers
/// quickly.
const ASK: Duration = Duration::from_secs(10);

impl Graft {
    /// The graft at `url` (a base URL, with or without `/v1`); nothing is asked yet.
    pub fn at(url: &str) -> Result<Graft, String> {
        let base = crate::eval::target::base_url(url).map_err(|e| e.to_string())?;
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(2))
            .timeout_read(Duration::from_secs(3600))
            .build();
        let key = std::env::var("GRAFT_API_KEY").ok().filter(|k| !k.is_empty());
        Ok(Graft { agent, base, key })
    }

    /// `GET path`'s JSON; an admin key refused is said to be for `what`.
    pub fn get(&self, path: &str, what: &str) -> Result<Value, String> {
        self.json(self.request("GET", path).timeout(ASK).call(), what)
    }

    /// `GET path`'s text (`/metrics`).
    pub fn get_text(&self, path: &str, what: &str) -> Result<String, String> {
        self.answer(self.request("GET", path).timeout(ASK).call(), what)
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let request = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.key {
            Some(key) => request.set("Authorization", &format!("Bearer {key}")),
            None => request,
        }
    }

    /// A successful answer's body, or what went wrong, in words (an admin key wanted for
    /// `what`).
    fn answer(&self, answer: Result<ureq::Response, ureq::Error>, what: &str) -> Result<String, String> {
        let base = &self.base;
        match answer {
            Ok(response) => response.into_string().map_err(|e| format!("the graft at {base} answered: {e}")),
            Err(ureq::Error::Status(401 | 403, _)) => Err(format!("the graft at {base} wants an admin key for {what}: set GRAFT_API_KEY")),
            Err(ureq::Error::Status(code, response)) => Err(format!(
                "the graft at {base} answered {code}: {}",
                error_message(&response.into_string().unwrap_or_default())
            )),
            Err(e) => Err(format!("no graft answers at {base} ({e})")),
        }
    }

    /// [`Graft::answer`]'s body read as JSON.
    fn json(&self, answer: Result<ureq::Response, ureq::Error>, what: &str) -> Result<Value, String> {
        let body = self.answer(answer, what)?;
        serde_json::from_str(&body).map_err(|e| format!("the graft at {} answered: {e}", self.base))
    }
}

/// A graft serving `project`, and what it said of it.
pub struct Served {
    graft: Graft,
    project: String,
    /// The project's status (`GET /v1/projects/{name}`): its repository, index, settings.
    pub status: Value,
}

impl Served {
    /// The graft at `url` (a base URL, with or without `/v1`), if it serves `project`.
    pub fn connect(url: &str, project: &str) -> Result<Served, String> {
        let graft = Graft::at(url)?;
        // Asked before anything else: whatever else listens there answers quickly.
        let mut served = Served {
            graft,
            project: project.to_owned(),
            status: Value::Null,
        };
        served.status = served.answer(served.request("GET", "").timeout(ASK).call())?;
        Ok(served)
    }

    /// The graft's base URL (no `/v1`).
    pub fn base(&self) -> &str {
        &self.graft.base
    }

    /// `POST .../search` with `body` (`query`, or `prefix`, `suffix` and `path`; `k`, `mode`):
    /// the hits. A graft re-indexing answers "busy" (503 with `Retry-After`); it is asked
    /// again when it says, for a while.
    pub fn search(&self, body: &Value) -> Result<Vec<SearchHit>, String> {
        let body = body.to_string();
        let started = Instant::now();
        loop {
            let request = self.request("POST", "/search").set("Content-Type", "application/json");
            match request.send_string(&body) {
                Err(ureq::Error::Status(503, response)) if started.elapsed() < BUSY_WAIT && response.header("Retry-After").is_some() => {
                    let wait = response.header("Retry-After").and_then(|s| s.parse().ok()).unwrap_or(5);
                    std::thread::sleep(Duration::from_secs(wait).min(BUSY_WAIT));
                }
                answer => {
                    let answer = self.answer(answer)?;
                    return serde_json::from_value(answer["data"].clone())
                        .map_err(|e| format!("{}: the search's answer: {e}", self.base()));
                }
            }
        }
    }

    /// Whether this graft indexes the project from `path`: the repository its index was last
    /// built from (canonical), else the one it is configured with.
    pub fn check_repository(&self, path: &Path) -> Result<(), String> {
        let theirs = self.status["meta"]["repository"]
            .as_str()
            .or(self.status["repository"].as_str())
            .map(Path::new);
        if theirs.and_then(|p| p.canonicalize().ok()) != path.canonicalize().ok() {
            return Err(format!(
                "`{}` is served by the graft at {}, which indexes it from {}, not {}",
                self.project,
                self.base(),
                theirs.map_or("an unknown repository".into(), |p| p.display().to_string()),
                path.display()
            ));
        }
        Ok(())
    }

    /// `POST .../reindex`, building anew what `start_over` asks: the run's answer (`report`,
    /// with each file left out where `skipped_files`; `elapsed_seconds`).
    pub fn reindex(&self, start_over: StartOver, skipped_files: bool) -> Result<Value, String> {
        let body = serde_json::json!({
            "rebuild": start_over.catalog,
            "embed_again": start_over.vectors,
            "skipped_files": skipped_files,
        });
        let request = self.request("POST", "/reindex").set("Content-Type", "application/json");
        self.answer(request.send_string(&body.to_string()))
    }

    /// A request about the project (`path` after `/v1/projects/{name}`).
    fn request(&self, method: &str, path: &str) -> ureq::Request {
        self.graft.request(method, &format!("/v1/projects/{}{path}", self.project))
    }

    /// A successful answer's JSON, or what went wrong, in words.
    fn answer(&self, answer: Result<ureq::Response, ureq::Error>) -> Result<Value, String> {
        self.graft.json(answer, &format!("`{}`'s index", self.project))
    }
}

/// A command's error when the index it opened here is in use (`in_use`) and the graft at
/// `url` was not asked instead, and why (`why_not`).
pub fn not_asked(in_use: impl Display, url: &str, why_not: &str) -> String {
    format!("{in_use}; asking the graft at {url} instead: {why_not}")
}

/// The message of an OpenAI-style error answer's `body`, else the body's first 200 characters.
pub fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(200).collect())
}
