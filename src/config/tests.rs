//! Tests of the configuration: the shipped file, refusals by key name.

use std::path::{Path, PathBuf};

use super::*;

const SHIPPED: &str = include_str!("../../config/orchestrator.toml");

/// `path` with `.` and `dir/..` removed, without touching the filesystem.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[test]
fn the_shipped_file_states_exactly_the_defaults() {
    // Its paths are relative to its directory, the defaults' to the home: in
    // this repository both name the same directories.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut parsed = Config::load(&root.join("config/orchestrator.toml"))
        .expect("config/orchestrator.toml parses");
    assert!(parsed.source.is_some());
    parsed.source = None;
    let defaults = Config::defaults_under(Some(root));
    for (from_file, default) in [
        (&mut parsed.node.data_dir, &defaults.node.data_dir),
        (&mut parsed.node.pipelines_dir, &defaults.node.pipelines_dir),
    ] {
        assert_eq!(lexical(from_file), lexical(default));
        *from_file = default.clone();
    }
    assert_eq!(parsed, defaults);
}

#[test]
fn relative_paths_are_taken_under_the_config_files_directory_or_the_home() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orchestrator.toml");
    std::fs::write(
        &file,
        "[node]\npipelines_dir = \"pipelines\"\nbackup_root = \"/abs/backups\"\n[nats]\ncreds_file = \"o.creds\"\n",
    )
    .unwrap();
    let home = Path::new("/srv/home");
    let cfg = Config::layered(Some(&file), Some(home)).unwrap();
    assert_eq!(cfg.node.pipelines_dir, dir.path().join("pipelines"));
    assert_eq!(cfg.node.backup_root, Path::new("/abs/backups"));
    assert_eq!(cfg.nats.creds_file, dir.path().join("o.creds"));
    // Not set in the file: the default, under the home.
    assert_eq!(cfg.node.data_dir, home.join("data/orchestrator"));
    // Unset paths stay unset.
    assert_eq!(cfg.nats.tls_ca_file, PathBuf::new());

    let cfg = Config::layered(None, Some(home)).unwrap();
    assert_eq!(cfg.node.pipelines_dir, home.join("config/pipelines"));
    assert_eq!(cfg.node.data_dir, home.join("data/orchestrator"));
    // No file, no home: relative to the current directory, as given.
    let cfg = Config::layered(None, None).unwrap();
    assert_eq!(cfg.node.data_dir, Path::new("data/orchestrator"));
}

#[test]
fn the_shipped_file_sets_every_option_explicitly() {
    // Every key of the defaults appears uncommented in the file, so the
    // file documents every option (not only the ones someone remembered).
    let file: toml::Table = toml::from_str(SHIPPED).unwrap();
    let defaults: toml::Table = toml::from_str(&Config::default().to_toml()).unwrap();
    for (section, keys) in &defaults {
        let keys = keys.as_table().unwrap();
        let in_file = file
            .get(section)
            .and_then(|s| s.as_table())
            .unwrap_or_else(|| panic!("section [{section}] missing from the file"));
        for key in keys.keys() {
            assert!(
                in_file.contains_key(key),
                "{section}.{key} missing from config/orchestrator.toml"
            );
        }
    }
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let e = Config::parse("[nats]\nurll = \"nats://x:1\"\n").unwrap_err();
    assert!(e.contains("urll"), "{e}");
    let e = Config::parse("[natz]\n").unwrap_err();
    assert!(e.contains("natz"), "{e}");
}

#[test]
fn bad_values_are_refused_with_the_key() {
    let e = Config::parse("[engine]\npartitions = 0\n").unwrap_err();
    assert!(e.contains("engine.partitions"), "{e}");
    let e = Config::parse("[storage]\ncommit_inline_max_mean_batch = 0.5\n").unwrap_err();
    assert!(e.contains("storage.commit_inline_max_mean_batch"), "{e}");
    for bad in ["0", "65"] {
        let e = Config::parse(&format!("[storage]\nl0_compaction_trigger = {bad}\n")).unwrap_err();
        assert!(e.contains("storage.l0_compaction_trigger"), "{e}");
    }
    let e = Config::parse("[storage]\ncompaction_rate_mib_s = 4097\n").unwrap_err();
    assert!(e.contains("storage.compaction_rate_mib_s"), "{e}");
    // A negative value fails to parse; the error points at the line.
    let e = Config::parse("[storage]\ncompaction_rate_mib_s = -1\n").unwrap_err();
    assert!(e.contains("line 2") && e.contains("u64"), "{e}");
    let e = Config::parse("[nats]\nresults_ack_wait = \"5 parsecs\"\n").unwrap_err();
    assert!(e.contains("duration"), "{e}");
    let e = Config::parse("[http]\naddr = \"everywhere\"\n").unwrap_err();
    assert!(e.contains("http.addr"), "{e}");
    let e = Config::parse("[log]\nformat = \"xml\"\n").unwrap_err();
    assert!(e.contains("xml") || e.contains("format"), "{e}");
    let e = Config::parse("[trace]\notlp_endpoint = \"ftp://c:4318\"\n").unwrap_err();
    assert!(e.contains("trace.otlp_endpoint"), "{e}");
    let e = Config::parse("[trace]\ncompression = \"zstd\"\n").unwrap_err();
    assert!(e.contains("zstd"), "{e}");
    let e = Config::parse("[trace]\nheaders = \"Bearer s3cret\"\n").unwrap_err();
    assert!(e.contains("trace.headers") && !e.contains("s3cret"), "{e}");
    let e = Config::parse("[trace]\nbatch_max = 0\n").unwrap_err();
    assert!(e.contains("trace.batch_max"), "{e}");
}

