//! Servers nobody here wrote, run as child processes on free loopback
//! ports: each prints `listening PORT` once ready and is killed on drop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use super::run;

/// A child process serving on 127.0.0.1.
pub struct ChildServer {
    child: Child,
    pub port: u16,
}

impl ChildServer {
    /// Starts `command` and waits for its `listening PORT` line.
    pub fn start(command: &mut Command) -> ChildServer {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdout = child.stdout.take().expect("child stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the child's first line");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected output from {command:?}: {line:?}"));
        ChildServer { child, port }
    }

    /// `http://127.0.0.1:PORT` with `scheme`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Stops the server now (a backend going away).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `npm ci` in `dir` unless `dir/node_modules/marker` exists. Tests running
/// at once wait for one install rather than racing in one directory.
pub fn npm_ci(dir: &Path, marker: &str) {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !dir.join("node_modules").join(marker).exists() {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir));
    }
}

/// tests/proxy/app.js: a Node `http` app server named `name` that answers
/// `/whoami` with its name and greets each WebSocket client with it.
pub fn node_app(name: &str) -> ChildServer {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proxy");
    npm_ci(&dir, "socket.io/package.json");
    ChildServer::start(
        Command::new("node")
            .arg(dir.join("app.js"))
            .args([name, "0"]),
    )
}

/// The Python of the venv `target/<name>`, with `requirements` installed
/// there unless `python -c "import <imports>"` already works. Tests asking at
/// once wait for one install rather than racing to create one directory.
pub fn python_venv(name: &str, requirements: &[&Path], imports: &str) -> std::path::PathBuf {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(name);
    let python = venv.join("bin/python");
    let installed = Command::new(&python)
        .args(["-c", &format!("import {imports}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        let mut pip = Command::new(&python);
        pip.args(["-m", "pip", "install", "--quiet"]);
        for file in requirements {
            pip.arg("-r").arg(file);
        }
        run(&mut pip);
    }
    python
}
