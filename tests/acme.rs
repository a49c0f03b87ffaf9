//! ACME against Let's Encrypt's test CA: Debian's `pebble`, with
//! `pebble-challtestsrv` as its DNS server answering 127.0.0.1 for every
//! name, both started here on loopback with their own config. Pebble's
//! validation connects to the real wsgate binary's listeners.
//!
//! Needs `pebble` (installed by tests/pebble/install.sh: apt-get).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_rustls::TlsConnector;

use support::metrics::scrape;
use support::process::Process;
use support::tls::TestCa;
use support::*;

fn install_pebble() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pebble/install.sh");
        let status = std::process::Command::new("bash")
            .arg(script)
            .status()
            .expect("run install.sh");
        assert!(
            status.success(),
            "installing pebble failed ({status}); it needs apt-get and root or sudo"
        );
    });
}

/// Pebble and its DNS server, killed on drop.
struct Pebble {
    ca: Child,
    _dns: Child,
    /// Where wsgate finds the directory.
    directory: String,
    management: u16,
}

/// What Pebble is told about wsgate, and how long its certificates live.
struct PebbleSetup {
    /// Where Pebble serves its API; chosen before it runs so that wsgate
    /// can be started first, against a CA that is not up yet.
    port: u16,
    http_port: u16,
    tls_port: u16,
    validity: Duration,
}

impl Pebble {
    /// Starts Pebble with an HTTPS certificate for `localhost` from `ca`
    /// (written as `pebble-ca.pem` in `dir` for wsgate's `directory_ca`).
    async fn start(dir: &Path, ca: &TestCa, setup: &PebbleSetup) -> Pebble {
        install_pebble();
        let leaf = ca.leaf(&["localhost"]);
        leaf.write(dir, "pebble-api");
        write_file(dir, "pebble-ca.pem", &ca.pem);
        let dns = free_port();
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{}", setup.port),
                "managementListenAddress": format!("127.0.0.1:{}", free_port()),
                "certificate": dir.join("pebble-api.pem"),
                "privateKey": dir.join("pebble-api-key.pem"),
                "httpPort": setup.http_port,
                "tlsPort": setup.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": setup.validity.as_secs(),
            }
        });
        let management = config["pebble"]["managementListenAddress"]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("management port");
        let config_file = write_file(dir, "pebble.json", config.to_string());
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start pebble-challtestsrv");
        let ca = Command::new("pebble")
            .arg("-config")
            .arg(&config_file)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            // No random waits, no refused nonces, a new validation per order.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start pebble");
        let api: SocketAddr = ([127, 0, 0, 1], setup.port).into();
        eventually(Duration::from_secs(20), || async move {
            TcpStream::connect(api).await.ok().map(|_| ())
        })
        .await;
        Pebble {
            ca,
            _dns: dns_server,
            directory: format!("https://localhost:{}/dir", setup.port),
            management,
        }
    }

    /// The root Pebble signs with (made at its start), from its management
    /// API: as PEM, and as a store for rustls.
    async fn root(&self) -> (Vec<u8>, RootCertStore) {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management);
        let pem = eventually(Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let out = Command::new("curl")
                    .args(["-sfk", &url])
                    .output()
                    .await
                    .ok()?;
                out.status.success().then_some(out.stdout)
            }
        })
        .await;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.expect("root PEM")).expect("root");
        }
        (pem, roots)
    }

    async fn stop(mut self) {
        let _ = self.ca.kill().await;
    }
}

/// A listener config for `domains` ordered from `directory` over `challenge`.
fn acme_listener(port: u16, domains: &[&str], directory: &str, challenge: &str) -> String {
    let domains: Vec<String> = domains.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        "[[listeners]]\nbind = \"127.0.0.1:{port}\"\n\
         tls = {{ acme = {{ domains = [{}], email = \"ops@example.com\", directory = \"{directory}\", \
         directory_ca = \"pebble-ca.pem\", state = \"acme\", challenge = \"{challenge}\" }} }}\n\n",
        domains.join(", ")
    )
}

const SITE: &str = "[admin]\nbind = \"127.0.0.1:0\"\n\n\
    [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n";

