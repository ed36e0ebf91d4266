//! One function per command: call the server, print the answer.

use crate::output::{self, print_json, unit_json};
use crate::{Cli, Command, Failure, JobCommand, code};
use serde_json::json;
use tonic::Request;
use zinit_proto::v1 as pb;

pub async fn run(cli: Cli) -> Result<u8, Failure> {
    let socket = zinit_client::socket_path(cli.socket.as_deref());
    let mut client = zinit_client::connect(&socket).await?;
    let json = cli.json;
    match cli.command {
        Command::List => {
            let units = client
                .list_units(pb::ListUnitsRequest {})
                .await?
                .into_inner()
                .units;
            output::print_units("units", &units, json);
        }
        Command::Status { name } => {
            let unit = client
                .get_unit(pb::GetUnitRequest { name })
                .await?
                .into_inner()
                .unit
                .unwrap_or_default();
            output::print_unit(&unit, json);
        }
        Command::Start { name, no_wait } => {
            let unit = client
                .start_unit(pb::StartUnitRequest { name, no_wait })
                .await?
                .into_inner()
                .unit
                .unwrap_or_default();
            if !print_started(&unit, json) {
                return Ok(code::ERROR);
            }
        }
        Command::Stop { name } => {
            let answer = client
                .stop_unit(pb::StopUnitRequest { name })
                .await?
                .into_inner();
            print_stop(&answer, json);
        }
        Command::Restart { name } => {
            let unit = client
                .restart_unit(pb::RestartUnitRequest { name })
                .await?
                .into_inner()
                .unit
                .unwrap_or_default();
            if !print_started(&unit, json) {
                return Ok(code::ERROR);
            }
        }
        Command::Add { file } => {
            let content = std::fs::read_to_string(&file).map_err(|e| {
                Failure::new(code::ERROR, format!("cannot read {}: {e}", file.display()))
            })?;
            let file_name = file
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| {
                    Failure::new(code::USAGE, format!("{} is not a file", file.display()))
                })?
                .to_string();
            let source_path = std::path::absolute(&file)
                .unwrap_or(file.clone())
                .display()
                .to_string();
            let name = client
                .add_service(pb::AddServiceRequest {
                    file_name,
                    content,
                    source_path,
                })
                .await?
                .into_inner()
                .name;
            if json {
                print_json(&json!({ "name": name }));
            } else {
                println!("added {name}");
            }
        }
        Command::Remove { name } => {
            client
                .remove_service(pb::RemoveServiceRequest { name: name.clone() })
                .await?;
            if json {
                print_json(&json!({ "removed": name }));
            } else {
                println!("removed {name}");
            }
        }
        Command::Reload => {
            let r = client.reload(pb::ReloadRequest {}).await?.into_inner();
            if json {
                print_json(
                    &json!({ "added": r.added, "removed": r.removed, "changed": r.changed, "unchanged": r.unchanged }),
                );
            } else {
                println!(
                    "reloaded: {} added, {} removed, {} changed, {} unchanged",
                    r.added.len(),
                    r.removed.len(),
                    r.changed.len(),
                    r.unchanged.len()
                );
                for (what, names) in [
                    ("added", &r.added),
                    ("removed", &r.removed),
                    ("changed", &r.changed),
                ] {
                    if !names.is_empty() {
                        println!("  {what}: {}", names.join(", "));
                    }
                }
            }
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
                println!(
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
                        eprintln!("zinit: the log stream was cut: {}", status.message());
                        return Ok(code::STREAM_CUT);
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
                        eprintln!("zinit: the event stream was cut: {}", status.message());
                        return Ok(code::STREAM_CUT);
                    }
                }
            }
        }
        Command::Job(job) => return run_job(&mut client, job, json).await,
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
                println!(
                    "{:<width$}  {:>5} {:>7} {:>10}",
                    "NAME", "PROCS", "CPU%", "MEMORY"
                );
                for s in &stats {
                    println!(
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
        } => {
            return crate::shutdown::run(client, &socket, timeout, force, dry_run, json).await;
        }
        Command::Info => {
            let info = client
                .server_info(pb::ServerInfoRequest {})
                .await?
                .into_inner();
            if json {
                print_json(&json!({
                    "pid": info.pid,
                    "version": info.version,
                    "start_time": output::rfc3339(info.start_time.as_ref()),
                    "config_dir": info.config_dir,
                    "cgroups": info.cgroups,
                    "socket": info.socket,
                }));
            } else {
                println!("zinit_server {} (pid {})", info.version, info.pid);
                println!("  socket:  {}", info.socket);
                println!("  config:  {}", info.config_dir);
                println!(
                    "  cgroups: {}",
                    if info.cgroups {
                        "yes"
                    } else {
                        "no (process groups)"
                    }
                );
            }
        }
        Command::Completions { .. } => unreachable!("handled before connecting"),
    }
    Ok(code::OK)
}

