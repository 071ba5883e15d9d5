//! The `responses` function: under Lambda it serves the Mesh app with response streaming;
//! anywhere else it serves the same app over HTTP on `MESH_LISTEN`.

use lambda_http::tower::ServiceBuilder;
use mesh::app::{build_state, router, SettleMode};
use mesh::config::Config;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mesh::install_crypto_provider();
    lambda_http::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    if config.in_lambda {
        let state = build_state(config, SettleMode::BeforeBodyEnds).await?;
        let app = ServiceBuilder::new().map_request(responses::adapt).service(router(state));
        lambda_http::run_with_streaming_response(app).await
    } else {
        let listen = config.listen;
        let state = build_state(config, SettleMode::Background).await?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        tracing::info!(%listen, "mesh listening");
        mesh::server::serve(state, listener).await?;
        Ok(())
    }
}
