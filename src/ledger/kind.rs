//! Operation kinds, in one place: their names, the request fields that make one, the content
//! that identifies one, and how each moves money. A new kind starts here: every match below is
//! exhaustive, so the compiler names each decision it needs, and a test holds the schema's
//! `CHECK` on `operations.type` equal to [`OperationType::ALL`].

use bigdecimal::BigDecimal;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::metadata::Metadata;
use super::money::Amount;
use super::types::{OperationId, WalletId};

/// A kind's name, as the API, the topic and the database write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationType {
    Deposit,
    Withdraw,
    Transfer,
    Hold,
    Capture,
    Void,
    /// Releases what remains of a hold at its `expiresAt`; decided by the worker alone.
    Expire,
}

/// Which way an operation moves its amount on its own wallet's balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Credit,
    Debit,
    /// The balance stays; a hold's reservation or release changes only what is held.
    Neither,
}

/// How an operation of a kind changes balances once applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effect {
    /// What happens to the operation's own wallet (the source).
    pub source: Direction,
    /// Whether a second wallet, the request's `toWalletId`, is credited with the amount when
    /// the request names one.
    pub credits_target: bool,
}

/// A field of an operation request whose presence depends on the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestField {
    Amount,
    ToWalletId,
    HoldId,
    ExpiresAt,
}

/// Whether a kind needs, allows or refuses a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Required,
    Optional,
    Absent,
}

impl RequestField {
    pub const ALL: [RequestField; 4] = [
        RequestField::Amount,
        RequestField::ToWalletId,
        RequestField::HoldId,
        RequestField::ExpiresAt,
    ];

    /// The field's name in a request body.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestField::Amount => "amount",
            RequestField::ToWalletId => "toWalletId",
            RequestField::HoldId => "holdId",
            RequestField::ExpiresAt => "expiresAt",
        }
    }
}

impl OperationType {
    /// Every kind, in the order documents list them.
    pub const ALL: [OperationType; 7] = [
        OperationType::Deposit,
        OperationType::Withdraw,
        OperationType::Transfer,
        OperationType::Hold,
        OperationType::Capture,
        OperationType::Void,
        OperationType::Expire,
    ];

    /// What the kinds do, in one sentence, for the API's documentation.
    pub const SUMMARY: &'static str =
        "DEPOSIT and WITHDRAW change one wallet; TRANSFER moves money to `toWalletId`; HOLD \
         reserves funds until `expiresAt`, CAPTURE takes them (to `toWalletId` when given), VOID \
         releases them; EXPIRE is the worker's release of a hold at its `expiresAt`";

    pub fn as_str(self) -> &'static str {
        match self {
            OperationType::Deposit => "DEPOSIT",
            OperationType::Withdraw => "WITHDRAW",
            OperationType::Transfer => "TRANSFER",
            OperationType::Hold => "HOLD",
            OperationType::Capture => "CAPTURE",
            OperationType::Void => "VOID",
            OperationType::Expire => "EXPIRE",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Whether a client may submit the kind: an EXPIRE comes from the worker alone, when a
    /// hold's time is up.
    pub fn submittable(self) -> bool {
        match self {
            OperationType::Deposit
            | OperationType::Withdraw
            | OperationType::Transfer
            | OperationType::Hold
            | OperationType::Capture
            | OperationType::Void => true,
            OperationType::Expire => false,
        }
    }

    /// The kinds a client may submit, in the order documents list them.
    pub fn submittable_kinds() -> impl Iterator<Item = OperationType> {
        Self::ALL.into_iter().filter(|kind| kind.submittable())
    }

    pub fn effect(self) -> Effect {
        let (source, credits_target) = match self {
            OperationType::Deposit => (Direction::Credit, false),
            OperationType::Withdraw => (Direction::Debit, false),
            OperationType::Transfer | OperationType::Capture => (Direction::Debit, true),
            OperationType::Hold | OperationType::Void | OperationType::Expire => {
                (Direction::Neither, false)
            }
        };
        Effect {
            source,
            credits_target,
        }
    }

    /// Whether a request of this kind needs, allows or refuses `field`.
    pub fn presence(self, field: RequestField) -> Presence {
        use Presence::{Absent, Optional, Required};
        let [amount, target, hold, expiry] = match self {
            OperationType::Deposit | OperationType::Withdraw => [Required, Absent, Absent, Absent],
            OperationType::Transfer => [Required, Required, Absent, Absent],
            OperationType::Hold => [Required, Absent, Absent, Optional],
            OperationType::Capture => [Optional, Optional, Required, Absent],
            OperationType::Void | OperationType::Expire => [Absent, Absent, Required, Absent],
        };
        match field {
            RequestField::Amount => amount,
            RequestField::ToWalletId => target,
            RequestField::HoldId => hold,
            RequestField::ExpiresAt => expiry,
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
            Direction::Neither => BigDecimal::from(0),
        }
    }
}

/// What an operation does, with the fields that make it this operation: the wallet a
/// transfer credits, the hold a capture, void or expiry acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationKind {
    Deposit,
    Withdraw,
    Transfer {
        target: WalletId,
    },
    /// Reserves the amount. `expires_at` is as the client asked: none means the configured
    /// default, which the API fills in before the record is produced.
    Hold {
        expires_at: Option<DateTime<Utc>>,
    },
    /// Takes the amount (all that remains without one) from the hold; `target` receives it,
    /// or it leaves like a withdrawal.
    Capture {
        hold: OperationId,
        target: Option<WalletId>,
    },
    Void {
        hold: OperationId,
    },
    Expire {
        hold: OperationId,
    },
}

