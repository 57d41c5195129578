//! Tabby's API, so that Tabby's editor plugins (VS Code, JetBrains, Vim, Emacs: its
//! `tabby-agent`) complete code against graft unchanged: set the plugin's server endpoint to
//! `http://HOST:PORT` and its token to a graft key.
//!
//! - `POST /v1/completions` with Tabby's body (`segments`, no `prompt`; the route hands it
//!   here, [`is_tabby`]): `segments.prefix` and `suffix` around the cursor, `filepath`, and the
//!   code the plugin gathered (`declarations` from the language server, snippets of recently
//!   changed and opened files) become an `/infill` request, on the project whose repository
//!   `git_url` names (its `remote_urls`), else on `server.default_model`: the gathered code
//!   goes first in the prompt as `input_extra` (the most relevant last, where it is kept
//!   first), then retrieved code, then the file. Answered as Tabby answers: `id`,
//!   `choices[{index, text}]` (and in `debug_data`, the `prompt` when
//!   `debug_options.return_prompt`, the retrieved `snippets` when `return_snippets`; graft's
//!   `sources` always). A file written with CRLF line ends is read with LF and answered with
//!   CRLF, as Tabby does.
//! - `POST /v1/events`: the plugin's reports of a completion shown (`view`), accepted
//!   (`select`) or dismissed (`dismiss`), counted in `/metrics`
//!   (`graft_completion_events_total`): the acceptance rate of graft's completions.
//!
//! Tabby's `/v1/health` fields are in `GET /health`'s answer (`routes::system`).
//! `mode: "next_edit_suggestion"` and `debug_options.raw_prompt` are refused by name;
//! `clipboard` and the plugin's snippets' `score` are not read.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::json::Json;
use crate::openai::RetrievalField;
use crate::routes::llama_cpp::infill::{self, ExtraFile, InfillRequest};
use crate::routes::llama_cpp::Fields;
use crate::state::AppState;

/// Whether a `/v1/completions` body is Tabby's: `segments` and no `prompt`.
pub fn is_tabby(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Shape {
        segments: Option<serde::de::IgnoredAny>,
        prompt: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Shape>(body).is_ok_and(|s| s.segments.is_some() && s.prompt.is_none())
}

/// Tabby's completion request.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub segments: Segments,
    pub temperature: Option<f64>,
    pub seed: Option<i64>,
    /// `standard` (Tabby's default); `next_edit_suggestion` is not offered.
    pub mode: Option<String>,
    pub debug_options: Option<DebugOptions>,
    /// graft's extension, as on `/infill`: a project, an adapter or the base (absent:
    /// `server.default_model`).
    pub model: Option<String>,
}

/// The text around the cursor and what the plugin gathered.
#[derive(Debug, Deserialize)]
pub struct Segments {
    pub prefix: String,
    pub suffix: Option<String>,
    /// The file's path in its repository (or workspace): left out of retrieval.
    pub filepath: Option<String>,
    /// The repository's remote URL: a request that names no `model` goes to the project on it
    /// ([`model_for`]).
    pub git_url: Option<String>,
    /// Declarations of the symbols in the prefix, from the editor's language server.
    pub declarations: Option<Vec<Snippet>>,
    /// Snippets of recently changed files, the most relevant first.
    pub relevant_snippets_from_changed_files: Option<Vec<Snippet>>,
    /// Snippets of recently opened files, the most relevant first.
    pub relevant_snippets_from_recently_opened_files: Option<Vec<Snippet>>,
}

