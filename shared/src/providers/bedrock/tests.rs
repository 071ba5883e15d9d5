//! Tests of the `bedrock` provider API: requests out (signed), answers and event streams in, errors.

use std::time::SystemTime;

use super::*;
use crate::config::{ProviderApi, Secret};
use crate::providers::assemble::{Assembler, ResponseContext};
use aws_smithy_types::event_stream::{Header, HeaderValue, Message as Frame};

fn provider() -> ProviderConfig {
    ProviderConfig {
        name: "bedrock".to_owned(),
        api: ProviderApi::Bedrock,
        base_url: "https://bedrock-runtime.eu-west-1.amazonaws.com/".to_owned(),
        api_key: None,
        api_key_secret_arn: None,
        token_delay: std::time::Duration::ZERO,
    }
}

fn row(upstream: &str, max_output_tokens: Option<u64>) -> ModelPrice {
    serde_json::from_value(json!({
        "model": "anthropic/claude-sonnet-4", "provider": "bedrock", "upstream_model": upstream,
        "max_output_tokens": max_output_tokens
    }))
    .unwrap()
}

const CLAUDE: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

/// Translates with the S3 bucket `bucket` allowed.
fn translate_with(upstream: &str, body: Value) -> Result<Value, GatewayError> {
    let bedrock = Bedrock::with_s3_buckets(vec!["bucket".to_owned()]);
    let request = bedrock.request(&provider(), &row(upstream, Some(16_384)), body.as_object().unwrap(), false)?;
    Ok(serde_json::from_slice(&request.body).unwrap())
}

#[test]
fn s3_sources_need_an_allowed_bucket() {
    let image = |url: &str| {
        json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "x"},
            {"type": "input_image", "image_url": url}]}]})
    };
    let refused = |bedrock: &Bedrock, body: Value| {
        let err = bedrock.request(&provider(), &row(CLAUDE, None), body.as_object().unwrap(), false).unwrap_err();
        assert_eq!((err.status().as_u16(), err.kind()), (400, "invalid_value"));
        err.body()
    };
    let none = Bedrock::default();
    let body = refused(&none, image("s3://bucket/cat.png"));
    assert_eq!(body["param"], "input[0].content[1].image_url");
    assert!(body["message"].as_str().unwrap().contains("MESH_BEDROCK_S3_BUCKETS"));
    let allowed = Bedrock::with_s3_buckets(vec!["bucket".to_owned()]);
    assert!(allowed
        .request(&provider(), &row(CLAUDE, None), image("s3://bucket/a/cat.png").as_object().unwrap(), false)
        .is_ok());
    for url in ["s3://other/cat.png", "s3://bucket.evil/cat.png", "s3://bucket", "s3://bucket/", "s3://BUCKET/cat.png"]
    {
        refused(&allowed, image(url));
    }
    let long = format!("s3://{}/cat.png", "b".repeat(5000));
    assert!(!refused(&allowed, image(&long))["message"].as_str().unwrap().contains("bbbb"), "not echoed");
    // Tool outputs carry images too.
    let output = json!({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image", "image_url": "s3://other/x.png"}]}],
            "tools": [{"type": "function", "name": "f"}]});
    assert_eq!(refused(&allowed, output)["param"], "input[1].output[0].image_url");
}

fn translate(body: Value) -> Result<Value, GatewayError> {
    translate_with(CLAUDE, body)
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": [{"text": text}]})
}

