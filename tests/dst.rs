//! Deterministic simulation of the engine (`src/dst`): many seeds of
//! seeded faults, each judged by the checker. A failing seed is printed with
//! the command that replays exactly that seed.
//!
//! * `NARRALYTICA_DST_SEED=S`: run only seed `S` and print its report.
//! * `NARRALYTICA_DST_SEEDS=N`: seeds per run (default 5000).
//! * `NARRALYTICA_DST_FIRST=F`: first seed (default 1).

use std::time::Instant;

use orchestrator::dst::{run_seed, DstConfig, Plant, Report};
use orchestrator::engine::partition_core::CorePlant;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn replay_hint(seed: u64) -> String {
    format!(
        "reproduce: NARRALYTICA_DST_SEED={seed} cargo test --release --test integration dst::seeds_ -- --nocapture"
    )
}

#[test]
fn seeds_with_faults_lose_nothing_and_accept_no_step_twice() {
    let cfg = DstConfig::default();
    if let Some(seed) = env_u64("NARRALYTICA_DST_SEED") {
        let r = run_seed(seed, &cfg);
        println!("{r}");
        for v in &r.violations {
            println!("  violation: {v}");
        }
        assert!(r.ok(), "seed {seed} failed; {}", replay_hint(seed));
        return;
    }
    let n = env_u64("NARRALYTICA_DST_SEEDS").unwrap_or(5000);
    let first = env_u64("NARRALYTICA_DST_FIRST").unwrap_or(1);
    let t0 = Instant::now();
    let mut total = orchestrator::dst::Stats::default();
    let mut failures: Vec<Report> = Vec::new();
    for seed in first..first + n {
        let r = run_seed(seed, &cfg);
        let s = &r.stats;
        total.events += s.events;
        total.accepted += s.accepted;
        total.completed += s.completed;
        total.failed += s.failed;
        total.dispatches += s.dispatches;
        total.extra_executions += s.extra_executions;
        total.flagged += s.flagged;
        total.timeouts += s.timeouts;
        total.dropped += s.dropped;
        total.duplicated += s.duplicated;
        total.worker_crashes += s.worker_crashes;
        total.orchestrator_crashes += s.orchestrator_crashes;
        total.crashes_losing_writes += s.crashes_losing_writes;
        total.lost_ops += s.lost_ops;
        total.clock_jumps += s.clock_jumps;
        total.purged += s.purged;
        total.children_completed += s.children_completed;
        total.children_failed += s.children_failed;
        if !r.ok() {
            eprintln!("FAILED {r}");
            for v in r.violations.iter().take(10) {
                eprintln!("  violation: {v}");
            }
            eprintln!("  {}", replay_hint(seed));
            failures.push(r);
        }
    }
    println!(
        "dst seeds={n} first={first} secs={:.1} events={} accepted={} completed={} failed={} dispatches={} extra_executions={} flagged={} timeouts={} dropped={} duplicated={} worker_crashes={} orchestrator_crashes={} crashes_losing_writes={} lost_ops={} clock_jumps={} purged={} failing_seeds={}",
        t0.elapsed().as_secs_f64(),
        total.events,
        total.accepted,
        total.completed,
        total.failed,
        total.dispatches,
        total.extra_executions,
        total.flagged,
        total.timeouts,
        total.dropped,
        total.duplicated,
        total.worker_crashes,
        total.orchestrator_crashes,
        total.crashes_losing_writes,
        total.lost_ops,
        total.clock_jumps,
        total.purged,
        failures.len()
    );
    let seeds: Vec<u64> = failures.iter().map(|r| r.seed).collect();
    assert!(
        failures.is_empty(),
        "{} failing seeds: {seeds:?}; {}",
        seeds.len(),
        seeds.first().map_or(String::new(), |s| replay_hint(*s))
    );
    // The faults really happened, and the runs did real work.
    let per_seed =
        (cfg.video_workflows + cfg.flaky_workflows + cfg.map_workflows + cfg.family_workflows)
            as u64;
    assert_eq!(total.accepted, n * per_seed, "every workflow got accepted");
    assert!(total.orchestrator_crashes > n / 2, "{total:?}");
    assert!(total.crashes_losing_writes > 0, "{total:?}");
    assert!(
        total.worker_crashes > 0 && total.clock_jumps > 0,
        "{total:?}"
    );
    assert!(
        total.dropped > 0 && total.duplicated > 0 && total.timeouts > 0,
        "{total:?}"
    );
    assert!(total.extra_executions > 0 && total.flagged > 0, "{total:?}");
    // The production partition core's policies ran: purges by retention
    // (the checker then judges a workflow from its journal as purged).
    assert!(total.purged > 0, "{total:?}");
    // Child workflows ran, and both of their ends reached their parents.
    assert!(
        total.children_completed > 0 && total.children_failed > 0,
        "{total:?}"
    );
    assert!(
        total.completed >= n * cfg.video_workflows as u64 * 99 / 100,
        "video workflows should nearly all complete: {total:?}"
    );
}

