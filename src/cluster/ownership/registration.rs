//! The node's registration in the bucket: created at start, renewed by CAS
//! as its heartbeat, replaced when an earlier run of the same node left it,
//! deleted when the node leaves.

use super::super::kv::{Key, KvOp, KvResult, Revision};
use super::{Action, InFlight, Ownership, Slot};

#[derive(Debug, Clone)]
pub(super) enum Registration {
    Absent,
    Registering {
        write: InFlight,
        term: u64,
    },
    Registered {
        term: u64,
        revision: Revision,
        valid_until_ms: u64,
        last_renew_ms: u64,
        renewing: Option<InFlight>,
    },
    Deregistering {
        write: InFlight,
    },
    Gone,
}

impl Ownership {
    /// Creates, renews or gives up the registration as due. True when the
    /// node has now left (nothing more to maintain).
    pub(super) fn maintain_registration(&mut self, now: u64) -> bool {
        let timeout = self.cfg.op_timeout_ms;
        let timed_out = |w: &InFlight| now >= w.sent_ms + timeout;
        match &mut self.registration {
            Registration::Absent if !self.leaving => {
                let term = self.new_term();
                let value = self.holder(term);
                let write = self.op(now, Key::Node(self.me.clone()), KvOp::Create { value });
                self.registration = Registration::Registering { write, term };
            }
            Registration::Registering { write, .. } if timed_out(write) => {
                self.registration = Registration::Absent;
            }
            Registration::Registered {
                term,
                revision,
                valid_until_ms,
                last_renew_ms,
                renewing,
            } => {
                if now >= *valid_until_ms {
                    self.registration = Registration::Absent;
                } else {
                    if renewing.as_ref().is_some_and(timed_out) {
                        *renewing = None;
                    }
                    if renewing.is_none() && now >= *last_renew_ms + self.cfg.renew_every_ms {
                        let (term, expected) = (*term, *revision);
                        let value = self.holder(term);
                        let write = self.op(
                            now,
                            Key::Node(self.me.clone()),
                            KvOp::Update { value, expected },
                        );
                        if let Registration::Registered {
                            renewing,
                            last_renew_ms,
                            ..
                        } = &mut self.registration
                        {
                            *renewing = Some(write);
                            *last_renew_ms = now;
                        }
                    }
                }
            }
            Registration::Deregistering { write } if timed_out(write) => {
                self.registration = Registration::Gone;
                self.out.push(Action::Left);
                return true;
            }
            _ => {}
        }
        false
    }

    /// A leaving node deregisters once every lease is handed over. True
    /// when the node has now left.
    pub(super) fn deregister_when_handed_over(&mut self, now: u64) -> bool {
        if self.leaving && self.slots.iter().all(|s| matches!(s, Slot::Free)) {
            match &self.registration {
                Registration::Registered { revision, .. } => {
                    let expected = *revision;
                    let write = self.op(now, Key::Node(self.me.clone()), KvOp::Delete { expected });
                    self.registration = Registration::Deregistering { write };
                }
                Registration::Absent | Registration::Registering { .. } => {
                    self.registration = Registration::Gone;
                    self.out.push(Action::Left);
                    return true;
                }
                _ => {}
            }
        }
        false
    }

    /// Handles the answer when it belongs to the registration.
    pub(super) fn on_registration_kv(&mut self, now: u64, id: u64, result: &KvResult) -> bool {
        let valid_ms = self.cfg.valid_ms();
        match self.registration.clone() {
            Registration::Registering { write, term } if write.op == id => {
                let revision = match result {
                    KvResult::Ok { revision } => Some(*revision),
                    KvResult::Conflict { current: Some(e) } if self.is_mine(e, term) => {
                        Some(e.revision)
                    }
                    // A previous run of this node left its registration:
                    // replace it (the data directory lock means that run is
                    // gone).
                    KvResult::Conflict { current: Some(e) } => {
                        let value = self.holder(term);
                        let write = self.op(
                            now,
                            Key::Node(self.me.clone()),
                            KvOp::Update {
                                value,
                                expected: e.revision,
                            },
                        );
                        self.registration = Registration::Registering { write, term };
                        None
                    }
                    KvResult::Conflict { current: None } => {
                        self.registration = Registration::Absent;
                        None
                    }
                };
                if let Some(revision) = revision {
                    self.registration = Registration::Registered {
                        term,
                        revision,
                        valid_until_ms: write.sent_ms + valid_ms,
                        last_renew_ms: write.sent_ms,
                        renewing: None,
                    };
                }
                true
            }
            Registration::Registered {
                term,
                valid_until_ms,
                renewing: Some(write),
                last_renew_ms,
                ..
            } if write.op == id => {
                match result {
                    KvResult::Ok { revision } => {
                        self.registration = Registration::Registered {
                            term,
                            revision: *revision,
                            valid_until_ms: valid_until_ms.max(write.sent_ms + valid_ms),
                            last_renew_ms,
                            renewing: None,
                        };
                    }
                    KvResult::Conflict { current: Some(e) } if self.is_mine(e, term) => {
                        self.registration = Registration::Registered {
                            term,
                            revision: e.revision,
                            valid_until_ms,
                            last_renew_ms,
                            renewing: None,
                        };
                    }
                    KvResult::Conflict { .. } => self.registration = Registration::Absent,
                }
                true
            }
            Registration::Deregistering { write } if write.op == id => {
                self.registration = Registration::Gone;
                self.out.push(Action::Left);
                true
            }
            _ => false,
        }
    }
}
