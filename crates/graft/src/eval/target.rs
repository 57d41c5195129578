//! Where `graft eval run` sends a request and how it reads the answer: graft's `/infill`,
//! OpenAI's `/v1/completions` and `/v1/chat/completions`, Tabby's completions, on graft
//! started here or on any server given by its base URL (`http://host:8080` or
//! `http://host:8080/v1`).

use std::time::Duration;

use serde_json::Value;

/// An answer: its text, and the paths of the code the server retrieved for it (graft's
/// `sources`, Tabby's `debug_data.snippets`; none from other servers).
pub struct Reply {
    pub text: String,
    pub sources: Vec<String>,
    /// The prompt the server built, when it says (`/infill`'s `prompt`).
    pub prompt: Option<String>,
}

/// One server.
#[derive(Clone)]
pub struct Endpoint {
    /// The base URL without a trailing `/` or `/v1`.
    base: String,
    key: Option<String>,
    client: reqwest::Client,
}

/// A request on a CPU can take minutes; one that takes longer than this has hung.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(900);

/// A server's base URL as given (`http://host:8080`, with or without `/v1` or a trailing
/// `/`), without `/v1` and the trailing `/`.
pub fn base_url(url: &str) -> anyhow::Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let base = trimmed.strip_suffix("/v1").unwrap_or(trimmed).to_owned();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        anyhow::bail!("`{url}` is not an http:// or https:// URL");
    }
    Ok(base)
}

impl Endpoint {
    pub fn new(url: &str, key: Option<String>) -> anyhow::Result<Endpoint> {
        let base = base_url(url)?;
        let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build()?;
        Ok(Endpoint { base, key, client })
    }

    /// llama.cpp's `/infill` (graft's and llama.cpp server's): `content`.
    pub async fn infill(&self, body: &Value) -> Result<Reply, String> {
        let answer = self.post("/infill", body).await?;
        Ok(Reply {
            text: text(&answer["content"], "content")?,
            sources: sources(&answer),
            prompt: answer["prompt"].as_str().map(str::to_owned),
        })
    }

    /// `/v1/completions`: the first choice's `text`.
    pub async fn completion(&self, body: &Value) -> Result<Reply, String> {
        let answer = self.post("/v1/completions", body).await?;
        Ok(Reply {
            text: text(&answer["choices"][0]["text"], "choices[0].text")?,
            sources: sources(&answer),
            prompt: None,
        })
    }

    /// Tabby's completion (`/v1/completions` with `segments`): the first choice's `text`; the
    /// retrieved files from `debug_data.snippets` (else graft's `sources`), the prompt from
    /// `debug_data`.
    pub async fn tabby(&self, body: &Value) -> Result<Reply, String> {
        let answer = self.post("/v1/completions", body).await?;
        // graft's `sources` first: they say which project a file is of.
        let retrieved = match (answer["sources"].is_array(), answer["debug_data"]["snippets"].as_array()) {
            (false, Some(snippets)) => snippets.iter().filter_map(|s| s["filepath"].as_str().map(str::to_owned)).collect(),
            _ => sources(&answer),
        };
        Ok(Reply {
            text: text(&answer["choices"][0]["text"], "choices[0].text")?,
            sources: retrieved,
            prompt: answer["debug_data"]["prompt"].as_str().map(str::to_owned),
        })
    }

    /// `/v1/chat/completions`: the first choice's message.
    pub async fn chat(&self, body: &Value) -> Result<Reply, String> {
        let answer = self.post("/v1/chat/completions", body).await?;
        Ok(Reply {
            text: text(&answer["choices"][0]["message"]["content"], "choices[0].message.content")?,
            sources: sources(&answer),
            prompt: None,
        })
    }

    /// The mean log-probability per token (natural log) `model` gives `reference` right after
    /// `prompt` (a prompt as the server built it, special tokens written out): both tokenized
    /// by the server (`/tokenize`), then the whole read for its log-probabilities
    /// (`/v1/completions` with `echo` and `logprobs`). `None` for an empty reference.
    pub async fn reference_logprob(&self, model: &str, prompt: &str, reference: &str) -> Result<Option<f64>, String> {
        let tokens = |text: &str, special: bool| {
            let body = serde_json::json!({"content": text, "add_special": special});
            async move {
                let answer = self.post("/tokenize", &body).await?;
                serde_json::from_value::<Vec<u32>>(answer["tokens"].clone())
                    .map_err(|_| "/tokenize: the answer's `tokens` are not token ids".to_owned())
            }
        };
        let mut ids = tokens(prompt, true).await?;
        let read = ids.len();
        let answer = tokens(reference, false).await?;
        if answer.is_empty() {
            return Ok(None);
        }
        let count = answer.len();
        ids.extend(answer);
        let body = serde_json::json!({
            "model": model, "prompt": ids, "echo": true, "logprobs": 0, "max_tokens": 1, "temperature": 0,
        });
        let scored = self.post("/v1/completions", &body).await?;
        let values = scored["choices"][0]["logprobs"]["token_logprobs"]
            .as_array()
            .and_then(|all| all.get(read..read + count))
            .ok_or("/v1/completions: no log-probabilities of the prompt (`echo` with `logprobs`)")?;
        let sum = values
            .iter()
            .map(|v| v.as_f64().ok_or("/v1/completions: a log-probability that is not a number"))
            .sum::<Result<f64, _>>()?;
        Ok(Some(sum / count as f64))
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| format!("{path}: {e}"))?;
        let answer: Value = serde_json::from_slice(&bytes).map_err(|_| {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            format!("{path}: HTTP {status}, not JSON: {shown}")
        })?;
        if !status.is_success() {
            let message = answer["error"]["message"]
                .as_str()
                .or_else(|| answer["error"].as_str())
                .unwrap_or("no message");
            return Err(format!("{path}: HTTP {status}: {message}"));
        }
        Ok(answer)
    }
}

fn text(value: &Value, field: &str) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        _ => Err(format!("the answer's `{field}` is not text")),
    }
}

/// The paths of graft's `sources` of the project's own repository: another project's
/// (`also_search`, named in `project`) is no file of it, held out or not.
fn sources(answer: &Value) -> Vec<String> {
    answer["sources"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter(|h| h["project"].is_null())
                .filter_map(|h| h["path"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_is_taken_with_or_without_v1() {
        for url in ["http://h:8080", "http://h:8080/", "http://h:8080/v1", "http://h:8080/v1/"] {
            assert_eq!(Endpoint::new(url, None).unwrap().base, "http://h:8080", "{url}");
        }
        assert!(Endpoint::new("h:8080", None).is_err());
    }
}
