//! Pass-through fidelity on the `responses` provider: what the client sends reaches the
//! provider (minus Mesh's own fields, plus defaults), and what the provider answers reaches the
//! client (with the catalog model id).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh_tests::{on_both_stores, Gateway, GatewayOptions, StoreKind};
use serde_json::{json, Value};

async fn fidelity(kind: StoreKind) {
    let gw = Gateway::start(GatewayOptions::on(kind)).await;
    gw.put_price("openai/gpt-4o", "gpt-4o-2024-08-06", "2.5", "10", Some("1.25")).await;
    let (secret, _) = gw
        .create_key(|k| {
            k.default_params = serde_json::Map::from_iter([
                ("temperature".to_owned(), json!(0.2)),
                ("max_output_tokens".to_owned(), json!(300)),
            ]);
        })
        .await;
    let request = json!({
        "model": "openai/gpt-4o",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        "instructions": "Be brief.",
        "temperature": 0.7,
        "metadata": {"team": "a"},
        "include": ["reasoning.encrypted_content"],
        "some_future_field": {"nested": [1, 2.5, "x"]},
        "session_id": "sess-1",
        "template": null,
        "variables": {"unused": "v"},
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}, "strict": true}}
    });
    let response = gw.post(&secret, &request).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();

    let sent = gw.stub.last_request();
    assert_eq!(sent.headers["authorization"], "Bearer sk-stub-upstream-secret");
    let up = sent.body;
    assert_eq!(up["model"], "gpt-4o-2024-08-06", "upstream model id substituted");
    assert_eq!(up["some_future_field"], request["some_future_field"], "unknown fields forwarded unchanged");
    assert_eq!(up["input"], request["input"]);
    assert_eq!(up["instructions"], "Be brief.");
    assert_eq!(up["metadata"], json!({"team": "a"}));
    assert_eq!(up["include"], json!(["reasoning.encrypted_content"]));
    assert_eq!(up["temperature"], 0.7, "the request wins over key defaults");
    assert_eq!(up["max_output_tokens"], 300, "key default fills an absent parameter");
    assert!(up.get("user").is_none(), "Mesh invents no user");
    assert_eq!(up["safety_identifier"], mesh::ids::safety_identifier("team-a"), "a hashed tag, never the owner's name");
    assert_eq!(up["store"], false, "Mesh keeps the conversation state, not the provider");
    assert_eq!(
        up["text"]["format"],
        json!({"type": "json_schema", "name": "r", "schema": {"type": "object"}, "strict": true})
    );
    for gateway_field in ["session_id", "template", "variables", "plugins", "response_format"] {
        assert!(up.get(gateway_field).is_none(), "{gateway_field} must not reach the provider");
    }

    assert_eq!(body["model"], "openai/gpt-4o", "the client sees the catalog id");
    assert_eq!(body["upstream_only_field"], json!({"kept": true}), "provider fields reach the client");
    assert_eq!(body["output"][0]["content"][0]["text"], "Hello from stub");
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("resp_") && !id.starts_with("resp_stub"), "Mesh's own response id, not the provider's");
    assert_eq!(body["usage"]["input_tokens"], 12);

    // Trace context is passed on to the provider.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    gw.http
        .post(format!("{}/v1/responses", gw.url))
        .bearer_auth(&secret)
        .header("traceparent", traceparent)
        .header("x-amzn-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793")
        .json(&json!({"model": "openai/gpt-4o", "input": "x"}))
        .send()
        .await
        .unwrap();
    let sent = gw.stub.last_request();
    assert_eq!(sent.headers["traceparent"], traceparent);
    assert_eq!(sent.headers["x-amzn-trace-id"], "Root=1-5759e988-bd862e3fe1be46a994272793");

    // A caller-supplied user is kept.
    gw.post(&secret, &json!({"model": "openai/gpt-4o", "input": "x", "user": "end-user-7"})).await;
    assert_eq!(gw.stub.last_request().body["user"], "end-user-7");
}
on_both_stores!(fidelity_on, fidelity);

#[tokio::test]
async fn default_models_apply_in_order() {
    let gw = Gateway::start(GatewayOptions {
        default_model: Some("openai/gpt-4o-mini".into()),
        ..GatewayOptions::default()
    })
    .await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", None).await;
    gw.put_price("openai/gpt-4o-mini", "gpt-4o-mini", "0.15", "0.6", None).await;
    let (with_default, _) = gw.create_key(|k| k.default_model = Some("openai/gpt-4o".into())).await;
    let (plain, _) = gw.create_key(|_| {}).await;
    let body: Value = gw.post(&with_default, &json!({"input": "x"})).await.json().await.unwrap();
    assert_eq!(body["model"], "openai/gpt-4o");
    assert_eq!(gw.stub.last_request().body["model"], "gpt-4o");
    let body: Value = gw.post(&plain, &json!({"input": "x"})).await.json().await.unwrap();
    assert_eq!(body["model"], "openai/gpt-4o-mini");
}

#[tokio::test]
async fn models_endpoint_lists_the_catalog() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", Some("1.25")).await;
    gw.put_price("openai/gpt-4o-mini", "gpt-4o-mini", "0.15", "0.6", Some("0.075")).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    let unauthenticated = gw.http.get(format!("{}/v1/models", gw.url)).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let list: Value =
        gw.http.get(format!("{}/v1/models", gw.url)).bearer_auth(&secret).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["object"], "list");
    let mini = list["data"].as_array().unwrap().iter().find(|m| m["id"] == "openai/gpt-4o-mini").unwrap();
    assert_eq!(mini["provider"], "openai");
    assert_eq!(mini["context_length"], 128_000);
    assert_eq!(mini["is_free"], false);
    assert_eq!(mini["pricing"]["input_usd_per_mtok"], "0.15");
    assert_eq!(mini["pricing"]["input_usd_per_ktok"], "0.00015");
    assert_eq!(mini["pricing"]["cached_input_usd_per_mtok"], "0.075");
    assert_eq!(mini["pricing"]["output_usd_per_ktok"], "0.0006");
}
