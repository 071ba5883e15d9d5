//! The `responses` function: under Lambda it serves the Mesh app with response streaming;
//! anywhere else it serves the same app over HTTP on `MESH_LISTEN`.

use lambda_http::tower::ServiceBuilder;
use mesh::app::{build_state, router, SettleMode};
use mesh::config::Config;

/// mimalloc: the gateway allocates and frees many short-lived buffers per request; glibc's
/// allocator spent a fifth of the CPU on them under load and kept freed memory resident.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mesh::install_crypto_provider();
    lambda_http::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    if config.in_lambda {
        let state = build_state(config, SettleMode::BeforeBodyEnds).await?;
        let app = ServiceBuilder::new().map_request(responses::adapt).service(router(state));
        // The runtime loop only ends on a failure to talk to the Runtime API (handler errors are
        // reported to it, not returned). A dropped connection there is re-established rather than
        // turned into a new cold start; repeated failures still end the process.
        let mut failures = responses::RestartBudget::new(3, std::time::Duration::from_secs(60));
        loop {
            match lambda_http::run_with_streaming_response(app.clone()).await {
                Ok(()) => return Ok(()),
                Err(error) if failures.allow(std::time::Instant::now()) => {
                    tracing::error!(%error, "lost the Lambda Runtime API; polling it again");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(error) => return Err(error),
            }
        }
    } else {
        let listen = config.listen;
        let state = build_state(config, SettleMode::Background).await?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        tracing::info!(%listen, "mesh listening");
        mesh::server::serve(state, listener).await?;
        Ok(())
    }
}
