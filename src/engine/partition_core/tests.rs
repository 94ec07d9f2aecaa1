//! Unit tests of the partition core's policies, with plain messages and a
//! fake view of the actors: no runtime, no storage, no clock.

use std::collections::HashMap;

use super::*;

/// `In` is an input (re-delivered after a crash), `Ask` a request (not).
#[derive(Debug, Clone, PartialEq, Eq)]
enum M {
    In(u32),
    Ask(u32),
}

impl Routable for M {
    type Replay = u32;
    fn replay(&self) -> Option<u32> {
        match self {
            M::In(n) => Some(*n),
            M::Ask(_) => None,
        }
    }
    fn redeliver(n: u32) -> Self {
        M::In(n)
    }
}

#[derive(Default)]
struct Fake {
    handled: HashMap<String, u64>,
    idle: Vec<(String, u64)>,
    finished: Vec<String>,
}

impl Fake {
    /// The actor of `id` handled `n` messages in all and went idle.
    fn idle(&mut self, id: &str, n: u64) {
        self.handled.insert(id.to_string(), n);
        self.idle.push((id.to_string(), n));
    }
}

impl ActorProgress for Fake {
    fn handled(&self, id: &str) -> u64 {
        self.handled.get(id).copied().unwrap_or(0)
    }
    fn take_idle(&mut self) -> Vec<(String, u64)> {
        std::mem::take(&mut self.idle)
    }
    fn take_finished(&mut self) -> Vec<String> {
        std::mem::take(&mut self.finished)
    }
}

type Core = PartitionCore<M, &'static str, u32>;

fn core(resident_cap: usize) -> Core {
    core_caps(resident_cap, 1_000)
}

fn core_caps(resident_cap: usize, in_progress_cap: usize) -> Core {
    PartitionCore::new(CoreConfig {
        resident_cap,
        in_progress_cap,
        state_cache_max: 16,
        passivate_idle_ms: 100,
        restart_budget: 2,
        unstartable_max: 8,
        retention: RetentionConfig {
            after_ms: Some(1_000),
            sweep_every_ms: 500,
            batch_max: 2,
            scan_max: 10,
        },
    })
}

/// A readable form of the pending actions.
fn drain(c: &mut Core) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(a) = c.poll() {
        out.push(match a {
            Action::Spawn { id, init, deliver } => format!(
                "spawn {id} {} {deliver:?}",
                match init {
                    Init::State(s) => format!("state={s}"),
                    Init::Load => "load".into(),
                }
            ),
            Action::Deliver { id, msg } => format!("deliver {id} {msg:?}"),
            Action::Stop { id } => format!("stop {id}"),
            Action::Crashed { id, restarts, .. } => format!("crashed {id} {restarts}"),
            Action::Park {
                id, unstartable, ..
            } => format!("park {id} unstartable={unstartable}"),
            Action::Refuse { id, msg, .. } => format!("refuse {id} {msg:?}"),
            Action::Drop(m) => format!("drop {m:?}"),
            Action::Send(r) => format!("send {:?} resend={}", r.tasks, r.resend),
        });
    }
    out
}

#[test]
fn a_new_id_gets_an_actor_with_its_message_and_later_ones_are_delivered() {
    let mut c = core(4);
    let mut f = Fake::default();
    c.route("a".into(), M::In(1), 0, &mut f);
    // Routed while the actor starts: waits for the start to be confirmed.
    c.route("a".into(), M::In(2), 0, &mut f);
    assert_eq!(drain(&mut c), ["spawn a load [In(1)]"]);
    c.spawned("a");
    assert_eq!(drain(&mut c), ["deliver a In(2)"]);
    c.route("a".into(), M::Ask(3), 0, &mut f);
    assert_eq!(drain(&mut c), ["deliver a Ask(3)"]);
    assert_eq!(c.resident(), 1);
}

