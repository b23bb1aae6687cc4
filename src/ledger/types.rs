//! The ledger's vocabulary: identifiers, operations, wallet states and outcomes.

use std::fmt;
use std::str::FromStr;

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use super::kind::{OperationKind, OperationType};
use super::metadata::Metadata;
use super::money::{Amount, Currency};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WalletId(pub Uuid);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OperationId(pub Uuid);

impl OperationId {
    /// The id of an operation the server itself submits, derived from `name` within
    /// `namespace`: of UUID version 8, which no client may choose, so no client can take it
    /// first and make the server's operation a reused id.
    pub fn reserved(namespace: &Uuid, name: &[u8]) -> OperationId {
        OperationId(Uuid::new_v8(*Uuid::new_v5(namespace, name).as_bytes()))
    }

    /// Whether the id is one only the server may submit (see [`OperationId::reserved`]).
    pub fn is_reserved(self) -> bool {
        self.0.get_version_num() == 8
    }
}

macro_rules! uuid_newtype {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(text).map($name)
            }
        }
    };
}
uuid_newtype!(WalletId);
uuid_newtype!(OperationId);

/// An operation id in the only namespace it is unique in: its tenant's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopedId {
    pub tenant: String,
    pub id: OperationId,
}

/// A wallet id in the only namespace it is unique in: its tenant's. Two tenants may each have a
/// wallet with the same id; they share nothing but the topic partition the id hashes to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopedWalletId {
    pub tenant: String,
    pub id: WalletId,
}

impl fmt::Display for ScopedWalletId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.id)
    }
}

/// An accepted request to change balances, as it travels through the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The tenant whose id this is: ids are unique per tenant, never across tenants.
    pub tenant: String,
    pub id: OperationId,
    pub wallet_id: WalletId,
    pub kind: OperationKind,
    /// What the request names; a CAPTURE may leave it out (it takes what remains), a VOID
    /// or an EXPIRE has none. [`OperationKind::from_fields`] says which.
    pub amount: Option<Amount>,
    pub accepted_at: DateTime<Utc>,
    /// Identifies the request's content, so a reused id with other content can be told apart.
    pub fingerprint: String,
    /// The client's labels, kept with the operation.
    pub metadata: Metadata,
}

impl Operation {
    pub fn scoped_id(&self) -> ScopedId {
        ScopedId {
            tenant: self.tenant.clone(),
            id: self.id,
        }
    }

    /// The operation's source wallet, in the operation's tenant: the only one it can name.
    pub fn wallet(&self) -> ScopedWalletId {
        self.in_tenant(self.wallet_id)
    }

