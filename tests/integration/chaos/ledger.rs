//! PostgreSQL's view of the run once the system settled, amounts in cents, keyed by the
//! operation's tenant and id.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use uuid::Uuid;

use crate::harness::eventually;

/// An operation's identity: its tenant and its id.
pub type OperationKey = (String, Uuid);

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connects to PostgreSQL");
    tokio::spawn(connection);
    client
}

/// Waits until every record on the operations topic is applied and the outbox is empty.
pub async fn settled(
    db: &tokio_postgres::Client,
    broker: &str,
    partitions: i32,
    duration: Duration,
) -> bool {
    let kafka = ClientBuilder::new(vec![broker.to_owned()])
        .build()
        .await
        .expect("connects to the broker");
    let mut clients = Vec::new();
    for partition in 0..partitions {
        clients.push(
            kafka
                .partition_client("wallet-operations", partition, UnknownTopicHandling::Error)
                .await
                .expect("partition client"),
        );
    }
    let deadline = Duration::from_secs(120) + duration / 2;
    let last = RefCell::new(String::new());
    let done = eventually(deadline, || async {
        let mut ends = Vec::new();
        for partition in &clients {
            match partition.get_offset(OffsetAt::Latest).await {
                Ok(end) => ends.push(end),
                Err(_) => return false,
            }
        }
        let Ok(rows) = db
            .query(
                "SELECT partition, next_offset FROM consumer_offsets WHERE topic = 'wallet-operations'",
                &[],
            )
            .await
        else {
            return false;
        };
        let stored: HashMap<i32, i64> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        let Ok(outbox) = db.query_one("SELECT count(*) FROM outbox", &[]).await else {
            return false;
        };
        let outbox: i64 = outbox.get(0);
        let behind: Vec<String> = ends
            .iter()
            .enumerate()
            .filter(|(partition, end)| stored.get(&(*partition as i32)).copied().unwrap_or(0) != **end)
            .map(|(partition, end)| {
                format!("p{partition} at {:?} of {end}", stored.get(&(partition as i32)))
            })
            .collect();
        *last.borrow_mut() = format!("behind: {behind:?}, outbox: {outbox}");
        behind.is_empty() && outbox == 0
    })
    .await;
    if !done {
        eprintln!("chaos: not settled after {deadline:?}: {}", last.borrow());
    }
    done
}

pub struct StoredOperation {
    pub wallet: Uuid,
    pub kind: String,
    /// What it moved (a VOID: what it released); 0 for one that named no amount and failed.
    pub cents: i64,
    pub target: Option<Uuid>,
    /// The hold it placed (a HOLD's own id) or settled.
    pub hold: Option<Uuid>,
    pub status: String,
    pub reason: Option<String>,
    pub offset: i64,
}

pub struct Entry {
    pub wallet: Uuid,
    pub version: i64,
    pub operation: OperationKey,
    pub delta: i64,
    pub balance_after: i64,
}

/// A hold as stored.
pub struct StoredHold {
    pub wallet: Uuid,
    pub cents: i64,
    pub captured: i64,
    pub state: String,
}

/// PostgreSQL's view once the system settled, amounts in cents.
pub struct Ledger {
    pub operations: HashMap<OperationKey, StoredOperation>,
    pub entries: Vec<Entry>,
    /// Wallet → (balance, version).
    pub wallets: HashMap<Uuid, (i64, i64)>,
    /// Wallet → what it holds.
    pub held: HashMap<Uuid, i64>,
    pub holds: HashMap<OperationKey, StoredHold>,
    pub dead_letters: Vec<DeadLetter>,
}

/// A record kept as a dead letter.
#[derive(Debug)]
pub enum DeadLetter {
    /// An operation PostgreSQL refused; `None` for a record that names none.
    Refused(Option<OperationKey>),
    /// A record that reused an applied operation's id with other content.
    Reused(OperationKey),
}

