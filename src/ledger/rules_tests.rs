use std::collections::BTreeMap;

use bigdecimal::num_bigint::BigInt;
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::ledger::metadata::Metadata;
use crate::ledger::money::{Amount, Currency};
use crate::ledger::types::{OperationId, OperationKind, OperationStatus};

// ---------------------------------------------------------------------------------------------
// Generated scenarios
// ---------------------------------------------------------------------------------------------

/// An amount as the generator chose it, kept in integer form so the model never has to
/// trust decimal arithmetic.
#[derive(Debug, Clone, Copy)]
enum AmountSpec {
    /// Hundredths: valid for USD.
    Cents(u64),
    /// Thousandths with a non-zero last digit: always too precise for USD.
    Mills(u64),
}

impl AmountSpec {
    fn text(self) -> String {
        match self {
            AmountSpec::Cents(cents) => format!("{}.{:02}", cents / 100, cents % 100),
            AmountSpec::Mills(mills) => format!("{}.{:03}", mills / 1000, mills % 1000),
        }
    }

    fn mills(self) -> i128 {
        match self {
            AmountSpec::Cents(cents) => i128::from(cents) * 10,
            AmountSpec::Mills(mills) => i128::from(mills),
        }
    }
}

/// Wallets are addressed by slot; slot `wallets.len()` is a wallet that does not exist.
#[derive(Debug, Clone, Copy)]
enum KindSpec {
    Deposit,
    Withdraw,
    Transfer(usize),
}

#[derive(Debug, Clone, Copy)]
struct OpSpec {
    source: usize,
    kind: KindSpec,
    amount: AmountSpec,
}

#[derive(Debug, Clone)]
struct Scenario {
    /// Initial balance in cents, overdraft limit in cents and initial version of each existing
    /// wallet. A balance starts at or above zero; the limit lets it go below.
    initial: Vec<(u64, u64, i64)>,
    ops: Vec<OpSpec>,
}

fn slot(wallets: usize) -> impl Strategy<Value = usize> {
    prop_oneof![9 => 0..wallets, 1 => Just(wallets)]
}

fn op_spec(wallets: usize) -> impl Strategy<Value = OpSpec> {
    let kind = prop_oneof![
        Just(KindSpec::Deposit),
        Just(KindSpec::Withdraw),
        slot(wallets).prop_map(KindSpec::Transfer),
    ];
    let amount = prop_oneof![
        19 => (1u64..=50_000).prop_map(AmountSpec::Cents),
        1 => (0u64..=5_000, 1u64..=9)
            .prop_map(|(tens, last)| AmountSpec::Mills(tens * 10 + last)),
    ];
    (slot(wallets), kind, amount).prop_map(|(source, kind, amount)| OpSpec {
        source,
        kind,
        amount,
    })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    // Each operation writes at most one entry per wallet, so this headroom keeps versions
    // from overflowing even for a wallet touched by all 200 operations.
    let version = prop_oneof![Just(0i64), 0..=i64::MAX - 256];
    let limit = prop_oneof![Just(0u64), 0u64..=50_000];
    prop::collection::vec((0u64..=100_000, limit, version), 1..=6)
        .prop_flat_map(|initial| {
            let ops = prop::collection::vec(op_spec(initial.len()), 0..200);
            (Just(initial), ops)
        })
        .prop_map(|(initial, ops)| Scenario { initial, ops })
}

/// A scenario turned into the real types, before and after `apply`.
struct Run {
    ids: Vec<WalletId>,
    initial: HashMap<WalletId, WalletState>,
    operations: Vec<Operation>,
    applied: Applied,
    wallets: HashMap<WalletId, WalletState>,
}

