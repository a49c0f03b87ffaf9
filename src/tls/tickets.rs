//! TLS session resumption: tickets (TLS 1.3, and TLS 1.2 clients that ask
//! for them) and a cache of TLS 1.2 session IDs.
//!
//! Without a key file, tickets are sealed with the process's own keys,
//! which rustls rotates every 6 hours (keeping the previous key to open
//! older tickets). They, and the session cache, are made once per process:
//! a reload keeps every ticket it issued valid. With `ticket_keys`, the
//! keys come from a file that replicas share, so a client that lands on
//! another replica after a rolling update resumes there too.

use std::sync::{Arc, OnceLock};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
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

/// How long a client may hold a ticket sealed with file keys. The
/// operator's rotation of the file bounds what a stolen key opens.
const FILE_TICKET_LIFETIME: u32 = 12 * 60 * 60;

/// What a TLS listener resumes sessions with.
#[derive(Debug, Clone)]
pub struct Resumption {
    pub ticketer: Arc<dyn ProducesTickets>,
    pub sessions: Arc<dyn StoresServerSessions>,
}

impl Resumption {
    /// The process's own: made once, shared by every listener and snapshot.
    pub fn process() -> Result<Resumption, rustls::Error> {
        static OWN: OnceLock<Result<Resumption, rustls::Error>> = OnceLock::new();
        OWN.get_or_init(|| {
            Ok(Resumption {
                ticketer: rustls::crypto::aws_lc_rs::Ticketer::new()?,
                sessions: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
            })
        })
        .clone()
    }

    /// Tickets sealed with `keys` (the first seals, all open), with the
    /// process's session cache.
    pub fn with_keys(keys: &[[u8; TICKET_KEY_LEN]]) -> Result<Resumption, rustls::Error> {
        let own = Resumption::process()?;
        let keys = keys
            .iter()
            .map(|key| {
                let (name, secret) = key.split_at(NAME_LEN);
                let unbound = UnboundKey::new(&AES_256_GCM, secret)
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
            sessions: own.sessions,
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

/// Tickets as `name ‖ nonce ‖ AES-256-GCM(state, aad = name)`.
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
        let sealing = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + 16);
        ticket.extend_from_slice(&sealing.name);
        ticket.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
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

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let name = ticket.get(..NAME_LEN)?;
        let nonce = ticket.get(NAME_LEN..NAME_LEN + NONCE_LEN)?;
        let opening = self.keys.iter().find(|key| key.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = ticket.get(NAME_LEN + NONCE_LEN..)?.to_vec();
        let plain = opening
            .key
            .open_in_place(nonce, Aad::from(opening.name), &mut sealed)
            .ok()?;
        Some(plain.to_vec())
    }
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
