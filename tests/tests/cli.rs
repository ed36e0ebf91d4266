//! The `zinit` CLI and `zinit_server` end to end, through the real binaries:
//! every command, `--json`, exit codes, bad input, socket permissions,
//! stale sockets, SIGHUP reload, `--check`, and a small load check; then
//! what a new user meets (issue 16): spawn failures, `job run`, finished
//! results, `logs -n 0`, stats, the server's log, broken pipes, JSON
//! errors, TCP, live stop progress, wording, warnings, and the original
//! zinit's service files (`tests/upstream`).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zinit_tests::{Server, Tag, run_cli, run_cli_within, run_zinit, wait_gone, workspace_bin};

const FIXTURE: &str = env!("CARGO_BIN_EXE_zinit-fixture");

fn conf_dir(tag: &Tag) -> PathBuf {
    let conf = tag.dir().join("conf");
    std::fs::create_dir_all(&conf).expect("conf");
    conf
}

fn service(tag: &Tag, conf: &Path, name: &str, args: &str, extra: &str) {
    let text = format!("exec: {FIXTURE} --tag {} {args}\n{extra}", tag.as_str());
    std::fs::write(conf.join(format!("{name}.yaml")), text).expect("write service");
}

/// Polls `zinit --json status NAME` until its state is `state` (bounded).
fn until_state(server: &Server, name: &str, state: &str) -> Value {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let out = server.zinit(&["--json", "status", name]);
        if out.code == 0 {
            let json = out.json();
            if json["state"] == state {
                return json;
            }
        }
        assert!(
            Instant::now() < end,
            "{name} never became {state}: {}{}",
            out.stdout,
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

#[tokio::test]
async fn every_command_works_against_a_running_server() {
    let tag = Tag::new("cli");
    let conf = conf_dir(&tag);
    service(&tag, &conf, "db", "--width 2 --output-lines 3", "");
    service(&tag, &conf, "api", "", "after: [db]\n");
    let server = Server::start(&tag, &conf, &[]).await;
    until_state(&server, "api", "running");

    // list, as a table and as JSON
    let out = server.zinit(&["list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("NAME"), "{}", out.stdout);
    assert!(out.stdout.contains("api") && out.stdout.contains("running"));
    let list = server.zinit(&["--json", "list"]).json();
    let names: Vec<&str> = list["units"]
        .as_array()
        .expect("units")
        .iter()
        .map(|u| u["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["api", "db"]);
    let db = until_state(&server, "db", "running");
    assert!(db["pid"].as_u64().is_some());
    assert!(db["since"].as_str().expect("rfc3339").contains('T'));

    // info
    let info = server.zinit(&["--json", "info"]).json();
    assert_eq!(info["socket"], server.socket.display().to_string());
    assert_eq!(info["pid"].as_u64(), Some(server.child.pid() as u64));

    // logs
    let logs = server.zinit(&["logs", "db", "-n", "100"]);
    assert!(logs.stdout.contains("line 3"), "{}", logs.stdout);
    let line: Value = serde_json::from_str(
        server
            .zinit(&["--json", "logs", "db"])
            .stdout
            .lines()
            .last()
            .expect("a line"),
    )
    .expect("json line");
    assert_eq!(line["unit"], "db");
    assert_eq!(line["stream"], "stdout");

    // kill, stats
    let killed = server
        .zinit(&["--json", "kill", "db", "SIGUSR1", "--all"])
        .json();
    assert_eq!(killed["pids"].as_array().expect("pids").len(), 3);
    let stats = server.zinit(&["--json", "stats", "db"]).json();
    assert_eq!(stats["stats"][0]["processes"], 3);

    // stop (its dependent keeps running and is named), start, restart
    let stop = server.zinit(&["stop", "db"]);
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    assert!(
        stop.stdout.contains("api") && stop.stdout.contains("keep"),
        "{}",
        stop.stdout
    );
    until_state(&server, "db", "stopped");
    until_state(&server, "api", "running");
    let start = server.zinit(&["--json", "start", "db"]).json();
    assert_eq!(start["state"], "running");
    let before = until_state(&server, "api", "running")["pid"].clone();
    let restart = server.zinit(&["--json", "restart", "api"]).json();
    assert_eq!(restart["state"], "running");
    assert_ne!(restart["pid"], before);
    let stop = server.zinit(&["--json", "stop", "api"]).last_json();
    assert_eq!(stop["outcome"], "graceful");
    assert!(stop["duration"].as_f64().is_some());
    assert_eq!(server.zinit(&["start", "--no-wait", "api"]).code, 0);

    // add, remove, reload
    let extra = tag.dir().join("extra.yaml");
    std::fs::write(&extra, format!("exec: {FIXTURE} --tag {}\n", tag.as_str())).expect("write");
    let added = server.zinit(&["add", extra.to_str().expect("utf-8")]);
    assert_eq!(added.code, 0, "{}", added.stderr);
    assert!(conf.join("extra.yaml").exists());
    until_state(&server, "extra", "running");
    assert_eq!(server.zinit(&["remove", "extra"]).code, 0);
    assert!(!conf.join("extra.yaml").exists());
    service(&tag, &conf, "late", "", "");
    let reload = server.zinit(&["--json", "reload"]).json();
    assert_eq!(reload["added"][0], "late");
    until_state(&server, "late", "running");

    // jobs
    let job = server
        .zinit(&[
            "--json",
            "job",
            "run",
            "--no-wait",
            "--",
            FIXTURE,
            "--tag",
            tag.as_str(),
            "--exit-after-ms",
            "50",
        ])
        .json();
    let name = job["name"].as_str().expect("job name").to_string();
    until_state(&server, &name, "exited");
    let jobs = server.zinit(&["--json", "job", "list"]).json();
    assert_eq!(jobs["jobs"][0]["name"], name.as_str());
    assert_eq!(jobs["jobs"][0]["last_exit"]["code"], 0);
    let long = server
        .zinit(&[
            "--json",
            "job",
            "run",
            "--no-wait",
            "--",
            FIXTURE,
            "--tag",
            tag.as_str(),
        ])
        .json();
    let long = long["name"].as_str().expect("job").to_string();
    until_state(&server, &long, "running");
    let cancel = server
        .zinit(&["--json", "job", "cancel", &long])
        .last_json();
    assert_eq!(cancel["job"]["state"], "stopped");
    assert_eq!(server.zinit(&["job", "status", &long]).code, 0);

    // completions need no server
    let completions = run_cli(Path::new("/nonexistent"), &["completions", "bash"]);
    assert_eq!(completions.code, 0);
    assert!(completions.stdout.contains("zinit"));
}

#[tokio::test]
async fn bad_input_gives_the_right_code_and_a_message_a_person_can_act_on() {
    let tag = Tag::new("cli-bad");
    let conf = conf_dir(&tag);
    service(&tag, &conf, "web", "", "");
    let server = Server::start(&tag, &conf, &[]).await;
    until_state(&server, "web", "running");

    let out = server.zinit(&["status", "nope"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(out.stderr.trim(), "zinit: no service or job named \"nope\"");
    let out = server.zinit(&["kill", "web", "SIGNOPE"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("unknown signal \"SIGNOPE\""),
        "{}",
        out.stderr
    );
    let out = server.zinit(&["stop", "../etc"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("not a valid service or job name"),
        "{}",
        out.stderr
    );
    let bad = tag.dir().join("bad.yaml");
    std::fs::write(&bad, "exec: /bin/x\nstop_mode: sideways\n").expect("write");
    let out = server.zinit(&["add", bad.to_str().expect("utf-8")]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(&format!(
            "{}:2: field `stop_mode` = \"sideways\"",
            bad.display()
        )),
        "{}",
        out.stderr
    );
    let out = server.zinit(&["shutdown", "--timeout", "45s"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("at most 30 s"), "{}", out.stderr);
    assert_eq!(server.zinit(&["frobnicate"]).code, 2, "usage error");
}

#[test]
fn without_a_server_the_cli_says_so_in_one_line() {
    let tag = Tag::new("cli-none");
    let socket = tag.dir().join("missing.sock");
    let out = run_cli(&socket, &["list"]);
    assert_eq!(out.code, 4);
    assert_eq!(
        out.stderr.trim(),
        format!(
            "zinit: no zinit server at {}: is zinit_server running?",
            socket.display()
        )
    );
}

#[tokio::test]
async fn only_root_and_the_server_user_may_use_the_socket() {
    let tag = Tag::new("cli-perm");
    let conf = conf_dir(&tag);
    let server = Server::start(&tag, &conf, &[]).await;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&server.socket)
            .expect("socket")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // The directories on the way must be reachable for another user.
    std::fs::set_permissions(
        tag.dir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");

    let as_nobody = |args: &[&str]| {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(workspace_bin("zinit"))
            .arg("--socket")
            .arg(&server.socket)
            .args(args)
            .output()
            .expect("setpriv");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = as_nobody(&["list", tag.as_str()]);
    assert_eq!(code, 2, "extra args are a usage error: {stderr}");
    let (code, stderr) = as_nobody(&["list"]);
    assert_eq!(code, 5, "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!("zinit: permission denied on {}", server.socket.display())
    );

    // Past the file mode, the server's own peer-credential check refuses.
    std::fs::set_permissions(
        &server.socket,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .expect("chmod");
    let (code, stderr) = as_nobody(&["list"]);
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.contains("uid 65534 may not use this zinit server"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_a_live_server_is_not() {
    let tag = Tag::new("cli-stale");
    let conf = conf_dir(&tag);
    let socket = tag.dir().join("s.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists(), "a stale socket file");
    let server = Server::start(&tag, &conf, &[]).await;
    assert_eq!(server.zinit(&["list"]).code, 0);

    let second = std::process::Command::new(workspace_bin("zinit_server"))
        .arg("--config")
        .arg(&conf)
        .arg("--socket")
        .arg(&socket)
        .output()
        .expect("second server");
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another zinit_server is already listening on"),
        "{stderr}"
    );
    assert_eq!(
        server.zinit(&["list"]).code,
        0,
        "the first server is untouched"
    );
}

#[tokio::test]
async fn sighup_reloads_the_config_directory() {
    let tag = Tag::new("cli-hup");
    let conf = conf_dir(&tag);
    let server = Server::start(&tag, &conf, &[]).await;
    service(&tag, &conf, "fresh", "", "");
    server
        .child
        .signal(zinit_process::Signal::SIGHUP)
        .expect("SIGHUP");
    until_state(&server, "fresh", "running");
}

#[tokio::test]
async fn shutdown_from_the_cli_stops_everything_and_removes_the_socket() {
    let tag = Tag::new("cli-down");
    let conf = conf_dir(&tag);
    service(&tag, &conf, "db", "--width 2", "");
    service(&tag, &conf, "api", "--width 1", "after: [db]\n");
    let pid_file = tag.dir().join("zinit.pid");
    let mut server = Server::start(
        &tag,
        &conf,
        &["--pid-file", pid_file.to_str().expect("utf-8")],
    )
    .await;
    until_state(&server, "api", "running");
    assert!(pid_file.exists());
    let pids = tag.pids();
    let out = server.zinit(&["shutdown"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("summary: clean"), "{}", out.stdout);
    assert!(
        out.stdout.contains("stopped: zinit_server"),
        "{}",
        out.stdout
    );
    // "stopped" is said only once the server process has exited (it is
    // our child: a zombie until we reap it).
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.child.pid()));
    assert!(
        stat.as_deref().map_or(true, |s| s
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))),
        "the CLI said stopped while the server still ran: {stat:?}"
    );
    assert_eq!(
        server.stop().await,
        Some(zinit_process::spawn::ExitStatus::Exited(0))
    );
    assert!(!server.socket.exists(), "socket removed");
    assert!(!pid_file.exists(), "pid file removed");
    assert!(wait_gone(&pids, tag.as_str(), Duration::from_secs(2)).is_empty());
}

#[test]
fn check_validates_a_directory_and_lists_every_error() {
    let tag = Tag::new("cli-check");
    let conf = conf_dir(&tag);
    std::fs::write(conf.join("good.yaml"), "exec: /bin/true\n").expect("write");
    let check = |dir: &Path| {
        std::process::Command::new(workspace_bin("zinit_server"))
            .arg("--check")
            .arg(dir)
            .output()
            .expect("check")
    };
    let ok = check(&conf);
    assert_eq!(ok.status.code(), Some(0));
    std::fs::write(conf.join("a.yaml"), "exec: \"\"\nports: [0]\n").expect("write");
    std::fs::write(conf.join("b.yaml"), "exec: /bin/b\nafter: [ghost]\n").expect("write");
    let bad = check(&conf);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(stderr.lines().count(), 3, "{stderr}");
    assert!(
        stderr.contains("a.yaml:1: field `exec`")
            && stderr.contains("a.yaml:2: field `ports`")
            && stderr.contains("b.yaml:2: field `after` = \"ghost\""),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&bad.stdout).contains("1 valid, 2 invalid"));
}

#[tokio::test]
async fn a_thousand_services_are_listed() {
    let tag = Tag::new("cli-many");
    let conf = conf_dir(&tag);
    for i in 0..1000 {
        std::fs::write(
            conf.join(format!("s{i:04}.yaml")),
            format!("exec: /bin/true {}\noneshot: true\n", tag.as_str()),
        )
        .expect("write");
    }
    let server = Server::start(&tag, &conf, &[]).await;
    let list = server.zinit(&["--json", "list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert_eq!(list.json()["units"].as_array().expect("units").len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_follow_a_chatty_service_in_order() {
    let tag = Tag::new("cli-follow");
    let conf = conf_dir(&tag);
    service(&tag, &conf, "chatty", "--chatty-ms 1", "");
    let server = Server::start(&tag, &conf, &[]).await;
    until_state(&server, "chatty", "running");
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let socket = server.socket.clone();
        clients.spawn(async move {
            let mut client = zinit_client::connect(&socket).await.expect("connect");
            let request = zinit_proto::v1::StreamLogsRequest {
                name: "chatty".into(),
                last: Some(1),
                follow: true,
            };
            let mut stream = client
                .stream_logs(request)
                .await
                .expect("stream")
                .into_inner();
            let (mut received, mut last_seq, mut last_chat) = (0, 0u64, 0u64);
            while received < 1000 {
                let line = stream.message().await.expect("no error").expect("open");
                assert_eq!(line.missed, 0, "no line missed");
                assert!(line.seq > last_seq, "in order");
                last_seq = line.seq;
                if let Some(n) = line.text.strip_prefix("chat ") {
                    let n: u64 = n.parse().expect("number");
                    assert!(
                        last_chat == 0 || n == last_chat + 1,
                        "consecutive: {last_chat} then {n}"
                    );
                    last_chat = n;
                    received += 1;
                }
            }
            received
        });
    }
    let deadline = Duration::from_secs(60);
    let results = tokio::time::timeout(deadline, async {
        let mut total = 0;
        while let Some(done) = clients.join_next().await {
            total += done.expect("client task");
        }
        total
    })
    .await
    .expect("fifty followers within 60 s");
    assert_eq!(results, 50 * 1000);
}

#[tokio::test]
async fn the_tcp_listener_is_loopback_only_and_needs_the_token() {
    let tag = Tag::new("cli-tcp");
    let conf = conf_dir(&tag);
    let token_file = token_file(&tag, "token", 0o600);
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("addr").port()
    };
    let addr = format!("127.0.0.1:{port}");
    let _server = Server::start(
        &tag,
        &conf,
        &[
            "--tcp",
            &addr,
            "--token-file",
            token_file.to_str().expect("utf-8"),
        ],
    )
    .await;
    let channel = tonic::transport::Endpoint::try_from(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect over TCP");
    let mut client = zinit_proto::v1::control_client::ControlClient::new(channel);
    let denied = client
        .server_info(zinit_proto::v1::ServerInfoRequest {})
        .await
        .expect_err("no token");
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);
    let mut request = tonic::Request::new(zinit_proto::v1::ServerInfoRequest {});
    request.metadata_mut().insert(
        "authorization",
        "Bearer 0123456789abcdef0123456789abcdef"
            .parse()
            .expect("header"),
    );
    let info = client
        .server_info(request)
        .await
        .expect("with the token")
        .into_inner();
    assert_eq!(info.pid, _server.child.pid() as u32);

    // Anything but loopback is refused at start-up.
    let refused = std::process::Command::new(workspace_bin("zinit_server"))
        .arg("--config")
        .arg(&conf)
        .arg("--socket")
        .arg(tag.dir().join("other.sock"))
        .args(["--tcp", "0.0.0.0:1", "--token-file"])
        .arg(&token_file)
        .output()
        .expect("run");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only loopback addresses"));

    // So is a token too short to guess only slowly.
    let short = tag.dir().join("short");
    std::fs::write(&short, "s3cret\n").expect("token");
    std::fs::set_permissions(&short, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let (code, stderr) = server_within(
        tag.dir(),
        &[
            "--config",
            conf.to_str().expect("utf-8"),
            "--socket",
            tag.dir().join("short.sock").to_str().expect("utf-8"),
            "--tcp",
            &format!("127.0.0.1:{}", free_port()),
            "--token-file",
            short.to_str().expect("utf-8"),
        ],
        QUICK,
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is too short"), "{stderr}");
}

#[tokio::test]
async fn on_a_terminal_the_shutdown_shows_a_live_progress_display() {
    let tag = Tag::new("cli-tty");
    let conf = conf_dir(&tag);
    service(&tag, &conf, "slow", "--term-delay-ms 1500", "");
    service(&tag, &conf, "quick", "--width 2", "");
    let mut server = Server::start(&tag, &conf, &[]).await;
    until_state(&server, "slow", "running");
    until_state(&server, "quick", "running");

    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = || std::process::Stdio::from(pty.slave.try_clone().expect("dup slave"));
    let mut child = std::process::Command::new(workspace_bin("zinit"))
        .arg("--socket")
        .arg(&server.socket)
        .arg("shutdown")
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .spawn()
        .expect("zinit shutdown on a pty");
    drop(pty.slave);
    let master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut master = master;
        let mut screen = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the last slave descriptor closes (the CLI exited).
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            screen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&screen).into_owned()
    });
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll") {
            break status;
        }
        assert!(Instant::now() < end, "zinit shutdown did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    let screen = reader.join().expect("reader");
    assert_eq!(status.code(), Some(0), "{screen}");
    assert!(
        screen.contains("units stopped"),
        "a progress bar was drawn: {screen}"
    );
    assert!(
        screen.contains("blocking: slow pid"),
        "what blocks is shown: {screen}"
    );
    assert!(screen.contains("summary: clean"), "{screen}");
    assert!(screen.contains("stopped: zinit_server"), "{screen}");
    assert!(
        screen.contains('\u{1b}'),
        "terminal control sequences were used"
    );
    assert_eq!(
        server.stop().await,
        Some(zinit_process::spawn::ExitStatus::Exited(0))
    );
}

// ---- What a new user meets (issue 16) ----

/// The bound for commands that used to hang.
const QUICK: Duration = Duration::from_secs(10);

/// A private token file (mode 0600) holding a 32-byte token.
fn token_file(tag: &Tag, name: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = tag.dir().join(name);
    std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").expect("token");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

/// A free loopback port.
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    probe.local_addr().expect("addr").port()
}

/// Runs `zinit_server ARGS` in `dir` with stderr to a file; kills it after
/// `bound`. Returns its exit code (None if killed) and its stderr.
fn server_within(dir: &Path, args: &[&str], bound: Duration) -> (Option<i32>, String) {
    let log = dir.join(format!("server-{}.log", args.len()));
    let mut child = std::process::Command::new(workspace_bin("zinit_server"))
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("zinit_server");
    let end = Instant::now() + bound;
    let code = loop {
        if let Some(status) = child.try_wait().expect("poll") {
            break status.code();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Runs `zinit ARGS` and reads its stdout line by line until `enough` says
/// so or `bound` passes; then kills it. Returns the lines read.
fn read_stream(args: &[&str], bound: Duration, enough: impl Fn(&[String]) -> bool) -> Vec<String> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(workspace_bin("zinit"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("zinit");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let end = Instant::now() + bound;
    let mut lines = Vec::new();
    while !enough(&lines) {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[tokio::test]
async fn a_program_that_cannot_be_started_fails_start_restart_and_add_at_once() {
    let tag = Tag::new("cli-spawnfail");
    let conf = conf_dir(&tag);
    let missing = tag.dir().join("doesnotexist");
    std::fs::write(
        conf.join("ghost.yaml"),
        format!("exec: {}\n", missing.display()),
    )
    .expect("write");
    std::fs::write(
        conf.join("nodir.yaml"),
        format!(
            "exec: {} 600\ndir: {}\n",
            tag.program("sleep").display(),
            tag.dir().join("no-such-dir").display()
        ),
    )
    .expect("write");
    let server = Server::start(&tag, &conf, &[]).await;
    let nodir = tag.dir().join("no-such-dir");
    for (name, why) in [
        (
            "ghost",
            format!("executing {}: No such file or directory", missing.display()),
        ),
        (
            "nodir",
            format!("the working directory {} does not exist", nodir.display()),
        ),
    ] {
        for command in ["start", "restart"] {
            let out = run_cli_within(&server.socket, &[command, name], QUICK);
            assert_eq!(
                out.code, 1,
                "{command} {name}: {}{}",
                out.stdout, out.stderr
            );
            assert!(
                out.stderr
                    .contains(&format!("{name} failed: cannot start: {why}")),
                "{command} {name}: {}",
                out.stderr
            );
        }
        let status = server.zinit(&["--json", "status", name]).json();
        assert_eq!(status["state"], "failed", "{status}");
        assert_eq!(status["restarts"], 0, "no back-off: {status}");
    }
    // `add` adds the file, then says that it could not start.
    let late = tag.dir().join("late.yaml");
    std::fs::write(&late, format!("exec: {}\n", missing.display())).expect("write");
    let out = run_cli_within(
        &server.socket,
        &["add", late.to_str().expect("utf-8")],
        QUICK,
    );
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("late was added (its file stays in the config directory) but could not start: cannot start: executing"),
        "{}",
        out.stderr
    );
    assert!(conf.join("late.yaml").exists(), "the file stays added");
    assert_eq!(
        server.zinit(&["--json", "status", "late"]).json()["state"],
        "failed"
    );
}

#[tokio::test]
async fn job_run_passes_the_argv_as_it_is_waits_and_exits_with_the_jobs_status() {
    let tag = Tag::new("cli-jobrun");
    let conf = conf_dir(&tag);
    let server = Server::start(&tag, &conf, &[]).await;
    let run = |argv: &[&str]| {
        let mut args = vec!["job", "run", "--"];
        args.extend_from_slice(argv);
        run_cli_within(&server.socket, &args, QUICK)
    };
    let (truth, echo, sh, seq) = (
        tag.program("true"),
        tag.program("echo"),
        tag.program("sh"),
        tag.program("seq"),
    );
    let path = |p: &PathBuf| p.to_str().expect("utf-8").to_string();
    let (truth, echo, sh, seq) = (path(&truth), path(&echo), path(&sh), path(&seq));

    // Words YAML would have read as a boolean, a mapping, a flow list.
    let out = run(&[&truth]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "");
    let out = run(&[&echo, "a: b", "--", "[x]", "{y}", "yes"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "a: b -- [x] {y} yes\n");

    // Its stdout and stderr as the CLI's own; its exit status as the CLI's.
    let out = run(&[&sh, "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    let out = run(&[&sh, "-c", "kill -TERM $$"]);
    assert_eq!(out.code, 128 + 15, "a signal is 128+N: {}", out.stderr);

    // A quick, loud job: no line is lost between its start and the follow.
    let out = run(&[&seq, "1", "5000"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let numbers: Vec<u32> = out
        .stdout
        .lines()
        .map(|l| l.parse().expect("number"))
        .collect();
    assert_eq!(numbers, (1..=5000).collect::<Vec<_>>());

    // --json: its lines, then the result.
    let out = run_cli_within(
        &server.socket,
        &["--json", "job", "run", "--", &sh, "-c", "echo hi; exit 2"],
        QUICK,
    );
    assert_eq!(out.code, 2);
    let lines = out.json_lines();
    assert_eq!(lines[0]["text"], "hi");
    let result = lines.last().expect("result");
    assert_eq!(result["kind"], "result");
    assert_eq!(result["exit_code"], 2);
    assert_eq!(result["job"]["last_exit"]["code"], 2);

    // --no-wait: the name, at once.
    let out = server.zinit(&["job", "run", "--no-wait", "--", &sh, "-c", "exit 4"]);
    assert_eq!(out.code, 0);
    let name = out.stdout.trim().to_string();
    assert!(name.starts_with("job-"), "{name}");
    server.wait_state(&name, "failed");

    // A program that cannot start: 1, and why.
    let missing = tag.dir().join("doesnotexist");
    let out = run(&[missing.to_str().expect("utf-8")]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("cannot start: executing"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn stopping_a_unit_that_has_ended_keeps_its_result_and_says_nothing_was_running() {
    let tag = Tag::new("cli-keep");
    let conf = conf_dir(&tag);
    service(
        &tag,
        &conf,
        "crashed",
        "--exit-after-ms 50 --exit-code 2",
        "restart: never\n",
    );
    let server = Server::start(&tag, &conf, &[]).await;
    let sh = tag.program("sh");
    let out = server.zinit(&[
        "job",
        "run",
        "--no-wait",
        "--",
        sh.to_str().expect("utf-8"),
        "-c",
        "exit 3",
    ]);
    let job = out.stdout.trim().to_string();
    server.wait_state(&job, "failed");
    server.wait_state("crashed", "failed");

    let out = server.zinit(&["job", "cancel", &job]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "{job}: nothing was running (failed, main process exit 3"
        )),
        "{}",
        out.stdout
    );
    let after = server.zinit(&["--json", "job", "status", &job]).json();
    assert_eq!(after["state"], "failed", "{after}");
    assert_eq!(after["last_exit"]["code"], 3, "{after}");
    assert!(
        after["reason"]
            .as_str()
            .expect("reason")
            .contains("exit code 3"),
        "{after}"
    );

    let out = server.zinit(&["--json", "stop", "crashed"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let result = out.last_json();
    assert_eq!(result["outcome"], "nothing_running", "{result}");
    assert_eq!(result["unit"]["state"], "failed", "{result}");
    let after = server.zinit(&["--json", "status", "crashed"]).json();
    assert_eq!(after["state"], "failed", "{after}");
    assert_eq!(after["last_exit"]["code"], 2, "{after}");
}

#[tokio::test]
async fn logs_n_0_prints_nothing_and_follows_only_new_lines_as_tail_does() {
    let tag = Tag::new("cli-tail");
    let conf = conf_dir(&tag);
    service(
        &tag,
        &conf,
        "chatty",
        "--chatty-ms 100 --output-lines 3",
        "",
    );
    let server = Server::start(&tag, &conf, &[]).await;
    until_state(&server, "chatty", "running");
    let chat = |line: &str| -> Option<u64> {
        line.rsplit_once("chat ")
            .and_then(|(_, n)| n.trim().parse().ok())
    };
    // Wait for some history.
    let end = Instant::now() + QUICK;
    let last_kept = loop {
        let out = server.zinit(&["logs", "chatty", "-n", "1"]);
        if let Some(n) = out.stdout.lines().last().and_then(chat).filter(|n| *n >= 3) {
            break n;
        }
        assert!(Instant::now() < end, "no chat: {}", out.stdout);
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = server.zinit(&["logs", "chatty", "-n", "0"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "", "-n 0 prints no kept line");
    let socket = server.socket.to_str().expect("utf-8");
    let lines = read_stream(
        &["--socket", socket, "logs", "-f", "-n", "0", "chatty"],
        QUICK,
        |lines| !lines.is_empty(),
    );
    let first = lines.first().unwrap_or_else(|| panic!("nothing followed"));
    let n = chat(first).unwrap_or_else(|| panic!("not a new chat line: {first}"));
    assert!(
        n > last_kept,
        "the history came first: {first} (last kept: {last_kept})"
    );
}

#[tokio::test]
async fn stats_measure_cpu_over_a_window_from_the_first_call_on() {
    let tag = Tag::new("cli-stats");
    let conf = conf_dir(&tag);
    std::fs::write(
        conf.join("busy.yaml"),
        format!(
            "exec: {} -c 'while :; do :; done'\n",
            tag.program("sh").display()
        ),
    )
    .expect("write");
    let server = Server::start(&tag, &conf, &[]).await;
    until_state(&server, "busy", "running");
    for call in ["first", "an immediate second"] {
        let stats = server.zinit(&["--json", "stats", "busy"]).json();
        let cpu = stats["stats"][0]["cpu_percent"].as_f64().expect("cpu");
        // A busy loop gets a fair share even on a loaded machine.
        assert!(
            cpu > 10.0,
            "the {call} call measured {cpu}% for a busy loop"
        );
    }
}

#[tokio::test]
async fn the_server_logs_plain_text_with_absolute_paths_and_its_tcp_address() {
    let tag = Tag::new("cli-log");
    let conf = conf_dir(&tag);
    let token = token_file(&tag, "token", 0o600);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // Relative paths, from the tag's directory; stderr is a file.
    let log = tag.dir().join("server.log");
    let mut child = std::process::Command::new(workspace_bin("zinit_server"))
        .args([
            "--config",
            "conf",
            "--socket",
            "s.sock",
            "--log-level",
            "info",
        ])
        .args(["--tcp", &addr, "--token-file"])
        .arg(&token)
        .current_dir(tag.dir())
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("zinit_server");
    let socket = tag.dir().join("s.sock");
    let end = Instant::now() + QUICK;
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < end, "no server");
        std::thread::sleep(Duration::from_millis(20));
    }
    let info = run_cli(&socket, &["--json", "info"]).json();
    let out = run_cli(&socket, &["shutdown"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(child.wait().expect("exit").success());
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        !text.contains('\u{1b}'),
        "no colours off a terminal: {text}"
    );
    assert!(
        !text.contains("zinit_supervisor::") && !text.contains("zinit_server::"),
        "no module paths at info: {text}"
    );
    assert!(
        text.contains(&format!("{}; config {}", "token required)", conf.display())),
        "the start-up line names the absolute config directory: {text}"
    );
    assert!(
        text.contains(&format!("tcp {addr}")),
        "the TCP address: {text}"
    );
    assert_eq!(info["config_dir"], conf.display().to_string());
    assert_eq!(info["socket"], socket.display().to_string());
}

#[tokio::test]
async fn the_log_has_colours_only_on_a_terminal_and_never_with_no_color() {
    let tag = Tag::new("cli-colour");
    let conf = conf_dir(&tag);
    for no_color in [None, Some("1")] {
        let socket = tag.dir().join("c.sock");
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let mut command = std::process::Command::new(workspace_bin("zinit_server"));
        command
            .arg("--config")
            .arg(&conf)
            .arg("--socket")
            .arg(&socket)
            .args(["--log-level", "info"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(
                pty.slave.try_clone().expect("dup"),
            ));
        match no_color {
            Some(value) => command.env("NO_COLOR", value),
            None => command.env_remove("NO_COLOR"),
        };
        let mut child = command.spawn().expect("zinit_server");
        // Only the server may hold the terminal: the reader ends when it exits.
        drop(command);
        drop(pty.slave);
        let master = std::fs::File::from(pty.master);
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut master = master;
            let mut screen = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&screen).into_owned()
        });
        let end = Instant::now() + QUICK;
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < end, "no server");
            std::thread::sleep(Duration::from_millis(20));
        }
        let down = run_cli_within(&socket, &["shutdown"], QUICK);
        let end = Instant::now() + QUICK;
        let status = loop {
            if let Some(status) = child.try_wait().expect("poll") {
                break Some(status);
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let screen = reader.join().expect("reader");
        assert!(
            status.is_some_and(|s| s.success()),
            "the server did not exit cleanly ({status:?}; shutdown: {}{}): {screen}",
            down.stdout,
            down.stderr
        );
        assert!(screen.contains("zinit_server"), "{screen}");
        match no_color {
            None => assert!(
                screen.contains("\u{1b}["),
                "colours on a terminal: {screen}"
            ),
            Some(_) => assert!(!screen.contains('\u{1b}'), "NO_COLOR: {screen}"),
        }
    }
}

#[test]
fn a_misspelt_log_level_is_refused_with_the_valid_ones() {
    let tag = Tag::new("cli-level");
    let conf = conf_dir(&tag);
    let socket = tag.dir().join("l.sock");
    for level in ["warning", "verbose", "bogus", "info,zinit_supervisor=loud"] {
        let (code, stderr) = server_within(
            tag.dir(),
            &[
                "--config",
                conf.to_str().expect("utf-8"),
                "--socket",
                socket.to_str().expect("utf-8"),
                "--log-level",
                level,
            ],
            QUICK,
        );
        assert_eq!(code, Some(2), "--log-level {level}: {stderr}");
        if !level.contains('=') {
            assert!(
                stderr.contains("error, warn, info, debug, trace, off"),
                "--log-level {level}: {stderr}"
            );
        }
    }
}

#[test]
fn the_binaries_give_their_own_names_and_version() {
    for (binary, name) in [("zinit_server", "zinit_server"), ("zinit", "zinit")] {
        let out = std::process::Command::new(workspace_bin(binary))
            .arg("--version")
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION")),
            "{binary} --version"
        );
    }
}

#[tokio::test]
async fn a_closed_pipe_ends_the_cli_quietly() {
    let tag = Tag::new("cli-pipe");
    let conf = conf_dir(&tag);
    service(&tag, &conf, "db", "--output-lines 200", "");
    let server = Server::start(&tag, &conf, &[]).await;
    until_state(&server, "db", "running");
    let socket = server.socket.to_str().expect("utf-8");
    for args in [
        vec!["logs", "db"],
        vec!["logs", "-f", "db"],
        vec!["status"],
        vec!["list"],
        vec!["completions", "bash"],
    ] {
        // A pipe whose reader is gone before the CLI writes a byte.
        let (read, write) = nix::unistd::pipe().expect("pipe");
        drop(read);
        let child = std::process::Command::new(workspace_bin("zinit"))
            .arg("--socket")
            .arg(socket)
            .args(&args)
            .stdout(std::process::Stdio::from(write))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("zinit");
        let (tx, rx) = std::sync::mpsc::channel();
        let pid = child.id() as i32;
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(QUICK) {
            Ok(out) => out.expect("output"),
            Err(_) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                panic!("zinit {args:?} kept running on a closed pipe");
            }
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "zinit {args:?}: {stderr}");
        assert!(stderr.is_empty(), "zinit {args:?} said: {stderr}");
    }
}

#[tokio::test]
async fn under_json_errors_are_one_json_object_on_stderr_with_the_same_codes() {
    let tag = Tag::new("cli-jsonerr");
    let conf = conf_dir(&tag);
    service(&tag, &conf, "web", "", "");
    let server = Server::start(&tag, &conf, &[]).await;
    until_state(&server, "web", "running");
    let check = |out: zinit_tests::CliOutput, code: i32, what: &str| {
        assert_eq!(out.code, code, "{what}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{what}");
        let error: Value = serde_json::from_str(out.stderr.trim())
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", out.stderr));
        assert_eq!(error["code"], code, "{what}: {error}");
        assert!(
            error["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {error}"
        );
        error
    };
    let error = check(server.zinit(&["--json", "status", "nope"]), 3, "not found");
    assert_eq!(error["error"], "no service or job named \"nope\"");
    check(
        server.zinit(&["--json", "kill", "web", "SIGNOPE"]),
        1,
        "bad signal",
    );
    check(server.zinit(&["--json", "frobnicate"]), 2, "usage");
    check(
        server.zinit(&["frobnicate", "--json"]),
        2,
        "usage, flag last",
    );
    let missing = tag.dir().join("missing.sock");
    check(run_cli(&missing, &["--json", "list"]), 4, "no server");
}

#[tokio::test]
async fn status_without_a_name_shows_every_unit() {
    let tag = Tag::new("cli-statusall");
    let conf = conf_dir(&tag);
    service(&tag, &conf, "web", "", "");
    service(&tag, &conf, "db", "", "");
    let server = Server::start(&tag, &conf, &[]).await;
    until_state(&server, "web", "running");
    let out = server.zinit(&["status"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("NAME"), "{}", out.stdout);
    assert!(out.stdout.contains("web") && out.stdout.contains("db"));
    let all = server.zinit(&["--json", "status"]).json();
    assert_eq!(all["units"].as_array().expect("units").len(), 2);
}

#[tokio::test]
async fn the_cli_reaches_the_tcp_listener_with_a_private_token_file() {
    let tag = Tag::new("cli-tcpcli");
    let conf = conf_dir(&tag);
    service(&tag, &conf, "web", "", "");
    let token = token_file(&tag, "token", 0o600);
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start(
        &tag,
        &conf,
        &[
            "--tcp",
            &addr,
            "--token-file",
            token.to_str().expect("utf-8"),
        ],
    )
    .await;
    until_state(&server, "web", "running");
    let tcp = |token: &Path, args: &[&str]| {
        let mut all = vec![
            "--tcp",
            &addr,
            "--token-file",
            token.to_str().expect("utf-8"),
        ];
        all.extend_from_slice(args);
        run_zinit(&all, QUICK)
    };
    let info = tcp(&token, &["--json", "info"]);
    assert_eq!(info.code, 0, "{}", info.stderr);
    assert_eq!(info.json()["pid"].as_u64(), Some(server.child.pid() as u64));
    let list = tcp(&token, &["list"]);
    assert!(list.stdout.contains("web"), "{}", list.stdout);
    // A token file others may read is refused before anything is sent.
    let loose = token_file(&tag, "loose", 0o644);
    let out = tcp(&loose, &["list"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("may be read by group or others"),
        "{}",
        out.stderr
    );
    // Only loopback, and --tcp needs --token-file.
    let out = run_zinit(
        &[
            "--tcp",
            "10.0.0.1:1",
            "--token-file",
            token.to_str().expect("utf-8"),
            "list",
        ],
        QUICK,
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(run_zinit(&["--tcp", &addr, "list"], QUICK).code, 2);
    // A wrong token: permission denied.
    let wrong = tag.dir().join("wrong");
    std::fs::write(&wrong, "ffffffffffffffffffffffffffffffff").expect("write");
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    assert_eq!(tcp(&wrong, &["list"]).code, 5);
}

#[tokio::test]
async fn stop_and_remove_show_their_progress_as_they_go() {
    let tag = Tag::new("cli-progress");
    let conf = conf_dir(&tag);
    for name in ["stubborn", "other"] {
        service(
            &tag,
            &conf,
            name,
            "--ignore-term all --width 1",
            "stop_timeout_ms: 2000\n",
        );
    }
    let server = Server::start(&tag, &conf, &[]).await;
    until_state(&server, "stubborn", "running");
    until_state(&server, "other", "running");
    let out = server.zinit(&["stop", "stubborn"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for what in [
        "stubborn         stopping: SIGTERM (tree), budget 2.0s",
        "SIGTERM -> pid",
        "waiting for pid",
        "SIGKILL -> pid",
        "stopped in",
        ": killed (0 graceful, 2 killed",
    ] {
        assert!(out.stdout.contains(what), "no {what:?} in:\n{}", out.stdout);
    }
    let out = server.zinit(&["--json", "remove", "other"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = out.json_lines();
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l["kind"].as_str().expect("kind"))
        .collect();
    for kind in [
        "unit_stopping",
        "signal_sent",
        "still_waiting",
        "unit_stopped",
        "result",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    assert_eq!(kinds.last(), Some(&"result"));
    let result = lines.last().expect("result");
    assert_eq!(result["removed"], "other");
    assert_eq!(result["stop"]["outcome"], "killed", "{result}");
    assert!(!conf.join("other.yaml").exists());
}

#[tokio::test]
async fn the_wording_is_plain() {
    let tag = Tag::new("cli-words");
    let conf = conf_dir(&tag);
    service(&tag, &conf, "db", "", "");
    service(&tag, &conf, "api", "", "after: [db]\n");
    let server = Server::start(&tag, &conf, &[]).await;
    until_state(&server, "api", "running");
    let out = server.zinit(&["start", "db"]);
    let pid = server.pid_of("db");
    assert_eq!(out.stdout, format!("db: running (pid {pid})\n"));
    let out = server.zinit(&["stop", "db"]);
    assert!(
        out.stdout.contains("stopped in")
            && out.stdout.contains(": graceful (1 graceful, 0 killed"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .ends_with("note: api depends on db and keeps running\n"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("main -"), "{}", out.stdout);
    let down = server.zinit(&["shutdown"]);
    assert!(
        down.stdout.contains("plan: stopping 1 unit within"),
        "{}",
        down.stdout
    );
}

#[tokio::test]
async fn a_capped_stop_timeout_is_warned_about_at_start_up_and_on_add() {
    let tag = Tag::new("cli-warn");
    let conf = conf_dir(&tag);
    service(&tag, &conf, "slow", "", "shutdown_timeout: 60\n");
    let server = Server::start(&tag, &conf, &[]).await;
    server.wait_log("stop timeout 60 s is above the 30 s limit; using 30 s");
    let file = tag.dir().join("later.yaml");
    std::fs::write(
        &file,
        format!(
            "exec: {FIXTURE} --tag {}\nstop_timeout_ms: 45000\n",
            tag.as_str()
        ),
    )
    .expect("write");
    let out = server.zinit(&["add", file.to_str().expect("utf-8")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("zinit: warning:")
            && out
                .stderr
                .contains("stop timeout 45 s is above the 30 s limit"),
        "{}",
        out.stderr
    );
    server.wait_log("stop timeout 45 s is above the 30 s limit");
}

#[test]
fn the_readme_tells_grpcurl_users_to_set_the_authority_first() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README");
    let section = readme
        .split("## Other clients")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("an Other clients section");
    let first_grpcurl = section.find("grpcurl").expect("grpcurl");
    assert!(
        section[..first_grpcurl + 200].contains("-authority localhost"),
        "the grpcurl part leads with -authority localhost:\n{section}"
    );
    for line in section
        .lines()
        .filter(|l| l.trim_start().starts_with("grpcurl "))
    {
        assert!(line.contains("-authority localhost"), "{line}");
    }
}

/// The upstream-style files with the test's tag in place of `upstream-test`.
fn upstream_conf(tag: &Tag) -> PathBuf {
    let conf = conf_dir(tag);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/upstream");
    for entry in std::fs::read_dir(dir).expect("tests/upstream").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("read");
            std::fs::write(
                conf.join(path.file_name().expect("name")),
                text.replace("upstream-test", tag.as_str()),
            )
            .expect("write");
        }
    }
    conf
}

#[test]
fn the_original_zinits_files_pass_the_check_unchanged() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/upstream");
    let out = std::process::Command::new(workspace_bin("zinit_server"))
        .arg("--check")
        .arg(dir)
        .output()
        .expect("check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let files = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .count();
    assert!(files >= 14, "one file per documented field");
    assert!(
        stdout.contains(&format!("{files} valid, 0 invalid")),
        "{stdout}"
    );
    assert!(stderr.is_empty(), "{stderr}");
}

#[tokio::test]
async fn the_original_zinits_files_run_under_a_real_server() {
    let tag = Tag::new("cli-upstream");
    let conf = upstream_conf(&tag);
    let server = Server::start(&tag, &conf, &[]).await;
    until_state(&server, "oneshot", "exited");
    for name in [
        "exec",
        "test",
        "after",
        "signal",
        "signal_lower",
        "shutdown_timeout",
        "log_ring",
        "log_stdout",
        "log_null",
        "env",
        "dir",
        "dir_empty",
        "everything",
    ] {
        server.wait_running(&[name]);
    }
    let env = zinit_tests::Inherited::of(server.pid_of("env"));
    assert_eq!(env.var("KEY1"), Some("VALUE1"));
    assert_eq!(env.var("PORT"), Some("8080"));
    assert_eq!(
        zinit_tests::Inherited::of(server.pid_of("dir")).cwd,
        Path::new("/tmp")
    );
    assert_eq!(
        zinit_tests::Inherited::of(server.pid_of("dir_empty")).cwd,
        Path::new("/")
    );
    let ring = server.zinit(&["logs", "log_ring"]);
    assert!(ring.stdout.contains("to the ring"), "{}", ring.stdout);
    assert_eq!(server.zinit(&["logs", "log_null"]).stdout, "");
    // signal.stop: SIGINT, which its trap turns into a clean exit.
    let stop = server.zinit(&["--json", "stop", "signal"]).last_json();
    assert_eq!(stop["outcome"], "graceful", "{stop}");
    let down = server.zinit(&["shutdown"]);
    assert_eq!(down.code, 0, "{}{}", down.stdout, down.stderr);
}

#[tokio::test]
async fn a_valid_file_that_depends_on_an_invalid_one_waits_for_it() {
    let tag = Tag::new("cli-blocked");
    let conf = conf_dir(&tag);
    service(&tag, &conf, "broken", "", "stop_signal: NOPE\n");
    service(&tag, &conf, "web", "", "after: [broken]\n");
    let server = Server::start(&tag, &conf, &[]).await;
    let web = until_state(&server, "web", "blocked");
    let reason = web["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("waiting for broken: its file is invalid (")
            && reason.contains("broken.yaml:2: field `stop_signal`"),
        "{web}"
    );
    assert_eq!(
        web["config_errors"].as_array().map(Vec::len),
        Some(0),
        "{web}"
    );
    let broken = server.zinit(&["--json", "status", "broken"]).json();
    assert_eq!(broken["state"], "invalid", "{broken}");
    let out = run_cli_within(&server.socket, &["start", "web"], QUICK);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("web cannot start: waiting for broken: its file is invalid ("),
        "{}",
        out.stderr
    );
    let check = std::process::Command::new(workspace_bin("zinit_server"))
        .arg("--check")
        .arg(&conf)
        .output()
        .expect("check");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stdout).contains("1 valid, 1 invalid"));
    assert!(
        stderr.contains("web will wait for broken, whose service file is invalid"),
        "{stderr}"
    );
}

#[test]
fn the_readme_cli_reference_names_every_command_and_flag() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README");
    let section = readme
        .split("## The CLI")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a CLI section");
    let help = |args: &[&str]| {
        let out = std::process::Command::new(workspace_bin("zinit"))
            .args(args)
            .arg("--help")
            .output()
            .expect("help");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    /// The entries of a help section (`Commands:` or `Options:`).
    fn entries(help: &str, heading: &str) -> Vec<String> {
        help.split(heading)
            .nth(1)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter_map(|l| {
                let word = l
                    .split_whitespace()
                    .find(|w| w.starts_with("--") || !w.starts_with('-'))?;
                Some(word.trim_end_matches(',').to_string())
            })
            .filter(|w| w != "help" && w != "--help" && w != "--version")
            .collect()
    }
    let mut missing = Vec::new();
    let top = help(&[]);
    for command in entries(&top, "Commands:") {
        if !section.contains(&command) {
            missing.push(command.clone());
        }
        let mut path = vec![command.as_str()];
        let sub = help(&path);
        for flag in entries(&sub, "Options:") {
            if !section.contains(&flag) {
                missing.push(format!("{command} {flag}"));
            }
        }
        if command == "job" {
            for job in entries(&sub, "Commands:") {
                path = vec!["job", &job];
                for flag in entries(&help(&path), "Options:") {
                    if !section.contains(&flag) {
                        missing.push(format!("job {job} {flag}"));
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in the README's CLI section: {missing:?}"
    );
}

/// The defaults the README's CLI reference promises: `kill NAME` sends
/// SIGTERM to the main process only; `logs` without a name shows every
/// unit and `-n N` only the last N lines; `start --no-wait` answers before
/// the unit is ready while `start` on a oneshot waits until it exited;
/// `shutdown --watch` never starts a shutdown; `reboot` outside zinit_pid1
/// is a shutdown; the server honours `ZINIT_SOCKET` and refuses a
/// `--shutdown-timeout` beyond 30 s.
#[tokio::test]
async fn the_defaults_the_cli_reference_promises() {
    let tag = Tag::new("cli-defaults");
    let conf = conf_dir(&tag);
    let log = tag.dir().join("tree.log");
    let flag = tag.dir().join("ready");
    service(
        &tag,
        &conf,
        "tree",
        &format!("--log {} --width 2 --output-lines 3", log.display()),
        "",
    );
    service(&tag, &conf, "other", "--output-lines 2", "");
    service(
        &tag,
        &conf,
        "slow",
        "",
        &format!(
            "test: /bin/sh -c 'test -f {}' {}\ntest_interval: 50ms\n",
            flag.display(),
            tag.as_str()
        ),
    );
    service(
        &tag,
        &conf,
        "once",
        "--exit-after-ms 300",
        "oneshot: true\n",
    );
    let server = Server::start(&tag, &conf, &[]).await;
    server.wait_running(&["tree", "other"]);

    // kill NAME: SIGTERM, to the main process only.
    assert_eq!(server.zinit(&["kill", "tree"]).code, 0);
    let end = Instant::now() + Duration::from_secs(5);
    let signals = loop {
        let signals: Vec<zinit_tests::LogLine> = zinit_tests::read_log(&log)
            .into_iter()
            .filter(|l| l.kind == "signal")
            .collect();
        if !signals.is_empty() || Instant::now() > end {
            break signals;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(signals.len(), 1, "{signals:?}");
    assert_eq!(signals[0].sig.as_deref(), Some("SIGTERM"));
    assert_eq!(signals[0].depth, 0, "the main process");

    // logs: every unit without a name; -n N cuts to the last N lines.
    let all = server.zinit(&["logs"]);
    assert_eq!(all.code, 0, "{}", all.stderr);
    assert!(
        all.stdout.contains("[tree]") || all.stdout.contains("tree"),
        "{}",
        all.stdout
    );
    assert!(all.stdout.contains("other"), "{}", all.stdout);
    // Running does not mean its two lines were read yet: wait for them
    // (bounded) before cutting to the last one.
    let end = Instant::now() + Duration::from_secs(10);
    while server.zinit(&["logs", "other"]).stdout.lines().count() < 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let last = server.zinit(&["logs", "other", "-n", "1"]);
    assert_eq!(last.stdout.lines().count(), 1, "{}", last.stdout);

    // start --no-wait answers while the unit is still starting; start on a
    // oneshot waits until it exited.
    assert_eq!(server.zinit(&["stop", "slow"]).code, 0);
    let quick = server.zinit(&["--json", "start", "slow", "--no-wait"]);
    assert_eq!(quick.code, 0, "{}", quick.stderr);
    assert_eq!(
        until_state(&server, "slow", "starting")["state"],
        "starting"
    );
    std::fs::write(&flag, "").expect("flag");
    until_state(&server, "slow", "running");
    assert_eq!(server.zinit(&["stop", "once"]).code, 0);
    let began = Instant::now();
    let once = server.zinit(&["--json", "start", "once"]);
    assert_eq!(once.code, 0, "{}", once.stderr);
    assert!(
        began.elapsed() >= Duration::from_millis(300),
        "start returned before the oneshot exited"
    );
    assert_eq!(
        server.zinit(&["--json", "status", "once"]).json()["state"],
        "exited"
    );

    // shutdown --watch with no shutdown running starts none.
    let watch = server.zinit(&["shutdown", "--watch"]);
    assert_ne!(watch.code, 0, "{}", watch.stdout);
    assert_eq!(server.zinit(&["status", "tree"]).code, 0, "still serving");
    assert_eq!(
        server.zinit(&["--json", "status", "other"]).json()["state"],
        "running"
    );

    // reboot outside zinit_pid1: a shutdown like any other.
    let reboot = server.zinit(&["reboot"]);
    assert_eq!(reboot.code, 0, "{}{}", reboot.stdout, reboot.stderr);
    assert!(
        reboot.stdout.contains("summary: clean"),
        "{}",
        reboot.stdout
    );

    // The server honours ZINIT_SOCKET and caps --shutdown-timeout at 30 s.
    let socket = tag.dir().join("env.sock");
    let mut env_server = std::process::Command::new(workspace_bin("zinit_server"))
        .arg("--config")
        .arg(&conf)
        .env("ZINIT_SOCKET", &socket)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("server");
    let end = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < end, "no socket at ZINIT_SOCKET");
        std::thread::sleep(Duration::from_millis(20));
    }
    let down = run_cli(&socket, &["shutdown"]);
    assert_eq!(down.code, 0, "{}{}", down.stdout, down.stderr);
    let _ = env_server.wait();
    let conf_text = conf.display().to_string();
    let (code, stderr) = server_within(
        &conf,
        &[
            "--config",
            &conf_text,
            "--shutdown-timeout",
            "45s",
            "--socket",
            "/nonexistent/x.sock",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("30"), "{stderr}");
}

/// The record beside the socket names the server that wrote it: a second
/// server on the same path refuses to start while that server still runs,
/// even when the socket file itself was removed (so the live-socket check
/// cannot see it), and the first server goes on untouched.
#[tokio::test]
async fn a_second_server_refuses_while_the_one_that_wrote_the_record_runs() {
    let tag = Tag::new("cli-record");
    let conf = conf_dir(&tag);
    service(&tag, &conf, "web", "", "");
    let mut first = Server::start(&tag, &conf, &[]).await;
    first.wait_running(&["web"]);
    let web = first.pid_of("web");
    std::fs::remove_file(&first.socket).expect("remove the socket file");
    let conf_text = conf.display().to_string();
    let socket_text = first.socket.display().to_string();
    let (code, stderr) = server_within(
        &conf,
        &["--config", &conf_text, "--socket", &socket_text],
        Duration::from_secs(15),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("still runs") && stderr.contains(&first.child.pid().to_string()),
        "{stderr}"
    );
    assert!(
        first.child.try_wait().expect("poll").is_none(),
        "the first server was touched"
    );
    assert!(
        zinit_tests::carries_tag(web, tag.as_str()),
        "web was touched"
    );
    first.stop().await;
}

/// `zinit health`: 0 while the server serves, 1 once its shutdown has
/// begun (its units still stopping), 4 without a server; `--wait` waits for
/// a server that is still starting.
#[tokio::test]
async fn health_says_serving_not_serving_or_no_server_and_can_wait() {
    let tag = Tag::new("cli-health");
    let conf = conf_dir(&tag);
    let socket = tag.dir().join("s.sock");
    let out = run_cli_within(&socket, &["health"], QUICK);
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
    // Waiting for a server that starts meanwhile.
    let waiting = {
        let socket = socket.clone();
        std::thread::spawn(move || run_cli_within(&socket, &["health", "--wait", "20s"], QUICK))
    };
    std::thread::sleep(Duration::from_millis(300));
    // Its stop command takes 2 s, whatever the program does with signals.
    let slow_stop = format!(
        "stop: {} 2\nstop_timeout_ms: 5000\n",
        tag.program("sleep").display()
    );
    service(&tag, &conf, "stubborn", "", &slow_stop);
    let server = Server::start(&tag, &conf, &[]).await;
    let out = waiting.join().expect("the waiting client");
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout.trim(), "serving");
    server.wait_running(&["stubborn"]);
    // A shutdown that takes 2 s: meanwhile not serving.
    let shutdown = {
        let socket = socket.clone();
        std::thread::spawn(move || run_cli_within(&socket, &["shutdown"], Duration::from_secs(30)))
    };
    let end = Instant::now() + Duration::from_secs(2);
    let seen = loop {
        let out = run_cli_within(&socket, &["--json", "health"], QUICK);
        if out.code == 1 {
            break out;
        }
        if Instant::now() >= end {
            let done = shutdown.join().expect("shutdown");
            panic!(
                "never not serving: {}{}; the shutdown said {}{}",
                out.stdout, out.stderr, done.stdout, done.stderr
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(seen.json()["status"], "not serving");
    assert_eq!(shutdown.join().expect("shutdown").code, 0);
}
