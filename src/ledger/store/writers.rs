//! The batch transaction's writers: one statement per table, every row of the batch at once.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::wallets::wallet_from_row;
use super::{prepared, Batch, DeadLetter, StoreError, Wallet};
use crate::ledger::types::{Entry, Operation, Outcome, ScopedWalletId, WalletState};

/// Inserts the operations; one whose id is stored already fails the statement with a unique
/// violation on the operations key.
pub(super) async fn write_operations(
    client: &impl GenericClient,
    partition: i32,
    operations: &[(i64, Operation)],
    outcomes: &[Outcome],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let count = operations.len();
    let (mut ids, mut wallets, mut types, mut amounts, mut targets) = (
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
    );
    let (mut statuses, mut reasons, mut balances, mut fingerprints, mut offsets, mut accepted) = (
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
    );
    let mut tenants = Vec::with_capacity(count);
    let mut metadata = Vec::with_capacity(count);
    let mut holds = Vec::with_capacity(count);
    for ((offset, operation), outcome) in operations.iter().zip(outcomes) {
        tenants.push(operation.tenant.as_str());
        ids.push(operation.id.0);
        wallets.push(operation.wallet_id.0);
        types.push(operation.kind.operation_type().as_str());
        // What a processed operation moved, which a CAPTURE of all that remained, a VOID
        // and an EXPIRE do not name; what a failed one asked for.
        amounts.push(match outcome {
            Outcome::Processed { amount, .. } => Some(amount.to_plain_string()),
            Outcome::Failed { .. } => operation.amount.as_ref().map(ToString::to_string),
        });
        targets.push(operation.kind.target().map(|target| target.0));
        holds.push(operation.hold_id().map(|hold| hold.0));
        statuses.push(outcome.status().as_str());
        let (reason, balance_after) = match outcome {
            Outcome::Processed { balance_after, .. } => (None, Some(balance_after)),
            Outcome::Failed {
                reason,
                balance_after,
            } => (Some(reason.as_str()), balance_after.as_ref()),
        };
        reasons.push(reason);
        balances.push(balance_after.map(|balance| balance.to_plain_string()));
        fingerprints.push(operation.fingerprint.as_str());
        offsets.push(*offset);
        accepted.push(operation.accepted_at);
        metadata.push(operation.metadata.canonical());
    }
    client
        .execute(
            &prepared(client, "INSERT INTO operations (tenant, id, wallet_id, type, amount, to_wallet_id, status, reason, balance_after,
                                     fingerprint, partition, \"offset\", accepted_at, processed_at, metadata, hold_id)
             SELECT tenant, id, wallet_id, type, amount::numeric, to_wallet_id, status, reason, balance_after::numeric,
                    fingerprint, $10, \"offset\", accepted_at, $13, metadata::jsonb, hold_id
             FROM unnest($14::text[], $1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::text[],
                         $8::text[], $9::text[], $11::bigint[], $12::timestamptz[], $15::text[], $16::uuid[])
                  AS t(tenant, id, wallet_id, type, amount, to_wallet_id, status, reason, balance_after, fingerprint,
                       \"offset\", accepted_at, metadata, hold_id)").await?,
            &[
                &ids, &wallets, &types, &amounts, &targets, &statuses, &reasons, &balances, &fingerprints, &partition, &offsets,
                &accepted, &now, &tenants, &metadata, &holds,
            ],
        )
        .await?;
    Ok(())
}

/// An entry is recorded at `now` or, when the wallet changed later than that (a batch of
/// another partition that took its time after this one, or a worker whose clock runs ahead),
/// at that change: a wallet's journal times follow its versions, so the balance at an instant
/// never goes back.
pub(super) async fn write_entries(
    client: &impl GenericClient,
    entries: &[Entry],
    changed: &HashMap<ScopedWalletId, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let wallets: Vec<Uuid> = entries.iter().map(|entry| entry.wallet.id.0).collect();
    let entry_tenants: Vec<&str> = entries
        .iter()
        .map(|entry| entry.wallet.tenant.as_str())
        .collect();
    let recorded = entries
        .iter()
        .map(|entry| {
            changed
                .get(&entry.wallet)
                .map(|changed| now.max(*changed))
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("entry for unlocked wallet {}", entry.wallet))
                })
        })
        .collect::<Result<Vec<DateTime<Utc>>, StoreError>>()?;
    let versions: Vec<i64> = entries.iter().map(|entry| entry.version).collect();
    let operations: Vec<Uuid> = entries.iter().map(|entry| entry.operation_id.0).collect();
    let deltas: Vec<String> = entries
        .iter()
        .map(|entry| entry.delta.to_plain_string())
        .collect();
    let balances: Vec<String> = entries
        .iter()
        .map(|entry| entry.balance_after.to_plain_string())
        .collect();
    let held: Vec<String> = entries
        .iter()
        .map(|entry| entry.held_after.to_plain_string())
        .collect();
    client
        .execute(
            &prepared(
                client,
                "INSERT INTO entries (wallet_id, version, operation_id, delta, balance_after, tenant, recorded_at, held_after)
             SELECT wallet_id, version, operation_id, delta::numeric, balance_after::numeric, tenant, recorded_at, held_after::numeric
             FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::text[])
                  AS t(wallet_id, version, operation_id, delta, balance_after, tenant, recorded_at, held_after)",
            )
            .await?,
            &[
                &wallets,
                &versions,
                &operations,
                &deltas,
                &balances,
                &entry_tenants,
                &recorded,
                &held,
            ],
        )
        .await?;
    Ok(())
}

