//! One node's side of partition ownership, as a sans-IO state machine.
//!
//! The shell calls [`Ownership::handle`] with the current time and what
//! happened (a tick, a KV read, the answer to a write, a commit or snapshot
//! finished, an append refused, a request to leave) and performs the
//! [`Action`]s it returns, in order. The core never reads a clock and
//! never touches the network.
//!
//! The policies:
//!
//! * **Registration.** The node creates `nodes.<id>` and renews it by CAS;
//!   the live node list is the set of registrations the bucket still holds.
//! * **Fair share.** After each read of the bucket the node computes its
//!   share ([`fair_share`]); below it, it takes free leases (absent ones, or
//!   ones a previous run of itself left) by CAS; above it, it hands the
//!   excess over gracefully.
//! * **Leases.** A lease is renewed by CAS on its revision. The holder
//!   counts it valid until `sent + ttl − margin` of the last confirmed
//!   write, and stops serving when that passes or a renewal conflicts,
//!   before the bucket lets the lease expire for anyone else.
//! * **Fencing.** The revision of the acquiring write is the term's
//!   [`Epoch`]. Serving starts by reading the journal's tail and appending
//!   an open record after it; every append names the tail it follows, so
//!   once the new term's open record is in, a deposed owner's append is
//!   refused by the stream. A refused append of a valid holder reopens the
//!   term (a deposed owner slipped in before the open record); otherwise
//!   the node stops serving.
//! * **Handover.** Stop intake, let the commit in flight finish, write a
//!   snapshot, stop serving, then delete the lease by CAS.

use super::kv::{Entry, Holder, Key, KvOp, KvRequest, KvResult, Revision};
use super::share::fair_share;
use super::{Epoch, LeaseConfig, NodeId};

mod registration;
mod signals;

use registration::Registration;
pub use signals::{Action, Input};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Intake stopped, waiting for the commit in flight.
    Draining,
    /// Waiting for the snapshot.
    Snapshotting,
}

/// A write in flight: its id and when it was sent.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    op: u64,
    sent_ms: u64,
}

#[derive(Debug, Clone)]
struct Held {
    epoch: Epoch,
    revision: Revision,
    term: u64,
    valid_until_ms: u64,
    last_renew_ms: u64,
    renewing: Option<InFlight>,
    /// When the first renewal after the last confirmed one was sent: a
    /// renewal recognised later by its term was sent no earlier.
    unconfirmed_since_ms: Option<u64>,
    phase: Phase,
}

#[derive(Debug, Clone)]
enum Slot {
    Free,
    Acquiring { write: InFlight, term: u64 },
    Held(Held),
    Releasing { write: InFlight, term: u64 },
}

/// One node's ownership state.
#[derive(Debug, Clone)]
pub struct Ownership {
    cfg: LeaseConfig,
    me: NodeId,
    partitions: u16,
    /// Terms of this run start above this, so they differ from every term
    /// of an earlier run of the same node (the shell passes e.g. the start
    /// time in microseconds).
    term_base: u64,
    terms_used: u64,
    next_op: u64,
    registration: Registration,
    slots: Vec<Slot>,
    /// Registrations seen at the last scan.
    nodes: Vec<NodeId>,
    /// Leases seen at the last scan, adjusted by this node's own answers.
    seen: Vec<Option<Entry>>,
    last_scan_ms: Option<u64>,
    leaving: bool,
    out: Vec<Action>,
}

impl Ownership {
    pub fn new(cfg: LeaseConfig, me: NodeId, partitions: u16, term_base: u64) -> Ownership {
        Ownership {
            cfg,
            me,
            partitions,
            term_base,
            terms_used: 0,
            next_op: 1,
            registration: Registration::Absent,
            slots: vec![Slot::Free; usize::from(partitions)],
            nodes: Vec::new(),
            seen: vec![None; usize::from(partitions)],
            last_scan_ms: None,
            leaving: false,
            out: Vec::new(),
        }
    }

