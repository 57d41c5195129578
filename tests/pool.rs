//! The model pool's policy, on real models from the kit: adapters load on first use, the least
//! recently used idle one makes room, busy ones are never evicted, concurrent first requests
//! load once, a replaced adapter switches new requests while a streaming one finishes on the
//! old version, and a failed load keeps the old version serving.
//!
//! The toy GGUF serves where only identity matters (its output is noise but deterministic);
//! SmolLM2 where a version's output must be told apart from another's.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use graft_engine::adapter::PROJECTIONS;
use graft_engine::merge::BaseGguf;
use graft_engine::pool::{AdapterStore, PoolError};
use graft_engine::{BaseModel, ChatMessage, ChatRequest, CompletionRequest, Engine, Pool, PoolLimits, Prompt, Role, Sampling, StreamEvent};
use graft_tests::{adapter_store, kit_file, write_adapter};

struct Fixture {
    pool: Arc<Pool>,
    base: BaseGguf,
    store: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Writes adapter `name` into the store, from `seed`.
    fn adapter(&self, name: &str, seed: u64) {
        write_adapter(
            &self.store.join(name),
            &self.base,
            &["q_proj", "v_proj", "down_proj"],
            8,
            16.0,
            0.3,
            false,
            seed,
        );
    }
}

async fn fixture(kit_id: &str, max_adapters: usize) -> Fixture {
    let gguf = kit_file(kit_id);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("adapters");
    std::fs::create_dir_all(&store).unwrap();
    let engine = Arc::new(Engine::load(&BaseModel::cpu("base", &gguf, 4)).await.unwrap());
    let adapters = AdapterStore {
        allowed_dirs: vec![dir.path().join("external")],
        ..adapter_store(dir.path())
    };
    let limits = PoolLimits {
        max_adapters,
        max_bytes: None,
    };
    Fixture {
        pool: Arc::new(Pool::new(engine, adapters, limits).unwrap()),
        base: BaseGguf::open(&gguf).unwrap(),
        store,
        _dir: dir,
    }
}

fn ask(prompt: &str, max_tokens: usize) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::new(Role::User, prompt)],
        sampling: Sampling::greedy(max_tokens),
    }
}

/// A raw completion request (the toy model has no chat template).
fn raw(prompt: &str, max_tokens: usize) -> CompletionRequest {
    CompletionRequest {
        prompt: Prompt::Text(prompt.into()),
        sampling: Sampling::greedy(max_tokens),
    }
}

const PROMPT: &str = "Write a Python function that reverses a string.";

