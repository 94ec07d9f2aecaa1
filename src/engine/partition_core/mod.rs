//! The partition's decisions as a sans-IO state machine: routing by
//! workflow id, the resident cap and deferred starts, passivation of idle
//! actors and the cache of their states, supervision (restart from storage,
//! the restart budget, parking, remembering workflows whose actor cannot
//! start), the backlog of held tasks and the retention sweep.
//!
//! The core holds no actor, no storage, no clock and no runtime. The shell
//! (the ractor [`PartitionActor`](super::partition::PartitionActor) in
//! production, the deterministic simulator in tests) calls a `handle`
//! method for each thing that happened, then performs the [`Action`]s it
//! [`poll`](PartitionCore::poll)s, in order, reporting back what only it
//! can know (an actor that failed to start, how a parking went). The
//! simulator drives this same code, so its seeds cover these policies.
//!
//! Time comes in as `now` (engine clock, unix ms). Messages are opaque:
//! [`Routable`] says which ones are kept for re-delivery after a crash.

mod backlog;
mod cache;
mod retention;
mod supervision;
mod unstartable;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

pub use backlog::{Backlog, Release};
pub use cache::StateCache;
pub use retention::{Sweep, SweepPoll, SWEEP_PAGE, TERMINAL};
pub use unstartable::Unstartable;

use crate::engine::RetentionConfig;
use rustc_hash::FxHashMap as FastMap;

/// A message routed to a workflow actor, as the core sees it.
pub trait Routable: Sized {
    /// The copy kept until the actor has handled the message.
    type Replay: Clone;
    /// The copy to re-deliver to a successor if the actor crashes before it
    /// handled the message; `None` for a message that is not re-delivered
    /// (a start or describe: the dropped reply port tells its sender).
    fn replay(&self) -> Option<Self::Replay>;
    /// The message re-delivered from its copy (it has no reply port).
    fn redeliver(copy: Self::Replay) -> Self;
}

/// What the shell can tell the core about its actors' progress.
pub trait ActorProgress {
    /// Messages the current actor of `id` has handled so far.
    fn handled(&self, id: &str) -> u64;
    /// Ids whose actors finished a message since the last call, each with
    /// its handled count read after it was unlisted (an actor lists itself
    /// again when it handles another message).
    fn take_idle(&mut self) -> Vec<(String, u64)>;
    /// Ids of workflows that reached a terminal status since the last call.
    fn take_finished(&mut self) -> Vec<String>;
}

/// How a spawned actor gets its state.
#[derive(Debug)]
pub enum Init<S> {
    /// From the cache of passivated states.
    State(Box<S>),
    /// From storage (snapshot + journal tail); may find nothing (a new id).
    Load,
}

/// How parking a workflow went (the shell writes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parked {
    /// The parking transition was written.
    Written,
    /// Nothing to write: already terminal, or (`exists == false`) never
    /// created.
    Nothing { exists: bool },
    /// Parking failed (its load panicked, say): why.
    Failed(String),
}

/// What the shell must do, in order.
pub enum Action<M, S, T> {
    /// Start an actor for `id` and hand it `deliver`, in order; then report
    /// [`PartitionCore::spawned`], or [`PartitionCore::spawn_failed`] with
    /// those messages if it cannot start.
    Spawn {
        id: String,
        init: Init<S>,
        deliver: Vec<M>,
    },
    /// Hand `msg` to the running actor of `id`. If it is gone, report
    /// [`PartitionCore::undelivered`].
    Deliver { id: String, msg: M },
    /// Passivate the idle actor of `id`; its state comes back with
    /// [`PartitionCore::stopped`].
    Stop { id: String },
    /// A crash of `id`'s actor was counted (`restarts` so far).
    Crashed {
        id: String,
        restarts: u32,
        error: String,
    },
    /// Park `id` as failed with `reason`, then report
    /// [`PartitionCore::parked`]. `unstartable`: its actor could not even
    /// start (the shell then also tells whether the workflow exists).
    Park {
        id: String,
        reason: String,
        unstartable: bool,
    },
    /// Answer `msg` without an actor: `id`'s actor cannot start (`why`).
    Refuse { id: String, msg: M, why: String },
    /// Drop these messages: their reply ports tell their senders.
    Drop(Vec<M>),
    /// Send held tasks now.
    Send(Release<T>),
}

