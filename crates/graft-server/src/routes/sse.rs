//! The server-sent event stream that both generation routes answer with when a request says
//! `"stream": true`: an opening event where the format has one (chat's role delta), one event
//! per piece of text, the finish reason, a usage event when `stream_options.include_usage`
//! asks for it, then `data: [DONE]`. graft's extension fields ([`Extras`]: the sources a
//! project request used, the debug prompt) go on the first event.
//! An error during generation (a deadline, an engine failure) becomes one error event, then
//! `[DONE]`.
//!
//! This module owns the order of events and the choice between a stream and a whole answer
//! ([`respond`]); each route owns the shape of its chunks and answers ([`Chunks`]).

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use graft_engine::{Completion, StreamEvent};

use crate::error::ApiError;
use crate::generation::Generation;
use crate::openai;
pub use crate::openai::Extras;

/// What one event's choice says.
pub enum Part {
    /// The stream's opening event (only for formats whose [`Chunks::OPENS`] is true).
    Open,
    /// A piece of text, with its tokens' log-probabilities when the request asked for them.
    Text(String, Option<Vec<graft_engine::TokenLogprob>>),
    Finish(&'static str),
}

/// How a route's answers look: the choice of each stream event, and the choice of a whole
/// answer. Everything around the choices (the envelope, the usage event, the extension
/// fields) is this module's.
pub trait Chunks: Send + Sync + 'static {
    /// Whether the stream opens with an event of its own before any text.
    const OPENS: bool;
    /// The `object` of stream events (`chat.completion.chunk`) and of a whole answer.
    const CHUNK_OBJECT: &'static str;
    const WHOLE_OBJECT: &'static str;
    type Chunk: serde::Serialize;
    type Whole: serde::Serialize;
    /// The id, time and model of every event of this answer.
    fn head(&self) -> &openai::AnswerHead;
    /// A stream event's choice.
    fn chunk(&self, part: Part) -> Self::Chunk;
    /// The choice of the whole answer.
    fn whole(&self, completion: Completion) -> Self::Whole;
}

/// The event for `part`, with the extension fields on the stream's first event.
fn event<C: Chunks>(chunks: &C, part: Part, extras: Extras) -> Event {
    json_event(&chunks.head().envelope(C::CHUNK_OBJECT, vec![chunks.chunk(part)], None, extras))
}

/// The usage event: no choices, as in OpenAI's API.
fn usage_event<C: Chunks>(chunks: &C, usage: graft_engine::Usage) -> Event {
    json_event(
        &chunks
            .head()
            .envelope::<C::Chunk>(C::CHUNK_OBJECT, Vec::new(), Some(usage.into()), Extras::default()),
    )
}

/// The answer to a generation request: server-sent events as `generation` goes when
/// `streaming`, else the whole answer once it has ended.
pub async fn respond<C: Chunks>(
    generation: Generation,
    chunks: C,
    streaming: bool,
    include_usage: bool,
    extras: Extras,
) -> Result<Response, ApiError> {
    if streaming {
        return Ok(stream(generation, chunks, include_usage, extras).into_response());
    }
    let completion = generation.collect().await?;
    let usage = Some(completion.usage.into());
    let whole = chunks
        .head()
        .envelope(C::WHOLE_OBJECT, vec![chunks.whole(completion)], usage, extras);
    Ok(axum::Json(whole).into_response())
}

/// Where a stream is.
enum Phase {
    Open,
    Tokens,
    Usage(graft_engine::Usage),
    Done,
    Finished,
}

/// `generation` as server-sent events written by `chunks`.
pub fn stream<C: Chunks>(
    generation: Generation,
    chunks: C,
    include_usage: bool,
    extras: Extras,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let chunks = Arc::new(chunks);
    let start = if C::OPENS { Phase::Open } else { Phase::Tokens };
    let events = stream::unfold((generation, start, Some(extras)), move |(mut generation, phase, mut extras)| {
        let chunks = Arc::clone(&chunks);
        async move {
            let (event, next) = match phase {
                Phase::Open => (event(&*chunks, Part::Open, extras.take().unwrap_or_default()), Phase::Tokens),
                Phase::Tokens => match generation.next().await {
                    Some(Ok(StreamEvent::Text { text, logprobs })) => (
                        event(&*chunks, Part::Text(text, logprobs), extras.take().unwrap_or_default()),
                        Phase::Tokens,
                    ),
                    Some(Ok(StreamEvent::End { finish_reason, usage })) => {
                        let next = if include_usage { Phase::Usage(usage) } else { Phase::Done };
                        (
                            event(&*chunks, Part::Finish(finish_reason.as_str()), extras.take().unwrap_or_default()),
                            next,
                        )
                    }
                    Some(Err(e)) => (crate::error::stream_error_event(&e), Phase::Done),
                    None => (done(), Phase::Finished),
                },
                Phase::Usage(usage) => (usage_event(&*chunks, usage), Phase::Done),
                Phase::Done => (done(), Phase::Finished),
                Phase::Finished => return None,
            };
            Some((Ok(event), (generation, next, extras)))
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
