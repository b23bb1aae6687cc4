//! `wallet verify`: an offline audit of the ledger, read in one read-only snapshot and streamed
//! page by page through server-side portals, so memory stays bounded however large the ledger.

pub mod checks;
mod report;

use std::str::FromStr;

use anyhow::Context;
use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::{Client, IsolationLevel, Row, Transaction};

pub use checks::Violation;
use checks::{EntryLink, OperationJournal, PreviousEntry, WalletJournal};

/// Rows fetched per round trip.
const PAGE_ROWS: i32 = 5_000;
/// Violations kept for the report; beyond this they are only counted.
const VIOLATIONS_KEPT_MAX: usize = 10_000;

/// Wallets are named `tenant/id`: an id is unique only within its tenant.
const WALLETS: &str =
    "SELECT w.tenant || '/' || w.id::text, w.balance::text, w.version, count(e.version),
        coalesce(sum(e.delta), 0)::text, coalesce(min(e.version), 0), coalesce(max(e.version), 0),
        w.held::text, w.overdraft_limit::text,
        (SELECT coalesce(sum(h.amount - h.captured), 0) FROM holds h
          WHERE h.tenant = w.tenant AND h.wallet_id = w.id AND h.state = 'OPEN')::text
     FROM wallets w LEFT JOIN entries e ON e.tenant = w.tenant AND e.wallet_id = w.id
     GROUP BY w.tenant, w.id ORDER BY w.tenant, w.id";
const OPERATIONS: &str =
    "SELECT o.id::text, o.type, o.status, coalesce(o.amount, 0)::text, count(e.version),
        coalesce(sum(e.delta), 0)::text, coalesce(sum(abs(e.delta)), 0)::text,
        o.to_wallet_id IS NOT NULL
     FROM operations o LEFT JOIN entries e ON e.tenant = o.tenant AND e.operation_id = o.id
     GROUP BY o.tenant, o.id ORDER BY o.tenant, o.id";
/// Every entry with the one before it in its wallet's versions, and whether it lies on a
/// wallet its operation names (in the entry's tenant, which is its operation's).
const ENTRIES: &str = "SELECT e.tenant || '/' || e.wallet_id::text, e.version, e.delta::text,
        e.balance_after::text, e.recorded_at, lag(e.version) OVER w,
        (lag(e.balance_after) OVER w)::text, lag(e.recorded_at) OVER w,
        coalesce(o.id IS NULL OR e.wallet_id = o.wallet_id OR e.wallet_id = o.to_wallet_id, false)
     FROM entries e LEFT JOIN operations o ON o.tenant = e.tenant AND o.id = e.operation_id
     WINDOW w AS (PARTITION BY e.tenant, e.wallet_id ORDER BY e.version)
     ORDER BY e.tenant, e.wallet_id, e.version";
/// Entries missing their operation or their wallet: no foreign key stops them (see migration
/// 0008), the batch transaction that writes them does.
const ORPHAN_ENTRIES: &str = "SELECT e.tenant || '/' || e.wallet_id::text, e.version,
        e.operation_id::text,
        EXISTS (SELECT 1 FROM operations o WHERE o.tenant = e.tenant AND o.id = e.operation_id),
        EXISTS (SELECT 1 FROM wallets w WHERE w.tenant = e.tenant AND w.id = e.wallet_id)
     FROM entries e
     WHERE NOT EXISTS (SELECT 1 FROM operations o WHERE o.tenant = e.tenant AND o.id = e.operation_id)
        OR NOT EXISTS (SELECT 1 FROM wallets w WHERE w.tenant = e.tenant AND w.id = e.wallet_id)
     ORDER BY e.tenant, e.wallet_id, e.version";

/// What the audit found, and what it saw that is worth an operator's look but is no violation.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    pub wallets: u64,
    pub operations: u64,
    pub entries: u64,
    pub violation_count: u64,
    pub violations: Vec<Violation>,
    pub positions: Vec<Position>,
    pub outbox_rows: i64,
    pub outbox_oldest: Option<DateTime<Utc>>,
    pub dead_letters: i64,
}

/// A stored consumer position.
#[derive(Debug, Clone, Serialize)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

impl Audit {
    pub fn record(&mut self, found: Vec<Violation>) {
        self.violation_count += found.len() as u64;
        let room = VIOLATIONS_KEPT_MAX.saturating_sub(self.violations.len());
        self.violations.extend(found.into_iter().take(room));
    }
}

fn decimal(row: &Row, column: usize) -> anyhow::Result<BigDecimal> {
    let text: String = row.try_get(column)?;
    BigDecimal::from_str(&text).with_context(|| format!("not a decimal: {text}"))
}

/// Runs `sql` through a portal and hands each row to `each`, a page at a time.
async fn stream(
    transaction: &Transaction<'_>,
    sql: &str,
    mut each: impl FnMut(&Row) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let portal = transaction.bind(sql, &[]).await?;
    loop {
        let rows = transaction.query_portal(&portal, PAGE_ROWS).await?;
        for row in &rows {
            each(row)?;
        }
        if rows.len() < PAGE_ROWS as usize {
            return Ok(());
        }
    }
}

