//! `POST /v1/chat/completions`: validates an OpenAI chat request, maps it to the engine's
//! types under the configured limits, and answers as OpenAI does: one JSON body, or a stream
//! of server-sent `chat.completion.chunk` events ending in `data: [DONE]`.
//!
//! A client that disconnects drops the response, and with it the engine's token stream, which
//! stops the generation.

use axum::extract::State;
use axum::response::Response;
use axum::Extension;

use futures::future::BoxFuture;
use graft_core::config::GenerationConfig;
use graft_engine::{ChatMessage, ChatRequest, Completion, Role, Turn, Usage};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::generation::{admit, choices, start_choices, Generation};
use crate::json::Json;
use crate::openai::{
    self, AnswerHead, AssistantMessage, ChatChoice, ChatCompletionRequest, ChatLogprobs, ChunkChoice, Content, Delta, PromptLogprobs,
    StopReason,
};
use crate::prompt;
use crate::routes::params::{check_grammar, check_token_ids, debug_info, structured, SamplingFields};
use crate::routes::scoring;
use crate::routes::sse::{self, Extras, Part};
use crate::routes::tools::{self, Results};
use crate::state::AppState;

pub async fn completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let streaming = request.stream == Some(true);
    let include_usage = request.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let started = start(&state, &caller, request).await?;
    let chunks = ChatChunks {
        head: AnswerHead::new("chatcmpl", started.model),
        tools: started.tools,
    };
    sse::respond(started.generations, chunks, streaming, include_usage, started.extras).await
}

/// A chat request's generations, started: what any API's answer is made of.
pub(crate) struct Started {
    /// One per choice (`n`).
    pub generations: Vec<Generation>,
    /// graft's extension fields (the sources retrieval used, the debug prompt).
    pub extras: Extras,
    /// The model as the request named it.
    pub model: String,
    /// The request has tools: each reply is read into calls or words ([`pieces`]), its stop
    /// strings matched on the words.
    pub tools: Option<tools::Reading>,
}

/// Checks a chat request, lays out its prompt (retrieval for a project) and starts its
/// choices under one admission.
pub(crate) async fn start(state: &AppState, caller: &Caller, mut request: ChatCompletionRequest) -> Result<Started, ApiError> {
    let n = choices(request.n)?;
    if let Some((field, message)) = request.unsupported.first_used() {
        return Err(ApiError::unsupported(field, message));
    }
    let target = state.target(&request.model, caller)?;
    let turn = turn(request.continue_final_message, request.add_generation_prompt)?;
    let retrieval = request.retrieval.take();
    let debug = request.debug == Some(true);
    let prompt_top = scoring::check(request.prompt_logprobs, request.stream == Some(true))?;
    let tools = tools::read(request.tools.take(), request.tool_choice.take(), request.parallel_tool_calls)?;
    let grammar = match (structured(std::mem::take(&mut request.structured))?, &tools) {
        (Some((_, field)), Some(_)) => {
            return Err(ApiError::unsupported(
                field,
                format!("{field} together with tools is not supported"),
            ))
        }
        (None, Some(tools)) => Some((tools.grammar(), "tools")),
        (grammar, None) => grammar,
    };
    if let (Turn::Continue, Some((_, field))) = (turn, &grammar) {
        // The grammar would start an answer of its own after the continued words.
        return Err(ApiError::unsupported(
            "continue_final_message",
            format!("continuing the last message together with {field} is not supported"),
        ));
    }
    if tools.is_some() && request.logprobs == Some(true) {
        return Err(ApiError::unsupported("logprobs", "logprobs together with tools is not supported"));
    }
    check_grammar(state, grammar.as_ref())?;
    let mut chat = to_engine_request(request, &state.generation())?;
    check_token_ids(state, &chat.sampling)?;
    chat.sampling.grammar = grammar.map(|(grammar, _)| grammar);
    let reading = tools.as_ref().map(|tools| {
        tools.describe(&mut chat.messages);
        tools::Reading::take_stops(&mut chat.sampling)
    });
    tracing::debug!(model = %target.name, messages = chat.messages.len(), max_tokens = chat.sampling.max_tokens, "chat request");

    let admitted = admit(state).await?;
    let prompt = prompt::chat::lay_out(state, &target, chat.messages, retrieval, turn).await?;
    let (sources, prompt) = (prompt.sources, prompt.tokens);
    let debug = if debug { Some(debug_info(state, &prompt).await?) } else { None };
    let prompt_logprobs = match prompt_top {
        Some(top) => {
            let scored = scoring::score(state, caller, &target, std::slice::from_ref(&prompt), top).await?;
            scored.into_iter().next().map(|s| PromptLogprobs::new(s.entries))
        }
        None => None,
    };

    // The model reads exactly the prompt that was checked. A new turn's answer starts with its
    // first word; a continued message keeps the white space it goes on with.
    let generations: Vec<Generation> = start_choices(state, caller, admitted, &target, vec![prompt], chat.sampling, n)
        .await?
        .into_iter()
        .map(|generation| match turn {
            Turn::Continue => generation,
            Turn::Open | Turn::Closed => generation.trim_leading_whitespace(),
        })
        .collect();
    Ok(Started {
        generations,
        extras: Extras {
            sources,
            debug,
            prompt_logprobs,
        },
        model: target.name,
        tools: reading,
    })
}

