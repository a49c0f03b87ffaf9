//! The files under deploy/: every linter and validator passes
//! (deploy/check.sh), and the config shipped for Kubernetes is one the
//! binary accepts.

mod support;

use std::path::Path;
use std::process::Command;

use support::process::BIN;
use support::tls::TestCa;
use support::{run, test_dir, write_file};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn deploy_files_pass_their_linters_and_agree_with_each_other() {
    let script = repo().join("deploy/check.sh");
    run(Command::new("bash").arg(&script).arg(BIN));
}

#[test]
fn the_kubernetes_config_passes_wsgate_check() {
    // The pod mounts the wsgate-tls Secret at /etc/wsgate-tls; here a
    // certificate made for the test stands in for it.
    let dir = test_dir();
    let leaf = TestCa::new().leaf(&["wsgate.example.com"]);
    let tls = dir.path().join("tls");
    write_file(&tls, "tls.crt", &leaf.cert_pem);
    write_file(&tls, "tls.key", &leaf.key_pem);
    let shipped = std::fs::read_to_string(repo().join("deploy/kubernetes/wsgate.toml"))
        .expect("read deploy/kubernetes/wsgate.toml");
    assert!(
        shipped.contains("\"/etc/wsgate-tls/"),
        "the certificate paths moved"
    );
    let local = shipped.replace("\"/etc/wsgate-tls/", &format!("\"{}/", tls.display()));
    let config = write_file(dir.path(), "wsgate.toml", local);

    let output = run(Command::new(BIN).arg("check").arg(&config));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for route in ["chat", "app"] {
        assert!(
            stdout.contains(route),
            "route {route} missing from:\n{stdout}"
        );
    }
}
