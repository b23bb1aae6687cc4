//! The clients: random operations one at a time, each retried with the same key until it is
//! acknowledged, balance reads, key reuse with other content, and probes of the other
//! tenant's wallets. Each logs what it sent and what it saw for the checker.
//!
//! Client `n` sends its key as `operationId` in the body when `n` is even and as an
//! `Idempotency-Key` header when odd; belongs to tenant `(n / 2) % 2`; reuses keys with other
//! content when `(n / 4) % 2 == 1`. Clients `n` and `n ^ 2` are twins in the two tenants:
//! they draw the same operation ids and keys.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use super::checker::Violations;
use super::cluster::{Tenant, TENANTS};
use super::{amount, ATTEMPT_TIMEOUT};
use crate::client::{Api, Response};

/// The namespace the API derives an operation id from `tenant:walletId:Idempotency-Key`
/// with (v5); acknowledged ids are checked against it.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6a0f_5e2c_8d1b_4c7a_9b3e_2f41_d8c6_a705);
/// The namespace twin clients draw their explicit operation ids from.
const CHAOS_IDS: Uuid = Uuid::from_u128(0x1d5c_0a7e_33f4_4b8e_a2c9_67e1_0b5d_f4a3);
/// Clients of a tenant work on this many of its wallets at a time, redrawn every `EPOCH`.
const ACTIVE_WALLETS: usize = 15;
const EPOCH: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Deposit,
    Withdraw,
    Transfer,
    Hold,
    /// Takes all of a hold the client placed to another wallet of its tenant.
    Capture,
    Void,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deposit => "DEPOSIT",
            Kind::Withdraw => "WITHDRAW",
            Kind::Transfer => "TRANSFER",
            Kind::Hold => "HOLD",
            Kind::Capture => "CAPTURE",
            Kind::Void => "VOID",
        }
    }

    /// Whether the request names its amount (a VOID releases what remains).
    pub fn names_amount(self) -> bool {
        self != Kind::Void
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub source: Uuid,
    pub target: Option<Uuid>,
    pub kind: Kind,
    pub cents: i64,
    /// The hold a CAPTURE or VOID settles.
    pub hold: Option<Uuid>,
}

impl Content {
    fn body(&self) -> Value {
        let mut body = json!({"walletId": self.source, "operationType": self.kind.as_str()});
        if self.kind.names_amount() {
            body["amount"] = json!(amount(self.cents));
        }
        if let Some(target) = self.target {
            body["toWalletId"] = json!(target);
        }
        if let Some(hold) = self.hold {
            body["holdId"] = json!(hold);
        }
        body
    }

    /// Other content for the same key: one cent more, or for a settlement another hold (one
    /// that does not exist).
    fn reused(&self) -> Content {
        match self.hold {
            Some(_) => Content {
                hold: Some(Uuid::new_v4()),
                ..self.clone()
            },
            None => Content {
                cents: self.cents + 1,
                ..self.clone()
            },
        }
    }
}

/// A HOLD this client had acknowledged and not yet settled.
#[derive(Debug, Clone, Copy)]
struct OpenHold {
    id: Uuid,
    wallet: Uuid,
    cents: i64,
}

/// One operation id a client used, acknowledged or not.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Index into `TENANTS`.
    pub tenant: usize,
    pub id: Uuid,
    /// The content acknowledged, or when none was, the request's own.
    pub content: Content,
    /// Every content sent with this id: the request's, and another one reusing its key.
    pub tried: Vec<Content>,
    pub acked: bool,
    /// Redis lost its markers while this id was in use and a request reusing its key with
    /// other content was accepted: the README's stated limit, so the checker allows that one
    /// to be a dead letter, or to lose to the request's own record.
    pub excused: bool,
}

/// When the nemesis wiped Redis (a flush, a restart): the idempotency markers are gone.
#[derive(Default)]
pub struct RedisLosses(Mutex<Vec<(Instant, Option<Instant>)>>);

