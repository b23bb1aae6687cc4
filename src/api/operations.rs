//! Submitting operations and reading their status and history.

use std::collections::{HashMap, HashSet};

use actix_web::http::StatusCode;
use actix_web::web;
use chrono::{DateTime, SubsecRound, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use paperclip::actix::{api_v2_operation, Apiv2Schema};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::caller::Caller;
use super::extract::{IdempotencyKey, JsonBody, OperationPath, WalletPath};
use super::reply::{Found, Outcome, SubmitReply};
use super::schema::{AmountText, UuidText};
use super::submit::{self, Accepted, IdSource, Submission};
use super::wait::{PreferWait, Wait};
use super::{body, lookup, AppState, Problem};
use crate::cache::Marker;
use crate::clock;
use crate::ledger::database;
use crate::ledger::kind::{KindError, KindFields, Presence};
use crate::ledger::metadata::Metadata;
use crate::ledger::money::{format_in, Currency};
use crate::ledger::store::{self, OperationRecord, RejectedRecord};
use crate::ledger::types::{
    FailureReason, OperationId, OperationKind, OperationStatus, OperationType, ScopedId,
    ScopedWalletId, WalletId,
};

/// An operation to apply to a wallet.
#[derive(Debug, Deserialize, Apiv2Schema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmitOperation {
    /// The wallet to debit or credit; required on `POST /api/v1/wallet`, and when given on
    /// the per-wallet route it must equal the path's.
    wallet_id: Option<UuidText>,
    /// DEPOSIT, WITHDRAW, TRANSFER, HOLD, CAPTURE or VOID.
    #[openapi(example = "DEPOSIT")]
    operation_type: String,
    /// Required, except on a VOID (which has none) and a CAPTURE (which takes all that
    /// remains of its hold without one).
    #[serde(default, deserialize_with = "super::schema::present_amount")]
    amount: Option<AmountText>,
    /// The wallet credited by a TRANSFER, or by a CAPTURE that settles to another wallet
    /// (without it, a captured amount leaves like a withdrawal).
    to_wallet_id: Option<UuidText>,
    /// The hold a CAPTURE or VOID acts on: the operationId of its HOLD, on this wallet.
    hold_id: Option<UuidText>,
    /// When a HOLD releases what remains of it (RFC 3339): after now and at most
    /// `http.hold_expiry_max_s` (30 days) ahead; `http.hold_expiry_default_s` (7 days) after
    /// acceptance when left out. Only a HOLD has it.
    #[openapi(example = "\"2026-12-08T10:00:00Z\"")]
    expires_at: Option<String>,
    /// Choose the id to make the request safe to retry (like `Idempotency-Key`). Any UUID but
    /// version 8, which the server keeps for its own operations (422 `RESERVED_OPERATION_ID`);
    /// time-ordered ones (UUIDv7, as the server makes) are stored faster than random ones.
    operation_id: Option<UuidText>,
    /// Your own labels: string values, at most `http.metadata_keys_max` keys (16) of
    /// `http.metadata_key_chars_max` characters (64), values of at most
    /// `http.metadata_value_chars_max` (512). Part of the request: reusing its id with other
    /// metadata is IDEMPOTENCY_KEY_REUSED.
    metadata: Option<Metadata>,
}

/// An accepted operation.
#[derive(Debug, Serialize, Apiv2Schema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptedBody {
    operation_id: OperationId,
    wallet_id: WalletId,
    status: OperationStatus,
}

impl From<Accepted> for AcceptedBody {
    fn from(accepted: Accepted) -> Self {
        AcceptedBody {
            operation_id: accepted.id,
            wallet_id: accepted.wallet_id,
            status: accepted.status,
        }
    }
}