/// JSON pointers into a Converse request and the values expected there.
type Pointers = Vec<(&'static str, Value)>;

/// Each case: a Responses body and JSON pointers into the Converse request it must produce
/// (`Value::Null` = absent).
#[test]
fn request_translation_table() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Weather", "parameters": schema, "strict": true}]);
    let call = json!({"type": "function_call", "call_id": "tooluse_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"});
    let output = json!({"type": "function_call_output", "call_id": "tooluse_1", "output": "18C"});
    let cases: Vec<(&str, Value, Pointers)> = vec![
        (
            "a string input is one user message; the row gives maxTokens",
            json!({"input": "hi"}),
            vec![
                ("/messages", json!([user("hi")])),
                ("/inferenceConfig", json!({"maxTokens": 16_384})),
                ("/system", Value::Null),
                ("/toolConfig", Value::Null),
                ("/additionalModelRequestFields", Value::Null),
                ("/outputConfig", Value::Null),
            ],
        ),
        (
            "sampling, stop sequences and the user",
            json!({"input": "hi", "max_output_tokens": 300, "temperature": 0.5, "top_p": 0.9, "stop": ["END"], "user": "u-1"}),
            vec![
                (
                    "/inferenceConfig",
                    json!({"maxTokens": 300, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]}),
                ),
                ("/requestMetadata", json!({"user": "u-1"})),
            ],
        ),
        (
            "instructions, system and developer messages become system blocks; turns of one role merge",
            json!({"instructions": "Be brief.", "input": [
                {"role": "system", "content": "Sys."},
                {"role": "user", "content": "a"},
                {"role": "user", "content": [{"type": "input_text", "text": "b"}, {"type": "input_text", "text": " "}]},
                {"role": "developer", "content": "Dev."},
                {"role": "assistant", "content": [{"type": "output_text", "text": "c"}]}
            ]}),
            vec![
                ("/system", json!([{"text": "Be brief."}, {"text": "Sys."}, {"text": "Dev."}])),
                (
                    "/messages",
                    json!([{"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
                        {"role": "assistant", "content": [{"text": "c"}]}]),
                ),
            ],
        ),
        (
            "images and PDFs become bytes",
            json!({"input": [{"role": "user", "content": [
                {"type": "input_image", "image_url": "data:image/jpeg;base64,/9j/4AAQ"},
                {"type": "input_image", "image_url": "s3://bucket/cat.png"},
                {"type": "input_file", "filename": "report.v2.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}
            ]}]}),
            vec![(
                "/messages/0/content",
                json!([
                    {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}},
                    {"image": {"format": "png", "source": {"s3Location": {"uri": "s3://bucket/cat.png"}}}},
                    {"document": {"format": "pdf", "name": "report-v2", "source": {"bytes": "JVBERi0="}}}
                ]),
            )],
        ),
        (
            "a function round trip: toolUse in the assistant turn, toolResult first in the user turn",
            json!({"input": [{"role": "user", "content": "Weather?"}, call, output.clone(),
                    {"role": "user", "content": "And tomorrow?"}], "tools": tools}),
            vec![(
                "/messages",
                json!([
                    user("Weather?"),
                    {"role": "assistant", "content": [{"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}}]},
                    {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "18C"}]}}, {"text": "And tomorrow?"}]}
                ]),
            )],
        ),
        (
            "function tools with strict schemas; tool_choice required → any",
            json!({"input": "hi", "tools": tools, "tool_choice": "required"}),
            vec![(
                "/toolConfig",
                json!({"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather",
                        "inputSchema": {"json": schema}, "strict": true}}], "toolChoice": {"any": {}}}),
            )],
        ),
        (
            "a named function",
            json!({"input": "hi", "tools": tools, "tool_choice": {"type": "function", "name": "get_weather"}}),
            vec![("/toolConfig/toolChoice", json!({"tool": {"name": "get_weather"}}))],
        ),
        (
            "auto",
            json!({"input": "hi", "tools": tools, "tool_choice": "auto"}),
            vec![("/toolConfig/toolChoice", json!({"auto": {}}))],
        ),
        (
            "function calls in the history without tools: the functions named there are declared",
            json!({"input": [{"role": "user", "content": "Weather?"}, call.clone(), output.clone(), {"role": "user", "content": "Thanks"}]}),
            vec![(
                "/toolConfig",
                json!({"tools": [{"toolSpec": {"name": "get_weather", "description": "A function called earlier in this conversation.",
                        "inputSchema": {"json": {"type": "object"}}}}]}),
            )],
        ),
        (
            "a user outside Bedrock's metadata alphabet is reduced to it",
            json!({"input": "hi", "user": "R&D (Zoë's team)"}),
            vec![("/requestMetadata", json!({"user": "R_D _Zo__s team_"}))],
        ),
        (
            "safety_identifier → requestMetadata.user",
            json!({"input": "hi", "safety_identifier": "sid-3f9a"}),
            vec![("/requestMetadata", json!({"user": "sid-3f9a"})), ("/safety_identifier", Value::Null)],
        ),
        (
            "user is preferred to safety_identifier",
            json!({"input": "hi", "user": "u-1", "safety_identifier": "sid-3f9a"}),
            vec![("/requestMetadata", json!({"user": "u-1"}))],
        ),
        (
            "exact no-ops are accepted and not sent",
            json!({"input": "hi", "truncation": "disabled", "top_logprobs": 0, "prompt_cache_key": "k",
                    "include": ["reasoning.encrypted_content"], "service_tier": "default",
                    "stream_options": {"include_obfuscation": false}, "text": {"verbosity": "medium"}}),
            vec![("/truncation", Value::Null), ("/prompt_cache_key", Value::Null), ("/serviceTier", Value::Null)],
        ),
        (
            "reasoning effort max → the largest Claude budget",
            json!({"input": "hi", "reasoning": {"effort": "max"}}),
            vec![("/additionalModelRequestFields", json!({"thinking": {"type": "enabled", "budget_tokens": 59_904}}))],
        ),
        (
            "reasoning effort none → no thinking",
            json!({"input": "hi", "reasoning": {"effort": "none"}}),
            vec![("/additionalModelRequestFields", Value::Null)],
        ),
        (
            "none without tool blocks leaves the tools out",
            json!({"input": "hi", "tools": tools, "tool_choice": "none"}),
            vec![("/toolConfig", Value::Null)],
        ),
        (
            "a JSON schema format becomes enforced structured output, the schema as a string",
            json!({"input": "hi", "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": true}}}),
            vec![(
                "/outputConfig",
                json!({"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {"schema": "{\"type\":\"object\"}", "name": "answer"}}}}),
            )],
        ),
        (
            "json_object becomes an instruction",
            json!({"input": "hi", "text": {"format": {"type": "json_object"}}}),
            vec![(
                "/system/0/text",
                json!("Answer with a single valid JSON object and nothing else (no prose, no code fences)."),
            )],
        ),
        (
            "reasoning effort → a thinking budget for Claude, maxTokens kept above it",
            json!({"input": "hi", "reasoning": {"effort": "high"}, "max_output_tokens": 1000}),
            vec![
                ("/additionalModelRequestFields", json!({"thinking": {"type": "enabled", "budget_tokens": 16_384}})),
                ("/inferenceConfig/maxTokens", json!(17_384)),
            ],
        ),
        (
            "signed reasoning goes back before the assistant content it preceded",
            json!({"input": [
                {"role": "user", "content": "2+2?"},
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Add."}], "encrypted_content": "sig=="},
                {"type": "reasoning", "summary": [], "encrypted_content": "redacted:b64data"},
                {"role": "assistant", "content": "4"},
                {"role": "user", "content": "thanks"}
            ]}),
            vec![(
                "/messages/1",
                json!({"role": "assistant", "content": [
                    {"reasoningContent": {"reasoningText": {"text": "Add.", "signature": "sig=="}}},
                    {"reasoningContent": {"redactedContent": "b64data"}},
                    {"text": "4"}
                ]}),
            )],
        ),
    ];
    for (name, body, pointers) in cases {
        let request = translate(body).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        for (pointer, expected) in pointers {
            let got = request.pointer(pointer).cloned().unwrap_or(Value::Null);
            assert_eq!(got, expected, "{name}: {pointer} in {request}");
        }
    }
}

