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
//! `best_of` generates that many candidates and answers the `n` likeliest (not streamed).
//! `echo` puts the prompt as the request gave it ahead of each choice's text; the prompt's
//! log-probabilities (`echo` with `logprobs`) are not computed, and are refused.

use std::sync::{Mutex, PoisonError};

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use graft_engine::fim::FimInput;
use graft_engine::Completion;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::generation::{admit, choices, start_choices, MAX_CHOICES};
use crate::json::Json;
use crate::openai::{self, AnswerHead, CompletionLogprobs, PromptInput, TextChoice};
use crate::prompt;
use crate::prompt::completion::{self, TooLong};
use crate::routes::params::{check_grammar, check_logit_bias, debug_info, structured, SamplingFields};
use crate::routes::sse::{self, Extras, Part};
use crate::state::AppState;

pub async fn completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<openai::CompletionRequest>,
) -> Result<Response, ApiError> {
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
    if echo && request.logprobs.is_some() {
        return Err(ApiError::unsupported(
            "echo",
            "echo together with logprobs (the prompt's log-probabilities) is not supported",
        ));
    }
    if echo && request.suffix.is_some() {
        return Err(ApiError::invalid_param("echo", "echo cannot be used together with suffix"));
    }
    let target = state.target(&request.model, &caller)?;
    let streaming = request.stream == Some(true);
    if streaming && best_of > n {
        return Err(ApiError::invalid_param("best_of", "best_of greater than n cannot be streamed"));
    }
    let debug = request.debug == Some(true);
    let include_usage = request.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let format = state.engine().prompt_format();
    let mut sampling = SamplingFields {
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.top_k,
        min_p: request.min_p,
        stop: request.stop.map(openai::Stop::into_vec).unwrap_or_default(),
        seed: request.seed,
        frequency_penalty: request.frequency_penalty,
        presence_penalty: request.presence_penalty,
        logprobs: request.logprobs.map(|top| (top, "logprobs")),
        logit_bias: request.logit_bias,
    }
    .resolve(state.generation())?;
    check_logit_bias(&state, &sampling)?;
    let grammar = structured(request.structured)?;
    check_grammar(&state, grammar.as_ref())?;
    sampling.grammar = grammar.map(|(grammar, _)| grammar);
    // best_of ranks its candidates by their tokens' log-probabilities: asked for here when the
    // request did not ask, and left out of the answer then.
    let hide_logprobs = best_of > n && sampling.logprobs.is_none();
    if best_of > n {
        sampling.logprobs.get_or_insert(0);
    }

    // The prompt as text (to be laid out with context) or as token ids (taken as they are).
    let (prefix, suffix) = match (request.prompt, request.suffix) {
        (PromptInput::Tokens(tokens), None) => (Err(tokens), None),
        (PromptInput::TokenLists(mut lists), None) if lists.len() == 1 => (Err(lists.remove(0)), None),
        (PromptInput::Tokens(_) | PromptInput::TokenLists(_), Some(_)) => {
            return Err(ApiError::invalid_param("suffix", "suffix needs `prompt` as text, not token ids"))
        }
        (PromptInput::TokenLists(_), None) | (PromptInput::Texts(_), _) => {
            return Err(ApiError::invalid_param("prompt", "Only one prompt per request is supported"))
        }
        (PromptInput::Text(prefix), suffix) => (Ok(prefix), suffix),
    };
    if matches!(&prefix, Ok(p) if p.is_empty() && suffix.as_deref().is_none_or(str::is_empty)) || matches!(&prefix, Err(t) if t.is_empty())
    {
        return Err(ApiError::invalid_param("prompt", "`prompt` must not be empty"));
    }
    tracing::debug!(model = %target.name, max_tokens = sampling.max_tokens, streaming, format = format.name(), "completion request");

    let admitted = admit(&state).await?;
    let mut echoed = None;
    let (tokens, sources) = match prefix {
        Err(tokens) => {
            prompt::check_length(&state, tokens.len(), "prompt", "The prompt")?;
            state
                .engine()
                .check_token_ids("prompt", &tokens)
                .map_err(|e| ApiError::invalid_param("prompt", e.to_string()))?;
            if echo {
                echoed = Some(state.engine().detokenize(None, tokens.clone()).await?);
            }
            (tokens, None)
        }
        Ok(prefix) => {
            if echo {
                echoed = Some(prefix.clone());
            }
            let input = FimInput {
                prefix,
                suffix,
                path: request.path.filter(|p| !p.is_empty()),
                ..FimInput::default()
            };
            let prompt = completion::lay_out(
                &state,
                &target,
                input,
                Vec::new(),
                request.retrieval,
                &mut sampling,
                TooLong::Refuse("prompt"),
            )
            .await?;
            (prompt.tokens, prompt.sources)
        }
    };
    let debug = if debug { Some(debug_info(&state, &tokens).await?) } else { None };
    let generations = start_choices(&state, &caller, admitted, &target, tokens, sampling, best_of).await?;
    let chunks = TextChunks {
        head: AnswerHead::new("cmpl", target.name),
        offsets: Mutex::new(vec![0; n as usize]),
        echo: echoed,
    };
    let extras = Extras { sources, debug };
    if best_of > n {
        // Usage counts every candidate: each was generated.
        let (candidates, usage) = sse::collect(generations).await?;
        let best = keep_best(candidates, n as usize, hide_logprobs);
        return Ok(sse::whole(best, usage, &chunks, extras));
    }
    sse::respond(generations, chunks, streaming, include_usage, extras).await
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
    /// `echo`: the prompt as the request gave it (token ids as their text), ahead of each
    /// choice's text; a stream sends it as each choice's first event. Retrieved context and a
    /// FIM layout are not part of it.
    echo: Option<String>,
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

    fn chunk(&self, index: u32, part: Part) -> TextChoice {
        let (text, finish_reason, logprobs) = match part {
            Part::Open => (self.echo.clone().unwrap_or_default(), None, None),
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
            Part::Finish(reason) => (String::new(), Some(reason), None),
            // Completions take no tools.
            Part::Calls(_) => (String::new(), None, None),
        };
        TextChoice {
            index,
            text,
            finish_reason,
            logprobs,
        }
    }

    fn whole(&self, index: u32, completion: Completion) -> TextChoice {
        let text = match &self.echo {
            Some(prompt) => format!("{prompt}{}", completion.text),
            None => completion.text,
        };
        TextChoice {
            index,
            text,
            finish_reason: Some(completion.finish_reason.as_str()),
            logprobs: completion.logprobs.map(|tokens| CompletionLogprobs::new(tokens, 0).0),
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
                top: Vec::new(),
            })
            .collect();
        Completion {
            text: text.into(),
            finish_reason: FinishReason::Length,
            usage: Usage {
                prompt_tokens: 1,
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
