//! Each message `validate` can give, pinned.

use super::*;
use crate::config::parse;

/// Validates `text` with `base` as the config's directory; returns the messages.
fn errors_in(text: &str, base: &Path) -> Vec<String> {
    let (raw, mut errors) = parse(text);
    match validate(raw, base) {
        Ok((_, warnings)) => errors.extend(warnings),
        Err(more) => errors.extend(more),
    }
    errors.iter().map(|d| d.error.to_string()).collect()
}

fn with_site(routes: &str) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("public")).expect("mkdir");
    std::fs::write(dir.path().join("file.txt"), "x").expect("write");
    let text = format!("[[listeners]]\nbind = \"127.0.0.1:8080\"\n\n{routes}");
    let errors = errors_in(&text, dir.path());
    (dir, errors)
}

fn single_error(routes: &str) -> String {
    let (_dir, errors) = with_site(routes);
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors[0].clone()
}

const SITE: &str = "static = { root = \"public\" }";

#[test]
fn a_good_config_has_no_errors() {
    let (_dir, errors) = with_site(&format!(
        "[admin]\nbind = \"127.0.0.1:9191\"\n[server]\nheader_read_timeout = \"5s\"\n\
         [[routes]]\nname = \"site\"\nhost = \"*.example.com\"\npath = \"/docs/\"\n{SITE}\n"
    ));
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn unknown_keys_are_named() {
    let message = single_error(&format!(
        "[[routes]]\nname = \"a\"\npath = \"/\"\nrot = 1\n{SITE}\n"
    ));
    assert!(
        message.starts_with("unknown field `rot`, expected one of"),
        "{message}"
    );
}

#[test]
fn bad_socket_address() {
    let text = "[[listeners]]\nbind = \"8080\"\n";
    assert_eq!(
        errors_in(text, Path::new(".")),
        ["`8080` is not a socket address; write IP:PORT, e.g. \"0.0.0.0:8080\" or \"[::]:8080\""]
    );
}

#[test]
fn two_listeners_on_one_address() {
    let text = "[[listeners]]\nbind = \"127.0.0.1:80\"\n[[listeners]]\nbind = \"127.0.0.1:80\"\n";
    assert_eq!(
        errors_in(text, Path::new(".")),
        ["address 127.0.0.1:80 is bound twice; each listener needs its own address"]
    );
}

#[test]
fn admin_on_a_public_address() {
    let text = "[[listeners]]\nbind = \"127.0.0.1:80\"\n[admin]\nbind = \"127.0.0.1:80\"\n";
    assert_eq!(
        errors_in(text, Path::new(".")),
        ["admin address 127.0.0.1:80 is also a public listener; health and metrics must not be served to clients"]
    );
}

#[test]
fn no_listeners() {
    assert_eq!(
        errors_in("", Path::new(".")),
        ["no listeners: add at least one [[listeners]] with bind = \"0.0.0.0:8080\""]
    );
}

#[test]
fn duplicate_route_names() {
    let message = single_error(&format!(
        "[[routes]]\nname = \"a\"\npath = \"/x\"\n{SITE}\n[[routes]]\nname = \"a\"\npath = \"/y\"\n{SITE}\n"
    ));
    assert_eq!(
        message,
        "route name `a` is used by another route; names must be unique because they label metrics"
    );
}

#[test]
fn same_host_and_path() {
    let message = single_error(&format!(
        "[[routes]]\nname = \"a\"\npath = \"/x\"\n{SITE}\n[[routes]]\nname = \"b\"\npath = \"/x/\"\n{SITE}\n"
    ));
    assert_eq!(
        message,
        "route `b` has the same host and path as route `a`; one of them could never match"
    );
}

#[test]
fn path_must_be_absolute_and_normal() {
    let message = single_error(&format!("[[routes]]\nname = \"a\"\npath = \"x\"\n{SITE}\n"));
    assert_eq!(message, "path must start with '/'");
    let message = single_error(&format!(
        "[[routes]]\nname = \"a\"\npath = \"/a/../b\"\n{SITE}\n"
    ));
    assert_eq!(
        message,
        "path `/a/../b` is not in normal form; write it as `/b`"
    );
}

#[test]
fn static_root_must_be_an_existing_directory() {
    let message =
        single_error("[[routes]]\nname = \"a\"\npath = \"/\"\nstatic = { root = \"nope\" }\n");
    assert!(
        message.starts_with("static root `nope` does not exist (looked for "),
        "{message}"
    );
    let message =
        single_error("[[routes]]\nname = \"a\"\npath = \"/\"\nstatic = { root = \"file.txt\" }\n");
    assert!(
        message.starts_with("static root `file.txt` is not a directory ("),
        "{message}"
    );
}

#[test]
fn websocket_backends_are_checked() {
    let message =
        single_error("[[routes]]\nname = \"a\"\npath = \"/\"\nwebsocket = { backends = [] }\n");
    assert_eq!(message, "a websocket action needs at least one backend");
    let message = single_error(
        "[[routes]]\nname = \"a\"\npath = \"/\"\nwebsocket = { backends = [\"http://a:1\"] }\n",
    );
    assert_eq!(message, "backend `http://a:1` must use ws:// or wss://");
    let message = single_error("[[routes]]\nname = \"a\"\npath = \"/\"\nwebsocket = { backends = [\"ws://a:1\"], ping_interval = \"soon\" }\n");
    assert_eq!(
        message,
        "`soon` is not a duration; write a whole number and a unit: ms, s, m or h (e.g. \"30s\")"
    );
    let message = single_error(
        "[[routes]]\nname = \"a\"\npath = \"/\"\nwebsocket = { backend = [\"ws://a:1\"] }\n",
    );
    assert!(message.starts_with("unknown field `backend`"), "{message}");
}

#[test]
fn a_route_needs_an_action() {
    let message = single_error("[[routes]]\nname = \"a\"\npath = \"/\"\n");
    assert_eq!(
        message,
        "route `a` has no action; add `static = { root = \"public\" }`, `proxy = { backends = [\"http://127.0.0.1:3000\"] }`, `redirect = { to = \"https://example.com$uri\" }` or `websocket = { backends = [\"ws://127.0.0.1:9001\"] }`"
    );
}

#[test]
fn proxy_pools_are_checked() {
    let route = |action: &str| format!("[[routes]]\nname = \"a\"\npath = \"/\"\n{action}\n");
    let cases = [
        ("proxy = { backends = [] }", "a proxy action needs at least one backend"),
        (
            "proxy = { backends = [\"ws://a:1\"] }",
            "backend `ws://a:1` must use http:// or https://",
        ),
        (
            "proxy = { backends = [\"http://a:1\"], balance = \"random\" }",
            "`random` is not a balance; write \"round_robin\", \"least_connections\" or \"hash\"",
        ),
        (
            "proxy = { backends = [\"http://a:1\"], balance = \"hash\", hash_key = \"cookie\" }",
            "`cookie` is not a hash key; write \"cookie:NAME\", \"header:NAME\" or \"client_ip\"",
        ),
        (
            "proxy = { backends = [\"http://a:1\"], hash_key = \"client_ip\" }",
            "hash_key only applies with balance = \"hash\"",
        ),
        (
            "proxy = { backends = [\"http://a:1\"], retries = -1 }",
            "retries must be 0 or more",
        ),
        (
            "proxy = { backends = [\"http://a:1\"], response_timeout = \"0s\" }",
            "response_timeout must be longer than zero",
        ),
        (
            "websocket = { backends = [\"ws://a:1\"], health_check = { path = \"healthz\" } }",
            "health check path `healthz` must start with '/'",
        ),
        (
            "websocket = { backends = [\"ws://a:1\"], health_check = { path = \"/h\", interval = \"0ms\" } }",
            "interval must be longer than zero",
        ),
        (
            "proxy = { backends = [\"http://a:1\"], health_check = { path = \"/h\", unhealthy_after = 0 } }",
            "unhealthy_after must be at least 1",
        ),
        (
            "proxy = { backends = [\"http://a:1\"], health_check = { path = \"/h\", every = \"1s\" } }",
            "unknown field `every`",
        ),
        (
            "proxy = { backends = [\"http://a:1\"] }\nstatic = { root = \"public\" }",
            "route `a` has both `static` and `proxy`; plain requests can go to only one of them",
        ),
    ];
    for (action, expected) in cases {
        let message = single_error(&route(action));
        assert!(message.starts_with(expected), "{action}: {message}");
    }
    let good = route(
        "proxy = { backends = [\"http://a:1\", \"https://b\"], balance = \"hash\", hash_key = \"header:x-user\", retries = 0, preserve_host = false, http2 = true, health_check = { path = \"/healthz?full=1\", interval = \"1s\", timeout = \"500ms\", unhealthy_after = 3, healthy_after = 1 } }\nwebsocket = { backends = [\"ws://a:1\"], balance = \"least_connections\", over_http2 = false }",
    );
    assert_eq!(with_site(&good).1, Vec::<String>::new());
}

#[test]
fn http2_is_for_proxy_pools_and_websockets_name_the_client_side() {
    // WebSocket backends are reached over HTTP/1.1; the key that exists
    // is about clients, and the message names it.
    let message = single_error(
        "[[routes]]\nname = \"a\"\npath = \"/\"\nwebsocket = { backends = [\"ws://a:1\"], http2 = true }\n",
    );
    assert!(message.starts_with("unknown field `http2`"), "{message}");
    assert!(message.contains("over_http2"), "{message}");
    let message = single_error(
        "[[routes]]\nname = \"a\"\npath = \"/\"\nwebsocket = { backends = [\"ws://a:1\"], over_http2 = \"no\" }\n",
    );
    assert!(message.contains("expected a boolean"), "{message}");
}

#[test]
fn trusted_proxies_must_be_networks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.1/8\", \"::1\"]\n[[listeners]]\nbind = \"127.0.0.1:8080\"\n[[routes]]\nname = \"a\"\npath = \"/\"\nproxy = { backends = [\"http://a:1\"] }\n";
    assert_eq!(
        errors_in(text, dir.path()),
        ["`10.0.0.1/8` is not an address or network; write e.g. \"10.0.0.0/8\" or \"192.0.2.7\""]
    );
}

