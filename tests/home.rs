//! Relative paths: a config file's are taken under its directory, the
//! defaults under `--home` (or the current directory), and `verify` checks
//! the data dir `run` uses with the same options.

use std::path::Path;

use crate::cli::{bin, fields};

fn print_config(args: &[&str], home: Option<&Path>) -> toml::Table {
    let mut c = bin();
    c.args(["run", "--print-config"]).args(args);
    c.env_remove("NARRALYTICA_DATA_DIR")
        .env_remove("NARRALYTICA_PIPELINES")
        .env_remove("NARRALYTICA_CONFIG")
        .env_remove("NARRALYTICA_HOME");
    if let Some(h) = home {
        c.arg("--home").arg(h);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

fn node_path(cfg: &toml::Table, key: &str) -> String {
    cfg["node"][key].as_str().unwrap().to_owned()
}

#[test]
fn run_takes_relative_paths_under_the_config_files_directory_or_the_home() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();

    // No config file: the defaults under the home.
    let cfg = print_config(&[], Some(h));
    assert_eq!(
        node_path(&cfg, "data_dir"),
        h.join("data/orchestrator").display().to_string()
    );
    assert_eq!(
        node_path(&cfg, "pipelines_dir"),
        h.join("config/pipelines").display().to_string()
    );

    // A config file elsewhere: what it sets is under its directory, what it
    // leaves out under the home; a flag is taken as given.
    let etc = tempfile::tempdir().unwrap();
    let file = etc.path().join("orchestrator.toml");
    std::fs::write(&file, "[node]\npipelines_dir = \"pipelines\"\n").unwrap();
    let file_arg = file.display().to_string();
    let cfg = print_config(&["--config", &file_arg], Some(h));
    assert_eq!(
        node_path(&cfg, "pipelines_dir"),
        etc.path().join("pipelines").display().to_string()
    );
    assert_eq!(
        node_path(&cfg, "data_dir"),
        h.join("data/orchestrator").display().to_string()
    );
    let cfg = print_config(&["--config", &file_arg, "--data-dir", "here"], Some(h));
    assert_eq!(node_path(&cfg, "data_dir"), "here");
}

#[test]
fn verify_checks_the_data_dir_run_uses_by_default() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let pipelines = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pipelines");
    // A data dir where `run --home H` keeps it, written by `dev`.
    let out = bin()
        .args(["dev", "--workflows", "3", "--exit-when-done", "--data-dir"])
        .arg(h.join("data/orchestrator"))
        .arg("--pipelines")
        .arg(&pipelines)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verify = |args: &[&str], cwd: &Path| {
        bin()
            .arg("verify")
            .args(args)
            .current_dir(cwd)
            .env_remove("NARRALYTICA_DATA_DIR")
            .env_remove("NARRALYTICA_CONFIG")
            .env_remove("NARRALYTICA_HOME")
            .output()
            .unwrap()
    };
    // Run from the home, without options: `run`'s default data dir.
    let out = verify(&[], h);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = fields(&String::from_utf8_lossy(&out.stdout), "verify ");
    assert_eq!(v["workflows"], "3");
    // From elsewhere, with --home: the same.
    let h_arg = h.display().to_string();
    let out = verify(&["--home", &h_arg], Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(out.status.success());
    assert_eq!(
        fields(&String::from_utf8_lossy(&out.stdout), "verify ")["workflows"],
        "3"
    );
    // With a config file: its data dir, under its directory.
    let file = h.join("orchestrator.toml");
    std::fs::write(&file, "[node]\ndata_dir = \"data/orchestrator\"\n").unwrap();
    let out = verify(
        &["--config", &file.display().to_string()],
        Path::new(env!("CARGO_MANIFEST_DIR")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&file, "[node]\ndata_dir = \"elsewhere\"\n").unwrap();
    let out = verify(
        &["--config", &file.display().to_string()],
        Path::new(env!("CARGO_MANIFEST_DIR")),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&h.join("elsewhere").display().to_string()) && err.contains("not a data dir"),
        "{err}"
    );
}
