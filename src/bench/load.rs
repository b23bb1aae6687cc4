//! Creating and funding the bench's wallets, then driving operations at them.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bigdecimal::BigDecimal;
use futures::stream::{self, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::progress::Counters;
use super::wire::{Connection, Endpoint};
use super::{BenchOptions, FUNDING};
use crate::clock;
use crate::ledger::kind::{Presence, RequestField};
use crate::ledger::types::OperationType;

/// The bulk submission route, which `--batch` drives.
const BATCH_PATH: &str = "/api/v1/operations/batch";
/// The single submission route.
const SUBMIT_PATH: &str = "/api/v1/wallet";
/// Longest wait for any one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Load connections being opened at once before the load.
const CONNECTS_AT_ONCE: usize = 64;

/// Holds one load connection remembers for its captures and voids; beyond this, new holds
/// stay open unsettled.
const OPEN_HOLDS_MAX: usize = 10_000;

/// An operation the server accepted with 202.
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: Uuid,
    pub source: usize,
    pub target: Option<usize>,
    pub operation_type: OperationType,
    /// For a CAPTURE or VOID, the amount of its hold (a capture takes all of it; a void
    /// names none and releases it).
    pub amount: BigDecimal,
    /// The hold a CAPTURE or VOID settles.
    pub hold: Option<Uuid>,
}

/// A HOLD this connection had accepted and no capture or void of it planned yet.
#[derive(Debug, Clone)]
pub struct OpenHold {
    id: Uuid,
    source: usize,
    amount: BigDecimal,
}

/// What the load phase observed.
pub struct Load {
    pub sent: Vec<Sent>,
    pub accept_latency_us: Histogram<u64>,
    pub errors: BTreeMap<u16, u64>,
    pub elapsed: Duration,
}

pub fn client(connections: usize, token: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(connections)
        .pool_idle_timeout(Duration::from_secs(2))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")
}

/// A wallet the bench created, and the id of the deposit that funded it.
#[derive(Debug, Clone, Copy)]
pub struct BenchWallet {
    pub id: Uuid,
    pub funding: Uuid,
}

