//! [`MemoryStorage`]: the in-memory twin of [`super::RocksStorage`], with a crash
//! button.
//!
//! It exists so the engine's durability rules can be *tested*: it models the fsync
//! boundary instead of pretending every write is durable. A write with `sync = false`
//! is visible to reads at once but volatile; a write with `sync = true` makes itself
//! and everything written before it durable; [`MemoryStorage::crash`] throws away
//! whatever was not yet durable, exactly what a power loss does to RocksDB's unsynced
//! WAL tail.
//!
//! Test hooks, all on the handle:
//! - [`MemoryStorage::fail_next_writes`]: the next `n` writes fail with
//!   [`Error::Io`] and apply nothing.
//! - [`MemoryStorage::set_sync_hook`]: a closure run by every `sync = true` write
//!   after its ops are applied (visible) and before they are made durable, so a test
//!   can hold a write inside that window, observe it, or crash in it.
//!
//! Clones share one store: a clone is how tests "reopen" the same data (for example to
//! check that a different partition count is refused).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Error, Op, Storage};

/// A closure run between "applied" and "synced" of every synced write.
pub type SyncHook = Arc<dyn Fn() + Send + Sync>;

/// How many entries a scan copies out per lock acquisition. Visitors run without the
/// lock held, so a visitor may call back into the storage without deadlocking, and a
/// long scan never blocks writers for long.
const SCAN_CHUNK: usize = 256;

/// In-memory [`Storage`] that models the sync boundary. Cheap to clone; clones share
/// the same data.
#[derive(Clone, Default)]
pub struct MemoryStorage {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// See [`MemoryStorage::set_sync_hook`].
    sync_hook: Mutex<Option<SyncHook>>,
    /// See [`MemoryStorage::fail_next_writes`].
    failures_left: AtomicUsize,
    /// Synced writes completed, reported by `wal_syncs`.
    syncs: AtomicU64,
}

