//! The shutdown, from intake to verification, in one place:
//!
//! 1. Freeze intake (the actor hands over every unit whose processes live).
//! 2. Plan (`plan`): a unit starts stopping as soon as every live unit that
//!    depends on it has stopped; independent units stop in parallel; a
//!    dependency cycle cannot block it (what is left starts at once).
//! 3. Stop each unit through the actor, with its own command, signal, mode
//!    and timeout, capped by what the deadline leaves minus a tail reserve.
//! 4. Sweep what is still alive, and verify with a fresh scan (`sweep`).
//! 5. Report a summary.
//!
//! Events are neutral (no gRPC) and carry their time since the start; the
//! server turns them into its protocol. The deadline's watchdog, the replay
//! log and OS signals are the server's.

mod plan;
mod sweep;

pub(crate) use plan::ShutdownUnit;
pub use plan::{MAX_DEADLINE, Plan, PlannedUnit, TAIL_RESERVE, budget};
pub use sweep::{SweepReason, SweepTarget};

use crate::Supervisor;
use crate::actor::messages::{Request, ShutdownStop};
use crate::api::SupervisorError;
use crate::config::ServiceConfig;
use crate::stopping::UnitStopReport;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sweep::SweepScope;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zinit_process::spawn::ExitStatus;
use zinit_process::stop::{StopEvent, StopMode};
use zinit_process::{Signal, StopOutcome, Wave};

/// What the actor answers once the shutdown's stop of a unit is done.
#[derive(Debug, Default)]
pub(crate) struct UnitShutDown {
    /// What the stop did (`None` when it failed or did not run).
    pub counts: Option<StopCounts>,
    pub error: Option<String>,
    pub last_exit: Option<ExitStatus>,
}

/// What the shutdown needs of a unit's stop report.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StopCounts {
    pub outcome: StopOutcome,
    /// Processes that exited.
    pub exited: usize,
    /// Of those, processes that were killed.
    pub killed: usize,
}

impl StopCounts {
    pub fn of(report: &UnitStopReport) -> Self {
        let (exited, killed) = report.processes.exit_counts();
        Self {
            outcome: report.outcome,
            exited,
            killed,
        }
    }
}

/// How a shutdown runs.
#[derive(Debug, Clone)]
pub struct ShutdownOptions {
    /// The global deadline (at most [`MAX_DEADLINE`]).
    pub timeout: Duration,
    /// Cancelled to skip the remaining grace (never the sweep or the
    /// verification).
    pub force: CancellationToken,
    /// Processes the sweep never touches, with their ancestors.
    pub spare: SparePids,
    /// Whether the machine reboots after it (kept in the record, so that a
    /// successor that finishes the shutdown says the same).
    pub reboot: bool,
}

/// The clients that asked for the shutdown (added as they join), which the
/// sweep never touches, nor their ancestors.
#[derive(Debug, Clone, Default)]
pub struct SparePids(Arc<Mutex<Vec<i32>>>);

impl SparePids {
    /// Spares `pid` (and its ancestors).
    pub fn add(&self, pid: i32) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
    }

    fn snapshot(&self) -> Vec<i32> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Something that happened during a shutdown.
#[derive(Debug, Clone)]
pub struct ShutdownEvent {
    /// Time since the shutdown began.
    pub at: Duration,
    /// What.
    pub kind: ShutdownEventKind,
}

/// A process still alive while its unit stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    /// Its unit.
    pub unit: String,
    /// Its pid.
    pub pid: i32,
    /// Its command name.
    pub name: String,
    /// How long its unit has been stopping.
    pub waiting: Duration,
    /// Its unit's budget.
    pub budget: Duration,
}

/// A process the verification found alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Its pid.
    pub pid: i32,
    /// Its command name.
    pub name: String,
    /// Why the sweep targeted it, and why it is still there.
    pub reason: String,
}

/// What the verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// Processes still alive.
    pub leftovers: Vec<Leftover>,
    /// Set when the scan could not finish: nothing is known.
    pub unverified: Option<String>,
}

