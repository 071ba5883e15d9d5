//! Typed configuration, read once from the environment at cold start and validated.
//!
//! Nothing else in the crate reads the environment. Secrets sit in [`Secret`], which never prints.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A value that must never reach logs or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself; call only where it is sent to its destination.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

/// A configuration problem, naming the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

fn config_error(variable: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError { variable: variable.to_owned(), problem: problem.into() }
}

/// Which store adapter holds keys, prices, usage and the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded store: files under a directory.
    Local { dir: PathBuf },
    /// DynamoDB tables named `<prefix><table>`.
    Dynamo { table_prefix: String },
}

/// What to do when Redis cannot answer a rate-limit check in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    Open,
    Closed,
}

/// The wire API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderApi {
    Responses,
    Chat,
    Anthropic,
    Gemini,
    Bedrock,
    /// The built-in offline provider (`providers::echo`): no network, no credentials.
    Echo,
}

impl ProviderApi {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "responses" => ProviderApi::Responses,
            "chat" => ProviderApi::Chat,
            "anthropic" => ProviderApi::Anthropic,
            "gemini" => ProviderApi::Gemini,
            "bedrock" => ProviderApi::Bedrock,
            "echo" => ProviderApi::Echo,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderApi::Responses => "responses",
            ProviderApi::Chat => "chat",
            ProviderApi::Anthropic => "anthropic",
            ProviderApi::Gemini => "gemini",
            ProviderApi::Bedrock => "bedrock",
            ProviderApi::Echo => "echo",
        }
    }
}

/// One configured provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub api: ProviderApi,
    pub base_url: String,
    /// Credential; `None` means the provider answers 503 `provider_not_available`.
    pub api_key: Option<Secret>,
    /// Secrets Manager ARN the credential is read from at cold start (resolved by the front door).
    pub api_key_secret_arn: Option<String>,
    /// Pause between streamed tokens (the `echo` API only; `..._TOKEN_DELAY_MS`).
    pub token_delay: Duration,
}

/// Built-in API kind and base URL of the well-known providers.
pub fn well_known_provider(name: &str) -> Option<(ProviderApi, &'static str)> {
    Some(match name {
        "openai" => (ProviderApi::Responses, "https://api.openai.com/v1"),
        "anthropic" => (ProviderApi::Anthropic, "https://api.anthropic.com"),
        "gemini" => (ProviderApi::Gemini, "https://generativelanguage.googleapis.com"),
        "vertex" => (ProviderApi::Gemini, "https://aiplatform.googleapis.com"),
        "bedrock" => (ProviderApi::Bedrock, ""),
        "openrouter" => (ProviderApi::Chat, "https://openrouter.ai/api/v1"),
        "groq" => (ProviderApi::Chat, "https://api.groq.com/openai/v1"),
        "mistral" => (ProviderApi::Chat, "https://api.mistral.ai/v1"),
        "together" => (ProviderApi::Chat, "https://api.together.xyz/v1"),
        "deepseek" => (ProviderApi::Chat, "https://api.deepseek.com/v1"),
        "fireworks" => (ProviderApi::Chat, "https://api.fireworks.ai/inference/v1"),
        "xai" => (ProviderApi::Chat, "https://api.x.ai/v1"),
        "qwen" => (ProviderApi::Chat, "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"),
        _ => return None,
    })
}

