//! Access tokens (shared/SECURITY.md): JWTs signed HS256 with a 256-bit secret named by the header's `kid`,
//! claims `iss, aud, sub, tid, role, sid, jti, iat, nbf, exp`, 10 minutes. Verification accepts exactly one
//! algorithm, requires `exp, nbf, iss, aud, sub`, checks `nbf` with 30 s of leeway, and looks the key up by
//! `kid` — so a new signing key can verify before it signs and an old one keeps verifying until its tokens
//! expire. Revocation (session denylist by `jti`, per-user "valid after") is the caller's check on the claims.

use std::collections::HashMap;

use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    /// The tenant: taken from a verified token only, never from a request body.
    pub tid: String,
    pub role: String,
    /// The session (refresh-token family) this token belongs to.
    pub sid: String,
    pub jti: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the token is not a JWT trellis accepts")]
    Malformed,
    #[error("the token's key id is unknown")]
    UnknownKey,
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

/// Signing and verification keys by `kid`.
pub struct JwtKeys {
    keys: HashMap<String, Zeroizing<Vec<u8>>>,
    signing: String,
    issuer: String,
    audience: String,
    ttl_secs: u64,
}

impl JwtKeys {
    pub fn new(issuer: &str, audience: &str, kid: &str, secret: &[u8], ttl_secs: u64) -> Self {
        let mut keys = HashMap::new();
        keys.insert(kid.to_owned(), Zeroizing::new(secret.to_vec()));
        Self {
            keys,
            signing: kid.to_owned(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_secs,
        }
    }

    /// Adds a key that verifies; `sign` also makes it the signing key.
    pub fn add_key(&mut self, kid: &str, secret: &[u8], sign: bool) {
        self.keys
            .insert(kid.to_owned(), Zeroizing::new(secret.to_vec()));
        if sign {
            self.signing = kid.to_owned();
        }
    }

    /// Stops accepting tokens of `kid` (after its tokens' lifetime plus leeway).
    pub fn remove_key(&mut self, kid: &str) {
        if kid != self.signing {
            self.keys.remove(kid);
        }
    }

    pub fn issue(
        &self,
        sub: &str,
        tid: &str,
        role: &str,
        sid: &str,
        now: u64,
    ) -> Result<(String, Claims), JwtError> {
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: sub.to_owned(),
            tid: tid.to_owned(),
            role: role.to_owned(),
            sid: sid.to_owned(),
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            nbf: now,
            exp: now + self.ttl_secs,
        };
        let secret = self.keys.get(&self.signing).ok_or(JwtError::UnknownKey)?;
        let header = Header {
            kid: Some(self.signing.clone()),
            ..Header::new(Algorithm::HS256)
        };
        let token = encode(&header, &claims, &EncodingKey::from_secret(secret))
            .map_err(|e| JwtError::Invalid(e.to_string()))?;
        Ok((token, claims))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let header = decode_header(token).map_err(|_| JwtError::Malformed)?;
        if header.alg != Algorithm::HS256 {
            return Err(JwtError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header.kid.ok_or(JwtError::UnknownKey)?;
        let secret = self.keys.get(&kid).ok_or(JwtError::UnknownKey)?;
        let mut v = Validation::new(Algorithm::HS256);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = LEEWAY_SECS;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        decode::<Claims>(token, &DecodingKey::from_secret(secret), &v)
            .map(|d| d.claims)
            .map_err(|e| JwtError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn keys() -> JwtKeys {
        JwtKeys::new("trellis", "trellis-api", "k1", SECRET, 600)
    }

    fn forge(header: serde_json::Value, claims: &Claims, alg: Algorithm, secret: &[u8]) -> String {
        let h = Header {
            alg,
            kid: header["kid"].as_str().map(str::to_owned),
            ..Header::new(alg)
        };
        encode(&h, claims, &EncodingKey::from_secret(secret)).expect("encode")
    }

    #[test]
    fn a_token_verifies_with_its_claims() {
        let k = keys();
        let (token, claims) = k
            .issue("user-1", "acme", "trader", "sid-1", now())
            .expect("issue");
        assert_eq!(k.verify(&token), Ok(claims.clone()));
        assert_eq!(
            (claims.tid.as_str(), claims.exp - claims.iat),
            ("acme", 600)
        );
    }

    #[test]
    fn alg_none_wrong_algorithm_audience_issuer_and_tampering_are_refused() {
        let k = keys();
        let (token, claims) = k
            .issue("user-1", "acme", "trader", "sid-1", now())
            .expect("issue");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = token.split('.').nth(1).expect("payload");
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","kid":"k1"}"#),
            payload
        );
        assert!(k.verify(&none).is_err(), "alg none");
        let hs512 = forge(
            serde_json::json!({"kid": "k1"}),
            &claims,
            Algorithm::HS512,
            SECRET,
        );
        assert!(
            matches!(k.verify(&hs512), Err(JwtError::Invalid(_))),
            "wrong algorithm"
        );
        let wrong_aud = forge(
            serde_json::json!({"kid": "k1"}),
            &Claims {
                aud: "other".into(),
                ..claims.clone()
            },
            Algorithm::HS256,
            SECRET,
        );
        assert!(
            matches!(k.verify(&wrong_aud), Err(JwtError::Invalid(_))),
            "wrong aud"
        );
        let wrong_iss = forge(
            serde_json::json!({"kid": "k1"}),
            &Claims {
                iss: "evil".into(),
                ..claims.clone()
            },
            Algorithm::HS256,
            SECRET,
        );
        assert!(
            matches!(k.verify(&wrong_iss), Err(JwtError::Invalid(_))),
            "wrong iss"
        );
        // Another tenant's claims under the original signature.
        let parts: Vec<&str> = token.split('.').collect();
        let other = b64.encode(
            serde_json::to_vec(&Claims {
                tid: "victim".into(),
                ..claims.clone()
            })
            .expect("json"),
        );
        let tampered = format!("{}.{}.{}", parts[0], other, parts[2]);
        assert!(
            matches!(k.verify(&tampered), Err(JwtError::Invalid(_))),
            "tampered payload"
        );
    }

    #[test]
    fn expired_not_yet_valid_and_unknown_kid_tokens_are_refused_and_rotation_keeps_old_tokens_valid(
    ) {
        let mut k = keys();
        let t = now();
        let (expired, _) = k.issue("u", "acme", "trader", "s", t - 700).expect("issue");
        assert!(
            matches!(k.verify(&expired), Err(JwtError::Invalid(_))),
            "expired beyond leeway"
        );
        let (future, _) = k.issue("u", "acme", "trader", "s", t + 120).expect("issue");
        assert!(
            matches!(k.verify(&future), Err(JwtError::Invalid(_))),
            "not yet valid beyond leeway"
        );
        let (_, claims) = k.issue("u", "acme", "trader", "s", t).expect("issue");
        let unknown = forge(
            serde_json::json!({"kid": "k9"}),
            &claims,
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(k.verify(&unknown), Err(JwtError::UnknownKey));

        let (old, _) = k.issue("u", "acme", "trader", "s", t).expect("issue");
        k.add_key("k2", b"fedcba9876543210fedcba9876543210", true);
        let (new, _) = k.issue("u", "acme", "trader", "s", t).expect("issue");
        assert!(
            k.verify(&old).is_ok() && k.verify(&new).is_ok(),
            "both keys verify during rotation"
        );
        k.remove_key("k1");
        assert_eq!(k.verify(&old), Err(JwtError::UnknownKey));
    }
}
