//! `cargo xtask test`: formatting, lints, the whole test suite, and a check
//! that no test left a process behind — every phase bounded in time, and
//! one closing line that counts what passed, failed and was skipped.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What every test process of this run is told: the run's id (in every
/// tag, see `zinit_tests::tag_prefix`) and where to record skips.
struct TestRun {
    id: String,
    skip_log: PathBuf,
}

impl TestRun {
    fn new() -> Result<Self> {
        let skip_log = crate::root().join("target/zinit-test-skips.log");
        std::fs::create_dir_all(crate::root().join("target"))?;
        std::fs::write(&skip_log, "")
            .with_context(|| format!("emptying {}", skip_log.display()))?;
        Ok(Self {
            id: std::process::id().to_string(),
            skip_log,
        })
    }

    fn env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("ZINIT_TEST_RUN", PathBuf::from(&self.id)),
            ("ZINIT_SKIP_LOG", self.skip_log.clone()),
        ]
    }

    /// The skips recorded so far: (test, reason), one per test.
    fn skips(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(&self.skip_log).unwrap_or_default();
        let mut skips: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            let (test, reason) = line.split_once('\t').unwrap_or((line, ""));
            if !skips.iter().any(|(t, _)| t == test) {
                skips.push((test.to_string(), reason.to_string()));
            }
        }
        skips
    }
}

/// Counts of one test command.
#[derive(Default)]
struct Counts {
    passed: u64,
    failed: u64,
    /// Skips the command reported itself (the scenario suite's).
    skipped: u64,
    ok: bool,
}

const MINUTE: Duration = Duration::from_secs(60);

