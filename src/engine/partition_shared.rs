//! What a partition shares with its workflow actors, behind one mutex
//! ([`PartitionShared`]): the schedule its tick polls, the reports its
//! actors leave for it, and its retry-budget counts. One mutex because a
//! transition's after-commit effects (arm and disarm timers, watch and
//! unwatch attempts, count retries, report a finished workflow) are made
//! together, under one lock.

use rustc_hash::FxHashMap;

use super::timers::{Liveness, TimerWheel};
use crate::workflow::budget::RetryBudget;

/// What a partition shares with its workflow actors.
#[derive(Debug, Default)]
pub struct PartitionShared {
    pub schedule: PartitionSchedule,
    pub reports: ActorReports,
    pub budgets: RetryBudgets,
}

/// Durable timers and attempt deadlines of a partition; each tick takes
/// the due ones of both.
#[derive(Debug, Default)]
pub struct PartitionSchedule {
    pub timers: TimerWheel,
    pub liveness: Liveness,
}

/// What workflow actors report to their partition between its ticks.
#[derive(Debug, Default)]
pub struct ActorReports {
    /// Ids of workflow actors that finished a message since the last sweep.
    pub idle: Vec<String>,
    /// Ids of workflows that reached a terminal status since the last tick.
    pub finished: Vec<String>,
}

/// Retry budget counts of a partition, by task type.
#[derive(Debug, Default)]
pub struct RetryBudgets(FxHashMap<String, RetryBudget>);

impl RetryBudgets {
    /// The budget counts of `task_type` (created empty on first use).
    pub fn of(&mut self, task_type: &str) -> &mut RetryBudget {
        if !self.0.contains_key(task_type) {
            self.0.insert(task_type.to_string(), RetryBudget::default());
        }
        self.0.get_mut(task_type).expect("inserted just above")
    }
}

/// The backlog gauges read a partition's liveness deadlines at scrape time.
impl crate::telemetry::metrics::BacklogSource for parking_lot::Mutex<PartitionShared> {
    fn each_backlog(&self, f: &mut dyn FnMut(&str, u64, Option<u64>)) {
        for (task_type, outstanding, oldest) in self.lock().schedule.liveness.backlog() {
            f(task_type, outstanding, oldest);
        }
    }
}
