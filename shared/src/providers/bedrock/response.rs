//! Response in: a complete answer and the stream decoder, as deltas.

use super::*;

pub(super) fn finish_reason(stop_reason: Option<&str>) -> FinishReason {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => FinishReason::Length,
        Some("guardrail_intervened" | "content_filtered") => FinishReason::ContentFilter,
        // end_turn, stop_sequence, tool_use (the calls are the output).
        _ => FinishReason::Stop,
    }
}

// ---------------------------------------------------------------------------------------------
// Stream in

/// Decodes one ConverseStream: `messageStop` carries the stop reason and `metadata` (which
/// follows it) the usage, so the finish is given once both have come (or at the end of the stream).
#[derive(Debug, Default)]
pub(super) struct BedrockDecoder {
    pub(super) stop_reason: Option<String>,
    pub(super) finished: bool,
}

impl DeltaDecoder for BedrockDecoder {
    fn decode(&mut self, event: SseEvent) -> Result<Vec<Delta>, StreamFault> {
        let name = event.event.unwrap_or_default();
        if let Some(kind) = name.strip_prefix("exception:").or_else(|| name.strip_prefix("error:")) {
            let message = serde_json::from_str::<BedrockErrorBody>(&event.data)
                .ok()
                .and_then(|body| body.message.or(body.message_upper))
                .unwrap_or_default();
            self.finished = true;
            return Ok(vec![Delta::Finish(FinishReason::Error(format!("{message} ({kind})")))]);
        }
        let malformed = |e: serde_json::Error| StreamFault::Malformed(format!("bedrock `{name}` event: {e}"));
        Ok(match name.as_str() {
            "contentBlockStart" => {
                let start: BlockStart = serde_json::from_str(&event.data).map_err(malformed)?;
                match start.start {
                    Some(BlockStartKind { tool_use: Some(call) }) => vec![Delta::ToolCallStart {
                        index: start.content_block_index,
                        call_id: call.tool_use_id,
                        name: call.name,
                    }],
                    _ => Vec::new(),
                }
            }
            "contentBlockDelta" => {
                let delta: BlockDelta = serde_json::from_str(&event.data).map_err(malformed)?;
                let index = delta.content_block_index;
                match delta.delta {
                    DeltaKind::Text(text) => vec![Delta::Text(text)],
                    DeltaKind::ToolUse(ToolUseDelta { input }) => {
                        vec![Delta::ToolCallArguments { index, fragment: input }]
                    }
                    DeltaKind::ReasoningContent(reasoning) => match reasoning {
                        ReasoningDelta::Text(text) => vec![Delta::Reasoning(text)],
                        ReasoningDelta::Signature(signature) => vec![Delta::ReasoningState(signature)],
                        ReasoningDelta::RedactedContent(data) => {
                            vec![Delta::ReasoningState(format!("{REDACTED_PREFIX}{data}"))]
                        }
                        ReasoningDelta::Other(_) => Vec::new(),
                    },
                    DeltaKind::Other(_) => Vec::new(),
                }
            }
            "messageStop" => {
                let stop: MessageStop = serde_json::from_str(&event.data).map_err(malformed)?;
                self.stop_reason = Some(stop.stop_reason);
                Vec::new()
            }
            "metadata" => {
                let metadata: StreamMetadata = serde_json::from_str(&event.data).map_err(malformed)?;
                let mut deltas = vec![Delta::Usage(metadata.usage.tokens())];
                if let Some(stop) = &self.stop_reason {
                    self.finished = true;
                    deltas.push(Delta::Finish(finish_reason(Some(stop))));
                }
                deltas
            }
            // messageStart, contentBlockStop and event types added later.
            _ => Vec::new(),
        })
    }

    fn finish(&mut self) -> Vec<Delta> {
        match &self.stop_reason {
            // A stream that stopped but sent no metadata: the answer is complete, the usage unknown.
            Some(stop) if !self.finished => {
                self.finished = true;
                vec![Delta::Finish(finish_reason(Some(stop)))]
            }
            _ => Vec::new(),
        }
    }
}
