//! [`RocksStorage`]: the production [`Storage`], on RocksDB.
//!
//! Memory is bounded by configuration, not by workload: one `WriteBufferManager`
//! caps all memtables, and one LRU block cache holds data blocks *and* index/filter
//! blocks (`cache_index_and_filter_blocks`), so the table readers of a large store
//! do not grow outside the cache. `max_open_files` bounds the table cache.
//!
//! Statistics are enabled so [`Storage::wal_syncs`] reads RocksDB's own
//! `rocksdb.wal.synced` ticker: the proof that fsync really happens (and is batched)
//! comes from the engine under test, not from our own bookkeeping.
//!
//! A single default column family holds every table; the one-byte key tags (see
//! [`super::keys`]) separate them. One column family keeps every `WriteBatch`
//! atomic without `atomic_flush` and keeps memory accounting simple.

use std::path::{Path, PathBuf};

use rocksdb::statistics::{StatsLevel, Ticker};
use rocksdb::{
    BlockBasedOptions, Cache, DBCompressionType, Options, ReadOptions, WriteBatch,
    WriteBufferManager, WriteOptions, DB,
};

use super::{Error, Op, Storage};

const MIB: usize = 1024 * 1024;

/// Resource bounds of a [`RocksStorage`]. Every field has a default suited to one
/// orchestrator node; see `Default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RocksConfig {
    /// Capacity of the one LRU block cache (data, index and filter blocks), in MiB.
    pub block_cache_mib: usize,
    /// Total memtable memory across the whole DB, enforced by one
    /// `WriteBufferManager`, in MiB. Each memtable is a quarter of this, so a full
    /// memtable is flushed well before the total is reached.
    pub write_buffer_mib: usize,
    /// Most SST files kept open at once (bounds the table cache); `-1` is unlimited.
    pub max_open_files: i32,
    /// Background flush and compaction threads.
    pub max_background_jobs: i32,
    /// Total WAL size after which memtables are flushed so old WAL files can be
    /// deleted, in MiB; bounds disk use and recovery time.
    pub max_total_wal_mib: u64,
    /// Old WAL files kept for reuse instead of deleted. Writing into a
    /// recycled file does not grow it, so the fdatasync of every commit has
    /// no file-size metadata to journal (on this machine's ext4 the median
    /// commit sync went from 0.224 to 0.201 ms). 0 turns recycling off.
    /// RocksDB's recyclable record format keeps stale records of a reused
    /// file from being read back (compatible with point-in-time recovery,
    /// the mode used here).
    pub wal_recycle_files: usize,
    /// L0 files that start a compaction into the levels below. RocksDB's
    /// default is 4. The journal's keys (partition, workflow id, seq) are
    /// spread over the whole key range, so every L0 file overlaps all of the
    /// last level and each L0 compaction rewrites that whole level: its
    /// cost grows with the data kept (retention), not with what was written.
    /// Waiting for more L0 files rewrites it less often. On this machine,
    /// with about 167,000 workflows written and kept (a ~190 MiB database,
    /// which RocksDB keeps in one level; larger ones get more levels, which
    /// bound the rewrite): 12 compactions and 14.5 s of CPU at 4, 3 and 4.5 s
    /// at 16 (docs/benchmarks.md). Writes slow down at 3x this
    /// many L0 files and stop at 4x, so compactions keep up. 1..=64
    /// ([`L0_COMPACTION_TRIGGER_MAX`]).
    pub l0_compaction_trigger: i32,
    /// Bytes per second that flushes and compactions may write, in MiB; 0
    /// is unlimited. Without a limit an L0 compaction takes about two thirds
    /// of a core until it ends (1.03 s of CPU in 1.54 s for a 100 MB last
    /// level on this machine): with a 2-core box already busy at half load,
    /// the backlog it leaves behind decided the half-load p99. Limited, the
    /// same work is spread over a longer time and fits into the idle
    /// share. Flushes share the budget but mostly go first (RocksDB gives
    /// them the high priority), so memtables are rarely held up behind a
    /// compaction. The limit must stay well above the average compaction
    /// write rate, or L0 files pile up until writes slow down
    /// (`narralytica_rocksdb_l0_files` shows it).
    ///
    /// RocksDB ties two options to a limiter, and both come with it: SST
    /// files are synced every 1 MiB as they are written (`bytes_per_sync`,
    /// otherwise 0: one large sync at the end of each file), and writes
    /// slowed down at 3x `l0_compaction_trigger` L0 files go at this rate
    /// (`delayed_write_rate`, otherwise 16 MiB/s). The A/B in
    /// docs/benchmarks.md measured the three together. At most [`COMPACTION_RATE_MIB_S_MAX`].
    pub compaction_rate_mib_s: u64,
}

