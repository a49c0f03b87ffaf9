//! The state directory: the account's credentials, each certificate with
//! its key, the tokens of HTTP-01 challenges in flight, and the lock that
//! lets replicas share it. Secrets are written 0600, atomically (a temporary
//! file, fsync, rename, fsync of the directory), so a crash leaves the old
//! file or the new one, never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// One `state` directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// The files of one certificate, named by its first name and a digest of
/// all its names, so that blocks sharing a state directory and a first
/// name but not the other names never take each other's certificate.
pub struct CertificateFiles {
    /// The key and the chain in one file, so that one rename replaces both.
    pub pem: PathBuf,
    /// The back-off after failed orders, shared by the replicas:
    /// `FAILURES NOT_BEFORE` (Unix seconds).
    pub retry: PathBuf,
}

impl StateDir {
    pub fn new(root: &Path) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the account for `directory` is kept: one account per CA.
    pub fn account(&self, directory: &str) -> PathBuf {
        let name: String = directory
            .trim_start_matches("https://")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.root.join("accounts").join(format!("{name}.json"))
    }

    pub fn certificate(&self, domains: &[String]) -> CertificateFiles {
        let mut sorted = domains.to_vec();
        sorted.sort();
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, sorted.join(",").as_bytes());
        let tag: String = digest.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let first = domains.first().map_or("none", String::as_str);
        let dir = self.root.join("certificates");
        CertificateFiles {
            pem: dir.join(format!("{first}-{tag}.pem")),
            retry: dir.join(format!("{first}-{tag}.retry")),
        }
    }

    /// Where an HTTP-01 key authorization waits for the CA, so a replica
    /// other than the one that ordered can answer it too. `None` for a token
    /// that is not base64url (RFC 8555 §8.3), which could name another file.
    pub fn http_token(&self, token: &str) -> Option<PathBuf> {
        let safe = !token.is_empty()
            && token.len() <= 256
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        safe.then(|| self.root.join("http-01").join(token))
    }

    /// Takes the directory's lock without waiting; `None` while another
    /// process (a replica sharing the directory) holds it. The lock goes
    /// with the returned file, also when the process dies.
    pub fn try_lock(&self) -> io::Result<Option<File>> {
        create_dirs(&self.root)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.root.join("lock"))?;
        // SAFETY: flock on a descriptor this function owns.
        let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if taken == 0 {
            return Ok(Some(file));
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EWOULDBLOCK) => Ok(None),
            _ => Err(error),
        }
    }
}

/// The shared back-off in `file`: failures so far, and when the next order
/// may start. `None` when there is none (or it cannot be read: then orders
/// go ahead, as without one).
pub fn read_retry(file: &Path) -> Option<(u32, i64)> {
    let text = fs::read_to_string(file).ok()?;
    let (failures, not_before) = text.trim().split_once(' ')?;
    Some((failures.parse().ok()?, not_before.parse().ok()?))
}

pub fn write_retry(file: &Path, failures: u32, not_before: i64) -> io::Result<()> {
    write_secret(file, format!("{failures} {not_before}\n").as_bytes())
}

/// Writes `bytes` to `path` readable by the owner only, replacing what was
/// there in one step.
pub fn write_secret(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"))?;
    create_dirs(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

/// Makes `dir` and its parents, new ones 0700: the state holds private keys.
fn create_dirs(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_are_private_and_replaced_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(&dir.path().join("state"));
        let files = state.certificate(&["example.com".to_owned()]);
        write_secret(&files.pem, b"first").expect("write");
        write_secret(&files.pem, b"second").expect("write");
        assert_eq!(fs::read(&files.pem).expect("read"), b"second");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&files.pem), 0o600);
        assert_eq!(mode(state.root()), 0o700);
        let leftovers = fs::read_dir(files.pem.parent().expect("dir"))
            .expect("list")
            .count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
        write_retry(&files.retry, 3, 1_700_000_000).expect("write");
        assert_eq!(read_retry(&files.retry), Some((3, 1_700_000_000)));
    }

    #[test]
    fn one_holder_of_the_lock_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        let held = state.try_lock().expect("lock").expect("free");
        // flock locks belong to the open file, so a second open is a second holder.
        assert!(state.try_lock().expect("lock").is_none());
        drop(held);
        assert!(state.try_lock().expect("lock").is_some());
    }

    #[test]
    fn each_set_of_names_has_its_own_file() {
        let state = StateDir::new(Path::new("/state"));
        let names = |list: &[&str]| {
            let list: Vec<String> = list.iter().map(|n| n.to_string()).collect();
            state.certificate(&list).pem
        };
        assert_eq!(names(&["a.test", "b.test"]), names(&["a.test", "b.test"]));
        assert_ne!(names(&["a.test", "b.test"]), names(&["a.test", "c.test"]));
        assert!(names(&["a.test"]).starts_with("/state/certificates/"));
        let file = names(&["a.test"]);
        let file = file.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(
            file.starts_with("a.test-") && file.ends_with(".pem"),
            "{file}"
        );
    }

    #[test]
    fn tokens_that_could_name_another_file_are_refused() {
        let state = StateDir::new(Path::new("/state"));
        assert!(state.http_token("abc-DEF_123").is_some());
        for token in ["", "../lock", "a/b", "a.b", "%2e%2e"] {
            assert!(state.http_token(token).is_none(), "{token}");
        }
        assert_eq!(
            state.account("https://acme.example:14000/dir"),
            Path::new("/state/accounts/acme.example_14000_dir.json")
        );
    }
}
