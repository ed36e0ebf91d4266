//! A wave of stops whose first signals go out together.
//!
//! A stop reads its tree (and opens a handle to each member) before its
//! first signal. When many units stop at once, the first stops' signals wake
//! hundreds of processes that then compete for the CPU with the other stops'
//! reads: on a small machine the last unit of a 50-unit shutdown got its
//! first signal 150 ms after the first one did. In a [`Wave`], every stop
//! reads its tree first, then waits until every other stop of the wave has
//! read its own (at most a short bound), and they all signal together.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// The longest a stop waits for the rest of its wave: a wave aligns first
/// signals, it never holds one back for long.
pub const WAVE_WAIT: Duration = Duration::from_millis(250);

/// One place in a wave. [`Wave::new`] makes the first (the organiser's);
/// each clone is another participant. The wave goes when every place has
/// called [`Wave::ready`] or been dropped, so the organiser keeps its own
/// place until it has handed out every clone.
#[derive(Debug)]
pub struct Wave {
    shared: Arc<Shared>,
    ready: AtomicBool,
}

#[derive(Debug)]
struct Shared {
    /// Places not ready yet.
    waiting: AtomicUsize,
    /// Becomes `true` when the last place is ready.
    go: watch::Sender<bool>,
}

impl Wave {
    /// A new wave with one place, the caller's.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                waiting: AtomicUsize::new(1),
                go: watch::Sender::new(false),
            }),
            ready: AtomicBool::new(false),
        }
    }

    /// Says this place is ready, then waits until every place is, or until
    /// `bound` passes.
    pub async fn ready(&self, bound: Duration) {
        let mut go = self.shared.go.subscribe();
        self.mark_ready();
        let _ = tokio::time::timeout(bound, go.wait_for(|go| *go)).await;
    }

    /// Whether every place is ready.
    pub fn gone(&self) -> bool {
        *self.shared.go.borrow()
    }

    fn mark_ready(&self) {
        if !self.ready.swap(true, Ordering::AcqRel)
            && self.shared.waiting.fetch_sub(1, Ordering::AcqRel) == 1
        {
            self.shared.go.send_replace(true);
        }
    }
}

impl Default for Wave {
    fn default() -> Self {
        Self::new()
    }
}

impl Clone for Wave {
    /// Another place in the same wave.
    fn clone(&self) -> Self {
        self.shared.waiting.fetch_add(1, Ordering::AcqRel);
        Self {
            shared: self.shared.clone(),
            ready: AtomicBool::new(false),
        }
    }
}

impl Drop for Wave {
    /// A place given up counts as ready: a stop that fails or never starts
    /// does not hold the others.
    fn drop(&mut self) {
        self.mark_ready();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test]
    async fn a_wave_goes_when_its_last_place_is_ready() {
        let organiser = Wave::new();
        let places: Vec<Wave> = (0..3).map(|_| organiser.clone()).collect();
        let start = Instant::now();
        let waiting: Vec<_> = places
            .into_iter()
            .map(|place| {
                tokio::spawn(async move {
                    place.ready(Duration::from_secs(10)).await;
                    Instant::now()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!organiser.gone(), "went before the organiser was ready");
        drop(organiser);
        for place in waiting {
            let went = place.await.expect("joined");
            assert!(went - start >= Duration::from_millis(100), "went early");
            assert!(went - start < Duration::from_secs(5), "went late");
        }
    }

    #[tokio::test]
    async fn a_place_never_taken_holds_the_others_only_for_the_bound() {
        let organiser = Wave::new();
        let place = organiser.clone();
        let start = Instant::now();
        place.ready(Duration::from_millis(100)).await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert!(!organiser.gone());
    }

    #[tokio::test]
    async fn readiness_is_counted_once_per_place() {
        let organiser = Wave::new();
        let place = organiser.clone();
        place.ready(Duration::ZERO).await;
        place.ready(Duration::ZERO).await;
        drop(place);
        assert!(!organiser.gone(), "one place counted twice");
        organiser.ready(Duration::ZERO).await;
        assert!(organiser.gone());
    }
}
