//! systemd's readiness protocol against the real binary: the test plays the
//! service manager, binding the datagram socket it names in `NOTIFY_SOCKET`.

mod support;

use std::collections::BTreeMap;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::process::Command;
use std::time::Duration;

use support::process::{Process, BIN};
use support::{free_port, get, test_dir, write_file};

const ROUTES: &str = "[[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n";

/// The fields of one notification (`KEY=value` lines).
fn receive(socket: &UnixDatagram) -> BTreeMap<String, String> {
    let mut buffer = [0u8; 4096];
    let length = socket
        .recv(&mut buffer)
        .expect("a notification within the socket's read timeout");
    let text = std::str::from_utf8(&buffer[..length]).expect("notifications are text");
    text.lines()
        .map(|line| {
            let (key, value) = line.split_once('=').expect("KEY=value");
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// Asserts that `notification` carries `key=value`.
#[track_caller]
fn assert_field(notification: &BTreeMap<String, String>, key: &str, value: &str) {
    assert_eq!(
        notification.get(key).map(String::as_str),
        Some(value),
        "{notification:?}"
    );
}

fn manager_socket(addr: &UnixAddr) -> UnixDatagram {
    let socket = UnixDatagram::bind_addr(addr).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    socket
}

fn config(public_port: u16, admin_port: u16) -> String {
    format!(
        "[[listeners]]\nbind = \"127.0.0.1:{public_port}\"\n\n\
         [admin]\nbind = \"127.0.0.1:{admin_port}\"\n\n{ROUTES}"
    )
}

#[tokio::test]
async fn ready_after_binding_reloading_around_each_reload_and_stopping_on_sigterm() {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "hello");
    let (public_port, admin_port) = (free_port(), free_port());
    let file = write_file(dir.path(), "wsgate.toml", config(public_port, admin_port));
    let socket_path = dir.path().join("notify.sock");
    let manager = manager_socket(&UnixAddr::from_pathname(&socket_path).expect("path"));
    let mut wsgate = Process::spawn(
        Command::new(BIN)
            .arg("--config")
            .arg(&file)
            .env("NOTIFY_SOCKET", &socket_path),
    );

    let ready = receive(&manager);
    assert_field(&ready, "READY", "1");
    assert_field(&ready, "STATUS", "serving");
    // READY=1 promises bound listeners: a connection made right now, without
    // any retry, must be accepted.
    for port in [public_port, admin_port] {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|error| panic!("port {port} refused after READY=1: {error}"));
    }
    let public = std::net::SocketAddr::from(([127, 0, 0, 1], public_port));
    assert_eq!(get(public, "/index.html").await.status, 200);

    // systemctl reload: RELOADING=1 with a monotonic timestamp, then READY=1.
    wsgate.signal("HUP");
    let reloading = receive(&manager);
    assert_field(&reloading, "RELOADING", "1");
    let first_reload: u64 = reloading["MONOTONIC_USEC"].parse().expect("microseconds");
    let after = receive(&manager);
    assert_field(&after, "READY", "1");
    assert_field(&after, "STATUS", "serving");

    // A broken config saved on disk: the watch reloads, the reload fails, and
    // the manager hears READY=1 again (the old config serves) with a status
    // that says so.
    std::fs::write(
        &file,
        format!("{}\nbogus = 1\n", config(public_port, admin_port)),
    )
    .expect("write broken config");
    let reloading = receive(&manager);
    assert_field(&reloading, "RELOADING", "1");
    let second_reload: u64 = reloading["MONOTONIC_USEC"].parse().expect("microseconds");
    assert!(
        second_reload > first_reload,
        "{first_reload} then {second_reload}"
    );
    let after = receive(&manager);
    assert_field(&after, "READY", "1");
    let status = &after["STATUS"];
    assert!(status.contains("reload failed"), "{status}");
    assert_eq!(get(public, "/index.html").await.status, 200);

    wsgate.signal("TERM");
    let stopping = receive(&manager);
    assert_field(&stopping, "STOPPING", "1");
    assert_eq!(wsgate.exit_code(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test]
async fn an_abstract_notify_socket_is_used_and_an_unusable_one_is_only_a_warning() {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "hello");
    let file = write_file(dir.path(), "wsgate.toml", config(0, 0));

    // Containers under systemd get an abstract socket, written "@name".
    let name = format!("wsgate-test-{}", std::process::id());
    let manager = manager_socket(&UnixAddr::from_abstract_name(&name).expect("abstract name"));
    let _wsgate = Process::spawn(
        Command::new(BIN)
            .arg("--config")
            .arg(&file)
            .env("NOTIFY_SOCKET", format!("@{name}")),
    );
    assert_field(&receive(&manager), "READY", "1");

    // Nobody listens at this path: wsgate serves anyway and says why the
    // manager hears nothing.
    let orphan = Process::spawn(
        Command::new(BIN)
            .arg("--config")
            .arg(&file)
            .env("NOTIFY_SOCKET", dir.path().join("nobody.sock")),
    );
    assert_eq!(get(orphan.addr().await, "/index.html").await.status, 200);
    support::eventually(Duration::from_secs(5), || async {
        orphan
            .log()
            .contains("cannot notify the service manager")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_watchdog_is_fed_at_half_its_interval_and_only_for_this_process() {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "hello");
    let file = write_file(dir.path(), "wsgate.toml", config(0, 0));
    let spawn = |socket: &std::path::Path, watchdog_pid: Option<&str>| {
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(&file)
            .env("NOTIFY_SOCKET", socket)
            .env("WATCHDOG_USEC", "200000");
        if let Some(pid) = watchdog_pid {
            command.env("WATCHDOG_PID", pid);
        }
        Process::spawn(&mut command)
    };

    // WatchdogSec=200ms: a ping every 100 ms, from READY=1 on.
    let watched = dir.path().join("watched.sock");
    let manager = manager_socket(&UnixAddr::from_pathname(&watched).expect("path"));
    let _wsgate = spawn(&watched, None);
    assert_field(&receive(&manager), "READY", "1");
    let first = std::time::Instant::now();
    for _ in 0..20 {
        let ping = receive(&manager);
        assert_field(&ping, "WATCHDOG", "1");
    }
    // Twenty pings at 100 ms span about 1.9 s (the interval catches up after
    // a late tick); at the full 200 ms they would span 3.8 s, in a busy loop
    // none. The bounds leave a slow machine most of a second either way.
    let took = first.elapsed();
    assert!(
        (Duration::from_millis(1000)..Duration::from_millis(3000)).contains(&took),
        "20 watchdog pings in {took:?}"
    );

    // A watchdog meant for another process (PID 1) is not fed by this one.
    let other = dir.path().join("other.sock");
    let manager = manager_socket(&UnixAddr::from_pathname(&other).expect("path"));
    let _wsgate = spawn(&other, Some("1"));
    assert_field(&receive(&manager), "READY", "1");
    manager
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("read timeout");
    let mut buffer = [0u8; 256];
    let heard = manager.recv(&mut buffer);
    assert!(
        heard.is_err(),
        "unexpected: {:?}",
        heard.map(|n| String::from_utf8_lossy(&buffer[..n]).into_owned())
    );
}
