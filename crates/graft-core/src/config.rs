//! The one typed configuration of graft, read from a TOML file (by default `config/graft.toml`).
//!
//! This module owns parsing, defaults, path resolution and validation. It is loaded once at
//! start-up; every error names the offending key and says what was expected. It must not touch
//! models, the network or the index: it only describes them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// Environment variable that replaces `kit.dir`.
pub const KIT_DIR_ENV: &str = "GRAFT_KIT_DIR";

/// The whole configuration. Every section has defaults, so an empty file is a valid config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub kit: KitConfig,
    pub model: ModelConfig,
    pub generation: GenerationConfig,
    pub index: IndexConfig,
    pub adapters: AdaptersConfig,
    pub dataset: DatasetConfig,
    /// Repositories graft serves retrieval for, each with its own index.
    pub projects: Vec<ProjectConfig>,
}

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// A TOML file of API keys (`[[keys]]` with `key`, `name`, `projects`, `admin`).
    pub api_keys_file: Option<PathBuf>,
    /// The environment variable that may hold more API keys (`KEY:proj1,proj2[:admin];...`).
    pub api_keys_env: String,
    /// Serve on a non-loopback address with no API keys. Off: graft refuses to start so.
    pub allow_unauthenticated: bool,
    /// Generations running at once; more wait in the queue. Absent: [`Config::generation_slots`]
    /// picks by device.
    pub max_concurrent: Option<usize>,
    /// Requests waiting for a generation slot; beyond it, HTTP 429 with Retry-After.
    pub max_queue: usize,
    /// Longest a request may take, waiting included, in seconds.
    pub request_timeout_secs: u64,
    /// On SIGTERM, how long requests in flight get to finish, in seconds.
    pub shutdown_timeout_secs: u64,
    /// How long a client has to send a request's headers, and then its whole body, in seconds;
    /// an idle keep-alive connection is closed after it too. Slow or silent clients cannot
    /// hold connections open.
    pub read_timeout_secs: u64,
    /// Connections served at once; further ones wait to be accepted.
    pub max_connections: usize,
    /// The model a request that names none uses (llama.cpp's clients send no `model`; neither
    /// need vLLM's): a project, an adapter or the base model. Absent: the first project, or the
    /// base model when there is none. Its old name, `infill_model`, is read too.
    #[serde(alias = "infill_model")]
    pub default_model: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 4 * 1024 * 1024,
            api_keys_file: None,
            api_keys_env: "GRAFT_API_KEYS".to_owned(),
            allow_unauthenticated: false,
            max_concurrent: None,
            max_queue: 32,
            request_timeout_secs: 600,
            shutdown_timeout_secs: 30,
            read_timeout_secs: 30,
            max_connections: 1024,
            default_model: None,
        }
    }
}

/// `[kit]`: where the offline model kit lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KitConfig {
    /// Folder the kit is unpacked into. Relative to the config file's folder.
    pub dir: PathBuf,
}

impl Default for KitConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(".kit"),
        }
    }
}

/// `model.prompt_chunk`'s default (config/graft.toml says why).
pub const DEFAULT_PROMPT_CHUNK: usize = 256;

/// `[model]`: the base model served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The id clients put in the `model` field to reach the base model.
    pub name: String,
    /// More ids that reach the base model, for clients that send a fixed model name (vLLM's
    /// `--served-model-name`, llama.cpp's `--alias`).
    pub aliases: Vec<String>,
    /// The GGUF file of the base model.
    pub gguf: ModelSource,
    /// Where the model runs.
    pub device: Device,
    /// Most sequences the engine decodes at once.
    pub max_num_seqs: usize,
    /// Recent prompts whose keys and values the engine keeps, so that a prompt starting with
    /// one of them reads only what follows (0: none).
    pub prompt_cache: usize,
    /// The most tokens of a prompt read in one step while other answers decode; a longer
    /// prompt is read in chunks between their steps (0: every prompt in one step).
    pub prompt_chunk: usize,
    /// The format of code-completion prompts; `auto` detects it from the model's vocabulary.
    pub prompt_format: PromptFormatChoice,
    /// A Jinja chat template file used instead of the one in the GGUF.
    pub chat_template: Option<PathBuf>,
    /// On the CPU, how the base model's weights are re-stored (once, in
    /// `adapters.cache_dir`) for the engine's faster kernels.
    pub cpu_weights: CpuWeights,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            name: "smollm2-135m-instruct".to_owned(),
            aliases: Vec::new(),
            gguf: ModelSource::Kit("smollm2-135m-instruct".to_owned()),
            device: Device::Cpu,
            max_num_seqs: 8,
            prompt_cache: 4,
            prompt_chunk: DEFAULT_PROMPT_CHUNK,
            prompt_format: PromptFormatChoice::Auto,
            chat_template: None,
            cpu_weights: CpuWeights::Q8_0,
        }
    }
}

/// `model.prompt_format`: how code-completion prompts are laid out (see graft-engine's `fim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptFormatChoice {
    /// Detected from the special tokens of the model's vocabulary.
    Auto,
    QwenCoder,
    #[serde(rename = "starcoder")]
    StarCoder,
    DeepseekCoder,
    #[serde(rename = "codellama")]
    CodeLlama,
    /// No fill-in-the-middle: repo context, then the prefix is continued.
    Continuation,
}

/// Where a model file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// An artifact of the offline model kit, written `kit:<artifact id>` in the file.
    Kit(String),
    /// A file on disk (relative paths are resolved against the config file's folder).
    Path(PathBuf),
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Kit(id) => write!(f, "kit:{id}"),
            ModelSource::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

impl<'de> Deserialize<'de> for ModelSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Some(id) = s.strip_prefix("kit:") {
            if id.is_empty() {
                return Err(de::Error::custom(
                    "`kit:` needs an artifact id after it, like `kit:smollm2-135m-instruct`",
                ));
            }
            return Ok(ModelSource::Kit(id.to_owned()));
        }
        if s.is_empty() {
            return Err(de::Error::custom(
                "expected a path to a model file or `kit:<artifact id>`, found an empty string",
            ));
        }
        Ok(ModelSource::Path(PathBuf::from(s)))
    }
}

