//! `cargo xtask bench`: the process layer's numbers, each against a baseline
//! measured in the same run on the same trees.
//!
//! - one process-table snapshot at ~1,000 and ~10,000 processes, against a
//!   full `sysinfo` process refresh;
//! - stopping a polite tree of ~1,000 processes deepest first, against the
//!   naive stop (SIGTERM every pid at once, then wait on pidfds);
//! - the CPU time spent waiting 5 s on a tree that ignores SIGTERM, against a
//!   10 ms polling loop.

use anyhow::{Context, Result, bail};
use std::io::BufRead;
use std::time::{Duration, Instant};
use zinit_process::spawn::Output;
use zinit_process::stop::{StopSpec, stop};
use zinit_process::{
    CgroupRoot, Child, Command, Detail, Members, ProcessHandle, ProcessId, ProcessTable, Signal,
};

#[derive(clap::Args)]
pub struct Args {
    /// Skip the 10,000-process snapshot (it needs ~10,000 free pids).
    #[arg(long)]
    quick: bool,
}

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
        reap_tag(&self.tag);
        let _ = self.child.try_wait();
    }
}

/// Kills every process whose argv carries `tag`, and their descendants.
pub fn reap_tag(tag: &str) {
    zinit_tests::reap_tagged(tag, Duration::from_secs(10));
}

