//! Spawning children with a clean start: own session and process group, own
//! cgroup (joined before `exec`), an empty signal mask and default signal
//! dispositions, no inherited descriptors beyond 0–2, the resource limits
//! this process was given, umask 022, dropped privileges, and a pidfd.
//!
//! Every child spawned here is registered in one table under the same lock as
//! its `fork`, and every wait goes through that table, so the [`Reaper`]
//! (`waitpid(-1)` for adopted orphans) and [`Child::wait`] never steal each
//! other's exit statuses.
//!
//! Between `fork` and `exec` the child only makes async-signal-safe system
//! calls on data prepared before the fork (the program path is resolved, and
//! the argument and environment arrays are built, in the parent), and it
//! calls `execve` itself, so a program that is not executable fails with its
//! own error instead of being handed to `/bin/sh`. When a step fails, the
//! child reports which one, so the error names it ("changing to the working
//! directory /srv: Permission denied").
//!
//! [`Reaper`]: crate::reaper::Reaper

use crate::cgroup::Cgroup;
use crate::handle::{ProcessHandle, ProcessId};
use crate::limits::Limit;
use crate::signal::Signal;
use crate::sys;
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString, c_char};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

/// The search path when the environment has no `PATH`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The umask every child starts with.
pub const UMASK: u32 = 0o022;

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
#[derive(Debug, Clone)]
pub enum Output {
    /// A pipe the caller reads from ([`Child::take_stdout`]).
    Piped,
    /// `/dev/null`.
    Null,
    /// This process's own stream.
    Inherit,
    /// This descriptor (for instance a FIFO's writing end, see
    /// [`crate::fifo`]), duplicated for the child.
    Fd(Arc<OwnedFd>),
}

impl Output {
    fn stdio(&self) -> io::Result<Stdio> {
        Ok(match self {
            Self::Piped => Stdio::piped(),
            Self::Null => Stdio::null(),
            Self::Inherit => Stdio::inherit(),
            Self::Fd(fd) => Stdio::from(fd.try_clone()?),
        })
    }
}

/// The identity a child switches to before `exec`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Credentials {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

/// A command to spawn: always in a new session (so its own process group),
/// with a clean start (see the module documentation), optionally in a
/// cgroup and as another user.
#[derive(Debug, Clone)]
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_clear: bool,
    cwd: Option<PathBuf>,
    user: Option<Credentials>,
    cgroup: Option<Cgroup>,
    stdout: Output,
    stderr: Output,
    limits: Vec<Limit>,
}

impl Command {
    /// A command running `program` (looked up in the child's `PATH` if it
    /// has no slash).
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
            limits: Vec::new(),
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

