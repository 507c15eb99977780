//! Roles, API-key scopes and what each route requires. One table ([`Access`]) is read by the route table
//! (to check), by the OpenAPI document (to describe) and by the authorization-matrix test (to prove), so the
//! three cannot disagree.
//!
//! The rules: a platform administrator may act on every tenant; everyone else only on the tenant of their
//! verified token or key, and another tenant's objects answer 404 (their existence is not revealed). Within
//! the tenant the roles are ordered viewer < trader < tenant_admin. API keys carry scopes instead of roles:
//! `read` reads, `trade` also trades (kill switch, strategies), `market:write` is for MT5 bridges; no key
//! may administer.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Trader,
    TenantAdmin,
    PlatformAdmin,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::PlatformAdmin,
        Role::TenantAdmin,
        Role::Trader,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Trader => "trader",
            Self::TenantAdmin => "tenant_admin",
            Self::PlatformAdmin => "platform_admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// An API key's permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Scope {
    #[serde(rename = "read")]
    Read,
    #[serde(rename = "trade")]
    Trade,
    #[serde(rename = "market:write")]
    MarketWrite,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Trade => "trade",
            Self::MarketWrite => "market:write",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Read, Self::Trade, Self::MarketWrite]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Anyone (login, refresh, health, the API document).
    Public,
    /// Any signed-in user or key.
    Authenticated,
    /// Viewer and above, or a key with `read`.
    Read,
    /// Trader and above, or a key with `trade`.
    Trade,
    /// Tenant administrator and above; never a key.
    Admin,
    /// Platform administrators only.
    Platform,
}

impl Access {
    /// The least role a user needs.
    pub fn min_role(self) -> Option<Role> {
        match self {
            Self::Public | Self::Authenticated | Self::Read => Some(Role::Viewer),
            Self::Trade => Some(Role::Trader),
            Self::Admin => Some(Role::TenantAdmin),
            Self::Platform => Some(Role::PlatformAdmin),
        }
    }

    /// The scope a key needs; `None`: keys may not.
    pub fn key_scope(self) -> Option<Option<Scope>> {
        match self {
            Self::Public | Self::Authenticated => Some(None),
            Self::Read => Some(Some(Scope::Read)),
            Self::Trade => Some(Some(Scope::Trade)),
            Self::Admin | Self::Platform => None,
        }
    }

    /// Whether a user with `role` may.
    pub fn allows_role(self, role: Role) -> bool {
        self.min_role().is_none_or(|min| role >= min)
    }

    /// Whether a key with `scopes` may (`trade` implies `read`).
    pub fn allows_scopes(self, scopes: &[Scope]) -> bool {
        match self.key_scope() {
            None => false,
            Some(None) => true,
            Some(Some(Scope::Read)) => scopes
                .iter()
                .any(|s| matches!(s, Scope::Read | Scope::Trade)),
            Some(Some(need)) => scopes.contains(&need),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_keys_never_administer() {
        assert!(Access::Trade.allows_role(Role::TenantAdmin));
        assert!(!Access::Trade.allows_role(Role::Viewer));
        assert!(!Access::Admin.allows_role(Role::Trader));
        assert!(Access::Platform.allows_role(Role::PlatformAdmin));
        assert!(!Access::Platform.allows_role(Role::TenantAdmin));
        assert!(Access::Read.allows_scopes(&[Scope::Trade]));
        assert!(!Access::Trade.allows_scopes(&[Scope::Read]));
        assert!(!Access::Admin.allows_scopes(&[Scope::Read, Scope::Trade, Scope::MarketWrite]));
        assert!(!Access::Read.allows_scopes(&[Scope::MarketWrite]));
    }
}
