//! Prompt templates: the CRUD API per owner (global ones read-only), rendering into
//! `/v1/responses` (system before instructions, messages before input, all missing variables
//! named), lookup order, precedence, owner isolation and the template id on usage records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh::domain::{Template, GLOBAL_OWNER};
use mesh_tests::{on_both_stores, Gateway, GatewayOptions, StoreKind};
use serde_json::{json, Value};

async fn call(gw: &Gateway, method: reqwest::Method, path: &str, secret: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = gw.http.request(method, format!("{}{path}", gw.url)).bearer_auth(secret);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn crud_and_isolation(kind: StoreKind) {
    let gw = Gateway::start(GatewayOptions::on(kind)).await;
    let (alice, _) = gw.create_key(|k| k.owner = "alice".into()).await;
    let (bob, _) = gw.create_key(|k| k.owner = "bob".into()).await;
    let body = json!({"name": "greet", "description": "Greets", "system": "You greet {{ who }}.",
        "messages": [{"role": "user", "content": "Say hi to {{who}}"}], "model": "openai/gpt-4o", "params": {"temperature": 0.3}});
    let (status, created) = call(&gw, reqwest::Method::POST, "/v1/templates", &alice, Some(body.clone())).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("tpl_"));
    assert_eq!(created["variables"], json!(["who"]));
    let (status, dup) = call(&gw, reqwest::Method::POST, "/v1/templates", &alice, Some(body.clone())).await;
    assert_eq!((status, dup["error"]["code"].as_str()), (409, Some("template_exists")));
    let (status, _) = call(&gw, reqwest::Method::POST, "/v1/templates", &bob, Some(body.clone())).await;
    assert_eq!(status, 201, "names are per owner");

    // PATCH: omitted fields stay, null clears.
    let (status, patched) = call(
        &gw,
        reqwest::Method::PATCH,
        &format!("/v1/templates/{id}"),
        &alice,
        Some(json!({"description": null, "model": "openai/gpt-4o-mini"})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["description"], Value::Null);
    assert_eq!(patched["model"], "openai/gpt-4o-mini");
    assert_eq!(patched["system"], "You greet {{ who }}.");
    assert_eq!(patched["params"], json!({"temperature": 0.3}));

    // Bob cannot see, change or delete Alice's template.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let (status, err) = call(&gw, method, &format!("/v1/templates/{id}"), &bob, None).await;
        assert_eq!((status, err["error"]["code"].as_str()), (404, Some("template_not_found")));
    }
    let (status, _) =
        call(&gw, reqwest::Method::PATCH, &format!("/v1/templates/{id}"), &bob, Some(json!({"system": "x"}))).await;
    assert_eq!(status, 404);
    let (status, err) = call(
        &gw,
        reqwest::Method::POST,
        "/v1/responses",
        &bob,
        Some(json!({"template": id, "variables": {"who": "x"}})),
    )
    .await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("template_not_found")), "by id across owners");

    // Global templates: listed for everyone, read-only through the API.
    let global = Template {
        id: "tpl_global1".into(),
        name: "house-style".into(),
        owner: GLOBAL_OWNER.into(),
        description: None,
        system: Some("House style.".into()),
        messages: vec![],
        model: None,
        params: serde_json::Map::new(),
        variables: vec![],
        created_at: 0,
        updated_at: 0,
    };
    gw.stores.templates.insert_template(&global).await.unwrap();
    let (_, list) = call(&gw, reqwest::Method::GET, "/v1/templates", &alice, None).await;
    let names: Vec<&str> = list["data"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["greet", "house-style"]);
    let (status, err) =
        call(&gw, reqwest::Method::PATCH, "/v1/templates/tpl_global1", &alice, Some(json!({"system": "x"}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (403, Some("template_read_only")));
    let (status, _) = call(&gw, reqwest::Method::DELETE, "/v1/templates/tpl_global1", &alice, None).await;
    assert_eq!(status, 403);
    let (status, shown) = call(&gw, reqwest::Method::GET, "/v1/templates/tpl_global1", &bob, None).await;
    assert_eq!((status, shown["global"].as_bool()), (200, Some(true)));

    let (status, _) = call(&gw, reqwest::Method::DELETE, &format!("/v1/templates/{id}"), &alice, None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&gw, reqwest::Method::GET, &format!("/v1/templates/{id}"), &alice, None).await;
    assert_eq!(status, 404);
}
on_both_stores!(crud_on, crud_and_isolation);

async fn rendering_into_responses(kind: StoreKind) {
    let gw = Gateway::start(GatewayOptions::on(kind)).await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", None).await;
    gw.put_price("openai/gpt-4o-mini", "gpt-4o-mini", "0.15", "0.6", None).await;
    let (secret, key) = gw.create_key(|k| k.owner = "alice".into()).await;
    let (status, created) = call(&gw, reqwest::Method::POST, "/v1/templates", &secret, Some(json!({
        "name": "support", "system": "You support {{ product }} customers.",
        "messages": [{"role": "user", "content": "Context: {{ context }}"}, {"role": "assistant", "content": "Understood."}],
        "model": "openai/gpt-4o-mini", "params": {"temperature": 0.1, "top_p": 0.5}
    }))).await;
    assert_eq!(status, 201);
    let template_id = created["id"].as_str().unwrap().to_owned();

    // Missing variables are all named.
    let (status, err) =
        call(&gw, reqwest::Method::POST, "/v1/responses", &secret, Some(json!({"template": "support", "input": "hi"})))
            .await;
    assert_eq!((status, err["error"]["code"].as_str()), (400, Some("missing_template_variables")));
    assert!(err["error"]["message"].as_str().unwrap().contains("context, product"));

    // By name, with instructions, input and a request temperature; the template's model applies.
    let response = gw
        .post(
            &secret,
            &json!({"template": "support", "variables": {"product": "Mesh", "context": "{{ product }}", "unused": 1},
            "instructions": "Be brief.", "input": "My key fails", "temperature": 0.9, "session_id": "s1"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let sent = gw.stub.last_request().body;
    assert_eq!(sent["model"], "gpt-4o-mini");
    assert_eq!(sent["instructions"], "You support Mesh customers.\n\nBe brief.");
    assert_eq!(sent["input"][0]["content"], "Context: {{ product }}", "values are substituted literally");
    assert_eq!(sent["input"][1]["content"], "Understood.");
    assert_eq!(sent["input"][2]["content"], "My key fails");
    assert_eq!(sent["input"].as_array().unwrap().len(), 3);
    assert_eq!(sent["temperature"], 0.9, "request beats template");
    assert_eq!(sent["top_p"], 0.5, "template fills what is absent");
    assert!(sent.get("template").is_none() && sent.get("variables").is_none());
    let record = gw.usage_of(&request_id).await;
    assert_eq!(record.template_id.as_deref(), Some(template_id.as_str()));

    // By id, without input; the request's model beats the template's.
    let response = gw
        .post(&secret, &json!({"template": template_id, "variables": {"product": "Mesh", "context": "c"}, "model": "openai/gpt-4o"}))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(gw.stub.last_request().body["model"], "gpt-4o");
    assert_eq!(gw.stub.last_request().body["input"].as_array().unwrap().len(), 2);

    // Key defaults beat the template.
    let (keyed, _) = gw
        .create_key(|k| {
            k.owner = "alice".into();
            k.default_model = Some("openai/gpt-4o".into());
            k.default_params = serde_json::Map::from_iter([("top_p".to_owned(), json!(0.9))]);
        })
        .await;
    gw.post(&keyed, &json!({"template": "support", "variables": {"product": "p", "context": "c"}})).await;
    let sent = gw.stub.last_request().body;
    assert_eq!((sent["model"].as_str(), sent["top_p"].as_f64()), (Some("gpt-4o"), Some(0.9)));
    assert_eq!(key.owner, "alice");
}
on_both_stores!(rendering_on, rendering_into_responses);

#[tokio::test]
async fn owner_templates_shadow_global_ones() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", None).await;
    let (secret, _) = gw.create_key(|k| k.owner = "alice".into()).await;
    let (other, _) = gw.create_key(|k| k.owner = "bob".into()).await;
    let mut global: Template = serde_json::from_value(json!({"id": "tpl_g", "name": "style", "owner": GLOBAL_OWNER,
        "system": "Global style.", "created_at": 0, "updated_at": 0}))
    .unwrap();
    gw.stores.templates.insert_template(&global).await.unwrap();
    global.id = "tpl_a".into();
    global.owner = "alice".into();
    global.system = Some("Alice style.".into());
    gw.stores.templates.insert_template(&global).await.unwrap();
    gw.post(&secret, &json!({"model": "openai/gpt-4o", "template": "style", "input": "x"})).await;
    assert_eq!(gw.stub.last_request().body["instructions"], "Alice style.");
    gw.post(&other, &json!({"model": "openai/gpt-4o", "template": "style", "input": "x"})).await;
    assert_eq!(gw.stub.last_request().body["instructions"], "Global style.");
}

/// A 15 KB template of 3000 placeholders with a 1 MiB variable would render to about 3 GiB: it is
/// refused with a 400 naming `variables` before anything is built, and the gateway keeps serving.
async fn hostile_rendering_is_refused(kind: StoreKind) {
    let gw = Gateway::start(GatewayOptions::on(kind)).await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", None).await;
    let (secret, _) = gw.create_key(|k| k.owner = "alice".into()).await;
    let (status, created) = call(
        &gw,
        reqwest::Method::POST,
        "/v1/templates",
        &secret,
        Some(json!({"name": "bomb", "system": "{{a}}".repeat(3000), "model": "openai/gpt-4o"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let huge = "x".repeat(1 << 20);
    let (status, err) = call(
        &gw,
        reqwest::Method::POST,
        "/v1/responses",
        &secret,
        Some(json!({"template": "bomb", "variables": {"a": huge}, "input": "hi"})),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert_eq!(err["error"]["code"], "invalid_value");
    assert_eq!(err["error"]["param"], "variables");
    assert!(gw.stub.requests().is_empty(), "nothing reached the provider");

    // Still alive: the same template with a short variable is served.
    let response = gw.post(&secret, &json!({"template": "bomb", "variables": {"a": "y"}, "input": "hi"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(gw.stub.last_request().body["instructions"], "y".repeat(3000));
}
on_both_stores!(hostile_rendering_on, hostile_rendering_is_refused);
