//! What a hostile but fair tester found (issue 9), each reproduced against a real server:
//! adapters that reach outside their folders through links, a FIFO where a file should be,
//! non-finite weights, failed loads that stayed listed, characters cut by `max_tokens`, token
//! ids outside the vocabulary, trailing garbage, chat fields that were silently ignored, an
//! /infill line too long for any prompt, and streams cut by shutdown without a word.
//!
//! The bounded probe of the HTTP layer itself (smuggling, slow clients, floods) is
//! `tests/python/probe.py`, run by `crates/graft/tests/probe.rs` against `graft serve`.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use graft_engine::merge::BaseGguf;
use graft_tests::{smollm2_server, start_stoppable_server, write_adapter, ServerSetup, MODEL};
use serde_json::{json, Value};

async fn post(path: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(smollm2_server().url(path))
        .json(body)
        .send()
        .await
        .expect("request reaches the server");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    // The adapter endpoints answer success in plain text, as vLLM does.
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn post_raw(path: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(smollm2_server().url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request reaches the server");
    let status = response.status().as_u16();
    (status, response.json().await.expect("every error is JSON"))
}

fn error(status: u16, body: &Value, expected: u16) -> (String, Value, Value) {
    assert_eq!(status, expected, "{body}");
    let e = &body["error"];
    (
        e["message"].as_str().unwrap_or_default().to_owned(),
        e["param"].clone(),
        e["code"].clone(),
    )
}

fn base() -> BaseGguf {
    BaseGguf::open(&graft_tests::kit_file("smollm2-135m-instruct")).unwrap()
}

fn chat_on(model: &str, content: &str, max_tokens: u32) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": max_tokens})
}

async fn models() -> Vec<String> {
    let response = reqwest::get(smollm2_server().url("/v1/models")).await.unwrap();
    let body: Value = response.json().await.unwrap();
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn max_tokens_inside_a_multi_token_character_ends_with_length_and_whole_characters() {
    // Chat: an emoji takes several tokens; four tokens end inside one.
    let request = json!({"model": MODEL, "messages": [{"role": "user", "content": "😀"}], "max_tokens": 4, "temperature": 0});
    let (status, body) = post("/v1/chat/completions", &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 4, "{body}");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{body}");
    assert!(
        !body["choices"][0]["message"]["content"].as_str().unwrap().contains('\u{fffd}'),
        "{body}"
    );

    // The same as a stream: a finish reason and a usage chunk, then [DONE].
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let text = reqwest::Client::new()
        .post(smollm2_server().url("/v1/chat/completions"))
        .json(&streamed)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = graft_tests::sse_data(&text);
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "length"), "{text}");
    let usage = chunks.iter().find(|c| c["usage"].is_object()).expect("a usage chunk");
    assert_eq!(usage["usage"]["completion_tokens"], 4, "{text}");

    // Completions count tokens, not pieces of text.
    for max_tokens in [1, 3] {
        let (status, body) = post(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": "😀😀😀😀😀", "max_tokens": max_tokens, "temperature": 0}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
        assert_eq!(body["usage"]["completion_tokens"], max_tokens, "{body}");
    }
}

#[tokio::test]
async fn a_token_id_outside_the_vocabulary_is_400_and_no_answer_carries_a_backtrace() {
    let (status, body) = post(
        "/v1/completions",
        &json!({"model": MODEL, "prompt": [1, 2, 49152], "max_tokens": 2}),
    )
    .await;
    let (message, param, _) = error(status, &body, 400);
    assert!(message.contains("49152") && message.contains("vocabulary of 49152"), "{message}");
    assert_eq!(param, "prompt");
    assert!(!message.contains("backtrace") && !message.contains(".rs:"), "{message}");
    let (status, body) = post("/v1/completions", &json!({"model": MODEL, "prompt": [49151], "max_tokens": 1})).await;
    assert_eq!(status, 200, "the last id of the vocabulary is fine: {body}");
}

#[tokio::test]
async fn trailing_garbage_after_the_json_body_is_400() {
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}).to_string();
    for tail in [" garbage", "{}", "\u{0}"] {
        let (status, answer) = post_raw("/v1/chat/completions", &format!("{body}{tail}")).await;
        let (message, _, _) = error(status, &answer, 400);
        assert!(message.contains("after the JSON value"), "{tail:?}: {message}");
    }
    let (status, answer) = post_raw("/v1/chat/completions", &format!("{body}\n  \n")).await;
    assert_eq!(status, 200, "white space after the value is fine: {answer}");
}

