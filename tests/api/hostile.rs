//! Hostile, generated input (issue 12, item 5: "no panic on any input").
//!
//! Everything trellis reads from outside — bridge frames on `/ws/mt5`, admin API bodies and query strings — is
//! written by someone else: a buggy bridge, a fuzzing client, an attacker holding a stolen key. Hand-written
//! bad-input tests (bridge.rs, admin.rs) cover the cases someone thought of; these properties generate the
//! rest: multi-byte, right-to-left and NUL characters in every string, numbers outside every Rust type
//! (`1e400`, 2^64, −2^63 − 1), floats where integers belong, wrong JSON types, deep nesting, missing and
//! duplicate fields, truncated frames. Each property is bounded (a fixed number of cases), runs the real
//! application on loopback like every other module, and says what a user would notice:
//!
//! - a. the decoder answers every text with a frame or an error code, and never panics;
//! - b. every `hello` ends in a `welcome`, or an `error` then a close frame with 1008/1009 — never a connection
//!   that just drops;
//! - c. after hostile frames the connection and everything accepted before are intact, valid frames are
//!   still accepted, the book follows the terminal's `history_end`, and every frame is acknowledged (stored);
//! - d. the admin API never answers 5xx, always answers a 4xx with its JSON error body, and keeps serving.
//!
//! b, c and d also require that no actor of the server failed (a panic in an actor is restarted by its
//! supervisor, so only the supervision log shows it). A failing case is minimised before it is reported; c
//! gives each case an account of its own so a replay does not trip over an earlier case's book. c leaves out
//! frames that would move the bridge's `seq` far ahead: by the protocol everything after them is a duplicate
//! (b covers such numbers). Numbers are written as literal JSON tokens ([`J`]) because `serde_json::Value`
//! cannot hold the ones that are out of range.
//!
//! What they found (each minimised input is now refused or answered properly):
//! - a resuming `hello` of the session's own epoch with `"last_seq_received":18446744073709551615` panicked
//!   the account's session (`received + 1`); six in a row escalated and stopped the tenant;
//! - a `tick` at `time_msc` −2^63 panicked market data (bar open time); a `deal` of volume 10^24 (or two of
//!   `Decimal::MAX`, or a zero or negative volume) panicked the portfolio — the protocol now has ranges;
//! - an optimisation grid of ~60 parameters with a few values each overflowed the run count (a panic in a
//!   debug build, a runaway grid in a release build);
//! - on PostgreSQL, a NUL in any text (`GET /api/v1/audit?tenant=%00`, a login email, a deal's symbol) was
//!   "storage unavailable": a 503 to retry forever, and a portfolio write queue stuck behind it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use awc::ws;
use futures_util::{Sink, SinkExt, StreamExt};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::strategy::{Union, ValueTree};
use proptest::test_runner::TestRunner;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use trellis::actors::messages::GetSessionState;
use trellis::bridge::protocol::{decode, ErrorCode, Inbound, MAX_TIME_MSC};
use trellis::domain::{Login, Symbol};
use trellis::runtime::events::EventKind;

use crate::helpers::{
    create_key, create_tenant, create_user, spawn_admin_app, spawn_app, tenant, TestApp,
    ROOT_EMAIL, ROOT_PASSWORD,
};

// ---- generated JSON -------------------------------------------------------------------------------------

/// JSON as a hostile client writes it. Numbers are literal tokens so they can lie outside every Rust type.
/// Shown as the JSON it stands for (`$seq+N`, `$epoch`, `$login` for the placeholders), so a minimised
/// failure reads like the frame or body that caused it.
#[derive(Clone)]
enum J {
    /// A token written as is: a number (`1e400`, `18446744073709551616`), `true`, `null`.
    Lit(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
    /// The connection's last processed bridge `seq` plus this (property c).
    Seq(u64),
    /// The epoch of the account's session now (property b: a resuming `hello`).
    Epoch,
    /// The login of the connection's account (property c).
    Login,
}

/// What [`J::Seq`] and [`J::Epoch`] stand for when a value is written.
#[derive(Clone, Copy, Debug, Default)]
struct Ctx {
    seq: u64,
    epoch: u64,
    login: u64,
}

impl J {
    fn render(&self, ctx: Ctx) -> String {
        let mut out = String::new();
        self.write(&mut out, ctx);
        out
    }

    fn write(&self, out: &mut String, ctx: Ctx) {
        match self {
            J::Lit(token) => out.push_str(token),
            J::Str(s) => out.push_str(&quote(s)),
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out, ctx);
                }
                out.push(']');
            }
            J::Obj(fields) => {
                out.push('{');
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&quote(name));
                    out.push(':');
                    value.write(out, ctx);
                }
                out.push('}');
            }
            J::Seq(offset) => out.push_str(&ctx.seq.saturating_add(*offset).to_string()),
            J::Epoch => out.push_str(&ctx.epoch.to_string()),
            J::Login => out.push_str(&ctx.login.to_string()),
        }
    }
}

impl Debug for J {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            J::Lit(token) => f.write_str(token),
            J::Str(s) => f.write_str(&quote(s)),
            J::Arr(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item:?}")?;
                }
                f.write_str("]")
            }
            J::Obj(fields) => {
                f.write_str("{")?;
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}:{value:?}", quote(name))?;
                }
                f.write_str("}")
            }
            J::Seq(offset) => write!(f, "$seq+{offset}"),
            J::Epoch => f.write_str("$epoch"),
            J::Login => f.write_str("$login"),
        }
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn lit(token: impl ToString) -> J {
    J::Lit(token.to_string())
}

fn text_j(s: &str) -> J {
    J::Str(s.to_owned())
}

/// `depth` arrays inside each other around a 1.
fn nested(depth: usize) -> J {
    (0..depth).fold(lit(1), |inner, _| J::Arr(vec![inner]))
}

/// A strict prefix of `text` ending on a character boundary (a text frame must stay UTF-8).
fn cut(text: &str, at: &Index) -> String {
    if text.is_empty() {
        return String::new();
    }
    let mut end = at.index(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

// ---- hostile atoms --------------------------------------------------------------------------------------

/// Pieces of hostile strings: direction overrides and marks, NUL and other controls, emoji and combining
/// sequences, byte-order and replacement characters, the last code point, quotes and escapes, injection
/// attempts, and names trellis knows (so a hostile string is sometimes nearly valid).
const ATOMS: &[&str] = &[
    "\u{202E}",
    "\u{200F}",
    "\u{200B}",
    "\0",
    "é",
    "€",
    "😀",
    "👩\u{200D}👩\u{200D}👧",
    "\u{FEFF}",
    "\u{FFFD}",
    "\u{10FFFF}",
    "a\u{0301}",
    "ǅ",
    "ﷺ",
    "𒐫",
    "\"",
    "\\",
    "\n",
    "\r\n",
    "\t",
    "\u{7F}",
    "\u{1B}[31m",
    "'; DROP TABLE tenants; --",
    "%00",
    "%s%n",
    "${jndi:ldap://x}",
    "../../etc/passwd",
    " ",
    "EURUSD",
    "trk_",
    "_",
    "hello",
    "{}",
];

/// Characters of two, three and four bytes (and an RTL override, three).
const MULTI_BYTE: &[&str] = &["é", "€", "😀", "\u{202E}"];

/// Numbers as JSON tokens: out of every integer type's range, out of `f64`'s and `Decimal`'s, negative zero,
/// floats for integers, integers beyond 2^53, exponents, and a few ordinary ones.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "2",
    "0.5",
    "-0.5",
    "2.0",
    "1E2",
    "0e0",
    "-0.0",
    "1e400",
    "-1e400",
    "1e-400",
    "1.7976931348623157e308",
    "-1.7976931348623157e308",
    "5e-324",
    "4294967295",
    "4294967296",
    "-2147483649",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "79228162514264337593543950335",
    "79228162514264337593543950336",
    "-79228162514264337593543950336",
    "0.0000000000000000000000000001",
    "0.00000000000000000000000000001",
    "100000000000000000000000000000000000000000000000000000000000",
];

const U64_EDGES: &[u64] = &[
    0,
    1,
    u32::MAX as u64,
    1 << 53,
    1 << 62,
    i64::MAX as u64,
    u64::MAX - 1,
    u64::MAX,
];
const I64_EDGES: &[i64] = &[
    i64::MIN,
    i64::MIN + 1,
    -1,
    0,
    1,
    1_700_000_000_000,
    (1 << 53) - 1,
    1 << 53,
    (1 << 53) + 1,
    i64::MAX - 1,
    i64::MAX,
];
const U32_EDGES: &[u32] = &[0, 1, 2, 3, 10009, u32::MAX - 1, u32::MAX];
/// Decimals at the edges of `rust_decimal` and of the protocol's ranges (±10^9 for prices and volumes,
/// ±10^15 for money), written as strings, which trellis reads exactly.
const DECIMAL_EDGES: &[&str] = &[
    "79228162514264337593543950335",
    "-79228162514264337593543950335",
    "1000000000000000000000000",
    "0.0000000000000000000000000001",
    "-0.0000000000000000000000000001",
    "0",
    "-0",
    "0.1",
    "1.1",
    "1000000000",
    "-1000000000",
    "1000000000.0000000000000000001",
    "1000000000000000",
    "-1000000000000001",
];

const INBOUND: &[&str] = &[
    "hello",
    "tick",
    "account",
    "positions",
    "order_result",
    "cancel_result",
    "deal",
    "heartbeat",
    "history_end",
];
const OTHER_TYPES: &[&str] = &[
    "welcome",
    "order_request",
    "cancel_request",
    "history_request",
    "bars_request",
    "error",
    "Hello",
    "TICK",
    "",
    "tick ",
    "tick\u{0}",
    "téck",
];
/// Every field name of every inbound frame.
const FIELDS: &[&str] = &[
    "type",
    "seq",
    "api_key",
    "login",
    "server",
    "build",
    "protocol_version",
    "last_seq_received",
    "epoch",
    "symbol",
    "time_msc",
    "bid",
    "ask",
    "last",
    "volume",
    "flags",
    "currency",
    "leverage",
    "balance",
    "equity",
    "margin",
    "margin_free",
    "profit",
    "margin_mode",
    "positions",
    "ticket",
    "identifier",
    "price_open",
    "price_current",
    "magic",
    "client_order_id",
    "retcode",
    "deal",
    "order",
    "price",
    "comment",
    "request_id",
    "retcode_external",
    "position_id",
    "deal_type",
    "entry",
    "commission",
    "swap",
    "fee",
    "deals",
    "ack",
    "last_tick_msc",
];

fn atom() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(ATOMS).prop_map(str::to_owned),
        1 => "[A-Za-z0-9_.:-]{1,8}",
        1 => any::<char>().prop_map(String::from),
    ]
    .boxed()
}

