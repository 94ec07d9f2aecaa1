//! Pipeline definitions known to the engine: the registered versions of each
//! pipeline (what new workflows may start on; the highest version of a name
//! is its current one) and every definition a stored workflow references
//! (loaded from storage by content hash on first use).
//!
//! One (name, version) means one definition, for the life of a data dir: a
//! definition that differs from the one registered or stored under its
//! version is refused, at startup ([`PipelineRegistry::open`]) and on reload
//! ([`PipelineRegistry::reload`]). The content hash is part of the stored
//! key, so the check holds across restarts; a stored definition whose hash
//! differs only because the hashed encoding changed between releases is
//! compared by value and accepted when equal.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::pipeline::error::{PipelineError, PipelineErrorKind};
use crate::pipeline::load::{load_pipeline_files, LoadedPipeline};
use crate::pipeline::stored::OlderPipelineDefs;
use crate::pipeline::{PipelineDef, PipelineLimits};
use crate::storage::group_commit::GroupCommitter;
use crate::storage::store::WorkflowStore;
use crate::storage::Op;
use crate::workflow::PipelineRef;

/// Most stored definitions of one pipeline name read when checking a
/// definition against the store (one per version in practice).
pub const STORED_DEFINITIONS_SCAN_MAX: usize = 100_000;

/// Registered versions by name, then version.
type Registered = BTreeMap<String, BTreeMap<u32, (PipelineRef, Arc<PipelineDef>)>>;

pub struct PipelineRegistry {
    /// What new workflows may start on: the pipeline directory as last loaded.
    registered: RwLock<Registered>,
    /// Every definition seen or loaded, by the exact reference workflows pin.
    by_ref: RwLock<HashMap<PipelineRef, Arc<PipelineDef>>>,
    store: WorkflowStore,
    /// The directory [`PipelineRegistry::reload`] reads; `None` for a
    /// registry built from definitions in memory.
    source: Option<PathBuf>,
    /// One reload at a time, so check, persist and swap are not interleaved.
    reloading: tokio::sync::Mutex<()>,
}

/// Why a pipeline (version) cannot be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotStartable {
    UnknownPipeline(String),
    UnknownVersion {
        name: String,
        version: u32,
        registered: Vec<u32>,
    },
}

impl std::fmt::Display for NotStartable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotStartable::UnknownPipeline(name) => write!(f, "unknown pipeline {name:?}"),
            NotStartable::UnknownVersion {
                name,
                version,
                registered,
            } => {
                let list: Vec<String> = registered.iter().map(u32::to_string).collect();
                write!(
                    f,
                    "pipeline {name:?} has no registered version {version} (registered: {})",
                    list.join(", ")
                )
            }
        }
    }
}

/// Why a reload changed nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadError {
    /// The registry has no directory to read (built in memory).
    NoSource,
    /// Files that do not parse or validate, or duplicate (name, version)s.
    Invalid(Vec<PipelineError>),
    /// Definitions that changed without a new version.
    Changed(Vec<PipelineError>),
    /// The new definitions could not be stored.
    Storage(String),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |errors: &[PipelineError]| {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        match self {
            ReloadError::NoSource => write!(f, "this registry has no pipeline directory"),
            ReloadError::Invalid(e) | ReloadError::Changed(e) => {
                write!(f, "{}; nothing reloaded", join(e))
            }
            ReloadError::Storage(e) => {
                write!(
                    f,
                    "cannot store pipeline definitions: {e}; nothing reloaded"
                )
            }
        }
    }
}

/// One registered version after a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredVersion {
    pub name: String,
    pub version: u32,
    pub hash: u64,
    /// The highest version of its name: what a start without a version gets.
    pub current: bool,
    /// Not registered before this reload.
    pub added: bool,
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReloadReport {
    /// Every registered version, by name then version.
    pub registered: Vec<RegisteredVersion>,
    /// (name, version) registered before and no longer startable (its file
    /// is gone); workflows already on it keep running on it.
    pub removed: Vec<(String, u32)>,
}

fn reference(def: &PipelineDef) -> PipelineRef {
    PipelineRef {
        name: def.name.clone(),
        version: def.version,
        hash: def.content_hash(),
    }
}

