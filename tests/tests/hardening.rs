//! What a less trusted party can throw at a root `zinit_server`, one table
//! of cases per class: a service user who can write its log directory or
//! the config directory (as the real unprivileged user `nobody`), a local
//! user who plants a socket or floods the TCP listener, hostile numbers and
//! structures in service files, bad flags, a flood of output with stalled
//! followers, and inputs that used to give cryptic errors. Every case must
//! leave the machine as it was and the server answering.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zinit_process::Command;
use zinit_process::spawn::Output;
use zinit_tests::{Server, Tag, workspace_bin};

const NOBODY: u32 = 65534;

/// Runs `script` with `/bin/sh` as the unprivileged user `nobody` (bounded
/// to 10 s); whether it succeeded.
async fn as_nobody(tag: &Tag, script: &str) -> bool {
    let mut child = Command::new("/bin/sh")
        .args(["-c", script, tag.as_str()])
        .user(NOBODY, NOBODY, Vec::new())
        .current_dir("/")
        .spawn()
        .expect("spawn as nobody");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the script ends")
        .expect("wait");
    status.success()
}

/// A directory that `nobody` owns.
fn nobody_dir(tag: &Tag, name: &str) -> PathBuf {
    let dir = tag.dir().join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    nix::unistd::chown(
        &dir,
        Some(nix::unistd::Uid::from_raw(NOBODY)),
        Some(nix::unistd::Gid::from_raw(NOBODY)),
    )
    .expect("chown");
    dir
}

/// A root-owned file only root may read or write: what an attacker wants
/// root to overwrite.
fn root_secret(tag: &Tag) -> PathBuf {
    let path = tag.dir().join("secret");
    std::fs::write(&path, "untouched\n").expect("secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn conf(tag: &Tag) -> PathBuf {
    let dir = tag.dir().join("conf");
    std::fs::create_dir_all(&dir).expect("conf");
    dir
}

/// Runs `zinit_server ARGS` expecting it to refuse to start: its exit code
/// and stderr (bounded to 15 s).
fn server_refuses(args: &[&str]) -> (i32, String) {
    let child = std::process::Command::new(workspace_bin("zinit_server"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn zinit_server");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(output) => output.expect("output"),
        Err(_) => {
            zinit_tests::reap_pid(pid);
            panic!("zinit_server {args:?} did not refuse within 15 s");
        }
    };
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_service_user_cannot_make_root_write_through_its_log_directory() {
    let tag = Tag::new("harden-log");
    let conf = conf(&tag);
    let secret = root_secret(&tag);
    let logs = nobody_dir(&tag, "logs");
    let sleep = tag.program("sleep").display().to_string();
    std::fs::write(
        conf.join("victim.yaml"),
        format!(
            "exec: /bin/sh -c 'while :; do echo pwned-line-of-output; {sleep} 0.05; done' {}\n\
             user: nobody\nlog:\n  file: {}/victim.log\n  max_size: 4096\n  keep: 2\n",
            tag.as_str(),
            logs.display()
        ),
    )
    .expect("service");
    let server = Server::start(&tag, &conf, &[]).await;
    server.wait_running(&["victim"]);

    // Case 1: the log file is swapped for a link to root's file, then the
    // service restarts (the log is opened again).
    assert!(
        as_nobody(
            &tag,
            &format!(
                "rm -f {d}/victim.log && ln -s {s} {d}/victim.log",
                d = logs.display(),
                s = secret.display()
            )
        )
        .await
    );
    assert_eq!(server.zinit(&["restart", "victim"]).code, 0);
    // Case 2: a rotated name is a link to root's file when rotation comes.
    assert!(
        as_nobody(
            &tag,
            &format!(
                "rm -f {d}/victim.log {d}/victim.log.1 && ln -s {s} {d}/victim.log.1",
                d = logs.display(),
                s = secret.display()
            )
        )
        .await
    );
    assert_eq!(server.zinit(&["restart", "victim"]).code, 0);
    let end = Instant::now() + Duration::from_secs(20);
    while !logs.join("victim.log.2").exists() {
        assert!(Instant::now() < end, "the log never rotated twice");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        std::fs::read_to_string(&secret).expect("secret"),
        "untouched\n",
        "root wrote through the service user's link"
    );
    let meta = std::fs::metadata(&secret).expect("secret");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        0,
        "the secret changed hands"
    );
    // The log the server wrote belongs to the service user: written with
    // that user's rights.
    let log = std::fs::symlink_metadata(logs.join("victim.log")).expect("log");
    assert!(log.is_file());
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&log), NOBODY);

    // Case 3: the log is a second name (a hard link) of another file.
    assert!(
        as_nobody(
            &tag,
            &format!(
                "echo other > {d}/other && rm -f {d}/victim.log && ln {d}/other {d}/victim.log",
                d = logs.display()
            )
        )
        .await
    );
    assert_eq!(server.zinit(&["restart", "victim"]).code, 0);
    // Case 4: the log is a FIFO nobody reads: opening it must not hang the
    // server.
    assert!(
        as_nobody(
            &tag,
            &format!(
                "rm -f {d}/victim.log && mkfifo {d}/victim.log",
                d = logs.display()
            )
        )
        .await
    );
    let restart = server.zinit(&["restart", "victim"]);
    let status = server.zinit(&["status", "victim"]);
    assert_eq!(
        status.code, 0,
        "the server still answers: {}",
        status.stderr
    );
    assert!(
        restart.code != 0 || status.stdout.contains("running"),
        "{}{}",
        restart.stderr,
        status.stdout
    );
    assert_eq!(
        std::fs::read_to_string(logs.join("other")).expect("other"),
        "other\n",
        "root wrote to a file through its second name"
    );
}

