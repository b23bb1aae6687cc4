//! PostgreSQL persistence of the ledger: wallets, operations, entries and consumer positions.
//! The rules themselves live in `rules`; this file only loads, locks and writes.

use std::collections::{HashMap, HashSet};

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use super::events::{self, Event};
use super::money::{decimal_from_db, Currency};
use super::rules;
use super::types::{
    Operation, OperationId, OperationStatus, OperationType, Outcome, ScopedId, WalletId,
    WalletState,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another owner moved the partition's position; this batch must not be applied.
    #[error("partition {partition} is at offset {stored}, not {expected}: another worker owns it")]
    Fenced {
        partition: i32,
        expected: i64,
        stored: i64,
    },
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    #[error("no database connection: {0}")]
    Unavailable(String),
    #[error("the database holds a value the ledger cannot read: {0}")]
    Corrupt(String),
}

/// Why a batch is retried rather than its records blamed: the label of
/// `wallet_batch_retries_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The connection failed or could not be made (class 08, a closed socket, no pooled client).
    Connection,
    /// The server ran out of something: disk, memory, connections (class 53).
    Resources,
    /// An operator or the server stopped the work: shutdown, cancel, statement timeout (57).
    OperatorIntervention,
    /// The server's own environment failed: I/O errors (class 58).
    System,
    /// A lock was not granted within `lock_timeout` (55P03), e.g. held by a frozen worker.
    LockTimeout,
    /// Another transaction won a conflict: serialization failure, deadlock, a unique key
    /// another writer inserted first (40001, 40P01, 23505).
    Conflict,
    /// The server only accepts reads, as right after a failover (25006).
    ReadOnly,
    /// Anything else that no record can have caused, such as a missing table or a value in the
    /// database the ledger cannot read: an operator must look, and the batch waits.
    Unexpected,
}

impl RetryReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Connection => "connection",
            RetryReason::Resources => "resources",
            RetryReason::OperatorIntervention => "operator_intervention",
            RetryReason::System => "system",
            RetryReason::LockTimeout => "lock_timeout",
            RetryReason::Conflict => "conflict",
            RetryReason::ReadOnly => "read_only",
            RetryReason::Unexpected => "unexpected",
        }
    }
}

/// What to do about a batch that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// Keep the batch and apply it again later: the cause is outside the records.
    Retry(RetryReason),
    /// A record's own data was refused (a data exception, a constraint it violates): find it
    /// and keep it as a dead letter.
    Reject,
}

/// Classifies a SQLSTATE by what it means for the batch.
pub fn remedy_for_sqlstate(code: &str) -> Remedy {
    let class = code.get(..2).unwrap_or(code);
    match (class, code) {
        (_, "55P03") => Remedy::Retry(RetryReason::LockTimeout),
        (_, "25006") => Remedy::Retry(RetryReason::ReadOnly),
        // The server ended the session: idle in a transaction too long, or idle too long.
        (_, "25P03") | (_, "57P05") => Remedy::Retry(RetryReason::Connection),
        (_, "23505") => Remedy::Retry(RetryReason::Conflict),
        ("08", _) => Remedy::Retry(RetryReason::Connection),
        ("53", _) => Remedy::Retry(RetryReason::Resources),
        ("57", _) => Remedy::Retry(RetryReason::OperatorIntervention),
        ("58", _) => Remedy::Retry(RetryReason::System),
        ("40", _) => Remedy::Retry(RetryReason::Conflict),
        ("22", _) | ("23", _) => Remedy::Reject,
        _ => Remedy::Retry(RetryReason::Unexpected),
    }
}

impl StoreError {
    /// What the error means for a batch: only a record's own data is ever blamed.
    pub fn remedy(&self) -> Remedy {
        match self {
            StoreError::Database(error) => match error.code() {
                Some(code) if !error.is_closed() => remedy_for_sqlstate(code.code()),
                _ => Remedy::Retry(RetryReason::Connection),
            },
            StoreError::Unavailable(_) => Remedy::Retry(RetryReason::Connection),
            StoreError::Corrupt(_) | StoreError::Fenced { .. } => {
                Remedy::Retry(RetryReason::Unexpected)
            }
        }
    }

    /// Errors an API request should answer with 503 (retry later) rather than 500: the server
    /// is away, busy or refusing writes, none of which the request caused.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.remedy(),
            Remedy::Retry(
                RetryReason::Connection
                    | RetryReason::Resources
                    | RetryReason::OperatorIntervention
                    | RetryReason::System
                    | RetryReason::LockTimeout
                    | RetryReason::Conflict
                    | RetryReason::ReadOnly
            )
        )
    }

    /// The SQLSTATE and the server's own words, which `tokio_postgres` prints as `db error`.
    pub fn describe(&self) -> String {
        match self {
            StoreError::Database(error) => match error.as_db_error() {
                Some(db) => format!(
                    "{} {}: {}{}",
                    db.severity(),
                    db.code().code(),
                    db.message(),
                    db.detail()
                        .map(|detail| format!(" ({detail})"))
                        .unwrap_or_default()
                ),
                // Not from the server: Display already names the cause.
                None => error.to_string(),
            },
            other => other.to_string(),
        }
    }
}

