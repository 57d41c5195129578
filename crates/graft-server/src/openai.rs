//! OpenAI's wire format for the endpoints graft serves: request bodies as clients send them,
//! response bodies as clients expect them. Plain data; validation lives with the handlers.
//!
//! Unknown request fields are ignored, as OpenAI clients send many that a local server has no
//! use for (`user`, `store`, `metadata`, ...).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub use crate::prompt::augment::Source;

/// `POST /v1/chat/completions` request.
#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    /// Left out (as vLLM and llama.cpp allow): `server.default_model`.
    #[serde(default)]
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, deserialize_with = "token_limit")]
    pub max_tokens: Option<u32>,
    /// The newer name of `max_tokens`; wins when both are given.
    #[serde(default, deserialize_with = "token_limit")]
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// vLLM's sampling extensions: only the `top_k` likeliest tokens (-1 or 0: all), only
    /// tokens at least `min_p` times as likely as the likeliest.
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub stop: Option<Stop>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<u32>,
    /// Makes sampling repeatable: the same request with the same seed gives the same text.
    pub seed: Option<i64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    /// vLLM's `repetition_penalty`, llama.cpp's `repeat_penalty` and `repeat_last_n`.
    #[serde(flatten)]
    pub repetition: RepetitionFields,
    /// vLLM's `min_tokens`, vLLM's and llama.cpp's `ignore_eos`.
    #[serde(flatten)]
    pub ending: EndingFields,
    /// Each answer token's log-probability ([`ChatLogprobs`]) ...
    pub logprobs: Option<bool>,
    /// ... with this many of the likeliest tokens at its place.
    pub top_logprobs: Option<u32>,
    /// vLLM's: the log-probabilities of the prompt the model read ([`PromptLogprobs`]), with
    /// this many of the likeliest tokens at each place.
    pub prompt_logprobs: Option<u32>,
    /// Token id → bias added to its logit, -100 to 100.
    pub logit_bias: Option<HashMap<String, f64>>,
    /// graft's extension: retrieval on or off, or its `top_k`, for a project request.
    pub retrieval: Option<RetrievalField>,
    /// graft's extension: answer with the exact prompt the model read ([`DebugInfo`]).
    pub debug: Option<bool>,
    /// Structured output (`response_format`, vLLM's `structured_outputs`).
    #[serde(flatten)]
    pub structured: StructuredFields,
    /// Tool calling (`routes::tools`): the functions the model may call, read and checked there.
    pub tools: Option<serde_json::Value>,
    pub tool_choice: Option<serde_json::Value>,
    pub parallel_tool_calls: Option<bool>,
    /// vLLM's: the answer continues the last message (an assistant prefill: its text is not
    /// repeated) instead of starting a new turn.
    pub continue_final_message: Option<bool>,
    /// vLLM's: `false` lays the conversation out without opening the assistant's turn.
    pub add_generation_prompt: Option<bool>,
    /// OpenAI fields graft does not implement: read only to refuse them (400) rather than
    /// answer as if they had been honoured.
    #[serde(flatten)]
    pub unsupported: UnsupportedChatFields,
}

/// Chat fields graft does not implement. A request that uses one gets 400 naming it; their
/// "off" values (`false`, `null`, `"none"`, an empty list) are accepted.
#[derive(Debug, Default, Deserialize)]
pub struct UnsupportedChatFields {
    pub functions: Option<serde_json::Value>,
    pub function_call: Option<serde_json::Value>,
}

impl UnsupportedChatFields {
    /// The first field that asks for something graft does not do, with what it asked.
    pub fn first_used(&self) -> Option<(&'static str, &'static str)> {
        use serde_json::Value;
        let off = |v: &Option<Value>| match v {
            None | Some(Value::Null) | Some(Value::Bool(false)) => true,
            Some(Value::Bool(true)) => false,
            Some(Value::String(s)) => s == "none",
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        };
        [
            (
                "functions",
                off(&self.functions),
                "the legacy `functions` field is not supported; use `tools`",
            ),
            (
                "function_call",
                off(&self.function_call),
                "the legacy `function_call` field is not supported; use `tool_choice`",
            ),
        ]
        .into_iter()
        .find(|(_, off, _)| !off)
        .map(|(field, _, message)| (field, message))
    }
}

