//! Prometheus metrics: counters and histograms kept in memory and rendered in Prometheus's
//! text exposition format (version 0.0.4) on `GET /metrics`.
//!
//! What is measured: requests by route and status, request latency, time to first token,
//! tokens in and out, retrieval latency, adapter loads (read from the pool), the
//! completions editors report shown, accepted or dismissed, and each project's index runs
//! (read from the projects). This module
//! only records and renders; handlers and middleware decide when to record.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use graft_engine::pool::PoolStats;

use crate::projects::IndexRuns;
use crate::state::unix_seconds;

/// Bucket upper bounds, in seconds, for latencies from milliseconds to minutes.
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// A histogram with fixed buckets.
#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; SECONDS_BUCKETS.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        for (bound, count) in SECONDS_BUCKETS.iter().zip(&mut self.counts) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in SECONDS_BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug)]
struct Inner {
    /// (route, status) → count.
    requests: BTreeMap<(String, u16), u64>,
    /// route → latency.
    latency: BTreeMap<String, Histogram>,
    /// model → time to first token.
    ttft: BTreeMap<String, Histogram>,
    /// model → tokens read and generated.
    tokens: BTreeMap<String, TokenCounts>,
    retrieval: Histogram,
    /// Requests turned away because the queue was full.
    rejected: u64,
    /// An editor's reports of completions (Tabby's `view`, `select`, `dismiss`) → count.
    completion_events: BTreeMap<&'static str, u64>,
    /// Whether the last reload of the config and keys applied all it read.
    reload_ok: bool,
    /// When the last reload that did ended (the start, before any), in Unix seconds.
    reload_success_at: f64,
}

