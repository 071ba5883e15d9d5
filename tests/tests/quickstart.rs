//! The README's commands on a fresh clone, as a newcomer runs them: the Quickstart's first
//! command (`./infra/dev.sh`) serves and answers the seed's example with no provider account,
//! and the Local Lambda emulation commands (`cargo lambda watch`, `cargo lambda invoke` with a
//! sample event, a streamed request through the Function URL emulation) work as written.
//!
//! The commands are read from the clone's README, not copied here; only the port is changed
//! (to a free one) and the build directory is seeded with this workspace's third-party
//! artifacts (so the clone builds its own crates but not every dependency again).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mesh_tests::process::{free_port, seeded_target, Running};
use mesh_tests::services;
use serde_json::{json, Value};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// The lines of the first ```sh block after `heading`.
fn sh_block(readme: &str, heading: &str) -> Vec<String> {
    let section = &readme[readme.find(heading).unwrap_or_else(|| panic!("README has `{heading}`"))..];
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = start + section[start..].find("```").expect("the block ends");
    section[start..end].lines().map(str::to_owned).collect()
}

/// A command line without its trailing comment.
fn command_of(line: &str) -> String {
    line.split("  #").next().unwrap_or_default().trim().to_owned()
}

/// Waits until `url` answers 200, failing early if the command serving it ended.
async fn wait_serving(http: &reqwest::Client, url: &str, running: &mut Running, bound: Duration) {
    let started = Instant::now();
    loop {
        if let Ok(response) = http.get(url).send().await {
            if response.status() == 200 {
                eprintln!("{url} served after {:?}", started.elapsed());
                return;
            }
        }
        if let Some(status) = running.exited() {
            panic!("the command ended ({status}) before serving:\n{}", running.output());
        }
        assert!(started.elapsed() < bound, "nothing served {url} within {bound:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs a command to its end (bounded), returning its exit status and output.
fn run_bounded(script: &str, dir: &Path, env: &[(&str, String)], logs: &Path, name: &str) -> (bool, String) {
    let mut running = Running::bash(name, script, dir, env, logs);
    let started = Instant::now();
    loop {
        if let Some(status) = running.exited() {
            return (status.success(), running.output());
        }
        assert!(started.elapsed() < Duration::from_secs(600), "`{script}` did not end:\n{}", running.output());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_commands_work_on_a_fresh_clone() {
    let root = workspace();
    let scratch = std::env::temp_dir().join(format!("mesh-quickstart-{}", services::unique_prefix()));
    std::fs::create_dir_all(&scratch).unwrap();
    let clone = scratch.join("mesh");
    let cloned = Command::new("git").args(["clone", "-q"]).arg(&root).arg(&clone).status().unwrap();
    assert!(cloned.success(), "git clone of the workspace");
    // The clone builds its own crates and binaries (nothing of this workspace's is left for it to
    // find), over a copy of this workspace's third-party artifacts.
    let ours = std::env::var("CARGO_TARGET_DIR").map_or_else(|_| root.join("target"), PathBuf::from);
    let target = seeded_target(&ours, &scratch.join("target")).display().to_string();
    let readme = std::fs::read_to_string(clone.join("README.md")).unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();

    // The Quickstart's first command, exactly as written (on a free port).
    let first = command_of(&sh_block(&readme, "## Quickstart")[0]);
    assert_eq!(first, "./infra/dev.sh", "the first command is the local gateway");
    let port = free_port();
    let env = [("MESH_LISTEN", format!("127.0.0.1:{port}")), ("CARGO_TARGET_DIR", target.clone())];
    let mut dev = Running::bash("dev.sh", &first, &clone, &env, &scratch);
    let base = format!("http://127.0.0.1:{port}");
    wait_serving(&http, &format!("{base}/healthz"), &mut dev, Duration::from_secs(900)).await;
    let key = std::fs::read_to_string(clone.join(".mesh/dev-key")).unwrap().trim().to_owned();
    assert!(dev.output().contains(&key), "dev.sh prints the key it made");
    // The seed's example: no model, no provider account.
    let response = http
        .post(format!("{base}/v1/responses"))
        .bearer_auth(&key)
        .json(&json!({"input": "What is the capital of France?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["model"], "mesh/echo");
    assert_eq!(answer["output"][0]["content"][0]["text"], "What is the capital of France?");
    // The standalone server settles after answering: stopped only once the usage is written.
    let store = mesh::store::local::LocalStore::open(&clone.join(".mesh")).unwrap();
    let stores = mesh::store::Stores::from_adapter(store);
    let dev_usage = mesh::domain::UsageFilter { owner: Some("dev".to_owned()), ..Default::default() };
    mesh_tests::wait::eventually("the seed example's usage is recorded", mesh_tests::wait::PATIENCE, || async {
        stores.usage.query_usage(&dev_usage).await.is_ok_and(|records| records.len() == 1)
    })
    .await;
    drop(dev);

    // The Local Lambda emulation commands, as written (the port changed).
    let lines = sh_block(&readme, "## Local Lambda emulation");
    let find = |needle: &str| {
        let line = lines.iter().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("README runs `{needle}`"));
        command_of(line).replace("-P 9000", &format!("-P {port}"))
    };
    let env = [("CARGO_TARGET_DIR", target.clone())];
    let (ok, output) = run_bounded(&find("./infra/dev.sh --setup-only"), &clone, &env, &scratch, "setup");
    assert!(ok, "dev.sh --setup-only: {output}");
    let mut watch = Running::bash("watch", &find("cargo lambda watch"), &clone, &env, &scratch);
    let function = format!("http://127.0.0.1:{port}/lambda-url/responses");
    wait_serving(&http, &format!("{function}/healthz"), &mut watch, Duration::from_secs(420)).await;
    let invoke = find("cargo lambda invoke");
    let (ok, output) = run_bounded(&format!("timeout 60 {invoke}"), &clone, &env, &scratch, "invoke");
    assert!(ok && output.contains("Say hello"), "{invoke}: {output}");
    // Both event kinds reach the app; a refused request is a non-2xx answer, which the invoke
    // command reports as a failure.
    let rest = invoke.replace("function-url-responses.json", "apigw-rest-responses.json");
    let (ok, output) = run_bounded(&format!("timeout 60 {rest}"), &clone, &env, &scratch, "invoke-rest");
    assert!(ok && output.contains("Say hello"), "{rest}: {output}");
    let bad = invoke.replace("function-url-responses.json", "function-url-bad-key.json");
    let (ok, output) = run_bounded(&format!("timeout 60 {bad}"), &clone, &env, &scratch, "invoke-bad-key");
    assert!(!ok, "{bad}: {output}");
    // Streaming through the Function URL emulation: tokens made 200 ms apart arrive as they are
    // made (buffered, they would all arrive at the end, 1.4 s after the first event).
    let response = http
        .post(format!("{function}/v1/responses"))
        .bearer_auth(&key)
        .json(&json!({"input": "one two three four five six seven eight", "stream": true,
            "metadata": {"echo_token_delay_ms": "200"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut arrivals = Vec::new();
    let mut text = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        arrivals.push(Instant::now());
        text.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("event: response.completed"), "{text}");
    assert!(arrivals.len() >= 5, "separate chunks, got {}", arrivals.len());
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(spread >= Duration::from_millis(700), "chunks arrived over {spread:?}, not as they were made");
    // Under Lambda the usage is written before the invocation ends: no wait.
    let records = stores.usage.query_usage(&dev_usage).await.unwrap();
    assert_eq!(records.len(), 2, "the dev key's two requests are recorded: {records:?}");
    drop(watch);
    let _ = std::fs::remove_dir_all(&scratch);
}
