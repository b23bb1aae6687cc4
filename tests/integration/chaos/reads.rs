//! The checker's reads of what clients see: the cache and the API's balances and statuses
//! against the ledger, and the events topic against the journal.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use uuid::Uuid;

use super::checker::{key_of, Check, Violations};
use super::cluster::{Tenant, TENANTS};
use super::workload::Sent;
use super::{cents, ATTEMPT_TIMEOUT};
use crate::harness::eventually;

impl Check<'_> {
    /// Redis and the API's balance reads converge to PostgreSQL.
    pub async fn check_cache(&self, violations: &mut Violations) {
        let redis = redis::Client::open(self.redis_url.as_str()).expect("redis url");
        let redis = redis
            .get_multiplexed_async_connection()
            .await
            .expect("connects to Redis");
        // Converged within seconds of the last commit; polled, with a deadline.
        let found = RefCell::new(Vec::new());
        let converged = eventually(Duration::from_secs(10), || async {
            let mut mismatches = Vec::new();
            for tenant in self.tenants {
                for wallet in &tenant.wallets {
                    mismatches.extend(
                        self.cache_mismatches(&mut redis.clone(), tenant, wallet)
                            .await,
                    );
                }
            }
            let none = mismatches.is_empty();
            *found.borrow_mut() = mismatches;
            none
        })
        .await;
        if !converged {
            for (kind, detail) in found.into_inner() {
                violations.add(kind, detail);
            }
        }
    }

    async fn cache_mismatches(
        &self,
        redis: &mut redis::aio::MultiplexedConnection,
        tenant: &Tenant,
        wallet: &Uuid,
    ) -> Vec<(&'static str, String)> {
        let mut found = Vec::new();
        let (balance, version) = self.ledger.wallets[wallet];
        let cached: Option<String> = redis::cmd("HGET")
            .arg(format!("wallet:{}:{wallet}", tenant.name))
            .arg("wallet")
            .query_async(redis)
            .await
            .expect("HGET");
        if let Some(cached) = cached {
            let cached: Value = serde_json::from_str(&cached).expect("cached wallet JSON");
            let seen = (
                cached["balance"].as_str().and_then(cents),
                cached["version"].as_i64(),
            );
            if seen != (Some(balance), Some(version)) {
                found.push((
                    "stale cache",
                    format!("{wallet}: Redis has {seen:?}, PostgreSQL ({balance}, {version})"),
                ));
            }
        }
        for api in &tenant.apis {
            let wallet = wallet.to_string();
            let response = answer(|| api.try_balance(&wallet)).await;
            let seen = (
                response.body["balance"].as_str().and_then(cents),
                response.body["version"].as_i64(),
            );
            if seen != (Some(balance), Some(version)) {
                found.push((
                    "stale read",
                    format!(
                        "{wallet} via {}: API answers {seen:?}, PostgreSQL ({balance}, {version})",
                        api.base
                    ),
                ));
            }
        }
        found
    }

    /// Final statuses in Redis match PostgreSQL, and the API answers them for a sample, each
    /// to its own tenant.
    pub async fn check_statuses(&self, violations: &mut Violations) {
        let acked: Vec<&Sent> = self
            .logs
            .iter()
            .flat_map(|log| &log.sent)
            .filter(|sent| sent.acked)
            .collect();
        let redis = redis::Client::open(self.redis_url.as_str()).expect("redis url");
        let mut redis = redis
            .get_multiplexed_async_connection()
            .await
            .expect("connects to Redis");
        let stored = |sent: &Sent| {
            self.ledger
                .operations
                .get(&key_of(sent))
                .map(|stored| stored.status.clone())
        };
        for chunk in acked.chunks(1_000) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|sent| format!("op:{}:{}", TENANTS[sent.tenant], sent.id))
                .collect();
            let markers: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut redis)
                .await
                .expect("MGET");
            for (sent, marker) in chunk.iter().zip(markers) {
                let Some(marker) = marker else { continue };
                let marker: Value = serde_json::from_str(&marker).expect("marker JSON");
                let state = marker["state"].as_str().unwrap_or_default();
                let stored = stored(sent);
                if matches!(state, "PROCESSED" | "FAILED") && Some(state) != stored.as_deref() {
                    violations.add(
                        "stale status",
                        format!("{}: Redis says {state}, PostgreSQL {stored:?}", sent.id),
                    );
                }
            }
        }
        let mut rng = SmallRng::from_rng(&mut rand::rng());
        for n in 0..200.min(acked.len()) {
            let sent = acked[rng.random_range(0..acked.len())];
            let apis = &self.tenants[sent.tenant].apis;
            let api = &apis[n % apis.len()];
            let (wallet, operation) = (sent.content.source.to_string(), sent.id.to_string());
            let response = answer(|| api.try_status(&wallet, &operation)).await;
            let stored = stored(sent);
            if response.body["status"].as_str() != stored.as_deref() {
                violations.add(
                    "status read",
                    format!(
                        "{}: API says {}, PostgreSQL {stored:?}",
                        sent.id, response.body
                    ),
                );
            }
        }
    }

    /// Every journal entry has its event on the events topic, and each wallet's events are in
    /// version order once repeats are dropped.
    pub async fn check_events(&self, violations: &mut Violations) {
        let mut seen_ids = HashSet::new();
        let mut published: HashSet<(Uuid, Uuid, i64)> = HashSet::new();
        let mut versions: HashMap<Uuid, i64> = HashMap::new();
        let mut created = 0;
        for event in crate::events::read_events(&self.broker, "wallet-events").await {
            let id = event["eventId"].as_str().unwrap_or_default().to_owned();
            if !seen_ids.insert(id) {
                continue;
            }
            let wallet = event["walletId"]
                .as_str()
                .and_then(|text| Uuid::parse_str(text).ok())
                .unwrap_or_default();
            let version = event["version"].as_i64().unwrap_or(-1);
            let previous = versions.insert(wallet, version);
            if previous.map_or(version != 0, |previous| version != previous + 1) {
                violations.add(
                    "event order",
                    format!("wallet {wallet}: version {version} after {previous:?}"),
                );
            }
            match event["operationId"]
                .as_str()
                .and_then(|text| Uuid::parse_str(text).ok())
            {
                Some(operation) => {
                    published.insert((operation, wallet, version));
                }
                None => created += 1,
            }
        }
        self.check_published(&published, created, violations);
    }

    fn check_published(
        &self,
        published: &HashSet<(Uuid, Uuid, i64)>,
        created: usize,
        violations: &mut Violations,
    ) {
        let ledger = self.ledger;
        if created != ledger.wallets.len() {
            violations.add(
                "missing event",
                format!(
                    "{created} WalletCreated events for {} wallets",
                    ledger.wallets.len()
                ),
            );
        }
        for entry in &ledger.entries {
            if !published.contains(&(entry.operation.1, entry.wallet, entry.version)) {
                violations.add(
                    "missing event",
                    format!(
                        "operation {:?} on wallet {} v{} ({})",
                        entry.operation,
                        entry.wallet,
                        entry.version,
                        ledger
                            .operations
                            .get(&entry.operation)
                            .map_or("?", |stored| stored.status.as_str())
                    ),
                );
            }
        }
        if published.len() != ledger.entries.len() {
            violations.add(
                "extra event",
                format!(
                    "{} operation events for {} journal entries",
                    published.len(),
                    ledger.entries.len()
                ),
            );
        }
    }
}

/// Sends a read until the API answers, as a client would after a transport error (a pooled
/// connection the server closed while idle); panics after 30 s without an answer.
async fn answer<F, Fut>(mut read: F) -> crate::client::Response
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<crate::client::Response>>,
{
    let start = Instant::now();
    loop {
        if let Ok(Some(response)) = tokio::time::timeout(ATTEMPT_TIMEOUT, read()).await {
            return response;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the API did not answer a read for 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
