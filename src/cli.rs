//! The command line: one executable, one subcommand per mode.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};

use crate::bench::{BenchOptions, Mix};

#[derive(Debug, Parser)]
#[command(name = "wallet", version, about = "A high-load wallet service", long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalFlags,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API: validate requests and hand operations to Kafka.
    Serve(ServeFlags),
    /// Apply operations from Kafka to PostgreSQL, exactly once and in order per wallet.
    Work(WorkFlags),
    /// Create or update the database schema and the Kafka topics, then exit.
    Migrate(MigrateFlags),
    /// Load a running system, then verify every operation was applied exactly once.
    Bench(BenchFlags),
    /// Audit the ledger (read-only): balances against their journals, gapless versions,
    /// operations against their entries, stored positions against the broker. Exit 1 on any
    /// violation.
    Verify(ReportFlags),
    /// Show per partition the broker's end offset, the stored position, the lag and the
    /// lease holder, and the outbox backlog.
    Lag(ReportFlags),
    /// Move the stored position of a partition the workers refuse to apply (it lies outside
    /// what the broker holds, or the topic was recreated) to the partition's log start, so
    /// every record the broker holds is applied; those applied already are dropped as
    /// duplicates. A position the workers accept is never moved.
    Reposition(RepositionFlags),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run `serve` and `work` in one process (local development, small installs).
    Run {
        #[command(flatten)]
        serve: ServeFlags,
        #[command(flatten)]
        work: WorkFlags,
    },
}

