//! The Lambda front door for real: `cargo lambda watch` runs the `responses` binary under its
//! Lambda runtime emulator with Function URL emulation. Streams arrive as separate chunks over
//! time (not one buffer at the end), and `cargo lambda invoke` works with the sample events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mesh_tests::{services, Stub};
use serde_json::json;

struct Watch(Child, std::path::PathBuf);

impl Drop for Watch {
    fn drop(&mut self) {
        // Stop the watcher and everything it started (`cargo run`, the function) with SIGKILL,
        // deepest first. No SIGTERM: the watcher's own shutdown path signals process groups it
        // looked up itself, which has taken down unrelated processes of this machine.
        let mut doomed = descendants(self.0.id());
        doomed.reverse();
        doomed.push(self.0.id());
        for pid in doomed {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        let _ = self.0.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.1).unwrap_or_default();
            eprintln!("--- cargo lambda watch output ---\n{log}");
        }
    }
}

/// The processes below `root`, parents before children, read from /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid ...`: the command name may hold spaces, so split after `)`.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        found.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        index += 1;
    }
    found.remove(0);
    found
}

fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_through_cargo_lambda_watch() {
    use std::os::unix::process::CommandExt;

    let stub = Stub::start().await;
    stub.settings(|s| s.event_delay = Duration::from_millis(150));
    let dir = std::env::temp_dir().join(format!("mesh-watch-{}", services::unique_prefix()));
    let store = mesh::store::local::LocalStore::open(&dir).unwrap();
    let stores = mesh::store::Stores::from_adapter(store);
    let secret = "rsk_01JDEVKEY00000000000000000";
    let key: mesh::domain::ApiKey = serde_json::from_value(json!({
        "id": "key_watch", "key_hash": mesh::ids::hash_secret(secret), "name": "watch", "owner": "team-a", "created_at": 0
    }))
    .unwrap();
    stores.keys.insert_key(&key).await.unwrap();
    let row: mesh::domain::ModelPrice = serde_json::from_value(json!({
        "model": "openai/gpt-4o-mini", "provider": "openai", "upstream_model": "gpt-4o-mini",
        "input_usd_per_mtok": "0.15", "output_usd_per_mtok": "0.60", "is_default": true
    }))
    .unwrap();
    stores.prices.put_price(&row).await.unwrap();

    let env_file = dir.join("lambda.env");
    std::fs::write(
        &env_file,
        format!(
            "MESH_STORE=local\nMESH_LOCAL_DIR={}\nMESH_PROVIDER_OPENAI_BASE_URL={}\nMESH_PROVIDER_OPENAI_API_KEY=sk-upstream\n",
            dir.display(),
            stub.url
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cargo = Command::new("cargo");
    // `cargo test` gives this process the test crate's CARGO_PKG_*/CARGO_MANIFEST_* variables;
    // build scripts read some of them, so inheriting them would make the `cargo run` that
    // `cargo lambda watch` starts rebuild half the dependency tree (minutes on two cores)
    // instead of finding the `responses` binary that tests/run.sh built.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        let set_by_cargo_test = (name.starts_with("CARGO_")
            && !["CARGO_HOME", "CARGO_TARGET_DIR"].contains(&name.as_str())
            && !name.starts_with("CARGO_BUILD_")
            && !name.starts_with("CARGO_TERM_"))
            || name == "OUT_DIR";
        if set_by_cargo_test {
            cargo.env_remove(&name);
        }
    }
    let child = cargo
        .current_dir(workspace())
        .args(["lambda", "watch", "-A", "127.0.0.1", "-P", &port.to_string(), "--ignore-changes", "--disable-cors"])
        .args(["--env-file", env_file.to_str().unwrap(), "-p", "responses", "--bin", "responses"])
        .stdout(Stdio::from(std::fs::File::create(dir.join("watch.log")).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(dir.join("watch.err")).unwrap()))
        .process_group(0)
        .spawn()
        .expect("cargo lambda is installed (tests/run.sh installs it)");
    let _watch = Watch(child, dir.join("watch.err"));
    let base = format!("http://127.0.0.1:{port}/lambda-url/responses");
    // Every request is bounded: a function that died must fail the test, not hang the suite.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let started = Instant::now();
    eprintln!("waiting for cargo lambda watch on port {port}");
    loop {
        if let Ok(response) = http.get(format!("{base}/healthz")).send().await {
            if response.status() == 200 {
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(420), "cargo lambda watch did not serve the function");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("cargo lambda watch served the function after {:?}", started.elapsed());

    // Streaming through the Function URL emulation: chunks arrive spread over time.
    let response = http
        .post(format!("{base}/v1/responses"))
        .bearer_auth(secret)
        .json(&json!({"model": "openai/gpt-4o-mini", "input": "hi", "stream": true}))
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
    assert!(arrivals.len() >= 5, "several separate chunks, got {}", arrivals.len());
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(spread >= Duration::from_millis(150 * 8), "chunks arrived over {spread:?}, not all at the end");

    // Non-streaming: settled before the invocation ends.
    let response = http
        .post(format!("{base}/v1/responses"))
        .bearer_auth(secret)
        .json(&json!({"model": "openai/gpt-4o-mini", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["model"], "openai/gpt-4o-mini");
    let records = stores.usage.query_usage(&mesh::domain::UsageFilter::default()).await.unwrap();
    assert_eq!(records.len(), 2, "both invocations recorded their usage before ending");

    // `cargo lambda invoke` with the sample events: both event kinds reach the app.
    let invoke = |file: &str| {
        Command::new("timeout")
            .current_dir(workspace())
            .args(["60", "cargo", "lambda", "invoke", "responses", "-A", "127.0.0.1", "-P", &port.to_string()])
            .args(["--data-file", &format!("events/{file}")])
            .output()
            .unwrap()
    };
    for file in ["function-url-responses.json", "apigw-rest-responses.json"] {
        let output = invoke(file);
        let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success() && printed.contains("Hello from stub"), "{file}: {printed}");
    }
    // A refused request is a non-2xx streamed answer, which the invoke CLI reports as a failure.
    assert!(!invoke("function-url-bad-key.json").status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