/// Hostile strings: runs of [`ATOMS`], any Unicode, multi-byte characters placed so that a cut at byte 120
/// (a WebSocket close reason) falls inside one, and (when `long`) runs of thousands of characters.
fn hostile_string(long: bool) -> BoxedStrategy<String> {
    let short = prop_oneof![
        4 => vec(atom(), 0..12).prop_map(|parts| parts.concat()),
        1 => (0..130usize, select(MULTI_BYTE), 30..60usize)
            .prop_map(|(pad, c, n)| "x".repeat(pad) + &c.repeat(n)),
        1 => any::<String>(),
    ];
    if long {
        prop_oneof![
            8 => short,
            1 => (select(ATOMS), 200..3000usize).prop_map(|(a, n)| a.repeat(n)),
        ]
        .boxed()
    } else {
        short.boxed()
    }
}

fn hostile_number() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(NUMBERS).prop_map(str::to_owned),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        1 => "-?[0-9]{1,40}(\\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?",
    ]
    .boxed()
}

fn field_name() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(FIELDS).prop_map(str::to_owned),
        1 => hostile_string(false),
    ]
    .boxed()
}

/// Any JSON value, nested a few levels.
fn json_value(long: bool) -> BoxedStrategy<J> {
    let leaf = prop_oneof![
        select(&["null", "true", "false"][..]).prop_map(lit),
        hostile_number().prop_map(J::Lit),
        hostile_string(long).prop_map(J::Str),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(J::Arr),
            vec((field_name(), inner), 0..6).prop_map(J::Obj),
        ]
    })
    .boxed()
}

/// A value of the wrong type or out of range for whatever field it lands in.
fn hostile_value(long: bool) -> BoxedStrategy<J> {
    prop_oneof![
        3 => hostile_number().prop_map(J::Lit),
        3 => hostile_string(long).prop_map(J::Str),
        1 => select(&["null", "true", "false", "[]", "{}"][..]).prop_map(lit),
        1 => select(DECIMAL_EDGES).prop_map(text_j),
        1 => json_value(false),
        1 => (1..300usize).prop_map(nested),
    ]
    .boxed()
}

/// Text that is mostly not JSON: any string, a soup of JSON tokens, or brackets nested up to `max_depth`
/// deep (far past any parser's recursion limit).
fn garbage_text(max_depth: usize) -> BoxedStrategy<String> {
    const TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\"",
        "\\",
        "\"type\"",
        "\"tick\"",
        "\"hello\"",
        "\"seq\"",
        "1",
        "-1",
        "1e400",
        "null",
        "true",
        " ",
        "\u{0}",
        "é",
        "😀",
        "\u{202E}",
        "\"\\u0000\"",
        "\"\\ud800\"",
    ];
    const OPEN: &[(&str, &str)] = &[
        ("[", "]"),
        ("{\"a\":", "}"),
        ("{\"type\":\"positions\",\"seq\":1,\"positions\":[", "]}"),
    ];
    prop_oneof![
        2 => any::<String>(),
        2 => vec(select(TOKENS), 0..40).prop_map(|t| t.concat()),
        1 => (1..max_depth, select(OPEN), any::<bool>()).prop_map(|(depth, (open, close), closed)| {
            let mut s = open.repeat(depth);
            if closed {
                s.push('1');
                s.push_str(&close.repeat(depth));
            }
            s
        }),
    ]
    .boxed()
}

fn u64_j() -> BoxedStrategy<J> {
    prop_oneof![3 => any::<u64>(), 1 => select(U64_EDGES)]
        .prop_map(lit)
        .boxed()
}

fn i64_j() -> BoxedStrategy<J> {
    prop_oneof![2 => any::<i64>(), 1 => select(I64_EDGES)]
        .prop_map(lit)
        .boxed()
}

fn u32_j() -> BoxedStrategy<J> {
    prop_oneof![3 => any::<u32>(), 1 => select(U32_EDGES)]
        .prop_map(lit)
        .boxed()
}

/// MT5 codes (deal type, entry, position type, margin mode): mostly the few that mean something.
fn code_j() -> BoxedStrategy<J> {
    prop_oneof![3 => 0..4u32, 1 => any::<u32>()]
        .prop_map(lit)
        .boxed()
}

fn bool_j() -> BoxedStrategy<J> {
    any::<bool>().prop_map(lit).boxed()
}

/// A decimal within ±10^`digits` (the protocol's range for prices and volumes is 10^9, for money 10^15): a
/// JSON number, or a string (with up to 28 decimal places).
fn bounded_decimal(digits: u32) -> BoxedStrategy<J> {
    let max = 10i64.pow(digits);
    prop_oneof![
        2 => (1..=max, 0..4u32).prop_map(|(m, scale)| lit(Decimal::new(m, scale))),
        2 => (-max..=max, 0..4u32).prop_map(|(m, scale)| lit(Decimal::new(m, scale))),
        2 => (any::<i64>(), 19..29u32).prop_map(|(m, scale)| J::Str(Decimal::new(m, scale).to_string())),
        1 => select(&["0", "-0", "0.1", "1.1"][..]).prop_map(text_j),
        1 => Just(lit(max)),
        1 => Just(J::Str(format!("-{max}"))),
    ]
    .boxed()
}

/// A price or a volume the protocol accepts.
fn decimal_j() -> BoxedStrategy<J> {
    bounded_decimal(9)
}

/// The volume of a deal or position the protocol accepts: above 0, at most 10^9.
fn volume_j() -> BoxedStrategy<J> {
    prop_oneof![
        3 => (1..=1_000_000_000i64, 0..4u32).prop_map(|(m, scale)| lit(Decimal::new(m, scale))),
        1 => (1..=i64::MAX, 19..29u32).prop_map(|(m, scale)| J::Str(Decimal::new(m, scale).to_string())),
        1 => select(&["0.01", "0.1", "1000000000"][..]).prop_map(text_j),
    ]
    .boxed()
}

/// An amount of money the protocol accepts.
fn amount_j() -> BoxedStrategy<J> {
    bounded_decimal(15)
}

/// Any `Decimal` at all (admin API bodies, and numbers the protocol refuses).
fn any_decimal_j() -> BoxedStrategy<J> {
    prop_oneof![
        2 => decimal_j(),
        2 => (any::<i64>(), 0..29u32).prop_map(|(m, scale)| J::Str(Decimal::new(m, scale).to_string())),
        1 => select(DECIMAL_EDGES).prop_map(text_j),
    ]
    .boxed()
}

/// A time the protocol accepts: 0 to 2^53 ms.
fn time_j() -> BoxedStrategy<J> {
    prop_oneof![
        3 => 0..=(1i64 << 53),
        1 => select(&[0, 1, 1_700_000_000_000, 1 << 53][..]),
    ]
    .prop_map(lit)
    .boxed()
}

