//! `cargo xtask bench`: zinit's numbers, each against a baseline measured in
//! the same run, on the same machine, on the same process trees.
//!
//! 1. one process-table snapshot, against `sysinfo` reading the same files,
//!    and a unit's own members read from its cgroup (the shutdown's path);
//! 2. stopping a polite tree deepest first (deep and flat), against the
//!    naive stop: SIGTERM every pid at once, then wait on pidfds;
//! 3. the CPU spent waiting on a tree that ignores SIGTERM, against 10 ms
//!    and 100 ms polling loops;
//! 4. zinit_server's whole shutdown of N services × M processes, against
//!    the naive stop of the same trees, with the server's peak RSS over its
//!    whole life (the shutdown included) and an independent scan for
//!    anything left; the scaling figures show how the cost grows;
//! 5. the server's CPU while idle, quiet and with services that log, run
//!    readiness tests and have exited;
//! 6. the server's RSS under a log flood, with 0, 50 reading and 50 stalled
//!    followers, against a stated bound;
//! 7. real programs (sh, sleep, python3) shut down by zinit, against the
//!    naive stop of the same programs.
//!
//! Timed figures are medians over rounds whose order alternates (zinit
//! first, then the baseline first); the shutdowns of section 4 each start
//! on a quiet machine. `--json` writes every figure to
//! `target/bench.json`; `--readme` also rewrites the README's table from it.

use anyhow::{Context, Result, bail};
use serde_json::json;
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use zinit_process::spawn::Output;
use zinit_process::stop::{StopSpec, stop};
use zinit_process::{
    CgroupRoot, Child, Command, Detail, Members, ProcessHandle, ProcessId, ProcessTable, Signal,
};

#[derive(clap::Args)]
pub struct Args {
    /// Skip the 10,000-process figures and the scaling runs, one round each.
    #[arg(long)]
    quick: bool,
    /// Write every figure to target/bench.json.
    #[arg(long)]
    json: bool,
    /// Write target/bench.json and rewrite the README's "Numbers" table from it.
    #[arg(long)]
    readme: bool,
    /// Run only the sections whose numbers are given (1–7), e.g. `--only 4`.
    /// (The README table needs every section: not with `--readme`.)
    #[arg(long, value_delimiter = ',', conflicts_with = "readme", value_parser = clap::value_parser!(u8).range(1..=7))]
    only: Vec<u8>,
}

/// The promised bounds, checked on the medians (the run fails past them).
const SHUTDOWN_RATIO: f64 = 1.2;
/// The server's peak RSS with 200 services up (the promise).
const PEAK_RSS_MIB: f64 = 12.0;
/// A regression guard, not a promise: the peak RSS including the shutdown
/// of the 200 services' 5,000 processes (14.5–15 MiB in November 2026, of
/// which about 8 MiB are the binary's own pages mapped from the page cache).
const SHUTDOWN_PEAK_RSS_MIB: f64 = 16.0;
/// The log-flood bound: a server at rest (~13 MiB with the flood's two
/// 1 MiB rings full), and at most ~0.8 MiB per stalled follower (one 64 KiB
/// line waiting in its stream, HTTP/2's send buffer of 400 KiB, the
/// encoder's buffer), for all 64 streams a server serves at once.
const FLOOD_RSS_MIB: f64 = 64.0;
/// What the server may still hold once the followers of a flood have gone,
/// above what it held before they came.
const FLOOD_KEPT_MIB: f64 = 4.0;

/// A fixture tree started for the benchmark, killed on drop.
struct Tree {
    child: Child,
    pids: Vec<i32>,
    tag: String,
}

impl Tree {
    fn start(bench: &Bench, args: &[&str]) -> Result<Self> {
        let tag = bench.tag.as_str();
        let mut command = Command::new(&bench.fixture)
            .args(["--tag", tag])
            .args(args)
            .stdout(Output::Piped);
        if let Some(root) = &bench.cgroups {
            // A fresh cgroup per tree: the previous one may still be emptying.
            let n = bench
                .trees
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            command = command.cgroup(root.create(&format!("tree{n}"))?);
        }
        let mut child = command.spawn().context("start fixture")?;
        let stdout = std::fs::File::from(child.take_stdout().context("stdout")?);
        let mut pids = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            if line.starts_with("ready") {
                return Ok(Self {
                    child,
                    pids,
                    tag: tag.to_string(),
                });
            }
            if let Some(pid) = line.split_whitespace().find_map(|w| w.strip_prefix("pid=")) {
                pids.push(pid.parse()?);
            }
        }
        bail!("fixture exited before it was ready")
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        zinit_tests::reap_tagged(&self.tag, Duration::from_secs(10));
        let _ = self.child.try_wait();
    }
}

fn build_fixture() -> Result<String> {
    crate::run(
        &crate::cargo(),
        &[
            "build",
            "--release",
            "--quiet",
            "-p",
            "zinit-tests",
            "--bin",
            "zinit-fixture",
        ],
    )?;
    Ok(crate::root()
        .join("target/release/zinit-fixture")
        .to_string_lossy()
        .into_owned())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn time<F: FnMut()>(runs: usize, mut f: F) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
}

