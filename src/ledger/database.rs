//! PostgreSQL connections: the pool every mode uses, and single connections for migrations
//! and partition leases.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::store::StoreError;
use crate::config::DatabaseConfig;

/// What a connection's sessions do, which sets their bounds on the server (see
/// [`session_options`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// Requests, partition leases and operator commands.
    Ordinary,
    /// A worker's batches, which hold row locks: bounded by the lease lapse.
    Batch { lease_lapse: Duration },
    /// `wallet migrate`, which waits for the migration lock and may rewrite large tables.
    Migration,
}

fn connection_config(
    config: &DatabaseConfig,
    session: Session,
) -> anyhow::Result<tokio_postgres::Config> {
    let mut pg = tokio_postgres::Config::from_str(&config.url)
        .map_err(|error| anyhow::anyhow!("configuration: key `database.url`: {error}"))?;
    pg.connect_timeout(config.connect_timeout());
    pg.options(session_options(config.statement_timeout_ms, session));
    // An application_name in the URL names this process's sessions in pg_stat_activity.
    if pg.get_application_name().is_none() {
        pg.application_name("wallet");
    }
    Ok(pg)
}

/// Server-side bounds of a session. Ordinary sessions have the configured `statement_timeout`
/// (0, as in PostgreSQL, is no limit). A migration has neither a statement nor a lock timeout
/// (a server or role default would cancel them too): a second `wallet migrate` waits for the
/// first to finish, and a migration backfilling a large table takes as long as it takes; an
/// operator stops one with Ctrl-C, which ends the session.
///
/// A worker's batch sessions may not hold locks past the lease lapse while their process is
/// silent: a worker frozen after `BEGIN` (stopped, paused, cut off) loses its partitions'
/// leases after that lapse, so by then its transaction and row locks must be gone. Idle in the transaction,
/// `idle_in_transaction_session_timeout` ends it; frozen mid-statement (the server waits for
/// the rest of a pipelined request and the session stays active), only `statement_timeout`
/// does; frozen while a statement waits for a lock, `lock_timeout` fails the statement. Each of
/// those two leaves the session idle in its aborted transaction, which the idle timeout then
/// ends, so every bound is half the lapse: the two in a row fit within it (with the whole
/// lapse each, a worker frozen in a lock wait kept its locks for two lapses, which the chaos
/// test caught). `lock_timeout` also makes a worker that still meets such a lock give up and
/// retry its batch instead of queueing behind it. These bounds hold whatever the configured
/// statement timeout: a shorter one stays, a longer one or none gives way to half the lapse.
pub fn session_options(statement_timeout_ms: u64, session: Session) -> String {
    match session {
        Session::Ordinary => format!("-c statement_timeout={statement_timeout_ms}"),
        Session::Migration => "-c statement_timeout=0 -c lock_timeout=0".to_owned(),
        Session::Batch { lease_lapse } => {
            let half_ms = lock_hold_ms(lease_lapse);
            let statement_ms = match statement_timeout_ms {
                0 => half_ms,
                configured => configured.min(half_ms),
            };
            format!(
                "-c statement_timeout={statement_ms} -c idle_in_transaction_session_timeout={half_ms} -c lock_timeout={half_ms}"
            )
        }
    }
}

/// The longest a session that holds wallet locks may sit idle, run a statement or wait for a
/// lock, in milliseconds: half the lease lapse (see [`session_options`]).
fn lock_hold_ms(lease_lapse: Duration) -> u64 {
    let lapse_ms = u64::try_from(lease_lapse.as_millis()).unwrap_or(u64::MAX);
    (lapse_ms / 2).max(1)
}

/// The idle bound of a batch session, for one transaction of an ordinary session that locks
/// wallets: an API process frozen inside it keeps the wallets' batches waiting no longer than
/// a frozen worker would. Its statements keep the session's own bounds, so a read may wait
/// for a slow batch as long as the statement timeout allows.
pub fn lock_holding_transaction(lease_lapse: Duration) -> String {
    let ms = lock_hold_ms(lease_lapse);
    format!("SET LOCAL idle_in_transaction_session_timeout = {ms}")
}

/// Builds the pool. Connections are made lazily; call [`check`] to fail fast.
pub fn pool(config: &DatabaseConfig) -> anyhow::Result<Pool> {
    build_pool(config, connection_config(config, Session::Ordinary)?)
}

