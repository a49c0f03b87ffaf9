//! Everything `wsgate check` can say about a config file, each message
//! worded so an operator knows what to write instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::BackendUrlError;
use crate::tls::CertError;

/// Everything that can be wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file: {source}")]
    Unreadable {
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Toml(String),
    #[error("unknown section `{0}`; expected `trusted_proxies`, `client_ip_headers`, `listeners`, `admin`, `server`, `log` or `routes`")]
    UnknownSection(String),
    #[error("expected an array of tables, written as [[listeners]] or [[routes]]")]
    NotAnArrayOfTables,
    #[error("no listeners: add at least one [[listeners]] with bind = \"0.0.0.0:8080\"")]
    NoListeners,
    #[error(
        "`{0}` is not a socket address; write IP:PORT, e.g. \"0.0.0.0:8080\" or \"[::]:8080\""
    )]
    BadAddress(String),
    #[error("address {0} is bound twice; each listener needs its own address")]
    DuplicateListener(SocketAddr),
    #[error("admin address {0} is also a public listener; health and metrics must not be served to clients")]
    AdminIsPublic(SocketAddr),
    #[error(
        "`{0}` is not a duration; write a whole number and a unit: ms, s, m or h (e.g. \"30s\")"
    )]
    BadDuration(String),
    #[error(
        "`{0}` is not a size; write a whole number and a unit: B, KiB, MiB or GiB (e.g. \"64KiB\")"
    )]
    BadSize(String),
    #[error("max_connections must be at least 1")]
    NoConnections,
    #[error("max_connections must be at most {0}")]
    TooManyConnections(usize),
    #[error("max_request_head must be at least 8KiB")]
    RequestHeadTooSmall,
    #[error("route name must not be empty; it labels the route's metrics")]
    EmptyRouteName,
    #[error("route name `{0}` is used by another route; names must be unique because they label metrics")]
    DuplicateRouteName(String),
    #[error("`{0}` is not a host name; write an exact name (\"chat.example.com\") or a wildcard (\"*.example.com\")")]
    BadHost(String),
    #[error("path must start with '/'")]
    PathNotAbsolute,
    #[error("path `{given}` is not in normal form; write it as `{normal}`")]
    PathNotNormal { given: String, normal: String },
    #[error("route `{name}` has the same host and path as route `{other}`; one of them could never match")]
    DuplicateRoute { name: String, other: String },
    #[error("route `{0}` has no action; add `static = {{ root = \"public\" }}`, `proxy = {{ backends = [\"http://127.0.0.1:3000\"] }}`, `redirect = {{ to = \"https://example.com$uri\" }}` or `websocket = {{ backends = [\"ws://127.0.0.1:9001\"] }}`")]
    NoAction(String),
    #[error("route `{route}` has both `{first}` and `{second}`; plain requests can go to only one of them")]
    TwoContents {
        route: String,
        first: &'static str,
        second: &'static str,
    },
    #[error("static root `{given}` does not exist (looked for {})", resolved.display())]
    RootMissing { given: String, resolved: PathBuf },
    #[error("static root `{given}` is not a directory ({})", resolved.display())]
    RootNotDirectory { given: String, resolved: PathBuf },
    #[error("static root `{given}` cannot be read: {source}")]
    RootUnreadable {
        given: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Backend(BackendUrlError),
    #[error("backend `{0}` is listed twice in this pool; list each backend once")]
    DuplicateBackend(String),
    #[error("a {0} action needs at least one backend")]
    NoBackends(&'static str),
    #[error("`{0}` is not a balance; write \"round_robin\", \"least_connections\" or \"hash\"")]
    BadBalance(String),
    #[error("`{0}` is not a hash key; write \"cookie:NAME\", \"header:NAME\" or \"client_ip\"")]
    BadHashKey(String),
    #[error("hash_key only applies with balance = \"hash\"")]
    HashKeyWithoutHash,
    #[error("health check path `{0}` must start with '/'")]
    BadHealthPath(String),
    #[error("{0} must be at least 1")]
    TooSmall(&'static str),
    #[error("{0} must be longer than zero")]
    ZeroDuration(&'static str),
    #[error("{0} must be larger than zero")]
    ZeroSize(&'static str),
    #[error("origin `{0}` can never match a browser's Origin header, which is scheme://host[:port] with no path; write e.g. \"https://chat.example.com\"")]
    BadOrigin(String),
    #[error("trusted_proxies `{0}` trusts every address, so any client can claim another's address in X-Forwarded-For; list your load balancers' networks instead")]
    TrustsEveryone(String),
    #[error(
        "hide pattern `{0}` must name one path segment, without '/' (e.g. \".*\" or \"*.bak\")"
    )]
    BadHidePattern(String),
    #[error(
        "`{0}` is not a header name; write letters, digits and dashes, e.g. \"X-Frame-Options\""
    )]
    BadHeaderName(String),
    #[error("retries must be 0 or more")]
    NegativeRetries,
    #[error("`{0}` is not an address or network; write e.g. \"10.0.0.0/8\" or \"192.0.2.7\"")]
    BadNetwork(String),
    #[error("index `{0}` must be a plain file name, without '/'")]
    BadIndex(String),
    #[error("cache_control `{0}` is not a valid header value")]
    BadCacheControl(String),
    #[error(transparent)]
    Certificate(CertError),
    #[error("tls needs a certificate: write `tls = {{ cert = \"site.pem\", key = \"site-key.pem\" }}` or `tls = {{ certificates = [{{ cert = \"a.pem\", key = \"a-key.pem\" }}] }}`")]
    TlsNoCertificate,
    #[error("write either `cert` and `key`, or `certificates = [...]`, not both")]
    TlsBothForms,
    #[error("`cert` needs its `key` next to it")]
    CertWithoutKey,
    #[error("`key` needs its `cert` next to it")]
    KeyWithoutCert,
    #[error("certificate `{given}` expired on {when}; clients will refuse it")]
    CertificateExpired { given: String, when: String },
    #[error("certificate `{given}` covers `{name}`, which `{other}` already covers on this listener; SNI could not tell them apart")]
    OverlappingName {
        given: String,
        name: String,
        other: String,
    },
    #[error("certificate `{given}` covers `{name}`, which listener {listener} serves with `{other}`; clients would see a different certificate on each port")]
    NameOnOtherListener {
        given: String,
        name: String,
        listener: SocketAddr,
        other: String,
    },
    #[error("redirect_https is for plaintext listeners; this listener already terminates TLS")]
    RedirectOnTls,
    #[error("the value for `{0}` has a line break or another control character; a header value is one line of visible text")]
    BadHeaderValue(String),
    #[error("`{0}` is wsgate's to manage (message framing, a hop-by-hop field or the WebSocket handshake); it cannot be set, added or removed")]
    ManagedHeader(String),
    #[error("`{0}` is not an HSTS policy; write \"max-age=SECONDS\", optionally followed by \"; includeSubDomains\" and \"; preload\"")]
    BadHsts(String),
    #[error("`{0}` is not an HTTP method; write e.g. \"GET\", \"PUT\" or \"DELETE\"")]
    BadMethod(String),
    #[error("cors needs at least one origin, e.g. origins = [\"https://app.example.com\"], or [\"*\"] for any")]
    NoCorsOrigins,
    #[error("`*` allows any origin and must stand alone, without credentials (browsers refuse a wildcard on requests with credentials); list the origins instead")]
    CorsWildcard,
    #[error("redirect status must be 301, 302, 303, 307 or 308 (307 and 308 keep the method and body), not {0}")]
    BadRedirectStatus(i64),
    #[error(transparent)]
    RedirectTarget(#[from] crate::model::TargetError),
    #[error("rewrite pattern is refused: {0}")]
    BadRewritePattern(String),
    #[error("`${0}` names no group of the pattern, so it would always be empty; number the groups from 1, name them with (?P<name>…), and write ${{1}}x when a letter follows")]
    UnknownGroup(String),
    #[error("a rewrite makes a path: `to` starts with `/` and has no `?`, `#` or `\\` (the query string is kept as it came)")]
    RewriteNotPath,
    #[error(
        "trailing_slash must be \"add\" (/docs → /docs/) or \"remove\" (/docs/ → /docs), not `{0}`"
    )]
    BadTrailingSlash(String),
    #[error("trailing_slash = \"remove\" would loop with `static`, which sends directories to their `/` form; use \"add\" or leave it out")]
    SlashRemovedFromStatic,
    #[error("`{0}` is not an error status; write a status from 400 to 599 (e.g. 404), or \"4xx\" or \"5xx\" for a whole class")]
    BadErrorStatus(String),
    #[error("error page `{given}` cannot be read: {source}")]
    ErrorPageUnreadable {
        given: String,
        #[source]
        source: std::io::Error,
    },
    #[error("error page `{given}` is {size} bytes; error pages are kept in memory and must be at most {limit} bytes")]
    ErrorPageTooLarge {
        given: String,
        size: u64,
        limit: u64,
    },
    #[error("`{0}` is not a compression algorithm; use \"br\", \"zstd\" or \"gzip\"")]
    UnknownCoding(String),
    #[error("`{0}` is listed twice")]
    RepeatedCoding(String),
    #[error("compress needs at least one algorithm; leave `algorithms` out for [\"br\", \"zstd\", \"gzip\"]")]
    NoCodings,
    #[error("{coding} levels run from {min} to {max}, not {given}")]
    BadLevel {
        coding: &'static str,
        min: i32,
        max: i32,
        given: i64,
    },
    #[error("levels names `{0}`, which `algorithms` leaves out; add it there or remove its level")]
    LevelWithoutCoding(&'static str),
    #[error("types is empty, so nothing would be compressed; leave it out for the text types, or remove `compress`")]
    NoTypes,
    #[error("{coding} level {level} on the fly costs many times the CPU of the default for a few percent of size; keep on-the-fly levels at br 6, zstd 9 or below, and precompress static files (precompressed = true) for the best ratio")]
    SlowLevel { coding: &'static str, level: i32 },
    #[error("`{0}` is not a media type pattern; write \"type/subtype\", \"type/*\" or \"type/*+suffix\" (e.g. \"application/*+json\")")]
    BadMediaType(String),
    #[error("h2c is for plaintext listeners; a TLS listener offers HTTP/2 by ALPN already, so remove h2c")]
    H2cOnTls,
    #[error("https_port only applies with redirect_https = true")]
    HttpsPortWithoutRedirect,
    #[error("https_port must be between 1 and 65535")]
    BadPort,
    #[error("shutdown_delay ({delay:?}) plus drain_spread ({spread:?}) must fit in shutdown_timeout ({timeout:?}), or sessions are cut before their close is sent")]
    DrainLongerThanShutdown {
        delay: Duration,
        spread: Duration,
        timeout: Duration,
    },
    #[error("backend_ca is set but no backend uses TLS (wss:// or https://)")]
    CaWithoutTls,
    #[error("no CA certificates found on this machine to verify wss:// or https:// backends; set `backend_ca = \"ca.pem\"`")]
    NoPlatformRoots,
    #[error("access log file {path} cannot be opened for appending: {source}; create its directory or give wsgate write access")]
    LogFileUnopenable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("access log `access` must be \"stdout\", \"stderr\", \"off\" or a file path")]
    EmptyLogTarget,
    #[error(transparent)]
    LogFormat(#[from] crate::access_log::UnknownField),
    #[error("access_log must be \"all\", \"errors\" or \"off\", not `{0}`")]
    BadLogRequests(String),
    #[error("`{0}` is not a rate; write a whole number per s, m or h (e.g. \"20/s\")")]
    BadRate(String),
    #[error("`{0}` is not a byte rate; write a size per s, m or h (e.g. \"1MiB/s\")")]
    BadByteRate(String),
    #[error("{0} must allow at least 1 per period; leave it out for no limit")]
    ZeroRate(&'static str),
    #[error("{burst} only applies with {rate}")]
    BurstWithoutRate {
        burst: &'static str,
        rate: &'static str,
    },
    #[error(
        "client_ipv6_prefix must be between 0 and 128 (64 counts each /64 network as one client)"
    )]
    BadIpv6Prefix,
    #[error("rate_exceeded must be \"slow\" (stop reading until the rate allows more) or \"close\" (close with 1008 after rate_exceeded_grace), not `{0}`")]
    BadRateExceeded(String),
    #[error("rate_exceeded_grace only applies with rate_exceeded = \"close\"")]
    GraceWithoutClose,
    #[error("rate_exceeded needs client_message_rate or client_byte_rate")]
    RateExceededWithoutRate,
    #[error("max_session_duration_code must be 1000, 1001 or between 4000 and 4999; RFC 6455 reserves the others")]
    BadCloseCode,
    #[error("max_session_duration_code only applies with max_session_duration")]
    CloseCodeWithoutDuration,
    #[error("auth needs a method: write `auth = {{ basic = \"users.htpasswd\" }}` or `auth = {{ jwt = {{ keys = \"jwks.json\", algorithms = [\"RS256\"] }} }}`")]
    AuthEmpty,
    #[error("JWT keys `{given}` cannot be read: {source}")]
    JwtKeysUnreadable {
        given: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    JwtKeys(crate::tokens::KeyError),
    #[error("token_from `{0}` must be \"header:NAME\", \"cookie:NAME\", \"query:NAME\" or \"subprotocol\"")]
    BadTokenSource(String),
    #[error("expired_close_code must be 1008 or between 4000 and 4999")]
    BadExpiredCloseCode,
    #[error("client_auth file `{given}` cannot be read: {source}")]
    ClientAuthUnreadable {
        given: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    ClientAuth(crate::tls::ClientAuthError),
    #[error("ticket_keys cannot go with client_auth: a resumed session keeps its first client certificate unchecked, so sharing tickets would let a certificate through that this listener's CA or CRLs refuse; listeners with client_auth keep tickets to themselves")]
    TicketKeysWithClientAuth,
    #[error("ticket key file `{given}` cannot be read: {source}")]
    TicketKeysUnreadable {
        given: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ticket key file `{given}`: {error}")]
    TicketKeys {
        given: String,
        #[source]
        error: crate::tls::TicketKeyError,
    },
    #[error("on_error must be \"deny\" (503 while the auth service cannot answer) or \"allow\" (let requests through then), not `{0}`")]
    BadOnError(String),
    #[error("realm must not contain quotes, backslashes or control characters")]
    BadRealm,
    #[error("htpasswd file `{given}` cannot be read: {source}")]
    HtpasswdUnreadable {
        given: String,
        #[source]
        source: std::io::Error,
    },
    #[error("htpasswd file `{given}`: {error}")]
    Htpasswd {
        given: String,
        #[source]
        error: crate::credentials::HtpasswdError,
    },
    #[error("certificate `{given}` will be served without OCSP stapling: {error}")]
    CannotStaple {
        given: String,
        #[source]
        error: crate::ocsp::TargetError,
    },
    #[error("certificate `{given}` is Must-Staple, so clients refuse it without an OCSP staple, but {error}")]
    MustStapleUnstaplable {
        given: String,
        #[source]
        error: crate::ocsp::TargetError,
    },
    #[error("acme needs at least one name in `domains`")]
    AcmeNoDomains,
    #[error(
        "`{0}` is not a DNS name wsgate can order a certificate for; write e.g. \"example.com\""
    )]
    AcmeBadDomain(String),
    #[error("`{0}`: wildcard certificates need the DNS-01 challenge, which wsgate does not answer; list the names, or give a wildcard certificate with `cert` and `key`")]
    AcmeWildcard(String),
    #[error("`{0}` is listed twice in `domains`")]
    AcmeDuplicateDomain(String),
    #[error("directory `{0}` must be an https:// URL, e.g. \"https://acme-v02.api.letsencrypt.org/directory\"")]
    AcmeBadDirectory(String),
    #[error("email `{0}` is not a mail address")]
    AcmeBadEmail(String),
    #[error("challenge must be \"tls-alpn-01\" or \"http-01\", not `{0}`")]
    AcmeBadChallenge(String),
    #[error("http-01 needs a plaintext listener (on port 80, where the CA fetches its token); add one, or use challenge = \"tls-alpn-01\"")]
    AcmeHttpWithoutPlaintext,
    #[error("no plaintext listener binds port 80, where the CA fetches HTTP-01 tokens; validation fails unless port 80 is forwarded to one of them")]
    AcmeHttpNotOnPort80,
    #[error("acme blocks with the same `state` and `directory` share one account, and another block gives it the email {first}; give every such block the same email")]
    AcmeAccountEmails { first: String },
    #[error("this listener does not bind port 443, where the CA connects for tls-alpn-01; validation fails unless port 443 is forwarded to it")]
    AcmeAlpnNotOnPort443,
    #[error("tls-alpn-01 cannot work with `client_auth = {{ required = true }}`: the CA's check connects without a client certificate; use challenge = \"http-01\", or required = false")]
    AcmeAlpnWithRequiredClientAuth,
    #[error("acme state `{}` is not a directory", .0.display())]
    AcmeStateNotDirectory(std::path::PathBuf),
    #[error("directory_ca `{given}`: {error}")]
    AcmeDirectoryCa { given: String, error: String },
    #[error("`{name}` is both ordered by acme and served from `{other}`; keep one")]
    AcmeNameTaken { name: String, other: String },
    #[error("proxy_protocol needs `trusted_proxies` to list the load balancers that send the header; a header from any other address is refused")]
    ProxyProtocolUntrusted,
}
