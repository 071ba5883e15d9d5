//! Response in: a complete answer and the stream decoder, as deltas.

use super::*;

/// Maps the parts of one answer to deltas, across all the chunks of a stream.
#[derive(Debug, Default)]
pub(super) struct PartMapper {
    /// Function calls so far: Gemini numbers none, so the count is the index.
    pub(super) calls: u64,
    /// A signature went into the reasoning item still open; a second one would be glued to it.
    pub(super) signature_open: bool,
}

impl PartMapper {
    pub(super) fn parts(&mut self, parts: &[Value], out: &mut Vec<Delta>) {
        for part in parts {
            if let Some(signature) = part.get("thoughtSignature").and_then(Value::as_str) {
                if !signature.is_empty() && !self.signature_open {
                    out.push(Delta::ReasoningState(signature.to_owned()));
                    self.signature_open = true;
                }
            }
            if let Some(call) = part.get("functionCall") {
                let call_id = match call.get("id").and_then(Value::as_str) {
                    Some(id) if !id.is_empty() => id.to_owned(),
                    _ => new_id("call_"),
                };
                let name = call.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                let arguments = match call.get("args") {
                    Some(args) if !args.is_null() => args.to_string(),
                    _ => "{}".to_owned(),
                };
                out.push(Delta::ToolCallStart { index: self.calls, call_id, name });
                out.push(Delta::ToolCallArguments { index: self.calls, fragment: arguments });
                self.calls += 1;
                self.signature_open = false;
            } else if let Some(text) = part.get("text").and_then(Value::as_str) {
                if part.get("thought").and_then(Value::as_bool) == Some(true) {
                    out.push(Delta::Reasoning(text.to_owned()));
                } else if !text.is_empty() {
                    out.push(Delta::Text(text.to_owned()));
                    self.signature_open = false;
                }
            }
            // Other parts (generated images, executable code) come from features Mesh refuses.
        }
    }
}

/// Decodes Gemini answers: one whole `GenerateContentResponse`, or the chunks of a stream.
#[derive(Debug, Default)]
pub(super) struct GeminiDecoder {
    pub(super) parts: PartMapper,
    /// The latest `usageMetadata` (each chunk carries the counts so far).
    pub(super) usage: Option<TokenUsage>,
    pub(super) reason: Option<FinishReason>,
    pub(super) done: bool,
}

impl GeminiDecoder {
    pub(super) fn chunk(&mut self, chunk: &Value) -> Vec<Delta> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if let Some(error) = chunk.get("error") {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("The provider reported an error.");
            self.reason = Some(FinishReason::Error(message.to_owned()));
            return self.end(FinishReason::Stop);
        }
        let has_usage = match chunk.get("usageMetadata").filter(|meta| meta.is_object()) {
            Some(meta) => {
                self.usage = Some(usage_of(meta));
                true
            }
            None => false,
        };
        match chunk.get("candidates").and_then(|c| c.get(0)) {
            Some(candidate) => {
                if let Some(Value::Array(parts)) = candidate.pointer("/content/parts") {
                    self.parts.parts(parts, &mut out);
                }
                if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
                    self.reason = Some(finish_reason(reason));
                }
            }
            // The prompt itself was blocked: no candidate at all.
            None if chunk.pointer("/promptFeedback/blockReason").is_some() => {
                self.reason = Some(FinishReason::ContentFilter);
            }
            None => {}
        }
        if self.reason.is_some() && has_usage {
            out.extend(self.end(FinishReason::Stop));
        }
        out
    }

    /// Usage, then the finish (`fallback` when Gemini never said why it stopped).
    pub(super) fn end(&mut self, fallback: FinishReason) -> Vec<Delta> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        let mut out = Vec::new();
        if let Some(usage) = self.usage.take() {
            out.push(Delta::Usage(usage));
        }
        out.push(Delta::Finish(self.reason.take().unwrap_or(fallback)));
        out
    }
}

