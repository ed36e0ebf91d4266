//! How a unit's commands are started: the environment, the working
//! directory, the user and the resource limits every command of a unit gets
//! (its `exec`, its readiness `test`, its `stop` command), and running a
//! helper command with a time bound.
//!
//! The environment is built, never inherited wholesale from the server
//! (unless [`Base::inherit_env`], a container's PID 1: then the server's
//! environment, less zinit's own `ZINIT_*` variables, is the base):
//! `PATH` (the server's, or a standard one), the locale and time zone
//! (`LANG`, `LANGUAGE`, `LC_*`, `TZ`) pass through; `HOME`, `USER`,
//! `LOGNAME` and `SHELL` come from the password entry of the user the unit
//! runs as; `ZINIT_UNIT` names the unit; the service file's `env` comes last
//! and overrides any of them. The working directory is `dir`, else
//! [`Base::default_dir`] (a container's WORKDIR), else the user's home for a
//! `user:` unit, else `/`.

use crate::config::ServiceConfig;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use zinit_process::spawn::{DEFAULT_PATH, ExitStatus, Output};
use zinit_process::stop::{StopMode, StopSpec, stop};
use zinit_process::{Command, Members};

/// What every unit's environment and working directory start from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Base {
    /// The server's whole environment is every unit's base.
    pub inherit_env: bool,
    /// The working directory of units without `dir`.
    pub default_dir: Option<PathBuf>,
    /// Units whose file names no log mode echo their lines to the server's
    /// stdout, `[unit] line` (a container's `docker logs`), besides the ring.
    pub echo_by_default: bool,
}

static BASE: OnceLock<Base> = OnceLock::new();

/// Sets the base for this process (the first call wins: one supervisor a
/// process).
pub fn set_base(base: Base) {
    let _ = BASE.set(base);
}

pub(crate) fn base() -> &'static Base {
    BASE.get_or_init(Base::default)
}

/// Variables passed through from the server's environment as they are.
fn passes_through(key: &str) -> bool {
    if base().inherit_env {
        return !key.starts_with("ZINIT_");
    }
    matches!(key, "PATH" | "LANG" | "LANGUAGE" | "TZ") || key.starts_with("LC_")
}

/// The password entry of the user the server runs as, read once.
fn server_user() -> &'static Option<(String, PathBuf, PathBuf)> {
    static USER: OnceLock<Option<(String, PathBuf, PathBuf)>> = OnceLock::new();
    USER.get_or_init(|| {
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid()).ok()??;
        Some((user.name, user.dir, user.shell))
    })
}

/// The environment every command of `config` starts with.
pub fn environment(config: &ServiceConfig) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| k.to_str().is_some_and(passes_through))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    let identity = match &config.run_as {
        Some(run_as) => Some((
            run_as.user.clone(),
            run_as.home.clone(),
            run_as.shell.clone(),
        )),
        None => server_user().clone(),
    };
    if let Some((name, home, shell)) = identity {
        env.retain(|(k, _)| !matches!(k.to_str(), Some("HOME" | "USER" | "LOGNAME" | "SHELL")));
        env.push(("HOME".into(), home.into()));
        env.push(("USER".into(), name.clone().into()));
        env.push(("LOGNAME".into(), name.into()));
        env.push(("SHELL".into(), shell.into()));
    }
    env.push(("ZINIT_UNIT".into(), config.name.clone().into()));
    for (key, value) in &config.env {
        env.retain(|(k, _)| k != key.as_str());
        env.push((key.into(), value.into()));
    }
    env
}

/// The working directory of `config`'s commands.
pub fn working_dir(config: &ServiceConfig) -> PathBuf {
    if let Some(dir) = config.dir.as_ref().or(base().default_dir.as_ref()) {
        return dir.clone();
    }
    match &config.run_as {
        Some(run_as) if run_as.home.is_dir() => run_as.home.clone(),
        _ => PathBuf::from("/"),
    }
}

/// A command of `config` (its `exec`, `test` or `stop`) with the unit's
/// environment, directory, user and limits.
pub fn command_for(config: &ServiceConfig, argv: &[String]) -> Command {
    let mut command = Command::new(&argv[0]).args(&argv[1..]).env_clear();
    for (key, value) in environment(config) {
        command = command.env(key, value);
    }
    command = command.current_dir(working_dir(config));
    if let Some(run_as) = &config.run_as {
        command = command.user(run_as.uid, run_as.gid, run_as.groups.clone());
    }
    for limit in &config.limits {
        command = command.limit(*limit);
    }
    command
}

/// How a helper command (a readiness test, a stop command) went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandResult {
    /// It exited with this status within its bound.
    Exited(ExitStatus),
    /// It was still running at its bound and was killed.
    TimedOut,
    /// It could not be started.
    Failed(String),
}

/// How long a command cut at its bound is waited for after SIGKILL.
const CUT_WAIT: Duration = Duration::from_millis(100);

/// Runs `argv` as a command of `config` (outside the unit's cgroup, output
/// discarded) and waits at most `bound`, or until `cancel` is cancelled; then
/// its whole group is killed.
pub async fn run_bounded(
    config: &ServiceConfig,
    argv: &[String],
    bound: Duration,
    cancel: Option<&CancellationToken>,
) -> CommandResult {
    let spawned = command_for(config, argv)
        .stdout(Output::Null)
        .stderr(Output::Null)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return CommandResult::Failed(format!("{}: {e}", argv[0])),
    };
    let cancelled = async {
        match cancel {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let finished = tokio::select! {
        finished = tokio::time::timeout(bound, child.wait()) => finished.ok(),
        () = cancelled => None,
    };
    match finished {
        Some(Ok(status)) => CommandResult::Exited(status),
        Some(Err(e)) => CommandResult::Failed(e.to_string()),
        None => {
            // Cut: killed at once, and waited for only briefly, so that the
            // cut does not eat into what is left of the caller's budget.
            let members = Members::of_child(&child);
            let spec = StopSpec {
                timeout: Duration::ZERO,
                mode: StopMode::Group,
                kill_wait: CUT_WAIT,
                ..StopSpec::default()
            };
            let _ = tokio::time::timeout(CUT_WAIT * 2, stop(&members, &spec, None)).await;
            let _ = tokio::time::timeout(CUT_WAIT, child.wait()).await;
            CommandResult::TimedOut
        }
    }
}
