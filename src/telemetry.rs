//! Logs and metrics: how the process reports what it does.

use std::io::{BufWriter, IsTerminal};
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogConfig, LogFormat};

/// Where log lines go on their way to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    /// Through a thread of their own, one write per burst: for the long-running processes,
    /// where a write per line from the request's thread cost `serve` about 5 µs per operation
    /// (one access line per request, /proc on one hot wallet). A thread waits for room in the
    /// queue rather than losing a line; what is queued when the process is killed is lost.
    Queued,
    /// Written at once by the thread that logs: for commands that run and exit, whose lines
    /// must keep their order with what they print.
    Immediate,
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the configured level so a
/// developer can turn up one module without editing the configuration. With
/// [`LogOutput::Queued`] the returned guard writes what is still queued when dropped, so the
/// caller keeps it until the process ends.
pub fn init(config: &LogConfig, output: LogOutput) -> anyhow::Result<Option<WorkerGuard>> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(filter) => EnvFilter::try_new(filter)?,
        Err(_) => EnvFilter::try_new(&config.level)
            .map_err(|error| anyhow::anyhow!("configuration: key `log.level`: {error}"))?,
    };
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = match output {
        LogOutput::Queued => {
            let (writer, guard) = NonBlockingBuilder::default()
                .lossy(false)
                .buffered_lines_limit(LOG_LINES_QUEUED_MAX)
                .thread_name("log-writer")
                .finish(BufWriter::with_capacity(
                    LOG_BUFFER_BYTES,
                    std::io::stderr(),
                ));
            (BoxMakeWriter::new(writer), Some(guard))
        }
        LogOutput::Immediate => (BoxMakeWriter::new(std::io::stderr), None),
    };
    let lines = match config.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(FrameworkErrors)
        .with(lines)
        .try_init()
        .map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))?;
    Ok(guard)
}

/// Lines waiting for the writer thread before a logging thread waits for room.
const LOG_LINES_QUEUED_MAX: usize = 64 * 1024;
/// What the writer thread gathers into one write.
const LOG_BUFFER_BYTES: usize = 64 * 1024;

/// actix-http logs every malformed request head and broken connection as an ERROR, so any
/// client could fill the error log. `FrameworkErrors` drops those events before any output
/// sees them, and writes each again at debug level and counts it.
fn is_framework_error(metadata: &Metadata<'_>) -> bool {
    *metadata.level() == Level::ERROR && metadata.target().starts_with("actix_http::h1")
}

struct FrameworkErrors;

impl<S: Subscriber> Layer<S> for FrameworkErrors {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        if !is_framework_error(event.metadata()) {
            return true;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        metrics::counter!("http_broken_requests_total").increment(1);
        tracing::debug!(
            target: "wallet::http",
            error = %crate::api::loggable(&message.0),
            "malformed request or broken connection"
        );
        false
    }
}

/// The `message` field of an event.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
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