/// The length in tokens of the prompt `request` makes: its conversation, with the tools'
/// description, through the chat template; retrieval left out (Anthropic's `count_tokens`).
pub(crate) async fn count_prompt(state: &AppState, caller: &Caller, mut request: ChatCompletionRequest) -> Result<usize, ApiError> {
    state.target(&request.model, caller)?;
    let turn = turn(request.continue_final_message, request.add_generation_prompt)?;
    let tools = tools::read(request.tools.take(), request.tool_choice.take(), request.parallel_tool_calls)?;
    let mut messages = to_engine_messages(std::mem::take(&mut request.messages))?;
    if let Some(tools) = &tools {
        tools.describe(&mut messages);
    }
    Ok(state.engine().chat_prompt_ending(&messages, turn).await?.len())
}

/// Where a chat prompt ends, from vLLM's two fields (`/tokenize` takes them too): 400 when
/// both are true.
pub(crate) fn turn(continue_final_message: Option<bool>, add_generation_prompt: Option<bool>) -> Result<Turn, ApiError> {
    match (continue_final_message == Some(true), add_generation_prompt) {
        (true, Some(true)) => Err(ApiError::invalid_param(
            "continue_final_message",
            "`continue_final_message` and `add_generation_prompt` cannot both be true",
        )),
        (true, _) => Ok(Turn::Continue),
        (false, Some(false)) => Ok(Turn::Closed),
        (false, _) => Ok(Turn::Open),
    }
}

/// Whether a conversation (OpenAI-shaped messages) ends in an assistant's words: Anthropic's
/// Messages API and Ollama take that as the start of the answer, to be continued.
pub(crate) fn ends_in_prefill(messages: &[serde_json::Value]) -> bool {
    messages.last().is_some_and(|last| {
        last.get("role").and_then(serde_json::Value::as_str) == Some("assistant")
            && last
                .get("tool_calls")
                .is_none_or(|calls| calls.as_array().is_none_or(Vec::is_empty))
            && last
                .get("content")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|text| !text.trim().is_empty())
    })
}

/// A choice's stream: its text as it comes, or with tools its reply's words or calls.
pub(crate) fn pieces(generation: Generation, tools: Option<&tools::Reading>) -> sse::Pieces {
    match tools {
        Some(reading) => tools::pieces(generation, reading),
        None => sse::pieces(generation),
    }
}

/// Chat's answers: a whole `chat.completion`, or a stream of chunks: the role first (with the
/// sources), then text deltas (or, with tools, the reply's words or calls: `routes::tools`).
struct ChatChunks {
    head: AnswerHead,
    /// The request has tools: each reply is read into calls or words.
    tools: Option<tools::Reading>,
}

impl sse::Chunks for ChatChunks {
    const CHUNK_OBJECT: &'static str = "chat.completion.chunk";
    const WHOLE_OBJECT: &'static str = "chat.completion";
    type Chunk = ChunkChoice;
    type Whole = ChatChoice;

    fn head(&self) -> &AnswerHead {
        &self.head
    }

    fn opens(&self) -> bool {
        true
    }

