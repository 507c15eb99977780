//! The supervision layer: policies, panics, intensity, escalation, back-off.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use trellis::metrics::Metrics;
use trellis::runtime::events::{EventKind, EventLog, SupervisionEvent};
use trellis::runtime::supervisor::{
    contain, ChildContext, ChildSpec, ExitNotifier, GetChildren, RestartPolicy, Shutdown,
    Supervisor, SupervisorConfig,
};

/// A child with state worth losing: a counter.
struct Counter {
    count: u64,
    notifier: ExitNotifier,
}

#[derive(Message)]
#[rtype(result = "u64")]
struct Increment;

/// Panics inside contained code (the way strategy code runs).
#[derive(Message)]
#[rtype(result = "()")]
struct PanicContained;

/// Panics right in the handler, outside any containment.
#[derive(Message)]
#[rtype(result = "()")]
struct PanicRaw;

/// Stops normally.
#[derive(Message)]
#[rtype(result = "()")]
struct Finish;

impl Actor for Counter {
    type Context = Context<Self>;
    fn stopped(&mut self, _: &mut Self::Context) {
        self.notifier.mark_stopped();
    }
}

impl Handler<Increment> for Counter {
    type Result = u64;
    fn handle(&mut self, _: Increment, _: &mut Self::Context) -> u64 {
        self.count += 1;
        self.count
    }
}

impl Handler<PanicContained> for Counter {
    type Result = ();
    fn handle(&mut self, _: PanicContained, ctx: &mut Self::Context) {
        if let Err(why) = contain(|| panic!("strategy bug")) {
            self.notifier.fail(why);
            ctx.stop();
        }
    }
}

impl Handler<PanicRaw> for Counter {
    type Result = ();
    fn handle(&mut self, _: PanicRaw, _: &mut Self::Context) {
        panic!("uncontained bug");
    }
}

