//! `POST /v1/completions`: raw text completion, and fill-in-the-middle when the request gives
//! a `suffix` (the code after the cursor), as IDE completion plugins send it.
//!
//! The prompt is not wrapped in a chat template. With a `suffix`, the prompt and suffix are
//! laid out in the model's FIM format (graft-engine's `fim`, detected from the model or set
//! in `model.prompt_format`), and the format's own stop sequences are added. A model without
//! FIM tokens continues the prompt and does not see the suffix.
//!
//! For a project, code retrieved around the cursor goes first, as other files of the
//! repository in the model's repo-level format, within the project's token budget (the
//! layout is `completion`'s).
//!
//! `prompt` may be a batch (a list of strings or of token id lists): each prompt is laid out
//! as if alone and gets its `n` choices in turn, prompt `i`'s choice `j` at index `i * n + j`.
//!
//! `best_of` generates that many candidates and answers the `n` likeliest (not streamed).
//! `echo` puts the prompt as the request gave it ahead of each choice's text. With `logprobs`
//! too, the answer's log-probabilities start with the prompt's own (its first token's
//! `null`), as lm-evaluation-harness reads them to score answers: the prompt is then read as
//! given (token ids, or the text's tokens), without retrieved code or a prompt format, and
//! the model reads it once for its log-probabilities (`graft_engine::score`) before its
//! choices continue it. `echo` with `max_tokens: 0` generates nothing: each choice is its
//! prompt (with its log-probabilities when asked).
//!
//! Tabby's plugins post Tabby's completion request here (`segments`, no `prompt`):
//! `routes::tabby` answers it.

use std::sync::{Mutex, PoisonError};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use graft_engine::fim::FimInput;
use graft_engine::{Completion, FinishReason, Usage};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::generation::{admit, choices, start_choices, Generation, MAX_CHOICES};
use crate::json::{self, Body};
use crate::openai::{self, AnswerHead, CompletionLogprobs, PromptInput, PromptLogprobs, Source, StopReason, TextChoice};
use crate::prompt;
use crate::prompt::completion::{self, TooLong};
use crate::routes::params::{check_grammar, check_token_ids, debug_info, structured, SamplingFields};
use crate::routes::scoring;
use crate::routes::sse::{self, Extras, Part};
use crate::routes::tabby;
use crate::state::AppState;

pub async fn completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    // Tabby's plugins post their own request here.
    if tabby::is_tabby(&body) {
        let answer = tabby::complete(&state, &caller, json::parse(&body)?).await?;
        return Ok(axum::Json(answer).into_response());
    }
    let request: openai::CompletionRequest = json::parse(&body)?;
    let streaming = request.stream == Some(true);
    let include_usage = request.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let started = start(&state, &caller, request).await?;
    let Started {
        generations,
        extras,
        model,
        echoed,
        prompt_logprobs,
        vllm_prompt_logprobs,
        n,
        best_of,
        hide_logprobs,
        prompt_only,
    } = started;
    let prompt_count = match &prompt_only {
        Some(lengths) => lengths.len(),
        None => generations.len() / best_of as usize,
    };
    // Each choice's text offsets start after its prompt's when the prompt's entries lead.
    let offsets = (0..prompt_count * n as usize)
        .map(|i| {
            prompt_logprobs
                .as_ref()
                .and_then(|p| p.get(i / n as usize))
                .map_or(0, |(_, end)| *end)
        })
        .collect();
    let chunks = TextChunks {
        head: AnswerHead::new("cmpl", model),
        offsets: Mutex::new(offsets),
        echo: echoed,
        prompt_logprobs,
        vllm_prompt_logprobs,
        per_prompt: n,
    };
    if let Some(lengths) = prompt_only {
        // `echo` with `max_tokens: 0`: each choice is its prompt (and its log-probabilities).
        let completions: Vec<Completion> = lengths
            .iter()
            .flat_map(|&prompt_tokens| std::iter::repeat_n(prompt_tokens, n as usize))
            .map(|prompt_tokens| Completion {
                text: String::new(),
                finish_reason: FinishReason::Length,
                stopped_by: None,
                usage: Usage {
                    prompt_tokens,
                    cached_tokens: 0,
                    completion_tokens: 0,
                },
                logprobs: None,
            })
            .collect();
        if streaming {
            let choices = completions.iter().map(sse::ended).collect();
            return Ok(sse::stream(choices, chunks, include_usage, extras).into_response());
        }
        let usage = sse::usage_of(&completions, n);
        return Ok(sse::whole(completions, usage, &chunks, extras));
    }
    if best_of > n {
        // Usage counts every candidate: each was generated.
        let (candidates, usage) = sse::collect(generations, best_of).await?;
        let mut candidates = candidates.into_iter();
        let mut best = Vec::with_capacity(prompt_count * n as usize);
        for _ in 0..prompt_count {
            let of_this_prompt = candidates.by_ref().take(best_of as usize).collect();
            best.extend(keep_best(of_this_prompt, n as usize, hide_logprobs));
        }
        return Ok(sse::whole(best, usage, &chunks, extras));
    }
    sse::respond(generations, chunks, streaming, include_usage, extras).await
}