/// A deal ticket the protocol accepts: below 2^62, where trellis's reconciliation entries start.
fn ticket_j() -> BoxedStrategy<J> {
    prop_oneof![
        3 => 0..(1u64 << 62),
        1 => select(&[0, 1, (1 << 62) - 1][..]),
    ]
    .prop_map(lit)
    .boxed()
}

fn string_j(long: bool) -> BoxedStrategy<J> {
    hostile_string(long).prop_map(J::Str).boxed()
}

/// A symbol: often one the test tenants trade, so hostile numbers reach the actors.
fn symbol_j(long: bool) -> BoxedStrategy<J> {
    prop_oneof![
        2 => select(&["EURUSD", "GBPUSD"][..]).prop_map(text_j),
        1 => string_j(long),
    ]
    .boxed()
}

// ---- objects: valid, mutated, hostile -------------------------------------------------------------------

/// One field of a frame or body: its name, its valid values, whether it may be left out.
#[derive(Clone)]
struct Field {
    name: &'static str,
    valid: BoxedStrategy<J>,
    optional: bool,
}

fn req(name: &'static str, valid: BoxedStrategy<J>) -> Field {
    Field {
        name,
        valid,
        optional: false,
    }
}

fn opt(name: &'static str, valid: BoxedStrategy<J>) -> Field {
    Field {
        name,
        valid,
        optional: true,
    }
}

/// How far from valid an object is.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Every required field with a valid value (optional ones present or not).
    Valid,
    /// A valid object with one to three fields replaced by hostile values, removed, or added.
    Mutated,
    /// Every field independently valid, hostile or missing.
    Hostile,
}

#[derive(Clone, Debug)]
enum Mutation {
    Replace(Index, J),
    Remove(Index),
    Add(String, J),
}

impl Mutation {
    fn apply(self, fields: &mut Vec<(String, J)>) {
        match self {
            Mutation::Replace(at, value) if !fields.is_empty() => {
                let i = at.index(fields.len());
                fields[i].1 = value;
            }
            Mutation::Remove(at) if !fields.is_empty() => {
                fields.remove(at.index(fields.len()));
            }
            Mutation::Add(name, value) => fields.push((name, value)),
            _ => {}
        }
    }
}

fn mutation() -> BoxedStrategy<Mutation> {
    prop_oneof![
        4 => (any::<Index>(), hostile_value(false)).prop_map(|(at, v)| Mutation::Replace(at, v)),
        1 => any::<Index>().prop_map(Mutation::Remove),
        1 => (field_name(), json_value(false)).prop_map(|(n, v)| Mutation::Add(n, v)),
    ]
    .boxed()
}

fn object(fields: Vec<Field>, shape: Shape, long: bool) -> BoxedStrategy<J> {
    let names: Vec<&'static str> = fields.iter().map(|f| f.name).collect();
    let values: Vec<BoxedStrategy<Option<J>>> = fields
        .into_iter()
        .map(|f| {
            let valid = f.valid.prop_map(Some);
            match (shape, f.optional) {
                (Shape::Hostile, _) => prop_oneof![
                    5 => valid,
                    2 => hostile_value(long).prop_map(Some),
                    1 => Just(None),
                ]
                .boxed(),
                (_, true) => prop_oneof![3 => valid, 1 => Just(None)].boxed(),
                (_, false) => valid.boxed(),
            }
        })
        .collect();
    let build = move |values: Vec<Option<J>>| -> Vec<(String, J)> {
        names
            .iter()
            .zip(values)
            .filter_map(|(name, v)| v.map(|v| (name.to_string(), v)))
            .collect()
    };
    match shape {
        Shape::Mutated => (values, vec(mutation(), 1..4))
            .prop_map(move |(values, mutations)| {
                let mut fields = build(values);
                for m in mutations {
                    m.apply(&mut fields);
                }
                J::Obj(fields)
            })
            .boxed(),
        _ => values.prop_map(move |v| J::Obj(build(v))).boxed(),
    }
}

// ---- bridge frames --------------------------------------------------------------------------------------

fn position_item(shape: Shape, long: bool) -> BoxedStrategy<J> {
    let fields = vec![
        req("ticket", u64_j()),
        req("identifier", u64_j()),
        req("symbol", symbol_j(long)),
        req("type", code_j()),
        req("volume", volume_j()),
        req("price_open", decimal_j()),
        opt("price_current", decimal_j()),
        opt("profit", amount_j()),
        opt("magic", u64_j()),
        opt("time_msc", time_j()),
    ];
    match shape {
        Shape::Valid => object(fields, Shape::Valid, long),
        _ => prop_oneof![
            2 => object(fields.clone(), Shape::Valid, long),
            1 => object(fields, Shape::Mutated, long),
        ]
        .boxed(),
    }
}

fn position_list(shape: Shape, long: bool) -> BoxedStrategy<J> {
    vec(position_item(shape, long), 0..4)
        .prop_map(J::Arr)
        .boxed()
}

/// The fields of an inbound frame of `kind`, `type` first; `seq` takes its values from `seq`.
fn frame_fields(
    kind: &'static str,
    shape: Shape,
    seq: &BoxedStrategy<J>,
    long: bool,
) -> Vec<Field> {
    let s = || string_j(long);
    let mut fields = vec![
        req("type", Just(text_j(kind)).boxed()),
        req("seq", seq.clone()),
    ];
    fields.extend(match kind {
        "hello" => vec![
            req("api_key", s()),
            req("login", u64_j()),
            req("server", s()),
            opt("build", u32_j()),
            req("protocol_version", u32_j()),
            opt("last_seq_received", u64_j()),
            opt("epoch", u64_j()),
        ],
        "tick" => vec![
            req("symbol", symbol_j(long)),
            req("time_msc", time_j()),
            req("bid", decimal_j()),
            req("ask", decimal_j()),
            opt("last", decimal_j()),
            opt("volume", decimal_j()),
            opt("flags", u32_j()),
        ],
        "account" => vec![
            req("login", u64_j()),
            req("currency", s()),
            req("leverage", u32_j()),
            req("balance", amount_j()),
            req("equity", amount_j()),
            req("margin", amount_j()),
            opt("margin_free", amount_j()),
            opt("profit", amount_j()),
            opt("margin_mode", code_j()),
        ],
        "positions" => vec![req("positions", position_list(shape, long))],
        "order_result" => vec![
            req("client_order_id", s()),
            req("retcode", u32_j()),
            opt("deal", u64_j()),
            opt("order", u64_j()),
            opt("volume", decimal_j()),
            opt("price", decimal_j()),
            opt("bid", decimal_j()),
            opt("ask", decimal_j()),
            opt("comment", s()),
            opt("request_id", u64_j()),
            opt("retcode_external", i64_j()),
        ],
        "cancel_result" => vec![
            req("client_order_id", s()),
            req("retcode", u32_j()),
            opt("order", u64_j()),
            opt("comment", s()),
        ],
        "deal" => vec![
            req("ticket", ticket_j()),
            req("order", u64_j()),
            opt("client_order_id", s()),
            req("position_id", u64_j()),
            req("symbol", symbol_j(long)),
            req("deal_type", code_j()),
            req("entry", code_j()),
            req("volume", volume_j()),
            req("price", decimal_j()),
            opt("commission", amount_j()),
            opt("swap", amount_j()),
            opt("profit", amount_j()),
            opt("fee", amount_j()),
            opt("magic", u64_j()),
            opt("comment", s()),
            req("time_msc", time_j()),
        ],
        "heartbeat" => vec![
            req("time_msc", i64_j()),
            opt("last_tick_msc", i64_j()),
            opt("ack", u64_j()),
        ],
        "history_end" => vec![
            req("request_id", u64_j()),
            opt("deals", u64_j()),
            req("positions", position_list(shape, long)),
        ],
        other => unreachable!("not an inbound frame type: {other}"),
    });
    fields
}

/// Frames of every inbound type in `shape`.
fn frames(shape: Shape, seq: &BoxedStrategy<J>, long: bool) -> BoxedStrategy<J> {
    Union::new(
        INBOUND
            .iter()
            .map(|&kind| object(frame_fields(kind, shape, seq, long), shape, long)),
    )
    .boxed()
}

/// Frames of every type in every shape.
fn any_frame(seq: &BoxedStrategy<J>, long: bool) -> BoxedStrategy<J> {
    prop_oneof![
        frames(Shape::Valid, seq, long),
        frames(Shape::Mutated, seq, long),
        frames(Shape::Hostile, seq, long),
    ]
    .boxed()
}

