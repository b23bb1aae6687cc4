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

/// The namespace of wallet ids derived from a creation's `Idempotency-Key`.
const WALLET_KEY_NAMESPACE: Uuid = Uuid::from_u128(0x3c1d_9a47_2e85_4f60_b7d2_81a9_c45e_0f13);

/// The wallet id a creation's `Idempotency-Key` names in its tenant: the same for the same
/// tenant and key, another for another tenant (tenants never contain ':').
pub fn keyed_wallet_id(tenant: &str, key: &str) -> WalletId {
    WalletId(Uuid::new_v5(
        &WALLET_KEY_NAMESPACE,
        format!("{tenant}:{key}").as_bytes(),
    ))
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

    #[test]
    fn a_creation_key_names_one_wallet_per_tenant() {
        use super::keyed_wallet_id;
        assert_eq!(keyed_wallet_id("acme", "k"), keyed_wallet_id("acme", "k"));
        assert_ne!(keyed_wallet_id("acme", "k"), keyed_wallet_id("globex", "k"));
        assert_ne!(keyed_wallet_id("acme", "k"), keyed_wallet_id("acme", "k2"));
    }
}
