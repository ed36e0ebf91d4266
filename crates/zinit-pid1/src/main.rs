//! `zinit_pid1`: a small PID 1 for containers and machines. It reaps every
//! zombie in its PID namespace, runs `zinit_server` as a child (restarted
//! with back-off when it dies unexpectedly), turns SIGTERM, SIGINT and
//! SIGPWR (and ctrl-alt-del on a machine) into the server's graceful
//! shutdown, sweeps what is left, syncs, and then exits with a code that
//! says whether the shutdown was clean (a container) or powers off or
//! reboots (a machine). Not as PID 1, it runs as a child subreaper.
//!
//! It has one thread and one loop (`supervise`), sleeping in `poll` on a
//! signalfd; it is the only waiter for its children.

mod backoff;
mod exit;
mod log;
mod mode;
mod power;
mod server;
mod signals;
mod supervise;
mod sweep;

use anyhow::{Context, Result, bail};
use clap::Parser;
use mode::Mode;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The longest bound, and the default on a machine: the server's 30 s.
const MAX_BOUND: Duration = Duration::from_secs(30);
/// The default bound as a container's PID 1: with the 3 s zinit_pid1 may
/// take after it, done within Docker's default `docker stop` (10 s).
const CONTAINER_BOUND: Duration = Duration::from_secs(7);

#[derive(Parser, Debug)]
#[command(
    version,
    about = "zinit's PID 1 for containers and machines: reaps zombies, runs zinit_server, shuts down gracefully",
    after_help = "Exit codes (container, or not PID 1): 0 clean; 1 start-up error (its own, or \
zinit_server's: it exited 1 before it served); 2 usage (its own, or zinit_server's); \
3 the server's shutdown left processes; 4 the server's deadline cut in; \
5 the server outlived the bound and was killed; 6 the final sweep found processes; \
7 the server died during the shutdown or was not running; \
8 the server died 5 times within 60 s (zinit_pid1 gave up)."
)]
struct Args {
    /// The directory of service files (passed to zinit_server).
    #[arg(long, default_value = "/etc/zinit")]
    config: PathBuf,
    /// The server's unix socket (passed to zinit_server; default: its rules,
    /// /run/zinit.sock as root).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// error, warn, info, debug or trace (passed to zinit_server, which also
    /// takes a tracing filter).
    #[arg(long, default_value = "info", value_parser = log::check_level)]
    log_level: String,
    /// The shutdown's bound, such as 10s (a bare number is seconds): at most
    /// 30 s. The server's deadline for a shutdown started by a signal;
    /// zinit_pid1 itself is done 3 s after it at the latest. Default: 7 s as
    /// a container's PID 1 (done within Docker's default `docker stop` of
    /// 10 s), else 30 s; also `$ZINIT_SHUTDOWN_TIMEOUT`.
    #[arg(long, value_name = "DURATION", value_parser = parse_bound)]
    timeout: Option<Duration>,
    /// The zinit_server to run (default: the one next to zinit_pid1, else
    /// the first in PATH).
    #[arg(long, value_name = "PATH")]
    server: Option<PathBuf>,
    /// Take the machine path (power off or reboot at the end) although this
    /// is PID 1 of a PID namespace other than the initial one, where
    /// reboot(2) ends only the namespace: for tests. Refused when not PID 1.
    #[arg(long)]
    machine: bool,
    /// As a container's PID 1, zinit_pid1 hands its environment (`docker run
    /// -e`, Kubernetes env and Secrets) and its working directory (WORKDIR)
    /// to every service, under each file's `env` and `dir`. This turns that
    /// off: services then get zinit's built environment and `/`.
    #[arg(long)]
    no_container_env: bool,
    /// More arguments for zinit_server, after `--` (such as --tcp ADDR
    /// --token-file FILE, or --pid-file PATH).
    #[arg(last = true, value_name = "SERVER ARGS")]
    server_args: Vec<OsString>,
}

/// `--timeout`: `10s`, `500ms`, or a bare number of seconds; more than zero
/// and at most 30 s.
fn parse_bound(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bound = match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=MAX_BOUND.as_secs_f64()).contains(&secs) => {
            Duration::from_secs_f64(secs)
        }
        Ok(_) => {
            return Err(format!(
                "{text:?}: the bound is at most 30 s (only lower ones)"
            ));
        }
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("{text:?}: {e} (examples: 10s, 500ms, 20)"))?,
    };
    if bound.is_zero() || bound > MAX_BOUND {
        return Err(format!(
            "{text:?}: the bound is more than zero and at most 30 s (only lower ones)"
        ));
    }
    Ok(bound)
}

fn main() {
    let args = Args::parse();
    log::set_level(log::Level::parse(&args.log_level));
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            error!("{e:#}");
            std::process::exit(exit::STARTUP);
        }
    }
}

