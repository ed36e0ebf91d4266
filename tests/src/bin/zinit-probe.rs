//! Scenarios that need a process of their own: the child subreaper (a
//! process-wide flag) and PID reuse (a private PID namespace, where this
//! probe is PID 1 and may set `ns_last_pid`).
//!
//! `zinit-probe reaper --tag T --fixture PATH`
//! `unshare --pid --fork --mount-proc zinit-probe pid-reuse --tag T --fixture PATH`
//! `unshare --pid --net --fork --mount-proc zinit-probe ns-init --tag T --report FILE [--spawn CMD]... [--linger TEXT]... [--restart-when FILE [--impostor CMD]] -- SERVER ARGS`
//!
//! ns-init starts each `--spawn` command (an extra process outside any unit)
//! before the server; a scenario that needs an extra to be ready waits for
//! it (the fixture's log). After the server has exited, a process whose
//! command line contains a `--linger` TEXT gets up to 5 s to end by itself
//! before anything still there is reported as a survivor (a client inside
//! the namespace waits for the server to be gone before it exits).
//!
//! With `--restart-when FILE`, ns-init starts the server again each time it
//! was killed by a signal and FILE appears (it removes FILE first); if the file holds a
//! pid and `--impostor CMD` is given, it first makes CMD's process get that
//! pid (through `ns_last_pid`), to prove that a recorded pid whose start
//! time no longer matches is never touched.
//! `zinit-probe orphan-flood --tag T --millis MS`: for MS milliseconds, forks
//! children that each fork grandchildren and exit at once, so every
//! grandchild is an orphan for the init (or subreaper) above this probe to
//! reap; prints `orphans=N millis=MS` (zinit_pid1's tests run it inside
//! zinit_pid1's namespace with `nsenter`).
//!
//! Prints `ok SCENARIO` and exits 0 when every check holds; panics (exit
//! 101) with the failed check otherwise.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use zinit_process::reaper::{Reaper, is_child_subreaper};
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
    let mut found: Vec<i32> = table
        .children(me)
        .iter()
        .copied()
        .filter(|&pid| pid != tree.child.pid())
        .collect();
    found.sort_unstable();
    assert_eq!(found, daemons, "our children are the root and the daemons");

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

/// Brings the loopback interface up in a fresh network namespace.
fn loopback_up() {
    // SAFETY: a plain socket used only for the interface ioctls below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    assert!(fd >= 0, "socket for ioctl");
    // SAFETY: an all-zero ifreq is valid; the name fits.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: valid fd and ifreq for SIOCGIFFLAGS / SIOCSIFFLAGS.
    unsafe {
        libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        libc::close(fd);
    }
}

/// Every process of this PID namespace but us: (pid, state, cmdline).
fn namespace_processes() -> Vec<(i32, char, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == 1 {
            continue;
        }
        let state = state_of(pid).unwrap_or('?');
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| {
                String::from_utf8_lossy(&raw)
                    .replace('\0', " ")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        out.push((pid, state, cmdline));
    }
    out
}

