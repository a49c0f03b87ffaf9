//! How a pool orders its backends for one request: round-robin, fewest
//! requests or sessions in progress, or a consistent hash of a key taken
//! from the request.
//!
//! The hash is rendezvous hashing (highest random weight): every backend
//! gets a score from the key and the backend's own identity, and the
//! highest score wins. Adding a backend moves only the keys it now wins
//! (about 1/N of them), and the answer depends on nothing but the key and
//! the configured backends, so every replica of the gateway, started in any
//! order, picks the same backend for the same key.

use std::net::IpAddr;

use http::header::{HeaderMap, COOKIE};

use crate::model::HashKey;

/// The hash of `key` in a request. A request without the cookie or
/// header hashes its client address instead, so it still sticks to one
/// backend rather than all such requests piling onto one.
pub fn key_hash(key: &HashKey, headers: &HeaderMap, client_ip: IpAddr) -> u64 {
    let found = match key {
        HashKey::Cookie(name) => cookie(headers, name),
        HashKey::Header(name) => headers.get(name).map(|value| value.as_bytes()),
        HashKey::ClientIp => None,
    };
    match found {
        Some(bytes) => stable_hash(bytes),
        None => match client_ip {
            IpAddr::V4(v4) => stable_hash(&v4.octets()),
            IpAddr::V6(v6) => stable_hash(&v6.octets()),
        },
    }
}
/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let (key, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
            (key == name.as_bytes()).then(|| value[1..].trim_ascii())
        })
}

/// A hash that is the same on every machine, build and run (unlike std's
/// `DefaultHasher`): FNV-1a, then a mixing step so that nearby inputs
/// spread over the whole range.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(hash)
}

/// The rendezvous score of a backend (by identity hash) for a key hash.
pub fn score(key: u64, backend: u64) -> u64 {
    mix(key ^ backend)
}

/// SplitMix64's finaliser: a bijection with full avalanche.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn winner(key: u64, backends: &[u64]) -> u64 {
        *backends
            .iter()
            .max_by_key(|&&b| score(key, b))
            .expect("backends")
    }

    #[test]
    fn adding_a_backend_moves_only_its_share_of_keys() {
        let ids: Vec<u64> = (0..5)
            .map(|i| stable_hash(format!("10.0.0.{i}:80").as_bytes()))
            .collect();
        let keys: Vec<u64> = (0..20_000)
            .map(|i| stable_hash(format!("user-{i}").as_bytes()))
            .collect();
        let before: Vec<u64> = keys.iter().map(|&k| winner(k, &ids[..4])).collect();
        let after: Vec<u64> = keys.iter().map(|&k| winner(k, &ids)).collect();
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        // Every key that moved went to the new backend.
        assert!(before
            .iter()
            .zip(&after)
            .all(|(b, a)| b == a || *a == ids[4]));
        let share = moved as f64 / keys.len() as f64;
        assert!((0.17..0.23).contains(&share), "moved {share}");
        // And the four old backends share the rest evenly.
        for id in &ids[..4] {
            let count = before.iter().filter(|&&w| w == *id).count() as f64;
            assert!((0.22..0.28).contains(&(count / keys.len() as f64)));
        }
    }

    #[test]
    fn the_hash_is_fixed_across_builds() {
        // Replicas built by different compilers must agree.
        assert_eq!(stable_hash(b""), mix(0xcbf2_9ce4_8422_2325));
        assert_eq!(stable_hash(b"a"), mix(0xaf63_dc4c_8601_ec8c));
    }

    #[test]
    fn keys_come_from_cookie_header_or_address() {
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("theme=dark; sid=abc ;x=1"));
        headers.insert("x-user", HeaderValue::from_static("u7"));
        let sid = HashKey::parse("cookie:sid").expect("valid");
        assert_eq!(key_hash(&sid, &headers, ip), stable_hash(b"abc"));
        assert_eq!(
            key_hash(&sid, &headers, ip),
            key_hash(&sid, &headers, other)
        );
        let user = HashKey::parse("header:X-User").expect("valid");
        assert_eq!(key_hash(&user, &headers, ip), stable_hash(b"u7"));
        let missing = HashKey::parse("cookie:none").expect("valid");
        assert_eq!(
            key_hash(&missing, &headers, ip),
            key_hash(&HashKey::ClientIp, &headers, ip)
        );
        assert_ne!(
            key_hash(&HashKey::ClientIp, &headers, ip),
            key_hash(&HashKey::ClientIp, &headers, other)
        );
        for bad in [
            "cookie:",
            "cookie:a b",
            "header:",
            "header:a b",
            "ip",
            "client-ip",
        ] {
            assert_eq!(HashKey::parse(bad), None, "{bad}");
        }
    }
}
