//! `graft bench api`: graft and any other OpenAI-compatible server (llama.cpp's server, vLLM,
//! Ollama, another graft) timed side by side on the same prompts through `/v1/completions`:
//! the first token of a cold prompt at a few lengths, the next request of a typing session
//! (the same file again with one more line each time, as an editor sends it), and decode
//! speed. It asserts nothing: it prints figures (`--json` for scripts).
//!
//! Every server gets the same texts, one request at a time, greedy. A prompt is the prompt
//! file cut at a line end to about the asked number of tokens; the cut is found once, from
//! the first server's token count, so a server on another tokenizer reads the same text and
//! reports its own count. Each timed cold prompt starts with a line of its own (the run's
//! time, the server, the measurement), so no server reuses a prompt it has cached; a typing
//! session keeps its first line for all its requests.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use graft_kit::Kit;
use serde_json::{json, Value};

use super::{endpoint, fresh_connections, median, Server};
use crate::cli::BenchApiArgs;
use crate::eval::target::REQUEST_TIMEOUT;
use crate::{models, serve};

/// What one request took.
struct Timing {
    /// Until the first generated text arrived (the whole request when not streamed).
    first: Duration,
    /// From the first generated text to the last.
    rest: Duration,
    prompt_tokens: Option<u64>,
    completion_tokens: u64,
}

pub fn run(args: BenchApiArgs) -> Result<()> {
    if args.repeat == 0 || args.typing < 2 || args.decode_tokens < 2 || args.lengths.is_empty() {
        bail!("--repeat must be at least 1, --typing and --decode-tokens at least 2, --lengths not empty");
    }
    if let Some(short) = args.lengths.iter().chain([&args.typing_tokens]).find(|&&n| n < 16) {
        bail!("a prompt of {short} tokens is too short to time; give lengths of at least 16");
    }
    let text = std::fs::read_to_string(&args.prompt_file).with_context(|| {
        format!(
            "cannot read the prompt file {} (give --prompt-file FILE: source code of at least about {} tokens)",
            args.prompt_file.display(),
            needed_tokens(&args)
        )
    })?;
    if text.trim().is_empty() {
        bail!("the prompt file {} is empty", args.prompt_file.display());
    }
    let mut servers = args
        .endpoints
        .iter()
        .map(|spec| endpoint(spec, args.model.as_deref(), args.api_key.as_deref()))
        .collect::<Result<Vec<_>>>()?;
    if args.no_local && servers.is_empty() {
        bail!("--no-local leaves nothing to measure: add --endpoint NAME=URL");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let figures = runtime.block_on(async {
        let mut local_model = None;
        if !args.no_local {
            let config = models::load_config(&args.config.config)?;
            let kit = Kit::new(&config.kit.dir);
            models::ensure(&kit, &graft_wiring::model_artifacts(&config)?, true)?;
            eprintln!("loading {} ...", config.model.name);
            let addr = serve::start_on_loopback(&config, None).await?;
            local_model = Some(graft_wiring::base_gguf(&config)?.display().to_string());
            servers.insert(
                0,
                Server {
                    name: "graft".into(),
                    base: format!("http://{addr}"),
                    model: config.model.name.clone(),
                    key: None,
                },
            );
        }
        let client = fresh_connections().timeout(REQUEST_TIMEOUT).build()?;
        let cuts = Cuts::find(&client, &servers[0], &text, &args).await?;
        let mut measured = Vec::new();
        // First lines of this run's own, so that no server finds them in its cache from an
        // earlier run either.
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        for (n, server) in servers.iter().enumerate() {
            let tag = format!("run {run:x}, server {n}");
            measured.push(measure(&client, server, &tag, &cuts, &args).await?);
        }
        Ok::<_, anyhow::Error>(json!({
            "prompt_file": args.prompt_file.display().to_string(),
            "graft_model_file": local_model,
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "repeat": args.repeat,
            "servers": measured,
        }))
    })?;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        print_table(&figures);
    }
    Ok(())
}

/// How many tokens of the prompt file the longest measurement reads.
fn needed_tokens(args: &BenchApiArgs) -> usize {
    let longest = args.lengths.iter().copied().max().unwrap_or(0);
    // A line of code is about ten tokens.
    longest.max(args.typing_tokens + 10 * args.typing)
}

/// The texts every server reads: the prompt file's lines, and where to cut them.
struct Cuts {
    lines: Vec<String>,
    /// Lines for each of `--lengths`.
    cold: Vec<usize>,
    /// Lines of the typing session's first request; each next one has one more.
    typing: usize,
    /// Lines of the decode prompt.
    decode: usize,
}