impl Handler<Finish> for Counter {
    type Result = ();
    fn handle(&mut self, _: Finish, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Shutdown> for Counter {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Where a test finds the current incarnation of a counter.
type Latest = Arc<Mutex<Option<Addr<Counter>>>>;

fn counter(name: &str, policy: RestartPolicy) -> (ChildSpec, Latest) {
    let latest: Latest = Arc::default();
    let slot = latest.clone();
    let spec = ChildSpec::new(name, policy, move |cx: ChildContext| {
        let addr = Counter {
            count: 0,
            notifier: cx.notifier,
        }
        .start();
        *slot.lock().expect("lock") = Some(addr.clone());
        Ok(addr.recipient())
    });
    (spec, latest)
}

fn addr(latest: &Latest) -> Addr<Counter> {
    latest.lock().expect("lock").clone().expect("started")
}

fn config(max_restarts: u32) -> SupervisorConfig {
    SupervisorConfig {
        max_restarts,
        window: Duration::from_secs(60),
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(10),
    }
}

fn log() -> EventLog {
    EventLog::new(100, Arc::new(Metrics::new()))
}

fn count(events: &[SupervisionEvent], kind: EventKind, child: &str) -> usize {
    events
        .iter()
        .filter(|e| e.kind == kind && e.child == child)
        .count()
}

#[actix_rt::test]
async fn a_child_that_panics_is_restarted_with_fresh_state_while_its_siblings_keep_theirs() {
    // Arrange
    let events = log();
    let (a, a_latest) = counter("a", RestartPolicy::Permanent);
    let (b, b_latest) = counter("b", RestartPolicy::Permanent);
    let root = Supervisor::root("root", config(5), events.clone(), vec![a, b]).start();
    actix_rt::task::yield_now().await;
    for _ in 0..3 {
        addr(&a_latest).send(Increment).await.expect("a alive");
    }
    for _ in 0..2 {
        addr(&b_latest).send(Increment).await.expect("b alive");
    }
    let first_a = addr(&a_latest);

    // Act
    first_a.do_send(PanicContained);
    let restarted = events
        .wait_until(Duration::from_secs(5), |e| {
            count(e, EventKind::Restarted, "a") == 1
        })
        .await;

    // Assert
    assert!(
        restarted,
        "a was not restarted: {:?}",
        events.snapshot(None)
    );
    let failure = events
        .snapshot(None)
        .into_iter()
        .find(|e| e.kind == EventKind::Failed && e.child == "a")
        .expect("a failure event");
    assert!(
        failure.reason.contains("strategy bug"),
        "the panic message is kept: {}",
        failure.reason
    );
    assert!(!first_a.connected(), "the old incarnation is gone");
    assert_eq!(
        addr(&a_latest).send(Increment).await.expect("new a"),
        1,
        "fresh state"
    );
    assert_eq!(
        addr(&b_latest).send(Increment).await.expect("b"),
        3,
        "sibling kept its state"
    );
    let children = root.send(GetChildren).await.expect("root alive");
    let a_info = children.iter().find(|c| c.name == "a").expect("a listed");
    assert_eq!(
        (a_info.generation, a_info.restarts, a_info.running),
        (2, 1, true)
    );
}

#[actix_rt::test]
async fn a_panic_that_escapes_a_handler_is_still_a_failure_and_is_restarted() {
    let events = log();
    let (t, latest) = counter("transient", RestartPolicy::Transient);
    let _root = Supervisor::root("root", config(5), events.clone(), vec![t]).start();
    actix_rt::task::yield_now().await;
    addr(&latest).send(Increment).await.expect("alive");

    addr(&latest).do_send(PanicRaw);
    let restarted = events
        .wait_until(Duration::from_secs(5), |e| {
            count(e, EventKind::Restarted, "transient") == 1
        })
        .await;

    assert!(restarted, "{:?}", events.snapshot(None));
    assert_eq!(
        addr(&latest)
            .send(Increment)
            .await
            .expect("new incarnation"),
        1
    );
}

#[actix_rt::test]
async fn a_temporary_child_is_not_restarted_and_a_transient_child_that_stops_normally_is_not_either(
) {
    // Arrange
    let events = log();
    let (temp, temp_latest) = counter("temporary", RestartPolicy::Temporary);
    let (trans, trans_latest) = counter("transient", RestartPolicy::Transient);
    let (perm, perm_latest) = counter("permanent", RestartPolicy::Permanent);
    let root = Supervisor::root("root", config(5), events.clone(), vec![temp, trans, perm]).start();
    actix_rt::task::yield_now().await;

    // Act
    addr(&temp_latest).do_send(PanicContained);
    addr(&trans_latest).do_send(Finish);
    addr(&perm_latest).do_send(Finish);
    let settled = events
        .wait_until(Duration::from_secs(5), |e| {
            count(e, EventKind::Failed, "temporary") == 1
                && count(e, EventKind::Stopped, "transient") == 1
                && count(e, EventKind::Restarted, "permanent") == 1
        })
        .await;
    // Give a wrongly scheduled restart every chance to happen.
    actix_rt::time::sleep(Duration::from_millis(50)).await;

    // Assert
    assert!(settled, "{:?}", events.snapshot(None));
    let snapshot = events.snapshot(None);
    assert_eq!(count(&snapshot, EventKind::Restarted, "temporary"), 0);
    assert_eq!(count(&snapshot, EventKind::Restarted, "transient"), 0);
    let names: Vec<String> = root
        .send(GetChildren)
        .await
        .expect("root")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        names,
        vec!["permanent".to_owned()],
        "ended children are removed"
    );
    assert_eq!(
        addr(&perm_latest).send(Increment).await.expect("restarted"),
        1
    );
}

#[actix_rt::test]
async fn exceeding_the_restart_intensity_escalates_and_the_parent_stops_the_subtree_while_the_root_keeps_running(
) {
    // Arrange: root ─┬─ tenant (supervisor, at most 2 restarts) ─┬─ flaky (panics when asked)
    //                │                                            └─ calm
    //                └─ neighbour
    let events = log();
    let (flaky, flaky_latest) = counter("flaky", RestartPolicy::Permanent);
    let (calm, calm_latest) = counter("calm", RestartPolicy::Permanent);
    let (neighbour, neighbour_latest) = counter("neighbour", RestartPolicy::Permanent);
    let tenant = ChildSpec::supervisor(
        "tenant",
        RestartPolicy::Temporary,
        Some(config(2)),
        vec![flaky, calm],
        None,
    )
    .tenant("acme");
    let root = Supervisor::root("root", config(5), events.clone(), vec![tenant, neighbour]).start();
    actix_rt::task::yield_now().await;
    addr(&neighbour_latest)
        .send(Increment)
        .await
        .expect("neighbour");
    let calm_addr = addr(&calm_latest);

    // Act: three failures, one more than the tenant supervisor allows.
    for round in 1..=3 {
        addr(&flaky_latest).do_send(PanicContained);
        if round < 3 {
            let next = round;
            assert!(
                events
                    .wait_until(Duration::from_secs(5), |e| count(
                        e,
                        EventKind::Restarted,
                        "flaky"
                    ) == next)
                    .await
            );
        }
    }
    let escalated = events
        .wait_until(Duration::from_secs(5), |e| {
            count(e, EventKind::Escalated, "tenant") == 1
                && count(e, EventKind::Failed, "tenant") == 1
        })
        .await;
    actix_rt::time::sleep(Duration::from_millis(50)).await;

    // Assert
    let snapshot = events.snapshot(None);
    assert!(escalated, "{snapshot:?}");
    let report = snapshot
        .iter()
        .find(|e| e.kind == EventKind::Failed && e.child == "tenant")
        .expect("root saw the tenant fail");
    assert!(
        report.reason.contains("restart intensity exceeded"),
        "{}",
        report.reason
    );
    assert_eq!(report.tenant.as_deref(), Some("acme"));
    assert!(!calm_addr.connected(), "the whole subtree was stopped");
    assert_eq!(
        count(&snapshot, EventKind::Restarted, "tenant"),
        0,
        "a temporary tenant is not restarted"
    );
    assert_eq!(
        addr(&neighbour_latest)
            .send(Increment)
            .await
            .expect("neighbour"),
        2,
        "root kept running"
    );
    let names: Vec<String> = root
        .send(GetChildren)
        .await
        .expect("root")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec!["neighbour".to_owned()]);
}

#[actix_rt::test]
async fn the_root_gives_up_on_a_child_that_exceeds_its_intensity_but_keeps_running() {
    let events = log();
    let spec = ChildSpec::new("broken", RestartPolicy::Permanent, |_cx: ChildContext| {
        Err("database unreachable".to_owned())
    });
    let (other, other_latest) = counter("other", RestartPolicy::Permanent);
    let root = Supervisor::root("root", config(3), events.clone(), vec![spec, other]).start();

    let gave_up = events
        .wait_until(Duration::from_secs(5), |e| {
            count(e, EventKind::GaveUp, "broken") == 1
        })
        .await;

    assert!(gave_up, "{:?}", events.snapshot(None));
    let snapshot = events.snapshot(None);
    assert_eq!(
        count(&snapshot, EventKind::Failed, "broken"),
        4,
        "1 start + 3 restarts, all failed"
    );
    assert!(snapshot
        .iter()
        .any(|e| e.reason.contains("database unreachable")));
    assert!(root.connected());
    assert_eq!(addr(&other_latest).send(Increment).await.expect("other"), 1);
}

#[actix_rt::test]
async fn back_off_between_restarts_doubles_up_to_its_cap_in_virtual_time() {
    // Arrange: virtual time, a child that fails as soon as it is started.
    tokio::time::pause();
    let events = log();
    let starts: Arc<Mutex<Vec<tokio::time::Instant>>> = Arc::default();
    let seen = starts.clone();
    let spec = ChildSpec::new(
        "crashy",
        RestartPolicy::Permanent,
        move |_cx: ChildContext| {
            seen.lock().expect("lock").push(tokio::time::Instant::now());
            Err("fails on start".to_owned())
        },
    );
    let cfg = SupervisorConfig {
        max_restarts: 5,
        window: Duration::from_secs(3600),
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(6),
    };

    // Act
    let _root = Supervisor::root("root", cfg, events.clone(), vec![spec]).start();
    let gave_up = events
        .wait_until(Duration::from_secs(600), |e| {
            count(e, EventKind::GaveUp, "crashy") == 1
        })
        .await;

    // Assert: starts at 0, then after 1 s, 2 s, 4 s, 6 s (capped), 6 s.
    assert!(gave_up);
    let starts = starts.lock().expect("lock").clone();
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    let expected: Vec<Duration> = [1, 2, 4, 6, 6]
        .into_iter()
        .map(Duration::from_secs)
        .collect();
    assert_eq!(gaps.len(), expected.len(), "{gaps:?}");
    for (gap, want) in gaps.iter().zip(&expected) {
        assert!(
            *gap >= *want && *gap < *want + Duration::from_millis(50),
            "gap {gap:?}, expected {want:?}"
        );
    }
}

#[actix_rt::test]
async fn a_child_that_ran_for_a_while_comes_back_after_the_base_back_off_every_time() {
    // Arrange: virtual time; each incarnation runs two seconds before failing.
    tokio::time::pause();
    let events = log();
    let starts: Arc<Mutex<Vec<tokio::time::Instant>>> = Arc::default();
    let latest: Latest = Arc::default();
    let (seen, slot) = (starts.clone(), latest.clone());
    let spec = ChildSpec::new(
        "steady",
        RestartPolicy::Permanent,
        move |cx: ChildContext| {
            seen.lock().expect("lock").push(tokio::time::Instant::now());
            let addr = Counter {
                count: 0,
                notifier: cx.notifier,
            }
            .start();
            *slot.lock().expect("lock") = Some(addr.clone());
            Ok(addr.recipient())
        },
    );
    let cfg = SupervisorConfig {
        max_restarts: 10,
        window: Duration::from_secs(3600),
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
    };
    let _root = Supervisor::root("root", cfg, events.clone(), vec![spec]).start();

    // Act
    for round in 1..=3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        addr(&latest).do_send(PanicContained);
        assert!(
            events
                .wait_until(Duration::from_secs(60), |e| count(
                    e,
                    EventKind::Restarted,
                    "steady"
                ) == round)
                .await
        );
    }

    // Assert: down for the base back-off each time, not 1, 2, 4 s.
    let starts = starts.lock().expect("lock").clone();
    for w in starts.windows(2) {
        let down = w[1] - w[0] - Duration::from_secs(2);
        assert!(
            down >= Duration::from_secs(1) && down < Duration::from_millis(1_050),
            "down for {down:?}"
        );
    }
}
