//! Stopping real process trees: order, completeness, escalation, modes, and
//! the hostile shapes of the brief (section 5), in cgroup and fallback mode.

use std::time::Duration;
use zinit_process::stop::{StopEvent, StopMode, StopOutcome, StopSpec, stop};
use zinit_process::{CgroupRoot, Members, Signal};
use zinit_tests::{Tag, Tree, all_alive, read_log, spawn_fixture, wait_gone};

const FIXTURE: &str = env!("CARGO_BIN_EXE_zinit-fixture");

fn spec(timeout_ms: u64) -> StopSpec {
    StopSpec {
        timeout: Duration::from_millis(timeout_ms),
        ..StopSpec::default()
    }
}

async fn start(tag: &Tag, root: &Option<CgroupRoot>, name: &str, args: &[&str]) -> Tree {
    let cgroup = root
        .as_ref()
        .map(|r| r.create(name).expect("create unit cgroup"));
    let tree = spawn_fixture(FIXTURE, tag, args, cgroup).await;
    let expected_alive: Vec<i32> = tree
        .procs
        .iter()
        .filter(|p| p.role != "zombie")
        .map(|p| p.pid)
        .collect();
    assert!(
        all_alive(&expected_alive, tag.as_str()),
        "tree alive before the stop"
    );
    tree
}

/// Stops the tree, reaps its root, and asserts that every reported process is gone.
async fn stop_and_check(tag: &Tag, tree: &mut Tree, spec: &StopSpec) -> zinit_process::StopReport {
    let members = Members::of_child(&tree.child);
    let report = stop(&members, spec, None).await.expect("stop runs");
    zinit_tests::reaped(&mut tree.child).await;
    let left = wait_gone(&tree.pids(), tag.as_str(), Duration::from_secs(2));
    assert!(left.is_empty(), "survivors {left:?} after {report:#?}");
    report
}

fn mode_name(root: &Option<CgroupRoot>) -> &'static str {
    if root.is_some() { "cgroup" } else { "fallback" }
}

#[tokio::test]
async fn a_polite_tree_stops_deepest_first_and_gracefully() {
    let tag = Tag::new("polite");
    for root in tag.cgroup_modes() {
        let mut tree = start(&tag, &root, "polite", &["--width", "3", "--depth", "4"]).await;
        let report = stop_and_check(&tag, &mut tree, &spec(10_000)).await;
        assert_eq!(
            report.outcome,
            StopOutcome::Graceful,
            "{}",
            mode_name(&root)
        );
        let log = read_log(&tree.log);
        let signals: Vec<_> = log.iter().filter(|l| l.kind == "signal").collect();
        assert_eq!(signals.len(), 13, "every process got exactly one signal");
        for line in &signals {
            assert_eq!(line.sig.as_deref(), Some("SIGTERM"));
            assert_eq!(
                line.live_children,
                Some(0),
                "{} mode: pid {} at depth {} was signalled while children lived",
                mode_name(&root),
                line.pid,
                line.depth
            );
        }
        // Deeper levels were signalled before shallower ones.
        for pair in signals.windows(2) {
            assert!(pair[0].depth >= pair[1].depth, "order {signals:#?}");
        }
    }
}

#[tokio::test]
async fn a_chain_fifty_deep_stops_completely_in_order() {
    let tag = Tag::new("chain50");
    for root in tag.cgroup_modes() {
        let mut tree = start(&tag, &root, "chain", &["--width", "1", "--depth", "50"]).await;
        assert_eq!(tree.procs.len(), 51);
        let report = stop_and_check(&tag, &mut tree, &spec(20_000)).await;
        assert_eq!(report.outcome, StopOutcome::Graceful);
        let log = read_log(&tree.log);
        assert!(
            log.iter()
                .filter(|l| l.kind == "signal")
                .all(|l| l.live_children == Some(0))
        );
    }
}

#[tokio::test]
async fn a_tree_of_three_hundred_processes_stops_completely() {
    let tag = Tag::new("wide300");
    for root in tag.cgroup_modes() {
        let mut tree = start(&tag, &root, "wide", &["--width", "30", "--depth", "10"]).await;
        assert_eq!(tree.procs.len(), 301);
        let report = stop_and_check(&tag, &mut tree, &spec(20_000)).await;
        assert_eq!(
            report.outcome,
            StopOutcome::Graceful,
            "{}",
            mode_name(&root)
        );
        assert_eq!(report.exit_counts(), (301, 0));
    }
}

