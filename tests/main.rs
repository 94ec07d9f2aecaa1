//! The one integration-test binary: the crate and RocksDB are linked once.

mod support;

mod cli;
mod engine;
mod events;
mod http;
mod loadgen;
mod nats;
mod ops;
mod protocol;
mod purity;
mod transport;
mod verify;