    /// Sets an environment variable (a later value for the same name wins).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts from an empty environment instead of this process's.
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    /// Sets the working directory (entered after privileges are dropped).
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Runs as `uid` with primary group `gid` and supplementary `groups`
    /// (set with setgroups, setgid, setuid, in that order, after joining the cgroup).
    pub fn user(mut self, uid: u32, gid: u32, groups: Vec<u32>) -> Self {
        self.user = Some(Credentials { uid, gid, groups });
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

    /// Starts the child with this resource limit. Without one for
    /// `RLIMIT_NOFILE`, the child gets the open-file limit this process was
    /// given ([`crate::limits::original_nofile`]).
    pub fn limit(mut self, limit: Limit) -> Self {
        self.limits.retain(|l| l.resource != limit.resource);
        self.limits.push(limit);
        self
    }

    /// The environment the child will get.
    fn final_env(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = if self.env_clear {
            Vec::new()
        } else {
            std::env::vars_os().collect()
        };
        for (key, value) in &self.env {
            env.retain(|(k, _)| k != key);
            env.push((key.clone(), value.clone()));
        }
        env
    }

    /// Spawns the child, registered for waiting, with a pidfd.
    pub fn spawn(self) -> io::Result<Child> {
        let env = self.final_env();
        let path = resolve_program(&self.program, &env)?;
        if let Some(dir) = &self.cwd
            && !dir.is_dir()
        {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the working directory {} does not exist or is not a directory",
                    dir.display()
                ),
            ));
        }
        let procs_fd = self.cgroup.as_ref().map(Cgroup::open_procs).transpose()?;
        let (report_read, report_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let mut limits = self.limits.clone();
        if let Some(nofile) = crate::limits::original_nofile()
            && !limits.iter().any(|l| l.resource == nofile.resource)
        {
            limits.push(nofile);
        }
        let plan = Plan::new(
            &path,
            &self.program,
            &self.args,
            &env,
            self.cwd.as_deref(),
            PreparedChild {
                join_fd: procs_fd.as_ref().map(AsRawFd::as_raw_fd),
                report_fd: report_write.as_raw_fd(),
                user: self.user.clone(),
                limits,
            },
        )?;

        let mut std_cmd = std::process::Command::new(&self.program);
        std_cmd
            .stdin(Stdio::null())
            .stdout(self.stdout.stdio()?)
            .stderr(self.stderr.stdio()?);
        // SAFETY: the closure runs between fork and exec; it only makes
        // async-signal-safe system calls on data prepared before the fork,
        // and allocates nothing.
        unsafe {
            std_cmd.pre_exec(move || Err(plan.run_in_child()));
        }

        let mut table = children();
        let spawned = std_cmd.spawn();
        drop(report_write);
        let mut std_child = match spawned {
            Ok(child) => child,
            Err(e) => {
                drop(table);
                return Err(explain(e, &report_read, &path, &self));
            }
        };
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

/// The executable for `program`: itself when it has a slash, else the first
/// executable file of that name in the child's `PATH`.
fn resolve_program(program: &OsStr, env: &[(OsString, OsString)]) -> io::Result<PathBuf> {
    if program.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the command is empty",
        ));
    }
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let search = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| DEFAULT_PATH.into());
    for dir in std::env::split_paths(&search) {
        let candidate = dir.join(program);
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "{} not found in PATH ({})",
            program.to_string_lossy(),
            search.to_string_lossy()
        ),
    ))
}

/// The steps the child takes between fork and exec; a failing one is
/// reported to the parent by its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Step {
    Session = 1,
    Cgroup,
    SignalMask,
    Limit,
    Descriptors,
    Groups,
    Gid,
    Uid,
    Chdir,
    Exec,
}

impl Step {
    fn from_u32(n: u32) -> Option<Self> {
        Some(match n {
            1 => Self::Session,
            2 => Self::Cgroup,
            3 => Self::SignalMask,
            4 => Self::Limit,
            5 => Self::Descriptors,
            6 => Self::Groups,
            7 => Self::Gid,
            8 => Self::Uid,
            9 => Self::Chdir,
            10 => Self::Exec,
            _ => return None,
        })
    }
}

/// Turns the error `spawn` returned into one that names the failed step.
fn explain(error: io::Error, report: &OwnedFd, path: &Path, command: &Command) -> io::Error {
    let mut buf = [0u8; 8];
    let step = match nix::unistd::read(report, &mut buf) {
        Ok(8) => Step::from_u32(u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]])),
        _ => None,
    };
    let Some(step) = step else {
        return error;
    };
    let user = command.user.as_ref();
    let what = match step {
        Step::Session => "starting a new session".to_string(),
        Step::Cgroup => match &command.cgroup {
            Some(cgroup) => format!("joining the cgroup {}", cgroup.path().display()),
            None => "joining its cgroup".to_string(),
        },
        Step::SignalMask => "clearing the signal mask".to_string(),
        Step::Limit => "setting its resource limits".to_string(),
        Step::Descriptors => "closing inherited file descriptors".to_string(),
        Step::Groups | Step::Gid | Step::Uid => match user {
            Some(c) => format!("switching to uid {} gid {}", c.uid, c.gid),
            None => "switching user".to_string(),
        },
        Step::Chdir => format!(
            "changing to the working directory {}{}",
            command.cwd.as_deref().unwrap_or(Path::new("?")).display(),
            user.map(|c| format!(" as uid {}", c.uid))
                .unwrap_or_default()
        ),
        Step::Exec => format!("executing {}", path.display()),
    };
    io::Error::new(error.kind(), format!("{what}: {error}"))
}

/// What the child needs besides the strings: prepared before the fork.
struct PreparedChild {
    join_fd: Option<RawFd>,
    report_fd: RawFd,
    user: Option<Credentials>,
    limits: Vec<Limit>,
}

