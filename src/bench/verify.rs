//! After the load: wait until every accepted operation is decided, then check the ledger
//! through the API — each operation exactly once, balances and what is held as expected,
//! versions gapless, nothing negative.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use bigdecimal::{BigDecimal, Zero};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::load::{new_histogram, BenchWallet, Sent};
use super::{BenchOptions, FUNDING};
use crate::ledger::types::OperationType;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryEntry {
    version: i64,
    operation_id: Uuid,
    wallet_id: Uuid,
    status: String,
    delta: String,
    balance_after: String,
    accepted_at: DateTime<Utc>,
    processed_at: DateTime<Utc>,
}

pub struct Verification {
    pub processed: u64,
    pub failed: u64,
    pub violations: BTreeMap<&'static str, u64>,
    pub processed_latency_us: Histogram<u64>,
    pub first_accepted: Option<DateTime<Utc>>,
    pub last_processed: Option<DateTime<Utc>>,
}

pub async fn verify(
    http: &reqwest::Client,
    options: &BenchOptions,
    wallets: &[BenchWallet],
    sent: &[Sent],
) -> anyhow::Result<Verification> {
    let mut expected_versions = vec![1i64; wallets.len()];
    for operation in sent {
        expected_versions[operation.source] += 1;
    }
    let mut sources: Vec<Vec<Uuid>> = vec![Vec::new(); wallets.len()];
    for operation in sent {
        sources[operation.source].push(operation.id);
    }
    let deadline = Instant::now() + Duration::from_secs(options.settle_timeout_s);
    let settled: Vec<bool> = stream::iter(wallets.iter().zip(expected_versions).zip(&sources))
        .map(|((wallet, expected), sources)| {
            settle(http, options, wallet.id, expected, sources, deadline)
        })
        .buffered(options.connections)
        .try_collect()
        .await?;
    // Read every wallet again only once all are settled: until then, transfers from wallets
    // still settling may land in a wallet that already has.
    let histories: Vec<Option<Settled>> = stream::iter(wallets.iter().zip(settled))
        .map(|(wallet, settled)| async move {
            if !settled {
                return anyhow::Ok(None);
            }
            let read = balance(http, options, wallet.id).await?;
            let entries = history(http, options, wallet.id).await?;
            Ok(Some(Settled {
                version: read.version,
                balance: read.balance,
                held: read.held,
                entries,
            }))
        })
        .buffered(options.connections)
        .try_collect()
        .await?;
    check(wallets, sent, &histories)
}

/// A wallet read after every accepted operation was decided.
struct Settled {
    version: i64,
    balance: String,
    held: String,
    entries: Vec<HistoryEntry>,
}

/// A wallet's body as the bench reads it.
struct Read {
    version: i64,
    balance: String,
    held: String,
}

/// Polls the wallet until its version reaches `expected` (its own operations plus the funding;
/// incoming transfers add more) and its history holds every operation it was the source of.
/// False when the deadline passed first.
async fn settle(
    http: &reqwest::Client,
    options: &BenchOptions,
    wallet: Uuid,
    expected: i64,
    sources: &[Uuid],
    deadline: Instant,
) -> anyhow::Result<bool> {
    loop {
        if balance(http, options, wallet).await?.version >= expected {
            let entries = history(http, options, wallet).await?;
            let seen: HashSet<Uuid> = entries.iter().map(|entry| entry.operation_id).collect();
            if sources.iter().all(|id| seen.contains(id)) {
                return Ok(true);
            }
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn balance(
    http: &reqwest::Client,
    options: &BenchOptions,
    wallet: Uuid,
) -> anyhow::Result<Read> {
    let body: Value = http
        .get(format!("{}/api/v1/wallets/{wallet}", options.url))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let version = body["version"].as_i64().context("version in the balance")?;
    let text = |field: &str| {
        body[field]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("{field} in the balance"))
    };
    Ok(Read {
        version,
        balance: text("balance")?,
        held: text("held")?,
    })
}

async fn history(
    http: &reqwest::Client,
    options: &BenchOptions,
    wallet: Uuid,
) -> anyhow::Result<Vec<HistoryEntry>> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!(
            "{}/api/v1/wallets/{wallet}/operations?limit=1000",
            options.url
        );
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let items: Vec<HistoryEntry> =
            serde_json::from_value(page["items"].clone()).context("history items")?;
        entries.extend(items);
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(entries),
        }
    }
}

/// Counts of each kind of violation found.
type Violations = BTreeMap<&'static str, u64>;

fn violation(violations: &mut Violations, kind: &'static str) {
    *violations.entry(kind).or_default() += 1;
}

/// (operation, wallet position) → the journal entries found for it.
type Found<'a> = HashMap<(Uuid, usize), Vec<&'a HistoryEntry>>;

