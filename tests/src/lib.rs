//! Helpers shared by zinit's integration tests: unique tags, reaping by tag,
//! starting the fixture and reading what it reports and logs.
//!
//! Every process a test starts carries its [`Tag`] in its argv; dropping the
//! tag kills (by pid, after re-checking the tag) and waits out everything
//! that still carries it, pass or fail, and removes the test's directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use zinit_process::spawn::Output;
use zinit_process::{Cgroup, CgroupRoot, Child, Command};

pub mod web;

/// A unique tag for one test's processes, and a scratch directory.
#[derive(Debug)]
pub struct Tag {
    tag: String,
    dir: PathBuf,
    cgroups: std::sync::Mutex<Vec<CgroupRoot>>,
}

impl Tag {
    /// A new tag, unique across tests and test processes.
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("zt-{name}-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&tag);
        std::fs::create_dir_all(&dir).expect("create test dir");
        Self {
            tag,
            dir,
            cgroups: std::sync::Mutex::default(),
        }
    }

    /// The cgroup roots to test with, named after this tag (removed when
    /// the tag drops): this host's v2 hierarchy where it is usable, and
    /// always the fallback without one.
    pub fn cgroup_modes(&self) -> Vec<Option<CgroupRoot>> {
        let mut modes = vec![None];
        match CgroupRoot::detect_as(&self.tag) {
            Some(root) => {
                self.cgroups.lock().expect("lock").push(root.clone());
                modes.insert(0, Some(root));
            }
            None => assert!(
                !host_allows_cgroups(),
                "this host has a writable cgroup v2 hierarchy, but cgroup mode did not activate"
            ),
        }
        modes
    }

    /// Takes over a tag made by another process (the probe, started by a
    /// test): same text, its own scratch directory.
    pub fn adopt(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create test dir");
        Self {
            tag: tag.to_string(),
            dir,
            cgroups: std::sync::Mutex::default(),
        }
    }

    /// The tag text.
    pub fn as_str(&self) -> &str {
        &self.tag
    }

    /// This test's scratch directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The live (not zombie) processes carrying this tag.
    pub fn pids(&self) -> Vec<i32> {
        tagged_pids(&self.tag)
    }
}