/// The request fields a kind is made from, besides its type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindFields {
    /// Whether the request names an amount.
    pub amount: bool,
    pub target: Option<WalletId>,
    pub hold: Option<OperationId>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl KindFields {
    fn given(&self, field: RequestField) -> bool {
        match field {
            RequestField::Amount => self.amount,
            RequestField::ToWalletId => self.target.is_some(),
            RequestField::HoldId => self.hold.is_some(),
            RequestField::ExpiresAt => self.expires_at.is_some(),
        }
    }
}

/// Why a request's fields make no kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindError {
    /// The kind needs the field and the request has none.
    Missing(OperationType, RequestField),
    /// The request has a field the kind refuses.
    Unexpected(OperationType, RequestField),
}

impl OperationKind {
    /// The kind a request's (or a record's) type and fields describe.
    pub fn from_fields(
        operation_type: OperationType,
        fields: &KindFields,
    ) -> Result<Self, KindError> {
        for field in RequestField::ALL {
            match (operation_type.presence(field), fields.given(field)) {
                (Presence::Required, false) => {
                    return Err(KindError::Missing(operation_type, field))
                }
                (Presence::Absent, true) => {
                    return Err(KindError::Unexpected(operation_type, field))
                }
                (Presence::Required, true)
                | (Presence::Optional, _)
                | (Presence::Absent, false) => {}
            }
        }
        let missing = |field| KindError::Missing(operation_type, field);
        let hold = fields.hold.ok_or(missing(RequestField::HoldId));
        Ok(match operation_type {
            OperationType::Deposit => OperationKind::Deposit,
            OperationType::Withdraw => OperationKind::Withdraw,
            OperationType::Transfer => OperationKind::Transfer {
                target: fields.target.ok_or(missing(RequestField::ToWalletId))?,
            },
            OperationType::Hold => OperationKind::Hold {
                expires_at: fields.expires_at,
            },
            OperationType::Capture => OperationKind::Capture {
                hold: hold?,
                target: fields.target,
            },
            OperationType::Void => OperationKind::Void { hold: hold? },
            OperationType::Expire => OperationKind::Expire { hold: hold? },
        })
    }

    pub fn operation_type(self) -> OperationType {
        match self {
            OperationKind::Deposit => OperationType::Deposit,
            OperationKind::Withdraw => OperationType::Withdraw,
            OperationKind::Transfer { .. } => OperationType::Transfer,
            OperationKind::Hold { .. } => OperationType::Hold,
            OperationKind::Capture { .. } => OperationType::Capture,
            OperationKind::Void { .. } => OperationType::Void,
            OperationKind::Expire { .. } => OperationType::Expire,
        }
    }

