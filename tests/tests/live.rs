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
