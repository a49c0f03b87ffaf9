//! Compression on the fly through the real server, checked by decoders
//! nobody here wrote: Python's `brotli` and `zstandard` and zlib's gzip
//! (tests/compression/fetch.py), and curl. Static files are compressed once
//! and served from the cache; a real backend's (Node's `http`,
//! tests/proxy/app.js) responses are compressed as they stream.

mod support;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use support::apps::{node_app, python_venv};
use support::*;

fn python() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compression");
    python_venv(
        "compression-venv",
        &[&dir.join("requirements.txt")],
        "brotli, zstandard",
    )
}

/// What fetch.py saw: `method url` with `accept` as `Accept-Encoding`.
async fn fetch(method: &str, url: &str, accept: &str, range: Option<&str>) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compression/fetch.py");
    let mut command = tokio::process::Command::new(python());
    command.arg(script).args([method, url, accept]);
    if let Some(range) = range {
        command.arg(range);
    }
    let output = command.output().await.expect("python runs");
    assert!(output.status.success(), "fetch.py: {output:?}");
    serde_json::from_slice(&output.stdout).expect("fetch.py prints JSON")
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The text tests/proxy/app.js sends for `/text?size=N`.
fn proxied_text(size: usize) -> Vec<u8> {
    let mut text = String::new();
    let mut line = 0;
    while text.len() < size {
        text.push_str(&format!(
            "{{\"line\":{line},\"text\":\"the proxied text\"}}\n"
        ));
        line += 1;
    }
    text.truncate(size);
    text.into_bytes()
}

fn page_text(size: usize) -> Vec<u8> {
    (0..)
        .flat_map(|i: u32| format!("<p>paragraph {i} of the static page</p>\n").into_bytes())
        .take(size)
        .collect()
}

#[tokio::test]
async fn static_files_are_compressed_once_in_the_coding_the_client_prefers() {
    let dir = test_dir();
    let page = page_text(64 * 1024);
    write_file(dir.path(), "public/page.html", &page);
    write_file(dir.path(), "public/small.txt", "tiny\n");
    write_file(dir.path(), "public/photo.png", &page);
    let config = "[[routes]]\nname = \"site\"\npath = \"/\"\nstatic = { root = \"public\" }\n\
                  compress = { min_size = \"1KiB\" }\n";
    let server = TestServer::start_in(dir, config).await;
    let url = |path: &str| format!("http://{}{path}", server.addr);
    let digest = sha256(&page);
    let mut etags = Vec::new();
    for (accept, coding) in [
        ("gzip, deflate, br, zstd", "br"),
        ("zstd;q=1, br;q=0.9", "zstd"),
        ("gzip", "gzip"),
        ("x-gzip;q=0.5, identity", "gzip"),
    ] {
        let seen = fetch("GET", &url("/page.html"), accept, None).await;
        let headers = &seen["headers"];
        assert_eq!(headers["content-encoding"], coding, "{accept}: {seen}");
        assert_eq!(seen["sha256"], digest.as_str(), "{accept}: {seen}");
        assert!(
            seen["wire"].as_u64() < Some(page.len() as u64 / 5),
            "{seen}"
        );
        // Cached whole, so its length is known.
        assert_eq!(
            headers["content-length"],
            seen["wire"].to_string().as_str(),
            "{seen}"
        );
        assert_eq!(headers["vary"], "Accept-Encoding", "{seen}");
        assert!(headers.get("accept-ranges").is_none(), "{seen}");
        let etag = headers["etag"].as_str().unwrap_or_default().to_owned();
        assert!(etag.starts_with("W/\""), "{seen}");
        etags.push(etag);

        // HEAD says what GET sends.
        let head = fetch("HEAD", &url("/page.html"), accept, None).await;
        for field in [
            "content-encoding",
            "content-length",
            "etag",
            "vary",
            "content-type",
        ] {
            assert_eq!(head["headers"][field], headers[field], "{field}: {head}");
        }
        assert_eq!(head["wire"], 0);
    }
    etags.dedup();
    assert_eq!(etags.len(), 1, "one weak tag for the one file: {etags:?}");

    // No coding accepted, a range, a small file, a type that is compressed
    // already: the plain bytes, still marked as varying where it could.
    let plain = fetch("GET", &url("/page.html"), "", None).await;
    assert!(
        plain["headers"].get("content-encoding").is_none(),
        "{plain}"
    );
    assert_eq!(plain["headers"]["vary"], "Accept-Encoding");
    assert_eq!(plain["headers"]["accept-ranges"], "bytes");
    assert!(!plain["headers"]["etag"]
        .as_str()
        .unwrap_or("W/")
        .starts_with("W/"));
    let range = fetch("GET", &url("/page.html"), "br", Some("bytes=0-99")).await;
    assert_eq!(range["status"], 206, "{range}");
    assert!(
        range["headers"].get("content-encoding").is_none(),
        "{range}"
    );
    assert_eq!(range["sha256"], sha256(&page[..100]).as_str());
    for path in ["/small.txt", "/photo.png"] {
        let seen = fetch("GET", &url(path), "br, gzip", None).await;
        assert!(
            seen["headers"].get("content-encoding").is_none(),
            "{path}: {seen}"
        );
    }

    // curl decodes every coding it asked for.
    for coding in ["br", "zstd", "gzip"] {
        let output = tokio::process::Command::new("curl")
            .args(["-sS", "--compressed", "-H"])
            .arg(format!("Accept-Encoding: {coding}"))
            .args(["-w", "\n%{content_type}"])
            .arg(url("/page.html"))
            .output()
            .await
            .expect("curl runs");
        assert!(output.status.success(), "{output:?}");
        let expected = [&page[..], b"\ntext/html; charset=utf-8"].concat();
        assert!(
            output.stdout == expected,
            "curl with {coding} got {} bytes",
            output.stdout.len()
        );
    }
}