impl Cuts {
    /// Measures characters per token on the first server (one request on a long stretch of
    /// the file) and cuts at the line ends nearest to each asked length.
    async fn find(client: &reqwest::Client, server: &Server, text: &str, args: &BenchApiArgs) -> Result<Cuts> {
        let lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
        let sample = take_chars(&lines, 8000);
        let probe: String = lines[..sample].concat();
        eprintln!("{}: counting the prompt file's tokens ...", server.name);
        let timing = complete(client, server, &probe, 1, false)
            .await
            .with_context(|| format!("{} at {}", server.name, server.base))?;
        let tokens = timing
            .prompt_tokens
            .filter(|&t| t > 0)
            .with_context(|| format!("{} reports no usage.prompt_tokens, which the cuts need", server.name))?;
        let chars_per_token = probe.chars().count() as f64 / tokens as f64;
        // Each prompt's own first line takes some of the asked length.
        let first_line = "// graft bench: run 19ad3c5e7f1, server 0, cold prompt 1500, repeat 0\n";
        let first_line_tokens = complete(client, server, first_line, 1, false)
            .await
            .with_context(|| format!("{} at {}", server.name, server.base))?
            .prompt_tokens
            .unwrap_or(0) as usize;
        let cut = |tokens: usize| {
            let text_tokens = tokens.saturating_sub(first_line_tokens);
            take_chars(&lines, (text_tokens as f64 * chars_per_token) as usize)
        };
        let total_tokens = (text.chars().count() as f64 / chars_per_token) as usize;
        let typing = cut(args.typing_tokens);
        if total_tokens < needed_tokens(args) || typing + args.typing > lines.len() {
            bail!(
                "{} holds about {total_tokens} tokens; this run needs about {} (a longer --prompt-file, or smaller --lengths / --typing-tokens)",
                args.prompt_file.display(),
                needed_tokens(args)
            );
        }
        Ok(Cuts {
            cold: args.lengths.iter().map(|&n| cut(n)).collect(),
            typing,
            decode: cut(64),
            lines,
        })
    }

    fn text(&self, first_line: &str, lines: usize) -> String {
        let mut text = format!("{first_line}\n");
        text.extend(self.lines[..lines].iter().map(String::as_str));
        text
    }
}

/// How many whole lines hold about `chars` characters (at least one).
fn take_chars(lines: &[String], chars: usize) -> usize {
    let mut total = 0;
    for (n, line) in lines.iter().enumerate() {
        total += line.chars().count();
        if total >= chars {
            return n + 1;
        }
    }
    lines.len()
}

/// Every measurement on one server. `tag` makes its first lines differ from other servers'
/// and other runs'.
async fn measure(client: &reqwest::Client, server: &Server, tag: &str, cuts: &Cuts, args: &BenchApiArgs) -> Result<Value> {
    let context = || format!("{} at {}", server.name, server.base);
    let mut first_token = Vec::new();
    for (&target, &lines) in args.lengths.iter().zip(&cuts.cold) {
        eprintln!("{}: first token at about {target} prompt tokens ...", server.name);
        let mut seconds = Vec::new();
        let mut prompt_tokens = None;
        for r in 0..args.repeat {
            let prompt = cuts.text(&format!("// graft bench: {tag}, cold prompt {target}, repeat {r}"), lines);
            let timing = complete(client, server, &prompt, 1, false).await.with_context(context)?;
            prompt_tokens = timing.prompt_tokens;
            seconds.push(timing.first.as_secs_f64());
        }
        first_token.push(json!({
            "target_tokens": target,
            "prompt_tokens": prompt_tokens,
            "seconds": seconds,
            "median_s": median(seconds.clone()),
        }));
    }

    eprintln!("{}: a typing session of {} requests ...", server.name, args.typing);
    let first_line = format!("// graft bench: {tag}, typing session");
    let mut typed = Vec::new();
    let mut typed_tokens = Vec::new();
    for i in 0..args.typing {
        let prompt = cuts.text(&first_line, cuts.typing + i);
        let timing = complete(client, server, &prompt, 1, false).await.with_context(context)?;
        typed.push(timing.first.as_secs_f64());
        typed_tokens.push(timing.prompt_tokens);
    }
    let next = typed[1..].to_vec();

    eprintln!("{}: decoding {} tokens ...", server.name, args.decode_tokens);
    let mut rates = Vec::new();
    let mut generated = 0;
    for r in 0..args.repeat {
        let prompt = cuts.text(&format!("// graft bench: {tag}, decode {r}"), cuts.decode);
        let timing = complete(client, server, &prompt, args.decode_tokens, true)
            .await
            .with_context(context)?;
        generated = timing.completion_tokens;
        if timing.completion_tokens >= 2 && !timing.rest.is_zero() {
            rates.push((timing.completion_tokens - 1) as f64 / timing.rest.as_secs_f64());
        }
    }

    Ok(json!({
        "name": server.name,
        "url": server.base,
        "first_token": first_token,
        "typing": {
            "prompt_tokens": typed_tokens,
            "cold_s": typed[0],
            "next_s": next,
            "median_s": median(next.clone()),
            "min_s": next.iter().copied().fold(f64::INFINITY, f64::min),
            "max_s": next.iter().copied().fold(0.0, f64::max),
        },
        "decode": {
            "max_tokens": args.decode_tokens,
            "tokens": generated,
            "tokens_per_s": rates,
            "median_tokens_per_s": median(rates.clone()),
        },
    }))
}

