//! The one place time and fresh identifiers come from, so tests can reason about both.

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use crate::ledger::types::{OperationId, WalletId};

/// In whole microseconds, PostgreSQL's precision: a time the API shows from the cache equals
/// the one stored, so a client may pass it back as a filter or a point in time and find the
/// operation it came from.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
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

#[cfg(test)]
mod tests {
    use chrono::Timelike;

    #[test]
    fn times_have_postgresql_precision() {
        for _ in 0..100 {
            assert_eq!(super::now().nanosecond() % 1_000, 0);
        }
    }
}
