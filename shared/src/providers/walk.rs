//! The Responses `input`, parsed once into borrowed types, and the one walk over it that the
//! translators of message-style provider APIs (Chat, Anthropic, Gemini, Bedrock) share. The walk
//! owns the param paths (`input[i].content[j]`, `input[i].output[k]`) and the refusals common to
//! every provider (item references, unknown item and part types, media in system messages, tool
//! outputs with media where the provider takes text only); each translator implements
//! [`InputSink`] to build its own wire shapes. [`Turns`] is the alternating-turn merge that
//! Anthropic and Bedrock both need.

use serde_json::{json, Map, Value};

use super::unsupported;
use crate::error::GatewayError;

/// Who speaks a message: `developer` is a system speaker, and any role but `system`,
/// `developer` and `assistant` is the user (validation has refused unknown roles already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Speaker {
    System,
    User,
    Assistant,
}

impl Speaker {
    fn of(role: Option<&str>) -> Self {
        match role {
            Some("system" | "developer") => Speaker::System,
            Some("assistant") => Speaker::Assistant,
            _ => Speaker::User,
        }
    }

    /// The role's name in a message (`system`, `user`, `assistant`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Speaker::System => "system",
            Speaker::User => "user",
            Speaker::Assistant => "assistant",
        }
    }
}

/// An `input_image` part.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Image<'a> {
    pub url: Option<&'a str>,
    /// A non-null `file_id` (an upload no translated provider can read).
    pub file_id: Option<&'a Value>,
    /// A non-null `detail`.
    pub detail: Option<&'a Value>,
}

/// An `input_file` part.
#[derive(Debug, Clone, Copy)]
pub(crate) struct File<'a> {
    pub data: Option<&'a str>,
    pub url: Option<&'a str>,
    /// `file_id` when present at all (even null).
    pub file_id: Option<&'a Value>,
    pub filename: Option<&'a str>,
}

/// One content part of a message or of a function call output.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Part<'a> {
    /// `input_text`, `output_text` and `text` parts, and a `refusal`'s text.
    Text(&'a str),
    Image(Image<'a>),
    File(File<'a>),
    /// `input_audio`: its `input_audio` object (null when missing).
    Audio(&'a Value),
    /// A part of any other type (or none), kept by its type name.
    Other(&'a str),
}

impl<'a> Part<'a> {
    fn parse(part: &'a Value) -> Self {
        let text = |name: &str| part.get(name).and_then(Value::as_str);
        let present = |name: &str| part.get(name).filter(|v| !v.is_null());
        match text("type").unwrap_or_default() {
            "input_text" | "output_text" | "text" => Part::Text(text("text").unwrap_or_default()),
            "refusal" => Part::Text(text("refusal").unwrap_or_default()),
            "input_image" => {
                Part::Image(Image { url: text("image_url"), file_id: present("file_id"), detail: present("detail") })
            }
            "input_file" => Part::File(File {
                data: text("file_data"),
                url: text("file_url"),
                file_id: part.get("file_id"),
                filename: text("filename"),
            }),
            "input_audio" => Part::Audio(part.get("input_audio").unwrap_or(&Value::Null)),
            other => Part::Other(other),
        }
    }

    /// The part's type on the wire.
    pub(crate) fn kind(&self) -> &'a str {
        match self {
            Part::Text(_) => "input_text",
            Part::Image(_) => "input_image",
            Part::File(_) => "input_file",
            Part::Audio(_) => "input_audio",
            Part::Other(kind) => kind,
        }
    }
}

fn parts(list: &[Value]) -> Vec<Part<'_>> {
    list.iter().map(Part::parse).collect()
}

impl serde::Serialize for Speaker {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// A function call from the conversation's history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FunctionCall<'a> {
    pub call_id: &'a str,
    pub name: &'a str,
    /// The arguments as given: a JSON object encoded as a string.
    pub arguments: &'a str,
}

impl FunctionCall<'_> {
    /// The arguments as the object a provider's tool input wants (`{}` when blank).
    pub(crate) fn arguments_object(&self, param: &str) -> Result<Value, GatewayError> {
        if self.arguments.trim().is_empty() {
            return Ok(json!({}));
        }
        match serde_json::from_str::<Value>(self.arguments) {
            Ok(object @ Value::Object(_)) => Ok(object),
            _ => Err(GatewayError::invalid(
                "invalid_value",
                format!("{param}.arguments"),
                format!("`{param}.arguments` must be a JSON object encoded as a string."),
            )),
        }
    }
}

/// A reasoning item from the conversation's history.
#[derive(Debug, Clone)]
pub(crate) struct Reasoning<'a> {
    /// The summary texts (the thinking text the item was made from).
    pub summary: Vec<&'a str>,
    /// The provider's opaque reasoning state, when not empty.
    pub encrypted_content: Option<&'a str>,
}

