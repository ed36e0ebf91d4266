//! `cargo xtask <command>`: zinit's build, test and benchmark tasks.

mod bench;
mod demo;
mod install;
mod test;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::Command;

#[derive(Parser)]
#[command(about = "zinit's build, test and benchmark tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Starts a small stack of real process trees and shuts it down with live progress.
    Demo(demo::Args),
    /// Everything a reviewer runs: fmt --check, clippy -D warnings, the whole test suite.
    Test,
    /// Benchmarks that print numbers against a baseline measured in the same run.
    Bench(bench::Args),
    /// Builds release binaries and installs them (shutting a running server down first).
    Install(install::Args),
    /// Installs release binaries into a temporary prefix and runs the shutdown scenario suite against them.
    TestShutdown,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Demo(args) => demo::run(args),
        Task::Test => test::run(),
        Task::Bench(args) => bench::run(args),
        Task::Install(args) => install::run(args),
        Task::TestShutdown => test::test_shutdown(),
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command in the workspace root, echoing it, and fails if it fails.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The cargo that runs this xtask.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}
