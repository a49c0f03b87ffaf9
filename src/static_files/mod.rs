//! Static files: lookup below a root, small-file cache, conditional and range
//! requests, precompressed variants; and pages compiled into the binary.

mod cache;
pub(crate) mod conditional;
mod embedded;
mod encoding;
mod hidden;
mod lookup;

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, LAST_MODIFIED, RANGE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use crate::body::compressed::vary_on_encoding;
use crate::body::{Body, FileBody};
use crate::compression::{self, Coding, Policy};
use crate::model::StaticSettings;
use crate::upstream::{warn_throttled, LogThrottle};
use crate::{request_path, response};
pub use cache::CacheBudget;
use cache::{CachedFile, FileCache};
use conditional::{Precondition, Span};
pub use embedded::{serve_page, EmbeddedPage};
pub use lookup::{content_type, header};
use lookup::{Found, Validators};

/// A `static = { ... }` action: a directory served read-only.
#[derive(Debug)]
pub struct StaticDir {
    /// Canonical, so a resolved file can be checked to lie below it.
    root: PathBuf,
    index: String,
    cache_control: Option<HeaderValue>,
    precompressed: bool,
    /// Name patterns never served (`hide`).
    hide: Vec<String>,
    /// The route's `compress`: files without a precompressed twin are
    /// compressed once and kept in the cache.
    compress: Option<Arc<Policy>>,
    cache: FileCache,
    /// Lookup failures that are the machine's fault, logged once in a while.
    warnings: LogThrottle,
}

impl StaticDir {
    /// The directory `settings` describe, caching small files within `budget`.
    pub fn new(
        settings: &StaticSettings,
        budget: Arc<CacheBudget>,
        compress: Option<Arc<Policy>>,
    ) -> StaticDir {
        StaticDir {
            root: settings.root.clone(),
            index: settings.index.clone(),
            // Validated as a header value when the model was made.
            cache_control: settings
                .cache_control
                .as_deref()
                .and_then(|value| HeaderValue::from_str(value).ok()),
            precompressed: settings.precompressed,
            hide: settings.hide.clone(),
            compress,
            cache: FileCache::new(budget),
            warnings: LogThrottle::default(),
        }
    }

    /// The directory files are served from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Finds `file` (a normalised path below the root), from the cache under
    /// `cache_key` when it can.
    ///
    /// File system calls run on the worker thread, as in nginx without `aio`:
    /// for files in the page cache a hop to the blocking pool costs more than
    /// the call (measured: the hop's thread switches were a tenth of the CPU
    /// per 1 MiB response). A root on a slow network file system would stall
    /// the worker instead.
    fn open(&self, file: &str, cache_key: &str, content_name: &str) -> io::Result<Opened> {
        if let Some(hit) = self.cache.get(cache_key) {
            return Ok(Opened::Cached(hit));
        }
        let max_small = self.cache.budget().max_file();
        let (path, found) = lookup::find(&self.root, file, max_small)?;
        Ok(match found {
            Found::Directory => Opened::Directory,
            Found::Small { identity, content } => {
                let validators = Validators::new(&identity, content_name);
                let file = Arc::new(CachedFile::new(path, identity, content, validators));
                self.cache.insert(cache_key, Arc::clone(&file));
                Opened::Cached(file)
            }
            Found::Large { identity, file } => Opened::Stream {
                file,
                len: identity.len(),
                validators: Validators::new(&identity, content_name),
            },
        })
    }
}

enum Opened {
    Cached(Arc<CachedFile>),
    Stream {
        file: File,
        len: u64,
        validators: Validators,
    },
    Directory,
}

/// Where the bytes of a response come from.
enum Source {
    Memory(Bytes),
    File(File),
}

