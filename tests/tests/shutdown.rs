//! The shutdown scenario suite: real `zinit_server` and `zinit` binaries,
//! real process trees, each scenario in private PID and network namespaces
//! (`unshare --pid --net --mount-proc`) whose init is the probe, not the
//! server, so that a survivor cannot hide in the kernel's teardown.
//!
//! Each scenario asserts that nothing is left in its namespace after the
//! server exits, the timing, the order, that the events match what the
//! fixtures logged, and the exit codes. Scenarios run one at a time (timing
//! matters on a 2-core machine). The suite prints a table and ends with
//! `N passed, N failed, N skipped`.
//!
//! `ZINIT_BIN_DIR` points it at other binaries (for example an installed
//! release); by default it uses the workspace's debug build.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zinit_tests::{CliOutput, LogLine, Tag, read_log};

const FIXTURE: &str = env!("CARGO_BIN_EXE_zinit-fixture");
const PROBE: &str = env!("CARGO_BIN_EXE_zinit-probe");

type Outcome = Result<String, String>;
/// How a scenario that cannot check its property here starts its detail
/// (counted as skipped, never as passed).
const SKIPPED: &str = "skipped: ";
/// A scenario: its name in the table, and its body.
type Scenario = (&'static str, fn() -> Outcome);

fn bin(name: &str) -> PathBuf {
    zinit_tests::workspace_bin(name)
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        let holds: bool = $cond;
        if !holds {
            return Err(format!($($fmt)+));
        }
    };
}

/// The debug server, which has the test-only fault hook (for the watchdog).
fn hooked_server() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--workspace", "--bin", "zinit_server"])
        .status()
        .map_err(|e| e.to_string())?;
    ensure!(status.success(), "building the debug zinit_server failed");
    Ok(zinit_tests::bin_dir().join("zinit_server"))
}

/// What the namespace's init reported after the server exited.
#[derive(Debug, Default)]
struct NsReport {
    server_exit: Option<i32>,
    server_exit_t: u64,
    survivors: Vec<String>,
    /// Impostors (processes given a recorded pid) still alive at the end.
    impostors_alive: Vec<i32>,
}

/// One scenario's world: a config directory, a server in its own namespaces.
struct Lab {
    tag: Tag,
    conf: PathBuf,
    socket: PathBuf,
    report: PathBuf,
    init: Option<std::process::Child>,
    /// Set for crash scenarios: the namespace's init starts the server again
    /// each time it died and this file appears.
    restart: Option<PathBuf>,
}

impl Lab {
    fn new(name: &str) -> Self {
        let tag = Tag::new(name);
        // Short paths: unix sockets allow 108 bytes.
        let conf = tag.dir().join("conf");
        std::fs::create_dir_all(&conf).expect("conf");
        let socket = tag.dir().join("s.sock");
        let report = tag.dir().join("report");
        Self {
            tag,
            conf,
            socket,
            report,
            init: None,
            restart: None,
        }
    }

    fn log_path(&self, service: &str) -> PathBuf {
        self.tag.dir().join(format!("{service}.log"))
    }

    /// A fixture service named `name` with fixture `args` and extra YAML.
    fn service(&self, name: &str, args: &str, yaml: &str) {
        let text = format!(
            "exec: {FIXTURE} --tag {} --log {} {args}\n{yaml}",
            self.tag.as_str(),
            self.log_path(name).display()
        );
        std::fs::write(self.conf.join(format!("{name}.yaml")), text).expect("write service");
    }

    fn fixture_cmd(&self, args: &str) -> String {
        format!("{FIXTURE} --tag {} {args}", self.tag.as_str())
    }

    /// Starts the namespace init (which starts `extras`, then the server).
    fn start(&mut self, extras: &[String], env: &[(&str, &str)]) -> Outcome {
        self.start_with(&bin("zinit_server"), extras, env)
    }