#[test]
fn refusals_name_the_provider_and_the_field() {
    let tools = json!([{"type": "function", "name": "f", "parameters": {"type": "object"}}]);
    let cases = vec![
        (json!({"input": "hi", "seed": 1}), "unsupported_parameter", "seed"),
        (json!({"input": "hi", "top_logprobs": 2}), "unsupported_parameter", "top_logprobs"),
        (json!({"input": "hi", "max_tool_calls": 4}), "unsupported_parameter", "max_tool_calls"),
        (json!({"input": "hi", "truncation": "auto"}), "unsupported_parameter", "truncation"),
        (json!({"input": "hi", "include": ["message.output_text.logprobs"]}), "unsupported_parameter", "include[0]"),
        (json!({"input": "hi", "text": {"verbosity": "high"}}), "unsupported_parameter", "text.verbosity"),
        (json!({"input": "hi", "service_tier": "priority"}), "unsupported_parameter", "service_tier"),
        (json!({"input": "hi", "parallel_tool_calls": false}), "unsupported_parameter", "parallel_tool_calls"),
        (json!({"input": "hi", "tools": [{"type": "web_search"}]}), "unsupported_tool", "tools[0].type"),
        (
            json!({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}], "tools": tools, "tool_choice": "none"}),
            "unsupported_parameter",
            "tool_choice",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/cat.png"}]}]}),
            "unsupported_parameter",
            "input[0].content[0]",
        ),
        (json!({"input": [{"type": "item_reference", "id": "msg_1"}]}), "unsupported_parameter", "input[0]"),
        (json!({"input": [{"role": "system", "content": "only system"}]}), "invalid_value", "input"),
    ];
    for (body, code, param) in cases {
        let GatewayError::InvalidRequest { code: got, param: Some(got_param), message } =
            translate(body.clone()).unwrap_err()
        else {
            panic!("{body}: not an invalid request");
        };
        assert_eq!((got, got_param.as_str()), (code, param), "{body}");
        if code != "invalid_value" {
            assert!(message.contains("`bedrock`"), "{message}");
        }
    }
    for effort in ["minimal", "low", "medium", "high", "xhigh", "max"] {
        let err = translate_with("amazon.nova-pro-v1:0", json!({"input": "hi", "reasoning": {"effort": effort}}))
            .unwrap_err();
        assert!(format!("{err:?}").contains("reasoning.effort"), "{err:?}");
    }
    assert!(translate_with("amazon.nova-pro-v1:0", json!({"input": "hi", "reasoning": {"effort": "none"}})).is_ok());
}