#[tokio::test]
async fn proxied_responses_are_compressed_as_they_stream() {
    let node = node_app("node");
    let config = format!(
        "[[routes]]\nname = \"api\"\npath = \"/\"\nproxy = {{ backends = [\"{}\"] }}\n\
         compress = {{ algorithms = [\"zstd\", \"br\", \"gzip\"], levels = {{ gzip = 1, br = 5 }} }}\n",
        node.url("http")
    );
    let server = TestServer::start_in(test_dir(), &config).await;
    let url = |query: &str| format!("http://{}/text?{query}", server.addr);
    let text = proxied_text(64 * 1024);
    let digest = sha256(&text);
    for (accept, coding) in [
        ("br, zstd", "zstd"),
        ("br", "br"),
        ("gzip;q=0.9, br;q=0.1", "gzip"),
    ] {
        for query in ["size=65536", "size=65536&length=1"] {
            let seen = fetch("GET", &url(query), accept, None).await;
            let headers = &seen["headers"];
            assert_eq!(
                headers["content-encoding"], coding,
                "{query} {accept}: {seen}"
            );
            assert_eq!(seen["sha256"], digest.as_str(), "{seen}");
            assert!(
                seen["wire"].as_u64() < Some(text.len() as u64 / 5),
                "{seen}"
            );
            assert!(headers.get("content-length").is_none(), "{seen}");
            assert_eq!(headers["vary"], "Accept-Encoding", "{seen}");
        }
    }
    // The backend's strong tag is weakened; HEAD matches GET.
    let seen = fetch("GET", &url("size=4096&etag=%22v1%22"), "gzip", None).await;
    assert_eq!(seen["headers"]["etag"], "W/\"v1\"", "{seen}");
    let head = fetch(
        "HEAD",
        &url("size=4096&etag=%22v1%22&length=1"),
        "gzip",
        None,
    )
    .await;
    assert_eq!(head["headers"]["content-encoding"], "gzip", "{head}");
    assert!(head["headers"].get("content-length").is_none(), "{head}");

    // Left alone: no-transform, an encoded body, a small one, another type.
    for (query, why) in [
        ("size=65536&cc=no-transform", "no-transform"),
        ("size=65536&gzip=1", "encoded"),
        ("size=100&length=1", "small"),
        ("size=65536&type=image/png", "type"),
    ] {
        let seen = fetch("GET", &url(query), "br, zstd", None).await;
        let encoding = seen["headers"].get("content-encoding").cloned();
        let expected = (why == "encoded").then(|| serde_json::json!("gzip"));
        assert_eq!(encoding, expected, "{why}: {seen}");
        assert!(seen.get("error").is_none(), "{why}: {seen}");
    }

    // A backend that pauses mid-body: all it sent reaches the client,
    // decodable, before the rest exists; with a large first half the
    // encoder has let some out already and still holds a tail.
    for size in [65_536, 400_000] {
        let text = proxied_text(size);
        for coding in ["br", "zstd", "gzip"] {
            let query = format!("size={size}&pause=1500");
            let seen = fetch("GET", &url(&query), coding, None).await;
            assert_eq!(seen["sha256"], sha256(&text).as_str(), "{coding}");
            let before_the_rest = decoded_within(&seen, 1.0);
            assert!(
                before_the_rest >= size as u64 / 2,
                "{coding}, {size} B: {before_the_rest} B decoded in the first second: {}",
                seen["progress"]
            );
        }
    }
}

