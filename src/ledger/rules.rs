//! The ledger rules: a pure function from wallet states and ordered operations to new states,
//! one outcome per operation and the journal entries. No I/O happens here.

use std::collections::HashMap;

use bigdecimal::{BigDecimal, Zero};

use super::kind::Direction;
use super::types::{Entry, FailureReason, Operation, Outcome, WalletId, WalletState};

/// The result of applying a batch: outcomes in the order of the operations, and the entries
/// in the order they were written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub outcomes: Vec<Outcome>,
    pub entries: Vec<Entry>,
}

/// Applies `operations` in order to `wallets`, which must hold every existing wallet the
/// operations touch; a wallet absent from the map does not exist.
///
/// # Panics
/// When a computed balance is below its floor (`-overdraft_limit`) or a version does not advance by one. Both are
/// impossible by construction; stopping beats writing a wrong balance.
pub fn apply(wallets: &mut HashMap<WalletId, WalletState>, operations: &[Operation]) -> Applied {
    let mut applied = Applied::default();
    for operation in operations {
        let outcome = apply_one(wallets, operation, &mut applied.entries);
        applied.outcomes.push(outcome);
    }
    applied
}

fn apply_one(
    wallets: &mut HashMap<WalletId, WalletState>,
    operation: &Operation,
    entries: &mut Vec<Entry>,
) -> Outcome {
    let amount = operation.amount.value();
    let Some(source) = wallets.get(&operation.wallet_id) else {
        return Outcome::Failed {
            reason: FailureReason::WalletNotFound,
            balance_after: None,
        };
    };
    let effect = operation.kind.operation_type().effect();
    // The API checks the amount too; the rules re-check because any producer may write the
    // topic.
    let rejection = if operation.amount.check_currency(source.currency).is_err() {
        Some(FailureReason::InvalidAmount)
    } else {
        rejection(wallets, source, operation, effect.source)
    };
    if let Some(reason) = rejection {
        let balance_after = record(
            wallets,
            operation,
            operation.wallet_id,
            BigDecimal::from(0),
            entries,
        );
        return Outcome::Failed {
            reason,
            balance_after: Some(balance_after),
        };
    }
    let delta = effect.source.signed(amount);
    let balance_after = record(wallets, operation, operation.wallet_id, delta, entries);
    if let Some(target) = operation.kind.target() {
        record(wallets, operation, target, amount.clone(), entries);
    }
    Outcome::Processed { balance_after }
}

/// Why the operation cannot be applied, if it cannot: its target first (a second wallet of
/// the same currency), then whether the source can afford a debit.
fn rejection(
    wallets: &HashMap<WalletId, WalletState>,
    source: &WalletState,
    operation: &Operation,
    direction: Direction,
) -> Option<FailureReason> {
    if let Some(target) = operation.kind.target() {
        if target == operation.wallet_id {
            return Some(FailureReason::SameWallet);
        }
        let Some(target_state) = wallets.get(&target) else {
            return Some(FailureReason::TargetWalletNotFound);
        };
        if target_state.currency != source.currency {
            return Some(FailureReason::CurrencyMismatch);
        }
    }
    match direction {
        Direction::Credit => None,
        Direction::Debit => (source.available() < *operation.amount.value())
            .then_some(FailureReason::InsufficientFunds),
    }
}

/// Moves `delta` into `wallet_id`, bumps its version, journals it, and returns the new balance.
fn record(
    wallets: &mut HashMap<WalletId, WalletState>,
    operation: &Operation,
    wallet_id: WalletId,
    delta: BigDecimal,
    entries: &mut Vec<Entry>,
) -> BigDecimal {
    let Some(state) = wallets.get_mut(&wallet_id) else {
        unreachable!("callers check that {wallet_id} exists before recording");
    };
    let previous_version = state.version;
    state.balance = &state.balance + &delta;
    state.version += 1;
    assert!(
        state.available() >= BigDecimal::zero(),
        "wallet {wallet_id} would go below its overdraft limit"
    );
    assert_eq!(state.version, previous_version + 1);
    entries.push(Entry {
        wallet_id,
        version: state.version,
        operation_id: operation.id,
        delta,
        balance_after: state.balance.clone(),
    });
    state.balance.clone()
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "rules_examples.rs"]
mod examples;