#[test]
fn url_encodes_the_model_id_and_picks_the_operation() {
    let body = json!({"input": "hi"});
    let whole = Bedrock::default().request(&provider(), &row(CLAUDE, None), body.as_object().unwrap(), false).unwrap();
    assert_eq!(
        whole.url,
        "https://bedrock-runtime.eu-west-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse"
    );
    assert_eq!(whole.headers, vec![("accept", "application/json".to_owned())]);
    let arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.x";
    let stream = Bedrock::default().request(&provider(), &row(arn, None), body.as_object().unwrap(), true).unwrap();
    assert!(stream
        .url
        .ends_with("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.x/converse-stream"));
    assert_eq!(stream.headers[0], ("accept", EVENT_STREAM.to_owned()));
    let parsed: Value = serde_json::from_slice(&stream.body).unwrap();
    assert_eq!(parsed["inferenceConfig"]["maxTokens"], 4096, "the default when neither request nor row has one");
    let mut keyed = provider();
    keyed.api_key = Some(Secret::new("bedrock-api-key"));
    let request = Bedrock::default().request(&keyed, &row(CLAUDE, None), body.as_object().unwrap(), false).unwrap();
    assert!(request.headers.contains(&("authorization", "Bearer bedrock-api-key".to_owned())));
}

