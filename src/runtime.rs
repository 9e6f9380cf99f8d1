//! Model lifecycle in the server: models load from the local store on first use, each with its own
//! scheduler, stay loaded for their keep-alive, and give way (least recently used, idle first) when more
//! are wanted than the budget allows. An unknown name is an error, never a pull.
//!
//! A model loads outside the table's lock, in a slot the first request for it creates: later requests
//! for the same model wait on that slot (it loads once), while `/health`, listings and requests to other
//! models go on. A model whose scheduler has stopped (a step panicked) is dropped from the table, so the
//! next request loads it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::engine::chat_template::ChatTemplate;
use crate::engine::grammar::{Grammar, GrammarError};
use crate::engine::template_sandbox::TemplateSandbox;
use crate::engine::tokenizer::Tokenizer;
use crate::engine::{Engine, EngineError, EngineOptions, ModelFiles};
use crate::reference::ReferenceError;
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::store::{LocalModel, ModelSettings, Store, StoreError};

/// How long a model stays loaded after its last request unless told otherwise (Ollama's default).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("The model `{0}` does not exist")]
    NotFound(String),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("cannot read the model from the store: {0}")]
    Store(StoreError),
    #[error("cannot load the model: {0}")]
    Load(#[from] LoadError),
}

/// Why a stored model could not be loaded: the model's own files, not the server, are at fault.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the chat template layer is not UTF-8")]
    TemplateNotUtf8,
    /// The engine refused the weights (an unknown architecture, inconsistent metadata, a bad tensor).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The loading task itself failed (it panicked).
    #[error("the load stopped: {0}")]
    Stopped(String),
}

impl From<StoreError> for RuntimeError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(name) => RuntimeError::NotFound(name),
            StoreError::Reference(r) => RuntimeError::Reference(r),
            other => RuntimeError::Store(other),
        }
    }
}

/// The files the engine loads for a stored model: its GGUF, and its own chat template if it has one.
pub fn model_files(store: &Store, model: &LocalModel) -> Result<ModelFiles, RuntimeError> {
    let weights: Vec<_> = model.manifest.gguf_layers().collect();
    let chat_template = match model.manifest.chat_template_layer() {
        Some(layer) => {
            let bytes = store.read_blob(&layer.digest)?;
            Some(String::from_utf8(bytes).map_err(|_| LoadError::TemplateNotUtf8)?)
        }
        None => None,
    };
    Ok(ModelFiles {
        gguf: weights.iter().map(|w| store.blob_path(&w.digest)).collect(),
        chat_template,
        context_size: model.config.config.context_size.map(|c| c as usize),
    })
}

/// How models are loaded and kept.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub engine: EngineOptions,
    pub scheduler: SchedulerConfig,
    /// Most models loaded at once.
    pub max_loaded: usize,
    /// Bytes loaded models (weights and KV caches) may take together; None: no limit.
    pub memory_budget: Option<u64>,
    pub keep_alive: Option<Duration>,
    /// Where chat templates render: worker processes with a memory limit (`model serve`), or, when
    /// None, in this process (tests, and callers that trust their templates).
    pub template_sandbox: Option<Arc<TemplateSandbox>>,
}

/// What a loaded model offers request handlers: its scheduler and what validation needs.
pub struct LoadedModel {
    pub id: Digest,
    /// The name it was first asked for by (`ai/smollm2:latest`).
    pub name: String,
    pub scheduler: Scheduler,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Arc<ChatTemplate>,
    /// Renders `template` out of process when set (see `RuntimeOptions::template_sandbox`).
    pub template_sandbox: Option<Arc<TemplateSandbox>>,
    pub context_size: usize,
    pub vocab_size: usize,
    pub architecture: String,
    /// The file's pooling: an encoder's, or one a decoder's file names (`None` for a plain decoder).
    pub pooling: Option<models::bert::Pooling>,
    /// Whether it generates text: false for an encoder, which only embeds or ranks.
    pub generates: bool,
    /// Where it runs: `cpu`, `cuda:0`, `metal:0`.
    pub device: String,
    pub size_bytes: u64,
    /// Weights plus KV cache: what the model holds in memory.
    pub memory_bytes: u64,
    pub loaded_at: Instant,
    /// The `model configure` settings it was loaded with.
    pub settings: ModelSettings,
    usage: Mutex<Usage>,
    /// Built on the first constrained request: most requests never need it.
    grammar: std::sync::OnceLock<Result<Arc<Grammar>, String>>,
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    last_used: Instant,
    /// None: never unload.
    keep_alive: Option<Duration>,
}