/// The pool a worker applies batches with: its sessions may not outlive a frozen worker's
/// lease while holding locks.
pub fn worker_pool(config: &DatabaseConfig, lease_lapse: Duration) -> anyhow::Result<Pool> {
    build_pool(
        config,
        connection_config(config, Session::Batch { lease_lapse })?,
    )
}

fn build_pool(config: &DatabaseConfig, pg: tokio_postgres::Config) -> anyhow::Result<Pool> {
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.connect_timeout()))
        .create_timeout(Some(config.connect_timeout()))
        .recycle_timeout(Some(config.connect_timeout()))
        .build()
        .context("building the PostgreSQL pool")
}

/// Opens one dedicated connection, whose driver task runs until the client is dropped.
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Client> {
    open(connection_config(config, Session::Ordinary)?).await
}

async fn open(pg: tokio_postgres::Config) -> anyhow::Result<Client> {
    let (client, connection) = pg.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            let error = StoreError::Database(error).describe();
            tracing::warn!(%error, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// Connects for `wallet migrate`, creating the database first when it does not exist yet, so
/// a fresh server needs no manual step. Its session is a [`Session::Migration`].
pub async fn connect_creating(config: &DatabaseConfig) -> anyhow::Result<Client> {
    let describe = || format!("cannot connect to PostgreSQL at {}", redact(&config.url));
    let migration = connection_config(config, Session::Migration)?;
    match open(migration.clone()).await {
        Ok(client) => Ok(client),
        Err(error) if sql_state(&error) == Some(&SqlState::INVALID_CATALOG_NAME) => {
            create_database(&migration).await?;
            open(migration).await.with_context(describe)
        }
        Err(error) => Err(error).with_context(describe),
    }
}

fn sql_state(error: &anyhow::Error) -> Option<&SqlState> {
    error.downcast_ref::<tokio_postgres::Error>()?.code()
}

async fn create_database(target: &tokio_postgres::Config) -> anyhow::Result<()> {
    let name = target
        .get_dbname()
        .context("configuration: key `database.url` names no database")?
        .to_owned();
    let mut maintenance = target.clone();
    maintenance.dbname("postgres");
    let (client, connection) = maintenance
        .connect(NoTls)
        .await
        .context("connecting to the `postgres` database to create the wallet database")?;
    tokio::spawn(connection);
    let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match client.batch_execute(&statement).await {
        Ok(()) => {
            tracing::info!(database = %name, "created database");
            Ok(())
        }
        // A concurrent `wallet migrate` created it first: either code can come back.
        Err(error)
            if matches!(
                error.code(),
                Some(&SqlState::DUPLICATE_DATABASE) | Some(&SqlState::UNIQUE_VIOLATION)
            ) =>
        {
            Ok(())
        }
        Err(error) => Err(error).with_context(|| format!("creating database {name}")),
    }
}

/// Checks that the pool can reach the server within its timeouts.
pub async fn check(pool: &Pool, deadline: Duration) -> anyhow::Result<()> {
    let attempt = async {
        let client = pool.get().await?;
        client.simple_query("SELECT 1").await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(deadline, attempt)
        .await
        .context("PostgreSQL did not answer in time")?
}

/// The connection string without its password, for messages and logs: in the URL form the
/// password of `user:password@` and of a `password=` parameter, in the `key=value` form the
/// value of `password`.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", redact_url(rest)),
        None => redact_keywords(url),
    }
}

/// `rest` is what follows `scheme://`: the user, the hosts, the path and the parameters.
fn redact_url(rest: &str) -> String {
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let parameters: Vec<&str> = query
                .split('&')
                .map(|parameter| match parameter.split_once('=') {
                    Some(("password", _)) => "password=***",
                    _ => parameter,
                })
                .collect();
            format!("{path}?{}", parameters.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{authority}{tail}")
}

/// The `key = value` form, whose values may be quoted with `'` and escape with `\`.
fn redact_keywords(text: &str) -> String {
    let mut redacted = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let key_start = rest.len() - rest.trim_start().len();
        redacted.push_str(&rest[..key_start]);
        rest = &rest[key_start..];
        if rest.is_empty() {
            return redacted;
        }
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        let Some(value) = rest[key_end..].trim_start().strip_prefix('=') else {
            // Not a connection string PostgreSQL would take; nothing to hide in it.
            redacted.push_str(rest);
            return redacted;
        };
        let value = value.trim_start();
        redacted.push_str(&rest[..rest.len() - value.len()]);
        let value_end = value_length(value);
        match key {
            "password" => redacted.push_str("***"),
            _ => redacted.push_str(&value[..value_end]),
        }
        rest = &value[value_end..];
    }
}

/// The length of the value at the start of `text`: up to the closing quote of a quoted one,
/// else up to the next whitespace.
fn value_length(text: &str) -> usize {
    let Some(quoted) = text.strip_prefix('\'') else {
        return text.find(char::is_whitespace).unwrap_or(text.len());
    };
    let mut escaped = false;
    for (at, c) in quoted.char_indices() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '\'') => return at + 2,
            (false, _) => {}
        }
    }
    text.len()
}

