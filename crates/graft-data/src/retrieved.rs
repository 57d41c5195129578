//! Retrieval-augmented samples: a piece of a file laid out as the server lays out a completion
//! with retrieval (the code the project's index finds for a cursor in it, as other files of the
//! repo-level layout, then the file up to the cursor, and for a fill-in-the-middle model the
//! code after it), with what the user would have written there as the completion the model
//! learns: the rest of the piece for a continuation model, the middle for a FIM model. An
//! adapter trained on packed files alone never sees the prompts retrieval makes at serve time,
//! with chunks of other files, some relevant and some not, between it and the file.
//!
//! The retrieved code comes only from files the sample's part may see (training samples:
//! training files; validation samples: training and validation files; held-out files never),
//! with their curated text, so a redacted secret stays redacted and the evaluation's files stay
//! out. This module chooses the pieces and cursors and makes the samples; the search, and the
//! fitting of its hits to a token budget, are the caller's ([`Retrieve`]: the server's own).

use std::collections::BTreeMap;

use graft_core::random::{stable_hash, Rng};
use graft_engine::fim::{ContextFile, FimInput};
use graft_engine::{EngineError, Tokenizer};
use rayon::prelude::*;
use serde::Serialize;

use crate::samples::{self, Body, Kind, PackOptions, Part, Sample};
use crate::Progress;

/// An error of the retrieval behind [`Retrieve`].
pub type RetrieveError = Box<dyn std::error::Error + Send + Sync>;

/// The code a completion at a cursor gets from the project's index.
pub trait Retrieve: Sync {
    /// Tokens of retrieved code a completion prompt gets (the project's `context_tokens`).
    fn budget(&self) -> usize;

    /// The code retrieval finds for the cursor in `input` (its path, prefix and suffix), fitted
    /// to `budget` tokens and laid out as the server lays it into a completion prompt, most
    /// relevant first. Only chunks of the files in `visible` (path → curated text), cut from
    /// that text.
    fn context(&self, input: &FimInput, budget: usize, visible: &BTreeMap<&str, &str>) -> Result<Vec<ContextFile>, RetrieveError>;
}

#[derive(Debug, thiserror::Error)]
pub enum RetrievedError {
    #[error(transparent)]
    Tokenizer(#[from] EngineError),
    #[error("retrieving code for a sample of {path}: {source}")]
    Retrieval {
        path: String,
        #[source]
        source: RetrieveError,
    },
}

/// What became of the pieces chosen for retrieval-augmented samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RetrievalSummary {
    /// Share of pieces chosen (`dataset.retrieval_rate`).
    pub rate: f64,
    /// Why there are none when the rate asks for some (no index, ...); `None` when used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unused: Option<String>,
    /// Pieces chosen.
    pub pieces: usize,
    /// Samples made from them.
    pub samples: usize,
    /// Pieces for which retrieval found no code the sample may see.
    pub no_code: usize,
    /// Pieces without a place for a cursor (blank).
    pub no_cursor: usize,
    /// Samples that came out longer than `max_sample_tokens` once laid out, left out.
    pub too_long: usize,
}

impl RetrievalSummary {
    /// Adds another part's counts to these.
    pub fn add(&mut self, other: &RetrievalSummary) {
        self.pieces += other.pieces;
        self.samples += other.samples;
        self.no_code += other.no_code;
        self.no_cursor += other.no_cursor;
        self.too_long += other.too_long;
    }
}

/// What one chosen piece gave.
enum Outcome {
    Sample(Sample),
    NoCode,
    NoCursor,
    TooLong,
}

