//! The live progress line of a bench run, shown only when stdout is a terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Counters the load tasks bump and the progress line reads.
#[derive(Default)]
pub struct Counters {
    pub accepted: AtomicU64,
    pub errors: AtomicU64,
}

/// Draws the line every half second until dropped.
pub struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn start(counters: Arc<Counters>, duration: Duration) -> Progress {
        if !std::io::stdout().is_terminal() {
            return Progress {
                task: None,
                bar: None,
            };
        }
        let bar = ProgressBar::new(duration.as_secs().max(1));
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} s  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let drawn = bar.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let accepted = counters.accepted.load(Ordering::Relaxed);
                let rate = (accepted - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), accepted);
                drawn.set_position(start.elapsed().as_secs());
                drawn.set_message(format!(
                    "accepted {accepted} ({rate:.0}/s), errors {}",
                    counters.errors.load(Ordering::Relaxed)
                ));
            }
        });
        Progress {
            task: Some(task),
            bar: Some(bar),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
