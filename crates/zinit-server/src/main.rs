//! `zinit_server`: loads service files, supervises them, and serves the gRPC
//! `Control` service (with health and reflection) on a unix socket, and
//! optionally on a loopback TCP port with a token.

mod control;
mod convert;
mod listen;
mod shutdown;
mod signals;

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use zinit_supervisor::shutdown::MAX_DEADLINE;
use zinit_supervisor::{Host, Options, Supervisor};

#[derive(Parser, Debug)]
#[command(name = "zinit_server", version, about = "zinit's supervisor daemon")]
struct Args {
    /// The directory of service files.
    #[arg(long, default_value = "/etc/zinit")]
    config: PathBuf,
    /// The unix socket (default: $ZINIT_SOCKET, /run/zinit.sock as root,
    /// $XDG_RUNTIME_DIR/zinit.sock, or /tmp/zinit-$UID.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Write the server's pid to this file (removed at exit).
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// error, warn, info, debug, trace or off, or a tracing filter such as
    /// `info,zinit_supervisor=debug`. Module paths show from debug on.
    #[arg(long, default_value = "info", value_parser = log_level)]
    log_level: String,
    /// Validate the service files in DIR, print every error, and exit
    /// (non-zero when any file is invalid). Starts nothing.
    #[arg(long, value_name = "DIR")]
    check: Option<PathBuf>,
    /// Also listen on this loopback TCP address (needs --token-file).
    #[arg(long, value_name = "127.0.0.1:PORT")]
    tcp: Option<std::net::SocketAddr>,
    /// A file holding the token every TCP call must send as `authorization: Bearer TOKEN`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The deadline of a shutdown started by SIGTERM or SIGINT, such as 10s
    /// (a bare number is seconds): at most 30 s, the default. zinit_pid1
    /// passes its own bound here.
    #[arg(long, value_name = "DURATION", value_parser = parse_shutdown_timeout)]
    shutdown_timeout: Option<Duration>,
    /// When a shutdown ends, write `reboot` or `poweroff` (what the request
    /// that started it asked for) to this file, atomically, before exiting.
    /// zinit_pid1 passes it and reads it.
    #[arg(long, value_name = "PATH")]
    after_shutdown_file: Option<PathBuf>,
    /// Every unit starts with this server's own environment as its base
    /// (then its user's HOME, USER, LOGNAME and SHELL, then the file's
    /// `env`): a container's configuration (`docker run -e`, Kubernetes env
    /// and Secrets). zinit_pid1 passes it as a container's PID 1.
    #[arg(long)]
    inherit_env: bool,
    /// The working directory of units without `dir` (instead of the user's
    /// home, or /): a container's WORKDIR. zinit_pid1 passes it as a
    /// container's PID 1.
    #[arg(long, value_name = "DIR")]
    default_dir: Option<PathBuf>,
    /// The log mode of units whose file names none: `ring` (the default)
    /// or `stdout` (the ring, and each line on this server's stdout as
    /// `[unit] line`: a container's `docker logs`). zinit_pid1 passes
    /// `stdout` as a container's PID 1.
    #[arg(long, value_name = "MODE", default_value = "ring", value_parser = ["ring", "stdout"])]
    default_log: String,
    /// Write this file (the server's pid) once the server serves: its
    /// listeners bound, the units taken over or started. zinit_pid1 passes
    /// it, to tell a server that could not start from one that crashed.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
}

/// `--shutdown-timeout`: `10s`, `500ms` or a bare number of seconds; more
/// than zero and at most 30 s.
fn parse_shutdown_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 && secs <= MAX_DEADLINE.as_secs_f64() => {
            Duration::from_secs_f64(secs)
        }
        Ok(_) => return Err(format!("{text:?} is not between 0 and 30 seconds")),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("{text:?}: {e} (examples: 10s, 500ms, 20)"))?,
    };
    if duration.is_zero() || duration > MAX_DEADLINE {
        return Err(format!(
            "{text:?}: a shutdown deadline is more than zero and at most 30 s"
        ));
    }
    Ok(duration)
}

/// The levels `--log-level` takes.
const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace", "off"];

/// Checks `--log-level`: a level, or a tracing filter whose every directive
/// without a target (`=`) is a level. A misspelt level (`warning`) would
/// otherwise read as a target name and silently log nothing.
fn log_level(text: &str) -> Result<String, String> {
    let unknown = text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.contains('=') && !d.contains('['))
        .find(|d| !LEVELS.contains(&d.to_ascii_lowercase().as_str()));
    if let Some(word) = unknown {
        return Err(format!(
            "unknown log level {word:?}: expected one of {} (or a filter such as info,zinit_supervisor=debug)",
            LEVELS.join(", ")
        ));
    }
    EnvFilter::try_new(text).map_err(|e| format!("invalid filter {text:?}: {e}"))?;
    Ok(text.to_string())
}

