//! The engine: one mistralrs instance holding the base model, and generation on it.
//!
//! This module owns loading (offline, from local files only) and the mapping between graft's
//! request types and mistralrs's. It must not know about HTTP or retrieval.

use std::path::{Path, PathBuf};
use std::time::Instant;

use graft_core::Device;
use mistralrs::{
    AnyModelBuilder, Constraint, GgufModelBuilder, NormalRequest, Request, RequestBuilder, RequestLike, Response, StopTokens,
    TextMessageRole, TokenSource,
};
use tokio::sync::mpsc;

use crate::error::EngineError;
use crate::types::{ChatMessage, ChatRequest, Completion, FinishReason, Role, Usage};

/// What to load as the base model.
#[derive(Debug, Clone)]
pub struct BaseModel {
    /// The id clients use for it.
    pub name: String,
    /// A local GGUF file; its tokenizer and chat template come from its metadata.
    pub gguf: PathBuf,
    pub device: Device,
    /// Most sequences decoded at once.
    pub max_num_seqs: usize,
}

/// A loaded base model, ready to generate. Cheap to share behind an `Arc`; requests run
/// concurrently and are batched by mistralrs's scheduler.
pub struct Engine {
    base: BaseModel,
    model: mistralrs::Model,
}

impl Engine {
    /// Loads the base model from its GGUF file, without touching the network.
    pub async fn load(base: &BaseModel) -> Result<Engine, EngineError> {
        let path = &base.gguf;
        let builder = gguf_builder(path, base)?;
        let started = Instant::now();
        let model = builder.build().await.map_err(|e| EngineError::Load {
            path: path.clone(),
            message: format!("{e:#}"),
        })?;
        tracing::info!(
            model = %base.name,
            path = %path.display(),
            seconds = started.elapsed().as_secs_f32(),
            "base model loaded"
        );
        Ok(Engine {
            base: base.clone(),
            model,
        })
    }

    /// The id clients use for the base model.
    pub fn name(&self) -> &str {
        &self.base.name
    }