/// The server's metrics. Recording takes a short lock; nothing blocks on I/O.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            inner: Mutex::new(Inner {
                requests: BTreeMap::new(),
                latency: BTreeMap::new(),
                ttft: BTreeMap::new(),
                tokens: BTreeMap::new(),
                retrieval: Histogram::new(),
                rejected: 0,
                completion_events: BTreeMap::new(),
                reload_ok: true,
                reload_success_at: unix_seconds(),
            }),
        }
    }
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One finished HTTP request.
    pub fn request(&self, route: &str, status: u16, latency: Duration) {
        let mut m = self.lock();
        *m.requests.entry((route.to_owned(), status)).or_default() += 1;
        m.latency
            .entry(route.to_owned())
            .or_insert_with(Histogram::new)
            .observe(latency.as_secs_f64());
    }

    /// The first token of a generation on `model` arrived `after` the request started.
    pub fn first_token(&self, model: &str, after: Duration) {
        self.lock()
            .ttft
            .entry(model.to_owned())
            .or_insert_with(Histogram::new)
            .observe(after.as_secs_f64());
    }

    /// A generation on `model` ended, having read and generated `usage`'s tokens.
    pub fn tokens(&self, model: &str, usage: graft_engine::Usage) {
        let mut m = self.lock();
        let entry = m.tokens.entry(model.to_owned()).or_default();
        entry.prompt += usage.prompt_tokens as u64;
        entry.cached += usage.cached_tokens as u64;
        entry.completion += usage.completion_tokens as u64;
    }

    /// A retrieval took `took`.
    pub fn retrieval(&self, took: Duration) {
        self.lock().retrieval.observe(took.as_secs_f64());
    }

    /// A request was turned away with 429.
    pub fn rejected(&self) {
        self.lock().rejected += 1;
    }

    /// An editor reported a completion shown (`view`), accepted (`select`) or dismissed
    /// (`dismiss`).
    pub fn completion_event(&self, event: &'static str) {
        *self.lock().completion_events.entry(event).or_default() += 1;
    }

    /// A reload of the config file and the API keys ended: `ok` when it applied everything it
    /// read, false when a file could not be used or a change was refused (an adapter that
    /// does not load). As Prometheus's own `prometheus_config_last_reload_successful`.
    pub fn reload(&self, ok: bool) {
        let mut m = self.lock();
        m.reload_ok = ok;
        if ok {
            m.reload_success_at = unix_seconds();
        }
    }

    /// Everything, in Prometheus's text format; `pool`, `in_flight`, `queued` and each index's
    /// runs (by project) are read at render time.
    pub fn render(&self, pool: PoolStats, in_flight: usize, queued: usize, index: &[(String, IndexRuns)]) -> String {
        let m = self.lock();
        let mut out = String::new();
        let header = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        header(&mut out, "graft_requests_total", "counter", "HTTP requests by route and status.");
        for ((route, status), n) in &m.requests {
            let _ = writeln!(out, "graft_requests_total{{route=\"{}\",status=\"{status}\"}} {n}", escape(route));
        }
        header(
            &mut out,
            "graft_request_duration_seconds",
            "histogram",
            "HTTP request latency by route.",
        );
        for (route, h) in &m.latency {
            h.render(&mut out, "graft_request_duration_seconds", &format!("route=\"{}\"", escape(route)));
        }
        header(
            &mut out,
            "graft_time_to_first_token_seconds",
            "histogram",
            "Time from request to first generated token, by model.",
        );
        for (model, h) in &m.ttft {
            h.render(
                &mut out,
                "graft_time_to_first_token_seconds",
                &format!("model=\"{}\"", escape(model)),
            );
        }
        let token_counters: [(&str, &str, TokenCount); 3] = [
            ("graft_prompt_tokens_total", "Prompt tokens processed, by model.", |t| t.prompt),
            (
                "graft_prompt_tokens_cached_total",
                "Prompt tokens the prompt cache supplied (read by an earlier request), by model.",
                |t| t.cached,
            ),
            ("graft_completion_tokens_total", "Tokens generated, by model.", |t| t.completion),
        ];
        for (name, help, count) in token_counters {
            header(&mut out, name, "counter", help);
            for (model, tokens) in &m.tokens {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", escape(model), count(tokens));
            }
        }
        header(
            &mut out,
            "graft_retrieval_duration_seconds",
            "histogram",
            "Time to retrieve code for a prompt.",
        );
        m.retrieval.render(&mut out, "graft_retrieval_duration_seconds", "");
        header(
            &mut out,
            "graft_adapter_loads_total",
            "counter",
            "Adapter versions loaded into the engine.",
        );
        let _ = writeln!(out, "graft_adapter_loads_total {}", pool.loads);
        header(
            &mut out,
            "graft_adapter_merges_total",
            "counter",
            "Adapter merges computed (not found in the cache).",
        );
        let _ = writeln!(out, "graft_adapter_merges_total {}", pool.merges);
        header(
            &mut out,
            "graft_adapter_evictions_total",
            "counter",
            "Adapters unloaded to make room.",
        );
        let _ = writeln!(out, "graft_adapter_evictions_total {}", pool.evictions);
        header(
            &mut out,
            "graft_adapter_load_failures_total",
            "counter",
            "Adapter loads that failed.",
        );
        let _ = writeln!(out, "graft_adapter_load_failures_total {}", pool.failures);
        header(&mut out, "graft_generations_in_flight", "gauge", "Generations running now.");
        let _ = writeln!(out, "graft_generations_in_flight {in_flight}");
        header(
            &mut out,
            "graft_generations_queued",
            "gauge",
            "Requests waiting for a generation slot.",
        );
        let _ = writeln!(out, "graft_generations_queued {queued}");
        header(
            &mut out,
            "graft_requests_rejected_total",
            "counter",
            "Requests turned away because the queue was full.",
        );
        let _ = writeln!(out, "graft_requests_rejected_total {}", m.rejected);
        header(
            &mut out,
            "graft_completion_events_total",
            "counter",
            "Completions an editor reported shown (view), accepted (select) or dismissed (dismiss); Tabby's plugins report them.",
        );
        for (event, n) in &m.completion_events {
            let _ = writeln!(out, "graft_completion_events_total{{event=\"{event}\"}} {n}");
        }
        header(
            &mut out,
            "graft_config_last_reload_successful",
            "gauge",
            "Whether the last reload of the config file and the API keys applied everything it read (1) or not (0).",
        );
        let _ = writeln!(out, "graft_config_last_reload_successful {}", u8::from(m.reload_ok));
        header(
            &mut out,
            "graft_config_last_reload_success_timestamp_seconds",
            "gauge",
            "When the last reload that applied everything ended, or the server started (Unix time).",
        );
        let _ = writeln!(out, "graft_config_last_reload_success_timestamp_seconds {:.3}", m.reload_success_at);
        header(
            &mut out,
            "graft_index_runs_total",
            "counter",
            "Index runs of a project's repository (at start, on a change, or asked for), by outcome.",
        );
        for (project, runs) in index {
            for (outcome, n) in [("ok", runs.succeeded), ("failed", runs.failed)] {
                let _ = writeln!(
                    out,
                    "graft_index_runs_total{{project=\"{}\",outcome=\"{outcome}\"}} {n}",
                    escape(project)
                );
            }
        }
        header(
            &mut out,
            "graft_index_last_success_timestamp_seconds",
            "gauge",
            "When a project's last index run that succeeded ended (Unix time): its index holds the repository as it was then.",
        );
        for (project, runs) in index {
            if let Some(at) = runs.last_success {
                let _ = writeln!(
                    out,
                    "graft_index_last_success_timestamp_seconds{{project=\"{}\"}} {at:.3}",
                    escape(project)
                );
            }
        }
        header(
            &mut out,
            "graft_index_vectors_pending",
            "gauge",
            "Chunks of a project's index whose vectors a run is still embedding while the index serves (keyword search and definition lookup find them meanwhile).",
        );
        for (project, runs) in index {
            let _ = writeln!(
                out,
                "graft_index_vectors_pending{{project=\"{}\"}} {}",
                escape(project),
                runs.vectors_pending
            );
        }
        out
    }
}

