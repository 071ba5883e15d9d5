//! `pii-redaction`: replaces e-mail addresses, phone numbers, card numbers (Luhn-checked) and
//! API-key-like secrets in the input with typed placeholders before the provider sees them.
//! Options: `{"kinds": ["email", "phone", "card", "secret"]}` (default: all).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use super::{for_each_input_text, Plugin, PluginContext};
use crate::error::GatewayError;

pub struct PiiRedaction;

const KINDS: [&str; 4] = ["email", "phone", "card", "secret"];

#[allow(clippy::expect_used)] // literal patterns, checked by the tests
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}").expect("email pattern")
});
#[allow(clippy::expect_used)]
static CARD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").expect("card pattern"));
#[allow(clippy::expect_used)]
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d(?:[ .-]?\d){6,13}\b").expect("phone pattern")
});
#[allow(clippy::expect_used)]
static SECRET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}|rsk_[0-9A-Z]{26}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20,})\b",
    )
    .expect("secret pattern")
});

/// Luhn checksum over the digits of `text`.
fn luhn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                *d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn kinds(options: &Map<String, Value>) -> Vec<String> {
    match options.get("kinds") {
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => KINDS.iter().map(|k| (*k).to_owned()).collect(),
    }
}

/// Whether the digit run continues past `index` going in `step` direction (a longer number).
fn continues(bytes: &[u8], index: Option<usize>, step: isize) -> bool {
    let Some(i) = index else { return false };
    let Some(&b) = bytes.get(i) else { return false };
    if b.is_ascii_digit() {
        return true;
    }
    let next = i.checked_add_signed(step);
    matches!(b, b' ' | b'-' | b'.') && next.and_then(|n| bytes.get(n)).is_some_and(u8::is_ascii_digit)
}

/// Whether a match starting at `start` with a digit is the tail of a word (`AKIA...O11111112`,
/// `id_12345678`). One starting with `+` or `(` already stands apart from what precedes it.
fn glued_to_word(bytes: &[u8], start: usize) -> bool {
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    bytes.get(start).is_some_and(u8::is_ascii_digit)
        && start.checked_sub(1).and_then(|i| bytes.get(i)).is_some_and(word)
}

/// Replaces phone numbers: 8 to 15 digits, not part of a longer digit run, not the tail of a
/// word. Two matches that touch (a match continuing into the other's digits) are one longer run:
/// neither is a phone, so redacting one never makes its neighbour look like a phone on its own.
/// A digit tail of a word is kept for the same reason: `[PHONE]` in its place would end the word
/// there, and the word could then read as a secret on a second pass.
fn replace_phones(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut found: Vec<(std::ops::Range<usize>, bool)> = PHONE
        .find_iter(text)
        .map(|m| {
            let digits = m.as_str().chars().filter(char::is_ascii_digit).count();
            let longer = continues(bytes, m.start().checked_sub(1), -1) || continues(bytes, Some(m.end()), 1);
            let glued = glued_to_word(bytes, m.start());
            (m.range(), (8..=15).contains(&digits) && !longer && !glued)
        })
        .collect();
    for i in 1..found.len() {
        let (before, after) = (found[i - 1].0.clone(), found[i].0.clone());
        let touching = after.start - before.end <= 1
            && (continues(bytes, after.start.checked_sub(1), -1) || continues(bytes, Some(before.end), 1));
        if touching {
            found[i - 1].1 = false;
            found[i].1 = false;
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (range, phone) in found {
        if phone {
            out.push_str(&text[last..range.start]);
            out.push_str("[PHONE]");
            last = range.end;
        }
    }
    out.push_str(&text[last..]);
    out
}

/// Redacts one text.
pub fn redact(text: &str, kinds: &[String]) -> String {
    let on = |k: &str| kinds.iter().any(|x| x == k);
    let mut out = text.to_owned();
    if on("secret") {
        out = SECRET.replace_all(&out, "[SECRET]").into_owned();
    }
    if on("email") {
        out = EMAIL.replace_all(&out, "[EMAIL]").into_owned();
    }
    if on("card") {
        out = CARD
            .replace_all(
                &out,
                |c: &regex::Captures<'_>| if luhn(&c[0]) { "[CARD]".to_owned() } else { c[0].to_owned() },
            )
            .into_owned();
    }
    if on("phone") {
        out = replace_phones(&out);
    }
    out
}

impl Plugin for PiiRedaction {
    fn id(&self) -> &'static str {
        "pii-redaction"
    }

    fn check(&self, options: &Map<String, Value>, _ctx: &PluginContext) -> Result<(), GatewayError> {
        for kind in kinds(options) {
            if !KINDS.contains(&kind.as_str()) {
                return Err(GatewayError::invalid(
                    "invalid_value",
                    "plugins.kinds",
                    format!("Unknown pii-redaction kind `{kind}`: expected email, phone, card or secret."),
                ));
            }
        }
        Ok(())
    }

    fn before(&self, options: &Map<String, Value>, _ctx: &PluginContext, body: &mut Map<String, Value>) {
        let kinds = kinds(options);
        for_each_input_text(body, &mut |text| *text = redact(text, &kinds));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<String> {
        KINDS.iter().map(|k| (*k).to_owned()).collect()
    }

    #[test]
    fn redacts_each_kind() {
        let text = "Mail ada@example.co.uk or call +1 (415) 555-0132; card 4111 1111 1111 1111, not 4111 1111 1111 1112; key sk-proj-abcdefghijklmnop1234 and AKIAABCDEFGHIJKLMNOP. Order 12345.";
        let out = redact(text, &all());
        assert_eq!(
            out,
            "Mail [EMAIL] or call [PHONE]; card [CARD], not 4111 1111 1111 1112; key [SECRET] and [SECRET]. Order 12345."
        );
        assert_eq!(redact("ada@example.com", &["phone".to_owned()]), "ada@example.com", "options choose the kinds");
    }

    #[test]
    fn a_digit_run_glued_to_another_group_is_one_number() {
        // Found by the pii_redaction fuzz target: the first 8 digits were redacted, which made
        // the rest look like a phone number of its own on a second pass (not idempotent).
        for text in ["c11111111(5)1111111", "345678901+34567890", "22456781 (5)5550132"] {
            assert_eq!(redact(text, &all()), text);
        }
        assert_eq!(redact("call 5551234567 (mobile)", &all()), "call [PHONE] (mobile)");
    }

    #[test]
    fn digits_ending_a_word_are_not_a_phone() {
        // Redacting them would end the word before `[PHONE]`, and a second pass would then
        // read `AKIA...O` as an AWS key: redaction must be idempotent.
        let text = "-AKIAAABCDEFGHIJKLMNO11111112 order_12345678 x 12345678";
        let once = redact(text, &all());
        assert_eq!(once, "-AKIAAABCDEFGHIJKLMNO11111112 order_12345678 x [PHONE]");
        assert_eq!(redact(&once, &all()), once);
    }
}
