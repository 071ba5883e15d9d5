//! The fuzz targets, one module per parser or decoder family. Each target is a plain
//! `fn(&[u8])` that panics when a property fails, so the stable driver and cargo-fuzz (libFuzzer)
//! run the very same code.

pub mod assembler;
pub mod auth;
pub mod eventstream;
pub mod lambda;
pub mod money;
pub mod plugins;
pub mod request;
pub mod sse;
pub mod templates;
pub mod translate;