/// The leaf wsgate serves for `name` on `port`, verified against `roots`.
async fn served_leaf(
    port: u16,
    name: &str,
    roots: &RootCertStore,
) -> Option<CertificateDer<'static>> {
    let mut config = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots.clone())
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let server_name = ServerName::try_from(name.to_owned()).ok()?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(server_name, stream)
        .await
        .ok()?;
    tls.get_ref().1.peer_certificates()?.first().cloned()
}

async fn orders(admin: SocketAddr, result: &str) -> f64 {
    scrape(admin)
        .await
        .get("wsgate_acme_orders_total", &[("result", result)])
        .unwrap_or(0.0)
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

/// The real binary on `config`, written to `dir/file`, after `check` passed it.
fn start(dir: &Path, file: &str, config: &str) -> (Process, PathBuf) {
    let file = write_file(dir, file, config);
    check(&file);
    (Process::run_config(&file), file)
}

/// What `wsgate check` prints for `file`, which it must accept.
fn check(file: &Path) -> String {
    let checked = std::process::Command::new(support::process::BIN)
        .arg("check")
        .arg(file)
        .output()
        .expect("wsgate check");
    assert!(
        checked.status.success(),
        "check refused:\n{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    String::from_utf8_lossy(&checked.stdout).into_owned()
}

#[tokio::test]
async fn certificates_are_issued_over_both_challenges_and_renewed_before_they_expire() {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "hello over ACME\n");
    let (http_port, alpn_port, other_port) = (free_port(), free_port(), free_port());
    let setup = PebbleSetup {
        port: free_port(),
        http_port,
        tls_port: alpn_port,
        validity: Duration::from_secs(30),
    };
    let ca = TestCa::new();
    let pebble = Pebble::start(dir.path(), &ca, &setup).await;
    // One request an hour per client on the plaintext listener: the CA's
    // fetches of the tokens (from 127.0.0.1, like the test's) must pass
    // all the same, while another request is refused.
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:{http_port}\"\nrequest_rate = \"1/h\"\n\n{}{}{SITE}",
        acme_listener(alpn_port, &["alpn.test"], &pebble.directory, "tls-alpn-01"),
        acme_listener(
            other_port,
            &["web.test", "www.web.test"],
            &pebble.directory,
            "http-01"
        ),
    );
    let (wsgate, file) = start(dir.path(), "wsgate.toml", &config);
    let admin = wsgate.admin().await;
    let (root_pem, roots) = pebble.root().await;

    // Both orders went through the real validation: the served chains
    // verify against Pebble's root for every name.
    let first = eventually(Duration::from_secs(30), || {
        let roots = roots.clone();
        async move { served_leaf(alpn_port, "alpn.test", &roots).await }
    })
    .await;
    let mut first_web = Vec::new();
    for name in ["web.test", "www.web.test"] {
        let roots = roots.clone();
        first_web.push(
            eventually(Duration::from_secs(30), || {
                let roots = roots.clone();
                async move { served_leaf(other_port, name, &roots).await }
            })
            .await,
        );
    }
    assert_eq!(first_web[0], first_web[1], "one certificate for both names");
    let plain: SocketAddr = ([127, 0, 0, 1], http_port).into();
    let statuses = [get(plain, "/").await.status, get(plain, "/").await.status];
    assert_eq!(
        statuses.map(|s| s.as_u16()),
        [200, 429],
        "the rate applies to the rest"
    );
    let metrics = scrape(admin).await;
    for name in ["alpn.test", "web.test", "www.web.test"] {
        let expiry = metrics.value(
            "wsgate_acme_certificate_expiry_timestamp_seconds",
            &[("name", name)],
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!(
            expiry > now && expiry < now + 60.0,
            "{name} expires at {expiry}"
        );
    }
    // curl (OpenSSL) fetches the site by name, trusting Pebble's root only.
    let root_file = write_file(dir.path(), "pebble-root.pem", &root_pem);
    let page = Command::new("curl")
        .arg("-sSf")
        .arg("--cacert")
        .arg(&root_file)
        .arg("--resolve")
        .arg(format!("www.web.test:{other_port}:127.0.0.1"))
        .arg(format!("https://www.web.test:{other_port}/"))
        .output()
        .await
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&page.stdout),
        "hello over ACME\n",
        "{}",
        String::from_utf8_lossy(&page.stderr)
    );

    // The account, keys and certificates are the owner's alone.
    let state = dir.path().join("acme");
    let stored: Vec<PathBuf> = std::fs::read_dir(state.join("certificates"))
        .expect("certificates")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    for file in &stored {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    assert_eq!(mode(&state), 0o700);
    let accounts: Vec<PathBuf> = std::fs::read_dir(state.join("accounts"))
        .expect("accounts")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(accounts.len(), 1, "one account for the CA, shared by both");
    // With the contact the CA was given, so a changed email can be told.
    let contact = accounts[0].with_extension("contact");
    assert_eq!(
        std::fs::read_to_string(&contact).expect("contact"),
        "mailto:ops@example.com"
    );
    assert_eq!(mode(&contact), 0o600);
    assert!(
        std::fs::read_dir(state.join("http-01")).map_or(true, |d| d.count() == 0),
        "HTTP-01 tokens are taken down after the order"
    );

    // 30-second certificates renew two thirds in (20 to 22 s): a new leaf
    // with the same name, served without a restart.
    let renewed = eventually(Duration::from_secs(40), || {
        let (roots, first) = (roots.clone(), first.clone());
        async move {
            let leaf = served_leaf(alpn_port, "alpn.test", &roots).await?;
            (leaf != first).then_some(leaf)
        }
    })
    .await;
    assert_ne!(renewed, first);
    // HTTP-01 renewed too, its token fetched past the listener's rate.
    eventually(Duration::from_secs(20), || {
        let (roots, first) = (roots.clone(), first_web[0].clone());
        async move {
            let leaf = served_leaf(other_port, "web.test", &roots).await?;
            (leaf != first).then_some(())
        }
    })
    .await;
    assert!(orders(admin, "issued").await >= 4.0);
    assert_eq!(orders(admin, "failed").await, 0.0, "{}", wsgate.log());

    // A changed email reaches the CA's account; an unchanged one is not sent again.
    const UPDATED: &str = "ACME account contact updated";
    assert!(!wsgate.log().contains(UPDATED), "{}", wsgate.log());
    replace_file(&file, config.replace("ops@example.com", "team@example.com"));
    wsgate.signal("HUP");
    let log = wsgate.logged(UPDATED, Duration::from_secs(20)).await;
    assert!(log.contains("contact=mailto:team@example.com"), "{log}");
    assert!(!log.contains("would not update"), "{log}");
    pebble.stop().await;
}

