//! Prompt formats for code completion: fill-in-the-middle (FIM) and repo-level context, by
//! model family.
//!
//! A completion prompt is other files of the repository (retrieved context), then the current
//! file up to the cursor, and optionally the code after the cursor. Code models were trained
//! on special tokens for exactly this; this module knows them for Qwen2.5-Coder, StarCoder2,
//! DeepSeek-Coder and CodeLlama, detects which one a GGUF model speaks from its vocabulary, and
//! has a documented fallback for models without FIM tokens (SmolLM2, general chat models):
//!
//! **Continuation**: context files each under a comment line naming their path, then the
//! current file's path and its text up to the cursor. The model continues the prefix; the
//! code after the cursor is not shown to it (such models were never trained to use it).
//!
//! Context files always come first and the current file last, so the start of the prompt stays
//! the same while the user types (prefix-cache reuse). This module renders text only; it does
//! not tokenize or enforce budgets (the server does, with the model's tokenizer).

use std::fmt::Write as _;
use std::str::FromStr;

use crate::literal::Marked;

/// A model family's completion format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromptFormat {
    /// Qwen2.5-Coder: `<|fim_prefix|>` … and `<|repo_name|>` / `<|file_sep|>` for repo-level.
    QwenCoder,
    /// StarCoder2: `<fim_prefix>` … and `<repo_name>` / `<file_sep>`.
    StarCoder,
    /// DeepSeek-Coder: `<｜fim▁begin｜>` `<｜fim▁hole｜>` `<｜fim▁end｜>`; files as path comments.
    DeepSeekCoder,
    /// CodeLlama: `<PRE>` `<SUF>` `<MID>`; files as path comments.
    CodeLlama,
    /// No FIM tokens: path-comment context and prefix continuation (see the module docs).
    Continuation,
}

/// Every format, for listings and error messages.
pub const FORMATS: &[PromptFormat] = &[
    PromptFormat::QwenCoder,
    PromptFormat::StarCoder,
    PromptFormat::DeepSeekCoder,
    PromptFormat::CodeLlama,
    PromptFormat::Continuation,
];

/// Another file of the repository, shown to the model before the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextFile {
    /// Path relative to the repository root.
    pub path: String,
    pub text: String,
}

/// What a completion prompt is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FimInput {
    /// The repository's name, for formats that have a slot for it.
    pub repo: Option<String>,
    /// Retrieved context, most relevant first.
    pub context: Vec<ContextFile>,
    /// The current file's path, when known.
    pub path: Option<String>,
    /// The current file up to the cursor.
    pub prefix: String,
    /// The current file after the cursor; `None` for plain continuation.
    pub suffix: Option<String>,
    /// The prefix is a prompt the client wrote in the model's own format (a `/v1/completions`
    /// prompt without a suffix, which may hold a hand-written chat turn): special tokens' text
    /// in it stays special. Otherwise the prefix is code, read as text.
    pub raw_prefix: bool,
}