    /// The wallets the operation touches, in its tenant: its source, then the wallet its
    /// kind credits, if any.
    pub fn wallets(&self) -> impl Iterator<Item = ScopedWalletId> + '_ {
        std::iter::once(self.wallet_id)
            .chain(self.kind.target())
            .map(|id| self.in_tenant(id))
    }

    /// `id` in the operation's tenant: a transfer never leaves its tenant.
    pub fn in_tenant(&self, id: WalletId) -> ScopedWalletId {
        ScopedWalletId {
            tenant: self.tenant.clone(),
            id,
        }
    }

    /// The hold the operation places (a HOLD's id is its own) or acts on.
    pub fn hold_id(&self) -> Option<OperationId> {
        match self.kind {
            OperationKind::Hold { .. } => Some(self.id),
            OperationKind::Deposit
            | OperationKind::Withdraw
            | OperationKind::Transfer { .. }
            | OperationKind::Capture { .. }
            | OperationKind::Void { .. }
            | OperationKind::Expire { .. } => self.kind.hold(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletState {
    pub currency: Currency,
    pub balance: BigDecimal,
    /// How far below zero the balance may go; never negative, fixed when the wallet is made.
    pub overdraft_limit: BigDecimal,
    /// What the wallet's open holds still reserve: the sum of their remaining amounts.
    pub held: BigDecimal,
    pub version: i64,
}

impl WalletState {
    /// What a debit or a hold may take: the balance down to its floor, `-overdraft_limit`,
    /// less what is held.
    pub fn available(&self) -> BigDecimal {
        &self.balance - &self.held + &self.overdraft_limit
    }
}

/// Where a hold is in its life: open until captured in full, voided or expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HoldState {
    Open,
    Captured,
    Voided,
    Expired,
}

impl HoldState {
    pub const ALL: [HoldState; 4] = [
        HoldState::Open,
        HoldState::Captured,
        HoldState::Voided,
        HoldState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Open => "OPEN",
            HoldState::Captured => "CAPTURED",
            HoldState::Voided => "VOIDED",
            HoldState::Expired => "EXPIRED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }
}

/// Funds a HOLD reserved on its wallet, as the rules need it. Its id is the HOLD's
/// operation id, in its tenant's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub wallet_id: WalletId,
    pub amount: BigDecimal,
    /// What captures took so far; never more than `amount`.
    pub captured: BigDecimal,
    pub state: HoldState,
    pub expires_at: DateTime<Utc>,
}

impl Hold {
    /// What the hold still reserves: nothing once it is closed.
    pub fn remaining(&self) -> BigDecimal {
        match self.state {
            HoldState::Open => &self.amount - &self.captured,
            HoldState::Captured | HoldState::Voided | HoldState::Expired => BigDecimal::from(0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureReason {
    InsufficientFunds,
    WalletNotFound,
    TargetWalletNotFound,
    CurrencyMismatch,
    SameWallet,
    InvalidAmount,
    /// A CAPTURE, VOID or EXPIRE names no hold of its wallet.
    HoldNotFound,
    /// The hold was captured in full, voided, or reached its `expiresAt`.
    HoldClosed,
    /// A CAPTURE asks for more than the hold still reserves.
    CaptureExceedsHold,
    /// A HOLD's record names no `expiresAt` after its acceptance (the API never produces
    /// one; the rules re-check because any producer may write the topic).
    InvalidExpiry,
    /// PostgreSQL refused the operation's own data; its dead letter holds the database's
    /// words. Set by the store, never by the rules.
    Rejected,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::InsufficientFunds => "INSUFFICIENT_FUNDS",
            FailureReason::WalletNotFound => "WALLET_NOT_FOUND",
            FailureReason::TargetWalletNotFound => "TARGET_WALLET_NOT_FOUND",
            FailureReason::CurrencyMismatch => "CURRENCY_MISMATCH",
            FailureReason::SameWallet => "SAME_WALLET",
            FailureReason::InvalidAmount => "INVALID_AMOUNT",
            FailureReason::HoldNotFound => "HOLD_NOT_FOUND",
            FailureReason::HoldClosed => "HOLD_CLOSED",
            FailureReason::CaptureExceedsHold => "CAPTURE_EXCEEDS_HOLD",
            FailureReason::InvalidExpiry => "INVALID_EXPIRY",
            FailureReason::Rejected => "REJECTED",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationStatus {
    Pending,
    Processed,
    Failed,
}

impl OperationStatus {
    pub const ALL: [OperationStatus; 3] = [
        OperationStatus::Pending,
        OperationStatus::Processed,
        OperationStatus::Failed,
    ];

    /// The statuses of operations a worker has decided: what a wallet's history holds.
    pub const DECIDED: [OperationStatus; 2] = [OperationStatus::Processed, OperationStatus::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            OperationStatus::Pending => "PENDING",
            OperationStatus::Processed => "PROCESSED",
            OperationStatus::Failed => "FAILED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

/// What became of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied; the source wallet's balance afterwards, and the amount the operation moved:
    /// its own, or for a CAPTURE without one what remained, for a VOID or an EXPIRE what it
    /// released.
    Processed {
        balance_after: BigDecimal,
        amount: BigDecimal,
    },
    /// Rejected by the rules; `balance_after` is the unchanged source balance when the source
    /// wallet exists.
    Failed {
        reason: FailureReason,
        balance_after: Option<BigDecimal>,
    },
}

impl Outcome {
    pub fn status(&self) -> OperationStatus {
        match self {
            Outcome::Processed { .. } => OperationStatus::Processed,
            Outcome::Failed { .. } => OperationStatus::Failed,
        }
    }
}

/// One line of a wallet's journal. Every operation that reaches an existing wallet writes
/// one, failed ones with a zero delta, so a wallet's history is exactly its entries and its
/// versions count every operation it has seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The wallet, in its operation's tenant.
    pub wallet: ScopedWalletId,
    pub version: i64,
    pub operation_id: OperationId,
    pub delta: BigDecimal,
    pub balance_after: BigDecimal,
    /// What the wallet held right after the entry.
    pub held_after: BigDecimal,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the server's own ids are reserved and stay the same for the same name, and that
    /// the ids clients and the server otherwise use (random, time-ordered, derived from an
    /// `Idempotency-Key`) never are.
    #[test]
    fn only_the_servers_own_ids_are_reserved() {
        let namespace = Uuid::from_u128(7);
        let reserved = OperationId::reserved(&namespace, b"acme:hold");
        assert!(reserved.is_reserved());
        assert_eq!(reserved, OperationId::reserved(&namespace, b"acme:hold"));
        assert_ne!(reserved, OperationId::reserved(&namespace, b"acme:other"));
        for id in [
            Uuid::new_v4(),
            Uuid::now_v7(),
            Uuid::new_v5(&namespace, b"acme:hold"),
        ] {
            assert!(!OperationId(id).is_reserved(), "{id}");
        }
    }
}
