//! The one configuration tree: defaults < `config.toml` < `WALLET_*` environment < flags.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use checks::CHECKS;

mod checks;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub kafka: KafkaConfig,
    pub worker: WorkerConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub body_bytes_max: usize,
    pub workers: usize,
    pub history_limit_max: u32,
    pub history_scan_max: u32,
    pub known_wallets_max: usize,
    pub readiness_timeout_ms: u64,
    pub shutdown_timeout_s: u64,
    pub request_timeout_ms: u64,
    pub connections_max: usize,
    pub prefer_wait_max_s: u64,
    pub batch_operations_max: usize,
    pub batch_body_bytes_max: usize,
    pub metadata_keys_max: usize,
    pub metadata_key_chars_max: usize,
    pub metadata_value_chars_max: usize,
    pub hold_expiry_default_s: u64,
    pub hold_expiry_max_s: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: String,
    pub pool_size: usize,
    pub connect_timeout_ms: u64,
    pub statement_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    pub url: String,
    pub timeout_ms: u64,
    pub balance_ttl_s: u64,
    pub marker_ttl_s: u64,
    pub accepting_ttl_s: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    pub operations_topic: String,
    pub events_topic: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub request_timeout_ms: u64,
    pub produce_linger_ms: u64,
    pub produce_batch_bytes_max: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    pub batch_records_max: usize,
    pub batch_linger_ms: u64,
    pub fetch_bytes_max: i32,
    pub fetch_wait_ms: i32,
    pub rebalance_interval_ms: u64,
    /// 0 derives it from the rebalance interval (see `lease_lapse`).
    pub lease_lapse_ms: u64,
    pub relay_batch_max: usize,
    pub relay_idle_ms: u64,
    pub retry_backoff_max_ms: u64,
    pub shutdown_timeout_s: u64,
    pub hold_expiry_scan_ms: u64,
    pub hold_expiry_grace_ms: u64,
    pub hold_expiry_batch_max: usize,
    /// Most wallets whose cached balances a partition's consumer keeps a list of to drop.
    pub balance_drops_max: usize,
    /// Where `wallet work` serves `/metrics`, `/healthz` and `/readyz`; empty serves nothing.
    pub metrics_listen: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub enabled: bool,
    pub refresh_interval_ms: u64,
    pub rate_limit_per_s: u32,
    pub rate_limit_burst: u32,
    /// Service endpoints answered without a token: `healthz`, `readyz`, `metrics`, `docs`.
    pub public: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_bytes_max: 16 * 1024,
            workers: 2,
            history_limit_max: 1000,
            // A filtered page then costs one connection some milliseconds, so rare matches
            // on a long journal cannot hold the pool, while a filter matching one entry in
            // 200 still fills a default page of 50 in one request.
            history_scan_max: 10_000,
            known_wallets_max: 1_000_000,
            readiness_timeout_ms: 1_000,
            shutdown_timeout_s: 10,
            request_timeout_ms: 10_000,
            connections_max: 5_000,
            prefer_wait_max_s: 30,
            batch_operations_max: 10_000,
            batch_body_bytes_max: 4 * 1024 * 1024,
            metadata_keys_max: 16,
            metadata_key_chars_max: 64,
            metadata_value_chars_max: 512,
            hold_expiry_default_s: 7 * 86_400,
            hold_expiry_max_s: 30 * 86_400,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "postgres://postgres@127.0.0.1:5432/wallet".to_owned(),
            pool_size: 16,
            connect_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".to_owned(),
            timeout_ms: 1_000,
            balance_ttl_s: 3_600,
            marker_ttl_s: 86_400,
            accepting_ttl_s: 30,
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".to_owned(),
            operations_topic: "wallet-operations".to_owned(),
            events_topic: "wallet-events".to_owned(),
            partitions: 8,
            replication_factor: 1,
            request_timeout_ms: 5_000,
            produce_linger_ms: 5,
            produce_batch_bytes_max: 7_000,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            batch_records_max: 4_000,
            batch_linger_ms: 50,
            fetch_bytes_max: 1024 * 1024,
            fetch_wait_ms: 500,
            rebalance_interval_ms: 1_000,
            lease_lapse_ms: 0,
            relay_batch_max: 2_000,
            relay_idle_ms: 50,
            retry_backoff_max_ms: 5_000,
            shutdown_timeout_s: 10,
            hold_expiry_scan_ms: 1_000,
            hold_expiry_grace_ms: 10_000,
            hold_expiry_batch_max: 1_000,
            balance_drops_max: 100_000,
            metrics_listen: String::new(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            refresh_interval_ms: 1_000,
            rate_limit_per_s: 50_000,
            rate_limit_burst: 100_000,
            public: ["healthz", "readyz", "metrics", "docs"]
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

impl WorkerConfig {
    /// How long a worker may go unheard before PostgreSQL ends its lease session and the live
    /// workers take its partitions over. Derived when not set: eight rebalance intervals, and
    /// at least two seconds so a short scheduling hiccup never costs a lease.
    pub fn lease_lapse(&self) -> Duration {
        match self.lease_lapse_ms {
            0 => {
                (Duration::from_millis(self.rebalance_interval_ms) * 8).max(Duration::from_secs(2))
            }
            lapse => Duration::from_millis(lapse),
        }
    }

    pub fn hold_expiry_grace(&self) -> chrono::Duration {
        chrono::Duration::milliseconds(i64::try_from(self.hold_expiry_grace_ms).unwrap_or(i64::MAX))
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// A configuration that could not be loaded; the message names the key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {message}")]
    File { path: String, message: String },
    #[error("configuration: {0}")]
    Value(String),
}

impl Config {
    /// Loads the configuration. `file` is read when given (it must then exist) or when
    /// `config.toml` exists in the working directory; `overrides` are the command-line flags,
    /// already shaped like the configuration tree.
    pub fn load(
        file: Option<&Path>,
        overrides: Serialized<serde_json::Value>,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.exists() => {
                return Err(ConfigError::File {
                    path: path.display().to_string(),
                    message: "no such file".to_owned(),
                })
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => figment = figment.merge(Toml::file("config.toml")),
        }
        let config: Config = figment
            .merge(Env::prefixed("WALLET_").split("__"))
            .merge(overrides)
            .extract()
            .map_err(|error| ConfigError::Value(describe(error)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match CHECKS.iter().find(|(ok, _)| !ok(self)) {
            Some((_, message)) => Err(ConfigError::Value((*message).to_owned())),
            None => Ok(()),
        }
    }
}

impl DatabaseConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

impl KafkaConfig {
    pub fn broker_list(&self) -> Vec<String> {
        self.brokers
            .split(',')
            .map(str::trim)
            .filter(|broker| !broker.is_empty())
            .map(str::to_owned)
            .collect()
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|error| {
            let key = error.path.join(".");
            let source = error
                .metadata
                .as_ref()
                .map(|metadata| format!(" (from {})", metadata.name))
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", error.kind)
            } else {
                format!("key `{key}`: {}{source}", error.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
// figment's Jail returns its large error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn no_flags() -> Serialized<serde_json::Value> {
        Serialized::defaults(serde_json::json!({}))
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn lease_lapse_is_derived_unless_set() {
        let mut worker = WorkerConfig::default();
        assert_eq!(worker.lease_lapse(), Duration::from_secs(8));
        worker.rebalance_interval_ms = 100;
        assert_eq!(worker.lease_lapse(), Duration::from_secs(2));
        worker.lease_lapse_ms = 5_000;
        assert_eq!(worker.lease_lapse(), Duration::from_secs(5));
    }

    #[test]
    fn file_then_env_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "config.toml",
                "[kafka]\npartitions = 4\nbrokers = \"a:1\"\n[http]\nworkers = 3\n",
            )?;
            jail.set_env("WALLET_KAFKA__PARTITIONS", "6");
            let config = Config::load(None, no_flags()).unwrap();
            assert_eq!(config.kafka.partitions, 6);
            assert_eq!(config.kafka.broker_list(), vec!["a:1".to_owned()]);
            assert_eq!(config.http.workers, 3);
            let flags = Serialized::defaults(serde_json::json!({"kafka": {"partitions": 9}}));
            let config = Config::load(None, flags).unwrap();
            assert_eq!(config.kafka.partitions, 9);
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_their_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("WALLET_KAFKA__PARTITIONS", "many");
            let error = Config::load(None, no_flags()).unwrap_err().to_string();
            assert!(error.contains("kafka.partitions"), "{error}");
            jail.set_env("WALLET_KAFKA__PARTITIONS", "0");
            let error = Config::load(None, no_flags()).unwrap_err().to_string();
            assert!(
                error.contains("kafka.partitions must be between"),
                "{error}"
            );
            jail.clear_env();
            jail.create_file("custom.toml", "[http]\nlisten = \"nowhere\"\n")?;
            let error = Config::load(Some(Path::new("custom.toml")), no_flags())
                .unwrap_err()
                .to_string();
            assert!(error.contains("http.listen"), "{error}");
            let error = Config::load(Some(Path::new("missing.toml")), no_flags())
                .unwrap_err()
                .to_string();
            assert!(error.contains("missing.toml"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn example_file_documents_every_key() {
        const EXAMPLE: &str = include_str!("../config.toml.example");

        // (a) The example parses (no unknown keys) and holds exactly the defaults.
        let parsed: Config = Figment::from(Toml::string(EXAMPLE))
            .extract()
            .unwrap_or_else(|error| panic!("config.toml.example: {}", describe(error)));
        assert_eq!(parsed, Config::default());

        // (b) Every key of every section has its own `key =` line inside its `[section]`.
        let mut documented: HashSet<(String, String)> = HashSet::new();
        let mut section = String::new();
        for line in EXAMPLE.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_owned();
            } else if let Some((key, _)) = line.split_once('=') {
                if !line.starts_with('#') {
                    documented.insert((section.clone(), key.trim().to_owned()));
                }
            }
        }
        let defaults = serde_json::to_value(Config::default()).unwrap();
        let sections = defaults.as_object().expect("Config serialises to a table");
        for (name, keys) in sections {
            let keys = keys
                .as_object()
                .unwrap_or_else(|| panic!("section `{name}` is not a table"));
            assert!(
                EXAMPLE
                    .lines()
                    .any(|line| line.trim() == format!("[{name}]")),
                "config.toml.example lacks the section `[{name}]`"
            );
            for key in keys.keys() {
                assert!(
                    documented.contains(&(name.clone(), key.clone())),
                    "config.toml.example lacks a `{key} =` line in `[{name}]`"
                );
            }
        }
    }

    /// Proves each duration or lifetime that breaks the service at zero (a busy loop, a Redis
    /// error on every write, a deadline already past) is refused, naming its key.
    #[test]
    fn zero_durations_are_refused() {
        figment::Jail::expect_with(|jail| {
            for key in [
                "worker.rebalance_interval_ms",
                "worker.retry_backoff_max_ms",
                "worker.relay_idle_ms",
                "redis.marker_ttl_s",
                "redis.balance_ttl_s",
                "redis.timeout_ms",
                "kafka.request_timeout_ms",
                "database.connect_timeout_ms",
            ] {
                let (section, name) = key.split_once('.').expect("section.key");
                let variable = format!("WALLET_{section}__{name}").to_uppercase();
                jail.set_env(&variable, "0");
                let error = Config::load(None, no_flags())
                    .map(|_| ())
                    .expect_err(key)
                    .to_string();
                assert!(error.contains(&format!("{key} must be")), "{key}: {error}");
                jail.clear_env();
            }
            Ok(())
        });
    }

    /// An expiry grace no longer than the produce deadline would let a CAPTURE accepted in
    /// time reach its partition after the hold's EXPIRE.
    #[test]
    fn the_expiry_grace_outlasts_the_produce_deadline() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("WALLET_KAFKA__REQUEST_TIMEOUT_MS", "8000");
            jail.set_env("WALLET_WORKER__HOLD_EXPIRY_GRACE_MS", "8000");
            let error = Config::load(None, no_flags())
                .map(|_| ())
                .expect_err("a grace equal to the produce deadline")
                .to_string();
            assert!(
                error.contains("worker.hold_expiry_grace_ms must be"),
                "{error}"
            );
            jail.set_env("WALLET_WORKER__HOLD_EXPIRY_GRACE_MS", "8001");
            assert!(Config::load(None, no_flags()).is_ok());
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("config.toml", "[kafka]\npartitons = 4\n")?;
            let error = Config::load(None, no_flags()).unwrap_err().to_string();
            assert!(error.contains("partitons"), "{error}");
            Ok(())
        });
    }
}
