//! The Lambda front door's adapter: what differs between a Lambda event and a plain HTTP request.

use lambda_http::RequestExt;

/// API Gateway REST puts the stage in the path (`/prod/v1/responses`); route on the stage-less
/// path lambda_http keeps aside, so the same app serves Function URLs, REST stages and HTTP.
pub fn without_stage(mut request: lambda_http::Request) -> lambda_http::Request {
    let raw = request.raw_http_path();
    if raw.is_empty() || raw == request.uri().path() {
        return request;
    }
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{raw}?{query}"),
        None => raw.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    if let Ok(value) = path_and_query.parse() {
        parts.path_and_query = Some(value);
        if let Ok(uri) = lambda_http::http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}
