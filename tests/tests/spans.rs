//! Spans on the request path: events inside a request carry its `request` span (request id,
//! key id, model) without repeating them, provider attempts run in a `dispatch` span (provider,
//! attempt) and settlement in a `settle` span. Alone in its test binary: it installs the
//! process-wide subscriber (JSON lines into a buffer).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use mesh_tests::{Gateway, GatewayOptions};
use serde_json::{json, Value};

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn events(lines: &Lines) -> Vec<Value> {
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn span<'a>(event: &'a Value, name: &str) -> Option<&'a Value> {
    event["spans"].as_array()?.iter().find(|s| s["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_events_carry_their_spans() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_list(true)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let gw = Gateway::start(GatewayOptions::default()).await;
    gw.put_price("t/flaky", "stub-error-500", "1", "1", None).await;
    let (secret, key) = gw.create_key(|_| {}).await;
    let response = gw.post(&secret, &json!({"model": "t/flaky", "input": "x"})).await;
    assert_eq!(response.status(), 502);
    let request_id = response.headers()["x-mesh-request-id"].to_str().unwrap().to_owned();
    gw.settled().await;

    let events = events(&lines);
    let ours = |e: &&Value| span(e, "request").is_some_and(|s| s["request_id"] == request_id.as_str());
    let failed: Vec<&Value> =
        events.iter().filter(ours).filter(|e| e["fields"]["message"] == "provider attempt failed").collect();
    assert_eq!(failed.len(), 2, "two attempts logged inside the request span");
    for event in &failed {
        let request = span(event, "request").unwrap();
        assert_eq!(request["key_id"], key.id.as_str());
        assert_eq!(request["model"], "t/flaky");
    }
    let settled = events
        .iter()
        .find(|e| {
            e["fields"]["message"] == "settled"
                && span(e, "settle").is_some_and(|s| s["request_id"] == request_id.as_str())
        })
        .unwrap_or_else(|| panic!("a settled line in the settle span among {} events", events.len()));
    assert_eq!(span(settled, "settle").unwrap()["key_id"], key.id.as_str());
    // Nothing logged carries the key's secret.
    let everything = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    assert!(!everything.contains(&secret));
}
