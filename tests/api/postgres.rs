//! PostgreSQL row-level security, connecting as the application role: tenants are isolated by the
//! database itself, and trellis refuses a connection that would bypass that.

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use trellis::storage::postgres::{check_isolation, migrate, IsolationError};

/// (owner URL, application-role URL) of a fresh, migrated database; `None` (with a note) outside CI
/// when PostgreSQL is not there.
async fn fresh_database() -> Option<(String, String)> {
    let admin = crate::helpers::service_url("TRELLIS_TEST_POSTGRES_URL")?;
    let (_, owner, app) = crate::helpers::new_pg_database(&admin, "rls").await;
    migrate(&owner).await.expect("migrations apply");
    Some((owner, app))
}

/// Runs `sql` in a transaction as `tenant` (or with no tenant), returning the first column of every row.
async fn as_tenant(
    pool: &PgPool,
    tenant: Option<&str>,
    sql: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if let Some(t) = tenant {
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(t)
            .execute(&mut *tx)
            .await?;
    }
    let rows: Vec<(String,)> = sqlx::query_as(sql).fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

async fn seed(pool: &PgPool, tenant: &str) {
    let mut tx = pool.begin().await.expect("tx");
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .expect("set");
    sqlx::query("INSERT INTO tenants (id, name, tier, created_ms) VALUES ($1, $1, 'free', 0)")
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .expect("tenant row");
    sqlx::query(
        "INSERT INTO orders (tenant_id, client_order_id, seq, account, symbol, side, kind, volume, status, filled_volume, created_ms, updated_ms) \
         VALUES ($1, $1 || '-1', 1, 1, 'EURUSD', 'buy', 'market', 0.1, 'sent', 0, 0, 0)",
    )
    .bind(tenant)
    .execute(&mut *tx)
    .await
    .expect("order row");
    tx.commit().await.expect("commit");
}

#[actix_rt::test]
async fn as_the_application_role_each_tenant_sees_only_its_own_rows_and_nothing_without_a_tenant() {
    let Some((_, app_url)) = fresh_database().await else {
        return;
    };
    // One connection, so the pooled-connection case is real: tenant A, then B, on the same session.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&app_url)
        .await
        .expect("app role connects");
    seed(&pool, "alpha").await;
    seed(&pool, "beta").await;

    let alpha = as_tenant(&pool, Some("alpha"), "SELECT client_order_id FROM orders")
        .await
        .expect("query");
    let beta = as_tenant(&pool, Some("beta"), "SELECT client_order_id FROM orders")
        .await
        .expect("query");
    let nobody = as_tenant(&pool, None, "SELECT client_order_id FROM orders")
        .await
        .expect("query");
    let tenants_seen_by_beta = as_tenant(&pool, Some("beta"), "SELECT id FROM tenants")
        .await
        .expect("query");

    assert_eq!(alpha, vec!["alpha-1".to_owned()]);
    assert_eq!(
        beta,
        vec!["beta-1".to_owned()],
        "nothing of alpha leaks through the shared connection"
    );
    assert!(nobody.is_empty(), "no tenant set means no rows: {nobody:?}");
    assert_eq!(tenants_seen_by_beta, vec!["beta".to_owned()]);
}

#[actix_rt::test]
async fn an_insert_for_another_tenant_is_refused_by_the_database() {
    let Some((_, app_url)) = fresh_database().await else {
        return;
    };
    let pool = PgPool::connect(&app_url).await.expect("app role connects");
    seed(&pool, "alpha").await;
    seed(&pool, "beta").await;

    let mut tx = pool.begin().await.expect("tx");
    sqlx::query("SELECT set_config('app.tenant_id', 'alpha', true)")
        .execute(&mut *tx)
        .await
        .expect("set");
    let refused = sqlx::query(
        "INSERT INTO orders (tenant_id, client_order_id, seq, account, symbol, side, kind, volume, status, filled_volume, created_ms, updated_ms) \
         VALUES ('beta', 'sneaky-1', 2, 1, 'EURUSD', 'buy', 'market', 0.1, 'sent', 0, 0, 0)",
    )
    .execute(&mut *tx)
    .await;
    drop(tx);
    let hijack = as_tenant(
        &pool,
        Some("alpha"),
        "UPDATE orders SET status = 'filled' WHERE tenant_id = 'beta' RETURNING client_order_id",
    )
    .await
    .expect("update runs");

    let err = refused
        .expect_err("row-level security refuses it")
        .to_string();
    assert!(err.contains("row-level security"), "{err}");
    assert!(
        hijack.is_empty(),
        "another tenant's rows cannot be updated either"
    );
    let beta = as_tenant(&pool, Some("beta"), "SELECT status FROM orders")
        .await
        .expect("query");
    assert_eq!(beta, vec!["sent".to_owned()]);
}

#[actix_rt::test]
async fn trellis_refuses_a_superuser_connection_and_tables_without_forced_row_level_security() {
    let Some((owner_url, app_url)) = fresh_database().await else {
        return;
    };

    let superuser = PgPool::connect(&owner_url).await.expect("owner connects");
    let as_superuser = check_isolation(&superuser).await;
    sqlx::query("ALTER TABLE fills NO FORCE ROW LEVEL SECURITY")
        .execute(&superuser)
        .await
        .expect("alter");
    let app = PgPool::connect(&app_url).await.expect("app role connects");
    let unforced = check_isolation(&app).await;
    let data_dir = tempfile::tempdir().expect("dir");
    let settings = crate::helpers::test_settings(
        &crate::helpers::KeptStore {
            data_dir,
            vars: Vec::new(),
        },
        &[("TRELLIS__STORAGE__POSTGRES_URL", &owner_url)],
    );
    let refused = trellis::startup::Application::build(settings)
        .await
        .err()
        .map(|e| format!("{e:#}"));

    assert!(
        matches!(as_superuser, Err(IsolationError::Superuser(_))),
        "{as_superuser:?}"
    );
    assert!(
        matches!(&unforced, Err(IsolationError::Unprotected(t)) if t == "fills"),
        "{unforced:?}"
    );
    let refused = refused.expect("start-up refused");
    assert!(
        refused.contains("storage.postgres_url") && refused.contains("superuser"),
        "{refused}"
    );
}

#[actix_rt::test]
async fn the_security_tables_are_isolated_too_and_the_audit_log_is_append_only_for_the_application()
{
    let Some((_, app_url)) = fresh_database().await else {
        return;
    };
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&app_url)
        .await
        .expect("app role connects");
    // Through the security store itself (platform scope for its cross-tenant work).
    let store = trellis::storage::security::SecurityStore::open(&app_url)
        .await
        .expect("store opens");
    for (tenant, login) in [("acme", 1), ("globex", 2)] {
        store
            .insert_account(&trellis::storage::security::Mt5AccountRow {
                tenant_id: tenant.into(),
                login,
                server: "Broker".into(),
                password_enc: format!("ciphertext-of-{tenant}"),
                key_version: 1,
                created_ms: 0,
            })
            .await
            .expect("stored");
        store
            .insert_audit(&trellis::storage::security::AuditRow {
                tenant_id: tenant.into(),
                seq: 1,
                at_ms: 0,
                action: "test".into(),
                body: "{}".into(),
                hash: "h".into(),
            })
            .await
            .expect("audited");
    }
    let acme = store.accounts_of("acme").await.expect("rows");
    assert_eq!(
        acme.len(),
        1,
        "the store's tenant-scoped read sees one tenant"
    );

    // Directly as the application role: a tenant sees its own rows, nothing without a scope.
    let sql = "SELECT tenant_id FROM mt5_accounts";
    assert_eq!(
        as_tenant(&pool, Some("acme"), sql).await.expect("query"),
        vec!["acme"]
    );
    assert!(as_tenant(&pool, None, sql).await.expect("query").is_empty());
    let audit = "SELECT tenant_id FROM audit_log";
    assert_eq!(
        as_tenant(&pool, Some("globex"), audit)
            .await
            .expect("query"),
        vec!["globex"]
    );

    // acme cannot write globex's rows.
    let mut tx = pool.begin().await.expect("tx");
    sqlx::query("SELECT set_config('app.tenant_id', 'acme', true)")
        .execute(&mut *tx)
        .await
        .expect("set");
    let refused = sqlx::query(
        "INSERT INTO mt5_accounts (tenant_id, login, server, password_enc, key_version, created_ms) \
         VALUES ('globex', 9, 'B', 'x', 1, 0)",
    )
    .execute(&mut *tx)
    .await;
    assert!(refused.is_err(), "insert for another tenant refused");
    drop(tx);

    // The audit log cannot be rewritten or deleted by the application role, even for its own tenant.
    for sql in [
        "UPDATE audit_log SET body = '{\"forged\":1}' WHERE tenant_id = 'acme'",
        "DELETE FROM audit_log WHERE tenant_id = 'acme'",
    ] {
        let mut tx = pool.begin().await.expect("tx");
        sqlx::query("SELECT set_config('app.tenant_id', 'acme', true)")
            .execute(&mut *tx)
            .await
            .expect("set");
        let err = sqlx::query(sql).execute(&mut *tx).await.expect_err(sql);
        assert!(
            err.to_string().contains("permission denied"),
            "{sql}: {err}"
        );
    }
    store.close().await;
    pool.close().await;
}