#[tokio::test]
async fn links_in_the_config_directory_are_never_written_through_or_followed_out() {
    let tag = Tag::new("harden-conf");
    let conf = conf(&tag);
    let outside = tag.dir().join("outside.yaml");
    std::fs::write(&outside, "exec: /bin/false\n").expect("outside");
    let sleep = tag.program("sleep").display().to_string();
    // web.yaml is a link out of the directory; dangling.yaml leads nowhere;
    // inside.yaml is a link to a file in the directory (allowed).
    std::os::unix::fs::symlink(&outside, conf.join("web.yaml")).expect("link");
    std::os::unix::fs::symlink(tag.dir().join("nowhere"), conf.join("dangling.yaml"))
        .expect("link");
    std::fs::write(conf.join("real.txt"), format!("exec: {sleep} 1000\n")).expect("real");
    std::os::unix::fs::symlink(conf.join("real.txt"), conf.join("inside.yaml")).expect("link");
    let server = Server::start(&tag, &conf, &[]).await;
    let list = server.zinit(&["--json", "list"]).json();
    let errors = |name: &str| {
        list["units"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|u| u["name"] == name)
            .map(|u| u["config_errors"].to_string())
            .unwrap_or_default()
    };
    let cases = [
        ("web", "outside the config directory"),
        ("dangling", "which does not exist"),
    ];
    for (name, why) in cases {
        assert!(errors(name).contains(why), "{name}: {}", errors(name));
    }
    server.wait_running(&["inside"]);
    // add replaces the link with a file of its own; the file outside stays.
    let new = tag.dir().join("web.yaml");
    std::fs::write(&new, format!("exec: {sleep} 1001\n")).expect("new");
    let added = server.zinit(&["add", &new.display().to_string()]);
    assert_eq!(added.code, 0, "{}{}", added.stdout, added.stderr);
    assert_eq!(
        std::fs::read_to_string(&outside).expect("outside"),
        "exec: /bin/false\n",
        "add wrote through a link"
    );
    let placed = std::fs::symlink_metadata(conf.join("web.yaml")).expect("placed");
    assert!(placed.is_file(), "add left a link in place");
    // --check says the same.
    let check = zinit_tests::output_within(
        std::process::Command::new(workspace_bin("zinit_server"))
            .arg("--check")
            .arg(&conf),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&check.stderr);
    assert!(text.contains("which does not exist"), "{text}");
}

