//! The gauges a partition moves: its backlog counts and the in-progress
//! count of each pipeline, reported as changes since the last report so
//! that the engine-wide gauges sum every partition this node serves.

use super::PartitionState;

impl PartitionState {
    /// Moves the backlog gauges by the change since the last report.
    pub(super) fn report_backlog(&mut self, now: (usize, usize)) {
        let delta = |new: usize, old: usize| {
            i64::try_from(new).unwrap_or(i64::MAX) - i64::try_from(old).unwrap_or(i64::MAX)
        };
        let m = &self.ctx.metrics;
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        if now.0 != self.reported.0 {
            m.backlog_held
                .fetch_add(delta(now.0, self.reported.0), relaxed);
        }
        if now.1 != self.reported.1 {
            m.in_progress
                .fetch_add(delta(now.1, self.reported.1), relaxed);
        }
        self.reported = now;
    }

    /// Moves each pipeline's in-progress gauge by its change since the last
    /// report.
    pub(super) fn report_by_pipeline(&mut self) {
        let now = self.core.in_progress_by_pipeline();
        let m = &self.ctx.metrics;
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        for (p, n) in now {
            let old = self.reported_by.get(p).copied().unwrap_or(0);
            if *n != old {
                m.by_pipeline.with(p, |s| {
                    s.in_progress.fetch_add(as_i64(*n) - as_i64(old), relaxed)
                });
            }
        }
        for (p, old) in &self.reported_by {
            if !now.contains_key(p) {
                m.by_pipeline
                    .with(p, |s| s.in_progress.fetch_sub(as_i64(*old), relaxed));
            }
        }
        self.reported_by = now.clone();
    }

    /// Takes this partition's in-progress counts out of the per-pipeline
    /// gauges (it stops; its next start counts its workflows again).
    pub(super) fn unreport_by_pipeline(&mut self) {
        let m = &self.ctx.metrics;
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        for (p, old) in self.reported_by.drain() {
            let n = i64::try_from(old).unwrap_or(i64::MAX);
            m.by_pipeline
                .with(&p, |s| s.in_progress.fetch_sub(n, relaxed));
        }
    }
}
