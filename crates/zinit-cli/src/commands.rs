//! One function per command: call the server, print the answer.

use crate::output::{self, print_json, unit_json};
use crate::{Cli, Command, Failure, code};
use serde_json::json;
use zinit_client::{Client, Target};
use zinit_proto::v1 as pb;

/// Where the command line says the server is.
fn target(cli: &Cli) -> Target {
    match (&cli.tcp, &cli.token_file) {
        (Some(addr), Some(token_file)) => Target::Tcp {
            addr: *addr,
            token_file: token_file.clone(),
        },
        _ => Target::Unix(zinit_client::socket_path(cli.socket.as_deref())),
    }
}

pub async fn run(cli: Cli) -> Result<u8, Failure> {
    let target = target(&cli);
    if let Command::Health { wait } = &cli.command {
        let wait = wait
            .as_deref()
            .map(crate::shutdown::parse_duration)
            .transpose()?;
        return health(&target, wait, cli.json).await;
    }
    let mut client = zinit_client::connect_to(&target).await?;
    let json = cli.json;
    match cli.command {
        Command::List | Command::Status { name: None } => {
            let units = client
                .list_units(pb::ListUnitsRequest {})
                .await?
                .into_inner()
                .units;
            output::print_units("units", &units, json);
        }
        Command::Status { name: Some(name) } => {
            let unit = client
                .get_unit(pb::GetUnitRequest { name })
                .await?
                .into_inner()
                .unit
                .unwrap_or_default();
            output::print_unit(&unit, json);
        }
        Command::Start {
            name,
            no_wait,
            timeout,
        } => {
            let timeout = crate::shutdown::parse_duration(&timeout)?;
            let mut call = client.clone();
            let unit = crate::starting::wait(&client, &name, timeout, async {
                Ok(call
                    .start_unit(pb::StartUnitRequest {
                        name: name.clone(),
                        no_wait,
                    })
                    .await?
                    .into_inner()
                    .unit
                    .unwrap_or_default())
            })
            .await?;
            return started(&unit, !no_wait, json);
        }
        Command::Stop { name } => return crate::stopping::stop(&mut client, name, json).await,
        Command::Restart { name, timeout } => {
            let timeout = crate::shutdown::parse_duration(&timeout)?;
            let mut call = client.clone();
            let unit = crate::starting::wait(&client, &name, timeout, async {
                Ok(call
                    .restart_unit(pb::RestartUnitRequest { name: name.clone() })
                    .await?
                    .into_inner()
                    .unit
                    .unwrap_or_default())
            })
            .await?;
            return started(&unit, true, json);
        }
        Command::Add {
            file,
            no_wait,
            timeout,
        } => {
            let timeout = crate::shutdown::parse_duration(&timeout)?;
            return add(&mut client, &file, json, (!no_wait).then_some(timeout)).await;
        }
        Command::Remove { name } => return crate::stopping::remove(&mut client, name, json).await,
        Command::Reload { dry_run } => {
            let r = client
                .reload(pb::ReloadRequest { dry_run })
                .await?
                .into_inner();
            reloaded(&r, json);
        }
        Command::Kill { name, signal, all } => {
            let pids = client
                .signal_unit(pb::SignalUnitRequest {
                    name,
                    signal: signal.unwrap_or_default(),
                    all,
                })
                .await?
                .into_inner()
                .pids;
            if json {
                print_json(&json!({ "pids": pids }));
            } else {
                outln!(
                    "signalled {}",
                    pids.iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
        }
        Command::Logs {
            name,
            follow,
            lines,
        } => {
            let request = pb::StreamLogsRequest {
                name: name.unwrap_or_default(),
                // Unset: every kept line; `-n 0`: none, as `tail -n 0`.
                last: lines,
                follow,
            };
            let mut stream = client.stream_logs(request).await?.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(line)) => print_log(&line, json),
                    Ok(None) => break,
                    Err(status) if follow => {
                        return Err(Failure::new(
                            code::STREAM_CUT,
                            format!("the log stream was cut: {}", status.message()),
                        ));
                    }
                    Err(status) => return Err(status.into()),
                }
            }
        }
        Command::Events => {
            let mut stream = client
                .stream_events(pb::StreamEventsRequest {})
                .await?
                .into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(event)) => print_event(&event, json),
                    Ok(None) => return Ok(code::OK),
                    Err(status) => {
                        return Err(Failure::new(
                            code::STREAM_CUT,
                            format!("the event stream was cut: {}", status.message()),
                        ));
                    }
                }
            }
        }
        Command::Job(job) => return crate::job::run(&mut client, job, json).await,
        Command::Stats { name } => {
            let stats = client
                .get_stats(pb::GetStatsRequest {
                    name: name.unwrap_or_default(),
                })
                .await?
                .into_inner()
                .stats;
            if json {
                let list: Vec<_> = stats
                    .iter()
                    .map(|s| json!({ "name": s.name, "processes": s.processes, "cpu_percent": s.cpu_percent, "memory_bytes": s.memory_bytes }))
                    .collect();
                print_json(&json!({ "stats": list }));
            } else {
                let width = stats.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
                outln!(
                    "{:<width$}  {:>5} {:>7} {:>10}",
                    "NAME",
                    "PROCS",
                    "CPU%",
                    "MEMORY"
                );
                for s in &stats {
                    outln!(
                        "{:<width$}  {:>5} {:>7.1} {:>9.1}M",
                        s.name,
                        s.processes,
                        s.cpu_percent,
                        s.memory_bytes as f64 / (1024.0 * 1024.0)
                    );
                }
            }
        }
        Command::Shutdown {
            timeout,
            force,
            dry_run,
            watch,
        } => {
            let request = crate::shutdown::Request {
                timeout,
                force,
                dry_run,
                watch,
                reboot: false,
            };
            return crate::shutdown::run(client, &target, request, json).await;
        }
        Command::Reboot {
            timeout,
            force,
            dry_run,
        } => {
            let request = crate::shutdown::Request {
                timeout,
                force,
                dry_run,
                watch: false,
                reboot: true,
            };
            return crate::shutdown::run(client, &target, request, json).await;
        }
        Command::Info => {
            let info = client
                .server_info(pb::ServerInfoRequest {})
                .await?
                .into_inner();
            let takeover = info.takeover.clone().unwrap_or_default();
            if json {
                print_json(&json!({
                    "pid": info.pid,
                    "version": info.version,
                    "start_time": output::rfc3339(info.start_time.as_ref()),
                    "config_dir": info.config_dir,
                    "cgroups": info.cgroups,
                    "socket": info.socket,
                    "takeover": {
                        "from_pid": (takeover.from_pid != 0).then_some(takeover.from_pid),
                        "adopted": takeover.adopted,
                        "stopped": takeover.stopped,
                        "thawed": takeover.thawed,
                        "finishing_shutdown": takeover.finishing_shutdown,
                        "notes": takeover.notes,
                    },
                }));
            } else {
                outln!("zinit_server {} (pid {})", info.version, info.pid);
                outln!("  socket:  {}", info.socket);
                outln!("  config:  {}", info.config_dir);
                outln!(
                    "  cgroups: {}",
                    if info.cgroups {
                        "yes"
                    } else {
                        "no (process groups)"
                    }
                );
                if takeover.from_pid != 0 || !takeover.adopted.is_empty() {
                    println!(
                        "  took over from pid {}: adopted {}; stopped {}; thawed {}{}",
                        takeover.from_pid,
                        list_or_none(&takeover.adopted),
                        list_or_none(&takeover.stopped),
                        takeover.thawed,
                        if takeover.finishing_shutdown {
                            "; finishing its shutdown"
                        } else {
                            ""
                        }
                    );
                }
                for note in &takeover.notes {
                    println!("  note: {note}");
                }
            }
        }
        Command::Completions { .. } | Command::Health { .. } => {
            unreachable!("handled before connecting")
        }
    }
    Ok(code::OK)
}