#[test]
fn a_full_partition_passivates_the_least_recent_idle_actor_for_a_new_id() {
    let mut c = core(1);
    let mut f = Fake::default();
    c.route("a".into(), M::In(1), 0, &mut f);
    c.spawned("a");
    f.idle("a", 1);
    c.route("b".into(), M::In(2), 10, &mut f);
    assert_eq!(
        drain(&mut c),
        ["spawn a load [In(1)]", "stop a"],
        "b waits for a's slot; a is stopped before its grace is over"
    );
    c.stopped("a", Some(Box::new("state-a")));
    assert_eq!(drain(&mut c), ["spawn b load [In(2)]"]);
    c.spawned("b");
    f.idle("b", 1);
    // a comes back from the cache once b's slot frees up.
    c.route("a".into(), M::In(3), 20, &mut f);
    c.stopped("b", None);
    assert_eq!(drain(&mut c), ["stop b", "spawn a state=state-a [In(3)]"]);
}

#[test]
fn an_idle_actor_is_passivated_only_after_its_grace() {
    let mut c = core(4);
    let mut f = Fake::default();
    c.route("a".into(), M::In(1), 0, &mut f);
    c.spawned("a");
    drain(&mut c);
    f.idle("a", 1);
    c.tick(50, &mut f);
    assert!(drain(&mut c).is_empty(), "listed idle at 50, grace 100");
    c.tick(149, &mut f);
    assert!(drain(&mut c).is_empty());
    c.tick(150, &mut f);
    assert_eq!(drain(&mut c), ["stop a"]);
    // Messages routed while it stops wait for its successor.
    c.route("a".into(), M::In(2), 151, &mut f);
    assert!(drain(&mut c).is_empty());
    c.stopped("a", Some(Box::new("s")));
    assert_eq!(drain(&mut c), ["spawn a state=s [In(2)]"]);
}

#[test]
fn an_actor_busy_again_since_it_went_idle_is_not_passivated() {
    let mut c = core(4);
    let mut f = Fake::default();
    c.route("a".into(), M::In(1), 0, &mut f);
    c.spawned("a");
    f.idle("a", 1);
    c.tick(0, &mut f);
    c.route("a".into(), M::In(2), 10, &mut f);
    drain(&mut c);
    // Handled the second input but has not reported idle yet.
    f.handled.insert("a".into(), 2);
    c.tick(500, &mut f);
    assert!(
        drain(&mut c).is_empty(),
        "handled one more since it was listed"
    );
}

#[test]
fn a_crash_restarts_from_storage_with_the_inputs_not_yet_handled() {
    let mut c = core(4);
    let mut f = Fake::default();
    c.route("a".into(), M::In(1), 0, &mut f);
    c.spawned("a");
    c.route("a".into(), M::Ask(2), 0, &mut f);
    c.route("a".into(), M::In(3), 0, &mut f);
    c.route("a".into(), M::In(4), 0, &mut f);
    drain(&mut c);
    // It handled In(1) and crashed on Ask(2): Ask(2) is not re-delivered
    // (its dropped reply port answers), In(3) and In(4) are.
    c.crashed("a", "boom".into(), 1);
    assert_eq!(
        drain(&mut c),
        ["crashed a 1", "spawn a load [In(3), In(4)]"]
    );
    assert_eq!(c.resident(), 1);
}

#[test]
fn a_planted_forgetful_restart_loses_the_unhandled_inputs() {
    let mut c = core(4);
    c.plant(Some(CorePlant::ForgetUnhandledOnCrash));
    let mut f = Fake::default();
    c.route("a".into(), M::In(1), 0, &mut f);
    c.spawned("a");
    drain(&mut c);
    c.crashed("a", "boom".into(), 0);
    assert_eq!(drain(&mut c), ["crashed a 1", "spawn a load []"]);
}

#[test]
fn past_the_restart_budget_the_workflow_is_parked_and_its_messages_dropped() {
    let mut c = core(4);
    let mut f = Fake::default();
    c.route("a".into(), M::In(1), 0, &mut f);
    c.spawned("a");
    drain(&mut c);
    for n in 1..=2 {
        c.crashed("a", "poison".into(), 0);
        assert_eq!(drain(&mut c)[0], format!("crashed a {n}"));
        c.spawned("a");
    }
    c.route("a".into(), M::Ask(9), 0, &mut f);
    drain(&mut c);
    c.crashed("a", "poison".into(), 0);
    assert_eq!(drain(&mut c), ["crashed a 3", "park a unstartable=false"]);
    assert_eq!(c.resident(), 0);
    c.parked("a", Parked::Written);
    assert_eq!(drain(&mut c), ["drop []"]);
    // A poison input parked it, but its actor can start: served as usual.
    c.route("a".into(), M::Ask(10), 0, &mut f);
    assert_eq!(drain(&mut c), ["spawn a load [Ask(10)]"]);
}

