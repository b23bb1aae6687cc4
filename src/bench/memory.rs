//! Peak resident memory of the `wallet` processes on this machine, read from /proc.

use std::collections::BTreeMap;

/// The highest peak RSS (VmHWM, in MiB) per mode (`serve`, `work`, `run`) among the local
/// `wallet` processes; empty where /proc is not there.
pub fn peak_rss_mib() -> BTreeMap<String, f64> {
    let mut peaks = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return peaks;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|byte| *byte == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        let is_wallet = args
            .first()
            .is_some_and(|program| program.ends_with("/wallet") || program == "wallet");
        let Some(mode) = args
            .iter()
            .skip(1)
            .find(|arg| matches!(arg.as_str(), "serve" | "work" | "run"))
        else {
            continue;
        };
        if !is_wallet {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        let peak_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            });
        if let Some(kib) = peak_kib {
            let peak = peaks.entry(mode.clone()).or_insert(0.0_f64);
            *peak = peak.max(kib / 1024.0);
        }
    }
    peaks
}
