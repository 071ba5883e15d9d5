//! The pieces of `mesh-bench` (`src/bin/bench.rs`): a closed-loop HTTP/1.1 load generator that
//! writes pre-built request bytes and reads just enough of each answer to find its end, the
//! process readings (CPU time, RSS), the store seeding and the usage count.

pub mod mock;
pub mod runtime_api;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh::domain::{ApiKey, CapMode, KeyStatus, ModelPrice, UsageFilter};
use mesh::money::{Nanos, UsdPerMtok};
use mesh::store::{KeyStore, PriceStore, UsageStore};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// POST answers seen with status 200, and with any other status, since the process started.
pub static ANSWERED_OK: AtomicU64 = AtomicU64::new(0);
pub static ANSWERED_OTHER: AtomicU64 = AtomicU64::new(0);

/// One answer read off the wire.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub status: u16,
    /// When the marker (if asked for) was first seen in the body.
    pub marked: Option<Instant>,
    /// How many `event: ` lines the body held (when a marker was asked for).
    pub events: usize,
}

/// Reads HTTP/1.1 answers (content-length or chunked) off a keep-alive connection.
#[derive(Debug, Default)]
pub struct ResponseReader {
    buf: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl ResponseReader {
    async fn fill(&mut self, stream: &mut TcpStream) -> std::io::Result<()> {
        self.buf.reserve(16384);
        if stream.read_buf(&mut self.buf).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        Ok(())
    }

    /// Reads one whole answer; with `mark`, notes when those bytes first show in the body.
    pub async fn read(&mut self, stream: &mut TcpStream, mark: Option<&[u8]>) -> std::io::Result<Reply> {
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            self.fill(stream).await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let length =
            head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = head.lines().any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
        let mut marked = None;
        let mut check_mark = |buf: &[u8]| {
            if let (Some(mark), None) = (mark, marked) {
                if find(&buf[head_end..], mark).is_some() {
                    marked = Some(Instant::now());
                }
            }
        };
        let end = if let Some(length) = length.filter(|_| !chunked) {
            check_mark(&self.buf);
            while self.buf.len() < head_end + length {
                self.fill(stream).await?;
                check_mark(&self.buf);
            }
            head_end + length
        } else {
            let mut pos = head_end;
            loop {
                check_mark(&self.buf);
                let Some(line) = find(&self.buf[pos..], b"\r\n") else {
                    self.fill(stream).await?;
                    continue;
                };
                let size_text = String::from_utf8_lossy(&self.buf[pos..pos + line]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size"))?;
                let needed = pos + line + 2 + size + 2;
                if self.buf.len() < needed {
                    self.fill(stream).await?;
                    continue;
                }
                pos = needed;
                if size == 0 {
                    break pos;
                }
            }
        };
        let events =
            if mark.is_some() { self.buf[head_end..end].windows(7).filter(|w| w == b"event: ").count() } else { 0 };
        self.buf.drain(..end);
        Ok(Reply { status, marked, events })
    }
}

/// Sends `request` and reads its answer, counting it as answered.
async fn exchange(
    stream: &mut TcpStream,
    reader: &mut ResponseReader,
    request: &[u8],
    mark: Option<&[u8]>,
) -> std::io::Result<Reply> {
    stream.write_all(request).await?;
    let reply = reader.read(stream, mark).await?;
    if reply.status == 200 {
        ANSWERED_OK.fetch_add(1, Ordering::Relaxed);
    } else {
        ANSWERED_OTHER.fetch_add(1, Ordering::Relaxed);
    }
    Ok(reply)
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// What a closed-loop phase did.
#[derive(Debug, Clone, Copy)]
pub struct LoopResult {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

/// `connections` clients, each sending `request` again as soon as its answer is in, for `length`.
pub async fn closed_loop(addr: SocketAddr, request: &Arc<[u8]>, connections: usize, length: Duration) -> LoopResult {
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let request = request.clone();
        tasks.spawn(async move {
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut stream = connect(addr).await;
            let mut reader = ResponseReader::default();
            while Instant::now() < deadline {
                match exchange(&mut stream, &mut reader, &request, None).await {
                    Ok(reply) if reply.status == 200 => ok += 1,
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        stream = connect(addr).await;
                        reader = ResponseReader::default();
                    }
                }
            }
            (ok, errors)
        });
    }
    let (mut ok, mut errors) = (0, 0);
    while let Some(Ok((o, e))) = tasks.join_next().await {
        ok += o;
        errors += e;
    }
    LoopResult { ok, errors, elapsed: started.elapsed() }
}

/// Latencies of `samples` requests one after another on one connection, sorted.
pub async fn latencies(addr: SocketAddr, request: &[u8], samples: usize) -> Vec<Duration> {
    let mut stream = connect(addr).await;
    let mut reader = ResponseReader::default();
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let reply = exchange(&mut stream, &mut reader, request, None).await.expect("exchange");
        times.push(started.elapsed());
        assert_eq!(reply.status, 200, "the benchmark's requests must succeed");
    }
    times.sort();
    times
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// Medians of streamed answers at concurrency 1.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamTimes {
    pub first: Duration,
    pub total: Duration,
    pub events: usize,
}

/// Streams `runs` answers one after another (after a fifth as many of warm-up): median time
/// to the first text delta and to the end of the stream.
pub async fn stream_times(addr: SocketAddr, request: &[u8], runs: usize) -> StreamTimes {
    let mut stream = connect(addr).await;
    let mut reader = ResponseReader::default();
    let (mut firsts, mut totals, mut events) = (Vec::new(), Vec::new(), 0);
    for i in 0..runs + runs / 5 {
        let started = Instant::now();
        let reply =
            exchange(&mut stream, &mut reader, request, Some(b"response.output_text.delta")).await.expect("stream");
        let total = started.elapsed();
        assert_eq!(reply.status, 200, "the benchmark's streams must succeed");
        if i >= runs / 5 {
            firsts.push(reply.marked.map_or(total, |at| at - started));
            totals.push(total);
            events = reply.events;
        }
    }
    firsts.sort();
    totals.sort();
    StreamTimes { first: percentile(&firsts, 0.5), total: percentile(&totals, 0.5), events }
}

/// User + system CPU time of a process.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<u64> = rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    // utime and stime (fields 14 and 15) in clock ticks of 10 ms.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// The bytes of a keep-alive `POST path` with a JSON body.
pub fn post(path: &str, secret: &str, body: &Value) -> Arc<[u8]> {
    let body = body.to_string();
    format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {secret}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into()
}

pub fn responses_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "input": "Say hello", "temperature": 0.2, "stream": stream})
}

