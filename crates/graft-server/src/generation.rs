//! A generation as the server runs it: the engine's token stream, bound to the request's
//! deadline and its admission slot, recording time to first token and token counts.
//!
//! Dropping a [`Generation`] (the client went away, or the response was sent) drops the token
//! stream, which stops the engine's work, and frees the slot.

use std::sync::Arc;
use std::time::Duration;

use graft_engine::engine::Collector;
use graft_engine::{Completion, CompletionRequest, Prompt, Sampling, StopCause, StreamEvent, TokenStream};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::limits::{Deadline, Slot};
use crate::metrics::Metrics;
use crate::openai::RetrievalField;
use crate::projects::{Project, Search};
use crate::state::AppState;
use crate::sticky::Spot;

/// A request let in by the gate: its slot and its deadline.
pub struct Admitted {
    /// Shared by the request's generations (`n` choices); free when the last one is dropped.
    slot: Arc<Slot>,
    deadline: Deadline,
    started: Instant,
}

/// Waits for a generation slot (bounded queue, request deadline); 429 or 504 otherwise.
pub async fn admit(state: &AppState) -> Result<Admitted, ApiError> {
    let started = Instant::now();
    let timeout = state.request_timeout();
    let deadline = Deadline::after(timeout);
    let slot = state.gate().enter(deadline).await.map_err(|refusal| {
        state.metrics().rejected();
        refusal.into_error(timeout)
    })?;
    Ok(Admitted {
        slot: Arc::new(slot),
        deadline,
        started,
    })
}

impl Admitted {
    /// The generation of `tokens` under this admission, reported as `model`.
    pub fn start(self, tokens: TokenStream, state: &AppState, model: &str) -> Generation {
        self.generation(tokens, state, model)
    }

    /// The generations of a request's choices (`n`), all under this one admission: they
    /// share its slot and deadline.
    pub fn start_all(self, streams: Vec<TokenStream>, state: &AppState, model: &str) -> Vec<Generation> {
        streams.into_iter().map(|tokens| self.generation(tokens, state, model)).collect()
    }

    fn generation(&self, tokens: TokenStream, state: &AppState, model: &str) -> Generation {
        Generation {
            tokens,
            deadline: self.deadline,
            timeout: state.request_timeout(),
            started: self.started,
            model: model.to_owned(),
            seen_text: false,
            first_token: None,
            metrics: Arc::clone(state.metrics()),
            cut: state.cut_signal(),
            trim_leading_whitespace: false,
            _slot: Arc::clone(&self.slot),
        }
    }
}

/// Most choices (`n`) one request may ask for.
pub const MAX_CHOICES: u32 = 8;

/// The request's `n`, checked: how many choices to generate.
pub fn choices(n: Option<u32>) -> Result<u32, ApiError> {
    match n.unwrap_or(1) {
        n @ 1..=MAX_CHOICES => Ok(n),
        n => Err(ApiError::invalid_param(
            "n",
            format!("n must be between 1 and {MAX_CHOICES}, got {n}"),
        )),
    }
}

/// Starts `n` choices of each prompt (its token ids) on the pool's `target` model under one
/// admission, each prompt's choices in turn. Choice `i` of a prompt samples with the
/// request's seed plus `i`, so a seeded request repeats all its choices and its first choice
/// is the answer the same request with `n = 1` gets; greedy choices are all the same answer.
/// Several choices of a long prompt read it once between them ([`graft_engine::Pool::complete_choices`]),
/// within the request's deadline.
pub async fn start_choices(
    state: &AppState,
    caller: &crate::caller::Caller,
    admitted: Admitted,
    target: &crate::state::Target,
    prompts: Vec<Vec<u32>>,
    sampling: Sampling,
    n: u32,
) -> Result<Vec<Generation>, ApiError> {
    let mut streams = Vec::with_capacity(prompts.len() * n as usize);
    for tokens in prompts {
        let requests = (0..n)
            .map(|i| CompletionRequest {
                prompt: Prompt::Tokens(tokens.clone()),
                sampling: Sampling {
                    seed: sampling.seed.map(|seed| seed.wrapping_add(u64::from(i))),
                    ..sampling.clone()
                },
            })
            .collect();
        let read_ahead = tokio::time::timeout_at(admitted.deadline.0, state.pool().complete_choices(&target.model, requests));
        let choices = read_ahead
            .await
            .map_err(|_| ApiError::timeout(state.request_timeout()))?
            .map_err(|e| state.pool_error(e, caller))?;
        streams.extend(choices);
    }
    Ok(admitted.start_all(streams, state, &target.name))
}