    /// Loads another GGUF model (a merged adapter) into the same engine, next to the base, on
    /// the base's device; requests reach it with [`Engine::chat_stream_on`] and `id`.
    pub async fn add_model(&self, id: &str, gguf: &Path) -> Result<(), EngineError> {
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
    pub fn remove_model(&self, id: &str) -> Result<(), EngineError> {
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
    pub async fn chat_on(&self, model: Option<&str>, request: ChatRequest) -> Result<Completion, EngineError> {
        let mut stream = self.chat_stream_on(model, request).await?;
        let mut text = String::new();
        while let Some(event) = stream.next().await {
            match event? {
                StreamEvent::Text(delta) => text.push_str(&delta),
                StreamEvent::End { finish_reason, usage } => {
                    return Ok(Completion {
                        text,
                        finish_reason,
                        usage,
                    })
                }
            }
        }
        Err(EngineError::Generation("the generation ended without a finish reason".into()))
    }

    /// Starts generating the assistant's reply on the base model; text arrives as it is decoded.
    pub async fn chat_stream(&self, request: ChatRequest) -> Result<TokenStream, EngineError> {
        self.chat_stream_on(None, request).await
    }

    /// Like [`Engine::chat_stream`], on the model added as `model` (`None`: the base).
    pub async fn chat_stream_on(&self, model: Option<&str>, request: ChatRequest) -> Result<TokenStream, EngineError> {
        if request.messages.is_empty() {
            return Err(EngineError::InvalidRequest("`messages` must not be empty".into()));
        }
        let mut builder = to_mistralrs(&request);
        // A reader that is gone fails mistralrs's next send, which cancels the sequence. The
        // buffer is deep so that one slow reader does not hold up the whole batch (mistralrs
        // awaits each send inside its decoding step).
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let normal = NormalRequest {
            messages: builder.take_messages(),
            sampling_params: builder.take_sampling_params(),
            response: tx,
            return_logprobs: false,
            is_streaming: true,
            id: 0,
            constraint: Constraint::None,
            suffix: None,
            tools: None,
            tool_choice: None,
            logits_processors: None,
            return_raw_logits: false,
            web_search_options: None,
            model_id: model.map(str::to_owned),
            truncate_sequence: false,
        };
        let sender = self.model.inner().get_sender(model).map_err(|e| match model {
            Some(id) => EngineError::UnknownModel(format!("{id}: {e}")),
            None => EngineError::Generation(e.to_string()),
        })?;
        sender
            .send(Request::Normal(Box::new(normal)))
            .await
            .map_err(|_| EngineError::Generation("the engine is not running".into()))?;
        Ok(TokenStream { rx, end: None })
    }
}

/// Chunks a generation may run ahead of its reader.
const STREAM_BUFFER: usize = 256;

/// What a [`TokenStream`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// More text.
    Text(String),
    /// The generation is over.
    End { finish_reason: FinishReason, usage: Usage },
}

/// A generation in progress. Dropping it cancels the generation.
pub struct TokenStream {
    rx: mpsc::Receiver<Response>,
    /// The end, held back while the last chunk's text is handed out.
    end: Option<StreamEvent>,
}

impl TokenStream {
    /// The next piece of text, then [`StreamEvent::End`], then `None`.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, EngineError>> {
        if let Some(end) = self.end.take() {
            return Some(Ok(end));
        }
        loop {
            let response = self.rx.recv().await?;
            let chunk = match response {
                Response::Chunk(chunk) => chunk,
                Response::ValidationError(e) => return Some(Err(EngineError::InvalidRequest(e.to_string()))),
                Response::InternalError(e) => return Some(Err(EngineError::Generation(e.to_string()))),
                Response::ModelError(message, _) => return Some(Err(EngineError::Generation(message))),
                other => {
                    return Some(Err(EngineError::Generation(format!(
                        "unexpected response from the engine: {}",
                        response_kind(&other)
                    ))))
                }
            };
            let usage = chunk.usage.as_ref().map(|u| Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
            });
            let Some(choice) = chunk.choices.into_iter().next() else {
                continue;
            };
            let text = choice.delta.content.unwrap_or_default();
            if let Some(reason) = choice.finish_reason {
                let end = StreamEvent::End {
                    finish_reason: finish_reason(&reason),
                    usage: usage.unwrap_or_default(),
                };
                if text.is_empty() {
                    // The receiver is not read again: the sequence is over.
                    self.rx.close();
                    return Some(Ok(end));
                }
                self.end = Some(end);
                self.rx.close();
            }
            if !text.is_empty() {
                return Some(Ok(StreamEvent::Text(text)));
            }
        }
    }
}

fn response_kind(response: &Response) -> &'static str {
    match response {
        Response::Done(_) => "a finished chat",
        Response::CompletionDone(_) | Response::CompletionChunk(_) | Response::CompletionModelError(..) => "a completion",
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
    let builder = GgufModelBuilder::new(dir, vec![file])
        .with_token_source(TokenSource::None)
        .with_max_num_seqs(base.max_num_seqs);
    Ok(match base.device {
        Device::Cpu => builder.with_force_cpu(),
        Device::Auto => builder,
        Device::Cuda => {
            if !cfg!(feature = "cuda") {
                return Err(EngineError::Device(
                    "model.device = \"cuda\" needs graft built with `--features cuda`".into(),
                ));
            }
            let device = mistralrs::Device::new_cuda(0)
                .map_err(|e| EngineError::Device(format!("no usable CUDA device: {e}")))?;
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

fn to_mistralrs(request: &ChatRequest) -> RequestBuilder {
    let mut builder = RequestBuilder::new();
    for ChatMessage { role, content } in &request.messages {
        let role = match role {
            Role::System => TextMessageRole::System,
            Role::User => TextMessageRole::User,
            Role::Assistant => TextMessageRole::Assistant,
        };
        builder = builder.add_message(role, content);
    }
    let s = &request.sampling;
    // `set_deterministic_sampler` resets every sampling field, max_len included, so it comes
    // first and the rest is set after it.
    builder = builder.set_deterministic_sampler();
    if s.temperature > 0.0 {
        builder = builder
            .set_sampling(mistralrs::SamplingParams::neutral())
            .set_sampler_temperature(s.temperature)
            .set_sampler_topp(s.top_p);
    }
    builder = builder.set_sampler_max_len(s.max_tokens);
    if !s.stop.is_empty() {
        builder = builder.set_sampler_stop_toks(StopTokens::Seqs(s.stop.clone()));
    }
    builder
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "length" => FinishReason::Length,
        _ => FinishReason::Stop,
    }
}

