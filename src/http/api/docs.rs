//! `GET /api/openapi.json`, written from [`ROUTES`](super::ROUTES) (paths, methods, who may call, query
//! parameters), the request types themselves (body schemas derived with `schemars`) and the handlers' return
//! types (the success status, media type and body schema, see [`super::reply`]), so the document cannot
//! drift from the code; and `GET /api/docs`, a self-contained page that renders it (no CDN).

use std::collections::{BTreeMap, BTreeSet};

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{Html, Reply, ROUTES};
use crate::security::rbac::Access;

fn path_params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_owned)
        .collect()
}

pub use crate::domain::schema::{is_blank, NOT_BLANK, NO_NUL};

/// Ids and names: what [`super::valid_id`] accepts.
pub const ID_PATTERN: &str = r"^[A-Za-z0-9_-]{1,64}$";

/// The schema of a path parameter: what its handler accepts (others are strings looked up, 404 when absent).
fn path_schema(name: &str) -> Value {
    match name {
        // Parsed as a signed 64-bit number (400 otherwise); a login not registered is 404.
        "login" => json!({"type": "integer", "format": "int64"}),
        "alias" => json!({"type": "string", "pattern": ID_PATTERN}),
        _ => json!({"type": "string"}),
    }
}

/// The schema of a query parameter: what its handler parses (`Page`, the audit query, the events query).
fn query_schema(path: &str, name: &str) -> Value {
    let logs = path.ends_with("/logs");
    match name {
        "tenant" | "action" => json!({"type": "string"}),
        // The audit check's source: the chain of record, or its copy in the log tiers.
        "source" => json!({"type": "string", "enum": ["store", "tiers"]}),
        // The log query's filters and page (`logs::LogsParams`); the cursor is one the server issued.
        "kind" | "level" | "q" if logs => {
            json!({"type": "string", "minLength": 1, "maxLength": 200})
        }
        "cursor" if logs => json!({"type": "string"}),
        "limit" if logs => json!({"type": "integer", "minimum": 1, "maximum": 1000}),
        // `Page`'s offset and limit and the events' limit: unsigned (the limit is then brought into 1..=1000).
        "offset" | "limit" if path != "/api/v1/audit" => {
            json!({"type": "integer", "minimum": 0, "maximum": u64::MAX})
        }
        _ => json!({"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX}),
    }
}

/// The refusals a route can answer, from what its extractors and handler do.
/// The error answers of a route: those its kind implies (a body or query can be invalid, a protected route
/// can be refused, a change can conflict, …) plus what the route declares (`also`, `never` in its
/// `route!`), in status order. Nothing here looks at the path.
fn errors(r: &super::RouteDef) -> Vec<(&'static str, &'static str)> {
    let public = r.access == Access::Public;
    let mut codes: BTreeSet<u16> = BTreeSet::new();
    if r.body.is_some() || !r.query.is_empty() {
        codes.insert(400);
    }
    if r.body.is_some() {
        codes.insert(413);
    }
    if !public {
        codes.extend([401, 403, 404, 429, 503]);
        if r.method != "GET" {
            codes.insert(409);
        }
    }
    codes.extend(r.also.iter().copied());
    for c in r.never {
        codes.remove(c);
    }
    codes
        .into_iter()
        .filter_map(|c| {
            Some(match c {
                400 => ("400", "Invalid request; the message names the field"),
                401 if public => ("401", "Wrong credentials, or a refresh token that is not valid"),
                401 => ("401", "Missing, invalid, expired or revoked credentials"),
                403 => (
                    "403",
                    "Role, scope or tier does not allow it, or the tenant is suspended",
                ),
                404 => ("404", "Not found, or another tenant's"),
                409 => ("409", "Conflicts with what is stored (a duplicate, a revoked key, an object in use, a running tenant, a symbol the tenant does not trade)"),
                413 => ("413", "The body is larger than the server accepts"),
                429 if public => ("429", "Too many attempts; see Retry-After"),
                429 => ("429", "Rate limit of the tenant's tier; see Retry-After"),
                503 => (
                    "503",
                    "Storage or an actor is briefly unavailable; see Retry-After",
                ),
                _ => return None,
            })
        })
        .collect()
}

/// Writes the range of each fixed-width integer (`format` uint32, uint64, int64, …) as `minimum` and `maximum`
/// where the schema has none: the value deserializes into that Rust type, or is refused (400).
fn bound_integers(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let integer = m.get("type").is_some_and(|t| {
                t == "integer"
                    || t.as_array()
                        .is_some_and(|a| a.iter().any(|x| x == "integer"))
            });
            let range: Option<(Value, Value)> = match m.get("format").and_then(Value::as_str) {
                Some("uint8") => Some((0.into(), u8::MAX.into())),
                Some("uint16") => Some((0.into(), u16::MAX.into())),
                Some("uint32") => Some((0.into(), u32::MAX.into())),
                Some("uint64" | "uint") => Some((0.into(), u64::MAX.into())),
                Some("int8") => Some((i8::MIN.into(), i8::MAX.into())),
                Some("int16") => Some((i16::MIN.into(), i16::MAX.into())),
                Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
                Some("int64" | "int") => Some((i64::MIN.into(), i64::MAX.into())),
                _ => None,
            };
            if let (true, Some((min, max))) = (integer, range) {
                if !m.contains_key("minimum") && !m.contains_key("exclusiveMinimum") {
                    m.insert("minimum".into(), min);
                }
                if !m.contains_key("maximum") && !m.contains_key("exclusiveMaximum") {
                    m.insert("maximum".into(), max);
                }
            }
            m.values_mut().for_each(bound_integers);
        }
        Value::Array(a) => a.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

/// The `$ref` of a component schema.
fn component_ref(name: &str) -> String {
    format!("#/components/schemas/{name}")
}

/// Whether `v` refers to one of `names`.
fn refers_to(v: &Value, names: &BTreeSet<String>) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, x)| {
            (k == "$ref"
                && x.as_str()
                    .and_then(|r| r.strip_prefix("#/components/schemas/"))
                    .is_some_and(|n| names.contains(n)))
                || refers_to(x, names)
        }),
        Value::Array(a) => a.iter().any(|x| refers_to(x, names)),
        _ => false,
    }
}