#[test]
fn sigv4_headers_and_regions() {
    let mut request = UpstreamRequest {
        url: "https://bedrock-runtime.eu-west-1.amazonaws.com/model/a%3A0/converse".to_owned(),
        headers: vec![("accept", "application/json".to_owned())],
        body: Bytes::from_static(b"{}"),
    };
    let credentials = aws_credential_types::Credentials::new("AKID", "SECRET", Some("TOKEN".into()), None, "test");
    let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600); // 2026-01-01
    sign(&mut request, &credentials, "eu-west-1", time).unwrap();
    let header = |name: &str| request.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
    assert_eq!(header("x-amz-date").as_deref(), Some("20260101T000000Z"));
    assert_eq!(header("x-amz-security-token").as_deref(), Some("TOKEN"));
    let authorization = header("authorization").unwrap();
    assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKID/20260101/eu-west-1/bedrock/aws4_request, SignedHeaders=accept;content-type;host;x-amz-date;x-amz-security-token, Signature="),
            "{authorization}"
        );
    let signature = authorization.rsplit('=').next().unwrap();
    assert_eq!(signature.len(), 64);
    // The same request signed again at the same time gives the same signature; another body does not.
    let mut again = UpstreamRequest {
        url: request.url.clone(),
        headers: vec![("accept", "application/json".to_owned())],
        body: Bytes::from_static(b"{}"),
    };
    sign(&mut again, &credentials, "eu-west-1", time).unwrap();
    assert!(again.headers.iter().any(|(n, v)| *n == "authorization" && *v == authorization));
    let mut other = UpstreamRequest { body: Bytes::from_static(b"{\"a\":1}"), ..again };
    other.headers.retain(|(n, _)| *n == "accept");
    sign(&mut other, &credentials, "eu-west-1", time).unwrap();
    assert!(!other.headers.iter().any(|(n, v)| *n == "authorization" && *v == authorization));

    assert_eq!(endpoint_region("https://bedrock-runtime.us-west-2.amazonaws.com").as_deref(), Some("us-west-2"));
    assert_eq!(endpoint_region("https://bedrock-runtime-fips.us-east-1.amazonaws.com/").as_deref(), Some("us-east-1"));
    assert_eq!(endpoint_region("http://127.0.0.1:4010"), None);
    assert_eq!(endpoint_region("https://vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com"), None);
}

fn complete(deltas: Vec<Delta>) -> Value {
    let ctx = ResponseContext::new("anthropic/claude-sonnet-4", &Map::new());
    crate::providers::assemble_complete(deltas, ctx).response
}

#[test]
fn converse_answers_become_responses() {
    let answer = json!({
        "output": {"message": {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "Think.", "signature": "sig"}}},
            {"text": "Let me check."},
            {"toolUse": {"toolUseId": "tooluse_a", "name": "get_weather", "input": {"city": "Paris"}}},
            {"toolUse": {"toolUseId": "tooluse_b", "name": "get_weather", "input": {"city": "Rome"}}},
            {"citationsContent": {"citations": []}}
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 25, "outputTokens": 15, "totalTokens": 150, "cacheReadInputTokens": 100, "cacheWriteInputTokens": 10},
        "metrics": {"latencyMs": 100}
    });
    let response = complete(Bedrock::default().response(answer.to_string().as_bytes()).unwrap());
    assert_eq!(response["status"], "completed");
    let output = response["output"].as_array().unwrap();
    let kinds: Vec<&str> = output.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["reasoning", "message", "function_call", "function_call"]);
    assert_eq!(output[0]["encrypted_content"], "sig");
    assert_eq!(output[0]["summary"][0]["text"], "Think.");
    assert_eq!(output[1]["content"][0]["text"], "Let me check.");
    assert_eq!(
        (output[2]["call_id"].as_str(), output[2]["arguments"].as_str()),
        (Some("tooluse_a"), Some("{\"city\":\"Paris\"}"))
    );
    assert_eq!(output[3]["call_id"], "tooluse_b");
    assert_eq!(response["usage"]["input_tokens"], 135);
    assert_eq!(response["usage"]["input_tokens_details"]["cached_tokens"], 100);
    assert_eq!(response["usage"]["input_tokens_details"]["cache_write_tokens"], 10);
    assert_eq!(response["usage"]["output_tokens"], 15);

    for (stop, status, reason) in [
        ("max_tokens", "incomplete", json!("max_output_tokens")),
        ("model_context_window_exceeded", "incomplete", json!("max_output_tokens")),
        ("content_filtered", "incomplete", json!("content_filter")),
        ("guardrail_intervened", "incomplete", json!("content_filter")),
        ("end_turn", "completed", Value::Null),
        ("stop_sequence", "completed", Value::Null),
    ] {
        let answer = json!({"output": {"message": {"role": "assistant", "content": [{"text": "x"}]}}, "stopReason": stop, "usage": {}});
        let response = complete(Bedrock::default().response(answer.to_string().as_bytes()).unwrap());
        assert_eq!(response["status"], status, "{stop}");
        assert_eq!(response["incomplete_details"]["reason"].clone(), reason, "{stop}");
    }
    assert!(matches!(Bedrock::default().response(b"<html>"), Err(GatewayError::UpstreamFailure(_))));
}