/// Timeouts for provider calls.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    /// From sending the request to the response head (and, non-streaming, the whole body).
    pub first_byte: Duration,
    /// Longest silence between two stream events.
    pub stream_idle: Duration,
    /// Longest a whole provider call may take.
    pub total: Duration,
    /// How long a stream whose client left is still read for its usage.
    pub drain: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        UpstreamTimeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(120),
            stream_idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
            drain: Duration::from_secs(60),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub store: StoreConfig,
    pub redis_url: Option<Secret>,
    /// PEM CA to verify a `rediss://` server with (private CAs), instead of the public roots.
    pub redis_ca_file: Option<PathBuf>,
    /// Speak Redis Cluster (ElastiCache Serverless, cluster-mode replication groups).
    pub redis_cluster: bool,
    pub rate_limit_fail_mode: FailMode,
    pub redis_timeout: Duration,
    pub redis_breaker_interval: Duration,
    pub default_model: Option<String>,
    pub listen: SocketAddr,
    pub providers: BTreeMap<String, ProviderConfig>,
    /// How long keys and prices are served from the in-process cache.
    pub cache_ttl: Duration,
    pub upstream: UpstreamTimeouts,
    /// How long a hard-cap reservation lives if its request never settles.
    pub reservation_ttl: Duration,
    /// Running under the Lambda runtime (`AWS_LAMBDA_RUNTIME_API` is set).
    pub in_lambda: bool,
    /// How long stored responses live.
    pub response_ttl: Duration,
    /// Most settlements not yet written (running, or waiting in the outbox) before admissions
    /// answer 503 with `retry-after`.
    pub settlement_backlog: usize,
    /// Retries, failover and circuit breaking across providers.
    pub routing: crate::routing::RoutingPolicy,
    /// Emit CloudWatch Embedded Metric Format lines (in Lambda, or `MESH_METRICS=emf`).
    pub emf_metrics: bool,
    /// S3 buckets whose objects requests may name as Bedrock image sources (`s3://bucket/key`),
    /// read with the gateway's own AWS role (`MESH_BEDROCK_S3_BUCKETS`); empty refuses them all.
    pub bedrock_s3_buckets: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store: StoreConfig::Local { dir: PathBuf::from(".mesh") },
            redis_url: None,
            redis_ca_file: None,
            redis_cluster: false,
            rate_limit_fail_mode: FailMode::Open,
            redis_timeout: Duration::from_millis(50),
            redis_breaker_interval: Duration::from_secs(5),
            default_model: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            providers: BTreeMap::new(),
            cache_ttl: Duration::from_secs(2),
            upstream: UpstreamTimeouts::default(),
            reservation_ttl: Duration::from_secs(900),
            in_lambda: false,
            response_ttl: Duration::from_secs(30 * 86_400),
            settlement_backlog: crate::store::outbox::BACKLOG_LIMIT,
            routing: crate::routing::RoutingPolicy::default(),
            emf_metrics: false,
            bedrock_s3_buckets: Vec::new(),
        }
    }
}