#[test]
fn bad_host_duration_size_index_and_header() {
    let message = single_error(&format!(
        "[[routes]]\nname = \"a\"\nhost = \"a b\"\npath = \"/\"\n{SITE}\n"
    ));
    assert_eq!(message, "`a b` is not a host name; write an exact name (\"chat.example.com\") or a wildcard (\"*.example.com\")");
    let message = single_error("[server]\nshutdown_timeout = \"30\"\n");
    assert_eq!(
        message,
        "`30` is not a duration; write a whole number and a unit: ms, s, m or h (e.g. \"30s\")"
    );
    let message = single_error(&format!(
        "[server]\nshutdown_timeout = \"5s\"\ndrain_spread = \"10s\"\n\
         [[routes]]\nname = \"a\"\npath = \"/\"\n{SITE}\n"
    ));
    assert_eq!(message, "shutdown_delay (0ns) plus drain_spread (10s) must fit in shutdown_timeout (5s), or sessions are cut before their close is sent");
    let message = single_error("[server]\nfile_cache_size = \"lots\"\n");
    assert_eq!(message, "`lots` is not a size; write a whole number and a unit: B, KiB, MiB or GiB (e.g. \"64KiB\")");
    let message = single_error("[server]\nmax_connections = 0\n");
    assert_eq!(message, "max_connections must be at least 1");
    let message = single_error("[server]\nmax_connections = 9223372036854775807\n");
    assert_eq!(message, "max_connections must be at most 16777216");
    let message = single_error("[server]\nmax_request_head = \"1KiB\"\n");
    assert_eq!(message, "max_request_head must be at least 8KiB");
    let message = single_error(
        "[[routes]]\nname = \"a\"\npath = \"/\"\nstatic = { root = \"public\", index = \"a/b\" }\n",
    );
    assert_eq!(
        message,
        "index `a/b` must be a plain file name, without '/'"
    );
    let message = single_error("[[routes]]\nname = \"a\"\npath = \"/\"\nstatic = { root = \"public\", cache_control = \"a\\nb\" }\n");
    assert_eq!(message, "cache_control `a\nb` is not a valid header value");
}