impl Default for RocksConfig {
    fn default() -> Self {
        RocksConfig {
            block_cache_mib: 64,
            write_buffer_mib: 64,
            max_open_files: 512,
            max_background_jobs: 2,
            max_total_wal_mib: 256,
            wal_recycle_files: 4,
            l0_compaction_trigger: 16,
            // Half-load p99 with and without it: docs/benchmarks.md.
            compaction_rate_mib_s: 32,
        }
    }
}

/// Largest `l0_compaction_trigger`: writes stop at 4x as many L0 files, and
/// 4 x 64 = 256 stays within the default `max_open_files` (512), so L0 files
/// are not closed and reopened on every read.
pub const L0_COMPACTION_TRIGGER_MAX: i32 = 64;

/// Largest `compaction_rate_mib_s` (4 GiB/s): a higher limit would not
/// limit one disk, and would make the write slowdown at 3x the L0 trigger
/// (which runs at this rate) a no-op; use 0 for no limit.
pub const COMPACTION_RATE_MIB_S_MAX: u64 = 4096;

/// RocksDB-backed [`Storage`].
pub struct RocksStorage {
    // Declared first so it is dropped (closed) before the options it was opened with.
    db: DB,
    /// Kept because the statistics object lives in the options: `wal_syncs` reads the
    /// ticker through it.
    opts: Options,
    /// For logs and errors.
    path: PathBuf,
}

