//! `zinit job`: run (and, by default, wait: the job's output as it comes,
//! then its exit status as the CLI's, as `docker run` and `systemd-run
//! --wait` do), list, status and cancel.

use crate::output::{self, print_json, unit_json};
use crate::{Failure, JobCommand, code};
use serde_json::json;
use std::str::FromStr;
use zinit_client::Client;
use zinit_proto::v1 as pb;

pub async fn run(client: &mut Client, job: JobCommand, json: bool) -> Result<u8, Failure> {
    match job {
        JobCommand::Run {
            name,
            no_wait,
            command,
        } => {
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
                .run_job(pb::RunJobRequest { what: Some(what) })
                .await?
                .into_inner()
                .name;
            if no_wait {
                if json {
                    print_json(&json!({ "name": name }));
                } else {
                    outln!("{name}");
                }
                return Ok(code::OK);
            }
            wait(client, &name, json).await
        }
        JobCommand::List => {
            let jobs = client
                .list_jobs(pb::ListJobsRequest {})
                .await?
                .into_inner()
                .jobs;
            output::print_units("jobs", &jobs, json);
            Ok(code::OK)
        }
        JobCommand::Status { name } => {
            let job = client
                .get_job(pb::GetJobRequest { name })
                .await?
                .into_inner()
                .job
                .unwrap_or_default();
            output::print_unit(&job, json);
            Ok(code::OK)
        }
        JobCommand::Cancel { name } => crate::stopping::cancel(client, name, json).await,
    }
}

/// Shows the job's output from its first line until it has ended (the
/// server ends a job's log stream then), and returns its exit status: its
/// exit code, 128+N when signal N ended it, 1 when it could not start.
async fn wait(client: &mut Client, name: &str, json: bool) -> Result<u8, Failure> {
    // Unset `last`: every line kept since the job began, then the new ones.
    let mut stream = client
        .stream_logs(pb::StreamLogsRequest {
            name: name.to_string(),
            last: None,
            follow: true,
        })
        .await?
        .into_inner();
    loop {
        match stream.message().await {
            Ok(Some(line)) if line.missed > 0 => {
                let text = format!("zinit: {} lines of {name} missed", line.missed);
                if json {
                    print_json(&json!({ "missed": line.missed }));
                } else {
                    output::write_err_line(&text);
                }
            }
            Ok(Some(line)) if json => crate::commands::print_log(&line, true),
            Ok(Some(line)) if line.stream == pb::LogStream::Stderr as i32 => {
                output::write_err_line(&line.text)
            }
            Ok(Some(line)) => outln!("{}", line.text),
            Ok(None) => break,
            Err(status) => {
                return Err(Failure::new(
                    code::STREAM_CUT,
                    format!(
                        "the output of {name} was cut ({}); `zinit job status {name}` tells how it ends",
                        status.message()
                    ),
                ));
            }
        }
    }
    let job = client
        .get_job(pb::GetJobRequest {
            name: name.to_string(),
        })
        .await?
        .into_inner()
        .job
        .unwrap_or_default();
    let status = exit_status(&job);
    if json {
        print_json(&json!({"kind": "result", "job": unit_json(&job), "exit_code": status}));
    }
    if status == code::ERROR && job.last_exit.is_none() {
        return Err(Failure::new(
            code::ERROR,
            format!("{name} {}: {}", output::state_name(job.state), job.reason),
        ));
    }
    Ok(status)
}

/// The exit status of a job as a shell gives it: its code, or 128+N for
/// signal N; 1 when it never ran.
fn exit_status(job: &pb::Unit) -> u8 {
    match job.last_exit.as_ref().and_then(|s| s.how.as_ref()) {
        Some(pb::exit_status::How::Code(c)) => (*c & 0xff) as u8,
        Some(pb::exit_status::How::Signal(name)) => nix::sys::signal::Signal::from_str(name)
            .map_or(code::ERROR, |s| 128u8.saturating_add(s as u8)),
        None => code::ERROR,
    }
}
