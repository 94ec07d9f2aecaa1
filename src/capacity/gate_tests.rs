use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::capacity::limits::{PoolLimits, TypeLimits};

fn capped(task_type: &str, cap: u32) -> Limits {
    let mut l = Limits::default();
    l.task_types.insert(
        task_type.into(),
        TypeLimits {
            max_in_flight: Some(cap),
            ..TypeLimits::default()
        },
    );
    l
}

fn ticket<'a>(id: &'a str, task_type: &'a str, key: &'a str) -> Ticket<'a> {
    Ticket {
        task_id: id,
        task_type,
        key,
        priority: PRIORITY_NORMAL,
        queue_deadline_ms: None,
    }
}

fn items(a: Vec<Admitted<String>>) -> Vec<String> {
    a.into_iter().map(|a| a.item).collect()
}

#[test]
fn a_type_without_limits_passes_at_once_untracked() {
    let mut g: Gate<String> = Gate::new(capped("transcribe", 1), 0);
    let a = g.admit(ticket("t1", "embed", ""), "t1".into(), 0);
    assert_eq!(a.len(), 1);
    assert!(!a[0].tracked);
    assert!(Gate::<String>::default().admit(ticket("x", "y", ""), "x".into(), 0)[0].item == "x");
    assert!(!Gate::<String>::default().is_active());
}

#[test]
fn over_the_cap_a_task_waits_and_a_freed_slot_sends_the_next() {
    let mut g: Gate<String> = Gate::new(capped("transcribe", 2), 0);
    assert_eq!(
        items(g.admit(ticket("a", "transcribe", ""), "a".into(), 0)),
        ["a"]
    );
    assert_eq!(
        items(g.admit(ticket("b", "transcribe", ""), "b".into(), 1)),
        ["b"]
    );
    assert!(g
        .admit(ticket("c", "transcribe", ""), "c".into(), 2)
        .is_empty());
    assert!(g
        .admit(ticket("d", "transcribe", ""), "d".into(), 3)
        .is_empty());
    let w = g.waiting("c").expect("c waits");
    assert_eq!(
        w.held_by,
        Holder::TaskType {
            in_flight: 2,
            cap: 2
        }
    );
    let next = g.finish(["a"], 10);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].item, "c");
    assert_eq!(next[0].waited_ms, 8);
    assert!(next[0].tracked);
    // An unknown or repeated end changes nothing.
    assert!(g.finish(["a", "zzz"], 11).is_empty());
    assert_eq!(items(g.finish(["b"], 12)), ["d"]);
}

#[test]
fn sending_an_admitted_attempt_again_takes_no_second_slot() {
    let mut g: Gate<String> = Gate::new(capped("t", 1), 0);
    assert_eq!(items(g.admit(ticket("a", "t", ""), "a".into(), 0)), ["a"]);
    let again = g.admit(ticket("a", "t", ""), "a2".into(), 1);
    assert_eq!(items(again), ["a2"]);
    assert!(g.admit(ticket("b", "t", ""), "b".into(), 1).is_empty());
    // Offered again while waiting: keeps its place, newer item.
    assert!(g.admit(ticket("b", "t", ""), "b2".into(), 2).is_empty());
    assert_eq!(items(g.finish(["a"], 3)), ["b2"]);
}

#[test]
fn a_task_cancelled_while_waiting_is_never_sent() {
    let mut g: Gate<String> = Gate::new(capped("t", 1), 0);
    g.admit(ticket("a", "t", ""), "a".into(), 0);
    g.admit(ticket("b", "t", ""), "b".into(), 0);
    g.admit(ticket("c", "t", ""), "c".into(), 0);
    assert!(g.finish(["b"], 1).is_empty());
    assert_eq!(items(g.finish(["a"], 2)), ["c"]);
    assert!(g.waiting("b").is_none());
}

