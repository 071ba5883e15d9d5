//! Provider credentials as data: each provider API's [`Auth`] says how its calls authenticate
//! (a bearer token, a key header of its own, SigV4), and the dispatcher applies it to every
//! request it sends; SigV4 signs with the AWS SDK's credentials, cached until shortly before
//! they expire.

use std::time::Duration;

use super::{bedrock, UpstreamRequest};
use crate::config::{ProviderApi, ProviderConfig};
use crate::error::GatewayError;

/// How a provider API authenticates Mesh's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `authorization: Bearer <key>`: OpenAI's APIs and those that copy them.
    Bearer,
    /// The key alone in a header of the API's own: `x-api-key` (Anthropic), `x-goog-api-key`
    /// (Gemini).
    KeyHeader(&'static str),
    /// A Bedrock API key as a bearer token when one is configured, else SigV4 with the AWS SDK's
    /// default credential chain (the function's role under Lambda).
    BearerOrSigV4,
    /// None: the provider runs in process (`echo`).
    None,
}

impl Auth {
    /// How calls to a provider API authenticate.
    pub fn of(api: ProviderApi) -> Self {
        match api {
            ProviderApi::Responses | ProviderApi::Chat => Auth::Bearer,
            ProviderApi::Anthropic => Auth::KeyHeader("x-api-key"),
            ProviderApi::Gemini => Auth::KeyHeader("x-goog-api-key"),
            ProviderApi::Bedrock => Auth::BearerOrSigV4,
            ProviderApi::Echo => Auth::None,
        }
    }

    /// Whether a provider can be called without a configured key (else it is not available).
    pub fn keyless(self) -> bool {
        matches!(self, Auth::BearerOrSigV4 | Auth::None)
    }

    /// The header that carries `provider`'s key, when its calls carry one.
    pub fn header(self, provider: &ProviderConfig) -> Option<(&'static str, String)> {
        let key = provider.api_key.as_ref()?.expose();
        match self {
            Auth::Bearer | Auth::BearerOrSigV4 => Some(("authorization", format!("Bearer {key}"))),
            Auth::KeyHeader(name) => Some((name, key.to_owned())),
            Auth::None => None,
        }
    }

    /// Puts `provider`'s credential on a finished request: its key's header (in place of one of
    /// the same name the request's builder wrote), or a SigV4 signature over every header.
    pub(super) async fn apply(
        self,
        provider: &ProviderConfig,
        request: &mut UpstreamRequest,
        aws: &AwsSigner,
    ) -> Result<(), GatewayError> {
        match self.header(provider) {
            Some((name, value)) => match request.headers.iter_mut().find(|(written, _)| *written == name) {
                Some(written) => written.1 = value,
                None => request.headers.push((name, value)),
            },
            None if self == Auth::BearerOrSigV4 => aws.sign(provider, request).await?,
            None => {}
        }
        Ok(())
    }
}

/// SigV4 signing of provider calls, with AWS credentials and region loaded on first use.
#[derive(Debug, Default)]
pub(super) struct AwsSigner {
    loaded: tokio::sync::OnceCell<AwsAuth>,
}

/// What signing a Bedrock call needs from the AWS SDK's configuration.
#[derive(Debug)]
struct AwsAuth {
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    region: Option<String>,
    cached: tokio::sync::RwLock<Option<aws_credential_types::Credentials>>,
}

