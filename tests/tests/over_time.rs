//! A real stack over time, with programs we did not write (`sh`, `sleep`,
//! `python3`): services that write through a server crash, a oneshot
//! migration between a database and its app that has exited yet still
//! orders the shutdown and is not run again after a crash, and a unit
//! stopped by hand that stays stopped.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zinit_process::Signal;
use zinit_tests::{Server, Tag, wait_gone};

fn conf_dir(tag: &Tag) -> PathBuf {
    let conf = tag.dir().join("conf");
    std::fs::create_dir_all(&conf).expect("conf");
    conf
}

fn unit(conf: &Path, name: &str, text: &str) {
    std::fs::write(conf.join(format!("{name}.yaml")), text).expect("write the service file");
}

/// The numbers `N` of the lines `WORD N` in `zinit logs NAME`.
fn numbers(server: &Server, name: &str, word: &str) -> Vec<u64> {
    let out = server.zinit(&["logs", "-n", "100000", name]);
    assert_eq!(out.code, 0, "logs {name}: {}", out.stderr);
    out.stdout
        .lines()
        .filter_map(|l| l.split_once(&format!(" {word} ")))
        .filter_map(|(_, n)| n.trim().parse().ok())
        .collect()
}

/// Waits (bounded) until `zinit logs NAME` has `WORD N` lines up to at
/// least `at_least`; returns the numbers.
fn wait_numbers(server: &Server, name: &str, word: &str, at_least: u64) -> Vec<u64> {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let found = numbers(server, name, word);
        if found.last().is_some_and(|&n| n >= at_least) {
            return found;
        }
        assert!(
            Instant::now() < end,
            "{name} never logged {word} {at_least}: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_consecutive(what: &str, found: &[u64]) {
    for pair in found.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "{what}: a gap in {found:?}");
    }
}

fn restarts(server: &Server, name: &str) -> u64 {
    let out = server.zinit(&["--json", "status", name]);
    out.json()["restarts"].as_u64().unwrap_or(0)
}