impl std::fmt::Debug for RocksStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStorage")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RocksStorage {
    /// Open (creating if missing) the database at `path`, bounded by `cfg`.
    pub fn open(path: impl AsRef<Path>, cfg: &RocksConfig) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        if cfg.block_cache_mib == 0 || cfg.write_buffer_mib == 0 {
            return Err(Error::InvalidArgument(
                "rocksdb block_cache_mib and write_buffer_mib must be at least 1".into(),
            ));
        }
        if !(1..=L0_COMPACTION_TRIGGER_MAX).contains(&cfg.l0_compaction_trigger) {
            return Err(Error::InvalidArgument(format!(
                "rocksdb l0_compaction_trigger must be within 1..={L0_COMPACTION_TRIGGER_MAX}"
            )));
        }
        if cfg.compaction_rate_mib_s > COMPACTION_RATE_MIB_S_MAX {
            return Err(Error::InvalidArgument(format!(
                "rocksdb compaction_rate_mib_s must be within 0..={COMPACTION_RATE_MIB_S_MAX} (0: unlimited)"
            )));
        }
        let cache_bytes = cfg.block_cache_mib.saturating_mul(MIB);
        let write_buffer_bytes = cfg.write_buffer_mib.saturating_mul(MIB);

        let cache = Cache::new_lru_cache(cache_bytes);
        // `allow_stall = false`: the limit triggers flushes (at ~90% of it) instead of
        // stalling writers; with a single DB, flushing is enough to stay near the bound
        // and a stalled group-commit thread would stall every workflow at once.
        let write_buffers = WriteBufferManager::new_write_buffer_manager(write_buffer_bytes, false);

        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        // Partitioned index and filters: each 4 KiB partition is its own
        // cache entry, and only the small top level is pinned. With one
        // index block per file, the last level's file (tens of MiB after a
        // few minutes at 1,500 workflows/s) had an index block larger than
        // a block-cache shard, so it was never kept: every iterator read and
        // decompressed it again, which grew to 36% of the orchestrator's CPU
        // and cut a 1M-workflow run from 1,570 to 630 workflows/s within
        // two minutes (docs/benchmarks.md).
        table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        // Snapshot and meta reads are point lookups: a bloom filter avoids touching
        // every level for a miss.
        table.set_bloom_filter(10.0, false);

        let mut opts = Options::default();
        opts.create_if_missing(true);
        // Compactions run on the low-priority pool with lowered CPU and I/O
        // priority: on a small machine a compaction otherwise competes with
        // the commit path for the cores and the disk, and every workflow
        // stalls while it runs (a 0.5 s stall every ~8 s at 870 workflows/s
        // on 2 cores; docs/benchmarks.md). Flushes keep normal priority.
        let mut env = rocksdb::Env::new()?;
        env.lower_thread_pool_cpu_priority();
        env.lower_thread_pool_io_priority();
        opts.set_env(&env);
        opts.set_block_based_table_factory(&table);
        opts.set_write_buffer_manager(&write_buffers);
        opts.set_write_buffer_size((write_buffer_bytes / 4).max(MIB));
        opts.set_max_open_files(cfg.max_open_files);
        opts.set_max_background_jobs(cfg.max_background_jobs.max(1));
        opts.set_max_total_wal_size(cfg.max_total_wal_mib.saturating_mul(MIB as u64));
        opts.set_compression_type(DBCompressionType::Lz4);
        let l0 = cfg.l0_compaction_trigger;
        opts.set_level_zero_file_num_compaction_trigger(l0);
        opts.set_level_zero_slowdown_writes_trigger(l0 * 3);
        opts.set_level_zero_stop_writes_trigger(l0 * 4);
        opts.set_recycle_log_file_num(cfg.wal_recycle_files);
        if cfg.compaction_rate_mib_s > 0 {
            // A 10-ms refill (RocksDB's default is 100 ms) keeps each burst of
            // compaction writes, and most of the CPU behind it, short, so a
            // waiting commit or actor is rarely behind more than a few ms of it.
            let bytes = (cfg.compaction_rate_mib_s as i64).saturating_mul(MIB as i64);
            opts.set_ratelimiter(bytes, 10_000, 10);
        }
        opts.enable_statistics();
        // Tickers are all we read; skipping timers keeps statistics cheap.
        opts.set_statistics_level(StatsLevel::ExceptTimers);

        let db = DB::open(&opts, &path)?;
        tracing::info!(path = %path.display(), block_cache_mib = cfg.block_cache_mib,
            write_buffer_mib = cfg.write_buffer_mib, "rocksdb storage opened");
        Ok(RocksStorage { db, opts, path })
    }

    /// Where this database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Storage for RocksStorage {
    fn write(&self, ops: &[Op], sync: bool) -> Result<(), Error> {
        let mut batch = WriteBatch::default();
        for op in ops {
            match op {
                Op::Put(k, v) => batch.put(k, v),
                Op::Delete(k) => batch.delete(k),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.db.get(key)?)
    }

    fn scan(
        &self,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), Error> {
        if from >= to {
            return Ok(());
        }
        let mut ro = ReadOptions::default();
        // The bound lets RocksDB stop at `to` itself (and skip tombstones past it).
        ro.set_iterate_upper_bound(to.to_vec());
        let mut it = self.db.raw_iterator_opt(ro);
        it.seek(from);
        while let Some((k, v)) = it.item() {
            if !visit(k, v) {
                return Ok(());
            }
            it.next();
        }
        // An invalid iterator means either "end of range" or an error; ask which.
        it.status()?;
        Ok(())
    }

    /// Every range read through one RocksDB snapshot.
    fn read_ranges(&self, ranges: &[super::keys::KeyRange]) -> Result<super::Entries, Error> {
        let snapshot = self.db.snapshot();
        let mut out = Vec::new();
        for r in ranges.iter().filter(|r| r.from < r.to) {
            let mut ro = ReadOptions::default();
            ro.set_snapshot(&snapshot);
            ro.set_iterate_upper_bound(r.to.clone());
            let mut it = self.db.raw_iterator_opt(ro);
            it.seek(&r.from);
            while let Some((k, v)) = it.item() {
                out.push((k.to_vec(), v.to_vec()));
                it.next();
            }
            it.status()?;
        }
        Ok(out)
    }

    fn wal_syncs(&self) -> u64 {
        self.opts.get_ticker_count(Ticker::WalFileSynced)
    }

    fn lsm_stats(&self) -> Option<super::LsmStats> {
        let int = |name: &str| self.db.property_int_value(name).ok().flatten();
        Some(super::LsmStats {
            l0_files: int("rocksdb.num-files-at-level0")?,
            pending_compaction_bytes: int("rocksdb.estimate-pending-compaction-bytes")?,
            writes_stopped: int("rocksdb.is-write-stopped")? != 0,
        })
    }

    fn checkpoint(&self, dir: &Path) -> Result<(), Error> {
        if dir.symlink_metadata().is_ok() {
            return Err(Error::InvalidArgument(format!(
                "checkpoint target {} already exists",
                dir.display()
            )));
        }
        if crate::paths::is_within(dir, &self.path) {
            return Err(Error::InvalidArgument(format!(
                "checkpoint target {} is inside the data dir {}",
                dir.display(),
                self.path.display()
            )));
        }
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &[u8], v: &[u8]) -> Op {
        Op::Put(k.to_vec(), v.to_vec())
    }

    #[test]
    fn wal_synced_ticker_counts_synced_writes_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStorage::open(dir.path().join("db"), &RocksConfig::default()).unwrap();
        let before = s.wal_syncs();
        s.write(&[put(b"a", b"1")], false).unwrap();
        assert_eq!(s.wal_syncs(), before, "an unsynced write must not fsync");
        s.write(&[put(b"b", b"2")], true).unwrap();
        assert!(s.wal_syncs() > before, "a synced write must fsync the WAL");
    }

    #[test]
    fn data_survives_reopen_and_checkpoint_is_openable() {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("db");
        {
            let s = RocksStorage::open(&db_path, &RocksConfig::default()).unwrap();
            s.write(&[put(b"k", b"v")], true).unwrap();
            s.checkpoint(&dir.path().join("cp")).unwrap();
        }
        let s = RocksStorage::open(&db_path, &RocksConfig::default()).unwrap();
        assert_eq!(s.get(b"k").unwrap(), Some(b"v".to_vec()));
        let cp = RocksStorage::open(dir.path().join("cp"), &RocksConfig::default()).unwrap();
        assert_eq!(cp.get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    /// Whether opening a fresh database with `cfg` is refused as an invalid
    /// argument.
    fn refused(cfg: &RocksConfig) -> bool {
        let dir = tempfile::tempdir().unwrap();
        matches!(
            RocksStorage::open(dir.path(), cfg),
            Err(Error::InvalidArgument(_))
        )
    }

    #[test]
    fn zero_sized_bounds_are_refused() {
        assert!(refused(&RocksConfig {
            block_cache_mib: 0,
            ..RocksConfig::default()
        }));
    }

    /// The options RocksDB put in effect when it opened a fresh database
    /// with `cfg`, by name, as it wrote them to its newest OPTIONS-<n> file
    /// (after its own sanitizing).
    fn options_in_effect(cfg: &RocksConfig) -> impl Fn(&str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let _s = RocksStorage::open(dir.path().join("db"), cfg).unwrap();
        let newest = std::fs::read_dir(dir.path().join("db"))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                let n: u64 = name.strip_prefix("OPTIONS-")?.parse().ok()?;
                Some((n, name))
            })
            .max()
            .expect("an OPTIONS file")
            .1;
        let options = std::fs::read_to_string(dir.path().join("db").join(newest)).unwrap();
        move |key: &str| {
            options
                .lines()
                .find_map(|l| l.trim().strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{key} not in the OPTIONS file"))
                .to_owned()
        }
    }

    #[test]
    fn the_l0_compaction_trigger_reaches_rocksdb_with_its_slowdown_and_stop() {
        let cfg = RocksConfig {
            l0_compaction_trigger: 5,
            ..RocksConfig::default()
        };
        let value = options_in_effect(&cfg);
        assert_eq!(value("level0_file_num_compaction_trigger"), "5");
        assert_eq!(value("level0_slowdown_writes_trigger"), "15");
        assert_eq!(value("level0_stop_writes_trigger"), "20");
    }

    #[test]
    fn an_l0_compaction_trigger_outside_its_range_is_refused() {
        for bad in [0, -1, L0_COMPACTION_TRIGGER_MAX + 1] {
            let cfg = RocksConfig {
                l0_compaction_trigger: bad,
                ..RocksConfig::default()
            };
            assert!(refused(&cfg), "{bad} must be refused");
        }
    }

    #[test]
    fn lsm_stats_count_the_l0_files_a_flush_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStorage::open(dir.path().join("db"), &RocksConfig::default()).unwrap();
        let before = s.lsm_stats().expect("rocksdb has an LSM tree");
        assert_eq!(before.l0_files, 0);
        assert!(!before.writes_stopped);
        for i in 0..2u8 {
            s.write(&[put(&[b'k', i], b"v")], true).unwrap();
            s.db.flush().unwrap();
        }
        // Two flushes, below the trigger (16): two L0 files, no compaction.
        assert_eq!(s.lsm_stats().unwrap().l0_files, 2);
    }

    /// Bytes that flushes wrote through RocksDB's rate limiter, after
    /// writing and flushing 1 MiB of values that do not compress.
    fn rate_limited_flush_bytes(compaction_rate_mib_s: u64) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RocksConfig {
            compaction_rate_mib_s,
            ..RocksConfig::default()
        };
        let s = RocksStorage::open(dir.path().join("db"), &cfg).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let ops: Vec<Op> = (0..256u32)
            .map(|i| {
                let value: Vec<u8> = (0..4096)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                put(&i.to_be_bytes(), &value)
            })
            .collect();
        s.write(&ops, true).unwrap();
        s.db.flush().unwrap();
        s.opts.get_ticker_count(Ticker::RateLimiterBytesWrite)
    }

    #[test]
    fn the_compaction_rate_limit_meters_flushes_and_zero_turns_it_off() {
        let limited = rate_limited_flush_bytes(64);
        assert!(
            limited >= 1024 * 1024,
            "a 1 MiB flush must go through the limiter, {limited} bytes did"
        );
        assert_eq!(rate_limited_flush_bytes(0), 0, "0 means no limiter");
    }

    #[test]
    fn the_compaction_rate_sets_the_slowdown_rate_and_incremental_sst_syncs() {
        let limited = options_in_effect(&RocksConfig {
            compaction_rate_mib_s: 24,
            ..RocksConfig::default()
        });
        assert_eq!(limited("delayed_write_rate"), (24u64 << 20).to_string());
        assert_eq!(limited("bytes_per_sync"), (1u64 << 20).to_string());
        let unlimited = options_in_effect(&RocksConfig {
            compaction_rate_mib_s: 0,
            ..RocksConfig::default()
        });
        assert_eq!(unlimited("delayed_write_rate"), (16u64 << 20).to_string());
        assert_eq!(unlimited("bytes_per_sync"), "0");
    }

    #[test]
    fn a_compaction_rate_above_its_maximum_is_refused() {
        assert!(refused(&RocksConfig {
            compaction_rate_mib_s: COMPACTION_RATE_MIB_S_MAX + 1,
            ..RocksConfig::default()
        }));
        assert!(!refused(&RocksConfig {
            compaction_rate_mib_s: COMPACTION_RATE_MIB_S_MAX,
            ..RocksConfig::default()
        }));
    }
}
