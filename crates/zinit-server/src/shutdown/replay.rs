//! The shutdown's replay log: every event so far, in order, and a `watch`
//! of its length. Each stream sends the log from where it is, so a request
//! that joins late gets everything so far and then the live events, and a
//! slow client never makes another one miss an event. The summary is always
//! the last event, sent before the stream ends.

use std::pin::Pin;
use std::sync::Mutex;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::Status;
use zinit_proto::v1 as pb;

/// A stream of shutdown events for one client.
pub type EventStream =
    Pin<Box<dyn Stream<Item = Result<pb::ShutdownResponse, Status>> + Send + 'static>>;

#[derive(Default)]
struct Log {
    events: Vec<pb::ShutdownEvent>,
    done: bool,
}

/// The events of the one shutdown.
pub struct Replay {
    /// `None` until the shutdown begins.
    log: Mutex<Option<Log>>,
    /// Grows with every event (and once more when done).
    grown: watch::Sender<usize>,
}

impl Default for Replay {
    fn default() -> Self {
        Self {
            log: Mutex::new(None),
            grown: watch::channel(0).0,
        }
    }
}

impl Replay {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Log>> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the log; `false` if it was open already (a shutdown runs).
    pub fn begin(&self) -> bool {
        let mut log = self.lock();
        if log.is_some() {
            return false;
        }
        *log = Some(Log::default());
        true
    }

    /// Whether a shutdown has begun.
    pub fn began(&self) -> bool {
        self.lock().is_some()
    }

    /// Appends an event.
    pub fn push(&self, event: pb::ShutdownEvent) {
        let n = {
            let mut log = self.lock();
            let log = log.get_or_insert_with(Log::default);
            log.events.push(event);
            log.events.len()
        };
        self.grown.send_replace(n);
    }

    /// Marks the log complete: streams end after sending what is in it.
    pub fn finish(&self) {
        let n = {
            let mut log = self.lock();
            let log = log.get_or_insert_with(Log::default);
            log.done = true;
            log.events.len()
        };
        // Wake the streams so they see `done`.
        self.grown.send_replace(n + 1);
    }

    /// Every event so far, then the live ones, ending after the last.
    pub fn stream(self: &std::sync::Arc<Self>) -> EventStream {
        let replay = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut grown = replay.grown.subscribe();
            let mut sent = 0;
            loop {
                let (batch, done) = {
                    let log = replay.lock();
                    let log = log.as_ref().expect("the stream of a shutdown that began");
                    (log.events[sent..].to_vec(), log.done)
                };
                sent += batch.len();
                for event in batch {
                    let response = pb::ShutdownResponse { event: Some(event) };
                    if tx.send(Ok(response)).await.is_err() {
                        return; // The client went away; the shutdown goes on.
                    }
                }
                if done || grown.wait_for(|n| *n > sent).await.is_err() {
                    return;
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}
