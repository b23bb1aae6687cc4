//! The events other systems learn changes from: one per operation per wallet it touched, and
//! one per created wallet. Built here, purely, from what the rules decided; stored in the
//! outbox by the same transaction and published by the relay.

use std::collections::HashMap;

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::metadata::Metadata;
use super::money::format_decimal;
use super::types::{
    Entry, FailureReason, Operation, OperationId, OperationType, Outcome, WalletId,
};

/// Namespace of event ids: an event's id is derived from what it describes, so it is the same
/// however often the event is published.
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x3c1d_9a2e_7b4f_4e61_8d05_c2a9_1f7e_6b38);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    WalletCreated,
    OperationProcessed,
    OperationFailed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub wallet_id: WalletId,
    /// The tenant owning the wallet (for an operation on a wallet that does not exist, the
    /// operation's tenant), so consumers can route events by tenant: a wallet id is unique
    /// only within its tenant.
    pub tenant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<OperationId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_type: Option<OperationType>,
    /// What a processed operation moved (for a VOID or an EXPIRE, what it released); what a
    /// failed one asked for, if it named an amount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance_after: Option<String>,
    /// What the wallet held after the event; absent where `version` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_after: Option<String>,
    /// The hold a HOLD placed (its own id) or a CAPTURE, VOID or EXPIRE acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<OperationId>,
    /// The wallet's version after the event; absent only for an operation on a wallet that
    /// does not exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterparty_wallet_id: Option<WalletId>,
    /// The operation's labels; absent when it had none.
    #[serde(skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
    /// A created wallet's overdraft limit; absent on operation events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overdraft_limit: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

pub fn wallet_created(
    wallet_id: WalletId,
    tenant: &str,
    overdraft_limit: &BigDecimal,
    at: DateTime<Utc>,
) -> Event {
    Event {
        event_id: Uuid::new_v5(
            &EVENT_NAMESPACE,
            format!("{tenant}:{wallet_id}:created").as_bytes(),
        ),
        event_type: EventType::WalletCreated,
        wallet_id,
        tenant: tenant.to_owned(),
        operation_id: None,
        operation_type: None,
        amount: None,
        balance_after: Some("0".to_owned()),
        held_after: Some("0".to_owned()),
        hold_id: None,
        version: Some(0),
        reason: None,
        counterparty_wallet_id: None,
        metadata: Metadata::default(),
        overdraft_limit: Some(format_decimal(overdraft_limit)),
        occurred_at: at,
    }
}

/// The events of a decided batch, in journal order: one per entry (both wallets of a
/// processed transfer), plus one per operation on a wallet that does not exist.
pub fn for_batch(
    operations: &[Operation],
    outcomes: &[Outcome],
    entries: &[Entry],
    at: DateTime<Utc>,
) -> Vec<Event> {
    // Two tenants may use the same id in one batch; an entry's operation is its wallet's
    // tenant's.
    let decided: HashMap<(&str, OperationId), (&Operation, &Outcome)> = operations
        .iter()
        .zip(outcomes)
        .map(|(operation, outcome)| {
            (
                (operation.tenant.as_str(), operation.id),
                (operation, outcome),
            )
        })
        .collect();
    let mut events: Vec<Event> = entries
        .iter()
        .filter_map(|entry| {
            let (operation, outcome) =
                decided.get(&(entry.wallet.tenant.as_str(), entry.operation_id))?;
            let counterparty = match operation.kind.target() {
                Some(target) if target == entry.wallet.id => Some(operation.wallet_id),
                target => target,
            };
            Some(event(
                operation,
                outcome,
                entry.wallet.id,
                Some(entry),
                counterparty,
                at,
            ))
        })
        .collect();
    for (operation, outcome) in operations.iter().zip(outcomes) {
        if let Outcome::Failed {
            balance_after: None,
            ..
        } = outcome
        {
            events.push(event(
                operation,
                outcome,
                operation.wallet_id,
                None,
                operation.kind.target(),
                at,
            ));
        }
    }
    events
}

/// The events of operations the database refused and the batch kept as dead letters: each is
/// FAILED with reason `REJECTED`, on its source wallet.
pub fn for_rejected(operations: &[Operation], at: DateTime<Utc>) -> Vec<Event> {
    let outcome = Outcome::Failed {
        reason: FailureReason::Rejected,
        balance_after: None,
    };
    operations
        .iter()
        .map(|operation| {
            event(
                operation,
                &outcome,
                operation.wallet_id,
                None,
                operation.kind.target(),
                at,
            )
        })
        .collect()
}