#[tokio::test]
async fn chat_fields_graft_does_not_implement_are_refused_not_ignored() {
    let asks = [("functions", json!([{"name": "f"}])), ("function_call", json!("auto"))];
    for (field, value) in asks {
        let mut request = chat_on(MODEL, "hi", 2);
        request[field] = value;
        let (status, body) = post("/v1/chat/completions", &request).await;
        let (message, param, code) = error(status, &body, 400);
        assert_eq!(param, field, "{body}");
        assert_eq!(code, "unsupported_parameter", "{body}");
        assert!(message.contains("not supported"), "{message}");
    }
    // Their "off" values are accepted, as clients often send them.
    let mut request = chat_on(MODEL, "hi", 2);
    for (field, value) in [
        ("response_format", json!({"type": "text"})),
        ("tools", json!([])),
        ("tool_choice", json!("none")),
        ("logprobs", json!(false)),
    ] {
        request[field] = value;
    }
    let (status, body) = post("/v1/chat/completions", &request).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_infill_line_too_long_for_any_prompt_says_so() {
    // One line of about 60 KB (the test server takes bodies up to 64 KB; the finding was 3 MB).
    let line = "x = [".to_owned() + &"1, ".repeat(19_000) + "]";
    let (status, body) = post("/infill", &json!({"input_prefix": line, "input_suffix": "", "n_predict": 4})).await;
    let (message, param, _) = error(status, &body, 400);
    assert_eq!(param, "input_prefix", "{body}");
    assert!(
        message.contains("line before the cursor") && message.contains("max_prompt_tokens"),
        "{message}"
    );
    assert!(!message.contains("must not be empty"), "{message}");
}

/// A PEFT adapter for SmolLM2 in `dir`.
fn adapter(dir: &Path, seed: u64) {
    write_adapter(dir, &base(), &["q_proj", "v_proj"], 4, 8.0, 0.3, false, seed);
}

#[tokio::test]
async fn adapter_files_must_really_lie_in_the_adapter_folders() {
    let server = smollm2_server();
    let outside = tempfile::tempdir().unwrap();
    adapter(&outside.path().join("y"), 11);

    // A file link inside an allowed folder that leads out.
    let linked_file = server.external.join("linked-file");
    adapter(&linked_file, 12);
    std::fs::remove_file(linked_file.join("adapter_model.safetensors")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("y/adapter_model.safetensors"),
        linked_file.join("adapter_model.safetensors"),
    )
    .unwrap();
    let (status, body) = post(
        "/v1/load_lora_adapter",
        &json!({"lora_name": "linked-file", "lora_path": linked_file}),
    )
    .await;
    let (message, _, _) = error(status, &body, 400);
    assert!(message.contains("outside the adapter folders"), "{message}");

    // A folder link in the store that leads out: refused when requested by name.
    std::os::unix::fs::symlink(outside.path().join("y"), server.store.join("linked-dir")).unwrap();
    let (status, body) = post("/v1/chat/completions", &chat_on("linked-dir", "hi", 2)).await;
    let (message, _, _) = error(status, &body, 400);
    assert!(message.contains("outside the adapter folders"), "{message}");

    // A folder swapped for a link after it was loaded: the next request does not merge what
    // the link leads to; the version loaded before keeps serving.
    adapter(&server.store.join("swapped"), 13);
    let question = chat_on("swapped", "Name three colours.", 12);
    let (status, before) = post("/v1/chat/completions", &question).await;
    assert_eq!(status, 200, "{before}");
    std::fs::rename(server.store.join("swapped"), server.store.join("swapped.orig")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("y"), server.store.join("swapped")).unwrap();
    let (status, after) = post("/v1/chat/completions", &question).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(
        after["choices"][0]["message"], before["choices"][0]["message"],
        "still the version loaded from the store"
    );
    let (status, body) = post("/v1/load_lora_adapter", &json!({"lora_name": "swapped"})).await;
    let (message, _, _) = error(status, &body, 400);
    assert!(
        message.contains("outside the adapter folders"),
        "an explicit load says why: {message}"
    );
}

#[tokio::test]
async fn a_fifo_as_adapter_config_is_refused_at_once_and_blocks_no_other_load() {
    let server = smollm2_server();
    let dir = server.store.join("fifo-config");
    adapter(&dir, 21);
    let config = dir.join("adapter_config.json");
    std::fs::remove_file(&config).unwrap();
    let c = std::ffi::CString::new(config.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc_mkfifo(c.as_ptr(), 0o644) }, 0);

    let started = Instant::now();
    let (status, body) = post("/v1/load_lora_adapter", &json!({"lora_name": "fifo-config"})).await;
    let (message, _, _) = error(status, &body, 400);
    assert!(message.contains("not a regular file"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(20), "no read blocked on the FIFO");

    adapter(&server.store.join("after-fifo"), 22);
    let (status, body) = post("/v1/load_lora_adapter", &json!({"lora_name": "after-fifo"})).await;
    assert_eq!(status, 200, "{body}");
}

extern "C" {
    #[link_name = "mkfifo"]
    fn libc_mkfifo(path: *const std::os::raw::c_char, mode: u32) -> i32;
}

#[tokio::test]
async fn an_adapter_with_non_finite_weights_is_refused_naming_the_tensor() {
    let server = smollm2_server();
    let dir = server.store.join("nan-weights");
    adapter(&dir, 31);
    let file = dir.join("adapter_model.safetensors");
    let mut tensors: HashMap<String, candle_core::Tensor> = candle_core::safetensors::load(&file, &candle_core::Device::Cpu).unwrap();
    let name = tensors.keys().filter(|n| n.contains("lora_B")).min().unwrap().clone();
    let tensor = &tensors[&name];
    let mut values = tensor
        .flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    values[3] = f32::NAN;
    let poisoned = candle_core::Tensor::from_vec(values, tensor.dims(), &candle_core::Device::Cpu).unwrap();
    tensors.insert(name.clone(), poisoned);
    candle_core::safetensors::save(&tensors, &file).unwrap();

    let (status, body) = post("/v1/chat/completions", &chat_on("nan-weights", "hi", 2)).await;
    let (message, _, _) = error(status, &body, 400);
    assert!(
        message.contains(&name) && message.contains("NaN") && message.contains("finite"),
        "{message}"
    );
}

#[tokio::test]
async fn a_load_by_path_that_fails_leaves_no_name_behind() {
    let server = smollm2_server();
    let dir = server.external.join("broken-config");
    adapter(&dir, 41);
    std::fs::write(dir.join("adapter_config.json"), "{\"r\": 0, \"lora_alpha\": 8}").unwrap();
    let (status, body) = post("/v1/load_lora_adapter", &json!({"lora_name": "broken-config", "lora_path": dir})).await;
    let (message, _, _) = error(status, &body, 400);
    assert!(message.contains("rank"), "{message}");
    assert!(!models().await.contains(&"broken-config".to_owned()), "a failed load is not listed");

    // Nor may an adapter take the base model's name.
    let (status, body) = post("/v1/load_lora_adapter", &json!({"lora_name": MODEL, "lora_path": dir})).await;
    let (message, param, _) = error(status, &body, 400);
    assert_eq!(param, "lora_name", "{message}");
}

#[tokio::test]
async fn a_stream_still_running_after_the_shutdown_grace_period_ends_with_an_error_event() {
    let (server, stop, stopped) = start_stoppable_server(ServerSetup::default(), Duration::from_secs(1));
    let request = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
        "temperature": 0,
        "max_tokens": 3000,
        "stream": true,
    });
    let mut response = reqwest::Client::new()
        .post(server.url("/v1/chat/completions"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    while text.matches("data: ").count() < 3 {
        let chunk = response.chunk().await.unwrap().expect("the stream goes on");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    stop.send(()).unwrap();
    while let Ok(Some(chunk)) = response.chunk().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let events = graft_tests::sse_data(&text);
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let error: Value = serde_json::from_str(events[events.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], "server_shutting_down", "{text}");
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("the server stops")
        .unwrap();
}