/// The repetition penalty as the servers users come from take it (read and checked by
/// `routes::params`): vLLM's `repetition_penalty` over the whole context, prompt included;
/// llama.cpp's and Ollama's `repeat_penalty` over the last `repeat_last_n` tokens (64 unless
/// given; -1: the whole context; 0: none).
#[derive(Debug, Default, Deserialize)]
pub struct RepetitionFields {
    pub repetition_penalty: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub repeat_last_n: Option<i64>,
}

/// How an answer ends (read and checked by `routes::params`): vLLM's `min_tokens` (the
/// model's end-of-text tokens held back until the answer has that many tokens) and
/// `ignore_eos`, also llama.cpp's (held back to `max_tokens`; stop strings still end it);
/// vLLM's `include_stop_str_in_output` (the stop string or token that ended the answer is in
/// it) and `stop_token_ids`.
#[derive(Debug, Default, Deserialize)]
pub struct EndingFields {
    pub min_tokens: Option<u32>,
    pub ignore_eos: Option<bool>,
    pub include_stop_str_in_output: Option<bool>,
    /// vLLM's `stop_token_ids`: the answer ends before the first of these tokens.
    pub stop_token_ids: Option<Vec<u32>>,
}

/// The fields that ask for structured output, as a request gave them (read and checked by
/// `routes::params::structured`): OpenAI's `response_format` (`text`, `json_object`, with
/// llama.cpp's optional `schema` beside it, or `json_schema`), and vLLM's
/// `structured_outputs` (`json`, `regex`, `choice` or `grammar`).
#[derive(Debug, Default, Deserialize)]
pub struct StructuredFields {
    pub response_format: Option<serde_json::Value>,
    pub structured_outputs: Option<serde_json::Value>,
}

/// The `retrieval` extension field: `false` / `true`, or `{"enabled": ..., "top_k": ...,
/// "sticky": ...}` (`sticky: false`: a completion searches afresh even near its last search).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum RetrievalField {
    Switch(bool),
    Options {
        enabled: Option<bool>,
        top_k: Option<usize>,
        sticky: Option<bool>,
    },
}

impl RetrievalField {
    pub fn enabled(self) -> Option<bool> {
        match self {
            RetrievalField::Switch(on) => Some(on),
            RetrievalField::Options { enabled, .. } => enabled,
        }
    }

    pub fn top_k(self) -> Option<usize> {
        match self {
            RetrievalField::Switch(_) => None,
            RetrievalField::Options { top_k, .. } => top_k,
        }
    }

    pub fn sticky(self) -> Option<bool> {
        match self {
            RetrievalField::Switch(_) => None,
            RetrievalField::Options { sticky, .. } => sticky,
        }
    }
}

/// `POST /v1/completions` request.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// Left out: `server.default_model`, as on chat.
    #[serde(default)]
    pub model: String,
    pub prompt: PromptInput,
    /// The text after the insertion point: with it, the model fills in the middle.
    pub suffix: Option<String>,
    #[serde(default, deserialize_with = "token_limit")]
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// vLLM's sampling extensions: only the `top_k` likeliest tokens (-1 or 0: all), only
    /// tokens at least `min_p` times as likely as the likeliest.
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub stop: Option<Stop>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<u32>,
    pub echo: Option<bool>,
    pub best_of: Option<u32>,
    /// Each token's log-probability with this many of the likeliest tokens at its place
    /// ([`CompletionLogprobs`]).
    pub logprobs: Option<u32>,
    /// vLLM's: the log-probabilities of the prompt the model read, on each choice
    /// ([`PromptLogprobs`]).
    pub prompt_logprobs: Option<u32>,
    pub seed: Option<i64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    /// The repetition penalty, `min_tokens` and `ignore_eos`, as for chat.
    #[serde(flatten)]
    pub repetition: RepetitionFields,
    #[serde(flatten)]
    pub ending: EndingFields,
    pub logit_bias: Option<HashMap<String, f64>>,
    /// graft's extensions, as for chat.
    pub retrieval: Option<RetrievalField>,
    pub debug: Option<bool>,
    /// graft's extension: the current file's path (relative to the repository, or absolute
    /// inside it). Repository-level prompt formats name it, and retrieval leaves it out (it
    /// is in the prompt already).
    pub path: Option<String>,
    /// Structured output, as for chat.
    #[serde(flatten)]
    pub structured: StructuredFields,
}