/// A self-signed certificate for `names`, valid until January of `until_year`.
fn write_cert(dir: &Path, stem: &str, names: &[&str], until_year: i32) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(names).expect("params");
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(until_year, 1, 1);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-sign");
    std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).expect("write cert");
    std::fs::write(dir.join(format!("{stem}-key.pem")), key.serialize_pem()).expect("write key");
}

/// Messages for a config with one TLS listener carrying `tls`, in a
/// directory holding certificates `a` (a.example.com), `b` (b.example.com),
/// `ab` (both names) and `old` (expired).
fn tls_messages(listeners: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    write_cert(dir.path(), "a", &["a.example.com"], 4000);
    write_cert(dir.path(), "b", &["b.example.com"], 4000);
    write_cert(dir.path(), "ab", &["a.example.com", "b.example.com"], 4000);
    write_cert(dir.path(), "old", &["old.example.com"], 2020);
    errors_in(listeners, dir.path())
}

fn tls_listener(tls: &str) -> String {
    format!("[[listeners]]\nbind = \"127.0.0.1:8443\"\ntls = {tls}\n")
}

#[test]
fn certificate_files_are_read_and_must_hold_what_they_claim() {
    let pair = |cert: &str, key: &str| {
        tls_messages(&tls_listener(&format!(
            "{{ cert = \"{cert}\", key = \"{key}\" }}"
        )))
    };
    assert!(pair("a.pem", "a-key.pem").is_empty());
    let missing = pair("nope.pem", "a-key.pem");
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(
        missing[0].starts_with("cannot read certificate file `nope.pem` (")
            && missing[0].contains("No such file"),
        "{missing:?}"
    );
    assert_eq!(
        pair("a-key.pem", "a-key.pem"),
        ["`a-key.pem` holds no PEM certificate (expected a -----BEGIN CERTIFICATE----- block)"]
    );
    assert_eq!(
        pair("a.pem", "a.pem"),
        ["`a.pem` holds no private key (expected PKCS#8 `PRIVATE KEY`, SEC1 `EC PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`)"]
    );
    assert_eq!(
        pair("a.pem", "b-key.pem"),
        ["key `b-key.pem` does not belong to certificate `a.pem`"]
    );
}

#[test]
fn an_expired_certificate_is_a_warning() {
    let messages = tls_messages(&tls_listener(
        "{ cert = \"old.pem\", key = \"old-key.pem\" }",
    ));
    assert_eq!(
        messages,
        ["certificate `old.pem` expired on Wed, 01 Jan 2020 00:00:00 GMT; clients will refuse it"]
    );
    let dir = tempfile::tempdir().expect("tempdir");
    write_cert(dir.path(), "old", &["old.example.com"], 2020);
    let (raw, _) = parse(&tls_listener(
        "{ cert = \"old.pem\", key = \"old-key.pem\" }",
    ));
    let (_, warnings) = validate(raw, dir.path()).expect("an expired certificate still loads");
    assert_eq!(warnings[0].severity, Severity::Warning);
}

#[test]
fn certificate_names_must_not_overlap_on_a_listener() {
    let messages = tls_messages(&tls_listener(
        "{ certificates = [ { cert = \"a.pem\", key = \"a-key.pem\" }, { cert = \"ab.pem\", key = \"ab-key.pem\" } ] }",
    ));
    assert_eq!(
        messages,
        ["certificate `ab.pem` covers `a.example.com`, which `a.pem` already covers on this listener; SNI could not tell them apart"]
    );
    let other_listener = format!(
        "{}[[listeners]]\nbind = \"127.0.0.1:9443\"\ntls = {{ cert = \"ab.pem\", key = \"ab-key.pem\" }}\n",
        tls_listener("{ cert = \"a.pem\", key = \"a-key.pem\" }")
    );
    assert_eq!(
        tls_messages(&other_listener),
        ["certificate `ab.pem` covers `a.example.com`, which listener 127.0.0.1:8443 serves with `a.pem`; clients would see a different certificate on each port"]
    );
}

#[test]
fn tls_tables_need_one_complete_form() {
    assert_eq!(
        tls_messages(&tls_listener("{ cert = \"a.pem\" }")),
        ["`cert` needs its `key` next to it"]
    );
    assert_eq!(
        tls_messages(&tls_listener("{ certificates = [] }")),
        ["tls needs a certificate: write `tls = { cert = \"site.pem\", key = \"site-key.pem\" }` or `tls = { certificates = [{ cert = \"a.pem\", key = \"a-key.pem\" }] }`"]
    );
    assert_eq!(
        tls_messages(&tls_listener(
            "{ cert = \"a.pem\", key = \"a-key.pem\", certificates = [{ cert = \"b.pem\", key = \"b-key.pem\" }] }"
        )),
        ["write either `cert` and `key`, or `certificates = [...]`, not both"]
    );
    assert_eq!(
        tls_messages(&format!(
            "{}redirect_https = true\n",
            tls_listener("{ cert = \"a.pem\", key = \"a-key.pem\" }")
        )),
        ["redirect_https is for plaintext listeners; this listener already terminates TLS"]
    );
    assert_eq!(
        tls_messages("[[listeners]]\nbind = \"127.0.0.1:80\"\nhttps_port = 443\n"),
        ["https_port only applies with redirect_https = true"]
    );
    assert_eq!(
        tls_messages(
            "[[listeners]]\nbind = \"127.0.0.1:80\"\nredirect_https = true\nhttps_port = 70000\n"
        ),
        ["https_port must be between 1 and 65535"]
    );
}

