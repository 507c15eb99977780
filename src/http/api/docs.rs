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
        let mut op = json!({
            "operationId": format!("{} {}", r.method.to_lowercase(), r.path),
            "summary": r.summary,
            "tags": [r.tag],
            "x-access": r.access,
            "parameters": params,
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "Invalid request; the message names the field", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "404": {"description": "Not found, or another tenant's"},
            },
        });
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
