//! `graft bench engine`: what the model engine costs, on the configured base model.
//!
//! Prints: base model load time; cold adapter activation (validate + merge + load) and warm
//! activation (merge found in the cache); decode speed on the base and on an adapter; resident
//! memory added per loaded adapter (measured across warm loads, so merging's working memory is
//! not counted); the first token of a cold prompt at a few lengths on the base and on an
//! adapter; and graft's overhead over calling mistralrs directly with
//! the same prompt, through the pool and through HTTP. The adapters are synthetic (generated
//! from fixed seeds, rank and targets as given), merged into a scratch cache.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use graft_engine::adapter::PROJECTIONS;
use graft_engine::merge::BaseGguf;
use graft_engine::pool::AdapterStore;
use graft_engine::synthetic::SyntheticAdapter;
use graft_engine::{ChatMessage, ChatRequest, CompletionRequest, Engine, Pool, PoolLimits, Prompt, Role, Sampling, StreamEvent};
use graft_kit::Kit;
use graft_server::projects::Projects;
use graft_server::{AppState, ServerParts};
use serde_json::json;

use super::median;
use crate::cli::BenchEngineArgs;
use crate::models;

const PROMPT: &str = "Write a long, detailed story about a robot who learns to paint, with many characters.";

pub fn run(args: BenchEngineArgs) -> Result<()> {
    let config = models::load_config(&args.config.config)?;
    let kit = Kit::new(&config.kit.dir);
    models::ensure(&kit, &graft_wiring::model_artifacts(&config)?, true)?;
    let gguf = graft_wiring::base_gguf(&config)?;
    if args.adapters == 0 || args.reps == 0 || args.max_tokens == 0 {
        bail!("--adapters, --reps and --max-tokens must be at least 1");
    }
    if let Some(short) = args.lengths.iter().find(|&&n| n < 16) {
        bail!("a prompt of {short} tokens is too short to time; give --lengths of at least 16");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let figures = runtime.block_on(measure(&config, gguf, &args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
        return Ok(());
    }
    let f = &figures;
    println!(
        "engine benchmark: {} ({})",
        f["model"].as_str().unwrap_or(""),
        f["device"].as_str().unwrap_or("")
    );
    println!("  base model load             {:>9.2} s", f["base_load_s"].as_f64().unwrap_or(0.0));
    println!("  base model resident memory  {:>9.1} MB", f["base_rss_mb"].as_f64().unwrap_or(0.0));
    println!(
        "  adapter activation, cold    {:>9.2} s   (validate + merge + load; rank {}, {} projections)",
        f["cold_activation_s"].as_f64().unwrap_or(0.0),
        args.rank,
        PROJECTIONS.len()
    );
    println!(
        "  adapter activation, warm    {:>9.2} s   (merge from the cache + load)",
        f["warm_activation_s"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  resident memory per adapter {:>9.1} MB  (merged file {:.1} MB)",
        f["rss_per_adapter_mb"].as_f64().unwrap_or(0.0),
        f["merged_file_mb"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  decode, base                {:>9.1} tok/s  (time to first token {:.0} ms)",
        f["decode_base_tok_s"].as_f64().unwrap_or(0.0),
        f["ttft_base_ms"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  decode, adapter             {:>9.1} tok/s  (time to first token {:.0} ms)",
        f["decode_adapter_tok_s"].as_f64().unwrap_or(0.0),
        f["ttft_adapter_ms"].as_f64().unwrap_or(0.0)
    );
    for row in f["first_token"].as_array().into_iter().flatten() {
        println!(
            "  first token, {:>5} tokens   {:>9.0} ms base, {:.0} ms adapter  (cold prompt)",
            row["prompt_tokens"],
            row["base_ms"].as_f64().unwrap_or(0.0),
            row["adapter_ms"].as_f64().unwrap_or(0.0)
        );
    }
    println!("  same request ({} tokens, greedy), median of {}:", f["overhead_tokens"], args.reps);
    println!("    mistralrs directly        {:>9.1} ms", f["direct_ms"].as_f64().unwrap_or(0.0));
    println!(
        "    graft pool                {:>9.1} ms  ({:+.1} ms)",
        f["pool_ms"].as_f64().unwrap_or(0.0),
        f["pool_overhead_ms"].as_f64().unwrap_or(0.0)
    );
    println!(
        "    graft over HTTP           {:>9.1} ms  ({:+.1} ms)",
        f["http_ms"].as_f64().unwrap_or(0.0),
        f["http_overhead_ms"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}

async fn measure(config: &graft_core::Config, gguf: std::path::PathBuf, args: &BenchEngineArgs) -> Result<serde_json::Value> {
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    let store = scratch.path().join("adapters");
    let header = BaseGguf::open(&gguf)?;
    eprintln!("writing {} synthetic adapters (rank {}) ...", args.adapters, args.rank);
    for i in 0..args.adapters {
        let spec = SyntheticAdapter {
            projections: PROJECTIONS,
            rank: args.rank,
            alpha: 2.0 * args.rank as f64,
            amplitude: 0.01,
            zero_b: false,
            seed: i as u64 + 1,
        };
        spec.write(&store.join(format!("bench-{i}")), &header)?;
    }

    eprintln!("loading the base model ...");
    let rss_start = super::rss_mb();
    let started = Instant::now();
    let base = graft_wiring::base_model(config, gguf);
    let engine = Arc::new(Engine::load(&base).await?);
    let base_load = started.elapsed();
    let adapters = AdapterStore {
        dir: store,
        max_rank: config.adapters.max_rank.max(args.rank),
        merge: config.adapters.merged_type.into(),
        cache_dir: scratch.path().join("merged"),
        allowed_dirs: Vec::new(),
    };
    let limits = PoolLimits {
        max_adapters: args.adapters,
        max_bytes: None,
    };
    let pool = Arc::new(Pool::new(Arc::clone(&engine), adapters, limits)?);
    let base_name = pool.base_name().to_owned();

    // Warm the base up once so the first measured request does not pay one-off costs.
    pool.chat(&base_name, ask(8)).await?;
    let rss_base = super::rss_mb();

    eprintln!("activating adapters ...");
    // Cold: each adapter validated, merged into the cache and loaded.
    let cold = pool.load("bench-0", None).await?;
    for i in 1..args.adapters {
        pool.load(&format!("bench-{i}"), None).await?;
    }
    let merged_mb = pool.adapters().first().map_or(0.0, |a| a.bytes as f64 / 1_048_576.0);
    // Unload them all and wait until the engine has let go, so the memory figure below counts
    // loaded models only, not the merge's working memory.
    for i in 0..args.adapters {
        pool.unload(&format!("bench-{i}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.added_models().iter().any(|id| id.starts_with("bench-")) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Warm: loaded again from the cache; resident memory measured across these loads.
    let rss_before = super::rss_mb();
    let warm = pool.load("bench-0", None).await?;
    for i in 1..args.adapters {
        pool.load(&format!("bench-{i}"), None).await?;
    }
    let rss_after = super::rss_mb();

    eprintln!("decoding ...");
    let (base_tok_s, base_ttft) = decode(&pool, &base_name, args).await?;
    let (adapter_tok_s, adapter_ttft) = decode(&pool, "bench-0", args).await?;
    eprintln!("first tokens of cold prompts ...");
    let first_token = first_tokens(&engine, &pool, &base_name, args).await?;

    eprintln!("comparing with mistralrs directly ...");
    let overhead_tokens = args.max_tokens.min(32);
    let (mut direct, mut through_pool, mut http) = (Vec::new(), Vec::new(), Vec::new());
    let server = start_server(Arc::clone(&pool), config).await?;
    for _ in 0..args.reps {
        let t = Instant::now();
        engine.chat_with_mistralrs_directly(PROMPT, overhead_tokens).await?;
        direct.push(t.elapsed().as_secs_f64() * 1000.0);

        let t = Instant::now();
        pool.chat(&base_name, ask(overhead_tokens)).await?;
        through_pool.push(t.elapsed().as_secs_f64() * 1000.0);

        let body = json!({
            "model": base_name, "temperature": 0, "max_tokens": overhead_tokens,
            "messages": [{"role": "user", "content": PROMPT}],
        });
        let t = Instant::now();
        tokio::task::spawn_blocking(move || post(server, "/v1/chat/completions", &body.to_string())).await??;
        http.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (direct, through_pool, http) = (median(direct), median(through_pool), median(http));
    Ok(json!({
        "model": base.name,
        "device": format!("{:?}", base.device).to_lowercase(),
        "base_load_s": base_load.as_secs_f64(),
        "base_rss_mb": rss_base - rss_start,
        "cold_activation_s": cold.seconds,
        "warm_activation_s": warm.seconds,
        "warm_merged_now": warm.merged_now,
        "adapters_loaded": args.adapters,
        "rss_per_adapter_mb": (rss_after - rss_before) / args.adapters as f64,
        "merged_file_mb": merged_mb,
        "decode_base_tok_s": base_tok_s,
        "decode_adapter_tok_s": adapter_tok_s,
        "ttft_base_ms": base_ttft,
        "ttft_adapter_ms": adapter_ttft,
        "first_token": first_token,
        "overhead_tokens": overhead_tokens,
        "direct_ms": direct,
        "pool_ms": through_pool,
        "pool_overhead_ms": through_pool - direct,
        "http_ms": http,
        "http_overhead_ms": http - direct,
    }))
}

fn ask(max_tokens: usize) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::new(Role::User, PROMPT)],
        sampling: Sampling::greedy(max_tokens),
    }
}

/// Median decode speed (tokens after the first, per second) and time to first token (ms).
async fn decode(pool: &Pool, model: &str, args: &BenchEngineArgs) -> Result<(f64, f64)> {
    let (mut speeds, mut ttfts) = (Vec::new(), Vec::new());
    for _ in 0..args.reps {
        let started = Instant::now();
        let mut stream = pool.chat_stream(model, ask(args.max_tokens)).await?;
        let mut first = None;
        let mut tokens = 0;
        while let Some(event) = stream.next().await {
            match event? {
                StreamEvent::Text { .. } => {
                    first.get_or_insert_with(Instant::now);
                }
                StreamEvent::End { usage, .. } => tokens = usage.completion_tokens,
            }
        }
        let Some(first) = first else { continue };
        let decode = first.elapsed().as_secs_f64();
        if tokens > 1 && decode > 0.0 {
            speeds.push((tokens - 1) as f64 / decode);
        }
        ttfts.push((first - started).as_secs_f64() * 1000.0);
    }
    Ok((median(speeds), median(ttfts)))
}

/// The first token of a cold prompt of each of `--lengths` tokens (median of `--reps`), on the
/// base and on the adapter `bench-0`: a raw completion of one token whose prompt is exactly
/// that long: a short line of the request's own (so the prompt cache finds nothing to reuse),
/// then the prompt file's first tokens.
async fn first_tokens(engine: &Engine, pool: &Pool, base: &str, args: &BenchEngineArgs) -> Result<Vec<serde_json::Value>> {
    let path = &args.prompt_file;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the prompt file {} (give --prompt-file FILE)", path.display()))?;
    let tokens = engine.tokenize(&text, false).await?;
    let longest = args.lengths.iter().copied().max().unwrap_or(0);
    if tokens.len() < longest {
        bail!(
            "{} holds {} tokens, fewer than --lengths asks for ({longest})",
            path.display(),
            tokens.len()
        );
    }
    let mut rows = Vec::new();
    let mut asked = 0usize;
    for &length in &args.lengths {
        let mut row = json!({ "prompt_tokens": length });
        for (key, model) in [("base_ms", base), ("adapter_ms", "bench-0")] {
            let mut times = Vec::new();
            for _ in 0..args.reps {
                // A few tokens of the request's own first, starting with a letter the last 25
                // requests did not start with: the prompt cache (a few prompts, in this
                // process) finds no start to reuse.
                asked += 1;
                let head = format!("{}{asked}\n", char::from(b'A' + (asked % 26) as u8));
                let mut prompt = engine.tokenize(&head, false).await?;
                let rest = length.saturating_sub(prompt.len());
                prompt.extend_from_slice(&tokens[..rest]);
                prompt.truncate(length);
                let request = CompletionRequest {
                    prompt: Prompt::Tokens(prompt),
                    sampling: Sampling::greedy(1),
                };
                let started = Instant::now();
                pool.complete(model, request).await?;
                times.push(super::ms(started.elapsed()));
            }
            row[key] = json!(median(times));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// graft's HTTP API on an ephemeral loopback port, serving `pool`.
async fn start_server(pool: Arc<Pool>, config: &graft_core::Config) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = AppState::new(ServerParts {
        pool,
        aliases: config.model.aliases.clone(),
        generation: config.generation.clone(),
        server: graft_wiring::server_config(config),
        keys: Default::default(),
        projects: Projects::none(),
    });
    let max_body_bytes = config.server.max_body_bytes;
    tokio::spawn(async move {
        let _ = graft_server::serve(listener, state, max_body_bytes, std::future::pending(), Duration::ZERO).await;
    });
    Ok(addr)
}

/// A minimal blocking HTTP/1.1 POST that reads the whole response; fails unless the status
/// is 200.
fn post(addr: SocketAddr, path: &str, body: &str) -> Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    if !response.starts_with("HTTP/1.1 200") {
        bail!("{path} answered: {}", response.lines().next().unwrap_or(""));
    }
    Ok(response)
}
