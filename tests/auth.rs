//! Authentication through the real server: basic auth against htpasswd
//! files made by real tools (Python's `bcrypt` and `argon2-cffi`), and JWTs
//! minted by PyJWT with keys made in the test (RSA, EC, Ed25519, HMAC), all
//! in a venv in target/auth-venv made on first run; plain requests and
//! WebSocket upgrades, sessions closed when their token expires; the
//! challenge, the log (never the credential) and the metrics; and `wsgate
//! check` refusing weak hashes.

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

/// The venv's Python with the tools that make credentials.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let requirements = auth_dir().join("requirements.txt");
        python_venv(
            "auth-venv",
            &[requirements.as_path()],
            "bcrypt, argon2, jwt, cryptography, websockets",
        )
    })
}

/// Writes `users.htpasswd` in `dir` with `user:password:kind` entries.
fn htpasswd(dir: &Path, entries: &[&str]) {
    run(Command::new(python())
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

/// Makes the JWT keys in `dir` (jwks.json and the private keys).
fn jwt_keys(dir: &Path) {
    run(Command::new(python())
        .arg(auth_dir().join("jwt_tool.py"))
        .args(["keys"])
        .arg(dir));
}

/// A token of `kind` (see tests/auth/jwt_tool.py) with `claims` over the defaults.
fn mint(dir: &Path, kind: &str, claims: &str) -> String {
    let output = run(Command::new(python())
        .arg(auth_dir().join("jwt_tool.py"))
        .arg("mint")
        .arg(dir)
        .args([kind, claims]));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

const JWT_ROUTE: &str = "auth = { jwt = { keys = \"jwks.json\", algorithms = [\"RS256\", \"ES256\", \"EdDSA\", \"HS256\"], \
     issuer = \"https://issuer.test\", audience = \"chat\", \
     token_from = [\"header:authorization\", \"cookie:session\", \"query:token\"], claims_to_headers = { sub = \"X-User\" } } }\n";

#[tokio::test]
async fn jwts_of_every_kind_pass_and_every_forgery_is_refused() {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "members\n");
    jwt_keys(dir.path());
    let keys = dir.path().to_path_buf();
    let config = format!(
        "[[routes]]\nname = \"site\"\npath = \"/\"\nstatic = {{ root = \"public\" }}\n{JWT_ROUTE}"
    );
    let server = TestServer::start_in(dir, &config).await;
    let addr = server.addr;
    let bearer = |token: &str| format!("Bearer {token}");
    for kind in ["rs256", "es256", "eddsa", "hs256"] {
        let token = mint(&keys, kind, "{}");
        let reply = get_with(addr, "/", &[("authorization", &bearer(&token))]).await;
        assert_eq!(reply.status, 200, "{kind}");
    }
    let token = mint(&keys, "es256", "{}");
    let cookie = format!("theme=dark; session={token}");
    assert_eq!(
        get_with(addr, "/", &[("cookie", &cookie)]).await.status,
        200
    );
    let in_query = get(addr, &format!("/?a=1&token={token}")).await;
    assert_eq!(in_query.status, 200);
    let refused = [
        (
            "expired",
            mint(&keys, "rs256", r#"{"exp_in": -120}"#),
            "expired",
        ),
        (
            "not yet valid",
            mint(&keys, "rs256", r#"{"nbf_in": 300}"#),
            "denied",
        ),
        (
            "wrong audience",
            mint(&keys, "rs256", r#"{"aud": "other"}"#),
            "denied",
        ),
        (
            "wrong issuer",
            mint(&keys, "rs256", r#"{"iss": "https://evil.test"}"#),
            "denied",
        ),
        ("wrong key", mint(&keys, "wrong-key", "{}"), "denied"),
        ("alg none", mint(&keys, "none", "{}"), "denied"),
        (
            "HS256 with the RSA public key",
            mint(&keys, "confusion", "{}"),
            "denied",
        ),
        ("garbage", "not.a.token".to_owned(), "denied"),
    ];
    for (what, token, _) in &refused {
        let reply = get_with(addr, "/", &[("authorization", &bearer(token))]).await;
        assert_eq!(reply.status, 401, "{what}");
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "{what}: {challenge}"
        );
    }
    let anonymous = get(addr, "/").await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    server.access_record(|r| r["reason"] == "jwt_expired").await;
    server.access_record(|r| r["reason"] == "jwt_invalid").await;
    let logged = server.access_record(|r| r["path"] == "/?a=1").await;
    assert_eq!(logged["status"], 200);
    let log = server.access_log().join("\n");
    assert!(!log.contains(&token), "the log holds a token");
    let scrape = scrape(server.admin).await;
    let count = |result| {
        scrape.value(
            "wsgate_auth_total",
            &[("route", "site"), ("method", "jwt"), ("result", result)],
        )
    };
    assert_eq!(
        (
            count("ok"),
            count("expired"),
            count("denied"),
            count("missing")
        ),
        (6.0, 1.0, 7.0, 1.0)
    );
}

#[tokio::test]
async fn a_session_ends_with_1008_when_its_token_expires() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let dir = test_dir();
    jwt_keys(dir.path());
    let token = mint(dir.path(), "es256", r#"{"exp_in": 3}"#);
    let config = format!(
        "[[routes]]\nname = \"chat\"\npath = \"/chat\"\nwebsocket = {{ backends = [\"ws://{}\"] }}\n{JWT_ROUTE}",
        backend.addr
    );
    let server = TestServer::start_in(dir, &config).await;
    let url = format!("ws://{}/chat?room=1&token={token}", server.addr);
    let mut request = url.into_client_request().expect("request");
    // A client's own X-User is not believed.
    request
        .headers_mut()
        .insert("x-user", "mallory".parse().expect("header value"));
    let opened = std::time::Instant::now();
    let (mut client, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the upgrade passes with a valid token");
    let support::ws::Seen::Handshake(headers, path) = backend.next().await else {
        panic!("the backend saw no handshake first");
    };
    assert_eq!(headers["x-user"], "alice");
    assert_eq!(headers.get_all("x-user").iter().count(), 1);
    assert_eq!(
        path, "/chat?room=1",
        "the token is taken out of the forwarded query"
    );
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match client.next().await {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("the session is closed when the token expires")
    .expect("a close frame with a code");
    let after = opened.elapsed();
    assert_eq!(u16::from(closed.code), 1008);
    assert_eq!(closed.reason.as_str(), "token expired");
    assert!(
        after > std::time::Duration::from_millis(1500) && after < std::time::Duration::from_secs(5),
        "closed after {after:?} for a token valid 3 s"
    );
}

/// The cookie-deciding auth service (tests/auth/forward_service.py).
fn auth_service() -> support::apps::ChildServer {
    support::apps::ChildServer::start(
        Command::new("python3")
            .arg(auth_dir().join("forward_service.py"))
            .arg("0"),
    )
}

/// The service's own answer to `path` (its counters), not through the gateway.
async fn service_json(service: &support::apps::ChildServer, path: &str) -> serde_json::Value {
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], service.port).into();
    serde_json::from_str(&get(addr, path).await.text()).expect("json")
}

#[tokio::test]
async fn forward_auth_lets_the_service_decide() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let service = auth_service();
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "app\n");
    let verify = format!("{}/verify", service.url("http"));
    let config = format!(
        "[[routes]]\nname = \"app\"\npath = \"/\"\nstatic = {{ root = \"public\" }}\n\
         websocket = {{ backends = [\"ws://{}\"] }}\n\
         auth = {{ forward = {{ backends = [\"{verify}\"], copy_headers = [\"X-User\"], timeout = \"1s\" }} }}\n",
        backend.addr
    );
    let server = TestServer::start_in(dir, &config).await;
    let addr = server.addr;
    // No session: the service's 401, challenge and body, goes to the client.
    let refused = get(addr, "/?page=2").await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Cookie realm=\"app\"")
    );
    assert_eq!(refused.text(), "log in first\n");
    let asked = service_json(&service, "/last").await;
    assert_eq!(asked["x-forwarded-uri"], "/?page=2");
    assert_eq!(asked["x-forwarded-method"], "GET");
    assert_eq!(asked["x-forwarded-for"], "127.0.0.1");
    assert_eq!(asked["path"], "/verify");
    let redirected = get_with(addr, "/", &[("cookie", "session=redirect")]).await;
    assert_eq!(redirected.status, 302);
    assert_eq!(redirected.header("location"), Some("https://login.test/"));
    let allowed = get_with(addr, "/", &[("cookie", "session=good")]).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.text(), "app\n");
    // The upgrade too; the service's X-User replaces the client's.
    let (_, upgraded) = raw_handshake(
        addr,
        "/",
        &[("Cookie", "session=good"), ("X-User", "mallory")],
    )
    .await;
    assert_eq!(raw_status(&upgraded), 101, "{upgraded}");
    let support::ws::Seen::Handshake(headers, _) = backend.next().await else {
        panic!("the backend saw no handshake first");
    };
    let users: Vec<_> = headers.get_all("x-user").iter().collect();
    assert_eq!(users, ["alice"]);
    assert!(
        headers.get("x-ignored").is_none(),
        "only the named headers are copied"
    );
    // Slower than the timeout: 503, never open.
    let slow = get_with(addr, "/", &[("cookie", "session=slow")]).await;
    assert_eq!(slow.status, 503);
    server
        .access_record(|r| r["reason"] == "forward_auth_unavailable")
        .await;
    server
        .access_record(|r| r["reason"] == "forward_auth_denied" && r["status"] == 302)
        .await;
    let scrape = scrape(server.admin).await;
    let count = |result| {
        scrape.value(
            "wsgate_auth_total",
            &[("route", "app"), ("method", "forward"), ("result", result)],
        )
    };
    assert_eq!(
        (count("ok"), count("denied"), count("unavailable")),
        (2.0, 2.0, 1.0)
    );
    // The service shows among the route's backends.
    assert!(scrape
        .get(
            "wsgate_upstream_healthy",
            &[("route", "app"), ("backend", &verify)]
        )
        .is_some());
}

