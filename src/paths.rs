//! Path confinement: whether a path lies inside a directory, by canonical
//! paths, so `..` and symlinks cannot lead out of it. A leaf, used by the
//! store (a checkpoint must not land inside the live database) and free of
//! any other module.

use std::path::{Path, PathBuf};

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