#[test]
fn waiting_tasks_of_an_owner_that_went_away_are_dropped() {
    let mut g: Gate<String> = Gate::new(capped("t", 1), 0);
    g.admit(ticket("a", "t", ""), "p0:a".into(), 0);
    g.admit(ticket("b", "t", ""), "p1:b".into(), 0);
    g.admit(ticket("c", "t", ""), "p0:c".into(), 0);
    g.drop_waiting(|item| item.starts_with("p1:"));
    assert!(g.waiting("b").is_none());
    assert_eq!(items(g.finish(["a"], 1)), ["p0:c"]);
}

#[test]
fn a_pool_caps_its_types_together_and_shares_freed_slots_in_turn() {
    let mut l = Limits::default();
    l.pools.insert(
        "gpu".into(),
        PoolLimits {
            max_in_flight: 2,
            task_types: vec!["transcribe".into(), "embed".into()],
        },
    );
    let mut g: Gate<String> = Gate::new(l, 0);
    assert_eq!(
        items(g.admit(ticket("t1", "transcribe", ""), "t1".into(), 0)).len(),
        1
    );
    assert_eq!(
        items(g.admit(ticket("e1", "embed", ""), "e1".into(), 0)).len(),
        1
    );
    assert!(g
        .admit(ticket("t2", "transcribe", ""), "t2".into(), 0)
        .is_empty());
    assert!(g
        .admit(ticket("t3", "transcribe", ""), "t3".into(), 0)
        .is_empty());
    assert!(g
        .admit(ticket("e2", "embed", ""), "e2".into(), 0)
        .is_empty());
    assert!(matches!(
        g.waiting("e2").unwrap().held_by,
        Holder::Pool {
            in_flight: 2,
            cap: 2,
            ..
        }
    ));
    let a = items(g.finish(["t1"], 1));
    let b = items(g.finish(["e1"], 1));
    let mut both = [a, b].concat();
    both.sort();
    assert_eq!(both, ["e2", "t2"], "each type gets a turn");
}

#[test]
fn a_rate_limit_admits_as_tokens_refill() {
    let mut l = Limits::default();
    l.task_types.insert(
        "t".into(),
        TypeLimits {
            rate_per_sec: Some(2.0),
            ..TypeLimits::default()
        },
    );
    let mut g: Gate<String> = Gate::new(l, 0);
    let mut sent = 0;
    for i in 0..6 {
        let id = format!("x{i}");
        sent += g.admit(ticket(&id, "t", ""), id.clone(), 0).len();
    }
    assert_eq!(sent, 2, "a burst of one second's worth");
    assert!(matches!(
        g.waiting("x2").unwrap().held_by,
        Holder::Rate { .. }
    ));
    assert_eq!(g.tick(499).len(), 0);
    assert_eq!(g.tick(500).len(), 1);
    assert_eq!(g.tick(1_000).len(), 1);
    assert_eq!(g.tick(10_000).len(), 2, "refill never exceeds the burst");
}

#[test]
fn reload_raises_and_lowers_caps_without_losing_waiting_tasks() {
    let mut g: Gate<String> = Gate::new(capped("t", 1), 0);
    for id in ["a", "b", "c", "d", "e"] {
        g.admit(ticket(id, "t", ""), id.into(), 0);
    }
    assert_eq!(items(g.reconfigure(capped("t", 3), 1)), ["b", "c"]);
    assert_eq!(g.view().task_types[0].in_flight, 3);
    // Lowered to 1: nothing new goes until in-flight drops under it.
    assert!(g.reconfigure(capped("t", 1), 2).is_empty());
    assert!(g.finish(["a"], 3).is_empty());
    assert!(g.finish(["b"], 3).is_empty());
    assert_eq!(items(g.finish(["c"], 4)), ["d"]);
    // Limits removed: whatever waits goes, and the type stops being tracked.
    assert_eq!(items(g.reconfigure(Limits::default(), 5)), ["e"]);
    assert!(!g.is_active());
}