fn check(
    wallets: &[BenchWallet],
    sent: &[Sent],
    histories: &[Option<Settled>],
) -> anyhow::Result<Verification> {
    let mut verification = Verification {
        processed: 0,
        failed: 0,
        violations: BTreeMap::new(),
        processed_latency_us: new_histogram()?,
        first_accepted: None,
        last_processed: None,
    };
    let mut violations = Violations::new();
    let found = journal(wallets, histories, &mut violations);
    // The bench runs with one token, so every wallet it reads is of one tenant, where wallet
    // ids are unique.
    let index: HashMap<Uuid, usize> = wallets
        .iter()
        .enumerate()
        .map(|(position, wallet)| (wallet.id, position))
        .collect();
    let funding: BigDecimal = FUNDING.parse()?;
    let mut expected = Expected {
        balances: vec![funding; wallets.len()],
        held: vec![BigDecimal::zero(); wallets.len()],
    };
    for operation in sent {
        let Some(source_entries) = found.get(&(operation.id, operation.source)) else {
            if histories[operation.source].is_some() {
                violation(&mut violations, "accepted operation never applied");
            }
            continue;
        };
        if source_entries.len() != 1 {
            violation(&mut violations, "operation applied more than once");
        }
        let entry = source_entries[0];
        if index.get(&entry.wallet_id) != Some(&operation.source) {
            violation(&mut violations, "operation recorded on the wrong wallet");
        }
        record_timing(&mut verification, entry);
        check_applied(
            operation,
            entry,
            &found,
            &mut expected,
            &mut verification,
            &mut violations,
        )?;
    }
    for (position, history) in histories.iter().enumerate() {
        if let Some(Settled { balance, held, .. }) = history {
            if balance.parse::<BigDecimal>().ok().as_ref() != Some(&expected.balances[position]) {
                violation(
                    &mut violations,
                    "balance differs from the processed operations",
                );
            }
            if held.parse::<BigDecimal>().ok().as_ref() != Some(&expected.held[position]) {
                violation(&mut violations, "held differs from the processed holds");
            }
        }
    }
    verification.violations = violations;
    Ok(verification)
}

/// Every settled wallet's entries by operation, checking each history on the way: versions
/// gapless, no negative balance, the funding deposit present.
fn journal<'a>(
    wallets: &[BenchWallet],
    histories: &'a [Option<Settled>],
    violations: &mut Violations,
) -> Found<'a> {
    let mut found = Found::new();
    for (position, history) in histories.iter().enumerate() {
        let Some(Settled {
            version, entries, ..
        }) = history
        else {
            violation(violations, "wallet did not settle in time");
            continue;
        };
        let mut versions: Vec<i64> = entries.iter().map(|entry| entry.version).collect();
        versions.sort_unstable();
        if versions != (1..=*version).collect::<Vec<i64>>() {
            violation(violations, "versions not gapless");
        }
        for entry in entries {
            if entry
                .balance_after
                .parse::<BigDecimal>()
                .map_or(true, |balance| balance < BigDecimal::zero())
            {
                violation(violations, "negative balance");
            }
            found
                .entry((entry.operation_id, position))
                .or_default()
                .push(entry);
        }
        if !entries
            .iter()
            .any(|entry| entry.operation_id == wallets[position].funding)
        {
            violation(violations, "funding deposit missing");
        }
    }
    found
}

/// Widens the run's window of acceptance and processing, and records the entry's latency.
fn record_timing(verification: &mut Verification, entry: &HistoryEntry) {
    verification.first_accepted = verification
        .first_accepted
        .min(Some(entry.accepted_at))
        .or(Some(entry.accepted_at));
    verification.last_processed = verification.last_processed.max(Some(entry.processed_at));
    let latency = (entry.processed_at - entry.accepted_at)
        .num_microseconds()
        .unwrap_or(0)
        .max(1) as u64;
    verification.processed_latency_us.saturating_record(latency);
}

/// What the processed operations leave in each wallet, by wallet position.
struct Expected {
    balances: Vec<BigDecimal>,
    held: Vec<BigDecimal>,
}

/// Checks what the operation's source entry moved, and adds it (and a transfer's or capture's
/// credit) to the balances expected, and what a hold reserves or its settlement releases to
/// what is expected to be held.
fn check_applied(
    operation: &Sent,
    entry: &HistoryEntry,
    found: &Found,
    expected: &mut Expected,
    verification: &mut Verification,
    violations: &mut Violations,
) -> anyhow::Result<()> {
    let delta: BigDecimal = entry.delta.parse()?;
    if entry.status != "PROCESSED" {
        verification.failed += 1;
        if !delta.is_zero() {
            violation(violations, "failed operation moved money");
        }
        return Ok(());
    }
    verification.processed += 1;
    let signed = operation
        .operation_type
        .effect()
        .source
        .signed(&operation.amount);
    if delta != signed {
        violation(violations, "entry delta differs from the operation");
    }
    expected.balances[operation.source] += &signed;
    let held = &mut expected.held[operation.source];
    match operation.operation_type {
        OperationType::Hold => *held += &operation.amount,
        OperationType::Capture | OperationType::Void => *held -= &operation.amount,
        OperationType::Deposit
        | OperationType::Withdraw
        | OperationType::Transfer
        | OperationType::Expire => {}
    }
    if let Some(target) = operation.target {
        match found.get(&(operation.id, target)).map(Vec::len) {
            Some(1) => expected.balances[target] += &operation.amount,
            Some(_) => violation(violations, "transfer credited more than once"),
            None => violation(violations, "transfer never credited"),
        }
    }
    Ok(())
}
