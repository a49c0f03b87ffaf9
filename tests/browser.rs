//! A real browser against the real server: Debian's headless Chromium,
//! driven by playwright-core (tests/browser/check.mjs), loads a page over
//! HTTP/2 and TLS and opens a `wss://` WebSocket through the gateway.
//!
//! Chromium verifies the gateway's certificate: the test CA is trusted the
//! way a Linux user would trust it, in an NSS database under the browser's
//! HOME, and no flag relaxes certificate checks. The gateway offers
//! extended CONNECT (RFC 8441) on HTTP/2, so the browser opens its
//! WebSocket as a stream of the page's connection; a route that turns that
//! off sends it to a separate HTTP/1.1 connection instead.
//!
//! The first run installs Chromium, certutil and playwright-core with
//! tests/browser/install.sh (apt-get and npm ci).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::metrics::scrape;
use support::tls::TestCa;
use support::ws::{Behaviour, RecordingBackend, Seen};
use support::*;
use tokio_tungstenite::tungstenite::Message;

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Runs `work` on a blocking thread, so that the server on this runtime
/// keeps serving; a panic in it fails the test with its own message.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Installs Chromium, certutil and playwright-core (tests/browser/install.sh);
/// apt-get and npm take a while the first time, so off the runtime's threads.
async fn install_browser() {
    blocking(|| {
        // Tests start at once; the second would race the first's `npm ci`.
        static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = INSTALLING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let script = browser_dir().join("install.sh");
        let output = Command::new("bash")
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "installing Chromium, certutil and playwright-core with {} failed ({}); \
             this test needs them and is not skipped without them\n--- stdout\n{}\n--- stderr\n{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    })
    .await;
}

/// A HOME whose NSS database trusts the CA in `ca_pem` to identify TLS
/// servers, as Chromium on Linux reads it.
fn home_trusting(ca_pem: &str) -> tempfile::TempDir {
    let home = test_dir();
    let nssdb = home.path().join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).expect("create the NSS database directory");
    let ca_file = write_file(home.path(), "ca.pem", ca_pem);
    let db = format!("sql:{}", nssdb.display());
    run(Command::new("certutil").args(["-d", &db, "-N", "--empty-password"]));
    run(Command::new("certutil")
        .args(["-d", &db, "-A", "-t", "C,,", "-n", "wsgate-test-ca", "-i"])
        .arg(ca_file));
    home
}

/// The page: sends `messages` over `wss://` to the gateway, then 1 MiB of
/// binary, then closes with 4000; publishes what came back (the echoes,
/// whether the binary came back intact, the close code the backend's
/// answer carried) as `window.result`.
fn page(messages: &[String]) -> String {
    let quoted: Vec<String> = messages.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        r#"<!doctype html>
<meta charset="utf-8">
<title>wsgate in a browser</title>
<script>
const sent = [{}];
const binary = new Uint8Array(1 << 20).map((_, i) => (i * 31) & 0xff);
const echoes = [];
let binaryOk = null;
const ws = new WebSocket("wss://" + location.host + "/ws");
ws.binaryType = "arraybuffer";
ws.onopen = () => sent.forEach((m) => ws.send(m));
ws.onmessage = (e) => {{
  if (typeof e.data === "string") {{
    echoes.push(e.data);
    if (echoes.length === sent.length) ws.send(binary);
    return;
  }}
  const got = new Uint8Array(e.data);
  binaryOk = got.length === binary.length && got.every((b, i) => b === binary[i]);
  ws.close(4000, "page done");
}};
ws.onerror = () => {{ window.result ||= {{ error: "websocket error" }}; }};
ws.onclose = (e) => {{ window.result ||= {{ echoes, binaryOk, closeCode: e.code }}; }};
</script>
"#,
        quoted.join(", ")
    )
}

/// Runs tests/browser/`script` with `args` and returns the JSON of its last
/// line of output, and that line.
async fn node_script(script: &'static str, args: Vec<String>) -> (serde_json::Value, String) {
    let output = blocking(move || {
        run(Command::new("node")
            .arg(browser_dir().join(script))
            .args(&args)
            // Playwright's error call logs are for terminals; keep them plain.
            .env("FORCE_COLOR", "0"))
    })
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default().to_owned();
    let report = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {}", shorten(&line)));
    (report, line)
}

