//! A bank test in the spirit of Jepsen's: 100 funded wallets, many concurrent clients moving
//! money with deposits, withdrawals and transfers, while a nemesis crashes, restarts, pauses
//! and flushes every part of the system. Clients retry each request with the same idempotency
//! key until it is acknowledged, as a real client would, and log what was acknowledged in
//! order. Once the faults stop and the system has drained, the ledger in PostgreSQL, the
//! cache, the API and the events topic are checked against that log (DESIGN.md section 7).
//!
//! `bank` runs for `WALLET_CHAOS_SECONDS` (default 180; `make chaos`); `bank_short` is the
//! same test for 30 seconds, part of the normal suite.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bigdecimal::{BigDecimal, ToPrimitive};
use futures::future::join_all;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::client::{Api, System};
use crate::harness::{eventually, Process, Server, Stack};

const WALLETS: usize = 100;
/// Every wallet starts with 1000.00, in cents.
const INITIAL_CENTS: i64 = 100_000;
const CLIENTS: usize = 16;
/// Clients work on this many wallets at a time, redrawn every `EPOCH`.
const ACTIVE_WALLETS: usize = 30;
const EPOCH: Duration = Duration::from_secs(2);
const SERVERS: usize = 2;
const WORKERS: usize = 2;
const PARTITIONS: i32 = 8;
/// A client gives up on one attempt after this long and retries with the same key.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Faults a 180-second run must inject at least; shorter runs scale it down.
const FAULTS_PER_180_S: u64 = 50;
/// The namespace the API derives an operation id from `walletId:Idempotency-Key` with (v5),
/// the contract of DESIGN.md section 3; acknowledged ids are checked against it.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6a0f_5e2c_8d1b_4c7a_9b3e_2f41_d8c6_a705);

/// `wallet work` rebalances its partitions this often, and its lease on them lapses after
/// eight intervals of silence, at least 2 s: a pause longer than that hands its partitions to
/// the other worker, and the paused one wakes up as a stale owner.
const REBALANCE_INTERVAL_MS: u64 = 250;
const LEASE_MS: u64 = 2_000;

/// Proves the guarantees of DESIGN.md section 7 through `WALLET_CHAOS_SECONDS` (default 180)
/// of mixed load under faults of every process and server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a 3-minute fault run: `make chaos`"]
async fn bank() {
    let seconds = std::env::var("WALLET_CHAOS_SECONDS")
        .ok()
        .map(|text| {
            text.parse::<u64>()
                .expect("WALLET_CHAOS_SECONDS is a number of seconds")
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

/// Proves a worker paused for longer than its lease loses its partitions to the live worker,
/// which goes on applying operations meanwhile, and that once resumed it rejoins and nothing
/// is applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_worker_loses_its_partitions() {
    let system = System::start(8);
    let second = system.stack.spawn_wallet("work-2", &["work"], &[]);
    let db = system.database().await;
    let holdings = || async {
        let rows = db
            .query(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2
                   AND classid = 1463897168::oid GROUP BY pid ORDER BY count(*)",
                &[],
            )
            .await
            .expect("locks");
        rows.iter()
            .map(|row| row.get::<_, i64>(0))
            .collect::<Vec<i64>>()
    };
    let split = eventually(Duration::from_secs(15), || async {
        holdings().await == [4, 4]
    })
    .await;
    assert!(split, "two workers hold four partitions each");
    let api = &system.api;
    let wallets: Vec<String> = join_all((0..16).map(|_| api.new_wallet())).await;
    second.send_signal(libc::SIGSTOP);
    let paused = Instant::now();
    let took_over = eventually(Duration::from_secs(10), || async {
        holdings().await == [8]
    })
    .await;
    assert!(
        took_over,
        "the live worker owns all eight partitions while the other is paused: {:?}",
        holdings().await
    );
    eprintln!("taken over {:?} after the pause began", paused.elapsed());
    for wallet in &wallets {
        api.fund(wallet, "1.00").await;
    }
    second.send_signal(libc::SIGCONT);
    let rejoined = eventually(Duration::from_secs(15), || async {
        holdings().await == [4, 4]
    })
    .await;
    assert!(
        rejoined,
        "the resumed worker rejoins: {:?}",
        holdings().await
    );
    for wallet in &wallets {
        api.fund(wallet, "2.00").await;
        let balance = api.balance(wallet).await;
        assert_eq!(balance.body["balance"], "3.00", "{:?}", balance.body);
        assert_eq!(balance.body["version"], 2, "{:?}", balance.body);
    }
    let stored: i64 = db
        .query_one("SELECT count(*) FROM entries", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 32, "each deposit has exactly one entry");
}

/// Proves the cache catches up with a batch whose worker died between its commit and its own
/// cache write (killed in that window, or stopped mid-commit when its partition moved), the
/// failure `bank` found: the batch is committed here exactly as such a worker leaves it, and
/// the next worker must bring Redis to the committed balance although the partition has
/// nothing left to consume and the wallet sees no further operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_catches_up_with_a_batch_whose_worker_died() {
    let mut system = System::start(1);
    let api = system.api.clone();
    let account = api.new_wallet().await;
    api.fund(&account, "1.00").await;
    assert_eq!(api.balance(&account).await.body["version"], 1);
    system.worker.kill();
    let operation = api
        .submit_accepted(&crate::client::deposit(&account, "2.00"))
        .await;
    let config = ::wallet::config::DatabaseConfig {
        url: system.stack.postgres.url(),
        ..Default::default()
    };
    let pool = ::wallet::ledger::database::pool(&config).expect("pool");
    let mut client = ::wallet::ledger::database::client(&pool)
        .await
        .expect("a connection");
    let position = ::wallet::ledger::store::next_offset(&client, &system.stack.operations_topic, 0)
        .await
        .expect("the stored position");
    let kafka = ClientBuilder::new(vec![system.stack.broker.address()])
        .build()
        .await
        .expect("connects to the broker");
    let partition = kafka
        .partition_client(
            &system.stack.operations_topic,
            0,
            UnknownTopicHandling::Error,
        )
        .await
        .expect("partition");
    let (records, _) = partition
        .fetch_records(position, 1..1_000_000, 100)
        .await
        .expect("fetch");
    let operations: Vec<(i64, ::wallet::ledger::types::Operation)> = records
        .into_iter()
        .filter(|record| record.offset >= position)
        .map(|record| {
            let value = record.record.value.expect("a value");
            let operation = ::wallet::ingest::codec::decode(&value).expect("an operation");
            (record.offset, operation)
        })
        .collect();
    assert_eq!(operations.len(), 1, "the deposit waits on the topic");
    assert_eq!(operations[0].1.id.to_string(), operation);
    let batch = ::wallet::ledger::store::Batch {
        topic: system.stack.operations_topic.clone(),
        partition: 0,
        from_offset: position,
        next_offset: operations[0].0 + 1,
        operations,
        dead_letters: Vec::new(),
    };
    ::wallet::ledger::store::apply_batch(&mut client, &batch, chrono::Utc::now())
        .await
        .expect("the batch commits");
    let stale = api.balance(&account).await;
    assert_eq!(
        (
            stale.body["version"].as_i64(),
            stale.body["balance"].as_str()
        ),
        (Some(1), Some("1.00")),
        "the cache still holds the balance from before the batch"
    );
    system.worker.start();
    let converged = eventually(Duration::from_secs(10), || async {
        let balance = api.balance(&account).await;
        balance.body["version"] == 2 && balance.body["balance"] == "3.00"
    })
    .await;
    assert!(
        converged,
        "the cache converges to the committed balance: {:?}",
        api.balance(&account).await.body
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    WorkerKill,
    WorkerPause,
    ServerKill,
    RedisRestart,
    RedisFlush,
    BrokerRestart,
    BrokerKill,
    PostgresRestart,
    /// A worker stopped while it holds a transaction open (a batch, or the relay's round).
    WorkerPauseInTransaction,
    /// PostgreSQL refuses writes of operations for a while: disk full, out of memory, too
    /// many connections, read-only.
    PostgresResourceError,
}

const FAULTS: [Fault; 10] = [
    Fault::WorkerKill,
    Fault::WorkerPause,
    Fault::ServerKill,
    Fault::RedisRestart,
    Fault::RedisFlush,
    Fault::BrokerRestart,
    Fault::BrokerKill,
    Fault::PostgresRestart,
    Fault::WorkerPauseInTransaction,
    Fault::PostgresResourceError,
];

/// SQLSTATEs `PostgresResourceError` raises: none may turn an operation into a dead letter.
const RESOURCE_ERRORS: [&str; 4] = ["53100", "53200", "53300", "25006"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Deposit,
    Withdraw,
    Transfer,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Deposit => "DEPOSIT",
            Kind::Withdraw => "WITHDRAW",
            Kind::Transfer => "TRANSFER",
        }
    }
}

