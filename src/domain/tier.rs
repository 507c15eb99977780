//! The commercial tiers (free, basic, professional, enterprise) and the per-tier quotas of the settings.
//!
//! Why in `domain`: the tenant document names its tier, the settings give each tier its limits, and the rate
//! limiter, the use cases and the API all rank tiers the same way.

/// The tiers, lowest first.
pub const TIERS: [&str; 4] = ["free", "basic", "professional", "enterprise"];

/// A figure per tier: requests per minute, a count a tenant may create, or (with `u64`) a size.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierLimits<T = u32> {
    pub free: T,
    pub basic: T,
    pub professional: T,
    pub enterprise: T,
}

impl<T: Copy> TierLimits<T> {
    /// The figure of `tier` (an unknown tier gets the free tier's).
    pub fn of(&self, tier: &str) -> T {
        match tier {
            "basic" => self.basic,
            "professional" => self.professional,
            "enterprise" => self.enterprise,
            _ => self.free,
        }
    }

    pub fn per_minute(&self, tier: &str) -> T {
        self.of(tier)
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