impl Run {
    fn new(scenario: &Scenario) -> Self {
        let ids: Vec<WalletId> = (0..=scenario.initial.len())
            .map(|slot| WalletId(Uuid::from_u128(slot as u128 + 1)))
            .collect();
        let initial: HashMap<WalletId, WalletState> = scenario
            .initial
            .iter()
            .zip(&ids)
            .map(|(&(cents, limit, version), &id)| {
                let state = WalletState {
                    currency: Currency::USD,
                    balance: BigDecimal::new(BigInt::from(cents), 2),
                    overdraft_limit: BigDecimal::new(BigInt::from(limit), 2),
                    version,
                };
                (id, state)
            })
            .collect();
        let operations: Vec<Operation> = scenario
            .ops
            .iter()
            .map(|spec| {
                let kind = match spec.kind {
                    KindSpec::Deposit => OperationKind::Deposit,
                    KindSpec::Withdraw => OperationKind::Withdraw,
                    KindSpec::Transfer(target) => OperationKind::Transfer {
                        target: ids[target],
                    },
                };
                operation(ids[spec.source], kind, &spec.amount.text())
            })
            .collect();
        let mut wallets = initial.clone();
        let applied = apply(&mut wallets, &operations);
        Run {
            ids,
            initial,
            operations,
            applied,
            wallets,
        }
    }

    fn total(wallets: &HashMap<WalletId, WalletState>) -> BigDecimal {
        wallets
            .values()
            .fold(BigDecimal::from(0), |sum, state| sum + &state.balance)
    }

    /// The source's balance just before `op`, read back from the journal.
    fn source_balance_before(&self, op: &Operation) -> BigDecimal {
        self.applied
            .entries
            .iter()
            .find(|entry| entry.operation_id == op.id && entry.wallet_id == op.wallet_id)
            .map(|entry| &entry.balance_after - &entry.delta)
            .expect("an operation on an existing wallet writes an entry")
    }

    fn deltas_by_operation(&self) -> HashMap<OperationId, BigDecimal> {
        let mut deltas: HashMap<OperationId, BigDecimal> = HashMap::new();
        for entry in &self.applied.entries {
            let sum = deltas
                .entry(entry.operation_id)
                .or_insert_with(|| BigDecimal::from(0));
            *sum += &entry.delta;
        }
        deltas
    }
}

pub(super) fn operation(wallet_id: WalletId, kind: OperationKind, amount: &str) -> Operation {
    Operation {
        tenant: "default".to_owned(),
        id: OperationId(Uuid::new_v4()),
        wallet_id,
        kind,
        amount: Amount::parse(amount).expect("test amounts are well-formed"),
        accepted_at: chrono::Utc::now(),
        fingerprint: format!("test-{amount}"),
        metadata: Metadata::default(),
    }
}

pub(super) fn zero() -> BigDecimal {
    BigDecimal::from(0)
}

fn from_mills(mills: i128) -> BigDecimal {
    BigDecimal::new(BigInt::from(mills), 3)
}

