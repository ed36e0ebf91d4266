//! The process table: a snapshot of `/proc`, and the trees within it.
//!
//! A [`ProcessTable`] is read once and then queried; it never re-reads
//! `/proc` behind the caller's back. Reading `cmdline` and `exe` can block on
//! a process in uninterruptible sleep, so they are only read with
//! [`Detail::Full`], and async callers go through [`ProcessTable::load`],
//! which reads on a blocking thread with a time bound.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Duration;

/// `PF_KTHREAD` in `/proc/PID/stat`'s flags: the task is a kernel thread.
const PF_KTHREAD: u64 = 0x0020_0000;

/// How much of each process to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// `stat` and the owner only: enough for trees, groups and states.
    Basic,
    /// Also `cmdline` and `exe` (may block on uninterruptible processes).
    Full,
}

/// A process state, as the kernel reports it in `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    /// `R`
    Running,
    /// `S`
    Sleeping,
    /// `D`: uninterruptible sleep; signals wait until it returns.
    Uninterruptible,
    /// `T` or `t`: stopped by a signal or a tracer.
    Stopped,
    /// `Z`: exited, not yet reaped by its parent.
    Zombie,
    /// `X`, `I` or anything else the kernel reports.
    Other(char),
}

impl ProcState {
    fn from_char(c: char) -> Self {
        match c {
            'R' => Self::Running,
            'S' => Self::Sleeping,
            'D' => Self::Uninterruptible,
            'T' | 't' => Self::Stopped,
            'Z' => Self::Zombie,
            other => Self::Other(other),
        }
    }

    /// The single-letter code of `/proc/PID/stat`.
    pub fn code(self) -> char {
        match self {
            Self::Running => 'R',
            Self::Sleeping => 'S',
            Self::Uninterruptible => 'D',
            Self::Stopped => 'T',
            Self::Zombie => 'Z',
            Self::Other(c) => c,
        }
    }
}

/// One process in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// Process group id.
    pub pgid: i32,
    /// Session id.
    pub sid: i32,
    /// Start time in clock ticks after boot: with the pid, the process's identity.
    pub start_time: u64,
    /// Scheduler state.
    pub state: ProcState,
    /// The command name (at most 15 bytes, as the kernel keeps it).
    pub comm: String,
    /// Whether this is a kernel thread.
    pub kernel_thread: bool,
    /// The executable's path (`Detail::Full` only; " (deleted)" when replaced).
    pub exe: Option<PathBuf>,
    /// The arguments (`Detail::Full` only; empty for zombies and kernel threads).
    pub cmdline: Vec<String>,
}

impl ProcessInfo {
    /// The arguments joined by single spaces, as process filters see them.
    pub fn cmdline_string(&self) -> String {
        self.cmdline.join(" ")
    }

    /// Whether the process has exited and waits to be reaped.
    pub fn is_zombie(&self) -> bool {
        self.state == ProcState::Zombie
    }
}

/// A snapshot of every process in `/proc`.
#[derive(Debug, Clone, Default)]
pub struct ProcessTable {
    processes: HashMap<i32, ProcessInfo>,
    children: HashMap<i32, Vec<i32>>,
}

impl ProcessTable {
    /// Reads every process from `/proc`. Processes that vanish mid-read are skipped.
    pub fn snapshot(detail: Detail) -> io::Result<Self> {
        let mut processes = HashMap::new();
        let mut buf = Vec::with_capacity(512);
        for pid in pids()? {
            if let Some(info) = read_process(pid, detail, &mut buf) {
                processes.insert(pid, info);
            }
        }
        Ok(Self::from_processes(processes))
    }

    /// Reads only the processes in `pids` (those that still exist).
    pub fn of_pids(pids: impl IntoIterator<Item = i32>, detail: Detail) -> Self {
        let mut buf = Vec::with_capacity(512);
        let processes = pids
            .into_iter()
            .filter_map(|pid| Some((pid, read_process(pid, detail, &mut buf)?)))
            .collect();
        Self::from_processes(processes)
    }

    /// Reads the processes in `pids` and every ancestor of each, up to PID 1:
    /// the ancestors and the depths of those processes are complete in the
    /// table, and nothing else of `/proc` is read.
    pub fn of_pids_and_ancestors(pids: impl IntoIterator<Item = i32>, detail: Detail) -> Self {
        let mut buf = Vec::with_capacity(512);
        let mut processes: HashMap<i32, ProcessInfo> = HashMap::new();
        let mut next: Vec<i32> = pids.into_iter().collect();
        while let Some(pid) = next.pop() {
            if pid <= 0 || processes.contains_key(&pid) {
                continue;
            }
            if let Some(info) = read_process(pid, detail, &mut buf) {
                next.push(info.ppid);
                processes.insert(pid, info);
            }
        }
        Self::from_processes(processes)
    }

