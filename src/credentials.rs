//! Users and password hashes from an htpasswd file, for basic auth. Only
//! slow, salted hashes are taken: bcrypt (`$2a$`, `$2b$`, `$2y$`, what
//! `htpasswd -B` writes) and argon2 (`$argon2id$`, `$argon2i$`, `$argon2d$`
//! in PHC form). MD5 (`$apr1$`), SHA-1 (`{SHA}`), crypt and plain entries
//! are refused when the file is read: a stolen file of those gives the
//! passwords away.
//!
//! Checking a password costs tens of milliseconds of CPU (and argon2 its
//! memory cost) on purpose, so checks run off the async threads, a few at a
//! time, and a password that passed is remembered for a short while, by a
//! keyed hash, never in the clear.

use std::collections::HashMap;
use std::time::Duration;

use argon2::password_hash::PasswordHash;
use argon2::{Argon2, PasswordVerifier};

use crate::remembered::Remembered;

/// How long a password that passed is taken without checking it again.
const REMEMBERED_FOR: Duration = Duration::from_secs(60);
/// At most this many (user, password) pairs are remembered.
const REMEMBERED_MAX: usize = 1024;

/// One user's hash.
#[derive(Debug, Clone)]
enum Hash {
    Bcrypt(String),
    Argon2(String),
}

/// Why an htpasswd file cannot be used, with the 1-based line it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HtpasswdError {
    #[error("line {line}: expected `user:hash`")]
    NotAnEntry { line: usize },
    #[error("line {line}: user `{user}` is listed twice")]
    DuplicateUser { line: usize, user: String },
    #[error("line {line}: user `{user}` has {kind}, which is quick to crack; make it again with `htpasswd -B` (bcrypt) or an argon2 tool")]
    WeakHash {
        line: usize,
        user: String,
        kind: &'static str,
    },
    #[error("line {line}: user `{user}` has a malformed {kind} hash")]
    Malformed {
        line: usize,
        user: String,
        kind: &'static str,
    },
    #[error("no users in the file")]
    Empty,
}

/// The users of an htpasswd file.
#[derive(Debug)]
pub struct Htpasswd {
    users: HashMap<String, Hash>,
    /// Checked for unknown users, so a wrong name takes as long as a wrong
    /// password and does not tell which users exist.
    decoy: Hash,
    /// (user, password) pairs that passed.
    passed: Remembered<()>,
}

impl Htpasswd {
    /// Reads the file's text: `user:hash` lines; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Htpasswd, HtpasswdError> {
        let mut users = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let entry = raw.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = entry.split_once(':') else {
                return Err(HtpasswdError::NotAnEntry { line });
            };
            if user.is_empty() {
                return Err(HtpasswdError::NotAnEntry { line });
            }
            let hash = classify(line, user, hash)?;
            if users.insert(user.to_owned(), hash).is_some() {
                let user = user.to_owned();
                return Err(HtpasswdError::DuplicateUser { line, user });
            }
        }
        // Any user's hash serves as the decoy: same algorithm, same cost.
        let decoy = users.values().next().cloned().ok_or(HtpasswdError::Empty)?;
        Ok(Htpasswd {
            users,
            decoy,
            passed: Remembered::new(REMEMBERED_FOR, REMEMBERED_MAX),
        })
    }

    /// Whether `password` is `user`'s: remembered, or checked against the
    /// hash (slow; call it off the async threads).
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let key = self.passed.key(&[user.as_bytes(), password]);
        if self.passed.get(key).is_some() {
            return true;
        }
        let (hash, known) = match self.users.get(user) {
            Some(hash) => (hash, true),
            None => (&self.decoy, false),
        };
        // Both crates compare the computed hash in constant time.
        let matches = match hash {
            Hash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Hash::Argon2(hash) => PasswordHash::new(hash)
                .is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok()),
        };
        let ok = matches && known;
        if ok {
            self.passed.put(key, ());
        }
        ok
    }
}