#[test]
fn keys_take_turns_so_a_big_key_does_not_starve_a_small_one() {
    let mut l = capped("t", 4);
    l.task_types.get_mut("t").unwrap().key = Some("/tenant".into());
    let mut g: Gate<String> = Gate::new(l, 0);
    let mut sent = Vec::new();
    for i in 0..50_000 {
        let id = format!("a{i}");
        sent.extend(items(g.admit(ticket(&id, "t", "A"), id.clone(), 0)));
    }
    for i in 0..5 {
        let id = format!("b{i}");
        sent.extend(items(g.admit(ticket(&id, "t", "B"), id.clone(), 1)));
    }
    assert_eq!(sent.len(), 4);
    // Free one slot at a time, as results come back: B's five go within
    // its next five turns, one in every two admissions.
    let mut order = Vec::new();
    let mut out = sent;
    while order.len() < 12 {
        let done = out.remove(0);
        let next = items(g.finish([done.as_str()], 2));
        order.extend(next.iter().cloned());
        out.extend(next);
    }
    let b_positions: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(_, id)| id.starts_with('b'))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(b_positions.len(), 5, "{order:?}");
    assert!(b_positions[4] <= 10, "{order:?}");
}

#[test]
fn key_caps_bound_each_key_and_weight_its_share() {
    let mut l = capped("t", 100);
    {
        let t = l.task_types.get_mut("t").unwrap();
        t.key = Some("/tenant".into());
        t.key_default = Some(1);
        t.key_caps = BTreeMap::from([("big".to_string(), 3)]);
    }
    let mut g: Gate<String> = Gate::new(l, 0);
    let mut sent = Vec::new();
    for i in 0..10 {
        for key in ["big", "small"] {
            let id = format!("{key}{i}");
            sent.extend(items(g.admit(ticket(&id, "t", key), id.clone(), 0)));
        }
    }
    let big = sent.iter().filter(|s| s.starts_with("big")).count();
    let small = sent.iter().filter(|s| s.starts_with("small")).count();
    assert_eq!((big, small), (3, 1));
    assert!(matches!(
        g.waiting("small5").unwrap().held_by,
        Holder::Key { cap: 1, .. }
    ));
}

#[test]
fn higher_priority_goes_first_and_aging_bounds_the_wait_of_lower() {
    let mut l = capped("t", 1);
    l.aging_ms = 1_000;
    let mut g: Gate<String> = Gate::new(l, 0);
    let t = |id: &'static str, p: u8| Ticket {
        task_id: id,
        task_type: "t",
        key: "",
        priority: p,
        queue_deadline_ms: None,
    };
    g.admit(t("busy", 1), "busy".into(), 0);
    g.admit(t("low", 0), "low".into(), 0);
    g.admit(t("high", 2), "high".into(), 100);
    // Normal arriving within 1 s of the low one goes before it; after 1 s it
    // no longer does (the low one has aged a level).
    g.admit(t("normal-early", 1), "normal-early".into(), 900);
    g.admit(t("normal-late", 1), "normal-late".into(), 1_100);
    let mut order = Vec::new();
    let mut cur = "busy".to_string();
    for now in 2_000..2_004 {
        let next = items(g.finish([cur.as_str()], now));
        cur = next[0].clone();
        order.push(cur.clone());
    }
    assert_eq!(order, ["high", "normal-early", "low", "normal-late"]);
}

#[test]
fn a_task_past_its_queue_deadline_is_taken_out_and_never_sent() {
    let mut g: Gate<String> = Gate::new(capped("t", 1), 0);
    let with = |id: &'static str, due: Option<u64>| Ticket {
        queue_deadline_ms: due,
        ..ticket(id, "t", "")
    };
    assert_eq!(items(g.admit(with("a", Some(50)), "a".into(), 0)), ["a"]);
    assert!(g.admit(with("b", Some(100)), "b".into(), 10).is_empty());
    assert!(g.admit(with("c", None), "c".into(), 20).is_empty());
    assert!(g.admit(with("d", Some(100)), "d".into(), 30).is_empty());
    // `a` was admitted before its deadline: it never expires.
    assert_eq!(g.next_queue_deadline(), Some(100));
    assert!(g.expire(99, 10, |_| true).is_empty());
    // Only the caller's own are taken; the others wait for their owner.
    let e = g.expire(100, 10, |item| item == "b");
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].item.as_str(), e[0].waited_ms), ("b", 90));
    assert!(g.waiting("b").is_none());
    assert_eq!(g.view().task_types[0].queued, 2);
    // The freed slot goes to `c`, never to the expired `b`; `d` expires
    // while it waits behind `c`.
    assert_eq!(items(g.finish(["a"], 120)), ["c"]);
    let e = g.expire(130, 10, |_| true);
    assert_eq!(e.iter().map(|e| e.item.as_str()).collect::<Vec<_>>(), ["d"]);
    assert!(g.finish(["c"], 140).is_empty(), "nothing waits any more");
    assert_eq!(g.next_queue_deadline(), None);
    // An end reported for an expired task changes nothing.
    assert!(g.finish(["b", "d"], 150).is_empty());
}