#[tokio::test]
async fn a_root_that_ignores_term_is_killed_when_the_timeout_ends() {
    let tag = Tag::new("ignoreroot");
    for root in tag.cgroup_modes() {
        let mut tree = start(
            &tag,
            &root,
            "stubborn",
            &["--width", "2", "--depth", "2", "--ignore-term", "root"],
        )
        .await;
        let report = stop_and_check(&tag, &mut tree, &spec(1_000)).await;
        assert_eq!(report.outcome, StopOutcome::Killed);
        let escalated_at = report
            .events
            .iter()
            .find_map(|e| match e {
                StopEvent::Escalating { at, remaining } => Some((*at, *remaining)),
                _ => None,
            })
            .expect("escalation event");
        assert_eq!(escalated_at.1, 1, "only the root was left");
        assert!(
            escalated_at.0 >= Duration::from_millis(1_000),
            "{escalated_at:?}"
        );
        assert!(
            escalated_at.0 < Duration::from_millis(1_300),
            "{escalated_at:?}"
        );
        // The children exited on TERM; only the root was killed.
        assert_eq!(report.exit_counts(), (5, 1));
    }
}

#[tokio::test]
async fn a_grandchild_that_ignores_term_does_not_starve_its_parents() {
    let tag = Tag::new("ignoregc");
    for root in tag.cgroup_modes() {
        let mut tree = start(
            &tag,
            &root,
            "gc",
            &["--width", "1", "--depth", "3", "--ignore-term", "2"],
        )
        .await;
        let report = stop_and_check(&tag, &mut tree, &spec(2_000)).await;
        assert_eq!(report.outcome, StopOutcome::Killed);
        // Every process got TERM long before the timeout: a level that ignores
        // the signal holds its parents back only about level_idle.
        let log = read_log(&tree.log);
        let root_signal = log
            .iter()
            .find(|l| l.kind == "signal" && l.role == "root")
            .expect("root was signalled");
        let first = log
            .iter()
            .filter(|l| l.kind == "signal")
            .map(|l| l.t)
            .min()
            .expect("signals");
        assert!(
            root_signal.t - first < 1_000_000_000,
            "root signalled {} ms after the first signal",
            (root_signal.t - first) / 1_000_000
        );
    }
}

#[tokio::test]
async fn a_slow_graceful_exit_inside_its_timeout_is_not_killed() {
    let tag = Tag::new("slow");
    for root in tag.cgroup_modes() {
        let mut tree = start(
            &tag,
            &root,
            "slow",
            &[
                "--width",
                "2",
                "--depth",
                "1",
                "--term-delay-ms",
                "1200",
                "--delay-scope",
                "root",
            ],
        )
        .await;
        let report = stop_and_check(&tag, &mut tree, &spec(5_000)).await;
        assert_eq!(report.outcome, StopOutcome::Graceful);
        assert_eq!(report.exit_counts(), (3, 0));
        assert!(report.elapsed >= Duration::from_millis(1_200));
        assert!(report.signalled_with(Signal::SIGKILL).is_empty());
    }
}

#[tokio::test]
async fn a_zero_timeout_kills_right_after_the_stop_signal() {
    let tag = Tag::new("zero");
    for root in tag.cgroup_modes() {
        let mut tree = start(
            &tag,
            &root,
            "zero",
            &["--width", "2", "--depth", "2", "--ignore-term", "all"],
        )
        .await;
        let report = stop_and_check(&tag, &mut tree, &spec(0)).await;
        assert_eq!(report.outcome, StopOutcome::Killed);
        assert!(
            report.elapsed < Duration::from_secs(1),
            "{:?}",
            report.elapsed
        );
        assert_eq!(report.signalled_with(Signal::SIGKILL).len(), 5);
    }
}