/// A completion request's generations, started: what any API's answer is made of.
pub(crate) struct Started {
    /// Each prompt's `best_of` candidates in turn.
    pub generations: Vec<Generation>,
    /// graft's extension fields (the sources retrieval used, the debug prompt).
    pub extras: Extras,
    /// The model as the request named it.
    pub model: String,
    /// `echo`: each prompt as the request gave it.
    echoed: Option<Vec<String>>,
    /// `echo` with `logprobs`: each prompt's log-probabilities, and the text offset after them.
    prompt_logprobs: Option<Vec<(CompletionLogprobs, usize)>>,
    /// vLLM's `prompt_logprobs`: each prompt's.
    vllm_prompt_logprobs: Option<Vec<PromptLogprobs>>,
    /// Choices answered per prompt, and candidates generated per prompt.
    n: u32,
    best_of: u32,
    /// The log-probabilities were asked for `best_of`'s ranking alone.
    hide_logprobs: bool,
    /// `echo` with `max_tokens: 0`: nothing is generated (`generations` is empty); each
    /// prompt's length in tokens.
    prompt_only: Option<Vec<usize>>,
}

/// Checks a completion request, lays out its prompts (FIM, retrieval for a project) and
/// starts their candidates under one admission.
pub(crate) async fn start(state: &AppState, caller: &Caller, request: openai::CompletionRequest) -> Result<Started, ApiError> {
    let n = choices(request.n)?;
    let best_of = match request.best_of {
        None => n,
        Some(b) if (n..=MAX_CHOICES).contains(&b) => b,
        Some(b) => {
            return Err(ApiError::invalid_param(
                "best_of",
                format!("best_of must be between n ({n}) and {MAX_CHOICES}, got {b}"),
            ))
        }
    };
    let echo = request.echo == Some(true);
    // `echo` with `logprobs`: the prompt's own log-probabilities lead the answer's.
    let scoring = echo && request.logprobs.is_some();
    let vllm_scoring = scoring::check(request.prompt_logprobs, request.stream == Some(true))?;
    // `echo` with `max_tokens: 0`, OpenAI's old way to score a prompt: the prompt alone.
    let prompt_only = echo && request.max_tokens == Some(0);
    if prompt_only && best_of > n {
        return Err(ApiError::invalid_param(
            "best_of",
            "best_of needs something to generate: max_tokens is 0",
        ));
    }
    if echo && request.suffix.is_some() {
        return Err(ApiError::invalid_param("echo", "echo cannot be used together with suffix"));
    }
    let target = state.target(&request.model, caller)?;
    if request.stream == Some(true) && best_of > n {
        return Err(ApiError::invalid_param("best_of", "best_of greater than n cannot be streamed"));
    }
    let debug = request.debug == Some(true);
    let format = state.engine().prompt_format();
    let mut sampling = SamplingFields {
        // Checked as if one token were asked for, when none is.
        max_tokens: request.max_tokens.map(|m| m.max(u32::from(prompt_only))),
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.top_k,
        min_p: request.min_p,
        stop: request.stop.map(openai::Stop::into_vec).unwrap_or_default(),
        seed: request.seed,
        frequency_penalty: request.frequency_penalty,
        presence_penalty: request.presence_penalty,
        repetition: request.repetition,
        ending: request.ending,
        logprobs: request.logprobs.map(|top| (top, "logprobs")),
        logit_bias: request.logit_bias,
    }
    .resolve(&state.generation())?;
    check_token_ids(state, &sampling)?;
    let grammar = structured(request.structured)?;
    check_grammar(state, grammar.as_ref())?;
    sampling.grammar = grammar.map(|(grammar, _)| grammar);
    // best_of ranks its candidates by their tokens' log-probabilities: asked for here when the
    // request did not ask, and left out of the answer then.
    let hide_logprobs = best_of > n && sampling.logprobs.is_none();
    if best_of > n {
        sampling.logprobs.get_or_insert(0);
    }

    // The prompts, each as text (to be laid out with context) or as token ids (taken as they
    // are): one, or a batch, as OpenAI takes them (each prompt's choices in turn).
    let prompts: Vec<Result<String, Vec<u32>>> = match request.prompt {
        PromptInput::Text(text) => vec![Ok(text)],
        PromptInput::Texts(texts) => texts.into_iter().map(Ok).collect(),
        PromptInput::Tokens(tokens) => vec![Err(tokens)],
        PromptInput::TokenLists(lists) => lists.into_iter().map(Err).collect(),
    };
    let suffix = request.suffix;
    check_prompts(&prompts, suffix.as_deref(), best_of)?;
    if debug && prompts.len() > 1 {
        return Err(ApiError::unsupported("debug", "debug with several prompts is not supported"));
    }
    tracing::debug!(model = %target.name, prompts = prompts.len(), max_tokens = sampling.max_tokens, format = format.name(), "completion request");

    let admitted = admit(state).await?;
    let prompt_count = prompts.len();
    let mut laid_out = Vec::with_capacity(prompt_count);
    let mut echoed = Vec::with_capacity(prompt_count);
    let mut sources: Option<Vec<Source>> = None;
    for (i, prompt) in prompts.into_iter().enumerate() {
        let tokens = match prompt {
            Err(tokens) => {
                prompt::check_length(state, tokens.len(), "prompt", "The prompt")?;
                state
                    .engine()
                    .check_token_ids("prompt", &tokens)
                    .map_err(|e| ApiError::invalid_param("prompt", e.to_string()))?;
                if echo {
                    echoed.push(state.engine().detokenize(tokens.clone()).await?);
                }
                tokens
            }
            Ok(prefix) if scoring || prompt_only => {
                // Read as given: the prompt's log-probabilities are of its own tokens.
                let tokens = state.engine().tokenize(&prefix, true).await?;
                prompt::check_length(state, tokens.len(), "prompt", "The prompt")?;
                echoed.push(prefix);
                tokens
            }
            Ok(prefix) => {
                if echo {
                    echoed.push(prefix.clone());
                }
                // Without a suffix the prompt is the client's own, in the model's format
                // (special tokens written in it stay special); with one, it is code.
                let input = FimInput {
                    prefix,
                    raw_prefix: suffix.is_none(),
                    suffix: suffix.clone(),
                    path: request.path.clone().filter(|p| !p.is_empty()),
                    ..FimInput::default()
                };
                // The first prompt's layout adds the format's stop sequences; the others would
                // add the same ones again.
                let mut scratch;
                let layout_sampling = if i == 0 {
                    &mut sampling
                } else {
                    scratch = sampling.clone();
                    &mut scratch
                };
                let prompt = completion::lay_out(
                    state,
                    &target,
                    input,
                    Vec::new(),
                    request.retrieval,
                    layout_sampling,
                    TooLong::Refuse("prompt"),
                )
                .await?;
                if let Some(found) = prompt.sources {
                    sources.get_or_insert_with(Vec::new).extend(found);
                }
                prompt.tokens
            }
        };
        laid_out.push(tokens);
    }
    let debug = match (debug, laid_out.first()) {
        (true, Some(tokens)) => Some(debug_info(state, tokens).await?),
        _ => None,
    };
    // One scoring of each prompt serves `echo`'s entries and vLLM's `prompt_logprobs`.
    let echo_top = scoring.then(|| sampling.logprobs.unwrap_or(0));
    let (prompt_logprobs, vllm_prompt_logprobs) = match echo_top.max(vllm_scoring) {
        None => (None, None),
        Some(top) => {
            let scored = scoring::score(state, caller, &target, &laid_out, top).await?;
            let echoed = echo_top.map(|top| {
                scored
                    .iter()
                    .map(|s| CompletionLogprobs::prompt(s.first.clone(), scoring::keep_top(&s.entries, top)))
                    .collect()
            });
            let vllm = vllm_scoring.map(|top| {
                scored
                    .into_iter()
                    .map(|s| PromptLogprobs::new(scoring::keep_top(&s.entries, top)))
                    .collect()
            });
            (echoed, vllm)
        }
    };
    let prompt_lengths = prompt_only.then(|| laid_out.iter().map(Vec::len).collect());
    let generations = match prompt_only {
        true => Vec::new(),
        false => start_choices(state, caller, admitted, &target, laid_out, sampling, best_of).await?,
    };
    Ok(Started {
        generations,
        extras: Extras {
            sources,
            debug,
            prompt_logprobs: None,
        },
        model: target.name,
        echoed: echo.then_some(echoed),
        prompt_logprobs,
        vllm_prompt_logprobs,
        n,
        best_of,
        hide_logprobs,
        prompt_only: prompt_lengths,
    })
}

