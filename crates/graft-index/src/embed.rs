//! Turning text into vectors with fastembed (ONNX Runtime).
//!
//! Two sources: model files on disk (by default the kit's all-MiniLM-L6-v2, fully offline), or
//! any model of fastembed's catalog by name (downloaded from Hugging Face on first use, for
//! users who are online). ONNX Runtime itself is a shared library loaded at run time from the
//! path given (the kit's). This module knows nothing about chunks or stores.

use std::path::PathBuf;
use std::sync::Mutex;

use fastembed::{
    EmbeddingModel, InitOptionsUserDefined, Pooling, TextEmbedding, TextInitOptions, TokenizerFiles, UserDefinedEmbeddingModel,
};
use sha2::{Digest, Sha256};

use crate::error::IndexError;

/// Where the embedding model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbeddingSource {
    /// An ONNX sentence-embedding model and the folder with its tokenizer files
    /// (`tokenizer.json`, `config.json`, `special_tokens_map.json`, `tokenizer_config.json`);
    /// mean pooling.
    Files { onnx: PathBuf, tokenizer_dir: PathBuf },
    /// A fastembed catalog model, by its Hugging Face name (`BAAI/bge-small-en-v1.5`) or its
    /// fastembed name (`BGESmallENV15`).
    Catalog(String),
}

/// How to load and run the embedding model.
#[derive(Debug, Clone)]
pub struct EmbedderOptions {
    pub source: EmbeddingSource,
    /// The ONNX Runtime shared library (`libonnxruntime.so.*`).
    pub onnxruntime: PathBuf,
    /// ONNX Runtime threads.
    pub threads: usize,
    /// Texts per batch.
    pub batch_size: usize,
    /// Longest input in tokens; longer texts are truncated.
    pub max_tokens: usize,
    /// Where catalog models are cached.
    pub cache_dir: Option<PathBuf>,
}

/// A loaded embedding model. Calls are serialised; ONNX Runtime uses `threads` inside each.
pub struct Embedder {
    model: Mutex<TextEmbedding>,
    dims: usize,
    id: String,
    batch_size: usize,
}

impl Embedder {
    pub fn load(options: &EmbedderOptions) -> Result<Embedder, IndexError> {
        let err = |what: &str, e: &dyn std::fmt::Display| IndexError::Embedding(format!("{what}: {e}"));
        if !options.onnxruntime.is_file() {
            return Err(IndexError::Embedding(format!(
                "ONNX Runtime library {} does not exist; run `graft models fetch onnxruntime`",
                options.onnxruntime.display()
            )));
        }
        ort::init_from(&options.onnxruntime).map_err(|e| err("cannot load ONNX Runtime", &e))?;
        // More threads than the machine has cores only make ONNX Runtime's threads spin
        // against each other (a hundred on 2 cores took minutes for a dozen chunks).
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let threads = options.threads.clamp(1, cores);
        let (model, id) = match &options.source {
            EmbeddingSource::Files { onnx, tokenizer_dir } => {
                let read = |p: PathBuf| std::fs::read(&p).map_err(|e| IndexError::io(&p, e));
                let onnx_bytes = read(onnx.clone())?;
                let id = format!("onnx:{}:{}", &hex::encode(Sha256::digest(&onnx_bytes))[..16], options.max_tokens);
                let tokenizer = TokenizerFiles {
                    tokenizer_file: read(tokenizer_dir.join("tokenizer.json"))?,
                    config_file: read(tokenizer_dir.join("config.json"))?,
                    special_tokens_map_file: read(tokenizer_dir.join("special_tokens_map.json"))?,
                    tokenizer_config_file: read(tokenizer_dir.join("tokenizer_config.json"))?,
                };
                let user = UserDefinedEmbeddingModel::new(onnx_bytes, tokenizer).with_pooling(Pooling::Mean);
                // ONNX Runtime's CPU memory arena stays on (fastembed's default). Off, `graft index`
                // of 30,829 chunks of eight registry crates took 555 s instead of 511 and peaked
                // at 546 MB resident instead of 436 (2-core Intel Xeon): freed buffers go back
                // to malloc, which splits them up.
                let init = InitOptionsUserDefined::new()
                    .with_max_length(options.max_tokens)
                    .with_intra_threads(threads);
                let model = TextEmbedding::try_new_from_user_defined(user, init)
                    .map_err(|e| err(&format!("cannot load {}", onnx.display()), &e))?;
                (model, id)
            }
            EmbeddingSource::Catalog(name) => {
                let model_name = catalog_model(name)?;
                let info = TextEmbedding::get_model_info(&model_name).map_err(|e| err(name, &e))?;
                let id = format!("fastembed:{}:{}", info.model_code, options.max_tokens);
                let mut init = TextInitOptions::new(model_name)
                    .with_max_length(options.max_tokens)
                    .with_show_download_progress(false);
                if let Some(dir) = &options.cache_dir {
                    init = init.with_cache_dir(dir.clone());
                }
                let model = TextEmbedding::try_new(init).map_err(|e| err(&format!("cannot load {name}"), &e))?;
                (model, id)
            }
        };
        let mut model = model;
        let probe = model.embed(["probe"], None).map_err(|e| err("probe embedding failed", &e))?;
        let dims = probe.first().map_or(0, Vec::len);
        if dims == 0 {
            return Err(IndexError::Embedding("the model returned an empty vector".into()));
        }
        Ok(Embedder {
            model: Mutex::new(model),
            dims,
            id,
            batch_size: options.batch_size.max(1),
        })
    }

