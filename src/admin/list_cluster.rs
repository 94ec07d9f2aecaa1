//! `list` on a cluster node: the status index is split by partition over
//! the nodes, so the entry node walks it cell by cell (one status in one
//! partition, in the order a single node's scan takes), scanning the cells
//! of the partitions it serves itself and asking the serving node for the
//! others (a `list` request with `cell` set, forwarded as in
//! [`super::route`]). The page and its cursor are those a single node
//! holding every partition would give, so clients page the same way.

use super::error::code;
use super::list::request_cursor;
use super::route::Routing;
use super::wire::{ListReply, ListRequest};
use super::{AdminError, LIST_PAGE_DEFAULT, LIST_PAGE_MAX};
use crate::engine::Engine;
use crate::protocol::subjects::Subjects;
use crate::protocol::VERSION;
use crate::workflow::Status;

/// Most cells one `list` request visits; the page ends early with a cursor
/// past them (a filter that matches little must not fan out without end).
pub const LIST_CELLS_MAX: usize = 256;

pub(super) async fn list_cluster(
    r: ListRequest,
    engine: &Engine,
    routing: &Routing,
    client: &async_nats::Client,
    subjects: &Subjects,
) -> Result<ListReply, AdminError> {
    let want = r.limit.unwrap_or(LIST_PAGE_DEFAULT).clamp(1, LIST_PAGE_MAX) as usize;
    let statuses = match &r.filter.status {
        Some(_) => 1,
        None => Status::ALL.len(),
    };
    let partitions = engine.ctx().store.partitions();
    let mut cursor = request_cursor(&r)?;
    let mut workflows = Vec::new();
    for _ in 0..LIST_CELLS_MAX {
        if cursor.status >= statuses {
            return Ok(reply(workflows, None));
        }
        if cursor.partition >= partitions {
            cursor.status += 1;
            cursor.partition = 0;
            cursor.after = None;
            continue;
        }
        let cell = ListRequest {
            v: VERSION,
            filter: r.filter.clone(),
            limit: Some((want - workflows.len()) as u32),
            cursor: Some(cursor.encode()),
            cell: true,
        };
        let answer = if engine.serves(cursor.partition) {
            super::list::list(cell, engine).await?
        } else {
            ask(routing, client, subjects, cursor.partition, &cell).await?
        };
        workflows.extend(answer.workflows);
        match answer.cursor {
            // The cell has more (the page is full or its scan budget spent).
            Some(next) => return Ok(reply(workflows, Some(next))),
            None => {
                cursor.partition += 1;
                cursor.after = None;
            }
        }
        if workflows.len() >= want {
            return Ok(reply(workflows, Some(cursor.encode())));
        }
    }
    Ok(reply(workflows, Some(cursor.encode())))
}

fn reply(workflows: Vec<super::wire::ListedWorkflow>, cursor: Option<String>) -> ListReply {
    ListReply {
        v: VERSION,
        workflows,
        cursor,
        ..ListReply::default()
    }
}

/// One cell from the node serving `partition`.
async fn ask(
    routing: &Routing,
    client: &async_nats::Client,
    subjects: &Subjects,
    partition: u16,
    cell: &ListRequest,
) -> Result<ListReply, AdminError> {
    let payload = serde_json::to_vec(cell).map_err(|e| AdminError::bad(e.to_string()))?;
    let body = routing
        .forward_payload(client, subjects, partition, "list", payload.into(), None)
        .await;
    let answer: ListReply = serde_json::from_slice(&body).map_err(|e| {
        AdminError::new(
            code::UNAVAILABLE,
            format!("unavailable: unreadable list answer for partition {partition}: {e}"),
        )
    })?;
    match (answer.error, answer.code) {
        (Some(error), Some(c)) => Err(AdminError::new(known_code(&c), error)),
        _ => Ok(ListReply {
            error: None,
            code: None,
            ..answer
        }),
    }
}

/// The `&'static` code of an error another node answered.
fn known_code(c: &str) -> &'static str {
    if c == code::BAD_REQUEST {
        code::BAD_REQUEST
    } else {
        code::UNAVAILABLE
    }
}
