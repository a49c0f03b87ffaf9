//! The `wsgate` binary: `check`, exit codes, signals, and surviving file
//! descriptor exhaustion.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::process::{Process, BIN};
use support::*;

fn wsgate(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run wsgate")
}

#[test]
fn check_accepts_the_example_config_and_prints_the_routes() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let output = wsgate(&["check", example.to_str().expect("utf-8 path")]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("listener  0.0.0.0:8080"), "{stdout}");
    assert!(stdout.contains("ROUTE"), "{stdout}");
    assert!(
        stdout.contains("proxy http://127.0.0.1:3000 http://127.0.0.1:3001 (least_connections, health /healthz)"),
        "{stdout}"
    );
}

#[test]
fn check_reports_every_error_at_its_line_and_column() {
    let dir = test_dir();
    std::fs::create_dir(dir.path().join("public")).expect("mkdir");
    let config = "[[listeners]]\nbind = \"127.0.0.1:8080\"\n\n\
                  [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\", cache_controll = \"x\" }\n\n\
                  [[routes]]\nname = \"docs\"\npath = \"/docs\"\nstatic = { root = \"missing\" }\n\n\
                  [[routes]]\nname = \"docs\"\npath = \"/other\"\nstatic = { root = \"public\" }\n";
    let file = write_file(dir.path(), "bad.toml", config);
    let file = file.to_str().expect("utf-8 path");
    let output = wsgate(&["check", file]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{file}:7:29: unknown field `cache_controll`")),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{file}:12:19: static root `missing` does not exist"
        )),
        "{stderr}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "{file}:15:8: route name `docs` is used by another route"
        )),
        "{stderr}"
    );
}

#[test]
fn check_refuses_values_that_would_break_the_service() {
    let dir = test_dir();
    let config = "trusted_proxies = [\"0.0.0.0/0\"]\n\
                  [[listeners]]\nbind = \"127.0.0.1:8080\"\n\
                  [server]\nheader_read_timeout = \"0s\"\n\
                  [[routes]]\nname = \"chat\"\npath = \"/\"\n\
                  websocket = { backends = [\"ws://user:pw@127.0.0.1:9001\"], origins = [\"chat.example.com\"], ping_timeout = \"0s\", max_message_size = \"0B\" }\n";
    let file = write_file(dir.path(), "fragile.toml", config);
    let file = file.to_str().expect("utf-8 path");
    let output = wsgate(&["check", file]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = [
        ":1:20: warning: trusted_proxies `0.0.0.0/0` trusts every address",
        ":5:23: header_read_timeout must be longer than zero",
        ":9:27: backend `ws://user:pw@127.0.0.1:9001` must not carry a user name or password",
        ":9:70: origin `chat.example.com` can never match a browser's Origin header",
        ":9:106: ping_timeout must be longer than zero",
        ":9:131: max_message_size must be larger than zero",
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, expected) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(&format!("{file}{expected}")),
            "{line} vs {expected}\n{stderr}"
        );
    }
}

#[test]
fn exit_codes() {
    assert_eq!(wsgate(&["--no-such-flag"]).status.code(), Some(64));
    assert_eq!(wsgate(&["check"]).status.code(), Some(64));
    let version = wsgate(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("wsgate "));
    let missing = wsgate(&["check", "/nonexistent/wsgate.toml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read config file"));
}

fn site(dir: &Path) -> &'static str {
    write_file(dir, "public/index.html", "served by the binary");
    write_file(dir, "public/big.bin", vec![1u8; 8 * 1024 * 1024]);
    "[server]\nshutdown_timeout = \"60s\"\n[[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n"
}

/// The soft and hard "Max open files" of a running process.
fn open_file_limits(process: &Process) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", process.child.id()))
        .expect("read /proc/PID/limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut numbers = line.split_whitespace().filter_map(|word| word.parse().ok());
    let soft = numbers.next().expect("soft limit");
    let hard = numbers.next().expect("hard limit");
    (soft, hard)
}