/// Most prompts one request may send (LangChain sends up to 20 at a time).
const MAX_PROMPTS: usize = 32;
/// Most sequences one request may start: its prompts times `best_of` (or `n`).
const MAX_SEQUENCES: usize = 64;

/// A request's prompts: at least one and at most [`MAX_PROMPTS`], none empty, token ids only
/// without `suffix`, and not more sequences than [`MAX_SEQUENCES`] with `best_of` each.
fn check_prompts(prompts: &[Result<String, Vec<u32>>], suffix: Option<&str>, best_of: u32) -> Result<(), ApiError> {
    let invalid = |message: String| Err(ApiError::invalid_param("prompt", message));
    if prompts.is_empty() {
        return invalid("`prompt` must not be empty".into());
    }
    if prompts.len() > MAX_PROMPTS {
        return invalid(format!("at most {MAX_PROMPTS} prompts per request, got {}", prompts.len()));
    }
    if prompts.len() * best_of as usize > MAX_SEQUENCES {
        return invalid(format!(
            "{} prompts with {best_of} choices each make more than {MAX_SEQUENCES} sequences; send fewer prompts per request",
            prompts.len()
        ));
    }
    if suffix.is_some() && prompts.iter().any(Result::is_err) {
        return Err(ApiError::invalid_param("suffix", "suffix needs `prompt` as text, not token ids"));
    }
    let no_suffix = suffix.is_none_or(str::is_empty);
    for (i, prompt) in prompts.iter().enumerate() {
        let empty = match prompt {
            Ok(text) => text.is_empty() && no_suffix,
            Err(tokens) => tokens.is_empty(),
        };
        if empty {
            return invalid(match prompts.len() {
                1 => "`prompt` must not be empty".into(),
                _ => format!("prompt {i} of the batch is empty"),
            });
        }
    }
    Ok(())
}

