//! The simulated node's upkeep: the partition tick (the core's release and
//! passivation, due timers and deadlines, the retention sweep and purge),
//! parking, and answers for workflows whose actor cannot start.

use std::sync::Arc;

use super::{Effect, Progress, SimMsg, SimNode};
use crate::dst::check::Ack;
use crate::engine::partition::purge_ops;
use crate::engine::partition_core::{Parked, SweepPoll};
use crate::engine::workflow_actor::{InputError, StartReply};
use crate::engine::{recovery, transition};
use crate::workflow::Input;

impl SimNode {
    pub(super) fn park(&mut self, p: usize, id: &str, reason: String) -> Parked {
        let wf = match recovery::load(&self.ctx, p as u16, id) {
            Ok(Some(wf)) => wf,
            Ok(None) => return Parked::Nothing { exists: false },
            Err(e) => return Parked::Failed(e),
        };
        match transition::prepare_park(&self.ctx, p as u16, wf, reason) {
            Ok(Some(mut plan)) => {
                let ops = std::mem::take(&mut plan.prepared.ops);
                if let Err(e) = self.ctx.store.storage().write(&ops, true) {
                    return Parked::Failed(e.to_string());
                }
                let shared = self.parts[p].shared.clone();
                transition::park_committed(&self.ctx, &shared, plan);
                self.collect_sent();
                Parked::Written
            }
            // Already terminal: nothing to write, but it exists.
            Ok(None) => Parked::Nothing { exists: true },
            Err(e) => Parked::Failed(e),
        }
    }

    /// Answers a message for a workflow whose actor cannot start.
    pub(super) fn refuse(&mut self, p: usize, id: &str, msg: SimMsg) {
        match msg {
            SimMsg::Start { by, .. } => {
                // As the production partition answers it: the stored
                // workflow, or refused.
                let answer = match recovery::load(&self.ctx, p as u16, id) {
                    Ok(Some(wf)) => Ok((
                        StartReply {
                            id: id.to_string(),
                            status: wf.status,
                            created: false,
                        },
                        Some(wf),
                    )),
                    Ok(None) => Err(InputError::Rejected(format!(
                        "workflow {id}: its actor cannot start"
                    ))),
                    Err(e) => Err(InputError::Rejected(e)),
                };
                match answer {
                    Ok((reply, wf)) => self.answer_start(by, Ok(reply), wf.as_ref()),
                    Err(e) => self.answer_start(by, Err(e), None),
                }
            }
            SimMsg::Input {
                ack: Some((task_id, _)),
                ..
            } => self.effects.push(Effect::Ack {
                task_id,
                ack: Ack::Rejected,
            }),
            SimMsg::Input { .. } => {}
        }
    }

    /// The partition tick: the core's (release, passivation), then due
    /// durable timers and expired attempt deadlines become inputs, then a
    /// share of the retention sweep. Returns the timeouts reported.
    pub fn tick(&mut self) -> u64 {
        let now = self.ctx.clock.now_ms();
        let max = self.ctx.config.timer_batch_max;
        let mut timeouts = 0;
        for p in 0..self.parts.len() {
            {
                let part = &mut self.parts[p];
                let mut progress = Progress {
                    shared: &part.shared,
                    actors: &mut part.actors,
                };
                part.core.tick(now, &mut progress);
            }
            self.perform(p);
            let (timers, expired) = {
                let mut t = self.parts[p].shared.lock();
                (
                    t.schedule.timers.pop_due(now, max),
                    t.schedule.liveness.expired(now, max),
                )
            };
            for (due, id, timer) in timers {
                let msg = SimMsg::Input {
                    input: Arc::new(Input::TimerFired(timer.clone())),
                    fired: Some((due, timer)),
                    ack: None,
                };
                self.route(id, msg);
            }
            for (id, task_id, timeout) in expired {
                timeouts += 1;
                let msg = SimMsg::Input {
                    input: Arc::new(Input::TaskTimedOut { task_id, timeout }),
                    fired: None,
                    ack: None,
                };
                self.route(id, msg);
            }
            self.sweep(p, now);
        }
        timeouts
    }

    /// One tick's share of partition `p`'s retention round, purged with a
    /// synced write (the production purge awaits its commit too).
    fn sweep(&mut self, p: usize, now: u64) {
        if !self.parts[p].core.sweep_begin(now) {
            return;
        }
        let store = self.ctx.store.clone();
        loop {
            match self.parts[p].core.sweep_poll(now) {
                SweepPoll::Scan { code, after, n } => {
                    let page: Result<Vec<(String, crate::storage::StatusEntry)>, _> = match &after {
                        None => store.list_status(p as u16, code, n),
                        Some(a) => store.list_status_after(p as u16, code, a, n),
                    };
                    match page {
                        Ok(page) => {
                            let page = page
                                .into_iter()
                                .map(|(id, e)| (id, e.updated_at_ms))
                                .collect();
                            self.parts[p].core.sweep_feed(page, now);
                        }
                        Err(_) => {
                            self.parts[p].core.sweep_failed(now);
                            return;
                        }
                    }
                }
                SweepPoll::Done(doomed) => {
                    if !doomed.is_empty() {
                        self.purge(p, doomed);
                    }
                    return;
                }
            }
        }
    }

    fn purge(&mut self, p: usize, doomed: Vec<(String, u8)>) {
        let Ok((ops, ids)) = purge_ops(&self.ctx.store, p as u16, &doomed) else {
            return;
        };
        for (id, _) in &doomed {
            if let Ok(records) = self.ctx.store.load_journal(p as u16, id, 1) {
                self.effects.push(Effect::Purging {
                    id: id.clone(),
                    records,
                });
            }
        }
        if self.ctx.store.storage().write(&ops, true).is_err() {
            return;
        }
        let purged: Vec<String> = ids.iter().cloned().collect();
        self.parts[p].core.purged(&purged);
        self.parts[p]
            .shared
            .lock()
            .schedule
            .timers
            .disarm_where(|id| ids.contains(id));
    }

    /// Engine time of the next timer or deadline, if any.
    pub fn next_due(&self) -> Option<u64> {
        self.parts
            .iter()
            .filter_map(|part| {
                let t = part.shared.lock();
                match (t.schedule.timers.next_due(), t.schedule.liveness.next_due()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }

    /// A partition core waits for a tick (held tasks, a slot, passivation).
    pub fn wants_tick(&self) -> bool {
        self.parts.iter().any(|part| part.core.wants_tick())
    }

    /// Armed timers and watched attempts, for the horizon report.
    pub fn pending_counts(&self) -> (usize, usize) {
        self.parts.iter().fold((0, 0), |(a, b), part| {
            let t = part.shared.lock();
            (a + t.schedule.timers.len(), b + t.schedule.liveness.len())
        })
    }
}
