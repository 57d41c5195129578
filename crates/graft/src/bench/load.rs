//! `graft bench load`: the whole server under concurrent clients, on loopback only.
//!
//! Starts graft as `serve` would (the configured model, adapters and projects; no API keys,
//! bound to 127.0.0.1 on an ephemeral port), then runs `--clients` concurrent streaming chat
//! clients for `--seconds`, twice: against a project with retrieval switched off, and with it
//! on (the same questions), so the difference is what retrieval costs (`--no-retrieval`: the
//! first phase only, with no index or embedding model needed). Each `--endpoint` server (llama.cpp's,
//! vLLM, Ollama) then gets the same questions from the same clients, without retrieval, after
//! graft's phases (graft idle by then). Prints completed requests, errors, throughput (requests
//! and generated tokens per second), time to first token, the time between an answer's streamed
//! pieces (vLLM's inter-token latency: how long an answer in progress stalls while other
//! requests' prompts are read) and whole-request latency (p50 / p99). It asserts nothing.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use graft_kit::Kit;
use serde_json::{json, Value};

use super::{endpoint, fresh_connections, ms, percentile, Server};
use crate::cli::BenchLoadArgs;
use crate::{index, models, serve};

/// Questions a developer asks about a codebase (graft's own, in the default config).
const QUESTIONS: &[&str] = &[
    "How does the index decide which files to skip?",
    "Where are adapters merged into the base model?",
    "How is the request timeout enforced?",
    "What happens when an API key is missing?",
    "How are search results from keywords and vectors combined?",
    "How does the server count tokens for the prompt limit?",
];

/// What one client request ended as.
enum Outcome {
    Done {
        ttft: Duration,
        latency: Duration,
        tokens: u64,
        /// The time between each two streamed pieces of text.
        gaps: Vec<Duration>,
    },
    Failed(String),
}

