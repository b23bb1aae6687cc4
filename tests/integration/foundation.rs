//! `wallet migrate` and start-up behaviour of the binary.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{eventually, free_port, Broker, Postgres, Redis, Stack};

fn wallet() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wallet"));
    command.current_dir(std::env::temp_dir());
    command
}

async fn schema_versions(url: &str) -> Vec<i32> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("schema_migrations exists")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn spawn_migrate(postgres: &Postgres, broker: &Broker) -> std::process::Child {
    wallet()
        .arg("migrate")
        .env("WALLET_DATABASE__URL", postgres.url())
        .env("WALLET_KAFKA__BROKERS", broker.address())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wallet migrate starts")
}

/// Proves migrations apply to an empty server (creating the database), re-run as a no-op,
/// and that two concurrent runs both succeed with one schema.
#[tokio::test]
async fn migrate_applies_once_even_when_run_concurrently() {
    let postgres = Postgres::start();
    let broker = Broker::start();
    let run = || spawn_migrate(&postgres, &broker);
    let first = run().wait_with_output().expect("first run");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("13 migration(s) applied"));
    let again = run().wait_with_output().expect("second run");
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 migration(s) applied"));
    assert_eq!(
        schema_versions(&postgres.url()).await,
        (1..=13).collect::<Vec<i32>>()
    );

    let fresh = Postgres::start();
    let concurrent = || spawn_migrate(&fresh, &broker);
    let (a, b) = (concurrent(), concurrent());
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let applied: Vec<String> = [&a, &b]
        .iter()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .collect();
    assert_eq!(
        applied
            .iter()
            .filter(|out| out.contains("13 migration(s) applied"))
            .count(),
        1,
        "{applied:?}"
    );
    assert_eq!(
        schema_versions(&fresh.url()).await,
        (1..=13).collect::<Vec<i32>>()
    );
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Proves `wallet migrate` fails fast and says which dependency is unreachable.
#[test]
fn migrate_fails_fast_when_a_dependency_is_unreachable() {
    let postgres = Postgres::start();
    let cases = [
        (
            format!("postgres://postgres@127.0.0.1:{}/wallet", closed_port()),
            "127.0.0.1:1".to_owned(),
            "PostgreSQL",
        ),
        (
            postgres.url(),
            format!("127.0.0.1:{}", closed_port()),
            "Kafka broker",
        ),
    ];
    for (database, brokers, expected) in cases {
        let started = Instant::now();
        let output = wallet()
            .arg("migrate")
            .env("WALLET_DATABASE__URL", &database)
            .env("WALLET_KAFKA__BROKERS", &brokers)
            .env("WALLET_DATABASE__CONNECT_TIMEOUT_MS", "1000")
            .env("WALLET_KAFKA__REQUEST_TIMEOUT_MS", "1000")
            .output()
            .expect("wallet migrate runs");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "took {:?}",
            started.elapsed()
        );
    }
}

/// Proves a bad configuration value fails at start with the key named, and flags beat the
/// environment, which beats the file.
#[test]
fn configuration_errors_name_the_key_and_flags_win() {
    let output = wallet()
        .arg("migrate")
        .env("WALLET_KAFKA__PARTITIONS", "lots")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("kafka.partitions"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("config.toml"),
        "[database]\nurl = \"postgres://file@127.0.0.1:1/x\"\nconnect_timeout_ms = 500\n",
    )
    .expect("write");
    let run = |env: Option<&str>, flag: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wallet"));
        command
            .current_dir(dir.path())
            .env("WALLET_KAFKA__REQUEST_TIMEOUT_MS", "500");
        if let Some(url) = flag {
            command.args(["--database-url", url]);
        }
        command.arg("migrate");
        if let Some(url) = env {
            command.env("WALLET_DATABASE__URL", url);
        }
        String::from_utf8_lossy(&command.output().expect("runs").stderr).into_owned()
    };
    assert!(run(None, None).contains("file@127.0.0.1:1"));
    assert!(run(Some("postgres://env@127.0.0.1:1/x"), None).contains("env@127.0.0.1:1"));
    assert!(run(
        Some("postgres://env@127.0.0.1:1/x"),
        Some("postgres://flag@127.0.0.1:1/x")
    )
    .contains("flag@127.0.0.1:1"));
}

