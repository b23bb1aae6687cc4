//! The value checks a loaded configuration must pass, each with the message that names its
//! key.

use std::net::SocketAddr;

use super::Config;

/// Every value check, in the order they are reported: the first that fails names its key.
type Check = (fn(&Config) -> bool, &'static str);

pub(super) const CHECKS: &[Check] = &[
    (
        |config| config.http.body_bytes_max >= 256,
        "http.body_bytes_max must be at least 256",
    ),
    (|config| config.http.workers >= 1, "http.workers must be at least 1"),
    (
        |config| (1..=60_000).contains(&config.http.readiness_timeout_ms),
        "http.readiness_timeout_ms must be between 1 and 60000",
    ),
    (
        |config| (100..=600_000).contains(&config.http.request_timeout_ms),
        "http.request_timeout_ms must be between 100 and 600000",
    ),
    (
        |config| config.http.connections_max >= 1,
        "http.connections_max must be at least 1",
    ),
    (
        |config| config.http.prefer_wait_max_s <= 600,
        "http.prefer_wait_max_s must be between 0 and 600",
    ),
    (
        |config| (1..=100_000).contains(&config.http.batch_operations_max),
        "http.batch_operations_max must be between 1 and 100000",
    ),
    (
        |config| config.http.batch_body_bytes_max >= config.http.body_bytes_max,
        "http.batch_body_bytes_max must be at least http.body_bytes_max",
    ),
    (
        |config| config.worker.metrics_listen.is_empty()
            || config.worker.metrics_listen.parse::<SocketAddr>().is_ok(),
        "worker.metrics_listen must be empty or an address like 0.0.0.0:9187",
    ),
    (
        // Zero would spin the lease loop; an hour keeps the derived lapse (8 intervals) sane.
        |config| (10..=3_600_000).contains(&config.worker.rebalance_interval_ms),
        "worker.rebalance_interval_ms must be between 10 and 3600000",
    ),
    (
        |config| config.worker.retry_backoff_max_ms >= 10,
        "worker.retry_backoff_max_ms must be at least 10",
    ),
    (
        |config| config.worker.relay_idle_ms >= 1,
        "worker.relay_idle_ms must be at least 1",
    ),
    (
        // Redis refuses `SET … EX 0`: every write of a marker or a balance would fail.
        |config| config.redis.marker_ttl_s >= 1,
        "redis.marker_ttl_s must be at least 1",
    ),
    (
        |config| config.redis.balance_ttl_s >= 1,
        "redis.balance_ttl_s must be at least 1",
    ),
    (
        // A zero deadline fails every exchange before it starts.
        |config| config.redis.timeout_ms >= 1,
        "redis.timeout_ms must be at least 1",
    ),
    (
        |config| config.kafka.request_timeout_ms >= 1,
        "kafka.request_timeout_ms must be at least 1",
    ),
    (
        |config| config.database.connect_timeout_ms >= 1,
        "database.connect_timeout_ms must be at least 1",
    ),
    (
        |config| config.worker.lease_lapse_ms == 0
            || (config.worker.lease_lapse_ms >= 1_000
                && config.worker.lease_lapse_ms >= 2 * config.worker.rebalance_interval_ms),
        "worker.lease_lapse_ms must be 0 (derived) or at least 1000 and twice worker.rebalance_interval_ms",
    ),
    (
        // A request that crashed mid-produce frees its id when its marker expires;
        // by then its produce must have ended, landed or not.
        |config| config.redis.accepting_ttl_s.saturating_mul(1_000) > config.kafka.request_timeout_ms,
        "redis.accepting_ttl_s must be longer than kafka.request_timeout_ms",
    ),
    (
        |config| (10..=60_000).contains(&config.auth.refresh_interval_ms),
        "auth.refresh_interval_ms must be between 10 and 60000",
    ),
    (
        |config| config.auth.rate_limit_per_s >= 1 && config.auth.rate_limit_burst >= 1,
        "auth.rate_limit_per_s and auth.rate_limit_burst must be at least 1",
    ),
    (
        |config| config.auth.public.iter().all(|endpoint| {
            ["healthz", "readyz", "metrics", "docs"].contains(&endpoint.as_str())
        }),
        "auth.public may list only healthz, readyz, metrics and docs",
    ),
    (
        |config| (1..=3_600).contains(&config.worker.shutdown_timeout_s),
        "worker.shutdown_timeout_s must be between 1 and 3600",
    ),
    (
        |config| config.http.history_limit_max >= 1,
        "http.history_limit_max must be at least 1",
    ),
    (
        |config| (1..=1_000_000).contains(&config.http.history_scan_max),
        "http.history_scan_max must be between 1 and 1000000",
    ),
    (
        |config| config.http.metadata_keys_max <= 256,
        "http.metadata_keys_max must be at most 256",
    ),
    (
        |config| (1..=1_024).contains(&config.http.metadata_key_chars_max),
        "http.metadata_key_chars_max must be between 1 and 1024",
    ),
    (
        |config| config.http.metadata_value_chars_max <= 65_536,
        "http.metadata_value_chars_max must be at most 65536",
    ),
    (
        // PostgreSQL refuses a longer statement_timeout, and with it every connection.
        |config| config.database.statement_timeout_ms <= 2_147_483_647,
        "database.statement_timeout_ms must be between 0 and 2147483647",
    ),
    (
        |config| config.database.pool_size >= 2,
        "database.pool_size must be at least 2",
    ),
    (
        |config| !config.kafka.broker_list().is_empty(),
        "kafka.brokers must name at least one broker",
    ),
    (
        |config| (1..=1024).contains(&config.kafka.partitions),
        "kafka.partitions must be between 1 and 1024",
    ),
    (
        |config| config.kafka.replication_factor >= 1,
        "kafka.replication_factor must be at least 1",
    ),
    (
        |config| (512..=1_000_000).contains(&config.kafka.produce_batch_bytes_max),
        "kafka.produce_batch_bytes_max must be between 512 and 1000000",
    ),
    (
        |config| (1..=100_000).contains(&config.worker.batch_records_max),
        "worker.batch_records_max must be between 1 and 100000",
    ),
    (
        |config| config.worker.fetch_bytes_max >= 1024,
        "worker.fetch_bytes_max must be at least 1024",
    ),
    (
        |config| (0..=1_000).contains(&config.worker.fetch_wait_ms),
        "worker.fetch_wait_ms must be between 0 and 1000",
    ),
    (
        |config| (1..=100_000).contains(&config.worker.relay_batch_max),
        "worker.relay_batch_max must be between 1 and 100000",
    ),
    (
        // Ten years, so an expiry is always a representable time.
        |config| (1..=315_360_000).contains(&config.http.hold_expiry_max_s),
        "http.hold_expiry_max_s must be between 1 and 315360000",
    ),
    (
        |config| (1..=config.http.hold_expiry_max_s).contains(&config.http.hold_expiry_default_s),
        "http.hold_expiry_default_s must be between 1 and http.hold_expiry_max_s",
    ),
    (
        |config| (10..=60_000).contains(&config.worker.hold_expiry_scan_ms),
        "worker.hold_expiry_scan_ms must be between 10 and 60000",
    ),
    (
        // The API gives up on a produce after kafka.request_timeout_ms; an expiry that waits
        // longer lets every CAPTURE or VOID accepted in time reach the partition first.
        |config| {
            (config.kafka.request_timeout_ms + 1..=3_600_000)
                .contains(&config.worker.hold_expiry_grace_ms)
        },
        "worker.hold_expiry_grace_ms must be more than kafka.request_timeout_ms and at most 3600000",
    ),
    (
        |config| (1..=100_000).contains(&config.worker.hold_expiry_batch_max),
        "worker.hold_expiry_batch_max must be between 1 and 100000",
    ),
    (
        |config| (1..=10_000_000).contains(&config.worker.balance_drops_max),
        "worker.balance_drops_max must be between 1 and 10000000",
    ),
];