/// Warnings of the server's answer, on stderr.
fn warn(warnings: &[String]) {
    for warning in warnings {
        output::write_err_line(&format!("zinit: warning: {warning}"));
    }
}

/// Shows a unit after a start or restart. Failed (or, when the start
/// waited, blocked on a dependency that is not coming) is an error.
fn started(unit: &pb::Unit, waited: bool, json: bool) -> Result<u8, Failure> {
    if json {
        print_json(&unit_json(unit));
    }
    let failed = unit.state == pb::UnitState::Failed as i32;
    let blocked = waited && unit.state == pb::UnitState::Blocked as i32;
    if failed || blocked {
        return Err(Failure::new(
            code::ERROR,
            format!(
                "{} {}: {}",
                unit.name,
                if failed { "failed" } else { "cannot start" },
                unit.reason
            ),
        ));
    }
    if !json {
        outln!("{}", output::started_line(unit));
    }
    Ok(code::OK)
}

/// `zinit add FILE`: the file is added whatever happens next; a service
/// that cannot start is an error that says so. With `wait`, it then waits
/// (at most that long) until the service runs (ready) or cannot, as
/// `start` does.
async fn add(
    client: &mut Client,
    file: &std::path::Path,
    json: bool,
    wait: Option<std::time::Duration>,
) -> Result<u8, Failure> {
    let content = std::fs::read_to_string(file)
        .map_err(|e| Failure::new(code::ERROR, format!("cannot read {}: {e}", file.display())))?;
    let file_name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Failure::new(code::USAGE, format!("{} is not a file", file.display())))?
        .to_string();
    let source_path = std::path::absolute(file)
        .unwrap_or(file.to_path_buf())
        .display()
        .to_string();
    let added = client
        .add_service(pb::AddServiceRequest {
            file_name,
            content,
            source_path,
        })
        .await?
        .into_inner();
    let mut unit = added.unit.clone().unwrap_or_default();
    let name = &added.name;
    // Only a unit on its way (starting, or waiting for its dependencies) is
    // waited for: a start of one that has already ended would run it again.
    let on_its_way = [pb::UnitState::Starting, pb::UnitState::Blocked]
        .iter()
        .any(|s| *s as i32 == unit.state);
    if let Some(timeout) = wait.filter(|_| on_its_way) {
        let mut call = client.clone();
        let waited = crate::starting::wait(client, name, timeout, async {
            Ok(call
                .start_unit(pb::StartUnitRequest {
                    name: name.clone(),
                    no_wait: false,
                })
                .await?
                .into_inner()
                .unit
                .unwrap_or_default())
        })
        .await;
        match waited {
            Ok(now) => unit = now,
            Err(e) => {
                warn(&added.warnings);
                return Err(Failure::new(
                    e.code,
                    format!(
                        "{name} was added (its file stays in the config directory), but {}",
                        e.message
                    ),
                ));
            }
        }
    }
    let blocked = wait.is_some() && unit.state == pb::UnitState::Blocked as i32;
    if json {
        print_json(&json!({ "name": name, "unit": unit_json(&unit), "warnings": added.warnings }));
    } else {
        warn(&added.warnings);
    }
    if unit.state == pb::UnitState::Failed as i32 || blocked {
        return Err(Failure::new(
            code::ERROR,
            format!(
                "{name} was added (its file stays in the config directory) but could not start: {}",
                unit.reason
            ),
        ));
    }
    if !json {
        outln!("added {}", output::started_line(&unit));
    }
    Ok(code::OK)
}