    fn chunk(&self, index: u32, part: Part) -> ChunkChoice {
        let mut stop_reason = None;
        let (delta, finish_reason, logprobs) = match part {
            Part::Open => (
                Delta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                    tool_calls: None,
                },
                None,
                None,
            ),
            Part::Text(text, logprobs) => (
                Delta {
                    role: None,
                    content: Some(text),
                    tool_calls: None,
                },
                None,
                logprobs.map(ChatLogprobs::new),
            ),
            Part::Calls(calls) => {
                let calls = calls
                    .into_iter()
                    .enumerate()
                    .map(|(i, call)| openai::ToolCall {
                        index: Some(i as u32),
                        ..call
                    })
                    .collect();
                let delta = Delta {
                    tool_calls: Some(calls),
                    ..Delta::default()
                };
                (delta, None, None)
            }
            Part::Finish(reason, stopped_by) => {
                stop_reason = stopped_by.map(StopReason::from);
                (Delta::default(), Some(reason), None)
            }
        };
        ChunkChoice {
            index,
            delta,
            finish_reason,
            stop_reason,
            logprobs,
        }
    }

    fn whole(&self, index: u32, completion: Completion) -> ChatChoice {
        ChatChoice {
            index,
            message: AssistantMessage {
                role: "assistant",
                content: Some(completion.text),
                tool_calls: None,
            },
            finish_reason: completion.finish_reason.as_str(),
            stop_reason: completion.stopped_by.map(StopReason::from),
            logprobs: completion.logprobs.map(ChatLogprobs::new),
        }
    }

    fn pieces(&self, generation: Generation) -> sse::Pieces {
        pieces(generation, self.tools.as_ref())
    }

    fn answer(&self, index: u32, generation: Generation) -> BoxFuture<'_, Result<(ChatChoice, Usage), ApiError>> {
        let Some(reading) = &self.tools else {
            return sse::collect_whole(self, index, generation);
        };
        let pieces = tools::pieces(generation, reading);
        Box::pin(async move {
            let (message, finish_reason, stopped_by, usage) = tools::answer(pieces).await?;
            let choice = ChatChoice {
                index,
                message,
                finish_reason,
                stop_reason: stopped_by.map(StopReason::from),
                logprobs: None,
            };
            Ok((choice, usage))
        })
    }
}

fn to_engine_request(request: ChatCompletionRequest, limits: &GenerationConfig) -> Result<ChatRequest, ApiError> {
    let messages = to_engine_messages(request.messages)?;
    let top_logprobs = request.top_logprobs.unwrap_or(0);
    let logprobs = match request.logprobs {
        Some(true) => Some((top_logprobs, "top_logprobs")),
        _ if top_logprobs > 0 => return Err(ApiError::invalid_param("top_logprobs", "top_logprobs needs `logprobs: true`")),
        _ => None,
    };
    let sampling = SamplingFields {
        max_tokens: request
            .max_completion_tokens
            .or(request.max_tokens)
            .or(Some(limits.chat_max_tokens())),
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.top_k,
        min_p: request.min_p,
        stop: request.stop.map(openai::Stop::into_vec).unwrap_or_default(),
        seed: request.seed,
        frequency_penalty: request.frequency_penalty,
        presence_penalty: request.presence_penalty,
        repetition: request.repetition,
        ending: request.ending,
        logprobs,
        logit_bias: request.logit_bias,
    }
    .resolve(limits)?;
    Ok(ChatRequest { messages, sampling })
}

/// A request's conversation as the engine takes it: at least one message, roles and content
/// parts checked (chat, and `/tokenize`'s `messages`).
pub(crate) fn to_engine_messages(messages: Vec<openai::Message>) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid_param("messages", "`messages` must contain at least one message"));
    }
    let mut mapped = Vec::with_capacity(messages.len());
    let mut results = Results::default();
    for (index, mut message) in messages.into_iter().enumerate() {
        if message.role == "tool" {
            let content = content_text(index, message.content)?;
            results.push(index, message.tool_call_id, message.name, content)?;
            continue;
        }
        mapped.extend(results.take());
        let calls = message.tool_calls.take().filter(|calls| !calls.is_empty());
        let mut mapped_message = to_engine_message(index, message)?;
        if let Some(calls) = calls {
            if mapped_message.role != Role::Assistant {
                return Err(ApiError::invalid_param(
                    "messages",
                    format!("messages[{index}]: only assistant messages carry tool_calls"),
                ));
            }
            results.called(&calls);
            mapped_message.content = tools::calls_text(&calls, &mapped_message.content);
        }
        mapped.push(mapped_message);
    }
    mapped.extend(results.take());
    Ok(mapped)
}

