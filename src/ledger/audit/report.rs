//! How `wallet verify` prints its findings for a person.

use std::fmt;

use super::Audit;

impl fmt::Display for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {} wallets, {} operations, {} entries and {} stored positions",
            self.wallets,
            self.operations,
            self.entries,
            self.positions.len()
        )?;
        for violation in &self.violations {
            writeln!(
                f,
                "VIOLATION {}: {}: expected {}, found {}",
                violation.subject, violation.check, violation.expected, violation.found
            )?;
        }
        let unlisted = self.violation_count - self.violations.len() as u64;
        if unlisted > 0 {
            writeln!(f, "... and {unlisted} more violations")?;
        }
        match self.outbox_oldest {
            Some(oldest) => writeln!(
                f,
                "outbox: {} events waiting, the oldest written at {oldest}",
                self.outbox_rows
            )?,
            None => writeln!(f, "outbox: empty")?,
        }
        writeln!(f, "dead letters: {}", self.dead_letters)?;
        match self.violation_count {
            0 => write!(f, "clean"),
            count => write!(f, "{count} violation(s)"),
        }
    }
}