impl RedisLosses {
    pub fn begin(&self) -> usize {
        let mut losses = self.0.lock().expect("losses lock");
        losses.push((Instant::now(), None));
        losses.len() - 1
    }

    pub fn end(&self, loss: usize) {
        self.0.lock().expect("losses lock")[loss].1 = Some(Instant::now());
    }

    /// Whether a loss overlapped `since..now`.
    fn since(&self, since: Instant) -> bool {
        let losses = self.0.lock().expect("losses lock");
        losses
            .iter()
            .any(|(_, ended)| ended.is_none_or(|ended| ended >= since))
    }
}

/// What one client did: its operations in the order it sent them, and what it saw.
#[derive(Default)]
pub struct ClientLog {
    pub sent: Vec<Sent>,
    pub violations: Violations,
    /// Answers that made the client retry, by kind (`409`, `503`, `transport`, ...).
    pub retries: BTreeMap<String, usize>,
    /// Answers to requests reusing a key with other content, by outcome.
    pub reuses: BTreeMap<&'static str, usize>,
    pub reads: usize,
    /// Reads and writes of the other tenant's wallets, all of which must be 404.
    pub probes: usize,
}

/// What the clients share: the tenants, the nemesis's Redis wipes, the working set's seed.
pub struct Workload {
    pub tenants: Vec<Tenant>,
    pub redis_losses: RedisLosses,
    seed: u64,
    started: Instant,
}

impl Workload {
    pub fn new(tenants: Vec<Tenant>) -> Workload {
        Workload {
            tenants,
            redis_losses: RedisLosses::default(),
            seed: rand::random(),
            started: Instant::now(),
        }
    }

    /// The wallets of `tenant` its clients use at this moment: `ACTIVE_WALLETS` of them,
    /// redrawn every `EPOCH`, so most wallets go quiet for a while as real ones do, and a
    /// cache entry a fault left stale stays stale until the final check instead of being
    /// overwritten by the next operation.
    fn active(&self, tenant: usize) -> Vec<Uuid> {
        let epoch = (self.started.elapsed().as_millis() / EPOCH.as_millis()) as u64;
        let mut rng = SmallRng::seed_from_u64(
            self.seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ tenant as u64,
        );
        let mut active = self.tenants[tenant].wallets.clone();
        active.shuffle(&mut rng);
        active.truncate(ACTIVE_WALLETS);
        active
    }
}

/// What an attempt was answered.
#[derive(Debug, PartialEq)]
enum Answer {
    Accepted(String),
    /// Worth retrying with the same content: 408, 409, 5xx, no answer.
    Retry(String),
    /// 422 `IDEMPOTENCY_KEY_REUSED`.
    Reused,
    /// Anything else: a valid request refused.
    Refused(String),
}

