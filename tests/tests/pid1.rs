//! `zinit_pid1` as PID 1 of a private PID namespace with a fresh /proc
//! (`unshare --pid --fork --mount-proc`), which is what a container gives its
//! PID 1: it reaps orphans of the whole namespace, survives an orphan flood,
//! turns SIGTERM and SIGINT into the server's graceful shutdown within the
//! bound, sweeps, and exits with the code that says how it went; a killed
//! server is restarted; the machine path (`--machine`) ends the namespace
//! through reboot(2) with the status a machine's power-off or reboot maps to.
//!
//! Every process carries the test's tag (in its argv or through its paths),
//! the namespace ends with zinit_pid1 (so nothing in it outlives the test:
//! `unshare --kill-child` kills zinit_pid1 if the test drops it early), and
//! the tag's guard reaps what is left, pass or fail. Orphans that only
//! zinit_pid1 can reap are made by processes entered into its namespace
//! with `nsenter` (as `docker exec` does). Tests run one at a time: they
//! measure time and a flood of forks on a small machine.
//!
//! Each namespace runs in a cgroup of its own, as a container runtime gives
//! each container: a server names its cgroup directory after its pid
//! (`zinit.2` under zinit_pid1, in every namespace) below its own cgroup, so
//! two namespaced servers in one cgroup (another test run at the same time)
//! would share unit cgroups, and one's `cgroup.kill` would kill the other's
//! units. Unit names also carry a per-test suffix, as a second guard.

use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use zinit_process::{Detail, ProcessHandle, ProcessId, ProcessTable, Signal};
use zinit_tests::{CliOutput, Tag, read_log, wait_gone};

const FIXTURE: &str = env!("CARGO_BIN_EXE_zinit-fixture");
const PROBE: &str = env!("CARGO_BIN_EXE_zinit-probe");

/// The tests of this file run one at a time.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The state letter of a process (as seen from this PID namespace).
fn state_of(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The command name of a process.
fn comm_of(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_string())
}

/// The parent of a process.
fn ppid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Sends `signal` to `pid` through a pidfd (the pid is checked alive first).
fn send(pid: i32, signal: Signal) {
    let id = ProcessId::of(pid).unwrap_or_else(|| panic!("pid {pid} is gone"));
    ProcessHandle::open(id)
        .and_then(|h| h.signal(signal))
        .unwrap_or_else(|e| panic!("{} to pid {pid}: {e}", signal.as_str()));
}

/// Polls `check` every 10 ms until it holds or `bound` passes.
fn until(bound: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + bound;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A cgroup of its own for one namespace (`None` without a usable cgroup
/// v2 hierarchy): `<own cgroup>/<name>`.
fn own_cgroup(name: &str) -> Option<PathBuf> {
    let root = zinit_process::CgroupRoot::detect_as(name).map(|r| r.path().to_path_buf());
    assert!(
        root.is_some() || !zinit_tests::host_allows_cgroups(),
        "this host has a writable cgroup v2 hierarchy, but {name} could not be created"
    );
    root
}

/// Waits (bounded) until a cgroup has no process left, then removes it and
/// every cgroup below it, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    until(Duration::from_secs(5), || {
        std::fs::read_to_string(dir.join("cgroup.events"))
            .map_or(true, |e| e.contains("populated 0"))
    });
    remove_empty_cgroups(dir);
}

fn remove_empty_cgroups(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_cgroups(&entry.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("warning: cgroup {} not removed: {e}", dir.display());
    }
}

