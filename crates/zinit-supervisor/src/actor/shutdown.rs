//! The actor's part of the shutdown: freezing intake, and stopping one unit
//! when the shutdown's plan says so, through the same stop as any other
//! (`begin_stop_with`), with the budget the deadline leaves. The order, the
//! budgets, the sweep and the verification live in `crate::shutdown`.

use super::Actor;
use super::messages::ShutdownStop;
use crate::api::SupervisorError;
use crate::shutdown::{ShutdownUnit, UnitShutDown};
use crate::state::State;
use crate::stopping::StopParams;
use crate::unit::Then;

impl Actor {
    /// Freezes intake (no start, restart, add, reload or job from now on; a
    /// unit waiting to restart or for its dependencies just stops) and
    /// lists every unit whose processes are alive.
    pub(super) fn begin_shutdown(&mut self) -> Vec<ShutdownUnit> {
        self.intake_frozen = true;
        let names: Vec<String> = self.units.keys().cloned().collect();
        let mut out = Vec::new();
        for name in names {
            let unit = self.units.get_mut(&name).expect("listed");
            unit.wanted = false;
            unit.timers.forget_pending();
            unit.then = Then::Rest;
            let alive = unit.alive();
            if alive {
                out.push(ShutdownUnit {
                    name: name.clone(),
                    config: unit.config.clone(),
                });
            } else if matches!(unit.state, State::BackOff | State::Blocked) {
                self.set_state(&name, State::Stopped, "shutdown: not restarted");
            }
        }
        for (_, waiters) in self.waiters.start.drain() {
            for reply in waiters {
                let _ = reply.send(Err(SupervisorError::ShuttingDown));
            }
        }
        out
    }

    /// Stops one unit for the shutdown and answers when it is down. A stop
    /// that runs already (a request's) is waited for, and hurried when the
    /// shutdown's budget for the unit ends or the shutdown is forced.
    pub(super) fn shutdown_stop(&mut self, stop: ShutdownStop) {
        let ShutdownStop {
            name,
            budget,
            kill_wait,
            progress,
            hurry,
            wave,
            reply,
        } = stop;
        let Some(unit) = self.units.get(&name) else {
            reply.send(UnitShutDown::default());
            return;
        };
        if unit.state == State::Stopping {
            let running = unit.stop_hurry.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(budget) => {}
                    _ = hurry.cancelled() => {}
                }
                running.cancel();
            });
            self.waiters.shutdown.entry(name).or_default().push(reply);
            return;
        }
        if !unit.alive() {
            reply.send(UnitShutDown {
                last_exit: unit.last_exit,
                ..UnitShutDown::default()
            });
            return;
        }
        self.waiters
            .shutdown
            .entry(name.clone())
            .or_default()
            .push(reply);
        let params = StopParams {
            budget,
            kill_wait,
            progress: Some(progress),
            hurry: hurry.child_token(),
            wave: Some(wave),
        };
        self.begin_stop_with(&name, Then::Rest, "shutting down", params);
    }
}
