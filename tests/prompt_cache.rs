//! Prompt reuse: mistralrs's prefix cache with graft's fixes (vendor/README.md). An answer must
//! be the same whether its prompt's start was read now or reused from an earlier request.
//!
//! The model is the kit's SmolLM2 as stored (Q4_1), whose matmuls all take candle's per-row
//! kernel: a prompt read in pieces (of two tokens or more) then gives bit-for-bit what reading
//! it whole gives, so any difference is the cache's. The last test runs the Q8_0 copy graft
//! serves on a CPU, whose long reads took the gemm path (another order of additions) until
//! Q8_0 got one integer kernel for every row count (vendor/README.md).

use std::path::PathBuf;
use std::sync::Arc;

use graft_engine::merge::BaseGguf;
use graft_engine::requantize::{requantize, Restore};
use graft_engine::{BaseModel, ChatMessage, ChatRequest, Engine, Role, Sampling};
use graft_tests::{kit_file, repo_root};

/// SmolLM2 keeping `prompt_cache` prompts, one sequence at a time.
async fn engine(prompt_cache: usize) -> Arc<Engine> {
    engine_of(1, prompt_cache).await
}

/// SmolLM2 decoding up to `sequences` at once, keeping `prompt_cache` prompts.
async fn engine_of(sequences: usize, prompt_cache: usize) -> Arc<Engine> {
    engine_from(kit_file("smollm2-135m-instruct"), sequences, prompt_cache).await
}

/// The model in `file` decoding up to `sequences` at once, keeping `prompt_cache` prompts.
async fn engine_from(file: PathBuf, sequences: usize, prompt_cache: usize) -> Arc<Engine> {
    let mut base = BaseModel::cpu("smollm2", file, sequences);
    base.prompt_cache = prompt_cache;
    Arc::new(Engine::load(&base).await.expect("SmolLM2 loads"))
}

async fn answer(engine: &Engine, turns: &[(Role, &str)]) -> String {
    sample(engine, turns, Sampling::greedy(16)).await
}

async fn sample(engine: &Engine, turns: &[(Role, &str)], sampling: Sampling) -> String {
    let messages = turns.iter().map(|(role, text)| ChatMessage::new(*role, *text)).collect();
    engine.chat(ChatRequest { messages, sampling }).await.expect("an answer").text
}

