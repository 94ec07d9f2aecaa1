//! The timings of leases and heartbeats.

/// How long a lease or a registration lives and how often it is renewed.
/// Every duration is in milliseconds of the clock the shell passes in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The bucket's TTL: an entry not renewed for this long is gone, and
    /// another node may take the lease by CAS.
    pub ttl_ms: u64,
    /// A holder counts its lease valid until `sent + ttl − margin`, where
    /// `sent` is when it sent the write that the bucket confirmed. The
    /// margin covers clock-rate differences between the holder and the
    /// bucket; the holder stops serving before the bucket lets anyone else
    /// take the lease.
    pub margin_ms: u64,
    /// A held lease and the registration are renewed this often.
    pub renew_every_ms: u64,
    /// The node list and the lease table are read this often.
    pub scan_every_ms: u64,
    /// A write without an answer after this long is given up (its effect,
    /// if it applied, is recognised later by its term).
    pub op_timeout_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl_ms: 10_000,
            margin_ms: 2_000,
            renew_every_ms: 2_000,
            scan_every_ms: 2_000,
            op_timeout_ms: 3_000,
        }
    }
}

impl LeaseConfig {
    /// Refuses timings under which a holder could not renew before its lease
    /// runs out.
    pub fn validate(&self) -> Result<(), String> {
        if self.margin_ms == 0 || self.margin_ms >= self.ttl_ms {
            return Err(format!(
                "lease margin ({} ms) must be above 0 and below the TTL ({} ms)",
                self.margin_ms, self.ttl_ms
            ));
        }
        let valid_ms = self.ttl_ms - self.margin_ms;
        if self.renew_every_ms == 0 || self.renew_every_ms + self.op_timeout_ms > valid_ms {
            return Err(format!(
                "lease renewal every {} ms plus a write timeout of {} ms must fit in the \
                 {} ms a lease is counted valid (TTL − margin), so one lost renewal is retried in time",
                self.renew_every_ms, self.op_timeout_ms, valid_ms
            ));
        }
        if self.scan_every_ms == 0 || self.op_timeout_ms == 0 {
            return Err("lease scan and write timeout must be above 0".into());
        }
        Ok(())
    }

    /// How long after a confirmed write a holder counts its lease valid.
    pub fn valid_ms(&self) -> u64 {
        self.ttl_ms - self.margin_ms
    }
}
