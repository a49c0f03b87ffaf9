//! TLS session resumption: tickets (TLS 1.3, and TLS 1.2 clients that ask
//! for them) and a cache of TLS 1.2 session IDs.
//!
//! Without a key file, tickets are sealed with the process's own keys,
//! which rustls rotates every 6 hours (keeping the previous key to open
//! older tickets). They, and the session cache, are made once per process:
//! a reload keeps every ticket it issued valid. With `ticket_keys`, the
//! keys come from a file that replicas share, so a client that lands on
//! another replica after a rolling update resumes there too.
//!
//! A resumed session keeps the client certificate of its first handshake
//! without checking it again, so listeners that verify client certificates
//! never share: each gets a ticketer and cache of its own, made again on
//! every reload (a new CA or CRL then applies to every client at once).

use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::{Arc, OnceLock};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM_SIV, NONCE_LEN};
use base64::Engine;
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};

/// Bytes in one line of a key file, decoded: a 16-byte name, a 32-byte key.
pub const TICKET_KEY_LEN: usize = 48;
const NAME_LEN: usize = 16;

/// Keys a file may hold: one that seals and a few older ones that open.
pub const MAX_TICKET_KEYS: usize = 8;

/// TLS 1.2 sessions remembered by ID, for clients without tickets; each is
/// a few hundred bytes.
const SESSION_CACHE_SIZE: usize = 4096;

/// How long a ticket sealed with file keys opens, checked against the time
/// sealed inside it; the operator's rotation of the file bounds what a
/// stolen key opens.
const FILE_TICKET_LIFETIME: u32 = 12 * 60 * 60;

/// Bytes of the sealing time (seconds since the epoch) before the state.
const TIME_LEN: usize = 8;

/// What a TLS listener resumes sessions with.
#[derive(Debug, Clone)]
pub struct Resumption {
    pub ticketer: Arc<dyn ProducesTickets>,
    pub sessions: Arc<dyn StoresServerSessions>,
}

impl Resumption {
    /// The process's own: made once, shared by every listener without
    /// client certificates and by every snapshot. A failure to make it is
    /// not kept: the next reload tries again.
    pub fn process() -> Result<Resumption, rustls::Error> {
        static OWN: OnceLock<Resumption> = OnceLock::new();
        if let Some(own) = OWN.get() {
            return Ok(own.clone());
        }
        let made = Resumption::fresh()?;
        Ok(OWN.get_or_init(|| made).clone())
    }

    /// A ticketer and cache of one listener's own, for one snapshot.
    pub fn fresh() -> Result<Resumption, rustls::Error> {
        Ok(Resumption {
            ticketer: rustls::crypto::aws_lc_rs::Ticketer::new()?,
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
        })
    }

    /// Tickets sealed with `keys` (the first seals, all open), with a
    /// session cache of the process.
    pub fn with_keys(keys: &[[u8; TICKET_KEY_LEN]]) -> Result<Resumption, rustls::Error> {
        static SESSIONS: OnceLock<Arc<ServerSessionMemoryCache>> = OnceLock::new();
        let sessions = SESSIONS.get_or_init(|| ServerSessionMemoryCache::new(SESSION_CACHE_SIZE));
        let keys = keys
            .iter()
            .map(|key| {
                let (name, secret) = key.split_at(NAME_LEN);
                let unbound = UnboundKey::new(&AES_256_GCM_SIV, secret)
                    .map_err(|_| rustls::Error::General("unusable ticket key".into()))?;
                let mut key_name = [0u8; NAME_LEN];
                key_name.copy_from_slice(name);
                Ok(TicketKey {
                    name: key_name,
                    key: LessSafeKey::new(unbound),
                })
            })
            .collect::<Result<Vec<_>, rustls::Error>>()?;
        Ok(Resumption {
            ticketer: Arc::new(FileTicketer { keys }),
            sessions: Arc::clone(sessions) as Arc<dyn StoresServerSessions>,
        })
    }
}

/// Why a ticket key file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketKeyError {
    #[error("line {0} is not a ticket key: each line is 48 random bytes in base64, as `openssl rand -base64 48` writes them")]
    BadLine(usize),
    #[error("it holds no key; write one with `openssl rand -base64 48 > FILE`")]
    Empty,
    #[error("it holds more than {MAX_TICKET_KEYS} keys; keep the newest (first) and the one or two before it")]
    TooMany,
}

/// The keys of a ticket key file: one base64 line each, the first the one
/// that seals; blank lines and `#` comments are skipped.
pub fn parse_ticket_keys(text: &str) -> Result<Vec<[u8; TICKET_KEY_LEN]>, TicketKeyError> {
    let mut keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(line)
            .ok()
            .and_then(|bytes| <[u8; TICKET_KEY_LEN]>::try_from(bytes).ok())
            .ok_or(TicketKeyError::BadLine(index + 1))?;
        keys.push(decoded);
    }
    match keys.len() {
        0 => Err(TicketKeyError::Empty),
        n if n > MAX_TICKET_KEYS => Err(TicketKeyError::TooMany),
        _ => Ok(keys),
    }
}