/// The retrieval-augmented samples of one part's `files` (path, curated text), about
/// `options.retrieval_rate` of their pieces, each seeing only the files `visible` holds.
pub fn make(
    files: &[(&str, &str)],
    part: Part,
    visible: &BTreeMap<&str, &str>,
    tokenizer: &Tokenizer,
    options: &PackOptions,
    retriever: &dyn Retrieve,
    progress: &dyn Progress,
) -> Result<(Vec<Sample>, RetrievalSummary), RetrievedError> {
    // Pieces short enough to leave the retrieved code its budget (or half the sample).
    let room = retriever.budget().min(options.max_tokens / 2);
    let budget = options.max_tokens.saturating_sub(room).saturating_sub(samples::FIM_RESERVE).max(1);
    let cut: Vec<Result<Vec<samples::Piece>, EngineError>> = files
        .par_iter()
        .map(|(path, text)| samples::pieces(path, text, tokenizer, options, budget))
        .collect();
    let mut chosen = Vec::new();
    for pieces in cut {
        for (i, piece) in pieces?.into_iter().enumerate() {
            let mut rng = Rng::new(stable_hash(options.seed, &["retrieved", &piece.path, &i.to_string()]));
            if rng.chance(options.retrieval_rate) {
                chosen.push((piece, rng));
            }
        }
    }
    progress.stage(&format!("retrieve {}", part.as_str()), chosen.len());
    let outcomes: Vec<Result<Outcome, RetrievedError>> = chosen
        .into_par_iter()
        .map(|(piece, mut rng)| {
            let outcome = sample(&piece, part, tokenizer, options, retriever, visible, &mut rng);
            progress.advance(1);
            outcome
        })
        .collect();
    let mut summary = RetrievalSummary {
        rate: options.retrieval_rate,
        pieces: outcomes.len(),
        ..RetrievalSummary::default()
    };
    let mut out = Vec::new();
    for outcome in outcomes {
        match outcome? {
            Outcome::Sample(s) => out.push(s),
            Outcome::NoCode => summary.no_code += 1,
            Outcome::NoCursor => summary.no_cursor += 1,
            Outcome::TooLong => summary.too_long += 1,
        }
    }
    summary.samples = out.len();
    Ok((out, summary))
}

/// One piece's sample: a cursor where a FIM sample's middle would begin; for a FIM model the
/// middle is the answer, for a continuation model everything after the cursor.
fn sample(
    piece: &samples::Piece,
    part: Part,
    tokenizer: &Tokenizer,
    options: &PackOptions,
    retriever: &dyn Retrieve,
    visible: &BTreeMap<&str, &str>,
    rng: &mut Rng,
) -> Result<Outcome, RetrievedError> {
    let Some((a, b)) = samples::fim_span(&piece.text, rng) else {
        return Ok(Outcome::NoCursor);
    };
    let text = &piece.text;
    let (suffix, completion) = match options.format.end_of_middle() {
        Some(end) => (Some(text[b..].to_owned()), format!("{}{end}", &text[a..b])),
        None => (None, text[a..].to_owned()),
    };
    let mut input = FimInput {
        repo: Some(options.repo.clone()),
        context: Vec::new(),
        path: Some(piece.path.clone()),
        prefix: text[..a].to_owned(),
        suffix,
        raw_prefix: false,
    };
    let alone = tokenizer.count(&format!("{}{completion}", options.format.render(&input)))?;
    let budget = retriever
        .budget()
        .min(options.max_tokens.saturating_sub(alone + samples::FIM_RESERVE));
    let context = retriever
        .context(&input, budget, visible)
        .map_err(|source| RetrievedError::Retrieval {
            path: piece.path.clone(),
            source,
        })?;
    if context.is_empty() {
        return Ok(Outcome::NoCode);
    }
    let mut sources = vec![piece.path.clone()];
    for file in &context {
        if !sources.contains(&file.path) {
            sources.push(file.path.clone());
        }
    }
    input.context = context;
    let prompt = options.format.render(&input);
    let tokens = tokenizer.count(&format!("{prompt}{completion}"))?;
    // The budget left the sample's own tokens room; counted together they may differ a little.
    if tokens > options.max_tokens {
        return Ok(Outcome::TooLong);
    }
    Ok(Outcome::Sample(Sample {
        kind: Kind::Retrieved,
        part,
        sources,
        body: Body::Completion { prompt, completion },
        tokens,
    }))
}

#[cfg(test)]
mod tests {
    use graft_engine::PromptFormat;

    use super::*;
    use crate::samples::tests::{files, starcoder_like};

    /// Stands in for the index at the trait's boundary: each file the sample may see, other
    /// than its own, in path order, as its first two lines, while they fit the budget.
    struct FirstLines {
        budget: usize,
        tokenizer: Tokenizer,
    }

    impl Retrieve for FirstLines {
        fn budget(&self) -> usize {
            self.budget
        }

        fn context(&self, input: &FimInput, budget: usize, visible: &BTreeMap<&str, &str>) -> Result<Vec<ContextFile>, RetrieveError> {
            let mut out = Vec::new();
            let mut used = 0;
            for (path, text) in visible {
                if Some(*path) == input.path.as_deref() {
                    continue;
                }
                let head: String = text.split_inclusive('\n').take(2).collect();
                let tokens = self.tokenizer.count(&format!("{path}\n{head}"))?;
                if used + tokens > budget {
                    break;
                }
                used += tokens;
                out.push(ContextFile {
                    path: (*path).to_owned(),
                    text: head,
                });
            }
            Ok(out)
        }
    }

