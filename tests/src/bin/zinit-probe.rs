//! Scenarios that need a process of their own: the child subreaper (a
//! process-wide flag) and PID reuse (a private PID namespace, where this
//! probe is PID 1 and may set `ns_last_pid`).
//!
//! `zinit-probe reaper --tag T --fixture PATH`
//! `unshare --pid --fork --mount-proc zinit-probe pid-reuse --tag T --fixture PATH`
//!
//! Prints `ok SCENARIO` and exits 0 when every check holds; panics (exit
//! 101) with the failed check otherwise.

use std::time::{Duration, Instant};
use zinit_process::reaper::{Reaper, adopted, is_child_subreaper};
use zinit_process::spawn::ExitStatus;
use zinit_process::{Command, Detail, ProcessHandle, ProcessTable, Signal};
use zinit_tests::{Tag, spawn_fixture};

fn arg(name: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    let pos = args
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("missing {name}"));
    args[pos + 1].clone()
}

/// Polls `check` (test-side verification only) without blocking the runtime,
/// so the reaper task keeps running.
async fn until(bound: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + bound;
    while Instant::now() < end {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

fn state_of(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

async fn reaper(tag: &Tag, fixture: &str) {
    let reaper = Reaper::start().expect("start reaper");
    assert!(is_child_subreaper(), "the subreaper flag is set");
    let me = std::process::id() as i32;

    // Double-forked daemons are re-parented to us, not to PID 1.
    let mut tree = spawn_fixture(fixture, tag, &["--double-fork", "3"], None).await;
    let mut daemons = tree.pids_with_role("daemon");
    daemons.sort_unstable();
    assert_eq!(daemons.len(), 3);
    assert!(
        until(Duration::from_secs(2), || {
            let table = ProcessTable::snapshot(Detail::Basic).expect("table");
            daemons
                .iter()
                .all(|d| table.get(*d).is_some_and(|p| p.ppid == me))
        })
        .await,
        "daemons {daemons:?} were adopted by the subreaper"
    );
    let table = ProcessTable::snapshot(Detail::Basic).expect("table");
    let mut found = adopted(&table);
    found.sort_unstable();
    assert_eq!(found, daemons, "adopted() lists exactly the daemons");

    // The reaper does not steal the status of a child we wait for.
    tree.child.signal(Signal::SIGTERM).expect("signal root");
    let status = tokio::time::timeout(Duration::from_secs(5), tree.child.wait())
        .await
        .expect("root exits")
        .expect("wait");
    assert_eq!(status, ExitStatus::Exited(0));

    // Adopted orphans are reaped: gone from /proc, not zombies.
    for daemon in &daemons {
        let id = zinit_process::ProcessId::of(*daemon).expect("daemon alive");
        ProcessHandle::open(id)
            .expect("handle")
            .signal(Signal::SIGKILL)
            .expect("kill daemon");
    }
    assert!(
        until(Duration::from_secs(5), || daemons
            .iter()
            .all(|d| state_of(*d).is_none()))
        .await,
        "daemons reaped, states now {:?}",
        daemons.iter().map(|d| state_of(*d)).collect::<Vec<_>>()
    );
    assert!(
        reaper.orphans_reaped() >= 3,
        "reaped {}",
        reaper.orphans_reaped()
    );

    // Many children exiting at once while the reaper runs: every status
    // reaches its own waiter.
    let mut children = Vec::new();
    for code in 0..40 {
        let child = Command::new("/bin/sh")
            .args(["-c", &format!("exit {code}"), tag.as_str()])
            .spawn()
            .expect("spawn sh");
        children.push((code, child));
    }
    for (code, mut child) in children {
        let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .expect("exits")
            .expect("wait");
        assert_eq!(status, ExitStatus::Exited(code));
    }
}

async fn pid_reuse(tag: &Tag, fixture: &str) {
    assert_eq!(
        std::process::id(),
        1,
        "runs as PID 1 of a private PID namespace"
    );
    let victim = spawn_fixture(fixture, tag, &[], None).await;
    let old = victim.child.id();
    let by_pidfd = ProcessHandle::open(old).expect("pidfd handle");
    let by_start_time = ProcessHandle::by_start_time(old);
    let mut victim_child = victim.child;
    // Start times count clock ticks (10 ms): a real reuse needs the pid space
    // to wrap, which takes far longer than a tick; here we force it, so let a
    // few ticks pass first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    victim_child.signal(Signal::SIGKILL).expect("kill victim");
    victim_child.wait().await.expect("reap victim");

    // Make the next pid the old one, and start a newcomer on it.
    let mut newcomer = None;
    for _ in 0..20 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (old.pid - 1).to_string())
            .expect("set ns_last_pid");
        let tree = spawn_fixture(fixture, tag, &[], None).await;
        if tree.child.pid() == old.pid {
            newcomer = Some(tree);
            break;
        }
        let mut other = tree.child;
        other.signal(Signal::SIGKILL).expect("kill");
        other.wait().await.expect("reap");
    }
    let mut newcomer = newcomer.expect("the pid was reused");
    assert_ne!(newcomer.child.id().start_time, old.start_time);

    for (name, handle) in [("pidfd", &by_pidfd), ("start time", &by_start_time)] {
        let err = handle
            .signal(Signal::SIGTERM)
            .expect_err("a stale handle must not signal");
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH), "{name}");
        assert!(!handle.is_alive(), "{name} handle reports its process gone");
    }
    let err = ProcessHandle::open(old).expect_err("opening a stale identity fails");
    assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = zinit_tests::read_log(&newcomer.log);
    assert!(
        log.iter().all(|l| l.kind != "signal"),
        "the newcomer received no signal: {log:?}"
    );
    assert!(newcomer.child.handle().is_alive());
    newcomer
        .child
        .signal(Signal::SIGKILL)
        .expect("kill newcomer");
    newcomer.child.wait().await.expect("reap newcomer");
}

fn main() {
    let scenario = std::env::args().nth(1).expect("scenario");
    let tag_text = arg("--tag");
    let fixture = arg("--fixture");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tag = Tag::adopt(&tag_text);
    runtime.block_on(async {
        match scenario.as_str() {
            "reaper" => reaper(&tag, &fixture).await,
            "pid-reuse" => pid_reuse(&tag, &fixture).await,
            other => panic!("unknown scenario {other}"),
        }
    });
    drop(tag);
    println!("ok {scenario}");
}
