//! The real `wsgate` binary as a child process, its log captured.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{write_file, LISTENERS};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_wsgate");

/// A wsgate process with its log captured.
pub struct Process {
    pub child: Child,
    log: Arc<Mutex<String>>,
    /// Reads stderr into `log` until the process closes it.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    /// Runs `wsgate --config` on `config` through `sh -c` so a test can set limits first.
    pub fn start(dir: &Path, config: &str, shell_prefix: &str) -> Process {
        let path = write_file(dir, "wsgate.toml", format!("{LISTENERS}{config}"));
        let script = format!("{shell_prefix} exec \"$0\" --config \"$1\"");
        Process::spawn(Command::new("sh").args([
            "-c",
            &script,
            BIN,
            path.to_str().expect("utf-8 path"),
        ]))
    }

    /// Runs `wsgate --config FILE` with `FILE` as it is.
    pub fn run_config(file: &Path) -> Process {
        Process::spawn(Command::new(BIN).arg("--config").arg(file))
    }

    /// Runs `command` with its log (stderr) captured.
    pub fn spawn(command: &mut Command) -> Process {
        Process::spawn_with_stdout(command, Stdio::null())
    }

    /// Runs `command` with its log captured and `stdout` as its standard
    /// output (a pipe stays in `child.stdout`, for the test to read or not).
    pub fn spawn_with_stdout(command: &mut Command, stdout: Stdio) -> Process {
        let mut child = command
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(stdout)
            .spawn()
            .expect("spawn wsgate");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
        Process {
            child,
            log,
            reader: Some(reader),
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits until the log says `text`, and returns the log; a process
    /// that does not within `within` fails the test with its log.
    pub async fn logged(&self, text: &str, within: Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let log = self.log();
            if log.contains(text) {
                return log;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "wsgate did not log {text:?} within {within:?}; its log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The public listener's address, from the first "listening" log line.
    pub async fn addr(&self) -> SocketAddr {
        self.logged_addr(" listening addr=").await
    }

    /// The admin listener's address, from its log line.
    pub async fn admin(&self) -> SocketAddr {
        self.logged_addr("admin listening addr=").await
    }

    /// Every public listener's address, in the order they were logged.
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.log()
            .lines()
            .filter(|l| l.contains(" listening addr=") && !l.contains("admin listening"))
            .filter_map(|l| {
                l.split("listening addr=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// The address logged after `marker`; a process that does not log it
    /// within 10 s fails the test with its log, which says why.
    async fn logged_addr(&self, marker: &str) -> SocketAddr {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            let found = log.lines().find(|l| l.contains(marker)).and_then(|line| {
                line.split(marker)
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "wsgate logged no {marker:?} within 10 s; its log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An overlapping restart: starts wsgate on `new_config`, which binds
    /// this instance's port (SO_REUSEPORT); once it serves, SIGTERMs this one
    /// and waits for its drain to end with exit code 0. Returns the new one.
    pub async fn hand_over_to(&mut self, new_config: &Path) -> Process {
        let addr = self.addr().await;
        let successor = Process::run_config(new_config);
        assert_eq!(
            successor.addr().await,
            addr,
            "the successor binds the same port"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.signal("TERM");
        assert_eq!(
            self.exit_code(Duration::from_secs(10)).await,
            Some(0),
            "{}",
            self.log()
        );
        // Clients that were mid-request when the old one exited finish.
        tokio::time::sleep(Duration::from_millis(500)).await;
        successor
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
        assert!(status.expect("run kill").success());
    }

    pub async fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // The last log lines may still be in the pipe: read them all.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "wsgate did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A `VmRSS`-style field of the process's `/proc/PID/status`, in KiB.
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
