//! Every signal zinit_pid1 handles is blocked in its one thread and read
//! from a signalfd, so the main loop sleeps in `poll` until a signal or its
//! next timer, and never runs code inside a signal handler. A blocked signal
//! is queued even for PID 1 (which the kernel spares from signals it has no
//! handler for), and a child starts with an empty mask again (see
//! `zinit_process::spawn`).

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::AsFd;
use std::time::Duration;

/// The signals taken: SIGCHLD (reap), SIGTERM, SIGINT, SIGPWR (shut down;
/// SIGINT is also ctrl-alt-del on a machine), SIGHUP (forwarded: reload),
/// and SIGQUIT, SIGUSR1, SIGUSR2 (ignored, so that they cannot end PID 1's
/// namespace or a subreaper by their default action), and SIGTSTP, SIGTTIN,
/// SIGTTOU (ignored, so that a terminal cannot stop a subreaper: a stopped
/// zinit_pid1 would reap nothing and forward nothing).
pub const TAKEN: [Signal; 11] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGPWR,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

/// The signalfd for [`TAKEN`].
#[derive(Debug)]
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks [`TAKEN`] in this thread (zinit_pid1 has no other) and opens
    /// the signalfd.
    pub fn take() -> nix::Result<Self> {
        let mut set = SigSet::empty();
        for signal in TAKEN {
            set.add(signal);
        }
        set.thread_block()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Self { fd })
    }

    /// Sleeps until a signal arrives or `timeout` passes (`None`: no
    /// timeout), then returns every signal pending (none on a timeout).
    /// Repeated standard signals coalesce: one SIGCHLD may stand for many
    /// exited children.
    pub fn wait(&self, timeout: Option<Duration>) -> Vec<Signal> {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            // Round up, so that a timer never fires a little early and
            // makes the loop spin.
            Some(d) => {
                PollTimeout::try_from(d + Duration::from_nanos(999_999)).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        // EINTR (a stop and continue) just means: look again.
        let _ = poll(&mut fds, timeout);
        self.pending()
    }

    /// The signals pending now, without waiting.
    pub fn pending(&self) -> Vec<Signal> {
        let mut out = Vec::new();
        while let Ok(Some(info)) = self.fd.read_signal() {
            if let Ok(signal) = Signal::try_from(info.ssi_signo as i32) {
                out.push(signal);
            }
        }
        out
    }
}
