//! Authentication, authorisation, encryption and the audit log (shared/SECURITY.md).
//!
//! Until the security issue lands, MT5 bridges authenticate with API keys listed in configuration
//! (`[[tenants]]` entries); the bridge protocol does not change when keys move to storage.