#[test]
fn backend_ca_is_read_and_checked() {
    let message = single_error(
        "[[routes]]\nname = \"a\"\npath = \"/\"\nwebsocket = { backends = [\"wss://a:1\"], backend_ca = \"file.txt\" }\n",
    );
    assert_eq!(
        message,
        "`file.txt` holds no PEM certificate (expected a -----BEGIN CERTIFICATE----- block)"
    );
    let (_dir, messages) = with_site(
        "[[routes]]\nname = \"a\"\npath = \"/\"\nwebsocket = { backends = [\"ws://a:1\"], backend_ca = \"missing.pem\" }\n",
    );
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages
        .contains(&"backend_ca is set but no backend uses TLS (wss:// or https://)".to_owned()));
}

#[test]
fn values_that_would_break_the_service_are_refused() {
    let ws = |keys: &str| {
        format!("[[routes]]\nname = \"a\"\npath = \"/\"\nwebsocket = {{ backends = [\"ws://a:1\"]{keys} }}\n")
    };
    let cases = [
        (
            "[server]\nheader_read_timeout = \"0s\"\n".to_owned(),
            "header_read_timeout must be longer than zero",
        ),
        (ws(", ping_timeout = \"0s\""), "ping_timeout must be longer than zero"),
        (ws(", max_message_size = \"0B\""), "max_message_size must be larger than zero"),
        (
            ws(", origins = [\"chat.example.com\"]"),
            "origin `chat.example.com` can never match a browser's Origin header, which is scheme://host[:port] with no path; write e.g. \"https://chat.example.com\"",
        ),
        (
            ws(", origins = [\"https://chat.example.com/\"]"),
            "origin `https://chat.example.com/` can never match",
        ),
        (
            "[[routes]]\nname = \"a\"\npath = \"/\"\nwebsocket = { backends = [\"ws://u:p@a:1\"] }\n".to_owned(),
            "backend `ws://u:p@a:1` must not carry a user name or password: wsgate does not send them, and the URL labels metrics and shows in /config",
        ),
    ];
    for (text, expected) in cases {
        let message = single_error(&text);
        assert!(message.starts_with(expected), "{text}: {message}");
    }
    let twice = "[[routes]]\nname = \"a\"\npath = \"/\"\nproxy = { backends = [\"http://a:1\", \"http://a:1\"] }\n";
    assert_eq!(
        single_error(twice),
        "backend `http://a:1` is listed twice in this pool; list each backend once"
    );
    let good = ws(", origins = [\"https://chat.example.com\", \"http://localhost:8080\", \"*\"]");
    assert_eq!(with_site(&good).1, Vec::<String>::new());
    assert_eq!(
        tls_messages(&tls_listener(
            "{ cert = \"a.pem\", key = \"a-key.pem\", handshake_timeout = \"0s\" }"
        )),
        ["handshake_timeout must be longer than zero"]
    );
}

#[test]
fn trusting_every_address_is_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "trusted_proxies = [\"0.0.0.0/0\"]\n[[listeners]]\nbind = \"127.0.0.1:8080\"\n[[routes]]\nname = \"a\"\npath = \"/\"\nproxy = { backends = [\"http://a:1\"] }\n";
    let (raw, _) = parse(text);
    let (_, warnings) = validate(raw, dir.path()).expect("a warning does not stop the config");
    assert_eq!(
        warnings.iter().map(|d| d.error.to_string()).collect::<Vec<_>>(),
        ["trusted_proxies `0.0.0.0/0` trusts every address, so any client can claim another's address in X-Forwarded-For; list your load balancers' networks instead"]
    );
}

/// A WebSocket route with `keys` added to its `websocket = { ... }`.
fn websocket_with(keys: &str) -> String {
    format!(
        "[[routes]]\nname = \"chat\"\npath = \"/chat\"\nwebsocket = {{ backends = [\"ws://127.0.0.1:9001\"]{keys} }}\n"
    )
}

#[test]
fn limits_validate_and_compile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "trusted_proxies = [\"10.0.0.0/8\"]\n[[listeners]]\nbind = \"127.0.0.1:8080\"\n\
         proxy_protocol = true\nrequest_rate = \"100/s\"\n\
         [server]\nmax_connections_per_client = 50\nclient_ipv6_prefix = 56\n\
         {}",
        websocket_with(
            ", handshake_rate = \"2/s\", handshake_burst = 5, max_sessions_per_client = 3, \
             client_message_rate = \"100/m\", client_byte_rate = \"1MiB/s\", client_byte_burst = \"64KiB\", \
             rate_exceeded = \"close\", rate_exceeded_grace = \"5s\", \
             max_session_duration = \"4h\", max_session_duration_code = 4000"
        )
    );
    let (raw, errors) = parse(&text);
    assert!(errors.is_empty(), "{errors:?}");
    let (model, warnings) = validate(raw, dir.path()).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let listener = &model.listeners[0];
    assert!(listener.proxy_protocol);
    assert_eq!(
        listener.request_rate.map(|r| (r.amount, r.burst)),
        Some((100, 100))
    );
    assert_eq!(model.limits.max_connections_per_client, Some(50));
    assert_eq!(model.limits.client_ipv6_prefix, 56);
    let ws = model.routes[0].websocket.as_ref().expect("websocket");
    assert_eq!(ws.handshake_rate.map(|r| r.burst), Some(5));
    assert_eq!(ws.max_sessions_per_client, Some(3));
    let limits = ws.policy.limits;
    let messages = limits.client_message_rate.expect("message rate");
    assert_eq!(
        (messages.amount, messages.per),
        (100, Duration::from_secs(60))
    );
    let bytes = limits.client_byte_rate.expect("byte rate");
    assert_eq!((bytes.amount, bytes.burst), (1 << 20, 64 << 10));
    assert_eq!(
        limits.rate_exceeded,
        crate::model::RateExceeded::Close {
            grace: Duration::from_secs(5)
        }
    );
    assert_eq!(limits.max_duration, Some(Duration::from_secs(4 * 3600)));
    assert_eq!(limits.max_duration_code, 4000);
}

