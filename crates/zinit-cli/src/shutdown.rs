//! `zinit shutdown` (and `zinit reboot`, and `zinit shutdown --watch`):
//! streams the shutdown's progress (see `progress`), then waits until the
//! server process has really exited before it says "stopped".

use crate::output::print_json;
use crate::progress::View;
use crate::{Failure, code};
use serde_json::json;
use std::time::{Duration, Instant};
use zinit_client::{Client, Target};
use zinit_proto::v1 as pb;
use zinit_proto::v1::shutdown_event::Kind;

/// `10s`, `500ms`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, Failure> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(Duration::from_secs_f64(secs));
    }
    humantime::parse_duration(text).map_err(|e| {
        Failure::new(
            code::USAGE,
            format!("invalid duration {text:?}: {e} (examples: 10s, 500ms, 20)"),
        )
    })
}

/// What `zinit shutdown` or `zinit reboot` asks for.
#[derive(Debug)]
pub struct Request {
    /// The deadline, as typed.
    pub timeout: Option<String>,
    /// Skip the remaining grace.
    pub force: bool,
    /// Only print the plan.
    pub dry_run: bool,
    /// Only watch the running shutdown (`join_only`).
    pub watch: bool,
    /// Reboot afterwards (`zinit reboot`).
    pub reboot: bool,
}

/// Whether a summary counts as clean: nothing was left (a verification
/// that could not finish saw nothing left either).
fn clean(summary: &pb::ShutdownSummary) -> bool {
    summary.clean || (summary.leftovers.is_empty() && !summary.unverified.is_empty())
}

pub async fn run(
    mut client: Client,
    target: &Target,
    request: Request,
    json: bool,
) -> Result<u8, Failure> {
    let Request {
        timeout,
        force,
        dry_run,
        watch,
        reboot,
    } = request;
    let timeout = timeout.as_deref().map(parse_duration).transpose()?;
    let info = client
        .server_info(pb::ServerInfoRequest {})
        .await?
        .into_inner();
    // The server's pid means something here only if we share its PID namespace.
    let pid_visible = std::fs::read(format!("/proc/{}/cmdline", info.pid)).is_ok_and(|raw| {
        raw.split(|&b| b == 0)
            .any(|arg| arg == info.socket.as_bytes())
    });
    let started = Instant::now();
    let request = pb::ShutdownRequest {
        timeout: timeout.map(|d| prost_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }),
        force,
        dry_run,
        join_only: watch,
        reboot,
    };
    let mut stream = client.shutdown(request).await?.into_inner();
    let mut summary = None;
    let mut view = View::new(json, 0);
    let mut cut = None;
    loop {
        match stream.message().await {
            Ok(Some(response)) => {
                let Some(event) = response.event else {
                    continue;
                };
                view.show(&event);
                if let Some(Kind::Summary(s)) = event.kind {
                    summary = Some(s);
                }
            }
            Ok(None) => break,
            Err(status) => {
                cut = Some(status);
                break;
            }
        }
    }
    view.finish();
    if dry_run {
        return Ok(code::OK);
    }
    let Some(summary) = summary else {
        let why = cut.map_or_else(
            || "the server closed the stream".to_string(),
            |status| format!("the shutdown stream was cut ({})", status.message()),
        );
        return Err(Failure::new(
            code::STREAM_CUT,
            format!("{why} before the summary; the outcome is unknown"),
        ));
    };
    // Let go of the connection, so the server's drain does not wait for us.
    drop(stream);
    drop(client);
    let gone = wait_for_exit(
        pid_visible.then_some(info.pid),
        target,
        Duration::from_secs(10),
    )
    .await;
    let elapsed = started.elapsed();
    if json {
        print_json(
            &json!({"kind": "server_exited", "pid": info.pid, "exited": gone, "elapsed": elapsed.as_secs_f64()}),
        );
    } else if gone {
        outln!(
            "stopped: zinit_server (pid {}) exited {:.2}s after the request",
            info.pid,
            elapsed.as_secs_f64()
        );
    } else {
        outln!("zinit_server (pid {}) has not exited yet", info.pid);
    }
    Ok(if clean(&summary) {
        code::OK
    } else {
        code::NOT_CLEAN
    })
}

/// Waits (bounded) until the server process is gone: by its pid when we
/// share its PID namespace, else until its socket (or TCP listener) is gone
/// and refuses.
async fn wait_for_exit(pid: Option<u32>, target: &Target, bound: Duration) -> bool {
    let start = Instant::now();
    let end = start + bound;
    loop {
        let alive = match (pid, target) {
            (Some(pid), _) => std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    !s.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(false),
            (None, Target::Unix(socket)) => {
                socket.exists() || std::os::unix::net::UnixStream::connect(socket).is_ok()
            }
            (None, Target::Tcp { addr, .. }) => std::net::TcpStream::connect(addr).is_ok(),
        };
        if !alive {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        // Sleep without blocking the runtime: the connection must still
        // be able to answer the server's GOAWAY and close. A server usually
        // exits within milliseconds of its last event: look often at first.
        let pause = if start.elapsed() < Duration::from_millis(200) {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(10)
        };
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unverified_end_with_nothing_left_counts_as_clean() {
        let unverified = pb::ShutdownSummary {
            clean: false,
            unverified: "the scan did not finish".into(),
            ..Default::default()
        };
        assert!(clean(&unverified));
        let left = pb::ShutdownSummary {
            clean: false,
            leftovers: vec![pb::Leftover::default()],
            unverified: "the scan did not finish".into(),
            ..Default::default()
        };
        assert!(!clean(&left));
    }
}
