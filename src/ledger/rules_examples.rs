//! The rules on hand-picked cases: each failure reason and each kind's entries.

use std::str::FromStr;

use super::tests::{apply_in_default, in_default, operation, zero};
use super::*;
use crate::ledger::money::Currency;
use crate::ledger::types::{HoldState, OperationKind};
use uuid::Uuid;

fn wallet_id(n: u128) -> WalletId {
    WalletId(Uuid::from_u128(n))
}

fn state(currency: &str, balance: &str, version: i64) -> WalletState {
    WalletState {
        currency: Currency::parse(currency).unwrap(),
        balance: BigDecimal::from_str(balance).unwrap(),
        overdraft_limit: zero(),
        held: zero(),
        version,
    }
}

fn dec(text: &str) -> BigDecimal {
    BigDecimal::from_str(text).unwrap()
}

// Proves a deposit to a wallet that does not exist fails and journals nothing.
#[test]
fn deposit_to_missing_wallet_fails_without_entries() {
    let mut wallets = HashMap::from([(wallet_id(1), state("USD", "10", 3))]);
    let before = wallets.clone();
    let ops = [operation(wallet_id(2), OperationKind::Deposit, "5")];

    let applied = apply_in_default(&mut wallets, &mut HashMap::new(), &ops);

    assert_eq!(
        applied.outcomes,
        [Outcome::Failed {
            reason: FailureReason::WalletNotFound,
            balance_after: None,
        }]
    );
    assert!(applied.entries.is_empty());
    assert_eq!(wallets, before);
}

// Proves a transfer to a missing target fails with one zero-delta entry on the source.
#[test]
fn transfer_to_missing_target_journals_a_zero_delta_on_the_source() {
    let source = wallet_id(1);
    let mut wallets = HashMap::from([(source, state("USD", "10.00", 7))]);
    let ops = [operation(
        source,
        OperationKind::Transfer {
            target: wallet_id(2),
        },
        "4.50",
    )];

    let applied = apply_in_default(&mut wallets, &mut HashMap::new(), &ops);

    assert_eq!(
        applied.outcomes,
        [Outcome::Failed {
            reason: FailureReason::TargetWalletNotFound,
            balance_after: Some(dec("10")),
        }]
    );
    assert_eq!(
        applied.entries,
        [Entry {
            wallet: in_default(source),
            version: 8,
            operation_id: ops[0].id,
            delta: zero(),
            balance_after: dec("10"),
            held_after: zero(),
        }]
    );
    assert_eq!(wallets[&source], state("USD", "10", 8));
    assert!(!wallets.contains_key(&wallet_id(2)));
}

// Proves a transfer from a wallet to itself is refused as SameWallet.
#[test]
fn transfer_to_same_wallet_is_refused() {
    let source = wallet_id(1);
    let mut wallets = HashMap::from([(source, state("USD", "10", 0))]);
    let ops = [operation(
        source,
        OperationKind::Transfer { target: source },
        "1",
    )];

    let applied = apply_in_default(&mut wallets, &mut HashMap::new(), &ops);

    assert_eq!(
        applied.outcomes,
        [Outcome::Failed {
            reason: FailureReason::SameWallet,
            balance_after: Some(dec("10")),
        }]
    );
    assert_eq!(applied.entries.len(), 1);
    assert_eq!(applied.entries[0].delta, zero());
    assert_eq!(wallets[&source], state("USD", "10", 1));
}

// Proves a transfer between wallets of different currencies is refused as CurrencyMismatch.
#[test]
fn transfer_between_currencies_is_refused() {
    let (usd, eur) = (wallet_id(1), wallet_id(2));
    let mut wallets = HashMap::from([(usd, state("USD", "10", 0)), (eur, state("EUR", "20", 5))]);
    let ops = [operation(usd, OperationKind::Transfer { target: eur }, "1")];

    let applied = apply_in_default(&mut wallets, &mut HashMap::new(), &ops);

    assert_eq!(
        applied.outcomes,
        [Outcome::Failed {
            reason: FailureReason::CurrencyMismatch,
            balance_after: Some(dec("10")),
        }]
    );
    assert_eq!(applied.entries.len(), 1);
    assert_eq!(applied.entries[0].wallet, in_default(usd));
    assert_eq!(applied.entries[0].delta, zero());
    assert_eq!(wallets[&usd], state("USD", "10", 1));
    assert_eq!(wallets[&eur], state("EUR", "20", 5));
}

