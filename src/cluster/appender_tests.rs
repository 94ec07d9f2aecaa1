//! The appender against a journal kept in a vector: the chain it builds
//! passes the checker, and what a fenced-off owner would write does not.

use super::*;
use crate::cluster::check_replicated;

fn put(k: &str) -> Vec<JournalOp> {
    vec![JournalOp::Put {
        key: k.as_bytes().to_vec(),
        value: b"v".to_vec(),
    }]
}

/// A subject that stores an append only at the expected last sequence
/// (when `fenced`); subject sequences step by 2 as if another subject
/// shared the stream.
struct Subject {
    messages: Vec<(u64, Vec<u8>)>,
    fenced: bool,
}

impl Subject {
    fn last(&self) -> u64 {
        self.messages.last().map_or(0, |m| m.0)
    }
    fn tail(&self) -> Option<(u64, &[u8])> {
        self.messages.last().map(|(s, w)| (*s, w.as_slice()))
    }
    fn publish(&mut self, a: &Append) -> Option<u64> {
        if self.fenced && a.follows != self.last() {
            return None;
        }
        let seq = self.last() + 2;
        self.messages.push((seq, a.wire.clone()));
        Some(seq)
    }
}

#[test]
fn a_term_appends_one_chain_that_passes_the_checker() {
    let mut s = Subject {
        messages: Vec::new(),
        fenced: true,
    };
    let mut a = Appender::new("a".into());
    assert_eq!(
        a.commit(0, put("x")),
        Err(AppendRefused::NotServing { partition: 0 })
    );
    let open = a.open(0, Epoch(5), s.tail()).unwrap();
    let seq = s.publish(&open).unwrap();
    a.acked(&open, seq);
    for k in ["x", "y", "z"] {
        let c = a.commit(0, put(k)).unwrap();
        let seq = s.publish(&c).unwrap();
        a.acked(&c, seq);
    }
    assert_eq!(s.messages.len(), 4);
    assert!(check_replicated(0, None, &s.messages).is_empty());
    let last = JournalRecord::decode(&s.messages[3].1).unwrap();
    assert_eq!((last.epoch, last.kind), (Epoch(5), RecordKind::Commit));
    assert_eq!(last.ops, put("z"));
}

#[test]
fn a_deposed_owners_append_is_refused_and_its_term_ends() {
    let mut s = Subject {
        messages: Vec::new(),
        fenced: true,
    };
    let (mut a, mut b) = (Appender::new("a".into()), Appender::new("b".into()));
    let open = a.open(0, Epoch(5), s.tail()).unwrap();
    let seq = s.publish(&open).unwrap();
    a.acked(&open, seq);
    // b takes over: reads the tail, appends its open record.
    let open_b = b.open(0, Epoch(9), s.tail()).unwrap();
    let seq = s.publish(&open_b).unwrap();
    b.acked(&open_b, seq);
    // a's next append names the old tail and is refused.
    let stale = a.commit(0, put("late")).unwrap();
    assert_eq!(s.publish(&stale), None);
    assert!(a.stop(0, Epoch(5)));
    assert!(matches!(
        a.commit(0, put("later")),
        Err(AppendRefused::NotServing { .. })
    ));
    // b goes on; a stale stop does not end b's newer term.
    assert!(!b.stop(0, Epoch(5)));
    let c = b.commit(0, put("b1")).unwrap();
    let seq = s.publish(&c).unwrap();
    b.acked(&c, seq);
    assert!(check_replicated(0, None, &s.messages).is_empty());
}

#[test]
fn an_append_without_the_expected_sequence_check_is_caught_as_a_fork() {
    let mut s = Subject {
        messages: Vec::new(),
        fenced: false,
    };
    let (mut a, mut b) = (Appender::new("a".into()), Appender::new("b".into()));
    let open = a.open(0, Epoch(5), s.tail()).unwrap();
    let seq = s.publish(&open).unwrap();
    a.acked(&open, seq);
    let open_b = b.open(0, Epoch(9), s.tail()).unwrap();
    let seq = s.publish(&open_b).unwrap();
    b.acked(&open_b, seq);
    let stale = a.commit(0, put("late")).unwrap();
    assert!(s.publish(&stale).is_some(), "unfenced: stored");
    let v = check_replicated(0, None, &s.messages);
    assert!(v.iter().any(|m| m.contains("expected-sequence")), "{v:?}");
    assert!(v.iter().any(|m| m.contains("fork")), "{v:?}");
}

#[test]
fn a_corrupt_record_or_a_foreign_tail_is_reported() {
    let mut s = Subject {
        messages: Vec::new(),
        fenced: true,
    };
    let mut a = Appender::new("a".into());
    let open = a.open(0, Epoch(5), s.tail()).unwrap();
    let seq = s.publish(&open).unwrap();
    a.acked(&open, seq);
    // A foreign partition's record as the tail is refused.
    let mut other = Appender::new("a".into());
    assert!(matches!(
        other.open(1, Epoch(6), s.tail()),
        Err(AppendRefused::BadTail { partition: 1, .. })
    ));
    let c = a.commit(0, put("x")).unwrap();
    let seq = s.publish(&c).unwrap();
    a.acked(&c, seq);
    let last = s.messages.len() - 1;
    let flip = s.messages[last].1.len() - 1;
    s.messages[last].1[flip] ^= 1;
    let v = check_replicated(0, None, &s.messages);
    assert!(v.iter().any(|m| m.contains("checksum mismatch")), "{v:?}");
    assert!(matches!(
        a.open(0, Epoch(7), s.tail()),
        Err(AppendRefused::BadTail { .. })
    ));
}

#[test]
fn no_commit_is_built_before_the_open_record_is_stored() {
    let mut a = Appender::new("a".into());
    let open = a.open(2, Epoch(5), None).unwrap();
    assert_eq!((open.kind, open.follows), (RecordKind::Open, 0));
    assert_eq!(a.epoch(2), None);
    assert!(matches!(
        a.commit(2, put("x")),
        Err(AppendRefused::NotServing { partition: 2 })
    ));
    a.acked(&open, 11);
    assert_eq!(a.epoch(2), Some(Epoch(5)));
    assert_eq!(a.commit(2, put("x")).unwrap().follows, 11);
}
