//! The decimals of the tenant document and of request bodies: lots, volumes and money limits
//! ([`PositiveDecimal`]) and scales from 0 to 1 ([`Fraction`]), parsed once, with the JSON Schemas that
//! describe exactly what they accept.
//!
//! Why newtypes: a limit of `0`, `-1`, `1e400` or `"1e5"` must be refused with a message naming the field,
//! wherever the document comes from (an API body, a stored document, `config/*.toml`). Checking the raw JSON
//! against a hand-kept list of field names before parsing it again missed every field not on the list; a type
//! that only deserialises from an accepted value cannot be missed. The JSON Schema functions sit beside the
//! checks so the OpenAPI document and the parser cannot drift apart.

use std::ops::Deref;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A positive decimal of the document as a string: no sign, no exponent, up to 15 integer digits and
/// 28 decimals, not zero (its first significant digit within the 28 decimals).
pub const POSITIVE_DECIMAL: &str =
    r"^([1-9][0-9]{0,14}(\.[0-9]{1,28})?|0\.0{0,27}[1-9][0-9]{0,27})$";
/// A decimal from 0 to 1 as a string.
pub const FRACTION_DECIMAL: &str = r"^(0(\.[0-9]{1,28})?|1(\.0{1,28})?)$";
/// The range of a positive decimal given as a JSON number (a float is exact to these bounds).
pub const POSITIVE_MIN: f64 = 1e-8;
pub const POSITIVE_MAX: f64 = 999_999_999_999_999.0;

/// Lots, volumes and money limits: a positive decimal, as a JSON number or a string (answers give strings).
pub fn positive_decimal(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"anyOf": [
        {"type": "number", "minimum": POSITIVE_MIN, "maximum": POSITIVE_MAX},
        {"type": "string", "maxLength": 44, "pattern": POSITIVE_DECIMAL},
    ], "description": "greater than 0: a number from 1e-8 to 999999999999999, or a string of decimal digits"})
}

/// [`positive_decimal`], or null.
pub fn positive_decimal_or_null(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut s = positive_decimal(g);
    if let Some(any) = s.get_mut("anyOf").and_then(Value::as_array_mut) {
        any.push(json!({"type": "null"}));
    }
    s
}

/// A decimal from 0 to 1, as a JSON number or a string.
pub fn fraction_decimal(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"anyOf": [
        {"type": "number", "minimum": 0, "maximum": 1},
        {"type": "string", "maxLength": 30, "pattern": FRACTION_DECIMAL},
    ]})
}

/// A pattern a text matches when it is not all white space: it holds a character outside Unicode's
/// White_Space set (what [`char::is_whitespace`] and `str::trim` go by), written out so every regex engine
/// reads it alike.
pub const NOT_BLANK: &str = "[^\t\n\u{b}\u{c}\r \u{85}\u{a0}\u{1680}\u{2000}-\u{200a}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}]";

/// Whether a text is empty or all white space (the opposite of [`NOT_BLANK`]).
pub fn is_blank(s: &str) -> bool {
    s.chars().all(char::is_whitespace)
}

/// A pattern of texts without NUL.
pub const NO_NUL: &str = "^[^\u{0}]*$";

fn digits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a JSON value is a positive decimal as [`positive_decimal`] describes it.
fn is_positive(v: &Value) -> bool {
    match v {
        Value::Number(n) => n
            .as_f64()
            .is_some_and(|f| (POSITIVE_MIN..=POSITIVE_MAX).contains(&f)),
        Value::String(s) => {
            let (int, frac) = match s.split_once('.') {
                Some((i, f)) => (i, Some(f)),
                None => (s.as_str(), None),
            };
            s.len() <= 44
                && if int == "0" {
                    frac.is_some_and(|f| {
                        let zeros = f.bytes().take_while(|b| *b == b'0').count();
                        digits(f, 1, 55) && zeros < f.len() && zeros <= 27 && f.len() - zeros <= 28
                    })
                } else {
                    digits(int, 1, 15)
                        && !int.starts_with('0')
                        && frac.is_none_or(|f| digits(f, 1, 28))
                }
        }
        _ => false,
    }
}

