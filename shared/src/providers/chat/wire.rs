//! The provider's wire types: the request Mesh sends, the answers and events it reads.

use super::*;

// The request Mesh sends, and the completion or chunk it reads (one shape serves both: a
// completion's `message` and a chunk's `delta` carry the same fields).

#[derive(Debug, Serialize)]
pub(super) struct ChatRequest {
    pub(super) model: String,
    pub(super) messages: Vec<ChatMessage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) tools: Vec<ChatTool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_tokens: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) temperature: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) top_p: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) seed: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reasoning_effort: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) verbosity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) safety_identifier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) prompt_cache_key: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) service_tier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) stop: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) plugins: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) stream_options: Option<ChatStreamOptions>,
    /// Provider extras the client sent, forwarded verbatim.
    #[serde(flatten)]
    pub(super) extra: Map<String, Value>,
}

#[derive(Debug, Serialize)]
pub(super) struct ChatStreamOptions {
    pub(super) include_usage: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct ChatMessage {
    pub(super) role: &'static str,
    /// A string or content parts; `null` for an assistant turn of tool calls only.
    pub(super) content: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) tool_calls: Vec<ChatToolCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_call_id: Option<String>,
}

impl ChatMessage {
    pub(super) fn new(role: &'static str, content: Value) -> Self {
        ChatMessage { role, content, tool_calls: Vec::new(), tool_call_id: None }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct ChatToolCall {
    pub(super) id: String,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) function: ChatFunctionCall,
}

#[derive(Debug, Serialize)]
pub(super) struct ChatFunctionCall {
    pub(super) name: String,
    pub(super) arguments: String,
}

#[derive(Debug, Serialize)]
pub(super) struct ChatTool {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) function: Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ChatCompletion {
    /// Empty (or `null`, on vLLM) in the usage chunk of a stream.
    pub(super) choices: Option<Vec<ChatChoice>>,
    pub(super) usage: Option<ChatUsage>,
    /// OpenRouter and others report failures in a 200 body or a stream chunk.
    pub(super) error: Option<Value>,
    /// Groq's streams carried usage here before `stream_options` existed.
    pub(super) x_groq: Option<GroqExtras>,
}

impl ChatCompletion {
    pub(super) fn first_choice(&self) -> Option<&ChatChoice> {
        self.choices.as_ref()?.iter().find(|c| c.index.unwrap_or(0) == 0)
    }

    pub(super) fn usage(&self) -> Option<TokenUsage> {
        self.usage.as_ref().or_else(|| self.x_groq.as_ref()?.usage.as_ref()).map(ChatUsage::tokens)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct GroqExtras {
    pub(super) usage: Option<ChatUsage>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ChatChoice {
    pub(super) index: Option<u64>,
    pub(super) message: Option<ChatAnswer>,
    pub(super) delta: Option<ChatAnswer>,
    pub(super) finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ChatAnswer {
    /// A string, or (Mistral) a list of typed chunks.
    pub(super) content: Option<Value>,
    /// The text fields are read as any JSON value and used only when they are strings, so an
    /// unexpected shape from some server does not fail the whole chunk.
    pub(super) refusal: Option<Value>,
    /// DeepSeek, xAI, vLLM (older), Together.
    pub(super) reasoning_content: Option<Value>,
    /// OpenRouter, Groq, vLLM (newer), Ollama.
    pub(super) reasoning: Option<Value>,
    pub(super) tool_calls: Option<Vec<ChatToolCallPiece>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ChatToolCallPiece {
    pub(super) index: Option<u64>,
    pub(super) id: Option<String>,
    pub(super) function: Option<ChatFunctionPiece>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ChatFunctionPiece {
    pub(super) name: Option<String>,
    pub(super) arguments: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ChatUsage {
    pub(super) prompt_tokens: Option<u64>,
    pub(super) completion_tokens: Option<u64>,
    pub(super) prompt_tokens_details: Option<ChatPromptDetails>,
    pub(super) completion_tokens_details: Option<ChatCompletionDetails>,
    /// DeepSeek's name for cached prompt tokens.
    pub(super) prompt_cache_hit_tokens: Option<u64>,
}

impl ChatUsage {
    pub(super) fn tokens(&self) -> TokenUsage {
        let cached = self.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens).or(self.prompt_cache_hit_tokens);
        TokenUsage {
            input_tokens: self.prompt_tokens.unwrap_or(0),
            cached_input_tokens: cached.unwrap_or(0),
            output_tokens: self.completion_tokens.unwrap_or(0),
            reasoning_tokens: self.completion_tokens_details.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0),
            cache_write_tokens: self.prompt_tokens_details.as_ref().and_then(|d| d.cache_write_tokens).unwrap_or(0),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ChatPromptDetails {
    pub(super) cached_tokens: Option<u64>,
    /// Prompt tokens written to the provider's cache (OpenAI, 2026).
    pub(super) cache_write_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ChatCompletionDetails {
    pub(super) reasoning_tokens: Option<u64>,
}
