//! Accepting an operation: validation against the wallets, the idempotency protocol, and the
//! hand-off to Kafka.
//!
//! The Redis marker is written as `Accepting` before producing and promoted to `Pending`
//! after the broker's acknowledgement. A produce that fails leaves the marker `Uncertain`:
//! the record may still land, so the id stays bound to that content for the marker's full
//! TTL, and only the same request may be retried. A crash between the two leaves an
//! `Accepting` marker, which binds the id the same way once `redis.accepting_ttl_s` has
//! passed (its record may have landed before the process died). The worker's
//! dedupe by operation id is the backstop whatever Redis says: once a marker has expired or
//! Redis lost it, a repeated id is accepted again but never applied twice, and one reused
//! with other content is kept as a dead letter instead of being answered 422 (the worker
//! then writes the stored operation's marker back, so its retries, and a wait for it, are
//! 422 from then on). The accept path
//! asks PostgreSQL nothing (but for a HOLD retried after its expiry, see
//! `retried_after_expiry`), which is what lets one wallet take thousands of operations a second.

use actix_web::http::StatusCode;
use chrono::{DateTime, Utc};
use futures::future::join_all;
use futures::stream::{self, StreamExt};
use uuid::Uuid;

use super::lookup::{self, Currencies};
use super::{AppState, Problem};
use crate::cache::Marker;
use crate::clock;
use crate::ingest::producer::ProduceError;
use crate::ledger::database;
use crate::ledger::metadata::Metadata;
use crate::ledger::money::Amount;
use crate::ledger::store;
use crate::ledger::types::{
    Operation, OperationId, OperationKind, OperationStatus, ScopedId, ScopedWalletId, WalletId,
};

/// Namespace of operation ids derived from an `Idempotency-Key` header.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6a0f_5e2c_8d1b_4c7a_9b3e_2f41_d8c6_a705);

/// Where the operation id comes from.
pub enum IdSource {
    Explicit(OperationId),
    IdempotencyKey(String),
    /// Drawn once when the request was read, so every use of the submission names one id.
    Generated(OperationId),
}

/// A syntactically valid operation request, not yet checked against the wallets.
pub struct Submission {
    /// The caller's tenant: both wallet ids name wallets of it.
    pub tenant: String,
    pub wallet_id: WalletId,
    pub kind: OperationKind,
    pub amount: Option<Amount>,
    pub id: IdSource,
    /// Not yet checked against the configured bounds: `accept` does that.
    pub metadata: Metadata,
}

impl Submission {
    /// What identifies the request, so a reused id with other content is recognised. It is
    /// of the request as sent, so a retry without `expiresAt` is the same request whenever it
    /// comes; the record carries the expiry the default gave it.
    pub fn fingerprint(&self) -> String {
        self.kind
            .fingerprint(self.wallet_id, self.amount.as_ref(), &self.metadata)
    }

    /// The wallets the submission names, in its tenant: what validating it looks up.
    fn wallets(&self) -> impl Iterator<Item = ScopedWalletId> + '_ {
        std::iter::once(self.wallet_id)
            .chain(self.kind.target())
            .map(|id| self.in_tenant(id))
    }

    fn in_tenant(&self, id: WalletId) -> ScopedWalletId {
        ScopedWalletId {
            tenant: self.tenant.clone(),
            id,
        }
    }
}

/// The bounds of a HOLD's `expiresAt`: `http.hold_expiry_default_s` after acceptance when
/// left out, at most `http.hold_expiry_max_s` ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldExpiry {
    pub default: chrono::Duration,
    pub max: chrono::Duration,
}

/// The answer to an accepted (or re-submitted) operation.
#[derive(Clone)]
pub struct Accepted {
    pub id: OperationId,
    pub wallet_id: WalletId,
    pub status: OperationStatus,
    /// The fingerprint of the request answered: a decision waited for is this request's only
    /// when it is of the same fingerprint.
    pub fingerprint: String,
}

