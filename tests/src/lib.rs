//! Helpers shared by zinit's integration tests: unique tags, reaping by tag,
//! starting the fixture and reading what it reports and logs.
//!
//! Every process a test starts carries its [`Tag`] in its argv; dropping the
//! tag kills (by pid, after re-checking the tag) and waits out everything
//! that still carries it, pass or fail, and removes the test's directory.

pub mod foreign;

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
    /// `/tmp/TAG.XXXXXX`: its name carries the tag, so paths in argv do.
    dir: tempfile::TempDir,
    cgroups: std::sync::Mutex<Vec<CgroupRoot>>,
}

impl Tag {
    /// A new tag, unique across tests and test processes.
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{name}-{}-{n}", tag_prefix(), std::process::id());
        Self {
            dir: scratch_dir(&tag),
            tag,
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
            None => {
                assert!(
                    !host_allows_cgroups(),
                    "this host has a writable cgroup v2 hierarchy, but cgroup mode did not activate"
                );
                skip("cgroup mode: no writable cgroup v2 here; checked without cgroups only");
            }
        }
        modes
    }

    /// Takes over a tag made by another process (the probe, started by a
    /// test): same text, its own scratch directory.
    pub fn adopt(tag: &str) -> Self {
        Self {
            dir: scratch_dir(tag),
            tag: tag.to_string(),
            cgroups: std::sync::Mutex::default(),
        }
    }

    /// The tag text.
    pub fn as_str(&self) -> &str {
        &self.tag
    }

    /// This test's scratch directory (removed when the tag drops).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The live (not zombie) processes carrying this tag.
    pub fn pids(&self) -> Vec<i32> {
        tagged_pids(&self.tag)
    }

    /// A program we did not write, under a name that carries the tag: a
    /// symbolic link `<tag dir>/NAME` to the system's `NAME` (found in
    /// `PATH`), so its argv[0] carries the tag while it runs unchanged.
    pub fn program(&self, name: &str) -> PathBuf {
        let link = self.dir().join(name);
        if !link.exists() {
            let target = which(name).unwrap_or_else(|| panic!("{name} is not installed"));
            std::os::unix::fs::symlink(target, &link).expect("link the program");
        }
        link
    }
}

/// A fresh directory `/tmp/TAG.XXXXXX`, readable by every user (tests run
/// programs as `nobody` in it).
fn scratch_dir(tag: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(&format!("{tag}."))
        .tempdir()
        .expect("create the test's directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the test's directory");
    dir
}

/// The monotonic clock (CLOCK_MONOTONIC) in nanoseconds, the clock of the
/// fixture's log and the probe's reports.
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// The start of every tag of this test run: `zt-` and, under `cargo xtask
/// test`, the run's id (`ZINIT_TEST_RUN`), so that the run's leak check can
/// find everything any of its tests started, and nothing of another run.
pub fn tag_prefix() -> String {
    match std::env::var("ZINIT_TEST_RUN") {
        Ok(run) if !run.is_empty() => format!("zt-{run}-"),
        _ => "zt-".to_string(),
    }
}

/// Records that the running test could not check (part of) its property on
/// this host, and why: printed, and appended to the run's skip log, which
/// `cargo xtask test` counts in its summary (`N skipped`) and fails on where
/// the host can run everything (root, cgroup v2). The test is the current
/// thread's name, which libtest sets to the test's.
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    skip_named(thread.name().unwrap_or("unnamed test"), reason);
}

