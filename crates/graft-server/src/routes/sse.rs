//! The server-sent event stream that both generation routes answer with when a request says
//! `"stream": true`: an opening event where the format has one (chat's role delta), one event
//! per piece of text, the finish reason, a usage event when `stream_options.include_usage`
//! asks for it, then `data: [DONE]`. graft's extension fields ([`Extras`]: the sources a
//! project request used, the debug prompt) go on the first event.
//! An error during generation (a deadline, an engine failure) becomes one error event, then
//! `[DONE]`.
//!
//! This module owns the order of events; each route owns the shape of its chunks ([`Chunks`]).

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, Stream};
use graft_engine::StreamEvent;

use crate::augment::Source;
use crate::generation::Generation;
use crate::openai;

/// One event's content.
pub enum Part {
    /// The stream's opening event (only for formats whose [`Chunks::OPENS`] is true).
    Open,
    Text(String),
    Finish(&'static str),
    Usage(openai::Usage),
}

/// graft's extension fields of an answer, sent on a stream's first event.
#[derive(Debug, Default)]
pub struct Extras {
    pub sources: Option<Vec<Source>>,
    pub debug: Option<openai::DebugInfo>,
}

/// How a route writes its chunks.
pub trait Chunks: Send + Sync + 'static {
    /// Whether the stream opens with an event of its own before any text.
    const OPENS: bool;
    /// The event for `part`, with the extension fields on the stream's first event.
    fn event(&self, part: Part, extras: Extras) -> Event;
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
pub fn stream<C: Chunks>(generation: Generation, chunks: C, include_usage: bool, extras: Extras) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let chunks = Arc::new(chunks);
    let start = if C::OPENS { Phase::Open } else { Phase::Tokens };
    let events = stream::unfold((generation, start, Some(extras)), move |(mut generation, phase, mut extras)| {
        let chunks = Arc::clone(&chunks);
        async move {
            let (event, next) = match phase {
                Phase::Open => (chunks.event(Part::Open, extras.take().unwrap_or_default()), Phase::Tokens),
                Phase::Tokens => match generation.next().await {
                    Some(Ok(StreamEvent::Text(text))) => (chunks.event(Part::Text(text), extras.take().unwrap_or_default()), Phase::Tokens),
                    Some(Ok(StreamEvent::End { finish_reason, usage })) => {
                        let next = if include_usage { Phase::Usage(usage) } else { Phase::Done };
                        (chunks.event(Part::Finish(finish_reason.as_str()), extras.take().unwrap_or_default()), next)
                    }
                    Some(Err(e)) => (crate::error::stream_error_event(&e), Phase::Done),
                    None => (done(), Phase::Finished),
                },
                Phase::Usage(usage) => (chunks.event(Part::Usage(usage.into()), Extras::default()), Phase::Done),
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