pub fn print_log(line: &pb::StreamLogsResponse, json: bool) {
    if line.missed > 0 {
        if json {
            print_json(&json!({ "missed": line.missed }));
        } else {
            output::write_err_line(&format!(
                "zinit: {} lines missed (the reader fell behind)",
                line.missed
            ));
        }
        return;
    }
    let stream = if line.stream == pb::LogStream::Stderr as i32 {
        "stderr"
    } else {
        "stdout"
    };
    if json {
        print_json(&json!({
            "unit": line.unit,
            "time": output::rfc3339(line.time.as_ref()),
            "stream": stream,
            "text": line.text,
            "seq": line.seq,
        }));
    } else {
        let time = output::time(line.time.as_ref())
            .map(|t| humantime::format_rfc3339_millis(t).to_string())
            .unwrap_or_default();
        outln!("{time} {} {}", line.unit, line.text);
    }
}

fn print_event(event: &pb::StreamEventsResponse, json: bool) {
    use pb::stream_events_response::Kind;
    let time = output::rfc3339(event.time.as_ref());
    let (kind, detail, text) = match &event.kind {
        Some(Kind::StateChanged(s)) => (
            "state_changed",
            json!({"from": output::state_name(s.from), "to": output::state_name(s.to), "reason": s.reason}),
            format!(
                "{} -> {}: {}",
                output::state_name(s.from),
                output::state_name(s.to),
                s.reason
            ),
        ),
        Some(Kind::Restarting(r)) => (
            "restarting",
            json!({"attempt": r.attempt, "delay": output::seconds(r.delay.as_ref())}),
            format!(
                "restart #{} in {:.2}s",
                r.attempt,
                output::seconds(r.delay.as_ref())
            ),
        ),
        Some(Kind::JobFinished(j)) => (
            "job_finished",
            json!({"status": output::exit_json(j.status.as_ref())}),
            format!("job finished: {}", output::exit_text(j.status.as_ref())),
        ),
        Some(Kind::Warning(w)) => ("warning", json!({"message": w}), format!("warning: {w}")),
        Some(Kind::Missed(n)) => ("missed", json!({"count": n}), format!("{n} events missed")),
        None => ("unknown", json!({}), String::new()),
    };
    if json {
        let mut value = json!({"time": time, "unit": event.unit, "kind": kind});
        if let (Some(map), Some(extra)) = (value.as_object_mut(), detail.as_object()) {
            map.extend(extra.clone());
        }
        print_json(&value);
    } else {
        outln!("{} {} {}", time.as_str().unwrap_or(""), event.unit, text);
    }
}

