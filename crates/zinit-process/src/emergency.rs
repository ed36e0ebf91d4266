//! The last resort when a deadline passes with a step still running: kill
//! everything below this process at once, taking no lock that another
//! thread could hold (it reads only the file system and signals through
//! pidfds), so that a watchdog thread can do it while the runtime is wedged.

use crate::handle::{ProcessHandle, ProcessId};
use crate::proc_table::{Detail, ProcessTable};
use crate::signal::Signal;
use std::path::PathBuf;
use std::time::Duration;

/// Ends this process at once with `code`: no exit handlers, no flushing,
/// no lock taken.
pub fn exit_now(code: i32) -> ! {
    crate::sys::exit_now(code)
}

/// SIGKILLs every process in the unit cgroups under `cgroup_dirs` (one
/// `cgroup.kill` each) and every descendant of this process (a child
/// subreaper's descendants include the double-forked daemons it adopted),
/// re-reading a few times for processes forked meanwhile.
pub fn kill_everything_below(cgroup_dirs: &[PathBuf]) {
    for dir in cgroup_dirs {
        for (_, cgroup) in crate::cgroup::unit_cgroups(dir) {
            let _ = cgroup.kill();
        }
    }
    let me = std::process::id() as i32;
    for _ in 0..3 {
        let table = ProcessTable::snapshot(Detail::Basic).unwrap_or_default();
        let descendants = table.descendants(me);
        if descendants.is_empty() {
            break;
        }
        for (pid, _) in descendants {
            let Some(info) = table.get(pid) else { continue };
            let id = ProcessId {
                pid,
                start_time: info.start_time,
            };
            if let Ok(handle) = ProcessHandle::open(id) {
                let _ = handle.signal(Signal::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