/// Logs to stderr: colours only on a terminal and without `NO_COLOR`;
/// module paths only when debugging.
fn init_logging(level: &str) -> Result<()> {
    let filter =
        EnvFilter::try_new(level).with_context(|| format!("invalid --log-level {level:?}"))?;
    let debugging = filter
        .max_level_hint()
        .is_some_and(|max| max >= LevelFilter::DEBUG);
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(debugging)
        .init();
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Some(dir) = &args.check {
        std::process::exit(check(dir));
    }
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("zinit_server: {e:#}");
            std::process::exit(1);
        }
    }
}

/// `--check DIR`: prints every error and warning; 0 when all files are valid.
fn check(dir: &std::path::Path) -> i32 {
    match zinit_supervisor::config::load_dir(dir) {
        Err(e) => {
            eprintln!("{e}");
            1
        }
        Ok(set) => {
            for warning in set.warnings() {
                eprintln!("warning: {warning}");
            }
            for error in set.errors() {
                eprintln!("{error}");
            }
            let (valid, invalid) = (set.services.len(), set.invalid.len());
            println!(
                "{valid} valid, {invalid} invalid service file(s) in {}",
                dir.display()
            );
            i32::from(invalid > 0)
        }
    }
}

fn run(mut args: Args) -> Result<i32> {
    init_logging(&args.log_level)?;
    if let Some(addr) = args.tcp {
        if !addr.ip().is_loopback() {
            bail!("--tcp {addr}: only loopback addresses are allowed");
        }
        if args.token_file.is_none() {
            bail!("--tcp needs --token-file");
        }
    }
    if !args.config.is_dir() {
        bail!(
            "the config directory {} does not exist",
            args.config.display()
        );
    }
    // Paths in the log, in `info` and in error messages are absolute.
    args.config = std::path::absolute(&args.config)
        .with_context(|| format!("resolving {}", args.config.display()))?;
    Host::before_threads();
    // Signals are taken by one dedicated thread (see `signals`); block them
    // before any other thread exists so none of them takes one.
    let signals = signals::block()?;

    let socket = zinit_client::socket_path(args.socket.as_deref());
    let socket = std::path::absolute(&socket).unwrap_or(socket);
    // Two workers; blocking threads only for what may block (reads of other
    // processes' memory, config files, stats) and never hundreds of them:
    // each thread is a stack and a malloc arena of its own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(serve(args, socket, signals));
    // What the exit needs is done inside `serve` (the record, socket, pid
    // file and cgroup directories are gone): the runtime's threads are not
    // waited for, which kept a finished server alive 2–3 ms longer.
    runtime.shutdown_background();
    outcome
}