/// A JSON object with fields of frames (or hostile names) holding any values, with no `type`, a real
/// frame type, another one, or a `type` of the wrong JSON type.
fn frame_like_object() -> BoxedStrategy<J> {
    let ty = prop_oneof![
        2 => select(INBOUND).prop_map(|t| Some(text_j(t))),
        1 => select(OTHER_TYPES).prop_map(|t| Some(text_j(t))),
        1 => hostile_value(false).prop_map(Some),
        1 => Just(None),
    ];
    (
        ty,
        vec((field_name(), json_value(false)), 0..10),
        any::<bool>(),
    )
        .prop_map(|(ty, mut fields, type_last)| {
            if let Some(ty) = ty {
                let field = ("type".to_owned(), ty);
                if type_last {
                    fields.push(field);
                } else {
                    fields.insert(0, field);
                }
            }
            J::Obj(fields)
        })
        .boxed()
}

// ---- a. the decoder -------------------------------------------------------------------------------------

/// Decodes `text` and checks the answer is a frame or an error with a decode code, a message, and a
/// `ref_seq` only when the text names that seq.
fn decodes_sanely(text: &str) -> Result<Option<Inbound>, TestCaseError> {
    match decode(text) {
        Ok(frame) => Ok(Some(frame)),
        Err(e) => {
            prop_assert!(
                matches!(
                    e.code,
                    ErrorCode::MalformedJson
                        | ErrorCode::UnknownType
                        | ErrorCode::MissingField
                        | ErrorCode::WrongType
                        | ErrorCode::InvalidValue
                ),
                "code {:?} is not a decoding error, for {:?}",
                e.code,
                text
            );
            prop_assert!(!e.message.is_empty(), "an empty message for {:?}", text);
            if let Some(seq) = e.ref_seq {
                let named = serde_json::from_str::<Value>(text)
                    .ok()
                    .and_then(|v| v.get("seq").and_then(Value::as_u64));
                prop_assert_eq!(named, Some(seq), "ref_seq of {:?}", text);
            }
            Ok(None)
        }
    }
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(1_500))]

    #[test]
    fn the_bridge_decoder_never_panics_on_generated_text(
        text in prop_oneof![garbage_text(20_000), hostile_string(true)]
    ) {
        decodes_sanely(&text)?;
    }
}

proptest! {
    #![proptest_config(config(800))]

    #[test]
    fn the_bridge_decoder_never_panics_on_generated_json(
        value in prop_oneof![
            2 => frame_like_object(),
            2 => any_frame(&u64_j(), false),
            1 => json_value(true),
            1 => (1..400usize).prop_map(nested),
        ]
    ) {
        decodes_sanely(&value.render(Ctx::default()))?;
    }
}

proptest! {
    #![proptest_config(config(250))]

    /// Valid frames of every type with hostile strings in every string field decode, keeping their type and
    /// seq; every strict prefix of one (a frame cut anywhere, even inside a character) is malformed JSON.
    #[test]
    fn the_bridge_decoder_never_panics_on_generated_frames(
        frame in frames(Shape::Valid, &u64_j(), false)
    ) {
        let text = frame.render(Ctx::default());
        let Some(decoded) = decodes_sanely(&text)? else {
            // A NUL in a string is refused on purpose: PostgreSQL cannot store one.
            let refused = decode(&text).err().map(|e| e.code);
            if text.contains("\\u0000") && refused == Some(ErrorCode::InvalidValue) {
                return Ok(());
            }
            return Err(TestCaseError::fail(format!("a valid frame was refused: {} ({text})",
                decode(&text).err().map(|e| e.message).unwrap_or_default())));
        };
        let J::Obj(fields) = &frame else { unreachable!("frames are objects") };
        prop_assert_eq!(Some(decoded.kind()), fields.iter().find(|(n, _)| n == "type").and_then(|(_, t)| match t {
            J::Str(t) => Some(t.as_str()),
            _ => None,
        }));
        let seq: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(seq["seq"].as_u64(), Some(decoded.seq()));
        let bytes = text.as_bytes();
        for end in 0..bytes.len() {
            let truncated = String::from_utf8_lossy(&bytes[..end]);
            let e = decode(&truncated).err();
            prop_assert_eq!(
                e.map(|e| e.code),
                Some(ErrorCode::MalformedJson),
                "the frame cut at byte {} of {}: {:?}",
                end,
                bytes.len(),
                truncated
            );
        }
    }
}

// ---- running a property against a live server -----------------------------------------------------------

/// Most shrink steps, and most time, spent minimising a failure found on a live server.
const SHRINK_STEPS: u32 = 300;
const SHRINK_TIME: Duration = Duration::from_secs(60);

/// Runs `cases` generated cases of an async property one after another. A failing case is minimised the way
/// proptest's own runner does it (simplify while it still fails, step back when it passes), then reported
/// with its minimal input. (proptest's `TestRunner::run` takes a synchronous test; these talk to a server
/// running on the test's own single-threaded runtime.)
async fn check_property<S, F, Fut>(name: &str, cases: u32, strategy: S, mut check: F)
where
    S: Strategy,
    S::Value: Debug,
    F: FnMut(S::Value) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut runner = TestRunner::new(config(cases));
    for case in 1..=cases {
        let mut tree = strategy
            .new_tree(&mut runner)
            .unwrap_or_else(|e| panic!("{name}: no case generated: {e}"));
        let Err(first) = check(tree.current()).await else {
            continue;
        };
        let (mut minimal, mut reason) = (tree.current(), first);
        let (mut steps, started) = (0, std::time::Instant::now());
        if tree.simplify() {
            while steps < SHRINK_STEPS && started.elapsed() < SHRINK_TIME {
                steps += 1;
                match check(tree.current()).await {
                    Err(why) => {
                        minimal = tree.current();
                        reason = why;
                        if !tree.simplify() {
                            break;
                        }
                    }
                    Ok(()) => {
                        if !tree.complicate() {
                            break;
                        }
                    }
                }
            }
        }
        panic!(
            "{name}: case {case} of {cases} failed: {reason}\n\
             minimal input after {steps} shrink steps: {minimal:#?}"
        );
    }
}

/// Position of the newest supervision event (0 before any).
fn last_event(app: &TestApp) -> u64 {
    app.runtime
        .events
        .snapshot(None)
        .last()
        .map_or(0, |e| e.seq)
}

/// Supervision events after `after` that mean an actor failed (a panic included), as lines.
fn failures_since(app: &TestApp, after: u64) -> Vec<String> {
    app.runtime
        .events
        .snapshot(None)
        .into_iter()
        .filter(|e| {
            e.seq > after
                && matches!(
                    e.kind,
                    EventKind::Failed
                        | EventKind::Escalated
                        | EventKind::GaveUp
                        | EventKind::Disabled
                )
        })
        .map(|e| {
            format!(
                "{} {} ({}): {}",
                e.kind.as_str(),
                e.child,
                e.supervisor,
                e.reason
            )
        })
        .collect()
}

