//! State shared by every handler: the validated configuration, the inference engine, the
//! metrics and the identity of the loaded model.

use std::sync::{Arc, OnceLock};

use crate::infer::Engine;
use crate::triage::classification::ModelInfo;
use crate::triage::classifier::Classify;

use super::config::Config;
use super::metrics::Metrics;

/// Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    config: Config,
    engine: Engine,
    metrics: Arc<Metrics>,
    model: OnceLock<ModelInfo>,
}

impl AppState {
    /// Creates a service with no model yet: /health returns 200, and classify requests and /ready
    /// return 503 `not_ready` until [`AppState::start`] succeeds.
    pub fn new(config: Config) -> Self {
        let metrics = Arc::new(Metrics::new());
        let engine = Engine::new(config.batching.clone(), metrics.clone());
        AppState(Arc::new(Inner { config, engine, metrics, model: OnceLock::new() }))
    }

    /// Warms the classifier up and starts the model workers. Blocks for the warm-up: call it
    /// from a blocking context.
    pub fn start(&self, classifier: Arc<dyn Classify>) -> anyhow::Result<()> {
        let model = classifier.model_info();
        self.0.engine.start(classifier)?;
        let _ = self.0.model.set(model);
        Ok(())
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub fn engine(&self) -> &Engine {
        &self.0.engine
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Returns the loaded model, once [`AppState::start`] succeeded.
    pub fn model(&self) -> Option<&ModelInfo> {
        self.0.model.get()
    }
}