/// Goes through the connection's statement cache, so each statement is parsed and planned
/// once per connection instead of on every call.
async fn prepared(
    client: &impl GenericClient,
    sql: &str,
) -> Result<tokio_postgres::Statement, StoreError> {
    Ok(client.prepare_cached(sql).await?)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wallet {
    pub id: WalletId,
    /// Who may see and operate the wallet: the tenant of the token that created it.
    pub tenant: String,
    pub currency: Currency,
    pub balance: BigDecimal,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New(Wallet),
    Existing(Wallet),
}

const WALLET_COLUMNS: &str = "id, currency, balance::text, version, created_at, updated_at, tenant";

fn wallet_from_row(row: &Row) -> Result<Wallet, StoreError> {
    let currency: String = row.get(1);
    let balance: String = row.get(2);
    Ok(Wallet {
        id: WalletId(row.get(0)),
        currency: Currency::parse(&currency)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?,
        balance: decimal_from_db(&balance)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?,
        version: row.get(3),
        created_at: row.get(4),
        updated_at: row.get(5),
        tenant: row.get(6),
    })
}

/// Creates a wallet, or returns the one that already has this id.
pub async fn create_wallet(
    client: &impl GenericClient,
    id: WalletId,
    tenant: &str,
    currency: Currency,
    now: DateTime<Utc>,
) -> Result<Created, StoreError> {
    let event = events::wallet_created(id, tenant, now);
    let payload =
        serde_json::to_string(&event).map_err(|error| StoreError::Corrupt(error.to_string()))?;
    // One statement, so the wallet and its WalletCreated event exist together or not at all.
    let inserted = client
        .query_opt(
            &prepared(
                client,
                &format!(
                    "WITH inserted AS (
                         INSERT INTO wallets (id, currency, balance, version, created_at, updated_at, tenant)
                         VALUES ($1, $2, 0, 0, $3, $3, $6) ON CONFLICT (id) DO NOTHING RETURNING *
                     ), event AS (
                         INSERT INTO outbox (event_id, wallet_id, payload, created_at)
                         SELECT $4, id, $5, $3 FROM inserted
                     )
                     SELECT {WALLET_COLUMNS} FROM inserted"
                ),
            )
            .await?,
            &[&id.0, &currency.code(), &now, &event.event_id, &payload, &tenant],
        )
        .await?;
    match inserted {
        Some(row) => Ok(Created::New(wallet_from_row(&row)?)),
        None => match wallet(client, id).await? {
            Some(existing) => Ok(Created::Existing(existing)),
            None => Err(StoreError::Corrupt(format!(
                "wallet {id} conflicted but does not exist"
            ))),
        },
    }
}

pub async fn wallet(
    client: &impl GenericClient,
    id: WalletId,
) -> Result<Option<Wallet>, StoreError> {
    let row = client
        .query_opt(
            &prepared(
                client,
                &format!("SELECT {WALLET_COLUMNS} FROM wallets WHERE id = $1"),
            )
            .await?,
            &[&id.0],
        )
        .await?;
    row.as_ref().map(wallet_from_row).transpose()
}

/// The wallets among `ids` that exist, in no particular order, in one round trip.
pub async fn wallets(
    client: &impl GenericClient,
    ids: &[WalletId],
) -> Result<Vec<Wallet>, StoreError> {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let rows = client
        .query(
            &prepared(
                client,
                &format!("SELECT {WALLET_COLUMNS} FROM wallets WHERE id = ANY($1)"),
            )
            .await?,
            &[&ids],
        )
        .await?;
    rows.iter().map(wallet_from_row).collect()
}

/// An operation as stored once a worker has decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRecord {
    pub id: OperationId,
    pub wallet_id: WalletId,
    pub operation_type: OperationType,
    pub amount: BigDecimal,
    pub to_wallet_id: Option<WalletId>,
    pub status: OperationStatus,
    pub reason: Option<String>,
    pub balance_after: Option<BigDecimal>,
    pub fingerprint: String,
    pub accepted_at: DateTime<Utc>,
    pub processed_at: DateTime<Utc>,
}

impl Default for BatchReport {
    fn default() -> Self {
        BatchReport {
            wallets: Vec::new(),
            decided: Vec::new(),
            rejected: Vec::new(),
            duplicates: 0,
            processed_at: DateTime::<Utc>::MIN_UTC,
        }
    }
}

