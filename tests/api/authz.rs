//! The authorization matrix: every route of the API × every kind of caller × own and other tenant, against
//! an oracle written here independently of the code's own rules.

use std::collections::HashMap;

use serde_json::{json, Value};
use trellis::http::api::ROUTES;
use trellis::security::rbac::Access;

use crate::helpers::{create_key, create_tenant, create_user, spawn_admin_app, TestApp};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Platform,
    TenantAdmin,
    Trader,
    Viewer,
    ReadKey,
    TradeKey,
}

const CALLERS: [Caller; 6] = [
    Caller::Platform,
    Caller::TenantAdmin,
    Caller::Trader,
    Caller::Viewer,
    Caller::ReadKey,
    Caller::TradeKey,
];

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Allowed,
    /// 403: known caller, not allowed.
    Denied,
    /// 404: another tenant's, not revealed.
    Hidden,
}

/// The oracle: who may call what.
fn may(access: Access, c: Caller) -> bool {
    use Caller::*;
    match access {
        Access::Public | Access::Authenticated => true,
        Access::Read => matches!(
            c,
            Platform | TenantAdmin | Trader | Viewer | ReadKey | TradeKey
        ),
        Access::Trade => matches!(c, Platform | TenantAdmin | Trader | TradeKey),
        Access::Admin => matches!(c, Platform | TenantAdmin),
        Access::Platform => matches!(c, Platform),
    }
}

fn expected(access: Access, c: Caller, other_tenant: bool) -> Outcome {
    if access == Access::Public {
        Outcome::Allowed
    } else if other_tenant && c != Caller::Platform {
        Outcome::Hidden
    } else if may(access, c) {
        Outcome::Allowed
    } else {
        Outcome::Denied
    }
}

fn classify(status: u16) -> Option<Outcome> {
    match status {
        403 => Some(Outcome::Denied),
        404 => Some(Outcome::Hidden),
        401 | 500..=599 => None,
        _ => Some(Outcome::Allowed),
    }
}

/// Real objects of a tenant for the path's `{user}`, `{key}`, `{strategy}`, `{login}`, `{model}`,
/// `{version}`, `{deployment}`, `{job}`, `{optimisation}` (`{alias}` is any name).
struct Objects {
    user: String,
    key: String,
    strategy: String,
    login: String,
    model: String,
    version: String,
    /// A version of the tenant's strategy module `sm` (for `{version}` under `/strategy-modules/`).
    module_version: String,
    deployment: String,
    /// The version deployments are made of (never deleted by a case).
    deployed: String,
    job: String,
    optimisation: String,
}

/// A new deployment of the tenant's model `m`, serving `version`.
async fn fresh_deployment(
    app: &TestApp,
    admin: &str,
    tenant: &str,
    version: &str,
    n: usize,
) -> String {
    let id = format!("d{n}");
    app.expect(
        201,
        "POST",
        &format!("/api/v1/tenants/{tenant}/models/m/deployments"),
        Some(admin),
        Some(&json!({"id": id, "symbol": "EURUSD", "timeframe": "M1", "traffic": [{"version": version}]})),
    )
    .await;
    id
}

/// A new version of the tenant's model `m` (a linear model with bias `n`, so each is a new file).
async fn fresh_version(app: &TestApp, admin: &str, tenant: &str, n: usize) -> String {
    use base64::Engine as _;
    let file = trellis::models::onnx::linear_model(&[1.0], n as f32);
    let body = app
        .expect(
            201,
            "POST",
            &format!("/api/v1/tenants/{tenant}/models/m/versions"),
            Some(admin),
            Some(&json!({"manifest": {"features": ["return_1"], "output": {"kind": "expected_return"}},
                         "file_base64": base64::engine::general_purpose::STANDARD.encode(file)})),
        )
        .await;
    body["version"].as_str().expect("version").to_owned()
}

/// A new version of the tenant's strategy module `sm` (its `warm_up_bars` answers `n`, so each is new).
async fn fresh_module(app: &TestApp, admin: &str, tenant: &str, n: usize) -> String {
    use base64::Engine as _;
    let text = format!(
        r#"(module (memory (export "memory") 1)
             (func (export "trellis_interface_version") (result i32) (i32.const 1))
             (func (export "warm_up_bars") (result i32) (i32.const {n}))
             (func (export "on_bar") (param f64 f64 f64 f64 i64 i64) (result i32) (i32.const 0)))"#
    );
    let file = wat::parse_str(text).expect("module");
    let body = app
        .expect(
            201,
            "POST",
            &format!("/api/v1/tenants/{tenant}/strategy-modules"),
            Some(admin),
            Some(&json!({"name": "sm",
                         "file_base64": base64::engine::general_purpose::STANDARD.encode(file)})),
        )
        .await;
    body["version"].as_str().expect("version").to_owned()
}

