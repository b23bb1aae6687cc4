//! The HTTP API: routes, request parsing, validation and error mapping. It never changes a
//! balance; operations go to Kafka and workers apply them.

mod batch;
mod body;
mod caller;
mod directory;
mod edge;
mod extract;
mod health;
mod history;
mod history_query;
mod holds;
mod lookup;
mod openapi;
mod operations;
mod problem;
mod reply;
mod request_log;
mod schema;
mod submit;
mod swagger;
mod wait;
mod wallets;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_http::HttpService;
use actix_server::Server;
use actix_service::{map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer};
use paperclip::actix::{web, OpenApiExt};

pub use directory::WalletDirectory;
pub use edge::loggable;
pub use health::WorkerProbe;
pub use problem::Problem;
pub use submit::HoldExpiry;

use crate::auth::TokenRegistry;
use crate::cache::{Cache, Decisions};
use crate::config::HttpConfig;
use crate::ingest::health::WorkerHealth;
use crate::ingest::producer::OperationProducer;
use crate::ledger::metadata::MetadataLimits;

/// What every request handler can reach. A clone shares every part with the original.
#[derive(Clone)]
pub struct AppState {
    pub pool: deadpool_postgres::Pool,
    pub directory: Arc<WalletDirectory>,
    pub cache: Cache,
    /// Wakes the requests waiting for a decision (`Prefer: wait`).
    pub decisions: Decisions,
    /// The longest wait a request may ask for (`http.prefer_wait_max_s`).
    pub prefer_wait_max_s: u64,
    /// The most operations one batch may hold (`http.batch_operations_max`).
    pub batch_operations_max: usize,
    pub producer: Arc<OperationProducer>,
    pub history_limit_max: u32,
    /// The most journal entries one history page examines (`http.history_scan_max`).
    pub history_scan_max: u32,
    /// The bounds of an operation's metadata (`http.metadata_*`).
    pub metadata_limits: MetadataLimits,
    pub hold_expiry: HoldExpiry,
    pub readiness_timeout: Duration,
    /// The workers' lease lapse, which bounds how long a request may hold wallet locks.
    pub lease_lapse: Duration,
    pub tokens: Arc<TokenRegistry>,
    /// Service endpoints answered without a token (`auth.public`).
    pub public: Vec<String>,
    /// The worker of this process (`wallet run`), whose retrying partitions readiness reports.
    pub worker: Option<WorkerHealth>,
}

/// A bound, not yet running HTTP server; `port` is known before it runs, so tests can listen
/// on port 0.
pub struct Application {
    pub port: u16,
    pub server: Server,
    /// The waits of `Prefer: wait` requests, ended when the server shuts down.
    pub decisions: Decisions,
}

impl Application {
    /// The server ignores signals: its caller stops it through its handle (see
    /// `startup`). Stopped gracefully, it stops accepting, answers each keep-alive
    /// connection's request in flight and then closes it, lets requests finish for up to
    /// `http.shutdown_timeout_s`, then returns. It is assembled from
    /// actix's parts rather than `HttpServer` because only they let a request that expects
    /// `100 Continue` be checked before its client sends the body.
    pub fn build(config: &HttpConfig, state: AppState) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(config.listen).map_err(|error| {
            anyhow::anyhow!(
                "cannot listen on {} (key `http.listen`): {error}",
                config.listen
            )
        })?;
        let address = listener.local_addr()?;
        let gate = edge::ContinueGate {
            tokens: state.tokens.clone(),
            public: Arc::from(state.public.clone()),
            body_bytes_max: config.body_bytes_max,
            batch_body_bytes_max: config.batch_body_bytes_max,
        };
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        let body_bytes_max = config.body_bytes_max;
        let batch_body_bytes_max = config.batch_body_bytes_max;
        let decisions = state.decisions.clone();
        let builder = Server::build();
        let draining = builder.graceful_shutdown_signal();
        let server = builder
            .disable_signals()
            .workers(config.workers)
            .max_concurrent_connections(config.connections_max)
            .shutdown_timeout(config.shutdown_timeout_s)
            .listen("wallet-api", listener, move || {
                // Each HTTP worker thread gets its own Redis connection, made by its first
                // request, so a request's Redis answers wake its own thread rather than another.
                let state = actix_web::web::Data::new(AppState {
                    cache: state.cache.on_own_connection(),
                    ..state.clone()
                });
                let app = App::new()
                    .wrap_api_with_spec(openapi::frame())
                    .app_data(state.clone())
                    .app_data(actix_web::web::PayloadConfig::new(body_bytes_max))
                    .app_data(edge::BodyTimeout(request_timeout))
                    .configure(|config| routes(config, batch_body_bytes_max))
                    .with_raw_json_spec_v3(|app, converted| {
                        app.app_data(actix_web::web::Data::new(openapi::V3Document::new(
                            converted,
                        )))
                    })
                    .with_json_spec_at(openapi::SPEC_V2_PATH)
                    .build()
                    .route(
                        openapi::SPEC_V3_PATH,
                        actix_web::web::get().to(openapi::serve_v3),
                    )
                    .configure(swagger::routes)
                    .wrap(from_fn(caller::service_access))
                    .wrap(problem::framework_errors())
                    .wrap(from_fn(edge::head_as_get))
                    .wrap(edge::security_headers())
                    .wrap(from_fn(edge::body_deadline))
                    .wrap(from_fn(request_log::request_log));
                let app = app
                    .into_factory()
                    .map_err(|error: actix_web::Error| error.error_response());
                // A client that closes its side is gone: its request, a `Prefer: wait`
                // above all, stops instead of running to its end for nobody.
                let draining = draining.clone();
                HttpService::build()
                    .graceful_shutdown_signal(move || {
                        let draining = draining.clone();
                        async move { draining.notified().await }
                    })
                    .h1_allow_half_closed(false)
                    .client_request_timeout(request_timeout)
                    .local_addr(address)
                    .expect(gate.clone().service())
                    .finish(map_config(app, |_| AppConfig::default()))
                    .tcp()
            })?
            .run();
        Ok(Application {
            port: address.port(),
            server,
            decisions,
        })
    }
}