impl BatchReport {
    /// Adds a later report of the same partition to this one.
    pub fn merge(&mut self, later: BatchReport) {
        self.wallets.extend(later.wallets);
        self.decided.extend(later.decided);
        self.rejected.extend(later.rejected);
        self.duplicates += later.duplicates;
        self.processed_at = self.processed_at.max(later.processed_at);
    }
}

const OPERATION_COLUMNS: &str =
    "o.id, o.wallet_id, o.type, o.amount::text, o.to_wallet_id, o.status, o.reason, \
     o.balance_after::text, o.fingerprint, o.accepted_at, o.processed_at";

fn operation_from_row(row: &Row) -> Result<OperationRecord, StoreError> {
    let corrupt =
        |what: &str| StoreError::Corrupt(format!("operation {}: {what}", row.get::<_, Uuid>(0)));
    let operation_type: String = row.get(2);
    let status: String = row.get(5);
    let amount: String = row.get(3);
    let balance_after: Option<String> = row.get(7);
    Ok(OperationRecord {
        id: OperationId(row.get(0)),
        wallet_id: WalletId(row.get(1)),
        operation_type: OperationType::parse(&operation_type).ok_or_else(|| corrupt("type"))?,
        amount: decimal_from_db(&amount).map_err(|_| corrupt("amount"))?,
        to_wallet_id: row.get::<_, Option<Uuid>>(4).map(WalletId),
        status: OperationStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        reason: row.get(6),
        balance_after: balance_after
            .map(|text| decimal_from_db(&text))
            .transpose()
            .map_err(|_| corrupt("balance_after"))?,
        fingerprint: row.get(8),
        accepted_at: row.get(9),
        processed_at: row.get(10),
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

/// One line of a wallet's history: its journal entry and the operation behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryItem {
    pub version: i64,
    pub delta: BigDecimal,
    pub balance_after: BigDecimal,
    pub operation: OperationRecord,
}

/// The wallet's entries with a version below `before_version`, newest first. Versions are
/// assigned under the wallet's row lock, so pages never skip or repeat while new entries land.
pub async fn history(
    client: &impl GenericClient,
    wallet_id: WalletId,
    before_version: i64,
    limit: i64,
) -> Result<Vec<HistoryItem>, StoreError> {
    let rows = client
        .query(
            &prepared(
                client,
                &format!(
                    "SELECT {OPERATION_COLUMNS}, e.version, e.delta::text, e.balance_after::text
                 FROM entries e JOIN operations o ON o.tenant = e.tenant AND o.id = e.operation_id
                 WHERE e.wallet_id = $1 AND e.version < $2
                 ORDER BY e.version DESC LIMIT $3"
                ),
            )
            .await?,
            &[&wallet_id.0, &before_version, &limit],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let delta: String = row.get(12);
            let balance_after: String = row.get(13);
            Ok(HistoryItem {
                version: row.get(11),
                delta: decimal_from_db(&delta)
                    .map_err(|error| StoreError::Corrupt(error.to_string()))?,
                balance_after: decimal_from_db(&balance_after)
                    .map_err(|error| StoreError::Corrupt(error.to_string()))?,
                operation: operation_from_row(row)?,
            })
        })
        .collect()
}

/// Where a worker resumes a partition; creates the position at offset 0 the first time.
pub async fn next_offset(
    client: &impl GenericClient,
    topic: &str,
    partition: i32,
) -> Result<i64, StoreError> {
    client
        .execute(
            &prepared(
                client,
                "INSERT INTO consumer_offsets (topic, partition, next_offset) VALUES ($1, $2, 0)
             ON CONFLICT DO NOTHING",
            )
            .await?,
            &[&topic, &partition],
        )
        .await?;
    let row = client
        .query_one(
            &prepared(
                client,
                "SELECT next_offset FROM consumer_offsets WHERE topic = $1 AND partition = $2",
            )
            .await?,
            &[&topic, &partition],
        )
        .await?;
    Ok(row.get(0))
}

/// A record that could not become an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub offset: i64,
    pub reason: String,
    pub payload: Option<Vec<u8>>,
    /// The readable operation the database refused, whose status then answers FAILED. None
    /// for undecodable records and for reused ids, whose id names another operation.
    pub operation: Option<Operation>,
}

/// Consecutive records of one partition, from `from_offset` up to (excluding) `next_offset`.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub topic: String,
    pub partition: i32,
    pub from_offset: i64,
    pub next_offset: i64,
    pub operations: Vec<(i64, Operation)>,
    pub dead_letters: Vec<DeadLetter>,
}

