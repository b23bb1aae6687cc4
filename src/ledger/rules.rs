//! The ledger rules: a pure function from wallet states, hold states and ordered operations
//! to new states, one outcome per operation and the journal entries. No I/O happens here.

use std::collections::{HashMap, HashSet};

use bigdecimal::{BigDecimal, Zero};

use super::kind::Direction;
use super::money::Amount;
use super::types::{
    Entry, FailureReason, Hold, HoldState, Operation, OperationId, OperationKind, Outcome,
    ScopedId, ScopedWalletId, WalletId, WalletState,
};

/// The result of applying a batch: outcomes in the order of the operations, the entries in
/// the order they were written, and the holds placed or changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub outcomes: Vec<Outcome>,
    pub entries: Vec<Entry>,
    /// Each hold the batch placed or changed, once, in the order it first changed; its new
    /// state is in the holds map.
    pub holds: Vec<ScopedId>,
}

/// Applies `operations` in order to `wallets`, which must hold every existing wallet the
/// operations touch, and to `holds`, which must hold every existing hold they name; a
/// wallet or hold absent from its map does not exist. An operation finds wallets and holds
/// only in its own tenant: one naming another tenant's wallet finds none, whoever produced it.
///
/// # Panics
/// When a computed balance less what is held is below its floor (`-overdraft_limit`), what
/// is held or captured goes below zero or beyond a hold's amount, or a version does not
/// advance by one. All are impossible by construction; stopping beats writing a wrong
/// balance.
pub fn apply(
    wallets: &mut HashMap<ScopedWalletId, WalletState>,
    holds: &mut HashMap<ScopedId, Hold>,
    operations: &[Operation],
) -> Applied {
    let mut applied = Applied::default();
    let mut changed = HashSet::new();
    for operation in operations {
        let decided = wallets
            .get(&operation.wallet())
            .map(|source| decide(wallets, holds, source, operation));
        let outcome = match decided {
            None => Outcome::Failed {
                reason: FailureReason::WalletNotFound,
                balance_after: None,
            },
            Some(Ok(change)) => {
                if let Some((id, _)) = &change.hold {
                    if changed.insert(id.clone()) {
                        applied.holds.push(id.clone());
                    }
                }
                commit(wallets, holds, operation, change, &mut applied.entries)
            }
            Some(Err(reason)) => {
                let unchanged = Change::none();
                let balance_after = record(
                    wallets,
                    operation,
                    operation.wallet(),
                    &unchanged,
                    &mut applied.entries,
                );
                Outcome::Failed {
                    reason,
                    balance_after: Some(balance_after),
                }
            }
        };
        applied.outcomes.push(outcome);
    }
    applied
}

/// What a decided operation changes.
struct Change {
    /// Added to the source's balance.
    delta: BigDecimal,
    /// Added to what the source holds.
    held: BigDecimal,
    /// What the operation moved (see [`Outcome::Processed`]).
    amount: BigDecimal,
    /// Credited with `amount`.
    target: Option<WalletId>,
    /// The hold's state afterwards.
    hold: Option<(ScopedId, Hold)>,
}

impl Change {
    fn none() -> Change {
        Change {
            delta: BigDecimal::zero(),
            held: BigDecimal::zero(),
            amount: BigDecimal::zero(),
            target: None,
            hold: None,
        }
    }
}

fn commit(
    wallets: &mut HashMap<ScopedWalletId, WalletState>,
    holds: &mut HashMap<ScopedId, Hold>,
    operation: &Operation,
    change: Change,
    entries: &mut Vec<Entry>,
) -> Outcome {
    let balance_after = record(wallets, operation, operation.wallet(), &change, entries);
    if let Some(target) = change.target {
        let target = operation.in_tenant(target);
        let credit = Change {
            delta: change.amount.clone(),
            ..Change::none()
        };
        record(wallets, operation, target, &credit, entries);
    }
    if let Some((id, hold)) = change.hold {
        assert!(
            hold.captured >= BigDecimal::zero() && hold.captured <= hold.amount,
            "hold {} would capture {} of {}",
            id.id,
            hold.captured,
            hold.amount
        );
        holds.insert(id, hold);
    }
    Outcome::Processed {
        balance_after,
        amount: change.amount,
    }
}

