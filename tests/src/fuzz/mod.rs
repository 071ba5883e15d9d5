//! Fuzzing every parser and decoder that takes untrusted bytes, and property tests of money.
//!
//! [`targets`] lists the targets: plain `fn(&[u8])` functions asserting properties (round
//! trips, chunking invariance, bounded output, linear work counters, exact money). The stable
//! [`driver`] mutates seed inputs with a seeded PRNG; `fuzz/` holds cargo-fuzz targets calling
//! the same functions for coverage-guided runs on a nightly toolchain. `tests/fuzz.sh SECONDS`
//! runs them all; `tests/tests/fuzz_smoke.rs` runs each briefly under `cargo test`.

pub mod check;
pub mod driver;
pub mod mutate;
pub mod rng;
pub mod targets;

use std::path::{Path, PathBuf};

use targets::{assembler, auth, eventstream, lambda, money, plugins, request, sse, templates, translate};

/// One fuzz target: its code, its seed corpus and the tokens its mutator likes to insert.
#[derive(Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub tokens: &'static [&'static str],
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

macro_rules! api_targets {
    ($api:literal, $response:ident, $stream:ident, $rseeds:ident, $sseeds:ident) => {
        fn $response(data: &[u8]) {
            translate::response_target($api, data)
        }
        fn $stream(data: &[u8]) {
            translate::stream_target($api, data)
        }
        fn $rseeds() -> Vec<Vec<u8>> {
            translate::response_seeds($api)
        }
        fn $sseeds() -> Vec<Vec<u8>> {
            translate::stream_seeds($api)
        }
    };
}
api_targets!("chat", chat_response, chat_stream, chat_response_seeds, chat_stream_seeds);
api_targets!("anthropic", anthropic_response, anthropic_stream, anthropic_response_seeds, anthropic_stream_seeds);
api_targets!("gemini", gemini_response, gemini_stream, gemini_response_seeds, gemini_stream_seeds);
api_targets!("bedrock", bedrock_response, bedrock_stream, bedrock_response_seeds, bedrock_stream_seeds);

fn passthrough_seeds() -> Vec<Vec<u8>> {
    let mut seeds = fixtures("responses");
    seeds.push(
        br#"{"id":"resp_1","object":"response","model":"gpt-4o","status":"completed","output":[],"usage":{"input_tokens":1,"output_tokens":2}}"#.to_vec(),
    );
    seeds
}

/// Every target, in the order the driver runs them.
pub fn all() -> Vec<Target> {
    let t = |name, run, seeds, tokens| Target { name, run, seeds, tokens };
    vec![
        t("request", request::target as fn(&[u8]), request::seeds as fn() -> Vec<Vec<u8>>, request::TOKENS),
        t("templates", templates::target, templates::seeds, templates::TOKENS),
        t("lambda_event", lambda::target, lambda::seeds, lambda::TOKENS),
        t("auth_header", auth::target, auth::seeds, auth::TOKENS),
        t("sse", sse::target, sse::seeds, sse::TOKENS),
        t("eventstream", eventstream::target, eventstream::seeds, eventstream::TOKENS),
        t("chat_response", chat_response, chat_response_seeds, translate::TOKENS),
        t("chat_stream", chat_stream, chat_stream_seeds, translate::TOKENS),
        t("anthropic_response", anthropic_response, anthropic_response_seeds, translate::TOKENS),
        t("anthropic_stream", anthropic_stream, anthropic_stream_seeds, translate::TOKENS),
        t("gemini_response", gemini_response, gemini_response_seeds, translate::TOKENS),
        t("gemini_stream", gemini_stream, gemini_stream_seeds, translate::TOKENS),
        t("bedrock_response", bedrock_response, bedrock_response_seeds, translate::TOKENS),
        t("bedrock_stream", bedrock_stream, bedrock_stream_seeds, translate::TOKENS),
        t("responses_passthrough", translate::passthrough_target, passthrough_seeds, translate::TOKENS),
        t("assembler", assembler::target, assembler::seeds, &[]),
        t("pii_redaction", plugins::pii_target, plugins::pii_seeds, plugins::TOKENS),
        t("response_healing", plugins::healing_target, plugins::healing_seeds, plugins::TOKENS),
        t("money_cost", money::cost_target, money::cost_seeds, &[]),
        t("money_settlement", money::settlement_target, money::settlement_seeds, &[]),
    ]
}

/// Runs the named target on one input (the cargo-fuzz entry point); panics on a failure.
pub fn run_target(name: &str, data: &[u8]) {
    match by_name(name) {
        Some(target) => (target.run)(data),
        None => panic!("no fuzz target `{name}`"),
    }
}

/// The target with this name.
pub fn by_name(name: &str) -> Option<Target> {
    all().into_iter().find(|t| t.name == name)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<Vec<u8>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// Recorded provider streams in `tests/fixtures/` whose name starts with `prefix` (`sse`: all).
pub fn fixtures(prefix: &str) -> Vec<Vec<u8>> {
    files(&repo().join("tests/fixtures"), |name| {
        name.ends_with(".sse") && (prefix == "sse" || name.starts_with(prefix))
    })
}

/// The sample Lambda events in `events/`.
pub fn events() -> Vec<Vec<u8>> {
    files(&repo().join("events"), |name| name.ends_with(".json"))
}

/// Saved inputs of a target (`tests/fuzz/corpus/<target>/`): regressions and finds.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    files(&corpus_dir(target), |_| true)
}

pub fn corpus_dir(target: &str) -> PathBuf {
    repo().join("tests/fuzz/corpus").join(target)
}
