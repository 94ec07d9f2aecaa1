//! The last progress each attempt's worker reported (a heartbeat's
//! `progress`), kept in memory for operators: `describe`, `history` and
//! the console show it.
//!
//! Progress is not journaled: it changes often, is only informative, and a
//! lost one is replaced by the worker's next heartbeat, so it costs no
//! fsync. The board is bounded: past its capacity the attempt recorded
//! first goes first. It starts empty after a restart.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

/// Attempts whose last progress the board keeps (about 200 bytes each plus
/// the progress itself, which the output size limit bounds).
pub const PROGRESS_TASKS_MAX: usize = 100_000;

/// One attempt's last progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// When the orchestrator received it, unix ms.
    pub at_ms: u64,
    /// The worker's JSON, as it sent it.
    pub json: Arc<str>,
}

/// The last progress per attempt (task id), bounded.
#[derive(Debug)]
pub struct ProgressBoard {
    max: usize,
    inner: Mutex<Board>,
}

#[derive(Debug, Default)]
struct Board {
    by_task: HashMap<Arc<str>, Progress>,
    /// Task ids in the order they were first recorded: who goes first.
    order: VecDeque<Arc<str>>,
}

impl ProgressBoard {
    pub fn new(max: usize) -> ProgressBoard {
        ProgressBoard {
            max: max.max(1),
            inner: Mutex::default(),
        }
    }

    /// Keeps `json` as `task_id`'s last progress.
    pub fn record(&self, task_id: &str, at_ms: u64, json: Arc<str>) {
        let mut board = self.inner.lock();
        if let Some(p) = board.by_task.get_mut(task_id) {
            *p = Progress { at_ms, json };
            return;
        }
        let key: Arc<str> = task_id.into();
        board.by_task.insert(key.clone(), Progress { at_ms, json });
        board.order.push_back(key);
        while board.order.len() > self.max {
            if let Some(old) = board.order.pop_front() {
                board.by_task.remove(&old);
            }
        }
    }

    pub fn get(&self, task_id: &str) -> Option<Progress> {
        self.inner.lock().by_task.get(task_id).cloned()
    }
}

impl Default for ProgressBoard {
    fn default() -> Self {
        ProgressBoard::new(PROGRESS_TASKS_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_keeps_the_last_progress_and_forgets_the_oldest_attempt_first() {
        let b = ProgressBoard::new(2);
        b.record("a", 1, r#"{"percent":10}"#.into());
        b.record("a", 2, r#"{"percent":40}"#.into());
        assert_eq!(
            b.get("a"),
            Some(Progress {
                at_ms: 2,
                json: r#"{"percent":40}"#.into()
            })
        );
        b.record("b", 3, "1".into());
        b.record("c", 4, "2".into());
        assert_eq!(b.get("a"), None, "the oldest attempt went first");
        assert_eq!(b.get("b").map(|p| p.at_ms), Some(3));
        assert_eq!(b.get("c").map(|p| p.at_ms), Some(4));
    }
}
