//! One workflow start of a load run, retried while the answer is
//! `unavailable` or lost.

use std::time::Duration;

use crate::admin::WorkflowReply;

/// Sends one `start`; `Ok` only for a workflow this run created. An
/// answer `unavailable` and a lost reply are retried with the same id
/// until `timeout`: the id is this run's own, so an existing workflow found
/// by a retry is the one an earlier try created.
pub(super) async fn start_one(
    client: &async_nats::Client,
    subject: String,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(), String> {
    let body = bytes::Bytes::from(body);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    let mut tried = false;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let attempt = tokio::time::timeout(
            left.min(START_TRY_TIMEOUT),
            client.request(subject.clone(), body.clone()),
        )
        .await;
        let retry = match attempt {
            Err(_) => format!("no start reply within {:?}", left.min(START_TRY_TIMEOUT)),
            Ok(Err(e)) => format!("start request failed: {e}"),
            Ok(Ok(msg)) => {
                let reply: WorkflowReply = serde_json::from_slice(&msg.payload)
                    .map_err(|e| format!("bad start reply: {e}"))?;
                match (reply.error, reply.code.as_deref()) {
                    (Some(e), Some(crate::admin::code::UNAVAILABLE)) => e,
                    (Some(e), _) => return Err(e),
                    (None, _) if reply.created == Some(true) || tried => return Ok(()),
                    (None, _) => return Err("the id already existed (created=false)".into()),
                }
            }
        };
        tried = true;
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(retry);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// One try of a start waits this long at most for its reply.
const START_TRY_TIMEOUT: Duration = Duration::from_secs(5);
