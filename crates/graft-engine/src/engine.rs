//! The engine: one mistralrs instance holding the base model, and generation on it.
//!
//! This module owns loading (offline, from local files only) and the mapping between graft's
//! request types and mistralrs's. It must not know about HTTP or retrieval.

use std::any::Any;
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::Tensor;
use graft_core::Device;
use mistralrs::{
    AnyModelBuilder, Constraint, CustomLogitsProcessor, GgufModelBuilder, NormalRequest, Request, RequestBuilder, RequestMessage, Response,
    SamplingParams, StopTokens, TextMessageRole, TokenSource,
};
use tokio::sync::mpsc;

use crate::error::EngineError;
use crate::facts::{token_id, ModelFacts};
use crate::fim::PromptFormat;
use crate::grammar::{Grammar, Grammars};
use crate::logprobs::{Chooser, Record};
use crate::sampling::{Bias, NoEndBefore, Penalties, SeededSampler};
use crate::stop::{StopIds, StopText};
use crate::tokenizer::Tokenizer;
use crate::types::{
    ChatMessage, ChatRequest, Completion, CompletionRequest, FinishReason, Prompt, Role, Sampling, StopCause, TokenLogprob, Usage,
};

/// What to load as the base model.
#[derive(Debug, Clone)]
pub struct BaseModel {
    /// The id clients use for it.
    pub name: String,
    /// A local GGUF file; its tokenizer and chat template come from its metadata.
    pub gguf: PathBuf,
    /// The file `gguf` was re-stored from (for the CPU, `requantize`), if it was: the name
    /// clients are told ([`Engine::model_file`]).
    pub restored_from: Option<PathBuf>,
    pub device: Device,
    /// Most sequences decoded at once.
    pub max_num_seqs: usize,
    /// Recent prompts whose KV state is kept for reuse by a prompt that starts with one of
    /// them (0: none).
    pub prompt_cache: usize,
    /// The most tokens of a prompt read in one step while other answers decode (a longer one
    /// is read in chunks between their steps; 0: every prompt in one step). mistralrs reads it
    /// process-wide (`PROMPT_PIECE_TOKENS`, vendor/README.md change 18): the engine loaded last
    /// sets it.
    pub prompt_chunk: usize,
    /// The completion prompt format; `None` detects it from the model's vocabulary.
    pub prompt_format: Option<PromptFormat>,
    /// A Jinja chat template file used instead of the one in the GGUF.
    pub chat_template: Option<PathBuf>,
}

impl BaseModel {
    /// A base model on the CPU with the GGUF's own chat template and detected prompt format.
    pub fn cpu(name: impl Into<String>, gguf: impl Into<PathBuf>, max_num_seqs: usize) -> BaseModel {
        BaseModel {
            name: name.into(),
            gguf: gguf.into(),
            restored_from: None,
            device: Device::Cpu,
            max_num_seqs,
            prompt_cache: 4,
            prompt_chunk: graft_core::config::DEFAULT_PROMPT_CHUNK,
            prompt_format: None,
            chat_template: None,
        }
    }
}

/// A loaded base model, ready to generate. Cheap to share behind an `Arc`; requests run
/// concurrently and are batched by mistralrs's scheduler.
pub struct Engine {
    base: BaseModel,
    pub(crate) model: mistralrs::Model,
    format: PromptFormat,
    /// Tokens in the base model's vocabulary, when its GGUF says.
    vocab_size: Option<usize>,
    /// The tokens that end a text ([`Engine::end_tokens`]).
    end_tokens: Arc<[u32]>,
    /// The text of the vocabulary's special tokens, which mistralrs leaves out of the
    /// answer's text: a stop string that is one of them is mistralrs's to find.
    special_tokens: HashSet<String>,
    /// What the base model's file says of it ([`Engine::facts`]).
    facts: Option<ModelFacts>,
    /// The chat template's text as mistralrs read it at load ([`Engine::chat_template`]).
    chat_template: Option<String>,
    /// The base model's tokenizer outside mistralrs, read on the first request that asks for
    /// log-probabilities (their tokens' text); adapters share the base's vocabulary.
    tokenizer: OnceLock<Result<Arc<Tokenizer>, String>>,
    /// Checks requests' grammars against the vocabulary (built on first use).
    grammars: Grammars,
}

/// Texts up to this long are tokenized on the calling thread (well under a millisecond);
/// longer ones on tokio's blocking pool.
const INLINE_TOKENIZE_BYTES: usize = 16 * 1024;

/// Token lists up to this long are decoded on the calling thread; longer ones on tokio's
/// blocking pool.
const INLINE_DETOKENIZE_IDS: usize = 4 * 1024;