#[test]
fn nonsensical_limits_are_refused_with_a_way_out() {
    let cases = [
        (", handshake_rate = \"fast\"", "`fast` is not a rate; write a whole number per s, m or h (e.g. \"20/s\")"),
        (", handshake_rate = \"0/s\"", "handshake_rate must allow at least 1 per period; leave it out for no limit"),
        (", handshake_burst = 3", "handshake_burst only applies with handshake_rate"),
        (", client_byte_rate = \"1 lot/s\"", "`1 lot/s` is not a byte rate; write a size per s, m or h (e.g. \"1MiB/s\")"),
        (", max_sessions_per_client = 0", "max_sessions_per_client must be at least 1"),
        (", rate_exceeded = \"close\"", "rate_exceeded needs client_message_rate or client_byte_rate"),
        (", client_message_rate = \"5/s\", rate_exceeded = \"drop\"", "rate_exceeded must be \"slow\" (stop reading until the rate allows more) or \"close\" (close with 1008 after rate_exceeded_grace), not `drop`"),
        (", client_message_rate = \"5/s\", rate_exceeded_grace = \"1s\"", "rate_exceeded_grace only applies with rate_exceeded = \"close\""),
        (", max_session_duration = \"1h\", max_session_duration_code = 1006", "max_session_duration_code must be 1000, 1001 or between 4000 and 4999; RFC 6455 reserves the others"),
        (", max_session_duration_code = 4000", "max_session_duration_code only applies with max_session_duration"),
        (", max_session_duration = \"0s\"", "max_session_duration must be longer than zero"),
    ];
    for (keys, expected) in cases {
        assert_eq!(single_error(&websocket_with(keys)), expected, "{keys}");
    }
}

#[test]
fn proxy_protocol_needs_its_senders_listed() {
    let text = "[[listeners]]\nbind = \"127.0.0.1:8080\"\nproxy_protocol = true\n";
    assert_eq!(
        errors_in(text, Path::new(".")),
        ["proxy_protocol needs `trusted_proxies` to list the load balancers that send the header; a header from any other address is refused"]
    );
    let text = "[[listeners]]\nbind = \"127.0.0.1:8080\"\n[server]\nclient_ipv6_prefix = 129\n";
    assert_eq!(
        errors_in(text, Path::new(".")),
        ["client_ipv6_prefix must be between 0 and 128 (64 counts each /64 network as one client)"]
    );
}

#[test]
fn jwt_auth_is_checked_with_its_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("public")).expect("mkdir");
    std::fs::write(
        dir.path().join("jwks.json"),
        r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ", "kid": "h"}]}"#,
    )
    .expect("write");
    let route = |auth: &str| {
        format!("[[listeners]]\nbind = \"127.0.0.1:8080\"\n[[routes]]\nname = \"a\"\npath = \"/\"\n{SITE}\nauth = {{ jwt = {{ {auth} }} }}\n")
    };
    let good = route("keys = \"jwks.json\", algorithms = [\"HS256\"], token_from = [\"cookie:s\", \"query:t\"], claims_to_headers = { sub = \"X-User\" }");
    assert!(
        errors_in(&good, dir.path()).is_empty(),
        "{:?}",
        errors_in(&good, dir.path())
    );
    let cases = [
        ("keys = \"jwks.json\", algorithms = [\"HS1024\"]", "`HS1024` is not an algorithm; use HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"),
        ("keys = \"jwks.json\", algorithms = []", "no algorithms: list the ones tokens are signed with, e.g. algorithms = [\"RS256\"]"),
        ("keys = \"jwks.json\", algorithms = [\"RS256\"]", "no key in the file serves the listed algorithms"),
        ("keys = \"missing.json\", algorithms = [\"HS256\"]", "JWT keys `missing.json` cannot be read: No such file or directory (os error 2)"),
        ("keys = \"jwks.json\", algorithms = [\"HS256\"], token_from = [\"protocol\"]", "token_from `protocol` must be \"header:NAME\", \"cookie:NAME\", \"query:NAME\" or \"subprotocol\""),
        ("keys = \"jwks.json\", algorithms = [\"HS256\"], expired_close_code = 1000", "expired_close_code must be 1008 or between 4000 and 4999"),
        ("keys = \"jwks.json\", algorithms = [\"HS256\"], claims_to_headers = { sub = \"bad header\" }", "`bad header` is not a header name; write letters, digits and dashes, e.g. \"X-Frame-Options\""),
    ];
    for (auth, expected) in cases {
        assert_eq!(errors_in(&route(auth), dir.path()), [expected], "{auth}");
    }
}

#[test]
fn header_rules_name_what_is_wrong() {
    let route = |rules: &str| format!("[[routes]]\nname = \"a\"\npath = \"/\"\n{SITE}\n{rules}\n");
    let cases = [
        (
            "response_headers = { set = { \"Bad Name\" = \"x\" } }",
            "`Bad Name` is not a header name",
        ),
        (
            "request_headers = { remove = [\"Connection\"] }",
            "`Connection` is wsgate's to manage",
        ),
        (
            "request_headers = { add = { \"Sec-WebSocket-Key\" = \"x\" } }",
            "`Sec-WebSocket-Key` is wsgate's to manage",
        ),
        (
            "response_headers = { set = { \"X-A\" = \"one\\ntwo\" } }",
            "the value for `x-a` has a line break",
        ),
        (
            "response_headers = { replace = {} }",
            "unknown field `replace`",
        ),
        (
            "hsts = \"max-age=soon\"",
            "`max-age=soon` is not an HSTS policy",
        ),
        (
            "hsts = \"includeSubDomains\"",
            "`includeSubDomains` is not an HSTS policy",
        ),
        (
            "hsts = \"max-age=1; max-age=2\"",
            "`max-age=1; max-age=2` is not an HSTS policy",
        ),
    ];
    for (rules, expected) in cases {
        let message = single_error(&route(rules));
        assert!(message.starts_with(expected), "{rules}: {message}");
    }
    let good = route(
        "hsts = \"max-age=63072000; includeSubDomains; preload\"\n\
         request_headers = { set = { Host = \"app.internal\" }, remove = [\"X-Debug\"] }\n\
         response_headers = { set = { \"Content-Security-Policy\" = \"default-src 'self'\" }, add = { Link = \"</a.css>; rel=preload\" } }",
    );
    assert_eq!(with_site(&good).1, Vec::<String>::new());
}