    /// Reads the table on a blocking thread, giving up after `bound`, so that
    /// a process stuck in uninterruptible sleep cannot stall an async caller.
    pub async fn load(detail: Detail, bound: Duration) -> io::Result<Self> {
        let read = tokio::task::spawn_blocking(move || Self::snapshot(detail));
        match tokio::time::timeout(bound, read).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(io::Error::other(join)),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("reading /proc took longer than {bound:?}"),
            )),
        }
    }

    /// Builds a table from already-read processes (also used by tests).
    pub fn from_processes(processes: HashMap<i32, ProcessInfo>) -> Self {
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for info in processes.values() {
            children.entry(info.ppid).or_default().push(info.pid);
        }
        for list in children.values_mut() {
            list.sort_unstable();
        }
        Self {
            processes,
            children,
        }
    }

    /// The process with this pid, if it was alive at the snapshot.
    pub fn get(&self, pid: i32) -> Option<&ProcessInfo> {
        self.processes.get(&pid)
    }

    /// Every process in the snapshot, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &ProcessInfo> {
        self.processes.values()
    }

    /// How many processes the snapshot holds.
    pub fn len(&self) -> usize {
        self.processes.len()
    }

    /// Whether the snapshot is empty (it never is on a live system).
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    /// Direct children of `pid`.
    pub fn children(&self, pid: i32) -> &[i32] {
        self.children.get(&pid).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every descendant of `pid` (not `pid` itself) with its depth below it
    /// (children are at depth 1), sorted deepest first.
    pub fn descendants(&self, pid: i32) -> Vec<(i32, usize)> {
        let mut out = Vec::new();
        let mut frontier = vec![(pid, 0usize)];
        while let Some((parent, depth)) = frontier.pop() {
            for &child in self.children(parent) {
                // A pid cannot be its own ancestor, but guard against a torn read.
                if child != pid {
                    out.push((child, depth + 1));
                    frontier.push((child, depth + 1));
                }
            }
        }
        sort_deepest_first(&mut out);
        out
    }

    /// The ancestors of `pid`, nearest first, ending at PID 1 (or where the
    /// chain leaves the snapshot).
    pub fn ancestors(&self, pid: i32) -> Vec<i32> {
        let mut out = Vec::new();
        let mut current = pid;
        while let Some(info) = self.processes.get(&current) {
            if info.ppid <= 0 || out.contains(&info.ppid) {
                break;
            }
            out.push(info.ppid);
            current = info.ppid;
        }
        out
    }
}

/// The pids listed in `/proc` now.
pub fn pids() -> io::Result<Vec<i32>> {
    Ok(fs::read_dir("/proc")?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect())
}

/// The pids of every descendant of `pid` (zombies included), from the
/// kernel's lists of each thread's children (`/proc/PID/task/TID/children`)
/// instead of a read of the whole table: the cost follows the tree, not the
/// machine. `None` when this kernel has no such lists (it was built without
/// `CONFIG_PROC_CHILDREN`). Like any read of `/proc`, a process that forks
/// or exits meanwhile may or may not be in it.
pub fn descendant_pids(pid: i32) -> Option<Vec<i32>> {
    if !std::path::Path::new("/proc/thread-self/children").exists() {
        return None;
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::from([pid]);
    let mut parents = vec![pid];
    let mut buf = Vec::with_capacity(512);
    while let Some(parent) = parents.pop() {
        // A parent that is gone has no children left to list.
        let Ok(tasks) = fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if read_whole(task.path().join("children"), &mut buf).is_err() {
                continue;
            }
            for child in String::from_utf8_lossy(&buf)
                .split_ascii_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                if seen.insert(child) {
                    out.push(child);
                    parents.push(child);
                }
            }
        }
    }
    Some(out)
}

/// Sorts `(pid, depth)` pairs deepest first, then by pid for a stable order.
pub fn sort_deepest_first(list: &mut [(i32, usize)]) {
    list.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
}

/// Reads one process; `None` when it vanished or is unreadable. With
/// [`Detail::Basic`] this is one `open`, one `read` and one `close` of
/// `/proc/PID/stat`, which never waits on the process (unlike `cmdline` and
/// `exe`, which take its memory map's lock).
pub fn read_process(pid: i32, detail: Detail, buf: &mut Vec<u8>) -> Option<ProcessInfo> {
    use std::fmt::Write as _;
    let mut path = String::with_capacity(32);
    let _ = write!(path, "/proc/{pid}/stat");
    read_whole(&path, buf).ok()?;
    let mut info = parse_stat(pid, buf)?;
    if detail == Detail::Full && !info.kernel_thread {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        info.exe = fs::read_link(dir.join("exe")).ok();
        if read_whole(dir.join("cmdline"), buf).is_ok() {
            info.cmdline = split_cmdline(buf);
        }
    }
    Some(info)
}

