//! Mesh: an LLM API gateway speaking the OpenAI Responses API, built to run as an AWS Lambda
//! function (response streaming) or as a standalone HTTP server.
//!
//! Layout follows the request pipeline: [`request`] validates, [`app`] authenticates, limits and
//! dispatches, [`providers`] translates, [`accounting`] settles; [`store`] and [`limits`] are
//! ports with DynamoDB/Redis adapters and embedded ones. [`chat_completions`] puts
//! `/v1/chat/completions` on the same pipeline.
//!
//! # Map (a module per line: what it owns)
//!
//! - [`app`]: the HTTP edge, one axum router for both front doors: the request-id layer (which
//!   renders handler errors), extractors (the key, path ids), bodies, response headers, handlers,
//!   the SSE pump and its two wire formats (`stream`, `chat_stream`), stored responses,
//!   templates, health, models.
//! - [`server`]: the standalone front door (hyper, slow-client bounds).
//! - [`request`]: validation of `/v1/responses` bodies.
//! - [`chat_completions`]: `/v1/chat/completions` validation, conversion to the pipeline's form,
//!   and the body forwarded to Chat providers.
//! - [`pipeline`]: the request's rules below the web layer: plan (model, rows, template,
//!   conversation, references), provider body, limits, caps, failover loop.
//! - [`catalog`]: which model a request means and which rows serve it.
//! - [`routing`]: retries, backoff and circuit breaking across rows; the `BreakerBoard` port
//!   that shares open breakers between instances.
//! - [`conversation`]: input items, turns, history for resending, `ResponseItem` listing.
//! - [`archive`]: stored responses per owner: chains, just-minted waits, `item_reference`s.
//! - [`templates`]: prompt templates: built from, changed by and shown as their JSON fields;
//!   rendered.
//! - [`plugins`]: pii-redaction, response-healing, context-compression.
//! - [`providers`]: the port in `mod.rs` (`Translator`, `Wire`: what each provider API's module
//!   gives the dispatcher); the dispatcher (`dispatch`: HTTP client, timeouts, one call path for
//!   every API, reading bodies), provider auth as data (`auth`: how each API authenticates, the
//!   SigV4 credential cache), streams read event by event (`source`), deltas into client events
//!   (`sink`); the typed Responses input and the one walk over it that the translators share
//!   (`walk`); one folder per translated provider API (`request`, `response`, `wire`, `tests`),
//!   the Responses pass-through, AWS signing and event-stream framing, the one Responses
//!   assembler, the Chat Completions relay and assembler, the offline `echo` provider.
//! - [`sse`]: the incremental SSE parser and encoder.
//! - [`ttl`]: the bounded TTL map under the read caches.
//! - [`money`]: exact decimal prices and integer nano-USD costs.
//! - [`spend`]: this instance's held and confirmed spend not yet in the store.
//! - [`accounting`]: settlement: usage record and key charge, once per request; outbox retries.
//! - [`limits`]: RPM/RPD fixed windows: Redis (one Lua round trip) and in-process adapters;
//!   the Redis `BreakerBoard` on the same connection.
//! - [`store`]: storage ports, the DynamoDB adapter (a module per table) and the embedded SQLite
//!   one, the read caches (with the settlement-safe spend view), the usage outbox (the queue).
//! - [`domain`]: the records: keys, catalog rows, usage, balances, stored responses, templates.
//! - [`ids`]: request, key, response and item ids; secrets and their hashes; the owner tag.
//! - [`error`]: the gateway's errors and their one rendering to HTTP.
//! - [`scrub`]: credential scrubbing of provider text.
//! - [`config`], [`secrets`], [`state`]: configuration, provider credentials, shared state.
//! - [`metrics`]: CloudWatch Embedded Metric Format lines.
//!
//! The `mesh-admin` operator CLI is its own crate (`functions/admin`), so the function links only
//! what it serves.

pub mod accounting;
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
pub mod ttl;

/// Installs the process-wide TLS crypto provider (two are linked: the AWS SDK's and reqwest's).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