/// Whether a JSON value is a decimal from 0 to 1 as [`fraction_decimal`] describes it.
fn is_fraction(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64().is_some_and(|f| (0.0..=1.0).contains(&f)),
        Value::String(s) => {
            s.len() <= 30
                && match s.split_once('.') {
                    None => s == "0" || s == "1",
                    Some(("0", f)) => digits(f, 1, 28),
                    Some(("1", f)) => digits(f, 1, 28) && f.bytes().all(|b| b == b'0'),
                    _ => false,
                }
        }
        _ => false,
    }
}

/// The decimal of `v` when `accepts` it, read as `rust_decimal` reads JSON (a number by its shortest
/// representation, a string exactly); otherwise `rule` for a number or string outside it, or the type `v` has
/// instead of `expected`.
fn read(
    v: Value,
    accepts: fn(&Value) -> bool,
    rule: &str,
    expected: &str,
) -> Result<Decimal, String> {
    if accepts(&v) {
        return serde_json::from_value(v).map_err(|e| e.to_string());
    }
    Err(match v {
        Value::Number(_) | Value::String(_) => rule.to_owned(),
        _ => format!("invalid type: {}, expected {expected}", type_name(&v)),
    })
}

/// What a value of the wrong JSON type is called in an error.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Lots, volumes and money limits: a decimal greater than 0, from a JSON number (1e-8 to 999999999999999) or
/// a string of decimal digits (no sign, no exponent, up to 15 integer digits and 28 decimals). Serialised as
/// the decimal's string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Decimal")]
pub struct PositiveDecimal(Decimal);

impl PositiveDecimal {
    /// One (lot, unit of account currency).
    pub const ONE: Self = Self(Decimal::ONE);

    /// `d` if it is greater than 0.
    pub fn new(d: Decimal) -> Option<Self> {
        (d > Decimal::ZERO).then_some(Self(d))
    }

    pub fn get(self) -> Decimal {
        self.0
    }
}

impl TryFrom<Decimal> for PositiveDecimal {
    type Error = String;

    fn try_from(d: Decimal) -> Result<Self, String> {
        Self::new(d).ok_or_else(|| format!("{d} is not greater than 0"))
    }
}

impl std::str::FromStr for PositiveDecimal {
    type Err = String;

    /// Parses a decimal (as `rust_decimal` does) that must be greater than 0; for code and tests, not JSON.
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<Decimal>()
            .map_err(|e| format!("`{s}`: {e}"))?
            .try_into()
    }
}

impl TryFrom<Value> for PositiveDecimal {
    type Error = String;

    fn try_from(v: Value) -> Result<Self, String> {
        read(
            v,
            is_positive,
            "must be greater than 0: a number from 1e-8 to 999999999999999, or a string of decimal digits",
            "a decimal greater than 0",
        )
        .map(Self)
    }
}

impl From<PositiveDecimal> for Decimal {
    fn from(p: PositiveDecimal) -> Self {
        p.0
    }
}

impl Deref for PositiveDecimal {
    type Target = Decimal;

    fn deref(&self) -> &Decimal {
        &self.0
    }
}

impl std::fmt::Display for PositiveDecimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl schemars::JsonSchema for PositiveDecimal {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PositiveDecimal".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        positive_decimal(g)
    }
}

/// A scale from 0 to 1 (a JSON number, or a string such as `0.5`). Serialised as the decimal's string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Decimal")]
pub struct Fraction(Decimal);

impl Fraction {
    /// `d` if it is from 0 to 1.
    pub fn new(d: Decimal) -> Option<Self> {
        (Decimal::ZERO..=Decimal::ONE)
            .contains(&d)
            .then_some(Self(d))
    }

    pub fn get(self) -> Decimal {
        self.0
    }
}

impl std::str::FromStr for Fraction {
    type Err = String;

    /// Parses a decimal (as `rust_decimal` does) from 0 to 1; for code and tests, not JSON.
    fn from_str(s: &str) -> Result<Self, String> {
        let d: Decimal = s.parse().map_err(|e| format!("`{s}`: {e}"))?;
        Self::new(d).ok_or_else(|| format!("{d} is not from 0 to 1"))
    }
}

