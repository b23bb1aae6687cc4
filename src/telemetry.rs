//! Logs and metrics: how the process reports what it does.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the configured level so a
/// developer can turn up one module without editing the configuration.
pub fn init(config: &LogConfig) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(filter) => EnvFilter::try_new(filter)?,
        Err(_) => EnvFilter::try_new(&config.level)
            .map_err(|error| anyhow::anyhow!("configuration: key `log.level`: {error}"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets, in seconds: from half a millisecond (a cached read) to ten seconds (a
/// request stuck behind a failing dependency).
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: [f64; 10] = [
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0,
];

/// Installs the process-wide metrics recorder that `/metrics` renders. Histograms keep
/// buckets rather than quantiles so that Prometheus can aggregate them across processes.
pub fn init_metrics() -> anyhow::Result<()> {
    if METRICS.get().is_some() {
        return Ok(());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("wallet_batch_operations".to_owned()),
            &BATCH_BUCKETS,
        )?
        .set_buckets(&LATENCY_BUCKETS)?
        .install_recorder()
        .map_err(|error| anyhow::anyhow!("cannot install the metrics recorder: {error}"))?;
    let upkeep = handle.clone();
    // Upkeep drains per-thread histogram buffers, which would otherwise grow between scrapes.
    std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        })?;
    let _ = METRICS.set(handle);
    Ok(())
}

/// Every metric recorded so far, in the Prometheus text format.
pub fn render_metrics() -> String {
    METRICS
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}