/// Points the `$ref`s of `v` at the new names of `renamed` (old name → new name).
fn rename_refs(v: &mut Value, renamed: &BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                let new = (k == "$ref")
                    .then(|| x.as_str()?.strip_prefix("#/components/schemas/"))
                    .flatten()
                    .and_then(|n| renamed.get(n));
                match new {
                    Some(n) => *x = Value::String(component_ref(n)),
                    None => rename_refs(x, renamed),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rename_refs(x, renamed)),
        _ => {}
    }
}

/// Adds the answers' component schemas to `schemas` (the requests'). Requests are described as they are
/// read and answers as they are written, so a type both read and written (risk limits, a strategy, a
/// manifest) may have two schemas: where they agree it keeps one; where they differ (a field with a default
/// is always written, a field not taken as input is shown) the answer's is named `{Name}Answer`, and so is
/// every answer schema that refers to one renamed. Answers the renaming (old name → new name).
fn merge_answers(
    schemas: &mut Map<String, Value>,
    answers: Map<String, Value>,
) -> BTreeMap<String, String> {
    let mut differ: BTreeSet<String> = answers
        .iter()
        .filter(|(name, schema)| schemas.get(*name).is_some_and(|s| s != *schema))
        .map(|(name, _)| name.clone())
        .collect();
    loop {
        let more: Vec<String> = answers
            .iter()
            .filter(|(name, schema)| {
                !differ.contains(*name) && schemas.contains_key(*name) && refers_to(schema, &differ)
            })
            .map(|(name, _)| name.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        differ.extend(more);
    }
    let mut renamed = BTreeMap::new();
    for name in differ {
        let taken = |n: &str| {
            schemas.contains_key(n)
                || answers.contains_key(n)
                || renamed.values().any(|r: &String| r == n)
        };
        let mut new = format!("{name}Answer");
        let mut i = 2;
        while taken(&new) {
            new = format!("{name}Answer{i}");
            i += 1;
        }
        renamed.insert(name, new);
    }
    for (name, mut schema) in answers {
        rename_refs(&mut schema, &renamed);
        let name = renamed.get(&name).cloned().unwrap_or(name);
        schemas.entry(name).or_insert(schema);
    }
    renamed
}

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    // Request bodies as the handlers read them; answers as the handlers write them (an `Option` field is
    // always there, `null` or not; a field skipped when empty may be absent).
    let mut requests = SchemaSettings::openapi3().into_generator();
    let mut answers = SchemaSettings::openapi3().for_serialize().into_generator();
    let mut paths = Map::new();
    for r in ROUTES {
        let mut params: Vec<Value> = path_params(r.path)
            .into_iter()
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": path_schema(&p)}))
            .collect();
        params.extend(r.query.iter().map(|q| {
            json!({"name": q, "in": "query", "required": false, "schema": query_schema(r.path, q)})
        }));
        // What the handler answers on success, from its return type.
        let success = (r.success)(&mut answers);
        let mut schema = success.schema;
        for t in answers.transforms_mut() {
            t.transform(&mut schema);
        }
        let content = json!({success.media: {"schema": schema}});
        let mut responses = Map::new();
        responses.insert(
            success.status.to_string(),
            json!({"description": success.description, "content": content}),
        );
        if let Some((status, description)) = success.also {
            responses.insert(
                status.to_string(),
                json!({"description": description, "content": content}),
            );
        }
        let mut op = json!({
            "operationId": format!("{} {}", r.method.to_lowercase(), r.path),
            "summary": r.summary,
            "tags": [r.tag],
            "x-access": r.access,
            "parameters": params,
            "responses": responses,
        });
        for (code, description) in errors(r) {
            op["responses"][code] = if code == "404" {
                // Also actix's own empty 404 for a path that matches no route.
                json!({"description": description})
            } else {
                json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
            };
        }
        if r.access != Access::Public {
            op["security"] = json!([{"bearer": []}, {"apiKey": []}]);
        }
        if let Some(body) = r.body {
            let mut schema = body(&mut requests).to_value();
            if r.path == "/api/v1/ws-tickets" {
                // Documented as required: a platform administrator must name the tenant (400 otherwise), the
                // others may name their own; so naming it is what every caller can do.
                schema["required"] = json!(["tenant"]);
                schema["properties"] =
                    json!({"tenant": {"type": "string", "minLength": 1, "maxLength": 64}});
            }
            op["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": schema}},
            });
        }
        let item = paths
            .entry(r.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        item[r.method.to_lowercase()] = op;
    }
    let mut schemas: Map<String, Value> = requests.take_definitions(true).into_iter().collect();
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error", "message"], "properties": {
            "error": {"type": "string"}, "message": {"type": "string"},
            "required_tier": {"type": "string"}}}),
    );
    let renamed = merge_answers(&mut schemas, answers.take_definitions(true));
    // The answers' own references follow their renaming (the success responses; errors refer to `Error`).
    for op in paths.values_mut().filter_map(Value::as_object_mut) {
        for op in op.values_mut() {
            if let Some(responses) = op["responses"].as_object_mut() {
                responses
                    .iter_mut()
                    .filter(|(code, _)| code.starts_with('2'))
                    .for_each(|(_, r)| rename_refs(r, &renamed));
            }
        }
    }
    schemas.values_mut().for_each(bound_integers);
    paths.values_mut().for_each(bound_integers);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "trellis",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Multi-tenant trading runtime for MetaTrader 5. `x-access` is what each route requires: public, authenticated, read (viewer / key scope read), trade (trader / key scope trade), admin (tenant_admin), platform (platform_admin).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An access token from /api/v1/auth/login, or an API key"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    })
}

