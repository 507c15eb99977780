//! Pure trading types shared by every layer: no I/O, no actors, so the live path, the backtester and the
//! simulator compute with exactly the same code.
//!
//! Prices, volumes and money are `rust_decimal::Decimal` (exact); indicators use `f64`.

pub mod bars;
pub mod calendar;
pub mod correlation;
pub mod events;
pub mod ledger;
pub mod orders;
pub mod positions;
pub mod risk;
pub mod schema;
pub mod tenant;
pub mod tier;

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A tenant's identifier (a slug such as `acme`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct TenantId(pub String);

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An MT5 account login.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct Login(u64);

impl Login {
    pub const fn new(login: u64) -> Self {
        Self(login)
    }

    /// The account number as MT5 gives it.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for Login {
    fn from(login: u64) -> Self {
        Self(login)
    }
}

impl fmt::Display for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A symbol as the broker names it (`EURUSD`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct Symbol(String);

impl Symbol {
    pub fn new(symbol: impl Into<String>) -> Self {
        Self(symbol.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl From<String> for Symbol {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Symbol {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// Buy or sell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    /// +1 for buy, -1 for sell.
    pub fn sign(self) -> Decimal {
        match self {
            Self::Buy => Decimal::ONE,
            Self::Sell => Decimal::NEGATIVE_ONE,
        }
    }

    pub fn opposite(self) -> Self {
        match self {
            Self::Buy => Self::Sell,
            Self::Sell => Self::Buy,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
        }
    }
}

/// A quote from the terminal. OHLC bars are built from `bid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Tick {
    pub symbol: Symbol,
    /// Milliseconds since the Unix epoch, UTC (MT5 `time_msc`).
    pub time_msc: i64,
    pub bid: Decimal,
    pub ask: Decimal,
}

/// Bar periods, aligned on UTC multiples of their length.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum Timeframe {
    M1,
    M5,
    M15,
    H1,
    H4,
    D1,
}

impl Timeframe {
    pub const ALL: [Timeframe; 6] = [Self::M1, Self::M5, Self::M15, Self::H1, Self::H4, Self::D1];

    /// Length in milliseconds.
    pub fn millis(self) -> i64 {
        const MIN: i64 = 60_000;
        match self {
            Self::M1 => MIN,
            Self::M5 => 5 * MIN,
            Self::M15 => 15 * MIN,
            Self::H1 => 60 * MIN,
            Self::H4 => 240 * MIN,
            Self::D1 => 1440 * MIN,
        }
    }

    /// Start of the bar that contains `time_msc`.
    pub fn open_time(self, time_msc: i64) -> i64 {
        time_msc.div_euclid(self.millis()) * self.millis()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::M1 => "M1",
            Self::M5 => "M5",
            Self::M15 => "M15",
            Self::H1 => "H1",
            Self::H4 => "H4",
            Self::D1 => "D1",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Timeframe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A closed OHLC bar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Bar {
    pub symbol: Symbol,
    pub timeframe: Timeframe,
    pub open_time_ms: i64,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub tick_volume: u64,
}

/// Milliseconds since the Unix epoch, from the wall clock (for records, never for bar boundaries).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Ids and names (tenants, strategies, models, aliases): 1 to 64 letters, digits, `-` or `_`; the error
/// names the field.
pub fn valid_id(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("{what}: must be 1 to 64 letters, digits, - or _"));
    }
    Ok(())
}

/// Lower-case hexadecimal of bytes (digests, ids, tokens).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A model's prediction for a closed bar.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Prediction {
    /// The deployment that made it.
    pub deployment: String,
    /// The version (sha256 of its ONNX file) that made it.
    pub version: String,
    pub symbol: Symbol,
    pub bar_open_ms: i64,
    /// The output as the manifest reads it (a probability, a return, or a class index).
    pub value: f64,
    /// Features and inference, in µs.
    pub latency_us: u64,
    /// A shadow version's prediction: recorded, never traded.
    pub shadow: bool,
    /// A `class` model's score per label (a regime detector's state probabilities); empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<f32>,
}