impl Engine {
    /// Loads the base model from its GGUF file, without touching the network.
    pub async fn load(base: &BaseModel) -> Result<Engine, EngineError> {
        let path = &base.gguf;
        let builder = gguf_builder(path, base)?;
        mistralrs_core::PROMPT_PIECE_TOKENS.store(base.prompt_chunk, std::sync::atomic::Ordering::Relaxed);
        let (vocabulary, facts) = read_header(path);
        // Read once, as mistralrs reads it at load: a file edited later changes neither.
        let chat_template = match &base.chat_template {
            Some(file) => Some(std::fs::read_to_string(file).map_err(|e| EngineError::Load {
                path: file.clone(),
                message: format!("cannot read the chat template: {e}"),
            })?),
            None => facts.as_ref().and_then(|f| f.chat_template.clone()),
        };
        let format = match base.prompt_format {
            Some(format) => format,
            None => vocabulary.as_ref().map_or(PromptFormat::Continuation, |v| v.format),
        };
        // Read beside the model rather than on the first request, which would wait for it:
        // every chat request looks for special tokens' text in its messages (`crate::literal`).
        let gguf = path.clone();
        let reading = tokio::task::spawn_blocking(move || {
            let tokenizer = Tokenizer::from_gguf(&gguf).map(Arc::new).map_err(|e| e.to_string())?;
            tokenizer.writes_special("");
            Ok(tokenizer)
        });
        let started = Instant::now();
        let model = builder.build().await.map_err(|e| EngineError::Load {
            path: path.clone(),
            message: format!("{e:#}"),
        })?;
        tracing::info!(
            model = %base.name,
            path = %path.display(),
            device = ?base.device,
            seconds = started.elapsed().as_secs_f32(),
            prompt_format = format.name(),
            "base model loaded{}",
            if base.device == Device::Cpu { " on the CPU (PagedAttention, a GPU feature, is not used)" } else { "" }
        );
        let tokenizer = reading.await.unwrap_or_else(|e| Err(format!("reading the tokenizer failed: {e}")));
        Ok(Engine {
            base: base.clone(),
            model,
            format,
            end_tokens: vocabulary.as_ref().map_or_else(|| Arc::from([]), |v| end_tokens(v, format)),
            vocab_size: vocabulary.as_ref().map(|v| v.size),
            special_tokens: vocabulary.map(|v| v.special).unwrap_or_default(),
            facts,
            chat_template,
            tokenizer: OnceLock::from(tokenizer),
            grammars: Grammars::default(),
        })
    }

    /// The id clients use for the base model.
    pub fn name(&self) -> &str {
        &self.base.name
    }

    /// Sends a greedy chat straight through mistralrs's own high-level API on the base model,
    /// bypassing graft's request mapping and streaming: the yardstick `graft bench engine`
    /// measures graft's overhead against. Returns the generated text.
    pub async fn chat_with_mistralrs_directly(&self, prompt: &str, max_tokens: usize) -> Result<String, EngineError> {
        let request = RequestBuilder::new()
            .add_message(TextMessageRole::User, prompt)
            .set_deterministic_sampler()
            .set_sampler_max_len(max_tokens);
        let response = self
            .model
            .send_chat_request(request)
            .await
            .map_err(|e| EngineError::Generation(e.to_string()))?;
        Ok(response
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .unwrap_or_default())
    }

    /// Whether the base model runs on the CPU (set so, or `auto` without a usable GPU).
    pub fn on_cpu(&self) -> bool {
        match self.base.device {
            Device::Cpu => true,
            Device::Cuda => false,
            Device::Auto => !crate::gpu_available(),
        }
    }

    /// The base model's description.
    pub fn base(&self) -> &BaseModel {
        &self.base
    }

    /// The format completion prompts are built in (configured, or detected at load).
    pub fn prompt_format(&self) -> PromptFormat {
        self.format
    }

    /// The ids of the models added next to the base ([`Engine::add_model`]).
    pub fn added_models(&self) -> Vec<String> {
        let base = self.model.inner().get_default_model_id().ok().flatten();
        let mut ids: Vec<String> = self
            .model
            .list_models()
            .unwrap_or_default()
            .into_iter()
            .filter(|id| Some(id) != base.as_ref())
            .collect();
        ids.sort();
        ids
    }

    /// The token ids of `text` in the base model's tokenizer (an adapter shares its base's
    /// vocabulary), with the tokenizer's special tokens (BOS) when `special` is set. Special
    /// tokens written in the text are recognised as such.
    ///
    /// Tokenized here, by graft's copy of the tokenizer mistralrs built from the same GGUF (the
    /// same ids: `tokenize_in_mistralrs` is the yardstick in the tests), not by mistralrs's
    /// engine, which takes a request only between two decoding steps: a prompt laid out while
    /// others generate counts its parts many times, and each count waited a step. Long texts
    /// are tokenized off the async threads.
    pub async fn tokenize(&self, text: &str, special: bool) -> Result<Vec<u32>, EngineError> {
        if text.len() <= INLINE_TOKENIZE_BYTES {
            return self.tokenizer()?.encode_with(text, special);
        }
        let text = text.to_owned();
        self.off_thread("tokenize", move |tokenizer| tokenizer.encode_with(&text, special))
            .await
    }

    /// [`Engine::tokenize`] as mistralrs's engine does it: for tests that check graft's
    /// tokenizer against it.
    #[doc(hidden)]
    pub async fn tokenize_in_mistralrs(&self, text: &str, special: bool) -> Result<Vec<u32>, EngineError> {
        self.model
            .tokenize(either::Either::Right(text.to_owned()), None, special, false, None)
            .await
            .map_err(|e| EngineError::Generation(format!("cannot tokenize: {e}")))
    }

    /// A conversation through the chat template, tokenized by mistralrs's engine: for tests
    /// that check [`Engine::chat_prompt`] against it.
    #[doc(hidden)]
    pub async fn chat_prompt_in_mistralrs(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        self.model
            .tokenize(either::Either::Left(crate::turn::text_messages(messages)), None, true, true, None)
            .await
            .map_err(|e| EngineError::Generation(format!("cannot tokenize: {e}")))
    }

