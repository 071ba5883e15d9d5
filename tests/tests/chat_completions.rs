//! `POST /v1/chat/completions` end to end through Chat Completions providers (a `chat` provider,
//! `groq`, and OpenAI's own `responses` provider, `oai`, both at the chat stub): the request
//! forwarded untouched, answers and streams in OpenAI's shape, the usage chunk only when asked,
//! exact billing, and the stages shared with `/v1/responses`: key defaults, templates, plugins,
//! one rate-limit window for both endpoints, spend caps, failover with the routing headers,
//! errors in the envelope, and a client that hangs up still billed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh::config::{ProviderApi, ProviderConfig, Secret};
use mesh::domain::UsageStatus;
use mesh::money::Nanos;
use mesh_tests::chat_client::{chat, post_chat, read};
use mesh_tests::chat_stub::{tool_answer, ChatStub, CALLS_TWO, CALL_ONE, CHAT_JSON, CHAT_TEXT, CHAT_TRUNCATED};
use mesh_tests::{Gateway, GatewayOptions};
use serde_json::{json, Value};

/// Catalog id → (provider, upstream model id, which picks the stub's behaviour).
const MODELS: [(&str, &str, &str); 8] = [
    ("groq/llama", "groq", "llama-3.3-70b-versatile"),
    ("groq/tools-one", "groq", "tools-one"),
    ("groq/tools-two", "groq", "tools-two"),
    ("groq/json", "groq", "json"),
    ("groq/length", "groq", "length"),
    ("groq/error-429", "groq", "error-429"),
    ("openai/gpt-4o", "oai", "gpt-4o"),
    ("mesh/echo", "echo", "echo"),
];

/// 20 input tokens at $0.59/Mtok + 10 output tokens at $0.79/Mtok, in nano-USD.
const COST: u64 = 20 * 590 + 10 * 790;

struct Setup {
    gw: Gateway,
    chat: ChatStub,
    secret: String,
    key_id: String,
}

fn provider(name: &str, api: ProviderApi, base_url: &str, key: Option<&str>) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        api,
        base_url: base_url.into(),
        api_key: key.map(Secret::new),
        api_key_secret_arn: None,
        token_delay: std::time::Duration::ZERO,
    }
}

