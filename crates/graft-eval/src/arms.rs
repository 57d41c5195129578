//! The arms an evaluation compares, and the request each arm makes for a task.
//!
//! Every completion task goes through the path an editor plugin takes: llama.cpp's `/infill`
//! on graft (the current file cut to the lines nearest the cursor when it is too long,
//! retrieved code before it), greedy, one line for line-shaped tasks; a question goes through
//! `/v1/chat/completions` as a chat client asks it. The arms differ only in what graft adds:
//! `base` asks the model alone, `rag` with the project's retrieval, `adapter` and
//! `adapter+rag` the same on the project's adapter. Other servers are asked through
//! `/infill` (llama.cpp's server), OpenAI's `/v1/completions` ([`completions_request`]) or
//! Tabby's completion API ([`tabby_request`]: `base` with Tabby's retrieval off, `rag` with
//! it on, the controls' context as the plugin's `declarations`).

use serde_json::{json, Value};

use crate::build::{first_lines, last_lines};
use crate::controls::Context;
use crate::golden::{Task, TaskKind};

/// What an arm adds to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arm {
    /// The model alone.
    Base,
    /// The model with code retrieved from the repository (held-out files excluded).
    Rag,
    /// The model on the adapter being evaluated.
    Adapter,
    /// The adapter with retrieval.
    AdapterRag,
    /// Control: the definition of the symbol an api task uses, given by hand (the ceiling
    /// of retrieval).
    Oracle,
    /// Control: random code of about the same size (the floor).
    Random,
}

const ALL: [Arm; 6] = [Arm::Base, Arm::Rag, Arm::Adapter, Arm::AdapterRag, Arm::Oracle, Arm::Random];

impl Arm {
    pub fn name(self) -> &'static str {
        match self {
            Arm::Base => "base",
            Arm::Rag => "rag",
            Arm::Adapter => "adapter",
            Arm::AdapterRag => "adapter+rag",
            Arm::Oracle => "oracle",
            Arm::Random => "random",
        }
    }

    /// Whether the server retrieves code for this arm's requests.
    pub fn retrieves(self) -> bool {
        matches!(self, Arm::Rag | Arm::AdapterRag)
    }

    /// Whether this arm runs on the adapter.
    pub fn on_adapter(self) -> bool {
        matches!(self, Arm::Adapter | Arm::AdapterRag)
    }

    /// Whether this arm is a control (context placed by the evaluation, not by the server).
    pub fn is_control(self) -> bool {
        matches!(self, Arm::Oracle | Arm::Random)
    }

    /// `base,rag` → the arms, in that order.
    pub fn parse_list(text: &str) -> Result<Vec<Arm>, String> {
        let mut arms = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let Some(arm) = ALL.into_iter().find(|a| a.name() == name) else {
                let names: Vec<&str> = ALL.iter().map(|a| a.name()).collect();
                return Err(format!("unknown arm `{name}`: the arms are {}", names.join(", ")));
            };
            if !arms.contains(&arm) {
                arms.push(arm);
            }
        }
        if arms.is_empty() {
            return Err("no arm named: use base, rag or base,rag".into());
        }
        Ok(arms)
    }
}

/// How much of a task is sent.
#[derive(Debug, Clone, Copy)]
pub struct RequestOptions {
    /// Lines of the current file before the cursor.
    pub context_lines: usize,
    /// Lines after it, for fill-in-the-middle spans.
    pub suffix_lines: usize,
    /// Most tokens of a question's answer.
    pub answer_tokens: usize,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            context_lines: 40,
            suffix_lines: 10,
            answer_tokens: 256,
        }
    }
}

/// Whether a task's answer is one line (scored on its first line, generation stopped at the
/// end of the line).
pub fn one_line(task: &Task) -> bool {
    task.kind != TaskKind::Question && task.span.as_deref() != Some("block")
}

/// The code before and after the cursor that a completion task sends (line tasks see the
/// code before the cursor only, as in RepoEval and CrossCodeEval; spans inside a line or a
/// block see what follows too).
fn cut(task: &Task, options: RequestOptions) -> (&str, &str) {
    let prefix = last_lines(task.prefix.as_deref().unwrap_or_default(), options.context_lines);
    let fim = matches!(task.span.as_deref(), Some("middle_of_line" | "block"));
    let suffix = if fim {
        first_lines(task.suffix.as_deref().unwrap_or_default(), options.suffix_lines)
    } else {
        ""
    };
    (prefix, suffix)
}

