//! The shutdown's replay log: every event so far, in order, and a `watch`
//! of its length. Each stream sends the log from where it is, so a request
//! that joins late gets everything so far and then the live events, and a
//! slow client never makes another one miss an event. The summary is always
//! the last event, sent before the stream ends.
//!
//! The log keeps each event encoded (its protobuf bytes, one buffer for
//! all of them): a shutdown of thousands of processes sends an event per
//! signal, and the encoded form is a fraction of the decoded one. A stream
//! decodes one event at a time as it sends it, so a client never holds a
//! copy of the log either.

use prost::Message;
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
    /// Every event, encoded, one after the other.
    bytes: Vec<u8>,
    /// Where each event ends in `bytes`.
    ends: Vec<u32>,
    done: bool,
}

impl Log {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// The `n`th event (`None` past the end, or if it does not decode).
    fn event(&self, n: usize) -> Option<pb::ShutdownEvent> {
        let start = match n {
            0 => 0,
            _ => *self.ends.get(n - 1)? as usize,
        };
        let end = *self.ends.get(n)? as usize;
        pb::ShutdownEvent::decode(self.bytes.get(start..end)?).ok()
    }
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
            // Encoding into a Vec cannot run out of room.
            if event.encode(&mut log.bytes).is_ok() {
                log.ends.push(log.bytes.len() as u32);
            }
            log.len()
        };
        self.grown.send_replace(n);
    }

    /// Marks the log complete: streams end after sending what is in it.
    pub fn finish(&self) {
        let n = {
            let mut log = self.lock();
            let log = log.get_or_insert_with(Log::default);
            log.done = true;
            log.len()
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
                // One event at a time, decoded under the lock, sent without it.
                let (next, done) = {
                    let log = replay.lock();
                    let log = log.as_ref().expect("the stream of a shutdown that began");
                    let next = (sent < log.len()).then(|| log.event(sent));
                    (next, log.done)
                };
                if let Some(event) = next {
                    sent += 1;
                    let Some(event) = event else {
                        continue;
                    };
                    let response = pb::ShutdownResponse { event: Some(event) };
                    if tx.send(Ok(response)).await.is_err() {
                        return; // The client went away; the shutdown goes on.
                    }
                    continue;
                }
                if done || grown.wait_for(|n| *n > sent).await.is_err() {
                    return;
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}