/// Submit an operation (wallet id in the body)
///
/// Validates the operation and hands it to the broker; a worker applies it exactly once and
/// in order with the wallet's other operations. Poll `Location` for the outcome, or send
/// `Prefer: wait=N` to have the answer wait for it. A HOLD reserves `amount` until
/// `expiresAt` (its operationId is the hold id); a CAPTURE or VOID names it in `holdId` on the
/// same wallet. An `expiresAt` in the past or beyond `http.hold_expiry_max_s` is 422
/// `INVALID_EXPIRY`; a field the type does not have is 422 `UNEXPECTED_FIELD`.
#[api_v2_operation(tags(operations), operation_id = "submitOperation")]
pub async fn submit(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    wait: PreferWait,
    input: JsonBody<SubmitOperation>,
) -> Result<SubmitReply<AcceptedBody, StatusBody>, Problem> {
    let submission = parse(caller.0.tenant, input.0, key.0, None)?;
    accepted(state, submission, wait.0).await
}

/// Submit an operation on a wallet
///
/// The same as `POST /api/v1/wallet`, with the wallet named in the path.
#[api_v2_operation(tags(operations), operation_id = "submitWalletOperation")]
pub async fn submit_for_wallet(
    state: web::Data<AppState>,
    caller: Caller,
    path: WalletPath,
    key: IdempotencyKey,
    wait: PreferWait,
    input: JsonBody<SubmitOperation>,
) -> Result<SubmitReply<AcceptedBody, StatusBody>, Problem> {
    let submission = parse(caller.0.tenant, input.0, key.0, Some(path.0))?;
    accepted(state, submission, wait.0).await
}

/// Accepts the operation; with a wait, watches for its decision from before it is produced,
/// so a decision can never slip by between the produce and the watch. The acceptance runs to
/// its end even when the client goes away (the server drops the request of a client that
/// closed its side, which ends a wait at once): stopped between its claim and its produce,
/// it would leave a marker that refuses retries of the id with 409 until it expires.
async fn accepted(
    state: web::Data<AppState>,
    submission: Submission,
    wait: Option<Wait>,
) -> Result<SubmitReply<AcceptedBody, StatusBody>, Problem> {
    let scoped = ScopedId {
        tenant: submission.tenant.clone(),
        id: submit::operation_id(&submission),
    };
    let preference_applied = wait.as_ref().map(Wait::preference_applied);
    let watch = wait.map(|wait| {
        let watch = state.decisions.watch(std::slice::from_ref(&scoped));
        (watch, wait.deadline)
    });
    let accepted = actix_web::rt::spawn({
        let state = state.clone();
        async move { submit::accept(&state, submission).await }
    })
    .await
    .map_err(|error| {
        tracing::error!(%error, "the acceptance of an operation did not finish");
        Problem::internal()
    })??;
    let decision = match watch {
        Some((watch, deadline)) => {
            let marker = watch.decided_by(deadline).await.pop().flatten();
            match marker.and_then(|marker| decided_for(&accepted, &marker)) {
                Some(answer) => Some(answer),
                None => decided_in_postgres(&state, &scoped.tenant, &accepted).await,
            }
            .transpose()?
        }
        None => None,
    };
    let Accepted {
        id,
        wallet_id,
        status,
        ..
    } = accepted;
    let outcome = match decision {
        Some(body) => Outcome::Decided(body),
        None => Outcome::Accepted(AcceptedBody {
            operation_id: id,
            wallet_id,
            status,
        }),
    };
    Ok(SubmitReply {
        location: format!("/api/v1/wallets/{wallet_id}/operations/{id}"),
        preference_applied,
        outcome,
    })
}

