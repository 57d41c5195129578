//! The server-sent event stream that both generation routes answer with when a request says
//! `"stream": true`: an opening event where the answer has one (chat's role delta, the prompt a
//! completion echoes), one event per piece of text, the finish reason, a usage event when
//! `stream_options.include_usage` asks for it, then `data: [DONE]`. A request for several
//! choices (`n`) gets each choice's events in order, marked with its index, the choices
//! interleaved as they are generated, and one usage event for all. graft's extension fields
//! ([`Extras`]: the sources a project request used, the debug prompt) go on the first event.
//! An error during generation (a deadline, an engine failure) becomes one error event, then
//! `[DONE]`.
//!
//! This module owns the order of events and the choice between a stream and a whole answer
//! ([`respond`]); each route owns the shape of its chunks and answers ([`Chunks`]). The routes
//! of other APIs (Anthropic's Messages, OpenAI's Responses, Ollama's lines) write their own
//! streams: [`pump`] reads a choice's pieces into their [`Writer`].

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use futures::stream::{self, Stream};
use graft_engine::{Completion, StopCause, StreamEvent, Usage};

use crate::error::ApiError;
use crate::generation::Generation;
use crate::openai;
pub use crate::openai::Extras;

/// What one event's choice says.
pub enum Part {
    /// The stream's opening event (only for answers whose [`Chunks::opens`] is true).
    Open,
    /// A piece of text, with its tokens' log-probabilities when the request asked for them.
    Text(String, Option<Vec<graft_engine::TokenLogprob>>),
    /// Calls of the request's tools (chat with `tools` only: `routes::tools`).
    Calls(Vec<openai::ToolCall>),
    /// The finish reason, and the request's stop that ended the answer (vLLM's `stop_reason`).
    Finish(&'static str, Option<StopCause>),
}

/// What a choice's stream brings, in order: pieces of its answer, then its end.
pub enum Piece {
    Text(String, Option<Vec<graft_engine::TokenLogprob>>),
    Calls(Vec<openai::ToolCall>),
    End(End),
}

/// How a choice's answer ended.
#[derive(Debug, Clone)]
pub struct End {
    /// OpenAI's finish reason: `stop`, `length`, `tool_calls`.
    pub finish_reason: &'static str,
    /// The request's stop that ended the answer, if one did.
    pub stopped_by: Option<StopCause>,
    pub usage: Usage,
    /// When the answer's first token came (the prompt had been read), if one did.
    pub first_token: Option<tokio::time::Instant>,
}

/// One choice's pieces as they come.
pub type Pieces = stream::BoxStream<'static, Result<Piece, ApiError>>;

/// A choice's pieces gathered once it has ended: its text, its tokens' log-probabilities
/// (when the request asked for them), its calls (chat with tools) and how it ended.
pub struct Gathered {
    pub text: String,
    pub logprobs: Option<Vec<graft_engine::TokenLogprob>>,
    pub calls: Vec<openai::ToolCall>,
    pub end: End,
}

/// Reads `pieces` to their end.
pub async fn gather(mut pieces: Pieces) -> Result<Gathered, ApiError> {
    use futures::StreamExt;
    let mut text = String::new();
    let mut logprobs: Option<Vec<graft_engine::TokenLogprob>> = None;
    let mut calls = Vec::new();
    while let Some(piece) = pieces.next().await {
        match piece? {
            Piece::Text(more, more_logprobs) => {
                text.push_str(&more);
                if let Some(more_logprobs) = more_logprobs {
                    logprobs.get_or_insert_with(Vec::new).extend(more_logprobs);
                }
            }
            Piece::Calls(more) => calls.extend(more),
            Piece::End(end) => {
                return Ok(Gathered {
                    text,
                    logprobs,
                    calls,
                    end,
                })
            }
        }
    }
    Err(ApiError::from(graft_engine::engine::Collector::unfinished()))
}

/// A generation's text as it comes, then its end.
pub fn pieces(generation: Generation) -> Pieces {
    use futures::StreamExt;
    stream::unfold(generation, |mut g| async move {
        let piece = g.next().await?.map(|event| match event {
            StreamEvent::Text { text, logprobs } => Piece::Text(text, logprobs),
            StreamEvent::End {
                finish_reason,
                stopped_by,
                usage,
            } => Piece::End(End {
                finish_reason: finish_reason.as_str(),
                stopped_by,
                usage,
                first_token: g.first_token(),
            }),
        });
        Some((piece, g))
    })
    .boxed()
}

/// How a route's answers look: the choice of each stream event, and the choice of a whole
/// answer. Everything around the choices (the envelope, the usage event, the extension
/// fields) is this module's.
pub trait Chunks: Send + Sync + 'static {
    /// The `object` of stream events (`chat.completion.chunk`) and of a whole answer.
    const CHUNK_OBJECT: &'static str;
    const WHOLE_OBJECT: &'static str;
    type Chunk: serde::Serialize;
    type Whole: serde::Serialize;
    /// The id, time and model of every event of this answer.
    fn head(&self) -> &openai::AnswerHead;
    /// Whether each choice's stream opens with an event of its own before any text.
    fn opens(&self) -> bool;
    /// A stream event's choice, for the request's choice `index` (`n` asks for several).
    fn chunk(&self, index: u32, part: Part) -> Self::Chunk;
    /// The choice `index` of the whole answer.
    fn whole(&self, index: u32, completion: Completion) -> Self::Whole;
    /// A choice's stream: its generation's text as it comes ([`pieces`]) unless the route
    /// reads the text into something else (chat's tool calls).
    fn pieces(&self, generation: Generation) -> Pieces {
        pieces(generation)
    }
    /// Choice `index` of the whole answer, and its usage: its generation's text collected
    /// ([`Generation::collect`]) and written by [`Chunks::whole`], unless the route reads the
    /// text into something else (chat's tool calls).
    fn answer(&self, index: u32, generation: Generation) -> BoxFuture<'_, Result<(Self::Whole, Usage), ApiError>> {
        collect_whole(self, index, generation)
    }
    /// How many choices each prompt of the request has (a completion may send several
    /// prompts, each prompt's choices in turn); one prompt for all unless the route says.
    fn choices_per_prompt(&self) -> u32 {
        u32::MAX
    }
}