/// Fails when an actor failed after event `after`: waits a moment first, since a failure reaches the log
/// through the supervisor.
async fn no_new_failures(app: &TestApp, after: u64) -> Result<(), String> {
    for _ in 0..3 {
        let failed = failures_since(app, after);
        if !failed.is_empty() {
            return Err(format!("an actor failed: {failed:?}"));
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn still_healthy(app: &TestApp) {
    let (status, body) = app.get("/health").await;
    assert_eq!(status, 200, "/health after the hostile input: {body}");
}

async fn send_frame<S>(sink: &mut S, message: ws::Message) -> Result<(), String>
where
    S: Sink<ws::Message> + Unpin,
    S::Error: Debug,
{
    sink.send(message)
        .await
        .map_err(|e| format!("sending failed (the server dropped the connection?): {e:?}"))
}

fn text_message(text: String) -> ws::Message {
    ws::Message::Text(text.into())
}

// ---- b. the handshake -----------------------------------------------------------------------------------

const BRIDGE_LOGIN: u64 = 5001;
const BRIDGE_SERVER: &str = "Test-Server";

/// A first frame: usually a `hello`, sometimes something else entirely.
#[derive(Clone, Debug)]
enum FirstFrame {
    Json(J),
    Text(String),
    Binary(Vec<u8>),
}

fn hello_fields(key: &str, lsr: BoxedStrategy<J>, epoch: BoxedStrategy<J>) -> Vec<Field> {
    let key = key.to_owned();
    vec![
        req("type", Just(text_j("hello")).boxed()),
        req("seq", prop_oneof![3 => Just(lit(1)), 1 => u64_j()].boxed()),
        req(
            "api_key",
            prop_oneof![
                4 => Just(text_j(&key)),
                1 => hostile_string(true).prop_map(move |s| J::Str(format!("{key}{s}"))),
                1 => string_j(true),
            ]
            .boxed(),
        ),
        req(
            "login",
            prop_oneof![3 => Just(lit(BRIDGE_LOGIN)), 1 => u64_j()].boxed(),
        ),
        req(
            "server",
            prop_oneof![3 => Just(text_j(BRIDGE_SERVER)), 2 => string_j(true)].boxed(),
        ),
        opt("build", u32_j()),
        req(
            "protocol_version",
            prop_oneof![4 => Just(lit(2)), 1 => u32_j()].boxed(),
        ),
        opt("last_seq_received", lsr),
        opt("epoch", epoch),
    ]
}

fn first_frames(key: &str) -> BoxedStrategy<FirstFrame> {
    let fields =
        |key: &str| hello_fields(key, u64_j(), prop_oneof![Just(J::Epoch), u64_j()].boxed());
    // A resume of the account's session: a valid hello naming the session's own epoch, with any
    // last_seq_received (the largest often).
    let resume = vec![
        req("type", Just(text_j("hello")).boxed()),
        req("seq", u64_j()),
        req("api_key", Just(text_j(key)).boxed()),
        req("login", Just(lit(BRIDGE_LOGIN)).boxed()),
        req("server", Just(text_j(BRIDGE_SERVER)).boxed()),
        opt("build", u32_j()),
        req("protocol_version", Just(lit(2)).boxed()),
        req(
            "last_seq_received",
            prop_oneof![
                1 => Just(lit(u64::MAX)),
                1 => select(U64_EDGES).prop_map(lit),
                1 => u64_j(),
            ]
            .boxed(),
        ),
        req("epoch", Just(J::Epoch).boxed()),
    ];
    prop_oneof![
        3 => object(fields(key), Shape::Valid, true).prop_map(FirstFrame::Json),
        3 => object(fields(key), Shape::Mutated, true).prop_map(FirstFrame::Json),
        1 => object(fields(key), Shape::Hostile, true).prop_map(FirstFrame::Json),
        2 => object(resume, Shape::Valid, false).prop_map(FirstFrame::Json),
        1 => any_frame(&u64_j(), true).prop_map(FirstFrame::Json),
        1 => garbage_text(2_000).prop_map(FirstFrame::Text),
        1 => vec(any::<u8>(), 0..64).prop_map(FirstFrame::Binary),
    ]
    .boxed()
}

/// The epoch of the session of `login` now (0 while it has none).
async fn session_epoch(app: &TestApp, tenant: &str, login: u64) -> u64 {
    let session = app
        .runtime
        .tenant(tenant)
        .and_then(|t| t.session_of(Login::new(login)));
    match session {
        Some(s) => s.send(GetSessionState).await.map_or(0, |state| state.epoch),
        None => 0,
    }
}

/// How a raw connection ended.
#[derive(Debug)]
enum End {
    Welcome,
    Closed(Option<u16>),
    /// The stream ended without a close frame.
    Dropped,
    Failed(String),
    TimedOut,
}

/// Connects, sends one frame, reads until a `welcome` (then closes politely) or the end.
async fn first_contact(url: &str, frame: ws::Message) -> Result<(Vec<Value>, End), String> {
    let (_resp, conn) = awc::Client::new()
        .ws(url)
        .max_frame_size(1 << 22)
        .connect()
        .await
        .map_err(|e| format!("websocket did not connect: {e}"))?;
    let (mut sink, mut stream) = conn.split();
    // If the server closes while this is being sent, the reads below say how.
    let _ = sink.send(frame).await;
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let end = loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => break End::TimedOut,
            Ok(None) => break End::Dropped,
            Ok(Some(Err(e))) => break End::Failed(e.to_string()),
            Ok(Some(Ok(ws::Frame::Text(bytes)))) => {
                let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    Value::String(format!("not JSON: {}", String::from_utf8_lossy(&bytes)))
                });
                let welcome = v["type"] == "welcome";
                frames.push(v);
                if welcome {
                    let _ = sink.send(ws::Message::Close(None)).await;
                    break End::Welcome;
                }
            }
            Ok(Some(Ok(ws::Frame::Close(reason)))) => {
                break End::Closed(reason.map(|r| u16::from(r.code)))
            }
            Ok(Some(Ok(_))) => {}
        }
    };
    Ok((frames, end))
}

#[actix_rt::test]
async fn a_hostile_hello_always_ends_in_a_welcome_or_an_error_and_a_close_code() {
    // Arrange: a tenant with a bridge key and a registered account, so a hello that names another server
    // is refused with a message quoting it (and cut to fit a close reason).
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "acme", "enterprise").await;
    let (_, key) = create_key(&app, &root, "acme", &["market:write"]).await;
    app.expect(
        201,
        "POST",
        "/api/v1/tenants/acme/mt5-accounts",
        Some(&root),
        Some(&json!({"login": BRIDGE_LOGIN, "server": BRIDGE_SERVER, "password": "pw"})),
    )
    .await;
    let (url, app_ref) = (app.ws_url(), &app);

    // Act / Assert
    check_property(
        "hostile hello",
        48,
        first_frames(&key),
        |frame| {
            let url = url.clone();
            async move {
                let before = last_event(app_ref);
                let epoch = session_epoch(app_ref, "acme", BRIDGE_LOGIN).await;
                let message = match &frame {
                    FirstFrame::Json(j) => text_message(j.render(Ctx {
                        seq: 0,
                        epoch,
                        login: BRIDGE_LOGIN,
                    })),
                    FirstFrame::Text(t) => text_message(t.clone()),
                    FirstFrame::Binary(b) => ws::Message::Binary(b.clone().into()),
                };
                let (frames, end) = first_contact(&url, message).await?;
                no_new_failures(app_ref, before).await?;
                match end {
                    End::Welcome => Ok(()),
                    End::Closed(Some(1008 | 1009)) => {
                        let last = frames.last().cloned().unwrap_or(Value::Null);
                        if last["type"] == "error"
                            && last["fatal"] == true
                            && last["code"].as_str().is_some_and(|c| !c.is_empty())
                        {
                            Ok(())
                        } else {
                            Err(format!(
                                "closed without a fatal error frame before it: {frames:?}"
                            ))
                        }
                    }
                    End::Failed(why) => Err(format!(
                        "the connection failed without a close frame: {why}; after {frames:?}"
                    )),
                    other => Err(format!(
                        "neither a welcome nor an error and a 1008/1009 close: {other:?} after {frames:?}"
                    )),
                }
            }
        },
    )
    .await;

    still_healthy(&app).await;
    app.shutdown().await;
}

// ---- c. accepted data survives hostile frames -----------------------------------------------------------

const KEY: &str = "trk_acme0001_hostile-test-secret";
/// Each case's bridge trades its own account, `ACCOUNTS` + the case's number, so a failing case can be
/// replayed while shrinking without the book of an earlier one in the way.
const ACCOUNTS: u64 = 7_000;
/// Deal tickets of the valid deals this test sends: far from what the generators pick by chance.
const TICKETS: u64 = 9_000_000_000_000_000;

/// A hostile frame sent after the handshake.
#[derive(Clone, Debug)]
enum Hostile {
    Json(J),
    /// A frame cut short at a character boundary.
    Cut(J, Index),
    Text(String),
    Binary(Vec<u8>),
}

impl Hostile {
    /// The message, and its text when it is one.
    fn render(&self, ctx: Ctx) -> (ws::Message, Option<String>) {
        let text = match self {
            Hostile::Json(j) => j.render(ctx),
            Hostile::Cut(j, at) => cut(&j.render(ctx), at),
            Hostile::Text(t) => t.clone(),
            Hostile::Binary(b) => return (ws::Message::Binary(b.clone().into()), None),
        };
        (text_message(text.clone()), Some(text))
    }
}

/// Valid frames that carry state, for the tenant's symbols, with numbers at the edges of their types: what
/// gets past the decoder and the session into the actors' arithmetic.
fn edge_frames(seq: &BoxedStrategy<J>) -> BoxedStrategy<J> {
    let time = || select(I64_EDGES).prop_map(lit).boxed();
    let number = || {
        prop_oneof![
            2 => select(DECIMAL_EDGES).prop_map(text_j),
            1 => any_decimal_j(),
        ]
        .boxed()
    };
    let symbol = || select(&["EURUSD", "GBPUSD"][..]).prop_map(text_j).boxed();
    let ty = |t: &'static str| req("type", Just(text_j(t)).boxed());
    let position = object(
        vec![
            req("ticket", u64_j()),
            req("identifier", u64_j()),
            req("symbol", symbol()),
            req("type", code_j()),
            req("volume", number()),
            req("price_open", number()),
        ],
        Shape::Valid,
        false,
    );
    let frames = vec![
        vec![
            ty("tick"),
            req("seq", seq.clone()),
            req("symbol", symbol()),
            req("time_msc", time()),
            req("bid", number()),
            req("ask", number()),
        ],
        vec![
            ty("deal"),
            req("seq", seq.clone()),
            req("ticket", u64_j()),
            req("order", u64_j()),
            req("position_id", u64_j()),
            req("symbol", symbol()),
            req("deal_type", code_j()),
            req("entry", code_j()),
            req("volume", number()),
            req("price", number()),
            opt("commission", number()),
            opt("swap", number()),
            opt("profit", number()),
            opt("fee", number()),
            req("time_msc", time()),
        ],
        vec![
            ty("account"),
            req("seq", seq.clone()),
            req("login", Just(J::Login).boxed()),
            req("currency", Just(text_j("USD")).boxed()),
            req("leverage", u32_j()),
            req("balance", number()),
            req("equity", number()),
            req("margin", number()),
            opt("margin_mode", code_j()),
        ],
        vec![
            ty("positions"),
            req("seq", seq.clone()),
            req("positions", vec(position, 0..3).prop_map(J::Arr).boxed()),
        ],
        vec![
            ty("heartbeat"),
            req("seq", seq.clone()),
            req("time_msc", time()),
            opt("last_tick_msc", time()),
            opt("ack", u64_j()),
        ],
    ];
    Union::new(
        frames
            .into_iter()
            .map(|fields| object(fields, Shape::Valid, false)),
    )
    .boxed()
}