impl Batch {
    /// One batch per record, in offset order, together covering exactly this batch's range.
    pub fn split(&self) -> Vec<Batch> {
        let mut records: Vec<(i64, Option<&Operation>, Option<&DeadLetter>)> = self
            .operations
            .iter()
            .map(|(offset, operation)| (*offset, Some(operation), None))
            .chain(
                self.dead_letters
                    .iter()
                    .map(|letter| (letter.offset, None, Some(letter))),
            )
            .collect();
        records.sort_by_key(|(offset, _, _)| *offset);
        let mut from_offset = self.from_offset;
        let mut singles = Vec::with_capacity(records.len());
        for (offset, operation, letter) in records {
            singles.push(Batch {
                topic: self.topic.clone(),
                partition: self.partition,
                from_offset,
                next_offset: offset + 1,
                operations: operation
                    .map(|operation| (offset, operation.clone()))
                    .into_iter()
                    .collect(),
                dead_letters: letter.cloned().into_iter().collect(),
            });
            from_offset = offset + 1;
        }
        if let Some(last) = singles.last_mut() {
            last.next_offset = self.next_offset;
        }
        singles
    }

    /// The same range with every record kept as a dead letter that names `error`.
    pub fn rejected(&self, error: &str) -> Batch {
        let letters = self
            .operations
            .iter()
            .map(|(offset, operation)| DeadLetter {
                offset: *offset,
                reason: format!("REJECTED: operation {}: {error}", operation.id),
                payload: None,
                operation: Some(operation.clone()),
            })
            .chain(self.dead_letters.iter().map(|letter| DeadLetter {
                reason: format!("REJECTED: {error}"),
                ..letter.clone()
            }))
            .collect();
        Batch {
            operations: Vec::new(),
            dead_letters: letters,
            ..self.clone()
        }
    }
}

/// What a committed batch changed, for the cache and the logs.
#[derive(Debug, Clone)]
pub struct BatchReport {
    pub wallets: Vec<Wallet>,
    /// Each operation this batch applied (the record that was applied, not a later duplicate
    /// of its id) and what became of it.
    pub decided: Vec<(Operation, Outcome)>,
    /// Operations the database refused, kept as dead letters: they are FAILED.
    pub rejected: Vec<Operation>,
    pub duplicates: usize,
    pub processed_at: DateTime<Utc>,
}

/// Applies a batch in one transaction: the partition's position is checked and advanced, the
/// operations already stored are dropped, the touched wallets are locked in id order (so two
/// workers never deadlock, transfers included), the pure rules decide, and everything is
/// written with one statement per table.
pub async fn apply_batch(
    client: &mut deadpool_postgres::Object,
    batch: &Batch,
    now: DateTime<Utc>,
) -> Result<BatchReport, StoreError> {
    assert!(
        batch.next_offset >= batch.from_offset,
        "a batch never moves backwards"
    );
    let transaction = client.transaction().await?;
    lock_position(&transaction, batch).await?;
    let (fresh, mut dead_letters, duplicates) = drop_known(&transaction, batch).await?;
    let (mut states, tenants) = lock_wallets(&transaction, &fresh).await?;
    let operations: Vec<Operation> = fresh
        .iter()
        .map(|(_, operation)| operation.clone())
        .collect();
    let applied = rules::apply(&mut states, &operations);
    write_operations(
        &transaction,
        batch.partition,
        &fresh,
        &applied.outcomes,
        now,
    )
    .await?;
    write_entries(&transaction, &applied.entries, &tenants).await?;
    let touched: HashSet<WalletId> = applied
        .entries
        .iter()
        .map(|entry| entry.wallet_id)
        .collect();
    let wallets = write_wallets(&transaction, &states, &touched, now).await?;
    let rejected: Vec<Operation> = batch
        .dead_letters
        .iter()
        .filter_map(|letter| letter.operation.clone())
        .collect();
    let mut events = events::for_batch(
        &operations,
        &applied.outcomes,
        &applied.entries,
        &tenants,
        now,
    );
    events.extend(events::for_rejected(&rejected, now));
    write_outbox(&transaction, &events, now).await?;
    dead_letters.extend(batch.dead_letters.iter().cloned());
    write_dead_letters(&transaction, batch, &dead_letters, now).await?;
    advance_position(&transaction, batch).await?;
    transaction.commit().await?;
    Ok(BatchReport {
        wallets,
        decided: operations.into_iter().zip(applied.outcomes).collect(),
        rejected,
        duplicates,
        processed_at: now,
    })
}

/// Locks the partition's position and checks that the batch starts there (fencing: a stale
/// owner's batch is refused).
async fn lock_position(client: &impl GenericClient, batch: &Batch) -> Result<(), StoreError> {
    let stored: i64 = client
        .query_one(
            &prepared(client, "SELECT next_offset FROM consumer_offsets WHERE topic = $1 AND partition = $2 FOR UPDATE").await?,
            &[&batch.topic, &batch.partition],
        )
        .await?
        .get(0);
    if stored != batch.from_offset {
        return Err(StoreError::Fenced {
            partition: batch.partition,
            expected: batch.from_offset,
            stored,
        });
    }
    Ok(())
}

