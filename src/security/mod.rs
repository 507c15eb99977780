//! Security primitives (shared/SECURITY.md), each with the parameters the design fixes:
//! - `jwt`: access tokens (HS256, `kid`, required claims, leeway, key rotation);
//! - `passwords`: Argon2id hashing, constant-effort checks for unknown users;
//! - `api_keys`: `trk_<id>_<secret>` keys stored as HMAC-SHA256 with a pepper, constant-time comparison;
//! - `crypto`: AES-256-GCM field encryption bound to table/column/tenant/row, versioned keys, rotation;
//! - `audit`: the per-tenant HMAC hash chain and its verification.
//!
//! The admin API that uses them (login, refresh rotation, RBAC, key management, encrypted MT5 credentials,
//! the audit log) is the security issue's work still to come. Until then MT5 bridges authenticate with API
//! keys listed in configuration (`[[tenants]]`); the bridge protocol does not change when keys move to
//! storage.

pub mod api_keys;
pub mod audit;
pub mod crypto;
pub mod jwt;
pub mod passwords;
pub mod rate_limit;