/// The end of a shutdown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// How long it took.
    pub duration: Duration,
    /// Units whose processes all exited within their budget.
    pub units_graceful: u32,
    /// Units that needed SIGKILL (or could not be stopped completely).
    pub units_killed: u32,
    /// Processes of units that exited within the grace.
    pub processes_graceful: u32,
    /// Processes of units killed at the end of their budget.
    pub processes_killed: u32,
    /// Processes the sweep stopped.
    pub processes_swept: u32,
    /// What the verification found alive.
    pub leftovers: Vec<Leftover>,
    /// Set when the verification could not finish.
    pub unverified: Option<String>,
    /// Whether the deadline cut a unit short: its budget, shortened by the
    /// deadline below its own stop timeout, ended before it had stopped.
    /// A unit whose budget was shortened but that stopped gracefully within
    /// it was not cut short.
    pub deadline_hit: bool,
}

impl Summary {
    /// Nothing was left (an unverified end counts as clean: nothing was
    /// seen, and the failed scan is reported on its own).
    pub fn clean(&self) -> bool {
        self.leftovers.is_empty()
    }
}

/// The kinds of shutdown events.
#[derive(Debug, Clone)]
pub enum ShutdownEventKind {
    /// The plan (the first event).
    Plan(Plan),
    /// A unit starts stopping.
    UnitStopping {
        /// The unit.
        unit: String,
        /// Its stop signal.
        signal: Signal,
        /// Its stop mode.
        mode: StopMode,
        /// Its budget.
        budget: Duration,
    },
    /// A signal was sent (by a unit's stop, or by the sweep when `unit` is `None`).
    SignalSent {
        /// The unit.
        unit: Option<String>,
        /// The process.
        pid: i32,
        /// Its depth below the unit's main process (the sweep: its ancestors).
        depth: usize,
        /// The signal.
        signal: Signal,
        /// Its command name.
        name: String,
    },
    /// A unit stopped.
    UnitStopped {
        /// The unit.
        unit: String,
        /// How long its stop took.
        took: Duration,
        /// How it ended (`None`: the stop failed, see the server's log).
        outcome: Option<StopOutcome>,
        /// How its main process ended, when known.
        exit: Option<ExitStatus>,
        /// Processes that exited.
        exited: u32,
        /// Of those, processes that were killed.
        killed: u32,
    },
    /// Processes that are still alive while their units stop.
    StillWaiting(Vec<Blocker>),
    /// The sweep stopped a process.
    ProcessSwept {
        /// Its pid.
        pid: i32,
        /// Its command name.
        name: String,
        /// Why it was targeted.
        reason: SweepReason,
        /// The signal that ended it.
        signal: Signal,
    },
    /// The verification's result.
    Verification(Verification),
    /// The summary (the last event).
    Summary(Summary),
}

/// Kills everything below the server at once, for the deadline's watchdog:
/// it takes no lock that the runtime could hold.
#[derive(Debug, Clone)]
pub struct EmergencyStop {
    cgroup_dirs: Vec<PathBuf>,
}

impl EmergencyStop {
    /// SIGKILLs every process in the unit cgroups and below this process.
    pub fn kill_everything(&self) {
        zinit_process::emergency::kill_everything_below(&self.cgroup_dirs);
    }

    /// Ends this process at once with `code`: no exit handlers, no
    /// flushing, no lock taken.
    pub fn exit_now(&self, code: i32) -> ! {
        zinit_process::emergency::exit_now(code)
    }
}

/// The stop of one unit, on its way.
struct Stopping {
    name: String,
    started: Instant,
    /// The deadline left it less than its own stop timeout.
    shortened: bool,
}

/// Where the shutdown's events go, as they happen, from whichever task
/// makes them (the server appends them to its replay log).
pub type EventSink = Arc<dyn Fn(ShutdownEvent) + Send + Sync>;

