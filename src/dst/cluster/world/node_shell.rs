//! A node's shell in the simulation: it serves the partitions its core
//! hands it (read the tail, append the open record, then one commit at a
//! time), feeds the core's inputs and performs its actions.

use std::collections::VecDeque;

use super::events::{Ev, NodeMsg};
use super::{Life, World};
use crate::cluster::{Action, Epoch, Input, RecordKind};

/// The shell's view of one partition it serves.
pub(super) struct Serve {
    epoch: Epoch,
    /// The journal's last sequence as this term knows it.
    tail: Option<u64>,
    /// Reading the tail or appending the open record.
    opening: bool,
    in_flight: bool,
    intake: bool,
    snapshotted: bool,
}

impl World<'_> {
    /// Starts a commit of every partition that can take one.
    pub(super) fn work(&mut self, n: usize) {
        let ready: Vec<(u16, Epoch, u64)> = self.nodes[n]
            .serving
            .iter()
            .filter(|(_, s)| s.intake && !s.opening && !s.in_flight)
            .filter_map(|(p, s)| s.tail.map(|t| (*p, s.epoch, t)))
            .collect();
        for (partition, epoch, tail) in ready {
            if self.nodes[n].core.serving_epoch(partition, self.now) != Some(epoch) {
                continue;
            }
            let mut send_at = self.now;
            let zombie = self.now < self.cfg.fault_window_ms
                && self.rng.chance(self.cfg.pause_before_append_rate);
            if zombie {
                // Checked valid, then stopped for longer than a lease
                // before the append leaves (a GC pause, SIGSTOP).
                let ttl = self.cfg.lease.ttl_ms;
                let ms = self.rng.range(ttl + 1, self.cfg.pause_max_ms.max(2 * ttl));
                self.pause(n, ms);
                self.stats.zombie_pauses += 1;
                send_at = self.nodes[n].paused_until;
            }
            self.nodes[n]
                .serving
                .get_mut(&partition)
                .expect("ready")
                .in_flight = true;
            let ev = Ev::Append {
                node: n,
                inc: self.nodes[n].inc,
                partition,
                epoch,
                expected: tail,
                kind: RecordKind::Commit,
            };
            let at = send_at + self.rng.range(1, self.cfg.delay_max_ms);
            self.push(at, ev);
            if zombie {
                break;
            }
        }
    }

    pub(super) fn deliver(&mut self, n: usize, msg: NodeMsg) {
        match msg {
            NodeMsg::Core(input) => self.feed(n, input),
            NodeMsg::Tail {
                partition,
                epoch,
                last,
            } => {
                let valid = self.nodes[n].core.serving_epoch(partition, self.now) == Some(epoch);
                let inc = self.nodes[n].inc;
                let Some(s) = self.nodes[n].serving.get_mut(&partition) else {
                    return;
                };
                if s.epoch != epoch || !s.opening || s.in_flight || !valid {
                    return;
                }
                s.in_flight = true;
                let ev = Ev::Append {
                    node: n,
                    inc,
                    partition,
                    epoch,
                    expected: last,
                    kind: RecordKind::Open,
                };
                let at = self.delay();
                self.push(at, ev);
            }
            NodeMsg::AppendDone {
                partition,
                epoch,
                seq,
            } => {
                let node = &mut self.nodes[n];
                if let Some(seq) = seq {
                    self.acked.push((partition, seq, epoch, node.id.clone()));
                }
                let Some(s) = node.serving.get_mut(&partition) else {
                    return;
                };
                if s.epoch != epoch {
                    return;
                }
                s.in_flight = false;
                let drained = !s.intake;
                let mut inputs = Vec::new();
                match seq {
                    Some(seq) => {
                        s.tail = Some(seq);
                        s.opening = false;
                    }
                    None => inputs.push(Input::AppendRejected { partition, epoch }),
                }
                if drained {
                    inputs.push(Input::CommitFinished { partition });
                }
                for i in inputs {
                    self.feed(n, i);
                }
            }
            NodeMsg::SnapshotDone(partition) => {
                if let Some(s) = self.nodes[n].serving.get_mut(&partition) {
                    s.snapshotted = true;
                }
                self.feed(n, Input::SnapshotWritten { partition });
            }
        }
    }

    /// Feeds an input to node `n`'s core and performs the actions, feeding
    /// back what the shell answers at once.
    pub(super) fn feed(&mut self, n: usize, input: Input) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            if self.nodes[n].life != Life::Up {
                return;
            }
            let actions = self.nodes[n].core.handle(self.now, input);
            for a in actions {
                self.perform(n, a, &mut inputs);
            }
        }
    }

    fn perform(&mut self, n: usize, action: Action, follow: &mut VecDeque<Input>) {
        let inc = self.nodes[n].inc;
        match action {
            Action::Kv(req) => self.send_lossy(Ev::Kv(n, inc, req)),
            Action::Scan => self.send_lossy(Ev::Scan(n, inc)),
            Action::StartServing { partition, epoch } => {
                self.nodes[n].serving.insert(
                    partition,
                    Serve {
                        epoch,
                        tail: None,
                        opening: true,
                        in_flight: false,
                        intake: true,
                        snapshotted: false,
                    },
                );
                let at = self.delay();
                self.push(at, Ev::ReadTail(n, inc, partition, epoch));
            }
            Action::StopIntake { partition } => {
                let busy = match self.nodes[n].serving.get_mut(&partition) {
                    Some(s) => {
                        s.intake = false;
                        s.in_flight
                    }
                    None => false,
                };
                if !busy {
                    follow.push_back(Input::CommitFinished { partition });
                }
            }
            Action::Snapshot { partition } => {
                let at = self.now + self.rng.range(1, self.cfg.snapshot_max_ms);
                self.push(at, Ev::ToNode(n, inc, NodeMsg::SnapshotDone(partition)));
            }
            Action::StopServing { partition } => {
                let id = self.nodes[n].id.clone();
                if let Some(s) = self.nodes[n].serving.remove(&partition) {
                    if s.snapshotted {
                        self.stats.handovers += 1;
                        if s.in_flight {
                            self.violations.push(format!(
                                "{id} handed partition {partition} over with a commit in flight"
                            ));
                        }
                    } else {
                        self.stats.lease_losses += 1;
                    }
                }
            }
            Action::Left => self.nodes[n].life = Life::Gone,
        }
    }
}
