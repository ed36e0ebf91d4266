//! `start`, `restart` and `add` wait until the unit is ready or cannot
//! become ready: bounded by `--timeout` (90 s unless given, as systemd's
//! `TimeoutStartSec`), and on a terminal with a line on stderr that says
//! what it waits for, live.

use crate::{Failure, code};
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::Duration;
use zinit_client::Client;
use zinit_proto::v1 as pb;

/// How often the live line is redrawn.
const TICK: Duration = Duration::from_millis(250);

/// Waits for `call` (a start that returns once `name` is ready or cannot
/// be) at most `timeout`; meanwhile, on a terminal, shows `name`'s state
/// and reason.
pub async fn wait(
    client: &Client,
    name: &str,
    timeout: Duration,
    call: impl Future<Output = Result<pb::Unit, Failure>>,
) -> Result<pb::Unit, Failure> {
    let live = std::io::stderr().is_terminal();
    let mut watcher = client.clone();
    let mut tick = tokio::time::interval(TICK);
    tick.tick().await;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(call, deadline);
    let mut shown = false;
    let clear = |shown: bool| {
        if shown {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    };
    loop {
        tokio::select! {
            result = &mut call => {
                clear(shown);
                return result;
            }
            _ = &mut deadline => {
                clear(shown);
                let now = unit(&mut watcher, name).await;
                let why = now.map_or_else(String::new, |u| {
                    format!(" ({}: {})", crate::output::state_name(u.state), u.reason)
                });
                return Err(Failure::new(
                    code::ERROR,
                    format!(
                        "{name} did not become ready within {}{why}; it goes on starting (zinit status {name})",
                        humantime::format_duration(timeout)
                    ),
                ));
            }
            _ = tick.tick(), if live => {
                if let Some(u) = unit(&mut watcher, name).await {
                    let line = format!(
                        "{name}: {}: {}",
                        crate::output::state_name(u.state),
                        u.reason
                    );
                    let width = 200;
                    let line: String = line.chars().take(width).collect();
                    let _ = write!(std::io::stderr(), "\r\x1b[2K{line}");
                    let _ = std::io::stderr().flush();
                    shown = true;
                }
            }
        }
    }
}

async fn unit(client: &mut Client, name: &str) -> Option<pb::Unit> {
    client
        .get_unit(pb::GetUnitRequest {
            name: name.to_string(),
        })
        .await
        .ok()?
        .into_inner()
        .unit
}