/// Serves `relative`, the normalised request path with the route's prefix
/// removed; `path` is the normalised path the client asked for (before any
/// rewrite), which a redirect to a directory's `/` form sends it back to.
pub fn serve<B>(req: &Request<B>, dir: &StaticDir, path: &str, relative: &str) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return response::method_not_allowed("GET, HEAD");
    }
    if relative.is_empty() {
        return redirect_to_directory(req, path);
    }
    if hidden::is_hidden(&dir.hide, relative) {
        return response::status(StatusCode::NOT_FOUND);
    }
    let wants_directory = relative.ends_with('/');
    let name: Cow<str> = if wants_directory {
        Cow::Owned(format!("{relative}{}", dir.index))
    } else {
        Cow::Borrowed(relative)
    };
    let negotiated;
    let encodings: &[Option<Coding>] = if dir.precompressed {
        negotiated = encoding::preference(req.headers().get(ACCEPT_ENCODING));
        &negotiated
    } else {
        &[None]
    };
    for &encoding in encodings {
        // A variant's cached headers (its Content-Type is the plain file's)
        // differ from those of a direct request for the same file, so it is
        // cached under its own key; NUL never occurs in a normalised path.
        let (key, cache_key): (Cow<str>, Cow<str>) = match encoding {
            None => (Cow::Borrowed(&name), Cow::Borrowed(&name)),
            Some(coding) => {
                let file = format!("{name}{}", encoding::suffix(coding));
                let cache_key = format!("{file}\0");
                (Cow::Owned(file), Cow::Owned(cache_key))
            }
        };
        let (validators, len, source) = match dir.open(&key, &cache_key, &name) {
            Ok(Opened::Cached(file)) if encoding.is_none() && dir.compress.is_some() => {
                return match compressed_once(req, dir, &name, file) {
                    Ok((file, coding)) => {
                        let len = file.content.len() as u64;
                        let source = Source::Memory(file.content.clone());
                        let mut response = respond(req, dir, &file.validators, len, coding, source);
                        if coding.is_some() {
                            // A range is only served of the plain file; this is another representation.
                            response.headers_mut().remove(ACCEPT_RANGES);
                        }
                        response
                    }
                    Err(e) => {
                        warn_throttled!(dir.warnings, path = bounded(&key), error = %e, "compressing a static file failed");
                        response::status(StatusCode::INTERNAL_SERVER_ERROR)
                    }
                };
            }
            Ok(Opened::Cached(file)) => (
                file.validators.clone(),
                file.content.len() as u64,
                Source::Memory(file.content.clone()),
            ),
            Ok(Opened::Stream {
                file,
                len,
                validators,
            }) => (validators, len, Source::File(file)),
            Ok(Opened::Directory) if encoding.is_none() && !wants_directory => {
                return redirect_to_directory(req, path)
            }
            Ok(Opened::Directory) => continue,
            Err(e) if is_not_found(&e) => continue,
            Err(e) if is_forbidden(&e) => return response::status(StatusCode::FORBIDDEN),
            Err(e) => {
                warn_throttled!(dir.warnings, path = bounded(&key), error = %e, "static file lookup failed");
                return response::status(StatusCode::INTERNAL_SERVER_ERROR);
            }
        };
        return respond(req, dir, &validators, len, encoding, source);
    }
    response::status(StatusCode::NOT_FOUND)
}

/// The cached file `plain` (named `name`), or its variant in the coding the
/// client takes best, compressed on the first request and cached beside it:
/// one compression per file and coding, not one per request. Files a
/// range is asked of, and files too small or of another type, go plain.
fn compressed_once<B>(
    req: &Request<B>,
    dir: &StaticDir,
    name: &str,
    plain: Arc<CachedFile>,
) -> io::Result<(Arc<CachedFile>, Option<Coding>)> {
    let Some(policy) = dir.compress.as_deref() else {
        return Ok((plain, None));
    };
    let qualifies = plain.content.len() as u64 >= policy.min_size()
        && policy.compresses_type(Some(&plain.validators.content_type))
        && !dir
            .cache_control
            .as_ref()
            .is_some_and(compression::says_no_transform);
    let ranged = req.headers().contains_key(RANGE);
    let coding = policy.choose(req.headers().get(ACCEPT_ENCODING));
    let Some(coding) = coding.filter(|_| qualifies && !ranged) else {
        return Ok((plain, None));
    };
    let cache_key = format!("{name}\0{}", coding.token());
    if let Some(hit) = dir.cache.get(&cache_key) {
        return Ok((hit, Some(coding)));
    }
    let content = compression::compress_whole(coding, policy.level(coding), &plain.content)?;
    let mut validators = plain.validators.clone();
    validators.etag = compression::weaken(&validators.etag);
    let variant = Arc::new(plain.variant(content, validators));
    dir.cache.insert(&cache_key, Arc::clone(&variant));
    Ok((variant, Some(coding)))
}

