//! The record a server keeps of what a successor needs to take over: each
//! unit's name, kind, config digest, whether it is wanted, its state, its
//! main process (pid and start time), its cgroup and the other processes
//! recorded as its members, and its stop settings; the server's own
//! identity and cgroup directories; and a shutdown in progress with its
//! deadline.
//!
//! It is one small JSON file beside the socket (`SOCKET.state`), rewritten
//! atomically (a new file created exclusively, then renamed over the old
//! one) whenever it changes, and read back without following links, only
//! if this user owns it, bounded in size, and with every value range-checked.

use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The format's version.
const VERSION: u32 = 1;
/// The largest record read back.
const MAX_SIZE: u64 = 16 * 1024 * 1024;
/// The largest pid Linux hands out (`pid_max` is at most 2^22).
const MAX_PID: i32 = 1 << 22;

/// A process as recorded: pid and start time (clock ticks after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordedProcess {
    pub pid: i32,
    pub start_time: u64,
}

/// A job as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordedJob {
    pub id: u64,
    pub from: Option<String>,
    pub exec: Vec<String>,
}

/// One unit as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordedUnit {
    pub name: String,
    /// Set for a job.
    pub job: Option<RecordedJob>,
    /// The digest of its service file's text.
    pub digest: String,
    /// Whether it should run (false once stopped by request).
    pub wanted: bool,
    /// Its state, as `zinit list` shows it.
    pub state: String,
    /// Its main process, while it has an instance.
    pub main: Option<RecordedProcess>,
    /// Its cgroup, if it has one.
    pub cgroup: Option<PathBuf>,
    /// Every other process recorded as its member.
    pub members: Vec<RecordedProcess>,
    /// Its stop signal (a number).
    pub stop_signal: i32,
    /// Its stop timeout in milliseconds.
    pub stop_timeout_ms: u64,
    /// `tree`, `group` or `main`.
    pub stop_mode: String,
    /// The FIFOs its output goes to, by name in the streams directory.
    #[serde(default)]
    pub streams: Vec<String>,
}

/// A shutdown in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordedShutdown {
    /// When its deadline passes, in milliseconds since the Unix epoch.
    pub deadline_unix_ms: u64,
    /// Whether a reboot follows it.
    #[serde(default)]
    pub reboot: bool,
}

/// Everything a successor needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub version: u32,
    /// The server that wrote it.
    pub server: RecordedProcess,
    /// Its unit cgroup directories (its own, and any it took over).
    pub cgroup_roots: Vec<PathBuf>,
    pub shutdown: Option<RecordedShutdown>,
    /// The number of the last job.
    pub last_job: u64,
    pub units: Vec<RecordedUnit>,
    /// The boot and the PID namespace it was written in (see [`run_id`]):
    /// a record from another boot or another container run is stale.
    #[serde(default)]
    pub run: String,
}

/// This boot (`/proc/sys/kernel/random/boot_id`) and this PID namespace
/// (`/proc/self/ns/pid`): a container started again after its runtime
/// killed it has a new PID namespace, and its `/run` may still hold the
/// record of the run before.
pub(crate) fn run_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|l| l.display().to_string())
        .unwrap_or_default();
    format!("{} {ns}", boot.trim())
}

impl Record {
    /// An empty record of this server.
    pub fn of_this_server(cgroup_roots: Vec<PathBuf>) -> Self {
        let pid = std::process::id() as i32;
        Self {
            version: VERSION,
            server: RecordedProcess {
                pid,
                start_time: zinit_process::ProcessId::of(pid)
                    .map(|id| id.start_time)
                    .unwrap_or(0),
            },
            cgroup_roots,
            shutdown: None,
            last_job: 0,
            units: Vec::new(),
            run: run_id(),
        }
    }

    /// Checks every value a successor will act on.
    fn validate(&self) -> Result<(), String> {
        if self.version != VERSION {
            return Err(format!(
                "version {} (this server reads {VERSION})",
                self.version
            ));
        }
        let pid_ok = |p: &RecordedProcess| p.pid > 1 && p.pid < MAX_PID;
        if !pid_ok(&self.server) {
            return Err(format!("server pid {}", self.server.pid));
        }
        let path_ok = |p: &Path| {
            p.is_absolute()
                && !p
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
        };
        if let Some(bad) = self.cgroup_roots.iter().find(|p| !path_ok(p)) {
            return Err(format!("cgroup directory {}", bad.display()));
        }
        for unit in &self.units {
            let name_ok = crate::config::valid_name(&unit.name);
            if !name_ok {
                return Err(format!("unit name {:?}", unit.name));
            }
            if unit.main.as_ref().is_some_and(|p| !pid_ok(p))
                || unit.members.iter().any(|p| !pid_ok(p))
            {
                return Err(format!("a pid of {}", unit.name));
            }
            if unit.cgroup.as_deref().is_some_and(|p| !path_ok(p)) {
                return Err(format!("the cgroup of {}", unit.name));
            }
            if zinit_process::Signal::try_from(unit.stop_signal).is_err()
                || unit.stop_timeout_ms > crate::config::MAX_STOP_TIMEOUT.as_millis() as u64
                || !matches!(unit.stop_mode.as_str(), "tree" | "group" | "main")
            {
                return Err(format!("the stop settings of {}", unit.name));
            }
        }
        Ok(())
    }

