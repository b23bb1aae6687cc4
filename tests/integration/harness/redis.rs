//! A throwaway redis-server on a free port.

use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::*;

pub struct Redis {
    pub port: u16,
    pub process: Process,
    _dir: TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = dir.path().join("redis.log");
        let work = dir.path().to_path_buf();
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let process = Process::spawn("redis", log.clone(), move || {
            let mut command = Command::new(&binary);
            command
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(&work);
            command
        });
        wait_for_port(port, "redis", &log);
        Redis {
            port,
            process,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGSTOP: Redis freezes (a VM pause, a fork on a huge dataset) with its connections
    /// open; commands sent meanwhile are answered once it resumes.
    pub fn pause(&self) {
        self.process.send_signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.process.send_signal(libc::SIGCONT);
    }

    pub fn restart(&mut self) {
        self.process
            .stop_with(libc::SIGTERM, Duration::from_secs(10));
        self.process.start();
        wait_for_port(self.port, "redis", &self.process.log);
    }
}
