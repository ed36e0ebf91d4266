//! `zinit_ui` in a real browser (headless Chromium through chromedriver)
//! against a real `zinit_server` with real process trees: the page lists the
//! units, a stop from the page stops the unit's whole tree (checked in
//! /proc), the logs follow and show "lines missed" notices, a shutdown from
//! the page (dry run, confirmation) draws its timeline with graceful and
//! killed units and the server exits, a shutdown started by the CLI shows up
//! on an open page, and the page reconnects to a new server. Screenshots go
//! to `target/ui-screenshots/`. The security rules: token file, login (by
//! `?token=`, and by the form in the browser), same-origin and CSRF checks,
//! the session (needed for every action, void once zinit_ui restarts), the
//! Host check, the caller's uid (root and zinit_ui's own user), GETs change
//! nothing, server text shown as text only, the whole CSP on every answer,
//! the server's credentials checked before anything is sent (a planted
//! socket gets no byte), the bound on open streams, and the message (in the
//! log and on the page) when the socket is out of reach, retried until it
//! can be used.
//!
//! The binaries are built by the first `workspace_bin` call of the test
//! process, so a changed zinit-ui is what the tests run.
//!
//! Chromium and chromedriver come from Debian (`chromium`, `chromium-driver`)
//! and are installed with apt-get when missing. Every process carries the
//! test's tag; the tag reaps them, pass or fail. Browser tests run one at a
//! time (the machine has two cores).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zinit_process::spawn::ExitStatus;
use zinit_tests::web::{self, Browser, Ui, UiStart};
use zinit_tests::{Server, Tag, run_cli, wait_gone};

const FIXTURE: &str = env!("CARGO_BIN_EXE_zinit-fixture");

/// One browser at a time (an async lock: the tests hold it across awaits).
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Writes the service files: (name, fixture arguments, extra YAML).
fn conf(tag: &Tag, services: &[(&str, &str, &str)]) -> PathBuf {
    let conf = tag.dir().join("conf");
    std::fs::create_dir_all(&conf).expect("conf dir");
    for (name, args, extra) in services {
        let text = format!("exec: {FIXTURE} --tag {} {args}\n{extra}", tag.as_str());
        std::fs::write(conf.join(format!("{name}.yaml")), text).expect("service file");
    }
    conf
}