#[derive(Default)]
struct State {
    /// What reads see: durable state plus every unsynced write.
    visible: BTreeMap<Vec<u8>, Vec<u8>>,
    /// What survives [`MemoryStorage::crash`].
    durable: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Ops applied to `visible` but not yet to `durable`, in write order (the model of
    /// the unsynced WAL tail).
    unsynced: Vec<Op>,
    /// Bumped by every crash, so a synced write that was in flight during a crash
    /// knows its ops were lost and reports failure instead of success.
    crashes: u64,
}

impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.state.lock();
        f.debug_struct("MemoryStorage")
            .field("visible_keys", &st.visible.len())
            .field("durable_keys", &st.durable.len())
            .field("unsynced_ops", &st.unsynced.len())
            .finish()
    }
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulate a power loss: every write not yet covered by a sync is dropped, and
    /// reads afterwards see only durable state. A synced write caught between
    /// "applied" and "synced" by the crash returns an error.
    pub fn crash(&self) {
        let mut st = self.shared.state.lock();
        let lost = st.unsynced.len();
        st.visible = st.durable.clone();
        st.unsynced.clear();
        st.crashes += 1;
        tracing::debug!(lost_ops = lost, "memory storage crashed");
    }

    /// Make the next `n` calls to `write` fail with [`Error::Io`] without applying
    /// anything (replaces any previous count).
    pub fn fail_next_writes(&self, n: usize) {
        self.shared.failures_left.store(n, Ordering::SeqCst);
    }

    /// Run `hook` inside every synced write, after its ops became visible and before
    /// they become durable. The hook runs on the writing thread (for the group
    /// committer: its own thread), without any storage lock held, so it may block,
    /// read the storage, or call [`MemoryStorage::crash`].
    pub fn set_sync_hook(&self, hook: Option<SyncHook>) {
        *self.shared.sync_hook.lock() = hook;
    }

    /// Number of ops written but not yet durable.
    pub fn unsynced_ops(&self) -> usize {
        self.shared.state.lock().unsynced.len()
    }

    fn take_injected_failure(&self) -> bool {
        self.shared
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

fn apply(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, op: &Op) {
    match op {
        Op::Put(k, v) => {
            map.insert(k.clone(), v.clone());
        }
        Op::Delete(k) => {
            map.remove(k);
        }
    }
}

impl Storage for MemoryStorage {
    fn write(&self, ops: &[Op], sync: bool) -> Result<(), Error> {
        if self.take_injected_failure() {
            return Err(Error::Io("injected write failure".into()));
        }
        let crashes_at_apply = {
            let mut st = self.shared.state.lock();
            for op in ops {
                apply(&mut st.visible, op);
            }
            st.unsynced.extend_from_slice(ops);
            st.crashes
        };
        if !sync {
            return Ok(());
        }
        let hook = self.shared.sync_hook.lock().clone();
        if let Some(hook) = hook {
            hook();
        }
        let mut st = self.shared.state.lock();
        if st.crashes != crashes_at_apply {
            return Err(Error::Io(
                "crashed before the write was synced; its ops are lost".into(),
            ));
        }
        // Like an fsync of the WAL, this covers every write appended before it,
        // including unsynced writes of other callers.
        let pending = std::mem::take(&mut st.unsynced);
        for op in &pending {
            apply(&mut st.durable, op);
        }
        self.shared.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.shared.state.lock().visible.get(key).cloned())
    }

    /// Unlike RocksDB's iterator, a scan is not one snapshot: it is read in chunks
    /// of a few hundred entries, each consistent. Nothing in the engine scans a range
    /// that is being written concurrently, so the difference is not observable there.
    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), Error> {
        if from >= to {
            return Ok(());
        }
        let mut lower = Bound::Included(from.to_vec());
        loop {
            let chunk: Vec<(Vec<u8>, Vec<u8>)> = {
                let st = self.shared.state.lock();
                st.visible
                    .range::<Vec<u8>, _>((lower.clone(), Bound::Excluded(to.to_vec())))
                    .take(SCAN_CHUNK)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            let full = chunk.len() == SCAN_CHUNK;
            for (k, v) in &chunk {
                if !visit(k, v) {
                    return Ok(());
                }
            }
            match chunk.into_iter().last() {
                Some((k, _)) if full => lower = Bound::Excluded(k),
                _ => return Ok(()),
            }
        }
    }

    /// One lock held over every range: no write lands in between.
    fn read_ranges(&self, ranges: &[super::keys::KeyRange]) -> Result<super::Entries, Error> {
        let st = self.shared.state.lock();
        let mut out = Vec::new();
        for r in ranges.iter().filter(|r| r.from < r.to) {
            out.extend(
                st.visible
                    .range::<Vec<u8>, _>((
                        Bound::Included(r.from.clone()),
                        Bound::Excluded(r.to.clone()),
                    ))
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        Ok(out)
    }

    fn wal_syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::SeqCst)
    }

    fn checkpoint(&self, _dir: &Path) -> Result<(), Error> {
        Err(Error::Unsupported("checkpoint of the in-memory storage"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &[u8], v: &[u8]) -> Op {
        Op::Put(k.to_vec(), v.to_vec())
    }

    fn get(s: &MemoryStorage, k: &[u8]) -> Option<Vec<u8>> {
        s.get(k).unwrap()
    }

    #[test]
    fn crash_drops_unsynced_and_keeps_synced() {
        let s = MemoryStorage::new();
        s.write(&[put(b"a", b"1")], false).unwrap();
        s.write(&[put(b"b", b"1")], true).unwrap(); // also makes "a" durable
        s.write(&[put(b"c", b"1"), Op::Delete(b"a".to_vec())], false)
            .unwrap();
        assert_eq!(
            get(&s, b"c"),
            Some(b"1".to_vec()),
            "unsynced data is readable"
        );
        assert_eq!(get(&s, b"a"), None);
        assert_eq!(s.unsynced_ops(), 2);
        assert_eq!(s.wal_syncs(), 1);

        s.crash();
        assert_eq!(
            get(&s, b"a"),
            Some(b"1".to_vec()),
            "synced by the later sync"
        );
        assert_eq!(get(&s, b"b"), Some(b"1".to_vec()));
        assert_eq!(get(&s, b"c"), None, "never synced");
        assert_eq!(s.unsynced_ops(), 0);
    }

    #[test]
    fn crash_inside_the_sync_window_fails_the_write() {
        let s = MemoryStorage::new();
        let inner = s.clone();
        s.set_sync_hook(Some(Arc::new(move || inner.crash())));
        let err = s.write(&[put(b"a", b"1")], true).unwrap_err();
        assert!(matches!(err, Error::Io(_)));
        assert_eq!(get(&s, b"a"), None);
        assert_eq!(s.wal_syncs(), 0);
    }

    #[test]
    fn injected_failures_apply_nothing_and_run_out() {
        let s = MemoryStorage::new();
        s.fail_next_writes(2);
        assert!(s.write(&[put(b"a", b"1")], true).is_err());
        assert!(s.write(&[put(b"a", b"1")], false).is_err());
        assert_eq!(get(&s, b"a"), None);
        s.write(&[put(b"a", b"1")], true).unwrap();
        assert_eq!(get(&s, b"a"), Some(b"1".to_vec()));
    }

    #[test]
    fn scan_crosses_chunk_boundaries_and_allows_reentrant_visitors() {
        let s = MemoryStorage::new();
        let ops: Vec<Op> = (0u32..1000).map(|i| put(&i.to_be_bytes(), b"v")).collect();
        s.write(&ops, true).unwrap();
        let mut seen = Vec::new();
        s.scan(&10u32.to_be_bytes(), &900u32.to_be_bytes(), &mut |k, _| {
            // Reading back inside the visitor must not deadlock.
            assert!(s.get(k).unwrap().is_some());
            seen.push(u32::from_be_bytes(k.try_into().unwrap()));
            true
        })
        .unwrap();
        assert_eq!(seen, (10..900).collect::<Vec<_>>());
    }
}
