//! Provider credentials the dispatcher applies to a call: SigV4 for Bedrock without an API key,
//! with the AWS SDK's credentials cached until shortly before they expire.

use std::time::Duration;

use super::{bedrock, UpstreamRequest};
use crate::config::ProviderConfig;
use crate::error::GatewayError;

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
