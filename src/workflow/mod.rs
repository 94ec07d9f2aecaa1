//! The pure workflow core: `decide` and `evolve`.
//!
//! **Architecture invariant:** nothing in this module does IO, reads a clock,
//! draws random numbers or touches tokio. Time comes in as `now_ms`, jitter is
//! derived from task ids. `tests/purity.rs` fails the build's tests if an
//! import of any of those creeps in. This is what lets the property tests
//! drive millions of interleavings quickly and lets replay rebuild the exact
//! live state.
//!
//! The cycle, used identically live and on replay:
//! 1. [`decide`] (or [`decide_start`]) turns `(state, pipeline, input, now)`
//!    into a [`Decision`]: events plus commands.
//! 2. The shell makes the events durable (journal append, fsync).
//! 3. [`evolve`] applies each event to the state; it is the only mutator.
//! 4. The shell runs the commands (dispatch tasks, arm timers, cancel tasks).

pub mod backoff;
pub mod budget;
pub mod command;
pub mod decide;
pub mod event;
pub mod evolve;
pub mod input;
pub mod lineage;
pub mod map;
pub mod state;
pub mod stored;
pub mod when;

pub use command::{Command, TaskSpec};
pub use decide::{
    decide, decide_planted, decide_start, redispatch, redispatch_all, redispatch_elements,
    restart_children, Decision, IgnoreReason, Outcome,
};
pub use event::{
    AfterFailure, Event, EventKind, JournalRecord, JournalRecordRef, ReopenMode, TaskError,
    TimeoutKind,
};
pub use evolve::{evolve, replay};
pub use input::{Input, TaskOutcome, TaskResult, TimerKind};
pub use lineage::{ChildOutcome, ChildSignal, ChildSpec, LineageEffect};
pub use state::{PipelineRef, Signal, Status, StepState, StepStatus, WaitRun, WorkflowState};

#[cfg(test)]
mod child_tests;
#[cfg(test)]
mod map_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod wait_tests;
#[cfg(test)]
mod when_tests;