async fn advance_position(client: &impl GenericClient, batch: &Batch) -> Result<(), StoreError> {
    client
        .execute(
            &prepared(
                client,
                "UPDATE consumer_offsets SET next_offset = $3 WHERE topic = $1 AND partition = $2",
            )
            .await?,
            &[&batch.topic, &batch.partition, &batch.next_offset],
        )
        .await?;
    Ok(())
}

/// Drops operations whose id is already stored or repeats earlier in the batch.
async fn drop_known(
    client: &impl GenericClient,
    batch: &Batch,
) -> Result<(Vec<(i64, Operation)>, Vec<DeadLetter>, usize), StoreError> {
    let (tenants, ids): (Vec<&str>, Vec<Uuid>) = batch
        .operations
        .iter()
        .map(|(_, operation)| (operation.tenant.as_str(), operation.id.0))
        .unzip();
    let rows = client
        .query(
            &prepared(
                client,
                "SELECT o.tenant, o.id, o.fingerprint FROM operations o
                 JOIN unnest($1::text[], $2::uuid[]) AS t(tenant, id) USING (tenant, id)",
            )
            .await?,
            &[&tenants, &ids],
        )
        .await?;
    let stored = rows
        .iter()
        .map(|row| {
            let id = ScopedId {
                tenant: row.get(0),
                id: OperationId(row.get(1)),
            };
            (id, row.get(2))
        })
        .collect();
    Ok(dedupe(&batch.operations, stored))
}

/// Keeps the first record of each id that is not stored yet, in offset order. A repeat with
/// the same content is a duplicate (a retried produce); one with other content is a reused
/// idempotency key, kept as a dead letter without blaming the operation the id belongs to.
/// Returns the fresh operations, the dead letters and the number of duplicates.
pub fn dedupe(
    operations: &[(i64, Operation)],
    mut seen: HashMap<ScopedId, String>,
) -> (Vec<(i64, Operation)>, Vec<DeadLetter>, usize) {
    let mut fresh = Vec::with_capacity(operations.len());
    let mut dead_letters = Vec::new();
    let mut duplicates = 0;
    for (offset, operation) in operations {
        let id = operation.scoped_id();
        match seen.get(&id) {
            Some(fingerprint) if *fingerprint == operation.fingerprint => duplicates += 1,
            Some(_) => dead_letters.push(DeadLetter {
                offset: *offset,
                reason: format!(
                    "IDEMPOTENCY_KEY_REUSED: operation {} of tenant {} already exists with other content",
                    operation.id, operation.tenant
                ),
                payload: None,
                operation: None,
            }),
            None => {
                seen.insert(id, operation.fingerprint.clone());
                fresh.push((*offset, operation.clone()));
            }
        }
    }
    (fresh, dead_letters, duplicates)
}

/// Locks the wallets the operations touch, in id order; their states, and their tenants for
/// the events.
async fn lock_wallets(
    client: &impl GenericClient,
    operations: &[(i64, Operation)],
) -> Result<(HashMap<WalletId, WalletState>, HashMap<WalletId, String>), StoreError> {
    let mut ids: Vec<Uuid> = operations
        .iter()
        .flat_map(|(_, operation)| {
            std::iter::once(operation.wallet_id).chain(operation.kind.target())
        })
        .map(|id| id.0)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = client
        .query(
            &prepared(client, "SELECT id, currency, balance::text, version, tenant FROM wallets WHERE id = ANY($1) ORDER BY id FOR UPDATE").await?,
            &[&ids],
        )
        .await?;
    let mut states = HashMap::with_capacity(rows.len());
    let mut tenants = HashMap::with_capacity(rows.len());
    for row in &rows {
        let id = WalletId(row.get(0));
        let currency: String = row.get(1);
        let balance: String = row.get(2);
        let state = WalletState {
            currency: Currency::parse(&currency)
                .map_err(|error| StoreError::Corrupt(error.to_string()))?,
            balance: decimal_from_db(&balance)
                .map_err(|error| StoreError::Corrupt(error.to_string()))?,
            version: row.get(3),
        };
        states.insert(id, state);
        tenants.insert(id, row.get(4));
    }
    Ok((states, tenants))
}