// ---------------------------------------------------------------------------------------------
// The sequential model
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct ModelWallet {
    mills: i128,
    limit_mills: i128,
    version: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ModelOutcome {
    status: OperationStatus,
    reason: Option<FailureReason>,
    balance_after_mills: Option<i128>,
}

/// The rules restated as plainly as possible over integer thousandths of a dollar.
fn model(scenario: &Scenario) -> (Vec<ModelOutcome>, BTreeMap<usize, ModelWallet>) {
    let mut wallets: BTreeMap<usize, ModelWallet> = scenario
        .initial
        .iter()
        .enumerate()
        .map(|(slot, &(cents, limit, version))| {
            let wallet = ModelWallet {
                mills: i128::from(cents) * 10,
                limit_mills: i128::from(limit) * 10,
                version,
            };
            (slot, wallet)
        })
        .collect();
    let mut outcomes = Vec::with_capacity(scenario.ops.len());
    for op in &scenario.ops {
        let Some(source) = wallets.get(&op.source).copied() else {
            outcomes.push(ModelOutcome {
                status: OperationStatus::Failed,
                reason: Some(FailureReason::WalletNotFound),
                balance_after_mills: None,
            });
            continue;
        };
        let amount = op.amount.mills();
        let available = source.mills + source.limit_mills;
        let reason = if amount % 10 != 0 {
            Some(FailureReason::InvalidAmount)
        } else {
            match op.kind {
                KindSpec::Deposit => None,
                KindSpec::Withdraw if amount > available => Some(FailureReason::InsufficientFunds),
                KindSpec::Withdraw => None,
                KindSpec::Transfer(target) if target == op.source => {
                    Some(FailureReason::SameWallet)
                }
                KindSpec::Transfer(target) if !wallets.contains_key(&target) => {
                    Some(FailureReason::TargetWalletNotFound)
                }
                KindSpec::Transfer(_) if amount > available => {
                    Some(FailureReason::InsufficientFunds)
                }
                KindSpec::Transfer(_) => None,
            }
        };
        let delta = match (reason, op.kind) {
            (Some(_), _) => 0,
            (None, KindSpec::Deposit) => amount,
            (None, KindSpec::Withdraw | KindSpec::Transfer(_)) => -amount,
        };
        let wallet = wallets.get_mut(&op.source).expect("source exists");
        wallet.mills += delta;
        wallet.version += 1;
        let balance_after_mills = Some(wallet.mills);
        if let (None, KindSpec::Transfer(target)) = (reason, op.kind) {
            let wallet = wallets.get_mut(&target).expect("target exists");
            wallet.mills += amount;
            wallet.version += 1;
        }
        outcomes.push(ModelOutcome {
            status: if reason.is_some() {
                OperationStatus::Failed
            } else {
                OperationStatus::Processed
            },
            reason,
            balance_after_mills,
        });
    }
    (outcomes, wallets)
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    // Proves money is only created by processed deposits and destroyed by processed withdrawals.
    #[test]
    fn money_is_conserved(scenario in scenario()) {
        let run = Run::new(&scenario);
        let deltas = run.deltas_by_operation();
        let mut net = zero();
        for (op, outcome) in run.operations.iter().zip(&run.applied.outcomes) {
            let source_exists = run.initial.contains_key(&op.wallet_id);
            let valid_amount = op.amount.check_currency(Currency::USD).is_ok();
            if source_exists && !valid_amount {
                prop_assert_eq!(
                    outcome,
                    &Outcome::Failed {
                        reason: FailureReason::InvalidAmount,
                        balance_after: Some(run.source_balance_before(op)),
                    }
                );
            }
            let moved = deltas.get(&op.id).cloned().unwrap_or_else(zero);
            match (outcome, op.kind) {
                (Outcome::Processed { .. }, OperationKind::Deposit) => {
                    prop_assert_eq!(&moved, op.amount.value());
                    net += op.amount.value();
                }
                (Outcome::Processed { .. }, OperationKind::Withdraw) => {
                    prop_assert_eq!(&moved, &-op.amount.value());
                    net -= op.amount.value();
                }
                // A transfer moves money between wallets and never changes the total.
                (Outcome::Processed { .. }, OperationKind::Transfer { .. })
                | (Outcome::Failed { .. }, _) => prop_assert_eq!(moved, zero()),
            }
        }
        prop_assert_eq!(Run::total(&run.wallets), Run::total(&run.initial) + net);
    }

    // Proves no balance ever goes below minus its overdraft limit, and a debit beyond it is
    // refused as InsufficientFunds.
    #[test]
    fn nothing_is_overdrawn(scenario in scenario()) {
        let run = Run::new(&scenario);
        let floor = |id: &WalletId| -run.initial[id].overdraft_limit.clone();
        let mut balances: HashMap<WalletId, BigDecimal> = run
            .initial
            .iter()
            .map(|(&id, state)| (id, state.balance.clone()))
            .collect();
        let mut entries = run.applied.entries.iter().peekable();
        for (op, outcome) in run.operations.iter().zip(&run.applied.outcomes) {
            let before = balances.get(&op.wallet_id).cloned();
            while let Some(entry) = entries.next_if(|entry| entry.operation_id == op.id) {
                prop_assert!(
                    entry.balance_after >= floor(&entry.wallet_id),
                    "entry below the floor {:?}",
                    entry
                );
                balances.insert(entry.wallet_id, entry.balance_after.clone());
            }
            let Some(before) = before else { continue };
            let spends = matches!(op.kind, OperationKind::Withdraw | OperationKind::Transfer { .. });
            let available = before - floor(&op.wallet_id);
            if !spends || *op.amount.value() <= available {
                continue;
            }
            let Outcome::Failed { reason, .. } = outcome else {
                return Err(TestCaseError::fail(format!(
                    "overdraft of {available} available by {} was processed: {op:?}",
                    op.amount
                )));
            };
            let valid_amount = op.amount.check_currency(Currency::USD).is_ok();
            let valid_target = match op.kind {
                OperationKind::Transfer { target } => {
                    target != op.wallet_id && run.initial.contains_key(&target)
                }
                _ => true,
            };
            if valid_amount && valid_target {
                prop_assert_eq!(*reason, FailureReason::InsufficientFunds);
            }
        }
        prop_assert!(entries.next().is_none(), "entries out of operation order");
        for (id, state) in &run.wallets {
            prop_assert!(state.balance >= floor(id), "wallet {} ends below its floor", id);
            prop_assert_eq!(&state.overdraft_limit, &run.initial[id].overdraft_limit);
        }
    }

    // Proves each wallet's journal is gapless, in operation order, and agrees with its state.
    #[test]
    fn versions_and_entries_follow_operation_order(scenario in scenario()) {
        let run = Run::new(&scenario);
        prop_assert_eq!(run.applied.outcomes.len(), run.operations.len());
        prop_assert_eq!(run.wallets.len(), run.initial.len());

        let position: HashMap<OperationId, usize> = run
            .operations
            .iter()
            .enumerate()
            .map(|(index, op)| (op.id, index))
            .collect();
        let mut entry_counts = vec![0usize; run.operations.len()];
        let mut last_position = 0;
        for entry in &run.applied.entries {
            let index = position[&entry.operation_id];
            prop_assert!(index >= last_position, "entries out of operation order");
            last_position = index;
            entry_counts[index] += 1;
        }
        for ((op, outcome), count) in run
            .operations
            .iter()
            .zip(&run.applied.outcomes)
            .zip(entry_counts)
        {
            let expected = match (outcome, op.kind) {
                _ if !run.initial.contains_key(&op.wallet_id) => 0,
                (Outcome::Processed { .. }, OperationKind::Transfer { .. }) => 2,
                _ => 1,
            };
            prop_assert_eq!(count, expected, "entries written for {:?}", op);
        }

        for id in &run.ids {
            let (Some(initial), Some(last)) = (run.initial.get(id), run.wallets.get(id)) else {
                continue;
            };
            let mut version = initial.version;
            let mut balance = initial.balance.clone();
            for entry in run.applied.entries.iter().filter(|entry| entry.wallet_id == *id) {
                version += 1;
                prop_assert_eq!(entry.version, version);
                prop_assert_eq!(&entry.balance_after, &(&balance + &entry.delta));
                balance = entry.balance_after.clone();
            }
            prop_assert_eq!(last.version, version);
            prop_assert_eq!(&last.balance, &balance);
            prop_assert_eq!(last.currency, initial.currency);
        }
    }

    // Proves apply agrees with a plain sequential model on every outcome and final state.
    #[test]
    fn matches_the_sequential_model(scenario in scenario()) {
        let run = Run::new(&scenario);
        let (expected_outcomes, expected_wallets) = model(&scenario);
        prop_assert_eq!(run.applied.outcomes.len(), expected_outcomes.len());
        for (index, (actual, expected)) in
            run.applied.outcomes.iter().zip(&expected_outcomes).enumerate()
        {
            let (reason, balance_after) = match actual {
                Outcome::Processed { balance_after } => (None, Some(balance_after.clone())),
                Outcome::Failed { reason, balance_after } => (Some(*reason), balance_after.clone()),
            };
            prop_assert_eq!(actual.status(), expected.status, "operation {}", index);
            prop_assert_eq!(reason, expected.reason, "operation {}", index);
            prop_assert_eq!(
                balance_after,
                expected.balance_after_mills.map(from_mills),
                "operation {}",
                index
            );
        }
        for (slot, expected) in &expected_wallets {
            let actual = &run.wallets[&run.ids[*slot]];
            prop_assert_eq!(&actual.balance, &from_mills(expected.mills), "wallet {}", slot);
            prop_assert_eq!(actual.version, expected.version, "wallet {}", slot);
        }
    }
}
