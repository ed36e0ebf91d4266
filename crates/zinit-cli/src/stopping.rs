//! `stop`, `remove` and `job cancel`: one unit's stop with the same live
//! progress as the shutdown's (which signal, what is still alive, how
//! long), then its result.

use crate::output::{self, print_json, unit_json};
use crate::progress::{self, View};
use crate::{Failure, code};
use serde_json::{Value, json};
use zinit_client::Client;
use zinit_proto::v1 as pb;

/// What a watched stop's stream carries.
enum Message<R> {
    Step(pb::StopProgress),
    Result(R),
}

/// Shows the steps of a watched stop as they come and returns its result.
async fn follow<T, R>(
    mut stream: tonic::Streaming<T>,
    view: &mut View,
    split: impl Fn(T) -> Option<Message<R>>,
) -> Result<R, Failure> {
    loop {
        match stream.message().await {
            Ok(Some(message)) => match split(message) {
                Some(Message::Step(step)) => view.show(&progress::stop_event(step)),
                Some(Message::Result(result)) => return Ok(result),
                None => {}
            },
            Ok(None) => {
                return Err(Failure::new(
                    code::STREAM_CUT,
                    "the server closed the stream before the result; the outcome is unknown",
                ));
            }
            Err(status) => return Err(status.into()),
        }
    }
}

/// Runs a watched stop of `name` and shows it; returns its result.
async fn stop_watched(
    client: &mut Client,
    name: &str,
    view: &mut View,
) -> Result<pb::StopUnitResponse, Failure> {
    use pb::stop_unit_stream_response::Kind;
    let stream = client
        .stop_unit_stream(pb::StopUnitRequest {
            name: name.to_string(),
        })
        .await?
        .into_inner();
    let result = follow(stream, view, |m: pb::StopUnitStreamResponse| {
        Some(match m.kind? {
            Kind::Progress(p) => Message::Step(p),
            Kind::Result(r) => Message::Result(r),
        })
    })
    .await?;
    if let Some(stopped) = progress::stopped_event(name, &result) {
        view.show(&stopped);
    }
    Ok(result)
}

/// How a stop went, as JSON fields.
fn stop_json(answer: &pb::StopUnitResponse) -> Value {
    json!({
        "outcome": output::outcome_name(answer.outcome),
        "duration": output::seconds(answer.duration.as_ref()),
        "processes_exited": answer.processes_exited,
        "processes_killed": answer.processes_killed,
        "leftovers": answer.leftovers.iter().map(|l| json!({"pid": l.pid, "name": l.name, "reason": l.reason})).collect::<Vec<_>>(),
    })
}

/// The lines after a stop: that nothing was running (and how the unit
/// had ended), what could not be killed.
fn stop_notes(name: &str, answer: &pb::StopUnitResponse) {
    if answer.outcome == pb::StopOutcome::NothingRunning as i32 {
        let unit = answer.unit.clone().unwrap_or_default();
        let state = output::state_name(unit.state);
        let exit = match unit.last_exit.as_ref().and_then(|s| s.how.as_ref()) {
            Some(_) => format!(
                ", main process {}",
                output::exit_text(unit.last_exit.as_ref())
            ),
            None => String::new(),
        };
        outln!(
            "{name}: nothing was running ({state}{exit}: {})",
            unit.reason
        );
    }
    for left in &answer.leftovers {
        outln!("  left: pid {} ({}): {}", left.pid, left.name, left.reason);
    }
}

/// `zinit stop NAME`.
pub async fn stop(client: &mut Client, name: String, json: bool) -> Result<u8, Failure> {
    let mut view = View::new(json, 1);
    let answer = stop_watched(client, &name, &mut view).await;
    view.finish();
    let answer = answer?;
    let unit = answer.unit.clone().unwrap_or_default();
    if json {
        let mut value = json!({"kind": "result", "unit": unit_json(&unit), "running_dependents": answer.running_dependents});
        if let (Some(map), Some(extra)) = (value.as_object_mut(), stop_json(&answer).as_object()) {
            map.extend(extra.clone());
        }
        print_json(&value);
        return Ok(code::OK);
    }
    stop_notes(&name, &answer);
    match answer.running_dependents.as_slice() {
        [] => {}
        [one] => outln!("note: {one} depends on {name} and keeps running"),
        many => outln!(
            "note: {} depend on {name} and keep running",
            many.join(", ")
        ),
    }
    Ok(code::OK)
}

/// `zinit job cancel NAME`: the stop of a job.
pub async fn cancel(client: &mut Client, name: String, json: bool) -> Result<u8, Failure> {
    // Only jobs: the server answers NOT_FOUND for anything else.
    client
        .get_job(pb::GetJobRequest { name: name.clone() })
        .await?;
    let mut view = View::new(json, 1);
    let answer = stop_watched(client, &name, &mut view).await;
    view.finish();
    let answer = answer?;
    let job = answer.unit.clone().unwrap_or_default();
    if json {
        let mut value = json!({"kind": "result", "job": unit_json(&job)});
        if let (Some(map), Some(extra)) = (value.as_object_mut(), stop_json(&answer).as_object()) {
            map.extend(extra.clone());
        }
        print_json(&value);
        return Ok(code::OK);
    }
    stop_notes(&name, &answer);
    Ok(code::OK)
}

/// `zinit remove NAME`.
pub async fn remove(client: &mut Client, name: String, json: bool) -> Result<u8, Failure> {
    use pb::remove_service_stream_response::Kind;
    let mut view = View::new(json, 1);
    let result = async {
        let stream = client
            .remove_service_stream(pb::RemoveServiceRequest { name: name.clone() })
            .await?
            .into_inner();
        let result = follow(stream, &mut view, |m: pb::RemoveServiceStreamResponse| {
            Some(match m.kind? {
                Kind::Progress(p) => Message::Step(p),
                Kind::Result(r) => Message::Result(r),
            })
        })
        .await?;
        if let Some(stopped) = result
            .stop
            .as_ref()
            .and_then(|stop| progress::stopped_event(&name, stop))
        {
            view.show(&stopped);
        }
        Ok::<_, Failure>(result)
    }
    .await;
    view.finish();
    let result = result?;
    if json {
        print_json(&json!({
            "kind": "result",
            "removed": name,
            "stop": result.stop.as_ref().map(stop_json),
        }));
        return Ok(code::OK);
    }
    for left in result.stop.iter().flat_map(|s| &s.leftovers) {
        outln!("  left: pid {} ({}): {}", left.pid, left.name, left.reason);
    }
    outln!("removed {name} (its file is deleted)");
    Ok(code::OK)
}
