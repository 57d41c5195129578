//! graft-wiring: the one place where the configuration ([`graft_core::Config`]) becomes the
//! library types that do the work: the base model and adapter store of the engine, the
//! options of indexing and search, the projects and limits of the server, the kit artifacts
//! behind `kit:` names. `graft serve`, `graft index`, the benches and the test harness all
//! build their parts here, so a config key means the same thing everywhere.
//!
//! This crate maps and resolves; it loads no model and serves nothing itself (the one
//! exception is [`base_gguf`], which re-stores a base model for the CPU once, in the cache).

use std::path::PathBuf;
use std::sync::Arc;

use graft_core::config::ServerConfig;
use graft_core::{Config, CpuWeights, EmbeddingModel, ModelSource, ProjectConfig, PromptFormatChoice};
use graft_engine::pool::AdapterStore;
use graft_engine::requantize::Restore;
use graft_engine::{BaseModel, PoolLimits, PromptFormat};
use graft_index::vectors::{Backend, ServerConfig as QdrantServer};
use graft_index::{Embedder, EmbedderOptions, EmbeddingSource, IndexLayout, IndexOptions, SearchMode, SearchOptions, WalkOptions};
use graft_kit::{manifest, Artifact, Kit, KitError};
use graft_server::projects::{Project, Projects};

