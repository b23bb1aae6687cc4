//! Schema migrations: the ordered files of `sql/`, each applied once and recorded.

use anyhow::Context;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// Every migration, in order. A new file in `sql/` is added here with the next number.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "ledger", include_str!("../../sql/0001_ledger.sql")),
    (2, "outbox", include_str!("../../sql/0002_outbox.sql")),
    (3, "auth", include_str!("../../sql/0003_auth.sql")),
    (
        4,
        "tenant_operations",
        include_str!("../../sql/0004_tenant_operations.sql"),
    ),
    (5, "overdraft", include_str!("../../sql/0005_overdraft.sql")),
    (6, "metadata", include_str!("../../sql/0006_metadata.sql")),
    (
        7,
        "entry_times",
        include_str!("../../sql/0007_entry_times.sql"),
    ),
    (
        8,
        "entry_foreign_keys",
        include_str!("../../sql/0008_entry_foreign_keys.sql"),
    ),
    (
        9,
        "outbox_batches",
        include_str!("../../sql/0009_outbox_batches.sql"),
    ),
    (10, "holds", include_str!("../../sql/0010_holds.sql")),
    (
        11,
        "dead_letter_targets",
        include_str!("../../sql/0011_dead_letter_targets.sql"),
    ),
    (
        12,
        "tenant_wallets",
        include_str!("../../sql/0012_tenant_wallets.sql"),
    ),
    (
        13,
        "topic_layouts",
        include_str!("../../sql/0013_topic_layouts.sql"),
    ),
];

/// An arbitrary constant: the advisory lock that serialises concurrent `wallet migrate` runs.
pub const MIGRATION_LOCK_KEY: i64 = 0x7761_6c6c_6574_6d67;

/// The newest migration this release knows.
fn known_version() -> i32 {
    MIGRATIONS.last().map_or(0, |&(version, _, _)| version)
}

/// Refuses a database a newer release migrated: this release would run against a schema it
/// does not know (say, after a rollback of the binary). A database without
/// `schema_migrations` has no schema yet, which is not this check's to refuse.
pub async fn refuse_newer(client: &Client) -> anyhow::Result<()> {
    let rows = match client
        .query(
            "SELECT version, name FROM schema_migrations WHERE version > $1 ORDER BY version",
            &[&known_version()],
        )
        .await
    {
        Ok(rows) => rows,
        Err(error) if error.code() == Some(&SqlState::UNDEFINED_TABLE) => return Ok(()),
        Err(error) => return Err(error).context("reading schema_migrations"),
    };
    let unknown: Vec<String> = rows
        .iter()
        .map(|row| format!("{:04}_{}", row.get::<_, i32>(0), row.get::<_, String>(1)))
        .collect();
    anyhow::ensure!(
        unknown.is_empty(),
        "the database has migration(s) {} that this release does not know (it knows up to \
         {:04}): a newer release migrated it; run that release",
        unknown.join(", "),
        known_version()
    );
    Ok(())
}

/// Applies the migrations not yet recorded and returns how many it applied. Concurrent
/// callers queue on an advisory lock, so the second finds everything applied.
pub async fn apply(client: &mut Client) -> anyhow::Result<usize> {
    let free: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .context("taking the migration lock")?
        .get(0);
    if !free {
        tracing::info!("another `wallet migrate` holds the migration lock; waiting for it");
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await
            .context("waiting for the migration lock")?;
    }
    let result = apply_locked(client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .context("releasing the migration lock")?;
    result
}

async fn apply_locked(client: &mut Client) -> anyhow::Result<usize> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .context("creating schema_migrations")?;
    refuse_newer(client).await?;
    let mut applied = 0;
    for &(version, name, sql) in MIGRATIONS {
        let transaction = client.transaction().await?;
        let done = transaction
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[&version],
            )
            .await?
            .is_some();
        if done {
            continue;
        }
        transaction
            .batch_execute(sql)
            .await
            .with_context(|| format!("applying migration {version:04}_{name}"))?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&version, &name],
            )
            .await?;
        transaction.commit().await?;
        tracing::info!(version, name, "applied migration");
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::kind::OperationType;
    use crate::ledger::types::HoldState;

    /// The names the last migration stating `check` lists in it, sorted.
    fn stated(check: &str) -> Vec<&'static str> {
        let stated = MIGRATIONS
            .iter()
            .rev()
            .find_map(|(_, _, sql)| sql.rfind(check).map(|at| &sql[at + check.len()..]))
            .expect("a migration states the check");
        let list = &stated[..stated.find(')').expect("the list is closed")];
        let mut names: Vec<&str> = list
            .split(',')
            .map(|name| name.trim().trim_matches('\''))
            .collect();
        names.sort_unstable();
        names
    }

    /// Proves the schema accepts exactly the kinds the code knows: a kind missing from the
    /// `CHECK` on `operations.type` would reject whole batches. The last migration that
    /// states the check is the one in force.
    #[test]
    fn the_operations_type_check_lists_every_kind() {
        let mut in_code: Vec<&str> = OperationType::ALL
            .into_iter()
            .map(OperationType::as_str)
            .collect();
        in_code.sort_unstable();
        assert_eq!(stated("CHECK (type IN ("), in_code);
    }

    /// Proves the schema accepts exactly the hold states the code knows.
    #[test]
    fn the_holds_state_check_lists_every_state() {
        let mut in_code: Vec<&str> = HoldState::ALL.into_iter().map(HoldState::as_str).collect();
        in_code.sort_unstable();
        assert_eq!(stated("CHECK (state IN ("), in_code);
    }
}