// Proves an amount finer than the currency's minor unit is refused as InvalidAmount.
#[test]
fn fractional_yen_is_an_invalid_amount() {
    let yen = wallet_id(1);
    let mut wallets = HashMap::from([(yen, state("JPY", "100", 2))]);
    let ops = [
        operation(yen, OperationKind::Deposit, "1.5"),
        operation(yen, OperationKind::Deposit, "2"),
    ];

    let applied = apply_in_default(&mut wallets, &mut HashMap::new(), &ops);

    assert_eq!(
        applied.outcomes,
        [
            Outcome::Failed {
                reason: FailureReason::InvalidAmount,
                balance_after: Some(dec("100")),
            },
            Outcome::Processed {
                balance_after: dec("102"),
                amount: dec("2"),
            },
        ]
    );
    assert_eq!(wallets[&yen], state("JPY", "102", 4));
}

// Proves a processed transfer debits the source, credits the target and reports the source.
#[test]
fn processed_transfer_writes_both_entries() {
    let (source, target) = (wallet_id(1), wallet_id(2));
    let mut wallets = HashMap::from([
        (source, state("USD", "10.00", 4)),
        (target, state("USD", "1.25", 9)),
    ]);
    let ops = [operation(
        source,
        OperationKind::Transfer { target },
        "2.50",
    )];

    let applied = apply_in_default(&mut wallets, &mut HashMap::new(), &ops);

    assert_eq!(
        applied.outcomes,
        [Outcome::Processed {
            balance_after: dec("7.50"),
            amount: dec("2.50"),
        }]
    );
    assert_eq!(
        applied.entries,
        [
            Entry {
                wallet: in_default(source),
                version: 5,
                operation_id: ops[0].id,
                delta: dec("-2.5"),
                balance_after: dec("7.5"),
                held_after: zero(),
            },
            Entry {
                wallet: in_default(target),
                version: 10,
                operation_id: ops[0].id,
                delta: dec("2.5"),
                balance_after: dec("3.75"),
                held_after: zero(),
            },
        ]
    );
    assert_eq!(wallets[&source], state("USD", "7.5", 5));
    assert_eq!(wallets[&target], state("USD", "3.75", 10));
}

/// Each outcome's failure reason; none for a processed one.
fn reasons(applied: &Applied) -> Vec<Option<FailureReason>> {
    applied
        .outcomes
        .iter()
        .map(|outcome| match outcome {
            Outcome::Processed { .. } => None,
            Outcome::Failed { reason, .. } => Some(*reason),
        })
        .collect()
}

fn hold_kind(expires_in_s: i64) -> OperationKind {
    OperationKind::Hold {
        expires_at: Some(chrono::Utc::now() + chrono::Duration::seconds(expires_in_s)),
    }
}

// Proves a hold reserves funds (held up, available down, balance unchanged), a partial
// capture to another wallet moves money from what is held, and a void releases the rest.
#[test]
fn a_hold_is_captured_in_part_to_another_wallet_and_voided() {
    let (card, shop) = (wallet_id(1), wallet_id(2));
    let mut wallets = HashMap::from([(card, state("USD", "100", 0)), (shop, state("USD", "0", 0))]);
    let mut holds = HashMap::new();
    let place = operation(card, hold_kind(60), "30");
    let hold = place.id;
    let ops = [
        place,
        operation(card, OperationKind::Withdraw, "70.01"),
        operation(
            card,
            OperationKind::Capture {
                hold,
                target: Some(shop),
            },
            "12.50",
        ),
        super::tests::operation_with(card, OperationKind::Void { hold }, None),
        super::tests::operation_with(card, OperationKind::Capture { hold, target: None }, None),
    ];

    let applied = apply_in_default(&mut wallets, &mut holds, &ops);

    assert_eq!(
        reasons(&applied),
        [
            None,
            Some(FailureReason::InsufficientFunds),
            None,
            None,
            Some(FailureReason::HoldClosed)
        ]
    );
    assert_eq!(
        applied.outcomes[3],
        Outcome::Processed {
            balance_after: dec("87.5"),
            amount: dec("17.5"),
        },
        "a void releases what remained"
    );
    let card_held: Vec<BigDecimal> = applied
        .entries
        .iter()
        .filter(|entry| entry.wallet.id == card)
        .map(|entry| entry.held_after.clone())
        .collect();
    assert_eq!(
        card_held,
        [dec("30"), dec("30"), dec("17.5"), zero(), zero()]
    );
    assert_eq!(wallets[&card].balance, dec("87.5"));
    assert_eq!(wallets[&card].held, zero());
    assert_eq!(wallets[&shop].balance, dec("12.5"));
    let scoped = ops[0].scoped_id();
    assert_eq!(applied.holds, std::slice::from_ref(&scoped));
    assert_eq!(holds[&scoped].state, HoldState::Voided);
    assert_eq!(holds[&scoped].captured, dec("12.5"));
}

