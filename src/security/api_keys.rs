//! API keys for bridges and bots: `trk_<8-char id>_<base62 of 32 random bytes>`, shown once. Stored as the id
//! and HMAC-SHA256(pepper, secret); a presented key is checked in constant time (`subtle`).

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use subtle::ConstantTimeEq;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A newly made key: `full` is shown to the user once, the rest is stored.
pub struct NewKey {
    pub id: String,
    pub full: String,
    pub hash: [u8; 32],
}

fn base62(rng: &mut impl Rng, len: usize) -> String {
    (0..len)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect()
}

/// The pepper could not key HMAC (HMAC takes keys of any length, so this is a programming error).
#[derive(Debug, thiserror::Error)]
#[error("invalid HMAC key")]
pub struct PepperError;

/// HMAC-SHA256 of a secret under the pepper.
pub fn digest(pepper: &[u8], secret: &str) -> Result<[u8; 32], PepperError> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(pepper).map_err(|_| PepperError)?;
    mac.update(secret.as_bytes());
    Ok(mac.finalize().into_bytes().into())
}

pub fn generate(pepper: &[u8]) -> Result<NewKey, PepperError> {
    let mut rng = rand::thread_rng();
    let id = base62(&mut rng, 8);
    // 43 base62 characters carry more than 256 bits.
    let secret = base62(&mut rng, 43);
    Ok(NewKey {
        full: format!("trk_{id}_{secret}"),
        hash: digest(pepper, &secret)?,
        id,
    })
}

/// Splits a presented key into (id, secret), or `None` when it is not shaped like one.
pub fn parse(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("trk_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 8
        && !secret.is_empty()
        && id
            .bytes()
            .chain(secret.bytes())
            .all(|b| BASE62.contains(&b)))
    .then_some((id, secret))
}

/// Whether `secret` matches the stored hash, in constant time.
pub fn matches(pepper: &[u8], secret: &str, stored: &[u8; 32]) -> bool {
    digest(pepper, secret)
        .map(|d| d.ct_eq(stored).into())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_and_matches_only_its_own_secret() {
        let pepper = b"pepper";
        let key = generate(pepper).expect("key");
        let (id, secret) = parse(&key.full).expect("well-formed");
        assert_eq!(id, key.id);
        assert!(matches(pepper, secret, &key.hash));
        assert!(!matches(pepper, "wrong", &key.hash));
        assert!(!matches(b"other pepper", secret, &key.hash));
        assert!(parse("trk_short_x").is_none());
        assert!(parse("sk_12345678_abc").is_none());
    }
}