    /// The second wallet, credited when the operation is applied.
    pub fn target(self) -> Option<WalletId> {
        match self {
            OperationKind::Transfer { target } => Some(target),
            OperationKind::Capture { target, .. } => target,
            OperationKind::Deposit
            | OperationKind::Withdraw
            | OperationKind::Hold { .. }
            | OperationKind::Void { .. }
            | OperationKind::Expire { .. } => None,
        }
    }

    /// The hold the operation acts on; a HOLD's own id is the hold id.
    pub fn hold(self) -> Option<OperationId> {
        match self {
            OperationKind::Capture { hold, .. }
            | OperationKind::Void { hold }
            | OperationKind::Expire { hold } => Some(hold),
            OperationKind::Deposit
            | OperationKind::Withdraw
            | OperationKind::Transfer { .. }
            | OperationKind::Hold { .. } => None,
        }
    }

    /// The kind with a HOLD's left-out expiry set to `at`.
    pub fn expiring_by_default(self, at: DateTime<Utc>) -> Self {
        match self {
            OperationKind::Hold { expires_at } => OperationKind::Hold {
                expires_at: expires_at.or(Some(at)),
            },
            OperationKind::Deposit
            | OperationKind::Withdraw
            | OperationKind::Transfer { .. }
            | OperationKind::Capture { .. }
            | OperationKind::Void { .. }
            | OperationKind::Expire { .. } => self,
        }
    }

    /// The request's fields, as `from_fields` takes them.
    pub fn fields(self, amount: bool) -> KindFields {
        KindFields {
            amount,
            target: self.target(),
            hold: self.hold(),
            expires_at: match self {
                OperationKind::Hold { expires_at } => expires_at,
                OperationKind::Deposit
                | OperationKind::Withdraw
                | OperationKind::Transfer { .. }
                | OperationKind::Capture { .. }
                | OperationKind::Void { .. }
                | OperationKind::Expire { .. } => None,
            },
        }
    }