pub(super) fn parse(
    tenant: String,
    input: SubmitOperation,
    key: Option<String>,
    path_wallet: Option<WalletId>,
) -> Result<Submission, Problem> {
    let uuid = |field: &'static str, text: Option<UuidText>| {
        text.map(|UuidText(text)| body::uuid(field, &text))
            .transpose()
    };
    let body_wallet = uuid("walletId", input.wallet_id)?.map(WalletId);
    let wallet_id = match (path_wallet, body_wallet) {
        (Some(path), Some(body)) if path != body => {
            return Err(Problem::invalid(
                "WALLET_MISMATCH",
                "walletId",
                "walletId in the body differs from the path",
            ))
        }
        (Some(wallet), _) | (None, Some(wallet)) => wallet,
        (None, None) => {
            return Err(Problem::invalid(
                "MISSING_FIELD",
                "walletId",
                "walletId is required",
            ))
        }
    };
    let operation_type = OperationType::parse(&input.operation_type)
        .filter(|operation_type| operation_type.submittable())
        .ok_or_else(|| {
            Problem::invalid(
                "INVALID_OPERATION_TYPE",
                "operationType",
                format!(
                    "operationType must be {}",
                    OperationType::listed(OperationType::submittable_kinds())
                ),
            )
        })?;
    let target = uuid("toWalletId", input.to_wallet_id)?.map(WalletId);
    let hold = uuid("holdId", input.hold_id)?.map(OperationId);
    let expires_at = input.expires_at.as_deref().map(expiry).transpose()?;
    let amount = input
        .amount
        .map(|amount| body::amount(&amount.0))
        .transpose()?;
    let fields = KindFields {
        amount: amount.is_some(),
        target,
        hold,
        expires_at,
    };
    let kind = OperationKind::from_fields(operation_type, &fields).map_err(kind_problem)?;
    let id = match (uuid("operationId", input.operation_id)?, key) {
        (Some(id), _) => IdSource::Explicit(OperationId(id)),
        (None, Some(key)) => IdSource::IdempotencyKey(key),
        (None, None) => IdSource::Generated(clock::new_operation_id()),
    };
    Ok(Submission {
        tenant,
        wallet_id,
        kind,
        amount,
        id,
        metadata: input.metadata.unwrap_or_default(),
    })
}

/// A HOLD's `expiresAt`, in PostgreSQL's precision so the hold shows the instant asked for.
fn expiry(text: &str) -> Result<DateTime<Utc>, Problem> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc).trunc_subsecs(6))
        .map_err(|_| {
            Problem::invalid(
                "INVALID_EXPIRY",
                "expiresAt",
                "expiresAt must be an RFC 3339 time such as 2026-12-08T10:00:00Z",
            )
        })
}

fn kind_problem(error: KindError) -> Problem {
    match error {
        KindError::Missing(operation_type, field) => Problem::invalid(
            "MISSING_FIELD",
            field.as_str(),
            format!("a {} needs {}", operation_type.as_str(), field.as_str()),
        ),
        KindError::Unexpected(_, field) => {
            let with_field = OperationType::submittable_kinds()
                .filter(|kind| kind.presence(field) != Presence::Absent);
            Problem::invalid(
                "UNEXPECTED_FIELD",
                field.as_str(),
                format!(
                    "only a {} has {}",
                    OperationType::listed(with_field),
                    field.as_str()
                ),
            )
        }
    }
}

/// An operation and its outcome. While PENDING only the ids, status and `acceptedAt` are
/// known; the rest appears once a worker has applied it.
#[derive(Debug, Serialize, Apiv2Schema)]
#[serde(rename_all = "camelCase")]
pub struct StatusBody {
    operation_id: OperationId,
    wallet_id: WalletId,
    status: OperationStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation_type: Option<OperationType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to_wallet_id: Option<WalletId>,
    /// The hold a HOLD placed (its own id) or a CAPTURE, VOID or EXPIRE acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    hold_id: Option<OperationId>,
    /// Why a FAILED operation failed: INSUFFICIENT_FUNDS, WALLET_NOT_FOUND,
    /// TARGET_WALLET_NOT_FOUND, CURRENCY_MISMATCH, SAME_WALLET, INVALID_AMOUNT, HOLD_NOT_FOUND
    /// (the wallet has no hold of that id), HOLD_CLOSED (captured in full, voided, expired, or
    /// asked at or after its expiresAt), CAPTURE_EXCEEDS_HOLD, INVALID_EXPIRY or REJECTED.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[openapi(example = "INSUFFICIENT_FUNDS")]
    reason: Option<String>,
    /// The wallet's balance right after this operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[openapi(example = "\"90.00\"")]
    pub(super) balance_after: Option<String>,
    accepted_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    processed_at: Option<DateTime<Utc>>,
    /// The labels the operation was submitted with; absent when it had none.
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata>,
}