/// The hash of one entry, if it is one of the slow kinds.
fn classify(line: usize, user: &str, hash: &str) -> Result<Hash, HtpasswdError> {
    let weak = |kind| HtpasswdError::WeakHash {
        line,
        user: user.to_owned(),
        kind,
    };
    let malformed = |kind| HtpasswdError::Malformed {
        line,
        user: user.to_owned(),
        kind,
    };
    if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
        // $2x$VV$ + 22 characters of salt + 31 of hash.
        let well_formed = hash.len() == 60 && hash.as_bytes()[6] == b'$';
        return well_formed
            .then(|| Hash::Bcrypt(hash.to_owned()))
            .ok_or_else(|| malformed("bcrypt"));
    }
    if hash.starts_with("$argon2") {
        return PasswordHash::new(hash)
            .ok()
            .filter(|parsed| {
                let argon2 = matches!(
                    parsed.algorithm.as_str(),
                    "argon2id" | "argon2i" | "argon2d"
                );
                argon2 && parsed.salt.is_some() && parsed.hash.is_some()
            })
            .map(|_| Hash::Argon2(hash.to_owned()))
            .ok_or_else(|| malformed("argon2"));
    }
    Err(weak(
        if hash.starts_with("$apr1$") || hash.starts_with("$1$") {
            "an MD5 hash"
        } else if hash.starts_with("{SHA}") {
            "a SHA-1 hash"
        } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
            "a SHA-crypt hash"
        } else if hash.len() == 13 {
            "a DES crypt hash"
        } else {
            "no recognised hash (a plain password?)"
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `htpasswd -bnB alice secret` (cost 5 to keep the test quick).
    fn bcrypt_line(user: &str, password: &str) -> String {
        let hash = bcrypt::hash(password, 5).unwrap_or_else(|e| panic!("{e}"));
        format!("{user}:{hash}")
    }

    #[test]
    fn bcrypt_and_argon2_entries_check_passwords() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap_or_else(|e| panic!("{e}"));
        let argon = Argon2::default()
            .hash_password(b"hunter2", &salt)
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string();
        let text = format!(
            "# users\n{}\n\nbob:{argon}\n",
            bcrypt_line("alice", "secret")
        );
        let users = Htpasswd::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(users.users.len(), 2);
        assert!(users.verify("alice", b"secret"));
        assert!(users.verify("alice", b"secret"), "remembered");
        assert!(!users.verify("alice", b"Secret"));
        assert!(users.verify("bob", b"hunter2"));
        assert!(!users.verify("bob", b"secret"));
        assert!(!users.verify("carol", b"secret"));
    }

    #[test]
    fn weak_and_broken_entries_are_refused_with_their_line() {
        let good = bcrypt_line("alice", "x");
        let cases = [
            ("bob:$apr1$abc$def", "line 2: user `bob` has an MD5 hash"),
            (
                "bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
                "line 2: user `bob` has a SHA-1 hash",
            ),
            (
                "bob:abcdefghijklm",
                "line 2: user `bob` has a DES crypt hash",
            ),
            ("bob:secret", "line 2: user `bob` has no recognised hash"),
            (
                "bob:$2y$05$short",
                "line 2: user `bob` has a malformed bcrypt hash",
            ),
            (
                "bob:$argon2id$nope",
                "line 2: user `bob` has a malformed argon2 hash",
            ),
            ("just-a-name", "line 2: expected `user:hash`"),
        ];
        for (line, expected) in cases {
            let error = Htpasswd::parse(&format!("{good}\n{line}\n"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.starts_with(expected), "{line}: {error}");
        }
        let twice = format!("{good}\n{good}\n");
        assert_eq!(
            Htpasswd::parse(&twice).err(),
            Some(HtpasswdError::DuplicateUser {
                line: 2,
                user: "alice".to_owned()
            })
        );
        assert_eq!(
            Htpasswd::parse("# nobody\n").err(),
            Some(HtpasswdError::Empty)
        );
    }
}
