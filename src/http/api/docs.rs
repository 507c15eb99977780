//! `GET /api/openapi.json`, written from [`ROUTES`](super::ROUTES) (paths, methods, who may call, query
//! parameters) and the request types themselves (body schemas derived with `schemars`), so the document
//! cannot drift from the code; and `GET /api/docs`, a self-contained page that renders it (no CDN).

use actix_web::HttpResponse;
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use super::ROUTES;
use crate::security::rbac::Access;

fn path_params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_owned)
        .collect()
}

fn of<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> Value {
    g.subschema_for::<T>().to_value()
}

fn obj(props: Vec<(&str, Value)>) -> Value {
    let required: Vec<&str> = props.iter().map(|(k, _)| *k).collect();
    let props: Map<String, Value> = props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    json!({"type": "object", "required": required, "properties": props})
}

fn list(name: &str, item: Value) -> Value {
    obj(vec![(name, json!({"type": "array", "items": item}))])
}

/// The schema of a route's successful answer.
pub fn response(method: &str, path: &str, g: &mut schemars::SchemaGenerator) -> Option<Value> {
    use crate::actors::events::SupervisionEvent;
    use crate::actors::messages::{AccountPosition, RiskState};
    use crate::config::{RiskSettings, StrategySettings};
    use crate::domain::orders::Order;
    use crate::domain::positions::{Deal, Performance};
    use crate::security::service::{AuditView, ChainCheck, KeyView, TokenPair, UserView};
    let strategy = || -> fn(&mut schemars::SchemaGenerator) -> Value {
        |g| {
            obj(vec![
                ("strategy", of::<StrategySettings>(g)),
                ("running", json!({"type": "boolean"})),
                (
                    "state",
                    json!({"type": "string", "enum": ["running", "restarting", "failed", "stopped"]}),
                ),
                (
                    "last_error",
                    json!({"type": ["string", "null"], "description": "why the strategy was disabled"}),
                ),
            ])
        }
    };
    let tenant = |g: &mut schemars::SchemaGenerator| of::<super::tenants::TenantView>(g);
    let path = path.trim_start_matches("/api/v1");
    Some(match (method, path) {
        ("POST", "/auth/login") | ("POST", "/auth/refresh") => of::<TokenPair>(g),
        ("POST", "/auth/logout") => obj(vec![("logged_out", json!({"type": "boolean"}))]),
        ("GET", "/me") => {
            json!({"type": "object", "description": "kind (user, api_key, config_key), tenant_id, role or scopes"})
        }
        ("POST", "/tenants")
        | ("GET", "/tenants/{tenant}")
        | ("PUT", "/tenants/{tenant}/tier")
        | ("POST", "/tenants/{tenant}/suspend")
        | ("POST", "/tenants/{tenant}/restart")
        | ("POST", "/tenants/{tenant}/resume") => tenant(g),
        ("GET", "/tenants") => list("tenants", tenant(g)),
        ("POST", "/tenants/{tenant}/users")
        | ("PUT", "/tenants/{tenant}/users/{user}/role")
        | ("POST", "/tenants/{tenant}/users/{user}/disable") => of::<UserView>(g),
        ("GET", "/tenants/{tenant}/users") => obj(vec![
            (
                "users",
                json!({"type": "array", "items": of::<UserView>(g)}),
            ),
            ("total", json!({"type": "integer"})),
        ]),
        ("POST", "/tenants/{tenant}/api-keys") => obj(vec![
            ("key", of::<KeyView>(g)),
            (
                "secret",
                json!({"type": "string", "description": "shown once"}),
            ),
        ]),
        ("POST", "/tenants/{tenant}/api-keys/{key}/roll") => obj(vec![
            ("key", of::<KeyView>(g)),
            (
                "secret",
                json!({"type": "string", "description": "shown once"}),
            ),
            ("previous", of::<KeyView>(g)),
        ]),
        ("GET", "/tenants/{tenant}/api-keys") => obj(vec![
            ("keys", json!({"type": "array", "items": of::<KeyView>(g)})),
            ("total", json!({"type": "integer"})),
        ]),
        ("DELETE", "/tenants/{tenant}/api-keys/{key}") => of::<KeyView>(g),
        ("POST", "/tenants/{tenant}/mt5-accounts") => of::<super::accounts::AccountView>(g),
        ("GET", "/tenants/{tenant}/mt5-accounts") => {
            list("accounts", of::<super::accounts::AccountView>(g))
        }
        ("DELETE", "/tenants/{tenant}/mt5-accounts/{login}") => {
            obj(vec![("removed", json!({"type": "integer"}))])
        }
        ("GET", "/tenants/{tenant}/models") => obj(vec![
            (
                "models",
                json!({"type": "array", "items": {"type": "object", "description": "name, description, created_ms, versions (count), aliases (alias → version)"}}),
            ),
            ("total", json!({"type": "integer"})),
        ]),
        ("POST", "/tenants/{tenant}/models") => obj(vec![(
            "model",
            json!({"type": "object", "description": "tenant_id, name, description, created_ms"}),
        )]),
        ("GET", "/tenants/{tenant}/models/{model}") => {
            json!({"type": "object", "description": "model, versions (version, manifest, size_bytes, created_ms), aliases (alias → version), alias_history (alias, seq, version, from_ms, to_ms)"})
        }
        ("POST", "/tenants/{tenant}/models/{model}/versions") => {
            json!({"type": "object", "description": "model, version (sha256 of the file), size_bytes, created (false: the same file was stored already)"})
        }
        ("PUT", "/tenants/{tenant}/models/{model}/aliases/{alias}") => {
            json!({"type": "object", "description": "model, alias, version, previous, deployments (those that follow the alias and now serve the version)"})
        }
        ("DELETE", "/tenants/{tenant}/models/{model}/versions/{version}") => {
            obj(vec![("deleted", json!({"type": "string"}))])
        }
        ("GET", "/tenants/{tenant}/deployments") => list("models", deployment()),
        ("POST", "/tenants/{tenant}/models/{model}/deployments")
        | ("GET", "/tenants/{tenant}/models/{model}/deployments/{deployment}")
        | ("PUT", "/tenants/{tenant}/models/{model}/deployments/{deployment}") => deployment(),
        ("DELETE", "/tenants/{tenant}/models/{model}/deployments/{deployment}") => {
            obj(vec![("deleted", json!({"type": "string"}))])
        }
        ("POST", "/tenants/{tenant}/models/{model}/jobs")
        | ("GET", "/tenants/{tenant}/jobs/{job}")
        | ("DELETE", "/tenants/{tenant}/jobs/{job}") => obj(vec![("job", job())]),
        ("GET", "/tenants/{tenant}/models/{model}/jobs") => list("jobs", job()),
        ("GET", "/tenants/{tenant}/models/{model}/monitoring") => obj(vec![
            ("model", json!({"type": "string"})),
            (
                "deployments",
                json!({"type": "array", "items": deployment()}),
            ),
        ]),
        ("GET", "/tenants/{tenant}/strategies") => list("strategies", strategy()(g)),
        ("POST", "/tenants/{tenant}/strategies")
        | ("GET", "/tenants/{tenant}/strategies/{strategy}")
        | ("PUT", "/tenants/{tenant}/strategies/{strategy}")
        | ("POST", "/tenants/{tenant}/strategies/{strategy}/start")
        | ("POST", "/tenants/{tenant}/strategies/{strategy}/stop") => strategy()(g),
        ("DELETE", "/tenants/{tenant}/strategies/{strategy}") => {
            obj(vec![("deleted", json!({"type": "string"}))])
        }
        ("POST", "/tenants/{tenant}/optimisations")
        | ("GET", "/tenants/{tenant}/optimisations/{optimisation}")
        | ("DELETE", "/tenants/{tenant}/optimisations/{optimisation}") => {
            obj(vec![("optimisation", optimisation())])
        }
        ("GET", "/tenants/{tenant}/optimisations") => list("optimisations", optimisation()),
        ("GET", "/tenants/{tenant}/risk") => obj(vec![
            ("limits", of::<RiskSettings>(g)),
            ("state", of::<RiskState>(g)),
        ]),
        ("GET", "/tenants/{tenant}/correlations") => {
            json!({"type": "object", "description": "symbols, correlations (matrix, null until enough bars), covariance, shrinkage (Ledoit–Wolf intensity), observations, timeframe"})
        }
        ("PUT", "/tenants/{tenant}/risk") => obj(vec![("limits", of::<RiskSettings>(g))]),
        ("PUT", "/tenants/{tenant}/kill-switch") => obj(vec![("state", of::<RiskState>(g))]),
        ("GET", "/tenants/{tenant}/orders") => obj(vec![
            ("orders", json!({"type": "array", "items": of::<Order>(g)})),
            ("total", json!({"type": "integer"})),
        ]),
        ("GET", "/tenants/{tenant}/fills") => obj(vec![
            ("fills", json!({"type": "array", "items": of::<Deal>(g)})),
            ("total", json!({"type": "integer"})),
        ]),
        ("GET", "/tenants/{tenant}/positions") => list("positions", of::<AccountPosition>(g)),
        ("GET", "/tenants/{tenant}/performance") => {
            obj(vec![("performance", of::<Performance>(g))])
        }
        ("GET", "/tenants/{tenant}/supervision-events") => {
            list("events", of::<SupervisionEvent>(g))
        }
        ("GET", "/audit") => obj(vec![
            ("tenant", json!({"type": "string"})),
            (
                "entries",
                json!({"type": "array", "items": of::<AuditView>(g)}),
            ),
        ]),
        ("GET", "/audit/verify") => of::<ChainCheck>(g),
        ("GET", "/positions") => obj(vec![
            (
                "positions",
                json!({"type": "array", "items": of::<AccountPosition>(g)}),
            ),
            ("performance", of::<Performance>(g)),
        ]),
        ("GET", "/orders") => list("orders", of::<Order>(g)),
        ("GET", "/api/openapi.json") => json!({"type": "object", "description": "this document"}),
        ("GET", "/api/asyncapi.json") => {
            json!({"type": "object", "description": "an AsyncAPI 3 document"})
        }
        ("POST", "/ws-tickets") => obj(vec![
            (
                "ticket",
                json!({"type": "string", "description": "single use, valid 30 s"}),
            ),
            ("expires_ms", json!({"type": "integer"})),
        ]),
        ("GET", "/api/docs") => json!({"type": "string", "description": "an HTML page"}),
        _ => return None,
    })
}

