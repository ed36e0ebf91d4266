//! `cargo xtask demo`: a small realistic stack under a real `zinit_server`,
//! `zinit list`, then `zinit shutdown` with its live progress, and a check
//! that nothing is left. Everything runs from a temporary directory and is
//! cleaned up, whatever happens. With `--ui`, `zinit_ui` serves the page
//! beside it and the stack stays up until Enter or Ctrl+C.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, IsTerminal};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Also serve the web page (zinit_ui) and keep the stack up until Enter
    /// or Ctrl+C; the page then shows the shutdown live.
    #[arg(long)]
    pub ui: bool,
}

/// The demo's services: (name, fixture arguments, extra YAML).
fn stack(port: u16) -> Vec<(&'static str, String, String)> {
    vec![
        (
            "database",
            format!("--width 4 --term-delay-ms 800 --delay-scope root --tcp {port}"),
            format!("shutdown_timeout: 10\nports: [{port}]\n"),
        ),
        (
            "api",
            "--width 3 --depth 3".into(),
            "after: [database]\n".into(),
        ),
        (
            "workers",
            "--width 6 --depth 2 --respawn".into(),
            "after: [api]\nstop_mode: group\n".into(),
        ),
        (
            "stubborn",
            "--width 2 --depth 2 --ignore-term all".into(),
            "shutdown_timeout: 2\n".into(),
        ),
        (
            "migrate",
            "--exit-after-ms 100".into(),
            "oneshot: true\nafter: [database]\n".into(),
        ),
    ]
}

pub fn run(args: Args) -> Result<()> {
    let bins = crate::install::build_release(true)?;
    let tag = format!("zdemo-{}", std::process::id());
    let dir = std::env::temp_dir().join(&tag);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("conf"))?;
    let result = demo(&bins, &tag, &dir, args.ui);
    crate::bench::reap_tag(&tag);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Programs we did not write: a Python web server, nginx in front of it
/// (when nginx is installed), and a shell loop that logs. Each argv carries
/// the demo's tag (through its directory) so the final check sees them.
fn real_programs(tag: &str, dir: &Path) -> Result<Vec<(&'static str, String)>> {
    let web_port = free_port()?;
    let mut programs = vec![
        (
            "web",
            format!(
                "exec: python3 -m http.server {web_port} --bind 127.0.0.1 --directory {}\nafter: [api]\n",
                dir.display()
            ),
        ),
        (
            "ticker",
            format!(
                "exec: sh -c 'trap \"echo stopping; exit 0\" TERM; while :; do echo tick; sleep 1 & wait $!; done' {tag}\n"
            ),
        ),
    ];
    let nginx = Path::new("/usr/sbin/nginx");
    if nginx.exists() {
        let proxy_port = free_port()?;
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(&prefix)?;
        let d = prefix.display();
        std::fs::write(
            prefix.join("nginx.conf"),
            format!(
                "daemon off;\nmaster_process on;\nworker_processes 2;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                 server {{ listen 127.0.0.1:{proxy_port}; location / {{ proxy_pass http://127.0.0.1:{web_port}; }} }}\n}}\n"
            ),
        )?;
        programs.push((
            "proxy",
            format!(
                "exec: {} -c {d}/nginx.conf -p {d}\nafter: [web]\nports: [{proxy_port}]\n",
                nginx.display()
            ),
        ));
    }
    Ok(programs)
}

