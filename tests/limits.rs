//! Limits under load: a server that runs one generation at a time with room for one waiting
//! request turns the next away with 429 and `Retry-After`, and a request that runs past the
//! request timeout gets 504 (or, once streaming, an error event), while the server keeps
//! serving.

use std::time::{Duration, Instant};

use graft_core::config::ServerConfig;
use graft_tests::{start_server, ServerSetup, TestServer, MODEL};
use serde_json::{json, Value};

const TIMEOUT_SECS: u64 = 3;

/// A request SmolLM2 answers at length: far more than it can write within the timeout.
fn long_chat(stream: bool) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
        "temperature": 0,
        "max_tokens": 3000,
        "stream": stream,
    })
}

/// A long streamed chat, answered 200: it holds a slot while it runs.
async fn start_long_stream(client: &reqwest::Client, server: &TestServer) -> reqwest::Response {
    let response = client
        .post(server.url("/v1/chat/completions"))
        .json(&long_chat(true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no `{name}` in\n{text}"))
}

#[tokio::test]
async fn a_full_queue_gets_429_and_a_request_past_its_deadline_gets_504() {
    let server = start_server(ServerSetup {
        server: ServerConfig {
            max_concurrent: Some(1),
            max_queue: 1,
            request_timeout_secs: TIMEOUT_SECS,
            ..ServerConfig::default()
        },
        ..ServerSetup::default()
    });
    let client = reqwest::Client::new();
    let started = Instant::now();

    // A takes the only slot: its stream has begun.
    let mut a = start_long_stream(&client, &server).await;
    let mut a_text = String::new();
    while !a_text.contains("\"content\":\"") || a_text.matches("data: ").count() < 3 {
        let chunk = a.chunk().await.unwrap().expect("A's stream goes on");
        a_text.push_str(&String::from_utf8_lossy(&chunk));
    }

    // B waits in the queue.
    let b = {
        let (client, url) = (client.clone(), server.url("/v1/chat/completions"));
        tokio::spawn(async move {
            let response = client.post(url).json(&long_chat(false)).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        })
    };
    while metric(&server, "graft_generations_queued").await < 1.0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // C finds the slot and the queue full: turned away at once.
    let c = client
        .post(server.url("/v1/chat/completions"))
        .json(&long_chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(c.status(), 429);
    let retry_after: u64 = c.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    let body: Value = c.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("max_queue"), "{body}");
    assert!(metric(&server, "graft_requests_rejected_total").await >= 1.0);

    // A's stream is cut at the deadline with an error event, then [DONE].
    while let Some(chunk) = a.chunk().await.unwrap() {
        a_text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        started.elapsed() < Duration::from_secs(TIMEOUT_SECS + 20),
        "the deadline is enforced"
    );
    let events = graft_tests::sse_data(&a_text);
    assert_eq!(events.last(), Some(&"[DONE]"), "{a_text}");
    let error: Value = serde_json::from_str(events[events.len() - 2]).unwrap();
    assert_eq!(error["error"]["code"], "timeout", "{a_text}");

    // B waited, then ran out of time: 504 in OpenAI's shape.
    let (status, body) = b.await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("request_timeout_secs"),
        "{body}"
    );

    // The server keeps serving.
    let short = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0});
    let response = client.post(server.url("/v1/chat/completions")).json(&short).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(metric(&server, "graft_generations_in_flight").await, 0.0);
    assert_eq!(metric(&server, "graft_generations_queued").await, 0.0);
}

#[tokio::test]
async fn clients_that_hang_up_while_queued_or_running_give_their_places_back() {
    let server = start_server(ServerSetup {
        server: ServerConfig {
            max_concurrent: Some(1),
            max_queue: 2,
            request_timeout_secs: 120,
            ..ServerConfig::default()
        },
        ..ServerSetup::default()
    });
    let client = reqwest::Client::new();

    // A runs (streaming) and holds the only slot.
    let mut a = start_long_stream(&client, &server).await;
    a.chunk().await.unwrap().expect("A's stream has begun");

    // Twice, two clients fill the queue and hang up (their client-side timeout) while waiting.
    for _ in 0..2 {
        let impatient = reqwest::Client::builder().timeout(Duration::from_millis(600)).build().unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (client, url) = (impatient.clone(), server.url("/v1/chat/completions"));
                tokio::spawn(async move { client.post(url).json(&long_chat(false)).send().await.map(|r| r.status().as_u16()) })
            })
            .collect();
        for waiter in waiters {
            assert!(waiter.await.unwrap().is_err_and(|e| e.is_timeout()), "the client gave up waiting");
        }
        let until = Instant::now() + Duration::from_secs(10);
        while metric(&server, "graft_generations_queued").await > 0.0 {
            assert!(Instant::now() < until, "hung-up clients leave the queue");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // The queue takes a new request (no 429): it waits for A...
    let short = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0});
    let d = {
        let (client, url, short) = (client.clone(), server.url("/v1/chat/completions"), short.clone());
        tokio::spawn(async move { client.post(url).json(&short).send().await.unwrap().status().as_u16() })
    };
    while metric(&server, "graft_generations_queued").await < 1.0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and A's client hanging up mid-stream frees the slot for it.
    drop(a);
    assert_eq!(d.await.unwrap(), 200);
    assert_eq!(metric(&server, "graft_generations_in_flight").await, 0.0);
    assert_eq!(metric(&server, "graft_generations_queued").await, 0.0);
}
