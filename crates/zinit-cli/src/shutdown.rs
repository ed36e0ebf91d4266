//! `zinit shutdown` (and `zinit reboot`, and `zinit shutdown --watch`):
//! streams the shutdown's progress, then waits until the server process has
//! really exited before it says "stopped".

use crate::output::{self, print_json};
use crate::{Failure, code};
use serde_json::{Value, json};
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use zinit_proto::v1 as pb;
use zinit_proto::v1::control_client::ControlClient;
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

pub async fn run(
    mut client: ControlClient<Channel>,
    socket: &std::path::Path,
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
    let mut live = (!json && std::io::stdout().is_terminal()).then(Live::new);
    loop {
        match stream.message().await {
            Ok(Some(response)) => {
                let Some(event) = response.event else {
                    continue;
                };
                if json {
                    print_json(&event_json(&event));
                } else if let Some(live) = live.as_mut() {
                    live.show(&event);
                } else {
                    for line in event_lines(&event) {
                        println!("{line}");
                    }
                }
                if let Some(Kind::Summary(s)) = event.kind {
                    summary = Some(s);
                }
            }
            Ok(None) => break,
            Err(status) => {
                if summary.is_none() {
                    eprintln!("zinit: the shutdown stream was cut: {}", status.message());
                }
                break;
            }
        }
    }
    if let Some(live) = live.take() {
        live.finish();
    }
    if dry_run {
        return Ok(code::OK);
    }
    let Some(summary) = summary else {
        eprintln!("zinit: the server closed the stream before the summary; the outcome is unknown");
        return Ok(code::STREAM_CUT);
    };
    // Let go of the connection, so the server's drain does not wait for us.
    drop(stream);
    drop(client);
    let gone = wait_for_exit(
        pid_visible.then_some(info.pid),
        socket,
        Duration::from_secs(10),
    )
    .await;
    let elapsed = started.elapsed();
    if json {
        print_json(
            &json!({"kind": "server_exited", "pid": info.pid, "exited": gone, "elapsed": elapsed.as_secs_f64()}),
        );
    } else if gone {
        println!(
            "stopped: zinit_server (pid {}) exited {:.2}s after the request",
            info.pid,
            elapsed.as_secs_f64()
        );
    } else {
        println!("zinit_server (pid {}) has not exited yet", info.pid);
    }
    Ok(if summary.clean {
        code::OK
    } else {
        code::NOT_CLEAN
    })
}