fn event(
    operation: &Operation,
    outcome: &Outcome,
    wallet_id: WalletId,
    entry: Option<&Entry>,
    counterparty: Option<WalletId>,
    at: DateTime<Utc>,
) -> Event {
    let (event_type, reason, amount) = match outcome {
        Outcome::Processed { amount, .. } => (
            EventType::OperationProcessed,
            None,
            Some(format_decimal(amount)),
        ),
        Outcome::Failed { reason, .. } => (
            EventType::OperationFailed,
            Some(reason.as_str()),
            operation.amount.as_ref().map(ToString::to_string),
        ),
    };
    let hold_id = operation.hold_id();
    Event {
        event_id: Uuid::new_v5(
            &EVENT_NAMESPACE,
            format!("{}:{}:{wallet_id}", operation.tenant, operation.id).as_bytes(),
        ),
        event_type,
        wallet_id,
        tenant: operation.tenant.clone(),
        operation_id: Some(operation.id),
        operation_type: Some(operation.kind.operation_type()),
        amount,
        balance_after: entry.map(|entry| format_decimal(&entry.balance_after)),
        held_after: entry.map(|entry| format_decimal(&entry.held_after)),
        hold_id,
        version: entry.map(|entry| entry.version),
        reason,
        counterparty_wallet_id: counterparty,
        metadata: operation.metadata.clone(),
        overdraft_limit: None,
        occurred_at: at,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::ledger::money::{Amount, Currency};
    use crate::ledger::rules;
    use crate::ledger::types::{OperationKind, ScopedWalletId, WalletState};

    fn wallet(n: u128) -> WalletId {
        WalletId(Uuid::from_u128(n))
    }

    fn operation(n: u128, source: WalletId, kind: OperationKind, amount: &str) -> Operation {
        Operation {
            tenant: "acme".to_owned(),
            id: OperationId(Uuid::from_u128(1000 + n)),
            wallet_id: source,
            kind,
            amount: Some(Amount::parse(amount).unwrap()),
            accepted_at: Utc::now(),
            fingerprint: "f".to_owned(),
            metadata: Metadata::default(),
        }
    }

    /// Proves a processed transfer yields one event per wallet, a failure on a missing wallet
    /// one event without a version, and ids are stable.
    #[test]
    fn one_event_per_wallet_touched() {
        let (a, b, missing) = (wallet(1), wallet(2), wallet(3));
        let state = |balance: i64| WalletState {
            currency: Currency::USD,
            balance: balance.into(),
            overdraft_limit: 0.into(),
            held: 0.into(),
            version: 4,
        };
        let acme = |id| ScopedWalletId {
            tenant: "acme".to_owned(),
            id,
        };
        let mut wallets = HashMap::from([(acme(a), state(10)), (acme(b), state(0))]);
        let operations = vec![
            operation(1, a, OperationKind::Transfer { target: b }, "3"),
            operation(2, missing, OperationKind::Deposit, "1"),
            operation(3, b, OperationKind::Withdraw, "50"),
        ];
        let applied = rules::apply(&mut wallets, &mut HashMap::new(), &operations);
        let at = Utc::now();
        let events = for_batch(&operations, &applied.outcomes, &applied.entries, at);
        let summary: Vec<(WalletId, EventType, Option<i64>, Option<WalletId>)> = events
            .iter()
            .map(|event| {
                (
                    event.wallet_id,
                    event.event_type,
                    event.version,
                    event.counterparty_wallet_id,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (a, EventType::OperationProcessed, Some(5), Some(b)),
                (b, EventType::OperationProcessed, Some(5), Some(a)),
                (b, EventType::OperationFailed, Some(6), None),
                (missing, EventType::OperationFailed, None, None),
            ]
        );
        let owners: Vec<&str> = events.iter().map(|event| event.tenant.as_str()).collect();
        assert_eq!(owners, ["acme"; 4]);
        let again = for_batch(&operations, &applied.outcomes, &applied.entries, at);
        assert_eq!(events, again);
        assert_ne!(events[0].event_id, events[1].event_id);
        let globex: Vec<Operation> = operations
            .iter()
            .map(|operation| Operation {
                tenant: "globex".to_owned(),
                ..operation.clone()
            })
            .collect();
        let theirs = for_batch(&globex, &applied.outcomes, &[], at);
        let ours = for_batch(&operations, &applied.outcomes, &[], at);
        assert_ne!(
            theirs[0].event_id, ours[0].event_id,
            "the same operation and wallet ids of two tenants are two events"
        );
    }

    /// Proves an operation the database refused still yields its FAILED event, on its source
    /// wallet and tenant, with reason REJECTED and no version.
    #[test]
    fn a_refused_operation_is_a_failed_event() {
        let refused = operation(7, wallet(1), OperationKind::Deposit, "2");
        let events = for_rejected(std::slice::from_ref(&refused), Utc::now());
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event.event_type, EventType::OperationFailed);
        assert_eq!(event.reason, Some("REJECTED"));
        assert_eq!((event.wallet_id, event.version), (wallet(1), None));
        assert_eq!(event.tenant, "acme");
        assert_eq!(event.operation_id, Some(refused.id));
    }
}