/// One operation a client sent, acknowledged or not.
#[derive(Debug, Clone)]
struct Sent {
    id: Uuid,
    source: Uuid,
    target: Option<Uuid>,
    kind: Kind,
    cents: i64,
    acked: bool,
}

/// Violations by kind, with the first few examples of each.
#[derive(Default)]
struct Violations {
    counts: BTreeMap<&'static str, usize>,
    examples: Vec<String>,
}

impl Violations {
    fn add(&mut self, kind: &'static str, detail: String) {
        *self.counts.entry(kind).or_default() += 1;
        if self.examples.len() < 40 {
            self.examples.push(format!("{kind}: {detail}"));
        }
    }

    fn merge(&mut self, other: Violations) {
        for (kind, count) in other.counts {
            *self.counts.entry(kind).or_default() += count;
        }
        for example in other.examples {
            if self.examples.len() < 40 {
                self.examples.push(example);
            }
        }
    }

    fn total(&self) -> usize {
        self.counts.values().sum()
    }
}

/// What one client did: its operations in the order it sent them, and what it saw.
#[derive(Default)]
struct ClientLog {
    sent: Vec<Sent>,
    violations: Violations,
    /// Answers that made the client retry, by kind (`409`, `503`, `transport`, ...).
    retries: BTreeMap<String, usize>,
    reads: usize,
}

/// The processes the nemesis breaks and repairs. Fields drop in order: the `wallet`
/// processes before the stack whose temp dir holds their logs.
struct Cluster {
    servers: Vec<Server>,
    workers: Vec<Process>,
    stack: Stack,
}

