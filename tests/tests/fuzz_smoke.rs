//! A short, seeded run of every fuzz target (the CI smoke of `tests/fuzz.sh`), and the
//! minimized inputs of past findings as regression tests.
#![allow(clippy::unwrap_used, clippy::panic)]

use mesh_tests::fuzz::driver::{escape, run, run_one, Budget};
use mesh_tests::fuzz::{by_name, Target};

/// Inputs per target in the smoke (a few seconds in all).
const SMOKE_INPUTS: u64 = 300;

fn target(name: &str) -> Target {
    by_name(name).unwrap_or_else(|| panic!("no fuzz target `{name}`"))
}

fn smoke(name: &str) {
    let report = run(&target(name), Budget::Inputs(SMOKE_INPUTS), 0x5eed, None);
    assert!(report.inputs >= SMOKE_INPUTS.min(1));
    if let Some(failure) = report.failures.first() {
        panic!("{name}: {}\ninput: {}", failure.message, escape(&failure.input));
    }
}

/// A past finding stays fixed.
fn regression(name: &str, input: &[u8]) {
    if let Err(message) = run_one(&target(name), input) {
        panic!("{name} regressed: {message}");
    }
}

macro_rules! smoke_tests {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { smoke(stringify!($name)); })*
    };
}

smoke_tests!(
    request,
    templates,
    lambda_event,
    auth_header,
    eventstream,
    chat_response,
    chat_stream,
    anthropic_response,
    anthropic_stream,
    gemini_response,
    gemini_stream,
    bedrock_response,
    bedrock_stream,
    responses_passthrough,
    assembler,
    pii_redaction,
    response_healing,
    money_cost,
    money_settlement,
);

#[test]
fn sse() {
    smoke("sse");
}

/// Found by the `sse` target: a CR ending one chunk, an empty chunk, then the LF ended the line
/// twice (the empty chunk dropped the pending CR), so the event ended early without its data.
#[test]
fn sse_cr_then_empty_chunk_then_lf_is_one_line_end() {
    use mesh::sse::SseParser;
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for chunk in [&b"event: a\r"[..], b"", b"\ndata: x\n\n"] {
        events.extend(parser.feed(chunk).unwrap());
    }
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.as_deref(), Some("a"), "the event type survives the empty chunk");
}

/// Found by the `pii_redaction` target: digits ending a word were redacted as a phone number,
/// which ended the word at `[PHONE]`, so a second pass read `AKIA...O` as an AWS key.
#[test]
fn pii_redaction_of_a_word_ending_in_digits_is_idempotent() {
    regression("pii_redaction", b"\x0f-AKIAAABCDEFGHIJKLMNO11111112");
    regression("pii_redaction", b"\x0fnAKIAAABCDEFGHIJKLMNO11111112");
}

#[test]
fn template_rendering_is_bounded() {
    // Found by the templates target (6 MiB rendered from a 5 KiB template), fixed on main by the
    // template-bounds work.
    let template = format!(
        r#"{{"template":{{"system":"{}"}},"variables":{{"v":"{}"}}}}"#,
        "{{ v }}".repeat(1000),
        "x".repeat(8192)
    );
    regression("templates", template.as_bytes());
}

#[test]
fn every_target_has_a_smoke_test() {
    assert_eq!(mesh_tests::fuzz::all().len(), 20);
}

// Fixed findings, minimized.

/// The assembler target's op byte for `ToolCallStart` with provider index `index` (< 16).
fn call_start(index: u8) -> u8 {
    (0..16).map(|r| (index << 4) | r).find(|op| op % 9 == 4).unwrap()
}

#[test]
fn assembler_lists_output_in_output_index_order() {
    // A call (0), text (1), then a second call (2): the text closed first and came first in
    // `response.output`, out of its output_index order.
    regression("assembler", &[4, 0, 0, 0, 2, b'h', b'i', call_start(1), 0, 0]);
}

#[test]
fn assembler_work_is_linear_with_many_open_calls() {
    // 16 open calls and 200 argument fragments: every fragment scanned every open call.
    let mut input: Vec<u8> = (0..16u8).flat_map(|i| [call_start(i), 0, 0]).collect();
    for _ in 0..200 {
        input.extend_from_slice(&[5, 1, b'x']);
    }
    regression("assembler", &input);
}

#[test]
fn assembler_usage_total_saturates() {
    // input_tokens and output_tokens of u64::MAX: `total_tokens` overflowed.
    regression("assembler", b"\x07\x01\x00\x01\x00\x08\x00");
}

#[test]
fn cost_of_the_largest_counts_at_the_largest_prices_saturates() {
    // Three products of u64::MAX overflowed their u128 sum.
    regression("money_cost", b"\x02\xe9\xe9\xe9\xe9\xe9");
}

#[test]
fn worst_case_covers_a_cached_price_above_the_input_price() {
    regression("money_cost", b"184440737095570955");
}

#[test]
fn settlement_past_i64_keeps_the_key_readable() {
    regression("money_settlement", b"\x00\x91\x00\x0500\x05\x97");
    regression("money_settlement", b"\x00\xee\x05\x03\xc6\xf0\x01\x95P\t\xc6\xee");
}

#[test]
fn provider_token_sums_saturate_instead_of_wrapping() {
    // Usage counts near u64::MAX overflowed the sums of token classes (a panic in debug builds,
    // a wrapped, tiny count and so an undercharge in release builds).
    regression(
        "anthropic_stream",
        br#"data:{"type":"message_start","message":{"usage":{"input_tokens":5,"cache_read_input_tokens":18446744073709551615}}}"#,
    );
    regression(
        "gemini_response",
        br#"{"":[{"":{"":[{"":true},{"":""},{"":{"":"","":{}}}],"":""},"":"","":0}],"usageMetadata":{"":0,"candidatesTokenCount":5,"thoughtsTokenCount":18446744073709551615,"":1}}"#,
    );
    regression(
        "gemini_response",
        br#"{"":[{"":{"":[{"":"","":true},{"":""},{"":{"":{"":1}}}],"":""},"":"","":""}],"usageMetadata":{"promptTokenCount":18446744073709551615,"":1,"toolUsePromptTokenCount":1}}"#,
    );
    let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":18446744073709551615,"outputTokens":1,"totalTokens":1,"cacheReadInputTokens":1}}"#;
    regression("bedrock_response", body);
    let deltas = mesh_tests::fuzz::targets::translate::translator("bedrock").response(body).unwrap();
    let usage = deltas.iter().find_map(|d| match d {
        mesh::providers::assemble::Delta::Usage(usage) => Some(*usage),
        _ => None,
    });
    assert_eq!(usage.map(|u| u.input_tokens), Some(u64::MAX));
}