/// Reads a small `/proc` file into `buf` (replacing its content). A `/proc`
/// file that fits hands over everything in its first `read`, so a short
/// read ends it without the extra `read` that `read_to_end` makes.
fn read_whole(path: impl AsRef<std::path::Path>, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut file = fs::File::open(path)?;
    buf.clear();
    if buf.capacity() < 1024 {
        buf.reserve(1024);
    }
    loop {
        let len = buf.len();
        let spare = buf.capacity() - len;
        buf.resize(buf.capacity(), 0);
        let n = match file.read(&mut buf[len..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                buf.truncate(len);
                continue;
            }
            Err(e) => {
                buf.truncate(len);
                return Err(e);
            }
        };
        buf.truncate(len + n);
        if n == 0 || n < spare {
            return Ok(());
        }
        buf.reserve(buf.capacity());
    }
}

/// Reads the start time of `pid` (field 22 of `/proc/PID/stat`).
pub fn read_start_time(pid: i32) -> Option<u64> {
    let mut buf = Vec::with_capacity(512);
    read_process(pid, Detail::Basic, &mut buf).map(|info| info.start_time)
}

fn split_cmdline(raw: &[u8]) -> Vec<String> {
    raw.split(|&b| b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

/// Parses the content of `/proc/PID/stat`. The command name may contain
/// spaces and parentheses, so the fields are split after the *last* `)`.
pub fn parse_stat(pid: i32, raw: &[u8]) -> Option<ProcessInfo> {
    // The name is any bytes (kept lossily); the rest is ASCII.
    let open = raw.iter().position(|&b| b == b'(')?;
    let close = raw.iter().rposition(|&b| b == b')')?;
    let comm = String::from_utf8_lossy(raw.get(open + 1..close)?).into_owned();
    // The fields after the name, from field 3 (the state) on.
    let mut fields = std::str::from_utf8(raw.get(close + 1..)?)
        .ok()?
        .split_ascii_whitespace();
    let state = ProcState::from_char(fields.next()?.chars().next()?);
    let ppid = fields.next()?.parse().ok()?; // 4
    let pgid = fields.next()?.parse().ok()?; // 5
    let sid = fields.next()?.parse().ok()?; // 6
    let flags: u64 = fields.nth(2)?.parse().ok()?; // 9
    let start_time = fields.nth(12)?.parse().ok()?; // 22
    Some(ProcessInfo {
        pid,
        ppid,
        pgid,
        sid,
        start_time,
        state,
        comm,
        kernel_thread: flags & PF_KTHREAD != 0,
        exe: None,
        cmdline: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4211 (my (odd) name) S 1 4211 4211 0 -1 4194560 151 0 0 0 0 0 0 0 20 0 1 0 12345 1000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";

    #[test]
    fn parses_stat_with_parentheses_and_spaces_in_the_name() {
        let info = parse_stat(4211, STAT.as_bytes()).expect("parses");
        assert_eq!(info.comm, "my (odd) name");
        assert_eq!((info.ppid, info.pgid, info.sid), (1, 4211, 4211));
        assert_eq!(info.start_time, 12345);
        assert_eq!(info.state, ProcState::Sleeping);
        assert!(!info.kernel_thread);
    }

    #[test]
    fn recognises_kernel_threads_by_flag() {
        let stat = STAT.replace("4194560", &(0x0020_0040u64).to_string());
        assert!(
            parse_stat(7, stat.as_bytes())
                .expect("parses")
                .kernel_thread
        );
    }

    #[test]
    fn rejects_truncated_stat() {
        assert!(parse_stat(1, b"1 (init) S 0").is_none());
        assert!(parse_stat(1, b"").is_none());
    }

    fn info(pid: i32, ppid: i32) -> ProcessInfo {
        let mut p = parse_stat(pid, STAT.as_bytes()).expect("parses");
        p.pid = pid;
        p.ppid = ppid;
        p
    }

    #[test]
    fn descendants_come_deepest_first_with_depths() {
        let table = ProcessTable::from_processes(
            [(10, 1), (11, 10), (12, 10), (13, 11), (14, 13), (20, 1)]
                .into_iter()
                .map(|(pid, ppid)| (pid, info(pid, ppid)))
                .collect(),
        );
        assert_eq!(
            table.descendants(10),
            vec![(14, 3), (13, 2), (11, 1), (12, 1)]
        );
        assert_eq!(table.ancestors(14), vec![13, 11, 10, 1]);
    }

    #[test]
    fn the_live_table_contains_this_process_with_its_cmdline() {
        let table = ProcessTable::snapshot(Detail::Full).expect("reads /proc");
        let me = table
            .get(std::process::id() as i32)
            .expect("self is listed");
        assert!(!me.cmdline.is_empty());
        assert!(me.exe.is_some());
        assert!(table.iter().any(|p| p.kernel_thread) || table.get(2).is_none());
    }
}