#[test]
fn a_task_admitted_before_its_queue_deadline_keeps_its_slot() {
    let mut g: Gate<String> = Gate::new(capped("t", 1), 0);
    let with = |id: &'static str, due: Option<u64>| Ticket {
        queue_deadline_ms: due,
        ..ticket(id, "t", "")
    };
    g.admit(with("a", None), "a".into(), 0);
    assert!(g.admit(with("b", Some(100)), "b".into(), 0).is_empty());
    // Offered again while waiting (a re-send): same place, same deadline.
    assert!(g.admit(with("b", Some(500)), "b".into(), 50).is_empty());
    assert_eq!(g.next_queue_deadline(), Some(100));
    assert_eq!(items(g.finish(["a"], 99)), ["b"]);
    assert_eq!(g.next_queue_deadline(), None);
    assert!(g.expire(1_000, 10, |_| true).is_empty());
    assert_eq!(g.view().task_types[0].in_flight, 1);
}

/// Tenant A has 2,000 tasks waiting when tenant B's 20 arrive: with unit
/// quanta the two alternate, so B's i-th task goes within the first
/// 2(i + 1) admissions after its arrival, whatever A has queued.
#[test]
fn a_tenant_arriving_behind_a_large_queue_waits_one_turn_per_task() {
    let mut l = capped("t", 8);
    l.task_types.get_mut("t").unwrap().key = Some("/tenant".into());
    let mut g: Gate<String> = Gate::new(l, 0);
    let mut out = Vec::new();
    for i in 0..2_000 {
        let id = format!("a{i}");
        out.extend(items(g.admit(ticket(&id, "t", "A"), id.clone(), 0)));
    }
    for i in 0..20 {
        let id = format!("b{i}");
        out.extend(items(g.admit(ticket(&id, "t", "B"), id.clone(), 1)));
    }
    assert_eq!(out.len(), 8, "A holds every slot when B arrives");
    let mut order = Vec::new();
    while order
        .iter()
        .filter(|id: &&String| id.starts_with('b'))
        .count()
        < 20
    {
        let done = out.remove(0);
        let next = items(g.finish([done.as_str()], 2));
        order.extend(next.iter().cloned());
        out.extend(next);
    }
    let b_positions: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(_, id)| id.starts_with('b'))
        .map(|(i, _)| i)
        .collect();
    for (i, pos) in b_positions.iter().enumerate() {
        assert!(*pos < 2 * (i + 1), "b{i} admitted {pos}th: {order:?}");
    }
    assert!(
        order.len() <= 40,
        "B done within 40 admissions: {}",
        order.len()
    );
}

/// One step of a random run.
#[derive(Debug, Clone)]
enum Step {
    Offer {
        key: u8,
        task_type: u8,
        priority: u8,
        /// A queue deadline this long after the offer, when set.
        queue_timeout: Option<u16>,
    },
    Finish {
        pick: usize,
    },
    Tick {
        advance: u16,
    },
    Reload {
        cap: u8,
        pool: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..3, 0u8..3, 0u8..3, proptest::option::of(0u16..3000))
            .prop_map(|(key, task_type, priority, queue_timeout)| Step::Offer { key, task_type, priority, queue_timeout }),
        3 => (0usize..64).prop_map(|pick| Step::Finish { pick }),
        1 => (0u16..2000).prop_map(|advance| Step::Tick { advance }),
        1 => (1u8..6, 1u8..8).prop_map(|(cap, pool)| Step::Reload { cap, pool }),
    ]
}

