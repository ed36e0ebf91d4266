//! The actor's background tasks: watching a spawned instance (its main
//! process's exit, then every other process of it) and running its
//! readiness test. Each reports back to the actor with the instance it was
//! started for.

use crate::actor::messages::Msg;
use crate::command::{CommandResult, run_bounded};
use crate::config::ServiceConfig;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use zinit_process::spawn::ExitStatus;
use zinit_process::watch::ExitWatcher;
use zinit_process::{Members, ProcessHandle, ProcessId};

/// Waits for the main process to exit (reaping it), then for every other
/// process of the instance to be gone.
pub(crate) async fn monitor(
    mut child: zinit_process::Child,
    members: Members,
    tx: mpsc::UnboundedSender<Msg>,
    unit: String,
    instance: u64,
) {
    let status = match child.wait().await {
        Ok(status) => status,
        Err(_) => ExitStatus::Exited(-1),
    };
    main_ended(Some(status), members, tx, unit, instance).await;
}

/// Reports the main process's end, with how many processes of the instance
/// live on (a program that daemonized leaves its daemon), then waits until
/// they are gone. One look serves both: without a cgroup it is the wait's
/// first.
async fn main_ended(
    status: Option<ExitStatus>,
    members: Members,
    tx: mpsc::UnboundedSender<Msg>,
    unit: String,
    instance: u64,
) {
    let left = members
        .scan_async(Duration::from_secs(2))
        .await
        .unwrap_or_default();
    let _ = tx.send(Msg::MainExited {
        unit: unit.clone(),
        instance,
        status,
        remaining: left.len(),
    });
    wait_empty(members, tx, unit, instance, left).await;
}

/// Waits until `main` (not our child) has exited: its pidfd's readiness.
async fn wait_exit(main: ProcessId) {
    if let Ok(handle) = ProcessHandle::open(main)
        && let Ok(mut watcher) = ExitWatcher::new()
        && watcher.add(&handle).unwrap_or(false)
    {
        while handle.is_alive() {
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            if watcher.wait(far).await.is_err() {
                break;
            }
        }
    }
}

/// Reads the pid a daemon wrote to `path` once the unit's first main
/// process has exited (waiting up to `bound` for the file), and checks that
/// the process belongs to the unit: in its cgroup, among its members, or
/// (without a cgroup) an orphan this server adopted as subreaper. A pid
/// file anyone could write never makes zinit follow a process it did not
/// start.
pub(crate) async fn follow_pid_file(
    path: std::path::PathBuf,
    members: Members,
    bound: Duration,
    tx: mpsc::UnboundedSender<Msg>,
    unit: String,
    instance: u64,
) {
    let end = tokio::time::Instant::now() + bound;
    let main = loop {
        let read = read_pid_file(&path);
        let found = match read {
            Ok(pid) => match ProcessId::of(pid) {
                Some(id) => belongs(id, &members).await.map(|()| id),
                None => Err(format!("pid {pid} from {} is not running", path.display())),
            },
            Err(e) => Err(e),
        };
        if found.is_ok() || tokio::time::Instant::now() >= end {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = tx.send(Msg::Followed {
        unit,
        instance,
        main,
    });
}

/// The pid in a pid file: a regular file (never through a link), small,
/// holding a positive decimal number.
fn read_pid_file(path: &std::path::Path) -> Result<i32, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let show = path.display();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| format!("cannot read {show}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{show}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{show} is not a regular file"));
    }
    let mut text = String::new();
    file.by_ref()
        .take(64)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {show}: {e}"))?;
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 1 => Ok(pid),
        _ => Err(format!("{show} holds no pid: {:?}", text.trim())),
    }
}

async fn belongs(id: ProcessId, members: &Members) -> Result<(), String> {
    let in_unit = members
        .scan_async(Duration::from_secs(2))
        .await
        .unwrap_or_default()
        .iter()
        .any(|m| m.id == id);
    let adopted_orphan = members.cgroup().is_none()
        && zinit_process::proc_table::read_process(
            id.pid,
            zinit_process::Detail::Basic,
            &mut Vec::new(),
        )
        .is_some_and(|p| p.ppid == std::process::id() as i32);
    if in_unit || adopted_orphan {
        Ok(())
    } else {
        Err(format!(
            "pid {} is not a process of this unit; not following it",
            id.pid
        ))
    }
}

/// Watches an instance whose main process is not our child — taken over
/// from a previous server, or a daemon followed through its `pid_file` —
/// so its exit is seen through a pidfd and its status is unknown; then
/// every other process of it, as for any instance.
pub(crate) async fn watch_adopted(
    main: ProcessId,
    members: Members,
    tx: mpsc::UnboundedSender<Msg>,
    unit: String,
    instance: u64,
) {
    wait_exit(main).await;
    main_ended(None, members, tx, unit, instance).await;
}

