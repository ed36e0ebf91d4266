//! Scenarios that run in a process (or PID namespace) of their own through
//! the probe binary: the child subreaper, and a forced PID reuse.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zinit_tests::Tag;

const FIXTURE: &str = env!("CARGO_BIN_EXE_zinit-fixture");
const PROBE: &str = env!("CARGO_BIN_EXE_zinit-probe");

/// Runs a probe scenario (bounded to 60 s) and asserts it printed `ok`.
fn run_probe(prefix: &[&str], scenario: &str, tag: &Tag) {
    let mut command = Command::new(prefix.first().copied().unwrap_or(PROBE));
    if !prefix.is_empty() {
        command.args(&prefix[1..]).arg(PROBE);
    }
    let mut child = command
        .args([scenario, "--tag", tag.as_str(), "--fixture", FIXTURE])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start probe");
    let end = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("poll probe").is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("probe {scenario} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("probe output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(&format!("ok {scenario}")),
        "probe {scenario} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_subreaper_adopts_double_forked_daemons_and_reaps_them_without_stealing_statuses() {
    let tag = Tag::new("reaper");
    run_probe(&[], "reaper", &tag);
    assert!(tag.pids().is_empty(), "left: {:?}", tag.pids());
}

#[test]
fn a_stale_handle_never_signals_the_process_that_reused_its_pid() {
    let tag = Tag::new("pidreuse");
    run_probe(
        &["unshare", "--pid", "--fork", "--mount-proc"],
        "pid-reuse",
        &tag,
    );
    assert!(tag.pids().is_empty(), "left: {:?}", tag.pids());
}
