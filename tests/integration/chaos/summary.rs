//! The run's report: what was sent, what the nemesis did, and what the checker found.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::checker::{Counts, Violations};
use super::nemesis::Nemesis;
use super::workload::ClientLog;

pub struct Summary<'a> {
    pub duration: Duration,
    pub setup_seconds: f64,
    pub settle_seconds: f64,
    pub load_seconds: f64,
    pub faults_needed: u64,
    pub counts: &'a Counts,
    pub logs: &'a [ClientLog],
    pub nemesis: &'a Nemesis,
    pub violations: &'a Violations,
}

fn describe<K: fmt::Debug>(counts: &BTreeMap<K, impl fmt::Display>) -> String {
    counts
        .iter()
        .map(|(kind, count)| format!("{} {count}", format!("{kind:?}").trim_matches('"')))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sums the clients' tallies of one kind.
fn tally<K: Ord + Clone>(
    logs: &[ClientLog],
    of: impl Fn(&ClientLog) -> &BTreeMap<K, usize>,
) -> BTreeMap<K, usize> {
    let mut total = BTreeMap::new();
    for log in logs {
        for (kind, count) in of(log) {
            *total.entry(kind.clone()).or_default() += count;
        }
    }
    total
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (counts, nemesis) = (self.counts, self.nemesis);
        writeln!(
            f,
            "chaos summary ({}s of load, {:.0}s with setup and {:.1}s to settle):",
            self.duration.as_secs(),
            self.setup_seconds,
            self.settle_seconds
        )?;
        writeln!(
            f,
            "  operations: {} sent, {} acknowledged ({:.0}/s), {} processed, {} failed, {} unacknowledged of which {} applied",
            counts.sent,
            counts.acked,
            counts.acked as f64 / self.load_seconds,
            counts.processed,
            counts.failed,
            counts.sent - counts.acked,
            counts.unacked_applied
        )?;
        writeln!(f, "  holds placed, by state: {}", describe(&counts.holds))?;
        let reads: usize = self.logs.iter().map(|log| log.reads).sum();
        let probes: usize = self.logs.iter().map(|log| log.probes).sum();
        writeln!(
            f,
            "  balance reads: {reads}; retried answers: {}",
            describe(&tally(self.logs, |log| &log.retries))
        )?;
        writeln!(
            f,
            "  tenants: {} operation ids acknowledged to both; {probes} probes of the other tenant's wallets",
            counts.shared_ids
        )?;
        writeln!(
            f,
            "  keys reused with other content: {}; accepted after Redis lost the marker (excused): {}",
            describe(&tally(self.logs, |log| &log.reuses)),
            counts.excused
        )?;
        writeln!(
            f,
            "  faults: {} (at least {} required): {}",
            nemesis.total(),
            self.faults_needed,
            describe(&nemesis.counts)
        )?;
        writeln!(
            f,
            "  worker pauses ending with the other worker owning every partition: {} of {}",
            nemesis.takeovers, nemesis.pauses
        )?;
        writeln!(
            f,
            "  pauses inside a transaction: {}, of which still holding it after the lease lapse: {}",
            nemesis.paused_in_transaction, nemesis.stuck_transactions
        )?;
        let violations = self.violations;
        writeln!(
            f,
            "  violations: {}{}",
            violations.total(),
            if violations.counts.is_empty() {
                String::new()
            } else {
                format!(" ({})", describe(&violations.counts))
            }
        )?;
        for example in &violations.examples {
            writeln!(f, "    {example}")?;
        }
        Ok(())
    }
}
