//! What the local processes of the system cost: CPU time and peak resident memory of `serve`,
//! `work`, the broker, PostgreSQL, Redis and the bench itself, read from /proc.

use std::collections::BTreeMap;
use std::path::Path;

/// Linux reports CPU time in clock ticks of USER_HZ, which is 100 on every architecture the
/// kernel's ABI fixes it for.
const TICKS_PER_S: f64 = 100.0;

/// The role of a local process in the system, by its command line.
fn role(args: &[String], pid: u32) -> Option<&'static str> {
    if pid == std::process::id() {
        return Some("bench");
    }
    let program = args.first()?;
    let name = Path::new(program).file_name()?.to_string_lossy();
    if name == "wallet" {
        return args.iter().skip(1).find_map(|arg| match arg.as_str() {
            "serve" => Some("serve"),
            "work" => Some("work"),
            "run" => Some("run"),
            _ => None,
        });
    }
    if args.iter().any(|arg| arg == "kafka.Kafka") {
        return Some("broker");
    }
    match name.as_ref() {
        "postgres" => Some("postgres"),
        "redis-server" => Some("redis"),
        _ if program.starts_with("postgres:") => Some("postgres"),
        _ if program.starts_with("redis-server") => Some("redis"),
        _ => None,
    }
}

/// CPU seconds (user + system) per process with its role, and peak RSS per role, at one
/// moment. Kept per process so that one ending between two snapshots (a PostgreSQL backend)
/// takes only its own time with it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    cpu_s: BTreeMap<u32, (&'static str, f64)>,
    peak_rss_mib: BTreeMap<&'static str, f64>,
}

fn cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_S)
}

fn peak_rss_mib(status: &str) -> Option<f64> {
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Reads every local process of the system; empty where /proc is not there.
pub fn snapshot() -> Snapshot {
    let mut snapshot = Snapshot::default();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return snapshot;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|byte| *byte == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        let Some(role) = role(&args, pid) else {
            continue;
        };
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        if let Some(seconds) = cpu_seconds(&stat) {
            snapshot.cpu_s.insert(pid, (role, seconds));
        }
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        if let Some(mib) = peak_rss_mib(&status) {
            let peak = snapshot.peak_rss_mib.entry(role).or_default();
            *peak = peak.max(mib);
        }
    }
    snapshot
}

/// CPU microseconds per operation of each role between two snapshots, and their sum.
pub fn cpu_us_per_op(
    before: &Snapshot,
    after: &Snapshot,
    operations: u64,
) -> BTreeMap<String, f64> {
    let mut per_op: BTreeMap<String, f64> = BTreeMap::new();
    for (pid, (role, seconds)) in &after.cpu_s {
        // A process that started in between spent all of its time in the window.
        let earlier = before.cpu_s.get(pid).map_or(0.0, |(_, seconds)| *seconds);
        let spent = (seconds - earlier).max(0.0);
        *per_op.entry((*role).to_owned()).or_default() += spent * 1e6 / operations.max(1) as f64;
    }
    let total = per_op.values().sum();
    per_op.insert("total".to_owned(), total);
    per_op
}

impl Snapshot {
    pub fn peak_rss_mib(&self) -> BTreeMap<String, f64> {
        self.peak_rss_mib
            .iter()
            .map(|(role, mib)| ((*role).to_owned(), *mib))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn processes_are_named_by_their_role() {
        assert_eq!(
            role(&args("/x/target/release/wallet serve --listen a"), 1),
            Some("serve")
        );
        assert_eq!(role(&args("wallet work"), 1), Some("work"));
        assert_eq!(
            role(&args("java -Xmx1g -cp /libs/* kafka.Kafka s.properties"), 1),
            Some("broker")
        );
        assert_eq!(
            role(
                &args("postgres: 15/main: postgres wallet 127.0.0.1(5) idle"),
                1
            ),
            Some("postgres")
        );
        assert_eq!(
            role(&args("/usr/lib/postgresql/15/bin/postgres -D data"), 1),
            Some("postgres")
        );
        assert_eq!(role(&args("redis-server 127.0.0.1:6379"), 1), Some("redis"));
        assert_eq!(role(&args("/usr/bin/bash"), 1), None);
        assert_eq!(role(&args("anything"), std::process::id()), Some("bench"));
    }

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces() {
        let stat = "42 (my prog) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 5 0 0";
        assert_eq!(cpu_seconds(stat), Some(3.0));
    }

    #[test]
    fn cost_per_operation_sums_the_roles() {
        let before = Snapshot {
            cpu_s: BTreeMap::from([(1, ("serve", 1.0)), (2, ("work", 2.0)), (3, ("serve", 9.0))]),
            ..Default::default()
        };
        // Process 3 ended; process 4 started in between.
        let after = Snapshot {
            cpu_s: BTreeMap::from([
                (1, ("serve", 2.0)),
                (2, ("work", 2.5)),
                (4, ("broker", 0.5)),
            ]),
            ..Default::default()
        };
        let cost = cpu_us_per_op(&before, &after, 10_000);
        assert_eq!(cost["serve"], 100.0);
        assert_eq!(cost["work"], 50.0);
        assert_eq!(cost["broker"], 50.0);
        assert_eq!(cost["total"], 200.0);
    }
}
