//! `list` and the status-index scan it shares with batch jobs: which
//! workflows a [`Filter`] selects, paged by a cursor.

use super::wire::{Filter, ListReply, ListRequest, ListedWorkflow};
use super::{code, AdminError, LIST_PAGE_DEFAULT, LIST_PAGE_MAX, LIST_SCAN_MAX};
use crate::engine::Engine;
use crate::protocol::VERSION;
use crate::storage::store::WorkflowStore;
use crate::storage::StatusEntry;
use crate::workflow::Status;

/// A parsed [`Filter`]: status codes to scan and the cut-off time.
#[derive(Debug, Clone)]
pub struct Selection {
    pub statuses: Vec<Status>,
    pub pipeline: Option<String>,
    /// Status changed at or after this time (unix ms).
    pub changed_after_ms: Option<u64>,
    pub created_after_ms: Option<u64>,
    pub created_before_ms: Option<u64>,
    pub id_prefix: Option<String>,
}

impl Selection {
    pub fn new(filter: &Filter, now_ms: u64) -> Result<Selection, AdminError> {
        let statuses = match &filter.status {
            None => Status::ALL.to_vec(),
            Some(s) => vec![Status::parse(s).ok_or_else(|| {
                AdminError::bad(format!(
                    "unknown status {s:?} (use running, paused, completed, failed or cancelled)"
                ))
            })?],
        };
        Ok(Selection {
            statuses,
            pipeline: filter.pipeline.clone(),
            changed_after_ms: filter.since_ms.map(|d| now_ms.saturating_sub(d)),
            created_after_ms: filter.created_after_ms,
            created_before_ms: filter.created_before_ms,
            id_prefix: filter.id_prefix.clone(),
        })
    }

    fn matches(&self, id: &str, e: &StatusEntry) -> bool {
        self.pipeline.as_ref().is_none_or(|p| *p == e.pipeline)
            && self.changed_after_ms.is_none_or(|t| e.updated_at_ms >= t)
            && self.created_after_ms.is_none_or(|t| e.created_at_ms >= t)
            && self.created_before_ms.is_none_or(|t| e.created_at_ms < t)
            && self
                .id_prefix
                .as_ref()
                .is_none_or(|p| id.starts_with(p.as_str()))
    }
}

/// Where a scan of the status index stands: status position, partition, last id seen.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanCursor {
    pub status: usize,
    pub partition: u16,
    pub after: Option<String>,
}

impl ScanCursor {
    pub(super) fn encode(&self) -> String {
        format!(
            "{}:{}:{}",
            self.status,
            self.partition,
            self.after.as_deref().unwrap_or("")
        )
    }

    pub(super) fn decode(s: &str) -> Option<ScanCursor> {
        let mut it = s.splitn(3, ':');
        let status = it.next()?.parse().ok()?;
        let partition = it.next()?.parse().ok()?;
        let after = it.next()?;
        Some(ScanCursor {
            status,
            partition,
            after: (!after.is_empty()).then(|| after.to_string()),
        })
    }
}

/// Walks the status index from `cursor`, collecting up to `want` matches while
/// examining at most `budget` entries. Returns the matches and where to go on
/// (`None` once the index is exhausted). Blocking: call off the runtime.
pub fn scan_status_index(
    store: &WorkflowStore,
    sel: &Selection,
    cursor: ScanCursor,
    want: usize,
    budget: usize,
) -> Result<(Vec<ListedWorkflow>, Option<ScanCursor>), String> {
    scan_cells(store, sel, cursor, want, budget, false)
}