/// [`skip`] for a test that is not a libtest test (a scenario).
pub fn skip_named(test: &str, reason: &str) {
    use std::io::Write;
    eprintln!("SKIPPED {test}: {reason}");
    let line = format!("{test}\t{reason}\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skip_log())
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(e) = written {
        panic!(
            "cannot record the skip of {test} in {}: {e}",
            skip_log().display()
        );
    }
}

/// The run's skip log: `ZINIT_SKIP_LOG`, else `target/zinit-test-skips.log`.
pub fn skip_log() -> PathBuf {
    match std::env::var_os("ZINIT_SKIP_LOG") {
        Some(path) => PathBuf::from(path),
        None => bin_dir()
            .parent()
            .map(|target| target.join("zinit-test-skips.log"))
            .unwrap_or_else(|| std::env::temp_dir().join("zinit-test-skips.log")),
    }
}

fn first_number(text: &str) -> u32 {
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number")
}

/// Waits for a child (at most 10 s, failing the test after that): for a
/// child that should already be ending, as after a stop.
pub async fn reaped(child: &mut Child) -> zinit_process::spawn::ExitStatus {
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap_or_else(|_| panic!("pid {} was not reaped within 10 s", child.pid()))
        .expect("wait")
}

/// Runs `command` to its end and collects its output, like
/// `Command::output`, but fails the test if it takes longer than `bound`
/// (the command is killed first).
pub fn output_within(command: &mut std::process::Command, bound: Duration) -> std::process::Output {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    output_within_child(child, bound)
}

/// Waits for a started child and collects what it still has to say on its
/// piped streams, failing the test (after killing it) past `bound`.
pub fn output_within_child(child: std::process::Child, bound: Duration) -> std::process::Output {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(bound) {
        Ok(output) => output.unwrap_or_else(|e| panic!("waiting for pid {pid}: {e}")),
        Err(_) => {
            reap_pid(pid);
            panic!("pid {pid} did not end within {bound:?}");
        }
    }
}

/// The first executable `name` in `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// What a running process was handed, read from `/proc` (for checking what
/// zinit passes to programs it did not write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inherited {
    /// Blocked signals (`SigBlk`).
    pub sigblk: u64,
    /// Ignored signals (`SigIgn`).
    pub sigign: u64,
    /// The umask.
    pub umask: u32,
    /// Open file descriptors.
    pub fds: Vec<i32>,
    /// Where each descriptor points.
    pub fd_targets: Vec<String>,
    /// The soft limit on open files.
    pub nofile: u64,
    /// The environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// The working directory.
    pub cwd: PathBuf,
    /// Real uid, real gid and supplementary groups.
    pub ids: (u32, u32, Vec<u32>),
}

impl Inherited {
    /// Reads the state of `pid` once it has settled: it is asleep (a
    /// program still in its dynamic loader holds the libraries it is
    /// loading open) and two reads agree. Bounded to 5 s.
    pub fn of(pid: i32) -> Self {
        let end = Instant::now() + Duration::from_secs(5);
        let mut last = Self::read(pid);
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let asleep = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('S'))
            });
            let now = Self::read(pid);
            if (asleep && now == last) || Instant::now() > end {
                return now;
            }
            last = now;
        }
    }

    fn read(pid: i32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::trim)
                .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
                .to_string()
        };
        let hex = |key: &str| u64::from_str_radix(&field(key), 16).expect("hex mask");
        let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("fd dir")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        fds.sort_unstable();
        let fd_targets = fds
            .iter()
            .filter_map(|fd| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok())
            .map(|p| p.display().to_string())
            .collect();
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
        let nofile = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|n| n.parse().ok())
            .expect("Max open files");
        let env = std::fs::read(format!("/proc/{pid}/environ"))
            .expect("environ")
            .split(|&b| b == 0)
            .filter(|v| !v.is_empty())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        Self {
            sigblk: hex("SigBlk:"),
            sigign: hex("SigIgn:"),
            umask: u32::from_str_radix(&field("Umask:"), 8).expect("umask"),
            fds,
            fd_targets,
            nofile,
            env,
            cwd: std::fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd"),
            ids: (
                first_number(&field("Uid:")),
                first_number(&field("Gid:")),
                field("Groups:")
                    .split_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect(),
            ),
        }
    }

    /// The value of an environment variable.
    pub fn var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    /// Asserts the clean start zinit promises: no blocked or ignored
    /// signal, only descriptors 0–2, umask 022.
    pub fn assert_clean(&self, what: &str) {
        assert_eq!(
            self.sigblk, 0,
            "{what}: blocked signals {:016x}",
            self.sigblk
        );
        assert_eq!(
            self.sigign, 0,
            "{what}: ignored signals {:016x}",
            self.sigign
        );
        assert_eq!(
            self.fds,
            [0, 1, 2],
            "{what}: inherited descriptors {:?}",
            self.fd_targets
        );
        assert_eq!(self.umask, 0o022, "{what}: umask {:o}", self.umask);
    }
}

