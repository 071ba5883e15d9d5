//! Memory per request stays a small multiple of the body: a request's peak resident memory
//! (the kernel's high-water mark, reset before each request) is below ten times its body size,
//! for an input list over the cap (refused from a scan, before any tree is built) and for a
//! large accepted one (parsed once, no per-row or per-attempt copies), stored and settled.
//! Alone in its test binary so no other test's memory is counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mesh::config::{ProviderApi, ProviderConfig};
use mesh_tests::{Gateway, GatewayOptions, StoreKind};
use serde_json::{json, Value};

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resets the peak resident set size to the current one (Linux `clear_refs` value 5).
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

async fn peak_growth_of(gw: &Gateway, secret: &str, body: String) -> (u16, u64) {
    reset_peak();
    let before = status_kib("VmRSS:");
    let response = gw
        .http
        .post(format!("{}/v1/responses", gw.url))
        .bearer_auth(secret)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let _ = response.bytes().await.unwrap();
    gw.settled().await;
    let peak = status_kib("VmHWM:");
    (status, (peak.saturating_sub(before)) * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_memory_stays_below_ten_times_the_body() {
    let echo = ProviderConfig {
        name: "echo".into(),
        api: ProviderApi::Echo,
        base_url: String::new(),
        api_key: None,
        api_key_secret_arn: None,
        token_delay: Duration::ZERO,
    };
    let gw = Gateway::start(GatewayOptions { providers: vec![echo], ..GatewayOptions::on(StoreKind::Local) }).await;
    gw.put_row("mesh/echo", "echo", "echo", "0.10", "0.40", None).await;
    let (secret, _) = gw.create_key(|k| k.default_model = Some("mesh/echo".into())).await;
    // Warm up: pools, caches and the store are in use before measuring.
    for _ in 0..3 {
        assert_eq!(gw.post(&secret, &json!({"input": "warm up"})).await.status(), 200);
    }
    gw.settled().await;

    // 200 000 tiny items (5.8 MB): refused for the item cap from a scan of the body.
    let item = r#"{"role":"user","content":"x"},"#;
    let mut hostile = String::from(r#"{"input":["#);
    for _ in 0..200_000 {
        hostile.push_str(item);
    }
    hostile.pop();
    hostile.push_str("]}");
    let size = u64::try_from(hostile.len()).unwrap();
    let (status, growth) = peak_growth_of(&gw, &secret, hostile).await;
    assert_eq!(status, 400);
    assert!(growth < 10 * size, "peak grew {growth} bytes for a {size}-byte body");
    eprintln!("refused: peak growth {growth} bytes for a {size}-byte body ({:.1}x)", growth as f64 / size as f64);

    // 4 000 items of 1.4 kB (5.7 MB): answered, stored and settled.
    let text = "y".repeat(1_400);
    let items: Vec<Value> = (0..4_000).map(|i| json!({"role": "user", "content": format!("{i} {text}")})).collect();
    let body = serde_json::to_string(&json!({"input": items, "store": true})).unwrap();
    drop(items);
    let size = u64::try_from(body.len()).unwrap();
    let (status, growth) = peak_growth_of(&gw, &secret, body).await;
    assert_eq!(status, 200);
    assert!(growth < 10 * size, "peak grew {growth} bytes for a {size}-byte body");
    eprintln!("answered: peak growth {growth} bytes for a {size}-byte body ({:.1}x)", growth as f64 / size as f64);
}