/// `text` cut short enough for an assertion message.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(400) {
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
        None => text.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_opens_its_websocket_on_the_h2_connection_of_the_page() {
    let server = page_and_websocket(true).await;
    // The page alone cannot tell which protocol its WebSocket used; the
    // gateway's counts can.
    let metrics = scrape(server.admin).await;
    assert_eq!(metrics.sessions_by_protocol("chat"), (1.0, 0.0));
    let record = server.session_record("chat").await;
    assert_eq!(record["protocol"], "HTTP/2.0", "{record}");
    assert_eq!(record["close_code"], 4000, "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_falls_back_to_http1_where_the_route_keeps_websockets_off_h2() {
    // Another route takes WebSockets over HTTP/2, so the connection offers
    // them: Chromium's CONNECT to this route gets RST_STREAM
    // HTTP_1_1_REQUIRED and it retries over HTTP/1.1.
    let server = page_and_websocket(false).await;
    let metrics = scrape(server.admin).await;
    assert_eq!(metrics.sessions_by_protocol("chat"), (0.0, 1.0));
}

/// Chromium loads a page over h2 and echoes text, 1 MiB of binary and a
/// close through `wss://…/ws`, a route with `over_http2 = over_h2` (another
/// route keeps it on): on its page's connection (status 200) or a new
/// HTTP/1.1 one (101).
async fn page_and_websocket(over_h2: bool) -> TestServer {
    install_browser().await;

    let ca = TestCa::new();
    let ca_pem = ca.pem.clone();
    let home = blocking(move || home_trusting(&ca_pem)).await;

    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let messages: Vec<String> = vec![
        "one".into(),
        "two".into(),
        "héllo ✓".into(),
        // Larger than a TLS record and than one HTTP/2 or WebSocket read.
        "0123456789abcdef".repeat(6400),
    ];
    let dir = test_dir();
    ca.leaf(&["localhost"]).write(dir.path(), "site");
    write_file(dir.path(), "public/index.html", page(&messages));
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"site.pem\", key = \"site-key.pem\" }}\n\n\
         [admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = {{ root = \"public\" }}\n\n\
         [[routes]]\nname = \"chat\"\npath = \"/ws\"\n\
         websocket = {{ backends = [\"ws://{}\"], over_http2 = {over_h2} }}\n\
         [[routes]]\nname = \"other\"\npath = \"/other\"\n\
         websocket = {{ backends = [\"ws://{}\"] }}\n",
        backend.addr, backend.addr
    );
    let server = TestServer::start_whole(dir, &config).await;

    // The name the certificate is for, not the address: Chromium checks it.
    let url = format!("https://localhost:{}/", server.addr.port());
    let home_path = home.path().to_str().expect("utf-8 path").to_owned();
    let (report, line) = node_script("check.mjs", vec![url, home_path]).await;
    assert_eq!(
        report["protocol"],
        "h2",
        "the page's nextHopProtocol; check.mjs said {}",
        shorten(&line)
    );
    assert_eq!(
        report["websocketStatus"],
        if over_h2 { 200 } else { 101 },
        "the WebSocket handshake's status (101 is HTTP/1.1, 200 HTTP/2); check.mjs said {}",
        shorten(&line)
    );
    let result = &report["result"];
    assert!(
        result["echoes"] == serde_json::json!(messages),
        "the echoes the page received; check.mjs said {}",
        shorten(&line)
    );
    let rest = serde_json::json!({
        "binaryOk": result["binaryOk"],
        "closeCode": result["closeCode"],
        "error": result["error"],
    });
    assert_eq!(rest["binaryOk"], true, "{rest}");
    assert_eq!(rest["closeCode"], 4000, "{rest}");

    let Seen::Handshake(headers, target) = backend.next().await else {
        panic!("expected the backend to see the handshake first");
    };
    assert_eq!(target, "/ws");
    assert_eq!(headers["x-forwarded-proto"], "https");
    for sent in &messages {
        let got = backend.next_message().await;
        assert!(
            got.as_ref() == Some(&Message::text(sent.as_str())),
            "the backend got {} instead of {}",
            shorten(&format!("{got:?}")),
            shorten(sent)
        );
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_live_session_and_its_counts_move() {
    install_browser().await;
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let config = format!(
        "[[routes]]\nname = \"chat\"\npath = \"/chat\"\n\
         websocket = {{ backends = [\"ws://{}\"] }}\n",
        backend.addr
    );
    let server = TestServer::start_in(test_dir(), &config).await;
    let mut client = support::ws::connect(server.addr, "/chat").await;
    let _ = backend.next().await; // the handshake
                                  // Messages keep flowing while the page watches.
    let chatter = tokio::spawn(async move {
        use futures_util::{SinkExt, StreamExt};
        for i in 0..300 {
            if client.send(Message::text(format!("m{i}"))).await.is_err() {
                break;
            }
            let _ = client.next().await;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        client
    });

    let listed = get(server.admin, "/sessions").await;
    let listed: serde_json::Value = serde_json::from_slice(&listed.body).expect("JSON");
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(listed["sessions"][0]["route"], "chat");

    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts directory");
    let screenshot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let home = test_dir();
    let url = format!("http://{}/", server.admin);
    let args = [url.as_str(), "chat"]
        .into_iter()
        .map(str::to_owned)
        .chain([&screenshot, home.path()].map(|p| p.to_str().expect("utf-8 path").to_owned()))
        .collect();
    let (report, _) = node_script("dashboard.mjs", args).await;
    assert_ne!(report["before"], report["after"], "{report}");
    assert_eq!(report["backendSessions"], "1", "{report}");
    assert_eq!(
        report["foreign"],
        serde_json::json!([]),
        "nothing fetched from elsewhere"
    );
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG"),
        "a PNG at {}",
        screenshot.display()
    );
    chatter.abort();
}

/// A page that stores `token` (if any) in the `session` cookie, as a
/// login page would, then opens `wss://…/ws` and echoes one message: a
/// browser cannot put a token in a WebSocket's headers, but it sends the
/// cookie with the handshake.
fn cookie_page(token: Option<&str>) -> String {
    let cookie = token
        .map(|token| {
            format!("document.cookie = \"session={token}; path=/; secure; samesite=strict\";")
        })
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<meta charset="utf-8">
<script>
{cookie}
const ws = new WebSocket("wss://" + location.host + "/ws");
ws.onopen = () => ws.send("with a cookie");
ws.onmessage = (e) => {{ window.result = {{ echoes: [e.data] }}; ws.close(1000); }};
ws.onerror = () => {{ window.result ||= {{ error: "websocket error" }}; }};
ws.onclose = (e) => {{ window.result ||= {{ error: `closed ${{e.code}}` }}; }};
</script>
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_opens_a_websocket_with_its_jwt_in_a_cookie() {
    install_browser().await;
    let ca = TestCa::new();
    let ca_pem = ca.pem.clone();
    let home = blocking(move || home_trusting(&ca_pem)).await;
    let mut backend = RecordingBackend::start(Behaviour::Echo).await;
    let dir = test_dir();
    ca.leaf(&["localhost"]).write(dir.path(), "site");
    // An HMAC key, and a token signed with it by hand (HS256, RFC 7515).
    let secret = b"a shared secret of the browser test, 32+ bytes long";
    let key = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    };
    write_file(
        dir.path(),
        "jwks.json",
        format!(r#"{{"keys": [{{"kty": "oct", "k": "{key}", "kid": "k1"}}]}}"#),
    );
    let token = hs256_token(secret, "k1", "alice");
    write_file(dir.path(), "public/index.html", cookie_page(Some(&token)));
    write_file(dir.path(), "public/anonymous.html", cookie_page(None));
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"site.pem\", key = \"site-key.pem\" }}\n\n\
         [admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = {{ root = \"public\" }}\n\n\
         [[routes]]\nname = \"chat\"\npath = \"/ws\"\n\
         websocket = {{ backends = [\"ws://{}\"] }}\n\
         auth = {{ jwt = {{ keys = \"jwks.json\", algorithms = [\"HS256\"], token_from = [\"cookie:session\"], claims_to_headers = {{ sub = \"X-User\" }} }} }}\n",
        backend.addr
    );
    let server = TestServer::start_whole(dir, &config).await;
    let home_path = home.path().to_str().expect("utf-8 path").to_owned();
    let url = format!("https://localhost:{}/", server.addr.port());
    let (report, line) = node_script("check.mjs", vec![url, home_path.clone()]).await;
    assert_eq!(
        report["result"]["echoes"],
        serde_json::json!(["with a cookie"]),
        "check.mjs said {}",
        shorten(&line)
    );
    let Seen::Handshake(headers, _) = backend.next().await else {
        panic!("expected the backend to see the handshake first");
    };
    assert_eq!(headers["x-user"], "alice");
    // The same page without the cookie: the upgrade is refused (401), so the
    // browser reports a failed WebSocket.
    let url = format!("https://localhost:{}/anonymous.html", server.addr.port());
    let (report, line) = node_script("check.mjs", vec![url, home_path]).await;
    assert!(
        report["result"]["error"].is_string(),
        "check.mjs said {}",
        shorten(&line)
    );
    server
        .access_record(|r| r["reason"] == "jwt_missing" && r["status"] == 401)
        .await;
}

/// An HS256 JWT for `sub` with key id `kid`, valid for an hour.
fn hs256_token(secret: &[u8], kid: &str, sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    let claims = serde_json::json!({ "sub": sub, "exp": exp });
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign the token")
}

/// A page on `https://localhost:PORT` that fetches, from the other origin
/// `https://127.0.0.1:PORT`, once from a route whose `cors` allows it (with
/// a header that needs a preflight) and once from one without `cors`.
fn cors_page(port: u16) -> String {
    format!(
        r#"<!doctype html>
<meta charset="utf-8">
<title>cross-origin fetches</title>
<script>
(async () => {{
  const result = {{}};
  const other = "https://127.0.0.1:{port}";
  try {{
    const r = await fetch(other + "/api/data.json", {{ headers: {{ "X-Custom": "1" }} }});
    result.allowed = await r.text();
    result.requestId = r.headers.get("x-request-id");
  }} catch (e) {{ result.allowed = "refused: " + e; }}
  try {{
    const r = await fetch(other + "/private/data.json");
    result.blocked = await r.text();
  }} catch (e) {{ result.blocked = "refused: " + e; }}
  window.result = result;
}})();
</script>
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_makes_the_cross_origin_request_cors_allows_and_not_the_other() {
    install_browser().await;
    let ca = TestCa::new();
    let ca_pem = ca.pem.clone();
    let home = blocking(move || home_trusting(&ca_pem)).await;
    let dir = test_dir();
    // Two origins on one listener: the page's host name and the address.
    ca.leaf(&["localhost", "127.0.0.1"])
        .write(dir.path(), "site");
    let (port, admin) = (free_port(), free_port());
    write_file(dir.path(), "public/index.html", cors_page(port));
    write_file(dir.path(), "data/data.json", "{\"shared\": true}\n");
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:{port}\"\ntls = {{ cert = \"site.pem\", key = \"site-key.pem\" }}\n\
         [admin]\nbind = \"127.0.0.1:{admin}\"\n\
         [log]\naccess = \"access.log\"\n\
         [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = {{ root = \"public\" }}\n\
         [[routes]]\nname = \"api\"\npath = \"/api\"\nstatic = {{ root = \"data\" }}\n\
         cors = {{ origins = [\"https://localhost:{port}\"], headers = [\"X-Custom\"], expose = [\"X-Request-Id\"], max_age = \"10m\" }}\n\
         [[routes]]\nname = \"private\"\npath = \"/private\"\nstatic = {{ root = \"data\" }}\n"
    );
    let file = write_file(dir.path(), "wsgate.toml", config);
    let _gateway = support::process::Process::run_config(&file);
    eventually(std::time::Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
    let url = format!("https://localhost:{port}/");
    let home_path = home.path().to_str().expect("utf-8 path").to_owned();
    let (report, line) = node_script("check.mjs", vec![url, home_path]).await;
    let result = &report["result"];
    assert_eq!(
        result["allowed"], "{\"shared\": true}\n",
        "check.mjs said {line}"
    );
    // The exposed header is readable, so the actual response carried CORS too.
    assert!(result["requestId"].is_string(), "check.mjs said {line}");
    let blocked = result["blocked"].as_str().unwrap_or_default();
    assert!(
        blocked.starts_with("refused: TypeError"),
        "check.mjs said {line}"
    );
    // The browser asked first, and wsgate answered it.
    let log = std::fs::read_to_string(dir.path().join("access.log")).unwrap_or_default();
    let preflight = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|r| r["method"] == "OPTIONS" && r["route"] == "api")
        .unwrap_or_else(|| panic!("no preflight in the log:\n{log}"));
    assert_eq!(preflight["status"], 204, "{preflight}");
}

/// `count` numbered lines; the page builds the same text to compare.
fn numbered_lines(count: usize) -> String {
    (0..count)
        .map(|i| format!("line {i} of the text\n"))
        .collect()
}

/// A page that fetches a cached small file and a large streamed one from
/// its own origin and reports the `Content-Encoding` each came in and
/// whether the text it read is the text that was stored.
fn compression_page(small_lines: usize, large_lines: usize) -> String {
    format!(
        r#"<!doctype html>
<meta charset="utf-8">
<title>compressed fetches</title>
<script>
(async () => {{
  const lines = (n) => Array.from({{ length: n }}, (_, i) => `line ${{i}} of the text\n`).join("");
  const result = {{}};
  for (const [name, path, count] of [["small", "/small.txt", {small_lines}], ["large", "/large.txt", {large_lines}]]) {{
    try {{
      const r = await fetch(path, {{ cache: "no-store" }});
      const text = await r.text();
      result[name] = {{ encoding: r.headers.get("content-encoding"), length: text.length, intact: text === lines(count) }};
    }} catch (e) {{ result[name] = {{ error: String(e) }}; }}
  }}
  window.result = result;
}})();
</script>
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_reads_the_decoded_text_of_compressed_answers() {
    install_browser().await;
    let ca = TestCa::new();
    let ca_pem = ca.pem.clone();
    let home = blocking(move || home_trusting(&ca_pem)).await;
    let dir = test_dir();
    ca.leaf(&["localhost"]).write(dir.path(), "site");
    // 40 KiB: cached and compressed once; 400 KiB: past the cache, streamed.
    let (small, large) = (2_000, 20_000);
    write_file(
        dir.path(),
        "public/index.html",
        compression_page(small, large),
    );
    write_file(dir.path(), "public/small.txt", numbered_lines(small));
    write_file(dir.path(), "public/large.txt", numbered_lines(large));
    let config = "[[listeners]]\nbind = \"127.0.0.1:0\"\ntls = { cert = \"site.pem\", key = \"site-key.pem\" }\n\
                  [admin]\nbind = \"127.0.0.1:0\"\n\
                  [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\ncompress = {}\n";
    let server = TestServer::start_whole(dir, config).await;
    let url = format!("https://localhost:{}/", server.addr.port());
    let home_path = home.path().to_str().expect("utf-8 path").to_owned();
    let (report, line) = node_script("check.mjs", vec![url, home_path]).await;
    assert_eq!(report["protocol"], "h2", "check.mjs said {line}");
    for (name, lines) in [("small", small), ("large", large)] {
        let seen = &report["result"][name];
        // Chromium asks for "gzip, deflate, br, zstd": brotli comes first here.
        assert_eq!(seen["encoding"], "br", "{name}: check.mjs said {line}");
        assert_eq!(seen["intact"], true, "{name}: check.mjs said {line}");
        assert_eq!(
            seen["length"],
            numbered_lines(lines).len(),
            "{name}: check.mjs said {line}"
        );
    }
}
