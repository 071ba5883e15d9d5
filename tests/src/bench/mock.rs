//! The mock upstream of `mesh-bench`: a lean hyper server whose answers are bytes built once:
//! a 16-token Responses answer, a streamed Responses answer of 200 text deltas, and a
//! Chat Completions answer. It reads each request body whole (as a provider would) and looks
//! only at whether it asks for a stream.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::stub::{response_object, text_stream_events};

const MODEL: &str = "gpt-bench";
const TEXT: &str = "Hello! How can I help you today? I am here to answer your questions.";

struct Answers {
    responses: Bytes,
    stream: Bytes,
    chat: Bytes,
}

fn usage(output: u64) -> Value {
    json!({"input_tokens": 9, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 9 + output})
}

fn answers() -> Answers {
    let mut whole = response_object(MODEL, TEXT, &usage(16), "completed");
    if let Some(object) = whole.as_object_mut() {
        object.remove("upstream_only_field");
    }
    let mut stream = String::new();
    for mut event in text_stream_events(MODEL, &"x".repeat(200), 1, &usage(200)) {
        if let Some(response) = event.get_mut("response").and_then(Value::as_object_mut) {
            response.remove("upstream_only_field");
        }
        let name = event["type"].as_str().unwrap_or_default().to_owned();
        stream.push_str(&format!("event: {name}\ndata: {event}\n\n"));
    }
    let chat = json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_741_476_542, "model": "chat-bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT, "refusal": null},
            "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 16, "total_tokens": 25}
    });
    Answers {
        responses: Bytes::from(whole.to_string()),
        stream: Bytes::from(stream),
        chat: Bytes::from(chat.to_string()),
    }
}

fn reply(content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

async fn answer(answers: &'static Answers, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let stream = body.windows(13).any(|w| w == b"\"stream\":true");
    Ok(if path.ends_with("/responses") && stream {
        reply("text/event-stream", answers.stream.clone())
    } else if path.ends_with("/responses") {
        reply("application/json", answers.responses.clone())
    } else if path.ends_with("/chat/completions") {
        reply("application/json", answers.chat.clone())
    } else {
        reply("application/json", Bytes::from_static(br#"{"status":"ok"}"#))
    })
}

/// Serves until the process ends.
pub async fn serve(addr: SocketAddr) {
    let answers: &'static Answers = Box::leak(Box::new(answers()));
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the mock");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(answers, request));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