/// The bit of `signal` in a `SigBlk`/`SigIgn` mask.
pub fn sig_bit(signal: zinit_process::Signal) -> u64 {
    1 << (signal as i32 - 1)
}

impl Drop for Tag {
    /// Fails the test if it left a process carrying the tag running (after
    /// killing it and everything below it): a test cleans up after itself,
    /// and a zinit that leaves a process behind fails the test that saw it.
    fn drop(&mut self) {
        let leaked: Vec<String> = tagged_trees(&self.tag)
            .into_iter()
            .map(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                format!(
                    "{pid} {}",
                    text.trim_end().chars().take(160).collect::<String>()
                )
            })
            .collect();
        let survivors = reap_tagged(&self.tag, Duration::from_secs(10));
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
        if std::thread::panicking() {
            return;
        }
        assert!(
            survivors.is_empty(),
            "processes tagged {} survived SIGKILL: {survivors:?}",
            self.tag
        );
        assert!(
            leaked.is_empty(),
            "the test left {} process(es) tagged {} running (now killed):\n{}",
            leaked.len(),
            self.tag,
            leaked.join("\n")
        );
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

/// The processes carrying `tag` and all their descendants (a program we did
/// not write may start workers whose argv it rewrote, as nginx does), except
/// this process and its ancestors.
pub fn tagged_trees(tag: &str) -> Vec<i32> {
    let roots = tagged_pids(tag);
    if roots.is_empty() {
        return roots;
    }
    let Ok(table) = zinit_process::ProcessTable::snapshot(zinit_process::Detail::Basic) else {
        return roots;
    };
    let me = std::process::id() as i32;
    let mut exclude = table.ancestors(me);
    exclude.push(me);
    let mut all: Vec<i32> = roots.clone();
    for root in roots {
        all.extend(table.descendants(root).into_iter().map(|(pid, _)| pid));
    }
    all.retain(|pid| !exclude.contains(pid) && table.get(*pid).is_some_and(|p| !p.is_zombie()));
    all.sort_unstable();
    all.dedup();
    all
}

/// SIGKILLs one process (found by the caller, by its tag) and waits
/// (bounded) until it is gone or a zombie.
pub fn reap_pid(pid: i32) {
    if let Some(id) = zinit_process::ProcessId::of(pid)
        && let Ok(handle) = zinit_process::ProcessHandle::open(id)
    {
        let _ = handle.signal(zinit_process::Signal::SIGKILL);
    }
    let end = Instant::now() + Duration::from_secs(5);
    while handle_alive(pid) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn handle_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

/// Kills every process carrying `tag`, and their descendants (thawing and
/// continuing them first), and waits, bounded, until none is left; what
/// survived the bound.
pub fn reap_tagged(tag: &str, bound: Duration) -> Vec<i32> {
    let end = Instant::now() + bound;
    loop {
        let pids = tagged_trees(tag);
        if pids.is_empty() || Instant::now() > end {
            return pids;
        }
        for pid in pids {
            // Found just above as tagged or below a tagged process; a pid is
            // only reused after it is reaped.
            if let Some(id) = zinit_process::ProcessId::of(pid)
                && let Ok(handle) = zinit_process::ProcessHandle::open(id)
            {
                let _ = handle.signal(zinit_process::Signal::SIGKILL);
                let _ = handle.signal(zinit_process::Signal::SIGCONT);
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
    /// The tag it carries.
    pub tag: String,
}

impl Tree {
    /// The pids it reported.
    pub fn pids(&self) -> Vec<i32> {
        self.procs.iter().map(|p| p.pid).collect()
    }

    /// Ends a tree the test only looked at: SIGKILLs every process it
    /// reported and waits (bounded) until they are gone, failing if one is not.
    pub async fn kill(mut self) {
        let pids = self.pids();
        for &pid in &pids {
            if let Some(id) = zinit_process::ProcessId::of(pid)
                && let Ok(handle) = zinit_process::ProcessHandle::open(id)
            {
                let _ = handle.signal(zinit_process::Signal::SIGKILL);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let left = wait_gone(&pids, &self.tag, Duration::from_secs(5));
        assert!(
            left.is_empty(),
            "fixture processes survived SIGKILL: {left:?}"
        );
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
        tag: tag.as_str().to_string(),
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
    let root = nix::unistd::geteuid().is_root();
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

/// The path of the workspace binary `name`. The first call in a test
/// process runs `cargo build` for the binaries the tests drive, so a test
/// never runs a stale server or CLI (`cargo test -p zinit-tests` alone does
/// not rebuild other packages' binaries). With `ZINIT_BIN_DIR` set, the
/// binaries come from there instead (an installed release).
pub fn workspace_bin(name: &str) -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    if let Some(dir) = std::env::var_os("ZINIT_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        // `--workspace`: the features every other build of the workspace
        // uses, so nothing is rebuilt with another feature set.
        command.args([
            "build",
            "--quiet",
            "--workspace",
            "--bin",
            "zinit_server",
            "--bin",
            "zinit",
            "--bin",
            "zinit_ui",
            "--bin",
            "zinit_pid1",
        ]);
        let status = command.status().expect("run cargo build");
        assert!(
            status.success(),
            "building zinit_server, zinit, zinit_ui and zinit_pid1"
        );
    });
    bin_dir().join(name)
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
    /// What it logged on stderr so far, line by line.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts a server on `<tag dir>/s.sock` for `conf` and waits (at most
    /// 10 s) until it answers.
    pub async fn start(tag: &Tag, conf: &Path, extra: &[&str]) -> Self {
        let command = Command::new(workspace_bin("zinit_server"));
        Self::start_command(tag, conf, extra, command).await
    }

    /// As [`Server::start`], but the server is handed what a careless
    /// parent leaves behind, as a shell or an init script would: a
    /// descriptor without close-on-exec (descriptor 7, open on the file
    /// [`Server::LEAKED`] in the tag's directory), a soft open-file limit of
    /// 1024, secrets and debug switches in its environment, and a working
    /// directory of its own. Nothing of it may reach what zinit starts.
    /// `env` is added to the server's environment.
    pub async fn start_careless(
        tag: &Tag,
        conf: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let cwd = tag.dir().join("server-cwd");
        std::fs::create_dir_all(&cwd).expect("server cwd");
        let command = Command::new("/bin/sh")
            .arg("-c")
            .arg(
                "ulimit -Sn 1024; exec 7>>\"$1\"; cd \"$2\"; shift 2; \
                 ZT_SECRET=leaked RUST_BACKTRACE=1 exec \"$0\" \"$@\"",
            )
            .arg(workspace_bin("zinit_server"))
            .arg(tag.dir().join(Self::LEAKED))
            .arg(cwd);
        let command = env
            .iter()
            .fold(command, |command, (k, v)| command.env(k, v));
        Self::start_command(tag, conf, extra, command).await
    }

    /// The name of the file [`Server::start_careless`] leaks a descriptor to.
    pub const LEAKED: &str = "leaked-descriptor";

    async fn start_command(tag: &Tag, conf: &Path, extra: &[&str], command: Command) -> Self {
        let socket = tag.dir().join("s.sock");
        let mut command = command
            .arg("--config")
            .arg(conf)
            .arg("--socket")
            .arg(&socket);
        if !extra.contains(&"--log-level") {
            command = command.args(["--log-level", "warn"]);
        }
        let mut command = command.args(extra).stderr(Output::Piped);
        if std::env::var_os("ZINIT_TEST_SERVER_LOG").is_some() {
            command = command.stderr(Output::Inherit);
        }
        let mut child = command.spawn().expect("spawn zinit_server");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        if let Some(stderr) = child.take_stderr() {
            // Keep the server's stderr flowing (and visible on failure).
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(std::fs::File::from(stderr))
                    .lines()
                    .map_while(Result::ok)
                {
                    eprintln!("[zinit_server] {line}");
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
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
            log,
        }
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// Waits (bounded to 10 s) until the server's log has a line containing
    /// `text`; returns the log.
    pub fn wait_log(&self, text: &str) -> String {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(text) {
                return log;
            }
            assert!(
                Instant::now() < end,
                "no {text:?} in the server log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The main pid of a running unit, from `zinit --json status`.
    pub fn pid_of(&self, name: &str) -> i32 {
        let out = self.zinit(&["--json", "status", name]);
        assert_eq!(out.code, 0, "status {name}: {}", out.stderr);
        out.json()["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("{name} has no pid: {}", out.stdout)) as i32
    }

    /// Waits until every unit in `names` is running, through `zinit start`,
    /// which returns once a unit runs (a no-op for one already running).
    pub fn wait_running(&self, names: &[&str]) {
        for name in names {
            let out = self.zinit(&["start", name]);
            assert_eq!(
                out.code, 0,
                "{name} does not run: {}{}",
                out.stdout, out.stderr
            );
        }
    }

    /// Waits (bounded to 15 s) until the unit `name` is in `state`, checking
    /// its status.
    pub fn wait_state(&self, name: &str, state: &str) -> serde_json::Value {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let out = self.zinit(&["--json", "status", name]);
            if out.code == 0 && out.json()["state"] == state {
                return out.json();
            }
            assert!(
                Instant::now() < end,
                "{name} is not {state}: {}{}",
                out.stdout,
                out.stderr
            );
            std::thread::sleep(Duration::from_millis(20));
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

    /// Every line of standard output parsed as JSON (a stream's objects).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// The last line of standard output parsed as JSON: the result of a
    /// command that streams progress first (`stop`, `remove`, `job run`).
    pub fn last_json(&self) -> serde_json::Value {
        self.json_lines()
            .pop()
            .unwrap_or_else(|| panic!("no JSON line: {}{}", self.stdout, self.stderr))
    }
}

/// Runs `zinit --socket SOCKET ARGS` (bounded to 60 s).
pub fn run_cli(socket: &Path, args: &[&str]) -> CliOutput {
    run_cli_within(socket, args, Duration::from_secs(60))
}

/// Runs `zinit --socket SOCKET ARGS`, killed after `bound` (a hang fails
/// the test with code -1 instead of hanging it).
pub fn run_cli_within(socket: &Path, args: &[&str], bound: Duration) -> CliOutput {
    let socket = socket.to_str().expect("utf-8 socket path");
    let mut all = vec!["--socket", socket];
    all.extend_from_slice(args);
    run_zinit(&all, bound)
}

/// Runs `zinit ARGS` (no socket given), killed after `bound`.
pub fn run_zinit(args: &[&str], bound: Duration) -> CliOutput {
    let child = std::process::Command::new(workspace_bin("zinit"))
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
    let output = match rx.recv_timeout(bound) {
        Ok(output) => output.expect("zinit output"),
        Err(_) => {
            // The child is not reaped until wait_with_output returns.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            rx.recv().expect("reaped").expect("zinit output")
        }
    };
    CliOutput {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