    /// Length of every vector.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Identifies the model and its input limit (a different limit gives different vectors):
    /// an index built with another id must be re-embedded.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Tokens the model reads of `texts` (each cut at the input limit), for usage reports.
    pub fn token_count(&self, texts: &[String]) -> Result<usize, IndexError> {
        let model = self
            .model
            .lock()
            .map_err(|_| IndexError::Embedding("the embedding model is unusable after a panic".into()))?;
        let mut total = 0;
        for text in texts {
            let encoding = model
                .tokenizer
                .encode(text.as_str(), true)
                .map_err(|e| IndexError::Embedding(format!("cannot tokenize: {e}")))?;
            total += encoding.len();
        }
        Ok(total)
    }

    /// One unit-length vector per text, in order.
    ///
    /// Texts are embedded shortest first: a batch is padded to its longest text, so batches of
    /// similar lengths waste far less work than batches in file order.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, IndexError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let sorted: Vec<&str> = order.iter().map(|&i| texts[i].as_str()).collect();
        let mut model = self
            .model
            .lock()
            .map_err(|_| IndexError::Embedding("the embedding model is unusable after a panic".into()))?;
        let embedded = model
            .embed(&sorted, Some(self.batch_size))
            .map_err(|e| IndexError::Embedding(e.to_string()))?;
        drop(model);
        if embedded.len() != texts.len() {
            return Err(IndexError::Embedding(format!(
                "the model returned {} vectors for {} texts",
                embedded.len(),
                texts.len()
            )));
        }
        let mut vectors = vec![Vec::new(); texts.len()];
        for (mut v, &i) in embedded.into_iter().zip(&order) {
            normalize(&mut v);
            vectors[i] = v;
        }
        Ok(vectors)
    }
}

fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// A catalog model by Hugging Face name or fastembed name.
fn catalog_model(name: &str) -> Result<EmbeddingModel, IndexError> {
    let models = TextEmbedding::list_supported_models();
    if let Some(info) = models.iter().find(|m| m.model_code.eq_ignore_ascii_case(name)) {
        return Ok(info.model.clone());
    }
    name.parse::<EmbeddingModel>().map_err(|_| {
        let known: Vec<String> = models.iter().map(|m| m.model_code.clone()).collect();
        IndexError::Embedding(format!("unknown fastembed model `{name}`; known: {}", known.join(", ")))
    })
}
