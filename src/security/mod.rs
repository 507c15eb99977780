//! Security primitives (shared/SECURITY.md), each with the parameters the design fixes:
//! - `jwt`: access tokens (HS256, `kid`, required claims, leeway, key rotation);
//! - `passwords`: Argon2id hashing, constant-effort checks for unknown users;
//! - `api_keys`: `trk_<id>_<secret>` keys stored as HMAC-SHA256 with a pepper, constant-time comparison;
//! - `crypto`: AES-256-GCM field encryption bound to table/column/tenant/row, versioned keys, rotation;
//! - `audit`: the per-tenant HMAC hash chain and its verification.
//!
//! - `rbac`: roles, key scopes and what each route requires;
//! - `secrets`: where the secrets come from (configuration, else a generated `secrets.json`);
//! - `service`: login, refresh rotation, sessions, API keys, MT5 credentials and the audit log, over the
//!   security store, with the in-memory checks every request runs.

pub mod api_keys;
pub mod audit;
pub mod crypto;
pub mod jwt;
pub mod passwords;
pub mod rate_limit;
pub mod rbac;
pub mod secrets;
pub mod service;