/// Proves the help lists the four modes.
#[test]
fn help_lists_every_mode() {
    let output = wallet().arg("--help").output().expect("runs");
    let help = String::from_utf8_lossy(&output.stdout);
    for mode in ["serve", "work", "migrate", "run"] {
        assert!(help.contains(mode), "{help}");
    }
}

/// Proves the harness can stop and restart each server it owns.
#[tokio::test]
async fn harness_restarts_its_servers() {
    let mut stack = Stack::start(2);
    stack.postgres.stop();
    assert!(!stack.postgres.process.is_running());
    stack.postgres.start_again();
    assert_eq!(
        schema_versions(&stack.postgres.url()).await,
        (1..=13).collect::<Vec<i32>>()
    );
    stack.redis.restart();
    assert!(stack.redis.process.is_running());
    let _other = Redis::start();
}

/// Proves the migrations since issue 16 upgrade a database that already holds data: wallets
/// get a limit of 0 and keep their floor at zero and hold nothing, old entries take their
/// operation's processing time (so a balance at a point in time covers them) and held nothing,
/// old operations have no metadata and name no hold, events waiting in the outbox stay there,
/// in order, with their wallets' tenants; wallet ids become their tenant's, and the wallet
/// migration run again changes nothing.
#[tokio::test]
async fn migrations_upgrade_a_database_with_data() {
    let postgres = Postgres::start();
    let server = postgres.url().replace("/wallet", "/postgres");
    let (admin, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    admin
        .batch_execute("CREATE DATABASE wallet")
        .await
        .expect("database");
    let db = crate::client::database(&postgres.url()).await;
    for sql in [
        include_str!("../../sql/0001_ledger.sql"),
        include_str!("../../sql/0002_outbox.sql"),
        include_str!("../../sql/0003_auth.sql"),
        include_str!("../../sql/0004_tenant_operations.sql"),
    ] {
        db.batch_execute(sql).await.expect("an earlier migration");
    }
    db.batch_execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                                         applied_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO schema_migrations (version, name) VALUES
             (1, 'ledger'), (2, 'outbox'), (3, 'auth'), (4, 'tenant_operations');
         INSERT INTO wallets (id, currency, balance, version, created_at, updated_at)
             VALUES ('00000000-0000-0000-0000-000000000001', 'USD', 7, 2, '2026-01-01', '2026-01-02');
         INSERT INTO operations (tenant, id, wallet_id, type, amount, status, balance_after,
                                 fingerprint, partition, \"offset\", accepted_at, processed_at)
             VALUES ('default', '00000000-0000-0000-0000-0000000000a1',
                     '00000000-0000-0000-0000-000000000001', 'DEPOSIT', 10, 'PROCESSED', 10, 'f',
                     0, 0, '2026-01-01 10:00Z', '2026-01-01 10:00:01Z'),
                    ('default', '00000000-0000-0000-0000-0000000000a2',
                     '00000000-0000-0000-0000-000000000001', 'WITHDRAW', 3, 'PROCESSED', 7, 'g',
                     0, 1, '2026-01-02 10:00Z', '2026-01-02 10:00:01Z');
         INSERT INTO entries (wallet_id, version, operation_id, delta, balance_after, tenant) VALUES
             ('00000000-0000-0000-0000-000000000001', 1, '00000000-0000-0000-0000-0000000000a1', 10, 10, 'default'),
             ('00000000-0000-0000-0000-000000000001', 2, '00000000-0000-0000-0000-0000000000a2', -3, 7, 'default');
         INSERT INTO outbox (event_id, wallet_id, payload, created_at) VALUES
             ('00000000-0000-0000-0000-0000000000e1', '00000000-0000-0000-0000-000000000001', '{\"old\":1}', '2026-01-02'),
             ('00000000-0000-0000-0000-0000000000e2', '00000000-0000-0000-0000-000000000001', '{\"old\":2}', '2026-01-02');",
    )
    .await
    .expect("data from before");
    let migrated = migrate_on_shared_broker(&postgres)
        .output()
        .expect("wallet migrate runs");
    let stdout = String::from_utf8_lossy(&migrated.stdout);
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    assert!(stdout.contains("9 migration(s) applied"), "{stdout}");
    let timed: i64 = db
        .query_one(
            "SELECT count(*) FROM entries e JOIN operations o ON o.id = e.operation_id
             WHERE e.recorded_at = o.processed_at",
            &[],
        )
        .await
        .expect("entries")
        .get(0);
    assert_eq!(
        timed, 2,
        "each old entry takes its operation's processing time"
    );
    let row = db
        .query_one(
            "SELECT (SELECT overdraft_limit::text FROM wallets),
                    (SELECT count(*) FROM operations WHERE metadata = '{}'::jsonb AND hold_id IS NULL),
                    (SELECT held::text FROM wallets),
                    (SELECT count(*) FROM entries WHERE held_after = 0)",
            &[],
        )
        .await
        .expect("upgraded rows");
    assert_eq!(row.get::<_, String>(0), "0");
    assert_eq!(row.get::<_, i64>(1), 2);
    assert_eq!(row.get::<_, String>(2), "0");
    assert_eq!(row.get::<_, i64>(3), 2);
    let waiting: Vec<(i32, Vec<String>)> = db
        .query("SELECT events, payloads FROM outbox ORDER BY id", &[])
        .await
        .expect("outbox")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        waiting,
        vec![
            (1, vec![r#"{"old":1}"#.to_owned()]),
            (1, vec![r#"{"old":2}"#.to_owned()])
        ],
        "events waiting from before are carried over, in order, one per row"
    );
    let tenants: Vec<Vec<String>> = db
        .query("SELECT tenants FROM outbox ORDER BY id", &[])
        .await
        .expect("outbox tenants")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(tenants, vec![vec!["default".to_owned()]; 2]);
    let below = db.execute("UPDATE wallets SET balance = -0.01", &[]).await;
    assert!(below.is_err(), "the floor of an old wallet stays at zero");
    db.batch_execute(include_str!("../../sql/0012_tenant_wallets.sql"))
        .await
        .expect("the wallet migration runs again");
    db.batch_execute(
        "INSERT INTO wallets (tenant, id, currency, balance, version, created_at, updated_at)
             VALUES ('acme', '00000000-0000-0000-0000-000000000001', 'EUR', 0, 0, now(), now());
         INSERT INTO entries (tenant, wallet_id, version, operation_id, delta, balance_after, recorded_at)
             VALUES ('acme', '00000000-0000-0000-0000-000000000001', 1,
                     '00000000-0000-0000-0000-0000000000a1', 0, 0, now());",
    )
    .await
    .expect("another tenant's wallet and journal with the same ids");
    let keys: Vec<String> = db
        .query(
            "SELECT conname::text FROM pg_constraint
             WHERE conname IN ('wallets_tenant_id_pkey', 'entries_tenant_wallet_version_pkey')
             ORDER BY conname",
            &[],
        )
        .await
        .expect("keys")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        keys,
        [
            "entries_tenant_wallet_version_pkey",
            "wallets_tenant_id_pkey"
        ]
    );
}

/// `wallet migrate` against `postgres` and the shared broker, with topics of its own.
fn migrate_on_shared_broker(postgres: &Postgres) -> Command {
    let topic = format!("migrate-{}", uuid::Uuid::new_v4());
    let mut command = wallet();
    command
        .arg("migrate")
        .env("WALLET_DATABASE__URL", postgres.url())
        .env("WALLET_KAFKA__BROKERS", Broker::shared().address())
        .env(
            "WALLET_KAFKA__OPERATIONS_TOPIC",
            format!("{topic}-operations"),
        )
        .env("WALLET_KAFKA__EVENTS_TOPIC", format!("{topic}-events"));
    command
}

/// Waits up to `deadline` for `child` to exit; kills it when it does not. Its output, and
/// whether it exited on its own.
async fn exit_within(
    mut child: std::process::Child,
    deadline: Duration,
) -> (std::process::Output, bool) {
    let exited = eventually(deadline, || {
        let done = matches!(child.try_wait(), Ok(Some(_)));
        async move { done }
    })
    .await;
    if !exited {
        let _ = child.kill();
    }
    (
        child.wait_with_output().expect("the child is reaped"),
        exited,
    )
}

/// Proves `wallet migrate` waits for the migration lock however long another run holds it,
/// longer than `database.statement_timeout_ms`, and then succeeds: migrations run without a
/// statement timeout.
#[tokio::test]
async fn migrate_waits_for_the_migration_lock_beyond_the_statement_timeout() {
    let postgres = Postgres::start();
    let first = migrate_on_shared_broker(&postgres)
        .output()
        .expect("wallet migrate runs");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let holder = crate::client::database(&postgres.url()).await;
    let key = wallet::ledger::migrate::MIGRATION_LOCK_KEY;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .expect("the test takes the migration lock");
    let waiting = migrate_on_shared_broker(&postgres)
        .env("WALLET_DATABASE__STATEMENT_TIMEOUT_MS", "1000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wallet migrate starts");
    let queued = eventually(Duration::from_secs(30), || async {
        holder
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'",
                &[],
            )
            .await
            .is_ok_and(|row| row.get::<_, i64>(0) == 1)
    })
    .await;
    assert!(queued, "the second migrate never waited for the lock");
    // Held for twice the statement timeout: a wait under it would be cancelled by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .expect("the test releases the migration lock");
    let (output, exited) = exit_within(waiting, Duration::from_secs(30)).await;
    assert!(
        exited,
        "wallet migrate did not finish once the lock was free"
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("0 migration(s) applied"));
}

/// Proves `wallet migrate`, `serve` and `work` refuse a database that a newer release
/// migrated, naming the migration they do not know, with a non-zero exit.
#[tokio::test]
async fn a_schema_newer_than_the_release_is_refused() {
    let stack = Stack::start(1);
    let db = crate::client::database(&stack.postgres.url()).await;
    db.execute(
        "INSERT INTO schema_migrations (version, name) VALUES (9999, 'from_the_future')",
        &[],
    )
    .await
    .expect("a newer release's migration");
    let migrated = stack
        .wallet_command(&["migrate"])
        .output()
        .expect("wallet migrate runs");
    let stderr = String::from_utf8_lossy(&migrated.stderr);
    assert!(!migrated.status.success(), "{stderr}");
    assert!(stderr.contains("9999_from_the_future"), "{stderr}");
    for mode in ["serve", "work"] {
        let child = stack
            .wallet_command(&[mode])
            .env("WALLET_HTTP__LISTEN", format!("127.0.0.1:{}", free_port()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wallet starts");
        let (output, exited) = exit_within(child, Duration::from_secs(30)).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(exited, "wallet {mode} started on a newer schema: {stderr}");
        assert!(!output.status.success(), "{mode}: {stderr}");
        assert!(stderr.contains("9999_from_the_future"), "{mode}: {stderr}");
    }
}

/// Proves the README's way to change the partition count: `wallet migrate --partitions 4`
/// with a new operations topic creates it with 4 partitions, and accepts the existing events
/// topic with the 2 it has.
#[tokio::test]
async fn migrate_keeps_the_partitions_of_an_existing_topic() {
    let stack = Stack::start(2);
    let topic = format!("{}-4", stack.operations_topic);
    let output = stack
        .wallet_command(&["migrate", "--partitions", "4"])
        .env("WALLET_KAFKA__OPERATIONS_TOPIC", &topic)
        .output()
        .expect("wallet migrate runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let client = crate::broker::connect(&stack.broker).await;
    let topics = client.list_topics().await.expect("topics");
    let partitions = |name: &str| {
        topics
            .iter()
            .find(|candidate| candidate.name == name)
            .map(|found| found.partitions.len())
    };
    assert_eq!(partitions(&topic), Some(4));
    assert_eq!(partitions(&stack.events_topic), Some(2));
}
