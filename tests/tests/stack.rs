//! The example stack of `examples/stack/` (PostgreSQL with its `initdb`, a
//! oneshot migration, Python's HTTP server as the app, nginx in front), run
//! from those very files with their paths and ports moved into the test's
//! directory, against the packages from Debian: what an operator sees over
//! its life — it serves, it survives a crash of zinit_server without running
//! the migration again, and the shutdown stops nginx, the app, then
//! PostgreSQL, each master with its own signal, a client session open to the
//! end, and PostgreSQL's own log saying it shut down cleanly.

use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use zinit_process::Signal;
use zinit_tests::{Server, Tag, output_within, wait_gone};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/stack")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// An HTTP GET on loopback: the status line and body.
fn get(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

/// `psql` as the postgres user on the test's cluster: the output of one
/// query, tuples only.
fn query(pg: &Path, tag: &Tag, sql: &str) -> String {
    let out = output_within(
        std::process::Command::new("runuser")
            .args(["-u", "postgres", "--", "/usr/bin/psql", "-h"])
            .arg(pg)
            .args(["-v", &format!("tag={}", tag.as_str()), "-tAc", sql]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The example files, moved into `dir`: the cluster into `dir/pg`, nginx's
/// files into `dir`, the ports to free ones, the cluster's name to the tag
/// (so every PostgreSQL process carries it); the database's output also
/// goes to a file, for the test to read after the server is gone.
fn install_stack(tag: &Tag, conf: &Path, pg: &Path, ports: (u16, u16)) {
    let dir = tag.dir().display().to_string();
    let pg_text = pg.display().to_string();
    for entry in std::fs::read_dir(examples()).expect("examples/stack") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        if !(name.ends_with(".yaml") || name == "nginx.conf") {
            continue;
        }
        let mut text = std::fs::read_to_string(&path)
            .expect("read the example")
            .replace("/var/lib/postgresql/zinit", &pg_text)
            .replace("/etc/zinit/stack", &dir)
            .replace("/run/zinit-stack-nginx.pid", &format!("{dir}/nginx.pid"))
            .replace("/tmp/zinit-stack-nginx", &format!("{dir}/nginx"))
            .replace("18080", &ports.0.to_string())
            .replace("18081", &ports.1.to_string())
            .replace(
                "cluster_name=zinit",
                &format!("cluster_name={}", tag.as_str()),
            );
        if name == "db.yaml" {
            text.push_str(&format!("log: {{mode: ring, file: {pg_text}/db.log}}\n"));
        }
        let target = if name == "nginx.conf" {
            tag.dir().join(name)
        } else {
            conf.join(name)
        };
        std::fs::write(target, text).expect("write");
    }
}

#[tokio::test]
async fn the_example_stack_serves_survives_a_crash_and_shuts_down_masters_first_in_order() {
    let tag = Tag::new("stack");
    let conf = tag.dir().join("conf");
    let pg = tag.dir().join("pg");
    std::fs::create_dir_all(&conf).expect("conf");
    std::fs::create_dir_all(&pg).expect("pg");
    let chown = output_within(
        std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&pg),
        Duration::from_secs(10),
    );
    assert!(chown.status.success(), "chown: {chown:?}");
    let ports = (free_port(), free_port());
    install_stack(&tag, &conf, &pg, ports);

    let old = Server::start(&tag, &conf, &[]).await;
    let out = old.zinit(&["start", "web", "--timeout", "120s"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    old.wait_state("migrate", "exited");
    let page = get(ports.1).unwrap_or_default();
    assert!(page.starts_with("HTTP/1.1 200"), "nginx -> app: {page}");
    assert_eq!(query(&pg, &tag, "SELECT count(*) FROM migrations"), "1");

    // A client session, open until the database goes down.
    let mut client = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--", "/usr/bin/psql", "-h"])
        .arg(&pg)
        .args([
            "-v",
            &format!("tag={}", tag.as_str()),
            "-c",
            "SELECT pg_sleep(600)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
    let end = Instant::now() + Duration::from_secs(15);
    while query(
        &pg,
        &tag,
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(600)%'",
    ) != "1"
    {
        assert!(Instant::now() < end, "the client session never began");
        std::thread::sleep(Duration::from_millis(50));
    }

    // zinit_server dies; the next one takes the stack over.
    let db = old.pid_of("db");
    let mut old = old;
    old.child.signal(Signal::SIGKILL).expect("kill the server");
    let _ = old.child.wait().await;
    drop(old);
    let new = Server::start(&tag, &conf, &[]).await;
    new.wait_state("migrate", "exited");
    assert_eq!(new.pid_of("db"), db, "the database was started again");
    let page = get(ports.1).unwrap_or_default();
    assert!(page.starts_with("HTTP/1.1 200"), "after the crash: {page}");
    assert_eq!(
        query(&pg, &tag, "SELECT count(*) FROM migrations"),
        "1",
        "the migration ran again after the crash"
    );

    let out = new.zinit(&["--json", "shutdown"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let events = out.json_lines();
    let at = |kind: &str, unit: &str| -> f64 {
        events
            .iter()
            .find(|e| e["kind"] == kind && e["unit"] == unit)
            .and_then(|e| e["at"].as_f64())
            .unwrap_or_else(|| panic!("no {kind} of {unit}: {events:?}"))
    };
    assert!(
        at("unit_stopped", "web") <= at("unit_stopping", "app"),
        "{events:?}"
    );
    assert!(
        at("unit_stopped", "app") <= at("unit_stopping", "db"),
        "{events:?}"
    );
    let signalled: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "signal_sent" && e["unit"] == "db")
        .collect();
    assert!(
        signalled
            .first()
            .is_some_and(|s| s["depth"] == 0 && s["signal"] == "SIGINT"),
        "PostgreSQL's master gets SIGINT first: {signalled:?}"
    );
    let summary = events
        .iter()
        .find(|e| e["kind"] == "summary")
        .expect("a summary");
    assert_eq!(summary["clean"], true, "{summary}");
    assert_eq!(summary["units_killed"], 0, "{summary}");

    let log = std::fs::read_to_string(pg.join("db.log")).expect("the database's log");
    let fast = log
        .find("received fast shutdown request")
        .unwrap_or_else(|| panic!("no fast shutdown in:\n{log}"));
    assert!(
        log.contains("database system is shut down"),
        "PostgreSQL did not finish its shutdown:\n{log}"
    );
    assert!(
        !log[..fast].contains("canceling statement due to user request"),
        "a backend was signalled before the master:\n{log}"
    );
    let status = client.wait().expect("psql exits");
    let mut said = String::new();
    if let Some(mut stderr) = client.stderr.take() {
        let _ = stderr.read_to_string(&mut said);
    }
    assert!(!status.success(), "the session ended with the database");
    assert!(
        said.contains("terminating connection due to administrator command"),
        "{said}"
    );
    let _ = wait_gone(&tag.pids(), tag.as_str(), Duration::from_secs(5));
    assert!(tag.pids().is_empty(), "left: {:?}", tag.pids());
}

/// The README's Quick start, run from the README's own text: its `sh`
/// block, with its paths moved into the test's directory (the config
/// directory, the cluster, the binaries just built, the socket through
/// `ZINIT_SOCKET`), and the build and the package install left to the test
/// command (which installs PostgreSQL). It must start PostgreSQL as the
/// postgres user after its initdb and shut it down cleanly.
#[test]
fn the_readmes_quick_start_works_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let section = &readme[readme.find("## Quick start").expect("a Quick start")..];
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a sh block in the Quick start");
    let tag = Tag::new("quickstart");
    let dir = tag.dir().display().to_string();
    let bin = zinit_tests::workspace_bin("zinit_server");
    let bin = bin.parent().expect("bin dir").display().to_string();
    let script: String = block
        .lines()
        .map(|line| {
            if line.starts_with("cargo build") || line.starts_with("apt-get install") {
                format!("true  # the test command did: {line}")
            } else {
                line.replace("/etc/zinit", &format!("{dir}/conf"))
                    .replace("/var/lib/postgresql/zinit", &format!("{dir}/pg"))
                    .replace("./target/release", &bin)
                    .replace(
                        "cluster_name=zinit",
                        &format!("cluster_name={}", tag.as_str()),
                    )
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        script.contains("initdb") && script.contains("user: postgres"),
        "{script}"
    );
    let out = output_within(
        std::process::Command::new("bash")
            .args(["-ec", &script])
            .env("ZINIT_SOCKET", tag.dir().join("s.sock"))
            .stdin(Stdio::null()),
        Duration::from_secs(180),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Quick start failed:\n{script}\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("db: running (pid"), "{stdout}");
    assert!(
        stdout.contains("initdb") && stdout.contains("exited"),
        "{stdout}"
    );
    assert!(stdout.contains("summary: clean"), "{stdout}");
    assert!(
        tag.dir().join("pg/data/PG_VERSION").exists(),
        "initdb made no cluster"
    );
    assert!(
        wait_gone(&tag.pids(), tag.as_str(), Duration::from_secs(5)).is_empty(),
        "left: {:?}",
        tag.pids()
    );
}
