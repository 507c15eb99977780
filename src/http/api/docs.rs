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

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut paths = Map::new();
    for r in ROUTES {
        let mut params: Vec<Value> = path_params(r.path)
            .into_iter()
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(r.query.iter().map(|q| {
            json!({"name": q, "in": "query", "required": false, "schema": {"type": if *q == "tenant" || *q == "action" { "string" } else { "integer" }}})
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
                    "content": {"application/json": {"schema": response(r.method, r.path, &mut generator)}}},
                "400": {"description": "Invalid request; the message names the field", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "404": {"description": "Not found, or another tenant's"},
            },
        });
        if r.method != "GET" {
            op["responses"]["409"] = json!({"description": "Conflicts with what is stored (a duplicate, a revoked key, an object in use, a running tenant)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        }
        if r.path.ends_with("/versions") && r.method == "POST" {
            op["responses"]["200"] = json!({"description": "The same file was stored already (created: false)",
                "content": {"application/json": {"schema": response(r.method, r.path, &mut generator)}}});
        }
        if r.path == "/api/v1/auth/login" || r.path == "/api/v1/auth/refresh" {
            op["responses"]["401"] =
                json!({"description": "Wrong credentials, or a refresh token that is not valid"});
        }
        if r.access != Access::Public {
            op["security"] = json!([{"bearer": []}, {"apiKey": []}]);
            op["responses"]["401"] =
                json!({"description": "Missing, invalid, expired or revoked credentials"});
            op["responses"]["403"] =
                json!({"description": "Role, scope or tier does not allow it"});
            op["responses"]["429"] =
                json!({"description": "Rate limit of the tenant's tier; see Retry-After"});
        }
        if let Some(body) = r.body {
            let schema = body(&mut generator);
            op["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": schema.to_value()}},
            });
        }
        let item = paths
            .entry(r.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        item[r.method.to_lowercase()] = op;
    }
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
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