#[tokio::test]
async fn group_and_main_modes_stop_a_leader_that_exits_first_and_a_child_that_ignores_term() {
    let tag = Tag::new("leaderfirst");
    for root in tag.cgroup_modes() {
        for mode in [StopMode::Group, StopMode::Main] {
            let mut tree = start(
                &tag,
                &root,
                "leader",
                &["--width", "2", "--depth", "1", "--ignore-term", "leaves"],
            )
            .await;
            let spec = StopSpec {
                mode,
                ..spec(1_500)
            };
            let report = stop_and_check(&tag, &mut tree, &spec).await;
            assert_eq!(report.outcome, StopOutcome::Killed, "{mode:?}");
            let termed = report.signalled_with(Signal::SIGTERM);
            match mode {
                StopMode::Group => assert_eq!(termed.len(), 3),
                _ => assert_eq!(termed, vec![tree.child.pid()]),
            }
            if mode == StopMode::Main {
                // The rest got the short grace after the leader exited, not the whole timeout.
                assert!(
                    report.elapsed < Duration::from_millis(1_400),
                    "{:?}",
                    report.elapsed
                );
            }
        }
    }
}

#[tokio::test]
async fn a_setsid_escapee_is_still_stopped() {
    let tag = Tag::new("setsid");
    for root in tag.cgroup_modes() {
        let mut tree = start(&tag, &root, "escape", &["--setsid", "2", "--setpgid", "2"]).await;
        let report = stop_and_check(&tag, &mut tree, &spec(3_000)).await;
        assert_eq!(
            report.outcome,
            StopOutcome::Graceful,
            "{}",
            mode_name(&root)
        );
    }
}

#[tokio::test]
async fn a_double_forked_daemon_stays_in_its_cgroup_and_is_stopped_with_it() {
    let tag = Tag::new("dblfork");
    let Some(root) = tag.cgroup_modes().into_iter().flatten().next() else {
        // Without cgroups the daemon belongs to the subreaper: see the probe's reaper scenario.
        zinit_tests::skip("needs cgroup v2: without it the daemon belongs to the subreaper");
        return;
    };
    let mut tree = start(&tag, &Some(root), "daemon", &["--double-fork", "2"]).await;
    let daemons = tree.pids_with_role("daemon");
    assert_eq!(daemons.len(), 2);
    let report = stop_and_check(&tag, &mut tree, &spec(3_000)).await;
    for daemon in daemons {
        assert!(report.signalled_with(Signal::SIGTERM).contains(&daemon));
    }
}

#[tokio::test]
async fn a_parent_that_respawns_its_children_is_still_stopped() {
    let tag = Tag::new("respawn");
    for root in tag.cgroup_modes() {
        let mut tree = start(
            &tag,
            &root,
            "respawn",
            &["--width", "3", "--depth", "1", "--respawn"],
        )
        .await;
        let report = stop_and_check(&tag, &mut tree, &spec(5_000)).await;
        assert_ne!(report.outcome, StopOutcome::Incomplete);
        // The respawned children were signalled too, as they appeared, and
        // the walk moved up to their parent instead of letting it respawn
        // round after round: 3 children, at most 3 replacements each
        // round, the root.
        let terms = report.signalled_with(Signal::SIGTERM).len();
        assert!((4..=10).contains(&terms), "{terms} SIGTERMs: {report:#?}");
        assert!(tag.pids().is_empty(), "left: {:?}", tag.pids());
    }
}

#[tokio::test]
async fn a_process_that_forks_continuously_is_stopped() {
    let tag = Tag::new("storm");
    for root in tag.cgroup_modes() {
        let mut tree = start(&tag, &root, "storm", &["--fork-storm"]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let report = stop_and_check(&tag, &mut tree, &spec(3_000)).await;
        assert_ne!(report.outcome, StopOutcome::Incomplete);
        assert!(tag.pids().is_empty(), "left: {:?}", tag.pids());
    }
}

#[tokio::test]
async fn zombies_of_a_parent_that_never_reaps_are_gone_after_the_stop() {
    let tag = Tag::new("zombies");
    for root in tag.cgroup_modes() {
        let mut tree = start(&tag, &root, "zombies", &["--zombies", "5"]).await;
        let zombies = tree.pids_with_role("zombie");
        assert_eq!(zombies.len(), 5);
        let report = stop_and_check(&tag, &mut tree, &spec(3_000)).await;
        assert_eq!(report.outcome, StopOutcome::Graceful);
    }
}

#[tokio::test]
async fn stopped_processes_see_the_stop_signal_thanks_to_sigcont() {
    let tag = Tag::new("stopped");
    for root in tag.cgroup_modes() {
        let mut tree = start(
            &tag,
            &root,
            "stopped",
            &["--width", "2", "--depth", "2", "--stop-self", "all"],
        )
        .await;
        // Each process below the root reports itself, then stops itself:
        // wait until all did.
        let stopping: Vec<i32> = tree
            .procs
            .iter()
            .filter(|p| p.depth > 0)
            .map(|p| p.pid)
            .collect();
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while !stopping.iter().all(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('T'))
            })
        }) {
            assert!(
                std::time::Instant::now() < end,
                "{stopping:?} never all stopped themselves"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let report = stop_and_check(&tag, &mut tree, &spec(5_000)).await;
        assert_eq!(report.outcome, StopOutcome::Graceful, "{report:#?}");
        let log = read_log(&tree.log);
        assert_eq!(log.iter().filter(|l| l.kind == "exit").count(), 5);
    }
}