impl Ledger {
    pub async fn load(db: &tokio_postgres::Client) -> Ledger {
        let operations = db
            .query(
                "SELECT tenant, id, wallet_id, type, (coalesce(amount, 0) * 100)::bigint, to_wallet_id,
                        status, reason, \"offset\", hold_id
                 FROM operations",
                &[],
            )
            .await
            .expect("operations")
            .iter()
            .map(|row| {
                (
                    (row.get(0), row.get(1)),
                    StoredOperation {
                        wallet: row.get(2),
                        kind: row.get(3),
                        cents: row.get(4),
                        target: row.get(5),
                        status: row.get(6),
                        reason: row.get(7),
                        offset: row.get(8),
                        hold: row.get(9),
                    },
                )
            })
            .collect();
        let entries = db
            .query(
                "SELECT wallet_id, version, tenant, operation_id, (delta * 100)::bigint,
                        (balance_after * 100)::bigint
                 FROM entries ORDER BY wallet_id, version",
                &[],
            )
            .await
            .expect("entries")
            .iter()
            .map(|row| Entry {
                wallet: row.get(0),
                version: row.get(1),
                operation: (row.get(2), row.get(3)),
                delta: row.get(4),
                balance_after: row.get(5),
            })
            .collect();
        let wallet_rows = db
            .query(
                "SELECT id, (balance * 100)::bigint, version, (held * 100)::bigint FROM wallets",
                &[],
            )
            .await
            .expect("wallets");
        let wallets = wallet_rows
            .iter()
            .map(|row| (row.get(0), (row.get(1), row.get(2))))
            .collect();
        let held = wallet_rows
            .iter()
            .map(|row| (row.get(0), row.get(3)))
            .collect();
        let holds = db
            .query(
                "SELECT tenant, hold_id, wallet_id, (amount * 100)::bigint, (captured * 100)::bigint,
                        state
                 FROM holds",
                &[],
            )
            .await
            .expect("holds")
            .iter()
            .map(|row| {
                let hold = StoredHold {
                    wallet: row.get(2),
                    cents: row.get(3),
                    captured: row.get(4),
                    state: row.get(5),
                };
                ((row.get(0), row.get(1)), hold)
            })
            .collect();
        let dead_letters = db
            .query("SELECT tenant, operation_id, reason FROM dead_letters", &[])
            .await
            .expect("dead letters")
            .iter()
            .map(|row| {
                let tenant: Option<String> = row.get(0);
                let id: Option<Uuid> = row.get(1);
                let reason: String = row.get(2);
                match (tenant.zip(id), reused_operation(&reason)) {
                    (None, Some(reused)) => DeadLetter::Reused(reused),
                    (refused, _) => DeadLetter::Refused(refused),
                }
            })
            .collect();
        Ledger {
            operations,
            entries,
            wallets,
            held,
            holds,
            dead_letters,
        }
    }

    /// Operation → its entries as (wallet, version, delta).
    pub fn entries_by_operation(&self) -> HashMap<&OperationKey, Vec<(Uuid, i64, i64)>> {
        let mut by_operation: HashMap<&OperationKey, Vec<(Uuid, i64, i64)>> = HashMap::new();
        for entry in &self.entries {
            by_operation.entry(&entry.operation).or_default().push((
                entry.wallet,
                entry.version,
                entry.delta,
            ));
        }
        by_operation
    }
}

/// The tenant and id a dead letter's reason names when its record reused an applied id with
/// other content: such a record is kept without them, so that the applied operation's status
/// is not taken for it.
fn reused_operation(reason: &str) -> Option<OperationKey> {
    let rest = reason.strip_prefix("IDEMPOTENCY_KEY_REUSED: operation ")?;
    let (id, rest) = rest.split_once(" of tenant ")?;
    let (tenant, _) = rest.split_once(' ')?;
    Some((tenant.to_owned(), Uuid::parse_str(id).ok()?))
}
