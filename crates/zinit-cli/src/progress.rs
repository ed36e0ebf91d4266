//! Showing a stop as it goes — the shutdown's, or one unit's (`stop`,
//! `remove`, `job cancel`): a live display on a terminal (event lines
//! scrolling above a bar of units stopped, whose message says what is
//! blocking and for how long), plain lines otherwise, one JSON object per
//! event with `--json`.

use crate::output::{self, plural, print_json};
use serde_json::{Value, json};
use std::io::IsTerminal;
use std::time::Duration;
use zinit_proto::v1 as pb;
use zinit_proto::v1::shutdown_event::Kind;

fn secs(d: &Option<prost_types::Duration>) -> f64 {
    output::seconds(d.as_ref())
}

fn leftovers_json(list: &[pb::Leftover]) -> Value {
    list.iter()
        .map(|l| json!({"pid": l.pid, "name": l.name, "reason": l.reason}))
        .collect()
}

/// A step of one unit's stop as a shutdown event, so that both are shown
/// the same way.
pub fn stop_event(progress: pb::StopProgress) -> pb::ShutdownEvent {
    use pb::stop_progress::Kind as Step;
    pb::ShutdownEvent {
        at: progress.at,
        kind: progress.kind.map(|kind| match kind {
            Step::UnitStopping(u) => Kind::UnitStopping(u),
            Step::SignalSent(s) => Kind::SignalSent(s),
            Step::StillWaiting(w) => Kind::StillWaiting(w),
        }),
    }
}

/// The end of one unit's stop (from its result) as a shutdown event; none
/// when nothing was running.
pub fn stopped_event(name: &str, result: &pb::StopUnitResponse) -> Option<pb::ShutdownEvent> {
    if result.outcome == pb::StopOutcome::NothingRunning as i32 {
        return None;
    }
    Some(pb::ShutdownEvent {
        at: result.duration,
        kind: Some(Kind::UnitStopped(pb::UnitStopped {
            name: name.to_string(),
            duration: result.duration,
            outcome: result.outcome,
            exit_status: result.unit.as_ref().and_then(|u| u.last_exit.clone()),
            processes_exited: result.processes_exited,
            processes_killed: result.processes_killed,
        })),
    })
}