pub async fn accept(state: &AppState, submission: Submission) -> Result<Accepted, Problem> {
    let currencies = Currencies::of(state, submission.wallets()).await;
    let Prepared {
        operation,
        accepting,
        chosen_id,
    } = match prepare(state, submission, &currencies).await {
        Ok(prepared) => prepared,
        Err(answer) => return answer,
    };
    let claimed = match state.cache.claim(&operation.scoped_id(), &accepting).await {
        Ok(claimed) => claimed,
        Err(error) => unclaimed(Problem::from(error), chosen_id)?,
    };
    if !claimed {
        return replay(state, operation).await;
    }
    produce(state, &operation, &accepting).await
}

/// Accepts each submission as `accept` does, independently and with the same marker protocol
/// for each (claim `Accepting`, produce, `Pending` or `Uncertain`), but with one lookup per
/// distinct wallet, one Redis round trip for all claims, one produce request per partition
/// for all claimed operations and one round trip for all their markers' updates. Answers in the order given. A submission
/// must not repeat the id of another in the same call (its claim would find its twin's):
/// the caller answers repeats from the first use.
pub async fn accept_all(
    state: &AppState,
    submissions: Vec<Submission>,
) -> Vec<Result<Accepted, Problem>> {
    let currencies = Currencies::of(state, submissions.iter().flat_map(Submission::wallets)).await;
    // Preparing asks Redis or PostgreSQL only for a HOLD retried after its expiry.
    let prepared: Vec<_> = stream::iter(submissions)
        .map(|submission| prepare(state, submission, &currencies))
        .buffered(lookup::READS_PER_REQUEST)
        .collect()
        .await;
    let mut answers: Vec<Option<Result<Accepted, Problem>>> =
        (0..prepared.len()).map(|_| None).collect();
    let mut ready = Vec::new();
    for (index, prepared) in prepared.into_iter().enumerate() {
        match prepared {
            Ok(prepared) => ready.push((index, prepared)),
            Err(answer) => answers[index] = Some(answer),
        }
    }
    let claims: Vec<(ScopedId, &Marker)> = ready
        .iter()
        .map(|(_, prepared)| (prepared.operation.scoped_id(), &prepared.accepting))
        .collect();
    let claimed: Vec<Result<bool, Problem>> = match state.cache.claim_all(&claims).await {
        Ok(claimed) => claimed.into_iter().map(Ok).collect(),
        Err(error) => {
            let problem = Problem::from(error);
            ready
                .iter()
                .map(|(_, prepared)| unclaimed(problem.clone(), prepared.chosen_id))
                .collect()
        }
    };
    let (mut owned_indices, mut owned, mut taken) = (Vec::new(), Vec::new(), Vec::new());
    for ((index, prepared), claimed) in ready.into_iter().zip(claimed) {
        match claimed {
            Ok(true) => {
                owned_indices.push(index);
                owned.push((prepared.operation, prepared.accepting));
            }
            Ok(false) => taken.push((index, prepared.operation)),
            Err(problem) => answers[index] = Some(Err(problem)),
        }
    }
    let replayed = join_all(
        taken
            .into_iter()
            .map(|(index, operation)| async move { (index, replay(state, operation).await) }),
    );
    let (produced, replayed) = futures::join!(produce_claimed(state, owned), replayed);
    for (index, answer) in owned_indices.into_iter().zip(produced) {
        answers[index] = Some(answer);
    }
    for (index, answer) in replayed {
        answers[index] = Some(answer);
    }
    answers
        .into_iter()
        .map(|answer| answer.unwrap_or_else(|| Err(Problem::internal())))
        .collect()
}

/// Produces operations whose `Accepting` markers this call holds, as `produce` does one.
async fn produce_claimed(
    state: &AppState,
    owned: Vec<(Operation, Marker)>,
) -> Vec<Result<Accepted, Problem>> {
    let (operations, markers): (Vec<Operation>, Vec<Marker>) = owned.into_iter().unzip();
    let produced = state.producer.produce_all(&operations).await;
    let replacements: Vec<(ScopedId, &Marker, Marker)> = operations
        .iter()
        .zip(&markers)
        .zip(&produced)
        .map(|((operation, own), produced)| {
            (operation.scoped_id(), own, own.produced(produced.is_ok()))
        })
        .collect();
    if let Err(error) = state.cache.replace_own_all(&replacements).await {
        tracing::warn!(%error, "cannot update the idempotency markers");
    }
    operations
        .iter()
        .zip(produced)
        .map(|(operation, produced)| answer(operation, produced))
        .collect()
}

