//! The processes that belong to one spawned unit.
//!
//! With a cgroup, membership is the cgroup: nothing escapes it. Without one,
//! a unit's members are its main process, everything in its process group or
//! session, every process recorded as a member on an earlier scan (so a
//! double-forked daemon stays a member after its parent exits and it is
//! re-parented to the subreaper), and every descendant of any of those.
//! This process, its ancestors, PID 1 and kernel threads are never members.

use crate::cgroup::Cgroup;
use crate::handle::{ProcessHandle, ProcessId};
use crate::proc_table::{Detail, ProcState, ProcessInfo, ProcessTable};
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Up to this many processes are read on the caller's task: `cgroup.procs`
/// and `/proc/PID/stat` never wait on the processes they describe, and a
/// small read costs less than a trip to a blocking thread. Larger reads go
/// to a blocking thread, bounded in time.
const INLINE_READS: usize = 128;

/// A live member of a unit, as of one scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its identity.
    pub id: ProcessId,
    /// Its parent pid.
    pub ppid: i32,
    /// Distance from the main process (0), following parents within the unit;
    /// a member whose parent is not a member is at depth 1.
    pub depth: usize,
    /// Command name.
    pub comm: String,
    /// Scheduler state.
    pub state: ProcState,
}

/// A member found by [`Members::scan_for_stop`], with a handle to it when
/// the caller did not know it yet.
#[derive(Debug)]
pub struct Found {
    /// The member.
    pub member: Member,
    /// A handle opened for it (`None` for members the caller knew).
    pub handle: Option<ProcessHandle>,
}

/// The membership rule of one unit, with the identities recorded so far.
/// Clones share the recorded set, so every scan (by a monitor, a stop, a
/// stats call) adds to the same record.
#[derive(Debug, Clone)]
pub struct Members {
    root: ProcessId,
    cgroup: Option<Cgroup>,
    recorded: Arc<Mutex<HashSet<ProcessId>>>,
    /// A fixed set instead of a unit (see [`Members::fixed`]).
    fixed: Option<Arc<[(ProcessId, usize)]>>,
}

impl Members {
    /// The members of the unit whose main process is `root` (a session
    /// leader, as [`crate::Command`] makes it), in `cgroup` if it has one.
    pub fn new(root: ProcessId, cgroup: Option<Cgroup>) -> Self {
        Self {
            root,
            cgroup,
            recorded: Arc::default(),
            fixed: None,
        }
    }

    /// Exactly these processes (with their depths), as long as each lives:
    /// no descendants, no newcomers. The final sweep stops its targets
    /// through the same stop engine as a unit's processes this way.
    pub fn fixed(processes: Vec<(ProcessId, usize)>) -> Self {
        Self {
            root: ProcessId {
                pid: 0,
                start_time: 0,
            },
            cgroup: None,
            recorded: Arc::default(),
            fixed: Some(processes.into()),
        }
    }

    /// The members of a unit taken over from a server that is gone: its
    /// main process, its cgroup, and the identities recorded for it (each
    /// still needs its start time to match before it counts).
    pub fn adopted(root: ProcessId, cgroup: Option<Cgroup>, recorded: Vec<ProcessId>) -> Self {
        let members = Self::new(root, cgroup);
        members
            .recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(recorded);
        members
    }

    /// Every identity recorded as a member so far (what a later server
    /// needs to find the unit's processes without a cgroup).
    pub fn recorded(&self) -> Vec<ProcessId> {
        let mut out: Vec<ProcessId> = self
            .recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        out.sort_unstable_by_key(|id| id.pid);
        out
    }

    /// The members of a spawned child's unit.
    pub fn of_child(child: &crate::Child) -> Self {
        Self::new(child.id(), child.cgroup().cloned())
    }

    /// The same unit (sharing what was recorded) with `root` as its main
    /// process from now on: a daemon that replaced the process zinit
    /// started (recorded as a member too, so it is found without a cgroup).
    pub fn with_root(&self, root: ProcessId) -> Self {
        self.recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(root);
        Self {
            root,
            ..self.clone()
        }
    }

    /// The main process.
    pub fn root(&self) -> ProcessId {
        self.root
    }

    /// The unit's cgroup, if it has one.
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    /// Reads the members from the system now: with a cgroup only its
    /// processes are read, without one the whole table (a process group or
    /// session member can be anywhere). Blocking: async callers use
    /// [`Members::scan_async`].
    pub fn scan_now(&self) -> io::Result<Vec<Member>> {
        if let Some(fixed) = &self.fixed {
            return Ok(scan_fixed(fixed));
        }
        match &self.cgroup {
            Some(cgroup) => {
                // Read the cgroup once: its pids seed the scan and the table.
                let pids = cgroup.procs()?;
                let table = ProcessTable::of_pids(pids.iter().copied(), Detail::Basic);
                Ok(self.scan_seeded(&table, Some(pids)))
            }
            None => Ok(self.scan(&ProcessTable::snapshot(Detail::Basic)?)),
        }
    }