/// `a, b` or `none`.
fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// What a reload did, or with `--dry-run` would do, per service.
fn reloaded(r: &pb::ReloadResponse, json: bool) {
    if json {
        print_json(&json!({
            "dry_run": r.dry_run,
            "added": r.added,
            "removed": r.removed,
            "changed": r.changed,
            "updated": r.updated,
            "unchanged": r.unchanged,
            "warnings": r.warnings,
            "units": r.units.iter().map(|u| json!({
                "name": u.name,
                "action": u.action,
                "fields": u.fields.iter().map(|f| json!({
                    "field": f.field, "restarts": f.restarts, "old": f.old, "new": f.new,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }));
        return;
    }
    warn(&r.warnings);
    outln!(
        "{}: {} added, {} removed, {} restarted, {} updated without a restart, {} unchanged",
        if r.dry_run {
            "a reload would do"
        } else {
            "reloaded"
        },
        r.added.len(),
        r.removed.len(),
        r.changed.len(),
        r.updated.len(),
        r.unchanged.len()
    );
    for u in &r.units {
        let fields = u
            .fields
            .iter()
            .map(|f| format!("{}: {} -> {}", f.field, f.old, f.new))
            .collect::<Vec<_>>()
            .join("; ");
        if fields.is_empty() {
            outln!("  {}: {}", u.name, u.action);
        } else {
            outln!("  {}: {} ({fields})", u.name, u.action);
        }
    }
}

/// `zinit health [--wait D]`: the server's gRPC health (`SERVING`: exit 0;
/// not serving, as during its shutdown: 1; no server: 4). With `--wait`, a
/// server that is not there yet is waited for, at most that long: what a
/// script runs after starting zinit_server in the background, and what a
/// container's HEALTHCHECK runs.
async fn health(
    target: &Target,
    wait: Option<std::time::Duration>,
    json: bool,
) -> Result<u8, Failure> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    let end = tokio::time::Instant::now() + wait.unwrap_or_default();
    let mut client = loop {
        match zinit_client::health_to(target).await {
            Ok(client) => break client,
            Err(e) if tokio::time::Instant::now() < end => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let status = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status();
    let serving = status == ServingStatus::Serving;
    let name = if serving { "serving" } else { "not serving" };
    if json {
        print_json(&json!({ "status": name }));
    } else {
        outln!("{name}");
    }
    Ok(if serving { code::OK } else { code::ERROR })
}