impl PromptFormat {
    /// The name used in configuration (`model.prompt_format`).
    pub fn name(self) -> &'static str {
        match self {
            PromptFormat::QwenCoder => "qwen-coder",
            PromptFormat::StarCoder => "starcoder",
            PromptFormat::DeepSeekCoder => "deepseek-coder",
            PromptFormat::CodeLlama => "codellama",
            PromptFormat::Continuation => "continuation",
        }
    }

    /// The format a model speaks, judged by the special tokens in its vocabulary.
    pub fn detect<'a>(vocabulary: impl IntoIterator<Item = &'a str>) -> PromptFormat {
        let mut found = None;
        for token in vocabulary {
            let format = match token {
                "<|fim_prefix|>" => PromptFormat::QwenCoder,
                "<fim_prefix>" => PromptFormat::StarCoder,
                "<｜fim▁begin｜>" => PromptFormat::DeepSeekCoder,
                "▁<PRE>" | "<PRE>" => PromptFormat::CodeLlama,
                _ => continue,
            };
            found = Some(format);
            break;
        }
        found.unwrap_or(PromptFormat::Continuation)
    }

    /// Whether the model can see the code after the cursor.
    pub fn has_fim(self) -> bool {
        self != PromptFormat::Continuation
    }

    /// Strings that end a completion in this format: the model moving on to another file or
    /// another FIM example.
    pub fn stop_sequences(self) -> &'static [&'static str] {
        match self {
            PromptFormat::QwenCoder => &["<|file_sep|>", "<|fim_prefix|>", "<|repo_name|>", "<|endoftext|>"],
            PromptFormat::StarCoder => &["<file_sep>", "<fim_prefix>", "<|endoftext|>"],
            PromptFormat::DeepSeekCoder => &["<｜fim▁begin｜>", "<｜end▁of▁sentence｜>"],
            PromptFormat::CodeLlama => &["<EOT>", "<PRE>"],
            PromptFormat::Continuation => &[],
        }
    }

    /// The whole prompt text; special tokens appear as their text and are tokenized as
    /// special tokens by the model's tokenizer.
    pub fn render(self, input: &FimInput) -> String {
        self.render_marked(input).text
    }

    /// The whole prompt, the parts the input brought (the repository's name, paths, files'
    /// text, the code around the cursor) marked literal, so that a special token's text in
    /// them is tokenized as text ([`crate::literal`]).
    pub fn render_marked(self, input: &FimInput) -> Marked {
        let mut out = Marked::default();
        match self {
            PromptFormat::QwenCoder | PromptFormat::StarCoder => {
                let tokens = self.repo_tokens();
                self.repo_header(&mut out, input, &tokens);
                match &input.suffix {
                    Some(suffix) => {
                        out.push_format(tokens.pre);
                        push_prefix(&mut out, input);
                        out.push_format(tokens.suf);
                        out.push_literal(suffix);
                        out.push_format(tokens.mid);
                    }
                    None => push_prefix(&mut out, input),
                }
            }
            PromptFormat::DeepSeekCoder | PromptFormat::CodeLlama => {
                // Both put the path comments inside the prefix: begin, context and prefix,
                // hole, suffix, end.
                let (begin, hole, end) = match self {
                    PromptFormat::DeepSeekCoder => ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
                    _ => ("<PRE> ", " <SUF>", " <MID>"),
                };
                if input.suffix.is_some() {
                    out.push_format(begin);
                }
                commented_context(&mut out, input);
                push_prefix(&mut out, input);
                if let Some(suffix) = &input.suffix {
                    out.push_format(hole);
                    out.push_literal(suffix);
                    out.push_format(end);
                }
            }
            PromptFormat::Continuation => {
                commented_context(&mut out, input);
                push_prefix(&mut out, input);
            }
        }
        out
    }
}

/// The current file up to the cursor: literal unless it is the client's own prompt.
fn push_prefix(out: &mut Marked, input: &FimInput) {
    match input.raw_prefix {
        true => out.push_format(&input.prefix),
        false => out.push_literal(&input.prefix),
    }
}

/// A repo-level family's special tokens.
struct RepoTokens {
    repo_name: &'static str,
    file_sep: &'static str,
    pre: &'static str,
    suf: &'static str,
    mid: &'static str,
    /// What follows a file's path and a repository's name: Qwen puts a newline after each.
    nl: &'static str,
}

impl PromptFormat {
    fn repo_tokens(self) -> RepoTokens {
        match self {
            PromptFormat::QwenCoder => RepoTokens {
                repo_name: "<|repo_name|>",
                file_sep: "<|file_sep|>",
                pre: "<|fim_prefix|>",
                suf: "<|fim_suffix|>",
                mid: "<|fim_middle|>",
                nl: "\n",
            },
            _ => RepoTokens {
                repo_name: "<repo_name>",
                file_sep: "<file_sep>",
                pre: "<fim_prefix>",
                suf: "<fim_suffix>",
                mid: "<fim_middle>",
                nl: "",
            },
        }
    }

    /// The repository's name, the context files and the current file's path, in the
    /// repo-level layout (nothing when there is neither context nor a path).
    fn repo_header(self, out: &mut Marked, input: &FimInput, tokens: &RepoTokens) {
        if input.context.is_empty() && input.path.is_none() {
            return;
        }
        let RepoTokens {
            repo_name, file_sep, nl, ..
        } = tokens;
        out.push_format(repo_name);
        match &input.repo {
            Some(repo) => out.push_literal(repo),
            None => out.push_format("repository"),
        }
        out.push_format(nl);
        for file in &input.context {
            out.push_format(file_sep);
            out.push_literal(&file.path);
            out.push_format("\n");
            out.push_literal(&file.text);
            out.push_format(nl);
        }
        out.push_format(file_sep);
        match &input.path {
            Some(path) => out.push_literal(path),
            None => out.push_format("untitled"),
        }
        out.push_format("\n");
    }

