//! Connection state and route counters of the NATS transport.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Connection state of a NATS client, kept by its event callback; read by
/// the metrics exposition and by readiness.
#[derive(Debug, Default)]
pub struct NatsStats {
    connected: AtomicBool,
    /// Successful connections, the first one included.
    connects: AtomicU64,
    disconnects: AtomicU64,
    /// Tasks taken by a worker from a direct offer.
    pub tasks_direct: AtomicU64,
    /// Tasks published to the TASKS stream (offer declined, or not offered).
    pub tasks_stream: AtomicU64,
    /// Tasks whose message exceeds the server's `max_payload`: failed
    /// without a retry instead of published (`tasks_too_large_total`).
    pub tasks_too_large: AtomicU64,
    /// Results that came as the answer to their task's offer.
    pub results_in_offer_reply: AtomicU64,
    /// Direct offers that went to the stream, by [`OfferDeclined`] reason.
    pub offers_declined: [AtomicU64; OfferDeclined::ALL.len()],
    /// Streams and consumers found missing or altered and put back by the
    /// stream watch (`streams_recreated_total`).
    pub streams_recreated: AtomicU64,
    /// What the stream watch found wrong and could not put back yet, e.g.
    /// `stream NARRALYTICA_TASKS missing: ...`; empty when all is in place.
    streams_wrong: parking_lot::Mutex<Vec<String>>,
}

/// Why a direct task offer was not taken (the task then goes to the stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferDeclined {
    /// No worker listens on the task type's `tdirect` subject.
    NoWorker,
    /// The worker that got the offer had no free slot.
    Busy,
    /// No answer within `tasks_direct_timeout`.
    Timeout,
    /// The request failed otherwise, or the answer was unreadable.
    Error,
}

impl OfferDeclined {
    pub const ALL: [OfferDeclined; 4] = [
        OfferDeclined::NoWorker,
        OfferDeclined::Busy,
        OfferDeclined::Timeout,
        OfferDeclined::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            OfferDeclined::NoWorker => "no_worker",
            OfferDeclined::Busy => "busy",
            OfferDeclined::Timeout => "timeout",
            OfferDeclined::Error => "error",
        }
    }
}

impl NatsStats {
    /// The stream watch's latest findings (empty: every stream and consumer
    /// is as configured).
    pub fn set_streams_wrong(&self, wrong: Vec<String>) {
        *self.streams_wrong.lock() = wrong;
    }

    /// What readiness reports about the streams; empty when all is well.
    pub fn streams_wrong(&self) -> Vec<String> {
        self.streams_wrong.lock().clone()
    }

    /// The client (re)connected.
    pub fn note_connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    /// The client lost its connection (it keeps trying to reconnect).
    pub fn note_disconnected(&self) {
        self.connected.store(false, Ordering::Relaxed);
        self.disconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Connections after the first one.
    pub fn reconnects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed).saturating_sub(1)
    }

    pub fn disconnects(&self) -> u64 {
        self.disconnects.load(Ordering::Relaxed)
    }

    pub(super) fn declined(&self, why: OfferDeclined) {
        self.offers_declined[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}