impl LoadedModel {
    /// What it serves, as `ModelConfig::capabilities` says from the metadata: `completion` and `tools`
    /// for a plain decoder, `embedding` for a model whose file names a pooling, `rerank` for one that
    /// ranks.
    pub fn capabilities(&self) -> Vec<&'static str> {
        match self.pooling {
            None => vec!["completion", "tools"],
            Some(models::bert::Pooling::Rank) => vec!["rerank"],
            Some(_) => vec!["embedding"],
        }
    }

    /// Whether it ranks query/document pairs (a cross-encoder, or a decoder with a rank classifier).
    pub fn ranks(&self) -> bool {
        self.pooling == Some(models::bert::Pooling::Rank)
    }

    /// The model's grammar engine, built on first use (blocking: call it off the async runtime).
    pub fn grammar(&self) -> Result<Arc<Grammar>, GrammarError> {
        self.grammar
            .get_or_init(|| {
                Grammar::new(self.tokenizer.clone())
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(GrammarError::Setup)
    }

    /// Marks the model used now, and sets how long it stays after this use.
    pub fn touch(&self, keep_alive: Option<Option<Duration>>) {
        if let Ok(mut usage) = self.usage.lock() {
            usage.last_used = Instant::now();
            if let Some(k) = keep_alive {
                usage.keep_alive = k;
            }
        }
    }

    /// When it unloads if left alone (None: never). A keep-alive past what `Instant` can count is never.
    pub fn expires_at(&self) -> Option<Instant> {
        let usage = self.usage.lock().ok()?;
        expiry(usage.last_used, usage.keep_alive)
    }

    /// Whether it can still serve: false once its scheduler has stopped.
    pub fn is_serving(&self) -> bool {
        !self.scheduler.is_stopped()
    }

    fn is_idle(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.scheduler.stats.running.load(Ordering::Relaxed) == 0
            && self.scheduler.stats.waiting.load(Ordering::Relaxed) == 0
    }

    fn last_used(&self) -> Instant {
        self.usage
            .lock()
            .map(|u| u.last_used)
            .unwrap_or_else(|_| Instant::now())
    }
}

/// `last_used + keep_alive`, None for never (no keep-alive, or one that overflows `Instant`).
fn expiry(last_used: Instant, keep_alive: Option<Duration>) -> Option<Instant> {
    keep_alive.and_then(|k| last_used.checked_add(k))
}

/// A model's place in the table: empty while its first request loads it, then the model.
#[derive(Default)]
struct Slot {
    model: tokio::sync::OnceCell<Arc<LoadedModel>>,
}

impl Slot {
    fn ready(&self) -> Option<&Arc<LoadedModel>> {
        self.model.get()
    }
}

/// The set of loaded models.
pub struct ModelRuntime {
    store: Store,
    options: RuntimeOptions,
    loaded: tokio::sync::Mutex<HashMap<Digest, Arc<Slot>>>,
}

impl ModelRuntime {
    /// The device models load onto.
    pub fn device_name(&self) -> String {
        crate::engine::device::device_name(&self.options.engine.device)
    }

    pub fn new(store: Store, options: RuntimeOptions) -> Self {
        Self {
            store,
            options,
            loaded: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The loaded model `reference` names, loading it if needed.
    pub async fn get(&self, reference: &str) -> Result<Arc<LoadedModel>, RuntimeError> {
        let local = self.store.resolve(reference)?;
        let id = local.id.clone();
        let slot = {
            let mut table = self.loaded.lock().await;
            match table.get(&id).map(|slot| slot.ready()) {
                // Settings changed by `model configure` apply once the model is idle: it loads again.
                Some(Some(model))
                    if model.is_serving()
                        && (model.settings == local.settings || !model.is_idle()) =>
                {
                    model.touch(None);
                    return Ok(model.clone());
                }
                Some(Some(model)) if model.is_serving() => {
                    tracing::info!(model = %model.name, "the model's settings changed; loading it again");
                    table.remove(&id);
                }
                Some(Some(model)) => {
                    tracing::warn!(model = %model.name, "the model's scheduler stopped; loading it again");
                    table.remove(&id);
                }
                Some(None) | None => {}
            }
            match table.get(&id) {
                // Another request is loading it: wait for that load below.
                Some(slot) => slot.clone(),
                None => {
                    self.make_room(&mut table, local.size());
                    let slot = Arc::new(Slot::default());
                    table.insert(id.clone(), slot.clone());
                    slot
                }
            }
        };
        // Outside the table's lock; the cell runs one load at a time, and only until one succeeds.
        let loaded = slot
            .model
            .get_or_try_init(|| async { self.load(local).await.map(Arc::new) })
            .await;
        match loaded {
            Ok(model) => {
                model.touch(None);
                Ok(model.clone())
            }
            Err(e) => {
                // No entry is left behind for a model that failed to load: the next request tries again.
                let mut table = self.loaded.lock().await;
                if table
                    .get(&id)
                    .is_some_and(|s| Arc::ptr_eq(s, &slot) && s.ready().is_none())
                {
                    table.remove(&id);
                }
                Err(e)
            }
        }
    }

    /// Unloads idle models, least recently used first, until a newcomer of `size` bytes fits by count and
    /// by memory; its KV cache is not known yet, so its weights stand in. Models loading count by number.
    fn make_room(&self, table: &mut HashMap<Digest, Arc<Slot>>, size: u64) {
        let budget = self.options.memory_budget.unwrap_or(u64::MAX);
        let over = |table: &HashMap<Digest, Arc<Slot>>| {
            let used: u64 = table
                .values()
                .filter_map(|s| s.ready())
                .map(|m| m.memory_bytes)
                .sum();
            table.len() >= self.options.max_loaded.max(1)
                || (!table.is_empty() && used.saturating_add(size) > budget)
        };
        while over(table) {
            let Some(victim) = table
                .values()
                .filter_map(|s| s.ready())
                .filter(|m| m.is_idle())
                .min_by_key(|m| m.last_used())
                .map(|m| m.id.clone())
            else {
                break;
            };
            tracing::info!(model = %victim, "unloading the least recently used model to make room");
            table.remove(&victim);
        }
    }

    async fn load(&self, local: LocalModel) -> Result<LoadedModel, RuntimeError> {
        let files = model_files(&self.store, &local)?;
        let mut options = self.options.engine.clone();
        if let Some(n) = local.settings.context_size {
            options.context_size = Some(n as usize);
        }
        let started = Instant::now();
        let engine = tokio::task::spawn_blocking(move || Engine::load(&files, &options))
            .await
            .map_err(|e| LoadError::Stopped(e.to_string()))?
            .map_err(LoadError::Engine)?;
        let name = local
            .familiar_names()
            .into_iter()
            .next()
            .unwrap_or_else(|| local.id.to_string());
        tracing::info!(model = %name, seconds = started.elapsed().as_secs_f64(), "model loaded");
        Ok(LoadedModel {
            id: local.id.clone(),
            name,
            tokenizer: engine.tokenizer.clone(),
            template: engine.template.clone(),
            template_sandbox: self.options.template_sandbox.clone(),
            context_size: engine.context_size(),
            vocab_size: engine.info().vocab_size,
            architecture: engine.info().architecture.clone(),
            pooling: engine.pooling(),
            generates: engine.generates(),
            device: crate::engine::device::device_name(engine.device()),
            size_bytes: local.size(),
            memory_bytes: local.size() + engine.kv_cache_bytes(),
            loaded_at: Instant::now(),
            settings: local.settings.clone(),
            scheduler: Scheduler::start(engine, self.options.scheduler),
            usage: Mutex::new(Usage {
                last_used: Instant::now(),
                keep_alive: local
                    .settings
                    .keep_alive()
                    .unwrap_or(self.options.keep_alive),
            }),
            grammar: std::sync::OnceLock::new(),
        })
    }

    /// Models loaded now (not those still loading, nor those whose scheduler stopped).
    pub async fn loaded(&self) -> Vec<Arc<LoadedModel>> {
        self.loaded
            .lock()
            .await
            .values()
            .filter_map(|s| s.ready())
            .filter(|m| m.is_serving())
            .cloned()
            .collect()
    }

    /// Unloads one model (by any reference form) or all; returns how many went.
    pub async fn unload(&self, reference: Option<&str>) -> Result<usize, RuntimeError> {
        let mut loaded = self.loaded.lock().await;
        match reference {
            None => {
                let n = loaded.values().filter(|s| s.ready().is_some()).count();
                loaded.clear();
                Ok(n)
            }
            Some(r) => {
                let id = self.store.resolve(r)?.id;
                Ok(usize::from(loaded.remove(&id).is_some()))
            }
        }
    }

    /// Unloads idle models whose keep-alive has passed, and models whose scheduler stopped. Called
    /// periodically.
    pub async fn expire(&self) {
        let now = Instant::now();
        let mut loaded = self.loaded.lock().await;
        loaded.retain(|_, slot| {
            let Some(m) = slot.ready() else {
                return true;
            };
            if !m.is_serving() {
                tracing::warn!(model = %m.name, "the model's scheduler stopped, unloading");
                return false;
            }
            let expired = m.is_idle() && m.expires_at().is_some_and(|t| t <= now);
            if expired {
                tracing::info!(model = %m.name, "keep-alive expired, unloading");
            }
            !expired
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keep_alive_past_what_instant_counts_never_expires() {
        let now = Instant::now();
        assert_eq!(expiry(now, Some(Duration::from_secs(u64::MAX))), None);
        assert_eq!(expiry(now, Some(Duration::MAX)), None);
        assert_eq!(expiry(now, None), None);
        assert_eq!(
            expiry(now, Some(Duration::from_secs(5))),
            Some(now + Duration::from_secs(5))
        );
    }
}
