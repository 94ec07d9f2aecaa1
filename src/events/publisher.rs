//! The publisher: sends the outbox to JetStream in windows, in journal
//! order per workflow, deletes each row once acknowledged, and reads the
//! rows from storage after a restart or an overflow.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::mpsc;

use super::batching::batch_by_subject;
use super::{decode_outbox_row, EventsConfig, Outbox, OutboxItem, StoredOutbox};
use crate::storage::group_commit::GroupCommitter;
use crate::storage::store::WorkflowStore;
use crate::workflow::Status;

/// Publishes outbox messages until `rx` closes (the engine is gone) and
/// nothing is left in memory.
pub async fn run_publisher(
    outbox: Arc<Outbox>,
    mut rx: mpsc::Receiver<OutboxItem>,
    store: WorkflowStore,
    pipelines: Arc<crate::engine::registry::PipelineRegistry>,
    committer: Arc<GroupCommitter>,
    js: jetstream::Context,
    cfg: EventsConfig,
) {
    let stats = outbox.stats.clone();
    let mut backlog: VecDeque<OutboxItem> = VecDeque::new();
    let mut backoff = Duration::from_millis(100);
    let window_max = cfg.window_max.max(1);
    loop {
        if backlog.is_empty() && outbox.rescan.swap(false, Relaxed) {
            // Storage is the truth: what the channel holds is in it too.
            while rx.try_recv().is_ok() {}
            stats.scans.fetch_add(1, Relaxed);
            let (st, ob, pl) = (store.clone(), outbox.clone(), pipelines.clone());
            let limit = cfg.scan_max.max(1);
            let rows = tokio::task::spawn_blocking(move || {
                // Rows of partitions another node serves are that node's.
                let partitions = ob.published_partitions();
                st.scan_outbox_of(partitions.as_deref(), limit, decode_outbox_row)
                    .map(|rows| {
                        let n = rows.len();
                        let items: Vec<_> = rows
                            .into_iter()
                            .map(|(key, row)| {
                                let item = row
                                    .map_err(|e| e.to_string())
                                    .and_then(|(k, stored)| rebuild(&ob, &st, &pl, k, stored));
                                (key, item)
                            })
                            .collect();
                        (n, items)
                    })
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
            match rows {
                Ok((n, rows)) => {
                    if n >= limit {
                        outbox.rescan.store(true, Relaxed);
                    }
                    let mut bad = Vec::new();
                    for (key, item) in rows {
                        match item {
                            Ok(item) => backlog.push_back(item),
                            Err(e) => {
                                tracing::error!(error = %e, "outbox row cannot be published; dropped");
                                bad.push(crate::storage::Op::Delete(key));
                            }
                        }
                    }
                    if !bad.is_empty() {
                        let _ = committer.commit(bad).await;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the event outbox");
                    outbox.rescan.store(true, Relaxed);
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            }
        }
        if backlog.is_empty() {
            let next = tokio::select! {
                item = rx.recv() => item,
                // A partition joined: read its rows from storage.
                _ = outbox.rescan_wake.notified() => continue,
            };
            match next {
                Some(item) => backlog.push_back(item),
                None => return,
            }
            while backlog.len() < window_max * 4 {
                match rx.try_recv() {
                    Ok(item) => backlog.push_back(item),
                    Err(_) => break,
                }
            }
            if outbox.rescan.load(Relaxed) {
                // Overflowed meanwhile: these are in storage, in order.
                backlog.clear();
                continue;
            }
        }
        // One window: at most one message per workflow, taken in order.
        let mut in_window: HashSet<String> = HashSet::new();
        let mut window = Vec::new();
        let mut rest = VecDeque::with_capacity(backlog.len());
        while let Some(item) = backlog.pop_front() {
            if window.len() < window_max && in_window.insert(item.workflow_id.clone()) {
                window.push(item);
            } else {
                rest.push_back(item);
            }
        }
        backlog = rest;
        stats.backlog.store(backlog.len() as u64, Relaxed);
        // Records with the same subject share a message (in window order,
        // so each workflow's records stay in journal order).
        let groups = batch_by_subject(&window, cfg.batch_max.max(1), cfg.batch_max_bytes);
        let acks = groups.iter().map(|g| {
            let js = js.clone();
            let (payload, id) = g.message(&window);
            let msg = jetstream::message::PublishMessage::build()
                .payload(payload)
                .message_id(id);
            let subject = window[g.members[0]].subject.clone();
            async move {
                match js.send_publish(subject, msg).await {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        });
        let sent = futures_util::future::join_all(acks).await;
        crate::failpoints::point("outbox.publish");
        let mut results: Vec<Result<(), String>> = vec![Ok(()); window.len()];
        for (g, r) in groups.iter().zip(sent) {
            for &m in &g.members {
                results[m] = r.clone();
            }
        }
        stats.messages.fetch_add(groups.len() as u64, Relaxed);
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for (item, r) in window.into_iter().zip(results) {
            match r {
                Ok(()) => done.push(item),
                Err(e) => {
                    tracing::warn!(workflow_id = %item.workflow_id, seq = item.seq, error = %e, "event publish failed; will retry");
                    failed.push(item);
                }
            }
        }
        if !done.is_empty() {
            let ops: Vec<_> = done
                .iter()
                .filter_map(|i| store.outbox_delete(i.partition, &i.workflow_id, i.seq).ok())
                .collect();
            stats.published.fetch_add(done.len() as u64, Relaxed);
            // The next window does not wait for this delete, and the
            // delete costs no fsync of its own: a row whose delete is lost
            // (crash, error) is only sent again and de-duplicated.
            let committer = committer.clone();
            tokio::spawn(async move {
                if let Err(e) = committer.commit_unsynced(ops).await {
                    tracing::warn!(error = %e, "outbox rows not deleted; they will be sent again");
                }
            });
        }
        if failed.is_empty() {
            backoff = Duration::from_millis(100);
        } else {
            stats.failures.fetch_add(failed.len() as u64, Relaxed);
            // Failed ones first, so each workflow's order holds.
            for item in failed.into_iter().rev() {
                backlog.push_front(item);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// The message of an outbox row read back from storage: built again from
/// the journal record it names (an earlier build's row carries it whole).
fn rebuild(
    outbox: &Outbox,
    store: &WorkflowStore,
    pipelines: &crate::engine::registry::PipelineRegistry,
    key: crate::storage::keys::JournalKey,
    stored: StoredOutbox,
) -> Result<OutboxItem, String> {
    let entry = match stored {
        StoredOutbox::Message(entry) => entry,
        StoredOutbox::Mark(mark) => {
            let record: crate::workflow::JournalRecord = store
                .load_journal_record(key.partition, &key.id, key.seq)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{}: journal record {} is gone", key.id, key.seq))?;
            let def = pipelines.get(&mark.pipeline)?;
            let status = Status::from_code(mark.status)
                .ok_or_else(|| format!("{}: unknown status code {}", key.id, mark.status))?;
            outbox
                .message(
                    &key.id,
                    &def,
                    key.seq,
                    mark.generation,
                    status,
                    &record.events,
                )
                .ok_or_else(|| format!("{}: record {} has no events", key.id, key.seq))?
        }
    };
    Ok(OutboxItem {
        partition: key.partition,
        workflow_id: key.id,
        seq: key.seq,
        subject: entry.subject,
        payload: entry.payload.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::registry::PipelineRegistry;
    use crate::events::{OutboxEntry, OutboxMark, OutboxValue};
    use crate::storage::{MemoryStorage, Storage};
    use crate::workflow::{decide_start, JournalRecordRef};

    #[test]
    fn a_stored_mark_rebuilds_the_message_sent_after_the_commit_and_old_rows_still_read() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipelines/video.toml");
        let def = crate::pipeline::load::load_pipeline_file(&path, &Default::default()).unwrap();
        let mem = Arc::new(MemoryStorage::new());
        let store = WorkflowStore::open(mem.clone(), 4).unwrap();
        let pipelines = PipelineRegistry::new(store.clone(), vec![def]);
        let (pref, def) = pipelines.current("video").unwrap();
        let (outbox, _rx) = Outbox::new("narralytica", &EventsConfig::default()).unwrap();
        let id = "video-1";
        let decision = decide_start(id, pref.clone(), &def, r#"{"video_id":"v1"}"#, 1_000);
        let expected = outbox
            .message(id, &def, 1, 0, Status::Running, &decision.events)
            .unwrap();
        let record = JournalRecordRef {
            first_seq: 1,
            events: &decision.events,
        };
        let mark = OutboxValue::Mark(OutboxMark {
            pipeline: pref,
            generation: 0,
            status: Status::Running.code(),
        });
        // A row of an earlier build carries its message whole.
        let legacy = OutboxEntry {
            subject: "narralytica.events.video.workflow_paused".into(),
            payload: b"{\"v\":1}".to_vec(),
        };
        let ops = vec![
            store.journal_put(0, id, 1, &record).unwrap(),
            store.outbox_put(0, id, 1, &mark).unwrap(),
            store.outbox_put(0, id, 9, &legacy).unwrap(),
        ];
        mem.write(&ops, true).unwrap();
        let mark_bytes = mem
            .get(&crate::storage::keys::outbox(0, id, 1).unwrap())
            .unwrap()
            .unwrap();
        assert!(
            mark_bytes.len() * 5 < expected.payload.len(),
            "the row is a fraction of the message: {} vs {} bytes",
            mark_bytes.len(),
            expected.payload.len()
        );
        let rows = store.scan_outbox(10, decode_outbox_row).unwrap();
        let items: Vec<OutboxItem> = rows
            .into_iter()
            .map(|(_, row)| {
                let (k, stored) = row.unwrap();
                rebuild(&outbox, &store, &pipelines, k, stored).unwrap()
            })
            .collect();
        assert_eq!(items.len(), 2);
        assert_eq!((items[0].seq, &items[0].subject), (1, &expected.subject));
        assert_eq!(&items[0].payload[..], &expected.payload[..]);
        assert_eq!((items[1].seq, &items[1].subject), (9, &legacy.subject));
        assert_eq!(&items[1].payload[..], &legacy.payload[..]);
        // A mark whose record is gone cannot be published (the caller drops it).
        let gone = rebuild(
            &outbox,
            &store,
            &pipelines,
            crate::storage::keys::JournalKey {
                partition: 0,
                id: id.into(),
                seq: 2,
            },
            StoredOutbox::Mark(OutboxMark {
                pipeline: pipelines.current("video").unwrap().0,
                generation: 0,
                status: 1,
            }),
        );
        assert!(gone.is_err());
    }
}