/// The event for choice `index`'s `part`, with the extension fields on the stream's first
/// event.
fn event<C: Chunks>(chunks: &C, index: u32, part: Part, extras: Extras) -> Event {
    json_event(
        &chunks
            .head()
            .envelope(C::CHUNK_OBJECT, vec![chunks.chunk(index, part)], None, extras),
    )
}

/// The usage event: no choices, as in OpenAI's API.
fn usage_event<C: Chunks>(chunks: &C, usage: Usage) -> Event {
    json_event(
        &chunks
            .head()
            .envelope::<C::Chunk>(C::CHUNK_OBJECT, Vec::new(), Some(usage.into()), Extras::default()),
    )
}

/// A request's usage over its choices: each prompt once (all its choices read it; counted
/// with its first choice), the answers' tokens added up.
fn add_usage(total: &mut Option<Usage>, usage: Usage, first_of_its_prompt: bool) {
    let total = total.get_or_insert(Usage::default());
    if first_of_its_prompt {
        total.prompt_tokens += usage.prompt_tokens;
        total.cached_tokens += usage.cached_tokens;
    }
    total.completion_tokens += usage.completion_tokens;
}

/// The answer to a generation request of one choice per generation (`n`, most often one):
/// server-sent events as they go when `streaming`, else the whole answer once all have ended.
pub async fn respond<C: Chunks>(
    generations: Vec<Generation>,
    chunks: C,
    streaming: bool,
    include_usage: bool,
    extras: Extras,
) -> Result<Response, ApiError> {
    if streaming {
        let choices = generations.into_iter().map(|g| chunks.pieces(g)).collect();
        return Ok(stream(choices, chunks, include_usage, extras).into_response());
    }
    let answers = generations.into_iter().enumerate().map(|(i, g)| chunks.answer(i as u32, g));
    let mut usage = None;
    let mut choices = Vec::new();
    for (index, (choice, choice_usage)) in futures::future::try_join_all(answers).await?.into_iter().enumerate() {
        add_usage(
            &mut usage,
            choice_usage,
            first_of_its_prompt(index as u32, chunks.choices_per_prompt()),
        );
        choices.push(choice);
    }
    Ok(envelope(choices, usage, &chunks, extras))
}

