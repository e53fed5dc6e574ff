//! The model layer: the base encoder (fetch, conversion, candle BERT) and the trained heads.
//! Nothing here knows about HTTP.

pub mod base;
pub mod bert;
pub mod e5s1;
pub mod encoder;
pub mod finetune;
pub mod heads;
pub mod infer;
pub mod lexical;
pub mod manifest;
pub mod train;
pub mod vocab;