/// How many bytes the wire fetch.py had within `seconds` of asking decodes
/// to. Not what its decoder fed piece by piece had let out: Python's brotli
/// may hold back the end of a block until more input comes (seen: 196,608
/// of 200,000 bytes from wire that decodes whole at once).
fn decoded_within(seen: &serde_json::Value, seconds: f64) -> u64 {
    seen["progress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|step| step[0].as_f64().is_some_and(|t| t < seconds))
        .filter_map(|step| step[3].as_u64())
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn encoders_in_use_are_capped_and_heads_say_what_gets_would_get() {
    let node = node_app("node");
    let dir = test_dir();
    let page = page_text(4096);
    write_file(dir.path(), "errors/5xx.html", &page);
    let config = format!(
        "[server]\nmax_compressed_streams = 1\n\
         [error_pages]\n\"5xx\" = \"errors/5xx.html\"\n\
         [[routes]]\nname = \"api\"\npath = \"/\"\nproxy = {{ backends = [\"{}\"] }}\n\
         compress = {{ algorithms = [\"gzip\"] }}\n\
         [[routes]]\nname = \"down\"\npath = \"/down\"\n\
         proxy = {{ backends = [\"http://127.0.0.1:1\"] }}\ncompress = {{}}\n",
        node.url("http")
    );
    let server = TestServer::start_in(dir, &config).await;
    let url = |path: &str| format!("http://{}{path}", server.addr);

    // One response holds the only encoder while its body streams (its head
    // is here, its backend pauses for 30 s); another meanwhile goes
    // uncompressed, and once the first client leaves, one is compressed again.
    let held = open(
        server.addr,
        request("GET", "/text?size=65536&pause=30000")
            .header("accept-encoding", "gzip")
            .body(Default::default())
            .expect("request"),
    )
    .await;
    assert_eq!(held.headers()["content-encoding"], "gzip");
    let meanwhile = fetch("GET", &url("/text?size=65536"), "gzip", None).await;
    assert!(
        meanwhile["headers"].get("content-encoding").is_none(),
        "{meanwhile}"
    );
    assert_eq!(meanwhile["headers"]["vary"], "Accept-Encoding");
    assert_eq!(meanwhile["sha256"], sha256(&proxied_text(65536)).as_str());
    // The client goes away: its encoder's place is given back.
    drop(held);
    eventually(std::time::Duration::from_secs(10), || async {
        let after = fetch("GET", &url("/text?size=65536"), "gzip", None).await;
        (after["headers"]["content-encoding"] == "gzip").then_some(())
    })
    .await;

    // wsgate's own 502 with the operator's page: compressed for GET, and
    // HEAD says the same, without the length of the plain page.
    let get = fetch("GET", &url("/down"), "br", None).await;
    assert_eq!(get["status"], 502, "{get}");
    assert_eq!(get["headers"]["content-encoding"], "br", "{get}");
    assert_eq!(get["sha256"], sha256(&page).as_str());
    let head = fetch("HEAD", &url("/down"), "br", None).await;
    assert_eq!(head["headers"]["content-encoding"], "br", "{head}");
    assert!(head["headers"].get("content-length").is_none(), "{head}");
    // A short answer of wsgate's own (400, 16 bytes) is below min_size,
    // though it says its length only by its body.
    let small = fetch("GET", &url("/%2e%2e/x"), "br", None).await;
    assert_eq!(small["status"], 400, "{small}");
    assert!(
        small["headers"].get("content-encoding").is_none(),
        "{small}"
    );
}