async fn write_operations(
    client: &impl GenericClient,
    partition: i32,
    operations: &[(i64, Operation)],
    outcomes: &[Outcome],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let count = operations.len();
    let (mut ids, mut wallets, mut types, mut amounts, mut targets) = (
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
    );
    let (mut statuses, mut reasons, mut balances, mut fingerprints, mut offsets, mut accepted) = (
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
    );
    let mut tenants = Vec::with_capacity(count);
    for ((offset, operation), outcome) in operations.iter().zip(outcomes) {
        tenants.push(operation.tenant.as_str());
        ids.push(operation.id.0);
        wallets.push(operation.wallet_id.0);
        types.push(operation.kind.operation_type().as_str());
        amounts.push(operation.amount.to_string());
        targets.push(operation.kind.target().map(|target| target.0));
        statuses.push(outcome.status().as_str());
        let (reason, balance_after) = match outcome {
            Outcome::Processed { balance_after } => (None, Some(balance_after)),
            Outcome::Failed {
                reason,
                balance_after,
            } => (Some(reason.as_str()), balance_after.as_ref()),
        };
        reasons.push(reason);
        balances.push(balance_after.map(|balance| balance.to_plain_string()));
        fingerprints.push(operation.fingerprint.as_str());
        offsets.push(*offset);
        accepted.push(operation.accepted_at);
    }
    client
        .execute(
            &prepared(client, "INSERT INTO operations (tenant, id, wallet_id, type, amount, to_wallet_id, status, reason, balance_after,
                                     fingerprint, partition, \"offset\", accepted_at, processed_at)
             SELECT tenant, id, wallet_id, type, amount::numeric, to_wallet_id, status, reason, balance_after::numeric,
                    fingerprint, $10, \"offset\", accepted_at, $13
             FROM unnest($14::text[], $1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::text[],
                         $8::text[], $9::text[], $11::bigint[], $12::timestamptz[])
                  AS t(tenant, id, wallet_id, type, amount, to_wallet_id, status, reason, balance_after, fingerprint,
                       \"offset\", accepted_at)").await?,
            &[
                &ids, &wallets, &types, &amounts, &targets, &statuses, &reasons, &balances, &fingerprints, &partition, &offsets,
                &accepted, &now, &tenants,
            ],
        )
        .await?;
    Ok(())
}

/// `tenants` holds every wallet the entries name: an entry's operation is its wallet's
/// tenant's, since a transfer never leaves a tenant.
async fn write_entries(
    client: &impl GenericClient,
    entries: &[super::types::Entry],
    tenants: &HashMap<WalletId, String>,
) -> Result<(), StoreError> {
    let wallets: Vec<Uuid> = entries.iter().map(|entry| entry.wallet_id.0).collect();
    let entry_tenants = entries
        .iter()
        .map(|entry| {
            tenants
                .get(&entry.wallet_id)
                .map(String::as_str)
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("entry for unlocked wallet {}", entry.wallet_id))
                })
        })
        .collect::<Result<Vec<&str>, StoreError>>()?;
    let versions: Vec<i64> = entries.iter().map(|entry| entry.version).collect();
    let operations: Vec<Uuid> = entries.iter().map(|entry| entry.operation_id.0).collect();
    let deltas: Vec<String> = entries
        .iter()
        .map(|entry| entry.delta.to_plain_string())
        .collect();
    let balances: Vec<String> = entries
        .iter()
        .map(|entry| entry.balance_after.to_plain_string())
        .collect();
    client
        .execute(
            &prepared(
                client,
                "INSERT INTO entries (wallet_id, version, operation_id, delta, balance_after, tenant)
             SELECT wallet_id, version, operation_id, delta::numeric, balance_after::numeric, tenant
             FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::text[], $5::text[], $6::text[])
                  AS t(wallet_id, version, operation_id, delta, balance_after, tenant)",
            )
            .await?,
            &[&wallets, &versions, &operations, &deltas, &balances, &entry_tenants],
        )
        .await?;
    Ok(())
}