impl PipelineRegistry {
    /// Registers `defs` as they are, without comparing them with the store
    /// (for definitions built in memory, where nothing else can register).
    pub fn new(store: WorkflowStore, defs: Vec<PipelineDef>) -> Self {
        let mut registered = Registered::new();
        let mut by_ref = HashMap::new();
        for def in defs {
            let r = reference(&def);
            let def = Arc::new(def);
            by_ref.insert(r.clone(), def.clone());
            registered
                .entry(r.name.clone())
                .or_default()
                .insert(r.version, (r, def));
        }
        PipelineRegistry {
            registered: RwLock::new(registered),
            by_ref: RwLock::new(by_ref),
            store,
            source: None,
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Registers the definitions loaded from `source`, refusing every one
    /// that differs from the definition stored under its name and version.
    pub fn open(
        store: WorkflowStore,
        loaded: Vec<LoadedPipeline>,
        source: PathBuf,
    ) -> Result<Self, Vec<PipelineError>> {
        let mut registry = PipelineRegistry::new(store, Vec::new());
        registry.source = Some(source);
        registry.check_unchanged(&loaded)?;
        let defs = loaded.into_iter().map(|l| l.def).collect();
        let fresh = PipelineRegistry::new(registry.store.clone(), defs);
        registry.registered = fresh.registered;
        registry.by_ref = fresh.by_ref;
        Ok(registry)
    }

    /// Storage ops that persist every known definition (idempotent puts).
    pub fn persist_ops(&self) -> Result<Vec<Op>, crate::storage::Error> {
        self.by_ref
            .read()
            .iter()
            .map(|(r, d)| {
                self.store
                    .pipeline_put(&r.name, r.version, r.hash, d.as_ref())
            })
            .collect()
    }

    /// The current (highest registered) version of `name`.
    pub fn current(&self, name: &str) -> Option<(PipelineRef, Arc<PipelineDef>)> {
        self.registered
            .read()
            .get(name)
            .and_then(|versions| versions.values().next_back().cloned())
    }

    /// What a new workflow of `name` starts on: `version` when given, else
    /// the current version.
    pub fn startable(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<(PipelineRef, Arc<PipelineDef>), NotStartable> {
        let registered = self.registered.read();
        let versions = registered
            .get(name)
            .ok_or_else(|| NotStartable::UnknownPipeline(name.to_owned()))?;
        let found = match version {
            Some(v) => versions.get(&v),
            None => versions.values().next_back(),
        };
        found.cloned().ok_or_else(|| NotStartable::UnknownVersion {
            name: name.to_owned(),
            version: version.unwrap_or_default(),
            registered: versions.keys().copied().collect(),
        })
    }

    /// Names of the registered pipelines, sorted.
    pub fn names(&self) -> Vec<String> {
        self.registered.read().keys().cloned().collect()
    }

    /// The exact definition a workflow started with.
    pub fn get(&self, r: &PipelineRef) -> Result<Arc<PipelineDef>, String> {
        if let Some(d) = self.by_ref.read().get(r) {
            return Ok(d.clone());
        }
        let loaded: Option<PipelineDef> = self
            .store
            .load_pipeline_compat::<PipelineDef, OlderPipelineDefs>(&r.name, r.version, r.hash)
            .map_err(|e| format!("pipeline {} v{}: {e}", r.name, r.version))?;
        let def = Arc::new(loaded.ok_or_else(|| {
            format!(
                "pipeline {} v{} (hash {:016x}) is not stored",
                r.name, r.version, r.hash
            )
        })?);
        self.by_ref.write().insert(r.clone(), def.clone());
        Ok(def)
    }

    /// Reads the pipeline directory again and registers what it holds: new
    /// files and versions become startable, versions whose file is gone stop
    /// being startable, and workflows keep the definition they pinned. All or
    /// nothing: any invalid file, or any definition changed without a new
    /// version, leaves the registry as it was. New definitions are stored
    /// before they become startable.
    pub async fn reload(&self, committer: &GroupCommitter) -> Result<ReloadReport, ReloadError> {
        let source = self.source.as_ref().ok_or(ReloadError::NoSource)?;
        let _one_at_a_time = self.reloading.lock().await;
        let loaded = load_pipeline_files(source, &PipelineLimits::default())
            .map_err(ReloadError::Invalid)?;
        if loaded.is_empty() {
            return Err(ReloadError::Invalid(vec![PipelineError::new(
                source.display().to_string(),
                None,
                PipelineErrorKind::Io {
                    message: "no pipeline files (*.toml)".into(),
                },
            )]));
        }
        self.check_unchanged(&loaded)
            .map_err(ReloadError::Changed)?;
        let fresh = PipelineRegistry::new(
            self.store.clone(),
            loaded.into_iter().map(|l| l.def).collect(),
        );
        let ops = fresh
            .persist_ops()
            .map_err(|e| ReloadError::Storage(e.to_string()))?;
        committer
            .commit(ops)
            .await
            .map_err(|e| ReloadError::Storage(e.to_string()))?;
        let new_registered = fresh.registered.into_inner();
        let mut by_ref = self.by_ref.write();
        let mut registered = self.registered.write();
        let mut report = ReloadReport::default();
        for (name, versions) in &new_registered {
            let current = versions.keys().next_back().copied();
            for (version, (r, def)) in versions {
                by_ref.insert(r.clone(), def.clone());
                let added = !registered
                    .get(name)
                    .is_some_and(|old| old.contains_key(version));
                report.registered.push(RegisteredVersion {
                    name: name.clone(),
                    version: *version,
                    hash: r.hash,
                    current: current == Some(*version),
                    added,
                });
            }
        }
        for (name, versions) in registered.iter() {
            for version in versions.keys() {
                if !new_registered
                    .get(name)
                    .is_some_and(|new| new.contains_key(version))
                {
                    report.removed.push((name.clone(), *version));
                }
            }
        }
        *registered = new_registered;
        Ok(report)
    }

    /// Every loaded definition that differs from one already registered or
    /// stored under its name and version, as one error naming its file.
    fn check_unchanged(&self, loaded: &[LoadedPipeline]) -> Result<(), Vec<PipelineError>> {
        let mut errors = Vec::new();
        let mut stored: HashMap<String, Vec<(u32, u64, PipelineDef)>> = HashMap::new();
        for l in loaded {
            let r = reference(&l.def);
            let changed = |hash: u64, other: &PipelineDef| hash != r.hash && *other != l.def;
            let in_memory = self
                .by_ref
                .read()
                .iter()
                .any(|(k, d)| k.name == r.name && k.version == r.version && changed(k.hash, d));
            if !stored.contains_key(&r.name) {
                match self
                    .store
                    .pipeline_definitions::<PipelineDef, OlderPipelineDefs>(
                        &r.name,
                        STORED_DEFINITIONS_SCAN_MAX,
                    ) {
                    Ok(defs) => {
                        stored.insert(r.name.clone(), defs);
                    }
                    Err(e) => {
                        errors.push(PipelineError::new(
                            &l.file,
                            None,
                            PipelineErrorKind::Io {
                                message: format!("cannot read the stored definitions: {e}"),
                            },
                        ));
                        continue;
                    }
                }
            }
            let in_store = stored[&r.name]
                .iter()
                .any(|(version, hash, d)| *version == r.version && changed(*hash, d));
            if in_memory || in_store {
                errors.push(PipelineError::new(
                    &l.file,
                    None,
                    PipelineErrorKind::ChangedWithoutNewVersion {
                        name: r.name.clone(),
                        version: r.version,
                    },
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::load::parse_pipeline;
    use crate::storage::{MemoryStorage, Storage};

    fn loaded(file: &str, text: &str) -> LoadedPipeline {
        LoadedPipeline {
            file: file.into(),
            def: parse_pipeline(text, file, &PipelineLimits::default()).unwrap(),
        }
    }

    const V1: &str = "[pipeline]\nname = \"p\"\nversion = 1\n[[steps]]\nname = \"a\"\n";
    const V1_COSMETIC: &str =
        "# a comment\n[pipeline]\nname = \"p\"\nversion = 1\n\n[[steps]]\nname = \"a\" # same\n";
    const V1_CHANGED: &str =
        "[pipeline]\nname = \"p\"\nversion = 1\n[[steps]]\nname = \"a\"\n[[steps]]\nname = \"b\"\n";

    #[test]
    fn a_definition_changed_under_a_stored_version_is_refused_after_a_restart() {
        let storage = Arc::new(MemoryStorage::new());
        let store = WorkflowStore::open(storage.clone(), 2).unwrap();
        let first = PipelineRegistry::open(store.clone(), vec![loaded("p.toml", V1)], "dir".into())
            .unwrap();
        storage.write(&first.persist_ops().unwrap(), true).unwrap();
        drop(first);

        // The same definition, formatted differently: the same pipeline.
        let again = PipelineRegistry::open(
            store.clone(),
            vec![loaded("p.toml", V1_COSMETIC)],
            "dir".into(),
        );
        assert!(again.is_ok());

        let errors = PipelineRegistry::open(
            store.clone(),
            vec![loaded("dir/p-edited.toml", V1_CHANGED)],
            "dir".into(),
        )
        .err()
        .expect("a changed definition under version 1 is refused");
        assert_eq!(errors.len(), 1);
        let line = errors[0].to_string();
        for part in ["dir/p-edited.toml", "\"p\"", "version 1", "new version"] {
            assert!(line.contains(part), "{part} missing from {line}");
        }
    }

    #[test]
    fn versions_are_startable_by_number_and_the_highest_is_current() {
        let store = WorkflowStore::open(Arc::new(MemoryStorage::new()), 2).unwrap();
        let v2 = V1_CHANGED.replace("version = 1", "version = 2");
        let r = PipelineRegistry::new(store, vec![loaded("a", V1).def, loaded("b", &v2).def]);
        assert_eq!(r.current("p").unwrap().0.version, 2);
        assert_eq!(r.startable("p", None).unwrap().0.version, 2);
        assert_eq!(r.startable("p", Some(1)).unwrap().1.steps.len(), 1);
        let e = r.startable("p", Some(7)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pipeline \"p\" has no registered version 7 (registered: 1, 2)"
        );
        assert_eq!(
            r.startable("q", None).unwrap_err(),
            NotStartable::UnknownPipeline("q".into())
        );
    }
}