fn millis(vars: &HashMap<String, String>, name: &str, default: Duration) -> Result<Duration, ConfigError> {
    match vars.get(name) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| config_error(name, format!("expected a whole number of milliseconds, got `{text}`"))),
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads configuration from a list of variables (the environment, or a test's own).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = vars.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let defaults = Config::default();
        let store = match vars.get("MESH_STORE").map(String::as_str) {
            None | Some("local") => StoreConfig::Local {
                dir: vars.get("MESH_LOCAL_DIR").map_or_else(|| PathBuf::from(".mesh"), PathBuf::from),
            },
            Some("dynamodb") => StoreConfig::Dynamo {
                table_prefix: vars.get("MESH_TABLE_PREFIX").cloned().unwrap_or_else(|| "mesh-".to_owned()),
            },
            Some(other) => {
                return Err(config_error("MESH_STORE", format!("expected `local` or `dynamodb`, got `{other}`")))
            }
        };
        let redis_url = match vars.get("MESH_REDIS_URL") {
            None => None,
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => Some(Secret::new(url.clone())),
            Some(_) => return Err(config_error("MESH_REDIS_URL", "expected a redis:// or rediss:// URL")),
        };
        let rate_limit_fail_mode = match vars.get("MESH_RATE_LIMIT_FAIL_MODE").map(String::as_str) {
            None | Some("open") => FailMode::Open,
            Some("closed") => FailMode::Closed,
            Some(other) => {
                return Err(config_error(
                    "MESH_RATE_LIMIT_FAIL_MODE",
                    format!("expected `open` or `closed`, got `{other}`"),
                ))
            }
        };
        let listen = match vars.get("MESH_LISTEN") {
            None => defaults.listen,
            Some(text) => {
                text.parse().map_err(|_| config_error("MESH_LISTEN", format!("expected host:port, got `{text}`")))?
            }
        };
        let cache_ttl = millis(&vars, "MESH_CACHE_TTL_MS", defaults.cache_ttl)?;
        if cache_ttl > Duration::from_secs(5) {
            return Err(config_error("MESH_CACHE_TTL_MS", "at most 5000 (revocations must show within 5 s)"));
        }
        let upstream = UpstreamTimeouts {
            connect: millis(&vars, "MESH_UPSTREAM_CONNECT_TIMEOUT_MS", defaults.upstream.connect)?,
            first_byte: millis(&vars, "MESH_UPSTREAM_FIRST_BYTE_TIMEOUT_MS", defaults.upstream.first_byte)?,
            stream_idle: millis(&vars, "MESH_STREAM_IDLE_TIMEOUT_MS", defaults.upstream.stream_idle)?,
            total: millis(&vars, "MESH_UPSTREAM_TOTAL_TIMEOUT_MS", defaults.upstream.total)?,
            drain: millis(&vars, "MESH_STREAM_DRAIN_TIMEOUT_MS", defaults.upstream.drain)?,
        };
        Ok(Config {
            store,
            redis_url,
            redis_ca_file: vars.get("MESH_REDIS_CA_FILE").map(PathBuf::from),
            redis_cluster: match vars.get("MESH_REDIS_CLUSTER").map(String::as_str) {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(config_error(
                        "MESH_REDIS_CLUSTER",
                        format!("expected `true` or `false`, got `{other}`"),
                    ))
                }
            },
            rate_limit_fail_mode,
            redis_timeout: millis(&vars, "MESH_REDIS_TIMEOUT_MS", defaults.redis_timeout)?,
            redis_breaker_interval: millis(&vars, "MESH_REDIS_BREAKER_MS", defaults.redis_breaker_interval)?,
            default_model: vars.get("MESH_DEFAULT_MODEL").cloned(),
            listen,
            providers: providers_from_vars(&vars)?,
            cache_ttl,
            upstream,
            reservation_ttl: millis(&vars, "MESH_RESERVATION_TTL_MS", defaults.reservation_ttl)?,
            in_lambda: vars.contains_key("AWS_LAMBDA_RUNTIME_API"),
            routing: routing_from_vars(&vars, defaults.routing)?,
            emf_metrics: vars.contains_key("AWS_LAMBDA_RUNTIME_API")
                || vars.get("MESH_METRICS").is_some_and(|v| v == "emf"),
            bedrock_s3_buckets: s3_buckets(&vars)?,
            response_ttl: match vars.get("MESH_RESPONSE_TTL_SECS") {
                None => defaults.response_ttl,
                Some(text) => text.trim().parse::<u64>().map(Duration::from_secs).map_err(|_| {
                    config_error("MESH_RESPONSE_TTL_SECS", format!("expected a whole number of seconds, got `{text}`"))
                })?,
            },
            settlement_backlog: match vars.get("MESH_SETTLEMENT_BACKLOG") {
                None => defaults.settlement_backlog,
                Some(text) => text.trim().parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    config_error("MESH_SETTLEMENT_BACKLOG", format!("expected a positive whole number, got `{text}`"))
                })?,
            },
        })
    }
}

/// Whether `name` is a valid S3 bucket name: 3 to 63 lowercase letters, digits, `.` or `-`,
/// starting and ending with a letter or digit.
pub fn valid_s3_bucket(name: &str) -> bool {
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && edge(name.as_bytes().first())
        && edge(name.as_bytes().last())
}

/// `MESH_BEDROCK_S3_BUCKETS`: comma-separated bucket names.
fn s3_buckets(vars: &HashMap<String, String>) -> Result<Vec<String>, ConfigError> {
    const VARIABLE: &str = "MESH_BEDROCK_S3_BUCKETS";
    let Some(list) = vars.get(VARIABLE) else { return Ok(Vec::new()) };
    let mut buckets = Vec::new();
    for name in list.split(',').map(str::trim).filter(|name| !name.is_empty()) {
        if !valid_s3_bucket(name) {
            return Err(config_error(
                VARIABLE,
                format!("`{name}` is not an S3 bucket name (3-63 lowercase letters, digits, `.` or `-`; no `s3://`)"),
            ));
        }
        if !buckets.iter().any(|b| b == name) {
            buckets.push(name.to_owned());
        }
    }
    Ok(buckets)
}

fn number(vars: &HashMap<String, String>, name: &str, default: u64) -> Result<u64, ConfigError> {
    match vars.get(name) {
        None => Ok(default),
        Some(text) => {
            text.trim().parse().map_err(|_| config_error(name, format!("expected a whole number, got `{text}`")))
        }
    }
}