/// One message of a request as the engine takes it (roles and content parts checked).
fn to_engine_message(index: usize, message: openai::Message) -> Result<ChatMessage, ApiError> {
    let role = match message.role.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        other => {
            return Err(ApiError::invalid_param(
                "messages",
                format!("messages[{index}].role: `{other}` is not supported; use system, developer, user, assistant or tool"),
            ))
        }
    };
    let content = content_text(index, message.content)?;
    if role == Role::User && content.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            format!("messages[{index}].content must not be empty"),
        ));
    }
    Ok(ChatMessage { role, content })
}

/// A message's content as one text: text parts joined by newlines.
fn content_text(index: usize, content: Option<Content>) -> Result<String, ApiError> {
    Ok(match content {
        None => String::new(),
        Some(Content::Text(text)) => text,
        Some(Content::Parts(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in parts {
                match (part.kind.as_str(), part.text) {
                    ("text", Some(text)) => texts.push(text),
                    (kind, _) => {
                        return Err(ApiError::invalid_param(
                            "messages",
                            format!("messages[{index}].content: parts of type `{kind}` are not supported; only `text` parts with a `text` field are"),
                        ))
                    }
                }
            }
            texts.join("\n")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use graft_engine::Repetition;

    fn request(body: &str) -> Result<ChatRequest, ApiError> {
        let request: ChatCompletionRequest = crate::json::parse(body.as_bytes())?;
        to_engine_request(request, &GenerationConfig::default())
    }

    #[test]
    fn defaults_fill_missing_sampling_fields() {
        let r = request(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        let d = GenerationConfig::default();
        assert_eq!(
            r.sampling.max_tokens, d.max_tokens_limit as usize,
            "chat answers are not cut short unasked"
        );
        assert_eq!(r.sampling.temperature, d.default_temperature);
        assert_eq!(r.messages, vec![ChatMessage::new(Role::User, "hi")]);
    }

    #[test]
    fn content_parts_and_roles_are_mapped() {
        let r = request(
            r#"{"model":"m","max_completion_tokens":7,"max_tokens":99,"stop":"END","messages":[
                {"role":"developer","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
                {"role":"assistant","content":null}]}"#,
        )
        .unwrap();
        assert_eq!(r.sampling.max_tokens, 7, "max_completion_tokens wins over max_tokens");
        assert_eq!(r.sampling.stop, vec!["END".to_owned()]);
        assert_eq!(r.messages[0], ChatMessage::new(Role::System, "be brief"));
        assert_eq!(r.messages[1], ChatMessage::new(Role::User, "a\nb"));
        assert_eq!(r.messages[2], ChatMessage::new(Role::Assistant, ""));
    }

    #[test]
    fn an_assistant_turn_keeps_its_words_beside_its_calls() {
        let r = request(
            r#"{"model":"m","messages":[
                {"role":"user","content":"Weather in Oslo?"},
                {"role":"assistant","content":"Let me look.","tool_calls":[
                    {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]},
                {"role":"tool","tool_call_id":"call_1","content":"Sunny"}]}"#,
        )
        .unwrap();
        assert_eq!(
            r.messages[1].content,
            r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}], "response": "Let me look."}"#
        );
        assert_eq!(
            r.messages[2].content,
            r#"{"tool_results": [{"tool_call_id": "call_1", "name": "get_weather", "content": "Sunny"}]}"#
        );
    }

    #[test]
    fn out_of_range_fields_name_the_param() {
        let cases = [
            (r#""max_tokens":0"#, "max_tokens"),
            (r#""max_tokens":100000"#, "max_tokens"),
            (r#""temperature":3"#, "temperature"),
            (r#""top_p":0"#, "top_p"),
            (&format!(r#""stop":[{}"a"]"#, r#""a","#.repeat(64)), "stop"),
            (&format!(r#""stop":["{}"]"#, "a".repeat(501)), "stop"),
            (r#""stop":["a",""]"#, "stop"),
            (r#""frequency_penalty":2.5"#, "frequency_penalty"),
            (r#""presence_penalty":-3"#, "presence_penalty"),
            (r#""logprobs":true,"top_logprobs":21"#, "top_logprobs"),
            (r#""top_logprobs":2"#, "top_logprobs"),
            (r#""logprobs":false,"top_logprobs":2"#, "top_logprobs"),
            (r#""logit_bias":{"12":-101}"#, "logit_bias"),
            (r#""logit_bias":{"the":1}"#, "logit_bias"),
            (r#""repetition_penalty":0"#, "repetition_penalty"),
            (r#""repetition_penalty":101"#, "repetition_penalty"),
            (r#""repeat_penalty":-1.1"#, "repeat_penalty"),
            (r#""repetition_penalty":1.1,"repeat_penalty":1.2"#, "repeat_penalty"),
            (r#""repeat_penalty":1.1,"repeat_last_n":-2"#, "repeat_last_n"),
        ];
        for (field, param) in cases {
            let body = format!(r#"{{"model":"m",{field},"messages":[{{"role":"user","content":"x"}}]}}"#);
            let err = request(&body).unwrap_err();
            assert_eq!(err.status, 400, "{field}");
            assert_eq!(err.param, Some(param), "{field}: {}", err.message);
        }
    }

    #[test]
    fn logprobs_and_penalties_reach_the_engine() {
        let r = request(
            r#"{"model":"m","logprobs":true,"top_logprobs":3,"frequency_penalty":0.5,"presence_penalty":-1,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(r.sampling.logprobs, Some(3));
        assert_eq!((r.sampling.frequency_penalty, r.sampling.presence_penalty), (0.5, -1.0));
        let r = request(r#"{"model":"m","logprobs":true,"messages":[{"role":"user","content":"x"}]}"#).unwrap();
        assert_eq!(r.sampling.logprobs, Some(0), "the chosen tokens alone");
        let r = request(r#"{"model":"m","logprobs":false,"top_logprobs":0,"messages":[{"role":"user","content":"x"}]}"#).unwrap();
        assert_eq!(r.sampling.logprobs, None);
        assert_eq!((r.sampling.frequency_penalty, r.sampling.presence_penalty), (0.0, 0.0));
        let biased = request(r#"{"model":"m","logit_bias":{"7":-100," 3":2.5},"messages":[{"role":"user","content":"x"}]}"#).unwrap();
        assert_eq!(biased.sampling.logit_bias, vec![(3, 2.5), (7, -100.0)]);
    }

    #[test]
    fn the_repetition_penalty_takes_vllms_and_llama_cpps_names_and_windows() {
        let repetition = |fields: &str| {
            let body = format!(r#"{{"model":"m",{fields}"messages":[{{"role":"user","content":"x"}}]}}"#);
            request(&body).unwrap().sampling.repetition
        };
        let of = |penalty, window| Some(Repetition { penalty, window });
        // vLLM's name: the whole context; llama.cpp's: its last 64 tokens unless told.
        assert_eq!(repetition(r#""repetition_penalty":1.25,"#), of(1.25, None));
        assert_eq!(repetition(r#""repeat_penalty":1.25,"#), of(1.25, Some(64)));
        assert_eq!(repetition(r#""repeat_penalty":1.25,"repeat_last_n":8,"#), of(1.25, Some(8)));
        assert_eq!(repetition(r#""repeat_penalty":1.25,"repeat_last_n":-1,"#), of(1.25, None));
        assert_eq!(repetition(r#""repetition_penalty":0.8,"repeat_last_n":16,"#), of(0.8, Some(16)));
        // Both names with one value are one setting.
        assert_eq!(repetition(r#""repetition_penalty":1.5,"repeat_penalty":1.5,"#), of(1.5, None));
        // No penalty: none given, 1, or a window of 0 tokens.
        assert_eq!(repetition(""), None);
        assert_eq!(repetition(r#""repetition_penalty":1,"#), None);
        assert_eq!(repetition(r#""repeat_penalty":1.3,"repeat_last_n":0,"#), None);
        assert_eq!(repetition(r#""repeat_last_n":32,"#), None);
    }

    #[test]
    fn unsupported_roles_parts_and_empty_lists_are_rejected() {
        let err = request(r#"{"model":"m","messages":[]}"#).unwrap_err();
        assert_eq!(err.param, Some("messages"));
        let err = request(r#"{"model":"m","messages":[{"role":"function","content":"x"}]}"#).unwrap_err();
        assert!(err.message.contains("`function`"), "{}", err.message);
        let err = request(r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#).unwrap_err();
        assert!(err.message.contains("tool_call_id"), "{}", err.message);
        let err = request(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#).unwrap_err();
        assert!(err.message.contains("image_url"), "{}", err.message);
    }

    #[test]
    fn type_errors_name_the_field() {
        let err = request(r#"{"model":"m","messages":[{"role":5,"content":"x"}]}"#).unwrap_err();
        assert!(err.message.contains("messages[0].role"), "{}", err.message);
        let err = request(r#"{"model":"m","messages":"#).unwrap_err();
        assert!(err.message.starts_with("Invalid JSON body"), "{}", err.message);
    }
}
