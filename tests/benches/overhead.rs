//! Gateway overhead on loopback, concurrency 1, standalone front door (axum over TCP):
//! p50/p99 of calling the stub directly versus through Mesh, with limits off and on (Redis),
//! and the CPU time Mesh adds per request, for `/v1/responses` (OpenAI Responses stub) and
//! `/v1/chat/completions` (Chat Completions pass-through, `groq` at the chat stub) in the same
//! run; streaming time-to-first-event and per-event overhead, and memory per open stream.
//!
//! CPU is the whole process's user + system time (`/proc/self/stat`, clock ticks of 10 ms) over
//! all samples: client, stub and gateway run in this process, so the difference between the
//! direct and the through-Mesh runs is what Mesh's extra hop and work cost.
//!
//! Run: `cargo bench -p mesh-tests --bench overhead` (Redis on 127.0.0.1:6379).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mesh::config::{ProviderApi, ProviderConfig, Secret};
use mesh_tests::chat_stub::ChatStub;
use mesh_tests::{Gateway, GatewayOptions};
use serde_json::json;

const WARMUP: usize = 300;
const SAMPLES: usize = 3000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn sample<F, Fut>(mut call: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..WARMUP {
        call().await;
    }
    let mut times = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        call().await;
        times.push(started.elapsed());
    }
    times.sort();
    times
}

