//! Decoding together: the sequences a model is answering, whatever their lengths, decode in
//! one batch (every matrix product takes them all; each one's attention reads its own cache:
//! vendor/README.md, mistralrs-core change 17), and each answer is the one it gets alone.
//!
//! The model is the Q8_0 copy of SmolLM2 that graft serves on a CPU, whose matrix products give
//! every row the same bits at any row count, and the kit's Q4_1 file, whose few-row products
//! do too: so any difference would be the batch's.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::join_all;
use graft_engine::{BaseModel, ChatMessage, ChatRequest, Engine, Role, Sampling, StreamEvent};
use graft_tests::{kit_file, q8_0_copy};

/// The model in `file`, decoding up to `sequences` at once, without a prompt cache.
async fn engine(file: PathBuf, sequences: usize) -> Arc<Engine> {
    let mut base = BaseModel::cpu("smollm2", file, sequences);
    base.prompt_cache = 0;
    Arc::new(Engine::load(&base).await.expect("SmolLM2 loads"))
}

/// Questions of different lengths, so that their prompts, and the sequences decoding them,
/// never have one length.
const QUESTIONS: [&str; 4] = [
    "Write fn main.",
    "Write a Python function that adds two numbers and prints the result.",
    "What does a Rust borrow checker do? Answer in two sentences, for a programmer who knows C.",
    "List three sorting algorithms.",
];

fn request(question: &str, sampling: Sampling) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::new(Role::User, question)],
        sampling,
    }
}

/// Greedy for the even questions, a seeded draw for the odd ones: a sequence's draws are its
/// own in a batch too.
fn sampling(i: usize) -> Sampling {
    if i.is_multiple_of(2) {
        Sampling::greedy(24)
    } else {
        Sampling {
            temperature: 0.8,
            seed: Some(i as u64),
            ..Sampling::greedy(24)
        }
    }
}

async fn answers_alone_and_together(file: PathBuf) {
    let engine = engine(file, QUESTIONS.len()).await;
    let mut alone = Vec::new();
    for (i, question) in QUESTIONS.iter().enumerate() {
        alone.push(engine.chat(request(question, sampling(i))).await.expect("an answer").text);
    }
    assert!(alone.iter().all(|text| !text.trim().is_empty()), "{alone:?}");
    for run in 0..2 {
        let together = join_all(
            QUESTIONS
                .iter()
                .enumerate()
                .map(|(i, question)| engine.chat(request(question, sampling(i)))),
        )
        .await;
        let together: Vec<String> = together.into_iter().map(|answer| answer.expect("an answer").text).collect();
        assert_eq!(together, alone, "run {run}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_decoded_together_are_the_answers_decoded_alone() {
    let folder = tempfile::tempdir().expect("a scratch folder");
    answers_alone_and_together(q8_0_copy(folder.path())).await;
    answers_alone_and_together(kit_file("smollm2-135m-instruct")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_leaving_the_batch_mid_answer_leaves_the_others_answers_as_they_were() {
    // Three answers decode together; the client of the second hangs up after its third piece,
    // and the batch goes on without it: the others' answers are still the ones they get alone.
    let folder = tempfile::tempdir().expect("a scratch folder");
    let engine = engine(q8_0_copy(folder.path()), 3).await;
    let questions = [QUESTIONS[0], QUESTIONS[1], QUESTIONS[2]];
    let mut alone = Vec::new();
    for question in questions {
        alone.push(engine.chat(request(question, Sampling::greedy(32))).await.expect("an answer").text);
    }
    let streams = join_all(
        questions
            .iter()
            .map(|question| engine.chat_stream(request(question, Sampling::greedy(32)))),
    )
    .await;
    let answers = join_all(streams.into_iter().enumerate().map(|(i, stream)| async move {
        let mut stream = stream.expect("a stream");
        let mut text = String::new();
        let mut pieces = 0;
        while let Some(event) = stream.next().await {
            match event.expect("a token") {
                StreamEvent::Text { text: piece, .. } => {
                    text.push_str(&piece);
                    pieces += 1;
                    if i == 1 && pieces == 3 {
                        return None;
                    }
                }
                StreamEvent::End { .. } => break,
            }
        }
        Some(text)
    }))
    .await;
    assert_eq!(answers[1], None, "the second client hung up");
    assert_eq!(answers[0].as_deref(), Some(alone[0].as_str()));
    assert_eq!(answers[2].as_deref(), Some(alone[2].as_str()));
    // The engine serves on: the second question, asked again, is answered as alone.
    assert_eq!(
        engine
            .chat(request(questions[1], Sampling::greedy(32)))
            .await
            .expect("an answer")
            .text,
        alone[1]
    );
}
