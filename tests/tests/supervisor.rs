//! The supervisor driving real services from a config directory: ordering,
//! readiness, oneshots, restarts and back-off, stops, reload, add/remove,
//! signals, jobs, users, stats, and processes that outlive their main process.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zinit_process::{CgroupRoot, Signal};
use zinit_supervisor::command::CommandResult;
use zinit_supervisor::events::EventKind;
use zinit_supervisor::state::State;
use zinit_supervisor::{JobSpec, Options, Supervisor, SupervisorError, UnitStatus};
use zinit_tests::{Tag, read_log, wait_gone};

const FIXTURE: &str = env!("CARGO_BIN_EXE_zinit-fixture");

struct Stack {
    tag: Tag,
    conf: PathBuf,
}

impl Stack {
    fn new(name: &str) -> Self {
        let tag = Tag::new(name);
        let conf = tag.dir().join("conf");
        std::fs::create_dir_all(&conf).expect("conf dir");
        Self { tag, conf }
    }

    /// The YAML `exec:` line of a fixture service logging to `<name>.log`.
    fn exec(&self, name: &str, args: &str) -> String {
        format!("exec: {}\n", self.fixture(name, args))
    }

    /// A fixture command line logging to `<log>.log`.
    fn fixture(&self, log: &str, args: &str) -> String {
        format!(
            "{FIXTURE} --tag {} --log {} {args}",
            self.tag.as_str(),
            self.log(log).display()
        )
    }

    /// Empties the config directory and the logs (between cgroup modes).
    fn reset(&self) {
        let _ = std::fs::remove_dir_all(&self.conf);
        std::fs::create_dir_all(&self.conf).expect("conf dir");
        for entry in std::fs::read_dir(self.tag.dir()).expect("dir").flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.tag.dir().join(format!("{name}.log"))
    }

    fn write(&self, name: &str, args: &str, extra: &str) {
        std::fs::write(
            self.conf.join(format!("{name}.yaml")),
            format!("{}{extra}", self.exec(name, args)),
        )
        .expect("write service");
    }

    fn start(&self, cgroups: Option<CgroupRoot>) -> Supervisor {
        let mut options = Options::new(&self.conf);
        options.cgroups = cgroups;
        Supervisor::start(options).expect("supervisor starts")
    }
}

/// Every test's bound: a supervisor call that never answers fails the test
/// with this message instead of hanging the suite.
async fn bounded(test: impl Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(90), test)
        .await
        .expect("the test (and every supervisor call in it) ended within 90 s");
}

/// Asserts that `pid` runs in the mode under test: inside the test's
/// cgroup tree with a root, outside any cgroup of the test without.
fn assert_mode(root: &Option<CgroupRoot>, pid: i32, tag: &Tag) {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let v2 = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default();
    match root {
        Some(root) => {
            let name = root.path().file_name().expect("name").to_string_lossy();
            assert!(
                v2.contains(&format!("/{name}/")),
                "pid {pid} is in {v2}, not under the unit cgroups of {}",
                root.path().display()
            );
        }
        None => assert!(
            !v2.contains(tag.as_str()),
            "pid {pid} is in the test's cgroup {v2} in the mode without cgroups"
        ),
    }
}