    fn options(format: PromptFormat, rate: f64) -> PackOptions {
        PackOptions {
            repo: "acme".into(),
            format,
            max_tokens: 300,
            fim_rate: 0.0,
            spm_rate: 0.0,
            retrieval_rate: rate,
            seed: 7,
        }
    }

    #[test]
    fn samples_are_the_retrieved_code_then_the_file_and_see_only_what_their_part_may() {
        let tokenizer = starcoder_like();
        let files = files();
        let (train, validation) = files.split_at(8);
        fn of(f: &[(String, String)]) -> Vec<(&str, &str)> {
            f.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect()
        }
        let visible: BTreeMap<&str, &str> = of(train).into_iter().collect();
        let retriever = FirstLines {
            budget: 60,
            tokenizer: starcoder_like(),
        };
        for format in [PromptFormat::StarCoder, PromptFormat::Continuation] {
            let options = options(format, 1.0);
            let (made, summary) = make(&of(train), Part::Train, &visible, &tokenizer, &options, &retriever, &()).unwrap();
            assert_eq!(summary.samples, made.len());
            assert_eq!(
                summary.pieces,
                summary.samples + summary.no_code + summary.no_cursor + summary.too_long
            );
            assert!(summary.samples >= 8, "{format:?}: {summary:?}");
            for s in &made {
                assert_eq!((s.kind, s.part), (Kind::Retrieved, Part::Train));
                let Body::Completion { prompt, completion } = &s.body else {
                    panic!("{:?}", s.body)
                };
                assert_eq!(s.tokens, tokenizer.count(&format!("{prompt}{completion}")).unwrap());
                assert!(s.tokens <= options.max_tokens);
                // The file first in the sources, then the files its code came from: visible
                // ones, never itself, each shown in the prompt before the file.
                let own = &s.sources[0];
                let file = &train.iter().find(|(p, _)| p == own).unwrap().1;
                assert!(s.sources.len() > 1);
                for source in &s.sources[1..] {
                    assert!(visible.contains_key(source.as_str()) && source != own, "{source}");
                    assert!(prompt.find(source.as_str()).unwrap() < prompt.rfind(own.as_str()).unwrap());
                }
                assert!(!validation.iter().any(|(p, _)| prompt.contains(p.as_str())));
                match format {
                    // The middle is the answer, then the end of the middle.
                    PromptFormat::StarCoder => {
                        let middle = completion.strip_suffix("<|endoftext|>").unwrap();
                        assert!(file.contains(middle) && prompt.contains("<fim_middle>"), "{completion}");
                        assert!(prompt.starts_with("<repo_name>acme"), "{prompt}");
                    }
                    // The rest of the piece is the answer, right after its start in the prompt.
                    _ => {
                        assert!(!completion.is_empty() && file.contains(completion.as_str()));
                        // The prefix follows the line naming the file.
                        let header = prompt.rfind(own.as_str()).unwrap();
                        let prefix = &prompt[header + prompt[header..].find('\n').unwrap() + 1..];
                        assert!(file.contains(&format!("{prefix}{completion}")), "{prefix:?}");
                    }
                }
            }
            // The same seed makes the same samples; rate 0 none.
            let (again, _) = make(&of(train), Part::Train, &visible, &tokenizer, &options, &retriever, &()).unwrap();
            assert_eq!(again, made);
            let (none, summary) = make(
                &of(train),
                Part::Train,
                &visible,
                &tokenizer,
                &self::options(format, 0.0),
                &retriever,
                &(),
            )
            .unwrap();
            assert!(none.is_empty() && summary.pieces == 0);
        }
    }

    #[test]
    fn a_piece_with_no_code_found_makes_no_sample() {
        let tokenizer = starcoder_like();
        let files = files();
        let of: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
        // A file sees nothing but itself: retrieval has nothing to give.
        let alone: BTreeMap<&str, &str> = of[..1].iter().copied().collect();
        let retriever = FirstLines {
            budget: 60,
            tokenizer: starcoder_like(),
        };
        let options = options(PromptFormat::StarCoder, 1.0);
        let (made, summary) = make(&of[..1], Part::Train, &alone, &tokenizer, &options, &retriever, &()).unwrap();
        assert!(made.is_empty());
        assert!(summary.pieces > 0 && summary.no_code == summary.pieces, "{summary:?}");
    }
}
