//! The API as a team deploys it: API keys with per-project rights, projects whose answers are
//! grounded in their repository (retrieval), project administration, embeddings and metrics.
//! One server with SmolLM2 and two projects over the `polyglot` fixture, shared by the tests
//! (one test, which holds a project's index from outside, starts its own).

use std::sync::OnceLock;

use base64::Engine as _;

use graft_core::config::{GenerationConfig, ServerConfig};
use graft_core::keys::{ApiKey, ApiKeys};
use graft_core::ProjectConfig;
use graft_tests::{kit_embedder, kit_file, logprob_tokens, start_server, ServerSetup, TestServer, EMBEDDING_MODEL, MODEL};
use serde_json::{json, Value};

const ADMIN: &str = "sk-test-admin-0123456789";
/// May use the `polyglot` project only.
const ALICE: &str = "sk-test-alice-0123456789";
/// May use the `archive` project only.
const BOB: &str = "sk-test-bob-0123456789ab";

/// The repository's internal API the questions are about, and the file that defines it.
/// `model.aliases`: another name of the base model, as a client with a fixed model name sends.
const ALIAS: &str = "gpt-4o-mini";
const QUESTION: &str = "How do I rotate the signing keys of a TokenVault with rotateSigningKeys?";
const DEFINING_FILE: &str = "auth/TokenVault.java";

/// `generation.max_extra_context_tokens` of the shared server: room for one small file.
const EXTRA_TOKENS: usize = 200;

fn key(name: &str, key: &str, projects: &[&str], admin: bool) -> ApiKey {
    ApiKey {
        name: name.to_owned(),
        key: key.to_owned(),
        projects: projects.iter().map(|p| (*p).to_owned()).collect(),
        admin,
    }
}

fn project(name: &str, retrieval: bool) -> ProjectConfig {
    ProjectConfig {
        retrieval,
        context_tokens: 600,
        // The fixture is no git repository: its remote is configured.
        remote_urls: vec![format!("https://github.com/acme/{name}.git")],
        ..ProjectConfig::new(name, "polyglot")
    }
}

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        start_server(ServerSetup {
            keys: ApiKeys::new(vec![
                key("admin", ADMIN, &["*"], true),
                key("alice", ALICE, &["polyglot"], false),
                key("bob", BOB, &["archive"], false),
            ]),
            // `archive` has retrieval off by default; a request can switch it on.
            projects: vec![project("polyglot", true), project("archive", false)],
            server: ServerConfig {
                default_model: Some("polyglot".into()),
                ..ServerConfig::default()
            },
            generation: GenerationConfig {
                max_extra_context_tokens: EXTRA_TOKENS,
                ..GenerationConfig::default()
            },
            aliases: vec![ALIAS.into()],
            ..ServerSetup::default()
        })
    })
}

async fn call(method: reqwest::Method, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    call_on(server(), method, path, token, body).await
}

/// [`call`] on a server of the test's own.
async fn call_on(server: &TestServer, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request reaches the server");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

async fn post(path: &str, token: &str, body: &Value) -> (u16, Value) {
    call(reqwest::Method::POST, path, Some(token), Some(body)).await
}

async fn get(path: &str, token: Option<&str>) -> (u16, Value) {
    call(reqwest::Method::GET, path, token, None).await
}

/// Asserts OpenAI's error shape with `status` and returns the message.
fn error_message(status: u16, body: &Value, expected: u16) -> String {
    assert_eq!(status, expected, "{body}");
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {body}"));
    assert!(body["error"]["type"].is_string(), "{body}");
    message.to_owned()
}

fn chat(model: &str, content: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 8,
    })
}

fn source_paths(body: &Value) -> Vec<String> {
    body["sources"]
        .as_array()
        .unwrap_or_else(|| panic!("no `sources` list: {body}"))
        .iter()
        .map(|s| s["path"].as_str().expect("a source has a path").to_owned())
        .collect()
}

#[tokio::test]
async fn requests_without_a_valid_key_get_401_and_health_needs_none() {
    let (status, body) = call(reqwest::Method::POST, "/v1/chat/completions", None, Some(&chat(MODEL, "hi"))).await;
    let message = error_message(status, &body, 401);
    assert!(
        message.contains("Authorization: Bearer"),
        "the message says how to send a key: {message}"
    );

    let (status, body) = post("/v1/chat/completions", "sk-test-not-a-key-000000", &chat(MODEL, "hi")).await;
    assert!(error_message(status, &body, 401).contains("Incorrect API key"), "{body}");

    let (status, body) = get("/v1/models", Some("sk-test-not-a-key-000000")).await;
    error_message(status, &body, 401);
    let (status, body) = call(reqwest::Method::POST, "/tokenize", None, Some(&json!({"content": "x"}))).await;
    error_message(status, &body, 401);
    // Tabby's reports of completions are counted for keys' holders alone.
    let (status, body) = call(reqwest::Method::POST, "/v1/events", None, Some(&json!({"type": "view"}))).await;
    error_message(status, &body, 401);
    // llama.cpp's /props tells the model's file and template: a key's holder alone reads it.
    let (status, body) = get("/props", None).await;
    error_message(status, &body, 401);
    let (status, body) = get("/props", Some(ALICE)).await;
    assert_eq!((status, &body["model_alias"]), (200, &json!(MODEL)), "{body}");

    for path in ["/health", "/v1/health"] {
        let (status, body) = get(path, None).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("ok")), "{path}: {body}");
    }
    // Ollama's heartbeat (its CLI sends HEAD /) and a browser's look: no key needed.
    let (status, body) = get("/", None).await;
    assert_eq!((status, body), (200, json!("graft is running\n")));
    let (status, _) = call(reqwest::Method::HEAD, "/", None, None).await;
    assert_eq!(status, 200);
    let (status, body) = call(reqwest::Method::POST, "/", None, None).await;
    error_message(status, &body, 405);
}

#[tokio::test]
async fn a_key_may_use_only_its_projects_and_sees_only_those() {
    // Alice: her project and the base model, nothing else.
    let (status, body) = post("/v1/chat/completions", ALICE, &chat("polyglot", "hi")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post("/v1/chat/completions", ALICE, &chat(MODEL, "hi")).await;
    assert_eq!(status, 200, "the base model is open to every key: {body}");
    let (status, body) = post("/v1/chat/completions", ALICE, &chat("archive", "hi")).await;
    let message = error_message(status, &body, 403);
    assert!(message.contains("`archive`"), "{message}");
    assert_eq!(body["error"]["param"], "model", "{body}");
    let (status, body) = post(
        "/v1/completions",
        BOB,
        &json!({"model": "polyglot", "prompt": "fn", "max_tokens": 2}),
    )
    .await;
    error_message(status, &body, 403);

    let (status, body) = get("/v1/models", Some(ALICE)).await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&MODEL) && ids.contains(&"polyglot"), "{ids:?}");
    assert!(!ids.contains(&"archive"), "a key does not see projects it may not use: {ids:?}");
    let polyglot = body["data"].as_array().unwrap().iter().find(|m| m["id"] == "polyglot").unwrap();
    assert_eq!(polyglot["parent"], MODEL, "a project names the model it runs on: {polyglot}");

    // An unknown model is 404, listing only what the key may use.
    let (status, body) = post("/v1/chat/completions", ALICE, &chat("no-such-project", "hi")).await;
    let message = error_message(status, &body, 404);
    assert!(message.contains("polyglot") && !message.contains("archive"), "{message}");
    // One model by id: only those the key may use; the tokenizer checks `model` too.
    let (status, body) = get("/v1/models/polyglot", Some(ALICE)).await;
    assert_eq!((status, &body["parent"]), (200, &json!(MODEL)), "{body}");
    let (status, body) = get("/v1/models/archive", Some(ALICE)).await;
    let message = error_message(status, &body, 404);
    let available = message.split("Available models:").nth(1).unwrap_or_default();
    assert!(available.contains("polyglot") && !available.contains("archive"), "{message}");
    let (status, body) = post("/tokenize", ALICE, &json!({"model": "archive", "content": "x"})).await;
    error_message(status, &body, 403);
}

