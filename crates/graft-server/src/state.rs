//! What every handler shares, behind one `Arc`: the model pool, the projects and their
//! indexes, the API keys, the limits and the metrics; and how a request's `model` resolves.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use graft_core::config::{GenerationConfig, ServerConfig};
use graft_core::keys::{ApiKeys, KeysChange, KeysError};
use graft_engine::pool::{AdapterInfo, PoolError};
use graft_engine::{Engine, Pool};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::limits::Gate;
use crate::metrics::Metrics;
use crate::projects::{Project, Projects};

/// What the server is built from.
pub struct ServerParts {
    pub pool: Arc<Pool>,
    /// More names of the base model (`model.aliases`).
    pub aliases: Vec<String>,
    pub generation: GenerationConfig,
    /// Limits and timeouts (`[server]`).
    pub server: ServerConfig,
    pub keys: ApiKeys,
    pub projects: Projects,
}

/// Shared state of the server. Cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Arc<Pool>,
    aliases: Vec<String>,
    /// Replaced whole when the config file is reloaded ([`AppState::replace_generation`]).
    generation: std::sync::RwLock<Arc<GenerationConfig>>,
    /// `[server]`'s limits and timeouts (its `default_model` is the field below).
    server: ServerConfig,
    /// The model a request that names none uses; replaced when the config file is reloaded
    /// ([`AppState::replace_default_model`]).
    default_model: std::sync::RwLock<Arc<str>>,
    /// Replaced whole when the keys file is reloaded ([`AppState::replace_keys`]).
    keys: std::sync::RwLock<Arc<ApiKeys>>,
    projects: Projects,
    gate: Gate,
    metrics: Arc<Metrics>,
    /// Unix seconds when the server started; the `created` time of the models it lists.
    started: u64,
    /// Set once the shutdown grace period is over: generations still running end with an
    /// error (a stream gets an error event) instead of being cut without a word.
    cut: tokio::sync::watch::Sender<bool>,
}

/// What a request's `model` names.
pub struct Target {
    /// The name as requested (reported back in responses).
    pub name: String,
    /// The pool's model that generates: the base or an adapter.
    pub model: String,
    /// The project, when `model` names one.
    pub project: Option<Arc<Project>>,
}

