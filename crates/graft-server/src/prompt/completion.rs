//! Completion prompts, shared by `POST /v1/completions` and llama.cpp's `POST /infill`: the
//! current file (prefix, and suffix for fill-in-the-middle) laid out in the model's format
//! (graft-engine's `fim`), after the files the client sent as extra context and the project's
//! retrieved code, within `generation.max_prompt_tokens`.
//!
//! Order in the prompt: the client's extra files, then retrieved code (most relevant first),
//! then the current file. The extra files go first, as llama.cpp lays them out: llama.vim and
//! llama.vscode send them alone ahead of time (`/infill` with `n_predict: 0`) to have them read
//! into the prompt cache, which only pays if the next prompt starts with them; and the code
//! retrieved for the cursor is then nearest to it. Extra files get `generation.max_extra_context_tokens`; those that do
//! not fit are left out, oldest (first) first, as llama.cpp does. Retrieved code gets the
//! project's token budget, within what the current file and the extra files leave of the
//! prompt limit. A current file over the limit is refused (`/v1/completions`) or cut to the
//! lines nearest the cursor (`/infill`). Near the last completion's place in the same file
//! the retrieved code is that completion's ([`crate::sticky`]), so the prompt's start stays
//! the same while the user types. This module does not generate.

use graft_engine::fim::{ContextFile, FimInput};
use graft_engine::PromptFormat;
use graft_engine::{EngineError, Sampling};

use super::augment::{self, most_that_fit, CountTokens, Source};
use super::check_length;
use crate::error::ApiError;
use crate::generation::retrieve;
use crate::openai::RetrievalField;
use crate::projects::{LookUp, Search};
use crate::state::{AppState, Target};
use crate::sticky::Spot;

/// Longest search query taken from the code around the cursor, in bytes.
const QUERY_CHARS: usize = 1500;

/// What to do with a current file longer than the prompt limit.
#[derive(Debug, Clone, Copy)]
pub enum TooLong {
    /// A 400 naming this request field (OpenAI's way).
    Refuse(&'static str),
    /// Keep the suffix's first lines (at most a quarter of the limit) and the prefix's last
    /// lines, the code nearest the cursor (llama.cpp's way on `/infill`).
    Trim,
}

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
    /// Whether the current file was cut to fit ([`TooLong::Trim`]).
    pub trimmed: bool,
}

/// The search for the code around `input`'s cursor: its last lines before and first lines
/// after as text, the names used there looked up, the current file left out. `graft dataset`
/// asks it too, so retrieval-augmented samples hold the code a completion there would get.
pub fn cursor_search(input: &FimInput) -> Search {
    Search {
        text: augment::completion_query(&input.prefix, input.suffix.as_deref(), QUERY_CHARS),
        look_up: LookUp::Cursor {
            before: input.prefix.clone(),
            after: input.suffix.clone().unwrap_or_default(),
        },
        current_path: input.path.clone(),
    }
}

/// Lays out `input` (prefix, optional suffix, optional path) for `target` with the client's
/// `extra` files and, for a project, retrieved code. A suffix is dropped for a model without
/// fill-in-the-middle tokens; when one is used, the format's stop sequences are added to
/// `sampling`. A current file over the limit is refused or cut, as `too_long` says.
pub async fn lay_out(
    state: &AppState,
    target: &Target,
    mut input: FimInput,
    extra: Vec<ContextFile>,
    retrieval: Option<RetrievalField>,
    sampling: &mut Sampling,
    too_long: TooLong,
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
        let prompt = format.render_marked(input);
        async move { state.engine().tokenize_marked(&prompt).await.map(|t| t.len()) }
    };

    let (trimmed, param) = match too_long {
        TooLong::Trim => {
            let had_prefix = !input.prefix.is_empty();
            let trimmed = trim_to_fit(state.engine(), format, &mut input, limit.saturating_sub(SPECIAL_MARGIN)).await?;
            if had_prefix && input.prefix.is_empty() {
                // Not even the line at the cursor fits: there is nothing sensible to complete.
                return Err(ApiError::invalid_param(
                    "input_prefix",
                    format!(
                        "The line before the cursor alone is longer than the prompt limit of {limit} tokens (generation.max_prompt_tokens); send the code around the cursor in lines"
                    ),
                ));
            }
            (trimmed, "input_prefix")
        }
        TooLong::Refuse(param) => (false, param),
    };

    // The client's extra files: the newest (last) ones that fit their budget and beside the
    // current file.
    let mut extra_dropped = 0;
    if !extra.is_empty() {
        let room = limit
            .saturating_sub(count(&input).await?)
            .min(state.generation().max_extra_context_tokens);
        let (kept, dropped) = newest_that_fit(state.engine(), extra, room).await?;
        input.context = kept;
        extra_dropped = dropped;
    }

    let mut sources = None;
    if let Some(project) = &target.project {
        input.repo = Some(project.name().to_owned());
        let query = cursor_search(&input);
        let mut used = Vec::new();
        let spot = Spot::of(input.path.as_deref(), &input.prefix);
        if let Some(hits) = retrieve(state, project, query, retrieval, Some(spot)).await? {
            // Code the client already sent (`/infill`'s extra files) is not retrieved again.
            let hits = hits.into_iter().filter(|h| !already_sent(&input.context, h)).collect();
            let own = count(&input).await?;
            let budget = project.config.context_tokens.min(limit.saturating_sub(own));
            let (mut files, kept) = augment::completion(state.engine(), hits, budget).await?;
            input.context.append(&mut files);
            used = kept;
        }
        sources = Some(used);
    }

    // The code and files are read as text: a special token's text in them stays text.
    let prompt = format.render_marked(&input);
    let tokens = state.engine().tokenize_marked(&prompt).await?;
    let text = prompt.text;
    check_length(state, tokens.len(), param, "The prompt")?;
    Ok(CompletionPrompt {
        text,
        tokens,
        sources,
        extra_dropped,
        trimmed,
    })
}

