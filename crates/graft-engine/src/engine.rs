//! The engine: one mistralrs instance holding the base model, and generation on it.
//!
//! This module owns loading (offline, from local files only) and the mapping between graft's
//! request types and mistralrs's. It must not know about HTTP or retrieval.

use std::path::{Path, PathBuf};
use std::time::Instant;

use graft_core::Device;
use mistralrs::{GgufModelBuilder, RequestBuilder, StopTokens, TextMessageRole, TokenSource};

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
    name: String,
    model: mistralrs::Model,
}

impl Engine {
    /// Loads the base model from its GGUF file, without touching the network.
    pub async fn load(base: &BaseModel) -> Result<Engine, EngineError> {
        let path = &base.gguf;
        if !path.is_file() {
            // mistralrs would take a missing local path for a Hugging Face id and try the
            // network; graft never lets it.
            return Err(EngineError::ModelMissing { path: path.clone() });
        }
        let (dir, file) = split_path(path)?;
        let mut builder = GgufModelBuilder::new(dir, vec![file])
            .with_token_source(TokenSource::None)
            .with_max_num_seqs(base.max_num_seqs);
        builder = match base.device {
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
        };
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
            name: base.name.clone(),
            model,
        })
    }

    /// The id clients use for the base model.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Generates the assistant's reply to a conversation.
    pub async fn chat(&self, request: ChatRequest) -> Result<Completion, EngineError> {
        if request.messages.is_empty() {
            return Err(EngineError::InvalidRequest("`messages` must not be empty".into()));
        }
        let builder = to_mistralrs(&request);
        let response = self.model.send_chat_request(builder).await.map_err(map_error)?;
        let choice = response
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::Generation("the engine returned no choice".into()))?;
        Ok(Completion {
            text: choice.message.content.unwrap_or_default(),
            finish_reason: finish_reason(&choice.finish_reason),
            usage: Usage {
                prompt_tokens: response.usage.prompt_tokens,
                completion_tokens: response.usage.completion_tokens,
            },
        })
    }
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

fn map_error(e: mistralrs::error::Error) -> EngineError {
    match e {
        mistralrs::error::Error::RequestValidation(message) => EngineError::InvalidRequest(message),
        other => EngineError::Generation(other.to_string()),
    }
}
