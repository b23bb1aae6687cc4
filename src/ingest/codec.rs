//! The operation message on the topic: versioned, human-readable JSON.

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

use crate::ledger::kind::{KindError, KindFields};
use crate::ledger::metadata::Metadata;
use crate::ledger::money::Amount;
use crate::ledger::types::{Operation, OperationId, OperationKind, OperationType, WalletId};

const MESSAGE_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OperationMessage {
    v: u32,
    /// Records written before ids were scoped by tenant carry none; every tenant was then
    /// `default` as far as ids went.
    #[serde(default = "default_tenant")]
    tenant: String,
    operation_id: OperationId,
    wallet_id: WalletId,
    #[serde(rename = "type")]
    operation_type: OperationType,
    /// Absent for a VOID, an EXPIRE, and a CAPTURE of all that remains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to_wallet_id: Option<WalletId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hold_id: Option<OperationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<DateTime<Utc>>,
    accepted_at: DateTime<Utc>,
    fingerprint: String,
    /// Records written before metadata existed carry none.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    metadata: Metadata,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not an operation message: {0}")]
    Malformed(String),
    #[error("unsupported message version {0}")]
    UnsupportedVersion(u32),
    #[error("invalid amount: {0}")]
    Amount(String),
    #[error("the fields do not make an operation of its type: {0}")]
    Kind(String),
    #[error("fingerprint must be 1 to {FINGERPRINT_CHARS_MAX} ASCII letters or digits")]
    Fingerprint,
    #[error("acceptedAt must be between the years 1970 and 9999")]
    AcceptedAt,
    #[error("tenant must be 1 to {TENANT_CHARS_MAX} letters, digits, '-' or '_'")]
    Tenant,
    #[error("metadata may not contain the NUL character")]
    Metadata,
}

const FINGERPRINT_CHARS_MAX: usize = 128;
const TENANT_CHARS_MAX: usize = 64;

fn default_tenant() -> String {
    "default".to_owned()
}

pub fn encode(operation: &Operation) -> Vec<u8> {
    let fields = operation.kind.fields(operation.amount.is_some());
    let message = OperationMessage {
        v: MESSAGE_VERSION,
        tenant: operation.tenant.clone(),
        operation_id: operation.id,
        wallet_id: operation.wallet_id,
        operation_type: operation.kind.operation_type(),
        amount: operation.amount.as_ref().map(ToString::to_string),
        to_wallet_id: fields.target,
        hold_id: fields.hold,
        expires_at: fields.expires_at,
        accepted_at: operation.accepted_at,
        fingerprint: operation.fingerprint.clone(),
        metadata: operation.metadata.clone(),
    };
    // Serialising a struct of strings, ids and a timestamp into a Vec cannot fail.
    serde_json::to_vec(&message).expect("an operation message always serialises")
}

pub fn decode(bytes: &[u8]) -> Result<Operation, DecodeError> {
    let message: OperationMessage =
        serde_json::from_slice(bytes).map_err(|error| DecodeError::Malformed(error.to_string()))?;
    if message.v != MESSAGE_VERSION {
        return Err(DecodeError::UnsupportedVersion(message.v));
    }
    let fingerprint_ok = (1..=FINGERPRINT_CHARS_MAX).contains(&message.fingerprint.len())
        && message
            .fingerprint
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric());
    if !fingerprint_ok {
        return Err(DecodeError::Fingerprint);
    }
    let tenant_ok = (1..=TENANT_CHARS_MAX).contains(&message.tenant.len())
        && message
            .tenant
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if !tenant_ok {
        return Err(DecodeError::Tenant);
    }
    if !message.metadata.storable() {
        return Err(DecodeError::Metadata);
    }
    if !(1970..=9999).contains(&message.accepted_at.year()) {
        return Err(DecodeError::AcceptedAt);
    }
    let amount = message
        .amount
        .as_deref()
        .map(Amount::parse)
        .transpose()
        .map_err(|error| DecodeError::Amount(error.to_string()))?;
    let fields = KindFields {
        amount: amount.is_some(),
        target: message.to_wallet_id,
        hold: message.hold_id,
        expires_at: message.expires_at,
    };
    let kind = OperationKind::from_fields(message.operation_type, &fields)
        .map_err(|error| DecodeError::Kind(describe(error)))?;
    Ok(Operation {
        tenant: message.tenant,
        id: message.operation_id,
        wallet_id: message.wallet_id,
        kind,
        amount,
        accepted_at: message.accepted_at,
        fingerprint: message.fingerprint,
        metadata: message.metadata,
    })
}