/// Creates `count` wallets and submits a deposit of [`FUNDING`] to each.
pub async fn setup(
    http: &reqwest::Client,
    options: &BenchOptions,
    count: usize,
) -> anyhow::Result<Vec<BenchWallet>> {
    let url = &options.url;
    stream::iter(0..count)
        .map(|_| async move {
            let created: Value = http
                .post(format!("{url}/api/v1/wallets"))
                .json(&json!({}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let id: Uuid = created["walletId"].as_str().context("walletId in the answer")?.parse()?;
            let funding = clock::new_operation_id().0;
            http.post(format!("{url}/api/v1/wallet"))
                .json(&json!({"walletId": id, "operationType": "DEPOSIT", "amount": FUNDING, "operationId": funding}))
                .send()
                .await?
                .error_for_status()?;
            anyhow::Ok(BenchWallet { id, funding })
        })
        .buffer_unordered(options.connections)
        .try_collect()
        .await
}

/// Drives operations for `options.duration_s`, closed-loop or at a constant arrival rate.
/// Open-loop latency is measured from the intended send time, so a slow server cannot hide
/// its queueing (no coordinated omission).
pub async fn run(
    http: &reqwest::Client,
    options: &BenchOptions,
    wallets: Arc<Vec<BenchWallet>>,
    counters: Arc<Counters>,
) -> anyhow::Result<Load> {
    let wires = open_connections(options).await;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(options.duration_s);
    let tasks: Vec<_> = wires
        .into_iter()
        .enumerate()
        .map(|(task, wire)| {
            let (http, options) = (http.clone(), options.clone());
            let (wallets, counters) = (wallets.clone(), counters.clone());
            tokio::spawn(async move {
                drive(
                    &http,
                    &options,
                    &wallets,
                    &counters,
                    (task, wire),
                    (start, deadline),
                )
                .await
            })
        })
        .collect();
    let mut load = Load {
        sent: Vec::new(),
        accept_latency_us: new_histogram()?,
        errors: BTreeMap::new(),
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let part = task.await.context("a load task panicked")??;
        load.sent.extend(part.sent);
        load.accept_latency_us.add(&part.accept_latency_us)?;
        for (status, count) in part.errors {
            *load.errors.entry(status).or_default() += count;
        }
    }
    load.elapsed = start.elapsed();
    Ok(load)
}

/// One connection per load task, each opened before the clock starts: hundreds of connects
/// in the first tenth of a second would otherwise be measured as the server's latency. One
/// that cannot open now opens on its first request, and fails there if it must.
async fn open_connections(options: &BenchOptions) -> Vec<Option<Connection>> {
    let endpoint = Endpoint::of(&options.url, options.token.as_deref(), REQUEST_TIMEOUT);
    stream::iter(0..options.connections)
        .map(|_| {
            let endpoint = endpoint.clone();
            async move {
                let mut connection = Connection::new(endpoint?);
                // An error here is the first request's to report.
                let _ = connection.open().await;
                Some(connection)
            }
        })
        .buffered(CONNECTS_AT_ONCE)
        .collect()
        .await
}

pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("histogram bounds")
}

async fn drive(
    http: &reqwest::Client,
    options: &BenchOptions,
    wallets: &[BenchWallet],
    counters: &Counters,
    (task, mut wire): (usize, Option<Connection>),
    (start, deadline): (Instant, Instant),
) -> anyhow::Result<Load> {
    let mut load = Load {
        sent: Vec::new(),
        accept_latency_us: new_histogram()?,
        errors: BTreeMap::new(),
        elapsed: Duration::ZERO,
    };
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    let mut slot = task as u64;
    let mut holds = Vec::new();
    loop {
        let intended = match options.rate {
            Some(rate) => {
                let operations = slot * options.batch.unwrap_or(1) as u64;
                start + Duration::from_secs_f64(operations as f64 / rate as f64)
            }
            None => Instant::now(),
        };
        if intended >= deadline {
            return Ok(load);
        }
        if options.rate.is_some() {
            tokio::time::sleep_until(intended.into()).await;
        }
        slot += options.connections as u64;
        let operations: Vec<Sent> = (0..options.batch.unwrap_or(1))
            .map(|_| plan(&mut rng, options, wallets.len(), &mut holds))
            .collect();
        let answers = match options.batch {
            None => vec![submit_one(http, wire.as_mut(), options, &operations[0], wallets).await],
            Some(_) => submit_batch(http, options, &operations, wallets).await,
        };
        let latency_us = intended.elapsed().as_micros().max(1) as u64;
        load.accept_latency_us.saturating_record(latency_us);
        for (operation, answer) in operations.into_iter().zip(answers) {
            match answer {
                Ok(()) => {
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    if operation.operation_type == OperationType::Hold
                        && holds.len() < OPEN_HOLDS_MAX
                    {
                        holds.push(OpenHold {
                            id: operation.id,
                            source: operation.source,
                            amount: operation.amount.clone(),
                        });
                    }
                    load.sent.push(operation);
                }
                Err(status) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    *load.errors.entry(status).or_default() += 1;
                }
            }
        }
    }
}

/// The result of one item of a batch, as far as the bench reads it.
#[derive(Deserialize)]
struct ItemResult {
    problem: Option<ItemProblem>,
}

#[derive(Deserialize)]
struct ItemProblem {
    status: u16,
}

#[derive(Deserialize)]
struct BatchResults {
    results: Vec<ItemResult>,
}