/// A valid submission, ready to claim its id.
struct Prepared {
    operation: Operation,
    /// The marker that claims the operation's id.
    accepting: Marker,
    /// Whether the client chose the id (explicitly or by `Idempotency-Key`).
    chosen_id: bool,
}

/// A valid submission ready to claim its id, or the answer it gets without one (`Err`).
async fn prepare(
    state: &AppState,
    submission: Submission,
    currencies: &Currencies,
) -> Result<Prepared, Result<Accepted, Problem>> {
    validate(state, &submission, currencies).map_err(Err)?;
    let chosen_id = !matches!(submission.id, IdSource::Generated(_));
    let accepted_at = clock::now();
    let mut passed_expiry = None;
    if let OperationKind::Hold {
        expires_at: Some(expires_at),
    } = submission.kind
    {
        if let Err(problem) = check_expiry(expires_at, accepted_at, state.hold_expiry) {
            // Only an expiry that has passed depends on when the request comes: the retry of
            // a request accepted while its expiry lay ahead must get the same operation.
            if expires_at > accepted_at || !chosen_id {
                return Err(Err(problem));
            }
            passed_expiry = Some(problem);
        }
    }
    let fingerprint = submission.fingerprint();
    let operation = Operation {
        id: operation_id(&submission),
        wallet_id: submission.wallet_id,
        kind: submission
            .kind
            .expiring_by_default(accepted_at + state.hold_expiry.default),
        fingerprint,
        amount: submission.amount,
        metadata: submission.metadata,
        accepted_at,
        tenant: submission.tenant,
    };
    if let Some(problem) = passed_expiry {
        return Err(retried_after_expiry(state, operation, problem).await);
    }
    let accepting = Marker::accepting(&operation);
    Ok(Prepared {
        operation,
        accepting,
        chosen_id,
    })
}

/// What a claim Redis could not answer (`problem`) leaves. An id the client chose may
/// already be bound to other content, which only the marker knows: accepting it blind could
/// answer 202 for a record the worker refuses, so it is refused, and as nothing was produced
/// the client's retry is safe. A fresh id has no earlier request to conflict with; the
/// worker applies it once, so it counts as claimed.
fn unclaimed(problem: Problem, chosen_id: bool) -> Result<bool, Problem> {
    if chosen_id {
        return Err(problem);
    }
    tracing::warn!("idempotency marker unavailable; accepting without it");
    Ok(true)
}

/// Produces `operation`, whose marker `own` this request holds. The marker becomes `Pending`
/// once the broker acknowledged; after any failure it stays bound to this content
/// (`Uncertain`), because a produce that timed out or lost its connection may still land,
/// and a reused id must never be answered 202 for content the worker will refuse.
async fn produce(
    state: &AppState,
    operation: &Operation,
    own: &Marker,
) -> Result<Accepted, Problem> {
    let id = operation.scoped_id();
    let produced = state.producer.produce(operation).await;
    let next = own.produced(produced.is_ok());
    if next != *own {
        if let Err(error) = state.cache.replace_own(&id, own, &next).await {
            tracing::warn!(%error, state = ?next.state, "cannot update the idempotency marker");
        }
    }
    answer(operation, produced)
}

/// The answer for `operation` once the broker answered.
fn answer(operation: &Operation, produced: Result<i64, ProduceError>) -> Result<Accepted, Problem> {
    match produced {
        Ok(_) => Ok(Accepted {
            id: operation.id,
            wallet_id: operation.wallet_id,
            status: OperationStatus::Pending,
            fingerprint: operation.fingerprint.clone(),
        }),
        Err(error) => Err(produce_problem(&error)),
    }
}

