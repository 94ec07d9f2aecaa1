//! One test per ownership policy, driving the core by hand.

use super::*;

fn cfg() -> LeaseConfig {
    LeaseConfig {
        ttl_ms: 3_000,
        margin_ms: 500,
        renew_every_ms: 1_000,
        scan_every_ms: 1_000,
        op_timeout_ms: 1_000,
    }
}

fn holder(node: &str, term: u64) -> Holder {
    Holder {
        node: node.into(),
        term,
    }
}

fn entry(node: &str, term: u64, revision: Revision) -> Entry {
    Entry {
        holder: holder(node, term),
        revision,
    }
}

fn kv_writes(actions: &[Action]) -> Vec<KvRequest> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Kv(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn ok(id: u64, revision: Revision) -> Input {
    Input::KvDone {
        id,
        result: KvResult::Ok { revision },
    }
}

/// A node "a" of 4 partitions, registered at revision 1, alone in the
/// cluster; returns it with the writes of its first scan (4 acquisitions).
fn registered_alone() -> (Ownership, Vec<KvRequest>) {
    let mut o = Ownership::new(cfg(), "a".into(), 4, 100);
    let first = o.handle(0, Input::Tick);
    let reg = kv_writes(&first);
    assert_eq!(reg.len(), 1);
    assert_eq!(reg[0].key, Key::Node("a".into()));
    assert!(matches!(reg[0].op, KvOp::Create { .. }));
    assert!(first.contains(&Action::Scan));
    o.handle(5, ok(reg[0].id, 1));
    let acts = o.handle(
        10,
        Input::Scanned {
            nodes: vec!["a".into()],
            leases: vec![],
        },
    );
    let writes = kv_writes(&acts);
    (o, writes)
}

/// `registered_alone`, with every acquisition confirmed at revisions 2..=5.
fn serving_all() -> Ownership {
    let (mut o, writes) = registered_alone();
    for (k, w) in writes.iter().enumerate() {
        o.handle(20, ok(w.id, 2 + k as u64));
    }
    assert_eq!(o.held().len(), 4);
    o
}

#[test]
fn a_node_alone_takes_every_free_lease_by_create_and_serves_at_the_writes_revision() {
    let (mut o, writes) = registered_alone();
    assert_eq!(writes.len(), 4);
    assert!(writes.iter().all(|w| matches!(w.op, KvOp::Create { .. })));
    let w = &writes[0];
    let Key::Lease(p) = w.key else {
        panic!("{w:?}")
    };
    let acts = o.handle(20, ok(w.id, 42));
    assert!(acts.contains(&Action::StartServing {
        partition: p,
        epoch: Epoch(42)
    }));
    assert_eq!(o.serving_epoch(p, 21), Some(Epoch(42)));
}

#[test]
fn nothing_is_acquired_before_the_registration_is_confirmed() {
    let mut o = Ownership::new(cfg(), "a".into(), 4, 100);
    o.handle(0, Input::Tick);
    let acts = o.handle(
        10,
        Input::Scanned {
            nodes: vec![],
            leases: vec![],
        },
    );
    assert!(kv_writes(&acts).is_empty(), "{acts:?}");
}

#[test]
fn a_node_takes_only_its_fair_share_and_never_another_nodes_lease() {
    let mut o = Ownership::new(cfg(), "a".into(), 4, 100);
    let reg = kv_writes(&o.handle(0, Input::Tick));
    o.handle(5, ok(reg[0].id, 1));
    let acts = o.handle(
        10,
        Input::Scanned {
            nodes: vec!["a".into(), "b".into()],
            leases: vec![(0, entry("b", 7, 3)), (1, entry("b", 8, 4))],
        },
    );
    let writes = kv_writes(&acts);
    let keys: Vec<Key> = writes.iter().map(|w| w.key.clone()).collect();
    assert_eq!(writes.len(), 2, "{acts:?}");
    assert!(keys.contains(&Key::Lease(2)) && keys.contains(&Key::Lease(3)));
}

#[test]
fn a_lease_left_by_a_previous_run_of_the_node_is_taken_by_cas_on_its_revision() {
    let mut o = Ownership::new(cfg(), "a".into(), 1, 100);
    let reg = kv_writes(&o.handle(0, Input::Tick));
    o.handle(5, ok(reg[0].id, 1));
    let acts = o.handle(
        10,
        Input::Scanned {
            nodes: vec!["a".into()],
            leases: vec![(0, entry("a", 3, 9))],
        },
    );
    let w = kv_writes(&acts);
    assert_eq!(w.len(), 1);
    assert!(
        matches!(&w[0].op, KvOp::Update { expected: 9, value } if value.term != 3),
        "{w:?}"
    );
}

#[test]
fn a_lost_answer_is_recognised_by_the_term_on_the_conflict() {
    let (mut o, writes) = registered_alone();
    let w = &writes[0];
    let KvOp::Create { value } = &w.op else {
        panic!()
    };
    let acts = o.handle(
        20,
        Input::KvDone {
            id: w.id,
            result: KvResult::Conflict {
                current: Some(Entry {
                    holder: value.clone(),
                    revision: 6,
                }),
            },
        },
    );
    assert!(acts.iter().any(|a| matches!(
        a,
        Action::StartServing {
            epoch: Epoch(6),
            ..
        }
    )));
}

#[test]
fn a_lost_race_for_a_lease_leaves_it_alone() {
    let (mut o, writes) = registered_alone();
    let acts = o.handle(
        20,
        Input::KvDone {
            id: writes[0].id,
            result: KvResult::Conflict {
                current: Some(entry("b", 1, 6)),
            },
        },
    );
    assert!(!acts
        .iter()
        .any(|a| matches!(a, Action::StartServing { .. })));
    assert_eq!(o.held().len(), 0);
}

#[test]
fn a_held_lease_is_renewed_by_cas_and_keeps_its_epoch() {
    let mut o = serving_all();
    let acts = o.handle(1_020, Input::Tick);
    let renewals: Vec<KvRequest> = kv_writes(&acts)
        .into_iter()
        .filter(|w| matches!(w.key, Key::Lease(_)))
        .collect();
    assert_eq!(renewals.len(), 4, "{acts:?}");
    let w = &renewals[0];
    let Key::Lease(p) = w.key else { panic!() };
    let before = o.serving_epoch(p, 1_020).unwrap();
    assert!(matches!(w.op, KvOp::Update { .. }));
    o.handle(1_030, ok(w.id, 50));
    assert_eq!(o.serving_epoch(p, 1_031), Some(before));
    // Valid until the renewal's send time + TTL − margin.
    assert_eq!(o.serving_epoch(p, 1_020 + 2_499), Some(before));
    assert_eq!(o.serving_epoch(p, 1_020 + 2_500), None);
}

#[test]
fn a_renewal_conflict_with_another_holder_stops_serving_at_once() {
    let mut o = serving_all();
    let acts = o.handle(1_020, Input::Tick);
    let w = kv_writes(&acts)
        .into_iter()
        .find(|w| matches!(w.key, Key::Lease(_)))
        .unwrap();
    let Key::Lease(p) = w.key else { panic!() };
    let acts = o.handle(
        1_030,
        Input::KvDone {
            id: w.id,
            result: KvResult::Conflict {
                current: Some(entry("b", 1, 77)),
            },
        },
    );
    assert!(acts.contains(&Action::StopServing { partition: p }));
    assert_eq!(o.serving_epoch(p, 1_031), None);
}

#[test]
fn unconfirmed_renewals_stop_serving_before_the_bucket_lets_the_lease_go() {
    let mut o = serving_all();
    // Renewals are sent but never answered; the leases were confirmed for a
    // write sent at 10, so they are valid until 10 + 2500.
    let mut stopped = Vec::new();
    let mut t = 20;
    while t <= 3_000 {
        for a in o.handle(t, Input::Tick) {
            if let Action::StopServing { partition } = a {
                stopped.push((t, partition));
            }
        }
        t += 100;
    }
    assert_eq!(stopped.len(), 4, "{stopped:?}");
    // Stopped at the first tick at or after 2510, which is below the TTL
    // the bucket counts from the write's arrival (after 10).
    assert!(stopped.iter().all(|(t, _)| *t == 2_520), "{stopped:?}");
}

#[test]
fn an_over_share_node_hands_over_gracefully_in_order() {
    let mut o = serving_all();
    let acts = o.handle(
        100,
        Input::Scanned {
            nodes: vec!["a".into(), "b".into()],
            leases: vec![],
        },
    );
    let stops: Vec<u16> = acts
        .iter()
        .filter_map(|a| match a {
            Action::StopIntake { partition } => Some(*partition),
            _ => None,
        })
        .collect();
    assert_eq!(stops, vec![3, 2], "{acts:?}");
    // Nothing is released before the commit in flight finished and the
    // snapshot is written; intake stays stopped meanwhile.
    assert_eq!(o.serving_epoch(3, 101), None);
    let acts = o.handle(110, Input::CommitFinished { partition: 3 });
    assert_eq!(acts, vec![Action::Snapshot { partition: 3 }]);
    let acts = o.handle(120, Input::SnapshotWritten { partition: 3 });
    assert_eq!(acts[0], Action::StopServing { partition: 3 });
    let release = kv_writes(&acts);
    assert_eq!(release.len(), 1);
    assert_eq!(release[0].key, Key::Lease(3));
    assert!(matches!(release[0].op, KvOp::Delete { .. }));
    o.handle(130, ok(release[0].id, 99));
    assert!(o.held().iter().all(|(p, _)| *p != 3));
}

#[test]
fn a_refused_append_reopens_a_valid_term_and_stops_an_expired_one() {
    let mut o = serving_all();
    let (p, epoch) = o.held()[0];
    let acts = o.handle(
        100,
        Input::AppendRejected {
            partition: p,
            epoch,
        },
    );
    assert!(acts.contains(&Action::StartServing {
        partition: p,
        epoch
    }));
    // After a pause longer than the lease, the same refusal stops serving.
    let acts = o.handle(
        9_000,
        Input::AppendRejected {
            partition: p,
            epoch,
        },
    );
    assert!(acts.contains(&Action::StopServing { partition: p }));
}

#[test]
fn a_leaving_node_hands_everything_over_then_deregisters() {
    let mut o = serving_all();
    let acts = o.handle(100, Input::Leave);
    let mut draining: Vec<u16> = acts
        .iter()
        .filter_map(|a| match a {
            Action::StopIntake { partition } => Some(*partition),
            _ => None,
        })
        .collect();
    draining.sort();
    assert_eq!(draining, vec![0, 1, 2, 3]);
    let mut rev = 200;
    let mut left = false;
    for p in 0..4 {
        o.handle(110, Input::CommitFinished { partition: p });
        let acts = o.handle(120, Input::SnapshotWritten { partition: p });
        for w in kv_writes(&acts) {
            rev += 1;
            let acts = o.handle(130, ok(w.id, rev));
            for w in kv_writes(&acts) {
                assert_eq!(w.key, Key::Node("a".into()), "deregisters last");
                left = o.handle(140, ok(w.id, rev + 1)).contains(&Action::Left);
            }
        }
    }
    assert!(left);
    assert!(o.has_left());
}

#[test]
fn a_registration_left_by_a_previous_run_is_replaced_by_cas() {
    let mut o = Ownership::new(cfg(), "a".into(), 1, 100);
    let reg = kv_writes(&o.handle(0, Input::Tick));
    let acts = o.handle(
        5,
        Input::KvDone {
            id: reg[0].id,
            result: KvResult::Conflict {
                current: Some(entry("a", 3, 8)),
            },
        },
    );
    let w = kv_writes(&acts);
    assert_eq!(w.len(), 1);
    assert!(matches!(w[0].op, KvOp::Update { expected: 8, .. }));
}

#[test]
fn timings_that_cannot_renew_in_time_are_refused() {
    assert!(cfg().validate().is_ok());
    assert!(LeaseConfig::default().validate().is_ok());
    let slow = LeaseConfig {
        renew_every_ms: 2_000,
        ..cfg()
    };
    assert!(slow.validate().is_err());
    let no_margin = LeaseConfig {
        margin_ms: 0,
        ..cfg()
    };
    assert!(no_margin.validate().is_err());
}

#[test]
fn a_renewal_recognised_by_its_term_extends_the_lease_from_its_send_time() {
    let mut o = serving_all();
    let acts = o.handle(1_020, Input::Tick);
    let first = kv_writes(&acts)
        .into_iter()
        .find(|w| w.key == Key::Lease(0))
        .unwrap();
    let KvOp::Update { value, .. } = &first.op else {
        panic!()
    };
    let mine = value.clone();
    // Its answer is lost; the next renewal conflicts with the write that
    // applied, which carries this node's term.
    let acts = o.handle(2_020, Input::Tick);
    let second = kv_writes(&acts)
        .into_iter()
        .find(|w| w.key == Key::Lease(0))
        .unwrap();
    o.handle(
        2_030,
        Input::KvDone {
            id: second.id,
            result: KvResult::Conflict {
                current: Some(Entry {
                    holder: mine,
                    revision: 60,
                }),
            },
        },
    );
    // Valid until the first renewal's send time (1020) + TTL − margin,
    // past the 2510 the first acquisition gave.
    assert!(o.serving_epoch(0, 3_000).is_some());
    assert!(o.serving_epoch(0, 1_020 + 2_500).is_none());
}