    /// A conversation as the base model's chat template lays it out, with the assistant's
    /// turn opened: the token ids a chat request feeds the model.
    /// ([`Engine::chat_prompt_ending`] ends it otherwise.)
    pub async fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        self.chat_prompt_ending(messages, crate::Turn::Open).await
    }

    /// The text of token ids, special tokens written out (an adapter shares its base's
    /// vocabulary). Decoded by graft's copy of the tokenizer, as [`Engine::tokenize`] encodes:
    /// mistralrs's engine decodes under the lock its decoding steps hold. Long lists are
    /// decoded off the async threads.
    pub async fn detokenize(&self, tokens: Vec<u32>) -> Result<String, EngineError> {
        if tokens.len() <= INLINE_DETOKENIZE_IDS {
            return self.tokenizer()?.decode(&tokens);
        }
        self.off_thread("detokenize", move |tokenizer| tokenizer.decode(&tokens)).await
    }

    /// `work` on graft's copy of the tokenizer, on tokio's blocking pool (a long text or list,
    /// kept off the async threads); `what` names it in an error.
    async fn off_thread<T: Send + 'static>(
        &self,
        what: &str,
        work: impl FnOnce(&Tokenizer) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let tokenizer = self.tokenizer()?;
        tokio::task::spawn_blocking(move || work(&tokenizer))
            .await
            .map_err(|e| EngineError::Generation(format!("cannot {what}: {e}")))?
    }

    /// [`Engine::detokenize`] as mistralrs's engine does it: for tests that check graft's
    /// tokenizer against it.
    #[doc(hidden)]
    pub async fn detokenize_in_mistralrs(&self, tokens: Vec<u32>) -> Result<String, EngineError> {
        self.model
            .detokenize_with_model(tokens, false, None)
            .await
            .map_err(|e| EngineError::Generation(format!("cannot detokenize: {e}")))
    }

    /// The base model's GGUF file as configured: the one a re-stored copy was made from,
    /// where graft serves one.
    pub fn model_file(&self) -> &Path {
        self.base.restored_from.as_deref().unwrap_or(&self.base.gguf)
    }

    /// What the base model's GGUF file says of it (architecture, parameters, storage type),
    /// when its header could be read.
    pub fn facts(&self) -> Option<&ModelFacts> {
        self.facts.as_ref()
    }

    /// The Jinja template chats are laid out with: `model.chat_template`'s file when set, else
    /// the GGUF file's own (`None`: neither; mistralrs then refuses chats). Read once, at load.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The longest sequence (prompt and completion, in tokens) the base model takes.
    pub fn context_length(&self) -> Option<usize> {
        self.model.max_sequence_length().ok().flatten()
    }

    /// Loads another GGUF model (a merged adapter) into the same engine, next to the base, on
    /// the base's device; requests reach it with [`Engine::chat_stream_on`] and `id`.
    pub(crate) async fn add_model(&self, id: &str, gguf: &Path) -> Result<(), EngineError> {
        let builder = gguf_builder(gguf, &self.base)?;
        let load_error = |e: &dyn std::fmt::Display| EngineError::Load {
            path: gguf.to_owned(),
            message: e.to_string(),
        };
        let started = Instant::now();
        let (pipeline, scheduler, config) = AnyModelBuilder::Gguf(builder)
            .build_pipeline()
            .await
            .map_err(|e| load_error(&format!("{e:#}")))?;
        self.model
            .add_model(id.to_owned(), pipeline, scheduler, config)
            .await
            .map_err(|e| load_error(&e))?;
        tracing::info!(model = id, path = %gguf.display(), seconds = started.elapsed().as_secs_f32(), "model added");
        Ok(())
    }

    /// Removes a model added with [`Engine::add_model`]. Requests already running on it finish.
    pub(crate) fn remove_model(&self, id: &str) -> Result<(), EngineError> {
        // mistralrs's removal uses a blocking send, which must not run on an async worker
        // thread: it runs on a plain thread of its own.
        std::thread::scope(|scope| {
            scope
                .spawn(|| self.model.remove_model(id))
                .join()
                .map_err(|_| EngineError::Generation(format!("removing model {id} panicked")))?
                .map_err(|e| EngineError::Generation(format!("cannot remove model {id}: {e}")))
        })
    }

    /// Generates the assistant's reply to a conversation, all at once. Built on
    /// [`Engine::chat_stream`], so dropping the future (a client that went away) stops the
    /// generation too.
    pub async fn chat(&self, request: ChatRequest) -> Result<Completion, EngineError> {
        self.chat_on(None, request).await
    }

    /// Like [`Engine::chat`], on the model added as `model` (`None`: the base).
    pub(crate) async fn chat_on(&self, model: Option<&str>, request: ChatRequest) -> Result<Completion, EngineError> {
        self.chat_stream_on(model, request).await?.collect().await
    }

    /// Starts generating the assistant's reply on the base model; text arrives as it is decoded.
    pub async fn chat_stream(&self, request: ChatRequest) -> Result<TokenStream, EngineError> {
        self.chat_stream_on(None, request).await
    }

    /// Like [`Engine::chat_stream`], on the model added as `model` (`None`: the base). The
    /// conversation is laid out by the base model's chat template ([`Engine::chat_prompt`]) and
    /// the model reads exactly those tokens.
    pub(crate) async fn chat_stream_on(&self, model: Option<&str>, request: ChatRequest) -> Result<TokenStream, EngineError> {
        if request.messages.is_empty() {
            return Err(EngineError::InvalidRequest("`messages` must not be empty".into()));
        }
        let tokens = self.chat_prompt(&request.messages).await?;
        self.send(model, tokens, &request.sampling).await
    }

    /// Starts generating a continuation of a raw prompt on `model` (`None`: the base).
    pub(crate) async fn complete_stream_on(&self, model: Option<&str>, request: CompletionRequest) -> Result<TokenStream, EngineError> {
        let tokens = match request.prompt {
            Prompt::Text(text) => self.tokenize(&text, true).await?,
            Prompt::Tokens(tokens) => {
                self.check_token_ids("prompt", &tokens)?;
                tokens
            }
        };
        if tokens.is_empty() {
            return Err(EngineError::InvalidRequest("`prompt` must not be empty".into()));
        }
        self.send(model, tokens, &request.sampling).await
    }

    /// Tokens in the base model's vocabulary, when its GGUF says (adapters share it).
    pub fn vocab_size(&self) -> Option<usize> {
        self.vocab_size
    }

    /// A list of token ids (a request's `field`) may only hold ids of the vocabulary (an error
    /// names the first that is not, as `field[i]`).
    pub fn check_token_ids(&self, field: &str, tokens: &[u32]) -> Result<(), EngineError> {
        let Some(size) = self.vocab_size else {
            return Ok(());
        };
        match tokens.iter().position(|&t| t as usize >= size) {
            None => Ok(()),
            Some(i) => Err(EngineError::InvalidRequest(format!(
                "`{field}[{i}]` is token id {}, outside the model's vocabulary of {size} tokens (ids 0 to {})",
                tokens[i],
                size - 1
            ))),
        }
    }

    /// The tokens that end a text, which `min_tokens` holds back: the GGUF's end-of-text,
    /// end-of-turn and end-of-message ids, the end-of-turn tokens of the chat formats
    /// mistralrs stops at (`<|im_end|>`, `<|eot_id|>`, ...), and the prompt format's own
    /// stop tokens, those of them the vocabulary has (adapters share it).
    pub fn end_tokens(&self) -> &[u32] {
        &self.end_tokens
    }

    /// The base model's tokenizer outside mistralrs (read once, on first use): each token's
    /// own text and bytes. Adapters share it.
    pub fn tokenizer(&self) -> Result<Arc<Tokenizer>, EngineError> {
        self.tokenizer
            .get_or_init(|| Tokenizer::from_gguf(&self.base.gguf).map(Arc::new).map_err(|e| e.to_string()))
            .clone()
            .map_err(|e| EngineError::Generation(format!("cannot read the tokenizer: {e}")))
    }

    /// Whether `grammar` can constrain this model's answers: llguidance compiles it against the
    /// vocabulary as mistralrs will. A request sent with a grammar that cannot is refused inside
    /// the engine, where the error can only end its stream; check first to answer the caller.
    pub fn check_grammar(&self, grammar: &Grammar) -> Result<(), EngineError> {
        self.grammars.check(grammar, || self.tokenizer())
    }

    /// Hands `request` to mistralrs for the model added as `model` (`None`: the base).
    pub(crate) async fn submit(&self, model: Option<&str>, request: NormalRequest) -> Result<(), EngineError> {
        let sender = self.model.inner().get_sender(model).map_err(|e| match model {
            Some(id) => EngineError::UnknownModel(format!("{id}: {e}")),
            None => EngineError::Generation(e.to_string()),
        })?;
        sender
            .send(Request::Normal(Box::new(request)))
            .await
            .map_err(|_| EngineError::Generation("the engine is not running".into()))
    }

    /// Sends one request (its prompt as token ids) to mistralrs and returns the stream of its
    /// answer.
    async fn send(&self, model: Option<&str>, tokens: Vec<u32>, sampling: &Sampling) -> Result<TokenStream, EngineError> {
        let prompt_tokens = tokens.len();
        let generated = Arc::new(AtomicUsize::new(0));
        // The record names every token chosen: for the log-probabilities, and for the stop
        // tokens (a chunk of text names only its last token).
        let record = match sampling.logprobs.is_some() || !sampling.stop_token_ids.is_empty() {
            true => Some((Arc::new(Record::default()), self.tokenizer()?)),
            false => None,
        };
        if sampling.min_tokens > 0 && sampling.grammar.is_some() {
            return Err(EngineError::InvalidRequest(
                "min_tokens and ignore_eos cannot be used with structured output or tools: the answer ends when its grammar is complete"
                    .into(),
            ));
        }
        let ends = Ends {
            tokens: &self.end_tokens,
            format_stops: self.format.stop_sequences(),
            special: &self.special_tokens,
        };
        let (sampling_params, mut processors) = sampling_params(sampling, prompt_tokens, ends, record.clone());
        // The counter goes first, so it sees every sampled token whatever the others do.
        processors.insert(
            0,
            Arc::new(TokenCounter {
                generated: Arc::clone(&generated),
                prompt_tokens,
            }),
        );
        // A reader that is gone fails mistralrs's next send, which cancels the sequence. The
        // buffer is deep so that one slow reader does not hold up the whole batch (mistralrs
        // awaits each send inside its decoding step).
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let normal = NormalRequest {
            messages: RequestMessage::CompletionTokens(tokens),
            sampling_params,
            response: tx,
            // Each text chunk then names the token it was sent for (see `logprobs`).
            return_logprobs: record.is_some(),
            is_streaming: true,
            id: 0,
            constraint: sampling.grammar.as_ref().map_or(Constraint::None, Grammar::constraint),
            suffix: None,
            tools: None,
            tool_choice: None,
            logits_processors: Some(processors),
            return_raw_logits: false,
            web_search_options: None,
            model_id: model.map(str::to_owned),
            truncate_sequence: false,
        };
        self.submit(model, normal).await?;
        Ok(TokenStream {
            rx,
            end: None,
            finished: false,
            prompt_tokens,
            generated,
            max_tokens: sampling.max_tokens,
            guard: None,
            logprobs: record.map(|(record, _)| Handout {
                record,
                handed: 0,
                waiting: VecDeque::new(),
                wanted: sampling.logprobs.is_some(),
            }),
            stops: StopText::new(&sampling.stop, sampling.include_stop),
            stop_ids: StopIds::new(&sampling.stop_token_ids, sampling.include_stop),
            received: 0,
            sent: 0,
            cached: 0,
            cached_before: None,
        })
    }
}

