//! Backups: a consistent RocksDB checkpoint of the whole store, taken from a
//! live node (admin verb `backup`) or from a stopped data dir (`orchestrator
//! backup --data-dir`).
//!
//! A checkpoint flushes the memtables and hard-links the SST files into the
//! target directory (copies them when it is on another filesystem), plus a
//! fresh MANIFEST and the live WAL: the result is a data dir as of one
//! instant, which `orchestrator run --data-dir <target>` opens as it is.
//! Every acknowledged transition before that instant is in it (each was in a
//! synced write batch), none after it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::storage::{Error, Storage};

/// What one checkpoint produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub path: PathBuf,
    /// Files in the checkpoint directory (SSTs, MANIFEST, WAL, OPTIONS, ...).
    pub files: u64,
    /// Their total size (hard links count in full).
    pub bytes: u64,
    pub took_ms: u64,
}

/// Why a backup was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    /// The target is not acceptable (relative, exists, inside the data dir, no parent).
    #[error("{0}")]
    BadTarget(String),
    /// The storage cannot checkpoint (the in-memory twin).
    #[error("{0}")]
    Unsupported(String),
    /// RocksDB or the filesystem failed while checkpointing.
    #[error("backup failed: {0}")]
    Failed(String),
}

/// Checks `to` and writes a checkpoint of `storage` there. Blocking (flush
/// plus file links): call it off the async runtime.
pub fn checkpoint(storage: &dyn Storage, to: &Path) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    if !to.is_absolute() {
        return Err(BackupError::BadTarget(format!(
            "backup target {} must be an absolute path (on the orchestrator's host)",
            to.display()
        )));
    }
    if to.symlink_metadata().is_ok() {
        return Err(BackupError::BadTarget(format!(
            "backup target {} already exists; name a new directory",
            to.display()
        )));
    }
    match to.parent() {
        Some(parent) if parent.is_dir() => {}
        _ => {
            return Err(BackupError::BadTarget(format!(
                "the parent directory of backup target {} does not exist",
                to.display()
            )))
        }
    }
    storage.checkpoint(to).map_err(|e| match e {
        Error::InvalidArgument(m) => BackupError::BadTarget(m),
        Error::Unsupported(m) => BackupError::Unsupported(format!("backup unsupported: {m}")),
        other => BackupError::Failed(other.to_string()),
    })?;
    let (files, bytes) = dir_size(to)
        .map_err(|e| BackupError::Failed(format!("checkpoint written but unreadable: {e}")))?;
    Ok(BackupReport {
        path: to.to_path_buf(),
        files,
        bytes,
        took_ms: started.elapsed().as_millis() as u64,
    })
}

/// Files and bytes directly in `dir` (a checkpoint has no subdirectories).
fn dir_size(dir: &Path) -> std::io::Result<(u64, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            files += 1;
            bytes += meta.len();
        }
    }
    Ok((files, bytes))
}

/// Whether `target` is `dir` or lies inside it, comparing canonical paths
/// (`target` need not exist: its nearest existing ancestor is resolved).
pub fn is_within(target: &Path, dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let mut rest = Vec::new();
    let mut cur = target;
    loop {
        if let Ok(c) = cur.canonicalize() {
            let full = rest.iter().rev().fold(c, |p: PathBuf, part| p.join(part));
            return full.starts_with(&dir);
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                cur = parent;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryStorage, Op, RocksConfig, RocksStorage};

    #[test]
    fn targets_are_checked_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let s = RocksStorage::open(&db, &RocksConfig::default()).unwrap();
        s.write(&[Op::Put(b"k".to_vec(), b"v".to_vec())], true)
            .unwrap();
        let bad = |to: &Path| match checkpoint(&s, to) {
            Err(BackupError::BadTarget(m)) => m,
            other => panic!("{}: {other:?}", to.display()),
        };
        assert!(bad(Path::new("relative/cp")).contains("absolute"));
        assert!(bad(dir.path()).contains("already exists"));
        assert!(bad(&dir.path().join("no/such/parent")).contains("parent"));
        assert!(bad(&db.join("inside")).contains("inside"));
        let r = checkpoint(&s, &dir.path().join("cp")).unwrap();
        assert!(r.files >= 3 && r.bytes > 0, "{r:?}");
        drop(s);
        let cp = RocksStorage::open(dir.path().join("cp"), &RocksConfig::default()).unwrap();
        assert_eq!(cp.get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn the_memory_twin_refuses_explicitly() {
        let dir = tempfile::tempdir().unwrap();
        let m = MemoryStorage::new();
        assert!(matches!(
            checkpoint(&m, &dir.path().join("cp")),
            Err(BackupError::Unsupported(_))
        ));
        assert!(!dir.path().join("cp").exists());
    }

    #[test]
    fn within_resolves_missing_tails_and_dot_dots() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        assert!(is_within(&data.join("a/b"), &data));
        assert!(is_within(&data, &data));
        assert!(!is_within(&dir.path().join("data2"), &data));
        assert!(is_within(&data.join("../data/cp"), &data));
    }
}