/// `program` started in `cgroup` (through a shell that moves itself there,
/// then executes it), or directly without one.
fn in_cgroup(cgroup: Option<&Path>, program: &str) -> Command {
    match cgroup {
        Some(dir) => {
            let mut command = Command::new("sh");
            command
                .arg("-c")
                .arg("echo 0 > \"$0/cgroup.procs\" && exec \"$@\"")
                .arg(dir)
                .arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// One zinit_pid1 in its own PID namespace (and cgroup).
struct Ns {
    tag: Tag,
    cgroup: Option<PathBuf>,
    suffix: String,
    conf: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    unshare: Option<std::process::Child>,
    /// zinit_pid1's pid as seen from here.
    pid1: i32,
    /// Environment for zinit_pid1 (and so for the server).
    env: Vec<(&'static str, &'static str)>,
    /// zinit_pid1's working directory (a container's WORKDIR).
    dir: Option<PathBuf>,
}

impl Ns {
    fn new(name: &str) -> Self {
        let tag = Tag::new(name);
        let conf = tag.dir().join("conf");
        std::fs::create_dir_all(&conf).expect("conf dir");
        let suffix = tag
            .as_str()
            .rsplitn(3, '-')
            .take(2)
            .collect::<Vec<_>>()
            .join("x");
        Self {
            socket: tag.dir().join("s.sock"),
            log: tag.dir().join("pid1.log"),
            cgroup: own_cgroup(&format!("{}-ns", tag.as_str())),
            conf,
            suffix,
            tag,
            unshare: None,
            pid1: 0,
            env: Vec::new(),
            dir: None,
        }
    }

    /// A unit name unique to this test.
    fn unit(&self, name: &str) -> String {
        format!("{name}-{}", self.suffix)
    }

    fn fixture_log(&self, unit: &str) -> PathBuf {
        self.tag.dir().join(format!("{unit}.log"))
    }

    /// Writes a fixture service; returns its unit name.
    fn service(&self, name: &str, args: &str, yaml: &str) -> String {
        let unit = self.unit(name);
        let text = format!(
            "exec: {FIXTURE} --tag {} --log {} {args}\n{yaml}",
            self.tag.as_str(),
            self.fixture_log(&unit).display()
        );
        std::fs::write(self.conf.join(format!("{unit}.yaml")), text).expect("write service");
        unit
    }

    /// Writes a service running `exec` as it is; returns its unit name.
    fn raw_service(&self, name: &str, exec: &str) -> String {
        let unit = self.unit(name);
        let text = format!("exec: \"{}\"\n", exec.replace('"', "\\\""));
        std::fs::write(self.conf.join(format!("{unit}.yaml")), text).expect("write service");
        unit
    }

    /// Starts `unshare ... zinit_pid1 --config --socket --log-level ARGS`,
    /// and waits (bounded) until the server answers.
    fn start(&mut self, args: &[&str]) {
        self.spawn(args);
        self.wait_answering();
    }

    /// Starts zinit_pid1 without waiting for the server.
    fn spawn(&mut self, args: &[&str]) {
        let log = std::fs::File::create(&self.log).expect("log file");
        let mut command = in_cgroup(self.cgroup.as_deref(), "unshare");
        command
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(zinit_tests::workspace_bin("zinit_pid1"))
            .arg("--config")
            .arg(&self.conf)
            .arg("--socket")
            .arg(&self.socket)
            .args(["--log-level", "info"])
            .args(args)
            .envs(self.env.iter().copied())
            .current_dir(self.dir.as_deref().unwrap_or(Path::new("/")))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let unshare = command.spawn().expect("run unshare");
        let unshare_pid = unshare.id() as i32;
        self.unshare = Some(unshare);
        // zinit_pid1 is unshare's child (PID 1 inside).
        let mut pid1 = 0;
        let found = until(Duration::from_secs(10), || {
            let Ok(table) = ProcessTable::snapshot(Detail::Basic) else {
                return false;
            };
            match table.children(unshare_pid).first() {
                Some(&child) if table.get(child).is_some_and(|p| p.comm == "zinit_pid1") => {
                    pid1 = child;
                    true
                }
                _ => false,
            }
        });
        assert!(found, "zinit_pid1 did not start: {}", self.pid1_log());
        self.pid1 = pid1;
    }

    fn wait_answering(&self) {
        let answered = until(Duration::from_secs(15), || {
            self.socket.exists() && std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
        });
        assert!(
            answered,
            "the server did not answer within 15 s: {}",
            self.pid1_log()
        );
    }

    fn pid1_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> CliOutput {
        zinit_tests::run_cli(&self.socket, args)
    }

    /// Waits until every unit is running.
    fn wait_running(&self, units: &[&str]) {
        let mut last = String::new();
        let ready = until(Duration::from_secs(20), || {
            let out = self.cli(&["--json", "list"]);
            last = out.stdout.clone();
            out.code == 0
                && units.iter().all(|name| {
                    out.json()["units"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|u| u["name"] == *name && u["state"] == "running")
                })
        });
        assert!(ready, "units not running: {last}");
    }

    /// The main pid (inside the namespace) of a running unit.
    fn main_pid(&self, unit: &str) -> i64 {
        let out = self.cli(&["--json", "status", unit]);
        assert_eq!(out.code, 0, "status {unit}: {}", out.stderr);
        out.json()["pid"].as_i64().expect("pid")
    }

    /// The server's pid as seen from here: zinit_pid1's zinit_server child.
    fn server_pid(&self) -> Option<i32> {
        let table = ProcessTable::snapshot(Detail::Basic).ok()?;
        table
            .children(self.pid1)
            .iter()
            .copied()
            .find(|&p| table.get(p).is_some_and(|i| i.comm == "zinit_server"))
    }

    /// The server's pid inside the namespace, from ServerInfo.
    fn server_info_pid(&self) -> Option<i64> {
        let out = self.cli(&["--json", "info"]);
        (out.code == 0)
            .then(|| out.json()["pid"].as_i64())
            .flatten()
    }

    fn signal_pid1(&self, signal: Signal) {
        send(self.pid1, signal);
    }

    /// Waits (bounded) for the namespace to end; returns unshare's status.
    fn wait_end(&mut self, bound: Duration) -> ExitStatus {
        let mut unshare = self.unshare.take().expect("started");
        let end = Instant::now() + bound;
        loop {
            if let Some(status) = unshare.try_wait().expect("wait unshare") {
                return status;
            }
            if Instant::now() > end {
                let _ = unshare.kill();
                let _ = unshare.wait();
                panic!(
                    "the namespace did not end within {bound:?}: {}",
                    self.pid1_log()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts `ARGS` inside the namespace (`nsenter`), as `docker exec` does.
    fn enter(&self, args: &[&str]) -> std::process::Child {
        Command::new("nsenter")
            .arg("--target")
            .arg(self.pid1.to_string())
            .args(["--pid", "--mount", "--"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nsenter")
    }

    /// Starts a fixture inside the namespace with `nsenter`; returns it and
    /// the processes it reported.
    fn enter_fixture(&self, args: &str) -> (std::process::Child, Vec<(i32, String)>) {
        let mut all = vec![FIXTURE, "--tag", self.tag.as_str()];
        all.extend(args.split_whitespace());
        let mut child = self.enter(&all);
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut procs = Vec::new();
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let f = zinit_tests::fields(&line);
                if line.starts_with("proc ") {
                    procs.push((f["pid"].parse::<i32>().expect("pid"), f["role"].to_string()));
                } else if line.starts_with("ready") {
                    let _ = tx.send(procs);
                    return;
                }
            }
        });
        let procs = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the fixture entered into the namespace is ready");
        (child, procs)
    }

    /// The pid, as seen from here, of a process of the namespace whose pid
    /// inside it is `inner` (`NSpid` in /proc/PID/status), among the tag's.
    fn outer_pid(&self, inner: i32) -> Option<i32> {
        zinit_tests::tagged_pids(self.tag.as_str())
            .into_iter()
            .find(|&pid| {
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("NSpid:"))
                            .and_then(|v| v.split_whitespace().last())
                            .and_then(|v| v.parse::<i32>().ok())
                    })
                    == Some(inner)
            })
    }

    /// Joins the running shutdown through the socket and returns its
    /// events (see [`watch_shutdown`]).
    fn watch_shutdown(&self) -> Vec<Value> {
        watch_shutdown(&self.socket)
    }

    /// How many lines of zinit_pid1's log (its own and the server's)
    /// contain `text`.
    fn log_count(&self, text: &str) -> usize {
        self.pid1_log().lines().filter(|l| l.contains(text)).count()
    }

    /// Asserts the end of a graceful shutdown: exit `code`, nothing of the
    /// tag left, the log's closing lines.
    fn assert_ended(&mut self, status: ExitStatus, code: i32) {
        assert_eq!(
            status.code(),
            Some(code),
            "zinit_pid1's exit (unshare: {status:?}); log:\n{}",
            self.pid1_log()
        );
        let left = zinit_tests::tagged_trees(self.tag.as_str());
        assert!(left.is_empty(), "processes left: {left:?}");
        assert!(!self.socket.exists(), "the socket was not removed");
        assert!(
            self.pid1_log()
                .contains(&format!("zinit_pid1: exiting with code {code}")),
            "{}",
            self.pid1_log()
        );
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Some(mut unshare) = self.unshare.take() {
            // --kill-child: zinit_pid1, and with it the namespace, dies too.
            let _ = unshare.kill();
            let _ = unshare.wait();
        }
        if std::thread::panicking() {
            eprintln!("zinit_pid1's log:\n{}", self.pid1_log());
        }
        if let Some(dir) = &self.cgroup {
            remove_cgroup_tree(dir);
        }
        // A zinit_pid1 killed by the test (or by a failure) could not remove
        // its private directory: the one its log names.
        if let Some(dir) = self.pid1_log().lines().find_map(|l| {
            let file = l.strip_prefix("zinit_pid1: the server's after-shutdown file: ")?;
            Path::new(file)
                .parent()
                .filter(|d| {
                    d.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("zinit_pid1."))
                })
                .map(Path::to_path_buf)
        }) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Joins the running shutdown through `socket` (`zinit --json shutdown
/// --watch`, tried for up to 5 s) and returns the events of the first
/// attempt that saw the shutdown's summary; on failure, says what every
/// attempt answered.
fn watch_shutdown(socket: &Path) -> Vec<Value> {
    let mut attempts = Vec::new();
    let mut events = Vec::new();
    let joined = until(Duration::from_secs(5), || {
        let out = zinit_tests::run_cli(socket, &["--json", "shutdown", "--watch"]);
        events = out
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect();
        attempts.push(format!("exit {}: {}", out.code, out.stderr.trim()));
        out.code == 0 || events.iter().any(|e| e["kind"] == "summary")
    });
    assert!(joined, "zinit shutdown --watch never joined: {attempts:#?}");
    events
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ----- shutdown ----------------------------------------------------------

/// A SIGTERM to PID 1 (what `docker stop` and the kubelet send) stops every
/// service gracefully through the server, including programs we did not
/// write and a double-forked daemon; a client watching through the socket
/// sees the live events; nothing is left; exit code 0.
#[test]
fn sigterm_shuts_everything_down_and_exits_0() {
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-term");
    let slow = ns.service(
        "slow",
        "--width 2 --depth 2 --term-delay-ms 1500 --delay-scope root",
        "shutdown_timeout: 10\n",
    );
    let daemon = ns.service("daemon", "--double-fork 2", "");
    let sleep = ns.raw_service(
        "sleep",
        &format!("{} 1000", ns.tag.program("sleep").display()),
    );
    let sh = ns.raw_service(
        "sh",
        &format!(
            "{} -c 'while :; do sleep 1; done' {}",
            ns.tag.program("sh").display(),
            ns.tag.as_str()
        ),
    );
    ns.start(&[]);
    ns.wait_running(&[&slow, &daemon, &sleep, &sh]);
    let before = zinit_tests::tagged_trees(ns.tag.as_str());
    assert!(before.len() >= 10, "the services run: {before:?}");

    let started = Instant::now();
    ns.signal_pid1(Signal::SIGTERM);
    // A client joins the running shutdown through the socket.
    let mut watched = None;
    assert!(
        until(Duration::from_secs(5), || {
            let out = ns.cli(&["--json", "shutdown", "--watch"]);
            let ok = out.code == 0;
            watched = Some(out);
            ok
        }),
        "zinit shutdown --watch: {:?}",
        watched
    );
    let status = ns.wait_end(Duration::from_secs(35));
    let took = started.elapsed();
    ns.assert_ended(status, 0);
    assert!(took < Duration::from_secs(10), "the shutdown took {took:?}");
    let events: Vec<Value> = watched
        .expect("watched")
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let summary = events
        .iter()
        .find(|e| e["kind"] == "summary")
        .expect("the watcher got the summary");
    assert_eq!(summary["clean"], true, "{summary}");
    for unit in [&slow, &daemon, &sleep, &sh] {
        let stopped = events
            .iter()
            .find(|e| e["kind"] == "unit_stopped" && e["unit"] == unit.as_str())
            .unwrap_or_else(|| panic!("no unit_stopped for {unit}: {events:?}"));
        assert_eq!(stopped["outcome"], "graceful", "{stopped}");
    }
    assert!(
        wait_gone(&before, ns.tag.as_str(), Duration::from_secs(1)).is_empty(),
        "every process that ran is gone"
    );
    let log = ns.pid1_log();
    assert!(
        log.contains("PID 1 of a PID namespace (a container)"),
        "{log}"
    );
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
    assert!(log.contains("final sweep: nothing left"), "{log}");
    println!(
        "SIGTERM: 4 units stopped gracefully, zinit_pid1 exited 0 after {:.2}s",
        seconds(took)
    );
}

/// A container's configuration is its environment (`docker run -e`,
/// Kubernetes env and Secrets) and its WORKDIR: as PID 1 of a namespace,
/// zinit_pid1 hands both to every service, under the file's own `env`; with
/// `--no-container-env` they stay out. Seen by a real `sh`, whose output
/// (its file names no log mode) also reaches PID 1's stdout, as `docker
/// logs` reads it.
#[test]
fn the_containers_environment_and_workdir_reach_the_services() {
    let _serial = one_at_a_time();
    for hand_on in [true, false] {
        let mut ns = Ns::new(if hand_on { "p1-env" } else { "p1-noenv" });
        let workdir = ns.tag.dir().join("workdir");
        std::fs::create_dir_all(&workdir).expect("workdir");
        ns.env = vec![
            ("DATABASE_URL", "postgres://db/app"),
            ("FOO", "from-the-container"),
        ];
        ns.dir = Some(workdir.clone());
        let seen = ns.tag.dir().join("seen");
        let unit = ns.unit("env");
        std::fs::write(
            ns.conf.join(format!("{unit}.yaml")),
            format!(
                "exec: \"{} -c 'echo $DATABASE_URL,$FOO,$BAR,$(pwd) > {}; echo for docker logs; exec {} 1000'\"\n\
                 env: {{BAR: from-the-file}}\n",
                ns.tag.program("sh").display(),
                seen.display(),
                ns.tag.program("sleep").display()
            ),
        )
        .expect("service");
        ns.start(if hand_on {
            &[]
        } else {
            &["--no-container-env"]
        });
        ns.wait_running(&[&unit]);
        assert!(
            until(Duration::from_secs(10), || seen.exists()),
            "the service wrote nothing"
        );
        let text = std::fs::read_to_string(&seen).expect("seen");
        let expected = if hand_on {
            format!(
                "postgres://db/app,from-the-container,from-the-file,{}",
                workdir.display()
            )
        } else {
            ",,from-the-file,/".to_string()
        };
        assert_eq!(text.trim(), expected);
        // A unit whose file names no log mode also goes to PID 1's stdout.
        assert!(
            until(Duration::from_secs(5), || ns
                .pid1_log()
                .contains(&format!("[{unit}] for docker logs"))),
            "{}",
            ns.pid1_log()
        );
        ns.signal_pid1(Signal::SIGTERM);
        let status = ns.wait_end(Duration::from_secs(35));
        ns.assert_ended(status, 0);
    }
}

/// A server that can never start ends the container instead of keeping it
/// "Up" doing nothing: a misspelt `--log-level` is refused by zinit_pid1
/// itself before anything starts (2); a flag the server refuses is a usage
/// error (2); a server that cannot start (another server answers on its
/// socket) is a start-up error (1), with the server's error in the log; a
/// server that keeps dying is given up after 5 deaths within 60 s (8).
#[test]
fn a_server_that_cannot_start_ends_the_container_with_its_error() {
    let _serial = one_at_a_time();
    // zinit_pid1's own check, before anything starts.
    let tag = Tag::new("p1-badlevel");
    let refused = zinit_tests::output_within(
        Command::new(zinit_tests::workspace_bin("zinit_pid1"))
            .arg("--config")
            .arg(tag.dir())
            .args(["--log-level", "bogus"]),
        Duration::from_secs(10),
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(said.contains("unknown log level \"bogus\""), "{said}");

    // The server's usage error.
    let ns = Ns::new("p1-badflag");
    let (code, log) = pid1_to_its_end(&ns, &["--", "--no-such-flag"], Duration::from_secs(20));
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("--no-such-flag") && log.contains("could not start"),
        "{log}"
    );

    // Another server answers on the socket: exit 1, the server's words.
    let ns = Ns::new("p1-taken");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let other = runtime.block_on(zinit_tests::Server::start(&ns.tag, &ns.conf, &[]));
    let (code, log) = pid1_to_its_end(&ns, &[], Duration::from_secs(20));
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("another zinit_server is already listening"),
        "{log}"
    );
    assert!(log.contains("could not start"), "{log}");
    drop(other);

    // A server that dies again and again (here: a wrapper that exits 3).
    let ns = Ns::new("p1-crashloop");
    let wrapper = ns.tag.dir().join("dying-server");
    std::fs::write(&wrapper, "#!/bin/sh\nexit 3\n").expect("wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let wrapper = wrapper.display().to_string();
    let (code, log) = pid1_to_its_end(&ns, &["--server", &wrapper], Duration::from_secs(40));
    assert_eq!(code, Some(8), "{log}");
    assert!(log.contains("5 times within 1m; giving up"), "{log}");
}

/// Runs zinit_pid1 as PID 1 of a new namespace for `ns` until it ends by
/// itself (bounded): its exit code and its log.
fn pid1_to_its_end(ns: &Ns, args: &[&str], bound: Duration) -> (Option<i32>, String) {
    let out = zinit_tests::output_within(
        in_cgroup(ns.cgroup.as_deref(), "unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(zinit_tests::workspace_bin("zinit_pid1"))
            .arg("--config")
            .arg(&ns.conf)
            .arg("--socket")
            .arg(&ns.socket)
            .args(["--log-level", "info"])
            .args(args)
            .stdin(Stdio::null()),
        bound,
    );
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A container whose runtime SIGKILLs it in the middle of its shutdown
/// (`docker stop` past its timeout) and starts it again: the record left
/// in the socket's directory (a container's `/run` persists in its writable
/// layer) is from another run, so the new server starts the services
/// afresh and says why, instead of "finishing" a shutdown that is over.
#[test]
fn a_container_killed_mid_shutdown_and_started_again_runs_its_services() {
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-restart");
    let stubborn = ns.service("stubborn", "--ignore-term all", "stop_timeout_ms: 3000\n");
    let sleep = ns.raw_service(
        "sleep",
        &format!("{} 1000", ns.tag.program("sleep").display()),
    );
    ns.start(&[]);
    ns.wait_running(&[&stubborn, &sleep]);
    ns.signal_pid1(Signal::SIGTERM);
    assert!(
        until(Duration::from_secs(5), || ns
            .pid1_log()
            .contains("SIGTERM: shutting down")),
        "{}",
        ns.pid1_log()
    );
    // The shutdown waits for the stubborn unit; the runtime kills it all.
    std::thread::sleep(Duration::from_millis(300));
    let mut runtime = ns.unshare.take().expect("started");
    let _ = runtime.kill();
    let _ = runtime.wait();
    let state = PathBuf::from(format!("{}.state", ns.socket.display()));
    assert!(state.exists(), "the record of the killed run is gone");
    assert!(
        wait_gone(
            &zinit_tests::tagged_trees(ns.tag.as_str()),
            ns.tag.as_str(),
            Duration::from_secs(5)
        )
        .is_empty()
    );

    ns.start(&[]);
    ns.wait_running(&[&stubborn, &sleep]);
    let log = ns.pid1_log();
    assert!(
        log.contains("record not used: it is from another boot or container run"),
        "{log}"
    );
    ns.signal_pid1(Signal::SIGTERM);
    let status = ns.wait_end(Duration::from_secs(35));
    ns.assert_ended(status, 0);
}

/// `docker stop` waits 10 s by default, then SIGKILLs: as a container's
/// PID 1 with default settings, a stack with a unit that ignores SIGTERM
/// (and the default 10 s stop timeout) is still done, exit 0, within those
/// 10 s — the default bound is 7 s, the unit killed at 5 s.
/// `ZINIT_SHUTDOWN_TIMEOUT` sets the bound as `--timeout` does.
#[test]
fn with_default_settings_a_container_is_done_within_dockers_10_s() {
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-docker");
    let stubborn = ns.service("stubborn", "--ignore-term all", "");
    let sleep = ns.raw_service(
        "sleep",
        &format!("{} 1000", ns.tag.program("sleep").display()),
    );
    ns.start(&[]);
    ns.wait_running(&[&stubborn, &sleep]);
    assert!(
        ns.pid1_log().contains("the shutdown's bound: 7s"),
        "{}",
        ns.pid1_log()
    );
    let started = Instant::now();
    ns.signal_pid1(Signal::SIGTERM);
    let status = ns.wait_end(Duration::from_secs(35));
    let took = started.elapsed();
    ns.assert_ended(status, 0);
    assert!(
        took < Duration::from_secs(10),
        "docker would have killed it: {took:?}"
    );

    let mut ns = Ns::new("p1-k8s");
    ns.env = vec![("ZINIT_SHUTDOWN_TIMEOUT", "25s")];
    ns.start(&[]);
    assert!(
        ns.pid1_log().contains("the shutdown's bound: 25s"),
        "{}",
        ns.pid1_log()
    );
    ns.signal_pid1(Signal::SIGTERM);
    let status = ns.wait_end(Duration::from_secs(35));
    ns.assert_ended(status, 0);
}

/// A stubborn service (ignores SIGTERM, timeout 2 s) is killed at its
/// timeout: the whole shutdown ends near 2 s, not at the bound, and the
/// shutdown still counts as clean.
#[test]
fn a_stubborn_service_is_killed_at_its_timeout() {
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-stubborn");
    let stubborn = ns.service(
        "stubborn",
        "--width 2 --ignore-term all",
        "shutdown_timeout: 2\n",
    );
    ns.start(&[]);
    ns.wait_running(&[&stubborn]);
    let started = Instant::now();
    ns.signal_pid1(Signal::SIGTERM);
    let status = ns.wait_end(Duration::from_secs(35));
    let took = started.elapsed();
    ns.assert_ended(status, 0);
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "killed at its 2 s timeout, not at {took:?}"
    );
    let log = read_log(&ns.fixture_log(&stubborn));
    let termed = log
        .iter()
        .filter(|l| l.kind == "signal" && l.sig.as_deref() == Some("SIGTERM"))
        .count();
    assert_eq!(termed, 3, "every process got SIGTERM first: {log:?}");
    assert!(
        !log.iter().any(|l| l.kind == "exit"),
        "nothing exited by itself (all were killed): {log:?}"
    );
    println!(
        "the stubborn unit was killed at its 2 s timeout; zinit_pid1 exited 0 after {:.2}s",
        seconds(took)
    );
}

/// Ctrl+C twice: the first SIGINT starts the graceful shutdown, the second
/// forces it, so a unit with a 20 s timeout is killed at once.
#[test]
fn a_second_sigint_forces() {
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-sigint");
    let stubborn = ns.service("stubborn", "--ignore-term all", "shutdown_timeout: 20\n");
    ns.start(&[]);
    ns.wait_running(&[&stubborn]);
    let started = Instant::now();
    ns.signal_pid1(Signal::SIGINT);
    let signalled = until(Duration::from_secs(5), || {
        read_log(&ns.fixture_log(&stubborn))
            .iter()
            .any(|l| l.kind == "signal" && l.sig.as_deref() == Some("SIGTERM"))
    });
    assert!(signalled, "the first SIGINT started the shutdown");
    ns.signal_pid1(Signal::SIGINT);
    let status = ns.wait_end(Duration::from_secs(35));
    let took = started.elapsed();
    ns.assert_ended(status, 0);
    assert!(
        took < Duration::from_secs(5),
        "the second SIGINT forced the 20 s unit down, but it took {took:?}"
    );
    assert!(ns.pid1_log().contains("SIGINT again"), "{}", ns.pid1_log());
    println!(
        "SIGINT twice forced a 20 s unit down; zinit_pid1 exited 0 after {:.2}s",
        seconds(took)
    );
}

/// `zinit shutdown` through the socket: the live view, then the server
/// exits, zinit_pid1 sweeps and the namespace ends with 0.
#[test]
fn zinit_shutdown_through_the_socket_ends_the_namespace() {
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-rpc");
    let web = ns.service("web", "--width 3 --depth 2", "");
    let db = ns.service("db", "--term-delay-ms 300", "");
    std::fs::write(
        ns.conf.join(format!("{web}.yaml")),
        format!(
            "{}after: [{db}]\n",
            std::fs::read_to_string(ns.conf.join(format!("{web}.yaml"))).expect("read")
        ),
    )
    .expect("write");
    ns.start(&[]);
    ns.wait_running(&[&web, &db]);
    let started = Instant::now();
    let out = ns.cli(&["shutdown"]);
    assert_eq!(out.code, 0, "zinit shutdown: {}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("plan: stopping 2 units"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("summary: clean"), "{}", out.stdout);
    assert!(
        out.stdout.contains("stopped: zinit_server"),
        "{}",
        out.stdout
    );
    let status = ns.wait_end(Duration::from_secs(10));
    ns.assert_ended(status, 0);
    let log = ns.pid1_log();
    assert!(
        log.contains("finished a shutdown asked through its socket"),
        "{log}"
    );
    println!(
        "zinit shutdown: live view, then the namespace ended with 0 after {:.2}s",
        seconds(started.elapsed())
    );
}

/// `--timeout` lowers the bound and reaches the server: a unit whose own
/// timeout is 20 s is cut at the 3 s deadline, and the code says so (4).
#[test]
fn the_bound_is_the_servers_deadline() {
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-bound");
    let long = ns.service("long", "--ignore-term all", "shutdown_timeout: 20\n");
    ns.start(&["--timeout", "3s"]);
    ns.wait_running(&[&long]);
    let server = ns.server_pid().expect("server");
    let cmdline = std::fs::read(format!("/proc/{server}/cmdline")).expect("cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains("--shutdown-timeout\u{0}3000ms"),
        "the bound is passed to the server"
    );
    let started = Instant::now();
    ns.signal_pid1(Signal::SIGTERM);
    let status = ns.wait_end(Duration::from_secs(35));
    let took = started.elapsed();
    ns.assert_ended(status, 4);
    assert!(
        took < Duration::from_secs(4),
        "the 3 s bound held: {took:?}"
    );
    println!(
        "--timeout 3s cut a 20 s unit; zinit_pid1 exited 4 after {:.2}s",
        seconds(took)
    );
}

/// A server that does not react to SIGTERM (here: a script that ignores it)
/// is killed at the bound plus 1 s; zinit_pid1 still ends everything within
/// the bound plus 3 s, and exits 5.
#[test]
fn a_hung_server_is_killed_and_everything_ends_in_time() {
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-hung");
    let script = ns.tag.dir().join("hung-server");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ntrap '' TERM INT\nexec {} 1000\n",
            ns.tag.program("sleep").display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    ns.spawn(&[
        "--timeout",
        "2s",
        "--server",
        script.to_str().expect("utf-8"),
    ]);
    // Once the script has become sleep, its trap is in place (a SIGTERM
    // before that would end the script, not test the bound).
    assert!(
        until(Duration::from_secs(10), || zinit_tests::tagged_pids(
            ns.tag.as_str()
        )
        .iter()
        .any(
            |&p| ppid_of(p) == Some(ns.pid1) && comm_of(p).as_deref() == Some("sleep")
        )),
        "the fake server runs"
    );
    let started = Instant::now();
    ns.signal_pid1(Signal::SIGTERM);
    let status = ns.wait_end(Duration::from_secs(35));
    let took = started.elapsed();
    ns.assert_ended(status, 5);
    assert!(
        took >= Duration::from_secs(3)
            && took < Duration::from_secs(5) + Duration::from_millis(500),
        "killed after the bound (2 s) + 1 s, everything over by the bound + 3 s: {took:?}"
    );
    assert!(ns.pid1_log().contains("killing it"), "{}", ns.pid1_log());
    println!(
        "a server ignoring SIGTERM was killed; zinit_pid1 exited 5 after {:.2}s (bound 2 s)",
        seconds(took)
    );
}

/// The debug zinit_server, which has the test-only fault hook
/// (`ZINIT_TEST_WEDGE`), whatever `ZINIT_BIN_DIR` says.
fn hooked_server() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--workspace", "--bin", "zinit_server"])
        .status()
        .expect("cargo build");
    assert!(status.success(), "building the debug zinit_server");
    zinit_tests::bin_dir().join("zinit_server")
}

/// A shutdown step that hangs (the debug server's fault hook): the server's
/// own watchdog ends it at the bound and still writes the after-shutdown
/// file, so zinit_pid1 knows the shutdown ran and passes its code on (4),
/// instead of taking it for a crash.
#[test]
fn a_wedged_shutdown_is_ended_by_the_servers_watchdog_at_the_bound() {
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-wedge");
    let svc = ns.service("svc", "--width 2 --depth 2", "");
    ns.env.push(("ZINIT_TEST_WEDGE", "before-freeze"));
    let server = hooked_server();
    ns.start(&[
        "--timeout",
        "3s",
        "--server",
        server.to_str().expect("utf-8"),
    ]);
    ns.wait_running(&[&svc]);
    let started = Instant::now();
    ns.signal_pid1(Signal::SIGTERM);
    let status = ns.wait_end(Duration::from_secs(35));
    let took = started.elapsed();
    ns.assert_ended(status, 4);
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(5),
        "the watchdog fired at the 3 s bound: {took:?}"
    );
    let log = ns.pid1_log();
    assert!(log.contains("wedging the shutdown"), "{log}");
    assert!(
        log.contains("finished its shutdown (exit code 4)"),
        "the watchdog wrote the after-shutdown file: {log}"
    );
    assert!(log.contains("final sweep: nothing left"), "{log}");
    println!(
        "a wedged shutdown: the server's watchdog ended it; zinit_pid1 exited 4 after {:.2}s",
        seconds(took)
    );
}

// ----- reaping -----------------------------------------------------------

/// Orphans of the whole namespace, not only of the server's tree: the
/// daemons a process entered with nsenter double-forks are re-parented to
/// zinit_pid1, and reaped when they die (no zombie stays).
#[test]
fn orphaned_grandchildren_are_reaped() {
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-orphans");
    ns.start(&[]);
    let (mut entered, procs) = ns.enter_fixture("--double-fork 3");
    let inner: Vec<i32> = procs
        .iter()
        .filter(|(_, role)| role == "daemon")
        .map(|(pid, _)| *pid)
        .collect();
    assert_eq!(inner.len(), 3, "{procs:?}");
    let mut daemons = Vec::new();
    assert!(
        until(Duration::from_secs(5), || {
            daemons = inner.iter().filter_map(|&p| ns.outer_pid(p)).collect();
            daemons.len() == 3 && daemons.iter().all(|&d| ppid_of(d) == Some(ns.pid1))
        }),
        "the daemons {daemons:?} are zinit_pid1's (pid {}) now",
        ns.pid1
    );
    for &daemon in &daemons {
        send(daemon, Signal::SIGKILL);
    }
    assert!(
        until(Duration::from_secs(2), || daemons
            .iter()
            .all(|&d| state_of(d).is_none())),
        "reaped, not zombies: {:?}",
        daemons.iter().map(|&d| state_of(d)).collect::<Vec<_>>()
    );
    // The fixture's root is nsenter's child: it ends, and nsenter with it.
    let root = procs
        .iter()
        .find(|(_, role)| role == "root")
        .and_then(|(pid, _)| ns.outer_pid(*pid))
        .expect("the fixture's root");
    send(root, Signal::SIGTERM);
    let _ = entered.wait();
    ns.signal_pid1(Signal::SIGTERM);
    let status = ns.wait_end(Duration::from_secs(35));
    ns.assert_ended(status, 0);
    assert!(
        ns.pid1_log().contains("reaped 3 orphan(s)"),
        "{}",
        ns.pid1_log()
    );
    println!("3 double-forked orphans re-parented to zinit_pid1 and reaped");
}

/// Processes the server's shutdown cannot see (orphans of zinit_pid1 that
/// ignore SIGTERM) are ended by the final sweep: SIGTERM, 1 s, SIGKILL; the
/// code says the sweep found something (6), and the log names them. The
/// process entered from outside (a visitor) is ended too, without counting.
#[test]
fn the_final_sweep_ends_orphans_and_says_so() {
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-sweep");
    let polite = ns.service("polite", "--width 2", "");
    ns.start(&[]);
    ns.wait_running(&[&polite]);
    let (mut entered, procs) = ns.enter_fixture("--double-fork 2 --ignore-term all");
    let inner: Vec<i32> = procs
        .iter()
        .filter(|(_, role)| role == "daemon")
        .map(|(pid, _)| *pid)
        .collect();
    assert!(
        until(Duration::from_secs(5), || inner
            .iter()
            .filter_map(|&p| ns.outer_pid(p))
            .filter(|&d| ppid_of(d) == Some(ns.pid1))
            .count()
            == 2),
        "the daemons are zinit_pid1's"
    );
    let started = Instant::now();
    ns.signal_pid1(Signal::SIGTERM);
    let status = ns.wait_end(Duration::from_secs(35));
    let took = started.elapsed();
    let _ = entered.wait();
    ns.assert_ended(status, 6);
    let log = ns.pid1_log();
    for pid in &inner {
        assert!(
            log.contains(&format!("pid {pid} (zinit-fixture)")),
            "the sweep names pid {pid}: {log}"
        );
    }
    assert!(log.contains("SIGKILL to what ignored SIGTERM"), "{log}");
    assert!(
        log.contains("ending processes entered from outside the namespace"),
        "{log}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "a 1 s grace, then SIGKILL: {took:?}"
    );
    println!(
        "the final sweep killed 2 orphans that ignored SIGTERM; exit 6 after {:.2}s",
        seconds(took)
    );
}

/// Children of the namespace's init (`NSpid` inside) that are zombies now.
fn zombie_children(pid1: i32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')').is_some_and(|(_, rest)| {
                    let mut f = rest.split_whitespace();
                    f.next() == Some("Z") && f.next() == Some(&pid1.to_string())
                })
            })
        })
        .count()
}