/// Counts the tokens a generation samples: mistralrs calls each of a request's logits
/// processors before it samples a token, with the sequence so far (the prompt, then the
/// answer's tokens). The count is the answer's `completion_tokens`, and tells a generation cut
/// by `max_tokens` from one that ended by itself. It is read from the context's length, not
/// from the number of calls: a step that a grammar makes sample again calls the processors
/// twice for one token.
struct TokenCounter {
    generated: Arc<AtomicUsize>,
    prompt_tokens: usize,
}

impl CustomLogitsProcessor for TokenCounter {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> candle_core::Result<Tensor> {
        let position = context.len().saturating_sub(self.prompt_tokens);
        self.generated.fetch_max(position + 1, Ordering::Relaxed);
        Ok(logits.clone())
    }
}

impl TokenStream {
    /// Reads the stream to its end: the whole text, why it ended, and the token counts.
    pub async fn collect(mut self) -> Result<Completion, EngineError> {
        let mut collector = Collector::default();
        while let Some(event) = self.next().await {
            if let Some(done) = collector.push(event?) {
                return Ok(done);
            }
        }
        Err(Collector::unfinished())
    }
}

/// Puts a stream's events together into one [`Completion`].
#[derive(Debug, Default)]
pub struct Collector {
    text: String,
    logprobs: Option<Vec<TokenLogprob>>,
}