/// An OpenAPI 3.1 document: this one.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct OpenApiDocument(#[schemars(with = "Map<String, Value>")] pub Value);

/// An AsyncAPI 3 document: the trading-client WebSocket protocol (`/ws/v1/client`).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct AsyncApiDocument(#[schemars(with = "Map<String, Value>")] pub Value);

pub async fn openapi() -> Reply<OpenApiDocument> {
    Reply::new(OpenApiDocument(document()))
}

/// `GET /api/asyncapi.json`, the document `http::ws::asyncapi` writes.
pub async fn asyncapi() -> Reply<AsyncApiDocument> {
    Reply::new(AsyncApiDocument(crate::http::ws::asyncapi::document()))
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>trellis API</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;max-width:70em}
h2{border-bottom:1px solid #ccc;margin-top:1.5em}
.op{margin:.4em 0;padding:.4em .6em;border:1px solid #ddd;border-radius:4px}
.m{display:inline-block;width:4.5em;font-weight:bold}
.GET{color:#1a7f37}.POST{color:#0550ae}.PUT{color:#9a6700}.DELETE{color:#cf222e}
.access{float:right;color:#666}
pre{background:#f6f8fa;padding:.5em;overflow:auto}
</style></head><body>
<h1>trellis API</h1><p>Rendered from <a href="/api/openapi.json">/api/openapi.json</a>.</p>
<div id="ops">loading…</div>
<script>
fetch('/api/openapi.json').then(r=>r.json()).then(doc=>{
  const byTag={};
  for(const [path,item] of Object.entries(doc.paths)){
    for(const [method,op] of Object.entries(item)){
      (byTag[op.tags[0]]=byTag[op.tags[0]]||[]).push({path,method:method.toUpperCase(),op});
    }
  }
  const esc=s=>String(s).replace(/[&<>]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;'}[c]));
  let html='';
  for(const [tag,ops] of Object.entries(byTag)){
    html+='<h2>'+esc(tag)+'</h2>';
    for(const o of ops){
      html+='<details class="op"><summary><span class="m '+o.method+'">'+o.method+'</span> <code>'+esc(o.path)+
        '</code> — '+esc(o.op.summary)+'<span class="access">'+esc(o.op['x-access'])+'</span></summary>';
      const q=(o.op.parameters||[]).filter(p=>p.in==='query').map(p=>p.name);
      if(q.length) html+='<p>query: '+q.map(esc).join(', ')+'</p>';
      if(o.op.requestBody){
        let s=o.op.requestBody.content['application/json'].schema;
        if(s.$ref) s=doc.components.schemas[s.$ref.split('/').pop()];
        html+='<pre>'+esc(JSON.stringify(s,null,2))+'</pre>';
      }
      html+='</details>';
    }
  }
  document.getElementById('ops').innerHTML=html;
});
</script></body></html>"#;

pub async fn page() -> Html {
    Html(PAGE)
}

/// Reads a JSON body the way the document describes it. JSON Schema (and JSON itself) does not tell `5` from
/// `5.0`: a number with a zero fraction is an `integer` of the document, so it is taken as one here before the
/// body is checked against its type. An error names the field, like [`super::parse_json`].
pub fn decode<T: serde::de::DeserializeOwned>(
    mut body: Value,
) -> Result<T, crate::http::error::ApiError> {
    fn integral(v: &mut Value) {
        match v {
            Value::Number(n) => {
                if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0) {
                    if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                        *v = Value::from(f as u64);
                    } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                        *v = Value::from(f as i64);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(integral),
            Value::Object(map) => map.values_mut().for_each(integral),
            _ => {}
        }
    }
    if !body.is_object() {
        // serde would take an array for a struct, field by field: the document says object.
        return Err(crate::http::error::ApiError::BadRequest(
            "body: must be a JSON object".into(),
        ));
    }
    integral(&mut body);
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            crate::http::error::ApiError::BadRequest(format!("body: {inner}"))
        } else {
            crate::http::error::ApiError::BadRequest(format!("{path}: {inner}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_schema_that_differs_from_the_request_one_is_renamed_with_what_refers_to_it() {
        let mut schemas: Map<String, Value> = serde_json::from_value(json!({
            "Limits": {"type": "object", "required": ["a"]},
            "Tenant": {"type": "object", "properties": {"limits": {"$ref": "#/components/schemas/Limits"}}},
            "Same": {"type": "string"},
            "LimitsAnswer": {"type": "null"},
        }))
        .expect("schemas");
        let answers: Map<String, Value> = serde_json::from_value(json!({
            "Limits": {"type": "object", "required": ["a", "b"]},
            "Tenant": {"type": "object", "properties": {"limits": {"$ref": "#/components/schemas/Limits"}}},
            "Same": {"type": "string"},
            "View": {"items": {"$ref": "#/components/schemas/Tenant"}},
        }))
        .expect("answers");
        let renamed = merge_answers(&mut schemas, answers);
        assert_eq!(
            renamed,
            BTreeMap::from([
                ("Limits".to_owned(), "LimitsAnswer2".to_owned()),
                ("Tenant".to_owned(), "TenantAnswer".to_owned()),
            ])
        );
        assert_eq!(
            schemas["Limits"]["required"],
            json!(["a"]),
            "requests keep theirs"
        );
        assert_eq!(schemas["LimitsAnswer2"]["required"], json!(["a", "b"]));
        assert_eq!(
            schemas["TenantAnswer"]["properties"]["limits"]["$ref"],
            "#/components/schemas/LimitsAnswer2"
        );
        assert_eq!(
            schemas["View"]["items"]["$ref"],
            "#/components/schemas/TenantAnswer"
        );
        assert_eq!(schemas.len(), 7, "{schemas:?}");
    }

    #[test]
    fn every_route_documents_its_handler_s_answer_and_every_reference_resolves() {
        let doc = document();
        for r in ROUTES {
            let responses = &doc["paths"][r.path][r.method.to_lowercase()]["responses"];
            let ok: Vec<&String> = responses
                .as_object()
                .map(|m| m.keys().filter(|c| c.starts_with('2')).collect())
                .unwrap_or_default();
            assert!(!ok.is_empty(), "{} {}", r.method, r.path);
        }
        let posted = |path: &str| {
            doc["paths"][path]["post"]["responses"]
                .as_object()
                .map(|m| {
                    m.keys()
                        .filter(|c| c.starts_with('2'))
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        assert_eq!(posted("/api/v1/tenants"), ["201"]);
        assert_eq!(posted("/api/v1/tenants/{tenant}/optimisations"), ["202"]);
        assert_eq!(
            posted("/api/v1/tenants/{tenant}/models/{model}/versions"),
            ["200", "201"]
        );
        assert_eq!(posted("/api/v1/tenants/{tenant}/restart"), ["200"]);
        let text = doc.to_string();
        let schemas = &doc["components"]["schemas"];
        for r in text.split("\"#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap_or_default();
            assert!(schemas[name].is_object(), "{name} resolves");
        }
    }
}