/// The `n` candidates whose tokens the model found likeliest (the highest sum of
/// log-probabilities, as vLLM ranks `best_of`), likeliest first; their log-probabilities
/// dropped when the request did not ask for them.
fn keep_best(mut candidates: Vec<Completion>, n: usize, hide_logprobs: bool) -> Vec<Completion> {
    let score = |c: &Completion| -> f64 { c.logprobs.iter().flatten().map(|t| f64::from(t.logprob)).sum() };
    candidates.sort_by(|a, b| score(b).total_cmp(&score(a)));
    candidates.truncate(n);
    if hide_logprobs {
        for candidate in &mut candidates {
            candidate.logprobs = None;
        }
    }
    candidates
}

/// Completion's answers: a whole `text_completion`, or a stream of text pieces, the first one
/// with the sources.
struct TextChunks {
    head: AnswerHead,
    /// Where each choice's next piece of text starts in its answer (characters), for
    /// `text_offset`.
    offsets: Mutex<Vec<usize>>,
    /// `echo`: each prompt as the request gave it (token ids as their text), ahead of each of
    /// its choices' text; a stream sends it as each choice's first event. Retrieved context and
    /// a FIM layout are not part of it.
    echo: Option<Vec<String>>,
    /// `echo` with `logprobs`: each prompt's log-probabilities, ahead of each of its choices'
    /// (a stream sends them with the echoed prompt), and the text offset after them.
    prompt_logprobs: Option<Vec<(CompletionLogprobs, usize)>>,
    /// vLLM's `prompt_logprobs`: each prompt's, on each of its choices of a whole answer.
    vllm_prompt_logprobs: Option<Vec<PromptLogprobs>>,
    /// Choices answered per prompt (`n`): choice `index` answers prompt `index / per_prompt`.
    per_prompt: u32,
}

impl TextChunks {
    /// The echoed prompt of choice `index`, when the request asked for `echo`.
    fn echoed(&self, index: u32) -> Option<&str> {
        let prompt = (index / self.per_prompt.max(1)) as usize;
        self.echo.as_ref().and_then(|prompts| prompts.get(prompt)).map(String::as_str)
    }

    /// The log-probabilities of choice `index`'s prompt and the text offset after them, when
    /// the request asked for `echo` with `logprobs`.
    fn prompt_logprobs(&self, index: u32) -> Option<&(CompletionLogprobs, usize)> {
        let prompt = (index / self.per_prompt.max(1)) as usize;
        self.prompt_logprobs.as_ref().and_then(|prompts| prompts.get(prompt))
    }

