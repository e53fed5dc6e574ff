//! Labels, text normalisation and the decision layer that turns head scores into a
//! [`Classification`](classification::Classification).

pub mod classification;
pub mod classifier;
pub mod normalize;
pub mod taxonomy;
