//! Liveness, readiness and metrics: what an orchestrator and Prometheus ask the process.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, Responder};
use paperclip::actix::{api_v2_operation, Apiv2Schema, OperationModifier};
use paperclip::v2::models::{DataType, DefaultOperationRaw, DefaultSchemaRaw};
use paperclip::v2::schema::Apiv2Schema;
use serde::Serialize;

use super::{openapi, reply, AppState};
use crate::config::KafkaConfig;
use crate::ingest::broker;
use crate::ingest::health::WorkerHealth;
use crate::ledger::database;

/// The process is up.
#[derive(Debug, Serialize, Apiv2Schema)]
pub struct Alive {
    #[openapi(example = "ok")]
    status: &'static str,
}

/// Is the process alive
///
/// Answers 200 as long as the process serves HTTP; it checks no dependency.
#[api_v2_operation(tags(service), operation_id = "healthz")]
pub async fn healthz() -> reply::Found<Alive> {
    reply::Found(Alive { status: "ok" })
}

/// What one dependency answered.
#[derive(Debug, Serialize, Apiv2Schema)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// `up` or `down`.
    #[openapi(example = "up")]
    status: &'static str,
    /// Whether the API cannot work without it (Redis only speeds reads up).
    required: bool,
    /// How long the check took, in milliseconds.
    latency_ms: u64,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Readiness of the process and of each dependency.
#[derive(Debug, Serialize, Apiv2Schema)]
pub struct Readiness {
    /// `ready`, `degraded` (only Redis is down: reads fall back to PostgreSQL; or the worker
    /// retries a batch the database refuses for now) or `unavailable`.
    #[openapi(example = "ready")]
    status: &'static str,
    /// By dependency: `postgres`, `redis`, `kafka`, and `worker` where one runs.
    checks: BTreeMap<&'static str, Check>,
}

/// 200 when requests can be served, 503 when a required dependency is down.
pub struct ReadinessReply(Readiness);

impl Responder for ReadinessReply {
    type Body = actix_web::body::BoxBody;

    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        let status = if self.0.status == "unavailable" {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        HttpResponse::build(status)
            .insert_header(("Cache-Control", "no-store"))
            .json(self.0)
    }
}

impl Apiv2Schema for ReadinessReply {}

impl OperationModifier for ReadinessReply {
    fn update_response(op: &mut DefaultOperationRaw) {
        let schema = Some(openapi::reference::<Readiness>());
        openapi::reply(
            op,
            StatusCode::OK,
            "Ready, or degraded when only Redis is down",
            schema.clone(),
            &[],
        );
        openapi::reply(
            op,
            StatusCode::SERVICE_UNAVAILABLE,
            "PostgreSQL or the broker is unreachable",
            schema,
            &[],
        );
    }

    fn update_definitions(map: &mut BTreeMap<String, DefaultSchemaRaw>) {
        reply::define::<Readiness>(map);
    }
}

/// Can the process serve requests
///
/// Checks PostgreSQL, Redis and the broker at once, each within `http.readiness_timeout_ms`.
#[api_v2_operation(tags(service), operation_id = "readyz")]
pub async fn readyz(state: web::Data<AppState>) -> ReadinessReply {
    let deadline = state.readiness_timeout;
    let postgres = postgres_check(&state.pool, deadline);
    let redis = timed(false, async {
        match tokio::time::timeout(deadline, state.cache.ping()).await {
            Ok(result) => result.map_err(|error| error.to_string()),
            Err(_) => Err(format!("no answer within {deadline:?}")),
        }
    });
    let kafka = timed(true, state.producer.reachable(deadline));
    let (postgres, redis, kafka) = tokio::join!(postgres, redis, kafka);
    let mut checks = BTreeMap::from([("postgres", postgres), ("redis", redis), ("kafka", kafka)]);
    if let Some(worker) = &state.worker {
        checks.insert("worker", worker_check(worker, false));
    }
    readiness(checks)
}

