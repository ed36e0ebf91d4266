//! Spawning: own session, own cgroup joined before exec, environment,
//! working directory, dropped privileges, exit statuses.

use std::io::Read;
use std::time::Duration;
use zinit_process::spawn::{ExitStatus, Output};
use zinit_process::{Cgroup, Command, Detail, ProcessTable, Signal};
use zinit_tests::{Tag, host_allows_cgroups, spawn_fixture};

const FIXTURE: &str = env!("CARGO_BIN_EXE_zinit-fixture");

fn read_all(fd: std::os::fd::OwnedFd) -> String {
    let mut text = String::new();
    std::fs::File::from(fd)
        .read_to_string(&mut text)
        .expect("read pipe");
    text
}

#[tokio::test]
async fn a_child_leads_its_own_session_and_lives_in_its_own_cgroup_from_the_start() {
    let tag = Tag::new("session");
    for root in tag.cgroup_modes() {
        let cgroup = root.as_ref().map(|r| r.create("unit").expect("cgroup"));
        let mut tree = spawn_fixture(
            FIXTURE,
            &tag,
            &["--width", "2", "--depth", "2"],
            cgroup.clone(),
        )
        .await;
        let table = ProcessTable::snapshot(Detail::Basic).expect("table");
        let pid = tree.child.pid();
        let info = table.get(pid).expect("child listed");
        assert_eq!((info.pgid, info.sid), (pid, pid), "own session and group");
        if let Some(cgroup) = &cgroup {
            let mut procs = cgroup.procs().expect("procs");
            procs.sort_unstable();
            let mut pids = tree.pids();
            pids.sort_unstable();
            assert_eq!(procs, pids, "the whole tree is in the unit's cgroup");
            assert!(cgroup.populated().expect("events"));
            let path = Cgroup::of_process(pid).expect("cgroup of child");
            assert!(
                cgroup.path().ends_with(path.trim_start_matches('/')),
                "{path}"
            );
        }
        tree.child.signal(Signal::SIGKILL).expect("kill");
        assert_eq!(
            tree.child.wait().await.expect("wait"),
            ExitStatus::Signaled(9)
        );
    }
    if host_allows_cgroups() {
        assert_eq!(
            tag.cgroup_modes().len(),
            2,
            "cgroup mode is active on this host"
        );
    }
}

#[tokio::test]
async fn a_child_gets_its_environment_directory_and_exit_code() {
    let tag = Tag::new("env");
    let mut child = Command::new("/bin/sh")
        .args([
            "-c",
            "printf '%s|%s|%s' \"$ZT_VALUE\" \"$PWD\" \"${HOME-unset}\"; exit 3",
            tag.as_str(),
        ])
        .env_clear()
        .env("ZT_VALUE", "hello world")
        .current_dir(tag.dir())
        .stdout(Output::Piped)
        .spawn()
        .expect("spawn");
    let out = read_all(child.take_stdout().expect("stdout"));
    assert_eq!(out, format!("hello world|{}|unset", tag.dir().display()));
    assert_eq!(child.wait().await.expect("wait"), ExitStatus::Exited(3));
}

#[tokio::test]
async fn a_child_runs_as_nobody_with_no_supplementary_groups() {
    let tag = Tag::new("nobody");
    let mut child = Command::new("/bin/sh")
        // Shell builtins only: no untagged helper process.
        .args([
            "-c",
            "while read -r key a b; do case $key in Uid:|Gid:) echo \"$a\";; Groups:) echo \"[$a]\";; esac; done < /proc/self/status",
            tag.as_str(),
        ])
        .user(65534, 65534, Vec::new())
        .current_dir("/")
        .stdout(Output::Piped)
        .spawn()
        .expect("spawn");
    let out = read_all(child.take_stdout().expect("stdout"));
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["65534", "65534", "[]"]
    );
    assert!(child.wait().await.expect("wait").success());
}

#[tokio::test]
async fn an_ignored_signal_in_the_parent_is_not_inherited() {
    let tag = Tag::new("sigign");
    // SAFETY: ignoring SIGUSR1 in this test process only affects SIGUSR1.
    unsafe { libc::signal(libc::SIGUSR1, libc::SIG_IGN) };
    let mut child = Command::new("/bin/sh")
        // A builtin-only busy loop: no untagged helper process.
        .args(["-c", "while :; do :; done", tag.as_str()])
        .spawn()
        .expect("spawn");
    // SAFETY: restoring the default.
    unsafe { libc::signal(libc::SIGUSR1, libc::SIG_DFL) };
    child.signal(Signal::SIGUSR1).expect("signal");
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("SIGUSR1 ends the child")
        .expect("wait");
    assert_eq!(status, ExitStatus::Signaled(libc::SIGUSR1));
}

#[tokio::test]
async fn a_missing_program_is_an_error_not_a_child() {
    let err = Command::new("/nonexistent/zinit-test-program")
        .spawn()
        .expect_err("spawn fails");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}