struct TicketKey {
    name: [u8; NAME_LEN],
    key: LessSafeKey,
}

/// Tickets as `name ‖ nonce ‖ AES-256-GCM-SIV(sealing time ‖ state, aad =
/// name)`. SIV: a fleet sealing billions of tickets under one key with
/// random nonces may repeat one, which plain GCM would not survive.
struct FileTicketer {
    keys: Vec<TicketKey>,
}

impl std::fmt::Debug for FileTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileTicketer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl ProducesTickets for FileTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        FILE_TICKET_LIFETIME
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal(now_secs(), plain)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        self.open(ticket)
    }
}

impl FileTicketer {
    /// A ticket for `plain` that says it was sealed at `when`.
    fn seal(&self, when: u64, plain: &[u8]) -> Option<Vec<u8>> {
        let sealing = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + 16);
        ticket.extend_from_slice(&sealing.name);
        ticket.extend_from_slice(&nonce);
        let mut sealed = Vec::with_capacity(TIME_LEN + plain.len() + 16);
        sealed.extend_from_slice(&when.to_be_bytes());
        sealed.extend_from_slice(plain);
        sealing
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(sealing.name),
                &mut sealed,
            )
            .ok()?;
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn open(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let name = ticket.get(..NAME_LEN)?;
        let nonce = ticket.get(NAME_LEN..NAME_LEN + NONCE_LEN)?;
        let opening = self.keys.iter().find(|key| key.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = ticket.get(NAME_LEN + NONCE_LEN..)?.to_vec();
        let opened = opening
            .key
            .open_in_place(nonce, Aad::from(opening.name), &mut sealed)
            .ok()?;
        let (sealed_at, plain) = opened.split_at_checked(TIME_LEN)?;
        let sealed_at = u64::from_be_bytes(sealed_at.try_into().ok()?);
        let age = now_secs().checked_sub(sealed_at)?;
        (age <= u64::from(FILE_TICKET_LIFETIME)).then(|| plain.to_vec())
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> [u8; TICKET_KEY_LEN] {
        [seed; TICKET_KEY_LEN]
    }

    #[test]
    fn tickets_open_with_any_listed_key_and_nothing_else() {
        let old = Resumption::with_keys(&[key(1)]).unwrap().ticketer;
        let rotated = Resumption::with_keys(&[key(2), key(1)]).unwrap().ticketer;
        let other = Resumption::with_keys(&[key(3)]).unwrap().ticketer;
        let ticket = old.encrypt(b"session state").unwrap();
        assert_eq!(
            rotated.decrypt(&ticket).as_deref(),
            Some(&b"session state"[..])
        );
        assert_eq!(other.decrypt(&ticket), None);
        let newer = rotated.encrypt(b"newer").unwrap();
        assert_eq!(old.decrypt(&newer), None);
        // Tampering, truncation and garbage are refused, never a panic.
        let mut tampered = ticket.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(rotated.decrypt(&tampered), None);
        for cut in 0..ticket.len() {
            assert_eq!(rotated.decrypt(&ticket[..cut]), None);
        }
    }

    #[test]
    fn tickets_older_than_their_lifetime_do_not_open() {
        let ticketer = FileTicketer {
            keys: vec![TicketKey {
                name: [9; NAME_LEN],
                key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM_SIV, &[9; 32]).unwrap()),
            }],
        };
        let lifetime = u64::from(FILE_TICKET_LIFETIME);
        let recent = ticketer.seal(now_secs() - lifetime + 60, b"state").unwrap();
        assert_eq!(ticketer.open(&recent).as_deref(), Some(&b"state"[..]));
        let stale = ticketer.seal(now_secs() - lifetime - 60, b"state").unwrap();
        assert_eq!(ticketer.open(&stale), None);
        let future = ticketer.seal(now_secs() + 3600, b"state").unwrap();
        assert_eq!(ticketer.open(&future), None);
    }

    #[test]
    fn key_files_are_base64_lines() {
        let line = base64::engine::general_purpose::STANDARD.encode(key(7));
        let text = format!("# rotated 2026-12-05\n{line}\n\n{line}\n");
        assert_eq!(parse_ticket_keys(&text), Ok(vec![key(7), key(7)]));
        assert_eq!(parse_ticket_keys("# nothing\n"), Err(TicketKeyError::Empty));
        assert_eq!(
            parse_ticket_keys(&format!("{line}\nc2hvcnQ=\n")),
            Err(TicketKeyError::BadLine(2))
        );
        let many = format!("{line}\n").repeat(MAX_TICKET_KEYS + 1);
        assert_eq!(parse_ticket_keys(&many), Err(TicketKeyError::TooMany));
    }
}
