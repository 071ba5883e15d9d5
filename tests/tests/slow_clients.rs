//! The standalone server against slow and oversized clients, over real TCP: half-sent headers and
//! silent connections are closed (10 s), a stalled body is answered 408, an idle keep-alive
//! connection outlives the header timeout, and every route answers an oversized body with the
//! JSON 413 envelope (template routes included, with their own smaller cap).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use mesh::request::MAX_BODY_BYTES;
use mesh::server::ServerLimits;
use mesh_tests::{Gateway, GatewayOptions};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on waiting for the server to act on a 10 s limit (twice it: no test hangs).
const BOUND: Duration = Duration::from_secs(20);

fn addr(gw: &Gateway) -> String {
    gw.url.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; panics if it does not within `bound`.
async fn read_until_closed(socket: &mut TcpStream, bound: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let started = Instant::now();
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(bound.saturating_sub(started.elapsed()), socket.read(&mut chunk)).await {
            Err(_) => panic!("the server kept the connection open for {bound:?}"),
            Ok(Ok(0) | Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads one response with a `content-length` body; returns its status line and body.
async fn read_response(socket: &mut TcpStream) -> (String, Vec<u8>) {
    let mut received = Vec::new();
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(BOUND, socket.read(&mut chunk)).await.expect("an answer").unwrap();
        assert!(n > 0, "the connection closed before an answer: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    while received.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(BOUND, socket.read(&mut chunk)).await.expect("the body").unwrap();
        assert!(n > 0, "the connection closed inside the body");
        received.extend_from_slice(&chunk[..n]);
    }
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, received[head_end..head_end + length].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_and_silent_connections_are_closed() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    let mut half = TcpStream::connect(addr(&gw)).await.unwrap();
    half.write_all(b"POST /v1/responses HTTP/1.1\r\nHost: mesh\r\nContent-Type: appl").await.unwrap();
    let mut silent = TcpStream::connect(addr(&gw)).await.unwrap();
    tokio::join!(read_until_closed(&mut half, BOUND), read_until_closed(&mut silent, BOUND));
    let health = gw.http.get(format!("{}/healthz", gw.url)).send().await.unwrap();
    assert_eq!(health.status(), 200, "the server goes on serving");
}

/// Sends a head promising 100 bytes of body, then 9 of them, then nothing.
async fn stall_body(gw: &Gateway, secret: &str, path: &str) {
    let mut socket = TcpStream::connect(addr(gw)).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: mesh\r\nAuthorization: Bearer {secret}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"input\":"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut socket).await;
    assert!(status.starts_with("http/1.1 408"), "{path}: {status}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout", "{path}: {body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["request_id"].as_str().unwrap().starts_with("req_"));
    read_until_closed(&mut socket, BOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_answered_408_in_the_envelope() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    tokio::join!(stall_body(&gw, &secret, "/v1/responses"), stall_body(&gw, &secret, "/v1/templates"));
    assert!(gw.stub.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_outlives_the_header_timeout() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    let limits = ServerLimits { header_read: Duration::from_millis(500), keep_alive_idle: Duration::from_secs(30) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let short = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(mesh::server::serve_with(gw.state.clone(), listener, limits));

    let mut socket = TcpStream::connect(&short).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: mesh\r\n\r\n";
    socket.write_all(request).await.unwrap();
    assert!(read_response(&mut socket).await.0.starts_with("http/1.1 200"));
    // Idle for several header timeouts: still a usable keep-alive connection.
    tokio::time::sleep(limits.header_read * 4).await;
    socket.write_all(request).await.unwrap();
    assert!(read_response(&mut socket).await.0.starts_with("http/1.1 200"), "reused after idling");
    // A head that starts and stalls is cut at the header timeout, idle time before it aside.
    tokio::time::sleep(limits.header_read * 2).await;
    socket.write_all(b"GET /healthz HTTP/1.1\r\nHo").await.unwrap();
    read_until_closed(&mut socket, BOUND).await;
    server.abort();
}

/// A body of `len` bytes that declares no length (chunked).
fn chunked(len: usize) -> reqwest::Body {
    let pieces = (0..len.div_ceil(1 << 20)).map(move |i| {
        let size = (len - i * (1 << 20)).min(1 << 20);
        Ok::<Vec<u8>, std::io::Error>(vec![b'a'; size])
    });
    reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
}

async fn expect_413(response: reqwest::Response, what: &str) -> Value {
    assert_eq!(response.status(), 413, "{what}");
    assert_eq!(response.headers()["content-type"], "application/json", "{what}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{what}: {body}");
    assert_eq!(body["error"]["code"], "request_too_large", "{what}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_the_json_413_on_every_route() {
    let gw = Gateway::start(GatewayOptions::default()).await;
    let (secret, _) = gw.create_key(|_| {}).await;
    let over_cap = MAX_BODY_BYTES + 1;
    let routes = [
        (reqwest::Method::POST, "/v1/responses"),
        (reqwest::Method::POST, "/v1/templates"),
        (reqwest::Method::PATCH, "/v1/templates/tpl_x"),
        (reqwest::Method::POST, "/v1/nothing"),
    ];
    for (method, path) in routes {
        let url = format!("{}{path}", gw.url);
        let declared = gw.http.request(method.clone(), &url).bearer_auth(&secret).body(vec![b'a'; over_cap]);
        expect_413(declared.send().await.unwrap(), &format!("{method} {path} with content-length")).await;
        let streamed = gw.http.request(method.clone(), &url).bearer_auth(&secret).body(chunked(over_cap));
        expect_413(streamed.send().await.unwrap(), &format!("{method} {path} chunked")).await;
    }

    // Templates are stored as one item: their bodies have a smaller cap, past axum's own 2 MB
    // limit included, answered the same way.
    let big = json!({"name": "big", "system": "s".repeat(3 << 20)});
    let response =
        gw.http.post(format!("{}/v1/templates", gw.url)).bearer_auth(&secret).json(&big).send().await.unwrap();
    let body = expect_413(response, "a 3 MB template").await;
    let limit = mesh::templates::MAX_TEMPLATE_BYTES.to_string();
    assert!(body["error"]["message"].as_str().unwrap().contains(&limit), "{body}");
    let fits = json!({"name": "fits", "system": "s".repeat(mesh::templates::MAX_TEMPLATE_BYTES - 100)});
    let response =
        gw.http.post(format!("{}/v1/templates", gw.url)).bearer_auth(&secret).json(&fits).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert!(gw.stub.requests().is_empty());
}
