//! Long prompts read in chunks (vendor/README.md, mistralrs-core change 18): while answers are
//! being decoded, a long prompt is read `model.prompt_chunk` tokens at a time, each chunk a
//! step of its own between the decoding batch's steps, so the answers in progress go on while
//! it is read; and a prompt whose client has gone is not read to its end.
//!
//! The model is the Q8_0 copy of SmolLM2 that graft serves on a CPU, whose matrix products and
//! attention give a prompt read in parts the bits of the prompt read whole: so an answer read
//! in chunks must be the very answer read whole.
//!
//! The chunk size is mistralrs's process-wide setting (`PROMPT_PIECE_TOKENS`): the tests here
//! set it, one at a time, and no other test binary sees it.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use graft_engine::{BaseModel, ChatMessage, ChatRequest, Engine, Role, Sampling, StreamEvent, TokenStream};
use graft_tests::{kit_file, q8_0_copy};
use mistralrs_core::PROMPT_PIECE_TOKENS;

/// The tests of this file one at a time: each sets the process-wide chunk size.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CHUNK: usize = 64;

/// The model in `file`, decoding up to two sequences at once, keeping `prompt_cache` prompts.
async fn engine(file: &Path, prompt_cache: usize) -> Arc<Engine> {
    let mut model = BaseModel::cpu("smollm2", file, 2);
    model.prompt_cache = prompt_cache;
    model.prompt_chunk = CHUNK;
    Arc::new(Engine::load(&model).await.expect("SmolLM2 loads"))
}

/// A question after about 700 tokens of code nobody here wrote (networkx's Floyd-Warshall).
fn long_question() -> ChatRequest {
    let file = kit_file("networkx-src").join("algorithms/shortest_paths/dense.py");
    let code = std::fs::read_to_string(file).expect("networkx's dense.py");
    let code: String = code.chars().take(2600).collect();
    ChatRequest {
        messages: vec![
            ChatMessage::new(Role::System, format!("You answer questions about this Python code.\n\n{code}")),
            ChatMessage::new(Role::User, "What does floyd_warshall_numpy return?"),
        ],
        sampling: Sampling::greedy(12),
    }
}

/// A short question with an answer of 48 tokens at least, decoding while the long one is read.
fn short_question() -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::new(Role::User, "Write a Python function that adds two numbers.")],
        sampling: Sampling {
            min_tokens: 48,
            ..Sampling::greedy(48)
        },
    }
}

enum Seen {
    /// A piece of the short answer.
    Short,
    /// The long question's first piece.
    LongBegins,
}

/// The short question's answer, and the long one's asked once the short one has begun: with
/// what the short answer streamed between the long question's sending and its first piece.
async fn together(engine: &Engine) -> (String, String, usize) {
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let mut short = engine.chat_stream(short_question()).await.expect("a stream");
    let first = next_text(&mut short).await.expect("the short answer's first piece");
    let reader = tokio::spawn({
        let seen = seen_tx.clone();
        async move {
            let mut text = first;
            while let Some(piece) = next_text(&mut short).await {
                text.push_str(&piece);
                let _ = seen.send(Seen::Short);
            }
            text
        }
    });
    let mut long = engine.chat_stream(long_question()).await.expect("a stream");
    let mut long_text = next_text(&mut long).await.expect("the long answer's first piece");
    let _ = seen_tx.send(Seen::LongBegins);
    while let Some(piece) = next_text(&mut long).await {
        long_text.push_str(&piece);
    }
    let short_text = reader.await.expect("the short answer's reader");
    drop(seen_tx);
    let mut during = 0;
    while let Some(event) = seen.recv().await {
        match event {
            Seen::Short => during += 1,
            Seen::LongBegins => break,
        }
    }
    (short_text, long_text, during)
}

async fn next_text(stream: &mut TokenStream) -> Option<String> {
    match stream.next().await?.expect("a token") {
        StreamEvent::Text { text, .. } => Some(text),
        StreamEvent::End { .. } => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_go_on_while_a_long_prompt_is_read_in_chunks_and_it_is_answered_as_read_whole() {
    let _one = ONE_AT_A_TIME.lock().await;
    let folder = tempfile::tempdir().expect("a scratch folder");
    let engine = engine(&q8_0_copy(folder.path()), 0).await;
    let prompt_tokens = engine.chat(long_question()).await.expect("an answer").usage.prompt_tokens;
    assert!(prompt_tokens > 8 * CHUNK, "{prompt_tokens} tokens: the long question is long");

    // Read whole (mistralrs as released): the short answer waits for the long prompt.
    PROMPT_PIECE_TOKENS.store(0, Ordering::Relaxed);
    let short_alone = engine.chat(short_question()).await.expect("an answer").text;
    let long_alone = engine.chat(long_question()).await.expect("an answer").text;
    let (short, long, during_whole) = together(&engine).await;
    assert_eq!((short.as_str(), long.as_str()), (short_alone.as_str(), long_alone.as_str()));

    // In chunks of 64 tokens: a piece of the short answer between any two chunks, and both
    // answers the same bits.
    PROMPT_PIECE_TOKENS.store(CHUNK, Ordering::Relaxed);
    let (short, long, during_chunks) = together(&engine).await;
    assert_eq!(short, short_alone);
    assert_eq!(long, long_alone);
    assert!(
        during_chunks >= prompt_tokens / CHUNK / 2 && during_chunks >= during_whole + 4,
        "while {prompt_tokens} tokens were read, {during_chunks} pieces of the short answer came in chunks of \
         {CHUNK}, {during_whole} read whole"
    );
    // Alone, in chunks too.
    assert_eq!(engine.chat(long_question()).await.expect("an answer").text, long_alone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_whose_client_hangs_up_is_not_read_to_its_end_and_what_was_read_is_reused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let folder = tempfile::tempdir().expect("a scratch folder");
    let copy = q8_0_copy(folder.path());
    let engine = engine(&copy, 4).await;

    // The client goes before the first chunk is read.
    drop(engine.chat_stream(long_question()).await.expect("a stream"));
    // The chunk being read when it went is kept in the prompt cache, and the next request for
    // the same prompt starts after it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = engine.chat(long_question()).await.expect("an answer");
    let cached = again.usage.cached_tokens;
    assert!(
        cached > 0 && cached < again.usage.prompt_tokens / 2 && cached.is_multiple_of(CHUNK),
        "{cached} of {} tokens cached: the read stopped after a chunk or so",
        again.usage.prompt_tokens
    );

    // Read whole on an engine without a prompt cache: the same answer.
    let mut plain = BaseModel::cpu("smollm2", &copy, 2);
    plain.prompt_cache = 0;
    let plain = Engine::load(&plain).await.expect("SmolLM2 loads");
    PROMPT_PIECE_TOKENS.store(0, Ordering::Relaxed);
    let whole = plain.chat(long_question()).await.expect("an answer");
    assert_eq!(again.text, whole.text);
}