fn amount(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// "12.34" → 1234.
fn cents(text: &str) -> Option<i64> {
    let value: BigDecimal = text.parse().ok()?;
    (value * BigDecimal::from(100)).to_i64()
}

async fn run(duration: Duration, faults_needed: u64) {
    let started = Instant::now();
    let mut cluster = start_cluster();
    let apis: Vec<Api> = cluster
        .servers
        .iter()
        .map(|server| Api::new(&server.base))
        .collect();
    let (wallets, funding) = create_funded_wallets(&apis[0]).await;
    let db_url = cluster.stack.postgres.url();
    let redis_url = cluster.stack.redis.url();
    let broker = cluster.stack.broker.address();
    eprintln!(
        "chaos: {WALLETS} wallets funded in {:.1}s; running {}s of load and faults",
        started.elapsed().as_secs_f64(),
        duration.as_secs()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let working_set = Arc::new(WorkingSet {
        wallets: wallets.clone(),
        seed: rand::random(),
        started: Instant::now(),
    });
    let apis = Arc::new(apis);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(client(n, apis.clone(), working_set.clone(), stop.clone())))
        .collect();
    let load_started = Instant::now();
    let nemesis = nemesis(&mut cluster, load_started + duration).await;
    let faults = &nemesis.counts;
    stop.store(true, Ordering::SeqCst);
    let logs: Vec<ClientLog> = join_all(clients)
        .await
        .into_iter()
        .map(|log| log.expect("a client task finished"))
        .collect();
    let load_seconds = load_started.elapsed().as_secs_f64();

    let mut violations = Violations::default();
    if nemesis.stuck_transactions > 0 {
        violations.add(
            "stalled",
            format!(
                "{} paused workers kept their transaction's locks beyond the lease lapse",
                nemesis.stuck_transactions
            ),
        );
    }
    let mut retries: BTreeMap<String, usize> = BTreeMap::new();
    let mut reads = 0;
    for log in &logs {
        for (kind, count) in &log.retries {
            *retries.entry(kind.clone()).or_default() += count;
        }
        reads += log.reads;
    }
    let settle_started = Instant::now();
    let db = connect(&db_url).await;
    let settled = settled(&db, &broker, duration).await;
    let settle_seconds = settle_started.elapsed().as_secs_f64();
    if !settled {
        violations.add(
            "not settled",
            "offsets did not reach the topic's end or the outbox did not drain".to_owned(),
        );
    }
    let ledger = Ledger::load(&db).await;
    let mut logs = logs;
    for log in &mut logs {
        violations.merge(std::mem::take(&mut log.violations));
    }
    let counts = check_ledger(&ledger, &logs, &funding, &wallets, &mut violations);
    check_order(&ledger, &logs, &mut violations);
    // New clients: the load's pooled connections idled while the system settled.
    let apis: Vec<Api> = apis.iter().map(|api| Api::new(&api.base)).collect();
    check_cache(&ledger, &apis, &redis_url, &wallets, &mut violations).await;
    check_statuses(&ledger, &logs, &apis, &redis_url, &mut violations).await;
    check_events(&ledger, &broker, &mut violations).await;

    let fault_total: u64 = faults.values().sum();
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "chaos summary ({}s of load, {:.0}s with setup and {:.1}s to settle):",
        duration.as_secs(),
        started.elapsed().as_secs_f64() - settle_seconds,
        settle_seconds
    );
    let _ = writeln!(
        summary,
        "  operations: {} sent, {} acknowledged ({:.0}/s), {} processed, {} failed, {} unacknowledged of which {} applied",
        counts.sent,
        counts.acked,
        counts.acked as f64 / load_seconds,
        counts.processed,
        counts.failed,
        counts.sent - counts.acked,
        counts.unacked_applied
    );
    let _ = writeln!(
        summary,
        "  balance reads: {reads}; retried answers: {}",
        describe(&retries)
    );
    let _ = writeln!(
        summary,
        "  faults: {fault_total} (at least {faults_needed} required): {}",
        describe(faults)
    );
    let _ = writeln!(
        summary,
        "  worker pauses ending with the other worker owning every partition: {} of {}",
        nemesis.takeovers, nemesis.pauses
    );
    let _ = writeln!(
        summary,
        "  pauses inside a transaction: {}, of which still holding it after the lease lapse: {}",
        nemesis.paused_in_transaction, nemesis.stuck_transactions
    );
    let _ = writeln!(
        summary,
        "  violations: {}{}",
        violations.total(),
        if violations.counts.is_empty() {
            String::new()
        } else {
            format!(" ({})", describe(&violations.counts))
        }
    );
    for example in &violations.examples {
        let _ = writeln!(summary, "    {example}");
    }
    eprintln!("{summary}");
    assert!(
        counts.acked > 0 && counts.processed > 0,
        "the load made progress\n{summary}"
    );
    assert!(
        fault_total >= faults_needed,
        "only {fault_total} faults were injected\n{summary}"
    );
    assert_eq!(violations.total(), 0, "violations found\n{summary}");
    drop(cluster);
}

fn describe<K: std::fmt::Debug>(counts: &BTreeMap<K, impl std::fmt::Display>) -> String {
    counts
        .iter()
        .map(|(kind, count)| format!("{} {count}", format!("{kind:?}").trim_matches('"')))
        .collect::<Vec<_>>()
        .join(", ")
}

fn start_cluster() -> Cluster {
    let stack = Stack::start_with_own_broker(PARTITIONS);
    // An `Accepting` marker left by a killed API blocks retries of its request for this long;
    // it stays above the broker deadline (5 s) so a slow produce never overlaps a retry.
    let serve_env = [("WALLET_REDIS__ACCEPTING_TTL_S", "6".to_owned())];
    let servers = (0..SERVERS).map(|_| stack.serve_with(&serve_env)).collect();
    let workers = (1..=WORKERS)
        .map(|n| {
            // Named sessions let the nemesis find the worker's open transactions.
            let url = format!("{}?application_name=work-{n}", stack.postgres.url());
            stack.spawn_wallet(
                &format!("work-{n}"),
                &["work"],
                &[
                    (
                        "WALLET_WORKER__REBALANCE_INTERVAL_MS",
                        REBALANCE_INTERVAL_MS.to_string(),
                    ),
                    ("WALLET_DATABASE__URL", url),
                ],
            )
        })
        .collect();
    Cluster {
        servers,
        workers,
        stack,
    }
}

