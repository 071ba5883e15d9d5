//! Mesh: an LLM API gateway speaking the OpenAI Responses API, built to run as an AWS Lambda
//! function (response streaming) or as a standalone HTTP server.
//!
//! Layout follows the request pipeline: [`request`] validates, [`app`] authenticates, limits and
//! dispatches, [`providers`] translates, [`accounting`] settles; [`store`] and [`limits`] are
//! ports with DynamoDB/Redis adapters and embedded ones. [`chat_completions`] puts
//! `/v1/chat/completions` on the same pipeline.

pub mod accounting;
pub mod admin;
pub mod app;
pub mod archive;
pub mod catalog;
pub mod chat_completions;
pub mod config;
pub mod conversation;
pub mod domain;
pub mod error;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod money;
pub mod pipeline;
pub mod plugins;
pub mod providers;
pub mod request;
pub mod routing;
pub mod scrub;
pub mod secrets;
pub mod server;
pub mod spend;
pub mod sse;
pub mod state;
pub mod store;
pub mod templates;

/// Installs the process-wide TLS crypto provider (two are linked: the AWS SDK's and reqwest's).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
