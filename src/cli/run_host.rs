//! The engine of a cluster-mode node as the lease shell sees it
//! ([`PartitionHost`]): partition starts and stops the ownership core asks
//! for become [`Engine::start_partition`] and [`Engine::stop_partition`].
//!
//! The lease shell runs before the engine exists (the node takes its
//! leases first). Until then the host only notes which partitions are
//! wanted, and the engine starts serving exactly those; the lock held
//! across that start orders it with the shell's later requests.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};

use futures_util::future::BoxFuture;

use crate::engine::{Engine, EngineCtx, Serve};
use crate::transport::nats::PartitionHost;

#[derive(Default)]
struct HostState {
    /// Set once the engine started; dangling once it is dropped.
    engine: Option<Weak<Engine>>,
    /// Before the engine starts: the partitions it is to serve.
    wanted: BTreeSet<u16>,
}

/// Connects the lease shell to the node's engine.
pub(super) struct EngineHost {
    state: tokio::sync::Mutex<HostState>,
    /// The partitions the engine serves now: what the per-partition
    /// subscriptions (admin requests, results) follow.
    served: tokio::sync::watch::Sender<BTreeSet<u16>>,
}

impl Default for EngineHost {
    fn default() -> Self {
        EngineHost {
            state: Default::default(),
            served: tokio::sync::watch::channel(BTreeSet::new()).0,
        }
    }
}

impl EngineHost {
    /// The partitions the engine serves, as they change: a partition is in
    /// the set once its engine partition has started, and out of it once it
    /// has stopped.
    pub(super) fn served(&self) -> tokio::sync::watch::Receiver<BTreeSet<u16>> {
        self.served.subscribe()
    }

    fn publish(&self, engine: &Engine) {
        let now: BTreeSet<u16> = engine.served_partitions().into_iter().collect();
        self.served.send_if_modified(|s| {
            let changed = *s != now;
            *s = now;
            changed
        });
    }

    /// Starts the engine serving the partitions wanted so far.
    pub(super) async fn start_engine(&self, ctx: EngineCtx) -> Result<Arc<Engine>, String> {
        let mut st = self.state.lock().await;
        let serve = Serve::Only(st.wanted.iter().copied().collect());
        let engine = Arc::new(
            Engine::start_serving(ctx, serve)
                .await
                .map_err(|e| e.to_string())?,
        );
        st.engine = Some(Arc::downgrade(&engine));
        self.publish(&engine);
        Ok(engine)
    }
}

impl PartitionHost for EngineHost {
    fn start(&self, partition: u16) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut st = self.state.lock().await;
            match &st.engine {
                None => {
                    st.wanted.insert(partition);
                    Ok(())
                }
                Some(weak) => match weak.upgrade() {
                    Some(engine) => {
                        let started = engine
                            .start_partition(partition)
                            .await
                            .map_err(|e| e.to_string());
                        self.publish(&engine);
                        started
                    }
                    // The engine has shut down: the node is leaving.
                    None => Ok(()),
                },
            }
        })
    }

    fn stop(&self, partition: u16) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut st = self.state.lock().await;
            match &st.engine {
                None => {
                    st.wanted.remove(&partition);
                }
                Some(weak) => {
                    if let Some(engine) = weak.upgrade() {
                        // Only a shut-down engine fails here, and it has
                        // nothing in flight.
                        let _ = engine.stop_partition(partition).await;
                        self.publish(&engine);
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn before_the_engine_starts_the_host_notes_the_partitions_wanted() {
        let host = EngineHost::default();
        host.start(3).await.unwrap();
        host.start(1).await.unwrap();
        host.start(3).await.unwrap();
        host.stop(1).await;
        host.stop(5).await;
        host.start(0).await.unwrap();
        let st = host.state.lock().await;
        assert_eq!(st.wanted.iter().copied().collect::<Vec<_>>(), vec![0, 3]);
        assert!(st.engine.is_none());
    }
}
