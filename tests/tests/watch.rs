//! Event-driven waiting: an exit is reported once, and a quiet wait sleeps
//! until its deadline instead of spinning.

use std::time::Duration;
use tokio::time::Instant;
use zinit_process::watch::ExitWatcher;
use zinit_process::{Command, Signal};
use zinit_tests::Tag;

fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer for RUSAGE_THREAD (this test's thread).
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[tokio::test]
async fn an_exit_is_reported_once_and_a_quiet_wait_does_not_spin() {
    let tag = Tag::new("watch");
    let mut child = Command::new("/bin/sh")
        .args(["-c", "while :; do :; done", tag.as_str()])
        .spawn()
        .expect("spawn");
    let mut watcher = ExitWatcher::new().expect("watcher");
    assert!(watcher.add(child.handle()).expect("add"));

    let quiet = Instant::now();
    let cpu = cpu_time();
    let wake = watcher
        .wait(Instant::now() + Duration::from_millis(300))
        .await
        .expect("wait");
    assert!(wake.is_timeout(), "nothing exited yet: {wake:?}");
    assert!(quiet.elapsed() >= Duration::from_millis(300));
    assert!(
        cpu_time() - cpu < Duration::from_millis(50),
        "waiting burned CPU"
    );

    child.signal(Signal::SIGKILL).expect("kill");
    let wake = watcher
        .wait(Instant::now() + Duration::from_secs(5))
        .await
        .expect("wait");
    assert_eq!(wake.exited, vec![child.pid()]);
    assert!(watcher.is_empty());

    // The exited pidfd is still open in the child's handle, but the watcher
    // no longer reports it: the next wait sleeps until its deadline.
    let cpu = cpu_time();
    let wake = watcher
        .wait(Instant::now() + Duration::from_millis(200))
        .await
        .expect("wait");
    assert!(wake.is_timeout(), "reported again: {wake:?}");
    assert!(
        cpu_time() - cpu < Duration::from_millis(50),
        "waiting burned CPU"
    );
    child.wait().await.expect("reap");
}