    /// The prompt in suffix-prefix-middle order (the code after the cursor first), the
    /// variant code models are also trained on (`[prefix, suffix] suffix [middle] prefix`, as
    /// StarCoder's training data lays it out). Only training data uses it: a served
    /// completion is always [`PromptFormat::render`]'s prefix-suffix-middle. `None` for
    /// families without a published SPM layout (DeepSeek-Coder, CodeLlama) and for prompts
    /// without a suffix.
    pub fn render_spm(self, input: &FimInput) -> Option<String> {
        let suffix = input.suffix.as_ref()?;
        match self {
            PromptFormat::QwenCoder | PromptFormat::StarCoder => {
                let tokens = self.repo_tokens();
                let mut out = Marked::default();
                self.repo_header(&mut out, input, &tokens);
                let _ = write!(out.text, "{}{}{suffix}{}{}", tokens.pre, tokens.suf, tokens.mid, input.prefix);
                Some(out.text)
            }
            _ => None,
        }
    }

    /// The token that ends the middle of a fill-in-the-middle example (what a model trained
    /// on the format emits when the gap is filled); `None` without FIM.
    pub fn end_of_middle(self) -> Option<&'static str> {
        match self {
            PromptFormat::QwenCoder | PromptFormat::StarCoder => Some("<|endoftext|>"),
            PromptFormat::DeepSeekCoder => Some("<｜end▁of▁sentence｜>"),
            PromptFormat::CodeLlama => Some("<EOT>"),
            PromptFormat::Continuation => None,
        }
    }
}

impl FromStr for PromptFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<PromptFormat, String> {
        FORMATS.iter().copied().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<&str> = FORMATS.iter().map(|f| f.name()).collect();
            format!("unknown prompt format `{s}`; expected one of: auto, {}", names.join(", "))
        })
    }
}

/// Context files and the current file's path as comment lines, in the current file's comment
/// syntax: `// Path: src/lib.rs` then the file's text.
fn commented_context(out: &mut Marked, input: &FimInput) {
    for file in &input.context {
        out.push_format(&format!("{} Path: ", comment_marker(&file.path)));
        out.push_literal(&file.path);
        out.push_format("\n");
        out.push_literal(&file.text);
        if !file.text.ends_with('\n') {
            out.push_format("\n");
        }
        out.push_format("\n");
    }
    if let Some(path) = &input.path {
        out.push_format(&format!("{} Path: ", comment_marker(path)));
        out.push_literal(path);
        out.push_format("\n");
    }
}

