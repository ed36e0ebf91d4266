//! Event-driven waiting: an exit is reported once, and a quiet wait sleeps
//! until its deadline instead of spinning.

use std::time::Duration;
use tokio::time::Instant;
use zinit_process::watch::ExitWatcher;
use zinit_process::{Command, Signal};
use zinit_tests::Tag;

/// What this whole process (every thread, including helper threads and
/// threads that already ended) has used so far: CPU time, and how often
/// its threads went to sleep and woke (context switches).
fn usage() -> (Duration, i64) {
    // SAFETY: an all-zero rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer for RUSAGE_SELF.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (
        tv(usage.ru_utime) + tv(usage.ru_stime),
        usage.ru_nvcsw + usage.ru_nivcsw,
    )
}

/// The tests of this file run one at a time: a quiet wait counts the
/// wake-ups of the whole process, the other test's included.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits `quiet` with `watcher` expecting nothing, and asserts the wait
/// neither burned CPU nor woke up more than a handful of times: a poller at
/// 100 ms would wake 20 times in 2 s, one at 10 ms 200 times.
async fn assert_quiet_wait(watcher: &mut ExitWatcher, quiet: Duration) {
    let started = Instant::now();
    let (cpu, switches) = usage();
    let wake = watcher.wait(started + quiet).await.expect("wait");
    let (cpu_after, switches_after) = usage();
    assert!(wake.is_timeout(), "nothing should be reported: {wake:?}");
    assert!(started.elapsed() >= quiet);
    let wakeups = switches_after - switches;
    assert!(
        wakeups <= 6,
        "the process woke {wakeups} times in a {quiet:?} wait: it polls"
    );
    assert!(
        cpu_after - cpu < Duration::from_millis(10),
        "waiting burned {:?} of CPU",
        cpu_after - cpu
    );
}

#[tokio::test]
async fn an_exit_is_reported_once_and_a_quiet_wait_does_not_spin() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let tag = Tag::new("watch");
    let mut child = Command::new("/bin/sh")
        .args(["-c", "while :; do :; done", tag.as_str()])
        .spawn()
        .expect("spawn");
    let mut watcher = ExitWatcher::new().expect("watcher");
    assert!(watcher.add(child.handle()).expect("add"));

    assert_quiet_wait(&mut watcher, Duration::from_secs(2)).await;

    child.signal(Signal::SIGKILL).expect("kill");
    let wake = watcher
        .wait(Instant::now() + Duration::from_secs(5))
        .await
        .expect("wait");
    assert_eq!(wake.exited, vec![child.pid()]);
    assert!(watcher.is_empty());

    // The exited pidfd is still open in the child's handle, but the watcher
    // no longer reports it: the next wait sleeps until its deadline.
    assert_quiet_wait(&mut watcher, Duration::from_secs(2)).await;
    zinit_tests::reaped(&mut child).await;
}

#[tokio::test]
async fn a_removed_cgroup_wakes_the_wait_once_and_is_no_longer_watched() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let tag = Tag::new("watchcg");
    let Some(root) = tag.cgroup_modes().into_iter().flatten().next() else {
        return; // no cgroups here: cgroup_modes has counted the skip
    };
    let cgroup = root.create("gone").expect("create a cgroup");
    let mut watcher = ExitWatcher::new().expect("watcher");
    watcher
        .watch_cgroup(cgroup.open_events().expect("cgroup.events"))
        .expect("watch");
    cgroup.remove().expect("remove the empty cgroup");
    let wake = watcher
        .wait(Instant::now() + Duration::from_secs(5))
        .await
        .expect("wait");
    assert!(wake.cgroup_gone, "the removal was not reported: {wake:?}");
    assert!(!watcher.watches_cgroup());
    // A new cgroup at the same path is another cgroup: the watcher does not
    // report it, and its wait no longer spins on the removed one's events.
    let again = root.create("gone").expect("create it again");
    assert_quiet_wait(&mut watcher, Duration::from_secs(2)).await;
    again.remove().expect("remove");
}
