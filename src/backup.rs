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
//!
//! A backup holds every workflow's inputs and outputs, so it is written
//! private (directory 0700, files 0600). Over NATS the target is confined
//! to the configured backup root ([`confine`]): a caller on the bus cannot
//! make the node write anywhere else, nor learn whether a path outside the
//! root exists.

use std::path::{Component, Path, PathBuf};
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
    make_private(to).map_err(|e| {
        BackupError::Failed(format!("checkpoint written but not made private: {e}"))
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

/// Where a backup asked for over NATS goes: `requested` names a directory
/// under `root`, either relative to it or as an absolute path inside it.
/// Refused without looking at the filesystem when there is no root, when
/// the path has a `..`, or when it lies outside the root, so the answer is
/// the same whether or not such a path exists. Missing directories between
/// the root and the target are created 0700; a symbolic link that leads
/// out of the root is refused like any path outside it.
pub fn confine(root: Option<&Path>, requested: &str) -> Result<PathBuf, BackupError> {
    let Some(root) = root else {
        return Err(BackupError::BadTarget(
            "backups over NATS are off: set node.backup_root (or back up a stopped \
             node with `orchestrator backup --data-dir`)"
                .into(),
        ));
    };
    let outside = || {
        BackupError::BadTarget(format!(
            "backup target must lie under the backup root {}",
            root.display()
        ))
    };
    let req = Path::new(requested);
    if req.components().any(|c| c == Component::ParentDir) {
        return Err(BackupError::BadTarget(
            "backup target must not contain `..`".into(),
        ));
    }
    let relative = if req.is_absolute() {
        req.strip_prefix(root).map_err(|_| outside())?
    } else {
        req
    };
    if relative.components().all(|c| c == Component::CurDir) {
        return Err(BackupError::BadTarget(
            "name a new directory under the backup root".into(),
        ));
    }
    let target = root.join(relative);
    let real_root = root
        .canonicalize()
        .map_err(|e| BackupError::BadTarget(format!("backup root {}: {e}", root.display())))?;
    if let Some(parent) = target.parent() {
        let mut dirs = std::fs::DirBuilder::new();
        dirs.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dirs, 0o700);
        // Inside the root (checked above, links aside): creating is safe.
        dirs.create(parent).map_err(|e| {
            BackupError::BadTarget(format!("cannot create {}: {e}", parent.display()))
        })?;
        let real_parent = parent.canonicalize().map_err(|_| outside())?;
        if !real_parent.starts_with(&real_root) {
            return Err(outside());
        }
    }
    Ok(target)
}

/// Directory 0700 and its files 0600: a backup is the whole database.
fn make_private(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
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
    fn over_nats_a_target_is_confined_to_the_root_without_an_oracle() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("backups");
        std::fs::create_dir(&root).unwrap();
        let msg = |r: Option<&Path>, to: &str| match confine(r, to) {
            Err(BackupError::BadTarget(m)) => m,
            other => panic!("{to}: {other:?}"),
        };
        assert!(msg(None, "/tmp/x").contains("node.backup_root"));
        assert!(msg(Some(&root), "../x").contains(".."));
        assert!(msg(Some(&root), &format!("{}/a/../../x", root.display())).contains(".."));
        // Outside the root: one answer whether the path exists or not.
        let exists = msg(Some(&root), "/etc/shadow");
        let missing = msg(Some(&root), "/etc/no-such-file-here");
        assert_eq!(exists, missing);
        assert!(exists.contains("under the backup root"));
        // A link inside the root that leads out of it is refused the same way.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path(), root.join("out")).unwrap();
            assert_eq!(msg(Some(&root), "out/cp"), exists);
        }
        // Inside: relative or absolute, missing parents made 0700.
        let t = confine(Some(&root), "daily/2026-12-04").unwrap();
        assert_eq!(t, root.join("daily/2026-12-04"));
        let abs = format!("{}/weekly/w49", root.display());
        assert_eq!(confine(Some(&root), &abs).unwrap(), root.join("weekly/w49"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(root.join("daily"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }

    #[test]
    fn a_checkpoint_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStorage::open(dir.path().join("db"), &RocksConfig::default()).unwrap();
        s.write(&[Op::Put(b"k".to_vec(), b"v".to_vec())], true)
            .unwrap();
        let cp = dir.path().join("cp");
        checkpoint(&s, &cp).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&cp), 0o700);
            for e in std::fs::read_dir(&cp).unwrap() {
                assert_eq!(mode(&e.unwrap().path()), 0o600);
            }
        }
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
}