impl TryFrom<Value> for Fraction {
    type Error = String;

    fn try_from(v: Value) -> Result<Self, String> {
        read(v, is_fraction, "from 0 to 1", "a decimal from 0 to 1").map(Self)
    }
}

impl From<Fraction> for Decimal {
    fn from(f: Fraction) -> Self {
        f.0
    }
}

impl Deref for Fraction {
    type Target = Decimal;

    fn deref(&self) -> &Decimal {
        &self.0
    }
}

impl schemars::JsonSchema for Fraction {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Fraction".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        fraction_decimal(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn positive(v: Value) -> Result<Decimal, String> {
        PositiveDecimal::try_from(v).map(PositiveDecimal::get)
    }

    #[test]
    fn a_positive_decimal_is_read_from_a_number_or_a_plain_string() {
        assert_eq!(positive(json!(0.1)), Ok(Decimal::new(1, 1)));
        assert_eq!(positive(json!("0.00000001")), Ok(Decimal::new(1, 8)));
        assert_eq!(positive(json!(5)), Ok(Decimal::new(5, 0)));
        assert_eq!(
            positive(json!("999999999999999.5")),
            Ok(Decimal::new(9_999_999_999_999_995, 1))
        );
    }

    #[test]
    fn zero_negative_exponent_and_oversized_decimals_are_refused_with_the_rule() {
        for v in [
            json!(0),
            json!(-1),
            json!("0"),
            json!("-1"),
            json!("1e5"),
            json!("01"),
            json!(1e-9),
            json!(1e16),
            json!("1234567890123456"),
            json!(" 1"),
        ] {
            let e = positive(v.clone()).expect_err(&v.to_string());
            assert!(e.starts_with("must be greater than 0"), "{v}: {e}");
        }
    }

    #[test]
    fn a_value_of_another_type_is_named_in_the_error() {
        assert_eq!(
            positive(json!(true)),
            Err("invalid type: a boolean, expected a decimal greater than 0".into())
        );
        assert!(Fraction::try_from(json!([1])).is_err());
    }

    #[test]
    fn a_fraction_is_from_zero_to_one() {
        assert_eq!(
            Fraction::try_from(json!("0.5")).map(Fraction::get),
            Ok(Decimal::new(5, 1))
        );
        assert_eq!(
            Fraction::try_from(json!(1)).map(Fraction::get),
            Ok(Decimal::ONE)
        );
        for v in [json!(1.01), json!(-0.1), json!("1.5"), json!("2")] {
            assert_eq!(Fraction::try_from(v), Err("from 0 to 1".into()));
        }
    }

    #[test]
    fn both_serialise_as_the_decimal_string() {
        let p = PositiveDecimal::new(Decimal::new(15, 1)).expect("positive");
        assert_eq!(serde_json::to_value(p).expect("json"), json!("1.5"));
        let f = Fraction::new(Decimal::new(25, 2)).expect("fraction");
        assert_eq!(serde_json::to_value(f).expect("json"), json!("0.25"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever a string holds, it is accepted exactly when it matches the documented pattern, and an
        /// accepted value reads back as the same decimal.
        #[test]
        fn a_string_is_accepted_exactly_when_it_is_a_positive_decimal(
            int in "[0-9]{0,17}", frac in proptest::option::of("[0-9]{0,30}")
        ) {
            let s = match &frac { Some(f) => format!("{int}.{f}"), None => int.clone() };
            let accepted = positive(json!(s.clone()));
            let as_decimal = s.parse::<Decimal>().ok().filter(|d| *d > Decimal::ZERO);
            if let Ok(d) = &accepted {
                prop_assert_eq!(Some(*d), as_decimal);
            }
            let pattern_ok = !int.is_empty()
                && (int == "0" || !int.starts_with('0'))
                && frac.as_deref().is_none_or(|f| !f.is_empty());
            if !pattern_ok {
                prop_assert!(accepted.is_err(), "{} accepted", s);
            }
        }
    }
}
