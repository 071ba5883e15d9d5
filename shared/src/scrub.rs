//! Credential scrubbing: provider text (error messages, stream failures) may quote a key, whole
//! or masked; this removes anything that looks like one before the text reaches a client or a log.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

/// What a scrubbed credential is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Credential shapes: `Bearer`/`Basic` header values, provider key prefixes (OpenAI and
/// Anthropic `sk-`, Mesh `rsk_`, Groq `gsk_`, xAI `xai-`), AWS access key ids, Google API keys,
/// key-like query parameters, and key text masked with runs of `*` (`sk-proj-****abcd`).
static CREDENTIAL: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i-u:\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=*-]+",
        r"|\b(?:sk|rsk|gsk|xai)[-_][A-Za-z0-9_*-]{4,}",
        r"|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
        r"|\bAIza[A-Za-z0-9_-]{30,}",
        r"|(?i-u:\b(?:api[_-]?key|key|token|access_token|secret)=)[^&\s'\x22]+",
        r"|[A-Za-z0-9_-]*\*{4,}[A-Za-z0-9_*-]*",
    ))
    .ok()
});

/// `text` with every credential-looking token replaced by [`REDACTED`]. Should the pattern ever
/// fail to build, the whole text is withheld rather than passed on unchecked.
pub fn credentials(text: &str) -> Cow<'_, str> {
    match CREDENTIAL.as_ref() {
        Some(pattern) => pattern.replace_all(text, REDACTED),
        None => Cow::Borrowed(REDACTED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_builds() {
        assert!(CREDENTIAL.is_some());
    }

    #[test]
    fn credentials_are_removed() {
        let cases = [
            (
                "Incorrect API key provided: sk-proj-****abcd. You can find your API key at https://platform.openai.com/account/api-keys.",
                "Incorrect API key provided: [redacted]. You can find your API key at https://platform.openai.com/account/api-keys.",
            ),
            ("invalid key sk-ant-api03-AbC_dEf-123", "invalid key [redacted]"),
            ("key sk-stub-upstream-secret refused", "key [redacted] refused"),
            ("Authorization: Bearer eyJhbGciOi.J9.xyz was rejected", "Authorization: [redacted] was rejected"),
            ("The key rsk_01JDEVKEY00000000000000000 is unknown", "The key [redacted] is unknown"),
            ("The security token AKIAIOSFODNN7EXAMPLE is invalid", "The security token [redacted] is invalid"),
            ("API key AIzaSyA-1234567890abcdefghijklmnopqrstu not valid", "API key [redacted] not valid"),
            ("GET /v1beta/models?key=AIza123&alt=sse failed", "GET /v1beta/models?[redacted]&alt=sse failed"),
            ("gsk_abcdefghijkl and xai-abcdefgh", "[redacted] and [redacted]"),
            ("masked: abc*********************xyz", "masked: [redacted]"),
        ];
        for (text, expected) in cases {
            assert_eq!(credentials(text), expected, "{text}");
        }
    }

    #[test]
    fn ordinary_provider_messages_are_kept() {
        for text in [
            "Invalid value for 'temperature'.",
            "Rate limit reached for model `gpt-4o` on tokens per minute (TPM): Limit 6000, Used 5990.",
            "prompt is too long: 208656 tokens > 200000 maximum",
            "The model `task-skills` does not exist; 2 * 3 = 6",
            "You don't have access to the model with the specified model ID.",
            "Number of request tokens has exceeded your per-minute rate limit",
        ] {
            assert_eq!(credentials(text), text);
        }
    }
}