fn routing_from_vars(
    vars: &HashMap<String, String>,
    defaults: crate::routing::RoutingPolicy,
) -> Result<crate::routing::RoutingPolicy, ConfigError> {
    let attempts = number(vars, "MESH_RETRY_ATTEMPTS", u64::from(defaults.attempts_per_row))?;
    if attempts == 0 {
        return Err(config_error("MESH_RETRY_ATTEMPTS", "at least 1"));
    }
    let percent = number(vars, "MESH_BREAKER_FAILURE_PERCENT", u64::from(defaults.failure_percent))?;
    if !(1..=100).contains(&percent) {
        return Err(config_error("MESH_BREAKER_FAILURE_PERCENT", "between 1 and 100"));
    }
    Ok(crate::routing::RoutingPolicy {
        attempts_per_row: u32::try_from(attempts).unwrap_or(u32::MAX),
        backoff_base: millis(vars, "MESH_RETRY_BACKOFF_MS", defaults.backoff_base)?,
        backoff_max: millis(vars, "MESH_RETRY_BACKOFF_MAX_MS", defaults.backoff_max)?,
        window: millis(vars, "MESH_BREAKER_WINDOW_MS", defaults.window)?,
        min_calls: usize::try_from(number(vars, "MESH_BREAKER_MIN_CALLS", defaults.min_calls as u64)?)
            .unwrap_or(usize::MAX),
        failure_percent: u32::try_from(percent).unwrap_or(50),
        open_for: millis(vars, "MESH_BREAKER_OPEN_MS", defaults.open_for)?,
    })
}

