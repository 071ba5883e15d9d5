//! Mesh owns conversation state on every provider: `item_reference`s are resolved from the
//! caller owner's stored responses and inlined before any provider sees them (an unknown or
//! foreign id is 404 `item_not_found` and never forwarded); the pass-through asks the provider to
//! keep nothing; responses echo the client's own fields (`previous_response_id`, no invented
//! `user` or tag); `input_items` lists `ResponseItem`s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh::config::{ProviderApi, ProviderConfig, Secret};
use mesh_tests::answers::read_answer;
use mesh_tests::anthropic_stub::AnthropicStub;
use mesh_tests::{Gateway, GatewayOptions};
use serde_json::{json, Value};

struct Setup {
    gw: Gateway,
    anthropic: AnthropicStub,
    alice: String,
    bob: String,
}

async fn setup() -> Setup {
    let anthropic = AnthropicStub::start().await;
    let gw = Gateway::start(GatewayOptions {
        providers: vec![ProviderConfig {
            name: "anthropic".into(),
            api: ProviderApi::Anthropic,
            base_url: anthropic.url.clone(),
            api_key: Some(Secret::new("sk-ant-test")),
            api_key_secret_arn: None,
            token_delay: std::time::Duration::ZERO,
        }],
        ..GatewayOptions::default()
    })
    .await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", None).await;
    gw.put_row("anthropic/claude-sonnet-4", "anthropic", "claude-sonnet-4-20250514", "3", "15", None).await;
    let (alice, _) = gw.create_key(|k| k.owner = "alice".into()).await;
    let (bob, _) = gw.create_key(|k| k.owner = "bob".into()).await;
    Setup { gw, anthropic, alice, bob }
}

impl Setup {
    /// Requests the provider of `model` has received so far.
    fn upstream_count(&self, model: &str) -> usize {
        if model.starts_with("anthropic/") {
            self.anthropic.requests().len()
        } else {
            self.gw.stub.requests().len()
        }
    }

    /// The last body the provider of `model` received.
    fn upstream_body(&self, model: &str) -> Value {
        if model.starts_with("anthropic/") {
            self.anthropic.last_request().body
        } else {
            self.gw.stub.last_request().body
        }
    }

    async fn create(&self, secret: &str, body: Value, stream: bool) -> Value {
        let mut body = body;
        if stream {
            body["stream"] = json!(true);
        }
        let answer = read_answer(self.gw.post(secret, &body).await, stream).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        if stream {
            for event in &answer.events {
                if let Some(response) = event.get("response") {
                    assert_eq!(
                        response["previous_response_id"], body["previous_response_id"],
                        "{} echoes previous_response_id",
                        event["type"]
                    );
                }
            }
        }
        answer.body
    }

    async fn get(&self, secret: &str, path: &str) -> (u16, Value) {
        let response = self.gw.http.get(format!("{}{path}", self.gw.url)).bearer_auth(secret).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }
}