#[tokio::test]
async fn a_ca_down_at_startup_is_retried_and_a_restart_reuses_the_stored_certificate() {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "hello\n");
    let tls_port = free_port();
    let setup = PebbleSetup {
        port: free_port(),
        http_port: free_port(),
        tls_port,
        validity: Duration::from_secs(86_400),
    };
    let directory = format!("https://localhost:{}/dir", setup.port);
    let config = format!(
        "{}{SITE}",
        acme_listener(tls_port, &["down.test"], &directory, "tls-alpn-01")
    );
    let ca = TestCa::new();
    // Pebble's API certificate, for `check` to read before Pebble runs.
    write_file(dir.path(), "pebble-ca.pem", &ca.pem);
    let (wsgate, file) = start(dir.path(), "wsgate.toml", &config);
    assert!(check(&file)
        .contains("acme down.test tls-alpn-01 (no certificate yet: ordered at startup)"));
    let admin = wsgate.admin().await;

    // No CA: the order fails and is counted; the gateway serves what it can
    // (its admin, its other listeners) and refuses TLS for the name.
    eventually(Duration::from_secs(10), || async move {
        (orders(admin, "failed").await >= 1.0).then_some(())
    })
    .await;
    assert!(served_leaf(tls_port, "down.test", &RootCertStore::empty())
        .await
        .is_none());
    assert!(
        wsgate.log().contains("ACME order failed"),
        "{}",
        wsgate.log()
    );

    // The CA comes up: the next try (10 s after the failure) gets the certificate.
    let pebble = Pebble::start(dir.path(), &ca, &setup).await;
    let (_, roots) = pebble.root().await;
    let issued = eventually(Duration::from_secs(30), || {
        let roots = roots.clone();
        async move { served_leaf(tls_port, "down.test", &roots).await }
    })
    .await;
    assert_eq!(orders(admin, "issued").await, 1.0);
    drop(wsgate);

    // `check` says what the state directory holds.
    let summary = check(&file);
    assert!(
        summary.contains("acme down.test tls-alpn-01 (stored certificate until "),
        "{summary}"
    );

    // With the CA gone again, a restart serves the stored certificate at
    // once and orders nothing.
    pebble.stop().await;
    let restarted = Process::run_config(&file);
    let admin = restarted.admin().await;
    let served = eventually(Duration::from_secs(5), || {
        let roots = roots.clone();
        async move { served_leaf(tls_port, "down.test", &roots).await }
    })
    .await;
    assert_eq!(served, issued, "the stored certificate, not a new one");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(orders(admin, "issued").await, 0.0);
    assert_eq!(orders(admin, "failed").await, 0.0, "{}", restarted.log());
    assert!(!restarted.log().contains("no certificate yet"));

    // A reload that drops the name drops its expiry series: an alert on it
    // would otherwise fire for a certificate nobody serves.
    const EXPIRY: &str = "wsgate_acme_certificate_expiry_timestamp_seconds";
    let down = [("name", "down.test")];
    assert!(scrape(admin).await.get(EXPIRY, &down).is_some());
    replace_file(&file, config.replace("down.test", "other.test"));
    restarted.signal("HUP");
    eventually(Duration::from_secs(10), || async move {
        let (succeeded, _) = support::metrics::reloads(admin).await;
        (succeeded >= 1.0).then_some(())
    })
    .await;
    let metrics = scrape(admin).await;
    assert_eq!(metrics.get(EXPIRY, &down), None, "{}", restarted.log());
    assert_eq!(metrics.get(EXPIRY, &[("name", "other.test")]), None);

    // Back to the first block: its stored certificate, and its series, return.
    replace_file(&file, &config);
    restarted.signal("HUP");
    eventually(Duration::from_secs(10), || async move {
        scrape(admin).await.get(EXPIRY, &down).map(|_| ())
    })
    .await;
    // A changed block for the name (a name added) has no certificate yet, so
    // the name has no series until one arrives, though it is still listed.
    let widened = config.replace("[\"down.test\"]", "[\"down.test\", \"more.test\"]");
    assert_ne!(widened, config);
    replace_file(&file, widened);
    restarted.signal("HUP");
    eventually(Duration::from_secs(10), || async move {
        scrape(admin)
            .await
            .get(EXPIRY, &down)
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn replicas_sharing_a_state_directory_order_once_and_serve_the_same_certificate() {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "hello\n");
    let (http_a, http_b, tls_a, tls_b) = (free_port(), free_port(), free_port(), free_port());
    // The CA reaches replica A only, as a load balancer might send it there:
    // whichever replica orders, A answers from the shared state directory.
    let setup = PebbleSetup {
        port: free_port(),
        http_port: http_a,
        tls_port: free_port(),
        validity: Duration::from_secs(86_400),
    };
    let ca = TestCa::new();
    let pebble = Pebble::start(dir.path(), &ca, &setup).await;
    let (_, roots) = pebble.root().await;
    let replica = |http: u16, tls: u16, name: &str| {
        let config = format!(
            "[[listeners]]\nbind = \"127.0.0.1:{http}\"\n\n{}{SITE}",
            acme_listener(tls, &["shared.test"], &pebble.directory, "http-01")
        );
        start(dir.path(), name, &config)
    };
    let (a, _) = replica(http_a, tls_a, "a.toml");
    let (b, _) = replica(http_b, tls_b, "b.toml");
    let (admin_a, admin_b) = (a.admin().await, b.admin().await);
    let mut served = Vec::new();
    for port in [tls_a, tls_b] {
        served.push(
            eventually(Duration::from_secs(40), || {
                let roots = roots.clone();
                async move { served_leaf(port, "shared.test", &roots).await }
            })
            .await,
        );
    }
    assert_eq!(served[0], served[1], "one certificate for both replicas");
    let issued = orders(admin_a, "issued").await + orders(admin_b, "issued").await;
    let failed = orders(admin_a, "failed").await + orders(admin_b, "failed").await;
    assert_eq!((issued, failed), (1.0, 0.0), "{}\n{}", a.log(), b.log());
}
