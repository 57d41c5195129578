//! The engine's request and response types: what a caller asks for and gets back.
//!
//! These are graft's own types, independent of the HTTP API and of mistralrs, so the server
//! maps OpenAI JSON to them and the engine maps them to mistralrs.

pub use crate::grammar::Grammar;

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// How tokens are chosen and when generation ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// 0 means greedy (always the most likely token).
    pub temperature: f64,
    /// Nucleus sampling; 1.0 disables it.
    pub top_p: f64,
    /// Only the `top_k` likeliest tokens; 0 disables it.
    pub top_k: usize,
    /// Only tokens at least `min_p` times as likely as the likeliest; 0 disables it.
    pub min_p: f64,
    /// Generation stops before any of these strings ...
    pub stop: Vec<String>,
    /// ... or before any of these tokens (vLLM's `stop_token_ids`; ids of the model's
    /// vocabulary) ...
    pub stop_token_ids: Vec<u32>,
    /// ... or after the string or token, with it in the answer (vLLM's
    /// `include_stop_str_in_output`).
    pub include_stop: bool,
    /// With a seed, sampling (temperature > 0) is repeatable: the same request and seed give
    /// the same text, whatever else the engine is running.
    pub seed: Option<u64>,
    /// OpenAI's `frequency_penalty`: each logit lowered by this much for every time its token
    /// already appears in the answer (not the prompt). 0 disables it.
    pub frequency_penalty: f64,
    /// OpenAI's `presence_penalty`: each logit lowered by this much once its token appears in
    /// the answer. 0 disables it.
    pub presence_penalty: f64,
    /// vLLM's `repetition_penalty`, llama.cpp's `repeat_penalty`: tokens already in the
    /// context, prompt included, made less likely ([`Repetition`]). `None` disables it.
    pub repetition: Option<Repetition>,
    /// vLLM's `min_tokens`: before this many answer tokens the model's end-of-text tokens
    /// ([`crate::Engine::end_tokens`]) cannot be chosen; `max_tokens` with it is llama.cpp's
    /// and vLLM's `ignore_eos`. 0 disables it. Not with a `grammar`, whose end it would block.
    pub min_tokens: usize,
    /// With `Some(k)`, each generated token comes with its log-probability and the `k` most
    /// likely tokens at its place ([`TokenLogprob`]).
    pub logprobs: Option<usize>,
    /// OpenAI's `logit_bias`: added to these tokens' logits at every step (-100 all but bans
    /// a token, 100 all but forces it).
    pub logit_bias: Vec<(u32, f32)>,
    /// Structured output: the answer follows this grammar (check it first with
    /// [`crate::Engine::check_grammar`] for an error that names it).
    pub grammar: Option<Grammar>,
}

impl Sampling {
    /// Greedy decoding of at most `max_tokens`: the same prompt always gives the same text.
    pub fn greedy(max_tokens: usize) -> Sampling {
        Sampling {
            max_tokens,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            include_stop: false,
            seed: None,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            repetition: None,
            min_tokens: 0,
            logprobs: None,
            logit_bias: Vec::new(),
            grammar: None,
        }
    }
}

/// A penalty on the tokens already in the context, prompt included, as vLLM and llama.cpp
/// (after CTRL) apply it: each such token's logit is divided by `penalty` when positive and
/// multiplied by it when negative, however often the token appears.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Repetition {
    /// Above 1 the model repeats less, below 1 more.
    pub penalty: f32,
    /// Only the context's last `window` tokens count (llama.cpp's `repeat_last_n`); `None`:
    /// the whole context (vLLM's).
    pub window: Option<usize>,
}

/// A chat request to the engine.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub sampling: Sampling,
}

/// A raw completion request: the prompt is given to the model as it is, with no chat
/// template (see `fim` for building code-completion prompts).
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    pub sampling: Sampling,
}

/// A raw prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Text, tokenized by the model's tokenizer (special tokens written as text, such as
    /// `<|fim_prefix|>`, become those tokens).
    Text(String),
    /// Token ids, already tokenized.
    Tokens(Vec<u32>),
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its answer, or a stop string was met.
    Stop,
    /// `max_tokens` was reached.
    Length,
}

impl FinishReason {
    /// The OpenAI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What ended an answer early, when it was one of the request's own stops (vLLM's
/// `stop_reason`): not the model's end, nor `max_tokens`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopCause {
    /// A string of [`Sampling::stop`].
    Text(String),
    /// A token of [`Sampling::stop_token_ids`].
    Token(u32),
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Of the prompt's tokens, those an earlier request had read: the prompt cache supplied
    /// their keys and values (`model.prompt_cache`).
    pub cached_tokens: usize,
    pub completion_tokens: usize,
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct Completion {
    pub text: String,
    pub finish_reason: FinishReason,
    /// With [`FinishReason::Stop`], the request's stop that ended it (`None`: the model
    /// ended its answer).
    pub stopped_by: Option<StopCause>,
    pub usage: Usage,
    /// The tokens of `text` with their log-probabilities, when [`Sampling::logprobs`] asked.
    pub logprobs: Option<Vec<TokenLogprob>>,
}

/// A generated token and how likely the model found it: natural-log probabilities of the
/// model's distribution at that place, after the penalties (repetition, frequency and
/// presence), `logit_bias` and `min_tokens`, and before
/// temperature and top-p (what vLLM calls raw log-probabilities).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    /// The token's text (a piece of a character that takes several tokens reads as U+FFFD).
    pub token: String,
    /// The bytes the token stands for (a piece of a character: its own bytes).
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// Its place among the vocabulary by likelihood at this place, 1 for the likeliest (ties
    /// go to the lower id, as in `top`; vLLM's `rank`).
    pub rank: u32,
    /// The most likely tokens at this place, most likely first (as many as asked).
    pub top: Vec<TopLogprob>,
}

/// One of the most likely tokens at a place.
#[derive(Debug, Clone, PartialEq)]
pub struct TopLogprob {
    pub id: u32,
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}
