//! What a tenant's event is about: the kinds of the events its actors publish on the event bus, which the
//! trading clients (`/ws/v1/client`, `/ws/events`), the log tiers and other nodes receive.
//!
//! Typed so that a consumer matches a variant (and the compiler finds every consumer when a kind is added)
//! instead of comparing strings; serialised as the lower-case names clients have always received.

use serde::{Deserialize, Serialize};

/// The kind of a tenant event. The event's `data` is the JSON of the thing named: an `Order`, a `Deal`, a
/// position snapshot, the risk state, …
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// An order was created or changed state (`data`: the order).
    Order,
    /// A deal was booked (`data`: the deal).
    Fill,
    /// An account's position in a symbol changed.
    Position,
    /// Risk limits or state changed (kill switch, PnL, blind accounts).
    Risk,
    /// The correlation engine has a new covariance.
    Correlation,
    /// A model deployment made a prediction.
    Prediction,
    /// A strategy was created, changed, started or stopped.
    Strategy,
    /// A model deployment or version changed state.
    Model,
    /// The books were reconciled with a terminal's record.
    Reconciliation,
    /// The tenant itself changed (tier, limits, suspension).
    Tenant,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Order => "order",
            Self::Fill => "fill",
            Self::Position => "position",
            Self::Risk => "risk",
            Self::Correlation => "correlation",
            Self::Prediction => "prediction",
            Self::Strategy => "strategy",
            Self::Model => "model",
            Self::Reconciliation => "reconciliation",
            Self::Tenant => "tenant",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_serialises_as_its_lower_case_name() {
        for kind in [
            EventKind::Order,
            EventKind::Fill,
            EventKind::Position,
            EventKind::Risk,
            EventKind::Correlation,
            EventKind::Prediction,
            EventKind::Strategy,
            EventKind::Model,
            EventKind::Reconciliation,
            EventKind::Tenant,
        ] {
            let json = serde_json::to_value(kind).expect("serialises");
            assert_eq!(json, serde_json::Value::from(kind.as_str()));
            let back: EventKind = serde_json::from_value(json).expect("deserialises");
            assert_eq!(back, kind);
        }
    }
}
