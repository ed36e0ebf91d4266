//! Spawning children: own session and process group, own cgroup (joined
//! before `exec`), dropped privileges, clean signal state, a pidfd.
//!
//! Every child spawned here is registered in one table under the same lock as
//! its `fork`, and every wait goes through that table, so the [`Reaper`]
//! (`waitpid(-1)` for adopted orphans) and [`Child::wait`] never steal each
//! other's exit statuses.
//!
//! [`Reaper`]: crate::reaper::Reaper

use crate::cgroup::Cgroup;
use crate::handle::{ProcessHandle, ProcessId};
use crate::signal::Signal;
use crate::sys;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{LazyLock, Mutex, MutexGuard};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called `exit` with this code.
    Exited(i32),
    /// A signal ended it.
    Signaled(i32),
}

impl ExitStatus {
    /// Whether it exited with code 0.
    pub fn success(self) -> bool {
        self == Self::Exited(0)
    }

    pub(crate) fn from_siginfo(info: &libc::siginfo_t) -> Self {
        // SAFETY: the siginfo was filled by waitid for a child event.
        let status = unsafe { info.si_status() };
        if info.si_code == libc::CLD_EXITED {
            Self::Exited(status)
        } else {
            Self::Signaled(status)
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited(code) => write!(f, "exit code {code}"),
            Self::Signaled(sig) => match Signal::try_from(*sig) {
                Ok(s) => write!(f, "killed by {}", s.as_str()),
                Err(_) => write!(f, "killed by signal {sig}"),
            },
        }
    }
}

/// The table of children spawned here and not yet waited for: `None` while
/// running, the status once the reaper has collected it.
pub(crate) fn children() -> MutexGuard<'static, HashMap<i32, Option<ExitStatus>>> {
    static CHILDREN: LazyLock<Mutex<HashMap<i32, Option<ExitStatus>>>> =
        LazyLock::new(Mutex::default);
    CHILDREN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a child's standard output or error goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A pipe the caller reads from ([`Child::take_stdout`]).
    Piped,
    /// `/dev/null`.
    Null,
    /// This process's own stream.
    Inherit,
}

impl Output {
    fn stdio(self) -> Stdio {
        match self {
            Self::Piped => Stdio::piped(),
            Self::Null => Stdio::null(),
            Self::Inherit => Stdio::inherit(),
        }
    }
}

/// A command to spawn: always in a new session (so its own process group),
/// optionally in a cgroup and as another user.
#[derive(Debug, Clone)]
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_clear: bool,
    cwd: Option<PathBuf>,
    user: Option<(u32, u32, Vec<u32>)>,
    cgroup: Option<Cgroup>,
    stdout: Output,
    stderr: Output,
}

impl Command {
    /// A command running `program` (looked up in `PATH` if it has no slash).
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_clear: false,
            cwd: None,
            user: None,
            cgroup: None,
            stdout: Output::Inherit,
            stderr: Output::Inherit,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts from an empty environment instead of this process's.
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    /// Sets the working directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Runs as `uid` with primary group `gid` and supplementary `groups`
    /// (set with setgroups, setgid, setuid, in that order, after joining the cgroup).
    pub fn user(mut self, uid: u32, gid: u32, groups: Vec<u32>) -> Self {
        self.user = Some((uid, gid, groups));
        self
    }

    /// Places the child in `cgroup` before it executes anything.
    pub fn cgroup(mut self, cgroup: Cgroup) -> Self {
        self.cgroup = Some(cgroup);
        self
    }

    /// Where standard output goes (default: inherited).
    pub fn stdout(mut self, output: Output) -> Self {
        self.stdout = output;
        self
    }

    /// Where standard error goes (default: inherited).
    pub fn stderr(mut self, output: Output) -> Self {
        self.stderr = output;
        self
    }