/// Choice `index` of the whole answer from its generation's text ([`Chunks::answer`]'s way
/// for routes that do not read the text into something else).
pub fn collect_whole<C: Chunks + ?Sized>(
    chunks: &C,
    index: u32,
    generation: Generation,
) -> BoxFuture<'_, Result<(C::Whole, Usage), ApiError>> {
    Box::pin(async move {
        let completion = generation.collect().await?;
        let usage = completion.usage;
        Ok((chunks.whole(index, completion), usage))
    })
}

/// Every generation run to its end, and the request's usage over them all (the generations
/// of each prompt in turn, `per_prompt` of them each).
pub async fn collect(generations: Vec<Generation>, per_prompt: u32) -> Result<(Vec<Completion>, Option<Usage>), ApiError> {
    let completions = futures::future::try_join_all(generations.into_iter().map(Generation::collect)).await?;
    let usage = usage_of(&completions, per_prompt);
    Ok((completions, usage))
}

/// The request's usage over its `completions` (each prompt's `per_prompt` in turn).
pub fn usage_of(completions: &[Completion], per_prompt: u32) -> Option<Usage> {
    let mut usage = None;
    for (index, completion) in completions.iter().enumerate() {
        add_usage(&mut usage, completion.usage, first_of_its_prompt(index as u32, per_prompt));
    }
    usage
}

/// A choice that is over before it began (nothing to generate): its end alone.
pub fn ended(completion: &Completion) -> Pieces {
    use futures::StreamExt;
    let end = Piece::End(End {
        finish_reason: completion.finish_reason.as_str(),
        stopped_by: completion.stopped_by.clone(),
        usage: completion.usage,
        first_token: None,
    });
    stream::iter([Ok(end)]).boxed()
}

/// Whether choice `index` is the first of its prompt's `per_prompt` choices.
fn first_of_its_prompt(index: u32, per_prompt: u32) -> bool {
    index.is_multiple_of(per_prompt)
}

/// The whole answer: each completion a choice, in order, and `usage`.
pub fn whole<C: Chunks>(completions: Vec<Completion>, usage: Option<Usage>, chunks: &C, extras: Extras) -> Response {
    let choices = completions
        .into_iter()
        .enumerate()
        .map(|(i, completion)| chunks.whole(i as u32, completion))
        .collect();
    envelope(choices, usage, chunks, extras)
}

/// The whole answer of `choices`.
fn envelope<C: Chunks>(choices: Vec<C::Whole>, usage: Option<Usage>, chunks: &C, extras: Extras) -> Response {
    let whole = chunks.head().envelope(C::WHOLE_OBJECT, choices, usage.map(Into::into), extras);
    axum::Json(whole).into_response()
}

/// Where a stream is.
enum Phase {
    /// The opening events still to send, one per choice.
    Open(std::ops::Range<u32>),
    Tokens,
    Done,
    Finished,
}

/// What a stream keeps between events.
struct Flow {
    /// Every choice's pieces as they come, each with its choice's index.
    events: stream::SelectAll<stream::BoxStream<'static, (u32, Result<Piece, ApiError>)>>,
    phase: Phase,
    /// The extension fields, until the first event takes them.
    extras: Option<Extras>,
    /// Added up over the choices' ends so far.
    usage: Option<Usage>,
}