    fn start_with(&mut self, server: &Path, extras: &[String], env: &[(&str, &str)]) -> Outcome {
        let mut command = Command::new("unshare");
        command
            .args(["--pid", "--net", "--fork", "--mount-proc"])
            .arg(PROBE)
            .arg("ns-init");
        command
            .args(["--tag", self.tag.as_str(), "--report"])
            .arg(&self.report);
        for extra in extras {
            command.arg("--spawn").arg(extra);
        }
        if let Some(file) = &self.restart {
            command.arg("--restart-when").arg(file);
            command
                .arg("--impostor")
                .arg(format!("{} 1000", self.tag.program("sleep").display()));
        }
        command
            .arg("--")
            .arg(server)
            .arg("--config")
            .arg(&self.conf)
            .arg("--socket")
            .arg(&self.socket)
            .args(["--log-level", "warn"]);
        for (k, v) in env {
            command.env(k, v);
        }
        let log = std::fs::File::create(self.tag.dir().join("server.log")).expect("server log");
        command.stdout(Stdio::null()).stderr(log);
        self.init = Some(command.spawn().map_err(|e| format!("unshare: {e}"))?);
        let end = Instant::now() + Duration::from_secs(15);
        while !(self.socket.exists()
            && std::os::unix::net::UnixStream::connect(&self.socket).is_ok())
        {
            ensure!(
                Instant::now() < end,
                "the server did not answer within 15 s: {}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok("started".into())
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.tag.dir().join("server.log")).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> CliOutput {
        zinit_tests::run_cli(&self.socket, args)
    }

    /// Waits until every service is running (or exited, for oneshots).
    fn wait_running(&self, names: &[&str]) -> Outcome {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let out = self.cli(&["--json", "list"]);
            if out.code == 0 {
                let list = out.json();
                let ready = names.iter().all(|name| {
                    list["units"].as_array().into_iter().flatten().any(|u| {
                        u["name"] == *name && (u["state"] == "running" || u["state"] == "exited")
                    })
                });
                if ready {
                    return Ok("running".into());
                }
            }
            ensure!(
                Instant::now() < end,
                "services not running in time: {}",
                out.stdout
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Waits until the fixture log of `service` shows `count` started processes.
    fn wait_started(&self, service: &str, count: usize) -> Outcome {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let started = read_log(&self.log_path(service))
                .iter()
                .filter(|l| l.kind == "start")
                .count();
            if started >= count {
                return Ok(String::new());
            }
            ensure!(
                Instant::now() < end,
                "{service} started {started} of {count}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `zinit --json shutdown ARGS`: exit code and every event.
    fn shutdown(&self, args: &[&str]) -> (i32, Vec<Value>) {
        let mut all = vec!["--json", "shutdown"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        let events = out
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (out.code, events)
    }

    /// Waits for the namespace init to finish and reads its report.
    fn finish(&mut self) -> Result<NsReport, String> {
        let Some(mut init) = self.init.take() else {
            return Err("not started".into());
        };
        let end = Instant::now() + Duration::from_secs(60);
        while init.try_wait().map_err(|e| e.to_string())?.is_none() {
            if Instant::now() > end {
                let _ = init.kill();
                let _ = init.wait();
                return Err("the namespace did not end within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = std::fs::read_to_string(&self.report)
            .map_err(|e| format!("no report: {e}; {}", self.server_log()))?;
        let mut report = NsReport::default();
        for line in text.lines() {
            let f = zinit_tests::fields(line);
            if line.starts_with("server_exit") {
                report.server_exit = f.get("code").and_then(|c| c.parse().ok());
                report.server_exit_t = f.get("t").and_then(|t| t.parse().ok()).unwrap_or(0);
            } else if line.starts_with("survivor") {
                report.survivors.push(line.to_string());
            } else if line.starts_with("impostor_alive") {
                report
                    .impostors_alive
                    .extend(f.get("pid").and_then(|p| p.parse::<i32>().ok()));
            }
        }
        Ok(report)
    }

    /// Waits until the report file exists (the server has exited).
    fn wait_report(&self) -> Outcome {
        let end = Instant::now() + Duration::from_secs(60);
        while !self.report.exists() {
            ensure!(Instant::now() < end, "no report within 60 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(String::new())
    }

    fn log(&self, service: &str) -> Vec<LogLine> {
        read_log(&self.log_path(service))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut init) = self.init.take() {
            let _ = init.kill();
            let _ = init.wait();
        }
    }
}

impl Lab {
    /// A lab whose server may be killed: the namespace's init starts it
    /// again when asked (`restart`).
    fn restartable(name: &str) -> Self {
        let mut lab = Self::new(name);
        lab.restart = Some(lab.tag.dir().join("restart"));
        lab
    }

    /// SIGKILLs the server and waits (bounded) until it is gone.
    fn kill_server(&self) -> Result<i32, String> {
        let pid = server_host_pid(self)?;
        if let Some(id) = zinit_process::ProcessId::of(pid)
            && let Ok(handle) = zinit_process::ProcessHandle::open(id)
        {
            handle
                .signal(zinit_process::Signal::SIGKILL)
                .map_err(|e| e.to_string())?;
        }
        let end = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.contains("zinit_server") && !s.contains(") Z "))
        {
            ensure!(Instant::now() < end, "the server survived SIGKILL");
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(pid)
    }

    /// Asks the init to start the server again (giving `impostor_pid`, if
    /// any, to a tagged `sleep` first) and waits until a new server answers.
    fn restart_server(&self, old: i32, impostor_pid: Option<i32>) -> Outcome {
        let file = self.restart.as_ref().ok_or("not a restartable lab")?;
        let text = impostor_pid.map(|p| p.to_string()).unwrap_or_default();
        std::fs::write(file, text).map_err(|e| e.to_string())?;
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(pid) = find_server_pid(self)
                && pid != old
                && self.cli(&["info"]).code == 0
            {
                return Ok(String::new());
            }
            ensure!(
                Instant::now() < end,
                "no new server answered within 15 s: {}; the namespace says: {}",
                self.server_log(),
                std::fs::read_to_string(&self.report).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `zinit --json status NAME`.
    fn status(&self, name: &str) -> Value {
        let out = self.cli(&["--json", "status", name]);
        serde_json::from_str(&out.stdout).unwrap_or(Value::Null)
    }

    /// The takeover report of `zinit --json info`.
    fn takeover(&self) -> Value {
        let out = self.cli(&["--json", "info"]);
        serde_json::from_str::<Value>(&out.stdout).unwrap_or(Value::Null)["takeover"].clone()
    }
}

// ----- event helpers -----------------------------------------------------

fn kind<'a>(events: &'a [Value], kind: &str) -> impl Iterator<Item = &'a Value> {
    let kind = kind.to_string();
    events.iter().filter(move |e| e["kind"] == kind.as_str())
}

fn summary(events: &[Value]) -> Result<&Value, String> {
    kind(events, "summary")
        .last()
        .ok_or_else(|| "no summary event".to_string())
}

fn at_of(events: &[Value], k: &str, unit: &str) -> Result<f64, String> {
    kind(events, k)
        .find(|e| e["unit"] == unit)
        .and_then(|e| e["at"].as_f64())
        .ok_or_else(|| format!("no {k} event for {unit}"))
}

fn stopped_duration(events: &[Value], unit: &str) -> Result<f64, String> {
    kind(events, "unit_stopped")
        .find(|e| e["unit"] == unit)
        .and_then(|e| e["duration"].as_f64())
        .ok_or_else(|| format!("no unit_stopped for {unit}"))
}

/// The common end of a scenario: the CLI said clean, the server exited with
/// `code`, and nothing is left in the namespace.
fn expect_clean_end(
    lab: &mut Lab,
    cli_code: i32,
    events: &[Value],
    code: i32,
) -> Result<NsReport, String> {
    let summary = summary(events)?;
    ensure!(summary["clean"] == true, "summary not clean: {summary}");
    ensure!(cli_code == 0, "zinit shutdown exited {cli_code}");
    let report = lab.finish()?;
    ensure!(
        report.server_exit == Some(code),
        "server exit {:?}, expected {code}; {}",
        report.server_exit,
        lab.server_log()
    );
    ensure!(
        report.survivors.is_empty(),
        "survivors: {:?}",
        report.survivors
    );
    ensure!(!lab.socket.exists(), "the socket was not removed");
    Ok(report)
}

/// Every SIGTERM the server reports sending was received (per the fixture logs).
fn signals_match_logs(events: &[Value], logs: &[LogLine]) -> Result<usize, String> {
    let mut checked = 0;
    for e in kind(events, "signal_sent").filter(|e| e["signal"] == "SIGTERM" && e["unit"] != "") {
        let pid = e["pid"].as_i64().unwrap_or(0) as i32;
        ensure!(
            logs.iter()
                .any(|l| l.kind == "signal" && l.pid == pid && l.sig.as_deref() == Some("SIGTERM")),
            "SIGTERM to pid {pid} was reported but not received"
        );
        checked += 1;
    }
    Ok(checked)
}

// ----- scenarios -----------------------------------------------------------

/// Counts the `start` lines of a fixture log: how many processes it started.
fn starts(lab: &Lab, service: &str) -> usize {
    lab.log(service)
        .iter()
        .filter(|l| l.kind == "start")
        .count()
}

/// A server SIGKILLed with services up (process trees, a port holder, a
/// plain sleep, a job) and started again: nothing runs twice, every unit is
/// adopted with the same main process, and the next shutdown stops the
/// adopted units gracefully with nothing left. Without cgroups, one
/// recorded pid is given to another process meanwhile, which must never be
/// signalled (and its service is started again).
fn a_killed_server_is_taken_over(cgroups: bool) -> Outcome {
    let mut lab = Lab::restartable(if cgroups { "sd-crash" } else { "sd-crash-pg" });
    let port = if cgroups { 18091 } else { 18092 };
    lab.service("tree", "--width 2 --depth 2", "");
    lab.service(
        "holder",
        &format!("--tcp {port}"),
        &format!("ports: [{port}]\n"),
    );
    let sleep = lab.tag.program("sleep").display().to_string();
    std::fs::write(lab.conf.join("plain.yaml"), format!("exec: {sleep} 1000\n"))
        .map_err(|e| e.to_string())?;
    std::fs::write(
        lab.conf.join("victim.yaml"),
        format!("exec: {sleep} 1001\n"),
    )
    .map_err(|e| e.to_string())?;
    let env: &[(&str, &str)] = if cgroups {
        &[]
    } else {
        &[("ZINIT_CGROUP", "off")]
    };
    lab.start(&[], env)?;
    let info = lab.cli(&["--json", "info"]).json();
    ensure!(
        info["cgroups"] == cgroups,
        "cgroup mode {cgroups} expected: {info}"
    );
    lab.wait_running(&["tree", "holder", "plain", "victim"])?;
    lab.wait_started("tree", 5)?;
    lab.wait_started("holder", 1)?;
    let job_log = lab.log_path("job");
    let out = lab.cli(&[
        "job",
        "run",
        "--no-wait",
        "--",
        FIXTURE,
        "--tag",
        lab.tag.as_str(),
        "--log",
        &job_log.display().to_string(),
        "--width",
        "1",
    ]);
    ensure!(out.code == 0, "job run: {}{}", out.stdout, out.stderr);
    let job = out.stdout.trim().to_string();
    lab.wait_started("job", 2)?;
    let names = ["tree", "holder", "plain", job.as_str()];
    let before: Vec<Value> = names.iter().map(|n| lab.status(n)["pid"].clone()).collect();
    let victim = lab.status("victim")["pid"].as_i64().ok_or("victim pid")? as i32;

    let old = lab.kill_server()?;
    let impostor = if cgroups {
        None
    } else {
        // The victim dies while no server runs, and its pid goes to another
        // process (the namespace's init gives it to a tagged sleep).
        let host = zinit_tests::tagged_pids(lab.tag.as_str())
            .into_iter()
            .find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.contains("1001"))
            })
            .ok_or("the victim's process")?;
        zinit_tests::reap_pid(host);
        Some(victim)
    };
    lab.restart_server(old, impostor)?;

    let takeover = lab.takeover();
    for name in names {
        ensure!(
            takeover["adopted"]
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n == name)),
            "{name} was not adopted: {takeover}"
        );
    }
    for (name, pid) in names.iter().zip(&before) {
        let now = lab.status(name);
        ensure!(
            now["pid"] == *pid && now["adopted"] == true,
            "{name} is not the same process: before {pid}, now {now}"
        );
    }
    ensure!(starts(&lab, "tree") == 5, "tree started again");
    ensure!(starts(&lab, "holder") == 1, "holder started again");
    ensure!(starts(&lab, "job") == 2, "the job started again");
    if let Some(impostor) = impostor {
        ensure!(
            !takeover["adopted"]
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n == "victim")),
            "a service whose recorded pid was reused was adopted: {takeover}"
        );
        lab.wait_running(&["victim"])?;
        let now = lab.status("victim")["pid"].as_i64().unwrap_or(0) as i32;
        ensure!(
            now != impostor,
            "the victim's recorded pid (now another process) was taken as its own"
        );
    }
    let (code, events) = lab.shutdown(&[]);
    for name in names {
        let stopped = kind(&events, "unit_stopped")
            .find(|e| e["unit"] == name)
            .ok_or_else(|| format!("{name} was not stopped by the shutdown"))?;
        ensure!(
            stopped["outcome"] == "graceful",
            "{name} was not stopped gracefully: {stopped}"
        );
    }
    let report = expect_clean_end(&mut lab, code, &events, 0)?;
    if let Some(impostor) = impostor {
        ensure!(
            report.impostors_alive.contains(&impostor),
            "the process that took the recorded pid {impostor} was signalled"
        );
    }
    Ok(format!(
        "{} units adopted with their pids, none started twice{}",
        names.len(),
        if impostor.is_some() {
            "; a reused pid was left alone"
        } else {
            ""
        }
    ))
}

/// A supervisor task that dies (a test hook makes it panic) ends the server
/// at once with code 5, its units still running; the next server adopts
/// them.
fn a_dead_supervisor_ends_the_server_and_the_next_takes_over() -> Outcome {
    let mut lab = Lab::restartable("sd-headless");
    lab.service("keep", "--width 2", "");
    lab.service("boom", "", "");
    lab.start_with(
        &hooked_server()?,
        &[],
        &[("ZINIT_TEST_PANIC_ON_START", "boom")],
    )?;
    lab.wait_running(&["keep"])?;
    lab.wait_started("keep", 3)?;
    let before = lab.status("keep")["pid"].clone();
    let old = server_host_pid(&lab)?;
    let answer = lab.cli(&["start", "boom"]);
    ensure!(
        answer.code != 0,
        "start answered although the supervisor died"
    );
    let end = Instant::now() + Duration::from_secs(10);
    while find_server_pid(&lab) == Some(old) {
        ensure!(
            Instant::now() < end,
            "the server went on without its supervisor"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    ensure!(
        zinit_tests::tagged_pids(lab.tag.as_str()).len() >= 3,
        "the units did not keep running"
    );
    lab.restart_server(old, None)?;
    let now = lab.status("keep");
    ensure!(
        now["pid"] == before && now["adopted"] == true,
        "keep was not adopted: {now}"
    );
    ensure!(starts(&lab, "keep") == 3, "keep was started again");
    let (code, events) = lab.shutdown(&[]);
    expect_clean_end(&mut lab, code, &events, 0)?;
    let report = std::fs::read_to_string(&lab.report).unwrap_or_default();
    ensure!(
        report.contains("server_exit code=5"),
        "the first server did not exit with 5: {report}"
    );
    Ok("exit 5 with the units running; the next server adopted them".into())
}

/// The cgroup path of a process, under the v2 mount.
fn cgroup_dir_of(pid: i32) -> Result<PathBuf, String> {
    let rel = zinit_process::Cgroup::of_process(pid).ok_or("no cgroup")?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let mount = mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .ok_or("no cgroup2 mount")?;
    Ok(mount.join(rel.trim_start_matches('/')))
}

/// A server SIGKILLed between freezing a unit and killing it (a test hook
/// holds the escalation there): the next server thaws the cgroup, adopts
/// the unit, and the shutdown kills it at its timeout.
fn a_server_killed_mid_escalation_leaves_nothing_frozen() -> Outcome {
    let mut lab = Lab::restartable("sd-frozen");
    lab.service(
        "stubborn",
        "--width 2 --ignore-term all",
        "stop_timeout_ms: 300\n",
    );
    let wedge = lab.tag.dir().join("wedge");
    std::fs::write(&wedge, "").map_err(|e| e.to_string())?;
    let wedge_text = wedge.display().to_string();
    lab.start_with(
        &hooked_server()?,
        &[],
        &[
            ("ZINIT_TEST_WEDGE", "after-freeze"),
            ("ZINIT_TEST_WEDGE_WHILE", &wedge_text),
        ],
    )?;
    ensure!(
        lab.cli(&["--json", "info"]).json()["cgroups"] == true,
        "the freezer needs cgroup mode"
    );
    lab.wait_running(&["stubborn"])?;
    lab.wait_started("stubborn", 3)?;
    let host = zinit_tests::tagged_pids(lab.tag.as_str())
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains("ignore-term"))
        })
        .ok_or("a stubborn process")?;
    let cgroup = cgroup_dir_of(host)?;
    let mut stop = Command::new(bin("zinit"))
        .arg("--socket")
        .arg(&lab.socket)
        .args(["stop", "stubborn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let frozen = |c: &Path| {
        std::fs::read_to_string(c.join("cgroup.events")).is_ok_and(|e| e.contains("frozen 1"))
    };
    let end = Instant::now() + Duration::from_secs(10);
    while !frozen(&cgroup) {
        ensure!(Instant::now() < end, "the unit was never frozen");
        std::thread::sleep(Duration::from_millis(10));
    }
    let old = lab.kill_server()?;
    let _ = stop.kill();
    let _ = stop.wait();
    std::fs::remove_file(&wedge).map_err(|e| e.to_string())?;
    ensure!(frozen(&cgroup), "frozen when the server died");
    lab.restart_server(old, None)?;
    ensure!(
        !frozen(&cgroup),
        "the cgroup is still frozen after the takeover"
    );
    let takeover = lab.takeover();
    ensure!(
        takeover["thawed"].as_u64().unwrap_or(0) >= 1,
        "the takeover does not say it thawed: {takeover}"
    );
    let (code, events) = lab.shutdown(&[]);
    expect_clean_end(&mut lab, code, &events, 0)?;
    Ok("frozen by a server killed mid-escalation; thawed and stopped by the next".into())
}

/// A server SIGKILLed 0.3 s into a shutdown of stubborn trees: the next
/// server finishes the shutdown (no client needed) within the old deadline,
/// nothing is left, and it exits as the old one would have.
fn a_server_killed_mid_shutdown_is_finished_by_the_next() -> Outcome {
    let mut lab = Lab::restartable("sd-midway");
    for name in ["a", "b"] {
        lab.service(
            name,
            "--width 2 --depth 2 --ignore-term all",
            "shutdown_timeout: 3\n",
        );
    }
    lab.start(&[], &[])?;
    lab.wait_running(&["a", "b"])?;
    lab.wait_started("a", 5)?;
    lab.wait_started("b", 5)?;
    let requested = Instant::now();
    let client = Command::new(bin("zinit"))
        .arg("--socket")
        .arg(&lab.socket)
        .args(["--json", "shutdown"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(300));
    let old = lab.kill_server()?;
    let out = client.wait_with_output().map_err(|e| e.to_string())?;
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    ensure!(
        kind(&events, "unit_stopping").count() == 2 && summary(&events).is_err(),
        "the crash was not in the middle of the shutdown: {events:?}"
    );
    ensure!(
        out.status.code() == Some(7),
        "the client did not say the stream was cut: {:?}",
        out.status
    );
    lab.restart_server(old, None)?;
    ensure!(
        lab.takeover()["finishing_shutdown"] == true,
        "the new server does not say it finishes the shutdown"
    );
    let report = lab.finish()?;
    let total = requested.elapsed();
    ensure!(
        report.server_exit == Some(0),
        "the new server exited {:?}; {}",
        report.server_exit,
        lab.server_log()
    );
    ensure!(
        report.survivors.is_empty(),
        "survivors: {:?}",
        report.survivors
    );
    ensure!(
        total < Duration::from_secs(32),
        "done {:.1}s after the request",
        total.as_secs_f64()
    );
    ensure!(
        !lab.socket.with_extension("sock.state").exists(),
        "the record outlived the shutdown"
    );
    Ok(format!(
        "killed 0.3 s in; the next server finished, done {:.1}s after the request",
        total.as_secs_f64()
    ))
}

/// A service whose file changed while no server ran: the next server stops
/// the old processes and starts the new command.
fn a_changed_service_is_replaced_after_a_crash() -> Outcome {
    let mut lab = Lab::restartable("sd-changed");
    lab.service("web", "--width 1 -- version-one", "");
    lab.start(&[], &[])?;
    lab.wait_running(&["web"])?;
    lab.wait_started("web", 2)?;
    let before = lab.status("web")["pid"].clone();
    let old = lab.kill_server()?;
    lab.service("web", "--width 1 -- version-two", "");
    lab.restart_server(old, None)?;
    let takeover = lab.takeover();
    ensure!(
        takeover["stopped"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n == "web")),
        "the changed unit was not stopped: {takeover}"
    );
    lab.wait_running(&["web"])?;
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let now = lab.status("web");
        let replaced = now["pid"] != before
            && now["command"]
                .as_array()
                .is_some_and(|c| c.iter().any(|a| a == "version-two"));
        if replaced {
            break;
        }
        ensure!(Instant::now() < end, "web was not replaced: {now}");
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure!(
        lab.log("web")
            .iter()
            .any(|l| l.kind == "signal" && l.sig.as_deref() == Some("SIGTERM")),
        "the old web was not stopped with its signal"
    );
    let (code, events) = lab.shutdown(&[]);
    expect_clean_end(&mut lab, code, &events, 0)?;
    Ok("the old instance stopped with SIGTERM, the new one started".into())
}

/// Programs we did not write, with dependencies: nginx in front of python,
/// both and a shell worker on redis, a sleep and a shell without a trap on
/// their own. Every unit must stop gracefully (no SIGKILL), dependents
/// before their dependencies, with nothing left.
fn real_programs() -> Outcome {
    let mut lab = Lab::new("sd-real");
    let after = |name: &str| match name {
        "nginx" => "after: [python]\n",
        "python" | "sh-trap" => "after: [redis]\n",
        _ => "",
    };
    let programs = zinit_tests::foreign::programs(&lab.tag);
    for (name, exec) in &programs {
        let text = format!(
            "exec: \"{}\"\nshutdown_timeout: 10\n{}",
            exec.replace('"', "\\\""),
            after(name)
        );
        std::fs::write(lab.conf.join(format!("{name}.yaml")), text).map_err(|e| e.to_string())?;
    }
    let names: Vec<&str> = programs.iter().map(|(n, _)| *n).collect();
    lab.start(&[], &[])?;
    lab.wait_running(&names)?;
    let (code, events) = lab.shutdown(&[]);
    expect_clean_end(&mut lab, code, &events, 0)?;
    for name in &names {
        let stopped = kind(&events, "unit_stopped")
            .find(|e| e["unit"] == *name)
            .ok_or_else(|| format!("no unit_stopped for {name}"))?;
        ensure!(
            stopped["outcome"] == "graceful" && stopped["processes_killed"] == 0,
            "{name} was not stopped gracefully: {stopped}"
        );
        ensure!(
            stopped["duration"].as_f64().unwrap_or(99.0) < 5.0,
            "{name} took too long: {stopped}"
        );
    }
    ensure!(
        !kind(&events, "signal_sent").any(|e| e["signal"] == "SIGKILL"),
        "a SIGKILL was sent"
    );
    for (dependent, dependency) in [
        ("nginx", "python"),
        ("python", "redis"),
        ("sh-trap", "redis"),
    ] {
        let done = kind(&events, "unit_stopped")
            .find(|e| e["unit"] == dependent)
            .and_then(|e| e["at"].as_f64())
            .ok_or("stopped")?;
        let begins = at_of(&events, "unit_stopping", dependency)?;
        ensure!(
            done <= begins,
            "{dependency} began stopping at {begins:.3}s, before {dependent} was stopped ({done:.3}s)"
        );
    }
    let s = summary(&events)?;
    Ok(format!(
        "sleep, sh, python, nginx, redis: all graceful in {:.2}s",
        s["duration"].as_f64().unwrap_or(0.0)
    ))
}

fn polite_trees() -> Outcome {
    let mut lab = Lab::new("sd-polite");
    lab.service("deep", "--width 1 --depth 50", "");
    lab.service("wide", "--width 150 --depth 2", "");
    lab.start(&[], &[])?;
    lab.wait_running(&["deep", "wide"])?;
    lab.wait_started("deep", 51)?;
    lab.wait_started("wide", 301)?;
    let (code, events) = lab.shutdown(&[]);
    expect_clean_end(&mut lab, code, &events, 0)?;
    let mut logs = lab.log("deep");
    logs.extend(lab.log("wide"));
    for line in logs.iter().filter(|l| l.kind == "signal") {
        ensure!(
            line.live_children == Some(0),
            "pid {} (depth {}) was signalled while its children lived",
            line.pid,
            line.depth
        );
    }
    let matched = signals_match_logs(&events, &logs)?;
    ensure!(matched == 352, "{matched} SIGTERMs reported");
    let s = summary(&events)?;
    ensure!(s["processes_killed"] == 0, "nothing killed: {s}");
    Ok(format!(
        "352 processes, deepest first, {:.2}s",
        s["duration"].as_f64().unwrap_or(0.0)
    ))
}

fn kill_lands_at_the_timeout() -> Outcome {
    let mut lab = Lab::new("sd-kill");
    lab.service(
        "stubborn",
        "--width 2 --depth 2 --ignore-term all",
        "stop_timeout_ms: 1000\n",
    );
    lab.service(
        "slow",
        "--width 1 --term-delay-ms 1500",
        "stop_timeout_ms: 5000\n",
    );
    lab.start(&[], &[])?;
    lab.wait_running(&["stubborn", "slow"])?;
    lab.wait_started("stubborn", 5)?;
    let (code, events) = lab.shutdown(&[]);
    expect_clean_end(&mut lab, code, &events, 0)?;
    let start = at_of(&events, "unit_stopping", "stubborn")?;
    let kill = kind(&events, "signal_sent")
        .find(|e| e["unit"] == "stubborn" && e["signal"] == "SIGKILL")
        .and_then(|e| e["at"].as_f64())
        .ok_or("no SIGKILL")?;
    let after = kill - start;
    ensure!(
        (1.0..=1.3).contains(&after),
        "SIGKILL {after:.3}s after the stop began (timeout 1 s)"
    );
    let slow = kind(&events, "unit_stopped")
        .find(|e| e["unit"] == "slow")
        .ok_or("slow")?;
    ensure!(
        slow["outcome"] == "graceful" && slow["processes_killed"] == 0,
        "the slow but graceful unit was killed: {slow}"
    );
    ensure!(slow["duration"].as_f64().unwrap_or(0.0) >= 1.5, "{slow}");
    Ok(format!(
        "kill at +{after:.3}s of a 1 s timeout; a 1.5 s graceful exit was waited for"
    ))
}

fn zero_and_capped_timeouts() -> Outcome {
    let mut lab = Lab::new("sd-zero");
    lab.service(
        "zero",
        "--width 2 --ignore-term all",
        "shutdown_timeout: 0\n",
    );
    lab.start(&[], &[])?;
    lab.wait_running(&["zero"])?;
    lab.wait_started("zero", 3)?;
    let (code, events) = lab.shutdown(&[]);
    expect_clean_end(&mut lab, code, &events, 0)?;
    let took = stopped_duration(&events, "zero")?;
    ensure!(took < 0.5, "a zero timeout took {took:.3}s");
    Ok(format!("timeout 0 killed in {took:.3}s"))
}

fn four_independent_units_in_parallel() -> Outcome {
    let mut lab = Lab::new("sd-parallel");
    for name in ["a", "b", "c", "d"] {
        lab.service(name, "--width 1 --term-delay-ms 2000", "");
    }
    lab.start(&[], &[])?;
    lab.wait_running(&["a", "b", "c", "d"])?;
    let (code, events) = lab.shutdown(&[]);
    expect_clean_end(&mut lab, code, &events, 0)?;
    let total = summary(&events)?["duration"].as_f64().unwrap_or(99.0);
    ensure!(total < 3.0, "four 2 s units took {total:.2}s in all");
    Ok(format!("4 × 2 s in {total:.2}s"))
}

fn diamond_takes_its_critical_path() -> Outcome {
    let mut lab = Lab::new("sd-diamond");
    lab.service("base", "--term-delay-ms 500", "");
    lab.service("left", "--term-delay-ms 1000", "after: [base]\n");
    lab.service("right", "--term-delay-ms 200", "after: [base]\n");
    lab.service("top", "--term-delay-ms 300", "after: [left, right]\n");
    lab.start(&[], &[])?;
    lab.wait_running(&["base", "left", "right", "top"])?;
    let (code, events) = lab.shutdown(&[]);
    expect_clean_end(&mut lab, code, &events, 0)?;
    let top_done = at_of(&events, "unit_stopped", "top")?;
    for side in ["left", "right"] {
        ensure!(
            at_of(&events, "unit_stopping", side)? >= top_done,
            "{side} began before top stopped"
        );
    }
    let sides_done =
        at_of(&events, "unit_stopped", "left")?.max(at_of(&events, "unit_stopped", "right")?);
    ensure!(
        at_of(&events, "unit_stopping", "base")? >= sides_done,
        "base began before its dependents stopped"
    );
    // left and right overlap.
    ensure!(
        at_of(&events, "unit_stopping", "right")? < at_of(&events, "unit_stopped", "left")?,
        "left and right did not overlap"
    );
    let total = summary(&events)?["duration"].as_f64().unwrap_or(99.0);
    ensure!(
        (total - 1.8).abs() <= 0.5,
        "critical path 1.8 s, took {total:.2}s: {:?}",
        kind(&events, "unit_stopped").collect::<Vec<_>>()
    );
    Ok(format!(
        "critical path 1.8 s, took {total:.2}s; dependents first"
    ))
}

fn escapes_are_caught(cgroups: bool) -> Outcome {
    let mut lab = Lab::new(if cgroups {
        "sd-escape"
    } else {
        "sd-escape-nocg"
    });
    lab.service("daemonish", "--double-fork 2 --setsid 1 --setpgid 1", "");
    lab.start(
        &[],
        if cgroups {
            &[]
        } else {
            &[("ZINIT_CGROUP", "off")]
        },
    )?;
    lab.wait_running(&["daemonish"])?;
    lab.wait_started("daemonish", 5)?;
    let (code, events) = lab.shutdown(&[]);
    expect_clean_end(&mut lab, code, &events, 0)?;
    let swept: Vec<&Value> = kind(&events, "process_swept").collect();
    if cgroups {
        ensure!(
            swept.is_empty(),
            "with a cgroup the unit stops its daemons itself: {swept:?}"
        );
        Ok("double fork, setsid, setpgid stopped with their cgroup".into())
    } else {
        ensure!(swept.iter().all(|e| e["reason"] == "orphan"), "{swept:?}");
        Ok(format!(
            "without cgroups: {} orphan(s) swept, none left",
            swept.len()
        ))
    }
}

fn hostile_trees() -> Outcome {
    let mut lab = Lab::new("sd-hostile");
    lab.service("respawner", "--width 3 --respawn", "");
    lab.service("storm", "--fork-storm", "");
    lab.service("zombies", "--zombies 5", "");
    lab.service("stopped", "--width 2 --depth 2 --stop-self all", "");
    lab.service(
        "leader",
        "--width 2 --ignore-term leaves",
        "stop_mode: group\nstop_timeout_ms: 1000\n",
    );
    lab.service(
        "main",
        "--width 2 --ignore-term leaves",
        "stop_mode: main\nstop_timeout_ms: 3000\n",
    );
    lab.start(&[], &[])?;
    lab.wait_running(&["respawner", "storm", "zombies", "stopped", "leader", "main"])?;
    lab.wait_started("stopped", 5)?;
    std::thread::sleep(Duration::from_millis(300));
    let (code, events) = lab.shutdown(&[]);
    expect_clean_end(&mut lab, code, &events, 0)?;
    let stopped = kind(&events, "unit_stopped")
        .find(|e| e["unit"] == "stopped")
        .ok_or("stopped")?;
    ensure!(
        stopped["outcome"] == "graceful",
        "stopped processes saw their signal: {stopped}"
    );
    let main = stopped_duration(&events, "main")?;
    ensure!(
        main < 2.0,
        "main mode: the rest got a short grace, not the whole 3 s ({main:.2}s)"
    );
    Ok("respawner, fork storm, zombies, stopped, leader-first (group, main): none left".into())
}

fn ports_and_filters_are_swept() -> Outcome {
    let mut lab = Lab::new("sd-sweep");
    let marker = format!("zt-marker-{}", lab.tag.as_str());
    lab.service(
        "web",
        "",
        &format!(
            "ports: [18080, \"18053/udp\"]\nprocess_filters: [\"cmdline:{marker}\", \"name:zinit_server\", \"name:zinit-probe\"]\n"
        ),
    );
    let extras = vec![
        lab.fixture_cmd("--tcp 18080"),
        lab.fixture_cmd("--udp 18053"),
        lab.fixture_cmd(&format!("-- {marker}")),
    ];
    lab.start(&extras, &[])?;
    lab.wait_running(&["web"])?;
    let (code, events) = lab.shutdown(&[]);
    expect_clean_end(&mut lab, code, &events, 0)?;
    let reasons: Vec<String> = kind(&events, "process_swept")
        .map(|e| e["reason"].as_str().unwrap_or("").to_string())
        .collect();
    for want in [
        "port 18080/tcp",
        "port 18053/udp",
        &format!("filter cmdline:{marker}"),
    ] {
        ensure!(
            reasons.iter().any(|r| r == want),
            "nothing swept for {want}: {reasons:?}"
        );
    }
    ensure!(
        reasons.len() == 3,
        "exactly the three outsiders: {reasons:?}"
    );
    Ok("port holders (tcp, udp) and a filter match swept; zinit and its init untouched".into())
}

fn a_hanging_stop_command_is_bounded() -> Outcome {
    let mut lab = Lab::new("sd-stopcmd");
    lab.service(
        "svc",
        "",
        &format!(
            "stop: /bin/sh -c 'while :; do :; done' {}\nshutdown_timeout: 2\n",
            lab.tag.as_str()
        ),
    );
    lab.start(&[], &[])?;
    lab.wait_running(&["svc"])?;
    let (code, events) = lab.shutdown(&[]);
    expect_clean_end(&mut lab, code, &events, 0)?;
    let took = stopped_duration(&events, "svc")?;
    ensure!(
        (1.0..=2.4).contains(&took),
        "the stop took {took:.2}s of a 2 s budget"
    );
    Ok(format!(
        "hanging stop command cut at half the budget; unit done in {took:.2}s"
    ))
}

fn crashes_are_not_restarted_and_blocked_units_do_not_block() -> Outcome {
    let mut lab = Lab::new("sd-crash");
    lab.service(
        "crashy",
        "--exit-after-ms 1500 --exit-code 1",
        "restart:\n  policy: always\n  delay: 50ms\n",
    );
    lab.service("slow", "--term-delay-ms 1500", "after: [crashy]\n");
    lab.service("waiting", "", "after: [never]\n");
    lab.service(
        "never",
        "",
        &format!(
            "test: /bin/sh -c 'exit 1' {}\ntest_interval: 100ms\n",
            lab.tag.as_str()
        ),
    );
    lab.start(&[], &[])?;
    lab.wait_running(&["slow"])?;
    std::thread::sleep(Duration::from_millis(500));
    let (code, events) = lab.shutdown(&[]);
    expect_clean_end(&mut lab, code, &events, 0)?;
    let starts = lab
        .log("crashy")
        .iter()
        .filter(|l| l.kind == "start")
        .count();
    ensure!(
        starts == 1,
        "crashy was restarted during the shutdown ({starts} starts)"
    );
    ensure!(lab.log("waiting").is_empty(), "the blocked unit never ran");
    Ok("a crash during the shutdown is not restarted; blocked units do not block".into())
}

fn concurrent_requests_join_one_shutdown() -> Outcome {
    let mut lab = Lab::new("sd-join");
    lab.service("slow", "--term-delay-ms 1500", "");
    lab.start(&[], &[])?;
    lab.wait_running(&["slow"])?;
    let socket = lab.socket.clone();
    let first = std::thread::spawn({
        let socket = socket.clone();
        move || zinit_tests::run_cli(&socket, &["--json", "shutdown"])
    });
    std::thread::sleep(Duration::from_millis(200));
    // SIGTERM joins the running shutdown, and so does a second request
    // (which cannot change the deadline).
    let server = server_host_pid(&lab)?;
    // SAFETY: plain kill of the server we started (found by its tag).
    unsafe { libc::kill(server, libc::SIGTERM) };
    let second = zinit_tests::run_cli(&socket, &["--json", "shutdown", "--timeout", "5s"]);
    let first = first.join().map_err(|_| "first client panicked")?;
    for (name, out) in [("first", &first), ("second", &second)] {
        ensure!(
            out.code == 0,
            "{name} client exit {}: {}",
            out.code,
            out.stderr
        );
        let events: Vec<Value> = out
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let plans: Vec<&Value> = kind(&events, "plan").collect();
        ensure!(
            plans.len() == 1 && plans[0]["deadline"] == 30.0,
            "{name}: one plan with the first deadline: {plans:?}"
        );
        ensure!(summary(&events)?["clean"] == true, "{name}: summary");
    }
    let report = lab.finish()?;
    ensure!(
        report.server_exit == Some(0) && report.survivors.is_empty(),
        "{report:?}"
    );
    Ok("two Shutdown calls and a SIGTERM joined one shutdown; both clients got every event".into())
}

fn ctrl_c_twice_forces_and_a_disconnected_client_does_not_stop_it() -> Outcome {
    let mut lab = Lab::new("sd-force");
    lab.service(
        "stubborn",
        "--width 1 --ignore-term all",
        "shutdown_timeout: 20\n",
    );
    lab.start(&[], &[])?;
    lab.wait_running(&["stubborn"])?;
    // A client that goes away mid-stream.
    let mut client = Command::new(bin("zinit"))
        .arg("--socket")
        .arg(&lab.socket)
        .arg("shutdown")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(300));
    let _ = client.kill();
    let _ = client.wait();
    let server = server_host_pid(&lab)?;
    let started = Instant::now();
    // Ctrl+C twice: the first joins the running shutdown, the second forces it.
    // SAFETY: plain kills of the server we started.
    unsafe {
        libc::kill(server, libc::SIGINT);
    }
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: as above.
    unsafe {
        libc::kill(server, libc::SIGINT);
    }
    lab.wait_report()?;
    let took = started.elapsed();
    let report = lab.finish()?;
    ensure!(report.survivors.is_empty(), "{report:?}");
    ensure!(
        report.server_exit == Some(0),
        "forced but clean: exit {:?}",
        report.server_exit
    );
    ensure!(
        took < Duration::from_secs(5),
        "forced shutdown took {took:?} of a 20 s timeout"
    );
    Ok(format!(
        "client gone mid-stream; Ctrl+C twice forced the 20 s unit down in {:.2}s",
        took.as_secs_f64()
    ))
}

fn the_deadline_holds_for_real() -> Outcome {
    let mut lab = Lab::new("sd-deadline");
    lab.service("long", "--ignore-term all", "shutdown_timeout: 60\n");
    lab.service(
        "front",
        "--ignore-term all",
        "shutdown_timeout: 20\nafter: [long]\n",
    );
    lab.start(&[], &[])?;
    lab.wait_running(&["long", "front"])?;
    let started = Instant::now();
    let t0 = now_ns();
    let (code, events) = lab.shutdown(&[]);
    let report = lab.finish()?;
    ensure!(report.survivors.is_empty(), "{report:?}");
    ensure!(
        report.server_exit == Some(4),
        "the deadline cut in: server exit {:?}",
        report.server_exit
    );
    ensure!(code == 0, "the CLI saw a clean summary: {code}");
    let front_kill = kind(&events, "signal_sent")
        .find(|e| e["unit"] == "front" && e["signal"] == "SIGKILL")
        .and_then(|e| e["at"].as_f64())
        .ok_or("front kill")?;
    let long_kill = kind(&events, "signal_sent")
        .find(|e| e["unit"] == "long" && e["signal"] == "SIGKILL")
        .and_then(|e| e["at"].as_f64())
        .ok_or_else(|| {
            format!(
                "no SIGKILL for long in {} events: {:?}",
                events.len(),
                kind(&events, "unit_stopped").collect::<Vec<_>>()
            )
        })?;
    ensure!(
        (20.0..=20.3).contains(&front_kill),
        "front killed at {front_kill:.2}s"
    );
    ensure!(
        (27.5..=28.4).contains(&long_kill),
        "the 60 s unit killed at {long_kill:.2}s, expected near 28 s"
    );
    let gone = (report.server_exit_t.saturating_sub(t0)) as f64 / 1e9;
    ensure!(
        gone <= 30.0,
        "the server was gone {gone:.2}s after the request"
    );
    ensure!(
        summary(&events)?["deadline_hit"] == true,
        "summary says the deadline cut in"
    );
    Ok(format!(
        "20 s + 60 s chain: kills at {front_kill:.2}s and {long_kill:.2}s, server gone at {gone:.2}s ({:.1}s wall)",
        started.elapsed().as_secs_f64()
    ))
}

fn the_watchdog_ends_a_wedged_shutdown() -> Outcome {
    let mut lab = Lab::new("sd-watchdog");
    lab.service("svc", "--width 2 --depth 2", "");
    lab.service("other", "--double-fork 1", "");
    lab.start_with(
        &hooked_server()?,
        &[],
        &[("ZINIT_TEST_WEDGE", "before-freeze")],
    )?;
    lab.wait_running(&["svc", "other"])?;
    let t0 = now_ns();
    let (code, _events) = lab.shutdown(&["--timeout", "3s"]);
    let report = lab.finish()?;
    ensure!(
        report.server_exit == Some(4),
        "the watchdog exits with 4 (the debug build has the hook): {:?} {}",
        report.server_exit,
        lab.server_log()
    );
    ensure!(report.survivors.is_empty(), "{report:?}");
    ensure!(
        code == 7,
        "the CLI reports the cut stream with 7, got {code}"
    );
    let gone = (report.server_exit_t.saturating_sub(t0)) as f64 / 1e9;
    ensure!(gone <= 3.5, "gone {gone:.2}s after a 3 s deadline");
    Ok(format!(
        "wedged step: watchdog ended the server at {gone:.2}s of 3 s, nothing left"
    ))
}

fn an_unkillable_process_is_reported_not_waited_on() -> Outcome {
    let freezer = Path::new("/sys/fs/cgroup/freezer");
    if !freezer.join("tasks").exists() {
        return Ok(format!("{SKIPPED}no cgroup v1 freezer on this host"));
    }
    let mut lab = Lab::new("sd-unkillable");
    let marker = format!("zt-frozen-{}", lab.tag.as_str());
    lab.service(
        "web",
        "",
        &format!("process_filters: [\"cmdline:{marker}\"]\n"),
    );
    lab.start(&[lab.fixture_cmd(&format!("-- {marker}"))], &[])?;
    lab.wait_running(&["web"])?;
    let frozen: Vec<i32> = zinit_tests::tagged_pids(&marker)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "zinit-fixture")
        })
        .collect();
    ensure!(frozen.len() == 1, "the marked process: {frozen:?}");
    let group = freezer.join(lab.tag.as_str());
    std::fs::create_dir(&group).map_err(|e| e.to_string())?;
    let thaw = |group: &Path| {
        let _ = std::fs::write(group.join("freezer.state"), "THAWED");
    };
    std::fs::write(group.join("cgroup.procs"), frozen[0].to_string()).map_err(|e| e.to_string())?;
    std::fs::write(group.join("freezer.state"), "FROZEN").map_err(|e| e.to_string())?;
    let (code, events) = lab.shutdown(&[]);
    let outcome = (|| {
        ensure!(code == 6, "not clean: the CLI exits 6, got {code}");
        let s = summary(&events)?;
        let left = s["leftovers"].as_array().cloned().unwrap_or_default();
        ensure!(left.len() == 1, "one leftover: {s}");
        let reason = left[0]["reason"].as_str().unwrap_or("");
        ensure!(
            reason.contains("filter") && reason.contains("uninterruptible"),
            "reason: {reason}"
        );
        ensure!(
            s["duration"].as_f64().unwrap_or(99.0) < 5.0,
            "not waited on: {s}"
        );
        lab.wait_report()?;
        Ok(())
    })();
    thaw(&group);
    let report = lab.finish();
    for _ in 0..200 {
        if std::fs::remove_dir(&group).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    outcome?;
    let report = report?;
    ensure!(
        report.server_exit == Some(3),
        "server exit 3 with a leftover: {:?}",
        report.server_exit
    );
    Ok("a frozen process was reported (uninterruptible) and the shutdown ended at once".into())
}

fn a_dry_run_stops_nothing() -> Outcome {
    let mut lab = Lab::new("sd-dry");
    lab.service("db", "", "ports: [18081]\n");
    lab.service("api", "", "after: [db]\n");
    lab.start(&[lab.fixture_cmd("--tcp 18081")], &[])?;
    lab.wait_running(&["db", "api"])?;
    let (code, events) = lab.shutdown(&["--dry-run"]);
    ensure!(code == 0, "dry run exit {code}");
    let plan = kind(&events, "plan").next().ok_or("a plan")?;
    ensure!(plan["dry_run"] == true, "{plan}");
    let db = plan["units"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| u["name"] == "db")
        .ok_or("db planned")?;
    ensure!(db["waits_for"][0] == "api", "db waits for api: {db}");
    let sweep = plan["sweep"].as_array().cloned().unwrap_or_default();
    ensure!(
        sweep.len() == 1 && sweep[0]["reason"] == "port 18081/tcp",
        "the port holder would be swept: {sweep:?}"
    );
    lab.wait_running(&["db", "api"])?;
    let (code, events) = lab.shutdown(&[]);
    expect_clean_end(&mut lab, code, &events, 0)?;
    Ok("the plan and sweep targets were shown; nothing stopped until the real shutdown".into())
}

/// The server's pid as this (outer) PID namespace sees it, if one runs.
fn find_server_pid(lab: &Lab) -> Option<i32> {
    let socket = lab.socket.display().to_string();
    let table = zinit_process::ProcessTable::snapshot(zinit_process::Detail::Full).ok()?;
    table
        .iter()
        .find(|p| p.comm == "zinit_server" && p.cmdline.contains(&socket))
        .map(|p| p.pid)
}

/// The server's pid as this (outer) PID namespace sees it (waiting up to
/// 5 s for one).
fn server_host_pid(lab: &Lab) -> Result<i32, String> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(pid) = find_server_pid(lab) {
            return Ok(pid);
        }
        ensure!(
            Instant::now() < end,
            "no zinit_server with {} in its argv",
            lab.socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn now_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let scenarios: Vec<Scenario> = vec![
        ("a killed server is taken over (cgroups)", || {
            a_killed_server_is_taken_over(true)
        }),
        (
            "a killed server is taken over (no cgroups, pid reuse)",
            || a_killed_server_is_taken_over(false),
        ),
        (
            "killed mid-escalation: nothing stays frozen",
            a_server_killed_mid_escalation_leaves_nothing_frozen,
        ),
        (
            "killed mid-shutdown: the next server finishes it",
            a_server_killed_mid_shutdown_is_finished_by_the_next,
        ),
        (
            "a changed service is replaced after a crash",
            a_changed_service_is_replaced_after_a_crash,
        ),
        (
            "a dead supervisor ends the server; the next takes over",
            a_dead_supervisor_ends_the_server_and_the_next_takes_over,
        ),
        (
            "real programs (sleep, sh, python, nginx, redis)",
            real_programs,
        ),
        ("polite deep and wide trees, deepest first", polite_trees),
        (
            "kill lands at the timeout; slow graceful exit waited for",
            kill_lands_at_the_timeout,
        ),
        ("timeout 0 kills at once", zero_and_capped_timeouts),
        (
            "four independent units stop in parallel",
            four_independent_units_in_parallel,
        ),
        (
            "a diamond takes its critical path, dependents first",
            diamond_takes_its_critical_path,
        ),
        ("double fork and setsid escapes (cgroups)", || {
            escapes_are_caught(true)
        }),
        ("double fork and setsid escapes (no cgroups: swept)", || {
            escapes_are_caught(false)
        }),
        (
            "respawner, fork storm, zombies, stopped, leader-first",
            hostile_trees,
        ),
        (
            "port holders and filter matches are swept",
            ports_and_filters_are_swept,
        ),
        (
            "a hanging stop command is bounded",
            a_hanging_stop_command_is_bounded,
        ),
        (
            "crash during shutdown not restarted; blocked units",
            crashes_are_not_restarted_and_blocked_units_do_not_block,
        ),
        (
            "two calls and SIGTERM join one shutdown",
            concurrent_requests_join_one_shutdown,
        ),
        (
            "Ctrl+C twice forces; a client that leaves",
            ctrl_c_twice_forces_and_a_disconnected_client_does_not_stop_it,
        ),
        (
            "an unkillable process is reported, not waited on",
            an_unkillable_process_is_reported_not_waited_on,
        ),
        ("a dry run stops nothing", a_dry_run_stops_nothing),
        (
            "the watchdog ends a wedged shutdown",
            the_watchdog_ends_a_wedged_shutdown,
        ),
        (
            "the 30 s deadline holds (60 s unit killed near 28 s)",
            the_deadline_holds_for_real,
        ),
    ];
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    println!("{:<56} {:>7}  {:<6} detail", "scenario", "time", "result");
    for (name, scenario) in scenarios {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let start = Instant::now();
        let outcome = std::panic::catch_unwind(scenario).unwrap_or_else(|panic| {
            Err(panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into()))
        });
        let took = start.elapsed().as_secs_f64();
        match outcome {
            Ok(detail) if detail.starts_with(SKIPPED) => {
                skipped += 1;
                zinit_tests::skip_named(&format!("scenario: {name}"), &detail[SKIPPED.len()..]);
                println!("{name:<56} {took:>6.1}s  {:<6} {detail}", "SKIP");
            }
            Ok(detail) => {
                passed += 1;
                println!("{name:<56} {took:>6.1}s  {:<6} {detail}", "ok");
            }
            Err(why) => {
                failed += 1;
                println!("{name:<56} {took:>6.1}s  {:<6} {why}", "FAILED");
            }
        }
    }
    println!("shutdown scenarios: {passed} passed, {failed} failed, {skipped} skipped");
    std::process::exit(i32::from(failed > 0));
}
