//! `cargo xtask demo`: a small realistic stack under a real `zinit_server`,
//! `zinit list`, then `zinit shutdown` with its live progress, and a check
//! that nothing is left. Everything runs from a temporary directory and is
//! cleaned up, whatever happens. With `--ui`, `zinit_ui` serves the page
//! beside it and the stack stays up until Enter or Ctrl+C. With `--pid1`,
//! the same stack runs under `zinit_pid1` as PID 1 of a private PID
//! namespace (`unshare --pid --fork --mount-proc`), as in a container, and a
//! SIGTERM to it (what `docker stop` or the kubelet sends) ends it, watched
//! live with `zinit shutdown --watch`.

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
    /// Run the stack under zinit_pid1 as PID 1 of a private PID namespace and
    /// end it with SIGTERM, as a container runtime would.
    #[arg(long, conflicts_with = "ui")]
    pub pid1: bool,
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
    let result = if args.pid1 {
        demo_pid1(&bins, &tag, &dir)
    } else {
        demo(&bins, &tag, &dir, args.ui)
    };
    zinit_tests::reap_tagged(&tag, Duration::from_secs(10));
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

/// Writes the demo's service files into `dir/conf`.
fn write_stack(bins: &Path, tag: &str, dir: &Path) -> Result<()> {
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
    Ok(())
}

fn demo(bins: &Path, tag: &str, dir: &Path, ui: bool) -> Result<()> {
    write_stack(bins, tag, dir)?;
    let fixture = bins.join("zinit-fixture");
    let conf = dir.join("conf");
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
        let left = zinit_tests::tagged_trees(tag);
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

/// `--pid1`: the stack under zinit_pid1 in its own PID namespace, ended by
/// a SIGTERM to it, watched live.
fn demo_pid1(bins: &Path, tag: &str, dir: &Path) -> Result<()> {
    write_stack(bins, tag, dir)?;
    let socket = dir.join("zinit.sock");
    let log_path = dir.join("pid1.log");
    println!(
        "$ unshare --pid --fork --mount-proc zinit_pid1 --config {} --socket {}",
        dir.join("conf").display(),
        socket.display()
    );
    // A cgroup of its own, as a container runtime gives a container: the
    // server's unit cgroups go below it, apart from any other server's.
    let cgroup = zinit_process::CgroupRoot::detect_as(tag).map(|r| r.path().to_path_buf());
    let mut init = match &cgroup {
        Some(dir) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg("echo 0 > \"$0/cgroup.procs\" && exec \"$@\"")
                .arg(dir)
                .arg("unshare");
            sh
        }
        None => Command::new("unshare"),
    };
    let mut init = init
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(bins.join("zinit_pid1"))
        .arg("--config")
        .arg(dir.join("conf"))
        .arg("--socket")
        .arg(&socket)
        .args(["--log-level", "info"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()
        .context("starting unshare and zinit_pid1")?;
    let zinit = |args: &[&str]| {
        Command::new(bins.join("zinit"))
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .status()
    };
    let pid1_lines = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("zinit_pid1:"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let outcome = (|| -> Result<()> {
        let pid1 = child_of(init.id() as i32)?;
        wait_until_running(bins, &socket)?;
        // A process outside the server's tree, entered into the namespace as
        // `docker exec` would, matching a declared filter: the sweep's job.
        let mut stray = Command::new("nsenter")
            .arg("--target")
            .arg(pid1.to_string())
            .args(["--pid", "--mount", "--"])
            .arg(bins.join("zinit-fixture"))
            .args(["--tag", tag, "--", &format!("zdemo-stray-{tag}")])
            .stdout(Stdio::null())
            .spawn()?;
        println!("$ zinit list");
        zinit(&["list"])?;
        println!(
            "\n$ kill -TERM {pid1}    # zinit_pid1, PID 1 of the namespace: what docker stop or the kubelet sends"
        );
        let began = Instant::now();
        // SAFETY: a plain kill of the zinit_pid1 we just started.
        if unsafe { libc::kill(pid1, libc::SIGTERM) } != 0 {
            bail!("cannot signal zinit_pid1 (pid {pid1})");
        }
        println!("$ zinit shutdown --watch");
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let watch = Command::new(bins.join("zinit"))
                .arg("--socket")
                .arg(&socket)
                .args(["shutdown", "--watch"])
                .stderr(Stdio::piped())
                .spawn()?
                .wait_with_output()?;
            let why = String::from_utf8_lossy(&watch.stderr);
            if watch.status.success() || !why.contains("no shutdown is running") {
                eprint!("{why}");
                break;
            }
            if Instant::now() > end {
                bail!("the shutdown did not begin: {why}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let code = wait_exit(&mut init, Duration::from_secs(35))?;
        // nsenter ends with what it entered.
        let _ = stray.wait();
        println!("\nzinit_pid1's log:");
        for line in pid1_lines() {
            println!("  {line}");
        }
        let left = zinit_tests::tagged_trees(tag);
        println!(
            "\nzinit_pid1 exited {code} {:.2}s after the SIGTERM; the namespace is gone; processes left with the demo's tag: {}",
            began.elapsed().as_secs_f64(),
            left.len()
        );
        if !left.is_empty() {
            bail!("processes were left: {left:?}");
        }
        if code != "0" {
            bail!("zinit_pid1 exited {code}, not 0");
        }
        Ok(())
    })();
    // --kill-child: killing unshare ends zinit_pid1 and the namespace.
    let _ = init.kill();
    let _ = init.wait();
    if let Some(dir) = &cgroup {
        remove_cgroups(dir);
    }
    if outcome.is_err() {
        eprintln!(
            "log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
    outcome
}

/// Removes a cgroup and those below it, deepest first, once it is empty.
fn remove_cgroups(dir: &Path) {
    let end = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(dir.join("cgroup.events"))
        .map_or(true, |e| e.contains("populated 0"))
        && Instant::now() < end
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    fn remove(dir: &Path) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove(&entry.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    remove(dir);
}

/// The child of `parent` (zinit_pid1, the child of unshare), waited for.
fn child_of(parent: i32) -> Result<i32> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let table = zinit_process::ProcessTable::snapshot(zinit_process::Detail::Basic)?;
        if let Some(&child) = table.children(parent).first() {
            return Ok(child);
        }
        if Instant::now() > end {
            bail!("zinit_pid1 did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
            bail!("it did not exit within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