/// `model.cpu_weights`: how the base model is stored for the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CpuWeights {
    /// The file as it is.
    #[serde(rename = "as-is")]
    AsIs,
    /// Q4_1/Q5_0/Q5_1 tensors as Q8_0, which has a SIMD kernel: faster decoding.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// Every quantized matrix as F16, multiplied by a GEMM kernel: faster prompts, slower
    /// decoding, more memory.
    #[serde(rename = "f16")]
    F16,
}

/// The device a model runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// The CPU, always available.
    Cpu,
    /// The first CUDA GPU; needs graft built with `--features cuda`.
    Cuda,
    /// A GPU when graft was built with one and one is present, else the CPU.
    Auto,
}

/// `[generation]`: limits and defaults applied to every request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationConfig {
    /// `max_tokens` used when a completion request (`/v1/completions`, `/infill`) gives none.
    pub default_max_tokens: u32,
    /// `max_tokens` used when a chat request gives none; unset, `max_tokens_limit`: an answer
    /// is not cut short unasked, as OpenAI's, vLLM's and llama.cpp's run to the context's end.
    pub default_chat_max_tokens: Option<u32>,
    /// The largest `max_tokens` a request may ask for.
    pub max_tokens_limit: u32,
    /// `temperature` used when a request gives none (0 = greedy).
    pub default_temperature: f64,
    /// `top_p` used when a request gives none.
    pub default_top_p: f64,
    /// `top_k` used when a request gives none (0 = every token).
    pub default_top_k: usize,
    /// `min_p` used when a request gives none (0 = no floor).
    pub default_min_p: f64,
    /// The longest prompt accepted, in tokens, retrieved context included.
    pub max_prompt_tokens: usize,
    /// Most tokens of the files a client sends as extra context (`/infill`'s `input_extra`)
    /// kept in a prompt, newest first.
    pub max_extra_context_tokens: usize,
}

impl GenerationConfig {
    /// `max_tokens` for a chat request that gives none.
    pub fn chat_max_tokens(&self) -> u32 {
        self.default_chat_max_tokens.unwrap_or(self.max_tokens_limit)
    }
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            default_max_tokens: 256,
            default_chat_max_tokens: None,
            max_tokens_limit: 4096,
            default_temperature: 0.2,
            default_top_p: 0.95,
            default_top_k: 0,
            default_min_p: 0.0,
            max_prompt_tokens: 4096,
            max_extra_context_tokens: 1024,
        }
    }
}

/// `[adapters]`: the LoRA adapter store and how adapters are merged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptersConfig {
    /// The store: one PEFT folder per adapter, named after the adapter.
    pub dir: PathBuf,
    /// Largest LoRA rank accepted.
    pub max_rank: usize,
    /// Type merged weights are stored at when the base weight is quantized.
    pub merged_type: MergedType,
    /// Where merged models are kept, by the hash of what went into them.
    pub cache_dir: PathBuf,
    /// Most adapters loaded next to the base model at once; the least recently used idle one
    /// is unloaded to make room.
    pub max_loaded: usize,
    /// Most megabytes of merged models loaded at once (0: no limit beyond `max_loaded`).
    pub max_loaded_mb: u64,
    /// Folders besides `dir` that `POST /v1/load_lora_adapter` may load adapters from.
    pub allowed_dirs: Vec<PathBuf>,
}

impl Default for AdaptersConfig {
    fn default() -> Self {
        AdaptersConfig {
            dir: PathBuf::from("adapters"),
            max_rank: 64,
            merged_type: MergedType::Q8_0,
            cache_dir: PathBuf::from(".cache/merged"),
            max_loaded: 4,
            max_loaded_mb: 0,
            allowed_dirs: Vec::new(),
        }
    }
}

/// Storage types for merged weights (GGUF's names, lower case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergedType {
    #[serde(rename = "q8_0")]
    Q8_0,
    F16,
    F32,
}