impl Answer {
    /// A `408` says the server did not take the request (RFC 9110 15.5.9), which is what a
    /// process frozen past `http.request_timeout_ms` answers for requests waiting in its socket.
    fn of(response: &Response, request: impl FnOnce() -> String) -> Answer {
        match response.status {
            StatusCode::ACCEPTED => Answer::Accepted(
                response.body["operationId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            status
                if status == StatusCode::REQUEST_TIMEOUT
                    || status == StatusCode::CONFLICT
                    || status.is_server_error() =>
            {
                Answer::Retry(format!("{} {}", status.as_u16(), response.code()))
            }
            StatusCode::UNPROCESSABLE_ENTITY if response.code() == "IDEMPOTENCY_KEY_REUSED" => {
                Answer::Reused
            }
            status => Answer::Refused(format!("{}: {status} {}", request(), response.body)),
        }
    }
}

pub struct Client {
    workload: Arc<Workload>,
    tenant: usize,
    keyed: bool,
    reuser: bool,
    /// Shared with the twin in the other tenant.
    pair: usize,
    server: usize,
    sequence: u64,
    rng: SmallRng,
    seen_versions: HashMap<Uuid, i64>,
    log: ClientLog,
    /// Its acknowledged HOLDs, each settled by one later CAPTURE or VOID.
    holds: Vec<OpenHold>,
}

impl Client {
    pub fn new(n: usize, workload: Arc<Workload>) -> Client {
        let tenant = (n / 2) % TENANTS.len();
        Client {
            tenant,
            keyed: n % 2 == 1,
            reuser: (n / 4) % 2 == 1,
            pair: n & !2,
            server: n % workload.tenants[tenant].apis.len(),
            sequence: 0,
            rng: SmallRng::from_rng(&mut rand::rng()),
            seen_versions: HashMap::new(),
            holds: Vec::new(),
            log: ClientLog::default(),
            workload,
        }
    }

    pub async fn run(mut self, stop: Arc<AtomicBool>) -> ClientLog {
        while !stop.load(Ordering::SeqCst) {
            if self.rng.random_ratio(1, 8) {
                self.read_balance().await;
            }
            if self.rng.random_ratio(1, 16) {
                self.probe_other_tenant().await;
            }
            let sent = self.next_operation(&stop).await;
            let acked = sent.acked;
            if acked && sent.content.kind == Kind::Hold {
                self.holds.push(OpenHold {
                    id: sent.id,
                    wallet: sent.content.source,
                    cents: sent.content.cents,
                });
            }
            self.log.sent.push(sent);
            if !acked && stop.load(Ordering::SeqCst) {
                break;
            }
        }
        self.log
    }

    fn api(&self) -> &Api {
        &self.workload.tenants[self.tenant].apis[self.server]
    }

    /// Draws an operation, delivers it, and now and then reuses its key afterwards.
    async fn next_operation(&mut self, stop: &AtomicBool) -> Sent {
        self.sequence += 1;
        let content = self.draw();
        let key = format!("chaos-{}-{}", self.pair, self.sequence);
        let id = if self.keyed {
            // The API's derivation: the caller's tenant, wallet, key.
            let name = TENANTS[self.tenant];
            Uuid::new_v5(
                &IDEMPOTENCY_NAMESPACE,
                format!("{name}:{}:{key}", content.source).as_bytes(),
            )
        } else {
            Uuid::new_v5(&CHAOS_IDS, key.as_bytes())
        };
        let mut sent = Sent {
            tenant: self.tenant,
            id,
            content: content.clone(),
            tried: vec![content],
            acked: false,
            excused: false,
        };
        let first_attempt = Instant::now();
        self.deliver(&mut sent, &key, first_attempt, stop).await;
        if sent.acked && self.reuser && self.rng.random_ratio(1, 4) {
            self.reuse_after_ack(&mut sent, &key, first_attempt).await;
        }
        sent
    }

    fn draw(&mut self) -> Content {
        let wallets = self.workload.active(self.tenant);
        let source = wallets[self.rng.random_range(0..wallets.len())];
        let other_than = |rng: &mut SmallRng, source: Uuid| loop {
            let target = wallets[rng.random_range(0..wallets.len())];
            if target != source {
                break target;
            }
        };
        let roll = self.rng.random_range(0..20);
        if roll >= 17 && !self.holds.is_empty() {
            // A settlement comes after its hold was acknowledged, so it is applied after it.
            let hold = self
                .holds
                .swap_remove(self.rng.random_range(0..self.holds.len()));
            let capture = self.rng.random_bool(0.5);
            return Content {
                source: hold.wallet,
                target: capture.then(|| other_than(&mut self.rng, hold.wallet)),
                kind: if capture { Kind::Capture } else { Kind::Void },
                cents: hold.cents,
                hold: Some(hold.id),
            };
        }
        let (kind, target) = match roll {
            0..=4 => (Kind::Deposit, None),
            5..=8 => (Kind::Withdraw, None),
            9..=13 => (Kind::Hold, None),
            _ => (Kind::Transfer, Some(other_than(&mut self.rng, source))),
        };
        Content {
            source,
            target,
            kind,
            cents: self.rng.random_range(1..=15_000),
            hold: None,
        }
    }

    async fn attempt(&self, content: &Content, id: Uuid, key: &str) -> Answer {
        let api = self.api();
        let mut body = content.body();
        let wallet = content.source.to_string();
        let answer = if self.keyed {
            tokio::time::timeout(
                ATTEMPT_TIMEOUT,
                api.try_submit_with_key(&wallet, key, &body),
            )
            .await
        } else {
            body["operationId"] = json!(id);
            tokio::time::timeout(ATTEMPT_TIMEOUT, api.try_submit(&body)).await
        };
        match answer {
            Ok(Some(response)) => Answer::of(&response, || format!("{key} {body}")),
            Ok(None) => Answer::Retry("transport error".to_owned()),
            Err(_) => Answer::Retry("timeout".to_owned()),
        }
    }

    /// Retries the request until it is acknowledged. A reusing client sends, once, other
    /// content with the key between two attempts; if that one's answer was inconclusive and
    /// the request's own retry is then `422`, the other content may hold the id, and the
    /// client retries that instead, as one that changed its mind would.
    async fn deliver(
        &mut self,
        sent: &mut Sent,
        key: &str,
        first_attempt: Instant,
        stop: &AtomicBool,
    ) {
        let mut current = sent.content.clone();
        let mut other: Option<(Content, bool)> = None;
        while !stop.load(Ordering::SeqCst) {
            match self.attempt(&current, sent.id, key).await {
                Answer::Accepted(id) => {
                    // The other content holds the id: only a Redis wipe let it bind the id
                    // while the request's own record may have been in flight.
                    if current != sent.content {
                        sent.excused = self.workload.redis_losses.since(first_attempt);
                    }
                    self.acknowledged(sent, current, &id, key);
                    return;
                }
                Answer::Retry(label) => self.retried(label),
                Answer::Reused => match &other {
                    Some((content, true)) if current != *content => {
                        current = content.clone();
                        self.reuse_counted("its own retry refused, the other one retried");
                    }
                    _ => {
                        let detail = format!("{key}: the request's own retry was answered 422");
                        self.log.violations.add("rejected", detail);
                        return;
                    }
                },
                Answer::Refused(detail) => {
                    self.log.violations.add("rejected", detail);
                    return;
                }
            }
            if self.reuser && other.is_none() && self.rng.random_ratio(1, 3) {
                let content = sent.content.reused();
                sent.tried.push(content.clone());
                match self.attempt(&content, sent.id, key).await {
                    Answer::Accepted(id) => {
                        self.reuse_counted("accepted before the request");
                        sent.excused = self.workload.redis_losses.since(first_attempt);
                        self.acknowledged(sent, content, &id, key);
                        return;
                    }
                    Answer::Retry(_) => {
                        self.reuse_counted("inconclusive");
                        other = Some((content, true));
                    }
                    Answer::Reused => {
                        self.reuse_counted("refused");
                        other = Some((content, false));
                    }
                    Answer::Refused(detail) => self.log.violations.add("rejected", detail),
                }
            }
            let backoff = self.rng.random_range(50..250);
            tokio::time::sleep(Duration::from_millis(backoff)).await;
        }
    }

    fn acknowledged(&mut self, sent: &mut Sent, content: Content, answered: &str, key: &str) {
        if answered != sent.id.to_string() {
            self.log.violations.add(
                "acknowledged id",
                format!("{key}: expected {}, got {answered}", sent.id),
            );
        }
        sent.acked = true;
        sent.content = content;
    }

    fn reuse_counted(&mut self, outcome: &'static str) {
        *self.log.reuses.entry(outcome).or_default() += 1;
    }

    fn retried(&mut self, label: String) {
        if label.starts_with("transport") || label.starts_with("timeout") {
            // This server may be down: the next attempt goes to another one.
            self.server = (self.server + 1) % self.workload.tenants[self.tenant].apis.len();
        }
        *self.log.retries.entry(label).or_default() += 1;
    }

    /// Sends other content with an acknowledged request's key: it must be `422`, unless Redis
    /// lost the id's marker meanwhile (the README's stated limit).
    async fn reuse_after_ack(&mut self, sent: &mut Sent, key: &str, first_attempt: Instant) {
        let content = sent.content.reused();
        sent.tried.push(content.clone());
        match self.attempt(&content, sent.id, key).await {
            Answer::Accepted(_) if self.workload.redis_losses.since(first_attempt) => {
                self.reuse_counted("accepted after Redis lost its marker");
                sent.excused = true;
            }
            Answer::Accepted(_) => self.log.violations.add(
                "reused key accepted",
                format!("{key}: other content was accepted after {} was", sent.id),
            ),
            Answer::Retry(_) => self.reuse_counted("inconclusive"),
            Answer::Reused => self.reuse_counted("refused"),
            Answer::Refused(detail) => self.log.violations.add("rejected", detail),
        }
    }

    /// Reads a balance of this tenant and checks the version never goes backwards for this
    /// client.
    async fn read_balance(&mut self) {
        let wallets = &self.workload.tenants[self.tenant].wallets;
        let wallet = wallets[self.rng.random_range(0..wallets.len())];
        let wallet_id = wallet.to_string();
        let read = self.api().try_balance(&wallet_id);
        let Ok(Some(response)) = tokio::time::timeout(ATTEMPT_TIMEOUT, read).await else {
            return;
        };
        if response.status != StatusCode::OK {
            return;
        }
        self.log.reads += 1;
        let Some(version) = response.body["version"].as_i64() else {
            let detail = format!("{wallet}: {}", response.body);
            self.log.violations.add("balance read", detail);
            return;
        };
        let seen = self.seen_versions.entry(wallet).or_insert(version);
        if version < *seen {
            self.log.violations.add(
                "read went backwards",
                format!("{wallet}: version {version} after {}", *seen),
            );
        }
        *seen = (*seen).max(version);
    }

    /// Reads and writes a wallet of the other tenant, which must not exist for this one.
    async fn probe_other_tenant(&mut self) {
        let other = &self.workload.tenants[(self.tenant + 1) % TENANTS.len()];
        let wallet = other.wallets[self.rng.random_range(0..other.wallets.len())];
        let api = self.api().clone();
        let wallet_id = wallet.to_string();
        let read = tokio::time::timeout(ATTEMPT_TIMEOUT, api.try_balance(&wallet_id));
        let deposit = json!({
            "walletId": wallet, "operationType": "DEPOSIT", "amount": "1.00",
            "operationId": Uuid::new_v4(),
        });
        let write = tokio::time::timeout(ATTEMPT_TIMEOUT, api.try_submit(&deposit));
        for (what, answer) in [("read", read.await), ("write", write.await)] {
            let Ok(Some(response)) = answer else { continue };
            if response.status.is_server_error() {
                continue;
            }
            self.log.probes += 1;
            if response.status != StatusCode::NOT_FOUND {
                self.log.violations.add(
                    "cross-tenant",
                    format!(
                        "{what} of another tenant's wallet {wallet}: {} {}",
                        response.status, response.body
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: StatusCode, body: Value) -> Answer {
        let response = Response {
            status,
            content_type: String::new(),
            location: None,
            retry_after: None,
            request_id: None,
            challenge: None,
            body,
        };
        Answer::of(&response, || "request".to_owned())
    }

    #[test]
    fn a_request_the_server_did_not_take_is_retried_not_counted_refused() {
        let empty = Value::String(String::new());
        assert_eq!(
            answered(StatusCode::REQUEST_TIMEOUT, empty.clone()),
            Answer::Retry("408 ".to_owned())
        );
        assert_eq!(
            answered(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"code": "BROKER_UNAVAILABLE"})
            ),
            Answer::Retry("503 BROKER_UNAVAILABLE".to_owned())
        );
        assert_eq!(
            answered(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"code": "IDEMPOTENCY_KEY_REUSED"})
            ),
            Answer::Reused
        );
        assert!(matches!(
            answered(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"code": "INVALID_AMOUNT"})
            ),
            Answer::Refused(_)
        ));
        assert_eq!(
            answered(StatusCode::ACCEPTED, json!({"operationId": "x"})),
            Answer::Accepted("x".to_owned())
        );
    }
}