#[tokio::test]
async fn the_socket_path_is_never_taken_from_someone_else() {
    let tag = Tag::new("harden-sock");
    let conf = conf(&tag);
    let conf_arg = conf.display().to_string();
    // A regular file at the socket path is refused, and left alone.
    let file = tag.dir().join("file.sock");
    std::fs::write(&file, "precious").expect("file");
    let (code, err) = server_refuses(&[
        "--config",
        &conf_arg,
        "--socket",
        &file.display().to_string(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).expect("file"), "precious");
    // A directory others may write (and not sticky) is refused; a sticky
    // one is fine.
    let open = tag.dir().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (code, err) = server_refuses(&[
        "--config",
        &conf_arg,
        "--socket",
        &open.join("s.sock").display().to_string(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("may be written by group or others"), "{err}");
    // A server planted by another user: the CLI sends it nothing.
    let planted_dir = nobody_dir(&tag, "planted");
    let planted = planted_dir.join("s.sock");
    let received = planted_dir.join("received");
    let mut listener = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import socket,sys\n\
             s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8)\n\
             c,_=s.accept(); c.settimeout(3)\n\
             data=b''\n\
             try:\n    data=c.recv(65536)\nexcept Exception:\n    pass\n\
             open(sys.argv[2],'wb').write(data)\n",
        ])
        .arg(&planted)
        .arg(&received)
        .arg(tag.as_str())
        .user(NOBODY, NOBODY, Vec::new())
        .current_dir("/")
        .stdout(Output::Null)
        .spawn()
        .expect("the planted listener (/usr/bin/python3)");
    let end = Instant::now() + Duration::from_secs(10);
    while !planted.exists() {
        assert!(Instant::now() < end, "the planted socket never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = zinit_tests::run_cli(&planted, &["info"]);
    assert_eq!(out.code, 5, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("refusing to talk to the server") && out.stderr.contains("uid 65534"),
        "{}",
        out.stderr
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), listener.wait()).await;
    assert_eq!(
        std::fs::read(&received).unwrap_or_default(),
        Vec::<u8>::new(),
        "the CLI sent bytes to a server it does not trust"
    );
}

#[tokio::test]
async fn the_tcp_listener_wants_a_real_token_and_survives_a_connection_flood() {
    let tag = Tag::new("harden-tcp");
    let conf = conf(&tag);
    let conf_arg = conf.display().to_string();
    let free_port = || {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr").port()
    };
    let token = tag.dir().join("token");
    let cases: &[(&str, u32, &str)] = &[
        ("", 0o600, "too short"),
        ("\n", 0o600, "too short"),
        ("s3cret\n", 0o600, "too short"),
        ("0123456789abcdef0123\n", 0o644, "group or others"),
    ];
    for (text, mode, why) in cases {
        std::fs::write(&token, text).expect("token");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(*mode)).expect("chmod");
        let addr = format!("127.0.0.1:{}", free_port());
        let socket = tag.dir().join("t.sock").display().to_string();
        let (code, err) = server_refuses(&[
            "--config",
            &conf_arg,
            "--socket",
            &socket,
            "--tcp",
            &addr,
            "--token-file",
            &token.display().to_string(),
        ]);
        assert_eq!(code, 1, "{text:?}: {err}");
        assert!(err.contains(why), "{text:?} {mode:o}: {err}");
    }
    // --tcp without a token file is refused.
    let socket = tag.dir().join("t.sock").display().to_string();
    let addr = format!("127.0.0.1:{}", free_port());
    let (code, err) = server_refuses(&["--config", &conf_arg, "--socket", &socket, "--tcp", &addr]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--token-file"), "{err}");

    // A good token; then a flood of idle connections.
    std::fs::write(&token, "0123456789abcdef0123\n").expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let addr = format!("127.0.0.1:{}", free_port());
    let sleep = tag.program("sleep").display().to_string();
    std::fs::write(conf.join("late.yaml"), format!("exec: {sleep} 1000\n")).expect("late");
    let server = Server::start(
        &tag,
        &conf,
        &["--tcp", &addr, "--token-file", &token.display().to_string()],
    )
    .await;
    // Only the exact token opens Control and health alike.
    let channel = tonic::transport::Endpoint::try_from(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect over TCP");
    let with = |token: &str| {
        let mut request = tonic::Request::new(zinit_proto::v1::ServerInfoRequest {});
        if !token.is_empty() {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("header"),
            );
        }
        request
    };
    let mut control = zinit_proto::v1::control_client::ControlClient::new(channel.clone());
    for wrong in [
        "",
        "0123456789abcdef012",
        "0123456789abcdef0124",
        "0123456789abcdef01234",
        "x",
    ] {
        let denied = control
            .server_info(with(wrong))
            .await
            .expect_err("a wrong token");
        assert_eq!(denied.code(), tonic::Code::Unauthenticated, "{wrong:?}");
    }
    control
        .server_info(with("0123456789abcdef0123"))
        .await
        .expect("the right token");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let denied = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect_err("health without a token");
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);

    let flood: Vec<std::net::TcpStream> = (0..300)
        .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
        .collect();
    assert!(flood.len() > 64, "the flood did not connect");
    // The unix socket answers at once, and a service can still be spawned.
    let started = Instant::now();
    assert_eq!(server.zinit(&["info"]).code, 0);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(server.zinit(&["restart", "late"]).code, 0);
    // At most 64 are kept; the others are closed by the server.
    let mut closed = 0;
    let mut kept = Vec::new();
    for mut stream in flood {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut buf = [0u8; 1];
        if matches!(std::io::Read::read(&mut stream, &mut buf), Ok(0)) {
            closed += 1;
        } else {
            kept.push(stream);
        }
    }
    assert!(closed >= 300 - 64 - 8, "only {closed} of 300 were closed");
    // The kept ones, idle, are closed after 30 s.
    let idle = Instant::now();
    for mut stream in kept {
        stream
            .set_read_timeout(Some(Duration::from_secs(45)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        loop {
            match std::io::Read::read(&mut stream, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
    let waited = idle.elapsed();
    assert!(
        waited < Duration::from_secs(40),
        "idle connections were kept {waited:?}"
    );
}

#[tokio::test]
async fn hostile_numbers_and_structures_in_files_are_errors_never_panics() {
    let tag = Tag::new("harden-num");
    let conf = conf(&tag);
    let sleep = tag.program("sleep").display().to_string();
    std::fs::write(conf.join("keep.yaml"), format!("exec: {sleep} 1000\n")).expect("keep");
    let server = Server::start(&tag, &conf, &[]).await;
    server.wait_running(&["keep"]);
    let keep = server.pid_of("keep");
    let deep = format!(
        "exec: {sleep} 1\nenv: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    // (file name, text, what the answer must say; "" = accepted)
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "capped",
            format!("exec: {sleep} 1000\nshutdown_timeout: 1e20\n"),
            "",
        ),
        (
            "capped-ms",
            format!("exec: {sleep} 1000\nstop_timeout_ms: 1e25\n"),
            "",
        ),
        (
            "interval",
            format!("exec: {sleep} 1\ntest: /bin/true\ntest_interval: 1e20\n"),
            "expected a duration from",
        ),
        (
            "years",
            format!("exec: {sleep} 1\ntest_timeout: 500000000000y\n"),
            "test_timeout",
        ),
        (
            "delay",
            format!("exec: {sleep} 1\nrestart:\n  delay: 1e30\n"),
            "restart.delay",
        ),
        (
            "backoff",
            format!("exec: {sleep} 1\nrestart:\n  max_delay: 900000000000h\n"),
            "restart.max_delay",
        ),
        (
            "size",
            format!("exec: {sleep} 1\nlog:\n  file: /tmp/x.log\n  max_size: 1e30\n"),
            "log.max_size",
        ),
        (
            "restarts",
            format!("exec: {sleep} 1\nrestart:\n  max_restarts: -1\n"),
            "restart.max_restarts",
        ),
        ("deep", deep, "nests deeper than"),
    ];
    for (name, text, expected) in &cases {
        let file = tag.dir().join(format!("{name}.yaml"));
        std::fs::write(&file, text).expect("write");
        let started = Instant::now();
        let out = server.zinit(&["add", &file.display().to_string()]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name} took {:?}",
            started.elapsed()
        );
        if expected.is_empty() {
            assert_eq!(out.code, 0, "{name}: {}{}", out.stdout, out.stderr);
        } else {
            assert_eq!(out.code, 1, "{name}: {}{}", out.stdout, out.stderr);
            assert!(out.stderr.contains(expected), "{name}: {}", out.stderr);
        }
        // The server is alive and supervising after each one.
        assert_eq!(server.pid_of("keep"), keep, "after {name}");
    }
    // Names that are the kernel's cgroup files run like any other.
    for name in ["cgroup.procs", "cgroup.kill", "memory.max"] {
        std::fs::write(
            conf.join(format!("{name}.yaml")),
            format!("exec: {sleep} 1000\n"),
        )
        .expect("write");
    }
    assert_eq!(server.zinit(&["reload"]).code, 0);
    server.wait_running(&["cgroup.procs", "cgroup.kill", "memory.max"]);
    // --check reads them all without a panic.
    let check = zinit_tests::output_within(
        std::process::Command::new(workspace_bin("zinit_server"))
            .arg("--check")
            .arg(tag.dir()),
        Duration::from_secs(30),
    );
    assert_eq!(
        check.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[tokio::test]
async fn a_bad_flag_starts_nothing() {
    let tag = Tag::new("harden-flags");
    let conf = conf(&tag);
    let sleep = tag.program("sleep").display().to_string();
    std::fs::write(conf.join("svc.yaml"), format!("exec: {sleep} 1000\n")).expect("svc");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_addr = busy.local_addr().expect("addr").to_string();
    let token = tag.dir().join("token");
    std::fs::write(&token, "0123456789abcdef0123\n").expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let socket = tag.dir().join("s.sock").display().to_string();
    let conf_arg = conf.display().to_string();
    let token_arg = token.display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--tcp", &busy_addr, "--token-file", &token_arg],
            "binding",
        ),
        (vec!["--pid-file", "/nonexistent/dir/pid"], "pid file"),
        (
            vec!["--tcp", "127.0.0.1:0", "--token-file", "/nonexistent/token"],
            "token file",
        ),
    ];
    for (extra, why) in cases {
        let mut args = vec!["--config", conf_arg.as_str(), "--socket", socket.as_str()];
        args.extend(extra.iter().copied());
        let (code, err) = server_refuses(&args);
        assert_eq!(code, 1, "{extra:?}: {err}");
        assert!(err.to_lowercase().contains(why), "{extra:?}: {err}");
        assert!(
            tag.pids().is_empty(),
            "{extra:?} started services: {:?}",
            tag.pids()
        );
    }
}

/// The resident memory of a process, in bytes.
fn rss(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

#[tokio::test]
async fn stalled_followers_of_a_flood_cost_bounded_memory() {
    let tag = Tag::new("harden-flood");
    let conf = conf(&tag);
    // 64 KiB lines, as fast as the pipe takes them.
    std::fs::write(
        conf.join("flood.yaml"),
        format!(
            "exec: /usr/bin/python3 -c \"import sys,itertools; [sys.stdout.write('x'*65535+chr(10)) for _ in itertools.count()]\" {}\n",
            tag.as_str()
        ),
    )
    .expect("flood");
    let server = Server::start(&tag, &conf, &[]).await;
    server.wait_running(&["flood"]);
    let server_pid = server.child.pid();
    // 64 followers, the bound: each is connected once its first byte came.
    let mut followers = Vec::new();
    for _ in 0..64 {
        let child = std::process::Command::new(workspace_bin("zinit"))
            .arg("--socket")
            .arg(&server.socket)
            .args(["logs", "-f", "flood"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("follower");
        followers.push(child);
    }
    let outputs: Vec<std::process::ChildStdout> = followers
        .iter_mut()
        .map(|f| f.stdout.take().expect("stdout"))
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut outputs = outputs;
        for output in &mut outputs {
            let mut byte = [0u8; 1];
            if output.read_exact(&mut byte).is_err() {
                return;
            }
        }
        let _ = tx.send(outputs);
    });
    let _outputs = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("64 followers connected and got output within 30 s");
    // 50 of them stall: they never read again.
    for follower in &followers[..50] {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(follower.id() as i32),
            nix::sys::signal::Signal::SIGSTOP,
        );
    }
    // A 65th stream beyond the bound is refused at once.
    let refused = server.zinit(&["logs", "-f", "flood"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("streams"), "{}", refused.stderr);
    let mut peak = 0;
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        peak = peak.max(rss(server_pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        peak < 128 * 1024 * 1024,
        "the server grew to {} MiB with 50 stalled followers",
        peak / (1024 * 1024)
    );
    for child in followers.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test]
async fn errors_say_what_is_wrong() {
    let tag = Tag::new("harden-errors");
    let conf = conf(&tag);
    let garbage = tag.dir().join("garbage");
    std::fs::write(&garbage, b"\x01\x02 not a program\n").expect("garbage");
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(
        conf.join("nodir.yaml"),
        "exec: /bin/true\ndir: /nonexistent/zt-dir\n",
    )
    .expect("nodir");
    std::fs::write(
        conf.join("format.yaml"),
        format!("exec: {}\nrestart: never\n", garbage.display()),
    )
    .expect("format");
    let server = Server::start(&tag, &conf, &[]).await;
    let long = "x".repeat(10_000);
    let out = server.zinit(&["status", &long]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.len() < 400, "the error repeats the whole name");
    assert!(out.stderr.contains("not a valid service"), "{}", out.stderr);
    let reasons = [
        ("nodir", "/nonexistent/zt-dir"),
        ("format", "Exec format error"),
    ];
    for (name, want) in reasons {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let status = server.zinit(&["--json", "status", name]).json();
            if status["reason"].as_str().is_some_and(|r| r.contains(want)) {
                break;
            }
            assert!(Instant::now() < end, "{name}: {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