/// graft's `debug` extension in an answer (on the first event of a stream): the prompt
/// exactly as the model read it, chat template, retrieved code and special tokens included.
#[derive(Debug, Clone, Serialize)]
pub struct DebugInfo {
    pub prompt: String,
    pub prompt_tokens: usize,
}

/// A token limit (`max_tokens`) as llama.cpp's clients send it too: a negative one (`-1`,
/// "no limit") is taken as none given, so the route's default applies.
fn token_limit<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    match Option::<i64>::deserialize(deserializer)? {
        Some(n) if n < 0 => Ok(None),
        Some(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("invalid value: {n}, expected at most {}", u32::MAX))),
        None => Ok(None),
    }
}

/// `prompt`: a string or token ids, or a batch of either (a list of strings, of id lists).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// `POST /v1/embeddings` request.
#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    /// Left out: the embedding model (there is one).
    #[serde(default)]
    pub model: String,
    pub input: EmbeddingInput,
    /// `float` (default) or `base64` (little-endian f32).
    pub encoding_format: Option<String>,
    /// Accepted only when it equals the model's size.
    pub dimensions: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<serde_json::Value>),
}

/// `POST /v1/embeddings` response.
#[derive(Debug, Serialize)]
pub struct EmbeddingList {
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

#[derive(Debug, Serialize)]
pub struct EmbeddingData {
    pub object: &'static str,
    pub index: usize,
    pub embedding: serde_json::Value,
}

#[derive(Debug, Serialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Serialize)]
pub struct TextChoice {
    pub index: u32,
    pub text: String,
    pub finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    pub logprobs: Option<CompletionLogprobs>,
    /// vLLM's, when the request asked for them (never streamed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<PromptLogprobs>,
}

/// vLLM's `stop_reason` beside `finish_reason: "stop"`: the request's stop string or stop
/// token id that ended the answer (left out when the model ended it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum StopReason {
    Text(String),
    Token(u32),
}

impl From<graft_engine::StopCause> for StopReason {
    fn from(cause: graft_engine::StopCause) -> StopReason {
        match cause {
            graft_engine::StopCause::Text(text) => StopReason::Text(text),
            graft_engine::StopCause::Token(id) => StopReason::Token(id),
        }
    }
}

/// `logprobs` of a completion's choice, in the legacy completions format: per token its text,
/// its log-probability, the likeliest tokens at its place (the chosen one always among them)
/// and where its text starts in the answer (characters).
#[derive(Debug, Default, Clone, Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    /// `null` for a prompt's first token (`echo`), which nothing comes before.
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<TopMap>>,
    pub text_offset: Vec<usize>,
}

impl CompletionLogprobs {
    /// The entries of `tokens`, whose text starts at character `offset` of the answer; the
    /// offset after them is returned too.
    pub fn new(tokens: Vec<graft_engine::TokenLogprob>, offset: usize) -> (CompletionLogprobs, usize) {
        let mut out = CompletionLogprobs::default();
        let end = out.extend(tokens, offset);
        (out, end)
    }

    /// A prompt's entries (`echo` with `logprobs`): its first token, whose text is `first`
    /// and which has no log-probability, then the others' (`graft_engine::score`); the
    /// offset after them is returned too.
    pub fn prompt(first: String, rest: Vec<graft_engine::TokenLogprob>) -> (CompletionLogprobs, usize) {
        let mut out = CompletionLogprobs {
            text_offset: vec![0],
            token_logprobs: vec![None],
            top_logprobs: vec![None],
            ..CompletionLogprobs::default()
        };
        let offset = first.chars().count();
        out.tokens.push(first);
        let end = out.extend(rest, offset);
        (out, end)
    }

    /// Adds the entries of `tokens`, the first one's text starting at character `offset`;
    /// returns the offset after them.
    pub fn extend(&mut self, tokens: Vec<graft_engine::TokenLogprob>, mut offset: usize) -> usize {
        for token in tokens {
            let mut top: Vec<(String, f32)> = token.top.into_iter().map(|t| (t.token, t.logprob)).collect();
            if !top.iter().any(|(text, _)| *text == token.token) {
                top.push((token.token.clone(), token.logprob));
            }
            self.text_offset.push(offset);
            offset += token.token.chars().count();
            self.tokens.push(token.token);
            self.token_logprobs.push(Some(token.logprob));
            self.top_logprobs.push(Some(TopMap(top)));
        }
        offset
    }
}