/// Round trips of `ServerInfo` on the socket while `busy` is true.
fn latencies(socket: &Path, busy: &std::sync::atomic::AtomicBool) -> Vec<Duration> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut client = zinit_client::connect(socket).await.expect("connect");
        let mut out = Vec::new();
        while busy.load(std::sync::atomic::Ordering::SeqCst) {
            let t = Instant::now();
            client
                .server_info(zinit_proto::v1::ServerInfoRequest {})
                .await
                .expect("ServerInfo");
            out.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        out
    })
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|t| t.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A flood of exiting orphans (thousands per second, for 3 s) never piles
/// up zombies under zinit_pid1, all of them are reaped, and the server keeps
/// answering on its socket meanwhile.
#[test]
fn an_orphan_flood_leaves_no_zombie_pile() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-flood");
    let svc = ns.service("svc", "--width 2", "");
    ns.start(&[]);
    ns.wait_running(&[&svc]);
    let idle = {
        let busy = AtomicBool::new(true);
        std::thread::scope(|s| {
            let t = s.spawn(|| latencies(&ns.socket, &busy));
            std::thread::sleep(Duration::from_millis(500));
            busy.store(false, Ordering::SeqCst);
            t.join().expect("latencies")
        })
    };
    let cpu_before = cpu_time(ns.pid1);
    let busy = AtomicBool::new(true);
    let max_zombies = AtomicUsize::new(0);
    let samples = AtomicUsize::new(0);
    let (flood_out, during) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            while busy.load(Ordering::SeqCst) {
                let z = zombie_children(ns.pid1);
                max_zombies.fetch_max(z, Ordering::SeqCst);
                samples.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let rpc = s.spawn(|| latencies(&ns.socket, &busy));
        let flood = ns.enter(&[
            PROBE,
            "orphan-flood",
            "--tag",
            ns.tag.as_str(),
            "--millis",
            "3000",
        ]);
        let out = flood.wait_with_output().expect("the flood");
        busy.store(false, Ordering::SeqCst);
        sampler.join().expect("sampler");
        (out, rpc.join().expect("latencies"))
    });
    assert!(flood_out.status.success(), "the flood failed");
    let text = String::from_utf8_lossy(&flood_out.stdout).into_owned();
    let f = zinit_tests::fields(text.trim());
    let orphans: u64 = f["orphans"].parse().expect("orphans");
    let millis: u64 = f["millis"].parse().expect("millis");
    let rate = orphans as f64 * 1000.0 / millis as f64;
    assert!(
        until(Duration::from_secs(1), || zombie_children(ns.pid1) == 0),
        "zombies left after the flood: {}",
        zombie_children(ns.pid1)
    );
    let max = max_zombies.load(Ordering::SeqCst);
    let cpu = cpu_time(ns.pid1).saturating_sub(cpu_before);
    let mut during = during;
    during.sort();
    let mut idle = idle;
    idle.sort();
    ns.signal_pid1(Signal::SIGTERM);
    let status = ns.wait_end(Duration::from_secs(35));
    ns.assert_ended(status, 0);
    let reaped: u64 = ns
        .pid1_log()
        .lines()
        .find_map(|l| {
            l.strip_prefix("zinit_pid1: reaped ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("zinit_pid1 says how many orphans it reaped");
    println!(
        "orphan flood: {orphans} orphans in {:.2}s ({rate:.0}/s), {reaped} reaped by zinit_pid1 \
         using {} ms of CPU ({:.1} us per orphan); zombies at most {max} over {} samples; \
         ServerInfo round trip idle p50 {:.1} ms max {:.1} ms, \
         during the flood p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({} calls)",
        millis as f64 / 1000.0,
        cpu.as_millis(),
        cpu.as_secs_f64() * 1e6 / orphans.max(1) as f64,
        samples.load(Ordering::SeqCst),
        percentile(&idle, 0.5).as_secs_f64() * 1e3,
        percentile(&idle, 1.0).as_secs_f64() * 1e3,
        percentile(&during, 0.5).as_secs_f64() * 1e3,
        percentile(&during, 0.99).as_secs_f64() * 1e3,
        percentile(&during, 1.0).as_secs_f64() * 1e3,
        during.len()
    );
    assert!(
        rate >= 1000.0,
        "the flood must reach thousands of orphans per second to mean anything: {rate:.0}/s"
    );
    assert!(reaped >= orphans, "reaped {reaped} of {orphans}");
    assert!(max <= 200, "zombies piled up: {max} at once");
    assert!(
        during.len() >= 20 && percentile(&during, 1.0) < Duration::from_secs(1),
        "the server answered every call within 1 s during the flood ({} calls)",
        during.len()
    );
}

// ----- the server dies ---------------------------------------------------

/// Waits until a server other than `old` (pid inside the namespace)
/// answers; returns its pid and how long that took.
fn wait_new_server(ns: &Ns, old: i64) -> (i64, Duration) {
    let started = Instant::now();
    let mut pid = old;
    assert!(
        until(Duration::from_secs(15), || {
            pid = ns.server_info_pid().unwrap_or(old);
            pid != old
        }),
        "no new server answered: {}",
        ns.pid1_log()
    );
    (pid, started.elapsed())
}

/// A server killed with SIGKILL is restarted, after 0.5 s, then (killed
/// again at once) after 1 s: the back-off doubles. SIGHUP is forwarded to
/// the server that runs now (it reloads).
#[test]
fn a_killed_server_is_restarted_with_backoff() {
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-restart");
    ns.start(&[]);
    let first = ns.server_info_pid().expect("server");
    send(ns.server_pid().expect("server"), Signal::SIGKILL);
    let (second, took) = wait_new_server(&ns, first);
    assert!(
        took >= Duration::from_millis(450),
        "restarted after the 0.5 s back-off, not after {took:?}"
    );
    send(ns.server_pid().expect("server"), Signal::SIGKILL);
    let (_, took2) = wait_new_server(&ns, second);
    assert!(
        took2 >= Duration::from_millis(950),
        "the back-off doubled to 1 s, not {took2:?}"
    );
    // SIGHUP reaches the restarted server: it reloads and starts a new unit.
    let added = ns.service("added", "", "");
    ns.signal_pid1(Signal::SIGHUP);
    ns.wait_running(&[&added]);
    let log = ns.pid1_log();
    assert!(log.contains("SIGHUP: forwarded to zinit_server"), "{log}");
    assert!(
        log.contains("died unexpectedly (killed by SIGKILL)"),
        "{log}"
    );
    assert!(log.contains("restarting it in 500ms"), "{log}");
    assert!(log.contains("restarting it in 1s"), "{log}");
    ns.signal_pid1(Signal::SIGTERM);
    let status = ns.wait_end(Duration::from_secs(35));
    ns.assert_ended(status, 0);
    println!(
        "SIGKILLed server restarted after {:.2}s, then {:.2}s",
        seconds(took),
        seconds(took2)
    );
}

/// Takeover (issue 12): a killed server is restarted and the new one adopts
/// the running services: same main pids, none started twice, and the
/// shutdown then stops them (exit 0: nothing left for the sweep).
#[test]
fn a_killed_server_is_restarted_and_adopts_its_services() {
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-adopt");
    let a = ns.service("a", "--width 2 --depth 2", "");
    let b = ns.service("b", "--width 1", "");
    ns.start(&[]);
    ns.wait_running(&[&a, &b]);
    let before = [(a.clone(), ns.main_pid(&a)), (b.clone(), ns.main_pid(&b))];
    let old = ns.server_info_pid().expect("server");
    send(ns.server_pid().expect("server"), Signal::SIGKILL);
    wait_new_server(&ns, old);
    ns.wait_running(&[&a, &b]);
    for (unit, pid) in &before {
        assert_eq!(
            ns.main_pid(unit),
            *pid,
            "{unit} was adopted, not started again"
        );
        let roots = read_log(&ns.fixture_log(unit))
            .iter()
            .filter(|l| l.kind == "start" && l.role == "root")
            .count();
        assert_eq!(roots, 1, "{unit} runs once, not twice");
    }
    ns.signal_pid1(Signal::SIGTERM);
    let status = ns.wait_end(Duration::from_secs(35));
    ns.assert_ended(status, 0);
}

// ----- the machine path, inside a namespace ----------------------------

/// How a namespace whose init called reboot(2) ended, as its parent
/// (unshare, which re-raises its child's signal) reports it.
fn killed_by(status: ExitStatus) -> Option<i32> {
    status.signal()
}

/// `--machine` in a PID namespace: SIGTERM and SIGPWR power off (the
/// namespace's init dies of SIGINT), `zinit reboot` and ctrl-alt-del
/// (SIGINT) reboot (SIGHUP) — after the same graceful shutdown.
#[test]
fn the_reboot_path_ends_the_namespace() {
    let _serial = one_at_a_time();
    for (case, expected) in [
        ("SIGTERM", Signal::SIGINT),
        ("SIGPWR", Signal::SIGINT),
        ("zinit reboot", Signal::SIGHUP),
        ("SIGINT", Signal::SIGHUP),
    ] {
        let mut ns = Ns::new("p1-machine");
        let svc = ns.service("svc", "--width 2 --depth 2", "");
        ns.start(&["--machine"]);
        ns.wait_running(&[&svc]);
        assert!(ns.pid1_log().contains("taking the machine path"));
        let tree = zinit_tests::tagged_trees(ns.tag.as_str());
        match case {
            "SIGTERM" => ns.signal_pid1(Signal::SIGTERM),
            "SIGPWR" => ns.signal_pid1(Signal::SIGPWR),
            "SIGINT" => ns.signal_pid1(Signal::SIGINT),
            _ => {
                let out = ns.cli(&["reboot"]);
                assert_eq!(out.code, 0, "zinit reboot: {}{}", out.stdout, out.stderr);
                assert!(out.stdout.contains("summary: clean"), "{}", out.stdout);
            }
        }
        let status = ns.wait_end(Duration::from_secs(35));
        assert_eq!(
            killed_by(status),
            Some(expected as i32),
            "{case}: the namespace ended with {status:?}, expected {}; log:\n{}",
            expected.as_str(),
            ns.pid1_log()
        );
        let log = ns.pid1_log();
        assert!(
            log.contains("finished its shutdown (exit code 0)")
                || log.contains("finished a shutdown asked through its socket (exit code 0)"),
            "{case}: {log}"
        );
        assert!(log.contains("final sweep: nothing left"), "{case}: {log}");
        let word = if expected == Signal::SIGHUP {
            "rebooting"
        } else {
            "powering off"
        };
        assert!(log.contains(word), "{case}: {log}");
        assert!(
            wait_gone(&tree, ns.tag.as_str(), Duration::from_secs(1)).is_empty(),
            "{case}: everything stopped"
        );
        println!(
            "--machine, {case}: graceful shutdown, then the namespace ended by {}",
            expected.as_str()
        );
    }
}

// ----- not PID 1 -------------------------------------------------------

/// Not PID 1 (here under a shell that is PID 1 of the namespace): it says
/// so, adopts orphans as a child subreaper and reaps them, shuts down
/// cleanly, and its final sweep ends only its own descendants (the shell's
/// other child lives on). `--machine` is refused.
#[test]
fn not_pid1_it_is_a_child_subreaper() {
    let _serial = one_at_a_time();
    let tag = Tag::new("p1-sub");
    let conf = tag.dir().join("conf");
    std::fs::create_dir_all(&conf).expect("conf");
    let socket = tag.dir().join("s.sock");
    let log_path = tag.dir().join("pid1.log");
    let code_file = tag.dir().join("code");
    let sleep = tag.program("sleep");
    // The server, through a wrapper that first leaves two orphans behind
    // (a subshell starts them and exits before the server runs).
    let wrapper = tag.dir().join("server-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n( {s} 1001 & {s} 1002 & )\nexec {server} \"$@\"\n",
            s = sleep.display(),
            server = zinit_tests::workspace_bin("zinit_server").display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let script = format!(
        "{s} 1003 & \"$@\" 2>{log}; echo $? > {code}; exec {s} 1004",
        s = sleep.display(),
        log = log_path.display(),
        code = code_file.display()
    );
    let cgroup = own_cgroup(&format!("{}-ns", tag.as_str()));
    let mut unshare = in_cgroup(cgroup.as_deref(), "unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "sh",
            "-c",
        ])
        .arg(&script)
        .arg("sh")
        .arg(zinit_tests::workspace_bin("zinit_pid1"))
        .arg("--config")
        .arg(&conf)
        .arg("--socket")
        .arg(&socket)
        .arg("--server")
        .arg(&wrapper)
        .stdin(Stdio::null())
        .spawn()
        .expect("unshare");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let cleanup = |unshare: &mut std::process::Child| {
        let _ = unshare.kill();
        let _ = unshare.wait();
    };
    let by_arg = |arg: &str| {
        zinit_tests::tagged_pids(tag.as_str())
            .into_iter()
            .find(|&p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == arg.as_bytes()))
            })
    };
    let mut pid1 = None;
    let ready = until(Duration::from_secs(15), || {
        pid1 = zinit_tests::tagged_pids(tag.as_str())
            .into_iter()
            .find(|&p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "zinit_pid1")
            });
        pid1.is_some()
            && socket.exists()
            && std::os::unix::net::UnixStream::connect(&socket).is_ok()
            && by_arg("1001").is_some()
            && by_arg("1002").is_some()
            && by_arg("1003").is_some()
    });
    if !ready {
        cleanup(&mut unshare);
        if let Some(dir) = &cgroup {
            remove_cgroup_tree(dir);
        }
        panic!("not ready: {}", log());
    }
    let pid1 = pid1.expect("pid1");
    let orphans = [
        by_arg("1001").expect("orphan"),
        by_arg("1002").expect("orphan"),
    ];
    let sibling = by_arg("1003").expect("sibling");
    let adopted = orphans.iter().all(|&o| ppid_of(o) == Some(pid1));
    // A terminal's stop signals do not stop a subreaper (a stopped one
    // would reap nothing and forward nothing).
    for signal in [Signal::SIGTTOU, Signal::SIGTTIN, Signal::SIGTSTP] {
        send(pid1, signal);
    }
    let ignored = until(Duration::from_secs(5), || log().contains("SIGTSTP ignored"));
    let not_stopped = state_of(pid1).is_some_and(|s| s != 'T' && s != 't');
    // One orphan dies: zinit_pid1 reaps it.
    send(orphans[0], Signal::SIGKILL);
    let reaped = until(Duration::from_secs(2), || state_of(orphans[0]).is_none());
    send(pid1, Signal::SIGTERM);
    let ended = until(Duration::from_secs(35), || code_file.exists());
    let code = std::fs::read_to_string(&code_file).unwrap_or_default();
    let sibling_alive = state_of(sibling).is_some_and(|s| s != 'Z');
    let other_gone = state_of(orphans[1]).is_none();
    cleanup(&mut unshare);
    if let Some(dir) = &cgroup {
        remove_cgroup_tree(dir);
    }
    let text = log();
    assert!(
        text.contains("not PID 1: running as a child subreaper"),
        "{text}"
    );
    assert!(adopted, "the orphans were adopted by zinit_pid1: {text}");
    assert!(
        ignored && not_stopped,
        "SIGTTOU, SIGTTIN and SIGTSTP stopped zinit_pid1: {text}"
    );
    assert!(reaped, "the killed orphan was reaped");
    assert!(ended, "zinit_pid1 ended: {text}");
    assert_eq!(
        code.trim(),
        "6",
        "its sweep ended the orphan it had adopted: {text}"
    );
    assert!(other_gone, "the other orphan was swept");
    assert!(
        text.contains("(sleep)"),
        "the sweep names the orphan: {text}"
    );
    assert!(
        sibling_alive,
        "the sweep touched only zinit_pid1's descendants (never kill(-1))"
    );

    // --machine is refused when not PID 1 (inside a namespace all the same).
    let refused = zinit_tests::output_within(
        Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
                "sh",
                "-c",
            ])
            .arg("\"$@\"; exit $?")
            .arg("sh")
            .arg(zinit_tests::workspace_bin("zinit_pid1"))
            .arg("--machine")
            .arg("--config")
            .arg(&conf)
            .arg("--socket")
            .arg(&socket),
        Duration::from_secs(20),
    );
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--machine needs zinit_pid1 to be PID 1"),
        "{refused:?}"
    );
    println!("not PID 1: a child subreaper that adopted, reaped and swept only its own");
}