/// Takes a pooled connection; a pool that cannot give one means the database is unreachable.
pub async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
    pool.get().await.map_err(|error| match error {
        deadpool_postgres::PoolError::Backend(error) => StoreError::Database(error),
        other => StoreError::Unavailable(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves an application_name in the URL names the sessions (operators tell processes
    /// apart in pg_stat_activity), and `wallet` does otherwise.
    #[test]
    fn sessions_keep_the_url_application_name() {
        let named = DatabaseConfig {
            url: "postgres://wallet@localhost/wallet?application_name=work-1".to_owned(),
            ..DatabaseConfig::default()
        };
        let name = |config: &DatabaseConfig| {
            connection_config(config, Session::Ordinary)
                .ok()
                .and_then(|pg| pg.get_application_name().map(str::to_owned))
        };
        assert_eq!(name(&named).as_deref(), Some("work-1"));
        assert_eq!(name(&DatabaseConfig::default()).as_deref(), Some("wallet"));
    }

    /// Proves batch sessions are bounded on the server by the lease lapse, statements and lock
    /// waits followed by the idle timeout of their aborted transaction included, and other
    /// sessions only by the statement timeout. A statement timeout of 0 (no limit) leaves
    /// batch statements bounded all the same, and a migration has no statement or lock timeout.
    #[test]
    fn batch_sessions_end_within_the_lease_lapse() {
        let batch = |ms| Session::Batch {
            lease_lapse: Duration::from_millis(ms),
        };
        assert_eq!(
            session_options(30_000, Session::Ordinary),
            "-c statement_timeout=30000"
        );
        assert_eq!(
            session_options(30_000, batch(2_500)),
            "-c statement_timeout=1250 -c idle_in_transaction_session_timeout=1250 -c lock_timeout=1250"
        );
        assert_eq!(
            session_options(1_000, batch(2_500)),
            "-c statement_timeout=1000 -c idle_in_transaction_session_timeout=1250 -c lock_timeout=1250"
        );
        assert_eq!(
            session_options(0, Session::Ordinary),
            "-c statement_timeout=0"
        );
        assert_eq!(
            session_options(0, batch(2_500)),
            "-c statement_timeout=1250 -c idle_in_transaction_session_timeout=1250 -c lock_timeout=1250"
        );
        assert_eq!(
            session_options(1_000, batch(1)),
            "-c statement_timeout=1 -c idle_in_transaction_session_timeout=1 -c lock_timeout=1"
        );
        assert_eq!(
            lock_holding_transaction(Duration::from_millis(2_500)),
            "SET LOCAL idle_in_transaction_session_timeout = 1250"
        );
        assert_eq!(
            session_options(1_000, Session::Migration),
            "-c statement_timeout=0 -c lock_timeout=0"
        );
    }

    /// Proves no form of a connection string shows its password: the URL's user info and its
    /// `password` parameter, and the key=value form's `password`, quoted or not.
    #[test]
    fn passwords_are_redacted_in_every_form() {
        for (url, redacted) in [
            ("postgres://u:secret@h/db", "postgres://u:***@h/db"),
            (
                "postgres://u@h/db?password=secret",
                "postgres://u@h/db?password=***",
            ),
            (
                "postgresql://u:s@h1:5432,h2:5433/db?application_name=x&password=s2",
                "postgresql://u:***@h1:5432,h2:5433/db?application_name=x&password=***",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "host=h password=secret dbname=w",
                "host=h password=*** dbname=w",
            ),
            (
                r"host=h password = 'se cr\'et' dbname=w",
                "host=h password = *** dbname=w",
            ),
            ("password='x y'", "password=***"),
            ("host=h user=u dbname=w", "host=h user=u dbname=w"),
        ] {
            assert_eq!(redact(url), redacted, "{url}");
        }
    }
}
