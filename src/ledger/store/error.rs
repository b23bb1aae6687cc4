//! Why a PostgreSQL call failed, and what that means for a batch: retried, or its records
//! blamed.

use tokio_postgres::error::SqlState;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another owner moved the partition's position; this batch must not be applied.
    #[error("partition {partition} is at offset {stored}, not {expected}: another worker owns it")]
    Fenced {
        partition: i32,
        expected: i64,
        stored: i64,
    },
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    #[error("no database connection: {0}")]
    Unavailable(String),
    #[error("the database holds a value the ledger cannot read: {0}")]
    Corrupt(String),
}

/// Why a batch is retried rather than its records blamed: the label of
/// `wallet_batch_retries_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The connection failed or could not be made (class 08, a closed socket, no pooled client).
    Connection,
    /// The server ran out of something: disk, memory, connections (class 53).
    Resources,
    /// An operator or the server stopped the work: shutdown, termination (57).
    OperatorIntervention,
    /// A statement was cancelled (57014): by `statement_timeout`, which a batch too big for
    /// the database's pace meets on every attempt, so it is retried in smaller parts; or by
    /// an operator's `pg_cancel_backend`, for which smaller parts do no harm.
    StatementTimeout,
    /// The server's own environment failed: I/O errors (class 58).
    System,
    /// A lock was not granted within `lock_timeout` (55P03), e.g. held by a frozen worker.
    LockTimeout,
    /// Another transaction won a conflict: serialization failure, deadlock, a unique key
    /// another writer inserted first (40001, 40P01, 23505).
    Conflict,
    /// The server only accepts reads, as right after a failover (25006).
    ReadOnly,
    /// Anything else that no record can have caused, such as a missing table or a value in the
    /// database the ledger cannot read: an operator must look, and the batch waits.
    Unexpected,
}

impl RetryReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Connection => "connection",
            RetryReason::Resources => "resources",
            RetryReason::OperatorIntervention => "operator_intervention",
            RetryReason::StatementTimeout => "statement_timeout",
            RetryReason::System => "system",
            RetryReason::LockTimeout => "lock_timeout",
            RetryReason::Conflict => "conflict",
            RetryReason::ReadOnly => "read_only",
            RetryReason::Unexpected => "unexpected",
        }
    }
}

/// What to do about a batch that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// Keep the batch and apply it again later: the cause is outside the records.
    Retry(RetryReason),
    /// A record's own data was refused (a data exception, a constraint it violates): find it
    /// and keep it as a dead letter.
    Reject,
}

/// Classifies a SQLSTATE by what it means for the batch.
pub fn remedy_for_sqlstate(code: &str) -> Remedy {
    let class = code.get(..2).unwrap_or(code);
    match (class, code) {
        (_, "55P03") => Remedy::Retry(RetryReason::LockTimeout),
        (_, "25006") => Remedy::Retry(RetryReason::ReadOnly),
        (_, "57014") => Remedy::Retry(RetryReason::StatementTimeout),
        // The server ended the session: idle in a transaction too long, or idle too long.
        (_, "25P03") | (_, "57P05") => Remedy::Retry(RetryReason::Connection),
        (_, "23505") => Remedy::Retry(RetryReason::Conflict),
        ("08", _) => Remedy::Retry(RetryReason::Connection),
        ("53", _) => Remedy::Retry(RetryReason::Resources),
        ("57", _) => Remedy::Retry(RetryReason::OperatorIntervention),
        ("58", _) => Remedy::Retry(RetryReason::System),
        ("40", _) => Remedy::Retry(RetryReason::Conflict),
        ("22", _) | ("23", _) => Remedy::Reject,
        _ => Remedy::Retry(RetryReason::Unexpected),
    }
}

/// The operations table's key, (tenant, id): an insert it refuses met a stored operation.
const OPERATIONS_KEY: &str = "operations_tenant_id_pkey";

impl StoreError {
    /// Whether an operation's id was stored already (23505 on the operations key).
    pub fn is_stored_operation(&self) -> bool {
        let StoreError::Database(error) = self else {
            return false;
        };
        error.as_db_error().is_some_and(|db| {
            *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(OPERATIONS_KEY)
        })
    }

