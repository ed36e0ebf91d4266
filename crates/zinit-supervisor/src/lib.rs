//! zinit's supervisor: everything zinit knows about services and jobs.
//!
//! Configuration files and their validation, the dependency graph, the
//! lifecycle state machine of each unit, restart policies with back-off,
//! readiness tests, output capture and the event stream. It drives processes
//! through `zinit-process` and knows nothing of gRPC.

mod actor;
pub mod backoff;
pub mod command;
pub mod config;
pub mod events;
pub mod graph;
pub mod logs;
pub mod state;
pub mod stats;
pub mod stopping;
mod supervisor;
pub mod unit;

pub use supervisor::{
    JobSpec, Options, ReloadSummary, ShutdownUnit, StopResult, Supervisor, SupervisorError,
};
pub use unit::{UnitKind, UnitStatus};
