//! Stored responses and `previous_response_id`: retrieval, input items with pagination,
//! deletion, `store: false`, owner isolation, chains rebuilt by the gateway (streaming turns
//! included), concurrent branches, TTL expiry and cutting long chains to the context window.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures_util::StreamExt;
use mesh_tests::{on_both_stores, Gateway, GatewayOptions, StoreKind};
use serde_json::{json, Value};

async fn get(gw: &Gateway, secret: &str, path: &str) -> (u16, Value) {
    let response = gw.http.get(format!("{}{path}", gw.url)).bearer_auth(secret).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn create(gw: &Gateway, secret: &str, body: Value) -> Value {
    let response = gw.post(secret, &body).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn retrieval_chain_and_isolation(kind: StoreKind) {
    let gw = Gateway::start(GatewayOptions::on(kind)).await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", None).await;
    let (alice, _) = gw.create_key(|k| k.owner = "alice".into()).await;
    let (bob, _) = gw.create_key(|k| k.owner = "bob".into()).await;

    let first =
        create(&gw, &alice, json!({"model": "openai/gpt-4o", "input": "My name is Ada.", "instructions": "Be kind."}))
            .await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    let (status, stored) = get(&gw, &alice, &format!("/v1/responses/{first_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(stored, first, "the stored response is what the client got");
    let (status, err) = get(&gw, &bob, &format!("/v1/responses/{first_id}")).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("response_not_found")),
        "another owner's response does not exist"
    );

    let second = create(&gw, &alice, json!({"model": "openai/gpt-4o", "input": [{"role": "user", "content": "What is my name?"}], "previous_response_id": first_id})).await;
    let sent = gw.stub.last_request().body;
    assert!(sent.get("previous_response_id").is_none(), "the gateway rebuilt the conversation itself");
    let input = sent["input"].as_array().unwrap();
    assert_eq!(input.len(), 3);
    assert_eq!(input[0]["content"], "My name is Ada.");
    assert_eq!(input[1]["type"], "message");
    assert_eq!(input[1]["role"], "assistant");
    assert_eq!(input[1]["content"][0]["text"], "Hello from stub");
    assert!(input[1].get("id").is_none(), "ids of earlier items are not resent");
    assert_eq!(input[2]["content"], "What is my name?");
    assert_eq!(sent["instructions"], Value::Null, "instructions are not carried over, as on OpenAI");

    let third = create(
        &gw,
        &alice,
        json!({"model": "openai/gpt-4o", "input": "And again?", "previous_response_id": second["id"]}),
    )
    .await;
    assert_eq!(gw.stub.last_request().body["input"].as_array().unwrap().len(), 5, "three turns in order");
    let (status, err) = get(&gw, &alice, "/v1/responses/resp_nope").await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("response_not_found")));
    let response =
        gw.post(&bob, &json!({"model": "openai/gpt-4o", "input": "x", "previous_response_id": third["id"]})).await;
    assert_eq!(response.status(), 404, "a foreign id cannot be continued");
    let err: Value = response.json().await.unwrap();
    assert_eq!(err["error"]["code"], "response_not_found");
    assert_eq!(err["error"]["param"], "previous_response_id");

    // Input items of a turn, paginated.
    let third_id = third["id"].as_str().unwrap();
    let (status, items) = get(&gw, &alice, &format!("/v1/responses/{third_id}/input_items")).await;
    assert_eq!(status, 200);
    assert_eq!(items["object"], "list");
    assert_eq!(items["data"].as_array().unwrap().len(), 1);
    assert_eq!(items["data"][0]["content"], json!([{"type": "input_text", "text": "And again?"}]));
    assert_eq!(
        (items["data"][0]["type"].as_str(), items["data"][0]["status"].as_str()),
        (Some("message"), Some("completed"))
    );
    assert!(items["data"][0]["id"].as_str().unwrap().starts_with("msg_"));
    let many = create(
        &gw,
        &alice,
        json!({"model": "openai/gpt-4o", "input": [
        {"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "user", "content": "c"}]}),
    )
    .await;
    let many_id = many["id"].as_str().unwrap();
    let (_, page1) = get(&gw, &alice, &format!("/v1/responses/{many_id}/input_items?limit=2&order=asc")).await;
    assert_eq!(page1["has_more"], true);
    assert_eq!(page1["data"][0]["content"][0]["text"], "a");
    let after = page1["last_id"].as_str().unwrap();
    let (_, page2) =
        get(&gw, &alice, &format!("/v1/responses/{many_id}/input_items?limit=2&order=asc&after={after}")).await;
    assert_eq!(page2["has_more"], false);
    assert_eq!(page2["data"][0]["content"][0]["text"], "c");
    let (_, desc) = get(&gw, &alice, &format!("/v1/responses/{many_id}/input_items")).await;
    assert_eq!(desc["data"][0]["content"][0]["text"], "c", "newest first by default");

    // Delete: the owner only.
    let delete = gw.http.delete(format!("{}/v1/responses/{third_id}", gw.url)).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(delete.status(), 404);
    let delete =
        gw.http.delete(format!("{}/v1/responses/{third_id}", gw.url)).bearer_auth(&alice).send().await.unwrap();
    let deleted: Value = delete.json().await.unwrap();
    assert_eq!(deleted, json!({"id": third_id, "object": "response", "deleted": true}));
    assert_eq!(get(&gw, &alice, &format!("/v1/responses/{third_id}")).await.0, 404);

    // store: false keeps nothing.
    let unstored = create(&gw, &alice, json!({"model": "openai/gpt-4o", "input": "x", "store": false})).await;
    assert_eq!(get(&gw, &alice, &format!("/v1/responses/{}", unstored["id"].as_str().unwrap())).await.0, 404);
}
on_both_stores!(retrieval_on, retrieval_chain_and_isolation);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_turns_are_stored_and_branches_coexist() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", None).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    let response = gw.post(&secret, &json!({"model": "openai/gpt-4o", "input": "streamed turn", "stream": true})).await;
    let mut body = response.bytes_stream();
    let mut text = Vec::new();
    while let Some(chunk) = body.next().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(text).unwrap();
    let id = text.split("\"id\":\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    assert!(id.starts_with("resp_") && !id.starts_with("resp_stream"), "Mesh's own id: {id}");
    // Continue it twice at once: two branches, both answered and stored.
    let branch = |word: &'static str| {
        let gw = &gw;
        let secret = secret.clone();
        let id = id.clone();
        async move {
            create(gw, &secret, json!({"model": "openai/gpt-4o", "input": word, "previous_response_id": id})).await
        }
    };
    let (a, b) = tokio::join!(branch("left"), branch("right"));
    assert_ne!(a["id"], b["id"]);
    for (branch, word) in [(a, "left"), (b, "right")] {
        let (status, items) =
            get(&gw, &secret, &format!("/v1/responses/{}/input_items", branch["id"].as_str().unwrap())).await;
        assert_eq!(status, 200);
        assert_eq!(items["data"][0]["content"][0]["text"], word);
    }
    let inputs: Vec<Value> = gw.stub.requests().iter().skip(1).map(|r| r.body["input"].clone()).collect();
    for input in inputs {
        assert_eq!(input[0]["content"], "streamed turn", "both branches start from the streamed turn");
        assert_eq!(input[1]["content"][0]["text"], "Hello from stub");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_responses_are_gone() {
    let gw = Gateway::start(GatewayOptions {
        configure: |c| c.response_ttl = Duration::from_secs(1),
        ..GatewayOptions::default()
    })
    .await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", None).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    let first = create(&gw, &secret, json!({"model": "openai/gpt-4o", "input": "x"})).await;
    let id = first["id"].as_str().unwrap();
    assert_eq!(get(&gw, &secret, &format!("/v1/responses/{id}")).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(get(&gw, &secret, &format!("/v1/responses/{id}")).await.0, 404);
    let response = gw.post(&secret, &json!({"model": "openai/gpt-4o", "input": "y", "previous_response_id": id})).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_chains_are_cut_from_the_oldest_turns() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    let mut row = gw.put_price("openai/small", "gpt-4o", "2.5", "10", None).await;
    row.context_length = Some(1_200);
    row.max_output_tokens = Some(100);
    gw.stores.prices.put_price(&row).await.unwrap();
    let (secret, _) = gw.create_key(|_| {}).await;
    let mut previous: Option<String> = None;
    for turn in 0..8 {
        let mut input = vec![json!({"role": "user", "content": format!("turn {turn} {}", "x".repeat(600))})];
        if turn == 3 {
            input.push(json!({"type": "function_call", "call_id": "call_7", "name": "lookup", "arguments": "{}"}));
            input.push(json!({"type": "function_call_output", "call_id": "call_7", "output": "42"}));
        }
        let mut body = json!({"model": "openai/small", "input": input});
        if let Some(previous) = &previous {
            body["previous_response_id"] = json!(previous);
        }
        let answer = create(&gw, &secret, body).await;
        previous = Some(answer["id"].as_str().unwrap().to_owned());
    }
    let sent = gw.stub.last_request().body;
    let input = sent["input"].as_array().unwrap();
    assert!(input.len() < 8 * 2 + 2, "older turns were dropped: {} items", input.len());
    assert!(input.last().unwrap()["content"].as_str().unwrap().starts_with("turn 7"), "the current turn is kept");
    assert!(input[0]["role"] == "user", "the history starts at a turn boundary");
    let calls = input.iter().filter(|i| i["type"] == "function_call").count();
    let outputs = input.iter().filter(|i| i["type"] == "function_call_output").count();
    assert_eq!(calls, outputs, "a function call never loses its output");
}

/// Response and template ports that cannot answer: any read through them is a 503.
struct Unreachable;

fn unreachable_store() -> mesh::error::StoreError {
    mesh::error::StoreError::Unavailable("unreachable in this test".to_owned())
}

#[async_trait::async_trait]
impl mesh::store::ResponseStore for Unreachable {
    async fn put_response(&self, _: &mesh::domain::StoredResponse) -> Result<(), mesh::error::StoreError> {
        Err(unreachable_store())
    }
    async fn response(&self, _: &str, _: i64) -> Result<Option<mesh::domain::StoredResponse>, mesh::error::StoreError> {
        Err(unreachable_store())
    }
    async fn delete_response(&self, _: &str) -> Result<bool, mesh::error::StoreError> {
        Err(unreachable_store())
    }
}

#[async_trait::async_trait]
impl mesh::store::TemplateStore for Unreachable {
    async fn insert_template(&self, _: &mesh::domain::Template) -> Result<(), mesh::error::StoreError> {
        Err(unreachable_store())
    }
    async fn template(&self, _: &str) -> Result<Option<mesh::domain::Template>, mesh::error::StoreError> {
        Err(unreachable_store())
    }
    async fn template_by_name(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<mesh::domain::Template>, mesh::error::StoreError> {
        Err(unreachable_store())
    }
    async fn templates_of(&self, _: &str) -> Result<Vec<mesh::domain::Template>, mesh::error::StoreError> {
        Err(unreachable_store())
    }
    async fn replace_template(&self, _: &mesh::domain::Template) -> Result<(), mesh::error::StoreError> {
        Err(unreachable_store())
    }
    async fn delete_template(&self, _: &str) -> Result<bool, mesh::error::StoreError> {
        Err(unreachable_store())
    }
}

/// Malformed or over-long ids in paths (`/v1/responses/{id}`, `.../input_items`,
/// `/v1/templates/{id}`) are 404 at once: with the response and template stores unreachable they
/// still answer 404, while a well-formed id reaches the store (503).
async fn malformed_path_ids_are_404_without_a_store_read(kind: StoreKind) {
    let (stores, dir) = mesh_tests::gateway::fresh_stores(kind).await;
    let unreachable = std::sync::Arc::new(Unreachable);
    let stores = mesh::store::Stores { responses: unreachable.clone(), templates: unreachable, ..stores };
    let gw = Gateway::start(GatewayOptions { stores: Some(stores), ..GatewayOptions::on(kind) }).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    let long = "a".repeat(10 * 1024);
    for (prefix, code) in [("/v1/responses/", "response_not_found"), ("/v1/templates/", "template_not_found")] {
        let id_prefix = if code == "response_not_found" { "resp_" } else { "tpl_" };
        let mut paths = vec![
            format!("{prefix}{id_prefix}{long}"),
            format!("{prefix}{long}"),
            format!("{prefix}{id_prefix}bad%20id"),
            format!("{prefix}{id_prefix}%C3%BC"),
            format!("{prefix}{}", if code == "response_not_found" { "tpl_abc" } else { "resp_abc" }),
        ];
        if code == "response_not_found" {
            paths.push(format!("{prefix}resp_{long}/input_items"));
        }
        for path in &paths {
            for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
                let response = gw
                    .http
                    .request(method.clone(), format!("{}{path}", gw.url))
                    .bearer_auth(&secret)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                if path.ends_with("/input_items") && method == reqwest::Method::DELETE {
                    assert_eq!(status, 405, "{path}");
                    continue;
                }
                assert_eq!(
                    (status, body["error"]["code"].as_str()),
                    (404, Some(code)),
                    "{method} {}: {body}",
                    path.chars().take(60).collect::<String>()
                );
                assert!(body["error"]["message"].as_str().unwrap().len() < 200, "the id is not echoed back");
            }
        }
        let (status, body) = get(&gw, &secret, &format!("{prefix}{id_prefix}01jdexample")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("store_unavailable")),
            "well-formed ids are looked up"
        );
    }
    drop(gw);
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}
on_both_stores!(malformed_path_ids_on, malformed_path_ids_are_404_without_a_store_read);