// Proves a capture past the hold's expiry, of more than remains, of another wallet's hold or
// by another tenant is refused with its own reason, and an EXPIRE releases an open hold
// once while a second one is HOLD_CLOSED.
#[test]
fn hold_refusals_and_expiry() {
    let (card, other) = (wallet_id(1), wallet_id(2));
    let mut wallets = HashMap::from([
        (card, state("USD", "50", 0)),
        (other, state("USD", "50", 0)),
    ]);
    let mut holds = HashMap::new();
    let soon = operation(card, hold_kind(1), "10");
    let later = operation(card, hold_kind(3_600), "20");
    let capture =
        |hold, amount: &str| operation(card, OperationKind::Capture { hold, target: None }, amount);
    let past_expiry = Operation {
        accepted_at: chrono::Utc::now() + chrono::Duration::seconds(5),
        ..capture(soon.id, "1")
    };
    let foreign = Operation {
        tenant: "globex".to_owned(),
        ..capture(later.id, "1")
    };
    let expire = |hold| super::tests::operation_with(card, OperationKind::Expire { hold }, None);
    let ops = [
        soon.clone(),
        later.clone(),
        past_expiry,
        capture(later.id, "20.01"),
        operation(
            other,
            OperationKind::Capture {
                hold: later.id,
                target: None,
            },
            "1",
        ),
        foreign,
        expire(soon.id),
        expire(soon.id),
        operation(card, hold_kind(0), "1"),
        operation(card, hold_kind(60), "30.01"),
    ];

    let applied = apply_in_default(&mut wallets, &mut holds, &ops);

    assert_eq!(
        reasons(&applied),
        [
            None,
            None,
            Some(FailureReason::HoldClosed),
            Some(FailureReason::CaptureExceedsHold),
            Some(FailureReason::HoldNotFound),
            // Another tenant's operation finds no wallet with the card's id in its tenant.
            Some(FailureReason::WalletNotFound),
            None,
            Some(FailureReason::HoldClosed),
            Some(FailureReason::InvalidExpiry),
            Some(FailureReason::InsufficientFunds),
        ]
    );
    assert_eq!(holds[&soon.scoped_id()].state, HoldState::Expired);
    assert_eq!(holds[&later.scoped_id()].state, HoldState::Open);
    assert_eq!(wallets[&card].held, dec("20"));
    assert_eq!(wallets[&card].balance, dec("50"));
    assert_eq!(wallets[&card].available(), dec("30"));
}

// Proves wallets resolve in the operation's tenant only: two tenants' wallets with the same
// id are independent, an operation of a tenant that has no wallet with the id fails as
// WalletNotFound, and a transfer to an id only another tenant has fails as
// TargetWalletNotFound; no other tenant's wallet changes.
#[test]
fn wallets_resolve_in_the_operations_tenant_only() {
    let (shared, only_globex) = (wallet_id(1), wallet_id(2));
    let in_tenant = |tenant: &str, id| ScopedWalletId {
        tenant: tenant.to_owned(),
        id,
    };
    let mut wallets = HashMap::from([
        (in_tenant("acme", shared), state("USD", "10", 4)),
        (in_tenant("globex", shared), state("EUR", "3", 0)),
        (in_tenant("globex", only_globex), state("USD", "0", 0)),
    ]);
    let of = |tenant: &str, operation: Operation| Operation {
        tenant: tenant.to_owned(),
        ..operation
    };
    let ops = [
        of("acme", operation(shared, OperationKind::Withdraw, "1")),
        of("globex", operation(shared, OperationKind::Deposit, "2")),
        of("initech", operation(shared, OperationKind::Deposit, "5")),
        of(
            "acme",
            operation(
                shared,
                OperationKind::Transfer {
                    target: only_globex,
                },
                "1",
            ),
        ),
    ];

    let applied = apply(&mut wallets, &mut HashMap::new(), &ops);

    assert_eq!(
        reasons(&applied),
        [
            None,
            None,
            Some(FailureReason::WalletNotFound),
            Some(FailureReason::TargetWalletNotFound),
        ]
    );
    assert_eq!(wallets[&in_tenant("acme", shared)], state("USD", "9", 6));
    assert_eq!(wallets[&in_tenant("globex", shared)], state("EUR", "5", 1));
    assert_eq!(
        wallets[&in_tenant("globex", only_globex)],
        state("USD", "0", 0)
    );
    let journaled: Vec<(&str, i64)> = applied
        .entries
        .iter()
        .map(|entry| (entry.wallet.tenant.as_str(), entry.version))
        .collect();
    assert_eq!(journaled, [("acme", 5), ("globex", 1), ("acme", 6)]);
}
