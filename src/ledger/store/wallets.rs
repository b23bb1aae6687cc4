//! Wallet rows: creating a wallet with its first event, and reading wallets by id.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{prepared, StoreError};
use crate::ledger::events;
use crate::ledger::money::{decimal_from_db, Currency};
use crate::ledger::types::{ScopedWalletId, WalletId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wallet {
    pub id: WalletId,
    /// Who may see and operate the wallet: the tenant of the token that created it.
    pub tenant: String,
    pub currency: Currency,
    pub balance: BigDecimal,
    /// How far below zero the balance may go.
    pub overdraft_limit: BigDecimal,
    /// What its open holds still reserve.
    pub held: BigDecimal,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Wallet {
    /// The wallet's id in its tenant, the only place it is unique.
    pub fn scoped_id(&self) -> ScopedWalletId {
        ScopedWalletId {
            tenant: self.tenant.clone(),
            id: self.id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New(Wallet),
    Existing(Wallet),
}

const WALLET_COLUMNS: &str =
    "id, currency, balance::text, version, created_at, updated_at, tenant, overdraft_limit::text, \
     held::text";

pub(super) fn wallet_from_row(row: &Row) -> Result<Wallet, StoreError> {
    let currency: String = row.get(1);
    let balance: String = row.get(2);
    let overdraft_limit: String = row.get(7);
    let held: String = row.get(8);
    Ok(Wallet {
        id: WalletId(row.get(0)),
        currency: Currency::parse(&currency).map_err(StoreError::corrupt)?,
        balance: decimal_from_db(&balance).map_err(StoreError::corrupt)?,
        overdraft_limit: decimal_from_db(&overdraft_limit).map_err(StoreError::corrupt)?,
        held: decimal_from_db(&held).map_err(StoreError::corrupt)?,
        version: row.get(3),
        created_at: row.get(4),
        updated_at: row.get(5),
        tenant: row.get(6),
    })
}

/// What a new wallet is made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWallet {
    pub id: WalletId,
    pub tenant: String,
    pub currency: Currency,
    pub overdraft_limit: BigDecimal,
}

/// Creates a wallet, or returns the one of its tenant that already has this id.
pub async fn create_wallet(
    client: &impl GenericClient,
    new: &NewWallet,
    now: DateTime<Utc>,
) -> Result<Created, StoreError> {
    let NewWallet {
        id,
        tenant,
        currency,
        overdraft_limit,
    } = new;
    let id = *id;
    let event = events::wallet_created(id, tenant, overdraft_limit, now);
    let scoped = ScopedWalletId {
        tenant: tenant.clone(),
        id,
    };
    let payload = serde_json::to_string(&event).map_err(StoreError::corrupt)?;
    // One statement, so the wallet and its WalletCreated event exist together or not at all.
    let inserted = client
        .query_opt(
            &prepared(
                client,
                &format!(
                    "WITH inserted AS (
                         INSERT INTO wallets (id, currency, balance, version, created_at, updated_at, tenant, overdraft_limit)
                         VALUES ($1, $2, 0, 0, $3, $3, $5, $6::text::numeric) ON CONFLICT (tenant, id) DO NOTHING RETURNING *
                     ), event AS (
                         INSERT INTO outbox (tenants, wallet_ids, payloads, events, created_at)
                         SELECT ARRAY[tenant], ARRAY[id], ARRAY[$4], 1, $3 FROM inserted
                     )
                     SELECT {WALLET_COLUMNS} FROM inserted"
                ),
            )
            .await?,
            &[
                &id.0,
                &currency.code(),
                &now,
                &payload,
                tenant,
                &overdraft_limit.to_plain_string(),
            ],
        )
        .await?;
    match inserted {
        Some(row) => Ok(Created::New(wallet_from_row(&row)?)),
        None => match wallet(client, &scoped).await? {
            Some(existing) => Ok(Created::Existing(existing)),
            None => Err(StoreError::Corrupt(format!(
                "wallet {scoped} conflicted but does not exist"
            ))),
        },
    }
}

pub async fn wallet(
    client: &impl GenericClient,
    id: &ScopedWalletId,
) -> Result<Option<Wallet>, StoreError> {
    read_wallet(client, id, "").await
}

/// The wallet, read once no batch transaction that has locked it is still to commit: a batch
/// records its entries at a time it reads after taking its wallets' locks, so that from here
/// on, within `client`'s transaction, the journal up to now is final. The lock waits for a
/// batch's `FOR UPDATE` and keeps later batches of the wallet waiting until the transaction
/// ends. It conflicts with itself, so readers queue with the batches in turn: a shared lock
/// would let a stream of overlapping readers keep a batch, and with it its whole partition,
/// waiting for ever.
pub(super) async fn wallet_settled(
    client: &impl GenericClient,
    id: &ScopedWalletId,
) -> Result<Option<Wallet>, StoreError> {
    read_wallet(client, id, " FOR NO KEY UPDATE").await
}

async fn read_wallet(
    client: &impl GenericClient,
    id: &ScopedWalletId,
    lock: &str,
) -> Result<Option<Wallet>, StoreError> {
    let row = client
        .query_opt(
            &prepared(
                client,
                &format!(
                    "SELECT {WALLET_COLUMNS} FROM wallets WHERE tenant = $1 AND id = $2{lock}"
                ),
            )
            .await?,
            &[&id.tenant, &id.id.0],
        )
        .await?;
    row.as_ref().map(wallet_from_row).transpose()
}

/// The wallets among `ids` that exist, in no particular order, in one round trip.
pub async fn wallets(
    client: &impl GenericClient,
    ids: &[ScopedWalletId],
) -> Result<Vec<Wallet>, StoreError> {
    let (tenants, ids): (Vec<&str>, Vec<Uuid>) =
        ids.iter().map(|id| (id.tenant.as_str(), id.id.0)).unzip();
    let rows = client
        .query(
            &prepared(
                client,
                &format!(
                    "SELECT {WALLET_COLUMNS} FROM wallets
                     JOIN unnest($1::text[], $2::uuid[]) AS t(tenant, id) USING (tenant, id)"
                ),
            )
            .await?,
            &[&tenants, &ids],
        )
        .await?;
    rows.iter().map(wallet_from_row).collect()
}
