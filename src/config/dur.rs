//! Durations as strings (`"200ms"`, `"5s"`, `"7d"`) and the retention keep-time.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::durations;

/// A duration written as a string (`"200ms"`, `"5s"`, `"1h30m"`, `"7d"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub u64);

impl Dur {
    pub const fn ms(ms: u64) -> Dur {
        Dur(ms)
    }
    pub const fn secs(s: u64) -> Dur {
        Dur(s * 1000)
    }
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 5] = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
            (1, "ms"),
        ];
        if self.0 == 0 {
            return f.write_str("0s");
        }
        for (size, unit) in UNITS {
            if self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}ms", self.0)
    }
}

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        durations::parse_ms(s).map(Dur).map_err(|e| e.to_string())
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("bad duration {s:?}: {e}")))
    }
}

/// How long terminal workflows are kept: `"off"` (forever) or a positive
/// duration. `"0s"` is refused rather than read as "purge at once" or "off".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Forever,
    For(Dur),
}

impl Keep {
    pub fn as_ms(self) -> Option<u64> {
        match self {
            Keep::Forever => None,
            Keep::For(d) => Some(d.0),
        }
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keep::Forever => f.write_str("off"),
            Keep::For(d) => d.fmt(f),
        }
    }
}

impl Serialize for Keep {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Keep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "off" {
            return Ok(Keep::Forever);
        }
        s.parse()
            .map(Keep::For)
            .map_err(|e| serde::de::Error::custom(format!("bad duration {s:?}: {e} (or \"off\")")))
    }
}
