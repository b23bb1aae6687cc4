//! The nemesis: one fault at a time, at random, at a pace that meets the run's fault count.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::cluster::Cluster;
use super::ledger::connect;
use super::workload::RedisLosses;
use super::{FAULTS_PER_180_S, LEASE_MS, PARTITIONS, REBALANCE_INTERVAL_MS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
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
    /// The broker frozen (SIGSTOP) while requests are being produced, for up to longer than
    /// the produce deadline: acknowledgements time out and records land late.
    BrokerPause,
    /// Redis frozen (SIGSTOP) with its connections open: requests and the worker's cache
    /// writes time out, and what was sent meanwhile is executed late, once it resumes.
    RedisPause,
    /// The postmaster and every backend frozen at once, transactions and locks held: a VM
    /// pause or a stalled disk.
    PostgresPause,
    /// One API process frozen with its clients' requests in flight, some already produced.
    ServerPause,
}

const FAULTS: [Fault; 14] = [
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
    Fault::BrokerPause,
    Fault::RedisPause,
    Fault::PostgresPause,
    Fault::ServerPause,
];

/// SQLSTATEs `PostgresResourceError` raises: none may turn an operation into a dead letter.
const RESOURCE_ERRORS: [&str; 4] = ["53100", "53200", "53300", "25006"];

/// Breaks one thing at a time, at random, until `until`; everything runs again when it
/// returns.
///
/// It runs in the test's own future, on the test thread, and blocks that thread while it
/// stops and starts processes (the clients run on the runtime's worker threads): a process
/// dies with the thread that spawned it (`PR_SET_PDEATHSIG`), so restarts must come from a
/// thread that lives as long as the test.
pub async fn run(cluster: &mut Cluster, until: Instant, redis_losses: &RedisLosses) -> Nemesis {
    let mut rng = SmallRng::from_rng(&mut rand::rng());
    let mut report = Nemesis::default();
    let started = Instant::now();
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
        let detail = inject(fault, cluster, &mut rng, &mut report, redis_losses).await;
        *report.counts.entry(fault).or_default() += 1;
        eprintln!(
            "chaos: t={:6.1}s {fault:?} {detail} (took {:.1}s)",
            began.duration_since(started).as_secs_f64(),
            began.elapsed().as_secs_f64()
        );
    }
    report
}

/// Breaks one thing and repairs it; returns what it did.
async fn inject(
    fault: Fault,
    cluster: &mut Cluster,
    rng: &mut SmallRng,
    report: &mut Nemesis,
    redis_losses: &RedisLosses,
) -> String {
    let pause_beyond_lease = Duration::from_millis(LEASE_MS + REBALANCE_INTERVAL_MS);
    let down = Duration::from_millis(rng.random_range(0..1_500));
    match fault {
        Fault::WorkerKill => {
            let n = rng.random_range(0..cluster.workers.len());
            cluster.workers[n].kill();
            std::thread::sleep(down);
            cluster.workers[n].start();
            format!("work-{} down {down:?}", n + 1)
        }
        Fault::WorkerPause => {
            let n = rng.random_range(0..cluster.workers.len());
            let pause = pause_beyond_lease + Duration::from_millis(rng.random_range(500..2_000));
            pause_worker(cluster, n, pause, report).await
        }
        Fault::ServerKill => {
            let n = rng.random_range(0..cluster.servers.len());
            cluster.servers[n].process.kill();
            std::thread::sleep(down);
            cluster.servers[n].start_again();
            format!("serve {} down {down:?}", cluster.servers[n].port)
        }
        Fault::RedisRestart => {
            let loss = redis_losses.begin();
            cluster.stack.redis.restart();
            redis_losses.end(loss);
            String::new()
        }
        Fault::RedisFlush => {
            let loss = redis_losses.begin();
            flush_redis(&cluster.stack.redis.url());
            redis_losses.end(loss);
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
            let pause = pause_beyond_lease + Duration::from_millis(rng.random_range(1_000..3_000));
            pause_in_transaction(cluster, n, pause, report).await
        }
        Fault::BrokerPause => {
            let pause = Duration::from_millis(rng.random_range(1_000..8_000));
            cluster.stack.broker.pause();
            std::thread::sleep(pause);
            cluster.stack.broker.resume();
            format!("paused {pause:?}")
        }
        Fault::RedisPause => {
            let pause = Duration::from_millis(rng.random_range(500..6_000));
            cluster.stack.redis.pause();
            std::thread::sleep(pause);
            cluster.stack.redis.resume();
            format!("paused {pause:?}")
        }
        Fault::PostgresPause => {
            let pause = Duration::from_millis(rng.random_range(500..6_000));
            cluster.stack.postgres.pause();
            std::thread::sleep(pause);
            cluster.stack.postgres.resume();
            format!("paused {pause:?}")
        }
        Fault::ServerPause => {
            let n = rng.random_range(0..cluster.servers.len());
            let pause = Duration::from_millis(rng.random_range(500..12_000));
            cluster.servers[n].process.send_signal(libc::SIGSTOP);
            std::thread::sleep(pause);
            cluster.servers[n].process.send_signal(libc::SIGCONT);
            format!("serve {} paused {pause:?}", cluster.servers[n].port)
        }
        Fault::PostgresResourceError => {
            let sqlstate = RESOURCE_ERRORS[rng.random_range(0..RESOURCE_ERRORS.len())];
            let during = Duration::from_millis(rng.random_range(500..3_000));
            refuse_writes(&cluster.stack.postgres.url(), sqlstate, during).await
        }
    }
}

/// Stops worker `n` for `pause` and records whether the other one took its partitions.
async fn pause_worker(
    cluster: &mut Cluster,
    n: usize,
    pause: Duration,
    report: &mut Nemesis,
) -> String {
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

fn flush_redis(url: &str) {
    let client = redis::Client::open(url).expect("redis url");
    let mut connection = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("redis connects");
    redis::cmd("FLUSHALL")
        .query::<()>(&mut connection)
        .expect("FLUSHALL");
}

/// What the nemesis did.
#[derive(Default)]
pub struct Nemesis {
    pub counts: BTreeMap<Fault, u64>,
    pub pauses: u64,
    /// Pauses at whose end the other worker owned every partition: the paused one woke up as
    /// a stale owner.
    pub takeovers: u64,
    /// `WorkerPauseInTransaction` faults that caught the worker inside a transaction.
    pub paused_in_transaction: u64,
    /// Of those, the ones whose transaction still held its locks a lease lapse (plus margin)
    /// later: its partitions stalled behind a frozen worker.
    pub stuck_transactions: u64,
}

impl Nemesis {
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
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
