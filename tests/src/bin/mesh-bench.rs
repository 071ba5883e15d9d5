//! `mesh-bench`: Mesh's overhead against the upstream's own speed, in one run on loopback.
//!
//! It starts a lean mock upstream (hyper, answering 16-token Responses, Chat Completions and
//! streams from bytes built once), measures it directly, then starts the real `responses`
//! binary in front of it for each store set-up and measures the same load through Mesh:
//! added p50 at concurrency 1, closed-loop throughput at 16 connections as a ratio of the
//! direct one, CPU per request, peak RSS at 64 connections, added time to the first streamed
//! token and per streamed event, and the time from exec to ready (standalone, and under a
//! Lambda Runtime API emulator). The mock and the gateway share core 0, the load generator runs
//! on core 1 (`tests/bench.sh` pins them with `taskset`).
//!
//! Every request through Mesh is authenticated (a key with RPM/RPD limits and a soft spend
//! cap), limited, priced and recorded; after each set-up the usage rows are counted against the
//! requests sent.
//!
//! Run: `./tests/bench.sh` (see its header for options).
#![allow(clippy::print_stdout, clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use mesh_tests::bench::{self, mock, runtime_api};

#[derive(Parser, Debug)]
#[command(name = "mesh-bench", about = "Mesh's overhead against a direct call to the same mock upstream")]
struct Args {
    /// Seconds of each closed-loop throughput phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Requests timed at concurrency 1 (after as many again of warm-up).
    #[arg(long, default_value_t = 2000)]
    samples: usize,
    /// The `responses` binary to run (default: next to this one).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Redis for the Redis-limits set-up.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// After the table, hold 64 connections on the embedded set-up for this many seconds and
    /// print RSS every 10 s (0: no soak).
    #[arg(long, default_value_t = 0)]
    soak: u64,
    /// Cores: the mock and the gateway run on `--server-cpu`; `taskset` pins them when present.
    #[arg(long, default_value = "0")]
    server_cpu: String,
    /// Internal: run the mock upstream on this address.
    #[arg(long, hide = true)]
    mock: Option<SocketAddr>,
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    if let Some(addr) = args.mock {
        runtime.block_on(mock::serve(addr));
        return;
    }
    runtime.block_on(run(args));
}

