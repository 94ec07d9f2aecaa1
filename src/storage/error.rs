//! The one error type of the storage layer.
//!
//! Every variant carries owned, cloneable data (strings rather than foreign error
//! types) because the group committer hands the *same* failure to every waiter of a
//! failed batch: nothing may be half-acknowledged, so the error must be copyable.

/// Everything that can go wrong in `storage`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An I/O failure outside RocksDB (or one injected by the memory twin's test hooks).
    #[error("storage i/o error: {0}")]
    Io(String),
    /// RocksDB reported an error; the string is RocksDB's own message.
    #[error("rocksdb error: {0}")]
    Rocks(String),
    /// A stored record (key or value) failed validation. It is reported, never served
    /// as state: short record, unknown format version, checksum mismatch, undecodable
    /// payload or malformed key.
    #[error("corrupt record at key {key}: {reason}")]
    Corrupt {
        /// The record's key, rendered printable (see [`crate::storage::keys::printable`]).
        key: String,
        /// What failed.
        reason: String,
    },
    /// A value could not be serialized (a `Serialize` impl that postcard cannot encode).
    #[error("cannot encode record: {0}")]
    Encode(String),
    /// The store was created with a different partition count. Partitions are part of
    /// every key, so silently reinterpreting them would lose every workflow.
    #[error(
        "partition count mismatch: the store was created with {stored} partitions \
         but {configured} are configured; the partition count is fixed at creation"
    )]
    PartitionCountMismatch {
        /// The count recorded in the store on first open.
        stored: u16,
        /// The count the caller asked for.
        configured: u16,
    },
    /// A caller-supplied argument is out of bounds (empty or oversized id, partition
    /// out of range, zero partitions, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The operation is not supported by this implementation (for example a
    /// checkpoint of the memory twin).
    #[error("unsupported by this storage: {0}")]
    Unsupported(&'static str),
    /// The group committer has stopped (shut down, or its thread died), so the request
    /// was not written.
    #[error("group committer is not running")]
    CommitterClosed,
    /// Cluster mode: the partition's replicated journal did not take the
    /// write (the node does not serve the partition, was deposed by another
    /// owner, or the journal did not acknowledge), so it was not written.
    #[error("not replicated (partition {partition}): {reason}")]
    NotReplicated {
        /// The partition whose journal refused.
        partition: u16,
        /// Why.
        reason: String,
    },
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Rocks(e.into_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}
