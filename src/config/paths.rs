//! Where the relative paths of the configuration point.
//!
//! A relative path set in a config file is taken relative to the directory
//! of that file, so a file means the same wherever `run` is started from. A
//! default (a path no file sets) is taken relative to the home directory:
//! `--home` (env `NARRALYTICA_HOME`), the current directory when none is
//! given. Flags and environment variables are relative to the current
//! directory, like any command-line argument.

use std::path::{Path, PathBuf};

use super::Config;

/// `path` under `base` when it is relative; an empty path (unset) and an
/// empty base (the current directory) leave it as it is.
fn under(base: &Path, path: &mut PathBuf) {
    if path.is_relative() && !path.as_os_str().is_empty() && !base.as_os_str().is_empty() {
        *path = base.join(&*path);
    }
}

impl Config {
    /// The built-in defaults, their relative paths taken under `home`.
    pub fn defaults_under(home: Option<&Path>) -> Config {
        let mut cfg = Config::default();
        if let Some(home) = home {
            for path in cfg.paths_mut().into_iter().map(|(_, _, p)| p) {
                under(home, path);
            }
        }
        cfg
    }

    /// The defaults overlaid by `file` when given: relative paths the file
    /// sets are taken under the file's directory, the others under `home`.
    pub fn layered(file: Option<&Path>, home: Option<&Path>) -> Result<Config, String> {
        let Some(file) = file else {
            return Ok(Config::defaults_under(home));
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read config {}: {e}", file.display()))?;
        let mut cfg =
            Config::parse(&text).map_err(|e| format!("config {}: {e}", file.display()))?;
        // `parse` succeeded, so the text is a TOML table.
        let table: toml::Table = toml::from_str(&text).unwrap_or_default();
        let file_dir = file.parent().unwrap_or(Path::new(""));
        for (section, key, path) in cfg.paths_mut() {
            let set_in_file = table
                .get(section)
                .and_then(|s| s.as_table())
                .is_some_and(|s| s.contains_key(key));
            match (set_in_file, home) {
                (true, _) => under(file_dir, path),
                (false, Some(home)) => under(home, path),
                (false, None) => {}
            }
        }
        cfg.source = Some(file.to_path_buf());
        Ok(cfg)
    }

    /// Every path of the configuration, with its section and key.
    fn paths_mut(&mut self) -> [(&'static str, &'static str, &mut PathBuf); 8] {
        [
            ("node", "data_dir", &mut self.node.data_dir),
            ("node", "pipelines_dir", &mut self.node.pipelines_dir),
            ("node", "backup_root", &mut self.node.backup_root),
            ("nats", "nkey_seed_file", &mut self.nats.nkey_seed_file),
            ("nats", "creds_file", &mut self.nats.creds_file),
            ("nats", "tls_ca_file", &mut self.nats.tls_ca_file),
            ("nats", "tls_cert_file", &mut self.nats.tls_cert_file),
            ("nats", "tls_key_file", &mut self.nats.tls_key_file),
        ]
    }
}