async fn setup_with(change: impl FnOnce(&mut mesh::domain::ApiKey)) -> Setup {
    let chat = ChatStub::start().await;
    let gw = Gateway::start(GatewayOptions {
        providers: vec![
            provider("groq", ProviderApi::Chat, &chat.url, Some("gsk-test")),
            provider("oai", ProviderApi::Responses, &chat.url, Some("sk-oai-test")),
            provider("echo", ProviderApi::Echo, "", None),
        ],
        ..GatewayOptions::default()
    })
    .await;
    for (model, provider, upstream) in MODELS {
        gw.put_row(model, provider, upstream, "0.59", "0.79", None).await;
    }
    let (secret, key) = gw.create_key(change).await;
    Setup { gw, chat, secret, key_id: key.id }
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_is_forwarded_untouched_and_the_answer_has_openais_shape() {
    let s = setup_with(|k| k.rpm = Some(100)).await;
    let messages = json!([{"role": "system", "content": "Be brief."},
        {"role": "user", "name": "ada", "content": [{"type": "text", "text": "hi"}]}]);
    let answer = chat(
        &s.gw,
        &s.secret,
        &json!({"model": "groq/llama", "messages": messages, "temperature": 0.3, "top_k": 40,
            "logit_bias": {"50256": -100}, "n": 1, "store": false, "session_id": "sess-1", "plugins": []}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = &answer.body;
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"), "{body}");
    assert_ne!(body["id"], "chatcmpl-stub0001", "Mesh's own id");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "groq/llama", "the catalog id");
    assert!(body["created"].is_u64());
    assert_eq!(body["system_fingerprint"], "fp_stub", "the provider's fields are kept");
    assert_eq!(body["choices"][0]["message"]["content"], CHAT_TEXT);
    assert_eq!(body["choices"][0]["message"]["refusal"], Value::Null);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 20);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
    assert_eq!(body["usage"]["completion_tokens_details"]["reasoning_tokens"], 2);
    assert!(answer.request_id.starts_with("req_"));
    assert_eq!(answer.headers["x-ratelimit-limit-requests"], "100");
    assert_eq!(answer.headers["x-ratelimit-remaining-requests"], "99");
    assert_eq!(answer.headers["x-mesh-served-provider"], "groq");

    let sent = s.chat.last_request();
    assert_eq!(sent.headers["authorization"], "Bearer gsk-test");
    assert_eq!(
        sent.body,
        json!({"model": "llama-3.3-70b-versatile", "messages": messages, "temperature": 0.3, "top_k": 40,
            "logit_bias": {"50256": -100}, "n": 1, "store": false}),
        "untouched but for the model and Mesh's own fields"
    );

    let record = s.gw.usage_of(&answer.request_id).await;
    assert_eq!((record.model.as_str(), record.provider.as_str()), ("groq/llama", "groq"));
    assert_eq!(record.session_id.as_deref(), Some("sess-1"));
    assert_eq!(
        (
            record.tokens.input_tokens,
            record.tokens.cached_input_tokens,
            record.tokens.output_tokens,
            record.tokens.reasoning_tokens
        ),
        (20, 4, 10, 2)
    );
    assert_eq!(record.cost, Nanos(COST));
    assert_eq!(record.status, UsageStatus::Success);
    assert_eq!(s.gw.key(&s.key_id).await.spent, Nanos(COST), "the key is charged exactly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_data_frames_ending_in_done_with_usage_only_when_asked() {
    let s = setup().await;
    let body = json!({"model": "groq/llama", "messages": [user("hi")], "stream": true});
    let plain = chat(&s.gw, &s.secret, &body).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.headers["content-type"], "text/event-stream");
    assert!(plain.done);
    assert_eq!(plain.text(), CHAT_TEXT);
    assert_eq!(plain.finish_reason().as_deref(), Some("stop"));
    assert!(plain.chunks.iter().all(|c| c.get("usage").is_none()), "no usage unless asked");
    assert!(plain.chunks.iter().all(|c| c["model"] == "groq/llama"));
    assert_eq!(s.chat.last_request().body["stream_options"], json!({"include_usage": true}), "Mesh always asks");
    let record = s.gw.usage_of(&plain.request_id).await;
    assert_eq!((record.tokens.input_tokens, record.tokens.output_tokens, record.cost), (20, 10, Nanos(COST)));

    let mut asked = body.clone();
    asked["stream_options"] = json!({"include_usage": true});
    let with_usage = chat(&s.gw, &s.secret, &asked).await;
    assert!(with_usage.done);
    let last = with_usage.chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "the usage chunk comes last");
    assert_eq!(last["usage"]["prompt_tokens"], 20);
    assert_eq!(last["usage"]["completion_tokens"], 10);
    assert_eq!(with_usage.text(), CHAT_TEXT);

    let cut = chat(&s.gw, &s.secret, &json!({"model": "groq/length", "messages": [user("hi")], "stream": true})).await;
    assert_eq!((cut.text().as_str(), cut.finish_reason().as_deref()), (CHAT_TRUNCATED, Some("length")));
    assert_eq!(s.gw.usage_of(&cut.request_id).await.status, UsageStatus::Incomplete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_is_called_on_its_chat_completions_endpoint_with_key_defaults() {
    let s = setup_with(|k| {
        k.default_params = json!({"max_output_tokens": 50, "temperature": 0.7, "reasoning": {"effort": "low"}})
            .as_object()
            .cloned()
            .unwrap();
    })
    .await;
    for stream in [false, true] {
        let answer = chat(
            &s.gw,
            &s.secret,
            &json!({"model": "openai/gpt-4o", "messages": [user("hi")], "temperature": 0.1, "stream": stream}),
        )
        .await;
        assert_eq!((answer.status, answer.text().as_str()), (200, CHAT_TEXT), "{}", answer.body);
        let sent = s.chat.last_request();
        assert_eq!(sent.headers["authorization"], "Bearer sk-oai-test");
        assert_eq!(sent.body["model"], "gpt-4o");
        assert_eq!(sent.body["temperature"], 0.1, "the request wins over the key's default");
        assert_eq!(sent.body["max_completion_tokens"], 50, "OpenAI's name for the key's default limit");
        assert_eq!(sent.body["reasoning_effort"], "low");
        assert!(sent.body.get("max_tokens").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_round_trip_and_parallel_calls() {
    let s = setup().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    for stream in [false, true] {
        let first = chat(
            &s.gw,
            &s.secret,
            &json!({"model": "groq/tools-one", "messages": [user("Weather in Paris?")], "tools": tools,
                "tool_choice": "auto", "parallel_tool_calls": true, "stream": stream}),
        )
        .await;
        assert_eq!(first.finish_reason().as_deref(), Some("tool_calls"));
        let calls = first.tool_calls();
        assert_eq!(
            calls,
            vec![
                json!({"id": CALL_ONE, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}})
            ]
        );
        assert_eq!(s.chat.last_request().body["tools"], tools, "tools go out as sent");
        let second = chat(
            &s.gw,
            &s.secret,
            &json!({"model": "groq/tools-one", "tools": tools, "stream": stream, "messages": [
                user("Weather in Paris?"),
                {"role": "assistant", "content": null, "tool_calls": calls},
                {"role": "tool", "tool_call_id": CALL_ONE, "content": "18C and sunny"}]}),
        )
        .await;
        assert_eq!(second.text(), tool_answer("18C and sunny"));
        assert_eq!(second.finish_reason().as_deref(), Some("stop"));

        let two = chat(
            &s.gw,
            &s.secret,
            &json!({"model": "groq/tools-two", "messages": [user("x")], "tools": tools, "stream": stream}),
        )
        .await;
        let calls = two.tool_calls();
        let ids: Vec<&str> = calls.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, CALLS_TWO);
        assert_eq!(two.tool_calls()[1]["function"]["arguments"], "{\"timezone\": \"Europe/Paris\"}");
    }
    let json = chat(
        &s.gw,
        &s.secret,
        &json!({"model": "groq/json", "messages": [user("x")],
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}}),
    )
    .await;
    assert_eq!(json.text(), CHAT_JSON);
    assert_eq!(s.chat.last_request().body["response_format"]["json_schema"]["name"], "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_go_before_the_messages_and_the_key_names_the_model() {
    let s = setup_with(|k| k.default_model = Some("groq/llama".into())).await;
    let created =
        s.gw.http
            .post(format!("{}/v1/templates", s.gw.url))
            .bearer_auth(&s.secret)
            .json(&json!({"name": "french", "system": "Answer in {{ lang }}.",
            "messages": [{"role": "user", "content": "I am {{who}}."}, {"role": "assistant", "content": "Bonjour."}],
            "params": {"temperature": 0.1}}))
            .send()
            .await
            .unwrap();
    assert_eq!(created.status(), 201);
    let template: Value = created.json().await.unwrap();
    let answer = chat(
        &s.gw,
        &s.secret,
        &json!({"template": "french", "variables": {"lang": "French", "who": "Ada"}, "messages": [user("How are you?")]}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["model"], "groq/llama", "the key's default model");
    let sent = s.chat.last_request().body;
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "I am Ada."},
            {"role": "assistant", "content": "Bonjour."}, user("How are you?")])
    );
    assert_eq!(sent["temperature"], 0.1, "the template's parameters");
    for field in ["template", "variables"] {
        assert!(sent.get(field).is_none(), "{field} stays in Mesh");
    }
    let record = s.gw.usage_of(&answer.request_id).await;
    assert_eq!(record.template_id.as_deref(), template["id"].as_str());
    let missing = chat(&s.gw, &s.secret, &json!({"template": "french", "messages": [user("x")]})).await;
    assert_eq!((missing.status, missing.body["error"]["code"].as_str()), (400, Some("missing_template_variables")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rate_limit_window_spans_both_endpoints() {
    let s = setup_with(|k| k.rpm = Some(2)).await;
    s.gw.put_price("openai/gpt-4o-mini", "gpt-4o-mini", "0.15", "0.60", None).await;
    let responses = s.gw.post(&s.secret, &json!({"model": "openai/gpt-4o-mini", "input": "hi"})).await;
    assert_eq!(responses.status(), 200);
    assert_eq!(responses.headers()["x-ratelimit-remaining-requests"], "1");
    let answer = chat(&s.gw, &s.secret, &json!({"model": "groq/llama", "messages": [user("hi")]})).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["x-ratelimit-remaining-requests"], "0", "the chat request counted in the same window");
    let refused = chat(&s.gw, &s.secret, &json!({"model": "groq/llama", "messages": [user("hi")]})).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body["error"]["code"], "rate_limit_exceeded");
    assert!(refused.body["error"]["message"].as_str().unwrap().contains("RPM"));
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(refused.body["request_id"], refused.headers["x-mesh-request-id"].to_str().unwrap());
    let responses = s.gw.post(&s.secret, &json!({"model": "openai/gpt-4o-mini", "input": "hi"})).await;
    assert_eq!(responses.status(), 429, "and the other endpoint is refused too");
    assert_eq!(s.chat.requests().len(), 1, "refused requests never reach a provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_in_the_error_envelope_before_any_provider_call() {
    let s = setup().await;
    let cases = [
        (
            json!({"model": "groq/llama", "messages": [user("x")], "store": true}),
            400,
            "unsupported_parameter",
            Some("store"),
        ),
        (json!({"model": "groq/llama"}), 400, "missing_required_parameter", Some("messages")),
        (
            json!({"model": "groq/llama", "messages": [user("x")], "tools": [{"type": "function", "function": {"name": "bad name"}}]}),
            400,
            "invalid_value",
            Some("tools[0].function.name"),
        ),
        (
            json!({"model": "groq/llama", "messages": [{"role": "tool", "content": "x"}]}),
            400,
            "missing_required_parameter",
            Some("messages[0].tool_call_id"),
        ),
        (json!({"model": "acme/nothing", "messages": [user("x")]}), 404, "model_not_found", Some("model")),
        (
            json!({"model": "groq/llama", "messages": [user("x")], "plugins": [{"id": "web"}]}),
            400,
            "unsupported_plugin",
            Some("plugins"),
        ),
    ];
    for (body, status, code, param) in cases {
        let answer = chat(&s.gw, &s.secret, &body).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        let error = &answer.body["error"];
        assert_eq!((error["code"].as_str(), error["param"].as_str()), (Some(code), param), "{body}");
        assert_eq!(error["type"], "invalid_request_error");
        assert!(answer.body["request_id"].as_str().unwrap().starts_with("req_"));
    }
    let store = chat(&s.gw, &s.secret, &json!({"model": "groq/llama", "messages": [user("x")], "store": true})).await;
    assert!(store.body["error"]["message"].as_str().unwrap().contains("does not store chat completions"));
    let unauthenticated = read(
        s.gw.http
            .post(format!("{}/v1/chat/completions", s.gw.url))
            .json(&json!({"messages": []}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (unauthenticated.status, unauthenticated.body["error"]["code"].as_str()),
        (401, Some("missing_api_key"))
    );
    assert!(s.chat.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_keep_their_status_and_failover_names_the_serving_row() {
    let s = setup().await;
    let limited = chat(&s.gw, &s.secret, &json!({"model": "groq/error-429", "messages": [user("x")]})).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.headers["retry-after"], "7");
    assert_eq!(limited.body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(limited.body["error"]["type"], "tokens", "the provider's own words");

    // `dead` (a closed port) is the model's default row, `groq` its failover row.
    let first = s.gw.put_row("f/chat", "dead", "gpt-4o", "2.50", "10.00", None).await;
    let mut backup = s.gw.put_row("f/chat", "groq", "llama-3.3-70b-versatile", "0.59", "0.79", None).await;
    backup.is_default = false;
    s.gw.stores.prices.put_price(&backup).await.unwrap();
    s.gw.stores.prices.put_price(&first).await.unwrap();
    for stream in [false, true] {
        let answer =
            chat(&s.gw, &s.secret, &json!({"model": "f/chat", "messages": [user("hi")], "stream": stream})).await;
        assert_eq!((answer.status, answer.text().as_str()), (200, CHAT_TEXT));
        assert_eq!(answer.headers["x-mesh-routing-fallback"], "true");
        assert_eq!(answer.headers["x-mesh-served-provider"], "groq");
        let record = s.gw.usage_of(&answer.request_id).await;
        assert_eq!(
            (record.provider.as_str(), record.cost),
            ("groq", Nanos(COST)),
            "billed at the serving row's prices"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_caps_hold_on_chat_completions() {
    // Hard cap: the worst case (1M output tokens at $0.79/Mtok) does not fit $0.01.
    let hard = setup_with(|k| {
        k.spend_cap = Some(Nanos(10_000_000));
        k.spend_cap_mode = mesh::domain::CapMode::Hard;
    })
    .await;
    let refused =
        chat(&hard.gw, &hard.secret, &json!({"model": "groq/llama", "messages": [user("x")], "max_tokens": 1_000_000}))
            .await;
    assert_eq!((refused.status, refused.body["error"]["code"].as_str()), (402, Some("spend_limit_exceeded")));
    let fits =
        chat(&hard.gw, &hard.secret, &json!({"model": "groq/llama", "messages": [user("x")], "max_tokens": 10_000}))
            .await;
    assert_eq!(fits.status, 200);
    // Two choices of 10 000 tokens each ($0.0158) do not fit.
    let two = chat(
        &hard.gw,
        &hard.secret,
        &json!({"model": "groq/llama", "messages": [user("x")], "max_tokens": 10_000, "n": 2}),
    )
    .await;
    assert_eq!((two.status, two.body["error"]["code"].as_str()), (402, Some("spend_limit_exceeded")));
    assert_eq!(hard.chat.requests().len(), 1);
    // Soft cap: the first request spends past it, the next one is refused.
    let soft = setup_with(|k| k.spend_cap = Some(Nanos(1_000))).await;
    assert_eq!(
        chat(&soft.gw, &soft.secret, &json!({"model": "groq/llama", "messages": [user("x")]})).await.status,
        200
    );
    let over = chat(&soft.gw, &soft.secret, &json!({"model": "groq/llama", "messages": [user("x")]})).await;
    assert_eq!(over.status, 402);
    // A prepaid owner balance is debited exactly and refuses once used up.
    let prepaid = setup_with(|k| k.owner = "prepaid-chat".into()).await;
    prepaid.gw.stores.balances.add_balance("prepaid-chat", 10_000).await.unwrap();
    let paid = chat(&prepaid.gw, &prepaid.secret, &json!({"model": "groq/llama", "messages": [user("x")]})).await;
    assert_eq!(paid.status, 200);
    prepaid.gw.usage_of(&paid.request_id).await;
    assert_eq!(
        prepaid.gw.stores.balances.balance("prepaid-chat").await.unwrap(),
        Some(10_000 - i64::try_from(COST).unwrap())
    );
    let empty = chat(&prepaid.gw, &prepaid.secret, &json!({"model": "groq/llama", "messages": [user("x")]})).await;
    assert_eq!((empty.status, empty.body["error"]["code"].as_str()), (402, Some("spend_limit_exceeded")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_plugins_run_on_the_messages() {
    let s = setup().await;
    let answer = chat(
        &s.gw,
        &s.secret,
        &json!({"model": "groq/llama", "plugins": [{"id": "pii-redaction"}],
            "messages": [user("Mail ada@example.com"), {"role": "user", "content": [{"type": "text", "text": "or bob@example.org"}]}]}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let sent = s.chat.last_request().body.to_string();
    assert!(!sent.contains("ada@example.com") && !sent.contains("bob@example.org"), "{sent}");
    assert!(s.chat.last_request().body.get("plugins").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_is_billed_for_what_the_provider_reports() {
    let s = setup().await;
    let words = "one two three four five six seven eight nine ten eleven twelve";
    let response = post_chat(
        &s.gw,
        &s.secret,
        &json!({"model": "mesh/echo", "messages": [user(words)], "stream": true,
            "metadata": {"echo_token_delay_ms": "30"}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let mut body = response.bytes_stream();
    use futures_util::StreamExt;
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: {"), "{first:?}");
    drop(body);
    let record = s.gw.usage_of(&request_id).await;
    assert_eq!(record.status, UsageStatus::ClientDisconnected);
    assert_eq!(record.tokens.output_tokens, 12, "the whole answer the provider produced");
    assert!(record.cost > Nanos::ZERO);
}