/// The worker's own small HTTP server: `/metrics`, `/healthz` and `/readyz` (see
/// [`health::worker_readyz`]). It ignores signals; the worker stops it when it stops.
pub fn worker_endpoints(listen: &str, probe: health::WorkerProbe) -> anyhow::Result<Server> {
    let listener = TcpListener::bind(listen).map_err(|error| {
        anyhow::anyhow!("cannot listen on {listen} (key `worker.metrics_listen`): {error}")
    })?;
    let worker = actix_web::web::Data::new(probe);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(worker.clone())
            .route("/metrics", actix_web::web::get().to(health::metrics))
            .route("/healthz", actix_web::web::get().to(health::healthz))
            .route("/readyz", actix_web::web::get().to(health::worker_readyz))
            .wrap(edge::security_headers())
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

/// What each route answers, for the `Allow` header of a 405; HEAD goes wherever GET does.
/// It must agree with `routes` and `swagger::routes`; a test checks the documented routes
/// against the OpenAPI document.
const ROUTE_METHODS: [(&str, &str); 18] = [
    ("/healthz", "GET, HEAD"),
    ("/readyz", "GET, HEAD"),
    ("/metrics", "GET, HEAD"),
    ("/api/v1/wallets", "POST"),
    ("/api/v1/wallets/{walletId}", "GET, HEAD"),
    ("/api/v1/wallet", "POST"),
    ("/api/v1/wallets/{walletId}/operations", "GET, HEAD, POST"),
    (
        "/api/v1/wallets/{walletId}/operations/{operationId}",
        "GET, HEAD",
    ),
    ("/api/v1/wallets/{walletId}/holds", "GET, HEAD"),
    ("/api/v1/wallets/{walletId}/holds/{holdId}", "GET, HEAD"),
    (batch::BATCH_PATH, "POST"),
    ("/openapi/v2.json", "GET, HEAD"),
    ("/openapi/v3.json", "GET, HEAD"),
    ("/swagger", "GET, HEAD"),
    ("/swagger/", "GET, HEAD"),
    ("/swagger/index.html", "GET, HEAD"),
    ("/swagger/swagger-initializer.js", "GET, HEAD"),
    ("/swagger/{file}", "GET, HEAD"),
];

/// The `Allow` value of the route whose template is `pattern`.
fn allowed_methods(pattern: &str) -> Option<&'static str> {
    ROUTE_METHODS
        .iter()
        .find(|(route, _)| *route == pattern)
        .map(|(_, methods)| *methods)
}

/// Routes are resources so that a known path asked with another method answers 405. A batch
/// has its own body bound (`http.batch_body_bytes_max`).
fn routes(config: &mut web::ServiceConfig, batch_body_bytes_max: usize) {
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
                        .route(web::get().to(history::history)),
                )
                .service(
                    web::resource("/wallets/{walletId}/operations/{operationId}")
                        .route(web::get().to(operations::status)),
                )
                .service(
                    web::resource("/wallets/{walletId}/holds").route(web::get().to(holds::holds)),
                )
                .service(
                    web::resource("/wallets/{walletId}/holds/{holdId}")
                        .route(web::get().to(holds::hold)),
                )
                .service(
                    web::resource("/operations/batch")
                        .app_data(actix_web::web::PayloadConfig::new(batch_body_bytes_max))
                        .route(web::post().to(batch::submit)),
                ),
        );
}