/// Prints a unit after a start or restart; false when it failed.
fn print_started(unit: &pb::Unit, json: bool) -> bool {
    if json {
        print_json(&unit_json(unit));
    } else {
        println!(
            "{}: {} ({})",
            unit.name,
            output::state_name(unit.state),
            unit.reason
        );
    }
    unit.state != pb::UnitState::Failed as i32
}

fn print_stop(answer: &pb::StopUnitResponse, json: bool) {
    let unit = answer.unit.clone().unwrap_or_default();
    if json {
        print_json(&json!({
            "unit": unit_json(&unit),
            "outcome": output::outcome_name(answer.outcome),
            "duration": output::seconds(answer.duration.as_ref()),
            "processes_exited": answer.processes_exited,
            "processes_killed": answer.processes_killed,
            "leftovers": answer.leftovers.iter().map(|l| json!({"pid": l.pid, "name": l.name, "reason": l.reason})).collect::<Vec<_>>(),
            "running_dependents": answer.running_dependents,
        }));
        return;
    }
    match pb::StopOutcome::try_from(answer.outcome).unwrap_or(pb::StopOutcome::Unspecified) {
        pb::StopOutcome::NothingRunning => println!("{}: stopped (nothing was running)", unit.name),
        outcome => println!(
            "{}: stopped {} in {:.2}s ({} processes exited, {} killed)",
            unit.name,
            match outcome {
                pb::StopOutcome::Graceful => "gracefully",
                pb::StopOutcome::Killed => "by force at its timeout",
                _ => "incompletely",
            },
            output::seconds(answer.duration.as_ref()),
            answer.processes_exited,
            answer.processes_killed
        ),
    }
    for left in &answer.leftovers {
        println!("  left: pid {} ({}): {}", left.pid, left.name, left.reason);
    }
    if !answer.running_dependents.is_empty() {
        println!(
            "note: {} depend(s) on {} and keep(s) running",
            answer.running_dependents.join(", "),
            unit.name
        );
    }
}

fn print_log(line: &pb::StreamLogsResponse, json: bool) {
    if line.missed > 0 {
        if json {
            print_json(&json!({ "missed": line.missed }));
        } else {
            eprintln!(
                "zinit: {} lines missed (the reader fell behind)",
                line.missed
            );
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
        println!("{time} {} {}", line.unit, line.text);
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
        println!("{} {} {}", time.as_str().unwrap_or(""), event.unit, text);
    }
}

async fn run_job(
    client: &mut zinit_proto::v1::control_client::ControlClient<tonic::transport::Channel>,
    job: JobCommand,
    json: bool,
) -> Result<u8, Failure> {
    match job {
        JobCommand::Run { name, command } => {
            let what = match (name, command.is_empty()) {
                (Some(name), true) => pb::run_job_request::What::Service(name),
                (None, false) => {
                    pb::run_job_request::What::Command(pb::CommandLine { argv: command })
                }
                _ => {
                    return Err(Failure::new(
                        code::USAGE,
                        "give either a service file name (job run NAME) or a command (job run -- CMD ARGS)",
                    ));
                }
            };
            let name = client
                .run_job(Request::new(pb::RunJobRequest { what: Some(what) }))
                .await?
                .into_inner()
                .name;
            if json {
                print_json(&json!({ "name": name }));
            } else {
                println!("{name}");
            }
        }
        JobCommand::List => {
            let jobs = client
                .list_jobs(pb::ListJobsRequest {})
                .await?
                .into_inner()
                .jobs;
            output::print_units("jobs", &jobs, json);
        }
        JobCommand::Status { name } => {
            let job = client
                .get_job(pb::GetJobRequest { name })
                .await?
                .into_inner()
                .job
                .unwrap_or_default();
            output::print_unit(&job, json);
        }
        JobCommand::Cancel { name } => {
            let answer = client
                .cancel_job(pb::CancelJobRequest { name })
                .await?
                .into_inner();
            let job = answer.job.unwrap_or_default();
            if json {
                print_json(
                    &json!({ "job": unit_json(&job), "outcome": output::outcome_name(answer.outcome) }),
                );
            } else {
                println!(
                    "{}: {} ({})",
                    job.name,
                    output::state_name(job.state),
                    output::outcome_name(answer.outcome)
                );
            }
        }
    }
    Ok(code::OK)
}