#[tokio::test]
async fn the_open_file_limit_is_raised_to_the_hard_limit_and_a_low_one_is_reported() {
    let dir = test_dir();
    let config = site(dir.path());
    let raised = Process::start(dir.path(), config, "ulimit -Sn 512;");
    raised.addr().await;
    let (soft, hard) = open_file_limits(&raised);
    assert!(
        hard > 512,
        "this test needs a hard limit above 512, not {hard}"
    );
    assert_eq!(soft, hard, "the soft limit went up to the hard one");
    let log = raised.log();
    assert!(log.contains("open-file limit limit="), "{log}");
    assert!(
        !log.contains("below what max_connections can use"),
        "a hard limit of {hard} covers the default max_connections: {log}"
    );

    // 512 for everything, while the default max_connections (8192) can use
    // about 16,600 descriptors: the operator is told.
    let capped = Process::start(dir.path(), config, "ulimit -n 512;");
    capped.addr().await;
    assert_eq!(open_file_limits(&capped), (512, 512));
    let log = capped.log();
    assert!(
        log.contains("WARN") && log.contains("below what max_connections can use"),
        "{log}"
    );
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let dir = test_dir();
    let config = site(dir.path());
    let mut process = Process::start(dir.path(), config, "");
    let addr = process.addr().await;
    assert_eq!(get(addr, "/").await.text(), "served by the binary");
    process.signal("TERM");
    assert_eq!(
        process.exit_code(Duration::from_secs(10)).await,
        Some(0),
        "{}",
        process.log()
    );
    assert!(process.log().contains("draining"));
}

#[tokio::test]
async fn a_second_signal_exits_without_waiting_for_the_drain() {
    let dir = test_dir();
    let config = site(dir.path());
    let mut process = Process::start(dir.path(), config, "");
    let addr = process.addr().await;
    // A client that never reads keeps a response in flight, so the 60 s drain would wait.
    let mut stuck = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut stuck, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    process.logged("listening", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    process.signal("TERM");
    eventually(Duration::from_secs(5), || async {
        process
            .log()
            .contains("draining connections=1")
            .then_some(())
    })
    .await;
    assert!(
        process.child.try_wait().expect("wait").is_none(),
        "still draining"
    );
    process.signal("INT");
    assert_eq!(
        process.exit_code(Duration::from_secs(5)).await,
        Some(1),
        "{}",
        process.log()
    );
    assert!(process.log().contains("second signal"));
}

#[tokio::test]
async fn running_out_of_file_descriptors_backs_off_and_recovers() {
    let dir = test_dir();
    let config = site(dir.path());
    let process = Process::start(dir.path(), config, "ulimit -n 64;");
    let addr = process.addr().await;
    let mut held = Vec::new();
    for _ in 0..120 {
        // The kernel completes handshakes into the backlog even when accept fails.
        if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
            held.push(stream);
        }
    }
    process.logged("backing off", Duration::from_secs(10)).await;
    // Out of descriptors, the admin listener still answers (from its
    // reserve), counts the failures, and the log says so once in a while.
    let admin = process.admin().await;
    let health = tokio::time::timeout(Duration::from_secs(5), get(admin, "/healthz"))
        .await
        .expect("/healthz answers while public accepts fail");
    assert_eq!(health.status, 200);
    let metrics = tokio::time::timeout(Duration::from_secs(5), get(admin, "/metrics"))
        .await
        .expect("/metrics answers while public accepts fail");
    let failures = support::metrics::parse(metrics.text())
        .get(
            "wsgate_accept_errors_total",
            &[("error", "out_of_file_descriptors")],
        )
        .unwrap_or(0.0);
    assert!(failures >= 1.0, "{}", metrics.text());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines = process.log().matches("accept failed; backing off").count();
    assert!(
        lines <= 2,
        "{lines} warnings in a few seconds:\n{}",
        process.log()
    );
    drop(held);
    let reply = eventually(Duration::from_secs(20), || async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        drop(stream);
        let reply = tokio::time::timeout(Duration::from_secs(2), get(addr, "/"))
            .await
            .ok()?;
        Some(reply)
    })
    .await;
    assert_eq!(reply.text(), "served by the binary");
}