async fn fresh_strategy(app: &TestApp, admin: &str, tenant: &str, n: usize) -> String {
    let id = format!("s{n}");
    app.expect(
        201,
        "POST",
        &format!("/api/v1/tenants/{tenant}/strategies"),
        Some(admin),
        Some(
            &json!({"id": id, "kind": "ema_cross", "symbol": "EURUSD", "timeframe": "M1",
            "volume": 0.1, "params": {"fast": 2, "slow": 3}}),
        ),
    )
    .await;
    id
}

async fn fresh_account(app: &TestApp, admin: &str, tenant: &str, n: usize) -> String {
    let login = 100_000 + n;
    app.expect(
        201,
        "POST",
        &format!("/api/v1/tenants/{tenant}/mt5-accounts"),
        Some(admin),
        Some(&json!({"login": login, "server": "Broker-Demo", "password": "mt5-secret"})),
    )
    .await;
    login.to_string()
}

fn fill(path: &str, tenant: &str, o: &Objects) -> String {
    let version = if path.contains("/strategy-modules/") {
        &o.module_version
    } else {
        &o.version
    };
    path.replace("{tenant}", tenant)
        .replace("{module}", "sm")
        .replace("{user}", &o.user)
        .replace("{key}", &o.key)
        .replace("{strategy}", &o.strategy)
        .replace("{login}", &o.login)
        .replace("{model}", &o.model)
        .replace("{version}", version)
        .replace("{deployment}", &o.deployment)
        .replace("{job}", &o.job)
        .replace("{optimisation}", &o.optimisation)
        .replace("{alias}", "champion")
}

