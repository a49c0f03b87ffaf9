//! Redirects, rewrites and `trailing_slash` through the real server: the
//! `Location`s clients get for encoded paths and query strings, what a real
//! backend (Node's `http`, tests/proxy/app.js) and the static files see
//! after a rewrite, and curl following a redirect to the end.

mod support;

use support::apps::node_app;
use support::*;

#[tokio::test]
async fn redirects_keep_the_encoded_path_and_query() {
    let config = "[[routes]]\nname = \"moved\"\nhost = \"old.example\"\npath = \"/\"\n\
                  redirect = { to = \"https://new.example$uri\", status = 301 }\n\
                  [[routes]]\nname = \"port\"\nhost = \"old.example\"\npath = \"/api\"\n\
                  redirect = { to = \"https://$host:8443/v2$path?via=old&$query\", status = 308 }\n\
                  [[routes]]\nname = \"here\"\npath = \"/\"\n\
                  redirect = { to = \"/$path\" }\n";
    let server = TestServer::start_in(test_dir(), config).await;
    let ask = |path: &'static str, host: &'static str| {
        let request = http::Request::builder()
            .uri(path)
            .header("host", host)
            .body(Default::default())
            .expect("request");
        send(server.addr, request)
    };
    let reply = ask("/a%20b/%C3%BC/./x?q=1&r=%2F", "old.example").await;
    assert_eq!(reply.status, 301);
    assert_eq!(
        reply.header("location"),
        Some("https://new.example/a%20b/%C3%BC/x?q=1&r=%2F")
    );
    assert_eq!(reply.header("content-length"), Some("0"));

    let reply = ask("/api/users?id=7", "old.example:80").await;
    assert_eq!(reply.status, 308);
    assert_eq!(
        reply.header("location"),
        Some("https://old.example:8443/v2/api/users?via=old&id=7")
    );

    // The default status is temporary. A path that looks like another site
    // (`//evil.example/x`, normalised to `/evil.example/x`) stays on this one.
    let reply = ask("//evil.example/x", "localhost").await;
    assert_eq!(reply.status, 302);
    assert_eq!(reply.header("location"), Some("/evil.example/x"));
}

#[tokio::test]
async fn rewrites_reach_the_backend_and_the_files() {
    let node = node_app("node");
    let dir = test_dir();
    write_file(dir.path(), "public/v2/page.html", "the new page\n");
    write_file(dir.path(), "secret.txt", "outside the root\n");
    let config = format!(
        "[[routes]]\nname = \"api\"\npath = \"/old\"\n\
         proxy = {{ backends = [\"{}\"] }}\n\
         rewrite = {{ from = \"^/old/(?P<rest>.*)$\", to = \"/new/${{rest}}\" }}\n\
         [[routes]]\nname = \"stripped\"\npath = \"/api\"\n\
         proxy = {{ backends = [\"{}\"], strip_prefix = true }}\n\
         rewrite = {{ from = \"^/api/v1/(.*)$\", to = \"/api/v2/$1\" }}\n\
         [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = {{ root = \"public\" }}\n\
         rewrite = {{ from = \"^/pages/([a-z]+)$\", to = \"/v2/$1.html\" }}\n\
         [[routes]]\nname = \"climb\"\npath = \"/up\"\nstatic = {{ root = \"public\" }}\n\
         rewrite = {{ from = \"^/up/(.*)$\", to = \"/../$1\" }}\n",
        node.url("http"),
        node.url("http")
    );
    let server = TestServer::start_in(dir, &config).await;
    let seen = |reply: Reply| -> serde_json::Value {
        assert_eq!(reply.status, 200, "{}", reply.text());
        serde_json::from_slice(&reply.body).expect("JSON")
    };
    // Decoded for the pattern, encoded again for the backend, query untouched.
    let reply = get(server.addr, "/old/a%20b/%25?q=a%26b&x=1").await;
    assert_eq!(seen(reply)["url"], "/new/a%20b/%25?q=a%26b&x=1");
    // A rewritten path under the prefix still loses it with strip_prefix.
    let reply = get(server.addr, "/api/v1/users?page=2").await;
    assert_eq!(seen(reply)["url"], "/v2/users?page=2");
    // No match: the path goes on as it came.
    let reply = get(server.addr, "/api/v3/users").await;
    assert_eq!(seen(reply)["url"], "/v3/users");

    let reply = get(server.addr, "/pages/page").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "the new page\n");
    // Captures cannot carry a request out of the pattern's shape.
    assert_eq!(get(server.addr, "/pages/page.html").await.status, 404);
    // A rewrite that climbs above the root is refused, never resolved outside.
    assert_eq!(get(server.addr, "/up/secret.txt").await.status, 400);
}