#[tokio::test]
async fn echo_server_echoes() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let process =
        Process::spawn(Command::new(BIN).args(["echo-server", "--listen", "127.0.0.1:0"]));
    let addr = process.addr().await;
    let mut client = support::ws::connect(addr, "/").await;
    client.send(Message::text("ping pong")).await.expect("send");
    assert_eq!(
        support::ws::receive(&mut client).await,
        Message::text("ping pong")
    );
}

/// Runs the `openssl` command line in `dir`: keys made the way operators make them.
fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl {args:?} failed");
}

#[test]
fn check_takes_sec1_and_pkcs1_keys_and_points_at_a_mismatched_one() {
    let dir = test_dir();
    let path = dir.path();
    openssl(
        path,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec-key.pem",
        ],
    );
    openssl(
        path,
        &["genrsa", "-traditional", "-out", "rsa-key.pem", "2048"],
    );
    for (stem, name) in [("ec", "ec.test"), ("rsa", "rsa.test")] {
        let key = format!("{stem}-key.pem");
        let san = format!("subjectAltName=DNS:{name}");
        let subject = format!("/CN={name}");
        let cert = format!("{stem}.pem");
        openssl(
            path,
            &[
                "req", "-new", "-x509", "-key", &key, "-subj", &subject, "-addext", &san, "-days",
                "30", "-out", &cert,
            ],
        );
    }
    let read = |name: &str| std::fs::read_to_string(path.join(name)).expect("read key");
    assert!(read("ec-key.pem").contains("BEGIN EC PRIVATE KEY"));
    assert!(read("rsa-key.pem").contains("BEGIN RSA PRIVATE KEY"));
    std::fs::create_dir(path.join("public")).expect("mkdir");
    let routes = "[[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n";

    let good = format!(
        "[[listeners]]\nbind = \"127.0.0.1:8443\"\n\
         tls = {{ certificates = [ {{ cert = \"ec.pem\", key = \"ec-key.pem\" }}, {{ cert = \"rsa.pem\", key = \"rsa-key.pem\" }} ] }}\n{routes}"
    );
    let file = write_file(path, "good.toml", good);
    let output = wsgate(&["check", file.to_str().expect("utf-8 path")]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("127.0.0.1:8443  tls"));

    let tls_line = "tls = { cert = \"ec.pem\", key = \"rsa-key.pem\" }";
    let bad = format!("[[listeners]]\nbind = \"127.0.0.1:8443\"\n{tls_line}\n{routes}");
    let file = write_file(path, "bad.toml", bad);
    let file = file.to_str().expect("utf-8 path");
    let output = wsgate(&["check", file]);
    assert_eq!(output.status.code(), Some(1));
    let column = tls_line.find("\"rsa-key.pem\"").expect("key value") + 1;
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!("{file}:3:{column}: key `rsa-key.pem` does not belong to certificate `ec.pem`\n")
    );
}

#[test]
fn check_warns_about_an_expired_certificate_and_still_passes() {
    let dir = test_dir();
    support::tls::TestCa::new()
        .expired_leaf(&["old.test"])
        .write(dir.path(), "old");
    std::fs::create_dir(dir.path().join("public")).expect("mkdir");
    let tls_line = "tls = { cert = \"old.pem\", key = \"old-key.pem\" }";
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:8443\"\n{tls_line}\n\
         [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = {{ root = \"public\" }}\n"
    );
    let file = write_file(dir.path(), "old.toml", config);
    let file = file.to_str().expect("utf-8 path");
    let output = wsgate(&["check", file]);
    assert!(output.status.success(), "{output:?}");
    let column = tls_line.find("\"old.pem\"").expect("cert value") + 1;
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "{file}:3:{column}: warning: certificate `old.pem` expired on Wed, 01 Jan 2020 00:00:00 GMT; clients will refuse it\n"
        )
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("127.0.0.1:8443  tls"));
}
