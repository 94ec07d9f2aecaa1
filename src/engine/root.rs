//! Root supervisor: one partition actor per partition, restarted on failure.
//! A restarted partition recovers its workflows from storage like at boot.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::partition::{PartitionActor, PartitionArgs};
use super::{EngineCtx, Router};

pub enum RootMsg {}

pub struct RootArgs {
    pub ctx: Arc<EngineCtx>,
    pub router: Arc<Router>,
}

pub struct RootState {
    ctx: Arc<EngineCtx>,
    router: Arc<Router>,
    by_actor: HashMap<ActorId, u16>,
}

pub struct RootActor;

impl RootActor {
    async fn spawn_partition(
        myself: &ActorRef<RootMsg>,
        st: &mut RootState,
        index: u16,
    ) -> Result<(), ActorProcessingErr> {
        let args = PartitionArgs {
            index,
            ctx: st.ctx.clone(),
        };
        let (p, _) = Actor::spawn_linked(None, PartitionActor, args, myself.get_cell()).await?;
        st.by_actor.insert(p.get_id(), index);
        st.router.set(usize::from(index), p);
        Ok(())
    }
}

impl Actor for RootActor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RootMsg>,
        args: RootArgs,
    ) -> Result<RootState, ActorProcessingErr> {
        let mut st = RootState {
            ctx: args.ctx,
            router: args.router,
            by_actor: HashMap::new(),
        };
        for i in 0..st.ctx.store.partitions() {
            Self::spawn_partition(&myself, &mut st, i).await?;
        }
        Ok(st)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        evt: SupervisionEvent,
        st: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = evt {
            if let Some(index) = st.by_actor.remove(&cell.get_id()) {
                tracing::error!(partition = index, error = %err, "partition failed; restarting it");
                Self::spawn_partition(&myself, st, index).await?;
            }
        }
        Ok(())
    }
}
