//! graft-engine: the part of graft that turns prompts into tokens.
//!
//! - [`engine`]: loads the base GGUF model offline through mistralrs and generates.
//! - [`adapter`]: a PEFT LoRA adapter, read and checked.
//! - [`merge`]: an adapter merged into a GGUF base, written as a new GGUF file.
//! - [`cache`]: merged models kept by the hash of what went into them, merged once.
//! - [`requantize`]: a base re-stored so candle's fast CPU kernels apply (Q4_1/Q5_x → Q8_0,
//!   or every quantized matrix → F16).
//! - [`pool`]: the base model and the adapters loaded next to it, loaded on use, evicted LRU.
//! - [`fim`]: completion prompt formats (fill-in-the-middle, repo-level) by model family.
//! - [`sampling`]: seeded sampling, repeatable per request; OpenAI's penalties and the
//!   repetition penalty of vLLM and llama.cpp.
//! - `stop`: stop strings matched on the streamed text, the stop string left out; stop
//!   tokens matched on the chosen tokens.
//! - [`facts`]: what the served GGUF file says of its model (architecture, parameters,
//!   storage type), for listings.
//! - [`literal`]: special tokens' text in messages, files and code read as text, not as
//!   control tokens; the format's own special tokens stay special.
//! - [`logprobs`]: each generated token's log-probability and the likeliest alternatives.
//! - [`score`]: a prompt's log-probabilities, each token's given the ones before it.
//! - [`grammar`]: structured output: a JSON Schema, regex or Lark grammar the answer follows.
//! - [`synthetic`]: generated adapters for tests and benchmarks.
//! - [`tokenizer`]: the model's tokenizer read from its GGUF file, no weights loaded.
//! - `turn`: where a chat prompt ends: a new assistant turn, the last message continued
//!   (an assistant prefill), or nothing opened.
//! - [`types`]: graft's own request and response types.
//! - [`error`]: what can go wrong, split by who can fix it.
//!
//! It knows nothing about HTTP or retrieval: the server composes those around it.

pub mod adapter;
pub mod cache;
pub mod engine;
pub mod error;
pub mod facts;
pub mod fim;
pub mod grammar;
pub mod literal;
pub mod logprobs;
pub mod merge;
pub mod pool;
pub mod requantize;
mod sampling;
pub mod score;
mod stop;
pub mod synthetic;
pub mod tokenizer;
mod turn;
pub mod types;

pub use engine::{BaseModel, Engine, StreamEvent, TokenStream};

/// Whether this build can run models on a CUDA GPU (the `cuda` feature).
pub const CUDA: bool = cfg!(feature = "cuda");

/// Whether `model.device = "auto"` means a GPU here: a CUDA build on a machine whose driver
/// and CUDA libraries load (`graft_core::cuda`; asked once per process, as start-up asks
/// several times and the answer does not change).
pub fn gpu_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    CUDA && *AVAILABLE.get_or_init(|| graft_core::cuda::check_libraries().is_ok())
}
pub use error::EngineError;
pub use fim::PromptFormat;
pub use grammar::Grammar;
pub use pool::{Pool, PoolLimits};
pub use stop::StopText;
pub use tokenizer::Tokenizer;
pub use turn::Turn;
pub use types::{
    ChatMessage, ChatRequest, Completion, CompletionRequest, FinishReason, Prompt, Repetition, Role, Sampling, StopCause, TokenLogprob,
    TopLogprob, Usage,
};