/// Waits (bounded) until every unit runs; returns `zinit --json list`.
fn all_running(server: &Server, count: usize) -> Value {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let out = server.zinit(&["--json", "list"]);
        if out.code == 0 {
            let list = out.json();
            // Services only: a oneshot has exited.
            let units: Vec<Value> = list["units"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|u| u["oneshot"] != true)
                .cloned()
                .collect();
            if units.len() == count && units.iter().all(|u| u["state"] == "running") {
                // Let the trees finish forking.
                std::thread::sleep(Duration::from_millis(200));
                return list;
            }
        }
        assert!(
            Instant::now() < end,
            "the units did not all run: {}",
            out.stdout
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pid_of(list: &Value, name: &str) -> i32 {
    list["units"]
        .as_array()
        .expect("units")
        .iter()
        .find(|u| u["name"] == name)
        .and_then(|u| u["pid"].as_i64())
        .unwrap_or_else(|| panic!("no pid for {name}")) as i32
}

/// The pid and every descendant of it, from /proc.
fn tree(pid: i32) -> Vec<i32> {
    let table =
        zinit_process::ProcessTable::snapshot(zinit_process::Detail::Basic).expect("read /proc");
    let mut pids: Vec<i32> = table.descendants(pid).into_iter().map(|(p, _)| p).collect();
    pids.push(pid);
    pids
}

/// A JavaScript expression: the text of a unit's cell in the units table.
fn cell_expr(unit: &str, column: &str) -> String {
    format!(
        "(document.querySelector('#units tr[data-unit=\"{unit}\"] td[data-col=\"{column}\"]') || {{}}).textContent"
    )
}

/// A script returning the text of a unit's cell.
fn cell(unit: &str, column: &str) -> String {
    format!("return {};", cell_expr(unit, column))
}

/// Waits until the server process has exited; its status.
async fn server_exit(server: &mut Server) -> ExitStatus {
    tokio::time::timeout(Duration::from_secs(35), server.child.wait())
        .await
        .expect("zinit_server exits within 35 s")
        .expect("wait for zinit_server")
}

#[tokio::test]
async fn the_page_lists_stops_follows_logs_and_shuts_down_with_a_timeline() {
    let _one = BROWSER.lock().await;
    let tag = Tag::new("ui");
    let conf = conf(
        &tag,
        &[
            ("polite", "--width 2 --depth 2 --term-delay-ms 250", ""),
            // chatty waits for polite only through an exited oneshot:
            // the plan says `chatty (via migrate)`.
            ("chatty", "--chatty-ms 50", "after: [migrate]\n"),
            (
                "stubborn",
                "--width 1 --depth 1 --ignore-term all",
                "shutdown_timeout: 1\n",
            ),
            // Far more than the server keeps (10,000 lines): a follower
            // that falls behind catches up from the kept lines, so only a
            // burst past them makes lines go missing.
            ("burst", "--output-lines 200000", ""),
        ],
    );
    std::fs::write(
        conf.join("migrate.yaml"),
        "exec: /bin/true\noneshot: true\nafter: [polite]\n",
    )
    .expect("service file");
    let mut server = Server::start(&tag, &conf, &[]).await;
    let list = all_running(&server, 4);
    let ui = Ui::serving(&server.socket, &[], None);
    let browser = Browser::start(&tag, "page");
    browser.goto(&ui.url);

    // The units table: every unit, its state and pid as the server has them,
    // and CPU and memory from the stats.
    browser.wait(
        "four running units in the table",
        Duration::from_secs(15),
        "return document.querySelectorAll('#units tbody tr[data-state=\"running\"]').length === 4",
    );
    for name in ["polite", "chatty", "stubborn", "burst"] {
        assert_eq!(
            browser.js(&cell(name, "pid")),
            pid_of(&list, name).to_string(),
            "{name}'s pid on the page"
        );
    }
    browser.wait(
        "memory from the stats",
        Duration::from_secs(10),
        &format!(
            "const m = {}; return m && m.includes('iB');",
            cell_expr("polite", "mem")
        ),
    );
    assert_eq!(browser.js(&cell("chatty", "kind")), "service");
    assert!(
        browser.js("return document.getElementById('banner').hidden") == true,
        "no banner while connected"
    );

    // Stop from the page: the whole tree goes, as /proc shows.
    let polite = pid_of(&list, "polite");
    let members = tree(polite);
    assert_eq!(members.len(), 5, "polite is a tree of 5: {members:?}");
    assert!(zinit_tests::all_alive(&members, tag.as_str()));
    browser.click("#units tr[data-unit=\"polite\"] button[data-action=\"stop\"]");
    browser.wait(
        "polite stopped on the page",
        Duration::from_secs(15),
        "return document.querySelector('#units tr[data-unit=\"polite\"]').dataset.state === 'stopped'",
    );
    let left = wait_gone(&members, tag.as_str(), Duration::from_secs(5));
    assert!(left.is_empty(), "processes of polite left: {left:?}");
    let said = browser.wait(
        "the stop's result",
        Duration::from_secs(5),
        "const li = document.querySelector('#results li'); return li && li.textContent.includes('stop polite') && li.textContent;",
    );
    assert!(
        said.as_str()
            .is_some_and(|s| s.contains("graceful") && s.contains("5 exited")),
        "{said}"
    );
    assert_eq!(
        server.zinit(&["--json", "status", "polite"]).json()["state"],
        "stopped"
    );
    // And start it again from the page.
    browser.click("#units tr[data-unit=\"polite\"] button[data-action=\"start\"]");
    browser.wait(
        "polite running again",
        Duration::from_secs(15),
        "return document.querySelector('#units tr[data-unit=\"polite\"]').dataset.state === 'running'",
    );

    // Logs: follow chatty, and the lines keep coming.
    browser.click("#units tr[data-unit=\"chatty\"] button[data-action=\"logs\"]");
    let count = "return [...document.querySelectorAll('#log .l')].filter(l => l.textContent.includes(' chatty chat ')).length";
    let first = browser
        .wait(
            "chatty's lines",
            Duration::from_secs(10),
            &format!("const n = (() => {{ {count} }})(); return n >= 5 && n;"),
        )
        .as_u64()
        .expect("a count");
    browser.wait(
        "more of chatty's lines, followed",
        Duration::from_secs(10),
        &format!(
            "const n = (() => {{ {count} }})(); return n >= {} && n;",
            first + 10
        ),
    );
    assert!(
        browser
            .js("return document.getElementById('log-status').textContent")
            .as_str()
            .is_some_and(|s| s.starts_with("following chatty")),
        "the log pane follows chatty"
    );
    // A burst of 200,000 lines: the follower falls behind and the page says
    // how many lines it missed.
    browser.click("#units tr[data-unit=\"burst\"] button[data-action=\"logs\"]");
    browser.wait(
        "following burst",
        Duration::from_secs(10),
        "return document.getElementById('log-status').textContent.startsWith('following burst')",
    );
    browser.click("#units tr[data-unit=\"burst\"] button[data-action=\"restart\"]");
    let missed = browser.wait(
        "a lines-missed notice",
        Duration::from_secs(20),
        "const m = document.querySelector('#log .missed'); return m && m.textContent;",
    );
    assert!(
        missed
            .as_str()
            .is_some_and(|s| s.contains("line(s) missed")),
        "{missed}"
    );
    browser.wait(
        "the missed count beside the log pane",
        Duration::from_secs(5),
        "return document.getElementById('log-status').textContent.includes('line(s) missed')",
    );
    browser.screenshot("logs-missed");
    // Back to chatty for the shutdown screenshots.
    browser.click("#units tr[data-unit=\"chatty\"] button[data-action=\"logs\"]");
    let list = all_running(&server, 4);
    let all: Vec<i32> = ["polite", "chatty", "stubborn", "burst"]
        .iter()
        .flat_map(|n| tree(pid_of(&list, n)))
        .collect();

    // Shutdown: the dry run first, in a confirmation.
    browser.click("#shutdown-btn");
    browser.wait(
        "the dry run's plan",
        Duration::from_secs(10),
        "return document.getElementById('confirm').open && document.querySelectorAll('#plan tbody tr').length === 4",
    );
    let plan = browser.js("return document.getElementById('confirm').innerText");
    let plan = plan.as_str().expect("text");
    assert!(
        plan.contains("stubborn") && plan.contains("1.00 s") && plan.contains("polite"),
        "{plan}"
    );
    assert!(plan.contains("chatty (via migrate)"), "{plan}");
    browser.screenshot("dry-run");
    assert!(
        zinit_tests::all_alive(&all, tag.as_str()),
        "the dry run stopped nothing"
    );
    browser.click("#confirm-go");

    // The live timeline: stubborn ignores SIGTERM and is killed at 1 s.
    browser.wait(
        "stubborn stopping on the timeline",
        Duration::from_secs(10),
        "return !!document.querySelector('#sd-timeline .tl-row[data-unit=\"stubborn\"] .bar.stopping')",
    );
    browser.screenshot("shutdown-running");
    browser.wait(
        "the shutdown's summary",
        Duration::from_secs(35),
        "return document.getElementById('shutdown-panel').dataset.state === 'done'",
    );
    let outcome = |unit: &str| {
        browser.js(&format!(
            "return document.querySelector('#sd-timeline .tl-row[data-unit=\"{unit}\"] .bar').dataset.outcome"
        ))
    };
    for unit in ["polite", "chatty", "burst"] {
        assert_eq!(outcome(unit), "graceful", "{unit}");
    }
    assert_eq!(outcome("stubborn"), "killed");
    assert_eq!(
        browser.js("return document.querySelectorAll('#sd-timeline .tl-row[data-unit=\"stubborn\"] .sig.kill').length > 0"),
        true,
        "stubborn's SIGKILL is drawn"
    );
    let text = browser.js("return document.getElementById('shutdown-panel').innerText");
    let text = text.as_str().expect("text");
    for expected in [
        "Clean",
        "units killed 1",
        "no process left",
        "started from this page",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    let events = browser.js("return document.getElementById('sd-events').textContent");
    let events = events.as_str().expect("text");
    assert!(events.contains("plan: stopping 4 unit(s)"), "{events}");
    assert!(
        events.contains("stubborn         SIGKILL -> pid"),
        "{events}"
    );
    // Chatty depends on polite, so polite starts stopping after chatty stopped.
    let start = |unit: &str| -> f64 {
        browser
            .js(&format!(
                "return parseFloat(document.querySelector('#sd-timeline .tl-row[data-unit=\"{unit}\"] .bar').style.left)"
            ))
            .as_f64()
            .expect("a position")
    };
    assert!(start("polite") >= start("chatty"), "dependents first");

    // The server exits; the page says so, and keeps the timeline.
    assert_eq!(server_exit(&mut server).await, ExitStatus::Exited(0));
    let left = wait_gone(&all, tag.as_str(), Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "processes left after the shutdown: {left:?}"
    );
    browser.wait(
        "the server-gone banner",
        Duration::from_secs(10),
        "const b = document.getElementById('banner'); return !b.hidden && b.textContent.includes('server unreachable, reconnecting');",
    );
    browser.wait(
        "the timeline saying the server exited",
        Duration::from_secs(5),
        "return document.getElementById('sd-meta').textContent.includes('zinit_server has exited')",
    );
    browser.screenshot("shutdown-done");
}

#[tokio::test]
async fn a_shutdown_from_the_cli_shows_on_an_open_page_which_then_reconnects() {
    let _one = BROWSER.lock().await;
    let tag = Tag::new("uicli");
    let conf = conf(
        &tag,
        &[
            ("slow", "--width 2 --term-delay-ms 700", ""),
            (
                "stubborn",
                "--width 2 --ignore-term all",
                "shutdown_timeout: 2\n",
            ),
            ("web", "", "after: [slow]\n"),
        ],
    );
    let mut server = Server::start(&tag, &conf, &[]).await;
    all_running(&server, 3);
    let ui = Ui::serving(&server.socket, &[], None);
    let browser = Browser::start(&tag, "cli");
    browser.goto(&ui.url);
    browser.wait(
        "three running units",
        Duration::from_secs(15),
        "return document.querySelectorAll('#units tbody tr[data-state=\"running\"]').length === 3",
    );
    assert_eq!(
        browser.js("return document.getElementById('shutdown-panel').hidden"),
        true
    );

    // `zinit shutdown` from a terminal, while the page is open.
    let socket = server.socket.clone();
    let cli = std::thread::spawn(move || run_cli(&socket, &["shutdown"]));
    browser.wait(
        "the joined shutdown on the page",
        Duration::from_secs(10),
        "const p = document.getElementById('shutdown-panel'); return !p.hidden && document.getElementById('sd-meta').textContent.includes('joined');",
    );
    browser.wait(
        "stubborn blocking",
        Duration::from_secs(10),
        "return document.getElementById('sd-blocking').textContent.includes('stubborn')",
    );
    browser.screenshot("joined-running");
    browser.wait(
        "the summary of the CLI's shutdown",
        Duration::from_secs(35),
        "return document.getElementById('shutdown-panel').dataset.state === 'done'",
    );
    let events = browser.js("return document.getElementById('sd-events').textContent");
    let events = events.as_str().expect("text");
    assert!(
        events.contains("plan: stopping 3 unit(s)"),
        "the whole timeline from the start: {events}"
    );
    let outcome = |unit: &str| {
        browser.js(&format!(
            "return document.querySelector('#sd-timeline .tl-row[data-unit=\"{unit}\"] .bar').dataset.outcome"
        ))
    };
    assert_eq!(outcome("slow"), "graceful");
    assert_eq!(outcome("web"), "graceful");
    assert_eq!(outcome("stubborn"), "killed");
    let out = cli.join().expect("the CLI thread");
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(server_exit(&mut server).await, ExitStatus::Exited(0));
    browser.wait(
        "the server-gone banner",
        Duration::from_secs(10),
        "const b = document.getElementById('banner'); return !b.hidden && b.textContent.includes('server unreachable');",
    );
    browser.screenshot("joined-done");

    // A new server on the same socket: the page reconnects by itself.
    drop(server);
    let server = Server::start(&tag, &conf, &[]).await;
    all_running(&server, 3);
    let pid = server.child.pid();
    browser.wait(
        "the page back on the new server",
        Duration::from_secs(15),
        &format!(
            "return document.getElementById('banner').hidden && document.getElementById('server').textContent.includes('pid {pid} ') && document.querySelectorAll('#units tbody tr[data-state=\"running\"]').length === 3"
        ),
    );
}

/// Waits until zinit_ui is connected to the server (its stream says so).
fn connected(ui: &Ui, headers: &[(&str, &str)]) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let head = ui.stream_head(
            "/api/stream",
            headers,
            "\"up\":true",
            Duration::from_secs(2),
        );
        if head.text().contains("\"up\":true") {
            return;
        }
        assert!(
            Instant::now() < end,
            "zinit_ui did not connect: {}",
            head.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET url` from a process running as `uid` (python3's urllib); the
/// status and the body.
fn get_as(uid: u32, url: &str, tag: &Tag) -> (u16, String) {
    use std::os::unix::process::CommandExt;
    let script = "import sys, urllib.request, urllib.error\n\
                  try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=10); print(r.status); print(r.read().decode())\n\
                  except urllib.error.HTTPError as e:\n    print(e.code); print(e.read().decode())\n";
    let out = zinit_tests::output_within(
        std::process::Command::new("python3")
            .args(["-c", script, url, tag.as_str()])
            .uid(uid)
            .gid(uid),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, body) = text.split_once('\n').unwrap_or((&text, ""));
    let code = code
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("python3: {text}{}", String::from_utf8_lossy(&out.stderr)));
    (code, body.to_string())
}

fn write_token(tag: &Tag, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = tag.dir().join(name);
    std::fs::write(&path, text).expect("token file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

fn refused(socket: &Path, args: &[&str]) -> String {
    match Ui::start(socket, args, None) {
        UiStart::Exited(code, stderr) => {
            assert_eq!(code, Some(1), "{stderr}");
            stderr
        }
        UiStart::Serving(ui) => panic!("zinit_ui served on {} with {args:?}", ui.url),
    }
}

#[tokio::test]
async fn tokens_origins_csrf_and_an_unreachable_socket() {
    let tag = Tag::new("uisec");
    let conf = conf(&tag, &[("idle", "", "")]);
    let server = Server::start(&tag, &conf, &[]).await;
    let idle = pid_of(&all_running(&server, 1), "idle");
    let socket = server.socket.clone();

    // Only loopback without a token; token files must be private and long.
    let err = refused(&socket, &["--listen", "0.0.0.0:0"]);
    assert!(
        err.contains("refusing to serve on 0.0.0.0:0") && err.contains("--token-file"),
        "{err}"
    );
    let open = write_token(&tag, "open.token", "0123456789abcdef0123\n", 0o644);
    let err = refused(&socket, &["--token-file", open.to_str().expect("utf-8")]);
    assert!(err.contains("may be read by group or others"), "{err}");
    let short = write_token(&tag, "short.token", "short\n", 0o600);
    let err = refused(&socket, &["--token-file", short.to_str().expect("utf-8")]);
    assert!(err.contains("too short"), "{err}");

    // Without a token: the Host must be a loopback name, every POST needs
    // this page's Origin and the CSRF token, and GETs change nothing.
    let ui = Ui::serving(&socket, &[], None);
    connected(&ui, &[]);
    let page = ui.http("GET", "/", &[], None);
    assert_eq!(page.status, 200);
    let html = page.text();
    let csrf = csrf_of(&html);
    assert_eq!(csrf.len(), 64);
    assert!(
        page.header("content-security-policy")
            .is_some_and(|p| p.contains("script-src 'self'")),
        "{:?}",
        page.headers
    );
    let rebound = ui.http("GET", "/api/stream", &[("Host", "evil.example:8090")], None);
    assert_eq!(rebound.status, 421, "{}", rebound.text());
    let origin = format!("http://{}", ui.addr);
    let stop = "/api/units/idle/stop";
    let cases: [(&[(&str, &str)], u16); 4] = [
        (&[], 403),
        (&[("Origin", origin.as_str())], 403),
        (
            &[
                ("Origin", "http://evil.example"),
                ("X-CSRF-Token", csrf.as_str()),
            ],
            403,
        ),
        (
            &[("Origin", origin.as_str()), ("X-CSRF-Token", "0000")],
            403,
        ),
    ];
    for (headers, status) in cases {
        let answer = ui.http("POST", stop, headers, None);
        assert_eq!(answer.status, status, "{headers:?}: {}", answer.text());
    }
    assert_eq!(ui.http("GET", stop, &[], None).status, 405);
    // Without a token, a local user who may not use the socket may not use
    // the page either (zinit_ui runs as root here).
    let (code, body) = get_as(65534, &ui.url, &tag);
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("lets only that user and root in without a token"),
        "{body}"
    );
    assert!(
        zinit_tests::carries_tag(idle, tag.as_str()),
        "nothing was stopped by the refused requests"
    );
    let answer = ui.http(
        "POST",
        stop,
        &[("Origin", origin.as_str()), ("X-CSRF-Token", csrf.as_str())],
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["outcome"], "graceful");
    drop(ui);

    // With a token: log in once (?token= or the form), then a session cookie.
    let token = write_token(&tag, "ui.token", "  s3cret-token-0123456789\n", 0o600);
    let ui = Ui::serving(
        &socket,
        &["--token-file", token.to_str().expect("utf-8")],
        None,
    );
    let page = ui.http("GET", "/", &[], None);
    assert!(page.text().contains("name=\"login-needed\" content=\"1\""));
    assert_eq!(ui.http("GET", "/api/stream", &[], None).status, 401);
    assert_eq!(
        ui.http("GET", "/?token=wrong-token-0123456789", &[], None)
            .status,
        401
    );
    let login = ui.http("GET", "/?token=s3cret-token-0123456789", &[], None);
    assert_eq!(login.status, 303);
    let cookie = login
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().expect("name=value").to_string();
    let stream = ui.stream_head(
        "/api/stream",
        &[("Cookie", session.as_str())],
        "\"units\"",
        Duration::from_secs(10),
    );
    assert_eq!(stream.status, 200);
    assert!(
        stream.text().contains("event: snapshot"),
        "{}",
        stream.text()
    );
    let origin = format!("http://{}", ui.addr);
    let page = ui
        .http("GET", "/", &[("Cookie", session.as_str())], None)
        .text();
    let csrf = csrf_of(&page);
    let form = ui.http(
        "POST",
        "/login",
        &[
            ("Origin", origin.as_str()),
            ("X-CSRF-Token", csrf.as_str()),
            ("Content-Type", "application/json"),
        ],
        Some("{\"token\": \"s3cret-token-0123456789\"}"),
    );
    assert_eq!(form.status, 204, "{}", form.text());
    assert!(form.header("set-cookie").is_some());
    // The same in a browser: the login form, then the page.
    let _one = BROWSER.lock().await;
    let browser = Browser::start(&tag, "login");
    browser.goto(&ui.url);
    browser.wait(
        "the login form",
        Duration::from_secs(10),
        "return !document.getElementById('login').hidden && document.getElementById('app').hidden",
    );
    browser.type_into("#login-token", "wrong-token-0123456789");
    browser.click("#login-form button[type=submit]");
    browser.wait(
        "the wrong token refused",
        Duration::from_secs(10),
        "return document.getElementById('login-error').textContent === 'wrong token'",
    );
    browser.js("document.getElementById('login-token').value = ''; return true");
    browser.type_into("#login-token", "s3cret-token-0123456789");
    browser.click("#login-form button[type=submit]");
    browser.wait(
        "the page after the login",
        Duration::from_secs(10),
        "return !document.getElementById('app').hidden && !!document.querySelector('#units tr[data-unit=\"idle\"]')",
    );
    drop(ui);

    // A user who cannot use the socket is told so, on the page and in the log.
    let nobody = Ui::serving(&socket, &[], Some(65534));
    let stream = nobody.stream_head(
        "/api/stream",
        &[],
        "permission denied",
        Duration::from_secs(10),
    );
    let expected = format!(
        "cannot reach the zinit socket {}: permission denied (run zinit_ui as a user that can use the socket)",
        socket.display()
    );
    assert!(stream.text().contains(&expected), "{}", stream.text());
    browser.goto(&nobody.url);
    let banner = browser.wait(
        "the permission banner",
        Duration::from_secs(10),
        "const b = document.getElementById('banner'); return !b.hidden && b.classList.contains('denied') && b.textContent;",
    );
    assert_eq!(banner, expected.as_str());
    browser.screenshot("permission-denied");
    let end = Instant::now() + Duration::from_secs(5);
    while !nobody
        .stderr
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&expected)
    {
        assert!(
            Instant::now() < end,
            "the log names the socket and the cause"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The anti-CSRF token a page carries (`<meta name="csrf-token">`).
fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token in the page")
        .to_string()
}

/// `name=value` of the session cookie a login answer sets.
fn session_of(login: &web::HttpResponse) -> String {
    let cookie = login.header("set-cookie").expect("a session cookie");
    cookie.split(';').next().expect("name=value").to_string()
}

/// Markup that would make elements if the page put it into HTML: every
/// element carries the class `zt-injected`, which the page never uses.
const LOG_MARKUP: &str = "<b class=\"zt-injected\">bold</b> & <img class=zt-injected src=x>";
/// A unit name with markup: an invalid file's name (no `/` in a file name).
const NAME_MARKUP: &str = "<img class=zt-injected src=x>";
/// A field value with markup, quoted back in the invalid file's error.
const VALUE_MARKUP: &str = "<b class=zt-injected>SIG</b>";

/// Text from the server reaches the page as text, never as HTML: a unit
/// name, a config error and a log line full of markup show literally in a
/// real browser, and no element of theirs exists in the DOM.
#[tokio::test]
async fn text_from_the_server_is_shown_as_text_never_as_html() {
    let _one = BROWSER.lock().await;
    let tag = Tag::new("uitext");
    let conf = tag.dir().join("conf");
    std::fs::create_dir_all(&conf).expect("conf dir");
    // A service that prints the markup once (sh's $0 carries the tag),
    // then becomes the fixture.
    let exec = format!(
        "sh -c 'printf \"%s\\n\" \"$1\"; exec \"$2\" --tag \"$0\"' {} '{LOG_MARKUP}' {FIXTURE}",
        tag.as_str()
    );
    let yaml = |value: &str| serde_json::to_string(value).expect("a YAML string");
    std::fs::write(
        conf.join("printer.yaml"),
        format!("exec: {}\n", yaml(&exec)),
    )
    .expect("service file");
    std::fs::write(
        conf.join(format!("{NAME_MARKUP}.yaml")),
        "exec: /bin/true\n",
    )
    .expect("service file");
    std::fs::write(
        conf.join("evil.yaml"),
        format!("exec: /bin/true\nstop_signal: {}\n", yaml(VALUE_MARKUP)),
    )
    .expect("service file");
    let server = Server::start(&tag, &conf, &[]).await;
    server.wait_running(&["printer"]);
    let ui = Ui::serving(&server.socket, &[], None);
    let browser = Browser::start(&tag, "text");
    browser.goto(&ui.url);
    browser.wait(
        "three units in the table",
        Duration::from_secs(15),
        "return document.querySelectorAll('#units tbody tr').length === 3",
    );
    let js = |value: &str| serde_json::to_string(value).expect("a JS string");
    let row = |name: &str| {
        format!(
            "[...document.querySelectorAll('#units tbody tr')].find(r => r.dataset.unit === {})",
            js(name)
        )
    };
    assert_eq!(
        browser.js(&format!(
            "const r = {}; return r && r.querySelector('td[data-col=\"name\"]').textContent;",
            row(NAME_MARKUP)
        )),
        NAME_MARKUP,
        "the name is shown as it is"
    );
    let reason = browser.js(&format!(
        "const r = {}; return r && r.querySelector('td[data-col=\"reason\"]').textContent;",
        row("evil")
    ));
    assert!(
        reason.as_str().is_some_and(|r| r.contains(VALUE_MARKUP)),
        "the config error quotes the value as it is: {reason}"
    );
    // The log pane (every unit's output by default), then printer's own.
    let line_shown = format!(
        "return [...document.querySelectorAll('#log .l .x')].some(x => x.textContent === {});",
        js(LOG_MARKUP)
    );
    browser.wait(
        "the markup line in the log pane",
        Duration::from_secs(10),
        &line_shown,
    );
    browser.js(&format!(
        "{}.querySelector('button[data-action=\"logs\"]').click(); return true;",
        row("printer")
    ));
    browser.wait(
        "following printer",
        Duration::from_secs(10),
        "return document.getElementById('log-status').textContent.startsWith('following printer')",
    );
    browser.wait(
        "the markup line in printer's log",
        Duration::from_secs(10),
        &line_shown,
    );
    browser.screenshot("markup-as-text");
    assert_eq!(
        browser.js("return document.querySelectorAll('.zt-injected').length"),
        0,
        "no element was made from the server's text"
    );
}

/// The Content-Security-Policy as a map: directive -> sources.
fn csp_directives(policy: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    policy
        .split(';')
        .filter_map(|d| {
            let mut words = d.split_whitespace();
            let name = words.next()?.to_ascii_lowercase();
            Some((name, words.map(str::to_string).collect()))
        })
        .collect()
}

/// Every answer — the page, its script, an API refusal, a misdirected
/// request, a missing path — carries the whole strict policy: nothing
/// from elsewhere (scripts, styles, images, connections), no inline code,
/// no `<base>`, forms only to zinit_ui, and no framing by anyone
/// (`frame-ancestors 'none'`, and `X-Frame-Options: DENY` for old
/// browsers); no MIME sniffing, no referrer, no caching.
#[test]
fn every_answer_carries_a_strict_policy_that_forbids_framing() {
    let tag = Tag::new("uicsp");
    // No server is needed: the page is served all the same.
    let ui = Ui::serving(&tag.dir().join("no-server.sock"), &[], None);
    let expected: std::collections::BTreeMap<String, Vec<String>> = [
        ("default-src", "'none'"),
        ("script-src", "'self'"),
        ("style-src", "'self'"),
        ("img-src", "'self'"),
        ("connect-src", "'self'"),
        ("base-uri", "'none'"),
        ("form-action", "'self'"),
        ("frame-ancestors", "'none'"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
    .collect();
    let answers = [
        ("GET", "/", Vec::new(), 200),
        ("GET", "/app.js", Vec::new(), 200),
        ("POST", "/api/shutdown", Vec::new(), 403),
        ("GET", "/api/stream", vec![("Host", "evil.example")], 421),
        ("GET", "/no-such-page", Vec::new(), 404),
    ];
    for (method, path, headers, status) in answers {
        let answer = ui.http(method, path, &headers, None);
        assert_eq!(answer.status, status, "{method} {path}");
        let policy = answer
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{method} {path}: no CSP: {:?}", answer.headers));
        assert_eq!(
            csp_directives(policy),
            expected,
            "{method} {path}: {policy}"
        );
        for (name, value) in [
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(answer.header(name), Some(value), "{method} {path}: {name}");
        }
    }
}

/// With a token, every action needs the session cookie, whatever else it
/// carries (the page's Origin and the CSRF token are not enough); and the
/// session is random per zinit_ui process: a restarted zinit_ui (same
/// token, same address) refuses the old cookie, issues a new one, and a
/// page that stayed open reloads into the login form.
#[tokio::test]
async fn in_token_mode_actions_need_the_session_which_dies_with_its_zinit_ui() {
    let _one = BROWSER.lock().await;
    let tag = Tag::new("uisession");
    let conf = conf(&tag, &[("idle", "", "")]);
    let server = Server::start(&tag, &conf, &[]).await;
    server.wait_running(&["idle"]);
    let token = write_token(&tag, "ui.token", "session-token-0123456789\n", 0o600);
    let listen = format!("127.0.0.1:{}", web::free_port());
    let args = [
        "--token-file",
        token.to_str().expect("utf-8"),
        "--listen",
        listen.as_str(),
    ];
    let ui = Ui::serving(&server.socket, &args, None);
    let login = ui.http("GET", "/?token=session-token-0123456789", &[], None);
    assert_eq!(login.status, 303);
    let session = session_of(&login);
    let csrf = csrf_of(&ui.http("GET", "/", &[], None).text());
    let origin = format!("http://{}", ui.addr);
    let restart = "/api/units/idle/restart";
    let idle = server.pid_of("idle");
    for cookie in [None, Some("zinit_ui_session=00000000")] {
        let mut headers = vec![("Origin", origin.as_str()), ("X-CSRF-Token", csrf.as_str())];
        headers.extend(cookie.map(|c| ("Cookie", c)));
        let answer = ui.http("POST", restart, &headers, None);
        assert_eq!(answer.status, 401, "{headers:?}: {}", answer.text());
    }
    assert_eq!(
        server.pid_of("idle"),
        idle,
        "the refused restarts did nothing"
    );
    let answer = ui.http(
        "POST",
        restart,
        &[
            ("Origin", origin.as_str()),
            ("X-CSRF-Token", csrf.as_str()),
            ("Cookie", session.as_str()),
        ],
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_ne!(server.pid_of("idle"), idle, "restarted with the session");

    // A page logged in and open while zinit_ui restarts.
    let browser = Browser::start(&tag, "session");
    browser.goto(&format!("{}?token=session-token-0123456789", ui.url));
    browser.wait(
        "the page after the login",
        Duration::from_secs(10),
        "return !document.getElementById('app').hidden && !!document.querySelector('#units tr[data-unit=\"idle\"]')",
    );
    drop(ui);
    let ui = Ui::serving(&server.socket, &args, None);
    assert_eq!(ui.addr, listen, "the same address");
    let stream = ui.stream_head(
        "/api/stream",
        &[("Cookie", session.as_str())],
        "\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(stream.status, 401, "the old session is void");
    let csrf = csrf_of(&ui.http("GET", "/", &[], None).text());
    let answer = ui.http(
        "POST",
        restart,
        &[
            ("Origin", origin.as_str()),
            ("X-CSRF-Token", csrf.as_str()),
            ("Cookie", session.as_str()),
        ],
        None,
    );
    assert_eq!(answer.status, 401, "{}", answer.text());
    let again = session_of(&ui.http("GET", "/?token=session-token-0123456789", &[], None));
    assert_ne!(again, session, "a new session for the new process");
    browser.wait(
        "the open page reloaded into the login form",
        Duration::from_secs(15),
        "return !document.getElementById('login').hidden && document.getElementById('app').hidden",
    );
}

/// A socket planted by another user (here a Python server run as
/// `nobody` in a directory it owns) gets nothing from zinit_ui, not even a
/// request: zinit_ui checks the listener's credentials first, says why on
/// the page and in its log, refuses actions with the same words, and keeps
/// checking (every attempt gets no byte).
#[tokio::test]
async fn a_socket_planted_by_another_user_gets_nothing() {
    let _one = BROWSER.lock().await;
    let tag = Tag::new("uiplanted");
    let dir = tag.dir().join("planted");
    std::fs::create_dir(&dir).expect("dir");
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::chown(&dir, Some(nobody), Some(nix::unistd::Gid::from_raw(65534))).expect("chown");
    let socket = dir.join("zinit.sock");
    let received = dir.join("received");
    // One line per connection: how many bytes it sent before closing.
    let script = "import os, socket, sys\n\
                  path, log = sys.argv[1], sys.argv[2]\n\
                  s = socket.socket(socket.AF_UNIX); s.bind(path); os.chmod(path, 0o666); s.listen(16)\n\
                  print('listening', flush=True)\n\
                  while True:\n    c, _ = s.accept(); c.settimeout(2); n = 0\n    \
                  try:\n        while True:\n            b = c.recv(65536)\n            \
                  if not b: break\n            n += len(b)\n    except OSError: pass\n    \
                  c.close()\n    with open(log, 'a') as f: f.write(f'{n}\\n')\n";
    let mut planted = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&socket)
            .arg(&received)
            .uid(65534)
            .gid(65534)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3")
    };
    let stdout = planted.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let listening = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    let checks = || {
        assert_eq!(listening.trim(), "listening", "the planted server runs");
        let ui = Ui::serving(&socket, &[], None);
        let expected = format!(
            "refusing to talk to the server on {}: it runs as uid 65534, neither root nor you (uid 0)",
            socket.display()
        );
        let stream = ui.stream_head(
            "/api/stream",
            &[],
            "refusing to talk",
            Duration::from_secs(10),
        );
        assert!(stream.text().contains(&expected), "{}", stream.text());
        let csrf = csrf_of(&ui.http("GET", "/", &[], None).text());
        let origin = format!("http://{}", ui.addr);
        let answer = ui.http(
            "POST",
            "/api/units/x/stop",
            &[("Origin", origin.as_str()), ("X-CSRF-Token", csrf.as_str())],
            None,
        );
        assert_eq!(answer.status, 503, "{}", answer.text());
        assert_eq!(answer.json()["error"], expected.as_str());
        let browser = Browser::start(&tag, "planted");
        browser.goto(&ui.url);
        let banner = browser.wait(
            "the banner naming the planted socket",
            Duration::from_secs(10),
            "const b = document.getElementById('banner'); return !b.hidden && b.textContent;",
        );
        assert!(
            banner.as_str().is_some_and(|b| b.contains(&expected)),
            "{banner}"
        );
        browser.screenshot("planted-socket");
        assert!(
            ui.stderr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&expected),
            "the log says why"
        );
        // It keeps checking, and no attempt sends a byte.
        let end = Instant::now() + Duration::from_secs(10);
        let sent: Vec<usize> = loop {
            let sent: Vec<usize> = std::fs::read_to_string(&received)
                .unwrap_or_default()
                .lines()
                .map(|l| l.parse().expect("a count"))
                .collect();
            if sent.len() >= 3 || Instant::now() > end {
                break sent;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(sent.len() >= 3, "zinit_ui kept trying: {sent:?}");
        assert!(
            sent.iter().all(|&n| n == 0),
            "bytes sent to the planted socket: {sent:?}"
        );
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(checks));
    let _ = planted.kill();
    let _ = planted.wait();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The number of open event streams is bounded (log streams, which each
/// hold a gRPC stream, and page streams): one more is refused with 503 and
/// says why, while the open ones keep flowing, the page and its actions
/// still work, the server answers, and a closed stream frees its place.
#[tokio::test]
async fn open_streams_are_bounded_and_the_rest_keeps_working() {
    let tag = Tag::new("uistreams");
    let conf = conf(&tag, &[("chatty", "--chatty-ms 100", "")]);
    let server = Server::start(&tag, &conf, &[]).await;
    server.wait_running(&["chatty"]);
    let ui = Ui::serving(&server.socket, &[], None);
    connected(&ui, &[]);
    for (path, what, first) in [
        ("/api/logs?unit=chatty", "log", "event: line"),
        ("/api/stream", "page", "event: snapshot"),
    ] {
        let mut held = Vec::new();
        let refused = loop {
            let stream = ui.hold(path, &[]);
            if stream.response.status != 200 {
                break stream;
            }
            held.push(stream);
            assert!(
                held.len() < 200,
                "{} {what} streams open and no bound",
                held.len()
            );
        };
        let open = held.len();
        assert_eq!(refused.response.status, 503, "{what} stream {}", open + 1);
        let mut refused = refused;
        assert!(
            refused.read_until(
                &format!("too many open {what} streams"),
                Duration::from_secs(5)
            ),
            "{}",
            refused.response.text()
        );
        assert!(
            open >= 4,
            "at least a few {what} streams may be open: {open}"
        );
        // The open ones flow, and everything else works.
        for stream in [0, open - 1] {
            assert!(
                held[stream].read_until(first, Duration::from_secs(10)),
                "{what} stream {stream} flows: {}",
                held[stream].response.text()
            );
        }
        assert_eq!(ui.http("GET", "/", &[], None).status, 200);
        assert_eq!(server.zinit(&["info"]).code, 0, "the server answers");
        let csrf = csrf_of(&ui.http("GET", "/", &[], None).text());
        let origin = format!("http://{}", ui.addr);
        let answer = ui.http(
            "POST",
            "/api/units/chatty/restart",
            &[("Origin", origin.as_str()), ("X-CSRF-Token", csrf.as_str())],
            None,
        );
        assert_eq!(answer.status, 200, "{}", answer.text());
        // A closed stream frees its place.
        held.truncate(open - 1);
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let stream = ui.hold(path, &[]);
            if stream.response.status == 200 {
                held.push(stream);
                break;
            }
            assert!(
                Instant::now() < end,
                "a closed {what} stream did not free its place"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("{open} {what} streams open at once; one more was refused");
    }
}

/// Runs `zinit_server` as `uid` on `socket` (its argv carries the tag
/// through its paths).
fn server_as(uid: u32, conf: &Path, socket: &Path) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(zinit_tests::workspace_bin("zinit_server"));
    command
        .arg("--config")
        .arg(conf)
        .arg("--socket")
        .arg(socket)
        .args(["--log-level", "warn"])
        .stdin(std::process::Stdio::null());
    if uid != 0 {
        command.uid(uid).gid(uid);
    }
    let mut child = command.spawn().expect("zinit_server");
    let end = Instant::now() + Duration::from_secs(10);
    while !(socket.exists() && std::os::unix::net::UnixStream::connect(socket).is_ok()) {
        assert!(
            child.try_wait().expect("poll").is_none(),
            "zinit_server exited at start-up"
        );
        assert!(Instant::now() < end, "zinit_server did not answer in 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// SIGTERM to a server started by [`server_as`], and its end (bounded).
fn stop_server(child: &mut std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let end = Instant::now() + Duration::from_secs(35);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("zinit_server did not end within 35 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// zinit_ui run by a user other than root (`nobody`): without a token it
/// lets in root and that user, nobody else; it cannot use root's server's
/// socket and says so, keeps retrying, and follows by itself the server it
/// may use once one serves on that socket.
#[tokio::test]
async fn as_another_user_it_lets_that_user_in_and_retries_until_it_may_use_the_socket() {
    let tag = Tag::new("uinobody");
    let conf = conf(&tag, &[]);
    // A socket directory both may use, as /tmp is: root's, sticky.
    let run = tag.dir().join("run");
    std::fs::create_dir(&run).expect("dir");
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
        .expect("chmod");
    let socket = run.join("s.sock");
    let mut root_server = server_as(0, &conf, &socket);
    let ui = Ui::serving(&socket, &[], Some(65534));
    // Root and nobody get in; another user does not.
    assert_eq!(ui.http("GET", "/", &[], None).status, 200, "root");
    let (code, body) = get_as(65534, &ui.url, &tag);
    assert_eq!(code, 200, "zinit_ui's own user: {body}");
    let (code, body) = get_as(65533, &ui.url, &tag);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("zinit_ui runs as uid 65534"), "{body}");
    // Root's server: permission denied, said on the page.
    let denied = ui.stream_head(
        "/api/stream",
        &[],
        "permission denied",
        Duration::from_secs(10),
    );
    assert!(
        denied.text().contains(&format!(
            "cannot reach the zinit socket {}: permission denied",
            socket.display()
        )),
        "{}",
        denied.text()
    );
    stop_server(&mut root_server);
    // A server nobody may use, on the same socket: zinit_ui comes back by itself.
    let mut own_server = server_as(65534, &conf, &socket);
    let pid = own_server.id();
    let checks = std::panic::catch_unwind(|| {
        connected(&ui, &[]);
        let stream = ui.stream_head("/api/stream", &[], "\"up\":true", Duration::from_secs(5));
        assert!(
            stream.text().contains(&format!("\"pid\":{pid}")),
            "connected to the new server (pid {pid}): {}",
            stream.text()
        );
    });
    stop_server(&mut own_server);
    if let Err(panic) = checks {
        std::panic::resume_unwind(panic);
    }
}