    /// The error that caused a transaction's failure among those of statements sent together:
    /// the first one that is not "transaction aborted" (25P02), which the statements after
    /// the failed one all answer, whichever of them ran first.
    pub fn cause<const N: usize>(errors: [Option<StoreError>; N]) -> StoreError {
        let mut errors: Vec<StoreError> = errors.into_iter().flatten().collect();
        if errors.is_empty() {
            return StoreError::Corrupt("statements failed without an error".to_owned());
        }
        let cause = errors
            .iter()
            .position(|error| !error.is_aborted_transaction())
            .unwrap_or(0);
        errors.swap_remove(cause)
    }

    fn is_aborted_transaction(&self) -> bool {
        matches!(self, StoreError::Database(error)
            if error.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION))
    }

    /// A value read from the database that the ledger cannot read.
    pub fn corrupt(error: impl std::fmt::Display) -> Self {
        StoreError::Corrupt(error.to_string())
    }

    /// What the error means for a batch: only a record's own data is ever blamed.
    pub fn remedy(&self) -> Remedy {
        match self {
            StoreError::Database(error) => match error.code() {
                Some(code) if !error.is_closed() => remedy_for_sqlstate(code.code()),
                _ => Remedy::Retry(RetryReason::Connection),
            },
            StoreError::Unavailable(_) => Remedy::Retry(RetryReason::Connection),
            StoreError::Corrupt(_) | StoreError::Fenced { .. } => {
                Remedy::Retry(RetryReason::Unexpected)
            }
        }
    }

    /// Errors an API request should answer with 503 (retry later) rather than 500: the server
    /// is away, busy or refusing writes, none of which the request caused.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.remedy(),
            Remedy::Retry(
                RetryReason::Connection
                    | RetryReason::Resources
                    | RetryReason::OperatorIntervention
                    | RetryReason::StatementTimeout
                    | RetryReason::System
                    | RetryReason::LockTimeout
                    | RetryReason::Conflict
                    | RetryReason::ReadOnly
            )
        )
    }

    /// The SQLSTATE and the server's own words, which `tokio_postgres` prints as `db error`.
    pub fn describe(&self) -> String {
        self.described(true)
    }

    /// As [`describe`](Self::describe) without the server's DETAIL, which may quote row
    /// values (a key's tenant and id): for what unauthenticated callers read, such as
    /// `/readyz`.
    pub fn summary(&self) -> String {
        self.described(false)
    }

    fn described(&self, with_detail: bool) -> String {
        match self {
            StoreError::Database(error) => match error.as_db_error() {
                Some(db) => format!(
                    "{} {}: {}{}",
                    db.severity(),
                    db.code().code(),
                    db.message(),
                    db.detail()
                        .filter(|_| with_detail)
                        .map(|detail| format!(" ({detail})"))
                        .unwrap_or_default()
                ),
                // Not from the server: Display already names the cause.
                None => error.to_string(),
            },
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves errors are classified by what they mean: resource, connection, operator,
    /// system, lock, conflict and read-only errors keep the batch; only a record's own data
    /// (data exceptions, constraint violations other than a unique key) is blamed.
    #[test]
    fn sqlstates_are_classified_by_meaning() {
        let retry = |code| match remedy_for_sqlstate(code) {
            Remedy::Retry(reason) => Some(reason.as_str()),
            Remedy::Reject => None,
        };
        for (code, reason) in [
            ("53100", "resources"),
            ("53200", "resources"),
            ("53300", "resources"),
            ("08006", "connection"),
            ("08001", "connection"),
            ("57P01", "operator_intervention"),
            ("57P03", "operator_intervention"),
            ("57014", "statement_timeout"),
            ("58030", "system"),
            ("55P03", "lock_timeout"),
            ("40001", "conflict"),
            ("40P01", "conflict"),
            ("23505", "conflict"),
            ("25006", "read_only"),
            ("25P03", "connection"),
            ("42P01", "unexpected"),
            ("XX000", "unexpected"),
        ] {
            assert_eq!(retry(code), Some(reason), "{code}");
        }
        for code in ["22003", "22P02", "23514", "23503", "23502"] {
            assert_eq!(remedy_for_sqlstate(code), Remedy::Reject, "{code}");
        }
        let unavailable = StoreError::Unavailable("pool timed out".to_owned());
        assert_eq!(unavailable.remedy(), Remedy::Retry(RetryReason::Connection));
        assert!(unavailable.is_transient());
        let corrupt = StoreError::Corrupt("bad currency".to_owned());
        assert_eq!(corrupt.remedy(), Remedy::Retry(RetryReason::Unexpected));
        assert!(!corrupt.is_transient());
    }
}
