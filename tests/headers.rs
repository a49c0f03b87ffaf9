//! Header rules through the real server: `request_headers` as a real
//! backend (Node's `http`, tests/proxy/app.js) and a WebSocket backend see
//! them, `response_headers` on a backend's answers and on wsgate's own
//! (404, 502), `hsts` as curl sees it over TLS and not over plain HTTP, and
//! `cors`: preflights answered before auth, for allowed origins, methods and
//! headers only (tests/browser.rs has Chromium make the requests).

mod support;

use support::apps::node_app;
use support::tls::TestCa;
use support::ws::{Behaviour, RecordingBackend, Seen};
use support::*;

#[tokio::test]
async fn request_rules_reach_the_backend_after_the_forwarding_fields() {
    let node = node_app("node");
    let ws = RecordingBackend::start(Behaviour::Echo).await;
    let rules =
        "request_headers = { set = { \"X-Env\" = \"prod\", \"X-Forwarded-Proto\" = \"https\" }, \
                 add = { \"X-Tag\" = \"gateway\" }, remove = [\"X-Internal\", \"Cookie\"] }";
    let config = format!(
        "[[routes]]\nname = \"app\"\npath = \"/\"\n\
         proxy = {{ backends = [\"{}\"] }}\n\
         websocket = {{ backends = [\"ws://{}\"] }}\n{rules}\n",
        node.url("http"),
        ws.addr
    );
    let server = TestServer::start_in(test_dir(), &config).await;
    let reply = get_with(
        server.addr,
        "/whoami",
        &[
            ("x-internal", "from the client"),
            ("cookie", "sid=1"),
            ("x-tag", "client"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
    let headers = &seen["headers"];
    assert_eq!(headers["x-env"], "prod", "{seen}");
    // Set after wsgate's own field, so the rule wins.
    assert_eq!(headers["x-forwarded-proto"], "https", "{seen}");
    // Node joins repeated fields with ", ": the client's and the rule's.
    assert_eq!(headers["x-tag"], "client, gateway", "{seen}");
    assert!(headers.get("x-internal").is_none(), "{seen}");
    assert!(headers.get("cookie").is_none(), "{seen}");

    // The same rules on the WebSocket handshake the backend gets.
    let mut ws = ws;
    let _client = support::ws::connect(server.addr, "/chat").await;
    let Seen::Handshake(handshake, _) = ws.next().await else {
        panic!("the backend saw no handshake first");
    };
    assert_eq!(handshake["x-env"], "prod");
    assert_eq!(handshake["x-tag"], "gateway");
    assert!(handshake.get("sec-websocket-key").is_some());
}

#[tokio::test]
async fn response_rules_apply_to_backend_answers_and_to_wsgates_own() {
    let node = node_app("node");
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "home\n");
    let rules = "response_headers = { set = { \"X-Frame-Options\" = \"DENY\", \"Content-Type\" = \"text/plain; charset=utf-8\" }, \
                 add = { \"Link\" = \"</app.css>; rel=preload\" }, remove = [\"ETag\"] }";
    let config = format!(
        "[[routes]]\nname = \"api\"\npath = \"/api\"\nproxy = {{ backends = [\"{}\"] }}\n{rules}\n\
         [[routes]]\nname = \"down\"\npath = \"/down\"\nproxy = {{ backends = [\"http://127.0.0.1:1\"] }}\n{rules}\n\
         [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = {{ root = \"public\" }}\n{rules}\n",
        node.url("http")
    );
    let server = TestServer::start_in(dir, &config).await;
    for (path, status) in [
        ("/api/whoami", 200),
        ("/missing.html", 404),
        ("/", 200),
        ("/down", 502),
    ] {
        let reply = get(server.addr, path).await;
        assert_eq!(reply.status, status, "{path}");
        assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8"),
            "{path}"
        );
        assert_eq!(
            reply.header("link"),
            Some("</app.css>; rel=preload"),
            "{path}"
        );
        // The static answer had one, the others never did.
        assert_eq!(reply.header("etag"), None, "{path}");
    }
}

#[tokio::test]
async fn hsts_goes_out_over_tls_only_as_curl_sees_it() {
    let ca = TestCa::new();
    let dir = test_dir();
    ca.leaf(&["localhost"]).write(dir.path(), "site");
    write_file(dir.path(), "ca.pem", &ca.pem);
    write_file(dir.path(), "public/index.html", "home\n");
    let config = "[[listeners]]\nbind = \"127.0.0.1:0\"\ntls = { cert = \"site.pem\", key = \"site-key.pem\" }\n\
                  [[listeners]]\nbind = \"127.0.0.1:0\"\n\
                  [admin]\nbind = \"127.0.0.1:0\"\n\
                  [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n\
                  hsts = \"max-age=63072000; includeSubDomains\"\n";
    let server = TestServer::start_whole(dir, config).await;
    let (tls, plain) = (server.addrs[0], server.addrs[1]);
    let ca_file = server.root().join("ca.pem");
    // Not run() on this thread: the server answers on the same runtime.
    let curl = |url: String| {
        let mut command = tokio::process::Command::new("curl");
        command
            .args(["-sS", "-D", "-", "-o", "/dev/null", "--cacert"])
            .arg(&ca_file)
            .args(["--resolve", &format!("localhost:{}:127.0.0.1", tls.port())])
            .arg(url);
        async move {
            let output = command.output().await.expect("run curl");
            assert!(output.status.success(), "curl: {output:?}");
            String::from_utf8_lossy(&output.stdout).to_lowercase()
        }
    };
    let secure = curl(format!("https://localhost:{}/", tls.port())).await;
    assert!(
        secure.contains("strict-transport-security: max-age=63072000; includesubdomains"),
        "{secure}"
    );
    let insecure = curl(format!("http://127.0.0.1:{}/", plain.port())).await;
    assert!(insecure.starts_with("http/1.1 200"), "{insecure}");
    assert!(
        !insecure.contains("strict-transport-security"),
        "{insecure}"
    );
}

#[tokio::test]
async fn preflights_are_answered_before_auth_and_only_for_what_cors_allows() {
    let dir = test_dir();
    write_file(dir.path(), "data/data.json", "{}\n");
    // alice:wonderland, a line made by Python bcrypt (cost 4).
    write_file(
        dir.path(),
        "users.htpasswd",
        "alice:$2b$04$ZC8e5UN1MWNFzTfWCJzAtOnl2sNwrVKlPyQwrbFnSUEDRXvZHKVwu\n",
    );
    let config = "[[routes]]\nname = \"api\"\npath = \"/api\"\nstatic = { root = \"data\" }\n\
                  auth = { basic = \"users.htpasswd\" }\n\
                  cors = { origins = [\"https://app.example\"], methods = [\"GET\", \"PUT\"], headers = [\"Authorization\"], credentials = true }\n";
    let server = TestServer::start_in(dir, config).await;
    let preflight = |origin: &'static str, method: &'static str| {
        let request = request("OPTIONS", "/api/data.json")
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "authorization")
            .body(http_body_util::Empty::new())
            .expect("request");
        send(server.addr, request)
    };
    // No credentials, yet not a 401: the browser asks before it sends them.
    let allowed = preflight("https://app.example", "PUT").await;
    assert_eq!(allowed.status, 204);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        allowed.header("access-control-allow-methods"),
        Some("GET, PUT")
    );
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    assert!(allowed
        .header("vary")
        .is_some_and(|v| v.starts_with("Origin")));
    for (origin, method) in [
        ("https://evil.example", "GET"),
        ("https://app.example", "DELETE"),
    ] {
        let refused = preflight(origin, method).await;
        assert_eq!(refused.status, 403, "{origin} {method}");
        assert_eq!(refused.header("access-control-allow-origin"), None);
    }
    // The request itself still needs the credentials, and gets CORS fields.
    let anonymous = get_with(
        server.addr,
        "/api/data.json",
        &[("origin", "https://app.example")],
    )
    .await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let alice = get_with(
        server.addr,
        "/api/data.json",
        &[
            ("origin", "https://app.example"),
            ("authorization", "Basic YWxpY2U6d29uZGVybGFuZA=="),
        ],
    )
    .await;
    assert_eq!(alice.status, 200);
    assert_eq!(alice.header("vary"), Some("Origin"));
}
