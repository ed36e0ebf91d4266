//! The actor's background tasks: watching a spawned instance (its main
//! process's exit, then every other process of it) and running its
//! readiness test. Each reports back to the actor with the instance it was
//! started for.

use crate::actor::messages::Msg;
use crate::command::{CommandResult, run_bounded};
use crate::config::ServiceConfig;
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
    let _ = tx.send(Msg::MainExited {
        unit: unit.clone(),
        instance,
        status: Some(status),
    });
    wait_empty(members, tx, unit, instance).await;
}

/// Watches an instance taken over from a previous server: its main process
/// is not our child, so its exit is seen through a pidfd and its status is
/// unknown; then every other process of it, as for any instance.
pub(crate) async fn watch_adopted(
    main: ProcessId,
    members: Members,
    tx: mpsc::UnboundedSender<Msg>,
    unit: String,
    instance: u64,
) {
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
    let _ = tx.send(Msg::MainExited {
        unit: unit.clone(),
        instance,
        status: None,
    });
    wait_empty(members, tx, unit, instance).await;
}

/// Waits until every process of the instance is gone.
async fn wait_empty(members: Members, tx: mpsc::UnboundedSender<Msg>, unit: String, instance: u64) {
    loop {
        let left = members
            .scan_async(Duration::from_secs(2))
            .await
            .unwrap_or_default();
        if left.is_empty() {
            let _ = tx.send(Msg::Empty { unit, instance });
            return;
        }
        let Ok(mut watcher) = ExitWatcher::new() else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        for member in &left {
            if let Ok(handle) = ProcessHandle::open(member.id) {
                let _ = watcher.add(&handle);
            }
        }
        if let Some(events) = members.cgroup().and_then(|c| c.open_events().ok()) {
            let _ = watcher.watch_cgroup(events);
        }
        // An exit (or the ~2 s tick, to catch processes that appeared) ends the wait.
        let _ = watcher
            .wait(tokio::time::Instant::now() + Duration::from_secs(2))
            .await;
    }
}

/// Runs the readiness test until it passes or `test_timeout` ends.
pub(crate) async fn readiness(
    config: Arc<ServiceConfig>,
    test: Vec<String>,
    tx: mpsc::UnboundedSender<Msg>,
    unit: String,
    instance: u64,
) {
    let deadline = Instant::now() + config.test_timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt_bound = remaining
            .min(Duration::from_secs(10))
            .max(Duration::from_millis(100));
        let last = match run_bounded(&config, &test, attempt_bound, None).await {
            CommandResult::Exited(status) if status.success() => {
                let _ = tx.send(Msg::Ready {
                    unit,
                    instance,
                    result: Ok(()),
                });
                return;
            }
            CommandResult::Exited(status) => status.to_string(),
            CommandResult::TimedOut => "timed out".to_string(),
            CommandResult::Failed(e) => e,
        };
        if Instant::now() + config.test_interval >= deadline {
            let result = Err(format!(
                "its test did not pass within {} (last: {last})",
                humantime::format_duration(config.test_timeout)
            ));
            let _ = tx.send(Msg::Ready {
                unit,
                instance,
                result,
            });
            return;
        }
        tokio::time::sleep(config.test_interval).await;
    }
}