/// Creates the wallets and deposits 1000.00 into each; returns their ids and the funding
/// operations.
async fn create_funded_wallets(api: &Api) -> (Vec<Uuid>, Vec<Uuid>) {
    let wallets: Vec<Uuid> = join_all((0..WALLETS).map(|_| api.new_wallet()))
        .await
        .iter()
        .map(|id| Uuid::parse_str(id).expect("wallet id"))
        .collect();
    let funding: Vec<Uuid> = join_all(wallets.iter().map(|wallet| async move {
        let id = Uuid::new_v4();
        let body = json!({
            "walletId": wallet, "operationType": "DEPOSIT",
            "amount": amount(INITIAL_CENTS), "operationId": id,
        });
        let response = api.submit(&body).await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{:?}", response.body);
        let status = api
            .settled(
                &wallet.to_string(),
                &id.to_string(),
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(status["status"], "PROCESSED", "{status}");
        id
    }))
    .await;
    (wallets, funding)
}

/// The wallets clients use at a given moment: `ACTIVE_WALLETS` of them, redrawn every `EPOCH`,
/// so most wallets go quiet for a while as real ones do, and a cache entry a fault left stale
/// stays stale until the final check instead of being overwritten by the next operation.
struct WorkingSet {
    wallets: Vec<Uuid>,
    seed: u64,
    started: Instant,
}

impl WorkingSet {
    fn active(&self) -> Vec<Uuid> {
        let epoch = (self.started.elapsed().as_millis() / EPOCH.as_millis()) as u64;
        let mut rng =
            SmallRng::seed_from_u64(self.seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut active = self.wallets.clone();
        active.shuffle(&mut rng);
        active.truncate(ACTIVE_WALLETS);
        active
    }
}

/// One client: sends random operations one at a time, each retried with the same key until
/// it is acknowledged, and now and then reads a balance. Half the clients send the key as
/// `operationId` in the body, half as an `Idempotency-Key` header.
async fn client(
    n: usize,
    apis: Arc<Vec<Api>>,
    working_set: Arc<WorkingSet>,
    stop: Arc<AtomicBool>,
) -> ClientLog {
    let mut rng = SmallRng::from_rng(&mut rand::rng());
    let mut log = ClientLog::default();
    let mut server = n % apis.len();
    let mut seen_versions: HashMap<Uuid, i64> = HashMap::new();
    let keyed = n % 2 == 1;
    let mut sequence = 0u64;
    while !stop.load(Ordering::SeqCst) {
        if rng.random_ratio(1, 8) {
            let wallets = &working_set.wallets;
            read_balance(
                &apis[server],
                &wallets[rng.random_range(0..wallets.len())],
                &mut seen_versions,
                &mut log,
            )
            .await;
        }
        sequence += 1;
        let wallets = working_set.active();
        let source = wallets[rng.random_range(0..wallets.len())];
        let (kind, target) = match rng.random_range(0..20) {
            0..=5 => (Kind::Deposit, None),
            6..=10 => (Kind::Withdraw, None),
            _ => {
                let target = loop {
                    let target = wallets[rng.random_range(0..wallets.len())];
                    if target != source {
                        break target;
                    }
                };
                (Kind::Transfer, Some(target))
            }
        };
        let cents = rng.random_range(1..=15_000);
        let key = format!("chaos-{n}-{sequence}");
        let id = if keyed {
            // The API's derivation: the caller's tenant (auth is off: `default`), wallet, key.
            Uuid::new_v5(
                &IDEMPOTENCY_NAMESPACE,
                format!("default:{source}:{key}").as_bytes(),
            )
        } else {
            Uuid::new_v4()
        };
        let mut body = json!({
            "walletId": source, "operationType": kind.as_str(), "amount": amount(cents),
        });
        if let Some(target) = target {
            body["toWalletId"] = json!(target);
        }
        if !keyed {
            body["operationId"] = json!(id);
        }
        let mut sent = Sent {
            id,
            source,
            target,
            kind,
            cents,
            acked: false,
        };
        loop {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let api = &apis[server];
            let attempt = if keyed {
                tokio::time::timeout(
                    ATTEMPT_TIMEOUT,
                    api.try_submit_with_key(&source.to_string(), &key, &body),
                )
                .await
            } else {
                tokio::time::timeout(ATTEMPT_TIMEOUT, api.try_submit(&body)).await
            };
            let retry = match attempt {
                Ok(Some(response)) if response.status == StatusCode::ACCEPTED => {
                    let answered = response.body["operationId"].as_str().unwrap_or_default();
                    if answered != id.to_string() {
                        log.violations.add(
                            "acknowledged id",
                            format!("{key}: expected {id}, got {answered}"),
                        );
                    }
                    sent.acked = true;
                    break;
                }
                Ok(Some(response))
                    if response.status == StatusCode::CONFLICT
                        || response.status.is_server_error() =>
                {
                    format!("{} {}", response.status.as_u16(), response.code())
                }
                Ok(Some(response)) => {
                    // A request a real client would not retry: the system refused a valid one.
                    log.violations.add(
                        "rejected",
                        format!("{key} {body}: {} {}", response.status, response.body),
                    );
                    break;
                }
                Ok(None) => "transport error".to_owned(),
                Err(_) => "timeout".to_owned(),
            };
            *log.retries.entry(retry.clone()).or_default() += 1;
            if retry.starts_with("transport") || retry.starts_with("timeout") {
                // This server may be down: the next attempt goes to another one.
                server = (server + 1) % apis.len();
            }
            let backoff = rng.random_range(50..250);
            tokio::time::sleep(Duration::from_millis(backoff)).await;
        }
        let acked = sent.acked;
        log.sent.push(sent);
        if !acked && stop.load(Ordering::SeqCst) {
            break;
        }
    }
    log
}

/// Reads a balance and checks the version never goes backwards for this client.
async fn read_balance(
    api: &Api,
    wallet: &Uuid,
    seen_versions: &mut HashMap<Uuid, i64>,
    log: &mut ClientLog,
) {
    let Ok(Some(response)) =
        tokio::time::timeout(ATTEMPT_TIMEOUT, api.try_balance(&wallet.to_string())).await
    else {
        return;
    };
    if response.status != StatusCode::OK {
        return;
    }
    log.reads += 1;
    let Some(version) = response.body["version"].as_i64() else {
        log.violations
            .add("balance read", format!("{wallet}: {}", response.body));
        return;
    };
    let seen = seen_versions.entry(*wallet).or_insert(version);
    if version < *seen {
        log.violations.add(
            "read went backwards",
            format!("{wallet}: version {version} after {}", *seen),
        );
    }
    *seen = (*seen).max(version);
}

/// Breaks one thing at a time, at random, until `until`; everything runs again when it
/// returns.
///
/// It runs in the test's own future, on the test thread, and blocks that thread while it
/// stops and starts processes (the clients run on the runtime's worker threads): a process
/// dies with the thread that spawned it (`PR_SET_PDEATHSIG`), so restarts must come from a
/// thread that lives as long as the test.
async fn nemesis(cluster: &mut Cluster, until: Instant) -> Nemesis {
    let mut rng = SmallRng::from_rng(&mut rand::rng());
    let mut report = Nemesis::default();
    let started = Instant::now();
    let pause_beyond_lease = Duration::from_millis(LEASE_MS + REBALANCE_INTERVAL_MS);
    loop {
        // Pacing the faults: this is the workload, not a synchronisation. A nemesis behind
        // the required rate (slow restarts on a busy machine) goes on at once.
        let injected: u64 = report.counts.values().sum();
        let due = FAULTS_PER_180_S as f64 * started.elapsed().as_secs_f64() / 180.0;
        let gap = if (injected as f64) < due + 1.0 {
            0
        } else {
            rng.random_range(200..1_200)
        };
        tokio::time::sleep(Duration::from_millis(gap)).await;
        if Instant::now() >= until {
            break;
        }
        let fault = FAULTS[rng.random_range(0..FAULTS.len())];
        let began = Instant::now();
        let down = Duration::from_millis(rng.random_range(0..1_500));
        let detail = match fault {
            Fault::WorkerKill => {
                let n = rng.random_range(0..cluster.workers.len());
                cluster.workers[n].kill();
                std::thread::sleep(down);
                cluster.workers[n].start();
                format!("work-{} down {down:?}", n + 1)
            }
            Fault::WorkerPause => {
                let n = rng.random_range(0..cluster.workers.len());
                let pause =
                    pause_beyond_lease + Duration::from_millis(rng.random_range(500..2_000));
                cluster.workers[n].send_signal(libc::SIGSTOP);
                std::thread::sleep(pause);
                let taken_over = one_owner(&cluster.stack.postgres.url()).await;
                cluster.workers[n].send_signal(libc::SIGCONT);
                report.pauses += 1;
                report.takeovers += u64::from(taken_over);
                format!(
                    "work-{} paused {pause:?}, its partitions taken over: {taken_over}",
                    n + 1
                )
            }
            Fault::ServerKill => {
                let n = rng.random_range(0..cluster.servers.len());
                cluster.servers[n].process.kill();
                std::thread::sleep(down);
                cluster.servers[n].start_again();
                format!("serve {} down {down:?}", cluster.servers[n].port)
            }
            Fault::RedisRestart => {
                cluster.stack.redis.restart();
                String::new()
            }
            Fault::RedisFlush => {
                let client = redis::Client::open(cluster.stack.redis.url()).expect("redis url");
                let mut connection = client
                    .get_connection_with_timeout(Duration::from_secs(5))
                    .expect("redis connects");
                redis::cmd("FLUSHALL")
                    .query::<()>(&mut connection)
                    .expect("FLUSHALL");
                String::new()
            }
            Fault::BrokerRestart => {
                cluster.stack.broker.stop();
                std::thread::sleep(down);
                cluster.stack.broker.start_again();
                format!("down {down:?}")
            }
            Fault::BrokerKill => {
                cluster.stack.broker.kill();
                std::thread::sleep(down);
                cluster.stack.broker.start_again();
                format!("down {down:?}")
            }
            Fault::PostgresRestart => {
                cluster.stack.postgres.stop();
                std::thread::sleep(down);
                cluster.stack.postgres.start_again();
                format!("down {down:?}")
            }
            Fault::WorkerPauseInTransaction => {
                let n = rng.random_range(0..cluster.workers.len());
                let pause =
                    pause_beyond_lease + Duration::from_millis(rng.random_range(1_000..3_000));
                pause_in_transaction(cluster, n, pause, &mut report).await
            }
            Fault::PostgresResourceError => {
                let sqlstate = RESOURCE_ERRORS[rng.random_range(0..RESOURCE_ERRORS.len())];
                let during = Duration::from_millis(rng.random_range(500..3_000));
                refuse_writes(&cluster.stack.postgres.url(), sqlstate, during).await
            }
        };
        *report.counts.entry(fault).or_default() += 1;
        eprintln!(
            "chaos: t={:6.1}s {fault:?} {detail} (took {:.1}s)",
            began.duration_since(started).as_secs_f64(),
            began.elapsed().as_secs_f64()
        );
    }
    report
}

/// What the nemesis did.
#[derive(Default)]
struct Nemesis {
    counts: BTreeMap<Fault, u64>,
    pauses: u64,
    /// Pauses at whose end the other worker owned every partition: the paused one woke up as
    /// a stale owner.
    takeovers: u64,
    /// `WorkerPauseInTransaction` faults that caught the worker inside a transaction.
    paused_in_transaction: u64,
    /// Of those, the ones whose transaction still held its locks a lease lapse (plus margin)
    /// later: its partitions stalled behind a frozen worker.
    stuck_transactions: u64,
}

/// The open transactions of worker `n`'s sessions that hold a transaction id (they wrote or
/// locked rows); 0 when PostgreSQL cannot be asked.
async fn open_transactions(db: &tokio_postgres::Client, n: usize) -> i64 {
    let name = format!("work-{}", n + 1);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&name];
    let ask = db.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND backend_xid IS NOT NULL",
        &params,
    );
    match tokio::time::timeout(Duration::from_secs(5), ask).await {
        Ok(Ok(row)) => row.get(0),
        _ => 0,
    }
}

