//! The provider's wire types: the request Mesh sends, the answers and events it reads.

use super::*;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConverseRequest {
    pub(super) messages: Vec<Message>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) system: Vec<SystemBlock>,
    pub(super) inference_config: InferenceConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_config: Option<ToolConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) output_config: Option<OutputConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) additional_model_request_fields: Option<Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) request_metadata: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub(super) struct SystemBlock {
    pub(super) text: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Message {
    /// `user` or `assistant` (the turns hold no other speaker).
    pub(super) role: Speaker,
    pub(super) content: Vec<Block>,
}

/// A content block: a union, one key per kind.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum Block {
    Text(String),
    Image(Value),
    Document(Value),
    ToolUse(ToolUse),
    ToolResult(ToolResult),
    ReasoningContent(Value),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ToolUse {
    pub(super) tool_use_id: String,
    pub(super) name: String,
    #[serde(default)]
    pub(super) input: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ToolResult {
    pub(super) tool_use_id: String,
    pub(super) content: Vec<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct InferenceConfig {
    pub(super) max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) temperature: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) top_p: Option<Number>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) stop_sequences: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ToolConfig {
    pub(super) tools: Vec<BedrockTool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_choice: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BedrockTool {
    pub(super) tool_spec: ToolSpec,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ToolSpec {
    pub(super) name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) description: Option<String>,
    pub(super) input_schema: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) strict: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OutputConfig {
    pub(super) text_format: OutputFormat,
}

#[derive(Debug, Serialize)]
pub(super) struct OutputFormat {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) structure: OutputStructure,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OutputStructure {
    pub(super) json_schema: JsonSchemaDefinition,
}

/// The schema travels as a JSON string.
#[derive(Debug, Serialize)]
pub(super) struct JsonSchemaDefinition {
    pub(super) schema: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConverseResponse {
    pub(super) output: ConverseOutput,
    #[serde(default)]
    pub(super) stop_reason: Option<String>,
    #[serde(default)]
    pub(super) usage: BedrockUsage,
}

#[derive(Debug, Deserialize)]
pub(super) struct ConverseOutput {
    pub(super) message: OutputMessage,
}

#[derive(Debug, Deserialize)]
pub(super) struct OutputMessage {
    #[serde(default)]
    pub(super) content: Vec<OutputBlock>,
}

/// A content block of an answer; block kinds Mesh does not map (citations, guard content, ...)
/// are skipped.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum OutputBlock {
    Text(String),
    ToolUse(ToolUse),
    ReasoningContent(ReasoningBlock),
    #[serde(untagged)]
    Other(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum ReasoningBlock {
    ReasoningText(ReasoningText),
    RedactedContent(String),
    #[serde(untagged)]
    Other(serde::de::IgnoredAny),
}

impl ReasoningBlock {
    pub(super) fn deltas(self) -> Vec<Delta> {
        match self {
            ReasoningBlock::ReasoningText(ReasoningText { text, signature }) => {
                let mut deltas = Vec::new();
                if !text.is_empty() {
                    deltas.push(Delta::Reasoning(text));
                }
                if let Some(signature) = signature.filter(|s| !s.is_empty()) {
                    deltas.push(Delta::ReasoningState(signature));
                }
                deltas
            }
            ReasoningBlock::RedactedContent(data) => vec![Delta::ReasoningState(format!("{REDACTED_PREFIX}{data}"))],
            ReasoningBlock::Other(_) => Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ReasoningText {
    #[serde(default)]
    pub(super) text: String,
    #[serde(default)]
    pub(super) signature: Option<String>,
}

/// Token counts. For Claude, `inputTokens` excludes cache reads and writes; the Responses count is
/// the sum, with the reads as cached tokens.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BedrockUsage {
    #[serde(default)]
    pub(super) input_tokens: u64,
    #[serde(default)]
    pub(super) output_tokens: u64,
    #[serde(default)]
    pub(super) cache_read_input_tokens: u64,
    #[serde(default)]
    pub(super) cache_write_input_tokens: u64,
}

impl BedrockUsage {
    pub(super) fn tokens(&self) -> TokenUsage {
        TokenUsage {
            input_tokens: self
                .input_tokens
                .saturating_add(self.cache_read_input_tokens)
                .saturating_add(self.cache_write_input_tokens),
            cached_input_tokens: self.cache_read_input_tokens,
            output_tokens: self.output_tokens,
            reasoning_tokens: 0,
            cache_write_tokens: self.cache_write_input_tokens,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BlockStart {
    #[serde(default)]
    pub(super) content_block_index: u64,
    #[serde(default)]
    pub(super) start: Option<BlockStartKind>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BlockStartKind {
    #[serde(default)]
    pub(super) tool_use: Option<ToolUseStart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ToolUseStart {
    pub(super) tool_use_id: String,
    pub(super) name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BlockDelta {
    #[serde(default)]
    pub(super) content_block_index: u64,
    pub(super) delta: DeltaKind,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum DeltaKind {
    Text(String),
    ToolUse(ToolUseDelta),
    ReasoningContent(ReasoningDelta),
    #[serde(untagged)]
    Other(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
pub(super) struct ToolUseDelta {
    #[serde(default)]
    pub(super) input: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum ReasoningDelta {
    Text(String),
    Signature(String),
    RedactedContent(String),
    #[serde(untagged)]
    Other(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MessageStop {
    pub(super) stop_reason: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct StreamMetadata {
    #[serde(default)]
    pub(super) usage: BedrockUsage,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct BedrockErrorBody {
    #[serde(default)]
    pub(super) message: Option<String>,
    #[serde(default, rename = "Message")]
    pub(super) message_upper: Option<String>,
    #[serde(default, rename = "__type")]
    pub(super) kind: Option<String>,
}
