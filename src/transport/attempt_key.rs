//! The per-attempt token that binds a worker's result, heartbeat and
//! progress to the task it was given.
//!
//! The token is `HMAC-SHA256(node key, task_id)`, truncated to 128 bits and
//! written in hex. A task id is predictable (`<wf>:<step>:<gen>:<attempt>`);
//! its token is not without the key, which never leaves the node: it lives
//! in the data directory (`attempt_token.key`, mode 0600), next to the
//! journal it protects.
//!
//! Why a keyed hash and not a random token kept in the journal: the token
//! is a pure function of the task id, so a re-send after a restart carries
//! the same token without any stored state, no journal record changes
//! format, and a result is checked before the engine (and its storage) is
//! touched, so a flood of forged results costs one HMAC each. Deleting the
//! key file rotates it: the next start writes a new key, and results for
//! attempts sent under the old one are refused (their timeouts retry them
//! with new tokens).
//!
//! In cluster mode the nodes share one key, so that a result signed for
//! one owner of a partition verifies on the next: the first node stores
//! its data directory's key in the cluster's KV bucket (create-only), and
//! every node uses the key stored there
//! (`transport::nats::cluster_attempt_key`).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use ring::hmac;

/// The file in the data directory that holds the key.
pub const KEY_FILE: &str = "attempt_token.key";

/// Bytes of the key (SHA-256's block-sized secret would be 64; 32 is the
/// hash's strength).
pub const KEY_BYTES: usize = 32;

/// Bytes of the token before hex (128 bits: unguessable, short on the wire).
const TOKEN_BYTES: usize = 16;

/// The node's key for attempt tokens. `Debug` never shows it.
#[derive(Clone)]
pub struct AttemptKey(Arc<hmac::Key>);

impl std::fmt::Debug for AttemptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttemptKey(***)")
    }
}

impl AttemptKey {
    pub fn from_bytes(bytes: &[u8]) -> AttemptKey {
        AttemptKey(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// A fresh key from the system's random source (in-process tests and
    /// nodes that keep no data directory).
    pub fn random() -> AttemptKey {
        AttemptKey::from_bytes(&random_bytes())
    }

    /// The key of the data directory `dir`, created (0600) on first use.
    pub fn load_or_create(dir: &Path) -> Result<AttemptKey, String> {
        load_or_create_bytes(dir).map(|bytes| AttemptKey::from_bytes(&bytes))
    }

    /// The key held in `bytes` (a cluster's shared key, read from NATS):
    /// exactly [`KEY_BYTES`] of them, else an error naming `source`.
    pub fn from_stored(bytes: &[u8], source: &str) -> Result<AttemptKey, String> {
        if bytes.len() != KEY_BYTES {
            return Err(format!(
                "{source} holds {} bytes, not {KEY_BYTES}",
                bytes.len()
            ));
        }
        Ok(AttemptKey::from_bytes(bytes))
    }

    /// The token of the attempt `task_id`.
    pub fn token(&self, task_id: &str) -> String {
        let tag = hmac::sign(&self.0, task_id.as_bytes());
        hex(&tag.as_ref()[..TOKEN_BYTES])
    }

    /// Whether `token` is the token of `task_id`, compared in constant time.
    pub fn verify(&self, task_id: &str, token: &str) -> bool {
        let expected = self.token(task_id);
        expected.len() == token.len()
            && expected
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// The bytes of the data directory's key (`dir`/[`KEY_FILE`]), created
/// (0600) on first use.
pub fn load_or_create_bytes(dir: &Path) -> Result<[u8; KEY_BYTES], String> {
    let path = dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == KEY_BYTES => {
            let mut key = [0u8; KEY_BYTES];
            key.copy_from_slice(&bytes);
            return Ok(key);
        }
        Ok(bytes) => {
            return Err(format!(
                "{} holds {} bytes, not {KEY_BYTES}; delete it to make a new key",
                path.display(),
                bytes.len()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    let bytes = random_bytes();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(bytes)
}

fn random_bytes() -> [u8; KEY_BYTES] {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; KEY_BYTES];
    // The system random source failing is not a state to run in.
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    bytes
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_only_for_its_task_and_key() {
        let key = AttemptKey::from_bytes(&[7; KEY_BYTES]);
        let t = key.token("wf:step:0:1");
        assert_eq!(t.len(), TOKEN_BYTES * 2);
        assert!(key.verify("wf:step:0:1", &t));
        assert!(!key.verify("wf:step:0:2", &t));
        assert!(!key.verify("wf:step:0:1", ""));
        assert!(!AttemptKey::from_bytes(&[8; KEY_BYTES]).verify("wf:step:0:1", &t));
        assert_eq!(format!("{key:?}"), "AttemptKey(***)");
    }

    #[test]
    fn the_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = AttemptKey::load_or_create(dir.path()).unwrap();
        let b = AttemptKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.token("x:s:0:1"), b.token("x:s:0:1"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
