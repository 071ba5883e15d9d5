//! The `bedrock` provider end to end: the gateway in front of a stub of Amazon Bedrock's Converse
//! and ConverseStream operations (SigV4 checked, event stream frames split across chunks), whole
//! and streamed: text, function-calling round trips, parallel calls, structured output,
//! truncation, guardrails, reasoning taken back, upstream errors, a broken stream, and the
//! official OpenAI Python SDK. Needs `AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
//! AWS_REGION=us-east-1` in the environment (tests/run.sh exports them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh::config::{ProviderApi, ProviderConfig};
use mesh::domain::{UsageRecord, UsageStatus};
use mesh_tests::answers::{function_call, message, read_answer, without_ids, Answer};
use mesh_tests::bedrock_stub::{self, BedrockStub, CALL_ONE, CALL_TWO};
use mesh_tests::{Gateway, GatewayOptions};
use serde_json::{json, Value};

/// The model id of the plain text model: its `:` travels percent-encoded in the path.
const CLAUDE: &str = "anthropic.claude-sonnet-4-20250514-v1:0";

/// Upstream ids of the stub's behaviours (the stub looks at the part after the last dot).
const UPSTREAMS: [&str; 14] = [
    CLAUDE,
    "meta.llama3-3-70b-instruct-v1:0",
    "tools-one",
    "tools-two",
    "json",
    "length",
    "guardrail",
    "us.anthropic.thinking",
    "error-429",
    "error-503",
    "error-424",
    "error-403",
    "error-long",
    "stream-error",
];

struct Setup {
    gw: Gateway,
    stub: BedrockStub,
    secret: String,
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

async fn setup_with(configure: fn(&mut mesh::config::Config)) -> Setup {
    for (name, value) in [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_REGION", "us-east-1")]
    {
        assert_eq!(
            std::env::var(name).as_deref(),
            Ok(value),
            "export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 (tests/run.sh does)"
        );
    }
    let stub = BedrockStub::start().await;
    let gw = Gateway::start(GatewayOptions {
        providers: vec![ProviderConfig {
            name: "bedrock".into(),
            api: ProviderApi::Bedrock,
            base_url: stub.url.clone(),
            api_key: None,
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        }],
        configure,
        ..GatewayOptions::default()
    })
    .await;
    for upstream in UPSTREAMS {
        gw.put_row(&catalog(upstream), "bedrock", upstream, "3", "15", Some("0.30")).await;
    }
    let (secret, _) = gw.create_key(|_| {}).await;
    Setup { gw, stub, secret }
}

fn catalog(upstream: &str) -> String {
    match upstream {
        CLAUDE => "bedrock/claude-sonnet-4".to_owned(),
        "meta.llama3-3-70b-instruct-v1:0" => "bedrock/llama".to_owned(),
        other => format!("bedrock/{}", other.rsplit('.').next().unwrap()),
    }
}

impl Setup {
    /// Sends a request, whole or streamed; a stream is checked for order and consistency and its
    /// terminal event's response returned.
    async fn call(&self, body: Value, stream: bool) -> Answer {
        self.call_with(body, stream, &[]).await
    }

    async fn call_with(&self, mut body: Value, stream: bool, headers: &[(&str, &str)]) -> Answer {
        if stream {
            body["stream"] = json!(true);
        }
        let mut request = self.gw.http.post(format!("{}/v1/responses", self.gw.url)).bearer_auth(&self.secret);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.json(&body).send().await.expect("gateway answers");
        read_answer(response, stream).await
    }

    async fn usage(&self, answer: &Answer) -> UsageRecord {
        self.gw.usage_of(&answer.request_id).await
    }

    /// The requests the stub received for one upstream model id.
    fn requests_for(&self, model_id: &str) -> Vec<bedrock_stub::BedrockRequest> {
        self.stub.requests().into_iter().filter(|r| r.model_id == model_id).collect()
    }
}

fn weather_schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false})
}

fn weather_tool() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "Current weather of a city", "strict": true,
        "parameters": weather_schema()})
}

