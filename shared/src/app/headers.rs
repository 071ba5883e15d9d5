//! Response headers a pipeline answer carries besides its body, built as values: the key's rate
//! limits (`x-ratelimit-*`) and how the request was routed (`x-mesh-routing-*`).

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::limits::{LimitDecision, WindowState};
use crate::routing::Routing;

/// The names of one window's three headers.
struct WindowNames {
    limit: HeaderName,
    remaining: HeaderName,
    reset: HeaderName,
}

static MINUTE: WindowNames = WindowNames {
    limit: HeaderName::from_static("x-ratelimit-limit-requests"),
    remaining: HeaderName::from_static("x-ratelimit-remaining-requests"),
    reset: HeaderName::from_static("x-ratelimit-reset-requests"),
};

static DAY: WindowNames = WindowNames {
    limit: HeaderName::from_static("x-ratelimit-limit-requests-day"),
    remaining: HeaderName::from_static("x-ratelimit-remaining-requests-day"),
    reset: HeaderName::from_static("x-ratelimit-reset-requests-day"),
};

static ROUTING_ATTEMPTS: HeaderName = HeaderName::from_static("x-mesh-routing-attempts");
static ROUTING_FALLBACK: HeaderName = HeaderName::from_static("x-mesh-routing-fallback");
static SERVED_PROVIDER: HeaderName = HeaderName::from_static("x-mesh-served-provider");

/// The `x-ratelimit-*` headers of a limited key: limit, remaining and reset (`{n}s`) of each of
/// its windows (`-requests` a minute, `-requests-day` a day).
#[derive(Debug, Clone, Copy)]
pub struct LimitHeaders(pub LimitDecision);

impl LimitHeaders {
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let windows = [(self.0.minute, &MINUTE), (self.0.day, &DAY)];
        for (window, names) in windows {
            let Some(WindowState { limit, remaining, reset_seconds }) = window else { continue };
            headers.insert(names.limit.clone(), HeaderValue::from(limit));
            headers.insert(names.remaining.clone(), HeaderValue::from(remaining));
            if let Ok(value) = HeaderValue::from_str(&format!("{reset_seconds}s")) {
                headers.insert(names.reset.clone(), value);
            }
        }
        headers
    }
}

/// `x-mesh-routing-attempts`, `x-mesh-routing-fallback` and `x-mesh-served-provider`, once a
/// provider was tried (none before).
#[derive(Debug, Clone, Default)]
pub struct RoutingHeaders(pub Routing);

impl RoutingHeaders {
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let routing = &self.0;
        if routing.attempts == 0 {
            return headers;
        }
        headers.insert(ROUTING_ATTEMPTS.clone(), HeaderValue::from(routing.attempts));
        let fallback = HeaderValue::from_static(if routing.fallback { "true" } else { "false" });
        headers.insert(ROUTING_FALLBACK.clone(), fallback);
        if let Some(provider) = routing.served_provider.as_deref().and_then(|p| HeaderValue::from_str(p).ok()) {
            headers.insert(SERVED_PROVIDER.clone(), provider);
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_headers_name_each_window() {
        let window = |limit, remaining, reset_seconds| Some(WindowState { limit, remaining, reset_seconds });
        let decision = LimitDecision { refused_by: None, minute: window(10, 9, 60), day: window(100, 0, 3600) };
        let headers = LimitHeaders(decision).headers();
        let pairs: Vec<(&str, &str)> =
            headers.iter().map(|(name, value)| (name.as_str(), value.to_str().unwrap())).collect();
        assert_eq!(
            pairs,
            [
                ("x-ratelimit-limit-requests", "10"),
                ("x-ratelimit-remaining-requests", "9"),
                ("x-ratelimit-reset-requests", "60s"),
                ("x-ratelimit-limit-requests-day", "100"),
                ("x-ratelimit-remaining-requests-day", "0"),
                ("x-ratelimit-reset-requests-day", "3600s"),
            ]
        );
        assert!(LimitHeaders(LimitDecision::UNLIMITED).headers().is_empty());
    }

    #[test]
    fn routing_headers_appear_once_a_provider_was_tried() {
        assert!(RoutingHeaders::default().headers().is_empty());
        let routing = Routing { attempts: 2, fallback: true, served_provider: Some("openai".to_owned()) };
        let headers = RoutingHeaders(routing).headers();
        assert_eq!(headers["x-mesh-routing-attempts"], "2");
        assert_eq!(headers["x-mesh-routing-fallback"], "true");
        assert_eq!(headers["x-mesh-served-provider"], "openai");
    }
}