/// The pieces of each choice (a generation's: [`pieces`]) as server-sent events written by
/// `chunks`: the events of each choice in order, the choices' events interleaved as they come.
pub fn stream<C: Chunks>(
    choices: Vec<Pieces>,
    chunks: C,
    include_usage: bool,
    extras: Extras,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    use futures::StreamExt;
    let chunks = Arc::new(chunks);
    let count = choices.len();
    let events = stream::select_all(
        choices
            .into_iter()
            .enumerate()
            .map(|(i, pieces)| pieces.map(move |piece| (i as u32, piece)).boxed()),
    );
    let flow = Flow {
        events,
        phase: if chunks.opens() {
            Phase::Open(0..count as u32)
        } else {
            Phase::Tokens
        },
        extras: Some(extras),
        usage: None,
    };
    let events = stream::unfold(flow, move |mut flow| {
        let chunks = Arc::clone(&chunks);
        async move {
            let extras = flow.extras.take().unwrap_or_default();
            let event = match &mut flow.phase {
                Phase::Open(indexes) => {
                    let index = indexes.next().unwrap_or_default();
                    if indexes.start == indexes.end {
                        flow.phase = Phase::Tokens;
                    }
                    event(&*chunks, index, Part::Open, extras)
                }
                Phase::Tokens => match flow.events.next().await {
                    Some((index, Ok(Piece::Text(text, logprobs)))) => event(&*chunks, index, Part::Text(text, logprobs), extras),
                    Some((index, Ok(Piece::Calls(calls)))) => event(&*chunks, index, Part::Calls(calls), extras),
                    Some((index, Ok(Piece::End(end)))) => {
                        add_usage(&mut flow.usage, end.usage, first_of_its_prompt(index, chunks.choices_per_prompt()));
                        event(&*chunks, index, Part::Finish(end.finish_reason, end.stopped_by), extras)
                    }
                    Some((_, Err(e))) => {
                        flow.phase = Phase::Done;
                        crate::error::stream_error_event(&e)
                    }
                    // Every choice has ended (a generation's events stop after its end; an
                    // error ends the stream above): the usage event when asked for, then [DONE].
                    None => match flow.usage.filter(|_| include_usage) {
                        Some(usage) => {
                            flow.phase = Phase::Done;
                            usage_event(&*chunks, usage)
                        }
                        None => {
                            flow.phase = Phase::Finished;
                            done()
                        }
                    },
                },
                Phase::Done => {
                    flow.phase = Phase::Finished;
                    done()
                }
                Phase::Finished => return None,
            };
            Some((Ok(event), flow))
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

fn done() -> Event {
    Event::default().data("[DONE]")
}

/// A chunk serialised as an event's JSON data.
pub fn json_event(body: &impl serde::Serialize) -> Event {
    Event::default().json_data(body).unwrap_or_else(|_| Event::default().data("{}"))
}

/// A route that writes a stream in its own API's shapes (Anthropic's Messages events, the
/// Responses API's events, Ollama's lines): it turns each piece of one answer into items,
/// queued in order; [`pump`] sends them as they are ready.
pub trait Writer: Send + 'static {
    /// What the stream carries: server-sent events, or lines.
    type Item: Send + 'static;
    /// The items written and not sent yet.
    fn ready(&mut self) -> &mut VecDeque<Self::Item>;
    fn text(&mut self, text: String, logprobs: Option<Vec<graft_engine::TokenLogprob>>);
    fn calls(&mut self, calls: Vec<openai::ToolCall>);
    /// The answer's last items.
    fn end(&mut self, end: End);
    /// The items that say the answer failed; nothing follows them.
    fn error(&mut self, e: &ApiError);
}

/// One answer's `pieces` written by `writer` as they come: the items the writer holds ready
/// first (an opening event), then each piece's, up to the answer's end or an error (a
/// generation whose pieces stop before its end has failed).
pub fn pump<W: Writer>(writer: W, pieces: Pieces) -> impl Stream<Item = Result<W::Item, Infallible>> + Send {
    use futures::StreamExt;
    stream::unfold((writer, pieces, false), |(mut writer, mut pieces, mut over)| async move {
        loop {
            if let Some(item) = writer.ready().pop_front() {
                return Some((Ok(item), (writer, pieces, over)));
            }
            if over {
                return None;
            }
            // Whether this piece is the answer's last: its end, or a failure.
            over = match pieces.next().await {
                Some(Ok(Piece::Text(text, logprobs))) => {
                    writer.text(text, logprobs);
                    false
                }
                Some(Ok(Piece::Calls(calls))) => {
                    writer.calls(calls);
                    false
                }
                Some(Ok(Piece::End(end))) => {
                    writer.end(end);
                    true
                }
                Some(Err(e)) => {
                    writer.error(&e);
                    true
                }
                None => {
                    writer.error(&ApiError::from(graft_engine::engine::Collector::unfinished()));
                    true
                }
            };
        }
    })
}

/// [`pump`] as server-sent events.
pub fn pump_events<W: Writer<Item = Event>>(writer: W, pieces: Pieces) -> Response {
    Sse::new(pump(writer, pieces)).keep_alive(KeepAlive::default()).into_response()
}

/// An event named `kind` (`event: kind`), `body` its JSON data with `type: kind` added, as
/// Anthropic's and the Responses API's events are.
pub fn named_event(kind: &'static str, mut body: serde_json::Value) -> Event {
    body["type"] = serde_json::json!(kind);
    Event::default()
        .event(kind)
        .json_data(&body)
        .unwrap_or_else(|_| Event::default().event(kind).data("{}"))
}
