//! The one place time and fresh identifiers come from, so tests can reason about both.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::ledger::types::{OperationId, WalletId};

pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// Time-ordered (UUIDv7), so ids generated later sort later.
pub fn new_operation_id() -> OperationId {
    OperationId(Uuid::now_v7())
}

pub fn new_wallet_id() -> WalletId {
    WalletId(Uuid::now_v7())
}

/// Names a request in logs and in the `X-Request-Id` header.
pub fn new_request_id() -> String {
    Uuid::now_v7().to_string()
}

pub fn new_token_id() -> Uuid {
    Uuid::now_v7()
}
