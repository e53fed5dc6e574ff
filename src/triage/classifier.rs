//! The classifier seen from the outside: one input type, one error type and a small trait, so
//! that the HTTP layer and the evaluation can run the real model or a test double.

use serde::{Deserialize, Serialize};

use super::classification::{Classification, ModelInfo};

/// One message to classify, with optional earlier messages from the same person.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    pub text: String,
    /// Earlier messages from the same person, oldest first.
    #[serde(default)]
    pub context: Vec<String>,
}

impl MessageInput {
    pub fn new(text: impl Into<String>) -> Self {
        MessageInput { text: text.into(), context: Vec::new() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// The input cannot be classified, for example a text that is empty once normalised.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The model failed. The message is for logs, never for clients.
    #[error("classification failed: {0:#}")]
    Internal(#[from] anyhow::Error),
}

/// A batch classifier. Implementations are synchronous and CPU-bound: callers run them on a
/// dedicated thread, never on an async executor thread.
pub trait Classify: Send + Sync + 'static {
    /// Classifies the inputs in one batch and returns one result per input, in order.
    fn classify(&self, inputs: &[MessageInput]) -> Result<Vec<Classification>, ClassifyError>;

    /// Returns the number of encoder tokens the input costs, context and windows included, for
    /// batching under a token budget.
    fn token_cost(&self, input: &MessageInput) -> usize;

    fn model_info(&self) -> ModelInfo;
}
