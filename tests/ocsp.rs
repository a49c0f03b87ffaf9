//! OCSP stapling, with certificates that name a responder run by
//! `openssl ocsp` here on loopback, and `openssl s_client -status` as the
//! client that reads the staple (both from Debian's openssl; pki.sh
//! installs it when missing).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use support::process::Process;
use support::*;

/// `openssl ocsp` answering for `dir`'s CA on `port`, its responses good
/// for a minute and signed by `signer` (`ca`, or a responder certificate
/// the CA issued).
async fn responder(dir: &Path, port: u16, signer: &str) -> Child {
    let (cert, key) = (format!("{signer}.pem"), format!("{signer}-key.pem"));
    let child = Command::new("openssl")
        .args(["ocsp", "-index", "index.txt", "-port"])
        .arg(port.to_string())
        .args(["-rsigner", &cert, "-rkey", &key, "-CA", "ca.pem"])
        .args(["-nmin", "1", "-ignore_err"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start openssl ocsp");
    // Asked as a client would: openssl ocsp serves one connection at a time
    // and waits on one that sends nothing, so a bare connect would stall it.
    eventually(Duration::from_secs(10), || async move {
        let asked = Command::new("openssl")
            .args([
                "ocsp",
                "-issuer",
                "ca.pem",
                "-cert",
                "site-leaf.pem",
                // Readiness only: the impostor's answers do not verify.
                "-noverify",
            ])
            .args(["-url", &format!("http://127.0.0.1:{port}"), "-timeout", "2"])
            .current_dir(dir)
            .output()
            .await
            .ok()?;
        String::from_utf8_lossy(&asked.stdout)
            .contains("site-leaf.pem: good")
            .then_some(())
    })
    .await;
    child
}

/// The PKI of pki.sh in a fresh directory, its responder on a free port.
fn pki() -> (tempfile::TempDir, u16) {
    let dir = test_dir();
    let port = free_port();
    run(std::process::Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ocsp/pki.sh"))
        .arg(dir.path())
        .arg(port.to_string()));
    write_file(dir.path(), "public/index.html", "hello\n");
    (dir, port)
}

/// What `openssl s_client -status` prints for a handshake asking for `name`.
async fn s_client(addr: SocketAddr, name: &str, dir: &Path) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            name,
        ])
        .args(["-status", "-CAfile", "ca.pem", "-verify_hostname", name])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("openssl s_client");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const STAPLED: &str = "OCSP Response Status: successful";
const GOOD: &str = "Cert Status: good";
const VERIFIED: &str = "Verify return code: 0 (ok)";

#[tokio::test]
async fn responses_are_stapled_once_the_responder_answers_and_must_staple_waits_for_one() {
    let (dir, port) = pki();
    let config = "[[listeners]]\nbind = \"127.0.0.1:0\"\n\
        tls = { cert = \"site.pem\", key = \"site-key.pem\" }\n\n\
        [[listeners]]\nbind = \"127.0.0.1:0\"\n\
        tls = { cert = \"must.pem\", key = \"must-key.pem\" }\n\n\
        [[listeners]]\nbind = \"127.0.0.1:0\"\n\
        tls = { cert = \"gone.pem\", key = \"gone-key.pem\" }\n\n\
        [admin]\nbind = \"127.0.0.1:0\"\n\n\
        [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n";
    let file = write_file(dir.path(), "wsgate.toml", config);
    let wsgate = Process::run_config(&file);
    wsgate.admin().await;
    let listening = wsgate.listening();
    let (site, must, gone) = (listening[0], listening[1], listening[2]);

    // The responder is down: handshakes go on without a staple, but the
    // Must-Staple certificate is not served at all.
    let out = s_client(site, "site.test", dir.path()).await;
    assert!(
        out.contains(VERIFIED) && out.contains("subject=CN = site.test"),
        "{out}"
    );
    assert!(out.contains("OCSP response: no response sent"), "{out}");
    let out = s_client(must, "must.test", dir.path()).await;
    assert!(out.contains("no peer certificate available"), "{out}");
    wsgate
        .logged("OCSP responder failed", Duration::from_secs(10))
        .await;

    // It comes up: the next tries (5 s, then 10 s after the first) staple
    // a good status, and the Must-Staple certificate is served with it.
    let _responder = responder(dir.path(), port, "ca").await;
    let root = dir.path();
    for (addr, name) in [(site, "site.test"), (must, "must.test")] {
        let out = eventually(Duration::from_secs(30), || async move {
            let out = s_client(addr, name, root).await;
            out.contains(STAPLED).then_some(out)
        })
        .await;
        assert!(out.contains(GOOD), "{out}");
        assert!(out.contains(VERIFIED), "{out}");
        assert!(out.contains(&format!("subject=CN = {name}")), "{out}");
    }

    // A revoked certificate gets no staple (and is said to be revoked).
    wsgate
        .logged(
            "the CA says this certificate is revoked",
            Duration::from_secs(10),
        )
        .await;
    let out = s_client(gone, "gone.test", dir.path()).await;
    assert!(out.contains("OCSP response: no response sent"), "{out}");

    // A reload keeps the staple: the certificate is the same, so is its stapler.
    wsgate.signal("HUP");
    wsgate
        .logged("config reloaded", Duration::from_secs(10))
        .await;
    let out = s_client(site, "site.test", dir.path()).await;
    assert!(out.contains(STAPLED) && out.contains(GOOD), "{out}");
}

#[tokio::test]
async fn a_delegated_responder_is_trusted_only_when_the_ca_issued_it_for_ocsp() {
    let (dir, port) = pki();
    // Signed by a certificate the CA issued for serverAuth, not OCSPSigning:
    // anyone holding such a certificate could otherwise vouch for any other.
    let mut impostor = responder(dir.path(), port, "impostor").await;
    let config = "[[listeners]]\nbind = \"127.0.0.1:0\"\n\
        tls = { cert = \"site.pem\", key = \"site-key.pem\" }\n\n\
        [admin]\nbind = \"127.0.0.1:0\"\n\n\
        [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n";
    let file = write_file(dir.path(), "wsgate.toml", config);
    let wsgate = Process::run_config(&file);
    wsgate.admin().await;
    let site = wsgate.listening()[0];
    wsgate
        .logged(
            "not signed by the certificate's issuer or a responder it delegated to",
            Duration::from_secs(10),
        )
        .await;
    let out = s_client(site, "site.test", dir.path()).await;
    assert!(out.contains("OCSP response: no response sent"), "{out}");
    // Gone for good before the next one binds its port.
    impostor.kill().await.expect("stop the impostor");

    // The responder the CA delegated to: its answers are stapled (the
    // next try is 5 s after the first failure).
    let _delegate = responder(dir.path(), port, "delegate").await;
    let root = dir.path();
    let out = eventually(Duration::from_secs(20), || async move {
        let out = s_client(site, "site.test", root).await;
        out.contains(STAPLED).then_some(out)
    })
    .await;
    assert!(out.contains(GOOD) && out.contains(VERIFIED), "{out}");
    assert!(
        out.contains("Responder Id: CN = delegate responder"),
        "{out}"
    );
}