/// One greedy `/v1/completions` request; streamed when `stream`.
async fn complete(client: &reqwest::Client, server: &Server, prompt: &str, max_tokens: usize, stream: bool) -> Result<Timing> {
    let mut body = json!({
        "model": server.model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({ "include_usage": true });
    }
    let mut request = client.post(format!("{}/v1/completions", server.base)).json(&body);
    if let Some(key) = &server.key {
        request = request.bearer_auth(key);
    }
    let started = Instant::now();
    let response = request.send().await?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        bail!("HTTP {status}: {}", crate::remote::error_message(&text));
    }
    if !stream {
        let answer: Value = response.json().await.context("the answer is not JSON")?;
        return Ok(Timing {
            first: started.elapsed(),
            rest: Duration::ZERO,
            prompt_tokens: answer["usage"]["prompt_tokens"].as_u64(),
            completion_tokens: answer["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        });
    }

    let mut events = response.bytes_stream();
    let mut pending = Vec::new();
    let (mut first, mut last) = (None, None);
    let (mut chunks, mut usage) = (0u64, Value::Null);
    'read: while let Some(bytes) = events.next().await {
        pending.extend_from_slice(&bytes?);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim().strip_prefix("data:").map(str::trim) else {
                continue;
            };
            if data == "[DONE]" {
                break 'read;
            }
            let event: Value = serde_json::from_str(data).with_context(|| format!("a streamed event is not JSON: {data}"))?;
            if !event["usage"].is_null() {
                usage = event["usage"].clone();
            }
            if event["choices"][0]["text"].as_str().is_some_and(|t| !t.is_empty()) {
                let now = started.elapsed();
                first.get_or_insert(now);
                last = Some(now);
                chunks += 1;
            }
        }
    }
    let first = first.context("the stream held no text")?;
    Ok(Timing {
        first,
        rest: last.unwrap_or(first) - first,
        prompt_tokens: usage["prompt_tokens"].as_u64(),
        completion_tokens: usage["completion_tokens"].as_u64().unwrap_or(chunks),
    })
}

fn print_table(figures: &Value) {
    let servers = figures["servers"].as_array().cloned().unwrap_or_default();
    let Some(first) = servers.first() else { return };
    println!(
        "api benchmark: prompts cut from {}, greedy, one request at a time, {} CPUs here; medians of {}",
        figures["prompt_file"].as_str().unwrap_or(""),
        figures["cpus"],
        figures["repeat"]
    );
    if let Some(file) = figures["graft_model_file"].as_str() {
        println!("graft serves {file} (point another server at the same file to compare)");
    }
    let mut header = format!("{:<40}", "");
    for s in &servers {
        header.push_str(&format!("{:>14}", s["name"].as_str().unwrap_or("")));
    }
    for s in &servers[1..] {
        header.push_str(&format!(
            "  {:>22}",
            format!("{} vs {}", first["name"].as_str().unwrap_or(""), s["name"].as_str().unwrap_or(""))
        ));
    }
    println!("{header}");

    let rows = first["first_token"].as_array().map_or(0, Vec::len);
    for row in 0..rows {
        let tokens = &first["first_token"][row]["prompt_tokens"];
        let label = format!("first token, {tokens}-token prompt");
        let values: Vec<f64> = servers
            .iter()
            .map(|s| s["first_token"][row]["median_s"].as_f64().unwrap_or(f64::NAN))
            .collect();
        print_row(&label, &values, "s", "time");
    }
    let label = format!("next request while typing ({} tok)", first["typing"]["prompt_tokens"][1]);
    let values: Vec<f64> = servers
        .iter()
        .map(|s| s["typing"]["median_s"].as_f64().unwrap_or(f64::NAN))
        .collect();
    print_row(&label, &values, "s", "time");
    let label = format!("decode, {} tokens (tok/s)", first["decode"]["max_tokens"]);
    let values: Vec<f64> = servers
        .iter()
        .map(|s| s["decode"]["median_tokens_per_s"].as_f64().unwrap_or(f64::NAN))
        .collect();
    print_row(&label, &values, "", "speed");
    for s in &servers {
        let t = &s["typing"];
        println!(
            "  {}: typing session's first (cold) request {:.2} s, next ones {:.2}-{:.2} s; decode generated {} tokens",
            s["name"].as_str().unwrap_or(""),
            t["cold_s"].as_f64().unwrap_or(f64::NAN),
            t["min_s"].as_f64().unwrap_or(f64::NAN),
            t["max_s"].as_f64().unwrap_or(f64::NAN),
            s["decode"]["tokens"]
        );
    }
}

/// A row: each server's figure, then the first server's as a multiple of each other's.
fn print_row(label: &str, values: &[f64], unit: &str, what: &str) {
    let mut line = format!("{label:<40}");
    for v in values {
        line.push_str(&format!("{:>14}", format!("{v:.2} {unit}").trim_end()));
    }
    for v in &values[1..] {
        line.push_str(&format!("  {:>22}", format!("{:.2}x {what}", values[0] / v)));
    }
    println!("{line}");
}