pub fn run(args: BenchLoadArgs) -> Result<()> {
    if args.clients == 0 || args.seconds == 0 || args.max_tokens == 0 {
        bail!("--clients, --seconds and --max-tokens must be at least 1");
    }
    let config = models::load_config(&args.config.config)?;
    let project = match &args.project {
        Some(name) => Some(
            config
                .projects
                .iter()
                .find(|p| &p.name == name)
                .with_context(|| format!("no project `{name}` in the config"))?,
        ),
        None => config.projects.first(),
    };
    let Some(project) = project else {
        bail!("the load benchmark compares requests with and without retrieval, so it needs a project in the config");
    };
    let retrievals: &[bool] = if args.no_retrieval { &[false] } else { &[false, true] };
    let others = args
        .endpoints
        .iter()
        .map(|spec| endpoint(spec, args.model.as_deref(), args.api_key.as_deref()))
        .collect::<Result<Vec<_>>>()?;
    let layout = graft_wiring::layout(&config, &project.name);
    if !args.no_retrieval && graft_index::catalog::read_meta(&graft_wiring::backend(&config), &layout)?.is_none() {
        bail!(
            "project `{}` has no index yet: run `graft index --project {}` (or `graft up`) first, \
             or pass --no-retrieval",
            project.name,
            project.name
        );
    }
    let kit = Kit::new(&config.kit.dir);
    models::ensure(&kit, &graft_wiring::model_artifacts(&config)?, true)?;
    let embedder = if args.no_retrieval {
        None
    } else {
        Some(index::load_embedder(&config)?)
    };

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let figures = runtime.block_on(async {
        eprintln!("loading {} ...", config.model.name);
        let addr = serve::start_on_loopback(&config, embedder).await?;
        let graft = Server {
            name: "graft".into(),
            base: format!("http://{addr}"),
            model: project.name.clone(),
            key: None,
        };
        // Each server's phases: graft's with retrieval off and on, the others' without graft's
        // field.
        let mut runs: Vec<(&Server, Option<bool>)> = retrievals.iter().map(|&r| (&graft, Some(r))).collect();
        runs.extend(others.iter().map(|server| (server, None)));

        let client = fresh_connections().build()?;
        let mut phases = Vec::new();
        for (server, retrieval) in runs {
            // One request first, so the first timed request pays no one-time cost.
            if let Outcome::Failed(e) = one_request(&client, server, QUESTIONS[0], retrieval, args.max_tokens).await {
                bail!("{}: the warm-up request failed: {e}", server.name);
            }
            eprintln!(
                "{}: {} clients for {} s, retrieval {} ...",
                server.name,
                args.clients,
                args.seconds,
                retrieval_name(retrieval)
            );
            let started = Instant::now();
            let outcomes = load(&client, server, retrieval, &args).await;
            phases.push(summary(&server.name, retrieval, &outcomes, started.elapsed()));
        }
        Ok::<_, anyhow::Error>(json!({
            "model": config.model.name,
            "project": project.name,
            "device": format!("{:?}", config.model.device),
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "clients": args.clients,
            "seconds": args.seconds,
            "max_tokens": args.max_tokens,
            "max_concurrent": config.generation_slots(graft_engine::gpu_available()),
            "phases": phases,
        }))
    })?;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
        return Ok(());
    }
    println!(
        "load benchmark: {} via project `{}`, {} clients x {} s, max_tokens {}, server.max_concurrent {}",
        figures["model"].as_str().unwrap_or(""),
        figures["project"].as_str().unwrap_or(""),
        args.clients,
        args.seconds,
        args.max_tokens,
        figures["max_concurrent"]
    );
    println!(
        "  server        retrieval  requests  errors    req/s   tok/s   TTFT p50   TTFT p99   ITL p50   ITL p99   latency p50  latency p99"
    );
    for p in figures["phases"].as_array().into_iter().flatten() {
        let f = |k: &str| p[k].as_f64().unwrap_or(0.0);
        println!(
            "  {:<12}  {:<9}  {:>8}  {:>6}  {:>7.2}  {:>6.1}  {:>7.0} ms {:>7.0} ms {:>6.0} ms {:>6.0} ms  {:>8.0} ms  {:>8.0} ms",
            p["server"].as_str().unwrap_or(""),
            retrieval_name(p["retrieval"].as_bool()),
            p["requests"].as_u64().unwrap_or(0),
            p["errors"].as_u64().unwrap_or(0),
            f("requests_per_s"),
            f("tokens_per_s"),
            f("ttft_p50_ms"),
            f("ttft_p99_ms"),
            f("itl_p50_ms"),
            f("itl_p99_ms"),
            f("latency_p50_ms"),
            f("latency_p99_ms"),
        );
        if let Some(e) = p["first_error"].as_str() {
            println!("    first error: {e}");
        }
    }
    Ok(())
}

/// Graft's retrieval switched on or off; another server's, not asked.
fn retrieval_name(retrieval: Option<bool>) -> &'static str {
    match retrieval {
        Some(true) => "on",
        Some(false) => "off",
        None => "-",
    }
}

