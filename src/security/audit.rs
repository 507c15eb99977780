//! The tamper-evident audit log: each tenant's entries form a chain in which entry n carries
//! HMAC-SHA256(key, n ‖ hash of entry n−1 ‖ canonical JSON of entry n). Changing, removing or reordering an
//! entry breaks every hash after it, and without the key a forger cannot recompute them. `verify` names the
//! first broken entry.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// One entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// The event: what happened, who did it, to what. Never tokens, passwords, keys or MT5 credentials.
    pub body: serde_json::Value,
    /// Hex HMAC of this entry.
    pub hash: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuditError {
    #[error("invalid audit key")]
    Key,
    #[error("entry {seq} is broken: {reason}")]
    Broken { seq: u64, reason: &'static str },
}

/// `serde_json` sorts object keys (no `preserve_order` feature), so this is canonical.
fn canonical(body: &serde_json::Value) -> String {
    body.to_string()
}

fn chain_hash(
    key: &[u8],
    seq: u64,
    previous: &str,
    body: &serde_json::Value,
) -> Result<String, AuditError> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| AuditError::Key)?;
    mac.update(&seq.to_be_bytes());
    mac.update(previous.as_bytes());
    mac.update(canonical(body).as_bytes());
    Ok(mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The next entry after `last` (or the first one).
pub fn append(
    key: &[u8],
    last: Option<&Entry>,
    body: serde_json::Value,
) -> Result<Entry, AuditError> {
    let (seq, previous) = last.map_or((1, String::new()), |e| (e.seq + 1, e.hash.clone()));
    let hash = chain_hash(key, seq, &previous, &body)?;
    Ok(Entry { seq, body, hash })
}

/// Checks a tenant's entries in order.
pub fn verify(key: &[u8], entries: &[Entry]) -> Result<(), AuditError> {
    let mut previous = String::new();
    for (i, e) in entries.iter().enumerate() {
        if e.seq != i as u64 + 1 {
            return Err(AuditError::Broken {
                seq: i as u64 + 1,
                reason: "missing or out of order",
            });
        }
        if chain_hash(key, e.seq, &previous, &e.body)? != e.hash {
            return Err(AuditError::Broken {
                seq: e.seq,
                reason: "hash does not match its content",
            });
        }
        previous = e.hash.clone();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(key: &[u8]) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        for action in ["login_ok", "key_created", "kill_switch_on"] {
            let e = append(
                key,
                out.last(),
                json!({"action": action, "actor": "ops@acme"}),
            )
            .expect("append");
            out.push(e);
        }
        out
    }

    #[test]
    fn an_intact_chain_verifies_and_a_tampered_entry_is_named() {
        let key = b"audit-key";
        let mut entries = chain(key);
        assert_eq!(verify(key, &entries), Ok(()));
        entries[1].body = json!({"action": "nothing to see", "actor": "ops@acme"});
        assert_eq!(
            verify(key, &entries),
            Err(AuditError::Broken {
                seq: 2,
                reason: "hash does not match its content"
            })
        );
    }

    #[test]
    fn a_removed_entry_or_a_recomputed_hash_without_the_key_is_detected() {
        let key = b"audit-key";
        let mut entries = chain(key);
        entries.remove(1);
        assert!(matches!(
            verify(key, &entries),
            Err(AuditError::Broken { seq: 2, .. })
        ));
        let mut forged = chain(key);
        forged[2] = append(
            b"forger's key",
            Some(&forged[1]),
            json!({"action": "kill_switch_off"}),
        )
        .expect("append");
        assert!(matches!(
            verify(key, &forged),
            Err(AuditError::Broken { seq: 3, .. })
        ));
    }
}
