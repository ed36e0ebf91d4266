//! The deadline's watchdog: an OS thread of its own (not a task of the
//! runtime, which a hung step could wedge), armed when the shutdown begins.
//! If the shutdown has not finished at the deadline, it kills everything
//! below the server through the supervisor's emergency stop (which takes no
//! lock the runtime could hold), says so on stderr, writes the
//! after-shutdown file, removes the socket and the pid file, and ends the
//! process with exit code 4.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use zinit_supervisor::shutdown::EmergencyStop;

/// The exit code when the watchdog ends the server.
pub const EXIT_DEADLINE: i32 = 4;

/// What the watchdog needs, handed over before its thread starts.
pub struct Armed {
    pub deadline: Instant,
    pub timeout: Duration,
    pub kill: EmergencyStop,
    pub socket: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub after: Option<super::after::AfterShutdown>,
}

/// A running watchdog; [`Watchdog::disarm`] when the shutdown finished.
pub struct Watchdog {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::Thread>,
}

impl Watchdog {
    /// Starts the watchdog thread.
    pub fn arm(armed: Armed) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let spawned = std::thread::Builder::new()
            .name("zinit-watchdog".into())
            .spawn(move || watch(armed, &flag));
        let thread = match spawned {
            Ok(handle) => Some(handle.thread().clone()),
            Err(e) => {
                tracing::error!("cannot start the shutdown watchdog: {e}");
                None
            }
        };
        Self { done, thread }
    }

    /// The shutdown finished: the watchdog ends without doing anything.
    pub fn disarm(self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread {
            thread.unpark();
        }
    }
}

fn watch(armed: Armed, done: &AtomicBool) {
    loop {
        if done.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        if now >= armed.deadline {
            break;
        }
        std::thread::park_timeout(armed.deadline - now);
    }
    if done.load(Ordering::SeqCst) {
        return;
    }
    armed.kill.kill_everything();
    eprintln!(
        "zinit_server: the shutdown deadline of {} passed with a step still running; \
         killed every process left in the units and below the server; exiting with code {}",
        humantime::format_duration(armed.timeout),
        EXIT_DEADLINE
    );
    if let Some(after) = &armed.after {
        after.write_or_warn();
    }
    let _ = std::fs::remove_file(&armed.socket);
    if let Some(path) = &armed.pid_file {
        let _ = std::fs::remove_file(path);
    }
    armed.kill.exit_now(EXIT_DEADLINE);
}
