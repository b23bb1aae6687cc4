//! A throwaway PostgreSQL: initdb in a temp dir, on a free port.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::*;

fn postgres_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let output = Command::new("id").args(["-u", "postgres"]).output().ok()?;
    let uid = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .ok()?;
    let output = Command::new("id").args(["-g", "postgres"]).output().ok()?;
    let gid = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .ok()?;
    Some((uid, gid))
}

fn pg_bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN_DIR") {
        return Path::new(&dir).join(name);
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin").join(name))
        .filter(|path| path.exists())
        .max_by_key(|path| {
            path.components()
                .nth(4)
                .and_then(|c| c.as_os_str().to_str()?.parse::<u32>().ok())
                .unwrap_or(0)
        });
    newest.unwrap_or_else(|| PathBuf::from(name))
}

/// PostgreSQL listens before it accepts connections ("the database system is starting up");
/// pg_isready tells the two apart.
fn wait_until_accepting(port: u16, log: &Path) {
    let start = Instant::now();
    loop {
        let ready = Command::new(pg_bin("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|status| status.success());
        if ready {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "postgres did not accept connections within 30 s:\n{}",
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Postgres {
    pub port: u16,
    pub process: Process,
    _dir: TempDir,
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let user = postgres_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown temp dir");
        }
        let mut initdb = Command::new(pg_bin("initdb"));
        initdb
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = user {
            initdb.uid(uid).gid(gid);
        }
        let output = initdb.output().expect("initdb runs");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = free_port();
        let socket_dir = dir.path().to_path_buf();
        let log = dir.path().join("postgres.log");
        let process = Process::spawn("postgres", log.clone(), move || {
            let mut command = Command::new(pg_bin("postgres"));
            command
                .arg("-D")
                .arg(&data)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(&socket_dir)
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ]);
            if let Some((uid, gid)) = user {
                command.uid(uid).gid(gid);
            }
            command
        });
        wait_for_port(port, "postgres", &log);
        wait_until_accepting(port, &log);
        Postgres {
            port,
            process,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/wallet", self.port)
    }

    /// A fast shutdown (SIGINT), as an operator's restart would do.
    pub fn stop(&mut self) {
        self.process
            .stop_with(libc::SIGINT, Duration::from_secs(20));
    }

    /// SIGSTOP to the postmaster and every backend: the whole server freezes (a VM pause, a
    /// stalled disk) with its connections and transactions open.
    pub fn pause(&self) {
        self.signal_all(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal_all(libc::SIGCONT);
    }

    fn signal_all(&self, sig: i32) {
        let Some(postmaster) = self.process.pid() else {
            return;
        };
        for pid in std::iter::once(postmaster).chain(children(postmaster)) {
            // SAFETY: kill(2) on the postmaster we spawned and on its children.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    pub fn start_again(&mut self) {
        self.process.start();
        wait_for_port(self.port, "postgres", &self.process.log);
        wait_until_accepting(self.port, &self.process.log);
    }
}

/// The processes whose parent is `parent`, read from /proc.
fn children(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // The command name in parentheses may hold spaces; the parent follows it.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}