fn demo(bins: &Path, tag: &str, dir: &Path, ui: bool) -> Result<()> {
    let fixture = bins.join("zinit-fixture");
    let conf = dir.join("conf");
    for (name, args, yaml) in stack(free_port()?) {
        std::fs::write(
            conf.join(format!("{name}.yaml")),
            format!("exec: {} --tag {tag} {args}\n{yaml}", fixture.display()),
        )?;
    }
    for (name, text) in real_programs(tag, dir)? {
        std::fs::write(conf.join(format!("{name}.yaml")), text)?;
    }
    // A stray process holding nothing we declared, and one outside any tree
    // that matches a declared filter: the sweep's job.
    std::fs::write(
        conf.join("cache.yaml"),
        format!(
            "exec: {} --tag {tag} --width 1\nprocess_filters: [\"cmdline:zdemo-stray-{tag}\"]\n",
            fixture.display()
        ),
    )?;
    let socket = dir.join("zinit.sock");
    let server_log = std::fs::File::create(dir.join("server.log"))?;
    let mut server = Command::new(bins.join("zinit_server"));
    server
        .arg("--config")
        .arg(&conf)
        .arg("--socket")
        .arg(&socket)
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(server_log);
    if ui {
        // Ctrl+C ends the wait below, not the server.
        server.process_group(0);
    }
    let mut server = server.spawn().context("starting zinit_server")?;
    let mut page = None;
    let mut stray = Command::new(&fixture)
        .args(["--tag", tag, "--", &format!("zdemo-stray-{tag}")])
        .stdout(Stdio::null())
        .spawn()?;
    let zinit = |args: &[&str]| {
        Command::new(bins.join("zinit"))
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .status()
    };
    let outcome = (|| -> Result<()> {
        wait_until_running(bins, &socket)?;
        println!("$ zinit list");
        zinit(&["list"])?;
        if ui {
            page = Some(start_ui(bins, &socket, dir)?);
            wait_for_the_user("start the shutdown");
        }
        println!("\n$ zinit shutdown");
        let status = zinit(&["shutdown"])?;
        let exited = wait_exit(&mut server, Duration::from_secs(35))?;
        if ui {
            wait_for_the_user("end the demo (the page shows the shutdown's timeline)");
        }
        let left = tagged(tag);
        println!(
            "\nzinit shutdown exited {}; zinit_server exited {}; processes left with the demo's tag: {}",
            status.code().unwrap_or(-1),
            exited,
            left.len()
        );
        if !left.is_empty() {
            bail!("processes were left: {left:?}");
        }
        Ok(())
    })();
    let _ = server.kill();
    let _ = server.wait();
    if let Some(mut page) = page {
        let _ = page.kill();
        let _ = page.wait();
    }
    let _ = stray.kill();
    let _ = stray.wait();
    if outcome.is_err() {
        eprintln!(
            "server log:\n{}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
    }
    outcome
}

/// Starts `zinit_ui` for the demo's socket (on port 8090 when it is free)
/// and prints its address.
fn start_ui(bins: &Path, socket: &Path, dir: &Path) -> Result<std::process::Child> {
    let listen = if std::net::TcpListener::bind("127.0.0.1:8090").is_ok() {
        "127.0.0.1:8090"
    } else {
        "127.0.0.1:0"
    };
    let mut child = Command::new(bins.join("zinit_ui"))
        .args(["--listen", listen, "--log-level", "warn", "--socket"])
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("ui.log"))?)
        .process_group(0)
        .spawn()
        .context("starting zinit_ui")?;
    let mut line = String::new();
    let stdout = child.stdout.take().context("zinit_ui's stdout")?;
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) else {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "zinit_ui did not start: {}",
            std::fs::read_to_string(dir.join("ui.log")).unwrap_or_default()
        );
    };
    println!("\nThe web page: {url}");
    Ok(child)
}

/// Lines typed on stdin, read by one thread for the whole demo.
fn typed_lines() -> &'static std::sync::Mutex<std::sync::mpsc::Receiver<()>> {
    static LINES: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Receiver<()>>> =
        std::sync::OnceLock::new();
    LINES.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in std::io::stdin().lock().lines() {
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
        std::sync::Mutex::new(rx)
    })
}

/// Waits for Enter or Ctrl+C on a terminal; elsewhere for a few seconds.
fn wait_for_the_user(what: &str) {
    if !std::io::stdin().is_terminal() {
        println!("(stdin is not a terminal: going on in 5 s to {what})");
        std::thread::sleep(Duration::from_secs(5));
        return;
    }
    let lines = typed_lines().lock().unwrap_or_else(|e| e.into_inner());
    while lines.try_recv().is_ok() {}
    println!("Press Enter or Ctrl+C to {what}.");
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
        loop {
            if !matches!(lines.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty)) {
                return;
            }
            tokio::select! {
                _ = &mut ctrl_c => {
                    println!();
                    return;
                }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });
}

fn wait_until_running(bins: &Path, socket: &PathBuf) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new(bins.join("zinit"))
            .arg("--socket")
            .arg(socket)
            .args(["--json", "list"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && !text.contains("\"starting\"") && !text.contains("\"blocked\"") {
            // Give the trees a moment to finish forking.
            std::thread::sleep(Duration::from_millis(300));
            return Ok(());
        }
        if Instant::now() > end {
            bail!("the demo services did not start: {text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_exit(child: &mut std::process::Child, bound: Duration) -> Result<String> {
    let end = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status
                .code()
                .map_or_else(|| status.to_string(), |c| c.to_string()));
        }
        if Instant::now() > end {
            bail!("zinit_server did not exit within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Live processes with `tag` in their argv, and their descendants.
pub fn tagged(tag: &str) -> Vec<i32> {
    zinit_tests::tagged_trees(tag)
}
