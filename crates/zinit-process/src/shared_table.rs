//! One reader of the whole process table for every caller at once.
//!
//! Without cgroups, a unit's members can only be found in the whole table
//! (a process group or session member can be anywhere), and a shutdown
//! stops many units at the same time. Rather than each of them reading all
//! of `/proc` on its own thread, [`fresh`] hands the request to one reader
//! thread: requests that arrive while a read runs are all answered by the
//! next read, which starts after every one of them, so each caller gets a
//! table at least as fresh as its request and the reads per second are
//! bounded by one reader, whatever the number of units.

use crate::proc_table::{Detail, ProcessTable};
use std::io;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// A read's answer: errors are shared by every caller it answers.
type Answer = Result<Arc<ProcessTable>, (io::ErrorKind, String)>;

/// The reader thread's queue (started on first use).
static READER: OnceLock<Mutex<std_mpsc::Sender<oneshot::Sender<Answer>>>> = OnceLock::new();

fn reader() -> std_mpsc::Sender<oneshot::Sender<Answer>> {
    READER
        .get_or_init(|| {
            let (tx, rx) = std_mpsc::channel::<oneshot::Sender<Answer>>();
            let spawned = std::thread::Builder::new()
                .name("zinit-proc".into())
                .stack_size(256 * 1024)
                .spawn(move || {
                    while let Ok(first) = rx.recv() {
                        let mut waiting = vec![first];
                        waiting.extend(rx.try_iter());
                        let answer: Answer = ProcessTable::snapshot(Detail::Basic)
                            .map(Arc::new)
                            .map_err(|e| (e.kind(), e.to_string()));
                        for reply in waiting {
                            let _ = reply.send(answer.clone());
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start the /proc reader thread: {e}");
            }
            Mutex::new(tx)
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// A basic snapshot of the whole table, read after this call began (shared
/// with the callers that asked at the same time), or an error after `bound`.
pub async fn fresh(bound: Duration) -> io::Result<Arc<ProcessTable>> {
    let (reply, answer) = oneshot::channel();
    if reader().send(reply).is_err() {
        // No reader thread: read here, on a blocking thread.
        return ProcessTable::load(Detail::Basic, bound).await.map(Arc::new);
    }
    match tokio::time::timeout(bound, answer).await {
        Ok(Ok(Ok(table))) => Ok(table),
        Ok(Ok(Err((kind, message)))) => Err(io::Error::new(kind, message)),
        Ok(Err(_)) => Err(io::Error::other("the /proc reader thread ended")),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("reading /proc took longer than {bound:?}"),
        )),
    }
}
