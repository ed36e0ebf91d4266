//! The `zinit` CLI and `zinit_server` end to end, through the real binaries:
//! every command, `--json`, exit codes, bad input, socket permissions,
//! stale sockets, SIGHUP reload, `--check`, and a small load check.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zinit_tests::{Server, Tag, run_cli, wait_gone};

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
    let stop = server.zinit(&["--json", "stop", "api"]).json();
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
        .zinit(&["--json", "job", "run", "--", FIXTURE, "--tag", tag.as_str()])
        .json();
    let long = long["name"].as_str().expect("job").to_string();
    until_state(&server, &long, "running");
    let cancel = server.zinit(&["--json", "job", "cancel", &long]).json();
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
            .arg(zinit_tests::workspace_bin("zinit"))
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

    let second = std::process::Command::new(zinit_tests::workspace_bin("zinit_server"))
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
        std::process::Command::new(zinit_tests::workspace_bin("zinit_server"))
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
    let token_file = tag.dir().join("token");
    std::fs::write(&token_file, "s3cret\n").expect("token");
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
    request
        .metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().expect("header"));
    let info = client
        .server_info(request)
        .await
        .expect("with the token")
        .into_inner();
    assert_eq!(info.pid, _server.child.pid() as u32);

    // Anything but loopback is refused at start-up.
    let refused = std::process::Command::new(zinit_tests::workspace_bin("zinit_server"))
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
    let mut child = std::process::Command::new(zinit_tests::workspace_bin("zinit"))
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