fn hostile_frames() -> BoxedStrategy<Vec<Hostile>> {
    // Mostly the next seq (processed), sometimes 0 (a duplicate, ignored).
    let seq = prop_oneof![6 => (1..4u64).prop_map(J::Seq), 1 => Just(lit(0))].boxed();
    let frame = prop_oneof![
        3 => edge_frames(&seq).prop_map(Hostile::Json),
        5 => any_frame(&seq, false).prop_map(Hostile::Json),
        1 => (any_frame(&seq, false), any::<Index>()).prop_map(|(j, at)| Hostile::Cut(j, at)),
        1 => garbage_text(500).prop_map(Hostile::Text),
        1 => json_value(false).prop_map(Hostile::Json),
        1 => vec(any::<u8>(), 0..64).prop_map(Hostile::Binary),
    ];
    vec(frame, 1..16).boxed()
}

/// What the test knows trellis holds, across cases.
#[derive(Debug, Default)]
struct Model {
    /// Tick time of the next valid tick: never behind an accepted one.
    clock: i64,
    /// Latest tick time trellis accepted per symbol (valid and hostile ticks).
    tick_time: HashMap<String, i64>,
    /// The valid deals sent so far: (ticket, price).
    deals: Vec<(u64, Decimal)>,
    cases: u64,
    /// Hostile frames not sent because they would move the bridge's seq past anything later (tested in b).
    skipped: u64,
}

fn tick_json(seq: u64, time_msc: i64, bid: Decimal, ask: Decimal) -> String {
    json!({"type": "tick", "seq": seq, "symbol": "EURUSD", "time_msc": time_msc,
           "bid": bid.to_string(), "ask": ask.to_string()})
    .to_string()
}

fn deal_json(seq: u64, ticket: u64, price: Decimal, time_msc: i64) -> String {
    json!({"type": "deal", "seq": seq, "ticket": ticket, "order": ticket, "position_id": ticket,
           "symbol": "EURUSD", "deal_type": 0, "entry": 0, "volume": "0.1", "price": price.to_string(),
           "time_msc": time_msc})
    .to_string()
}

/// Waits up to 5 s for `what`; answers the last reason it did not hold.
async fn eventually<F, Fut>(mut what: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut last = String::new();
    for _ in 0..250 {
        match what().await {
            Ok(()) => return Ok(()),
            Err(why) => last = why,
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last)
}

/// One case of property c: valid frames, the hostile ones, valid frames again, then the checks.
async fn survive(
    app: &TestApp,
    model: &RefCell<Model>,
    hostile: Vec<Hostile>,
) -> Result<(), String> {
    let (_resp, conn) = awc::Client::new()
        .ws(app.ws_url())
        .max_frame_size(1 << 22)
        .connect()
        .await
        .map_err(|e| format!("websocket did not connect: {e}"))?;
    let (mut sink, mut stream) = conn.split();
    let seen = Rc::new(RefCell::new(Vec::<Value>::new()));
    let ended = Rc::new(RefCell::new(None::<String>));
    let reader = {
        let (seen, ended) = (seen.clone(), ended.clone());
        actix_rt::spawn(async move {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(ws::Frame::Text(b)) => seen
                        .borrow_mut()
                        .push(serde_json::from_slice(&b).unwrap_or(Value::Null)),
                    Ok(ws::Frame::Close(r)) => {
                        *ended.borrow_mut() = Some(format!("closed: {r:?}"));
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        *ended.borrow_mut() = Some(format!("failed: {e}"));
                        return;
                    }
                }
            }
            *ended.borrow_mut() = Some("dropped without a close frame".into());
        })
    };
    let before = last_event(app);
    let result = survive_on(app, model, hostile, &mut sink, &seen, &ended).await;
    // An actor's failure is the cause of whatever else went wrong: it comes first.
    let result = match (no_new_failures(app, before).await, result) {
        (Err(failed), Err(then)) => Err(format!("{failed}; then: {then}")),
        (Err(failed), Ok(())) => Err(failed),
        (Ok(()), result) => result,
    };
    let _ = sink.send(ws::Message::Close(None)).await;
    reader.abort();
    result
}

async fn survive_on<S>(
    app: &TestApp,
    model: &RefCell<Model>,
    hostile: Vec<Hostile>,
    sink: &mut S,
    seen: &RefCell<Vec<Value>>,
    ended: &RefCell<Option<String>>,
) -> Result<(), String>
where
    S: Sink<ws::Message> + Unpin,
    S::Error: Debug,
{
    let frame_of = |kind: &str| seen.borrow().iter().find(|f| f["type"] == kind).cloned();
    let frame_of = &frame_of;
    let (case, login) = {
        let mut m = model.borrow_mut();
        m.cases += 1;
        (m.cases, ACCOUNTS + m.cases)
    };
    // The handshake.
    let hello = json!({"type": "hello", "seq": 1, "api_key": KEY, "login": login, "server": "Test-Server",
                       "protocol_version": 2});
    send_frame(sink, text_message(hello.to_string())).await?;
    eventually(|| async move {
        frame_of("welcome")
            .map(|_| ())
            .ok_or_else(|| format!("no welcome: {:?} {:?}", seen.borrow(), ended.borrow()))
    })
    .await?;
    let mut in_seq = frame_of("welcome")
        .and_then(|w| w["resume_from"].as_u64())
        .ok_or("a welcome without resume_from")?;
    let mut clock = {
        let mut m = model.borrow_mut();
        let eurusd = m.tick_time.get("EURUSD").copied().unwrap_or(0);
        // Ticks are accepted up to 2^53 ms; once a hostile tick got there, every later one is at 2^53 too.
        m.clock = m.clock.max(eurusd).saturating_add(1_000).min(MAX_TIME_MSC);
        m.clock
    };
    let price = |n: u64| Decimal::new(11_000 + (n % 1_000) as i64, 4);
    let before_ticket = TICKETS + 2 * case;
    let after_ticket = before_ticket + 1;

    // Valid frames: a tick and a deal.
    in_seq += 1;
    send_frame(
        sink,
        text_message(tick_json(in_seq, clock, price(case), price(case + 1))),
    )
    .await?;
    in_seq += 1;
    send_frame(
        sink,
        text_message(deal_json(in_seq, before_ticket, price(case), clock)),
    )
    .await?;

    // The hostile frames. The test decodes each as trellis will, to know which are processed.
    for h in hostile {
        let (message, text) = h.render(Ctx {
            seq: in_seq,
            epoch: 0,
            login,
        });
        if let Some(Ok(frame)) = text.as_deref().map(decode) {
            let seq = frame.seq();
            if seq > in_seq.saturating_add(1_000_000) {
                model.borrow_mut().skipped += 1;
                continue;
            }
            if seq > in_seq {
                in_seq = seq;
                if let Inbound::Tick(t) = &frame {
                    let tradable = t.symbol == "EURUSD" || t.symbol == "GBPUSD";
                    if tradable && t.bid > Decimal::ZERO && t.ask >= t.bid {
                        let mut m = model.borrow_mut();
                        let last = m.tick_time.entry(t.symbol.clone()).or_insert(i64::MIN);
                        *last = (*last).max(t.time_msc);
                    }
                }
            }
        }
        send_frame(sink, message).await?;
    }

    // Valid frames again: a later tick, another deal, and the answer to trellis's history request, which
    // says the terminal holds no position (so trellis adopts that: its book for the account is then flat).
    clock = {
        let mut m = model.borrow_mut();
        let eurusd = m.tick_time.get("EURUSD").copied().unwrap_or(0);
        let next = m.clock.saturating_add(1_000).min(MAX_TIME_MSC).max(eurusd);
        m.clock = next;
        m.tick_time.insert("EURUSD".into(), next);
        next
    };
    let (bid, ask) = (price(case + 2), price(case + 3));
    in_seq += 1;
    send_frame(sink, text_message(tick_json(in_seq, clock, bid, ask))).await?;
    in_seq += 1;
    send_frame(
        sink,
        text_message(deal_json(in_seq, after_ticket, price(case), clock)),
    )
    .await?;
    eventually(|| async move {
        frame_of("history_request")
            .map(|_| ())
            .ok_or_else(|| "no history_request".to_owned())
    })
    .await?;
    let request_id = frame_of("history_request")
        .and_then(|r| r["request_id"].as_u64())
        .ok_or("a history_request without request_id")?;
    in_seq += 1;
    let end = json!({"type": "history_end", "seq": in_seq, "request_id": request_id, "deals": 0, "positions": []});
    send_frame(sink, text_message(end.to_string())).await?;

    // Assert: the latest quote is the last valid tick; every valid deal is booked as sent; the account's
    // book is the terminal's; the connection is open; no actor failed.
    let t = app.runtime.tenant("acme").ok_or("the tenant is gone")?;
    // Every valid deal of the cases that passed, and this case's two.
    let mine = [(before_ticket, price(case)), (after_ticket, price(case))];
    let mut expected: Vec<(u64, Decimal)> = model.borrow().deals.clone();
    expected.extend(mine);
    let (t, expected) = (&t, &expected);
    eventually(|| async move {
        let quote = t
            .quotes
            .read()
            .get(&Symbol::new("EURUSD"))
            .map(|q| (q.bid, q.ask, q.time_msc));
        if quote != Some((bid, ask, clock)) {
            return Err(format!(
                "the quote is {quote:?}, not the last valid tick {:?}",
                (bid, ask, clock)
            ));
        }
        let snap = app.portfolio("acme").await;
        for (ticket, price) in expected {
            let booked = snap.deals.iter().find(|d| d.ticket == *ticket);
            match booked {
                Some(d) if d.fill.price == *price && d.fill.volume == Decimal::new(1, 1) => {}
                other => return Err(format!("valid deal {ticket} is {other:?}")),
            }
        }
        let open: Vec<_> = snap
            .positions
            .iter()
            .filter(|p| p.account == Login::new(login))
            .collect();
        if !open.is_empty() {
            return Err(format!(
                "the terminal holds nothing, trellis still holds {open:?}"
            ));
        }
        Ok(())
    })
    .await?;
    // Acknowledged means stored: every frame sent is acknowledged once its records are written.
    let session = t
        .session_of(Login::new(login))
        .ok_or("the account has no session")?;
    let session = &session;
    eventually(|| async move {
        let state = session
            .send(GetSessionState)
            .await
            .map_err(|e| format!("the session is gone: {e}"))?;
        if state.acknowledged < in_seq {
            return Err(format!(
                "trellis acknowledges (stored) up to seq {} of {in_seq}",
                state.acknowledged
            ));
        }
        Ok(())
    })
    .await?;
    if let Some(why) = ended.borrow().clone() {
        return Err(format!(
            "the connection ended: {why}; errors: {:?}",
            seen.borrow()
        ));
    }
    model.borrow_mut().deals.extend(mine);
    Ok(())
}

