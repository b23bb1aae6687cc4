//! The live tokens of one API process, reloaded on an interval, and the per-token rate limit.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::RwLock;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::{tokens, Principal, Scope};
use crate::config::AuthConfig;

/// Why a request is turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that does not exist or was revoked.
    Unknown,
    /// A valid token without the scope the request needs.
    Forbidden(Scope),
    /// Over the token's rate; may retry after this long.
    Throttled(Duration),
}

pub struct TokenRegistry {
    enabled: bool,
    tokens: RwLock<HashMap<Vec<u8>, Principal>>,
    limiter: DefaultKeyedRateLimiter<uuid::Uuid>,
    clock: DefaultClock,
}

impl TokenRegistry {
    pub fn new(config: &AuthConfig) -> anyhow::Result<TokenRegistry> {
        let rate = NonZeroU32::new(config.rate_limit_per_s)
            .ok_or_else(|| anyhow::anyhow!("auth.rate_limit_per_s must be at least 1"))?;
        let burst = NonZeroU32::new(config.rate_limit_burst)
            .ok_or_else(|| anyhow::anyhow!("auth.rate_limit_burst must be at least 1"))?;
        Ok(TokenRegistry {
            enabled: config.enabled,
            tokens: RwLock::new(HashMap::new()),
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Who sent `authorization` (the header's value), if it may do `scope` now; the call
    /// counts against the token's rate.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        scope: Scope,
    ) -> Result<Principal, Denied> {
        let principal = self.identify(authorization, scope)?;
        if self.enabled {
            self.limiter
                .check_key(&principal.token_id)
                .map_err(|not_until| {
                    Denied::Throttled(not_until.wait_time_from(self.clock.now()))
                })?;
        }
        Ok(principal)
    }

    /// Who sent `authorization`, if that token exists and has `scope`; the rate is not
    /// touched, so a request checked early (before its body) is still counted only once.
    pub fn identify(&self, authorization: Option<&str>, scope: Scope) -> Result<Principal, Denied> {
        if !self.enabled {
            return Ok(Principal::anonymous());
        }
        let secret = authorization
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or(Denied::Missing)?;
        let principal = self
            .tokens
            .read()
            .map_err(|_| Denied::Unknown)?
            .get(&tokens::hash(secret))
            .cloned()
            .ok_or(Denied::Unknown)?;
        if !principal.may(scope) {
            return Err(Denied::Forbidden(scope));
        }
        Ok(principal)
    }

    /// Replaces the live tokens with what PostgreSQL holds now.
    pub async fn reload(&self, pool: &deadpool_postgres::Pool) -> anyhow::Result<usize> {
        let client = pool.get().await?;
        let live: HashMap<Vec<u8>, Principal> =
            tokens::live(&**client).await?.into_iter().collect();
        let count = live.len();
        if let Ok(mut tokens) = self.tokens.write() {
            *tokens = live;
        }
        self.limiter.retain_recent();
        Ok(count)
    }

    /// Reloads every `interval`, for as long as the process runs. While PostgreSQL is away
    /// the last known tokens stay in force, so an outage does not lock every client out.
    pub async fn refresh(&self, pool: deadpool_postgres::Pool, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            if let Err(error) = self.reload(&pool).await {
                tracing::warn!(error = %format!("{error:#}"), "cannot reload API tokens; keeping the last known");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(enabled: bool, burst: u32) -> TokenRegistry {
        let config = AuthConfig {
            enabled,
            rate_limit_per_s: 1,
            rate_limit_burst: burst,
            ..AuthConfig::default()
        };
        TokenRegistry::new(&config).expect("valid config")
    }

    fn with_token(registry: &TokenRegistry, secret: &str, scopes: Vec<Scope>) -> Principal {
        let principal = Principal {
            token_id: uuid::Uuid::from_u128(7),
            tenant: "acme".to_owned(),
            scopes,
        };
        registry
            .tokens
            .write()
            .expect("lock")
            .insert(tokens::hash(secret), principal.clone());
        principal
    }

    #[test]
    fn bearer_tokens_are_checked_for_existence_and_scope() {
        let registry = registry(true, 100);
        let principal = with_token(&registry, "wlt_good", vec![Scope::Read]);
        assert_eq!(
            registry.authenticate(None, Scope::Read),
            Err(Denied::Missing)
        );
        assert_eq!(
            registry.authenticate(Some("Basic abc"), Scope::Read),
            Err(Denied::Missing)
        );
        assert_eq!(
            registry.authenticate(Some("Bearer wlt_bad"), Scope::Read),
            Err(Denied::Unknown)
        );
        assert_eq!(
            registry.authenticate(Some("bearer  wlt_good "), Scope::Read),
            Ok(principal)
        );
        assert_eq!(
            registry.authenticate(Some("Bearer wlt_good"), Scope::Write),
            Err(Denied::Forbidden(Scope::Write))
        );
    }

    #[test]
    fn a_token_over_its_rate_is_throttled() {
        let registry = registry(true, 2);
        with_token(&registry, "wlt_fast", vec![Scope::Read]);
        let header = Some("Bearer wlt_fast");
        assert!(registry.authenticate(header, Scope::Read).is_ok());
        assert!(registry.authenticate(header, Scope::Read).is_ok());
        assert!(matches!(
            registry.authenticate(header, Scope::Read),
            Err(Denied::Throttled(wait)) if wait <= Duration::from_secs(1)
        ));
    }

    #[test]
    fn without_authentication_everyone_is_the_default_tenant() {
        let registry = registry(false, 1);
        let principal = registry.authenticate(None, Scope::Write).expect("allowed");
        assert_eq!(principal.tenant, super::super::DEFAULT_TENANT);
    }
}
