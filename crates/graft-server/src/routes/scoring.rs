//! A prompt's own log-probabilities beside an answer: completions' `echo` with `logprobs`
//! (OpenAI's legacy format, `CompletionLogprobs::prompt`) and vLLM's `prompt_logprobs` on
//! completions and chat (`PromptLogprobs`). Both are read from one scoring of each prompt the
//! model reads (`graft_engine::score`, through the pool so an adapter scores its own prompt).
//!
//! This module owns the `prompt_logprobs` field's checks and the scoring call; it must not lay
//! out prompts.

use graft_engine::logprobs::MAX_TOP_LOGPROBS;
use graft_engine::TokenLogprob;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::state::{AppState, Target};

/// One prompt, scored: its first token's text (which nothing comes before) and the entries
/// of every token after it.
pub struct Scored {
    pub first: String,
    pub entries: Vec<TokenLogprob>,
}

/// vLLM's `prompt_logprobs`: how many of the likeliest tokens to list at each place of the
/// prompt (0: the prompt's own token alone); not with `stream`, as in vLLM.
pub fn check(prompt_logprobs: Option<u32>, streaming: bool) -> Result<Option<usize>, ApiError> {
    let Some(top) = prompt_logprobs else { return Ok(None) };
    if top as usize > MAX_TOP_LOGPROBS {
        return Err(ApiError::invalid_param(
            "prompt_logprobs",
            format!("prompt_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {top}"),
        ));
    }
    if streaming {
        return Err(ApiError::invalid_param(
            "prompt_logprobs",
            "prompt_logprobs is not available with stream: ask without it",
        ));
    }
    Ok(Some(top as usize))
}

/// Each of `prompts` scored on the request's model, with the `top` likeliest tokens at each
/// place.
pub async fn score(state: &AppState, caller: &Caller, target: &Target, prompts: &[Vec<u32>], top: usize) -> Result<Vec<Scored>, ApiError> {
    let tokenizer = state.engine().tokenizer()?;
    let mut scored = Vec::with_capacity(prompts.len());
    for tokens in prompts {
        let entries = state
            .pool()
            .prompt_logprobs(&target.model, tokens.clone(), top)
            .await
            .map_err(|e| state.pool_error(e, caller))?;
        let first = tokenizer.decode(&tokens[..1.min(tokens.len())])?;
        scored.push(Scored { first, entries });
    }
    Ok(scored)
}

/// `entries` with at most `top` of the likeliest tokens at each place (a scoring asked for
/// more serves two fields).
pub fn keep_top(entries: &[TokenLogprob], top: usize) -> Vec<TokenLogprob> {
    entries
        .iter()
        .map(|entry| {
            let mut entry = entry.clone();
            entry.top.truncate(top);
            entry
        })
        .collect()
}