/// `clients` loops of requests until `seconds` have passed; requests started before then run
/// to their end.
async fn load(client: &reqwest::Client, server: &Server, retrieval: Option<bool>, args: &BenchLoadArgs) -> Vec<Outcome> {
    let stop = Instant::now() + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = (0..args.clients)
        .map(|c| {
            let (client, server, max_tokens) = (client.clone(), server.clone(), args.max_tokens);
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut n = c;
                while Instant::now() < stop {
                    let question = QUESTIONS[n % QUESTIONS.len()];
                    outcomes.push(one_request(&client, &server, question, retrieval, max_tokens).await);
                    n += stride(c);
                }
                outcomes
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        match task.await {
            Ok(outcomes) => all.extend(outcomes),
            Err(e) => all.push(Outcome::Failed(format!("client task failed: {e}"))),
        }
    }
    all
}

/// Clients walk the questions with different strides, so they do not ask in lockstep.
fn stride(client: usize) -> usize {
    1 + client % (QUESTIONS.len() - 1)
}

/// One streamed chat request, timed; graft's `retrieval` field only where given.
async fn one_request(client: &reqwest::Client, server: &Server, question: &str, retrieval: Option<bool>, max_tokens: usize) -> Outcome {
    let mut body = json!({
        "model": server.model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(retrieval) = retrieval {
        body["retrieval"] = json!(retrieval);
    }
    let mut request = client.post(format!("{}/v1/chat/completions", server.base)).json(&body);
    if let Some(key) = &server.key {
        request = request.bearer_auth(key);
    }
    let started = Instant::now();
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        return Outcome::Failed(format!("{status}: {text}"));
    }
    let mut body = response.bytes_stream();
    let mut pending = String::new();
    // Tokens as the usage counts them; else one a chunk with text (as servers stream them).
    let (mut ttft, mut tokens, mut pieces) = (None, None, 0);
    let (mut gaps, mut last_piece) = (Vec::new(), None);
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => pending.push_str(&String::from_utf8_lossy(&bytes)),
            Err(e) => return Outcome::Failed(e.to_string()),
        }
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            if data == "[DONE]" {
                return match ttft {
                    Some(ttft) => Outcome::Done {
                        ttft,
                        latency: started.elapsed(),
                        tokens: tokens.unwrap_or(pieces),
                        gaps,
                    },
                    None => Outcome::Failed("the answer had no text".into()),
                };
            }
            let Ok(value) = serde_json::from_str::<Value>(data) else {
                return Outcome::Failed(format!("not JSON: {data}"));
            };
            if let Some(error) = value.get("error") {
                return Outcome::Failed(error["message"].as_str().unwrap_or("stream error").to_owned());
            }
            if let Some(n) = value["usage"]["completion_tokens"].as_u64() {
                tokens = Some(n);
            }
            let text = value["choices"][0]["delta"]["content"].as_str().unwrap_or("");
            if !text.is_empty() {
                pieces += 1;
                let now = started.elapsed();
                ttft.get_or_insert(now);
                if let Some(last) = last_piece.replace(now) {
                    gaps.push(now - last);
                }
            }
        }
    }
    Outcome::Failed("the stream ended without [DONE]".into())
}

fn summary(server: &str, retrieval: Option<bool>, outcomes: &[Outcome], elapsed: Duration) -> Value {
    let mut ttfts = Vec::new();
    let mut latencies = Vec::new();
    let mut all_gaps = Vec::new();
    let mut tokens = 0;
    let mut errors = 0;
    let mut first_error = None;
    for outcome in outcomes {
        match outcome {
            Outcome::Done {
                ttft,
                latency,
                tokens: n,
                gaps,
            } => {
                ttfts.push(*ttft);
                latencies.push(*latency);
                all_gaps.extend_from_slice(gaps);
                tokens += n;
            }
            Outcome::Failed(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.clone());
            }
        }
    }
    ttfts.sort();
    latencies.sort();
    all_gaps.sort();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    json!({
        "server": server,
        "retrieval": retrieval,
        "requests": latencies.len(),
        "errors": errors,
        "first_error": first_error,
        "elapsed_s": seconds,
        "requests_per_s": latencies.len() as f64 / seconds,
        "tokens_per_s": tokens as f64 / seconds,
        "ttft_p50_ms": ms(percentile(&ttfts, 0.5)),
        "ttft_p99_ms": ms(percentile(&ttfts, 0.99)),
        "itl_p50_ms": ms(percentile(&all_gaps, 0.5)),
        "itl_p99_ms": ms(percentile(&all_gaps, 0.99)),
        "latency_p50_ms": ms(percentile(&latencies, 0.5)),
        "latency_p99_ms": ms(percentile(&latencies, 0.99)),
    })
}
