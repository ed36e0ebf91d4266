//! The supervisor zinit_pid1 runs: `zinit_server` as a child, started with
//! zinit's clean start (its own session, an empty signal mask, default
//! dispositions, no inherited descriptors beyond 0–2) and the flags passed
//! through, plus `--shutdown-timeout` (the bound), `--after-shutdown-file`
//! (where it says `reboot` or `poweroff` when its shutdown has ended) and
//! `--ready-file` (written once it serves: a server that exits before is a
//! start-up failure).

use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zinit_process::{Child, Command};

/// What the server's shutdown asked for next, from the after-shutdown file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// `zinit shutdown`, or a signal.
    PowerOff,
    /// `zinit reboot`.
    Reboot,
}

/// How to start the server.
#[derive(Debug)]
pub struct ServerSpec {
    /// The `zinit_server` executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// The after-shutdown file.
    pub after_file: PathBuf,
    /// The file the server writes once it serves (`--ready-file`).
    pub ready_file: PathBuf,
}

impl ServerSpec {
    /// The server with the flags zinit_pid1 passes through, its bound and
    /// the after-shutdown file in `state`.
    pub fn new(
        program: PathBuf,
        passed: Vec<OsString>,
        timeout: Duration,
        state: &StateDir,
    ) -> Self {
        let after_file = state.path().join("after-shutdown");
        let mut args = passed;
        args.push("--shutdown-timeout".into());
        args.push(format!("{}ms", timeout.as_millis()).into());
        args.push("--after-shutdown-file".into());
        args.push(after_file.clone().into());
        let ready_file = state.path().join("ready");
        args.push("--ready-file".into());
        args.push(ready_file.clone().into());
        Self {
            program,
            args,
            after_file,
            ready_file,
        }
    }

    /// Starts the server (removing a stale after-shutdown file and ready
    /// file first).
    pub fn spawn(&self) -> std::io::Result<Child> {
        let _ = std::fs::remove_file(&self.after_file);
        let _ = std::fs::remove_file(&self.ready_file);
        Command::new(&self.program).args(&self.args).spawn()
    }

    /// Whether the server that ran last got as far as serving.
    pub fn was_ready(&self) -> bool {
        self.ready_file.exists()
    }

    /// What the server's shutdown asked for, once it has exited; `None`
    /// when it wrote nothing (it died without a finished shutdown).
    pub fn after(&self) -> Option<After> {
        let text = std::fs::read_to_string(&self.after_file).ok()?;
        match text.trim() {
            "reboot" => Some(After::Reboot),
            "poweroff" => Some(After::PowerOff),
            other => {
                crate::warn!(
                    "the after-shutdown file {} says {other:?}; powering off",
                    self.after_file.display()
                );
                Some(After::PowerOff)
            }
        }
    }
}

/// The `zinit_server` to run: `explicit`, else the one next to this
/// executable, else the first in `PATH`.
pub fn find_server(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        if !path.is_file() {
            bail!("--server {}: no such file", path.display());
        }
        return Ok(path);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        let beside = dir.join("zinit_server");
        if beside.is_file() {
            return Ok(beside);
        }
    }
    let path =
        std::env::var_os("PATH").unwrap_or_else(|| zinit_process::spawn::DEFAULT_PATH.into());
    std::env::split_paths(&path)
        .map(|dir| dir.join("zinit_server"))
        .find(|candidate| candidate.is_file())
        .context("zinit_server is neither next to zinit_pid1 nor in PATH (give --server PATH)")
}

/// zinit_pid1's private directory (mode 0700, a new name each run): under
/// /run when it exists, else the temporary directory. Removed on drop.
#[derive(Debug)]
pub struct StateDir(PathBuf);

impl StateDir {
    /// Creates it.
    pub fn create() -> Result<Self> {
        let run = Path::new("/run");
        let base =
            if run.is_dir() && nix::unistd::access(run, nix::unistd::AccessFlags::W_OK).is_ok() {
                run.to_path_buf()
            } else {
                std::env::temp_dir()
            };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for attempt in 0..100u32 {
            let dir = base.join(format!(
                "zinit_pid1.{}.{:x}",
                std::process::id(),
                nanos.wrapping_add(attempt.wrapping_mul(7919))
            ));
            // mkdir never follows a symbolic link and fails on any existing name.
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Self(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("creating {}", dir.display()));
                }
            }
        }
        bail!(
            "cannot find a free name for zinit_pid1's directory in {}",
            base.display()
        )
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