impl Drop for Tag {
    fn drop(&mut self) {
        reap_tagged(&self.tag, Duration::from_secs(10));
        for root in self.cgroups.lock().expect("lock").drain(..) {
            // Thaw anything a failed test left frozen, then remove the tree.
            if let Ok(units) = std::fs::read_dir(root.path()) {
                for unit in units.flatten() {
                    let _ = Cgroup::at(unit.path()).set_frozen(false);
                }
            }
            if let Err(e) = root.remove() {
                eprintln!("warning: cgroup {} not removed: {e}", root.path().display());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `pid`'s argv contains `tag`, as a whole argument or inside one
/// (a path like `/tmp/TAG/s.sock`) where it is not followed by a letter or
/// digit (so `zt-x-1-1` does not match `zt-x-1-10`).
pub fn carries_tag(pid: i32, tag: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .any(|arg| contains_tag(arg, tag.as_bytes()))
        })
        .unwrap_or(false)
}

fn contains_tag(arg: &[u8], tag: &[u8]) -> bool {
    arg.windows(tag.len()).enumerate().any(|(i, window)| {
        window == tag
            && arg
                .get(i + tag.len())
                .is_none_or(|next| !next.is_ascii_alphanumeric())
    })
}

/// Live processes whose argv contains `tag` (zombies have no argv), except
/// this process and its ancestors (a probe carries its test's tag).
pub fn tagged_pids(tag: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    let mut exclude = vec![me];
    if let Ok(table) = zinit_process::ProcessTable::snapshot(zinit_process::Detail::Basic) {
        exclude.extend(table.ancestors(me));
    }
    let mut pids: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid: &i32| !exclude.contains(pid))
        .filter(|&pid: &i32| carries_tag(pid, tag))
        .collect();
    pids.sort_unstable();
    pids
}

/// Kills every process carrying `tag` (thawing and continuing it first) and
/// waits, bounded, until none is left.
pub fn reap_tagged(tag: &str, bound: Duration) {
    let end = Instant::now() + bound;
    loop {
        let pids = tagged_pids(tag);
        if pids.is_empty() || Instant::now() > end {
            if !pids.is_empty() {
                eprintln!("warning: processes tagged {tag} survived cleanup: {pids:?}");
            }
            return;
        }
        for pid in pids {
            // Checked just above; a pid is only reused after it is reaped.
            if carries_tag(pid, tag) {
                // SAFETY: plain system calls on a pid we just checked.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::kill(pid, libc::SIGCONT);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One process the fixture reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureProc {
    /// Its pid.
    pub pid: i32,
    /// Its parent when it started.
    pub ppid: i32,
    /// Its depth in the fixture's tree (root 0).
    pub depth: usize,
    /// root, node, daemon, setsid, setpgid, zombie.
    pub role: String,
}

/// A running fixture tree.
#[derive(Debug)]
pub struct Tree {
    /// The root, spawned through zinit-process.
    pub child: Child,
    /// Every process it reported at start-up.
    pub procs: Vec<FixtureProc>,
    /// Ports it bound, by kind (tcp, tcp6, udp, udp6).
    pub ports: HashMap<String, u16>,
    /// Its log file.
    pub log: PathBuf,
}

impl Tree {
    /// The pids it reported.
    pub fn pids(&self) -> Vec<i32> {
        self.procs.iter().map(|p| p.pid).collect()
    }

    /// The pids with this role.
    pub fn pids_with_role(&self, role: &str) -> Vec<i32> {
        self.procs
            .iter()
            .filter(|p| p.role == role)
            .map(|p| p.pid)
            .collect()
    }
}

/// `key=value` fields of one line.
pub fn fields(line: &str) -> HashMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect()
}

/// Starts the fixture binary (`CARGO_BIN_EXE_zinit-fixture` of the calling
/// test) with `args` plus its tag and log, in `cgroup` if given, and waits
/// (at most 20 s) until it reports ready.
pub async fn spawn_fixture(
    fixture: &str,
    tag: &Tag,
    args: &[&str],
    cgroup: Option<Cgroup>,
) -> Tree {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let log = tag.dir().join(format!("fixture-{n}.log"));
    let mut command = Command::new(fixture)
        .args(["--tag", tag.as_str(), "--log"])
        .arg(&log)
        .args(args)
        .stdout(Output::Piped);
    if let Some(cgroup) = cgroup {
        command = command.cgroup(cgroup);
    }
    let mut child = command.spawn().expect("spawn fixture");
    let stdout = child.take_stdout().expect("stdout pipe");
    let read = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let reader = std::io::BufReader::new(std::fs::File::from(stdout));
        let mut procs = Vec::new();
        for line in reader.lines() {
            let line = line.expect("read fixture stdout");
            let f = fields(&line);
            if line.starts_with("proc ") {
                procs.push(FixtureProc {
                    pid: f["pid"].parse().expect("pid"),
                    ppid: f["ppid"].parse().expect("ppid"),
                    depth: f["depth"].parse().expect("depth"),
                    role: f["role"].to_string(),
                });
            } else if line.starts_with("ready") {
                let ports = f
                    .iter()
                    .filter(|(k, _)| k.starts_with("tcp") || k.starts_with("udp"))
                    .map(|(k, v)| (k.to_string(), v.parse().expect("port")))
                    .collect();
                return (procs, ports);
            }
        }
        panic!("fixture exited before it was ready");
    });
    let (procs, ports) = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("fixture ready within 20 s")
        .expect("reader");
    Tree {
        child,
        procs,
        ports,
        log,
    }
}

/// One line of the fixture's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// start, signal or exit.
    pub kind: String,
    /// The process.
    pub pid: i32,
    /// Its depth.
    pub depth: usize,
    /// Its role.
    pub role: String,
    /// The signal (signal lines).
    pub sig: Option<String>,
    /// CLOCK_MONOTONIC, nanoseconds.
    pub t: u64,
    /// Children not yet exited when the signal arrived (signal lines).
    pub live_children: Option<usize>,
}

/// Reads the fixture's log.
pub fn read_log(path: &Path) -> Vec<LogLine> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let kind = line.split_whitespace().next()?.to_string();
            let f = fields(line);
            Some(LogLine {
                kind,
                pid: f.get("pid")?.parse().ok()?,
                depth: f.get("depth")?.parse().ok()?,
                role: f.get("role")?.to_string(),
                sig: f.get("sig").map(|s| s.to_string()),
                t: f.get("t")?.parse().ok()?,
                live_children: f.get("live_children").and_then(|n| n.parse().ok()),
            })
        })
        .collect()
}

/// Whether `pid` is gone: no such process, or the pid now belongs to a
/// process without the tag. A zombie is not gone.
pub fn is_gone(pid: i32, tag: &str) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists() || !is_tagged_or_zombie(pid, tag)
}

