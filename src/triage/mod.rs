//! Labels, text normalisation and the decision layer that turns head scores into a
//! [`Classification`](classification::Classification).

pub mod classification;
pub mod classifier;
pub mod decision;
pub mod normalize;
pub mod rules;
pub mod taxonomy;