impl AwsSigner {
    /// Signs a Bedrock call with SigV4, with credentials from the AWS SDK's default chain (the
    /// function's role under Lambda), loaded once and refreshed by the SDK as they expire.
    pub(super) async fn sign(
        &self,
        provider: &ProviderConfig,
        request: &mut UpstreamRequest,
    ) -> Result<(), GatewayError> {
        use aws_credential_types::provider::ProvideCredentials;
        let aws = self
            .loaded
            .get_or_init(|| async {
                let config = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
                AwsAuth {
                    credentials: config.credentials_provider(),
                    region: config.region().map(|r| r.as_ref().to_owned()),
                    cached: tokio::sync::RwLock::new(None),
                }
            })
            .await;
        let unavailable = |why: &str| {
            tracing::error!(provider = %provider.name, reason = why, "no AWS credentials for a bedrock call");
            GatewayError::ProviderNotAvailable(provider.name.clone())
        };
        let Some(provider_chain) = &aws.credentials else { return Err(unavailable("no credentials provider")) };
        // The chain itself does not cache (clients of the SDK cache in their identity cache):
        // credentials are kept here until five minutes before they expire, refreshed by one caller.
        let fresh = |c: &aws_credential_types::Credentials| {
            c.expiry().is_none_or(|at| at > std::time::SystemTime::now() + Duration::from_secs(300))
        };
        let cached = aws.cached.read().await.clone().filter(fresh);
        let credentials = match cached {
            Some(credentials) => credentials,
            None => {
                let mut slot = aws.cached.write().await;
                match slot.clone().filter(fresh) {
                    Some(credentials) => credentials,
                    None => {
                        let fetched =
                            tokio::time::timeout(Duration::from_secs(5), provider_chain.provide_credentials())
                                .await
                                .map_err(|_| unavailable("the credentials provider did not answer in 5 s"))?
                                .map_err(|e| unavailable(&e.to_string()))?;
                        *slot = Some(fetched.clone());
                        fetched
                    }
                }
            }
        };
        let region = bedrock::endpoint_region(&provider.base_url)
            .or_else(|| aws.region.clone())
            .ok_or_else(|| unavailable("no AWS region"))?;
        bedrock::sign(request, &credentials, &region, std::time::SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::providers::{anthropic, chat, gemini, Translator};
    use serde_json::json;

    fn provider(api: ProviderApi, key: Option<&str>) -> ProviderConfig {
        ProviderConfig {
            name: "p".into(),
            api,
            base_url: "http://127.0.0.1:9".into(),
            api_key: key.map(Secret::new),
            api_key_secret_arn: None,
            token_delay: Duration::ZERO,
        }
    }

    #[test]
    fn each_api_says_how_it_authenticates() {
        let header = |api| Auth::of(api).header(&provider(api, Some("k")));
        assert_eq!(header(ProviderApi::Responses), Some(("authorization", "Bearer k".to_owned())));
        assert_eq!(header(ProviderApi::Chat), Some(("authorization", "Bearer k".to_owned())));
        assert_eq!(header(ProviderApi::Anthropic), Some(("x-api-key", "k".to_owned())));
        assert_eq!(header(ProviderApi::Gemini), Some(("x-goog-api-key", "k".to_owned())));
        assert_eq!(header(ProviderApi::Bedrock), Some(("authorization", "Bearer k".to_owned())));
        assert_eq!(header(ProviderApi::Echo), None);
        assert_eq!(Auth::of(ProviderApi::Bedrock).header(&provider(ProviderApi::Bedrock, None)), None, "SigV4");
        let keyless: Vec<bool> =
            [ProviderApi::Responses, ProviderApi::Anthropic, ProviderApi::Bedrock, ProviderApi::Echo]
                .into_iter()
                .map(|api| Auth::of(api).keyless())
                .collect();
        assert_eq!(keyless, [false, false, true, true]);
    }

    #[tokio::test]
    async fn the_key_header_is_set_once_on_whatever_the_builder_wrote() {
        let translators: [(ProviderApi, &dyn Translator); 4] = [
            (ProviderApi::Chat, &chat::Chat),
            (ProviderApi::Anthropic, &anthropic::Anthropic),
            (ProviderApi::Gemini, &gemini::Gemini),
            (ProviderApi::Bedrock, &bedrock::Bedrock::default()),
        ];
        let row = serde_json::from_value(json!({"model": "a/m", "provider": "p", "upstream_model": "m"})).unwrap();
        let body = json!({"input": "hi"});
        for (api, translator) in translators {
            let provider = provider(api, Some("k"));
            let mut request = translator.request(&provider, &row, body.as_object().unwrap(), true).unwrap();
            let written = request.headers.clone();
            Auth::of(api).apply(&provider, &mut request, &AwsSigner::default()).await.unwrap();
            assert_eq!(request.headers, written, "{api:?}: the translator wrote the header its API declares");
        }
        let provider = provider(ProviderApi::Responses, Some("k"));
        let mut request = UpstreamRequest::json("http://x/responses".into(), Vec::new(), true);
        Auth::of(ProviderApi::Responses).apply(&provider, &mut request, &AwsSigner::default()).await.unwrap();
        assert_eq!(
            request.headers,
            vec![("accept", "text/event-stream".to_owned()), ("authorization", "Bearer k".to_owned())]
        );
    }
}