#[test]
fn an_actor_that_cannot_start_is_retried_then_remembered_and_refused() {
    let mut c = core(4);
    let mut f = Fake::default();
    c.route("a".into(), M::In(1), 0, &mut f);
    drain(&mut c);
    c.spawn_failed("a", "load panicked".into(), vec![M::In(1)]);
    assert_eq!(drain(&mut c), ["crashed a 1", "spawn a load [In(1)]"]);
    c.route("a".into(), M::Ask(2), 0, &mut f);
    c.spawn_failed("a", "load panicked".into(), vec![M::In(1)]);
    assert_eq!(
        drain(&mut c),
        ["crashed a 2", "spawn a load [In(1), Ask(2)]"]
    );
    c.spawn_failed("a", "load panicked".into(), vec![M::In(1), M::Ask(2)]);
    assert_eq!(drain(&mut c), ["crashed a 3", "park a unstartable=true"]);
    c.parked("a", Parked::Nothing { exists: true });
    assert_eq!(drain(&mut c), ["refuse a In(1)", "refuse a Ask(2)"]);
    assert!(c.knows("a"));
    c.route("a".into(), M::Ask(3), 0, &mut f);
    assert_eq!(drain(&mut c), ["refuse a Ask(3)"]);
    assert_eq!(c.resident(), 0);
}

#[test]
fn a_start_whose_actor_never_started_is_not_remembered() {
    let mut c = core(4);
    let mut f = Fake::default();
    c.route("a".into(), M::Ask(1), 0, &mut f);
    for _ in 0..3 {
        drain(&mut c);
        c.spawn_failed("a", "no".into(), vec![]);
    }
    assert_eq!(
        drain(&mut c).last().map(String::as_str),
        Some("park a unstartable=true")
    );
    c.parked("a", Parked::Nothing { exists: false });
    assert_eq!(drain(&mut c), ["drop []"]);
    assert!(!c.knows("a"));
}

#[test]
fn held_tasks_are_released_under_the_in_progress_cap_not_the_resident_cap() {
    // One actor may be resident, two workflows may be in progress.
    let mut c = core_caps(1, 2);
    let mut f = Fake::default();
    c.hold("a".into(), "p", vec![1, 2], false);
    c.hold("b".into(), "p", vec![3], false);
    c.hold("c".into(), "p", vec![4], true);
    c.tick(0, &mut f);
    assert!(
        drain(&mut c).is_empty(),
        "nothing before release is enabled"
    );
    c.enable_release(&mut f);
    assert_eq!(
        drain(&mut c),
        ["send [1, 2] resend=false", "send [3] resend=false"]
    );
    assert_eq!(c.backlog_counts(), (1, 2));
    f.finished.push("a".into());
    c.tick(1, &mut f);
    assert_eq!(drain(&mut c), ["send [4] resend=true"]);
    assert_eq!(c.backlog_counts(), (0, 2));
}

/// A pipeline's own in-progress cap holds its workflows back while other
/// pipelines' go in their arrival order; an end frees its next one.
#[test]
fn a_pipeline_at_its_own_in_progress_cap_waits_while_others_go() {
    let mut c = core_caps(10, 4);
    let mut f = Fake::default();
    c.set_pipeline_cap("bulk", Some(1));
    c.hold("b1".into(), "bulk", vec![1], false);
    c.hold("b2".into(), "bulk", vec![2], false);
    c.hold("n1".into(), "news", vec![3], false);
    c.hold("b3".into(), "bulk", vec![4], false);
    c.hold("n2".into(), "news", vec![5], false);
    c.enable_release(&mut f);
    assert_eq!(
        drain(&mut c),
        [
            "send [1] resend=false",
            "send [3] resend=false",
            "send [5] resend=false"
        ]
    );
    assert_eq!(c.backlog_counts(), (2, 3));
    assert_eq!(c.in_progress_by_pipeline().get("bulk"), Some(&1));
    assert_eq!(c.in_progress_by_pipeline().get("news"), Some(&2));
    // A news workflow ending frees a partition slot, not a bulk one.
    f.finished.push("n1".into());
    c.tick(1, &mut f);
    assert!(drain(&mut c).is_empty());
    assert_eq!(c.in_progress_by_pipeline().get("news"), Some(&1));
    // The bulk one ending lets the next bulk one go, in order.
    f.finished.push("b1".into());
    c.tick(2, &mut f);
    assert_eq!(drain(&mut c), ["send [2] resend=false"]);
    // Lifting the cap lets the rest go under the partition's cap.
    c.set_pipeline_cap("bulk", None);
    c.tick(3, &mut f);
    assert_eq!(drain(&mut c), ["send [4] resend=false"]);
    assert_eq!(c.backlog_counts(), (0, 3));
    assert_eq!(c.in_progress_by_pipeline().get("bulk"), Some(&2));
}

