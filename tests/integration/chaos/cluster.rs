//! The system under test: two servers with authentication on, two workers, and the stack
//! they run on; the two tenants whose clients use it.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use super::{amount, INITIAL_CENTS, PARTITIONS, REBALANCE_INTERVAL_MS, SERVERS, WALLETS, WORKERS};
use crate::auth::token;
use crate::client::Api;
use crate::harness::{Process, Server, Stack};

/// The tenants, each with half the wallets. Their clients use the same operation ids.
pub const TENANTS: [&str; 2] = ["acme", "globex"];

/// The processes the nemesis breaks and repairs. Fields drop in order: the `wallet`
/// processes before the stack whose temp dir holds their logs.
pub struct Cluster {
    pub servers: Vec<Server>,
    pub workers: Vec<Process>,
    tokens: Vec<String>,
    pub stack: Stack,
}

/// One tenant: its token's view of every server, its wallets and their funding deposits.
pub struct Tenant {
    pub name: &'static str,
    /// One client per server.
    pub apis: Vec<Api>,
    pub wallets: Vec<Uuid>,
    pub funding: Vec<Uuid>,
}

impl Cluster {
    pub fn start() -> Cluster {
        let stack = Stack::start_with_own_broker(PARTITIONS);
        // Tokens first: a server loads them when it starts.
        let tokens = TENANTS
            .iter()
            .map(|tenant| token(&stack, tenant, "read,write"))
            .collect();
        // An `Accepting` marker left by a killed API blocks retries of its request for this
        // long; it stays above the broker deadline (5 s) so a slow produce never overlaps a
        // retry.
        let serve_env = [
            ("WALLET_REDIS__ACCEPTING_TTL_S", "6".to_owned()),
            ("WALLET_AUTH__ENABLED", "true".to_owned()),
        ];
        let servers = (0..SERVERS).map(|_| stack.serve_with(&serve_env)).collect();
        let workers = (1..=WORKERS)
            .map(|n| {
                // Named sessions let the nemesis find the worker's open transactions.
                let url = format!("{}?application_name=work-{n}", stack.postgres.url());
                stack.spawn_wallet(
                    &format!("work-{n}"),
                    &["work"],
                    &[
                        (
                            "WALLET_WORKER__REBALANCE_INTERVAL_MS",
                            REBALANCE_INTERVAL_MS.to_string(),
                        ),
                        ("WALLET_DATABASE__URL", url),
                    ],
                )
            })
            .collect();
        Cluster {
            servers,
            workers,
            tokens,
            stack,
        }
    }

    /// Each tenant's clients of every server, on fresh connections.
    fn apis(&self, tenant: usize) -> Vec<Api> {
        self.servers
            .iter()
            .map(|server| Api::with_token(&server.base, &self.tokens[tenant]))
            .collect()
    }

    /// Creates each tenant's wallets and deposits 1000.00 into each.
    pub async fn fund_tenants(&self) -> Vec<Tenant> {
        let mut tenants = Vec::new();
        for (n, name) in TENANTS.iter().enumerate() {
            let apis = self.apis(n);
            let (wallets, funding) = create_funded_wallets(&apis[0], WALLETS / TENANTS.len()).await;
            tenants.push(Tenant {
                name,
                apis,
                wallets,
                funding,
            });
        }
        tenants
    }

    /// The same tenants on new connections: the load's pooled ones idled while the system
    /// settled.
    pub fn reconnect(&self, tenants: &[Tenant]) -> Vec<Tenant> {
        tenants
            .iter()
            .enumerate()
            .map(|(n, tenant)| Tenant {
                name: tenant.name,
                apis: self.apis(n),
                wallets: tenant.wallets.clone(),
                funding: tenant.funding.clone(),
            })
            .collect()
    }
}

/// Creates `count` wallets and deposits 1000.00 into each; returns their ids and the funding
/// operations.
async fn create_funded_wallets(api: &Api, count: usize) -> (Vec<Uuid>, Vec<Uuid>) {
    let wallets: Vec<Uuid> = join_all((0..count).map(|_| api.new_wallet()))
        .await
        .iter()
        .map(|id| Uuid::parse_str(id).expect("wallet id"))
        .collect();
    let funding: Vec<Uuid> = join_all(wallets.iter().map(|wallet| async move {
        let id = Uuid::new_v4();
        let body = json!({
            "walletId": wallet, "operationType": "DEPOSIT",
            "amount": amount(INITIAL_CENTS), "operationId": id,
        });
        let response = api.submit(&body).await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{:?}", response.body);
        let status = api
            .settled(
                &wallet.to_string(),
                &id.to_string(),
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(status["status"], "PROCESSED", "{status}");
        id
    }))
    .await;
    (wallets, funding)
}
