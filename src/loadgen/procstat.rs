//! CPU time and memory of a process from `/proc` (Linux): the orchestrator's
//! (`--orchestrator-pid`) and the load generator's own, split by thread name
//! so in-process workers are not counted as load-generator overhead.

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// User + system CPU seconds.
    pub cpu_s: f64,
    /// Resident set (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident set (VmHWM), KiB.
    pub hwm_kib: u64,
}

/// `(comm, utime + stime in ticks)` from the text of a `stat` file. The
/// command name may hold spaces and parentheses: fields start after the last `)`.
pub fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

fn status_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `pid` is a number or `self`.
pub fn sample(pid: &str) -> Result<ProcSample, String> {
    let stat_path = format!("/proc/{pid}/stat");
    let stat =
        std::fs::read_to_string(&stat_path).map_err(|e| format!("cannot read {stat_path}: {e}"))?;
    let (_, ticks) = parse_stat(&stat).ok_or_else(|| format!("cannot parse {stat_path}"))?;
    let status_path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&status_path)
        .map_err(|e| format!("cannot read {status_path}: {e}"))?;
    Ok(ProcSample {
        cpu_s: ticks as f64 / TICKS_PER_S,
        rss_kib: status_kib(&status, "VmRSS:"),
        hwm_kib: status_kib(&status, "VmHWM:"),
    })
}

/// CPU seconds of this process's threads whose name starts with `prefix`.
pub fn threads_cpu_s(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for entry in dir.flatten() {
        if let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) {
            if let Some((comm, t)) = parse_stat(&text) {
                if comm.starts_with(prefix) {
                    ticks += t;
                }
            }
        }
    }
    ticks as f64 / TICKS_PER_S
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1 2 3";
        assert_eq!(parse_stat(line), Some(("a (b) c".to_string(), 300)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
        let me = sample("self").unwrap();
        assert!(me.rss_kib > 0 && me.hwm_kib >= me.rss_kib);
        assert!(sample("999999999").is_err());
        assert!(sample("../x").is_err());
    }
}