/// Collects `MESH_PROVIDER_<NAME>_{API,BASE_URL,API_KEY,API_KEY_SECRET_ARN,TOKEN_DELAY_MS}`.
fn providers_from_vars(vars: &HashMap<String, String>) -> Result<BTreeMap<String, ProviderConfig>, ConfigError> {
    const SUFFIXES: [&str; 5] = ["_API_KEY_SECRET_ARN", "_API_KEY", "_BASE_URL", "_TOKEN_DELAY_MS", "_API"];
    let mut names: Vec<String> = Vec::new();
    for key in vars.keys() {
        let Some(rest) = key.strip_prefix("MESH_PROVIDER_") else { continue };
        if let Some(name) = SUFFIXES.iter().find_map(|s| rest.strip_suffix(s)) {
            if !name.is_empty() && !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
    }
    let mut providers = BTreeMap::new();
    for upper in names {
        let name = upper.to_ascii_lowercase();
        let var = |suffix: &str| vars.get(&format!("MESH_PROVIDER_{upper}{suffix}")).cloned();
        let known = well_known_provider(&name);
        let api = match var("_API") {
            Some(text) => ProviderApi::parse(&text).ok_or_else(|| {
                config_error(
                    &format!("MESH_PROVIDER_{upper}_API"),
                    format!("expected one of responses, chat, anthropic, gemini, bedrock, echo; got `{text}`"),
                )
            })?,
            None => known.map(|(api, _)| api).ok_or_else(|| {
                config_error(&format!("MESH_PROVIDER_{upper}_API"), "required for a provider that is not well known")
            })?,
        };
        let base_url = var("_BASE_URL")
            .or_else(|| known.map(|(_, url)| url.to_owned()))
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned();
        // Bedrock's endpoint follows the function's region.
        let region = vars.get("AWS_REGION").or_else(|| vars.get("AWS_DEFAULT_REGION")).filter(|r| !r.is_empty());
        let base_url = match (base_url.is_empty(), api, region) {
            (true, ProviderApi::Bedrock, Some(region)) => format!("https://bedrock-runtime.{region}.amazonaws.com"),
            (true, ProviderApi::Bedrock, None) => {
                return Err(config_error(
                    &format!("MESH_PROVIDER_{upper}_BASE_URL"),
                    "required for a bedrock provider when AWS_REGION is not set",
                ))
            }
            (true, ProviderApi::Echo, _) => String::new(),
            (true, _, _) => {
                return Err(config_error(&format!("MESH_PROVIDER_{upper}_BASE_URL"), "required for this provider"))
            }
            (false, _, _) => base_url,
        };
        providers.insert(
            name.clone(),
            ProviderConfig {
                name,
                api,
                base_url,
                api_key: var("_API_KEY").map(Secret::new),
                api_key_secret_arn: var("_API_KEY_SECRET_ARN"),
                token_delay: millis(vars, &format!("MESH_PROVIDER_{upper}_TOKEN_DELAY_MS"), Duration::ZERO)?,
            },
        );
    }
    Ok(providers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn reads_providers_and_defaults() {
        let config = Config::from_vars(vars(&[
            ("MESH_PROVIDER_OPENAI_API_KEY", "sk-test"),
            ("MESH_PROVIDER_LOCALLLM_API", "chat"),
            ("MESH_PROVIDER_LOCALLLM_BASE_URL", "http://127.0.0.1:1234/v1/"),
        ]))
        .unwrap();
        let openai = &config.providers["openai"];
        assert_eq!(openai.api, ProviderApi::Responses);
        assert_eq!(openai.base_url, "https://api.openai.com/v1");
        assert_eq!(format!("{:?}", openai.api_key), "Some(*****)");
        let local = &config.providers["localllm"];
        assert_eq!(local.base_url, "http://127.0.0.1:1234/v1");
        assert!(local.api_key.is_none());
        assert_eq!(config.store, StoreConfig::Local { dir: PathBuf::from(".mesh") });
        assert_eq!(config.rate_limit_fail_mode, FailMode::Open);
    }

    #[test]
    fn names_the_variable_at_fault() {
        let err = Config::from_vars(vars(&[("MESH_RATE_LIMIT_FAIL_MODE", "sometimes")])).unwrap_err();
        assert_eq!(err.variable, "MESH_RATE_LIMIT_FAIL_MODE");
        let err = Config::from_vars(vars(&[("MESH_PROVIDER_FOO_API_KEY", "x")])).unwrap_err();
        assert_eq!(err.variable, "MESH_PROVIDER_FOO_API");
        let err = Config::from_vars(vars(&[("MESH_REDIS_URL", "http://x")])).unwrap_err();
        assert_eq!(err.variable, "MESH_REDIS_URL");
        let err = Config::from_vars(vars(&[("MESH_PROVIDER_BEDROCK_API", "bedrock")])).unwrap_err();
        assert_eq!(err.variable, "MESH_PROVIDER_BEDROCK_BASE_URL");
    }

    #[test]
    fn bedrock_s3_buckets_are_a_checked_list() {
        assert!(Config::from_vars(vars(&[])).unwrap().bedrock_s3_buckets.is_empty());
        let config =
            Config::from_vars(vars(&[("MESH_BEDROCK_S3_BUCKETS", " media-in, logs.example ,,media-in")])).unwrap();
        assert_eq!(config.bedrock_s3_buckets, ["media-in", "logs.example"]);
        for bad in ["s3://media", "Media", "ab", "-media", "media/"] {
            let err = Config::from_vars(vars(&[("MESH_BEDROCK_S3_BUCKETS", bad)])).unwrap_err();
            assert_eq!(err.variable, "MESH_BEDROCK_S3_BUCKETS", "{bad}");
        }
    }

    #[test]
    fn bedrock_follows_the_region_without_a_key() {
        let config =
            Config::from_vars(vars(&[("MESH_PROVIDER_BEDROCK_API", "bedrock"), ("AWS_REGION", "eu-central-1")]))
                .unwrap();
        let bedrock = &config.providers["bedrock"];
        assert_eq!(
            (bedrock.api, bedrock.base_url.as_str()),
            (ProviderApi::Bedrock, "https://bedrock-runtime.eu-central-1.amazonaws.com")
        );
        assert!(bedrock.api_key.is_none());
        let config = Config::from_vars(vars(&[("MESH_PROVIDER_BEDROCK_BASE_URL", "http://127.0.0.1:9/")])).unwrap();
        assert_eq!(config.providers["bedrock"].base_url, "http://127.0.0.1:9");
    }

    #[test]
    fn echo_needs_no_url_or_key() {
        let config =
            Config::from_vars(vars(&[("MESH_PROVIDER_ECHO_API", "echo"), ("MESH_PROVIDER_ECHO_TOKEN_DELAY_MS", "15")]))
                .unwrap();
        let echo = &config.providers["echo"];
        assert_eq!((echo.api, echo.token_delay), (ProviderApi::Echo, Duration::from_millis(15)));
        let err =
            Config::from_vars(vars(&[("MESH_PROVIDER_ECHO_API", "echo"), ("MESH_PROVIDER_ECHO_TOKEN_DELAY_MS", "x")]))
                .unwrap_err();
        assert_eq!(err.variable, "MESH_PROVIDER_ECHO_TOKEN_DELAY_MS");
    }
}