#[tokio::test]
async fn forward_auth_caches_decisions_fails_as_configured_and_rechecks_sessions() {
    let backend = RecordingBackend::start(Behaviour::Echo).await;
    let mut service = auth_service();
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "app\n");
    let verify = format!("{}/verify", service.url("http"));
    let config = format!(
        "[[routes]]\nname = \"cached\"\npath = \"/cached\"\nstatic = {{ root = \"public\" }}\n\
         auth = {{ forward = {{ backends = [\"{verify}\"], cache = \"30s\" }} }}\n\n\
         [[routes]]\nname = \"chat\"\npath = \"/chat\"\nwebsocket = {{ backends = [\"ws://{}\"] }}\n\
         auth = {{ forward = {{ backends = [\"{verify}\"], revalidate = \"1s\" }} }}\n\n\
         [[routes]]\nname = \"open\"\npath = \"/open\"\nstatic = {{ root = \"public\" }}\n\
         auth = {{ forward = {{ backends = [\"{verify}\"], on_error = \"allow\", timeout = \"500ms\" }} }}\n",
        backend.addr
    );
    let server = TestServer::start_in(dir, &config).await;
    let addr = server.addr;
    for _ in 0..3 {
        let reply = get_with(addr, "/cached/", &[("cookie", "session=good")]).await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(
        service_json(&service, "/count").await["good"],
        1,
        "two of three from the cache"
    );
    // A session is asked about again every second; once the service says
    // no, it is closed with 1008.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{addr}/chat"
        ))
        .expect("request");
    request
        .headers_mut()
        .insert("cookie", "session=good".parse().expect("header value"));
    let (mut session, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the session is let in");
    let service_addr: std::net::SocketAddr = ([127, 0, 0, 1], service.port).into();
    let revoke = support::request("POST", "/revoke")
        .body(Default::default())
        .expect("request");
    assert_eq!(support::send(service_addr, revoke).await.status, 204);
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        use futures_util::StreamExt;
        loop {
            match session.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("the session is closed once the service says no")
    .expect("a close code");
    assert_eq!(u16::from(closed.code), 1008);
    assert_eq!(closed.reason.as_str(), "authorization revoked");
    // With the service gone: the route that fails open lets requests
    // through; the others refuse with 503.
    service.kill();
    assert_eq!(get(addr, "/open/").await.status, 200);
    assert_eq!(
        get_with(addr, "/cached/", &[("cookie", "session=other")])
            .await
            .status,
        503
    );
}

/// GET `path` over TLS with `config`: the status and body, or why the
/// handshake or request failed.
async fn https_get(
    addr: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(u16, String), String> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = support::request("GET", path)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    // With TLS 1.3 a refused client certificate shows at the first request.
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn client_certificates_are_verified_and_reach_the_backend() {
    let app = support::apps::ChildServer::start(
        Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proxy/app.py"))
            .args(["app", "0"]),
    );
    let server_ca = support::tls::TestCa::new();
    let clients = support::tls::TestCa::new();
    let strangers = support::tls::TestCa::new();
    let dir = test_dir();
    server_ca.leaf(&["localhost"]).write(dir.path(), "site");
    write_file(dir.path(), "clients.pem", &clients.pem);
    write_file(dir.path(), "revoked.crl", clients.crl(&[666]));
    write_file(dir.path(), "public/index.html", "open\n");
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"site.pem\", key = \"site-key.pem\", client_auth = {{ ca = \"clients.pem\", required = false, crls = [\"revoked.crl\"] }} }}\n\
         [[listeners]]\nbind = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"site.pem\", key = \"site-key.pem\", client_auth = {{ ca = \"clients.pem\" }} }}\n\
         [admin]\nbind = \"127.0.0.1:0\"\n\
         [[routes]]\nname = \"open\"\npath = \"/\"\nstatic = {{ root = \"public\" }}\n\
         [[routes]]\nname = \"secure\"\npath = \"/secure\"\nproxy = {{ backends = [\"{}\"] }}\n\
         auth = {{ client_cert = {{ subject_header = \"X-Client-DN\" }} }}\n",
        app.url("http")
    );
    let server = TestServer::start_whole(dir, &config).await;
    let (optional, required) = (server.addrs[0], server.addrs[1]);
    let alice = clients.client_leaf("alice@example.test", 4000, 7);
    let expired = clients.client_leaf("old@example.test", 2020, 8);
    let revoked = clients.client_leaf("mallory@example.test", 4000, 666);
    let stranger = strangers.client_leaf("eve@example.test", 4000, 9);
    let with = |leaf: Option<&support::tls::Leaf>| server_ca.client_config_with(leaf);
    // Without a certificate: the open route serves, the secure one is 403.
    assert_eq!(
        https_get(optional, with(None), "/").await,
        Ok((200, "open\n".to_owned()))
    );
    let (status, _) = https_get(optional, with(None), "/secure/whoami")
        .await
        .expect("a response");
    assert_eq!(status, 403);
    // With one: the backend gets its subject and SAN, not a forged one.
    let (status, body) = https_get(optional, with(Some(&alice)), "/secure/whoami")
        .await
        .expect("a response");
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(seen["headers"]["x-client-dn"], "CN=alice");
    assert_eq!(
        seen["headers"]["x-client-cert-san"],
        "email:alice@example.test"
    );
    // Expired, revoked, or from another CA: no connection at all.
    for (what, leaf) in [
        ("expired", &expired),
        ("revoked", &revoked),
        ("another CA", &stranger),
    ] {
        let refused = https_get(optional, with(Some(leaf)), "/").await;
        assert!(refused.is_err(), "{what}: {refused:?}");
    }
    // Where a certificate is required, none means no connection either.
    assert!(https_get(required, with(None), "/").await.is_err());
    assert_eq!(
        https_get(required, with(Some(&alice)), "/").await,
        Ok((200, "open\n".to_owned()))
    );
    let scrape = scrape(server.admin).await;
    let count = |result| {
        scrape.value(
            "wsgate_auth_total",
            &[
                ("route", "secure"),
                ("method", "client_cert"),
                ("result", result),
            ],
        )
    };
    assert_eq!((count("ok"), count("missing")), (1.0, 1.0));
}

#[tokio::test]
async fn python_websockets_sends_its_token_as_a_subprotocol() {
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let dir = test_dir();
    jwt_keys(dir.path());
    let token = mint(dir.path(), "eddsa", "{}");
    let config = format!(
        "[[routes]]\nname = \"chat\"\npath = \"/chat\"\nwebsocket = {{ backends = [\"ws://{}\"] }}\n\
         auth = {{ jwt = {{ keys = \"jwks.json\", algorithms = [\"EdDSA\"], token_from = [\"subprotocol\"] }} }}\n",
        backend.addr
    );
    let server = TestServer::start_in(dir, &config).await;
    let url = format!("ws://{}/chat", server.addr);
    let script = auth_dir().join("subprotocol_client.py");
    let (interpreter, url_for_client, token_for_client) =
        (python().to_path_buf(), url.clone(), token.clone());
    let output = tokio::task::spawn_blocking(move || {
        run(Command::new(interpreter)
            .arg(script)
            .arg(url_for_client)
            .arg(token_for_client))
    })
    .await
    .expect("the client ran");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "hello");
    let support::ws::Seen::Handshake(headers, _) = backend.next().await else {
        panic!("the backend saw no handshake first");
    };
    assert_eq!(
        headers["sec-websocket-protocol"], "chat",
        "the token is not passed on"
    );
    // Without the token, the same client is refused.
    let refused = Command::new(python())
        .arg(auth_dir().join("subprotocol_client.py"))
        .arg(&url)
        .arg("not-a-token")
        .output()
        .expect("run the client");
    assert!(!refused.status.success());
}

