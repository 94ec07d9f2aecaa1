//! Pipeline definitions known to the engine: the current version of each
//! pipeline (for new workflows) and every definition a stored workflow
//! references (loaded from storage by content hash on first use).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::pipeline::PipelineDef;
use crate::storage::store::WorkflowStore;
use crate::storage::Op;
use crate::workflow::PipelineRef;

pub struct PipelineRegistry {
    current: HashMap<String, (PipelineRef, Arc<PipelineDef>)>,
    by_ref: RwLock<HashMap<PipelineRef, Arc<PipelineDef>>>,
    store: WorkflowStore,
}

impl PipelineRegistry {
    /// Registers `defs` as the current pipelines; with several versions of one
    /// name, the highest version is current.
    pub fn new(store: WorkflowStore, defs: Vec<PipelineDef>) -> Self {
        let mut current: HashMap<String, (PipelineRef, Arc<PipelineDef>)> = HashMap::new();
        let mut by_ref = HashMap::new();
        for def in defs {
            let r = PipelineRef {
                name: def.name.clone(),
                version: def.version,
                hash: def.content_hash(),
            };
            let def = Arc::new(def);
            by_ref.insert(r.clone(), def.clone());
            let newer = current
                .get(&r.name)
                .is_none_or(|(old, _)| old.version < r.version);
            if newer {
                current.insert(r.name.clone(), (r, def));
            }
        }
        PipelineRegistry {
            current,
            by_ref: RwLock::new(by_ref),
            store,
        }
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

    pub fn current(&self, name: &str) -> Option<(PipelineRef, Arc<PipelineDef>)> {
        self.current.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.current.keys().cloned().collect();
        v.sort();
        v
    }

    /// The exact definition a workflow started with.
    pub fn get(&self, r: &PipelineRef) -> Result<Arc<PipelineDef>, String> {
        if let Some(d) = self.by_ref.read().get(r) {
            return Ok(d.clone());
        }
        let loaded: Option<PipelineDef> = self
            .store
            .load_pipeline(&r.name, r.version, r.hash)
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
}