/// Where the actor answers when the shutdown's stop of a unit is done:
/// one channel for every unit, so waiting for the next one costs the same
/// however many run.
#[derive(Debug)]
pub(crate) struct DoneTo {
    name: String,
    tx: mpsc::UnboundedSender<(String, UnitShutDown)>,
}

impl DoneTo {
    /// Answers with what the stop did.
    pub fn send(self, done: UnitShutDown) {
        let _ = self.tx.send((self.name, done));
    }
}

/// One unit's stop progress, turned into shutdown events on the spot (in
/// the stopping task, so all of them come before the unit's end).
struct UnitProgress {
    unit: String,
    budget: Duration,
    start: Instant,
    sink: EventSink,
}

impl zinit_process::StopSink for UnitProgress {
    fn event(&self, event: &StopEvent) {
        if let Some(kind) = progress_event(&self.unit, self.budget, event) {
            (self.sink)(ShutdownEvent {
                at: self.start.elapsed(),
                kind,
            });
        }
    }
}

impl Supervisor {
    /// The handle the deadline's watchdog kills with.
    pub fn emergency_stop(&self) -> EmergencyStop {
        EmergencyStop {
            cgroup_dirs: self.cgroup_dirs(),
        }
    }

    /// What a shutdown with `timeout` would do now: the plan, and what the
    /// sweep would target (not the processes of live units, which their
    /// units stop). Changes nothing.
    pub async fn shutdown_plan(
        &self,
        timeout: Duration,
        spare: Vec<i32>,
    ) -> Result<Plan, SupervisorError> {
        let configs = self.configs().await?;
        let live = self.unit_members().await?;
        let units: Vec<ShutdownUnit> = configs
            .iter()
            .filter(|c| live.iter().any(|(name, _)| *name == c.name))
            .map(|c| ShutdownUnit {
                name: c.name.clone(),
                config: c.clone(),
            })
            .collect();
        let mut spare = spare;
        for (_, members) in &live {
            let members = members.clone();
            if let Ok(Ok(found)) = tokio::task::spawn_blocking(move || members.scan_now()).await {
                spare.extend(found.iter().map(|m| m.id.pid));
            }
        }
        let scope = SweepScope::new(&configs, self.cgroup_dirs(), spare);
        let sweep = scope
            .targets_within(Duration::from_secs(2))
            .await
            .unwrap_or_default();
        Ok(Plan {
            units: plan::plan_units(&units, &configs, timeout, false),
            deadline: timeout,
            sweep,
            dry_run: true,
        })
    }

    /// Shuts everything down within `options.timeout` and returns the
    /// summary; every step is given to `events` as it happens. Intake is
    /// frozen for good: a supervisor is not started again after this.
    pub async fn shutdown(&self, options: ShutdownOptions, events: EventSink) -> Summary {
        let start = Instant::now();
        let deadline = start + options.timeout.min(MAX_DEADLINE);
        let emit = |kind| {
            events(ShutdownEvent {
                at: start.elapsed(),
                kind,
            });
        };
        test_hooks::maybe_wedge("before-freeze").await;
        let deadline_ms = crate::takeover::unix_ms_in(deadline - Instant::now());
        let units = match tokio::time::timeout(
            Duration::from_secs(5),
            self.ask(|reply| Request::BeginShutdown(deadline_ms, options.reboot, reply)),
        )
        .await
        {
            Ok(Ok(units)) => units,
            _ => {
                tracing::error!("shutdown: the supervisor did not hand over its units");
                Vec::new()
            }
        };
        let configs = self.configs().await.unwrap_or_default();
        let mut summary = Summary::default();
        let timeout = deadline - start;
        self.stop_in_order(
            &units,
            &configs,
            (start, deadline, timeout),
            &options.force,
            &events,
            &mut summary,
        )
        .await;

        test_hooks::maybe_wedge("before-sweep").await;
        let scope = SweepScope::new(&configs, self.cgroup_dirs(), options.spare.snapshot());
        let sweep_end = deadline - TAIL_RESERVE / 2;
        let bound = sweep_end
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        let verification = match scope.targets_within(bound).await {
            // Nothing to sweep: that scan, taken after every unit stopped,
            // is the check that nothing is left.
            Some(targets) if targets.is_empty() => Verification::default(),
            found => {
                let targets = found.unwrap_or_default();
                summary.processes_swept = sweep::sweep(targets, sweep_end, &emit).await;
                sweep::verify(&scope, deadline - TAIL_RESERVE / 4).await
            }
        };
        emit(ShutdownEventKind::Verification(verification.clone()));
        summary.leftovers = verification.leftovers;
        summary.unverified = verification.unverified;
        summary.duration = start.elapsed();
        tracing::info!(
            "shutdown: done in {:.2}s; {} graceful, {} killed, {} swept, {} left",
            summary.duration.as_secs_f64(),
            summary.processes_graceful,
            summary.processes_killed,
            summary.processes_swept,
            summary.leftovers.len()
        );
        emit(ShutdownEventKind::Summary(summary.clone()));
        // The record goes before the shutdown is reported done: a server
        // that exits right after must not leave it for a successor.
        let _ = tokio::time::timeout(TAIL_RESERVE / 4, self.ask(Request::ShutdownDone)).await;
        summary
    }