/// Waits (bounded) until the server process is gone: by its pid when we
/// share its PID namespace, else until its socket is gone and refuses.
async fn wait_for_exit(pid: Option<u32>, socket: &std::path::Path, bound: Duration) -> bool {
    let end = Instant::now() + bound;
    loop {
        let alive = match pid {
            Some(pid) => std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    !s.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(false),
            None => socket.exists() || std::os::unix::net::UnixStream::connect(socket).is_ok(),
        };
        if !alive {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        // Sleep without blocking the runtime: the connection must still
        // be able to answer the server's GOAWAY and close.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn secs(d: &Option<prost_types::Duration>) -> f64 {
    output::seconds(d.as_ref())
}

fn leftovers_json(list: &[pb::Leftover]) -> Value {
    list.iter()
        .map(|l| json!({"pid": l.pid, "name": l.name, "reason": l.reason}))
        .collect()
}

pub fn event_json(event: &pb::ShutdownEvent) -> Value {
    let at = secs(&event.at);
    let (kind, body) = match &event.kind {
        Some(Kind::Plan(p)) => (
            "plan",
            json!({
                "units": p.units.iter().map(|u| json!({"name": u.name, "waits_for": u.waits_for, "budget": secs(&u.budget), "signal": u.signal, "mode": u.mode})).collect::<Vec<_>>(),
                "deadline": secs(&p.deadline),
                "sweep": p.sweep.iter().map(|t| json!({"pid": t.pid, "name": t.name, "reason": t.reason})).collect::<Vec<_>>(),
                "dry_run": p.dry_run,
            }),
        ),
        Some(Kind::UnitStopping(u)) => (
            "unit_stopping",
            json!({"unit": u.name, "signal": u.signal, "mode": u.mode, "budget": secs(&u.budget)}),
        ),
        Some(Kind::SignalSent(s)) => (
            "signal_sent",
            json!({"unit": s.unit, "pid": s.pid, "depth": s.depth, "signal": s.signal, "name": s.name}),
        ),
        Some(Kind::UnitStopped(u)) => (
            "unit_stopped",
            json!({"unit": u.name, "duration": secs(&u.duration), "outcome": output::outcome_name(u.outcome), "exit_status": output::exit_json(u.exit_status.as_ref()), "processes_exited": u.processes_exited, "processes_killed": u.processes_killed}),
        ),
        Some(Kind::StillWaiting(w)) => (
            "still_waiting",
            json!({"blockers": w.blockers.iter().map(|b| json!({"unit": b.unit, "pid": b.pid, "name": b.name, "waiting": secs(&b.waiting), "budget": secs(&b.budget)})).collect::<Vec<_>>()}),
        ),
        Some(Kind::ProcessSwept(p)) => (
            "process_swept",
            json!({"pid": p.pid, "name": p.name, "reason": p.reason, "signal": p.signal}),
        ),
        Some(Kind::Verification(v)) => (
            "verification",
            json!({"clean": v.clean, "leftovers": leftovers_json(&v.leftovers)}),
        ),
        Some(Kind::Summary(s)) => (
            "summary",
            json!({"duration": secs(&s.duration), "units_graceful": s.units_graceful, "units_killed": s.units_killed, "processes_graceful": s.processes_graceful, "processes_killed": s.processes_killed, "processes_swept": s.processes_swept, "leftovers": leftovers_json(&s.leftovers), "deadline_hit": s.deadline_hit, "clean": s.clean}),
        ),
        None => ("unknown", json!({})),
    };
    let mut value = json!({"at": at, "kind": kind});
    if let (Some(map), Some(extra)) = (value.as_object_mut(), body.as_object()) {
        map.extend(extra.clone());
    }
    value
}

/// One plain line per event (signals to non-leaders are folded into counts).
pub fn event_lines(event: &pb::ShutdownEvent) -> Vec<String> {
    let mut out = Vec::new();
    let at = secs(&event.at);
    match &event.kind {
        Some(Kind::Plan(p)) => {
            let title = if p.dry_run {
                "dry run: would stop"
            } else {
                "plan: stopping"
            };
            out.push(format!(
                "{at:6.2}s {title} {} unit(s) within {:.0}s",
                p.units.len(),
                secs(&p.deadline)
            ));
            for u in &p.units {
                let after = if u.waits_for.is_empty() {
                    String::new()
                } else {
                    format!(" after {}", u.waits_for.join(", "))
                };
                out.push(format!(
                    "         {:<16} {} {} budget {:.1}s{after}",
                    u.name,
                    u.signal,
                    u.mode,
                    secs(&u.budget)
                ));
            }
            if p.dry_run {
                if p.sweep.is_empty() {
                    out.push("         the sweep would target nothing right now".to_string());
                }
                for t in &p.sweep {
                    out.push(format!(
                        "         sweep would kill pid {} ({}): {}",
                        t.pid, t.name, t.reason
                    ));
                }
            }
        }
        Some(Kind::UnitStopping(u)) => out.push(format!(
            "{at:6.2}s {:<16} stopping: {} ({}), budget {:.1}s",
            u.name,
            u.signal,
            u.mode,
            secs(&u.budget)
        )),
        Some(Kind::SignalSent(s)) if s.depth == 0 || s.signal == "SIGKILL" => {
            let unit = if s.unit.is_empty() { "sweep" } else { &s.unit };
            out.push(format!(
                "{at:6.2}s {unit:<16} {} -> pid {} ({}, depth {})",
                s.signal, s.pid, s.name, s.depth
            ));
        }
        Some(Kind::SignalSent(_)) => {}
        Some(Kind::UnitStopped(u)) => out.push(format!(
            "{at:6.2}s {:<16} stopped in {:.2}s: {} ({} exited, {} killed, main {})",
            u.name,
            secs(&u.duration),
            output::outcome_name(u.outcome),
            u.processes_exited,
            u.processes_killed,
            output::exit_text(u.exit_status.as_ref())
        )),
        Some(Kind::StillWaiting(w)) => {
            if let Some(b) = w.blockers.first() {
                let more = if w.blockers.len() > 1 {
                    format!(" and {} more", w.blockers.len() - 1)
                } else {
                    String::new()
                };
                out.push(format!(
                    "{at:6.2}s {:<16} waiting for pid {} ({}), {:.1}s of {:.1}s{more}",
                    b.unit,
                    b.pid,
                    b.name,
                    secs(&b.waiting),
                    secs(&b.budget)
                ));
            }
        }
        Some(Kind::ProcessSwept(p)) => out.push(format!(
            "{at:6.2}s sweep            killed pid {} ({}) with {}: {}",
            p.pid, p.name, p.signal, p.reason
        )),
        Some(Kind::Verification(v)) => {
            if v.clean {
                out.push(format!("{at:6.2}s verified: no process left"));
            } else {
                for l in &v.leftovers {
                    out.push(format!("{at:6.2}s LEFT: pid {} ({}): {}", l.pid, l.name, l.reason));
                }
            }
        }
        Some(Kind::Summary(s)) => out.push(format!(
            "{at:6.2}s summary: {} in {:.2}s; units {} graceful, {} killed; processes {} graceful, {} killed, {} swept, {} left{}",
            if s.clean { "clean" } else { "NOT clean" },
            secs(&s.duration),
            s.units_graceful,
            s.units_killed,
            s.processes_graceful,
            s.processes_killed,
            s.processes_swept,
            s.leftovers.len(),
            if s.deadline_hit {
                "; the deadline cut in"
            } else {
                ""
            }
        )),
        None => {}
    }
    out
}

/// The terminal view: event lines scroll above a bar of units done out of
/// the plan's, whose message says what is blocking now and for how long.
struct Live {
    bar: indicatif::ProgressBar,
}

impl Live {
    fn new() -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed:>4} [{bar:30}] {pos}/{len} units stopped  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        Self { bar }
    }

    fn show(&mut self, event: &pb::ShutdownEvent) {
        match &event.kind {
            Some(Kind::Plan(plan)) => self.bar.set_length(plan.units.len() as u64),
            Some(Kind::UnitStopped(_)) => self.bar.inc(1),
            Some(Kind::StillWaiting(w)) => {
                if let Some(b) = w.blockers.first() {
                    self.bar.set_message(format!(
                        "blocking: {} pid {} ({}) {:.1}s of {:.1}s",
                        b.unit,
                        b.pid,
                        b.name,
                        secs(&b.waiting),
                        secs(&b.budget)
                    ));
                }
                return;
            }
            Some(Kind::Summary(_)) => self.bar.set_message(""),
            _ => {}
        }
        for line in event_lines(event) {
            self.bar.println(line);
        }
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
}