/// PID 1 of a scenario's namespace: starts the extra processes and the
/// server, reaps everything, and when the server has exited, reports every
/// process still in the namespace (a survivor) before it ends them all.
fn ns_init() -> i32 {
    assert_eq!(
        std::process::id(),
        1,
        "ns-init runs as PID 1 of a private PID namespace"
    );
    let args: Vec<String> = std::env::args().collect();
    let report = PathBuf::from(arg("--report"));
    let split = args.iter().position(|a| a == "--").expect("-- SERVER ARGS");
    let server_argv = &args[split + 1..];
    let spawns: Vec<&String> = args[..split]
        .windows(2)
        .filter(|w| w[0] == "--spawn")
        .map(|w| &w[1])
        .collect();
    loopback_up();
    let mut lines = Vec::new();
    for spawn in spawns {
        let words = shlex::split(spawn).expect("a --spawn command");
        let child = std::process::Command::new(&words[0])
            .args(&words[1..])
            .spawn()
            .expect("spawn extra");
        lines.push(format!("extra pid={}", child.id()));
        std::mem::forget(child);
    }
    let restart_when = args[..split]
        .windows(2)
        .find(|w| w[0] == "--restart-when")
        .map(|w| PathBuf::from(&w[1]));
    let impostor_cmd = args[..split]
        .windows(2)
        .find(|w| w[0] == "--impostor")
        .map(|w| w[1].clone());
    let mut impostors: Vec<i32> = Vec::new();
    loop {
        let server = std::process::Command::new(&server_argv[0])
            .args(&server_argv[1..])
            .spawn()
            .expect("spawn zinit_server");
        let server_pid = server.id() as i32;
        std::mem::forget(server);
        lines.push(format!("server pid={server_pid}"));
        let code = wait_for(server_pid, Duration::from_secs(90));
        let t = zinit_tests_now_ns();
        match code {
            Some(code) => lines.push(format!("server_exit code={code} t={t}")),
            None => {
                lines.push(format!("server_timeout t={t}"));
                break;
            }
        }
        // Only a server that was killed, or whose supervisor died (5), is
        // started again.
        let died = code.is_some_and(|c| c > 128 || c == 5);
        let Some(signal) = restart_when.as_ref().filter(|_| died) else {
            break;
        };
        // Wait (bounded) for the test to ask for a restart.
        let end = Instant::now() + Duration::from_secs(60);
        while !signal.exists() && Instant::now() < end {
            reap_all();
            std::thread::sleep(Duration::from_millis(5));
        }
        let Ok(text) = std::fs::read_to_string(signal) else {
            break;
        };
        let _ = std::fs::remove_file(signal);
        if let (Ok(pid), Some(cmd)) = (text.trim().parse::<i32>(), &impostor_cmd) {
            impostors.push(spawn_with_pid(pid, cmd));
            lines.push(format!("impostor pid={pid}"));
        }
    }
    // Zombies of the server's children are re-parented to us: reap them first.
    reap_all();
    // A process that may outlive the server by a moment (the client that
    // asked, which the sweep spares and which waits for the server to be
    // gone) gets a bounded time to end by itself; if it does not, it is
    // listed as a survivor below.
    let lingering: Vec<&String> = args[..split]
        .windows(2)
        .filter(|w| w[0] == "--linger")
        .map(|w| &w[1])
        .collect();
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let waiting: Vec<i32> = namespace_processes()
            .into_iter()
            .filter(|(_, state, cmd)| *state != 'Z' && lingering.iter().any(|l| cmd.contains(*l)))
            .map(|(pid, _, _)| pid)
            .collect();
        if waiting.is_empty() || Instant::now() > end {
            lines.extend(waiting.iter().map(|pid| format!("lingered pid={pid}")));
            break;
        }
        reap_all();
        std::thread::sleep(Duration::from_millis(5));
    }
    for (pid, state, cmdline) in namespace_processes() {
        if impostors.contains(&pid) {
            lines.push(format!("impostor_alive pid={pid} state={state}"));
        } else if state != 'Z' {
            lines.push(format!("survivor pid={pid} state={state} cmd={cmdline}"));
        }
    }
    std::fs::write(&report, lines.join("\n") + "\n").expect("write report");
    // End everything (the namespace dies with us anyway) and reap.
    for (pid, _, _) in namespace_processes() {
        // SAFETY: plain kill inside our own namespace.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    let stop = Instant::now() + Duration::from_secs(5);
    while Instant::now() < stop && !namespace_processes().is_empty() {
        let mut status = 0;
        // SAFETY: as above.
        unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        std::thread::sleep(Duration::from_millis(5));
    }
    0
}