/// Tokens kept free when trimming, for what counting without special tokens misses (BOS).
const SPECIAL_MARGIN: usize = 4;

/// Cuts `input`'s current file so that its prompt fits `limit` tokens: the suffix to its
/// first lines (at most a quarter of the limit), then the prefix to its last lines. Whole
/// lines only; returns whether anything was cut.
async fn trim_to_fit(counter: &impl CountTokens, format: PromptFormat, input: &mut FimInput, limit: usize) -> Result<bool, EngineError> {
    let mut cut = false;
    if let Some(suffix) = &input.suffix {
        let quarter = limit / 4;
        if counter.count(suffix).await? > quarter {
            let lines: Vec<&str> = suffix.split_inclusive('\n').collect();
            let (first, _) = most_that_fit(lines.len(), |n| {
                let head = lines[..n].concat();
                async move { Ok((counter.count(&head).await? <= quarter).then_some(())) }
            })
            .await?;
            input.suffix = Some(lines[..first].concat());
            cut = true;
        }
    }
    if counter.count(&format.render(input)).await? > limit {
        let lines: Vec<String> = input.prefix.split_inclusive('\n').map(str::to_owned).collect();
        let last = |n: usize| lines[lines.len() - n..].concat();
        let (kept, _) = most_that_fit(lines.len(), |n| {
            let rendered = format.render(&FimInput {
                prefix: last(n),
                ..input.clone()
            });
            async move { Ok((counter.count(&rendered).await? <= limit).then_some(())) }
        })
        .await?;
        input.prefix = last(kept);
        cut = true;
    }
    Ok(cut)
}

/// The newest (last) of `files` that fit `room` tokens together, in their order, and how many
/// older ones were left out. Once one does not fit, no older one is taken: what the model sees
/// is the most recent run of files.
async fn newest_that_fit(
    counter: &impl CountTokens,
    files: Vec<ContextFile>,
    room: usize,
) -> Result<(Vec<ContextFile>, usize), EngineError> {
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

/// Whether `hit`'s code is in one of the client's extra files already: the same file (its
/// path as the index names it, or ending in it) holding the chunk's text.
fn already_sent(extra: &[ContextFile], hit: &graft_index::SearchHit) -> bool {
    let code = hit.text.trim();
    extra.iter().any(|file| {
        let path = file.path.replace('\\', "/");
        let same_file = path == hit.path || path.ends_with(&format!("/{}", hit.path));
        same_file && !code.is_empty() && file.text.contains(code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::augment::tests::{block_on, Words};

    #[test]
    fn code_the_client_sent_is_not_retrieved_again() {
        let hit = graft_index::SearchHit {
            project: None,
            path: "src/vault.rs".into(),
            start_line: 1,
            end_line: 2,
            score: 1.0,
            symbol: "rotate".into(),
            language: "rust".into(),
            text: "fn rotate() {}\n".into(),
            found_by: Default::default(),
        };
        let sent = |path: &str, text: &str| {
            vec![ContextFile {
                path: path.into(),
                text: text.into(),
            }]
        };
        assert!(already_sent(&sent("src/vault.rs", "// keys\nfn rotate() {}\n"), &hit));
        assert!(already_sent(&sent("/home/me/repo/src/vault.rs", "fn rotate() {}"), &hit));
        assert!(
            !already_sent(&sent("src/vault.rs", "fn other() {}"), &hit),
            "another part of the file"
        );
        assert!(
            !already_sent(&sent("src/app.rs", "fn rotate() {}"), &hit),
            "the same text in another file"
        );
    }

    fn file(path: &str, words: usize) -> ContextFile {
        ContextFile {
            path: path.into(),
            text: vec!["w"; words].join(" "),
        }
    }

    fn lines(name: &str, n: usize) -> String {
        (0..n).map(|i| format!("{name}{i} x\n")).collect()
    }

    #[test]
    fn a_long_current_file_keeps_the_lines_nearest_the_cursor() {
        // Each line is two words; Qwen's FIM markers add one (the others stick to a line).
        let mut input = FimInput {
            prefix: lines("p", 100),
            suffix: Some(lines("s", 100)),
            ..FimInput::default()
        };
        let cut = block_on(trim_to_fit(&Words, PromptFormat::QwenCoder, &mut input, 80)).expect("trim");
        assert!(cut);
        // The suffix keeps its first 10 lines (20 words: a quarter of 80).
        assert_eq!(input.suffix.as_deref(), Some(lines("s", 10).as_str()));
        // The prefix keeps its last lines: 80 words - 20 - 1 leave room for 29 lines.
        let kept: Vec<&str> = input.prefix.lines().collect();
        assert_eq!(
            (kept.first().copied(), kept.last().copied()),
            (Some("p71 x"), Some("p99 x")),
            "{kept:?}"
        );
        let rendered = PromptFormat::QwenCoder.render(&input);
        assert!(block_on(Words.count(&rendered)).expect("count") <= 80, "{rendered}");

        // A file that fits is left alone.
        let mut small = FimInput {
            prefix: lines("p", 3),
            suffix: Some(lines("s", 3)),
            ..FimInput::default()
        };
        let before = small.clone();
        assert!(!block_on(trim_to_fit(&Words, PromptFormat::QwenCoder, &mut small, 80)).expect("trim"));
        assert_eq!(small, before);
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