/// What can go wrong turning the config into parts.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error("{key}: {message}")]
    Config { key: &'static str, message: String },
    #[error("{key}: {source}")]
    Kit {
        key: &'static str,
        #[source]
        source: KitError,
    },
    #[error("re-storing the base model for the CPU: {0}")]
    Restore(#[from] graft_engine::merge::MergeError),
}

/// The kit artifact `model.gguf` names with `kit:`, if it does.
pub fn model_artifacts(config: &Config) -> Result<Vec<Artifact>, WiringError> {
    match &config.model.gguf {
        ModelSource::Kit(id) => Ok(vec![lookup(id, "model.gguf")?]),
        ModelSource::Path(_) => Ok(Vec::new()),
    }
}

/// The kit artifacts indexing and search need: ONNX Runtime, and the embedding model when it
/// comes from the kit.
pub fn index_artifacts(config: &Config) -> Result<Vec<Artifact>, WiringError> {
    let mut ids = vec!["onnxruntime"];
    match &config.index.embedding_model {
        EmbeddingModel::Kit(id) if id == "minilm-l6-v2" => ids.extend(["minilm-l6-v2-onnx", "minilm-l6-v2-tokenizer"]),
        EmbeddingModel::Kit(other) => {
            return Err(WiringError::Config {
                key: "index.embedding_model",
                message: format!("the kit has no embedding model `{other}`; use `kit:minilm-l6-v2`"),
            })
        }
        EmbeddingModel::Folder(_) | EmbeddingModel::Catalog(_) => {}
    }
    ids.into_iter().map(|id| lookup(id, "index.embedding_model")).collect()
}

fn lookup(id: &str, key: &'static str) -> Result<Artifact, WiringError> {
    manifest::lookup(id).copied().map_err(|source| WiringError::Kit { key, source })
}

/// The file `model.gguf` names.
pub fn model_file(config: &Config) -> Result<PathBuf, WiringError> {
    match &config.model.gguf {
        ModelSource::Path(path) => Ok(path.clone()),
        ModelSource::Kit(id) => Kit::new(&config.kit.dir)
            .resolve(id)
            .map_err(|source| WiringError::Kit { key: "model.gguf", source }),
    }
}

/// Whether the base model runs on the CPU (`model.device`, and for `auto` the build and the
/// machine's CUDA libraries).
pub fn on_cpu(config: &Config) -> bool {
    match config.model.device {
        graft_core::Device::Cpu => true,
        graft_core::Device::Cuda => false,
        graft_core::Device::Auto => !graft_engine::gpu_available(),
    }
}

/// The base model's GGUF as the engine should load it: `model.gguf` resolved, and, on the
/// CPU, re-stored as `model.cpu_weights` says (converted once, kept in `adapters.cache_dir`;
/// see graft-engine's `requantize`). A missing file is left for the engine's loader to report.
pub fn base_gguf(config: &Config) -> Result<PathBuf, WiringError> {
    let gguf = model_file(config)?;
    let restore = match config.model.cpu_weights {
        CpuWeights::AsIs => None,
        CpuWeights::Q8_0 => Some(Restore::Q8_0),
        CpuWeights::F16 => Some(Restore::F16),
    };
    let Some(restore) = restore.filter(|_| on_cpu(config) && gguf.is_file()) else {
        return Ok(gguf);
    };
    let base = graft_engine::merge::BaseGguf::open(&gguf).map_err(graft_engine::merge::MergeError::from)?;
    let converted = graft_engine::requantize::tensors_to_convert(&base, restore);
    if converted.is_empty() {
        return Ok(gguf);
    }
    let started = std::time::Instant::now();
    let stored = graft_engine::cache::MergeCache::new(&config.adapters.cache_dir).get_or_requantize(&base, restore)?;
    if stored.fresh {
        tracing::info!(
            tensors = converted.len(),
            stored_as = ?restore.target(),
            seconds = started.elapsed().as_secs_f64(),
            path = %stored.path.display(),
            "re-stored the base model's tensors for the CPU's faster kernels (model.cpu_weights; once)"
        );
    }
    Ok(stored.path)
}

/// The base model as `[model]` describes it, loaded from `gguf`.
pub fn base_model(config: &Config, gguf: PathBuf) -> BaseModel {
    use PromptFormatChoice as C;
    // `base_gguf` may have re-stored the configured file in the cache.
    let restored_from = model_file(config).ok().filter(|file| *file != gguf);
    BaseModel {
        name: config.model.name.clone(),
        gguf,
        restored_from,
        device: config.model.device,
        max_num_seqs: config.model.max_num_seqs,
        prompt_cache: config.model.prompt_cache,
        prompt_chunk: config.model.prompt_chunk,
        prompt_format: match config.model.prompt_format {
            C::Auto => None,
            C::QwenCoder => Some(PromptFormat::QwenCoder),
            C::StarCoder => Some(PromptFormat::StarCoder),
            C::DeepseekCoder => Some(PromptFormat::DeepSeekCoder),
            C::CodeLlama => Some(PromptFormat::CodeLlama),
            C::Continuation => Some(PromptFormat::Continuation),
        },
        chat_template: config.model.chat_template.clone(),
    }
}

/// The adapter store and merge settings from `[adapters]`.
pub fn adapter_store(config: &Config) -> AdapterStore {
    AdapterStore {
        dir: config.adapters.dir.clone(),
        max_rank: config.adapters.max_rank,
        merge: config.adapters.merged_type.into(),
        cache_dir: config.adapters.cache_dir.clone(),
        allowed_dirs: config.adapters.allowed_dirs.clone(),
    }
}

/// The pool's limits from `[adapters]`.
pub fn pool_limits(config: &Config) -> PoolLimits {
    PoolLimits {
        max_adapters: config.adapters.max_loaded,
        max_bytes: (config.adapters.max_loaded_mb > 0).then_some(config.adapters.max_loaded_mb << 20),
    }
}

/// `[server]` with `max_concurrent` resolved by device and `default_model` by the projects
/// when the config leaves them out.
pub fn server_config(config: &Config) -> ServerConfig {
    ServerConfig {
        max_concurrent: Some(config.generation_slots(graft_engine::gpu_available())),
        default_model: config
            .server
            .default_model
            .clone()
            .or_else(|| config.projects.first().map(|p| p.name.clone())),
        ..config.server.clone()
    }
}

/// Indexing settings from `[index]`.
pub fn index_options(config: &Config) -> IndexOptions {
    let ix = &config.index;
    IndexOptions {
        walk: WalkOptions {
            exclude: ix.exclude.clone(),
            max_file_bytes: ix.max_file_bytes,
            max_line_chars: ix.max_line_chars,
            keep_hidden: ix.keep_hidden.clone(),
            submodules: ix.submodules,
        },
        chunk: graft_index::chunker::ChunkOptions {
            max_chars: ix.chunk_chars,
            ..Default::default()
        },
        threads: ix.threads,
        backend: backend(config),
        // A server's runs ask for it themselves; `graft index` commits complete indexes.
        embed_after_commit: false,
        ..IndexOptions::default()
    }
}

/// The vector store the config chooses: a Qdrant server when `index.qdrant_url` is set.
pub fn backend(config: &Config) -> Backend {
    let ix = &config.index;
    match &ix.qdrant_url {
        None => Backend::Embedded,
        Some(url) => Backend::Server(QdrantServer {
            url: url.clone(),
            api_key: std::env::var(&ix.qdrant_api_key_env).ok().filter(|k| !k.is_empty()),
            collection_prefix: ix.qdrant_collection_prefix.clone(),
            shards: ix.qdrant_shards,
            replication_factor: ix.qdrant_replication_factor,
        }),
    }
}

/// The index folder of a project (of the project whose index it shares, if it does).
pub fn layout(config: &Config, project: &str) -> IndexLayout {
    let index = config
        .projects
        .iter()
        .find(|p| p.name == project)
        .map_or(project, |p| p.index_name());
    IndexLayout::new(config.index.dir.join(index))
}

/// Search settings from `[index]`, for `mode` and `k` results.
pub fn search_options(config: &Config, mode: SearchMode, k: usize) -> SearchOptions {
    SearchOptions {
        k,
        mode,
        per_file: config.index.per_file,
        vector_weight: config.index.vector_weight,
    }
}

/// The embedding model `index.embedding_model` names, with its files from the kit.
pub fn embedder_options(config: &Config) -> Result<EmbedderOptions, WiringError> {
    let kit = Kit::new(&config.kit.dir);
    let resolve = |id: &str, key: &'static str| kit.resolve(id).map_err(|source| WiringError::Kit { key, source });
    let source = match &config.index.embedding_model {
        EmbeddingModel::Kit(_) => {
            index_artifacts(config)?;
            EmbeddingSource::Files {
                onnx: resolve("minilm-l6-v2-onnx", "index.embedding_model")?,
                tokenizer_dir: resolve("minilm-l6-v2-tokenizer", "index.embedding_model")?,
            }
        }
        EmbeddingModel::Folder(dir) => EmbeddingSource::Files {
            onnx: dir.join("model.onnx"),
            tokenizer_dir: dir.clone(),
        },
        EmbeddingModel::Catalog(name) => EmbeddingSource::Catalog(name.clone()),
    };
    Ok(EmbedderOptions {
        source,
        onnxruntime: resolve("onnxruntime", "index.embedding_model")?,
        threads: config.index.threads,
        batch_size: config.index.batch_size,
        max_tokens: config.index.embedding_max_tokens,
        cache_dir: Some(config.index.dir.join(".models")),
    })
}

/// The name `/v1/embeddings` and `/v1/models` give the embedding model.
pub fn embedding_name(config: &Config) -> String {
    match &config.index.embedding_model {
        EmbeddingModel::Kit(id) | EmbeddingModel::Catalog(id) => id.clone(),
        EmbeddingModel::Folder(dir) => dir
            .file_name()
            .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned()),
    }
}

