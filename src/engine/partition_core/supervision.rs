//! Supervision decisions of the partition core: an actor that crashed or
//! could not start is started again from storage with the inputs it had
//! not handled, while the restart budget lasts; past it the workflow is
//! parked, and one whose actor cannot even start is remembered.

use std::collections::VecDeque;

use super::{Action, CorePlant, Init, Parked, Parking, PartitionCore, Routable};

impl<M: Routable, S, T> PartitionCore<M, S, T> {
    /// The actor of `id` crashed with `error`: restarted from storage with
    /// the messages it had not handled, or the workflow is parked past the
    /// restart budget.
    /// `handled`: the messages it had handled.
    pub fn crashed(&mut self, id: &str, error: String, handled: u64) {
        self.resident = self.resident.saturating_sub(1);
        if self.count_crash(id, &error) {
            self.restart(id, true, Some(handled));
        } else {
            self.give_up(id, &error, false);
        }
        // A restart that ended in parking freed the slot too.
        self.drain_deferred();
    }

    /// The actor of the last [`Action::Spawn`] for `id` could not start
    /// (its load panicked); `undelivered` are the messages it was to take.
    /// That counts as a crash: the messages wait and it is started again
    /// from storage while the budget lasts, then the workflow is parked.
    pub fn spawn_failed(&mut self, id: &str, error: String, undelivered: Vec<M>) {
        self.resident = self.resident.saturating_sub(1);
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let error = if entry.started_before {
            format!("its actor could not be started again: {error}")
        } else {
            format!("its actor could not be started: {error}")
        };
        entry.started_before = true;
        entry.running = false;
        entry.spawning = false;
        entry.routed = 0;
        entry.acked = 0;
        entry.unacked.clear();
        let mut queued: VecDeque<M> = undelivered.into();
        queued.extend(entry.queued.drain(..));
        entry.queued = queued;
        if self.count_crash(id, &error) {
            self.restart(id, true, None);
        } else {
            self.give_up(id, &error, true);
        }
        self.drain_deferred();
    }

    /// How parking `id` went ([`Action::Park`]). A workflow whose actor
    /// could not start is then remembered, and its waiting messages are
    /// answered as later ones will be ([`Action::Refuse`]); other messages
    /// are dropped.
    pub fn parked(&mut self, id: &str, outcome: Parked) {
        let Some(p) = self.parking.remove(id) else {
            return;
        };
        if !p.unstartable {
            self.actions.push_back(Action::Drop(p.queued.into()));
            return;
        }
        let why = match outcome {
            Parked::Written => format!("parked after {} crashes: {}", p.restarts, p.error),
            // Never created (a start whose actor never started): nothing to remember.
            Parked::Nothing { exists: false } => {
                self.actions.push_back(Action::Drop(p.queued.into()));
                return;
            }
            Parked::Nothing { exists: true } => {
                format!("not served after {} crashes: {}", p.restarts, p.error)
            }
            // Its load panics here too (the usual reason an actor cannot
            // start): it stays as it is in storage, and no actor will run
            // it in this run either.
            Parked::Failed(e) => format!(
                "not served after {} crashes: {}; parking it failed: {e}",
                p.restarts, p.error
            ),
        };
        self.unstartable.insert(id, why.clone());
        for msg in p.queued {
            self.actions.push_back(Action::Refuse {
                id: id.to_string(),
                msg,
                why: why.clone(),
            });
        }
    }

    /// (Re)starts the actor of an existing entry with what waits for it.
    /// After a crash (`from_storage`) any cached state is dropped and the
    /// messages the dead actor had not handled go first (`handled` says how
    /// far it got; `None` when it never ran).
    pub(super) fn restart(&mut self, id: &str, from_storage: bool, handled: Option<u64>) {
        let init = if from_storage {
            self.cache.remove(id);
            Init::Load
        } else {
            self.init_for(id)
        };
        let forget = self.plant == Some(CorePlant::ForgetUnhandledOnCrash);
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        // Settle what the previous actor finished before it is replaced.
        if let Some(handled) = handled {
            entry.sync_acks(handled);
        }
        entry.started_before = true;
        let mut redo: Vec<M> = Vec::new();
        if from_storage && !forget {
            // What the dead actor had not finished, the one that killed it included.
            redo.extend(entry.unacked.drain(..).flatten().map(M::redeliver));
        }
        entry.routed = 0;
        entry.acked = 0;
        entry.unacked.clear();
        redo.extend(entry.queued.drain(..));
        self.spawn(id, init, redo);
    }

    /// Counts a crash of `id`'s actor; true while the restart budget lasts.
    fn count_crash(&mut self, id: &str, error: &str) -> bool {
        let n = self.restarts.entry(id.to_string()).or_insert(0);
        *n += 1;
        let restarts = *n;
        self.actions.push_back(Action::Crashed {
            id: id.to_string(),
            restarts,
            error: error.to_string(),
        });
        restarts <= self.cfg.restart_budget
    }

    /// Out of budget: the workflow is parked as failed with the error; its
    /// queued messages wait for [`parked`](Self::parked).
    ///
    /// When its actor could not even start (`unstartable`), the id is
    /// remembered: later messages are answered without an actor
    /// ([`Action::Refuse`]) for the rest of this run instead of each one
    /// spending the whole restart budget again. A workflow parked after its
    /// running actor kept crashing (a poison input) can still start, so it
    /// is served as usual.
    fn give_up(&mut self, id: &str, error: &str, unstartable: bool) {
        let restarts = self.restarts.remove(id).unwrap_or(0);
        self.cache.remove(id);
        let queued = self
            .entries
            .remove(id)
            .map(|entry| entry.queued)
            .unwrap_or_default();
        self.parking.insert(
            id.to_string(),
            Parking {
                unstartable,
                restarts,
                error: error.to_string(),
                queued,
            },
        );
        self.actions.push_back(Action::Park {
            id: id.to_string(),
            reason: format!("parked after {restarts} crashes: {error}"),
            unstartable,
        });
    }
}