/// `[index]`: how repositories are indexed and searched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    /// Folder holding one index per project (`<dir>/<project>/`).
    pub dir: PathBuf,
    /// Extra excludes in .gitignore syntax, on top of each repository's own ignore files.
    pub exclude: Vec<String>,
    /// Names of hidden files and folders (`.ci`, `.config`) indexed besides the CI and build
    /// settings the walk keeps of its own (`.github`, `.gitlab-ci.yml`, `.cargo`, ...).
    pub keep_hidden: Vec<String>,
    /// Whether the files of git submodules (and of clones and worktrees inside the indexed
    /// repository) are indexed as its own; left out by default, as git leaves them out.
    pub submodules: bool,
    /// Files larger than this are skipped.
    pub max_file_bytes: u64,
    /// Files whose longer lines hold at least half their text are skipped as minified.
    pub max_line_chars: usize,
    /// Largest chunk, in characters.
    pub chunk_chars: usize,
    /// The embedding model.
    pub embedding_model: EmbeddingModel,
    /// Tokens of a chunk the embedding model reads; the rest is cut. Embedding time grows with it.
    pub embedding_max_tokens: usize,
    /// Threads for embedding and for reading, parsing and chunking files (at most the
    /// machine's cores), and for the keyword index (at most 8).
    pub threads: usize,
    /// Chunks per embedding batch (small batches are faster on a CPU and hold less memory).
    pub batch_size: usize,
    /// Results a search returns when not told otherwise.
    pub top_k: usize,
    /// At most this many results of one file.
    pub per_file: usize,
    /// Weight of the vector ranking against the keyword ranking (1.0) in hybrid search.
    pub vector_weight: f64,
    /// A Qdrant server's gRPC URL; unset keeps vectors in the embedded engine.
    pub qdrant_url: Option<String>,
    /// The environment variable that holds the Qdrant API key (read only with `qdrant_url`).
    pub qdrant_api_key_env: String,
    /// Collections on the server are named `<prefix><project>`.
    pub qdrant_collection_prefix: String,
    /// Shards of a new collection on a cluster (Qdrant's default when unset).
    pub qdrant_shards: Option<u32>,
    /// Copies of each shard on a cluster, so a node can go down (Qdrant's default, 1, when
    /// unset).
    pub qdrant_replication_factor: Option<u32>,
    /// While `graft up` serves, each project's repository is looked at this often (the names,
    /// sizes and times of its files; none is read) and re-indexed when one changed. 0: the
    /// indexes are brought up to date once, at start.
    pub refresh_secs: u64,
    /// The free space (MB) graft keeps on the disk of an index folder it writes: a run on a
    /// disk with less is refused, one that fills it stops before its next write (the
    /// embedded vector store's memory maps would end graft with a SIGBUS). 0: no check.
    /// `GRAFT_INDEX_MIN_FREE_MB` replaces it.
    pub min_free_mb: u64,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            dir: PathBuf::from("index"),
            exclude: Vec::new(),
            keep_hidden: Vec::new(),
            submodules: false,
            max_file_bytes: 1024 * 1024,
            max_line_chars: 1000,
            chunk_chars: 1500,
            embedding_model: EmbeddingModel::Kit("minilm-l6-v2".to_owned()),
            embedding_max_tokens: 128,
            threads: 2,
            batch_size: 8,
            top_k: 10,
            per_file: 2,
            vector_weight: 0.5,
            qdrant_url: None,
            qdrant_api_key_env: "QDRANT_API_KEY".to_owned(),
            qdrant_collection_prefix: "graft_".to_owned(),
            qdrant_shards: None,
            qdrant_replication_factor: None,
            refresh_secs: 60,
            min_free_mb: 64,
        }
    }
}

/// `[dataset]`: how `graft dataset` turns a repository into training data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetConfig {
    /// Languages kept (by `graft_index::chunker::language_of`: "rust", "python", "markdown",
    /// ...); empty keeps every language.
    pub include_languages: Vec<String>,
    /// Languages dropped, after `include_languages`.
    pub exclude_languages: Vec<String>,
    /// A file with a longer line is dropped.
    pub max_line_length: usize,
    /// A file whose lines are longer than this on average is dropped.
    pub max_mean_line_length: f64,
    /// A file with a smaller share of letters and digits among its characters is dropped.
    pub min_alphanumeric_fraction: f64,
    /// JSON / YAML / XML files larger than this many bytes are data, not configuration.
    pub max_data_file_bytes: u64,
    /// What happens to a file with a secret: "drop" it, or "redact" the secret.
    pub secrets: SecretAction,
    /// Files this similar (Jaccard over token shingles) are near duplicates; one is kept.
    pub near_duplicate_threshold: f64,
    /// Tokens per shingle for near-duplicate detection.
    pub shingle_tokens: usize,
    /// Share of the non-held-out files used for validation (early stopping).
    pub validation_fraction: f64,
    /// Longest sample, in the served model's tokens.
    pub max_sample_tokens: usize,
    /// Share of packed samples turned into fill-in-the-middle samples (FIM models only).
    pub fim_rate: f64,
    /// Share of those in suffix-prefix-middle order.
    pub fim_spm_rate: f64,
    /// Share of file pieces that also make a retrieval-augmented sample (the project's index
    /// needed); 0 makes none.
    pub retrieval_rate: f64,
    /// Mine before → after pairs from git history.
    pub history: bool,
    /// A commit changing more source files than this is not a pair.
    pub history_max_files: usize,
    /// Most commits read, newest first.
    pub history_max_commits: usize,
    /// Lines of unchanged code kept around a change (halved until a pair fits
    /// `max_sample_tokens`).
    pub history_context_lines: usize,
}

/// What to do with a file where a secret was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretAction {
    Drop,
    Redact,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        DatasetConfig {
            include_languages: Vec::new(),
            exclude_languages: Vec::new(),
            max_line_length: 1000,
            max_mean_line_length: 100.0,
            min_alphanumeric_fraction: 0.25,
            max_data_file_bytes: 20_000,
            secrets: SecretAction::Drop,
            near_duplicate_threshold: 0.85,
            shingle_tokens: 5,
            validation_fraction: 0.05,
            max_sample_tokens: 512,
            fim_rate: 0.5,
            fim_spm_rate: 0.5,
            retrieval_rate: 0.5,
            history: true,
            history_max_files: 3,
            history_max_commits: 5000,
            history_context_lines: 20,
        }
    }
}

/// Where the embedding model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbeddingModel {
    /// `kit:minilm-l6-v2`: the offline kit's all-MiniLM-L6-v2 (ONNX, int8).
    Kit(String),
    /// `files:<folder>`: a folder with `model.onnx` and its tokenizer files.
    Folder(PathBuf),
    /// Anything else: a fastembed catalog model (`BAAI/bge-small-en-v1.5`), downloaded from
    /// Hugging Face on first use.
    Catalog(String),
}

impl<'de> Deserialize<'de> for EmbeddingModel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let s = s.trim();
        if s.is_empty() {
            return Err(de::Error::custom(
                "expected `kit:minilm-l6-v2`, `files:<folder>` or a fastembed model name",
            ));
        }
        Ok(if let Some(id) = s.strip_prefix("kit:") {
            EmbeddingModel::Kit(id.to_owned())
        } else if let Some(dir) = s.strip_prefix("files:") {
            EmbeddingModel::Folder(PathBuf::from(dir))
        } else {
            EmbeddingModel::Catalog(s.to_owned())
        })
    }
}

