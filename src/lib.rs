//! cybertriage: triage of messages sent to a French child-protection helpline chatbot.
//!
//! A message goes through normalisation, the multilingual-e5-small encoder (candle), trained
//! heads, and a decision layer that may raise urgency and decides the human handoff.

pub mod cli;
pub mod data;
pub mod eval;
pub mod http;
pub mod infer;
pub mod json;
pub mod model;
pub mod triage;