fn describe(error: KindError) -> String {
    match error {
        KindError::Missing(kind, field) => format!("a {} needs {}", kind.as_str(), field.as_str()),
        KindError::Unexpected(kind, field) => {
            format!("a {} has no {}", kind.as_str(), field.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn round_trips() {
        let operation = Operation {
            tenant: "acme".to_owned(),
            id: OperationId(Uuid::now_v7()),
            wallet_id: WalletId(Uuid::new_v4()),
            kind: OperationKind::Transfer {
                target: WalletId(Uuid::new_v4()),
            },
            amount: Some(Amount::parse("12.34").unwrap()),
            accepted_at: Utc::now(),
            fingerprint: "abc".to_owned(),
            metadata: Metadata::default(),
        };
        assert_eq!(decode(&encode(&operation)).unwrap(), operation);
        let bare = String::from_utf8(encode(&operation)).unwrap();
        assert!(!bare.contains("metadata"), "no metadata, no field: {bare}");
        let labelled = Operation {
            metadata: serde_json::from_str(r#"{"order":"A-1","shop":"x"}"#).unwrap(),
            ..operation
        };
        assert_eq!(decode(&encode(&labelled)).unwrap(), labelled);
        let void = Operation {
            kind: OperationKind::Void {
                hold: OperationId(Uuid::now_v7()),
            },
            amount: None,
            ..labelled.clone()
        };
        assert_eq!(decode(&encode(&void)).unwrap(), void);
        let hold = Operation {
            kind: OperationKind::Hold {
                expires_at: Some(Utc::now()),
            },
            ..labelled
        };
        assert_eq!(decode(&encode(&hold)).unwrap(), hold);
    }

    #[test]
    fn rejects_bad_messages() {
        assert!(matches!(
            decode(b"not json"),
            Err(DecodeError::Malformed(_))
        ));
        let wallet = Uuid::new_v4();
        let op = Uuid::new_v4();
        let message = |v: u32, kind: &str, amount: &str, to: &str| {
            format!(
                r#"{{"v":{v},"operationId":"{op}","walletId":"{wallet}","type":"{kind}","amount":"{amount}",{to}"acceptedAt":"2026-01-01T00:00:00Z","fingerprint":"f"}}"#
            )
        };
        assert_eq!(
            decode(message(2, "DEPOSIT", "1", "").as_bytes()),
            Err(DecodeError::UnsupportedVersion(2))
        );
        assert!(matches!(
            decode(message(1, "DEPOSIT", "-1", "").as_bytes()),
            Err(DecodeError::Amount(_))
        ));
        assert_eq!(
            decode(message(1, "TRANSFER", "1", "").as_bytes()),
            Err(DecodeError::Kind("a TRANSFER needs toWalletId".to_owned()))
        );
        let to = format!(r#""toWalletId":"{wallet}","#);
        assert_eq!(
            decode(message(1, "DEPOSIT", "1", &to).as_bytes()),
            Err(DecodeError::Kind("a DEPOSIT has no toWalletId".to_owned()))
        );
        let hold = format!(r#""holdId":"{op}","#);
        assert_eq!(
            decode(message(1, "VOID", "1", &hold).as_bytes()),
            Err(DecodeError::Kind("a VOID has no amount".to_owned()))
        );
        let legacy = decode(message(1, "DEPOSIT", "1", "").as_bytes()).unwrap();
        assert_eq!(
            legacy.tenant, "default",
            "a record without a tenant is default's"
        );
        assert!(
            legacy.metadata.is_empty(),
            "a record without metadata has none"
        );
        let spoofed = message(1, "DEPOSIT", "1", r#""tenant":"a:b","#);
        assert_eq!(decode(spoofed.as_bytes()), Err(DecodeError::Tenant));
        let nul = message(1, "DEPOSIT", "1", "")
            .replace(r#""fingerprint":"f""#, r#""fingerprint":"f\u0000""#);
        assert_eq!(decode(nul.as_bytes()), Err(DecodeError::Fingerprint));
        let ancient = message(1, "DEPOSIT", "1", "").replace("2026-01-01", "0001-01-01");
        assert_eq!(decode(ancient.as_bytes()), Err(DecodeError::AcceptedAt));
        let nul = message(1, "DEPOSIT", "1", r#""metadata":{"a":"\u0000"},"#);
        assert_eq!(decode(nul.as_bytes()), Err(DecodeError::Metadata));
    }
}
