//! Prompts as the model reads them, laid out in one place per kind and checked against
//! `generation.max_prompt_tokens` in one place ([`check_length`]):
//!
//! - [`chat`]: a conversation through the model's chat template, with a project's retrieved
//!   code as a context message;
//! - [`completion`]: the current file in the model's completion / fill-in-the-middle format,
//!   after retrieved code and the client's extra files (`/v1/completions`, `/infill`);
//! - [`augment`]: search hits turned into that context within a token budget.
//!
//! Each lay-out returns the token ids it checked; the pool is handed exactly those, so the
//! model reads the prompt that was measured. This module does not generate.

pub mod augment;
pub mod chat;
pub mod completion;

use crate::error::ApiError;
use crate::state::AppState;

/// A 400 naming `param` when a prompt of `tokens` is over `generation.max_prompt_tokens`;
/// `what` says what the prompt is ("The conversation", "The prompt").
pub fn check_length(state: &AppState, tokens: usize, param: &'static str, what: &str) -> Result<(), ApiError> {
    let limit = state.generation().max_prompt_tokens;
    if tokens > limit {
        return Err(ApiError::invalid_param(
            param,
            format!("{what} is {tokens} tokens long; the limit is {limit} (generation.max_prompt_tokens)"),
        ));
    }
    Ok(())
}
