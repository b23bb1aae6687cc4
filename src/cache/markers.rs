//! Operation markers `op:{tenant}:{id}`: the idempotency record of a request and, once a
//! worker has decided the operation, its final status. Ids are scoped by tenant here as
//! everywhere, so one tenant's marker can never block or reveal another's.
//!
//! The state machine lives here: a request claims an `Accepting` marker, the broker's answer
//! makes it `Pending` or `Uncertain`, and a worker's commit makes it `Processed` or `Failed`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::decisions::DECIDED_CHANNEL;
use super::{Cache, CacheError};
use crate::ledger::metadata::Metadata;
use crate::ledger::money::{format_in, Currency};
use crate::ledger::store::OperationRecord;
use crate::ledger::types::{
    FailureReason, Operation, OperationId, OperationStatus, OperationType, Outcome, ScopedId,
    WalletId,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MarkerState {
    /// The API is producing the operation; nobody knows yet whether the broker has it. Older
    /// than `redis.accepting_ttl_s`, the request's process died while producing, and its
    /// record may have landed: the marker then binds the id like `Uncertain`.
    Accepting,
    /// The produce failed, and a failed produce may still have written the record: the id
    /// stays bound to this content until a worker decides it (or the marker's TTL ends), so
    /// the same request may be retried and another one is refused.
    Uncertain,
    /// The broker acknowledged the operation; no worker has decided it yet.
    Pending,
    Processed,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Marker {
    pub state: MarkerState,
    pub wallet_id: WalletId,
    /// The wallet a TRANSFER or CAPTURE credits, from which its status is read as well as
    /// from `wallet_id`'s; absent from markers written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_wallet_id: Option<WalletId>,
    pub fingerprint: String,
    pub accepted_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_at: Option<DateTime<Utc>>,
    /// The operation's labels, so its status shows them without a PostgreSQL read.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
    /// What a final status shows besides, as PostgreSQL's record does: absent from the
    /// markers of a request, and from final ones written before they were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// The decided operation as its stored record shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub operation_type: OperationType,
    /// What it moved once processed; what it asked for when it failed, if it named an amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_wallet_id: Option<WalletId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<OperationId>,
}

impl MarkerState {
    /// The status a client is told: none while nothing it was told is accepted (a request
    /// still being produced, or one whose produce failed).
    pub fn status(self) -> Option<OperationStatus> {
        match self {
            MarkerState::Accepting | MarkerState::Uncertain => None,
            MarkerState::Pending => Some(OperationStatus::Pending),
            MarkerState::Processed => Some(OperationStatus::Processed),
            MarkerState::Failed => Some(OperationStatus::Failed),
        }
    }
}

impl Marker {
    /// Whether the operation debits or credits `wallet`, so its status is read from there.
    pub fn involves(&self, wallet: WalletId) -> bool {
        self.wallet_id == wallet || self.to_wallet_id == Some(wallet)
    }

    /// Whether the marker is of the request with `fingerprint` on `wallet`. Under another
    /// request's marker the id is reused: that request is refused, and never told the
    /// marker's status as its own.
    pub fn is_of(&self, wallet: WalletId, fingerprint: &str) -> bool {
        self.wallet_id == wallet && self.fingerprint == fingerprint
    }

    /// The marker a request claims before producing `operation`.
    pub fn accepting(operation: &Operation) -> Marker {
        Marker {
            state: MarkerState::Accepting,
            wallet_id: operation.wallet_id,
            to_wallet_id: operation.kind.target(),
            fingerprint: operation.fingerprint.clone(),
            accepted_at: operation.accepted_at,
            reason: None,
            balance_after: None,
            processed_at: None,
            metadata: operation.metadata.clone(),
            decision: None,
        }
    }

    /// This request's marker once the broker answered: `Pending` when it acknowledged the
    /// record, `Uncertain` otherwise, since a failed produce may still have written it.
    pub fn produced(&self, acknowledged: bool) -> Marker {
        Marker {
            state: match acknowledged {
                true => MarkerState::Pending,
                false => MarkerState::Uncertain,
            },
            ..self.clone()
        }
    }

    /// The final status of an operation a worker decided, with the fingerprint and
    /// acceptance time of the record it applied.
    pub fn decided(
        operation: &Operation,
        outcome: &Outcome,
        currency: Option<Currency>,
        processed_at: DateTime<Utc>,
    ) -> Marker {
        let money = |value| format_in(currency, value);
        let (state, reason, balance_after, amount) = match outcome {
            Outcome::Processed {
                balance_after,
                amount,
            } => (
                MarkerState::Processed,
                None,
                Some(balance_after),
                Some(amount),
            ),
            Outcome::Failed {
                reason,
                balance_after,
            } => (
                MarkerState::Failed,
                Some(reason.as_str().to_owned()),
                balance_after.as_ref(),
                operation.amount.as_ref().map(|amount| amount.value()),
            ),
        };
        Marker {
            state,
            wallet_id: operation.wallet_id,
            to_wallet_id: operation.kind.target(),
            fingerprint: operation.fingerprint.clone(),
            accepted_at: operation.accepted_at,
            reason,
            balance_after: balance_after.map(money),
            processed_at: Some(processed_at),
            metadata: operation.metadata.clone(),
            decision: Some(Decision {
                operation_type: operation.kind.operation_type(),
                amount: amount.map(money),
                to_wallet_id: operation.kind.target(),
                hold_id: operation.hold_id(),
            }),
        }
    }

    /// The final status of an operation as PostgreSQL stores it, for a worker that cannot
    /// tell what its own batch decided (the answer to its commit was lost), or that met a
    /// record of an id stored before (a retried produce, or an id reused once its marker was
    /// lost, whose marker would otherwise stay the reusing request's); None for a record
    /// that is not final, which a stored one never is.
    pub fn stored(record: &OperationRecord, currency: Option<Currency>) -> Option<Marker> {
        let state = match record.status {
            OperationStatus::Pending => return None,
            OperationStatus::Processed => MarkerState::Processed,
            OperationStatus::Failed => MarkerState::Failed,
        };
        let money = |value| format_in(currency, value);
        Some(Marker {
            state,
            wallet_id: record.wallet_id,
            to_wallet_id: record.to_wallet_id,
            fingerprint: record.fingerprint.clone(),
            accepted_at: record.accepted_at,
            reason: record.reason.clone(),
            balance_after: record.balance_after.as_ref().map(money),
            processed_at: Some(record.processed_at),
            metadata: record.metadata.clone(),
            decision: Some(Decision {
                operation_type: record.operation_type,
                amount: record.amount.as_ref().map(money),
                to_wallet_id: record.to_wallet_id,
                hold_id: record.hold_id,
            }),
        })
    }

    /// The final status of an operation the database refused: FAILED, `REJECTED`.
    pub fn rejected(operation: &Operation, processed_at: DateTime<Utc>) -> Marker {
        Marker {
            state: MarkerState::Failed,
            wallet_id: operation.wallet_id,
            to_wallet_id: operation.kind.target(),
            fingerprint: operation.fingerprint.clone(),
            accepted_at: operation.accepted_at,
            reason: Some(FailureReason::Rejected.as_str().to_owned()),
            balance_after: None,
            processed_at: Some(processed_at),
            metadata: operation.metadata.clone(),
            decision: None,
        }
    }
}

/// Replaces this request's own marker (ARGV[1]) with ARGV[2]; also writes it when the marker
/// has expired, but never over another request's marker or a final status a worker already
/// wrote.
const REPLACE_OWN: &str = r#"
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"#;

/// Tenants are letters, digits, '-' and '_', so the colon keeps keys unambiguous.
pub(super) fn key(id: &ScopedId) -> String {
    format!("op:{}:{}", id.tenant, id.id)
}

impl Cache {
    pub async fn marker(&self, id: &ScopedId) -> Result<Option<Marker>, CacheError> {
        let key = key(id);
        self.with_connection(|mut connection| async move {
            let stored: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut connection)
                .await?;
            Ok(stored.map(|text| serde_json::from_str(&text)).transpose()?)
        })
        .await
    }

    /// Writes an `Accepting` marker unless one exists; returns whether this call wrote it.
    /// It lives as long as any marker: a request that crashed while producing keeps its id
    /// bound to its content (see [`Cache::still_accepting`]).
    pub async fn claim(&self, id: &ScopedId, marker: &Marker) -> Result<bool, CacheError> {
        let value = serde_json::to_string(marker)?;
        let ttl = self.marker_ttl_s;
        let key = key(id);
        self.with_connection(|mut connection| async move {
            let written: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("NX")
                .arg("EX")
                .arg(ttl)
                .query_async(&mut connection)
                .await?;
            Ok(written.is_some())
        })
        .await
    }

    /// Whether an `Accepting` marker may still belong to a live request (which a retry must
    /// not race: `409`), rather than to one whose process died while producing.
    pub fn still_accepting(&self, marker: &Marker, now: DateTime<Utc>) -> bool {
        let ttl =
            chrono::Duration::seconds(i64::try_from(self.accepting_ttl_s).unwrap_or(i64::MAX));
        marker.state == MarkerState::Accepting && now < marker.accepted_at + ttl
    }

    /// Replaces this request's own marker `from` with `to`: `Pending` after the broker's
    /// acknowledgement, `Uncertain` after a failed produce. `to` keeps the id for the
    /// markers' full TTL.
    pub async fn replace_own(
        &self,
        id: &ScopedId,
        from: &Marker,
        to: &Marker,
    ) -> Result<(), CacheError> {
        let (from, to) = (serde_json::to_string(from)?, serde_json::to_string(to)?);
        let ttl = self.marker_ttl_s;
        let key = key(id);
        self.with_connection(|mut connection| async move {
            redis::cmd("EVAL")
                .arg(REPLACE_OWN)
                .arg(1)
                .arg(key)
                .arg(from)
                .arg(to)
                .arg(ttl)
                .query_async::<i64>(&mut connection)
                .await?;
            Ok(())
        })
        .await
    }

    /// [`Cache::claim`] for many ids in one round trip; answers, in order, whether each was
    /// written by this call.
    pub async fn claim_all(&self, claims: &[(ScopedId, &Marker)]) -> Result<Vec<bool>, CacheError> {
        let mut pipeline = redis::pipe();
        for (id, marker) in claims {
            pipeline
                .cmd("SET")
                .arg(key(id))
                .arg(serde_json::to_string(marker)?)
                .arg("NX")
                .arg("EX")
                .arg(self.marker_ttl_s);
        }
        self.with_connection(|mut connection| async move {
            let written: Vec<Option<String>> = pipeline.query_async(&mut connection).await?;
            Ok(written.into_iter().map(|set| set.is_some()).collect())
        })
        .await
    }

    /// [`Cache::replace_own`] for many markers, as (id, from, to), in one round trip.
    pub async fn replace_own_all(
        &self,
        replacements: &[(ScopedId, &Marker, Marker)],
    ) -> Result<(), CacheError> {
        if replacements.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        for (id, from, to) in replacements {
            pipeline
                .cmd("EVAL")
                .arg(REPLACE_OWN)
                .arg(1)
                .arg(key(id))
                .arg(serde_json::to_string(from)?)
                .arg(serde_json::to_string(to)?)
                .arg(self.marker_ttl_s)
                .ignore();
        }
        self.with_connection(|mut connection| async move {
            pipeline.query_async::<()>(&mut connection).await?;
            Ok(())
        })
        .await
    }

    /// Stores final statuses written by a worker after its commit and announces them to the
    /// requests waiting for them, in one round trip.
    pub async fn store_outcomes(&self, outcomes: &[(ScopedId, Marker)]) -> Result<(), CacheError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        let mut decided = String::new();
        for (id, marker) in outcomes {
            decided.push_str(&key(id));
            decided.push('\n');
            pipeline
                .cmd("SET")
                .arg(key(id))
                .arg(serde_json::to_string(marker)?)
                .arg("EX")
                .arg(self.marker_ttl_s)
                .ignore();
        }
        pipeline
            .cmd("PUBLISH")
            .arg(DECIDED_CHANNEL)
            .arg(decided)
            .ignore();
        self.with_connection(|mut connection| async move {
            pipeline.query_async::<()>(&mut connection).await?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::money::Amount;
    use crate::ledger::types::{OperationId, OperationKind};
    use uuid::Uuid;

    /// Proves the marker's life: a claimed request answers nothing until the broker
    /// acknowledged it (then PENDING) and stays bound to its content when the produce failed;
    /// a worker's decision is final, a refused operation FAILED with REJECTED.
    #[test]
    fn markers_move_from_accepting_to_a_final_status() {
        let operation = Operation {
            tenant: "acme".to_owned(),
            id: OperationId(Uuid::from_u128(1)),
            wallet_id: WalletId(Uuid::from_u128(2)),
            kind: OperationKind::Withdraw,
            amount: Some(Amount::parse("5").unwrap()),
            accepted_at: Utc::now(),
            fingerprint: "f".to_owned(),
            metadata: Metadata::default(),
        };
        let accepting = Marker::accepting(&operation);
        assert_eq!(accepting.state.status(), None);
        let pending = accepting.produced(true);
        assert_eq!(pending.state.status(), Some(OperationStatus::Pending));
        let uncertain = accepting.produced(false);
        assert_eq!(uncertain.state, MarkerState::Uncertain);
        assert_eq!(uncertain.state.status(), None);
        assert_eq!(uncertain.fingerprint, accepting.fingerprint);
        let failed = Outcome::Failed {
            reason: FailureReason::InsufficientFunds,
            balance_after: Some(bigdecimal::BigDecimal::from(3)),
        };
        let decided = Marker::decided(&operation, &failed, Some(Currency::USD), Utc::now());
        assert_eq!(decided.state.status(), Some(OperationStatus::Failed));
        assert_eq!(decided.reason.as_deref(), Some("INSUFFICIENT_FUNDS"));
        assert_eq!(decided.balance_after.as_deref(), Some("3.00"));
        let rejected = Marker::rejected(&operation, Utc::now());
        assert_eq!(rejected.state.status(), Some(OperationStatus::Failed));
        assert_eq!(rejected.reason.as_deref(), Some("REJECTED"));
    }

    /// Proves the final marker read back from a stored operation is the one its batch
    /// wrote after the commit, so a worker that lost the answer to its commit finalises the
    /// operation as it would have.
    #[test]
    fn a_stored_operation_gives_the_marker_its_batch_wrote() {
        let operation = Operation {
            tenant: "acme".to_owned(),
            id: OperationId(Uuid::from_u128(1)),
            wallet_id: WalletId(Uuid::from_u128(2)),
            kind: OperationKind::Transfer {
                target: WalletId(Uuid::from_u128(3)),
            },
            amount: Some(Amount::parse("5").unwrap()),
            accepted_at: Utc::now(),
            fingerprint: "f".to_owned(),
            metadata: Metadata::default(),
        };
        let processed_at = Utc::now();
        let outcome = Outcome::Processed {
            balance_after: bigdecimal::BigDecimal::from(7),
            amount: bigdecimal::BigDecimal::from(5),
        };
        let record = OperationRecord {
            id: operation.id,
            wallet_id: operation.wallet_id,
            operation_type: OperationType::Transfer,
            amount: Some(bigdecimal::BigDecimal::from(5)),
            to_wallet_id: operation.kind.target(),
            hold_id: None,
            status: OperationStatus::Processed,
            reason: None,
            balance_after: Some(bigdecimal::BigDecimal::from(7)),
            fingerprint: "f".to_owned(),
            accepted_at: operation.accepted_at,
            processed_at,
            metadata: Metadata::default(),
        };
        assert_eq!(
            Marker::stored(&record, Some(Currency::USD)),
            Some(Marker::decided(
                &operation,
                &outcome,
                Some(Currency::USD),
                processed_at
            ))
        );
        let pending = OperationRecord {
            status: OperationStatus::Pending,
            ..record
        };
        assert_eq!(Marker::stored(&pending, Some(Currency::USD)), None);
    }
}