    /// Spawns the child, registered for waiting, with a pidfd.
    pub fn spawn(self) -> io::Result<Child> {
        let mut std_cmd = std::process::Command::new(&self.program);
        std_cmd
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(self.stdout.stdio())
            .stderr(self.stderr.stdio());
        if self.env_clear {
            std_cmd.env_clear();
        }
        std_cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.cwd {
            std_cmd.current_dir(dir);
        }
        let procs_fd = self.cgroup.as_ref().map(Cgroup::open_procs).transpose()?;
        let join_fd = procs_fd.as_ref().map(AsRawFd::as_raw_fd);
        let user = self.user.clone();
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe system calls; it allocates nothing.
        unsafe {
            std_cmd.pre_exec(move || prepare_child(join_fd, user.as_ref()));
        }

        let mut table = children();
        let mut std_child = std_cmd.spawn()?;
        let pid = std_child.id() as i32;
        // Nobody can reap the child while we hold the table, so the pid is
        // still ours: the pidfd cannot refer to another process.
        let pidfd = sys::pidfd_open(pid)?;
        table.insert(pid, None);
        drop(table);
        drop(procs_fd);

        let start_time = crate::proc_table::read_start_time(pid).unwrap_or(0);
        let id = ProcessId { pid, start_time };
        Ok(Child {
            handle: ProcessHandle::from_pidfd(id, pidfd),
            cgroup: self.cgroup,
            stdout: std_child.stdout.take().map(OwnedFd::from),
            stderr: std_child.stderr.take().map(OwnedFd::from),
            status: None,
        })
    }
}

/// Runs in the child between fork and exec: a new session, the cgroup, default
/// signal dispositions (SIG_IGN survives exec), then the user.
fn prepare_child(join_fd: Option<i32>, user: Option<&(u32, u32, Vec<u32>)>) -> io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: every call below is an async-signal-safe system call on
    // valid arguments; nothing allocates.
    unsafe {
        check(libc::setsid())?;
        if let Some(fd) = join_fd
            && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
        {
            return Err(io::Error::last_os_error());
        }
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        if let Some((uid, gid, groups)) = user {
            check(libc::setgroups(groups.len(), groups.as_ptr()))?;
            check(libc::setgid(*gid))?;
            check(libc::setuid(*uid))?;
        }
    }
    Ok(())
}

/// A spawned child. Dropping it does not kill or reap it; use the stop
/// functions and [`Child::wait`].
#[derive(Debug)]
pub struct Child {
    handle: ProcessHandle,
    cgroup: Option<Cgroup>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    status: Option<ExitStatus>,
}

impl Child {
    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.handle.pid()
    }

    /// The child's identity.
    pub fn id(&self) -> ProcessId {
        self.handle.id()
    }

    /// A PID-reuse-safe handle to the child.
    pub fn handle(&self) -> &ProcessHandle {
        &self.handle
    }

    /// The cgroup the child was placed in.
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    /// The read end of the child's stdout pipe (once).
    pub fn take_stdout(&mut self) -> Option<OwnedFd> {
        self.stdout.take()
    }

    /// The read end of the child's stderr pipe (once).
    pub fn take_stderr(&mut self) -> Option<OwnedFd> {
        self.stderr.take()
    }

    /// Sends a signal to the child (never to a process that reused its pid).
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        self.handle.signal(signal)
    }

    /// The exit status if the child has exited, reaping it; `None` while it runs.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_some() {
            return Ok(self.status);
        }
        let pid = self.pid();
        let mut table = children();
        if let Some(Some(status)) = table.get(&pid) {
            let status = *status;
            table.remove(&pid);
            self.status = Some(status);
            return Ok(self.status);
        }
        let fd = self.handle.pidfd().map(AsRawFd::as_raw_fd).unwrap_or(-1);
        // SAFETY: a zeroed siginfo is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pidfd of our own child and out-pointer.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                fd as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: waitid filled the siginfo (si_pid stays 0 if nothing exited).
        if unsafe { info.si_pid() } == 0 {
            return Ok(None);
        }
        table.remove(&pid);
        self.status = Some(ExitStatus::from_siginfo(&info));
        Ok(self.status)
    }

    /// Waits for the child to exit and reaps it, without blocking the runtime.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        let fd = self
            .handle
            .pidfd()
            .ok_or_else(|| io::Error::other("child has no pidfd"))?
            .try_clone()?;
        let fd = sys::async_fd(fd, tokio::io::Interest::READABLE)?;
        loop {
            let mut guard = fd.readable().await?;
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            guard.clear_ready();
        }
    }
}
