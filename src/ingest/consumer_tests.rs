//! Unit tests of the consumer's pure parts.

use super::*;
use crate::cache::MarkerState;
use crate::ledger::money::{Amount, Currency};
use crate::ledger::types::{
    Operation, OperationId, OperationKind, OperationType, Outcome, WalletId,
};
use bigdecimal::BigDecimal;
use uuid::Uuid;

/// Proves the final marker carries the fingerprint of the record the batch applied, so
/// the applied request's retry is recognised as the same request, and shows the operation in
/// its wallet's currency as the stored record does; and that an operation the database
/// refused is FAILED with a reason.
#[test]
fn final_markers_name_the_applied_record() {
    use crate::ledger::metadata::Metadata;
    let applied = Operation {
        tenant: "acme".to_owned(),
        id: OperationId(Uuid::from_u128(1)),
        wallet_id: WalletId(Uuid::from_u128(2)),
        kind: OperationKind::Deposit,
        amount: Some(Amount::parse("5").unwrap()),
        accepted_at: chrono::Utc::now(),
        fingerprint: "applied".to_owned(),
        metadata: Metadata::default(),
    };
    let refused = Operation {
        id: OperationId(Uuid::from_u128(3)),
        fingerprint: "refused".to_owned(),
        ..applied.clone()
    };
    let report = BatchReport {
        decided: vec![(
            applied.clone(),
            Outcome::Processed {
                balance_after: BigDecimal::from(5),
                amount: BigDecimal::from(5),
            },
        )],
        rejected: vec![refused.clone()],
        currencies: HashMap::from([(applied.wallet(), Currency::USD)]),
        ..BatchReport::default()
    };
    let markers: HashMap<ScopedId, Marker> = final_markers(&report).into_iter().collect();
    let marker = &markers[&applied.scoped_id()];
    assert_eq!(marker.state, MarkerState::Processed);
    assert_eq!(marker.fingerprint, "applied");
    assert_eq!(marker.balance_after.as_deref(), Some("5.00"));
    let decision = marker
        .decision
        .as_ref()
        .expect("a final marker shows the operation");
    assert_eq!(decision.operation_type, OperationType::Deposit);
    assert_eq!(decision.amount.as_deref(), Some("5.00"));
    let marker = &markers[&refused.scoped_id()];
    assert_eq!(marker.state, MarkerState::Failed);
    assert_eq!(marker.reason.as_deref(), Some("REJECTED"));
    assert_eq!(marker.decision, None);
}

/// Proves a balance is written only while it is fresh: a write later than half the lease
/// lapse after its batch began (a paused worker's, a retried one) is dropped instead.
#[test]
fn balances_are_late_after_half_the_lease_lapse() {
    let began = chrono::Utc::now();
    let lapse = Duration::from_secs(2);
    let at = |millis| began + chrono::Duration::milliseconds(millis);
    assert!(!is_late(began, at(50), lapse));
    assert!(!is_late(began, at(999), lapse));
    assert!(is_late(began, at(1_001), lapse));
    assert!(
        !is_late(began, at(-5), lapse),
        "a clock step back is not lateness"
    );
    let mut stale = StaleCache::new(10);
    let wallet = ScopedWalletId {
        tenant: "acme".to_owned(),
        id: WalletId(Uuid::from_u128(4)),
    };
    stale.wallets.insert(
        wallet.clone(),
        CachedWallet {
            wallet_id: wallet.id,
            tenant: "acme".to_owned(),
            currency: Currency::USD,
            balance: "1.00".to_owned(),
            overdraft_limit: None,
            available: None,
            held: None,
            version: 1,
            created_at: began,
            updated_at: began,
        },
    );
    stale.forget_balances();
    assert!(stale.wallets.is_empty());
    assert!(stale.forget.contains(&wallet));
}

/// Proves the wallets whose balances wait to be dropped stay within their bound: past it the
/// list gives way to dropping every cached balance; a wallet suspected while that walk is
/// under way is listed again (the walk may have passed its entry), and past the bound again
/// the walk starts over.
#[test]
fn balances_to_drop_are_bounded() {
    let wallet = |n| ScopedWalletId {
        tenant: "acme".to_owned(),
        id: WalletId(Uuid::from_u128(n)),
    };
    let mut stale = StaleCache::new(3);
    stale.suspect((1..=3).map(wallet));
    assert_eq!(stale.forget.len(), 3);
    assert!(stale.sweep.is_none());
    stale.suspect([wallet(2)]);
    assert!(
        stale.sweep.is_none(),
        "a wallet already listed adds nothing"
    );
    stale.suspect([wallet(4)]);
    assert!(stale.sweep.is_some());
    assert!(stale.forget.is_empty());
    stale.suspect([wallet(5)]);
    assert!(stale.forget.contains(&wallet(5)));
    stale.sweep = None;
    stale.suspect((6..=1_000).map(wallet));
    assert!(stale.forget.is_empty());
    assert!(
        stale.sweep.is_some(),
        "past the bound again, a walk is to be made"
    );
    assert!(!stale.is_empty(), "dropping everything is still to do");
}
