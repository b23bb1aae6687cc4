//! `wallet bench`: a load generator that measures throughput and latency and then proves the
//! ledger is right — the way an operator validates a deployment.

mod load;
mod mix;
mod verify;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

pub use mix::Mix;

/// What every bench wallet is funded with before the load starts.
const FUNDING: &str = "1000000.00";

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub url: String,
    pub wallets: usize,
    pub duration_s: u64,
    pub connections: usize,
    pub mix: Mix,
    pub rate: Option<u64>,
    pub settle_timeout_s: u64,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub wallets: usize,
    pub connections: usize,
    pub rate: Option<u64>,
    pub duration_s: f64,
    pub accepted: usize,
    pub accepted_per_s: f64,
    pub processed: u64,
    pub failed: u64,
    pub processed_per_s: f64,
    pub accept_latency_ms: Percentiles,
    pub accept_to_processed_ms: Percentiles,
    pub errors_by_status: BTreeMap<u16, u64>,
    pub violations: BTreeMap<&'static str, u64>,
}

impl Report {
    pub fn violation_count(&self) -> u64 {
        self.violations.values().sum()
    }

    pub fn print(&self) {
        let mode = match self.rate {
            Some(rate) => format!("open loop at {rate}/s"),
            None => "closed loop".to_owned(),
        };
        println!(
            "wallets {}, {} connections, {mode}, {:.1} s",
            self.wallets, self.connections, self.duration_s
        );
        println!(
            "  accepted            {:>10}  ({:.0}/s)",
            self.accepted, self.accepted_per_s
        );
        println!(
            "  decided             {:>10}  ({:.0}/s, {} failed by the rules)",
            self.processed + self.failed,
            self.processed_per_s,
            self.failed
        );
        let accept = &self.accept_latency_ms;
        println!(
            "  accept latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            accept.p50, accept.p90, accept.p99, accept.p999, accept.max
        );
        let settle = &self.accept_to_processed_ms;
        println!(
            "  accept→processed ms p50 {:.1}  p99 {:.1}  max {:.1}",
            settle.p50, settle.p99, settle.max
        );
        println!("  errors by status    {:?}", self.errors_by_status);
        println!(
            "  violations          {} {:?}",
            self.violation_count(),
            self.violations
        );
    }
}

pub async fn run(options: BenchOptions) -> anyhow::Result<Report> {
    let http = load::client(options.connections)?;
    let wallets = Arc::new(load::setup(&http, &options, options.wallets).await?);
    let sent_load = load::run(&http, &options, wallets.clone()).await?;
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
    Ok(Report {
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
    })
}