/// What the operation changes, or why it cannot be applied. The API checks the amount too;
/// the rules re-check because any producer may write the topic.
fn decide(
    wallets: &HashMap<ScopedWalletId, WalletState>,
    holds: &HashMap<ScopedId, Hold>,
    source: &WalletState,
    operation: &Operation,
) -> Result<Change, FailureReason> {
    if let Some(amount) = &operation.amount {
        amount
            .check_currency(source.currency)
            .map_err(|_| FailureReason::InvalidAmount)?;
    }
    match operation.kind {
        OperationKind::Deposit | OperationKind::Withdraw | OperationKind::Transfer { .. } => {
            move_money(wallets, source, operation)
        }
        OperationKind::Hold { expires_at } => {
            let amount = required_amount(operation)?;
            let expires_at = expires_at
                .filter(|at| *at > operation.accepted_at)
                .ok_or(FailureReason::InvalidExpiry)?;
            if source.available() < *amount {
                return Err(FailureReason::InsufficientFunds);
            }
            let hold = Hold {
                wallet_id: operation.wallet_id,
                amount: amount.clone(),
                captured: BigDecimal::zero(),
                state: HoldState::Open,
                expires_at,
            };
            Ok(Change {
                held: amount.clone(),
                amount: amount.clone(),
                hold: Some((operation.scoped_id(), hold)),
                ..Change::none()
            })
        }
        OperationKind::Capture { hold, .. } => capture(wallets, holds, source, operation, hold),
        OperationKind::Void { hold } => {
            let (id, found) = find_hold(holds, operation, hold)?;
            if closed_to_clients(found, operation) {
                return Err(FailureReason::HoldClosed);
            }
            Ok(release(id, found, HoldState::Voided))
        }
        OperationKind::Expire { hold } => {
            let (id, found) = find_hold(holds, operation, hold)?;
            if found.state != HoldState::Open {
                return Err(FailureReason::HoldClosed);
            }
            Ok(release(id, found, HoldState::Expired))
        }
    }
}

fn required_amount(operation: &Operation) -> Result<&BigDecimal, FailureReason> {
    operation
        .amount
        .as_ref()
        .map(Amount::value)
        .ok_or(FailureReason::InvalidAmount)
}

/// A DEPOSIT, WITHDRAW or TRANSFER: its target first (a second wallet of the same currency),
/// then whether the source can afford a debit.
fn move_money(
    wallets: &HashMap<ScopedWalletId, WalletState>,
    source: &WalletState,
    operation: &Operation,
) -> Result<Change, FailureReason> {
    let amount = required_amount(operation)?;
    check_target(wallets, source, operation)?;
    let direction = operation.kind.operation_type().effect().source;
    if direction == Direction::Debit && source.available() < *amount {
        return Err(FailureReason::InsufficientFunds);
    }
    Ok(Change {
        delta: direction.signed(amount),
        amount: amount.clone(),
        target: operation.kind.target(),
        ..Change::none()
    })
}