async fn serve(args: Args, socket: PathBuf, signals: signals::Signals) -> Result<i32> {
    // Every listener is bound and every file read before anything starts:
    // a bad flag must not leave services running. The unix socket comes
    // last, so that a client who sees it can use the TCP listener too.
    let token = args
        .token_file
        .as_deref()
        .map(zinit_client::token::read_token_file)
        .transpose()?;
    let tcp = match (args.tcp, token) {
        (Some(addr), Some(token)) => Some((
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?,
            token,
        )),
        _ => None,
    };
    let listener = listen::bind_unix(&socket).await?;
    if let Some(path) = &args.pid_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing the pid file {}", path.display()))?;
    }
    let tcp_addr = tcp.as_ref().and_then(|(l, _)| l.local_addr().ok());
    let host = Host::prepare(&server_identity(&socket)).context("preparing to supervise")?;
    let mut options = Options::new(&args.config);
    options.cgroups = host.cgroups();
    options.record_file = Some(record_path(&socket));
    options.streams_dir = Some(streams_dir(&socket));
    options.base = zinit_supervisor::command::Base {
        inherit_env: args.inherit_env,
        default_dir: args.default_dir.clone(),
        echo_by_default: args.default_log == "stdout",
    };
    let sup = Supervisor::start(options).map_err(|e| anyhow::anyhow!("{e}"))?;
    log_takeover(sup.takeover());
    exit_if_headless(&sup, &socket, args.pid_file.clone());
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let controller = shutdown::ShutdownController::new(
        sup.clone(),
        socket.clone(),
        args.pid_file.clone(),
        args.after_shutdown_file.clone(),
    );
    let deadline = args.shutdown_timeout.unwrap_or(MAX_DEADLINE);
    signals::spawn_thread(signals, controller.clone(), sup.clone(), deadline);
    let service = control::ControlService {
        sup: sup.clone(),
        info: control::ServerInfo {
            start_time: SystemTime::now(),
            config_dir: args.config.clone(),
            socket: socket.clone(),
        },
        closing,
        shutdown: controller.clone(),
        streams: Arc::default(),
    };
    tracing::info!(
        "zinit_server {} (pid {}) on {}{}; config {}; {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        socket.display(),
        tcp_addr
            .map(|a| format!(" and tcp {a} (token required)"))
            .unwrap_or_default(),
        args.config.display(),
        match sup.cgroup_root() {
            Some(root) => format!("cgroups under {}", root.path().display()),
            None => "no cgroups (process groups)".to_string(),
        }
    );
    if let Some((left, reboot)) = sup.pending_shutdown() {
        tracing::warn!(
            "takeover: finishing the previous server's shutdown within {}",
            humantime::format_duration(Duration::from_millis(left.as_millis() as u64))
        );
        controller.start(left, false, None, reboot);
    }
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing the ready file {}", path.display()))?;
    }
    let finished = controller.finished();
    let stop = async move {
        finished.await;
        // Open streams (logs -f, events) end now, so the drain is short.
        let _ = closing_tx.send(true);
    };
    let served = listen::serve(listener, tcp, service, stop).await;
    controller.cleanup();
    served?;
    Ok(controller.exit_code())
}

/// The record a successor takes over from: beside the socket.
fn record_path(socket: &std::path::Path) -> PathBuf {
    beside(socket, ".state")
}

/// The directory of the units' output FIFOs, which outlive a server that
/// dies: beside the socket.
pub(crate) fn streams_dir(socket: &std::path::Path) -> PathBuf {
    beside(socket, ".streams")
}

fn beside(socket: &std::path::Path, suffix: &str) -> PathBuf {
    let mut path = socket.as_os_str().to_owned();
    path.push(suffix);
    PathBuf::from(path)
}

/// Says what was taken over from a previous server.
fn log_takeover(report: &zinit_supervisor::takeover::Takeover) {
    if report.is_empty() {
        return;
    }
    tracing::warn!(
        "takeover from a previous server (pid {}): adopted [{}], stopped [{}], kept exited [{}], thawed {} cgroup(s){}",
        report
            .from_pid
            .map_or_else(|| "unknown".to_string(), |p| p.to_string()),
        report.adopted.join(", "),
        report.stopped.join(", "),
        report.exited.join(", "),
        report.thawed,
        if report.finishing_shutdown {
            ", finishing its shutdown"
        } else {
            ""
        }
    );
}

/// The server exit code when the supervisor task died.
const EXIT_SUPERVISOR_FAILED: i32 = 5;

/// A server without its supervisor task must not go on answering while
/// the units run unsupervised: it says why and exits at once, leaving the
/// units and their record, so that whatever runs it (zinit_pid1, systemd)
/// restarts it and the new server takes them over.
fn exit_if_headless(sup: &Supervisor, socket: &std::path::Path, pid_file: Option<PathBuf>) {
    let failed = sup.failed();
    let emergency = sup.emergency_stop();
    let socket = socket.to_path_buf();
    tokio::spawn(async move {
        let why = failed.await;
        tracing::error!(
            "{why}; exiting with code {EXIT_SUPERVISOR_FAILED}: the units keep running, and the next server takes them over"
        );
        let _ = std::fs::remove_file(&socket);
        if let Some(path) = pid_file {
            let _ = std::fs::remove_file(path);
        }
        emergency.exit_now(EXIT_SUPERVISOR_FAILED);
    });
}

/// What names this server's cgroup directory: its PID namespace and its
/// socket. A server started again on the same socket (after a crash) finds
/// its predecessor's units; two servers running at once never share one
/// (their sockets differ, or their namespaces do).
fn server_identity(socket: &std::path::Path) -> String {
    let namespace = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|l| {
            let text = l.to_string_lossy().into_owned();
            text.strip_prefix("pid:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .unwrap_or_else(|| "0".to_string());
    let path = std::path::absolute(socket).unwrap_or_else(|_| socket.to_path_buf());
    let hash = path
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("{namespace}.{hash:016x}")
}