impl Collector {
    /// Takes the next event; the whole completion once the stream has ended.
    pub fn push(&mut self, event: StreamEvent) -> Option<Completion> {
        match event {
            StreamEvent::Text { text, logprobs } => {
                self.text.push_str(&text);
                if let Some(logprobs) = logprobs {
                    self.logprobs.get_or_insert_with(Vec::new).extend(logprobs);
                }
                None
            }
            StreamEvent::End {
                finish_reason,
                stopped_by,
                usage,
            } => Some(Completion {
                text: std::mem::take(&mut self.text),
                finish_reason,
                stopped_by,
                usage,
                logprobs: self.logprobs.take(),
            }),
        }
    }

    /// The error for a stream that stopped without its end.
    pub fn unfinished() -> EngineError {
        EngineError::Generation("the generation ended without a finish reason".into())
    }
}

pub(crate) fn text_role(role: Role) -> TextMessageRole {
    match role {
        Role::System => TextMessageRole::System,
        Role::User => TextMessageRole::User,
        Role::Assistant => TextMessageRole::Assistant,
    }
}

/// Chunks a generation may run ahead of its reader.
const STREAM_BUFFER: usize = 256;

/// What a [`TokenStream`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// More text; with its tokens' log-probabilities when the request asked for them (the
    /// tokens whose text this is, or ends).
    Text { text: String, logprobs: Option<Vec<TokenLogprob>> },
    /// The generation is over; `stopped_by` names the request's stop string or token that
    /// ended it.
    End {
        finish_reason: FinishReason,
        stopped_by: Option<StopCause>,
        usage: Usage,
    },
}

/// A generation in progress. Dropping it cancels the generation.
pub struct TokenStream {
    rx: mpsc::Receiver<Response>,
    /// The end, held back while the last chunk's text is handed out.
    end: Option<StreamEvent>,
    /// The end has been handed out.
    finished: bool,
    prompt_tokens: usize,
    /// Tokens sampled so far ([`TokenCounter`]).
    generated: Arc<AtomicUsize>,
    max_tokens: usize,
    /// Kept alive as long as the stream (the model pool's lease on the model it runs on).
    guard: Option<Box<dyn Any + Send + Sync>>,
    /// The record of the chosen tokens, when the request asked for their log-probabilities
    /// or gave stop tokens.
    logprobs: Option<Handout>,
    /// The request's stop strings, matched on the text (`stop`).
    stops: Option<StopText>,
    /// The request's stop tokens (`stop_token_ids`), matched on the record.
    stop_ids: Option<StopIds>,
    /// Bytes of answer text received from mistralrs, and handed out.
    received: usize,
    sent: usize,
    /// Prompt tokens the prefix cache supplied, as mistralrs's chunks say.
    cached: usize,
    /// Prompt tokens earlier requests had cached, when the request read its prompt ahead of
    /// this stream ([`TokenStream::read_ahead`]): reported instead of `cached`.
    cached_before: Option<usize>,
}

/// Where a stream is in handing out its [`Record`]'s entries.
struct Handout {
    record: Arc<Record>,
    /// Entries before this position have been matched to text.
    handed: usize,
    /// Entries of chunks whose text has not been handed out yet, each with the offset in the
    /// answer's text where its chunk's text starts (a chunk with no text of its own, such as
    /// the first piece of a character, or text held back by a stop string's start): they go
    /// out with the text that begins their chunk.
    waiting: VecDeque<(usize, Vec<TokenLogprob>)>,
    /// The request asked for the log-probabilities (not only for stop tokens).
    wanted: bool,
}

impl Handout {
    /// Takes in a chunk mistralrs sent for token `id`, whose text starts at `start` in the
    /// answer's text; returns the ids of the tokens the chunk's text is of.
    fn chunk_for(&mut self, id: Option<u32>, start: usize) -> Vec<u32> {
        let Some((entries, next)) = id.and_then(|id| self.record.through(self.handed, id)) else {
            return Vec::new();
        };
        self.handed = next;
        let ids = entries.iter().map(|e| e.id).collect();
        if self.wanted && !entries.is_empty() {
            self.waiting.push_back((start, entries));
        }
        ids
    }

    /// The entries of the chunks whose text starts before `offset` (`None` when the request
    /// did not ask for them).
    fn before(&mut self, offset: usize) -> Option<Vec<TokenLogprob>> {
        if !self.wanted {
            return None;
        }
        let mut entries = Vec::new();
        while self.waiting.front().is_some_and(|(start, _)| *start < offset) {
            if let Some((_, mut chunk)) = self.waiting.pop_front() {
                entries.append(&mut chunk);
            }
        }
        Some(entries)
    }
}

