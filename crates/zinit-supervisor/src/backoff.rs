//! Restart back-off: exponential delays, a reset after a stable run, and a
//! limit on restarts in a row. Pure arithmetic on instants the caller
//! passes in, so the timing is exact in tests.

use crate::config::RestartPolicy;
use std::time::{Duration, Instant};

/// The back-off state of one unit.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    attempts: u32,
}

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Restart after this delay (the `attempt`-th restart in a row).
    RestartAfter {
        /// The delay.
        delay: Duration,
        /// 1 for the first restart in a row.
        attempt: u32,
    },
    /// The restart limit is reached.
    GiveUp {
        /// How many restarts in a row were made.
        restarts: u32,
    },
}

impl Backoff {
    /// Restarts made in a row so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Decides the next restart for a unit that started at `started` and
    /// exited at `exited`.
    pub fn after_exit(
        &mut self,
        policy: &RestartPolicy,
        started: Instant,
        exited: Instant,
    ) -> Next {
        if exited.saturating_duration_since(started) >= policy.reset_after {
            self.attempts = 0;
        }
        if policy.max_restarts.is_some_and(|max| self.attempts >= max) {
            return Next::GiveUp {
                restarts: self.attempts,
            };
        }
        let exponent = self.attempts.min(64) as i32;
        let delay = policy.delay.as_secs_f64() * policy.factor.powi(exponent);
        let delay = Duration::from_secs_f64(delay.min(policy.max_delay.as_secs_f64()));
        self.attempts += 1;
        Next::RestartAfter {
            delay,
            attempt: self.attempts,
        }
    }

    /// Forgets the history (after an explicit start or restart).
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RestartMode;

    fn policy(max: Option<u32>) -> RestartPolicy {
        RestartPolicy {
            mode: RestartMode::Always,
            delay: Duration::from_millis(100),
            factor: 2.0,
            max_delay: Duration::from_millis(1000),
            reset_after: Duration::from_secs(10),
            max_restarts: max,
        }
    }

    fn delays(backoff: &mut Backoff, policy: &RestartPolicy, n: usize) -> Vec<u64> {
        let t0 = Instant::now();
        (0..n)
            .map(
                |_| match backoff.after_exit(policy, t0, t0 + Duration::from_millis(5)) {
                    Next::RestartAfter { delay, .. } => delay.as_millis() as u64,
                    Next::GiveUp { .. } => 0,
                },
            )
            .collect()
    }

    #[test]
    fn delays_grow_exponentially_up_to_the_maximum() {
        let mut b = Backoff::default();
        assert_eq!(
            delays(&mut b, &policy(None), 6),
            [100, 200, 400, 800, 1000, 1000]
        );
    }

    #[test]
    fn a_stable_run_resets_the_delay() {
        let p = policy(None);
        let mut b = Backoff::default();
        delays(&mut b, &p, 3);
        let t0 = Instant::now();
        let next = b.after_exit(&p, t0, t0 + Duration::from_secs(11));
        assert_eq!(
            next,
            Next::RestartAfter {
                delay: Duration::from_millis(100),
                attempt: 1
            }
        );
    }

    #[test]
    fn the_limit_gives_up_after_that_many_restarts_in_a_row() {
        let p = policy(Some(2));
        let mut b = Backoff::default();
        assert_eq!(delays(&mut b, &p, 2), [100, 200]);
        let t0 = Instant::now();
        assert_eq!(b.after_exit(&p, t0, t0), Next::GiveUp { restarts: 2 });
    }
}