/// Waits (bounded) for `pid`, our child, to exit, reaping every other
/// child meanwhile; its exit code (128+N for a signal).
fn wait_for(pid: i32, bound: Duration) -> Option<i32> {
    let end = Instant::now() + bound;
    while Instant::now() < end {
        let mut status = 0;
        // SAFETY: plain waitpid on any child, with a valid out-pointer.
        let reaped = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if reaped == pid {
            return Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            });
        } else if reaped <= 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    None
}

/// Reaps every exited child.
fn reap_all() {
    loop {
        let mut status = 0;
        // SAFETY: as above.
        if unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } <= 0 {
            return;
        }
    }
}

/// Starts `cmd` so that its process gets `pid` (which must be free), by
/// setting this PID namespace's `ns_last_pid` just below it.
fn spawn_with_pid(pid: i32, cmd: &str) -> i32 {
    let words = shlex::split(cmd).expect("an impostor command");
    // The pid's old owner may still be a zombie of ours: reap it first.
    let end = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < end {
        reap_all();
        std::thread::sleep(Duration::from_millis(5));
    }
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("write ns_last_pid");
        let child = std::process::Command::new(&words[0])
            .args(&words[1..])
            .spawn()
            .expect("spawn the impostor");
        let got = child.id() as i32;
        std::mem::forget(child);
        if got == pid {
            return got;
        }
        // SAFETY: our own child, which took another pid.
        unsafe { libc::kill(got, libc::SIGKILL) };
    }
    panic!("could not give pid {pid} to the impostor");
}

/// The orphan flood: see the module documentation. Two workers (one per
/// core of a small machine) each fork children that fork four grandchildren
/// and exit at once, so the grandchildren are orphans.
fn orphan_flood() -> i32 {
    use nix::sys::wait::waitpid;
    use nix::unistd::{ForkResult, fork};
    const WORKERS: usize = 2;
    const PER_CHILD: u64 = 4;
    let millis: u64 = arg("--millis").parse().expect("--millis MS");
    let start = Instant::now();
    let end = start + Duration::from_millis(millis);
    let (read, write) = nix::unistd::pipe().expect("pipe");
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        // SAFETY: this mode is single-threaded (no runtime is started); the
        // worker only forks, waits and writes to a pipe, then exits.
        match unsafe { fork() }.expect("fork a worker") {
            ForkResult::Child => {
                let mut orphans = 0u64;
                while Instant::now() < end {
                    // SAFETY: as above; the child only forks and exits.
                    match unsafe { fork() } {
                        Ok(ForkResult::Child) => {
                            for _ in 0..PER_CHILD {
                                // SAFETY: as above; the grandchild exits at once.
                                if let Ok(ForkResult::Child) = unsafe { fork() } {
                                    // SAFETY: _exit ends the grandchild at once.
                                    unsafe { libc::_exit(0) }
                                }
                            }
                            // SAFETY: _exit ends the child at once, leaving
                            // its children to the init (or subreaper) above.
                            unsafe { libc::_exit(0) }
                        }
                        Ok(ForkResult::Parent { child }) => {
                            let _ = waitpid(child, None);
                            orphans += PER_CHILD;
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
                let _ = nix::unistd::write(&write, &orphans.to_ne_bytes());
                // SAFETY: _exit ends the worker without running the parent's
                // exit handlers.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => workers.push(child),
        }
    }
    drop(write);
    for worker in workers {
        let _ = waitpid(worker, None);
    }
    let mut orphans = 0u64;
    let mut buf = [0u8; 8];
    while let Ok(8) = nix::unistd::read(&read, &mut buf) {
        orphans += u64::from_ne_bytes(buf);
    }
    println!("orphans={orphans} millis={}", start.elapsed().as_millis());
    0
}

fn zinit_tests_now_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

fn main() {
    let scenario = std::env::args().nth(1).expect("scenario");
    if scenario == "ns-init" {
        std::process::exit(ns_init());
    }
    if scenario == "orphan-flood" {
        std::process::exit(orphan_flood());
    }
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