impl TokenStream {
    /// Prompt tokens the prompt cache supplied (known once the first text has come): those
    /// earlier requests had cached, for a stream whose prompt was read ahead.
    pub fn cached_tokens(&self) -> usize {
        self.cached_before.unwrap_or(self.cached).min(self.prompt_tokens)
    }

    /// Prompt tokens this stream's sequence read itself, the rest having come from the
    /// prompt cache (known once the first text has come).
    pub fn prompt_tokens_read(&self) -> usize {
        self.prompt_tokens - self.cached.min(self.prompt_tokens)
    }

    /// Says that the request read this stream's prompt ahead of it, finding `cached_before`
    /// of its tokens in the prompt cache then ([`crate::Pool::complete_choices`]): its usage
    /// reports those as the cached tokens, not the ones the read ahead left for it.
    pub fn read_ahead(mut self, cached_before: usize) -> TokenStream {
        self.cached_before = Some(cached_before);
        self
    }

    /// Keeps `guard` alive until the stream is dropped.
    pub fn hold(mut self, guard: impl Any + Send + Sync) -> TokenStream {
        self.guard = Some(Box::new(guard));
        self
    }

    /// The next piece of text, then [`StreamEvent::End`], then `None`.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, EngineError>> {
        if let Some(end) = self.end.take() {
            return Some(Ok(end));
        }
        if self.finished {
            return None;
        }
        loop {
            let Some(response) = self.rx.recv().await else {
                // mistralrs sends no last chunk when a generation ends inside a character that
                // takes several tokens (an emoji cut by `max_tokens`): every character before
                // it has been handed out, and the end is told here.
                self.finished = true;
                let generated = self.generated.load(Ordering::Relaxed);
                let reason = if generated >= self.max_tokens {
                    FinishReason::Length
                } else {
                    FinishReason::Stop
                };
                tracing::debug!(generated, "the generation ended inside a character; its last bytes are left out");
                let end = self.end_event(reason, None);
                // Text a stop string's start held back is the answer's end.
                let text = self.stops.as_mut().map(StopText::flush).unwrap_or_default();
                if text.is_empty() {
                    return Some(Ok(end));
                }
                self.end = Some(end);
                self.sent += text.len();
                let logprobs = self.logprobs.as_mut().and_then(|h| h.before(self.sent));
                return Some(Ok(StreamEvent::Text { text, logprobs }));
            };
            let (text, reason, logprob) = match response {
                Response::CompletionChunk(chunk) => {
                    self.cached = self.cached.max(chunk.prompt_cached_tokens);
                    let Some(choice) = chunk.choices.into_iter().next() else {
                        continue;
                    };
                    (choice.text, choice.finish_reason, choice.logprobs)
                }
                Response::Chunk(chunk) => {
                    let Some(choice) = chunk.choices.into_iter().next() else {
                        continue;
                    };
                    (choice.delta.content.unwrap_or_default(), choice.finish_reason, choice.logprobs)
                }
                Response::ValidationError(e) => return Some(Err(EngineError::InvalidRequest(e.to_string()))),
                Response::InternalError(e) => return Some(Err(EngineError::Generation(e.to_string()))),
                Response::ModelError(message, _) | Response::CompletionModelError(message, _) => {
                    return Some(Err(EngineError::Generation(message)))
                }
                other => {
                    return Some(Err(EngineError::Generation(format!(
                        "unexpected response from the engine: {}",
                        response_kind(&other)
                    ))))
                }
            };
            // mistralrs's own log-probabilities are of the one token graft's chooser left
            // possible: its single entry names the token this chunk was sent for.
            let chunk_ids = match &mut self.logprobs {
                Some(handout) => handout.chunk_for(logprob.and_then(|l| l.top_logprobs.first().map(|t| t.token)), self.received),
                None => Vec::new(),
            };
            self.received += text.len();
            let (text, by_token) = match &self.stop_ids {
                Some(stop_ids) => stop_ids.cut(&chunk_ids, text),
                None => (text, None),
            };
            let (mut text, by_text) = match &mut self.stops {
                Some(stops) => stops.push(&text),
                None => (text, None),
            };
            // A stop string or token: the answer ends there, whatever mistralrs goes on to.
            let stopped_by = by_text.map(StopCause::Text).or(by_token.map(StopCause::Token));
            let reason = match (&stopped_by, reason) {
                (Some(_), _) => Some(FinishReason::Stop),
                (None, reason) => reason.map(|r| finish_reason(&r)),
            };
            if reason.is_some() {
                // Text a stop string's start held back is the answer's end (nothing is held
                // once a stop string has matched).
                if let Some(stops) = &mut self.stops {
                    text.push_str(&stops.flush());
                }
            }
            self.sent += text.len();
            if let Some(reason) = reason {
                // The receiver is not read again: the sequence is over (closing it cancels a
                // sequence a stop ended).
                self.rx.close();
                self.finished = true;
                let end = self.end_event(reason, stopped_by);
                if text.is_empty() {
                    return Some(Ok(end));
                }
                self.end = Some(end);
            }
            if !text.is_empty() {
                let logprobs = self.logprobs.as_mut().and_then(|h| h.before(self.sent));
                return Some(Ok(StreamEvent::Text { text, logprobs }));
            }
        }
    }

    /// Ends the answer here: the caller found one of the request's stops in what it reads the
    /// text into (chat's tool replies match stop strings on a reply's words, never inside its
    /// JSON). The sequence is cancelled, and the end is returned with the tokens sampled so
    /// far; nothing more is handed out.
    pub fn stop(&mut self, cause: StopCause) -> StreamEvent {
        self.rx.close();
        self.finished = true;
        self.end = None;
        self.end_event(FinishReason::Stop, Some(cause))
    }

    fn end_event(&self, finish_reason: FinishReason, stopped_by: Option<StopCause>) -> StreamEvent {
        StreamEvent::End {
            finish_reason,
            stopped_by,
            usage: Usage {
                prompt_tokens: self.prompt_tokens,
                cached_tokens: self.cached_tokens(),
                // Never more than asked for: mistralrs 0.8.1 sampled one token past a
                // sequence its prompt step had finished (fixed in vendor/mistralrs-core,
                // `engine/mod.rs`), and such a token's text is never handed out.
                completion_tokens: self.generated.load(Ordering::Relaxed).min(self.max_tokens),
            },
        }
    }
}

