use std::collections::BTreeMap;

use bigdecimal::num_bigint::BigInt;
use chrono::{DateTime, Utc};
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

/// Wallets are addressed by slot; slot `wallets.len()` is a wallet that does not exist. A
/// hold is addressed by a number that picks one of the HOLDs before the operation (see
/// [`Run::hold_of`]).
#[derive(Debug, Clone, Copy)]
enum KindSpec {
    Deposit,
    Withdraw,
    Transfer(usize),
    /// Expires this many seconds after its acceptance; 0 names no valid expiry.
    Hold(i64),
    Capture {
        hold: usize,
        with_amount: bool,
        target: Option<usize>,
    },
    Void(usize),
    Expire(usize),
}

#[derive(Debug, Clone, Copy)]
struct OpSpec {
    source: usize,
    kind: KindSpec,
    amount: AmountSpec,
}

impl OpSpec {
    /// Whether the operation names its amount.
    fn names_amount(&self) -> bool {
        match self.kind {
            KindSpec::Deposit | KindSpec::Withdraw | KindSpec::Transfer(_) | KindSpec::Hold(_) => {
                true
            }
            KindSpec::Capture { with_amount, .. } => with_amount,
            KindSpec::Void(_) | KindSpec::Expire(_) => false,
        }
    }
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
    let capture = (0usize..8, any::<bool>(), prop::option::of(slot(wallets))).prop_map(
        |(hold, with_amount, target)| KindSpec::Capture {
            hold,
            with_amount,
            target,
        },
    );
    let kind = prop_oneof![
        3 => Just(KindSpec::Deposit),
        2 => Just(KindSpec::Withdraw),
        2 => slot(wallets).prop_map(KindSpec::Transfer),
        3 => prop_oneof![9 => 1i64..=60, 1 => Just(0i64)].prop_map(KindSpec::Hold),
        3 => capture,
        1 => (0usize..8).prop_map(KindSpec::Void),
        1 => (0usize..8).prop_map(KindSpec::Expire),
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

/// Operation `index` is accepted `index` seconds after this, so a hold's expiry falls among
/// the operations that follow it.
fn accepted_at(index: usize) -> DateTime<Utc> {
    let start = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
        .expect("a valid time")
        .with_timezone(&Utc);
    start + chrono::Duration::seconds(index as i64)
}

/// The HOLD (by operation index) that hold number `pick` of operation `index` names: one of
/// the earlier HOLDs on its source wallet, else one of all earlier HOLDs, else none.
fn hold_of(scenario: &Scenario, index: usize, pick: usize) -> Option<usize> {
    let holds_before = |same_source: bool| -> Vec<usize> {
        scenario.ops[..index]
            .iter()
            .enumerate()
            .filter(|(_, op)| matches!(op.kind, KindSpec::Hold(_)))
            .filter(|(_, op)| !same_source || op.source == scenario.ops[index].source)
            .map(|(position, _)| position)
            .collect()
    };
    let own = holds_before(true);
    let candidates = if own.is_empty() {
        holds_before(false)
    } else {
        own
    };
    (!candidates.is_empty()).then(|| candidates[pick % candidates.len()])
}

/// A scenario turned into the real types, before and after `apply`.
struct Run {
    ids: Vec<WalletId>,
    initial: HashMap<WalletId, WalletState>,
    operations: Vec<Operation>,
    applied: Applied,
    wallets: HashMap<WalletId, WalletState>,
    holds: HashMap<ScopedId, Hold>,
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
                    held: zero(),
                    version,
                };
                (id, state)
            })
            .collect();
        let op_ids: Vec<OperationId> = (0..scenario.ops.len())
            .map(|index| OperationId(Uuid::from_u128(1_000 + index as u128)))
            .collect();
        // A hold number that picks no earlier HOLD names an id no operation has.
        let hold_id = |index: usize, pick: usize| {
            hold_of(scenario, index, pick)
                .map(|position| op_ids[position])
                .unwrap_or(OperationId(Uuid::from_u128(999)))
        };
        let operations: Vec<Operation> = scenario
            .ops
            .iter()
            .enumerate()
            .map(|(index, spec)| {
                let kind = match spec.kind {
                    KindSpec::Deposit => OperationKind::Deposit,
                    KindSpec::Withdraw => OperationKind::Withdraw,
                    KindSpec::Transfer(target) => OperationKind::Transfer {
                        target: ids[target],
                    },
                    KindSpec::Hold(seconds) => OperationKind::Hold {
                        expires_at: Some(accepted_at(index) + chrono::Duration::seconds(seconds)),
                    },
                    KindSpec::Capture { hold, target, .. } => OperationKind::Capture {
                        hold: hold_id(index, hold),
                        target: target.map(|target| ids[target]),
                    },
                    KindSpec::Void(hold) => OperationKind::Void {
                        hold: hold_id(index, hold),
                    },
                    KindSpec::Expire(hold) => OperationKind::Expire {
                        hold: hold_id(index, hold),
                    },
                };
                let amount = spec.names_amount().then(|| spec.amount.text());
                Operation {
                    id: op_ids[index],
                    accepted_at: accepted_at(index),
                    ..operation_with(ids[spec.source], kind, amount.as_deref())
                }
            })
            .collect();
        let mut wallets = initial.clone();
        let mut holds = HashMap::new();
        let applied = apply_in_default(&mut wallets, &mut holds, &operations);
        Run {
            ids,
            initial,
            operations,
            applied,
            wallets,
            holds,
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
            .find(|entry| entry.operation_id == op.id && entry.wallet.id == op.wallet_id)
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

/// The wallet `id` of the default tenant, the tenant of every test operation.
pub(super) fn in_default(id: WalletId) -> ScopedWalletId {
    ScopedWalletId {
        tenant: "default".to_owned(),
        id,
    }
}

/// `apply` to wallets of the default tenant, keyed by their ids alone.
pub(super) fn apply_in_default(
    wallets: &mut HashMap<WalletId, WalletState>,
    holds: &mut HashMap<ScopedId, Hold>,
    operations: &[Operation],
) -> Applied {
    let mut scoped: HashMap<ScopedWalletId, WalletState> = wallets
        .drain()
        .map(|(id, state)| (in_default(id), state))
        .collect();
    let applied = apply(&mut scoped, holds, operations);
    wallets.extend(scoped.into_iter().map(|(id, state)| (id.id, state)));
    applied
}

/// An operation of the default tenant; `amount` as the request names it, if it does.
pub(super) fn operation_with(
    wallet_id: WalletId,
    kind: OperationKind,
    amount: Option<&str>,
) -> Operation {
    Operation {
        tenant: "default".to_owned(),
        id: OperationId(Uuid::new_v4()),
        wallet_id,
        kind,
        amount: amount.map(|amount| Amount::parse(amount).expect("test amounts are well-formed")),
        accepted_at: chrono::Utc::now(),
        fingerprint: format!("test-{amount:?}"),
        metadata: Metadata::default(),
    }
}

pub(super) fn operation(wallet_id: WalletId, kind: OperationKind, amount: &str) -> Operation {
    operation_with(wallet_id, kind, Some(amount))
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
    held_mills: i128,
    version: i64,
}

#[derive(Debug, Clone, Copy)]
struct ModelHold {
    source: usize,
    amount_mills: i128,
    captured_mills: i128,
    state: HoldState,
    /// The index of the first operation accepted at or after the expiry.
    expires_index: i64,
}

impl ModelHold {
    fn remaining(&self) -> i128 {
        match self.state {
            HoldState::Open => self.amount_mills - self.captured_mills,
            HoldState::Captured | HoldState::Voided | HoldState::Expired => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ModelOutcome {
    status: OperationStatus,
    reason: Option<FailureReason>,
    balance_after_mills: Option<i128>,
}

/// What a decided model operation changes: the source's balance and held, the target's
/// credit, and the hold's new state.
struct ModelChange {
    delta: i128,
    held: i128,
    credit: Option<(usize, i128)>,
    hold: Option<(usize, ModelHold)>,
}

struct Model {
    wallets: BTreeMap<usize, ModelWallet>,
    /// By the index of the HOLD that placed them.
    holds: BTreeMap<usize, ModelHold>,
}

impl Model {
    fn hold(
        &self,
        scenario: &Scenario,
        index: usize,
        pick: usize,
    ) -> Result<(usize, ModelHold), FailureReason> {
        let source = scenario.ops[index].source;
        hold_of(scenario, index, pick)
            .and_then(|position| self.holds.get(&position).map(|hold| (position, *hold)))
            .filter(|(_, hold)| hold.source == source)
            .ok_or(FailureReason::HoldNotFound)
    }

    fn decide(&self, scenario: &Scenario, index: usize) -> Result<ModelChange, FailureReason> {
        let op = &scenario.ops[index];
        let source = self.wallets[&op.source];
        let amount = op.amount.mills();
        if op.names_amount() && amount % 10 != 0 {
            return Err(FailureReason::InvalidAmount);
        }
        let available = source.mills - source.held_mills + source.limit_mills;
        let target_ok = |target: usize| {
            if target == op.source {
                Err(FailureReason::SameWallet)
            } else if !self.wallets.contains_key(&target) {
                Err(FailureReason::TargetWalletNotFound)
            } else {
                Ok(())
            }
        };
        let money = |delta: i128, held: i128, credit| ModelChange {
            delta,
            held,
            credit,
            hold: None,
        };
        let open_to_clients =
            |hold: &ModelHold| hold.state == HoldState::Open && (index as i64) < hold.expires_index;
        match op.kind {
            KindSpec::Deposit => Ok(money(amount, 0, None)),
            KindSpec::Withdraw if amount > available => Err(FailureReason::InsufficientFunds),
            KindSpec::Withdraw => Ok(money(-amount, 0, None)),
            KindSpec::Transfer(target) => {
                target_ok(target)?;
                if amount > available {
                    return Err(FailureReason::InsufficientFunds);
                }
                Ok(money(-amount, 0, Some((target, amount))))
            }
            KindSpec::Hold(0) => Err(FailureReason::InvalidExpiry),
            KindSpec::Hold(_) if amount > available => Err(FailureReason::InsufficientFunds),
            KindSpec::Hold(seconds) => Ok(ModelChange {
                hold: Some((
                    index,
                    ModelHold {
                        source: op.source,
                        amount_mills: amount,
                        captured_mills: 0,
                        state: HoldState::Open,
                        expires_index: index as i64 + seconds,
                    },
                )),
                ..money(0, amount, None)
            }),
            KindSpec::Capture {
                hold,
                with_amount,
                target,
            } => {
                let (position, found) = self.hold(scenario, index, hold)?;
                if !open_to_clients(&found) {
                    return Err(FailureReason::HoldClosed);
                }
                let taken = if with_amount {
                    amount
                } else {
                    found.remaining()
                };
                if taken > found.remaining() {
                    return Err(FailureReason::CaptureExceedsHold);
                }
                if let Some(target) = target {
                    target_ok(target)?;
                }
                let captured_mills = found.captured_mills + taken;
                let state = if captured_mills == found.amount_mills {
                    HoldState::Captured
                } else {
                    HoldState::Open
                };
                let after = ModelHold {
                    captured_mills,
                    state,
                    ..found
                };
                Ok(ModelChange {
                    hold: Some((position, after)),
                    ..money(-taken, -taken, target.map(|target| (target, taken)))
                })
            }
            KindSpec::Void(hold) | KindSpec::Expire(hold) => {
                let (position, found) = self.hold(scenario, index, hold)?;
                let (open, state) = match op.kind {
                    KindSpec::Void(_) => (open_to_clients(&found), HoldState::Voided),
                    _ => (found.state == HoldState::Open, HoldState::Expired),
                };
                if !open {
                    return Err(FailureReason::HoldClosed);
                }
                Ok(ModelChange {
                    hold: Some((position, ModelHold { state, ..found })),
                    ..money(0, -found.remaining(), None)
                })
            }
        }
    }
}

/// The rules restated as plainly as possible over integer thousandths of a dollar.
fn model(scenario: &Scenario) -> (Vec<ModelOutcome>, Model) {
    let wallets: BTreeMap<usize, ModelWallet> = scenario
        .initial
        .iter()
        .enumerate()
        .map(|(slot, &(cents, limit, version))| {
            let wallet = ModelWallet {
                mills: i128::from(cents) * 10,
                limit_mills: i128::from(limit) * 10,
                held_mills: 0,
                version,
            };
            (slot, wallet)
        })
        .collect();
    let mut model = Model {
        wallets,
        holds: BTreeMap::new(),
    };
    let mut outcomes = Vec::with_capacity(scenario.ops.len());
    for (index, op) in scenario.ops.iter().enumerate() {
        if !model.wallets.contains_key(&op.source) {
            outcomes.push(ModelOutcome {
                status: OperationStatus::Failed,
                reason: Some(FailureReason::WalletNotFound),
                balance_after_mills: None,
            });
            continue;
        }
        let decided = model.decide(scenario, index);
        let (delta, held) = match &decided {
            Ok(change) => (change.delta, change.held),
            Err(_) => (0, 0),
        };
        let wallet = model.wallets.get_mut(&op.source).expect("source exists");
        wallet.mills += delta;
        wallet.held_mills += held;
        wallet.version += 1;
        let balance_after_mills = Some(wallet.mills);
        let reason = match decided {
            Ok(change) => {
                if let Some((target, credit)) = change.credit {
                    let wallet = model.wallets.get_mut(&target).expect("target exists");
                    wallet.mills += credit;
                    wallet.version += 1;
                }
                if let Some((position, hold)) = change.hold {
                    model.holds.insert(position, hold);
                }
                None
            }
            Err(reason) => Some(reason),
        };
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
    (outcomes, model)
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    // Proves money is only created by processed deposits and destroyed by processed
    // withdrawals and captures that settle to no wallet: transfers, captures to another
    // wallet and holds move or reserve it without changing the total.
    #[test]
    fn money_is_conserved(scenario in scenario()) {
        let run = Run::new(&scenario);
        let deltas = run.deltas_by_operation();
        let mut net = zero();
        for (op, outcome) in run.operations.iter().zip(&run.applied.outcomes) {
            let source_exists = run.initial.contains_key(&op.wallet_id);
            let valid_amount = op
                .amount
                .as_ref()
                .is_none_or(|amount| amount.check_currency(Currency::USD).is_ok());
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
                (Outcome::Processed { amount, .. }, OperationKind::Deposit) => {
                    prop_assert_eq!(&moved, amount);
                    net += amount;
                }
                (
                    Outcome::Processed { amount, .. },
                    OperationKind::Withdraw | OperationKind::Capture { target: None, .. },
                ) => {
                    prop_assert_eq!(&moved, &-amount.clone());
                    net -= amount;
                }
                (
                    Outcome::Processed { .. },
                    OperationKind::Transfer { .. }
                    | OperationKind::Capture { target: Some(_), .. }
                    | OperationKind::Hold { .. }
                    | OperationKind::Void { .. }
                    | OperationKind::Expire { .. },
                )
                | (Outcome::Failed { .. }, _) => prop_assert_eq!(moved, zero()),
            }
        }
        prop_assert_eq!(Run::total(&run.wallets), Run::total(&run.initial) + net);
    }

    // Proves no balance less what it holds ever goes below minus its overdraft limit (so
    // what is held never exceeds the balance plus the limit), and a debit or hold beyond what
    // is available is refused as InsufficientFunds.
    #[test]
    fn nothing_is_overdrawn(scenario in scenario()) {
        let run = Run::new(&scenario);
        let floor = |id: &WalletId| -run.initial[id].overdraft_limit.clone();
        let mut available: HashMap<WalletId, BigDecimal> = run
            .initial
            .iter()
            .map(|(&id, state)| (id, state.available()))
            .collect();
        let mut entries = run.applied.entries.iter().peekable();
        for (op, outcome) in run.operations.iter().zip(&run.applied.outcomes) {
            let before = available.get(&op.wallet_id).cloned();
            while let Some(entry) = entries.next_if(|entry| entry.operation_id == op.id) {
                prop_assert!(
                    &entry.balance_after - &entry.held_after >= floor(&entry.wallet.id),
                    "entry below the floor {:?}",
                    entry
                );
                prop_assert!(entry.held_after >= zero(), "held below zero {:?}", entry);
                let limit = &run.initial[&entry.wallet.id].overdraft_limit;
                available.insert(
                    entry.wallet.id,
                    &entry.balance_after - &entry.held_after + limit,
                );
            }
            let Some(before) = before else { continue };
            let spends = matches!(
                op.kind,
                OperationKind::Withdraw | OperationKind::Transfer { .. } | OperationKind::Hold { .. }
            );
            let Some(amount) = op.amount.as_ref().map(Amount::value) else { continue };
            if !spends || *amount <= before {
                continue;
            }
            let Outcome::Failed { reason, .. } = outcome else {
                return Err(TestCaseError::fail(format!(
                    "{amount} with {before} available was processed: {op:?}"
                )));
            };
            let valid_amount = op.amount.as_ref().is_some_and(|amount| amount.check_currency(Currency::USD).is_ok());
            let valid_otherwise = match op.kind {
                OperationKind::Transfer { target } => {
                    target != op.wallet_id && run.initial.contains_key(&target)
                }
                OperationKind::Hold { expires_at } => expires_at.is_some_and(|at| at > op.accepted_at),
                _ => true,
            };
            if valid_amount && valid_otherwise {
                prop_assert_eq!(*reason, FailureReason::InsufficientFunds);
            }
        }
        prop_assert!(entries.next().is_none(), "entries out of operation order");
        for (id, state) in &run.wallets {
            prop_assert!(state.available() >= zero(), "wallet {} ends below its floor", id);
            prop_assert_eq!(&state.overdraft_limit, &run.initial[id].overdraft_limit);
        }
    }

    // Proves what a wallet holds is the sum of what its open holds still reserve, and a
    // hold's captures and release together never exceed its amount: exactly its amount once
    // it is closed, exactly what was captured while it is open.
    #[test]
    fn held_is_what_open_holds_reserve(scenario in scenario()) {
        let run = Run::new(&scenario);
        let mut reserved: HashMap<WalletId, BigDecimal> = HashMap::new();
        for hold in run.holds.values() {
            *reserved.entry(hold.wallet_id).or_insert_with(zero) += hold.remaining();
            prop_assert!(hold.captured >= zero() && hold.captured <= hold.amount);
        }
        for (id, state) in &run.wallets {
            let expected = reserved.get(id).cloned().unwrap_or_else(zero);
            prop_assert_eq!(&state.held, &expected, "wallet {}", id);
        }
        let mut taken: HashMap<OperationId, (BigDecimal, BigDecimal)> = HashMap::new();
        for (op, outcome) in run.operations.iter().zip(&run.applied.outcomes) {
            let (Outcome::Processed { amount, .. }, Some(hold)) = (outcome, op.kind.hold()) else {
                continue;
            };
            let (captured, released) = taken.entry(hold).or_insert_with(|| (zero(), zero()));
            match op.kind {
                OperationKind::Capture { .. } => *captured += amount,
                _ => *released += amount,
            }
        }
        let mut changed = run.applied.holds.clone();
        changed.sort();
        changed.dedup();
        prop_assert_eq!(changed.len(), run.applied.holds.len(), "each changed hold once");
        prop_assert_eq!(changed.len(), run.holds.len(), "every hold placed is reported");
        for (id, hold) in &run.holds {
            let (captured, released) = taken.get(&id.id).cloned().unwrap_or_else(|| (zero(), zero()));
            prop_assert_eq!(&captured, &hold.captured, "hold {}", id.id);
            let settled = &captured + &released;
            match hold.state {
                HoldState::Open => prop_assert_eq!(&settled, &hold.captured),
                HoldState::Captured | HoldState::Voided | HoldState::Expired => {
                    prop_assert_eq!(&settled, &hold.amount)
                }
            }
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
            let expected = match outcome {
                _ if !run.initial.contains_key(&op.wallet_id) => 0,
                Outcome::Processed { .. } if op.kind.target().is_some() => 2,
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
            let mut held = initial.held.clone();
            for entry in run.applied.entries.iter().filter(|entry| entry.wallet.id == *id) {
                version += 1;
                prop_assert_eq!(entry.version, version);
                prop_assert_eq!(&entry.balance_after, &(&balance + &entry.delta));
                balance = entry.balance_after.clone();
                held = entry.held_after.clone();
            }
            prop_assert_eq!(last.version, version);
            prop_assert_eq!(&last.balance, &balance);
            prop_assert_eq!(&last.held, &held);
            prop_assert_eq!(last.currency, initial.currency);
        }
    }

    // Proves apply agrees with a plain sequential model on every outcome and final state.
    #[test]
    fn matches_the_sequential_model(scenario in scenario()) {
        let run = Run::new(&scenario);
        let (expected_outcomes, expected) = model(&scenario);
        prop_assert_eq!(run.applied.outcomes.len(), expected_outcomes.len());
        for (index, (actual, expected)) in
            run.applied.outcomes.iter().zip(&expected_outcomes).enumerate()
        {
            let (reason, balance_after) = match actual {
                Outcome::Processed { balance_after, .. } => (None, Some(balance_after.clone())),
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
        for (slot, expected) in &expected.wallets {
            let actual = &run.wallets[&run.ids[*slot]];
            prop_assert_eq!(&actual.balance, &from_mills(expected.mills), "wallet {}", slot);
            prop_assert_eq!(&actual.held, &from_mills(expected.held_mills), "wallet {}", slot);
            prop_assert_eq!(actual.version, expected.version, "wallet {}", slot);
        }
        prop_assert_eq!(run.holds.len(), expected.holds.len());
        for (position, expected) in &expected.holds {
            let id = ScopedId {
                tenant: "default".to_owned(),
                id: run.operations[*position].id,
            };
            let actual = &run.holds[&id];
            prop_assert_eq!(actual.state, expected.state, "hold of operation {}", position);
            prop_assert_eq!(&actual.captured, &from_mills(expected.captured_mills));
            prop_assert_eq!(&actual.amount, &from_mills(expected.amount_mills));
        }
    }
}