#[tokio::test]
async fn every_signal_event_matches_a_receipt_in_the_fixture_log() {
    let tag = Tag::new("events");
    for root in tag.cgroup_modes() {
        let mut tree = start(&tag, &root, "events", &["--width", "2", "--depth", "3"]).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let members = Members::of_child(&tree.child);
        let report = stop(&members, &spec(5_000), Some(&tx)).await.expect("stop");
        zinit_tests::reaped(&mut tree.child).await;
        drop(tx);
        let mut live = Vec::new();
        while let Some(event) = rx.recv().await {
            live.push(event);
        }
        assert_eq!(
            live, report.events,
            "the live events are the report's events"
        );
        let log = read_log(&tree.log);
        for pid in report.signalled_with(Signal::SIGTERM) {
            assert!(
                log.iter().any(|l| l.kind == "signal"
                    && l.pid == pid
                    && l.sig.as_deref() == Some("SIGTERM")),
                "pid {pid} was reported signalled but logged no receipt"
            );
        }
        assert_eq!(report.signalled_with(Signal::SIGTERM).len(), 7);
    }
}

/// A cgroup v1 freezer group, thawed and removed on drop.
struct V1Freezer(std::path::PathBuf);

impl V1Freezer {
    fn new(name: &str) -> Option<Self> {
        let base = std::path::Path::new("/sys/fs/cgroup/freezer");
        if !base.join("tasks").exists() {
            return None;
        }
        let dir = base.join(name);
        std::fs::create_dir(&dir).ok()?;
        Some(Self(dir))
    }

    fn freeze(&self, pid: i32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).expect("join v1 freezer");
        std::fs::write(self.0.join("freezer.state"), "FROZEN").expect("freeze");
    }
}