/// Flags every mode accepts. Each overrides the configuration file and `WALLET_*` variables.
#[derive(Debug, Args)]
pub struct GlobalFlags {
    /// Configuration file [default: config.toml when present]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// PostgreSQL URL (database.url)
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Redis URL (redis.url)
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Comma-separated Kafka bootstrap brokers (kafka.brokers)
    #[arg(long, global = true, value_name = "HOST:PORT,...")]
    pub brokers: Option<String>,
    /// Log filter, e.g. `info` or `wallet=debug` (log.level)
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format: `text` or `json` (log.format)
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeFlags {
    /// Address the HTTP API listens on (http.listen)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct WorkFlags {
    /// Most records applied in one transaction (worker.batch_records_max)
    #[arg(long, value_name = "N")]
    pub batch_records_max: Option<usize>,
    /// Longest wait for a batch to fill, in milliseconds (worker.batch_linger_ms)
    #[arg(long, value_name = "MS")]
    pub batch_linger_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub struct BenchFlags {
    /// Base URL of the API
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Wallets to create and fund before the load
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub wallets: usize,
    /// Put every operation on one wallet (same as --wallets 1)
    #[arg(long)]
    pub hot: bool,
    /// Length of the load phase, in seconds
    #[arg(long = "duration", default_value_t = 10, value_name = "SECONDS")]
    pub duration_s: u64,
    /// Concurrent HTTP connections; an open loop (--rate) uses at least one per 10 requests a
    /// second, so that its arrivals never wait for a connection
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub connections: usize,
    /// Operation weights, of deposit, withdraw, transfer, hold, capture and void (a capture or
    /// void settles a hold its connection placed before, in full, a capture to another wallet)
    #[arg(long, default_value = "deposit=40,withdraw=40,transfer=20")]
    pub mix: Mix,
    /// Constant arrival rate in operations per second (open loop); otherwise closed loop
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<u64>,
    /// Send N operations per request to POST /api/v1/operations/batch instead of one per
    /// request to POST /api/v1/wallet
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: Option<u64>,
    /// Longest wait for every accepted operation to be decided, in seconds
    #[arg(long = "settle-timeout", default_value_t = 120, value_name = "SECONDS")]
    pub settle_timeout_s: u64,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// API token with the read and write scopes, when the server requires one
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Run the standard scenarios (hot wallet; 10,000 wallets; open loop at --rate, default
    /// 5,000/s, on 1,000 wallets; hot wallet in batches of 1,000) and print one table
    #[arg(long, conflicts_with_all = ["hot", "wallets", "batch"])]
    pub standard: bool,
    /// After each closed-loop scenario, drive the replaced design (one row-locked transaction
    /// per operation) against the same PostgreSQL (database.url) and print the ratio
    #[arg(long, value_enum, value_name = "DESIGN")]
    pub baseline: Option<Baseline>,
}

/// The designs `--baseline` can measure.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Baseline {
    /// Per operation: SELECT … FOR UPDATE the wallet row(s), check, UPDATE, INSERT a journal row
    RowLock,
}

/// The open-loop rate of the standard scenarios when `--rate` is not given.
const STANDARD_RATE_PER_S: u64 = 5_000;

/// Operations per request of the standard bulk scenario, and its connections at most: each
/// request already carries a thousand operations.
const STANDARD_BATCH: usize = 1_000;
const STANDARD_BATCH_CONNECTIONS: usize = 8;

/// How long an open loop's request may take before the next arrival on its connection has to
/// wait for it: an open loop runs on at least its rate times this many connections, so its
/// arrivals do not queue behind a slow answer on the client's side of the wire.
const OPEN_LOOP_REQUEST_BUDGET: Duration = Duration::from_millis(100);

/// The connections of a load sending `requests_per_s` (None: a closed loop) on `connections`
/// asked for.
fn load_connections(requests_per_s: Option<u64>, connections: usize) -> usize {
    let needed = requests_per_s.map_or(0, |rate| {
        (rate as f64 * OPEN_LOOP_REQUEST_BUDGET.as_secs_f64()).ceil() as usize
    });
    connections.max(needed).max(1)
}

impl BenchFlags {
    /// The scenarios to run: the one the flags describe, or with `--standard` the standard
    /// ones (hot wallet; 10,000 wallets with transfers; open loop at a fixed rate; hot wallet
    /// in batches).
    pub fn scenarios(&self, database: &crate::config::DatabaseConfig) -> Vec<BenchOptions> {
        let batched = |scenario: String| match self.batch {
            Some(batch) => format!("{scenario}, batches of {batch}"),
            None => scenario,
        };
        let base = BenchOptions {
            scenario: batched(if self.hot {
                "hot wallet".to_owned()
            } else {
                format!("{} wallets", self.wallets)
            }),
            url: self.url.trim_end_matches('/').to_owned(),
            wallets: if self.hot { 1 } else { self.wallets.max(1) },
            duration_s: self.duration_s,
            connections: load_connections(
                self.rate
                    .filter(|rate| *rate > 0)
                    .map(|rate| rate.div_ceil(self.batch.unwrap_or(1))),
                self.connections,
            ),
            mix: self.mix,
            rate: self.rate.filter(|rate| *rate > 0),
            batch: self.batch.map(|batch| batch as usize),
            settle_timeout_s: self.settle_timeout_s,
            token: self.token.clone(),
            baseline: self.baseline.map(|Baseline::RowLock| database.clone()),
        };
        if !self.standard {
            return vec![base];
        }
        let rate = self
            .rate
            .filter(|rate| *rate > 0)
            .unwrap_or(STANDARD_RATE_PER_S);
        vec![
            BenchOptions {
                scenario: "hot wallet".to_owned(),
                wallets: 1,
                rate: None,
                ..base.clone()
            },
            BenchOptions {
                scenario: "10000 wallets".to_owned(),
                wallets: 10_000,
                rate: None,
                ..base.clone()
            },
            BenchOptions {
                scenario: format!("open loop {rate}/s"),
                wallets: 1_000,
                rate: Some(rate),
                connections: load_connections(Some(rate), self.connections),
                ..base.clone()
            },
            BenchOptions {
                scenario: format!("hot wallet, batches of {STANDARD_BATCH}"),
                wallets: 1,
                rate: None,
                batch: Some(STANDARD_BATCH),
                connections: base.connections.min(STANDARD_BATCH_CONNECTIONS),
                ..base
            },
        ]
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once; only its hash is stored
    Create {
        /// The tenant whose wallets the token may see and operate
        #[arg(long)]
        tenant: String,
        /// Comma-separated scopes: read, write
        #[arg(long, value_delimiter = ',', default_value = "read,write")]
        scopes: Vec<String>,
        /// A label to recognise the token by in `wallet token list`
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List tokens (never their secrets)
    List,
    /// Revoke a token by its id; every API process stops accepting it within
    /// auth.refresh_interval_ms
    Revoke {
        /// The token's id, as printed by `create` and `list`
        id: uuid::Uuid,
    },
}

#[derive(Debug, Args)]
pub struct ReportFlags {
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RepositionFlags {
    /// The partition of the operations topic (kafka.operations_topic)
    #[arg(long, value_name = "N")]
    pub partition: i32,
}

#[derive(Debug, Args)]
pub struct MigrateFlags {
    /// Partitions of a newly created operations topic (kafka.partitions)
    #[arg(long, value_name = "N")]
    pub partitions: Option<i32>,
}

impl Cli {
    /// The flags that were given, shaped like the configuration tree so they can be merged
    /// over the file and the environment.
    pub fn config_overrides(&self) -> Value {
        let global = &self.global;
        let mut flags = vec![
            (
                "database",
                "url",
                global.database_url.as_ref().map(|v| json!(v)),
            ),
            ("redis", "url", global.redis_url.as_ref().map(|v| json!(v))),
            (
                "kafka",
                "brokers",
                global.brokers.as_ref().map(|v| json!(v)),
            ),
            ("log", "level", global.log_level.as_ref().map(|v| json!(v))),
            (
                "log",
                "format",
                global.log_format.as_ref().map(|v| json!(v)),
            ),
        ];
        flags.extend(self.command_flags());
        let mut tree = Map::new();
        for (section, key, value) in flags {
            set(&mut tree, section, key, value);
        }
        Value::Object(tree)
    }

    /// The configuration flags of the subcommand, as (section, key, value if given).
    fn command_flags(&self) -> Vec<(&'static str, &'static str, Option<Value>)> {
        let (serve, work) = match &self.command {
            Command::Serve(serve) => (Some(serve), None),
            Command::Work(work) => (None, Some(work)),
            Command::Run { serve, work } => (Some(serve), Some(work)),
            Command::Bench(_)
            | Command::Token(_)
            | Command::Verify(_)
            | Command::Lag(_)
            | Command::Reposition(_) => (None, None),
            Command::Migrate(migrate) => {
                let partitions = migrate.partitions.map(|v| json!(v));
                return vec![("kafka", "partitions", partitions)];
            }
        };
        let mut flags = Vec::new();
        if let Some(serve) = serve {
            let listen = serve.listen.map(|v| json!(v.to_string()));
            flags.push(("http", "listen", listen));
        }
        if let Some(work) = work {
            let records = work.batch_records_max.map(|v| json!(v));
            flags.push(("worker", "batch_records_max", records));
            let linger = work.batch_linger_ms.map(|v| json!(v));
            flags.push(("worker", "batch_linger_ms", linger));
        }
        flags
    }
}

fn set(tree: &mut Map<String, Value>, section: &str, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        let section = tree
            .entry(section)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(section) = section {
            section.insert(key.to_owned(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_loop_has_a_connection_for_each_tenth_of_a_second_of_its_rate() {
        assert_eq!(load_connections(None, 64), 64);
        assert_eq!(load_connections(Some(5_000), 64), 500);
        assert_eq!(load_connections(Some(100), 64), 64);
        assert_eq!(load_connections(Some(5), 0), 1);
    }
}
