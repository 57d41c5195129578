//! Completion prompts, shared by `POST /v1/completions` and llama.cpp's `POST /infill`: the
//! current file (prefix, and suffix for fill-in-the-middle) laid out in the model's format
//! (graft-engine's `fim`), after the project's retrieved code and the files the client sent
//! as extra context, within `generation.max_prompt_tokens`.
//!
//! Order in the prompt: retrieved code (most relevant first), then the client's extra files,
//! then the current file. Extra files get `generation.max_extra_context_tokens`; those that do
//! not fit are left out, oldest (first) first, as llama.cpp does. Retrieved code gets the
//! project's token budget, within what the current file and the extra files leave of the
//! prompt limit. This module does not generate.

use graft_engine::fim::{ContextFile, FimInput};
use graft_engine::{EngineError, Sampling};

use crate::augment::{self, CountTokens, Source};
use crate::error::ApiError;
use crate::generation::retrieve;
use crate::openai::RetrievalField;
use crate::state::{AppState, Target};

/// Longest search query taken from the code around the cursor, in bytes.
const QUERY_CHARS: usize = 1500;

/// A laid-out completion prompt.
#[derive(Debug)]
pub struct CompletionPrompt {
    /// The prompt as the model reads it.
    pub text: String,
    pub tokens: Vec<u32>,
    /// The retrieved code used (project requests only).
    pub sources: Option<Vec<Source>>,
    /// How many of the client's extra files were left out for want of room.
    pub extra_dropped: usize,
}

/// Lays out `input` (prefix, optional suffix, optional path) for `target` with the client's
/// `extra` files and, for a project, retrieved code. A suffix is dropped for a model without
/// fill-in-the-middle tokens; when one is used, the format's stop sequences are added to
/// `sampling`. A prompt over the limit is a 400 naming `param`.
pub async fn lay_out(
    state: &AppState,
    target: &Target,
    mut input: FimInput,
    extra: Vec<ContextFile>,
    retrieval: Option<RetrievalField>,
    sampling: &mut Sampling,
    param: &'static str,
) -> Result<CompletionPrompt, ApiError> {
    let format = state.engine().prompt_format();
    let limit = state.generation().max_prompt_tokens;
    if !format.has_fim() {
        input.suffix = None;
    }
    if input.suffix.is_some() {
        sampling.stop.extend(format.stop_sequences().iter().map(|s| (*s).to_owned()));
    }
    let count = |input: &FimInput| {
        let text = format.render(input);
        async move { state.engine().tokenize(None, &text, true).await.map(|t| t.len()) }
    };

    // The client's extra files: the newest (last) ones that fit their budget and beside the
    // current file.
    let mut extra_dropped = 0;
    if !extra.is_empty() {
        let room = limit.saturating_sub(count(&input).await?).min(state.generation().max_extra_context_tokens);
        let (kept, dropped) = newest_that_fit(state.engine(), extra, room).await?;
        input.context = kept;
        extra_dropped = dropped;
    }

    let mut sources = None;
    if let Some(project) = &target.project {
        input.repo = Some(project.name().to_owned());
        let query = augment::completion_query(&input.prefix, input.suffix.as_deref(), QUERY_CHARS);
        let mut used = Vec::new();
        if let Some(hits) = retrieve(state, project, &query, retrieval).await? {
            let own = count(&input).await?;
            let budget = project.config.context_tokens.min(limit.saturating_sub(own));
            let (mut files, kept) = augment::completion(state.engine(), hits, budget).await?;
            files.append(&mut input.context);
            input.context = files;
            used = kept;
        }
        sources = Some(used);
    }

    let text = format.render(&input);
    let tokens = state.engine().tokenize(None, &text, true).await?;
    check_length(state, tokens.len(), param)?;
    Ok(CompletionPrompt {
        text,
        tokens,
        sources,
        extra_dropped,
    })
}

/// A 400 naming `param` when a prompt of `tokens` is over `generation.max_prompt_tokens`.
pub fn check_length(state: &AppState, tokens: usize, param: &'static str) -> Result<(), ApiError> {
    let limit = state.generation().max_prompt_tokens;
    if tokens > limit {
        return Err(ApiError::invalid_param(
            param,
            format!("The prompt is {tokens} tokens long; the limit is {limit} (generation.max_prompt_tokens)"),
        ));
    }
    Ok(())
}

/// The newest (last) of `files` that fit `room` tokens together, in their order, and how many
/// older ones were left out. Once one does not fit, no older one is taken: what the model sees
/// is the most recent run of files.
async fn newest_that_fit(counter: &impl CountTokens, files: Vec<ContextFile>, room: usize) -> Result<(Vec<ContextFile>, usize), EngineError> {
    let mut left = room;
    let mut kept = Vec::new();
    let mut dropped = 0;
    for file in files.into_iter().rev() {
        if dropped == 0 {
            let tokens = counter.count(&format!("{}\n{}\n", file.path, file.text)).await?;
            if tokens <= left {
                left -= tokens;
                kept.push(file);
                continue;
            }
        }
        dropped += 1;
    }
    kept.reverse();
    Ok((kept, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::tests::{block_on, Words};

    fn file(path: &str, words: usize) -> ContextFile {
        ContextFile {
            path: path.into(),
            text: vec!["w"; words].join(" "),
        }
    }

    #[test]
    fn the_newest_extra_files_that_fit_are_kept_in_order() {
        // Each file costs its words plus one for the path.
        let files = vec![file("a", 9), file("b", 4), file("c", 4)];
        let (kept, dropped) = block_on(newest_that_fit(&Words, files.clone(), 10)).expect("fit");
        assert_eq!(kept.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(dropped, 1);
        // Nothing older than a file that did not fit is taken, even if it would fit.
        let files = vec![file("small", 1), file("big", 50), file("last", 2)];
        let (kept, dropped) = block_on(newest_that_fit(&Words, files, 10)).expect("fit");
        assert_eq!(kept.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["last"]);
        assert_eq!(dropped, 2);
        let (kept, dropped) = block_on(newest_that_fit(&Words, vec![file("a", 3)], 100)).expect("fit");
        assert_eq!((kept.len(), dropped), (1, 0));
    }
}
