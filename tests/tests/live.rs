//! The CLI's live streams against a real server: `zinit logs -f` prints a
//! service's lines as they are written, and `zinit events` prints the
//! state changes a restart causes, in order, while it happens.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use zinit_tests::{Server, Tag, workspace_bin};

const FIXTURE: &str = env!("CARGO_BIN_EXE_zinit-fixture");

/// A `zinit` process that streams: its stdout lines arrive on a channel.
/// Dropping it kills it (it streams until then).
struct Stream {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Stream {
    fn start(server: &Server, args: &[&str]) -> Self {
        let mut child = std::process::Command::new(workspace_bin("zinit"))
            .arg("--socket")
            .arg(&server.socket)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("zinit");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The next line, waiting at most until `end`.
    fn next(&self, end: Instant) -> Option<String> {
        self.lines
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .ok()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn logs_follow_prints_new_lines_as_they_are_written() {
    let tag = Tag::new("live-logs");
    let conf = tag.dir().join("conf");
    std::fs::create_dir_all(&conf).expect("conf");
    // The fixture writes "chat N" to stderr every 50 ms.
    std::fs::write(
        conf.join("ticker.yaml"),
        format!("exec: {FIXTURE} --tag {} --chatty-ms 50\n", tag.as_str()),
    )
    .expect("service");
    let server = Server::start(&tag, &conf, &[]).await;
    server.wait_running(&["ticker"]);
    let follow = Stream::start(&server, &["logs", "-f", "ticker"]);
    let end = Instant::now() + Duration::from_secs(10);
    let mut seen: Vec<(Instant, u64)> = Vec::new();
    while seen.len() < 10 {
        let line = follow
            .next(end)
            .unwrap_or_else(|| panic!("only {} chat lines within 10 s", seen.len()));
        if let Some(n) = line
            .split_whitespace()
            .skip_while(|w| *w != "chat")
            .nth(1)
            .and_then(|n| n.parse().ok())
        {
            seen.push((Instant::now(), n));
        }
    }
    assert!(
        seen.windows(2).all(|w| w[0].1 < w[1].1),
        "in order: {seen:?}"
    );
    // Live: the lines arrive spread over time as written (every 50 ms), not
    // in one batch at the end.
    let spread = seen[9].0 - seen[5].0;
    assert!(
        spread >= Duration::from_millis(100),
        "arrived in {spread:?}"
    );
}

#[tokio::test]
async fn events_show_the_state_changes_of_a_restart_as_they_happen() {
    let tag = Tag::new("live-events");
    let conf = tag.dir().join("conf");
    std::fs::create_dir_all(&conf).expect("conf");
    std::fs::write(
        conf.join("svc.yaml"),
        format!("exec: {FIXTURE} --tag {}\n", tag.as_str()),
    )
    .expect("service");
    std::fs::write(
        conf.join("marker.yaml"),
        format!("exec: {FIXTURE} --tag {}\n", tag.as_str()),
    )
    .expect("service");
    let server = Server::start(&tag, &conf, &[]).await;
    server.wait_running(&["svc", "marker"]);
    let events = Stream::start(&server, &["--json", "events"]);
    let end = Instant::now() + Duration::from_secs(10);
    // The stream is live once it shows what happens after it started:
    // stop `marker` (again, until the stream shows it).
    'subscribed: loop {
        assert_eq!(server.zinit(&["stop", "marker"]).code, 0);
        assert_eq!(server.zinit(&["start", "marker"]).code, 0);
        while let Some(line) = events.next(Instant::now() + Duration::from_millis(500)) {
            if line.contains("\"marker\"") {
                break 'subscribed;
            }
        }
        assert!(Instant::now() < end, "the event stream showed nothing");
    }
    let restart = server.zinit(&["restart", "svc"]);
    assert_eq!(restart.code, 0, "{}", restart.stderr);
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("running") {
        let line = events
            .next(end)
            .unwrap_or_else(|| panic!("events so far: {states:?}"));
        let event: serde_json::Value = serde_json::from_str(&line).expect("json event");
        if event["unit"] == "svc" && event["kind"] == "state_changed" {
            states.push(event["to"].as_str().expect("to").to_string());
        }
    }
    assert_eq!(states, ["stopping", "stopped", "starting", "running"]);
}

#[tokio::test]
async fn a_line_longer_than_64_kib_is_kept_in_pieces() {
    let tag = Tag::new("live-long");
    let conf = tag.dir().join("conf");
    std::fs::create_dir_all(&conf).expect("conf");
    // One line of 150,000 bytes, then quiet.
    std::fs::write(
        conf.join("long.yaml"),
        format!(
            "exec: /usr/bin/python3 -c \"import sys,time; sys.stdout.write('y'*150000+chr(10)); sys.stdout.flush(); time.sleep(1000)\" {}\n",
            tag.as_str()
        ),
    )
    .expect("service");
    let server = Server::start(&tag, &conf, &[]).await;
    server.wait_running(&["long"]);
    let end = Instant::now() + Duration::from_secs(10);
    let pieces: Vec<usize> = loop {
        let out = server.zinit(&["--json", "logs", "long"]);
        let pieces: Vec<usize> = out
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["text"].as_str().map(str::len))
            .collect();
        if pieces.iter().sum::<usize>() >= 150_000 || Instant::now() > end {
            break pieces;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(pieces.iter().sum::<usize>(), 150_000, "{pieces:?}");
    assert!(pieces.len() >= 3, "{pieces:?}");
    assert!(pieces.iter().all(|&n| n <= 64 * 1024), "{pieces:?}");
}

#[tokio::test]
async fn a_follower_that_reads_nothing_for_10_s_is_dropped_with_a_message() {
    let tag = Tag::new("live-stall");
    let conf = tag.dir().join("conf");
    std::fs::create_dir_all(&conf).expect("conf");
    // Long lines, fast: the follower's buffers fill within a moment.
    std::fs::write(
        conf.join("flood.yaml"),
        format!(
            "exec: /usr/bin/python3 -c \"import sys,itertools; [sys.stdout.write('z'*60000+chr(10)) for _ in itertools.count()]\" {}\n",
            tag.as_str()
        ),
    )
    .expect("service");
    let server = Server::start(&tag, &conf, &[]).await;
    server.wait_running(&["flood"]);
    let mut follower = std::process::Command::new(workspace_bin("zinit"))
        .arg("--socket")
        .arg(&server.socket)
        .args(["logs", "-f", "flood"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("follower");
    // It reads nothing: its stdout is never read (the pipe fills), for 13 s.
    let stdout = follower.stdout.take().expect("stdout");
    tokio::time::sleep(Duration::from_secs(13)).await;
    // Now it drains what it has; the stream must have been ended.
    let drain = std::thread::spawn(move || {
        use std::io::Read;
        let mut sink = Vec::new();
        let _ = BufReader::new(stdout).read_to_end(&mut sink);
    });
    let output = zinit_tests::output_within_child(follower, Duration::from_secs(20));
    let _ = drain.join();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("read nothing for 10 s"), "{stderr}");
}

/// Kubernetes' readiness probe relies on this: gRPC health says SERVING
/// while the server runs and NOT_SERVING from the moment a shutdown begins,
/// while the units are still being stopped.
#[tokio::test]
async fn health_says_not_serving_from_the_moment_a_shutdown_begins() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let tag = Tag::new("live-health");
    let conf = tag.dir().join("conf");
    std::fs::create_dir_all(&conf).expect("conf");
    // It ignores SIGTERM and has 3 s: the shutdown lasts that long.
    std::fs::write(
        conf.join("stubborn.yaml"),
        format!(
            "exec: {FIXTURE} --tag {} --ignore-term all\nstop_timeout_ms: 3000\n",
            tag.as_str()
        ),
    )
    .expect("service");
    let token = tag.dir().join("token");
    std::fs::write(&token, "health-health-health-health\n").expect("token");
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Server::start(
        &tag,
        &conf,
        &["--tcp", &addr, "--token-file", &token.display().to_string()],
    )
    .await;
    server.wait_running(&["stubborn"]);
    let channel = tonic::transport::Endpoint::try_from(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let health = tonic_health::pb::health_client::HealthClient::new(channel);
    // The server as a whole (""), and the Control service by name.
    let status = |service: &str| {
        let mut health = health.clone();
        let mut request = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
            service: service.to_string(),
        });
        request.metadata_mut().insert(
            "authorization",
            "Bearer health-health-health-health"
                .parse()
                .expect("header"),
        );
        async move {
            health
                .check(request)
                .await
                .map(|r| r.into_inner().status)
                .expect("health")
        }
    };
    for service in ["", "zinit.v1.Control"] {
        assert_eq!(
            status(service).await,
            ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let shutdown = Stream::start(&server, &["shutdown"]);
    // The plan line says the shutdown has begun.
    let end = Instant::now() + Duration::from_secs(10);
    while !shutdown
        .next(end)
        .expect("the shutdown prints its plan")
        .contains("plan:")
    {}
    for service in ["", "zinit.v1.Control"] {
        assert_eq!(
            status(service).await,
            ServingStatus::NotServing as i32,
            "{service:?} during the shutdown"
        );
    }
    assert!(
        server.child.try_wait().expect("poll").is_none(),
        "asked while the units were still being stopped"
    );
    drop(shutdown);
    server.stop().await;
}