// ----- one shutdown per container ----------------------------------------

/// The processes of a fixture unit that exited by themselves after one
/// SIGTERM each (graceful, not killed): every process that started got
/// exactly one SIGTERM and logged its exit.
fn each_exited_after_one_sigterm(log: &[zinit_tests::LogLine]) -> Result<usize, String> {
    let started: Vec<i32> = log
        .iter()
        .filter(|l| l.kind == "start")
        .map(|l| l.pid)
        .collect();
    for pid in &started {
        let terms = log
            .iter()
            .filter(|l| l.pid == *pid && l.kind == "signal" && l.sig.as_deref() == Some("SIGTERM"))
            .count();
        let other = log
            .iter()
            .filter(|l| l.pid == *pid && l.kind == "signal" && l.sig.as_deref() != Some("SIGTERM"))
            .count();
        let exited = log.iter().any(|l| l.pid == *pid && l.kind == "exit");
        if terms != 1 || other != 0 || !exited {
            return Err(format!(
                "pid {pid}: {terms} SIGTERM(s), {other} other signal(s), exited by itself: {exited}; {log:?}"
            ));
        }
    }
    Ok(started.len())
}

/// SIGTERM, SIGINT and SIGPWR each start the graceful shutdown in a
/// container (SIGPWR too, not only on a machine), and one SIGINT is not a
/// force: a unit that takes 1.5 s to exit after its SIGTERM is waited for
/// (not killed), the events say graceful, and zinit_pid1 exits 0.
#[test]
fn sigterm_sigint_or_sigpwr_alone_is_a_graceful_shutdown() {
    let _serial = one_at_a_time();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGPWR] {
        let name = signal.as_str();
        let mut ns = Ns::new("p1-once");
        let slow = ns.service(
            "slow",
            "--width 1 --term-delay-ms 1500",
            "shutdown_timeout: 10\n",
        );
        ns.start(&[]);
        ns.wait_running(&[&slow]);
        let started = Instant::now();
        ns.signal_pid1(signal);
        let events = ns.watch_shutdown();
        let status = ns.wait_end(Duration::from_secs(20));
        let took = started.elapsed();
        ns.assert_ended(status, 0);
        let stopped = events
            .iter()
            .find(|e| e["kind"] == "unit_stopped" && e["unit"] == slow.as_str())
            .unwrap_or_else(|| panic!("{name}: no unit_stopped: {events:?}"));
        assert_eq!(stopped["outcome"], "graceful", "{name}: {stopped}");
        let summary = events
            .iter()
            .find(|e| e["kind"] == "summary")
            .unwrap_or_else(|| panic!("{name}: no summary: {events:?}"));
        assert_eq!(summary["units_killed"], 0, "{name}: {summary}");
        assert_eq!(summary["processes_killed"], 0, "{name}: {summary}");
        let processes = each_exited_after_one_sigterm(&read_log(&ns.fixture_log(&slow)))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(processes, 2, "{name}");
        assert!(
            took >= Duration::from_millis(1500),
            "{name}: the 1.5 s exit was waited for, not cut: {took:?}"
        );
        let log = ns.pid1_log();
        assert!(log.contains(&format!("{name}: shutting down")), "{log}");
        assert!(
            !log.contains("forcing"),
            "{name} forced the shutdown: {log}"
        );
        println!(
            "{name} alone: a graceful shutdown in {:.2}s, exit 0",
            seconds(took)
        );
    }
}

