//! Training samples in the served model's own prompt format: files packed in the repo-level
//! layout up to a length in the model's tokens, fill-in-the-middle samples for models with FIM
//! tokens, and instruction pairs.
//!
//! Layouts come from `graft_engine::fim` (the same functions the server's completion prompts
//! use), so an adapter trains on text laid out exactly as it will be asked: other files of the
//! repository first, each under its path, then the current one. Lengths are counted with the
//! model's tokenizer, and every sample is counted again once rendered: none exceeds the limit.
//! This module makes samples; it does not choose files or write them.

use graft_core::random::{stable_hash, Rng};
use graft_engine::fim::{ContextFile, FimInput};
use graft_engine::{EngineError, PromptFormat, Tokenizer};
use rayon::prelude::*;
use serde::Serialize;

use crate::Progress;

/// What a sample was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Whole files, left to right, packed.
    File,
    /// A file with a gap the model fills (fill in the middle).
    Fim,
    /// A commit: message and code before → code after.
    History,
    /// The team's own example.
    Gold,
    /// A file's piece after the code retrieval finds for a cursor in it
    /// ([`crate::retrieved`]).
    Retrieved,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Fim => "fim",
            Kind::History => "history",
            Kind::Gold => "gold",
            Kind::Retrieved => "retrieved",
        }
    }
}

/// Training or validation data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Train,
    Validation,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Validation => "validation",
        }
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A sample's text, in the shape it was made in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Text a model learns to continue throughout.
    Text(String),
    /// A prompt and the completion the model learns to give.
    Completion { prompt: String, completion: String },
    /// A conversation; the assistant's turns are learned.
    Chat(Vec<Message>),
}

/// One training sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub kind: Kind,
    pub part: Part,
    /// The files (or commit) it came from.
    pub sources: Vec<String>,
    pub body: Body,
    /// Its length in the model's tokens (prompt and completion together).
    pub tokens: usize,
}

/// How files become samples.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// The repository's name (the repo-level layout's first line).
    pub repo: String,
    pub format: PromptFormat,
    pub max_tokens: usize,
    /// Share of packed samples turned into FIM samples (only if `format` has FIM tokens).
    pub fim_rate: f64,
    /// Share of FIM samples in suffix-prefix-middle order (where the family has one).
    pub spm_rate: f64,
    /// Share of pieces that also make a retrieval-augmented sample ([`crate::retrieved`]).
    pub retrieval_rate: f64,
    pub seed: u64,
}

/// A file, or a part of one too long for a sample.
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    pub(crate) path: String,
    pub(crate) text: String,
    /// Tokens of the piece rendered alone (an upper bound of its share of a packed sample).
    tokens: usize,
}

/// Tokens kept free of the limit when packing, for the FIM tokens and the end token.
pub(crate) const FIM_RESERVE: usize = 8;

fn input(options: &PackOptions, group: &[Piece], prefix: &str, suffix: Option<&str>) -> FimInput {
    let (last, context) = group.split_last().map_or((None, &[][..]), |(l, c)| (Some(l), c));
    FimInput {
        repo: Some(options.repo.clone()),
        context: context
            .iter()
            .map(|p| ContextFile {
                path: p.path.clone(),
                text: p.text.clone(),
            })
            .collect(),
        path: last.map(|p| p.path.clone()),
        prefix: prefix.to_owned(),
        suffix: suffix.map(str::to_owned),
        raw_prefix: false,
    }
}

/// Text cut at line ends into pieces that each fit `budget` tokens with their header.
pub(crate) fn pieces(
    path: &str,
    text: &str,
    tokenizer: &Tokenizer,
    options: &PackOptions,
    budget: usize,
) -> Result<Vec<Piece>, EngineError> {
    let alone = |text: &str| -> Result<usize, EngineError> {
        let piece = Piece {
            path: path.to_owned(),
            text: String::new(),
            tokens: 0,
        };
        tokenizer.count(&options.format.render(&input(options, &[piece], text, None)))
    };
    let whole = alone(text)?;
    if whole <= budget {
        return Ok(vec![Piece {
            path: path.to_owned(),
            text: text.to_owned(),
            tokens: whole,
        }]);
    }
    let header = alone("")?;
    let mut out = Vec::new();
    let mut current = String::new();
    let mut used = header;
    for line in text.split_inclusive('\n') {
        let n = tokenizer.count(line)?;
        if used + n > budget && !current.is_empty() {
            out.push(std::mem::take(&mut current));
            used = header;
        }
        if header + n > budget {
            // A single line longer than a sample: no place for it (minified code is dropped
            // before this, so this is rare); it is left out rather than cut mid-line.
            continue;
        }
        current.push_str(line);
        used += n;
    }
    if !current.is_empty() {
        out.push(current);
    }
    // Lines counted apart can tokenize longer together; cut again where they do.
    let mut fitted = Vec::new();
    for mut text in out {
        loop {
            let tokens = alone(&text)?;
            if tokens <= budget {
                fitted.push(Piece {
                    path: path.to_owned(),
                    text,
                    tokens,
                });
                break;
            }
            let Some(cut) = text.trim_end_matches('\n').rfind('\n') else {
                break;
            };
            text.truncate(cut + 1);
        }
    }
    Ok(fitted)
}