/// This process's CPU time (every thread, the exited ones included).
fn cpu_time() -> Duration {
    // SAFETY: valid out-pointer.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer for RUSAGE_SELF.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// What every benchmark needs: the fixture, a tag, cgroups where the host
/// has them, the release binaries, and the figures so far.
struct Bench {
    fixture: String,
    bins: PathBuf,
    tag: String,
    cgroups: Option<CgroupRoot>,
    trees: std::sync::atomic::AtomicUsize,
    rounds: usize,
    figures: std::cell::RefCell<Vec<serde_json::Value>>,
    /// Medians past a promised bound.
    over: std::cell::RefCell<Vec<String>>,
}

impl Bench {
    /// Records one figure: `zinit` against `baseline` (both as printed).
    fn figure(&self, key: &str, what: &str, zinit: String, baseline: &str, value: f64) {
        self.figures.borrow_mut().push(json!({
            "key": key,
            "what": what,
            "zinit": zinit,
            "baseline": baseline,
            "value": value,
        }));
    }

    /// Notes a median past a promised bound.
    fn over(&self, what: String) {
        println!("   !! {what}");
        self.over.borrow_mut().push(what);
    }
}

pub fn run(args: Args) -> Result<()> {
    zinit_process::limits::raise_nofile_limit()?;
    let tag = format!("zbench-{}", std::process::id());
    let fixture = build_fixture()?;
    let bins = crate::install::build_release(true)?;
    let bench = Bench {
        fixture,
        bins,
        cgroups: CgroupRoot::detect_as(&tag),
        tag,
        trees: Default::default(),
        rounds: if args.quick { 1 } else { 3 },
        figures: Default::default(),
        over: Default::default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mode = match &bench.cgroups {
        Some(root) => format!("cgroup v2 mode, under {}", root.path().display()),
        None => "fallback mode (no writable cgroup v2, or ZINIT_CGROUP=off)".to_string(),
    };
    println!(
        "zinit benchmarks, {mode}, release build; baselines measured in the same run; \
         medians of {} round(s), order alternated\n",
        bench.rounds
    );
    let wanted = |section: u8| args.only.is_empty() || args.only.contains(&section);
    let result = (|| -> Result<()> {
        if wanted(1) {
            snapshots(&bench, args.quick)?;
        }
        if wanted(2) {
            runtime.block_on(stop_polite(&bench))?;
        }
        if wanted(3) {
            runtime.block_on(waiting_cpu(&bench))?;
        }
        if wanted(4) {
            runtime.block_on(shutdowns(&bench, args.quick))?;
        }
        if wanted(5) {
            idle(&bench)?;
        }
        if wanted(6) {
            log_flood(&bench)?;
        }
        if wanted(7) {
            runtime.block_on(real_programs(&bench))?;
        }
        Ok(())
    })();
    zinit_tests::reap_tagged(&bench.tag, Duration::from_secs(10));
    if let Some(root) = &bench.cgroups {
        let _ = root.remove();
    }
    result?;
    if args.json || args.readme {
        let path = crate::root().join("target/bench.json");
        let doc = json!({
            "mode": mode,
            "rounds": bench.rounds,
            "quick": args.quick,
            "figures": *bench.figures.borrow(),
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
        println!("figures written to {}", path.display());
        if args.readme {
            rewrite_readme(&path)?;
        }
    }
    let over = bench.over.borrow();
    if !over.is_empty() {
        bail!("past a promised bound: {}", over.join("; "));
    }
    Ok(())
}

/// Rewrites the README's table between `<!-- bench -->` and `<!-- /bench -->`
/// from a `bench.json`.
fn rewrite_readme(json_path: &Path) -> Result<()> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(json_path)?)?;
    let mut table = format!(
        "Generated by `cargo xtask bench --readme` ({}, medians of {} round(s)):\n\n\
         | what | zinit | baseline |\n|---|---|---|\n",
        doc["mode"].as_str().unwrap_or("?"),
        doc["rounds"]
    );
    for figure in doc["figures"].as_array().into_iter().flatten() {
        let cell = |k: &str| figure[k].as_str().unwrap_or("").replace('|', "\\|");
        table.push_str(&format!(
            "| {} | {} | {} |\n",
            cell("what"),
            cell("zinit"),
            cell("baseline")
        ));
    }
    let readme = crate::root().join("README.md");
    let text = std::fs::read_to_string(&readme)?;
    let (Some(begin), Some(end)) = (text.find("<!-- bench -->"), text.find("<!-- /bench -->"))
    else {
        bail!("README.md has no <!-- bench --> ... <!-- /bench --> block");
    };
    let begin = begin + "<!-- bench -->".len();
    let updated = format!("{}\n{table}{}", &text[..begin], &text[end..]);
    std::fs::write(&readme, updated)?;
    println!("README.md's numbers rewritten from {}", json_path.display());
    Ok(())
}

fn snapshots(bench: &Bench, quick: bool) -> Result<()> {
    println!("1. one process-table snapshot, and a unit's members from its cgroup");
    println!(
        "   {:>9} {:>12} {:>12} {:>16} {:>18}",
        "processes", "zinit basic", "zinit full", "sysinfo same", "unit of 25 (cgroup)"
    );
    let sizes: &[(&str, &str)] = if quick {
        &[("100", "10")]
    } else {
        &[("100", "10"), ("1000", "10")]
    };
    for (width, depth) in sizes {
        let _tree = Tree::start(bench, &["--width", width, "--depth", depth])?;
        let unit = Tree::start(bench, &["--width", "24"])?;
        let count = ProcessTable::snapshot(Detail::Basic)?.len();
        let basic = time(9, || {
            let _ = ProcessTable::snapshot(Detail::Basic);
        });
        let full = time(9, || {
            let _ = ProcessTable::snapshot(Detail::Full);
        });
        // Like for like: sysinfo reads stat, the command line and the
        // executable of every process, as zinit's full snapshot does.
        let mut system = sysinfo::System::new().context("sysinfo")?;
        let kind = sysinfo::ProcessRefreshKind::nothing()
            .with_cmd(sysinfo::UpdateKind::Always)
            .with_exe(sysinfo::UpdateKind::Always);
        system.refresh_processes_specifics(sysinfo::ProcessesToUpdate::All, true, kind);
        let sysinfo = time(9, || {
            system.refresh_processes_specifics(sysinfo::ProcessesToUpdate::All, true, kind);
        });
        let members = Members::of_child(&unit.child);
        let own = if members.cgroup().is_some() {
            let found = members.scan_now()?.len();
            let t = time(9, || {
                let _ = members.scan_now();
            });
            format!("{} ({found})", ms(t))
        } else {
            "no cgroups".to_string()
        };
        println!(
            "   {count:>9} {:>12} {:>12} {:>16} {:>18}",
            ms(basic),
            ms(full),
            ms(sysinfo),
            own
        );
        let size = if count > 5000 { "10k" } else { "1k" };
        bench.figure(
            &format!("snapshot_full_{size}"),
            &format!(
                "one full `/proc` snapshot, {count} processes (basic: {})",
                ms(basic)
            ),
            ms(full),
            &format!("`sysinfo`, same files: {}", ms(sysinfo)),
            full.as_secs_f64(),
        );
        if members.cgroup().is_some() {
            bench.figure(
                &format!("unit_members_{size}"),
                &format!("a 25-process unit's members from its cgroup, {count} processes on the machine (the shutdown's rescans)"),
                own,
                "",
                0.0,
            );
        }
    }
    println!(
        "   (sysinfo same: stat, cmdline and exe of every process, as zinit full; the\n    \
         shutdown's per-level rescans read the unit's cgroup, never the whole table;\n    \
         medians of 9)\n"
    );
    Ok(())
}

async fn stop_polite(bench: &Bench) -> Result<()> {
    println!("2. stopping a polite tree, deepest first, against the naive stop");
    println!(
        "   {:<34} {:>12} {:>12} {:>7}",
        "tree", "zinit", "naive", "ratio"
    );
    let shapes: [(&str, &[&str]); 2] = [
        (
            "deep: 100 chains of 10 (1,001)",
            &["--width", "100", "--depth", "10"],
        ),
        ("flat: 1,000 children (1,001)", &["--width", "1000"]),
    ];
    for (i, (name, shape)) in shapes.iter().enumerate() {
        let (mut zinit, mut naive) = (Vec::new(), Vec::new());
        for round in 0..bench.rounds {
            let zinit_round = async || -> Result<Duration> {
                let mut tree = Tree::start(bench, shape)?;
                let start = Instant::now();
                let members = Members::of_child(&tree.child);
                let report = stop(&members, &StopSpec::default(), None).await?;
                tree.child.wait().await?;
                let elapsed = start.elapsed();
                let (_, killed) = report.exit_counts();
                if killed > 0 {
                    bail!("{killed} processes of a polite tree were killed");
                }
                Ok(elapsed)
            };
            let naive_round = async || -> Result<Duration> {
                let mut tree = Tree::start(bench, shape)?;
                let start = Instant::now();
                naive_stop(&tree.pids).await?;
                tree.child.wait().await?;
                Ok(start.elapsed())
            };
            if round % 2 == 0 {
                zinit.push(zinit_round().await?);
                naive.push(naive_round().await?);
            } else {
                naive.push(naive_round().await?);
                zinit.push(zinit_round().await?);
            }
        }
        let (zinit, naive) = (median(zinit), median(naive));
        println!(
            "   {name:<34} {:>12} {:>12} {:>6.2}x",
            ms(zinit),
            ms(naive),
            zinit.as_secs_f64() / naive.as_secs_f64()
        );
        bench.figure(
            &format!("stop_tree_{i}"),
            &format!("stop a polite tree deepest first, {name}"),
            ms(zinit),
            &format!("SIGTERM all + pidfds {} (no order)", ms(naive)),
            zinit.as_secs_f64(),
        );
    }
    println!(
        "   (deepest first waits for each level before the next; the naive stop orphans\n    \
         children mid-stop and gives no order)\n"
    );
    Ok(())
}

/// The baseline: SIGTERM every pid, then wait on a pidfd each until all are gone.
async fn naive_stop(pids: &[i32]) -> Result<()> {
    let handles: Vec<ProcessHandle> = pids
        .iter()
        .filter_map(|&pid| ProcessHandle::open(ProcessId::of(pid)?).ok())
        .collect();
    for handle in &handles {
        let _ = handle.signal(Signal::SIGTERM);
    }
    // The watcher keeps its share of each pidfd: the handles can go.
    let mut watcher = zinit_process::watch::ExitWatcher::new()?;
    for handle in handles {
        watcher.add(&handle)?;
    }
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    while !watcher.is_empty() {
        if watcher.wait(end).await?.is_timeout() {
            bail!("naive stop timed out");
        }
    }
    Ok(())
}

async fn waiting_cpu(bench: &Bench) -> Result<()> {
    println!("3. CPU time while waiting 5 s for a tree that ignores SIGTERM (101 processes)");
    let shape = ["--width", "10", "--depth", "10", "--ignore-term", "all"];

    let mut tree = Tree::start(bench, &shape)?;
    let spec = StopSpec {
        timeout: Duration::from_secs(5),
        ..StopSpec::default()
    };
    let cpu = cpu_time();
    let members = Members::of_child(&tree.child);
    stop(&members, &spec, None).await?;
    let zinit = cpu_time() - cpu;
    tree.child.wait().await?;
    drop(tree);

    let mut pollers = Vec::new();
    for interval in [Duration::from_millis(10), Duration::from_millis(100)] {
        let tree = Tree::start(bench, &shape)?;
        let cpu = cpu_time();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            // The polling baseline: is anyone still alive? (kill 0 and a /proc state read)
            let alive = tree
                .pids
                .iter()
                .filter(|&&pid| {
                    // SAFETY: signal 0 only checks existence.
                    let exists = unsafe { libc::kill(pid, 0) } == 0;
                    exists && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok()
                })
                .count();
            if alive == 0 {
                break;
            }
            std::thread::sleep(interval);
        }
        pollers.push((interval, cpu_time() - cpu));
        drop(tree);
    }
    println!(
        "   zinit (pidfds + epoll, 1 s progress rescans): {:>10} CPU",
        ms(zinit)
    );
    for (interval, cpu) in &pollers {
        println!(
            "   polling every {:>3} ms (kill 0 + /proc read):   {:>10} CPU ({:.1}x zinit)",
            interval.as_millis(),
            ms(*cpu),
            cpu.as_secs_f64() / zinit.as_secs_f64().max(1e-6)
        );
    }
    println!();
    bench.figure(
        "waiting_cpu",
        "CPU while waiting 5 s on a tree of 101 that ignores SIGTERM",
        ms(zinit),
        &format!(
            "polling every 10 ms: {}; every 100 ms: {}",
            ms(pollers[0].1),
            ms(pollers[1].1)
        ),
        zinit.as_secs_f64(),
    );
    Ok(())
}

/// A zinit_server on a config directory of its own, killed on drop if it
/// is still running.
struct Server {
    child: std::process::Child,
    dir: PathBuf,
    socket: PathBuf,
    waited: bool,
}

impl Server {
    /// Writes `services` (file name, yaml) and starts a server on them.
    fn start(bench: &Bench, name: &str, services: &[(String, String)]) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("{}-{name}", bench.tag));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("conf"))?;
        for (file, yaml) in services {
            std::fs::write(dir.join("conf").join(format!("{file}.yaml")), yaml)?;
        }
        let socket = dir.join("zinit.sock");
        let child = std::process::Command::new(bench.bins.join("zinit_server"))
            .arg("--config")
            .arg(dir.join("conf"))
            .arg("--socket")
            .arg(&socket)
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Self {
            child,
            dir,
            socket,
            waited: false,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn zinit(&self, bench: &Bench) -> std::process::Command {
        let mut command = std::process::Command::new(bench.bins.join("zinit"));
        command.arg("--socket").arg(&self.socket);
        command
    }

    /// Shuts the server down with `zinit shutdown` and waits for its exit;
    /// an error unless both say clean.
    fn shut_down(&mut self, bench: &Bench, what: &str) -> Result<()> {
        let status = self
            .zinit(bench)
            .arg("shutdown")
            .stdout(Stdio::null())
            .status()?;
        let code = self.wait_exit()?;
        if !status.success() || code != 0 {
            bail!("{what}: the shutdown was not clean (cli {status}, server exit {code})");
        }
        Ok(())
    }

    /// Waits for the server's exit; its exit code.
    fn wait_exit(&mut self) -> Result<i32> {
        let status = self.child.wait()?;
        self.waited = true;
        Ok(status.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
        }))
    }
}

