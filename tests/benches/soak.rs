//! Load and soak on loopback: a steady request rate for a bounded time with 1% injected provider
//! failures, through a gateway whose model has a failover row. Reports throughput, the error
//! rate seen by clients (failover should absorb the injected failures), memory, open file
//! descriptors and in-flight tasks over time: none of them may grow.
//!
//! Run: `MESH_SOAK_SECS=600 MESH_SOAK_RPS=200 cargo bench -p mesh-tests --bench soak`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_tests::{Gateway, GatewayOptions};
use serde_json::json;

fn status_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(name)).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    mesh::install_crypto_provider();
    let seconds: u64 = std::env::var("MESH_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(600);
    let rate: u64 = std::env::var("MESH_SOAK_RPS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let gw = Arc::new(Gateway::start(GatewayOptions { redis: true, ..GatewayOptions::default() }).await);
    let primary = gw.put_row("acme/soak", "openai", "stub-chaos", "2.50", "10.00", None).await;
    let mut backup = gw.put_row("acme/soak", "backup", "gpt-4o", "1.00", "4.00", None).await;
    backup.is_default = false;
    gw.stores.prices.put_price(&backup).await.unwrap();
    gw.stores.prices.put_price(&primary).await.unwrap();
    let (secret, _) = gw.create_key(|k| k.rpm = Some(1_000_000)).await;
    gw.stub.settings(|s| s.record = false);
    let http = reqwest::Client::builder().tcp_nodelay(true).build().unwrap();
    let (ok, failed, fallbacks) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    println!("# soak: {seconds} s at {rate} req/s, 1% provider failures, failover row configured");
    println!(
        "{:>6} {:>9} {:>7} {:>9} {:>9} {:>6} {:>7}",
        "t (s)", "requests", "errors", "failover", "RSS KiB", "fds", "tasks"
    );
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut next_report = Duration::from_secs(10);
    let baseline_rss = status_field("VmRSS:");
    while started.elapsed() < Duration::from_secs(seconds) {
        ticker.tick().await;
        let (http, secret, url) = (http.clone(), secret.clone(), format!("{}/v1/responses", gw.url));
        let (ok_count, failed_count, fallback_count) = (ok.clone(), failed.clone(), fallbacks.clone());
        tokio::spawn(async move {
            match http.post(url).bearer_auth(secret).json(&json!({"model": "acme/soak", "input": "x"})).send().await {
                Ok(response) if response.status().is_success() => {
                    if response.headers().get("x-mesh-routing-fallback").is_some_and(|v| v == "true") {
                        fallback_count.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = response.bytes().await;
                    ok_count.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    failed_count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        if started.elapsed() >= next_report {
            next_report += Duration::from_secs(10);
            println!(
                "{:>6} {:>9} {:>7} {:>9} {:>9} {:>6} {:>7}",
                started.elapsed().as_secs(),
                ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed),
                fallbacks.load(Ordering::Relaxed),
                status_field("VmRSS:"),
                open_fds(),
                gw.state.tasks.len()
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
    println!(
        "done: {total} requests in {:.0} s ({:.0} req/s), client-visible errors {} ({:.3}%), failovers {} ({:.2}%), RSS {} → {} KiB, fds {}, tasks {}",
        started.elapsed().as_secs_f64(),
        total as f64 / started.elapsed().as_secs_f64(),
        failed.load(Ordering::Relaxed),
        100.0 * failed.load(Ordering::Relaxed) as f64 / total.max(1) as f64,
        fallbacks.load(Ordering::Relaxed),
        100.0 * fallbacks.load(Ordering::Relaxed) as f64 / total.max(1) as f64,
        baseline_rss,
        status_field("VmRSS:"),
        open_fds(),
        gw.state.tasks.len()
    );
}