#[test]
fn cors_is_checked() {
    let route =
        |cors: &str| format!("[[routes]]\nname = \"a\"\npath = \"/\"\n{SITE}\ncors = {cors}\n");
    let cases = [
        ("{ origins = [] }", "cors needs at least one origin"),
        ("{ origins = [\"app.example\"] }", "origin `app.example`"),
        (
            "{ origins = [\"*\"], credentials = true }",
            "`*` allows any origin",
        ),
        (
            "{ origins = [\"*\", \"https://a.example\"] }",
            "`*` allows any origin",
        ),
        (
            "{ origins = [\"https://a.example\"], methods = [\"GE T\"] }",
            "`GE T` is not an HTTP method",
        ),
        (
            "{ origins = [\"https://a.example\"], headers = [\"x y\"] }",
            "`x y` is not a header name",
        ),
        (
            "{ origins = [\"https://a.example\"], max_age = \"soon\" }",
            "`soon` is not a duration",
        ),
    ];
    for (cors, expected) in cases {
        let message = single_error(&route(cors));
        assert!(message.starts_with(expected), "{cors}: {message}");
    }
    let good = route(
        "{ origins = [\"https://app.example.com\"], methods = [\"GET\", \"PUT\"], headers = [\"Content-Type\"], expose = [\"X-Request-Id\"], max_age = \"10m\", credentials = true }",
    );
    assert_eq!(with_site(&good).1, Vec::<String>::new());
}

#[test]
fn redirects_and_rewrites_are_checked() {
    let route = |keys: &str| format!("[[routes]]\nname = \"a\"\npath = \"/\"\n{keys}\n");
    let cases = [
        (
            "redirect = { to = \"https://b.example$uri\", status = 200 }",
            "redirect status must be 301, 302, 303, 307 or 308",
        ),
        (
            "redirect = { to = \"b.example$uri\" }",
            "a redirect target starts with `/` (this site), `$uri`, `$path`, `https://` or `http://`",
        ),
        (
            "redirect = { to = \"//b.example$uri\" }",
            "a redirect target starts with `/`",
        ),
        (
            "redirect = { to = \"https://b.example/$1\" }",
            "`$1` is not a variable here",
        ),
        (
            "redirect = { to = \"https://$query.example/\" }",
            "the host of a redirect target must be written out or be `$host`",
        ),
        (
            "redirect = { to = \"/b\" }\nstatic = { root = \"public\" }",
            "route `a` has both `static` and `redirect`",
        ),
        (
            "rewrite = { from = \"^/(a\", to = \"/b\" }\nstatic = { root = \"public\" }",
            "rewrite pattern is refused: regex parse error",
        ),
        (
            "rewrite = { from = \"^/a/(.*)$\", to = \"/b?x=$1\" }\nstatic = { root = \"public\" }",
            "a rewrite makes a path",
        ),
        (
            "rewrite = { from = \"^/a$\", to = \"b\" }\nstatic = { root = \"public\" }",
            "a rewrite makes a path",
        ),
        (
            "rewrite = { from = \"^/a/(.*)$\", to = \"/b/$1_old\" }\nstatic = { root = \"public\" }",
            "`$1_old` names no group of the pattern",
        ),
        (
            "redirect = { to = \"https://$path\" }",
            "the host of a redirect target must be written out or be `$host`; `$path` there",
        ),
        (
            "redirect = { to = \"/a b\" }",
            "a redirect target is visible ASCII",
        ),
        (
            "rewrite = { from = \"(a{1000}){1000}\", to = \"/\" }\nstatic = { root = \"public\" }",
            "rewrite pattern is refused: Compiled regex exceeds size limit",
        ),
        (
            "trailing_slash = \"always\"\nstatic = { root = \"public\" }",
            "trailing_slash must be \"add\"",
        ),
        (
            "trailing_slash = \"remove\"\nstatic = { root = \"public\" }",
            "trailing_slash = \"remove\" would loop with `static`",
        ),
        (
            "rewrite = { from = \"^/a$\", to = \"/b\" }",
            "route `a` has no action",
        ),
    ];
    for (keys, expected) in cases {
        let message = single_error(&route(keys));
        assert!(message.starts_with(expected), "{keys}: {message}");
    }
    let good = route(
        "redirect = { to = \"https://$host:8443$uri\", status = 308 }\n\
         rewrite = { from = \"^/old/(?P<rest>.*)$\", to = \"/new/${rest}\" }\n\
         trailing_slash = \"remove\"",
    );
    assert_eq!(with_site(&good).1, Vec::<String>::new());
}

