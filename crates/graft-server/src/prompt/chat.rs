//! Chat prompts: the conversation, with a project's retrieved code as a context message
//! (`augment::chat`) within the project's token budget and what the conversation leaves of the
//! prompt limit, put through the model's chat template into the token ids the model reads.

use graft_engine::{ChatMessage, Turn};

use super::{augment, check_length};
use crate::error::ApiError;
use crate::generation::retrieve;
use crate::openai::RetrievalField;
use crate::projects::{LookUp, Search};
use crate::prompt::augment::Source;
use crate::state::{AppState, Target};

/// A laid-out chat prompt.
#[derive(Debug)]
pub struct ChatPrompt {
    /// The conversation as the model reads it, template and special tokens included.
    pub tokens: Vec<u32>,
    /// The retrieved code used (project requests only).
    pub sources: Option<Vec<Source>>,
}

/// Lays out `messages` for `target`: for a project, retrieved code first goes into a context
/// message; then the chat template, ending as `turn` says, and the length check (400 naming
/// `messages`).
pub async fn lay_out(
    state: &AppState,
    target: &Target,
    mut messages: Vec<ChatMessage>,
    retrieval: Option<RetrievalField>,
    turn: Turn,
) -> Result<ChatPrompt, ApiError> {
    let mut sources = None;
    if let Some(project) = &target.project {
        let query = Search {
            text: augment::chat_query(&messages),
            look_up: LookUp::Question,
            current_path: None,
        };
        let used = match retrieve(state, project, query, retrieval, None).await? {
            Some(hits) => {
                // The context may take what the conversation leaves of the prompt limit.
                let own = state.engine().chat_prompt_ending(&messages, turn).await?.len();
                let room = state.generation().max_prompt_tokens.saturating_sub(own);
                let budget = project.config.context_tokens.min(room);
                augment::chat(state.engine(), project.name(), &mut messages, hits, budget).await?
            }
            None => Vec::new(),
        };
        sources = Some(used);
    }
    let tokens = state.engine().chat_prompt_ending(&messages, turn).await?;
    check_length(state, tokens.len(), "messages", "The conversation")?;
    Ok(ChatPrompt { tokens, sources })
}
