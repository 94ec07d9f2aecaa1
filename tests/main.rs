//! The one integration-test binary: the crate and RocksDB are linked once.

mod support;

mod attempt_token;
mod backpressure;
mod capacity;
mod cli;
mod cluster;
mod cluster_journal;
mod cluster_lease;
mod console;
mod dst;
mod engine;
mod events;
mod failpoints;
mod faults;
mod home;
mod http;
mod layering;
mod loadgen;
mod maps;
mod nats;
mod nats_roles;
mod ops;
mod otel;
mod otel_transport;
mod protocol;
mod purity;
mod reload;
mod retention;
mod sdk;
mod security;
mod storm;
mod transport;
mod verify;
mod when;