/// One of [`TokenCounts`]'s numbers.
type TokenCount = fn(&TokenCounts) -> u64;

/// Tokens a model's generations read and wrote, added up.
#[derive(Debug, Default)]
struct TokenCounts {
    /// Prompt tokens, those the prompt cache supplied included.
    prompt: u64,
    cached: u64,
    completion: u64,
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        let m = Metrics::default();
        m.request("/v1/chat/completions", 200, Duration::from_millis(30));
        m.request("/v1/chat/completions", 200, Duration::from_millis(700));
        m.request("/v1/chat/completions", 404, Duration::from_millis(1));
        let usage = |prompt_tokens, cached_tokens, completion_tokens| graft_engine::Usage {
            prompt_tokens,
            cached_tokens,
            completion_tokens,
        };
        m.tokens("graft", usage(10, 8, 5));
        m.tokens("graft", usage(1, 0, 2));
        let runs = IndexRuns {
            succeeded: 2,
            failed: 1,
            last_success: Some(1_700_000_000.5),
            last: None,
            vectors_pending: 4928,
        };
        let text = m.render(
            PoolStats::default(),
            1,
            0,
            &[("app".into(), runs), ("new".into(), IndexRuns::default())],
        );
        assert!(text.contains("graft_index_runs_total{project=\"app\",outcome=\"ok\"} 2"), "{text}");
        assert!(text.contains("graft_index_runs_total{project=\"app\",outcome=\"failed\"} 1"));
        assert!(text.contains("graft_index_runs_total{project=\"new\",outcome=\"ok\"} 0"));
        assert!(text.contains("graft_index_last_success_timestamp_seconds{project=\"app\"} 1700000000.500"));
        assert!(!text.contains("graft_index_last_success_timestamp_seconds{project=\"new\"}"));
        assert!(text.contains("graft_index_vectors_pending{project=\"app\"} 4928"), "{text}");
        assert!(text.contains("graft_index_vectors_pending{project=\"new\"} 0"));
        assert!(
            text.contains("graft_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("graft_requests_total{route=\"/v1/chat/completions\",status=\"404\"} 1"));
        assert!(text.contains("graft_request_duration_seconds_bucket{route=\"/v1/chat/completions\",le=\"0.05\"} 2"));
        assert!(text.contains("graft_request_duration_seconds_bucket{route=\"/v1/chat/completions\",le=\"+Inf\"} 3"));
        assert!(text.contains("graft_request_duration_seconds_count{route=\"/v1/chat/completions\"} 3"));
        assert!(text.contains("graft_prompt_tokens_total{model=\"graft\"} 11"));
        assert!(text.contains("graft_prompt_tokens_cached_total{model=\"graft\"} 8"));
        assert!(text.contains("graft_completion_tokens_total{model=\"graft\"} 7"));
        assert!(text.contains("graft_generations_in_flight 1"));
        assert!(text.contains("# TYPE graft_retrieval_duration_seconds histogram"));

        // Reloads: successful from the start; a failure says so and keeps the last success.
        let at = |text: &str| {
            let line = text
                .lines()
                .find(|l| l.starts_with("graft_config_last_reload_success_timestamp_seconds "))
                .unwrap();
            line.split(' ').nth(1).unwrap().parse::<f64>().unwrap()
        };
        let started = at(&text);
        assert!(text.contains("graft_config_last_reload_successful 1") && started > 1.7e9, "{text}");
        m.reload(false);
        let text = m.render(PoolStats::default(), 0, 0, &[]);
        assert!(text.contains("graft_config_last_reload_successful 0"));
        assert_eq!(at(&text), started);
        std::thread::sleep(Duration::from_millis(5));
        m.reload(true);
        let text = m.render(PoolStats::default(), 0, 0, &[]);
        assert!(text.contains("graft_config_last_reload_successful 1") && at(&text) > started);
    }
}
