//! Crash failpoints for the reliability tests (`docs/reliability.md`).
//!
//! Every point is compiled in; none is active unless `orchestrator run` is
//! started with `FAILPOINTS="name=actions;name2=actions"` (the `fail` crate's
//! action syntax, e.g. `journal.after_append=5*off->return`). The `return`
//! action of a point in [`NAMES`] kills the process like kill -9
//! ([`std::process::abort`]: no unwinding, no destructors, no flush);
//! `return(MS)` first waits MS milliseconds (so a planted early answer can
//! leave the process). A panic is no crash here: actor supervision catches it.
//! Switched off, a point costs one read-locked registry lookup.
//!
//! Also the test-only planted bugs (`NARRALYTICA_PLANT`), the engine's
//! negative controls: production never sets them.

/// Every failpoint, with where it sits.
pub const NAMES: &[(&str, &str)] = &[
    (
        "journal.before_append",
        "workflow actor: decision prepared, batch not yet committed",
    ),
    (
        "journal.after_append",
        "workflow actor: batch synced, nothing published, dispatched or answered",
    ),
    (
        "dispatch.after_append",
        "after a synced batch, before its tasks are handed to the transport",
    ),
    (
        "snapshot.write",
        "a batch carrying a snapshot is prepared, not yet committed",
    ),
    (
        "result.received",
        "NATS intake: a result message received, not yet delivered nor acked",
    ),
    (
        "passivate",
        "partition: an idle actor chosen for passivation",
    ),
    (
        "outbox.publish",
        "event publisher: JetStream acked a window, its outbox rows not yet deleted",
    ),
    (
        "replicate.after_append",
        "cluster mode: a batch's journal records acknowledged, not yet written locally",
    ),
];

/// Evaluates failpoint `name`: with a `return` action, crashes the process.
#[inline]
pub fn point(name: &'static str) {
    fail::eval(name, |arg| -> () { crash(name, arg) });
}

fn crash(name: &str, arg: Option<String>) -> ! {
    let wait = arg.and_then(|a| a.trim().parse::<u64>().ok()).unwrap_or(0);
    eprintln!("failpoint {name}: crashing the process (abort, after {wait} ms)");
    if wait > 0 {
        let pause = || std::thread::sleep(std::time::Duration::from_millis(wait));
        // On a runtime worker, hand its queued tasks (the NATS publisher
        // woken by this very transition may sit in its LIFO slot) to
        // another thread first, so they run during the wait.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(pause),
            _ => pause(),
        }
    }
    std::process::abort()
}

/// Reads `FAILPOINTS` (`name=actions;...`) and configures the points.
/// Unknown names and bad actions are errors (a typo must not silently test
/// nothing). Returns the names configured.
pub fn setup_from_env() -> Result<Vec<String>, String> {
    let Ok(spec) = std::env::var("FAILPOINTS") else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, actions) = item
            .split_once('=')
            .ok_or_else(|| format!("FAILPOINTS: {item:?} is not name=actions"))?;
        let name = name.trim();
        if !NAMES.iter().any(|(n, _)| *n == name) {
            let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "FAILPOINTS: unknown failpoint {name:?} (known: {})",
                known.join(", ")
            ));
        }
        fail::cfg(name, actions.trim())
            .map_err(|e| format!("FAILPOINTS: {name}: {}", e.replace('\n', " ")))?;
        names.push(name.to_owned());
    }
    Ok(names)
}

/// Test-only planted bugs, each of which the system checker must catch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plants {
    /// Answer a start / a result before its journal write is synced.
    pub ack_before_sync: bool,
    /// Hand a decision's tasks to the transport before its append.
    pub dispatch_before_append: bool,
    /// Accept a success of a superseded attempt (the pure core gets the flag).
    pub skip_stale_check: bool,
}

/// Every plant `NARRALYTICA_PLANT` knows (comma-separated).
pub const PLANTS: &[&str] = &[
    "drop_events",
    "ack_before_sync",
    "dispatch_before_append",
    "skip_stale_check",
];

impl Plants {
    /// Parses the engine plants of a `NARRALYTICA_PLANT` value; `drop_events`
    /// is the outbox's and is left to the caller. Unknown names are errors.
    pub fn parse(value: &str) -> Result<(Plants, bool), String> {
        let mut p = Plants::default();
        let mut drop_events = false;
        for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "drop_events" => drop_events = true,
                "ack_before_sync" => p.ack_before_sync = true,
                "dispatch_before_append" => p.dispatch_before_append = true,
                "skip_stale_check" => p.skip_stale_check = true,
                _ => {
                    return Err(format!(
                        "NARRALYTICA_PLANT={value:?}: unknown test-only plant {name:?} (known: {})",
                        PLANTS.join(", ")
                    ))
                }
            }
        }
        Ok((p, drop_events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plants_parse_and_refuse_unknown_names() {
        let (p, d) = Plants::parse("ack_before_sync, skip_stale_check").unwrap();
        assert!(p.ack_before_sync && p.skip_stale_check && !p.dispatch_before_append && !d);
        assert!(Plants::parse("drop_events").unwrap().1);
        let e = Plants::parse("ack_before_sync,nope").unwrap_err();
        assert!(e.contains("\"nope\"") && !e.contains('\n'), "{e}");
    }
}

#[cfg(test)]
mod cost {
    /// What a switched-off point costs on the hot path (run by hand:
    /// `cargo test --release --lib failpoint_cost -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn failpoint_cost() {
        let n = 2_000_000u32;
        let t = std::time::Instant::now();
        for _ in 0..n {
            super::point(std::hint::black_box("journal.before_append"));
        }
        let ns = t.elapsed().as_nanos() as f64 / f64::from(n);
        eprintln!("failpoint switched off: {ns:.1} ns per point");
        assert!(ns < 10_000.0, "{ns} ns");
    }
}