/// The engine ids loaded next to the base, once pending removals have happened.
async fn engine_models_settle(pool: &Pool, expected: &[String]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut ids = pool.engine().added_models();
        ids.sort();
        let mut want = expected.to_vec();
        want.sort();
        if ids == want || Instant::now() > deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn id_of(pool: &Pool, name: &str) -> String {
    pool.acquire(name).await.unwrap().engine_id().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapters_load_on_first_use_and_the_least_recently_used_idle_one_makes_room() {
    let f = fixture("tiny-llama", 2).await;
    for (name, seed) in [("a", 1), ("b", 2), ("c", 3)] {
        f.adapter(name, seed);
    }
    assert!(f.pool.loaded().is_empty(), "nothing is loaded before it is used");
    let a = id_of(&f.pool, "a").await;
    let _b = id_of(&f.pool, "b").await;
    id_of(&f.pool, "a").await; // a is now the most recently used
    assert_eq!(f.pool.loaded(), vec!["b", "a"], "least recently used first");

    let c = id_of(&f.pool, "c").await;
    assert_eq!(f.pool.loaded(), vec!["a", "c"], "b, the least recently used, made room");
    assert_eq!(f.pool.stats().evictions, 1);
    assert_eq!(f.pool.stats().loads, 3);
    assert_eq!(engine_models_settle(&f.pool, &[a.clone(), c.clone()]).await, {
        let mut v = vec![a, c];
        v.sort();
        v
    });

    // b comes back on its next use, and a (now the least recently used) makes room.
    id_of(&f.pool, "b").await;
    assert_eq!(f.pool.loaded(), vec!["c", "b"]);
    assert_eq!(f.pool.stats().loads, 4);
    assert_eq!(f.pool.stats().merges, 3, "b's merge came from the cache the second time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_for_one_adapter_cause_one_load() {
    let f = fixture("tiny-llama", 2).await;
    f.adapter("a", 1);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let pool = Arc::clone(&f.pool);
            tokio::spawn(async move { pool.complete("a", raw("hello", 4)).await.map(|c| c.text) })
        })
        .collect();
    let mut texts = Vec::new();
    for task in tasks {
        texts.push(task.await.unwrap().unwrap());
    }
    assert_eq!(f.pool.stats().loads, 1, "eight concurrent first requests, one load");
    assert_eq!(f.pool.stats().merges, 1);
    assert_eq!(f.pool.engine().added_models().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_with_a_request_in_flight_is_never_evicted() {
    let f = fixture("tiny-llama", 1).await;
    f.adapter("a", 1);
    f.adapter("b", 2);
    let mut stream = f.pool.complete_stream("a", raw("hello", 200)).await.unwrap();
    assert!(matches!(stream.next().await, Some(Ok(StreamEvent::Text { .. }))));

    let err = f.pool.acquire("b").await.err().expect("no room while a is busy");
    assert!(matches!(err, PoolError::Busy { .. }), "{err:?}");
    assert!(err.to_string().contains("adapters.max_loaded"), "{err}");
    assert_eq!(f.pool.loaded(), vec!["a"]);

    // The stream goes on undisturbed, and once it is over a makes room for b.
    let mut ended = false;
    while let Some(event) = stream.next().await {
        if let StreamEvent::End { .. } = event.unwrap() {
            ended = true;
        }
    }
    assert!(ended);
    drop(stream);
    let b = id_of(&f.pool, "b").await;
    assert_eq!(f.pool.loaded(), vec!["b"]);
    assert_eq!(engine_models_settle(&f.pool, std::slice::from_ref(&b)).await, vec![b]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_an_adapter_switches_new_requests_while_a_streaming_one_finishes_on_the_old() {
    let f = fixture("smollm2-135m-instruct", 2).await;
    f.adapter("a", 1);
    let v1_answer = f.pool.chat("a", ask(PROMPT, 32)).await.unwrap().text;
    let v1 = id_of(&f.pool, "a").await;

    // A request starts streaming on v1 ...
    let mut streaming = f.pool.chat_stream("a", ask(PROMPT, 32)).await.unwrap();
    let mut streamed = match streaming.next().await {
        Some(Ok(StreamEvent::Text { text: t, .. })) => t,
        other => panic!("expected text, got {other:?}"),
    };

    // ... the adapter's files are replaced, and the next request gets the new version.
    f.adapter("a", 99);
    let v2_answer = f.pool.chat("a", ask(PROMPT, 32)).await.unwrap().text;
    let v2 = id_of(&f.pool, "a").await;
    assert_ne!(v1, v2, "a new version under a new engine id");
    assert_ne!(v2_answer, v1_answer, "new requests run on the new weights");
    assert_eq!(f.pool.stats().loads, 2);

    assert!(
        f.pool.engine().added_models().contains(&v1),
        "v1 stays loaded while its request runs"
    );

    // The streaming request finishes on v1, unchanged.
    while let Some(event) = streaming.next().await {
        if let StreamEvent::Text { text: t, .. } = event.unwrap() {
            streamed.push_str(&t);
        }
    }
    assert_eq!(streamed, v1_answer, "the request in flight finished on the old version");
    drop(streaming);
    assert_eq!(
        engine_models_settle(&f.pool, std::slice::from_ref(&v2)).await,
        vec![v2],
        "v1 left the engine after its last request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_keeps_the_previous_version_serving() {
    let f = fixture("smollm2-135m-instruct", 2).await;
    f.adapter("a", 1);
    let answer = f.pool.chat("a", ask(PROMPT, 16)).await.unwrap().text;
    let v1 = id_of(&f.pool, "a").await;

    // New files that cannot load: a rank over the limit.
    let config = f.store.join("a/adapter_config.json");
    let text = std::fs::read_to_string(&config).unwrap().replace("\"r\":8", "\"r\":1000");
    std::fs::write(&config, text).unwrap();

    assert_eq!(f.pool.chat("a", ask(PROMPT, 16)).await.unwrap().text, answer, "v1 keeps serving");
    assert_eq!(id_of(&f.pool, "a").await, v1);
    let err = f.pool.load("a", None).await.unwrap_err();
    assert!(
        err.to_string().contains("adapter `a`") && err.to_string().contains("rank r = 1000"),
        "{err}"
    );
    let info = f.pool.adapters().into_iter().find(|a| a.name == "a").unwrap();
    assert_eq!(info.loaded.as_deref(), Some(v1.as_str()));
    assert!(info.last_error.unwrap().contains("rank"));
    assert_eq!(f.pool.stats().failures, 2, "the request's attempt and the explicit one");

    // Fixed files load on the next request.
    f.adapter("a", 2);
    assert_ne!(id_of(&f.pool, "a").await, v1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_validation_error_names_the_adapter_and_the_problem() {
    let f = fixture("tiny-llama", 2).await;
    let smol = BaseGguf::open(&kit_file("smollm2-135m-instruct")).unwrap();
    let expect_err = |name: &'static str, fragment: &'static str| {
        let pool = Arc::clone(&f.pool);
        async move {
            let err = pool.acquire(name).await.err().unwrap_or_else(|| panic!("{name} must not load"));
            let text = err.to_string();
            assert!(text.contains(&format!("`{name}`")) && text.contains(fragment), "{name}: {text}");
        }
    };

    write_adapter(&f.store.join("other-base"), &smol, &["q_proj"], 4, 8.0, 0.1, false, 3);
    expect_err("other-base", "wrong base model").await;

    write_adapter(&f.store.join("big"), &f.base, &["q_proj"], 128, 8.0, 0.1, false, 4);
    expect_err("big", "adapters.max_rank").await;

    write_adapter(&f.store.join("no-weights"), &f.base, &["q_proj"], 4, 8.0, 0.1, false, 5);
    std::fs::remove_file(f.store.join("no-weights/adapter_model.safetensors")).unwrap();
    expect_err("no-weights", "adapter_model.safetensors is missing").await;

    write_adapter(&f.store.join("bad-json"), &f.base, &["q_proj"], 4, 8.0, 0.1, false, 6);
    std::fs::write(f.store.join("bad-json/adapter_config.json"), "{ not json").unwrap();
    expect_err("bad-json", "not a PEFT LoRA config").await;

    write_adapter(&f.store.join("half"), &f.base, PROJECTIONS, 4, 8.0, 0.1, false, 7);
    let config = std::fs::read_to_string(f.store.join("half/adapter_config.json")).unwrap();
    std::fs::write(f.store.join("half/adapter_config.json"), config.replace("\"LORA\"", "\"IA3\"")).unwrap();
    expect_err("half", "only LORA adapters").await;

    // Names that are not adapters at all.
    assert!(matches!(f.pool.acquire("missing").await, Err(PoolError::Unknown(_))));
    assert!(matches!(f.pool.acquire("../adapters/half").await, Err(PoolError::Unknown(_))));
    assert!(matches!(f.pool.load("../x", None).await, Err(PoolError::InvalidName(_))));
    // Paths outside the store and the allowed folders are refused.
    let outside = tempfile::tempdir().unwrap();
    write_adapter(&outside.path().join("x"), &f.base, &["q_proj"], 4, 8.0, 0.1, false, 8);
    let err = f.pool.load("x", Some(&outside.path().join("x"))).await.unwrap_err();
    assert!(matches!(err, PoolError::OutsideStore { .. }), "{err:?}");
    assert!(f.pool.loaded().is_empty(), "nothing invalid was loaded");
    assert_eq!(f.pool.engine().added_models(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_by_path_registers_and_unloading_forgets() {
    let f = fixture("tiny-llama", 2).await;
    let external = f._dir.path().join("external/mine");
    write_adapter(&external, &f.base, &["q_proj"], 4, 8.0, 0.3, false, 9);
    let report = f.pool.load("mine", Some(Path::new(&external))).await.unwrap();
    assert!(report.loaded_now && report.merged_now);
    assert!(f.pool.adapters().iter().any(|a| a.name == "mine" && a.loaded.is_some()));
    let again = f.pool.load("mine", None).await.unwrap();
    assert!(!again.loaded_now, "the same files are not loaded twice");

    f.pool.unload("mine").unwrap();
    assert!(matches!(f.pool.acquire("mine").await, Err(PoolError::Unknown(_))));
    assert!(matches!(f.pool.unload("mine"), Err(PoolError::Unknown(_))));
    assert!(engine_models_settle(&f.pool, &[]).await.is_empty());
}