#[actix_rt::test]
async fn hostile_frames_leave_accepted_data_intact_and_valid_frames_accepted() {
    // Arrange: a tenant without strategies, so only the bridge changes its book.
    let app = spawn_app().await;
    let mut settings = tenant("acme", KEY);
    settings.strategies.clear();
    settings.tier = "enterprise".into();
    app.add_tenant(settings).await;
    let model = RefCell::new(Model::default());

    // Act / Assert
    check_property("accepted data survives", 60, hostile_frames(), |hostile| {
        survive(&app, &model, hostile)
    })
    .await;

    let (cases, skipped) = (model.borrow().cases, model.borrow().skipped);
    eprintln!(
        "{cases} cases; {skipped} hostile frames not sent because they moved the seq far ahead (see the hello property)"
    );
    still_healthy(&app).await;
    app.shutdown().await;
}

// ---- d. the admin API -----------------------------------------------------------------------------------

/// A request body.
#[derive(Clone, Debug)]
enum Body {
    Json(J),
    /// A valid body cut short.
    Cut(J, Index),
    Raw(String),
}

impl Body {
    fn render(&self) -> String {
        match self {
            Body::Json(j) => j.render(Ctx::default()),
            Body::Cut(j, at) => cut(&j.render(Ctx::default()), at),
            Body::Raw(text) => text.clone(),
        }
    }
}

#[derive(Clone, Debug)]
struct Call {
    method: &'static str,
    path: String,
    body: Option<Body>,
}

const TIERS: &[&str] = &["free", "basic", "professional", "enterprise"];
const TIMEFRAMES: &[&str] = &["M1", "M5", "M15", "H1", "H4", "D1"];
const KINDS: &[&str] = &["ema_cross", "rsi_reversion", "donchian_breakout"];
const PARAMS: &[&str] = &["fast", "slow", "period", "lower", "upper"];

/// Valid values of a field, else hostile strings.
fn one_of(valid: &'static [&'static str]) -> BoxedStrategy<J> {
    prop_oneof![3 => select(valid).prop_map(text_j), 1 => string_j(false)].boxed()
}

fn matching(regex: &'static str) -> BoxedStrategy<J> {
    prop_oneof![3 => regex.prop_map(J::Str), 1 => string_j(false)].boxed()
}

fn list(item: BoxedStrategy<J>, max: usize) -> BoxedStrategy<J> {
    vec(item, 0..max).prop_map(J::Arr).boxed()
}

fn number_j() -> BoxedStrategy<J> {
    prop_oneof![3 => (1..60i64).prop_map(lit), 1 => hostile_number().prop_map(J::Lit)].boxed()
}

fn params_j() -> BoxedStrategy<J> {
    let name = prop_oneof![3 => select(PARAMS).prop_map(str::to_owned), 1 => hostile_string(false)];
    vec((name, number_j()), 0..4).prop_map(J::Obj).boxed()
}

/// Optimisation grids: a few real parameters, or up to a hundred made-up ones whose combinations overflow
/// any count kept in a machine word.
fn grid_j() -> BoxedStrategy<J> {
    prop_oneof![
        1 => vec((select(PARAMS), vec(number_j(), 0..4)), 0..4).prop_map(|g| {
            J::Obj(
                g.into_iter()
                    .map(|(n, v)| (n.to_owned(), J::Arr(v)))
                    .collect(),
            )
        }),
        2 => vec(vec((1..60i64).prop_map(lit), 1..5), 0..100).prop_map(|g| {
            J::Obj(
                g.into_iter()
                    .enumerate()
                    .map(|(i, v)| (format!("p{i}"), J::Arr(v)))
                    .collect(),
            )
        }),
    ]
    .boxed()
}

fn risk_fields() -> Vec<Field> {
    vec![
        opt("max_order_volume", any_decimal_j()),
        opt("max_net_position", any_decimal_j()),
        opt("max_open_positions", u64_j()),
        opt("allowed_symbols", list(symbol_j(false), 3)),
        opt("max_daily_loss", any_decimal_j()),
        opt("max_drawdown", any_decimal_j()),
        opt("flatten_on_breach", bool_j()),
    ]
}

