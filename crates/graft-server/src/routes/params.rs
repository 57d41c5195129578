//! Request fields shared by the generation endpoints (chat and completions): sampling settings
//! checked against the configured limits and filled with the configured defaults, and the
//! `debug` extension's answer.

use graft_core::config::GenerationConfig;
use graft_engine::Sampling;

use crate::error::ApiError;
use crate::openai::DebugInfo;
use crate::state::AppState;

/// OpenAI accepts at most four stop sequences.
const MAX_STOP_SEQUENCES: usize = 4;

/// The sampling fields as a request gave them.
#[derive(Debug, Default)]
pub struct SamplingFields {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
}

impl SamplingFields {
    /// The engine's sampling settings, with defaults filled in; out-of-range values are a 400
    /// naming the field.
    pub fn resolve(self, limits: &GenerationConfig) -> Result<Sampling, ApiError> {
        let max_tokens = self.max_tokens.unwrap_or(limits.default_max_tokens);
        if max_tokens == 0 || max_tokens > limits.max_tokens_limit {
            return Err(ApiError::invalid_param(
                "max_tokens",
                format!("max_tokens must be between 1 and {}, got {max_tokens}", limits.max_tokens_limit),
            ));
        }
        let temperature = self.temperature.unwrap_or(limits.default_temperature);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid_param(
                "temperature",
                format!("temperature must be between 0 and 2, got {temperature}"),
            ));
        }
        let top_p = self.top_p.unwrap_or(limits.default_top_p);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid_param("top_p", format!("top_p must be in (0, 1], got {top_p}")));
        }
        if self.stop.len() > MAX_STOP_SEQUENCES || self.stop.iter().any(String::is_empty) {
            return Err(ApiError::invalid_param(
                "stop",
                format!("stop takes up to {MAX_STOP_SEQUENCES} non-empty strings"),
            ));
        }
        Ok(Sampling {
            max_tokens: max_tokens as usize,
            temperature,
            top_p,
            stop: self.stop,
            // OpenAI's seed is a signed integer; its bits seed the draw.
            seed: self.seed.map(|s| s as u64),
        })
    }
}

/// The `debug` answer for a prompt of `tokens`: its text with special tokens spelled out.
pub async fn debug_info(state: &AppState, tokens: &[u32]) -> Result<DebugInfo, ApiError> {
    Ok(DebugInfo {
        prompt: state.engine().detokenize(None, tokens.to_vec()).await?,
        prompt_tokens: tokens.len(),
    })
}
