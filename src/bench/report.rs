//! The bench report: one scenario as a block or JSON, several as one table.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(histogram_us: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50: ms(histogram_us.value_at_quantile(0.50)),
            p90: ms(histogram_us.value_at_quantile(0.90)),
            p99: ms(histogram_us.value_at_quantile(0.99)),
            p999: ms(histogram_us.value_at_quantile(0.999)),
            max: ms(histogram_us.max()),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub scenario: String,
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
    /// Operations per second of the replaced row-lock design on the same scenario.
    pub baseline_per_s: Option<f64>,
    /// CPU time each local process role spent during the load phase per operation accepted
    /// in it, in microseconds, with their `total`.
    pub cpu_us_per_op: BTreeMap<String, f64>,
    /// Peak resident memory per local process role, in MiB (for PostgreSQL its largest process).
    pub peak_rss_mib: BTreeMap<String, f64>,
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
            "{}: {} wallet(s), {} connections, {mode}, {:.1} s",
            self.scenario, self.wallets, self.connections, self.duration_s
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
        if let Some(baseline) = self.baseline_per_s {
            println!(
                "  row-lock baseline   {baseline:.0}/s  (this design: {:.1}x)",
                self.processed_per_s / baseline.max(f64::EPSILON)
            );
        }
        println!("  CPU µs per op       {}", rounded(&self.cpu_us_per_op));
        println!("  peak RSS MiB        {}", rounded(&self.peak_rss_mib));
        println!(
            "  violations          {} {:?}",
            self.violation_count(),
            self.violations
        );
    }
}

/// Prints several scenarios as one table.
pub fn print_table(reports: &[Report]) {
    println!(
        "{:<22} {:>9} {:>10} {:>11} {:>9} {:>9} {:>9} {:>10} {:>10} {:>7} {:>10} {:>10} {:>6}",
        "scenario",
        "wallets",
        "accepted/s",
        "processed/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "a→p p50",
        "a→p p99",
        "errors",
        "violations",
        "baseline/s",
        "ratio"
    );
    for report in reports {
        println!(
            "{:<22} {:>9} {:>10.0} {:>11.0} {:>9.2} {:>9.2} {:>9.2} {:>10.1} {:>10.1} {:>7} {:>10} {:>10} {:>6}",
            report.scenario,
            report.wallets,
            report.accepted_per_s,
            report.processed_per_s,
            report.accept_latency_ms.p50,
            report.accept_latency_ms.p99,
            report.accept_latency_ms.p999,
            report.accept_to_processed_ms.p50,
            report.accept_to_processed_ms.p99,
            report.errors_by_status.values().sum::<u64>(),
            report.violation_count(),
            report
                .baseline_per_s
                .map_or("-".to_owned(), |b| format!("{b:.0}")),
            report.baseline_per_s.map_or("-".to_owned(), |b| format!(
                "{:.1}x",
                report.processed_per_s / b.max(f64::EPSILON)
            ))
        );
    }
    for report in reports {
        println!(
            "{}: CPU µs per op {}",
            report.scenario,
            rounded(&report.cpu_us_per_op)
        );
    }
    if let Some(last) = reports.last() {
        println!("peak RSS MiB: {}", rounded(&last.peak_rss_mib));
    }
}

/// `name value` pairs rounded to whole numbers, in a stable order.
fn rounded(values: &BTreeMap<String, f64>) -> String {
    values
        .iter()
        .map(|(name, value)| format!("{name} {value:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}
