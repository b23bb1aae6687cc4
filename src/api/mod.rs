//! The HTTP API: routes, request parsing, validation and error mapping. It never changes a
//! balance; operations go to Kafka and workers apply them.

mod body;
mod directory;
mod operations;
mod problem;
mod submit;
mod wallets;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer};

pub use directory::WalletDirectory;
pub use problem::Problem;

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
}

/// A bound, not yet running HTTP server; `port` is known before it runs, so tests can listen
/// on port 0.
pub struct Application {
    pub port: u16,
    pub server: Server,
}

impl Application {
    pub fn build(config: &HttpConfig, state: AppState) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(config.listen).map_err(|error| {
            anyhow::anyhow!(
                "cannot listen on {} (key `http.listen`): {error}",
                config.listen
            )
        })?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(state);
        let body_bytes_max = config.body_bytes_max;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(body_bytes_max))
                .app_data(web::PathConfig::default().error_handler(|error, _| {
                    Problem::new(
                        StatusCode::NOT_FOUND,
                        "NOT_FOUND",
                        "Not found",
                        error.to_string(),
                    )
                    .into()
                }))
                .configure(routes)
                .default_service(web::to(not_found))
        })
        .workers(config.workers)
        .listen(listener)?
        .run();
        Ok(Application { port, server })
    }
}

fn routes(config: &mut web::ServiceConfig) {
    config.route("/healthz", web::get().to(healthz)).service(
        web::scope("/api/v1")
            .route("/wallets", web::post().to(wallets::create))
            .route("/wallets/{wallet_id}", web::get().to(wallets::balance))
            .route("/wallet", web::post().to(operations::submit))
            .route(
                "/wallets/{wallet_id}/operations",
                web::post().to(operations::submit_for_wallet),
            )
            .route(
                "/wallets/{wallet_id}/operations",
                web::get().to(operations::history),
            )
            .route(
                "/wallets/{wallet_id}/operations/{operation_id}",
                web::get().to(operations::status),
            ),
    );
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn not_found() -> Result<HttpResponse, Problem> {
    Err(Problem::new(
        StatusCode::NOT_FOUND,
        "ROUTE_NOT_FOUND",
        "Not found",
        "no such route",
    ))
}