/// The operation id a submission names, in its tenant's namespace: a key derives the same id
/// for the same tenant and wallet, and another id for another tenant.
pub fn operation_id(submission: &Submission) -> OperationId {
    match &submission.id {
        IdSource::Explicit(id) => *id,
        IdSource::IdempotencyKey(key) => {
            // Tenants never contain ':' and wallet ids have a fixed length, so no two
            // (tenant, wallet, key) triples share a name.
            let name = format!("{}:{}:{key}", submission.tenant, submission.wallet_id);
            OperationId(Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes()))
        }
        IdSource::Generated(id) => *id,
    }
}

/// Checks the submission against its wallets, as `currencies` found them.
fn validate(
    state: &AppState,
    submission: &Submission,
    currencies: &Currencies,
) -> Result<(), Problem> {
    if let IdSource::Explicit(id) = submission.id {
        if id.is_reserved() {
            return Err(Problem::invalid(
                "RESERVED_OPERATION_ID",
                "operationId",
                "operation ids of UUID version 8 are reserved for the server's own operations",
            ));
        }
    }
    submission
        .metadata
        .check(&state.metadata_limits)
        .map_err(|error| Problem::invalid("INVALID_METADATA", "metadata", error.to_string()))?;
    let source = currencies
        .get(&submission.in_tenant(submission.wallet_id))?
        .ok_or_else(|| Problem::wallet_not_found(submission.wallet_id))?;
    if let Some(amount) = &submission.amount {
        amount
            .check_currency(source)
            .map_err(|error| Problem::invalid("INVALID_AMOUNT", "amount", error.to_string()))?;
    }
    if let Some(target) = submission.kind.target() {
        if target == submission.wallet_id {
            return Err(Problem::invalid(
                "SAME_WALLET",
                "toWalletId",
                "money moves between two different wallets",
            ));
        }
        let target_currency = currencies
            .get(&submission.in_tenant(target))?
            .ok_or_else(|| {
                Problem::invalid(
                    "TARGET_WALLET_NOT_FOUND",
                    "toWalletId",
                    format!("wallet {target} does not exist"),
                )
            })?;
        if target_currency != source {
            return Err(Problem::invalid(
                "CURRENCY_MISMATCH",
                "toWalletId",
                format!("cannot move {} to a {} wallet", source, target_currency),
            ));
        }
    }
    Ok(())
}

/// A HOLD's own `expiresAt` lies after `now` and at most the configured maximum ahead.
fn check_expiry(
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
    limits: HoldExpiry,
) -> Result<(), Problem> {
    if expires_at <= now {
        return Err(Problem::invalid(
            "INVALID_EXPIRY",
            "expiresAt",
            "expiresAt must be in the future",
        ));
    }
    if expires_at > now + limits.max {
        return Err(Problem::invalid(
            "INVALID_EXPIRY",
            "expiresAt",
            format!(
                "expiresAt may be at most {} seconds ahead (`http.hold_expiry_max_s`)",
                limits.max.num_seconds()
            ),
        ));
    }
    Ok(())
}

/// A HOLD whose `expiresAt` has passed (`passed`, its 422), under an id the client chose: the
/// retry of a request accepted while its expiry lay ahead is answered as that one was, from
/// its marker or, once the marker is gone, from PostgreSQL (the one read of the accept path,
/// and only for such a retry). Anything else gets the 422; while Redis cannot be asked and
/// PostgreSQL does not know the id, a 503, as the operation may still be pending.
async fn retried_after_expiry(
    state: &AppState,
    operation: Operation,
    passed: Problem,
) -> Result<Accepted, Problem> {
    let id = operation.scoped_id();
    let unreadable = match state.cache.marker(&id).await {
        Ok(Some(marker)) => {
            return match marker.is_of(operation.wallet_id, &operation.fingerprint) {
                true => replay(state, operation).await,
                false => Err(passed),
            };
        }
        Ok(None) => None,
        Err(error) => Some(Problem::from(error)),
    };
    let client = database::client(&state.pool).await?;
    match store::operation(&client, &id).await? {
        Some(record)
            if record.fingerprint == operation.fingerprint
                && record.wallet_id == operation.wallet_id =>
        {
            Ok(Accepted {
                id: operation.id,
                wallet_id: operation.wallet_id,
                status: record.status,
                fingerprint: operation.fingerprint,
            })
        }
        Some(_) => Err(passed),
        None => Err(unreadable.unwrap_or(passed)),
    }
}