/// The number of rows the audit will read, for a progress bar.
pub async fn size(client: &Client) -> anyhow::Result<u64> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM wallets) + (SELECT count(*) FROM operations)
                 + (SELECT count(*) FROM entries)",
            &[],
        )
        .await
        .context("counting wallets and operations")?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// Audits the ledger in one read-only snapshot; `progress` hears of every row read.
pub async fn run(client: &mut Client, progress: impl Fn(u64)) -> anyhow::Result<Audit> {
    let transaction = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .context("starting a read-only snapshot")?;
    let mut audit = Audit::default();
    stream(&transaction, WALLETS, |row| {
        let wallet = WalletJournal {
            id: row.try_get(0)?,
            balance: decimal(row, 1)?,
            version: row.try_get(2)?,
            entries: row.try_get(3)?,
            entries_sum: decimal(row, 4)?,
            lowest_version: row.try_get(5)?,
            highest_version: row.try_get(6)?,
            held: decimal(row, 7)?,
            overdraft_limit: decimal(row, 8)?,
            open_holds_remaining: decimal(row, 9)?,
        };
        audit.wallets += 1;
        audit.record(checks::check_wallet(&wallet));
        progress(1);
        Ok(())
    })
    .await
    .context("auditing wallets")?;
    stream(&transaction, OPERATIONS, |row| {
        let operation = OperationJournal {
            id: row.try_get(0)?,
            kind: row.try_get(1)?,
            status: row.try_get(2)?,
            amount: decimal(row, 3)?,
            entries: row.try_get(4)?,
            entries_sum: decimal(row, 5)?,
            entries_moved: decimal(row, 6)?,
            has_target: row.try_get(7)?,
        };
        audit.operations += 1;
        audit.record(checks::check_operation(&operation));
        progress(1);
        Ok(())
    })
    .await
    .context("auditing operations")?;
    stream(&transaction, ENTRIES, |row| {
        audit.entries += 1;
        audit.record(checks::check_entry(&entry_link(row)?));
        progress(1);
        Ok(())
    })
    .await
    .context("auditing the journal")?;
    stream(&transaction, ORPHAN_ENTRIES, |row| {
        let wallet: String = row.try_get(0)?;
        let version: i64 = row.try_get(1)?;
        let operation: String = row.try_get(2)?;
        let (has_operation, has_wallet): (bool, bool) = (row.try_get(3)?, row.try_get(4)?);
        let subject = format!("entry {wallet}/{version}");
        let mut found = Vec::new();
        if !has_operation {
            found.push(Violation {
                subject: subject.clone(),
                check: "every entry has its operation",
                expected: format!("operation {operation}"),
                found: "no such operation".to_owned(),
            });
        }
        if !has_wallet {
            found.push(Violation {
                subject,
                check: "every entry has its wallet",
                expected: format!("wallet {wallet}"),
                found: "no such wallet".to_owned(),
            });
        }
        audit.record(found);
        Ok(())
    })
    .await
    .context("auditing entries")?;
    read_backlog(&transaction, &mut audit).await?;
    transaction.commit().await?;
    Ok(audit)
}

fn entry_link(row: &Row) -> anyhow::Result<EntryLink> {
    let previous = match row.try_get::<_, Option<i64>>(5)? {
        Some(version) => Some(PreviousEntry {
            version,
            balance_after: decimal(row, 6)?,
            recorded_at: row.try_get(7)?,
        }),
        None => None,
    };
    Ok(EntryLink {
        wallet: row.try_get(0)?,
        version: row.try_get(1)?,
        delta: decimal(row, 2)?,
        balance_after: decimal(row, 3)?,
        recorded_at: row.try_get(4)?,
        previous,
        on_its_operations_wallets: row.try_get(8)?,
    })
}

async fn read_backlog(transaction: &Transaction<'_>, audit: &mut Audit) -> anyhow::Result<()> {
    let (rows, oldest) = crate::ledger::store::outbox_backlog(transaction).await?;
    audit.outbox_rows = rows;
    audit.outbox_oldest = oldest;
    audit.dead_letters = transaction
        .query_one("SELECT count(*) FROM dead_letters", &[])
        .await
        .context("counting dead letters")?
        .get(0);
    audit.positions = positions(transaction).await?;
    Ok(())
}

/// Every stored consumer position.
pub async fn positions(
    client: &impl tokio_postgres::GenericClient,
) -> anyhow::Result<Vec<Position>> {
    let rows = client
        .query(
            "SELECT topic, partition, next_offset FROM consumer_offsets ORDER BY topic, partition",
            &[],
        )
        .await
        .context("reading consumer positions")?;
    Ok(rows
        .iter()
        .map(|row| Position {
            topic: row.get(0),
            partition: row.get(1),
            next_offset: row.get(2),
        })
        .collect())
}