fn frame(event: &str, payload: Value) -> Vec<u8> {
    let message = Frame::new(payload.to_string().into_bytes())
        .add_header(Header::new(":event-type", HeaderValue::String(event.to_owned().into())))
        .add_header(Header::new(":content-type", HeaderValue::String("application/json".into())))
        .add_header(Header::new(":message-type", HeaderValue::String("event".into())));
    let mut bytes = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut bytes).unwrap();
    bytes
}

fn exception(kind: &str, message: &str) -> Vec<u8> {
    let message = Frame::new(json!({"message": message}).to_string().into_bytes())
        .add_header(Header::new(":exception-type", HeaderValue::String(kind.to_owned().into())))
        .add_header(Header::new(":content-type", HeaderValue::String("application/json".into())))
        .add_header(Header::new(":message-type", HeaderValue::String("exception".into())));
    let mut bytes = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut bytes).unwrap();
    bytes
}

/// Feeds the bytes in chunks of `chunk` through the frame parser, decoder and assembler.
fn run_stream(bytes: &[u8], chunk: usize) -> (Vec<Value>, Result<(), StreamFault>) {
    let mut parser = EventStreamParser::default();
    let mut decoder = Bedrock::default().decoder();
    let mut assembler = Assembler::new(ResponseContext::new("anthropic/claude-sonnet-4", &Map::new()));
    let mut events = Vec::new();
    for piece in bytes.chunks(chunk) {
        match parser.feed(piece) {
            Ok(frames) => {
                for event in frames {
                    for delta in decoder.decode(event).unwrap() {
                        events.extend(assembler.push(delta));
                    }
                }
            }
            Err(fault) => return (events, Err(fault)),
        }
    }
    if let Err(fault) = parser.finish() {
        return (events, Err(fault));
    }
    for delta in decoder.finish() {
        events.extend(assembler.push(delta));
    }
    (events, Ok(()))
}

fn tool_stream() -> Vec<u8> {
    let delta =
        |i: u64, d: Value| frame("contentBlockDelta", json!({"contentBlockIndex": i, "delta": d, "p": "abcdefgh"}));
    [
            frame("messageStart", json!({"role": "assistant", "p": "abc"})),
            delta(0, json!({"reasoningContent": {"text": "Two "}})),
            delta(0, json!({"reasoningContent": {"text": "cities."}})),
            delta(0, json!({"reasoningContent": {"signature": "sig"}})),
            frame("contentBlockStop", json!({"contentBlockIndex": 0})),
            delta(1, json!({"text": "Checking"})),
            delta(1, json!({"text": " both."})),
            frame("contentBlockStop", json!({"contentBlockIndex": 1})),
            frame("contentBlockStart", json!({"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tooluse_a", "name": "get_weather"}}})),
            delta(2, json!({"toolUse": {"input": "{\"city\""}})),
            delta(2, json!({"toolUse": {"input": ":\"Paris\"}"}})),
            frame("contentBlockStop", json!({"contentBlockIndex": 2})),
            frame("contentBlockStart", json!({"contentBlockIndex": 3, "start": {"toolUse": {"toolUseId": "tooluse_b", "name": "get_weather"}}})),
            delta(3, json!({"toolUse": {"input": "{\"city\":\"Rome\"}"}})),
            frame("contentBlockStop", json!({"contentBlockIndex": 3})),
            frame("messageStop", json!({"stopReason": "tool_use"})),
            frame("metadata", json!({"usage": {"inputTokens": 25, "outputTokens": 15, "totalTokens": 150, "cacheReadInputTokens": 100, "cacheWriteInputTokens": 10}, "metrics": {"latencyMs": 9}})),
        ]
        .concat()
}