    /// Identifies what a request asks for, so a reused id with other content is recognised:
    /// every field of the kind is in it, and the metadata. Amounts are compared by value
    /// (`10.5` equals `10.50`), times by instant, metadata by content (keys in any order). The
    /// kinds that existed before holds keep the form their fingerprints had, and a request
    /// without metadata the form fingerprints had before metadata existed.
    pub fn fingerprint(
        self,
        wallet_id: WalletId,
        amount: Option<&Amount>,
        metadata: &Metadata,
    ) -> String {
        let target = self
            .target()
            .map(|target| target.to_string())
            .unwrap_or_default();
        let amount = amount.map(Amount::to_string).unwrap_or_default();
        let mut canonical = format!(
            "{wallet_id}|{}|{amount}|{target}",
            self.operation_type().as_str()
        );
        match self {
            OperationKind::Deposit | OperationKind::Withdraw | OperationKind::Transfer { .. } => {}
            OperationKind::Hold { expires_at } => {
                let expires_at = expires_at
                    .map(|at| at.to_rfc3339_opts(SecondsFormat::Micros, true))
                    .unwrap_or_default();
                canonical = format!("{canonical}|{expires_at}");
            }
            OperationKind::Capture { hold, .. }
            | OperationKind::Void { hold }
            | OperationKind::Expire { hold } => canonical = format!("{canonical}|{hold}"),
        }
        if !metadata.is_empty() {
            canonical = format!("{canonical}|{}", metadata.canonical());
        }
        // One formatting pass over the digest; a `format!` per byte cost `serve` about 3 % of
        // its CPU in bulk.
        format!("{:x}", Sha256::digest(canonical.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn wallet(n: u128) -> WalletId {
        WalletId(Uuid::from_u128(n))
    }

    /// The fields a request of `operation_type` may have, each given or not by `given`.
    fn fields(operation_type: OperationType, given: impl Fn(Presence) -> bool) -> KindFields {
        let present = |field| given(operation_type.presence(field));
        KindFields {
            amount: present(RequestField::Amount),
            target: present(RequestField::ToWalletId).then(|| wallet(2)),
            hold: present(RequestField::HoldId).then(|| OperationId(Uuid::from_u128(3))),
            expires_at: present(RequestField::ExpiresAt).then(Utc::now),
        }
    }

    /// Proves every name parses back to its kind, a kind is made from the fields it needs
    /// (with or without the ones it allows) and gives them back, a missing required field or
    /// a refused one is named, and only EXPIRE is kept from clients.
    #[test]
    fn names_fields_and_effects_agree() {
        for operation_type in OperationType::ALL {
            assert_eq!(
                OperationType::parse(operation_type.as_str()),
                Some(operation_type)
            );
            for optional in [true, false] {
                let given = fields(operation_type, |presence| match presence {
                    Presence::Required => true,
                    Presence::Optional => optional,
                    Presence::Absent => false,
                });
                let made = OperationKind::from_fields(operation_type, &given)
                    .expect("the fields its presence asks for make a kind");
                assert_eq!(made.operation_type(), operation_type);
                assert_eq!(made.fields(given.amount), given);
                if made.target().is_some() {
                    assert!(operation_type.effect().credits_target);
                }
            }
            for field in RequestField::ALL {
                let mut wrong = fields(operation_type, |presence| presence == Presence::Required);
                let expected = match operation_type.presence(field) {
                    Presence::Required => KindError::Missing(operation_type, field),
                    Presence::Absent => KindError::Unexpected(operation_type, field),
                    Presence::Optional => continue,
                };
                match field {
                    RequestField::Amount => wrong.amount = !wrong.amount,
                    RequestField::ToWalletId => {
                        wrong.target = wrong.target.xor(Some(wallet(2)));
                    }
                    RequestField::HoldId => {
                        wrong.hold = wrong.hold.xor(Some(OperationId(Uuid::from_u128(3))));
                    }
                    RequestField::ExpiresAt => {
                        wrong.expires_at = wrong.expires_at.xor(Some(Utc::now()));
                    }
                }
                assert_eq!(
                    OperationKind::from_fields(operation_type, &wrong),
                    Err(expected)
                );
            }
        }
        assert_eq!(OperationType::parse("deposit"), None);
        assert_eq!(
            OperationType::listed(OperationType::submittable_kinds()),
            "DEPOSIT, WITHDRAW, TRANSFER, HOLD, CAPTURE or VOID"
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
        assert_eq!(kind.fingerprint(wallet(7), Some(&amount), &none), expected);
        assert_eq!(
            kind.fingerprint(wallet(7), Some(&Amount::parse("10.5").unwrap()), &none),
            expected
        );
        assert_ne!(
            OperationKind::Deposit.fingerprint(wallet(7), Some(&amount), &none),
            OperationKind::Withdraw.fingerprint(wallet(7), Some(&amount), &none)
        );
        let labels = |text: &str| serde_json::from_str::<Metadata>(text).unwrap();
        let labelled = kind.fingerprint(wallet(7), Some(&amount), &labels(r#"{"a":"1","b":"2"}"#));
        assert_ne!(labelled, expected, "metadata is part of the request");
        assert_eq!(
            kind.fingerprint(wallet(7), Some(&amount), &labels(r#"{"b":"2","a":"1"}"#)),
            labelled,
            "key order is not"
        );
    }

    /// Proves a hold's expiry is part of its request by instant (not by how it was written),
    /// and the hold a capture or void names is part of theirs.
    #[test]
    fn hold_fingerprints_name_their_expiry_and_hold() {
        let none = Metadata::default();
        let amount = Amount::parse("5").unwrap();
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc)
        };
        let hold = |expires_at| {
            OperationKind::Hold { expires_at }.fingerprint(wallet(1), Some(&amount), &none)
        };
        assert_eq!(
            hold(Some(at("2026-12-01T10:00:00Z"))),
            hold(Some(at("2026-12-01T11:00:00+01:00")))
        );
        assert_ne!(hold(Some(at("2026-12-01T10:00:00Z"))), hold(None));
        let void = |n| {
            OperationKind::Void {
                hold: OperationId(Uuid::from_u128(n)),
            }
            .fingerprint(wallet(1), None, &none)
        };
        assert_ne!(void(1), void(2));
        let capture = OperationKind::Capture {
            hold: OperationId(Uuid::from_u128(1)),
            target: None,
        };
        assert_ne!(capture.fingerprint(wallet(1), None, &none), void(1));
        assert_ne!(
            capture.fingerprint(wallet(1), None, &none),
            capture.fingerprint(wallet(1), Some(&amount), &none)
        );
    }
}