/// The text of every message item an upstream body carries, in order, whatever its API.
fn texts(upstream: &Value) -> Vec<String> {
    let items = upstream.get("input").or_else(|| upstream.get("messages")).and_then(Value::as_array).unwrap();
    let mut texts = Vec::new();
    for item in items {
        match &item["content"] {
            Value::String(text) => texts.push(text.clone()),
            Value::Array(parts) => texts.extend(parts.iter().filter_map(|p| p["text"].as_str().map(str::to_owned))),
            _ => {}
        }
    }
    texts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_echoes_and_input_items_on_every_provider() {
    let s = setup().await;
    for model in ["openai/gpt-4o", "anthropic/claude-sonnet-4"] {
        for stream in [false, true] {
            let first = s.create(&s.alice, json!({"model": model, "input": "My name is Ada."}), stream).await;
            let first_id = first["id"].as_str().unwrap();
            assert_eq!(first["previous_response_id"], Value::Null);
            assert_eq!(first["user"], Value::Null, "{model}: Mesh invents no user");
            assert!(first.get("safety_identifier").is_none_or(Value::is_null), "{model}: the owner tag stays upstream");
            let upstream = s.upstream_body(model);
            assert!(upstream.get("user").is_none(), "{model}: the provider never learns the owner's name");
            let assistant = first["output"].as_array().unwrap().iter().find(|i| i["type"] == "message").unwrap();
            let assistant_id = assistant["id"].as_str().unwrap();
            assert_eq!(
                mesh::ids::response_of_item(assistant_id).as_deref(),
                Some(first_id),
                "{model}: output item ids are Mesh's and name their response"
            );
            let answer_text = assistant["content"][0]["text"].as_str().unwrap().to_owned();

            // Continued by previous_response_id: echoed on the object and every event.
            let second = s
                .create(
                    &s.alice,
                    json!({"model": model, "input": "And now?", "previous_response_id": first_id}),
                    stream,
                )
                .await;
            assert_eq!(second["previous_response_id"], first_id, "{model}");
            assert_eq!(second["store"], true, "{model}: the client's store, not the one sent upstream");

            // Continued by sending the output back (the SDKs' manual loop): its ids are Mesh's and
            // name nothing upstream, where nothing is stored, so they do not go.
            let mut resent = vec![json!({"role": "user", "content": "My name is Ada."})];
            resent.extend(first["output"].as_array().unwrap().iter().cloned());
            resent.push(json!({"role": "user", "content": "Again?"}));
            s.create(&s.alice, json!({"model": model, "input": resent}), stream).await;
            let upstream = s.upstream_body(model);
            assert!(!upstream.to_string().contains(assistant_id), "{model}: {upstream}");
            assert_eq!(texts(&upstream).len(), 3, "{model}");

            // Continued by item_reference (the Vercel AI SDK's default with store on).
            let before = s.upstream_count(model);
            let third = s
                .create(
                    &s.alice,
                    json!({"model": model, "input": [
                        {"role": "user", "content": "My name is Ada."},
                        {"type": "item_reference", "id": assistant_id},
                        {"role": "user", "content": "What is my name?"}]}),
                    stream,
                )
                .await;
            assert_eq!(s.upstream_count(model), before + 1);
            let upstream = s.upstream_body(model);
            assert_eq!(
                texts(&upstream),
                vec!["My name is Ada.".to_owned(), answer_text.clone(), "What is my name?".to_owned()],
                "{model}: the referenced item is inlined"
            );
            assert!(!upstream.to_string().contains(assistant_id), "{model}: Mesh's ids never reach the provider");
            if model.starts_with("openai/") {
                assert_eq!(upstream["store"], false, "the provider keeps nothing");
                assert!(upstream["include"].as_array().unwrap().contains(&json!("reasoning.encrypted_content")));
            }

            // Its input items: ResponseItems, the reference resolved to the item it names.
            let third_id = third["id"].as_str().unwrap();
            let (status, items) = s.get(&s.alice, &format!("/v1/responses/{third_id}/input_items?order=asc")).await;
            assert_eq!(status, 200, "{items}");
            let data = items["data"].as_array().unwrap();
            assert_eq!(data.len(), 3);
            for item in data {
                assert_eq!((item["type"].as_str(), item["status"].as_str()), (Some("message"), Some("completed")));
                assert!(item["id"].as_str().is_some_and(|id| !id.is_empty()));
            }
            assert_eq!(data[0]["content"], json!([{"type": "input_text", "text": "My name is Ada."}]));
            assert_eq!(data[1]["id"], assistant_id);
            assert_eq!(data[1]["content"][0]["type"], "output_text");
            assert_eq!(data[1]["content"][0]["text"], answer_text.as_str());
            assert_eq!(items["first_id"], data[0]["id"]);

            // Another owner's item, and one that never existed: 404, nothing forwarded.
            let before = s.upstream_count(model);
            for (secret, id) in [(&s.bob, assistant_id.to_owned()), (&s.alice, format!("msg_{}o9", &first_id[5..]))] {
                let response = s
                    .gw
                    .post(
                        secret,
                        &json!({"model": model, "input": [{"role": "user", "content": "x"}, {"type": "item_reference", "id": id}]}),
                    )
                    .await;
                assert_eq!(response.status(), 404, "{model}: {id}");
                let err: Value = response.json().await.unwrap();
                assert_eq!(err["error"]["code"], "item_not_found");
                assert_eq!(err["error"]["param"], "input[1]");
            }
            let response = s.gw.post(&s.alice, &json!({"model": model, "input": [{"id": "msg_unknown"}]})).await;
            assert_eq!(response.status(), 404, "a typeless reference is a reference too");
            assert_eq!(s.upstream_count(model), before, "{model}: no unresolved reference reaches a provider");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_objects_and_background_are_refused_clearly() {
    let s = setup().await;
    let response =
        s.gw.post(&s.alice, &json!({"model": "openai/gpt-4o", "input": "x", "conversation": "conv_1"})).await;
    assert_eq!(response.status(), 400);
    let err: Value = response.json().await.unwrap();
    assert_eq!(
        (err["error"]["code"].as_str(), err["error"]["param"].as_str()),
        (Some("unsupported_parameter"), Some("conversation"))
    );
    let response = s.gw.post(&s.alice, &json!({"model": "openai/gpt-4o", "input": "x", "background": true})).await;
    assert_eq!(response.status(), 400);
    let err: Value = response.json().await.unwrap();
    assert_eq!(err["error"]["param"], "background");
    let stored = s.create(&s.alice, json!({"model": "openai/gpt-4o", "input": "x"}), false).await;
    let items = format!("/v1/responses/{}/input_items", stored["id"].as_str().unwrap());
    let (status, err) = s.get(&s.alice, &format!("{items}?include[]=nonsense")).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("include")), "{err}");
    let (status, list) = s.get(&s.alice, &format!("{items}?include[]=reasoning.encrypted_content")).await;
    assert_eq!((status, list["data"].as_array().map(Vec::len)), (200, Some(1)), "{list}");
}