fn report(name: &str, times: &[Duration]) -> (Duration, Duration) {
    let (p50, p99) = (percentile(times, 0.50), percentile(times, 0.99));
    println!("{name:<40} p50 {:>8.1} µs   p99 {:>8.1} µs", micros(p50), micros(p99));
    (p50, p99)
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<u64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    // utime and stime are fields 14 and 15: indexes 11 and 12 after the state.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

/// Latencies of `call` and the CPU seconds it took per call.
async fn sample_with_cpu<F, Fut>(call: F) -> (Vec<Duration>, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let before = cpu_seconds();
    let times = sample(call).await;
    let cpu = (cpu_seconds() - before) / (WARMUP + SAMPLES) as f64;
    (times, cpu)
}

/// Reports one endpoint: direct and through Mesh, the latency and CPU Mesh adds.
fn report_added(name: &str, direct: &(Vec<Duration>, f64), mesh: &(Vec<Duration>, f64)) {
    let direct_p = report(&format!("{name}: stub direct"), &direct.0);
    let mesh_p = report(&format!("{name}: through mesh"), &mesh.0);
    println!(
        "{:<40} p50 {:>8.1} µs   p99 {:>8.1} µs   CPU {:>6.1} µs/request (direct {:.1}, through mesh {:.1})",
        format!("{name}: added by mesh"),
        micros(mesh_p.0.saturating_sub(direct_p.0)),
        micros(mesh_p.1.saturating_sub(direct_p.1)),
        (mesh.1 - direct.1) * 1e6,
        direct.1 * 1e6,
        mesh.1 * 1e6
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

async fn post(http: &reqwest::Client, url: &str, secret: &str, body: &serde_json::Value) {
    let response = http.post(url).bearer_auth(secret).json(body).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let _ = response.bytes().await.unwrap();
}

async fn stream_times(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    body: &serde_json::Value,
) -> (Duration, Duration, usize) {
    let started = Instant::now();
    let response = http.post(url).bearer_auth(secret).json(body).send().await.unwrap();
    let mut stream = response.bytes_stream();
    let mut first = None;
    let mut events = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        first.get_or_insert_with(|| started.elapsed());
        events += chunk.windows(7).filter(|w| w == b"event: ").count();
    }
    (first.unwrap_or_default(), started.elapsed(), events)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    mesh::install_crypto_provider();
    let chat_stub = ChatStub::start().await;
    let groq = ProviderConfig {
        name: "groq".into(),
        api: ProviderApi::Chat,
        base_url: chat_stub.url.clone(),
        api_key: Some(Secret::new("gsk-bench")),
        api_key_secret_arn: None,
        token_delay: Duration::ZERO,
    };
    let gw = Gateway::start(GatewayOptions { redis: true, providers: vec![groq], ..GatewayOptions::default() }).await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.50", "10.00", Some("1.25")).await;
    gw.put_row("groq/llama", "groq", "llama-3.3-70b-versatile", "0.59", "0.79", None).await;
    let (open_key, _) = gw.create_key(|_| {}).await;
    let (limited_key, _) = gw
        .create_key(|k| {
            k.rpm = Some(10_000_000);
            k.rpd = Some(100_000_000);
        })
        .await;
    let http = reqwest::Client::builder().tcp_nodelay(true).build().unwrap();
    let body = json!({"model": "openai/gpt-4o", "input": "Say hello", "temperature": 0.2});
    let direct_body = json!({"model": "gpt-4o", "input": "Say hello", "temperature": 0.2});
    let direct_url = format!("{}/responses", gw.stub.url);
    let gateway_url = format!("{}/v1/responses", gw.url);

    println!("# non-streaming, concurrency 1, {SAMPLES} samples after {WARMUP} warm-up");
    let direct = report("stub direct", &sample(|| post(&http, &direct_url, "sk", &direct_body)).await);
    let off = report("through mesh, limits off", &sample(|| post(&http, &gateway_url, &open_key, &body)).await);
    let on = report("through mesh, RPM+RPD in Redis", &sample(|| post(&http, &gateway_url, &limited_key, &body)).await);
    println!(
        "added by mesh (limits off):  p50 {:>8.1} µs   p99 {:>8.1} µs",
        micros(off.0.saturating_sub(direct.0)),
        micros(off.1.saturating_sub(direct.1))
    );
    println!(
        "added by mesh (limits on):   p50 {:>8.1} µs   p99 {:>8.1} µs",
        micros(on.0.saturating_sub(direct.0)),
        micros(on.1.saturating_sub(direct.1))
    );

    println!("\n# both endpoints, limits off: added latency and CPU per request ({SAMPLES} samples each)");
    let responses_direct = sample_with_cpu(|| post(&http, &direct_url, "sk", &direct_body)).await;
    let responses_mesh = sample_with_cpu(|| post(&http, &gateway_url, &open_key, &body)).await;
    report_added("/v1/responses", &responses_direct, &responses_mesh);
    let chat_body =
        json!({"model": "groq/llama", "messages": [{"role": "user", "content": "Say hello"}], "temperature": 0.2});
    let chat_direct_body = json!({"model": "llama-3.3-70b-versatile", "messages": [{"role": "user", "content": "Say hello"}], "temperature": 0.2});
    let chat_direct_url = format!("{}/chat/completions", chat_stub.url);
    let chat_gateway_url = format!("{}/v1/chat/completions", gw.url);
    let chat_direct = sample_with_cpu(|| post(&http, &chat_direct_url, "gsk", &chat_direct_body)).await;
    let chat_mesh = sample_with_cpu(|| post(&http, &chat_gateway_url, &open_key, &chat_body)).await;
    report_added("/v1/chat/completions", &chat_direct, &chat_mesh);

    println!("\n# streaming: 200 text deltas, no delay between events");
    gw.stub.settings(|s| {
        s.event_delay = Duration::ZERO;
        s.text = "x".repeat(200);
        s.chunk = 1;
    });
    let stream_body = json!({"model": "openai/gpt-4o", "input": "x", "stream": true});
    let direct_stream = json!({"model": "gpt-4o", "input": "x", "stream": true});
    let mut direct_runs = Vec::new();
    let mut mesh_runs = Vec::new();
    for _ in 0..50 {
        stream_times(&http, &direct_url, "sk", &direct_stream).await;
        stream_times(&http, &gateway_url, &open_key, &stream_body).await;
    }
    for _ in 0..300 {
        direct_runs.push(stream_times(&http, &direct_url, "sk", &direct_stream).await);
        mesh_runs.push(stream_times(&http, &gateway_url, &open_key, &stream_body).await);
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let events = mesh_runs[0].2;
    let ttfb_direct = median(direct_runs.iter().map(|r| r.0).collect());
    let ttfb_mesh = median(mesh_runs.iter().map(|r| r.0).collect());
    let total_direct = median(direct_runs.iter().map(|r| r.1).collect());
    let total_mesh = median(mesh_runs.iter().map(|r| r.1).collect());
    println!(
        "time to first byte            direct {:>8.1} µs   mesh {:>8.1} µs   added {:>8.1} µs",
        micros(ttfb_direct),
        micros(ttfb_mesh),
        micros(ttfb_mesh.saturating_sub(ttfb_direct))
    );
    println!(
        "whole stream ({events} events)      direct {:>8.1} µs   mesh {:>8.1} µs   added per event {:>6.2} µs",
        micros(total_direct),
        micros(total_mesh),
        micros(total_mesh.saturating_sub(total_direct)) / events as f64
    );

    println!("\n# memory per open stream (200 stalled streams; RSS of this process, client included)");
    gw.put_price("openai/stall", "stub-stream-stall", "2.50", "10.00", None).await;
    let before = rss_kib();
    let mut open = Vec::new();
    for _ in 0..200 {
        let response = http
            .post(&gateway_url)
            .bearer_auth(&open_key)
            .json(&json!({"model": "openai/stall", "input": "x", "stream": true}))
            .send()
            .await
            .unwrap();
        open.push(response);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    println!(
        "RSS before {before} KiB, with 200 open streams {after} KiB: {:.1} KiB per stream",
        (after.saturating_sub(before)) as f64 / 200.0
    );
    drop(open);
}