/// [`scan_status_index`] over the index, or (`one_cell`) over the cursor's
/// status in the cursor's partition only: `None` once that cell is
/// exhausted.
fn scan_cells(
    store: &WorkflowStore,
    sel: &Selection,
    mut cursor: ScanCursor,
    want: usize,
    budget: usize,
    one_cell: bool,
) -> Result<(Vec<ListedWorkflow>, Option<ScanCursor>), String> {
    const CHUNK: usize = 512;
    let mut out = Vec::new();
    let mut examined = 0usize;
    while cursor.status < sel.statuses.len() {
        let status = sel.statuses[cursor.status];
        while cursor.partition < store.partitions() {
            loop {
                if out.len() >= want || examined >= budget {
                    return Ok((out, Some(cursor)));
                }
                let n = CHUNK.min(budget - examined);
                let page: Vec<(String, StatusEntry)> = match &cursor.after {
                    None => store.list_status(cursor.partition, status.code(), n),
                    Some(after) => {
                        store.list_status_after(cursor.partition, status.code(), after, n)
                    }
                }
                .map_err(|e| e.to_string())?;
                let full = page.len() == n;
                for (id, entry) in page {
                    examined += 1;
                    cursor.after = Some(id.clone());
                    if sel.matches(&id, &entry) {
                        out.push(ListedWorkflow {
                            id,
                            status: status.to_string(),
                            pipeline: entry.pipeline,
                            created_at_ms: entry.created_at_ms,
                            updated_at_ms: entry.updated_at_ms,
                        });
                        if out.len() >= want {
                            return Ok((out, Some(cursor)));
                        }
                    }
                }
                if !full {
                    break;
                }
            }
            if one_cell {
                return Ok((out, None));
            }
            cursor.partition += 1;
            cursor.after = None;
        }
        cursor.status += 1;
        cursor.partition = 0;
    }
    Ok((out, None))
}

/// The cursor a request names, or the start of the index.
pub(super) fn request_cursor(r: &ListRequest) -> Result<ScanCursor, AdminError> {
    match &r.cursor {
        None => Ok(ScanCursor {
            status: 0,
            partition: 0,
            after: None,
        }),
        Some(c) => ScanCursor::decode(c).ok_or_else(|| AdminError::bad("malformed cursor")),
    }
}

/// `list` over this node's store: the whole index (a single node), or one
/// cell (`r.cell`: the cursor's status in the cursor's partition, which
/// this node must serve), asked for by a cluster node
/// ([`super::list_cluster`]).
pub(super) async fn list(r: ListRequest, engine: &Engine) -> Result<ListReply, AdminError> {
    let want = r.limit.unwrap_or(LIST_PAGE_DEFAULT).clamp(1, LIST_PAGE_MAX) as usize;
    let sel = Selection::new(&r.filter, engine.ctx().clock.now_ms())?;
    let cursor = request_cursor(&r)?;
    let one_cell = r.cell;
    if one_cell && !engine.serves(cursor.partition) {
        return Err(crate::engine::Error::NotServed(cursor.partition).into());
    }
    let store = engine.ctx().store.clone();
    let (mut workflows, next) = tokio::task::spawn_blocking(move || {
        scan_cells(&store, &sel, cursor, want, LIST_SCAN_MAX, one_cell)
    })
    .await
    .map_err(|e| AdminError::new(code::UNAVAILABLE, e.to_string()))?
    .map_err(|e| AdminError::new(code::UNAVAILABLE, e))?;
    if let Some(kind) = &r.filter.error_kind {
        // Not in the status index: each candidate's state says. The page
        // may come out short; the cursor still says where to go on.
        let mut kept = Vec::with_capacity(workflows.len());
        for w in workflows {
            let Some(wf) = engine.describe(&w.id).await? else {
                continue;
            };
            if wf
                .steps
                .iter()
                .any(|s| s.last_error.as_ref().is_some_and(|e| e.kind == *kind))
            {
                kept.push(w);
            }
        }
        workflows = kept;
    }
    Ok(ListReply {
        v: VERSION,
        workflows,
        cursor: next.map(|c| c.encode()),
        ..ListReply::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_ids_with_colons() {
        let c = ScanCursor {
            status: 2,
            partition: 7,
            after: Some("a:b:c".into()),
        };
        assert_eq!(ScanCursor::decode(&c.encode()), Some(c));
        assert_eq!(ScanCursor::decode("x"), None);
        assert_eq!(
            ScanCursor::decode("0:0:"),
            Some(ScanCursor {
                status: 0,
                partition: 0,
                after: None
            })
        );
    }
}
