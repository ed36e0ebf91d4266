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
            zinit_tests::reaped(&mut tree.child).await,
            ExitStatus::Signaled(9)
        );
        tree.kill().await;
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
async fn a_cgroup_keeps_naming_the_one_it_was_created_as_when_a_new_one_takes_its_path() {
    let tag = Tag::new("cgheld");
    let Some(root) = tag.cgroup_modes().into_iter().flatten().next() else {
        return; // no cgroups here: cgroup_modes has counted the skip
    };
    let first = root.create("reused").expect("cgroup");
    let never_read = root.create("unread").expect("cgroup");
    never_read.remove().expect("remove the empty cgroup");
    let tree = spawn_fixture(FIXTURE, &tag, &[], Some(first.clone())).await;
    assert_eq!(first.procs().expect("procs"), tree.pids());
    tree.kill().await;
    assert_eq!(first.procs().expect("procs"), Vec::<i32>::new());
    first.remove().expect("remove the empty cgroup");

    // The unit's next run, in a new cgroup at the same path; and the same
    // for a cgroup never read before it was removed.
    reads_as_empty_once_its_path_is_taken(&root, &tag, &first, "reused").await;
    reads_as_empty_once_its_path_is_taken(&root, &tag, &never_read, "unread").await;
}

/// Creates a cgroup at the path of `removed` (named `name`), runs a fixture
/// in it, and checks that `removed` lists none of its processes while the
/// new cgroup lists them all.
async fn reads_as_empty_once_its_path_is_taken(
    root: &zinit_process::CgroupRoot,
    tag: &Tag,
    removed: &Cgroup,
    name: &str,
) {
    let taken = root.create(name).expect("cgroup at the removed path");
    let tree = spawn_fixture(FIXTURE, tag, &[], Some(taken.clone())).await;
    assert_eq!(
        removed.procs().expect("a removed cgroup reads"),
        Vec::<i32>::new(),
        "the removed cgroup {name} listed the processes of the one that took its path"
    );
    assert_eq!(taken.procs().expect("procs"), tree.pids());
    tree.kill().await;
    taken.remove().expect("remove");
}

#[tokio::test]
async fn the_kernels_children_lists_give_a_trees_descendants_as_the_whole_table_does() {
    let tag = Tag::new("children");
    let tree = spawn_fixture(FIXTURE, &tag, &["--width", "3", "--depth", "3"], None).await;
    let root = tree.child.pid();
    let Some(mut listed) = zinit_process::proc_table::descendant_pids(root) else {
        tree.kill().await;
        return; // a kernel without CONFIG_PROC_CHILDREN: the sweep reads the table
    };
    listed.sort_unstable();
    let table = ProcessTable::snapshot(Detail::Basic).expect("table");
    let mut expected: Vec<i32> = table
        .descendants(root)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    expected.sort_unstable();
    let mut reported = tree.pids();
    reported.retain(|&p| p != root);
    reported.sort_unstable();
    assert_eq!(listed, expected, "children lists against the table");
    assert_eq!(
        listed, reported,
        "children lists against the fixture's own report"
    );
    // Ancestors are read up to PID 1 without the rest of /proc.
    let one = *listed.last().expect("a descendant");
    let partial = ProcessTable::of_pids_and_ancestors([one], Detail::Basic);
    assert_eq!(partial.ancestors(one), table.ancestors(one));
    tree.kill().await;
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
    assert_eq!(zinit_tests::reaped(&mut child).await, ExitStatus::Exited(3));
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
    assert!(zinit_tests::reaped(&mut child).await.success());
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

#[tokio::test]
async fn a_program_we_did_not_write_starts_clean_whatever_its_parent_holds() {
    use nix::sys::signal::SigSet;
    let tag = Tag::new("clean");
    let sleep = tag.program("sleep");
    let marker = tag.dir().join("leaked-fd");
    // A thread of its own: the mask is per thread, and this one blocks the
    // signals a supervisor typically keeps for itself. It also holds a
    // descriptor without close-on-exec. (Rust itself ignores SIGPIPE.)
    let (child, _leaked) = std::thread::spawn(move || {
        let mut set = SigSet::empty();
        for sig in [Signal::SIGTERM, Signal::SIGHUP, Signal::SIGINT] {
            set.add(sig);
        }
        set.thread_block().expect("block");
        let file = std::fs::File::create(&marker).expect("marker");
        let leaked = nix::unistd::dup(&file).expect("dup without close-on-exec");
        let child = Command::new(&sleep)
            .arg("1000")
            .spawn()
            .expect("spawn sleep");
        (child, leaked)
    })
    .join()
    .expect("thread");
    let mut child = child;
    zinit_tests::Inherited::of(child.pid()).assert_clean("sleep under zinit-process");
    // With the default disposition and nothing blocked, SIGTERM ends it at once.
    child.signal(Signal::SIGTERM).expect("signal");
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("SIGTERM ends sleep")
        .expect("wait");
    assert_eq!(status, ExitStatus::Signaled(libc::SIGTERM));
}

#[tokio::test]
async fn a_failed_spawn_says_which_step_failed() {
    use std::os::unix::fs::PermissionsExt;
    let tag = Tag::new("steps");
    let error = |command: Command| command.spawn().expect_err("spawn fails").to_string();

    let missing = error(Command::new(format!(
        "zinit-no-such-program-{}",
        tag.as_str()
    )));
    assert!(missing.contains("not found in PATH"), "{missing}");

    let absent = error(Command::new("/nonexistent/zinit-test-program"));
    assert!(
        absent.starts_with("executing /nonexistent/zinit-test-program: No such file"),
        "{absent}"
    );

    let plain = tag.dir().join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\nexit 0\n").expect("write");
    let denied = error(Command::new(&plain));
    assert!(denied.contains("Permission denied"), "{denied}");

    // Not a script and not a binary: its own error, never handed to /bin/sh.
    let garbage = tag.dir().join("garbage");
    std::fs::write(&garbage, b"\x01\x02 not a program\n").expect("write");
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let format = error(Command::new(&garbage));
    assert!(format.contains("Exec format error"), "{format}");

    let nodir = error(Command::new("/bin/true").current_dir(tag.dir().join("nowhere")));
    assert!(
        nodir.contains("working directory") && nodir.contains("nowhere"),
        "{nodir}"
    );

    // Entering the directory happens as the service user.
    if !nix::unistd::geteuid().is_root() {
        zinit_tests::skip("changing to the working directory as another user needs root");
    } else {
        let private = tag.dir().join("private");
        std::fs::create_dir(&private).expect("mkdir");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let as_nobody = error(
            Command::new("/bin/true")
                .user(65534, 65534, Vec::new())
                .current_dir(&private),
        );
        assert!(
            as_nobody.contains("changing to the working directory")
                && as_nobody.contains("as uid 65534")
                && as_nobody.contains("Permission denied"),
            "{as_nobody}"
        );
    }
}
