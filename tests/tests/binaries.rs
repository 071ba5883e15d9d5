//! The real binaries: `responses` as a standalone server on the embedded store, driven by
//! `mesh-admin` while it runs (keys work and suspensions bite within 5 s, no restart), state
//! surviving a restart, and `mesh-admin tables create` against the DynamoDB emulator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_tests::services;
use mesh_tests::Stub;
use serde_json::{json, Value};

fn bin(name: &str) -> PathBuf {
    // target/debug/deps/<test> → target/debug/<name>
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(path.exists(), "{} is built (tests/run.sh runs `cargo build --workspace --bins` first)", path.display());
    path
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env(dir: &std::path::Path, stub: &Stub, port: u16) -> Vec<(String, String)> {
    vec![
        ("MESH_STORE".into(), "local".into()),
        ("MESH_LOCAL_DIR".into(), dir.display().to_string()),
        ("MESH_LISTEN".into(), format!("127.0.0.1:{port}")),
        ("MESH_PROVIDER_OPENAI_BASE_URL".into(), stub.url.clone()),
        ("MESH_PROVIDER_OPENAI_API_KEY".into(), "sk-upstream".into()),
        ("MESH_CACHE_TTL_MS".into(), "2000".into()),
    ]
}

fn admin(vars: &[(String, String)], args: &[&str]) -> String {
    let output = Command::new(bin("mesh-admin")).envs(vars.iter().cloned()).args(args).output().unwrap();
    assert!(output.status.success(), "mesh-admin {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `mesh-admin` expecting it to fail; returns its stderr.
fn admin_fails(vars: &[(String, String)], args: &[&str]) -> String {
    let output = Command::new(bin("mesh-admin")).envs(vars.iter().cloned()).args(args).output().unwrap();
    assert!(!output.status.success(), "mesh-admin {args:?} should fail: {}", String::from_utf8_lossy(&output.stdout));
    assert!(output.stdout.is_empty(), "no secret is printed on failure");
    String::from_utf8(output.stderr).unwrap()
}

fn start(vars: &[(String, String)]) -> Server {
    let child = Command::new(bin("responses"))
        .envs(vars.iter().cloned())
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server(child)
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server did not start");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_reach_a_running_local_server() {
    let stub = Stub::start().await;
    let dir = std::env::temp_dir().join(format!("mesh-bin-{}", services::unique_prefix()));
    let port = free_port();
    let vars = env(&dir, &stub, port);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let server = start(&vars);
    wait_ready(&http, &base).await;

    let catalog = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/prices.json");
    assert!(admin(&vars, &["prices", "import", catalog.to_str().unwrap()]).contains("imported"));
    admin(
        &vars,
        &[
            "prices",
            "put",
            "openai/gpt-4o",
            "--provider",
            "openai",
            "--upstream-model",
            "gpt-4o",
            "--input-usd-per-mtok",
            "2.50",
            "--output-usd-per-mtok",
            "10",
            "--cached-input-usd-per-mtok",
            "1.25",
            "--default",
        ],
    );
    let secret =
        admin(&vars, &["keys", "create", "--name", "ci", "--owner", "team-x", "--rpm", "50"]).trim().to_owned();
    assert!(secret.starts_with("rsk_") && secret.len() == 30, "the secret alone on stdout: {secret:?}");
    let keys: Value = serde_json::from_str(&admin(&vars, &["keys", "list", "--json"])).unwrap();
    let key_id = keys[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(keys[0]["rpm"], 50);
    assert!(!admin(&vars, &["keys", "list", "--json"]).contains(&secret), "the secret is never shown again");

    let body = json!({"model": "openai/gpt-4o", "input": "hi", "session_id": "s-7"});
    let created = Instant::now();
    loop {
        let response = http.post(format!("{base}/v1/responses")).bearer_auth(&secret).json(&body).send().await.unwrap();
        if response.status() == 200 {
            break;
        }
        assert!(created.elapsed() < Duration::from_secs(5), "a new key works within 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    admin(&vars, &["keys", "suspend", &key_id]);
    let suspended = Instant::now();
    loop {
        let response = http.post(format!("{base}/v1/responses")).bearer_auth(&secret).json(&body).send().await.unwrap();
        if response.status() == 403 {
            break;
        }
        assert!(suspended.elapsed() < Duration::from_secs(5), "a suspension bites within 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(server);

    // Restart: the store survived; usage is reportable by session.
    let server = start(&vars);
    wait_ready(&http, &base).await;
    let usage: Value = serde_json::from_str(&admin(&vars, &["usage", "--session", "s-7", "--json"])).unwrap();
    let row = &usage[0];
    assert_eq!(row["key_id"], key_id.as_str());
    assert_eq!(row["model"], "openai/gpt-4o");
    let requests = row["requests"].as_u64().unwrap();
    assert!(requests >= 1);
    // Each stub answer costs 77 500 nano-USD.
    assert_eq!(row["cost_usd"], mesh::money::format_decimal_nanos(77_500 * requests));
    let shown: Value = serde_json::from_str(&admin(&vars, &["keys", "show", &key_id, "--json"])).unwrap();
    assert_eq!(shown["status"], "suspended");
    assert_eq!(shown["spent_usd"], row["cost_usd"]);
    admin(&vars, &["keys", "update", &key_id, "--status", "active", "--spend-cap-usd", "5", "--rpd", "1000"]);
    let shown: Value = serde_json::from_str(&admin(&vars, &["keys", "show", &key_id, "--json"])).unwrap();
    assert_eq!(
        (shown["status"].as_str(), shown["spend_cap_usd"].as_str(), shown["rpd"].as_u64()),
        (Some("active"), Some("5"), Some(1000))
    );
    admin(&vars, &["balance", "add", "team-x", "2.5"]);
    let balance: Value = serde_json::from_str(&admin(&vars, &["balance", "show", "team-x", "--json"])).unwrap();
    assert_eq!(balance["balance_usd"], "2.5");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_creates_dynamodb_tables() {
    let prefix = services::unique_prefix();
    let vars: Vec<(String, String)> = vec![
        ("MESH_STORE".into(), "dynamodb".into()),
        ("MESH_TABLE_PREFIX".into(), prefix.clone()),
        ("AWS_ENDPOINT_URL_DYNAMODB".into(), services::dynamodb_endpoint()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
    ];
    let first = admin(&vars, &["tables", "create"]);
    assert!(first.contains(&format!("{prefix}keys")), "{first}");
    let again = admin(&vars, &["tables", "create"]);
    assert!(again.contains("created now: 0"), "idempotent: {again}");
    let catalog = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/prices.json");
    admin(&vars, &["prices", "import", catalog.to_str().unwrap()]);
    let rows: Value = serde_json::from_str(&admin(&vars, &["prices", "list", "--json"])).unwrap();
    assert!(rows.as_array().unwrap().len() >= 20);
    let secret = admin(&vars, &["keys", "create", "--name", "k", "--spend-cap-usd", "1.5", "--spend-cap-mode", "hard"])
        .trim()
        .to_owned();
    assert!(secret.starts_with("rsk_"));
    let keys: Value = serde_json::from_str(&admin(&vars, &["keys", "list", "--json"])).unwrap();
    assert_eq!(keys[0]["spend_cap_usd"], "1.5");
    assert_eq!(keys[0]["spend_cap_mode"], "hard");
    assert_eq!(keys[0]["remaining_cap_usd"], "1.5");
}

#[test]
fn admin_refuses_reserved_owners_and_gives_each_new_key_its_own() {
    let dir = std::env::temp_dir().join(format!("mesh-bin-{}", services::unique_prefix()));
    let vars =
        vec![("MESH_STORE".to_owned(), "local".to_owned()), ("MESH_LOCAL_DIR".to_owned(), dir.display().to_string())];
    let stderr = admin_fails(&vars, &["keys", "create", "--name", "k", "--owner", "~global"]);
    assert!(stderr.contains("--owner") && stderr.contains("reserved"), "a clear message: {stderr}");
    admin(&vars, &["keys", "create", "--name", "a"]);
    admin(&vars, &["keys", "create", "--name", "b"]);
    let keys: Value = serde_json::from_str(&admin(&vars, &["keys", "list", "--json"])).unwrap();
    let owners: Vec<&str> = keys.as_array().unwrap().iter().map(|k| k["owner"].as_str().unwrap()).collect();
    assert_eq!(owners.len(), 2);
    assert_ne!(owners[0], owners[1], "keys without --owner do not share an account");
    assert!(owners.iter().all(|o| o.starts_with("key_")), "{owners:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
