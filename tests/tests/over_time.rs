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