/// A system message long enough that reading it is most of each prompt (over 300 tokens).
fn preamble() -> String {
    let code = std::fs::read_to_string(repo_root().join("tests/fixtures/polyglot/auth/TokenVault.java")).expect("fixture");
    format!("You answer questions about this Java class.\n\n{code}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_the_same_with_the_prompt_cache_as_without() {
    let cached = engine(2).await;
    let plain = engine(0).await;
    let system = preamble();
    let first = [(Role::System, system.as_str()), (Role::User, "What does rotateSigningKeys return?")];
    let second = [(Role::System, system.as_str()), (Role::User, "Which field holds the keys?")];

    let fresh = answer(&plain, &first).await;
    let other = answer(&plain, &second).await;
    assert!(!fresh.trim().is_empty());

    // The first request fills the cache; the second reuses the system message only; the third
    // is the first again, after the second wrote its own tokens past the shared start.
    assert_eq!(answer(&cached, &first).await, fresh, "nothing cached yet");
    assert_eq!(answer(&cached, &second).await, other, "the shared start reused");
    assert_eq!(
        answer(&cached, &first).await,
        fresh,
        "the first prompt again, all but its last two tokens reused"
    );

    // A next turn extends the first prompt and its answer: only the first prompt is reused
    // (the answer's tokens were computed one at a time, and its last one never read back).
    let next = [
        (Role::System, system.as_str()),
        (Role::User, "What does rotateSigningKeys return?"),
        (Role::Assistant, fresh.as_str()),
        (Role::User, "And what does it throw?"),
    ];
    assert_eq!(answer(&cached, &next).await, answer(&plain, &next).await, "a next turn of the chat");

    // More prompts than the cache keeps: the oldest go, and answers stay right.
    for i in 0..3 {
        let question = format!("Question {i}: what is the first field?");
        let turn = [(Role::System, system.as_str()), (Role::User, question.as_str())];
        assert_eq!(answer(&cached, &turn).await, answer(&plain, &turn).await, "{question}");
    }
    assert_eq!(answer(&cached, &first).await, fresh, "after evictions");

    // A seeded sample draws by its position in the whole sequence, also when most of the
    // prompt came from the cache (mistralrs handed samplers only the part left to read).
    let seeded = Sampling {
        temperature: 1.0,
        seed: Some(42),
        ..Sampling::greedy(16)
    };
    let drawn = sample(&plain, &first, seeded.clone()).await;
    assert_eq!(sample(&cached, &first, seeded.clone()).await, drawn, "seeded, from the cache");
    assert_eq!(sample(&cached, &first, seeded).await, drawn, "seeded, again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_choices_of_a_request_read_a_cached_prompt_alike() {
    // As a request for three choices runs: the same prompt three times at once, seeded 7, 8, 9,
    // decoded together. Once the prompt is cached, every choice must still read it as the
    // first time (when the first choice alone took the cached entry, its answer changed:
    // vendor/README.md, change 2).
    let engine = engine_of(3, 4).await;
    let turns = [(Role::User, "Write a Rust function that reverses a string.")];
    let seeded = |seed| Sampling {
        temperature: 1.0,
        seed: Some(seed),
        ..Sampling::greedy(24)
    };
    let choices = || async {
        let (a, b, c) = tokio::join!(
            sample(&engine, &turns, seeded(7)),
            sample(&engine, &turns, seeded(8)),
            sample(&engine, &turns, seeded(9))
        );
        [a, b, c]
    };
    let cold = choices().await;
    for run in 0..3 {
        assert_eq!(choices().await, cold, "run {run} with the prompt cached");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cached_prompts_of_unequal_lengths_answered_together_answer_as_alone() {
    // Two requests at once whose prompts are both cached (their starts reused to different
    // lengths) are never decoded in one batch: the scheduler takes turns, setting one aside
    // while the other steps. When the one stepping finished, the one set aside was read again
    // as a new prompt on top of its cache (vendor/README.md, change 8) and its answer went
    // wrong (here: `num1, num1,` for `num1, num2):`).
    let engine = engine_of(2, 4).await;
    let short = [(Role::User, "Write fn main.")];
    let long = [(Role::User, "Write a Python function that adds two numbers and prints the result.")];
    let alone = (answer(&engine, &short).await, answer(&engine, &long).await);
    for run in 0..3 {
        let together = tokio::join!(answer(&engine, &short), answer(&engine, &long));
        assert_eq!(together, alone, "run {run}");
    }
}

/// The Q8_0 copy of SmolLM2 that graft serves on a CPU: a prompt read after a cached start (a
/// few new rows per matmul) gives the log-probabilities of the same prompt read whole (hundreds
/// of rows), to the bit. With the long read on the gemm path they differed by up to 0.13.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_q8_0_copy_a_prompt_read_after_a_cached_start_gives_the_same_bits() {
    let folder = tempfile::tempdir().expect("a scratch folder");
    let copy = folder.path().join("smollm2-q8_0.gguf");
    let base = BaseGguf::open(&kit_file("smollm2-135m-instruct")).expect("the kit's SmolLM2");
    assert!(requantize(&base, &copy, Restore::Q8_0).expect("a Q8_0 copy") > 100);
    let (cached, plain) = (engine_from(copy.clone(), 1, 2).await, engine_from(copy, 1, 0).await);

    let system = preamble();
    async fn ask(engine: &Engine, system: &str, question: &str) -> Vec<graft_engine::TokenLogprob> {
        let messages = vec![ChatMessage::new(Role::System, system), ChatMessage::new(Role::User, question)];
        let mut sampling = Sampling::greedy(6);
        sampling.logprobs = Some(3);
        let request = ChatRequest { messages, sampling };
        engine.chat(request).await.expect("an answer").logprobs.expect("log-probabilities")
    }
    let question = "What does rotateSigningKeys return?";
    let whole = ask(&plain, &system, question).await;
    let prompt = plain
        .chat_prompt(&[ChatMessage::new(Role::System, &system)])
        .await
        .expect("a prompt");
    assert!(prompt.len() > 200, "a long read: {} tokens", prompt.len());

    // Another question first: the second request reuses the system message and reads only its
    // own question.
    ask(&cached, &system, "Which field holds the keys?").await;
    let after_start = ask(&cached, &system, question).await;
    assert_eq!(whole.len(), after_start.len());
    for (read_whole, read_after) in whole.iter().zip(&after_start) {
        assert_eq!(read_whole.token, read_after.token);
        assert_eq!(
            read_whole.logprob.to_bits(),
            read_after.logprob.to_bits(),
            "{}: {} vs {}",
            read_whole.token,
            read_whole.logprob,
            read_after.logprob
        );
        let tops = |t: &graft_engine::TokenLogprob| t.top.iter().map(|top| (top.id, top.logprob.to_bits())).collect::<Vec<_>>();
        assert_eq!(tops(read_whole), tops(read_after), "the likeliest tokens at {}", read_whole.token);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_says_how_much_of_the_prompt_the_cache_supplied() {
    let cached = engine(2).await;
    let system = preamble();
    let first = [(Role::System, system.as_str()), (Role::User, "What does rotateSigningKeys return?")];
    let second = [(Role::System, system.as_str()), (Role::User, "Which field holds the keys?")];
    let messages =
        |turns: &[(Role, &str)]| -> Vec<ChatMessage> { turns.iter().map(|(role, text)| ChatMessage::new(*role, *text)).collect() };
    let usage = |engine: Arc<Engine>, turns: Vec<ChatMessage>| async move {
        let request = ChatRequest {
            messages: turns,
            sampling: Sampling::greedy(4),
        };
        engine.chat(request).await.expect("an answer").usage
    };

    let read = usage(Arc::clone(&cached), messages(&first)).await;
    assert_eq!(read.cached_tokens, 0, "nothing cached yet: {read:?}");
    let again = usage(Arc::clone(&cached), messages(&first)).await;
    assert_eq!(
        again.cached_tokens,
        again.prompt_tokens - 2,
        "the same prompt: all but its last two tokens reused"
    );
    // Another question after the same system message: the shared start.
    let (a, b) = (
        cached.chat_prompt(&messages(&first)).await.unwrap(),
        cached.chat_prompt(&messages(&second)).await.unwrap(),
    );
    let shared = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    assert!(shared > 200 && shared < b.len(), "{shared} of {}", b.len());
    let other = usage(Arc::clone(&cached), messages(&second)).await;
    assert_eq!((other.prompt_tokens, other.cached_tokens), (b.len(), shared));

    // Without a prompt cache nothing is reused.
    let plain = engine(0).await;
    for _ in 0..2 {
        assert_eq!(usage(Arc::clone(&plain), messages(&first)).await.cached_tokens, 0);
    }
}