/// The media type of a route's successful answer.
fn success_type(path: &str) -> &'static str {
    if path == "/api/docs" {
        "text/html"
    } else {
        "application/json"
    }
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
    match name {
        "tenant" | "action" => json!({"type": "string"}),
        // `Page`'s offset and limit and the events' limit: unsigned (the limit is then brought into 1..=1000).
        "offset" | "limit" if path != "/api/v1/audit" => {
            json!({"type": "integer", "minimum": 0, "maximum": u64::MAX})
        }
        _ => json!({"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX}),
    }
}

/// The refusals a route can answer, from what its extractors and handler do.
fn errors(r: &super::RouteDef) -> Vec<(&'static str, &'static str)> {
    let public = r.access == Access::Public;
    let auth = r.path.starts_with("/api/v1/auth/");
    let mut out = Vec::new();
    let validated = r.body.is_some()
        || !r.query.is_empty()
        || r.path.ends_with("{login}")
        || r.path.ends_with("{alias}")
        || r.path == "/api/v1/auth/logout";
    if validated {
        out.push(("400", "Invalid request; the message names the field"));
    }
    if !public || auth {
        out.push((
            "401",
            if public {
                "Wrong credentials, or a refresh token that is not valid"
            } else {
                "Missing, invalid, expired or revoked credentials"
            },
        ));
    }
    if !public {
        out.push((
            "403",
            "Role, scope or tier does not allow it, or the tenant is suspended",
        ));
        if r.path != "/api/v1/tenants" {
            out.push(("404", "Not found, or another tenant's"));
        }
    }
    if !public && r.method != "GET" && r.path != "/api/v1/ws-tickets" {
        out.push(("409", "Conflicts with what is stored (a duplicate, a revoked key, an object in use, a running tenant, a symbol the tenant does not trade)"));
    }
    if r.body.is_some() {
        out.push(("413", "The body is larger than the server accepts"));
    }
    if !public || r.path == "/api/v1/auth/login" {
        out.push((
            "429",
            if public {
                "Too many attempts; see Retry-After"
            } else {
                "Rate limit of the tenant's tier; see Retry-After"
            },
        ));
    }
    if !public || auth {
        out.push((
            "503",
            "Storage or an actor is briefly unavailable; see Retry-After",
        ));
    }
    out
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

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut paths = Map::new();
    for r in ROUTES {
        let mut params: Vec<Value> = path_params(r.path)
            .into_iter()
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": path_schema(&p)}))
            .collect();
        params.extend(r.query.iter().map(|q| {
            json!({"name": q, "in": "query", "required": false, "schema": query_schema(r.path, q)})
        }));
        let creates = [
            "/tenants",
            "/users",
            "/api-keys",
            "/mt5-accounts",
            "/strategies",
            "/roll",
            "/models",
            "/versions",
            "/deployments",
            "/jobs",
            "/ws-tickets",
        ];
        let success = if r.method == "POST" && creates.iter().any(|c| r.path.ends_with(c)) {
            "201"
        } else if r.method == "POST" && r.path.ends_with("/optimisations") {
            "202"
        } else {
            "200"
        };
        let mut op = json!({
            "operationId": format!("{} {}", r.method.to_lowercase(), r.path),
            "summary": r.summary,
            "tags": [r.tag],
            "x-access": r.access,
            "parameters": params,
            "responses": {
                success: {"description": match success { "201" => "Created", "202" => "Accepted: queued, to be watched", _ => "OK" },
                    "content": {success_type(r.path): {"schema": response(r.method, r.path, &mut generator)}}},
            },
        });
        if r.path.ends_with("/versions") && r.method == "POST" {
            op["responses"]["200"] = json!({"description": "The same file was stored already (created: false)",
                "content": {"application/json": {"schema": response(r.method, r.path, &mut generator)}}});
        }
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
            let mut schema = body(&mut generator).to_value();
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
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    schemas.values_mut().for_each(bound_integers);
    paths.values_mut().for_each(bound_integers);
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error", "message"], "properties": {
            "error": {"type": "string"}, "message": {"type": "string"},
            "required_tier": {"type": "string"}}}),
    );
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

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(document())
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

pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PAGE)
}

/// A model deployment as the API shows it.
fn deployment() -> serde_json::Value {
    json!({"type": "object", "description": "deployment, model (registry model, absent for configured files), symbol, timeframe, budget_us, state (running, restarting, failed), last_error, versions (version, alias, shadow, configured_weight, manifest, live: counts served/not_finite/failed/over_budget/over_quota, weight in force, rolled_back, monitoring with outcomes, directional_accuracy, mae, drift), recent predictions"})
}

/// An optimisation job as the API shows it.
fn optimisation() -> serde_json::Value {
    json!({"type": "object", "description": "id, tenant, actor, state (queued, running, succeeded, failed, cancelled), runs_done, runs_total, created_ms, started_ms, finished_ms, request, ticks, results (best first, at most 100: params, score — null when infeasible —, and report or error), walk_forward (spec, windows with bounds, best params, in-sample score and net profit, out-of-sample net profit and trades; stitched out-of-sample equity; out_net_profit; efficiency), error"})
}

/// A training job as the API shows it.
fn job() -> serde_json::Value {
    json!({"type": "object", "description": "id, tenant, model, state (queued, running, succeeded, failed, cancelled), progress (0–1), actor, created_ms, started_ms, finished_ms, request, bars, version (the trained version's sha256), report (walk-forward: folds with accuracy, base_rate, log_loss, sharpe, trades; totals), promotion (alias, promoted, reason, comparison with McNemar p_value, previous, deployments), error"})
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

/// A positive decimal of the document as a string: no sign, no exponent, up to 15 integer digits and
/// 28 decimals, not zero (its first significant digit within the 28 decimals).
const POSITIVE_DECIMAL: &str = r"^([1-9][0-9]{0,14}(\.[0-9]{1,28})?|0\.0{0,27}[1-9][0-9]{0,27})$";
/// A decimal from 0 to 1 as a string.
const FRACTION_DECIMAL: &str = r"^(0(\.[0-9]{1,28})?|1(\.0{1,28})?)$";
/// The range of a positive decimal given as a JSON number (a float is exact to these bounds).
const POSITIVE_MIN: f64 = 1e-8;
const POSITIVE_MAX: f64 = 999_999_999_999_999.0;

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

/// What a decimal of the document may be.
#[derive(Debug, Clone, Copy)]
pub enum DecimalRule {
    Positive,
    Fraction,
}

fn digits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Checks a decimal as its document schema says ([`positive_decimal`], [`fraction_decimal`]); absent or null
/// passes (the field is optional). The error names the field.
pub fn check_decimal(
    v: Option<&Value>,
    field: &str,
    rule: DecimalRule,
) -> Result<(), crate::http::error::ApiError> {
    let ok = match (v, rule) {
        (None | Some(Value::Null), _) => true,
        (Some(Value::Number(n)), DecimalRule::Positive) => n
            .as_f64()
            .is_some_and(|f| (POSITIVE_MIN..=POSITIVE_MAX).contains(&f)),
        (Some(Value::Number(n)), DecimalRule::Fraction) => {
            n.as_f64().is_some_and(|f| (0.0..=1.0).contains(&f))
        }
        (Some(Value::String(s)), DecimalRule::Positive) => {
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
        (Some(Value::String(s)), DecimalRule::Fraction) => {
            s.len() <= 30
                && match s.split_once('.') {
                    None => s == "0" || s == "1",
                    Some(("0", f)) => digits(f, 1, 28),
                    Some(("1", f)) => digits(f, 1, 28) && f.bytes().all(|b| b == b'0'),
                    _ => false,
                }
        }
        _ => true, // another type: the body's type check names it
    };
    if ok {
        return Ok(());
    }
    Err(crate::http::error::ApiError::BadRequest(match rule {
        DecimalRule::Positive => format!(
            "{field}: must be greater than 0: a number from 1e-8 to 999999999999999, or a string of decimal digits"
        ),
        DecimalRule::Fraction => format!("{field}: from 0 to 1"),
    }))
}

/// Checks the decimals of risk limits in a JSON body (before it is read into [`crate::config::RiskSettings`]).
pub fn check_risk_decimals(v: &Value, at: &str) -> Result<(), crate::http::error::ApiError> {
    for name in [
        "max_order_volume",
        "max_net_position",
        "max_daily_loss",
        "max_drawdown",
        "max_portfolio_volatility",
    ] {
        check_decimal(v.get(name), &format!("{at}{name}"), DecimalRule::Positive)?;
    }
    if let Some(r) = v.get("regime") {
        check_decimal(
            r.get("scale"),
            &format!("{at}regime.scale"),
            DecimalRule::Fraction,
        )?;
    }
    Ok(())
}