/// Further SIGTERMs (orchestrators send more than one) join the running
/// shutdown: one shutdown (one plan, begun once), not forced (each
/// process still gets one SIGTERM and exits by itself), exit 0.
#[test]
fn further_sigterms_join_the_running_shutdown() {
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-again");
    let slow = ns.service(
        "slow",
        "--width 1 --term-delay-ms 1500",
        "shutdown_timeout: 10\n",
    );
    ns.start(&[]);
    ns.wait_running(&[&slow]);
    let started = Instant::now();
    ns.signal_pid1(Signal::SIGTERM);
    assert!(
        until(Duration::from_secs(5), || read_log(&ns.fixture_log(&slow))
            .iter()
            .any(|l| l.kind == "signal")),
        "the first SIGTERM started the shutdown"
    );
    let socket = ns.socket.clone();
    let watcher = std::thread::spawn(move || watch_shutdown(&socket));
    for n in 1..=3 {
        // A forced shutdown could already be over: then pid1 is gone.
        let sent = ProcessId::of(ns.pid1)
            .and_then(|id| ProcessHandle::open(id).ok())
            .is_some_and(|h| h.signal(Signal::SIGTERM).is_ok());
        assert!(
            sent,
            "the shutdown was over before further SIGTERM {n} (forced?): {}",
            ns.pid1_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = watcher.join().expect("the watcher");
    let status = ns.wait_end(Duration::from_secs(20));
    let took = started.elapsed();
    ns.assert_ended(status, 0);
    let plans = events.iter().filter(|e| e["kind"] == "plan").count();
    assert_eq!(plans, 1, "one shutdown: {events:?}");
    let stopped = events
        .iter()
        .find(|e| e["kind"] == "unit_stopped")
        .expect("unit_stopped");
    assert_eq!(stopped["outcome"], "graceful", "{stopped}");
    each_exited_after_one_sigterm(&read_log(&ns.fixture_log(&slow)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(took >= Duration::from_millis(1500), "not forced: {took:?}");
    assert_eq!(
        ns.log_count("SIGTERM: shutting down"),
        1,
        "{}",
        ns.pid1_log()
    );
    assert_eq!(ns.log_count("shutdown: begins"), 1, "{}", ns.pid1_log());
    println!(
        "4 SIGTERMs, one graceful shutdown in {:.2}s, exit 0",
        seconds(took)
    );
}

/// A SIGTERM as soon as the server's socket exists (a container stopped
/// right after its start) is an ordinary clean shutdown: the server, with
/// nothing to stop yet, exits at once, and so does zinit_pid1 (0).
#[test]
fn a_sigterm_right_after_the_start_is_a_clean_shutdown() {
    let _serial = one_at_a_time();
    for round in 1..=5 {
        let mut ns = Ns::new("p1-early");
        ns.spawn(&[]);
        assert!(
            until(Duration::from_secs(15), || ns.socket.exists()),
            "the socket appears: {}",
            ns.pid1_log()
        );
        ns.signal_pid1(Signal::SIGTERM);
        let status = ns.wait_end(Duration::from_secs(10));
        ns.assert_ended(status, 0);
        println!("round {round}: SIGTERM at the start, exit 0");
    }
}

// ----- exit codes ------------------------------------------------------

/// zinit_pid1 in a PID namespace of its own with `args` (nothing else);
/// its exit code and stderr.
fn pid1_alone(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let out = zinit_tests::output_within(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(zinit_tests::workspace_bin("zinit_pid1"))
            .args(args)
            .stdin(Stdio::null()),
        Duration::from_secs(20),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Exit 1 when zinit_pid1 cannot start (no config directory, no
/// zinit_server, a zinit_server it cannot execute), 2 on a usage error (an
/// unknown flag, a bound above 30 s); each says why.
#[test]
fn it_exits_1_when_it_cannot_start_and_2_on_a_usage_error() {
    let _serial = one_at_a_time();
    let tag = Tag::new("p1-start");
    let conf = tag.dir().join("conf");
    std::fs::create_dir_all(&conf).expect("conf");
    let socket = tag.dir().join("s.sock");
    let missing_conf = tag.dir().join("no-such-conf");
    let missing_server = tag.dir().join("no-such-server");
    let not_executable = tag.dir().join("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\n").expect("file");
    std::fs::set_permissions(
        &not_executable,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let cases: [(&str, Vec<&std::ffi::OsStr>, i32, String); 5] = [
        (
            "no config directory",
            vec![os("--config"), missing_conf.as_os_str()],
            1,
            format!(
                "the config directory {} does not exist",
                missing_conf.display()
            ),
        ),
        (
            "no zinit_server",
            vec![
                os("--config"),
                conf.as_os_str(),
                os("--server"),
                missing_server.as_os_str(),
            ],
            1,
            format!("--server {}: no such file", missing_server.display()),
        ),
        (
            "a zinit_server it cannot execute",
            vec![
                os("--config"),
                conf.as_os_str(),
                os("--server"),
                not_executable.as_os_str(),
            ],
            1,
            format!("starting {}", not_executable.display()),
        ),
        (
            "an unknown flag",
            vec![os("--config"), conf.as_os_str(), os("--no-such-flag")],
            2,
            "--no-such-flag".to_string(),
        ),
        (
            "a bound above 30 s",
            vec![os("--config"), conf.as_os_str(), os("--timeout"), os("60s")],
            2,
            "the bound is".to_string(),
        ),
    ];
    for (case, mut args, code, says) in cases {
        args.extend([os("--socket"), socket.as_os_str()]);
        let (got, stderr) = pid1_alone(&args);
        assert_eq!(got, Some(code), "{case}: {stderr}");
        assert!(stderr.contains(&says), "{case}: {says:?} in {stderr}");
        assert!(!socket.exists(), "{case}: no server ran");
        println!("{case}: exit {code}");
    }
}

/// The cgroup v1 freezer's group for one test: a process in it cannot be
/// killed (it is stopped in the kernel, in state D) until thawed. Thawed
/// and removed on drop.
struct Frozen {
    dir: PathBuf,
}

impl Frozen {
    const FREEZER: &str = "/sys/fs/cgroup/freezer";

    /// Whether this host has the v1 freezer.
    fn available() -> bool {
        Path::new(Self::FREEZER).join("tasks").exists()
    }

    /// Freezes `pid` (a pid as seen from here) in a group called `name`.
    fn freeze(name: &str, pid: i32) -> Self {
        let dir = Path::new(Self::FREEZER).join(name);
        std::fs::create_dir(&dir).expect("a freezer group");
        let frozen = Self { dir };
        std::fs::write(frozen.dir.join("cgroup.procs"), pid.to_string()).expect("join it");
        std::fs::write(frozen.dir.join("freezer.state"), "FROZEN").expect("freeze");
        assert!(
            until(Duration::from_secs(5), || std::fs::read_to_string(
                frozen.dir.join("freezer.state")
            )
            .is_ok_and(|s| s.trim() == "FROZEN")),
            "pid {pid} frozen"
        );
        frozen
    }

    fn thaw(&self) {
        let _ = std::fs::write(self.dir.join("freezer.state"), "THAWED");
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.thaw();
        until(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists()
        });
    }
}

/// A shutdown that leaves a process (one the kernel will not let die: frozen
/// by the cgroup v1 freezer) ends with the server's exit 3, and zinit_pid1
/// passes it on: exit 3, ahead of its own sweep's finding.
#[test]
fn a_shutdown_that_leaves_a_process_exits_3() {
    let _serial = one_at_a_time();
    if !Frozen::available() {
        zinit_tests::skip("no cgroup v1 freezer here: no process the server cannot end");
        return;
    }
    let mut ns = Ns::new("p1-left");
    let stuck = ns.service("stuck", "", "shutdown_timeout: 1\n");
    ns.start(&[]);
    ns.wait_running(&[&stuck]);
    let inner = ns.main_pid(&stuck) as i32;
    let pid = ns
        .outer_pid(inner)
        .expect("the unit's process, seen from here");
    let frozen = Frozen::freeze(ns.tag.as_str(), pid);
    ns.signal_pid1(Signal::SIGTERM);
    // The namespace cannot end while the process is frozen: thaw it once
    // zinit_pid1 has said its code.
    let said = until(Duration::from_secs(35), || {
        ns.pid1_log().contains("zinit_pid1: exiting with code")
    });
    frozen.thaw();
    assert!(said, "zinit_pid1 finished: {}", ns.pid1_log());
    let status = ns.wait_end(Duration::from_secs(10));
    drop(frozen);
    ns.assert_ended(status, 3);
    let log = ns.pid1_log();
    assert!(log.contains("finished its shutdown (exit code 3)"), "{log}");
    println!("a process the shutdown could not end: the server exited 3, zinit_pid1 too");
}

/// Asserts that the namespace ended with `code`, nothing of the tag left,
/// and the log said the code (the socket may stay: the server was killed).
fn assert_code(ns: &Ns, status: ExitStatus, code: i32) {
    assert_eq!(
        status.code(),
        Some(code),
        "zinit_pid1's exit (unshare: {status:?}); log:\n{}",
        ns.pid1_log()
    );
    let left = zinit_tests::tagged_trees(ns.tag.as_str());
    assert!(left.is_empty(), "processes left: {left:?}");
    assert!(
        ns.pid1_log()
            .contains(&format!("zinit_pid1: exiting with code {code}")),
        "{}",
        ns.pid1_log()
    );
}

/// Exit 7 when the server dies during the shutdown (here: SIGKILL while a
/// unit is still stopping); the final sweep still ends what it left.
#[test]
fn a_server_that_dies_during_the_shutdown_exits_7() {
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-died");
    let slow = ns.service(
        "slow",
        "--width 2 --term-delay-ms 5000",
        "shutdown_timeout: 10\n",
    );
    ns.start(&[]);
    ns.wait_running(&[&slow]);
    let server = ns.server_pid().expect("server");
    ns.signal_pid1(Signal::SIGTERM);
    assert!(
        until(Duration::from_secs(5), || read_log(&ns.fixture_log(&slow))
            .iter()
            .any(|l| l.kind == "signal")),
        "the shutdown runs"
    );
    send(server, Signal::SIGKILL);
    let status = ns.wait_end(Duration::from_secs(20));
    assert_code(&ns, status, 7);
    let log = ns.pid1_log();
    assert!(
        log.contains("ended (killed by SIGKILL) before its shutdown finished"),
        "{log}"
    );
    println!("the server died mid-shutdown: exit 7, the sweep ended the rest");
}

/// Exit 7 when the server finishes its shutdown but exits with a code
/// zinit_pid1 does not know (here a stand-in server: it writes the
/// after-shutdown file on SIGTERM, then exits 9).
#[test]
fn a_server_that_exits_with_another_code_exits_7() {
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-code9");
    let script = ns.tag.dir().join("exit-9-server");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             while [ $# -gt 0 ]; do [ \"$1\" = --after-shutdown-file ] && after=$2; shift; done\n\
             trap 'kill $child; echo poweroff > \"$after\"; exit 9' TERM\n\
             {} 1000 &\nchild=$!\nwait\n",
            ns.tag.program("sleep").display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    ns.spawn(&["--server", script.to_str().expect("utf-8")]);
    // Its sleep runs once the trap is in place.
    assert!(
        until(Duration::from_secs(10), || zinit_tests::tagged_pids(
            ns.tag.as_str()
        )
        .iter()
        .any(|&p| comm_of(p).as_deref() == Some("sleep"))),
        "the stand-in server runs"
    );
    ns.signal_pid1(Signal::SIGTERM);
    let status = ns.wait_end(Duration::from_secs(20));
    assert_code(&ns, status, 7);
    assert!(
        ns.pid1_log()
            .contains("finished its shutdown (exit code 9)"),
        "{}",
        ns.pid1_log()
    );
    println!("the server exited 9 after its shutdown: exit 7");
}

/// Exit 7 when the shutdown is asked for while the server is not running
/// (killed, and waiting for its restart): the services it left are still
/// ended by the final sweep, and no new server is started.
#[test]
fn a_shutdown_while_the_server_waits_for_its_restart_exits_7() {
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-norun");
    let svc = ns.service("svc", "--width 1", "");
    ns.start(&[]);
    ns.wait_running(&[&svc]);
    // Killed twice, so that the second restart waits 1 s: time to ask.
    let first = ns.server_info_pid().expect("server");
    send(ns.server_pid().expect("server"), Signal::SIGKILL);
    wait_new_server(&ns, first);
    send(ns.server_pid().expect("server"), Signal::SIGKILL);
    assert!(
        until(Duration::from_secs(5), || ns
            .pid1_log()
            .contains("restarting it in 1s")),
        "{}",
        ns.pid1_log()
    );
    ns.signal_pid1(Signal::SIGTERM);
    let status = ns.wait_end(Duration::from_secs(20));
    assert_code(&ns, status, 7);
    let log = ns.pid1_log();
    assert!(log.contains("zinit_server was not running"), "{log}");
    assert_eq!(
        ns.log_count("zinit_pid1: restarted"),
        1,
        "no server started after the shutdown was asked for: {log}"
    );
    println!("a shutdown while the server waited for its restart: exit 7");
}

// ----- the after-shutdown file -------------------------------------------

/// The after-shutdown file (where the server says `poweroff` or `reboot`)
/// lives in a directory of zinit_pid1's own: new, root's, mode 0700 (no
/// other user can plant or read the answer), given to the server, and
/// removed when zinit_pid1 ends.
#[test]
fn the_after_shutdown_file_lives_in_a_private_directory() {
    use std::os::unix::fs::MetadataExt;
    let _serial = one_at_a_time();
    let mut ns = Ns::new("p1-after");
    ns.start(&[]);
    let log = ns.pid1_log();
    let file = PathBuf::from(
        log.lines()
            .find_map(|l| l.strip_prefix("zinit_pid1: the server's after-shutdown file: "))
            .unwrap_or_else(|| panic!("the log names the file: {log}")),
    );
    let dir = file.parent().expect("a directory").to_path_buf();
    let meta = std::fs::symlink_metadata(&dir).expect("the directory exists");
    assert!(meta.file_type().is_dir(), "a directory, not a link");
    assert_eq!(meta.mode() & 0o7777, 0o700, "{}", dir.display());
    assert_eq!(meta.uid(), 0, "root's");
    assert!(
        dir.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("zinit_pid1.")),
        "{}",
        dir.display()
    );
    assert!(!file.exists(), "no answer before a shutdown");
    let server = ns.server_pid().expect("server");
    let cmdline = std::fs::read(format!("/proc/{server}/cmdline")).expect("cmdline");
    let expected = format!("--after-shutdown-file\u{0}{}\u{0}", file.display());
    assert!(
        String::from_utf8_lossy(&cmdline).contains(&expected),
        "the server is told the file"
    );
    ns.signal_pid1(Signal::SIGTERM);
    let status = ns.wait_end(Duration::from_secs(20));
    ns.assert_ended(status, 0);
    assert!(
        ns.pid1_log()
            .contains("finished its shutdown (exit code 0)"),
        "the server answered through the file: {}",
        ns.pid1_log()
    );
    assert!(!dir.exists(), "{} removed", dir.display());
}
