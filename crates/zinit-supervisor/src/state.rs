//! The lifecycle state machine of a unit, with the transitions it allows.

use std::fmt;

/// Where a unit is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not running, and not asked to run (initial state, or after a stop).
    Stopped,
    /// Asked to run, waiting for its dependencies.
    Blocked,
    /// Spawned; its readiness test has not passed yet.
    Starting,
    /// Running (and ready, if it has a test).
    Running,
    /// Being stopped.
    Stopping,
    /// Ended and not restarted: a oneshot that succeeded, or a service whose
    /// policy does not restart it after a clean exit.
    Exited,
    /// Ended badly and not restarted (or could not start at all).
    Failed,
    /// Waiting out its restart delay.
    BackOff,
}

impl State {
    /// Whether going from `self` to `next` is allowed.
    pub fn can_become(self, next: State) -> bool {
        use State::*;
        matches!(
            (self, next),
            (Stopped, Blocked | Starting | Failed)
                | (Blocked, Starting | Stopped | Failed)
                | (Starting, Running | Stopping | Exited | Failed | BackOff)
                | (Running, Stopping | Exited | Failed | BackOff)
                | (Stopping, Stopped | Failed | BackOff | Exited)
                | (Exited, Starting | Blocked | Stopped | Stopping)
                | (Failed, Starting | Blocked | Stopped | Stopping)
                | (BackOff, Starting | Blocked | Stopped | Failed | Stopping)
        )
    }

    /// Lower-case name, as shown to people and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Blocked => "blocked",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Exited => "exited",
            State::Failed => "failed",
            State::BackOff => "backoff",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition that the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unit {unit}: cannot go from {from} to {to}")]
pub struct BadTransition {
    /// The unit.
    pub unit: String,
    /// Its state.
    pub from: State,
    /// The refused state.
    pub to: State,
}

#[cfg(test)]
mod tests {
    use super::State::*;

    #[test]
    fn the_normal_lives_are_allowed() {
        let service = [
            Stopped, Blocked, Starting, Running, BackOff, Starting, Running, Stopping, Stopped,
        ];
        let oneshot = [Stopped, Starting, Exited, Starting, Failed];
        for life in [&service[..], &oneshot[..]] {
            for pair in life.windows(2) {
                assert!(
                    pair[0].can_become(pair[1]),
                    "{:?} -> {:?}",
                    pair[0],
                    pair[1]
                );
            }
        }
    }

    #[test]
    fn shortcuts_are_refused() {
        for (from, to) in [
            (Stopped, Running),
            (Blocked, Running),
            (Stopping, Running),
            (Running, Starting),
            (Stopped, Stopping),
        ] {
            assert!(!from.can_become(to), "{from:?} -> {to:?}");
        }
    }
}