/// vLLM's `prompt_logprobs`: for each token of the prompt the model read, `null` for the
/// first (nothing comes before it), then an object from token id to that token's
/// log-probability, rank and text: the prompt's own token first, then the likeliest others.
#[derive(Debug, Clone, Default)]
pub struct PromptLogprobs(Vec<Option<Vec<(u32, RankedLogprob)>>>);

#[derive(Debug, Clone, Serialize)]
pub struct RankedLogprob {
    pub logprob: f32,
    pub rank: u32,
    pub decoded_token: String,
}

impl PromptLogprobs {
    /// From the entries of every token after the first (`graft_engine::score`).
    pub fn new(entries: Vec<graft_engine::TokenLogprob>) -> PromptLogprobs {
        let mut places = Vec::with_capacity(entries.len() + 1);
        places.push(None);
        for entry in entries {
            let mut tokens = vec![(
                entry.id,
                RankedLogprob {
                    logprob: entry.logprob,
                    rank: entry.rank,
                    decoded_token: entry.token,
                },
            )];
            for (place, top) in entry.top.into_iter().enumerate() {
                if top.id != entry.id {
                    let ranked = RankedLogprob {
                        logprob: top.logprob,
                        rank: place as u32 + 1,
                        decoded_token: top.token,
                    };
                    tokens.push((top.id, ranked));
                }
            }
            places.push(Some(tokens));
        }
        PromptLogprobs(places)
    }
}

impl Serialize for PromptLogprobs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Place<'a>(&'a [(u32, RankedLogprob)]);
        impl Serialize for Place<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(self.0.iter().map(|(id, ranked)| (id.to_string(), ranked)))
            }
        }
        serializer.collect_seq(self.0.iter().map(|place| place.as_deref().map(Place)))
    }
}

/// A token → log-probability object, in the order given (likeliest first).
#[derive(Debug, Clone)]
pub struct TopMap(pub Vec<(String, f32)>);

impl Serialize for TopMap {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(token, logprob)| (token, logprob)))
    }
}

/// `logprobs` of a chat choice or chunk: each answer token's log-probability and the
/// likeliest tokens at its place.
#[derive(Debug, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
    pub refusal: Option<Vec<ChatTokenLogprob>>,
}

#[derive(Debug, Serialize)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    /// The bytes the token stands for (for a piece of a character, where `token` is U+FFFD).
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<ChatTopLogprob>,
}

#[derive(Debug, Serialize)]
pub struct ChatTopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

impl ChatLogprobs {
    pub fn new(tokens: Vec<graft_engine::TokenLogprob>) -> ChatLogprobs {
        let content = tokens
            .into_iter()
            .map(|t| ChatTokenLogprob {
                bytes: t.bytes,
                token: t.token,
                logprob: t.logprob,
                top_logprobs: t
                    .top
                    .into_iter()
                    .map(|top| ChatTopLogprob {
                        bytes: top.bytes,
                        token: top.token,
                        logprob: top.logprob,
                    })
                    .collect(),
            })
            .collect();
        ChatLogprobs { content, refusal: None }
    }
}

/// vLLM's `POST /v1/load_lora_adapter` body.
#[derive(Debug, Deserialize)]
pub struct LoadLoraRequest {
    pub lora_name: String,
    /// A folder in PEFT format; when absent, the adapter store's folder of that name.
    pub lora_path: Option<String>,
}

/// vLLM's `POST /v1/unload_lora_adapter` body.
#[derive(Debug, Deserialize)]
pub struct UnloadLoraRequest {
    pub lora_name: String,
}

/// `stream_options`: with `include_usage`, a last chunk carries the token counts.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// A message as sent by the client.
#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    /// Absent or null for an assistant turn that only called tools.
    pub content: Option<Content>,
    /// An assistant turn's calls of tools.
    pub tool_calls: Option<Vec<ToolCallIn>>,
    /// A `tool` message: the call it answers.
    pub tool_call_id: Option<String>,
    /// A `tool` message: the tool's name (else read from the call it answers).
    pub name: Option<String>,
}