#[test]
fn error_pages_are_checked() {
    let route = |pages: &str| {
        format!("[[routes]]\nname = \"a\"\npath = \"/\"\n{SITE}\nerror_pages = {pages}\n")
    };
    let cases = [
        ("{ 200 = \"file.txt\" }", "`200` is not an error status"),
        ("{ \"3xx\" = \"file.txt\" }", "`3xx` is not an error status"),
        (
            "{ 404 = \"missing.html\" }",
            "error page `missing.html` cannot be read: No such file",
        ),
        (
            "{ 404 = \"public\" }",
            "error page `public` cannot be read: Is a directory",
        ),
        (
            "{ 404 = \"big.html\" }",
            "error page `big.html` is 1048577 bytes",
        ),
    ];
    for (pages, expected) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("public")).expect("mkdir");
        std::fs::write(dir.path().join("big.html"), vec![b'x'; (1 << 20) + 1]).expect("write");
        let text = format!("[[listeners]]\nbind = \"127.0.0.1:8080\"\n{}", route(pages));
        let errors = errors_in(&text, dir.path());
        assert_eq!(errors.len(), 1, "{pages}: {errors:?}");
        assert!(errors[0].starts_with(expected), "{pages}: {}", errors[0]);
    }
    let (_dir, errors) = with_site(&format!(
        "[error_pages]\n\"5xx\" = \"nope.html\"\n{}",
        route("{ 404 = \"file.txt\", \"4xx\" = \"file.txt\" }")
    ));
    assert_eq!(
        errors,
        ["error page `nope.html` cannot be read: No such file or directory (os error 2)"]
    );
}

#[test]
fn compress_is_checked() {
    let route = |compress: &str| {
        format!("[[routes]]\nname = \"a\"\npath = \"/\"\n{SITE}\ncompress = {compress}\n")
    };
    let cases = [
        (
            "{ algorithms = [\"deflate\"] }",
            "`deflate` is not a compression algorithm",
        ),
        ("{ algorithms = [\"br\", \"br\"] }", "`br` is listed twice"),
        (
            "{ algorithms = [] }",
            "compress needs at least one algorithm",
        ),
        (
            "{ levels = { br = 12 } }",
            "br levels run from 0 to 11, not 12",
        ),
        (
            "{ levels = { gzip = 0 } }",
            "gzip levels run from 1 to 9, not 0",
        ),
        (
            "{ levels = { lz4 = 1 } }",
            "`lz4` is not a compression algorithm",
        ),
        ("{ min_size = \"big\" }", "`big` is not a size"),
        (
            "{ types = [\"json\"] }",
            "`json` is not a media type pattern",
        ),
        ("{ types = [\"*/*\"] }", "`*/*` is not a media type pattern"),
        ("{ level = 3 }", "unknown field `level`"),
        (
            "{ algorithms = [\"gzip\"], levels = { br = 5 } }",
            "levels names `br`, which `algorithms` leaves out",
        ),
        ("{ types = [] }", "types is empty"),
        ("{ levels = { br = 11 } }", "br level 11 on the fly costs"),
    ];
    for (compress, expected) in cases {
        let message = single_error(&route(compress));
        assert!(message.starts_with(expected), "{compress}: {message}");
    }
    let good = route(
        "{ algorithms = [\"zstd\", \"gzip\"], min_size = \"1KiB\", types = [\"text/*\", \"application/*+json\", \"application/json\"], levels = { zstd = 9, gzip = 1 } }",
    );
    assert_eq!(with_site(&good).1, Vec::<String>::new());
    assert_eq!(with_site(&route("{}")).1, Vec::<String>::new());
}

#[test]
fn ticket_key_files_are_read_and_checked() {
    let keys = |file: &str| {
        tls_messages(&tls_listener(&format!(
            "{{ cert = \"a.pem\", key = \"a-key.pem\", ticket_keys = \"{file}\" }}"
        )))
    };
    let missing = keys("nope.key");
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(
        missing[0].starts_with("ticket key file `nope.key` cannot be read: No such file"),
        "{missing:?}"
    );
    assert_eq!(
        tls_messages(&tls_listener(
            "{ cert = \"a.pem\", key = \"a-key.pem\", client_auth = { ca = \"a.pem\" }, ticket_keys = \"a.pem\" }"
        )),
        ["ticket_keys cannot go with client_auth: a resumed session keeps its first client certificate unchecked, so sharing tickets would let a certificate through that this listener's CA or CRLs refuse; listeners with client_auth keep tickets to themselves"]
    );
    // The certificate itself is no ticket key: its first line is not base64 of 48 bytes.
    assert_eq!(
        keys("a.pem"),
        ["ticket key file `a.pem`: line 1 is not a ticket key: each line is 48 random bytes in base64, as `openssl rand -base64 48` writes them"]
    );
}

