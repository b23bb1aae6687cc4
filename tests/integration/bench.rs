//! `wallet bench` against a running system: it drives load, waits, and verifies the ledger.

use std::process::Command;

use crate::client::System;

/// Proves a short bench run accepts operations, finds every one applied exactly once and
/// exits 0 with a JSON report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_verifies_a_short_run() {
    bench_verifies(&[]).await;
}

/// The same through the bulk route, 50 operations per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_verifies_a_short_batched_run() {
    bench_verifies(&["--batch", "50"]).await;
}

/// The same with holds in the mix: captures to other wallets and voids of holds placed
/// before, verified down to what each wallet still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_verifies_a_short_run_with_holds() {
    bench_verifies(&[
        "--mix",
        "deposit=20,withdraw=10,transfer=10,hold=30,capture=15,void=15",
    ])
    .await;
}

async fn bench_verifies(extra: &[&str]) {
    let system = System::start(2);
    let output = Command::new(env!("CARGO_BIN_EXE_wallet"))
        .current_dir(std::env::temp_dir())
        .args([
            "bench",
            "--url",
            &system.server.base,
            "--wallets",
            "5",
            "--duration",
            "2",
            "--connections",
            "4",
            "--json",
        ])
        .args(extra)
        .output()
        .expect("wallet bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert!(report["accepted"].as_u64().expect("accepted") > 0);
    assert_eq!(
        report["accepted"].as_u64(),
        Some(
            report["processed"].as_u64().expect("processed")
                + report["failed"].as_u64().expect("failed")
        )
    );
    assert_eq!(report["violations"], serde_json::json!({}));
    assert!(
        report["peakRssMib"]["serve"].as_f64().is_some(),
        "the local serve process is measured"
    );
}
