//! The API's read models of decided operations: one operation and a refused one.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{prepared, StoreError};
use crate::ledger::metadata::Metadata;
use crate::ledger::money::decimal_from_db;
use crate::ledger::types::{OperationId, OperationStatus, OperationType, ScopedId, WalletId};

/// An operation as stored once a worker has decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRecord {
    pub id: OperationId,
    pub wallet_id: WalletId,
    pub operation_type: OperationType,
    /// What it moved once processed; what it asked for when it failed, if it named an amount.
    pub amount: Option<BigDecimal>,
    pub to_wallet_id: Option<WalletId>,
    /// The hold it placed (a HOLD's own id) or acted on.
    pub hold_id: Option<OperationId>,
    pub status: OperationStatus,
    pub reason: Option<String>,
    pub balance_after: Option<BigDecimal>,
    pub fingerprint: String,
    pub accepted_at: DateTime<Utc>,
    pub processed_at: DateTime<Utc>,
    pub metadata: Metadata,
}

pub(super) const OPERATION_COLUMNS: &str =
    "o.id, o.wallet_id, o.type, o.amount::text, o.to_wallet_id, o.status, o.reason, \
     o.balance_after::text, o.fingerprint, o.accepted_at, o.processed_at, o.metadata::text, o.hold_id";

pub(super) fn operation_from_row(row: &Row) -> Result<OperationRecord, StoreError> {
    let corrupt =
        |what: &str| StoreError::Corrupt(format!("operation {}: {what}", row.get::<_, Uuid>(0)));
    let operation_type: String = row.get(2);
    let status: String = row.get(5);
    let amount: Option<String> = row.get(3);
    let balance_after: Option<String> = row.get(7);
    let metadata: String = row.get(11);
    Ok(OperationRecord {
        id: OperationId(row.get(0)),
        wallet_id: WalletId(row.get(1)),
        operation_type: OperationType::parse(&operation_type).ok_or_else(|| corrupt("type"))?,
        amount: amount
            .map(|text| decimal_from_db(&text))
            .transpose()
            .map_err(|_| corrupt("amount"))?,
        to_wallet_id: row.get::<_, Option<Uuid>>(4).map(WalletId),
        hold_id: row.get::<_, Option<Uuid>>(12).map(OperationId),
        status: OperationStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        reason: row.get(6),
        balance_after: balance_after
            .map(|text| decimal_from_db(&text))
            .transpose()
            .map_err(|_| corrupt("balance_after"))?,
        fingerprint: row.get(8),
        accepted_at: row.get(9),
        processed_at: row.get(10),
        metadata: serde_json::from_str(&metadata).map_err(|_| corrupt("metadata"))?,
    })
}

pub async fn operation(
    client: &impl GenericClient,
    id: &ScopedId,
) -> Result<Option<OperationRecord>, StoreError> {
    let row = client
        .query_opt(
            &prepared(
                client,
                &format!(
                    "SELECT {OPERATION_COLUMNS} FROM operations o WHERE o.tenant = $1 AND o.id = $2"
                ),
            )
            .await?,
            &[&id.tenant, &id.id.0],
        )
        .await?;
    row.as_ref().map(operation_from_row).transpose()
}

/// An acknowledged operation the database refused and kept as a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRecord {
    pub wallet_id: WalletId,
    pub accepted_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
}

pub async fn rejected_operation(
    client: &impl GenericClient,
    id: &ScopedId,
) -> Result<Option<RejectedRecord>, StoreError> {
    let row = client
        .query_opt(
            &prepared(
                client,
                "SELECT wallet_id, accepted_at, recorded_at FROM dead_letters
                 WHERE tenant = $1 AND operation_id = $2 ORDER BY recorded_at LIMIT 1",
            )
            .await?,
            &[&id.tenant, &id.id.0],
        )
        .await?;
    Ok(row.map(|row| RejectedRecord {
        wallet_id: WalletId(row.get(0)),
        accepted_at: row.get(1),
        recorded_at: row.get(2),
    }))
}