pub fn event_json(event: &pb::ShutdownEvent) -> Value {
    let at = secs(&event.at);
    let (kind, body) = match &event.kind {
        Some(Kind::Plan(p)) => (
            "plan",
            json!({
                "units": p.units.iter().map(|u| json!({"name": u.name, "waits_for": u.waits_for, "via": u.via, "budget": secs(&u.budget), "signal": u.signal, "mode": u.mode})).collect::<Vec<_>>(),
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
            json!({"clean": v.clean, "leftovers": leftovers_json(&v.leftovers), "unverified": (!v.unverified.is_empty()).then_some(&v.unverified)}),
        ),
        Some(Kind::Summary(s)) => (
            "summary",
            json!({"duration": secs(&s.duration), "units_graceful": s.units_graceful, "units_killed": s.units_killed, "processes_graceful": s.processes_graceful, "processes_killed": s.processes_killed, "processes_swept": s.processes_swept, "leftovers": leftovers_json(&s.leftovers), "deadline_hit": s.deadline_hit, "clean": s.clean, "unverified": (!s.unverified.is_empty()).then_some(&s.unverified)}),
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
                "{at:6.2}s {title} {} within {:.0}s",
                plural(p.units.len() as u64, "unit", "units"),
                secs(&p.deadline)
            ));
            for u in &p.units {
                let after = if u.waits_for.is_empty() {
                    String::new()
                } else {
                    format!(" after {}", waits_for(u))
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
        Some(Kind::UnitStopped(u)) => {
            // `processes_exited` counts the killed ones too: graceful and
            // killed add up to the summary's counts.
            let graceful = u.processes_exited.saturating_sub(u.processes_killed);
            let main = match u.exit_status.as_ref().and_then(|s| s.how.as_ref()) {
                Some(_) => format!(
                    ", main process {}",
                    output::exit_text(u.exit_status.as_ref())
                ),
                None => String::new(),
            };
            out.push(format!(
                "{at:6.2}s {:<16} stopped in {:.2}s: {} ({} graceful, {} killed{main})",
                u.name,
                secs(&u.duration),
                output::outcome_name(u.outcome),
                graceful,
                u.processes_killed,
            ));
        }
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
            if !v.unverified.is_empty() {
                out.push(format!("{at:6.2}s unverified: {}", v.unverified));
            } else if v.clean {
                out.push(format!("{at:6.2}s verified: no process left"));
            }
            for l in &v.leftovers {
                out.push(format!(
                    "{at:6.2}s LEFT: pid {} ({}): {}",
                    l.pid, l.name, l.reason
                ));
            }
        }
        Some(Kind::Summary(s)) => {
            let verdict = if s.clean { "clean" } else { "NOT clean" };
            let unverified = if s.unverified.is_empty() {
                String::new()
            } else {
                format!("; unverified: {}", s.unverified)
            };
            out.push(format!(
                "{at:6.2}s summary: {verdict} in {:.2}s; units {} graceful, {} killed; processes {} graceful, {} killed, {} swept, {} left{}{unverified}",
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
            ))
        }
        None => {}
    }
    out
}

/// Where a stop's progress goes.
pub enum View {
    /// One JSON object per event.
    Json,
    /// Plain lines.
    Plain,
    /// A live display (on a terminal).
    Live(Live),
}

impl View {
    /// JSON with `json`, else a live display on a terminal, else plain
    /// lines. `units` is the length of the bar (a plan event resets it).
    pub fn new(json: bool, units: u64) -> Self {
        if json {
            Self::Json
        } else if std::io::stdout().is_terminal() {
            Self::Live(Live::new(units))
        } else {
            Self::Plain
        }
    }

    /// Shows one event.
    pub fn show(&mut self, event: &pb::ShutdownEvent) {
        match self {
            Self::Json => print_json(&event_json(event)),
            Self::Plain => {
                for line in event_lines(event) {
                    outln!("{line}");
                }
            }
            Self::Live(live) => live.show(event),
        }
    }

    /// Ends the display (the live bar is cleared).
    pub fn finish(self) {
        if let Self::Live(live) = self {
            live.finish();
        }
    }
}

/// The terminal view: event lines scroll above a bar of units done out of
/// the plan's, whose message says what is blocking now and for how long.
pub struct Live {
    bar: indicatif::ProgressBar,
}

impl Live {
    fn new(units: u64) -> Self {
        let bar = indicatif::ProgressBar::new(units);
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

/// What a planned unit waits for, an indirect link named: `app (via
/// migrate), web`.
pub fn waits_for(unit: &pb::PlannedUnit) -> String {
    unit.waits_for
        .iter()
        .map(|d| match unit.via.get(d) {
            Some(between) => format!("{d} (via {between})"),
            None => d.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> Option<prost_types::Duration> {
        Some(prost_types::Duration {
            seconds: s,
            nanos: 0,
        })
    }

    fn event(kind: Kind) -> pb::ShutdownEvent {
        pb::ShutdownEvent {
            at: secs(1),
            kind: Some(kind),
        }
    }

    #[test]
    fn an_unverified_end_says_so_in_lines_and_json() {
        let verification = event(Kind::Verification(pb::Verification {
            clean: true,
            leftovers: Vec::new(),
            unverified: "the scan did not finish within 0.5s".into(),
        }));
        assert_eq!(
            event_lines(&verification),
            ["  1.00s unverified: the scan did not finish within 0.5s"]
        );
        assert_eq!(
            event_json(&verification)["unverified"],
            "the scan did not finish within 0.5s"
        );
        let summary = event(Kind::Summary(pb::ShutdownSummary {
            clean: true,
            unverified: "the scan did not finish within 0.5s".into(),
            ..Default::default()
        }));
        let line = event_lines(&summary).join("\n");
        assert!(line.contains("summary: clean in"), "{line}");
        assert!(
            line.ends_with("; unverified: the scan did not finish within 0.5s"),
            "{line}"
        );
        assert_eq!(
            event_json(&summary)["unverified"],
            "the scan did not finish within 0.5s"
        );
        let verified = event(Kind::Verification(pb::Verification {
            clean: true,
            ..Default::default()
        }));
        assert_eq!(
            event_lines(&verified),
            ["  1.00s verified: no process left"]
        );
        assert_eq!(event_json(&verified)["unverified"], Value::Null);
    }

    #[test]
    fn a_units_counts_add_up_to_the_summarys_and_an_unknown_exit_is_left_out() {
        let stopped = event(Kind::UnitStopped(pb::UnitStopped {
            name: "stubborn".into(),
            duration: secs(1),
            outcome: pb::StopOutcome::Killed as i32,
            exit_status: None,
            processes_exited: 3,
            processes_killed: 2,
        }));
        assert_eq!(
            event_lines(&stopped),
            ["  1.00s stubborn         stopped in 1.00s: killed (1 graceful, 2 killed)"]
        );
        let with_exit = event(Kind::UnitStopped(pb::UnitStopped {
            name: "api".into(),
            duration: secs(0),
            outcome: pb::StopOutcome::Graceful as i32,
            exit_status: Some(pb::ExitStatus {
                how: Some(pb::exit_status::How::Code(0)),
            }),
            processes_exited: 1,
            processes_killed: 0,
        }));
        assert!(
            event_lines(&with_exit)[0].ends_with("(1 graceful, 0 killed, main process exit 0)")
        );
    }

    #[test]
    fn a_plan_counts_its_units_in_words() {
        let plan = |n: usize| {
            event(Kind::Plan(pb::ShutdownPlan {
                units: vec![pb::PlannedUnit::default(); n],
                deadline: secs(30),
                ..Default::default()
            }))
        };
        assert!(event_lines(&plan(1))[0].ends_with("plan: stopping 1 unit within 30s"));
        assert!(event_lines(&plan(3))[0].ends_with("plan: stopping 3 units within 30s"));
    }
}