fn run(args: Args) -> Result<i32> {
    let mode = match Mode::detect(args.machine) {
        Ok(mode) => mode,
        Err(refused) => {
            error!("{refused}");
            return Ok(exit::USAGE);
        }
    };
    if !args.config.is_dir() {
        bail!(
            "the config directory {} does not exist",
            args.config.display()
        );
    }
    // The bound: --timeout, else $ZINIT_SHUTDOWN_TIMEOUT, else by mode.
    let bound = match (args.timeout, std::env::var("ZINIT_SHUTDOWN_TIMEOUT")) {
        (Some(bound), _) => bound,
        (None, Ok(text)) => match parse_bound(&text) {
            Ok(bound) => bound,
            Err(e) => {
                error!("ZINIT_SHUTDOWN_TIMEOUT={e}");
                return Ok(exit::USAGE);
            }
        },
        (None, Err(_)) if mode == Mode::Container => CONTAINER_BOUND,
        (None, Err(_)) => MAX_BOUND,
    };
    let program = server::find_server(args.server.clone())?;
    // Before anything else starts: every signal we take is blocked.
    let signals = signals::Signals::take().context("taking signals through a signalfd")?;
    info!("{}", mode.describe());
    if !mode.is_pid1() {
        zinit_process::reaper::set_child_subreaper()
            .context("becoming a child subreaper (PR_SET_CHILD_SUBREAPER)")?;
    }
    power::disable_ctrl_alt_del(mode);
    let state = server::StateDir::create()?;
    let mut passed: Vec<OsString> = vec!["--config".into(), args.config.clone().into()];
    if let Some(socket) = &args.socket {
        passed.push("--socket".into());
        passed.push(socket.clone().into());
    }
    passed.push("--log-level".into());
    passed.push(args.log_level.clone().into());
    if mode == Mode::Container {
        // Where container users look: `docker logs`, `kubectl logs`.
        passed.push("--default-log".into());
        passed.push("stdout".into());
    }
    if mode == Mode::Container && !args.no_container_env {
        passed.push("--inherit-env".into());
        if let Ok(dir) = std::env::current_dir() {
            passed.push("--default-dir".into());
            passed.push(dir.into());
        }
    }
    passed.extend(args.server_args.iter().cloned());
    let spec = server::ServerSpec::new(program, passed, bound, &state);
    info!(
        "the server's after-shutdown file: {}",
        spec.after_file.display()
    );
    let first = spec
        .spawn()
        .with_context(|| format!("starting {}", spec.program.display()))?;

    info!(
        "the shutdown's bound: {}",
        humantime::format_duration(bound)
    );
    let ended = supervise::run(&signals, &spec, mode, bound, first);
    let sweep_began = Instant::now();
    let report = sweep::sweep(mode, &signals, ended.hard_end);
    let swept_in = sweep_began.elapsed();
    let synced = power::sync(
        mode,
        Duration::from_secs(if mode.ends_with_reboot() { 10 } else { 5 }),
    );
    if !synced {
        warn!("sync has not finished in time; going on");
    }
    info!(
        "the shutdown ({}) ended: server {}; final sweep {:.2}s: {} found, {} visitor(s), {} left; sync {:.2}s",
        if ended.trigger.is_empty() {
            "?"
        } else {
            &ended.trigger
        },
        describe(&ended.server),
        swept_in.as_secs_f64(),
        report.found.len(),
        report.visitors.len(),
        report.left.len(),
        (sweep_began.elapsed() - swept_in).as_secs_f64()
    );
    drop(state);
    if mode.ends_with_reboot() {
        let error = power::power_off_or_reboot(mode, ended.reboot);
        error!("reboot(2) failed: {error}");
        if mode == Mode::Machine {
            // PID 1 of the machine must not exit (the kernel would panic).
            error!("halted: nothing runs any more; power the machine off");
            loop {
                let _ = signals.wait(None);
                sweep::reap_all();
            }
        }
        return Ok(exit::STARTUP);
    }
    let code = exit::code(&ended.server, &report);
    info!("exiting with code {code}");
    Ok(code)
}

fn describe(end: &supervise::ServerEnd) -> String {
    match end {
        supervise::ServerEnd::Exited(code) => format!("exited {code}"),
        supervise::ServerEnd::Killed => "killed (it outlived the bound)".into(),
        supervise::ServerEnd::Failed(why) => format!("failed: {why}"),
        supervise::ServerEnd::NeverStarted(code) => format!("could not start (exit {code})"),
        supervise::ServerEnd::CrashLoop => format!(
            "died {} times within {}",
            supervise::CRASH_LOOP,
            humantime::format_duration(supervise::CRASH_WINDOW)
        ),
    }
}
