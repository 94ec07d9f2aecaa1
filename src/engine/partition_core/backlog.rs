//! Owed tasks of bulk-accepted or recovered workflows, released under the
//! in-progress cap, and under each pipeline's own cap where it has one, so
//! a backlog of any size runs in bounded load.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as FastMap;

/// One held workflow: its arrival number (release order across
/// pipelines), its id, its owed tasks and whether they are re-sends after
/// a restart (not counted as first attempts again).
struct Held<T> {
    seq: u64,
    id: String,
    tasks: Vec<T>,
    resend: bool,
}

/// Tasks held per workflow, in order, and the released workflows still
/// running. Generic over the task so the core does not read tasks.
pub struct Backlog<T> {
    /// Held workflows per pipeline, in arrival order; a pipeline without
    /// held workflows has no entry.
    held: FastMap<String, VecDeque<Held<T>>>,
    held_len: usize,
    /// The next arrival number.
    seq: u64,
    /// Released workflows that have not ended yet, with their pipeline.
    released: FastMap<String, String>,
    /// Released workflows not ended yet, per pipeline (no entry: none).
    released_by: FastMap<String, usize>,
    /// This partition's share of the pipelines' `in_progress_max`.
    caps: FastMap<String, usize>,
    /// Nothing is released before a bulk accept says `RunHeld` or a
    /// recovery queued re-sends.
    enabled: bool,
}

/// Tasks to send now, with whether they are re-sends.
pub struct Release<T> {
    pub tasks: Vec<T>,
    pub resend: bool,
}

impl<T> Backlog<T> {
    pub fn new() -> Self {
        Backlog {
            held: FastMap::default(),
            held_len: 0,
            seq: 0,
            released: FastMap::default(),
            released_by: FastMap::default(),
            caps: FastMap::default(),
            enabled: false,
        }
    }

    pub fn hold(&mut self, id: String, pipeline: &str, tasks: Vec<T>, resend: bool) {
        let seq = self.seq;
        self.seq += 1;
        self.held
            .entry(pipeline.to_string())
            .or_default()
            .push_back(Held {
                seq,
                id,
                tasks,
                resend,
            });
        self.held_len += 1;
    }

    /// `pipeline`'s workflows in progress at most (`None`: only the
    /// partition's cap bounds them). A lowered cap releases nothing more
    /// until the pipeline's released workflows drop under it.
    pub fn set_cap(&mut self, pipeline: &str, cap: Option<usize>) {
        match cap {
            Some(c) => {
                self.caps.insert(pipeline.to_string(), c.max(1));
            }
            None => {
                self.caps.remove(pipeline);
            }
        }
    }

    pub fn enable(&mut self) {
        self.enabled = true;
    }

    pub fn is_held(&self, id: &str) -> bool {
        self.held.values().flatten().any(|h| h.id == id)
    }

    /// Held ids, for the retention sweep (a held id is never purged).
    pub fn held_ids(&self) -> rustc_hash::FxHashSet<&str> {
        self.held
            .values()
            .flatten()
            .map(|h| h.id.as_str())
            .collect()
    }

    pub fn forget(&mut self, id: &str) {
        self.end(id);
    }

    fn end(&mut self, id: &str) {
        if let Some(p) = self.released.remove(id) {
            if let Some(n) = self.released_by.get_mut(&p) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.released_by.remove(&p);
                }
            }
        }
    }

    pub fn held_len(&self) -> usize {
        self.held_len
    }

    /// Released workflows that have not ended yet.
    pub fn released_len(&self) -> usize {
        self.released.len()
    }

    /// Released workflows not ended yet, per pipeline (pipelines with
    /// none are absent).
    pub fn released_by_pipeline(&self) -> &FastMap<String, usize> {
        &self.released_by
    }

    /// Workflows that ended leave the released set; then held workflows are
    /// released in arrival order while fewer than `cap` released ones are
    /// running, skipping the pipelines at their own cap (their workflows
    /// keep their places).
    pub fn release(&mut self, finished: Vec<String>, cap: usize) -> Vec<Release<T>> {
        for id in finished {
            self.end(&id);
        }
        let mut out = Vec::new();
        if !self.enabled {
            return out;
        }
        while self.released.len() < cap {
            let next = self
                .held
                .iter()
                .filter(|(p, _)| {
                    self.caps
                        .get(*p)
                        .is_none_or(|c| self.released_by.get(*p).copied().unwrap_or(0) < *c)
                })
                .filter_map(|(p, q)| q.front().map(|h| (h.seq, p)))
                .min();
            let Some((_, pipeline)) = next else {
                break;
            };
            let pipeline = pipeline.clone();
            let Some(q) = self.held.get_mut(&pipeline) else {
                break;
            };
            let Some(h) = q.pop_front() else {
                break;
            };
            if q.is_empty() {
                self.held.remove(&pipeline);
            }
            self.held_len -= 1;
            out.push(Release {
                tasks: h.tasks,
                resend: h.resend,
            });
            // An id released again (held anew before its end was seen)
            // counts once.
            self.end(&h.id);
            *self.released_by.entry(pipeline.clone()).or_default() += 1;
            self.released.insert(h.id, pipeline);
        }
        out
    }
}

impl<T> Default for Backlog<T> {
    fn default() -> Self {
        Self::new()
    }
}