/// A CAPTURE takes from what the hold reserved, so it needs no funds beyond it: the balance
/// and what is held go down together.
fn capture(
    wallets: &HashMap<ScopedWalletId, WalletState>,
    holds: &HashMap<ScopedId, Hold>,
    source: &WalletState,
    operation: &Operation,
    hold: OperationId,
) -> Result<Change, FailureReason> {
    let (id, found) = find_hold(holds, operation, hold)?;
    if closed_to_clients(found, operation) {
        return Err(FailureReason::HoldClosed);
    }
    let remaining = found.remaining();
    let amount = match &operation.amount {
        Some(amount) => amount.value().clone(),
        None => remaining.clone(),
    };
    if amount > remaining {
        return Err(FailureReason::CaptureExceedsHold);
    }
    check_target(wallets, source, operation)?;
    let captured = &found.captured + &amount;
    let state = match captured == found.amount {
        true => HoldState::Captured,
        false => HoldState::Open,
    };
    let after = Hold {
        captured,
        state,
        ..found.clone()
    };
    Ok(Change {
        delta: -amount.clone(),
        held: -amount.clone(),
        target: operation.kind.target(),
        amount,
        hold: Some((id, after)),
    })
}

/// Releases what remains of an open hold, closing it in `state`.
fn release(id: ScopedId, found: &Hold, state: HoldState) -> Change {
    let remaining = found.remaining();
    let after = Hold {
        state,
        ..found.clone()
    };
    Change {
        held: -remaining.clone(),
        amount: remaining,
        hold: Some((id, after)),
        ..Change::none()
    }
}

/// The hold `hold` of the operation's tenant, when it is on the operation's wallet: another
/// wallet's hold (or another tenant's) is one this operation cannot see.
fn find_hold<'a>(
    holds: &'a HashMap<ScopedId, Hold>,
    operation: &Operation,
    hold: OperationId,
) -> Result<(ScopedId, &'a Hold), FailureReason> {
    let id = ScopedId {
        tenant: operation.tenant.clone(),
        id: hold,
    };
    let found = holds
        .get(&id)
        .filter(|found| found.wallet_id == operation.wallet_id)
        .ok_or(FailureReason::HoldNotFound)?;
    Ok((id, found))
}

/// A client may capture or void a hold only while it is open and before its `expiresAt`,
/// judged by when the request was accepted, so the outcome does not depend on how soon the
/// worker's EXPIRE follows.
fn closed_to_clients(hold: &Hold, operation: &Operation) -> bool {
    hold.state != HoldState::Open || operation.accepted_at >= hold.expires_at
}

/// A second wallet of the same currency, when the kind credits one.
fn check_target(
    wallets: &HashMap<ScopedWalletId, WalletState>,
    source: &WalletState,
    operation: &Operation,
) -> Result<(), FailureReason> {
    let Some(target) = operation.kind.target() else {
        return Ok(());
    };
    if target == operation.wallet_id {
        return Err(FailureReason::SameWallet);
    }
    let target_state = wallets
        .get(&operation.in_tenant(target))
        .ok_or(FailureReason::TargetWalletNotFound)?;
    if target_state.currency != source.currency {
        return Err(FailureReason::CurrencyMismatch);
    }
    Ok(())
}

/// Applies `change`'s balance and held deltas to `wallet`, bumps its version, journals it,
/// and returns the new balance.
fn record(
    wallets: &mut HashMap<ScopedWalletId, WalletState>,
    operation: &Operation,
    wallet: ScopedWalletId,
    change: &Change,
    entries: &mut Vec<Entry>,
) -> BigDecimal {
    let Some(state) = wallets.get_mut(&wallet) else {
        unreachable!("callers check that {wallet} exists before recording");
    };
    let previous_version = state.version;
    state.balance = &state.balance + &change.delta;
    state.held = &state.held + &change.held;
    state.version += 1;
    assert!(
        state.held >= BigDecimal::zero(),
        "wallet {wallet} would hold less than nothing"
    );
    assert!(
        state.available() >= BigDecimal::zero(),
        "wallet {wallet} would go below its overdraft limit"
    );
    assert_eq!(state.version, previous_version + 1);
    entries.push(Entry {
        wallet,
        version: state.version,
        operation_id: operation.id,
        delta: change.delta.clone(),
        balance_after: state.balance.clone(),
        held_after: state.held.clone(),
    });
    state.balance.clone()
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "rules_examples.rs"]
mod examples;
