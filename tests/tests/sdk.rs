//! The official OpenAI SDKs (Python and Node), unmodified, against the standalone front door:
//! `responses.create`, `stream=True` iteration and `responses.stream(...)`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh_tests::{Gateway, GatewayOptions};

async fn gateway() -> (Gateway, String) {
    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.put_price("openai/gpt-4o-mini", "gpt-4o-mini", "0.15", "0.60", Some("0.075")).await;
    let (secret, _) = gw.create_key(|k| k.rpm = Some(1000)).await;
    (gw, secret)
}

fn project_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk() {
    let (gw, secret) = gateway().await;
    let output = tokio::process::Command::new("python3")
        .arg(project_dir().join("sdk/python_sdk.py"))
        .args([format!("{}/v1", gw.url), secret, "openai/gpt-4o-mini".to_owned(), "Hello from stub".to_owned()])
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python SDK failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("python-sdk-ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk() {
    let (gw, secret) = gateway().await;
    let output = tokio::process::Command::new("node")
        .arg(project_dir().join("node/sdk.mjs"))
        .args([format!("{}/v1", gw.url), secret, "openai/gpt-4o-mini".to_owned(), "Hello from stub".to_owned()])
        .output()
        .await
        .expect("node runs (tests/run.sh installs the SDK)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "node SDK failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("node-sdk-ok"));
}