/// The marker exists: the same request gets the same operation, another request a 422, and a
/// request racing the first one's produce a 409. The same request after a failed produce, or
/// after the first one's process died while producing, is produced again with the first
/// one's content, which the worker applies at most once.
async fn replay(state: &AppState, operation: Operation) -> Result<Accepted, Problem> {
    let Some(marker) = state.cache.marker(&operation.scoped_id()).await? else {
        return Err(in_flight());
    };
    if !marker.is_of(operation.wallet_id, &operation.fingerprint) {
        return Err(key_reused());
    }
    if let Some(status) = marker.state.status() {
        return Ok(Accepted {
            id: operation.id,
            wallet_id: operation.wallet_id,
            status,
            fingerprint: operation.fingerprint,
        });
    }
    if state.cache.still_accepting(&marker, clock::now()) {
        return Err(in_flight());
    }
    let first = Operation {
        accepted_at: marker.accepted_at,
        ..operation
    };
    produce(state, &first, &marker).await
}

pub fn key_reused() -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
        "Idempotency key reused",
        "this operation id was already used for a different request",
    )
}

fn in_flight() -> Problem {
    let mut problem = Problem::new(
        StatusCode::CONFLICT,
        "REQUEST_IN_PROGRESS",
        "Request in progress",
        "a request with this operation id is still being accepted; retry shortly",
    );
    problem.retry_after_s = Some(1);
    problem
}

fn produce_problem(error: &ProduceError) -> Problem {
    tracing::warn!(%error, "produce failed");
    // A timeout or a dropped connection can hide a write that did land, so the client is told
    // neither "accepted" nor "rejected", only how to find out safely.
    Problem::unavailable(
        "BROKER_UNAVAILABLE",
        format!(
            "the broker did not confirm the operation ({error}); it may or may not be applied: \
             retry with the same operationId or Idempotency-Key, which never applies it twice"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(tenant: &str, id: IdSource) -> Submission {
        Submission {
            tenant: tenant.to_owned(),
            wallet_id: WalletId(Uuid::from_u128(7)),
            kind: OperationKind::Deposit,
            amount: Some(Amount::parse("1.00").unwrap()),
            id,
            metadata: Metadata::default(),
        }
    }

    /// Proves an Idempotency-Key derives one id per tenant: the same tenant retrying gets the
    /// same operation, another tenant using the same key and wallet id never collides.
    #[test]
    fn derived_ids_are_scoped_by_tenant() {
        let key = || IdSource::IdempotencyKey("order-42".to_owned());
        let acme = operation_id(&submission("acme", key()));
        assert_eq!(acme, operation_id(&submission("acme", key())));
        assert_ne!(acme, operation_id(&submission("globex", key())));
        let explicit = OperationId(Uuid::from_u128(9));
        assert_eq!(
            operation_id(&submission("globex", IdSource::Explicit(explicit))),
            explicit,
            "an explicit id is kept; its tenant scopes it where it is stored"
        );
    }

    /// Proves a HOLD's own expiry must lie after now and within the maximum, both ends
    /// exact.
    #[test]
    fn expiries_lie_between_now_and_the_maximum() {
        let now = clock::now();
        let limits = HoldExpiry {
            default: chrono::Duration::seconds(60),
            max: chrono::Duration::seconds(3_600),
        };
        let second = chrono::Duration::seconds(1);
        let code =
            |at| check_expiry(at, now, limits).map_or_else(|problem| problem.code, |()| "OK");
        assert_eq!(code(now), "INVALID_EXPIRY");
        assert_eq!(code(now + second), "OK");
        assert_eq!(code(now + limits.max), "OK");
        assert_eq!(code(now + limits.max + second), "INVALID_EXPIRY");
    }
}
