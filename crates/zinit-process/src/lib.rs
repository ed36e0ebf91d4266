//! Process control for zinit, and nothing else.
//!
//! This crate spawns processes into their own process group (and their own
//! cgroup v2 where the host allows it), holds PID-reuse-safe handles to them,
//! reads the process table from `/proc`, stops whole process trees deepest
//! first with escalation to `SIGKILL`, finds the owners of TCP/UDP ports and
//! the processes that match a filter, and reaps orphans as a child subreaper.
//!
//! It knows nothing about services, configuration or gRPC; see
//! `ARCHITECTURE.md` at the repository root for how the pieces fit together.

pub mod cgroup;
pub mod emergency;
pub mod fifo;
pub mod filter;
pub mod handle;
pub mod identity;
pub mod limits;
pub mod members;
pub mod memory;
pub mod ports;
pub mod proc_table;
pub mod reaper;
pub mod shared_table;
pub mod signal;
pub mod spawn;
pub mod stop;
mod sys;
pub mod watch;
pub mod wave;

pub use cgroup::{Cgroup, CgroupRoot};
pub use filter::{FilterError, ProcessFilter};
pub use handle::{ProcessHandle, ProcessId};
pub use members::{Found, Member, Members};
pub use ports::{Port, PortError, Protocol};
pub use proc_table::{Detail, ProcState, ProcessInfo, ProcessTable};
pub use reaper::Reaper;
pub use signal::{Signal, SignalError};
pub use spawn::{Child, Command, ExitStatus};
pub use stop::{StopEvent, StopMode, StopOutcome, StopReport, StopSink, StopSpec};
pub use wave::Wave;
