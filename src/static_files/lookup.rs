//! Finding a file below a root without ever leaving it.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderValue;

/// What identifies one version of a file: if any of it changes, cached
/// content and validators are stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_sec: i64,
    mtime_nsec: i64,
}

impl FileIdentity {
    pub fn of(meta: &Metadata) -> FileIdentity {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_sec: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }
}

/// The response headers that depend only on the file and its name.
#[derive(Debug, Clone)]
pub struct Validators {
    pub etag: HeaderValue,
    pub last_modified: HeaderValue,
    /// Truncated to whole seconds, the precision of HTTP dates.
    pub modified: SystemTime,
    pub content_type: HeaderValue,
}

impl Validators {
    /// `content_name` is the name the client asked for: a precompressed
    /// variant `app.js.br` is still `text/javascript`.
    pub fn new(identity: &FileIdentity, content_name: &str) -> Validators {
        let secs = u64::try_from(identity.mtime_sec).unwrap_or(0);
        let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        // Strong: a byte-for-byte change in place always moves mtime or size.
        let etag = format!(
            "\"{:x}.{:x}-{:x}\"",
            secs, identity.mtime_nsec, identity.len
        );
        Validators {
            etag: header(etag),
            last_modified: header(httpdate::fmt_http_date(modified)),
            modified,
            content_type: header(content_type(content_name)),
        }
    }

    pub fn etag_str(&self) -> &str {
        self.etag.to_str().unwrap_or("")
    }
}

/// A header value from text we built ourselves; never fails for our formats.
pub fn header(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The `Content-Type` for a file named `name`; text types in UTF-8.
pub fn content_type(name: &str) -> String {
    let mime = mime_guess::from_path(name)
        .first_raw()
        .unwrap_or("application/octet-stream");
    let textual = mime.starts_with("text/")
        || matches!(
            mime,
            "application/javascript" | "application/json" | "image/svg+xml" | "application/xml"
        );
    if textual {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    }
}

/// A file found below the root.
#[derive(Debug)]
pub enum Found {
    Directory,
    /// Small enough to keep in memory: the whole content.
    Small {
        identity: FileIdentity,
        content: Bytes,
    },
    /// Streamed from the open file.
    Large {
        identity: FileIdentity,
        file: File,
    },
}

/// Resolves `relative` (a normalised path, `/`-separated) below `root`, which
/// must be canonical. Symlinks are followed, but a file whose real path is
/// outside `root` is reported as not found.
pub fn find(root: &Path, relative: &str, max_small: u64) -> io::Result<(PathBuf, Found)> {
    let joined = root.join(relative.trim_start_matches('/'));
    let real = std::fs::canonicalize(&joined)?;
    if !real.starts_with(root) {
        tracing::debug!(path = %joined.display(), "symlink leads outside the static root");
        return Err(io::ErrorKind::NotFound.into());
    }
    // stat before open: opening a FIFO would block until a writer appears.
    let kind = std::fs::metadata(&real)?.file_type();
    if kind.is_dir() {
        return Ok((joined, Found::Directory));
    }
    if !kind.is_file() {
        return Err(io::ErrorKind::NotFound.into());
    }
    let file = File::open(&real)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::ErrorKind::NotFound.into());
    }
    let identity = FileIdentity::of(&meta);
    if meta.len() > max_small {
        return Ok((joined, Found::Large { identity, file }));
    }
    let mut content = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(meta.len()).read_to_end(&mut content)?;
    if content.len() as u64 != meta.len() {
        // Written to while we read: do not cache a torn copy.
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "file changed while read",
        ));
    }
    Ok((
        joined,
        Found::Small {
            identity,
            content: Bytes::from(content),
        },
    ))
}

/// Whether the file at `path` is still the version `identity` describes.
pub fn unchanged(path: &Path, identity: &FileIdentity) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| FileIdentity::of(&meta) == *identity)
}
