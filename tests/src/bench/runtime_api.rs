//! A Lambda Runtime API emulator for `mesh-bench`'s cold-start reading: it hands the function
//! one Function URL event (`POST /v1/responses`) and notes when the function's whole (streamed)
//! answer has arrived. Later polls for work wait forever, as on Lambda between invocations.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::oneshot;

const EVENT: &str = include_str!("../../../events/function-url-responses.json");

struct Emulator {
    event: Bytes,
    handed_out: std::sync::atomic::AtomicBool,
    answered: Mutex<Option<oneshot::Sender<Instant>>>,
}

/// The environment the function needs to find the emulator.
pub fn env(api: SocketAddr) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", api.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", "mesh-bench".to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench".to_owned()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/mesh-bench".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn event(secret: &str) -> Bytes {
    let mut event: Value = serde_json::from_str(EVENT).expect("the sample event is JSON");
    let body = json!({"model": "bench/model", "input": "Say hello"}).to_string();
    event["headers"]["authorization"] = json!(format!("Bearer {secret}"));
    event["headers"]["content-length"] = json!(body.len().to_string());
    event["body"] = json!(body);
    Bytes::from(event.to_string())
}

async fn handle(emulator: Arc<Emulator>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    if path.ends_with("/invocation/next") {
        if emulator.handed_out.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let deadline = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() + 60_000).unwrap_or(0);
        let mut response = Response::new(Full::new(emulator.event.clone()));
        let headers = response.headers_mut();
        headers.insert("lambda-runtime-aws-request-id", http::HeaderValue::from_static("bench-invocation-1"));
        headers.insert("lambda-runtime-deadline-ms", http::HeaderValue::from(deadline as u64));
        headers.insert(
            "lambda-runtime-invoked-function-arn",
            http::HeaderValue::from_static("arn:aws:lambda:us-east-1:000000000000:function:mesh-bench"),
        );
        headers.insert(
            "lambda-runtime-trace-id",
            http::HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
        );
        return Ok(response);
    }
    // The answer (or an error report): read it whole, then note the time.
    let _ = request.into_body().collect().await;
    if path.ends_with("/response") {
        if let Some(sender) = emulator.answered.lock().ok().and_then(|mut s| s.take()) {
            let _ = sender.send(Instant::now());
        }
    }
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = http::StatusCode::ACCEPTED;
    Ok(response)
}

/// Starts the emulator; the receiver yields when the first invocation's answer is in.
pub async fn start(secret: &str) -> (SocketAddr, oneshot::Receiver<Instant>) {
    let (sender, receiver) = oneshot::channel();
    let emulator = Arc::new(Emulator {
        event: event(secret),
        handed_out: std::sync::atomic::AtomicBool::new(false),
        answered: Mutex::new(Some(sender)),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the emulator");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let emulator = emulator.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| handle(emulator.clone(), request));
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, receiver)
}
