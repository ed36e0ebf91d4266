//! zinit's supervisor: everything zinit knows about services and jobs.
//!
//! Configuration files and their validation, the dependency graph, the
//! lifecycle state machine of each unit, restart policies with back-off,
//! readiness tests, output capture and the event stream. It drives processes
//! through `zinit-process` and knows nothing of gRPC.

pub mod config;
pub mod graph;