impl AppState {
    pub fn new(parts: ServerParts) -> AppState {
        // The binary resolves an absent `max_concurrent` by device (`Config::generation_slots`).
        let mut server = parts.server;
        let gate = Gate::new(server.max_concurrent.unwrap_or(1), server.max_queue);
        // On the CPU, index runs embed between generations, not during them.
        if parts.pool.engine().on_cpu() {
            parts.projects.give_way_to(gate.running());
        }
        // Kept on its own (a reload replaces it), not beside the limits as well.
        let default_model = server.default_model.take();
        let default_model = default_model.as_deref().unwrap_or(parts.pool.base_name()).into();
        AppState {
            inner: Arc::new(Inner {
                pool: parts.pool,
                aliases: parts.aliases,
                generation: std::sync::RwLock::new(Arc::new(parts.generation)),
                server,
                default_model: std::sync::RwLock::new(default_model),
                keys: std::sync::RwLock::new(Arc::new(parts.keys)),
                projects: parts.projects,
                gate,
                metrics: Arc::new(Metrics::default()),
                started: unix_now(),
                cut: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The base model's other names (`model.aliases`), which answer as it does.
    pub fn aliases(&self) -> &[String] {
        &self.inner.aliases
    }

    /// Whether `name` is the base model's: its name or one of its aliases.
    pub fn names_base(&self, name: &str) -> bool {
        name == self.pool().base_name() || self.aliases().iter().any(|a| a == name)
    }

    /// Whether `caller` may use the model `name`: the base, under any of its names, is open to
    /// every key; the rest as the key says.
    pub fn may_use(&self, caller: &Caller, name: &str) -> bool {
        self.names_base(name) || caller.may_use(name, self.pool().base_name())
    }

    pub fn engine(&self) -> &Engine {
        self.inner.pool.engine()
    }

    /// The limits and defaults of `[generation]` now.
    pub fn generation(&self) -> Arc<GenerationConfig> {
        Arc::clone(&self.inner.generation.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Serves with `generation`'s limits and defaults from now on (a reload of the config).
    pub fn replace_generation(&self, generation: GenerationConfig) {
        *self.inner.generation.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(generation);
    }

    /// The API keys now.
    pub fn keys(&self) -> Arc<ApiKeys> {
        Arc::clone(&self.inner.keys.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Serves with `keys` from now on (requests already admitted keep the key they came
    /// with), unless that would leave none ([`ApiKeys::change_to`]); says what changed.
    pub fn replace_keys(&self, keys: ApiKeys) -> Result<KeysChange, KeysError> {
        let mut current = self.inner.keys.write().unwrap_or_else(|p| p.into_inner());
        let change = current.change_to(&keys)?;
        if !change.is_empty() {
            *current = Arc::new(keys);
        }
        Ok(change)
    }

    pub fn projects(&self) -> &Projects {
        &self.inner.projects
    }

    pub fn gate(&self) -> &Gate {
        &self.inner.gate
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Limits on connections and slow clients (`[server]`).
    pub fn conn_limits(&self) -> crate::conn::ConnLimits {
        crate::conn::ConnLimits {
            max_connections: self.inner.server.max_connections,
            read_timeout: Duration::from_secs(self.inner.server.read_timeout_secs),
        }
    }

    /// `server.request_timeout_secs`.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.inner.server.request_timeout_secs)
    }

    /// The model a request that names none uses: `server.default_model` (the binary
    /// fills in the first project), else the base model.
    pub fn default_model(&self) -> Arc<str> {
        Arc::clone(&self.inner.default_model.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Requests that name no model go to `name` from now on (a reload of the config).
    pub fn replace_default_model(&self, name: &str) {
        *self.inner.default_model.write().unwrap_or_else(|p| p.into_inner()) = name.into();
    }

    /// The longest prompt graft takes, in tokens: the base model's context (as mistralrs
    /// reads it, else as its file says) within `generation.max_prompt_tokens`. Clients size a
    /// conversation by it (Ollama's `/api/show`, llama.cpp's `/props`).
    pub fn context_window(&self) -> usize {
        let engine = self.engine();
        let most = self.generation().max_prompt_tokens;
        engine
            .context_length()
            .or(engine.facts().and_then(|f| f.context_length))
            .map_or(most, |c| c.min(most))
    }

    pub fn started(&self) -> u64 {
        self.inner.started
    }

    /// Ends every generation still running (shutdown, after its grace period).
    pub fn cut_generations(&self) {
        self.inner.cut.send_replace(true);
    }

    /// Told when [`AppState::cut_generations`] is called.
    pub fn cut_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.cut.subscribe()
    }

    /// The pool's adapters that a request can name: a project's name means the project, so an
    /// adapter folder of that name is not reachable and not listed.
    pub fn adapters(&self) -> Vec<AdapterInfo> {
        let mut adapters = self.pool().adapters();
        adapters.retain(|a| self.projects().get(&a.name).is_none());
        adapters
    }

    /// Every id `caller` may put in `model`: the base, adapters, projects.
    pub fn model_ids(&self, caller: &Caller) -> Vec<String> {
        let base = self.pool().base_name();
        let mut ids = vec![base.to_owned()];
        ids.extend(self.aliases().iter().cloned());
        ids.extend(self.adapters().into_iter().map(|a| a.name));
        ids.extend(self.projects().all().iter().map(|p| p.name().to_owned()));
        ids.retain(|id| self.may_use(caller, id));
        ids
    }

    /// What `model` names, if `caller` may use it: 404 (listing what it may use) or 403
    /// otherwise. Every generation route starts here.
    pub fn target(&self, model: &str, caller: &Caller) -> Result<Target, ApiError> {
        let default;
        let model = match model {
            "" => {
                default = self.default_model();
                &*default
            }
            named => named,
        };
        let target = self.resolve(model, caller)?;
        if !self.names_base(&target.name) {
            caller.check(&target.name, self.pool().base_name())?;
        }
        Ok(target)
    }

    /// What `model` names, or 404 listing what the caller may use.
    fn resolve(&self, model: &str, caller: &Caller) -> Result<Target, ApiError> {
        let base = self.pool().base_name();
        if let Some(project) = self.projects().get(model) {
            return Ok(Target {
                name: model.to_owned(),
                model: project.config.adapter.clone().unwrap_or_else(|| base.to_owned()),
                project: Some(project),
            });
        }
        let generates = if self.names_base(model) {
            base
        } else if self.adapters().iter().any(|a| a.name == model) {
            model
        } else {
            return Err(self.not_found(model, caller));
        };
        Ok(Target {
            name: model.to_owned(),
            model: generates.to_owned(),
            project: None,
        })
    }

    fn not_found(&self, model: &str, caller: &Caller) -> ApiError {
        let ids = self.model_ids(caller);
        ApiError::model_not_found(model, &ids.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The API error for a pool error; an unknown model lists the ones there are.
    pub fn pool_error(&self, e: PoolError, caller: &Caller) -> ApiError {
        match e {
            PoolError::Unknown(model) => self.not_found(&model, caller),
            other => other.into(),
        }
    }
}

/// Seconds since the Unix epoch, with their fraction.
pub fn unix_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