/// Stops worker `n` at a moment it holds a transaction open (retrying for a few seconds to
/// catch one), keeps it stopped for `pause`, and records whether PostgreSQL ended that
/// transaction within the lease lapse plus margin, as it must for others to take over.
async fn pause_in_transaction(
    cluster: &mut Cluster,
    n: usize,
    pause: Duration,
    report: &mut Nemesis,
) -> String {
    let url = cluster.stack.postgres.url();
    let db = connect(&url).await;
    let worker = &cluster.workers[n];
    let hunt = Instant::now();
    let caught = loop {
        if open_transactions(&db, n).await > 0 {
            worker.send_signal(libc::SIGSTOP);
            if open_transactions(&db, n).await > 0 {
                break true;
            }
            worker.send_signal(libc::SIGCONT);
        }
        if hunt.elapsed() > Duration::from_secs(5) {
            worker.send_signal(libc::SIGSTOP);
            break false;
        }
    };
    let stopped = Instant::now();
    let bound = Duration::from_millis(LEASE_MS + 3_000).min(pause);
    std::thread::sleep(bound);
    let stuck = caught && open_transactions(&db, n).await > 0;
    std::thread::sleep(pause.saturating_sub(stopped.elapsed()));
    let taken_over = one_owner(&url).await;
    worker.send_signal(libc::SIGCONT);
    report.pauses += 1;
    report.takeovers += u64::from(taken_over);
    report.paused_in_transaction += u64::from(caught);
    report.stuck_transactions += u64::from(stuck);
    format!(
        "work-{} paused {pause:?}, inside a transaction: {caught}, still holding it after {bound:?}: {stuck}, partitions taken over: {taken_over}",
        n + 1
    )
}