#[test]
fn a_stream_of_frames_becomes_the_responses_event_sequence() {
    let whole = tool_stream();
    // Chunked at every size from one byte to a whole frame: frames split anywhere decode alike.
    let (reference, result) = run_stream(&whole, whole.len());
    result.unwrap();
    for chunk in [1, 3, 7, 64, 300] {
        let (events, result) = run_stream(&whole, chunk);
        result.unwrap();
        assert_eq!(events.len(), reference.len(), "chunk {chunk}");
    }
    let terminal = reference.last().unwrap();
    assert_eq!(terminal["type"], "response.completed");
    let output = terminal["response"]["output"].as_array().unwrap();
    let kinds: Vec<&str> = output.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["reasoning", "message", "function_call", "function_call"]);
    assert_eq!(output[0]["summary"][0]["text"], "Two cities.");
    assert_eq!(output[0]["encrypted_content"], "sig");
    assert_eq!(output[1]["content"][0]["text"], "Checking both.");
    assert_eq!(output[2]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(output[3]["arguments"], "{\"city\":\"Rome\"}");
    assert_eq!(terminal["response"]["usage"]["input_tokens"], 135);
    let args: Vec<&str> = reference
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(args, ["{\"city\"", ":\"Paris\"}", "{\"city\":\"Rome\"}"]);
    for pair in reference.windows(2) {
        assert!(pair[0]["sequence_number"].as_u64() < pair[1]["sequence_number"].as_u64());
    }
}

