//! A bank test in the spirit of Jepsen's: 100 funded wallets of two tenants, many concurrent
//! clients moving money with deposits, withdrawals and transfers, and reserving it with holds
//! each later captured to another wallet or voided, while a nemesis crashes,
//! restarts, pauses and flushes every part of the system. Clients retry each request with
//! the same idempotency key until it is acknowledged, as a real client would; some reuse a
//! key with other content, the two tenants use the same operation ids, and each probes the
//! other's wallets. Once the faults stop and the system has drained, the ledger in
//! PostgreSQL, the cache, the API and the events topic are checked against what the clients
//! logged (the README's guarantees).
//!
//! `bank` runs for `CHAOS_SECONDS` (default 180; `make chaos`); `bank_short` is the
//! same test for 30 seconds, part of the normal suite. The workload, the nemesis and the
//! checker have a file each; `takeover` holds two regression tests found by this one.

mod checker;
mod cluster;
mod ledger;
mod nemesis;
mod reads;
mod summary;
mod takeover;
mod workload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bigdecimal::{BigDecimal, ToPrimitive};
use futures::future::join_all;

use checker::Violations;
use cluster::Cluster;
use ledger::Ledger;
use summary::Summary;
use workload::{Client, ClientLog, Workload};

/// Wallets over both tenants.
const WALLETS: usize = 100;
/// Every wallet starts with 1000.00, in cents.
const INITIAL_CENTS: i64 = 100_000;
const CLIENTS: usize = 16;
const SERVERS: usize = 2;
const WORKERS: usize = 2;
const PARTITIONS: i32 = 8;
/// A client gives up on one attempt after this long and retries with the same key.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Faults a 180-second run must inject at least; shorter runs scale it down.
const FAULTS_PER_180_S: u64 = 50;

/// `wallet work` rebalances its partitions this often, and its lease on them lapses after
/// eight intervals of silence, at least 2 s: a pause longer than that hands its partitions to
/// the other worker, and the paused one wakes up as a stale owner.
const REBALANCE_INTERVAL_MS: u64 = 250;
const LEASE_MS: u64 = 2_000;

/// Proves the README's guarantees through `CHAOS_SECONDS` (default 180) of mixed load
/// under faults of every process and server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a 3-minute fault run: `make chaos`"]
async fn bank() {
    let seconds = std::env::var("CHAOS_SECONDS")
        .ok()
        .map(|text| {
            text.parse::<u64>()
                .expect("CHAOS_SECONDS is a number of seconds")
        })
        .unwrap_or(180);
    run(
        Duration::from_secs(seconds),
        FAULTS_PER_180_S * seconds / 180,
    )
    .await;
}

/// Proves the same as `bank`, for 30 seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bank_short() {
    // A Kafka restart takes 5-13 s on a busy 2-core machine, so two of them can fill most of
    // 30 s: the short run asks for fewer faults than the rate `bank` holds to.
    run(Duration::from_secs(30), 5).await;
}

async fn run(duration: Duration, faults_needed: u64) {
    let started = Instant::now();
    let mut cluster = Cluster::start();
    let workload = Arc::new(Workload::new(cluster.fund_tenants().await));
    eprintln!(
        "chaos: {WALLETS} wallets funded in {:.1}s; running {}s of load and faults",
        started.elapsed().as_secs_f64(),
        duration.as_secs()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(Client::new(n, workload.clone()).run(stop.clone())))
        .collect();
    let load_started = Instant::now();
    let until = load_started + duration;
    let nemesis = nemesis::run(&mut cluster, until, &workload.redis_losses).await;
    stop.store(true, Ordering::SeqCst);
    let mut logs: Vec<ClientLog> = join_all(clients)
        .await
        .into_iter()
        .map(|log| log.expect("a client task finished"))
        .collect();
    let load_seconds = load_started.elapsed().as_secs_f64();

    let settle_started = Instant::now();
    let db = ledger::connect(&cluster.stack.postgres.url()).await;
    let broker = cluster.stack.broker.address();
    let settled = ledger::settled(&db, &broker, PARTITIONS, duration).await;
    let settle_seconds = settle_started.elapsed().as_secs_f64();
    let mut violations = Violations::default();
    violations.nemesis(&nemesis);
    if !settled {
        violations.add(
            "not settled",
            "offsets did not reach the topic's end or the outbox did not drain".to_owned(),
        );
    }
    for log in &mut logs {
        violations.merge(std::mem::take(&mut log.violations));
    }
    let ledger = Ledger::load(&db).await;
    let check = checker::Check {
        ledger: &ledger,
        logs: &logs,
        tenants: &cluster.reconnect(&workload.tenants),
        redis_url: cluster.stack.redis.url(),
        broker,
    };
    let counts = check.all(&mut violations).await;
    // The operator's own audit must agree: a second reading of the same ledger.
    let audit = cluster
        .stack
        .wallet_command(&["verify"])
        .output()
        .expect("wallet verify runs");
    if !audit.status.success() {
        let report = String::from_utf8_lossy(&audit.stdout);
        violations.add("wallet verify", report.chars().take(4_000).collect());
    }
    let summary = Summary {
        duration,
        setup_seconds: started.elapsed().as_secs_f64() - settle_seconds,
        settle_seconds,
        load_seconds,
        faults_needed,
        counts: &counts,
        logs: &logs,
        nemesis: &nemesis,
        violations: &violations,
    }
    .to_string();
    eprintln!("{summary}");
    assert!(
        counts.acked > 0 && counts.processed > 0,
        "the load made progress\n{summary}"
    );
    assert!(
        nemesis.total() >= faults_needed,
        "only {} faults were injected\n{summary}",
        nemesis.total()
    );
    assert_eq!(violations.total(), 0, "violations found\n{summary}");
    drop(cluster);
}

fn amount(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// "12.34" → 1234.
fn cents(text: &str) -> Option<i64> {
    let value: BigDecimal = text.parse().ok()?;
    (value * BigDecimal::from(100)).to_i64()
}