async fn write_wallets(
    client: &impl GenericClient,
    states: &HashMap<WalletId, WalletState>,
    touched: &HashSet<WalletId>,
    now: DateTime<Utc>,
) -> Result<Vec<Wallet>, StoreError> {
    let mut ids = Vec::with_capacity(touched.len());
    let mut balances = Vec::with_capacity(touched.len());
    let mut versions = Vec::with_capacity(touched.len());
    for id in touched {
        let state = &states[id];
        ids.push(id.0);
        balances.push(state.balance.to_plain_string());
        versions.push(state.version);
    }
    let rows = client
        .query(
            &prepared(client, "UPDATE wallets w SET balance = t.balance::numeric, version = t.version, updated_at = $4
             FROM unnest($1::uuid[], $2::text[], $3::bigint[]) AS t(id, balance, version)
             WHERE w.id = t.id
             RETURNING w.id, w.currency, w.balance::text, w.version, w.created_at, w.updated_at, w.tenant").await?,
            &[&ids, &balances, &versions, &now],
        )
        .await?;
    rows.iter().map(wallet_from_row).collect()
}

async fn write_outbox(
    client: &impl GenericClient,
    events: &[Event],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = events.iter().map(|event| event.event_id).collect();
    let wallets: Vec<Uuid> = events.iter().map(|event| event.wallet_id.0).collect();
    let payloads = events
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<String>, _>>()
        .map_err(|error| StoreError::Corrupt(error.to_string()))?;
    // WITH ORDINALITY keeps the journal order in the ids the relay publishes by.
    client
        .execute(
            &prepared(
                client,
                "INSERT INTO outbox (event_id, wallet_id, payload, created_at)
                 SELECT event_id, wallet_id, payload, $4
                 FROM unnest($1::uuid[], $2::uuid[], $3::text[]) WITH ORDINALITY AS t(event_id, wallet_id, payload, n)
                 ORDER BY n",
            )
            .await?,
            &[&ids, &wallets, &payloads, &now],
        )
        .await?;
    Ok(())
}

async fn write_dead_letters(
    client: &impl GenericClient,
    batch: &Batch,
    dead_letters: &[DeadLetter],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if dead_letters.is_empty() {
        return Ok(());
    }
    let offsets: Vec<i64> = dead_letters.iter().map(|letter| letter.offset).collect();
    // PostgreSQL text cannot hold NUL, and a reason may quote raw input.
    let reasons: Vec<String> = dead_letters
        .iter()
        .map(|letter| letter.reason.replace('\0', ""))
        .collect();
    let payloads: Vec<Option<&[u8]>> = dead_letters
        .iter()
        .map(|letter| letter.payload.as_deref())
        .collect();
    let operations: Vec<Option<&Operation>> = dead_letters
        .iter()
        .map(|letter| letter.operation.as_ref())
        .collect();
    let tenants: Vec<Option<&str>> = operations
        .iter()
        .map(|operation| operation.map(|operation| operation.tenant.as_str()))
        .collect();
    let ids: Vec<Option<Uuid>> = operations
        .iter()
        .map(|operation| operation.map(|operation| operation.id.0))
        .collect();
    let wallets: Vec<Option<Uuid>> = operations
        .iter()
        .map(|operation| operation.map(|operation| operation.wallet_id.0))
        .collect();
    let accepted: Vec<Option<DateTime<Utc>>> = operations
        .iter()
        .map(|operation| operation.map(|operation| operation.accepted_at))
        .collect();
    client
        .execute(
            &prepared(client, "INSERT INTO dead_letters (topic, partition, \"offset\", reason, payload, recorded_at,
                                       tenant, operation_id, wallet_id, accepted_at)
             SELECT $1, $2, \"offset\", reason, payload, $6, tenant, operation_id, wallet_id, accepted_at
             FROM unnest($3::bigint[], $4::text[], $5::bytea[], $7::text[], $8::uuid[], $9::uuid[], $10::timestamptz[])
                  AS t(\"offset\", reason, payload, tenant, operation_id, wallet_id, accepted_at)
             ON CONFLICT DO NOTHING").await?,
            &[
                &batch.topic,
                &batch.partition,
                &offsets,
                &reasons,
                &payloads,
                &now,
                &tenants,
                &ids,
                &wallets,
                &accepted,
            ],
        )
        .await?;
    Ok(())
}

/// How many events wait in the outbox, and since when the oldest has.
pub async fn outbox_backlog(
    client: &impl tokio_postgres::GenericClient,
) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
    let row = client
        .query_one("SELECT count(*), min(created_at) FROM outbox", &[])
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// An event waiting in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub wallet_id: WalletId,
    pub payload: String,
}

/// Locks and returns the oldest events, in the order they were written. A second relay asking
/// meanwhile waits for this one's transaction rather than skipping ahead, which keeps every
/// wallet's events in order.
pub async fn oldest_events(
    client: &impl GenericClient,
    limit: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    let rows = client
        .query(
            &prepared(
                client,
                "SELECT id, wallet_id, payload FROM outbox ORDER BY id LIMIT $1 FOR UPDATE",
            )
            .await?,
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| OutboxRow {
            id: row.get(0),
            wallet_id: WalletId(row.get(1)),
            payload: row.get(2),
        })
        .collect())
}

