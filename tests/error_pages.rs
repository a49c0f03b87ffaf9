//! Error pages through the real server: wsgate's own 404, 401, 502 and 504
//! answered with the operator's files (route pages before global ones), a
//! real backend's (Node's `http`, tests/proxy/app.js) errors kept unless the
//! route intercepts them, HEAD consistent with GET, and curl's view of it.

mod support;

use support::apps::node_app;
use support::*;

const NOT_FOUND: &str = "<h1>Not here</h1>\n";
const DOWN: &str = "<h1>Back soon</h1>\n";
const API_ERROR: &str = "{\"error\":\"not found\"}\n";

fn site(dir: &std::path::Path) {
    write_file(dir, "public/index.html", "home\n");
    write_file(dir, "errors/404.html", NOT_FOUND);
    write_file(dir, "errors/5xx.html", DOWN);
    write_file(dir, "errors/api-404.json", API_ERROR);
    // alice:secret, bcrypt cost 4.
    write_file(
        dir,
        "users.htpasswd",
        "alice:$2y$04$hNOhKCp0Bu/rdCQJxQf.w.KTNwC9wTR6UdE.Q1ZljTNr5Fh7ZSEnm\n",
    );
}

#[tokio::test]
async fn wsgates_own_errors_get_the_pages_backends_keep_theirs() {
    let node = node_app("node");
    let dir = test_dir();
    site(dir.path());
    let config = format!(
        "[error_pages]\n404 = \"errors/404.html\"\n\"5xx\" = \"errors/5xx.html\"\n\
         [[routes]]\nname = \"api\"\npath = \"/api\"\n\
         proxy = {{ backends = [\"{0}\"], strip_prefix = true, response_timeout = \"1s\" }}\n\
         error_pages = {{ 404 = \"errors/api-404.json\" }}\n\
         [[routes]]\nname = \"intercepted\"\npath = \"/intercepted\"\n\
         proxy = {{ backends = [\"{0}\"], strip_prefix = true }}\n\
         intercept_backend_errors = true\n\
         [[routes]]\nname = \"down\"\npath = \"/down\"\n\
         proxy = {{ backends = [\"http://127.0.0.1:1\"] }}\n\
         [[routes]]\nname = \"staff\"\npath = \"/staff\"\nstatic = {{ root = \"public\" }}\n\
         auth = {{ basic = \"users.htpasswd\" }}\nerror_pages = {{ \"4xx\" = \"errors/404.html\" }}\n\
         [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = {{ root = \"public\" }}\n",
        node.url("http")
    );
    let server = TestServer::start_in(dir, &config).await;

    // A missing file: the global page, with its type, never cached.
    let reply = get(server.addr, "/nothing.html").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.text(), NOT_FOUND);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));

    // The backend is down, or too slow: the 5xx page with 502 and 504.
    let reply = get(server.addr, "/down/x").await;
    assert_eq!((reply.status.as_u16(), reply.text().as_str()), (502, DOWN));
    let reply = get(server.addr, "/api/slow?ms=3000").await;
    assert_eq!((reply.status.as_u16(), reply.text().as_str()), (504, DOWN));

    // The backend's own 404 is its business; the route's page is for wsgate's.
    let reply = get(server.addr, "/api/status?code=404").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.text(), "");
    // Unless the route intercepts: then the global pages cover it.
    let reply = get(server.addr, "/intercepted/status?code=503").await;
    assert_eq!((reply.status.as_u16(), reply.text().as_str()), (503, DOWN));
    let reply = get(server.addr, "/intercepted/whoami").await;
    assert_eq!(reply.status, 200);

    // A route's page before the global one; the challenge stays.
    let reply = get(server.addr, "/staff/").await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.text(), NOT_FOUND);
    assert!(reply
        .header("www-authenticate")
        .is_some_and(|challenge| challenge.starts_with("Basic")));
}

#[tokio::test]
async fn head_matches_get_and_curl_sees_the_page() {
    let dir = test_dir();
    site(dir.path());
    let config = "[error_pages]\n404 = \"errors/404.html\"\n\"4xx\" = \"errors/5xx.html\"\n\
                  [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n";
    let server = TestServer::start_in(dir, config).await;
    let head = send(
        server.addr,
        request("HEAD", "/missing")
            .body(Default::default())
            .expect("request"),
    )
    .await;
    assert_eq!(head.status, 404);
    assert!(head.body.is_empty());
    let length = NOT_FOUND.len().to_string();
    assert_eq!(head.header("content-length"), Some(length.as_str()));
    assert_eq!(
        head.header("content-type"),
        Some("text/html; charset=utf-8")
    );

    // A 416 keeps the size it tells range clients.
    let range = send(
        server.addr,
        request("GET", "/index.html")
            .header("range", "bytes=100-")
            .body(Default::default())
            .expect("request"),
    )
    .await;
    assert_eq!(range.status, 416);
    assert_eq!(range.header("content-range"), Some("bytes */5"));
    assert_eq!(range.text(), DOWN);

    let output = tokio::process::Command::new("curl")
        .args(["-sS", "-w", "%{http_code} %{content_type}"])
        .arg(format!("http://{}/missing", server.addr))
        .output()
        .await
        .expect("curl runs");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{NOT_FOUND}404 text/html; charset=utf-8")
    );
}