fn is_tagged_or_zombie(pid: i32, tag: &str) -> bool {
    if carries_tag(pid, tag) {
        return true;
    }
    // A zombie has an empty cmdline: it still counts as not gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Waits (bounded) until every pid is gone (not merely a zombie); returns
/// those still present.
pub fn wait_gone(pids: &[i32], tag: &str, bound: Duration) -> Vec<i32> {
    let end = Instant::now() + bound;
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|&p| !is_gone(p, tag)).collect();
        if left.is_empty() || Instant::now() > end {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether every pid is alive (not a zombie) and carries the tag.
pub fn all_alive(pids: &[i32], tag: &str) -> bool {
    pids.iter().all(|&p| carries_tag(p, tag))
}

/// Whether this host should give us cgroups: root, a cgroup2 mount, and no
/// `ZINIT_CGROUP=off`.
pub fn host_allows_cgroups() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.lines().any(|l| l.contains(" - cgroup2 ")));
    let off = std::env::var("ZINIT_CGROUP").is_ok_and(|v| v.eq_ignore_ascii_case("off"));
    root && mounted && !off
}

/// The directory of the workspace's built binaries (`target/debug`), found
/// from the running test executable (`target/debug/deps/NAME-HASH`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/debug/deps")
        .to_path_buf()
}

/// The path of the workspace binary `name`, built first if it is missing.
pub fn workspace_bin(name: &str) -> PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let path = bin_dir().join(name);
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "-p",
                "zinit-server",
                "-p",
                "zinit-cli",
                "-p",
                "zinit-ui",
            ])
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "building zinit_server, zinit and zinit_ui"
        );
    }
    path
}

/// A running `zinit_server` for one test, stopped (SIGTERM, then SIGKILL)
/// when dropped. Its argv carries the test's tag through its paths.
#[derive(Debug)]
pub struct Server {
    /// The server process.
    pub child: Child,
    /// Its socket.
    pub socket: PathBuf,
    /// Its config directory.
    pub conf: PathBuf,
}

impl Server {
    /// Starts a server on `<tag dir>/s.sock` for `conf` and waits (at most
    /// 10 s) until it answers.
    pub async fn start(tag: &Tag, conf: &Path, extra: &[&str]) -> Self {
        let socket = tag.dir().join("s.sock");
        let mut command = Command::new(workspace_bin("zinit_server"))
            .arg("--config")
            .arg(conf)
            .arg("--socket")
            .arg(&socket)
            .args(["--log-level", "warn"])
            .args(extra)
            .stderr(Output::Piped);
        if std::env::var_os("ZINIT_TEST_SERVER_LOG").is_some() {
            command = command.stderr(Output::Inherit);
        }
        let mut child = command.spawn().expect("spawn zinit_server");
        if let Some(stderr) = child.take_stderr() {
            // Keep the server's stderr flowing (and visible on failure).
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(std::fs::File::from(stderr))
                    .lines()
                    .map_while(Result::ok)
                {
                    eprintln!("[zinit_server] {line}");
                }
            });
        }
        let end = Instant::now() + Duration::from_secs(10);
        while !(socket.exists() && std::os::unix::net::UnixStream::connect(&socket).is_ok()) {
            assert!(
                child.try_wait().expect("poll server").is_none(),
                "zinit_server exited at start-up"
            );
            assert!(
                Instant::now() < end,
                "zinit_server did not answer within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            child,
            socket,
            conf: conf.to_path_buf(),
        }
    }

    /// Runs the `zinit` CLI against this server (bounded to 60 s).
    pub fn zinit(&self, args: &[&str]) -> CliOutput {
        run_cli(&self.socket, args)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub async fn stop(&mut self) -> Option<zinit_process::spawn::ExitStatus> {
        let _ = self.child.signal(zinit_process::Signal::SIGTERM);
        tokio::time::timeout(Duration::from_secs(35), self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = self.child.signal(zinit_process::Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(35);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > end {
                let _ = self.child.signal(zinit_process::Signal::SIGKILL);
                let reaped = Instant::now() + Duration::from_secs(5);
                while self.child.try_wait().ok().flatten().is_none() && Instant::now() < reaped {
                    std::thread::sleep(Duration::from_millis(10));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What a CLI run printed and returned.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit code (-1 if killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    /// Standard output parsed as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `zinit --socket SOCKET ARGS` (bounded to 60 s).
pub fn run_cli(socket: &Path, args: &[&str]) -> CliOutput {
    let child = std::process::Command::new(workspace_bin("zinit"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run zinit");
    let pid = child.id() as i32;
    // Read the output while waiting, so a large answer cannot fill the pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.expect("zinit output"),
        Err(_) => {
            // SAFETY: the child is not reaped until wait_with_output returns.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            rx.recv().expect("reaped").expect("zinit output")
        }
    };
    CliOutput {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