/// Tabby's plugins name the repository a file is in (`git_url`, written as the clone was made),
/// not a model: the completion goes to the project on that repository the key may use, else
/// to `server.default_model`.
#[tokio::test]
async fn a_tabby_completion_goes_to_the_project_its_git_url_names() {
    let request = |git_url: Option<&str>| {
        json!({
            "language": "java",
            "segments": {"prefix": "TokenVault vault = new ", "suffix": ";\n", "filepath": "App.java", "git_url": git_url},
            "temperature": 0,
        })
    };
    // Bob's key is for `archive` alone.
    let (status, body) = post("/v1/completions", BOB, &request(Some("git@github.com:acme/archive"))).await;
    assert_eq!((status, &body["model"]), (200, &json!("archive")), "{body}");
    let (status, body) = post("/v1/completions", BOB, &request(None)).await;
    error_message(status, &body, 403);
    // Alice's key does not cover `archive`: the default model serves her.
    let (status, body) = post("/v1/completions", ALICE, &request(Some("https://github.com/acme/archive.git"))).await;
    assert_eq!((status, &body["model"]), (200, &json!("polyglot")), "{body}");
    // A repository graft does not serve: the default model.
    let (status, body) = post("/v1/completions", ADMIN, &request(Some("https://github.com/other/repo"))).await;
    assert_eq!((status, &body["model"]), (200, &json!("polyglot")), "{body}");
    // Tabby's debug view: the retrieved code, each snippet a chunk `sources` names, its body
    // in the prompt.
    let mut debug = request(None);
    debug["debug_options"] = json!({"return_snippets": true, "return_prompt": true});
    let (status, body) = post("/v1/completions", ALICE, &debug).await;
    assert_eq!(status, 200, "{body}");
    let snippets = body["debug_data"]["snippets"].as_array().expect("snippets");
    let sources = body["sources"].as_array().unwrap();
    assert!(!snippets.is_empty() && snippets.len() == sources.len(), "{body}");
    assert_eq!(snippets[0]["filepath"], "auth/TokenVault.java", "{body}");
    let prompt = body["debug_data"]["prompt"].as_str().unwrap();
    for (snippet, source) in snippets.iter().zip(sources) {
        assert_eq!(
            (&snippet["filepath"], &snippet["score"]),
            (&source["path"], &source["score"]),
            "{body}"
        );
        let code = snippet["body"].as_str().unwrap();
        assert!(
            !code.trim().is_empty() && prompt.contains(code.trim_end()),
            "{code:?} not in {prompt}"
        );
    }
    // Without the option, no debug data.
    let (_, body) = post("/v1/completions", ALICE, &request(None)).await;
    assert!(body.get("debug_data").is_none(), "{body}");
    // The project's status shows its remotes.
    let (_, status) = get("/v1/projects/archive", Some(ADMIN)).await;
    assert_eq!(status["remote_urls"], json!(["https://github.com/acme/archive.git"]), "{status}");
}