/// Limits of one partition (its share of the engine's).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub resident_cap: usize,
    /// Released backlog workflows not ended yet (this partition's share of
    /// `in_progress_max`).
    pub in_progress_cap: usize,
    pub state_cache_max: usize,
    pub passivate_idle_ms: u64,
    pub restart_budget: u32,
    pub unstartable_max: usize,
    pub retention: RetentionConfig,
}

impl CoreConfig {
    /// One partition's share of the engine's limits.
    pub fn for_partition(cfg: &crate::engine::EngineConfig) -> Self {
        let parts = usize::from(cfg.partitions.max(1));
        CoreConfig {
            resident_cap: cfg.resident_max.div_ceil(parts).max(1),
            in_progress_cap: cfg.in_progress_max.div_ceil(parts).max(1),
            state_cache_max: cfg.state_cache_max.div_ceil(parts),
            passivate_idle_ms: cfg.passivate_idle_ms,
            restart_budget: cfg.restart_budget,
            unstartable_max: cfg.unstartable_max.div_ceil(parts).max(1),
            retention: cfg.retention.clone(),
        }
    }
}

/// Test-only planted bugs of the core, to show that the simulator catches
/// a broken policy. Production never sets one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorePlant {
    /// A restarted actor is not given the messages its crashed
    /// predecessor had not handled.
    ForgetUnhandledOnCrash,
}

/// One workflow known to the partition: it has an actor, or messages that
/// wait for one.
struct Entry<M: Routable> {
    /// An actor runs for it (its start was confirmed).
    running: bool,
    /// An actor start was asked for and not yet confirmed; messages wait
    /// in `queued` meanwhile.
    spawning: bool,
    /// A stop was requested; messages wait in `queued` for the successor.
    stopping: bool,
    /// An actor was started for it before (for the error text).
    started_before: bool,
    routed: u64,
    acked: u64,
    /// Copies of the routed messages not yet handled, oldest first.
    unacked: VecDeque<Option<M::Replay>>,
    queued: VecDeque<M>,
}

impl<M: Routable> Entry<M> {
    fn new() -> Self {
        Entry {
            running: false,
            spawning: false,
            stopping: false,
            started_before: false,
            routed: 0,
            acked: 0,
            unacked: VecDeque::new(),
            queued: VecDeque::new(),
        }
    }

    /// Catches up with what the actor handled and drops those copies.
    fn sync_acks(&mut self, handled: u64) {
        let newly = handled.saturating_sub(self.acked);
        for _ in 0..newly {
            self.unacked.pop_front();
        }
        self.acked = self.acked.max(handled);
    }

    /// Nothing routed to the actor is unhandled and nothing waits for it.
    fn is_idle(&self) -> bool {
        self.running
            && !self.spawning
            && !self.stopping
            && self.acked == self.routed
            && self.queued.is_empty()
    }

    fn record(&mut self, msg: &M) {
        self.routed += 1;
        self.unacked.push_back(msg.replay());
    }
}

/// Messages of a workflow being parked, held until the shell says how it went.
struct Parking<M> {
    unstartable: bool,
    restarts: u32,
    error: String,
    queued: VecDeque<M>,
}

/// The partition's decisions. `M`: messages to workflow actors; `S`: the
/// state a passivated actor leaves behind; `T`: a held task.
pub struct PartitionCore<M: Routable, S, T> {
    cfg: CoreConfig,
    entries: FastMap<String, Entry<M>>,
    /// Actors running or starting.
    resident: usize,
    cache: StateCache<S>,
    /// Ids with queued messages, waiting for a resident slot.
    deferred: VecDeque<String>,
    /// Idle actors in the order they went idle: (passivate after, id,
    /// messages handled when queued). Stale entries are skipped when popped.
    idle: VecDeque<(u64, String, u64)>,
    /// Crashes per workflow, against the restart budget.
    restarts: FastMap<String, u32>,
    unstartable: Unstartable,
    parking: FastMap<String, Parking<M>>,
    backlog: Backlog<T>,
    sweep: Sweep,
    actions: VecDeque<Action<M, S, T>>,
    plant: Option<CorePlant>,
}

