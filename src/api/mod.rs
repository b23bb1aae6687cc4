//! The HTTP API: routes, request parsing, validation and error mapping. It never changes a
//! balance; operations go to Kafka and workers apply them.

mod body;
mod caller;
mod directory;
mod extract;
mod health;
mod openapi;
mod operations;
mod problem;
mod reply;
mod request_log;
mod schema;
mod submit;
mod wallets;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer};
use paperclip::actix::{web, OpenApiExt};

pub use directory::WalletDirectory;
pub use problem::Problem;

use crate::auth::TokenRegistry;
use crate::cache::Cache;
use crate::config::HttpConfig;
use crate::ingest::producer::OperationProducer;

/// What every request handler can reach.
pub struct AppState {
    pub pool: deadpool_postgres::Pool,
    pub directory: WalletDirectory,
    pub cache: Cache,
    pub producer: Arc<OperationProducer>,
    pub history_limit_max: u32,
    pub readiness_timeout: Duration,
    pub tokens: Arc<TokenRegistry>,
    /// Service endpoints answered without a token (`auth.public`).
    pub public: Vec<String>,
}

/// A bound, not yet running HTTP server; `port` is known before it runs, so tests can listen
/// on port 0.
pub struct Application {
    pub port: u16,
    pub server: Server,
}

impl Application {
    /// The server stops on SIGINT or SIGTERM: it stops accepting, lets requests in flight
    /// finish for up to `http.shutdown_timeout_s`, then returns.
    pub fn build(config: &HttpConfig, state: AppState) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(config.listen).map_err(|error| {
            anyhow::anyhow!(
                "cannot listen on {} (key `http.listen`): {error}",
                config.listen
            )
        })?;
        let port = listener.local_addr()?.port();
        let state = actix_web::web::Data::new(state);
        let body_bytes_max = config.body_bytes_max;
        let server = HttpServer::new(move || {
            App::new()
                .wrap_api_with_spec(openapi::frame())
                .app_data(state.clone())
                .app_data(actix_web::web::PayloadConfig::new(body_bytes_max))
                .configure(routes)
                .with_json_spec_v3_at(openapi::SPEC_V3_PATH)
                .with_json_spec_at(openapi::SPEC_V2_PATH)
                .with_swagger_ui_at(openapi::SWAGGER_PATH)
                .build()
                .wrap(from_fn(openapi::swagger_files))
                .wrap(from_fn(caller::service_access))
                .wrap(problem::framework_errors())
                .wrap(from_fn(request_log::request_log))
        })
        .workers(config.workers)
        .shutdown_timeout(config.shutdown_timeout_s)
        .listen(listener)?
        .run();
        Ok(Application { port, server })
    }
}

/// The worker's own small HTTP server: `/metrics` and `/healthz` only. It ignores signals;
/// the worker stops it when it stops.
pub fn worker_endpoints(listen: &str) -> anyhow::Result<Server> {
    let listener = TcpListener::bind(listen).map_err(|error| {
        anyhow::anyhow!("cannot listen on {listen} (key `worker.metrics_listen`): {error}")
    })?;
    let server = HttpServer::new(|| {
        App::new()
            .route("/metrics", actix_web::web::get().to(health::metrics))
            .route("/healthz", actix_web::web::get().to(health::healthz))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

/// Routes are resources so that a known path asked with another method answers 405.
fn routes(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/healthz").route(web::get().to(health::healthz)))
        .service(web::resource("/readyz").route(web::get().to(health::readyz)))
        .service(web::resource("/metrics").route(web::get().to(health::metrics)))
        .service(
            web::scope("/api/v1")
                .service(web::resource("/wallets").route(web::post().to(wallets::create)))
                .service(
                    web::resource("/wallets/{walletId}").route(web::get().to(wallets::balance)),
                )
                .service(web::resource("/wallet").route(web::post().to(operations::submit)))
                .service(
                    web::resource("/wallets/{walletId}/operations")
                        .route(web::post().to(operations::submit_for_wallet))
                        .route(web::get().to(operations::history)),
                )
                .service(
                    web::resource("/wallets/{walletId}/operations/{operationId}")
                        .route(web::get().to(operations::status)),
                ),
        );
}