/// Searches `project` for `query` as its settings and the request's `retrieval` field say;
/// `None` when retrieval is off (or the project is being re-indexed). A completion passes
/// its `spot`: near the last completion's in the same file it gets that one's hits
/// ([`crate::sticky`]) unless the field says `sticky: false`.
pub async fn retrieve(
    state: &AppState,
    project: &Arc<Project>,
    query: Search,
    field: Option<RetrievalField>,
    spot: Option<Spot>,
) -> Result<Option<Vec<graft_index::SearchHit>>, ApiError> {
    let enabled = field.and_then(RetrievalField::enabled).unwrap_or(project.config.retrieval);
    if !enabled || query.text.trim().is_empty() {
        return Ok(None);
    }
    let k = field.and_then(RetrievalField::top_k).unwrap_or(project.config.top_k);
    if !(1..=100).contains(&k) {
        return Err(ApiError::invalid_param(
            "retrieval",
            format!("retrieval.top_k must be between 1 and 100, got {k}"),
        ));
    }
    let started = std::time::Instant::now();
    let spot = spot.filter(|_| field.and_then(RetrievalField::sticky).unwrap_or(true));
    let projects = state.projects();
    let hits = match spot {
        Some(spot) => projects.search_at(project, spot, query, k).await,
        None => projects.search(project, query, k, graft_index::SearchMode::Hybrid).await,
    }
    .map_err(|e| {
        tracing::error!(project = project.name(), error = %e, "retrieval failed");
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("Retrieval for project `{}` failed: {e}", project.name()),
        )
    })?;
    state.metrics().retrieval(started.elapsed());
    Ok(hits)
}

pub struct Generation {
    tokens: TokenStream,
    deadline: Deadline,
    timeout: Duration,
    /// When the request arrived.
    started: Instant,
    /// The name the request asked for.
    model: String,
    seen_text: bool,
    /// When the first text came.
    first_token: Option<Instant>,
    metrics: Arc<Metrics>,
    /// Shutdown's grace period is over ([`AppState::cut_generations`]).
    cut: tokio::sync::watch::Receiver<bool>,
    trim_leading_whitespace: bool,
    _slot: Arc<Slot>,
}

impl Generation {
    /// The next event, or an error; a deadline that passes ends the generation with 504's
    /// error, and a shutdown past its grace period with 503's.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, ApiError>> {
        loop {
            let cut = &mut self.cut;
            let mut event = tokio::select! {
                biased;
                () = async {
                    // A server state that is gone cuts nothing.
                    if cut.wait_for(|c| *c).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => return Some(Err(ApiError::shutting_down())),
                event = tokio::time::timeout_at(self.deadline.0, self.tokens.next()) => match event {
                    Err(_) => return Some(Err(ApiError::timeout(self.timeout))),
                    Ok(event) => event?,
                },
            };
            match &mut event {
                Ok(StreamEvent::Text { text, .. }) if !self.seen_text => {
                    if self.trim_leading_whitespace {
                        // A piece of white space alone goes, with its tokens' log-probabilities.
                        let trimmed = text.trim_start();
                        if trimmed.is_empty() {
                            continue;
                        }
                        *text = trimmed.to_owned();
                    }
                    self.seen_text = true;
                    self.first_token = Some(Instant::now());
                    self.metrics.first_token(&self.model, self.started.elapsed());
                }
                Ok(StreamEvent::End { usage, .. }) => {
                    self.metrics.tokens(&self.model, *usage);
                }
                _ => {}
            }
            return Some(event.map_err(ApiError::from));
        }
    }

    /// Ends the generation here, as one of the request's stops the caller matched says
    /// (chat's tool replies: `routes::tools`): its end, with the tokens sampled so far.
    pub fn stop(&mut self, cause: StopCause) -> StreamEvent {
        let end = self.tokens.stop(cause);
        if let StreamEvent::End { usage, .. } = &end {
            self.metrics.tokens(&self.model, *usage);
        }
        end
    }

    /// Prompt tokens the prompt cache supplied (known once the first text has come).
    pub fn cached_tokens(&self) -> usize {
        self.tokens.cached_tokens()
    }

    /// When the answer's first text came (the prompt had been read), if it has.
    pub fn first_token(&self) -> Option<Instant> {
        self.first_token
    }

    /// Leaves out the white space an answer starts with (a chat answer: the model's first
    /// tokens are often a space or a newline after the template's assistant header).
    pub fn trim_leading_whitespace(mut self) -> Generation {
        self.trim_leading_whitespace = true;
        self
    }

    /// The whole generation.
    pub async fn collect(mut self) -> Result<Completion, ApiError> {
        let mut collector = Collector::default();
        while let Some(event) = self.next().await {
            if let Some(done) = collector.push(event?) {
                return Ok(done);
            }
        }
        Err(ApiError::from(Collector::unfinished()))
    }
}