/// The middle of a FIM sample in `text`, as a byte range: part of a line, the rest of a line,
/// or a block of whole lines.
pub(crate) fn fim_span(text: &str, rng: &mut Rng) -> Option<(usize, usize)> {
    let mut lines = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if !line.trim().is_empty() {
            lines.push((at, line));
        }
        at += line.len();
    }
    if lines.is_empty() {
        return None;
    }
    let pick = rng.below(lines.len());
    let (start, line) = lines[pick];
    let content = line.trim_end_matches(['\n', '\r']);
    let indent = content.len() - content.trim_start().len();
    let boundaries: Vec<usize> = content
        .char_indices()
        .map(|(i, _)| i)
        .chain([content.len()])
        .filter(|&i| i >= indent)
        .collect();
    match rng.below(3) {
        0 if boundaries.len() >= 3 => {
            // Inside a line.
            let a = rng.below(boundaries.len() - 1);
            let b = a + 1 + rng.below(boundaries.len() - 1 - a);
            Some((start + boundaries[a], start + boundaries[b]))
        }
        1 if boundaries.len() >= 2 => {
            // To the end of the line.
            let a = rng.below(boundaries.len() - 1);
            Some((start + boundaries[a], start + content.len()))
        }
        _ => {
            // A block of one to four lines, whole.
            let last = (pick + rng.below(4)).min(lines.len() - 1);
            let (end_start, end_line) = lines[last];
            Some((start, end_start + end_line.len()))
        }
    }
}

/// The FIM sample of a packed group's last piece, or `None` when it has no room or no gap.
fn fim_sample(
    group: &[Piece],
    tokenizer: &Tokenizer,
    options: &PackOptions,
    rng: &mut Rng,
) -> Result<Option<(String, String, usize)>, EngineError> {
    let (Some(last), Some(end)) = (group.last(), options.format.end_of_middle()) else {
        return Ok(None);
    };
    let Some((a, b)) = fim_span(&last.text, rng) else {
        return Ok(None);
    };
    let (prefix, middle, suffix) = (&last.text[..a], &last.text[a..b], &last.text[b..]);
    let fim = input(options, group, prefix, Some(suffix));
    let spm = rng.chance(options.spm_rate);
    let prompt = spm
        .then(|| options.format.render_spm(&fim))
        .flatten()
        .unwrap_or_else(|| options.format.render(&fim));
    let completion = format!("{middle}{end}");
    let tokens = tokenizer.count(&format!("{prompt}{completion}"))?;
    Ok((tokens <= options.max_tokens).then_some((prompt, completion, tokens)))
}

/// Files (path, text) of one part, in the order given (related files next to each other: the
/// caller sorts by path), packed into samples.
pub fn pack(
    files: &[(&str, &str)],
    part: Part,
    tokenizer: &Tokenizer,
    options: &PackOptions,
    progress: &dyn Progress,
) -> Result<Vec<Sample>, EngineError> {
    let budget = options.max_tokens.saturating_sub(FIM_RESERVE).max(1);
    // Cutting files is most of the tokenizing: on every core, in the files' order.
    let cut: Vec<Result<Vec<Piece>, EngineError>> = files
        .par_iter()
        .map(|(path, text)| {
            let pieces = pieces(path, text, tokenizer, options, budget);
            progress.advance(1);
            pieces
        })
        .collect();
    let mut all = Vec::new();
    for pieces in cut {
        all.extend(pieces?);
    }
    let mut samples = Vec::new();
    let mut pending: std::collections::VecDeque<Piece> = all.into();
    let mut group: Vec<Piece> = Vec::new();
    let mut used = 0;
    loop {
        match pending.pop_front() {
            Some(piece) if group.is_empty() || used + piece.tokens <= budget => {
                used += piece.tokens;
                group.push(piece);
            }
            next => {
                if let Some(piece) = next {
                    pending.push_front(piece);
                }
                if group.is_empty() {
                    break;
                }
                // Every flush takes at least one piece, so this ends.
                let back = flush(&mut group, &mut samples, part, tokenizer, options, budget)?;
                for piece in back.into_iter().rev() {
                    pending.push_front(piece);
                }
                used = 0;
            }
        }
    }
    Ok(samples)
}