/// Makes every insert of an operation fail with `sqlstate` for `during` (a trigger installed
/// on first use), as a full disk or a read-only failover would.
async fn refuse_writes(url: &str, sqlstate: &str, during: Duration) -> String {
    let db = connect(url).await;
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS chaos_fault (sqlstate text NOT NULL);
         CREATE OR REPLACE FUNCTION chaos_fault() RETURNS trigger LANGUAGE plpgsql AS $$
         DECLARE code text;
         BEGIN
             SELECT sqlstate INTO code FROM chaos_fault LIMIT 1;
             IF code IS NOT NULL THEN
                 RAISE EXCEPTION 'chaos: injected %', code USING ERRCODE = code;
             END IF;
             RETURN NEW;
         END $$;
         CREATE OR REPLACE TRIGGER chaos_fault BEFORE INSERT ON operations
             FOR EACH ROW EXECUTE FUNCTION chaos_fault();",
    )
    .await
    .expect("fault trigger installs");
    db.execute("INSERT INTO chaos_fault VALUES ($1)", &[&sqlstate])
        .await
        .expect("fault on");
    std::thread::sleep(during);
    db.execute("DELETE FROM chaos_fault", &[])
        .await
        .expect("fault off");
    format!("{sqlstate} for {during:?}")
}