/// `[[projects]]`: a repository served with retrieval.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// The project's id: clients use it as `model`; its index is `<index.dir>/<name>/`.
    pub name: String,
    /// The repository's folder (relative paths: against the config file's folder).
    pub path: PathBuf,
    /// An adapter of the store that requests for this project run on; the base when absent.
    #[serde(default)]
    pub adapter: Option<String>,
    /// Another project (on the same repository) whose index this one searches instead of
    /// keeping its own: the same code served with and without an adapter, indexed once.
    #[serde(default)]
    pub index: Option<String>,
    /// Whether requests for this project get retrieved code in their prompts.
    #[serde(default = "yes")]
    pub retrieval: bool,
    /// Chunks retrieved per request.
    #[serde(default = "default_project_top_k")]
    pub top_k: usize,
    /// Most tokens of retrieved code added to a prompt (counted by the model's tokenizer).
    #[serde(default = "default_context_tokens")]
    pub context_tokens: usize,
    /// The repository's remote URLs, by which an editor's request that names no model finds
    /// the project (Tabby's plugins send the file's `git_url`); any way of writing a URL
    /// matches (`remote::normalize`). Empty: the repository's git remotes, read at start-up.
    #[serde(default)]
    pub remote_urls: Vec<String>,
    /// Other projects whose indexes this project's retrieval searches too, as one with its own
    /// (a shared library's internal APIs found from an application's requests). Their code is
    /// named in prompts as `<project>/<path>`.
    #[serde(default)]
    pub also_search: Vec<String>,
}

impl ProjectConfig {
    /// A project on `path` with the settings a config file leaves out.
    pub fn new(name: &str, path: impl Into<PathBuf>) -> ProjectConfig {
        ProjectConfig {
            name: name.to_owned(),
            path: path.into(),
            adapter: None,
            index: None,
            retrieval: true,
            top_k: default_project_top_k(),
            context_tokens: default_context_tokens(),
            remote_urls: Vec::new(),
            also_search: Vec::new(),
        }
    }

    /// The name of the index this project searches: its own, or the one it shares.
    pub fn index_name(&self) -> &str {
        self.index.as_deref().unwrap_or(&self.name)
    }
}

fn yes() -> bool {
    true
}

fn default_project_top_k() -> usize {
    5
}

/// Modest, because the prompt's length is what a CPU pays for: with mistralrs 0.8.1 on 2 cores,
/// SmolLM2-135M takes about 13 s before its first token with 512 tokens of context and 34 s
/// with 1024.
fn default_context_tokens() -> usize {
    512
}

/// Longest project or adapter name.
pub const MAX_NAME_CHARS: usize = 64;

/// Whether `name` can name a project or an adapter (in the config and in the API alike): it
/// becomes a folder name, so letters, digits, `.`, `_` and `-` only, at most
/// [`MAX_NAME_CHARS`], not starting with `.`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// What can go wrong while loading the configuration. Each message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {location}{}{message}", key_prefix(key))]
    Parse {
        path: PathBuf,
        /// The dotted key, such as `server.listen`.
        key: String,
        /// `line L, column C: ` when the parser knows it, else empty.
        location: String,
        message: String,
    },
    #[error("{path}: `{key}`: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("`{key}`: ")
    }
}

impl ConfigError {
    /// The dotted key the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
        }
    }
}

impl Config {
    /// Generations the server runs at once: `server.max_concurrent`, or by device when it is
    /// absent: 4 on the CPU, and 8 on a GPU, where batching pays more. Answers in progress
    /// decode in one batch whatever their lengths (vendor/README.md, mistralrs-core change
    /// 17) while prompts are read one at a time, so on a CPU a few at once serve a team better
    /// than one (`graft bench load`, 8 clients, 2 cores: 1.5-1.6 times the tokens per second of
    /// one at a time, the first token after 0.5 s instead of 1.3 s) and more than a few leave
    /// answers waiting on other requests' long prompts. `auto_gpu` says whether
    /// `device = "auto"` means a GPU here (a CUDA build on a machine with CUDA).
    pub fn generation_slots(&self, auto_gpu: bool) -> usize {
        self.server.max_concurrent.unwrap_or(match self.model.device {
            Device::Cpu => 4,
            Device::Cuda => 8,
            Device::Auto if auto_gpu => 8,
            Device::Auto => 4,
        })
    }