/// A tool call in an earlier assistant turn, as OpenAI's clients send it back.
#[derive(Debug, Deserialize)]
pub struct ToolCallIn {
    pub id: Option<String>,
    pub function: FunctionCallIn,
}

#[derive(Debug, Deserialize)]
pub struct FunctionCallIn {
    pub name: String,
    /// The arguments as JSON text (OpenAI's form); an object is taken too.
    pub arguments: Option<serde_json::Value>,
}

/// A tool call in an answer: whole, or the one delta of a stream that carries it.
#[derive(Debug, Clone, Serialize)]
pub struct ToolCall {
    /// Its place among the answer's calls: set in stream deltas, absent in a whole message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Serialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as JSON text, as OpenAI sends them.
    pub arguments: String,
}

/// Message content: a string, or a list of typed parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// Every answer of a generation route, whole or one event of a stream: `chat.completion`
/// ([`ChatCompletion`]), `chat.completion.chunk` ([`ChatCompletionChunk`]) and
/// `text_completion` ([`TextCompletion`]) differ only in their choices.
#[derive(Debug, Serialize)]
pub struct Envelope<C> {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<C>,
    /// On a whole answer, and on a stream's last event when `stream_options.include_usage`
    /// asks for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// graft's extension: the code the answer was given (project requests; on the first event
    /// of a stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<Source>>,
    /// When the request asked for `debug`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<DebugInfo>,
    /// vLLM's chat `prompt_logprobs`, when the request asked for them (never streamed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<PromptLogprobs>,
}

pub type ChatCompletion = Envelope<ChatChoice>;
pub type ChatCompletionChunk = Envelope<ChunkChoice>;
pub type TextCompletion = Envelope<TextChoice>;

/// What every answer to one request shares: its id, when it was made, and the model name the
/// request used.
#[derive(Debug, Clone)]
pub struct AnswerHead {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl AnswerHead {
    /// A new answer's head; `prefix` is OpenAI's id prefix (`chatcmpl`, `cmpl`).
    pub fn new(prefix: &str, model: String) -> AnswerHead {
        AnswerHead {
            id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
            created: crate::state::unix_now(),
            model,
        }
    }

    /// An answer of kind `object` with these choices and extension fields.
    pub fn envelope<C>(&self, object: &'static str, choices: Vec<C>, usage: Option<Usage>, extras: Extras) -> Envelope<C> {
        Envelope {
            id: self.id.clone(),
            object,
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            sources: extras.sources,
            debug: extras.debug,
            prompt_logprobs: extras.prompt_logprobs,
        }
    }
}

/// graft's extension fields of an answer (on a stream's first event).
#[derive(Debug, Default)]
pub struct Extras {
    pub sources: Option<Vec<Source>>,
    pub debug: Option<DebugInfo>,
    /// Chat's `prompt_logprobs` (a whole answer's).
    pub prompt_logprobs: Option<PromptLogprobs>,
}

#[derive(Debug, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub finish_reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    pub logprobs: Option<ChatLogprobs>,
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    /// Null when the answer is calls of tools.
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    /// As OpenAI and vLLM say it: how much of the prompt the prompt cache supplied.
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Debug, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

impl From<graft_engine::Usage> for Usage {
    fn from(u: graft_engine::Usage) -> Usage {
        Usage {
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: u.cached_tokens,
            },
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    pub logprobs: Option<ChatLogprobs>,
}

#[derive(Debug, Default, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// `GET /v1/models` response.
#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// The model this one is built on (an adapter's base), as vLLM lists LoRA adapters.
    pub parent: Option<String>,
    /// The model this id serves; `root` in vLLM's listing.
    pub root: String,
    /// The longest prompt the model takes, in tokens ([`crate::state::AppState::context_window`]),
    /// under vLLM's name: clients size a conversation by it. None for the embedding model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_model_len: Option<usize>,
    /// llama.cpp's description of the model's file (`n_ctx_train`, `n_vocab`, `n_embd`,
    /// `n_params`, `size`): the base's, for every model built on it. None for the embedding
    /// model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}
