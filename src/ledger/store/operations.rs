//! The API's read models of decided operations: one operation and a refused one.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{prepared, scoped_values, StoreError};
use crate::ledger::metadata::Metadata;
use crate::ledger::money::{decimal_from_db, Currency};
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
    Ok(operations(client, &id.tenant, &[id.id.0]).await?.pop())
}

/// The decided operations of `tenant` among `ids`, in one statement; in no particular order.
pub async fn operations(
    client: &impl GenericClient,
    tenant: &str,
    ids: &[Uuid],
) -> Result<Vec<OperationRecord>, StoreError> {
    let rows = client
        .query(
            &prepared(
                client,
                &format!(
                    "SELECT {OPERATION_COLUMNS} FROM operations o \
                     WHERE o.tenant = $1 AND o.id = ANY($2)"
                ),
            )
            .await?,
            &[&tenant, &ids],
        )
        .await?;
    rows.iter().map(operation_from_row).collect()
}

/// What PostgreSQL decided for some operations, read in one round trip: the stored records
/// (each with its wallet's currency, to show amounts in) and the ids refused and kept as dead
/// letters (with when). An id in neither is not decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decisions {
    pub decided: Vec<(ScopedId, OperationRecord, Option<Currency>)>,
    pub rejected: Vec<(ScopedId, DateTime<Utc>)>,
}

pub async fn decisions(
    client: &impl GenericClient,
    ids: &[ScopedId],
) -> Result<Decisions, StoreError> {
    let (tenants, uuids): (Vec<&str>, Vec<Uuid>) =
        ids.iter().map(|id| (id.tenant.as_str(), id.id.0)).unzip();
    let decided = prepared(
        client,
        &format!(
            "SELECT {OPERATION_COLUMNS}, w.currency, o.tenant FROM operations o
             JOIN unnest($1::text[], $2::uuid[]) AS t(tenant, id) USING (tenant, id)
             LEFT JOIN wallets w ON w.tenant = o.tenant AND w.id = o.wallet_id"
        ),
    )
    .await?;
    let rejected = prepared(
        client,
        "SELECT DISTINCT ON (d.tenant, d.operation_id) d.tenant, d.operation_id, d.recorded_at
         FROM dead_letters d
         JOIN unnest($1::text[], $2::uuid[]) AS t(tenant, id)
           ON d.tenant = t.tenant AND d.operation_id = t.id
         ORDER BY d.tenant, d.operation_id, d.recorded_at",
    )
    .await?;
    let parameters: [&(dyn ToSql + Sync); 2] = [&tenants, &uuids];
    let (decided, rejected) = tokio::join!(
        client.query(&decided, &parameters),
        client.query(&rejected, &parameters),
    );
    let decided = decided?
        .iter()
        .map(|row| {
            let currency: Option<String> = row.get(13);
            let currency = currency
                .map(|code| Currency::parse(&code).map_err(StoreError::corrupt))
                .transpose()?;
            let record = operation_from_row(row)?;
            let id = ScopedId {
                tenant: row.get(14),
                id: record.id,
            };
            Ok((id, record, currency))
        })
        .collect::<Result<_, StoreError>>()?;
    let rejected = scoped_values(&rejected?);
    Ok(Decisions { decided, rejected })
}

/// An acknowledged operation the database refused and kept as a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRecord {
    pub wallet_id: WalletId,
    /// The wallet a refused TRANSFER or CAPTURE was to credit, from which its status is read
    /// too; absent from dead letters kept before it was.
    pub to_wallet_id: Option<WalletId>,
    pub accepted_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
}

pub async fn rejected_operation(
    client: &impl GenericClient,
    id: &ScopedId,
) -> Result<Option<RejectedRecord>, StoreError> {
    let rejected = rejected_operations(client, &id.tenant, &[id.id.0]).await?;
    Ok(rejected.into_iter().next().map(|(_, record)| record))
}

/// The first dead letter of each operation of `tenant` among `ids` that has one, in one
/// statement; in no particular order.
pub async fn rejected_operations(
    client: &impl GenericClient,
    tenant: &str,
    ids: &[Uuid],
) -> Result<Vec<(OperationId, RejectedRecord)>, StoreError> {
    let rows = client
        .query(
            &prepared(
                client,
                "SELECT DISTINCT ON (operation_id) operation_id, wallet_id, accepted_at, recorded_at,
                        to_wallet_id
                 FROM dead_letters WHERE tenant = $1 AND operation_id = ANY($2)
                 ORDER BY operation_id, recorded_at",
            )
            .await?,
            &[&tenant, &ids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let record = RejectedRecord {
                wallet_id: WalletId(row.get(1)),
                accepted_at: row.get(2),
                recorded_at: row.get(3),
                to_wallet_id: row.get::<_, Option<Uuid>>(4).map(WalletId),
            };
            (OperationId(row.get(0)), record)
        })
        .collect())
}
