//! Readiness: what `/readyz` waits for before it answers 200.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::storage::WriteHealth;
use crate::transport::nats::NatsStats;

/// What readiness waits for. Shared (`Arc`) between the service, which sets
/// the flags as it comes up, and the server, which reads them.
#[derive(Debug, Default)]
pub struct Readiness {
    /// The data dir is open and the pipelines are stored.
    pub storage_open: AtomicBool,
    /// Every partition has recovered its workflows (the engine has started).
    pub recovery_done: AtomicBool,
    /// The NATS connection, when the service needs one (`None`: not needed).
    pub nats: Option<Arc<NatsStats>>,
    /// Whether journal writes fail (a full disk, a failing device): not
    /// ready while they do. Set once the storage is open.
    pub writes: OnceLock<Arc<WriteHealth>>,
}

impl Readiness {
    /// Readiness that also waits for the NATS connection behind `nats`.
    pub fn with_nats(nats: Arc<NatsStats>) -> Readiness {
        Readiness {
            nats: Some(nats),
            ..Readiness::default()
        }
    }

    pub fn set_storage_open(&self) {
        self.storage_open.store(true, Ordering::Release);
    }

    pub fn set_recovery_done(&self) {
        self.recovery_done.store(true, Ordering::Release);
    }

    /// Readiness follows the outcome of journal writes from now on.
    pub fn watch_writes(&self, health: Arc<WriteHealth>) {
        let _ = self.writes.set(health);
    }

    /// `Ok` when ready to serve, else what is missing, e.g.
    /// `not ready: recovery not done, nats not connected`.
    pub fn ready(&self) -> Result<(), String> {
        let mut missing: Vec<String> = Vec::new();
        if !self.storage_open.load(Ordering::Acquire) {
            missing.push("storage not open".into());
        }
        if let Some(e) = self.writes.get().and_then(|w| w.failing()) {
            missing.push(format!(
                "journal writes failing ({})",
                crate::protocol::one_line(e)
            ));
        }
        if !self.recovery_done.load(Ordering::Acquire) {
            missing.push("recovery not done".into());
        }
        if let Some(n) = &self.nats {
            if !n.is_connected() {
                missing.push("nats not connected".into());
            }
            missing.extend(n.streams_wrong());
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("not ready: {}", missing.join(", ")))
        }
    }
}
