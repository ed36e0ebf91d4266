//! The event stream: state changes, restarts and job results, broadcast to
//! every subscriber (the control plane streams it).

use crate::state::State;
use std::time::SystemTime;
use tokio::sync::broadcast;
use zinit_process::spawn::ExitStatus;

/// Something that happened to a unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When.
    pub time: SystemTime,
    /// The unit (service name or job id).
    pub unit: String,
    /// What.
    pub kind: EventKind,
}

/// The kinds of events.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// The unit changed state.
    State {
        /// Previous state.
        from: State,
        /// New state.
        to: State,
        /// Why, for a person.
        reason: String,
    },
    /// The unit will be restarted.
    Restarting {
        /// The restart's number in a row.
        attempt: u32,
        /// The delay before it.
        delay: std::time::Duration,
    },
    /// A job ended.
    JobFinished {
        /// Its exit status (`None` if it never ran).
        status: Option<ExitStatus>,
    },
    /// A non-fatal problem (a capped timeout, a log file that cannot be written).
    Warning {
        /// The message.
        message: String,
    },
}

/// How many events a subscriber may fall behind before it is told it
/// missed some (the channel's slots are allocated up front, so this is
/// memory held from start-up on: 1,024 events are about 100 KiB).
const BACKLOG: usize = 1024;

/// The broadcast of events. Subscribers that lag are told how many they missed.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl EventBus {
    /// Sends an event to every subscriber.
    pub fn send(&self, unit: &str, kind: EventKind) {
        let _ = self.tx.send(Event {
            time: SystemTime::now(),
            unit: unit.to_string(),
            kind,
        });
    }

    /// A new subscriber, receiving events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