pub fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}], "temperature": 0.2})
}

/// Creates the embedded store under `dir` with the catalog rows the mock serves and a key with
/// RPM/RPD limits and a soft cap; returns the key's secret.
pub async fn seed_store(dir: &Path) -> String {
    let store = mesh::store::local::LocalStore::open(dir).expect("open the embedded store");
    let secret = mesh::ids::new_key_secret().expect("csprng");
    let key = ApiKey {
        id: secret.id,
        key_hash: secret.hash,
        name: "bench".to_owned(),
        owner: "bench".to_owned(),
        status: KeyStatus::Active,
        rpm: Some(100_000_000),
        rpd: Some(10_000_000_000),
        spend_cap: Some(Nanos(1_000_000 * 1_000_000_000)),
        spend_cap_mode: CapMode::Soft,
        spent: Nanos::ZERO,
        reserved: Nanos::ZERO,
        default_model: None,
        default_params: serde_json::Map::new(),
        allowed_models: Vec::new(),
        expires_at: None,
        created_at: mesh::domain::now_unix(),
    };
    store.insert_key(&key).await.expect("insert key");
    for (model, provider, upstream) in
        [("bench/model", "openai", "gpt-bench"), ("bench/chat", "chatmock", "chat-bench")]
    {
        let row = ModelPrice {
            model: model.to_owned(),
            provider: provider.to_owned(),
            upstream_model: upstream.to_owned(),
            input_usd_per_mtok: Some(UsdPerMtok::from_usd_str("2.50").expect("price")),
            output_usd_per_mtok: Some(UsdPerMtok::from_usd_str("10.00").expect("price")),
            cached_input_usd_per_mtok: None,
            context_length: Some(128_000),
            max_output_tokens: Some(16_384),
            is_free: false,
            is_default: true,
            enabled: true,
            priority: None,
        };
        store.put_price(&row).await.expect("put price");
    }
    secret.secret
}

/// Usage rows recorded in the embedded store under `dir`.
pub async fn count_usage(dir: &Path) -> usize {
    let store = mesh::store::local::LocalStore::open(dir).expect("open the embedded store");
    let filter = UsageFilter { key_id: None, owner: Some("bench".to_owned()), session_id: None, since_ms: None };
    store.query_usage(&filter).await.map(|rows| rows.len()).unwrap_or(0)
}