    /// What is left of a recorded shutdown's deadline (`None`: no shutdown).
    pub fn shutdown_left(&self) -> Option<Duration> {
        let deadline = UNIX_EPOCH + Duration::from_millis(self.shutdown?.deadline_unix_ms);
        Some(
            deadline
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    }
}

/// Milliseconds since the Unix epoch, `after` from now.
pub(crate) fn unix_ms_in(after: Duration) -> u64 {
    (SystemTime::now() + after)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Reads the record at `path`: `Ok(None)` when there is none, an error
/// saying why when it cannot be trusted.
pub(crate) fn read(path: &Path) -> Result<Option<Record>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        // Never through a link, and never blocking on a FIFO planted there.
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path);
    let mut file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(format!(
            "{} belongs to uid {}, not to this server's user",
            path.display(),
            meta.uid()
        ));
    }
    if meta.len() > MAX_SIZE {
        return Err(format!(
            "{} is larger than {MAX_SIZE} bytes",
            path.display()
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let record: Record = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a valid record: {e}", path.display()))?;
    record
        .validate()
        .map_err(|e| format!("{} has an invalid {e}", path.display()))?;
    Ok(Some(record))
}

/// Keeps the record at a path up to date, writing only what changed. The
/// actor hands each new record over and goes on: a writer thread of its own
/// serialises and writes the newest one (records that arrive while it
/// writes replace each other), so neither the JSON nor the disk ever holds
/// up the actor.
#[derive(Debug)]
pub(crate) struct RecordFile {
    path: PathBuf,
    shared: std::sync::Arc<Writer>,
}

/// What the actor and the writer thread share.
#[derive(Debug, Default)]
struct Writer {
    pending: std::sync::Mutex<Pending>,
    wake: std::sync::Condvar,
    /// Held while the file is written or removed.
    io: std::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Pending {
    record: Option<Record>,
    /// The record was removed: nothing is written again.
    removed: bool,
    /// The actor is gone: the writer ends once it wrote what is pending.
    closed: bool,
}

impl Writer {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, path: &Path) {
        // A keyed hash of the last record written (not its bytes: a record
        // of thousands of processes is hundreds of KiB of JSON).
        let keys = std::hash::RandomState::new();
        let mut last: Option<u64> = None;
        loop {
            let record = {
                let mut pending = self.pending();
                loop {
                    if pending.removed {
                        return;
                    }
                    if let Some(record) = pending.record.take() {
                        break record;
                    }
                    if pending.closed {
                        return;
                    }
                    pending = self.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
                }
            };
            let mut hash = Hashing(keys.build_hasher());
            if serde_json::to_writer(&mut hash, &record).is_err() {
                continue;
            }
            let hash = hash.0.finish();
            if last == Some(hash) {
                continue;
            }
            let _io = self.io.lock().unwrap_or_else(|e| e.into_inner());
            if self.pending().removed {
                return;
            }
            let written = crate::files::write_atomically_with(path, 0o600, |file| {
                serde_json::to_writer(file, &record).map_err(std::io::Error::other)
            });
            match written {
                Ok(()) => last = Some(hash),
                Err(e) => tracing::error!("cannot write the record {}: {e}", path.display()),
            }
        }
    }
}

impl RecordFile {
    pub fn new(path: PathBuf) -> Self {
        let shared = std::sync::Arc::new(Writer::default());
        let writer = shared.clone();
        let at = path.clone();
        let spawned = std::thread::Builder::new()
            .name("zinit-record".into())
            .stack_size(256 * 1024)
            .spawn(move || writer.run(&at));
        if let Err(e) = spawned {
            tracing::error!("cannot start the record's writer thread: {e}");
        }
        Self { path, shared }
    }

    /// Hands `record` to the writer, which writes it if it differs from
    /// the last one written (unless a newer one replaces it first).
    pub fn save(&mut self, record: Record) {
        self.shared.pending().record = Some(record);
        self.shared.wake.notify_one();
    }

    /// Removes the record (after a clean exit: nothing to take over); no
    /// write is made after this, not even one already handed over.
    pub fn remove(&self) {
        {
            let mut pending = self.shared.pending();
            pending.removed = true;
            pending.record = None;
        }
        self.shared.wake.notify_one();
        let _io = self.shared.io.lock().unwrap_or_else(|e| e.into_inner());
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for RecordFile {
    fn drop(&mut self) {
        self.shared.pending().closed = true;
        self.shared.wake.notify_one();
    }
}

/// A writer that only hashes what it is given.
struct Hashing(std::hash::DefaultHasher);

impl std::io::Write for Hashing {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        Hasher::write(&mut self.0, bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn unit(name: &str) -> RecordedUnit {
        RecordedUnit {
            name: name.to_string(),
            job: None,
            digest: "abc".to_string(),
            wanted: true,
            state: "running".to_string(),
            main: Some(RecordedProcess {
                pid: 1234,
                start_time: 99,
            }),
            cgroup: Some(PathBuf::from("/sys/fs/cgroup/zinit.x/unit-web")),
            members: vec![],
            stop_signal: 15,
            stop_timeout_ms: 10_000,
            stop_mode: "tree".to_string(),
            streams: vec!["web.4321.1.out".to_string()],
        }
    }

    fn record() -> Record {
        Record {
            version: VERSION,
            server: RecordedProcess {
                pid: 4321,
                start_time: 7,
            },
            cgroup_roots: vec![PathBuf::from("/sys/fs/cgroup/zinit.x")],
            shutdown: None,
            last_job: 3,
            units: vec![unit("web")],
            run: run_id(),
        }
    }

    fn write(dir: &Path, name: &str, record: &Record) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_vec(record).expect("json")).expect("write");
        path
    }

    #[test]
    fn a_record_written_is_read_back_the_same() {
        let dir = tempfile::tempdir().expect("dir");
        let path = write(dir.path(), "ok.state", &record());
        assert_eq!(read(&path), Ok(Some(record())));
        assert_eq!(read(&dir.path().join("none.state")), Ok(None));
    }

    #[test]
    fn values_a_successor_would_act_on_are_range_checked() {
        let dir = tempfile::tempdir().expect("dir");
        /// (case, the change, what the error must say)
        type Case = (&'static str, Box<dyn Fn(&mut Record)>, &'static str);
        let cases: Vec<Case> = vec![
            (
                "version",
                Box::new(|r| r.version = 99),
                "invalid version 99",
            ),
            (
                "server pid 1",
                Box::new(|r| r.server.pid = 1),
                "server pid 1",
            ),
            (
                "a huge pid",
                Box::new(|r| r.units[0].main.as_mut().expect("main").pid = 1 << 30),
                "a pid of web",
            ),
            (
                "a member pid 0",
                Box::new(|r| {
                    r.units[0].members.push(RecordedProcess {
                        pid: 0,
                        start_time: 1,
                    })
                }),
                "a pid of web",
            ),
            (
                "a relative cgroup root",
                Box::new(|r| r.cgroup_roots = vec![PathBuf::from("zinit.x")]),
                "cgroup directory zinit.x",
            ),
            (
                "a cgroup that climbs out",
                Box::new(|r| r.units[0].cgroup = Some(PathBuf::from("/sys/fs/cgroup/../../etc"))),
                "the cgroup of web",
            ),
            (
                "a name with a slash",
                Box::new(|r| r.units[0].name = "../etc".to_string()),
                "unit name \"../etc\"",
            ),
            (
                "an unknown signal",
                Box::new(|r| r.units[0].stop_signal = 200),
                "the stop settings of web",
            ),
            (
                "a timeout beyond the cap",
                Box::new(|r| r.units[0].stop_timeout_ms = u64::MAX),
                "the stop settings of web",
            ),
            (
                "an unknown stop mode",
                Box::new(|r| r.units[0].stop_mode = "everything".to_string()),
                "the stop settings of web",
            ),
        ];
        for (case, change, why) in cases {
            let mut bad = record();
            change(&mut bad);
            let path = write(dir.path(), "bad.state", &bad);
            let error = read(&path).expect_err(case);
            assert!(error.contains(why), "{case}: {error}");
        }
    }

    #[test]
    fn a_record_that_is_not_the_servers_own_regular_file_is_not_read() {
        let dir = tempfile::tempdir().expect("dir");
        let real = write(dir.path(), "real.state", &record());

        // A symbolic link to a record is not followed.
        let link = dir.path().join("link.state");
        std::os::unix::fs::symlink(&real, &link).expect("link");
        assert!(read(&link).is_err(), "a link was followed");

        // Not a regular file.
        let fifo = dir.path().join("fifo.state");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
        let error = read(&fifo).expect_err("a fifo");
        assert!(error.contains("not a regular file"), "{error}");

        // Larger than the bound (a sparse file: nothing is read).
        let big = dir.path().join("big.state");
        std::fs::File::create(&big)
            .and_then(|f| f.set_len(MAX_SIZE + 1))
            .expect("big");
        let error = read(&big).expect_err("too big");
        assert!(error.contains("larger than"), "{error}");

        // Not JSON.
        let garbage = dir.path().join("garbage.state");
        std::fs::write(&garbage, b"{ not a record").expect("garbage");
        let error = read(&garbage).expect_err("garbage");
        assert!(error.contains("not a valid record"), "{error}");

        // Another user's file (only root can make one to test with).
        if nix::unistd::geteuid().is_root() {
            let theirs = write(dir.path(), "theirs.state", &record());
            std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
            nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(65534)), None)
                .expect("chown");
            let error = read(&theirs).expect_err("another user's record");
            assert!(error.contains("belongs to uid 65534"), "{error}");
        }
    }
}