impl Drop for V1Freezer {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
        for _ in 0..200 {
            let empty = std::fs::read_to_string(self.0.join("cgroup.procs"))
                .map(|t| t.trim().is_empty())
                .unwrap_or(true);
            if empty {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[tokio::test]
async fn a_process_that_cannot_be_killed_is_reported_with_its_reason_not_waited_on() {
    let tag = Tag::new("unkillable");
    let Some(freezer) = V1Freezer::new(tag.as_str()) else {
        zinit_tests::skip("no cgroup v1 freezer on this host");
        return;
    };
    for root in tag.cgroup_modes() {
        let mut tree = start(&tag, &root, "frozen", &["--width", "1", "--depth", "1"]).await;
        let leaf = tree.pids_with_role("node")[0];
        freezer.freeze(leaf);
        let spec = StopSpec {
            kill_wait: Duration::from_millis(500),
            ..spec(500)
        };
        let members = Members::of_child(&tree.child);
        let report = stop(&members, &spec, None).await.expect("stop runs");
        assert_eq!(
            report.outcome,
            StopOutcome::Incomplete,
            "{}",
            mode_name(&root)
        );
        assert_eq!(report.leftovers.len(), 1, "{:#?}", report.leftovers);
        let leftover = &report.leftovers[0];
        assert_eq!(leftover.pid, leaf);
        assert!(!leftover.reason.is_empty());
        assert!(
            report.elapsed < Duration::from_secs(3),
            "bounded: {:?}",
            report.elapsed
        );
        // Thaw: the pending SIGKILL lands and the tree is gone.
        std::fs::write(freezer.0.join("freezer.state"), "THAWED").expect("thaw");
        zinit_tests::reaped(&mut tree.child).await;
        let left = wait_gone(&tree.pids(), tag.as_str(), Duration::from_secs(5));
        assert!(left.is_empty(), "after thaw: {left:?}");
    }
}

/// When the first signal of a stop was sent.
fn first_signal(report: &zinit_process::StopReport) -> Duration {
    report
        .events
        .iter()
        .find_map(|e| match e {
            StopEvent::Signalled { at, .. } => Some(*at),
            _ => None,
        })
        .expect("a signal was sent")
}

#[tokio::test]
async fn stops_in_a_wave_send_their_first_signals_together() {
    let tag = Tag::new("wave");
    for root in tag.cgroup_modes() {
        let mut a = start(&tag, &root, "wave-a", &["--width", "3"]).await;
        let mut b = start(&tag, &root, "wave-b", &["--width", "3", "--depth", "2"]).await;
        // The test holds one place of the wave: nobody signals until it is
        // ready, however fast the two stops read their trees.
        let organiser = zinit_process::Wave::new();
        let in_wave = || StopSpec {
            wave: Some(organiser.clone()),
            ..spec(10_000)
        };
        let (spec_a, spec_b) = (in_wave(), in_wave());
        let held = Duration::from_millis(150);
        let release = async {
            tokio::time::sleep(held).await;
            drop(organiser);
        };
        let (report_a, report_b, ()) = tokio::join!(
            stop_and_check(&tag, &mut a, &spec_a),
            stop_and_check(&tag, &mut b, &spec_b),
            release
        );
        for report in [&report_a, &report_b] {
            assert_eq!(
                report.outcome,
                StopOutcome::Graceful,
                "{}",
                mode_name(&root)
            );
            let first = first_signal(report);
            assert!(
                first >= held,
                "{} mode: a signal went at {first:?}, before the wave was ready",
                mode_name(&root)
            );
            assert!(
                first < held + Duration::from_secs(2),
                "{} mode: the wave went late: {first:?}",
                mode_name(&root)
            );
        }
    }
}

#[tokio::test]
async fn a_wave_never_holds_a_stop_past_its_bound() {
    let tag = Tag::new("wavebound");
    for root in tag.cgroup_modes() {
        let mut tree = start(&tag, &root, "wave", &["--width", "2"]).await;
        // A place that is never taken: the stop goes at the bound anyway.
        let never_ready = zinit_process::Wave::new();
        let spec = StopSpec {
            wave: Some(never_ready.clone()),
            ..spec(10_000)
        };
        let report = stop_and_check(&tag, &mut tree, &spec).await;
        let first = first_signal(&report);
        let bound = zinit_process::wave::WAVE_WAIT;
        assert!(first >= bound, "{}: {first:?}", mode_name(&root));
        assert!(
            first < bound + Duration::from_secs(2),
            "{}: held {first:?}",
            mode_name(&root)
        );
        assert_eq!(report.outcome, StopOutcome::Graceful);
        drop(never_ready);
    }
}

#[tokio::test]
async fn a_program_that_replaces_a_signalled_one_is_signalled_again_without_waiting_a_tick() {
    let tag = Tag::new("reexec");
    for root in tag.cgroup_modes() {
        // A shell whose TERM trap replaces it with another program (python3,
        // carrying the tag): the new program never saw the signal. The shell
        // runs short sleeps, so its trap runs within 50 ms of the signal.
        let script = "trap 'exec python3 -c \"import time; time.sleep(1000)\" \"$0\"' TERM; \
                      while :; do sleep 0.05; done";
        let mut command = zinit_process::Command::new("/bin/sh").args(["-c", script, tag.as_str()]);
        if let Some(root) = &root {
            command = command.cgroup(root.create("reexec").expect("cgroup"));
        }
        let mut child = command.spawn().expect("spawn sh");
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The progress tick is far away: only the early look can find the
        // new program in time.
        let spec = StopSpec {
            progress_every: Duration::from_secs(20),
            ..spec(10_000)
        };
        let members = Members::of_child(&child);
        let report = stop(&members, &spec, None).await.expect("stop runs");
        zinit_tests::reaped(&mut child).await;
        assert_eq!(
            report.outcome,
            StopOutcome::Graceful,
            "{}",
            mode_name(&root)
        );
        let root_signals = report
            .events
            .iter()
            .filter(|e| matches!(e, StopEvent::Signalled { pid, .. } if *pid == child.pid()))
            .count();
        assert_eq!(
            root_signals,
            2,
            "{}: the shell and the program that replaced it each get the signal once: {:#?}",
            mode_name(&root),
            report.events
        );
        assert!(
            report.elapsed < Duration::from_secs(2),
            "{}: the replacement was found only after {:?}",
            mode_name(&root),
            report.elapsed
        );
    }
}
