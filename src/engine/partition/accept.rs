//! Bulk accept: many new workflows made durable in chunks, their first
//! tasks held in the partition's backlog until `RunHeld`.

use super::{AcceptReport, PartitionState};
use crate::engine::transition::{after_commit, prepare, EventHandOver};
use crate::workflow::{decide_start, Command};

impl PartitionState {
    pub(super) async fn accept_many(
        &mut self,
        pipeline: &str,
        items: Vec<(String, String)>,
    ) -> Result<AcceptReport, String> {
        let ctx = self.ctx.clone();
        let (pref, def) = ctx
            .pipelines
            .current(pipeline)
            .ok_or_else(|| format!("unknown pipeline {pipeline:?}"))?;
        let cap = crate::engine::capacity::pipeline_in_progress_cap(&ctx, &pref.name);
        self.core.set_pipeline_cap(&pref.name, cap);
        let mut report = AcceptReport::default();
        let chunk = ctx.config.accept_chunk.max(1);
        for part in items.chunks(chunk) {
            let mut ops = Vec::new();
            let mut done = Vec::new();
            for (id, input) in part {
                let exists = self.core.knows(id)
                    || ctx.store.workflow_exists(self.index, id).unwrap_or(true);
                if exists {
                    report.existing += 1;
                    continue;
                }
                let now = ctx.clock.now_ms();
                let decision = decide_start(id, pref.clone(), &def, input, now);
                let prepared = prepare(&ctx, self.index, id, None, decision, None)?;
                ops.extend(prepared.ops);
                if let Some(next) = prepared.next {
                    done.push((next, prepared.decision, prepared.event));
                }
            }
            if ops.is_empty() {
                continue;
            }
            ctx.committer
                .commit(ops)
                .await
                .map_err(|e| format!("journal append failed: {e}"))?;
            for (next, mut decision, event) in done {
                let _event = EventHandOver::new(&ctx, event);
                // Hold the first tasks until every workflow is accepted.
                let mut held = Vec::new();
                let mut rest = Vec::new();
                for c in std::mem::take(&mut decision.commands) {
                    match c {
                        Command::Dispatch(spec) => held.push(spec),
                        other => rest.push(other),
                    }
                }
                decision.commands = rest;
                after_commit(&ctx, &self.shared, None, &next, &def, decision);
                self.core.hold(next.id.clone(), &pref.name, held, false);
                // Its first result will wake it soon: keep the state warm.
                self.core.cache_put(next.id.clone(), Box::new(next));
                report.created += 1;
            }
        }
        Ok(report)
    }
}
