//! Prompt reuse: mistralrs's prefix cache with graft's fixes (vendor/README.md). An answer must
//! be the same whether its prompt's start was read now or reused from an earlier request.
//!
//! The model is the kit's SmolLM2 as stored (Q4_1), whose matmuls all take candle's per-row
//! kernel: a prompt read in pieces (of two tokens or more) then gives bit-for-bit what reading
//! it whole gives, so any difference is the cache's. Two tests run the Q8_0 copy graft serves
//! on a CPU: one whose long reads took the gemm path (another order of additions) until Q8_0
//! got one integer kernel for every row count (vendor/README.md), and the prompt scoring one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use graft_engine::{BaseModel, ChatMessage, ChatRequest, CompletionRequest, Engine, Prompt, Role, Sampling, StreamEvent, TokenStream};
use graft_tests::{kit_file, pool, q8_0_copy, repo_root};

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

/// Two engines on the Q8_0 copy written into `folder`, one keeping two prompts, one none.
async fn q8_0_cached_and_plain(folder: &Path) -> (Arc<Engine>, Arc<Engine>) {
    let copy = q8_0_copy(folder);
    (engine_from(copy.clone(), 1, 2).await, engine_from(copy, 1, 0).await)
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

    // A next turn extends the first prompt and its answer: the answer's tokens come from the
    // cache too (all but its last, never read back), as far as the conversation's tokens agree.
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
async fn the_choices_of_a_request_keep_one_entry_between_them() {
    // Each choice ends with its own answer; kept as three entries they would push the other
    // prompt out of a cache of two.
    let engine = engine_of(3, 2).await;
    let system = preamble();
    let other = [(Role::System, system.as_str()), (Role::User, "Which field holds the keys?")];
    let usage = |turns: &[(Role, &str)], seed| {
        let messages = turns.iter().map(|(role, text)| ChatMessage::new(*role, *text)).collect();
        let sampling = Sampling {
            temperature: 1.0,
            seed: Some(seed),
            ..Sampling::greedy(8)
        };
        let engine = Arc::clone(&engine);
        async move { engine.chat(ChatRequest { messages, sampling }).await.expect("an answer").usage }
    };
    usage(&other, 1).await;
    let turns = [(Role::User, "Write a Rust function that reverses a string.")];
    tokio::join!(usage(&turns, 7), usage(&turns, 8), usage(&turns, 9));
    let again = usage(&other, 1).await;
    assert_eq!(
        again.cached_tokens,
        again.prompt_tokens - 2,
        "the other prompt is still cached: {again:?}"
    );
}

/// Each stream's text, and how many prompt tokens it read itself and reported as cached.
async fn drain(streams: Vec<TokenStream>) -> Vec<(String, usize, usize)> {
    let mut answers = Vec::new();
    for mut stream in streams {
        let mut text = String::new();
        let mut reported = None;
        while let Some(event) = stream.next().await {
            match event.expect("a token") {
                StreamEvent::Text { text: piece, .. } => text.push_str(&piece),
                StreamEvent::End { usage, .. } => reported = Some(usage.cached_tokens),
            }
        }
        answers.push((text, stream.prompt_tokens_read(), reported.expect("an end")));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_choices_read_their_prompt_once_between_them() {
    // Three seeded choices of a prompt of about 300 tokens: the pool reads the prompt once
    // ahead of them, each then reads its last two tokens from the cache, and the answers are
    // those of the same requests asked one by one; the usage still says that nothing was
    // cached before the request. Without a prompt cache, each reads the whole prompt.
    let folder = tempfile::tempdir().expect("a scratch folder");
    let system = preamble();
    let messages = vec![
        ChatMessage::new(Role::System, system.as_str()),
        ChatMessage::new(Role::User, "What does rotateSigningKeys return?"),
    ];
    let alone = pool(engine(0).await, folder.path(), 1);
    let tokens = alone.engine().chat_prompt(&messages).await.expect("the prompt");
    assert!(tokens.len() > 250, "{} tokens", tokens.len());
    let requests = || -> Vec<CompletionRequest> {
        (7..10)
            .map(|seed| CompletionRequest {
                prompt: Prompt::Tokens(tokens.clone()),
                sampling: Sampling {
                    temperature: 1.0,
                    seed: Some(seed),
                    ..Sampling::greedy(16)
                },
            })
            .collect()
    };
    let mut one_by_one = Vec::new();
    for request in requests() {
        one_by_one.push(alone.complete("smollm2", request).await.expect("an answer").text);
    }
    assert!(one_by_one.iter().any(|text| !text.trim().is_empty()));

    let shared = pool(engine_of(3, 4).await, folder.path(), 1);
    let choices = drain(shared.complete_choices("smollm2", requests()).await.expect("choices")).await;
    for (i, (text, read, reported)) in choices.iter().enumerate() {
        assert_eq!(text, &one_by_one[i], "choice {i}");
        assert_eq!((*read, *reported), (2, 0), "choice {i}: tokens read, tokens reported cached");
    }

    let uncached = pool(engine_of(3, 0).await, folder.path(), 1);
    let choices = drain(uncached.complete_choices("smollm2", requests()).await.expect("choices")).await;
    for (i, (text, read, reported)) in choices.iter().enumerate() {
        assert_eq!(text, &one_by_one[i], "choice {i} without a prompt cache");
        assert_eq!((*read, *reported), (tokens.len(), 0), "choice {i} without a prompt cache");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cached_prompts_of_unequal_lengths_answered_together_answer_as_alone() {
    // Two requests at once whose prompts are both cached (their starts reused to different
    // lengths) are read in turns: the scheduler sets one aside while the other steps (their
    // answers then decode in one batch, change 17). When the one stepping finished, the one
    // set aside was read again
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
    let (cached, plain) = q8_0_cached_and_plain(folder.path()).await;

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
    assert_same_bits(&whole, &after_start);
}

/// The same tokens, each with the same log-probability and likeliest tokens, to the bit.
fn assert_same_bits(whole: &[graft_engine::TokenLogprob], after: &[graft_engine::TokenLogprob]) {
    assert_eq!(whole.len(), after.len());
    for (read_whole, read_after) in whole.iter().zip(after) {
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

/// The Q8_0 copy graft serves on a CPU: a chat's next turn reads the earlier answer's keys and
/// values from the cache (computed one token at a time as it was generated), and answers with
/// the log-probabilities a fresh read of the whole conversation gives, to the bit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_q8_0_copy_a_next_turn_reuses_the_answer_with_the_same_bits() {
    let folder = tempfile::tempdir().expect("a scratch folder");
    let (cached, plain) = q8_0_cached_and_plain(folder.path()).await;
    let system = preamble();
    let question = "What does rotateSigningKeys return?";
    let first = vec![ChatMessage::new(Role::System, &system), ChatMessage::new(Role::User, question)];
    let ask = |engine: Arc<Engine>, messages: Vec<ChatMessage>| async move {
        let mut sampling = Sampling::greedy(24);
        sampling.logprobs = Some(3);
        engine.chat(ChatRequest { messages, sampling }).await.expect("an answer")
    };
    let earlier = ask(Arc::clone(&cached), first.clone()).await;
    let mut next = first.clone();
    next.push(ChatMessage::new(Role::Assistant, &earlier.text));
    next.push(ChatMessage::new(Role::User, "And what does it throw?"));

    let whole = ask(Arc::clone(&plain), next.clone()).await;
    let reused = ask(Arc::clone(&cached), next.clone()).await;
    let prompt = cached.chat_prompt(&first).await.expect("a prompt");
    assert!(
        reused.usage.cached_tokens > prompt.len() + 8,
        "the answer's tokens came from the cache too: {:?}, first prompt {} tokens",
        reused.usage,
        prompt.len()
    );
    assert_same_bits(&whole.logprobs.expect("logprobs"), &reused.logprobs.expect("logprobs"));
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

/// A prompt's log-probabilities (`Engine::prompt_logprobs`, a raw-logits request to
/// mistralrs) read the whole prompt whatever the cache holds, agree with what the model chose
/// when it generated those tokens, leave the prompt cached for the request that continues it,
/// and run beside other requests (mistralrs's engine asserts that a step's prompts all return
/// raw logits or none do; vendor/README.md change 10 keeps them apart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompts_log_probabilities_read_it_whole_and_agree_with_its_greedy_answer() {
    // The copy graft serves on a CPU: its long reads take the integer kernel, not the per-row
    // one: 16 s instead of 127 here, and scoring never reads a cached start, so any weights do.
    let folder = tempfile::tempdir().expect("a scratch folder");
    let engine = engine_from(q8_0_copy(folder.path()), 2, 2).await;
    let system = preamble();
    let messages = |question: &str| {
        vec![
            ChatMessage::new(Role::System, system.as_str()),
            ChatMessage::new(Role::User, question),
        ]
    };
    let mut sampling = Sampling::greedy(8);
    sampling.logprobs = Some(3);
    let answer = engine
        .chat(ChatRequest {
            messages: messages("What does rotateSigningKeys return?"),
            sampling: sampling.clone(),
        })
        .await
        .expect("an answer");
    let generated = answer.logprobs.expect("logprobs asked for");
    assert_eq!(generated.len(), 8, "{}", answer.text);
    let prompt = engine.chat_prompt(&messages("What does rotateSigningKeys return?")).await.unwrap();
    let mut tokens = prompt.clone();
    tokens.extend(generated.iter().map(|e| e.id));

    let scored = engine.prompt_logprobs(tokens.clone(), 3).await.expect("log-probabilities");
    assert_eq!(scored.len(), tokens.len() - 1, "one entry per token after the first");
    for (entry, &token) in scored.iter().zip(&tokens[1..]) {
        assert_eq!(entry.id, token);
        assert!(entry.logprob <= 0.0 && entry.logprob.is_finite(), "{entry:?}");
        assert_eq!(entry.top.len(), 3);
        assert!(
            entry.top.windows(2).all(|w| w[0].logprob >= w[1].logprob),
            "likeliest first: {entry:?}"
        );
        assert!(entry.top[0].logprob >= entry.logprob, "{entry:?}");
    }
    // The answer's tokens, scored after the prompt, are what greedy decoding chose: the
    // likeliest at each place (or tied with it), at the log-probability the generation wrote
    // down (a decode step and a prompt read round differently, so not to the bit).
    for (i, chosen) in generated.iter().enumerate() {
        let entry = &scored[prompt.len() - 1 + i];
        assert_eq!(entry.token, chosen.token);
        assert!(
            entry.top[0].id == chosen.id || entry.top[0].logprob - entry.logprob < 1e-3,
            "token {i} of the answer was greedy's choice: {entry:?}"
        );
        assert!(
            (entry.logprob - chosen.logprob).abs() < 0.05,
            "token {i}: scored {entry:?}, generated {chosen:?}"
        );
    }
    // Most of the prompt is in the cache by now (the chat above); the log-probabilities are
    // still those of the whole prompt, bit for bit.
    let again = engine.prompt_logprobs(tokens.clone(), 3).await.unwrap();
    assert_eq!(again, scored, "a cached start changes nothing");

    // Scoring leaves the prompt cached: the answer that continues it reads only the rest.
    let question = "Which field holds the keys?";
    let fresh = engine.chat_prompt(&messages(question)).await.unwrap();
    engine.prompt_logprobs(fresh.clone(), 0).await.unwrap();
    let continued = engine
        .chat(ChatRequest {
            messages: messages(question),
            sampling: Sampling::greedy(2),
        })
        .await
        .unwrap();
    assert!(
        continued.usage.cached_tokens >= fresh.len() - 2,
        "{:?} of {}",
        continued.usage,
        fresh.len()
    );

    // Beside each other and beside an answer to a prompt of the same length, each as alone.
    let other = "What does the class keep?";
    let other_prompt = engine.chat_prompt(&messages(other)).await.unwrap();
    let (a, b, c) = tokio::time::timeout(std::time::Duration::from_secs(300), async {
        tokio::join!(
            engine.prompt_logprobs(other_prompt.clone(), 3),
            engine.prompt_logprobs(other_prompt.clone(), 3),
            engine.chat(ChatRequest {
                messages: messages(other),
                sampling: Sampling::greedy(4),
            })
        )
    })
    .await
    .expect("the engine answers all three");
    let (a, b) = (a.expect("first scoring"), b.expect("second scoring"));
    c.expect("the answer beside them");
    assert_eq!(a, b);
    assert_eq!(a, engine.prompt_logprobs(other_prompt.clone(), 3).await.unwrap());

    // Bad input is an error, and the engine goes on.
    assert!(engine.prompt_logprobs(Vec::new(), 1).await.is_err());
    let vocab = engine.vocab_size().expect("the GGUF says") as u32;
    let error = engine.prompt_logprobs(vec![1, vocab], 1).await.unwrap_err().to_string();
    assert!(error.contains("prompt[1]"), "{error}");
    assert_eq!(engine.prompt_logprobs(tokens, 3).await.unwrap(), scored);
}
