//! Field encryption (shared/SECURITY.md): AES-256-GCM with a random 96-bit nonce per encryption and the
//! associated data `trellis.v1|table|column|tenant|row_id|key_version`, so a ciphertext copied to another row,
//! column or tenant — or relabelled with another key version — fails to decrypt instead of leaking.
//!
//! Stored as `format version (1 byte) | key version (4 bytes, big endian) | nonce (12) | ciphertext + tag`.
//! Keys are versioned: one primary (encrypts), others decrypt-only until retired; rotation makes a new key
//! primary and re-encrypts what `needs_rotation` reports.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use rand::RngCore;
use zeroize::Zeroizing;

const FORMAT: u8 = 1;
const HEADER: usize = 1 + 4 + 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("no usable data key with version {0}")]
    UnknownKey(u32),
    #[error("the ciphertext is malformed")]
    Malformed,
    /// Wrong key, wrong row/column/tenant, or tampered bytes: GCM does not say which, on purpose.
    #[error("the ciphertext does not decrypt for this field")]
    Undecryptable,
    #[error("invalid key material: {0}")]
    BadKey(String),
}

/// Where a secret lives; bound into the ciphertext.
#[derive(Debug, Clone, Copy)]
pub struct FieldRef<'a> {
    pub table: &'a str,
    pub column: &'a str,
    pub tenant: &'a str,
    pub row_id: &'a str,
}

impl FieldRef<'_> {
    fn aad(&self, key_version: u32) -> Vec<u8> {
        format!(
            "trellis.v1|{}|{}|{}|{}|{}",
            self.table, self.column, self.tenant, self.row_id, key_version
        )
        .into_bytes()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    DecryptOnly,
    Retired,
}

struct DataKey {
    key: Zeroizing<[u8; 32]>,
    state: KeyState,
}

/// The versioned data keys.
pub struct Keyring {
    keys: BTreeMap<u32, DataKey>,
    primary: u32,
}