#[tokio::test]
async fn trailing_slashes_are_added_or_removed_with_the_query_kept() {
    let node = node_app("node");
    let config = format!(
        "[[routes]]\nname = \"add\"\npath = \"/docs\"\n\
         proxy = {{ backends = [\"{0}\"] }}\ntrailing_slash = \"add\"\n\
         [[routes]]\nname = \"remove\"\npath = \"/api\"\n\
         proxy = {{ backends = [\"{0}\"] }}\ntrailing_slash = \"remove\"\n",
        node.url("http")
    );
    let server = TestServer::start_in(test_dir(), &config).await;
    let reply = get(server.addr, "/docs/guide?v=2").await;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("location"), Some("/docs/guide/?v=2"));
    // A file name keeps its spelling; the canonical form goes through.
    assert_eq!(get(server.addr, "/docs/app.js").await.status, 200);
    assert_eq!(get(server.addr, "/docs/guide/").await.status, 200);

    let reply = get(server.addr, "/api/users/").await;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("location"), Some("/api/users"));
    assert_eq!(get(server.addr, "/api/users").await.status, 200);
}

#[tokio::test]
async fn curl_follows_a_redirect_to_the_file() {
    let dir = test_dir();
    write_file(dir.path(), "public/docs/index.html", "the docs\n");
    let config = "[[routes]]\nname = \"old\"\npath = \"/manual\"\n\
                  redirect = { to = \"/docs$uri\", status = 301 }\n\
                  [[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n\
                  rewrite = { from = \"^/docs/manual$\", to = \"/docs/\" }\n";
    let server = TestServer::start_in(dir, config).await;
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "-L", "-w", "%{num_redirects} %{url_effective}"])
        .arg(format!("http://{}/manual", server.addr))
        .output()
        .await
        .expect("curl runs");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        text,
        format!("the docs\n1 http://{}/docs/manual", server.addr)
    );
}

#[tokio::test]
async fn websocket_handshakes_are_redirected_only_where_the_route_has_no_websocket() {
    let ws = support::ws::RecordingBackend::start(support::ws::Behaviour::Echo).await;
    let dir = test_dir();
    write_file(dir.path(), "public/manual/guide/index.html", "the guide\n");
    let config = format!(
        "[[routes]]\nname = \"moved\"\npath = \"/old-chat\"\n\
         redirect = {{ to = \"/chat?$query\", status = 308 }}\n\
         [[routes]]\nname = \"chat\"\npath = \"/chat\"\n\
         websocket = {{ backends = [\"ws://{}\"] }}\ntrailing_slash = \"add\"\n\
         [[routes]]\nname = \"docs\"\npath = \"/docs\"\nstatic = {{ root = \"public\" }}\n\
         rewrite = {{ from = \"^/docs(.*)$\", to = \"/manual$1\" }}\n",
        ws.addr
    );
    let server = TestServer::start_in(dir, &config).await;
    let upgrade = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    // A client that follows redirects finds the route that moved.
    let answer = raw_head(server.addr, &upgrade("/old-chat/room?x=1")).await;
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    assert!(answer.contains("location: /chat?x=1\r\n"), "{answer}");
    // trailing_slash leaves handshakes alone: browsers would not follow it.
    let _client = support::ws::connect(server.addr, "/chat/room").await;
    // A directory found through a rewrite is sent to its `/` form as the
    // client spelt it, so the next request meets the same rewrite.
    let reply = get(server.addr, "/docs/guide?v=1").await;
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location"), Some("/docs/guide/?v=1"));
    let reply = get(server.addr, "/docs/guide/").await;
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (200, "the guide\n")
    );
}

/// Sends `request` and returns the response head, without waiting for the
/// server to close.
async fn raw_head(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head)
        .to_lowercase()
        .replacen("http/1.1", "HTTP/1.1", 1)
}
