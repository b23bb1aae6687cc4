//! API tokens: who a request comes from (a tenant), what it may do (scopes), and how fast.
//!
//! A token is shown once when created; PostgreSQL keeps only its SHA-256. Every API process
//! keeps the live tokens in memory and reloads them every `auth.refresh_interval_ms`, so a
//! revocation reaches every process within that interval and a request costs no round trip.

mod registry;
mod tokens;

pub use registry::{Denied, TokenRegistry};
pub use tokens::{create, list, revoke, NewToken, TokenRecord};

use std::fmt;

/// The tenant every wallet belongs to when authentication is off.
pub const DEFAULT_TENANT: &str = "default";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Read,
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is asking: the token's id (for rate limits and logs), its tenant and its scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: uuid::Uuid,
    pub tenant: String,
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// Everyone, when authentication is turned off.
    pub fn anonymous() -> Principal {
        Principal {
            token_id: uuid::Uuid::nil(),
            tenant: DEFAULT_TENANT.to_owned(),
            scopes: vec![Scope::Read, Scope::Write],
        }
    }

    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// A tenant name: 1 to 64 letters, digits, `-` or `_`.
pub fn valid_tenant(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_short_plain_tokens() {
        assert!(valid_tenant("acme-2"));
        assert!(valid_tenant("a_b"));
        assert!(!valid_tenant(""));
        assert!(!valid_tenant("has space"));
        assert!(!valid_tenant(&"x".repeat(65)));
    }

    #[test]
    fn scopes_round_trip() {
        for scope in [Scope::Read, Scope::Write] {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("admin"), None);
    }
}
