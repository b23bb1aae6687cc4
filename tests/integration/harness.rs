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
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
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

    pub fn start_again(&mut self) {
        self.process.start();
        wait_for_port(self.port, "postgres", &self.process.log);
        wait_until_accepting(self.port, &self.process.log);
    }
}

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

    pub fn restart(&mut self) {
        self.process
            .stop_with(libc::SIGTERM, Duration::from_secs(10));
        self.process.start();
        wait_for_port(self.port, "redis", &self.process.log);
    }
}

fn kafka_script() -> Command {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh"))
}

/// Polls until the broker answers a Metadata request (it listens before it can serve one).
fn wait_until_kafka_ready(port: u16, process: &mut Process) {
    let start = Instant::now();
    loop {
        let ready = kafka_script()
            .args(["ready", &port.to_string()])
            .status()
            .is_ok_and(|status| status.success());
        if ready {
            return;
        }
        assert!(
            process.is_running() && start.elapsed() < KAFKA_START_DEADLINE,
            "kafka did not answer Metadata on {port} within {KAFKA_START_DEADLINE:?}; log:\n{}",
            tail(&process.log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The broker of the tests that never fault it: one per test run, started on first use by a
/// thread that lives as long as the test process (a child dies with the thread that spawned
/// it), each test on topics of its own.
static SHARED_BROKER: OnceLock<(u16, PathBuf)> = OnceLock::new();
static TOPIC_SEQUENCE: AtomicU32 = AtomicU32::new(0);

fn shared_broker() -> &'static (u16, PathBuf) {
    SHARED_BROKER.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let broker = Broker::start_in(shared_broker_dir());
            let log = broker.process.as_ref().map(|process| process.log.clone());
            sender
                .send((broker.port, log.unwrap_or_default()))
                .expect("the test waits for the port");
            loop {
                std::thread::park();
            }
        });
        receiver.recv().expect("the shared broker starts")
    })
}

/// The shared broker outlives every test, so its data goes under the target directory, named
/// by the test process, and the data of earlier runs that ended is removed first.
fn shared_broker_dir() -> TempDir {
    let parent = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let ended = |name: &str| {
        name.strip_prefix("kafka-shared-")
            .and_then(|rest| rest.split('-').next())
            .is_some_and(|pid| !Path::new("/proc").join(pid).exists())
    };
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        if ended(&entry.file_name().to_string_lossy()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    tempfile::Builder::new()
        .prefix(&format!("kafka-shared-{}-", std::process::id()))
        .tempdir_in(parent)
        .expect("temp dir for the shared broker")
}

/// Apache Kafka in KRaft mode (scripts/kafka.sh), on free ports. A handle on the shared
/// broker (`Broker::shared`) has no process: a test that stops, kills or pauses the broker
/// starts one of its own.
pub struct Broker {
    pub port: u16,
    process: Option<Process>,
    _dir: Option<TempDir>,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_in(tempfile::tempdir().expect("temp dir"))
    }

    fn start_in(dir: TempDir) -> Broker {
        let port = free_port();
        let controller_port = free_port();
        let log = dir.path().join("kafka.log");
        let data = dir.path().join("kafka");
        let mut process = Process::spawn("kafka", log, move || {
            let mut command = kafka_script();
            command
                .arg("run")
                .arg(&data)
                .args([port.to_string(), controller_port.to_string()]);
            command
        });
        wait_until_kafka_ready(port, &mut process);
        Broker {
            port,
            process: Some(process),
            _dir: Some(dir),
        }
    }

    pub fn shared() -> Broker {
        Broker {
            port: shared_broker().0,
            process: None,
            _dir: None,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn own(&mut self) -> &mut Process {
        self.process
            .as_mut()
            .expect("the shared broker is never faulted: start the stack with its own broker")
    }

    /// A controlled shutdown (SIGTERM), as an operator's restart would do.
    pub fn stop(&mut self) {
        self.own().stop_with(libc::SIGTERM, Duration::from_secs(30));
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        self.own().kill();
    }

    /// SIGSTOP: the broker freezes (a VM pause, a long GC) with its connections open.
    pub fn pause(&mut self) {
        self.own().send_signal(libc::SIGSTOP);
    }

    pub fn resume(&mut self) {
        self.own().send_signal(libc::SIGCONT);
    }

    pub fn start_again(&mut self) {
        let port = self.port;
        let process = self.own();
        process.start();
        wait_until_kafka_ready(port, process);
    }
}

impl Drop for Broker {
    /// A failing test on the shared broker shows its log too (a private one's process does).
    fn drop(&mut self) {
        if self.process.is_none() && std::thread::panicking() {
            let log = &shared_broker().1;
            eprintln!(
                "---- shared kafka log ({}) ----\n{}",
                log.display(),
                tail(log)
            );
        }
    }
}

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

/// Keeps the test's own `WALLET_*` variables (such as `WALLET_CHAOS_SECONDS`, or a developer's
/// local settings) from a `wallet` child, which reads every one as configuration; the stack
/// sets what the child needs.
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
