//! Tenant leases on a real PostgreSQL, through the application role (row-level security on): one owner at a
//! time, tokens that only grow, expiry by the database's clock, and fencing that orders every tenant write
//! against every takeover.

use std::time::Duration;

use sqlx::PgPool;
use trellis::storage::lease::{fence, FenceError, LeaseStore};
use trellis::storage::postgres::{connect, migrate, tenant_tx};

/// The application role's pool on a fresh, migrated database; `None` outside CI without PostgreSQL.
async fn leases() -> Option<(LeaseStore, PgPool)> {
    let admin = crate::helpers::service_url("TRELLIS_TEST_POSTGRES_URL")?;
    let (_, owner, app) = crate::helpers::new_pg_database(&admin, "lease").await;
    migrate(&owner).await.expect("migrations apply");
    let pool = connect(&app).await.expect("the application role connects");
    Some((LeaseStore::new(pool.clone()), pool))
}

const TTL: Duration = Duration::from_secs(30);

#[actix_rt::test]
async fn a_tenant_has_one_owner_until_its_lease_expires_and_each_takeover_raises_the_token() {
    let Some((store, _)) = leases().await else {
        return;
    };
    let a = store
        .acquire("acme", "node-a", Duration::from_millis(300))
        .await
        .expect("store")
        .expect("a free tenant is taken");
    assert_eq!(a.token, 1);
    assert_eq!(
        store.acquire("acme", "node-b", TTL).await.expect("store"),
        None
    );
    assert!(store
        .renew(&a, Duration::from_millis(300))
        .await
        .expect("store"));

    // Nobody renews: once it expires, another node takes it with the next token, and the old lease can
    // neither be renewed nor released.
    actix_rt::time::sleep(Duration::from_millis(450)).await;
    let b = store
        .acquire("acme", "node-b", TTL)
        .await
        .expect("store")
        .expect("an expired lease is taken");
    assert_eq!(b.token, 2);
    assert!(!store.renew(&a, TTL).await.expect("store"));
    assert!(!store.release(&a).await.expect("store"));

    // A graceful hand-off: released, it is free at once.
    assert!(store.release(&b).await.expect("store"));
    let c = store
        .acquire("acme", "node-c", TTL)
        .await
        .expect("store")
        .expect("a released lease is taken at once");
    assert_eq!(c.token, 3);
    let owners = store.owners().await.expect("store");
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (owners[0].node_id.as_str(), owners[0].token, owners[0].live),
        ("node-c", 3, true)
    );
}

#[actix_rt::test]
async fn nodes_racing_for_a_tenant_give_it_exactly_one_owner() {
    let Some((store, _)) = leases().await else {
        return;
    };
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = store.clone();
        tasks.push(actix_rt::spawn(async move {
            store.acquire("race", &format!("node-{n}"), TTL).await
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if t.await.expect("task").expect("store").is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

#[actix_rt::test]
async fn a_write_with_an_overtaken_token_is_refused_and_a_takeover_waits_for_a_write_in_flight() {
    let Some((store, pool)) = leases().await else {
        return;
    };
    let old = store
        .acquire("acme", "node-a", Duration::from_millis(200))
        .await
        .expect("store")
        .expect("taken");

    // A write of the owner is in flight (its fence holds the lease row) while the lease expires.
    let mut tx = tenant_tx(&pool, "acme").await.expect("tx");
    fence(&mut tx, "acme", old.token)
        .await
        .expect("the owner may write");
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let taking = {
        let store = store.clone();
        actix_rt::spawn(async move { store.acquire("acme", "node-b", TTL).await })
    };
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !taking.is_finished(),
        "the takeover waits for the write in flight"
    );
    tx.commit()
        .await
        .expect("the write in flight lands: it was ordered before the takeover");
    let new = taking
        .await
        .expect("task")
        .expect("store")
        .expect("then the takeover happens");
    assert_eq!(new.token, old.token + 1);

    // After the takeover, the old owner (woken from a pause) is refused; the new one writes.
    let mut tx = tenant_tx(&pool, "acme").await.expect("tx");
    match fence(&mut tx, "acme", old.token).await {
        Err(FenceError::Overtaken { held, current, .. }) => {
            assert_eq!((held, current), (old.token, Some(new.token)))
        }
        other => panic!("the old token must be refused: {other:?}"),
    }
    drop(tx);
    let mut tx = tenant_tx(&pool, "acme").await.expect("tx");
    fence(&mut tx, "acme", new.token)
        .await
        .expect("the new owner writes");
    tx.commit().await.expect("commit");

    // Another tenant's transaction cannot see, so cannot pass, this tenant's lease.
    let mut tx = tenant_tx(&pool, "other").await.expect("tx");
    assert!(matches!(
        fence(&mut tx, "acme", new.token).await,
        Err(FenceError::Overtaken { current: None, .. })
    ));
}