/// Polls (test-side only) until `name` satisfies `check`, at most `bound`.
async fn until(
    sup: &Supervisor,
    name: &str,
    bound: Duration,
    check: impl Fn(&UnitStatus) -> bool,
) -> UnitStatus {
    let end = Instant::now() + bound;
    loop {
        let status = sup.status(name).await.expect("status");
        if check(&status) {
            return status;
        }
        assert!(Instant::now() < end, "{name} never got there: {status:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the fixture behind `name` has logged `count` started processes.
async fn started(stack: &Stack, name: &str, count: usize) -> Vec<i32> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<i32> = read_log(&stack.log(name))
            .iter()
            .filter(|l| l.kind == "start")
            .map(|l| l.pid)
            .collect();
        if pids.len() >= count {
            return pids;
        }
        assert!(Instant::now() < end, "{name} started only {pids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until_state(sup: &Supervisor, name: &str, state: State) -> UnitStatus {
    until(sup, name, Duration::from_secs(10), |s| s.state == state).await
}

/// The order in which units became `state`, from the event stream.
async fn order_of(
    events: &mut tokio::sync::broadcast::Receiver<zinit_supervisor::events::Event>,
    state: State,
    count: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < count {
        let event = tokio::time::timeout_at(end, events.recv())
            .await
            .expect("events in time")
            .expect("event");
        if let EventKind::State { to, .. } = event.kind
            && to == state
        {
            out.push(event.unit);
        }
    }
    out
}

async fn stop_all(sup: &Supervisor) {
    for unit in sup.list().await.expect("list") {
        if unit.invalid.is_empty() {
            let _ = sup.stop_unit(&unit.name).await;
        }
    }
}

#[tokio::test]
async fn services_start_after_their_dependencies_in_chains_and_diamonds() {
    bounded(async {
        let stack = Stack::new("order");
        for root in stack.tag.cgroup_modes() {
            stack.reset();
            // A diamond (base <- left, right <- top) and a chain (c1 <- c2 <- c3).
            stack.write("base", "", "");
            stack.write("left", "", "after: [base]\n");
            stack.write("right", "", "after: [base]\n");
            stack.write("top", "", "after: [left, right]\n");
            stack.write("c1", "", "");
            stack.write("c2", "", "after: [c1]\n");
            stack.write("c3", "", "after: [c2]\n");
            let sup = stack.start(root.clone());
            let mut events = sup.events();
            let order = order_of(&mut events, State::Running, 7).await;
            let pos = |n: &str| order.iter().position(|u| u == n).expect(n);
            assert!(
                pos("base") < pos("left") && pos("base") < pos("right"),
                "{order:?}"
            );
            assert!(
                pos("left") < pos("top") && pos("right") < pos("top"),
                "{order:?}"
            );
            assert!(pos("c1") < pos("c2") && pos("c2") < pos("c3"), "{order:?}");
            stop_all(&sup).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_service_is_running_only_once_its_test_passes_and_dependents_wait_for_it() {
    bounded(async {
        let stack = Stack::new("ready");
        let flag = stack.tag.dir().join("ready-flag");
        stack.write(
            "db",
            "",
            &format!(
                "test: /bin/sh -c 'test -f {}' {}\ntest_interval: 50ms\n",
                flag.display(),
                stack.tag.as_str()
            ),
        );
        stack.write("api", "", "after: [db]\n");
        let sup = stack.start(None);
        until_state(&sup, "db", State::Starting).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sup.status("db").await.expect("db").state, State::Starting);
        let api = sup.status("api").await.expect("api");
        assert_eq!(api.state, State::Blocked);
        assert_eq!(api.waiting_for, ["db"]);
        std::fs::write(&flag, "").expect("flag");
        until_state(&sup, "db", State::Running).await;
        until_state(&sup, "api", State::Running).await;
        stop_all(&sup).await;
    })
    .await
}

#[tokio::test]
async fn a_readiness_test_that_never_passes_fails_the_start() {
    bounded(async {
        let stack = Stack::new("notready");
        for root in stack.tag.cgroup_modes() {
            stack.reset();
            stack.write(
                "db",
                "",
                &format!(
                    "test: /bin/sh -c 'exit 1' {}\n\
                 test_interval: 50ms\ntest_timeout: 300ms\nrestart: never\n",
                    stack.tag.as_str()
                ),
            );
            let sup = stack.start(root.clone());
            let status = until_state(&sup, "db", State::Failed).await;
            assert!(status.reason.contains("did not pass"), "{}", status.reason);
            assert!(!status.processes_alive);
            assert!(
                stack.tag.pids().is_empty(),
                "the unready process was stopped"
            );
        }
    })
    .await
}

#[tokio::test]
async fn oneshots_gate_their_dependents_on_a_successful_exit() {
    bounded(async {
        let stack = Stack::new("oneshot");
        stack.write("migrate", "--exit-after-ms 200", "oneshot: true\n");
        stack.write("api", "", "after: [migrate]\n");
        stack.write(
            "broken-init",
            "--exit-after-ms 0 --exit-code 3",
            "oneshot: true\n",
        );
        stack.write("worker", "", "after: [broken-init]\n");
        let sup = stack.start(None);
        let migrate = until_state(&sup, "migrate", State::Exited).await;
        assert_eq!(
            migrate.last_exit,
            Some(zinit_process::spawn::ExitStatus::Exited(0))
        );
        until_state(&sup, "api", State::Running).await;
        let init = until_state(&sup, "broken-init", State::Failed).await;
        assert_eq!(
            init.last_exit,
            Some(zinit_process::spawn::ExitStatus::Exited(3))
        );
        let worker = until(&sup, "worker", Duration::from_secs(5), |s| {
            s.reason
                .contains("waiting for broken-init, which failed: main process ended: exit code 3")
        })
        .await;
        assert_eq!(worker.state, State::Blocked);
        assert!(
            worker.reason.contains("broken-init, which failed"),
            "{}",
            worker.reason
        );
        stop_all(&sup).await;
    })
    .await
}

#[tokio::test]
async fn a_crash_loop_backs_off_exponentially_and_gives_up_at_its_limit() {
    bounded(async {
        let stack = Stack::new("crashloop");
        for root in stack.tag.cgroup_modes() {
            stack.reset();
            stack.write(
                "crashy",
                "--exit-after-ms 0 --exit-code 1",
                "restart:\n  policy: on-failure\n  delay: 100ms\n  factor: 2\n  \
             max_delay: 1s\n  max_restarts: 3\n",
            );
            let sup = stack.start(root.clone());
            let mut events = sup.events();
            let started = Instant::now();
            let mut delays = Vec::new();
            while delays.len() < 3 {
                let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
                    .await
                    .expect("event")
                    .expect("open");
                if let EventKind::Restarting { delay, .. } = event.kind {
                    delays.push(delay);
                }
            }
            assert_eq!(
                delays,
                [
                    Duration::from_millis(100),
                    Duration::from_millis(200),
                    Duration::from_millis(400)
                ]
            );
            let status = until_state(&sup, "crashy", State::Failed).await;
            assert!(
                status.reason.contains("gave up after 3 restarts"),
                "{}",
                status.reason
            );
            // Four runs: the first and three restarts, at least 700 ms of back-off apart.
            let starts = read_log(&stack.log("crashy"))
                .iter()
                .filter(|l| l.kind == "start")
                .count();
            assert_eq!(starts, 4);
            assert!(started.elapsed() >= Duration::from_millis(700));
        }
    })
    .await
}

#[tokio::test]
async fn a_restart_after_a_crash_first_stops_what_the_crashed_run_left() {
    bounded(async {
        let stack = Stack::new("leftovers");
        for root in stack.tag.cgroup_modes() {
            stack.reset();
            // The main process exits 1 after 300 ms; its child stays.
            stack.write(
                "crashy",
                "--width 1 --exit-after-ms 300 --exit-code 1",
                "restart:\n  policy: on-failure\n  delay: 100ms\n  max_restarts: 1\n",
            );
            let sup = stack.start(root.clone());
            let first = started(&stack, "crashy", 2).await;
            assert_mode(&root, first[0], &stack.tag);
            // The second run starts once the first run's child is gone.
            let all = started(&stack, "crashy", 4).await;
            let log = read_log(&stack.log("crashy"));
            let second_start = log
                .iter()
                .find(|l| l.kind == "start" && l.pid == all[2])
                .expect("second run")
                .t;
            let old_child = first[1];
            let old_child_end = log
                .iter()
                .find(|l| l.pid == old_child && (l.kind == "signal" || l.kind == "exit"))
                .unwrap_or_else(|| panic!("the first run's child {old_child} was never stopped"))
                .t;
            assert!(
                old_child_end < second_start,
                "the first run's child was stopped before the second run started"
            );
            assert!(wait_gone(&[old_child], stack.tag.as_str(), Duration::from_secs(2)).is_empty());
            until_state(&sup, "crashy", State::Failed).await;
            stop_all(&sup).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_clean_exit_is_restarted_by_always_and_not_by_on_failure() {
    bounded(async {
        let stack = Stack::new("policies");
        stack.write(
            "always",
            "--exit-after-ms 100",
            "restart:\n  policy: always\n  delay: 50ms\n",
        );
        stack.write("onfail", "--exit-after-ms 100", "restart: on-failure\n");
        let sup = stack.start(None);
        until(&sup, "always", Duration::from_secs(5), |s| s.restarts >= 2).await;
        let onfail = until_state(&sup, "onfail", State::Exited).await;
        assert_eq!(onfail.restarts, 0);
        stop_all(&sup).await;
    })
    .await
}

#[tokio::test]
async fn stopping_a_stubborn_service_escalates_at_its_timeout_and_leaves_nothing() {
    bounded(async {
        let stack = Stack::new("stubborn");
        for root in stack.tag.cgroup_modes() {
            stack.reset();
            stack.write(
                "stubborn",
                "--width 2 --depth 2 --ignore-term all",
                "stop_timeout_ms: 500\n",
            );
            let sup = stack.start(root.clone());
            until_state(&sup, "stubborn", State::Running).await;
            let pids = started(&stack, "stubborn", 5).await;
            assert_mode(&root, pids[0], &stack.tag);
            let started = Instant::now();
            let result = sup.stop_unit("stubborn").await.expect("stop");
            let report = result.report.expect("a stop ran");
            assert_eq!(report.outcome, zinit_process::StopOutcome::Killed);
            assert!(started.elapsed() >= Duration::from_millis(500));
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
            assert_eq!(result.status.state, State::Stopped);
            assert!(wait_gone(&pids, stack.tag.as_str(), Duration::from_secs(2)).is_empty());
            // A stopped service is not restarted.
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert_eq!(
                sup.status("stubborn").await.expect("status").state,
                State::Stopped
            );
        }
    })
    .await
}

#[tokio::test]
async fn a_stop_command_runs_first_within_half_the_budget() {
    bounded(async {
        let stack = Stack::new("stopcmd");
        for root in stack.tag.cgroup_modes() {
            stack.reset();
            // `quick`'s stop command exits at once; `hung`'s never ends and
            // has half of a 2 s budget. Both stop commands are fixtures that
            // log when they start, on the clock the services log signals with.
            stack.write(
                "quick",
                "",
                &format!(
                    "stop: {}\n",
                    stack.fixture("quick-stop", "--exit-after-ms 0")
                ),
            );
            stack.write(
                "hung",
                "",
                &format!(
                    "stop: {}\nstop_timeout_ms: 2000\n",
                    stack.fixture("hung-stop", "--ignore-term all")
                ),
            );
            let sup = stack.start(root.clone());
            for name in ["quick", "hung"] {
                let pid = until_state(&sup, name, State::Running)
                    .await
                    .pid
                    .expect("pid");
                assert_mode(&root, pid, &stack.tag);
            }
            let first_line = |log: &str, kind: &str| {
                read_log(&stack.log(log))
                    .into_iter()
                    .find(|l| l.kind == kind && l.depth == 0)
                    .unwrap_or_else(|| panic!("{log} logged no {kind}"))
                    .t
            };

            let result = sup.stop_unit("quick").await.expect("stop");
            let report = result.report.expect("report");
            assert!(
                matches!(
                    report.stop_command,
                    Some(CommandResult::Exited(s)) if s.success()
                ),
                "{:?}",
                report.stop_command
            );
            assert_eq!(report.outcome, zinit_process::StopOutcome::Graceful);
            assert!(
                first_line("quick-stop", "start") < first_line("quick", "signal"),
                "the stop command ran before the signal"
            );

            let asked = zinit_tests::monotonic_ns();
            let result = sup.stop_unit("hung").await.expect("stop");
            let command = first_line("hung-stop", "start");
            let signal = first_line("hung", "signal");
            assert!(command < signal, "the stop command ran first");
            let after = (signal - asked) as f64 / 1e9;
            // Half of 2 s, then the signal: not the whole budget.
            assert!(
                (0.95..1.8).contains(&after),
                "the signal came {after:.2}s after the request; the stop command had 1 s"
            );
            assert_eq!(result.status.state, State::Stopped);
            assert_eq!(
                result.report.expect("report").outcome,
                zinit_process::StopOutcome::Graceful,
                "the service itself exits on SIGTERM"
            );
            // The cut stop command is gone too.
            let hung_stop: Vec<i32> = read_log(&stack.log("hung-stop"))
                .iter()
                .map(|l| l.pid)
                .collect();
            assert!(wait_gone(&hung_stop, stack.tag.as_str(), Duration::from_secs(2)).is_empty());
        }
    })
    .await
}

#[tokio::test]
async fn restart_stops_then_starts_and_start_waits_until_running() {
    bounded(async {
        let stack = Stack::new("restart");
        for root in stack.tag.cgroup_modes() {
            stack.reset();
            stack.write("svc", "--width 2", "");
            stack.write("dep", "", "after: [svc]\n");
            let sup = stack.start(root.clone());
            let first = until_state(&sup, "svc", State::Running)
                .await
                .pid
                .expect("pid");
            assert_mode(&root, first, &stack.tag);
            until_state(&sup, "dep", State::Running).await;
            let restarted = sup.restart_unit("svc").await.expect("restart");
            assert_eq!(restarted.state, State::Running);
            assert_ne!(restarted.pid, Some(first));
            let stopped = sup.stop_unit("svc").await.expect("stop");
            assert_eq!(stopped.running_dependents, ["dep"], "stop X stops X only");
            assert_eq!(sup.status("dep").await.expect("dep").state, State::Running);
            let started = sup.start_unit("svc", true).await.expect("start");
            assert_eq!(started.state, State::Running);
            stop_all(&sup).await;
        }
    })
    .await
}

#[tokio::test]
async fn reload_adds_restarts_changed_and_stops_deleted_services_and_leaves_the_rest() {
    bounded(async {
        let stack = Stack::new("reload");
        for root in stack.tag.cgroup_modes() {
            stack.reset();
            stack.write("keep", "", "");
            stack.write("change", "", "");
            stack.write("drop", "--width 2", "");
            let sup = stack.start(root.clone());
            let keep_pid = until_state(&sup, "keep", State::Running).await.pid;
            assert_mode(&root, keep_pid.expect("pid"), &stack.tag);
            let change_pid = until_state(&sup, "change", State::Running).await.pid;
            until_state(&sup, "drop", State::Running).await;
            let drop_pids = started(&stack, "drop", 3).await;

            stack.write("change", "--width 1", "");
            std::fs::remove_file(stack.conf.join("drop.yaml")).expect("delete");
            stack.write("new", "", "");
            let summary = sup.reload(false).await.expect("reload");
            assert_eq!(summary.added, ["new"]);
            assert_eq!(summary.changed, ["change"]);
            assert_eq!(summary.removed, ["drop"]);
            assert_eq!(summary.unchanged, ["keep"]);

            until_state(&sup, "new", State::Running).await;
            let changed = until(&sup, "change", Duration::from_secs(10), |s| {
                s.state == State::Running && s.pid != change_pid
            })
            .await;
            assert_ne!(changed.pid, change_pid);
            assert_eq!(sup.status("keep").await.expect("keep").pid, keep_pid);
            let end = Instant::now() + Duration::from_secs(10);
            while sup.status("drop").await.is_ok() {
                assert!(Instant::now() < end, "drop is forgotten");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(wait_gone(&drop_pids, stack.tag.as_str(), Duration::from_secs(2)).is_empty());
            stop_all(&sup).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_reload_with_any_error_changes_nothing() {
    bounded(async {
        let stack = Stack::new("reloadbad");
        stack.write("good", "", "");
        let sup = stack.start(None);
        let pid = until_state(&sup, "good", State::Running).await.pid;
        stack.write("good", "--width 1", "");
        std::fs::write(
            stack.conf.join("bad.yaml"),
            "exec: /bin/x\nstop_mode: sideways\n",
        )
        .expect("write");
        let err = sup.reload(false).await.expect_err("invalid");
        let SupervisorError::InvalidConfig(errors) = err else {
            panic!("{err:?}")
        };
        assert_eq!(errors.0.len(), 1);
        assert!(
            errors.0[0]
                .to_string()
                .contains("bad.yaml:2: field `stop_mode`"),
            "{}",
            errors.0[0]
        );
        assert_eq!(
            sup.status("good").await.expect("good").pid,
            pid,
            "nothing restarted"
        );
        assert!(sup.status("bad").await.is_err(), "nothing added");
        stop_all(&sup).await;
    })
    .await
}

#[tokio::test]
async fn broken_files_at_start_up_are_listed_and_the_valid_services_run() {
    bounded(async {
        let stack = Stack::new("broken");
        stack.write("good", "", "");
        std::fs::write(
            stack.conf.join("bad.yaml"),
            "exec: /bin/x\nsignal:\n  stop: NOPE\n",
        )
        .expect("write");
        let sup = stack.start(None);
        until_state(&sup, "good", State::Running).await;
        let bad = sup.status("bad").await.expect("listed");
        assert_eq!(bad.invalid.len(), 1);
        assert!(
            bad.invalid[0].contains("bad.yaml:3: field `signal.stop` = \"NOPE\""),
            "{:?}",
            bad.invalid
        );
        let err = sup.start_unit("bad", true).await.expect_err("cannot start");
        assert!(matches!(err, SupervisorError::FailedPrecondition(_)));
        stop_all(&sup).await;
    })
    .await
}

#[tokio::test]
async fn add_copies_the_file_and_starts_it_remove_stops_it_and_deletes_the_file() {
    bounded(async {
        let stack = Stack::new("addremove");
        for root in stack.tag.cgroup_modes() {
            stack.reset();
            let sup = stack.start(root.clone());
            let outside = stack.tag.dir().join("extra.yaml");
            std::fs::write(&outside, stack.exec("extra", "--width 1")).expect("write");
            assert_eq!(sup.add(&outside).await.expect("add").name, "extra");
            assert!(
                stack.conf.join("extra.yaml").exists(),
                "copied into the config dir"
            );
            let extra = until_state(&sup, "extra", State::Running).await;
            assert_mode(&root, extra.pid.expect("pid"), &stack.tag);
            assert!(matches!(
                sup.add(&outside).await,
                Err(SupervisorError::AlreadyExists(_))
            ));
            let bad = stack.tag.dir().join("worse.yaml");
            std::fs::write(&bad, "exec: \"\"\n").expect("write");
            assert!(matches!(
                sup.add(&bad).await,
                Err(SupervisorError::InvalidConfig(_))
            ));
            let pids = stack.tag.pids();
            sup.remove("extra").await.expect("remove");
            assert!(!stack.conf.join("extra.yaml").exists(), "file deleted");
            assert!(matches!(
                sup.status("extra").await,
                Err(SupervisorError::NotFound(_))
            ));
            assert!(wait_gone(&pids, stack.tag.as_str(), Duration::from_secs(2)).is_empty());
        }
    })
    .await
}

#[tokio::test]
async fn signals_reach_the_main_process_or_every_process() {
    bounded(async {
        let stack = Stack::new("signal");
        for root in stack.tag.cgroup_modes() {
            stack.reset();
            stack.write("svc", "--width 2", "");
            let sup = stack.start(root.clone());
            let main = until_state(&sup, "svc", State::Running)
                .await
                .pid
                .expect("pid");
            assert_mode(&root, main, &stack.tag);
            started(&stack, "svc", 3).await;
            assert_eq!(
                sup.signal("svc", Signal::SIGUSR1, false)
                    .await
                    .expect("signal"),
                vec![main]
            );
            let all = sup
                .signal("svc", Signal::SIGUSR2, true)
                .await
                .expect("signal all");
            assert_eq!(all.len(), 3);
            let got = |sig: &str| {
                read_log(&stack.log("svc"))
                    .iter()
                    .filter(|l| l.kind == "signal" && l.sig.as_deref() == Some(sig))
                    .count()
            };
            let end = Instant::now() + Duration::from_secs(5);
            while got("SIGUSR1") + got("SIGUSR2") < 4 && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(got("SIGUSR1"), 1);
            assert_eq!(got("SIGUSR2"), 3);
            stop_all(&sup).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_unit_stays_alive_while_processes_outlive_its_main_process() {
    bounded(async {
        let stack = Stack::new("outlive");
        for root in stack.tag.cgroup_modes() {
            stack.reset();
            // With a cgroup even a double-forked daemon stays a member; without
            // one, a child left in the process group does.
            let args = if root.is_some() {
                "--double-fork 1 --exit-after-ms 100"
            } else {
                "--width 1 --exit-after-ms 100"
            };
            stack.write("init", args, "oneshot: true\n");
            let sup = stack.start(root.clone());
            let status = until_state(&sup, "init", State::Exited).await;
            assert!(status.processes_alive, "its leftover keeps the unit alive");
            started(&stack, "init", 2).await;
            let leftovers: Vec<i32> = read_log(&stack.log("init"))
                .iter()
                .filter(|l| l.kind == "start" && l.role != "root")
                .map(|l| l.pid)
                .collect();
            assert_eq!(stack.tag.pids(), leftovers);
            assert_eq!(leftovers.len(), 1);
            assert_mode(&root, leftovers[0], &stack.tag);
            let result = sup.stop_unit("init").await.expect("stop");
            assert!(
                result.report.is_some(),
                "the leftover was stopped: {result:#?}"
            );
            assert!(wait_gone(&leftovers, stack.tag.as_str(), Duration::from_secs(2)).is_empty());
        }
    })
    .await
}

#[tokio::test]
async fn jobs_run_named_oneshots_and_commands_keep_output_and_can_be_cancelled() {
    bounded(async {
        let stack = Stack::new("jobs");
        for root in stack.tag.cgroup_modes() {
            stack.reset();
            stack.write(
                "backup",
                "--exit-after-ms 50 --output-lines 3",
                "oneshot: true\n",
            );
            // Only the job runs the file; keep it from starting as a service.
            let sup = stack.start(root.clone());
            let _ = sup.stop_unit("backup").await;
            let named = sup
                .run_job(JobSpec::Named("backup".into()))
                .await
                .expect("job");
            let done = until_state(&sup, &named, State::Exited).await;
            assert!(done.last_exit.expect("status").success());
            let output: Vec<String> = sup
                .logs(Some(&named), None)
                .await
                .expect("logs")
                .iter()
                .map(|l| l.text.clone())
                .collect();
            assert!(output.iter().any(|l| l == "line 3"), "{output:?}");

            let long = sup
                .run_job(JobSpec::Command(vec![
                    FIXTURE.into(),
                    "--tag".into(),
                    stack.tag.as_str().into(),
                ]))
                .await
                .expect("job");
            let running = until_state(&sup, &long, State::Running).await;
            assert_mode(&root, running.pid.expect("pid"), &stack.tag);
            let cancelled = sup.stop_unit(&long).await.expect("cancel");
            assert_eq!(cancelled.status.state, State::Stopped);
            let jobs = sup.jobs().await.expect("jobs");
            assert_eq!(
                jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
                [named.as_str(), long.as_str()]
            );
            assert!(matches!(
                sup.run_job(JobSpec::Named("nope".into())).await,
                Err(SupervisorError::NotFound(_))
            ));
        }
    })
    .await
}

#[tokio::test]
async fn a_service_runs_as_nobody() {
    bounded(async {
        let stack = Stack::new("user");
        stack.write("svc", "", "user: nobody\ndir: /\n");
        // The fixture must be able to write its log as nobody.
        std::fs::write(stack.log("svc"), "").expect("log");
        std::fs::set_permissions(
            stack.log("svc"),
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .expect("chmod");
        let sup = stack.start(None);
        let pid = until_state(&sup, "svc", State::Running)
            .await
            .pid
            .expect("pid");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let uid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .expect("uid line");
        assert_eq!(uid.split_whitespace().nth(1), Some("65534"), "{uid}");
        stop_all(&sup).await;
    })
    .await
}

#[tokio::test]
async fn stats_cover_the_whole_tree() {
    bounded(async {
        let stack = Stack::new("stats");
        for root in stack.tag.cgroup_modes() {
            stack.reset();
            stack.write("svc", "--width 3 --depth 2", "");
            let sup = stack.start(root.clone());
            until_state(&sup, "svc", State::Running).await;
            started(&stack, "svc", 7).await;
            assert_mode(
                &root,
                sup.status("svc").await.expect("svc").pid.expect("pid"),
                &stack.tag,
            );
            let stats = sup.stats(Some("svc")).await.expect("stats");
            assert_eq!(stats.len(), 1);
            assert_eq!(stats[0].processes, 7);
            assert!(stats[0].memory_bytes > 0);
            stop_all(&sup).await;
        }
    })
    .await
}

#[tokio::test]
async fn output_is_captured_with_ring_overflow_binary_bytes_and_lagging_followers() {
    bounded(async {
        let stack = Stack::new("logs");
        stack.write("chatty", "--output-lines 500 --binary-output", "");
        let mut options = Options::new(&stack.conf);
        options.cgroups = None;
        options.log_lines = 100;
        let sup = Supervisor::start(options).expect("start");
        until_state(&sup, "chatty", State::Running).await;
        let end = Instant::now() + Duration::from_secs(5);
        let lines = loop {
            let lines = sup.logs(Some("chatty"), None).await.expect("logs");
            if lines.last().is_some_and(|l| l.text.contains("not utf-8")) || Instant::now() > end {
                break lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(lines.len(), 100, "the ring keeps the newest 100 lines");
        assert_eq!(lines[98].text, "line 500");
        assert_eq!(lines[99].text, "bytes \u{fffd}\u{fffd} not utf-8");
        assert!(lines.windows(2).all(|w| w[0].seq < w[1].seq));
        stop_all(&sup).await;
    })
    .await
}

#[tokio::test]
async fn a_follower_gets_new_lines_live_and_hears_how_many_it_missed() {
    bounded(async {
        let stack = Stack::new("follow");
        let logfile = stack.tag.dir().join("files/chatty.log");
        stack.write(
            "chatty",
            "--chatty-ms 1",
            &format!(
                "log:\n  file: {}\n  max_size: 4096\n  keep: 1\n",
                logfile.display()
            ),
        );
        // A small ring, so that a follower that stops reading falls out of it.
        let mut options = Options::new(&stack.conf);
        options.log_lines = 200;
        let sup = Supervisor::start(options).expect("supervisor starts");
        until_state(&sup, "chatty", State::Running).await;
        let (_, mut follower) = sup
            .follow_logs(Some("chatty"), Some(0))
            .await
            .expect("follow");
        // Live lines arrive in order.
        let mut previous = 0u64;
        let mut chats = 0;
        while chats < 20 {
            match tokio::time::timeout(Duration::from_secs(5), follower.next())
                .await
                .expect("a line in time")
            {
                // The fixture's start-up report goes to stdout; the chat to stderr.
                Some(zinit_supervisor::logs::Followed::Line(line))
                    if line.stream == zinit_supervisor::logs::Stream::Stdout => {}
                Some(zinit_supervisor::logs::Followed::Line(line)) => {
                    chats += 1;
                    let n: u64 = line
                        .text
                        .trim_start_matches("chat ")
                        .parse()
                        .expect("numbered");
                    assert!(n > previous, "in order");
                    previous = n;
                }
                other => panic!("{other:?}"),
            }
        }
        // A follower that stops reading until its place fell out of the ring
        // is told how much it missed, once, and goes on from the oldest line.
        let (_, mut lagging) = sup
            .follow_logs(Some("chatty"), Some(0))
            .await
            .expect("follow");
        let from = sup.logs(Some("chatty"), Some(1)).await.expect("logs")[0].seq;
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let oldest = sup.logs(Some("chatty"), None).await.expect("logs")[0].seq;
            if oldest > from + 1 {
                break;
            }
            assert!(Instant::now() < end, "the ring never moved past {from}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match lagging.next().await {
            Some(zinit_supervisor::logs::Followed::Missed(n)) => assert!(n > 0),
            other => panic!("expected a lag notice, got {other:?}"),
        }
        assert!(matches!(
            lagging.next().await,
            Some(zinit_supervisor::logs::Followed::Line(_))
        ));
        // The log file was written and rotated.
        assert!(logfile.exists() && logfile.with_extension("log.1").exists());
        assert!(std::fs::metadata(&logfile).expect("file").len() <= 4096);
        stop_all(&sup).await;
    })
    .await
}

#[tokio::test]
async fn a_stop_or_remove_during_a_running_stop_waits_for_it_and_returns() {
    bounded(async {
        let stack = Stack::new("stopstop");
        for root in stack.tag.cgroup_modes() {
            stack.reset();
            stack.write("slow", "--term-delay-ms 700", "");
            let sup = stack.start(root.clone());
            until_state(&sup, "slow", State::Running).await;
            started(&stack, "slow", 1).await;
            assert_mode(
                &root,
                sup.status("slow").await.expect("slow").pid.expect("pid"),
                &stack.tag,
            );
            let first = tokio::spawn({
                let sup = sup.clone();
                async move { sup.stop_unit("slow").await }
            });
            until_state(&sup, "slow", State::Stopping).await;
            let second = tokio::time::timeout(Duration::from_secs(5), sup.stop_unit("slow"))
                .await
                .expect("a second stop returns once the running stop ends")
                .expect("stop");
            assert_eq!(second.status.state, State::Stopped);
            let first = first.await.expect("task").expect("stop");
            assert_eq!(first.status.state, State::Stopped);

            sup.start_unit("slow", true).await.expect("start again");
            started(&stack, "slow", 2).await;
            let stopping = tokio::spawn({
                let sup = sup.clone();
                async move { sup.stop_unit("slow").await }
            });
            until_state(&sup, "slow", State::Stopping).await;
            tokio::time::timeout(Duration::from_secs(5), sup.remove("slow"))
                .await
                .expect("remove during a stop returns")
                .expect("remove");
            assert!(matches!(
                sup.status("slow").await,
                Err(SupervisorError::NotFound(_))
            ));
            let stopped = tokio::time::timeout(Duration::from_secs(5), stopping)
                .await
                .expect("the stop that a remove overtook returns too")
                .expect("task");
            assert!(
                matches!(&stopped, Ok(r) if r.status.state == State::Stopped),
                "{stopped:?}"
            );
        }
    })
    .await
}

#[tokio::test]
async fn a_ready_dependency_wakes_its_dependents_whatever_their_names() {
    bounded(async {
        let stack = Stack::new("wake");
        for root in stack.tag.cgroup_modes() {
            stack.reset();
            // The dependent sorts before its dependency.
            stack.write("zz", "", "");
            stack.write("aa", "", "after: [zz]\n");
            let sup = stack.start(root);
            let mut events = sup.events();
            // No request is made until both run: zz becoming ready must start aa.
            let order = order_of(&mut events, State::Running, 2).await;
            assert_eq!(order, ["zz", "aa"]);
            stop_all(&sup).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_service_file_cannot_take_the_name_of_a_job() {
    bounded(async {
        let stack = Stack::new("jobname");
        let sup = stack.start(None);
        let sleep = stack.tag.program("sleep");
        let job = sup
            .run_job(JobSpec::Command(vec![
                sleep.display().to_string(),
                "1000".into(),
            ]))
            .await
            .expect("job runs");
        assert_eq!(job, "job-1");
        let running = until_state(&sup, &job, State::Running).await;
        let text = format!("exec: {} 1000\n", sleep.display());
        let refused = sup
            .add_text(&stack.conf.join("job-1.yaml"), "job-1.yaml", &text)
            .await
            .expect_err("a service may not be named job-1");
        assert!(
            refused.to_string().contains("reserved for jobs"),
            "{refused}"
        );
        assert!(!stack.conf.join("job-1.yaml").exists());
        // The job is still the one that runs, and still supervised.
        let status = sup.status(&job).await.expect("status");
        assert_eq!(status.pid, running.pid);
        assert!(matches!(
            status.kind,
            zinit_supervisor::UnitKind::Job { .. }
        ));
        sup.stop_unit(&job).await.expect("cancel");
        assert!(
            wait_gone(
                &[running.pid.expect("pid")],
                stack.tag.as_str(),
                Duration::from_secs(5)
            )
            .is_empty()
        );
    })
    .await
}

#[tokio::test]
async fn a_program_that_cannot_be_started_fails_at_once_without_back_off() {
    let stack = Stack::new("spawnfail");
    let missing = stack.tag.dir().join("doesnotexist");
    std::fs::write(
        stack.conf.join("ghost.yaml"),
        format!("exec: {}\n", missing.display()),
    )
    .expect("write");
    let sup = stack.start(None);
    let mut events = sup.events();
    let failed = until_state(&sup, "ghost", State::Failed).await;
    assert!(
        failed.reason.starts_with(&format!(
            "cannot start: executing {}: No such file or directory",
            missing.display()
        )),
        "{}",
        failed.reason
    );
    assert_eq!(failed.restarts, 0);
    // A start on request answers at once, with the same reason.
    let started = tokio::time::timeout(Duration::from_secs(5), sup.start_unit("ghost", true))
        .await
        .expect("the start answers at once")
        .expect("start");
    assert_eq!(started.state, State::Failed);
    assert!(started.reason.contains("No such file or directory"));
    // And nothing schedules a restart.
    tokio::time::sleep(Duration::from_millis(700)).await;
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event.kind, EventKind::Restarting { .. }),
            "a spawn failure backed off: {event:?}"
        );
    }
    assert_eq!(
        sup.status("ghost").await.expect("status").state,
        State::Failed
    );
}

#[tokio::test]
async fn an_automatic_restart_goes_from_backoff_straight_to_starting() {
    let stack = Stack::new("restartpath");
    stack.write(
        "flaky",
        "--exit-after-ms 50 --exit-code 1",
        "restart:\n  policy: on-failure\n  delay: 100ms\n  max_restarts: 2\n",
    );
    let sup = stack.start(None);
    let mut events = sup.events();
    let mut path = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while !path.ends_with(&[State::Failed]) {
        let event = tokio::time::timeout_at(end, events.recv())
            .await
            .expect("events in time")
            .expect("event");
        if event.unit == "flaky"
            && let EventKind::State { to, .. } = event.kind
        {
            path.push(to);
        }
    }
    let after_backoff: Vec<State> = path
        .windows(2)
        .filter(|w| w[0] == State::BackOff)
        .map(|w| w[1])
        .collect();
    assert!(!after_backoff.is_empty(), "{path:?}");
    assert!(
        after_backoff.iter().all(|s| *s == State::Starting),
        "back-off is followed by starting, nothing in between: {path:?}"
    );
}

#[tokio::test]
async fn a_jobs_output_ends_once_it_has_ended() {
    let stack = Stack::new("joboutput");
    let sup = stack.start(None);
    let job = sup
        .run_job(JobSpec::Command(vec![
            FIXTURE.to_string(),
            "--tag".to_string(),
            stack.tag.as_str().to_string(),
            "--output-lines".to_string(),
            "3".to_string(),
            "--exit-after-ms".to_string(),
            "200".to_string(),
            "--exit-code".to_string(),
            "3".to_string(),
        ]))
        .await
        .expect("job");
    let (mut lines, mut follower) = sup.follow_logs(Some(&job), None).await.expect("follow");
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(zinit_supervisor::logs::Followed::Line(line)) = follower.next().await {
            lines.push(line);
        }
    })
    .await;
    assert!(rest.is_ok(), "the follow ends once the job has ended");
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert!(texts.iter().any(|t| t.ends_with("line 3")), "{texts:?}");
    let status = sup.status(&job).await.expect("status");
    assert_eq!(status.state, State::Failed);
    assert_eq!(
        status.last_exit,
        Some(zinit_supervisor::ExitStatus::Exited(3))
    );
}

#[tokio::test]
async fn a_job_whose_dependency_is_not_coming_fails_instead_of_waiting() {
    let stack = Stack::new("jobdeps");
    let missing = stack.tag.dir().join("doesnotexist");
    std::fs::write(
        stack.conf.join("dead.yaml"),
        format!("exec: {}\n", missing.display()),
    )
    .expect("write");
    std::fs::write(
        stack.conf.join("needs-dead.yaml"),
        format!(
            "{}oneshot: true\nafter: [dead]\n",
            stack.exec("needs-dead", "")
        ),
    )
    .expect("write");
    let sup = stack.start(None);
    until_state(&sup, "dead", State::Failed).await;
    let job = sup
        .run_job(JobSpec::Named("needs-dead".to_string()))
        .await
        .expect("job");
    let status = until_state(&sup, &job, State::Failed).await;
    assert!(
        status
            .reason
            .starts_with("cannot run: waiting for dead, which failed: cannot start: executing "),
        "{}",
        status.reason
    );
    stop_all(&sup).await;
}

/// A stop answers with the main process's exit status: the stop can see
/// the process gone before the main process's waiter has reaped it, and the
/// answer (and a shutdown's `unit_stopped` event, which is built from the
/// same) must still carry the status. Many stops, to meet the race.
#[tokio::test]
async fn a_stop_answers_with_the_main_process_exit_status() {
    let stack = Stack::new("exitstatus");
    for root in stack.tag.cgroup_modes() {
        stack.reset();
        let sleep = stack.tag.program("sleep");
        std::fs::write(
            stack.conf.join("sleeper.yaml"),
            format!("exec: {} 1000\n", sleep.display()),
        )
        .expect("write service");
        let sup = stack.start(root.clone());
        for round in 0..40 {
            let started =
                tokio::time::timeout(Duration::from_secs(10), sup.start_unit("sleeper", true))
                    .await
                    .expect("start within 10 s")
                    .expect("start");
            assert_eq!(started.state, State::Running, "round {round}");
            let stopped = tokio::time::timeout(Duration::from_secs(10), sup.stop_unit("sleeper"))
                .await
                .expect("stop within 10 s")
                .expect("stop");
            assert_eq!(
                stopped.status.last_exit,
                Some(zinit_process::spawn::ExitStatus::Signaled(
                    Signal::SIGTERM as i32
                )),
                "round {round}: the stop's answer has no exit status: {:#?}",
                stopped.status
            );
        }
    }
}