#[test]
fn a_backlog_larger_than_the_resident_cap_is_all_released() {
    let mut c = core_caps(2, 100);
    let mut f = Fake::default();
    for i in 0..50u32 {
        c.hold(format!("w{i}"), "p", vec![i], false);
    }
    c.enable_release(&mut f);
    assert_eq!(drain(&mut c).len(), 50, "every held workflow is released");
    assert_eq!(c.backlog_counts(), (0, 50));
}

#[test]
fn the_retention_sweep_skips_live_and_recent_workflows_and_pages_its_work() {
    let mut c = core(4);
    let mut f = Fake::default();
    c.route("live".into(), M::In(1), 0, &mut f);
    c.hold("held".into(), "p", vec![1], false);
    let now = 10_000;
    assert!(c.sweep_begin(now));
    let SweepPoll::Scan { code, after, n } = c.sweep_poll(now) else {
        panic!("expected a scan");
    };
    assert_eq!((code, after, n), (TERMINAL[0].code(), None, 10));
    // Old enough: ≤ 9,000. "recent" is kept, "live" has an entry.
    c.sweep_feed(
        vec![
            ("held".into(), 1),
            ("live".into(), 1),
            ("old1".into(), 2),
            ("recent".into(), 9_500),
            ("old2".into(), 3),
        ],
        now,
    );
    // batch_max 2: this tick purges two; "held" is filtered out.
    assert_eq!(
        c.sweep_poll(now),
        SweepPoll::Done(vec![("old1".into(), TERMINAL[0].code())])
    );
    c.purged(&["old1".to_string()]);
    // Next tick continues after the last id examined.
    assert!(c.sweep_begin(now));
    let SweepPoll::Scan { after, .. } = c.sweep_poll(now) else {
        panic!("expected a scan");
    };
    assert_eq!(after.as_deref(), Some("old1"));
    c.sweep_feed(vec![("recent".into(), 9_500), ("old2".into(), 3)], now);
    // Short page: the next status.
    let SweepPoll::Scan { code, after, .. } = c.sweep_poll(now) else {
        panic!("expected a scan");
    };
    assert_eq!((code, after), (TERMINAL[1].code(), None));
    c.sweep_feed(vec![], now);
    let SweepPoll::Scan { code, .. } = c.sweep_poll(now) else {
        panic!("expected a scan");
    };
    assert_eq!(code, TERMINAL[2].code());
    c.sweep_feed(vec![], now);
    assert_eq!(
        c.sweep_poll(now),
        SweepPoll::Done(vec![("old2".into(), TERMINAL[0].code())])
    );
    // Round over: the next one starts `sweep_every` (500) later.
    assert!(!c.sweep_begin(now + 499));
    assert!(c.sweep_begin(now + 500));
}

#[test]
fn an_undelivered_message_is_not_counted_against_idleness() {
    let mut c = core(4);
    let mut f = Fake::default();
    c.route("a".into(), M::In(1), 0, &mut f);
    c.spawned("a");
    c.route("a".into(), M::In(2), 0, &mut f);
    drain(&mut c);
    c.undelivered("a");
    f.idle("a", 1);
    c.tick(1_000, &mut f);
    c.tick(1_100, &mut f);
    assert_eq!(drain(&mut c), ["stop a"]);
}