    /// [`Members::scan_now`] for async callers, giving up after `bound`: a
    /// small cgroup is read on this task, a large one on a blocking thread,
    /// and the whole table (without a cgroup) by the shared reader
    /// ([`crate::shared_table`]).
    pub async fn scan_async(&self, bound: Duration) -> io::Result<Vec<Member>> {
        if let Some(fixed) = &self.fixed {
            let fixed = fixed.clone();
            return off_task(fixed.len(), bound, move || Ok(scan_fixed(&fixed))).await;
        }
        let Some(cgroup) = &self.cgroup else {
            let table = crate::shared_table::fresh(bound).await?;
            return Ok(self.scan(&table));
        };
        let pids = cgroup.procs()?;
        let copy = self.clone();
        off_task(pids.len(), bound, move || {
            let table = ProcessTable::of_pids(pids.iter().copied(), Detail::Basic);
            Ok(copy.scan_seeded(&table, Some(pids)))
        })
        .await
    }

    /// Reads the members for a stop in progress and opens a handle to each
    /// one whose pid is not in `known`. With a cgroup this reads only the
    /// unit: `cgroup.procs`, then each member's `stat` once (after its pidfd
    /// is opened, so the start time read belongs to the process the pidfd
    /// holds; a pidfd whose process exits meanwhile is dropped, as it may
    /// have been read as a newcomer with its pid). Without one it reads the
    /// whole table, shared with every other unit that asks at the same time
    /// ([`crate::shared_table`]). Gives up after `bound`.
    pub async fn scan_for_stop(
        &self,
        known: HashSet<i32>,
        bound: Duration,
    ) -> io::Result<Vec<Found>> {
        if let Some(fixed) = &self.fixed {
            let members = scan_fixed(fixed);
            return off_task(members.len(), bound, move || Ok(open_new(members, &known))).await;
        }
        let Some(cgroup) = &self.cgroup else {
            let table = crate::shared_table::fresh(bound).await?;
            let members = self.scan(&table);
            let new = members
                .iter()
                .filter(|m| !known.contains(&m.id.pid))
                .count();
            return off_task(new, bound, move || Ok(open_new(members, &known))).await;
        };
        let pids = cgroup.procs()?;
        let copy = self.clone();
        off_task(pids.len(), bound, move || {
            Ok(copy.read_cgroup_members(pids, &known))
        })
        .await
    }

    /// The cgroup part of [`Members::scan_for_stop`]: `pids` were just read
    /// from `cgroup.procs`.
    fn read_cgroup_members(&self, pids: Vec<i32>, known: &HashSet<i32>) -> Vec<Found> {
        let me = std::process::id() as i32;
        let mut buf = Vec::with_capacity(512);
        let mut processes: HashMap<i32, ProcessInfo> = HashMap::with_capacity(pids.len());
        let mut pidfds: HashMap<i32, std::os::fd::OwnedFd> = HashMap::new();
        for pid in pids {
            if pid == me || pid == 1 {
                continue;
            }
            let pidfd = if known.contains(&pid) {
                None
            } else {
                match crate::sys::pidfd_open(pid) {
                    Ok(fd) => Some(fd),
                    Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ESRCH as i32) => continue,
                    // No pidfd (descriptors exhausted): a start-time handle below.
                    Err(_) => None,
                }
            };
            let Some(info) = crate::proc_table::read_process(pid, Detail::Basic, &mut buf) else {
                continue;
            };
            if info.kernel_thread || info.is_zombie() {
                continue;
            }
            if let Some(fd) = pidfd {
                if !crate::handle::pidfd_alive(&fd) {
                    continue;
                }
                pidfds.insert(pid, fd);
            }
            processes.insert(pid, info);
        }
        let table = ProcessTable::from_processes(processes);
        let set: HashSet<i32> = table.iter().map(|p| p.pid).collect();
        let members = self.members_of(&table, &set);
        members
            .into_iter()
            .map(|member| {
                let handle = if known.contains(&member.id.pid) {
                    None
                } else {
                    Some(match pidfds.remove(&member.id.pid) {
                        Some(fd) => ProcessHandle::from_pidfd(member.id, fd),
                        None => ProcessHandle::by_start_time(member.id),
                    })
                };
                Found { member, handle }
            })
            .collect()
    }

    /// The live (not zombie) members in `table`, deepest first, recording
    /// them for later scans.
    pub fn scan(&self, table: &ProcessTable) -> Vec<Member> {
        if let Some(fixed) = &self.fixed {
            return scan_fixed(fixed);
        }
        let cgroup_pids = self.cgroup.as_ref().map(|c| c.procs().unwrap_or_default());
        self.scan_seeded(table, cgroup_pids)
    }

    /// [`Members::scan`] with the cgroup's pids already read.
    fn scan_seeded(&self, table: &ProcessTable, cgroup_pids: Option<Vec<i32>>) -> Vec<Member> {
        let protected = protected_pids(table);
        let mut set: HashSet<i32> = HashSet::new();
        let mut seeds: Vec<i32> = Vec::new();
        let is_same = |id: &ProcessId| {
            table
                .get(id.pid)
                .is_some_and(|p| p.start_time == id.start_time)
        };
        if let Some(pids) = cgroup_pids {
            seeds.extend(pids);
        } else {
            if is_same(&self.root) {
                seeds.push(self.root.pid);
            }
            let leader = self.root.pid;
            seeds.extend(
                table
                    .iter()
                    .filter(|p| p.pgid == leader || p.sid == leader)
                    .map(|p| p.pid),
            );
            let recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
            seeds.extend(recorded.iter().filter(|id| is_same(id)).map(|id| id.pid));
        }
        while let Some(pid) = seeds.pop() {
            if protected.contains(&pid) || !set.insert(pid) {
                continue;
            }
            if self.cgroup.is_none() {
                seeds.extend_from_slice(table.children(pid));
            }
        }
        set.retain(|pid| {
            table
                .get(*pid)
                .is_some_and(|p| !p.kernel_thread && !p.is_zombie())
        });
        self.members_of(table, &set)
    }

    /// The members in `set` (pids of `table`) with their depths, deepest
    /// first, recorded for later scans.
    fn members_of(&self, table: &ProcessTable, set: &HashSet<i32>) -> Vec<Member> {
        let is_same = |id: &ProcessId| {
            table
                .get(id.pid)
                .is_some_and(|p| p.start_time == id.start_time)
        };
        let mut depths: HashMap<i32, usize> = HashMap::new();
        let mut members: Vec<Member> = set
            .iter()
            .filter_map(|&pid| {
                let info = table.get(pid)?;
                Some(Member {
                    id: ProcessId {
                        pid,
                        start_time: info.start_time,
                    },
                    ppid: info.ppid,
                    depth: depth_of(pid, self.root.pid, table, set, &mut depths),
                    comm: info.comm.clone(),
                    state: info.state,
                })
            })
            .collect();
        members.sort_unstable_by(|a, b| b.depth.cmp(&a.depth).then(a.id.pid.cmp(&b.id.pid)));
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        recorded.retain(is_same);
        recorded.extend(members.iter().map(|m| m.id));
        members
    }
}