impl Reasoning<'_> {
    pub(crate) fn summary_text(&self) -> String {
        self.summary.concat()
    }
}

/// A message's content.
#[derive(Debug, Clone)]
pub(crate) enum Content<'a> {
    Text(&'a str),
    Parts(Vec<Part<'a>>),
}

/// One input item.
#[derive(Debug, Clone)]
pub(crate) enum Item<'a> {
    Message {
        speaker: Speaker,
        content: Content<'a>,
    },
    FunctionCall(FunctionCall<'a>),
    FunctionCallOutput {
        call_id: &'a str,
        /// A string (or nothing: empty), or a list of parts.
        output: Content<'a>,
    },
    Reasoning(Reasoning<'a>),
    /// `item_reference`: Mesh resolves references before translation, so none reaches a
    /// translator from the gateway; one given anyway is refused.
    Reference,
    /// An item of any other type, kept by its type name (for the refusal that names it).
    Other {
        kind: &'a str,
    },
}

impl<'a> Item<'a> {
    fn parse(item: &'a Value) -> Self {
        let text = |name: &str| item.get(name).and_then(Value::as_str);
        match text("type").unwrap_or("message") {
            "message" => Item::Message {
                speaker: Speaker::of(text("role")),
                content: match item.get("content") {
                    Some(Value::String(text)) => Content::Text(text),
                    Some(Value::Array(list)) => Content::Parts(parts(list)),
                    _ => Content::Parts(Vec::new()),
                },
            },
            "function_call" => Item::FunctionCall(FunctionCall {
                call_id: text("call_id").unwrap_or_default(),
                name: text("name").unwrap_or_default(),
                arguments: text("arguments").unwrap_or_default(),
            }),
            "function_call_output" => Item::FunctionCallOutput {
                call_id: text("call_id").unwrap_or_default(),
                output: match item.get("output") {
                    Some(Value::Array(list)) => Content::Parts(parts(list)),
                    _ => Content::Text(text("output").unwrap_or_default()),
                },
            },
            "reasoning" => Item::Reasoning(Reasoning {
                summary: item
                    .get("summary")
                    .and_then(Value::as_array)
                    .map(|list| list.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect())
                    .unwrap_or_default(),
                encrypted_content: text("encrypted_content").filter(|s| !s.is_empty()),
            }),
            "item_reference" => Item::Reference,
            kind => Item::Other { kind },
        }
    }
}

/// A request's `input`, parsed once.
#[derive(Debug, Clone)]
pub(crate) enum Input<'a> {
    /// A string: one user message.
    Text(&'a str),
    Items(Vec<Item<'a>>),
}

impl<'a> Input<'a> {
    /// The `input` of a request body (none is an empty list).
    pub(crate) fn of(body: &'a Map<String, Value>) -> Result<Self, GatewayError> {
        match body.get("input") {
            None | Some(Value::Null) => Ok(Input::Items(Vec::new())),
            Some(Value::String(text)) => Ok(Input::Text(text)),
            Some(Value::Array(items)) => Ok(Input::Items(items.iter().map(Item::parse).collect())),
            Some(_) => Err(GatewayError::invalid("invalid_type", "input", "`input` must be a string or an array.")),
        }
    }
}

/// A function call output as the sink receives it.
#[derive(Debug)]
pub(crate) enum Output<B> {
    /// A string, or a list of text parts joined by newlines (for providers taking text only).
    Text(String),
    /// A list of parts, as the sink's blocks (for providers taking parts).
    Blocks(Vec<B>),
}

/// What a translator builds from the walk. Every method gets the param path of what it is
/// given, for its own refusals.
pub(crate) trait InputSink<'a> {
    /// The translator's content block.
    type Block;
    /// Whether function call outputs may hold parts other than text (else a list of parts is
    /// flattened to its text, and media in it are refused).
    const TOOL_OUTPUT_PARTS: bool;

    /// One content part of a user or assistant message (or of a function call output, as the
    /// user), at `param`. `None` leaves it out (an empty text a provider refuses, say).
    fn block(&mut self, param: &str, speaker: Speaker, part: &Part<'a>) -> Result<Option<Self::Block>, GatewayError>;
    /// A system or developer message: its texts, in order.
    fn system(&mut self, texts: Vec<&'a str>) -> Result<(), GatewayError>;
    /// A user or assistant message: its blocks, in order.
    fn message(&mut self, speaker: Speaker, blocks: Vec<Self::Block>) -> Result<(), GatewayError>;
    fn function_call(&mut self, param: &str, call: &FunctionCall<'a>) -> Result<(), GatewayError>;
    fn function_call_output(
        &mut self,
        param: &str,
        call_id: &'a str,
        output: Output<Self::Block>,
    ) -> Result<(), GatewayError>;
    fn reasoning(&mut self, param: &str, reasoning: &Reasoning<'a>) -> Result<(), GatewayError>;
}

/// Walks `input` in order into `sink`, refusing for `provider` what no translation carries.
pub(crate) fn walk<'a, S: InputSink<'a>>(provider: &str, input: &Input<'a>, sink: &mut S) -> Result<(), GatewayError> {
    let items = match input {
        Input::Text(text) => {
            let blocks = sink.block("input", Speaker::User, &Part::Text(text))?;
            return sink.message(Speaker::User, blocks.into_iter().collect());
        }
        Input::Items(items) => items,
    };
    for (i, item) in items.iter().enumerate() {
        let param = format!("input[{i}]");
        match item {
            Item::Message { speaker: Speaker::System, content } => {
                sink.system(system_texts(provider, &param, content)?)?
            }
            Item::Message { speaker, content } => {
                let blocks = blocks(provider, &format!("{param}.content"), *speaker, content, sink)?;
                sink.message(*speaker, blocks)?;
            }
            Item::FunctionCall(call) => sink.function_call(&param, call)?,
            Item::FunctionCallOutput { call_id, output } => {
                let param_output = format!("{param}.output");
                let output = match output {
                    Content::Parts(_) if S::TOOL_OUTPUT_PARTS => {
                        Output::Blocks(blocks(provider, &param_output, Speaker::User, output, sink)?)
                    }
                    Content::Parts(parts) => Output::Text(output_text(provider, &param_output, parts)?),
                    Content::Text(text) => Output::Text((*text).to_owned()),
                };
                sink.function_call_output(&param, call_id, output)?;
            }
            Item::Reasoning(reasoning) => sink.reasoning(&param, reasoning)?,
            Item::Reference => {
                return Err(unsupported(
                    "unsupported_parameter",
                    &param,
                    provider,
                    "`item_reference` input items (send the items themselves)",
                ))
            }
            Item::Other { kind, .. } => {
                return Err(unsupported(
                    "unsupported_parameter",
                    &format!("{param}.type"),
                    provider,
                    &format!("`{kind}` input items"),
                ))
            }
        }
    }
    Ok(())
}

/// The refusal of a part a provider cannot carry (at `param`, the part's own path).
pub(crate) fn unsupported_part(provider: &str, param: &str, part: &Part<'_>) -> GatewayError {
    unsupported(
        "unsupported_parameter",
        &format!("{param}.type"),
        provider,
        &format!("`{}` content parts", part.kind()),
    )
}

fn blocks<'a, S: InputSink<'a>>(
    provider: &str,
    param: &str,
    speaker: Speaker,
    content: &Content<'a>,
    sink: &mut S,
) -> Result<Vec<S::Block>, GatewayError> {
    match content {
        Content::Text(text) => Ok(sink.block(param, speaker, &Part::Text(text))?.into_iter().collect()),
        Content::Parts(parts) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let param = format!("{param}[{j}]");
                if let Part::Other(_) = part {
                    return Err(unsupported_part(provider, &param, part));
                }
                blocks.extend(sink.block(&param, speaker, part)?);
            }
            Ok(blocks)
        }
    }
}

/// The texts of a system or developer message: text parts only.
fn system_texts<'a>(provider: &str, param: &str, content: &Content<'a>) -> Result<Vec<&'a str>, GatewayError> {
    match content {
        Content::Text(text) => Ok(vec![text]),
        Content::Parts(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| match part {
                Part::Text(text) => Ok(*text),
                Part::Other(_) => Err(unsupported_part(provider, &format!("{param}.content[{j}]"), part)),
                _ => Err(unsupported(
                    "unsupported_parameter",
                    &format!("{param}.content[{j}].type"),
                    provider,
                    &format!("`{}` parts in system or developer messages (text only)", part.kind()),
                )),
            })
            .collect(),
    }
}

/// A function call output's parts as one text, for a provider whose tool results take text
/// only: the texts joined by newlines; media are refused naming the provider and the part.
fn output_text(provider: &str, param: &str, parts: &[Part<'_>]) -> Result<String, GatewayError> {
    let mut texts = Vec::with_capacity(parts.len());
    for (k, part) in parts.iter().enumerate() {
        match part {
            Part::Text(text) => texts.push(*text),
            Part::Other(_) => return Err(unsupported_part(provider, &format!("{param}[{k}]"), part)),
            _ => {
                return Err(unsupported(
                    "unsupported_parameter",
                    &format!("{param}[{k}].type"),
                    provider,
                    &format!("`{}` parts in function call outputs (its tool results take text only)", part.kind()),
                ))
            }
        }
    }
    Ok(texts.join("\n"))
}

/// Strictly alternating user and assistant turns, as Anthropic Messages and Bedrock Converse
/// want them: consecutive blocks of one speaker merge into one turn, reasoning blocks wait for
/// the assistant content they precede (and are dropped when a user turn comes first: they have
/// nothing to attach to), and tool results lead each user turn.
#[derive(Debug)]
pub(crate) struct Turns<B> {
    turns: Vec<(Speaker, Vec<B>)>,
    reasoning: Vec<B>,
}

impl<B> Default for Turns<B> {
    fn default() -> Self {
        Turns { turns: Vec::new(), reasoning: Vec::new() }
    }
}

impl<B> Turns<B> {
    /// Appends blocks of `speaker` (the user or the assistant).
    pub(crate) fn push(&mut self, speaker: Speaker, blocks: Vec<B>) {
        if blocks.is_empty() {
            return;
        }
        let blocks = if speaker == Speaker::Assistant {
            let mut all = std::mem::take(&mut self.reasoning);
            all.extend(blocks);
            all
        } else {
            self.reasoning.clear();
            blocks
        };
        match self.turns.last_mut() {
            Some((last, content)) if *last == speaker => content.extend(blocks),
            _ => self.turns.push((speaker, blocks)),
        }
    }

    /// Holds a reasoning block for the next assistant content.
    pub(crate) fn reason(&mut self, block: B) {
        self.reasoning.push(block);
    }

    /// The turns as the provider's messages, tool results first in each user turn; a provider
    /// needs at least one.
    pub(crate) fn finish<M>(
        mut self,
        provider: &str,
        is_tool_result: impl Fn(&B) -> bool,
        message: impl Fn(Speaker, Vec<B>) -> M,
    ) -> Result<Vec<M>, GatewayError> {
        if self.turns.is_empty() {
            return Err(GatewayError::invalid(
                "invalid_value",
                "input",
                format!("The provider `{provider}` needs at least one user or assistant message in `input`."),
            ));
        }
        for (speaker, blocks) in &mut self.turns {
            if *speaker == Speaker::User {
                blocks.sort_by_key(|block| !is_tool_result(block));
            }
        }
        Ok(self.turns.into_iter().map(|(speaker, blocks)| message(speaker, blocks)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that writes what it is given as lines.
    #[derive(Default)]
    struct Lines(Vec<String>);

    impl<'a> InputSink<'a> for Lines {
        type Block = String;
        const TOOL_OUTPUT_PARTS: bool = false;

        fn block(&mut self, param: &str, _: Speaker, part: &Part<'a>) -> Result<Option<String>, GatewayError> {
            Ok(match part {
                Part::Text("") => None,
                Part::Text(text) => Some(format!("{param}={text}")),
                other => Some(format!("{param}={}", other.kind())),
            })
        }
        fn system(&mut self, texts: Vec<&'a str>) -> Result<(), GatewayError> {
            self.0.push(format!("system {}", texts.join("|")));
            Ok(())
        }
        fn message(&mut self, speaker: Speaker, blocks: Vec<String>) -> Result<(), GatewayError> {
            self.0.push(format!("{} {}", speaker.name(), blocks.join(" ")));
            Ok(())
        }
        fn function_call(&mut self, param: &str, call: &FunctionCall<'a>) -> Result<(), GatewayError> {
            self.0.push(format!("call {} {} {}", call.call_id, call.name, call.arguments_object(param)?));
            Ok(())
        }
        fn function_call_output(
            &mut self,
            _: &str,
            call_id: &'a str,
            output: Output<String>,
        ) -> Result<(), GatewayError> {
            let Output::Text(text) = output else { return Ok(()) };
            self.0.push(format!("output {call_id} {text}"));
            Ok(())
        }
        fn reasoning(&mut self, _: &str, reasoning: &Reasoning<'a>) -> Result<(), GatewayError> {
            self.0.push(format!("reasoning {} {:?}", reasoning.summary_text(), reasoning.encrypted_content));
            Ok(())
        }
    }

    fn walked(input: Value) -> Result<Vec<String>, (String, String)> {
        let body = Map::from_iter([("input".to_owned(), input)]);
        let mut sink = Lines::default();
        let input = Input::of(&body).map_err(|e| (e.body()["code"].to_string(), e.body()["param"].to_string()))?;
        walk("acme", &input, &mut sink).map_err(|e| {
            assert!(e.body()["message"].as_str().unwrap_or_default().contains("`acme`") || e.status() == 400);
            (
                e.body()["code"].as_str().unwrap_or_default().to_owned(),
                e.body()["param"].as_str().unwrap_or_default().to_owned(),
            )
        })?;
        Ok(sink.0)
    }

    #[test]
    fn walks_items_in_order_with_their_paths() {
        let lines = walked(json!([
            {"role": "developer", "content": [{"type": "input_text", "text": "be brief"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}, {"type": "input_text", "text": ""},
                {"type": "input_image", "image_url": "https://x/y.png"}]},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "a"}, {"type": "summary_text", "text": "b"}], "encrypted_content": ""},
            {"type": "message", "role": "assistant", "content": "sure"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"x\":1}"},
            {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "18C"}, {"type": "output_text", "text": "sunny"}]}
        ]))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            lines,
            [
                "system be brief",
                "user input[1].content[0]=hi input[1].content[2]=input_image",
                "reasoning ab None",
                "assistant input[3].content=sure",
                "call c1 f {\"x\":1}",
                "output c1 18C\nsunny",
            ]
        );
        assert_eq!(walked(json!("hello")).unwrap_or_default(), ["user input=hello"]);
    }

    #[test]
    fn shared_refusals_name_the_path() {
        for (input, code, param) in [
            (json!([{"type": "item_reference", "id": "msg_1"}]), "unsupported_parameter", "input[0]"),
            (
                json!([{"role": "user", "content": "x"}, {"type": "web_search_call", "id": "ws"}]),
                "unsupported_parameter",
                "input[1].type",
            ),
            (
                json!([{"role": "user", "content": [{"type": "video"}]}]),
                "unsupported_parameter",
                "input[0].content[0].type",
            ),
            (
                json!([{"role": "system", "content": [{"type": "input_text", "text": "a"}, {"type": "input_image", "image_url": "https://x"}]}]),
                "unsupported_parameter",
                "input[0].content[1].type",
            ),
            (
                json!([{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_file", "file_data": "x"}]}]),
                "unsupported_parameter",
                "input[0].output[0].type",
            ),
            (
                json!([{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]),
                "invalid_value",
                "input[0].arguments",
            ),
        ] {
            assert_eq!(walked(input.clone()), Err((code.to_owned(), param.to_owned())), "{input}");
        }
    }

    #[test]
    fn turns_alternate_and_carry_reasoning_to_the_assistant() {
        assert!(Turns::<&str>::default().finish("acme", |_| false, |s, b| (s, b)).is_err(), "none is refused");
        let mut turns = Turns::default();
        turns.reason("dropped");
        turns.push(Speaker::User, vec!["q"]);
        turns.push(Speaker::User, vec!["text", "result"]);
        turns.reason("thought");
        turns.push(Speaker::Assistant, vec![]);
        turns.push(Speaker::Assistant, vec!["a"]);
        turns.push(Speaker::Assistant, vec!["b"]);
        let turns =
            turns.finish("acme", |block| *block == "result", |speaker, blocks| (speaker, blocks)).unwrap_or_default();
        assert_eq!(
            turns,
            vec![(Speaker::User, vec!["result", "q", "text"]), (Speaker::Assistant, vec!["thought", "a", "b"])]
        );
    }
}