impl Keyring {
    /// Parses `version:base64-key[,version:base64-key…]` (as in `TRELLIS__SECURITY__DATA_KEYS`); the highest
    /// version is primary, the others decrypt-only.
    pub fn parse(spec: &str) -> Result<Self, CryptoError> {
        let mut keys = BTreeMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (v, k) = part
                .split_once(':')
                .ok_or_else(|| CryptoError::BadKey("expected version:key".into()))?;
            let version: u32 = v
                .parse()
                .map_err(|_| CryptoError::BadKey(format!("version `{v}`")))?;
            let bytes = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(k)
                    .map_err(|_| CryptoError::BadKey(format!("key {version} is not base64")))?,
            );
            let key: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| CryptoError::BadKey(format!("key {version} must be 32 bytes")))?;
            keys.insert(
                version,
                DataKey {
                    key: Zeroizing::new(key),
                    state: KeyState::DecryptOnly,
                },
            );
        }
        let primary = *keys
            .keys()
            .next_back()
            .ok_or_else(|| CryptoError::BadKey("no data key".into()))?;
        if let Some(k) = keys.get_mut(&primary) {
            k.state = KeyState::Active;
        }
        Ok(Self { keys, primary })
    }

    /// A fresh random 256-bit key, base64, for `trellis keys rotate` and tests.
    pub fn generate_key() -> String {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::thread_rng().fill_bytes(key.as_mut());
        base64::engine::general_purpose::STANDARD.encode(key.as_ref())
    }

    /// Adds `version` and makes it primary; the previous primary becomes decrypt-only.
    pub fn rotate_to(&mut self, version: u32, key_b64: &str) -> Result<(), CryptoError> {
        let added = Self::parse(&format!("{version}:{key_b64}"))?;
        let (v, k) = added
            .keys
            .into_iter()
            .next()
            .ok_or(CryptoError::UnknownKey(version))?;
        if let Some(old) = self.keys.get_mut(&self.primary) {
            old.state = KeyState::DecryptOnly;
        }
        self.keys.insert(v, k);
        self.primary = v;
        Ok(())
    }

    /// Retires a decrypt-only key: its ciphertexts no longer decrypt.
    pub fn retire(&mut self, version: u32) {
        if version != self.primary {
            if let Some(k) = self.keys.get_mut(&version) {
                k.state = KeyState::Retired;
            }
        }
    }

    pub fn primary(&self) -> u32 {
        self.primary
    }

    pub fn encrypt(&self, field: FieldRef<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = self
            .keys
            .get(&self.primary)
            .ok_or(CryptoError::UnknownKey(self.primary))?;
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.key.as_ref()));
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &field.aad(self.primary),
                },
            )
            .map_err(|_| CryptoError::Undecryptable)?;
        let mut out = Vec::with_capacity(HEADER + sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.primary.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn decrypt(
        &self,
        field: FieldRef<'_>,
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if blob.len() < HEADER + 16 || blob[0] != FORMAT {
            return Err(CryptoError::Malformed);
        }
        let version = u32::from_be_bytes([blob[1], blob[2], blob[3], blob[4]]);
        let key = self
            .keys
            .get(&version)
            .filter(|k| k.state != KeyState::Retired)
            .ok_or(CryptoError::UnknownKey(version))?;
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.key.as_ref()));
        cipher
            .decrypt(
                Nonce::from_slice(&blob[5..HEADER]),
                Payload {
                    msg: &blob[HEADER..],
                    aad: &field.aad(version),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Undecryptable)
    }

    /// Whether a ciphertext was made with a key other than the primary (rotation re-encrypts it).
    pub fn needs_rotation(&self, blob: &[u8]) -> bool {
        blob.len() >= 5 && u32::from_be_bytes([blob[1], blob[2], blob[3], blob[4]]) != self.primary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::parse(&format!("1:{}", Keyring::generate_key())).expect("keyring")
    }

    const FIELD: FieldRef<'static> = FieldRef {
        table: "mt5_accounts",
        column: "password",
        tenant: "acme",
        row_id: "7",
    };

    #[test]
    fn a_secret_round_trips_and_the_ciphertext_hides_it() {
        let r = ring();
        let blob = r.encrypt(FIELD, b"hunter2").expect("encrypt");
        assert!(!blob.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            r.decrypt(FIELD, &blob).expect("decrypt").as_slice(),
            b"hunter2"
        );
        assert_ne!(
            blob,
            r.encrypt(FIELD, b"hunter2").expect("again"),
            "a fresh nonce each time"
        );
    }

    #[test]
    fn a_ciphertext_moved_to_another_row_tenant_or_column_does_not_decrypt() {
        let r = ring();
        let blob = r.encrypt(FIELD, b"hunter2").expect("encrypt");
        for other in [
            FieldRef {
                row_id: "8",
                ..FIELD
            },
            FieldRef {
                tenant: "evil",
                ..FIELD
            },
            FieldRef {
                column: "api_secret",
                ..FIELD
            },
        ] {
            assert_eq!(
                r.decrypt(other, &blob).map(|_| ()),
                Err(CryptoError::Undecryptable)
            );
        }
        let mut tampered = blob.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            r.decrypt(FIELD, &tampered).map(|_| ()),
            Err(CryptoError::Undecryptable)
        );
    }

    #[test]
    fn rotation_keeps_old_ciphertexts_readable_until_the_old_key_is_retired() {
        let mut r = ring();
        let old = r.encrypt(FIELD, b"s1").expect("encrypt");
        r.rotate_to(2, &Keyring::generate_key()).expect("rotate");
        assert!(r.needs_rotation(&old));
        let plain = r.decrypt(FIELD, &old).expect("old key decrypts");
        let new = r.encrypt(FIELD, &plain).expect("re-encrypt");
        assert!(!r.needs_rotation(&new));
        r.retire(1);
        assert_eq!(
            r.decrypt(FIELD, &old).map(|_| ()),
            Err(CryptoError::UnknownKey(1))
        );
        assert_eq!(r.decrypt(FIELD, &new).expect("new").as_slice(), b"s1");
    }
}