/// Samples a process's VmHWM (its peak RSS so far) and RssAnon every
/// 10 ms until it exits: the last VmHWM read is its peak up to 10 ms before
/// its end, the shutdown included. (A zombie has no memory to report, and
/// `wait4`'s maxrss also counts the children it reaped.)
struct PeakSampler {
    thread: std::thread::JoinHandle<(u64, u64)>,
}

impl PeakSampler {
    fn start(pid: u32) -> Self {
        let thread = std::thread::spawn(move || {
            let (mut peak, mut anon) = (0, 0);
            loop {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let kib = status_kib(&status, "VmHWM:");
                if kib == 0 {
                    return (peak, anon); // a zombie, or gone
                }
                peak = peak.max(kib);
                anon = anon.max(status_kib(&status, "RssAnon:"));
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self { thread }
    }

    /// The peak RSS and the most anonymous memory, in KiB (call after the
    /// process has exited).
    fn finish(self) -> (u64, u64) {
        self.thread.join().unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.waited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits (bounded) until `count` processes carry `tag`.
fn wait_for_processes(tag: &str, count: usize) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(180);
    loop {
        let n = zinit_tests::tagged_trees(tag).len();
        if n >= count {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("only {n} of {count} processes started");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A process's CPU time two ways: utime + stime of `/proc/PID/stat` (every
/// thread, the exited ones included, in clock ticks), and the sum of its
/// live threads' `schedstat` (nanoseconds, to cross-check).
fn server_cpu(pid: u32) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 of stat; utime and stime are fields 14 and 15.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let stat_time = Duration::from_nanos(ticks * 1_000_000_000 / hz);
    let mut sched = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        sched += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (stat_time, Duration::from_nanos(sched))
}

/// The server's CPU over `window` (stat, schedstat).
fn cpu_over(pid: u32, window: Duration) -> (Duration, Duration) {
    let (stat0, sched0) = server_cpu(pid);
    std::thread::sleep(window);
    let (stat1, sched1) = server_cpu(pid);
    (stat1.saturating_sub(stat0), sched1.saturating_sub(sched0))
}

/// One shutdown figure: services × processes each, in a shape.
#[derive(Clone, Copy)]
struct Stack {
    services: usize,
    per: usize,
    deep: bool,
}

impl Stack {
    fn shape(&self) -> Vec<String> {
        if self.deep {
            // Two chains below the root.
            let depth = (self.per - 1) / 2;
            ["--width", "2", "--depth", &depth.to_string()]
                .map(String::from)
                .to_vec()
        } else {
            vec!["--width".into(), (self.per - 1).to_string()]
        }
    }

    fn name(&self) -> String {
        format!(
            "{} services × {} processes ({})",
            self.services,
            self.per,
            if self.deep { "deep" } else { "flat" }
        )
    }
}

/// What one zinit shutdown round measured.
struct Round {
    elapsed: Duration,
    /// VmHWM with everything up, before the shutdown.
    up_kib: u64,
    peak_kib: u64,
    /// The most anonymous memory (heap, stacks) seen during the shutdown:
    /// the rest of the peak is file pages, the binary's and its libraries'.
    peak_anon_kib: u64,
}

async fn shutdowns(bench: &Bench, quick: bool) -> Result<()> {
    println!("4. zinit_server's shutdown of N services × M processes, against the naive stop");
    println!(
        "   {:>8} {:>9} {:>5} {:>11} {:>11} {:>6} {:>9} {:>10} {:>9} {:>10}",
        "services",
        "processes",
        "shape",
        "zinit",
        "baseline",
        "ratio",
        "RSS up",
        "peak RSS",
        "anon",
        "µs/process"
    );
    // A 10,000-process stop holds a descriptor per process; the bench as
    // many for its baseline.
    zinit_process::limits::raise_nofile_limit()?;
    let mut stacks = vec![
        Stack {
            services: 50,
            per: 20,
            deep: false,
        },
        Stack {
            services: 200,
            per: 25,
            deep: false,
        },
        Stack {
            services: 200,
            per: 25,
            deep: true,
        },
    ];
    // A stop holds a pidfd per process (shared with its exit watcher), and
    // so does the baseline: 10,000 processes need a hard limit above
    // ~11,000 (the server raises it as root where it may).
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(_, hard)| hard);
    let biggest = if hard >= 12_000 {
        400
    } else {
        println!(
            "   (the open-file hard limit here is {hard} and cannot be raised: the largest\n    \
             scaling run is 8,000 processes instead of 10,000)"
        );
        320
    };
    let scaling = [
        Stack {
            services: biggest,
            per: 25,
            deep: false,
        },
        Stack {
            services: 1000,
            per: 2,
            deep: false,
        },
    ];
    if !quick {
        stacks.extend(scaling);
    }
    for (i, stack) in stacks.iter().enumerate() {
        // The targets get every round; the scaling runs one.
        let rounds = if i < 3 { bench.rounds } else { 1 };
        let (mut zinit, mut baseline, mut peaks, mut ups, mut anons) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            if round % 2 == 0 {
                let r = zinit_shutdown(bench, stack, i, round)?;
                zinit.push(r.elapsed);
                peaks.push(r.peak_kib);
                ups.push(r.up_kib);
                anons.push(r.peak_anon_kib);
                baseline.push(naive_shutdown(bench, stack).await?);
            } else {
                baseline.push(naive_shutdown(bench, stack).await?);
                let r = zinit_shutdown(bench, stack, i, round)?;
                zinit.push(r.elapsed);
                peaks.push(r.peak_kib);
                ups.push(r.up_kib);
                anons.push(r.peak_anon_kib);
            }
        }
        let (zinit, baseline) = (median(zinit), median(baseline));
        peaks.sort_unstable();
        let peak = peaks[peaks.len() / 2];
        ups.sort_unstable();
        let up = ups[ups.len() / 2];
        anons.sort_unstable();
        let anon = anons[anons.len() / 2];
        let processes = stack.services * stack.per;
        let ratio = zinit.as_secs_f64() / baseline.as_secs_f64();
        println!(
            "   {:>8} {processes:>9} {:>5} {:>11} {:>11} {ratio:>5.2}x {:>9} {:>10} {:>9} {:>10.0}",
            stack.services,
            if stack.deep { "deep" } else { "flat" },
            ms(zinit),
            ms(baseline),
            mib(up),
            mib(peak),
            mib(anon),
            zinit.as_secs_f64() * 1e6 / processes as f64
        );
        bench.figure(
            &format!(
                "shutdown_{}x{}_{}",
                stack.services,
                stack.per,
                if stack.deep { "deep" } else { "flat" }
            ),
            &format!("server shutdown, {}", stack.name()),
            format!(
                "{} ({ratio:.2}×); RSS all up {}, peak with the shutdown {} (anonymous {})",
                ms(zinit),
                mib(up),
                mib(peak),
                mib(anon)
            ),
            &format!("SIGTERM all + pidfds {}", ms(baseline)),
            zinit.as_secs_f64(),
        );
        if i < 2 && ratio > SHUTDOWN_RATIO {
            bench.over(format!(
                "{}: {ratio:.2}× the baseline (bound {SHUTDOWN_RATIO}×)",
                stack.name()
            ));
        }
        if i < 3 && stack.services == 200 && up as f64 / 1024.0 > PEAK_RSS_MIB {
            bench.over(format!(
                "{}: peak RSS with everything up {} (bound {PEAK_RSS_MIB} MiB)",
                stack.name(),
                mib(up)
            ));
        }
        if i < 3 && stack.services == 200 && peak as f64 / 1024.0 > SHUTDOWN_PEAK_RSS_MIB {
            bench.over(format!(
                "{}: peak RSS with the shutdown {} (regression guard {SHUTDOWN_PEAK_RSS_MIB} MiB)",
                stack.name(),
                mib(peak)
            ));
        }
    }
    println!(
        "   (zinit: from the Shutdown request to the server's exit: deepest first, ordered,\n    \
         swept and verified; then an independent scan checks that nothing is left.\n    \
         RSS up: the server's VmHWM with everything up; peak RSS: its VmHWM sampled\n    \
         every 10 ms until it exits (the shutdown included); anon: the most anonymous\n    \
         memory seen meanwhile (the rest is file pages: the binary's code and libc's).\n    \
         baseline: the bench sends SIGTERM to every pid of the same trees, waits on pidfds.\n    \
         µs/process staying flat from 1,000 to 10,000 processes means the cost grows\n    \
         with the units' own size, not with the machine's process count.)\n"
    );
    Ok(())
}

/// One zinit shutdown of `stack`: the time from the request to the
/// server's exit, and its peak RSS.
fn zinit_shutdown(bench: &Bench, stack: &Stack, i: usize, round: usize) -> Result<Round> {
    let tag = format!("{}-sd{i}r{round}", bench.tag);
    let shape = stack.shape().join(" ");
    let services: Vec<(String, String)> = (0..stack.services)
        .map(|n| {
            (
                format!("s{n:04}"),
                format!("exec: {} --tag {tag} {shape}\n", bench.fixture),
            )
        })
        .collect();
    let mut server = Server::start(bench, &format!("sd{i}r{round}"), &services)?;
    let outcome = (|| -> Result<_> {
        wait_for_processes(&tag, stack.services * stack.per)?;
        if round == 0 && stack.services * stack.per == 5000 && !stack.deep {
            // The idle figure of the big stack, all up (section 5 prints it).
            let (stat, sched) = cpu_over(server.pid(), Duration::from_secs(5));
            IDLE_BIG.with(|c| c.set(Some((stat, sched))));
        }
        let up_kib = vm_kib(server.pid(), "VmHWM:");
        settle();
        let sampler = PeakSampler::start(server.pid());
        let start = Instant::now();
        let shut = server.shut_down(bench, &stack.name());
        let elapsed = start.elapsed();
        let (peak_kib, peak_anon_kib) = sampler.finish();
        let peak_kib = peak_kib.max(up_kib);
        shut?;
        let left = zinit_tests::tagged_trees(&tag);
        if !left.is_empty() {
            bail!(
                "an independent scan found {} processes left: {left:?}",
                left.len()
            );
        }
        Ok(Round {
            elapsed,
            up_kib,
            peak_kib,
            peak_anon_kib,
        })
    })();
    zinit_tests::reap_tagged(&tag, Duration::from_secs(10));
    outcome
}

thread_local! {
    static IDLE_BIG: std::cell::Cell<Option<(Duration, Duration)>> = const { std::cell::Cell::new(None) };
}

/// Waits (at most 5 s) until the machine's CPUs were at least 90 % idle
/// over 200 ms: neither side of a comparison starts while the work of the
/// step before it (a thousand processes starting, a server reading their
/// output, the kernel tearing down the cgroups of the last run) still
/// competes for the two cores.
fn settle() {
    fn busy_idle() -> (u64, u64) {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        (ticks.iter().sum::<u64>() - idle, idle)
    }
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        let (busy0, idle0) = busy_idle();
        std::thread::sleep(Duration::from_millis(200));
        let (busy1, idle1) = busy_idle();
        let (busy, idle) = (busy1 - busy0, idle1 - idle0);
        if busy * 9 <= idle {
            return;
        }
    }
}

/// The baseline: the same trees, started by the bench, stopped naively.
async fn naive_shutdown(bench: &Bench, stack: &Stack) -> Result<Duration> {
    let shape = stack.shape();
    let shape: Vec<&str> = shape.iter().map(String::as_str).collect();
    let mut roots = Vec::new();
    for _ in 0..stack.services {
        roots.push(Tree::start(bench, &shape)?);
    }
    let pids: Vec<i32> = roots.iter().flat_map(|t| t.pids.iter().copied()).collect();
    settle();
    let start = Instant::now();
    naive_stop(&pids).await?;
    let elapsed = start.elapsed();
    for mut root in roots {
        let _ = root.child.wait().await;
    }
    Ok(elapsed)
}

fn idle(bench: &Bench) -> Result<()> {
    println!("5. the server's CPU while idle for 5 s (utime+stime of /proc/PID/stat / schedstat)");
    if let Some((stat, sched)) = IDLE_BIG.with(|c| c.get()) {
        println!(
            "   200 quiet services, 5,000 processes:                      {:>9} / {:>9}",
            ms(stat),
            ms(sched)
        );
        bench.figure(
            "idle_quiet",
            "server CPU while idle 5 s, 200 quiet services (5,000 processes)",
            format!("{} (schedstat {})", ms(stat), ms(sched)),
            "",
            stat.as_secs_f64(),
        );
    }
    let tag = format!("{}-idle", bench.tag);
    let mut services = Vec::new();
    for n in 0..20 {
        services.push((
            format!("log{n:02}"),
            format!("exec: sh -c 'while :; do echo tick; sleep 1; done' {tag}\n"),
        ));
    }
    for n in 0..10 {
        services.push((
            format!("ready{n:02}"),
            format!("exec: sh -c 'exec sleep 1000' {tag}\ntest: sh -c 'true' {tag}\n"),
        ));
    }
    for n in 0..10 {
        services.push((
            format!("done{n:02}"),
            format!("exec: sh -c 'exit 0' {tag}\noneshot: true\n"),
        ));
    }
    for n in 0..10 {
        services.push((
            format!("exited{n:02}"),
            format!("exec: sh -c 'exit 3' {tag}\nrestart: never\n"),
        ));
    }
    let mut server = Server::start(bench, "idle", &services)?;
    let outcome = {
        // Everything started, the readiness tests passed, the exits seen.
        std::thread::sleep(Duration::from_secs(3));
        let (stat, sched) = cpu_over(server.pid(), Duration::from_secs(5));
        println!(
            "   20 logging 1 line/s, 10 after readiness, 20 exited:       {:>9} / {:>9}",
            ms(stat),
            ms(sched)
        );
        println!(
            "   (the first needs 0: nothing to do; the second is the cost of 100 log lines)\n"
        );
        bench.figure(
            "idle_busy",
            "server CPU over 5 s: 20 services logging 1 line/s, 10 after readiness tests, 20 exited",
            format!("{} (schedstat {})", ms(stat), ms(sched)),
            "",
            stat.as_secs_f64(),
        );
        server.shut_down(bench, "the idle stack")
    };
    zinit_tests::reap_tagged(&tag, Duration::from_secs(10));
    outcome
}

fn vm_kib(pid: u32, key: &str) -> u64 {
    status_kib(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default(),
        key,
    )
}

/// A `kB` line of a `/proc/PID/status` text, or 0.
fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn log_flood(bench: &Bench) -> Result<()> {
    println!("6. the server's RSS under a log flood (64 KiB lines, as fast as python3 writes)");
    let tag = format!("{}-flood", bench.tag);
    let script = std::env::temp_dir().join(format!("{tag}.py"));
    std::fs::write(
        &script,
        "import sys\nline = 'x' * 65535 + '\\n'\nwhile True:\n    sys.stdout.write(line)\n",
    )?;
    let writer = format!("exec: python3 {} {tag}\n", script.display());
    let server = Server::start(bench, "flood", &[("flood".to_string(), writer)]);
    let mut server = match server {
        Ok(server) => server,
        Err(e) => {
            let _ = std::fs::remove_file(&script);
            return Err(e);
        }
    };
    let pid = server.pid();
    let outcome = (|| -> Result<_> {
        std::thread::sleep(Duration::from_secs(3));
        let rest = vm_kib(pid, "VmRSS:");
        let spawn_followers = |stalled: bool| -> Result<Vec<std::process::Child>> {
            (0..50)
                .map(|_| {
                    let stdout = if stalled {
                        Stdio::piped()
                    } else {
                        Stdio::null()
                    };
                    // The tag in argv[0]: the CLI takes no extra argument.
                    Ok(server
                        .zinit(bench)
                        .arg0(format!("zinit-{tag}"))
                        .args(["logs", "-f", "flood"])
                        .stdout(stdout)
                        .stderr(Stdio::null())
                        .spawn()?)
                })
                .collect()
        };
        let end_all = |children: Vec<std::process::Child>| {
            for mut child in children {
                let _ = child.kill();
                let _ = child.wait();
            }
        };
        let reading = spawn_followers(false)?;
        std::thread::sleep(Duration::from_secs(5));
        let with_reading = vm_kib(pid, "VmRSS:");
        end_all(reading);
        let stalled = spawn_followers(true)?;
        std::thread::sleep(Duration::from_secs(5));
        let with_stalled = vm_kib(pid, "VmRSS:");
        end_all(stalled);
        std::thread::sleep(Duration::from_secs(2));
        let after = vm_kib(pid, "VmRSS:");
        let peak = vm_kib(pid, "VmHWM:");
        println!(
            "   no follower {} · 50 reading {} · 50 stalled {} · after they left {} · peak {}",
            mib(rest),
            mib(with_reading),
            mib(with_stalled),
            mib(after),
            mib(peak)
        );
        println!(
            "   (bounds: {FLOOD_RSS_MIB} MiB at the peak, for up to 64 followers; at most {FLOOD_KEPT_MIB} MiB\n    \
             more than before once they left. Followers read the shared rings: only a\n    \
             line or so each waits for its client)\n"
        );
        bench.figure(
            "log_flood",
            "server RSS under a 64 KiB-line flood: no follower / 50 reading / 50 stalled / after",
            format!(
                "{} / {} / {} / {}",
                mib(rest),
                mib(with_reading),
                mib(with_stalled),
                mib(after)
            ),
            &format!("bounds: {FLOOD_RSS_MIB} MiB at the peak; given back once the followers left"),
            peak as f64,
        );
        if peak as f64 / 1024.0 > FLOOD_RSS_MIB {
            bench.over(format!(
                "log flood: peak RSS {} (bound {FLOOD_RSS_MIB} MiB)",
                mib(peak)
            ));
        }
        if after.saturating_sub(rest) as f64 / 1024.0 > FLOOD_KEPT_MIB {
            bench.over(format!(
                "log flood: {} kept after the followers left ({} before them)",
                mib(after),
                mib(rest)
            ));
        }
        server.shut_down(bench, "the flood")
    })();
    zinit_tests::reap_tagged(&tag, Duration::from_secs(10));
    let _ = std::fs::remove_file(&script);
    outcome
}

/// The real programs of section 7: (name, argv), each carrying `tag`.
fn programs(tag: &str) -> Vec<(String, Vec<String>)> {
    let mut list = Vec::new();
    for n in 0..10 {
        list.push((
            format!("sleep{n}"),
            vec![
                "sh".into(),
                "-c".into(),
                "sleep 1000 & sleep 1000 & wait".into(),
                tag.into(),
            ],
        ));
        list.push((
            format!("trap{n}"),
            vec![
                "sh".into(),
                "-c".into(),
                "trap 'exit 0' TERM; while :; do sleep 1; done".into(),
                tag.into(),
            ],
        ));
        list.push((
            format!("py{n}"),
            vec![
                "python3".into(),
                "-c".into(),
                "import time\nwhile True: time.sleep(1)".into(),
                tag.into(),
            ],
        ));
    }
    list
}

async fn real_programs(bench: &Bench) -> Result<()> {
    println!("7. real programs: 10 × sh with two sleeps, 10 × sh with a TERM trap, 10 × python3");
    let tag = format!("{}-real", bench.tag);
    let list = programs(&tag);
    // Split like a shell by zinit: double-quote what has spaces; the line
    // goes in a single-quoted YAML scalar.
    let yaml = |argv: &[String]| {
        let words: Vec<String> = argv
            .iter()
            .map(|a| {
                if a.contains([' ', ';', '&', '\'', '(']) {
                    format!("\"{a}\"")
                } else {
                    a.clone()
                }
            })
            .collect();
        format!("exec: '{}'\n", words.join(" ").replace('\'', "''"))
    };
    let services: Vec<(String, String)> = list
        .iter()
        .map(|(name, argv)| (name.clone(), yaml(argv)))
        .collect();
    let mut server = Server::start(bench, "real", &services)?;
    let outcome = async {
        // 10 × 3 + 10 × 2 + 10 × 1 processes.
        wait_for_processes(&tag, 60)?;
        std::thread::sleep(Duration::from_millis(500));
        let start = Instant::now();
        let out = server
            .zinit(bench)
            .args(["--json", "shutdown"])
            .stderr(Stdio::null())
            .output()?;
        let code = server.wait_exit()?;
        let zinit = start.elapsed();
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["kind"] == "summary")
            .context("no summary in `zinit --json shutdown`")?;
        let killed = summary["processes_killed"].as_u64().unwrap_or(u64::MAX);
        let graceful = summary["processes_graceful"].as_u64().unwrap_or(0);
        if code != 0 || killed != 0 {
            bail!("real programs: server exit {code}, {killed} killed: {summary}");
        }
        let left = zinit_tests::tagged_trees(&tag);
        if !left.is_empty() {
            bail!("an independent scan found {} processes left", left.len());
        }
        // The baseline: the same programs, started by the bench.
        let mut children = Vec::new();
        for (_, argv) in &list {
            children.push(
                std::process::Command::new(&argv[0])
                    .args(&argv[1..])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
            );
        }
        wait_for_processes(&tag, 60)?;
        std::thread::sleep(Duration::from_millis(500));
        let pids = zinit_tests::tagged_trees(&tag);
        let start = Instant::now();
        naive_stop(&pids).await?;
        let naive = start.elapsed();
        for mut child in children {
            let _ = child.wait();
        }
        println!(
            "   zinit: {} ({graceful} processes graceful, 0 killed) · SIGTERM all + pidfds: {}\n",
            ms(zinit),
            ms(naive)
        );
        bench.figure(
            "real_programs",
            "server shutdown of 30 real programs (sh + sleep, sh with a trap, python3; 60 processes)",
            format!("{} ({graceful} graceful, 0 killed)", ms(zinit)),
            &format!("SIGTERM all + pidfds {}", ms(naive)),
            zinit.as_secs_f64(),
        );
        Ok(())
    }
    .await;
    zinit_tests::reap_tagged(&tag, Duration::from_secs(10));
    outcome
}