    /// Reads, resolves and validates the config file at `path`. `GRAFT_KIT_DIR`, when set,
    /// replaces `kit.dir`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_text(path).map(|(config, _)| config)
    }

    /// [`Config::load`], and the file's text as read.
    pub(crate) fn load_with_text(path: &Path) -> Result<(Config, String), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::from_toml(&text, path)?;
        if let Some(dir) = std::env::var_os(KIT_DIR_ENV).filter(|v| !v.is_empty()) {
            config.kit.dir = PathBuf::from(dir);
        }
        Ok((config, text))
    }

    /// Parses and validates config text. `origin` is the file the text came from: it names the
    /// file in errors, and relative paths are resolved against its folder.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let mut config = parse(text, origin)?;
        let base = origin.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config.validate(origin)?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        self.kit.dir = resolve(base, &self.kit.dir);
        if let ModelSource::Path(p) = &self.model.gguf {
            self.model.gguf = ModelSource::Path(resolve(base, p));
        }
        self.index.dir = resolve(base, &self.index.dir);
        self.adapters.dir = resolve(base, &self.adapters.dir);
        self.adapters.cache_dir = resolve(base, &self.adapters.cache_dir);
        for dir in &mut self.adapters.allowed_dirs {
            *dir = resolve(base, dir);
        }
        if let Some(template) = &self.model.chat_template {
            self.model.chat_template = Some(resolve(base, template));
        }
        if let EmbeddingModel::Folder(p) = &self.index.embedding_model {
            self.index.embedding_model = EmbeddingModel::Folder(resolve(base, p));
        }
        for project in &mut self.projects {
            project.path = resolve(base, &project.path);
        }
        if let Some(file) = &self.server.api_keys_file {
            self.server.api_keys_file = Some(resolve(base, file));
        }
    }

    /// The configured project with this name.
    pub fn project(&self, name: &str) -> Option<&ProjectConfig> {
        self.projects.iter().find(|p| p.name == name)
    }

    fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        /// The longest time any `*_secs` setting may give: a year.
        const MAX_SECS: u64 = 365 * 24 * 3600;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: origin.to_owned(),
            key: key.to_owned(),
            message,
        };
        // A model id: anything a client can put in `model`, but not empty or with spaces.
        let bad_id = |id: &str| id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control());
        let name = &self.model.name;
        if bad_id(name) {
            return Err(invalid(
                "model.name",
                format!("expected a non-empty id without spaces, found {name:?}"),
            ));
        }
        for (i, alias) in self.model.aliases.iter().enumerate() {
            let key = format!("model.aliases[{i}]");
            if bad_id(alias) {
                return Err(invalid(&key, format!("expected a non-empty id without spaces, found {alias:?}")));
            }
            if alias == name || self.model.aliases[..i].contains(alias) || self.projects.iter().any(|p| &p.name == alias) {
                return Err(invalid(
                    &key,
                    format!("`{alias}` is already the base model's name, another alias or a project's name"),
                ));
            }
        }
        if self.model.max_num_seqs == 0 {
            return Err(invalid("model.max_num_seqs", "must be at least 1".into()));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(invalid(
                "server.max_body_bytes",
                format!("must be at least 1024, found {}", self.server.max_body_bytes),
            ));
        }
        let g = &self.generation;
        if g.max_tokens_limit == 0 {
            return Err(invalid("generation.max_tokens_limit", "must be at least 1".into()));
        }
        if g.max_prompt_tokens < 16 {
            return Err(invalid(
                "generation.max_prompt_tokens",
                format!("must be at least 16, found {}", g.max_prompt_tokens),
            ));
        }
        let sv = &self.server;
        for (key, value) in [
            ("server.max_concurrent", sv.max_concurrent.map_or(1, |n| n as u64)),
            ("server.request_timeout_secs", sv.request_timeout_secs),
            ("server.read_timeout_secs", sv.read_timeout_secs),
            ("server.max_connections", sv.max_connections as u64),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        // More would overflow a semaphore's count or an allocation made up front; no machine
        // runs, holds or reads nearly as many.
        for (key, value, most) in [
            ("server.max_concurrent", sv.max_concurrent.unwrap_or(1), 65_536),
            ("server.max_connections", sv.max_connections, 1_000_000),
            ("model.max_num_seqs", self.model.max_num_seqs, 65_536),
            ("model.prompt_chunk", self.model.prompt_chunk, 1 << 24),
            ("index.threads", self.index.threads, 256),
            ("index.batch_size", self.index.batch_size, 65_536),
            ("index.top_k", self.index.top_k, 1000),
        ] {
            if value > most {
                return Err(invalid(key, format!("must be at most {most}, found {value}")));
            }
        }
        // Longer would overflow a clock's deadline; none is meant to be more than a day or so.
        for (key, value) in [
            ("server.request_timeout_secs", sv.request_timeout_secs),
            ("server.read_timeout_secs", sv.read_timeout_secs),
            ("server.shutdown_timeout_secs", sv.shutdown_timeout_secs),
            ("index.refresh_secs", self.index.refresh_secs),
        ] {
            if value > MAX_SECS {
                return Err(invalid(key, format!("must be at most {MAX_SECS} (a year), found {value}")));
            }
        }
        for (key, value) in [
            ("generation.default_max_tokens", Some(g.default_max_tokens)),
            ("generation.default_chat_max_tokens", g.default_chat_max_tokens),
        ] {
            let Some(value) = value else { continue };
            if value == 0 || value > g.max_tokens_limit {
                return Err(invalid(
                    key,
                    format!(
                        "must be between 1 and generation.max_tokens_limit ({}), found {value}",
                        g.max_tokens_limit
                    ),
                ));
            }
        }
        if self.adapters.max_rank == 0 {
            return Err(invalid("adapters.max_rank", "must be at least 1".into()));
        }
        if self.adapters.max_loaded == 0 {
            return Err(invalid("adapters.max_loaded", "must be at least 1".into()));
        }
        let ix = &self.index;
        for (key, value) in [
            ("index.chunk_chars", ix.chunk_chars),
            ("index.threads", ix.threads),
            ("index.batch_size", ix.batch_size),
            ("index.top_k", ix.top_k),
            ("index.per_file", ix.per_file),
            ("index.max_line_chars", ix.max_line_chars),
            ("index.embedding_max_tokens", ix.embedding_max_tokens),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        for (i, name) in ix.keep_hidden.iter().enumerate() {
            if !name.starts_with('.') || name.len() < 2 || name.contains(['/', '\\']) || name == ".." || name == ".git" {
                return Err(invalid(
                    &format!("index.keep_hidden[{i}]"),
                    format!("expected the name of a hidden file or folder, such as \".ci\" (no path, not .git), found {name:?}"),
                ));
            }
        }
        if !(0.0..=10.0).contains(&ix.vector_weight) {
            return Err(invalid(
                "index.vector_weight",
                format!("must be between 0 and 10, found {}", ix.vector_weight),
            ));
        }
        if let Some(url) = &ix.qdrant_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "index.qdrant_url",
                    format!("expected an http:// or https:// URL (Qdrant's gRPC port, usually 6334), found {url:?}"),
                ));
            }
        }
        for (key, value) in [
            ("index.qdrant_shards", ix.qdrant_shards),
            ("index.qdrant_replication_factor", ix.qdrant_replication_factor),
        ] {
            if value == Some(0) {
                return Err(invalid(key, "must be at least 1".to_owned()));
            }
        }
        if ix.chunk_chars < 200 {
            return Err(invalid(
                "index.chunk_chars",
                format!("must be at least 200, found {}", ix.chunk_chars),
            ));
        }
        let ds = &self.dataset;
        for (key, value) in [
            ("dataset.max_line_length", ds.max_line_length),
            ("dataset.shingle_tokens", ds.shingle_tokens),
            ("dataset.history_max_files", ds.history_max_files),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if ds.max_sample_tokens < 64 {
            return Err(invalid(
                "dataset.max_sample_tokens",
                format!("must be at least 64, found {}", ds.max_sample_tokens),
            ));
        }
        for (key, value, low, high) in [
            ("dataset.min_alphanumeric_fraction", ds.min_alphanumeric_fraction, 0.0, 1.0),
            ("dataset.near_duplicate_threshold", ds.near_duplicate_threshold, 0.01, 1.0),
            ("dataset.validation_fraction", ds.validation_fraction, 0.0, 0.5),
            ("dataset.fim_rate", ds.fim_rate, 0.0, 1.0),
            ("dataset.fim_spm_rate", ds.fim_spm_rate, 0.0, 1.0),
            ("dataset.retrieval_rate", ds.retrieval_rate, 0.0, 1.0),
        ] {
            if !(low..=high).contains(&value) {
                return Err(invalid(key, format!("must be between {low} and {high}, found {value}")));
            }
        }
        if ds.max_mean_line_length.is_nan() || ds.max_mean_line_length < 1.0 {
            return Err(invalid(
                "dataset.max_mean_line_length",
                format!("must be at least 1, found {}", ds.max_mean_line_length),
            ));
        }
        for (i, project) in self.projects.iter().enumerate() {
            if !is_valid_name(&project.name) {
                return Err(invalid(
                    &format!("projects[{i}].name"),
                    format!(
                        "expected letters, digits, `.`, `_` or `-` (not starting with `.`), found {:?}",
                        project.name
                    ),
                ));
            }
            if project.name == self.model.name || self.projects[..i].iter().any(|p| p.name == project.name) {
                return Err(invalid(
                    &format!("projects[{i}].name"),
                    format!("`{}` is already used by another project or the base model", project.name),
                ));
            }
            if let Some(adapter) = &project.adapter {
                if !is_valid_name(adapter) {
                    return Err(invalid(
                        &format!("projects[{i}].adapter"),
                        format!("{adapter:?} is not an adapter folder name"),
                    ));
                }
            }
            if let Some(owner) = &project.index {
                let field = format!("projects[{i}].index");
                let Some(found) = self.projects.iter().find(|p| &p.name == owner) else {
                    return Err(invalid(&field, format!("no project is named `{owner}`")));
                };
                if found.name == project.name || found.index.is_some() {
                    return Err(invalid(&field, format!("`{owner}` must be a project with an index of its own")));
                }
                if found.path != project.path {
                    return Err(invalid(
                        &field,
                        format!(
                            "`{owner}` indexes {}, not this project's repository {}",
                            found.path.display(),
                            project.path.display()
                        ),
                    ));
                }
            }
            for (j, other) in project.also_search.iter().enumerate() {
                let field = format!("projects[{i}].also_search");
                let Some(found) = self.projects.iter().find(|p| &p.name == other) else {
                    return Err(invalid(&field, format!("no project is named `{other}`")));
                };
                if found.index_name() == project.index_name() {
                    return Err(invalid(
                        &field,
                        format!("`{other}` searches this project's own index: its code is found already"),
                    ));
                }
                if project.also_search[..j].contains(other) {
                    return Err(invalid(&field, format!("`{other}` is named twice")));
                }
            }
            if project.top_k == 0 || project.top_k > 100 {
                return Err(invalid(
                    &format!("projects[{i}].top_k"),
                    format!("must be between 1 and 100, found {}", project.top_k),
                ));
            }
            if project.context_tokens >= g.max_prompt_tokens {
                return Err(invalid(
                    &format!("projects[{i}].context_tokens"),
                    format!(
                        "must be less than generation.max_prompt_tokens ({}), found {}",
                        g.max_prompt_tokens, project.context_tokens
                    ),
                ));
            }
        }
        if !(0.0..=2.0).contains(&g.default_temperature) {
            return Err(invalid(
                "generation.default_temperature",
                format!("must be between 0 and 2, found {}", g.default_temperature),
            ));
        }
        if !(g.default_top_p > 0.0 && g.default_top_p <= 1.0) {
            return Err(invalid(
                "generation.default_top_p",
                format!("must be greater than 0 and at most 1, found {}", g.default_top_p),
            ));
        }
        if !(0.0..=1.0).contains(&g.default_min_p) {
            return Err(invalid(
                "generation.default_min_p",
                format!("must be between 0 and 1, found {}", g.default_min_p),
            ));
        }
        Ok(())
    }
}