/// A piece of code the plugin sends (its `score` is not read: the order is enough).
#[derive(Debug, Deserialize)]
pub struct Snippet {
    #[serde(default)]
    pub filepath: String,
    pub body: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct DebugOptions {
    pub raw_prompt: Option<String>,
    #[serde(default)]
    pub return_prompt: bool,
    /// Answer the retrieved code in `debug_data.snippets` (`filepath`, `body`, `score`).
    #[serde(default)]
    pub return_snippets: bool,
    #[serde(default)]
    pub disable_retrieval_augmented_code_completion: bool,
}

/// `POST /v1/completions` with Tabby's body.
pub async fn complete(state: &AppState, caller: &Caller, request: CompletionRequest) -> Result<Value, ApiError> {
    if request.mode.as_deref().is_some_and(|m| m != "standard") {
        return Err(ApiError::unsupported(
            "mode",
            "Only Tabby's `standard` completion mode is offered (not next edit suggestions)",
        ));
    }
    let debug = request.debug_options.unwrap_or_default();
    if debug.raw_prompt.is_some() {
        return Err(ApiError::unsupported(
            "debug_options.raw_prompt",
            "debug_options.raw_prompt is not supported: POST /completion reads a prompt raw",
        ));
    }
    let segments = request.segments;
    let suffix = segments.suffix.unwrap_or_default();
    if segments.prefix.is_empty() && suffix.is_empty() {
        return Err(ApiError::invalid_param(
            "segments.prefix",
            "`segments.prefix` and `segments.suffix` are both empty",
        ));
    }
    let crlf = segments.prefix.contains("\r\n") || suffix.contains("\r\n");
    let lf = |text: String| if crlf { text.replace("\r\n", "\n") } else { text };
    let model = request.model.or_else(|| model_for(state, caller, segments.git_url.as_deref()?));
    let infill = InfillRequest {
        model,
        input_prefix: lf(segments.prefix),
        input_suffix: lf(suffix),
        input_extra: gathered(
            segments.declarations,
            segments.relevant_snippets_from_changed_files,
            segments.relevant_snippets_from_recently_opened_files,
        ),
        prompt: String::new(),
        fields: Fields {
            temperature: request.temperature,
            seed: request.seed,
            ..Fields::default()
        },
        retrieval: debug
            .disable_retrieval_augmented_code_completion
            .then_some(RetrievalField::Switch(false)),
        path: segments.filepath,
    };
    let infill::Infilled { answer, sources } = infill::run(state, caller, infill).await?;
    let mut text = answer["content"].as_str().unwrap_or_default().to_owned();
    if crlf {
        text = text.replace('\n', "\r\n");
    }
    let mut out = json!({
        "id": format!("cmpl-{}", uuid::Uuid::new_v4()),
        "model": answer["model"].clone(),
        "choices": [{"index": 0, "text": text}],
    });
    // A project's retrieved files, as on graft's other routes.
    if !answer["sources"].is_null() {
        out["sources"] = answer["sources"].clone();
    }
    if debug.return_prompt {
        out["debug_data"]["prompt"] = answer["prompt"].clone();
    }
    if debug.return_snippets {
        let snippets: Vec<Value> = sources
            .iter()
            .map(|s| json!({"filepath": s.shown_path(), "body": s.text, "score": s.score}))
            .collect();
        out["debug_data"]["snippets"] = snippets.into();
    }
    Ok(out)
}

/// The project a request from the repository at `git_url` goes to: of the projects on it that
/// `caller` may use, `server.default_model` when it is one of them, else the first by name.
/// None (the default model serves the request) when there is none.
fn model_for(state: &AppState, caller: &Caller, git_url: &str) -> Option<String> {
    let on_remote = state.projects().on_remote(git_url);
    let usable: Vec<&str> = on_remote
        .iter()
        .map(|p| p.name())
        .filter(|name| state.may_use(caller, name))
        .collect();
    let default = state.default_model();
    let chosen = usable.iter().find(|name| **name == &*default).or(usable.first())?;
    Some((*chosen).to_owned())
}

/// The plugin's code as `/infill`'s extra files, the most relevant last (the last are kept
/// when they do not all fit, and lie nearest the cursor): recently opened files' snippets,
/// then recently changed files', each least relevant first, then the declarations.
fn gathered(declarations: Option<Vec<Snippet>>, changed: Option<Vec<Snippet>>, opened: Option<Vec<Snippet>>) -> Vec<ExtraFile> {
    let ranked = |snippets: Option<Vec<Snippet>>| snippets.unwrap_or_default().into_iter().rev();
    ranked(opened)
        .chain(ranked(changed))
        .chain(declarations.unwrap_or_default())
        .map(|s| ExtraFile {
            filename: s.filepath,
            text: s.body,
        })
        .collect()
}

/// One of the plugin's reports.
#[derive(Debug, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: String,
}

/// `POST /v1/events`: a completion shown, accepted or dismissed, counted.
pub async fn event(State(state): State<AppState>, Json(event): Json<Event>) -> Result<StatusCode, ApiError> {
    let kind = match event.kind.as_str() {
        "view" => "view",
        "select" => "select",
        "dismiss" => "dismiss",
        other => {
            return Err(ApiError::invalid_param(
                "type",
                format!("Unknown event type `{other}`: `view`, `select` or `dismiss`"),
            ))
        }
    };
    state.metrics().completion_event(kind);
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabby_bodies_are_told_from_openai_ones() {
        assert!(is_tabby(br#"{"language": "rust", "segments": {"prefix": "fn "}}"#));
        assert!(!is_tabby(br#"{"model": "m", "prompt": "fn ", "segments": {}}"#));
        assert!(!is_tabby(br#"{"model": "m", "prompt": "fn "}"#));
        assert!(!is_tabby(b"{not json"));
    }

    #[test]
    fn the_most_relevant_code_goes_last() {
        let snippet = |name: &str| Snippet {
            filepath: name.into(),
            body: name.into(),
        };
        let files = gathered(
            Some(vec![snippet("decl1"), snippet("decl2")]),
            Some(vec![snippet("changed-best"), snippet("changed-next")]),
            Some(vec![snippet("opened-best"), snippet("opened-next")]),
        );
        let names: Vec<&str> = files.iter().map(|f| f.filename.as_str()).collect();
        assert_eq!(
            names,
            ["opened-next", "opened-best", "changed-next", "changed-best", "decl1", "decl2"]
        );
    }
}
