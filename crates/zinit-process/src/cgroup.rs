//! cgroup v2: one cgroup per unit, so a whole tree is tracked even after
//! double forks, frozen at once and killed at once.
//!
//! The v2 hierarchy is found through `/proc/self/mountinfo` (on a hybrid host
//! it is often `/sys/fs/cgroup/unified`), never by a fixed path. Unit cgroups
//! live under a directory named after this process, inside this process's own
//! cgroup, so parallel servers (and parallel tests) never collide. Setting
//! `ZINIT_CGROUP=off` forces the fallback to process groups and the
//! subreaper.

use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The environment variable that disables cgroups when set to `off`.
pub const CGROUP_ENV: &str = "ZINIT_CGROUP";

/// Unit cgroups are named `unit-NAME`.
const UNIT_PREFIX: &str = "unit-";

/// The unit cgroups in `dir` (a server's cgroup directory), by unit name.
pub fn unit_cgroups(dir: &Path) -> Vec<(String, Cgroup)> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e
                .file_name()
                .to_str()?
                .strip_prefix(UNIT_PREFIX)?
                .to_string();
            Some((name, Cgroup::at(e.path())))
        })
        .collect()
}

/// Where this process creates its unit cgroups.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    dir: PathBuf,
}

impl CgroupRoot {
    /// Finds a writable cgroup v2 hierarchy and creates (or reuses) the
    /// directory of the server known as `identity`, `zinit.IDENTITY`, in
    /// this process's own cgroup. `None` when there is none, it is not
    /// writable, or `ZINIT_CGROUP=off`.
    ///
    /// The identity must be the same for a server and its successor (so the
    /// successor finds its units) and different for two servers that run at
    /// once (a pid is not: servers in different PID namespaces share pids).
    pub fn detect(identity: &str) -> Option<Self> {
        Self::detect_as(&format!("zinit.{identity}"))
    }

    /// As [`CgroupRoot::detect`], with the directory named `name` instead of
    /// after this process (tests use one per test).
    pub fn detect_as(name: &str) -> Option<Self> {
        if std::env::var(CGROUP_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("off")) {
            return None;
        }
        let mount = find_v2_mount(&fs::read_to_string("/proc/self/mountinfo").ok()?)?;
        let own = own_v2_path(&fs::read_to_string("/proc/self/cgroup").ok()?)?;
        let parent = mount.join(own.trim_start_matches('/'));
        let dir = parent.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(_) => return None,
        }
        // Creating is not enough: joining must work too (it fails when the
        // parent distributes controllers while holding processes).
        let probe = Cgroup::at(dir.join("probe"));
        let usable = fs::create_dir(&probe.path).is_ok()
            && fs::OpenOptions::new()
                .write(true)
                .open(probe.path.join("cgroup.procs"))
                .is_ok();
        let _ = fs::remove_dir(&probe.path);
        if !usable {
            let _ = fs::remove_dir(&dir);
            return None;
        }
        Some(Self { dir })
    }

    /// The unit cgroup directory another server left at `path`, to take
    /// its units over; `None` if it is not a directory.
    pub fn existing(path: impl Into<PathBuf>) -> Option<Self> {
        let dir = path.into();
        dir.is_dir().then_some(Self { dir })
    }

    /// Thaws every unit cgroup here (and the directory itself): a server
    /// that died between freezing and killing leaves them frozen. Returns
    /// how many were frozen.
    pub fn thaw_all(&self) -> usize {
        let mut thawed = 0;
        let mut all: Vec<Cgroup> = self.units().into_iter().map(|(_, c)| c).collect();
        all.push(Cgroup::at(&self.dir));
        for cgroup in all {
            if fs::read_to_string(cgroup.path.join("cgroup.freeze")).is_ok_and(|v| v.trim() == "1")
            {
                thawed += usize::from(cgroup.set_frozen(false).is_ok());
            }
        }
        thawed
    }

    /// The directory that holds this process's unit cgroups.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates (or reuses, when empty) the cgroup of the unit `name`, as
    /// `unit-NAME`: the prefix keeps unit names from ever clashing with the
    /// kernel's interface files (`cgroup.procs`, `memory.max`, ...).
    pub fn create(&self, name: &str) -> io::Result<Cgroup> {
        if name.is_empty() || name.contains('/') || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a valid unit name for a cgroup"),
            ));
        }
        let path = self.dir.join(format!("{UNIT_PREFIX}{name}"));
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        // Opened now, so that this cgroup's reads never list the processes
        // of one that takes its path after it is removed.
        let cgroup = Cgroup::at(path);
        if let Ok(file) = fs::File::open(cgroup.path.join("cgroup.procs")) {
            *cgroup.procs.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
        }
        Ok(cgroup)
    }

    /// The unit cgroups under this directory, by unit name.
    pub fn units(&self) -> Vec<(String, Cgroup)> {
        unit_cgroups(&self.dir)
    }

    /// Removes this process's directory (and any empty unit cgroup left in it).
    pub fn remove(&self) -> io::Result<()> {
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = fs::remove_dir(entry.path());
                }
            }
        }
        fs::remove_dir(&self.dir)
    }
}