fn max_tokens(task: &Task) -> usize {
    if one_line(task) {
        48
    } else {
        160
    }
}

/// The `/infill` body for `task` (a completion task) in `arm`, on `model`; `extra` is the
/// control's context (oracle, random), sent as the plugin's extra files.
pub fn infill_request(task: &Task, arm: Arm, model: &str, options: RequestOptions, extra: Option<&Context>) -> Value {
    let (prefix, suffix) = cut(task, options);
    let mut body = json!({
        "model": model,
        "input_prefix": prefix,
        "input_suffix": suffix,
        "n_predict": max_tokens(task),
        "temperature": 0,
        // Each task searches afresh: graft reuses the last hits near the same place in a
        // file while a user types, but tasks are not a typing session.
        "retrieval": {"enabled": arm.retrieves(), "sticky": false},
        // graft's extension: the file being completed (retrieval leaves it out and looks
        // definitions up nearest it); other servers ignore it.
        "path": task.path,
    });
    if let Some(extra) = extra {
        body["input_extra"] = json!([{"filename": extra.path, "text": extra.text}]);
    }
    if one_line(task) {
        body["stop"] = json!(["\n"]);
    }
    body
}

/// Tabby's `/v1/completions` body for `task` in `arm`, as its editor plugins send it: the code
/// around the cursor as `segments`, the control's context (`extra`) as a declaration, Tabby's
/// retrieval on for the arms that retrieve, and the prompt and retrieved snippets asked back
/// (`debug_options`). `model` is graft's extension (Tabby's servers ignore it); empty, it is
/// left out. Tabby's server decides the answer's length; the scores of a one-line task read
/// its first line.
pub fn tabby_request(task: &Task, arm: Arm, model: &str, options: RequestOptions, extra: Option<&Context>) -> Value {
    let (prefix, suffix) = cut(task, options);
    let mut body = json!({
        "language": language_id(task.path.as_deref().unwrap_or_default()),
        "segments": {"prefix": prefix, "suffix": suffix, "filepath": task.path},
        "temperature": 0,
        "debug_options": {
            "disable_retrieval_augmented_code_completion": !arm.retrieves(),
            "return_snippets": true,
            "return_prompt": true,
        },
    });
    if !model.is_empty() {
        body["model"] = json!(model);
    }
    if let Some(extra) = extra {
        body["segments"]["declarations"] = json!([{"filepath": extra.path, "body": extra.text}]);
    }
    body
}

/// The editor's language id of a file (VS Code's, which Tabby reads), from its extension;
/// `unknown` for others.
fn language_id(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map_or("", |(_, e)| e);
    match extension {
        "rs" => "rust",
        "py" | "pyi" => "python",
        "js" | "mjs" | "cjs" => "javascript",
        "jsx" => "javascriptreact",
        "ts" | "mts" | "cts" => "typescript",
        "tsx" => "typescriptreact",
        "go" => "go",
        "java" => "java",
        "kt" | "kts" => "kotlin",
        "scala" => "scala",
        "c" | "h" => "c",
        "cc" | "cpp" | "cxx" | "hpp" | "hh" => "cpp",
        "cs" => "csharp",
        "rb" => "ruby",
        "php" => "php",
        "swift" => "swift",
        "lua" => "lua",
        "sh" | "bash" => "shellscript",
        _ => "unknown",
    }
}

/// The OpenAI `/v1/completions` body for `task` on another server: the code before the
/// cursor as the prompt, the code after it as `suffix` for fill-in-the-middle spans (servers
/// that support it, such as Ollama, put it in the model's FIM layout).
pub fn completions_request(task: &Task, model: &str, options: RequestOptions) -> Value {
    let (prefix, suffix) = cut(task, options);
    let mut body = json!({
        "model": model,
        "prompt": prefix,
        "max_tokens": max_tokens(task),
        "temperature": 0,
    });
    if !suffix.is_empty() {
        body["suffix"] = json!(suffix);
    }
    if one_line(task) {
        body["stop"] = json!(["\n"]);
    }
    body
}

