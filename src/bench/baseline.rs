//! `wallet bench --baseline row-lock`: the design this project replaces, driven directly
//! against the same PostgreSQL with the scenario's wallets, mix, connections and duration: per
//! operation one transaction that locks the wallet row(s), checks the balance, updates it and
//! appends a journal row. Its throughput is the yardstick the report divides by.

use std::time::{Duration, Instant};

use anyhow::Context;
use bigdecimal::{BigDecimal, Signed};
use rand::SeedableRng;
use tokio_postgres::Client;
use uuid::Uuid;

use super::load::{plan, Sent};
use super::{BenchOptions, FUNDING};
use crate::clock;
use crate::config::DatabaseConfig;
use crate::ledger::database;

/// Its own schema, so the baseline never touches the service's ledger.
const SCHEMA: &str = "
    SET client_min_messages = warning;
    CREATE SCHEMA IF NOT EXISTS bench_baseline;
    DROP TABLE IF EXISTS bench_baseline.entries, bench_baseline.wallets;
    CREATE TABLE bench_baseline.wallets (
        id uuid PRIMARY KEY, balance numeric NOT NULL CHECK (balance >= 0), version bigint NOT NULL);
    CREATE TABLE bench_baseline.entries (
        wallet_id uuid NOT NULL, version bigint NOT NULL, operation_id uuid NOT NULL,
        delta numeric NOT NULL, balance_after numeric NOT NULL, PRIMARY KEY (wallet_id, version));";

/// Operations the row-lock design applied per second over the scenario's duration.
pub async fn run(database: &DatabaseConfig, options: &BenchOptions) -> anyhow::Result<f64> {
    let setup = database::connect(database)
        .await
        .context("connecting to PostgreSQL for the baseline")?;
    setup
        .batch_execute(SCHEMA)
        .await
        .context("creating the baseline tables")?;
    let wallets: Vec<Uuid> = (0..options.wallets.max(1))
        .map(|_| Uuid::new_v4())
        .collect();
    setup
        .execute(
            "INSERT INTO bench_baseline.wallets SELECT id, $2::text::numeric, 0 FROM unnest($1::uuid[]) AS id",
            &[&wallets, &FUNDING],
        )
        .await
        .context("funding the baseline wallets")?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(options.duration_s);
    let mut tasks = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        let client = database::connect(database).await?;
        let (options, wallets) = (options.clone(), wallets.clone());
        tasks.push(tokio::spawn(async move {
            drive(&client, &options, &wallets, deadline).await
        }));
    }
    let mut applied = 0u64;
    for task in tasks {
        applied += task.await.context("a baseline task panicked")??;
    }
    Ok(applied as f64 / start.elapsed().as_secs_f64().max(f64::EPSILON))
}

async fn drive(
    client: &Client,
    options: &BenchOptions,
    wallets: &[Uuid],
    deadline: Instant,
) -> anyhow::Result<u64> {
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    let mut applied = 0;
    while Instant::now() < deadline {
        // The replaced design has no holds: a HOLD moves nothing, and nothing settles one.
        let operation = plan(&mut rng, options, wallets.len(), &mut Vec::new());
        apply(client, &operation, wallets)
            .await
            .context("a baseline transaction failed")?;
        applied += 1;
    }
    Ok(applied)
}

/// One operation as the replaced design applies it; an unaffordable one rolls back.
async fn apply(client: &Client, operation: &Sent, wallets: &[Uuid]) -> anyhow::Result<()> {
    let source = wallets[operation.source];
    let amount = operation.amount.clone();
    let effect = operation.operation_type.effect();
    let mut legs: Vec<(Uuid, BigDecimal)> = vec![(source, effect.source.signed(&amount))];
    if let Some(target) = operation.target {
        legs.push((wallets[target], amount));
    }
    let mut ids: Vec<Uuid> = legs.iter().map(|(id, _)| *id).collect();
    ids.sort();
    client.batch_execute("BEGIN").await?;
    let locked = client
        .query(
            "SELECT id, balance::text FROM bench_baseline.wallets WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await?;
    let affordable = legs.iter().all(|(id, delta)| {
        locked.iter().any(|row| {
            row.get::<_, Uuid>(0) == *id
                && row
                    .get::<_, String>(1)
                    .parse::<BigDecimal>()
                    .is_ok_and(|balance| !(balance + delta).is_negative())
        })
    });
    if !affordable {
        client.batch_execute("ROLLBACK").await?;
        return Ok(());
    }
    for (id, delta) in &legs {
        let delta = delta.to_plain_string();
        client
            .execute(
                "WITH moved AS (UPDATE bench_baseline.wallets SET balance = balance + $2::text::numeric,
                     version = version + 1 WHERE id = $1 RETURNING balance, version)
                 INSERT INTO bench_baseline.entries SELECT $1, version, $3, $2::text::numeric, balance FROM moved",
                &[id, &delta, &clock::new_operation_id().0],
            )
            .await?;
    }
    client.batch_execute("COMMIT").await?;
    Ok(())
}