/// A wallet changed at `now` is updated then, or at its last change when that came later (see
/// [`write_entries`]).
pub(super) async fn write_wallets(
    client: &impl GenericClient,
    states: &HashMap<ScopedWalletId, WalletState>,
    touched: &HashSet<&ScopedWalletId>,
    now: DateTime<Utc>,
) -> Result<Vec<Wallet>, StoreError> {
    let mut tenants = Vec::with_capacity(touched.len());
    let mut ids = Vec::with_capacity(touched.len());
    let mut balances = Vec::with_capacity(touched.len());
    let mut versions = Vec::with_capacity(touched.len());
    let mut held = Vec::with_capacity(touched.len());
    for id in touched {
        let state = &states[*id];
        tenants.push(id.tenant.as_str());
        ids.push(id.id.0);
        balances.push(state.balance.to_plain_string());
        versions.push(state.version);
        held.push(state.held.to_plain_string());
    }
    let rows = client
        .query(
            &prepared(client, "UPDATE wallets w SET balance = t.balance::numeric, version = t.version, updated_at = GREATEST($4, w.updated_at),
                                      held = t.held::numeric
             FROM unnest($6::text[], $1::uuid[], $2::text[], $3::bigint[], $5::text[]) AS t(tenant, id, balance, version, held)
             WHERE w.tenant = t.tenant AND w.id = t.id
             RETURNING w.id, w.currency, w.balance::text, w.version, w.created_at, w.updated_at, w.tenant,
                       w.overdraft_limit::text, w.held::text").await?,
            &[&ids, &balances, &versions, &now, &held, &tenants],
        )
        .await?;
    rows.iter().map(wallet_from_row).collect()
}

pub(super) async fn write_dead_letters(
    client: &impl GenericClient,
    batch: &Batch,
    dead_letters: &[DeadLetter],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if dead_letters.is_empty() {
        return Ok(());
    }
    let offsets: Vec<i64> = dead_letters.iter().map(|letter| letter.offset).collect();
    // PostgreSQL text cannot hold NUL, and a reason may quote raw input.
    let reasons: Vec<String> = dead_letters
        .iter()
        .map(|letter| letter.reason.replace('\0', ""))
        .collect();
    let payloads: Vec<Option<&[u8]>> = dead_letters
        .iter()
        .map(|letter| letter.payload.as_deref())
        .collect();
    let operations: Vec<Option<&Operation>> = dead_letters
        .iter()
        .map(|letter| letter.operation.as_ref())
        .collect();
    let tenants: Vec<Option<&str>> = operations
        .iter()
        .map(|operation| operation.map(|operation| operation.tenant.as_str()))
        .collect();
    let ids: Vec<Option<Uuid>> = operations
        .iter()
        .map(|operation| operation.map(|operation| operation.id.0))
        .collect();
    let wallets: Vec<Option<Uuid>> = operations
        .iter()
        .map(|operation| operation.map(|operation| operation.wallet_id.0))
        .collect();
    let targets: Vec<Option<Uuid>> = operations
        .iter()
        .map(|operation| {
            operation
                .and_then(|operation| operation.kind.target())
                .map(|id| id.0)
        })
        .collect();
    let accepted: Vec<Option<DateTime<Utc>>> = operations
        .iter()
        .map(|operation| operation.map(|operation| operation.accepted_at))
        .collect();
    client
        .execute(
            &prepared(client, "INSERT INTO dead_letters (topic, partition, \"offset\", reason, payload, recorded_at,
                                       tenant, operation_id, wallet_id, accepted_at, to_wallet_id)
             SELECT $1, $2, \"offset\", reason, payload, $6, tenant, operation_id, wallet_id, accepted_at, to_wallet_id
             FROM unnest($3::bigint[], $4::text[], $5::bytea[], $7::text[], $8::uuid[], $9::uuid[], $10::timestamptz[], $11::uuid[])
                  AS t(\"offset\", reason, payload, tenant, operation_id, wallet_id, accepted_at, to_wallet_id)
             ON CONFLICT DO NOTHING").await?,
            &[
                &batch.topic,
                &batch.partition,
                &offsets,
                &reasons,
                &payloads,
                &now,
                &tenants,
                &ids,
                &wallets,
                &accepted,
                &targets,
            ],
        )
        .await?;
    Ok(())
}
