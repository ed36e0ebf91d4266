//! `zinit`: the command line client. It speaks gRPC to `zinit_server` over
//! its unix socket and nothing else.
//!
//! Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 no server, 5 permission
//! denied, 6 shutdown finished but not clean, 7 stream cut (outcome unknown).

mod commands;
mod output;
mod shutdown;

use clap::{CommandFactory, Parser, Subcommand};
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
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Print JSON: one document per command, one object per line for streams.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List every service (and invalid file) and job.
    List,
    /// Show one service or job.
    Status { name: String },
    /// Start a service; waits until it runs (or fails) unless --no-wait.
    Start {
        name: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop a service (its dependents keep running) or a job.
    Stop { name: String },
    /// Stop (if running) and start a service.
    Restart { name: String },
    /// Validate a service file, copy it into the config directory and start it.
    Add { file: PathBuf },
    /// Stop a service and delete its file.
    Remove { name: String },
    /// Re-read the config directory (all or nothing).
    Reload,
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
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(short = 'n', long)]
        lines: Option<u32>,
    },
    /// Stream events (state changes, restarts, job results).
    Events,
    /// Jobs: run, list, status, cancel.
    #[command(subcommand)]
    Job(JobCommand),
    /// CPU and memory per running unit.
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
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Run a service file from the config directory (`job run NAME`) or a
    /// command (`job run -- CMD ARGS`) once.
    Run {
        /// The service file's name.
        name: Option<String>,
        /// The command, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// List jobs.
    List,
    /// Show one job.
    Status { name: String },
    /// Stop a running job.
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
        let code = match error {
            zinit_client::ConnectError::NoServer(_) => code::NO_SERVER,
            zinit_client::ConnectError::PermissionDenied(_)
            | zinit_client::ConnectError::UntrustedServer { .. } => code::PERMISSION,
            zinit_client::ConnectError::Other { .. } => code::NO_SERVER,
        };
        Self::new(code, error.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(*shell, &mut Cli::command(), "zinit", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("zinit: {e}");
            return ExitCode::from(code::ERROR);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("zinit: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