#[tokio::test]
async fn admin_endpoints_need_an_admin_key() {
    for (method, path, body) in [
        (reqwest::Method::GET, "/v1/projects", None),
        (reqwest::Method::GET, "/v1/projects/polyglot", None),
        (
            reqwest::Method::POST,
            "/v1/projects/polyglot/search",
            Some(json!({"query": "TokenVault"})),
        ),
        (reqwest::Method::POST, "/v1/projects/polyglot/reindex", Some(json!({}))),
        (
            reqwest::Method::POST,
            "/v1/load_lora_adapter",
            Some(json!({"lora_name": "x", "lora_path": "/tmp"})),
        ),
        (reqwest::Method::POST, "/v1/unload_lora_adapter", Some(json!({"lora_name": "x"}))),
        (reqwest::Method::GET, "/metrics", None),
    ] {
        let (status, answer) = call(method.clone(), path, Some(ALICE), body.as_ref()).await;
        let message = error_message(status, &answer, 403);
        assert!(message.contains("admin"), "{path}: {message}");
    }

    let (status, body) = get("/v1/projects", Some(ADMIN)).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["project"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["archive", "polyglot"]);
    assert_eq!(body["default_model"], "polyglot", "requests that name no model go to it");

    let (status, body) = get("/v1/projects/polyglot", Some(ADMIN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["indexed"], true, "{body}");
    assert!(body["chunks"].as_u64().unwrap() >= 22, "every fixture file is indexed: {body}");
    assert_eq!(body["retrieval"], true);

    let (status, body) = get("/v1/projects/nope", Some(ADMIN)).await;
    error_message(status, &body, 404);
}

#[tokio::test]
async fn chat_with_retrieval_cites_the_file_that_defines_the_api_and_without_it_does_not() {
    let (status, with) = post("/v1/chat/completions", ALICE, &chat("polyglot", QUESTION)).await;
    assert_eq!(status, 200, "{with}");
    let paths = source_paths(&with);
    assert!(
        paths.iter().any(|p| p == DEFINING_FILE),
        "retrieval finds the defining file: {paths:?}"
    );
    let source = with["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == DEFINING_FILE)
        .unwrap();
    let (start, end) = (source["start_line"].as_u64().unwrap(), source["end_line"].as_u64().unwrap());
    assert!(start >= 1 && end >= start, "{source}");
    assert!(source["score"].as_f64().unwrap() > 0.0, "{source}");
    // Which rankings found it: a chat question's search is keyword, vector and lookup.
    let found = source["found_by"].as_object().unwrap_or_else(|| panic!("no found_by: {source}"));
    assert!(
        ["keyword", "vector", "definition"].iter().any(|k| found.contains_key(*k)),
        "{source}"
    );

    let mut off = chat("polyglot", QUESTION);
    off["retrieval"] = json!(false);
    let (status, without) = post("/v1/chat/completions", ALICE, &off).await;
    assert_eq!(status, 200, "{without}");
    assert!(source_paths(&without).is_empty(), "retrieval off: no sources: {without}");

    // The retrieved code is in the prompt: it is much longer with retrieval than without.
    let tokens = |b: &Value| b["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(tokens(&with) > tokens(&without) + 100, "{} vs {}", tokens(&with), tokens(&without));

    // A project with retrieval off by default, switched on (with a smaller top_k) per request.
    let mut on = chat("archive", QUESTION);
    on["retrieval"] = json!({"enabled": true, "top_k": 2});
    let (status, body) = post("/v1/chat/completions", ADMIN, &on).await;
    assert_eq!(status, 200, "{body}");
    let paths = source_paths(&body);
    assert!(paths.len() <= 2 && paths.iter().any(|p| p == DEFINING_FILE), "{paths:?}");
    let (status, body) = post("/v1/chat/completions", ADMIN, &chat("archive", QUESTION)).await;
    assert_eq!(status, 200, "{body}");
    assert!(source_paths(&body).is_empty(), "{body}");

    // The base model has no project and no sources field.
    let (status, body) = post("/v1/chat/completions", ALICE, &chat(MODEL, QUESTION)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("sources").is_none(), "{body}");

    let mut bad = chat("polyglot", QUESTION);
    bad["retrieval"] = json!({"top_k": 0});
    let (status, body) = post("/v1/chat/completions", ALICE, &bad).await;
    assert!(error_message(status, &body, 400).contains("top_k"), "{body}");
}

#[tokio::test]
async fn a_streamed_chat_names_its_sources_in_the_first_chunk() {
    let mut request = chat("polyglot", QUESTION);
    request["stream"] = json!(true);
    request["debug"] = json!(true);
    let response = reqwest::Client::new()
        .post(server().url("/v1/chat/completions"))
        .bearer_auth(ALICE)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let events = graft_tests::sse_data(&text);
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let first: Value = serde_json::from_str(events[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant", "{first}");
    assert!(source_paths(&first).iter().any(|p| p == DEFINING_FILE), "{first}");
    // `debug`: the prompt as the model read it, chat template and retrieved code included.
    let prompt = first["debug"]["prompt"]
        .as_str()
        .unwrap_or_else(|| panic!("no debug prompt: {first}"));
    assert!(prompt.contains("<|im_start|>system") && prompt.contains(DEFINING_FILE), "{prompt}");
    assert!(
        prompt.contains(QUESTION) && prompt.trim_end().ends_with("<|im_start|>assistant"),
        "{prompt}"
    );
    for event in &events[1..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        assert!(
            chunk.get("sources").is_none() && chunk.get("debug").is_none(),
            "only the first chunk carries extras: {chunk}"
        );
    }
}

#[tokio::test]
async fn a_project_completion_gets_the_repository_s_code_first() {
    let request = json!({
        "model": "polyglot",
        "prompt": "public class KeyJob {\n    void run(TokenVault vault) {\n        vault.",
        "suffix": "\n    }\n}\n",
        "max_tokens": 6,
        "temperature": 0,
    });
    let mut debug = request.clone();
    debug["debug"] = json!(true);
    let (status, with) = post("/v1/completions", ALICE, &debug).await;
    assert_eq!(status, 200, "{with}");
    assert_eq!(with["object"], "text_completion");
    assert!(source_paths(&with).iter().any(|p| p == DEFINING_FILE), "{with}");
    // `debug` shows the exact prompt: the retrieved file first, the current file last.
    let prompt = with["debug"]["prompt"]
        .as_str()
        .unwrap_or_else(|| panic!("no debug prompt: {with}"));
    assert!(
        prompt.find(DEFINING_FILE) < prompt.find("void run(TokenVault vault)") && prompt.contains(DEFINING_FILE),
        "{prompt}"
    );
    assert!(prompt.ends_with("vault."), "{prompt}");
    assert_eq!(with["debug"]["prompt_tokens"], with["usage"]["prompt_tokens"], "{with}");

    let mut off = request.clone();
    off["retrieval"] = json!(false);
    let (status, without) = post("/v1/completions", ALICE, &off).await;
    assert_eq!(status, 200, "{without}");
    assert!(source_paths(&without).is_empty(), "{without}");
    assert!(without.get("debug").is_none(), "debug only when asked: {without}");
    let tokens = |b: &Value| b["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        tokens(&with) > tokens(&without) + 50,
        "the other files come first: {with} vs {without}"
    );
}

#[tokio::test]
async fn llama_cpp_infill_works_as_llama_vim_sends_it() {
    // As llama.vim sends it: no `model` (server.default_model is `polyglot`), extra files
    // from the editor, and the fields it reads.
    let request = json!({
        "input_prefix": "public class KeyJob {\n    void run(TokenVault vault) {\n",
        "prompt": "        vault.",
        "input_suffix": "\n    }\n}\n",
        "input_extra": [{"filename": "jobs/Schedule.java", "text": "// runs KeyJob nightly\nclass Schedule {}\n", "time": 1}],
        "n_predict": 4,
        "top_k": 40,
        "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": true,
        "t_max_predict_ms": 1000,
        "response_fields": ["content", "timings/prompt_n", "timings/predicted_n", "truncated", "tokens_cached"],
    });
    let (status, body) = post("/infill", ALICE, &request).await;
    assert_eq!(status, 200, "{body}");
    let fields: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields.len(), 5, "exactly the fields asked for: {body}");
    assert!(body["content"].is_string() && body["truncated"] == false, "{body}");
    let cached_n = body["tokens_cached"].as_u64().unwrap();
    assert!(body["timings/prompt_n"].as_u64().unwrap() + cached_n > 50, "{body}");
    assert!((1..=4).contains(&body["timings/predicted_n"].as_u64().unwrap()), "{body}");

    // The whole answer shows the exact prompt: the editor's file, then retrieved code, then
    // the current file with the line being typed.
    let mut whole = request.clone();
    whole.as_object_mut().unwrap().remove("response_fields");
    let (status, body) = post("/infill", ALICE, &whole).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "polyglot");
    assert!(source_paths(&body).iter().any(|p| p == DEFINING_FILE), "{body}");
    let prompt = body["prompt"].as_str().unwrap();
    let (defining, extra, current) = (
        prompt.find(DEFINING_FILE),
        prompt.find("jobs/Schedule.java"),
        prompt.find("void run(TokenVault vault) {\n        vault."),
    );
    assert!(
        extra < defining && defining < current && extra.is_some(),
        "extra, retrieved, current: {prompt}"
    );
    // The same prompt again: all but its last two tokens come from the prompt cache (unless
    // the other tests' requests pushed it out meanwhile), as llama.cpp counts them.
    let timings = &body["timings"];
    let (evaluated, read, cached) = (
        body["tokens_evaluated"].as_u64().unwrap(),
        timings["prompt_n"].as_u64().unwrap(),
        timings["cache_n"].as_u64().unwrap(),
    );
    assert_eq!(
        (evaluated, cached),
        (read + cached, body["tokens_cached"].as_u64().unwrap()),
        "{body}"
    );
    assert!(cached == 0 || read == 2, "{body}");
    assert!(["eos", "limit"].contains(&body["stop_type"].as_str().unwrap()), "{body}");

    assert!(body.get("completion_probabilities").is_none(), "only when n_probs asks: {body}");

    // n_probs: each token of the content, with the likeliest tokens at its place, in
    // llama.cpp's shape; greedy, each token is the likeliest.
    let mut probed = whole.clone();
    probed["n_probs"] = json!(3);
    probed["temperature"] = json!(0);
    // Ended by the model or n_predict, so every token counts (a time limit counts pieces).
    probed.as_object_mut().unwrap().remove("t_max_predict_ms");
    let (status, body) = post("/infill", ALICE, &probed).await;
    assert_eq!(status, 200, "{body}");
    let tokens = body["completion_probabilities"].as_array().unwrap();
    assert_eq!(tokens.len() as u64, body["tokens_predicted"].as_u64().unwrap(), "{body}");
    let bytes: Vec<u8> = tokens
        .iter()
        .flat_map(|t| t["bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8))
        .collect();
    assert!(bytes.starts_with(body["content"].as_str().unwrap().as_bytes()), "{body}");
    for token in tokens {
        let top = token["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{token}");
        assert_eq!((&top[0]["id"], &top[0]["token"]), (&token["id"], &token["token"]), "{token}");
        let logprobs: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(logprobs.windows(2).all(|w| w[0] >= w[1]) && logprobs[0] <= 0.0, "{token}");
    }
    let mut post_sampling = probed.clone();
    post_sampling["post_sampling_probs"] = json!(true);
    let (status, body) = post("/infill", ALICE, &post_sampling).await;
    error_message(status, &body, 400);
    assert_eq!(body["error"]["param"], "post_sampling_probs");
    probed["n_probs"] = json!(21);
    let (status, body) = post("/infill", ALICE, &probed).await;
    error_message(status, &body, 400);
    assert_eq!(body["error"]["param"], "n_probs");

    // Extra files beyond their budget: the oldest go first, and the answer says so.
    let filler = |name: &str| -> String { (0..10).map(|i| format!("let {name}_{i} = compute_{name}({i});\n")).collect() };
    let mut crowded = whole.clone();
    crowded["input_extra"] = json!([{"filename": "old.rs", "text": filler("old")}, {"filename": "new.rs", "text": filler("new")}]);
    crowded["retrieval"] = json!(false);
    let (status, body) = post("/infill", ALICE, &crowded).await;
    assert_eq!(status, 200, "{body}");
    let prompt = body["prompt"].as_str().unwrap();
    assert!(
        body["truncated"] == true && prompt.contains("new.rs") && !prompt.contains("old.rs"),
        "{body}"
    );

    // The plugins' cache-warming request: the extra files alone, nothing to generate. It is
    // answered with no content, and its prompt is the start of the next completion's, which
    // the prompt cache then reads no more.
    let warm = json!({
        "input_prefix": "", "input_suffix": "", "prompt": "", "n_predict": 0,
        "input_extra": request["input_extra"], "samplers": [], "cache_prompt": true,
        "t_max_prompt_ms": 1, "t_max_predict_ms": 1,
    });
    let (status, warmed) = post("/infill", ALICE, &warm).await;
    assert_eq!(status, 200, "{warmed}");
    assert_eq!(
        (&warmed["content"], &warmed["tokens_predicted"]),
        (&json!(""), &json!(0)),
        "{warmed}"
    );
    assert_eq!(warmed["generation_settings"]["n_predict"], 0, "{warmed}");
    let (status, body) = post("/infill", ALICE, &whole).await;
    assert_eq!(status, 200, "{body}");
    let warmed_prompt = warmed["prompt"].as_str().unwrap().trim_end();
    assert!(warmed_prompt.contains("jobs/Schedule.java"), "{warmed}");
    assert!(body["prompt"].as_str().unwrap().starts_with(warmed_prompt), "{warmed}\n{body}");
    // With nothing at all, there is nothing to read.
    let (status, body) = post("/infill", ALICE, &json!({"input_prefix": "", "n_predict": 0})).await;
    assert!(error_message(status, &body, 400).contains("input_extra"), "{body}");

    // Errors in OpenAI's shape: a key without the default project, streaming, n_predict.
    let (status, body) = post("/infill", BOB, &request).await;
    error_message(status, &body, 403);
    let (status, body) = post("/infill", ALICE, &json!({"input_prefix": "x", "stream": true})).await;
    assert!(error_message(status, &body, 400).contains("/v1/completions"), "{body}");
    let (status, body) = post("/infill", ALICE, &json!({"input_prefix": "x", "n_predict": 1_000_000})).await;
    assert!(error_message(status, &body, 400).contains("n_predict"), "{body}");
    assert_eq!(body["error"]["param"], "n_predict");
    let (status, body) = post("/infill", ALICE, &json!({"model": "archive", "input_prefix": "x"})).await;
    error_message(status, &body, 403);

    // llama.cpp's /completion takes the same default model, with the same rights, and reads
    // its prompt raw: no retrieved code.
    let raw = json!({"prompt": "class KeyJob {", "n_predict": 2});
    let (status, body) = post("/completion", ALICE, &raw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["model"], &body["prompt"]),
        (&json!("polyglot"), &json!("class KeyJob {")),
        "{body}"
    );
    let (status, body) = post("/completion", BOB, &raw).await;
    error_message(status, &body, 403);
}

#[tokio::test]
async fn project_search_and_reindex_follow_the_repository() {
    let (status, body) = post(
        "/v1/projects/polyglot/search",
        ADMIN,
        &json!({"query": "vault.rotateSigningKeys()", "k": 3}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let hits = body["data"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.len() <= 3, "{body}");
    assert!(hits.iter().any(|h| h["path"] == DEFINING_FILE), "{body}");
    for field in ["start_line", "end_line", "score", "symbol", "text"] {
        assert!(hits[0].get(field).is_some(), "hits carry `{field}`: {}", hits[0]);
    }
    let (status, body) = post("/v1/projects/polyglot/search", ADMIN, &json!({"query": "x", "mode": "fuzzy"})).await;
    assert!(error_message(status, &body, 400).contains("fuzzy"), "{body}");

    // A file added to the `archive` repository is found after a re-index.
    let repo = &server().repos[1];
    std::fs::write(
        repo.join("src/quota.rs"),
        "/// Charges a tenant's monthly quota.\npub fn debit_tenant_quota_units(tenant: &str, units: u64) -> bool {\n    units < 1000 && !tenant.is_empty()\n}\n",
    )
    .unwrap();
    let (status, body) = post("/v1/projects/archive/reindex", ADMIN, &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["report"]["files_added"], 1, "{body}");
    let (status, body) = post(
        "/v1/projects/archive/search",
        ADMIN,
        &json!({"query": "debit_tenant_quota_units", "mode": "keyword"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["path"], "src/quota.rs", "{body}");
}

/// A client that stops waiting for a re-index (a webhook's short timeout) does not cancel it:
/// the change is indexed anyway, and the project's status tells the run.
#[tokio::test]
async fn an_abandoned_reindex_runs_to_its_end() {
    // A server of its own: the change below is no other test's business.
    let server = start_server(ServerSetup {
        projects: vec![project("polyglot", true)],
        ..ServerSetup::default()
    });
    let call = |path: &'static str, body: Option<Value>| {
        let server = &server;
        async move {
            let method = if body.is_some() {
                reqwest::Method::POST
            } else {
                reqwest::Method::GET
            };
            call_on(server, method, path, None, body.as_ref()).await.1
        }
    };
    let client = reqwest::Client::new();
    let done = call("/v1/projects/polyglot/reindex", Some(json!({}))).await;
    assert!(done["report"].is_object(), "{done}");
    // The change takes seconds to embed, so the client gives up while the run is on.
    let source = kit_file("networkx-src").join("algorithms/shortest_paths");
    let mut brought = 0;
    for entry in std::fs::read_dir(&source).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "py") {
            std::fs::copy(entry.path(), server.repos[0].join(entry.file_name())).unwrap();
            brought += 1;
        }
    }
    let impatient = client
        .post(server.url("/v1/projects/polyglot/reindex"))
        .json(&json!({}))
        .timeout(std::time::Duration::from_millis(500))
        .send()
        .await;
    assert!(impatient.is_err(), "the client gave up first: {impatient:?}");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let status = call("/v1/projects/polyglot", None).await;
        if status["last_run"]["files_added"] == brought && status["reindexing"] == false {
            let found = call(
                "/v1/projects/polyglot/search",
                Some(json!({"query": "bellman_ford_predecessor_and_distance", "mode": "keyword"})),
            )
            .await;
            assert_eq!(found["data"][0]["path"], "weighted.py", "{found}");
            break;
        }
        assert!(std::time::Instant::now() < until, "the abandoned re-index never finished: {status}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn while_another_process_holds_the_index_chat_goes_on_without_retrieval() {
    // A server of its own, so that the index is not opened by other tests first.
    let server = start_server(ServerSetup {
        projects: vec![project("polyglot", true)],
        ..ServerSetup::default()
    });
    let send = |path: &'static str, body: Value| {
        let server = &server;
        async move { call_on(server, reqwest::Method::POST, path, None, Some(&body)).await }
    };
    // As a `graft index` run in another process would, this test holds the vector index.
    let held = graft_index::vectors::EdgeStore::open(&server.indexes[0].join("vectors"), kit_embedder().dims()).expect("open the index");

    let (status, body) = send("/v1/chat/completions", chat("polyglot", QUESTION)).await;
    assert_eq!(status, 200, "{body}");
    assert!(source_paths(&body).is_empty(), "no retrieval while the index is held: {body}");
    let (status, body) = send("/v1/projects/polyglot/search", json!({"query": "rotateSigningKeys"})).await;
    assert!(error_message(status, &body, 503).contains("another graft process"), "{body}");
    let (status, body) = send("/v1/projects/polyglot/reindex", json!({})).await;
    assert!(error_message(status, &body, 409).contains("open in another process"), "{body}");

    // Released, the index is opened on the next request and used again.
    drop(held);
    let (status, body) = send("/v1/chat/completions", chat("polyglot", QUESTION)).await;
    assert_eq!(status, 200, "{body}");
    assert!(source_paths(&body).contains(&DEFINING_FILE.to_owned()), "{body}");
}

#[tokio::test]
async fn embeddings_come_from_the_index_model() {
    let texts = [
        "fn add(a: i32, b: i32) -> i32 { a + b }",
        "fn sum(x: i32, y: i32) -> i32 { x + y }",
        "The weather in Lisbon is mild in winter.",
    ];
    let (status, body) = post("/v1/embeddings", ALICE, &json!({"model": EMBEDDING_MODEL, "input": texts})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], EMBEDDING_MODEL);
    let vectors: Vec<Vec<f64>> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i, "{d}");
            assert_eq!(d["object"], "embedding");
            d["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
        })
        .collect();
    assert_eq!(vectors.len(), 3);
    assert!(vectors.iter().all(|v| v.len() == 384));
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    for v in &vectors {
        assert!((dot(v, v) - 1.0).abs() < 1e-3, "unit length");
    }
    assert!(
        dot(&vectors[0], &vectors[1]) > dot(&vectors[0], &vectors[2]) + 0.2,
        "similar code is closer than prose"
    );
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 10, "{body}");

    // base64: the same floats, little-endian f32.
    let (status, encoded) = post(
        "/v1/embeddings",
        ALICE,
        &json!({"model": EMBEDDING_MODEL, "input": texts[0], "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(status, 200, "{encoded}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(floats.len(), 384);
    assert!(floats.iter().zip(&vectors[0]).all(|(a, b)| (f64::from(*a) - b).abs() < 1e-6));

    let (status, body) = post("/v1/embeddings", ALICE, &json!({"model": MODEL, "input": "x"})).await;
    assert!(error_message(status, &body, 404).contains(EMBEDDING_MODEL), "{body}");
    let (status, body) = post("/v1/embeddings", ALICE, &json!({"model": EMBEDDING_MODEL, "input": []})).await;
    assert_eq!(body["error"]["param"], "input", "{body}");
    error_message(status, &body, 400);
    // Token ids (what LangChain's OpenAIEmbeddings sends by default, in tiktoken's vocabulary):
    // a 400 that says how to send text instead.
    let (status, body) = post("/v1/embeddings", ALICE, &json!({"model": EMBEDDING_MODEL, "input": [[9906, 1917]]})).await;
    assert_eq!(body["error"]["param"], "input", "{body}");
    assert!(
        error_message(status, &body, 400).contains("check_embedding_ctx_length=False"),
        "{body}"
    );
}

#[tokio::test]
async fn metrics_count_requests_tokens_and_retrieval() {
    let (status, body) = post("/v1/chat/completions", ALICE, &chat("polyglot", QUESTION)).await;
    assert_eq!(status, 200, "{body}");
    let _ = post("/v1/chat/completions", ALICE, &chat("archive", "hi")).await;

    let response = reqwest::Client::new()
        .get(server().url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no `{prefix}` in\n{text}"))
    };
    assert!(value("graft_requests_total{route=\"/v1/chat/completions\",status=\"200\"}") >= 1.0);
    assert!(value("graft_requests_total{route=\"/v1/chat/completions\",status=\"403\"}") >= 1.0);
    assert!(value("graft_request_duration_seconds_count{route=\"/v1/chat/completions\"}") >= 2.0);
    assert!(value("graft_time_to_first_token_seconds_count{model=\"polyglot\"}") >= 1.0);
    assert!(value("graft_prompt_tokens_total{model=\"polyglot\"}") > 100.0);
    assert!(value("graft_completion_tokens_total{model=\"polyglot\"}") >= 1.0);
    assert!(value("graft_retrieval_duration_seconds_count") >= 1.0);
    assert!(text.contains("# TYPE graft_adapter_loads_total counter"), "{text}");
}

#[tokio::test]
async fn loading_an_adapter_that_is_not_there_is_a_404_naming_the_field() {
    let (status, body) = post("/v1/load_lora_adapter", ADMIN, &json!({"lora_name": "nowhere"})).await;
    let message = error_message(status, &body, 404);
    assert!(message.contains("nowhere") && message.contains("lora_path"), "{message}");
    assert_eq!(body["error"]["param"], "lora_name", "{body}");

    let missing = server().store.join("no-such-folder");
    let (status, body) = post(
        "/v1/load_lora_adapter",
        ADMIN,
        &json!({"lora_name": "nowhere", "lora_path": missing}),
    )
    .await;
    let message = error_message(status, &body, 404);
    assert!(message.contains("no-such-folder"), "{message}");
    assert_eq!(body["error"]["param"], "lora_path", "{body}");
}

#[tokio::test]
async fn an_adapter_may_not_take_a_project_s_name() {
    let (status, body) = post("/v1/load_lora_adapter", ADMIN, &json!({"lora_name": "polyglot"})).await;
    let message = error_message(status, &body, 400);
    assert!(message.contains("project"), "{message}");
    assert_eq!(body["error"]["param"], "lora_name", "{body}");
    // An adapter folder with a project's name in the store is not listed as an adapter: the
    // name means the project.
    let base = graft_engine::merge::BaseGguf::open(&graft_tests::kit_file("smollm2-135m-instruct")).unwrap();
    graft_tests::write_adapter(&server().store.join("archive"), &base, &["q_proj"], 4, 8.0, 0.1, false, 9);
    let (status, models) = get("/v1/models", Some(ADMIN)).await;
    assert_eq!(status, 200, "{models}");
    let archive: Vec<&Value> = models["data"].as_array().unwrap().iter().filter(|m| m["id"] == "archive").collect();
    assert_eq!(archive.len(), 1, "listed once: {models}");
    assert_eq!(archive[0]["parent"], MODEL, "as the project: {models}");
}

/// A request that names no model (vLLM and llama.cpp let it out; llama.vscode's chat does)
/// gets `server.default_model`, with that model's rights; `max_tokens: -1` (llama.cpp's "no
/// limit") is the route's default.
#[tokio::test]
async fn a_request_without_a_model_gets_the_default_model() {
    let mut request = chat("", "Say hello.");
    request.as_object_mut().unwrap().remove("model");
    request["retrieval"] = json!(false);
    request["max_tokens"] = json!(4);
    let (status, body) = post("/v1/chat/completions", ALICE, &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "polyglot", "{body}");
    let mut named = request.clone();
    named["model"] = json!("polyglot");
    let (_, named) = post("/v1/chat/completions", ALICE, &named).await;
    assert_eq!(body["choices"][0]["message"]["content"], named["choices"][0]["message"]["content"]);
    // A key that may not use the default model is refused, naming it.
    let (status, body) = post("/v1/chat/completions", BOB, &request).await;
    assert!(error_message(status, &body, 403).contains("polyglot"), "{body}");
    let completion = json!({"prompt": "class KeyJob {", "max_tokens": 2, "retrieval": false});
    let (status, body) = post("/v1/completions", ALICE, &completion).await;
    assert_eq!((status, &body["model"]), (200, &json!("polyglot")), "{body}");
    let (status, body) = post("/v1/embeddings", ALICE, &json!({"input": "a vault"})).await;
    assert_eq!((status, &body["model"]), (200, &json!(EMBEDDING_MODEL)), "{body}");

    // `max_tokens: -1`, and `max_completion_tokens: -1`: as if left out.
    request["max_tokens"] = json!(-1);
    request["temperature"] = json!(0);
    let (status, unlimited) = post("/v1/chat/completions", ALICE, &request).await;
    assert_eq!(status, 200, "{unlimited}");
    request.as_object_mut().unwrap().remove("max_tokens");
    let (_, left_out) = post("/v1/chat/completions", ALICE, &request).await;
    assert_eq!(unlimited["choices"], left_out["choices"], "{unlimited}");
    request["max_completion_tokens"] = json!(-1);
    let (status, body) = post("/v1/chat/completions", ALICE, &request).await;
    assert_eq!((status, &body["choices"]), (200, &left_out["choices"]), "{body}");
    request["max_completion_tokens"] = json!(1u64 << 33);
    let (status, body) = post("/v1/chat/completions", ALICE, &request).await;
    assert!(error_message(status, &body, 400).contains("max_completion_tokens"), "{body}");
}

/// An alias is the base model under another name: any key may use it, the answer is the
/// base's and names the alias, and the listings show it beside the base.
#[tokio::test]
async fn an_alias_answers_as_the_base_model_for_every_key() {
    let (status, base) = post("/v1/chat/completions", ALICE, &chat(MODEL, "Say hi.")).await;
    assert_eq!(status, 200, "{base}");
    let (status, aliased) = post("/v1/chat/completions", ALICE, &chat(ALIAS, "Say hi.")).await;
    assert_eq!(status, 200, "a key limited to one project may use it, as the base: {aliased}");
    assert_eq!(aliased["model"], ALIAS, "{aliased}");
    assert_eq!(aliased["choices"][0]["message"], base["choices"][0]["message"]);
    let (status, messages) = post(
        "/v1/messages",
        BOB,
        &json!({"model": ALIAS, "max_tokens": 8, "temperature": 0, "messages": [{"role": "user", "content": "Say hi."}]}),
    )
    .await;
    assert_eq!(status, 200, "{messages}");
    assert_eq!(
        messages["content"][0]["text"], base["choices"][0]["message"]["content"],
        "{messages}"
    );

    // The first two entries of a listing, by `field`: the base, then the alias.
    let first_two = |list: &Value, field: &str| -> Vec<String> {
        let entries = list.as_array().unwrap().iter().take(2);
        entries.map(|m| m[field].as_str().unwrap().to_owned()).collect()
    };
    for key in [ALICE, BOB] {
        let (_, models) = get("/v1/models", Some(key)).await;
        assert_eq!(first_two(&models["data"], "id"), [MODEL, ALIAS], "{models}");
        let (status, card) = get(&format!("/v1/models/{ALIAS}"), Some(key)).await;
        assert_eq!((status, &card["parent"]), (200, &Value::Null), "{card}");
        let (_, tags) = get("/api/tags", Some(key)).await;
        assert_eq!(first_two(&tags["models"], "name"), [MODEL, ALIAS], "{tags}");
    }
    let (status, show) = post("/api/show", ALICE, &json!({"model": ALIAS})).await;
    assert_eq!(status, 200, "{show}");
    assert_eq!(show["details"]["parent_model"], "", "the base itself: {show}");
    // Nothing else may take the name.
    let (status, body) = post("/v1/load_lora_adapter", ADMIN, &json!({"lora_name": ALIAS})).await;
    assert!(error_message(status, &body, 400).contains("alias"), "{body}");
}

/// A streamed Ollama answer: its status and each line's object.
async fn ndjson(path: &str, token: &str, body: &Value) -> (u16, Vec<Value>) {
    let (status, answer) = post(path, token, body).await;
    let lines = match answer {
        Value::String(text) => text.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect(),
        one => vec![one],
    };
    (status, lines)
}

/// Asserts Ollama's error shape (`{"error": "..."}`) with `status` and returns the message.
fn ollama_error(status: u16, body: &Value, expected: u16) -> String {
    assert_eq!(status, expected, "{body}");
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no Ollama error: {body}"))
        .to_owned()
}

#[tokio::test]
async fn ollama_clients_list_and_show_the_models_a_key_may_use() {
    // Clients check the version before anything else, with no key.
    let (status, body) = get("/api/version", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["version"].as_str().is_some_and(|v| v.split('.').count() == 3), "{body}");

    let (status, body) = get("/api/tags", Some(ALICE)).await;
    assert_eq!(status, 200, "{body}");
    let models = body["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&MODEL) && names.contains(&"polyglot") && names.contains(&EMBEDDING_MODEL),
        "{names:?}"
    );
    assert!(!names.contains(&"archive"), "a key sees only its projects: {names:?}");
    let base = models.iter().find(|m| m["name"] == MODEL).unwrap();
    let details = &base["details"];
    assert_eq!(
        (&details["format"], &details["family"]),
        (&json!("gguf"), &json!("llama")),
        "{base}"
    );
    assert!(details["parameter_size"].as_str().unwrap().ends_with('M'), "{base}");
    assert!(!details["quantization_level"].as_str().unwrap().is_empty(), "{base}");
    assert!(
        base["size"].as_u64().unwrap() > 1_000_000 && base["digest"].as_str().unwrap().len() == 64,
        "{base}"
    );
    assert!(base["modified_at"].as_str().unwrap().ends_with('Z'), "{base}");
    let project = models.iter().find(|m| m["name"] == "polyglot").unwrap();
    assert_eq!(project["details"]["parent_model"], MODEL, "{project}");

    // `:latest` names the same model; the context is the longest prompt graft takes.
    let (status, body) = post("/api/show", ALICE, &json!({"model": "polyglot:latest"})).await;
    assert_eq!(status, 200, "{body}");
    let capabilities: Vec<&str> = body["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(capabilities.contains(&"completion") && capabilities.contains(&"tools"), "{body}");
    assert_eq!(body["details"], project["details"], "as /api/tags lists it");
    let context = body["model_info"]["llama.context_length"].as_u64().unwrap();
    assert!(
        context > 0 && context <= GenerationConfig::default().max_prompt_tokens as u64,
        "{body}"
    );
    assert_eq!(body["model_info"]["general.architecture"], "llama");
    let (status, body) = post("/api/show", ALICE, &json!({"name": EMBEDDING_MODEL})).await;
    assert_eq!((status, &body["capabilities"]), (200, &json!(["embedding"])), "{body}");

    // Errors in Ollama's shape, with graft's statuses.
    let (status, body) = post("/api/show", ALICE, &json!({"model": "archive"})).await;
    ollama_error(status, &body, 403);
    let (status, body) = post("/api/show", ALICE, &json!({"model": "nope"})).await;
    assert!(ollama_error(status, &body, 404).contains("nope"), "{body}");
    let (status, body) = get("/api/tags", None).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn ollama_chat_and_generate_answer_as_the_openai_routes_do() {
    let messages = json!([{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name two colours."}]);
    let (_, openai) = post(
        "/v1/chat/completions",
        ADMIN,
        &json!({"model": MODEL, "messages": messages, "temperature": 0, "max_tokens": 16}),
    )
    .await;
    let expected = openai["choices"][0]["message"]["content"].as_str().unwrap();
    let request = json!({"model": format!("{MODEL}:latest"), "messages": messages, "options": {"temperature": 0, "num_predict": 16}});

    // Streamed by default: a line per piece, then the counts and durations.
    let (status, lines) = ndjson("/api/chat", ADMIN, &request).await;
    assert_eq!(status, 200, "{lines:?}");
    let (last, pieces) = lines.split_last().unwrap();
    assert!(pieces.len() > 1 && pieces.iter().all(|l| l["done"] == false), "{lines:?}");
    let streamed: String = lines.iter().map(|l| l["message"]["content"].as_str().unwrap()).collect();
    assert_eq!(streamed, expected);
    assert_eq!(last["done"], true, "{last}");
    assert_eq!(last["model"], format!("{MODEL}:latest"), "the name as the request gave it");
    assert_eq!(last["done_reason"], openai["choices"][0]["finish_reason"], "{last}");
    assert_eq!(last["eval_count"], openai["usage"]["completion_tokens"], "{last}");
    assert_eq!(last["prompt_eval_count"], openai["usage"]["prompt_tokens"], "{last}");
    // Of them, those the prompt cache supplied (the same prompt was just read, unless other
    // tests' prompts have pushed it out since).
    let cached = last["prompt_eval_cached_count"].as_u64().unwrap_or_else(|| panic!("{last}"));
    assert!(cached <= last["prompt_eval_count"].as_u64().unwrap(), "{last}");
    let nanos = |key: &str| last[key].as_u64().unwrap_or_else(|| panic!("{key}: {last}"));
    assert!(nanos("eval_duration") > 0 && nanos("prompt_eval_duration") > 0, "{last}");
    assert!(
        nanos("total_duration") >= nanos("prompt_eval_duration") + nanos("eval_duration"),
        "{last}"
    );

    // Whole with "stream": false.
    let mut whole = request.clone();
    whole["stream"] = json!(false);
    let (status, body) = post("/api/chat", ADMIN, &whole).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["message"]["content"].as_str(), &body["done"]), (Some(expected), &json!(true)));

    // /api/generate: the prompt as one user turn after `system` ...
    let generate = json!({"model": MODEL, "system": "Answer briefly.", "prompt": "Name two colours.", "stream": false,
        "options": {"temperature": 0, "num_predict": 16}});
    let (status, body) = post("/api/generate", ADMIN, &generate).await;
    assert_eq!((status, body["response"].as_str()), (200, Some(expected)), "{body}");
    // ... or as it is with `raw`, and with `suffix` filled in the middle: /v1/completions.
    for fields in [json!({}), json!({"suffix": "\n    return total\n"})] {
        let mut completion = json!({"model": MODEL, "prompt": "def total(xs):\n", "temperature": 0, "max_tokens": 12});
        let mut raw = json!({"model": MODEL, "prompt": "def total(xs):\n", "raw": true, "stream": false,
            "options": {"temperature": 0, "num_predict": 12}});
        for (key, value) in fields.as_object().unwrap() {
            completion[key] = value.clone();
            raw[key] = value.clone();
        }
        let (_, openai) = post("/v1/completions", ADMIN, &completion).await;
        let (status, body) = post("/api/generate", ADMIN, &raw).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["response"], openai["choices"][0]["text"], "{fields}");
    }
    // Log-probabilities as Ollama gives them (`logprobs`, `top_logprobs`): each token's, with
    // its alternatives, on the streamed lines or all on the whole answer; the tokens are the
    // OpenAI routes' for the same request.
    let (_, openai) = post(
        "/v1/chat/completions",
        ADMIN,
        &json!({"model": MODEL, "messages": messages, "temperature": 0, "max_tokens": 16, "logprobs": true, "top_logprobs": 2}),
    )
    .await;
    let expected = logprob_tokens(&openai["choices"][0]["logprobs"]["content"]);
    let mut asked = request.clone();
    asked["logprobs"] = json!(true);
    asked["top_logprobs"] = json!(2);
    let (status, lines) = ndjson("/api/chat", ADMIN, &asked).await;
    assert_eq!(status, 200, "{lines:?}");
    let streamed: Vec<String> = lines
        .iter()
        .filter(|l| l["done"] == false)
        .flat_map(|l| logprob_tokens(&l["logprobs"]))
        .collect();
    assert_eq!(streamed, expected, "{lines:?}");
    asked["stream"] = json!(false);
    let (status, body) = post("/api/chat", ADMIN, &asked).await;
    assert_eq!((status, logprob_tokens(&body["logprobs"])), (200, expected.clone()), "{body}");
    for entry in body["logprobs"].as_array().unwrap() {
        assert!(entry["logprob"].as_f64().unwrap() <= 0.0, "{entry}");
        assert_eq!(entry["top_logprobs"].as_array().unwrap().len(), 2, "{entry}");
    }
    assert!(
        post("/api/chat", ADMIN, &whole).await.1.get("logprobs").is_none(),
        "none unless asked"
    );
    let (_, openai) = post(
        "/v1/completions",
        ADMIN,
        &json!({"model": MODEL, "prompt": "def total(xs):\n", "temperature": 0, "max_tokens": 12, "logprobs": 1}),
    )
    .await;
    let raw = json!({"model": MODEL, "prompt": "def total(xs):\n", "raw": true, "stream": false, "logprobs": true, "top_logprobs": 1,
        "options": {"temperature": 0, "num_predict": 12}});
    let (status, body) = post("/api/generate", ADMIN, &raw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        logprob_tokens(&body["logprobs"]),
        openai["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
        "{body}"
    );

    // Nothing to generate: Ollama's load request.
    let (status, body) = post("/api/generate", ADMIN, &json!({"model": MODEL})).await;
    assert_eq!(
        (status, &body["done"], &body["done_reason"]),
        (200, &json!(true), &json!("load")),
        "{body}"
    );

    // A project's answer is grounded in its repository: its sources come with the last line.
    let ask =
        json!({"model": "polyglot", "messages": [{"role": "user", "content": QUESTION}], "options": {"temperature": 0, "num_predict": 8}});
    let (status, lines) = ndjson("/api/chat", ALICE, &ask).await;
    assert_eq!(status, 200, "{lines:?}");
    assert!(source_paths(lines.last().unwrap()).iter().any(|p| p == DEFINING_FILE), "{lines:?}");

    // Bad input: 400 in Ollama's shape, naming Ollama's fields.
    for (fields, needle) in [
        (json!({"options": {"num_predict": 1_000_000}}), "num_predict"),
        (json!({"options": {"temperature": 9}}), "temperature"),
        (json!({"options": {"mirostat": 2}}), "mirostat"),
        (json!({"think": true}), "think"),
        (json!({"logprobs": true, "top_logprobs": 21}), "top_logprobs"),
        (json!({"format": "yaml"}), "format"),
        (
            json!({"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}),
            "images",
        ),
    ] {
        let mut bad = request.clone();
        for (key, value) in fields.as_object().unwrap() {
            bad[key] = value.clone();
        }
        let (status, body) = post("/api/chat", ADMIN, &bad).await;
        assert!(ollama_error(status, &body, 400).contains(needle), "{fields}: {body}");
    }
    let (status, body) = post(
        "/api/chat",
        ADMIN,
        &json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    ollama_error(status, &body, 404);
}

#[tokio::test]
async fn ollama_tool_calls_and_embeddings_match_the_openai_routes() {
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let ask = json!([{"role": "user", "content": "I need the weather in Paris. Call the function."}]);
    let (_, openai) = post(
        "/v1/chat/completions",
        ADMIN,
        &json!({"model": MODEL, "messages": ask, "tools": tools, "temperature": 0}),
    )
    .await;
    let call = &openai["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "get_weather", "the control calls the tool: {openai}");
    let (status, body) = post(
        "/api/chat",
        ADMIN,
        &json!({"model": MODEL, "messages": ask, "tools": tools, "stream": false, "options": {"temperature": 0}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Ollama's calls carry their arguments as an object.
    let arguments: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["message"]["tool_calls"],
        json!([{"function": {"index": 0, "name": "get_weather", "arguments": arguments}}]),
        "{body}"
    );
    assert_eq!(body["done_reason"], "stop");

    // A conversation carrying the call and its result (Ollama's: no ids, the tool named)
    // reads as the same conversation in OpenAI's shape.
    let result = "18 degrees and sunny";
    let ollama_turns = json!([
        ask[0],
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": arguments}}]},
        {"role": "tool", "content": result, "tool_name": "get_weather"},
    ]);
    let openai_turns = json!([
        ask[0],
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1_0", "type": "function",
            "function": {"name": "get_weather", "arguments": arguments.to_string()}}]},
        {"role": "tool", "tool_call_id": "call_1_0", "content": result},
    ]);
    let (_, openai) = post(
        "/v1/chat/completions",
        ADMIN,
        &json!({"model": MODEL, "messages": openai_turns, "tools": tools, "temperature": 0, "max_tokens": 24}),
    )
    .await;
    let (status, body) = post(
        "/api/chat",
        ADMIN,
        &json!({"model": MODEL, "messages": ollama_turns, "tools": tools, "stream": false,
            "options": {"temperature": 0, "num_predict": 24}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"]["content"], openai["choices"][0]["message"]["content"], "{body}");
    assert_eq!(body["prompt_eval_count"], openai["usage"]["prompt_tokens"], "the same prompt");

    // Embeddings: Ollama's two endpoints give /v1/embeddings' vectors.
    let texts = ["fn add(a: i32, b: i32) -> i32 { a + b }", "The weather in Lisbon is mild."];
    let (_, openai) = post("/v1/embeddings", ALICE, &json!({"model": EMBEDDING_MODEL, "input": texts})).await;
    let (status, body) = post(
        "/api/embed",
        ALICE,
        &json!({"model": format!("{EMBEDDING_MODEL}:latest"), "input": texts}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let embeddings = body["embeddings"].as_array().unwrap();
    assert_eq!(embeddings.len(), 2);
    for (i, vector) in embeddings.iter().enumerate() {
        assert_eq!(vector, &openai["data"][i]["embedding"]);
    }
    assert_eq!(body["prompt_eval_count"], openai["usage"]["prompt_tokens"]);
    let (status, body) = post("/api/embeddings", ALICE, &json!({"model": EMBEDDING_MODEL, "prompt": texts[0]})).await;
    assert_eq!((status, &body["embedding"]), (200, &openai["data"][0]["embedding"]), "{body}");
    let (status, body) = post("/api/embed", ALICE, &json!({"model": EMBEDDING_MODEL, "input": []})).await;
    ollama_error(status, &body, 400);
}
