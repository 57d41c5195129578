//! The arms an evaluation compares, and the request each arm makes for a task.
//!
//! Every task goes through the path an editor plugin takes: llama.cpp's `/infill` on graft
//! (the current file cut to the lines nearest the cursor when it is too long, retrieved code
//! before it), greedy, one line for line-shaped tasks. The arms differ only in what graft
//! adds: `base` asks without retrieval, `rag` with the project's retrieval.

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
    /// Control: the definition of the symbol an api task uses, given by hand (the ceiling
    /// of retrieval).
    Oracle,
    /// Control: random code of about the same size (the floor).
    Random,
}

impl Arm {
    pub fn name(self) -> &'static str {
        match self {
            Arm::Base => "base",
            Arm::Rag => "rag",
            Arm::Oracle => "oracle",
            Arm::Random => "random",
        }
    }

    /// `base,rag` → the arms, in that order.
    pub fn parse_list(text: &str) -> Result<Vec<Arm>, String> {
        let mut arms = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let arm = match name {
                "base" => Arm::Base,
                "rag" => Arm::Rag,
                "oracle" => Arm::Oracle,
                "random" => Arm::Random,
                other => return Err(format!("unknown arm `{other}`: the arms are base, rag, oracle and random")),
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
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            context_lines: 40,
            suffix_lines: 10,
        }
    }
}

/// Whether a task's answer is one line (scored on its first line, generation stopped at the
/// end of the line).
pub fn one_line(task: &Task) -> bool {
    task.kind != TaskKind::Question && task.span.as_deref() != Some("block")
}

/// The `/infill` body for `task` (a completion task) in `arm`, on `model`; `extra` is the
/// control's context (oracle, random), sent as the plugin's extra files.
pub fn infill_request(task: &Task, arm: Arm, model: &str, options: RequestOptions, extra: Option<&Context>) -> Value {
    let prefix = last_lines(task.prefix.as_deref().unwrap_or_default(), options.context_lines);
    // Line tasks see the code before the cursor only (RepoEval, CrossCodeEval); spans inside
    // a line or a block see what follows too.
    let fim = matches!(task.span.as_deref(), Some("middle_of_line" | "block"));
    let suffix = if fim {
        first_lines(task.suffix.as_deref().unwrap_or_default(), options.suffix_lines)
    } else {
        ""
    };
    let mut body = json!({
        "model": model,
        "input_prefix": prefix,
        "input_suffix": suffix,
        "n_predict": if one_line(task) { 48 } else { 160 },
        "temperature": 0,
        "retrieval": arm == Arm::Rag,
    });
    if let Some(extra) = extra {
        body["input_extra"] = json!([{"filename": extra.path, "text": extra.text}]);
    }
    if one_line(task) {
        body["stop"] = json!(["\n"]);
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
        };
        let body = infill_request(&task(None), Arm::Rag, "proj", options, None);
        assert_eq!(body["input_prefix"], "l3\n    ", "the cursor's line and one more");
        assert_eq!(body["input_suffix"], "");
        assert_eq!(body["stop"], json!(["\n"]));
        assert_eq!((body["retrieval"].as_bool(), body["model"].as_str()), (Some(true), Some("proj")));
        let extra = Context {
            path: "b.rs".into(),
            text: "fn b() {}".into(),
        };
        let block = infill_request(&task(Some("block")), Arm::Oracle, "proj", options, Some(&extra));
        assert_eq!(block["input_extra"], json!([{"filename": "b.rs", "text": "fn b() {}"}]));
        assert_eq!(block["input_suffix"], "\n");
        assert!(block.get("stop").is_none());
        assert_eq!(block["retrieval"], false);
        assert_eq!(Arm::parse_list("base, rag,base").unwrap(), [Arm::Base, Arm::Rag]);
        assert!(Arm::parse_list("ceiling").is_err());
    }
}