/// Runs `read` on this task when it reads at most [`INLINE_READS`]
/// processes, else on a blocking thread, giving up after `bound`.
async fn off_task<T: Send + 'static>(
    reads: usize,
    bound: Duration,
    read: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    if reads <= INLINE_READS {
        return read();
    }
    match tokio::time::timeout(bound, tokio::task::spawn_blocking(read)).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(io::Error::other(join)),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("reading the unit's processes took longer than {bound:?}"),
        )),
    }
}

/// `members` with a handle opened (pidfd first, then the start time
/// checked) for each one whose pid is not in `known`; members that exited
/// meanwhile are left out.
fn open_new(members: Vec<Member>, known: &HashSet<i32>) -> Vec<Found> {
    members
        .into_iter()
        .filter_map(|member| {
            if known.contains(&member.id.pid) {
                return Some(Found {
                    member,
                    handle: None,
                });
            }
            let handle = ProcessHandle::open(member.id).ok()?;
            Some(Found {
                member,
                handle: Some(handle),
            })
        })
        .collect()
}

/// The live processes of a fixed set, deepest first.
fn scan_fixed(fixed: &[(ProcessId, usize)]) -> Vec<Member> {
    let mut buf = Vec::new();
    let mut members: Vec<Member> = fixed
        .iter()
        .filter_map(|&(id, depth)| {
            let info = crate::proc_table::read_process(id.pid, Detail::Basic, &mut buf)?;
            let live = info.start_time == id.start_time && !info.is_zombie() && !info.kernel_thread;
            live.then_some(Member {
                id,
                ppid: info.ppid,
                depth,
                comm: info.comm,
                state: info.state,
            })
        })
        .collect();
    members.sort_unstable_by(|a, b| b.depth.cmp(&a.depth).then(a.id.pid.cmp(&b.id.pid)));
    members
}

/// Depth below `root` following parents that are members; memoised.
fn depth_of(
    pid: i32,
    root: i32,
    table: &ProcessTable,
    set: &HashSet<i32>,
    memo: &mut HashMap<i32, usize>,
) -> usize {
    let mut chain = Vec::new();
    let mut current = pid;
    let base = loop {
        if current == root {
            break 0;
        }
        if let Some(&d) = memo.get(&current) {
            break d;
        }
        let parent = table.get(current).map(|p| p.ppid).unwrap_or(0);
        chain.push(current);
        if parent == root {
            break 0;
        }
        if !set.contains(&parent) || chain.contains(&parent) {
            // The chain leaves the unit: this member hangs directly below the root.
            break 0;
        }
        current = parent;
    };
    let mut depth = base;
    for &p in chain.iter().rev() {
        depth += 1;
        memo.insert(p, depth);
    }
    if pid == root { 0 } else { depth }
}

/// Processes no stop or sweep may ever touch: this process, its ancestors
/// and PID 1. (Kernel threads are recognised by their flag, not their pid:
/// in a PID namespace, pid 2 is an ordinary process.)
pub fn protected_pids(table: &ProcessTable) -> HashSet<i32> {
    let me = std::process::id() as i32;
    let mut set: HashSet<i32> = table.ancestors(me).into_iter().collect();
    set.extend([me, 1]);
    set
}