/// Whether one worker session holds every partition lock.
async fn one_owner(url: &str) -> bool {
    let check = async {
        let (db, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .ok()?;
        tokio::spawn(connection);
        let rows = db
            .query(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2
                   AND classid = 1463897168::oid AND granted GROUP BY pid",
                &[],
            )
            .await
            .ok()?;
        let counts: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
        Some(counts == [i64::from(PARTITIONS)])
    };
    tokio::time::timeout(Duration::from_secs(5), check)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connects to PostgreSQL");
    tokio::spawn(connection);
    client
}

/// Waits until every record on the operations topic is applied and the outbox is empty.
async fn settled(db: &tokio_postgres::Client, broker: &str, duration: Duration) -> bool {
    let kafka = ClientBuilder::new(vec![broker.to_owned()])
        .build()
        .await
        .expect("connects to the broker");
    let mut partitions = Vec::new();
    for partition in 0..PARTITIONS {
        partitions.push(
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
        for partition in &partitions {
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

struct StoredOperation {
    wallet: Uuid,
    kind: String,
    cents: i64,
    target: Option<Uuid>,
    status: String,
    reason: Option<String>,
    offset: i64,
}

struct Entry {
    wallet: Uuid,
    version: i64,
    operation: Uuid,
    delta: i64,
    balance_after: i64,
}

/// PostgreSQL's view once the system settled, amounts in cents.
struct Ledger {
    operations: HashMap<Uuid, StoredOperation>,
    entries: Vec<Entry>,
    /// Wallet → (balance, version).
    wallets: HashMap<Uuid, (i64, i64)>,
    dead_letters: i64,
}

impl Ledger {
    async fn load(db: &tokio_postgres::Client) -> Ledger {
        let operations = db
            .query(
                "SELECT id, wallet_id, type, (amount * 100)::bigint, to_wallet_id, status, reason, \"offset\"
                 FROM operations",
                &[],
            )
            .await
            .expect("operations")
            .iter()
            .map(|row| {
                (
                    row.get(0),
                    StoredOperation {
                        wallet: row.get(1),
                        kind: row.get(2),
                        cents: row.get(3),
                        target: row.get(4),
                        status: row.get(5),
                        reason: row.get(6),
                        offset: row.get(7),
                    },
                )
            })
            .collect();
        let entries = db
            .query(
                "SELECT wallet_id, version, operation_id, (delta * 100)::bigint, (balance_after * 100)::bigint
                 FROM entries ORDER BY wallet_id, version",
                &[],
            )
            .await
            .expect("entries")
            .iter()
            .map(|row| Entry {
                wallet: row.get(0),
                version: row.get(1),
                operation: row.get(2),
                delta: row.get(3),
                balance_after: row.get(4),
            })
            .collect();
        let wallets = db
            .query(
                "SELECT id, (balance * 100)::bigint, version FROM wallets",
                &[],
            )
            .await
            .expect("wallets")
            .iter()
            .map(|row| (row.get(0), (row.get(1), row.get(2))))
            .collect();
        let dead_letters: i64 = db
            .query_one("SELECT count(*) FROM dead_letters", &[])
            .await
            .expect("dead letters")
            .get(0);
        Ledger {
            operations,
            entries,
            wallets,
            dead_letters,
        }
    }

    fn entries_by_operation(&self) -> HashMap<Uuid, Vec<(Uuid, i64, i64)>> {
        let mut by_operation: HashMap<Uuid, Vec<(Uuid, i64, i64)>> = HashMap::new();
        for entry in &self.entries {
            by_operation.entry(entry.operation).or_default().push((
                entry.wallet,
                entry.version,
                entry.delta,
            ));
        }
        by_operation
    }
}

#[derive(Default)]
struct Counts {
    sent: usize,
    acked: usize,
    processed: usize,
    failed: usize,
    unacked_applied: usize,
}

/// Exactly-once, content, conservation and journal checks.
fn check_ledger(
    ledger: &Ledger,
    logs: &[ClientLog],
    funding: &[Uuid],
    wallets: &[Uuid],
    violations: &mut Violations,
) -> Counts {
    let mut counts = Counts::default();
    let mut sent_by_id: HashMap<Uuid, &Sent> = HashMap::new();
    for sent in logs.iter().flat_map(|log| &log.sent) {
        counts.sent += 1;
        if sent_by_id.insert(sent.id, sent).is_some() {
            violations.add("test bug", format!("operation id {} sent twice", sent.id));
        }
        let stored = ledger.operations.get(&sent.id);
        if sent.acked {
            counts.acked += 1;
            match stored.map(|stored| stored.status.as_str()) {
                Some("PROCESSED") => counts.processed += 1,
                Some("FAILED") => counts.failed += 1,
                Some(other) => violations.add("status", format!("{}: {other}", sent.id)),
                None => violations.add(
                    "lost",
                    format!("acknowledged {} {:?} not applied", sent.id, sent.kind),
                ),
            }
        } else if stored.is_some() {
            counts.unacked_applied += 1;
        }
        if let Some(stored) = stored {
            let same = stored.wallet == sent.source
                && stored.kind == sent.kind.as_str()
                && stored.cents == sent.cents
                && stored.target == sent.target;
            if !same {
                violations.add(
                    "content",
                    format!("{} stored differently from what was sent", sent.id),
                );
            }
        }
    }
    let funding: HashSet<Uuid> = funding.iter().copied().collect();
    let entries = ledger.entries_by_operation();
    let mut deposits = 0i64;
    let mut withdrawals = 0i64;
    for (id, stored) in &ledger.operations {
        if !sent_by_id.contains_key(id) && !funding.contains(id) {
            violations.add(
                "phantom",
                format!("{id} applied but never sent by a client"),
            );
        }
        let mut found: Vec<(Uuid, i64)> = entries
            .get(id)
            .map(|entries| entries.iter().map(|(w, _, d)| (*w, *d)).collect())
            .unwrap_or_default();
        found.sort();
        let mut expected: Vec<(Uuid, i64)> = match (stored.status.as_str(), stored.kind.as_str()) {
            ("PROCESSED", "DEPOSIT") => {
                deposits += stored.cents;
                vec![(stored.wallet, stored.cents)]
            }
            ("PROCESSED", "WITHDRAW") => {
                withdrawals += stored.cents;
                vec![(stored.wallet, -stored.cents)]
            }
            ("PROCESSED", "TRANSFER") => match stored.target {
                Some(target) => vec![(stored.wallet, -stored.cents), (target, stored.cents)],
                None => vec![],
            },
            ("FAILED", _) => {
                if stored.reason.as_deref() != Some("INSUFFICIENT_FUNDS") {
                    violations.add(
                        "failure reason",
                        format!("{id} failed with {:?}", stored.reason),
                    );
                }
                vec![(stored.wallet, 0)]
            }
            (status, kind) => {
                violations.add("status", format!("{id}: {status} {kind}"));
                vec![]
            }
        };
        expected.sort();
        if found != expected {
            violations.add(
                "entries",
                format!(
                    "{id} ({} {}) has entries {found:?}, expected {expected:?}",
                    stored.status, stored.kind
                ),
            );
        }
    }
    let total: i64 = ledger.wallets.values().map(|(balance, _)| balance).sum();
    if total != deposits - withdrawals {
        violations.add(
            "conservation",
            format!(
                "balances sum to {} but processed deposits − withdrawals are {} (initial {})",
                amount(total),
                amount(deposits - withdrawals),
                amount(INITIAL_CENTS * WALLETS as i64)
            ),
        );
    }
    if ledger.wallets.len() != wallets.len() {
        violations.add(
            "wallets",
            format!(
                "{} wallets stored, {} created",
                ledger.wallets.len(),
                wallets.len()
            ),
        );
    }
    let mut journals: HashMap<Uuid, Vec<&Entry>> = HashMap::new();
    for entry in &ledger.entries {
        journals.entry(entry.wallet).or_default().push(entry);
    }
    for (wallet, (balance, version)) in &ledger.wallets {
        let journal = journals.remove(wallet).unwrap_or_default();
        let mut running = 0i64;
        for (index, entry) in journal.iter().enumerate() {
            if entry.version != index as i64 + 1 {
                violations.add(
                    "version gap",
                    format!("{wallet}: entry {index} has version {}", entry.version),
                );
                break;
            }
            running += entry.delta;
            if entry.balance_after != running || running < 0 {
                violations.add(
                    "journal",
                    format!(
                        "{wallet} v{}: balance_after {} but running sum {running}",
                        entry.version, entry.balance_after
                    ),
                );
                break;
            }
        }
        if running != *balance || journal.len() as i64 != *version {
            violations.add(
                "balance",
                format!(
                    "{wallet}: balance {balance} v{version}, entries sum to {running} over {} versions",
                    journal.len()
                ),
            );
        }
    }
    if ledger.dead_letters != 0 {
        violations.add(
            "dead letters",
            format!("{} records became dead letters", ledger.dead_letters),
        );
    }
    counts
}

/// Per-client order: operations a client had acknowledged one after the other on the same
/// wallet were applied in that order, in the journal and on the topic.
fn check_order(ledger: &Ledger, logs: &[ClientLog], violations: &mut Violations) {
    let entries = ledger.entries_by_operation();
    let version_on = |operation: Uuid, wallet: Uuid| {
        entries
            .get(&operation)
            .and_then(|entries| entries.iter().find(|(w, _, _)| *w == wallet))
            .map(|(_, version, _)| *version)
    };
    for log in logs {
        let mut last: HashMap<Uuid, (Uuid, i64, i64)> = HashMap::new();
        for sent in log.sent.iter().filter(|sent| sent.acked) {
            let (Some(version), Some(stored)) = (
                version_on(sent.id, sent.source),
                ledger.operations.get(&sent.id),
            ) else {
                continue;
            };
            if let Some((before, before_version, before_offset)) = last.get(&sent.source) {
                if *before_version >= version || *before_offset >= stored.offset {
                    violations.add(
                        "order",
                        format!(
                            "wallet {}: {before} (v{before_version}, offset {before_offset}) was acknowledged before {} (v{version}, offset {})",
                            sent.source, sent.id, stored.offset
                        ),
                    );
                }
            }
            last.insert(sent.source, (sent.id, version, stored.offset));
        }
    }
}

/// Sends a read until the API answers, as a client would after a transport error (a pooled
/// connection the server closed while idle); panics after 30 s without an answer.
async fn answer<F, Fut>(mut read: F) -> crate::client::Response
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<crate::client::Response>>,
{
    let start = Instant::now();
    loop {
        if let Ok(Some(response)) = tokio::time::timeout(ATTEMPT_TIMEOUT, read()).await {
            return response;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the API did not answer a read for 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Redis and the API's balance reads converge to PostgreSQL.
async fn check_cache(
    ledger: &Ledger,
    apis: &[Api],
    redis_url: &str,
    wallets: &[Uuid],
    violations: &mut Violations,
) {
    let redis = redis::Client::open(redis_url).expect("redis url");
    let redis = redis
        .get_multiplexed_async_connection()
        .await
        .expect("connects to Redis");
    let mismatches = || {
        let mut redis = redis.clone();
        async move {
            let mut found = Vec::new();
            for wallet in wallets {
                let (balance, version) = ledger.wallets[wallet];
                let cached: Option<String> = redis::cmd("HGET")
                    .arg(format!("wallet:{wallet}"))
                    .arg("wallet")
                    .query_async(&mut redis)
                    .await
                    .expect("HGET");
                if let Some(cached) = cached {
                    let cached: Value = serde_json::from_str(&cached).expect("cached wallet JSON");
                    let seen = (
                        cached["balance"].as_str().and_then(cents),
                        cached["version"].as_i64(),
                    );
                    if seen != (Some(balance), Some(version)) {
                        found.push((
                            "stale cache",
                            format!(
                                "{wallet}: Redis has {seen:?}, PostgreSQL ({balance}, {version})"
                            ),
                        ));
                    }
                }
                for api in apis {
                    let wallet = wallet.to_string();
                    let response = answer(|| api.try_balance(&wallet)).await;
                    let seen = (
                        response.body["balance"].as_str().and_then(cents),
                        response.body["version"].as_i64(),
                    );
                    if seen != (Some(balance), Some(version)) {
                        found.push(("stale read", format!("{wallet} via {}: API answers {seen:?}, PostgreSQL ({balance}, {version})", api.base)));
                    }
                }
            }
            found
        }
    };
    // Converged within seconds of the last commit; polled, with a deadline.
    let found = RefCell::new(Vec::new());
    let converged = eventually(Duration::from_secs(10), || async {
        let mismatches = mismatches().await;
        let none = mismatches.is_empty();
        *found.borrow_mut() = mismatches;
        none
    })
    .await;
    if !converged {
        for (kind, detail) in found.into_inner() {
            violations.add(kind, detail);
        }
    }
}

/// Final statuses in Redis match PostgreSQL, and the API answers them for a sample.
async fn check_statuses(
    ledger: &Ledger,
    logs: &[ClientLog],
    apis: &[Api],
    redis_url: &str,
    violations: &mut Violations,
) {
    let acked: Vec<&Sent> = logs
        .iter()
        .flat_map(|log| &log.sent)
        .filter(|sent| sent.acked)
        .collect();
    let redis = redis::Client::open(redis_url).expect("redis url");
    let mut redis = redis
        .get_multiplexed_async_connection()
        .await
        .expect("connects to Redis");
    for chunk in acked.chunks(1_000) {
        let keys: Vec<String> = chunk
            .iter()
            .map(|sent| format!("op:default:{}", sent.id))
            .collect();
        let markers: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut redis)
            .await
            .expect("MGET");
        for (sent, marker) in chunk.iter().zip(markers) {
            let Some(marker) = marker else { continue };
            let marker: Value = serde_json::from_str(&marker).expect("marker JSON");
            let state = marker["state"].as_str().unwrap_or_default();
            let stored = ledger
                .operations
                .get(&sent.id)
                .map(|stored| stored.status.as_str());
            if matches!(state, "PROCESSED" | "FAILED") && Some(state) != stored {
                violations.add(
                    "stale status",
                    format!("{}: Redis says {state}, PostgreSQL {stored:?}", sent.id),
                );
            }
        }
    }
    let mut rng = SmallRng::from_rng(&mut rand::rng());
    for n in 0..200.min(acked.len()) {
        let sent = acked[rng.random_range(0..acked.len())];
        let api = &apis[n % apis.len()];
        let (wallet, operation) = (sent.source.to_string(), sent.id.to_string());
        let response = answer(|| api.try_status(&wallet, &operation)).await;
        let stored = ledger
            .operations
            .get(&sent.id)
            .map(|stored| stored.status.as_str());
        if response.body["status"].as_str() != stored {
            violations.add(
                "status read",
                format!(
                    "{}: API says {}, PostgreSQL {stored:?}",
                    sent.id, response.body
                ),
            );
        }
    }
}

/// Every journal entry has its event on the events topic, and each wallet's events are in
/// version order once repeats are dropped.
async fn check_events(ledger: &Ledger, broker: &str, violations: &mut Violations) {
    let mut seen_ids = HashSet::new();
    let mut published: HashSet<(Uuid, Uuid, i64)> = HashSet::new();
    let mut versions: HashMap<Uuid, i64> = HashMap::new();
    let mut created = 0;
    for event in crate::events::read_events(broker, "wallet-events").await {
        let id = event["eventId"].as_str().unwrap_or_default().to_owned();
        if !seen_ids.insert(id) {
            continue;
        }
        let wallet = event["walletId"]
            .as_str()
            .and_then(|text| Uuid::parse_str(text).ok())
            .unwrap_or_default();
        let version = event["version"].as_i64().unwrap_or(-1);
        let previous = versions.insert(wallet, version);
        if previous.map_or(version != 0, |previous| version != previous + 1) {
            violations.add(
                "event order",
                format!("wallet {wallet}: version {version} after {previous:?}"),
            );
        }
        match event["operationId"]
            .as_str()
            .and_then(|text| Uuid::parse_str(text).ok())
        {
            Some(operation) => {
                published.insert((operation, wallet, version));
            }
            None => created += 1,
        }
    }
    if created != ledger.wallets.len() {
        violations.add(
            "missing event",
            format!(
                "{created} WalletCreated events for {} wallets",
                ledger.wallets.len()
            ),
        );
    }
    for entry in &ledger.entries {
        if !published.contains(&(entry.operation, entry.wallet, entry.version)) {
            violations.add(
                "missing event",
                format!(
                    "operation {} on wallet {} v{} ({})",
                    entry.operation,
                    entry.wallet,
                    entry.version,
                    ledger
                        .operations
                        .get(&entry.operation)
                        .map_or("?", |stored| stored.status.as_str())
                ),
            );
        }
    }
    if published.len() != ledger.entries.len() {
        violations.add(
            "extra event",
            format!(
                "{} operation events for {} journal entries",
                published.len(),
                ledger.entries.len()
            ),
        );
    }
}