pub async fn delete_events(client: &impl GenericClient, ids: &[i64]) -> Result<(), StoreError> {
    client
        .execute(
            &prepared(client, "DELETE FROM outbox WHERE id = ANY($1)").await?,
            &[&ids],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::money::Amount;
    use crate::ledger::types::{OperationKind, WalletId};

    fn operation(n: u128) -> Operation {
        Operation {
            tenant: "default".to_owned(),
            id: OperationId(Uuid::from_u128(n)),
            wallet_id: WalletId(Uuid::from_u128(1)),
            kind: OperationKind::Deposit,
            amount: Amount::parse("1").unwrap(),
            accepted_at: Utc::now(),
            fingerprint: "f".to_owned(),
        }
    }

    /// Proves splitting keeps every record once and the sub-batches tile the whole range.
    #[test]
    fn split_tiles_the_range_record_by_record() {
        let batch = Batch {
            topic: "t".to_owned(),
            partition: 0,
            from_offset: 10,
            next_offset: 16,
            operations: vec![(10, operation(1)), (13, operation(2))],
            dead_letters: vec![DeadLetter {
                offset: 12,
                reason: "bad".to_owned(),
                payload: None,
                operation: None,
            }],
        };
        let singles = batch.split();
        let ranges: Vec<(i64, i64)> = singles
            .iter()
            .map(|single| (single.from_offset, single.next_offset))
            .collect();
        assert_eq!(ranges, vec![(10, 11), (11, 13), (13, 16)]);
        assert_eq!(singles[1].dead_letters.len(), 1);
        assert_eq!(singles[2].operations[0].1.id, operation(2).id);
        let rejected = singles[2].rejected("boom");
        assert!(rejected.operations.is_empty());
        assert_eq!(rejected.dead_letters[0].offset, 13);
        assert!(rejected.dead_letters[0].reason.contains("boom"));
        assert_eq!((rejected.from_offset, rejected.next_offset), (13, 16));
    }

    fn with(n: u128, tenant: &str, fingerprint: &str) -> Operation {
        Operation {
            tenant: tenant.to_owned(),
            fingerprint: fingerprint.to_owned(),
            ..operation(n)
        }
    }

    /// Proves the first record of an id is the one applied, a later repeat with other content
    /// is a dead letter that names no operation, and the same id of another tenant is that
    /// tenant's own operation.
    #[test]
    fn dedupe_keeps_the_first_record_per_tenant_and_id() {
        let records = vec![
            (0, with(1, "acme", "first")),
            (1, with(1, "acme", "second")),
            (2, with(1, "acme", "first")),
            (3, with(1, "globex", "second")),
            (4, with(2, "acme", "stored")),
            (5, with(3, "acme", "other")),
        ];
        let stored = HashMap::from([
            (with(2, "acme", "").scoped_id(), "stored".to_owned()),
            (with(3, "acme", "").scoped_id(), "theirs".to_owned()),
        ]);
        let (fresh, dead_letters, duplicates) = dedupe(&records, stored);
        let kept: Vec<(i64, &str, &str)> = fresh
            .iter()
            .map(|(offset, operation)| {
                (
                    *offset,
                    operation.tenant.as_str(),
                    operation.fingerprint.as_str(),
                )
            })
            .collect();
        assert_eq!(kept, vec![(0, "acme", "first"), (3, "globex", "second")]);
        assert_eq!(duplicates, 2);
        let offsets: Vec<i64> = dead_letters.iter().map(|letter| letter.offset).collect();
        assert_eq!(offsets, vec![1, 5]);
        assert!(dead_letters.iter().all(|letter| letter.operation.is_none()
            && letter.reason.starts_with("IDEMPOTENCY_KEY_REUSED")));
    }

    /// Proves errors are classified by what they mean: resource, connection, operator,
    /// system, lock, conflict and read-only errors keep the batch; only a record's own data
    /// (data exceptions, constraint violations other than a unique key) is blamed.
    #[test]
    fn sqlstates_are_classified_by_meaning() {
        let retry = |code| match remedy_for_sqlstate(code) {
            Remedy::Retry(reason) => Some(reason.as_str()),
            Remedy::Reject => None,
        };
        for (code, reason) in [
            ("53100", "resources"),
            ("53200", "resources"),
            ("53300", "resources"),
            ("08006", "connection"),
            ("08001", "connection"),
            ("57P01", "operator_intervention"),
            ("57P03", "operator_intervention"),
            ("57014", "operator_intervention"),
            ("58030", "system"),
            ("55P03", "lock_timeout"),
            ("40001", "conflict"),
            ("40P01", "conflict"),
            ("23505", "conflict"),
            ("25006", "read_only"),
            ("25P03", "connection"),
            ("42P01", "unexpected"),
            ("XX000", "unexpected"),
        ] {
            assert_eq!(retry(code), Some(reason), "{code}");
        }
        for code in ["22003", "22P02", "23514", "23503", "23502"] {
            assert_eq!(remedy_for_sqlstate(code), Remedy::Reject, "{code}");
        }
        let unavailable = StoreError::Unavailable("pool timed out".to_owned());
        assert_eq!(unavailable.remedy(), Remedy::Retry(RetryReason::Connection));
        assert!(unavailable.is_transient());
        let corrupt = StoreError::Corrupt("bad currency".to_owned());
        assert_eq!(corrupt.remedy(), Remedy::Retry(RetryReason::Unexpected));
        assert!(!corrupt.is_transient());
    }
}