impl<M: Routable, S, T> PartitionCore<M, S, T> {
    pub fn new(cfg: CoreConfig) -> Self {
        PartitionCore {
            cache: StateCache::new(cfg.state_cache_max),
            unstartable: Unstartable::new(cfg.unstartable_max.max(1)),
            cfg,
            entries: FastMap::default(),
            resident: 0,
            deferred: VecDeque::new(),
            idle: VecDeque::new(),
            restarts: FastMap::default(),
            parking: FastMap::default(),
            backlog: Backlog::new(),
            sweep: Sweep::default(),
            actions: VecDeque::new(),
            plant: None,
        }
    }

    /// Plants a bug (tests of the simulator only).
    pub fn plant(&mut self, plant: Option<CorePlant>) {
        self.plant = plant;
    }

    /// The next thing to do, in order.
    pub fn poll(&mut self) -> Option<Action<M, S, T>> {
        self.actions.pop_front()
    }

    /// Actors running or starting.
    pub fn resident(&self) -> usize {
        self.resident
    }

    /// Backlog workflows `(held, in progress)`: held ones have not had their
    /// tasks sent; in-progress ones were released and have not ended.
    pub fn backlog_counts(&self) -> (usize, usize) {
        (self.backlog.held_len(), self.backlog.released_len())
    }

    /// Something waits for a tick: held tasks, ids waiting for a slot, or
    /// idle actors to passivate.
    pub fn wants_tick(&self) -> bool {
        self.backlog.held_len() > 0 || !self.deferred.is_empty() || !self.idle.is_empty()
    }

    /// `id` has an actor, queued messages or a remembered failure here
    /// (a bulk accept counts it as existing).
    pub fn knows(&self, id: &str) -> bool {
        self.entries.contains_key(id) || self.unstartable.get(id).is_some()
    }

    /// Keeps a state warm (a recovered or just accepted workflow).
    pub fn cache_put(&mut self, id: String, state: Box<S>) {
        self.cache.put(id, state);
    }

    /// Holds owed tasks of `id`, a workflow of `pipeline`, until the
    /// backlog releases them.
    pub fn hold(&mut self, id: String, pipeline: &str, tasks: Vec<T>, resend: bool) {
        if !tasks.is_empty() {
            self.backlog.hold(id, pipeline, tasks, resend);
        }
    }

    /// `pipeline`'s workflows in progress at most in this partition (its
    /// share of `[pipeline] in_progress_max`; `None`: no cap of its own).
    pub fn set_pipeline_cap(&mut self, pipeline: &str, cap: Option<usize>) {
        self.backlog.set_cap(pipeline, cap);
    }

    /// Released backlog workflows not ended yet, per pipeline.
    pub fn in_progress_by_pipeline(&self) -> &FastMap<String, usize> {
        self.backlog.released_by_pipeline()
    }

    /// Lets the backlog release (after a bulk accept or a recovery).
    pub fn enable_release(&mut self, progress: &mut dyn ActorProgress) {
        self.backlog.enable();
        self.release(progress);
    }

    /// Sends `msg` to the workflow's actor, starting one if needed, or
    /// queues it while the actor is stopping or no resident slot is free.
    pub fn route(&mut self, id: String, msg: M, now: u64, progress: &mut dyn ActorProgress) {
        if let Some(why) = self.unstartable.get(&id) {
            let why = why.to_string();
            self.actions.push_back(Action::Refuse { id, msg, why });
            return;
        }
        if !self.entries.contains_key(&id) {
            self.entries.insert(id.clone(), Entry::new());
            if self.resident >= self.cfg.resident_cap.max(1) {
                // Full: make room by passivating an idle actor now; this id
                // gets the slot when that actor has stopped.
                self.passivate_idle(now, 1, progress);
                self.deferred.push_back(id.clone());
            } else {
                let init = self.init_for(&id);
                self.spawn(&id, init, vec![msg]);
                return;
            }
        }
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if entry.running && !entry.stopping {
            entry.record(&msg);
            self.actions.push_back(Action::Deliver { id, msg });
        } else {
            entry.queued.push_back(msg);
        }
    }

