//! `cargo xtask install [--prefix DIR] [--socket PATH] [--restart]`: builds
//! release binaries and installs them. A server running on the socket is shut
//! down gracefully first (with live progress), unless it is PID 1 or runs
//! under zinit_pid1 as PID 1 (its shutdown would end the machine or the
//! container).

use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Install into DIR/bin.
    #[arg(long, default_value = "/usr/local")]
    pub prefix: PathBuf,
    /// The socket of a server to shut down first (default: the usual rules).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Start the server again afterwards, with the same config and socket.
    #[arg(long)]
    pub restart: bool,
}

/// The binaries that get installed.
pub const BINARIES: &[&str] = &["zinit_server", "zinit", "zinit_ui", "zinit_pid1"];

/// Builds the release binaries (with the fixture when `fixture`); returns
/// the directory they are in.
pub fn build_release(fixture: bool) -> Result<PathBuf> {
    // `--workspace`: one feature set for every release build, so nothing
    // is compiled twice.
    let mut args = vec![
        "build",
        "--release",
        "--quiet",
        "--workspace",
        "--bin",
        "zinit_server",
        "--bin",
        "zinit",
        "--bin",
        "zinit_ui",
        "--bin",
        "zinit_pid1",
    ];
    if fixture {
        args.extend(["--bin", "zinit-fixture"]);
    }
    crate::run(&crate::cargo(), &args)?;
    Ok(crate::root().join("target/release"))
}

/// Copies the binaries into `prefix/bin`, each through a temporary file and a
/// rename, so a running binary is never overwritten in place.
pub fn install_binaries(from: &Path, prefix: &Path) -> Result<()> {
    let bin = prefix.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    for name in BINARIES {
        let target = bin.join(name);
        let temp = bin.join(format!(".{name}.new"));
        std::fs::copy(from.join(name), &temp).with_context(|| format!("copying {name}"))?;
        std::fs::rename(&temp, &target)
            .with_context(|| format!("installing {}", target.display()))?;
        println!("installed {}", target.display());
    }
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    let built = build_release(false)?;
    let socket = match &args.socket {
        Some(path) => path.clone(),
        None => zinit_client::socket_path(None),
    };
    let zinit = built.join("zinit");
    let info = Command::new(&zinit)
        .arg("--socket")
        .arg(&socket)
        .args(["--json", "info"])
        .output()?;
    let mut restart_with = None;
    if info.status.success() {
        let info = parse_info(&String::from_utf8_lossy(&info.stdout))?;
        if info.pid == 1 && is_machine_init() {
            bail!(
                "the zinit_server on {} is PID 1 of this machine; not shutting it down (install the binaries another way and reboot)",
                socket.display()
            );
        }
        if under_zinit_pid1(info.pid) {
            bail!(
                "the zinit_server on {} (pid {}) runs under zinit_pid1 as PID 1: its shutdown would end \
                 the machine or container; not shutting it down (install the binaries another way, then \
                 reboot or restart the container)",
                socket.display(),
                info.pid
            );
        }
        println!(
            "shutting down zinit_server (pid {}) on {} first:",
            info.pid,
            socket.display()
        );
        let status = Command::new(&zinit)
            .arg("--socket")
            .arg(&socket)
            .arg("shutdown")
            .status()?;
        if !status.success() {
            println!(
                "note: zinit shutdown exited {}",
                status.code().unwrap_or(-1)
            );
        }
        let end = Instant::now() + Duration::from_secs(30);
        while running(info.pid) {
            if Instant::now() > end {
                bail!(
                    "zinit_server (pid {}) did not exit within 30 s; not replacing the binaries",
                    info.pid
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        restart_with = Some(info);
    }
    install_binaries(&built, &args.prefix)?;
    if args.restart {
        let Some(info) = restart_with else {
            println!("no server was running; nothing to restart");
            return Ok(());
        };
        let server = args.prefix.join("bin/zinit_server");
        let log = std::fs::File::create(std::env::temp_dir().join("zinit_server.log"))?;
        // Its own session: it outlives this command and ignores our terminal.
        let child = Command::new(&server)
            .process_group(0)
            .arg("--config")
            .arg(&info.config_dir)
            .arg("--socket")
            .arg(&socket)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .context("restarting zinit_server")?;
        println!(
            "restarted {} (pid {}), logging to {}",
            server.display(),
            child.id(),
            std::env::temp_dir().join("zinit_server.log").display()
        );
    }
    Ok(())
}

/// Whether `pid` is alive (a zombie has exited).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Whether `pid` (as seen here) is a child of PID 1 and PID 1 is zinit_pid1.
fn under_zinit_pid1(pid: u32) -> bool {
    let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse::<u32>()
                .ok()
        });
    ppid == Some(1)
        && std::fs::read_to_string("/proc/1/comm").is_ok_and(|comm| comm.trim() == "zinit_pid1")
}

/// Whether we are in the machine's own PID namespace (so PID 1 is the machine's init).
fn is_machine_init() -> bool {
    std::fs::read_link("/proc/self/ns/pid").ok() == std::fs::read_link("/proc/1/ns/pid").ok()
}

/// What `zinit --json info` says that install needs.
struct Info {
    pid: u32,
    config_dir: String,
}

fn parse_info(json: &str) -> Result<Info> {
    let value: serde_json::Value = serde_json::from_str(json).context("zinit --json info")?;
    Ok(Info {
        pid: value["pid"].as_u64().context("pid")? as u32,
        config_dir: value["config_dir"]
            .as_str()
            .context("config_dir")?
            .to_string(),
    })
}