/// Waits until every process of the instance is gone: with a cgroup, until
/// it is empty; without one, until every member found has exited and a new
/// look finds none left. Event-driven: a pidfd per member (or the cgroup's
/// `cgroup.events`), so a unit that waits costs nothing; only members that
/// could not get a pidfd are looked at again every ~2 s. `first` is a look
/// taken just before.
async fn wait_empty(
    members: Members,
    tx: mpsc::UnboundedSender<Msg>,
    unit: String,
    instance: u64,
    first: Vec<zinit_process::Member>,
) {
    if let Some(cgroup) = members.cgroup() {
        wait_cgroup_empty(cgroup).await;
        let _ = tx.send(Msg::Empty { unit, instance });
        return;
    }
    let mut watcher = None;
    let mut watched: HashSet<i32> = HashSet::new();
    let mut first = Some(first);
    loop {
        let left = match first.take() {
            Some(left) => left,
            None => members
                .scan_async(Duration::from_secs(2))
                .await
                .unwrap_or_default(),
        };
        if left.is_empty() {
            let _ = tx.send(Msg::Empty { unit, instance });
            return;
        }
        if watcher.is_none() {
            watcher = ExitWatcher::new().ok();
        }
        let Some(watcher) = watcher.as_mut() else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let mut blind = false;
        for member in &left {
            if watched.contains(&member.id.pid) {
                continue;
            }
            match ProcessHandle::open(member.id).map(|h| watcher.add(&h)) {
                Ok(Ok(true)) => {
                    watched.insert(member.id.pid);
                }
                // Gone already: the next look will say.
                Err(_) => {}
                _ => blind = true,
            }
        }
        // Until every watched member has exited (then look again: one may
        // have left children), or the tick for members without a pidfd.
        let tick = if blind {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(3600)
        };
        while !watched.is_empty() {
            let Ok(wake) = watcher.wait(tokio::time::Instant::now() + tick).await else {
                break;
            };
            for pid in &wake.exited {
                watched.remove(pid);
            }
            if wake.is_timeout() {
                break;
            }
        }
        if blind && watched.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until the cgroup has no live process: its `cgroup.events` says
/// `populated 0` (one descriptor, whatever the number of processes), or the
/// cgroup is gone. "Gone" is the cgroup whose events are watched being
/// removed, even if a new one (a later run of the unit) has taken its path.
async fn wait_cgroup_empty(cgroup: &zinit_process::Cgroup) {
    loop {
        match cgroup.populated() {
            Ok(false) => return,
            Ok(true) => {}
            Err(_) if !cgroup.path().exists() => return,
            Err(_) => {}
        }
        let armed = ExitWatcher::new().and_then(|mut watcher| {
            watcher.watch_cgroup(cgroup.open_events()?)?;
            Ok(watcher)
        });
        let Ok(mut watcher) = armed else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        // Look again now that a change would wake us, then wait for one.
        loop {
            match cgroup.populated() {
                Ok(true) => {}
                Ok(false) => return,
                Err(_) if !cgroup.path().exists() => return,
                Err(_) => break,
            }
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            match watcher.wait(far).await {
                Ok(wake) if wake.cgroup_gone => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
}

/// Runs the readiness test until it passes or `test_timeout` ends: the
/// last attempt is bounded by the deadline, and a test that has not passed
/// is reported at the deadline, not an interval before it.
pub(crate) async fn readiness(
    config: Arc<ServiceConfig>,
    test: Vec<String>,
    tx: mpsc::UnboundedSender<Msg>,
    unit: String,
    instance: u64,
) {
    let deadline = Instant::now() + config.test_timeout;
    let report = |result| {
        let _ = tx.send(Msg::Ready {
            unit: unit.clone(),
            instance,
            result,
        });
    };
    let mut last: Option<String> = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        // It always runs once (with `test_timeout: 0` too, bounded to 100 ms).
        let attempt_bound = match &last {
            None => remaining.max(FIRST_ATTEMPT),
            Some(_) if remaining < MIN_ATTEMPT => break,
            Some(_) => remaining,
        }
        .min(Duration::from_secs(10));
        last = Some(
            match run_bounded(&config, &test, attempt_bound, None).await {
                CommandResult::Exited(status) if status.success() => return report(Ok(())),
                CommandResult::Exited(status) => status.to_string(),
                CommandResult::TimedOut => "timed out".to_string(),
                CommandResult::Failed(e) => e,
            },
        );
        let remaining = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(config.test_interval.min(remaining)).await;
    }
    report(Err(format!(
        "its test did not pass within {} (last: {})",
        humantime::format_duration(config.test_timeout),
        last.unwrap_or_default()
    )))
}

/// Less than this before the deadline, a test is not tried again.
const MIN_ATTEMPT: Duration = Duration::from_millis(10);
/// The least the first attempt gets, whatever the timeout.
const FIRST_ATTEMPT: Duration = Duration::from_millis(100);
