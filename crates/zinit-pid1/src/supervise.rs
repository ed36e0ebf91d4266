//! The main loop while the server runs: one thread sleeping in `poll` on
//! the signalfd until a signal or the next timer (a restart, the server's
//! deadline). It reaps every exited child on SIGCHLD and recognises the
//! server among them; restarts a server that died without a finished
//! shutdown, with back-off; forwards SIGHUP; and turns SIGTERM, SIGINT and
//! SIGPWR into the server's graceful shutdown. It returns once the server
//! has ended after a shutdown, or has been killed for outliving the bound.

use crate::backoff::Backoff;
use crate::mode::Mode;
use crate::server::{After, ServerSpec};
use crate::signals::Signals;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};
use zinit_process::reaper::{Reap, reap_any};
use zinit_process::{Child, ExitStatus};

/// After the bound, the server gets this much more before it is killed.
pub const SERVER_MARGIN: Duration = Duration::from_secs(1);
/// How long a server killed with SIGKILL is waited for.
pub const KILLED_WAIT: Duration = Duration::from_millis(500);
/// zinit_pid1 is done this long after the bound at the latest (the final
/// sweep fits between the server's end and this).
pub const FINAL_MARGIN: Duration = Duration::from_secs(3);

/// How the server's part of the shutdown ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEnd {
    /// It finished its shutdown and exited with this code (0 clean,
    /// 3 processes were left, 4 the deadline cut in).
    Exited(i32),
    /// It had not exited by the bound (plus [`SERVER_MARGIN`]): killed.
    Killed,
    /// It died during the shutdown, or was not running when the shutdown
    /// was asked for.
    Failed(String),
    /// The first server exited before it served (with this code: 2 a usage
    /// error, 1 a start-up or configuration error), or any server with a
    /// usage error: starting it again would fail the same way.
    NeverStarted(i32),
    /// It died [`CRASH_LOOP`] times within [`CRASH_WINDOW`].
    CrashLoop,
}

/// A server that dies this many times within [`CRASH_WINDOW`] is given up.
pub const CRASH_LOOP: usize = 5;
/// See [`CRASH_LOOP`].
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);

/// The outcome of the loop.
#[derive(Debug)]
pub struct Ended {
    /// How the server ended.
    pub server: ServerEnd,
    /// Whether a reboot was asked for (`zinit reboot`, or ctrl-alt-del on
    /// a machine); else power off.
    pub reboot: bool,
    /// When zinit_pid1 must be done.
    pub hard_end: Instant,
    /// What started the shutdown.
    pub trigger: String,
}

struct Running {
    child: Child,
    started: Instant,
}

struct Shutdown {
    began: Instant,
    server_deadline: Instant,
    trigger: String,
    /// Whether zinit_pid1 (a signal) started it, so its bound applies.
    by_signal: bool,
}

/// The loop's state.
struct Supervisor<'a> {
    signals: &'a Signals,
    spec: &'a ServerSpec,
    mode: Mode,
    bound: Duration,
    server: Option<Running>,
    backoff: Backoff,
    restart_at: Option<Instant>,
    shutdown: Option<Shutdown>,
    end: Option<ServerEnd>,
    killed_at: Option<Instant>,
    interrupts: u32,
    reboot: bool,
    orphans: u64,
    /// Whether a server has served since zinit_pid1 started.
    served: bool,
    /// When the server died unexpectedly, lately.
    deaths: Vec<Instant>,
}

/// Runs the loop with the server `first` already started.
pub fn run(
    signals: &Signals,
    spec: &ServerSpec,
    mode: Mode,
    bound: Duration,
    first: Child,
) -> Ended {
    crate::info!("started {} (pid {})", spec.program.display(), first.pid());
    let mut sup = Supervisor {
        signals,
        spec,
        mode,
        bound,
        server: Some(Running {
            child: first,
            started: Instant::now(),
        }),
        backoff: Backoff::default(),
        restart_at: None,
        shutdown: None,
        end: None,
        killed_at: None,
        interrupts: 0,
        reboot: false,
        orphans: 0,
        served: false,
        deaths: Vec::new(),
    };
    sup.reap();
    loop {
        if let Some(ended) = sup.tick() {
            crate::info!("reaped {} orphan(s) while the server ran", sup.orphans);
            return ended;
        }
        let timeout = sup
            .next_timer()
            .map(|t| t.saturating_duration_since(Instant::now()));
        for signal in sup.signals.wait(timeout) {
            sup.on_signal(signal);
        }
    }
}