    /// Stops every unit, each as soon as the live units that depend on it
    /// have stopped.
    async fn stop_in_order(
        &self,
        units: &[ShutdownUnit],
        configs: &[Arc<ServiceConfig>],
        (start, deadline, timeout): (Instant, Instant, Duration),
        force: &CancellationToken,
        events: &EventSink,
        summary: &mut Summary,
    ) {
        let emit = |kind| {
            events(ShutdownEvent {
                at: start.elapsed(),
                kind,
            });
        };
        let left = |now: Instant| deadline.saturating_duration_since(now);
        let planned = plan::plan_units(units, configs, left(Instant::now()), force.is_cancelled());
        emit(ShutdownEventKind::Plan(Plan {
            units: planned.clone(),
            deadline: timeout,
            sweep: Vec::new(),
            dry_run: false,
        }));
        let configs: HashMap<&str, &ShutdownUnit> =
            units.iter().map(|u| (u.name.as_str(), u)).collect();
        let mut pending: Vec<&PlannedUnit> = planned.iter().collect();
        let mut stopped: HashSet<String> = HashSet::new();
        let mut running: HashMap<String, Stopping> = HashMap::new();
        let (done_tx, mut done) = mpsc::unbounded_channel::<(String, UnitShutDown)>();
        loop {
            // Start every unit whose dependents have all stopped. If nothing
            // can start and nothing runs, the rest is a cycle: start it all.
            let ready: Vec<&PlannedUnit> = pending
                .iter()
                .copied()
                .filter(|u| u.waits_for.iter().all(|d| stopped.contains(d)))
                .collect();
            let ready = if ready.is_empty() && running.is_empty() {
                pending.clone()
            } else {
                ready
            };
            // The units that start now read their trees first and send
            // their first signals together (see `zinit_process::wave`).
            let wave = Wave::new();
            for unit in ready {
                pending.retain(|p| p.name != unit.name);
                let config = &configs[unit.name.as_str()].config;
                let now = Instant::now();
                let budget = budget(config.stop_timeout, left(now), force.is_cancelled());
                // Only a timeout the file gave can be cut short: the default
                // gives way to a shorter deadline (a container's 7 s).
                let shortened = config.stop_timeout_given
                    && budget < config.stop_timeout
                    && !force.is_cancelled();
                emit(ShutdownEventKind::UnitStopping {
                    unit: unit.name.clone(),
                    signal: config.stop_signal,
                    mode: config.stop_mode,
                    budget,
                });
                let kill_wait = (deadline - TAIL_RESERVE / 2)
                    .saturating_duration_since(now + budget)
                    .clamp(Duration::from_millis(100), Duration::from_secs(1));
                let progress = Arc::new(UnitProgress {
                    unit: unit.name.clone(),
                    budget,
                    start,
                    sink: events.clone(),
                });
                let reply = DoneTo {
                    name: unit.name.clone(),
                    tx: done_tx.clone(),
                };
                let _ = self
                    .tx
                    .send(crate::actor::messages::Msg::Req(Request::ShutdownStop(
                        ShutdownStop {
                            name: unit.name.clone(),
                            budget,
                            kill_wait,
                            progress,
                            hurry: force.clone(),
                            wave: wave.clone(),
                            reply,
                        },
                    )));
                running.insert(
                    unit.name.clone(),
                    Stopping {
                        name: unit.name.clone(),
                        started: now,
                        shortened,
                    },
                );
            }
            drop(wave);
            if running.is_empty() && pending.is_empty() {
                break;
            }
            // The next unit done (then more may start). The sender kept
            // here means this never ends while units run.
            if let Some((name, answer)) = done.recv().await
                && let Some(mut stop) = running.remove(&name)
            {
                // A unit forced to stop was not cut short by the deadline.
                stop.shortened &= !force.is_cancelled();
                emit(unit_stopped(&stop, answer, summary));
                stopped.insert(stop.name);
            }
        }
    }
}