/// A project with an index of its own, as `config`'s `[index]` lays out and builds indexes
/// (not yet opened).
pub fn project(config: &Config, project: ProjectConfig) -> Project {
    let layout = layout(config, &project.name);
    Project::new(project, layout, index_options(config))
}

/// The config's projects as a server serves them: those whose `remote_urls` are left out
/// find theirs among their repository's git remotes.
pub fn project_configs(config: &Config) -> Vec<ProjectConfig> {
    let mut projects = config.projects.clone();
    for p in projects.iter_mut().filter(|p| p.remote_urls.is_empty()) {
        p.remote_urls = graft_core::remote::urls(&p.path);
    }
    projects
}

/// The configured projects, their indexes to be opened on first use; `embedder` serves
/// retrieval and `/v1/embeddings`. A project whose config names no `remote_urls` gets its
/// repository's git remotes.
pub fn projects(config: &Config, embedder: Option<Arc<Embedder>>) -> Projects {
    let configs = project_configs(config);
    // Projects with an index of their own first; then those that share one (validation made
    // sure the owner exists and shares nothing itself).
    let mut list: Vec<Project> = configs
        .iter()
        .filter(|p| p.index.is_none())
        .map(|p| project(config, p.clone()))
        .collect();
    for sharer in configs.iter().filter(|p| p.index.is_some()) {
        if let Some(owner) = list.iter().position(|o| Some(o.name()) == sharer.index.as_deref()) {
            let project = Project::sharing(sharer.clone(), &list[owner]);
            list.push(project);
        }
    }
    let search = search_options(config, SearchMode::Hybrid, config.index.top_k);
    Projects::new(list, embedder.map(|e| (embedding_name(config), e)), search)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn settings_left_out_are_resolved_as_graft_serve_resolves_them() {
        let mut config = Config::default();
        config.projects.push(graft_core::ProjectConfig::new("first", "repo"));
        let server = server_config(&config);
        assert_eq!(server.default_model.as_deref(), Some("first"), "/infill's model: the first project");
        assert_eq!(server.max_concurrent, Some(config.generation_slots(graft_engine::gpu_available())));
        config.server.default_model = Some("base".into());
        assert_eq!(server_config(&config).default_model.as_deref(), Some("base"));

        config.adapters.max_loaded_mb = 0;
        assert_eq!(pool_limits(&config).max_bytes, None, "0 MB: no byte limit");
        config.adapters.max_loaded_mb = 3;
        assert_eq!(pool_limits(&config).max_bytes, Some(3 << 20));
        assert_eq!(layout(&config, "first").root, config.index.dir.join("first"));
    }

    #[test]
    fn kit_names_become_artifacts_and_unknown_ones_name_their_key() {
        let mut config = Config::default();
        let ids: Vec<&str> = index_artifacts(&config).unwrap().iter().map(|a| a.id).collect();
        assert_eq!(ids, ["onnxruntime", "minilm-l6-v2-onnx", "minilm-l6-v2-tokenizer"]);
        config.index.embedding_model = EmbeddingModel::Kit("nope".into());
        let err = index_artifacts(&config).unwrap_err().to_string();
        assert!(err.starts_with("index.embedding_model") && err.contains("nope"), "{err}");
        config.model.gguf = ModelSource::Kit("no-such-model".into());
        assert!(model_artifacts(&config).unwrap_err().to_string().starts_with("model.gguf"));
        config.model.gguf = ModelSource::Path("/models/x.gguf".into());
        assert!(model_artifacts(&config).unwrap().is_empty());
    }

    #[test]
    fn a_project_without_remote_urls_gets_its_repositorys_git_remotes() {
        let repo = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let status = std::process::Command::new("git").arg("-C").arg(repo.path()).args(args).status();
            assert!(status.is_ok_and(|s| s.success()), "git {args:?}");
        };
        git(&["init", "--quiet"]);
        git(&["remote", "add", "origin", "git@github.com:acme/api.git"]);
        let config = Config {
            projects: vec![
                ProjectConfig::new("api", repo.path()),
                ProjectConfig {
                    remote_urls: vec!["https://example.com/pinned.git".into()],
                    ..ProjectConfig::new("pinned", repo.path())
                },
            ],
            ..Config::default()
        };
        let projects = projects(&config, None);
        assert_eq!(projects.get("api").unwrap().config.remote_urls, ["github.com/acme/api"]);
        assert_eq!(
            projects.get("pinned").unwrap().config.remote_urls,
            ["https://example.com/pinned.git"],
            "configured URLs are kept"
        );
    }

    #[test]
    fn a_re_stored_base_remembers_the_file_it_was_made_from() {
        let mut config = Config::default();
        config.model.gguf = ModelSource::Path("/models/x.gguf".into());
        let served = base_model(&config, "/models/x.gguf".into());
        assert_eq!(served.restored_from, None);
        let copy = base_model(&config, "/cache/base-1f2e.gguf".into());
        assert_eq!(copy.restored_from.as_deref(), Some(Path::new("/models/x.gguf")));
    }
}