#[test]
fn tracing_is_off_until_an_endpoint_is_set() {
    assert_eq!(Config::default().otlp_config(), None);
    let c = Config::parse("[trace]\notlp_endpoint = \"http://127.0.0.1:4318\"\nbatch_max = 64\n")
        .unwrap();
    let o = c.otlp_config().unwrap();
    assert_eq!(o.endpoint, "http://127.0.0.1:4318");
    assert_eq!(o.batch_max, 64);
    assert_eq!(o.queue_max, 65_536);
    assert_eq!(o.compression, crate::otel::Compression::None);
    assert_eq!(o.ca_file, None);
    assert!(o.headers.is_empty());
}

#[test]
fn otlp_headers_reach_the_exporter_and_never_print() {
    let c = Config::parse(
        "[trace]\notlp_endpoint = \"https://c\"\nheaders = \"authorization=Bearer%20s3cret\"\n\
         compression = \"gzip\"\nca_file = \"/etc/otel/ca.pem\"\n",
    )
    .unwrap();
    let o = c.otlp_config().unwrap();
    assert_eq!(o.headers.names(), ["authorization"]);
    assert_eq!(o.compression, crate::otel::Compression::Gzip);
    assert_eq!(
        o.ca_file.as_deref(),
        Some(std::path::Path::new("/etc/otel/ca.pem"))
    );
    let printed = toml::to_string(&c).unwrap();
    assert!(printed.contains("headers = \"***\""), "{printed}");
    assert!(!printed.contains("s3cret"));
    assert!(!format!("{c:?}").contains("s3cret"));
    assert!(!format!("{o:?}").contains("s3cret"));
}

#[test]
fn a_partial_file_keeps_the_other_defaults() {
    let c = Config::parse("[engine]\nresident_max = 7\n").unwrap();
    assert_eq!(c.engine.resident_max, 7);
    assert_eq!(c.engine.in_progress_max, 1_100_000);
    assert_eq!(c.engine_config().in_progress_max, 1_100_000);
    assert_eq!(c.engine.partitions, Config::default().engine.partitions);
    assert_eq!(c.nats, Config::default().nats);
}

#[test]
fn retention_is_off_or_a_positive_duration() {
    let c = Config::parse("[retention]\nafter = \"off\"\n").unwrap();
    assert_eq!(c.retention.after, Keep::Forever);
    assert_eq!(c.engine_config().retention.after_ms, None);
    assert!(c.to_toml().contains("after = \"off\""));
    let c = Config::parse("[retention]\nafter = \"7d\"\n").unwrap();
    assert_eq!(c.engine_config().retention.after_ms, Some(604_800_000));
    for bad in ["0s", "0"] {
        let e = Config::parse(&format!("[retention]\nafter = \"{bad}\"\n")).unwrap_err();
        assert!(e.contains("retention.after"), "{e}");
    }
    let e = Config::parse("[retention]\nafter = \"never\"\n").unwrap_err();
    assert!(e.contains("off"), "{e}");
    let e = Config::parse("[retention]\nbatch_max = 0\n").unwrap_err();
    assert!(e.contains("retention.batch_max"), "{e}");
}

#[test]
fn durations_round_trip() {
    for (s, ms) in [
        ("0s", 0),
        ("250ms", 250),
        ("5s", 5000),
        ("2m", 120_000),
        ("7d", 604_800_000),
    ] {
        let d: Dur = s.parse().unwrap();
        assert_eq!(d.0, ms);
        assert_eq!(d.to_string(), s);
    }
    assert_eq!(Dur(1500).to_string(), "1500ms");
}

#[test]
fn cluster_settings_are_range_checked_and_derive_valid_lease_timings() {
    for (toml, key) in [
        ("journal_replicas = 0", "cluster.journal_replicas"),
        ("journal_replicas = 6", "cluster.journal_replicas"),
        ("lease_ttl = \"500ms\"", "cluster.lease_ttl"),
        ("node_id = \"a.b\"", "cluster.node_id"),
    ] {
        let e = Config::parse(&format!("[cluster]\n{toml}\n")).unwrap_err();
        assert!(e.contains(key), "{toml}: {e}");
    }
    for ttl in ["1s", "10s", "10m"] {
        let c = Config::parse(&format!("[cluster]\nlease_ttl = \"{ttl}\"\n")).unwrap();
        c.lease_config().validate().unwrap();
    }
    let c = Config::parse("[cluster]\nenabled = true\nnode_id = \"node-1\"\n").unwrap();
    assert_eq!(
        (
            c.cluster.enabled,
            c.cluster.node_id.as_str(),
            c.cluster.journal_replicas
        ),
        (true, "node-1", 3)
    );
    let p = c.snapshot_policy();
    assert_eq!((p.every_records, p.interval_ms), (10_000, 600_000));
    let off = Config::parse("[cluster]\nsnapshot_every_records = 0\nsnapshot_interval = \"0s\"\n")
        .unwrap()
        .snapshot_policy();
    assert!(!off.due(u64::MAX, u64::MAX));
}
