//! `wallet bench`: a load generator that measures throughput and latency and then proves the
//! ledger is right — the way an operator validates a deployment.

mod baseline;
mod load;
mod mix;
mod processes;
mod progress;
mod report;
mod verify;
mod wire;

use std::sync::Arc;
use std::time::Duration;

pub use mix::Mix;
pub use report::{print_table, Percentiles, Report};

/// What every bench wallet is funded with before the load starts.
const FUNDING: &str = "1000000.00";

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub scenario: String,
    pub url: String,
    pub wallets: usize,
    pub duration_s: u64,
    pub connections: usize,
    pub mix: Mix,
    pub rate: Option<u64>,
    /// Operations per request, sent to the bulk route; none sends each on its own.
    pub batch: Option<usize>,
    pub settle_timeout_s: u64,
    pub token: Option<String>,
    /// Where to run the row-lock baseline after the scenario (closed-loop scenarios only).
    pub baseline: Option<crate::config::DatabaseConfig>,
}

pub async fn run(options: BenchOptions) -> anyhow::Result<Report> {
    let http = load::client(options.connections, options.token.as_deref())?;
    let wallets = Arc::new(load::setup(&http, &options, options.wallets).await?);
    let counters = Arc::new(progress::Counters::default());
    let progress =
        progress::Progress::start(counters.clone(), Duration::from_secs(options.duration_s));
    let before = processes::snapshot();
    let sent_load = load::run(&http, &options, wallets.clone(), counters).await?;
    let after = processes::snapshot();
    drop(progress);
    let verification = verify::verify(&http, &options, &wallets, &sent_load.sent).await?;
    let decided = verification.processed + verification.failed;
    let decide_window = match (verification.first_accepted, verification.last_processed) {
        (Some(first), Some(last)) => (last - first)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .as_secs_f64(),
        _ => 0.0,
    };
    let elapsed = sent_load.elapsed.as_secs_f64();
    let baseline_per_s = match (&options.baseline, options.rate) {
        (Some(database), None) => Some(baseline::run(database, &options).await?),
        _ => None,
    };
    let local = ["://127.0.0.1", "://localhost", "://[::1]"]
        .iter()
        .any(|host| options.url.contains(host));
    Ok(Report {
        scenario: options.scenario.clone(),
        wallets: options.wallets,
        connections: options.connections,
        rate: options.rate,
        duration_s: elapsed,
        accepted: sent_load.sent.len(),
        accepted_per_s: sent_load.sent.len() as f64 / elapsed.max(f64::EPSILON),
        processed: verification.processed,
        failed: verification.failed,
        processed_per_s: decided as f64 / decide_window.max(f64::EPSILON),
        accept_latency_ms: Percentiles::of(&sent_load.accept_latency_us),
        accept_to_processed_ms: Percentiles::of(&verification.processed_latency_us),
        errors_by_status: sent_load.errors,
        violations: verification.violations,
        baseline_per_s,
        cpu_us_per_op: if local {
            processes::cpu_us_per_op(&before, &after, sent_load.sent.len() as u64)
        } else {
            Default::default()
        },
        peak_rss_mib: if local {
            after.peak_rss_mib()
        } else {
            Default::default()
        },
    })
}
