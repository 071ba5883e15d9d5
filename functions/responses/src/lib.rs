//! The Lambda front door's adapter: what differs between a Lambda event and a plain HTTP request.

use std::time::{Duration, Instant, SystemTime};

use lambda_http::RequestExt;
use mesh::routing::Deadline;

/// Time kept back from Lambda's deadline to answer 504 before the function is killed.
const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// Everything the app needs from a Lambda event beyond the HTTP request.
pub fn adapt(request: lambda_http::Request) -> lambda_http::Request {
    with_deadline(without_stage(request))
}

/// Passes the invocation's deadline (less a margin) to the app as a [`Deadline`]. A deadline
/// already past when the invocation starts is not a real one (local emulators send the timeout
/// itself, not an epoch time): the app's own total budget applies then.
pub fn with_deadline(mut request: lambda_http::Request) -> lambda_http::Request {
    let Some(context) = request.lambda_context_ref() else { return request };
    let Ok(remaining) = context.deadline().duration_since(SystemTime::now()) else { return request };
    let deadline = Deadline(Instant::now() + remaining.saturating_sub(DEADLINE_MARGIN));
    request.extensions_mut().insert(deadline);
    request
}

/// API Gateway REST puts the stage in the path (`/prod/v1/responses`); route on the stage-less
/// path lambda_http keeps aside, so the same app serves Function URLs, REST stages and HTTP.
/// A raw path that is not a plain path (`?` or `#` in it, or no leading `/`) is left alone:
/// it would otherwise turn part of itself into a query.
pub fn without_stage(mut request: lambda_http::Request) -> lambda_http::Request {
    let raw = request.raw_http_path();
    if raw.is_empty() || raw == request.uri().path() || !raw.starts_with('/') || raw.contains(['?', '#']) {
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

/// How often the Runtime API loop may be restarted: at most `max` times within `window`.
#[derive(Debug)]
pub struct RestartBudget {
    max: usize,
    window: Duration,
    recent: Vec<Instant>,
}

impl RestartBudget {
    pub fn new(max: usize, window: Duration) -> Self {
        RestartBudget { max, window, recent: Vec::new() }
    }

    /// Records a failure at `now`; true while the failures within the window stay within budget.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.recent.retain(|at| now.duration_since(*at) < self.window);
        self.recent.push(now);
        self.recent.len() <= self.max
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn restarts_are_budgeted_per_window() {
        let start = Instant::now();
        let mut budget = RestartBudget::new(3, Duration::from_secs(60));
        assert!((0..3).all(|i| budget.allow(start + Duration::from_secs(i))));
        assert!(!budget.allow(start + Duration::from_secs(3)), "a fourth failure within the minute ends it");
        assert!(budget.allow(start + Duration::from_secs(125)), "old failures leave the window");
    }

    use super::*;

    fn with_context_deadline(deadline_ms: u64) -> lambda_http::Request {
        let mut context = lambda_http::lambda_runtime::Context::default();
        context.deadline = deadline_ms;
        lambda_http::Request::default().with_lambda_context(context)
    }

    #[test]
    fn a_raw_path_that_is_no_plain_path_is_left_alone() {
        // Found by the lambda_event fuzz target: a raw path `?` became an empty query.
        for raw in ["?", "/a?b", "a", "/#x"] {
            let mut request = lambda_http::Request::default();
            *request.uri_mut() = "/prod/v1/responses".parse().unwrap();
            let request = without_stage(request.with_raw_http_path(raw));
            assert_eq!(request.uri().path(), "/prod/v1/responses", "{raw}");
            assert_eq!(request.uri().query(), None, "{raw}");
        }
        let mut request = lambda_http::Request::default();
        *request.uri_mut() = "/prod/v1/responses?x=1".parse().unwrap();
        let request = without_stage(request.with_raw_http_path("/v1/responses"));
        assert_eq!(request.uri().path_and_query().map(|p| p.as_str()), Some("/v1/responses?x=1"));
    }

    #[test]
    fn passes_real_deadlines_less_a_margin_and_ignores_bogus_ones() {
        let now_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
        let request = with_deadline(with_context_deadline(now_ms + 60_000));
        let Deadline(at) = *request.extensions().get::<Deadline>().unwrap();
        let left = at.saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(55) && left <= Duration::from_secs(58), "{left:?}");
        // cargo lambda's emulator sends the timeout (600000 ms) where an epoch time belongs.
        let request = with_deadline(with_context_deadline(600_000));
        assert!(request.extensions().get::<Deadline>().is_none());
    }
}