/// A child process pinned to the server core, killed on drop.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(cpu: &str, program: &Path, args: &[&str], env: &[(String, String)]) -> Proc {
        let mut command = if which("taskset") {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        Proc {
            child: command.spawn().unwrap_or_else(|e| panic_exit(&format!("cannot start {}: {e}", program.display()))),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the process to stop (SIGTERM, so the gateway drains and settles) and waits for it.
    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn panic_exit(message: &str) -> ! {
    eprintln!("mesh-bench: {message}");
    std::process::exit(2)
}

fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Waits until `GET path` answers 200; returns the time it took from `since`.
async fn ready(addr: SocketAddr, path: &str, since: Instant) -> Duration {
    let request = format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(addr).await {
            let mut reader = bench::ResponseReader::default();
            if stream.write_all(request.as_bytes()).await.is_ok() {
                if let Ok(200) = reader.read(&mut stream, None).await.map(|r| r.status) {
                    return since.elapsed();
                }
            }
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    panic_exit(&format!("{addr} did not become ready"))
}

/// One row of the table.
#[derive(Default)]
struct Row {
    name: String,
    c1_p50: Duration,
    c16_rps: f64,
    c16_errors: u64,
    non_200: u64,
    cpu_per_request: Duration,
    c64_rps: f64,
    rss_peak_kib: u64,
    stream_first: Duration,
    stream_total: Duration,
    stream_events: usize,
    chat_c1_p50: Duration,
    chat_c16_rps: f64,
    chat_cpu_per_request: Duration,
    start: Option<Duration>,
    first_request: Option<Duration>,
    lambda_start: Option<Duration>,
    sent: u64,
    recorded: Option<usize>,
}

struct Target {
    addr: SocketAddr,
    pid: u32,
    responses: Arc<[u8]>,
    stream: Arc<[u8]>,
    chat: Arc<[u8]>,
}

async fn measure(name: &str, target: &Target, args: &Args) -> Row {
    let seconds = Duration::from_secs(args.seconds);
    let mut row = Row { name: name.to_owned(), ..Row::default() };
    let _ = bench::closed_loop(target.addr, &target.responses, 1, Duration::from_millis(300)).await;
    let times = bench::latencies(target.addr, &target.responses, args.samples).await;
    row.c1_p50 = bench::percentile(&times, 0.5);

    let cpu_before = bench::cpu_time(target.pid);
    let c16 = bench::closed_loop(target.addr, &target.responses, 16, seconds).await;
    let cpu = bench::cpu_time(target.pid).saturating_sub(cpu_before);
    row.c16_rps = c16.ok as f64 / c16.elapsed.as_secs_f64();
    row.c16_errors = c16.errors;
    row.cpu_per_request = cpu / u32::try_from(c16.ok.max(1)).unwrap_or(u32::MAX);

    let c64 = bench::closed_loop(target.addr, &target.responses, 64, seconds).await;
    row.c64_rps = c64.ok as f64 / c64.elapsed.as_secs_f64();
    row.c16_errors += c64.errors;
    row.rss_peak_kib = bench::status_kib(target.pid, "VmHWM:");

    let streams = bench::stream_times(target.addr, &target.stream, 500).await;
    row.stream_first = streams.first;
    row.stream_total = streams.total;
    row.stream_events = streams.events;

    let times = bench::latencies(target.addr, &target.chat, args.samples / 2).await;
    row.chat_c1_p50 = bench::percentile(&times, 0.5);
    let cpu_before = bench::cpu_time(target.pid);
    let chat = bench::closed_loop(target.addr, &target.chat, 16, seconds / 2).await;
    let cpu = bench::cpu_time(target.pid).saturating_sub(cpu_before);
    row.chat_c16_rps = chat.ok as f64 / chat.elapsed.as_secs_f64();
    row.chat_cpu_per_request = cpu / u32::try_from(chat.ok.max(1)).unwrap_or(u32::MAX);
    row.c16_errors += chat.errors;
    row
}

async fn run(args: Args) {
    mesh::install_crypto_provider();
    let gateway =
        args.gateway.clone().unwrap_or_else(|| std::env::current_exe().expect("exe").with_file_name("responses"));
    if !gateway.exists() {
        panic_exit(&format!("no gateway binary at {} (build it with --profile bench)", gateway.display()));
    }
    if !which("taskset") {
        println!("# taskset not found: processes are not pinned, ratios are less telling");
    }
    let exe = std::env::current_exe().expect("exe");
    let mock_addr = free_addr();
    let mock_arg = mock_addr.to_string();
    let mock = Proc::spawn(&args.server_cpu, &exe, &["--mock", &mock_arg], &[]);
    ready(mock_addr, "/healthz", Instant::now()).await;

    println!(
        "# mesh-bench: {} s per throughput phase, {} samples at c1; mock and gateway on cpu {}, load on the others",
        args.seconds, args.samples, args.server_cpu
    );
    let direct = Target {
        addr: mock_addr,
        pid: mock.pid(),
        responses: bench::post("/v1/responses", "sk-bench", &bench::responses_body("gpt-bench", false)),
        stream: bench::post("/v1/responses", "sk-bench", &bench::responses_body("gpt-bench", true)),
        chat: bench::post("/v1/chat/completions", "sk-bench", &bench::chat_body("chat-bench")),
    };
    let direct_row = measure("direct mock", &direct, &args).await;

    let setups: [(&str, Option<&str>); 2] =
        [("mesh, embedded store, in-process limits", None), ("mesh, embedded store, Redis limits", Some(&args.redis))];
    let mut rows = Vec::new();
    for (name, redis) in setups {
        let dir = tempdir();
        let secret = bench::seed_store(&dir).await;
        let listen = free_addr();
        let mut env = gateway_env(&dir, mock_addr, redis);
        env.push(("MESH_LISTEN".into(), listen.to_string()));
        let started = Instant::now();
        let proc = Proc::spawn(&args.server_cpu, &gateway, &[], &env);
        let start = ready(listen, "/healthz", started).await;
        let target = Target {
            addr: listen,
            pid: proc.pid(),
            responses: bench::post("/v1/responses", &secret, &bench::responses_body("bench/model", false)),
            stream: bench::post("/v1/responses", &secret, &bench::responses_body("bench/model", true)),
            chat: bench::post("/v1/chat/completions", &secret, &bench::chat_body("bench/chat")),
        };
        let (ok_before, other_before) = (bench::ANSWERED_OK.load(Relaxed), bench::ANSWERED_OTHER.load(Relaxed));
        let first = Instant::now();
        let _ = bench::latencies(target.addr, &target.responses, 1).await;
        let first_request = first.elapsed();
        let mut row = measure(name, &target, &args).await;
        row.start = Some(start);
        row.first_request = Some(first_request);
        if args.soak > 0 && redis.is_none() {
            soak(&target, args.soak).await;
        }
        proc.stop();
        row.sent = bench::ANSWERED_OK.load(Relaxed) - ok_before;
        row.non_200 = bench::ANSWERED_OTHER.load(Relaxed) - other_before;
        row.recorded = Some(bench::count_usage(&dir).await);
        // Exec to the first invocation handled, under a Runtime API emulator.
        let lambda_dir = tempdir();
        let lambda_secret = bench::seed_store(&lambda_dir).await;
        let mut env = gateway_env(&lambda_dir, mock_addr, redis);
        let (api, answered) = runtime_api::start(&lambda_secret).await;
        env.extend(runtime_api::env(api));
        let started = Instant::now();
        let proc = Proc::spawn(&args.server_cpu, &gateway, &[], &env);
        row.lambda_start = tokio::time::timeout(Duration::from_secs(30), answered)
            .await
            .ok()
            .and_then(Result::ok)
            .map(|at| at - started);
        drop(proc);
        let _ = std::fs::remove_dir_all(&lambda_dir);
        let _ = std::fs::remove_dir_all(&dir);
        rows.push(row);
    }
    print_table(&direct_row, &rows);
    drop(mock);
    // Exact accounting is part of what is measured: one usage row per answered request.
    let unrecorded: Vec<&Row> = rows.iter().filter(|row| row.recorded != Some(row.sent as usize)).collect();
    if !unrecorded.is_empty() {
        for row in unrecorded {
            eprintln!(
                "mesh-bench: {}: {} requests answered but {:?} usage rows recorded",
                row.name, row.sent, row.recorded
            );
        }
        std::process::exit(1);
    }
}

async fn soak(target: &Target, seconds: u64) {
    println!("\n# soak: 64 connections for {seconds} s (embedded store, in-process limits)");
    println!("{:>6} {:>10} {:>10} {:>10}", "t (s)", "req/s", "RSS KiB", "peak KiB");
    let mut elapsed = 0;
    while elapsed < seconds {
        let phase = 10.min(seconds - elapsed);
        let result = bench::closed_loop(target.addr, &target.responses, 64, Duration::from_secs(phase)).await;
        elapsed += phase;
        println!(
            "{:>6} {:>10.0} {:>10} {:>10}",
            elapsed,
            result.ok as f64 / result.elapsed.as_secs_f64(),
            bench::status_kib(target.pid, "VmRSS:"),
            bench::status_kib(target.pid, "VmHWM:")
        );
    }
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-bench-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn gateway_env(dir: &Path, mock: SocketAddr, redis: Option<&str>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("MESH_STORE", "local".to_owned()),
        ("MESH_LOCAL_DIR", dir.display().to_string()),
        ("MESH_PROVIDER_OPENAI_BASE_URL", format!("http://{mock}/v1")),
        ("MESH_PROVIDER_OPENAI_API_KEY", "sk-bench".to_owned()),
        ("MESH_PROVIDER_CHATMOCK_API", "chat".to_owned()),
        ("MESH_PROVIDER_CHATMOCK_BASE_URL", format!("http://{mock}/v1")),
        ("MESH_PROVIDER_CHATMOCK_API_KEY", "sk-bench".to_owned()),
        ("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(url) = redis {
        env.push(("MESH_REDIS_URL".to_owned(), url.to_owned()));
    }
    env
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn print_table(direct: &Row, rows: &[Row]) {
    let added = |a: Duration, b: Duration| {
        if a >= b {
            format!("+{}", ms(a - b))
        } else {
            format!("-{}", ms(b - a))
        }
    };
    println!("\n## POST /v1/responses (16-token answers; streams of {} events)", direct.stream_events);
    println!(
        "| target | c1 p50 | c1 added p50 | c16 req/s (x direct) | CPU ms/request | c64 req/s | RSS peak | stream first-token added | added per event | ready after exec | first request | Lambda: first invocation |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in std::iter::once(direct).chain(rows) {
        let is_direct = std::ptr::eq(row, direct);
        let per_event = if row.stream_events == 0 {
            0.0
        } else {
            (row.stream_total.as_secs_f64() - direct.stream_total.as_secs_f64()) * 1e6 / row.stream_events as f64
        };
        println!(
            "| {} | {} | {} | {:.0} ({:.3}x) | {:.4} | {:.0} | {:.1} MiB | {} | {} | {} | {} | {} |",
            row.name,
            ms(row.c1_p50),
            if is_direct { "-".to_owned() } else { added(row.c1_p50, direct.c1_p50) },
            row.c16_rps,
            row.c16_rps / direct.c16_rps,
            row.cpu_per_request.as_secs_f64() * 1e3,
            row.c64_rps,
            row.rss_peak_kib as f64 / 1024.0,
            if is_direct { "-".to_owned() } else { added(row.stream_first, direct.stream_first) },
            if is_direct { "-".to_owned() } else { format!("{per_event:+.2} µs") },
            row.start.map_or("-".to_owned(), ms),
            row.first_request.map_or("-".to_owned(), ms),
            row.lambda_start.map_or("-".to_owned(), ms),
        );
    }
    println!("\n## POST /v1/chat/completions (pass-through to a Chat Completions upstream)");
    println!("| target | c1 p50 | c1 added p50 | c16 req/s (x direct) | CPU ms/request |");
    println!("|---|---|---|---|---|");
    for row in std::iter::once(direct).chain(rows) {
        let is_direct = std::ptr::eq(row, direct);
        println!(
            "| {} | {} | {} | {:.0} ({:.3}x) | {:.4} |",
            row.name,
            ms(row.chat_c1_p50),
            if is_direct { "-".to_owned() } else { added(row.chat_c1_p50, direct.chat_c1_p50) },
            row.chat_c16_rps,
            row.chat_c16_rps / direct.chat_c16_rps,
            row.chat_cpu_per_request.as_secs_f64() * 1e3,
        );
    }
    println!();
    for row in rows {
        let recorded = row.recorded.map_or("not counted".to_owned(), |n| n.to_string());
        println!(
            "{}: {} answered 200, {} answered otherwise, {} failed in the throughput phases, {} usage rows recorded",
            row.name, row.sent, row.non_200, row.c16_errors, recorded
        );
    }
}