    /// The actor of the last [`Action::Spawn`] for `id` started and took its
    /// messages; what was routed meanwhile goes to it now.
    pub fn spawned(&mut self, id: &str) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        entry.spawning = false;
        entry.running = true;
        if entry.stopping {
            return;
        }
        for msg in std::mem::take(&mut entry.queued) {
            entry.record(&msg);
            self.actions.push_back(Action::Deliver {
                id: id.to_string(),
                msg,
            });
        }
    }

    /// The last [`Action::Deliver`] to `id` found no actor: the message was
    /// dropped (its reply port tells the sender) and is not counted.
    pub fn undelivered(&mut self, id: &str) {
        if let Some(entry) = self.entries.get_mut(id) {
            entry.routed = entry.routed.saturating_sub(1);
            entry.unacked.pop_back();
        }
    }

    /// The actor of `id` stopped cleanly, leaving `state` (`None` when it
    /// did not serve the workflow). A successor starts if messages wait;
    /// then free slots go to deferred ids.
    pub fn stopped(&mut self, id: &str, state: Option<Box<S>>) {
        self.resident = self.resident.saturating_sub(1);
        if let Some(state) = state {
            self.cache.put(id.to_string(), state);
        }
        let waiting = self.entries.get(id).is_some_and(|e| !e.queued.is_empty());
        if waiting {
            self.restart(id, false, None);
        } else {
            self.entries.remove(id);
        }
        self.drain_deferred();
    }

    /// The periodic tick: held tasks are released, due idle actors
    /// passivated (and as many more as ids wait for a slot).
    pub fn tick(&mut self, now: u64, progress: &mut dyn ActorProgress) {
        self.release(progress);
        let wanted = self.deferred.len();
        self.passivate_idle(now, wanted, progress);
    }

    fn release(&mut self, progress: &mut dyn ActorProgress) {
        let finished = progress.take_finished();
        let cap = self.cfg.in_progress_cap.max(1);
        for r in self.backlog.release(finished, cap) {
            self.actions.push_back(Action::Send(r));
        }
    }

    fn init_for(&mut self, id: &str) -> Init<S> {
        match self.cache.take(id) {
            Some(s) => Init::State(s),
            None => Init::Load,
        }
    }

    /// Emits the start of an actor for `id` with `deliver`, counting them
    /// as routed to it.
    fn spawn(&mut self, id: &str, init: Init<S>, deliver: Vec<M>) {
        self.resident += 1;
        if let Some(entry) = self.entries.get_mut(id) {
            entry.running = false;
            entry.spawning = true;
            entry.stopping = false;
            for m in &deliver {
                entry.record(m);
            }
        }
        self.actions.push_back(Action::Spawn {
            id: id.to_string(),
            init,
            deliver,
        });
    }

    /// Moves actors that reported finishing a message into the idle queue
    /// if they are indeed idle, with the time they may be passivated.
    fn collect_idle(&mut self, now: u64, progress: &mut dyn ActorProgress) {
        let grace = self.cfg.passivate_idle_ms;
        for (id, handled) in progress.take_idle() {
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            entry.sync_acks(handled);
            if entry.is_idle() {
                self.idle
                    .push_back((now.saturating_add(grace), id, entry.acked));
            }
        }
    }

    /// Passivates actors idle since their deadline (all due ones), plus up
    /// to `force` more in least-recently-active order when a slot is needed.
    fn passivate_idle(&mut self, now: u64, mut force: usize, progress: &mut dyn ActorProgress) {
        self.collect_idle(now, progress);
        while let Some((due, _, _)) = self.idle.front() {
            if *due > now && force == 0 {
                break;
            }
            let Some((_, id, mark)) = self.idle.pop_front() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            entry.sync_acks(progress.handled(&id));
            // Still idle and nothing handled since it was queued: a workflow
            // waiting only on tasks or timers. Passivate it.
            if entry.is_idle() && entry.acked == mark {
                entry.stopping = true;
                self.actions.push_back(Action::Stop { id });
                force = force.saturating_sub(1);
            }
        }
    }

    fn drain_deferred(&mut self) {
        while self.resident < self.cfg.resident_cap.max(1) {
            let Some(id) = self.deferred.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&id)
                .is_some_and(|e| !e.running && !e.spawning)
            {
                self.restart(&id, false, None);
            }
        }
    }
}