/// One cgroup v2 directory.
///
/// Its `cgroup.procs` is opened once (when [`CgroupRoot::create`] makes
/// it, else at the first read) and shared by the clones: re-reading an open `cgroup.procs` costs a twentieth of opening
/// it again (the open, not the read, is what a kernfs file charges), and a
/// stop reads it at every level. The open file also keeps naming this
/// cgroup: once the directory is removed it reads as empty, even if another
/// cgroup is created at the same path.
#[derive(Debug, Clone)]
pub struct Cgroup {
    path: PathBuf,
    /// `cgroup.procs`, open for reading once it has been read; reads hold
    /// the lock, so two of them never interleave on the one file position.
    procs: Arc<Mutex<Option<fs::File>>>,
}

impl PartialEq for Cgroup {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for Cgroup {}

impl Cgroup {
    /// A cgroup at an existing path.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            procs: Arc::default(),
        }
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pids in the cgroup (zombies are not listed by the kernel); none
    /// once the cgroup is removed.
    pub fn procs(&self) -> io::Result<Vec<i32>> {
        let path = || self.path.join("cgroup.procs");
        let context =
            |e: io::Error| io::Error::new(e.kind(), format!("reading {}: {e}", path().display()));
        let mut held = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let file = match held.as_mut() {
            Some(file) => file,
            None => match fs::File::open(path()) {
                Ok(file) => held.insert(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(context(e)),
            },
        };
        let mut text = Vec::new();
        match read_from_start(file, &mut text) {
            Ok(()) => {}
            // The cgroup this file belongs to was removed.
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENODEV as i32) => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(context(e)),
        }
        Ok(String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }

    /// Opens `cgroup.procs` for writing, before a fork, so that the child can
    /// join with a single `write(2)` and no allocation.
    pub fn open_procs(&self) -> io::Result<OwnedFd> {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.procs"))?;
        Ok(file.into())
    }

    /// Opens `cgroup.events` for an [`crate::watch::ExitWatcher`].
    pub fn open_events(&self) -> io::Result<fs::File> {
        fs::File::open(self.path.join("cgroup.events"))
    }

    fn read_events(&self) -> io::Result<(bool, bool)> {
        let mut text = String::new();
        fs::File::open(self.path.join("cgroup.events"))?.read_to_string(&mut text)?;
        Ok(parse_events(&text))
    }

    /// Whether any live process is in the cgroup (or below it).
    pub fn populated(&self) -> io::Result<bool> {
        Ok(self.read_events()?.0)
    }

    /// Whether the cgroup is completely frozen.
    pub fn frozen(&self) -> io::Result<bool> {
        Ok(self.read_events()?.1)
    }

    /// Freezes (`true`) or thaws (`false`) every process in the cgroup.
    pub fn set_frozen(&self, frozen: bool) -> io::Result<()> {
        fs::write(
            self.path.join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
        )
    }

    /// Freezes the cgroup and waits (bounded) until the kernel says it is frozen.
    pub async fn freeze(&self, bound: Duration) -> io::Result<bool> {
        self.set_frozen(true)?;
        let deadline = tokio::time::Instant::now() + bound;
        let mut watcher = crate::watch::ExitWatcher::new()?;
        watcher.watch_cgroup(self.open_events()?)?;
        loop {
            if self.frozen()? || !self.populated()? {
                return Ok(true);
            }
            if watcher.wait(deadline).await?.is_timeout() {
                return self.frozen();
            }
        }
    }

    /// SIGKILLs every process in the cgroup at once (`cgroup.kill`, Linux 5.14).
    pub fn kill(&self) -> io::Result<()> {
        fs::write(self.path.join("cgroup.kill"), "1")
    }

    /// Removes the cgroup directory (it must be empty).
    pub fn remove(&self) -> io::Result<()> {
        fs::remove_dir(&self.path)
    }

    /// The cgroup a process is in, as a path under the v2 mount.
    pub fn of_process(pid: i32) -> Option<String> {
        own_v2_path(&fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
    }
}

/// Reads an open kernfs file from its start to its end into `out`
/// (positioned reads: a read from offset 0 makes the kernel generate the
/// content afresh).
fn read_from_start(file: &fs::File, out: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match file.read_at(&mut chunk, out.len() as u64) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

fn parse_events(text: &str) -> (bool, bool) {
    let mut populated = false;
    let mut frozen = false;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("populated", v)) => populated = v.trim() == "1",
            Some(("frozen", v)) => frozen = v.trim() == "1",
            _ => {}
        }
    }
    (populated, frozen)
}

/// The mount point of the cgroup2 filesystem in a `mountinfo` text.
fn find_v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount))
    })
}

/// The v2 path (`0::/path`) in a `/proc/PID/cgroup` text.
fn own_v2_path(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::").map(|p| p.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v2_mount_on_a_hybrid_host() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        assert_eq!(
            find_v2_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(find_v2_mount("1 2 0:1 / / rw - ext4 /dev/vda rw"), None);
    }

    #[test]
    fn reads_the_v2_path_among_v1_lines() {
        let text = "6:freezer:/\n4:memory:/x\n0::/user.slice/a.scope\n";
        assert_eq!(own_v2_path(text).as_deref(), Some("/user.slice/a.scope"));
        assert_eq!(own_v2_path("4:memory:/x\n"), None);
    }

    #[test]
    fn parses_events() {
        assert_eq!(parse_events("populated 1\nfrozen 0\n"), (true, false));
        assert_eq!(parse_events("populated 0\nfrozen 1\n"), (false, true));
    }
}
