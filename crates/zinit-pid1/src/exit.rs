//! zinit_pid1's exit code in a container (or not as PID 1): whether the
//! shutdown was clean. When several things went wrong, the server's part
//! decides first (its own code, or that zinit_pid1 had to kill it), then
//! the final sweep.

use crate::supervise::ServerEnd;
use crate::sweep::Report;

/// The server's shutdown was clean and the final sweep found nothing.
pub const CLEAN: i32 = 0;
/// zinit_pid1 could not start (bad flags, no zinit_server, no config
/// directory), or, with `--machine`, reboot(2) failed.
pub const STARTUP: i32 = 1;
/// Usage error (clap's code).
pub const USAGE: i32 = 2;
/// The server's shutdown left processes (the server exited 3).
pub const LEFTOVERS: i32 = 3;
/// The server's deadline cut in (the server exited 4).
pub const DEADLINE: i32 = 4;
/// The server had not exited by the bound (plus 1 s): zinit_pid1 killed it.
pub const SERVER_KILLED: i32 = 5;
/// The final sweep found processes below zinit_pid1 (orphans, or what the
/// server left) and killed them.
pub const SWEPT: i32 = 6;
/// The server failed: it died during the shutdown, exited with another
/// code, or was not running (waiting for its restart) when the shutdown
/// was asked for.
pub const SERVER_FAILED: i32 = 7;
/// The server kept dying: [`crate::supervise::CRASH_LOOP`] times within
/// [`crate::supervise::CRASH_WINDOW`]; zinit_pid1 gave up.
pub const CRASH_LOOP: i32 = 8;

/// The exit code for a shutdown.
pub fn code(server: &ServerEnd, sweep: &Report) -> i32 {
    match server {
        ServerEnd::Exited(0) => {}
        ServerEnd::Exited(3) => return LEFTOVERS,
        ServerEnd::Exited(4) => return DEADLINE,
        ServerEnd::Exited(_) | ServerEnd::Failed(_) => return SERVER_FAILED,
        ServerEnd::Killed => return SERVER_KILLED,
        // Its usage error is zinit_pid1's; any other start-up error too.
        ServerEnd::NeverStarted(2) => return USAGE,
        ServerEnd::NeverStarted(_) => return STARTUP,
        ServerEnd::CrashLoop => return CRASH_LOOP,
    }
    if sweep.found.is_empty() && sweep.left.is_empty() {
        CLEAN
    } else {
        SWEPT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::Found;

    fn found() -> Vec<Found> {
        vec![Found {
            pid: 7,
            name: "sleep".into(),
        }]
    }

    #[test]
    fn the_server_decides_first_then_the_sweep() {
        let nothing = Report::default();
        let swept = Report {
            found: found(),
            ..Report::default()
        };
        let visitors_only = Report {
            visitors: found(),
            ..Report::default()
        };
        assert_eq!(code(&ServerEnd::Exited(0), &nothing), CLEAN);
        assert_eq!(code(&ServerEnd::Exited(0), &visitors_only), CLEAN);
        assert_eq!(code(&ServerEnd::Exited(0), &swept), SWEPT);
        assert_eq!(code(&ServerEnd::Exited(3), &swept), LEFTOVERS);
        assert_eq!(code(&ServerEnd::Exited(4), &nothing), DEADLINE);
        assert_eq!(code(&ServerEnd::Exited(1), &nothing), SERVER_FAILED);
        assert_eq!(code(&ServerEnd::Killed, &swept), SERVER_KILLED);
        assert_eq!(
            code(&ServerEnd::Failed("crashed".into()), &nothing),
            SERVER_FAILED
        );
        let stuck = Report {
            left: found(),
            ..Report::default()
        };
        assert_eq!(code(&ServerEnd::Exited(0), &stuck), SWEPT);
    }
}
