//! Hold rows: locking the ones a batch acts on, writing what it changed, and reading them for
//! the API and the expiry scan.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{prepared, StoreError};
use crate::ledger::money::decimal_from_db;
use crate::ledger::types::{
    Entry, Hold, HoldState, Operation, OperationId, ScopedId, ScopedWalletId, WalletId,
};

const HOLD_COLUMNS: &str = "tenant, hold_id, wallet_id, amount::text, captured::text, state, \
                            expires_at, created_at, version";

/// A hold as stored, with what the API shows besides its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRecord {
    pub id: ScopedId,
    pub hold: Hold,
    pub created_at: DateTime<Utc>,
    /// The wallet's version after the HOLD that placed it.
    pub version: i64,
}

fn hold_from_row(row: &Row) -> Result<HoldRecord, StoreError> {
    let amount: String = row.get(3);
    let captured: String = row.get(4);
    let state: String = row.get(5);
    let id = ScopedId {
        tenant: row.get(0),
        id: OperationId(row.get(1)),
    };
    let state = HoldState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("hold {}: state {state}", id.id)))?;
    Ok(HoldRecord {
        hold: Hold {
            wallet_id: WalletId(row.get(2)),
            amount: decimal_from_db(&amount).map_err(StoreError::corrupt)?,
            captured: decimal_from_db(&captured).map_err(StoreError::corrupt)?,
            state,
            expires_at: row.get(6),
        },
        id,
        created_at: row.get(7),
        version: row.get(8),
    })
}

/// Locks the stored holds the operations act on, in (tenant, id) order, after their wallets:
/// the same order in every batch, so two workers never deadlock.
pub(super) async fn lock_holds(
    client: &impl GenericClient,
    operations: &[(i64, Operation)],
) -> Result<HashMap<ScopedId, Hold>, StoreError> {
    let mut ids: Vec<ScopedId> = operations
        .iter()
        .filter_map(|(_, operation)| {
            operation.kind.hold().map(|hold| ScopedId {
                tenant: operation.tenant.clone(),
                id: hold,
            })
        })
        .collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    ids.sort_unstable();
    ids.dedup();
    let (tenants, ids): (Vec<&str>, Vec<Uuid>) =
        ids.iter().map(|id| (id.tenant.as_str(), id.id.0)).unzip();
    let rows = client
        .query(
            &prepared(
                client,
                &format!(
                    "SELECT {HOLD_COLUMNS} FROM holds
                     JOIN unnest($1::text[], $2::uuid[]) AS t(tenant, hold_id) USING (tenant, hold_id)
                     ORDER BY tenant, hold_id FOR UPDATE OF holds"
                ),
            )
            .await?,
            &[&tenants, &ids],
        )
        .await?;
    rows.iter()
        .map(|row| hold_from_row(row).map(|record| (record.id, record.hold)))
        .collect()
}

/// Writes the holds the batch placed or changed, in one statement: a new hold with its
/// partition, the wallet version its HOLD's entry has and the batch's time; a changed one
/// with what it captured, its state and, once closed, when.
pub(super) async fn write_holds(
    client: &impl GenericClient,
    partition: i32,
    changed: &[ScopedId],
    holds: &HashMap<ScopedId, Hold>,
    entries: &[Entry],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if changed.is_empty() {
        return Ok(());
    }
    // A HOLD journals one entry, on its wallet; the hold keeps that entry's version.
    let versions: HashMap<(&ScopedWalletId, OperationId), i64> = entries
        .iter()
        .map(|entry| ((&entry.wallet, entry.operation_id), entry.version))
        .collect();
    let count = changed.len();
    let (mut tenants, mut ids, mut wallets, mut amounts, mut captured) = (
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
    );
    let (mut states, mut expiries, mut hold_versions) = (
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
    );
    for id in changed {
        let hold = holds
            .get(id)
            .ok_or_else(|| StoreError::Corrupt(format!("changed hold {} has no state", id.id)))?;
        tenants.push(id.tenant.as_str());
        ids.push(id.id.0);
        wallets.push(hold.wallet_id.0);
        amounts.push(hold.amount.to_plain_string());
        captured.push(hold.captured.to_plain_string());
        states.push(hold.state.as_str());
        expiries.push(hold.expires_at);
        // A hold placed before this batch keeps its stored version (the update leaves it).
        let wallet = ScopedWalletId {
            tenant: id.tenant.clone(),
            id: hold.wallet_id,
        };
        hold_versions.push(versions.get(&(&wallet, id.id)).copied().unwrap_or(0));
    }
    client
        .execute(
            &prepared(
                client,
                "INSERT INTO holds (tenant, hold_id, wallet_id, partition, version, amount, captured, state,
                                    expires_at, created_at, closed_at)
                 SELECT tenant, hold_id, wallet_id, $9, version, amount::numeric, captured::numeric, state,
                        expires_at, $10, CASE WHEN state = 'OPEN' THEN NULL ELSE $10::timestamptz END
                 FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::bigint[], $5::text[], $6::text[],
                             $7::text[], $8::timestamptz[])
                      AS t(tenant, hold_id, wallet_id, version, amount, captured, state, expires_at)
                 ON CONFLICT (tenant, hold_id) DO UPDATE
                 SET captured = EXCLUDED.captured, state = EXCLUDED.state,
                     closed_at = COALESCE(holds.closed_at, EXCLUDED.closed_at)",
            )
            .await?,
            &[
                &tenants,
                &ids,
                &wallets,
                &hold_versions,
                &amounts,
                &captured,
                &states,
                &expiries,
                &partition,
                &now,
            ],
        )
        .await?;
    Ok(())
}