#[test]
fn acme_blocks_are_checked() {
    // On port 443, where the CA connects for tls-alpn-01, the default.
    let on_443 = |tls: &str| tls_listener(tls).replace(":8443", ":443");
    let acme = |block: &str| tls_messages(&on_443(&format!("{{ acme = {{ {block} }} }}")));
    let good = "domains = [\"Shop.example.com\", \"www.shop.example.com\"], email = \"ops@example.com\", state = \"acme\"";
    assert_eq!(acme(good), Vec::<String>::new());
    // With certificates for other names on the same listener.
    assert_eq!(
        tls_messages(&on_443(&format!(
            "{{ cert = \"a.pem\", key = \"a-key.pem\", acme = {{ {good} }} }}"
        ))),
        Vec::<String>::new()
    );
    let cases = [
        ("domains = [], state = \"acme\"", "acme needs at least one name in `domains`"),
        ("domains = [\"*.example.com\"], state = \"acme\"", "`*.example.com`: wildcard certificates need the DNS-01 challenge, which wsgate does not answer; list the names, or give a wildcard certificate with `cert` and `key`"),
        ("domains = [\"a b.example.com\"], state = \"acme\"", "`a b.example.com` is not a DNS name wsgate can order a certificate for; write e.g. \"example.com\""),
        ("domains = [\"192.0.2.7\"], state = \"acme\"", "`192.0.2.7` is not a DNS name wsgate can order a certificate for; write e.g. \"example.com\""),
        ("domains = [\"x.example.com\", \"X.example.com\"], state = \"acme\"", "`x.example.com` is listed twice in `domains`"),
        ("domains = [\"x.example.com\"], state = \"acme\", directory = \"http://ca.example/dir\"", "directory `http://ca.example/dir` must be an https:// URL, e.g. \"https://acme-v02.api.letsencrypt.org/directory\""),
        ("domains = [\"x.example.com\"], state = \"acme\", email = \"ops\"", "email `ops` is not a mail address"),
        ("domains = [\"x.example.com\"], state = \"acme\", challenge = \"dns-01\"", "challenge must be \"tls-alpn-01\" or \"http-01\", not `dns-01`"),
        ("domains = [\"x.example.com\"], state = \"a.pem\"", "acme state `"),
        ("domains = [\"x.example.com\"], state = \"acme\", directory_ca = \"a-key.pem\"", "directory_ca `a-key.pem`: holds no PEM certificate"),
        ("domains = [\"x.example.com\"], state = \"acme\", challenge = \"http-01\"", "http-01 needs a plaintext listener (on port 80, where the CA fetches its token); add one, or use challenge = \"tls-alpn-01\""),
    ];
    for (block, expected) in cases {
        let messages = acme(block);
        assert_eq!(messages.len(), 1, "{block}: {messages:?}");
        assert!(messages[0].starts_with(expected), "{block}: {messages:?}");
    }
    // Caught by the parser, before any listener exists.
    for (block, expected) in [
        ("domains = [\"x.example.com\"]", "missing field `state`"),
        (
            "domains = [\"x.example.com\"], state = \"acme\", dns = \"x\"",
            "unknown field `dns`",
        ),
    ] {
        let messages = acme(block);
        assert!(messages[0].starts_with(expected), "{block}: {messages:?}");
    }
    assert_eq!(
        tls_messages(&on_443(
            "{ cert = \"a.pem\", key = \"a-key.pem\", acme = { domains = [\"a.example.com\"], state = \"acme\" } }"
        )),
        ["`a.example.com` is both ordered by acme and served from `a.pem`; keep one"]
    );
    assert_eq!(
        tls_messages(&on_443(
            "{ client_auth = { ca = \"a.pem\" }, acme = { domains = [\"x.example.com\"], state = \"acme\" } }"
        )),
        ["tls-alpn-01 cannot work with `client_auth = { required = true }`: the CA's check connects without a client certificate; use challenge = \"http-01\", or required = false"]
    );
    // Blocks sharing a state directory and a CA share an account: one email.
    let pair = |second: &str| {
        tls_messages(&format!(
            "{}{}",
            on_443("{ acme = { domains = [\"a.example.com\"], state = \"acme\", email = \"ops@example.com\" } }"),
            on_443(&format!("{{ acme = {{ domains = [\"b.example.com\"], {second} }} }}"))
                .replace("127.0.0.1", "127.0.0.2")
        ))
    };
    assert_eq!(
        pair("state = \"acme\", email = \"ops@example.com\""),
        Vec::<String>::new()
    );
    assert_eq!(
        pair("state = \"other\", email = \"dev@example.com\""),
        Vec::<String>::new()
    );
    let shared = "acme blocks with the same `state` and `directory` share one account, and another block gives it the email ops@example.com; give every such block the same email";
    assert_eq!(
        pair("state = \"acme\", email = \"dev@example.com\""),
        [shared]
    );
    assert_eq!(pair("state = \"acme\""), [shared]);
    // http-01 with a plaintext listener for the CA to reach, on port 80 or,
    // with a warning, behind a port forward.
    let http01 = |plain: u16| {
        tls_messages(&format!(
            "[[listeners]]\nbind = \"127.0.0.1:{plain}\"\n\n{}",
            tls_listener("{ acme = { domains = [\"x.example.com\"], state = \"acme\", challenge = \"http-01\" } }")
        ))
    };
    assert_eq!(http01(80), Vec::<String>::new());
    assert_eq!(
        http01(8080),
        ["no plaintext listener binds port 80, where the CA fetches HTTP-01 tokens; validation fails unless port 80 is forwarded to one of them"]
    );
    assert_eq!(
        tls_messages(&tls_listener("{ acme = { domains = [\"x.example.com\"], state = \"acme\" } }")),
        ["this listener does not bind port 443, where the CA connects for tls-alpn-01; validation fails unless port 443 is forwarded to it"]
    );
}

/// A self-signed certificate for `name` with an OCSP responder in its
/// Authority Information Access and, with `must_staple`, the TLS feature
/// status_request; alone in its file, so its issuer is missing.
fn write_ocsp_cert(dir: &Path, stem: &str, name: &str, must_staple: bool) {
    let url = b"http://127.0.0.1:9/";
    let mut access = vec![0x06, 0x08, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
    access.extend([0x86, url.len() as u8]);
    access.extend(url);
    let description = [&[0x30, access.len() as u8][..], &access].concat();
    let aia = [&[0x30, description.len() as u8][..], &description].concat();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
    params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 5, 5, 7, 1, 1],
        aia,
    )];
    if must_staple {
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 5, 5, 7, 1, 24],
                vec![0x30, 0x03, 0x02, 0x01, 0x05],
            ));
    }
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-sign");
    std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).expect("write cert");
    std::fs::write(dir.join(format!("{stem}-key.pem")), key.serialize_pem()).expect("write key");
}

#[test]
fn certificates_that_cannot_be_stapled_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_ocsp_cert(dir.path(), "plain", "plain.example.com", false);
    write_ocsp_cert(dir.path(), "must", "must.example.com", true);
    let pair = |stem: &str| {
        errors_in(
            &tls_listener(&format!(
                "{{ cert = \"{stem}.pem\", key = \"{stem}-key.pem\" }}"
            )),
            dir.path(),
        )
    };
    assert_eq!(
        pair("plain"),
        ["certificate `plain.pem` will be served without OCSP stapling: its OCSP responder cannot be asked: the file holds no issuer certificate after the leaf"]
    );
    assert_eq!(
        pair("must"),
        ["certificate `must.pem` is Must-Staple, so clients refuse it without an OCSP staple, but its OCSP responder cannot be asked: the file holds no issuer certificate after the leaf"]
    );
}
