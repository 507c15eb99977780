//! Authentication and the security service through the real HTTP API: tokens and their negatives, refresh
//! rotation and reuse, API keys, encrypted MT5 credentials and key rotation, the audit chain, login limits.

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::{
    create_key, create_tenant, create_user, spawn_admin_app, spawn_app_on, JWT_SECRET, ROOT_EMAIL,
    ROOT_PASSWORD,
};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Claims like trellis's own, for `sub`/`tid`/`sid` of a real session, with `edit` applied.
fn claims(base: &Value, edit: impl FnOnce(&mut Value)) -> Value {
    let mut c = json!({
        "iss": "trellis", "aud": "trellis-api",
        "sub": base["sub"], "tid": base["tid"], "role": base["role"], "sid": base["sid"],
        "jti": "forged-jti", "iat": now(), "nbf": now(), "exp": now() + 600,
    });
    edit(&mut c);
    c
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, secret: &[u8]) -> String {
    let header = Header {
        kid: kid.map(str::to_owned),
        ..Header::new(alg)
    };
    encode(&header, claims, &EncodingKey::from_secret(secret)).expect("sign")
}

fn payload_of(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json")
}

#[actix_rt::test]
async fn forged_expired_and_revoked_access_tokens_are_refused() {
    // Arrange: a trader of acme with a real session, whose claims the forgeries copy.
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "acme", "enterprise").await;
    let (_, token) = create_user(&app, &root, "acme", "t@acme.test", "trader").await;
    let real = payload_of(&token);
    let me = "/api/v1/me";
    assert_eq!(app.call("GET", me, Some(&token), None).await.status, 200);
    // A token trellis would sign itself passes: the forgery harness is right.
    let good = sign(
        Algorithm::HS256,
        Some("k1"),
        &claims(&real, |_| {}),
        JWT_SECRET,
    );
    assert_eq!(app.call("GET", me, Some(&good), None).await.status, 200);

    let unsigned = {
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT", "kid": "k1"})),
            b64(&claims(&real, |_| {}))
        )
    };
    let tampered = {
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut forged = payload_of(&token);
        forged["role"] = json!("tenant_admin");
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
        parts.join(".")
    };
    let cases: Vec<(&str, String)> = vec![
        ("alg none", unsigned),
        (
            "wrong algorithm",
            sign(
                Algorithm::HS384,
                Some("k1"),
                &claims(&real, |_| {}),
                JWT_SECRET,
            ),
        ),
        (
            "wrong audience",
            sign(
                Algorithm::HS256,
                Some("k1"),
                &claims(&real, |c| c["aud"] = json!("other")),
                JWT_SECRET,
            ),
        ),
        (
            "wrong issuer",
            sign(
                Algorithm::HS256,
                Some("k1"),
                &claims(&real, |c| c["iss"] = json!("evil")),
                JWT_SECRET,
            ),
        ),
        (
            "expired",
            sign(
                Algorithm::HS256,
                Some("k1"),
                &claims(&real, |c| {
                    c["exp"] = json!(now() - 120);
                    c["iat"] = json!(now() - 800)
                }),
                JWT_SECRET,
            ),
        ),
        (
            "not yet valid",
            sign(
                Algorithm::HS256,
                Some("k1"),
                &claims(&real, |c| c["nbf"] = json!(now() + 300)),
                JWT_SECRET,
            ),
        ),
        (
            "unknown kid",
            sign(
                Algorithm::HS256,
                Some("k9"),
                &claims(&real, |_| {}),
                JWT_SECRET,
            ),
        ),
        (
            "no kid",
            sign(Algorithm::HS256, None, &claims(&real, |_| {}), JWT_SECRET),
        ),
        (
            "wrong secret",
            sign(
                Algorithm::HS256,
                Some("k1"),
                &claims(&real, |_| {}),
                b"another-secret-another-secret-32",
            ),
        ),
        ("tampered payload", tampered),
        ("garbage", "not.a.token".into()),
    ];
    for (what, forged) in &cases {
        let r = app.call("GET", me, Some(forged), None).await;
        assert_eq!(r.status, 401, "{what}: {:?}", r.body);
        assert_eq!(r.body["error"], "unauthorized", "{what}");
        assert_eq!(
            r.headers.get("www-authenticate").map(String::as_str),
            Some("Bearer")
        );
    }
    let expired = app.call("GET", me, Some(&cases[4].1), None).await;
    assert!(expired.body["message"]
        .as_str()
        .is_some_and(|m| m.contains("expired")));

    // Act: log out; the token of the ended session — and a well-signed one of it — are refused.
    app.expect(200, "POST", "/api/v1/auth/logout", Some(&token), None)
        .await;
    let r = app.call("GET", me, Some(&token), None).await;
    assert_eq!(r.status, 401);
    assert!(r.body["message"]
        .as_str()
        .is_some_and(|m| m.contains("revoked")));
    assert_eq!(
        app.call("GET", me, Some(&good), None).await.status,
        401,
        "same session"
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_refresh_token_rotates_once_and_its_reuse_revokes_the_whole_session() {
    let (app, root) = spawn_admin_app(&[("TRELLIS__SECURITY__REFRESH_GRACE_MS", "1000")]).await;
    create_tenant(&app, &root, "acme", "basic").await;
    create_user(&app, &root, "acme", "t@acme.test", "trader").await;
    let (access1, refresh1) = app.login("t@acme.test", "a-password-of-twelve+").await;

    // Rotation: a new pair, the OAuth shape, and the old refresh token is spent.
    let pair2 = app
        .expect(
            200,
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(&json!({"refresh_token": refresh1})),
        )
        .await;
    assert_eq!(pair2["token_type"], "Bearer");
    assert_eq!(pair2["expires_in"], 600);
    let refresh2 = pair2["refresh_token"].as_str().expect("refresh").to_owned();
    let access2 = pair2["access_token"].as_str().expect("access").to_owned();
    assert_ne!(refresh2, refresh1);
    assert_eq!(
        payload_of(&access2)["sid"],
        payload_of(&access1)["sid"],
        "same session"
    );
    // Within the grace window a repeat (a client that lost the answer) is refused but revokes nothing.
    let repeat = app
        .call(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(&json!({"refresh_token": refresh1})),
        )
        .await;
    assert_eq!(repeat.status, 401);
    assert_eq!(
        app.call("GET", "/api/v1/me", Some(&access2), None)
            .await
            .status,
        200
    );

    // Act: after the grace window the spent token comes back (stolen): the family is revoked.
    actix_rt::time::sleep(Duration::from_millis(1200)).await;
    let reuse = app
        .call(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(&json!({"refresh_token": refresh1})),
        )
        .await;

    // Assert
    assert_eq!(reuse.status, 401);
    assert!(reuse.body["message"]
        .as_str()
        .is_some_and(|m| m.contains("reused")));
    let r = app
        .call(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(&json!({"refresh_token": refresh2})),
        )
        .await;
    assert_eq!(r.status, 401, "the newest token of the family is dead too");
    assert_eq!(
        app.call("GET", "/api/v1/me", Some(&access2), None)
            .await
            .status,
        401
    );
    assert_eq!(
        app.call("GET", "/api/v1/me", Some(&access1), None)
            .await
            .status,
        401
    );
    // Unknown tokens are just invalid.
    let r = app
        .call(
            "POST",
            "/api/v1/auth/refresh",
            None,
            Some(&json!({"refresh_token": "nope"})),
        )
        .await;
    assert_eq!(r.status, 401);
    let log = app
        .expect(
            200,
            "GET",
            "/api/v1/audit?tenant=acme&action=refresh.reuse",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(log["entries"].as_array().map(Vec::len), Some(1), "{log}");
    let dump = log.to_string();
    assert!(
        !dump.contains(&refresh1) && !dump.contains(&refresh2),
        "no token in the audit log"
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn api_keys_are_refused_when_wrong_revoked_expired_out_of_scope_or_rolled_past_their_overlap()
{
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "acme", "enterprise").await;
    let orders = "/api/v1/tenants/acme/orders";
    let (read_id, read) = create_key(&app, &root, "acme", &["read"]).await;
    assert_eq!(app.call("GET", orders, Some(&read), None).await.status, 200);
    // Listing never shows a secret.
    let list = app
        .expect(
            200,
            "GET",
            "/api/v1/tenants/acme/api-keys",
            Some(&root),
            None,
        )
        .await;
    assert!(!list.to_string().contains(&read[13..]), "{list}");
    assert!(list["keys"][0].get("digest").is_none());

    // Wrong secret for a real id.
    let wrong = format!("{}{}", &read[..13], "A".repeat(read.len() - 13));
    assert_eq!(
        app.call("GET", orders, Some(&wrong), None).await.status,
        401
    );
    // Wrong scope: a read key cannot trade, a market:write key cannot read.
    let kill = "/api/v1/tenants/acme/kill-switch";
    let r = app
        .call("PUT", kill, Some(&read), Some(&json!({"on": true})))
        .await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    let (_, bridge) = create_key(&app, &root, "acme", &["market:write"]).await;
    let page = app
        .expect(
            200,
            "GET",
            "/api/v1/tenants/acme/api-keys?limit=1",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(page["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["total"], 2);
    let bad = app
        .call(
            "GET",
            "/api/v1/tenants/acme/api-keys?limit=lots",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        app.call("GET", orders, Some(&bridge), None).await.status,
        403
    );
    // Expired.
    let body = app
        .expect(
            201,
            "POST",
            "/api/v1/tenants/acme/api-keys",
            Some(&root),
            Some(&json!({"name": "short", "scopes": ["read"], "expires_in_secs": 1})),
        )
        .await;
    let short = body["secret"].as_str().expect("secret").to_owned();
    assert_eq!(
        app.call("GET", orders, Some(&short), None).await.status,
        200
    );

    // Rolled with a 2 s overlap: both work during it, only the new one after.
    let rolled = app
        .expect(
            201,
            "POST",
            &format!("/api/v1/tenants/acme/api-keys/{read_id}/roll"),
            Some(&root),
            Some(&json!({"overlap_secs": 2})),
        )
        .await;
    let successor = rolled["secret"].as_str().expect("secret").to_owned();
    assert_eq!(rolled["previous"]["rolled_to"], rolled["key"]["id"]);
    assert_eq!(
        app.call("GET", orders, Some(&read), None).await.status,
        200,
        "old key in its overlap"
    );
    assert_eq!(
        app.call("GET", orders, Some(&successor), None).await.status,
        200
    );
    let again = app
        .call(
            "POST",
            &format!("/api/v1/tenants/acme/api-keys/{read_id}/roll"),
            Some(&root),
            None,
        )
        .await;
    assert_eq!(again.status, 409, "at most two keys while rolling");
    actix_rt::time::sleep(Duration::from_millis(2300)).await;
    let r = app.call("GET", orders, Some(&read), None).await;
    assert_eq!(r.status, 401, "old key after its overlap");
    assert!(r.body["message"]
        .as_str()
        .is_some_and(|m| m.contains("expired")));
    assert_eq!(
        app.call("GET", orders, Some(&successor), None).await.status,
        200
    );
    assert_eq!(
        app.call("GET", orders, Some(&short), None).await.status,
        401,
        "expired key"
    );

    // Revoked.
    let successor_id = rolled["key"]["id"].as_str().expect("id");
    app.expect(
        200,
        "DELETE",
        &format!("/api/v1/tenants/acme/api-keys/{successor_id}"),
        Some(&root),
        None,
    )
    .await;
    let r = app.call("GET", orders, Some(&successor), None).await;
    assert_eq!(r.status, 401);
    assert!(r.body["message"]
        .as_str()
        .is_some_and(|m| m.contains("revoked")));

    // Every change is audited, never with a secret.
    let log = app
        .expect(200, "GET", "/api/v1/audit?tenant=acme", Some(&root), None)
        .await;
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in ["api_key.created", "api_key.rolled", "api_key.revoked"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    assert!(!log.to_string().contains(&successor[13..]));
    app.shutdown().await;
}

#[actix_rt::test]
async fn mt5_passwords_are_stored_encrypted_bound_to_their_row_and_survive_key_rotation() {
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "acme", "enterprise").await;
    create_tenant(&app, &root, "globex", "enterprise").await;
    for (tenant, login, pw) in [
        ("acme", 5001, "acme-pw-1"),
        ("acme", 5002, "acme-pw-2"),
        ("globex", 7001, "globex-pw"),
    ] {
        let body = app
            .expect(
                201,
                "POST",
                &format!("/api/v1/tenants/{tenant}/mt5-accounts"),
                Some(&root),
                Some(&json!({"login": login, "server": "Broker-Live", "password": pw})),
            )
            .await;
        assert!(
            !body.to_string().contains(pw),
            "the password is never returned"
        );
    }
    let list = app
        .expect(
            200,
            "GET",
            "/api/v1/tenants/acme/mt5-accounts",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(list["accounts"].as_array().map(Vec::len), Some(2));
    assert!(!list.to_string().contains("acme-pw"));

    // Round trip, and the stored bytes are not the password.
    let store = &app.security.store;
    let rows = store.accounts_of("acme").await.expect("rows");
    assert!(!rows[0].password_enc.contains("acme-pw"));
    let plain = app.security.decrypt_password(&rows[0]).expect("decrypts");
    assert_eq!(&plain[..], b"acme-pw-1");

    // A ciphertext moved to another row, or another tenant, does not decrypt.
    let mut moved = rows[0].clone();
    moved.login = 5002;
    assert!(app.security.decrypt_password(&moved).is_err(), "other row");
    moved.login = 5001;
    moved.tenant_id = "globex".into();
    assert!(
        app.security.decrypt_password(&moved).is_err(),
        "other tenant"
    );

    // Rotation: stop, `trellis keys rotate`, start again.
    let kept = app.shutdown_keeping_data().await;
    let settings = crate::helpers::test_settings(&kept, &[]);
    let report = trellis::security::service::rotate_data_keys(&settings)
        .await
        .expect("rotates");
    assert_eq!(
        (
            report.new_version,
            report.reencrypted,
            report.already_current
        ),
        (2, 3, 0)
    );
    let secrets = crate::helpers::jwt_secrets_var();
    let app = spawn_app_on(kept, &[("TRELLIS__SECURITY__JWT_SECRETS", &secrets)]).await;
    let after = app.security.store.all_accounts().await.expect("rows");
    assert!(after.iter().all(|r| r.key_version == 2), "{after:?}");
    let mut seen: Vec<(String, Vec<u8>)> = after
        .iter()
        .map(|r| {
            (
                r.tenant_id.clone(),
                app.security.decrypt_password(r).expect("decrypts").to_vec(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("acme".into(), b"acme-pw-1".to_vec()),
            ("acme".into(), b"acme-pw-2".to_vec()),
            ("globex".into(), b"globex-pw".to_vec()),
        ]
    );
    // The old key still decrypts what it wrote (until retired): the pre-rotation ciphertext still opens.
    assert_eq!(
        &app.security
            .decrypt_password(&rows[0])
            .expect("old version")[..],
        b"acme-pw-1"
    );
    // The rotation is in the platform's audit chain.
    let (root, _) = app.login(ROOT_EMAIL, ROOT_PASSWORD).await;
    let log = app
        .expect(
            200,
            "GET",
            "/api/v1/audit?action=data_key.rotated",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(log["entries"].as_array().map(Vec::len), Some(1));
    app.shutdown().await;
}

#[actix_rt::test]
async fn tampering_with_an_audit_row_is_detected_and_the_entry_named() {
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "acme", "enterprise").await;
    let (_, admin) = create_user(&app, &root, "acme", "a@acme.test", "tenant_admin").await;
    app.expect(
        200,
        "PUT",
        "/api/v1/tenants/acme/kill-switch",
        Some(&admin),
        Some(&json!({"on": true, "reason": "drill"})),
    )
    .await;
    app.expect(
        200,
        "PUT",
        "/api/v1/tenants/acme/kill-switch",
        Some(&admin),
        Some(&json!({"on": false, "reason": "drill over"})),
    )
    .await;
    let check = app
        .expect(200, "GET", "/api/v1/audit/verify", Some(&admin), None)
        .await;
    assert_eq!(check["intact"], true, "{check}");
    let entries = check["entries"].as_u64().expect("count");
    assert!(
        entries >= 4,
        "user created, login, kill switch on and off: {check}"
    );
    let log = app
        .expect(
            200,
            "GET",
            "/api/v1/audit?action=kill_switch.on",
            Some(&admin),
            None,
        )
        .await;
    let seq = log["entries"][0]["seq"].as_i64().expect("seq");

    // Act: someone with database access rewrites history (the reason of the kill switch).
    let sql = "UPDATE audit_log SET body = replace(body, 'drill', 'routine') WHERE tenant_id = 'acme' AND seq = $1";
    let owner = app
        .store_vars
        .iter()
        .find(|(k, _)| k == "TRELLIS__STORAGE__POSTGRES_MIGRATE_URL")
        .map(|(_, v)| v.clone());
    let changed = match owner {
        Some(url) => {
            let db = sqlx::PgPool::connect(&url).await.expect("db");
            let done = sqlx::query(sql)
                .bind(seq)
                .execute(&db)
                .await
                .expect("update");
            db.close().await;
            done.rows_affected()
        }
        None => {
            let url = format!(
                "sqlite://{}",
                app.data_dir.path().join("security.db").display()
            );
            let db = sqlx::SqlitePool::connect(&url).await.expect("db");
            let done = sqlx::query(sql)
                .bind(seq)
                .execute(&db)
                .await
                .expect("update");
            db.close().await;
            done.rows_affected()
        }
    };
    assert_eq!(changed, 1);

    // Assert
    let check = app
        .expect(200, "GET", "/api/v1/audit/verify", Some(&admin), None)
        .await;
    assert_eq!(check["intact"], false);
    assert_eq!(check["first_broken"]["seq"], seq, "{check}");
    // Another tenant's chain is untouched and unreachable for this admin.
    let platform = app
        .expect(200, "GET", "/api/v1/audit/verify", Some(&root), None)
        .await;
    assert_eq!(platform["intact"], true);
    assert_eq!(
        app.call(
            "GET",
            "/api/v1/audit/verify?tenant=platform",
            Some(&admin),
            None
        )
        .await
        .status,
        404
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn logins_are_limited_per_account_and_wrong_passwords_lock_the_account_for_a_while() {
    let (app, root) = spawn_admin_app(&[
        ("TRELLIS__SECURITY__LOGIN_PER_ACCOUNT_PER_MIN", "4"),
        ("TRELLIS__SECURITY__LOCKOUT_AFTER_FAILURES", "2"),
    ])
    .await;
    create_tenant(&app, &root, "acme", "free").await;
    create_user(&app, &root, "acme", "v@acme.test", "viewer").await;
    let attempt = |pw: &'static str| {
        let app = &app;
        async move {
            app.call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(&json!({"email": "v@acme.test", "password": pw})),
            )
            .await
        }
    };
    // Unknown user and wrong password look the same.
    let unknown = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(&json!({"email": "nobody@acme.test", "password": "whatever-at-all"})),
        )
        .await;
    let wrong = attempt("wrong-password-1").await;
    assert_eq!((unknown.status, wrong.status), (401, 401));
    assert_eq!(unknown.body["message"], wrong.body["message"]);
    // The second failure locks the account for a second: even the right password waits.
    assert_eq!(attempt("wrong-password-2").await.status, 401);
    let locked = attempt("a-password-of-twelve+").await;
    assert_eq!(locked.status, 429, "{:?}", locked.body);
    assert!(locked.headers.contains_key("retry-after"));
    // Past the per-account budget (4 a minute, one used by create_user's sign-in), 429 as well.
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    let r = attempt("a-password-of-twelve+").await;
    assert_eq!(r.status, 429, "{:?}", r.body);
    let failed = app
        .expect(
            200,
            "GET",
            "/api/v1/audit?tenant=acme&action=login.failed",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(failed["entries"].as_array().map(Vec::len), Some(2));
    assert!(
        !failed.to_string().contains("wrong-password"),
        "no password in the audit log"
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn changing_a_role_or_disabling_a_user_ends_their_sessions() {
    let (app, root) = spawn_admin_app(&[]).await;
    create_tenant(&app, &root, "acme", "enterprise").await;
    let (_, admin) = create_user(&app, &root, "acme", "a@acme.test", "tenant_admin").await;
    let (trader_id, trader) = create_user(&app, &root, "acme", "t@acme.test", "trader").await;
    let kill = "/api/v1/tenants/acme/kill-switch";
    app.expect(200, "PUT", kill, Some(&trader), Some(&json!({"on": false})))
        .await;

    app.expect(
        200,
        "PUT",
        &format!("/api/v1/tenants/acme/users/{trader_id}/role"),
        Some(&admin),
        Some(&json!({"role": "viewer"})),
    )
    .await;

    assert_eq!(
        app.call("GET", "/api/v1/me", Some(&trader), None)
            .await
            .status,
        401
    );
    let (as_viewer, _) = app.login("t@acme.test", "a-password-of-twelve+").await;
    let me = app
        .expect(200, "GET", "/api/v1/me", Some(&as_viewer), None)
        .await;
    assert_eq!(me["role"], "viewer");
    assert_eq!(
        app.call("PUT", kill, Some(&as_viewer), Some(&json!({"on": false})))
            .await
            .status,
        403
    );
    // No tenant admin can mint a platform administrator.
    let r = app
        .call(
            "PUT",
            &format!("/api/v1/tenants/acme/users/{trader_id}/role"),
            Some(&admin),
            Some(&json!({"role": "platform_admin"})),
        )
        .await;
    assert_eq!(r.status, 400);
    app.expect(
        200,
        "POST",
        &format!("/api/v1/tenants/acme/users/{trader_id}/disable"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(
        app.call("GET", "/api/v1/me", Some(&as_viewer), None)
            .await
            .status,
        401
    );
    let r = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(&json!({"email": "t@acme.test", "password": "a-password-of-twelve+"})),
        )
        .await;
    assert_eq!(r.status, 401, "a disabled user cannot sign in");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_revocation_or_suspension_made_on_one_node_is_enforced_by_another_sharing_the_store() {
    // Two nodes share a store only on PostgreSQL (the embedded store is one process's file).
    if !crate::helpers::real_profile() {
        eprintln!("skipped: needs the real profile (scripts/test.sh runs it)");
        return;
    }
    let b64 = |fill: u8| base64::engine::general_purpose::STANDARD.encode([fill; 32]);
    let (pepper, audit, data) = (b64(1), b64(2), format!("1:{}", b64(3)));
    let shared: Vec<(&str, &str)> = vec![
        ("TRELLIS__SECURITY__API_KEY_PEPPER", &pepper),
        ("TRELLIS__SECURITY__AUDIT_KEY", &audit),
        ("TRELLIS__SECURITY__DATA_KEYS", &data),
        ("TRELLIS__SECURITY__CACHE_REFRESH_MS", "200"),
    ];
    let (a, root) = spawn_admin_app(&shared).await;
    create_tenant(&a, &root, "acme", "enterprise").await;
    create_user(&a, &root, "acme", "v@acme.test", "viewer").await;
    let (_, key) = create_key(&a, &root, "acme", &["read"]).await;
    let secrets = crate::helpers::jwt_secrets_var();
    let mut on_b = shared.clone();
    on_b.push(("TRELLIS__SECURITY__JWT_SECRETS", &secrets));
    let b = spawn_app_on(
        crate::helpers::KeptStore {
            data_dir: tempfile::tempdir().expect("dir"),
            vars: a.store_vars.clone(),
        },
        &on_b,
    )
    .await;
    let (token, _) = a.login("v@acme.test", "a-password-of-twelve+").await;
    assert_eq!(
        b.call("GET", "/api/v1/me", Some(&token), None).await.status,
        200
    );
    assert_eq!(
        b.call("GET", "/api/v1/tenants/acme/orders", Some(&key), None)
            .await
            .status,
        200
    );

    // Act: log out and suspend on node A.
    a.expect(200, "POST", "/api/v1/auth/logout", Some(&token), None)
        .await;
    a.expect(
        200,
        "POST",
        "/api/v1/tenants/acme/suspend",
        Some(&root),
        None,
    )
    .await;

    // Assert: node B refuses both within its refresh interval (polled for up to ~10 s: under the real-profile
    // suite's load a refresh round can wait behind other tests' work).
    let mut statuses = (0, 0);
    for _ in 0..200 {
        statuses = (
            b.call("GET", "/api/v1/me", Some(&token), None).await.status,
            b.call("GET", "/api/v1/tenants/acme/orders", Some(&key), None)
                .await
                .status,
        );
        if statuses == (401, 403) {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(statuses, (401, 403));
    b.shutdown().await;
    a.shutdown().await;
}
