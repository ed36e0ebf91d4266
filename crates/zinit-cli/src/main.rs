//! `zinit`: the command line client. It speaks gRPC to `zinit_server` over
//! its unix socket (or its loopback TCP listener with a token) and nothing
//! else.
//!
//! Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 no server, 5 permission
//! denied, 6 shutdown finished but not clean, 7 stream cut (outcome unknown).
//! `job run` exits with the job's status instead. Under `--json`, errors are
//! one JSON object on stderr (`{"error": ..., "code": ...}`), with the same
//! codes. A closed stdout (`zinit logs X | head -1`) ends it quietly with 0.

/// Prints a line on stdout (see `output::write_line`: a closed pipe ends
/// the program quietly).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}

mod commands;
mod job;
mod output;
mod progress;
mod shutdown;
mod starting;
mod stopping;

use clap::{CommandFactory, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "zinit",
    version,
    about = "Control a zinit server",
    propagate_version = true
)]
pub struct Cli {
    /// The server's socket (default: $ZINIT_SOCKET, /run/zinit.sock as root,
    /// $XDG_RUNTIME_DIR/zinit.sock, or /tmp/zinit-$UID.sock).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Reach the server on its loopback TCP listener instead (needs
    /// --token-file).
    #[arg(
        long,
        global = true,
        value_name = "ADDR",
        requires = "token_file",
        conflicts_with = "socket"
    )]
    tcp: Option<SocketAddr>,
    /// The file holding the TCP listener's token (mode 0600, at least 16
    /// bytes), sent as `authorization: Bearer TOKEN`.
    #[arg(long, global = true, value_name = "FILE", requires = "tcp")]
    token_file: Option<PathBuf>,
    /// Print JSON: one document per command, one object per line for
    /// streams; errors as one object on stderr.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List every service (and invalid file) and job.
    List,
    /// Show one service or job in detail; without NAME, every unit (as list).
    Status { name: Option<String> },
    /// Start a service; waits until it runs (or fails) unless --no-wait.
    Start {
        name: String,
        /// Return at once, without waiting until it runs or fails.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for it to become ready (10s, 500ms; a bare number is seconds).
        #[arg(long, default_value = "90s")]
        timeout: String,
    },
    /// Stop a service (its dependents keep running) or a job, with live progress.
    Stop { name: String },
    /// Stop (if running) and start a service; waits until it runs or fails.
    Restart {
        name: String,
        /// How long to wait for it to become ready (10s, 500ms; a bare number is seconds).
        #[arg(long, default_value = "90s")]
        timeout: String,
    },
    /// Validate a service file, copy it into the config directory, start it and wait until it runs.
    Add {
        file: PathBuf,
        /// Return once it is added, without waiting until it runs or fails.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for it to become ready (10s, 500ms; a bare number is seconds).
        #[arg(long, default_value = "90s")]
        timeout: String,
    },
    /// Stop a service (with live progress) and delete its file.
    Remove { name: String },
    /// Re-read the config directory (all or nothing); restarts only what changed in how it runs.
    Reload {
        /// Change nothing: print, per service, what changed and what a reload would do.
        #[arg(long)]
        dry_run: bool,
    },
    /// Send a signal (default SIGTERM) to a service's main process, or --all processes.
    Kill {
        name: String,
        signal: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Show output; -f follows it.
    Logs {
        name: Option<String>,
        /// Keep following: print new lines as they come.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N kept lines (0: none, so -f -n 0 shows only new ones).
        #[arg(short = 'n', long, value_name = "N")]
        lines: Option<u32>,
    },
    /// Stream events (state changes, restarts, job results).
    Events,
    /// Jobs: run, list, status, cancel.
    #[command(subcommand)]
    Job(JobCommand),
    /// CPU (over a quarter of a second) and memory per running unit.
    Stats { name: Option<String> },
    /// Shut everything down and end the server, with live progress.
    Shutdown {
        /// A deadline lower than 30 s, such as 10s or 500ms (a bare number is seconds).
        #[arg(long)]
        timeout: Option<String>,
        /// Skip the remaining grace (the sweep and verification still run).
        #[arg(long)]
        force: bool,
        /// Print the plan and what the sweep would target; stop nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only watch the running shutdown (its events so far, then the live
        /// ones); start none (fails when none is running).
        #[arg(long, conflicts_with_all = ["timeout", "force", "dry_run"])]
        watch: bool,
    },
    /// As shutdown, then reboot: zinit_pid1, as a machine's init, reboots
    /// instead of powering off once the shutdown has ended.
    Reboot {
        /// A deadline lower than 30 s, such as 10s or 500ms (a bare number is seconds).
        #[arg(long)]
        timeout: Option<String>,
        /// Skip the remaining grace (the sweep and verification still run).
        #[arg(long)]
        force: bool,
        /// Print the plan and what the sweep would target; stop nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Describe the server.
    Info,
    /// Exit 0 when the server answers and is serving (gRPC health), else non-zero.
    Health {
        /// Wait this long for a server that is starting (its socket not there yet).
        #[arg(long)]
        wait: Option<String>,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Run a service file from the config directory (`job run NAME`) or a
    /// command (`job run -- CMD ARGS`, run as it is, no shell) once; waits,
    /// showing its output, and exits with its exit status (128+N for a signal).
    Run {
        /// The service file's name.
        name: Option<String>,
        /// Print the job's name and return at once instead of waiting.
        #[arg(long)]
        no_wait: bool,
        /// The command, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// List jobs.
    List,
    /// Show one job.
    Status { name: String },
    /// Stop a running job, with live progress.
    Cancel { name: String },
}

/// CLI exit codes.
pub mod code {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const NO_SERVER: u8 = 4;
    pub const PERMISSION: u8 = 5;
    pub const NOT_CLEAN: u8 = 6;
    pub const STREAM_CUT: u8 = 7;
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let code = match status.code() {
            Code::NotFound => code::NOT_FOUND,
            Code::PermissionDenied | Code::Unauthenticated => code::PERMISSION,
            Code::Unavailable => code::NO_SERVER,
            Code::InvalidArgument => code::ERROR,
            _ => code::ERROR,
        };
        Self::new(code, status.message().to_string())
    }
}

impl From<zinit_client::ConnectError> for Failure {
    fn from(error: zinit_client::ConnectError) -> Self {
        use zinit_client::ConnectError as E;
        let code = match error {
            E::NoServer(_) | E::NoTcpServer(_) | E::Tcp { .. } => code::NO_SERVER,
            E::PermissionDenied(_) | E::UntrustedServer { .. } | E::UntrustedListener { .. } => {
                code::PERMISSION
            }
            E::Other { .. } => code::NO_SERVER,
            E::NotLoopback(_) => code::USAGE,
            E::Token(_) => code::ERROR,
        };
        Self::new(code, error.to_string())
    }
}

/// Says what failed on stderr (one JSON object under `--json`) and returns
/// its code.
fn report(failure: Failure, json: bool) -> ExitCode {
    if json {
        eprintln!(
            "{}",
            serde_json::json!({"error": failure.message, "code": failure.code})
        );
    } else {
        eprintln!("zinit: {}", failure.message);
    }
    ExitCode::from(failure.code)
}

/// Whether `--json` is among the arguments (before `--`), for errors found
/// before the arguments are parsed.
fn json_requested() -> bool {
    std::env::args()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let shown = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            if shown || !json_requested() {
                e.exit();
            }
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            let message = first.strip_prefix("error: ").unwrap_or(first).to_string();
            return report(Failure::new(code::USAGE, message), true);
        }
    };
    let json = cli.json;
    if let Command::Completions { shell } = &cli.command {
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut Cli::command(), "zinit", &mut script);
        output::write_raw(&script);
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return report(Failure::new(code::ERROR, e.to_string()), json),
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => report(failure, json),
    }
}
