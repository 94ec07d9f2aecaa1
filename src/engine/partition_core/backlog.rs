//! Owed tasks of bulk-accepted or recovered workflows, released under the
//! in-progress cap so a backlog of any size runs in bounded load.

use std::collections::VecDeque;

use rustc_hash::FxHashSet as FastSet;

/// Tasks held per workflow, in order, and the released workflows still
/// running. Generic over the task so the core does not read tasks.
pub struct Backlog<T> {
    /// Per workflow: its owed tasks and whether they are re-sends after a
    /// restart (not counted as first attempts again).
    held: VecDeque<(String, Vec<T>, bool)>,
    /// Released workflows that have not ended yet.
    released: FastSet<String>,
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
            held: VecDeque::new(),
            released: FastSet::default(),
            enabled: false,
        }
    }

    pub fn hold(&mut self, id: String, tasks: Vec<T>, resend: bool) {
        self.held.push_back((id, tasks, resend));
    }

    pub fn enable(&mut self) {
        self.enabled = true;
    }

    pub fn is_held(&self, id: &str) -> bool {
        self.held.iter().any(|(h, _, _)| h == id)
    }

    /// Held ids, for the retention sweep (a held id is never purged).
    pub fn held_ids(&self) -> FastSet<&str> {
        self.held.iter().map(|(id, _, _)| id.as_str()).collect()
    }

    pub fn forget(&mut self, id: &str) {
        self.released.remove(id);
    }

    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Released workflows that have not ended yet.
    pub fn released_len(&self) -> usize {
        self.released.len()
    }

    /// Workflows that ended leave the released set; then held workflows are
    /// released while fewer than `cap` released ones are running.
    pub fn release(&mut self, finished: Vec<String>, cap: usize) -> Vec<Release<T>> {
        for id in finished {
            self.released.remove(&id);
        }
        let mut out = Vec::new();
        if !self.enabled {
            return out;
        }
        while self.released.len() < cap {
            let Some((id, tasks, resend)) = self.held.pop_front() else {
                break;
            };
            out.push(Release { tasks, resend });
            self.released.insert(id);
        }
        out
    }
}

impl<T> Default for Backlog<T> {
    fn default() -> Self {
        Self::new()
    }
}
