//! `cargo xtask demo`: starts a small stack of real process trees and stops
//! them all with live progress, then checks that nothing is left.
//!
//! Until the server exists this drives the process layer directly: each
//! "service" is a fixture tree in its own cgroup (where the host allows it),
//! stopped deepest first with its own signal, mode and timeout, all in
//! parallel.

use anyhow::{Result, bail};
use std::time::{Duration, Instant};
use zinit_process::spawn::Output;
use zinit_process::stop::{StopEvent, StopMode, StopSpec, stop};
use zinit_process::{CgroupRoot, Command, Members, Signal};

struct Service {
    name: &'static str,
    args: &'static [&'static str],
    spec: StopSpec,
}

fn stack() -> Vec<Service> {
    let spec = |timeout_ms, mode| StopSpec {
        timeout: Duration::from_millis(timeout_ms),
        mode,
        ..StopSpec::default()
    };
    vec![
        Service {
            name: "database",
            args: &[
                "--width",
                "4",
                "--depth",
                "1",
                "--term-delay-ms",
                "800",
                "--delay-scope",
                "root",
                "--tcp",
                "0",
            ],
            spec: spec(10_000, StopMode::Tree),
        },
        Service {
            name: "api",
            args: &["--width", "3", "--depth", "3"],
            spec: spec(5_000, StopMode::Tree),
        },
        Service {
            name: "workers",
            args: &["--width", "8", "--depth", "2", "--respawn"],
            spec: spec(5_000, StopMode::Group),
        },
        Service {
            name: "stubborn",
            args: &["--width", "2", "--depth", "2", "--ignore-term", "all"],
            spec: spec(2_000, StopMode::Tree),
        },
    ]
}

pub fn run() -> Result<()> {
    zinit_process::limits::raise_nofile_limit()?;
    let fixture = crate::bench::build_fixture()?;
    let tag = format!("zdemo-{}", std::process::id());
    let cgroups = CgroupRoot::detect_as(&tag);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(demo(&fixture, &tag, cgroups.as_ref()));
    crate::bench::reap_tag(&tag);
    if let Some(root) = &cgroups {
        let _ = root.remove();
    }
    result
}

async fn demo(fixture: &str, tag: &str, cgroups: Option<&CgroupRoot>) -> Result<()> {
    println!(
        "zinit demo: process layer ({})\n",
        if cgroups.is_some() {
            "one cgroup v2 per service"
        } else {
            "process groups, no cgroups"
        }
    );
    let mut running = Vec::new();
    println!(
        "{:<10} {:>6} {:>6}  {:<8} {:>8}",
        "SERVICE", "PID", "PROCS", "MODE", "TIMEOUT"
    );
    for service in stack() {
        let mut command = Command::new(fixture)
            .args(["--tag", tag])
            .args(service.args)
            .stdout(Output::Piped);
        if let Some(root) = cgroups {
            command = command.cgroup(root.create(service.name)?);
        }
        let mut child = command.spawn()?;
        let stdout = std::fs::File::from(child.take_stdout().expect("piped"));
        let count = std::io::BufRead::lines(std::io::BufReader::new(stdout))
            .map_while(Result::ok)
            .take_while(|l| !l.starts_with("ready"))
            .count();
        println!(
            "{:<10} {:>6} {:>6}  {:<8} {:>7.1}s",
            service.name,
            child.pid(),
            count,
            format!("{:?}", service.spec.mode).to_lowercase(),
            service.spec.timeout.as_secs_f64()
        );
        running.push((service, child));
    }

    println!("\nshutting down every service in parallel:");
    let start = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(&'static str, StopEvent)>();
    let mut stops = tokio::task::JoinSet::new();
    for (service, mut child) in running {
        let tx = tx.clone();
        stops.spawn(async move {
            let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
            let forward = tokio::spawn(async move {
                while let Some(event) = events_rx.recv().await {
                    let _ = tx.send((service.name, event));
                }
            });
            let members = Members::of_child(&child);
            let report = stop(&members, &service.spec, Some(&events_tx)).await;
            drop(events_tx);
            let _ = forward.await;
            let _ = child.wait().await;
            (service.name, report)
        });
    }
    drop(tx);
    let printer = tokio::spawn(async move {
        while let Some((name, event)) = rx.recv().await {
            match event {
                StopEvent::Signalled {
                    pid,
                    depth,
                    signal,
                    at,
                    ..
                } if depth == 0 || signal == Signal::SIGKILL => println!(
                    "  {:>6.2}s {name:<9} {} -> pid {pid} (depth {depth})",
                    at.as_secs_f64(),
                    signal.as_str()
                ),
                StopEvent::Waiting { remaining, at } => println!(
                    "  {:>6.2}s {name:<9} waiting for {} process(es), first: pid {} ({})",
                    at.as_secs_f64(),
                    remaining.len(),
                    remaining[0].0,
                    remaining[0].1
                ),
                StopEvent::Escalating { remaining, at } => println!(
                    "  {:>6.2}s {name:<9} timeout: freezing and killing {remaining} process(es)",
                    at.as_secs_f64()
                ),
                _ => {}
            }
        }
    });
    let mut failed = false;
    while let Some(done) = stops.join_next().await {
        let (name, report) = done?;
        let report = report?;
        let (exited, killed) = report.exit_counts();
        println!(
            "  {:>6.2}s {name:<9} stopped: {:?}, {exited} processes exited ({killed} killed) in {:.2}s",
            start.elapsed().as_secs_f64(),
            report.outcome,
            report.elapsed.as_secs_f64()
        );
        failed |= !report.leftovers.is_empty();
    }
    let _ = printer.await;
    let left = zinit_process::ProcessTable::snapshot(zinit_process::Detail::Full)?
        .iter()
        .filter(|p| p.cmdline.iter().any(|a| a == tag))
        .count();
    println!(
        "\nall services stopped in {:.2}s; processes left: {left}",
        start.elapsed().as_secs_f64()
    );
    if failed || left > 0 {
        bail!("the demo left processes behind");
    }
    Ok(())
}
