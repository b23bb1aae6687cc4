//! Throwaway servers for integration tests: PostgreSQL (initdb in a temp dir), redis-server
//! and Apache Kafka, each on a free port, each stoppable and restartable, all killed when the
//! test ends, passes or fails. Also `wallet` processes run against them.
//!
//! Binaries: `PG_BIN_DIR` (else the newest /usr/lib/postgresql/*/bin, else PATH), `REDIS_SERVER`
//! (else PATH) and scripts/kafka.sh, which finds the broker's jars in ~/.cache/wallet. The
//! Makefile installs them.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tempfile::TempDir;

const START_DEADLINE: Duration = Duration::from_secs(30);
/// A JVM starting beside a busy test run takes longer than a native server.
const KAFKA_START_DEADLINE: Duration = Duration::from_secs(90);

/// Polls `condition` until it holds or `deadline` passes; returns whether it held.
pub async fn eventually<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if condition().await {
            return true;
        }
        if start.elapsed() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("the OS hands out a free port")
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < START_DEADLINE,
            "{what} did not listen on {port} within {START_DEADLINE:?}; log:\n{}",
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

/// A child process that dies with the test: killed on drop, and told by the kernel to die
/// if the test process itself is killed.
pub struct Process {
    name: String,
    command: Box<dyn Fn() -> Command + Send + Sync>,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    fn spawn(
        name: &str,
        log: PathBuf,
        command: impl Fn() -> Command + Send + Sync + 'static,
    ) -> Process {
        let mut process = Process {
            name: name.to_owned(),
            command: Box::new(command),
            child: None,
            log,
        };
        process.start();
        process
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file opens");
        let mut command = (self.command)();
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file clones"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it only asks for SIGKILL when our thread exits.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.name));
        self.child = Some(child);
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `sig` and waits for the process to exit; SIGKILL after `deadline`. Returns the
    /// exit code when it exited on its own.
    pub fn stop_with(&mut self, sig: i32, deadline: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        signal(&child, sig);
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if start.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the running process without waiting (SIGSTOP/SIGCONT: a pause).
    pub fn send_signal(&self, sig: i32) {
        if let Some(child) = &self.child {
            signal(child, sig);
        }
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|child| child.id() as i32)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ({}) ----\n{}",
                self.name,
                self.log.display(),
                tail(&self.log)
            );
        }
        self.kill();
    }
}

/// The uid/gid to run PostgreSQL as: it refuses to run as root.
mod commit_cut;
mod kafka;
mod postgres;
mod redis;

pub use commit_cut::CommitCut;
pub use kafka::Broker;
pub use postgres::Postgres;
pub use redis::Redis;

use kafka::TOPIC_SEQUENCE;

/// PostgreSQL, Redis and a broker, migrated, with the environment a `wallet` process needs.
pub struct Stack {
    pub postgres: Postgres,
    pub redis: Redis,
    pub broker: Broker,
    pub partitions: i32,
    pub operations_topic: String,
    pub events_topic: String,
    logs: TempDir,
}

impl Stack {
    /// A stack on the shared broker, with topics of its own.
    pub fn start(partitions: i32) -> Stack {
        let n = TOPIC_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        Stack::migrated(
            partitions,
            Broker::shared(),
            format!("wallet-operations-{n}"),
            format!("wallet-events-{n}"),
        )
    }

    /// A stack with a broker of its own, for tests that stop, kill or pause it.
    pub fn start_with_own_broker(partitions: i32) -> Stack {
        Stack::migrated(
            partitions,
            Broker::start(),
            "wallet-operations".to_owned(),
            "wallet-events".to_owned(),
        )
    }

    fn migrated(
        partitions: i32,
        broker: Broker,
        operations_topic: String,
        events_topic: String,
    ) -> Stack {
        let stack = Stack {
            postgres: Postgres::start(),
            redis: Redis::start(),
            broker,
            partitions,
            operations_topic,
            events_topic,
            logs: tempfile::tempdir().expect("temp dir"),
        };
        let output = stack
            .wallet_command(&["migrate"])
            .output()
            .expect("wallet migrate runs");
        assert!(
            output.status.success(),
            "wallet migrate failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        stack
    }

    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("WALLET_DATABASE__URL".into(), self.postgres.url()),
            ("WALLET_REDIS__URL".into(), self.redis.url()),
            ("WALLET_KAFKA__BROKERS".into(), self.broker.address()),
            (
                "WALLET_KAFKA__PARTITIONS".into(),
                self.partitions.to_string(),
            ),
            (
                "WALLET_KAFKA__OPERATIONS_TOPIC".into(),
                self.operations_topic.clone(),
            ),
            (
                "WALLET_KAFKA__EVENTS_TOPIC".into(),
                self.events_topic.clone(),
            ),
            ("WALLET_WORKER__BATCH_LINGER_MS".into(), "20".into()),
            ("WALLET_WORKER__REBALANCE_INTERVAL_MS".into(), "250".into()),
            ("WALLET_LOG__LEVEL".into(), "info,wallet=debug".into()),
            // Tokens are the subject of the auth tests, which turn this back on.
            ("WALLET_AUTH__ENABLED".into(), "false".into()),
        ]
    }

    /// A `wallet` command against this stack, from a directory with no `config.toml`.
    pub fn wallet_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wallet"));
        without_inherited_config(&mut command);
        command
            .args(args)
            .current_dir(self.logs.path())
            .envs(self.env());
        command
    }

    /// Starts a `wallet` process with `args` and extra environment.
    pub fn spawn_wallet(&self, name: &str, args: &[&str], extra: &[(&str, String)]) -> Process {
        let log = self.logs.path().join(format!("{name}.log"));
        let mut env = self.env();
        env.extend(
            extra
                .iter()
                .map(|(key, value)| ((*key).to_owned(), value.clone())),
        );
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        let directory = self.logs.path().to_path_buf();
        Process::spawn(name, log, move || {
            let mut command = Command::new(env!("CARGO_BIN_EXE_wallet"));
            without_inherited_config(&mut command);
            command
                .args(&args)
                .current_dir(&directory)
                .envs(env.clone());
            command
        })
    }

    /// Starts `wallet serve` on a free port and waits until it listens.
    pub fn serve(&self) -> Server {
        self.serve_with(&[])
    }

    /// Starts `wallet serve` on a free port with extra environment and waits until it listens.
    pub fn serve_with(&self, extra: &[(&str, String)]) -> Server {
        let port = free_port();
        let mut env = vec![("WALLET_HTTP__LISTEN", format!("127.0.0.1:{port}"))];
        env.extend(extra.iter().cloned());
        let process = self.spawn_wallet(&format!("serve-{port}"), &["serve"], &env);
        wait_for_port(port, "wallet serve", &process.log);
        Server {
            base: format!("http://127.0.0.1:{port}"),
            port,
            process,
        }
    }

    /// Starts `wallet work`.
    pub fn work(&self, name: &str) -> Process {
        self.spawn_wallet(name, &["work"], &[])
    }
}

/// Keeps a developer's local `WALLET_*` settings from a `wallet` child, which reads every one
/// as configuration; the stack sets what the child needs.
fn without_inherited_config(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WALLET_") {
            command.env_remove(key);
        }
    }
}

pub struct Server {
    pub base: String,
    pub port: u16,
    pub process: Process,
}

impl Server {
    /// Starts the same server again after it was stopped or killed.
    pub fn start_again(&mut self) {
        self.process.start();
        wait_for_port(self.port, "wallet serve", &self.process.log);
    }
}