#[test]
fn a_seed_replays_bit_for_bit_and_seeds_differ() {
    let cfg = DstConfig::default();
    for seed in [3, 77, 1234] {
        let a = run_seed(seed, &cfg);
        let b = run_seed(seed, &cfg);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert_eq!(a.stats, b.stats, "seed {seed}");
        assert_eq!(a.violations, b.violations, "seed {seed}");
    }
    let hashes: std::collections::BTreeSet<u64> =
        (1..=20).map(|s| run_seed(s, &cfg).trace_hash).collect();
    assert_eq!(hashes.len(), 20, "20 seeds, 20 different traces");
}

#[test]
fn planted_ack_before_sync_is_caught_within_1000_seeds() {
    let cfg = DstConfig {
        plant: Some(Plant::AckBeforeSync),
        ..DstConfig::default()
    };
    let caught = (1..=1000u64).map(|s| run_seed(s, &cfg)).find(|r| !r.ok());
    let Some(r) = caught else {
        panic!("the planted bug (effects before the flush) was not caught in 1000 seeds");
    };
    println!("planted bug caught: {r}");
    for v in &r.violations {
        println!("  violation: {v}");
    }
    // It is blamed on durability, not on something unrelated.
    assert!(
        r.violations.iter().any(|v| v.starts_with("lost:")
            || v.starts_with("acknowledged but not durable")
            || v.starts_with("unflagged extra execution")),
        "{:?}",
        r.violations
    );
    // The same seed without the plant is clean.
    let clean = run_seed(r.seed, &DstConfig::default());
    assert!(clean.ok(), "{:?}", clean.violations);
}

#[test]
fn a_planted_bug_in_the_partition_core_is_caught_by_the_seeds() {
    // The production core forgets, on an actor crash, the inputs the
    // crashed actor had not handled (a fired timer, a timeout): the
    // simulator drives that same core, so some seed must end stuck.
    let cfg = DstConfig {
        core_plant: Some(CorePlant::ForgetUnhandledOnCrash),
        actor_crash_rate: 0.05,
        ..DstConfig::default()
    };
    let caught = (1..=1000u64).map(|s| run_seed(s, &cfg)).find(|r| !r.ok());
    let Some(r) = caught else {
        panic!("the planted core bug (unhandled inputs forgotten on a crash) was not caught in 1000 seeds");
    };
    println!("planted core bug caught: {r}");
    for v in &r.violations {
        println!("  violation: {v}");
    }
    // The same seed and fault rates without the plant are clean.
    let clean = run_seed(
        r.seed,
        &DstConfig {
            core_plant: None,
            ..cfg
        },
    );
    assert!(clean.ok(), "{:?}", clean.violations);
}

/// Parents (`family`) and their children (`kid`) alone, over many seeds:
/// children start through the node's lineage port, their ends reach their
/// parents, and the starts and reports an orchestrator crash discards are
/// performed again by recovery.
#[test]
fn seeds_with_child_workflows_settle_every_parent() {
    let cfg = DstConfig {
        video_workflows: 0,
        flaky_workflows: 0,
        map_workflows: 0,
        family_workflows: 6,
        ..DstConfig::default()
    };
    let n = env_u64("NARRALYTICA_DST_SEEDS").map_or(300, |n| n.min(300));
    let mut total = orchestrator::dst::Stats::default();
    let mut failing = Vec::new();
    for seed in 1..=n {
        let r = run_seed(seed, &cfg);
        if !r.ok() {
            eprintln!("FAILED {r}");
            for v in r.violations.iter().take(10) {
                eprintln!("  violation: {v}");
            }
            failing.push(seed);
        }
        let s = &r.stats;
        total.accepted += s.accepted;
        total.completed += s.completed;
        total.failed += s.failed;
        total.children_completed += s.children_completed;
        total.children_failed += s.children_failed;
        total.lineage_sent += s.lineage_sent;
        total.lineage_discarded += s.lineage_discarded;
        total.orchestrator_crashes += s.orchestrator_crashes;
    }
    println!("family seeds={n} {total:?}");
    assert!(failing.is_empty(), "failing seeds: {failing:?}");
    assert_eq!(total.accepted, n * 6, "{total:?}");
    // Half the families are doomed: their children fail, and they with them.
    assert!(total.children_failed >= n * 3, "{total:?}");
    assert!(total.failed >= n * 3, "{total:?}");
    assert!(total.children_completed > n * 2, "{total:?}");
    assert!(total.completed > n * 2, "{total:?}");
    // Crashes discarded lineage effects in flight, and nothing was lost.
    assert!(total.lineage_discarded > 0, "{total:?}");
}

#[test]
fn a_wrong_child_outcome_is_caught_by_the_lineage_checks() {
    let cfg = DstConfig {
        plant: Some(Plant::WrongChildOutcome),
        ..DstConfig::default()
    };
    let r = run_seed(5, &cfg);
    println!("planted wrong child outcome: {r}");
    assert!(
        r.violations.iter().any(|v| v.starts_with("child outcome:")),
        "{:?}",
        r.violations
    );
    // The doomed family completed on a failed child's "success".
    assert!(
        r.violations
            .iter()
            .any(|v| v.contains("expected failed (its child always fails)")),
        "{:?}",
        r.violations
    );
    let clean = run_seed(5, &DstConfig::default());
    assert!(clean.ok(), "{:?}", clean.violations);
}
