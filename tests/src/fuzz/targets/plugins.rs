//! The gateway plugins that rewrite untrusted text: `pii-redaction` (caller input) and
//! `response-healing` (model output), through the plugin registry as the app runs them.

use mesh::plugins::{find, PluginContext};
use serde_json::{json, Map, Value};

use crate::fuzz::rng::Bytes;

fn redact(text: &str, kinds: &[&str]) -> String {
    let plugin = find("pii-redaction").unwrap_or_else(|| panic!("pii-redaction is registered"));
    let options = Map::from_iter([("kinds".to_owned(), json!(kinds))]);
    let mut body = Map::from_iter([("input".to_owned(), json!(text))]);
    plugin.before(&options, &PluginContext::default(), &mut body);
    body["input"].as_str().unwrap_or_default().to_owned()
}

/// PII redaction: bounded output, idempotent, planted PII always removed, no kinds = no change.
pub fn pii_target(data: &[u8]) {
    let mut input = Bytes::new(data);
    let choice = input.u8();
    let text = String::from_utf8_lossy(input.remaining()).into_owned();
    let all = ["email", "phone", "card", "secret"];
    let kinds: Vec<&str> = all.iter().enumerate().filter(|(i, _)| choice & (1 << i) != 0).map(|(_, k)| *k).collect();
    let out = redact(&text, &kinds);
    assert!(out.len() <= 2 * text.len() + 16, "{} bytes became {}", text.len(), out.len());
    assert_eq!(redact(&out, &kinds), out, "redacting twice changes the text");
    if kinds.is_empty() {
        assert_eq!(out, text);
    }
    let planted = [
        ("email", "ada.lovelace+x@example.co.uk"),
        ("card", "4111 1111 1111 1111"),
        ("secret", "sk-proj-abcdefghijklmnop1234"),
        ("secret", "AKIAABCDEFGHIJKLMNOP"),
        ("phone", "+1 (415) 555-0132"),
    ];
    let (kind, value) = planted[usize::from(choice >> 4) % planted.len()];
    let split =
        text.char_indices().map(|(i, _)| i).nth(usize::from(choice) % (text.chars().count() + 1)).unwrap_or(text.len());
    let with = format!("{}\n<{value}>\n{}", &text[..split], &text[split..]);
    let out = redact(&with, &all);
    assert!(!out.contains(&format!("<{value}>")), "planted {kind} {value:?} survived: {out:?}");
}

fn heal(text: &str) -> Result<String, u16> {
    let plugin = find("response-healing").unwrap_or_else(|| panic!("response-healing is registered"));
    let body = Map::from_iter([("text".to_owned(), json!({"format": {"type": "json_object"}}))]);
    let mut response = json!({"output": [{"type": "message", "content": [{"type": "output_text", "text": text}]}]});
    match plugin.after(&Map::new(), &body, &mut response) {
        Ok(()) => Ok(response["output"][0]["content"][0]["text"].as_str().unwrap_or_default().to_owned()),
        Err(err) => Err(err.status().as_u16()),
    }
}

/// Response healing: the result is JSON, valid JSON is kept as is, healing is idempotent and
/// the result at most doubles the text; what cannot be healed is a 502.
pub fn healing_target(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    match heal(&text) {
        Ok(healed) => {
            assert!(serde_json::from_str::<Value>(&healed).is_ok(), "healed text is not JSON: {healed:?}");
            if serde_json::from_str::<Value>(&text).is_ok() {
                assert_eq!(healed, text);
            }
            assert!(healed.len() <= 2 * text.len() + 2, "{} bytes became {}", text.len(), healed.len());
            assert_eq!(heal(&healed), Ok(healed.clone()), "healing twice changes the text");
        }
        Err(status) => assert_eq!(status, 502),
    }
}

pub fn pii_seeds() -> Vec<Vec<u8>> {
    vec![
        b"\x0fMail ada@example.co.uk or call +1 (415) 555-0132; card 4111 1111 1111 1111, not 4111 1111 1111 1112; key sk-proj-abcdefghijklmnop1234 and AKIAABCDEFGHIJKLMNOP. Order 12345.".to_vec(),
        b"\x3f12345678901234567890 a@b.cd ghp_abcdefghijklmnopqrstuvwxyz0123456789 xoxb-1234567890-abc".to_vec(),
    ]
}

pub fn healing_seeds() -> Vec<Vec<u8>> {
    [
        "{\"a\":1}",
        "```json\n{\"a\": [1, 2,],}\n```",
        "Here you go: {\"a\": 1} Hope it helps",
        "{\"a\": {\"b\": \"trunc",
        "{\"a\": [1, 2",
        "no json at all",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        "{\"k\": \"v\\\"\", \"n\": [1, {\"x\": [\"",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

pub const TOKENS: &[&str] = &["```", "```json", ",}", ",]", "@", "sk-", "AKIA", "4111", "+1 ", "\\\"", "{\"a\":"];