/// The `/v1/chat/completions` body for a question task on `model`; `retrieval` is graft's
/// extension field (left out for other servers).
pub fn chat_request(task: &Task, model: &str, retrieval: Option<bool>, options: RequestOptions) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": task.question.as_deref().unwrap_or_default()}],
        "max_tokens": options.answer_tokens,
        "temperature": 0,
    });
    if let Some(retrieval) = retrieval {
        body["retrieval"] = json!(retrieval);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(span: Option<&str>) -> Task {
        let kind = if span.is_some() { TaskKind::Span } else { TaskKind::Line };
        let mut task = Task::completion(
            kind,
            "a.rs",
            "l1
l2
l3
    ",
            "x",
            "
after1
after2
",
        );
        task.span = span.map(str::to_owned);
        task
    }

    #[test]
    fn a_line_task_sends_the_lines_before_the_cursor_and_stops_at_the_line_end() {
        let options = RequestOptions {
            context_lines: 2,
            suffix_lines: 1,
            answer_tokens: 64,
        };
        let body = infill_request(&task(None), Arm::Rag, "proj", options, None);
        assert_eq!(body["input_prefix"], "l3\n    ", "the cursor's line and one more");
        assert_eq!(body["input_suffix"], "");
        assert_eq!(body["stop"], json!(["\n"]));
        assert_eq!(body["retrieval"], json!({"enabled": true, "sticky": false}));
        assert_eq!(body["model"], "proj");
        let extra = Context {
            path: "b.rs".into(),
            text: "fn b() {}".into(),
        };
        let block = infill_request(&task(Some("block")), Arm::Oracle, "proj", options, Some(&extra));
        assert_eq!(block["input_extra"], json!([{"filename": "b.rs", "text": "fn b() {}"}]));
        assert_eq!(block["input_suffix"], "\n");
        assert!(block.get("stop").is_none());
        assert_eq!(block["retrieval"]["enabled"], false);
        let other = completions_request(&task(Some("block")), "m", options);
        assert_eq!((other["prompt"].as_str(), other["suffix"].as_str()), (Some("l3\n    "), Some("\n")));
        assert!(other.get("retrieval").is_none() && other.get("stop").is_none());
        assert_eq!(completions_request(&task(None), "m", options)["stop"], json!(["\n"]));
        assert_eq!(Arm::parse_list("base, rag,base").unwrap(), [Arm::Base, Arm::Rag]);
        assert_eq!(Arm::parse_list("adapter+rag,adapter").unwrap(), [Arm::AdapterRag, Arm::Adapter]);
        assert!(Arm::parse_list("ceiling").unwrap_err().contains("adapter+rag"));
    }

    #[test]
    fn a_tabby_request_carries_the_code_as_its_plugins_send_it() {
        let options = RequestOptions {
            context_lines: 2,
            suffix_lines: 1,
            answer_tokens: 64,
        };
        let body = tabby_request(&task(None), Arm::Base, "", options, None);
        assert_eq!(body["segments"], json!({"prefix": "l3\n    ", "suffix": "", "filepath": "a.rs"}));
        assert_eq!(body["language"], "rust");
        assert_eq!(body["debug_options"]["disable_retrieval_augmented_code_completion"], true);
        assert!(body.get("model").is_none(), "no model named: none sent");
        let extra = Context {
            path: "b.rs".into(),
            text: "fn b() {}".into(),
        };
        let oracle = tabby_request(&task(Some("block")), Arm::Oracle, "proj", options, Some(&extra));
        assert_eq!(
            oracle["segments"]["declarations"],
            json!([{"filepath": "b.rs", "body": "fn b() {}"}])
        );
        assert_eq!(oracle["segments"]["suffix"], "\n");
        assert_eq!(oracle["model"], "proj");
        let rag = tabby_request(&task(None), Arm::Rag, "", options, None);
        assert_eq!(rag["debug_options"]["disable_retrieval_augmented_code_completion"], false);
        assert_eq!(language_id("src/App.tsx"), "typescriptreact");
        assert_eq!(language_id("Makefile"), "unknown");
    }
}
