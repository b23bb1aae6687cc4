//! Apache Kafka: one broker shared by the tests (a topic per test), or a private one a test
//! may stop and restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicU32;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::*;

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
pub(super) static TOPIC_SEQUENCE: AtomicU32 = AtomicU32::new(0);

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

    /// Sets one configuration `key=value` of `topic` (Kafka's ConfigCommand). The broker
    /// applies it a moment after this returns.
    pub fn set_topic_config(&self, topic: &str, setting: &str) {
        let output = kafka_script()
            .args(["topic-config", &self.port.to_string(), topic, setting])
            .output()
            .expect("kafka.sh runs");
        assert!(
            output.status.success(),
            "cannot set {setting} on {topic}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
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