/// What a separate `wallet work` process's `/readyz` looks at.
pub struct WorkerProbe {
    pub health: WorkerHealth,
    pub pool: deadpool_postgres::Pool,
    pub kafka: KafkaConfig,
    /// `http.readiness_timeout_ms`, for each check.
    pub deadline: Duration,
}

/// Readiness of a separate `wallet work` process: unavailable without PostgreSQL or the
/// operations topic on the broker, which it cannot apply anything without, or while it
/// refuses a partition's stored position; degraded while a partition retries.
pub async fn worker_readyz(probe: web::Data<WorkerProbe>) -> ReadinessReply {
    let deadline = probe.deadline;
    let postgres = postgres_check(&probe.pool, deadline);
    let kafka = timed(true, async {
        let topic = async {
            let client = broker::connect(&probe.kafka).await?;
            broker::partition_count(&client, &probe.kafka, &probe.kafka.operations_topic).await
        };
        match tokio::time::timeout(deadline, topic).await {
            Ok(result) => result.map(|_| ()).map_err(|error| format!("{error:#}")),
            Err(_) => Err(format!("no answer within {deadline:?}")),
        }
    });
    let (postgres, kafka) = tokio::join!(postgres, kafka);
    readiness(BTreeMap::from([
        ("postgres", postgres),
        ("kafka", kafka),
        ("worker", worker_check(&probe.health, true)),
    ]))
}

/// The worker keeps running while a partition waits out a database error, so it is not
/// required: it makes the process degraded. A partition refused at its stored position waits
/// for an operator, which makes a separate worker (`refusals_required`) unavailable; the API
/// of `wallet run` still serves every partition, so there it stays degraded.
fn worker_check(worker: &WorkerHealth, refusals_required: bool) -> Check {
    let error = worker.degraded();
    Check {
        status: if error.is_some() { "down" } else { "up" },
        required: refusals_required && worker.any_refused(),
        latency_ms: 0,
        error,
    }
}

/// PostgreSQL, required by every process.
async fn postgres_check(pool: &deadpool_postgres::Pool, deadline: Duration) -> Check {
    timed(true, async {
        database::check(pool, deadline)
            .await
            .map_err(|error| format!("{error:#}"))
    })
    .await
}

fn readiness(checks: BTreeMap<&'static str, Check>) -> ReadinessReply {
    let down = |required: bool| {
        checks
            .values()
            .any(|check| check.required == required && check.status == "down")
    };
    let status = if down(true) {
        "unavailable"
    } else if down(false) {
        "degraded"
    } else {
        "ready"
    };
    ReadinessReply(Readiness { status, checks })
}

async fn timed(
    required: bool,
    check: impl std::future::Future<Output = Result<(), String>>,
) -> Check {
    let started = Instant::now();
    let result = check.await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(()) => Check {
            status: "up",
            required,
            latency_ms,
            error: None,
        },
        Err(error) => Check {
            status: "down",
            required,
            latency_ms,
            error: Some(error),
        },
    }
}

/// Metrics in the Prometheus text format.
pub struct MetricsText(String);

impl Responder for MetricsText {
    type Body = actix_web::body::BoxBody;

    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(self.0)
    }
}

impl Apiv2Schema for MetricsText {}

impl OperationModifier for MetricsText {
    fn update_response(op: &mut DefaultOperationRaw) {
        let schema = DefaultSchemaRaw {
            data_type: Some(DataType::String),
            ..Default::default()
        };
        openapi::reply(
            op,
            StatusCode::OK,
            "Prometheus text exposition: HTTP requests and latency by route and status, \
             produce latency, batch size and apply latency, consumer lag by partition, cache \
             lookups by result",
            Some(schema),
            &[],
        );
    }

    fn update_definitions(_: &mut BTreeMap<String, DefaultSchemaRaw>) {}
}

/// Read the process's metrics
///
/// For Prometheus to scrape.
#[api_v2_operation(tags(service), operation_id = "metrics", produces = "text/plain")]
pub async fn metrics() -> MetricsText {
    MetricsText(crate::telemetry::render_metrics())
}