/// Every route with a JSON body: valid, mutated or hostile bodies, any JSON, cut bodies, and text.
fn body_calls(user: &str, key: &str) -> BoxedStrategy<Call> {
    let t = "/api/v1/tenants/acme";
    let email = || {
        prop_oneof![
            1 => Just(text_j(ROOT_EMAIL)),
            2 => "[a-z]{1,8}@[a-z]{1,8}\\.test".prop_map(J::Str),
            2 => string_j(false),
        ]
        .boxed()
    };
    let password = || {
        prop_oneof![
            1 => Just(text_j(ROOT_PASSWORD)),
            3 => "[a-zA-Z0-9+]{12,24}".prop_map(J::Str),
            2 => string_j(false),
        ]
        .boxed()
    };
    let routes: Vec<(u32, &'static str, String, Vec<Field>)> = vec![
        (
            1,
            "POST",
            "/api/v1/auth/login".into(),
            vec![req("email", email()), req("password", password())],
        ),
        (
            1,
            "POST",
            "/api/v1/auth/refresh".into(),
            vec![req("refresh_token", matching("[A-Za-z0-9_-]{1,20}\\.[A-Za-z0-9_-]{1,20}\\.[A-Za-z0-9_-]{1,20}"))],
        ),
        (
            1,
            "POST",
            "/api/v1/tenants".into(),
            vec![
                req("id", matching("[a-z0-9_-]{1,12}")),
                req("name", matching("[A-Za-z ]{1,20}")),
                opt("tier", one_of(TIERS)),
                req("symbols", list(matching("[A-Z]{6}"), 4)),
                opt("risk", object(risk_fields(), Shape::Valid, false)),
            ],
        ),
        (
            1,
            "PUT",
            "/api/v1/tenants/globex/tier".into(),
            vec![req("tier", one_of(TIERS))],
        ),
        (
            1,
            "POST",
            format!("{t}/users"),
            vec![
                req("email", email()),
                req("password", password()),
                req("role", one_of(&["tenant_admin", "trader", "viewer", "platform_admin"])),
            ],
        ),
        (
            1,
            "PUT",
            format!("{t}/users/{user}/role"),
            vec![req("role", one_of(&["tenant_admin", "trader", "viewer", "platform_admin"]))],
        ),
        (
            1,
            "POST",
            format!("{t}/api-keys"),
            vec![
                req("name", matching("[a-z-]{1,20}")),
                req("scopes", list(one_of(&["read", "trade", "market:write"]), 4)),
                opt("expires_in_secs", u64_j()),
            ],
        ),
        (
            1,
            "POST",
            format!("{t}/api-keys/{key}/roll"),
            vec![opt("overlap_secs", u64_j())],
        ),
        (
            1,
            "POST",
            format!("{t}/mt5-accounts"),
            vec![
                req("login", u64_j()),
                req("server", matching("[A-Za-z-]{1,20}")),
                req("password", password()),
            ],
        ),
        (
            2,
            "POST",
            format!("{t}/strategies"),
            vec![
                req("id", matching("[a-z0-9-]{1,12}")),
                req("kind", one_of(KINDS)),
                req("symbol", symbol_j(false)),
                req("timeframe", one_of(TIMEFRAMES)),
                req("volume", any_decimal_j()),
                opt("account", u64_j()),
                opt("params", params_j()),
                opt("enabled", bool_j()),
            ],
        ),
        (
            2,
            "PUT",
            format!("{t}/strategies/ema-eurusd"),
            vec![
                opt("timeframe", one_of(TIMEFRAMES)),
                opt("volume", any_decimal_j()),
                opt("account", u64_j()),
                opt("params", params_j()),
            ],
        ),
        (1, "PUT", format!("{t}/risk"), risk_fields()),
        (
            1,
            "PUT",
            format!("{t}/kill-switch"),
            vec![
                req("on", bool_j()),
                opt("reason", string_j(false)),
                opt("flatten", bool_j()),
            ],
        ),
        (
            4,
            "POST",
            format!("{t}/optimisations"),
            vec![
                req("kind", one_of(KINDS)),
                req("symbol", symbol_j(false)),
                req("timeframe", one_of(TIMEFRAMES)),
                req(
                    "from_ms",
                    prop_oneof![3 => select(&[0, i64::MIN, 1_700_000_000_000][..]).prop_map(lit), 1 => i64_j()]
                        .boxed(),
                ),
                req(
                    "to_ms",
                    prop_oneof![3 => select(&[i64::MAX, 1_800_000_000_000][..]).prop_map(lit), 1 => i64_j()]
                        .boxed(),
                ),
                req("grid", grid_j()),
                opt("volume", any_decimal_j()),
                opt("objective", one_of(&["total_pnl", "sharpe", "profit_factor"])),
            ],
        ),
    ];
    Union::new_weighted(
        routes
            .into_iter()
            .map(|(weight, method, path, fields)| {
                let body = prop_oneof![
                    3 => object(fields.clone(), Shape::Mutated, false).prop_map(Body::Json),
                    3 => object(fields.clone(), Shape::Valid, false).prop_map(Body::Json),
                    2 => object(fields.clone(), Shape::Hostile, false).prop_map(Body::Json),
                    1 => (object(fields, Shape::Valid, false), any::<Index>())
                        .prop_map(|(j, at)| Body::Cut(j, at)),
                    1 => json_value(false).prop_map(Body::Json),
                    1 => garbage_text(2_000).prop_map(Body::Raw),
                    1 => Just(Body::Raw(String::new())),
                ];
                let call = body.prop_map(move |body| Call {
                    method,
                    path: path.clone(),
                    body: Some(body),
                });
                (weight, call.boxed())
            })
            .collect(),
    )
    .boxed()
}

/// `key=value` pairs percent-encoded byte by byte (so any value reaches the server), or raw junk.
fn query_calls() -> BoxedStrategy<Call> {
    const PAGE: &[&str] = &["from_ms", "to_ms", "offset", "limit"];
    const AUDIT: &[&str] = &["tenant", "action", "from_ms", "to_ms", "after_seq", "limit"];
    const VALUES: &[&str] = &[
        "-1",
        "0",
        "1",
        "1000000",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
        "1e3",
        "1.5",
        "NaN",
        "inf",
        "",
        "abc",
        "0x10",
        " 1",
        "+1",
        "acme",
        "platform",
    ];
    let routes: &[(&str, &[&str])] = &[
        ("/api/v1/tenants/acme/users", PAGE),
        ("/api/v1/tenants/acme/api-keys", PAGE),
        ("/api/v1/tenants/acme/orders", PAGE),
        ("/api/v1/tenants/acme/fills", PAGE),
        ("/api/v1/tenants/acme/supervision-events", &["limit"]),
        ("/api/v1/audit", AUDIT),
        ("/api/v1/audit/verify", &["tenant"]),
    ];
    fn pct(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }
    Union::new(routes.iter().map(|(path, keys)| {
        let key =
            prop_oneof![4 => select(*keys).prop_map(str::to_owned), 1 => hostile_string(false)];
        let value = prop_oneof![
            3 => select(VALUES).prop_map(str::to_owned),
            2 => hostile_number(),
            2 => hostile_string(false),
        ];
        let query = prop_oneof![
            4 => vec((key, value), 0..5).prop_map(|pairs| {
                pairs
                    .iter()
                    .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
                    .collect::<Vec<_>>()
                    .join("&")
            }),
            1 => "[A-Za-z0-9%=&+._~-]{0,40}",
        ];
        query
            .prop_map(move |q| Call {
                method: "GET",
                path: format!("{path}?{q}"),
                body: None,
            })
            .boxed()
    }))
    .boxed()
}

/// Sends a call; `Err` when no answer came (a handler that panics drops its connection).
async fn answer(app: &TestApp, token: &str, call: &Call) -> Result<(u16, String), String> {
    let method =
        awc::http::Method::from_bytes(call.method.as_bytes()).map_err(|e| e.to_string())?;
    let url = format!("{}{}", app.address, call.path);
    let req = awc::Client::default()
        .request(method, url.as_str())
        .timeout(Duration::from_secs(30))
        .insert_header(("Authorization", format!("Bearer {token}")));
    let sent = match &call.body {
        Some(body) => {
            req.insert_header(("Content-Type", "application/json"))
                .send_body(body.render())
                .await
        }
        None => req.send().await,
    };
    let mut resp = sent.map_err(|e| format!("no answer: {e}"))?;
    let bytes = resp
        .body()
        .limit(16 * 1024 * 1024)
        .await
        .map_err(|e| format!("answer cut short: {e}"))?;
    Ok((
        resp.status().as_u16(),
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

/// Never a 5xx; a 4xx carries `{"error": code, "message": text}`.
async fn answered_properly(app: &TestApp, token: &str, call: Call) -> Result<(), String> {
    let (status, text) = answer(app, token, &call).await?;
    if status >= 500 {
        return Err(format!("{status}: {text}"));
    }
    if status >= 400 {
        let body: Value = serde_json::from_str(&text)
            .map_err(|_| format!("{status} without a JSON body: {text:?}"))?;
        if !(body["error"].is_string() && body["message"].is_string()) {
            return Err(format!("{status} without the error shape: {body}"));
        }
    }
    Ok(())
}

#[actix_rt::test]
async fn the_admin_api_answers_hostile_bodies_and_queries_with_4xx_and_keeps_serving() {
    // Arrange: a tenant with a user, a key and a strategy for the routes that need one; another for tiers.
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "acme", "professional").await;
    create_tenant(&app, &root, "globex", "basic").await;
    let (user, _) = create_user(&app, &root, "acme", "trader@acme.test", "trader").await;
    let (key, _) = create_key(&app, &root, "acme", &["read"]).await;
    app.expect(
        201,
        "POST",
        "/api/v1/tenants/acme/strategies",
        Some(&root),
        Some(
            &json!({"id": "ema-eurusd", "kind": "ema_cross", "symbol": "EURUSD", "timeframe": "M1",
                     "volume": 0.1, "params": {"fast": 2, "slow": 3}}),
        ),
    )
    .await;
    let token = root.as_str();

    // Act / Assert
    check_property("hostile bodies", 400, body_calls(&user, &key), |call| {
        answered_properly(&app, token, call)
    })
    .await;
    check_property("hostile queries", 200, query_calls(), |call| {
        answered_properly(&app, token, call)
    })
    .await;

    still_healthy(&app).await;
    let failed = failures_since(&app, 0);
    assert!(failed.is_empty(), "an actor failed: {failed:?}");
    app.shutdown().await;
}