pub fn build_fixture() -> Result<String> {
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

/// What every benchmark needs: the fixture, a tag, and cgroups where the host has them.
struct Bench {
    fixture: String,
    tag: String,
    cgroups: Option<CgroupRoot>,
    trees: std::sync::atomic::AtomicUsize,
}

pub fn run(args: Args) -> Result<()> {
    zinit_process::limits::raise_nofile_limit()?;
    let tag = format!("zbench-{}", std::process::id());
    let bench = Bench {
        fixture: build_fixture()?,
        cgroups: CgroupRoot::detect_as(&tag),
        tag,
        trees: Default::default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mode = match &bench.cgroups {
        Some(root) => format!("cgroup v2 mode, under {}", root.path().display()),
        None => "fallback mode (no writable cgroup v2, or ZINIT_CGROUP=off)".to_string(),
    };
    println!("zinit-process benchmarks, {mode}; baselines measured in the same run\n");
    let result = (|| {
        snapshots(&bench, args.quick)?;
        runtime.block_on(stop_polite(&bench))?;
        runtime.block_on(waiting_cpu(&bench))?;
        let sizes: &[(usize, usize)] = if args.quick {
            &[(50, 20)]
        } else {
            &[(50, 20), (200, 25)]
        };
        println!(
            "4. zinit_server shutdown of N services × M processes (polite trees), release build"
        );
        println!(
            "   {:>8} {:>10} {:>12} {:>12} {:>7} {:>11} {:>13}",
            "services", "processes", "zinit", "baseline", "ratio", "peak RSS", "idle CPU in 5s"
        );
        for &(services, per) in sizes {
            runtime.block_on(shutdown_bench(&bench, services, per))?;
        }
        println!(
            "   (zinit: from the Shutdown request to the server's exit, ordered and verified;\n    \
             baseline: the bench sends SIGTERM to every pid of the same trees and waits on pidfds)"
        );
        Ok(())
    })();
    reap_tag(&bench.tag);
    if let Some(root) = &bench.cgroups {
        let _ = root.remove();
    }
    result
}

fn snapshots(bench: &Bench, quick: bool) -> Result<()> {
    println!("1. one process-table snapshot");
    println!(
        "   {:>9} {:>14} {:>14} {:>16} {:>8}",
        "processes", "zinit basic", "zinit full", "sysinfo refresh", "ratio"
    );
    let sizes: &[(&str, &str)] = if quick {
        &[("100", "10")]
    } else {
        &[("100", "10"), ("1000", "10")]
    };
    for (width, depth) in sizes {
        let _tree = Tree::start(bench, &["--width", width, "--depth", depth])?;
        let count = ProcessTable::snapshot(Detail::Basic)?.len();
        let basic = time(9, || {
            let _ = ProcessTable::snapshot(Detail::Basic);
        });
        let full = time(9, || {
            let _ = ProcessTable::snapshot(Detail::Full);
        });
        let mut system = sysinfo::System::new().context("sysinfo")?;
        let kind = sysinfo::ProcessRefreshKind::everything().without_tasks();
        system.refresh_processes_specifics(sysinfo::ProcessesToUpdate::All, true, kind);
        let sysinfo = time(9, || {
            system.refresh_processes_specifics(sysinfo::ProcessesToUpdate::All, true, kind);
        });
        println!(
            "   {count:>9} {:>14} {:>14} {:>16} {:>7.1}x",
            ms(basic),
            ms(full),
            ms(sysinfo),
            sysinfo.as_secs_f64() / full.as_secs_f64()
        );
    }
    println!("   (ratio: sysinfo full refresh time / zinit full snapshot time; medians of 9)\n");
    Ok(())
}

async fn stop_polite(bench: &Bench) -> Result<()> {
    println!("2. stopping a polite tree of 1,001 processes (100 chains of 10)");
    let shape = ["--width", "100", "--depth", "10"];

    let mut tree = Tree::start(bench, &shape)?;
    let start = Instant::now();
    let members = Members::of_child(&tree.child);
    let report = stop(&members, &StopSpec::default(), None).await?;
    tree.child.wait().await?;
    let zinit = start.elapsed();
    let (exited, killed) = report.exit_counts();
    if std::env::var("ZINIT_BENCH_DEBUG").is_ok() {
        let mut first: std::collections::BTreeMap<usize, Duration> = Default::default();
        let mut last_exit: std::collections::BTreeMap<usize, Duration> = Default::default();
        for e in &report.events {
            match e {
                zinit_process::StopEvent::Signalled { depth, at, .. } => {
                    first.entry(*depth).or_insert(*at);
                }
                zinit_process::StopEvent::Exited { depth, at, .. } => {
                    last_exit.insert(*depth, *at);
                }
                _ => {}
            }
        }
        eprintln!("first signal per depth {first:?}\nlast exit per depth {last_exit:?}");
    }
    drop(tree);

    let mut tree = Tree::start(bench, &shape)?;
    let start = Instant::now();
    naive_stop(&tree.pids).await?;
    tree.child.wait().await?;
    let naive = start.elapsed();
    drop(tree);

    println!(
        "   zinit, deepest first:          {:>10}  ({exited} exited, {killed} killed)",
        ms(zinit)
    );
    println!("   naive, SIGTERM all + pidfds:   {:>10}", ms(naive));
    println!(
        "   ratio: {:.1}x (deepest first waits for each of 11 levels; the naive stop \
         orphans children mid-stop and gives no order)\n",
        zinit.as_secs_f64() / naive.as_secs_f64()
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
    let mut watcher = zinit_process::watch::ExitWatcher::new()?;
    for handle in &handles {
        watcher.add(handle)?;
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

    let tree = Tree::start(bench, &shape)?;
    let handles: Vec<ProcessHandle> = tree
        .pids
        .iter()
        .filter_map(|&pid| ProcessHandle::open(ProcessId::of(pid)?).ok())
        .collect();
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
        std::thread::sleep(Duration::from_millis(10));
    }
    let polling = cpu_time() - cpu;
    for handle in &handles {
        let _ = handle.signal(Signal::SIGKILL);
    }
    drop(tree);

    println!(
        "   zinit (pidfds + epoll, 1 s progress rescans): {:>10} CPU",
        ms(zinit)
    );
    println!(
        "   polling every 10 ms:                          {:>10} CPU",
        ms(polling)
    );
    println!(
        "   ratio: {:.1}x less CPU\n",
        polling.as_secs_f64() / zinit.as_secs_f64().max(1e-6)
    );
    Ok(())
}

/// Waits (bounded) until `count` processes carry `tag`.
fn wait_for_processes(tag: &str, count: usize) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let n = crate::demo::tagged(tag).len();
        if n >= count {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("only {n} of {count} processes started");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time of a process, all threads, in nanoseconds (`/proc/PID/schedstat`).
fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

async fn shutdown_bench(bench: &Bench, services: usize, per: usize) -> Result<()> {
    let bins = crate::install::build_release(true)?;
    let tag = format!("{}-sd{services}", bench.tag);
    let dir = std::env::temp_dir().join(&tag);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("conf"))?;
    let width = (per - 1).to_string();
    for i in 0..services {
        std::fs::write(
            dir.join(format!("conf/s{i:03}.yaml")),
            format!(
                "exec: {} --tag {tag} --width {width}\n",
                bins.join("zinit-fixture").display()
            ),
        )?;
    }
    let socket = dir.join("zinit.sock");
    let mut server = std::process::Command::new(bins.join("zinit_server"))
        .arg("--config")
        .arg(dir.join("conf"))
        .arg("--socket")
        .arg(&socket)
        .args(["--log-level", "error"])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let outcome = async {
        wait_for_processes(&tag, services * per)?;
        let pid = server.id();
        let cpu_before = cpu_ns(pid);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let idle_cpu = cpu_ns(pid).saturating_sub(cpu_before) as f64 / 1e9;
        let mut peak_kib = proc_field(pid, "status", "VmHWM:").unwrap_or(0);
        let start = Instant::now();
        let status = std::process::Command::new(bins.join("zinit"))
            .arg("--socket")
            .arg(&socket)
            .arg("shutdown")
            .stdout(std::process::Stdio::null())
            .status()?;
        peak_kib = peak_kib.max(proc_field(pid, "status", "VmHWM:").unwrap_or(0));
        let exit = server.wait()?;
        let zinit = start.elapsed();
        if !status.success() || !exit.success() {
            bail!("the shutdown was not clean (cli {status}, server {exit})");
        }
        // The baseline on the same trees.
        let mut roots = Vec::new();
        for _ in 0..services {
            roots.push(Tree::start(bench, &["--width", &width])?);
        }
        let pids: Vec<i32> = roots.iter().flat_map(|t| t.pids.iter().copied()).collect();
        let start = Instant::now();
        naive_stop(&pids).await?;
        let baseline = start.elapsed();
        for mut root in roots {
            let _ = root.child.wait().await;
        }
        println!(
            "   {services:>8} {:>10} {:>12} {:>12} {:>6.2}x {:>7.1} MiB {:>10.2} ms",
            services * per,
            ms(zinit),
            ms(baseline),
            zinit.as_secs_f64() / baseline.as_secs_f64(),
            peak_kib as f64 / 1024.0,
            idle_cpu * 1e3
        );
        Ok(())
    }
    .await;
    let _ = server.kill();
    let _ = server.wait();
    reap_tag(&tag);
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}
