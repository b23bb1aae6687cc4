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

/// An accepted request to change balances, as it travels through the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The tenant whose id this is: ids are unique per tenant, never across tenants.
    pub tenant: String,
    pub id: OperationId,
    pub wallet_id: WalletId,
    pub kind: OperationKind,
    pub amount: Amount,
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletState {
    pub currency: Currency,
    pub balance: BigDecimal,
    /// How far below zero the balance may go; never negative, fixed when the wallet is made.
    pub overdraft_limit: BigDecimal,
    pub version: i64,
}

impl WalletState {
    /// What a debit may take: the balance down to its floor, `-overdraft_limit`.
    pub fn available(&self) -> BigDecimal {
        &self.balance + &self.overdraft_limit
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
    /// Applied; the source wallet's balance afterwards.
    Processed { balance_after: BigDecimal },
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
    pub wallet_id: WalletId,
    pub version: i64,
    pub operation_id: OperationId,
    pub delta: BigDecimal,
    pub balance_after: BigDecimal,
}
