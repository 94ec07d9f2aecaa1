//! Metric sets per label value (per pipeline, per task type) with a cap on
//! how many label values are kept.

use std::sync::Arc;

use parking_lot::RwLock;
use rustc_hash::FxHashMap;

/// Most distinct label values one [`Family`] keeps. Label values come from
/// pipeline files and task types (a few dozen), but a bound keeps a
/// misconfiguration from growing the map and the exposition without limit:
/// values past it are counted under [`OVERFLOW_LABEL`].
pub const FAMILY_LABELS_MAX: usize = 256;

/// The label value that collects every value past [`FAMILY_LABELS_MAX`].
pub const OVERFLOW_LABEL: &str = "_other";

/// Entries (counters, histograms, or a struct of them) per label value.
///
/// Hot path: one read lock and one map lookup keyed by `&str` (no
/// allocation), then whatever the closure does. The write lock is taken only
/// the first time a label value is seen. Clones share the entries, so the
/// exporter holds one while the engine counts through another.
pub struct Family<E> {
    map: Arc<RwLock<FxHashMap<Arc<str>, Arc<E>>>>,
    max: usize,
}

impl<E> Clone for Family<E> {
    fn clone(&self) -> Self {
        Family {
            map: self.map.clone(),
            max: self.max,
        }
    }
}

impl<E> std::fmt::Debug for Family<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("labels", &self.map.read().len())
            .field("max", &self.max)
            .finish()
    }
}

impl<E: Default> Default for Family<E> {
    fn default() -> Self {
        Self::with_max(FAMILY_LABELS_MAX)
    }
}

impl<E: Default> Family<E> {
    /// A family keeping at most `max` label values (at least 1) plus the overflow one.
    pub fn with_max(max: usize) -> Self {
        Family {
            map: Arc::new(RwLock::new(FxHashMap::default())),
            max: max.max(1),
        }
    }

    /// Runs `f` on the entry of `label`, creating it on first use.
    #[inline]
    pub fn with<R>(&self, label: &str, f: impl FnOnce(&E) -> R) -> R {
        if let Some(e) = self.map.read().get(label) {
            return f(e);
        }
        let e = self.insert(label);
        f(&e)
    }

    #[cold]
    fn insert(&self, label: &str) -> Arc<E> {
        let mut map = self.map.write();
        if let Some(e) = map.get(label) {
            return e.clone();
        }
        let key: &str = if map.len() >= self.max {
            OVERFLOW_LABEL
        } else {
            label
        };
        map.entry(Arc::from(key))
            .or_insert_with(|| Arc::new(E::default()))
            .clone()
    }

    /// Every label value and its entry, sorted by label value.
    pub fn snapshot(&self) -> Vec<(Arc<str>, Arc<E>)> {
        let mut v: Vec<(Arc<str>, Arc<E>)> = self
            .map
            .read()
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Label values kept (the overflow one included).
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    use super::*;

    #[test]
    fn families_count_per_label_and_fold_past_the_cap() {
        let f: Family<AtomicU64> = Family::with_max(2);
        for label in ["a", "b", "a", "c", "d", "a"] {
            f.with(label, |c| c.fetch_add(1, Relaxed));
        }
        let snap: Vec<(String, u64)> = f
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.load(Relaxed)))
            .collect();
        assert_eq!(
            snap,
            vec![
                ("_other".to_string(), 2),
                ("a".to_string(), 3),
                ("b".to_string(), 1)
            ]
        );
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn families_are_shared_between_threads_and_clones() {
        let f: Family<AtomicU64> = Family::default();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let f = f.clone();
                std::thread::spawn(move || {
                    for n in 0..1000 {
                        let label = if n % 2 == 0 { "even" } else { "odd" };
                        f.with(label, |c| c.fetch_add(1, Relaxed));
                    }
                    i
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let total: u64 = f.snapshot().iter().map(|(_, c)| c.load(Relaxed)).sum();
        assert_eq!(total, 4000);
        assert_eq!(f.len(), 2);
    }
}