/// A service's stdout and stderr are pipes to the server: a plain pipe
/// whose reader died gives the writer SIGPIPE (sh dies of it) or EPIPE
/// (python3 ignores SIGPIPE, and dies of the exception). Across a SIGKILL
/// of the server — left unreaped, a zombie, while its successor starts —
/// both keep running under the same pids, nothing restarts them, and what
/// they wrote while no server ran reaches the new server's log with no
/// line missing.
#[tokio::test]
async fn services_that_write_keep_running_across_a_server_crash_and_lose_no_line() {
    let tag = Tag::new("ot-crash");
    let conf = conf_dir(&tag);
    let (sh, sleep, python) = (
        tag.program("sh"),
        tag.program("sleep"),
        tag.program("python3"),
    );
    unit(
        &conf,
        "shw",
        &format!(
            "exec: \"{} -c 'i=0; while :; do i=$((i+1)); echo line $i; echo err $i >&2; {} 0.01; done'\"\n",
            sh.display(),
            sleep.display()
        ),
    );
    let script = tag.dir().join("writer.py");
    std::fs::write(
        &script,
        "import itertools, time\n\
         for i in itertools.count(1):\n    \
             print('line', i, flush=True)\n    \
             time.sleep(0.01)\n",
    )
    .expect("script");
    unit(
        &conf,
        "pyw",
        &format!("exec: {} {}\n", python.display(), script.display()),
    );
    let old = Server::start(&tag, &conf, &[]).await;
    old.wait_running(&["shw", "pyw"]);
    let pids = [old.pid_of("shw"), old.pid_of("pyw")];
    wait_numbers(&old, "shw", "line", 20);
    wait_numbers(&old, "pyw", "line", 20);
    let seen_before = numbers(&old, "shw", "line").last().copied().unwrap_or(0);

    old.child.signal(Signal::SIGKILL).expect("kill the server");
    // The crash window: both write about 100 lines a second meanwhile.
    std::thread::sleep(Duration::from_secs(1));
    let new = Server::start(&tag, &conf, &[]).await;
    drop(old); // reaped only now: it was a zombie while `new` started

    for (name, pid) in [("shw", pids[0]), ("pyw", pids[1])] {
        assert!(
            zinit_tests::carries_tag(pid, tag.as_str()),
            "{name} (pid {pid}) did not survive the crash"
        );
        assert_eq!(new.pid_of(name), pid, "{name} was started again");
        assert_eq!(restarts(&new, name), 0, "{name} was restarted");
    }
    for (name, word) in [("shw", "line"), ("shw", "err"), ("pyw", "line")] {
        let found = wait_numbers(&new, name, word, seen_before + 150);
        assert_consecutive(&format!("{name} {word}"), &found);
        assert!(
            found[0] <= seen_before + 50,
            "{name} {word}: the lines of the crash window are missing: the new server's log starts at {}, the old one had seen {seen_before}",
            found[0]
        );
    }
    let out = new.zinit(&["shutdown"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(wait_gone(&pids, tag.as_str(), Duration::from_secs(5)).is_empty());
    assert!(
        !tag.dir().join("s.sock.streams").exists(),
        "the streams directory outlived a clean shutdown"
    );
}

/// db → migrate (a oneshot that has exited) → app, and cache, stopped by
/// hand: the shutdown stops app before db although the only link is the
/// exited migration, and says so (`app (via migrate)`); a server crash
/// neither runs the migration again nor starts the cache.
#[tokio::test]
async fn an_exited_migration_orders_the_shutdown_and_survives_a_crash_unrepeated() {
    let tag = Tag::new("ot-stack");
    let conf = conf_dir(&tag);
    let (sh, sleep) = (tag.program("sh"), tag.program("sleep"));
    let (sh, sleep) = (sh.display(), sleep.display());
    let events = tag.dir().join("events");
    let migrations = tag.dir().join("migrations");
    let (events, migrations) = (events.display(), migrations.display());
    unit(
        &conf,
        "db",
        &format!(
            "exec: \"{sh} -c 'trap \\\"echo db-stopping >> {events}; exit 0\\\" TERM; while :; do {sleep} 0.05; done'\"\n\
             stop_mode: main\n"
        ),
    );
    unit(
        &conf,
        "migrate",
        &format!("exec: \"{sh} -c 'echo migrated >> {migrations}'\"\noneshot: true\nafter: [db]\n"),
    );
    unit(
        &conf,
        "app",
        &format!(
            "exec: \"{sh} -c 'trap \\\"{sleep} 0.3; echo app-stopped >> {events}; exit 0\\\" TERM; while :; do {sleep} 0.05; done'\"\n\
             stop_mode: main\n\
             after: [migrate]\n"
        ),
    );
    unit(&conf, "cache", &format!("exec: {sleep} 1000\n"));

    let mut old = Server::start(&tag, &conf, &[]).await;
    old.wait_running(&["db", "app", "cache"]);
    old.wait_state("migrate", "exited");
    let out = old.zinit(&["stop", "cache"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let app = old.pid_of("app");

    let out = old.zinit(&["--json", "shutdown", "--dry-run"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let plan = out
        .json_lines()
        .into_iter()
        .find(|e| e["kind"] == "plan")
        .expect("a plan");
    let db: &Value = plan["units"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["name"] == "db"))
        .expect("db is planned");
    assert_eq!(db["waits_for"], serde_json::json!(["app"]), "{plan}");
    assert_eq!(db["via"]["app"], "migrate", "{plan}");
    let out = old.zinit(&["shutdown", "--dry-run"]);
    assert!(
        out.stdout.contains("after app (via migrate)"),
        "{}",
        out.stdout
    );

    old.child.signal(Signal::SIGKILL).expect("kill the server");
    let _ = old.child.wait().await;
    drop(old);
    let new = Server::start(&tag, &conf, &[]).await;
    new.wait_state("migrate", "exited");
    assert_eq!(new.pid_of("app"), app, "app was started again");
    new.wait_state("cache", "stopped");
    // A start of app's chain now would have run migrate by now.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::read_to_string(migrations.to_string()).expect("migrations"),
        "migrated\n",
        "the migration ran again after the crash"
    );
    assert_eq!(
        new.zinit(&["--json", "status", "cache"]).json()["state"],
        "stopped"
    );

    let out = new.zinit(&["shutdown"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let order = std::fs::read_to_string(events.to_string()).expect("events");
    assert_eq!(
        order, "app-stopped\ndb-stopping\n",
        "db was signalled before app had stopped"
    );
}

/// The timestamps (seconds of the day, from the server's log) of the lines
/// that contain every one of `parts`, in order.
fn log_times(log: &str, parts: &[&str]) -> Vec<f64> {
    log.lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| {
            // 2026-12-06T03:59:10.946363Z ...
            let time = l.split_whitespace().next()?.split_once('T')?.1;
            let time = time.trim_end_matches('Z');
            let mut fields = time.split(':');
            let h: f64 = fields.next()?.parse().ok()?;
            let m: f64 = fields.next()?.parse().ok()?;
            let s: f64 = fields.next()?.parse().ok()?;
            Some(h * 3600.0 + m * 60.0 + s)
        })
        .collect()
}

/// A readiness test that never passes (a real `sh` that exits 1): the unit
/// is stopped when its test timeout ends, not an interval before it, with
/// no refused transition in the server's log, and it is then really
/// restarted (a new pid) — the one restart its status counts.
#[tokio::test]
async fn a_test_that_never_passes_times_out_on_time_and_counts_only_real_restarts() {
    let tag = Tag::new("ot-ready");
    let conf = conf_dir(&tag);
    let (sh, sleep) = (tag.program("sh"), tag.program("sleep"));
    unit(
        &conf,
        "neverready",
        &format!(
            "exec: {} 1000\ntest: \"{} -c 'exit 1'\"\ntest_timeout: 2s\ntest_interval: 300ms\n\
             restart: {{policy: always, delay: 200ms}}\n",
            sleep.display(),
            sh.display()
        ),
    );
    let server = Server::start(&tag, &conf, &["--log-level", "info"]).await;
    let first = server.wait_state("neverready", "starting")["pid"]
        .as_i64()
        .expect("a pid");
    let second = loop {
        let status = server.wait_state("neverready", "starting");
        match status["pid"].as_i64() {
            Some(pid) if pid != first => break status,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    assert_eq!(second["restarts"], 1, "{second}");
    let log = server.log();
    assert!(!log.contains("refused transition"), "{log}");
    let started = log_times(&log, &["neverready: ", "-> starting"]);
    let stopping = log_times(&log, &["neverready: starting -> stopping"]);
    let waited = stopping[0] - started[0];
    assert!(
        (1.95..=2.05).contains(&waited),
        "the test timeout of 2 s ended after {waited:.3} s:\n{log}"
    );
}

/// A reload compares files as parsed: a comment and a reordering restart
/// nothing; a stop setting applies to the running unit without a restart;
/// an `env` change restarts it; a unit stopped by hand stays stopped
/// whatever its file says; and `--dry-run` says all that first, per unit,
/// changing nothing.
#[tokio::test]
async fn a_reload_changes_only_what_changed_and_keeps_a_stopped_unit_stopped() {
    let tag = Tag::new("ot-reload");
    let conf = conf_dir(&tag);
    let sleep = tag.program("sleep");
    let sleep = sleep.display();
    unit(
        &conf,
        "db",
        &format!("exec: {sleep} 1001\nstop_timeout_ms: 5000\n"),
    );
    unit(&conf, "cache", &format!("exec: {sleep} 1002\n"));
    let server = Server::start(&tag, &conf, &[]).await;
    server.wait_running(&["db", "cache"]);
    assert_eq!(server.zinit(&["stop", "cache"]).code, 0);
    let db = server.pid_of("db");
    let reload = |args: &[&str]| {
        let mut all = vec!["--json", "reload"];
        all.extend_from_slice(args);
        let out = server.zinit(&all);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        out.json()
    };

    // Comments, formatting and key order.
    unit(
        &conf,
        "db",
        &format!("# the database\nstop_timeout_ms:   5000   # five seconds\nexec: {sleep} 1001\n"),
    );
    unit(
        &conf,
        "cache",
        &format!("exec: {sleep} 1002\n# a comment\n"),
    );
    let r = reload(&[]);
    assert_eq!(r["unchanged"], serde_json::json!(["cache", "db"]), "{r}");
    assert_eq!(server.pid_of("db"), db, "a comment restarted db");
    assert_eq!(
        server.zinit(&["--json", "status", "cache"]).json()["state"],
        "stopped"
    );

    // A stop setting, and a new command for the stopped unit: first a dry run.
    unit(
        &conf,
        "db",
        &format!("exec: {sleep} 1001\nstop_timeout_ms: 7000\n"),
    );
    unit(&conf, "cache", &format!("exec: {sleep} 1003\n"));
    let text = server.zinit(&["reload", "--dry-run"]).stdout;
    assert!(
        text.contains("db: apply live (stop_timeout: 5s -> 7s)"),
        "{text}"
    );
    assert!(
        text.contains("cache: keep stopped (stopped by request) (exec:"),
        "{text}"
    );
    let plan = |server: &Server| {
        let out = server.zinit(&["--json", "shutdown", "--dry-run"]);
        out.json_lines()
            .into_iter()
            .find(|e| e["kind"] == "plan")
            .expect("a plan")
    };
    let budget = |plan: &Value| plan["units"][0]["budget"].as_f64();
    assert_eq!(budget(&plan(&server)), Some(5.0), "the dry run changed db");
    let r = reload(&[]);
    assert_eq!(r["updated"], serde_json::json!(["cache", "db"]), "{r}");
    assert_eq!(r["changed"], serde_json::json!([]), "{r}");
    assert_eq!(server.pid_of("db"), db, "a stop setting restarted db");
    assert_eq!(
        budget(&plan(&server)),
        Some(7.0),
        "the new timeout is not in force"
    );
    assert_eq!(
        server.zinit(&["--json", "status", "cache"]).json()["state"],
        "stopped"
    );

    // What shapes the process restarts it.
    unit(
        &conf,
        "db",
        &format!("exec: {sleep} 1001\nstop_timeout_ms: 7000\nenv: {{MODE: fast}}\n"),
    );
    let r = reload(&[]);
    assert_eq!(r["changed"], serde_json::json!(["db"]), "{r}");
    let end = Instant::now() + Duration::from_secs(15);
    while server.zinit(&["--json", "status", "db"]).json()["pid"].as_i64() == Some(db.into()) {
        assert!(Instant::now() < end, "db was not restarted for its env");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.wait_running(&["db"]);
    assert_eq!(
        server.zinit(&["--json", "status", "cache"]).json()["state"],
        "stopped"
    );
    assert_eq!(server.zinit(&["shutdown"]).code, 0);
}

/// `start` of a unit whose dependency's dependency has an invalid file
/// fails at once, naming the chain and the file's error, instead of
/// waiting forever; once the file is fixed and reloaded it starts. A
/// dependency that is only slow is waited for, up to `--timeout`.
#[tokio::test]
async fn start_fails_at_once_through_a_chain_that_cannot_become_ready_and_waits_only_so_long() {
    let tag = Tag::new("ot-start");
    let conf = conf_dir(&tag);
    let (sh, sleep) = (tag.program("sh"), tag.program("sleep"));
    let (sh, sleep) = (sh.display(), sleep.display());
    unit(&conf, "db", &format!("exec: {sleep} 1001\nusr: postgres\n"));
    unit(
        &conf,
        "migrate",
        &format!("exec: {sh} -c true\noneshot: true\nafter: [db]\n"),
    );
    unit(
        &conf,
        "app",
        &format!("exec: {sleep} 1002\nafter: [migrate]\n"),
    );
    let server = Server::start(&tag, &conf, &[]).await;

    let began = Instant::now();
    let out = server.zinit(&["start", "app"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(began.elapsed() < Duration::from_secs(10), "start waited");
    assert!(
        out.stderr.contains(
            "app cannot start: waiting for migrate, which waits for db: its file is invalid ("
        ) && out.stderr.contains("usr"),
        "{}",
        out.stderr
    );

    unit(&conf, "db", &format!("exec: {sleep} 1001\n"));
    assert_eq!(server.zinit(&["reload"]).code, 0);
    let out = server.zinit(&["start", "app"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    server.wait_state("migrate", "exited");

    // Only slow: a test that passes late. `start` waits, bounded.
    unit(
        &conf,
        "slow",
        &format!("exec: {sleep} 1003\ntest: \"{sh} -c 'exit 1'\"\ntest_timeout: 60s\n"),
    );
    unit(
        &conf,
        "front",
        &format!("exec: {sleep} 1004\nafter: [slow]\n"),
    );
    assert_eq!(server.zinit(&["reload"]).code, 0);
    let began = Instant::now();
    let out = server.zinit(&["start", "front", "--timeout", "1s"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(began.elapsed() < Duration::from_secs(10));
    assert!(
        out.stderr.contains(
            "front did not become ready within 1s (blocked: waiting for slow (starting))"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(server.zinit(&["shutdown"]).code, 0);
}

/// `redis-server --daemonize yes`, a real program that forks its daemon
/// and exits 0: without `pid_file` the unit runs on (no back-off, no kill
/// and start again) and says why; with `pid_file` the daemon becomes the
/// unit's main process, with and without cgroups (where a daemon that left
/// its session is found only through the file). Both stop cleanly, and the
/// shutdown leaves nothing.
#[tokio::test]
async fn a_program_that_daemonizes_runs_on_and_is_followed_through_its_pid_file() {
    for cgroups in [true, false] {
        daemons(cgroups).await;
    }
}

async fn daemons(cgroups: bool) {
    let tag = Tag::new(if cgroups {
        "ot-daemon"
    } else {
        "ot-daemon-nocg"
    });
    let conf = conf_dir(&tag);
    let dir = tag.dir().display().to_string();
    let redis = zinit_tests::foreign::installed("redis-server");
    let args = |name: &str| {
        format!(
            "{redis} --port 0 --unixsocket {dir}/{name}.sock --save '' --appendonly no \
             --set-proc-title no --dir {dir} --daemonize yes --pidfile {dir}/{name}.pid"
        )
    };
    if cgroups {
        unit(&conf, "plain", &format!("exec: \"{}\"\n", args("plain")));
    }
    unit(
        &conf,
        "followed",
        &format!(
            "exec: \"{}\"\npid_file: {dir}/followed.pid\n",
            args("followed")
        ),
    );
    let env: &[(&str, &str)] = if cgroups {
        &[]
    } else {
        &[("ZINIT_CGROUP", "off")]
    };
    let server = Server::start_careless(&tag, &conf, &[], env).await;
    let daemon = |name: &str| -> i32 {
        let path = tag.dir().join(format!("{name}.pid"));
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                return pid;
            }
            assert!(Instant::now() < end, "{name} wrote no pid file");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // `start` returns once the pid file was read.
    let out = server.zinit(&["start", "followed"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let followed = daemon("followed");
    let status = server.zinit(&["--json", "status", "followed"]).json();
    assert_eq!(status["pid"].as_i64(), Some(followed.into()), "{status}");
    assert_eq!(status["state"], "running", "{status}");
    // Long enough for the old flapping: a back-off of 0.5 s, then the
    // leftover grace of 1 s, then a kill and a new start.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        zinit_tests::carries_tag(followed, tag.as_str()),
        "the daemon is gone"
    );
    assert_eq!(restarts(&server, "followed"), 0);
    let mut daemons = vec![followed];
    if cgroups {
        let plain = daemon("plain");
        daemons.push(plain);
        let status = server.zinit(&["--json", "status", "plain"]).json();
        assert_eq!(status["state"], "running", "{status}");
        assert_eq!(status["restarts"], 0, "{status}");
        assert!(
            status["reason"].as_str().is_some_and(
                |r| r.contains("main process exited 0, 1 process remains (did it daemonize?")
            ),
            "{status}"
        );
        assert!(
            zinit_tests::carries_tag(plain, tag.as_str()),
            "{plain} is gone"
        );
    }

    let out = server.zinit(&["stop", "followed"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains(&format!("pid {followed} (redis-server, depth 0)")),
        "{}",
        out.stdout
    );
    assert!(wait_gone(&[followed], tag.as_str(), Duration::from_secs(5)).is_empty());
    let out = server.zinit(&["--json", "shutdown"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(wait_gone(&daemons, tag.as_str(), Duration::from_secs(5)).is_empty());
}

/// A service writing 10,000 lines a second (python3, in batches every
/// 10 ms) through a SIGKILL of the server and a crash window of a second:
/// what it wrote while no server ran reaches the new server's log file, no
/// line twice. The one loss allowed is what the dying server had already
/// read from the pipe and not yet stored: at most one read (16 KiB), right
/// where it died. The numbers are printed (`-- --nocapture`).
#[tokio::test]
async fn ten_thousand_lines_a_second_through_a_crash_lose_none() {
    let tag = Tag::new("ot-flood");
    let conf = conf_dir(&tag);
    let python = tag.program("python3");
    let script = tag.dir().join("flood.py");
    std::fs::write(
        &script,
        "import sys, time\n\
         n = 0\n\
         start = time.monotonic()\n\
         while True:\n    \
             due = int((time.monotonic() - start) * 10000)\n    \
             lines = []\n    \
             while n < due:\n        \
                 n += 1\n        \
                 lines.append('line %d\\n' % n)\n    \
             sys.stdout.write(''.join(lines))\n    \
             sys.stdout.flush()\n    \
             time.sleep(0.01)\n",
    )
    .expect("script");
    let log = tag.dir().join("flood.log");
    unit(
        &conf,
        "flood",
        &format!(
            "exec: {} {}\nlog: {{mode: ring, file: {}, max_size: 1073741824}}\n",
            python.display(),
            script.display(),
            log.display()
        ),
    );
    let numbers_in_file = || -> Vec<u64> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                l.rsplit_once("line ")
                    .and_then(|(_, n)| n.trim().parse().ok())
            })
            .collect()
    };
    let old = Server::start(&tag, &conf, &[]).await;
    old.wait_running(&["flood"]);
    let pid = old.pid_of("flood");
    std::thread::sleep(Duration::from_secs(2));
    let mut old = old;
    old.child.signal(Signal::SIGKILL).expect("kill the server");
    let _ = old.child.wait().await;
    let before = numbers_in_file().last().copied().unwrap_or(0);
    drop(old);
    std::thread::sleep(Duration::from_secs(1));
    let new = Server::start(&tag, &conf, &[]).await;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(new.pid_of("flood"), pid, "the writer was started again");
    let out = new.zinit(&["shutdown"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let found = numbers_in_file();
    let last = found.last().copied().unwrap_or(0);
    let mut sorted = found.clone();
    sorted.dedup();
    let missing = last as usize - sorted.len();
    let first_after = found.iter().copied().find(|&n| n > before).unwrap_or(0);
    eprintln!(
        "flood: {last} lines written in all; the old server had logged up to {before}; \
         the new one logged from {first_after}; {} line(s) missing, {} duplicated",
        missing,
        found.len() - sorted.len()
    );
    assert_eq!(found.first(), Some(&1));
    assert_eq!(found.len(), sorted.len(), "lines logged twice");
    let gaps: Vec<(u64, u64)> = found
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(
        gaps.is_empty()
            || gaps == [(before, first_after)] && missing * "line 99999".len() <= 16 * 1024,
        "lines lost beyond the dying server's last read: {gaps:?}"
    );
    assert!(
        last > before + 10_000,
        "the crash window wrote too little: {before} -> {last}"
    );
}

/// While no server runs, a service's output waits in its pipe up to the
/// documented bound (64 KiB per stream); past it the writer blocks — it is
/// not killed — and it goes on once the next server reads again.
#[tokio::test]
async fn past_the_pipes_capacity_without_a_server_the_writer_blocks_and_is_not_killed() {
    let tag = Tag::new("ot-bound");
    let conf = conf_dir(&tag);
    let python = tag.program("python3");
    let script = tag.dir().join("bulk.py");
    let progress = tag.dir().join("progress");
    std::fs::write(
        &script,
        format!(
            "import sys, time\n\
             line = 'x' * 1023 + '\\n'\n\
             written = 0\n\
             while True:\n    \
                 sys.stdout.write(line * 16)\n    \
                 sys.stdout.flush()\n    \
                 written += 16 * 1024\n    \
                 open('{}', 'w').write(str(written))\n    \
                 time.sleep(0.005)\n",
            progress.display()
        ),
    )
    .expect("script");
    unit(
        &conf,
        "bulk",
        &format!("exec: {} {}\n", python.display(), script.display()),
    );
    let written = || -> u64 {
        std::fs::read_to_string(&progress)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };
    let mut old = Server::start(&tag, &conf, &[]).await;
    old.wait_running(&["bulk"]);
    let pid = old.pid_of("bulk");
    old.child.signal(Signal::SIGKILL).expect("kill the server");
    let _ = old.child.wait().await;
    drop(old);
    let at_kill = written();
    // Blocked: no progress for half a second.
    let end = Instant::now() + Duration::from_secs(20);
    let blocked_at = loop {
        let before = written();
        std::thread::sleep(Duration::from_millis(500));
        let after = written();
        if after == before {
            break after;
        }
        assert!(
            Instant::now() < end,
            "the writer never blocked: {after} bytes"
        );
    };
    let kept = blocked_at.saturating_sub(at_kill);
    eprintln!("bound: {kept} bytes written while no server ran, then blocked");
    assert!(
        (32 * 1024..=(64 + 32) * 1024).contains(&kept),
        "the pipe kept {kept} bytes, not about 64 KiB"
    );
    assert!(
        zinit_tests::carries_tag(pid, tag.as_str()),
        "the blocked writer was killed"
    );

    let new = Server::start(&tag, &conf, &[]).await;
    let end = Instant::now() + Duration::from_secs(10);
    while written() <= blocked_at + 64 * 1024 {
        assert!(Instant::now() < end, "the writer did not go on");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(new.pid_of("bulk"), pid);
    assert_eq!(new.zinit(&["shutdown"]).code, 0);
}

/// `test_timeout: 0` still runs the test once (bounded to 100 ms): a test
/// that passes at once makes the unit ready, one that fails fails it.
#[tokio::test]
async fn a_zero_test_timeout_still_runs_the_test_once() {
    let tag = Tag::new("ot-zero");
    let conf = conf_dir(&tag);
    let (sh, sleep) = (tag.program("sh"), tag.program("sleep"));
    for (name, code) in [("passes", 0), ("fails", 1)] {
        unit(
            &conf,
            name,
            &format!(
                "exec: {} 1000\ntest: \"{} -c 'exit {code}'\"\ntest_timeout: 0\nrestart: never\n",
                sleep.display(),
                sh.display()
            ),
        );
    }
    let server = Server::start(&tag, &conf, &[]).await;
    server.wait_state("passes", "running");
    let failed = server.wait_state("fails", "failed");
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("last: exit code 1")),
        "{failed}"
    );
    assert_eq!(server.zinit(&["shutdown"]).code, 0);
}