    pub fn node(&self) -> &str {
        &self.me
    }

    /// The epoch to stamp on an append of `partition` now, or `None` when
    /// the node must not append for it (not held, handing over, or the lease
    /// is no longer counted valid).
    pub fn serving_epoch(&self, partition: u16, now_ms: u64) -> Option<Epoch> {
        match self.slots.get(usize::from(partition))? {
            Slot::Held(h) if h.phase == Phase::Serving && now_ms < h.valid_until_ms => {
                Some(h.epoch)
            }
            _ => None,
        }
    }

    /// The partitions held (serving or handing over), with their epochs.
    pub fn held(&self) -> Vec<(u16, Epoch)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(p, s)| match s {
                Slot::Held(h) => Some((p as u16, h.epoch)),
                _ => None,
            })
            .collect()
    }

    /// Whether the node has handed everything over and deregistered.
    pub fn has_left(&self) -> bool {
        matches!(self.registration, Registration::Gone)
    }

    /// Feeds one input at `now_ms`; returns the actions to perform, in order.
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Action> {
        if self.has_left() {
            return Vec::new();
        }
        match input {
            Input::Tick => {}
            Input::Scanned { nodes, leases } => {
                self.nodes = nodes;
                self.seen = vec![None; usize::from(self.partitions)];
                for (p, e) in leases {
                    if let Some(s) = self.seen.get_mut(usize::from(p)) {
                        *s = Some(e);
                    }
                }
                self.rebalance(now_ms);
            }
            Input::KvDone { id, result } => self.on_kv(now_ms, id, result),
            Input::CommitFinished { partition } => {
                if let Some(Slot::Held(h)) = self.slots.get_mut(usize::from(partition)) {
                    if h.phase == Phase::Draining {
                        h.phase = Phase::Snapshotting;
                        self.out.push(Action::Snapshot { partition });
                    }
                }
            }
            Input::SnapshotWritten { partition } => {
                if let Some(Slot::Held(h)) = self.slots.get(usize::from(partition)) {
                    if h.phase == Phase::Snapshotting {
                        let (term, revision) = (h.term, h.revision);
                        self.out.push(Action::StopServing { partition });
                        self.release(now_ms, partition, term, revision);
                    }
                }
            }
            Input::AppendRejected { partition, epoch } => {
                self.on_rejected(now_ms, partition, epoch)
            }
            Input::Leave => {
                self.leaving = true;
                self.rebalance(now_ms);
            }
        }
        self.maintain(now_ms);
        std::mem::take(&mut self.out)
    }

    fn op(&mut self, now_ms: u64, key: Key, op: KvOp) -> InFlight {
        let id = self.next_op;
        self.next_op += 1;
        self.out.push(Action::Kv(KvRequest { id, key, op }));
        InFlight {
            op: id,
            sent_ms: now_ms,
        }
    }

    fn new_term(&mut self) -> u64 {
        self.terms_used += 1;
        self.term_base + self.terms_used
    }

    fn holder(&self, term: u64) -> Holder {
        Holder {
            node: self.me.clone(),
            term,
        }
    }

    fn is_mine(&self, e: &Entry, term: u64) -> bool {
        e.holder.node == self.me && e.holder.term == term
    }

    /// Timeouts, local expiry, renewals, registration and the periodic scan.
    fn maintain(&mut self, now: u64) {
        let timeout = self.cfg.op_timeout_ms;
        let timed_out = |w: &InFlight| now >= w.sent_ms + timeout;
        if self.maintain_registration(now) {
            return;
        }
        // Leases.
        for p in 0..self.partitions {
            let i = usize::from(p);
            match &mut self.slots[i] {
                Slot::Acquiring { write, .. } | Slot::Releasing { write, .. }
                    if timed_out(write) =>
                {
                    self.slots[i] = Slot::Free;
                }
                Slot::Held(h) if now >= h.valid_until_ms => {
                    self.slots[i] = Slot::Free;
                    self.out.push(Action::StopServing { partition: p });
                }
                Slot::Held(h) => {
                    if h.renewing.as_ref().is_some_and(timed_out) {
                        h.renewing = None;
                    }
                    let due =
                        h.renewing.is_none() && now >= h.last_renew_ms + self.cfg.renew_every_ms;
                    let (term, expected) = (h.term, h.revision);
                    if due {
                        let value = self.holder(term);
                        let write = self.op(now, Key::Lease(p), KvOp::Update { value, expected });
                        if let Slot::Held(h) = &mut self.slots[i] {
                            h.renewing = Some(write);
                            h.last_renew_ms = now;
                            h.unconfirmed_since_ms.get_or_insert(now);
                        }
                    }
                }
                _ => {}
            }
        }
        // A leaving node deregisters once every lease is handed over.
        if self.deregister_when_handed_over(now) {
            return;
        }
        if self
            .last_scan_ms
            .is_none_or(|t| now >= t + self.cfg.scan_every_ms)
        {
            self.last_scan_ms = Some(now);
            self.out.push(Action::Scan);
        }
    }

    /// Moves towards the fair share: hands over the excess, takes free
    /// leases for a deficit.
    fn rebalance(&mut self, now: u64) {
        let registered = matches!(self.registration, Registration::Registered { .. });
        // The node counts itself while it runs, even between a lapsed
        // registration and its renewal, so one lost heartbeat does not make
        // it hand everything over.
        let mut nodes = self.nodes.clone();
        if !self.leaving {
            nodes.push(self.me.clone());
        }
        let share = if self.leaving {
            0
        } else {
            fair_share(&nodes, self.partitions, &self.me)
        };
        let counted = |s: &Slot| {
            matches!(s, Slot::Acquiring { .. })
                || matches!(s, Slot::Held(h) if h.phase == Phase::Serving)
        };
        let mine = self.slots.iter().filter(|s| counted(s)).count() as u16;
        if mine > share {
            let mut excess = mine - share;
            for p in (0..self.partitions).rev() {
                if excess == 0 {
                    break;
                }
                if let Slot::Held(h) = &mut self.slots[usize::from(p)] {
                    if h.phase == Phase::Serving {
                        h.phase = Phase::Draining;
                        self.out.push(Action::StopIntake { partition: p });
                        excess -= 1;
                    }
                }
            }
        } else if mine < share && registered && !self.leaving {
            let mut deficit = mine.abs_diff(share);
            let start = start_offset(&self.me, self.partitions);
            for k in 0..self.partitions {
                if deficit == 0 {
                    break;
                }
                let p = (start + k) % self.partitions;
                let i = usize::from(p);
                if !matches!(self.slots[i], Slot::Free) {
                    continue;
                }
                let op = match &self.seen[i] {
                    None => None,
                    Some(e) if e.holder.node == self.me => Some(e.revision),
                    Some(_) => continue,
                };
                let term = self.new_term();
                let value = self.holder(term);
                let op = match op {
                    None => KvOp::Create { value },
                    Some(expected) => KvOp::Update { value, expected },
                };
                let write = self.op(now, Key::Lease(p), op);
                self.slots[i] = Slot::Acquiring { write, term };
                deficit -= 1;
            }
        }
    }

    fn release(&mut self, now: u64, partition: u16, term: u64, expected: Revision) {
        let write = self.op(now, Key::Lease(partition), KvOp::Delete { expected });
        self.slots[usize::from(partition)] = Slot::Releasing { write, term };
    }

    fn on_kv(&mut self, now: u64, id: u64, result: KvResult) {
        if self.on_registration_kv(now, id, &result) {
            return;
        }
        let Some(p) = (0..self.partitions).find(|p| match &self.slots[usize::from(*p)] {
            Slot::Acquiring { write, .. } | Slot::Releasing { write, .. } => write.op == id,
            Slot::Held(h) => h.renewing.is_some_and(|w| w.op == id),
            Slot::Free => false,
        }) else {
            return; // An answer to a write given up on.
        };
        let i = usize::from(p);
        let valid_ms = self.cfg.valid_ms();
        match (self.slots[i].clone(), result) {
            (Slot::Acquiring { write, term }, result) => {
                let revision = match result {
                    KvResult::Ok { revision } => Some(revision),
                    // Our own create or update applied and its answer was lost.
                    KvResult::Conflict { current: Some(e) } if self.is_mine(&e, term) => {
                        Some(e.revision)
                    }
                    KvResult::Conflict { current } => {
                        self.seen[i] = current;
                        None
                    }
                };
                let Some(revision) = revision else {
                    self.slots[i] = Slot::Free;
                    return;
                };
                self.seen[i] = Some(Entry {
                    holder: self.holder(term),
                    revision,
                });
                if self.leaving {
                    self.release(now, p, term, revision);
                    return;
                }
                let epoch = Epoch::of_acquisition(revision);
                self.slots[i] = Slot::Held(Held {
                    epoch,
                    revision,
                    term,
                    valid_until_ms: write.sent_ms + valid_ms,
                    last_renew_ms: write.sent_ms,
                    renewing: None,
                    unconfirmed_since_ms: None,
                    phase: Phase::Serving,
                });
                self.out.push(Action::StartServing {
                    partition: p,
                    epoch,
                });
            }
            (Slot::Held(mut h), result) => {
                let write = h.renewing.take().expect("matched on the renewal's id");
                match result {
                    KvResult::Ok { revision } => {
                        h.revision = revision;
                        h.valid_until_ms = h.valid_until_ms.max(write.sent_ms + valid_ms);
                        h.unconfirmed_since_ms = None;
                    }
                    // An earlier renewal applied and its answer was lost: the
                    // lease is still ours at the newer revision. That write
                    // was sent no earlier than the first unconfirmed renewal
                    // (one sent before the last confirmed write expected an
                    // older revision and cannot have applied after it).
                    KvResult::Conflict { current: Some(e) } if self.is_mine(&e, h.term) => {
                        h.revision = e.revision;
                        if let Some(since) = h.unconfirmed_since_ms.take() {
                            h.valid_until_ms = h.valid_until_ms.max(since + valid_ms);
                        }
                    }
                    KvResult::Conflict { current } => {
                        self.seen[i] = current;
                        self.slots[i] = Slot::Free;
                        self.out.push(Action::StopServing { partition: p });
                        return;
                    }
                }
                self.seen[i] = Some(Entry {
                    holder: self.holder(h.term),
                    revision: h.revision,
                });
                self.slots[i] = Slot::Held(h);
            }
            (Slot::Releasing { term, .. }, result) => match result {
                KvResult::Conflict { current: Some(e) } if self.is_mine(&e, term) => {
                    self.release(now, p, term, e.revision);
                }
                KvResult::Ok { .. } => {
                    self.seen[i] = None;
                    self.slots[i] = Slot::Free;
                }
                KvResult::Conflict { current } => {
                    self.seen[i] = current;
                    self.slots[i] = Slot::Free;
                }
            },
            (Slot::Free, _) => {}
        }
    }

    fn on_rejected(&mut self, now: u64, partition: u16, epoch: Epoch) {
        let i = usize::from(partition);
        let Some(Slot::Held(h)) = self.slots.get(i) else {
            return;
        };
        if h.epoch != epoch {
            return;
        }
        if now >= h.valid_until_ms {
            self.slots[i] = Slot::Free;
            self.out.push(Action::StopServing { partition });
        } else if h.phase == Phase::Serving {
            // A deposed owner appended between this term's read of the tail
            // and its open record: read the tail again and reopen.
            self.out.push(Action::StartServing { partition, epoch });
        }
    }
}

/// Where a node starts looking for free leases, spread by its id so that
/// nodes starting together do not all race for partition 0.
fn start_offset(me: &str, partitions: u16) -> u16 {
    if partitions == 0 {
        return 0;
    }
    let h = me.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (h % u64::from(partitions)) as u16
}