/// An HTTP server on loopback answering every request with `document`
/// (which the test may replace), counting the requests.
async fn document_server(
    document: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (document, served) = (document.clone(), served.clone());
            let service = hyper::service::service_fn(move |_request| {
                served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = document.lock().expect("document").clone();
                async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(body)),
                    ))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    addr
}

#[tokio::test]
async fn jwt_keys_at_a_url_are_fetched_kept_and_fetched_again_for_a_new_kid() {
    use std::sync::atomic::Ordering;
    let dir = test_dir();
    jwt_keys(dir.path());
    let rotated = test_dir();
    jwt_keys_with_suffix(rotated.path(), "-2");
    let read = |dir: &Path| std::fs::read(dir.join("jwks.json")).expect("jwks");
    let document = std::sync::Arc::new(std::sync::Mutex::new(read(dir.path())));
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let issuer = document_server(document.clone(), served.clone()).await;
    let config = format!(
        "[[routes]]\nname = \"site\"\npath = \"/\"\nstatic = {{ root = \"public\" }}\n\
         auth = {{ jwt = {{ keys = \"http://{issuer}/jwks.json\", algorithms = [\"RS256\", \"ES256\"] }} }}\n\n\
         [[routes]]\nname = \"down\"\npath = \"/down\"\nstatic = {{ root = \"public\" }}\n\
         auth = {{ jwt = {{ keys = \"http://127.0.0.1:1/jwks.json\", algorithms = [\"RS256\"] }} }}\n"
    );
    let keys = dir.path().to_path_buf();
    write_file(dir.path(), "public/index.html", "ok\n");
    let server = TestServer::start_in(dir, &config).await;
    let bearer = |token: String| format!("Bearer {token}");
    for kind in ["rs256", "es256"] {
        let reply = get_with(
            server.addr,
            "/",
            &[("authorization", &bearer(mint(&keys, kind, "{}")))],
        )
        .await;
        assert_eq!(reply.status, 200, "{kind}");
    }
    assert_eq!(served.load(Ordering::SeqCst), 1, "fetched once, then kept");
    // The issuer rotates its keys: a token naming a new kid fetches again.
    *document.lock().expect("document") = read(rotated.path());
    let rotated_token = mint(rotated.path(), "rs256", r#"{"kid_suffix": "-2"}"#);
    let reply = get_with(
        server.addr,
        "/",
        &[("authorization", &bearer(rotated_token))],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(served.load(Ordering::SeqCst), 2);
    // Forged kids do not make it fetch again and again.
    let forged = mint(&keys, "rs256", r#"{"kid_suffix": "-forged"}"#);
    let reply = get_with(server.addr, "/", &[("authorization", &bearer(forged))]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(served.load(Ordering::SeqCst), 2);
    // No keys could ever be fetched: 503, not a guess.
    let reply = get_with(
        server.addr,
        "/down/",
        &[("authorization", &bearer(mint(&keys, "rs256", "{}")))],
    )
    .await;
    assert_eq!(reply.status, 503);
    server
        .access_record(|r| r["reason"] == "jwt_keys_unavailable")
        .await;
}

/// Like [`jwt_keys`], with `suffix` after every kid.
fn jwt_keys_with_suffix(dir: &Path, suffix: &str) {
    run(Command::new(python())
        .arg(auth_dir().join("jwt_tool.py"))
        .arg("keys")
        .arg(dir)
        .arg(suffix));
}

#[tokio::test]
async fn a_pem_public_key_checks_tokens_of_its_kind_only() {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "ok\n");
    jwt_keys(dir.path());
    let keys = dir.path().to_path_buf();
    let config = "[[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n\
                  auth = { jwt = { keys = \"rsa.pub.pem\", algorithms = [\"RS256\", \"HS256\"] } }\n";
    let server = TestServer::start_in(dir, config).await;
    let bearer = |token: String| format!("Bearer {token}");
    let good = get_with(
        server.addr,
        "/",
        &[("authorization", &bearer(mint(&keys, "rs256", "{}")))],
    )
    .await;
    assert_eq!(good.status, 200);
    // HS256 is listed, but an RSA key never serves as an HMAC secret.
    let confused = get_with(
        server.addr,
        "/",
        &[("authorization", &bearer(mint(&keys, "confusion", "{}")))],
    )
    .await;
    assert_eq!(confused.status, 401);
}
