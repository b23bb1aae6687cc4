//! Operation kinds, in one place: their names, the request fields that make one, the content
//! that identifies one, and how each moves money. A new kind starts here: every match below is
//! exhaustive, so the compiler names each decision it needs, and a test holds the schema's
//! `CHECK` on `operations.type` equal to [`OperationType::ALL`].

use bigdecimal::BigDecimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::metadata::Metadata;
use super::money::Amount;
use super::types::WalletId;

/// A kind's name, as the API, the topic and the database write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationType {
    Deposit,
    Withdraw,
    Transfer,
}

/// Which way an operation moves its amount on its own wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Credit,
    Debit,
}

/// How an operation of a kind changes balances once applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effect {
    /// What happens to the operation's own wallet (the source).
    pub source: Direction,
    /// Whether a second wallet, the request's `toWalletId`, is credited with the amount.
    pub credits_target: bool,
}

impl OperationType {
    /// Every kind, in the order documents list them.
    pub const ALL: [OperationType; 3] = [
        OperationType::Deposit,
        OperationType::Withdraw,
        OperationType::Transfer,
    ];

    /// What the kinds do, in one sentence, for the API's documentation.
    pub const SUMMARY: &'static str =
        "DEPOSIT and WITHDRAW change one wallet; TRANSFER moves money to `toWalletId`";

    pub fn as_str(self) -> &'static str {
        match self {
            OperationType::Deposit => "DEPOSIT",
            OperationType::Withdraw => "WITHDRAW",
            OperationType::Transfer => "TRANSFER",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    pub fn effect(self) -> Effect {
        match self {
            OperationType::Deposit => Effect {
                source: Direction::Credit,
                credits_target: false,
            },
            OperationType::Withdraw => Effect {
                source: Direction::Debit,
                credits_target: false,
            },
            OperationType::Transfer => Effect {
                source: Direction::Debit,
                credits_target: true,
            },
        }
    }

    /// The names as a sentence lists them: `DEPOSIT, WITHDRAW or TRANSFER`.
    pub fn listed(kinds: impl IntoIterator<Item = OperationType>) -> String {
        let names: Vec<&str> = kinds.into_iter().map(OperationType::as_str).collect();
        match names.split_last() {
            None => String::new(),
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        }
    }
}

impl Direction {
    /// The amount as a change to the balance: negative for a debit.
    pub fn signed(self, amount: &BigDecimal) -> BigDecimal {
        match self {
            Direction::Credit => amount.clone(),
            Direction::Debit => -amount.clone(),
        }
    }
}

/// What an operation does; a transfer names the wallet that receives the money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationKind {
    Deposit,
    Withdraw,
    Transfer { target: WalletId },
}

/// Why a request's fields make no kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindError {
    /// The kind credits a second wallet and the request names none.
    MissingTarget(OperationType),
    /// The request names a second wallet for a kind that has none.
    UnexpectedTarget(OperationType),
}

impl OperationKind {
    /// The kind a request's (or a record's) type and `toWalletId` describe.
    pub fn from_fields(
        operation_type: OperationType,
        target: Option<WalletId>,
    ) -> Result<Self, KindError> {
        match (operation_type, target) {
            (OperationType::Deposit, None) => Ok(OperationKind::Deposit),
            (OperationType::Withdraw, None) => Ok(OperationKind::Withdraw),
            (OperationType::Transfer, Some(target)) => Ok(OperationKind::Transfer { target }),
            (OperationType::Transfer, None) => Err(KindError::MissingTarget(operation_type)),
            (OperationType::Deposit | OperationType::Withdraw, Some(_)) => {
                Err(KindError::UnexpectedTarget(operation_type))
            }
        }
    }

    pub fn operation_type(self) -> OperationType {
        match self {
            OperationKind::Deposit => OperationType::Deposit,
            OperationKind::Withdraw => OperationType::Withdraw,
            OperationKind::Transfer { .. } => OperationType::Transfer,
        }
    }

    pub fn target(self) -> Option<WalletId> {
        match self {
            OperationKind::Transfer { target } => Some(target),
            OperationKind::Deposit | OperationKind::Withdraw => None,
        }
    }

    /// Identifies what a request asks for, so a reused id with other content is recognised:
    /// every field of the kind is in it, and the metadata. Amounts are compared by value
    /// (`10.5` equals `10.50`), metadata by content (keys in any order). A request without
    /// metadata keeps the form fingerprints had before metadata existed.
    pub fn fingerprint(self, wallet_id: WalletId, amount: &Amount, metadata: &Metadata) -> String {
        let target = match self {
            OperationKind::Transfer { target } => target.to_string(),
            OperationKind::Deposit | OperationKind::Withdraw => String::new(),
        };
        let mut canonical = format!(
            "{wallet_id}|{}|{amount}|{target}",
            self.operation_type().as_str()
        );
        if !metadata.is_empty() {
            canonical = format!("{canonical}|{}", metadata.canonical());
        }
        let digest = Sha256::digest(canonical.as_bytes());
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn wallet(n: u128) -> WalletId {
        WalletId(Uuid::from_u128(n))
    }

    /// Proves every name parses back to its kind, the fields make exactly the kinds whose
    /// effect says they have a target, and the kind keeps its name and target.
    #[test]
    fn names_fields_and_effects_agree() {
        for operation_type in OperationType::ALL {
            assert_eq!(
                OperationType::parse(operation_type.as_str()),
                Some(operation_type)
            );
            let with_target = operation_type.effect().credits_target;
            let made = OperationKind::from_fields(operation_type, with_target.then(|| wallet(2)))
                .expect("the fields its effect asks for make a kind");
            assert_eq!(made.operation_type(), operation_type);
            assert_eq!(made.target().is_some(), with_target);
            let other = (!with_target).then(|| wallet(2));
            assert!(OperationKind::from_fields(operation_type, other).is_err());
        }
        assert_eq!(OperationType::parse("deposit"), None);
        assert_eq!(
            OperationType::listed(OperationType::ALL),
            "DEPOSIT, WITHDRAW or TRANSFER"
        );
        assert_eq!(OperationType::listed([OperationType::Transfer]), "TRANSFER");
    }

    /// Proves the fingerprint keeps its canonical form (wallet, type, amount by value,
    /// target), so markers and stored operations written before stay comparable.
    #[test]
    fn fingerprints_keep_their_canonical_form() {
        let kind = OperationKind::Transfer { target: wallet(8) };
        let amount = Amount::parse("10.50").unwrap();
        let canonical = format!("{}|TRANSFER|{amount}|{}", wallet(7), wallet(8));
        let expected: String = Sha256::digest(canonical.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let none = Metadata::default();
        assert_eq!(kind.fingerprint(wallet(7), &amount, &none), expected);
        assert_eq!(
            kind.fingerprint(wallet(7), &Amount::parse("10.5").unwrap(), &none),
            expected
        );
        assert_ne!(
            OperationKind::Deposit.fingerprint(wallet(7), &amount, &none),
            OperationKind::Withdraw.fingerprint(wallet(7), &amount, &none)
        );
        let labels = |text: &str| serde_json::from_str::<Metadata>(text).unwrap();
        let labelled = kind.fingerprint(wallet(7), &amount, &labels(r#"{"a":"1","b":"2"}"#));
        assert_ne!(labelled, expected, "metadata is part of the request");
        assert_eq!(
            kind.fingerprint(wallet(7), &amount, &labels(r#"{"b":"2","a":"1"}"#)),
            labelled,
            "key order is not"
        );
    }
}
