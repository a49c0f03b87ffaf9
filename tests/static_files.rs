//! Static files through the real server: headers, prefixes, directories,
//! conditional and range requests, precompressed variants, traversal, the
//! cache noticing changes, and bounded memory for large files.

mod support;

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use support::*;

const SITE: &str = "[[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\", cache_control = \"public, max-age=300\" }\n";

async fn site() -> TestServer {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "<h1>home</h1>");
    write_file(dir.path(), "public/app.js", "console.log(1)");
    write_file(
        dir.path(),
        "public/data.bin",
        (0..=255u8).cycle().take(1000).collect::<Vec<u8>>(),
    );
    write_file(dir.path(), "public/sub/index.html", "sub index");
    write_file(dir.path(), "public/empty-dir/.keep", "");
    TestServer::start_in(dir, SITE).await
}

#[tokio::test]
async fn serves_a_file_with_its_headers() {
    let server = site().await;
    let reply = get(server.addr, "/app.js").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "console.log(1)");
    assert_eq!(
        reply.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(reply.header("content-length"), Some("14"));
    assert_eq!(reply.header("accept-ranges"), Some("bytes"));
    assert_eq!(reply.header("cache-control"), Some("public, max-age=300"));
    assert!(reply.header("date").is_some());
    let etag = reply.header("etag").expect("etag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong etag: {etag}"
    );
    let modified = reply.header("last-modified").expect("last-modified");
    assert!(httpdate::parse_http_date(modified).is_ok());
    let binary = get(server.addr, "/data.bin").await;
    assert_eq!(
        binary.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(binary.body.len(), 1000);
}

#[tokio::test]
async fn head_has_headers_and_no_body() {
    let server = site().await;
    let reply = send(
        server.addr,
        request("HEAD", "/data.bin")
            .body(Empty::new())
            .expect("request"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-length"), Some("1000"));
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn other_methods_get_405_with_allow() {
    let server = site().await;
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let reply = send(
            server.addr,
            request(method, "/app.js")
                .body(Empty::new())
                .expect("request"),
        )
        .await;
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    }
}

#[tokio::test]
async fn directories_serve_their_index_and_redirect_without_slash() {
    let server = site().await;
    assert_eq!(get(server.addr, "/").await.text(), "<h1>home</h1>");
    assert_eq!(get(server.addr, "/sub/").await.text(), "sub index");
    let redirect = get(server.addr, "/sub?x=1").await;
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.header("location"), Some("/sub/?x=1"));
    assert_eq!(
        get(server.addr, "/empty-dir/").await.status,
        404,
        "no listings"
    );
    assert_eq!(get(server.addr, "/missing.html").await.status, 404);
}

#[tokio::test]
async fn directory_redirects_never_point_to_another_site() {
    let server = site().await;
    for (raw_path, location) in [
        ("//evil.example/../sub", "/sub/"),
        ("/sub/./", ""),
        ("/a%20b/../sub", "/sub/"),
    ] {
        let request = format!("GET {raw_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let response = raw(server.addr, request.as_bytes()).await;
        if location.is_empty() {
            assert_eq!(raw_status(&response), 200, "{raw_path}");
        } else {
            assert_eq!(raw_status(&response), 301, "{raw_path}");
            assert!(
                response.contains(&format!("location: {location}\r\n")),
                "{raw_path}: {response}"
            );
        }
    }
}

#[tokio::test]
async fn the_route_prefix_is_removed_before_lookup() {
    let dir = test_dir();
    write_file(dir.path(), "site/docs/a.html", "doc a");
    write_file(dir.path(), "site/docs/index.html", "docs index");
    write_file(dir.path(), "root/index.html", "root");
    let config =
        "[[routes]]\nname = \"docs\"\npath = \"/docs\"\nstatic = { root = \"site/docs\" }\n\
                  [[routes]]\nname = \"root\"\npath = \"/\"\nstatic = { root = \"root\" }\n";
    let server = TestServer::start_in(dir, config).await;
    assert_eq!(get(server.addr, "/docs/a.html").await.text(), "doc a");
    assert_eq!(get(server.addr, "/docs/").await.text(), "docs index");
    let redirect = get(server.addr, "/docs").await;
    assert_eq!(
        (redirect.status.as_u16(), redirect.header("location")),
        (301, Some("/docs/"))
    );
    assert_eq!(
        get(server.addr, "/docs-old/a.html").await.status,
        404,
        "not a segment boundary"
    );
    assert_eq!(get(server.addr, "/").await.text(), "root");
}

#[tokio::test]
async fn conditional_requests() {
    let server = site().await;
    let first = get(server.addr, "/app.js").await;
    let etag = first.header("etag").expect("etag").to_owned();
    let modified = first
        .header("last-modified")
        .expect("last-modified")
        .to_owned();

    for tags in [
        etag.clone(),
        format!("\"nope\", {etag}"),
        format!("W/{etag}"),
        "*".to_owned(),
    ] {
        let reply = get_with(server.addr, "/app.js", &[("if-none-match", &tags)]).await;
        assert_eq!(reply.status, 304, "If-None-Match: {tags}");
        assert!(reply.body.is_empty());
        assert_eq!(reply.header("etag"), Some(etag.as_str()));
        assert_eq!(reply.header("cache-control"), Some("public, max-age=300"));
    }
    let reply = get_with(server.addr, "/app.js", &[("if-modified-since", &modified)]).await;
    assert_eq!(reply.status, 304);
    // If-None-Match takes precedence over If-Modified-Since.
    let reply = get_with(
        server.addr,
        "/app.js",
        &[
            ("if-none-match", "\"other\""),
            ("if-modified-since", &modified),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    let old = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(1));
    assert_eq!(
        get_with(server.addr, "/app.js", &[("if-modified-since", &old)])
            .await
            .status,
        200
    );
    assert_eq!(
        get_with(server.addr, "/app.js", &[("if-match", "\"other\"")])
            .await
            .status,
        412
    );
}

#[tokio::test]
async fn ranges() {
    let server = site().await;
    let all: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let reply = get_with(server.addr, "/data.bin", &[("range", "bytes=10-19")]).await;
    assert_eq!(reply.status, 206);
    assert_eq!(reply.header("content-range"), Some("bytes 10-19/1000"));
    assert_eq!(reply.header("content-length"), Some("10"));
    assert_eq!(&reply.body[..], &all[10..20]);

    let suffix = get_with(server.addr, "/data.bin", &[("range", "bytes=-100")]).await;
    assert_eq!(suffix.header("content-range"), Some("bytes 900-999/1000"));
    assert_eq!(&suffix.body[..], &all[900..]);

    let open = get_with(server.addr, "/data.bin", &[("range", "bytes=990-")]).await;
    assert_eq!(open.header("content-range"), Some("bytes 990-999/1000"));
    assert_eq!(&open.body[..], &all[990..]);

    let unsatisfiable = get_with(server.addr, "/data.bin", &[("range", "bytes=1000-")]).await;
    assert_eq!(unsatisfiable.status, 416);
    assert_eq!(unsatisfiable.header("content-range"), Some("bytes */1000"));

    let multiple = get_with(server.addr, "/data.bin", &[("range", "bytes=0-1,5-6")]).await;
    assert_eq!((multiple.status.as_u16(), multiple.body.len()), (200, 1000));

    let etag = open.header("etag").expect("etag").to_owned();
    let current = get_with(
        server.addr,
        "/data.bin",
        &[("range", "bytes=0-0"), ("if-range", &etag)],
    )
    .await;
    assert_eq!(current.status, 206);
    let stale = get_with(
        server.addr,
        "/data.bin",
        &[("range", "bytes=0-0"), ("if-range", "\"stale\"")],
    )
    .await;
    assert_eq!((stale.status.as_u16(), stale.body.len()), (200, 1000));
}

#[tokio::test]
async fn precompressed_variants_follow_accept_encoding() {
    let dir = test_dir();
    write_file(dir.path(), "public/app.js", "plain");
    write_file(dir.path(), "public/app.js.br", "brotli bytes");
    write_file(dir.path(), "public/app.js.gz", "gzip bytes");
    write_file(dir.path(), "public/only-gz.css", "plain css");
    write_file(dir.path(), "public/only-gz.css.gz", "gz css");
    write_file(dir.path(), "public/plain.txt", "no variants");
    let config = "[[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\", precompressed = true }\n";
    let server = TestServer::start_in(dir, config).await;

    // A direct request for a variant file first: its cached entry must not
    // leak into the negotiated responses (nor the other way round).
    let direct = get(server.addr, "/app.js.br").await;
    assert_eq!(direct.text(), "brotli bytes");
    assert_eq!(direct.header("content-encoding"), None);
    assert_ne!(
        direct.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );

    let cases: [(&str, &str, &str, Option<&str>); 8] = [
        ("/app.js", "gzip, deflate, br", "brotli bytes", Some("br")),
        ("/app.js", "gzip;q=1, br;q=0.5", "gzip bytes", Some("gzip")),
        ("/app.js", "br;q=0, gzip", "gzip bytes", Some("gzip")),
        ("/app.js", "identity", "plain", None),
        ("/app.js", "*", "brotli bytes", Some("br")),
        ("/app.js", "*;q=0", "plain", None),
        ("/only-gz.css", "br, gzip", "gz css", Some("gzip")),
        ("/plain.txt", "br, gzip", "no variants", None),
    ];
    let mut etags = Vec::new();
    for (path, accept, body, coding) in cases {
        let reply = get_with(server.addr, path, &[("accept-encoding", accept)]).await;
        assert_eq!(reply.text(), body, "{path} with {accept}");
        assert_eq!(
            reply.header("content-encoding"),
            coding,
            "{path} with {accept}"
        );
        assert_eq!(reply.header("vary"), Some("Accept-Encoding"));
        if path == "/app.js" {
            assert_eq!(
                reply.header("content-type"),
                Some("text/javascript; charset=utf-8")
            );
            etags.push((coding, reply.header("etag").expect("etag").to_owned()));
        }
    }
    let no_header = get(server.addr, "/app.js").await;
    assert_eq!(
        (no_header.text().as_str(), no_header.header("vary")),
        ("plain", Some("Accept-Encoding"))
    );
    let br = etags.iter().find(|(c, _)| *c == Some("br")).map(|(_, e)| e);
    let gz = etags
        .iter()
        .find(|(c, _)| *c == Some("gzip"))
        .map(|(_, e)| e);
    let plain = etags.iter().find(|(c, _)| c.is_none()).map(|(_, e)| e);
    assert!(
        br != gz && gz != plain && br != plain,
        "each variant has its own ETag: {etags:?}"
    );
}

#[tokio::test]
async fn traversal_never_reaches_outside_the_root() {
    let dir = test_dir();
    write_file(dir.path(), "secret.txt", "TOP-SECRET");
    write_file(dir.path(), "outside/passwd", "TOP-SECRET too");
    write_file(dir.path(), "public/index.html", "home");
    write_file(dir.path(), "public/sub/file.txt", "inside");
    std::os::unix::fs::symlink(dir.path().join("outside"), dir.path().join("public/escape"))
        .expect("symlink");
    std::os::unix::fs::symlink(
        dir.path().join("secret.txt"),
        dir.path().join("public/escape-file"),
    )
    .expect("symlink");
    std::os::unix::fs::symlink(
        dir.path().join("public/sub/file.txt"),
        dir.path().join("public/alias.txt"),
    )
    .expect("symlink");
    let config = "[[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n";
    let server = TestServer::start_in(dir, config).await;

    let corpus = [
        "/../secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/.%2e/secret.txt",
        "/%2e./secret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "/%5c..%5csecret.txt",
        "/sub/../../secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/sub/..%2f..%2fsecret.txt",
        "/./../secret.txt",
        "//../secret.txt",
        "/%252e%252e/secret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/..%00/secret.txt",
        "/index.html%00.txt",
        "/secret.txt%00",
        "/....//secret.txt",
        "/..;/secret.txt",
        "/.../secret.txt",
        "/escape/passwd",
        "/escape-file",
        "/escape/../../secret.txt",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/sub/./.././../secret.txt",
    ];
    for path in corpus {
        let response = raw(
            server.addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        let status = raw_status(&response);
        assert!(matches!(status, 400 | 404), "{path} got {status}");
        assert!(
            !response.contains("TOP-SECRET"),
            "{path} leaked a file from outside the root"
        );
    }
    // Symlinks that stay inside the root are followed.
    assert_eq!(get(server.addr, "/alias.txt").await.text(), "inside");
    // Dot segments that stay inside the root are resolved, not refused.
    assert_eq!(
        get(server.addr, "/sub/../sub/file.txt").await.text(),
        "inside"
    );
}

#[tokio::test]
async fn the_cache_notices_a_changed_file() {
    let server = site().await;
    assert_eq!(get(server.addr, "/app.js").await.text(), "console.log(1)");
    let first_etag = get(server.addr, "/app.js")
        .await
        .header("etag")
        .map(str::to_owned);
    write_file(server.root(), "public/app.js", "console.log('changed')");
    let reply = eventually(Duration::from_secs(5), || async {
        let reply = get(server.addr, "/app.js").await;
        (reply.text() == "console.log('changed')").then_some(reply)
    })
    .await;
    assert_ne!(reply.header("etag").map(str::to_owned), first_etag);
    std::fs::remove_file(server.root().join("public/app.js")).expect("remove");
    eventually(Duration::from_secs(5), || async {
        (get(server.addr, "/app.js").await.status == 404).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_large_file_streams_with_bounded_memory() {
    const SIZE: u64 = 100_000_000;
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "");
    let big = std::fs::File::create(dir.path().join("public/big.bin")).expect("create");
    big.set_len(SIZE).expect("a sparse 100 MB file");
    let server = TestServer::start_in(
        dir,
        "[[routes]]\nname = \"s\"\npath = \"/\"\nstatic = { root = \"public\" }\n",
    )
    .await;

    let response = open(
        server.addr,
        request("GET", "/big.bin")
            .body(Empty::new())
            .expect("request"),
    )
    .await;
    assert_eq!(
        response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some("100000000")
    );
    let before = rss_bytes();
    let mut peak = before;
    let mut received = 0u64;
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body frame");
        if let Some(data) = frame.data_ref() {
            received += data.len() as u64;
        }
        peak = peak.max(rss_bytes());
    }
    assert_eq!(received, SIZE);
    let growth = peak.saturating_sub(before);
    assert!(
        growth < 16 * 1024 * 1024,
        "RSS grew by {growth} bytes while streaming 100 MB"
    );
}

#[tokio::test]
async fn dotfiles_are_hidden_unless_the_route_says_otherwise() {
    let dir = test_dir();
    write_file(dir.path(), "public/.env", "SECRET=1");
    write_file(dir.path(), "public/.git/config", "[core]");
    write_file(
        dir.path(),
        "public/.well-known/security.txt",
        "Contact: ops",
    );
    write_file(dir.path(), "public/db.bak", "dump");
    write_file(dir.path(), "shown/.env", "SHOWN=1");
    write_file(dir.path(), "shown/db.bak", "dump");
    let config = "[[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n\
                  [[routes]]\nname = \"shown\"\npath = \"/shown\"\nstatic = { root = \"shown\", hide = [\"*.bak\"] }\n";
    let server = TestServer::start_in(dir, config).await;
    for path in ["/.env", "/.git/config", "/%2Eenv"] {
        assert_eq!(get(server.addr, path).await.status, 404, "{path}");
    }
    let well_known = get(server.addr, "/.well-known/security.txt").await;
    assert_eq!(
        (well_known.status.as_u16(), well_known.text().as_str()),
        (200, "Contact: ops")
    );
    assert_eq!(get(server.addr, "/db.bak").await.status, 200);
    // A route's own list replaces the default.
    assert_eq!(get(server.addr, "/shown/.env").await.text(), "SHOWN=1");
    assert_eq!(get(server.addr, "/shown/db.bak").await.status, 404);
}

#[tokio::test]
async fn names_too_long_and_symlink_loops_get_404_and_403_not_500() {
    let dir = test_dir();
    write_file(dir.path(), "public/index.html", "home");
    let public = dir.path().join("public");
    std::os::unix::fs::symlink(public.join("loop-b"), public.join("loop-a")).expect("symlink");
    std::os::unix::fs::symlink(public.join("loop-a"), public.join("loop-b")).expect("symlink");
    let config = "[[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n";
    let server = TestServer::start_in(dir, config).await;
    let long = format!("/{}", "a".repeat(300));
    assert_eq!(get(server.addr, &long).await.status, 404);
    assert_eq!(get(server.addr, &format!("{long}/x")).await.status, 404);
    assert_eq!(get(server.addr, "/loop-a").await.status, 403);
    let scrape = support::metrics::scrape(server.admin).await;
    let errors = scrape
        .get(
            "wsgate_http_requests_total",
            &[("route", "site"), ("code", "500")],
        )
        .unwrap_or(0.0);
    assert_eq!(errors, 0.0, "nothing a client sends is the server's fault");
}
