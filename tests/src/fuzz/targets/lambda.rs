//! The Lambda front door's event adapter: `lambda_http::request::from_str` on Function URL
//! (HTTP API v2) and API Gateway REST (v1) events, then `responses::without_stage`. An event is
//! parsed or refused cleanly; the stage-less path keeps the query; adapting twice changes nothing.

use lambda_http::RequestExt;

/// Events AWS never sends, on which lambda_http 1.3 / aws_lambda_events 1.2 / query_map 0.7
/// themselves panic (reported upstream; skipped here so the target keeps testing Mesh's adapter,
/// and so that cargo-fuzz, which aborts on any panic, can run it): a host or domain name that is
/// no plain `host[:port]` and a forwarded protocol other than http(s) (`Url::parse(..).unwrap()`),
/// a path or raw query string `http::Uri` refuses or finds too long (`.expect("failed to build
/// request")`), a multi-value parameter with no value (`values[0]`), a body marked base64 that
/// is not.
fn lambda_http_would_panic(event: &serde_json::Value) -> bool {
    use serde_json::Value;
    let plain_host = |h: &str| {
        let (name, port) = h.split_once(':').unwrap_or((h, "80"));
        let labels_ok =
            name.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        // The url crate reads a last label that is a number (`7`, `0x7`) as an IPv4 part.
        let last_has_letter = name.rsplit('.').next().is_some_and(|l| l.starts_with(|c: char| c.is_ascii_alphabetic()));
        ((labels_ok && last_has_letter) || name.parse::<std::net::Ipv4Addr>().is_ok()) && port.parse::<u16>().is_ok()
    };
    let values = |v: &Value| -> Vec<Value> {
        match v {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        }
    };
    let mut bad = false;
    for field in ["headers", "multiValueHeaders"] {
        for (name, value) in event[field].as_object().into_iter().flatten() {
            let name = name.to_ascii_lowercase();
            for v in values(value) {
                let text = v.as_str().unwrap_or("");
                bad |= name == "host" && !plain_host(text);
                bad |= name == "x-forwarded-proto" && text != "http" && text != "https";
            }
        }
    }
    bad |= event["requestContext"]["domainName"].as_str().is_some_and(|h| !plain_host(h));
    for field in ["multiValueQueryStringParameters", "multiValueHeaders"] {
        bad |= event[field].as_object().into_iter().flatten().any(|(_, v)| v.as_array().is_some_and(Vec::is_empty));
    }
    let bad_uri = |text: String| text.len() > 8192 || text.parse::<http::uri::PathAndQuery>().is_err();
    bad |= ["path", "rawPath"]
        .iter()
        .any(|p| event[*p].as_str().is_some_and(|p| !p.starts_with('/') || bad_uri(p.to_owned())));
    bad |= event["rawQueryString"].as_str().is_some_and(|q| bad_uri(format!("/?{q}")));
    bad |= event.to_string().len() > 65_536; // longer than any URL AWS forwards, escapes and all
    bad |= event["isBase64Encoded"] == true
        && event["body"].as_str().is_some_and(|b| {
            let body = b.trim_end_matches('=');
            b.len() % 4 != 0
                || b.len() - body.len() > 2
                || !body.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
        });
    bad
}

pub fn target(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(event) if !lambda_http_would_panic(&event) => {}
        _ => return,
    }
    let Ok(request) = lambda_http::request::from_str(text) else { return };
    let query = request.uri().query().map(str::to_owned);
    let raw = request.raw_http_path().to_owned();
    let adapted = responses::without_stage(request);
    let uri = adapted.uri().clone();
    assert_eq!(uri.query().map(str::to_owned), query, "the query survives");
    let plain = raw.starts_with('/') && !raw.contains(['?', '#']);
    if plain && uri.path() != raw {
        // Left alone only when the raw path is no valid URI path.
        let rebuilt = match &query {
            Some(q) => format!("{raw}?{q}"),
            None => raw.clone(),
        };
        assert!(rebuilt.parse::<lambda_http::http::uri::PathAndQuery>().is_err(), "{raw:?} not applied to {uri}");
    }
    let again = responses::without_stage(adapted);
    assert_eq!(again.uri(), &uri, "adapting twice changes the request");
}

pub fn seeds() -> Vec<Vec<u8>> {
    crate::fuzz::events()
}

pub const TOKENS: &[&str] = &[
    "\"rawPath\":",
    "\"path\":",
    "\"resource\":",
    "\"stage\":",
    "\"rawQueryString\":",
    "\"isBase64Encoded\":true",
    "\"multiValueQueryStringParameters\":",
    "\"cookies\":",
    "%2F",
    "?a=b&c",
    "/prod/v1/responses",
];