impl DeltaDecoder for GeminiDecoder {
    fn decode(&mut self, event: SseEvent) -> Result<Vec<Delta>, StreamFault> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|_| StreamFault::Malformed("gemini event data is not JSON".to_owned()))?;
        if !chunk.is_object() {
            return Err(StreamFault::Malformed("gemini event data is not an object".to_owned()));
        }
        Ok(self.chunk(&chunk))
    }

    fn finish(&mut self) -> Vec<Delta> {
        self.end(FinishReason::Error("The provider ended the stream without saying why it stopped.".to_owned()))
    }
}

/// Token counts of a `usageMetadata`. The prompt count includes cached tokens; output is the
/// answer plus the thinking, both billed as output.
pub(super) fn usage_of(meta: &Value) -> TokenUsage {
    let count = |field: &str| meta.get(field).and_then(Value::as_u64).unwrap_or(0);
    let thoughts = count("thoughtsTokenCount");
    TokenUsage {
        // Tool-use prompt tokens (results of Google's own tools) are billed as input too.
        input_tokens: count("promptTokenCount").saturating_add(count("toolUsePromptTokenCount")),
        cached_input_tokens: count("cachedContentTokenCount"),
        output_tokens: count("candidatesTokenCount").saturating_add(thoughts),
        reasoning_tokens: thoughts,
        // Gemini reports no cache writes (its implicit cache is not billed for writing).
        cache_write_tokens: 0,
    }
}

pub(super) fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

pub(super) fn error_of(provider: &str, status: u16, headers: &HeaderMap, bytes: &[u8]) -> GatewayError {
    let body: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    // Without `alt=sse` a failed stream answers a JSON array holding the envelope.
    let envelope = match body {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    };
    let error = envelope.get("error").cloned().unwrap_or(Value::Null);
    let message = error.get("message").and_then(Value::as_str).map(str::to_owned);
    let code = error.get("status").and_then(Value::as_str).map(str::to_ascii_lowercase);
    if (400..500).contains(&status) && message.as_deref().is_some_and(is_context_overflow) {
        return GatewayError::UpstreamClient(UpstreamFault {
            status: 400,
            error_type: "invalid_request_error".to_owned(),
            code: Some("context_length_exceeded".to_owned()),
            message: message.unwrap_or_default(),
            param: Some("input".to_owned()),
            retry_after_seconds: None,
        });
    }
    // Gemini refuses a bad API key (Mesh's own credential) with 400 `INVALID_ARGUMENT` and the
    // reason `API_KEY_INVALID`: that is the gateway's fault, as a 401 is.
    let status = if status == 400 && error_reason(&error) == Some("API_KEY_INVALID") { 401 } else { status };
    // Gemini states the wait in a `RetryInfo` detail rather than (or besides) `retry-after`.
    let mut headers = headers.clone();
    if status == 429 && !headers.contains_key("retry-after") {
        if let Some(seconds) = retry_delay(&error) {
            headers.insert("retry-after", HeaderValue::from(seconds));
        }
    }
    provider_fault(provider, status, &headers, None, code, message, None)
}

/// "The input token count (1234567) exceeds the maximum number of tokens allowed (1048576)."
pub(super) fn is_context_overflow(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("input token count") && message.contains("exceed")
}

/// Whole seconds (rounded up) of the `google.rpc.RetryInfo` detail's `retryDelay` (`"37s"`,
/// `"1.5s"`).
/// The `reason` of the error's `google.rpc.ErrorInfo` detail.
pub(super) fn error_reason(error: &Value) -> Option<&str> {
    error
        .get("details")?
        .as_array()?
        .iter()
        .find(|d| d.get("@type").and_then(Value::as_str).is_some_and(|t| t.ends_with("google.rpc.ErrorInfo")))?
        .get("reason")?
        .as_str()
}

pub(super) fn retry_delay(error: &Value) -> Option<u64> {
    let details = error.get("details")?.as_array()?;
    let info = details
        .iter()
        .find(|d| d.get("@type").and_then(Value::as_str).is_some_and(|t| t.ends_with("google.rpc.RetryInfo")))?;
    let delay = info.get("retryDelay")?.as_str()?.strip_suffix('s')?;
    let (whole, fraction) = delay.split_once('.').unwrap_or((delay, ""));
    let whole: u64 = whole.parse().ok()?;
    let round_up = fraction.bytes().any(|b| b != b'0');
    Some(whole + u64::from(round_up))
}