#[actix_rt::test]
async fn every_route_answers_every_role_of_every_tenant_as_the_matrix_says() {
    let (app, root) =
        spawn_admin_app(&[("TRELLIS__SECURITY__LOGIN_PER_ACCOUNT_PER_MIN", "1000")]).await;
    create_tenant(&app, &root, "acme", "enterprise").await;
    create_tenant(&app, &root, "globex", "enterprise").await;
    let mut tokens: HashMap<&str, String> = HashMap::new();
    let mut emails: HashMap<&str, String> = HashMap::new();
    for (name, role) in [
        ("admin", "tenant_admin"),
        ("trader", "trader"),
        ("viewer", "viewer"),
    ] {
        let email = format!("{name}@acme.test");
        let (_, token) = create_user(&app, &root, "acme", &email, role).await;
        tokens.insert(name, token);
        emails.insert(name, email);
    }
    let (_, read_key) = create_key(&app, &root, "acme", &["read"]).await;
    let (_, trade_key) = create_key(&app, &root, "acme", &["trade"]).await;
    let mut objects = HashMap::new();
    for tenant in ["acme", "globex"] {
        let (user, _) = create_user(
            &app,
            &root,
            tenant,
            &format!("victim@{tenant}.test"),
            "viewer",
        )
        .await;
        let (key, _) = create_key(&app, &root, tenant, &["read"]).await;
        let strategy = fresh_strategy(&app, &root, tenant, 0).await;
        let login = fresh_account(&app, &root, tenant, 0).await;
        app.expect(
            201,
            "POST",
            &format!("/api/v1/tenants/{tenant}/models"),
            Some(&root),
            Some(&json!({"name": "m"})),
        )
        .await;
        let version = fresh_version(&app, &root, tenant, 0).await;
        let deployed = fresh_version(&app, &root, tenant, 1_000).await;
        let deployment = fresh_deployment(&app, &root, tenant, &deployed, 0).await;
        let module_version = fresh_module(&app, &root, tenant, 0).await;
        let job = app
            .expect(
                201,
                "POST",
                &format!("/api/v1/tenants/{tenant}/models/m/jobs"),
                Some(&root),
                Some(&json!({"symbol": "EURUSD", "timeframe": "M1", "train": {"features": ["return_1"]}})),
            )
            .await["job"]["id"]
            .as_str()
            .expect("job id")
            .to_owned();
        let optimisation = app
            .expect(
                202,
                "POST",
                &format!("/api/v1/tenants/{tenant}/optimisations"),
                Some(&root),
                Some(
                    &json!({"kind": "ema_cross", "symbol": "EURUSD", "timeframe": "M1",
                    "from_ms": 0, "to_ms": 1, "grid": {"fast": [2], "slow": [5]}}),
                ),
            )
            .await["optimisation"]["id"]
            .as_str()
            .expect("optimisation id")
            .to_owned();
        objects.insert(
            tenant,
            Objects {
                user,
                key,
                strategy,
                login,
                model: "m".into(),
                version,
                module_version,
                deployment,
                deployed,
                job,
                optimisation,
            },
        );
    }
    tokens.insert("root", root.clone());
    let token_of = |c: Caller, tokens: &HashMap<&str, String>| -> String {
        match c {
            Caller::Platform => tokens["root"].clone(),
            Caller::TenantAdmin => tokens["admin"].clone(),
            Caller::Trader => tokens["trader"].clone(),
            Caller::Viewer => tokens["viewer"].clone(),
            Caller::ReadKey => read_key.clone(),
            Caller::TradeKey => trade_key.clone(),
        }
    };

    let mut cases = 0;
    let mut wrong = Vec::new();
    let mut n = 0;
    for route in ROUTES {
        let tenant_scoped = route.path.contains("{tenant}");
        let targets: &[(&str, bool)] = if tenant_scoped {
            &[("acme", false), ("globex", true)]
        } else {
            &[("acme", false)]
        };
        // Without credentials every protected route answers 401.
        if route.access != Access::Public {
            let path = fill(route.path, "acme", &objects["acme"]);
            let r = app.call(route.method, &path, None, None).await;
            cases += 1;
            if r.status != 401 {
                wrong.push(format!(
                    "{} {path} anonymous: {} (expected 401)",
                    route.method, r.status
                ));
            }
        }
        for &caller in &CALLERS {
            for &(tenant, other) in targets {
                n += 1;
                let root = tokens["root"].clone();
                // Deleting needs an object that still exists: a fresh one per case.
                if route.method == "DELETE" && route.path.contains("{strategy}") {
                    let s = fresh_strategy(&app, &root, tenant, n).await;
                    objects.get_mut(tenant).expect("objects").strategy = s;
                }
                if route.method == "DELETE" && route.path.contains("{module}") {
                    let v = fresh_module(&app, &root, tenant, n).await;
                    objects.get_mut(tenant).expect("objects").module_version = v;
                } else if route.method == "DELETE" && route.path.contains("{version}") {
                    let v = fresh_version(&app, &root, tenant, n).await;
                    objects.get_mut(tenant).expect("objects").version = v;
                }
                if route.method == "DELETE" && route.path.contains("{deployment}") {
                    let v = objects[tenant].deployed.clone();
                    let d = fresh_deployment(&app, &root, tenant, &v, n).await;
                    objects.get_mut(tenant).expect("objects").deployment = d;
                }
                if route.method == "DELETE" && route.path.contains("{login}") {
                    let l = fresh_account(&app, &root, tenant, n).await;
                    objects.get_mut(tenant).expect("objects").login = l;
                }
                let path = fill(route.path, tenant, &objects[tenant]);
                let token = token_of(caller, &tokens);
                let body: Option<Value> = matches!(route.method, "POST" | "PUT").then(|| json!({}));
                let r = app
                    .call(route.method, &path, Some(&token), body.as_ref())
                    .await;
                cases += 1;
                let mut want = expected(route.access, caller, other);
                // The routes of the caller's own tenant (no `{tenant}` in the path) have nothing to act on for
                // a platform administrator, who has no tenant: refused (403), pointed at the tenant paths.
                if caller == Caller::Platform
                    && matches!(route.path, "/api/v1/orders" | "/api/v1/positions")
                {
                    want = Outcome::Denied;
                }
                let got = classify(r.status);
                if got.as_ref() != Some(&want) {
                    wrong.push(format!(
                        "{} {path} as {caller:?}: {} {:?} (expected {want:?})",
                        route.method, r.status, r.body
                    ));
                }
                // Undo what would stop the next cases: a suspension, a logged-out session.
                if route.path.ends_with("/suspend") && r.status == 200 {
                    app.expect(
                        200,
                        "POST",
                        &format!("/api/v1/tenants/{tenant}/resume"),
                        Some(&root),
                        None,
                    )
                    .await;
                }
                if route.path == "/api/v1/auth/logout" && r.status == 200 {
                    let fresh = match caller {
                        Caller::Platform => Some("root"),
                        Caller::TenantAdmin => Some("admin"),
                        Caller::Trader => Some("trader"),
                        Caller::Viewer => Some("viewer"),
                        _ => None,
                    };
                    if let Some(name) = fresh {
                        let (email, password) = if name == "root" {
                            (
                                crate::helpers::ROOT_EMAIL.to_owned(),
                                crate::helpers::ROOT_PASSWORD,
                            )
                        } else {
                            (emails[name].clone(), "a-password-of-twelve+")
                        };
                        let (t, _) = app.login(&email, password).await;
                        tokens.insert(name, t);
                    }
                }
            }
        }
    }
    eprintln!(
        "authorization matrix: {} routes, {cases} cases",
        ROUTES.len()
    );
    assert!(
        wrong.is_empty(),
        "{} of {cases} cases wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(
        cases > 400,
        "the matrix covers every route, caller and tenant ({cases})"
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn the_openapi_document_describes_every_route_and_the_docs_page_renders_it() {
    let (app, _) = spawn_admin_app(&[]).await;
    let doc = app
        .expect(200, "GET", "/api/openapi.json", None, None)
        .await;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut described = 0;
    for r in ROUTES {
        let op = &doc["paths"][r.path][r.method.to_lowercase()];
        assert!(op.is_object(), "{} {} is in the document", r.method, r.path);
        assert_eq!(op["summary"], r.summary);
        let ok = op["responses"]
            .as_object()
            .and_then(|rs| rs.iter().find(|(code, _)| code.starts_with('2')))
            .and_then(|(_, v)| v["content"].as_object()?.values().next().cloned())
            .map(|media| media["schema"].clone())
            .unwrap_or_default();
        assert!(
            ok.is_object(),
            "{} {} documents its answer",
            r.method,
            r.path
        );
        if r.body.is_some() {
            let schema = &op["requestBody"]["content"]["application/json"]["schema"];
            let name = schema["$ref"].as_str().expect("a named schema");
            let name = name.rsplit('/').next().expect("name");
            assert!(
                doc["components"]["schemas"][name]["properties"].is_object(),
                "{name} is described"
            );
        }
        described += 1;
    }
    assert_eq!(described, ROUTES.len());
    // Every reference resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 20, "{} references", all.len());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .expect("a component reference");
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} resolves"
        );
    }
    // The request types deny unknown fields, and the schema says so.
    assert_eq!(
        doc["components"]["schemas"]["CreateUser"]["additionalProperties"],
        false
    );
    // The page is HTML, and says so.
    assert!(
        doc["paths"]["/api/docs"]["get"]["responses"]["200"]["content"]["text/html"].is_object()
    );
    // What the handlers check is in the schemas: lengths, enums, ranges.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["CreateTenant"]["properties"]["name"]["maxLength"],
        200
    );
    assert_eq!(schemas["CreateKey"]["properties"]["name"]["maxLength"], 100);
    assert_eq!(
        schemas["RegisterAccount"]["properties"]["login"]["minimum"],
        1
    );
    assert_eq!(
        schemas["SetRole"]["properties"]["role"]["enum"],
        json!(["tenant_admin", "trader", "viewer"])
    );
    assert!(
        doc.to_string().contains("\"enterprise\""),
        "the tiers are an enum"
    );
    // Every status a route answers is documented, and only those: no 413 without a body, no 401 on a
    // public document, 409 on the writes.
    let ops = &doc["paths"];
    assert!(ops["/api/v1/tenants"]["post"]["responses"]["409"].is_object());
    assert!(ops["/api/v1/tenants"]["post"]["responses"]["413"].is_object());
    assert!(ops["/api/v1/tenants"]["get"]["responses"]["413"].is_null());
    assert!(ops["/api/v1/tenants"]["get"]["responses"]["409"].is_null());
    assert!(ops["/api/openapi.json"]["get"]["responses"]["401"].is_null());
    assert!(ops["/api/v1/auth/login"]["post"]["responses"]["429"].is_object());
    let page = app.call("GET", "/api/docs", None, None).await;
    assert_eq!(page.status, 200);
    assert!(page
        .body
        .as_str()
        .is_some_and(|h| h.contains("/api/openapi.json")));
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_method_a_known_path_does_not_take_is_405_with_allow() {
    let (app, root) = spawn_admin_app(&[]).await;
    // With or without credentials, for any tenant: the path exists, the method does not.
    for (method, path, allow) in [
        ("PATCH", "/api/v1/tenants", "POST, GET"),
        ("DELETE", "/api/v1/tenants/acme/risk", "GET, PUT"),
        ("TRACE", "/api/v1/me", "GET"),
        ("GET", "/api/v1/tenants/acme/models/m/versions", "POST"),
        ("PUT", "/api/openapi.json", "GET"),
    ] {
        for auth in [None, Some(root.as_str())] {
            let r = app.call(method, path, auth, None).await;
            assert_eq!(r.status, 405, "{method} {path}: {:?}", r.body);
            assert_eq!(
                r.headers.get("allow").map(String::as_str),
                Some(allow),
                "{method} {path}"
            );
            assert_eq!(r.body["error"], "method_not_allowed");
        }
    }
    // A path that is not one stays 404.
    let r = app
        .call("GET", "/api/v1/nothing-here", Some(&root), None)
        .await;
    assert_eq!(r.status, 404);
    app.shutdown().await;
}
