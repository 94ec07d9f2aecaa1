//! The checker's own model of signals and wait steps, kept apart from
//! `workflow::evolve` like the rest of the checker: a signal id is received
//! once; a wait starts only for a wait step whose dependencies are done,
//! while running; a wait succeeds only by consuming the oldest signal of
//! its name that no wait consumed before; a wait that timed out with
//! `fail` fails the workflow next.

use crate::pipeline::{OnTimeout, PipelineDef};
use crate::workflow::{EventKind, Status};

struct SignalModel {
    name: String,
    id: String,
    consumed: bool,
}

/// Signals received so far and the wait steps waiting now.
#[derive(Default)]
pub(super) struct WaitModel {
    signals: Vec<SignalModel>,
    /// Indexed like the steps, once the first wait event sized it.
    waiting: Vec<bool>,
}

/// What the checker knows around a wait event.
pub(super) struct WaitCtx<'a> {
    pub(super) pipeline: &'a PipelineDef,
    pub(super) generation: u32,
    pub(super) status: Status,
    /// Per step: succeeded or skipped in this generation.
    pub(super) done: &'a [bool],
}

/// How a wait event ended its step, for the caller's step model.
pub(super) enum WaitEnd {
    Succeeded(usize),
    Skipped(usize),
    /// The step failed; the workflow must fail next.
    Failed,
}

impl WaitModel {
    /// Whether step `i` waits now (it started and did not end).
    pub(super) fn is_waiting(&self, i: usize) -> bool {
        self.waiting.get(i).copied().unwrap_or(false)
    }

    /// A reopen or a terminal event: nothing waits any more.
    pub(super) fn stop_all(&mut self) {
        self.waiting.iter_mut().for_each(|w| *w = false);
    }

    /// Checks one signal or wait event and updates the model.
    pub(super) fn check(
        &mut self,
        cx: &WaitCtx<'_>,
        kind: &EventKind,
        bad: &mut impl FnMut(String),
        must_fail_next: &mut bool,
    ) -> Option<WaitEnd> {
        let n = cx.pipeline.steps.len();
        if self.waiting.len() != n {
            self.waiting = vec![false; n];
        }
        let generation = cx.generation;
        match kind {
            EventKind::SignalReceived { name, id, .. } => {
                if self.signals.iter().any(|s| s.id == *id) {
                    bad(format!("signal id {id:?} received twice"));
                }
                if !cx.pipeline.waits_for(name) {
                    bad(format!("signal {name:?} received but no step waits for it"));
                }
                self.signals.push(SignalModel {
                    name: name.clone(),
                    id: id.clone(),
                    consumed: false,
                });
                None
            }
            EventKind::WaitStarted { step, .. } => {
                let i = usize::from(*step);
                let def = &cx.pipeline.steps[i];
                if cx.pipeline.wait_of(i).is_none() {
                    bad(format!("step {} waits but has no wait", def.name));
                }
                if cx.status != Status::Running {
                    bad(format!(
                        "step {} started waiting while {}",
                        def.name, cx.status
                    ));
                }
                for &d in &def.needs {
                    if !cx.done[usize::from(d)] {
                        bad(format!(
                            "step {} started waiting before its dependency {} was done in generation {generation}",
                            def.name,
                            cx.pipeline.steps[usize::from(d)].name
                        ));
                    }
                }
                if cx.done[i] || self.waiting[i] {
                    bad(format!(
                        "step {} started waiting twice in generation {generation}",
                        def.name
                    ));
                }
                self.waiting[i] = true;
                None
            }
            EventKind::WaitSucceeded { step, signal_id } => {
                let i = usize::from(*step);
                let def = &cx.pipeline.steps[i];
                if !self.waiting[i] {
                    bad(format!("step {} ended a wait it was not in", def.name));
                }
                self.waiting[i] = false;
                let wanted = cx.pipeline.wait_of(i).map(|w| w.signal.as_str());
                let oldest = self
                    .signals
                    .iter()
                    .position(|s| !s.consumed && Some(s.name.as_str()) == wanted);
                match self.signals.iter().position(|s| s.id == *signal_id) {
                    None => bad(format!(
                        "step {} consumed signal {signal_id:?}, which was never received",
                        def.name
                    )),
                    Some(k) if self.signals[k].consumed => bad(format!(
                        "step {} consumed signal {signal_id:?}, which was consumed before",
                        def.name
                    )),
                    Some(k) if Some(self.signals[k].name.as_str()) != wanted => bad(format!(
                        "step {} consumed signal {signal_id:?} named {:?}, it waits for {wanted:?}",
                        def.name, self.signals[k].name
                    )),
                    Some(k) if Some(k) != oldest => bad(format!(
                        "step {} consumed signal {signal_id:?} while an older one of its name was unconsumed",
                        def.name
                    )),
                    Some(k) => self.signals[k].consumed = true,
                }
                Some(WaitEnd::Succeeded(i))
            }
            EventKind::WaitTimedOut { step, then } => {
                let i = usize::from(*step);
                let def = &cx.pipeline.steps[i];
                if !self.waiting[i] {
                    bad(format!(
                        "step {} timed out of a wait it was not in",
                        def.name
                    ));
                }
                self.waiting[i] = false;
                let declared = cx.pipeline.wait_of(i).map(|w| w.on_timeout);
                if declared != Some(*then) {
                    bad(format!(
                        "step {} timed out with {}, the pipeline says {:?}",
                        def.name,
                        then.as_str(),
                        declared.map(OnTimeout::as_str)
                    ));
                }
                match then {
                    OnTimeout::Fail => {
                        *must_fail_next = true;
                        Some(WaitEnd::Failed)
                    }
                    OnTimeout::Skip => Some(WaitEnd::Skipped(i)),
                }
            }
            _ => None,
        }
    }
}