pub fn run() -> Result<()> {
    let run = TestRun::new()?;
    bounded(
        "installing nginx, redis and postgresql",
        10 * MINUTE,
        install_foreign_programs,
    )?;
    let cargo = crate::cargo();
    run_phase(
        "cargo fmt --check",
        3 * MINUTE,
        &cargo,
        &["fmt", "--all", "--", "--check"],
        &[],
    )?;
    run_phase(
        "cargo clippy",
        20 * MINUTE,
        &cargo,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    // The scenario suite is a `test = false` target, which --all-targets skips.
    run_phase(
        "cargo clippy (scenario suite)",
        10 * MINUTE,
        &cargo,
        &[
            "clippy",
            "-p",
            "zinit-tests",
            "--test",
            "shutdown",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    let mut total = counted(
        "cargo test",
        45 * MINUTE,
        &cargo,
        &["test", "--workspace", "--no-fail-fast", "--color", "never"],
        &run.env(),
    );
    let scenario_prefix = std::env::temp_dir().join(format!("zinit-prefix-{}", run.id));
    let scenarios = test_shutdown_counts(&scenario_prefix, &run.env());
    total.passed += scenarios.passed;
    total.failed += scenarios.failed;
    total.skipped += scenarios.skipped;
    if !scenarios.ok {
        println!("the shutdown scenario suite failed or did not finish");
        total.ok = false;
    }
    match bounded("the install check", 15 * MINUTE, install_check) {
        Ok(()) => {
            println!("install check: ok");
            total.passed += 1;
        }
        Err(e) => {
            println!("install check: FAILED: {e:#}");
            total.failed += 1;
        }
    }
    let leaked = leaked_processes(&run, &scenario_prefix);
    if !leaked.is_empty() {
        println!("the tests left processes behind:\n{}", leaked.join("\n"));
    }
    // libtest counts a test that skipped as passed; the scenario suite
    // counted its own skips already.
    let skips = run.skips();
    let libtest_skips = skips
        .iter()
        .filter(|(t, _)| !t.starts_with("scenario: "))
        .count() as u64;
    total.passed = total.passed.saturating_sub(libtest_skips);
    let skipped = libtest_skips + total.skipped;
    for (test, reason) in &skips {
        println!("skipped: {test}: {reason}");
    }
    let strict = zinit_tests::host_allows_cgroups();
    // One closing line for the whole suite.
    println!(
        "tests: {} passed, {} failed, {skipped} skipped",
        total.passed, total.failed
    );
    if !total.ok || total.failed > 0 {
        bail!("some tests failed");
    }
    if !leaked.is_empty() {
        bail!("the tests left processes behind");
    }
    if strict && skipped > 0 {
        bail!(
            "{skipped} test(s) skipped on a host that can run every test (root, cgroup v2): \
             a skip here hides a property nobody checked"
        );
    }
    Ok(())
}

/// Runs `f` on a thread and fails if it takes longer than `bound`. The
/// thread of a phase that overran is left behind; its child processes are
/// killed by the phase itself (see [`bounded_command`]), and `run` then
/// fails.
fn bounded<T: Send + 'static>(
    phase: &str,
    bound: Duration,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(bound) {
        Ok(result) => result,
        Err(_) => bail!(
            "{phase} did not finish within {} min; stopped",
            bound.as_secs() / 60
        ),
    }
}

/// Runs a command to completion within `bound`, killing it and everything
/// below it when the bound is reached.
fn run_phase(
    phase: &str,
    bound: Duration,
    program: &str,
    args: &[&str],
    env: &[(&str, PathBuf)],
) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let mut child = std::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(crate::root())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    let status = bounded_command(phase, bound, &mut child)?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Waits for `child` at most `bound`; past it, SIGKILLs the child and its
/// descendants and fails with the phase's name.
fn bounded_command(
    phase: &str,
    bound: Duration,
    child: &mut std::process::Child,
) -> Result<std::process::ExitStatus> {
    let end = std::time::Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if std::time::Instant::now() > end {
            kill_tree(child.id() as i32);
            let _ = child.wait();
            bail!(
                "{phase} did not finish within {} min; killed",
                bound.as_secs() / 60
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// SIGKILLs `pid` and every descendant, deepest first.
fn kill_tree(pid: i32) {
    let table = zinit_process::ProcessTable::snapshot(zinit_process::Detail::Basic).ok();
    let mut pids: Vec<i32> = table
        .map(|t| t.descendants(pid).into_iter().map(|(p, _)| p).collect())
        .unwrap_or_default();
    pids.push(pid);
    for pid in pids {
        if let Some(id) = zinit_process::ProcessId::of(pid)
            && let Ok(handle) = zinit_process::ProcessHandle::open(id)
        {
            let _ = handle.signal(zinit_process::Signal::SIGKILL);
        }
    }
}

/// The Debian programs the tests run besides zinit's own fixture (nginx
/// and redis-server), installed with apt-get when missing. Their package
/// scripts are kept from starting them as system services.
pub fn install_foreign_programs() -> Result<()> {
    let missing: Vec<&str> = [
        ("nginx", "/usr/sbin/nginx"),
        ("redis-server", "/usr/bin/redis-server"),
        // Debian 12's PostgreSQL, which examples/stack names.
        ("postgresql", "/usr/lib/postgresql/15/bin/postgres"),
    ]
    .into_iter()
    .filter(|(_, path)| !Path::new(path).exists())
    .map(|(package, _)| package)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let placed = !policy.exists();
    if placed {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(
            policy,
            "#!/bin/sh\n# zinit's tests: do not start services from package scripts\nexit 101\n",
        )?;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let apt = |args: &[&str]| -> Result<()> {
        eprintln!("$ apt-get {}", args.join(" "));
        let status = std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        anyhow::ensure!(status.success(), "apt-get {} failed ({status})", args[0]);
        Ok(())
    };
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(&missing);
    let installed = apt(&["update", "-qq"]).and_then(|()| apt(&install));
    if placed {
        let _ = std::fs::remove_file(policy);
    }
    installed.map_err(|e| anyhow::anyhow!("installing {}: {e:#}", missing.join(" ")))
}

/// `cargo xtask test-shutdown`.
pub fn test_shutdown() -> Result<()> {
    install_foreign_programs()?;
    let run = TestRun::new()?;
    let prefix = std::env::temp_dir().join(format!("zinit-prefix-{}", run.id));
    let counts = test_shutdown_counts(&prefix, &run.env());
    println!(
        "tests: {} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.skipped
    );
    if !counts.ok || counts.failed > 0 {
        bail!("shutdown scenarios failed");
    }
    Ok(())
}

/// Installs release binaries into `prefix` and runs the shutdown scenario
/// suite against them (its watchdog scenario uses the debug build with the
/// test-only fault hook).
fn test_shutdown_counts(prefix: &Path, env: &[(&'static str, PathBuf)]) -> Counts {
    let installed = crate::install::build_release(false)
        .and_then(|built| crate::install::install_binaries(&built, prefix));
    if let Err(e) = installed {
        println!("installing the release binaries for the scenarios failed: {e:#}");
        return Counts::default();
    }
    let mut env = env.to_vec();
    env.push(("ZINIT_BIN_DIR", prefix.join("bin")));
    // `--workspace` keeps the features of the other builds: nothing is
    // compiled a second time.
    let counts = counted(
        "the shutdown scenarios",
        20 * MINUTE,
        &crate::cargo(),
        &[
            "test",
            "--workspace",
            "--test",
            "shutdown",
            "--color",
            "never",
        ],
        &env,
    );
    let _ = std::fs::remove_dir_all(prefix);
    counts
}

/// Runs a test command within `bound`, echoing its output, and adds up
/// the `test result:` lines of every test binary and the scenario suite's
/// own closing line. A command that cannot run or overruns counts as not ok.
fn counted(
    phase: &str,
    bound: Duration,
    cargo: &str,
    args: &[&str],
    env: &[(&str, PathBuf)],
) -> Counts {
    match run_counting(phase, bound, cargo, args, env) {
        Ok(counts) => counts,
        Err(e) => {
            println!("{e:#}");
            Counts::default()
        }
    }
}

fn run_counting(
    phase: &str,
    bound: Duration,
    cargo: &str,
    args: &[&str],
    env: &[(&str, PathBuf)],
) -> Result<Counts> {
    use std::io::BufRead;
    eprintln!("$ {cargo} {}", args.join(" "));
    let mut child = std::process::Command::new(cargo)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(crate::root())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    // The reader ends when the command (or the bound's kill) closes the pipe.
    let reader = std::thread::spawn(move || {
        let mut counts = Counts::default();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                counts.passed += count(rest, "passed");
                counts.failed += count(rest, "failed");
            } else if let Some((_, rest)) = line.split_once("scenarios: ") {
                // The shutdown suite's own line: "N passed, N failed, N skipped".
                let rest = rest.replace(',', ";");
                counts.passed += count(&rest, "passed");
                counts.failed += count(&rest, "failed");
                counts.skipped += count(&rest, "skipped");
            }
        }
        counts
    });
    let status = bounded_command(phase, bound, &mut child);
    let mut counts = reader.join().unwrap_or_default();
    counts.ok = status?.success();
    Ok(counts)
}

/// The number before `word` in "ok. 5 passed; 0 failed; ...".
fn count(summary: &str, word: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(word)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Processes of this run still alive: anything running a binary from this
/// workspace's `target/` or the scenarios' installed prefix, or carrying
/// one of this run's tags (tests' `zt-RUN-…`, the install check's
/// `zinstall-RUN`) in its argv.
fn leaked_processes(run: &TestRun, prefix: &Path) -> Vec<String> {
    let target = crate::root().join("target");
    let tags = [format!("zt-{}-", run.id), format!("zinstall-{}", run.id)];
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.to_string();
            pid.parse::<u32>().ok()?;
            if pid == me {
                return None;
            }
            let exe = std::fs::read_link(e.path().join("exe")).unwrap_or_default();
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let ours = exe.starts_with(&target)
                || exe.starts_with(prefix)
                || tags.iter().any(|tag| cmdline.contains(tag.as_str()));
            ours.then(|| format!("{pid} {} ({})", cmdline.trim_end(), exe.display()))
        })
        .collect()
}

/// `cargo xtask install` against a running server: it shuts the server down
/// gracefully, installs the binaries, and with `--restart` starts it again.
fn install_check() -> Result<()> {
    use std::time::{Duration, Instant};
    let built = crate::install::build_release(true)?;
    let dir = std::env::temp_dir().join(format!("zinit-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("conf"))?;
    let tag = format!("zinstall-{}", std::process::id());
    std::fs::write(
        dir.join("conf/svc.yaml"),
        format!(
            "exec: {} --tag {tag} --width 2\n",
            built.join("zinit-fixture").display()
        ),
    )?;
    let socket = dir.join("s.sock");
    let zinit = |args: &[&str]| {
        std::process::Command::new(built.join("zinit"))
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
    };
    let mut old = std::process::Command::new(built.join("zinit_server"))
        .arg("--config")
        .arg(dir.join("conf"))
        .arg("--socket")
        .arg(&socket)
        .args(["--log-level", "error"])
        .spawn()?;
    let outcome = (|| -> Result<()> {
        let end = Instant::now() + Duration::from_secs(10);
        while !zinit(&["info"])?.status.success() {
            if Instant::now() > end {
                bail!("the server did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        crate::install::run(crate::install::Args {
            prefix: dir.join("prefix"),
            socket: Some(socket.clone()),
            restart: true,
        })?;
        if old.try_wait()?.is_none() {
            bail!("the old server is still running");
        }
        for name in crate::install::BINARIES {
            if !dir.join("prefix/bin").join(name).exists() {
                bail!("{name} was not installed");
            }
        }
        let end = Instant::now() + Duration::from_secs(10);
        let info = loop {
            let out = zinit(&["--json", "info"])?;
            if out.status.success() {
                break String::from_utf8_lossy(&out.stdout).into_owned();
            }
            if Instant::now() > end {
                bail!("the restarted server does not answer");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if info.contains(&format!("\"pid\":{},", old.id())) {
            bail!("the server was not restarted: {info}");
        }
        let down = zinit(&["shutdown"])?;
        if !down.status.success() {
            bail!("shutting the restarted server down failed");
        }
        Ok(())
    })();
    let _ = old.kill();
    let _ = old.wait();
    zinit_tests::reap_tagged(&tag, Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}
