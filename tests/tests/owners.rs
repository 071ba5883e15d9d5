//! Owners: `mesh-admin` refuses reserved or malformed owners (`~global`, anything starting with
//! `~`, empty, over-long, control characters) wherever it takes one; a key created without
//! `--owner` is an account of its own; a key stored with a reserved owner is never served.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::Parser;
use mesh::config::Config;
use mesh::domain::{Template, GLOBAL_OWNER};
use mesh::store::Stores;
use mesh_admin::admin::{run, Cli};
use mesh_tests::{on_both_stores, Gateway, GatewayOptions, StoreKind};
use serde_json::{json, Value};

/// Runs `mesh-admin ARGS` in process against `stores`: its output, or its error message.
async fn admin(stores: &Stores, args: &[&str]) -> Result<String, String> {
    let cli =
        Cli::try_parse_from(std::iter::once("mesh-admin").chain(args.iter().copied())).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    run(cli, &Config::default(), stores, &mut out).await.map_err(|e| e.to_string())?;
    Ok(String::from_utf8(out).unwrap())
}

async fn keys_json(stores: &Stores) -> Vec<Value> {
    let listed: Value = serde_json::from_str(&admin(stores, &["keys", "list", "--json"]).await.unwrap()).unwrap();
    listed.as_array().unwrap().clone()
}

async fn admin_refuses_reserved_owners(kind: StoreKind) {
    let (stores, _dir) = mesh_tests::gateway::fresh_stores(kind).await;
    let long = "o".repeat(mesh::domain::MAX_OWNER_LEN + 1);
    for bad in [GLOBAL_OWNER, "~ops", "", "team\u{7}", "line\nbreak", " team", long.as_str()] {
        let err = admin(&stores, &["keys", "create", "--name", "k", "--owner", bad]).await.unwrap_err();
        assert!(err.starts_with("--owner: "), "{bad:?}: {err}");
    }
    let err = admin(&stores, &["keys", "create", "--name", "k", "--owner", GLOBAL_OWNER]).await.unwrap_err();
    assert!(err.contains("reserved"), "the message says why: {err}");
    assert!(keys_json(&stores).await.is_empty(), "no key was created");

    // Without --owner, each key is its own account.
    admin(&stores, &["keys", "create", "--name", "first"]).await.unwrap();
    admin(&stores, &["keys", "create", "--name", "second"]).await.unwrap();
    let keys = keys_json(&stores).await;
    assert_eq!(keys.len(), 2);
    for key in &keys {
        assert_eq!(key["owner"], key["id"], "owner defaults to the key's own id: {key}");
    }
    assert_ne!(keys[0]["owner"], keys[1]["owner"]);

    // Update takes an owner too, with the same rules.
    let id = keys[0]["id"].as_str().unwrap();
    let err = admin(&stores, &["keys", "update", id, "--owner", GLOBAL_OWNER]).await.unwrap_err();
    assert!(err.contains("reserved"), "{err}");
    admin(&stores, &["keys", "update", id, "--owner", "team-a"]).await.unwrap();
    assert_eq!(stores.keys.key_by_id(id).await.unwrap().unwrap().owner, "team-a");

    // Every other command that takes an owner.
    let file = std::env::temp_dir().join(format!("mesh-owner-{}.json", mesh_tests::services::unique_prefix()));
    std::fs::write(&file, r#"{"system": "Hi"}"#).unwrap();
    let path = file.to_str().unwrap();
    for args in [
        vec!["templates", "put", "t", "--file", path, "--owner", GLOBAL_OWNER],
        vec!["templates", "list", "--owner", "~x"],
        vec!["templates", "show", "t", "--owner", ""],
        vec!["balance", "add", GLOBAL_OWNER, "5"],
        vec!["balance", "show", "~x"],
        vec!["usage", "--owner", "~x"],
    ] {
        let err = admin(&stores, &args).await.unwrap_err();
        assert!(err.contains("owner") || err.contains("OWNER"), "{args:?}: {err}");
    }
    assert!(stores.templates.templates_of(GLOBAL_OWNER).await.unwrap().is_empty());
    assert_eq!(stores.balances.balance(GLOBAL_OWNER).await.unwrap(), None);
    // Without --owner the template is global, as before.
    assert!(admin(&stores, &["templates", "put", "t", "--file", path]).await.unwrap().contains("created"));
    assert_eq!(stores.templates.templates_of(GLOBAL_OWNER).await.unwrap().len(), 1);
    let _ = std::fs::remove_file(&file);
}
on_both_stores!(admin_refuses_reserved_owners_on, admin_refuses_reserved_owners);

/// A key stored with `~global` before owners were checked cannot act for the gateway: it is
/// refused (403) and so cannot create or change templates every tenant sees.
async fn reserved_owner_keys_are_not_served(kind: StoreKind) {
    let gw = Gateway::start(GatewayOptions::on(kind)).await;
    let (legacy, _) = gw.create_key(|k| k.owner = GLOBAL_OWNER.into()).await;
    let global: Template = serde_json::from_value(json!({"id": "tpl_house", "name": "house", "owner": GLOBAL_OWNER,
        "system": "House style.", "created_at": 0, "updated_at": 0}))
    .unwrap();
    gw.stores.templates.insert_template(&global).await.unwrap();
    let create = gw
        .http
        .post(format!("{}/v1/templates", gw.url))
        .bearer_auth(&legacy)
        .json(&json!({"name": "injected", "system": "Obey."}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 403);
    let body: Value = create.json().await.unwrap();
    assert_eq!(body["error"]["code"], "key_suspended");
    let patch = gw
        .http
        .patch(format!("{}/v1/templates/tpl_house", gw.url))
        .bearer_auth(&legacy)
        .json(&json!({"system": "Obey."}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 403);
    let templates = gw.stores.templates.templates_of(GLOBAL_OWNER).await.unwrap();
    assert_eq!(templates.len(), 1);
    assert_eq!(templates[0].system.as_deref(), Some("House style."));
}
on_both_stores!(reserved_owner_keys_are_not_served_on, reserved_owner_keys_are_not_served);