/// What nginx answers 404 for: no such file, a path through a file, and a
/// name longer than the file system takes (anyone can send one).
fn is_not_found(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename
    ) || error.raw_os_error() == Some(libc::ENAMETOOLONG)
}

/// What nginx answers 403 for: no permission, and a symlink loop.
fn is_forbidden(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::PermissionDenied || error.raw_os_error() == Some(libc::ELOOP)
}

/// At most 200 bytes of a client-chosen path, for a log line.
fn bounded(path: &str) -> &str {
    let mut end = path.len().min(200);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

/// A 301 to the same path with a trailing slash, keeping the query. Built
/// from the normalised path: echoing the raw one would let `//evil.example/..`
/// become a redirect to another site.
fn redirect_to_directory<B>(req: &Request<B>, path: &str) -> Response<Body> {
    let path = request_path::encode(path);
    let location = match req.uri().query() {
        Some(query) => format!("{path}/?{query}"),
        None => format!("{path}/"),
    };
    response::moved_permanently(&location)
}

fn respond<B>(
    req: &Request<B>,
    dir: &StaticDir,
    validators: &Validators,
    len: u64,
    encoding: Option<Coding>,
    source: Source,
) -> Response<Body> {
    let (method, headers) = (req.method(), req.headers());
    let etag = validators.etag_str();
    match conditional::preconditions(method, headers, etag, validators.modified) {
        Precondition::Proceed => {}
        Precondition::Failed => return response::status(StatusCode::PRECONDITION_FAILED),
        Precondition::NotModified => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            representation_headers(response.headers_mut(), dir, validators, encoding);
            return response;
        }
    }
    let (status, first, last) =
        match conditional::requested_span(method, headers, etag, validators.modified, len) {
            Span::Full => (StatusCode::OK, 0, len.saturating_sub(1)),
            Span::Partial(range) => (StatusCode::PARTIAL_CONTENT, *range.start(), *range.end()),
            Span::Unsatisfiable => {
                let mut response = response::status(StatusCode::RANGE_NOT_SATISFIABLE);
                response
                    .headers_mut()
                    .insert(CONTENT_RANGE, header(format!("bytes */{len}")));
                return response;
            }
        };
    let body_len = if len == 0 { 0 } else { last - first + 1 };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        match body_of(source, first, body_len) {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(error = %e, "cannot position file for a range");
                return response::status(StatusCode::INTERNAL_SERVER_ERROR);
            }
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let response_headers = response.headers_mut();
    representation_headers(response_headers, dir, validators, encoding);
    response_headers.insert(CONTENT_TYPE, validators.content_type.clone());
    response_headers.insert(CONTENT_LENGTH, HeaderValue::from(body_len));
    response_headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        response_headers.insert(CONTENT_RANGE, header(format!("bytes {first}-{last}/{len}")));
    }
    response
}

fn body_of(source: Source, first: u64, len: u64) -> io::Result<Body> {
    Ok(match source {
        Source::Memory(bytes) => {
            let start = usize::try_from(first).map_err(io::Error::other)?;
            let end = usize::try_from(first + len).map_err(io::Error::other)?;
            Body::from(bytes.slice(start..end))
        }
        Source::File(mut file) => {
            if first > 0 {
                file.seek(SeekFrom::Start(first))?;
            }
            Body::File(FileBody::new(file, len))
        }
    })
}

/// Headers a 200, 206 and 304 all carry (RFC 9110 §15.4.5 lists them for 304).
fn representation_headers(
    headers: &mut HeaderMap,
    dir: &StaticDir,
    validators: &Validators,
    encoding: Option<Coding>,
) {
    headers.insert(ETAG, validators.etag.clone());
    headers.insert(LAST_MODIFIED, validators.last_modified.clone());
    if let Some(cache_control) = &dir.cache_control {
        headers.insert(CACHE_CONTROL, cache_control.clone());
    }
    if dir.precompressed || dir.compress.is_some() {
        vary_on_encoding(headers);
    }
    if let Some(coding) = encoding {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.token()));
    }
}