impl Supervisor<'_> {
    /// Acts on the timers; `Some` when the loop is over.
    fn tick(&mut self) -> Option<Ended> {
        let now = Instant::now();
        if let Some(shutdown) = &self.shutdown {
            if self.server.is_none() {
                let end = self
                    .end
                    .take()
                    .unwrap_or_else(|| ServerEnd::Failed("zinit_server is gone".into()));
                return Some(self.ended(end));
            }
            if let Some(killed) = self.killed_at {
                if now >= killed + KILLED_WAIT {
                    crate::error!(
                        "zinit_server did not die within {} of SIGKILL; going on without it",
                        humantime::format_duration(KILLED_WAIT)
                    );
                    return Some(self.ended(ServerEnd::Killed));
                }
            } else if now >= shutdown.server_deadline {
                if let Some(running) = &self.server {
                    crate::error!(
                        "zinit_server (pid {}) has not exited {} after the shutdown began (the bound, plus {}): killing it",
                        running.child.pid(),
                        humantime::format_duration(self.bound),
                        humantime::format_duration(SERVER_MARGIN)
                    );
                    let _ = running.child.signal(Signal::SIGKILL);
                }
                self.killed_at = Some(now);
            }
        } else if self.restart_at.is_some_and(|at| now >= at) {
            self.restart_at = None;
            self.start();
        }
        None
    }

    /// The next instant a timer fires, if any.
    fn next_timer(&self) -> Option<Instant> {
        match &self.shutdown {
            None => self.restart_at,
            Some(shutdown) => Some(match self.killed_at {
                Some(killed) => killed + KILLED_WAIT,
                None => shutdown.server_deadline,
            }),
        }
    }

    fn ended(&self, server: ServerEnd) -> Ended {
        let shutdown = self.shutdown.as_ref();
        let now = Instant::now();
        let hard_end = match shutdown {
            Some(s) if s.by_signal => s.began + self.bound + FINAL_MARGIN,
            _ => now + crate::sweep::GRACE + crate::sweep::KILL_WAIT,
        };
        Ended {
            server,
            reboot: self.reboot,
            hard_end: hard_end.max(now),
            trigger: shutdown.map(|s| s.trigger.clone()).unwrap_or_default(),
        }
    }

    fn start(&mut self) {
        match self.spec.spawn() {
            Ok(child) => {
                crate::info!(
                    "restarted {} (pid {})",
                    self.spec.program.display(),
                    child.pid()
                );
                self.server = Some(Running {
                    child,
                    started: Instant::now(),
                });
            }
            Err(e) => {
                let delay = self.backoff.delay(Duration::ZERO);
                crate::error!(
                    "cannot start {}: {e}; trying again in {}",
                    self.spec.program.display(),
                    humantime::format_duration(delay)
                );
                self.restart_at = Some(Instant::now() + delay);
            }
        }
    }

    fn on_signal(&mut self, signal: Signal) {
        match signal {
            Signal::SIGCHLD => self.reap(),
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGPWR => self.shut_down(signal),
            Signal::SIGHUP => match &self.server {
                Some(running) if self.shutdown.is_none() => {
                    crate::info!("SIGHUP: forwarded to zinit_server (reload)");
                    let _ = running.child.signal(Signal::SIGHUP);
                }
                _ => crate::info!("SIGHUP ignored: no server to reload"),
            },
            other => crate::info!("{} ignored", other.as_str()),
        }
    }

    /// SIGTERM, SIGPWR: the graceful shutdown (SIGTERM to the server).
    /// SIGINT: the same, forwarded as SIGINT, so that a second SIGINT
    /// reaches the server as its second and forces it; on a machine it is
    /// also ctrl-alt-del, which asks for a reboot.
    fn shut_down(&mut self, signal: Signal) {
        let now = Instant::now();
        if signal == Signal::SIGINT {
            self.interrupts += 1;
            if self.mode.ends_with_reboot() && !self.reboot {
                self.reboot = true;
                crate::info!("SIGINT (ctrl-alt-del): the machine reboots after the shutdown");
            }
        }
        if self.shutdown.is_none() {
            crate::info!(
                "{}: shutting down (the server's deadline {}; zinit_pid1 is done within {})",
                signal.as_str(),
                humantime::format_duration(self.bound),
                humantime::format_duration(self.bound + FINAL_MARGIN)
            );
            self.shutdown = Some(Shutdown {
                began: now,
                server_deadline: now + self.bound + SERVER_MARGIN,
                trigger: signal.as_str().to_string(),
                by_signal: true,
            });
            if self.server.is_none() {
                self.restart_at = None;
                self.end = Some(ServerEnd::Failed(
                    "zinit_server was not running (it had died and waited for its restart)".into(),
                ));
                return;
            }
        } else if signal == Signal::SIGINT && self.interrupts >= 2 {
            crate::info!("SIGINT again: the server forces its shutdown (the sweep still runs)");
        }
        if let Some(running) = &self.server
            && self.killed_at.is_none()
        {
            let forward = if signal == Signal::SIGINT {
                Signal::SIGINT
            } else {
                Signal::SIGTERM
            };
            if let Err(e) = running.child.signal(forward) {
                crate::warn!("cannot signal zinit_server: {e}");
            }
        }
    }

    /// Reaps every exited child: the server, or an orphan.
    fn reap(&mut self) {
        loop {
            match reap_any() {
                Reap::Exited(reaped) => {
                    let is_server = self
                        .server
                        .as_ref()
                        .is_some_and(|s| s.child.pid() == reaped.pid);
                    if is_server {
                        self.server_exited(reaped.status);
                    } else {
                        // No line per orphan: a flood of them must stay cheap.
                        self.orphans += 1;
                    }
                }
                Reap::Running | Reap::NoChildren => return,
            }
        }
    }

    fn server_exited(&mut self, status: ExitStatus) {
        let Some(mut running) = self.server.take() else {
            return;
        };
        // The status was filed for the child by reap_any; this takes it out
        // of the spawn table.
        let _ = running.child.try_wait();
        let pid = running.child.pid();
        let ran = running.started.elapsed();
        let after = self.spec.after();
        if self.killed_at.is_some() {
            self.end = Some(ServerEnd::Killed);
            return;
        }
        match (after, &self.shutdown) {
            (Some(after), shutdown) => {
                if shutdown.is_none() {
                    crate::info!(
                        "zinit_server (pid {pid}) finished a shutdown asked through its socket ({status})"
                    );
                    let now = Instant::now();
                    self.shutdown = Some(Shutdown {
                        began: now,
                        server_deadline: now,
                        trigger: "the Shutdown RPC".into(),
                        by_signal: false,
                    });
                } else {
                    crate::info!("zinit_server (pid {pid}) finished its shutdown ({status})");
                }
                if after == After::Reboot {
                    self.reboot = true;
                }
                self.end = Some(match status {
                    ExitStatus::Exited(code) => ServerEnd::Exited(code),
                    other => ServerEnd::Failed(format!("zinit_server (pid {pid}) {other}")),
                });
            }
            (None, Some(_)) => {
                crate::error!(
                    "zinit_server (pid {pid}) ended ({status}) before its shutdown finished"
                );
                self.end = Some(ServerEnd::Failed(format!(
                    "zinit_server (pid {pid}) ended ({status}) before its shutdown finished"
                )));
            }
            (None, None) => {
                let ready = self.spec.was_ready();
                self.served |= ready;
                let code = match status {
                    ExitStatus::Exited(code) => Some(code),
                    _ => None,
                };
                let now = Instant::now();
                self.deaths
                    .retain(|&at| now.duration_since(at) < CRASH_WINDOW);
                self.deaths.push(now);
                let give_up = match code {
                    Some(code @ (1 | 2)) if !ready && (!self.served || code == 2) => {
                        crate::error!(
                            "zinit_server (pid {pid}) could not start ({status}; its error is above); giving up"
                        );
                        Some(ServerEnd::NeverStarted(code))
                    }
                    _ if self.deaths.len() >= CRASH_LOOP => {
                        crate::error!(
                            "zinit_server (pid {pid}) died unexpectedly ({status}), {} times within {}; giving up",
                            self.deaths.len(),
                            humantime::format_duration(CRASH_WINDOW)
                        );
                        Some(ServerEnd::CrashLoop)
                    }
                    _ => None,
                };
                if let Some(end) = give_up {
                    self.end = Some(end);
                    self.shutdown = Some(Shutdown {
                        began: now,
                        server_deadline: now,
                        trigger: "zinit_server could not run".into(),
                        by_signal: false,
                    });
                    return;
                }
                let delay = self.backoff.delay(ran);
                crate::error!(
                    "zinit_server (pid {pid}) died unexpectedly ({status}) after {}; restarting it in {}",
                    humantime::format_duration(Duration::from_millis(ran.as_millis() as u64)),
                    humantime::format_duration(delay)
                );
                self.restart_at = Some(Instant::now() + delay);
            }
        }
    }
}
