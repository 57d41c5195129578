//! A prompt's log-probabilities: how likely the model finds each token of a prompt given the
//! ones before it. OpenAI's `echo` with `logprobs` answers with them, and tools that score
//! answers by likelihood (lm-evaluation-harness's multiple-choice tasks, perplexity) read
//! them.
//!
//! mistralrs reads the prompt once and hands back the model's logits at every position (a
//! raw-logits request: it steps alone and reads the whole prompt, never a cached start, and
//! leaves the prompt in the prefix cache for the request that continues it; vendor/README.md,
//! mistralrs-core change 10). The log-softmax of position `i`'s logits gives token `i + 1`'s
//! entry, so the first token has none.
//!
//! This module owns that request and the reading of its logits; it must not know about HTTP.

use candle_core::{DType, Tensor};
use mistralrs::{Constraint, NormalRequest, RequestMessage, Response, SamplingParams};
use tokio::sync::mpsc;

use crate::error::EngineError;
use crate::logprobs::{entry, MAX_TOP_LOGPROBS};
use crate::tokenizer::Tokenizer;
use crate::types::TokenLogprob;
use crate::Engine;

/// Most logits one prompt's log-probabilities may take (its tokens times the vocabulary):
/// 2 GiB of f32, about 10,000 tokens of a 49k vocabulary or 3,500 of a 152k one.
pub const MAX_PROMPT_LOGITS: usize = 1 << 29;

impl Engine {
    /// The log-probability of each token of `tokens` after the first, given the tokens
    /// before it, under the base model's raw logits, with the `top` likeliest tokens at each
    /// place (at most [`MAX_TOP_LOGPROBS`]).
    pub async fn prompt_logprobs(&self, tokens: Vec<u32>, top: usize) -> Result<Vec<TokenLogprob>, EngineError> {
        self.prompt_logprobs_on(None, tokens, top).await
    }

    /// Like [`Engine::prompt_logprobs`], on the model added as `model` (`None`: the base).
    pub(crate) async fn prompt_logprobs_on(
        &self,
        model: Option<&str>,
        tokens: Vec<u32>,
        top: usize,
    ) -> Result<Vec<TokenLogprob>, EngineError> {
        if tokens.is_empty() {
            return Err(EngineError::InvalidRequest("`prompt` must not be empty".into()));
        }
        self.check_token_ids("prompt", &tokens)?;
        if let Some(vocab) = self.vocab_size() {
            let logits = tokens.len().saturating_mul(vocab);
            if logits > MAX_PROMPT_LOGITS {
                return Err(EngineError::InvalidRequest(format!(
                    "the log-probabilities of a prompt of {} tokens take the model's logits at every position ({} tokens × {vocab}, {:.1} GiB); graft reads up to {} GiB of them, about {} tokens: send a shorter prompt",
                    tokens.len(),
                    tokens.len(),
                    (logits * 4) as f64 / f64::from(1u32 << 30),
                    (MAX_PROMPT_LOGITS * 4) >> 30,
                    MAX_PROMPT_LOGITS / vocab,
                )));
            }
        }
        let tokenizer = self.tokenizer()?;
        let top = top.min(MAX_TOP_LOGPROBS);
        let mut sampling_params = SamplingParams::deterministic();
        sampling_params.max_len = Some(1);
        let (tx, mut rx) = mpsc::channel(1);
        let normal = NormalRequest {
            messages: RequestMessage::CompletionTokens(tokens.clone()),
            sampling_params,
            response: tx,
            return_logprobs: false,
            is_streaming: false,
            id: 0,
            constraint: Constraint::None,
            suffix: None,
            tools: None,
            tool_choice: None,
            logits_processors: None,
            return_raw_logits: true,
            web_search_options: None,
            model_id: model.map(str::to_owned),
            truncate_sequence: false,
        };
        self.submit(model, normal).await?;
        // The answer is read in a task of its own: a caller that goes away (a client that
        // hung up) still leaves mistralrs someone to hand the logits to, where a closed
        // channel would fail its whole step.
        let reading = tokio::spawn(async move {
            let chunks = loop {
                match rx.recv().await {
                    Some(Response::Raw { logits_chunks, .. }) => break logits_chunks,
                    Some(Response::ValidationError(e)) => return Err(EngineError::InvalidRequest(e.to_string())),
                    Some(Response::InternalError(e)) => return Err(EngineError::Generation(e.to_string())),
                    Some(Response::ModelError(message, _) | Response::CompletionModelError(message, _)) => {
                        return Err(EngineError::Generation(message))
                    }
                    Some(_) => continue,
                    None => return Err(EngineError::Generation("the engine ended the request without its logits".into())),
                }
            };
            tokio::task::spawn_blocking(move || entries(&chunks, &tokens, top, &tokenizer))
                .await
                .map_err(|e| EngineError::Generation(format!("reading the prompt's logits failed: {e}")))?
        });
        reading
            .await
            .map_err(|e| EngineError::Generation(format!("reading the prompt's logits failed: {e}")))?
    }
}

/// The entries of `tokens[1..]` from the logits of every prompt position, handed back in
/// chunks of positions (`[positions, vocabulary]` each, in order). Rows are read on rayon's
/// threads: a log-softmax over the vocabulary per position is a tenth of the request's time.
fn entries(chunks: &[Tensor], tokens: &[u32], top: usize, tokenizer: &Tokenizer) -> Result<Vec<TokenLogprob>, EngineError> {
    use rayon::prelude::*;
    let failed = |e: candle_core::Error| EngineError::Generation(format!("cannot read the prompt's logits: {e}"));
    let mut out = Vec::with_capacity(tokens.len().saturating_sub(1));
    let mut position = 0;
    for chunk in chunks {
        let vocab = chunk.dims().last().copied().unwrap_or(0);
        if vocab == 0 {
            continue;
        }
        let rows = chunk.elem_count() / vocab;
        let chunk = chunk.reshape((rows, vocab)).and_then(|c| c.to_dtype(DType::F32)).map_err(failed)?;
        // The last position's logits are of the token after the prompt.
        let scored = rows.min(tokens.len().saturating_sub(position + 1));
        let rows_out: Vec<TokenLogprob> = (0..scored)
            .into_par_iter()
            .map(|row| {
                let logits: Vec<f32> = chunk.get(row).and_then(|r| r.to_vec1()).map_err(failed)?;
                Ok(entry(&logits, tokens[position + row + 1] as usize, top, tokenizer))
            })
            .collect::<Result<_, EngineError>>()?;
        out.extend(rows_out);
        position += rows;
    }
    if position != tokens.len() {
        return Err(EngineError::Generation(format!(
            "the engine handed back logits for {position} positions of a prompt of {} tokens",
            tokens.len()
        )));
    }
    Ok(out)
}