pub async fn hold(
    client: &impl GenericClient,
    id: &ScopedId,
) -> Result<Option<HoldRecord>, StoreError> {
    let row = client
        .query_opt(
            &prepared(
                client,
                &format!("SELECT {HOLD_COLUMNS} FROM holds WHERE tenant = $1 AND hold_id = $2"),
            )
            .await?,
            &[&id.tenant, &id.id.0],
        )
        .await?;
    row.as_ref().map(hold_from_row).transpose()
}

/// The wallet's holds placed before `before_version`, newest first, in `state` when given.
/// A hold's version is its HOLD's entry, assigned under the wallet's row lock, so pages never
/// skip or repeat while new holds are placed. Each state is one walk of the wallet's
/// (state, version) index down from the cursor, at most `limit` long, so a page reads at most
/// `limit` holds per state however many the wallet has.
pub async fn holds(
    client: &impl GenericClient,
    wallet: &ScopedWalletId,
    state: Option<HoldState>,
    before_version: i64,
    limit: i64,
) -> Result<Vec<HoldRecord>, StoreError> {
    let states: Vec<&str> = match state {
        Some(state) => vec![state.as_str()],
        None => HoldState::ALL.into_iter().map(HoldState::as_str).collect(),
    };
    let rows = client
        .query(
            &prepared(
                client,
                &format!(
                    "SELECT h.* FROM unnest($4::text[]) AS s(state)
                     CROSS JOIN LATERAL (
                         SELECT {HOLD_COLUMNS} FROM holds
                         WHERE tenant = $5 AND wallet_id = $1 AND state = s.state AND version < $2
                         ORDER BY version DESC LIMIT $3
                     ) h
                     ORDER BY h.version DESC LIMIT $3"
                ),
            )
            .await?,
            &[
                &wallet.id.0,
                &before_version,
                &limit,
                &states,
                &wallet.tenant,
            ],
        )
        .await?;
    rows.iter().map(hold_from_row).collect()
}

/// An open hold whose time is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueHold {
    pub id: ScopedId,
    pub wallet_id: WalletId,
    pub expires_at: DateTime<Utc>,
}

/// The partitions whose holds an expiry scan looks at, by the partition stored with each.
pub struct ScannedPartitions<'a> {
    pub owned: &'a [i32],
    /// Also every partition from this one on: those a topic with fewer partitions lacks.
    pub beyond: Option<i32>,
}

/// At most `limit` open holds of the scanned partitions that expired at or before `now`,
/// soonest first, from the partial expiry index.
pub async fn due_holds(
    client: &impl GenericClient,
    partitions: &ScannedPartitions<'_>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<DueHold>, StoreError> {
    let rows = client
        .query(
            &prepared(
                client,
                "SELECT tenant, hold_id, wallet_id, expires_at FROM holds
                 WHERE state = 'OPEN' AND expires_at <= $2
                   AND (partition = ANY($1) OR partition >= $4)
                 ORDER BY expires_at LIMIT $3",
            )
            .await?,
            &[
                &partitions.owned,
                &now,
                &limit,
                &partitions.beyond.unwrap_or(i32::MAX),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| DueHold {
            id: ScopedId {
                tenant: row.get(0),
                id: OperationId(row.get(1)),
            },
            wallet_id: WalletId(row.get(2)),
            expires_at: row.get(3),
        })
        .collect())
}
