//! The rules on hand-picked cases: each failure reason and each kind's entries.

use std::str::FromStr;

use super::tests::{operation, zero};
use super::*;
use crate::ledger::money::Currency;
use crate::ledger::types::OperationKind;
use uuid::Uuid;

fn wallet_id(n: u128) -> WalletId {
    WalletId(Uuid::from_u128(n))
}

fn state(currency: &str, balance: &str, version: i64) -> WalletState {
    WalletState {
        currency: Currency::parse(currency).unwrap(),
        balance: BigDecimal::from_str(balance).unwrap(),
        overdraft_limit: zero(),
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

    let applied = apply(&mut wallets, &ops);

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

    let applied = apply(&mut wallets, &ops);

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
            wallet_id: source,
            version: 8,
            operation_id: ops[0].id,
            delta: zero(),
            balance_after: dec("10"),
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

    let applied = apply(&mut wallets, &ops);

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

    let applied = apply(&mut wallets, &ops);

    assert_eq!(
        applied.outcomes,
        [Outcome::Failed {
            reason: FailureReason::CurrencyMismatch,
            balance_after: Some(dec("10")),
        }]
    );
    assert_eq!(applied.entries.len(), 1);
    assert_eq!(applied.entries[0].wallet_id, usd);
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

    let applied = apply(&mut wallets, &ops);

    assert_eq!(
        applied.outcomes,
        [
            Outcome::Failed {
                reason: FailureReason::InvalidAmount,
                balance_after: Some(dec("100")),
            },
            Outcome::Processed {
                balance_after: dec("102"),
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

    let applied = apply(&mut wallets, &ops);

    assert_eq!(
        applied.outcomes,
        [Outcome::Processed {
            balance_after: dec("7.50"),
        }]
    );
    assert_eq!(
        applied.entries,
        [
            Entry {
                wallet_id: source,
                version: 5,
                operation_id: ops[0].id,
                delta: dec("-2.5"),
                balance_after: dec("7.5"),
            },
            Entry {
                wallet_id: target,
                version: 10,
                operation_id: ops[0].id,
                delta: dec("2.5"),
                balance_after: dec("3.75"),
            },
        ]
    );
    assert_eq!(wallets[&source], state("USD", "7.5", 5));
    assert_eq!(wallets[&target], state("USD", "3.75", 10));
}