/// Deserializes with the path of every value tracked, so errors can name the dotted key.
fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let parse_error = |key: String, err: &toml::de::Error| ConfigError::Parse {
        path: origin.to_owned(),
        key,
        location: err
            .span()
            .map(|span| {
                let (line, column) = line_column(text, span.start);
                format!("line {line}, column {column}: ")
            })
            .unwrap_or_default(),
        message: err.message().trim().to_owned(),
    };
    let deserializer = toml::Deserializer::parse(text).map_err(|e| parse_error(String::new(), &e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = dotted_key(e.path());
        parse_error(key, e.inner())
    })
}

/// The dotted key of a deserialization error (for an unknown field, the field itself).
fn dotted_key(path: &serde_path_to_error::Path) -> String {
    let key = path.to_string();
    if key == "." {
        String::new()
    } else {
        key
    }
}

/// `path` relative to `base`, with `.` and `..` folded away lexically (`config/../.kit` becomes
/// `.kit`), so messages show the path a person would write. Symbolic links are not followed.
fn resolve(base: &Path, path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in base.join(path).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/graft/graft.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.model.gguf, ModelSource::Kit("smollm2-135m-instruct".into()));
        assert_eq!(c.kit.dir, PathBuf::from("/etc/graft/.kit"));
    }

    #[test]
    fn the_default_model_is_read_under_its_old_name_too() {
        let c = load("[server]\ndefault_model = \"graft\"\n").unwrap();
        assert_eq!(c.server.default_model.as_deref(), Some("graft"));
        let c = load("[server]\ninfill_model = \"graft\"\n").unwrap();
        assert_eq!(c.server.default_model.as_deref(), Some("graft"));
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let c = load("[model]\ngguf = \"models/m.gguf\"\n[kit]\ndir = \"/abs/kit\"\n").unwrap();
        assert_eq!(c.model.gguf, ModelSource::Path("/etc/graft/models/m.gguf".into()));
        assert_eq!(c.kit.dir, PathBuf::from("/abs/kit"));
    }

    #[test]
    fn relative_paths_are_folded_lexically() {
        let c = Config::from_toml("[kit]\ndir = \"../.kit\"\n", Path::new("config/graft.toml")).unwrap();
        assert_eq!(c.kit.dir, PathBuf::from(".kit"));
        let c = Config::from_toml("[kit]\ndir = \"../../k\"\n", Path::new("config/graft.toml")).unwrap();
        assert_eq!(c.kit.dir, PathBuf::from("../k"));
    }

    #[test]
    fn a_qdrant_collection_needs_a_shard_and_a_copy() {
        for key in ["qdrant_shards", "qdrant_replication_factor"] {
            let err = load(&format!("[index]\n{key} = 0\n")).unwrap_err();
            assert_eq!(err.key(), Some(format!("index.{key}").as_str()), "{err}");
            assert!(err.to_string().contains("at least 1"), "{err}");
        }
        let c = load("[index]\nqdrant_shards = 2\nqdrant_replication_factor = 2\n").unwrap();
        assert_eq!((c.index.qdrant_shards, c.index.qdrant_replication_factor), (Some(2), Some(2)));
    }

    #[test]
    fn keep_hidden_takes_names_of_hidden_files_only() {
        let c = load("[index]\nkeep_hidden = [\".ci\", \".config\"]\n").unwrap();
        assert_eq!(c.index.keep_hidden, [".ci", ".config"]);
        for bad in ["ci", ".ci/run", ".git", ".", ".."] {
            let err = load(&format!("[index]\nkeep_hidden = [\".ok\", {bad:?}]\n")).unwrap_err();
            assert_eq!(err.key(), Some("index.keep_hidden[1]"), "{bad}: {err}");
            assert!(err.to_string().contains("hidden file or folder"), "{err}");
        }
    }

    #[test]
    fn wrong_type_names_the_key_and_the_line() {
        let err = load("[server]\nlisten = 8080\n").unwrap_err();
        assert_eq!(err.key(), Some("server.listen"));
        let msg = err.to_string();
        assert!(msg.contains("`server.listen`"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("/etc/graft/graft.toml"), "{msg}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = load("[server]\nlisten = \"localhost\"\n").unwrap_err();
        assert_eq!(err.key(), Some("server.listen"));
        assert!(err.to_string().contains("socket address"), "{err}");
    }

    #[test]
    fn unknown_key_is_named_with_its_table() {
        let err = load("[generation]\ndefault_max_token = 5\n").unwrap_err();
        assert_eq!(err.key(), Some("generation.default_max_token"));
        let msg = err.to_string();
        assert!(msg.contains("unknown field `default_max_token`"), "{msg}");
        assert!(msg.contains("default_max_tokens"), "the message lists the valid keys: {msg}");
    }

    #[test]
    fn unknown_section_is_named() {
        let err = load("[srever]\nlisten = \"127.0.0.1:1\"\n").unwrap_err();
        assert_eq!(err.key(), Some("srever"));
    }

    #[test]
    fn unknown_device_is_rejected() {
        let err = load("[model]\ndevice = \"tpu\"\n").unwrap_err();
        assert_eq!(err.key(), Some("model.device"));
        assert!(err.to_string().contains("cpu"), "{err}");
    }

    #[test]
    fn kit_reference_needs_an_id() {
        let err = load("[model]\ngguf = \"kit:\"\n").unwrap_err();
        assert_eq!(err.key(), Some("model.gguf"));
    }

    #[test]
    fn limits_are_validated() {
        let err = load("[generation]\ndefault_max_tokens = 10\nmax_tokens_limit = 5\n").unwrap_err();
        assert_eq!(err.key(), Some("generation.default_max_tokens"));
        let err = load("[generation]\ndefault_chat_max_tokens = 10\ndefault_max_tokens = 5\nmax_tokens_limit = 5\n").unwrap_err();
        assert_eq!(err.key(), Some("generation.default_chat_max_tokens"));
        // Unset, a chat answer may run to the limit, whatever the limit is.
        let config = load("[generation]\nmax_tokens_limit = 1000\n").unwrap();
        assert_eq!(config.generation.chat_max_tokens(), 1000);
        let err = load("[generation]\ndefault_top_p = 0.0\n").unwrap_err();
        assert_eq!(err.key(), Some("generation.default_top_p"));
        let err = load("[generation]\ndefault_min_p = 1.5\n").unwrap_err();
        assert_eq!(err.key(), Some("generation.default_min_p"));
        let err = load("[model]\nname = \"has space\"\n").unwrap_err();
        assert_eq!(err.key(), Some("model.name"));
    }

    #[test]
    fn aliases_are_other_ids_of_the_base_model_and_collide_with_nothing() {
        let c = load("[model]\naliases = [\"gpt-4o-mini\", \"claude-haiku-4-5\"]\n").unwrap();
        assert_eq!(c.model.aliases, ["gpt-4o-mini", "claude-haiku-4-5"]);
        assert!(load("").unwrap().model.aliases.is_empty());
        for (aliases, bad) in [
            ("\"a\", \"a\"", 1),
            ("\"smollm2-135m-instruct\"", 0),
            ("\"ok\", \"two words\"", 1),
            ("\"app\"", 0),
        ] {
            let text = format!("[model]\naliases = [{aliases}]\n[[projects]]\nname = \"app\"\npath = \"../app\"\n");
            let err = load(&text).unwrap_err();
            assert_eq!(err.key(), Some(format!("model.aliases[{bad}]").as_str()), "{aliases}: {err}");
        }
    }

    #[test]
    fn projects_and_index_settings_are_read_and_checked() {
        let c = load("[index]\nembedding_model = \"BAAI/bge-small-en-v1.5\"\n[[projects]]\nname = \"app\"\npath = \"../app\"\n").unwrap();
        assert_eq!(c.index.embedding_model, EmbeddingModel::Catalog("BAAI/bge-small-en-v1.5".into()));
        assert_eq!(c.project("app").unwrap().path, PathBuf::from("/etc/app"));
        assert_eq!(c.index.dir, PathBuf::from("/etc/graft/index"));

        let err = load("[[projects]]\nname = \"../evil\"\npath = \"x\"\n").unwrap_err();
        assert_eq!(err.key(), Some("projects[0].name"));
        let err = load("[[projects]]\nname = \"a\"\npath = \"x\"\n[[projects]]\nname = \"a\"\npath = \"y\"\n").unwrap_err();
        assert_eq!(err.key(), Some("projects[1].name"));
        let err = load("[[projects]]\nname = \"a\"\n").unwrap_err();
        assert!(err.to_string().contains("path"), "{err}");
        let err = load("[index]\nthreads = 0\n").unwrap_err();
        assert_eq!(err.key(), Some("index.threads"));
        assert_eq!(load("[index]\nrefresh_secs = 0\n").unwrap().index.refresh_secs, 0);
    }

    #[test]
    fn a_time_or_count_too_large_for_a_clock_or_semaphore_is_refused_by_name() {
        for key in [
            "server.request_timeout_secs",
            "server.read_timeout_secs",
            "server.shutdown_timeout_secs",
            "index.refresh_secs",
        ] {
            let (table, field) = key.split_once('.').unwrap();
            let err = load(&format!("[{table}]\n{field} = {}\n", u64::MAX)).unwrap_err();
            assert_eq!(err.key(), Some(key), "{err}");
            assert!(err.to_string().contains("at most 31536000"), "{err}");
            load(&format!("[{table}]\n{field} = 31536000\n")).unwrap();
        }
        for (key, most) in [
            ("server.max_connections", 1_000_000),
            ("server.max_concurrent", 65_536),
            ("model.max_num_seqs", 65_536),
            ("model.prompt_chunk", 1 << 24),
            ("index.threads", 256),
            ("index.batch_size", 65_536),
            ("index.top_k", 1000),
        ] {
            let (table, field) = key.split_once('.').unwrap();
            let err = load(&format!("[{table}]\n{field} = {}\n", i64::MAX)).unwrap_err();
            assert_eq!(err.key(), Some(key), "{err}");
            assert!(err.to_string().contains(&format!("at most {most}")), "{err}");
        }
    }

    #[test]
    fn a_project_may_share_the_index_of_one_on_the_same_repository() {
        let two = |second: &str| format!("[[projects]]\nname = \"app\"\npath = \"app\"\n[[projects]]\nname = \"tuned\"\n{second}\n");
        let c = load(&two("path = \"app\"\nadapter = \"lora\"\nindex = \"app\"")).unwrap();
        assert_eq!(c.project("tuned").unwrap().index_name(), "app");
        assert_eq!(c.project("app").unwrap().index_name(), "app");
        for (second, says) in [
            ("path = \"app\"\nindex = \"nobody\"", "no project is named `nobody`"),
            ("path = \"other\"\nindex = \"app\"", "not this project's repository"),
            ("path = \"app\"\nindex = \"tuned\"", "an index of its own"),
        ] {
            let err = load(&two(second)).unwrap_err();
            assert_eq!(err.key(), Some("projects[1].index"), "{second}");
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn a_project_may_search_other_projects_indexes_too() {
        let three = |also: &str| {
            format!(
                "[[projects]]\nname = \"app\"\npath = \"app\"\n{also}\n[[projects]]\nname = \"lib\"\npath = \"lib\"\n\
                 [[projects]]\nname = \"tuned\"\npath = \"app\"\nindex = \"app\"\n"
            )
        };
        assert!(load(&three("")).unwrap().project("app").unwrap().also_search.is_empty());
        let c = load(&three("also_search = [\"lib\"]")).unwrap();
        assert_eq!(c.project("app").unwrap().also_search, ["lib"]);
        for (also, says) in [
            ("also_search = [\"nobody\"]", "no project is named `nobody`"),
            ("also_search = [\"app\"]", "this project's own index"),
            ("also_search = [\"tuned\"]", "this project's own index"),
            ("also_search = [\"lib\", \"lib\"]", "named twice"),
        ] {
            let err = load(&three(also)).unwrap_err();
            assert_eq!(err.key(), Some("projects[0].also_search"), "{also}");
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn syntax_error_reports_the_line() {
        let err = load("[server]\nlisten = \n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = Config::load(Path::new("/nonexistent/graft.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/graft.toml"));
    }

    #[test]
    fn generation_slots_follow_the_device_unless_set() {
        assert_eq!(load("").unwrap().generation_slots(false), 4, "CPU");
        assert_eq!(load("[model]\ndevice = \"cuda\"\n").unwrap().generation_slots(false), 8);
        assert_eq!(load("[model]\ndevice = \"auto\"\n").unwrap().generation_slots(true), 8);
        assert_eq!(load("[model]\ndevice = \"auto\"\n").unwrap().generation_slots(false), 4);
        assert_eq!(load("[server]\nmax_concurrent = 3\n").unwrap().generation_slots(true), 3);
        let err = load("[server]\nmax_concurrent = 0\n").unwrap_err();
        assert_eq!(err.key(), Some("server.max_concurrent"));
    }
}
