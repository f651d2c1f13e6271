//! `runtime serve`: the real binary on 127.0.0.1, driven through the real
//! gRPC client (`orchestrator_host_api::client`), the command line, a
//! Python client and the documented `grpcurl` commands: keys and roles,
//! tenants kept apart, watching an execution across a disconnect (over
//! gRPC and as Server-Sent Events), REST/JSON and gRPC-web on the same
//! port, signals, cancels, idempotent starts, health, reflection, TLS,
//! audit, limits, and a drain on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod access;
mod clients;
mod console;
mod executions;
mod grpcurl;
mod harness;
mod identities;
mod observability;
mod operations;
mod rest;
