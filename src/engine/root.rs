//! Root supervisor: one partition actor per partition this node serves,
//! restarted on failure. A restarted partition recovers its workflows from
//! storage like at boot. The engine asks it to serve a partition
//! ([`RootMsg::Serve`]) or to let one go ([`RootMsg::Release`]); both go
//! through this actor so that a partition let go is never restarted by a
//! failure reported at the same time.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::partition::{PartitionActor, PartitionArgs, PartitionMsg};
use super::{EngineCtx, Router};

pub enum RootMsg {
    /// Spawn partition `index` (it recovers from storage in its start) and
    /// route to it; answered once it serves, or with why it cannot start.
    /// A partition already served is left as it is.
    Serve {
        index: u16,
        reply: RpcReplyPort<Result<(), String>>,
    },
    /// Stop routing to partition `index` and forget it (a later failure
    /// does not restart it); answers its actor, for the caller to stop.
    Release {
        index: u16,
        reply: RpcReplyPort<Option<ActorRef<PartitionMsg>>>,
    },
}

pub struct RootArgs {
    pub ctx: Arc<EngineCtx>,
    pub router: Arc<Router>,
    /// The partitions served from the start.
    pub serve: Vec<u16>,
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
        st.router.set(index, p);
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
        for i in args.serve {
            Self::spawn_partition(&myself, &mut st, i).await?;
        }
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<RootMsg>,
        msg: RootMsg,
        st: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::Serve { index, reply } => {
                let r = if st.router.serves(index) {
                    Ok(())
                } else {
                    Self::spawn_partition(&myself, st, index)
                        .await
                        .map_err(|e| format!("partition {index} cannot start: {e}"))
                };
                let _ = reply.send(r);
            }
            RootMsg::Release { index, reply } => {
                let actor = st.router.unset(index);
                if let Some(a) = &actor {
                    st.by_actor.remove(&a.get_id());
                }
                let _ = reply.send(actor);
            }
        }
        Ok(())
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