impl StatusBody {
    /// An acknowledged operation the database refused; its dead letter says why.
    fn rejected(id: OperationId, record: &RejectedRecord) -> Self {
        StatusBody {
            operation_id: id,
            wallet_id: record.wallet_id,
            status: OperationStatus::Failed,
            operation_type: None,
            amount: None,
            to_wallet_id: None,
            hold_id: None,
            reason: Some(FailureReason::Rejected.as_str().to_owned()),
            balance_after: None,
            accepted_at: record.accepted_at,
            processed_at: Some(record.recorded_at),
            metadata: None,
        }
    }

    pub(super) fn from_record(record: &OperationRecord, currency: Option<Currency>) -> Self {
        let money = |value| format_in(currency, value);
        StatusBody {
            operation_id: record.id,
            wallet_id: record.wallet_id,
            status: record.status,
            operation_type: Some(record.operation_type),
            amount: record.amount.as_ref().map(money),
            to_wallet_id: record.to_wallet_id,
            hold_id: record.hold_id,
            reason: record.reason.clone(),
            balance_after: record.balance_after.as_ref().map(money),
            accepted_at: record.accepted_at,
            processed_at: Some(record.processed_at),
            metadata: shown(&record.metadata),
        }
    }
}

/// Read an operation's status
///
/// PENDING until a worker applies it, then PROCESSED or FAILED with `reason`. A transfer is
/// visible from both of its wallets, PENDING too. While the cache cannot be read, an operation
/// no worker has decided yet is 503, not 404: it may be pending. So is one neither the cache
/// nor the database knows while its wallet's partition still has records to apply (503
/// `OPERATION_MAY_BE_PENDING`): its marker may have been lost.
#[api_v2_operation(tags(operations), operation_id = "getOperation")]
pub async fn status(
    state: web::Data<AppState>,
    caller: Caller,
    path: OperationPath,
) -> Result<Found<StatusBody>, Problem> {
    // A final status from the cache, otherwise from PostgreSQL, otherwise PENDING while the
    // marker says the broker has it.
    let OperationPath(wallet_id, id) = path;
    let not_found = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "OPERATION_NOT_FOUND",
            "Operation not found",
            format!("operation {id} does not exist for wallet {wallet_id}"),
        )
    };
    if lookup::currency(&state, &caller.wallet(wallet_id))
        .await?
        .is_none()
    {
        return Err(not_found());
    }
    let scoped = ScopedId {
        tenant: caller.0.tenant.clone(),
        id,
    };
    let (marker, unreadable) = match state.cache.marker(&scoped).await {
        Ok(marker) => (marker.filter(|marker| marker.involves(wallet_id)), None),
        Err(error) => (None, Some(Problem::from(error))),
    };
    if let Some(decided) = marker.as_ref().and_then(|marker| decided(id, marker)) {
        return Ok(Found(decided));
    }
    match stored(&state, &scoped, wallet_id).await? {
        Stored::Found(body, _) => return Ok(Found(*body)),
        Stored::OtherWallet => return Err(not_found()),
        // Only the marker knows an operation no worker has decided yet: without it, the
        // operation may be pending, and a 404 would tell a client polling `Location` that it
        // was never accepted.
        Stored::Unknown => {
            if let Some(problem) = unreadable {
                return Err(problem);
            }
        }
    }
    // An `Accepting` marker is a request still being produced, or one whose process died
    // before producing; an `Uncertain` one a request whose produce failed: nothing the client
    // was told is accepted, so nothing to show yet.
    let Some(marker) =
        marker.filter(|marker| marker.state.status() == Some(OperationStatus::Pending))
    else {
        return match stored_once_applied(&state, &scoped, wallet_id).await? {
            (Stored::Found(body, _), _) => Ok(Found(*body)),
            (Stored::OtherWallet, _) | (Stored::Unknown, true) => Err(not_found()),
            (Stored::Unknown, false) => Err(may_be_pending(id)),
        };
    };
    Ok(Found(StatusBody {
        operation_id: id,
        wallet_id: marker.wallet_id,
        status: OperationStatus::Pending,
        operation_type: None,
        amount: None,
        to_wallet_id: None,
        hold_id: None,
        reason: None,
        balance_after: None,
        accepted_at: marker.accepted_at,
        processed_at: None,
        metadata: shown(&marker.metadata),
    }))
}