/// The event for a unit whose stop is done, counted into the summary.
fn unit_stopped(stop: &Stopping, answer: UnitShutDown, summary: &mut Summary) -> ShutdownEventKind {
    let mut event = ShutdownEventKind::UnitStopped {
        unit: stop.name.clone(),
        took: stop.started.elapsed(),
        outcome: None,
        exit: answer.last_exit,
        exited: 0,
        killed: 0,
    };
    if let Some(error) = answer.error {
        tracing::error!("shutdown: stopping {}: {error}", stop.name);
    }
    if let (
        Some(counts),
        ShutdownEventKind::UnitStopped {
            outcome,
            exited,
            killed,
            ..
        },
    ) = (answer.counts, &mut event)
    {
        let (all, by_kill) = (counts.exited, counts.killed);
        *outcome = Some(counts.outcome);
        *exited = all as u32;
        *killed = by_kill as u32;
        summary.processes_graceful += (all - by_kill) as u32;
        summary.processes_killed += by_kill as u32;
        match counts.outcome {
            StopOutcome::Graceful => summary.units_graceful += 1,
            _ => {
                summary.units_killed += 1;
                summary.deadline_hit |= stop.shortened;
            }
        }
    }
    event
}

/// A unit's stop progress as a shutdown event (signals other than
/// SIGSTOP, and what is still blocking).
fn progress_event(unit: &str, budget: Duration, event: &StopEvent) -> Option<ShutdownEventKind> {
    match event {
        StopEvent::Signalled {
            pid,
            depth,
            comm,
            signal,
            ..
        } if *signal != Signal::SIGSTOP => Some(ShutdownEventKind::SignalSent {
            unit: Some(unit.to_string()),
            pid: *pid,
            depth: *depth,
            signal: *signal,
            name: comm.to_string(),
        }),
        StopEvent::Waiting { remaining, at } => Some(ShutdownEventKind::StillWaiting(
            remaining
                .iter()
                .map(|(pid, name)| Blocker {
                    unit: unit.to_string(),
                    pid: *pid,
                    name: name.clone(),
                    waiting: *at,
                    budget,
                })
                .collect(),
        )),
        _ => None,
    }
}

/// A fault hook for the watchdog test, compiled into debug builds only
/// (never into a release): `ZINIT_TEST_WEDGE=before-sweep` makes the
/// shutdown hang before its sweep.
mod test_hooks {
    #[cfg(debug_assertions)]
    pub async fn maybe_wedge(step: &str) {
        if std::env::var("ZINIT_TEST_WEDGE").is_ok_and(|s| s == step) {
            tracing::warn!("test hook: wedging the shutdown at {step}");
            std::future::pending::<()>().await;
        }
    }

    #[cfg(not(debug_assertions))]
    pub async fn maybe_wedge(_step: &str) {}
}