fn response_kind(response: &Response) -> &'static str {
    match response {
        Response::Done(_) => "a finished chat",
        Response::CompletionDone(_) => "a finished completion",
        _ => "a non-text response",
    }
}

/// A mistralrs builder for a local GGUF file, on the base model's device.
fn gguf_builder(path: &Path, base: &BaseModel) -> Result<GgufModelBuilder, EngineError> {
    if !path.is_file() {
        // mistralrs would take a missing local path for a Hugging Face id and try the
        // network; graft never lets it.
        return Err(EngineError::ModelMissing { path: path.to_owned() });
    }
    let (dir, file) = split_path(path)?;
    let mut builder = GgufModelBuilder::new(dir, vec![file])
        .with_token_source(TokenSource::None)
        .with_max_num_seqs(base.max_num_seqs)
        // mistralrs's prefix cache, with graft's fixes (vendor/README.md): one per model, so
        // a replaced adapter never reads another version's prompts.
        .with_prefix_cache_n((base.prompt_cache > 0).then_some(base.prompt_cache));
    if let Some(template) = &base.chat_template {
        if !template.is_file() {
            return Err(EngineError::Load {
                path: path.to_owned(),
                message: format!("the chat template {} does not exist", template.display()),
            });
        }
        builder = builder.with_jinja_explicit(template.display().to_string());
    }
    Ok(match base.device {
        Device::Cpu => builder.with_force_cpu(),
        // A CUDA build asks for a GPU through libraries that panic when absent: "auto" is the
        // CPU on a machine without them.
        Device::Auto if crate::gpu_available() => builder,
        Device::Auto => builder.with_force_cpu(),
        Device::Cuda => {
            if !cfg!(feature = "cuda") {
                return Err(EngineError::Device(
                    "model.device = \"cuda\" needs graft built with `--features cuda`".into(),
                ));
            }
            graft_core::cuda::check_libraries().map_err(|why| EngineError::Device(format!("model.device = \"cuda\": {why}")))?;
            let device = mistralrs::Device::new_cuda(0).map_err(|e| EngineError::Device(format!("no usable CUDA device: {e}")))?;
            builder.with_device(device)
        }
    })
}

fn split_path(path: &Path) -> Result<(String, String), EngineError> {
    let invalid = || EngineError::Load {
        path: path.to_owned(),
        message: "the path must be a file name in a folder, in UTF-8".into(),
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file = path.file_name().and_then(|f| f.to_str()).ok_or_else(invalid)?;
    let dir = dir.to_str().ok_or_else(invalid)?;
    Ok((dir.to_owned(), file.to_owned()))
}

/// What ends a model's texts: its end tokens ([`Engine::end_tokens`]), its prompt format's
/// stop sequences, and its special tokens (neither ever in the answer's text).
struct Ends<'a> {
    tokens: &'a Arc<[u32]>,
    format_stops: &'static [&'static str],
    special: &'a HashSet<String>,
}

/// mistralrs's sampling parameters for `s` (a prompt of `prompt_tokens`), and the logits
/// processors that apply graft's penalties, `min_tokens` (holding back the end tokens), seeded
/// sampling and log-probabilities; `record` (with the tokenizer for the tokens' text) when
/// the request asked for log-probabilities.
fn sampling_params(
    s: &Sampling,
    prompt_tokens: usize,
    ends: Ends<'_>,
    record: Option<(Arc<Record>, Arc<Tokenizer>)>,
) -> (SamplingParams, Vec<Arc<dyn CustomLogitsProcessor>>) {
    // Greedy unless a temperature is given. A sampled request stays greedy in mistralrs and
    // graft's processor chooses each token (`sampling`: the request's seed, or one of its
    // own), so top-k, top-p and min-p mean one thing whether seeded or not (mistralrs's own
    // sampler skips min-p without top-p); with log-probabilities, the recording processor
    // chooses (`logprobs`).
    let mut params = SamplingParams::deterministic();
    let mut processors: Vec<Arc<dyn CustomLogitsProcessor>> = Vec::new();
    if s.frequency_penalty != 0.0 || s.presence_penalty != 0.0 || s.repetition.is_some() {
        processors.push(Arc::new(Penalties {
            frequency: s.frequency_penalty as f32,
            presence: s.presence_penalty as f32,
            repetition: s.repetition,
            prompt_tokens,
        }));
    }
    if !s.logit_bias.is_empty() {
        processors.push(Arc::new(Bias(s.logit_bias.clone())));
    }
    if s.min_tokens > 0 {
        // The request's stop tokens are held back too, as vLLM does.
        let held: Arc<[u32]> = match s.stop_token_ids.is_empty() {
            true => Arc::clone(ends.tokens),
            false => {
                let mut held: Vec<u32> = ends.tokens.iter().chain(&s.stop_token_ids).copied().collect();
                held.sort_unstable();
                held.dedup();
                held.into()
            }
        };
        if !held.is_empty() {
            processors.push(Arc::new(NoEndBefore {
                min_tokens: s.min_tokens,
                ends: held,
                prompt_tokens,
            }));
        }
    }
    // Without a seed, a seed of its own: still one draw per request.
    let sampler = (s.temperature > 0.0).then(|| SeededSampler {
        seed: s.seed.unwrap_or_else(fresh_seed),
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        min_p: s.min_p,
    });
    match (record, sampler) {
        (Some((record, tokenizer)), sampler) => {
            processors.push(Arc::new(Chooser {
                sampler,
                top: s.logprobs.unwrap_or(0),
                prompt_tokens,
                record,
                tokenizer,
            }));
            // The chunk's entry then names the token it was sent for.
            params.top_n_logprobs = 1;
        }
        (None, Some(sampler)) => processors.push(Arc::new(sampler)),
        (None, None) => {}
    }
    params.max_len = Some(s.max_tokens);
    // graft's `stop` matches the stop strings on the text (`stop`), and so knows which one
    // ended the answer. Special tokens are never in the text: a stop string that is one (the
    // prompt format's own, `<|endoftext|>` from an editor plugin) goes to mistralrs, which
    // stops at the token.
    let stops: Vec<String> = s
        .stop
        .iter()
        .filter(|stop| ends.format_stops.contains(&stop.as_str()) || ends.special.contains(stop.as_str()))
        .cloned()
        .collect();
    if !stops.is_empty() {
        params.stop_toks = Some(StopTokens::Seqs(stops));
    }
    (params, processors)
}

