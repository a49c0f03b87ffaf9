//! Authentication through the real server: basic auth against htpasswd
//! files made by real tools (Python's `bcrypt` and `argon2-cffi`, in a venv
//! in target/auth-venv made on first run), for plain requests and WebSocket
//! upgrades; the challenge, the log (never the credential) and the metrics;
//! and `wsgate check` refusing weak hashes.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine as _;
use support::apps::python_venv;
use support::metrics::scrape;
use support::process::BIN;
use support::ws::{raw_handshake, Behaviour, RecordingBackend};
use support::*;

fn auth_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/auth")
}

/// Writes `users.htpasswd` in `dir` with `user:password:kind` entries.
fn htpasswd(dir: &Path, entries: &[&str]) {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    let python = PYTHON.get_or_init(|| {
        let requirements = auth_dir().join("requirements.txt");
        python_venv("auth-venv", &[requirements.as_path()], "bcrypt, argon2")
    });
    run(Command::new(python)
        .arg(auth_dir().join("htpasswd.py"))
        .arg(dir.join("users.htpasswd"))
        .args(entries));
}

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

#[tokio::test]
async fn basic_auth_lets_bcrypt_and_argon2_users_in_and_challenges_the_rest() {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "staff page\n");
    htpasswd(
        dir.path(),
        &["alice:wonderland:bcrypt", "bob:builder:argon2"],
    );
    let config = "[[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n\
                  auth = { basic = \"users.htpasswd\", realm = \"Staff only\" }\n";
    let server = TestServer::start_in(dir, config).await;
    let addr = server.addr;
    let anonymous = get(addr, "/").await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Basic realm=\"Staff only\", charset=\"UTF-8\"")
    );
    for (user, password) in [
        ("alice", "wonderland"),
        ("bob", "builder"),
        ("alice", "wonderland"),
    ] {
        let reply = get_with(addr, "/", &[("authorization", &basic(user, password))]).await;
        assert_eq!(reply.status, 200, "{user}");
        assert_eq!(reply.text(), "staff page\n");
    }
    for (user, password) in [("alice", "builder"), ("carol", "wonderland")] {
        let reply = get_with(addr, "/", &[("authorization", &basic(user, password))]).await;
        assert_eq!(reply.status, 401, "{user}:{password}");
    }
    let malformed = get_with(addr, "/", &[("authorization", "Basic !!!")]).await;
    assert_eq!(malformed.status, 401);
    let record = server
        .access_record(|r| r["reason"] == "basic_auth_denied")
        .await;
    assert_eq!(record["status"], 401);
    server
        .access_record(|r| r["reason"] == "basic_auth_missing")
        .await;
    let log = server.access_log().join("\n");
    for secret in ["wonderland", "builder", &basic("alice", "builder")[6..]] {
        assert!(!log.contains(secret), "the log holds a credential: {log}");
    }
    let scrape = scrape(server.admin).await;
    let count = |result| {
        scrape.value(
            "wsgate_auth_total",
            &[("route", "site"), ("method", "basic"), ("result", result)],
        )
    };
    assert_eq!(
        (count("ok"), count("missing"), count("denied")),
        (3.0, 1.0, 3.0)
    );
}

#[tokio::test]
async fn a_websocket_upgrade_needs_the_credentials_too() {
    let backend = RecordingBackend::start(Behaviour::Echo).await;
    let dir = test_dir();
    htpasswd(dir.path(), &["alice:wonderland:bcrypt"]);
    let config = format!(
        "[[routes]]\nname = \"chat\"\npath = \"/chat\"\n\
         websocket = {{ backends = [\"ws://{}\"] }}\nauth = {{ basic = \"users.htpasswd\" }}\n",
        backend.addr
    );
    let server = TestServer::start_in(dir, &config).await;
    let (_, refused) = raw_handshake(server.addr, "/chat", &[]).await;
    assert_eq!(raw_status(&refused), 401, "{refused}");
    assert!(
        refused.contains("realm=\"chat\""),
        "the realm defaults to the route's name: {refused}"
    );
    let credentials = basic("alice", "wonderland");
    let (_, accepted) =
        raw_handshake(server.addr, "/chat", &[("Authorization", &credentials)]).await;
    assert_eq!(raw_status(&accepted), 101, "{accepted}");
}

#[test]
fn check_refuses_weak_or_unreadable_htpasswd_files_at_the_value() {
    let dir = test_dir();
    // MD5 as `openssl passwd -apr1` writes it.
    write_file(
        dir.path(),
        "users.htpasswd",
        "alice:$2b$10$abcdefghijklmnopqrstuu5Uq0NwHZ6u6ivAxRJDlr0bgG9HQdZ6e\nbob:$apr1$0zXrSDxQ$Sxbx9dLTUrrw2hV4kAmbo.\n",
    );
    let config = write_file(
        dir.path(),
        "wsgate.toml",
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n\n[[routes]]\nname = \"site\"\npath = \"/\"\n\
         static = { root = \".\" }\nauth = { basic = \"users.htpasswd\" }\n\n\
         [[routes]]\nname = \"other\"\npath = \"/other\"\nstatic = { root = \".\" }\n\
         auth = { basic = \"missing.htpasswd\", realm = \"a \\\"quoted\\\" realm\" }\n",
    );
    let output = Command::new(BIN)
        .args(["check", config.to_str().expect("utf-8 path")])
        .output()
        .expect("run wsgate check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let file = config.display();
    for expected in [
        format!("{file}:8:18: htpasswd file `users.htpasswd`: line 2: user `bob` has an MD5 hash, which is quick to crack; make it again with `htpasswd -B` (bcrypt) or an argon2 tool"),
        format!("{file}:14:18: htpasswd file `missing.htpasswd` cannot be read:"),
        format!("{file}:14:46: realm must not contain quotes, backslashes or control characters"),
    ] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }
}