    /// vLLM's `prompt_logprobs` of choice `index`'s prompt, when the request asked for them.
    fn vllm_prompt_logprobs(&self, index: u32) -> Option<PromptLogprobs> {
        let prompt = (index / self.per_prompt.max(1)) as usize;
        self.vllm_prompt_logprobs.as_ref().and_then(|prompts| prompts.get(prompt)).cloned()
    }
}

impl sse::Chunks for TextChunks {
    const CHUNK_OBJECT: &'static str = "text_completion";
    const WHOLE_OBJECT: &'static str = "text_completion";
    type Chunk = TextChoice;
    type Whole = TextChoice;

    fn head(&self) -> &AnswerHead {
        &self.head
    }

    fn opens(&self) -> bool {
        self.echo.is_some()
    }

    fn choices_per_prompt(&self) -> u32 {
        self.per_prompt
    }

    fn chunk(&self, index: u32, part: Part) -> TextChoice {
        let mut stop_reason = None;
        let (text, finish_reason, logprobs) = match part {
            Part::Open => (
                self.echoed(index).unwrap_or_default().to_owned(),
                None,
                self.prompt_logprobs(index).map(|(logprobs, _)| logprobs.clone()),
            ),
            Part::Text(text, logprobs) => {
                let logprobs = logprobs.map(|tokens| {
                    // The offsets are plain numbers: a panic elsewhere leaves them usable.
                    let mut offsets = self.offsets.lock().unwrap_or_else(PoisonError::into_inner);
                    let Some(offset) = offsets.get_mut(index as usize) else {
                        return CompletionLogprobs::new(tokens, 0).0;
                    };
                    let (logprobs, next) = CompletionLogprobs::new(tokens, *offset);
                    *offset = next;
                    logprobs
                });
                (text, None, logprobs)
            }
            Part::Finish(reason, stopped_by) => {
                stop_reason = stopped_by.map(StopReason::from);
                (String::new(), Some(reason), None)
            }
            // Completions take no tools.
            Part::Calls(_) => (String::new(), None, None),
        };
        TextChoice {
            index,
            text,
            finish_reason,
            stop_reason,
            logprobs,
            prompt_logprobs: None,
        }
    }

    fn whole(&self, index: u32, completion: Completion) -> TextChoice {
        let text = match self.echoed(index) {
            Some(prompt) => format!("{prompt}{}", completion.text),
            None => completion.text,
        };
        TextChoice {
            index,
            text,
            finish_reason: Some(completion.finish_reason.as_str()),
            stop_reason: completion.stopped_by.map(StopReason::from),
            logprobs: match (self.prompt_logprobs(index), completion.logprobs) {
                (Some((prompt, end)), answer) => {
                    let mut logprobs = prompt.clone();
                    logprobs.extend(answer.unwrap_or_default(), *end);
                    Some(logprobs)
                }
                (None, answer) => answer.map(|tokens| CompletionLogprobs::new(tokens, 0).0),
            },
            prompt_logprobs: self.vllm_prompt_logprobs(index),
        }
    }
}

#[cfg(test)]
mod tests {
    use graft_engine::{FinishReason, TokenLogprob, Usage};

    use super::*;

    fn candidate(text: &str, logprobs: &[f32]) -> Completion {
        let tokens = logprobs
            .iter()
            .map(|&logprob| TokenLogprob {
                id: 0,
                token: String::new(),
                bytes: Vec::new(),
                logprob,
                rank: 1,
                top: Vec::new(),
            })
            .collect();
        Completion {
            text: text.into(),
            finish_reason: FinishReason::Length,
            stopped_by: None,
            usage: Usage {
                prompt_tokens: 1,
                cached_tokens: 0,
                completion_tokens: logprobs.len(),
            },
            logprobs: Some(tokens),
        }
    }

    #[test]
    fn best_of_keeps_the_highest_sums_likeliest_first() {
        // The sum counts, not the length or a single token: `c` has the likeliest token.
        let candidates = vec![
            candidate("a", &[-1.0, -1.0]),
            candidate("b", &[-0.5, -0.5, -0.5]),
            candidate("c", &[-0.1, -3.0]),
            candidate("d", &[-0.2]),
        ];
        let kept = keep_best(candidates.clone(), 2, false);
        let texts: Vec<&str> = kept.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["d", "b"]);
        assert!(kept.iter().all(|c| c.logprobs.is_some()));
        let kept = keep_best(candidates, 1, true);
        assert_eq!((kept.len(), kept[0].text.as_str(), kept[0].logprobs.is_none()), (1, "d", true));
    }
}
