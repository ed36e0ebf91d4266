//! zinit's supervisor: everything zinit knows about services and jobs.
//!
//! Configuration files and their validation, the dependency graph, the
//! lifecycle state machine of each unit, restart policies with back-off,
//! readiness tests, output capture and the event stream. It drives processes
//! through `zinit-process` and knows nothing of gRPC.

mod actor;
mod api;
pub mod backoff;
pub mod command;
pub mod config;
pub mod events;
mod files;
pub mod graph;
pub mod logs;
pub mod shutdown;
pub mod state;
pub mod stats;
pub mod stopping;
mod streams;
mod supervisor;
pub mod takeover;
mod tasks;
pub mod unit;

pub use api::{
    AddResult, Host, JobSpec, Options, ReloadSummary, StopResult, SupervisorError, UnitReload,
};
pub use supervisor::Supervisor;
pub use unit::{UnitKind, UnitStatus};
/// Process types the layers above see through the supervisor.
pub use zinit_process::{
    Signal, StopOutcome, signal::parse_signal, spawn::ExitStatus, stop::StopMode,
};