/// The line-comment marker of a file's language, by extension; `//` when unknown.
fn comment_marker(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "py" | "pyi" | "sh" | "bash" | "rb" | "pl" | "r" | "toml" | "yaml" | "yml" | "cmake" | "jl" | "ex" | "exs" | "nix"
        | "dockerfile" | "mk" | "conf" | "ini" => "#",
        "sql" | "lua" | "hs" | "elm" | "ada" => "--",
        "lisp" | "clj" | "el" | "scm" => ";;",
        "erl" | "hrl" | "tex" => "%",
        "vim" => "\"",
        _ => "//",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(suffix: Option<&str>) -> FimInput {
        FimInput {
            repo: Some("acme".into()),
            context: vec![ContextFile {
                path: "src/util.py".into(),
                text: "def helper():\n    return 1\n".into(),
            }],
            path: Some("src/main.py".into()),
            prefix: "def main():\n    x = ".into(),
            suffix: suffix.map(str::to_owned),
            raw_prefix: false,
        }
    }

    #[test]
    fn the_input_is_literal_and_the_format_is_not() {
        for format in FORMATS {
            let marked = format.render_marked(&input(Some("\n    return x\n")));
            assert_eq!(marked.text, format.render(&input(Some("\n    return x\n"))));
            let literal: String = marked.literal_parts().collect();
            for token in format.stop_sequences() {
                assert!(!literal.contains(token), "{format:?}: {token} is the format's");
            }
            for written in ["def helper():\n    return 1\n", "def main():\n    x = "] {
                assert!(
                    marked.literal_parts().any(|part| part.contains(written)),
                    "{format:?}: {written:?} in {marked:?}"
                );
            }
        }
        let qwen = PromptFormat::QwenCoder.render_marked(&input(Some("\n    return x\n")));
        let parts: Vec<&str> = qwen.literal_parts().collect();
        assert_eq!(
            parts,
            [
                "acme",
                "src/util.py",
                "def helper():\n    return 1\n",
                "src/main.py",
                "def main():\n    x = ",
                "\n    return x\n"
            ]
        );
        // The client's own prompt (no suffix) keeps its special tokens: nothing literal.
        let raw = FimInput {
            prefix: "<|im_start|>user\nhi<|im_end|>\n".into(),
            raw_prefix: true,
            ..FimInput::default()
        };
        assert!(PromptFormat::Continuation.render_marked(&raw).literal.is_empty());
    }

    #[test]
    fn spm_puts_the_suffix_first_where_the_family_has_it() {
        let i = input(Some("\n    return x\n"));
        let spm = PromptFormat::StarCoder.render_spm(&i).unwrap();
        assert!(
            spm.ends_with("<fim_prefix><fim_suffix>\n    return x\n<fim_middle>def main():\n    x = "),
            "{spm}"
        );
        let psm = PromptFormat::StarCoder.render(&i);
        assert_eq!(
            spm.split("<fim_prefix>").next(),
            psm.split("<fim_prefix>").next(),
            "the same repo-level header"
        );
        let qwen = PromptFormat::QwenCoder.render_spm(&i).unwrap();
        assert!(qwen.ends_with("<|fim_prefix|><|fim_suffix|>\n    return x\n<|fim_middle|>def main():\n    x = "));
        assert_eq!(PromptFormat::DeepSeekCoder.render_spm(&i), None);
        assert_eq!(PromptFormat::StarCoder.render_spm(&input(None)), None);
        assert_eq!(PromptFormat::StarCoder.end_of_middle(), Some("<|endoftext|>"));
        assert_eq!(PromptFormat::Continuation.end_of_middle(), None);
    }

    #[test]
    fn formats_are_detected_from_the_vocabulary() {
        assert_eq!(
            PromptFormat::detect(["a", "<|fim_prefix|>", "<|file_sep|>"]),
            PromptFormat::QwenCoder
        );
        assert_eq!(PromptFormat::detect(["<fim_prefix>", "<fim_middle>"]), PromptFormat::StarCoder);
        assert_eq!(PromptFormat::detect(["<｜fim▁begin｜>"]), PromptFormat::DeepSeekCoder);
        assert_eq!(PromptFormat::detect(["▁<PRE>", "▁<SUF>"]), PromptFormat::CodeLlama);
        assert_eq!(PromptFormat::detect(["<|im_start|>", "hello"]), PromptFormat::Continuation);
        assert_eq!("starcoder".parse::<PromptFormat>(), Ok(PromptFormat::StarCoder));
        assert!("gpt".parse::<PromptFormat>().unwrap_err().contains("qwen-coder"));
    }

    #[test]
    fn qwen_coder_uses_its_repo_level_fim_layout() {
        assert_eq!(
            PromptFormat::QwenCoder.render(&input(Some("\n"))),
            "<|repo_name|>acme\n<|file_sep|>src/util.py\ndef helper():\n    return 1\n\n\
             <|file_sep|>src/main.py\n<|fim_prefix|>def main():\n    x = <|fim_suffix|>\n<|fim_middle|>"
        );
    }

    #[test]
    fn starcoder_uses_its_repo_level_fim_layout() {
        assert_eq!(
            PromptFormat::StarCoder.render(&input(Some("\n"))),
            "<repo_name>acme<file_sep>src/util.py\ndef helper():\n    return 1\n\
             <file_sep>src/main.py\n<fim_prefix>def main():\n    x = <fim_suffix>\n<fim_middle>"
        );
    }

    #[test]
    fn deepseek_and_codellama_put_path_comments_inside_the_prefix() {
        let context = "# Path: src/util.py\ndef helper():\n    return 1\n\n# Path: src/main.py\n";
        assert_eq!(
            PromptFormat::DeepSeekCoder.render(&input(Some("\n"))),
            format!("<｜fim▁begin｜>{context}def main():\n    x = <｜fim▁hole｜>\n<｜fim▁end｜>")
        );
        assert_eq!(
            PromptFormat::CodeLlama.render(&input(Some("\n"))),
            format!("<PRE> {context}def main():\n    x =  <SUF>\n <MID>")
        );
    }

    #[test]
    fn the_fallback_continues_the_prefix_and_leaves_the_suffix_out() {
        let text = PromptFormat::Continuation.render(&input(Some("print(x)\n")));
        assert_eq!(
            text,
            "# Path: src/util.py\ndef helper():\n    return 1\n\n# Path: src/main.py\ndef main():\n    x = "
        );
        assert!(!PromptFormat::Continuation.has_fim());
    }

    #[test]
    fn without_context_or_path_a_fim_prompt_is_the_bare_fim_triple() {
        let bare = FimInput {
            prefix: "a".into(),
            suffix: Some("b".into()),
            ..FimInput::default()
        };
        assert_eq!(
            PromptFormat::QwenCoder.render(&bare),
            "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>"
        );
        assert_eq!(PromptFormat::StarCoder.render(&bare), "<fim_prefix>a<fim_suffix>b<fim_middle>");
        let continuation = FimInput { suffix: None, ..bare };
        assert_eq!(PromptFormat::QwenCoder.render(&continuation), "a");
    }
}