/// What a GGUF model's vocabulary says: its size, the prompt format its special tokens
/// speak, the ids its metadata names as ends, and the tokens' text.
struct Vocabulary {
    size: usize,
    format: PromptFormat,
    /// `tokenizer.ggml.eos_token_id`, `eot_token_id` and `eom_token_id`, those given.
    end_ids: Vec<u32>,
    tokens: Vec<String>,
    /// The special tokens' text, as mistralrs reads the GGUF's tokenizer: every token whose
    /// `tokenizer.ggml.token_type` is not normal (1), and the beginning, end and unknown
    /// tokens.
    special: HashSet<String>,
}

/// End-of-turn tokens of the chat formats, which mistralrs stops at when a template uses
/// them (its `SUPPORTED_ALTERNATE_EOS`).
const CHAT_ENDS: [&str; 8] = [
    "<|im_end|>",
    "<end_of_turn>",
    "<|end_of_text|>",
    "<|end|>",
    "<|eot_id|>",
    "<|message|>",
    "<|start|>",
    "<|channel|>",
];

/// [`Engine::end_tokens`] of a vocabulary read in `format`: SentencePiece vocabularies
/// spell some special tokens with a leading `▁` (CodeLlama's `▁<EOT>`).
fn end_tokens(vocabulary: &Vocabulary, format: PromptFormat) -> Arc<[u32]> {
    let named = |token: &str| {
        let token = token.strip_prefix('▁').unwrap_or(token);
        CHAT_ENDS.contains(&token) || format.stop_sequences().contains(&token)
    };
    let mut ends: Vec<u32> = vocabulary
        .tokens
        .iter()
        .enumerate()
        .filter(|(_, token)| named(token))
        .map(|(id, _)| id as u32)
        .chain(vocabulary.end_ids.iter().copied().filter(|&id| (id as usize) < vocabulary.size))
        .collect();
    ends.sort_unstable();
    ends.dedup();
    ends.into()
}

/// The base GGUF file's header, read once: its vocabulary and what it says of the model.
fn read_header(path: &Path) -> (Option<Vocabulary>, Option<ModelFacts>) {
    let read = || -> Result<gguf_file::Content, String> {
        let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(|e| e.to_string())?);
        gguf_file::Content::read(&mut file).map_err(|e| e.to_string())
    };
    let warn = |e: String| {
        tracing::warn!(path = %path.display(), "cannot read the vocabulary ({e}); completion prompts use the continuation format");
    };
    match read() {
        Ok(content) => (vocabulary(&content).map_err(warn).ok(), Some(ModelFacts::read(&content, path))),
        Err(e) => {
            warn(e);
            (None, None)
        }
    }
}

fn vocabulary(content: &gguf_file::Content) -> Result<Vocabulary, String> {
    {
        let tokens = match content.metadata.get("tokenizer.ggml.tokens") {
            Some(gguf_file::Value::Array(tokens)) => tokens,
            _ => return Err("no tokenizer.ggml.tokens".into()),
        };
        let tokens: Vec<String> = tokens.iter().map(|t| t.to_string().cloned().unwrap_or_default()).collect();
        let id_of = |name: &str| token_id(content, name);
        let end_ids: Vec<u32> = ["eos", "eot", "eom"].into_iter().filter_map(id_of).collect();
        let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
            Some(gguf_file::Value::Array(types)) => types.iter().map(|t| t.to_i32().unwrap_or(1)).collect(),
            _ => Vec::new(),
        };
        let typed_special = (types.len() == tokens.len())
            .then(|| {
                tokens
                    .iter()
                    .zip(&types)
                    .filter(|(_, &kind)| kind != 1)
                    .map(|(token, _)| token.clone())
            })
            .into_iter()
            .flatten();
        let named_special = ["bos", "eos", "unknown"]
            .into_iter()
            .filter_map(id_of)
            .filter_map(|id| tokens.get(id as usize).cloned());
        let special = typed_special.chain(named_special).collect();
        Ok(Vocabulary {
            size: tokens.len(),
            format: PromptFormat::detect(tokens.iter().map(String::as_str)),
            end_ids,
            tokens,
            special,
        })
    }
}

/// A seed no other request shares (std's hasher keys are drawn from the OS at random).
fn fresh_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now())
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "length" => FinishReason::Length,
        _ => FinishReason::Stop,
    }
}
