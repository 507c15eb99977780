//! `GET /api/asyncapi.json`: the trading-client protocol (`/ws/v1/client`, docs/client-protocol.md) as an
//! AsyncAPI 3 document, from the server's point of view (it receives the client's operations and sends
//! frames). The client operations' schemas are derived from the types the server parses them into
//! ([`ClientOp`](super::client::ClientOp) and its structs), and the records inside the server's frames from the
//! types it serialises (`Order`, `Deal`, `AccountPosition`, `Bar`, …), so neither can drift from the code.

use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use super::client::{self, ClientOp};

fn schema<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> Value {
    g.subschema_for::<T>().to_value()
}

fn message(name: &str, summary: &str, payload: Value) -> (String, Value) {
    (
        name.to_owned(),
        json!({"name": name, "summary": summary, "contentType": "application/json", "payload": payload}),
    )
}

fn frame(kind: &str, props: Value, required: &[&str]) -> Value {
    let mut props = props;
    props["type"] = json!({"const": kind});
    let mut required: Vec<&str> = required.to_vec();
    required.push("type");
    json!({"type": "object", "required": required, "properties": props})
}

/// The AsyncAPI 3.0 document.
pub fn document() -> Value {
    use crate::actors::messages::{AccountPosition, RiskState};
    use crate::domain::orders::Order;
    use crate::domain::positions::Deal;
    use crate::domain::tenant::RiskSettings;
    use crate::domain::Bar;
    use crate::domain::Prediction;
    use crate::runtime::events::SupervisionEvent;

    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "#/components/schemas/".into();
    let mut g = settings.into_generator();
    let id = json!({"type": "string", "minLength": 1, "maxLength": 64, "description": "chosen by the client, echoed in the answer"});

    // What the client sends: `{"op": …, "id": …, …fields}`.
    let ops = schema::<ClientOp>(&mut g);
    let ops = match ops["$ref"].as_str() {
        Some(r) => g
            .definitions()
            .get(r.rsplit('/').next().unwrap_or_default())
            .cloned()
            .unwrap_or(ops),
        None => ops,
    };
    let mut received = Vec::new();
    for variant in ops["oneOf"].as_array().cloned().unwrap_or_default() {
        let op = variant["properties"]["op"]["const"]
            .as_str()
            .or_else(|| variant["properties"]["op"]["enum"][0].as_str())
            .unwrap_or("op")
            .to_owned();
        // The id is read before the operation's own fields (which refuse unknown ones): one object.
        let mut payload = variant;
        payload["properties"]["id"] = id.clone();
        if let Some(required) = payload["required"].as_array_mut() {
            required.push(json!("id"));
        }
        received.push(message(&op, &format!("the `{op}` operation"), payload));
    }

    let channel = |pattern: &str| json!({"type": "string", "description": pattern});
    let data = json!({"description": "the channel's record: see the table in docs/client-protocol.md", "oneOf": [
        schema::<Order>(&mut g),
        schema::<Deal>(&mut g),
        schema::<AccountPosition>(&mut g),
        schema::<Bar>(&mut g),
        schema::<SupervisionEvent>(&mut g),
        schema::<Prediction>(&mut g),
        {"type": "object", "description": "risk: limits and state", "properties": {
            "limits": schema::<RiskSettings>(&mut g), "state": schema::<RiskState>(&mut g)}},
        {"type": "object", "description": "a tick, the PnL, a strategy, or a snapshot's collection"},
        {"type": "null", "description": "a ticks snapshot before the first tick"},
    ]});
    let seq = json!({"type": "integer", "minimum": 0});
    let sent = vec![
        message(
            "welcome",
            "the first frame of every connection",
            frame(
                "welcome",
                json!({
                    "tenant": {"type": "string"}, "actor": {"type": "string"}, "can_trade": {"type": "boolean"},
                    "channels": {"type": "array", "items": {"type": "string"}},
                    "symbols": {"type": "array", "items": {"type": "string"}},
                    "expires_ms": {"type": ["integer", "null"]},
                    "protocol_version": {"const": client::PROTOCOL_VERSION},
                }),
                &[
                    "tenant",
                    "actor",
                    "can_trade",
                    "channels",
                    "symbols",
                    "expires_ms",
                    "protocol_version",
                ],
            ),
        ),
        message(
            "ack",
            "an operation was carried out",
            frame(
                "ack",
                json!({"id": id, "op": {"type": "string"}, "result": {"type": "object"}}),
                &["id", "op", "result"],
            ),
        ),
        message(
            "refused",
            "an operation was not carried out, and why",
            frame(
                "refused",
                json!({"id": id, "op": {"type": "string"}, "code": {"enum": [
                    "bad_request", "forbidden", "rate_limited", "unknown_channel", "unknown_symbol",
                    "unknown_strategy", "unknown_order", "not_cancellable", "risk_rejected",
                    "no_session", "unavailable", "too_many_subscriptions"]},
                    "reason": {"type": "string"}}),
                &["id", "op", "code", "reason"],
            ),
        ),
        message(
            "error",
            "a frame that is not a valid operation",
            frame(
                "error",
                json!({"id": {"type": ["string", "null"]}, "code": {"const": "bad_frame"}, "reason": {"type": "string"}}),
                &["id", "code", "reason"],
            ),
        ),
        message(
            "pong",
            "the answer to `ping`",
            frame("pong", json!({"id": id}), &["id"]),
        ),
        message(
            "snapshot",
            "a channel's whole state, seq 0",
            frame(
                "snapshot",
                json!({"channel": channel("a subscribed channel"), "seq": {"const": 0}, "data": data}),
                &["channel", "seq", "data"],
            ),
        ),
        message(
            "update",
            "a change on a channel, seq 1, 2, 3 … after its snapshot; a gap means resubscribe",
            frame(
                "update",
                json!({"channel": channel("a subscribed channel"), "seq": seq, "data": data}),
                &["channel", "seq", "data"],
            ),
        ),
    ];

    let refs = |msgs: &[(String, Value)]| -> Vec<Value> {
        msgs.iter()
            .map(|(name, _)| json!({"$ref": format!("#/channels/client/messages/{name}")}))
            .collect()
    };
    let mut messages = Map::new();
    let mut components = Map::new();
    for (name, m) in received.iter().chain(sent.iter()) {
        messages.insert(
            name.clone(),
            json!({"$ref": format!("#/components/messages/{name}")}),
        );
        components.insert(name.clone(), m.clone());
    }
    let schemas: Map<String, Value> = g.take_definitions(true).into_iter().collect();
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "trellis trading-client protocol",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Subscriptions (snapshot, then updates numbered per channel) and commands over one WebSocket. \
                The prose is docs/client-protocol.md. Credentials: Authorization: Bearer <access token>, X-API-Key, \
                or ?ticket= from POST /api/v1/ws-tickets (single use, 30 s). Close codes: 1000, 1002, 1008 (token \
                expired), 1009 (frame over 64 KiB), 4008 (too far behind).",
        },
        "servers": {"local": {"host": "127.0.0.1:8080", "protocol": "ws", "description": "trellis serve / trellis demo"}},
        "channels": {
            "client": {
                "address": "/ws/v1/client",
                "messages": messages,
                "bindings": {"ws": {"method": "GET", "query": {"type": "object", "properties": {
                    "ticket": {"type": "string", "description": "from POST /api/v1/ws-tickets"},
                    "tenant": {"type": "string", "description": "a platform administrator's tenant"}}}}},
            }
        },
        "operations": {
            "receiveOperation": {
                "action": "receive", "channel": {"$ref": "#/channels/client"},
                "summary": "the client's operations", "messages": refs(&received),
            },
            "sendFrame": {
                "action": "send", "channel": {"$ref": "#/channels/client"},
                "summary": "frames to the client", "messages": refs(&sent),
            },
        },
        "components": {"messages": components, "schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_operation_and_frame_and_resolves_its_references() {
        let doc = document();
        assert_eq!(doc["asyncapi"], "3.0.0");
        let messages = doc["components"]["messages"].as_object().expect("messages");
        for op in [
            "subscribe",
            "unsubscribe",
            "place_order",
            "cancel_order",
            "flatten",
            "kill_switch",
            "strategy_start",
            "strategy_stop",
            "ping",
            "welcome",
            "ack",
            "refused",
            "error",
            "pong",
            "snapshot",
            "update",
        ] {
            assert!(messages.contains_key(op), "{op} missing");
        }
        let place = &messages["place_order"]["payload"];
        let required: Vec<&str> = place["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for field in ["op", "id", "client_order_id", "symbol", "side", "volume"] {
            assert!(required.contains(&field), "{field} not required: {place}");
        }
        // Every $ref points at something in the document.
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"").skip(1) {
            let path = &r[..r.find('"').expect("end")];
            let mut node = &doc;
            for part in path.trim_start_matches("#/").split('/') {
                node = &node[part];
            }
            assert!(!node.is_null(), "{path} unresolved");
        }
    }
}