/// What PostgreSQL knows of an operation the cache has no `Pending` marker for, and whether
/// its wallet's partition was applied up to the broker's end when PostgreSQL was asked. A
/// marker can be missing for an operation answered 202: Redis restarted empty, or refused the
/// write that turned the marker `Pending` (out of memory, read-only). Only when nothing the
/// broker acknowledged before now still waits in the partition is "not found" sure. The
/// position is read before PostgreSQL and the end after it, so a record acknowledged before
/// the end had been applied, and stored, when PostgreSQL was asked.
async fn stored_once_applied(
    state: &AppState,
    id: &ScopedId,
    wallet_id: WalletId,
) -> Result<(Stored, bool), Problem> {
    let (topic, partition) = state.producer.partition_of_wallet(wallet_id);
    let position = {
        let client = database::client(&state.pool).await?;
        store::stored_position(&client, topic, partition).await?
    };
    let stored = stored(state, id, wallet_id).await?;
    if !matches!(stored, Stored::Unknown) {
        return Ok((stored, true));
    }
    match state.producer.end_offset(partition).await {
        Ok(end) => Ok((stored, position >= end)),
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), partition, "cannot read the partition's end");
            Ok((stored, false))
        }
    }
}

/// 503 for an operation that may still be waiting in its partition, with no marker to say so.
fn may_be_pending(id: OperationId) -> Problem {
    Problem::unavailable(
        "OPERATION_MAY_BE_PENDING",
        format!(
            "operation {id} is not known yet, but may still be waiting to be applied; retry later"
        ),
    )
}

/// A decision PostgreSQL holds for the `accepted` request of `tenant` although no final
/// marker says so: a worker that committed a batch and died (or lost its connection) before
/// writing the batch's markers leaves them `Pending`, and Redis may refuse to store them.
/// 422 when the id was decided for another request, as [`decided_for`] answers.
pub(super) async fn decided_in_postgres(
    state: &AppState,
    tenant: &str,
    accepted: &Accepted,
) -> Option<Result<StatusBody, Problem>> {
    decided_all_in_postgres(state, tenant, &[accepted])
        .await
        .pop()
        .flatten()
}

/// `decided_in_postgres` for requests of `tenant`, each asked from its wallet, with one read
/// for all. Answers in the order asked.
pub(super) async fn decided_all_in_postgres(
    state: &AppState,
    tenant: &str,
    asked: &[&Accepted],
) -> Vec<Option<Result<StatusBody, Problem>>> {
    let ids: Vec<(OperationId, WalletId)> = asked
        .iter()
        .map(|accepted| (accepted.id, accepted.wallet_id))
        .collect();
    match stored_all(state, tenant, &ids).await {
        Ok(stored) => stored
            .into_iter()
            .zip(asked)
            .map(|(stored, accepted)| match stored {
                Stored::Found(_, Some(fingerprint)) if fingerprint != accepted.fingerprint => {
                    Some(Err(submit::key_reused()))
                }
                Stored::Found(body, _) => Some(Ok(*body)),
                Stored::OtherWallet | Stored::Unknown => None,
            })
            .collect(),
        Err(problem) => {
            tracing::warn!(
                code = problem.code,
                "cannot read the decisions from PostgreSQL"
            );
            asked.iter().map(|_| None).collect()
        }
    }
}

/// The answer to the `accepted` request waiting for its operation's decision, from its id's
/// final marker (None while it is not final): 422 when the id was decided for another
/// request, which happens when Redis lost that request's marker before this one reused the
/// id, and the worker refused this one.
pub(super) fn decided_for(
    accepted: &Accepted,
    marker: &Marker,
) -> Option<Result<StatusBody, Problem>> {
    let body = decided(accepted.id, marker)?;
    match marker.is_of(accepted.wallet_id, &accepted.fingerprint) {
        true => Some(Ok(body)),
        false => Some(Err(submit::key_reused())),
    }
}