/// Everything the child does between fork and exec, with every string and
/// array built in the parent.
struct Plan {
    path: CString,
    // The pointer arrays point into these; they are kept alive with them.
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    envp_ptrs: Vec<*const c_char>,
    cwd: Option<CString>,
    groups: Vec<Gid>,
    child: PreparedChild,
}

// SAFETY: the raw pointers point into the CStrings the plan owns, which are
// never changed; the plan is used by one forked child only.
unsafe impl Send for Plan {}
// SAFETY: as above; nothing is mutated through a shared reference.
unsafe impl Sync for Plan {}

fn c_string(bytes: Vec<u8>, what: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

fn pointers(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

impl Plan {
    fn new(
        path: &Path,
        program: &OsStr,
        args: &[OsString],
        env: &[(OsString, OsString)],
        cwd: Option<&Path>,
        child: PreparedChild,
    ) -> io::Result<Self> {
        let argv = std::iter::once(program.to_os_string())
            .chain(args.iter().cloned())
            .map(|a| c_string(a.into_vec(), "an argument"))
            .collect::<io::Result<Vec<_>>>()?;
        let envp = env
            .iter()
            .map(|(k, v)| {
                let mut entry = k.clone();
                entry.push("=");
                entry.push(v);
                c_string(entry.into_vec(), "an environment variable")
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            path: c_string(path.as_os_str().as_bytes().to_vec(), "the program path")?,
            argv_ptrs: pointers(&argv),
            envp_ptrs: pointers(&envp),
            _argv: argv,
            _envp: envp,
            cwd: cwd
                .map(|d| c_string(d.as_os_str().as_bytes().to_vec(), "the working directory"))
                .transpose()?,
            groups: child
                .user
                .iter()
                .flat_map(|u| u.groups.iter().map(|&g| Gid::from_raw(g)))
                .collect(),
            child,
        })
    }

    /// Runs in the child; returns only with the error of the step that failed.
    fn run_in_child(&self) -> io::Error {
        let error = match self.steps() {
            Ok(()) => return io::Error::other("execve returned without an error"),
            Err(failure) => failure,
        };
        let (step, errno) = (error.0 as u32, error.1.raw_os_error().unwrap_or(0));
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&step.to_ne_bytes());
        bytes[4..].copy_from_slice(&errno.to_ne_bytes());
        sys::write_all_once(self.child.report_fd, &bytes);
        error.1
    }

    fn steps(&self) -> Result<(), (Step, io::Error)> {
        let fail = |step: Step| move |e: nix::Error| (step, io::Error::from(e));
        nix::unistd::setsid().map_err(fail(Step::Session))?;
        if let Some(fd) = self.child.join_fd {
            // SAFETY: the descriptor is open (the parent keeps it until the
            // spawn returns) and not owned elsewhere in the child.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            match nix::unistd::write(fd, b"0") {
                Ok(1) => {}
                Ok(_) => return Err((Step::Cgroup, io::Error::other("short write"))),
                Err(e) => return Err((Step::Cgroup, e.into())),
            }
        }
        sys::reset_signal_dispositions();
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
            .map_err(fail(Step::SignalMask))?;
        for limit in &self.child.limits {
            nix::sys::resource::setrlimit(limit.resource, limit.soft, limit.hard)
                .map_err(fail(Step::Limit))?;
        }
        nix::sys::stat::umask(Mode::from_bits_truncate(UMASK));
        sys::cloexec_from(3).map_err(|e| (Step::Descriptors, e))?;
        if let Some(user) = &self.child.user {
            nix::unistd::setgroups(&self.groups).map_err(fail(Step::Groups))?;
            nix::unistd::setgid(Gid::from_raw(user.gid)).map_err(fail(Step::Gid))?;
            nix::unistd::setuid(Uid::from_raw(user.uid)).map_err(fail(Step::Uid))?;
        }
        if let Some(dir) = &self.cwd {
            nix::unistd::chdir(dir.as_c_str()).map_err(fail(Step::Chdir))?;
        }
        Err((
            Step::Exec,
            sys::execve(&self.path, &self.argv_ptrs, &self.envp_ptrs),
        ))
    }
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
        let Some(status) = sys::waitid_pidfd(fd)? else {
            return Ok(None);
        };
        table.remove(&pid);
        self.status = Some(status);
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
