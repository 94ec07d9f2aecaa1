//! The events of the simulated cluster and their queue order.

use std::cmp::Ordering;

use crate::cluster::{Epoch, Input, KvRequest, RecordKind};

/// A message to a node's shell.
pub(super) enum NodeMsg {
    Core(Input),
    Tail {
        partition: u16,
        epoch: Epoch,
        last: u64,
    },
    AppendDone {
        partition: u16,
        epoch: Epoch,
        seq: Option<u64>,
    },
    SnapshotDone(u16),
}

pub(super) enum Ev {
    Tick(usize, u64),
    Work(usize, u64),
    ToNode(usize, u64, NodeMsg),
    Kv(usize, u64, KvRequest),
    Scan(usize, u64),
    ReadTail(usize, u64, u16, Epoch),
    Append {
        node: usize,
        inc: u64,
        partition: u16,
        epoch: Epoch,
        expected: u64,
        kind: RecordKind,
    },
    Pause,
    Crash,
    Restart(usize),
    Join,
    Leave,
}

impl Ev {
    /// The node (and its incarnation) an event runs on, when it runs on one.
    pub(super) fn on_node(&self) -> Option<(usize, u64)> {
        match self {
            Ev::Tick(n, i) | Ev::Work(n, i) | Ev::ToNode(n, i, _) => Some((*n, *i)),
            _ => None,
        }
    }

    pub(super) fn tag(&self) -> u64 {
        match self {
            Ev::Tick(..) => 1,
            Ev::Work(..) => 2,
            Ev::ToNode(..) => 3,
            Ev::Kv(..) => 4,
            Ev::Scan(..) => 5,
            Ev::ReadTail(..) => 6,
            Ev::Append { .. } => 7,
            Ev::Pause => 8,
            Ev::Crash => 9,
            Ev::Restart(_) => 10,
            Ev::Join => 11,
            Ev::Leave => 12,
        }
    }
}

pub(super) struct Scheduled {
    pub(super) at: u64,
    pub(super) seq: u64,
    pub(super) ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Earliest first in a max-heap.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}
