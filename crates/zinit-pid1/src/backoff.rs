//! The server's restart delay: 0.5 s after an unexpected death, doubling
//! with each death in a row up to 10 s, and back to 0.5 s once a server has
//! run for 30 s. Pure arithmetic on the durations passed in.

use std::time::Duration;

/// The first delay.
pub const FIRST: Duration = Duration::from_millis(500);
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(10);
/// A run this long resets the delay to [`FIRST`].
pub const STABLE: Duration = Duration::from_secs(30);

/// The restart delays of one zinit_pid1.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST }
    }
}

impl Backoff {
    /// The delay before the next start, for a server that ran `ran_for`
    /// before it died (or failed to start: zero).
    pub fn delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= STABLE {
            self.next = FIRST;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets_after_a_stable_run() {
        let mut b = Backoff::default();
        let quick = Duration::from_secs(1);
        let delays: Vec<u128> = (0..7).map(|_| b.delay(quick).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 10000, 10000]);
        assert_eq!(b.delay(STABLE), FIRST);
        assert_eq!(b.delay(quick), Duration::from_secs(1));
    }
}