/// Renders `group` as one sample; when it came out longer than estimated, its last pieces are
/// given back (returned, in order) for the next sample.
fn flush(
    group: &mut Vec<Piece>,
    samples: &mut Vec<Sample>,
    part: Part,
    tokenizer: &Tokenizer,
    options: &PackOptions,
    budget: usize,
) -> Result<Vec<Piece>, EngineError> {
    let mut taken = std::mem::take(group);
    let mut back = Vec::new();
    while let Some(last) = taken.last() {
        let text = options.format.render(&input(options, &taken, &last.text, None));
        let tokens = tokenizer.count(&text)?;
        if tokens <= budget || taken.len() == 1 {
            if tokens <= options.max_tokens {
                samples.push(sample_of(&taken, text, tokens, part, tokenizer, options)?);
            }
            break;
        }
        back.extend(taken.pop());
    }
    back.reverse();
    Ok(back)
}

fn sample_of(
    group: &[Piece],
    text: String,
    tokens: usize,
    part: Part,
    tokenizer: &Tokenizer,
    options: &PackOptions,
) -> Result<Sample, EngineError> {
    let mut sources: Vec<String> = group.iter().map(|p| p.path.clone()).collect();
    sources.dedup();
    let first = group.first().map_or("", |p| p.path.as_str());
    let mut rng = Rng::new(stable_hash(
        options.seed,
        &["fim", first, &group.len().to_string(), &text.len().to_string()],
    ));
    let fim = options.format.has_fim() && rng.chance(options.fim_rate);
    if fim {
        if let Some((prompt, completion, tokens)) = fim_sample(group, tokenizer, options, &mut rng)? {
            return Ok(Sample {
                kind: Kind::Fim,
                part,
                sources,
                body: Body::Completion { prompt, completion },
                tokens,
            });
        }
    }
    Ok(Sample {
        kind: Kind::File,
        part,
        sources,
        body: Body::Text(text),
        tokens,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A word-level tokenizer (words and punctuation runs are tokens) with StarCoder's special
    /// tokens, built from its JSON as Hugging Face writes it: a real tokenizer with FIM tokens,
    /// which none of the kit's models has.
    pub(crate) fn starcoder_like() -> Tokenizer {
        let specials = [
            "<fim_prefix>",
            "<fim_middle>",
            "<fim_suffix>",
            "<file_sep>",
            "<repo_name>",
            "<|endoftext|>",
        ];
        let mut vocab = serde_json::Map::new();
        vocab.insert("[UNK]".into(), 0.into());
        let mut added = Vec::new();
        for (i, s) in specials.iter().enumerate() {
            vocab.insert((*s).into(), (i + 1).into());
            added.push(serde_json::json!({"id": i + 1, "content": s, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true}));
        }
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
            "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
        });
        let inner: tokenizers::Tokenizer = json.to_string().parse().unwrap();
        Tokenizer::from_tokenizer(inner)
    }

    pub(crate) fn files() -> Vec<(String, String)> {
        (0..12)
            .map(|f| {
                let lines = 5 + f * 7;
                let text: String = (0..lines).map(|i| format!("fn f{f}_{i}(x: u32) -> u32 {{ x + {i} }}\n")).collect();
                (format!("src/m{f:02}.rs"), text)
            })
            .collect()
    }

    fn options(format: PromptFormat, max_tokens: usize, fim_rate: f64) -> PackOptions {
        PackOptions {
            repo: "acme".into(),
            format,
            max_tokens,
            fim_rate,
            spm_rate: 0.5,
            retrieval_rate: 0.0,
            seed: 7,
        }
    }

    fn text_of(sample: &Sample) -> String {
        match &sample.body {
            Body::Text(t) => t.clone(),
            Body::Completion { prompt, completion } => format!("{prompt}{completion}"),
            Body::Chat(m) => m.iter().map(|m| m.content.as_str()).collect(),
        }
    }

    #[test]
    fn packed_samples_never_exceed_the_limit_in_the_models_tokens() {
        let tokenizer = starcoder_like();
        let files = files();
        let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
        for format in [PromptFormat::StarCoder, PromptFormat::Continuation] {
            for max in [64, 200, 1000] {
                let samples = pack(&refs, Part::Train, &tokenizer, &options(format, max, 0.5), &()).unwrap();
                assert!(!samples.is_empty());
                for s in &samples {
                    let counted = tokenizer.count(&text_of(s)).unwrap();
                    assert!(counted <= max, "{format:?} {max}: {counted} tokens");
                    assert_eq!(s.tokens, counted);
                }
                // Several files share a sample when they fit, and every line of every file
                // is in some sample (no FIM: the text is whole).
                let whole = pack(&refs, Part::Train, &tokenizer, &options(format, max, 0.0), &()).unwrap();
                if max == 1000 {
                    assert!(whole.iter().any(|s| s.sources.len() > 1), "{format:?}");
                }
                let all: String = whole.iter().map(text_of).collect();
                for (_, text) in &files {
                    for line in text.lines() {
                        assert!(all.contains(line), "{format:?} {max}: {line}");
                    }
                }
            }
        }
    }

    #[test]
    fn fim_samples_only_for_fim_models_and_in_their_tokens() {
        let tokenizer = starcoder_like();
        let files = files();
        let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
        let none = pack(&refs, Part::Train, &tokenizer, &options(PromptFormat::Continuation, 300, 1.0), &()).unwrap();
        assert!(none.iter().all(|s| s.kind == Kind::File));
        assert!(none.iter().all(|s| !text_of(s).contains("<fim_")));

        let fim = pack(&refs, Part::Train, &tokenizer, &options(PromptFormat::StarCoder, 300, 1.0), &()).unwrap();
        let fims: Vec<&Sample> = fim.iter().filter(|s| s.kind == Kind::Fim).collect();
        assert!(fims.len() * 2 > fim.len(), "{} of {}", fims.len(), fim.len());
        let id = |t: &str| tokenizer.token_id(t).unwrap();
        let (mut psm, mut spm) = (0, 0);
        for s in &fims {
            let Body::Completion { prompt, completion } = &s.body else {
                panic!("a FIM sample is a prompt and a completion")
            };
            let ids = tokenizer.encode(prompt).unwrap();
            for token in ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"] {
                assert_eq!(ids.iter().filter(|&&i| i == id(token)).count(), 1, "{token} in {prompt}");
            }
            assert_eq!(
                ids.last(),
                Some(&id("<fim_middle>"))
                    .filter(|_| prompt.ends_with("<fim_middle>"))
                    .or(ids.last())
            );
            if prompt.ends_with("<fim_middle>") {
                psm += 1;
            } else {
                spm += 1;
            }
            assert!(completion.ends_with("<|endoftext|>"));
            assert_eq!(tokenizer.encode(completion).unwrap().last(), Some(&id("<|endoftext|>")));
            assert!(completion.len() > "<|endoftext|>".len(), "an empty middle");
        }
        assert!(psm > 0 && spm > 0, "psm {psm}, spm {spm}");
    }

    #[test]
    fn a_fim_sample_puts_the_file_back_together() {
        let tokenizer = starcoder_like();
        let text = "def f(x):\n    return x + 1\n\ndef g(y):\n    return f(y) * 2\n";
        let refs = [("pkg/a.py", text)];
        for seed in 0..20 {
            let mut o = options(PromptFormat::StarCoder, 500, 1.0);
            o.seed = seed;
            o.spm_rate = 0.0;
            let samples = pack(&refs, Part::Train, &tokenizer, &o, &()).unwrap();
            let Body::Completion { prompt, completion } = &samples[0].body else {
                panic!("expected a FIM sample")
            };
            let (head, rest) = prompt.split_once("<fim_prefix>").unwrap();
            assert!(head.contains("<file_sep>pkg/a.py\n"));
            let (prefix, rest) = rest.split_once("<fim_suffix>").unwrap();
            let suffix = rest.strip_suffix("<fim_middle>").unwrap();
            let middle = completion.strip_suffix("<|endoftext|>").unwrap();
            assert_eq!(format!("{prefix}{middle}{suffix}"), text, "seed {seed}");
        }
    }
}
