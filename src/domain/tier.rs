//! The commercial tiers (free, basic, professional, enterprise) and the per-tier quotas of the settings.
//!
//! Why in `domain`: the tenant document names its tier, the settings give each tier its limits, and the rate
//! limiter, the use cases and the API all rank tiers the same way.

/// The tiers, lowest first.
pub const TIERS: [&str; 4] = ["free", "basic", "professional", "enterprise"];

/// Requests per minute of each tier.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierLimits {
    pub free: u32,
    pub basic: u32,
    pub professional: u32,
    pub enterprise: u32,
}

impl TierLimits {
    pub fn per_minute(&self, tier: &str) -> u32 {
        match tier {
            "basic" => self.basic,
            "professional" => self.professional,
            "enterprise" => self.enterprise,
            _ => self.free,
        }
    }
}

/// A tenant's tier (its limits and what it may do), lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Basic,
    Professional,
    Enterprise,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Basic => "basic",
            Self::Professional => "professional",
            Self::Enterprise => "enterprise",
        }
    }
}
