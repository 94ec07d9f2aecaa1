//! Grouping a window's records into messages: records with the same subject
//! share one message, with an id derived from every member.

use std::collections::HashMap;

use super::OutboxItem;

/// Records of one window that go out as one message.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Group {
    /// Indexes into the window, in window order.
    pub(super) members: Vec<usize>,
}

impl Group {
    /// The payload and `Nats-Msg-Id`. A single record goes out as it is
    /// stored, with id `<workflow>:<first seq>`; a batch wraps the stored
    /// records (`{"v":1,"records":[...]}`, no re-encoding) and its id is a
    /// 128-bit digest of every member's `<workflow>:<seq>`, so a re-sent
    /// batch of the same records is dropped by the server and a batch of
    /// other records never is.
    pub(super) fn message(&self, window: &[OutboxItem]) -> (bytes::Bytes, String) {
        if let [only] = self.members[..] {
            let item = &window[only];
            return (
                item.payload.clone(),
                format!("{}:{}", item.workflow_id, item.seq),
            );
        }
        let len: usize = self
            .members
            .iter()
            .map(|&m| window[m].payload.len() + 1)
            .sum();
        let mut body = Vec::with_capacity(len + 24);
        body.extend_from_slice(b"{\"v\":1,\"records\":[");
        let (mut h1, mut h2) = (
            std::hash::DefaultHasher::new(),
            std::hash::DefaultHasher::new(),
        );
        std::hash::Hash::hash(&0x5eed_u64, &mut h2);
        for (k, &m) in self.members.iter().enumerate() {
            if k > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&window[m].payload);
            for h in [&mut h1, &mut h2] {
                std::hash::Hash::hash(&window[m].workflow_id, h);
                std::hash::Hash::hash(&window[m].seq, h);
            }
        }
        body.extend_from_slice(b"]}");
        let id = format!(
            "b:{:016x}{:016x}",
            std::hash::Hasher::finish(&h1),
            std::hash::Hasher::finish(&h2)
        );
        (body.into(), id)
    }
}

/// Splits a window into messages: records with the same subject together,
/// at most `max` records and about `max_bytes` bytes each (a record larger
/// than that goes alone).
pub(super) fn batch_by_subject(window: &[OutboxItem], max: usize, max_bytes: usize) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut open: HashMap<&str, (usize, usize)> = HashMap::new(); // subject -> (group, bytes)
    for (i, item) in window.iter().enumerate() {
        let size = item.payload.len() + 1;
        match open.get_mut(item.subject.as_str()) {
            Some((g, bytes))
                if groups[*g].members.len() < max && *bytes + size + 24 <= max_bytes =>
            {
                groups[*g].members.push(i);
                *bytes += size;
            }
            _ => {
                open.insert(item.subject.as_str(), (groups.len(), size));
                groups.push(Group { members: vec![i] });
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{decode_message, EventMessage, LifecycleEvent};

    fn item(wf: &str, seq: u64, subject: &str) -> OutboxItem {
        let msg = EventMessage {
            v: 1,
            workflow_id: wf.into(),
            pipeline: "video".into(),
            status: "running".into(),
            events: vec![LifecycleEvent {
                id: format!("{wf}:{seq}"),
                seq,
                at: 1,
                event: "task_succeeded".into(),
                generation: 0,
                step: Some("ingest".into()),
                attempt: Some(1),
                worker: None,
                error: None,
                output: None,
                elements: None,
                failed: None,
                signal: None,
                signal_id: None,
                due_at: None,
                child: None,
            }],
        };
        OutboxItem {
            partition: 0,
            workflow_id: wf.into(),
            seq,
            subject: subject.into(),
            payload: serde_json::to_vec(&msg).unwrap().into(),
        }
    }

    #[test]
    fn records_with_one_subject_share_messages_up_to_the_limits() {
        let w = vec![
            item("a", 1, "s.x"),
            item("b", 1, "s.y"),
            item("c", 4, "s.x"),
            item("d", 2, "s.x"),
        ];
        let g = batch_by_subject(&w, 2, 1 << 20);
        let members: Vec<Vec<usize>> = g.iter().map(|g| g.members.clone()).collect();
        assert_eq!(members, vec![vec![0, 2], vec![1], vec![3]]);
        // A byte bound below two records sends each alone.
        let one = w[0].payload.len();
        let g = batch_by_subject(&w, 64, one + 30);
        assert_eq!(g.len(), 4);
        // max 1 turns batching off.
        assert_eq!(batch_by_subject(&w, 1, 1 << 20).len(), 4);
    }

    #[test]
    fn batches_decode_into_their_records_and_single_records_are_unchanged() {
        let w = vec![item("a", 1, "s.x"), item("c", 4, "s.x")];
        let (single, id) = Group { members: vec![1] }.message(&w);
        assert_eq!(single, w[1].payload);
        assert_eq!(id, "c:4");
        let recs = decode_message(&single).unwrap();
        assert_eq!((recs.len(), recs[0].workflow_id.as_str()), (1, "c"));

        let (batch, id) = Group {
            members: vec![0, 1],
        }
        .message(&w);
        let recs = decode_message(&batch).unwrap();
        let ids: Vec<_> = recs.iter().map(|r| r.events[0].id.as_str()).collect();
        assert_eq!(ids, ["a:1", "c:4"]);
        assert!(id.starts_with("b:") && id.len() == 34, "{id}");
        // The same records give the same id; others a different one.
        assert_eq!(
            Group {
                members: vec![0, 1]
            }
            .message(&w)
            .1,
            id
        );
        let other = vec![item("a", 1, "s.x"), item("c", 5, "s.x")];
        assert_ne!(
            Group {
                members: vec![0, 1]
            }
            .message(&other)
            .1,
            id
        );
    }
}
