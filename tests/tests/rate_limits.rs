//! RPM/RPD fixed windows in Redis: exact under concurrency across processes and gateway
//! instances, refusals that consume nothing, headers, and Redis faults (down, slow, restarted)
//! under both fail modes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh::config::FailMode;
use mesh_tests::{eventually, services, Gateway, GatewayOptions, StoreKind, PATIENCE};
use serde_json::{json, Value};

/// Seconds left in the current Redis window of `period` seconds.
async fn seconds_left_in(period: u64) -> u64 {
    let client = redis::Client::open(services::redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let (seconds, _micros): (u64, u64) = redis::cmd("TIME").query_async(&mut connection).await.unwrap();
    period - seconds % period
}

/// Waits until a burst of a few seconds cannot straddle a minute boundary.
async fn away_from_minute_edge() {
    while seconds_left_in(60).await < 15 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until a burst of up to ten minutes cannot straddle a day boundary (a wait only in the
/// ten minutes before midnight UTC).
async fn away_from_day_edge() {
    while seconds_left_in(86_400).await < 600 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_n_of_4n_concurrent_requests_pass_across_processes_and_instances() {
    let prefix = services::unique_prefix();
    let a = Gateway::start(GatewayOptions {
        redis: true,
        redis_prefix: Some(prefix.clone()),
        store: StoreKind::Dynamo,
        ..GatewayOptions::default()
    })
    .await;
    let b = Gateway::start(GatewayOptions {
        redis: true,
        redis_prefix: Some(prefix),
        stores: Some(a.stores.clone()),
        ..GatewayOptions::default()
    })
    .await;
    a.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", None).await;
    // The daily window, so that however long four Python processes take to start on a loaded
    // machine the burst stays in one window (a minute window could end mid-burst and admit more).
    let n = 12;
    let (secret, key) = a.create_key(|k| k.rpd = Some(n)).await;
    away_from_day_edge().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/burst.py");
    let processes = 4;
    let per_process = 4 * n / processes;
    let outputs: Vec<_> = (0..processes)
        .map(|_| {
            tokio::process::Command::new("python3")
                .arg(&script)
                .args([secret.clone(), "openai/gpt-4o".into(), per_process.to_string(), a.url.clone(), b.url.clone()])
                .output()
        })
        .collect();
    let mut totals: HashMap<String, u64> = HashMap::new();
    for output in futures_util::future::join_all(outputs).await {
        let output = output.unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let counts: HashMap<String, u64> = serde_json::from_slice(&output.stdout).unwrap();
        for (status, count) in counts {
            *totals.entry(status).or_default() += count;
        }
    }
    assert_eq!(totals.get("200").copied(), Some(n), "exactly RPD requests pass: {totals:?}");
    assert_eq!(totals.get("429").copied(), Some(3 * n), "{totals:?}");
    a.settled().await;
    b.settled().await;
    assert_eq!(a.usage_of_key(&key.id).await.len(), usize::try_from(n).unwrap(), "only served requests are charged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_window_and_consume_nothing() {
    let gw = Gateway::start(GatewayOptions { redis: true, ..GatewayOptions::default() }).await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", None).await;
    let (secret, _) = gw
        .create_key(|k| {
            k.rpm = Some(3);
            k.rpd = Some(2);
        })
        .await;
    away_from_minute_edge().await;
    let body = json!({"model": "openai/gpt-4o", "input": "x"});
    for expected_remaining in [2, 1] {
        let response = gw.post(&secret, &body).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-ratelimit-limit-requests"], "3");
        assert_eq!(response.headers()["x-ratelimit-limit-requests-day"], "2");
        assert_eq!(response.headers()["x-ratelimit-remaining-requests"], expected_remaining.to_string());
        let reset = response.headers()["x-ratelimit-reset-requests"].to_str().unwrap().to_owned();
        assert!(reset.ends_with('s') && reset.trim_end_matches('s').parse::<u64>().unwrap() <= 60, "{reset}");
    }
    // The day window refuses; the minute window keeps its third slot.
    for _ in 0..2 {
        let response = gw.post(&secret, &body).await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "1", "a refusal consumes nothing");
        assert_eq!(response.headers()["x-ratelimit-remaining-requests-day"], "0");
        let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert!(body["error"]["message"].as_str().unwrap().contains("RPD"));
        assert_eq!(body["error"]["retry_after_seconds"], retry_after);
        assert!(retry_after > 0 && retry_after <= 86_400);
    }
    // A minute refusal: a key with RPM 1.
    let (minute, _) = gw.create_key(|k| k.rpm = Some(1)).await;
    assert_eq!(gw.post(&minute, &body).await.status(), 200);
    let refused = gw.post(&minute, &body).await;
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after <= 60);
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("RPM"));
    assert_eq!(gw.stub.requests().len(), 3);
}

/// A private redis-server this test may stop, slow down and restart.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateRedis { port, child: Some(child) }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_slow_and_restarted_fail_open() {
    let mut redis = PrivateRedis::start(free_port());
    let gw = Gateway::start(GatewayOptions {
        redis_url: Some(redis.url()),
        configure: |c| {
            c.redis_breaker_interval = Duration::from_millis(500);
            // The production timeout: the test is about how long a slow Redis may hold a request.
            c.redis_timeout = Duration::from_millis(50);
        },
        ..GatewayOptions::default()
    })
    .await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", None).await;
    let (secret, _) = gw.create_key(|k| k.rpm = Some(1000)).await;
    let body = json!({"model": "openai/gpt-4o", "input": "x"});
    assert_eq!(gw.post(&secret, &body).await.status(), 200);

    // Slow: the server sleeps 2 s; requests are served after at most one 50 ms timeout.
    let slow = redis::Client::open(redis.url()).unwrap();
    let mut connection = slow.get_multiplexed_async_connection().await.unwrap();
    let sleeper = tokio::spawn(async move {
        let _: redis::RedisResult<()> = redis::cmd("DEBUG").arg("SLEEP").arg(2).query_async(&mut connection).await;
    });
    // The sleep starts when Redis has read the command: wait until Redis stops answering.
    let url = redis.url();
    eventually("Redis is asleep (DEBUG SLEEP started)", PATIENCE, || async {
        let ping = async {
            let client = redis::Client::open(url.as_str())?;
            let mut probe = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut probe).await
        };
        tokio::time::timeout(Duration::from_millis(100), ping).await.is_err()
    })
    .await;
    let started = Instant::now();
    for _ in 0..5 {
        let response = gw.post(&secret, &body).await;
        assert_eq!(response.status(), 200, "fail open serves");
        assert!(response.headers().get("x-ratelimit-limit-requests").is_none(), "no limit headers without a decision");
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "5 requests did not wait for a 2 s Redis: {:?}",
        started.elapsed()
    );
    assert!(gw.state.counters.limiter_fail_open.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    sleeper.await.unwrap();

    // Down.
    redis.stop();
    for _ in 0..3 {
        assert_eq!(gw.post(&secret, &body).await.status(), 200);
    }
    let ready = gw.http.get(format!("{}/readyz", gw.url)).send().await.unwrap();
    assert_eq!(ready.status(), 503, "readiness reports the dead limiter");

    // Restarted (counters lost): limits apply again without restarting the gateway.
    let port = redis.port;
    drop(redis);
    let _redis = PrivateRedis::start(port);
    let recovered = Instant::now();
    loop {
        let response = gw.post(&secret, &body).await;
        assert_eq!(response.status(), 200);
        if response.headers().get("x-ratelimit-limit-requests").is_some() {
            break;
        }
        assert!(recovered.elapsed() < Duration::from_secs(10), "the limiter reconnects");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fail_closed() {
    let mut redis = PrivateRedis::start(free_port());
    let gw = Gateway::start(GatewayOptions {
        redis_url: Some(redis.url()),
        fail_mode: FailMode::Closed,
        // The production timeout: the test is about how long a dead Redis may hold a request.
        configure: |c| c.redis_timeout = Duration::from_millis(50),
        ..GatewayOptions::default()
    })
    .await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", None).await;
    let (limited, _) = gw.create_key(|k| k.rpm = Some(1000)).await;
    let (unlimited, _) = gw.create_key(|_| {}).await;
    let body = json!({"model": "openai/gpt-4o", "input": "x"});
    assert_eq!(gw.post(&limited, &body).await.status(), 200);
    redis.stop();
    let started = Instant::now();
    for _ in 0..3 {
        let response = gw.post(&limited, &body).await;
        assert_eq!(response.status(), 503);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "store_unavailable");
    }
    assert!(started.elapsed() < Duration::from_secs(2), "bounded by the command timeout and the breaker");
    assert_eq!(gw.post(&unlimited, &body).await.status(), 200, "keys without limits never touch Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_work_over_tls() {
    mesh::install_crypto_provider();
    let dir = std::env::temp_dir().join(format!("mesh-tls-{}", services::unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    // A CA, and a server certificate for 127.0.0.1 signed by it.
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (ca_key, ca, key, csr, cert) =
        (path("ca.key"), path("ca.pem"), path("server.key"), path("server.csr"), path("server.pem"));
    let ext = path("ext.cnf");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    let steps: [Vec<&str>; 3] = [
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=mesh-test-ca",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
        ],
        vec!["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", &key, "-out", &csr],
        vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    ];
    for step in steps {
        let made = Command::new("openssl").args(&step).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
        assert!(made.success(), "openssl {step:?}");
    }
    let port = free_port();
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--tls-cert-file", &cert, "--tls-key-file", &key])
        .args(["--tls-ca-cert-file", &ca, "--tls-auth-clients", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The server's certificate is verified against the test's own CA (MESH_REDIS_CA_FILE).
    let gw = Gateway::start(GatewayOptions {
        redis_url: Some(format!("rediss://127.0.0.1:{port}")),
        redis_ca: Some(std::fs::read(&ca).unwrap()),
        fail_mode: FailMode::Closed,
        configure: |c| c.redis_timeout = Duration::from_secs(5),
        ..GatewayOptions::default()
    })
    .await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", None).await;
    let (secret, _) = gw.create_key(|k| k.rpm = Some(1)).await;
    let body = json!({"model": "openai/gpt-4o", "input": "x"});
    away_from_minute_edge().await;
    let first = gw.post(&secret, &body).await;
    assert_eq!(first.status(), 200, "fail-closed: the limiter answered over TLS");
    assert_eq!(first.headers()["x-ratelimit-remaining-requests"], "0");
    assert_eq!(gw.post(&secret, &body).await.status(), 429);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_work_on_redis_cluster() {
    let dir = std::env::temp_dir().join(format!("mesh-cluster-{}", services::unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes: Vec<Child> = ports
        .iter()
        .map(|port| {
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--dir", dir.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for port in &ports {
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addresses)
        .arg("--cluster-yes")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(created.success(), "cluster created");
    for _ in 0..100 {
        let info = Command::new("redis-cli").args(["-p", &ports[0].to_string(), "cluster", "info"]).output().unwrap();
        if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    fn cluster(c: &mut mesh::config::Config) {
        c.redis_cluster = true;
        c.redis_timeout = Duration::from_secs(5);
    }
    let gw = Gateway::start(GatewayOptions {
        redis_url: Some(format!("redis://{}", addresses[0])),
        fail_mode: FailMode::Closed,
        configure: cluster,
        ..GatewayOptions::default()
    })
    .await;
    gw.put_price("openai/gpt-4o", "gpt-4o", "2.5", "10", None).await;
    let body = json!({"model": "openai/gpt-4o", "input": "x"});
    // The cluster connection is made in the background: wait until the limiter answers.
    let (probe, _) = gw.create_key(|k| k.rpm = Some(1_000)).await;
    let started = Instant::now();
    while gw.post(&probe, &body).await.status() != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "the cluster limiter connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    away_from_minute_edge().await;
    // Several keys, so their hash tags land on different nodes.
    for _ in 0..3 {
        let (secret, _) = gw.create_key(|k| k.rpm = Some(2)).await;
        assert_eq!(gw.post(&secret, &body).await.status(), 200);
        let second = gw.post(&secret, &body).await;
        assert_eq!(second.status(), 200);
        assert_eq!(second.headers()["x-ratelimit-remaining-requests"], "0");
        assert_eq!(gw.post(&secret, &body).await.status(), 429);
    }
    for node in &mut nodes {
        let _ = node.kill();
        let _ = node.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