/// Submits one operation, over the task's own connection when the URL is plain http, and
/// answers whether it was accepted or the HTTP status it was refused with (0: no answer).
async fn submit_one(
    http: &reqwest::Client,
    wire: Option<&mut Connection>,
    options: &BenchOptions,
    operation: &Sent,
    wallets: &[BenchWallet],
) -> Result<(), u16> {
    let body = body(operation, wallets);
    let status = match wire {
        Some(connection) => match serde_json::to_vec(&body) {
            Ok(bytes) => connection.post_json(SUBMIT_PATH, &bytes).await.ok(),
            Err(_) => None,
        },
        None => http
            .post(format!("{}{SUBMIT_PATH}", options.url))
            .json(&body)
            .send()
            .await
            .ok()
            .map(|response| response.status().as_u16()),
    };
    match status {
        Some(202) => Ok(()),
        Some(status) => Err(status),
        None => Err(0),
    }
}

/// Submits `operations` in one batch request and answers for each whether it was accepted
/// or the HTTP status it was refused with (0: no answer).
async fn submit_batch(
    http: &reqwest::Client,
    options: &BenchOptions,
    operations: &[Sent],
    wallets: &[BenchWallet],
) -> Vec<Result<(), u16>> {
    let items: Vec<Value> = operations
        .iter()
        .map(|operation| body(operation, wallets))
        .collect();
    let answer = http
        .post(format!("{}{BATCH_PATH}", options.url))
        .json(&json!({ "operations": items }))
        .send()
        .await;
    let refused = |status| vec![Err(status); operations.len()];
    let response = match answer {
        Ok(response) if response.status().as_u16() == 200 => response,
        Ok(response) => return refused(response.status().as_u16()),
        Err(_) => return refused(0),
    };
    match response.json::<BatchResults>().await {
        Ok(batch) if batch.results.len() == operations.len() => batch
            .results
            .into_iter()
            .map(|result| result.problem.map_or(Ok(()), |problem| Err(problem.status)))
            .collect(),
        Ok(_) | Err(_) => refused(0),
    }
}

/// The next operation: of a kind the mix picks, on a random wallet, except that a CAPTURE or
/// VOID settles one of `holds` (this connection's accepted HOLDs, so it is ordered after its
/// hold) on the hold's wallet, and is a HOLD when there is none.
pub fn plan(
    rng: &mut impl Rng,
    options: &BenchOptions,
    wallets: usize,
    holds: &mut Vec<OpenHold>,
) -> Sent {
    let mut operation_type = options.mix.pick(rng);
    if wallets < 2 && operation_type.effect().credits_target {
        operation_type = OperationType::Deposit;
    }
    let settles = matches!(operation_type, OperationType::Capture | OperationType::Void);
    let settled = settles
        .then(|| (!holds.is_empty()).then(|| holds.swap_remove(rng.random_range(0..holds.len()))))
        .flatten();
    if settles && settled.is_none() {
        operation_type = OperationType::Hold;
    }
    let source = settled
        .as_ref()
        .map_or_else(|| rng.random_range(0..wallets), |hold| hold.source);
    let target = operation_type.effect().credits_target.then(|| {
        let offset = rng.random_range(1..wallets);
        (source + offset) % wallets
    });
    let cents: i64 = rng.random_range(100..1_000);
    Sent {
        id: clock::new_operation_id().0,
        source,
        target,
        operation_type,
        amount: settled.as_ref().map_or_else(
            || BigDecimal::new(cents.into(), 2),
            |hold| hold.amount.clone(),
        ),
        hold: settled.map(|hold| hold.id),
    }
}

fn body(operation: &Sent, wallets: &[BenchWallet]) -> Value {
    let mut body = json!({
        "operationId": operation.id,
        "walletId": wallets[operation.source].id,
        "operationType": operation.operation_type.as_str(),
    });
    if operation.operation_type.presence(RequestField::Amount) != Presence::Absent {
        body["amount"] = json!(operation.amount.to_plain_string());
    }
    if let Some(target) = operation.target {
        body["toWalletId"] = json!(wallets[target].id);
    }
    if let Some(hold) = operation.hold {
        body["holdId"] = json!(hold);
    }
    body
}