/// The tool as Converse takes it.
fn bedrock_tool() -> Value {
    json!({"toolSpec": {"name": "get_weather", "description": "Current weather of a city",
        "inputSchema": {"json": weather_schema()}, "strict": true}})
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": [{"text": text}]})
}

fn tool_use(id: &str, city: &str) -> Value {
    json!({"toolUse": {"toolUseId": id, "name": "get_weather", "input": {"city": city}}})
}

fn tool_result(id: &str, text: &str) -> Value {
    json!({"toolResult": {"toolUseId": id, "content": [{"text": text}]}})
}

/// The stub's usage (25 + 10 cache writes + 100 cache reads in, 15 out) at $3 / $15 / $0.30 per
/// Mtok: 35 × 3 + 100 × 0.30 + 15 × 15 = 360 micro-USD.
async fn assert_priced(setup: &Setup, answer: &Answer, status: UsageStatus) {
    let record = setup.usage(answer).await;
    assert_eq!(record.provider, "bedrock");
    assert_eq!(
        (record.tokens.input_tokens, record.tokens.cached_input_tokens, record.tokens.output_tokens),
        (135, 100, 15)
    );
    assert_eq!(record.cost.0, 360_000);
    assert_eq!(record.status, status);
}

/// The operation path of a model id, as it must arrive.
fn path(encoded_id: &str, stream: bool) -> String {
    format!("/model/{encoded_id}/{}", if stream { "converse-stream" } else { "converse" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text() {
    let s = setup().await;
    for stream in [false, true] {
        let answer = s
            .call(
                json!({"model": "bedrock/claude-sonnet-4", "input": "Say hello", "instructions": "Be brief."}),
                stream,
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.headers["x-mesh-served-provider"], "bedrock");
        assert_eq!(answer.body["status"], "completed");
        assert_eq!(answer.body["model"], "bedrock/claude-sonnet-4");
        assert_eq!(answer.body["instructions"], "Be brief.");
        assert_eq!(without_ids(&answer.body["output"]), json!([message(bedrock_stub::TEXT)]));
        assert_eq!(
            answer.body["usage"],
            json!({"input_tokens": 135, "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 10}, "output_tokens": 15,
                "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 150})
        );
        if stream {
            let deltas: Vec<&str> = answer
                .events
                .iter()
                .filter(|e| e["type"] == "response.output_text.delta")
                .map(|e| e["delta"].as_str().unwrap())
                .collect();
            assert_eq!(deltas, ["Hello", " from", " Bedr", "ock"], "one text delta per contentBlockDelta frame");
        }
        let sent = s.stub.last();
        assert_eq!(sent.signature, Ok(()), "the stub verified the SigV4 signature");
        assert_eq!(sent.raw_path, path("anthropic.claude-sonnet-4-20250514-v1%3A0", stream));
        assert_eq!(sent.model_id, CLAUDE);
        let headers = &sent.request.headers;
        assert_eq!(headers["accept"], if stream { "application/vnd.amazon.eventstream" } else { "application/json" });
        assert_eq!(headers["content-type"], "application/json");
        assert!(headers.get("x-api-key").is_none());
        assert_eq!(
            sent.request.body,
            json!({
                "messages": [user("Say hello")],
                "system": [{"text": "Be brief."}],
                "inferenceConfig": {"maxTokens": 16_384},
                "requestMetadata": {"user": mesh::ids::safety_identifier("team-a")}
            }),
            "no model and no stream flag in the body: both are in the path"
        );
        assert_priced(&s, &answer, UsageStatus::Success).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_sigv4_signed_for_bedrock() {
    let s = setup().await;
    let answer = s
        .call_with(
            json!({"model": "bedrock/claude-sonnet-4", "input": "Say hello"}),
            false,
            &[("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sent = s.stub.last();
    assert_eq!(sent.signature, Ok(()));
    let headers = &sent.request.headers;
    assert_eq!(headers["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    let amz_date = headers["x-amz-date"].to_str().unwrap();
    assert_eq!(amz_date.len(), 16);
    assert!(amz_date.ends_with('Z') && &amz_date[8..9] == "T", "{amz_date}");
    let authorization = headers["authorization"].to_str().unwrap();
    let prefix = format!(
        "AWS4-HMAC-SHA256 Credential=test/{}/us-east-1/bedrock/aws4_request, \
         SignedHeaders=accept;content-type;host;traceparent;x-amz-date, Signature=",
        &amz_date[..8]
    );
    assert!(authorization.starts_with(&prefix), "{authorization}");
    let signature = &authorization[prefix.len()..];
    assert!(signature.len() == 64 && signature.bytes().all(|b| b.is_ascii_hexdigit()), "{signature}");
    assert!(headers.get("x-amz-security-token").is_none(), "long-term credentials carry no session token");

    // The stub's check can fail: the same request replayed verbatim passes, any change does not.
    let replay = |path: String, body: bytes::Bytes, authorization: String| {
        let mut request = s.gw.http.post(format!("{}{path}", s.stub.url)).body(body);
        for (name, value) in headers {
            if name != "host" && name != "content-length" && name != "authorization" {
                request = request.header(name, value);
            }
        }
        request.header("authorization", authorization).send()
    };
    let verbatim = replay(sent.raw_path.clone(), sent.raw_body.clone(), authorization.to_owned()).await.unwrap();
    assert_eq!(verbatim.status(), 200);
    let mut tampered = sent.raw_body.to_vec();
    let at = tampered.iter().position(|b| *b == b'h').unwrap();
    tampered[at] = b'H';
    let decoded_path = sent.raw_path.replace("%3A", ":");
    let wrong_region = authorization.replace("/us-east-1/", "/us-west-2/");
    let wrong_key = authorization.replace("Credential=test/", "Credential=AKIAOTHER/");
    let fewer_headers = authorization.replace("traceparent;", "");
    for (path, body, authorization) in [
        (sent.raw_path.clone(), bytes::Bytes::from(tampered), authorization.to_owned()),
        (decoded_path, sent.raw_body.clone(), authorization.to_owned()),
        (sent.raw_path.clone(), sent.raw_body.clone(), wrong_region),
        (sent.raw_path.clone(), sent.raw_body.clone(), wrong_key),
        (sent.raw_path.clone(), sent.raw_body.clone(), fewer_headers),
    ] {
        let refused = replay(path.clone(), body, authorization.clone()).await.unwrap();
        assert_eq!(refused.status(), 403, "{path} {authorization}");
        assert_eq!(
            refused.headers()["x-amzn-errortype"],
            "InvalidSignatureException:http://internal.amazon.com/coral/com.amazon.bedrock/"
        );
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["message"], bedrock_stub::BAD_SIGNATURE);
    }
    assert!(s.stub.last().signature.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calling_round_trip() {
    let s = setup().await;
    for stream in [false, true] {
        let question = json!({"role": "user", "content": "What's the weather in Paris?"});
        let first = s
            .call(
                json!({"model": "bedrock/tools-one", "input": [question], "tools": [weather_tool()],
                    "tool_choice": "required"}),
                stream,
            )
            .await;
        assert_eq!(first.status, 200, "{}", first.body);
        assert_eq!(first.body["status"], "completed");
        assert_eq!(
            without_ids(&first.body["output"]),
            json!([message("Let me check the weather."), function_call(CALL_ONE, "Paris")])
        );
        let sent = s.stub.last();
        assert_eq!(sent.raw_path, path("tools-one", stream));
        assert_eq!(sent.request.body["toolConfig"], json!({"tools": [bedrock_tool()], "toolChoice": {"any": {}}}));
        assert_eq!(sent.request.body["messages"], json!([user("What's the weather in Paris?")]));
        assert_priced(&s, &first, UsageStatus::Success).await;

        // Turn two: the whole output goes back, with the function's result.
        let mut input = vec![question];
        input.extend(first.body["output"].as_array().unwrap().iter().cloned());
        input.push(json!({"type": "function_call_output", "call_id": CALL_ONE, "output": "18C and sunny"}));
        let second =
            s.call(json!({"model": "bedrock/tools-one", "input": input, "tools": [weather_tool()]}), stream).await;
        assert_eq!(second.status, 200, "{}", second.body);
        assert_eq!(without_ids(&second.body["output"]), json!([message("The weather in Paris: 18C and sunny.")]));
        let sent = s.stub.last_request().body;
        assert_eq!(
            sent["messages"],
            json!([
                user("What's the weather in Paris?"),
                {"role": "assistant", "content": [{"text": "Let me check the weather."}, tool_use(CALL_ONE, "Paris")]},
                {"role": "user", "content": [tool_result(CALL_ONE, "18C and sunny")]}
            ])
        );
        assert_eq!(sent["toolConfig"], json!({"tools": [bedrock_tool()]}), "no toolChoice unless asked for");
        assert_priced(&s, &second, UsageStatus::Success).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_tool_choice() {
    let s = setup().await;
    for stream in [false, true] {
        let answer = s
            .call(
                json!({"model": "bedrock/tools-one", "input": "Weather in Paris?", "tools": [weather_tool()],
                    "tool_choice": {"type": "function", "name": "get_weather"}}),
                stream,
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["output"][1]["call_id"], CALL_ONE);
        assert_eq!(s.stub.last_request().body["toolConfig"]["toolChoice"], json!({"tool": {"name": "get_weather"}}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_parallel_tool_calls() {
    let s = setup().await;
    for stream in [false, true] {
        let question = json!({"role": "user", "content": "Weather in Paris and London?"});
        let first =
            s.call(json!({"model": "bedrock/tools-two", "input": [question], "tools": [weather_tool()]}), stream).await;
        assert_eq!(first.status, 200, "{}", first.body);
        assert_eq!(
            without_ids(&first.body["output"]),
            json!([function_call(CALL_ONE, "Paris"), function_call(CALL_TWO, "London")])
        );
        if stream {
            let added: Vec<&Value> =
                first.events.iter().filter(|e| e["type"] == "response.output_item.added").map(|e| &e["item"]).collect();
            assert_eq!(added.len(), 2);
            assert_eq!((&added[0]["call_id"], &added[1]["call_id"]), (&json!(CALL_ONE), &json!(CALL_TWO)));
            let fragments = first.events.iter().filter(|e| e["type"] == "response.function_call_arguments.delta");
            assert_eq!(fragments.count(), 6, "three input fragments per call, as the stub streamed them");
        }
        assert_priced(&s, &first, UsageStatus::Success).await;

        let mut input = vec![question];
        input.extend(first.body["output"].as_array().unwrap().iter().cloned());
        input.push(json!({"type": "function_call_output", "call_id": CALL_ONE, "output": "18C"}));
        input.push(json!({"type": "function_call_output", "call_id": CALL_TWO, "output": "12C"}));
        let second =
            s.call(json!({"model": "bedrock/tools-two", "input": input, "tools": [weather_tool()]}), stream).await;
        assert_eq!(second.status, 200, "{}", second.body);
        assert_eq!(without_ids(&second.body["output"]), json!([message("Results: 18C / 12C.")]));
        let sent = s.stub.last_request().body;
        assert_eq!(sent["messages"].as_array().unwrap().len(), 3, "one assistant turn, one user turn of results");
        assert_eq!(sent["messages"][1]["content"], json!([tool_use(CALL_ONE, "Paris"), tool_use(CALL_TWO, "London")]));
        assert_eq!(sent["messages"][2]["content"], json!([tool_result(CALL_ONE, "18C"), tool_result(CALL_TWO, "12C")]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_output() {
    let s = setup().await;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
        "additionalProperties": false});
    for stream in [false, true] {
        let answer = s
            .call(
                json!({"model": "bedrock/json", "input": "What is 6 × 7?",
                    "text": {"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": true}}}),
                stream,
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(without_ids(&answer.body["output"]), json!([message(r#"{"answer":42}"#)]));
        assert_eq!(answer.body["text"]["format"]["type"], "json_schema", "the request's format is echoed");
        let sent = s.stub.last_request().body;
        let format = &sent["outputConfig"]["textFormat"];
        assert_eq!(format["type"], "json_schema");
        assert_eq!(format["structure"]["jsonSchema"]["name"], "answer");
        let sent_schema: Value =
            serde_json::from_str(format["structure"]["jsonSchema"]["schema"].as_str().unwrap()).unwrap();
        assert_eq!(sent_schema, schema, "the schema travels as a JSON string");
        assert!(sent.get("system").is_none(), "enforced by Bedrock, not asked for in the prompt: {sent}");
        assert!(sent.get("text").is_none() && sent.get("response_format").is_none());
        assert_priced(&s, &answer, UsageStatus::Success).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_truncation_is_incomplete() {
    let s = setup().await;
    for stream in [false, true] {
        let answer =
            s.call(json!({"model": "bedrock/length", "input": "Tell a story", "max_output_tokens": 5}), stream).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["status"], "incomplete");
        assert_eq!(answer.body["incomplete_details"], json!({"reason": "max_output_tokens"}));
        assert_eq!(answer.body["output"][0]["content"][0]["text"], "This answer is cut");
        if stream {
            assert_eq!(answer.events.last().unwrap()["type"], "response.incomplete");
        }
        assert_eq!(s.stub.last_request().body["inferenceConfig"], json!({"maxTokens": 5}));
        assert_priced(&s, &answer, UsageStatus::Incomplete).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_parameters_go_to_inference_config() {
    let s = setup().await;
    for stream in [false, true] {
        let answer = s
            .call(
                json!({"model": "bedrock/claude-sonnet-4", "input": "hi", "temperature": 0.2, "top_p": 0.9,
                    "max_output_tokens": 300}),
                stream,
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            s.stub.last_request().body["inferenceConfig"],
            json!({"maxTokens": 300, "temperature": 0.2, "topP": 0.9})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guardrail_intervention_is_incomplete() {
    let s = setup().await;
    for stream in [false, true] {
        let answer = s.call(json!({"model": "bedrock/guardrail", "input": "Something forbidden"}), stream).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["status"], "incomplete");
        assert_eq!(answer.body["incomplete_details"], json!({"reason": "content_filter"}));
        assert_eq!(answer.body["output"][0]["content"][0]["text"], "Sorry, the model cannot answer this question.");
        assert_priced(&s, &answer, UsageStatus::Incomplete).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_becomes_reasoning_and_goes_back_signed() {
    let s = setup().await;
    for stream in [false, true] {
        let question = json!({"role": "user", "content": "What is 2 + 2?"});
        let first = s
            .call(json!({"model": "bedrock/thinking", "input": [question], "reasoning": {"effort": "low"}}), stream)
            .await;
        assert_eq!(first.status, 200, "{}", first.body);
        assert_eq!(
            without_ids(&first.body["output"]),
            json!([
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": bedrock_stub::THINKING}],
                    "encrypted_content": bedrock_stub::SIGNATURE},
                message("2 + 2 = 4.")
            ])
        );
        let sent = s.stub.last();
        assert_eq!(sent.raw_path, path("us.anthropic.thinking", stream));
        assert_eq!(
            sent.request.body["additionalModelRequestFields"],
            json!({"thinking": {"type": "enabled", "budget_tokens": 1024}})
        );
        assert_eq!(sent.request.body["inferenceConfig"], json!({"maxTokens": 16_384}));
        assert_priced(&s, &first, UsageStatus::Success).await;

        let mut input = vec![question];
        input.extend(first.body["output"].as_array().unwrap().iter().cloned());
        input.push(json!({"role": "user", "content": "And doubled?"}));
        let second =
            s.call(json!({"model": "bedrock/thinking", "input": input, "reasoning": {"effort": "low"}}), stream).await;
        assert_eq!(second.status, 200, "the stub accepted the signature: {}", second.body);
        let sent = s.stub.last_request().body;
        assert_eq!(
            sent["messages"],
            json!([
                user("What is 2 + 2?"),
                {"role": "assistant", "content": [
                    {"reasoningContent": {"reasoningText": {"text": bedrock_stub::THINKING, "signature": bedrock_stub::SIGNATURE}}},
                    {"text": "2 + 2 = 4."}
                ]},
                user("And doubled?")
            ])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors() {
    let s = setup().await;
    for stream in [false, true] {
        let limited = s.call(json!({"model": "bedrock/error-429", "input": "hi"}), stream).await;
        assert_eq!(limited.status, 429, "{}", limited.body);
        assert_eq!(limited.body["error"]["type"], "rate_limit_error");
        assert_eq!(limited.body["error"]["code"], "ThrottlingException");
        assert_eq!(
            limited.body["error"]["message"], "Too many requests, please wait before trying again.",
            "the provider's words are kept"
        );
        assert_eq!(limited.body["request_id"], limited.request_id.as_str());
        assert!(limited.headers.get("retry-after").is_none(), "Bedrock said nothing about when to come back");
        assert_eq!(limited.headers["x-mesh-routing-attempts"], "2", "a throttled call is retried once");

        for model in ["error-503", "error-424"] {
            let failed = s.call(json!({"model": format!("bedrock/{model}"), "input": "hi"}), stream).await;
            assert_eq!(failed.status, 502, "{model}: {}", failed.body);
            assert_eq!(failed.body["error"]["code"], "upstream_error", "{model}");
            assert_eq!(failed.body["error"]["type"], "api_error", "{model}");
            assert!(failed.headers.get("retry-after").is_none(), "{model}");
            assert_eq!(failed.headers["x-mesh-routing-attempts"], "2", "{model}: retried once");
            let record = s.usage(&failed).await;
            assert_eq!((record.status, record.cost.0), (UsageStatus::Error, 0), "{model}: audited at no cost");
        }

        let too_long = s.call(json!({"model": "bedrock/error-long", "input": "hi"}), stream).await;
        assert_eq!(too_long.status, 400, "{}", too_long.body);
        assert_eq!(too_long.body["error"]["code"], "context_length_exceeded");
        assert_eq!(too_long.body["error"]["param"], "input");
        assert_eq!(too_long.body["error"]["type"], "invalid_request_error");
        assert_eq!(too_long.body["error"]["message"], bedrock_stub::TOO_LONG);
        assert_eq!(too_long.headers["x-mesh-routing-attempts"], "1", "the request itself is at fault: no retry");

        // Bedrock refusing the gateway's own access is the gateway's fault; retrying the same
        // provider cannot help, so the next row (none here) is tried at once.
        let denied = s.call(json!({"model": "bedrock/error-403", "input": "hi"}), stream).await;
        assert_eq!(denied.status, 502, "{}", denied.body);
        assert_eq!(denied.body["error"]["type"], "api_error");
        assert_eq!(denied.body["error"]["code"], "upstream_error");
        assert!(!denied.body.to_string().contains("access"), "the provider's words stay in the logs: {}", denied.body);
        assert_eq!(denied.headers["x-mesh-routing-attempts"], "1");
    }
    // Every attempt reached the stub, signed.
    for (model, calls) in [("error-429", 4), ("error-503", 4), ("error-424", 4), ("error-long", 2), ("error-403", 2)] {
        let requests = s.requests_for(model);
        assert_eq!(requests.len(), calls, "{model}");
        assert!(requests.iter().all(|r| r.signature.is_ok()), "{model}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exception_mid_stream_fails_the_response() {
    let s = setup().await;
    let answer = s.call(json!({"model": "bedrock/stream-error", "input": "Tell a story"}), true).await;
    assert_eq!(answer.status, 200);
    let last = answer.events.last().unwrap();
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["response"]["status"], "failed");
    let error = last["response"]["error"]["message"].as_str().unwrap();
    assert!(error.contains(bedrock_stub::STREAM_ERROR) && error.contains("modelStreamErrorException"), "{last}");
    assert_eq!(last["response"]["output"][0]["content"][0]["text"], "Once ");
    let record = s.usage(&answer).await;
    assert_eq!(record.status, UsageStatus::Failed);
    // Bedrock reports usage only in the `metadata` event that closes a stream: a broken one
    // leaves nothing to charge.
    assert_eq!((record.tokens.input_tokens, record.tokens.output_tokens), (0, 0));
    assert_eq!(record.cost.0, 0);
    assert_eq!(s.stub.last().raw_path, path("stream-error", true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_bedrock_cannot_do_is_refused_before_the_call() {
    let s = setup().await;
    for (body, code, param) in [
        (
            json!({"model": "bedrock/claude-sonnet-4", "input": "hi", "tools": [{"type": "web_search_preview"}]}),
            "unsupported_tool",
            "tools[0].type",
        ),
        (json!({"model": "bedrock/claude-sonnet-4", "input": "hi", "seed": 7}), "unsupported_parameter", "seed"),
        (
            json!({"model": "bedrock/tools-one", "input": "hi", "tools": [weather_tool()], "parallel_tool_calls": false}),
            "unsupported_parameter",
            "parallel_tool_calls",
        ),
        (
            json!({"model": "bedrock/llama", "input": "hi", "reasoning": {"effort": "high"}}),
            "unsupported_parameter",
            "reasoning.effort",
        ),
        (
            json!({"model": "bedrock/tools-one", "tools": [weather_tool()], "tool_choice": "none", "input": [
                {"role": "user", "content": "Weather?"},
                {"type": "function_call", "call_id": CALL_ONE, "name": "get_weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": CALL_ONE, "output": "18C"}
            ]}),
            "unsupported_parameter",
            "tool_choice",
        ),
        (
            json!({"model": "bedrock/claude-sonnet-4", "input": [{"role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "https://example.com/cat.png"}
            ]}]}),
            "unsupported_parameter",
            "input[0].content[1]",
        ),
    ] {
        for stream in [false, true] {
            let answer = s.call(body.clone(), stream).await;
            assert_eq!(answer.status, 400, "{}", answer.body);
            assert_eq!(answer.body["error"]["code"], code);
            assert_eq!(answer.body["error"]["param"], param);
            assert!(answer.body["error"]["message"].as_str().unwrap().contains("`bedrock`"), "{}", answer.body);
        }
    }
    assert!(s.stub.requests().is_empty(), "nothing reached the provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_scenarios() {
    let s = setup().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/bedrock_scenarios.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            format!("{}/v1", s.gw.url),
            s.secret.clone(),
            "bedrock/claude-sonnet-4".to_owned(),
            "bedrock/tools-one".to_owned(),
        ])
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python SDK failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("bedrock-scenarios-ok"));
    // Plain text ×3 and the round trip's two turns ×3 reached the provider, each signed; one of
    // each kind went through ConverseStream per streaming mode.
    let requests = s.stub.requests();
    assert_eq!(requests.len(), 9);
    assert!(requests.iter().all(|r| r.signature.is_ok()));
    assert_eq!(requests.iter().filter(|r| r.operation == "converse-stream").count(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_and_pdfs_go_as_bytes() {
    let s = setup().await;
    for stream in [false, true] {
        let answer = s
            .call(
                json!({"model": "bedrock/claude-sonnet-4", "input": [{"role": "user", "content": [
                    {"type": "input_text", "text": "Describe these."},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
                    {"type": "input_file", "filename": "q3 report.pdf", "file_data": "data:application/pdf;base64,JVBERi0xLjQ="}
                ]}]}),
                stream,
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(without_ids(&answer.body["output"]), json!([message(bedrock_stub::TEXT)]));
        assert_eq!(
            s.stub.last_request().body["messages"],
            json!([{"role": "user", "content": [
                {"text": "Describe these."},
                {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}},
                {"document": {"format": "pdf", "name": "q3 report", "source": {"bytes": "JVBERi0xLjQ="}}}
            ]}])
        );
    }
}

/// Bedrock reads `s3://` sources with the gateway's own AWS role: refused unless the operator
/// allowed the bucket (`MESH_BEDROCK_S3_BUCKETS`), passed on as an S3 location when allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_images_need_an_allowed_bucket() {
    let image = |url: &str| {
        json!({"model": "bedrock/claude-sonnet-4", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": url}]}]})
    };
    let closed = setup().await;
    for stream in [false, true] {
        let answer = closed.call(image("s3://media-in/cat.png"), stream).await;
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert_eq!(answer.body["error"]["type"], "invalid_request_error");
        assert_eq!(answer.body["error"]["code"], "invalid_value");
        assert_eq!(answer.body["error"]["param"], "input[0].content[1].image_url");
        assert!(answer.body["error"]["message"].as_str().unwrap().contains("MESH_BEDROCK_S3_BUCKETS"));
    }
    assert!(closed.stub.requests().is_empty(), "nothing reached Bedrock");

    let open = setup_with(|c| c.bedrock_s3_buckets = vec!["media-in".to_owned()]).await;
    for stream in [false, true] {
        let answer = open.call(image("s3://media-in/cats/cat.png"), stream).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            open.stub.last_request().body["messages"][0]["content"][1],
            json!({"image": {"format": "png", "source": {"s3Location": {"uri": "s3://media-in/cats/cat.png"}}}})
        );
    }
    let answer = open.call(image("s3://media-in-other/cat.png"), false).await;
    assert_eq!(
        (answer.status, answer.body["error"]["code"].as_str()),
        (400, Some("invalid_value")),
        "only the named bucket"
    );
    assert_eq!(open.stub.requests().len(), 2);
}

/// A Responses conversation may carry earlier function calls without offering tools this turn;
/// Bedrock refuses `toolUse`/`toolResult` blocks unless `toolConfig` is defined, so the gateway
/// must send one (or refuse the request itself) rather than forward a request Bedrock rejects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_with_function_calls_but_no_tools() {
    let s = setup().await;
    let input = json!([
        {"role": "user", "content": "What's the weather in Paris?"},
        {"type": "function_call", "call_id": CALL_ONE, "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
        {"type": "function_call_output", "call_id": CALL_ONE, "output": "18C and sunny"},
        {"role": "user", "content": "Thanks. Summarise."}
    ]);
    for stream in [false, true] {
        let answer = s.call(json!({"model": "bedrock/claude-sonnet-4", "input": input}), stream).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(without_ids(&answer.body["output"]), json!([message(bedrock_stub::TEXT)]));
        let sent = s.stub.last_request().body;
        assert_eq!(
            sent["messages"],
            json!([
                user("What's the weather in Paris?"),
                {"role": "assistant", "content": [tool_use(CALL_ONE, "Paris")]},
                {"role": "user", "content": [tool_result(CALL_ONE, "18C and sunny"), {"text": "Thanks. Summarise."}]}
            ])
        );
        assert!(sent["toolConfig"]["tools"].as_array().is_some_and(|t| !t.is_empty()), "{sent}");
    }
}

/// `requestMetadata` keys and values must match `[a-zA-Z0-9\s:_@$#=/+,-.]{0,256}`; a key's
/// owner is free text, so the metadata the gateway derives from it must still fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_outside_the_metadata_alphabet_still_reach_bedrock() {
    let s = setup().await;
    let (secret, _) = s.gw.create_key(|key| key.owner = "R&D (Zoë's team)".to_owned()).await;
    for stream in [false, true] {
        let mut body = json!({"model": "bedrock/claude-sonnet-4", "input": "Say hello"});
        if stream {
            body["stream"] = json!(true);
        }
        let response = s.gw.post(&secret, &body).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "{text}");
        assert!(text.contains(bedrock_stub::TEXT), "{text}");
        let sent = s.stub.last_request().body;
        for (key, value) in sent["requestMetadata"].as_object().into_iter().flatten() {
            let fits = |t: &str| {
                t.chars().all(|c| c.is_ascii_alphanumeric() || c.is_ascii_whitespace() || ":_@$#=/+,-.".contains(c))
            };
            assert!(fits(key) && fits(value.as_str().unwrap()), "{key}: {value}");
        }
    }
}