fn limits(cap: u32, pool: u32) -> Limits {
    let mut l = Limits::default();
    l.task_types.insert(
        "t0".into(),
        TypeLimits {
            max_in_flight: Some(cap),
            key: Some("/k".into()),
            key_default: Some(2),
            ..TypeLimits::default()
        },
    );
    l.task_types.insert(
        "t1".into(),
        TypeLimits {
            rate_per_sec: Some(5.0),
            ..TypeLimits::default()
        },
    );
    l.pools.insert(
        "p".into(),
        PoolLimits {
            max_in_flight: pool,
            task_types: vec!["t0".into(), "t1".into()],
        },
    );
    l
}

proptest! {
    /// At every instant no cap is exceeded (pool, type, key) by attempts
    /// admitted under it; every offered task is sent exactly once, expired
    /// exactly once (never both, and only once its queue deadline passed)
    /// or is still waiting; and once every limit is lifted everything
    /// waiting goes.
    #[test]
    fn no_cap_is_ever_exceeded_and_no_task_is_lost(steps in proptest::collection::vec(step(), 1..200)) {
        let (mut cap, mut pool) = (3u32, 4u32);
        let mut g: Gate<String> = Gate::new(limits(cap, pool), 0);
        let mut now = 0u64;
        let mut n = 0u32;
        // (task type, key) of each attempt in flight, admitted under the current limits.
        let mut out: Vec<(String, String, String)> = Vec::new();
        let mut offered: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut sent: Vec<String> = Vec::new();
        let mut expired: Vec<String> = Vec::new();
        let mut deadline: BTreeMap<String, u64> = BTreeMap::new();
        let take = |a: Vec<Admitted<String>>, offered: &BTreeMap<String, (String, String)>, out: &mut Vec<(String, String, String)>, sent: &mut Vec<String>| {
            for a in a {
                let (tt, k) = offered[&a.item].clone();
                if a.tracked {
                    out.push((a.item.clone(), tt, k));
                }
                sent.push(a.item);
            }
        };
        for s in steps {
            match s {
                Step::Offer { key, task_type, priority, queue_timeout } => {
                    let id = format!("x{n}");
                    n += 1;
                    let tt = format!("t{task_type}");
                    let k = format!("k{key}");
                    offered.insert(id.clone(), (tt.clone(), k.clone()));
                    let queue_deadline_ms = queue_timeout.map(|q| now + u64::from(q));
                    if let Some(d) = queue_deadline_ms {
                        deadline.insert(id.clone(), d);
                    }
                    let t = Ticket { task_id: &id, task_type: &tt, key: &k, priority, queue_deadline_ms };
                    let a = g.admit(t, id.clone(), now);
                    take(a, &offered, &mut out, &mut sent);
                }
                Step::Finish { pick } => {
                    if !out.is_empty() {
                        let (id, _, _) = out.remove(pick % out.len());
                        let a = g.finish([id.as_str()], now);
                        take(a, &offered, &mut out, &mut sent);
                    }
                }
                Step::Tick { advance } => {
                    now += u64::from(advance);
                    let a = g.tick(now);
                    take(a, &offered, &mut out, &mut sent);
                    for e in g.expire(now, usize::MAX, |_| true) {
                        prop_assert!(deadline.get(&e.item).is_some_and(|d| *d <= now), "{} expired early", e.item);
                        expired.push(e.item);
                    }
                }
                Step::Reload { cap: c, pool: p } => {
                    cap = u32::from(c);
                    pool = u32::from(p);
                    let a = g.reconfigure(limits(cap, pool), now);
                    take(a, &offered, &mut out, &mut sent);
                    // Only attempts admitted after a lowered cap must fit it:
                    // drain the excess the way results would.
                    while out.iter().filter(|(_, tt, _)| tt == "t0").count() as u32 > cap
                        || out.len() as u32 > pool
                    {
                        let (id, _, _) = out.remove(0);
                        let a = g.finish([id.as_str()], now);
                        take(a, &offered, &mut out, &mut sent);
                    }
                }
            }
            let t0 = out.iter().filter(|(_, tt, _)| tt == "t0").count() as u32;
            prop_assert!(t0 <= cap, "t0 {} > cap {}", t0, cap);
            prop_assert!(out.len() as u32 <= pool.max(1), "pool {} > {}", out.len(), pool);
            for k in ["k0", "k1", "k2"] {
                let n = out.iter().filter(|(_, tt, kk)| tt == "t0" && kk == k).count();
                prop_assert!(n <= 2, "key {} has {}", k, n);
            }
        }
        let mut unique = sent.clone();
        unique.extend(expired.iter().cloned());
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), sent.len() + expired.len(), "a task was sent twice, or sent and expired");
        let a = g.reconfigure(Limits::default(), now);
        take(a, &offered, &mut out, &mut sent);
        prop_assert_eq!(sent.len() + expired.len(), offered.len(), "every task was sent or expired once the limits were lifted");
        prop_assert!(g.expire(u64::MAX, usize::MAX, |_| true).is_empty(), "no deadline outlives its task");
        prop_assert_eq!(g.next_queue_deadline(), None);
    }

    /// Admitting at once when nothing waits is an optimisation only: a
    /// gate that queues every task and pumps admits the same tasks, in the
    /// same order, with the same tracking, after every step.
    #[test]
    fn the_direct_path_admits_exactly_what_queueing_would(steps in proptest::collection::vec(step(), 1..200)) {
        let mut direct: Gate<String> = Gate::new(limits(3, 4), 0);
        let mut queued: Gate<String> = Gate::new(limits(3, 4), 0);
        queued.queue_only = true;
        let flat = |a: Vec<Admitted<String>>| a.into_iter().map(|a| (a.item, a.tracked, a.waited_ms)).collect::<Vec<_>>();
        let mut now = 0u64;
        let mut n = 0u32;
        let mut out: Vec<String> = Vec::new();
        for s in steps {
            let (a, b) = match s {
                Step::Offer { key, task_type, priority, queue_timeout } => {
                    let id = format!("x{n}");
                    n += 1;
                    let (tt, k) = (format!("t{task_type}"), format!("k{key}"));
                    let queue_deadline_ms = queue_timeout.map(|q| now + u64::from(q));
                    let t = Ticket { task_id: &id, task_type: &tt, key: &k, priority, queue_deadline_ms };
                    (flat(direct.admit(t, id.clone(), now)), flat(queued.admit(t, id.clone(), now)))
                }
                Step::Finish { pick } => {
                    if out.is_empty() {
                        continue;
                    }
                    let id = out.remove(pick % out.len());
                    (flat(direct.finish([id.as_str()], now)), flat(queued.finish([id.as_str()], now)))
                }
                Step::Tick { advance } => {
                    now += u64::from(advance);
                    let ea: Vec<String> = direct.expire(now, usize::MAX, |_| true).into_iter().map(|e| e.item).collect();
                    let eb: Vec<String> = queued.expire(now, usize::MAX, |_| true).into_iter().map(|e| e.item).collect();
                    prop_assert_eq!(&ea, &eb);
                    (flat(direct.tick(now)), flat(queued.tick(now)))
                }
                Step::Reload { cap, pool } => {
                    let l = limits(u32::from(cap), u32::from(pool));
                    (flat(direct.reconfigure(l.clone(), now)), flat(queued.reconfigure(l, now)))
                }
            };
            prop_assert_eq!(&a, &b);
            out.extend(a.into_iter().filter(|(_, tracked, _)| *tracked).map(|(id, _, _)| id));
            prop_assert_eq!(direct.view(), queued.view());
        }
    }
}