#[test]
fn stream_faults() {
    // An exception frame mid-stream fails the response with the provider's words.
    let broken = [
        frame("messageStart", json!({"role": "assistant"})),
        frame("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Once"}})),
        exception("modelStreamErrorException", "The model stream broke."),
    ]
    .concat();
    let (events, result) = run_stream(&broken, 5);
    result.unwrap();
    let terminal = events.last().unwrap();
    assert_eq!(terminal["type"], "response.failed");
    let message = terminal["response"]["error"]["message"].as_str().unwrap();
    assert!(message.contains("The model stream broke.") && message.contains("modelStreamErrorException"), "{message}");

    // A corrupted frame (bad CRC) is a malformed stream.
    let mut corrupt = frame("messageStart", json!({"role": "assistant"}));
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert!(matches!(run_stream(&corrupt, 4).1, Err(StreamFault::Malformed(_))));

    // A stream that ends inside a frame is malformed too.
    let whole = frame("messageStart", json!({"role": "assistant"}));
    assert!(matches!(run_stream(&whole[..whole.len() - 3], 4).1, Err(StreamFault::Malformed(_))));

    // Hostile lengths: under the smallest frame, or over the limit, fail at once.
    let mut parser = EventStreamParser::default();
    assert!(matches!(parser.feed(&[0, 0, 0, 5, 1, 2, 3, 4]), Err(StreamFault::Malformed(_))));
    let mut parser = EventStreamParser::default();
    assert!(matches!(parser.feed(&[0xff, 0xff, 0xff, 0xff]), Err(StreamFault::TooLarge)), "4 GiB declared");
    assert_eq!(parser.buffered_len(), 4, "nothing waited for");
    let mut parser = EventStreamParser::with_max_frame(whole.len() - 1);
    assert!(matches!(parser.feed(&whole[..4]), Err(StreamFault::TooLarge)));
    let mut parser = EventStreamParser::with_max_frame(whole.len());
    assert_eq!(parser.feed(&whole).unwrap().len(), 1, "a frame of exactly the limit is fine");
    // A prelude whose declared length disagrees with its CRC is caught once the frame is whole.
    let mut lying = whole.clone();
    lying[3] = lying[3].wrapping_sub(1);
    assert!(matches!(run_stream(&lying, 4).1, Err(StreamFault::Malformed(_))));

    // A stop without metadata still finishes; a stream without a stop does not.
    let no_metadata = [
        frame("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "cut"}})),
        frame("messageStop", json!({"stopReason": "max_tokens"})),
    ]
    .concat();
    let (events, _) = run_stream(&no_metadata, 100);
    assert_eq!(events.last().unwrap()["type"], "response.incomplete");
    let unfinished = frame("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "cut"}}));
    let (events, _) = run_stream(&unfinished, 100);
    assert!(!events.iter().any(|e| e["type"].as_str().is_some_and(|t| t.starts_with("response.completed"))));

    // An event whose payload does not fit its type.
    let mut decoder = Bedrock::default().decoder();
    let bad = SseEvent {
        event: Some("contentBlockDelta".to_owned()),
        data: "{\"contentBlockIndex\": \"x\", \"delta\": {\"text\": \"a\"}}".to_owned(),
        id: None,
    };
    assert!(matches!(decoder.decode(bad), Err(StreamFault::Malformed(_))));
}

#[test]
fn error_mapping_table() {
    let headers = |kind: &str| {
        let mut map = HeaderMap::new();
        map.insert(
            "x-amzn-errortype",
            format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/").parse().unwrap(),
        );
        map
    };
    let body = |message: &str| json!({"message": message}).to_string();
    let map = |status: u16, kind: &str, message: &str| {
        Bedrock::default().error("bedrock", status, &headers(kind), body(message).as_bytes())
    };

    match map(429, "ThrottlingException", "Too many requests, please wait before trying again.") {
        GatewayError::UpstreamClient(fault) => {
            assert_eq!(
                (fault.status, fault.error_type.as_str(), fault.code.as_deref()),
                (429, "rate_limit_error", Some("ThrottlingException"))
            );
            assert_eq!(fault.message, "Too many requests, please wait before trying again.");
        }
        other => panic!("{other:?}"),
    }
    match map(400, "ValidationException", "Input is too long for requested model.") {
        GatewayError::UpstreamClient(fault) => {
            assert_eq!(
                (fault.status, fault.code.as_deref(), fault.param.as_deref()),
                (400, Some("context_length_exceeded"), Some("input"))
            );
        }
        other => panic!("{other:?}"),
    }
    // Refused credentials or access are the gateway's fault: 502, the words only in the logs.
    for (status, kind) in [(403, "AccessDeniedException"), (403, "UnrecognizedClientException"), (401, "")] {
        let err = map(status, kind, "The security token AKIAIOSFODNN7EXAMPLE is not valid.");
        assert!(matches!(err, GatewayError::UpstreamCredential(_)), "{status} {kind}: {err:?}");
        assert_eq!((err.status().as_u16(), err.body()["code"].as_str()), (502, Some("upstream_error")));
        assert!(!format!("{err} {}", err.body()).contains("AKIA"));
    }
    assert!(matches!(
        map(503, "ServiceUnavailableException", "Bedrock is unable to process your request."),
        GatewayError::UpstreamFailure(_)
    ));
    assert!(matches!(map(500, "InternalServerException", "oops"), GatewayError::UpstreamFailure(_)));
    assert!(matches!(map(424, "ModelErrorException", "The model failed"), GatewayError::UpstreamFailure(_)));
    assert!(matches!(map(408, "ModelTimeoutException", "slow"), GatewayError::GatewayTimeout(_)));
    // `__type` in the body when the header is missing; an unreadable body still maps by status.
    match Bedrock::default().error(
        "bedrock",
        404,
        &HeaderMap::new(),
        br#"{"__type": "com.amazon#ResourceNotFoundException", "Message": "no model"}"#,
    ) {
        GatewayError::UpstreamClient(fault) => {
            assert_eq!(
                (fault.code.as_deref(), fault.message.as_str()),
                (Some("ResourceNotFoundException"), "no model")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Bedrock::default().error("bedrock", 400, &HeaderMap::new(), b"not json"),
        GatewayError::UpstreamClient(_)
    ));
}