/// The final status a worker left in the cache, if it did.
pub(super) fn decided(id: OperationId, marker: &Marker) -> Option<StatusBody> {
    let status = match marker.state.status()? {
        OperationStatus::Pending => return None,
        status @ (OperationStatus::Processed | OperationStatus::Failed) => status,
    };
    let decision = marker.decision.as_ref();
    Some(StatusBody {
        operation_id: id,
        wallet_id: marker.wallet_id,
        status,
        operation_type: decision.map(|decision| decision.operation_type),
        amount: decision.and_then(|decision| decision.amount.clone()),
        to_wallet_id: decision.and_then(|decision| decision.to_wallet_id),
        hold_id: decision.and_then(|decision| decision.hold_id),
        reason: marker.reason.clone(),
        balance_after: marker.balance_after.clone(),
        accepted_at: marker.accepted_at,
        processed_at: marker.processed_at,
        metadata: shown(&marker.metadata),
    })
}

/// Metadata as a status shows it: left out when there is none.
fn shown(metadata: &Metadata) -> Option<Metadata> {
    (!metadata.is_empty()).then(|| metadata.clone())
}

/// What PostgreSQL knows of an operation, asked from one of its wallets.
enum Stored {
    /// Decided, or refused and kept as a dead letter; with the fingerprint of the request
    /// decided, which a dead letter does not keep.
    Found(Box<StatusBody>, Option<String>),
    /// It exists, but the asking wallet is neither of its wallets.
    OtherWallet,
    Unknown,
}

async fn stored(state: &AppState, id: &ScopedId, wallet_id: WalletId) -> Result<Stored, Problem> {
    let stored = stored_all(state, &id.tenant, &[(id.id, wallet_id)]).await?;
    Ok(stored.into_iter().next().unwrap_or(Stored::Unknown))
}

/// What PostgreSQL knows of each operation of `tenant` asked, from the wallet asked with it:
/// one statement for the decided ones, one more for the dead letters of the rest, and one
/// lookup per distinct wallet for the currency of the amounts. In the order asked.
async fn stored_all(
    state: &AppState,
    tenant: &str,
    asked: &[(OperationId, WalletId)],
) -> Result<Vec<Stored>, Problem> {
    let ids: Vec<Uuid> = asked.iter().map(|(id, _)| id.0).collect();
    let (records, rejected) = {
        let client = database::client(&state.pool).await?;
        let records: HashMap<OperationId, OperationRecord> =
            store::operations(&client, tenant, &ids)
                .await?
                .into_iter()
                .map(|record| (record.id, record))
                .collect();
        let undecided: Vec<Uuid> = asked
            .iter()
            .filter(|(id, _)| !records.contains_key(id))
            .map(|(id, _)| id.0)
            .collect();
        let rejected: HashMap<OperationId, RejectedRecord> = match undecided.is_empty() {
            true => HashMap::new(),
            false => store::rejected_operations(&client, tenant, &undecided)
                .await?
                .into_iter()
                .collect(),
        };
        (records, rejected)
    };
    let wallets: HashSet<WalletId> = records.values().map(|record| record.wallet_id).collect();
    let currencies: HashMap<WalletId, Option<Currency>> = stream::iter(wallets)
        .map(|wallet| async move {
            let scoped = ScopedWalletId {
                tenant: tenant.to_owned(),
                id: wallet,
            };
            let found = lookup::find(state, &scoped).await?;
            Ok::<_, Problem>((wallet, found.map(|found| found.currency)))
        })
        .buffer_unordered(lookup::READS_PER_REQUEST)
        .try_collect()
        .await?;
    Ok(asked
        .iter()
        .map(
            |(id, wallet_id)| match (records.get(id), rejected.get(id)) {
                (Some(record), _)
                    if record.wallet_id != *wallet_id
                        && record.to_wallet_id != Some(*wallet_id) =>
                {
                    Stored::OtherWallet
                }
                (Some(record), _) => {
                    let currency = currencies.get(&record.wallet_id).copied().flatten();
                    let body = Box::new(StatusBody::from_record(record, currency));
                    Stored::Found(body, Some(record.fingerprint.clone()))
                }
                (None, Some(rejected))
                    if rejected.wallet_id == *wallet_id
                        || rejected.to_wallet_id == Some(*wallet_id) =>
                {
                    Stored::Found(Box::new(StatusBody::rejected(*id, rejected)), None)
                }
                (None, Some(_)) => Stored::OtherWallet,
                (None, None) => Stored::Unknown,
            },
        )
        .collect())
}
